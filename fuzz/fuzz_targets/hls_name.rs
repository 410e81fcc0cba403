//! HLS and LL-HLS file names and blocking-reload queries as players (or anyone) send them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use streamgate::parse::{blocking_query, classic_name, ll_name, ClassicName, LlName};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '\n');
    let file = parts.next().unwrap_or("");
    if let Some(ClassicName::Segment { stream, seq, .. }) = classic_name(file) {
        assert_eq!(format!("{stream}-{seq}.ts"), file);
    }
    match ll_name(file) {
        LlName::Media { stream, name, .. } => {
            // The stream and the object's name (the ETag's) are the file name's pieces.
            assert_eq!(format!("{stream}-{name}{}", &file[file.len() - 4..]), file);
        }
        LlName::Playlist { stream } => assert_eq!(format!("{stream}.m3u8"), file),
        LlName::Unknown => {}
    }
    let (msn, part) = (parts.next(), parts.next());
    if let Ok(Some(at)) = blocking_query(msn, part) {
        let max = at.msn.wrapping_add(u64::from(data.len() as u8)) ^ 3;
        let _ = at.check(max, u64::from(data.first().copied().unwrap_or(0)) * 100, u64::from(data.last().copied().unwrap_or(0)));
    }
});
