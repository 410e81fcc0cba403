//! FFmpeg makes an FLV (H.264 + AAC, with B-frames, 2 s GOP); its tags go through our RTMP
//! ingest into hub frames, then through the TS muxer into one file (a segment's tables first);
//! ffprobe and FFmpeg must read that back completely and without a single complaint.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use bytes::{Bytes, BytesMut};
use ingest::rtmp::{IngestOutput, RtmpIngest};
use media::frame::{MediaFrame, TrackKind};
use std::sync::Arc;

use media::hub::HubEvent;
use streamgate_egress::hls::{HlsConfig, Segmenter, Segmenting};
use streamgate_egress::llhls::{LlHlsConfig, LlSegmenter};
use streamgate_egress::ts::TsMuxer;

fn ffmpeg_flv(path: &std::path::Path) {
    let ok = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-f",
            "lavfi",
        ])
        .args([
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "50",
        ])
        .args(["-bf", "2", "-c:a", "aac", "-b:a", "64k", "-f", "flv"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ffmpeg could not make the FLV");
}

/// FFmpeg decodes `input` completely without printing an error.
fn ffmpeg_decodes_silently(input: &std::path::Path, what: &str) {
    let decode = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(input)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(decode.status.success(), "{what}");
    assert_eq!(String::from_utf8_lossy(&decode.stderr), "", "{what}");
}

/// (tag type, timestamp, body) of every FLV tag.
fn flv_tags(data: &[u8]) -> Vec<(u8, u32, Bytes)> {
    let mut out = Vec::new();
    let mut pos = 9 + 4;
    while pos + 11 <= data.len() {
        let kind = data[pos] & 0x1f;
        let size = (usize::from(data[pos + 1]) << 16) | (usize::from(data[pos + 2]) << 8) | usize::from(data[pos + 3]);
        let ts = (u32::from(data[pos + 7]) << 24)
            | (u32::from(data[pos + 4]) << 16)
            | (u32::from(data[pos + 5]) << 8)
            | u32::from(data[pos + 6]);
        let Some(body) = data.get(pos + 11..pos + 11 + size) else { break };
        out.push((kind, ts, Bytes::copy_from_slice(body)));
        pos += 11 + size + 4;
    }
    out
}

#[test]
fn ffmpeg_reads_our_transport_stream_without_complaint() {
    let dir = std::env::temp_dir().join(format!("sg-ts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let flv = dir.join("in.flv");
    ffmpeg_flv(&flv);
    let mut ingest = RtmpIngest::new();
    let (mut video, mut audio, mut frames): (Option<_>, Option<_>, Vec<Arc<MediaFrame>>) = (None, None, Vec::new());
    for (kind, ts, body) in flv_tags(&std::fs::read(&flv).unwrap()) {
        let r = match kind {
            9 => ingest.video(ts, &body).unwrap(),
            8 => ingest.audio(ts, &body).unwrap(),
            _ => None,
        };
        match r {
            Some(IngestOutput::VideoConfig(c)) => video = Some(c),
            Some(IngestOutput::AudioConfig(c)) => audio = Some(c),
            Some(IngestOutput::Frame(f)) => frames.push(Arc::new(f)),
            None => {}
        }
    }
    let mut mux = TsMuxer::new(video.as_ref(), audio.as_ref()).unwrap();
    let mut out = BytesMut::new();
    mux.write_tables(&mut out);
    for f in &frames {
        mux.write_frame(f, &mut out).unwrap();
    }
    let ts = dir.join("out.ts");
    std::fs::write(&ts, &out).unwrap();
    let ffprobe = |entries: &str| {
        let o = Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", entries, "-of", "csv=p=0"])
            .arg(&ts)
            .output()
            .unwrap();
        assert!(o.stderr.is_empty(), "ffprobe: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let streams = ffprobe("stream=index,codec_name");
    // The program's streams are listed twice (under the program and on their own).
    let mut codecs: Vec<&str> = streams.lines().filter(|l| !l.is_empty()).collect();
    codecs.sort_unstable();
    codecs.dedup();
    assert_eq!(codecs, ["0,h264", "1,aac"]);
    let packets = ffprobe("packet=stream_index,flags");
    let lines: Vec<&str> = packets.lines().collect();
    let nv = frames.iter().filter(|f| f.track == TrackKind::Video).count();
    let na = frames.len() - nv;
    let pv = lines.iter().filter(|l| l.starts_with("0,")).count();
    let pa = lines.iter().filter(|l| l.starts_with("1,")).count();
    assert_eq!((pv, pa), (nv, na), "every frame is a packet");
    assert!(
        lines.iter().find(|l| l.starts_with("0,")).unwrap().contains('K'),
        "starts with a keyframe"
    );
    ffmpeg_decodes_silently(&ts, "FFmpeg decode errors");

    // The same frames through the HLS segmenter: FFmpeg reads the playlist and every segment.
    let mut seg = Segmenter::new(HlsConfig::default());
    let (video, audio) = (Arc::new(video.unwrap()), Arc::new(audio.unwrap()));
    seg.push(&HubEvent::VideoConfig(video.clone()), 0);
    seg.push(&HubEvent::AudioConfig(audio.clone()), 0);
    for f in &frames {
        seg.push(&HubEvent::Frame(f.clone()), 0);
    }
    seg.end();
    let playlist = seg.playlist("seg");
    let mut n = 0;
    for line in playlist.lines().filter(|l| l.ends_with(".ts")) {
        let sequence: u64 = line.trim_start_matches("seg").trim_end_matches(".ts").parse().unwrap();
        std::fs::write(dir.join(line), &seg.segment(sequence).unwrap().data).unwrap();
        n += 1;
    }
    assert!(n >= 2, "{playlist}");
    let m3u8 = dir.join("live.m3u8");
    std::fs::write(&m3u8, &playlist).unwrap();
    ffmpeg_decodes_silently(&m3u8, "FFmpeg errors on the HLS playlist");

    // And through the LL-HLS segmenter: init + every part back to back is one fragmented MP4
    // holding every frame; FFmpeg reads the LL-HLS playlist (parts ignored, segments read).
    let mut ll = LlSegmenter::new(LlHlsConfig::default());
    ll.push(&HubEvent::VideoConfig(video), 0);
    ll.push(&HubEvent::AudioConfig(audio), 0);
    for f in &frames {
        ll.push(&HubEvent::Frame(f.clone()), 0);
    }
    ll.end();
    let playlist = ll.playlist("ll");
    let init_uri = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\"ll"))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap();
    let init = ll
        .init(init_uri.trim_start_matches("init").trim_end_matches(".mp4").parse().unwrap())
        .unwrap();
    std::fs::write(dir.join(format!("ll{init_uri}")), &init).unwrap();
    let mut whole = init.to_vec();
    for line in playlist.lines().filter(|l| l.ends_with(".m4s") && !l.starts_with('#')) {
        let sequence: u64 = line.trim_start_matches("ll").trim_end_matches(".m4s").parse().unwrap();
        let segment = ll.segment(sequence).unwrap();
        let bytes: Vec<u8> = segment.parts.iter().flat_map(|p| p.data.iter().copied()).collect();
        std::fs::write(dir.join(line), &bytes).unwrap();
        whole.extend_from_slice(&bytes);
    }
    let mp4 = dir.join("whole.mp4");
    std::fs::write(&mp4, &whole).unwrap();
    let o = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=stream_index,flags,dts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(&mp4)
        .output()
        .unwrap();
    assert!(o.stderr.is_empty(), "ffprobe fMP4: {}", String::from_utf8_lossy(&o.stderr));
    let packets = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = packets.lines().collect();
    let pv = lines.iter().filter(|l| l.starts_with("0,")).count();
    let pa = lines.iter().filter(|l| l.starts_with("1,")).count();
    assert_eq!((pv, pa), (nv, na), "every frame is a packet of the fMP4");
    let m3u8 = dir.join("ll.m3u8");
    std::fs::write(&m3u8, &playlist).unwrap();
    ffmpeg_decodes_silently(&m3u8, "FFmpeg errors on the LL-HLS playlist");
    std::fs::remove_dir_all(&dir).ok();
}
