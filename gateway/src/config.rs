//! Configuration: the embedded default, an optional TOML file, then command-line flags.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;

/// The embedded default configuration (also documented in docs/configuration.md).
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Command line (../shared/INTERFACE.md).
#[derive(Debug, Parser)]
#[command(
    name = "streamgate",
    version,
    about = "Streaming gateway: WebRTC and RTMP in; HLS, HTTP-FLV, WebSocket-FLV, RTMP and WebRTC out"
)]
pub struct Cli {
    /// TOML configuration file (docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTP/WebSocket listener [default: 0.0.0.0:8080].
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// HTTPS/WSS listener (needs --tls-cert/--tls-key or --tls-self-signed).
    #[arg(long, value_name = "ADDR")]
    pub https: Option<SocketAddr>,
    /// TLS certificate chain (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Generate a development certificate for the HTTPS listener.
    #[arg(long)]
    pub tls_self_signed: bool,
    /// RTMP listener [default: 0.0.0.0:1935].
    #[arg(long, value_name = "ADDR")]
    pub rtmp: Option<SocketAddr>,
    /// The single UDP port for all WebRTC media [default: 0.0.0.0:8000].
    #[arg(long, value_name = "ADDR")]
    pub webrtc_udp: Option<SocketAddr>,
    /// Address advertised in ICE candidates (1:1 NAT); repeat it for several (one per NAT or
    /// interface): then only those are advertised (with loopback).
    #[arg(long, value_name = "IP")]
    pub public_ip: Vec<IpAddr>,
    /// tracing filter [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log: Option<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub hub: HubSection,
    pub rtmp: RtmpSection,
    pub http: HttpSection,
    pub egress: EgressSection,
    pub webrtc: WebRtcSection,
    pub hls: HlsSection,
    pub room: RoomSection,
    pub turn: TurnSection,
}

/// `[hls]`: classic and LL-HLS segmenting.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HlsSection {
    pub segment_ms: u64,
    pub part_ms: u64,
    pub window: usize,
    pub idle_timeout_ms: u64,
    pub reconnect_grace_ms: u64,
    pub keep_ended_ms: u64,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebRtcSection {
    pub pli_interval_ms: u64,
    pub keyframe_request_min_ms: u64,
    pub idle_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub max_sessions: usize,
    pub max_pending: usize,
    pub max_pending_per_address: usize,
    pub offers_per_second_per_address: f64,
    pub offers_burst_per_address: u32,
    pub video_reorder_packets: usize,
    pub whip_token: String,
    pub ice_servers: Vec<String>,
    pub udp_receive_buffer: u32,
    pub aac_encoder: AacEncoderName,
}

/// `webrtc.aac_encoder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AacEncoderName {
    Fdk,
    Ffmpeg,
}

impl From<AacEncoderName> for ingest::webrtc::audio::AacEncoderKind {
    fn from(n: AacEncoderName) -> Self {
        match n {
            AacEncoderName::Fdk => Self::Fdk,
            AacEncoderName::Ffmpeg => Self::Ffmpeg,
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSection {
    pub write_coalesce_ms: u64,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub http: SocketAddr,
    #[serde(default)]
    pub https: Option<SocketAddr>,
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub tls_self_signed: bool,
    pub rtmp: SocketAddr,
    pub webrtc_udp: SocketAddr,
    pub public_ip: String,
    pub log: String,
    pub socket_send_buffer: u32,
    /// Async runtime worker threads; 0: one per core.
    pub workers: usize,
}

/// The chat room (Socket.IO at `/socket.io/`, docs/room-protocol.md).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoomSection {
    pub max_participants: usize,
    pub max_rooms: usize,
    /// Largest Socket.IO message (WebSocket message or polling body).
    pub max_message_bytes: usize,
    pub chat_max_chars: usize,
    pub name_max_chars: usize,
    /// Chat messages a room keeps for people who join later.
    pub chat_history: usize,
    /// Events one socket may send: this many per second sustained, after a burst.
    pub events_per_second: f64,
    pub events_burst: u32,
    /// Refused events (rate-limited) in 10 s after which a socket is a flood: it gets a
    /// `flood` error and is disconnected.
    pub flood_refusals: u32,
    /// Packets a socket may have waiting to be written; more are dropped (a client that does not
    /// read). Above `flood_refusals` + the inbox, so that every answer before a flood's
    /// disconnect is sent.
    pub send_buffer_packets: usize,
    /// Chat messages one participant may send per second (burst: 5).
    pub chat_per_second: f64,
    /// A participant whose socket drops is "reconnecting" this long before it has left.
    pub reconnect_grace_ms: u64,
    /// Socket.IO heartbeat: a dead socket is seen within interval + timeout.
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    /// Sockets one client address may hold.
    pub max_sockets_per_address: usize,
}

/// TURN servers handed to room clients, with short-lived credentials (TURN REST: coturn's
/// `use-auth-secret` / `static-auth-secret`).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TurnSection {
    /// `turn:` / `turns:` URLs, e.g. `turn:turn.example.com:3478?transport=udp`.
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret`. Empty: no TURN credentials (the URLs are not handed out).
    pub secret: String,
    /// Lifetime of a minted credential.
    pub ttl_secs: u64,
    /// `all`, or `relay` (clients send media through TURN only).
    pub ice_transport_policy: String,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    pub queue_max_frames: usize,
    pub queue_max_bytes: usize,
    pub gop_max_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RtmpSection {
    pub max_message_size: usize,
    pub chunk_size: u32,
    pub idle_timeout_secs: u64,
    pub connect_timeout_secs: u64,
    pub max_pending: usize,
    pub max_pending_per_address: usize,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    pub cors_allow_origin: String,
    pub flv_wait_ms: u64,
    /// A request head must arrive whole within this (every request of a connection).
    pub request_head_timeout_secs: u64,
    /// An HTTP-FLV or WS-FLV viewer whose writes stall this long is closed.
    pub viewer_stall_timeout_secs: u64,
    /// The built web front end (`player/dist`), relative to the working directory.
    pub player_dir: PathBuf,
}

/// Merges a partial TOML document over the defaults, key by key.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file (or the embedded default) is not TOML.
    #[error("parsing {what}: {source}")]
    Parse { what: String, source: toml::de::Error },
    /// A key has the wrong type, or is unknown.
    #[error("configuration: {0}")]
    Shape(toml::de::Error),
    /// A value is out of its range.
    #[error("{0}")]
    Invalid(String),
}

/// Returns a [`ConfigError::Invalid`] with a formatted message.
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err(ConfigError::Invalid(format!($($arg)*)))
    };
}

/// The parts of a comma- or space-separated address list.
fn split_ips(list: &str) -> impl Iterator<Item = &str> {
    list.split([',', ' ']).map(str::trim).filter(|a| !a.is_empty())
}

impl ServerConfig {
    /// The `public_ip` addresses (validated at load).
    pub fn public_ips(&self) -> Vec<IpAddr> {
        split_ips(&self.public_ip).filter_map(|a| a.parse().ok()).collect()
    }
}

impl Config {
    /// Default, then file, then flags; validated.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let parse = |what: String, text: &str| toml::from_str::<toml::Value>(text).map_err(|source| ConfigError::Parse { what, source });
        let mut value = parse("the embedded default configuration".into(), DEFAULT_TOML)?;
        if let Some(path) = &cli.config {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            merge(&mut value, parse(path.display().to_string(), &text)?);
        }
        let mut cfg: Config = value.try_into().map_err(ConfigError::Shape)?;
        let s = &mut cfg.server;
        if let Some(v) = cli.http {
            s.http = v;
        }
        if let Some(v) = cli.https {
            s.https = Some(v);
        }
        if let Some(v) = &cli.tls_cert {
            s.tls_cert = Some(v.clone());
        }
        if let Some(v) = &cli.tls_key {
            s.tls_key = Some(v.clone());
        }
        s.tls_self_signed |= cli.tls_self_signed;
        if let Some(v) = cli.rtmp {
            s.rtmp = v;
        }
        if let Some(v) = cli.webrtc_udp {
            s.webrtc_udp = v;
        }
        if !cli.public_ip.is_empty() {
            s.public_ip = cli.public_ip.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        }
        if let Some(v) = &cli.log {
            s.log = v.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(bad) = split_ips(&self.server.public_ip).find(|a| a.parse::<IpAddr>().is_err()) {
            invalid!("server.public_ip: {bad:?} is not an IP address (several are separated by commas)");
        }
        let s = &self.server;
        if s.https.is_some() && !s.tls_self_signed && (s.tls_cert.is_none() || s.tls_key.is_none()) {
            invalid!("--https needs --tls-cert and --tls-key (PEM files), or --tls-self-signed for a development certificate");
        }
        if s.https.is_none() && (s.tls_cert.is_some() || s.tls_key.is_some() || s.tls_self_signed) {
            invalid!("--tls-cert, --tls-key and --tls-self-signed go with --https ADDR");
        }
        if !(1..=3600).contains(&self.http.viewer_stall_timeout_secs) {
            invalid!("http.viewer_stall_timeout_secs must be 1..=3600");
        }
        if !(1..=3600).contains(&self.http.request_head_timeout_secs) {
            invalid!("http.request_head_timeout_secs must be 1..=3600");
        }
        if self.server.workers > 1024 {
            invalid!("server.workers must be at most 1024 (0: one per core)");
        }
        if !(128..=65536).contains(&self.rtmp.chunk_size) {
            invalid!("rtmp.chunk_size must be 128..=65536");
        }
        if self.rtmp.max_message_size < 64 * 1024 {
            invalid!("rtmp.max_message_size must be at least 65536");
        }
        if self.egress.write_coalesce_ms > 1000 {
            invalid!("egress.write_coalesce_ms must be at most 1000");
        }
        if self.hub.queue_max_frames < 16 || self.hub.queue_max_bytes < 64 * 1024 {
            invalid!("hub.queue_max_frames must be >= 16 and hub.queue_max_bytes >= 65536");
        }
        let h = &self.hls;
        if !(200..=30_000).contains(&h.segment_ms) {
            invalid!("hls.segment_ms must be 200..=30000");
        }
        if !(50..=h.segment_ms).contains(&h.part_ms) {
            invalid!("hls.part_ms must be 50..=hls.segment_ms");
        }
        if !(3..=100).contains(&h.window) {
            invalid!("hls.window must be 3..=100 segments");
        }
        if h.idle_timeout_ms < 1000 {
            invalid!("hls.idle_timeout_ms must be at least 1000");
        }
        let w = &self.webrtc;
        if !(500..=60_000).contains(&w.connect_timeout_ms) {
            invalid!("webrtc.connect_timeout_ms must be 500..=60000 (the time a connecting WebRTC publisher holds its key)");
        }
        if w.max_pending == 0 || w.max_pending_per_address == 0 {
            invalid!("webrtc.max_pending and webrtc.max_pending_per_address must be at least 1");
        }
        if !(0.0..=1e6).contains(&w.offers_per_second_per_address) || w.offers_burst_per_address == 0 {
            invalid!(
                "webrtc.offers_per_second_per_address must be 0..=1000000 (0: no limit) and webrtc.offers_burst_per_address at least 1"
            );
        }
        let m = &self.room;
        if !(1..=1000).contains(&m.max_participants) || m.max_rooms == 0 {
            invalid!("room.max_participants must be 1..=1000 and room.max_rooms at least 1");
        }
        if !(16 * 1024..=16 << 20).contains(&m.max_message_bytes) {
            invalid!("room.max_message_bytes must be 16384..=16777216 (an SDP offer is 5-15 KiB)");
        }
        if !(1..=10_000).contains(&m.chat_max_chars) || !(1..=256).contains(&m.name_max_chars) {
            invalid!("room.chat_max_chars must be 1..=10000 and room.name_max_chars 1..=256");
        }
        if m.chat_history > 10_000 || m.events_burst == 0 || m.events_per_second <= 0.0 || m.chat_per_second <= 0.0 {
            invalid!("room.chat_history must be at most 10000, room.events_per_second, room.chat_per_second and room.events_burst above 0");
        }
        if m.flood_refusals == 0 || m.send_buffer_packets < m.flood_refusals as usize + 64 {
            invalid!("room.flood_refusals must be above 0 and room.send_buffer_packets at least room.flood_refusals + 64");
        }
        if m.ping_interval_ms < 500 || m.ping_timeout_ms < 500 || m.max_sockets_per_address == 0 {
            invalid!("room.ping_interval_ms and room.ping_timeout_ms must be at least 500, room.max_sockets_per_address at least 1");
        }
        let t = &self.turn;
        if !matches!(t.ice_transport_policy.as_str(), "all" | "relay") {
            invalid!("turn.ice_transport_policy must be \"all\" or \"relay\"");
        }
        if let Some(u) = t.urls.iter().find(|u| !(u.starts_with("turn:") || u.starts_with("turns:"))) {
            invalid!("turn.urls: {u:?} is not a turn: or turns: URL (STUN servers go in webrtc.ice_servers)");
        }
        if !t.urls.is_empty() && t.secret.is_empty() {
            invalid!("turn.urls needs turn.secret (coturn's static-auth-secret) to mint credentials");
        }
        if !(60..=7 * 86_400).contains(&t.ttl_secs) {
            invalid!("turn.ttl_secs must be 60..=604800");
        }
        let r = &self.rtmp;
        if !(1..=600).contains(&r.connect_timeout_secs) {
            invalid!("rtmp.connect_timeout_secs must be 1..=600");
        }
        if r.max_pending == 0 || r.max_pending_per_address == 0 {
            invalid!("rtmp.max_pending and rtmp.max_pending_per_address must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::parse_from(std::iter::once("streamgate").chain(args.iter().copied()))
    }

    #[test]
    fn embedded_default_parses() {
        let cfg = Config::load(&cli(&[])).unwrap();
        assert_eq!(cfg.server.http.port(), 8080);
        assert_eq!(cfg.server.rtmp.port(), 1935);
        assert_eq!(cfg.server.webrtc_udp.port(), 8000);
        assert_eq!(cfg.rtmp.chunk_size, 4096);
        assert_eq!(cfg.server.workers, 1);
        // A connecting WebRTC publisher holds its key for at most 5 s (issue 13).
        assert!(cfg.webrtc.connect_timeout_ms <= 5000);
        assert!(cfg.rtmp.connect_timeout_secs <= 10);
    }

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("sg-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "[server]\nhttp = \"127.0.0.1:9000\"\nrtmp = \"127.0.0.1:9935\"\n[http]\nflv_wait_ms = 1500\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let cfg = Config::load(&cli(&["--config", p, "--rtmp", "127.0.0.1:1936"])).unwrap();
        assert_eq!(cfg.server.http.port(), 9000);
        assert_eq!(cfg.server.rtmp.port(), 1936, "flag beats file");
        assert_eq!(cfg.http.flv_wait_ms, 1500);
        assert_eq!(cfg.hub.queue_max_frames, 1024, "untouched keys keep defaults");
        std::fs::write(&path, "[server]\nhtp = \"x\"\n").unwrap();
        assert!(Config::load(&cli(&["--config", p])).is_err(), "unknown keys are refused");
        std::fs::write(&path, "[server]\nworkers = 0\n").unwrap();
        assert_eq!(Config::load(&cli(&["--config", p])).unwrap().server.workers, 0, "0: one per core");
        std::fs::write(&path, "[server]\nworkers = 5000\n").unwrap();
        let e = Config::load(&cli(&["--config", p])).unwrap_err().to_string();
        assert!(e.contains("server.workers"), "{e}");
        std::fs::write(&path, "[http]\nrequest_head_timeout_secs = 0\n").unwrap();
        let e = Config::load(&cli(&["--config", p])).unwrap_err().to_string();
        assert!(e.contains("request_head_timeout_secs"), "{e}");
        for (toml, key) in [
            ("[webrtc]\nconnect_timeout_ms = 100\n", "connect_timeout_ms"),
            ("[webrtc]\nmax_pending_per_address = 0\n", "max_pending"),
            ("[webrtc]\noffers_burst_per_address = 0\n", "offers_burst_per_address"),
            ("[rtmp]\nconnect_timeout_secs = 0\n", "connect_timeout_secs"),
            ("[rtmp]\nmax_pending = 0\n", "rtmp.max_pending"),
        ] {
            std::fs::write(&path, toml).unwrap();
            let e = Config::load(&cli(&["--config", p])).unwrap_err().to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
        // Several public addresses, from the file or repeated flags.
        std::fs::write(&path, "[server]\npublic_ip = \"203.0.113.1, 198.51.100.2\"\n").unwrap();
        assert_eq!(Config::load(&cli(&["--config", p])).unwrap().server.public_ips().len(), 2);
        let cfg = Config::load(&cli(&["--public-ip", "203.0.113.1", "--public-ip", "2001:db8::1"])).unwrap();
        assert_eq!(
            cfg.server.public_ips(),
            ["203.0.113.1".parse::<IpAddr>().unwrap(), "2001:db8::1".parse().unwrap()]
        );
        std::fs::write(&path, "[server]\npublic_ip = \"203.0.113.1, nope\"\n").unwrap();
        assert!(Config::load(&cli(&["--config", p])).unwrap_err().to_string().contains("nope"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
