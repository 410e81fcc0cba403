//! The RTMP listener: a thin shell moving bytes between TCP sockets and the sans-IO session.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use egress::rtmp_play::RtmpPlayViewer;
use ingest::rtmp::{IngestOutput, RtmpIngest};
use media::{Codec, CodecSet, Publisher, StreamKey, Subscriber};
use rtmp::chunk::ChunkLimits;
use rtmp::{ServerSession, SessionConfig, SessionError, SessionEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn, Instrument};

use crate::admission::Pending;
use crate::io::{accept_until_shutdown, write_all_vectored};
use crate::publish::{PublishRefusal, PublishRequest};
use crate::state::SharedState;
use crate::viewer_loop::{drive_viewer, End, ViewerSettings, ViewerSink};

pub async fn serve(listener: TcpListener, state: SharedState) {
    accept_until_shutdown(&listener, state.shutdown.clone(), "RTMP", |sock, peer| {
        state.counters.rtmp.connections.fetch_add(1, Ordering::Relaxed);
        // Until handshake and `connect` are done the connection counts against its address's
        // pending limit; beyond the limits it is closed at once.
        let pending = match state.rtmp_admission.admit(peer.ip(), std::time::Instant::now()) {
            Ok(p) => p,
            Err(refusal) => {
                debug!(%peer, "RTMP connection refused: {refusal}");
                drop(sock);
                return;
            }
        };
        let st = state.clone();
        let span = tracing::info_span!("rtmp", %peer);
        tokio::spawn(
            async move {
                match connection(sock, peer, pending, st.clone()).await {
                    Ok(()) => debug!("closed"),
                    Err(e) => {
                        st.counters.rtmp.errors.fetch_add(1, Ordering::Relaxed);
                        warn!("closed: {e}");
                    }
                }
            }
            .instrument(span),
        );
    })
    .await;
}

fn handshake_seed() -> (u32, [u8; 8]) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let seed = (now.as_nanos() as u64).rotate_left(17) ^ u64::from(std::process::id());
    (now.as_secs() as u32, seed.to_be_bytes())
}

/// Why an RTMP connection ended badly (logged and counted as an error).
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] SessionError),
    #[error("{0}")]
    Refused(#[from] PublishRefusal),
    /// Anything else, said in a sentence.
    #[error("{0}")]
    Other(String),
}

type Result<T, E = ConnError> = std::result::Result<T, E>;

/// Ends a connection with a [`ConnError::Other`] made from a format string.
macro_rules! fail {
    ($($arg:tt)*) => {
        ConnError::Other(format!($($arg)*))
    };
}

struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    session: ServerSession,
    buf: Vec<u8>,
    state: SharedState,
    idle: Duration,
}

impl Conn {
    async fn flush(&mut self) -> Result<()> {
        let out = self.session.take_output();
        if !out.is_empty() {
            self.wr.write_all(&out).await?;
            self.state.counters.rtmp.add_out(out.len());
        }
        Ok(())
    }

    /// Reads once (bounded by the idle timeout) and runs the session; Ok(None) on EOF.
    async fn read_events(&mut self) -> Result<Option<Vec<SessionEvent>>> {
        let n = tokio::time::timeout(self.idle, self.rd.read(&mut self.buf))
            .await
            .map_err(|_| fail!("no data for {} s", self.idle.as_secs()))??;
        if n == 0 {
            return Ok(None);
        }
        self.state.counters.rtmp.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        let events = self.session.handle_input(&self.buf[..n]);
        // Whatever the session wrote (answers, or nothing) goes out before an error closes us.
        self.flush().await?;
        Ok(Some(events?))
    }

    async fn refuse(&mut self, code: &str, why: &str) -> Result<()> {
        self.session.reject(code, why);
        self.flush().await?;
        let _ = self.wr.shutdown().await;
        Ok(())
    }
}

async fn connection(sock: TcpStream, peer: SocketAddr, pending: Pending, state: SharedState) -> Result<()> {
    sock.set_nodelay(true)?;
    let (rd, wr) = sock.into_split();
    let (epoch, random) = handshake_seed();
    let cfg = SessionConfig {
        limits: ChunkLimits {
            max_message_size: state.config.rtmp.max_message_size,
            ..Default::default()
        },
        out_chunk_size: state.config.rtmp.chunk_size,
        ..Default::default()
    };
    let idle = Duration::from_secs(state.config.rtmp.idle_timeout_secs);
    let mut conn = Conn {
        rd,
        wr,
        session: ServerSession::new(cfg, epoch, random),
        buf: vec![0; 64 * 1024],
        state: state.clone(),
        idle,
    };
    let mut shutdown = state.shutdown.clone();
    let connect_timeout = Duration::from_secs(state.config.rtmp.connect_timeout_secs);
    let connect_deadline = tokio::time::Instant::now() + connect_timeout;
    let mut pending = Some(pending);
    loop {
        let events = tokio::select! {
            r = conn.read_events() => match r? {
                Some(ev) => ev,
                None => return Ok(()),
            },
            _ = tokio::time::sleep_until(connect_deadline), if pending.is_some() => {
                state.counters.rtmp_connect_timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(fail!("handshake and connect not done within {} s", connect_timeout.as_secs()));
            }
            _ = shutdown.changed() => return Ok(()),
        };
        let mut events = events.into_iter();
        while let Some(ev) = events.next() {
            match ev {
                SessionEvent::Connected { app } => {
                    pending = None;
                    debug!(%app, "connected");
                }
                SessionEvent::PublishRequest { app, stream, .. } => {
                    drop(pending.take());
                    let key = match StreamKey::new(&app, &stream) {
                        Ok(k) => k,
                        Err(e) => {
                            warn!(%app, %stream, "publish refused: {e}");
                            conn.refuse("NetStream.Publish.BadName", &format!("bad stream name: {e}")).await?;
                            return Err(fail!("bad stream name {app:?}/{stream:?}: {e}"));
                        }
                    };
                    let request = PublishRequest {
                        key: key.clone(),
                        protocol: "rtmp",
                        remote: peer.to_string(),
                        bearer: None,
                    };
                    let publisher = match state.publishing.authorize(request).and_then(|g| state.publishing.publish(g)) {
                        Ok(p) => p,
                        Err(e @ PublishRefusal::Unauthorized(_)) => {
                            conn.refuse("NetStream.Publish.Unauthorized", &e.to_string()).await?;
                            return Err(fail!("{e}"));
                        }
                        Err(e @ PublishRefusal::KeyTaken(_)) => {
                            conn.refuse("NetStream.Publish.BadName", &e.to_string()).await?;
                            return Err(fail!("{e}"));
                        }
                        Err(e) => return Err(e.into()),
                    };
                    conn.session.accept_publish();
                    conn.flush().await?;
                    info!(%key, "publishing");
                    let rest: Vec<SessionEvent> = events.collect();
                    let r = publish_loop(&mut conn, publisher, rest, &mut shutdown).await;
                    info!(%key, "publisher left");
                    return r;
                }
                SessionEvent::PlayRequest { app, stream, stream_id } => {
                    drop(pending.take());
                    let key = match StreamKey::new(&app, &stream) {
                        Ok(k) => k,
                        Err(e) => {
                            conn.refuse("NetStream.Play.BadName", &format!("bad stream name: {e}")).await?;
                            return Err(fail!("bad stream name {app:?}/{stream:?}: {e}"));
                        }
                    };
                    let sub = match state.hub.subscribe(&key, "rtmp") {
                        Ok(s) => s,
                        Err(e) => {
                            conn.refuse("NetStream.Play.StreamNotFound", &e.to_string()).await?;
                            info!(%key, "play refused: not live");
                            return Ok(());
                        }
                    };
                    conn.session.accept_play();
                    conn.flush().await?;
                    info!(%key, "playing");
                    let r = play_loop(&mut conn, sub, stream_id, &mut shutdown).await;
                    info!(%key, "player left");
                    return r;
                }
                _ => {}
            }
        }
    }
}

async fn publish_loop(
    conn: &mut Conn,
    publisher: Publisher,
    first: Vec<SessionEvent>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let mut ingest = RtmpIngest::new();
    // AAC -> Opus while a WebRTC viewer takes Opus.
    let mut opus = ingest::opus::OpusRendition::new();
    let mut opus_out = Vec::new();
    let mut opus_error_logged = false;
    let mut pending = first;
    loop {
        for ev in pending.drain(..) {
            let out = match ev {
                // onMetaData only announces; the sequence headers and frames decide what is carried.
                SessionEvent::Metadata(meta) => {
                    debug!(?meta, "onMetaData");
                    Ok(None)
                }
                SessionEvent::Video { timestamp, payload } => ingest.video(timestamp, &payload),
                SessionEvent::Audio { timestamp, payload } => ingest.audio(timestamp, &payload),
                SessionEvent::StreamClosed => return Ok(()),
                _ => Ok(None),
            };
            match out {
                Ok(Some(IngestOutput::VideoConfig(c))) => {
                    let (w, h) = (c.info.width, c.info.height);
                    if publisher.set_video_config(c) {
                        info!(width = w, height = h, "video configuration");
                    }
                }
                Ok(Some(IngestOutput::AudioConfig(c))) => {
                    let info = c.info;
                    opus.set_config(&c);
                    if info.channels > 0 {
                        publisher.set_supply(CodecSet::FLV.union(CodecSet::of(&[Codec::Opus])));
                    }
                    if publisher.set_audio_config(c) {
                        info!(rate = info.sample_rate, channels = info.channels, "audio configuration");
                    }
                }
                Ok(Some(IngestOutput::Frame(f))) => {
                    let now = std::time::Instant::now();
                    let was_running = opus.running();
                    opus.push(&f, publisher.demand(), &mut opus_out);
                    if was_running && !opus.running() {
                        publisher.drop_cached(Codec::Opus);
                    }
                    publisher.push(f, now);
                    for o in opus_out.drain(..) {
                        publisher.push(o, now);
                    }
                    if let (Some(e), false) = (opus.error(), opus_error_logged) {
                        warn!("AAC -> Opus for WebRTC viewers stopped: {e}");
                        opus_error_logged = true;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    conn.refuse("NetStream.Publish.Rejected", &e.to_string()).await?;
                    return Err(fail!("publish rejected: {e}"));
                }
            }
        }
        tokio::select! {
            r = conn.read_events() => match r? {
                Some(ev) => pending = ev,
                None => return Ok(()),
            },
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// RTMP play's side of the viewer loop: batches go out as they are (the frames are shared RTMP
/// chunks); input runs through the session (acknowledgements, closeStream).
struct RtmpPlaySink<'a> {
    conn: &'a mut Conn,
}

impl ViewerSink for RtmpPlaySink<'_> {
    async fn write(&mut self, batch: &mut Vec<Bytes>) -> std::io::Result<()> {
        write_all_vectored(&mut self.conn.wr, batch).await.map(|_| ())
    }

    async fn read(&mut self) -> std::io::Result<usize> {
        self.conn.rd.read(&mut self.conn.buf).await
    }

    async fn on_input(&mut self, n: usize) -> Result<(), String> {
        let c = &mut *self.conn;
        c.state.counters.rtmp.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        let events = c.session.handle_input(&c.buf[..n]);
        c.flush().await.map_err(|e| format!("write: {e}"))?;
        match events {
            Err(e) => Err(e.to_string()),
            Ok(evs) if evs.iter().any(|e| matches!(e, SessionEvent::StreamClosed)) => Err(CLOSED_BY_PLAYER.to_owned()),
            Ok(_) => Ok(()),
        }
    }

    async fn end(&mut self, why: End) {
        if why == End::StreamEnded {
            self.conn.session.notify("NetStream.Play.UnpublishNotify", "stream ended");
            let _ = self.conn.flush().await;
            let _ = self.conn.wr.shutdown().await;
        }
    }
}

/// The player sent closeStream: a normal end, not an error.
const CLOSED_BY_PLAYER: &str = "player closed the stream";

async fn play_loop(conn: &mut Conn, mut sub: Subscriber, stream_id: u32, shutdown: &mut tokio::sync::watch::Receiver<bool>) -> Result<()> {
    let mut viewer = RtmpPlayViewer::new(stream_id, conn.session.out_chunk_size());
    let settings = ViewerSettings {
        batch_window: Duration::from_millis(conn.state.config.egress.write_coalesce_ms),
        stall: conn.idle,
    };
    let state = conn.state.clone();
    let mut sink = RtmpPlaySink { conn };
    match drive_viewer(&mut sub, &mut viewer, &mut sink, settings, &state.counters.rtmp, shutdown.clone()).await {
        Ok(why) => {
            debug!(why, "player left");
            Ok(())
        }
        Err(why) if why == CLOSED_BY_PLAYER => Ok(()),
        Err(why) => Err(fail!("player: {why}")),
    }
}
