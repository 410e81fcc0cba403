//! HLS over HTTP.
//!
//! * Classic (MPEG-TS): `/{app}/{stream}.m3u8`, segments `/{app}/{stream}-{msn}.ts`.
//! * Low-Latency HLS (CMAF): `/ll/{app}/{stream}.m3u8` (blocking reload with `_HLS_msn` and
//!   `_HLS_part`), segments `/ll/{app}/{stream}-{msn}.m4s`, parts `…-{msn}.{part}.m4s`, init
//!   segments `…-init{id}.mp4`.
//!
//! A stream's segmenter of each kind starts on the first playlist request (like MediaMTX's
//! default) as a hub subscriber, and stops when nobody asked for its playlist for
//! `hls.idle_timeout_ms`. When the publisher leaves, the segment being built is closed; if it
//! comes back within `hls.reconnect_grace_ms` the playlist goes on after an
//! `EXT-X-DISCONTINUITY` (same media sequence), otherwise it gets `EXT-X-ENDLIST` and stays
//! readable for `hls.keep_ended_ms`. The first request
//! waits until a player can start a little behind the live edge (classic: two segments; LL-HLS:
//! one, the parts after it are enough), at most [`FIRST_WAIT`]. Segment sequence numbers start
//! at the Unix time in tenths of a second: segments last at least `hls.segment_ms` (≥ 200 ms),
//! so numbers grow slower than that clock and a restarted segmenter (or gateway) never reuses a
//! URI a CDN may still hold.
//!
//! With a WebRTC publisher (whose keyframes come only on request), a segmenter whose segment has
//! reached the target duration asks the hub for a keyframe, so segments hold the target.
//!
//! What URLs name, which blocking reloads may wait and the segmenter's lifecycle are decided
//! in [`policy`] (sans-IO, unit-tested); this module applies them.

pub mod policy;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use egress::hls::{HlsConfig, Segmenter, Segmenting};
use egress::llhls::{LlHlsConfig, LlSegmenter, PartLookup};
use media::{Hub, StreamKey, Subscriber};
use serde::Deserialize;
use tokio::sync::Notify;
use tracing::{debug, Instrument};

use self::policy::{blocking_query, classic_name, ll_name, ClassicName, Lifecycle, LlName, LlObject};
use crate::config::HlsSection;
use crate::pacing::Pacer;
use crate::respond::{plain, stream_key_or_400};

/// The first classic playlist request waits for this many segments (players start a segment or
/// two behind the live edge; with only one listed they start at the edge and stall).
pub const START_SEGMENTS: usize = 2;
/// LL-HLS players start `PART-HOLD-BACK` (three parts) behind the edge: one complete segment and
/// the parts after it are enough.
pub const LL_START_SEGMENTS: usize = 1;
/// The first playlist request waits this long for them.
pub const FIRST_WAIT: Duration = Duration::from_secs(10);
/// A blocking playlist reload or part request waits at most this many target durations
/// (RFC 8216bis §6.2.5.2: three), then gets 503.
const BLOCK_TARGETS: u32 = 3;

/// One stream's segmenter and who waits on it.
pub struct HlsStream<S> {
    segmenter: Mutex<S>,
    /// The playlist as last rendered; cleared on every change, so all the requests between two
    /// changes (every viewer's reload, all blocked LL-HLS requests woken together) share one.
    rendered: Mutex<Option<Bytes>>,
    /// `{stream}-`: what playlist URIs start with.
    prefix: String,
    last_access: Mutex<Instant>,
    changed: Notify,
    /// Distinguishes this segmenter's run in ETags.
    epoch: u64,
}

impl<S: Kind> HlsStream<S> {
    fn segmenter(&self) -> MutexGuard<'_, S> {
        self.segmenter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the segmenter; if `f` says the playlist changed, drops the rendered playlist and
    /// wakes the requests waiting for a change.
    fn update(&self, f: impl FnOnce(&mut S) -> bool) -> bool {
        let mut seg = self.segmenter();
        let changed = f(&mut seg);
        if changed {
            *self.rendered.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        drop(seg);
        if changed {
            self.changed.notify_waiters();
        }
        changed
    }

    /// The current playlist.
    fn playlist(&self) -> Bytes {
        // The segmenter lock is held while rendering and caching, so an update cannot slip in
        // between and leave a stale playlist cached.
        let seg = self.segmenter();
        let mut rendered = self.rendered.lock().unwrap_or_else(PoisonError::into_inner);
        rendered.get_or_insert_with(|| Bytes::from(seg.playlist(&self.prefix))).clone()
    }

    fn touch(&self) {
        *self.last_access.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_access.lock().unwrap_or_else(PoisonError::into_inner).elapsed()
    }

    /// Waits until `ready` holds for the segmenter, at most until `deadline`. False on timeout.
    async fn wait_for(&self, deadline: tokio::time::Instant, ready: impl Fn(&S) -> bool) -> bool {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if ready(&self.segmenter()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return ready(&self.segmenter());
            }
        }
    }
}

/// Every stream's segmenters of one kind, and what they served.
pub struct HlsStreams<S> {
    streams: Mutex<HashMap<StreamKey, Arc<HlsStream<S>>>>,
    /// Responses of this kind, for `/metrics`.
    pub counters: HlsCounters,
}

impl<S> Default for HlsStreams<S> {
    fn default() -> Self {
        Self {
            streams: Mutex::new(HashMap::new()),
            counters: HlsCounters::default(),
        }
    }
}

impl<S> HlsStreams<S> {
    fn map(&self) -> MutexGuard<'_, HashMap<StreamKey, Arc<HlsStream<S>>>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stream's state if a segmenter runs (or its ended playlist is still kept).
    pub fn get(&self, key: &StreamKey) -> Option<Arc<HlsStream<S>>> {
        self.map().get(key).cloned()
    }

    /// Segmenters running.
    pub fn len(&self) -> usize {
        self.map().len()
    }
}

/// What an HLS response carried, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Playlist,
    Segment,
    Part,
    Init,
}

impl Object {
    pub const ALL: [Object; 4] = [Object::Playlist, Object::Segment, Object::Part, Object::Init];

    pub fn name(self) -> &'static str {
        match self {
            Object::Playlist => "playlist",
            Object::Segment => "segment",
            Object::Part => "part",
            Object::Init => "init",
        }
    }
}

/// Responses served (200) and their body bytes, per object.
#[derive(Debug, Default)]
pub struct HlsCounters {
    pub served: [AtomicU64; 4],
    pub bytes: [AtomicU64; 4],
}

impl HlsCounters {
    fn count(&self, object: Object, len: usize) {
        let i = object as usize;
        self.served[i].fetch_add(1, Ordering::Relaxed);
        self.bytes[i].fetch_add(len as u64, Ordering::Relaxed);
    }
}

/// What the HLS routes need: the hub to subscribe to, the segmenters, the configuration.
pub struct HlsService {
    pub hub: Hub,
    pub streams: Hls,
    pub config: HlsSection,
}

/// The LL-HLS routes (classic HLS shares `/{app}/{file}` with FLV: see [`classic`]).
pub fn routes(svc: Arc<HlsService>) -> Router {
    Router::new().route("/ll/{app}/{file}", get(ll)).with_state(svc)
}

/// Both kinds of HLS.
#[derive(Default)]
pub struct Hls {
    /// MPEG-TS segments.
    pub classic: HlsStreams<Segmenter>,
    /// LL-HLS, CMAF parts.
    pub ll: HlsStreams<LlSegmenter>,
}

impl Hls {
    /// Segmenters running, both kinds.
    pub fn len(&self) -> usize {
        self.classic.len() + self.ll.len()
    }
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Which segmenter kind a request is for.
pub(crate) trait Kind: Segmenting + Sized {
    const PROTOCOL: &'static str;
    /// Complete segments the first playlist request waits for.
    const START_SEGMENTS: usize;
    fn streams(st: &HlsService) -> &HlsStreams<Self>;
    fn make(config: &HlsSection, first_sequence: u64) -> Self;
    /// The segment being built reached the target duration without a keyframe.
    fn overdue(&self) -> bool {
        self.building_ms() >= self.target_duration_ms()
    }
}

impl Kind for Segmenter {
    const PROTOCOL: &'static str = "hls";
    const START_SEGMENTS: usize = START_SEGMENTS;
    fn streams(st: &HlsService) -> &HlsStreams<Self> {
        &st.streams.classic
    }
    fn make(c: &HlsSection, first_sequence: u64) -> Self {
        Segmenter::new(HlsConfig {
            target_duration_ms: ms(c.segment_ms),
            window: c.window,
            first_sequence,
        })
    }
}

impl Kind for LlSegmenter {
    const PROTOCOL: &'static str = "ll-hls";
    const START_SEGMENTS: usize = LL_START_SEGMENTS;
    fn streams(st: &HlsService) -> &HlsStreams<Self> {
        &st.streams.ll
    }
    fn make(c: &HlsSection, first_sequence: u64) -> Self {
        LlSegmenter::new(LlHlsConfig {
            target_duration_ms: ms(c.segment_ms),
            part_target_ms: ms(c.part_ms),
            window: c.window,
            first_sequence,
        })
    }
}

/// The stream's segmenter, started if the stream is live; waits for the first segments. None
/// when the stream is not live and has no kept playlist.
async fn open<S: Kind>(st: &Arc<HlsService>, key: &StreamKey) -> Option<Arc<HlsStream<S>>> {
    if let Some(s) = S::streams(st).get(key) {
        s.touch();
        wait_first_segments(&s).await;
        return Some(s);
    }
    let sub = st.hub.subscribe(key, S::PROTOCOL).ok()?;
    let s = {
        let mut map = S::streams(st).map();
        if let Some(existing) = map.get(key) {
            existing.clone()
        } else {
            let first_sequence = u64::try_from(media::unix_ms() / 100).unwrap_or(0);
            let s = Arc::new(HlsStream {
                segmenter: Mutex::new(S::make(&st.config, first_sequence)),
                rendered: Mutex::new(None),
                prefix: format!("{}-", key.stream()),
                last_access: Mutex::new(Instant::now()),
                changed: Notify::new(),
                epoch: first_sequence,
            });
            map.insert(key.clone(), s.clone());
            let span = tracing::info_span!("hls", key = %key, kind = S::PROTOCOL);
            tokio::spawn(run(st.clone(), key.clone(), s.clone(), sub).instrument(span));
            s
        }
    };
    wait_first_segments(&s).await;
    Some(s)
}

/// Feeds one segmenter from the hub until nobody wants it or its stream ended long ago.
async fn run<S: Kind>(st: Arc<HlsService>, key: StreamKey, s: Arc<HlsStream<S>>, mut sub: Subscriber) {
    let c = &st.config;
    let life = Lifecycle {
        idle: Duration::from_millis(c.idle_timeout_ms),
        grace: Duration::from_millis(c.reconnect_grace_ms),
        keep_ended: Duration::from_millis(c.keep_ended_ms),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut keyframes = Pacer::new(Duration::from_secs(1));
    'publisher: loop {
        // The publisher is live.
        loop {
            tokio::select! {
                ev = sub.recv() => {
                    let Some(ev) = ev else { break };
                    s.update(|seg| {
                        let changed = seg.push(&ev, media::unix_ms());
                        // Asked only while the segment is overdue: once a keyframe cut it, an
                        // ask held back by the pacer must not fire into the new segment.
                        if seg.overdue() {
                            keyframes.ask();
                        } else {
                            keyframes.withdraw();
                        }
                        changed
                    });
                    if keyframes.due(Instant::now()) {
                        sub.request_keyframe();
                    }
                }
                _ = tick.tick() => {
                    if life.stop_while_live(s.idle_for()) {
                        debug!("no HLS request for {:?}: segmenter stopped", life.idle);
                        remove(&st, &key, &s);
                        return;
                    }
                }
            }
        }
        // The publisher left: close what was being built, wait for it to come back.
        drop(sub);
        s.update(|seg| seg.flush());
        let gone = Instant::now();
        loop {
            tick.tick().await;
            let next = life.after_leave(gone.elapsed(), s.idle_for(), s.segmenter().is_ended());
            if next.try_resume {
                if let Ok(again) = st.hub.subscribe(&key, S::PROTOCOL) {
                    debug!("publisher back: playlist continues after a discontinuity");
                    sub = again;
                    s.update(|seg| {
                        seg.restart();
                        true
                    });
                    continue 'publisher;
                }
            }
            if next.end {
                s.update(|seg| {
                    seg.end();
                    true
                });
            }
            if next.remove {
                remove(&st, &key, &s);
                return;
            }
        }
    }
}

fn remove<S: Kind>(st: &HlsService, key: &StreamKey, s: &Arc<HlsStream<S>>) {
    let mut map = S::streams(st).map();
    if map.get(key).is_some_and(|cur| Arc::ptr_eq(cur, s)) {
        map.remove(key);
    }
    drop(map);
    // Blocked requests see the end now rather than at their timeout.
    s.update(|seg| {
        seg.end();
        true
    });
}

async fn wait_first_segments<S: Kind>(s: &HlsStream<S>) {
    let deadline = tokio::time::Instant::now() + FIRST_WAIT;
    s.wait_for(deadline, |seg| seg.len() >= S::START_SEGMENTS || seg.is_ended()).await;
}

/// A response with the body, content type and cache lifetime (seconds).
fn reply(body: impl Into<Body>, content_type: &'static str, max_age: &'static str, etag: Option<String>) -> Response {
    let mut r = Response::new(body.into());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(max_age));
    if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(&t).ok()) {
        h.insert(header::ETAG, tag);
    }
    r
}

/// 304 when the request's `If-None-Match` names `etag`.
fn not_modified(headers: &HeaderMap, etag: &str) -> Option<Response> {
    let inm = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    if inm.split(',').any(|t| t.trim() == etag || t.trim() == "*") {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        if let Ok(v) = HeaderValue::from_str(etag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        return Some(r);
    }
    None
}

/// Immutable media (segments, parts, init segments): a strong ETag, a long cache lifetime.
fn media_reply(
    counters: (&HlsCounters, Object),
    headers: &HeaderMap,
    method: &Method,
    data: Body,
    len: usize,
    content_type: &'static str,
    etag: String,
) -> Response {
    if let Some(r) = not_modified(headers, &etag) {
        return r;
    }
    counters.0.count(counters.1, len);
    let body = if method == Method::HEAD { Body::empty() } else { data };
    let mut r = reply(body, content_type, "public, max-age=60", Some(etag));
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

const PLAYLIST: &str = "application/vnd.apple.mpegurl";

/// Classic: `/{app}/{stream}.m3u8`, `/{app}/{stream}-{msn}.ts`. None when `file` is neither.
pub async fn classic(st: &Arc<HlsService>, app: &str, file: &str, method: &Method, headers: &HeaderMap) -> Option<Response> {
    let (stream, seq, sequence) = match classic_name(file)? {
        ClassicName::Playlist { stream } => {
            let key = match stream_key_or_400(app, stream) {
                Ok(k) => k,
                Err(r) => return Some(*r),
            };
            let Some(hls) = open::<Segmenter>(st, &key).await else {
                return Some(plain(StatusCode::NOT_FOUND, format!("{key} is not live")));
            };
            let body = hls.playlist();
            st.streams.classic.counters.count(Object::Playlist, body.len());
            // A CDN may cache the playlist for one segment (s-maxage); a browser must not:
            // hls.js reloads half a target after an unchanged playlist, and a cached copy then
            // hid a new segment for another second, enough to stall a player two segments
            // behind the edge.
            return Some(reply(body, PLAYLIST, "max-age=0, s-maxage=1", None));
        }
        ClassicName::Segment { stream, seq, sequence } => (stream, seq, sequence),
    };
    let key = match stream_key_or_400(app, stream) {
        Ok(k) => k,
        Err(r) => return Some(*r),
    };
    let hls = st.streams.classic.get(&key);
    let seg = sequence.and_then(|n| hls.as_ref()?.segmenter().segment(n));
    let (Some(hls), Some(seg)) = (hls, seg) else {
        return Some(plain(
            StatusCode::NOT_FOUND,
            format!("segment {seq} of {key} is not (or no longer) available"),
        ));
    };
    let etag = format!("\"{}-{}\"", hls.epoch, seg.sequence);
    let len = seg.data.len();
    let counters = (&st.streams.classic.counters, Object::Segment);
    Some(media_reply(
        counters,
        headers,
        method,
        Body::from(seg.data.clone()),
        len,
        "video/mp2t",
        etag,
    ))
}

/// Query of an LL-HLS playlist request.
#[derive(Debug, Deserialize)]
pub struct Blocking {
    #[serde(rename = "_HLS_msn")]
    msn: Option<String>,
    #[serde(rename = "_HLS_part")]
    part: Option<String>,
}

/// `/ll/{app}/{file}`: the LL-HLS playlist, segments, parts and init segments.
async fn ll(
    State(st): State<Arc<HlsService>>,
    Path((app, file)): Path<(String, String)>,
    Query(q): Query<Blocking>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let (stream, name, object) = match ll_name(&file) {
        LlName::Playlist { stream } => return ll_playlist(&st, &app, stream, q).await,
        LlName::Media { stream, name, object } => (stream, name, object),
        LlName::Unknown => return plain(StatusCode::NOT_FOUND, "LL-HLS URLs end in .m3u8, .m4s or .mp4"),
    };
    let key = match stream_key_or_400(&app, stream) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let missing = || plain(StatusCode::NOT_FOUND, format!("{file} of {key} is not (or no longer) available"));
    let (Some(hls), Some(object)) = (st.streams.ll.get(&key), object) else {
        return missing();
    };
    let etag = format!("\"{}-{name}\"", hls.epoch);
    let counters = &st.streams.ll.counters;
    let (msn, part) = match object {
        LlObject::Init(id) => {
            let Some(b) = hls.segmenter().init(id) else { return missing() };
            let len = b.len();
            return media_reply((counters, Object::Init), &headers, &method, Body::from(b), len, "video/mp4", etag);
        }
        LlObject::Segment(msn) => {
            let Some(seg) = hls.segmenter().segment(msn) else {
                return missing();
            };
            let len = seg.len();
            let chunks: Vec<Result<Bytes, std::convert::Infallible>> = seg.parts.iter().map(|p| Ok(p.data.clone())).collect();
            return media_reply(
                (counters, Object::Segment),
                &headers,
                &method,
                Body::from_stream(futures_util::stream::iter(chunks)),
                len,
                "video/mp4",
                etag,
            );
        }
        LlObject::Part(msn, part) => (msn, part),
    };
    // A part not produced yet but next in line (the preload hint) is held until it exists.
    let lookup = hls.segmenter().part(msn, part);
    let found = match lookup {
        PartLookup::Ready(p) => Some(p),
        PartLookup::Missing => None,
        PartLookup::Next => {
            let deadline = tokio::time::Instant::now() + block_limit(&hls);
            hls.wait_for(deadline, |s| !matches!(s.part(msn, part), PartLookup::Next)).await;
            match hls.segmenter().part(msn, part) {
                PartLookup::Ready(p) => Some(p),
                PartLookup::Next => return plain(StatusCode::SERVICE_UNAVAILABLE, "the part did not come in time"),
                PartLookup::Missing => None,
            }
        }
    };
    match found {
        Some(p) => {
            let len = p.data.len();
            media_reply(
                (counters, Object::Part),
                &headers,
                &method,
                Body::from(p.data.clone()),
                len,
                "video/mp4",
                etag,
            )
        }
        None => missing(),
    }
}

fn block_limit(hls: &HlsStream<LlSegmenter>) -> Duration {
    let target = u64::try_from(hls.segmenter().target_duration_ms()).unwrap_or(1000);
    Duration::from_millis(target) * BLOCK_TARGETS
}

async fn ll_playlist(st: &Arc<HlsService>, app: &str, stream: &str, q: Blocking) -> Response {
    let key = match stream_key_or_400(app, stream) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let block = match blocking_query(q.msn.as_deref(), q.part.as_deref()) {
        Ok(b) => b,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e),
    };
    let Some(hls) = open::<LlSegmenter>(st, &key).await else {
        return plain(StatusCode::NOT_FOUND, format!("{key} is not live"));
    };
    if let Some(block) = block {
        let max = hls.segmenter().max_blocking_msn();
        let (msn, part) = match block.check(max, st.config.segment_ms, st.config.part_ms) {
            Ok(at) => at,
            Err(e) => return plain(StatusCode::BAD_REQUEST, e),
        };
        let deadline = tokio::time::Instant::now() + block_limit(&hls);
        if !hls.wait_for(deadline, |s| s.ready(msn, part)).await {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "the playlist did not reach that segment in time");
        }
    }
    let body = hls.playlist();
    st.streams.ll.counters.count(Object::Playlist, body.len());
    // A blocking reload's answer is for that URL only and may be cached as long as a part lasts;
    // the bare playlist changes with every part.
    let cache = if block.is_some() { "max-age=1" } else { "max-age=0, no-cache" };
    reply(body, PLAYLIST, cache, None)
}
