//! The offer path of every session kind: an offer as a browser would POST it (to WHIP, or to
//! WHEP for an H.264/Opus or a VP8 stream), then datagrams for the new session.
#![no_main]
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use webrtc::endpoint::{Endpoint, EndpointConfig, Outputs, SessionSpec};
use webrtc::Codec;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, data)) = data.split_first() else { return };
    let spec = match kind % 3 {
        0 => SessionSpec::receiver(),
        1 => SessionSpec::sender(Some(Codec::H264), Some(Codec::Opus)),
        _ => SessionSpec::sender(Some(Codec::Vp8), None),
    };
    let mut ep = Endpoint::new(EndpointConfig {
        candidates: vec!["127.0.0.1:8000".parse().unwrap()],
        ..EndpointConfig::default()
    });
    let mut out = Outputs::default();
    let (sdp, rest) = data.split_at(data.iter().position(|&b| b == 0).unwrap_or(data.len()));
    let now = Instant::now();
    let id = ep.accept_offer(now, &String::from_utf8_lossy(sdp), &spec, &mut out).map(|a| a.id);
    for d in rest.split(|&b| b == 0xfe) {
        ep.handle_datagram(now, "127.0.0.1:40000".parse().unwrap(), d, &mut out);
        if let Ok(id) = id {
            let _ = ep.write(id, webrtc::Track::Video, now, 3000, d, &mut out);
        }
    }
    ep.handle_timeout(now, &mut out);
});
