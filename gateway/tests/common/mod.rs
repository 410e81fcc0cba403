//! Helpers for tests that run the real `streamgate` binary against real peers (ffmpeg, ffprobe,
//! curl). Missing tools fail the test with the command that installs them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn require(tool: &str) {
    let ok = Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "{tool} is not installed: run `scripts/deps.sh test` (or `make test`, which does)"
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamgate-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Gateway {
    child: Child,
    pub http: u16,
    pub rtmp: u16,
    pub dir: PathBuf,
}

impl Gateway {
    /// Starts the binary on free loopback ports with `extra` TOML appended to the config.
    pub fn start(name: &str, extra: &str) -> Gateway {
        let dir = temp_dir(name);
        let (http, rtmp) = (free_port(), free_port());
        let cfg = dir.join("streamgate.toml");
        std::fs::write(
            &cfg,
            format!(
                "[server]\nhttp = \"127.0.0.1:{http}\"\nrtmp = \"127.0.0.1:{rtmp}\"\nwebrtc_udp = \"127.0.0.1:0\"\nlog = \"info\"\n{extra}"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("gateway.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .arg("--config")
            .arg(&cfg)
            .env("NO_COLOR", "1")
            .env("RUST_LOG_STYLE", "never")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start streamgate");
        let gw = Gateway { child, http, rtmp, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", http)).is_err() || TcpStream::connect(("127.0.0.1", rtmp)).is_err() {
            assert!(Instant::now() < deadline, "gateway did not start: {}", gw.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        gw
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the gateway process, KiB.
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// One sample of `/metrics` (`name` with its labels, e.g. `x_total{a="b"}`).
    pub fn metric(&self, name: &str) -> u64 {
        let (_, _, m) = self.get("/metrics");
        m.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{m}"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }

    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{key}", self.rtmp)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    pub fn get(&self, path: &str) -> (u16, String, String) {
        http_request(self.http, "GET", path)
    }

    pub fn streams(&self) -> serde_json::Value {
        let (status, _, body) = self.get("/api/v1/streams");
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    pub fn stream(&self, key: &str) -> Option<serde_json::Value> {
        self.streams()["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == key)
            .cloned()
    }

    pub fn wait_live(&self, key: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.stream(key) {
                if !s["video"].is_null() && !s["audio"].is_null() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{key} did not go live: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "gateway did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `src` (127.0.0.0/8 is all
/// local, so tests can be several client addresses).
pub fn connect_from(src: [u8; 4], port: u16) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&std::net::SocketAddr::from((src, 0)).into()).unwrap();
    sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into()).unwrap();
    sock.into()
}

/// An HTTP/1.1 request with a body from `src`: (status, head, body). Reads until close.
pub fn http_send_from(src: [u8; 4], port: u16, method: &str, path: &str, ctype: &str, body: &[u8]) -> (u16, String, String) {
    let mut s = connect_from(src, port);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    // A server may answer (413) and close before the whole body is written.
    let _ = s.write_all(&req);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// The value of header `name` (lower case) in a response head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Panics if an error message meant for a person carries a memory address, Rust debug syntax,
/// a source path or a panic: what users read must be a sentence, not internals.
pub fn assert_for_people(what: &str, text: &str) {
    let lower = text.to_ascii_lowercase();
    let b = lower.as_bytes();
    for (i, _) in lower.match_indices("0x") {
        let hex = b[i + 2..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
        assert!(hex < 6, "{what}: a memory address in {text:?}");
    }
    for bad in [
        "pointeroffset",
        "some(",
        "none)",
        "ok(",
        "err(",
        " { ",
        "::",
        ".rs:",
        "panicked",
        "backtrace",
        "/work/",
        "/root/",
        "/home/",
        "/tmp/",
        "/var/",
        "\\n",
        "\\\"",
        "error {",
        "kind:",
    ] {
        assert!(!lower.contains(bad), "{what}: {bad:?} (internals) in {text:?}");
    }
}

/// Sends `request` on a fresh connection and reads until the server closes (or `timeout` passes
/// without a byte).
pub fn raw_exchange(port: u16, request: &[u8], timeout: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    raw
}

/// A minimal HTTP/1.1 client: (status, headers, body). Reads until close.
pub fn http_request(port: u16, method: &str, path: &str) -> (u16, String, String) {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://example.com\r\nConnection: close\r\n\r\n");
    let raw = raw_exchange(port, req.as_bytes(), Duration::from_secs(5));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        String::from_utf8_lossy(&dechunk(body.as_bytes()).0).into_owned()
    } else {
        body.to_owned()
    };
    (status, head.to_owned(), body)
}

/// GET with extra header lines (each ending in \r\n); the body as bytes (for responses with a
/// Content-Length, not chunked ones). Reads until close.
pub fn http_get_bytes(port: u16, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n");
    let raw = raw_exchange(port, req.as_bytes(), Duration::from_secs(10));
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").map_or(raw.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head, raw[end..].to_vec())
}

/// Undoes chunked transfer coding; true if the body ended with its last chunk.
pub fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return (body, &rest[nl..] == b"\r\n\r\n");
        }
        let data = &rest[nl + 2..];
        if data.len() < size + 2 {
            break;
        }
        body.extend_from_slice(&data[..size]);
        assert_eq!(&data[size..size + 2], b"\r\n", "chunk trailer");
        rest = &data[size + 2..];
    }
    (body, false)
}

/// ffmpeg publishing testsrc2 H.264 + AAC (1 s GOP) in real time for `secs` seconds.
pub fn publish(url: &str, secs: u32, size: &str) -> Child {
    require("ffmpeg");
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=30"))
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-t", &secs.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-b:a", "128k", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ffmpeg")
}

#[derive(Debug, Clone, Copy)]
pub struct Packet {
    pub video: bool,
    pub pts: f64,
    pub dts: f64,
    pub duration: f64,
    pub key: bool,
}

/// ffprobe's `-show_entries ENTRIES` of `target` as CSV lines (no section names).
fn ffprobe_csv(entries: &str, target: &std::ffi::OsStr) -> String {
    require("ffprobe");
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", entries, "-of", "csv=p=0", "-rw_timeout", "8000000"])
        .arg(target)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// ffprobe's packets of a file (both tracks), in file order.
pub fn probe_packets(file: &Path) -> Vec<Packet> {
    let text = ffprobe_csv("packet=codec_type,pts_time,dts_time,duration_time,flags", file.as_os_str());
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            if f.len() < 5 {
                return None;
            }
            let num = |s: &str| s.parse::<f64>().ok();
            let dts = num(f[2]).or(num(f[1]))?;
            Some(Packet {
                video: f[0] == "video",
                pts: num(f[1]).unwrap_or(dts),
                dts,
                duration: num(f[3]).unwrap_or(0.0),
                key: f[4].contains('K'),
            })
        })
        .collect()
}

/// `codec_name`s ffprobe finds, in stream order.
pub fn probe_codecs(target: &str) -> Vec<String> {
    ffprobe_csv("stream=codec_name", target.as_ref())
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// What the interop tests demand of a capture, returned for messages.
#[derive(Debug)]
pub struct CaptureReport {
    pub video_frames: usize,
    pub audio_frames: usize,
    pub video_span: f64,
    pub audio_span: f64,
}

pub fn check_capture(file: &Path, wall_secs: f64) -> CaptureReport {
    let pkts = probe_packets(file);
    let video: Vec<&Packet> = pkts.iter().filter(|p| p.video).collect();
    let audio: Vec<&Packet> = pkts.iter().filter(|p| !p.video).collect();
    assert!(
        !video.is_empty() && !audio.is_empty(),
        "{}: no video or no audio ({} packets)",
        file.display(),
        pkts.len()
    );
    assert!(video[0].key, "{}: first video packet is not a keyframe", file.display());
    for track in [&video, &audio] {
        for w in track.windows(2) {
            assert!(
                w[1].dts >= w[0].dts,
                "{}: DTS went backwards: {:?} -> {:?}",
                file.display(),
                w[0],
                w[1]
            );
        }
    }
    let span = |t: &[&Packet]| t.last().unwrap().dts + t.last().unwrap().duration - t[0].dts;
    let r = CaptureReport {
        video_frames: video.len(),
        audio_frames: audio.len(),
        video_span: span(&video),
        audio_span: span(&audio),
    };
    // >= 95% of the 30 fps a publisher sends over the time the capture covers.
    assert!(
        r.video_span >= wall_secs * 0.9,
        "{}: only {:.2} s of video in a {wall_secs} s capture: {r:?}",
        file.display(),
        r.video_span
    );
    assert!(
        r.video_frames as f64 >= 0.95 * 30.0 * r.video_span,
        "{}: frames missing: {r:?}",
        file.display()
    );
    assert!(
        (r.video_span - r.audio_span).abs() <= 0.1,
        "{}: audio and video durations differ by more than 100 ms: {r:?}",
        file.display()
    );
    r
}
