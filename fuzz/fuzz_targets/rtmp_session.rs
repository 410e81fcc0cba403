//! A whole server session after a valid handshake: commands, controls, media.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtmp::{ServerSession, SessionConfig, SessionEvent};

fuzz_target!(|data: &[u8]| {
    let mut s = ServerSession::new(SessionConfig::default(), 0, [1; 8]);
    let mut hs = vec![3u8];
    hs.extend_from_slice(&[0u8; 3072]);
    if s.handle_input(&hs).is_err() {
        return;
    }
    for piece in data.chunks(97) {
        match s.handle_input(piece) {
            Ok(events) => {
                for e in events {
                    match e {
                        SessionEvent::PublishRequest { .. } => s.accept_publish(),
                        SessionEvent::PlayRequest { .. } => {
                            s.accept_play();
                        }
                        _ => {}
                    }
                }
            }
            Err(_) => return,
        }
        let _ = s.take_output();
    }
});
