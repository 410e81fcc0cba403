//! The one way in for publishers of every protocol: the publish policy ([`PublishAuth`]) is
//! asked, then the key is taken on the hub, at once (RTMP) or reserved until the session
//! connects (WebRTC). Tokens and hooks (issue 18) extend the policy here, for all protocols.

use media::hub::PublisherInfo;
use media::{Hub, HubError, Publisher, Reservation, StreamKey};

use crate::auth::PublishAuth;

/// Who wants to publish what.
#[derive(Debug, Clone)]
pub struct PublishRequest<'a> {
    pub key: StreamKey,
    /// `rtmp`, `webrtc`.
    pub protocol: &'static str,
    /// The peer's address, as shown in the API.
    pub remote: String,
    /// `Authorization: Bearer ...` (WHIP); None where the protocol has none.
    pub bearer: Option<&'a str>,
}

/// Why a publisher was turned away.
#[derive(Debug, thiserror::Error)]
pub enum PublishRefusal {
    /// The policy said no.
    #[error("not allowed to publish {0}")]
    Unauthorized(StreamKey),
    /// Someone publishes (or is connecting to publish) this key.
    #[error(transparent)]
    KeyTaken(HubError),
    /// The hub refused otherwise.
    #[error(transparent)]
    Hub(HubError),
}

impl From<HubError> for PublishRefusal {
    fn from(e: HubError) -> Self {
        match e {
            e @ HubError::AlreadyPublishing(_) => Self::KeyTaken(e),
            e => Self::Hub(e),
        }
    }
}

/// A request the policy allowed; only [`Publishing::authorize`] makes one, and taking a key
/// needs one, so no protocol can skip the policy.
#[derive(Debug)]
pub struct Authorized {
    key: StreamKey,
    info: PublisherInfo,
}

/// The publish path.
pub struct Publishing {
    hub: Hub,
    auth: Box<dyn PublishAuth>,
}

impl Publishing {
    pub fn new(hub: Hub, auth: Box<dyn PublishAuth>) -> Self {
        Self { hub, auth }
    }

    /// Asks the policy. Cheap: WHIP calls it before reading the offer's body.
    pub fn authorize(&self, req: PublishRequest<'_>) -> Result<Authorized, PublishRefusal> {
        if !self.auth.allow_publish(&req.key, req.protocol, req.bearer) {
            return Err(PublishRefusal::Unauthorized(req.key));
        }
        Ok(Authorized {
            key: req.key,
            info: PublisherInfo {
                protocol: req.protocol,
                remote: req.remote,
            },
        })
    }

    /// Takes the key now: the stream is live (RTMP, whose connection is up already).
    pub fn publish(&self, grant: Authorized) -> Result<Publisher, PublishRefusal> {
        Ok(self.hub.publish(grant.key, grant.info)?)
    }

    /// Reserves the key until the session connects (WebRTC: a publisher that connects first
    /// wins).
    pub fn reserve(&self, grant: Authorized) -> Result<Reservation, PublishRefusal> {
        Ok(self.hub.reserve(grant.key, grant.info)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::WhipToken;

    fn req<'a>(stream: &str, protocol: &'static str, bearer: Option<&'a str>) -> PublishRequest<'a> {
        PublishRequest {
            key: StreamKey::new("live", stream).unwrap(),
            protocol,
            remote: "192.0.2.1:5000".into(),
            bearer,
        }
    }

    #[test]
    fn every_protocol_goes_through_the_policy_and_the_key() {
        let hub = Hub::new(media::HubConfig::default());
        let p = Publishing::new(hub.clone(), Box::new(WhipToken("s3cret".into())));
        let reserve = |r| p.authorize(r).and_then(|g| p.reserve(g));
        let publish = |r| p.authorize(r).and_then(|g| p.publish(g));
        assert!(matches!(
            reserve(req("a", "webrtc", Some("nope"))),
            Err(PublishRefusal::Unauthorized(_))
        ));
        let reserved = reserve(req("a", "webrtc", Some("s3cret"))).unwrap();
        // A reservation does not hold the key: a publisher that is live first (RTMP here)
        // takes it, and the reservation can no longer be claimed.
        let live = publish(req("a", "rtmp", None)).unwrap();
        assert!(hub.is_live(&StreamKey::new("live", "a").unwrap()));
        assert!(reserved.claim().is_err());
        match publish(req("a", "rtmp", None)) {
            Err(e @ PublishRefusal::KeyTaken(_)) => assert!(e.to_string().contains("live/a"), "{e}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        drop(live);
    }
}
