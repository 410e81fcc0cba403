//! Short-lived TURN credentials in the TURN REST scheme (draft-uberti-behave-turn-rest-00) that
//! coturn checks with `use-auth-secret` and `static-auth-secret`: the username is
//! `{expiry}:{name}` (expiry in Unix seconds), the password the standard base64 of
//! HMAC-SHA1(secret, username). Nothing is stored: coturn recomputes the password.

use aws_lc_rs::hmac;
use base64::Engine;
use serde::Serialize;

use crate::config::TurnSection;

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The password of `username` under `secret`.
pub fn password(secret: &str, username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, username.as_bytes()).as_ref())
}

/// The ICE servers for a client called `name` at Unix time `now_secs`: the STUN servers, then
/// the TURN servers with a credential valid for `turn.ttl_secs` (none without a secret).
pub fn ice_servers(stun: &[String], turn: &TurnSection, name: &str, now_secs: u64) -> Vec<IceServer> {
    let mut out: Vec<IceServer> = stun
        .iter()
        .map(|u| IceServer {
            urls: vec![u.clone()],
            username: None,
            credential: None,
        })
        .collect();
    if !turn.urls.is_empty() && !turn.secret.is_empty() {
        // coturn splits on the first ':' (rest-api-separator): a name never has one.
        let username = format!("{}:{}", now_secs + turn.ttl_secs, name.replace(':', "_"));
        out.push(IceServer {
            urls: turn.urls.clone(),
            credential: Some(password(&turn.secret, &username)),
            username: Some(username),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2202's HMAC-SHA1 test cases 2 and 3, in base64.
    #[test]
    fn hmac_sha1_vectors() {
        let b64 = |hex: &str| {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            base64::engine::general_purpose::STANDARD.encode(bytes)
        };
        assert_eq!(
            password("Jefe", "what do ya want for nothing?"),
            b64("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
        );
        let key = String::from_utf8(vec![0x0b; 20]).unwrap();
        assert_eq!(password(&key, "Hi There"), b64("b617318655057264e28bc0b6fb378c8ef146be00"));
    }

    #[test]
    fn servers() {
        let mut turn = TurnSection {
            urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            secret: "s3cret".into(),
            ttl_secs: 600,
            ice_transport_policy: "all".into(),
        };
        let v = ice_servers(&["stun:stun.example.com:3478".into()], &turn, "room1.ann:x", 1_000);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].urls, ["stun:stun.example.com:3478"]);
        assert_eq!(v[0].username, None);
        let t = &v[1];
        assert_eq!(t.username.as_deref(), Some("1600:room1.ann_x"));
        assert_eq!(t.credential.as_deref(), Some(password("s3cret", "1600:room1.ann_x").as_str()));
        let json = serde_json::to_string(&v[0]).unwrap();
        assert_eq!(json, r#"{"urls":["stun:stun.example.com:3478"]}"#);
        turn.secret.clear();
        assert_eq!(ice_servers(&[], &turn, "x", 0), vec![]);
    }
}
