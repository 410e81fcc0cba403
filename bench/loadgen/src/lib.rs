//! Shared by the benchmark clients: reading a server's CPU and memory, splitting URLs.

use anyhow::{Context, Result};

/// CPU seconds (utime + stime) and resident memory (KiB) of the processes, summed.
pub fn proc_cpu_and_rss(pids: &[u32]) -> (f64, u64) {
    let tick = 100.0; // USER_HZ on Linux
    let mut cpu = 0.0;
    let mut rss_kb = 0;
    for pid in pids {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // Fields after the ")" that ends the command name; utime and stime are 14 and 15.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                cpu += (ut + st) / tick;
            }
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for line in status.lines() {
                if let Some(v) = line.strip_prefix("VmRSS:") {
                    rss_kb += v.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    (cpu, rss_kb)
}

/// host:port, app and stream from rtmp://host:port/app/stream or http://host:port/path.
pub fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url.split_once("://").map(|(_, r)| r).context("URL without scheme")?;
    let (hostport, path) = rest.split_once('/').context("URL without path")?;
    Ok((hostport.to_owned(), format!("/{path}")))
}
