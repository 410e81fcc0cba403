//! Sans-IO RTMP (Adobe RTMP 1.0 specification, 2012).
//!
//! Nothing here touches a socket or reads a clock: [`handshake::ServerHandshake`],
//! [`chunk::ChunkDecoder`] / [`chunk::encode_message`], [`amf0`] and [`session::ServerSession`]
//! take bytes in and hand bytes and events out. The gateway's TCP task is the thin shell.
//!
//! The chunk layer is our own because `rml_rtmp` 0.8 shares one reassembly buffer between chunk
//! streams and panics when chunks of two messages interleave (which OBS 30+ and FFmpeg 6.1+ do).
//! Here every chunk stream has its own buffer (spec §5.3.1: chunks of different chunk streams may
//! interleave freely).
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod amf0;
pub mod chunk;
pub mod handshake;
pub mod session;

pub use chunk::{encode_message, ChunkDecoder, ChunkError, RtmpMessage};
pub use session::{ServerSession, SessionConfig, SessionError, SessionEvent};
