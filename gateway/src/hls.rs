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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use egress::hls::{HlsConfig, Segmenter, Segmenting};
use egress::llhls::{LlHlsConfig, LlSegmenter, PartLookup};
use media::{StreamKey, Subscriber};
use serde::Deserialize;
use tokio::sync::Notify;
use tracing::{debug, Instrument};

use crate::config::HlsSection;
use crate::http::{plain, stream_key_or_400};
use crate::state::{AppState, SharedState};

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

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Which segmenter kind a request is for.
pub(crate) trait Kind: Segmenting + Sized {
    const PROTOCOL: &'static str;
    /// Complete segments the first playlist request waits for.
    const START_SEGMENTS: usize;
    fn streams(st: &AppState) -> &HlsStreams<Self>;
    fn make(config: &HlsSection, first_sequence: u64) -> Self;
    /// The segment being built reached the target duration without a keyframe.
    fn overdue(&self) -> bool {
        self.building_ms() >= self.target_duration_ms()
    }
}

impl Kind for Segmenter {
    const PROTOCOL: &'static str = "hls";
    const START_SEGMENTS: usize = START_SEGMENTS;
    fn streams(st: &AppState) -> &HlsStreams<Self> {
        &st.hls.classic
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
    fn streams(st: &AppState) -> &HlsStreams<Self> {
        &st.hls.ll
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
async fn open<S: Kind>(st: &SharedState, key: &StreamKey) -> Option<Arc<HlsStream<S>>> {
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
            let first_sequence = u64::try_from(unix_ms() / 100).unwrap_or(0);
            let s = Arc::new(HlsStream {
                segmenter: Mutex::new(S::make(&st.config.hls, first_sequence)),
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
async fn run<S: Kind>(st: SharedState, key: StreamKey, s: Arc<HlsStream<S>>, mut sub: Subscriber) {
    let c = &st.config.hls;
    let idle = Duration::from_millis(c.idle_timeout_ms);
    let grace = Duration::from_millis(c.reconnect_grace_ms);
    let keep_ended = Duration::from_millis(c.keep_ended_ms);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_keyframe_request: Option<Instant> = None;
    'publisher: loop {
        // The publisher is live.
        loop {
            tokio::select! {
                ev = sub.recv() => {
                    let Some(ev) = ev else { break };
                    let mut overdue = false;
                    s.update(|seg| {
                        let changed = seg.push(&ev, unix_ms());
                        overdue = seg.overdue();
                        changed
                    });
                    if overdue && last_keyframe_request.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        sub.request_keyframe();
                        last_keyframe_request = Some(Instant::now());
                    }
                }
                _ = tick.tick() => {
                    if s.idle_for() > idle {
                        debug!("no HLS request for {idle:?}: segmenter stopped");
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
            if gone.elapsed() < grace + keep_ended && s.idle_for() <= idle {
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
            if gone.elapsed() >= grace && !s.segmenter().is_ended() {
                s.update(|seg| {
                    seg.end();
                    true
                });
            }
            if gone.elapsed() >= grace + keep_ended || s.idle_for() > idle {
                remove(&st, &key, &s);
                return;
            }
        }
    }
}

fn remove<S: Kind>(st: &AppState, key: &StreamKey, s: &Arc<HlsStream<S>>) {
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
pub async fn classic(st: &SharedState, app: &str, file: &str, method: &Method, headers: &HeaderMap) -> Option<Response> {
    if let Some(stream) = file.strip_suffix(".m3u8") {
        let key = match stream_key_or_400(app, stream) {
            Ok(k) => k,
            Err(r) => return Some(*r),
        };
        let Some(hls) = open::<Segmenter>(st, &key).await else {
            return Some(plain(StatusCode::NOT_FOUND, format!("{key} is not live")));
        };
        let body = hls.playlist();
        st.hls.classic.counters.count(Object::Playlist, body.len());
        // A CDN may cache the playlist for one segment (s-maxage); a browser must not: hls.js
        // reloads half a target after an unchanged playlist, and a cached copy then hid a new
        // segment for another second, enough to stall a player two segments behind the edge.
        return Some(reply(body, PLAYLIST, "max-age=0, s-maxage=1", None));
    }
    let (stream, seq) = file.strip_suffix(".ts")?.rsplit_once('-')?;
    let key = match stream_key_or_400(app, stream) {
        Ok(k) => k,
        Err(r) => return Some(*r),
    };
    let hls = st.hls.classic.get(&key);
    let seg = seq.parse::<u64>().ok().and_then(|n| hls.as_ref()?.segmenter().segment(n));
    let (Some(hls), Some(seg)) = (hls, seg) else {
        return Some(plain(
            StatusCode::NOT_FOUND,
            format!("segment {seq} of {key} is not (or no longer) available"),
        ));
    };
    let etag = format!("\"{}-{}\"", hls.epoch, seg.sequence);
    let len = seg.data.len();
    let counters = (&st.hls.classic.counters, Object::Segment);
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
pub async fn ll(
    State(st): State<SharedState>,
    Path((app, file)): Path<(String, String)>,
    Query(q): Query<Blocking>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if let Some(stream) = file.strip_suffix(".m3u8") {
        return ll_playlist(&st, &app, stream, q).await;
    }
    let Some((stream, name)) = file
        .strip_suffix(".m4s")
        .or_else(|| file.strip_suffix(".mp4"))
        .and_then(|f| f.rsplit_once('-'))
    else {
        return plain(StatusCode::NOT_FOUND, "LL-HLS URLs end in .m3u8, .m4s or .mp4");
    };
    let key = match stream_key_or_400(&app, stream) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let missing = || plain(StatusCode::NOT_FOUND, format!("{file} of {key} is not (or no longer) available"));
    let Some(hls) = st.hls.ll.get(&key) else { return missing() };
    let etag = format!("\"{}-{name}\"", hls.epoch);
    if file.ends_with(".mp4") {
        let init = name
            .strip_prefix("init")
            .and_then(|id| id.parse().ok())
            .and_then(|id| hls.segmenter().init(id));
        return match init {
            Some(b) => {
                let len = b.len();
                let counters = (&st.hls.ll.counters, Object::Init);
                media_reply(counters, &headers, &method, Body::from(b), len, "video/mp4", etag)
            }
            None => missing(),
        };
    }
    let parsed = match name.split_once('.') {
        None => name.parse::<u64>().ok().map(|m| (m, None)),
        Some((m, p)) => m.parse::<u64>().ok().zip(p.parse::<usize>().ok()).map(|(m, p)| (m, Some(p))),
    };
    let Some((msn, part)) = parsed else { return missing() };
    let Some(part) = part else {
        let Some(seg) = hls.segmenter().segment(msn) else {
            return missing();
        };
        let len = seg.len();
        let chunks: Vec<Result<Bytes, std::convert::Infallible>> = seg.parts.iter().map(|p| Ok(p.data.clone())).collect();
        return media_reply(
            (&st.hls.ll.counters, Object::Segment),
            &headers,
            &method,
            Body::from_stream(futures_util::stream::iter(chunks)),
            len,
            "video/mp4",
            etag,
        );
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
            let counters = (&st.hls.ll.counters, Object::Part);
            media_reply(counters, &headers, &method, Body::from(p.data.clone()), len, "video/mp4", etag)
        }
        None => missing(),
    }
}

fn block_limit(hls: &HlsStream<LlSegmenter>) -> Duration {
    let target = u64::try_from(hls.segmenter().target_duration_ms()).unwrap_or(1000);
    Duration::from_millis(target) * BLOCK_TARGETS
}

async fn ll_playlist(st: &SharedState, app: &str, stream: &str, q: Blocking) -> Response {
    let key = match stream_key_or_400(app, stream) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let number = |v: &Option<String>| v.as_deref().map(str::parse::<u64>).transpose();
    let (Ok(msn), Ok(part)) = (number(&q.msn), number(&q.part)) else {
        return plain(StatusCode::BAD_REQUEST, "_HLS_msn and _HLS_part are non-negative integers");
    };
    if part.is_some() && msn.is_none() {
        return plain(StatusCode::BAD_REQUEST, "_HLS_part needs _HLS_msn");
    }
    let Some(hls) = open::<LlSegmenter>(st, &key).await else {
        return plain(StatusCode::NOT_FOUND, format!("{key} is not live"));
    };
    if let Some(msn) = msn {
        let max = hls.segmenter().max_blocking_msn();
        if msn > max {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("_HLS_msn={msn} is more than two segments past the live edge ({max} at most)"),
            );
        }
        // RFC 8216bis: a part too far past the live edge is a 400, not a long wait. No segment
        // holds more parts than its longest possible duration allows.
        let c = &st.config.hls;
        let most_parts = c.segment_ms.saturating_mul(10) / c.part_ms.max(1) + 2;
        if part.is_some_and(|p| p > most_parts) {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("_HLS_part is past what a segment can hold ({most_parts})"),
            );
        }
        let part = part.and_then(|p| usize::try_from(p).ok());
        let deadline = tokio::time::Instant::now() + block_limit(&hls);
        if !hls.wait_for(deadline, |s| s.ready(msn, part)).await {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "the playlist did not reach that segment in time");
        }
    }
    let body = hls.playlist();
    st.hls.ll.counters.count(Object::Playlist, body.len());
    // A blocking reload's answer is for that URL only and may be cached as long as a part lasts;
    // the bare playlist changes with every part.
    let cache = if msn.is_some() { "max-age=1" } else { "max-age=0, no-cache" };
    reply(body, PLAYLIST, cache, None)
}
