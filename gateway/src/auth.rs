//! Who may publish: the seam where real authentication plugs in later.

use media::StreamKey;

use crate::config::Config;

/// Decides whether a publisher may claim a key.
pub trait PublishAuth: Send + Sync {
    /// `bearer` is the token from `Authorization: Bearer ...`, if any.
    fn allow_publish(&self, key: &StreamKey, protocol: &str, bearer: Option<&str>) -> bool;
}

/// Everyone may publish.
pub struct Open;

impl PublishAuth for Open {
    fn allow_publish(&self, _: &StreamKey, _: &str, _: Option<&str>) -> bool {
        true
    }
}

/// WHIP publishers must present one shared bearer token (`webrtc.whip_token`).
pub struct WhipToken(pub String);

impl PublishAuth for WhipToken {
    fn allow_publish(&self, _: &StreamKey, protocol: &str, bearer: Option<&str>) -> bool {
        protocol != "webrtc" || bearer.is_some_and(|b| constant_time_eq(b.as_bytes(), self.0.as_bytes()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The policy the configuration asks for.
pub fn from_config(config: &Config) -> Box<dyn PublishAuth> {
    if config.webrtc.whip_token.is_empty() {
        Box::new(Open)
    } else {
        Box::new(WhipToken(config.webrtc.whip_token.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_checked_for_webrtc_only() {
        let k = StreamKey::new("live", "a").unwrap();
        let a = WhipToken("s3cret".into());
        assert!(a.allow_publish(&k, "webrtc", Some("s3cret")));
        assert!(!a.allow_publish(&k, "webrtc", Some("s3cre")));
        assert!(!a.allow_publish(&k, "webrtc", None));
        assert!(a.allow_publish(&k, "rtmp", None));
    }
}
