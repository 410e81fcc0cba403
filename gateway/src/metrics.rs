//! `/metrics`: every counter in the Prometheus text format (0.0.4), rendered on each scrape from
//! the atomics the listeners keep (no registry to update on the media path).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use media::Hub;

use crate::admission::Admission;
use crate::counters::{Counters, ProtocolCounters};
use crate::hls::{HlsCounters, HlsService, Object};
use crate::webrtc_server::WebRtcCounters;

/// Where the counters are.
pub struct Sources {
    pub hub: Hub,
    pub counters: Arc<Counters>,
    pub webrtc: Arc<WebRtcCounters>,
    pub hls: Arc<HlsService>,
    pub webrtc_admission: Admission,
    pub rtmp_admission: Admission,
}

/// `/metrics`.
pub fn routes(sources: Sources) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(Arc::new(sources))
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Appends one metric family in the Prometheus text format (0.0.4).
fn family(m: &mut String, name: &str, kind: &str, help: &str, samples: impl IntoIterator<Item = (String, u64)>) {
    let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(m, "{name}{labels} {value}");
    }
}

async fn metrics(State(st): State<Arc<Sources>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render(&st))
}

/// The whole exposition.
fn render(st: &Sources) -> String {
    let mut m = String::new();
    let streams = st.hub.streams();
    let totals = st.hub.totals();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let one = |v: u64| [(String::new(), v)];
    let per_stream = |f: &dyn Fn(&media::hub::StreamStats) -> u64| -> Vec<(String, u64)> {
        streams
            .iter()
            .map(|s| (format!("{{stream=\"{}\"}}", escape_label(&s.key.to_string())), f(s)))
            .collect()
    };
    family(&mut m, "streamgate_streams", "gauge", "Live streams.", one(streams.len() as u64));
    family(
        &mut m,
        "streamgate_hls_segmenters",
        "gauge",
        "Streams with a running HLS segmenter.",
        one(st.hls.streams.len() as u64),
    );
    let w = &st.webrtc;
    family(
        &mut m,
        "streamgate_webrtc_sessions_total",
        "counter",
        "WHIP sessions created.",
        one(load(&w.sessions)),
    );
    family(
        &mut m,
        "streamgate_webrtc_sessions",
        "gauge",
        "WebRTC sessions alive (WHIP publishers, WHEP viewers, subscribers).",
        one(load(&w.sessions_active)),
    );
    family(
        &mut m,
        "streamgate_webrtc_sessions_pending",
        "gauge",
        "WebRTC sessions created and not yet connected (their keys reserved, not live).",
        one(st.webrtc_admission.pending() as u64),
    );
    family(
        &mut m,
        "streamgate_webrtc_sessions_ended_total",
        "counter",
        "WebRTC sessions that connected, lapsed (ICE/DTLS not done within webrtc.connect_timeout_ms), or connected after another publisher took their key.",
        [
            ("{result=\"connected\"}".to_owned(), load(&w.sessions_connected)),
            ("{result=\"connect_timeout\"}".to_owned(), load(&w.sessions_connect_timeouts)),
            ("{result=\"key_taken\"}".to_owned(), load(&w.sessions_key_taken)),
        ],
    );
    family(
        &mut m,
        "streamgate_rtmp_connections_pending",
        "gauge",
        "RTMP connections in handshake or connect.",
        one(st.rtmp_admission.pending() as u64),
    );
    family(
        &mut m,
        "streamgate_rtmp_connect_timeouts_total",
        "counter",
        "RTMP connections closed because handshake and connect took longer than rtmp.connect_timeout_secs.",
        one(load(&st.counters.rtmp_connect_timeouts)),
    );
    let refused = |a: &Admission| -> Vec<(String, u64)> {
        let c = a.counters();
        [
            ("per_address", &c.refused_per_address),
            ("rate", &c.refused_rate),
            ("total", &c.refused_total),
        ]
        .iter()
        .map(|(limit, v)| (format!("{{limit=\"{limit}\"}}"), load(v)))
        .collect()
    };
    family(
        &mut m,
        "streamgate_webrtc_offers_refused_total",
        "counter",
        "WHIP offers refused by the admission limits: pending sessions per address (429), offers per second per address (429), pending sessions in all (503).",
        refused(&st.webrtc_admission),
    );
    family(
        &mut m,
        "streamgate_rtmp_connections_refused_total",
        "counter",
        "RTMP connections closed at once by the admission limits: pending per address, pending in all.",
        refused(&st.rtmp_admission).into_iter().filter(|(l, _)| !l.contains("rate")),
    );
    family(
        &mut m,
        "streamgate_webrtc_datagrams_in_total",
        "counter",
        "UDP datagrams received.",
        one(load(&w.datagrams_in)),
    );
    family(
        &mut m,
        "streamgate_webrtc_bytes_in_total",
        "counter",
        "UDP bytes received.",
        one(load(&w.bytes_in)),
    );
    family(
        &mut m,
        "streamgate_webrtc_datagrams_dropped_total",
        "counter",
        "UDP datagrams dropped: matching no session, or not STUN/DTLS/RTP/RTCP.",
        [
            ("{reason=\"unroutable\"}".to_owned(), load(&w.datagrams_unroutable)),
            ("{reason=\"malformed\"}".to_owned(), load(&w.datagrams_malformed)),
        ],
    );
    family(
        &mut m,
        "streamgate_webrtc_rtp_packets_total",
        "counter",
        "RTP packets received, retransmissions included.",
        one(load(&w.rtp_packets)),
    );
    family(
        &mut m,
        "streamgate_webrtc_nacks_total",
        "counter",
        "RTCP NACKs sent to publishers.",
        one(load(&w.nacks)),
    );
    family(
        &mut m,
        "streamgate_webrtc_plis_total",
        "counter",
        "RTCP PLIs sent to publishers.",
        one(load(&w.plis)),
    );
    family(
        &mut m,
        "streamgate_webrtc_video_frames_total",
        "counter",
        "WebRTC video frames: pushed to the hub, or dropped after a loss NACK could not repair (until the next keyframe).",
        [
            ("{result=\"delivered\"}".to_owned(), load(&w.video_frames)),
            ("{result=\"unrepaired\"}".to_owned(), load(&w.video_frames_unrepaired)),
        ],
    );
    family(
        &mut m,
        "streamgate_webrtc_frames_dropped_total",
        "counter",
        "Depacketized frames dropped because a publisher's media task fell behind.",
        one(load(&w.frames_dropped_queue)),
    );
    family(
        &mut m,
        "streamgate_webrtc_play_sessions_total",
        "counter",
        "WebRTC viewer (WHEP) sessions that connected.",
        one(load(&w.play_sessions)),
    );
    family(
        &mut m,
        "streamgate_webrtc_frames_out_total",
        "counter",
        "Frames written to WebRTC viewers, and frames dropped because the outgoing queue was full (that viewer then skips to the next keyframe).",
        vec![
            ("{result=\"sent\"}".to_owned(), load(&w.frames_out)),
            ("{result=\"dropped\"}".to_owned(), load(&w.frames_dropped_out)),
            ("{result=\"skipped_congested\"}".to_owned(), load(&w.frames_skipped_congested)),
        ],
    );
    family(
        &mut m,
        "streamgate_webrtc_rtp_packets_out_total",
        "counter",
        "RTP packets sent to WebRTC viewers (retransmissions included).",
        one(load(&w.rtp_packets_out)),
    );
    family(
        &mut m,
        "streamgate_webrtc_viewer_feedback_total",
        "counter",
        "NACKs and keyframe requests (PLI/FIR) received from WebRTC viewers.",
        vec![
            ("{kind=\"nack\"}".to_owned(), load(&w.nacks_in)),
            ("{kind=\"keyframe_request\"}".to_owned(), load(&w.keyframe_requests_in)),
        ],
    );
    family(
        &mut m,
        "streamgate_streams_published_total",
        "counter",
        "Streams published.",
        one(load(&totals.streams_published)),
    );
    family(
        &mut m,
        "streamgate_publish_refused_total",
        "counter",
        "Publishers refused (key taken).",
        one(load(&totals.publish_refused)),
    );
    family(
        &mut m,
        "streamgate_dropped_frames_total",
        "counter",
        "Frames dropped for slow viewers.",
        one(load(&totals.dropped_frames)),
    );
    family(
        &mut m,
        "streamgate_stream_bytes_in_total",
        "counter",
        "Payload bytes from the publisher.",
        per_stream(&|s| s.bytes_in),
    );
    family(
        &mut m,
        "streamgate_stream_bitrate_in",
        "gauge",
        "Incoming bits per second.",
        per_stream(&|s| s.bitrate_in),
    );
    family(
        &mut m,
        "streamgate_stream_dropped_frames_total",
        "counter",
        "Frames dropped for slow viewers.",
        per_stream(&|s| s.dropped_frames),
    );
    let viewers = streams.iter().flat_map(|s| {
        let key = escape_label(&s.key.to_string());
        s.viewers
            .iter()
            .map(move |(p, n)| (format!("{{stream=\"{key}\",protocol=\"{p}\"}}"), *n as u64))
    });
    family(
        &mut m,
        "streamgate_stream_viewers",
        "gauge",
        "Viewers per stream and protocol.",
        viewers,
    );
    let protocols = [
        ("rtmp", &st.counters.rtmp),
        ("http-flv", &st.counters.http_flv),
        ("ws-flv", &st.counters.ws_flv),
    ];
    let per_protocol = |f: &dyn Fn(&ProtocolCounters) -> u64| -> Vec<(String, u64)> {
        protocols
            .iter()
            .map(|(name, c)| (format!("{{protocol=\"{name}\"}}"), f(c)))
            .collect()
    };
    family(
        &mut m,
        "streamgate_connections_total",
        "counter",
        "Connections accepted.",
        per_protocol(&|c| load(&c.connections)),
    );
    family(
        &mut m,
        "streamgate_connection_errors_total",
        "counter",
        "Connections closed for bad input.",
        per_protocol(&|c| load(&c.errors)),
    );
    family(
        &mut m,
        "streamgate_bytes_out_total",
        "counter",
        "Bytes sent.",
        per_protocol(&|c| load(&c.bytes_out)),
    );
    family(
        &mut m,
        "streamgate_bytes_in_total",
        "counter",
        "Bytes received.",
        per_protocol(&|c| load(&c.bytes_in)),
    );
    let hls = |f: &dyn Fn(&HlsCounters, usize) -> u64| -> Vec<(String, u64)> {
        let kinds = [("hls", &st.hls.streams.classic.counters), ("ll-hls", &st.hls.streams.ll.counters)];
        kinds
            .iter()
            .flat_map(|(kind, c)| {
                Object::ALL
                    .iter()
                    .filter(move |o| *kind == "ll-hls" || matches!(o, Object::Playlist | Object::Segment))
                    .map(move |o| (format!("{{kind=\"{kind}\",object=\"{}\"}}", o.name()), f(c, *o as usize)))
            })
            .collect()
    };
    family(
        &mut m,
        "streamgate_hls_responses_total",
        "counter",
        "HLS responses served with their body (200), by kind and object.",
        hls(&|c, i| load(&c.served[i])),
    );
    family(
        &mut m,
        "streamgate_hls_bytes_out_total",
        "counter",
        "HLS body bytes served, by kind and object.",
        hls(&|c, i| load(&c.bytes[i])),
    );
    m
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use media::hub::PublisherInfo;
    use media::{HubConfig, StreamKey};

    use super::*;
    use crate::admission::Limits;

    fn sources() -> Sources {
        let hub = Hub::new(HubConfig::default());
        let limits = Limits {
            per_address: 1,
            total: 1,
            rate_per_sec: 0.0,
            burst: 1,
        };
        Sources {
            hub: hub.clone(),
            counters: Arc::default(),
            webrtc: Arc::default(),
            hls: Arc::new(HlsService {
                hub,
                streams: Default::default(),
                config: crate::config::Config::load(&<crate::config::Cli as clap::Parser>::parse_from(["streamgate"]))
                    .unwrap()
                    .hls,
            }),
            webrtc_admission: Admission::new(limits),
            rtmp_admission: Admission::new(limits),
        }
    }

    /// A metric or label name (Prometheus data model).
    fn valid_name(n: &str) -> bool {
        let mut c = n.chars();
        c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    }

    /// Checks the text exposition format 0.0.4 line by line: every family has HELP then TYPE
    /// before its samples, sample names belong to the family announced, labels are
    /// `name="escaped value"`, values are numbers, and no series appears twice.
    fn check_exposition(text: &str) -> usize {
        let mut family: Option<String> = None;
        let mut typed = false;
        let mut series = HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has a text");
                assert!(valid_name(name) && !help.is_empty(), "{line}");
                family = Some(name.to_owned());
                typed = false;
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
                assert_eq!(Some(name), family.as_deref(), "TYPE follows its HELP: {line}");
                assert!(["counter", "gauge"].contains(&kind), "{line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "counters end in _total: {line}");
                }
                typed = true;
                continue;
            }
            let fam = family.as_deref().expect("sample after a HELP");
            assert!(typed, "{line}");
            let (series_id, value) = line.rsplit_once(' ').expect("sample has a value");
            value.parse::<f64>().unwrap_or_else(|_| panic!("value: {line}"));
            let (name, labels) = match series_id.split_once('{') {
                Some((n, l)) => (n, l.strip_suffix('}').expect("labels close")),
                None => (series_id, ""),
            };
            assert_eq!(name, fam, "{line}");
            let mut rest = labels;
            while !rest.is_empty() {
                let (lname, after) = rest.split_once("=\"").expect("label=\"value\"");
                assert!(valid_name(lname), "{line}");
                // The value runs to the first quote not escaped by a backslash.
                let mut end = None;
                let mut escaped = false;
                for (i, ch) in after.char_indices() {
                    match ch {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => {
                            end = Some(i);
                            break;
                        }
                        '\n' => panic!("raw newline in a label: {line}"),
                        _ => escaped = false,
                    }
                }
                let end = end.expect("label value closes");
                rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
            }
            assert!(series.insert(series_id.to_owned()), "series twice: {line}");
        }
        series.len()
    }

    #[test]
    fn exposition_is_valid_text_format() {
        let st = sources();
        let empty = render(&st);
        let n = check_exposition(&empty);
        assert!(n > 30, "{n} series");
        // A live stream with viewers adds its labelled series.
        let p = st
            .hub
            .publish(
                StreamKey::new("live", "cam-1").unwrap(),
                PublisherInfo {
                    protocol: "rtmp",
                    remote: "192.0.2.1:1".into(),
                },
            )
            .unwrap();
        let _v = st.hub.subscribe(p.key(), "http-flv").unwrap();
        let text = render(&st);
        assert!(check_exposition(&text) > n);
        assert!(
            text.contains("streamgate_stream_viewers{stream=\"live/cam-1\",protocol=\"http-flv\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("streamgate_streams 1\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        let mut m = String::new();
        family(
            &mut m,
            "t_total",
            "counter",
            "Test.",
            [(format!("{{k=\"{}\"}}", escape_label("q\"\n")), 3)],
        );
        assert_eq!(m, "# HELP t_total Test.\n# TYPE t_total counter\nt_total{k=\"q\\\"\\n\"} 3\n");
        check_exposition(&m);
    }
}
