//! RTP payloads from media (sans-IO): what a sender puts in its packets.
//!
//! H.264 per RFC 6184 in packetization-mode 1: SPS and PPS together in one STAP-A, other NAL
//! units alone when they fit, FU-A fragments above the MTU. Used by the test client and load
//! generator today, and by WebRTC egress (WHEP, forwarding) next.

/// RFC 6184 packetization (mode 1) of one access unit.
pub fn packetize_h264(nalus: &[&[u8]], mtu: usize) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut stap: Vec<&[u8]> = Vec::new();
    let flush_stap = |stap: &mut Vec<&[u8]>, packets: &mut Vec<Vec<u8>>| {
        match stap.len() {
            0 => {}
            1 => packets.push(stap[0].to_vec()),
            _ => {
                let nri = stap.iter().map(|n| n[0] & 0x60).max().unwrap_or(0);
                let mut p = vec![nri | 24];
                for n in stap.iter() {
                    p.extend_from_slice(&(n.len() as u16).to_be_bytes());
                    p.extend_from_slice(n);
                }
                packets.push(p);
            }
        }
        stap.clear();
    };
    for &nalu in nalus {
        let Some(&header) = nalu.first() else { continue };
        let kind = header & 0x1f;
        if kind == 7 || kind == 8 {
            stap.push(nalu);
            continue;
        }
        flush_stap(&mut stap, &mut packets);
        if nalu.len() <= mtu {
            packets.push(nalu.to_vec());
            continue;
        }
        let indicator = (header & 0xe0) | 28;
        let body = &nalu[1..];
        let chunks: Vec<&[u8]> = body.chunks(mtu - 2).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut fu = kind;
            if i == 0 {
                fu |= 0x80;
            }
            if i + 1 == chunks.len() {
                fu |= 0x40;
            }
            let mut p = Vec::with_capacity(chunk.len() + 2);
            p.push(indicator);
            p.push(fu);
            p.extend_from_slice(chunk);
            packets.push(p);
        }
    }
    flush_stap(&mut stap, &mut packets);
    packets
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xda];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    /// Reassembles what a receiver would: NAL units from STAP-A, FU-A and single packets.
    fn depacketize(packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut fu: Option<Vec<u8>> = None;
        for p in packets {
            match p[0] & 0x1f {
                24 => {
                    let mut rest = &p[1..];
                    while rest.len() >= 2 {
                        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                        out.push(rest[2..2 + n].to_vec());
                        rest = &rest[2 + n..];
                    }
                }
                28 => {
                    let (start, end) = (p[1] & 0x80 != 0, p[1] & 0x40 != 0);
                    if start {
                        fu = Some(vec![(p[0] & 0xe0) | (p[1] & 0x1f)]);
                    }
                    fu.as_mut().unwrap().extend_from_slice(&p[2..]);
                    if end {
                        out.push(fu.take().unwrap());
                    }
                }
                _ => out.push(p.clone()),
            }
        }
        out
    }

    #[test]
    fn parameter_sets_share_a_stap_a_small_units_go_alone() {
        let idr_small = [0x65, 1, 2, 3];
        let packets = packetize_h264(&[SPS, PPS, &idr_small], 1200);
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0][0] & 0x1f, 24, "STAP-A");
        assert_eq!(packets[0][0] & 0x60, 0x60, "NRI of the most important unit");
        assert_eq!(packets[1], idr_small);
        assert_eq!(depacketize(&packets), [SPS.to_vec(), PPS.to_vec(), idr_small.to_vec()]);
    }

    #[test]
    fn large_units_are_fragmented_within_the_mtu() {
        let mut idr = vec![0x65];
        idr.extend((0..5000u32).map(|i| (i * 7) as u8));
        let packets = packetize_h264(&[SPS, PPS, &idr], 1200);
        assert!(packets.iter().all(|p| p.len() <= 1200), "MTU");
        let fus: Vec<&Vec<u8>> = packets.iter().filter(|p| p[0] & 0x1f == 28).collect();
        assert_eq!(fus.len(), 5);
        assert_eq!(fus[0][1] & 0xc0, 0x80, "start bit on the first fragment only");
        assert_eq!(fus[4][1] & 0xc0, 0x40, "end bit on the last only");
        assert!(fus[1..4].iter().all(|p| p[1] & 0xc0 == 0));
        assert_eq!(depacketize(&packets), [SPS.to_vec(), PPS.to_vec(), idr]);
        // A lone parameter set is sent as itself, empty units are skipped.
        assert_eq!(packetize_h264(&[SPS, &[]], 1200), [SPS.to_vec()]);
    }
}
