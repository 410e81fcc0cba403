//! HLS request and session policy, sans-IO: what a URL names, whether a blocking reload may
//! wait, and when a segmenter resumes, ends its playlist or goes. The routes in the parent
//! module apply these decisions; unit tests and the fuzzer (`hls_name`) reach them directly.

use std::time::Duration;

/// What a classic HLS URL's last path segment names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassicName<'a> {
    /// `{stream}.m3u8`.
    Playlist { stream: &'a str },
    /// `{stream}-{seq}.ts`; `sequence` is None when `seq` is not a number (nothing has it).
    Segment {
        stream: &'a str,
        seq: &'a str,
        sequence: Option<u64>,
    },
}

/// Parses a classic HLS file name; None when it is neither a playlist nor a segment (the URL
/// may be an FLV play).
///
/// Stream names may contain `-`: the sequence number is what follows the last one.
pub fn classic_name(file: &str) -> Option<ClassicName<'_>> {
    if let Some(stream) = file.strip_suffix(".m3u8") {
        return Some(ClassicName::Playlist { stream });
    }
    let (stream, seq) = file.strip_suffix(".ts")?.rsplit_once('-')?;
    Some(ClassicName::Segment {
        stream,
        seq,
        sequence: seq.parse().ok(),
    })
}

/// A media object of an LL-HLS stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlObject {
    /// `{stream}-init{id}.mp4`.
    Init(u64),
    /// `{stream}-{msn}.m4s`.
    Segment(u64),
    /// `{stream}-{msn}.{part}.m4s`.
    Part(u64, usize),
}

/// What an LL-HLS URL's last path segment names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlName<'a> {
    /// `{stream}.m3u8`.
    Playlist { stream: &'a str },
    /// A media file of `stream`; `name` is what follows the stream's `-` without the extension
    /// (`17.3`, `init2`: ETags carry it); `object` is None when that is not a name the
    /// segmenter makes (the answer is 404, after the stream name is checked).
    Media {
        stream: &'a str,
        name: &'a str,
        object: Option<LlObject>,
    },
    /// Not `.m3u8`, `.m4s` or `.mp4`, or no `-` before the object's name.
    Unknown,
}

/// The parsers' property over any name (checked by the unit tests and the `hls_name` fuzz
/// target): what the routes slice out of a name rebuilds it, for the classic and the LL-HLS
/// parser alike (the stream and the segment number; the stream and the object's name).
pub fn names_rebuild(file: &str) -> bool {
    let classic = match classic_name(file) {
        Some(ClassicName::Segment { stream, seq, .. }) => format!("{stream}-{seq}.ts") == file,
        _ => true,
    };
    let ll = match ll_name(file) {
        LlName::Media { stream, name, .. } => format!("{stream}-{name}{}", &file[file.len() - 4..]) == file,
        LlName::Playlist { stream } => format!("{stream}.m3u8") == file,
        LlName::Unknown => true,
    };
    classic && ll
}

/// Parses an LL-HLS file name. Stream names may contain `-`: the object's name is what
/// follows the last one (`cam--1.m4s` is segment 1 of stream `cam-`).
pub fn ll_name(file: &str) -> LlName<'_> {
    if let Some(stream) = file.strip_suffix(".m3u8") {
        return LlName::Playlist { stream };
    }
    let (mp4, rest) = match (file.strip_suffix(".mp4"), file.strip_suffix(".m4s")) {
        (Some(r), _) => (true, r),
        (None, Some(r)) => (false, r),
        (None, None) => return LlName::Unknown,
    };
    let Some((stream, name)) = rest.rsplit_once('-') else {
        return LlName::Unknown;
    };
    let object = if mp4 {
        name.strip_prefix("init").and_then(number).map(LlObject::Init)
    } else {
        match name.split_once('.') {
            None => number(name).map(LlObject::Segment),
            Some((m, p)) => number(m)
                .zip(number(p).and_then(|p| usize::try_from(p).ok()))
                .map(|(m, p)| LlObject::Part(m, p)),
        }
    };
    LlName::Media { stream, name, object }
}

/// A decimal number (as `u64::from_str` reads it).
fn number(s: &str) -> Option<u64> {
    s.parse().ok()
}

/// Where a blocking playlist reload (`_HLS_msn`, `_HLS_part`) waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockAt {
    pub msn: u64,
    pub part: Option<u64>,
}

/// The query of an LL-HLS playlist request: None without `_HLS_msn`, an error (400) for values
/// that are not non-negative integers or a part without a segment.
pub fn blocking_query(msn: Option<&str>, part: Option<&str>) -> Result<Option<BlockAt>, &'static str> {
    let parse = |v: Option<&str>| v.map(|s| s.parse::<u64>()).transpose();
    let (Ok(msn), Ok(part)) = (parse(msn), parse(part)) else {
        return Err("_HLS_msn and _HLS_part are non-negative integers");
    };
    match (msn, part) {
        (None, Some(_)) => Err("_HLS_part needs _HLS_msn"),
        (None, None) => Ok(None),
        (Some(msn), part) => Ok(Some(BlockAt { msn, part })),
    }
}

impl BlockAt {
    /// Whether the request may wait (RFC 8216bis 6.2.5.2): at most two segments past the live
    /// edge (`max_msn`, the segmenter's), and no part beyond what the longest segment can hold.
    /// The error is the 400's text.
    pub fn check(self, max_msn: u64, segment_ms: u64, part_ms: u64) -> Result<(u64, Option<usize>), String> {
        if self.msn > max_msn {
            return Err(format!(
                "_HLS_msn={} is more than two segments past the live edge ({max_msn} at most)",
                self.msn
            ));
        }
        // No segment holds more parts than its longest possible duration allows.
        let most_parts = segment_ms.saturating_mul(10) / part_ms.max(1) + 2;
        if self.part.is_some_and(|p| p > most_parts) {
            return Err(format!("_HLS_part is past what a segment can hold ({most_parts})"));
        }
        Ok((self.msn, self.part.and_then(|p| usize::try_from(p).ok())))
    }
}

/// A segmenter's life: it runs while players ask for its playlist, waits for a publisher that
/// left, then ends its playlist and finally goes.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    /// No playlist request for this long: the segmenter stops (`hls.idle_timeout_ms`).
    pub idle: Duration,
    /// A publisher back within this long continues the playlist (`hls.reconnect_grace_ms`).
    pub grace: Duration,
    /// An ended playlist stays readable this long (`hls.keep_ended_ms`).
    pub keep_ended: Duration,
}

/// What to do at a tick after the publisher left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AfterLeave {
    /// Subscribe again if the key is live: the playlist continues after a discontinuity.
    pub try_resume: bool,
    /// Close the playlist (`EXT-X-ENDLIST`).
    pub end: bool,
    /// Stop and forget the segmenter.
    pub remove: bool,
}

impl Lifecycle {
    /// While the publisher is live: stop when nobody asked for the playlist lately.
    pub fn stop_while_live(&self, idle_for: Duration) -> bool {
        idle_for > self.idle
    }

    /// `gone_for` after the publisher left, nobody asked for `idle_for`, the playlist `ended` or
    /// not yet.
    pub fn after_leave(&self, gone_for: Duration, idle_for: Duration, ended: bool) -> AfterLeave {
        let watched = idle_for <= self.idle;
        let kept = gone_for < self.grace + self.keep_ended;
        AfterLeave {
            try_resume: kept && watched,
            end: gone_for >= self.grace && !ended,
            remove: !kept || !watched,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_names() {
        assert_eq!(classic_name("cam.m3u8"), Some(ClassicName::Playlist { stream: "cam" }));
        assert_eq!(
            classic_name("my-cam-170000.ts"),
            Some(ClassicName::Segment {
                stream: "my-cam",
                seq: "170000",
                sequence: Some(170000)
            })
        );
        assert_eq!(
            classic_name("cam-x.ts"),
            Some(ClassicName::Segment {
                stream: "cam",
                seq: "x",
                sequence: None
            })
        );
        // No sequence separator, or an FLV play: not HLS.
        assert_eq!(classic_name("cam.ts"), None);
        assert_eq!(classic_name("cam.flv"), None);
    }

    #[test]
    fn ll_names() {
        let media = |stream, name, object| LlName::Media { stream, name, object };
        assert_eq!(ll_name("cam.m3u8"), LlName::Playlist { stream: "cam" });
        assert_eq!(ll_name("cam-17.m4s"), media("cam", "17", Some(LlObject::Segment(17))));
        assert_eq!(ll_name("cam-17.3.m4s"), media("cam", "17.3", Some(LlObject::Part(17, 3))));
        assert_eq!(ll_name("cam-init2.mp4"), media("cam", "init2", Some(LlObject::Init(2))));
        assert_eq!(ll_name("my-cam-17.m4s"), media("my-cam", "17", Some(LlObject::Segment(17))));
        // The object's name follows the last `-`.
        assert_eq!(ll_name("cam--1.m4s"), media("cam-", "1", Some(LlObject::Segment(1))));
        // Names the segmenter never makes: the stream is still named (its 400 comes first).
        for bad in [
            "cam-.m4s",
            "cam-x.m4s",
            "cam-1.x.m4s",
            "cam-1.2.3.m4s",
            "cam-init.mp4",
            "cam-7.mp4",
            "cam-init-1.mp4",
            "cam-99999999999999999999999.m4s",
        ] {
            assert!(matches!(ll_name(bad), LlName::Media { object: None, .. }), "{bad}");
        }
        assert_eq!(ll_name("cam.ts"), LlName::Unknown);
        assert_eq!(ll_name("cam.m4s"), LlName::Unknown);
        assert_eq!(ll_name(""), LlName::Unknown);
    }

    #[test]
    fn blocking_reloads() {
        assert_eq!(blocking_query(None, None), Ok(None));
        assert_eq!(blocking_query(Some("5"), None), Ok(Some(BlockAt { msn: 5, part: None })));
        assert_eq!(blocking_query(Some("5"), Some("2")), Ok(Some(BlockAt { msn: 5, part: Some(2) })));
        assert_eq!(blocking_query(None, Some("2")), Err("_HLS_part needs _HLS_msn"));
        for (m, p) in [(Some("-1"), None), (Some("x"), None), (Some("1"), Some("1.5")), (Some(""), None)] {
            assert_eq!(blocking_query(m, p), Err("_HLS_msn and _HLS_part are non-negative integers"));
        }
        // Two segments past the edge may wait, three may not.
        let at = |msn, part| BlockAt { msn, part };
        assert_eq!(at(12, None).check(12, 1000, 200), Ok((12, None)));
        assert_eq!(
            at(13, None).check(12, 1000, 200).unwrap_err(),
            "_HLS_msn=13 is more than two segments past the live edge (12 at most)"
        );
        // 1 s segments of 200 ms parts: a segment holds at most 10 * 5 + 2 parts.
        assert_eq!(at(12, Some(52)).check(12, 1000, 200), Ok((12, Some(52))));
        assert_eq!(
            at(12, Some(53)).check(12, 1000, 200).unwrap_err(),
            "_HLS_part is past what a segment can hold (52)"
        );
        assert!(
            at(0, Some(u64::MAX)).check(0, 1000, 0).is_err(),
            "part_ms 0 does not divide by zero"
        );
    }

    #[test]
    fn lifecycle() {
        let s = Duration::from_secs;
        let l = Lifecycle {
            idle: s(30),
            grace: s(10),
            keep_ended: s(60),
        };
        assert!(!l.stop_while_live(s(30)));
        assert!(l.stop_while_live(s(31)));
        // Just after the publisher left: wait for it, playlist open.
        assert_eq!(
            l.after_leave(s(1), s(1), false),
            AfterLeave {
                try_resume: true,
                end: false,
                remove: false
            }
        );
        // Grace over: the playlist ends, once; a publisher coming back still continues it.
        assert_eq!(
            l.after_leave(s(10), s(1), false),
            AfterLeave {
                try_resume: true,
                end: true,
                remove: false
            }
        );
        assert!(!l.after_leave(s(11), s(1), true).end);
        // Kept ended playlist over: gone.
        let late = l.after_leave(s(70), s(1), true);
        assert!(late.remove && !late.try_resume);
        // Nobody watches: gone at once, whatever the grace.
        let unwatched = l.after_leave(s(1), s(31), false);
        assert!(unwatched.remove && !unwatched.try_resume);
    }

    /// The fuzz target's properties (`fuzz/fuzz_targets/hls_name.rs`) over mutated names: no
    /// panic, and what the routes slice out of a name is there.
    #[test]
    fn mutated_names_keep_the_properties() {
        let seeds = ["cam.m3u8", "my-cam-17.3.m4s", "cam-init2.mp4", "cam-170000.ts", "a-b-c-1.2.m4s"];
        let alphabet = b"-.0123456789initsmp4m3u8tsx\xc3\xa9/%";
        let mut m = crate::testutil::Mutator::new(0x2545_f491_4f6c_dd1d);
        for i in 0..100_000 {
            let b = m.mutate(seeds[i % seeds.len()].as_bytes(), alphabet, 4);
            let Ok(file) = std::str::from_utf8(&b) else { continue };
            assert!(names_rebuild(file), "{file:?}");
        }
    }
}
