//! FLV video/audio tag bodies as an RTMP publisher sends them.
#![no_main]
use bytes::Bytes;
use ingest::rtmp::RtmpIngest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut ing = RtmpIngest::new();
    for (i, piece) in data.split(|&b| b == 0xfe).enumerate() {
        let payload = Bytes::copy_from_slice(piece);
        let ts = (i as u32).wrapping_mul(0x1234_5678);
        if i % 2 == 0 {
            let _ = ing.video(ts, &payload);
        } else {
            let _ = ing.audio(ts, &payload);
        }
    }
});
