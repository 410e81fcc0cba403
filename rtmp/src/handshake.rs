//! The RTMP handshake, server side (spec §5.2): C0+C1 -> S0+S1+S2, then C2.
//!
//! We answer with the "simple" handshake (S1 version bytes zero, S2 echoes C1). FFmpeg, OBS
//! (librtmp) and nginx-rtmp clients accept it; digest verification is only attempted by clients
//! when the server's S1 carries a version.

use bytes::{Buf, BytesMut};

/// Size of C1/C2/S1/S2.
pub const HANDSHAKE_SIZE: usize = 1536;

/// Handshake failures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// C0 asked for something other than RTMP version 3 (e.g. RTMPE, or not RTMP at all).
    #[error("unsupported RTMP version {0} in C0 (plain RTMP is version 3)")]
    BadVersion(u8),
}

/// Progress of [`ServerHandshake::push`].
#[derive(Debug, PartialEq, Eq)]
pub enum HandshakeProgress {
    /// More input is needed; send `out` if not empty.
    InProgress,
    /// Done: bytes after C2 belong to the chunk stream.
    Done,
}

/// Server-side handshake state machine.
pub struct ServerHandshake {
    buf: BytesMut,
    sent_s012: bool,
    epoch: u32,
    random: [u8; 8],
}

impl ServerHandshake {
    /// `epoch` is our S1 time field; `random` seeds S1's random bytes (the caller provides
    /// randomness: the state machine reads no clock and no RNG).
    pub fn new(epoch: u32, random: [u8; 8]) -> Self {
        Self {
            buf: BytesMut::with_capacity(1 + 2 * HANDSHAKE_SIZE),
            sent_s012: false,
            epoch,
            random,
        }
    }

    /// Feeds received bytes; appends S0+S1+S2 to `out` once C0+C1 are in.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<HandshakeProgress, HandshakeError> {
        self.buf.extend_from_slice(data);
        if !self.sent_s012 {
            if let Some(&v) = self.buf.first() {
                if v != 3 {
                    return Err(HandshakeError::BadVersion(v));
                }
            }
            if self.buf.len() < 1 + HANDSHAKE_SIZE {
                return Ok(HandshakeProgress::InProgress);
            }
            out.push(3);
            out.extend_from_slice(&self.epoch.to_be_bytes());
            out.extend_from_slice(&[0; 4]);
            let mut x = u64::from_be_bytes(self.random) | 1;
            for _ in 0..(HANDSHAKE_SIZE - 8) / 8 {
                // xorshift64: cheap filler; S1's random bytes carry no security meaning.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                out.extend_from_slice(&x.to_be_bytes());
            }
            // S2 echoes C1 (its time field, then zero, then C1's random bytes).
            out.extend_from_slice(&self.buf[1..1 + HANDSHAKE_SIZE]);
            self.buf.advance(1 + HANDSHAKE_SIZE);
            self.sent_s012 = true;
        }
        if self.buf.len() < HANDSHAKE_SIZE {
            return Ok(HandshakeProgress::InProgress);
        }
        // C2 is not checked: clients echo S1 here, and nothing depends on it.
        self.buf.advance(HANDSHAKE_SIZE);
        Ok(HandshakeProgress::Done)
    }

    /// Bytes received after C2 (the start of the chunk stream).
    pub fn take_remaining(&mut self) -> BytesMut {
        self.buf.split()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_handshake_in_pieces() {
        let mut hs = ServerHandshake::new(7, [1; 8]);
        let mut out = Vec::new();
        let mut c1 = vec![0u8; HANDSHAKE_SIZE];
        c1[8..].iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        assert_eq!(hs.push(&[3], &mut out).unwrap(), HandshakeProgress::InProgress);
        assert!(out.is_empty());
        assert_eq!(hs.push(&c1[..100], &mut out).unwrap(), HandshakeProgress::InProgress);
        assert_eq!(hs.push(&c1[100..], &mut out).unwrap(), HandshakeProgress::InProgress);
        assert_eq!(out.len(), 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(out[0], 3);
        assert_eq!(&out[1..5], &7u32.to_be_bytes());
        assert_eq!(&out[5..9], &[0, 0, 0, 0]);
        assert_eq!(&out[1 + HANDSHAKE_SIZE..], &c1[..]);
        let mut c2_and_more = vec![0u8; HANDSHAKE_SIZE];
        c2_and_more.extend_from_slice(b"chunk");
        assert_eq!(hs.push(&c2_and_more, &mut out).unwrap(), HandshakeProgress::Done);
        assert_eq!(&hs.take_remaining()[..], b"chunk");
    }

    #[test]
    fn wrong_version_refused_at_once() {
        let mut hs = ServerHandshake::new(0, [0; 8]);
        let mut out = Vec::new();
        assert_eq!(hs.push(b"GET / HTTP/1.1\r\n", &mut out), Err(HandshakeError::BadVersion(b'G')));
        let mut hs = ServerHandshake::new(0, [0; 8]);
        assert_eq!(hs.push(&[6], &mut out), Err(HandshakeError::BadVersion(6)));
    }
}
