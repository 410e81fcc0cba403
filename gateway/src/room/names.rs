//! Room names, display names and the stream keys made from them (sans-IO).
//!
//! A room is a stream app, so its name follows the key rules of INTERFACE.md, minus the names
//! that would collide with routes. A participant's peer name is its display name made safe for
//! a key (`{room}/{peer}`), unique in the room and among the hub's live keys.

use media::StreamKey;

/// App names that are routes of the gateway (`/api/...`, `/room/...`): no room may take them.
pub const RESERVED: &[&str] = &[
    "api",
    "ll",
    "whip",
    "whep",
    "sfu",
    "room",
    "watch",
    "assets",
    "metrics",
    "socket.io",
    "streams",
];

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a room name is 1-64 of A-Z a-z 0-9 _ . - (not . or ..)")]
    BadRoom,
    #[error("{0:?} is a path of the gateway and cannot be a room name")]
    Reserved(String),
    #[error("a display name needs at least one visible character")]
    EmptyName,
}

/// A room name, checked.
pub fn room_name(name: &str) -> Result<String, NameError> {
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(NameError::Reserved(name.to_string()));
    }
    // The key rules: the room is the app of `{room}/{peer}`.
    StreamKey::new(name, "x").map_err(|_| NameError::BadRoom)?;
    Ok(name.to_string())
}

/// A display name: trimmed, control and format characters dropped, inner runs of white space
/// made one space, at most `max_chars` characters.
pub fn display_name(raw: &str, max_chars: usize) -> Result<String, NameError> {
    let mut out = String::new();
    let mut space = false;
    for c in raw.chars() {
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if c.is_control() || is_format(c) {
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    let out: String = out.chars().take(max_chars).collect();
    let out = out.trim_end().to_string();
    if out.is_empty() {
        Err(NameError::EmptyName)
    } else {
        Ok(out)
    }
}

/// Invisible characters that reorder or hide text (bidi overrides, zero-width joiners).
fn is_format(c: char) -> bool {
    matches!(c as u32, 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x2069 | 0xFEFF)
}

/// The peer part of a participant's key: the ASCII letters, digits and `_ . -` of its display
/// name (spaces become `-`), at most 32 of them; `p{n}` when none are left (a Chinese name);
/// then `-2`, `-3`... until `taken` says no. Never `.` or `..`, never a `:` (the TURN
/// username's separator).
pub fn peer_key(display: &str, ordinal: usize, taken: impl Fn(&str) -> bool) -> String {
    let mut base: String = display
        .chars()
        .filter_map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '-' => Some(c.to_ascii_lowercase()),
            '.' => Some('.'),
            ' ' => Some('-'),
            _ => None,
        })
        .take(32)
        .collect();
    let trimmed = base.trim_matches(|c| c == '-' || c == '.').to_string();
    base = trimmed;
    if base.is_empty() {
        base = format!("p{ordinal}");
    }
    if !taken(&base) {
        return base;
    }
    (2..).map(|n| format!("{base}-{n}")).find(|k| !taken(k)).unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert_eq!(room_name("team-1").unwrap(), "team-1");
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65), "中文"] {
            assert_eq!(room_name(bad), Err(NameError::BadRoom), "{bad:?}");
        }
        for r in ["api", "WHIP", "room", "socket.io", "ll"] {
            assert!(matches!(room_name(r), Err(NameError::Reserved(_))), "{r}");
        }
    }

    #[test]
    fn display_names() {
        assert_eq!(display_name("  Ann   Lee \n", 32).unwrap(), "Ann Lee");
        assert_eq!(display_name("a\u{202E}b\u{0007}c\u{200B}", 32).unwrap(), "abc");
        assert_eq!(display_name("王小明", 32).unwrap(), "王小明");
        assert_eq!(display_name(&"é".repeat(40), 32).unwrap().chars().count(), 32);
        assert_eq!(display_name(" \u{200B}\t", 32), Err(NameError::EmptyName));
        assert_eq!(display_name("ab  cd", 3).unwrap(), "ab", "cut, then no trailing space");
    }

    #[test]
    fn peer_keys() {
        let none = |_: &str| false;
        assert_eq!(peer_key("Ann Lee", 1, none), "ann-lee");
        assert_eq!(peer_key("王小明", 7, none), "p7");
        assert_eq!(peer_key("..", 3, none), "p3");
        assert_eq!(peer_key("a:b/c", 1, none), "abc");
        let taken = |k: &str| k == "ann" || k == "ann-2";
        assert_eq!(peer_key("Ann", 1, taken), "ann-3");
        let long = peer_key(&"x".repeat(100), 1, none);
        assert_eq!(long.len(), 32);
        // Every result is a valid key in a valid room.
        for d in ["Ann", "王", "-.-", "a.b", " x ", "Ünïcödé"] {
            let k = peer_key(d, 9, none);
            assert!(StreamKey::new("room1", &k).is_ok(), "{d:?} -> {k:?}");
            assert!(!k.contains(':'));
        }
    }
}
