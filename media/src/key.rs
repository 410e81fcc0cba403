//! Stream keys: `{app}/{stream}`, each part `[A-Za-z0-9_.-]{1,64}` and never `.` or `..`.

use std::fmt;

/// Why a stream key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// A part is empty or longer than 64 bytes.
    #[error("stream name part must be 1 to 64 characters")]
    Length,
    /// A part contains a character outside `[A-Za-z0-9_.-]`.
    #[error("stream name may only contain letters, digits, '_', '.' and '-'")]
    Character,
    /// A part is `.` or `..`.
    #[error("stream name may not be '.' or '..'")]
    Dots,
    /// Not of the form `app/stream`.
    #[error("stream key must be app/stream")]
    Shape,
}

/// A validated stream key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    app: String,
    stream: String,
}

fn check_part(p: &str) -> Result<(), KeyError> {
    if p.is_empty() || p.len() > 64 {
        return Err(KeyError::Length);
    }
    if !p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Err(KeyError::Character);
    }
    if p == "." || p == ".." {
        return Err(KeyError::Dots);
    }
    Ok(())
}

impl StreamKey {
    /// Validates both parts.
    pub fn new(app: &str, stream: &str) -> Result<Self, KeyError> {
        check_part(app)?;
        check_part(stream)?;
        Ok(Self {
            app: app.to_owned(),
            stream: stream.to_owned(),
        })
    }

    /// Parses `app/stream`.
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        let (app, stream) = key.split_once('/').ok_or(KeyError::Shape)?;
        Self::new(app, stream)
    }

    /// The application part.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The stream part.
    pub fn stream(&self) -> &str {
        &self.stream
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid() {
        let k = StreamKey::parse("live/cam-1_a.b").unwrap();
        assert_eq!((k.app(), k.stream()), ("live", "cam-1_a.b"));
        assert_eq!(k.to_string(), "live/cam-1_a.b");
        assert!(StreamKey::new("a", &"x".repeat(64)).is_ok());
    }

    #[test]
    fn refused() {
        assert_eq!(StreamKey::new("live", ".."), Err(KeyError::Dots));
        assert_eq!(StreamKey::new(".", "x"), Err(KeyError::Dots));
        assert_eq!(StreamKey::new("live", "a b"), Err(KeyError::Character));
        assert_eq!(StreamKey::new("live", "a/b"), Err(KeyError::Character));
        assert_eq!(StreamKey::new("live", "a%2f"), Err(KeyError::Character));
        assert_eq!(StreamKey::new("live", "é"), Err(KeyError::Character));
        assert_eq!(StreamKey::new("live", ""), Err(KeyError::Length));
        assert_eq!(StreamKey::new("live", &"x".repeat(65)), Err(KeyError::Length));
        assert_eq!(StreamKey::parse("live/a/b"), Err(KeyError::Character));
        assert_eq!(StreamKey::parse("live"), Err(KeyError::Shape));
    }
}
