//! The WebRTC receive path below the pipeline: RTP payloads chosen by the fuzzer, with sequence
//! numbers jumping back and forth, timestamps and markers as they come, sent over real SRTP to
//! the endpoint (str0m's depacketizer and jitter buffer), and every frame it delivers pushed
//! through `H264Track`. One connected session is kept across inputs (a DTLS handshake per input
//! would be too slow), so state accumulates as it would on a long-lived hostile connection.
//!
//! Input: records of [seq delta (i8)] [timestamp delta (u8, x 100)] [flags: bit 0 marker,
//! bit 1 let time pass] [length (u8)] [payload].
#![no_main]
use std::cell::RefCell;
use std::time::Duration;

use ingest::webrtc::h264::H264Track;
use webrtc::loopback::Loopback;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static LINK: RefCell<Option<(Loopback, H264Track, u64, u32)>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    LINK.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let link = Loopback::connect(None).expect("in-memory connection");
            *slot = Some((link, H264Track::new(), 1000, 0));
        }
        let Some((link, track, seq, ts)) = slot.as_mut() else { return };
        let mut rest = data;
        while rest.len() >= 4 {
            let (head, tail) = rest.split_at(4);
            let len = (head[3] as usize).min(tail.len());
            let (payload, tail) = tail.split_at(len);
            rest = tail;
            *seq = seq.saturating_add_signed(i64::from(head[0] as i8)).max(1);
            *ts = ts.wrapping_add(u32::from(head[1]) * 100);
            let _ = link.send_rtp(Some(*seq), *ts, head[2] & 1 == 1, payload);
            if head[2] & 2 == 2 {
                let _ = link.advance(Duration::from_millis(20));
            }
        }
        let _ = link.advance(Duration::from_millis(20));
        for f in link.frames.drain(..) {
            let _ = track.push(&f.data, f.contiguous);
        }
    });
});
