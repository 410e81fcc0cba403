//! `loadgen`: opens N viewers against a server and measures, over a fixed window, the bytes they
//! received and the server's CPU time (scheduler run time from /proc, see `proc_cpu_and_rss`) and RSS.
//!
//! usage: loadgen http|rtmp URL N WARMUP_SECS WINDOW_SECS SERVER_PID...
//! (several PIDs are summed: nginx runs a master and a worker). Prints one JSON line.
//! Bounded: every connection ends after WARMUP + WINDOW seconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use rtmp::amf0::{self, Amf0Value};
use rtmp::chunk::{encode_message, types};
use streamgate_loadgen::{proc_cpu_and_rss, proc_cpu_ticks, split_url};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn http_viewer(hostport: String, path: String, counter: Arc<AtomicU64>) -> Result<()> {
    let mut s = TcpStream::connect(&hostport).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

fn command(values: &[Amf0Value], sid: u32, out: &mut BytesMut) {
    encode_message(out, 3, 0, types::COMMAND_AMF0, sid, &amf0::encode_all(values), 128);
}

async fn rtmp_viewer(hostport: String, path: String, counter: Arc<AtomicU64>) -> Result<()> {
    let (app, stream) = path.trim_start_matches('/').split_once('/').context("rtmp URL needs /app/stream")?;
    let mut s = TcpStream::connect(&hostport).await?;
    s.set_nodelay(true)?;
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(0u8, 1536));
    s.write_all(&c0c1).await?;
    let mut s0s1s2 = vec![0u8; 3073];
    s.read_exact(&mut s0s1s2).await?;
    s.write_all(&s0s1s2[1..1537]).await?;
    let mut out = BytesMut::new();
    let tc_url = format!("rtmp://{hostport}/{app}");
    command(
        &[
            Amf0Value::string("connect"),
            Amf0Value::Number(1.0),
            Amf0Value::object([
                ("app", Amf0Value::string(app)),
                ("tcUrl", Amf0Value::string(&tc_url)),
                ("fpad", Amf0Value::Boolean(false)),
            ]),
        ],
        0,
        &mut out,
    );
    encode_message(&mut out, 2, 0, types::WINDOW_ACK_SIZE, 0, &5_000_000u32.to_be_bytes(), 128);
    command(
        &[Amf0Value::string("createStream"), Amf0Value::Number(2.0), Amf0Value::Null],
        0,
        &mut out,
    );
    command(
        &[
            Amf0Value::string("play"),
            Amf0Value::Number(0.0),
            Amf0Value::Null,
            Amf0Value::string(stream),
        ],
        1,
        &mut out,
    );
    // SetBufferLength 1000 ms on stream 1 (players send it; some servers wait for it).
    encode_message(&mut out, 2, 0, types::USER_CONTROL, 0, &[0, 3, 0, 0, 0, 1, 0, 0, 3, 0xe8], 128);
    s.write_all(&out).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut since_ack = 0u64;
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
        total += n as u64;
        since_ack += n as u64;
        // Acknowledge every 2.5 MB like a player (servers may throttle clients that never ack).
        if since_ack >= 2_500_000 {
            since_ack = 0;
            let mut ack = BytesMut::new();
            encode_message(&mut ack, 2, 0, types::ACK, 0, &(total as u32).to_be_bytes(), 128);
            s.write_all(&ack).await?;
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 7 {
        bail!("usage: loadgen http|rtmp URL N WARMUP_SECS WINDOW_SECS SERVER_PID...");
    }
    let proto = args[1].clone();
    let (hostport, path) = split_url(&args[2])?;
    let n: usize = args[3].parse()?;
    let warmup: f64 = args[4].parse()?;
    let window: f64 = args[5].parse()?;
    let pids: Vec<u32> = args[6..].iter().filter_map(|p| p.parse().ok()).collect();
    let (_, rss_before_kb) = proc_cpu_and_rss(&pids);
    let counters: Vec<Arc<AtomicU64>> = (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let failures = Arc::new(AtomicU64::new(0));
    for c in &counters {
        let (h, p, c, f) = (hostport.clone(), path.clone(), c.clone(), failures.clone());
        let is_rtmp = proto == "rtmp";
        tokio::spawn(async move {
            let r = if is_rtmp {
                rtmp_viewer(h, p, c).await
            } else {
                http_viewer(h, p, c).await
            };
            if r.is_err() {
                f.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Pace connection set-up a little so the accept queue never overflows.
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
    let start_bytes: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let (cpu0, _) = proc_cpu_and_rss(&pids);
    let ticks0 = proc_cpu_ticks(&pids);
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(window)).await;
    let (cpu1, rss_kb) = proc_cpu_and_rss(&pids);
    let ticks1 = proc_cpu_ticks(&pids);
    let elapsed = t0.elapsed().as_secs_f64();
    let per_conn: Vec<u64> = counters
        .iter()
        .zip(&start_bytes)
        .map(|(c, s)| c.load(Ordering::Relaxed) - s)
        .collect();
    let total: u64 = per_conn.iter().sum();
    let active = per_conn.iter().filter(|&&b| b > 0).count();
    let min = per_conn.iter().copied().min().unwrap_or(0);
    let cpu = cpu1 - cpu0;
    let result = serde_json::json!({
        "protocol": proto,
        "viewers": n,
        "viewers_receiving": active,
        "failures": failures.load(Ordering::Relaxed),
        "window_s": elapsed,
        "bytes": total,
        "mbit_per_s_total": total as f64 * 8.0 / elapsed / 1e6,
        "min_viewer_kbit_per_s": min as f64 * 8.0 / elapsed / 1e3,
        "server_cpu_s": cpu,
        "server_cpu_s_ticks": ticks1 - ticks0,
        "server_cpu_percent": cpu / elapsed * 100.0,
        "server_cpu_ns_per_byte": if total > 0 { cpu * 1e9 / total as f64 } else { f64::NAN },
        "server_rss_kb": rss_kb,
        "server_rss_before_kb": rss_before_kb,
    });
    println!("{result}");
    Ok(())
}
