//! Interop with real peers: ffmpeg publishes over RTMP; ffmpeg, curl and a WebSocket client pull
//! RTMP, HTTP-FLV and WebSocket-FLV; ffprobe judges what arrived.
//! Run one at a time (`--test-threads=1`): each test encodes video in real time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;

/// Saves `secs` seconds of WebSocket-FLV binary messages to `path`; returns the message count.
async fn ws_capture(url: &str, path: &std::path::Path, secs: u64) -> usize {
    let (mut ws, resp) = tokio_tungstenite::connect_async(url).await.expect("ws connect");
    assert_eq!(resp.status(), 101);
    let mut file = std::fs::File::create(path).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut n = 0;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, ws.next()).await {
        match msg.unwrap() {
            tokio_tungstenite::tungstenite::Message::Binary(b) => {
                // Every message holds whole tags: the first starts with the FLV header, every
                // other with a tag type.
                if n == 0 {
                    assert_eq!(&b[..3], b"FLV");
                } else {
                    assert!(matches!(b[0], 8 | 9 | 18), "message {n} does not start with a tag");
                }
                file.write_all(&b).unwrap();
                n += 1;
            }
            tokio_tungstenite::tungstenite::Message::Close(_) => break,
            _ => {}
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publish_then_pull_rtmp_http_flv_ws_flv() {
    require("ffmpeg");
    require("curl");
    let gw = Gateway::start("pull", "");
    let dir = gw.dir.clone();
    let mut publisher = publish(&gw.rtmp_url("live/cam"), 16, "640x360");
    gw.wait_live("live/cam", Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let rtmp_out = dir.join("rtmp.flv");
    let mut rtmp_pull = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            &gw.rtmp_url("live/cam"),
            "-t",
            "10",
            "-c",
            "copy",
            "-f",
            "flv",
            "-y",
        ])
        .arg(&rtmp_out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let http_out = dir.join("http.flv");
    let mut curl = Command::new("curl")
        .args(["-s", "--max-time", "10", "-o"])
        .arg(&http_out)
        .arg(gw.http_url("/live/cam.flv"))
        .spawn()
        .unwrap();
    let ws_out = dir.join("ws.flv");
    let ws_url = format!("ws://127.0.0.1:{}/live/cam.flv", gw.http);
    let msgs = ws_capture(&ws_url, &ws_out, 10).await;
    assert!(msgs > 300, "only {msgs} WebSocket messages");
    let viewers = gw.stream("live/cam").unwrap()["viewers"].clone();
    assert!(rtmp_pull.wait().unwrap().success(), "ffmpeg RTMP pull failed: {}", gw.log());
    curl.wait().unwrap();

    for (name, file) in [("rtmp", &rtmp_out), ("http-flv", &http_out), ("ws-flv", &ws_out)] {
        assert_eq!(probe_codecs(file.to_str().unwrap()), vec!["h264", "aac"], "{name}");
        let r = check_capture(file, 9.5);
        eprintln!("{name}: {r:?}");
    }
    let _ = viewers;
    let stats = gw.stream("live/cam").unwrap();
    assert_eq!(stats["publisher"]["protocol"], "rtmp");
    assert_eq!(stats["video"]["codec"].as_str().unwrap().get(..5), Some("avc1."));
    assert_eq!(stats["video"]["width"], 640);
    assert_eq!(stats["video"]["bframes"], false, "x264 zerolatency makes no B-frames");
    assert_eq!(stats["audio"]["sample_rate"], 44100);
    assert!(stats["bitrate_in"].as_u64().unwrap() > 100_000);
    let _ = publisher.kill();
    let _ = publisher.wait();
    // The stream ends within a moment of the publisher leaving.
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.stream("live/cam").is_some() {
        assert!(Instant::now() < deadline, "stream still listed after the publisher left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = gw.stop();
    assert!(status.success(), "streamgate exit status on SIGTERM: {status:?}");
}

#[test]
fn viewers_are_counted_per_protocol_and_metrics_exported() {
    let gw = Gateway::start("count", "");
    let mut publisher = publish(&gw.rtmp_url("live/count"), 12, "320x240");
    gw.wait_live("live/count", Duration::from_secs(10));
    let mut a = Command::new("curl")
        .args(["-s", "--max-time", "4", "-o", "/dev/null"])
        .arg(gw.http_url("/live/count.flv"))
        .spawn()
        .unwrap();
    let mut b = Command::new("curl")
        .args(["-s", "--max-time", "4", "-o", "/dev/null"])
        .arg(gw.http_url("/live/count.flv"))
        .spawn()
        .unwrap();
    let mut c = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            &gw.rtmp_url("live/count"),
            "-t",
            "3",
            "-f",
            "null",
            "-",
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    let s = gw.stream("live/count").unwrap();
    assert_eq!(s["viewers"]["http-flv"], 2, "{s}");
    assert_eq!(s["viewers"]["rtmp"], 1, "{s}");
    assert_eq!(s["viewers_total"], 3);
    let (status, head, body) = gw.get("/metrics");
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"));
    assert!(body.contains("streamgate_streams 1"), "{body}");
    assert!(
        body.contains("streamgate_stream_viewers{stream=\"live/count\",protocol=\"http-flv\"} 2"),
        "{body}"
    );
    assert!(body.contains("streamgate_connections_total{protocol=\"http-flv\"} 2"), "{body}");
    for p in [&mut a, &mut b, &mut c] {
        p.wait().unwrap();
    }
    let _ = publisher.kill();
    let _ = publisher.wait();
}

#[test]
fn second_publisher_refused_and_reconnect_served_again() {
    let gw = Gateway::start("reconnect", "");
    let key = "live/again";
    let mut first = publish(&gw.rtmp_url(key), 5, "320x240");
    gw.wait_live(key, Duration::from_secs(10));
    // A second publisher for the live key is refused (ffmpeg exits with an error).
    let second = publish(&gw.rtmp_url(key), 3, "320x240").wait_with_output().unwrap();
    assert!(!second.status.success(), "second publisher was not refused");
    assert!(gw.log().contains("already being published"), "{}", gw.log());
    first.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.stream(key).is_some() {
        assert!(Instant::now() < deadline, "stream not ended after its publisher left");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The same publisher comes back under the same key and is served again.
    let mut again = publish(&gw.rtmp_url(key), 8, "320x240");
    gw.wait_live(key, Duration::from_secs(10));
    assert_eq!(probe_codecs(&gw.http_url("/live/again.flv")), vec!["h264", "aac"]);
    assert_eq!(probe_codecs(&gw.rtmp_url(key)), vec!["h264", "aac"]);
    let _ = again.kill();
    let _ = again.wait();
}

#[test]
fn http_play_errors_head_and_cors() {
    let gw = Gateway::start("http", "");
    let (status, _, body) = gw.get("/live/nothing.flv");
    assert_eq!(status, 404);
    assert!(body.contains("not live"), "{body}");
    for bad in ["/live/a%20b.flv", "/live/...flv", "/..%2f/x.flv", "/live/%2e%2e.flv"] {
        let (status, _, body) = gw.get(bad);
        assert!(status == 400 || status == 404, "{bad}: {status} {body}");
    }
    let (status, _, body) = gw.get("/live/a%20b.flv");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad stream name"));
    let (status, _, _) = gw.get("/live/x.mp4");
    assert_eq!(status, 404);

    let mut publisher = publish(&gw.rtmp_url("live/head"), 8, "320x240");
    gw.wait_live("live/head", Duration::from_secs(10));
    let (status, head, body) = http_request(gw.http, "HEAD", "/live/head.flv");
    assert_eq!(status, 200, "{head}");
    assert!(body.is_empty());
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-type: video/x-flv"), "{head}");
    assert!(lower.contains("access-control-allow-origin: *"), "{head}");
    let (status, _, _) = http_request(gw.http, "HEAD", "/live/none.flv");
    assert_eq!(status, 404);
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// FLV tags of a file: (type, timestamp, body).
fn flv_tags(data: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
    assert_eq!(&data[..3], b"FLV");
    let mut pos = 13;
    let mut tags = Vec::new();
    while pos + 11 <= data.len() {
        let ty = data[pos];
        let size = (usize::from(data[pos + 1]) << 16) | (usize::from(data[pos + 2]) << 8) | usize::from(data[pos + 3]);
        let ts = (u32::from(data[pos + 7]) << 24)
            | (u32::from(data[pos + 4]) << 16)
            | (u32::from(data[pos + 5]) << 8)
            | u32::from(data[pos + 6]);
        if pos + 11 + size + 4 > data.len() {
            break;
        }
        tags.push((ty, ts, data[pos + 11..pos + 11 + size].to_vec()));
        pos += 11 + size + 4;
    }
    tags
}

/// A publisher whose resolution changes mid-stream (as Chromium's does in its first seconds):
/// viewers get exactly one new AVC sequence header, and ffprobe sees both resolutions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_stream_resolution_change_reaches_viewers_once() {
    use bytes::BytesMut;
    use rtmp::amf0::{self, Amf0Value};
    use rtmp::chunk::{encode_message, types};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    require("ffmpeg");
    let gw = Gateway::start("reschange", "");
    let dir = gw.dir.clone();
    // Two real encodings from FFmpeg, 3 s each, different sizes.
    let mut parts = Vec::new();
    for (i, size) in ["320x240", "640x360"].iter().enumerate() {
        let f = dir.join(format!("part{i}.flv"));
        let ok = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size={size}:rate=30"))
            .args(["-f", "lavfi", "-i", "sine=sample_rate=44100", "-t", "3"])
            .args([
                "-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", "-y",
            ])
            .arg(&f)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        parts.push(flv_tags(&std::fs::read(&f).unwrap()));
    }

    // Publish both parts' tags on one RTMP connection in real time, the second shifted by 3 s.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.rtmp)).await.unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(0u8, 1536));
    s.write_all(&c0c1).await.unwrap();
    let mut s012 = vec![0u8; 3073];
    s.read_exact(&mut s012).await.unwrap();
    s.write_all(&s012[1..1537]).await.unwrap();
    let mut out = BytesMut::new();
    let cmd =
        |v: &[Amf0Value], sid: u32, out: &mut BytesMut| encode_message(out, 3, 0, types::COMMAND_AMF0, sid, &amf0::encode_all(v), 128);
    cmd(
        &[
            Amf0Value::string("connect"),
            Amf0Value::Number(1.0),
            Amf0Value::object([("app", Amf0Value::string("live"))]),
        ],
        0,
        &mut out,
    );
    cmd(
        &[Amf0Value::string("createStream"), Amf0Value::Number(2.0), Amf0Value::Null],
        0,
        &mut out,
    );
    cmd(
        &[
            Amf0Value::string("publish"),
            Amf0Value::Number(3.0),
            Amf0Value::Null,
            Amf0Value::string("res"),
        ],
        1,
        &mut out,
    );
    s.write_all(&out).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    tokio::spawn(async move {
        let mut sink = vec![0u8; 65536];
        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    let capture = dir.join("capture.flv");
    let url = gw.http_url("/live/res.flv");
    let cap = capture.clone();
    let start = Instant::now();
    let mut curl_started = None;
    for (i, tags) in parts.iter().enumerate() {
        for (ty, ts, body) in tags {
            if *ty == 18 {
                continue;
            }
            let ts = ts + 3000 * i as u32;
            let due = Duration::from_millis(u64::from(ts));
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
            let mut m = BytesMut::new();
            let (csid, tid) = if *ty == 9 { (6, types::VIDEO) } else { (4, types::AUDIO) };
            if *ty == 9 && body[..2] == [0x17, 1] {
                // Repeat the unchanged sequence header before every keyframe, as browsers
                // repeat SPS/PPS: that is not a change and must not reach viewers again.
                if let Some((_, _, seq)) = tags.iter().find(|(t, _, b)| *t == 9 && b[1] == 0) {
                    encode_message(&mut m, csid, ts, tid, 1, seq, 128);
                }
            }
            encode_message(&mut m, csid, ts, tid, 1, body, 128);
            wr.write_all(&m).await.unwrap();
            if curl_started.is_none() && ts > 500 {
                // A viewer that joins during the first resolution.
                curl_started = Some(
                    Command::new("curl")
                        .args(["-s", "--max-time", "6", "-o"])
                        .arg(&cap)
                        .arg(&url)
                        .spawn()
                        .unwrap(),
                );
            }
        }
    }
    curl_started.unwrap().wait().unwrap();
    drop(wr);

    let tags = flv_tags(&std::fs::read(&capture).unwrap());
    let seq_headers = tags.iter().filter(|(ty, _, b)| *ty == 9 && b.len() > 1 && b[1] == 0).count();
    assert_eq!(seq_headers, 2, "one sequence header at join, exactly one more at the change");
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "frame=width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(&capture)
        .output()
        .unwrap();
    let sizes: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    assert!(
        sizes.contains("320,240") && sizes.contains("640,360"),
        "ffprobe decoded sizes {sizes:?}"
    );
}

/// With `http.flv_wait_ms`, an HTTP-FLV viewer that arrives before its publisher is served once
/// the publisher comes (players that connect first, as in a watch page opened early).
#[test]
fn http_flv_waits_for_a_late_publisher_when_configured() {
    let gw = Gateway::start("late", "[http]\nflv_wait_ms = 3000\n");
    let out = gw.dir.join("late.flv");
    let mut curl = Command::new("curl")
        .args(["-s", "--max-time", "7", "-o"])
        .arg(&out)
        .arg(gw.http_url("/live/late.flv"))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let mut publisher = publish(&gw.rtmp_url("live/late"), 10, "320x240");
    curl.wait().unwrap();
    assert_eq!(probe_codecs(out.to_str().unwrap()), vec!["h264", "aac"]);
    // Past the wait, the answer is 404.
    let t = Instant::now();
    let (status, _, _) = gw.get("/live/never.flv");
    assert_eq!(status, 404);
    assert!(t.elapsed() >= Duration::from_millis(2500), "answered before flv_wait_ms");
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// Audio-only and video-only publishers play over HTTP-FLV and RTMP with only their track.
#[test]
fn audio_only_and_video_only_streams_play() {
    let gw = Gateway::start("onetrack", "");
    for (name, drop_flag, expected) in [("sound", "-vn", "aac"), ("picture", "-an", "h264")] {
        let key = format!("live/{name}");
        let mut p = Command::new("ffmpeg")
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
            .args(["-re", "-f", "lavfi", "-i", "sine=sample_rate=44100", "-t", "12", drop_flag])
            .args([
                "-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv",
            ])
            .arg(gw.rtmp_url(&key))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while gw.stream(&key).is_none_or(|s| s["video"].is_null() && s["audio"].is_null()) {
            assert!(Instant::now() < deadline, "{key} not live");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            probe_codecs(&gw.http_url(&format!("/{key}.flv"))),
            vec![expected],
            "{key} over HTTP-FLV"
        );
        assert_eq!(probe_codecs(&gw.rtmp_url(&key)), vec![expected], "{key} over RTMP");
        // The FLV header announces only the track that is there.
        let (_, _, body) = http_request_prefix(gw.http, &format!("/{key}.flv"), 13);
        assert_eq!(body[4], if expected == "aac" { 0x04 } else { 0x01 }, "{key} FLV header flags");
        if expected == "h264" {
            // x264's default (veryfast without zerolatency) uses B-frames: the API says so.
            assert_eq!(gw.stream(&key).unwrap()["video"]["bframes"], true, "{key}");
        }
        let _ = p.kill();
        let _ = p.wait();
    }
}

/// Reads the first `n` body bytes of a streaming (chunked) HTTP response.
fn http_request_prefix(port: u16, path: &str, n: usize) -> (u16, String, Vec<u8>) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let got = s.read(&mut buf).unwrap();
        assert!(got > 0, "closed early");
        raw.extend_from_slice(&buf[..got]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            // Chunked: "<hex>\r\n<data>..." — the first chunk is the 13-byte FLV header.
            let rest = &raw[end + 4..];
            if let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
                if rest.len() >= nl + 2 + n {
                    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                    return (status, head, rest[nl + 2..nl + 2 + n].to_vec());
                }
            }
        }
    }
}

#[test]
fn hls_playlist_and_segments_play_in_ffmpeg() {
    let gw = Gateway::start("hls", "");
    let (status, _, _) = gw.get("/live/nothing.m3u8");
    assert_eq!(status, 404);
    let key = "live/hls";
    let mut publisher = publish(&gw.rtmp_url(key), 25, "320x240");
    gw.wait_live(key, Duration::from_secs(10));
    // The first request starts the segmenter and waits for a first segment.
    let (status, head, playlist) = http_request(gw.http, "GET", "/live/hls.m3u8");
    assert_eq!(status, 200, "{head}{playlist}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-type: application/vnd.apple.mpegurl"), "{head}");
    assert!(lower.contains("access-control-allow-origin: *"), "{head}");
    // A CDN may keep it one segment, a browser not at all.
    assert!(lower.contains("cache-control: max-age=0, s-maxage=1"), "{head}");
    assert!(playlist.starts_with("#EXTM3U\n"), "{playlist}");
    // A 1 s GOP with a 1 s target: no segment reaches 1.5 s, even with x264's scene cuts.
    assert!(playlist.contains("#EXT-X-TARGETDURATION:1\n"), "{playlist}");
    let first = playlist.lines().find(|l| l.ends_with(".ts")).expect("a segment").to_owned();
    assert!(first.starts_with("hls-"), "{first}");
    let (status, head, _) = http_request(gw.http, "HEAD", &format!("/live/{first}"));
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: video/mp2t"), "{head}");
    // Every segment probes as H.264 + AAC (TS lists a program's streams twice), starts with a
    // keyframe and lasts at most the target (1 s) plus a GOP (1 s).
    for extinf in playlist.lines().filter_map(|l| l.strip_prefix("#EXTINF:")) {
        let d: f64 = extinf.trim_end_matches(',').parse().unwrap();
        assert!(d > 0.0 && d <= 2.0, "EXTINF {d}");
    }
    for (i, seg) in playlist.lines().filter(|l| l.ends_with(".ts")).enumerate() {
        let (status, _, data) = http_get_bytes(gw.http, &format!("/live/{seg}"), "");
        assert_eq!(status, 200, "{seg}");
        let file = gw.dir.join(format!("seg{i}.ts"));
        std::fs::write(&file, &data).unwrap();
        let mut codecs = probe_codecs(file.to_str().unwrap());
        codecs.dedup_by(|a, b| a == b);
        codecs.truncate(2);
        assert_eq!(codecs, vec!["h264", "aac"], "{seg}");
        let first_video = probe_packets(&file).into_iter().find(|p| p.video).unwrap();
        assert!(first_video.key, "{seg} does not start with a keyframe");
    }
    // FFmpeg reads the live playlist for 20 s without an error.
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i", &gw.http_url("/live/hls.m3u8"), "-t", "20", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "", "FFmpeg errors reading HLS");
    // The playlist advanced; segments that left the window are gone.
    let (_, _, later) = http_request(gw.http, "GET", "/live/hls.m3u8");
    let media_sequence = |p: &str| -> u64 {
        p.lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    assert!(media_sequence(&later) > media_sequence(&playlist), "{later}");
    let (status, _, _) = gw.get(&format!("/live/{first}"));
    assert_eq!(status, 404, "segment {first} should have left the window");
    for bad in ["/live/hls-x.ts", "/live/hls-99999999999999999999.ts", "/live/..-1.ts"] {
        let (status, _, _) = gw.get(bad);
        assert!(status == 400 || status == 404, "{bad}: {status}");
    }
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// The value of `#TAG:` on its first line in a playlist.
fn tag<'a>(playlist: &'a str, tag: &str) -> Option<&'a str> {
    playlist.lines().find_map(|l| l.strip_prefix(tag))
}

#[test]
fn ll_hls_parts_blocking_reload_and_bad_requests() {
    let gw = Gateway::start("llhls", "[hls]\nidle_timeout_ms = 4000\n");
    let key = "live/ll";
    let mut publisher = publish(&gw.rtmp_url(key), 40, "320x240");
    gw.wait_live(key, Duration::from_secs(10));
    let (status, head, playlist) = http_request(gw.http, "GET", "/ll/live/ll.m3u8");
    assert_eq!(status, 200, "{head}{playlist}");
    assert!(
        head.to_ascii_lowercase().contains("content-type: application/vnd.apple.mpegurl"),
        "{head}"
    );
    for t in [
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES",
        "#EXT-X-PART-INF:PART-TARGET=0.2",
        "#EXT-X-PROGRAM-DATE-TIME:",
    ] {
        assert!(playlist.contains(t), "{t} missing:\n{playlist}");
    }
    let init_uri = tag(&playlist, "#EXT-X-MAP:URI=\"")
        .and_then(|u| u.strip_suffix('"'))
        .unwrap()
        .to_owned();
    assert!(init_uri.starts_with("ll-init") && init_uri.ends_with(".mp4"), "{init_uri}");

    // Init segment: video/mp4 with an ETag that answers If-None-Match with 304.
    let (status, head, init) = http_get_bytes(gw.http, &format!("/ll/live/{init_uri}"), "");
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: video/mp4"), "{head}");
    let etag = head.lines().find_map(|l| l.strip_prefix("etag: ")).unwrap().trim().to_owned();
    let (status, _, body) = http_get_bytes(gw.http, &format!("/ll/live/{init_uri}"), &format!("If-None-Match: {etag}\r\n"));
    assert_eq!((status, body.len()), (304, 0));

    // The first request answered as soon as one segment was complete (the parts after it are
    // enough for an LL-HLS player); a few seconds later there are more.
    let first_segments = playlist.lines().filter(|l| l.ends_with(".m4s") && !l.starts_with('#')).count();
    assert!(first_segments >= 1, "{playlist}");
    std::thread::sleep(Duration::from_secs(3));
    let (_, _, playlist) = http_request(gw.http, "GET", "/ll/live/ll.m3u8");

    // Every complete segment is init + parts: H.264 + AAC starting with a keyframe, no longer
    // than the target (1 s) plus a GOP (1 s).
    let segments: Vec<&str> = playlist.lines().filter(|l| l.ends_with(".m4s") && !l.starts_with('#')).collect();
    assert!(segments.len() >= 3, "{playlist}");
    for extinf in playlist.lines().filter_map(|l| l.strip_prefix("#EXTINF:")) {
        let d: f64 = extinf.trim_end_matches(',').parse().unwrap();
        assert!(d > 0.0 && d <= 2.0, "EXTINF {d}");
    }
    for (i, uri) in segments.iter().enumerate() {
        let (status, head, seg) = http_get_bytes(gw.http, &format!("/ll/live/{uri}"), "Origin: https://site.example\r\n");
        assert_eq!(status, 200, "{uri}: {head}");
        // Cacheable by any CDN: `*` CORS and no `Vary: origin` splitting the cache per site.
        let lower = head.to_ascii_lowercase();
        assert!(
            lower.contains("access-control-allow-origin: *") && !lower.contains("vary:"),
            "{head}"
        );
        let file = gw.dir.join(format!("seg{i}.mp4"));
        std::fs::write(&file, [init.as_slice(), seg.as_slice()].concat()).unwrap();
        let mut codecs = probe_codecs(file.to_str().unwrap());
        codecs.sort();
        assert_eq!(codecs, ["aac", "h264"], "{uri}");
        let packets = probe_packets(&file);
        let first_video = packets.iter().find(|p| p.video).unwrap();
        assert!(first_video.key, "{uri} does not start with a keyframe");
    }

    // Served segments are counted.
    let (_, _, metrics) = gw.get("/metrics");
    let served = metrics
        .lines()
        .find_map(|l| l.strip_prefix("streamgate_hls_responses_total{kind=\"ll-hls\",object=\"segment\"} "))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    assert!(served >= segments.len(), "{metrics}");

    // Blocking reload: ask for the hinted part; the answer lists it, within about a part.
    let hint = tag(&playlist, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"ll-")
        .unwrap()
        .trim_end_matches(".m4s\"");
    let (msn, part) = hint.split_once('.').unwrap();
    let (msn, part): (u64, u64) = (msn.parse().unwrap(), part.parse().unwrap());
    let (status, _, blocked) = http_request(gw.http, "GET", &format!("/ll/live/ll.m3u8?_HLS_msn={msn}&_HLS_part={part}"));
    assert_eq!(status, 200);
    assert!(
        blocked.contains(&format!("ll-{msn}.{part}.m4s")) || blocked.contains(&format!("\nll-{msn}.m4s\n")),
        "{hint} not in\n{blocked}"
    );
    // The next hinted part is held until it exists, then served.
    let hint = tag(&blocked, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"")
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    let t = Instant::now();
    let (status, head, part_bytes) = http_get_bytes(gw.http, &format!("/ll/live/{hint}"), "");
    assert!(status == 200 || status == 404, "{hint}: {head}");
    assert!(t.elapsed() < Duration::from_millis(1500), "preload hint took {:?}", t.elapsed());
    if status == 200 {
        assert_eq!(&part_bytes[4..8], b"moof");
    }

    // Bad requests get clear answers at once.
    for (path, want) in [
        (format!("/ll/live/ll.m3u8?_HLS_msn={}", msn + 1000), 400),
        ("/ll/live/ll.m3u8?_HLS_msn=99999999999999999999999".to_owned(), 400),
        ("/ll/live/ll.m3u8?_HLS_msn=abc".to_owned(), 400),
        ("/ll/live/ll.m3u8?_HLS_part=1".to_owned(), 400),
        (format!("/ll/live/ll.m3u8?_HLS_msn={msn}&_HLS_part=5000"), 400),
        ("/ll/live/ll-1.0.m4s".to_owned(), 404),
        ("/ll/live/ll-init7.mp4".to_owned(), 404),
        ("/ll/live/ll-x.y.m4s".to_owned(), 404),
        ("/ll/live/..-1.m4s".to_owned(), 400),
        ("/ll/live/nothing.m3u8".to_owned(), 404),
        ("/ll/live/ll.txt".to_owned(), 404),
    ] {
        let t = Instant::now();
        let (status, _, body) = http_request(gw.http, "GET", &path);
        assert_eq!(status, want, "{path}: {body}");
        assert!(t.elapsed() < Duration::from_secs(1), "{path} took {:?}", t.elapsed());
    }

    // FFmpeg reads the LL-HLS playlist for 20 s without an error.
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i", &gw.http_url("/ll/live/ll.m3u8"), "-t", "20", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "", "FFmpeg errors reading LL-HLS");

    // The publisher goes away: a blocking reload for what will not come is answered 503 after
    // three target durations, not held forever.
    let _ = publisher.kill();
    let _ = publisher.wait();
    std::thread::sleep(Duration::from_millis(500));
    let (_, _, now) = http_request(gw.http, "GET", "/ll/live/ll.m3u8");
    let hint = tag(&now, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"ll-")
        .unwrap()
        .trim_end_matches(".m4s\"")
        .to_owned();
    let (msn, part) = hint.split_once('.').unwrap();
    let t = Instant::now();
    let (status, _, body) = http_request(gw.http, "GET", &format!("/ll/live/ll.m3u8?_HLS_msn={msn}&_HLS_part={part}"));
    assert_eq!(status, 503, "{body}");
    assert!(
        (Duration::from_millis(2500)..Duration::from_secs(5)).contains(&t.elapsed()),
        "{:?}",
        t.elapsed()
    );
    // Nobody asks any more: the segmenter stops (no task left behind).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, metrics) = gw.get("/metrics");
        if metrics.contains("streamgate_hls_segmenters 0") {
            break;
        }
        assert!(Instant::now() < deadline, "segmenter still running:\n{metrics}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let (status, _, _) = gw.get("/ll/live/ll-1.0.m4s");
    assert_eq!(status, 404);
}

/// FFmpeg publishing only video (`-an`) or only audio (`-vn`) for `secs` seconds.
fn publish_one_track(url: &str, video: bool, secs: u32) -> std::process::Child {
    let mut c = Command::new("ffmpeg");
    c.args(["-hide_banner", "-loglevel", "error", "-re"]);
    if video {
        c.args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
        ]);
        c.args(["-tune", "zerolatency", "-g", "30", "-pix_fmt", "yuv420p", "-an"]);
    } else {
        c.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-c:a", "aac", "-vn"]);
    }
    c.args(["-t", &secs.to_string(), "-f", "flv", url]);
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

#[test]
fn hls_of_a_video_only_and_an_audio_only_stream() {
    let gw = Gateway::start("hls-one-track", "");
    let mut pubs = [
        publish_one_track(&gw.rtmp_url("live/vonly"), true, 30),
        publish_one_track(&gw.rtmp_url("live/aonly"), false, 30),
    ];
    for (key, want) in [("vonly", "h264"), ("aonly", "aac")] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gw.streams()["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["key"] == format!("live/{key}"))
        {
            assert!(Instant::now() < deadline, "live/{key} not live");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Classic: the newest segment is a TS with just that track.
        let (status, _, playlist) = gw.get(&format!("/live/{key}.m3u8"));
        assert_eq!(status, 200, "{key}: {playlist}");
        let seg = playlist.lines().rfind(|l| l.ends_with(".ts")).unwrap();
        let mut codecs = probe_codecs(&gw.http_url(&format!("/live/{seg}")));
        codecs.dedup();
        assert_eq!(codecs, [want], "classic {key}");
        // LL-HLS: init + newest segment.
        let (status, _, playlist) = gw.get(&format!("/ll/live/{key}.m3u8"));
        assert_eq!(status, 200, "{key}: {playlist}");
        let init = tag(&playlist, "#EXT-X-MAP:URI=\"").unwrap().trim_end_matches('"');
        let seg = playlist.lines().rfind(|l| l.ends_with(".m4s") && !l.starts_with('#')).unwrap();
        let (_, _, init) = http_get_bytes(gw.http, &format!("/ll/live/{init}"), "");
        let (_, _, data) = http_get_bytes(gw.http, &format!("/ll/live/{seg}"), "");
        let file = gw.dir.join(format!("{key}.mp4"));
        std::fs::write(&file, [init, data].concat()).unwrap();
        assert_eq!(probe_codecs(file.to_str().unwrap()), [want], "LL-HLS {key}");
        let packets = probe_packets(&file);
        assert!(packets.len() >= 20, "LL-HLS {key}: {} packets", packets.len());
    }
    for p in &mut pubs {
        let _ = p.kill();
        let _ = p.wait();
    }
}

/// Splits a response into its head and its body, undoing chunked transfer coding; true if the
/// chunked body ended with its last chunk.
fn split_response(raw: &[u8]) -> (String, Vec<u8>, bool) {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    if !head.contains("transfer-encoding: chunked") {
        return (head, raw[end..].to_vec(), false);
    }
    let (body, ended) = dechunk(&raw[end..]);
    (head, body, ended)
}

/// HTTP-FLV is answered on the socket for a plain HTTP/1.1 GET and by hyper for the rest
/// (HTTP/1.0, a second request on a kept-alive connection): both give the whole stream, playable,
/// with the same headers; a viewer that floods the connection after its request is closed.
#[test]
fn http_flv_fast_path_and_hyper_path_agree() {
    let gw = Gateway::start("flvpaths", "");
    let dir = temp_dir("flvpaths");
    let mut publisher = publish(&gw.rtmp_url("live/paths"), 6, "320x240");
    gw.wait_live("live/paths", Duration::from_secs(10));
    let port = gw.http;
    const LONG: Duration = Duration::from_secs(20);
    let fast = std::thread::spawn(move || raw_exchange(port, b"GET /live/paths.flv?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", LONG));
    let old = std::thread::spawn(move || raw_exchange(port, b"GET /live/paths.flv HTTP/1.0\r\n\r\n", LONG));
    let kept = std::thread::spawn(move || {
        raw_exchange(
            port,
            b"GET /api/v1/streams HTTP/1.1\r\nHost: x\r\n\r\nGET /live/paths.flv HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            LONG,
        )
    });
    // A player that keeps sending after its request: closed at once, nobody else notices.
    let flood = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /live/paths.flv HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        // After the response has begun (sent with the request, the junk would look like a
        // pipelined request and go to hyper).
        let mut first = [0u8; 1];
        std::io::Read::read_exact(&mut s, &mut first).unwrap();
        let junk = vec![b'x'; 16 * 1024];
        let t = Instant::now();
        // Well before the 6 s stream ends by itself.
        while t.elapsed() < Duration::from_secs(3) {
            if s.write_all(&junk).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    });
    assert!(flood.join().unwrap(), "a flooding viewer was not closed");

    let (head, body, last_chunk) = split_response(&fast.join().unwrap());
    assert!(head.starts_with("http/1.1 200"), "{head}");
    for h in [
        "content-type: video/x-flv",
        "access-control-allow-origin: *",
        "cache-control: no-cache",
    ] {
        assert!(head.contains(h), "{h} missing: {head}");
    }
    assert!(last_chunk, "the stream's end is the last chunk");
    // Served in front of hyper: its own head (hyper's answers never say `connection: close` to a
    // request that did not ask for it).
    assert!(head.contains("connection: close") && head.contains("date: "), "{head}");
    let (old_head, old_body, _) = split_response(&old.join().unwrap());
    assert!(
        old_head.starts_with("http/1.0 200") && old_head.contains("video/x-flv"),
        "{old_head}"
    );
    let kept = kept.join().unwrap();
    let second = 8 + kept[8..].windows(8).position(|w| w == b"HTTP/1.1").expect("two responses");
    let (kept_head, kept_body, kept_last) = split_response(&kept[second..]);
    assert!(kept_head.contains("video/x-flv") && kept_last, "{kept_head}");

    for (name, flv) in [("fast", body), ("http10", old_body), ("keptalive", kept_body)] {
        assert_eq!(&flv[..3], b"FLV", "{name}");
        let path = dir.join(format!("{name}.flv"));
        std::fs::write(&path, &flv).unwrap();
        let packets = probe_packets(&path);
        let video = packets.iter().filter(|p| p.video).count();
        let audio = packets.len() - video;
        // 6 s at 30 fps from the keyframe a viewer starts at.
        assert!(video >= 120 && audio >= 150, "{name}: {video} video, {audio} audio packets");
        assert_eq!(probe_codecs(path.to_str().unwrap()), ["h264", "aac"], "{name}");
    }
    let _ = publisher.wait();
    let m = gw.get("/metrics").2;
    let errors = m
        .lines()
        .find(|l| l.starts_with("streamgate_connection_errors_total{protocol=\"http-flv\"}"))
        .unwrap_or("")
        .to_owned();
    assert!(errors.ends_with(" 1"), "the flood counted as an error: {errors}");
}
