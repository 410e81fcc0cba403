//! Classic HLS over HTTP: `/{app}/{stream}.m3u8` and the segments beside it,
//! `/{app}/{stream}-{sequence}.ts`.
//!
//! A stream's segmenter starts on the first playlist request (like MediaMTX's default) as a hub
//! subscriber ("hls"), and stops when nobody asked for its playlist for [`IDLE`] or, after the
//! publisher left, once [`KEEP_ENDED`] has passed (the ended playlist, with EXT-X-ENDLIST, stays
//! readable until then). The first request waits for [`START_SEGMENTS`] segments, at most
//! [`FIRST_WAIT`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use egress::hls::{HlsConfig, Segment, Segmenter};
use media::StreamKey;
use tokio::sync::Notify;
use tracing::{debug, Instrument};

use crate::state::SharedState;

/// A segmenter nobody asked for this long stops.
pub const IDLE: Duration = Duration::from_secs(30);
/// An ended stream's playlist stays this long.
pub const KEEP_ENDED: Duration = Duration::from_secs(30);
/// The first playlist request waits for this many segments (players start a segment or two
/// behind the live edge; with only one listed they start at the edge and stall).
pub const START_SEGMENTS: usize = 2;
/// The first playlist request waits this long for them.
pub const FIRST_WAIT: Duration = Duration::from_secs(10);

/// One stream's HLS state.
pub struct HlsStream {
    segmenter: Mutex<Segmenter>,
    last_access: Mutex<Instant>,
    segment_ready: Notify,
}

impl HlsStream {
    fn segmenter(&self) -> MutexGuard<'_, Segmenter> {
        self.segmenter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn touch(&self) {
        *self.last_access.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_access.lock().unwrap_or_else(PoisonError::into_inner).elapsed()
    }

    /// The playlist, segment URIs relative to it.
    pub fn playlist(&self, stream: &str) -> String {
        self.touch();
        self.segmenter().playlist(&format!("{stream}-"))
    }

    /// A segment in the window.
    pub fn segment(&self, sequence: u64) -> Option<Arc<Segment>> {
        self.segmenter().segment(sequence)
    }

    /// Enough segments for a player to start a little behind the live edge.
    fn has_segments(&self) -> bool {
        let s = self.segmenter();
        s.len() >= START_SEGMENTS || s.is_ended()
    }
}

/// Every stream's HLS state.
#[derive(Default)]
pub struct HlsStreams {
    streams: Mutex<HashMap<StreamKey, Arc<HlsStream>>>,
}

impl HlsStreams {
    fn map(&self) -> MutexGuard<'_, HashMap<StreamKey, Arc<HlsStream>>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stream's HLS state if a segmenter runs (or its ended playlist is still kept).
    pub fn get(&self, key: &StreamKey) -> Option<Arc<HlsStream>> {
        self.map().get(key).cloned()
    }

    /// Segmenters running.
    pub fn len(&self) -> usize {
        self.map().len()
    }
}

/// The stream's HLS state, starting its segmenter if the stream is live; waits for the first
/// segment. None when the stream is not live and has no kept playlist.
pub async fn open(st: &SharedState, key: &StreamKey) -> Option<Arc<HlsStream>> {
    if let Some(s) = st.hls.get(key) {
        wait_first_segment(&s).await;
        return Some(s);
    }
    let mut sub = st.hub.subscribe(key, "hls").ok()?;
    let s = {
        let mut map = st.hls.map();
        if let Some(existing) = map.get(key) {
            existing.clone()
        } else {
            let s = Arc::new(HlsStream {
                segmenter: Mutex::new(Segmenter::new(HlsConfig::default())),
                last_access: Mutex::new(Instant::now()),
                segment_ready: Notify::new(),
            });
            map.insert(key.clone(), s.clone());
            let (task_s, task_st, task_key) = (s.clone(), st.clone(), key.clone());
            let span = tracing::info_span!("hls", key = %key);
            tokio::spawn(
                async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        tokio::select! {
                            ev = sub.recv() => {
                                let Some(ev) = ev else { break };
                                if task_s.segmenter().push(&ev) {
                                    task_s.segment_ready.notify_waiters();
                                }
                            }
                            _ = tick.tick() => {
                                if task_s.idle_for() > IDLE {
                                    debug!("no HLS request for {IDLE:?}: segmenter stopped");
                                    task_st.hls.map().remove(&task_key);
                                    return;
                                }
                            }
                        }
                    }
                    task_s.segmenter().end();
                    task_s.segment_ready.notify_waiters();
                    drop(sub);
                    tokio::time::sleep(KEEP_ENDED).await;
                    let mut map = task_st.hls.map();
                    if map.get(&task_key).is_some_and(|cur| Arc::ptr_eq(cur, &task_s)) {
                        map.remove(&task_key);
                    }
                }
                .instrument(span),
            );
            s
        }
    };
    wait_first_segment(&s).await;
    Some(s)
}

async fn wait_first_segment(s: &HlsStream) {
    let deadline = tokio::time::Instant::now() + FIRST_WAIT;
    while !s.has_segments() {
        let notified = s.segment_ready.notified();
        if s.has_segments() {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            break;
        }
    }
}
