//! What every viewer of a live stream needs, whatever the container: a start (header, metadata
//! and sequence headers) before its first decodable frame, a sequence header again when (and
//! only when) the configuration changes, then frames.

use std::sync::Arc;

use media::hub::Tracks;
use media::{AudioConfig, HubEvent, MediaFrame, TrackKind, VideoConfig};

/// One thing to send, for a container-specific writer to turn into bytes.
pub enum Step<'a> {
    /// Before the first frame: which tracks, their configurations, the first frame's timestamp.
    Start {
        /// Tracks with a configuration (what the publisher really sends).
        tracks: Tracks,
        /// Current video configuration.
        video: Option<&'a VideoConfig>,
        /// Current audio configuration.
        audio: Option<&'a AudioConfig>,
        /// Timestamp (ms) of the first frame.
        ts: u32,
    },
    /// The video configuration changed; `ts` is the viewer's current timestamp (ms).
    VideoConfig(&'a VideoConfig, u32),
    /// The audio configuration changed.
    AudioConfig(&'a AudioConfig, u32),
    /// A frame.
    Frame(&'a MediaFrame),
}

/// Per-viewer state shared by every container.
#[derive(Default)]
pub struct ViewerState {
    started: bool,
    video: Option<Arc<VideoConfig>>,
    audio: Option<Arc<AudioConfig>>,
    last_ts: u32,
}

/// Container timestamps are 32-bit milliseconds; negative ones are clamped to 0.
pub fn timestamp_ms(ms: i64) -> u32 {
    ms.max(0) as u32
}

impl ViewerState {
    /// A viewer that has received nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// True once the start went out.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Calls `emit` for every step this event produces.
    pub fn on_event(&mut self, ev: HubEvent, mut emit: impl FnMut(Step<'_>)) {
        match ev {
            HubEvent::VideoConfig(c) => {
                if self.started {
                    emit(Step::VideoConfig(&c, self.last_ts));
                }
                self.video = Some(c);
            }
            HubEvent::AudioConfig(c) => {
                if self.started {
                    emit(Step::AudioConfig(&c, self.last_ts));
                }
                self.audio = Some(c);
            }
            HubEvent::Frame(f) => {
                // FLV and RTMP carry H.264 and AAC; other codecs travel past them.
                if !f.codec.is_flv_family() {
                    return;
                }
                let has_config = match f.track {
                    TrackKind::Video => self.video.is_some(),
                    TrackKind::Audio => self.audio.is_some(),
                };
                if !has_config {
                    return; // undecodable without its sequence header
                }
                let ts = timestamp_ms(f.dts_ms());
                if !self.started {
                    self.started = true;
                    emit(Step::Start {
                        tracks: Tracks {
                            video: self.video.is_some(),
                            audio: self.audio.is_some(),
                        },
                        video: self.video.as_deref(),
                        audio: self.audio.as_deref(),
                        ts,
                    });
                }
                self.last_ts = ts;
                emit(Step::Frame(&f));
            }
        }
    }
}
