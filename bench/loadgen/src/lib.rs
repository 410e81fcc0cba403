//! Shared by the benchmark clients: reading a server's CPU and memory, splitting URLs.

use anyhow::{Context, Result};

/// CPU seconds and resident memory (KiB) of the processes, summed. CPU is the nanosecond run
/// time the scheduler keeps per thread (/proc/PID/task/TID/schedstat; includes the softirq work a
/// send does in the sender's context, as utime + stime does on this kernel), which is exact where
/// utime + stime comes in 10 ms ticks; utime + stime when schedstat is missing.
pub fn proc_cpu_and_rss(pids: &[u32]) -> (f64, u64) {
    let mut cpu = 0.0;
    let mut rss_kb = 0;
    for pid in pids {
        cpu += schedstat_cpu(*pid).unwrap_or_else(|| stat_cpu(*pid));
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

/// utime + stime (10 ms ticks, but it keeps the time of threads that have exited) of the
/// processes, summed, in seconds: a cross-check of [`proc_cpu_and_rss`].
pub fn proc_cpu_ticks(pids: &[u32]) -> f64 {
    pids.iter().map(|p| stat_cpu(*p)).sum()
}

/// Run time of every live thread of `pid`, in seconds; `None` only when the process has no
/// readable task list. A thread that exits while being read is skipped (its time is lost either
/// way), so both ends of a window use the same method.
fn schedstat_cpu(pid: u32) -> Option<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Some(ns as f64 / 1e9)
}

/// utime + stime of `pid` (all threads), in seconds.
fn stat_cpu(pid: u32) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the ")" that ends the command name; utime and stime are 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (ut + st) / tick
}

/// host:port, app and stream from rtmp://host:port/app/stream or http://host:port/path.
pub fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url.split_once("://").map(|(_, r)| r).context("URL without scheme")?;
    let (hostport, path) = rest.split_once('/').context("URL without path")?;
    Ok((hostport.to_owned(), format!("/{path}")))
}
