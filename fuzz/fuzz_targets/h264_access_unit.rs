//! Depacketized H.264 access units (Annex-B) from a WebRTC publisher, with loss flags.
#![no_main]
use ingest::webrtc::h264::H264Track;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut t = H264Track::new();
    for (i, au) in data.split(|&b| b == 0xfe).enumerate() {
        let _ = t.push(au, i % 5 != 3);
    }
});
