//! `whipload`: WebRTC publishers and transcoding costs for benchmarks.
//!
//! ```text
//! whipload publish HTTP_BASE N WARMUP_SECS WINDOW_SECS VIDEO.h264 AUDIO.ogg SERVER_PID
//!     N WHIP publishers (real ICE, DTLS, SRTP: ingest::webrtc::client::WhipClient), each
//!     POSTing to HTTP_BASE/whip/bench/pub{i} and sending the prerecorded H.264 access units
//!     (20 fps) and Opus packets (20 ms) in a loop. Prints one JSON line: server CPU and RSS
//!     over the window, per publisher.
//! whipload play HTTP_BASE KEY N WARMUP_SECS WINDOW_SECS SERVER_PID
//!     N WHEP viewers (real ICE, DTLS, SRTP: webrtc::client::WhepClient, frames depacketized
//!     and counted, payloads dropped) of HTTP_BASE/whep/KEY. Prints one JSON line: server CPU
//!     and RSS over the window, per viewer and per delivered Mbit/s, and the frames each
//!     viewer received in the window (min / median), which tells whether everyone got
//!     everything.
//!     KEY `janus` plays Janus' streaming plugin (mountpoint 1) at HTTP_BASE through its HTTP
//!     API instead (Janus offers, the viewer answers).
//! whipload room HTTP_BASE N WARMUP_SECS WINDOW_SECS VIDEO.h264 AUDIO.ogg SERVER_PID
//!     A room of N synthetic participants: each publishes bench/room{i} with WHIP (as
//!     `publish`) and receives the N-1 others on one session of the forwarding API (`/sfu`:
//!     the server offers, the participant answers; what the room's Socket.IO events carry).
//!     Prints one JSON line: server CPU with the publishers alone, then with the forwarding,
//!     per forwarded stream (N x (N-1)), and the video frames each participant received.
//! whipload transcode-cost VIDEO.webm AUDIO.ogg...
//!     Runs the gateway's VP8 -> H.264 and Opus -> AAC transcoders over the files as fast as
//!     they go and prints the CPU time per second of media (= share of one core in real time).
//! ```
//! Everything is bounded: publishers stop after WARMUP + WINDOW seconds. Media sockets bind to
//! 127.0.0.1, or to `WHIPLOAD_BIND` (the host side of a namespace link).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ffmpeg_next as ff;
use ingest::webrtc::audio::{opus_is_stereo, AacEncoderKind, OpusToAac};
use ingest::webrtc::transcode::{SourceCodec, VpxToH264};
use media::avc::annexb_nal_units;
use streamgate_loadgen::{proc_cpu_and_rss, split_url};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use webrtc::client::WhipClient;

const VIDEO_PERIOD: Duration = Duration::from_millis(50);
const AUDIO_PERIOD: Duration = Duration::from_millis(20);

/// The packets of the best stream of a media type in a file, in order.
fn read_packets(path: &str, kind: ff::media::Type) -> Result<Vec<Vec<u8>>> {
    ff::init()?;
    ff::util::log::set_level(ff::util::log::Level::Error);
    let mut ictx = ff::format::input(&path).with_context(|| format!("opening {path}"))?;
    let index = ictx
        .streams()
        .best(kind)
        .with_context(|| format!("{path}: no {kind:?} stream"))?
        .index();
    let mut out = Vec::new();
    for (stream, packet) in ictx.packets() {
        if stream.index() == index {
            if let Some(d) = packet.data() {
                out.push(d.to_vec());
            }
        }
    }
    if out.is_empty() {
        bail!("{path}: no packets");
    }
    Ok(out)
}

/// The address media sockets bind to: `WHIPLOAD_BIND` (a namespace link's host side, when the
/// server runs in a network namespace), else loopback.
fn bind_ip() -> std::net::IpAddr {
    std::env::var("WHIPLOAD_BIND")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

fn cpu_self() -> f64 {
    proc_cpu_and_rss(&[std::process::id()]).0
}

fn transcode_cost(video: &str, audio: &[String]) -> Result<()> {
    let vp8 = read_packets(video, ff::media::Type::Video)?;
    let mut t = VpxToH264::new(SourceCodec::Vp8)?;
    let mut out = Vec::new();
    let c0 = cpu_self();
    let w0 = Instant::now();
    let mut bytes = 0;
    for (i, f) in vp8.iter().enumerate() {
        t.push(f, true, i as u64 * 4500, &mut out)?;
        bytes += out.drain(..).map(|o| o.annexb.len()).sum::<usize>();
    }
    let vcpu = cpu_self() - c0;
    let vwall = w0.elapsed().as_secs_f64();
    let vsecs = vp8.len() as f64 * VIDEO_PERIOD.as_secs_f64();
    let mut audio_results = Vec::new();
    for (path, kind) in audio.iter().flat_map(|p| [(p, AacEncoderKind::Fdk), (p, AacEncoderKind::Ffmpeg)]) {
        let opus = read_packets(path, ff::media::Type::Audio)?;
        let stereo = opus_is_stereo(&opus[0]);
        let mut a = OpusToAac::with_encoder(stereo, kind)?;
        let mut aac = Vec::new();
        // Five passes over the file: CPU time is read in 10 ms ticks.
        let c1 = cpu_self();
        for (i, p) in opus.iter().cycle().take(opus.len() * 5).enumerate() {
            a.push(i as i64 * 960, p, &mut aac)?;
            aac.clear();
        }
        let acpu = cpu_self() - c1;
        let asecs = 5.0 * opus.len() as f64 * AUDIO_PERIOD.as_secs_f64();
        audio_results.push(serde_json::json!({
            "file": path, "encoder": format!("{kind:?}"), "channels": if stereo { 2 } else { 1 }, "packets": opus.len(), "media_s": asecs,
            "cpu_s": acpu, "core_percent": acpu / asecs * 100.0,
        }));
    }
    let c = t.counters();
    println!(
        "{}",
        serde_json::json!({
            "vp8_to_h264": {
                "frames": vp8.len(), "media_s": vsecs, "cpu_s": vcpu, "wall_s": vwall,
                "core_percent": vcpu / vsecs * 100.0,
                "ms_per_frame": vwall * 1000.0 / vp8.len() as f64,
                "h264_kbit_per_s": bytes as f64 * 8.0 / vsecs / 1000.0,
                "encoded": c.encoded, "decode_errors": c.decode_errors,
            },
            "opus_to_aac": audio_results,
        })
    );
    Ok(())
}

/// One HTTP/1.1 request; returns status, headers (lower-case names) and body.
async fn http(hostport: &str, method: &str, path: &str, body: &str) -> Result<(u16, Vec<(String, String)>, String)> {
    let mut s = TcpStream::connect(hostport).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").context("HTTP response without header end")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("HTTP status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Ok((status, headers, body))
}

/// The body of a chunked HTTP/1.1 response (Janus' libmicrohttpd answers so).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

#[derive(Default)]
struct Stats {
    connected: AtomicU64,
    failed: AtomicU64,
    bytes_sent: AtomicU64,
}

struct Media {
    video: Vec<Vec<Vec<u8>>>,
    audio: Vec<Vec<u8>>,
}

async fn publisher(hostport: String, path: String, media: Arc<Media>, stop: Instant, stats: Arc<Stats>) -> Result<()> {
    let sock = UdpSocket::bind((bind_ip(), 0)).await?;
    let local = sock.local_addr()?;
    let (mut client, offer) = WhipClient::new(Instant::now(), local, true, true, None);
    let (status, _, answer) = http(&hostport, "POST", &path, &offer).await?;
    if status != 201 {
        bail!("WHIP POST {path}: {status} {answer}");
    }
    client.accept_answer(&answer)?;
    let mut tx = Vec::new();
    client.handle_timeout(Instant::now(), &mut tx)?;
    let mut buf = vec![0u8; 2048];
    let mut t0: Option<Instant> = None;
    let (mut vi, mut ai) = (0u32, 0u32);
    let mut counted = false;
    loop {
        for t in tx.drain(..) {
            let to: SocketAddr = t.destination;
            if sock.send_to(&t.contents, to).await.is_ok() {
                stats.bytes_sent.fetch_add(t.contents.len() as u64, Ordering::Relaxed);
            }
        }
        let now = Instant::now();
        if now >= stop {
            return Ok(());
        }
        if client.is_failed() {
            bail!("publisher {path} disconnected");
        }
        if client.is_connected() && !counted {
            counted = true;
            stats.connected.fetch_add(1, Ordering::Relaxed);
        }
        let next_media = t0.map(|t| (t + VIDEO_PERIOD * vi).min(t + AUDIO_PERIOD * ai));
        let wake = [Some(client.deadline()), next_media, Some(stop)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(stop);
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, from) = r?;
                client.handle_datagram(Instant::now(), from, &buf[..n], &mut tx)?;
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                client.handle_timeout(now, &mut tx)?;
                if client.is_connected() {
                    let t = *t0.get_or_insert(now);
                    while t + VIDEO_PERIOD * vi <= now {
                        let au = &media.video[vi as usize % media.video.len()];
                        let nalus: Vec<&[u8]> = au.iter().map(|n| n.as_slice()).collect();
                        client.send_h264(now, vi.wrapping_mul(4500), &nalus, &mut tx)?;
                        vi += 1;
                    }
                    while t + AUDIO_PERIOD * ai <= now {
                        let p = &media.audio[ai as usize % media.audio.len()];
                        client.send_opus(now, ai.wrapping_mul(960), p, &mut tx)?;
                        ai += 1;
                    }
                }
            }
        }
    }
}

/// The media every publisher loops: H.264 access units (as NAL units) and Opus packets.
fn load_media(video: &str, audio: &str) -> Result<Arc<Media>> {
    let video: Vec<Vec<Vec<u8>>> = read_packets(video, ff::media::Type::Video)?
        .iter()
        .map(|au| annexb_nal_units(au).into_iter().map(|n| n.to_vec()).collect())
        .collect();
    Ok(Arc::new(Media {
        video,
        audio: read_packets(audio, ff::media::Type::Audio)?,
    }))
}

/// A publisher task on `path` until `stop`; a failure is counted and printed.
fn spawn_publisher(hostport: &str, path: String, media: &Arc<Media>, stop: Instant, stats: &Arc<Stats>) {
    let (h, m, s) = (hostport.to_owned(), media.clone(), stats.clone());
    tokio::spawn(async move {
        if let Err(e) = publisher(h, path, m, stop, s.clone()).await {
            s.failed.fetch_add(1, Ordering::Relaxed);
            eprintln!("{e:#}");
        }
    });
}

/// The arguments every mode shares: the gateway (`HTTP_BASE`), how many peers, the warm-up
/// and measuring windows (seconds) and the server's pid (for its CPU and RSS).
struct Run {
    hostport: String,
    n: usize,
    warmup: Duration,
    window: Duration,
    pid: u32,
}

impl Run {
    fn parse(base: &str, n: &str, warmup: &str, window: &str, pid: &str) -> Result<Self> {
        let (hostport, _) = split_url(&format!("{}/", base.trim_end_matches('/')))?;
        Ok(Self {
            hostport,
            n: n.parse()?,
            warmup: Duration::from_secs_f64(warmup.parse()?),
            window: Duration::from_secs_f64(window.parse()?),
            pid: pid.parse()?,
        })
    }
}

async fn publish(args: &[String]) -> Result<()> {
    let [base, n, warmup, window, video, audio, pid] = args else {
        bail!("usage: whipload publish HTTP_BASE N WARMUP_SECS WINDOW_SECS VIDEO.h264 AUDIO.ogg SERVER_PID");
    };
    let Run {
        hostport,
        n,
        warmup,
        window,
        pid,
    } = Run::parse(base, n, warmup, window, pid)?;
    let media = load_media(video, audio)?;
    let (_, rss_idle_kb) = proc_cpu_and_rss(&[pid]);
    let stats = Arc::new(Stats::default());
    let stop = Instant::now() + warmup + window + Duration::from_secs(1);
    for i in 0..n {
        spawn_publisher(&hostport, format!("/whip/bench/pub{i}"), &media, stop, &stats);
        // Spread set-up (and keyframes) over the warm-up.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep_until((Instant::now() + warmup).into()).await;
    let loadgen0 = cpu_self();
    let (cpu0, _) = proc_cpu_and_rss(&[pid]);
    let sent0 = stats.bytes_sent.load(Ordering::Relaxed);
    let w0 = Instant::now();
    tokio::time::sleep(window).await;
    let (cpu1, rss_kb) = proc_cpu_and_rss(&[pid]);
    let elapsed = w0.elapsed().as_secs_f64();
    let sent = stats.bytes_sent.load(Ordering::Relaxed) - sent0;
    let (_, _, streams) = http(&hostport, "GET", "/api/v1/streams", "").await?;
    let live = streams.matches("\"bench/pub").count();
    let cpu = cpu1 - cpu0;
    let connected = stats.connected.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "publishers": n,
            "connected": connected,
            "failed": stats.failed.load(Ordering::Relaxed),
            "streams_live": live,
            "window_s": elapsed,
            "publish_mbit_per_s": sent as f64 * 8.0 / elapsed / 1e6,
            "server_cpu_percent": cpu / elapsed * 100.0,
            "server_cpu_percent_per_publisher": cpu / elapsed * 100.0 / connected.max(1) as f64,
            "server_rss_kb": rss_kb,
            "server_rss_idle_kb": rss_idle_kb,
            "server_rss_kb_per_publisher": rss_kb.saturating_sub(rss_idle_kb) as f64 / connected.max(1) as f64,
            "loadgen_cpu_percent": (cpu_self() - loadgen0) / elapsed * 100.0,
        })
    );
    Ok(())
}

/// What one viewer received (counted by its task, read by the reporter).
#[derive(Default)]
struct ViewerCount {
    video_frames: AtomicU64,
    audio_frames: AtomicU64,
    bytes: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
}

/// A viewer of Janus' streaming plugin (mountpoint 1) through its HTTP API: the server offers,
/// the viewer answers.
async fn janus_viewer(hostport: &str, local: SocketAddr) -> Result<webrtc::client::WhepClient> {
    let call = |path: String, body: serde_json::Value| {
        let hostport = hostport.to_owned();
        async move {
            let (status, _, text) = http(&hostport, "POST", &path, &body.to_string()).await?;
            let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("Janus {path}: {status} {text}"))?;
            if v["janus"] == "error" {
                bail!("Janus {path}: {text}");
            }
            Ok::<serde_json::Value, anyhow::Error>(v)
        }
    };
    let t = || serde_json::json!("t");
    let session = call("/janus".into(), serde_json::json!({"janus": "create", "transaction": t()})).await?["data"]["id"]
        .as_u64()
        .context("Janus session id")?;
    let handle = call(
        format!("/janus/{session}"),
        serde_json::json!({"janus": "attach", "plugin": "janus.plugin.streaming", "transaction": t()}),
    )
    .await?["data"]["id"]
        .as_u64()
        .context("Janus handle id")?;
    call(
        format!("/janus/{session}/{handle}"),
        serde_json::json!({"janus": "message", "transaction": t(), "body": {"request": "watch", "id": 1}}),
    )
    .await?;
    // The offer comes as an event on the session's long poll.
    let offer = loop {
        let (_, _, text) = http(hostport, "GET", &format!("/janus/{session}?maxev=5"), "").await?;
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("Janus poll: {text}"))?;
        let events = if v.is_array() {
            v.as_array().cloned().unwrap_or_default()
        } else {
            vec![v]
        };
        if let Some(sdp) = events.iter().find_map(|e| e["jsep"]["sdp"].as_str().map(str::to_owned)) {
            break sdp;
        }
    };
    let (client, answer) = webrtc::client::WhepClient::answer(Instant::now(), local, &offer)?;
    call(
        format!("/janus/{session}/{handle}"),
        serde_json::json!({"janus": "message", "transaction": t(), "body": {"request": "start"}, "jsep": {"type": "answer", "sdp": answer}}),
    )
    .await?;
    call(
        format!("/janus/{session}/{handle}"),
        serde_json::json!({"janus": "trickle", "transaction": t(), "candidate": {"completed": true}}),
    )
    .await?;
    if std::env::var_os("JANUS_DEBUG").is_some() {
        eprintln!("answer: {answer}");
        let (_, _, text) = http(hostport, "GET", &format!("/janus/{session}?maxev=5"), "").await?;
        eprintln!("events after start: {text}");
    }
    Ok(client)
}

async fn viewer(hostport: String, path: String, stop: Instant, count: Arc<ViewerCount>) -> Result<()> {
    let sock = UdpSocket::bind((bind_ip(), 0)).await?;
    let local = sock.local_addr()?;
    let mut client = if path == "janus" {
        janus_viewer(&hostport, local).await?
    } else {
        let (mut client, offer) = webrtc::client::WhepClient::new(Instant::now(), local, true, true);
        let (status, _, answer) = http(&hostport, "POST", &path, &offer).await?;
        if status != 201 {
            bail!("WHEP POST {path}: {status} {answer}");
        }
        client.accept_answer(&answer)?;
        client
    };
    let mut tx = Vec::new();
    client.handle_timeout(Instant::now(), &mut tx)?;
    let mut buf = vec![0u8; 2048];
    loop {
        for t in tx.drain(..) {
            let _ = sock.send_to(&t.contents, t.destination).await;
        }
        for f in client.frames.drain(..) {
            let c = if f.track == webrtc::Track::Video {
                &count.video_frames
            } else {
                &count.audio_frames
            };
            c.fetch_add(1, Ordering::Relaxed);
            count.bytes.fetch_add(f.data.len() as u64, Ordering::Relaxed);
        }
        if client.is_connected() && count.connected.load(Ordering::Relaxed) == 0 {
            count.connected.store(1, Ordering::Relaxed);
        }
        if Instant::now() >= stop {
            return Ok(());
        }
        if client.is_failed() {
            bail!("viewer {path} disconnected");
        }
        let wake = client.deadline().min(stop);
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, from) = r?;
                client.handle_datagram(Instant::now(), from, &buf[..n], &mut tx)?;
            }
            _ = tokio::time::sleep_until(wake.into()) => client.handle_timeout(Instant::now(), &mut tx)?,
        }
    }
}

async fn play(args: &[String]) -> Result<()> {
    let [base, key, n, warmup, window, pid] = args else {
        bail!("usage: whipload play HTTP_BASE KEY N WARMUP_SECS WINDOW_SECS SERVER_PID");
    };
    let Run {
        hostport,
        n,
        warmup,
        window,
        pid,
    } = Run::parse(base, n, warmup, window, pid)?;
    let (_, rss_idle_kb) = proc_cpu_and_rss(&[pid]);
    let stop = Instant::now() + warmup + window + Duration::from_secs(1);
    let counts: Vec<Arc<ViewerCount>> = (0..n).map(|_| Arc::new(ViewerCount::default())).collect();
    // KEY `janus`: viewers of Janus' streaming plugin at HTTP_BASE (mountpoint 1).
    let janus = key == "janus";
    for c in &counts {
        let path = if janus { "janus".to_owned() } else { format!("/whep/{key}") };
        let (h, p, c) = (hostport.clone(), path, c.clone());
        tokio::spawn(async move {
            if let Err(e) = viewer(h, p, stop, c.clone()).await {
                c.failed.store(1, Ordering::Relaxed);
                eprintln!("{e:#}");
            }
        });
        // The gateway's default offer limits (5/s after a burst of 20) are lifted by the script.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep_until((Instant::now() + warmup).into()).await;
    let loadgen0 = cpu_self();
    let snapshot = |c: &ViewerCount| {
        (
            c.video_frames.load(Ordering::Relaxed),
            c.audio_frames.load(Ordering::Relaxed),
            c.bytes.load(Ordering::Relaxed),
        )
    };
    let before: Vec<_> = counts.iter().map(|c| snapshot(c)).collect();
    // What the publisher delivered meanwhile: the bar for "every viewer received everything".
    let frames_in = |body: &str| -> Option<(f64, f64)> {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        let s = v["streams"].as_array()?.iter().find(|s| s["key"] == key.as_str())?.clone();
        Some((s["frames_in"]["video"].as_f64()?, s["frames_in"]["audio"].as_f64()?))
    };
    let stream_stats = || async {
        if janus {
            None
        } else {
            http(&hostport, "GET", "/api/v1/streams", "")
                .await
                .ok()
                .and_then(|r| frames_in(&r.2))
        }
    };
    let in0 = stream_stats().await;
    let (cpu0, _) = proc_cpu_and_rss(&[pid]);
    let w0 = Instant::now();
    tokio::time::sleep(window).await;
    let (cpu1, rss_kb) = proc_cpu_and_rss(&[pid]);
    let elapsed = w0.elapsed().as_secs_f64();
    let after: Vec<_> = counts.iter().map(|c| snapshot(c)).collect();
    let in1 = stream_stats().await;
    let (source_video_fps, source_audio_fps) = match (in0, in1) {
        (Some(a), Some(b)) => ((b.0 - a.0) / elapsed, (b.1 - a.1) / elapsed),
        _ => (0.0, 0.0),
    };
    let mut video: Vec<u64> = before.iter().zip(&after).map(|(b, a)| a.0 - b.0).collect();
    let mut audio: Vec<u64> = before.iter().zip(&after).map(|(b, a)| a.1 - b.1).collect();
    let bytes: u64 = before.iter().zip(&after).map(|(b, a)| a.2 - b.2).sum();
    video.sort_unstable();
    audio.sort_unstable();
    let connected = counts.iter().filter(|c| c.connected.load(Ordering::Relaxed) == 1).count();
    let failed = counts.iter().filter(|c| c.failed.load(Ordering::Relaxed) == 1).count();
    let cpu = cpu1 - cpu0;
    let mbit = bytes as f64 * 8.0 / elapsed / 1e6;
    println!(
        "{}",
        serde_json::json!({
            "viewers": n,
            "connected": connected,
            "failed": failed,
            "window_s": elapsed,
            "delivered_mbit_per_s": mbit,
            "source_video_fps": source_video_fps,
            "source_audio_fps": source_audio_fps,
            "video_fps_min": video.first().copied().unwrap_or(0) as f64 / elapsed,
            "video_fps_median": video.get(n / 2).copied().unwrap_or(0) as f64 / elapsed,
            "audio_fps_min": audio.first().copied().unwrap_or(0) as f64 / elapsed,
            "server_cpu_percent": cpu / elapsed * 100.0,
            "server_cpu_percent_per_viewer": cpu / elapsed * 100.0 / connected.max(1) as f64,
            "server_cpu_percent_per_mbit": if mbit > 0.0 { cpu / elapsed * 100.0 / mbit } else { 0.0 },
            "server_rss_kb": rss_kb,
            "server_rss_kb_per_viewer": rss_kb.saturating_sub(rss_idle_kb) as f64 / connected.max(1) as f64,
            "loadgen_cpu_percent": (cpu_self() - loadgen0) / elapsed * 100.0,
        })
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("publish") => publish(&args[2..]).await,
        Some("play") => play(&args[2..]).await,
        Some("room") => room(&args[2..]).await,
        Some("transcode-cost") if args.len() >= 4 => transcode_cost(&args[2], &args[3..]),
        _ => bail!("usage: whipload publish ... | whipload transcode-cost VIDEO.webm AUDIO.ogg..."),
    }
}

/// A room participant's receiving side: one `/sfu` session with the `keys` of the others.
async fn room_subscriber(hostport: String, keys: Vec<String>, stop: Instant, count: Arc<ViewerCount>) -> Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{hostport}/sfu"))
        .await
        .context("/sfu")?;
    let subscribe = serde_json::json!({ "type": "subscribe", "keys": keys }).to_string();
    ws.send(Message::Text(subscribe.into())).await?;
    let sock = UdpSocket::bind((bind_ip(), 0)).await?;
    let local = sock.local_addr()?;
    let mut client: Option<webrtc::client::WhepClient> = None;
    let mut tx: Vec<webrtc::Transmit> = Vec::new();
    let mut buf = vec![0u8; 2048];
    loop {
        for t in tx.drain(..) {
            let _ = sock.send_to(&t.contents, t.destination).await;
        }
        if let Some(c) = client.as_mut() {
            for f in c.frames.drain(..) {
                let n = if f.track == webrtc::Track::Video {
                    &count.video_frames
                } else {
                    &count.audio_frames
                };
                n.fetch_add(1, Ordering::Relaxed);
                count.bytes.fetch_add(f.data.len() as u64, Ordering::Relaxed);
            }
            if c.is_connected() {
                count.connected.store(1, Ordering::Relaxed);
            }
            if c.is_failed() {
                bail!("subscriber of {keys:?} disconnected");
            }
        }
        if Instant::now() >= stop {
            return Ok(());
        }
        let wake = client.as_ref().map(|c| c.deadline()).unwrap_or(stop).min(stop);
        tokio::select! {
            m = ws.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    _ => bail!("/sfu closed"),
                };
                let v: serde_json::Value = serde_json::from_str(&text)?;
                match v["type"].as_str() {
                    Some("offer") => {
                        let sdp = v["sdp"].as_str().context("offer without sdp")?;
                        let answer = match client.as_mut() {
                            None => {
                                let (mut c, a) = webrtc::client::WhepClient::answer(Instant::now(), local, sdp)?;
                                c.handle_timeout(Instant::now(), &mut tx)?;
                                client = Some(c);
                                a
                            }
                            Some(c) => c.accept_offer(sdp, &mut tx)?,
                        };
                        ws.send(Message::Text(serde_json::json!({ "type": "answer", "sdp": answer }).to_string().into())).await?;
                    }
                    Some("error") | Some("closed") => bail!("/sfu: {text}"),
                    _ => {}
                }
            }
            r = sock.recv_from(&mut buf) => {
                let (n, from) = r?;
                if let Some(c) = client.as_mut() {
                    c.handle_datagram(Instant::now(), from, &buf[..n], &mut tx)?;
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                if let Some(c) = client.as_mut() {
                    c.handle_timeout(Instant::now(), &mut tx)?;
                }
            }
        }
    }
}

async fn room(args: &[String]) -> Result<()> {
    let [base, n, warmup, window, video, audio, pid] = args else {
        bail!("usage: whipload room HTTP_BASE N WARMUP_SECS WINDOW_SECS VIDEO.h264 AUDIO.ogg SERVER_PID");
    };
    let Run {
        hostport,
        n,
        warmup,
        window,
        pid,
    } = Run::parse(base, n, warmup, window, pid)?;
    let media = load_media(video, audio)?;
    // Publishers run through both windows (theirs alone, then with the forwarding).
    let stop = Instant::now() + 4 * warmup + 2 * window + Duration::from_secs(2);
    let stats = Arc::new(Stats::default());
    let keys: Vec<String> = (0..n).map(|i| format!("bench/room{i}")).collect();
    for k in &keys {
        spawn_publisher(&hostport, format!("/whip/{k}"), &media, stop, &stats);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + 2 * warmup;
    loop {
        let (_, _, streams) = http(&hostport, "GET", "/api/v1/streams", "").await?;
        let v: serde_json::Value = serde_json::from_str(&streams)?;
        let live = v["streams"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| s["key"].as_str().is_some_and(|k| k.starts_with("bench/room")) && !s["video"].is_null())
                    .count()
            })
            .unwrap_or(0);
        if live == n {
            break;
        }
        if Instant::now() > deadline {
            bail!("{live} of {n} room publishers live");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The publishers alone.
    let (c0, _) = proc_cpu_and_rss(&[pid]);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let (c1, rss_pub) = proc_cpu_and_rss(&[pid]);
    let publishers_cpu = (c1 - c0) / t0.elapsed().as_secs_f64() * 100.0;
    // Each participant receives the others.
    let counts: Vec<Arc<ViewerCount>> = (0..n).map(|_| Arc::new(ViewerCount::default())).collect();
    let sub_stop = stop - Duration::from_secs(1);
    for (i, c) in counts.iter().enumerate() {
        let others: Vec<String> = keys.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, k)| k.clone()).collect();
        let (h, c) = (hostport.clone(), c.clone());
        tokio::spawn(async move {
            if let Err(e) = room_subscriber(h, others, sub_stop, c.clone()).await {
                c.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("{e:#}");
            }
        });
    }
    tokio::time::sleep(warmup).await;
    let frames0: Vec<u64> = counts.iter().map(|c| c.video_frames.load(Ordering::Relaxed)).collect();
    // Video frames the gateway skipped because a subscriber's send queue was behind its
    // bandwidth estimate (webrtc::endpoint::MAX_QUEUE_DELAY).
    let skipped = async || -> Option<f64> {
        let (_, _, m) = http(&hostport, "GET", "/metrics", "").await.ok()?;
        m.lines()
            .find(|l| l.starts_with("streamgate_webrtc_frames_out_total{result=\"skipped_congested\"}"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let skipped0 = skipped().await.unwrap_or(0.0);
    let (c2, _) = proc_cpu_and_rss(&[pid]);
    let t2 = Instant::now();
    tokio::time::sleep(window).await;
    let (c3, rss_all) = proc_cpu_and_rss(&[pid]);
    let skipped1 = skipped().await.unwrap_or(0.0);
    let secs = t2.elapsed().as_secs_f64();
    let total_cpu = (c3 - c2) / secs * 100.0;
    let mut fps: Vec<f64> = counts
        .iter()
        .zip(&frames0)
        .map(|(c, f0)| (c.video_frames.load(Ordering::Relaxed) - f0) as f64 / secs)
        .collect();
    fps.sort_by(|a, b| a.total_cmp(b));
    let forwarded = (n * (n - 1)).max(1) as f64;
    println!(
        "{}",
        serde_json::json!({
            "participants": n,
            "forwarded_streams": n * (n - 1),
            "subscribers_connected": counts.iter().filter(|c| c.connected.load(Ordering::Relaxed) == 1).count(),
            "video_fps_skipped_congested_per_participant": (skipped1 - skipped0) / t2.elapsed().as_secs_f64() / n as f64,
            "failed": stats.failed.load(Ordering::Relaxed) + counts.iter().map(|c| c.failed.load(Ordering::Relaxed)).sum::<u64>(),
            "server_cpu_percent_publishers_only": publishers_cpu,
            "server_cpu_percent": total_cpu,
            "server_cpu_percent_per_forwarded_stream": (total_cpu - publishers_cpu) / forwarded,
            "server_rss_kb_publishers_only": rss_pub,
            "server_rss_kb": rss_all,
            "video_fps_received_per_participant_min": fps.first(),
            "video_fps_received_per_participant_max": fps.last(),
            "video_fps_expected_per_participant": (n - 1) as f64 * 1000.0 / VIDEO_PERIOD.as_millis() as f64,
        })
    );
    Ok(())
}
