//! Socket helpers for the thin I/O shells.

use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};

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

/// Waits so that writes to one viewer are at least `window` apart (SRS calls this "merged
/// write"): fewer, larger writes cost less CPU per byte, at the price of up to `window` of extra
/// latency. A zero window never waits.
pub async fn coalesce(last_write: &mut Option<Instant>, window: Duration) {
    if window.is_zero() {
        return;
    }
    if let Some(due) = last_write.map(|t| t + window) {
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
    }
    *last_write = Some(Instant::now());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn coalesce_spaces_writes_by_the_window() {
        let mut last = None;
        let t = Instant::now();
        coalesce(&mut last, Duration::ZERO).await;
        assert!(last.is_none(), "a zero window keeps no state and never waits");
        coalesce(&mut last, Duration::from_millis(50)).await;
        assert!(t.elapsed() < Duration::from_millis(40), "the first write does not wait");
        coalesce(&mut last, Duration::from_millis(50)).await;
        assert!(t.elapsed() >= Duration::from_millis(50), "the second write waits out the window");
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
