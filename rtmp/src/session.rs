//! The server side of an RTMP connection (spec §7): connect, createStream, publish, play.
//!
//! The session decides nothing about streams: it reports [`SessionEvent::PublishRequest`] and
//! [`SessionEvent::PlayRequest`], and the application answers with [`ServerSession::accept_publish`],
//! [`ServerSession::accept_play`] or [`ServerSession::reject`]. That is where authorization hooks in.

use bytes::{BufMut, Bytes, BytesMut};

use crate::amf0::{self, Amf0Error, Amf0Value};
use crate::chunk::{encode_message, types, ChunkDecoder, ChunkError, ChunkLimits, RtmpMessage};
use crate::handshake::{HandshakeError, HandshakeProgress, ServerHandshake};

/// Chunk stream ids we send on.
pub mod csid {
    /// Protocol control (spec §5.4).
    pub const CONTROL: u32 = 2;
    /// Commands and their answers.
    pub const COMMAND: u32 = 3;
    /// Audio to players.
    pub const AUDIO: u32 = 4;
    /// Status and data messages on a media stream.
    pub const STATUS: u32 = 5;
    /// Video to players.
    pub const VIDEO: u32 = 6;
}

/// Session settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Limits on what the peer can make us buffer.
    pub limits: ChunkLimits,
    /// Chunk size we send with (announced right after connect).
    pub out_chunk_size: u32,
    /// Window Acknowledgement Size we ask of the peer.
    pub window_ack_size: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            limits: ChunkLimits::default(),
            out_chunk_size: 4096,
            window_ack_size: 2_500_000,
        }
    }
}

/// What the peer did that the application must know.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// `connect` succeeded for `app`.
    Connected {
        /// Application name (the first path segment of the URL).
        app: String,
    },
    /// The peer wants to publish; answer with accept_publish or reject.
    PublishRequest {
        /// Application from connect.
        app: String,
        /// Stream name, without any `?query`.
        stream: String,
        /// Message stream id used for the stream.
        stream_id: u32,
    },
    /// The peer wants to play; answer with accept_play or reject.
    PlayRequest {
        /// Application from connect.
        app: String,
        /// Stream name, without any `?query`.
        stream: String,
        /// Message stream id used for the stream.
        stream_id: u32,
    },
    /// `onMetaData` from the publisher (the object or ECMA array).
    Metadata(Amf0Value),
    /// An audio message (an FLV audio tag body).
    Audio {
        /// Milliseconds.
        timestamp: u32,
        /// FLV AUDIODATA.
        payload: Bytes,
    },
    /// A video message (an FLV video tag body).
    Video {
        /// Milliseconds.
        timestamp: u32,
        /// FLV VIDEODATA.
        payload: Bytes,
    },
    /// deleteStream, closeStream or FCUnpublish: the peer ends its publishing or playing.
    StreamClosed,
}

/// Errors that end the connection.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum SessionError {
    /// Handshake failed.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// Chunk stream violation or limit.
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    /// A command did not decode.
    #[error("invalid AMF0 in command: {0}")]
    Amf(#[from] Amf0Error),
    /// A sequence the protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Idle,
    PendingPublish(u32),
    PendingPlay(u32),
    Publishing(u32),
    Playing(u32),
}

/// One server-side RTMP connection, sans-IO.
pub struct ServerSession {
    config: SessionConfig,
    handshake: Option<ServerHandshake>,
    decoder: ChunkDecoder,
    out: BytesMut,
    app: Option<String>,
    role: Role,
    received: u64,
    last_ack: u64,
    peer_window: u32,
    next_stream_id: u32,
}

fn strip_query(s: &str) -> &str {
    s.split_once('?').map_or(s, |(a, _)| a)
}

impl ServerSession {
    /// A session waiting for C0+C1. `epoch` and `random` fill S1.
    pub fn new(config: SessionConfig, epoch: u32, random: [u8; 8]) -> Self {
        Self {
            decoder: ChunkDecoder::new(config.limits.clone()),
            config,
            handshake: Some(ServerHandshake::new(epoch, random)),
            out: BytesMut::new(),
            app: None,
            role: Role::Idle,
            received: 0,
            last_ack: 0,
            peer_window: 0,
            next_stream_id: 1,
        }
    }

    /// Chunk size used for everything we send.
    pub fn out_chunk_size(&self) -> usize {
        self.config.out_chunk_size as usize
    }

    /// Bytes to send to the peer (taken, so the buffer empties).
    pub fn take_output(&mut self) -> BytesMut {
        self.out.split()
    }

    /// Bytes held for a peer that has not completed a message yet.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// Feeds received bytes and returns what happened.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<Vec<SessionEvent>, SessionError> {
        self.received += data.len() as u64;
        let mut events = Vec::new();
        if let Some(hs) = self.handshake.as_mut() {
            let mut out = Vec::new();
            let progress = hs.push(data, &mut out)?;
            self.out.put_slice(&out);
            if progress == HandshakeProgress::InProgress {
                return Ok(events);
            }
            let rest = hs.take_remaining();
            self.handshake = None;
            self.decoder.push(&rest);
        } else {
            self.decoder.push(data);
        }
        while let Some(msg) = self.decoder.next_message()? {
            self.handle_message(msg, &mut events)?;
        }
        if self.peer_window > 0 && self.received - self.last_ack >= u64::from(self.peer_window) {
            self.last_ack = self.received;
            self.control(types::ACK, &(self.received as u32).to_be_bytes());
        }
        Ok(events)
    }

    fn handle_message(&mut self, msg: RtmpMessage, events: &mut Vec<SessionEvent>) -> Result<(), SessionError> {
        match msg.type_id {
            types::WINDOW_ACK_SIZE => {
                let p = msg
                    .payload
                    .get(..4)
                    .ok_or(SessionError::Protocol("short Window Acknowledgement Size"))?;
                self.peer_window = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
            }
            // PingRequest (6) -> PingResponse (7) with the same timestamp.
            types::USER_CONTROL if msg.payload.len() >= 6 && msg.payload[..2] == [0, 6] => {
                let mut p = vec![0, 7];
                p.extend_from_slice(&msg.payload[2..6]);
                self.control(types::USER_CONTROL, &p);
            }
            types::COMMAND_AMF0 | types::COMMAND_AMF3 => {
                let body = if msg.type_id == types::COMMAND_AMF3 {
                    msg.payload.get(1..).unwrap_or_default()
                } else {
                    &msg.payload[..]
                };
                let values = amf0::decode_all(body)?;
                self.handle_command(&msg, values, events)?;
            }
            types::DATA_AMF0 | types::DATA_AMF3 => {
                if !matches!(self.role, Role::Publishing(_) | Role::PendingPublish(_)) {
                    return Ok(());
                }
                let body = if msg.type_id == types::DATA_AMF3 {
                    msg.payload.get(1..).unwrap_or_default()
                } else {
                    &msg.payload[..]
                };
                let values = amf0::decode_all(body)?;
                let mut it = values.into_iter().skip_while(|v| v.as_str() == Some("@setDataFrame"));
                if it.next().and_then(|v| v.as_str().map(|s| s == "onMetaData")) == Some(true) {
                    if let Some(meta) = it.next() {
                        events.push(SessionEvent::Metadata(meta));
                    }
                }
            }
            types::AUDIO | types::VIDEO => {
                // Media may follow `publish` in the same read, before the application accepted
                // it: it is reported after the PublishRequest and dropped if that is rejected.
                if !matches!(self.role, Role::Publishing(_) | Role::PendingPublish(_)) {
                    return Err(SessionError::Protocol("media message before publish"));
                }
                let (timestamp, payload) = (msg.timestamp, msg.payload);
                events.push(if msg.type_id == types::AUDIO {
                    SessionEvent::Audio { timestamp, payload }
                } else {
                    SessionEvent::Video { timestamp, payload }
                });
            }
            // Set Chunk Size and Abort were applied by the decoder; Ack and peer bandwidth need
            // nothing from a server.
            _ => {}
        }
        Ok(())
    }

    fn handle_command(&mut self, msg: &RtmpMessage, values: Vec<Amf0Value>, events: &mut Vec<SessionEvent>) -> Result<(), SessionError> {
        let mut it = values.into_iter();
        let name = match it.next() {
            Some(Amf0Value::String(s)) => s,
            _ => return Err(SessionError::Protocol("command without a name")),
        };
        let txn = it.next().and_then(|v| v.as_f64()).unwrap_or(0.0);
        let cmd_obj = it.next().unwrap_or(Amf0Value::Null);
        let args: Vec<Amf0Value> = it.collect();
        match name.as_str() {
            "connect" => {
                if self.app.is_some() {
                    return Err(SessionError::Protocol("second connect"));
                }
                let app = cmd_obj
                    .get("app")
                    .and_then(Amf0Value::as_str)
                    .ok_or(SessionError::Protocol("connect without app"))?;
                let app = strip_query(app).trim_end_matches('/').to_owned();
                let encoding = cmd_obj.get("objectEncoding").and_then(Amf0Value::as_f64).unwrap_or(0.0);
                self.control(types::WINDOW_ACK_SIZE, &self.config.window_ack_size.to_be_bytes());
                let mut bw = self.config.window_ack_size.to_be_bytes().to_vec();
                bw.push(2); // dynamic
                self.control(types::SET_PEER_BANDWIDTH, &bw);
                self.control(types::SET_CHUNK_SIZE, &self.config.out_chunk_size.to_be_bytes());
                self.command(
                    0,
                    &[
                        Amf0Value::string("_result"),
                        Amf0Value::Number(txn),
                        Amf0Value::object([
                            ("fmsVer", Amf0Value::string("FMS/3,0,1,123")),
                            ("capabilities", Amf0Value::Number(31.0)),
                        ]),
                        Amf0Value::object([
                            ("level", Amf0Value::string("status")),
                            ("code", Amf0Value::string("NetConnection.Connect.Success")),
                            ("description", Amf0Value::string("Connection succeeded.")),
                            ("objectEncoding", Amf0Value::Number(encoding)),
                        ]),
                    ],
                );
                self.app = Some(app.clone());
                events.push(SessionEvent::Connected { app });
            }
            "createStream" => {
                let id = self.next_stream_id;
                if id > 16 {
                    return Err(SessionError::Protocol("too many createStream calls"));
                }
                self.next_stream_id += 1;
                self.command(
                    0,
                    &[
                        Amf0Value::string("_result"),
                        Amf0Value::Number(txn),
                        Amf0Value::Null,
                        Amf0Value::Number(f64::from(id)),
                    ],
                );
            }
            "releaseStream" | "FCPublish" | "getStreamLength" if txn != 0.0 => {
                self.command(
                    0,
                    &[
                        Amf0Value::string("_result"),
                        Amf0Value::Number(txn),
                        Amf0Value::Null,
                        Amf0Value::Undefined,
                    ],
                );
            }
            "publish" | "play" => {
                let app = self.app.clone().ok_or(SessionError::Protocol("publish or play before connect"))?;
                if self.role != Role::Idle {
                    return Err(SessionError::Protocol("second publish or play on one connection"));
                }
                let stream = args.first().and_then(Amf0Value::as_str).unwrap_or_default();
                let stream = strip_query(stream).to_owned();
                let stream_id = msg.stream_id;
                if name == "publish" {
                    self.role = Role::PendingPublish(stream_id);
                    events.push(SessionEvent::PublishRequest { app, stream, stream_id });
                } else {
                    self.role = Role::PendingPlay(stream_id);
                    events.push(SessionEvent::PlayRequest { app, stream, stream_id });
                }
            }
            "deleteStream" | "closeStream" | "FCUnpublish" if self.role != Role::Idle => {
                events.push(SessionEvent::StreamClosed);
            }
            // receiveAudio, receiveVideo, pause and others need no answer from a live server.
            _ => {}
        }
        Ok(())
    }

    /// Accepts a pending publish: sends `NetStream.Publish.Start`.
    pub fn accept_publish(&mut self) {
        if let Role::PendingPublish(sid) = self.role {
            self.role = Role::Publishing(sid);
            self.status(sid, "status", "NetStream.Publish.Start", "Start publishing.");
        }
    }

    /// Accepts a pending play: StreamBegin, `NetStream.Play.Reset`, `NetStream.Play.Start`,
    /// `|RtmpSampleAccess`. Media follows on [`csid::AUDIO`] / [`csid::VIDEO`] with the returned
    /// message stream id.
    pub fn accept_play(&mut self) -> Option<u32> {
        let Role::PendingPlay(sid) = self.role else {
            return None;
        };
        self.role = Role::Playing(sid);
        let mut p = vec![0, 0];
        p.extend_from_slice(&sid.to_be_bytes());
        self.control(types::USER_CONTROL, &p);
        self.status(sid, "status", "NetStream.Play.Reset", "Playing and resetting stream.");
        self.status(sid, "status", "NetStream.Play.Start", "Started playing stream.");
        let body = amf0::encode_all(&[
            Amf0Value::string("|RtmpSampleAccess"),
            Amf0Value::Boolean(true),
            Amf0Value::Boolean(true),
        ]);
        let cs = self.out_chunk_size();
        encode_message(&mut self.out, csid::STATUS, 0, types::DATA_AMF0, sid, &body, cs);
        Some(sid)
    }

    /// Refuses a pending publish or play, or ends an accepted one, with an `onStatus` error
    /// the peer shows (e.g. `NetStream.Publish.BadName`). Close the connection after sending.
    pub fn reject(&mut self, code: &str, description: &str) {
        let sid = match self.role {
            Role::PendingPublish(s) | Role::PendingPlay(s) | Role::Publishing(s) | Role::Playing(s) => s,
            Role::Idle => 0,
        };
        self.status(sid, "error", code, description);
    }

    /// Sends an `onStatus` on the current stream (e.g. `NetStream.Play.UnpublishNotify`).
    pub fn notify(&mut self, code: &str, description: &str) {
        let sid = match self.role {
            Role::Publishing(s) | Role::Playing(s) => s,
            _ => return,
        };
        self.status(sid, "status", code, description);
    }

    fn status(&mut self, sid: u32, level: &str, code: &str, description: &str) {
        let body = amf0::encode_all(&[
            Amf0Value::string("onStatus"),
            Amf0Value::Number(0.0),
            Amf0Value::Null,
            Amf0Value::object([
                ("level", Amf0Value::string(level)),
                ("code", Amf0Value::string(code)),
                ("description", Amf0Value::string(description)),
            ]),
        ]);
        let cs = self.out_chunk_size();
        encode_message(&mut self.out, csid::STATUS, 0, types::COMMAND_AMF0, sid, &body, cs);
    }

    fn command(&mut self, sid: u32, values: &[Amf0Value]) {
        let body = amf0::encode_all(values);
        let cs = self.out_chunk_size();
        encode_message(&mut self.out, csid::COMMAND, 0, types::COMMAND_AMF0, sid, &body, cs);
    }

    fn control(&mut self, type_id: u8, payload: &[u8]) {
        // Control messages precede our Set Chunk Size or are smaller than 128 bytes.
        encode_message(&mut self.out, csid::CONTROL, 0, type_id, 0, payload, 128);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::HANDSHAKE_SIZE;

    /// A scripted client: handshake, then commands, all through the real encoder.
    struct Client {
        bytes: BytesMut,
    }

    impl Client {
        fn new() -> Self {
            let mut bytes = BytesMut::new();
            bytes.put_u8(3);
            bytes.put_slice(&[0u8; HANDSHAKE_SIZE]);
            bytes.put_slice(&[0u8; HANDSHAKE_SIZE]);
            Self { bytes }
        }
        fn command(&mut self, sid: u32, values: &[Amf0Value]) -> &mut Self {
            let body = amf0::encode_all(values);
            encode_message(&mut self.bytes, 3, 0, types::COMMAND_AMF0, sid, &body, 128);
            self
        }
        fn connect(&mut self, app: &str) -> &mut Self {
            self.command(
                0,
                &[
                    Amf0Value::string("connect"),
                    Amf0Value::Number(1.0),
                    Amf0Value::object([("app", Amf0Value::string(app))]),
                ],
            )
        }
    }

    fn decode_out(session: &mut ServerSession, skip_handshake: bool) -> Vec<RtmpMessage> {
        let out = session.take_output();
        let mut dec = ChunkDecoder::new(ChunkLimits::default());
        dec.push(if skip_handshake { &out[1 + 2 * HANDSHAKE_SIZE..] } else { &out[..] });
        let mut msgs = Vec::new();
        while let Some(m) = dec.next_message().unwrap() {
            msgs.push(m);
        }
        msgs
    }

    fn status_codes(msgs: &[RtmpMessage]) -> Vec<String> {
        msgs.iter()
            .filter(|m| m.type_id == types::COMMAND_AMF0)
            .filter_map(|m| {
                let v = amf0::decode_all(&m.payload).unwrap();
                let name = v[0].as_str()?.to_owned();
                let code = v.get(3).and_then(|o| o.get("code")).and_then(Amf0Value::as_str).map(str::to_owned);
                Some(code.unwrap_or(name))
            })
            .collect()
    }

    #[test]
    fn publish_flow() {
        let mut c = Client::new();
        c.connect("live?token=1")
            .command(
                0,
                &[
                    Amf0Value::string("releaseStream"),
                    Amf0Value::Number(2.0),
                    Amf0Value::Null,
                    Amf0Value::string("cam"),
                ],
            )
            .command(0, &[Amf0Value::string("createStream"), Amf0Value::Number(4.0), Amf0Value::Null])
            .command(
                1,
                &[
                    Amf0Value::string("publish"),
                    Amf0Value::Number(5.0),
                    Amf0Value::Null,
                    Amf0Value::string("cam?k=v"),
                    Amf0Value::string("live"),
                ],
            );
        let mut s = ServerSession::new(SessionConfig::default(), 0, [0; 8]);
        let events = s.handle_input(&c.bytes).unwrap();
        assert_eq!(
            events,
            vec![
                SessionEvent::Connected { app: "live".into() },
                SessionEvent::PublishRequest {
                    app: "live".into(),
                    stream: "cam".into(),
                    stream_id: 1
                }
            ]
        );
        let msgs = decode_out(&mut s, true);
        let types_seen: Vec<u8> = msgs.iter().map(|m| m.type_id).take(3).collect();
        assert_eq!(
            types_seen,
            vec![types::WINDOW_ACK_SIZE, types::SET_PEER_BANDWIDTH, types::SET_CHUNK_SIZE]
        );
        assert_eq!(status_codes(&msgs), vec!["NetConnection.Connect.Success", "_result", "_result"]);
        s.accept_publish();
        assert_eq!(status_codes(&decode_out(&mut s, false)), vec!["NetStream.Publish.Start"]);

        // Metadata and media now flow.
        let mut media = BytesMut::new();
        let meta = amf0::encode_all(&[
            Amf0Value::string("@setDataFrame"),
            Amf0Value::string("onMetaData"),
            Amf0Value::EcmaArray(vec![("width".into(), Amf0Value::Number(640.0))]),
        ]);
        encode_message(&mut media, 4, 0, types::DATA_AMF0, 1, &meta, 128);
        encode_message(&mut media, 6, 40, types::VIDEO, 1, &[0x17, 0, 0, 0, 0], 128);
        let ev = s.handle_input(&media).unwrap();
        assert!(matches!(&ev[0], SessionEvent::Metadata(m) if m.get("width").and_then(Amf0Value::as_f64) == Some(640.0)));
        assert_eq!(
            ev[1],
            SessionEvent::Video {
                timestamp: 40,
                payload: Bytes::from_static(&[0x17, 0, 0, 0, 0])
            }
        );
    }

    #[test]
    fn play_flow_and_reject() {
        let mut c = Client::new();
        c.connect("live")
            .command(0, &[Amf0Value::string("createStream"), Amf0Value::Number(2.0), Amf0Value::Null])
            .command(
                1,
                &[
                    Amf0Value::string("play"),
                    Amf0Value::Number(0.0),
                    Amf0Value::Null,
                    Amf0Value::string("cam"),
                ],
            );
        let mut s = ServerSession::new(SessionConfig::default(), 0, [0; 8]);
        let events = s.handle_input(&c.bytes).unwrap();
        assert_eq!(
            events[1],
            SessionEvent::PlayRequest {
                app: "live".into(),
                stream: "cam".into(),
                stream_id: 1
            }
        );
        decode_out(&mut s, true);
        assert_eq!(s.accept_play(), Some(1));
        let msgs = decode_out(&mut s, false);
        assert_eq!(msgs[0].type_id, types::USER_CONTROL);
        assert_eq!(&msgs[0].payload[..], &[0, 0, 0, 0, 0, 1]);
        assert_eq!(status_codes(&msgs), vec!["NetStream.Play.Reset", "NetStream.Play.Start"]);

        let mut s = ServerSession::new(SessionConfig::default(), 0, [0; 8]);
        s.handle_input(&c.bytes).unwrap();
        decode_out(&mut s, true);
        s.reject("NetStream.Play.StreamNotFound", "live/cam is not live");
        assert_eq!(status_codes(&decode_out(&mut s, false)), vec!["NetStream.Play.StreamNotFound"]);
    }

    #[test]
    fn protocol_violations() {
        // Media before publish.
        let mut c = Client::new();
        c.connect("live");
        encode_message(&mut c.bytes, 6, 0, types::VIDEO, 1, &[0x17], 128);
        let mut s = ServerSession::new(SessionConfig::default(), 0, [0; 8]);
        assert_eq!(
            s.handle_input(&c.bytes),
            Err(SessionError::Protocol("media message before publish"))
        );
        // Publish before connect.
        let mut c = Client::new();
        c.command(
            1,
            &[
                Amf0Value::string("publish"),
                Amf0Value::Number(0.0),
                Amf0Value::Null,
                Amf0Value::string("x"),
            ],
        );
        let mut s = ServerSession::new(SessionConfig::default(), 0, [0; 8]);
        assert_eq!(
            s.handle_input(&c.bytes),
            Err(SessionError::Protocol("publish or play before connect"))
        );
        // Invalid AMF.
        let mut c = Client::new();
        encode_message(&mut c.bytes, 3, 0, types::COMMAND_AMF0, 0, &[0x02, 0x00, 0x09, b'x'], 128);
        let mut s = ServerSession::new(SessionConfig::default(), 0, [0; 8]);
        assert_eq!(s.handle_input(&c.bytes), Err(SessionError::Amf(Amf0Error::Truncated)));
    }

    #[test]
    fn acknowledges_window() {
        let mut c = Client::new();
        encode_message(&mut c.bytes, 2, 0, types::WINDOW_ACK_SIZE, 0, &3100u32.to_be_bytes(), 128);
        let mut s = ServerSession::new(SessionConfig::default(), 0, [0; 8]);
        s.handle_input(&c.bytes).unwrap();
        decode_out(&mut s, true);
        let mut more = BytesMut::new();
        c = Client { bytes: BytesMut::new() };
        c.connect("live");
        more.put_slice(&c.bytes);
        s.handle_input(&more).unwrap();
        let msgs = decode_out(&mut s, false);
        assert!(msgs.iter().any(|m| m.type_id == types::ACK), "no ack after 3100 bytes");
    }
}
