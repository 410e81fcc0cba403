//! streamgate's shared core.
//!
//! * [`frame`]: the internal frame model every ingest produces and every egress consumes.
//! * [`avc`] and [`aac`]: codec configuration (ISO 14496-15 AVCDecoderConfigurationRecord with SPS
//!   parsing, ISO 14496-3 AudioSpecificConfig) and bitstream conversions.
//! * [`key`]: validated stream keys (`{app}/{stream}`).
//! * [`gop`]: the GOP cache new viewers start from.
//! * [`hub`]: the registry of live streams with GOP cache and bounded per-viewer queues.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod aac;
pub mod avc;
mod bits;
pub mod flv;
pub mod frame;
pub mod gop;
pub mod hub;
pub mod key;

pub use frame::{AudioConfig, Codec, CodecSet, MediaFrame, MuxSlot, Timebase, TrackKind, VideoConfig, MUX_SLOTS};
pub use hub::{unix_ms, Hub, HubConfig, HubError, HubEvent, Publisher, Reservation, Subscriber};
pub use key::{KeyError, StreamKey};
