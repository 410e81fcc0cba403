//! HLS and LL-HLS file names and blocking-reload queries as players (or anyone) send them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use streamgate::parse::{blocking_query, names_rebuild};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '\n');
    let file = parts.next().unwrap_or("");
    // What the routes slice out of a name (the stream, the segment or object: the ETag's) rebuilds it.
    assert!(names_rebuild(file), "{file:?}");
    let (msn, part) = (parts.next(), parts.next());
    if let Ok(Some(at)) = blocking_query(msn, part) {
        let max = at.msn.wrapping_add(u64::from(data.len() as u8)) ^ 3;
        let _ = at.check(max, u64::from(data.first().copied().unwrap_or(0)) * 100, u64::from(data.last().copied().unwrap_or(0)));
    }
});
