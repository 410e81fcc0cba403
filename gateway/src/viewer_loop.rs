//! The one loop every socket viewer runs (RTMP play, HTTP-FLV, WS-FLV): hub events are batched
//! ([`Batcher`]), muxed by the format's per-viewer state ([`Muxer`]), and written by the
//! protocol's [`ViewerSink`] within a stall limit; what the viewer sends is read meanwhile, and
//! the gateway's shutdown ends it. The protocols differ only in their sink: framing (chunked
//! HTTP, WebSocket messages, raw RTMP chunks), what they do with input, and how they say the end.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use egress::flv::FlvViewer;
use egress::rtmp_play::RtmpPlayViewer;
use media::hub::{HubEvent, Subscriber};
use tokio::sync::watch;

use crate::counters::ProtocolCounters;
use crate::io::Batcher;

/// A format's per-viewer muxing state.
pub trait Muxer: Send {
    /// Appends the bytes `ev` produces for this viewer.
    fn on_event(&mut self, ev: HubEvent, out: &mut Vec<Bytes>);
}

impl Muxer for FlvViewer {
    fn on_event(&mut self, ev: HubEvent, out: &mut Vec<Bytes>) {
        FlvViewer::on_event(self, ev, out)
    }
}

impl Muxer for RtmpPlayViewer {
    fn on_event(&mut self, ev: HubEvent, out: &mut Vec<Bytes>) {
        RtmpPlayViewer::on_event(self, ev, out)
    }
}

/// Why a viewer's stream stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The publisher left.
    StreamEnded,
    /// The gateway is shutting down.
    Shutdown,
}

/// A protocol's side of the loop.
pub trait ViewerSink: Send {
    /// Writes one batch of muxed bytes, framed as the protocol needs (drains `batch`).
    fn write(&mut self, batch: &mut Vec<Bytes>) -> impl Future<Output = std::io::Result<()>> + Send;
    /// Waits for input from the viewer and keeps it; must be cancel-safe (it is dropped whenever
    /// a batch is ready first). `Ok(0)`: the viewer closed.
    fn read(&mut self) -> impl Future<Output = std::io::Result<usize>> + Send;
    /// Acts on `n` bytes (or messages) that [`ViewerSink::read`] kept; runs to completion. An
    /// error closes the viewer with that reason.
    fn on_input(&mut self, n: usize) -> impl Future<Output = Result<(), String>> + Send;
    /// Tells the viewer its stream stopped (last chunk, onStatus, close frame); best effort.
    fn end(&mut self, why: End) -> impl Future<Output = ()> + Send;
}

/// What a viewer of one protocol is held to.
#[derive(Debug, Clone, Copy)]
pub struct ViewerSettings {
    /// `egress.write_coalesce_ms`.
    pub batch_window: Duration,
    /// A write that takes longer than this (the viewer takes nothing) closes the viewer.
    pub stall: Duration,
}

enum Step {
    Batch { ended: bool },
    Input(std::io::Result<usize>),
    Shutdown,
}

/// Runs one viewer until its stream ends, it goes, it stalls or the gateway stops. `Ok(why)`
/// for a normal end (stream ended, viewer closed, shutdown), `Err(why)` when the viewer failed
/// (stalled, a write or read error, bad input); the reason is for the log.
pub async fn drive_viewer(
    sub: &mut Subscriber,
    muxer: &mut impl Muxer,
    sink: &mut impl ViewerSink,
    settings: ViewerSettings,
    counters: &ProtocolCounters,
    mut shutdown: watch::Receiver<bool>,
) -> Result<String, String> {
    let mut batcher = Batcher::new(settings.batch_window);
    let mut out = Vec::new();
    loop {
        // Decide first, act after: the read future is dropped before the write borrows the sink.
        let step = tokio::select! {
            batch = batcher.next(sub, |ev| muxer.on_event(ev, &mut out)) => Step::Batch { ended: batch.is_none() },
            r = sink.read() => Step::Input(r),
            _ = shutdown.changed() => Step::Shutdown,
        };
        match step {
            Step::Batch { ended } => {
                let n: usize = out.iter().map(Bytes::len).sum();
                if n > 0 {
                    match tokio::time::timeout(settings.stall, sink.write(&mut out)).await {
                        Ok(Ok(())) => counters.add_out(n),
                        Ok(Err(e)) => return Err(format!("write: {e}")),
                        Err(_) => return Err(format!("viewer took nothing for {} s", settings.stall.as_secs())),
                    }
                }
                if ended {
                    sink.end(End::StreamEnded).await;
                    return Ok("stream ended".to_owned());
                }
            }
            Step::Input(Ok(0)) => return Ok("viewer closed".to_owned()),
            Step::Input(Ok(n)) => sink.on_input(n).await?,
            Step::Input(Err(e)) => return Err(format!("read: {e}")),
            Step::Shutdown => {
                sink.end(End::Shutdown).await;
                return Ok("shutting down".to_owned());
            }
        }
    }
}
