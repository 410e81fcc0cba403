//! Socket helpers for the thin I/O shells.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use media::hub::{HubEvent, Subscriber};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::warn;

/// Accepts on `listener` until `shutdown` changes, handing each connection to `on_conn`. Accept
/// errors (out of file descriptors and the like) are logged and retried after 50 ms instead of
/// spinning.
pub async fn accept_until_shutdown(
    listener: &TcpListener,
    mut shutdown: watch::Receiver<bool>,
    what: &str,
    mut on_conn: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, peer)) => on_conn(sock, peer),
                Err(e) => {
                    warn!("{what} accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// Writes every buffer with as few `writev` calls as the socket allows, draining `bufs`.
/// Returns the bytes written.
pub async fn write_all_vectored<W: AsyncWrite + Unpin>(w: &mut W, bufs: &mut Vec<Bytes>) -> std::io::Result<usize> {
    let total: usize = bufs.iter().map(Bytes::len).sum();
    let mut first = 0;
    while first < bufs.len() {
        let slices: Vec<IoSlice<'_>> = bufs[first..].iter().take(64).map(|b| IoSlice::new(b)).collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let b = &mut bufs[first];
            if n >= b.len() {
                n -= b.len();
                first += 1;
            } else {
                b.advance(n);
                n = 0;
            }
        }
    }
    bufs.clear();
    Ok(total)
}

/// Gathers one viewer's hub events into batches, one write each (SRS calls this "merged
/// write"): fewer, larger writes cost less CPU per byte, at the price of up to `window` of extra
/// latency. A zero window hands over each event with whatever else is already queued, at once.
///
/// With a window, batches are cut on a process-wide grid of `window` steps, so every viewer of
/// every stream wakes in the same timer tick (one wake-up of the runtime's workers serves them
/// all; deadlines spread over the window woke a worker for each), and while frames flow a viewer
/// wakes only on the grid, not also for each frame. The first event after a pause goes out at
/// once (a new viewer's first frame, a stream that was idle).
///
/// Cancel-safe: events already handed to `take` stay with the caller, and the next call goes on
/// waiting for the same grid point.
#[derive(Debug)]
pub struct Batcher {
    window: Duration,
    /// The grid point the current batch is cut at; `None` while waiting for an event.
    due: Option<Instant>,
    /// Events taken since the last batch was returned.
    taken: bool,
    last_cut: Option<Instant>,
}

impl Batcher {
    /// A batcher for `window` (zero: no waiting).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            due: None,
            taken: false,
            last_cut: None,
        }
    }

    /// Hands the next batch of events to `take`. `None` once the stream has ended (events
    /// queued before the end have been handed over by an earlier call).
    pub async fn next(&mut self, sub: &mut Subscriber, mut take: impl FnMut(HubEvent)) -> Option<()> {
        loop {
            match self.due {
                None => {
                    let ev = sub.recv().await?;
                    take(ev);
                    self.taken = true;
                    if self.window.is_zero() {
                        self.drain(sub, &mut take);
                        self.taken = false;
                        return Some(());
                    }
                    let now = Instant::now();
                    match self.last_cut.map(|t| t + self.window) {
                        Some(earliest) if earliest > now => self.due = Some(on_grid(earliest, self.window)),
                        // The first event after a pause: at once.
                        _ => {
                            self.drain(sub, &mut take);
                            self.taken = false;
                            self.last_cut = Some(now);
                            return Some(());
                        }
                    }
                }
                Some(due) => {
                    tokio::time::sleep_until(due.into()).await;
                    let ended = self.drain(sub, &mut take);
                    if !self.taken {
                        if ended {
                            return None;
                        }
                        // Nothing came in a whole window: back to waiting for an event.
                        self.due = None;
                        continue;
                    }
                    self.taken = false;
                    self.last_cut = Some(due);
                    // Stay on the grid while frames flow; after a slow write (a viewer that fell
                    // behind), the next grid point from now, not a run of missed ones.
                    self.due = Some(on_grid((due + self.window).max(Instant::now()), self.window));
                    return Some(());
                }
            }
        }
    }

    /// Takes everything queued; true when the stream has ended.
    fn drain(&mut self, sub: &mut Subscriber, take: &mut impl FnMut(HubEvent)) -> bool {
        loop {
            match sub.try_recv() {
                Some(Some(ev)) => {
                    take(ev);
                    self.taken = true;
                }
                Some(None) => return true,
                None => return false,
            }
        }
    }
}

/// `t` rounded up to the next multiple of `step` since a process-wide origin.
fn on_grid(t: Instant, step: Duration) -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    let step_ns = step.as_nanos().max(1);
    let since = t.saturating_duration_since(origin).as_nanos();
    let steps = since.div_ceil(step_ns);
    let ns = u64::try_from(steps * step_ns).unwrap_or(u64::MAX);
    origin + Duration::from_nanos(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    use media::frame::{MediaFrame, Timebase};
    use media::hub::{Hub, PublisherInfo};
    use media::key::StreamKey;

    fn stream(hub: &Hub) -> (media::hub::Publisher, Subscriber) {
        let key = StreamKey::new("live", "batch").unwrap();
        let info = PublisherInfo {
            protocol: "test",
            remote: "127.0.0.1:1".into(),
        };
        let p = hub.publish(key.clone(), info).unwrap();
        let sub = hub.subscribe(&key, "test").unwrap();
        (p, sub)
    }

    fn frame(ts: i64) -> MediaFrame {
        MediaFrame::video(ts, ts, Timebase::MILLIS, ts == 0, Bytes::from_static(&[0, 0, 0, 1, 0x65]))
    }

    /// Frames handed over by one `next` call, and when it returned.
    async fn batch(b: &mut Batcher, sub: &mut Subscriber) -> Option<(usize, Instant)> {
        let mut n = 0;
        b.next(sub, |ev| n += usize::from(matches!(ev, HubEvent::Frame(_)))).await?;
        Some((n, Instant::now()))
    }

    #[tokio::test]
    async fn without_a_window_every_frame_goes_at_once() {
        let hub = Hub::default();
        let (p, mut sub) = stream(&hub);
        let mut b = Batcher::new(Duration::ZERO);
        p.push(frame(0), Instant::now());
        assert_eq!(batch(&mut b, &mut sub).await.unwrap().0, 1);
        p.push(frame(33), Instant::now());
        p.push(frame(66), Instant::now());
        // Whatever is queued goes together.
        assert_eq!(batch(&mut b, &mut sub).await.unwrap().0, 2);
        drop(p);
        assert!(batch(&mut b, &mut sub).await.is_none(), "the end");
    }

    #[tokio::test]
    async fn with_a_window_batches_follow_the_grid_while_frames_flow() {
        let hub = Hub::default();
        let (p, mut sub) = stream(&hub);
        let window = Duration::from_millis(60);
        let mut b = Batcher::new(window);
        // The first frame goes at once.
        let t0 = Instant::now();
        p.push(frame(0), Instant::now());
        let (n, at) = batch(&mut b, &mut sub).await.unwrap();
        assert_eq!(n, 1);
        assert!(at - t0 < Duration::from_millis(30));
        // A frame every 10 ms: each batch is cut on the grid, a window apart, with several.
        let pusher = tokio::spawn(async move {
            for i in 1..=40 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                p.push(frame(i * 10), Instant::now());
            }
            p
        });
        let mut cuts = Vec::new();
        let mut frames = 1;
        for _ in 0..5 {
            let (n, at) = batch(&mut b, &mut sub).await.unwrap();
            assert!(n >= 2, "a batch of {n}");
            frames += n;
            cuts.push(at);
        }
        for w in cuts.windows(2) {
            let gap = w[1] - w[0];
            assert!(gap >= window - Duration::from_millis(2) && gap < window * 2, "{gap:?}");
        }
        assert_eq!(on_grid(b.last_cut.unwrap(), window), b.last_cut.unwrap(), "cut on the grid");
        // The rest, then the end once the publisher has gone: nothing is lost.
        drop(pusher.await.unwrap());
        while let Some((n, _)) = batch(&mut b, &mut sub).await {
            frames += n;
        }
        assert_eq!(frames, 41);
    }

    #[tokio::test]
    async fn after_a_slow_write_the_grid_resumes_from_now() {
        let hub = Hub::default();
        let (p, mut sub) = stream(&hub);
        let window = Duration::from_millis(50);
        let mut b = Batcher::new(window);
        p.push(frame(0), Instant::now());
        batch(&mut b, &mut sub).await.unwrap();
        p.push(frame(10), Instant::now());
        batch(&mut b, &mut sub).await.unwrap();
        // The write of that batch took 300 ms; frames kept coming.
        tokio::time::sleep(Duration::from_millis(300)).await;
        p.push(frame(20), Instant::now());
        p.push(frame(30), Instant::now());
        let t = Instant::now();
        let (n, _) = batch(&mut b, &mut sub).await.unwrap();
        assert_eq!(n, 2);
        assert!(t.elapsed() < window, "the backlog goes at once");
        // Then one batch per window again, not a burst of missed grid points.
        p.push(frame(40), Instant::now());
        let (n, at) = batch(&mut b, &mut sub).await.unwrap();
        assert_eq!(n, 1);
        let cut = b.last_cut.unwrap();
        assert!(cut >= t && at >= cut, "cut on a grid point after the backlog, not a missed one");
        assert_eq!(on_grid(cut, window), cut);
    }

    #[test]
    fn grid_points_are_shared_and_never_early() {
        let step = Duration::from_millis(66);
        let a = Instant::now();
        let g = on_grid(a, step);
        assert!(g >= a && g - a <= step);
        // Anything up to that point lands on the same one; just after it, one step later.
        assert_eq!(on_grid(g - Duration::from_millis(30), step), g);
        assert_eq!(on_grid(g, step), g);
        assert_eq!(on_grid(g + Duration::from_nanos(1), step), g + step);
    }

    #[tokio::test]
    async fn writes_everything_in_order_through_partial_writes() {
        let (mut a, mut b) = tokio::io::duplex(7); // tiny pipe: forces partial writes
        let mut bufs: Vec<Bytes> = (0..100u8).map(|i| Bytes::from(vec![i; usize::from(i % 13) + 1])).collect();
        let expected: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut b, &mut got).await.unwrap();
            got
        });
        let n = write_all_vectored(&mut a, &mut bufs).await.unwrap();
        drop(a);
        assert_eq!(n, expected.len());
        assert!(bufs.is_empty());
        assert_eq!(reader.await.unwrap(), expected);
    }
}
