//! The WHIP SDP path: an offer as a browser would POST it, then datagrams for the new session.
#![no_main]
use std::time::Instant;

use webrtc::endpoint::{Endpoint, EndpointConfig, Outputs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut ep = Endpoint::new(EndpointConfig {
        candidates: vec!["127.0.0.1:8000".parse().unwrap()],
        ..EndpointConfig::default()
    });
    let mut out = Outputs::default();
    let (sdp, rest) = data.split_at(data.iter().position(|&b| b == 0).unwrap_or(data.len()));
    let now = Instant::now();
    let _ = ep.accept_offer(now, &String::from_utf8_lossy(sdp), &mut out);
    for d in rest.split(|&b| b == 0xfe) {
        ep.handle_datagram(now, "127.0.0.1:40000".parse().unwrap(), d, &mut out);
    }
    ep.handle_timeout(now, &mut out);
});
