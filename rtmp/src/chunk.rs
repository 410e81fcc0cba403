//! The chunk stream (spec §5.3): reassembly of messages from interleaved chunks, and the encoder.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Message type ids (spec §5.4, §7.1).
pub mod types {
    /// Set Chunk Size.
    pub const SET_CHUNK_SIZE: u8 = 1;
    /// Abort Message.
    pub const ABORT: u8 = 2;
    /// Acknowledgement.
    pub const ACK: u8 = 3;
    /// User Control Message.
    pub const USER_CONTROL: u8 = 4;
    /// Window Acknowledgement Size.
    pub const WINDOW_ACK_SIZE: u8 = 5;
    /// Set Peer Bandwidth.
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    /// Audio data (an FLV audio tag body).
    pub const AUDIO: u8 = 8;
    /// Video data (an FLV video tag body).
    pub const VIDEO: u8 = 9;
    /// Data message, AMF3.
    pub const DATA_AMF3: u8 = 15;
    /// Command message, AMF3.
    pub const COMMAND_AMF3: u8 = 17;
    /// Data message, AMF0 (`@setDataFrame`, `onMetaData`).
    pub const DATA_AMF0: u8 = 18;
    /// Command message, AMF0.
    pub const COMMAND_AMF0: u8 = 20;
}

/// Largest chunk size a peer may set: the 31-bit field of Set Chunk Size allows more, but a chunk
/// never needs to exceed the largest message we accept.
pub const MAX_CHUNK_SIZE: u32 = 0x00ff_ffff;

/// One reassembled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpMessage {
    /// Chunk stream it arrived on.
    pub csid: u32,
    /// Absolute timestamp in milliseconds (32-bit, wrapping).
    pub timestamp: u32,
    /// Message type id.
    pub type_id: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// Payload.
    pub payload: Bytes,
}

/// Errors that end the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkError {
    /// A type 1, 2 or 3 chunk on a chunk stream that never had a type 0 header.
    #[error("chunk stream {0} continues a header it never sent")]
    NoPreviousHeader(u32),
    /// Message length over the configured limit.
    #[error("message of {0} bytes exceeds the limit of {1} bytes")]
    MessageTooLarge(u32, usize),
    /// Set Chunk Size with 0 or more than [`MAX_CHUNK_SIZE`].
    #[error("invalid chunk size {0}")]
    BadChunkSize(u32),
    /// More concurrent chunk streams than the limit.
    #[error("more than {0} chunk streams")]
    TooManyChunkStreams(usize),
    /// A control message with a short payload.
    #[error("malformed protocol control message of type {0}")]
    BadControl(u8),
}

/// Limits that bound what one peer can make us hold.
#[derive(Debug, Clone)]
pub struct ChunkLimits {
    /// Largest message accepted.
    pub max_message_size: usize,
    /// Most chunk streams tracked at once.
    pub max_chunk_streams: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        Self {
            max_message_size: 8 << 20,
            max_chunk_streams: 64,
        }
    }
}

#[derive(Default)]
struct ChunkStream {
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended: bool,
    partial: Option<BytesMut>,
}

/// Reassembles messages from a chunk stream. Feed bytes with [`push`](Self::push), take
/// messages with [`next_message`](Self::next_message).
pub struct ChunkDecoder {
    buf: BytesMut,
    chunk_size: usize,
    streams: HashMap<u32, ChunkStream>,
    limits: ChunkLimits,
    buffered: usize,
}

enum Chunk {
    Incomplete,
    Consumed,
    Message(RtmpMessage),
}

struct Header {
    fmt: u8,
    csid: u32,
    len: usize,
    ts_field: u32,
    length: Option<u32>,
    type_id: Option<u8>,
    stream_id: Option<u32>,
    extended: bool,
}

impl ChunkDecoder {
    /// A decoder with the spec's initial chunk size of 128.
    pub fn new(limits: ChunkLimits) -> Self {
        Self {
            buf: BytesMut::new(),
            chunk_size: 128,
            streams: HashMap::new(),
            limits,
            buffered: 0,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet consumed, plus partial messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.buffered
    }

    /// Sets the peer's chunk size, as a Set Chunk Size from it would (for a decoder that joins
    /// a chunk stream after that message, e.g. a player's view of our output).
    pub fn set_chunk_size(&mut self, size: usize) {
        self.chunk_size = size.clamp(1, MAX_CHUNK_SIZE as usize);
    }

    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Returns the next complete message, `Ok(None)` when more bytes are needed.
    /// Set Chunk Size and Abort are applied here and also returned.
    pub fn next_message(&mut self) -> Result<Option<RtmpMessage>, ChunkError> {
        loop {
            let Some(header) = self.parse_header()? else {
                return Ok(None);
            };
            match self.take_chunk(header) {
                Chunk::Incomplete => return Ok(None),
                Chunk::Consumed => {}
                Chunk::Message(msg) => {
                    self.apply_control(&msg)?;
                    return Ok(Some(msg));
                }
            }
        }
    }

    fn parse_header(&self) -> Result<Option<Header>, ChunkError> {
        let b = &self.buf[..];
        let Some(&first) = b.first() else {
            return Ok(None);
        };
        let fmt = first >> 6;
        let (csid, mut pos) = match first & 0x3f {
            0 => match b.get(1) {
                Some(&x) => (64 + u32::from(x), 2),
                None => return Ok(None),
            },
            1 => match (b.get(1), b.get(2)) {
                (Some(&x), Some(&y)) => (64 + u32::from(x) + 256 * u32::from(y), 3),
                _ => return Ok(None),
            },
            c => (u32::from(c), 1),
        };
        let mh_len = [11, 7, 3, 0][usize::from(fmt)];
        let Some(mh) = b.get(pos..pos + mh_len) else {
            return Ok(None);
        };
        pos += mh_len;
        let prev = self.streams.get(&csid);
        if fmt != 0 && prev.is_none() {
            return Err(ChunkError::NoPreviousHeader(csid));
        }
        if prev.is_none() && self.streams.len() >= self.limits.max_chunk_streams {
            return Err(ChunkError::TooManyChunkStreams(self.limits.max_chunk_streams));
        }
        let be24 = |s: &[u8]| (u32::from(s[0]) << 16) | (u32::from(s[1]) << 8) | u32::from(s[2]);
        let ts_field = if fmt < 3 { be24(&mh[0..3]) } else { 0 };
        let (length, type_id) = if fmt < 2 {
            (Some(be24(&mh[3..6])), Some(mh[6]))
        } else {
            (None, None)
        };
        let stream_id = if fmt == 0 {
            Some(u32::from_le_bytes([mh[7], mh[8], mh[9], mh[10]]))
        } else {
            None
        };
        // Type 3 chunks carry the extended timestamp again when the header they continue did
        // (spec §5.3.1.3; FFmpeg, OBS and nginx-rtmp all write it).
        let extended = if fmt < 3 {
            ts_field == 0x00ff_ffff
        } else {
            prev.is_some_and(|p| p.extended)
        };
        let mut ts_field = ts_field;
        if extended {
            let Some(ext) = b.get(pos..pos + 4) else {
                return Ok(None);
            };
            ts_field = u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]);
            pos += 4;
        }
        if let Some(len) = length {
            if len as usize > self.limits.max_message_size {
                return Err(ChunkError::MessageTooLarge(len, self.limits.max_message_size));
            }
        }
        Ok(Some(Header {
            fmt,
            csid,
            len: pos,
            ts_field,
            length,
            type_id,
            stream_id,
            extended,
        }))
    }
}

impl ChunkDecoder {
    /// Consumes one chunk if all of it has arrived; state changes only then.
    fn take_chunk(&mut self, h: Header) -> Chunk {
        let (starting, length, type_id, have) = match self.streams.get(&h.csid) {
            Some(st) => {
                let starting = st.partial.is_none() || h.fmt != 3;
                let have = if starting { 0 } else { st.partial.as_ref().map_or(0, |p| p.len()) };
                (starting, h.length.unwrap_or(st.length), h.type_id.unwrap_or(st.type_id), have)
            }
            None => (true, h.length.unwrap_or(0), h.type_id.unwrap_or(0), 0),
        };
        let payload_len = (length as usize).saturating_sub(have).min(self.chunk_size);
        if self.buf.len() < h.len + payload_len {
            return Chunk::Incomplete;
        }
        let st = self.streams.entry(h.csid).or_default();
        self.buf.advance(h.len);
        let payload = self.buf.split_to(payload_len);
        if starting {
            if let Some(old) = st.partial.take() {
                // A new header while a message was incomplete: the old one is abandoned.
                self.buffered -= old.len();
            }
            match h.fmt {
                0 => {
                    st.timestamp = h.ts_field;
                    // FFmpeg's reading: a type 3 chunk starting the next message adds this.
                    st.delta = h.ts_field;
                }
                1 | 2 => {
                    st.delta = h.ts_field;
                    st.timestamp = st.timestamp.wrapping_add(h.ts_field);
                }
                _ => st.timestamp = st.timestamp.wrapping_add(st.delta),
            }
            st.length = length;
            st.type_id = type_id;
            if let Some(sid) = h.stream_id {
                st.stream_id = sid;
            }
            if h.fmt < 3 {
                st.extended = h.extended;
            }
            // Grow with what arrives rather than trusting the announced length up front.
            st.partial = Some(BytesMut::with_capacity((length as usize).min(64 * 1024)));
        }
        let Some(partial) = st.partial.as_mut() else {
            return Chunk::Consumed;
        };
        partial.extend_from_slice(&payload);
        self.buffered += payload.len();
        if partial.len() < length as usize {
            return Chunk::Consumed;
        }
        let data = st.partial.take().map(BytesMut::freeze).unwrap_or_default();
        self.buffered -= data.len();
        Chunk::Message(RtmpMessage {
            csid: h.csid,
            timestamp: st.timestamp,
            type_id: st.type_id,
            stream_id: st.stream_id,
            payload: data,
        })
    }

    fn apply_control(&mut self, msg: &RtmpMessage) -> Result<(), ChunkError> {
        if msg.stream_id != 0 && msg.csid != 2 {
            return Ok(());
        }
        let word = || -> Result<u32, ChunkError> {
            let p = msg.payload.get(..4).ok_or(ChunkError::BadControl(msg.type_id))?;
            Ok(u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
        };
        match msg.type_id {
            types::SET_CHUNK_SIZE => {
                let size = word()? & 0x7fff_ffff;
                if size == 0 || size > MAX_CHUNK_SIZE {
                    return Err(ChunkError::BadChunkSize(size));
                }
                self.chunk_size = size as usize;
            }
            types::ABORT => {
                let csid = word()?;
                if let Some(st) = self.streams.get_mut(&csid) {
                    if let Some(p) = st.partial.take() {
                        self.buffered -= p.len();
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn put_basic_header(out: &mut BytesMut, fmt: u8, csid: u32) {
    match csid {
        2..=63 => out.put_u8((fmt << 6) | csid as u8),
        64..=319 => {
            out.put_u8(fmt << 6);
            out.put_u8((csid - 64) as u8);
        }
        _ => {
            let id = csid.clamp(320, 65599) - 64;
            out.put_u8((fmt << 6) | 1);
            out.put_u8((id & 0xff) as u8);
            out.put_u8((id >> 8) as u8);
        }
    }
}

/// Appends `payload` as one message: a type 0 chunk, then type 3 chunks of `chunk_size`.
///
/// Every message carries a full header, so the bytes depend only on the arguments and can be
/// computed once and sent to every player of a stream.
pub fn encode_message(out: &mut BytesMut, csid: u32, timestamp: u32, type_id: u8, stream_id: u32, payload: &[u8], chunk_size: usize) {
    let chunk_size = chunk_size.max(1);
    let extended = timestamp >= 0x00ff_ffff;
    let chunks = payload.len().div_ceil(chunk_size).max(1);
    out.reserve(payload.len() + 12 + 4 + (chunks - 1) * (1 + 4 * usize::from(extended)));
    put_basic_header(out, 0, csid);
    let ts_field = timestamp.min(0x00ff_ffff);
    out.put_slice(&ts_field.to_be_bytes()[1..]);
    out.put_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.put_u8(type_id);
    out.put_u32_le(stream_id);
    if extended {
        out.put_u32(timestamp);
    }
    for (i, chunk) in payload.chunks(chunk_size).enumerate() {
        if i > 0 {
            put_basic_header(out, 3, csid);
            if extended {
                out.put_u32(timestamp);
            }
        }
        out.put_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(dec: &mut ChunkDecoder) -> Vec<RtmpMessage> {
        let mut out = Vec::new();
        while let Some(m) = dec.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn hand_vector_single_chunk() {
        // fmt 0, csid 3, ts 1000, len 5, type 20, stream 0, payload "hello".
        let bytes = [
            0x03, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x05, 0x14, 0, 0, 0, 0, b'h', b'e', b'l', b'l', b'o',
        ];
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        dec.push(&bytes);
        let m = dec.next_message().unwrap().unwrap();
        assert_eq!((m.csid, m.timestamp, m.type_id, m.stream_id), (3, 1000, 20, 0));
        assert_eq!(&m.payload[..], b"hello");
        let mut enc = BytesMut::new();
        encode_message(&mut enc, 3, 1000, 20, 0, b"hello", 128);
        assert_eq!(&enc[..], &bytes[..]);
    }

    /// Audio (csid 4) and video (csid 6) messages whose chunks alternate mid-message, as OBS 30+
    /// and FFmpeg 6.1+ write them. rml_rtmp 0.8 panics on exactly this.
    #[test]
    fn interleaved_chunk_streams_mid_message() {
        let video: Vec<u8> = (0..300).map(|i| i as u8).collect();
        let audio: Vec<u8> = (0..200).map(|i| (i * 7) as u8).collect();
        let mut b = BytesMut::new();
        // video chunk 1: fmt0 csid 6, ts 40, len 300, type 9, msid 1
        b.put_slice(&[0x06, 0, 0, 40, 0, 0x01, 0x2c, 9, 1, 0, 0, 0]);
        b.put_slice(&video[..128]);
        // audio chunk 1: fmt0 csid 4, ts 23, len 200, type 8, msid 1
        b.put_slice(&[0x04, 0, 0, 23, 0, 0, 200, 8, 1, 0, 0, 0]);
        b.put_slice(&audio[..128]);
        // video chunk 2 (fmt3)
        b.put_u8(0xc6);
        b.put_slice(&video[128..256]);
        // audio chunk 2 (fmt3): audio completes first
        b.put_u8(0xc4);
        b.put_slice(&audio[128..]);
        // video chunk 3
        b.put_u8(0xc6);
        b.put_slice(&video[256..]);
        // next video message, fmt 2 (delta 33), 300 bytes same type
        b.put_slice(&[0x86, 0, 0, 33]);
        b.put_slice(&video[..128]);
        b.put_u8(0xc6);
        b.put_slice(&video[128..256]);
        b.put_u8(0xc6);
        b.put_slice(&video[256..]);
        // next video message with a fmt3 start: timestamp advances by the delta again
        b.put_u8(0xc6);
        b.put_slice(&video[..128]);
        b.put_u8(0xc6);
        b.put_slice(&video[128..256]);
        b.put_u8(0xc6);
        b.put_slice(&video[256..]);

        // Feed in every split to prove partial input never corrupts state.
        for step in [1usize, 3, 7, 129, b.len()] {
            let mut dec = ChunkDecoder::new(ChunkLimits::default());
            let mut got = Vec::new();
            for piece in b.chunks(step) {
                dec.push(piece);
                got.extend(decode_all(&mut dec));
            }
            let summary: Vec<_> = got.iter().map(|m| (m.csid, m.timestamp, m.type_id, m.payload.len())).collect();
            assert_eq!(
                summary,
                vec![(4, 23, 8, 200), (6, 40, 9, 300), (6, 73, 9, 300), (6, 106, 9, 300)],
                "step {step}"
            );
            assert_eq!(&got[0].payload[..], &audio[..]);
            assert!(got[1..].iter().all(|m| m.payload[..] == video[..]));
            assert_eq!(dec.buffered(), 0);
        }
    }

    #[test]
    fn extended_timestamps_round_trip() {
        let payload = vec![0x5a; 1000];
        let mut enc = BytesMut::new();
        encode_message(&mut enc, 6, 0x0100_0000, 9, 1, &payload, 128);
        // fmt3 chunks repeat the 4-byte extended timestamp.
        assert_eq!(enc.len(), 12 + 4 + 1000 + 7 * (1 + 4));
        encode_message(&mut enc, 6, 0x0100_0021, 9, 1, &payload, 128);
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        dec.push(&enc);
        let got = decode_all(&mut dec);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].timestamp, 0x0100_0000);
        assert_eq!(got[1].timestamp, 0x0100_0021);
        assert!(got.iter().all(|m| m.payload[..] == payload[..]));
    }

    #[test]
    fn extended_delta_on_type1() {
        let mut b = BytesMut::new();
        b.put_slice(&[0x04, 0, 0, 10, 0, 0, 1, 8, 1, 0, 0, 0, 0xaa]);
        // fmt1 with delta field 0xffffff -> extended delta 0x01000000
        b.put_slice(&[0x44, 0xff, 0xff, 0xff, 0, 0, 1, 8, 0x01, 0, 0, 0, 0xbb]);
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        dec.push(&b);
        let got = decode_all(&mut dec);
        assert_eq!(got[1].timestamp, 10 + 0x0100_0000);
    }

    #[test]
    fn chunk_size_change_applies_to_following_chunks() {
        let mut b = BytesMut::new();
        encode_message(&mut b, 2, 0, types::SET_CHUNK_SIZE, 0, &4096u32.to_be_bytes(), 128);
        let big = vec![1u8; 5000];
        encode_message(&mut b, 6, 0, 9, 1, &big, 4096);
        encode_message(&mut b, 2, 0, types::SET_CHUNK_SIZE, 0, &100u32.to_be_bytes(), 4096);
        encode_message(&mut b, 6, 5, 9, 1, &big, 100);
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        dec.push(&b);
        let got = decode_all(&mut dec);
        assert_eq!(got.iter().map(|m| m.payload.len()).collect::<Vec<_>>(), vec![4, 5000, 4, 5000]);
        assert_eq!(dec.chunk_size(), 100);
    }

    #[test]
    fn abort_discards_partial() {
        let mut b = BytesMut::new();
        b.put_slice(&[0x06, 0, 0, 0, 0, 1, 0, 9, 1, 0, 0, 0]);
        b.put_slice(&[0; 128]); // 128 of 256
        encode_message(&mut b, 2, 0, types::ABORT, 0, &6u32.to_be_bytes(), 128);
        encode_message(&mut b, 6, 40, 9, 1, b"new", 128);
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        dec.push(&b);
        let got = decode_all(&mut dec);
        assert_eq!(got.len(), 2);
        assert_eq!(&got[1].payload[..], b"new");
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn hostile_inputs_are_errors() {
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        dec.push(&[0x46, 0, 0, 0, 0, 0, 1, 9]);
        assert_eq!(dec.next_message(), Err(ChunkError::NoPreviousHeader(6)));

        let mut dec = ChunkDecoder::new(ChunkLimits {
            max_message_size: 1000,
            ..Default::default()
        });
        dec.push(&[0x06, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0]);
        assert_eq!(dec.next_message(), Err(ChunkError::MessageTooLarge(0xffffff, 1000)));

        for size in [0u32, 0x7fff_ffff, 0x0100_0000] {
            let mut b = BytesMut::new();
            encode_message(&mut b, 2, 0, types::SET_CHUNK_SIZE, 0, &size.to_be_bytes(), 128);
            let mut dec = ChunkDecoder::new(ChunkLimits::default());
            dec.push(&b);
            assert_eq!(dec.next_message(), Err(ChunkError::BadChunkSize(size & 0x7fff_ffff)));
        }

        let mut b = BytesMut::new();
        encode_message(&mut b, 2, 0, types::SET_CHUNK_SIZE, 0, &[1, 2], 128);
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        dec.push(&b);
        assert_eq!(dec.next_message(), Err(ChunkError::BadControl(1)));

        let mut dec = ChunkDecoder::new(ChunkLimits {
            max_chunk_streams: 4,
            ..Default::default()
        });
        for csid in 3..10u8 {
            // Start (but never finish) a message on each chunk stream.
            dec.push(&[csid, 0, 0, 0, 0, 1, 0, 9, 1, 0, 0, 0]);
            dec.push(&[0; 128]);
        }
        let mut result = Ok(None);
        for _ in 0..10 {
            result = dec.next_message();
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ChunkError::TooManyChunkStreams(4)));
    }

    #[test]
    fn large_csids() {
        for csid in [2u32, 63, 64, 319, 320, 65599] {
            let mut b = BytesMut::new();
            encode_message(&mut b, csid, 1, 9, 1, &[1, 2, 3], 128);
            let mut dec = ChunkDecoder::new(ChunkLimits::default());
            dec.push(&b);
            assert_eq!(dec.next_message().unwrap().unwrap().csid, csid);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut dec = ChunkDecoder::new(ChunkLimits {
                max_message_size: 1 << 16,
                max_chunk_streams: 8,
            });
            let mut data = Vec::with_capacity(256);
            for _ in 0..256 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.push(x as u8);
            }
            dec.push(&data);
            for _ in 0..64 {
                match dec.next_message() {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            assert!(dec.buffered() <= 256 + (1 << 16) * 8);
        }
    }
}
