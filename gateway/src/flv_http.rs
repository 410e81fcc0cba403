//! HTTP-FLV plays served straight on the socket, in front of hyper.
//!
//! Every HTTP connection's first request head is read here. A plain `GET /{app}/{stream}.flv`
//! over HTTP/1.1 for a live stream is answered on the socket itself: a fixed response head, then
//! each batch of FLV tags as one chunk, written with one `writev`, as RTMP play does. Everything
//! else (other routes, HEAD, WebSocket upgrades, HTTP/1.0, a key that is not live yet, heads we
//! do not understand) goes on to axum's router behind hyper, with the bytes read so far put back
//! in front ([`Rewind`]), so it behaves as if this module did not exist. Every request head,
//! here or in hyper, must arrive within `http.request_head_timeout_secs`.
//!
//! Why: hyper streams a body as one chunk per `Bytes` (header and payload of every FLV tag), with
//! its own polling and encoding for each; for a 2 Mb/s stream that was ~10 % of the CPU per
//! viewer (docs/benchmarks.md).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use egress::flv::FlvViewer;
use media::{StreamKey, Subscriber};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn, Instrument};

use crate::counters::ProtocolCounters;
use crate::flv_play::FlvService;
use crate::io::{accept_until_shutdown, write_all_vectored};
use crate::viewer_loop::{drive_viewer, End, ViewerSink};

/// Longest request head read here; a longer one goes to hyper as it is (which bounds its size and,
/// with the same timeout, the time it takes to arrive).
const MAX_HEAD: usize = 8 * 1024;
/// Bytes a player may send after its request (it should send none) before it is closed.
const MAX_TRAILING_INPUT: usize = 64 * 1024;
/// The last write to a viewer at shutdown (the end of the chunked body) waits at most this long.
const LAST_WRITE: Duration = Duration::from_secs(1);

/// What a connection's first bytes are.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// Not a whole request head yet.
    Partial,
    /// `GET /{app}/{stream}.flv` over HTTP/1.1 with nothing hyper must see (no body, no upgrade,
    /// nothing pipelined after it): served here if the stream is live.
    FlvPlay { app: String, stream: String },
    /// Anything else: hyper's.
    Other,
}

/// Classifies a connection's first bytes (sans-IO).
pub fn classify(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Partial) => return Head::Partial,
        Ok(httparse::Status::Complete(len)) => len,
        Err(_) => return Head::Other,
    };
    if len != buf.len() || req.method != Some("GET") || req.version != Some(1) {
        return Head::Other;
    }
    const HYPERS: [&str; 5] = ["upgrade", "content-length", "transfer-encoding", "expect", "connection"];
    for h in req.headers.iter() {
        if HYPERS.iter().any(|n| h.name.eq_ignore_ascii_case(n))
            && !(h.name.eq_ignore_ascii_case("connection") && plain_connection(h.value))
        {
            return Head::Other;
        }
    }
    let path = req.path.unwrap_or("");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    // Percent-escapes are decoded by axum's router; leave those requests to it.
    let Some(rest) = path.strip_prefix('/').filter(|p| !p.contains('%')) else {
        return Head::Other;
    };
    let Some((app, file)) = rest.split_once('/') else {
        return Head::Other;
    };
    match file.strip_suffix(".flv") {
        Some(stream) if !app.is_empty() && !stream.is_empty() && !file.contains('/') => Head::FlvPlay {
            app: app.to_owned(),
            stream: stream.to_owned(),
        },
        _ => Head::Other,
    }
}

/// `Connection: keep-alive` or `close` only (an `Upgrade` token means a protocol switch).
fn plain_connection(v: &[u8]) -> bool {
    v.split(|&b| b == b',').all(|t| {
        let t = t.trim_ascii();
        t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close")
    })
}

/// The response head of a play: what axum's route sends for the same request (content type,
/// caching, the CORS headers of the router's layer), chunked, and `Connection: close` since the
/// connection ends with the stream.
pub fn response_head(cors_allow_origin: &str, date: &str) -> Bytes {
    let valid = axum::http::HeaderValue::from_str(cors_allow_origin).is_ok();
    let origin = if valid { cors_allow_origin } else { "null" };
    let vary = if origin == "*" {
        ""
    } else {
        "vary: origin, access-control-request-method, access-control-request-headers\r\n"
    };
    Bytes::from(format!(
        "HTTP/1.1 200 OK\r\ndate: {date}\r\ncontent-type: video/x-flv\r\ncache-control: no-cache, no-store\r\n\
         access-control-allow-origin: {origin}\r\naccess-control-expose-headers: location,link,etag\r\n{vary}\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    ))
}

/// An HTTP date (IMF-fixdate, RFC 9110 5.6.7) for `t`.
pub fn http_date(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (year, month, day) = egress::hls::civil_date(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let weekday = WEEKDAYS[usize::try_from(days.rem_euclid(7)).unwrap_or(0)];
    let month = MONTHS[usize::try_from(month - 1).unwrap_or(0)];
    format!(
        "{weekday}, {day:02} {month} {year} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Accepts on `listener` until shutdown: serves HTTP-FLV plays, and every other connection with
/// hyper and `router`. Returns once every connection has closed (the caller bounds the wait).
pub async fn serve(listener: TcpListener, router: axum::Router, st: Arc<FlvService>) {
    // One clone per open connection: the count says when all have closed.
    let open = std::sync::Arc::new(());
    accept_until_shutdown(&listener, st.shutdown.clone(), "HTTP", |sock, peer| {
        // Live media is latency-bound: no Nagle delay.
        if let Err(e) = sock.set_nodelay(true) {
            warn!("TCP_NODELAY: {e}");
        }
        let (router, st, token) = (router.clone(), st.clone(), open.clone());
        tokio::spawn(async move {
            route(sock, peer, router, st).await;
            drop(token);
        });
    })
    .await;
    drop(listener);
    while std::sync::Arc::strong_count(&open) > 1 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn route(mut sock: TcpStream, peer: SocketAddr, router: axum::Router, st: Arc<FlvService>) {
    let head_timeout = Duration::from_secs(st.http.request_head_timeout_secs);
    let mut buf = BytesMut::with_capacity(1024);
    let read_head = async {
        loop {
            if sock.read_buf(&mut buf).await? == 0 {
                return Ok::<_, io::Error>(Head::Other); // hyper sees the same EOF
            }
            match classify(&buf) {
                Head::Partial if buf.len() < MAX_HEAD => continue,
                Head::Partial => return Ok(Head::Other),
                h => return Ok(h),
            }
        }
    };
    match tokio::time::timeout(head_timeout, read_head).await {
        Ok(Ok(Head::FlvPlay { app, stream })) => {
            // A bad name or a key that is not live: axum answers (400, 404, or waits for a
            // publisher as configured).
            if let Ok(key) = StreamKey::new(&app, &stream) {
                if let Ok(sub) = st.hub.subscribe(&key, "http-flv") {
                    let span = tracing::info_span!("play", %key, protocol = "http-flv", %peer);
                    serve_flv(sock, sub, st).instrument(span).await;
                    return;
                }
            }
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            debug!(%peer, "HTTP read: {e}");
            return;
        }
        Err(_) => {
            debug!(%peer, "no request head in {} s", head_timeout.as_secs());
            return;
        }
    }
    serve_hyper(Rewind::new(buf.freeze(), sock), peer, router, head_timeout, st).await;
}

/// Everything but FLV plays: axum's router behind hyper's HTTP/1.1, with WebSocket upgrades,
/// `ConnectInfo<SocketAddr>` (WHIP reads it), a timeout for every request head (axum::serve sets
/// none), and a graceful close at shutdown.
pub async fn serve_hyper<I>(io: I, peer: SocketAddr, router: axum::Router, head_timeout: Duration, st: Arc<FlvService>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let inner = hyper_util::service::TowerToHyperService::new(router);
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        hyper::service::Service::call(&inner, req)
    });
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(head_timeout);
    let conn = http1.serve_connection(hyper_util::rt::TokioIo::new(io), svc).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut shutdown = st.shutdown.clone();
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(%peer, "HTTP connection: {e}");
            }
            return;
        }
        _ = shutdown.changed() => conn.as_mut().graceful_shutdown(),
    }
    if let Err(e) = conn.await {
        debug!(%peer, "HTTP connection: {e}");
    }
}

/// HTTP-FLV's side of the viewer loop: each batch is one chunk of the chunked body, written
/// with one `writev`; input after the request is counted and bounded.
struct HttpFlvSink<'a> {
    rd: tokio::net::tcp::ReadHalf<'a>,
    wr: tokio::net::tcp::WriteHalf<'a>,
    framed: Vec<Bytes>,
    input: [u8; 512],
    input_total: usize,
    counters: &'a ProtocolCounters,
    stall: Duration,
}

impl ViewerSink for HttpFlvSink<'_> {
    async fn write(&mut self, batch: &mut Vec<Bytes>) -> std::io::Result<()> {
        let n: usize = batch.iter().map(Bytes::len).sum();
        self.framed.push(Bytes::from(format!("{n:x}\r\n")));
        self.framed.append(batch);
        self.framed.push(Bytes::from_static(b"\r\n"));
        write_all_vectored(&mut self.wr, &mut self.framed).await.map(|_| ())
    }

    async fn read(&mut self) -> std::io::Result<usize> {
        self.rd.read(&mut self.input).await
    }

    async fn on_input(&mut self, n: usize) -> Result<(), String> {
        self.input_total += n;
        if self.input_total > MAX_TRAILING_INPUT {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            return Err(format!("viewer sent {} bytes after its request", self.input_total));
        }
        Ok(())
    }

    async fn end(&mut self, why: End) {
        // End the chunked body properly, so players see an end, not a broken response.
        let limit = if why == End::Shutdown { LAST_WRITE } else { self.stall };
        let mut last = vec![Bytes::from_static(b"0\r\n\r\n")];
        let _ = timeout_write(&mut self.wr, &mut last, limit).await;
    }
}

/// Streams FLV to one viewer until the stream ends, the viewer goes, or the gateway stops.
async fn serve_flv(mut sock: TcpStream, mut sub: Subscriber, st: Arc<FlvService>) {
    let counters = &st.counters.http_flv;
    counters.connections.fetch_add(1, Ordering::Relaxed);
    info!("viewer joined");
    let (rd, mut wr) = sock.split();
    let settings = st.settings();
    // The head goes out at once, as hyper's did, even before the first frame.
    let head = response_head(&st.http.cors_allow_origin, &http_date(std::time::SystemTime::now()));
    let why = match timeout_write(&mut wr, &mut vec![head], settings.stall).await {
        Err(e) => e,
        Ok(()) => {
            let mut sink = HttpFlvSink {
                rd,
                wr,
                framed: Vec::new(),
                input: [0; 512],
                input_total: 0,
                counters,
                stall: settings.stall,
            };
            let r = drive_viewer(&mut sub, &mut FlvViewer::new(), &mut sink, settings, counters, st.shutdown.clone()).await;
            let _ = sink.wr.shutdown().await;
            r.unwrap_or_else(|e| e)
        }
    };
    info!(dropped = sub.dropped(), protocol = "http-flv", why, "viewer left");
}

/// `write_all_vectored`, given up after `limit`; the error says why.
async fn timeout_write<W: AsyncWrite + Unpin>(w: &mut W, bufs: &mut Vec<Bytes>, limit: Duration) -> Result<(), String> {
    match tokio::time::timeout(limit, write_all_vectored(w, bufs)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("write: {e}")),
        Err(_) => Err(format!("viewer took nothing for {} s", limit.as_secs())),
    }
}

/// A socket with bytes already read from it put back in front, for hyper.
struct Rewind {
    prefix: Bytes,
    io: TcpStream,
}

impl Rewind {
    fn new(prefix: Bytes, io: TcpStream) -> Self {
        Self { prefix, io }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                self.prefix = Bytes::new(); // frees the head buffer for the connection's lifetime
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn play(app: &str, stream: &str) -> Head {
        Head::FlvPlay {
            app: app.into(),
            stream: stream.into(),
        }
    }

    #[test]
    fn plain_flv_gets_are_served_here() {
        assert_eq!(classify(b"GET /live/a.flv HTTP/1.1\r\nHost: x\r\n\r\n"), play("live", "a"));
        // What browsers' fetch sends; a query (tokens, cache busters) is ignored as axum does.
        let chrome = b"GET /live/cam-1.flv?t=123 HTTP/1.1\r\nHost: x:8080\r\nConnection: keep-alive\r\n\
            Origin: http://y\r\nAccept: */*\r\nUser-Agent: Mozilla/5.0\r\n\r\n";
        assert_eq!(classify(chrome), play("live", "cam-1"));
        assert_eq!(
            classify(b"GET /live/a.flv HTTP/1.1\r\nConnection: Close\r\n\r\n"),
            play("live", "a")
        );
    }

    #[test]
    fn partial_heads_wait_for_more() {
        let full = b"GET /live/a.flv HTTP/1.1\r\nHost: x\r\n\r\n";
        for n in 1..full.len() {
            assert_eq!(classify(&full[..n]), Head::Partial, "{n} bytes");
        }
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for req in [
            &b"HEAD /live/a.flv HTTP/1.1\r\n\r\n"[..],
            b"GET /live/a.flv HTTP/1.0\r\n\r\n",
            b"GET /live/a.m3u8 HTTP/1.1\r\n\r\n",
            b"GET /api/v1/streams HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET /a.flv HTTP/1.1\r\n\r\n",
            b"GET /ll/live/a.flv HTTP/1.1\r\n\r\n",
            b"GET /live/.flv HTTP/1.1\r\n\r\n",
            b"GET //a.flv HTTP/1.1\r\n\r\n",
            b"GET /live/a%20b.flv HTTP/1.1\r\n\r\n",
            b"GET http://x/live/a.flv HTTP/1.1\r\n\r\n",
            b"POST /live/a.flv HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            // WebSocket-FLV is the same URL, upgraded.
            b"GET /live/a.flv HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET /live/a.flv HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /live/a.flv HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            // A second request pipelined behind the first.
            b"GET /live/a.flv HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"GET /live/a.flv HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            assert_eq!(classify(req), Head::Other, "{}", String::from_utf8_lossy(req));
        }
        let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(classify(format!("GET /live/a.flv HTTP/1.1\r\n{many}\r\n").as_bytes()), Head::Other);
    }

    #[test]
    fn response_head_matches_the_cors_setting() {
        let any = response_head("*", "Sun, 29 Nov 2026 16:00:00 GMT");
        let any = std::str::from_utf8(&any).unwrap();
        assert!(any.starts_with("HTTP/1.1 200 OK\r\ndate: Sun, 29 Nov 2026 16:00:00 GMT\r\n") && any.ends_with("\r\n\r\n"));
        assert!(any.contains("content-type: video/x-flv\r\n") && any.contains("transfer-encoding: chunked\r\n"));
        assert!(any.contains("access-control-allow-origin: *\r\n") && !any.contains("vary"));
        let one = response_head("https://site.example", "");
        let one = std::str::from_utf8(&one).unwrap();
        assert!(one.contains("access-control-allow-origin: https://site.example\r\n") && one.contains("\r\nvary: origin,"));
        let bad = response_head("x\r\ny: z", "");
        assert!(std::str::from_utf8(&bad).unwrap().contains("access-control-allow-origin: null\r\n"));
    }

    #[test]
    fn http_dates() {
        let at = |s: u64| http_date(std::time::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(at(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT"); // RFC 9110's example
        assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(at(1_798_761_599), "Thu, 31 Dec 2026 23:59:59 GMT");
    }

    #[tokio::test]
    async fn rewind_replays_the_prefix_then_the_socket() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b" world").await.unwrap();
            let mut back = Vec::new();
            c.read_to_end(&mut back).await.unwrap();
            back
        });
        let (s, _) = l.accept().await.unwrap();
        let mut r = Rewind::new(Bytes::from_static(b"hello"), s);
        let mut got = vec![0u8; 11];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");
        r.write_all(b"ok").await.unwrap();
        r.shutdown().await.unwrap();
        assert_eq!(client.await.unwrap(), b"ok");
    }

    /// The fuzz target's properties (`fuzz/fuzz_targets/http_head.rs`) over mutated heads: what
    /// is served here is a plain name, and a head with bytes after it is hyper's.
    #[test]
    fn mutated_heads_keep_the_properties() {
        let seeds: [&[u8]; 3] = [
            b"GET /live/a.flv HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /live/cam-1.flv?t=1 HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
            b"GET /ll/a/b.flv HTTP/1.1\r\n\r\n",
        ];
        let alphabet = b"/%?.\r\n :GETflvHTP1aA\x00\xff";
        let mut m = crate::testutil::Mutator::new(0x9e37_79b9_7f4a_7c15);
        let mut served = 0;
        for i in 0..50_000 {
            let b = m.mutate(seeds[i % seeds.len()], alphabet, 3);
            if let Head::FlvPlay { app, stream } = classify(&b) {
                served += 1;
                assert!(!app.is_empty() && !stream.is_empty());
                assert!(!app.contains('/') && !stream.contains('/') && !stream.contains('%'));
                let mut more = b.clone();
                more.push(b'G');
                assert_eq!(classify(&more), Head::Other);
            }
        }
        assert!(served > 1000, "the mutations still reach the fast path ({served})");
    }
}
