//! A [`WhipClient`] connected to an [`Endpoint`] in memory, on a virtual clock: no sockets, no
//! sleeps. For byte tests and fuzzing of the whole receive path (SRTP, str0m's depacketizer
//! and jitter buffer, our frame handling) with RTP payloads crafted, lost or reordered at will.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use str0m::net::Transmit;
use str0m::rtp::ExtensionMap;

use crate::client::{ClientError, WhipClient};
use crate::endpoint::{Endpoint, EndpointConfig, EndpointEvent, OfferError, Outputs, SessionId};
use crate::{RtpFrame, Track};

/// The clear part of an SRTP packet (the RTP header is not encrypted).
#[derive(Debug, Clone, Copy)]
pub struct RtpView {
    /// Payload type.
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
}

impl RtpView {
    /// The header of an RTP (not RTCP) datagram.
    pub fn parse(buf: &[u8]) -> Option<Self> {
        // Payload types 64..96 with the marker bit are RTCP packet types 192..223.
        if buf.len() < 12 || buf[0] >> 6 != 2 || (64..96).contains(&(buf[1] & 0x7f)) {
            return None;
        }
        Some(Self {
            pt: buf[1] & 0x7f,
            seq: u16::from_be_bytes([buf[2], buf[3]]),
        })
    }
}

/// Why the loopback could not connect or went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoopbackError {
    /// The endpoint refused the client's offer.
    #[error(transparent)]
    Offer(#[from] OfferError),
    /// The client failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// ICE/DTLS did not complete.
    #[error("ICE/DTLS did not complete")]
    NotConnected,
    /// Datagrams kept flowing without end.
    #[error("datagram exchange did not quiesce")]
    NoQuiescence,
}

/// Which client datagrams to lose on the way.
pub type LossFilter = Box<dyn FnMut(&RtpView) -> bool + Send>;

/// One publisher and the endpoint, wired together.
pub struct Loopback {
    /// The receiving side.
    pub ep: Endpoint,
    /// The publishing side.
    pub client: WhipClient,
    /// The session's id in the endpoint.
    pub id: SessionId,
    /// Virtual time.
    pub now: Instant,
    /// Video frames the endpoint delivered, in order.
    pub frames: Vec<RtpFrame>,
    /// The endpoint closed the session.
    pub closed: bool,
    /// Loses client datagrams for which it returns true.
    pub lose: LossFilter,
    /// Datagrams lost by `lose`.
    pub lost: usize,
    server: SocketAddr,
}

impl Loopback {
    /// Connects a video-only publisher (`extensions` replaces its RTP header extension map).
    pub fn connect(extensions: Option<ExtensionMap>) -> Result<Self, LoopbackError> {
        let now = Instant::now();
        let server = SocketAddr::from((Ipv4Addr::LOCALHOST, 8189));
        let client_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 50000));
        let mut ep = Endpoint::new(EndpointConfig {
            candidates: vec![server],
            ..EndpointConfig::default()
        });
        let (mut client, offer) = WhipClient::new(now, client_addr, true, false, extensions);
        let mut out = Outputs::default();
        let (id, answer, _) = ep.accept_offer(now, &offer, &mut out)?;
        client.accept_answer(&answer)?;
        let mut link = Self {
            ep,
            client,
            id,
            now,
            frames: Vec::new(),
            closed: false,
            lose: Box::new(|_| false),
            lost: 0,
            server,
        };
        link.deliver(Vec::new(), out)?;
        for _ in 0..2000 {
            if link.client.is_connected() {
                break;
            }
            link.step()?;
        }
        if !link.client.is_connected() {
            return Err(LoopbackError::NotConnected);
        }
        link.advance(Duration::from_millis(100))?;
        Ok(link)
    }

    /// Moves datagrams both ways until nobody has anything to send.
    pub fn deliver(&mut self, mut from_client: Vec<Transmit>, out: Outputs) -> Result<(), LoopbackError> {
        let mut to_client = out.transmits;
        self.collect(out.events);
        for _ in 0..100_000 {
            if from_client.is_empty() && to_client.is_empty() {
                return Ok(());
            }
            for t in std::mem::take(&mut from_client) {
                if t.destination != self.server {
                    continue;
                }
                if RtpView::parse(&t.contents).is_some_and(|v| (self.lose)(&v)) {
                    self.lost += 1;
                    continue;
                }
                let mut out = Outputs::default();
                self.ep.handle_datagram(self.now, t.source, &t.contents, &mut out);
                to_client.extend(out.transmits);
                self.collect(out.events);
            }
            for t in std::mem::take(&mut to_client) {
                self.client.handle_datagram(self.now, t.source, &t.contents, &mut from_client)?;
            }
        }
        Err(LoopbackError::NoQuiescence)
    }

    fn collect(&mut self, events: Vec<EndpointEvent>) {
        for e in events {
            match e {
                EndpointEvent::Media(id, f) if id == self.id && f.track == Track::Video => self.frames.push(f),
                EndpointEvent::Closed(id, _) if id == self.id => self.closed = true,
                _ => {}
            }
        }
    }

    /// Advances the clock to the next timer of either side (at most 10 ms) and fires it.
    pub fn step(&mut self) -> Result<(), LoopbackError> {
        let next = self
            .client
            .deadline()
            .min(self.ep.next_deadline().unwrap_or(self.now + Duration::from_secs(1)))
            .min(self.now + Duration::from_millis(10))
            .max(self.now);
        self.now = next;
        let mut from_client = Vec::new();
        self.client.handle_timeout(self.now, &mut from_client)?;
        let mut out = Outputs::default();
        self.ep.handle_timeout(self.now, &mut out);
        self.deliver(from_client, out)
    }

    /// Lets `d` of virtual time pass.
    pub fn advance(&mut self, d: Duration) -> Result<(), LoopbackError> {
        let end = self.now + d;
        while self.now < end {
            self.step()?;
        }
        Ok(())
    }

    /// Sends one H.264 access unit (RFC 6184 packetization) stamped `rtp_time`, delivers it.
    pub fn send_au(&mut self, rtp_time: u32, au: &[&[u8]]) -> Result<(), LoopbackError> {
        let mut tx = Vec::new();
        self.client.send_h264(self.now, rtp_time, au, &mut tx)?;
        self.deliver(tx, Outputs::default())
    }

    /// Sends one raw video RTP payload (`seq` overrides the sequence number), delivers it.
    pub fn send_rtp(&mut self, seq: Option<u64>, rtp_time: u32, marker: bool, payload: &[u8]) -> Result<(), LoopbackError> {
        let mut tx = Vec::new();
        self.client.write_video_rtp(self.now, seq, rtp_time, marker, payload, &mut tx)?;
        self.deliver(tx, Outputs::default())
    }
}
