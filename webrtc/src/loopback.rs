//! Peers connected to an [`Endpoint`] in memory, on a virtual clock: no sockets, no sleeps.
//!
//! * [`Loopback`]: a [`WhipClient`] publishing, for byte tests and fuzzing of the whole receive
//!   path (SRTP, str0m's depacketizer and jitter buffer, our frame handling) with RTP payloads
//!   crafted, lost or reordered at will.
//! * [`ViewerLink`]: a [`WhepClient`] viewing, for the send path (what the endpoint writes is
//!   what the viewer's stack depacketizes).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use str0m::net::Transmit;
use str0m::rtp::ExtensionMap;

use crate::client::{ClientError, WhepClient, WhipClient};
use crate::endpoint::{
    Endpoint, EndpointConfig, EndpointEvent, FeedError, FeedId, FeedSpec, OfferError, Outputs, SessionId, SessionSpec, WriteError,
};
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
    /// The endpoint refused to write.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The endpoint refused a feed operation.
    #[error(transparent)]
    Feed(#[from] FeedError),
    /// Datagrams kept flowing without end.
    #[error("datagram exchange did not quiesce")]
    NoQuiescence,
}

/// Which client datagrams to lose on the way.
pub type LossFilter = Box<dyn FnMut(&RtpView) -> bool + Send>;

/// What a link needs of the peer on the other side of the endpoint.
pub trait Peer {
    /// When its timers are due.
    fn deadline(&self) -> Instant;
    /// Drives its timers.
    fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) -> Result<(), ClientError>;
    /// A datagram from the endpoint.
    fn handle_datagram(&mut self, now: Instant, source: SocketAddr, buf: &[u8], out: &mut Vec<Transmit>) -> Result<(), ClientError>;
    /// ICE and DTLS are up.
    fn is_connected(&self) -> bool;
}

impl Peer for WhipClient {
    fn deadline(&self) -> Instant {
        WhipClient::deadline(self)
    }
    fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) -> Result<(), ClientError> {
        WhipClient::handle_timeout(self, now, out)
    }
    fn handle_datagram(&mut self, now: Instant, source: SocketAddr, buf: &[u8], out: &mut Vec<Transmit>) -> Result<(), ClientError> {
        WhipClient::handle_datagram(self, now, source, buf, out)
    }
    fn is_connected(&self) -> bool {
        WhipClient::is_connected(self)
    }
}

impl Peer for WhepClient {
    fn deadline(&self) -> Instant {
        WhepClient::deadline(self)
    }
    fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) -> Result<(), ClientError> {
        WhepClient::handle_timeout(self, now, out)
    }
    fn handle_datagram(&mut self, now: Instant, source: SocketAddr, buf: &[u8], out: &mut Vec<Transmit>) -> Result<(), ClientError> {
        WhepClient::handle_datagram(self, now, source, buf, out)
    }
    fn is_connected(&self) -> bool {
        WhepClient::is_connected(self)
    }
}

/// One peer and the endpoint, wired together.
pub struct Link<P> {
    /// The endpoint.
    pub ep: Endpoint,
    /// The peer.
    pub client: P,
    /// The session's id in the endpoint.
    pub id: SessionId,
    /// Virtual time.
    pub now: Instant,
    /// Video frames the endpoint delivered from the peer, in order.
    pub frames: Vec<RtpFrame>,
    /// Keyframe requests from the peer the endpoint reported for this session.
    pub keyframe_requests: usize,
    /// The endpoint closed the session.
    pub closed: bool,
    /// Loses the peer's RTP datagrams for which it returns true.
    pub lose: LossFilter,
    /// Datagrams lost by `lose`.
    pub lost: usize,
    /// Loses the endpoint's RTP datagrams to the peer for which it returns true.
    pub lose_to_peer: LossFilter,
    /// Datagrams lost by `lose_to_peer`.
    pub lost_to_peer: usize,
    /// A peer address whose datagrams, both ways, are lost (the network it was on is gone).
    pub unreachable: Option<SocketAddr>,
    server: SocketAddr,
}

/// A publisher ([`WhipClient`]) sending to the endpoint.
pub type Loopback = Link<WhipClient>;
/// A viewer ([`WhepClient`]) the endpoint sends to.
pub type ViewerLink = Link<WhepClient>;

const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8189);

fn endpoint() -> Endpoint {
    Endpoint::new(EndpointConfig {
        candidates: vec![SERVER],
        ..EndpointConfig::default()
    })
}

impl<P: Peer> Link<P> {
    /// Runs ICE and DTLS to completion between a peer and the session that took its offer.
    fn establish(ep: Endpoint, client: P, id: SessionId, now: Instant, out: Outputs) -> Result<Self, LoopbackError> {
        let mut link = Self {
            ep,
            client,
            id,
            now,
            frames: Vec::new(),
            keyframe_requests: 0,
            closed: false,
            lose: Box::new(|_| false),
            lost: 0,
            lose_to_peer: Box::new(|_| false),
            lost_to_peer: 0,
            unreachable: None,
            server: SERVER,
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
                if t.destination != self.server || Some(t.source) == self.unreachable {
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
                if Some(t.destination) == self.unreachable {
                    continue;
                }
                if RtpView::parse(&t.contents).is_some_and(|v| (self.lose_to_peer)(&v)) {
                    self.lost_to_peer += 1;
                    continue;
                }
                self.client.handle_datagram(self.now, t.source, &t.contents, &mut from_client)?;
            }
        }
        Err(LoopbackError::NoQuiescence)
    }

    fn collect(&mut self, events: Vec<EndpointEvent>) {
        for e in events {
            match e {
                EndpointEvent::Media(id, f) if id == self.id && f.track == Track::Video => self.frames.push(f),
                EndpointEvent::KeyframeRequest(id, _) if id == self.id => self.keyframe_requests += 1,
                EndpointEvent::Closed(id, _) if id == self.id => self.closed = true,
                _ => {}
            }
        }
    }

    /// Advances the clock to the next timer of either side (at least 1 ms, at most 10 ms) and
    /// fires it.
    pub fn step(&mut self) -> Result<(), LoopbackError> {
        let next = self
            .client
            .deadline()
            .min(self.ep.next_deadline().unwrap_or(self.now + Duration::from_secs(1)))
            .min(self.now + Duration::from_millis(10));
        // A timer that is still due after it fired (str0m's pacer, with congestion control on,
        // answers "now" until the clock moves) must not stop virtual time: move 1 ms on.
        self.now = if next <= self.now {
            self.now + Duration::from_millis(1)
        } else {
            next
        };
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
}

impl Link<WhipClient> {
    /// Connects a video-only publisher (`extensions` replaces its RTP header extension map).
    pub fn connect(extensions: Option<ExtensionMap>) -> Result<Self, LoopbackError> {
        Self::connect_with(&SessionSpec::receiver(), extensions)
    }

    /// Connects a video-only publisher to a session doing what `spec` says.
    pub fn connect_with(spec: &SessionSpec, extensions: Option<ExtensionMap>) -> Result<Self, LoopbackError> {
        let now = Instant::now();
        let mut ep = endpoint();
        let (mut client, offer) = WhipClient::new(now, SocketAddr::from((Ipv4Addr::LOCALHOST, 50000)), true, false, extensions);
        let mut out = Outputs::default();
        let accepted = ep.accept_offer(now, &offer, spec, &mut out)?;
        client.accept_answer(&accepted.answer)?;
        Self::establish(ep, client, accepted.id, now, out)
    }

    /// The publisher restarts ICE from `local` (offer, the endpoint's answer on the same
    /// session) and its checks run (2 s: the first go out from the old address too).
    pub fn restart_ice(&mut self, local: SocketAddr) -> Result<(), LoopbackError> {
        let offer = self.client.restart_ice(local)?;
        let mut out = Outputs::default();
        let answer = self.ep.restart(self.now, self.id, &offer, &mut out)?;
        self.client.accept_answer(&answer)?;
        self.deliver(Vec::new(), out)?;
        self.advance(Duration::from_secs(2))
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

impl Link<WhepClient> {
    /// Connects a viewer offering a video and/or an audio line to a session sending per `spec`.
    pub fn connect(spec: &SessionSpec, video: bool, audio: bool) -> Result<Self, LoopbackError> {
        let now = Instant::now();
        let mut ep = endpoint();
        let (mut client, offer) = WhepClient::new(now, SocketAddr::from((Ipv4Addr::LOCALHOST, 50001)), video, audio);
        let mut out = Outputs::default();
        let accepted = ep.accept_offer(now, &offer, spec, &mut out)?;
        client.accept_answer(&accepted.answer)?;
        Self::establish(ep, client, accepted.id, now, out)
    }

    /// Connects a viewer to a session the endpoint offers with `feeds` (a room's subscribing
    /// peer connection); returns the link and the feeds' ids.
    pub fn offered(feeds: &[FeedSpec]) -> Result<(Self, Vec<FeedId>), LoopbackError> {
        let now = Instant::now();
        let mut ep = endpoint();
        let mut out = Outputs::default();
        let (id, ids, offer) = ep.offer_session(now, feeds, &mut out)?;
        let (client, answer) = WhepClient::answer(now, SocketAddr::from((Ipv4Addr::LOCALHOST, 50002)), &offer)?;
        ep.accept_answer(id, &answer, &mut out)?;
        Ok((Self::establish(ep, client, id, now, out)?, ids))
    }

    /// The endpoint renegotiates with `offer` (a feed added or removed); the viewer answers.
    pub fn renegotiate(&mut self, offer: &str) -> Result<(), LoopbackError> {
        let mut tx = Vec::new();
        let answer = self.client.accept_offer(offer, &mut tx)?;
        let mut out = Outputs::default();
        self.ep.accept_answer(self.id, &answer, &mut out)?;
        self.deliver(tx, out)
    }

    /// The endpoint writes one frame of a feed to the viewer, and it is delivered.
    pub fn write_feed(&mut self, feed: FeedId, track: Track, rtp_time: u64, data: &[u8]) -> Result<(), LoopbackError> {
        let mut out = Outputs::default();
        // The loopback's frames are all keyframes (its tests write IDRs and VP8 keyframes).
        self.ep
            .write_feed(self.id, feed, track, self.now, rtp_time, data, track == Track::Video, &mut out)?;
        self.deliver(Vec::new(), out)
    }

    /// The endpoint writes one frame to the viewer, and it is delivered.
    pub fn write(&mut self, track: Track, rtp_time: u64, data: &[u8]) -> Result<(), LoopbackError> {
        let mut out = Outputs::default();
        self.ep.write(self.id, track, self.now, rtp_time, data, &mut out)?;
        self.deliver(Vec::new(), out)
    }

    /// The viewer asks for a keyframe.
    pub fn request_keyframe(&mut self) -> Result<bool, LoopbackError> {
        let mut tx = Vec::new();
        let sent = self.client.request_keyframe(&mut tx)?;
        self.deliver(tx, Outputs::default())?;
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Codec;

    /// NAL units of an Annex B access unit, whatever the start code length.
    fn nal_units(au: &[u8]) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut i = 0;
        let mut start = None;
        while i + 3 <= au.len() {
            if au[i..i + 3] == [0, 0, 1] {
                if let Some(s) = start {
                    let mut end = i;
                    while end > s && au[end - 1] == 0 {
                        end -= 1;
                    }
                    out.push(au[s..end].to_vec());
                }
                i += 3;
                start = Some(i);
            } else {
                i += 1;
            }
        }
        if let Some(s) = start {
            out.push(au[s..].to_vec());
        }
        out
    }

    fn annex_b(nalus: &[&[u8]]) -> Vec<u8> {
        nalus.iter().flat_map(|n| [&[0u8, 0, 0, 1][..], n].concat()).collect()
    }

    /// What the endpoint writes is what a viewer's WebRTC stack depacketizes: an IDR access
    /// unit larger than a packet (FU-A) with its SPS and PPS, P frames, Opus packets.
    #[test]
    fn a_publisher_on_a_new_network_restarts_ice_on_the_same_session() {
        let sps: &[u8] = &[0x67, 0x42, 0xe0, 0x1f, 0x8c, 0x8d, 0x40, 0x50, 0x1e, 0xd0];
        let pps: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
        let idr: Vec<u8> = [&[0x65u8, 0x88][..], &[3u8; 3000][..]].concat();
        let spec = SessionSpec {
            grace: Some(Duration::from_secs(15)),
            ..SessionSpec::receiver()
        };
        let mut link = Loopback::connect_with(&spec, None).unwrap();
        let send = |link: &mut Loopback, n: u32| {
            link.send_au(3000 * n, &[sps, pps, &idr]).unwrap();
            link.advance(Duration::from_millis(33)).unwrap();
        };
        for n in 0..5 {
            send(&mut link, n);
        }
        let before = link.frames.len();
        assert!(before >= 4, "{before} frames before the move");
        // The network goes: nothing either way for 6 s (past the 4 s idle timeout).
        link.unreachable = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 50000)));
        for n in 5..10 {
            send(&mut link, n);
        }
        link.advance(Duration::from_secs(6)).unwrap();
        assert!(!link.closed, "the session waits for its restart");
        assert_eq!(link.frames.len(), before, "nothing came through the dead network");
        // Back on another address: an ICE restart on the same session, and frames flow again.
        let id = link.id;
        link.restart_ice(SocketAddr::from((Ipv4Addr::LOCALHOST, 50010))).unwrap();
        for n in 200..210 {
            send(&mut link, n);
        }
        assert_eq!(link.id, id);
        assert!(!link.closed);
        assert!(
            link.frames.len() >= before + 8,
            "{} frames after the restart ({before} before)",
            link.frames.len()
        );
        // A restart of a session that is gone is refused as such.
        let mut out = Outputs::default();
        assert!(matches!(
            link.ep.restart(link.now, 999, "v=0", &mut out),
            Err(OfferError::NoSession)
        ));
    }

    #[test]
    fn without_a_grace_a_silent_publisher_ends() {
        let mut link = Loopback::connect(None).unwrap();
        link.unreachable = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 50000)));
        link.advance(Duration::from_secs(6)).unwrap();
        assert!(link.closed);
    }

    #[test]
    fn a_sending_session_delivers_h264_and_opus() {
        let spec = SessionSpec::sender(Some(Codec::H264), Some(Codec::Opus));
        let mut link = ViewerLink::connect(&spec, true, true).unwrap();
        let sps: &[u8] = &[0x67, 0x42, 0xe0, 0x1f, 0x8c, 0x8d, 0x40, 0x50, 0x1e, 0xd0];
        let pps: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
        let idr: Vec<u8> = [&[0x65u8, 0x88][..], &(0..5000).map(|i| (i % 251) as u8 | 1).collect::<Vec<u8>>()].concat();
        let p_frame: Vec<u8> = [&[0x41u8, 0x9a][..], &[7u8; 700][..]].concat();
        let opus: Vec<u8> = (0..120).map(|i| i as u8).collect();
        for n in 0..30u64 {
            let au = if n % 10 == 0 {
                annex_b(&[sps, pps, &idr])
            } else {
                annex_b(&[&p_frame])
            };
            link.write(Track::Video, 3000 * n, &au).unwrap();
            link.write(Track::Audio, 960 * n, &opus).unwrap();
            link.advance(Duration::from_millis(20)).unwrap();
        }
        let video: Vec<_> = link.client.frames.iter().filter(|f| f.track == Track::Video).collect();
        let audio: Vec<_> = link.client.frames.iter().filter(|f| f.track == Track::Audio).collect();
        assert!(video.len() >= 29, "{} video frames", video.len());
        assert!(audio.len() >= 29, "{} audio frames", audio.len());
        let first = video[0];
        assert_eq!(first.codec, Codec::H264);
        assert_eq!(nal_units(&first.data), vec![sps.to_vec(), pps.to_vec(), idr.clone()]);
        assert_eq!(nal_units(&video[1].data), vec![p_frame.clone()]);
        assert_eq!(video[1].rtp_time - first.rtp_time, 3000, "timestamps keep their spacing");
        assert!(video.iter().all(|f| f.contiguous));
        assert!(audio.iter().all(|f| f.codec == Codec::Opus && f.data == opus));
        assert_eq!(audio[1].rtp_time - audio[0].rtp_time, 960);
        // Egress statistics come once a second.
        link.advance(Duration::from_millis(1100)).unwrap();
        let c = link.ep.counters();
        assert!(c.rtp_packets_out >= 60, "{c:?}");
        // A viewer's PLI reaches the shell as a keyframe request for this session.
        assert!(link.request_keyframe().unwrap());
        link.advance(Duration::from_millis(100)).unwrap();
        assert_eq!(link.keyframe_requests, 1);
    }

    /// A viewer that loses a fifth of the video packets gets every frame whole: its NACKs are
    /// answered from the session's send buffer over RTX, at this loss rate too (str0m's
    /// default stops resending past 15 % of the bytes).
    #[test]
    fn a_lossy_viewer_is_repaired_by_retransmission() {
        let spec = SessionSpec::sender(Some(Codec::H264), None);
        let mut link = ViewerLink::connect(&spec, true, false).unwrap();
        let sps: &[u8] = &[0x67, 0x42, 0xe0, 0x1f, 0x8c, 0x8d, 0x40, 0x50, 0x1e, 0xd0];
        let pps: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
        let idr: Vec<u8> = [&[0x65u8, 0x88][..], &[3u8; 6000][..]].concat();
        let p_frame: Vec<u8> = [&[0x41u8, 0x9a][..], &[7u8; 3000][..]].concat();
        // Every fifth packet of the H.264 payload type is lost the first time it is sent (the
        // retransmissions travel on the RTX payload type).
        let h264_pt = {
            let mut seen = std::collections::HashSet::new();
            move |v: &RtpView| v.pt == 108 && v.seq.is_multiple_of(5) && seen.insert(v.seq)
        };
        link.lose_to_peer = Box::new(h264_pt);
        // One frame more than checked: the last frame may leave the depacketizer with the next.
        for n in 0..51u64 {
            let au = if n % 25 == 0 {
                annex_b(&[sps, pps, &idr])
            } else {
                annex_b(&[&p_frame])
            };
            link.write(Track::Video, 3000 * n, &au).unwrap();
            link.advance(Duration::from_millis(33)).unwrap();
        }
        link.advance(Duration::from_millis(500)).unwrap();
        let video: Vec<_> = link.client.frames.iter().filter(|f| f.track == Track::Video).collect();
        assert!(link.lost_to_peer >= 20, "only {} packets lost", link.lost_to_peer);
        let times: Vec<u64> = video.iter().map(|f| f.rtp_time / 3000).take(50).collect();
        assert_eq!(times, (0..50).collect::<Vec<u64>>(), "frames whole after retransmission");
        assert!(video.iter().all(|f| f.contiguous));
        assert_eq!(nal_units(&video[1].data), vec![p_frame.clone()]);
    }

    /// A session the endpoint offers (a room subscriber) carries feeds that come and go by
    /// renegotiation: frames of each reach the viewer, a removed feed takes no more writes.
    #[test]
    fn feeds_come_and_go_by_renegotiation() {
        let feed = |stream: &str, video| FeedSpec {
            stream: stream.into(),
            video: Some(video),
            audio: Some(Codec::Opus),
        };
        let (mut link, ids) = ViewerLink::offered(&[feed("room/ann", Codec::H264)]).unwrap();
        let ann = ids[0];
        let sps: &[u8] = &[0x67, 0x42, 0xe0, 0x1f, 0x8c, 0x8d, 0x40, 0x50, 0x1e, 0xd0];
        let pps: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
        let idr: Vec<u8> = [&[0x65u8, 0x88][..], &[3u8; 2000][..]].concat();
        let vp8: Vec<u8> = [
            &[0x50u8, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00][..],
            &[0x33; 900][..],
        ]
        .concat();
        for n in 0..3u64 {
            link.write_feed(ann, Track::Video, 3000 * n, &annex_b(&[sps, pps, &idr])).unwrap();
            link.write_feed(ann, Track::Audio, 960 * n, &[1, 2, 3]).unwrap();
            link.advance(Duration::from_millis(33)).unwrap();
        }
        // A second participant joins: its feed comes with a new offer.
        let mut out = Outputs::default();
        let (bob, offer) = link.ep.add_feed(link.id, &feed("room/bob", Codec::Vp8), &mut out).unwrap();
        assert_eq!(offer.matches("m=video").count(), 2, "{offer}");
        let msids: Vec<&str> = offer.lines().filter(|l| l.starts_with("a=msid:")).collect();
        assert!(
            msids.iter().any(|l| l.starts_with("a=msid:room.bob room.bob-video")),
            "the peer sees the feed's stream id: {msids:?}"
        );
        assert_eq!(
            link.ep.add_feed(link.id, &feed("room/eve", Codec::Vp8), &mut out).unwrap_err(),
            FeedError::OfferPending
        );
        link.renegotiate(&offer).unwrap();
        for n in 3..6u64 {
            link.write_feed(ann, Track::Video, 3000 * n, &annex_b(&[sps, pps, &idr])).unwrap();
            link.write_feed(bob, Track::Video, 3000 * n, &vp8).unwrap();
            link.advance(Duration::from_millis(33)).unwrap();
        }
        link.advance(Duration::from_millis(200)).unwrap();
        let count = |c: Codec| link.client.frames.iter().filter(|f| f.codec == c).count();
        assert!(count(Codec::H264) >= 5, "{} H.264 frames", count(Codec::H264));
        assert!(count(Codec::Vp8) >= 2, "{} VP8 frames", count(Codec::Vp8));
        assert!(count(Codec::Opus) >= 2);
        // The first one leaves: its m-lines go inactive, its writes are refused.
        let offer = link.ep.remove_feed(link.id, ann, &mut out).unwrap();
        link.renegotiate(&offer).unwrap();
        assert!(matches!(
            link.write_feed(ann, Track::Video, 3000 * 7, &annex_b(&[sps, pps, &idr])),
            Err(LoopbackError::Write(WriteError::NotSending(Track::Video)))
        ));
        link.write_feed(bob, Track::Video, 3000 * 7, &vp8).unwrap();
        assert_eq!(link.ep.remove_feed(link.id, ann, &mut out).unwrap_err(), FeedError::NoFeed);
        assert_eq!(
            link.ep.accept_answer(link.id, "v=0", &mut out).unwrap_err(),
            FeedError::NoOfferPending
        );
    }

    #[test]
    fn a_sending_session_delivers_vp8() {
        let spec = SessionSpec::sender(Some(Codec::Vp8), None);
        let mut link = ViewerLink::connect(&spec, true, false).unwrap();
        // VP8 keyframe: frame tag (key, show), start code, 320x240.
        let key: Vec<u8> = [
            &[0x50u8, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00][..],
            &[0x33; 3000][..],
        ]
        .concat();
        for n in 0..5u64 {
            link.write(Track::Video, 3000 * n, &key).unwrap();
            link.advance(Duration::from_millis(33)).unwrap();
        }
        let f = &link.client.frames;
        assert!(f.len() >= 4, "{}", f.len());
        assert!(f.iter().all(|f| f.codec == Codec::Vp8 && f.data == key));
        assert_eq!(
            link.write(Track::Audio, 0, &[1, 2, 3]).unwrap_err().to_string(),
            "the session sends no Audio track"
        );
    }

    #[test]
    fn a_viewer_that_cannot_decode_the_stream_is_refused() {
        // The stream is VP9; the viewer offers H.264 and VP8 only.
        let spec = SessionSpec::sender(Some(Codec::Vp9), Some(Codec::Opus));
        match ViewerLink::connect(&spec, true, true) {
            Err(LoopbackError::Offer(OfferError::NoCodec(m))) => {
                assert_eq!(m, "video: the stream is VP9, and the offer cannot receive it")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted"),
        }
        // A receive-only session is not written to, and nothing is written before connecting.
        let mut ep = Endpoint::new(EndpointConfig {
            candidates: vec![SERVER],
            ..EndpointConfig::default()
        });
        let now = Instant::now();
        let mut out = Outputs::default();
        let (_, offer) = WhepClient::new(now, SocketAddr::from((Ipv4Addr::LOCALHOST, 5)), true, true);
        let a = ep.accept_offer(now, &offer, &spec_h264(), &mut out).unwrap();
        assert_eq!(
            ep.write(a.id, Track::Video, now, 0, &[0, 0, 0, 1, 0x65], &mut out),
            Err(WriteError::NotConnected)
        );
        assert_eq!(ep.write(99, Track::Video, now, 0, &[1], &mut out), Err(WriteError::NoSession));
        let (_, publisher_offer) = WhipClient::new(now, SocketAddr::from((Ipv4Addr::LOCALHOST, 6)), true, true, None);
        let p = ep.accept_offer(now, &publisher_offer, &SessionSpec::receiver(), &mut out).unwrap();
        assert_eq!(
            ep.write(p.id, Track::Video, now, 0, &[1], &mut out),
            Err(WriteError::NotSending(Track::Video))
        );
        // A viewer's offer to a publishing session: nothing to receive.
        match ep.accept_offer(now, &offer, &SessionSpec::receiver(), &mut out) {
            Err(OfferError::NoCodec(m)) => assert_eq!(m, "the offer has no audio or video line to receive"),
            other => panic!("{:?}", other.map(|a| a.negotiated)),
        }
    }

    fn spec_h264() -> SessionSpec {
        SessionSpec::sender(Some(Codec::H264), Some(Codec::Opus))
    }
}
