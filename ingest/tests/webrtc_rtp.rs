//! Byte tests of the receive path below the pipeline: RTP payloads crafted here (STAP-A, FU-A
//! start/middle/end, single NAL units), lost, reordered or hostile, sent over real ICE, DTLS
//! and SRTP by a str0m client to the [`Endpoint`], whose depacketizer and jitter buffer (str0m's)
//! and our [`H264Track`] must rebuild the access units of `testdata/baseline_176x144_6f.h264`.
//!
//! Everything runs in memory on a virtual clock: no sockets, no sleeps.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use media::avc::annexb_nal_units;
use str0m::rtp::{Extension, ExtensionMap, ExtensionSerializer, ExtensionValues};
use streamgate_ingest::webrtc::h264::H264Track;
use webrtc::loopback::Loopback;
use webrtc::packetize::packetize_h264;
use webrtc::RtpFrame;

const STREAM: &[u8] = include_bytes!("../testdata/baseline_176x144_6f.h264");
/// 20 fps in the 90 kHz RTP clock.
const FRAME_TICKS: u32 = 4500;
const VIDEO_PT: u8 = 108;
const RTX_PT: u8 = 109;

/// The access units of the test stream, each a list of NAL units without start codes.
fn access_units() -> Vec<Vec<&'static [u8]>> {
    let mut aus: Vec<Vec<&[u8]>> = Vec::new();
    for nal in annexb_nal_units(STREAM) {
        let kind = nal[0] & 0x1f;
        // A new AU starts at SPS, or at a slice when the current AU already has a slice.
        let has_slice = aus.last().is_some_and(|au| au.iter().any(|n| matches!(n[0] & 0x1f, 1 | 5)));
        if aus.is_empty() || kind == 7 || (matches!(kind, 1 | 5) && has_slice) {
            aus.push(Vec::new());
        }
        aus.last_mut().unwrap().push(nal);
    }
    aus
}

/// The test's view of a [`Loopback`]: panics instead of errors, frame-paced sends.
struct Link(Loopback);

impl std::ops::Deref for Link {
    type Target = Loopback;
    fn deref(&self) -> &Loopback {
        &self.0
    }
}

impl std::ops::DerefMut for Link {
    fn deref_mut(&mut self) -> &mut Loopback {
        &mut self.0
    }
}

impl Link {
    fn connect(extensions: Option<ExtensionMap>) -> Self {
        Self(Loopback::connect(extensions).unwrap())
    }

    fn step(&mut self) {
        self.0.step().unwrap();
    }

    fn advance(&mut self, d: Duration) {
        self.0.advance(d).unwrap();
    }

    fn send_au(&mut self, index: usize, au: &[&[u8]]) {
        self.0.send_au(index as u32 * FRAME_TICKS, au).unwrap();
        self.advance(Duration::from_millis(50));
    }

    fn send_rtp(&mut self, seq: Option<u64>, rtp_time: u32, marker: bool, payload: &[u8]) {
        self.0.send_rtp(seq, rtp_time, marker, payload).unwrap();
    }

    /// Writes explicit RTP packets: (sequence offset from `base`, payload, marker).
    fn send_packets(&mut self, base: u64, rtp_time: u32, packets: &[(u64, Vec<u8>, bool)]) {
        for (off, payload, marker) in packets {
            self.send_rtp(Some(base + off), rtp_time, *marker, payload);
        }
        self.advance(Duration::from_millis(50));
    }

    /// The frames received so far, through an `H264Track`: (AVCC frame, keyframe) and the
    /// number of configs emitted, and whether a keyframe was asked for.
    fn through_track(&self) -> (Vec<(Vec<u8>, bool)>, usize, bool) {
        let mut track = H264Track::new();
        let mut frames = Vec::new();
        let mut configs = 0;
        let mut want = false;
        for f in &self.frames {
            let o = track.push(&f.data, f.contiguous);
            if let Some(c) = o.config {
                assert_eq!((c.info.width, c.info.height), (176, 144));
                configs += 1;
            }
            want |= o.want_keyframe;
            if let Some((b, k)) = o.frame {
                frames.push((b.to_vec(), k));
            }
        }
        (frames, configs, want)
    }
}

/// The NAL units of a depacketized (Annex-B) frame.
/// The sequence number after an access unit sent first (sequence numbers start at 1).
fn link_next_seq(au: &[&[u8]]) -> u64 {
    1 + packetize_h264(au, 1200).len() as u64
}

fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    annexb_nal_units(data)
}

fn assert_frame_is(frame: &RtpFrame, au: &[&[u8]]) {
    assert_eq!(nal_units(&frame.data), au.to_vec(), "access unit rebuilt byte for byte");
}

#[test]
fn the_test_stream_has_every_packet_kind() {
    let aus = access_units();
    assert_eq!(aus.len(), 6);
    let idr = packetize_h264(&aus[0], 1200);
    assert_eq!(idr[0][0] & 0x1f, 24, "SPS+PPS go in one STAP-A");
    assert!(idr.len() >= 4, "the IDR needs FU-A start, middle(s) and end");
    assert_eq!(idr[1][1] & 0xc0, 0x80, "FU-A start");
    assert_eq!(idr[2][1] & 0xc0, 0x00, "FU-A middle");
    assert_eq!(idr.last().unwrap()[1] & 0xc0, 0x40, "FU-A end");
    assert!(
        aus[1].len() == 1 && packetize_h264(&aus[1], 1200).len() == 1,
        "a P frame as a single NAL unit"
    );
}

#[test]
fn stap_a_fu_a_and_single_nal_units_are_rebuilt() {
    let aus = access_units();
    let mut link = Link::connect(None);
    for (i, au) in aus.iter().enumerate() {
        link.send_au(i, au);
    }
    assert_eq!(link.frames.len(), 6);
    for (f, au) in link.frames.iter().zip(&aus) {
        assert_frame_is(f, au);
        assert!(f.contiguous);
    }
    let times: Vec<u64> = link.frames.iter().map(|f| f.rtp_time).collect();
    assert!(times.windows(2).all(|w| w[1] - w[0] == FRAME_TICKS as u64), "{times:?}");
    let (frames, configs, want) = link.through_track();
    assert_eq!(configs, 1, "SPS/PPS repeated at the second IDR is not a new config");
    assert_eq!(
        frames.iter().map(|f| f.1).collect::<Vec<_>>(),
        [true, false, false, true, false, false]
    );
    assert!(!want);
    // AVCC: each NAL unit (parameter sets stripped) behind its 4-byte length.
    let mut expect = Vec::new();
    for n in aus[1].iter() {
        expect.extend_from_slice(&(n.len() as u32).to_be_bytes());
        expect.extend_from_slice(n);
    }
    assert_eq!(frames[1].0, expect);
}

#[test]
fn packets_out_of_order_are_put_back_in_order() {
    let aus = access_units();
    let mut link = Link::connect(None);
    // The first IDR in order, so the receiver knows where the stream starts.
    link.send_au(0, &aus[0]);
    let mut seq = link_next_seq(&aus[0]);
    // The two P frames swapped.
    let p1 = packetize_h264(&aus[1], 1200);
    let p2 = packetize_h264(&aus[2], 1200);
    assert_eq!((p1.len(), p2.len()), (1, 1));
    link.send_rtp(Some(seq + 1), 2 * FRAME_TICKS, true, &p2[0]);
    link.send_rtp(Some(seq), FRAME_TICKS, true, &p1[0]);
    seq += 2;
    // The second IDR's packets in reverse order, the marker still on the last one.
    let idr = packetize_h264(&aus[3], 1200);
    let n = idr.len() as u64;
    let mut packets: Vec<(u64, Vec<u8>, bool)> = idr.into_iter().enumerate().map(|(i, p)| (i as u64, p, i as u64 + 1 == n)).collect();
    packets.reverse();
    link.send_packets(seq, 3 * FRAME_TICKS, &packets);
    link.advance(Duration::from_millis(500));
    assert_eq!(link.frames.len(), 4);
    for (f, au) in link.frames.iter().zip(&aus) {
        assert_frame_is(f, au);
    }
    let (frames, _, want) = link.through_track();
    assert_eq!(frames.len(), 4);
    assert!(!want);
}

#[test]
fn a_lost_fragment_is_recovered_by_nack_and_rtx() {
    let aus = access_units();
    let mut link = Link::connect(None);
    // Lose the first transmission of the IDR's first FU-A middle fragment (sequence 1 is
    // the STAP-A, 2 the FU-A start, 3 a middle).
    let mut once = true;
    link.lose = Box::new(move |v| {
        let hit = once && v.pt == VIDEO_PT && v.seq == 3;
        once &= !hit;
        hit
    });
    for (i, au) in aus.iter().enumerate() {
        link.send_au(i, au);
    }
    link.advance(Duration::from_millis(1500));
    assert_eq!(link.lost, 1);
    assert!(link.ep.counters().nacks >= 1, "{:?}", link.ep.counters());
    assert_eq!(link.frames.len(), 6, "the IDR was repaired");
    for (f, au) in link.frames.iter().zip(&aus) {
        assert_frame_is(f, au);
    }
    let (frames, _, want) = link.through_track();
    assert_eq!(frames.len(), 6);
    assert!(!want);
}

#[test]
fn an_unrepairable_loss_drops_frames_until_the_next_idr() {
    let aus = access_units();
    let mut link = Link::connect(None);
    // The middle fragment and every retransmission of anything are lost.
    link.lose = Box::new(|v| (v.pt == VIDEO_PT && v.seq == 3) || v.pt == RTX_PT);
    for (i, au) in aus.iter().enumerate() {
        link.send_au(i, au);
    }
    link.advance(Duration::from_secs(3));
    let (frames, configs, want) = link.through_track();
    // The broken IDR and the P frames that depend on it never reach the hub.
    assert_eq!(
        frames.iter().map(|f| f.1).collect::<Vec<_>>(),
        [true, false, false],
        "{:?}",
        link.frames.len()
    );
    assert_eq!(frames[0].0.len(), aus[3][2..].iter().map(|n| n.len() + 4).sum::<usize>());
    assert_eq!(configs, 1);
    assert!(want, "frames after the gap ask for a keyframe");
    assert!(link.ep.counters().nacks >= 1);
}

#[test]
fn an_endless_fu_a_stays_bounded_and_the_stream_recovers() {
    let aus = access_units();
    let mut link = Link::connect(None);
    link.send_au(0, &aus[0]);
    let rss_before = rss_kib();
    // An FU-A start and 40,000 middle fragments of 1,100 bytes (44 MB) with no end.
    let idr = aus[3][2];
    let mut start = vec![(idr[0] & 0xe0) | 28, 0x80 | 5];
    start.extend_from_slice(&idr[1..1101]);
    link.send_rtp(None, FRAME_TICKS, false, &start);
    let mut middle = vec![(idr[0] & 0xe0) | 28, 5];
    middle.extend_from_slice(&[0x5a; 1100]);
    for i in 0..40_000 {
        link.send_rtp(None, FRAME_TICKS, false, &middle);
        if i % 100 == 0 {
            link.step();
        }
    }
    let grown = rss_kib().saturating_sub(rss_before);
    eprintln!("endless FU-A: RSS grew {grown} KiB");
    assert!(grown < 24 * 1024, "memory grew by {grown} KiB for an endless FU-A");
    // The stream goes on with the next keyframe.
    for (i, au) in aus.iter().enumerate().skip(3) {
        link.send_au(i + 10, au);
    }
    link.advance(Duration::from_secs(2));
    assert!(!link.closed);
    let last: Vec<&RtpFrame> = link.frames.iter().rev().take(3).collect();
    assert_eq!(last.len(), 3);
    assert_frame_is(last[2], &aus[3]);
    assert_frame_is(last[0], &aus[5]);
}

/// Writes `len` bytes of garbage as the value of whatever extension it stands for.
#[derive(Debug)]
struct Garbage(usize);

impl ExtensionSerializer for Garbage {
    fn write_to(&self, buf: &mut [u8], _ev: &ExtensionValues) -> usize {
        let n = self.0.min(buf.len());
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(151) ^ 0xff;
        }
        n
    }
    fn parse_value(&self, _buf: &[u8], _ev: &mut ExtensionValues) -> bool {
        false
    }
    fn is_video(&self) -> bool {
        true
    }
    fn is_audio(&self) -> bool {
        true
    }
    fn requires_two_byte_form(&self, _ev: &ExtensionValues) -> bool {
        true
    }
}

#[test]
fn absurd_header_extensions_do_no_harm() {
    // The publisher puts 255 (or 0, or 17) bytes of garbage where the endpoint expects
    // abs-send-time (3 bytes), transport-cc (2), video orientation (1) and playout delay (3).
    let mut map = ExtensionMap::empty();
    for (id, uri, len) in [
        (2, "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", 255),
        (3, "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01", 0),
        (4, "urn:3gpp:video-orientation", 17),
        (5, "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay", 254),
    ] {
        map.set(id, Extension::with_serializer(uri, Garbage(len)));
    }
    let aus = access_units();
    let mut link = Link::connect(Some(map));
    for (i, au) in aus.iter().enumerate() {
        link.send_au(i, au);
    }
    assert!(!link.closed);
    // Whatever the stack makes of the values, the media is intact.
    assert_eq!(link.frames.len(), 6);
    for (f, au) in link.frames.iter().zip(&aus) {
        assert_frame_is(f, au);
    }
}

/// Resident set size of this process.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
