//! RTMP play: hub events as RTMP messages for a player (ffplay, VLC, OBS media source).

use bytes::{Bytes, BytesMut};
use media::{HubEvent, MediaFrame, TrackKind};
use rtmp::chunk::{encode_message, types};
use rtmp::session::csid;

use crate::flv::{self, AUDIO_FRAME_PREFIX};
use crate::viewer::{timestamp_ms, Step, ViewerState};

/// The message stream id and chunk size whose frame encodings are cached and shared. Our server
/// session always answers the first createStream with 1 and sends with chunk size 4096.
pub const SHARED_STREAM_ID: u32 = 1;
/// See [`SHARED_STREAM_ID`].
pub const SHARED_CHUNK_SIZE: usize = 4096;

fn encode_frame(f: &MediaFrame, stream_id: u32, chunk_size: usize) -> Bytes {
    let ts = timestamp_ms(f.dts_ms());
    let mut body = BytesMut::with_capacity(f.data.len() + 5);
    let (cs, ty) = match f.track {
        TrackKind::Video => {
            body.extend_from_slice(&flv::video_frame_prefix(f));
            (csid::VIDEO, types::VIDEO)
        }
        TrackKind::Audio => {
            body.extend_from_slice(&AUDIO_FRAME_PREFIX);
            (csid::AUDIO, types::AUDIO)
        }
    };
    body.extend_from_slice(&f.data);
    let mut out = BytesMut::with_capacity(body.len() + 32 + body.len() / chunk_size.max(1) * 5);
    encode_message(&mut out, cs, ts, ty, stream_id, &body, chunk_size);
    out.freeze()
}

/// Per-player state: metadata and sequence headers first and on change, then shared frames.
pub struct RtmpPlayViewer {
    stream_id: u32,
    chunk_size: usize,
    state: ViewerState,
}

impl RtmpPlayViewer {
    /// For a player on message stream `stream_id` whose session sends with `chunk_size`.
    pub fn new(stream_id: u32, chunk_size: usize) -> Self {
        Self {
            stream_id,
            chunk_size,
            state: ViewerState::new(),
        }
    }

    /// Appends the chunk bytes this event produces for the player.
    pub fn on_event(&mut self, ev: HubEvent, out: &mut Vec<Bytes>) {
        let (sid, cs) = (self.stream_id, self.chunk_size);
        let message = |out: &mut Vec<Bytes>, csid: u32, ts: u32, ty: u8, body: &[u8]| {
            let mut b = BytesMut::with_capacity(body.len() + 32);
            encode_message(&mut b, csid, ts, ty, sid, body, cs);
            out.push(b.freeze());
        };
        self.state.on_event(ev, |step| match step {
            Step::Start { video, audio, ts, .. } => {
                message(out, csid::STATUS, 0, types::DATA_AMF0, &flv::metadata_body(video, audio));
                if let Some(v) = video {
                    message(out, csid::VIDEO, ts, types::VIDEO, &flv::video_config_body(v));
                }
                if let Some(a) = audio {
                    message(out, csid::AUDIO, ts, types::AUDIO, &flv::audio_config_body(a));
                }
            }
            Step::VideoConfig(c, ts) => message(out, csid::VIDEO, ts, types::VIDEO, &flv::video_config_body(c)),
            Step::AudioConfig(c, ts) => message(out, csid::AUDIO, ts, types::AUDIO, &flv::audio_config_body(c)),
            Step::Frame(f) if sid == SHARED_STREAM_ID && cs == SHARED_CHUNK_SIZE => {
                out.push(f.muxed(crate::slots::RTMP_PLAY, |f| encode_frame(f, SHARED_STREAM_ID, SHARED_CHUNK_SIZE)))
            }
            Step::Frame(f) => out.push(encode_frame(f, sid, cs)),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use media::AudioConfig;
    use media::Timebase;
    use rtmp::chunk::{ChunkDecoder, ChunkLimits};

    #[test]
    fn player_receives_metadata_config_then_frames() {
        let mut v = RtmpPlayViewer::new(1, 4096);
        let mut out = Vec::new();
        let ac = Arc::new(AudioConfig::from_asc(Bytes::from_static(&[0x12, 0x10])).unwrap());
        v.on_event(HubEvent::AudioConfig(ac), &mut out);
        let big = Bytes::from(vec![7u8; 10_000]);
        let f = Arc::new(MediaFrame::audio(1000, Timebase::MILLIS, big.clone()));
        v.on_event(HubEvent::Frame(f.clone()), &mut out);
        let mut v2 = RtmpPlayViewer::new(1, 4096);
        let mut out2 = Vec::new();
        v2.on_event(
            HubEvent::AudioConfig(Arc::new(AudioConfig::from_asc(Bytes::from_static(&[0x12, 0x10])).unwrap())),
            &mut out2,
        );
        v2.on_event(HubEvent::Frame(f), &mut out2);
        assert_eq!(
            out.last().unwrap().as_ptr(),
            out2.last().unwrap().as_ptr(),
            "frame bytes shared between players"
        );

        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        dec.set_chunk_size(4096);
        for b in &out {
            dec.push(b);
        }
        let mut msgs = Vec::new();
        while let Some(m) = dec.next_message().unwrap() {
            msgs.push(m);
        }
        let kinds: Vec<(u8, u32)> = msgs.iter().map(|m| (m.type_id, m.timestamp)).collect();
        assert_eq!(kinds, vec![(types::DATA_AMF0, 0), (types::AUDIO, 1000), (types::AUDIO, 1000)]);
        assert_eq!(&msgs[1].payload[..], &[0xaf, 0, 0x12, 0x10]);
        assert_eq!(msgs[2].payload.len(), 10_002);
        assert_eq!(&msgs[2].payload[2..], &big[..]);
    }
}
