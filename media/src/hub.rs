//! The stream hub: where every ingest meets every egress.
//!
//! * A publisher claims a [`StreamKey`]; a second publisher for a live key is refused.
//! * A publisher still connecting (a WebRTC offer before ICE/DTLS) holds a [`Reservation`]: the
//!   key shows as connecting, is not live, and does not stop anybody else. Whoever claims the key
//!   first with [`Hub::publish`] or [`Reservation::claim`] wins; a dropped reservation is gone.
//! * Each subscriber (viewer) owns a bounded queue (frames and bytes). When a publisher's frame
//!   would overflow it, the queued frames are dropped, the viewer skips to the next keyframe and
//!   its drop counter rises. The publisher never waits for a viewer.
//! * A new subscriber starts at the latest keyframe: it first receives the current codec
//!   configurations, then the GOP cache (frames since the last keyframe), then live frames.
//! * Codec configurations reach subscribers only when their bytes change.
//! * Keyframe requests travel upstream ([`Subscriber::request_keyframe`] ->
//!   [`Publisher::keyframe_requested`]).
//! * A subscriber takes the codecs it asked for ([`Hub::subscribe_to`]; FLV, RTMP and HLS
//!   viewers take H.264 and AAC). A stream may carry frames of several codecs per track: a
//!   WebRTC publisher's own Opus (VP8, VP9) next to the AAC (H.264) made from it. What the
//!   subscribers ask for together is [`Publisher::demand`], so a publisher produces a codec only
//!   while someone takes it. Configurations are those of the H.264/AAC renditions; frames of
//!   other codecs describe themselves (RTP payloads).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use crate::frame::{AudioConfig, Codec, CodecSet, MediaFrame, TrackKind, VideoConfig};
use crate::gop::{GopLimits, Gops};
use crate::key::StreamKey;

/// Limits for the hub; defaults suit a few Mb/s per stream.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Frames a viewer may have queued before it skips to the next keyframe.
    pub queue_max_frames: usize,
    /// Payload bytes a viewer may have queued before it skips to the next keyframe.
    pub queue_max_bytes: usize,
    /// Largest GOP kept for new viewers; a longer GOP is not cached (viewers wait for the next
    /// keyframe).
    pub gop_max_bytes: usize,
    /// Audio frames kept for new viewers of an audio-only stream.
    pub audio_only_cache_frames: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            queue_max_frames: 1024,
            queue_max_bytes: 8 << 20,
            gop_max_bytes: 8 << 20,
            audio_only_cache_frames: 48,
        }
    }
}

/// Hub errors, each specific to one request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HubError {
    /// Another publisher holds the key.
    #[error("stream {0} is already being published")]
    AlreadyPublishing(String),
    /// Nobody publishes the key.
    #[error("stream {0} is not live")]
    NotFound(String),
}

/// What a subscriber receives, in order.
#[derive(Debug, Clone)]
pub enum HubEvent {
    /// New or changed video configuration; precedes the frames that use it.
    VideoConfig(Arc<VideoConfig>),
    /// New or changed audio configuration; precedes the frames that use it.
    AudioConfig(Arc<AudioConfig>),
    /// A media frame.
    Frame(Arc<MediaFrame>),
}

/// Who publishes a stream (for the API and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherInfo {
    /// "rtmp", "webrtc", ...
    pub protocol: &'static str,
    /// Remote address as text.
    pub remote: String,
}

/// Which tracks a stream carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tracks {
    /// Video present.
    pub video: bool,
    /// Audio present.
    pub audio: bool,
}

/// A snapshot of a live stream's statistics.
#[derive(Debug, Clone)]
pub struct StreamStats {
    /// The key.
    pub key: StreamKey,
    /// Who publishes.
    pub publisher: PublisherInfo,
    /// Wall-clock start.
    pub started: SystemTime,
    /// Current video configuration.
    pub video: Option<Arc<VideoConfig>>,
    /// Current audio configuration.
    pub audio: Option<Arc<AudioConfig>>,
    /// Payload bytes received from the publisher.
    pub bytes_in: u64,
    /// Video frames received.
    pub video_frames: u64,
    /// Audio frames received.
    pub audio_frames: u64,
    /// Incoming bitrate over the last few seconds, bits per second.
    pub bitrate_in: u64,
    /// Viewers per protocol label.
    pub viewers: Vec<(&'static str, usize)>,
    /// Frames dropped for slow viewers, over the stream's life (departed viewers included).
    pub dropped_frames: u64,
    /// Times any viewer skipped to the next keyframe because its queue was full.
    pub overflows: u64,
    /// Timestamps corrected because they went backwards.
    pub timestamp_fixes: u64,
    /// Video frames presented before a frame decoded earlier (pts going back in decode order):
    /// the stream has B-frames, which browsers' WebRTC H.264 decoders cannot reorder. A constant
    /// composition offset (some encoders send one without B-frames) does not count.
    pub reordered_video_frames: u64,
    /// Keyframe requests received from egress.
    pub keyframe_requests: u64,
    /// The codecs the publisher can produce when asked ([`Publisher::set_supply`]).
    pub supply: CodecSet,
    /// A simulcast publisher's layers (RTP stream ids, smallest picture first), see
    /// [`Publisher::set_layers`]; empty for others.
    pub layers: Vec<String>,
    /// The fullest viewer queue right now: (frames, payload bytes).
    pub max_viewer_queue: (usize, usize),
}

/// Totals over the hub's life, for `/metrics`.
#[derive(Debug, Default)]
pub struct HubTotals {
    /// Streams published.
    pub streams_published: AtomicU64,
    /// Publishers refused because the key was taken.
    pub publish_refused: AtomicU64,
    /// Subscribers served.
    pub subscribers_served: AtomicU64,
    /// Frames dropped for slow viewers, over all streams.
    pub dropped_frames: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a hub lock cannot leave the data half-written in a way that matters
    // more than stopping every stream would; keep serving.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The registry of live streams. Cheap to clone.
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Default)]
struct HubInner {
    config: HubConfig,
    streams: Mutex<HashMap<StreamKey, Arc<Stream>>>,
    /// Reservations by id.
    reservations: Mutex<HashMap<u64, Connecting>>,
    next_id: AtomicU64,
    totals: HubTotals,
}

/// A key some publisher is connecting to (see [`Reservation`]).
#[derive(Debug, Clone)]
pub struct Connecting {
    /// The key.
    pub key: StreamKey,
    /// Who is connecting.
    pub publisher: PublisherInfo,
    /// When the reservation was made.
    pub since: SystemTime,
}

struct Stream {
    id: u64,
    key: StreamKey,
    publisher: PublisherInfo,
    started: SystemTime,
    state: Mutex<StreamState>,
    keyframe_notify: Notify,
    keyframe_requests: AtomicU64,
    /// The union of the subscribers' codec sets ([`CodecSet::bits`]).
    demand: AtomicU8,
    /// What the publisher can produce ([`CodecSet::bits`]), see [`Publisher::set_supply`].
    supply: AtomicU8,
    layers: Mutex<Vec<String>>,
    hub: Arc<HubInner>,
}

#[derive(Default)]
struct StreamState {
    video: Option<Arc<VideoConfig>>,
    audio: Option<Arc<AudioConfig>>,
    gop: Gops,
    subscribers: Vec<Arc<SubShared>>,
    next_sub: u64,
    ended: bool,
    /// Per codec (each rendition has its own timeline).
    last_dts: [Option<i64>; Codec::ALL.len()],
    last_video_push: Option<Instant>,
    bytes_in: u64,
    frames_in: [u64; 2],
    rate_window: Option<(Instant, u64)>,
    bitrate_in: u64,
    dropped: u64,
    overflows: u64,
    timestamp_fixes: u64,
    reordered_video_frames: u64,
    /// When each codec's last frame came (a rendition that stopped has an old time).
    last_push: [Option<Instant>; Codec::ALL.len()],
    /// Per codec: the H.264 rendition and the VP8 it is made from are pushed interleaved.
    last_video_pts: [Option<i64>; Codec::ALL.len()],
}

struct SubShared {
    id: u64,
    protocol: &'static str,
    codecs: CodecSet,
    queue: Mutex<SubQueue>,
    notify: Notify,
    dropped: AtomicU64,
}

#[derive(Default)]
struct SubQueue {
    events: VecDeque<HubEvent>,
    frames: usize,
    bytes: usize,
    wait_keyframe: bool,
    ended: bool,
    /// While waiting for a keyframe: the latest audio, so that audio stamped from the keyframe
    /// on that arrived before it still starts with it (a keyframe is paced out, or repaired by
    /// retransmission, after audio captured with it).
    held_audio: VecDeque<Arc<MediaFrame>>,
    /// After the wait: audio stamped before this (ms) is left out (it arrives after the
    /// keyframe but belongs before it).
    audio_from: Option<i64>,
}

/// Audio frames held per subscriber while it waits for a keyframe (about a second).
const HELD_AUDIO: usize = 64;

/// Audio frames wake viewers at once when no video frame came for this long.
const AUDIO_WAKE_AFTER: Duration = Duration::from_millis(100);

fn track_index(c: Codec) -> usize {
    match c.track() {
        TrackKind::Video => 0,
        TrackKind::Audio => 1,
    }
}

impl Hub {
    /// A hub with the given limits.
    pub fn new(config: HubConfig) -> Self {
        Self {
            inner: Arc::new(HubInner {
                config,
                ..Default::default()
            }),
        }
    }

    /// Claims `key` for a publisher. Refused while another publisher holds it.
    pub fn publish(&self, key: StreamKey, info: PublisherInfo) -> Result<Publisher, HubError> {
        let mut streams = lock(&self.inner.streams);
        if streams.contains_key(&key) {
            self.inner.totals.publish_refused.fetch_add(1, Ordering::Relaxed);
            return Err(HubError::AlreadyPublishing(key.to_string()));
        }
        let stream = Arc::new(Stream {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            key: key.clone(),
            publisher: info,
            started: SystemTime::now(),
            state: Mutex::default(),
            keyframe_notify: Notify::new(),
            keyframe_requests: AtomicU64::new(0),
            demand: AtomicU8::new(0),
            supply: AtomicU8::new(CodecSet::FLV.bits()),
            layers: Mutex::default(),
            hub: self.inner.clone(),
        });
        streams.insert(key, stream.clone());
        self.inner.totals.streams_published.fetch_add(1, Ordering::Relaxed);
        Ok(Publisher { stream })
    }

    /// Reserves `key` for a publisher that is still connecting. Refused while the key is live;
    /// several reservations of one key may exist (the first to [`Reservation::claim`] wins).
    pub fn reserve(&self, key: StreamKey, info: PublisherInfo) -> Result<Reservation, HubError> {
        if self.is_live(&key) {
            self.inner.totals.publish_refused.fetch_add(1, Ordering::Relaxed);
            return Err(HubError::AlreadyPublishing(key.to_string()));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Connecting {
            key: key.clone(),
            publisher: info.clone(),
            since: SystemTime::now(),
        };
        lock(&self.inner.reservations).insert(id, entry);
        Ok(Reservation {
            hub: self.clone(),
            id,
            key,
            info,
        })
    }

    /// Keys reserved by connecting publishers and not live, one entry per key (the oldest
    /// reservation), sorted by key.
    pub fn connecting(&self) -> Vec<Connecting> {
        let mut all: Vec<Connecting> = lock(&self.inner.reservations).values().cloned().collect();
        all.sort_by(|a, b| a.key.cmp(&b.key).then(a.since.cmp(&b.since)));
        all.dedup_by(|later, first| later.key == first.key);
        let streams = lock(&self.inner.streams);
        all.retain(|c| !streams.contains_key(&c.key));
        all
    }

    /// Subscribes to a live stream's H.264 and AAC (what FLV, RTMP and HLS carry); `protocol`
    /// labels the viewer in statistics.
    pub fn subscribe(&self, key: &StreamKey, protocol: &'static str) -> Result<Subscriber, HubError> {
        self.subscribe_to(key, protocol, CodecSet::FLV)
    }

    /// Subscribes to the frames of these codecs (configurations come for H.264 and AAC).
    pub fn subscribe_to(&self, key: &StreamKey, protocol: &'static str, codecs: CodecSet) -> Result<Subscriber, HubError> {
        let stream = lock(&self.inner.streams)
            .get(key)
            .cloned()
            .ok_or_else(|| HubError::NotFound(key.to_string()))?;
        self.inner.totals.subscribers_served.fetch_add(1, Ordering::Relaxed);
        Ok(stream.add_subscriber(protocol, codecs))
    }

    /// True while somebody publishes `key`.
    pub fn is_live(&self, key: &StreamKey) -> bool {
        lock(&self.inner.streams).contains_key(key)
    }

    /// Asks the publisher of `key` for a keyframe; false when the key is not live.
    pub fn request_keyframe(&self, key: &StreamKey) -> bool {
        let stream = lock(&self.inner.streams).get(key).cloned();
        stream.map(|s| s.request_keyframe()).is_some()
    }

    /// Statistics of every live stream, sorted by key.
    pub fn streams(&self) -> Vec<StreamStats> {
        let streams: Vec<Arc<Stream>> = lock(&self.inner.streams).values().cloned().collect();
        let mut out: Vec<StreamStats> = streams.iter().map(|s| s.stats()).collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Statistics of one stream.
    pub fn stream(&self, key: &StreamKey) -> Option<StreamStats> {
        let stream = lock(&self.inner.streams).get(key).cloned();
        stream.map(|s| s.stats())
    }

    /// One stream's input bitrate (bits/s, over the last window), without building its
    /// statistics: the WebRTC task reads it for every subscriber's bandwidth estimate.
    pub fn bitrate_in(&self, key: &StreamKey) -> Option<u64> {
        let stream = lock(&self.inner.streams).get(key).cloned()?;
        let bitrate = lock(&stream.state).bitrate_in;
        Some(bitrate)
    }

    /// Totals over the hub's life.
    pub fn totals(&self) -> &HubTotals {
        &self.inner.totals
    }
}

/// A codec whose last frame is this much older than the stream's newest is no longer made.
const RENDITION_STALE: Duration = Duration::from_secs(1);

impl StreamState {
    /// True when the cached GOP would start `codecs` badly, because a rendition stopped (nobody
    /// took it) and is made again now for this subscriber:
    /// * a video codec whose last frame is [`RENDITION_STALE`] older than the stream's newest
    ///   (its cache is old; relative times, so virtual time works);
    /// * an audio codec the publisher made before that is missing from the start of the cache
    ///   (video from a keyframe seconds ago, the restarted audio only from now).
    ///
    /// Opus does not count: its takers are WebRTC sessions, which start from the cached
    /// keyframe alone and take audio live (`egress::webrtc`), so an RTMP stream's cached
    /// keyframe still shows at once.
    fn stale_codec(&self, codecs: CodecSet) -> bool {
        let Some(newest) = self.last_push.iter().flatten().max() else {
            return false;
        };
        let old = |c: Codec| self.last_push[c.index()].is_some_and(|t| newest.duration_since(t) > RENDITION_STALE);
        if Codec::ALL
            .iter()
            .any(|c| c.track() == TrackKind::Video && codecs.contains(*c) && old(*c))
        {
            return true;
        }
        let mut frames = self.gop.frames_for(codecs);
        let Some(key) = frames.next().filter(|f| f.track == TrackKind::Video && f.keyframe) else {
            return false;
        };
        let key_ms = key.pts_ms();
        let mut video_end = key_ms;
        let mut audio_start = [None; Codec::ALL.len()];
        for f in frames {
            match f.track {
                TrackKind::Video => video_end = video_end.max(f.pts_ms()),
                TrackKind::Audio => {
                    audio_start[f.codec.index()].get_or_insert(f.pts_ms());
                }
            }
        }
        // A cache that barely started may not hold its first audio frame yet.
        if video_end - key_ms <= AUDIO_GAP_MS {
            return false;
        }
        Codec::ALL.iter().any(|c| {
            c.track() == TrackKind::Audio
                && *c != Codec::Opus
                && codecs.contains(*c)
                && self.last_push[c.index()].is_some()
                && audio_start[c.index()].is_none_or(|a| a > key_ms + AUDIO_GAP_MS)
        })
    }
}

/// Audio that starts more than this after the cached keyframe was restarted: not replayed
/// (an audio frame normally follows a keyframe within one AAC frame, 21 ms).
const AUDIO_GAP_MS: i64 = 60;

impl Stream {
    fn request_keyframe(&self) {
        self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        self.keyframe_notify.notify_one();
    }

    fn add_subscriber(self: &Arc<Self>, protocol: &'static str, codecs: CodecSet) -> Subscriber {
        let mut st = lock(&self.state);
        let id = st.next_sub;
        st.next_sub += 1;
        let mut q = SubQueue {
            ended: st.ended,
            ..Default::default()
        };
        if let Some(v) = st.video.as_ref().filter(|v| codecs.contains(v.codec())) {
            q.events.push_back(HubEvent::VideoConfig(v.clone()));
        }
        if let Some(a) = st.audio.as_ref().filter(|a| codecs.contains(a.codec())) {
            q.events.push_back(HubEvent::AudioConfig(a.clone()));
        }
        let mut replayed = false;
        // A rendition the publisher stopped making (nobody took it) and makes again now for
        // this subscriber: its cache is stale, or the other track's cache runs ahead of it
        // (video from a keyframe seconds ago, the restarted audio only from now). Start at a
        // fresh keyframe instead, and ask for one.
        let stale = st.stale_codec(codecs);
        if !stale {
            for f in st.gop.frames_for(codecs) {
                replayed = true;
                q.frames += 1;
                q.bytes += f.data.len();
                q.events.push_back(HubEvent::Frame(f.clone()));
            }
        }
        // Without a cached GOP, wait for the next keyframe so the first frame is decodable.
        q.wait_keyframe = !replayed;
        let shared = Arc::new(SubShared {
            id,
            protocol,
            codecs,
            queue: Mutex::new(q),
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
        });
        st.subscribers.push(shared.clone());
        self.update_demand(&st);
        drop(st);
        if stale {
            self.request_keyframe();
        }
        Subscriber {
            stream: self.clone(),
            shared,
        }
    }

    fn stats(&self) -> StreamStats {
        let st = lock(&self.state);
        let mut viewers: Vec<(&'static str, usize)> = Vec::new();
        for s in &st.subscribers {
            match viewers.iter_mut().find(|(p, _)| *p == s.protocol) {
                Some((_, n)) => *n += 1,
                None => viewers.push((s.protocol, 1)),
            }
        }
        viewers.sort();
        let live_drops: u64 = st.subscribers.iter().map(|s| s.dropped.load(Ordering::Relaxed)).sum();
        let mut max_viewer_queue = (0, 0);
        for s in &st.subscribers {
            let q = lock(&s.queue);
            max_viewer_queue = (max_viewer_queue.0.max(q.frames), max_viewer_queue.1.max(q.bytes));
        }
        StreamStats {
            key: self.key.clone(),
            publisher: self.publisher.clone(),
            started: self.started,
            video: st.video.clone(),
            audio: st.audio.clone(),
            bytes_in: st.bytes_in,
            video_frames: st.frames_in[0],
            audio_frames: st.frames_in[1],
            bitrate_in: st.bitrate_in,
            viewers,
            dropped_frames: st.dropped + live_drops,
            overflows: st.overflows,
            timestamp_fixes: st.timestamp_fixes,
            reordered_video_frames: st.reordered_video_frames,
            supply: CodecSet::from_bits(self.supply.load(Ordering::Relaxed)),
            layers: lock(&self.layers).clone(),
            keyframe_requests: self.keyframe_requests.load(Ordering::Relaxed),
            max_viewer_queue,
        }
    }

    fn remove_subscriber(&self, id: u64) {
        let mut st = lock(&self.state);
        if let Some(pos) = st.subscribers.iter().position(|s| s.id == id) {
            let s = st.subscribers.swap_remove(pos);
            st.dropped += s.dropped.load(Ordering::Relaxed);
        }
        self.update_demand(&st);
    }

    /// Recomputes what the subscribers want together (under the state lock, so that adds and
    /// removes cannot interleave).
    fn update_demand(&self, st: &StreamState) {
        let all = st.subscribers.iter().fold(CodecSet::EMPTY, |acc, s| acc.union(s.codecs));
        self.demand.store(all.bits(), Ordering::Relaxed);
    }
}

/// A key held for a publisher that is still connecting. It makes the key show as connecting
/// (not live) until it is claimed or dropped; it refuses nobody.
pub struct Reservation {
    hub: Hub,
    id: u64,
    key: StreamKey,
    info: PublisherInfo,
}

impl Reservation {
    /// The reserved key.
    pub fn key(&self) -> &StreamKey {
        &self.key
    }

    /// Claims the key for the connected publisher (the reservation ends either way). Refused if
    /// another publisher claimed it first.
    pub fn claim(self) -> Result<Publisher, HubError> {
        self.hub.publish(self.key.clone(), self.info.clone())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        lock(&self.hub.inner.reservations).remove(&self.id);
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation").field("key", &self.key).finish()
    }
}

/// Publishing side of a stream. Dropping it ends the stream for every subscriber.
pub struct Publisher {
    stream: Arc<Stream>,
}

impl Publisher {
    /// The key this publisher holds.
    pub fn key(&self) -> &StreamKey {
        &self.stream.key
    }

    /// Sets the video configuration; subscribers see it only if its bytes changed.
    /// Returns true when it changed.
    pub fn set_video_config(&self, config: VideoConfig) -> bool {
        let mut st = lock(&self.stream.state);
        if st.video.as_deref() == Some(&config) {
            return false;
        }
        let config = Arc::new(config);
        st.video = Some(config.clone());
        self.broadcast(&mut st, HubEvent::VideoConfig(config));
        true
    }

    /// Sets the audio configuration; subscribers see it only if its bytes changed.
    /// Returns true when it changed.
    pub fn set_audio_config(&self, config: AudioConfig) -> bool {
        let mut st = lock(&self.stream.state);
        if st.audio.as_deref() == Some(&config) {
            return false;
        }
        let config = Arc::new(config);
        st.audio = Some(config.clone());
        self.broadcast(&mut st, HubEvent::AudioConfig(config));
        true
    }

    /// Pushes a frame to every subscriber; never waits. `now` is when it arrived (bitrate
    /// window and the audio wake policy read it; tests pass virtual time).
    pub fn push(&self, mut frame: MediaFrame, now: Instant) {
        frame.arrival_ms = unix_ms();
        let mut st = lock(&self.stream.state);
        let ti = track_index(frame.codec);
        let ci = frame.codec.index();
        // Per-track DTS never goes backwards (players such as mpegts.js stall otherwise); each
        // codec's rendition of a track has its own timeline.
        if let Some(last) = st.last_dts[ci] {
            if frame.dts < last {
                frame.pts += last - frame.dts;
                frame.dts = last;
                st.timestamp_fixes += 1;
            }
        }
        st.last_dts[ci] = Some(frame.dts);
        st.last_push[ci] = Some(now);
        if frame.track == TrackKind::Video {
            if st.last_video_pts[ci].is_some_and(|p| frame.pts < p) {
                st.reordered_video_frames += 1;
            }
            st.last_video_pts[ci] = Some(frame.pts);
        }
        let len = frame.data.len();
        st.bytes_in += len as u64;
        st.frames_in[ti] += 1;
        match st.rate_window {
            None => st.rate_window = Some((now, len as u64)),
            Some((start, bytes)) => {
                let elapsed = now.duration_since(start);
                if elapsed >= Duration::from_secs(2) {
                    st.bitrate_in = ((bytes * 8) as f64 / elapsed.as_secs_f64()) as u64;
                    st.rate_window = Some((now, len as u64));
                } else {
                    st.rate_window = Some((start, bytes + len as u64));
                }
            }
        }
        // What the publisher really sends decides, not what its metadata announces.
        let has_video = st.video.is_some();
        let sync = match frame.track {
            TrackKind::Video => frame.keyframe,
            TrackKind::Audio => !has_video,
        };
        let frame = Arc::new(frame);
        let cfg = &self.stream.hub.config;
        let limits = GopLimits {
            max_bytes: cfg.gop_max_bytes.min(cfg.queue_max_bytes),
            max_frames: cfg.queue_max_frames,
            audio_only_frames: cfg.audio_only_cache_frames,
        };
        st.gop.push(&frame, has_video, limits);
        // Viewers are woken for video frames; audio frames wait for the next video frame (at
        // most one frame interval) so that one wake-up and one write carry both. This halves
        // the wake-ups and syscalls per viewer. Audio-only streams, and audio while video has
        // stalled for AUDIO_WAKE_AFTER, wake viewers at once.
        let wake = match frame.track {
            TrackKind::Video => {
                st.last_video_push = Some(now);
                true
            }
            TrackKind::Audio => !has_video || st.last_video_push.is_none_or(|t| now.duration_since(t) >= AUDIO_WAKE_AFTER),
        };
        let mut overflows = 0;
        for sub in st.subscribers.iter().filter(|s| s.codecs.contains(frame.codec)) {
            overflows += u64::from(sub.offer_frame(&frame, sync, wake, cfg, &self.stream.hub.totals));
        }
        st.overflows += overflows;
    }

    /// The codecs the subscribers take together: produce the others only for nobody.
    pub fn demand(&self) -> CodecSet {
        CodecSet::from_bits(self.stream.demand.load(Ordering::Relaxed))
    }

    /// A rendition stopped (nobody took it): its cached frames are forgotten, so a viewer who
    /// comes for it later waits for its next keyframe instead of starting from a stale GOP.
    pub fn drop_cached(&self, codec: Codec) {
        lock(&self.stream.state).gop.remove_codec(codec);
    }

    /// Says which codecs this publisher can produce on demand (its own, and the renditions it
    /// makes): a WebRTC viewer of a VP8 publisher takes VP8, not the H.264 made from it. H.264
    /// and AAC until told otherwise.
    pub fn set_supply(&self, codecs: CodecSet) {
        self.stream.supply.store(codecs.bits(), Ordering::Relaxed);
    }

    /// Says the publisher sends simulcast layers (their RTP stream ids, smallest picture
    /// first): the stream's frames are of one of them, and WebRTC subscribers can be sent any
    /// (by the WebRTC engine, not through the hub).
    pub fn set_layers(&self, layers: Vec<String>) {
        *lock(&self.stream.layers) = layers;
    }

    /// Waits until some egress asks for a keyframe (WebRTC ingest answers with a PLI).
    pub async fn keyframe_requested(&self) {
        self.stream.keyframe_notify.notified().await;
    }

    /// Statistics of this stream.
    pub fn stats(&self) -> StreamStats {
        self.stream.stats()
    }

    fn broadcast(&self, st: &mut StreamState, ev: HubEvent) {
        let codec = match &ev {
            HubEvent::VideoConfig(v) => v.codec(),
            HubEvent::AudioConfig(a) => a.codec(),
            HubEvent::Frame(f) => f.codec,
        };
        for sub in st.subscribers.iter().filter(|s| s.codecs.contains(codec)) {
            sub.offer_config(ev.clone());
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        {
            let mut streams = lock(&self.stream.hub.streams);
            if streams.get(&self.stream.key).is_some_and(|s| s.id == self.stream.id) {
                streams.remove(&self.stream.key);
            }
        }
        let mut st = lock(&self.stream.state);
        st.ended = true;
        st.gop.clear();
        for sub in &st.subscribers {
            lock(&sub.queue).ended = true;
            sub.notify.notify_one();
        }
    }
}

impl SubShared {
    fn offer_config(&self, ev: HubEvent) {
        let mut q = lock(&self.queue);
        // Coalesce: a config not yet taken by the viewer is replaced by the newer one.
        let same_kind = |e: &HubEvent| {
            matches!(
                (e, &ev),
                (HubEvent::VideoConfig(_), HubEvent::VideoConfig(_)) | (HubEvent::AudioConfig(_), HubEvent::AudioConfig(_))
            )
        };
        if let Some(last) = q.events.back_mut() {
            if same_kind(last) {
                *last = ev;
                drop(q);
                self.notify.notify_one();
                return;
            }
        }
        q.events.push_back(ev);
        drop(q);
        self.notify.notify_one();
    }

    /// Returns true when this offer overflowed the queue.
    fn offer_frame(&self, frame: &Arc<MediaFrame>, sync: bool, wake: bool, cfg: &HubConfig, totals: &HubTotals) -> bool {
        let mut q = lock(&self.queue);
        let mut dropped = 0u64;
        let mut overflow = false;
        let audio = frame.track == TrackKind::Audio;
        if audio {
            match q.audio_from {
                Some(from) if frame.pts_ms() < from => return false,
                Some(_) => q.audio_from = None,
                None => {}
            }
        }
        if q.wait_keyframe && !sync {
            if audio {
                // (A stream with video: its audio waits for the keyframe.)
                q.held_audio.push_back(frame.clone());
                if q.held_audio.len() > HELD_AUDIO {
                    q.held_audio.pop_front();
                    dropped = 1;
                }
            } else {
                dropped = 1;
            }
        } else {
            let starting = q.wait_keyframe && !audio;
            q.wait_keyframe = false;
            let len = frame.data.len();
            if q.frames + 1 > cfg.queue_max_frames || q.bytes + len > cfg.queue_max_bytes {
                overflow = true;
                // Drop every queued frame; keep the newest config of each kind.
                let mut video = None;
                let mut audio = None;
                for e in q.events.drain(..) {
                    match e {
                        HubEvent::Frame(_) => dropped += 1,
                        HubEvent::VideoConfig(_) => video = Some(e),
                        HubEvent::AudioConfig(_) => audio = Some(e),
                    }
                }
                q.events.extend(video.into_iter().chain(audio));
                q.frames = 0;
                q.bytes = 0;
                if !sync {
                    q.wait_keyframe = true;
                    dropped += 1;
                }
            }
            if !q.wait_keyframe {
                q.frames += 1;
                q.bytes += len;
                q.events.push_back(HubEvent::Frame(frame.clone()));
                if starting {
                    let key_ms = frame.pts_ms();
                    let held: Vec<_> = q.held_audio.drain(..).collect();
                    for a in held {
                        if a.pts_ms() >= key_ms {
                            q.frames += 1;
                            q.bytes += a.data.len();
                            q.events.push_back(HubEvent::Frame(a));
                        } else {
                            dropped += 1;
                        }
                    }
                    q.audio_from = Some(key_ms);
                }
            }
        }
        drop(q);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            totals.dropped_frames.fetch_add(dropped, Ordering::Relaxed);
        } else if wake {
            self.notify.notify_one();
        }
        overflow
    }
}

/// A viewer's end of a stream. Dropping it unsubscribes.
pub struct Subscriber {
    stream: Arc<Stream>,
    shared: Arc<SubShared>,
}

impl Subscriber {
    /// The next event; `None` once the publisher has gone and the queue is drained.
    pub async fn recv(&mut self) -> Option<HubEvent> {
        loop {
            let notified = self.shared.notify.notified();
            if let Some(r) = self.try_recv() {
                return r;
            }
            notified.await;
        }
    }

    /// Non-blocking receive: `None` when nothing is queued, `Some(None)` when the stream ended.
    pub fn try_recv(&self) -> Option<Option<HubEvent>> {
        let mut q = lock(&self.shared.queue);
        match q.events.pop_front() {
            Some(ev) => {
                if let HubEvent::Frame(f) = &ev {
                    q.frames -= 1;
                    q.bytes -= f.data.len();
                }
                Some(Some(ev))
            }
            None if q.ended => Some(None),
            None => None,
        }
    }

    /// Frames this viewer lost to overflow so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Frames and payload bytes queued now.
    pub fn queued(&self) -> (usize, usize) {
        let q = lock(&self.shared.queue);
        (q.frames, q.bytes)
    }

    /// The stream's key.
    pub fn key(&self) -> &StreamKey {
        &self.stream.key
    }

    /// Asks the publisher for a keyframe.
    pub fn request_keyframe(&self) {
        self.stream.request_keyframe();
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stream.remove_subscriber(self.shared.id);
    }
}

/// The wall clock in Unix milliseconds (0 if the clock is before 1970): what frames'
/// `arrival_ms`, playlists' program dates and the server clock (`/api/v1/time`) are in.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::frame::{AudioConfig, Timebase};

    /// Virtual time: `ms` after a fixed start.
    fn at(ms: u64) -> Instant {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *START.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    fn key(s: &str) -> StreamKey {
        StreamKey::new("live", s).unwrap()
    }

    fn info() -> PublisherInfo {
        PublisherInfo {
            protocol: "test",
            remote: "127.0.0.1:1".into(),
        }
    }

    fn vframe(ts: i64, key: bool, size: usize) -> MediaFrame {
        MediaFrame::video(ts, ts, Timebase::MILLIS, key, Bytes::from(vec![0u8; size]))
    }

    fn video_config() -> VideoConfig {
        let sps = include_bytes!("../testdata/x264_1280x720.sps");
        let rec = crate::avc::AvcDecoderConfig::from_parameter_sets(sps, &[&[0x68, 0xeb, 0xe3, 0xcb]]).unwrap();
        VideoConfig::from_avcc(rec.to_bytes()).unwrap()
    }

    fn drain(sub: &mut Subscriber) -> Vec<HubEvent> {
        let mut out = Vec::new();
        while let Some(Some(ev)) = sub.try_recv() {
            out.push(ev);
        }
        out
    }

    fn frame_ts(evs: &[HubEvent]) -> Vec<(i64, bool)> {
        evs.iter()
            .filter_map(|e| match e {
                HubEvent::Frame(f) => Some((f.dts, f.keyframe)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_input_bitrate_reads_without_the_statistics() {
        let hub = Hub::default();
        let p = hub.publish(key("a"), info()).unwrap();
        p.set_video_config(video_config());
        let t0 = Instant::now();
        // 1000 bytes every 100 ms for 2 s: 80 kbit/s.
        for i in 0..=20 {
            p.push(vframe(i * 100, i == 0, 1000), t0 + Duration::from_millis(i as u64 * 100));
        }
        assert_eq!(hub.bitrate_in(&key("a")), Some(80_000));
        assert_eq!(hub.bitrate_in(&key("a")), hub.stream(&key("a")).map(|s| s.bitrate_in));
        assert_eq!(hub.bitrate_in(&key("b")), None);
    }

    #[test]
    fn second_publisher_refused_and_key_reusable() {
        let hub = Hub::default();
        let p = hub.publish(key("a"), info()).unwrap();
        assert_eq!(
            hub.publish(key("a"), info()).err(),
            Some(HubError::AlreadyPublishing("live/a".into()))
        );
        let other = hub.publish(key("b"), info());
        assert!(other.is_ok());
        drop(p);
        assert!(!hub.is_live(&key("a")));
        assert!(hub.publish(key("a"), info()).is_ok());
        assert_eq!(hub.totals().publish_refused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn reservations_hold_nothing_and_the_first_claim_wins() {
        let hub = Hub::default();
        let r1 = hub.reserve(key("a"), info()).unwrap();
        let r2 = hub.reserve(key("a"), info()).unwrap();
        assert_eq!(r1.key(), &key("a"));
        let connecting = hub.connecting();
        assert_eq!(connecting.len(), 1, "one entry per key");
        assert_eq!(connecting[0].key, key("a"));
        // Not live: viewers are refused as for any key nobody publishes.
        assert!(!hub.is_live(&key("a")));
        assert!(matches!(hub.subscribe(&key("a"), "flv"), Err(HubError::NotFound(_))));
        assert!(hub.streams().is_empty());
        // A publisher that connects first (RTMP) wins over both reservations.
        let rtmp = hub.publish(key("a"), info()).unwrap();
        assert!(hub.connecting().is_empty(), "a live key is not listed as connecting");
        assert_eq!(r1.claim().err(), Some(HubError::AlreadyPublishing("live/a".into())));
        // While the key is live, no new reservation.
        assert!(matches!(hub.reserve(key("a"), info()), Err(HubError::AlreadyPublishing(_))));
        drop(rtmp);
        // The remaining reservation is listed again, and its claim succeeds.
        assert_eq!(hub.connecting().len(), 1);
        let p = r2.claim().unwrap();
        assert!(hub.is_live(&key("a")));
        drop(p);
        assert!(hub.connecting().is_empty(), "claimed and dropped reservations are gone");
        assert!(lock(&hub.inner.reservations).is_empty());
        // Dropping a reservation frees its entry.
        let r3 = hub.reserve(key("b"), info()).unwrap();
        assert_eq!(hub.connecting().len(), 1);
        drop(r3);
        assert!(hub.connecting().is_empty());
    }

    fn codecs_of(evs: &[HubEvent]) -> Vec<Codec> {
        evs.iter()
            .filter_map(|e| match e {
                HubEvent::Frame(f) => Some(f.codec),
                _ => None,
            })
            .collect()
    }

    /// A WebRTC publisher's Opus travels next to its AAC: each subscriber gets the codecs it
    /// asked for (the cached GOP too), and the publisher sees who wants what.
    #[test]
    fn subscribers_take_their_codecs_and_demand_follows_them() {
        let hub = Hub::default();
        let p = hub.publish(key("a"), info()).unwrap();
        assert_eq!(p.demand(), CodecSet::EMPTY);
        p.set_video_config(video_config());
        let opus = |ts| {
            MediaFrame::coded(
                Codec::Opus,
                ts,
                ts,
                Timebase { num: 1, den: 48_000 },
                true,
                Bytes::from_static(b"op"),
            )
        };
        let aac = |ts| MediaFrame::audio(ts, Timebase::MILLIS, Bytes::from_static(b"aac"));
        p.push(vframe(0, true, 100), at(0));
        p.push(aac(0), at(0));
        p.push(opus(0), at(0));
        let mut flv = hub.subscribe(&key("a"), "flv").unwrap();
        assert_eq!(p.demand(), CodecSet::FLV);
        let mut rtc = hub
            .subscribe_to(&key("a"), "webrtc", CodecSet::of(&[Codec::H264, Codec::Opus]))
            .unwrap();
        assert_eq!(p.demand(), CodecSet::of(&[Codec::H264, Codec::Aac, Codec::Opus]));
        // Opus and AAC timestamps are on different clocks: neither "repairs" the other.
        p.push(vframe(33, false, 10), at(33));
        p.push(aac(21), at(33));
        p.push(opus(960), at(33));
        let (f, r) = (drain(&mut flv), drain(&mut rtc));
        assert!(matches!(f[0], HubEvent::VideoConfig(_)) && matches!(r[0], HubEvent::VideoConfig(_)));
        assert_eq!(codecs_of(&f), [Codec::H264, Codec::Aac, Codec::H264, Codec::Aac]);
        assert_eq!(codecs_of(&r), [Codec::H264, Codec::Opus, Codec::H264, Codec::Opus]);
        assert_eq!(p.stats().timestamp_fixes, 0);
        drop(rtc);
        assert_eq!(p.demand(), CodecSet::FLV, "Opus is wanted by nobody once its viewer left");
        drop(flv);
        assert_eq!(p.demand(), CodecSet::EMPTY);
    }

    /// A rendition that stopped (AAC while only WebRTC viewers took Opus) is not replayed from
    /// the cache when it comes back: the new viewer waits for a fresh keyframe, asked for.
    #[test]
    fn a_stopped_rendition_starts_again_at_a_fresh_keyframe() {
        let hub = Hub::default();
        let p = hub.publish(key("a"), info()).unwrap();
        p.set_video_config(video_config());
        p.set_audio_config(AudioConfig::from_asc(Bytes::from_static(&[0x11, 0x90])).unwrap());
        let aac = |ts| MediaFrame::audio(ts, Timebase::MILLIS, Bytes::from_static(b"aac"));
        p.push(vframe(0, true, 100), at(0));
        p.push(aac(0), at(0));
        // A viewer now gets the cached GOP.
        let mut early = hub.subscribe(&key("a"), "flv").unwrap();
        assert_eq!(codecs_of(&drain(&mut early)), [Codec::H264, Codec::Aac]);
        drop(early);
        // AAC stops (nobody took it); video goes on for 2 s.
        p.drop_cached(Codec::Aac);
        for i in 1..60 {
            p.push(vframe(i * 33, false, 10), at(i as u64 * 33));
        }
        // AAC has just started again when the viewer comes: the cache's video still runs 2 s
        // ahead of it.
        p.push(aac(1990), at(1990));
        let requests = p.stats().keyframe_requests;
        let mut late = hub.subscribe(&key("a"), "flv").unwrap();
        assert!(drain(&mut late).iter().all(|e| !matches!(e, HubEvent::Frame(_))), "no stale replay");
        assert_eq!(p.stats().keyframe_requests, requests + 1, "a keyframe was asked for");
        // AAC comes back, then the keyframe: both start together. Audio stamped from the
        // keyframe on that arrived before it is kept; audio stamped before it is left out,
        // whenever it arrives.
        p.push(aac(2000), at(2000));
        p.push(vframe(2000, false, 10), at(2000));
        p.push(vframe(2033, true, 100), at(2033));
        p.push(aac(2021), at(2034));
        p.push(aac(2042), at(2042));
        let got: Vec<_> = drain(&mut late)
            .iter()
            .filter_map(|e| match e {
                HubEvent::Frame(f) => Some((f.codec, f.dts)),
                _ => None,
            })
            .collect();
        assert_eq!(got, [(Codec::H264, 2033), (Codec::Aac, 2042)]);
        // Audio stamped after the keyframe that arrived before it (a large keyframe repaired by
        // retransmission comes late) starts with it.
        let mut waiting = hub.subscribe_to(&key("a"), "flv", CodecSet::FLV).unwrap();
        drain(&mut waiting);
        p.drop_cached(Codec::H264);
        let mut fresh = hub.subscribe(&key("a"), "flv").unwrap();
        drain(&mut fresh);
        p.push(aac(2063), at(2070));
        p.push(aac(2084), at(2090));
        p.push(vframe(2066, true, 100), at(2100));
        let got: Vec<_> = drain(&mut fresh)
            .iter()
            .filter_map(|e| match e {
                HubEvent::Frame(f) => Some((f.codec, f.dts)),
                _ => None,
            })
            .collect();
        assert_eq!(got, [(Codec::H264, 2066), (Codec::Aac, 2084)]);
        drop(waiting);
    }

    /// B-frames show as video presented after it is decoded; audio and in-order video do not.
    #[test]
    fn reordered_video_is_counted() {
        let hub = Hub::default();
        let p = hub.publish(key("a"), info()).unwrap();
        p.push(vframe(0, true, 10), at(0));
        p.push(MediaFrame::audio(5, Timebase::MILLIS, Bytes::from_static(b"aac")), at(0));
        p.push(vframe(33, false, 10), at(33));
        // A constant composition offset is not reordering.
        p.push(MediaFrame::video(99, 66, Timebase::MILLIS, false, Bytes::from_static(b"p")), at(33));
        p.push(
            MediaFrame::video(100, 67, Timebase::MILLIS, false, Bytes::from_static(b"p")),
            at(33),
        );
        assert_eq!(p.stats().reordered_video_frames, 0);
        // IPB in decode order: P (pts 133, dts 66), B (pts 100, dts 100).
        p.push(
            MediaFrame::video(133, 66, Timebase::MILLIS, false, Bytes::from_static(b"p")),
            at(66),
        );
        p.push(
            MediaFrame::video(100, 100, Timebase::MILLIS, false, Bytes::from_static(b"b")),
            at(100),
        );
        assert_eq!(p.stats().reordered_video_frames, 1);
    }

    #[test]
    fn late_subscriber_starts_with_config_then_keyframe() {
        let hub = Hub::default();
        let p = hub.publish(key("a"), info()).unwrap();
        assert!(matches!(hub.subscribe(&key("nope"), "flv"), Err(HubError::NotFound(_))));
        p.set_video_config(video_config());
        p.push(vframe(0, true, 100), at(0));
        p.push(vframe(33, false, 10), at(0));
        p.push(vframe(66, true, 100), at(0));
        p.push(MediaFrame::audio(70, Timebase::MILLIS, Bytes::from_static(b"aac")), at(0));
        p.push(vframe(100, false, 10), at(0));
        let mut sub = hub.subscribe(&key("a"), "flv").unwrap();
        let evs = drain(&mut sub);
        assert!(matches!(evs[0], HubEvent::VideoConfig(_)));
        assert_eq!(frame_ts(&evs), vec![(66, true), (70, true), (100, false)]);
    }

    #[test]
    fn cached_gop_starts_both_tracks_at_the_keyframe_time() {
        let hub = Hub::default();
        let p = hub.publish(key("a"), info()).unwrap();
        p.set_video_config(video_config());
        let audio = |ts| MediaFrame::audio(ts, Timebase::MILLIS, Bytes::from_static(b"aac"));
        p.push(vframe(0, true, 100), at(0));
        p.push(audio(10), at(0));
        p.push(audio(1960), at(0));
        p.push(vframe(2000, true, 100), at(0));
        // Audio stamped before the keyframe arrives after it: not for new viewers.
        p.push(audio(1985), at(0));
        p.push(audio(2006), at(0));
        p.push(vframe(2050, false, 10), at(0));
        let mut first = hub.subscribe(&key("a"), "flv").unwrap();
        assert_eq!(frame_ts(&drain(&mut first)), vec![(2000, true), (2006, true), (2050, false)]);
        // Audio stamped after the next keyframe arrives before it (the keyframe was paced out):
        // carried into the new cache.
        p.push(audio(3990), at(0));
        p.push(audio(4011), at(0));
        p.push(vframe(4000, true, 100), at(0));
        p.push(audio(4032), at(0));
        p.push(vframe(4050, false, 10), at(0));
        let mut second = hub.subscribe(&key("a"), "flv").unwrap();
        assert_eq!(
            frame_ts(&drain(&mut second)),
            vec![(4000, true), (4011, true), (4032, true), (4050, false)]
        );
        // Live viewers get everything, in arrival order.
        assert_eq!(frame_ts(&drain(&mut first)).len(), 5);
    }

    #[test]
    fn subscriber_before_first_keyframe_waits_for_it() {
        let hub = Hub::default();
        let p = hub.publish(key("a"), info()).unwrap();
        p.set_video_config(video_config());
        let mut sub = hub.subscribe(&key("a"), "flv").unwrap();
        p.push(vframe(0, false, 10), at(0));
        p.push(MediaFrame::audio(1, Timebase::MILLIS, Bytes::from_static(b"aac")), at(0));
        p.push(vframe(33, true, 10), at(0));
        let evs = drain(&mut sub);
        assert_eq!(frame_ts(&evs), vec![(33, true)]);
    }

    #[test]
    fn config_sent_only_when_changed() {
        let hub = Hub::default();
        let p = hub.publish(key("a"), info()).unwrap();
        let mut sub = hub.subscribe(&key("a"), "flv").unwrap();
        assert!(p.set_video_config(video_config()));
        assert!(!p.set_video_config(video_config()));
        p.push(vframe(0, true, 10), at(0));
        let evs = drain(&mut sub);
        assert_eq!(evs.iter().filter(|e| matches!(e, HubEvent::VideoConfig(_))).count(), 1);
        let sps = include_bytes!("../testdata/x264_320x180.sps");
        let rec = crate::avc::AvcDecoderConfig::from_parameter_sets(sps, &[&[0x68, 0xeb]]).unwrap();
        assert!(p.set_video_config(VideoConfig::from_avcc(rec.to_bytes()).unwrap()));
        match drain(&mut sub).as_slice() {
            [HubEvent::VideoConfig(c)] => assert_eq!(c.info.height, 180),
            other => panic!("expected one new config, got {other:?}"),
        }
    }

    #[test]
    fn overflow_skips_to_next_keyframe_and_counts() {
        let hub = Hub::new(HubConfig {
            queue_max_frames: 10,
            ..Default::default()
        });
        let p = hub.publish(key("a"), info()).unwrap();
        p.set_video_config(video_config());
        let mut slow = hub.subscribe(&key("a"), "flv").unwrap();
        let mut fast = hub.subscribe(&key("a"), "rtmp").unwrap();
        let mut fast_got = Vec::new();
        // Keyframes at 0, 8, 16, 24. The slow viewer holds 0..=9, overflows at 10 and waits,
        // takes 16..=24.
        for i in 0..25 {
            p.push(vframe(i * 33, i % 8 == 0, 100), at(0));
            fast_got.extend(frame_ts(&drain(&mut fast)));
        }
        // The fast viewer got everything.
        assert_eq!(fast_got.len(), 25);
        assert_eq!(fast.dropped(), 0);
        // The slow one never holds more than 10 frames, and what it holds starts at a keyframe.
        let (frames, _) = slow.queued();
        assert!(frames <= 10, "{frames}");
        let got = frame_ts(&drain(&mut slow));
        assert!(got[0].1, "first frame after overflow must be a keyframe: {got:?}");
        assert_eq!(got[0].0, 16 * 33);
        assert_eq!(got.len(), 9);
        assert_eq!(slow.dropped() as usize + got.len(), 25);
        let stats = hub.stream(&key("a")).unwrap();
        assert_eq!(stats.dropped_frames, slow.dropped());
        assert!(stats.overflows >= 1);
        // Config survives an overflow.
        assert!(slow.dropped() > 0);
    }

    #[test]
    fn overflow_by_bytes_keeps_config() {
        let hub = Hub::new(HubConfig {
            queue_max_bytes: 1000,
            gop_max_bytes: 1000,
            ..Default::default()
        });
        let p = hub.publish(key("a"), info()).unwrap();
        let mut slow = hub.subscribe(&key("a"), "flv").unwrap();
        p.set_video_config(video_config());
        for i in 0..20 {
            p.push(vframe(i, i == 0 || i == 15, 100), at(0));
        }
        let evs = drain(&mut slow);
        assert!(matches!(evs[0], HubEvent::VideoConfig(_)), "{evs:?}");
        assert_eq!(frame_ts(&evs)[0], (15, true));
    }

    #[test]
    fn timestamps_never_go_backwards() {
        let hub = Hub::default();
        let p = hub.publish(key("a"), info()).unwrap();
        let mut sub = hub.subscribe(&key("a"), "flv").unwrap();
        p.push(MediaFrame::audio(100, Timebase::MILLIS, Bytes::from_static(b"a")), at(0));
        p.push(MediaFrame::audio(90, Timebase::MILLIS, Bytes::from_static(b"b")), at(0));
        let ts = frame_ts(&drain(&mut sub));
        assert_eq!(ts, vec![(100, true), (100, true)]);
        assert_eq!(hub.stream(&key("a")).unwrap().timestamp_fixes, 1);
    }

    #[tokio::test]
    async fn end_reaches_every_subscriber() {
        let hub = Hub::default();
        let p = hub.publish(key("a"), info()).unwrap();
        let mut subs: Vec<_> = (0..3).map(|_| hub.subscribe(&key("a"), "flv").unwrap()).collect();
        p.push(MediaFrame::audio(0, Timebase::MILLIS, Bytes::from_static(b"a")), at(0));
        drop(p);
        for s in &mut subs {
            assert!(matches!(s.recv().await, Some(HubEvent::Frame(_))));
            assert!(s.recv().await.is_none());
        }
        assert!(hub.streams().is_empty());
    }

    #[tokio::test]
    async fn keyframe_request_reaches_publisher() {
        let hub = Hub::default();
        let p = hub.publish(key("a"), info()).unwrap();
        let sub = hub.subscribe(&key("a"), "hls").unwrap();
        sub.request_keyframe();
        tokio::time::timeout(Duration::from_secs(1), p.keyframe_requested()).await.unwrap();
        assert_eq!(p.stats().keyframe_requests, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn audio_waits_for_the_next_video_frame_but_not_forever() {
        let hub = Hub::default();
        let p = hub.publish(key("a"), info()).unwrap();
        p.set_video_config(video_config());
        p.push(vframe(0, true, 10), at(0));
        let mut sub = hub.subscribe(&key("a"), "flv").unwrap();
        drain(&mut sub);
        p.push(vframe(33, false, 10), at(33));
        sub.recv().await.unwrap();
        {
            let fut = sub.recv();
            tokio::pin!(fut);
            assert!(tokio::time::timeout(Duration::from_millis(10), &mut fut).await.is_err());
            // A waiting viewer is not woken for the audio frame right after a video frame...
            p.push(MediaFrame::audio(40, Timebase::MILLIS, Bytes::from_static(b"a")), at(40));
            assert!(tokio::time::timeout(Duration::from_millis(30), &mut fut).await.is_err());
            // ...it comes with the next video frame.
            p.push(vframe(66, false, 10), at(66));
            let first = tokio::time::timeout(Duration::from_millis(100), &mut fut).await.unwrap().unwrap();
            assert_eq!(frame_ts(&[first]), vec![(40, true)]);
        }
        assert_eq!(frame_ts(&[sub.recv().await.unwrap()]), vec![(66, false)]);
        // When video stalls, audio wakes viewers by itself.
        let fut = sub.recv();
        tokio::pin!(fut);
        assert!(tokio::time::timeout(Duration::from_millis(10), &mut fut).await.is_err());
        // 100 ms (AUDIO_WAKE_AFTER) after the last video frame.
        p.push(MediaFrame::audio(80, Timebase::MILLIS, Bytes::from_static(b"b")), at(166));
        let ev = tokio::time::timeout(Duration::from_millis(500), &mut fut).await.unwrap().unwrap();
        assert_eq!(frame_ts(&[ev]), vec![(80, true)]);
    }

    #[test]
    fn audio_only_stream_serves_late_viewers_at_once() {
        let hub = Hub::default();
        let p = hub.publish(key("a"), info()).unwrap();
        p.set_audio_config(AudioConfig::from_asc(Bytes::from_static(&[0x12, 0x10])).unwrap());
        for i in 0..60 {
            p.push(MediaFrame::audio(i * 23, Timebase::MILLIS, Bytes::from_static(b"aac")), at(0));
        }
        let mut sub = hub.subscribe(&key("a"), "flv").unwrap();
        let evs = drain(&mut sub);
        assert!(matches!(evs[0], HubEvent::AudioConfig(_)));
        let ts = frame_ts(&evs);
        assert_eq!(ts.len(), HubConfig::default().audio_only_cache_frames);
        assert_eq!(ts.last(), Some(&(59 * 23, true)));
        // New audio reaches the viewer without any video keyframe.
        p.push(MediaFrame::audio(60 * 23, Timebase::MILLIS, Bytes::from_static(b"aac")), at(0));
        assert_eq!(frame_ts(&drain(&mut sub)), vec![(60 * 23, true)]);
    }

    #[test]
    fn viewers_counted_per_protocol() {
        let hub = Hub::default();
        let _p = hub.publish(key("a"), info()).unwrap();
        let _a = hub.subscribe(&key("a"), "flv").unwrap();
        let b = hub.subscribe(&key("a"), "rtmp").unwrap();
        let _c = hub.subscribe(&key("a"), "flv").unwrap();
        assert_eq!(hub.stream(&key("a")).unwrap().viewers, vec![("flv", 2), ("rtmp", 1)]);
        drop(b);
        assert_eq!(hub.stream(&key("a")).unwrap().viewers, vec![("flv", 2)]);
    }
}
