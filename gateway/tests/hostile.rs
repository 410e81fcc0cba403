//! Bad input and bad viewers: whatever one peer does, only its own connection suffers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use rtmp::amf0::{self, Amf0Value};
use rtmp::chunk::{encode_message, types};

fn xorshift_bytes(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Connects and completes the RTMP handshake.
fn rtmp_connect(port: u16) -> TcpStream {
    rtmp_connect_with(TcpStream::connect(("127.0.0.1", port)).unwrap())
}

/// The same, from a socket with a tiny receive buffer (a player that can take little).
fn rtmp_connect_small(port: u16) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into()).unwrap();
    rtmp_connect_with(sock.into())
}

fn rtmp_connect_with(mut s: TcpStream) -> TcpStream {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend(xorshift_bytes(1536, 7));
    s.write_all(&c0c1).unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 2 * 1536];
    s.read_exact(&mut s0s1s2).unwrap();
    s.write_all(&s0s1s2[1..1537]).unwrap();
    s
}

fn command(values: &[Amf0Value], stream_id: u32) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode_message(&mut b, 3, 0, types::COMMAND_AMF0, stream_id, &amf0::encode_all(values), 128);
    b.to_vec()
}

fn connect_cmd(app: &str) -> Vec<u8> {
    command(
        &[
            Amf0Value::string("connect"),
            Amf0Value::Number(1.0),
            Amf0Value::object([("app", Amf0Value::string(app))]),
        ],
        0,
    )
}

fn publish_cmd(verb: &str, name: &str) -> Vec<u8> {
    let mut b = command(&[Amf0Value::string("createStream"), Amf0Value::Number(2.0), Amf0Value::Null], 0);
    b.extend(command(
        &[
            Amf0Value::string(verb),
            Amf0Value::Number(3.0),
            Amf0Value::Null,
            Amf0Value::string(name),
        ],
        1,
    ));
    b
}

/// Reads until the server closes; returns what it sent, or panics if it keeps the connection.
fn read_until_closed(mut s: TcpStream, within: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(within)).unwrap();
    let start = Instant::now();
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
            Err(e) => panic!("connection not closed after {:?}: {e}", start.elapsed()),
        }
        assert!(start.elapsed() < within, "connection not closed within {within:?}");
    }
}

/// Reads an HTTP-FLV stream in a thread, recording the largest gap between reads.
struct Watcher {
    stop: Arc<AtomicBool>,
    max_gap: Arc<Mutex<Duration>>,
    bytes: Arc<Mutex<usize>>,
    handle: std::thread::JoinHandle<()>,
}

impl Watcher {
    fn start(port: u16, path: &str) -> Watcher {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let max_gap = Arc::new(Mutex::new(Duration::ZERO));
        let bytes = Arc::new(Mutex::new(0));
        let (st, mg, by) = (stop.clone(), max_gap.clone(), bytes.clone());
        let handle = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut last = Instant::now();
            while !st.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let now = Instant::now();
                        let gap = now - last;
                        last = now;
                        *by.lock().unwrap() += n;
                        let mut m = mg.lock().unwrap();
                        if gap > *m {
                            *m = gap;
                        }
                    }
                }
            }
        });
        Watcher {
            stop,
            max_gap,
            bytes,
            handle,
        }
    }

    fn reset_gap(&self) {
        *self.max_gap.lock().unwrap() = Duration::ZERO;
    }

    fn finish(self) -> (Duration, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap();
        let g = *self.max_gap.lock().unwrap();
        let b = *self.bytes.lock().unwrap();
        (g, b)
    }
}

/// A real FFmpeg publisher and an HTTP-FLV viewer of it, there to show that an attack on
/// other connections harms neither.
struct Bystander {
    key: String,
    publisher: std::process::Child,
    watcher: Watcher,
    frames_before: u64,
    since: Instant,
}

impl Bystander {
    fn start(gw: &Gateway, key: &str) -> Bystander {
        let publisher = publish(&gw.rtmp_url(key), 40, "640x360");
        gw.wait_live(key, Duration::from_secs(10));
        let watcher = Watcher::start(gw.http, &format!("/{key}.flv"));
        std::thread::sleep(Duration::from_secs(2));
        watcher.reset_gap();
        let frames_before = gw.stream(key).unwrap()["frames_in"]["video"].as_u64().unwrap();
        Bystander {
            key: key.to_owned(),
            publisher,
            watcher,
            frames_before,
            since: Instant::now(),
        }
    }

    /// The publisher kept its 30 fps and the viewer saw no gap of 500 ms or more.
    fn assert_unharmed(mut self, gw: &Gateway, during: &str) {
        // A rate over less than a few seconds is mostly FFmpeg's burstiness.
        let min = Duration::from_secs(5);
        if let Some(rest) = min.checked_sub(self.since.elapsed()) {
            std::thread::sleep(rest);
        }
        let elapsed = self.since.elapsed().as_secs_f64();
        let frames_after = gw.stream(&self.key).unwrap()["frames_in"]["video"].as_u64().unwrap();
        let rate = (frames_after - self.frames_before) as f64 / elapsed;
        assert!(rate >= 0.95 * 30.0, "publisher slowed to {rate:.1} fps during {during}");
        let (gap, bytes) = self.watcher.finish();
        assert!(bytes > 100_000, "viewer received only {bytes} bytes");
        assert!(gap < Duration::from_millis(500), "viewer saw a {gap:?} gap during {during}");
        let _ = self.publisher.kill();
        let _ = self.publisher.wait();
    }
}

#[test]
fn bad_rtmp_input_closes_only_that_connection() {
    let gw = Gateway::start("hostile", "[rtmp]\nmax_message_size = 1048576\nidle_timeout_secs = 3\n");
    let bystander = Bystander::start(&gw, "live/good");

    // 1. Random bytes instead of a handshake.
    let mut s = TcpStream::connect(("127.0.0.1", gw.rtmp)).unwrap();
    let _ = s.write_all(
        &xorshift_bytes(65536, 1)
            .iter()
            .map(|&b| if b == 3 { 4 } else { b })
            .collect::<Vec<_>>(),
    );
    read_until_closed(s, Duration::from_secs(5));

    // 2. A valid C0, then random bytes through handshake and chunk stream.
    for seed in 2..6 {
        let mut s = TcpStream::connect(("127.0.0.1", gw.rtmp)).unwrap();
        let mut junk = vec![3u8];
        junk.extend(xorshift_bytes(3072 + 20000, seed));
        let _ = s.write_all(&junk);
        read_until_closed(s, Duration::from_secs(5));
    }

    // 3. Truncated handshake: closed by the idle timeout.
    let mut s = TcpStream::connect(("127.0.0.1", gw.rtmp)).unwrap();
    s.write_all(&[3u8; 100]).unwrap();
    let t = Instant::now();
    read_until_closed(s, Duration::from_secs(8));
    assert!(t.elapsed() >= Duration::from_secs(2), "closed before the idle timeout");

    // 4. Absurd chunk size.
    let mut s = rtmp_connect(gw.rtmp);
    let mut b = BytesMut::new();
    encode_message(&mut b, 2, 0, types::SET_CHUNK_SIZE, 0, &0x7fff_ffffu32.to_be_bytes(), 128);
    s.write_all(&b).unwrap();
    read_until_closed(s, Duration::from_secs(5));

    // 5. Message length over the limit.
    let mut s = rtmp_connect(gw.rtmp);
    s.write_all(&[0x06, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0]).unwrap();
    read_until_closed(s, Duration::from_secs(5));

    // 6. Invalid AMF in a command.
    let mut s = rtmp_connect(gw.rtmp);
    let mut b = BytesMut::new();
    encode_message(
        &mut b,
        3,
        0,
        types::COMMAND_AMF0,
        0,
        &[0x02, 0x00, 0x40, b'c', 0x03, 0x0a, 0xff, 0xff, 0xff, 0xff],
        128,
    );
    s.write_all(&b).unwrap();
    read_until_closed(s, Duration::from_secs(5));

    // 7. Stream names with path tricks, spaces and slashes: BadName, then closed.
    for (app, name) in [("live", ".."), ("live", "a b"), ("live", "a/b"), ("..", "x"), ("live", "x%2f..")] {
        let mut s = rtmp_connect(gw.rtmp);
        s.write_all(&connect_cmd(app)).unwrap();
        s.write_all(&publish_cmd("publish", name)).unwrap();
        let reply = read_until_closed(s, Duration::from_secs(5));
        let text = String::from_utf8_lossy(&reply);
        assert!(text.contains("NetStream.Publish.BadName"), "{app}/{name}: {text:?}");
    }
    let mut s = rtmp_connect(gw.rtmp);
    s.write_all(&connect_cmd("live")).unwrap();
    s.write_all(&publish_cmd("play", "../good")).unwrap();
    let reply = read_until_closed(s, Duration::from_secs(5));
    assert!(String::from_utf8_lossy(&reply).contains("NetStream.Play.BadName"));

    // 8. Unsupported codec: refused with a clear status.
    let mut s = rtmp_connect(gw.rtmp);
    s.write_all(&connect_cmd("live")).unwrap();
    s.write_all(&publish_cmd("publish", "hevc")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut b = BytesMut::new();
    encode_message(&mut b, 6, 0, types::VIDEO, 1, &[0x1c, 0, 0, 0, 0], 128);
    s.write_all(&b).unwrap();
    let reply = read_until_closed(s, Duration::from_secs(5));
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.contains("NetStream.Publish.Rejected") && text.contains("unsupported video codec HEVC"),
        "{text:?}"
    );

    // The good stream never noticed.
    bystander.assert_unharmed(&gw, "the attacks");

    let log = gw.log();
    for why in [
        "unsupported RTMP version",
        "no data for 3 s",
        "invalid chunk size",
        "exceeds the limit of 1048576 bytes",
        "invalid AMF0",
        "bad stream name",
        "unsupported video codec HEVC",
    ] {
        assert!(log.contains(why), "no log line says {why:?}:\n{log}");
    }
    assert!(!log.contains("panicked"), "{log}");
}

/// An HTTP-FLV request (with `extra` header lines, each ending in CRLF) from a socket with a tiny
/// receive buffer, which the caller never reads.
async fn stuck_http_viewer(port: u16, path: &str, extra: &str) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes()).await.unwrap();
    s
}

/// A viewer that connects and never reads, over HTTP-FLV and over RTMP, with a tiny receive
/// buffer: the publisher and a normal viewer keep full frame rate, the stuck queues stay bounded
/// and the drop counter rises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_viewer_is_bounded_and_harms_nobody() {
    let gw = Gateway::start("stuck", "[hub]\nqueue_max_frames = 256\nqueue_max_bytes = 262144\n");
    let mut publisher = publish(&gw.rtmp_url("live/stuck"), 20, "640x360");
    gw.wait_live("live/stuck", Duration::from_secs(10));

    let stuck_http = stuck_http_viewer(gw.http, "/live/stuck.flv", "").await;
    let mut stuck_rtmp = rtmp_connect(gw.rtmp);
    stuck_rtmp.write_all(&connect_cmd("live")).unwrap();
    stuck_rtmp.write_all(&publish_cmd("play", "stuck")).unwrap();

    let frames_before = gw.stream("live/stuck").unwrap()["frames_in"]["video"].as_u64().unwrap();
    let t0 = Instant::now();
    let out = gw.dir.join("good.flv");
    let status = tokio::process::Command::new("curl")
        .args(["-s", "--max-time", "12", "-o"])
        .arg(&out)
        .arg(gw.http_url("/live/stuck.flv"))
        .status()
        .await
        .unwrap();
    let _ = status;
    let stats = gw.stream("live/stuck").unwrap();
    let rate = (stats["frames_in"]["video"].as_u64().unwrap() - frames_before) as f64 / t0.elapsed().as_secs_f64();
    assert!(rate >= 0.95 * 30.0, "publisher slowed to {rate:.1} fps");
    let r = check_capture(&out, 11.0);
    eprintln!("good viewer: {r:?}; stats: {stats}");
    assert!(stats["dropped_frames"].as_u64().unwrap() > 0, "no drops counted: {stats}");
    assert!(stats["queue_overflows"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["max_viewer_queue"]["bytes"].as_u64().unwrap() <= 262_144, "{stats}");
    assert!(stats["max_viewer_queue"]["frames"].as_u64().unwrap() <= 256, "{stats}");
    let (_, _, metrics) = gw.get("/metrics");
    assert!(!metrics.contains("streamgate_dropped_frames_total 0\n"), "{metrics}");
    drop(stuck_http);
    drop(stuck_rtmp);
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// Viewers that take nothing at all (their writes stall), over HTTP-FLV, WS-FLV and RTMP, are
/// closed after `http.viewer_stall_timeout_secs` (HTTP, WS) and `rtmp.idle_timeout_secs` (RTMP),
/// and their subscriptions end with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_viewers_are_closed() {
    let gw = Gateway::start("stalled", "[rtmp]\nidle_timeout_secs = 2\n[http]\nviewer_stall_timeout_secs = 2\n");
    let mut publisher = publish(&gw.rtmp_url("live/stalled"), 30, "640x360");
    gw.wait_live("live/stalled", Duration::from_secs(10));
    let http = stuck_http_viewer(gw.http, "/live/stalled.flv", "").await;
    let ws = stuck_http_viewer(
        gw.http,
        "/live/stalled.flv",
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    )
    .await;
    let mut rtmp = rtmp_connect_small(gw.rtmp);
    rtmp.write_all(&connect_cmd("live")).unwrap();
    rtmp.write_all(&publish_cmd("play", "stalled")).unwrap();
    let viewers = |gw: &Gateway| gw.stream("live/stalled").map_or(0, |s| s["viewers_total"].as_u64().unwrap_or(0));
    let t0 = Instant::now();
    while viewers(&gw) < 3 && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(viewers(&gw), 3, "{}", gw.stream("live/stalled").unwrap());
    // The kernel buffers (256 KiB send buffer, doubled) fill within seconds, then 2 s of stall.
    // One line per protocol says that viewer was closed for stalling.
    let closed = [
        "protocol=\"http-flv\" why=\"viewer took nothing for 2 s\"",
        "protocol=\"ws-flv\" why=\"viewer took nothing for 2 s\"",
        "closed: player: viewer took nothing for 2 s",
    ];
    while !closed.iter().all(|l| gw.log().contains(l)) {
        assert!(
            t0.elapsed() < Duration::from_secs(25),
            "a stalled viewer is still open: {}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(viewers(&gw), 0, "{}", gw.stream("live/stalled").unwrap());
    drop((http, ws, rtmp));
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// Drips one byte of a header every 200 ms; how long until the server closed the connection
/// (`None`: still open after `limit`).
fn drip_until_closed(mut s: TcpStream, limit: Duration) -> Option<Duration> {
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    while t.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => {} // an earlier request's answer
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(t.elapsed()),
        }
        if s.write_all(b"x").is_err() {
            return Some(t.elapsed());
        }
    }
    None
}

/// Slow-drip request heads (slowloris) are closed after `http.request_head_timeout_secs`: the
/// first request of a connection (read by the HTTP-FLV accept loop) and a later one on a
/// kept-alive connection (read by hyper). Whole requests keep working.
#[test]
fn slow_request_heads_are_closed() {
    let gw = Gateway::start("slowhead", "[http]\nrequest_head_timeout_secs = 1\n");
    let mut first = TcpStream::connect(("127.0.0.1", gw.http)).unwrap();
    first.write_all(b"GET /live/x.flv HTTP/1.1\r\nHost: x\r\nX-Drip: ").unwrap();
    let mut later = TcpStream::connect(("127.0.0.1", gw.http)).unwrap();
    later
        .write_all(b"GET /api/v1/streams HTTP/1.1\r\nHost: x\r\n\r\nGET /api/v1/streams HTTP/1.1\r\nHost: x\r\nX-Drip: ")
        .unwrap();
    let first = std::thread::spawn(move || drip_until_closed(first, Duration::from_secs(8)));
    let later = std::thread::spawn(move || drip_until_closed(later, Duration::from_secs(8)));
    let (first, later) = (first.join().unwrap(), later.join().unwrap());
    assert!(first.is_some_and(|t| t < Duration::from_secs(4)), "first head: {first:?}");
    assert!(later.is_some_and(|t| t < Duration::from_secs(4)), "kept-alive head: {later:?}");
    let (status, _, _) = gw.get("/api/v1/streams");
    assert_eq!(status, 200);
}

/// A Chromium 156 WHIP offer (H.264 + Opus): valid, but nobody behind it will ever connect.
const OFFER: &str = include_str!("../../webrtc/testdata/chromium156_offer.sdp");
const LOCAL: [u8; 4] = [127, 0, 0, 1];
const OTHER: [u8; 4] = [127, 0, 0, 2];

fn post_offer(src: [u8; 4], port: u16, path: &str, sdp: &str) -> (u16, String, String) {
    http_send_from(src, port, "POST", path, "application/sdp", sdp.as_bytes())
}

/// Reads until `marker` arrives or `within` passes; true if it arrived.
fn read_until(s: &mut TcpStream, marker: &[u8], within: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let t = Instant::now();
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    while t.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return false,
        }
        if all.windows(marker.len()).any(|w| w == marker) {
            return true;
        }
    }
    false
}

/// The picture of the first decoded frame is not flat (a grey or black screen would be).
fn assert_picture_has_content(file: &std::path::Path) {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-frames:v", "1", "-vf", "scale=160:90", "-pix_fmt", "gray", "-f", "rawvideo", "-"])
        .output()
        .unwrap();
    let px = out.stdout;
    assert_eq!(px.len(), 160 * 90, "no frame decoded: {}", String::from_utf8_lossy(&out.stderr));
    let mean = px.iter().map(|&p| f64::from(p)).sum::<f64>() / px.len() as f64;
    let var = px.iter().map(|&p| (f64::from(p) - mean).powi(2)).sum::<f64>() / px.len() as f64;
    assert!(var.sqrt() > 20.0, "flat picture: mean {mean:.0}, stddev {:.1}", var.sqrt());
}

/// Issue 13: a WHIP offer that never connects only reserves its key. An FFmpeg RTMP publisher
/// to the same key is accepted at once and plays over HTTP-FLV; the reservation lapses on its
/// own within webrtc.connect_timeout_ms (default 5 s) and is counted.
#[test]
fn whip_offer_that_never_connects_does_not_hold_its_key() {
    let gw = Gateway::start("squat", "");
    let t0 = Instant::now();
    let (status, head, body) = post_offer(LOCAL, gw.http, "/whip/live/squat", OFFER);
    assert_eq!(status, 201, "{head}\n{body}");
    let s = gw.stream("live/squat").expect("the key is listed while connecting");
    assert_eq!(s["state"], "connecting", "{s}");
    assert!(s["video"].is_null(), "{s}");
    // Play URLs behave as for a key nobody publishes.
    for path in ["/live/squat.flv", "/live/squat.m3u8", "/ll/live/squat.m3u8"] {
        let (status, _, body) = gw.get(path);
        assert_eq!(status, 404, "{path}: {body}");
    }
    assert_eq!(gw.metric("streamgate_webrtc_sessions_pending"), 1);
    assert_eq!(gw.metric("streamgate_streams"), 0);

    // The real publisher connects first, so it wins, well within the reservation time.
    let mut ffmpeg = publish(&gw.rtmp_url("live/squat"), 15, "640x360");
    gw.wait_live("live/squat", Duration::from_secs(5));
    let accepted = t0.elapsed();
    let s = gw.stream("live/squat").unwrap();
    assert_eq!(s["state"], "live");
    assert_eq!(s["publisher"]["protocol"], "rtmp", "{s}");
    eprintln!("RTMP publisher live {accepted:?} after the squatting offer");
    assert!(accepted < Duration::from_secs(5), "{accepted:?}");

    let out = gw.dir.join("squat.flv");
    let st = std::process::Command::new("curl")
        .args(["-s", "--max-time", "5", "-o"])
        .arg(&out)
        .arg(gw.http_url("/live/squat.flv"))
        .status()
        .unwrap();
    let _ = st;
    check_capture(&out, 4.0);
    assert_picture_has_content(&out);

    // The offer lapses on its own: counted, nothing pending, the key stays the publisher's.
    while gw.metric("streamgate_webrtc_sessions_pending") > 0 {
        assert!(t0.elapsed() < Duration::from_secs(8), "the reservation did not lapse: {}", gw.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("reservation lapsed {:?} after the offer", t0.elapsed());
    assert_eq!(gw.metric("streamgate_webrtc_sessions_ended_total{result=\"connect_timeout\"}"), 1);
    assert_eq!(gw.stream("live/squat").unwrap()["publisher"]["protocol"], "rtmp");
    // An offer for a live key is refused outright.
    let (status, _, body) = post_offer(LOCAL, gw.http, "/whip/live/squat", OFFER);
    assert_eq!(status, 409, "{body}");
    assert_for_people("409", &body);
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
}

/// Issue 13: 500 offers from one address leave at most `max_pending_per_address` pending (the
/// rest 429 with Retry-After), a second address fills the global limit (then 503), idle RTMP
/// connections beyond their limit are closed at once and the rest after
/// rtmp.connect_timeout_secs; a real publisher and its viewer never notice, a new viewer from
/// another address gets in, and memory is back within the reservation time.
#[test]
fn whip_and_rtmp_floods_are_bounded() {
    let gw = Gateway::start("flood", "[webrtc]\nmax_pending = 15\n[rtmp]\nconnect_timeout_secs = 2\n");
    let bystander = Bystander::start(&gw, "live/real");
    let rss0 = gw.rss_kb();
    let t0 = Instant::now();

    let mut created = 0;
    let mut too_many = 0;
    for i in 0..500 {
        let (status, head, body) = post_offer(LOCAL, gw.http, &format!("/whip/flood/k{i}"), OFFER);
        match status {
            201 => created += 1,
            429 => {
                too_many += 1;
                let retry: u64 = header(&head, "retry-after").expect("429 without Retry-After").parse().unwrap();
                assert!((1..=5).contains(&retry), "{head}");
                assert_for_people("429", &body);
            }
            other => panic!("offer {i}: {other} {head}\n{body}"),
        }
    }
    let flood_secs = t0.elapsed().as_secs_f64();
    eprintln!("500 offers in {flood_secs:.2} s: {created} created, {too_many} refused with 429");
    assert_eq!(created, 10, "webrtc.max_pending_per_address is 10");
    assert_eq!(too_many, 490);
    assert_eq!(gw.metric("streamgate_webrtc_sessions_pending"), 10);
    let refused = gw.metric("streamgate_webrtc_offers_refused_total{limit=\"per_address\"}")
        + gw.metric("streamgate_webrtc_offers_refused_total{limit=\"rate\"}");
    assert_eq!(refused, 490);
    let streams = gw.streams();
    let all = streams["streams"].as_array().unwrap();
    assert_eq!(all.iter().filter(|s| s["state"] == "connecting").count(), 10);
    assert_eq!(
        all.iter().filter(|s| s["state"] == "live").count(),
        1,
        "only the real publisher is live"
    );

    // Another address gets in until the server-wide limit (15), then 503 with Retry-After.
    let statuses: Vec<(u16, String, String)> = (0..8)
        .map(|i| post_offer(OTHER, gw.http, &format!("/whip/flood/o{i}"), OFFER))
        .collect();
    assert!(
        statuses[..5].iter().all(|(s, _, _)| *s == 201),
        "{:?}",
        statuses.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    for (status, head, body) in &statuses[5..] {
        assert_eq!(*status, 503, "{head}");
        assert!(header(head, "retry-after").is_some(), "{head}");
        assert_for_people("503", body);
    }
    assert_eq!(gw.metric("streamgate_webrtc_offers_refused_total{limit=\"total\"}"), 3);

    // RTMP connections that never handshake: 32 held per address, the rest closed at once.
    let idle: Vec<TcpStream> = (0..40).map(|_| connect_from(LOCAL, gw.rtmp)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut closed_at_once = 0;
    for s in &idle {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        match (&*s).read(&mut b) {
            Ok(0) => closed_at_once += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed_at_once += 1,
            _ => {}
        }
    }
    assert_eq!(closed_at_once, 8, "rtmp.max_pending_per_address is 32");
    assert_eq!(gw.metric("streamgate_rtmp_connections_refused_total{limit=\"per_address\"}"), 8);
    // A new RTMP viewer from another address is served meanwhile.
    let mut viewer = rtmp_connect_with(connect_from(OTHER, gw.rtmp));
    viewer.write_all(&connect_cmd("live")).unwrap();
    viewer.write_all(&publish_cmd("play", "real")).unwrap();
    assert!(
        read_until(&mut viewer, b"NetStream.Play.Start", Duration::from_secs(3)),
        "{}",
        gw.log()
    );
    // (It reads no further: closed now so that its queue does not count as memory below.)
    drop(viewer);
    // The held ones are closed after rtmp.connect_timeout_secs (2 s).
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(gw.metric("streamgate_rtmp_connections_pending"), 0);
    assert_eq!(gw.metric("streamgate_rtmp_connect_timeouts_total"), 32);
    drop(idle);

    // Within the reservation time (5 s) every offer lapsed; memory is back.
    while gw.metric("streamgate_webrtc_sessions_pending") > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5) + Duration::from_secs_f64(flood_secs) + Duration::from_secs(2),
            "offers still pending"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let lapsed = t0.elapsed();
    let rss1 = gw.rss_kb();
    assert_eq!(gw.metric("streamgate_webrtc_sessions_ended_total{result=\"connect_timeout\"}"), 15);
    // The allocator keeps what it once held, so the first flood sets a high-water mark (bounded
    // by the limits); a second flood must come back to it: nothing stays behind per flood.
    let flood = |round: usize| {
        let created = (0..500)
            .filter(|i| post_offer(LOCAL, gw.http, &format!("/whip/flood/r{round}k{i}"), OFFER).0 == 201)
            .count();
        assert!(created <= 10, "{created}");
        let t = Instant::now();
        while gw.metric("streamgate_webrtc_sessions_pending") > 0 {
            assert!(t.elapsed() < Duration::from_secs(7), "offers still pending");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    flood(1);
    let rss2 = gw.rss_kb();
    eprintln!(
        "offers lapsed {lapsed:?} after the flood began; RSS {rss0} KiB before, {rss1} KiB after the first flood, {rss2} KiB after the second"
    );
    assert!(rss1 <= rss0 + 16 * 1024, "RSS grew from {rss0} to {rss1} KiB");
    assert!(rss2 <= rss1 + 1024, "RSS grew from {rss1} to {rss2} KiB over a second flood");
    assert_eq!(gw.streams()["streams"].as_array().unwrap().len(), 1);

    // The real publisher and its viewer never noticed.
    bystander.assert_unharmed(&gw, "the floods");
    assert!(!gw.log().contains("panicked"));
}

/// AMF0 strings that follow a "description" key in what an RTMP server sent.
fn rtmp_descriptions(reply: &[u8]) -> Vec<String> {
    let key = b"\x00\x0bdescription\x02";
    let mut out = Vec::new();
    let mut rest = reply;
    while let Some(p) = rest.windows(key.len()).position(|w| w == key) {
        let s = &rest[p + key.len()..];
        if s.len() < 2 {
            break;
        }
        let n = usize::from(u16::from_be_bytes([s[0], s[1]]));
        out.push(String::from_utf8_lossy(&s[2..(2 + n).min(s.len())]).into_owned());
        rest = &s[2..];
    }
    out
}

/// Issue 13: every error answer of every protocol is a sentence for a person: no memory
/// addresses, Rust debug syntax, source paths or panics, whatever the request.
#[test]
fn error_responses_are_for_people() {
    let gw = Gateway::start("errors", "[webrtc]\noffers_burst_per_address = 100\n");
    let mut publisher = publish(&gw.rtmp_url("live/on"), 30, "320x240");
    gw.wait_live("live/on", Duration::from_secs(10));
    let mut checked = Vec::new();
    let mut check = |what: String, status: u16, body: &str| {
        assert!(status >= 400, "{what}: {status} {body}");
        assert!(
            what.starts_with("HEAD") || !body.trim().is_empty(),
            "{what}: {status} with an empty body"
        );
        assert_for_people(&what, body);
        checked.push(format!("{what} -> {status} {}", body.trim()));
    };

    // WHIP: malformed, refused and impossible offers, wrong types, sizes, methods and names.
    let no_fingerprint: String = OFFER
        .lines()
        .filter(|l| !l.starts_with("a=fingerprint"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let av1_only = OFFER
        .replace("H264/90000", "H26X/90000")
        .replace("VP8/90000", "VP8X/90000")
        .replace("VP9/90000", "VP9X/90000");
    let offers: Vec<(&str, String)> = vec![
        ("v=0 garbage", "v=0 garbage".into()),
        ("not SDP", "v=0\r\nthis is not sdp".into()),
        ("empty", String::new()),
        ("bad t= line", OFFER.replacen("t=0 0", "t=zero", 1)),
        ("missing rtpmap", OFFER.replacen("a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP8", 1)),
        ("no m-lines", OFFER.split("m=video").next().unwrap().to_owned()),
        ("no fingerprint", no_fingerprint),
        ("AV1 only", av1_only),
        ("no Opus", OFFER.replace("opus/48000", "opux/48000")),
        ("binary", String::from_utf8_lossy(&xorshift_bytes(3000, 9)).into_owned()),
        ("live key", OFFER.to_owned()),
    ];
    for (what, sdp) in &offers {
        let path = if *what == "live key" { "/whip/live/on" } else { "/whip/live/err" };
        let (status, _, body) = post_offer(LOCAL, gw.http, path, sdp);
        check(format!("WHIP {what}"), status, &body);
    }
    let (status, _, body) = http_send_from(LOCAL, gw.http, "POST", "/whip/live/err", "text/plain", b"x");
    check("WHIP text/plain".into(), status, &body);
    let big = vec![b'a'; 100_000];
    let (status, _, body) = http_send_from(LOCAL, gw.http, "POST", "/whip/live/err", "application/sdp", &big);
    check("WHIP 100 KB".into(), status, &body);
    for path in [
        "/whip/live/..",
        "/whip/live/a%20b",
        "/whip/%ff%fe/x",
        "/whip/live/x%2f..",
        &format!("/whip/live/{}", "n".repeat(200)),
    ] {
        let (status, _, body) = post_offer(LOCAL, gw.http, path, OFFER);
        check(format!("WHIP {path}"), status, &body);
    }
    for method in ["DELETE", "PATCH", "GET", "PUT"] {
        let (status, _, body) = http_send_from(
            LOCAL,
            gw.http,
            method,
            "/whip/live/err/nosuchsession",
            "application/trickle-ice-sdpfrag",
            b"a=x",
        );
        check(format!("WHIP {method} session"), status, &body);
    }

    // HTTP play: names, formats, keys nobody publishes, HLS query tricks, unknown routes.
    for path in [
        "/live/nosuch.flv",
        "/live/..flv",
        "/live/a%2F..flv",
        "/live/%ff.flv",
        "/live/on.mp4",
        "/live/nosuch.m3u8",
        "/live/on-99999.ts",
        "/live/on-abc.ts",
        "/ll/live/nosuch.m3u8",
        "/ll/live/on.m3u8?_HLS_msn=abc",
        "/ll/live/on.m3u8?_HLS_part=1",
        "/ll/live/on.m3u8?_HLS_msn=1&_HLS_msn=2",
        "/ll/live/on.m3u8?_HLS_msn=99999999999999999999999",
        "/ll/live/on-x.m4s",
        "/ll/live/on.txt",
        "/no/such/route/at/all",
        "/api/v1/streams/x",
        "/%00",
    ] {
        let (status, _, body) = gw.get(path);
        check(format!("GET {path}"), status, &body);
    }
    let (status, _, body) = http_request(gw.http, "HEAD", "/live/nosuch.flv");
    check("HEAD not live".into(), status, &body);
    // A WebSocket-FLV upgrade for a key that is not live.
    let ws = b"GET /live/nosuch.flv HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let raw = String::from_utf8_lossy(&raw_exchange(gw.http, ws, Duration::from_secs(5))).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    check(
        "WS-FLV not live".into(),
        head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0),
        body,
    );
    // A request that is not HTTP at all.
    let raw = String::from_utf8_lossy(&raw_exchange(gw.http, b"\x16\x03\x01\x02\x00hello\r\n\r\n", Duration::from_secs(5))).into_owned();
    assert_for_people("not HTTP", &raw);

    // RTMP: the descriptions of every refusal.
    let mut rtmp = |what: &str, app: &str, verb: &str, name: &str, extra: &[u8]| {
        let mut s = rtmp_connect(gw.rtmp);
        s.write_all(&connect_cmd(app)).unwrap();
        s.write_all(&publish_cmd(verb, name)).unwrap();
        if !extra.is_empty() {
            std::thread::sleep(Duration::from_millis(300));
            let _ = s.write_all(extra);
        }
        let reply = read_until_closed(s, Duration::from_secs(5));
        let texts = rtmp_descriptions(&reply);
        assert!(!texts.is_empty(), "{what}: no description in {:?}", String::from_utf8_lossy(&reply));
        for t in texts {
            assert_for_people(what, &t);
            checked.push(format!("RTMP {what} -> {t}"));
        }
    };
    rtmp("publish ..", "live", "publish", "..", &[]);
    rtmp("publish a/b", "live", "publish", "a/b", &[]);
    rtmp("publish live key", "live", "publish", "on", &[]);
    rtmp("play ../x", "live", "play", "../x", &[]);
    rtmp("play not live", "live", "play", "nosuch", &[]);
    let mut hevc = BytesMut::new();
    encode_message(&mut hevc, 6, 0, types::VIDEO, 1, &[0x1c, 0, 0, 0, 0], 128);
    rtmp("HEVC", "live", "publish", "hevc", &hevc);
    let mut mp3 = BytesMut::new();
    encode_message(&mut mp3, 6, 0, types::AUDIO, 1, &[0x2f, 0, 0, 0], 128);
    rtmp("MP3", "live", "publish", "mp3", &mp3);
    let mut badavc = BytesMut::new();
    encode_message(&mut badavc, 6, 0, types::VIDEO, 1, &[0x17, 0, 0, 0, 0, 1, 2, 3], 128);
    rtmp("bad AVC header", "live", "publish", "badavc", &badavc);

    eprintln!("{} error answers checked:\n{}", checked.len(), checked.join("\n"));
    assert!(!gw.log().contains("panicked"));
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// The WHIP test offer turned into a viewer's (WHEP) offer: it receives what it sent.
fn whep_offer() -> String {
    OFFER
        .lines()
        .filter(|l| !l.starts_with("a=ssrc") && !l.starts_with("a=msid:"))
        .map(|l| if l == "a=sendonly" { "a=recvonly" } else { l })
        .map(|l| format!("{l}\r\n"))
        .collect()
}

/// Issue 15: WHEP refuses what it cannot serve with a sentence for that request only: a key
/// nobody publishes (404), an offer that cannot receive (406), a stream with B-frames (406,
/// naming the encoder setting), malformed offers (400), unknown sessions (404), trickle (405);
/// a flood of offers is bounded like WHIP's and lapses, its hub subscriptions with it. A real
/// publisher and its FLV viewer never notice.
#[test]
fn whep_refusals_and_floods_touch_nothing_else() {
    let gw = Gateway::start("whep", "");
    let bystander = Bystander::start(&gw, "live/real");
    let viewer_offer = whep_offer();

    let (status, _, body) = post_offer(LOCAL, gw.http, "/whep/live/nobody", &viewer_offer);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not live"), "{body}");
    assert_for_people("404", &body);
    // A publisher's offer (sendonly) cannot receive the stream.
    let (status, _, body) = post_offer(LOCAL, gw.http, "/whep/live/real", OFFER);
    assert_eq!(status, 406, "{body}");
    assert_for_people("406", &body);
    for sdp in ["v=0 garbage", "", "v=0\r\nthis is not sdp"] {
        let (status, _, body) = post_offer(LOCAL, gw.http, "/whep/live/real", sdp);
        assert_eq!(status, 400, "{sdp:?}: {body}");
        assert_for_people("400", &body);
    }
    let (status, _, body) = http_send_from(LOCAL, gw.http, "POST", "/whep/live/real", "text/plain", b"x");
    assert_eq!(status, 415, "{body}");
    for path in ["/whep/live/..", "/whep/live/x%2f..", "/whep/%ff%fe/x"] {
        let (status, _, body) = post_offer(LOCAL, gw.http, path, &viewer_offer);
        assert_eq!(status, 400, "{path}: {body}");
    }
    let (status, _, body) = http_send_from(LOCAL, gw.http, "DELETE", "/whep/live/real/nosuchsession", "", b"");
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = http_send_from(
        LOCAL,
        gw.http,
        "PATCH",
        "/whep/live/real/nosuchsession",
        "application/trickle-ice-sdpfrag",
        b"a=x",
    );
    assert_eq!(status, 405, "{body}");
    assert_for_people("405", &body);

    // FFmpeg's x264 defaults (B-frames), as OBS sends them: refused with what to change.
    require("ffmpeg");
    let mut bframes = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
        ])
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "20"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-c:a", "aac", "-f", "flv"])
        .arg(gw.rtmp_url("live/bframes"))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    gw.wait_live("live/bframes", Duration::from_secs(10));
    // Until the first B-frame arrives the stream looks like any other (those viewers' play
    // tasks end the session when it comes).
    let t = Instant::now();
    let mut early = 0;
    let (status, body) = loop {
        let (status, _, body) = post_offer(LOCAL, gw.http, "/whep/live/bframes", &viewer_offer);
        if status != 201 || t.elapsed() > Duration::from_secs(5) {
            break (status, body);
        }
        early += 1;
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(status, 406, "{body}");
    assert!(body.contains("B-frames") && body.contains("-bf 0"), "{body}");
    assert_for_people("406", &body);
    assert_eq!(gw.stream("live/bframes").unwrap()["video"]["bframes"], true);
    let _ = bframes.kill();
    let _ = bframes.wait();

    // A flood of valid offers nobody connects: bounded per address, each holding a hub
    // subscription until it lapses.
    let mut created = 0;
    let mut refused = 0;
    for _ in 0..200 {
        match post_offer(LOCAL, gw.http, "/whep/live/real", &viewer_offer) {
            (201, head, body) => {
                created += 1;
                assert!(
                    header(&head, "location").is_some_and(|l| l.starts_with("/whep/live/real/")),
                    "{head}"
                );
                assert!(body.starts_with("v=0"), "{body}");
            }
            (429, head, body) => {
                refused += 1;
                assert!(header(&head, "retry-after").is_some(), "{head}");
                assert_for_people("429", &body);
            }
            (other, head, body) => panic!("{other} {head}\n{body}"),
        }
    }
    // webrtc.max_pending_per_address is 10, and the offers above spent some of the rate burst.
    assert!(
        (5..=10).contains(&created) && created + refused == 200,
        "{created} created, {refused} refused"
    );
    assert_eq!(gw.metric("streamgate_webrtc_sessions_pending"), created + early);
    assert_eq!(gw.stream("live/real").unwrap()["viewers"]["webrtc"], created);
    let t = Instant::now();
    while gw.metric("streamgate_webrtc_sessions_pending") > 0 {
        assert!(t.elapsed() < Duration::from_secs(8), "offers still pending");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        gw.stream("live/real").unwrap()["viewers"]["webrtc"].is_null(),
        "subscriptions went with the offers"
    );
    bystander.assert_unharmed(&gw, "the WHEP refusals and flood");
    assert!(!gw.log().contains("panicked"));
}

/// A client of the forwarding API (`/sfu` WebSocket), blocking.
struct SfuClient {
    ws: tokio_tungstenite::tungstenite::WebSocket<TcpStream>,
}

impl SfuClient {
    fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (ws, _) = tokio_tungstenite::tungstenite::client(format!("ws://127.0.0.1:{port}/sfu"), stream).unwrap();
        Self { ws }
    }

    fn send(&mut self, msg: tokio_tungstenite::tungstenite::Message) {
        self.ws.send(msg).unwrap();
    }

    /// The next message from the gateway, as JSON; `None` when the connection closed.
    fn next(&mut self) -> Option<serde_json::Value> {
        loop {
            match self.ws.read() {
                Ok(tokio_tungstenite::tungstenite::Message::Text(t)) => return Some(serde_json::from_str(&t).unwrap()),
                Ok(tokio_tungstenite::tungstenite::Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Sends `msg` and returns the gateway's answer.
    fn ask(&mut self, msg: &str) -> serde_json::Value {
        self.send(tokio_tungstenite::tungstenite::Message::text(msg));
        self.next().unwrap_or_else(|| panic!("connection closed after {msg}"))
    }

    /// Sends `msg`; the answer is an error whose message contains `says`.
    fn refused(&mut self, msg: &str, says: &str) {
        let r = self.ask(msg);
        assert_eq!(r["type"], "error", "{msg}: {r}");
        let m = r["message"].as_str().unwrap();
        assert!(m.contains(says), "{msg}: {m}");
        assert_for_people(msg, m);
    }
}

#[test]
fn sfu_refusals_and_floods_touch_nothing_else() {
    let gw = Gateway::start("sfu", "");
    let bystander = Bystander::start(&gw, "live/real");

    let mut c = SfuClient::connect(gw.http);
    c.send(tokio_tungstenite::tungstenite::Message::binary(vec![1, 2, 3]));
    assert_eq!(c.next().unwrap()["type"], "error");
    c.refused("not json", "bad message");
    c.refused(r#"{"type":"publish","key":"live/real"}"#, "bad message");
    c.refused(r#"{"type":"subscribe","keys":[]}"#, "at least one");
    c.refused(r#"{"type":"subscribe","keys":["live/nobody"]}"#, "not live");
    c.refused(r#"{"type":"subscribe","keys":["live/.."]}"#, "stream key");
    c.refused(r#"{"type":"unsubscribe","key":"live/real"}"#, "nothing is subscribed");
    c.refused(r#"{"type":"answer","sdp":"v=0"}"#, "no offer");

    // A session: the server offers, a second subscribe to the same key is refused, a bad
    // answer ends the session and says so.
    let offer = c.ask(r#"{"type":"subscribe","keys":["live/real"]}"#);
    assert_eq!(offer["type"], "offer", "{offer}");
    let sdp = offer["sdp"].as_str().unwrap();
    assert!(
        sdp.starts_with("v=0") && sdp.contains("m=video") && sdp.contains("a=msid:live.real"),
        "{sdp}"
    );
    assert_eq!(gw.stream("live/real").unwrap()["viewers"]["webrtc"], 1);
    c.refused(r#"{"type":"subscribe","keys":["live/real"]}"#, "already subscribed");
    c.refused(r#"{"type":"unsubscribe","key":"live/other"}"#, "not subscribed");
    c.refused(r#"{"type":"answer","sdp":"v=0 garbage"}"#, "bad SDP answer");
    let closed = c.next().unwrap();
    assert_eq!(closed["type"], "closed", "{closed}");
    assert!(c.next().is_none(), "the socket closes with the session");

    // A flood of requests: refused beyond the rate, the connection stays.
    let mut f = SfuClient::connect(gw.http);
    let mut limited = 0;
    for _ in 0..40 {
        let r = f.ask(r#"{"type":"subscribe","keys":["live/nobody"]}"#);
        assert_eq!(r["type"], "error", "{r}");
        limited += r["message"].as_str().unwrap().contains("requests per second") as u32;
    }
    assert!(limited >= 15, "{limited} of 40 rate-limited");

    // An oversized message closes that connection only.
    let mut big = SfuClient::connect(gw.http);
    let huge = format!(r#"{{"type":"answer","sdp":"{}"}}"#, "a".repeat(100_000));
    let _ = big.ws.send(tokio_tungstenite::tungstenite::Message::text(huge));
    assert!(big.next().is_none(), "an oversized message closes the connection");

    // Sessions whose clients go away (answered or not) end with them.
    for _ in 0..5 {
        let mut s = SfuClient::connect(gw.http);
        assert_eq!(s.ask(r#"{"type":"subscribe","keys":["live/real"]}"#)["type"], "offer");
    }
    let t = Instant::now();
    while gw.metric("streamgate_webrtc_sessions") > 0 || !gw.stream("live/real").unwrap()["viewers"]["webrtc"].is_null() {
        assert!(t.elapsed() < Duration::from_secs(5), "sessions outlived their clients");
        std::thread::sleep(Duration::from_millis(100));
    }
    bystander.assert_unharmed(&gw, "the SFU refusals and floods");
    assert!(!gw.log().contains("panicked"));
}
