//! The first bytes of every HTTP connection: the classifier that decides whether the socket
//! fast path serves an HTTP-FLV play or hyper gets the connection.
#![no_main]
use libfuzzer_sys::fuzz_target;
use streamgate::parse::{classify, Head};

fuzz_target!(|data: &[u8]| {
    match classify(data) {
        Head::FlvPlay { app, stream } => {
            // What the fast path serves is a plain name: the router would see the same.
            assert!(!app.is_empty() && !stream.is_empty());
            assert!(!app.contains('/') && !stream.contains('/') && !stream.contains('%'));
            // A complete head stays complete with nothing appended, and is not taken with bytes
            // after it (those are hyper's: a pipelined request).
            let mut more = data.to_vec();
            more.push(b'G');
            assert_eq!(classify(&more), Head::Other);
        }
        Head::Partial | Head::Other => {}
    }
});
