#!/usr/bin/env bash
# HLS serving benchmark: wrk with CONNECTIONS (default 1000) connections fetching the playlist and
# the newest segment it lists (alternately; bench/hls_serve.lua), against streamgate serving a
# live ~2 Mbps stream's classic HLS from memory and, in the same run, nginx serving a snapshot of
# the same playlist and segments from disk (sendfile). Reports requests/s, MB/s and server CPU
# per 1000 requests (/proc utime+stime of the server's processes over the wrk run).
#   bench/hls_serve.sh [SECONDS]        (default 20)
# Everything binds to 127.0.0.1; every process started here is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
conns=${CONNECTIONS:-1000}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

scripts/deps.sh test >/dev/null
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p streamgate
SG=$target/release/streamgate

work=$(mktemp -d /tmp/sg-hls-serve.XXXXXX)
source bench/common.sh
make_source

# utime+stime (clock ticks) of the given PIDs and their threads.
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }

http=$(free_port); rtmp=$(free_port)
"$SG" --http 127.0.0.1:"$http" --rtmp 127.0.0.1:"$rtmp" --webrtc-udp 127.0.0.1:0 --log warn >"$work/sg.log" 2>&1 &
sg=$!; pids+=("$sg")
wait_port "$http"; wait_port "$rtmp"
publish "rtmp://127.0.0.1:$rtmp/live/bench"
sleep 2
curl -sf "http://127.0.0.1:$http/live/bench.m3u8" >/dev/null
sleep 6

# nginx serves a snapshot of the same playlist and segments from disk.
mkdir -p "$work/www/live" "$work/nginx/logs"
curl -sf "http://127.0.0.1:$http/live/bench.m3u8" -o "$work/www/live/bench.m3u8"
grep -v '^#' "$work/www/live/bench.m3u8" | while read -r seg; do
  curl -sf "http://127.0.0.1:$http/live/$seg" -o "$work/www/live/$seg"
done
chmod -R a+rX "$work"   # nginx's workers run as www-data
ngport=$(free_port)
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes auto;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 1000000;
  types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
  server {
    listen 127.0.0.1:$ngport;
    root $work/www;
    location / { add_header Access-Control-Allow-Origin *; add_header Cache-Control "max-age=1"; }
  }
}
CONF
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g "daemon off; pid $work/nginx/nginx.pid;" &
ngx=$!; pids+=("$ngx")
wait_port "$ngport"
ngx_all=("$ngx" $(pgrep -P "$ngx" | tr '\n' ' '))

hz=$(getconf CLK_TCK)
run() { # name url pids...
  local name=$1 url=$2; shift 2
  local before after out
  before=$(cpu_ticks "$@")
  if [ -n "${PERF:-}" ] && [ "$name" = streamgate ]; then perf record -F 499 -g -p "$1" -o "$work/perf.data" -- sleep "$((secs - 2))" >/dev/null 2>&1 & fi
  out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency -s bench/hls_serve.lua "$url" 2>&1)
  after=$(cpu_ticks "$@")
  python3 - "$name" "$((after - before))" "$hz" "$secs" <<PY
import re, sys, json
name, ticks, hz, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
out = """$out"""
req = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
mbps = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
mb = float(mbps.group(1)) * {"B": 1e-6, "KB": 1e-3, "MB": 1, "GB": 1e3}[mbps.group(2)]
p99 = re.search(r"99%\s+([\d.]+\w+)", out).group(1)
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
errs = re.search(r"Socket errors: (.*)", out)
cpu = ticks / hz
print(json.dumps({"server": name, "requests_per_s": round(rps), "MB_per_s": round(mb, 1), "p99": p99,
                  "server_cpu_s": round(cpu, 2), "cpu_ms_per_1k_req": round(1e6 * cpu / max(req, 1), 1),
                  "non_2xx": int(bad.group(1)) if bad else 0, "socket_errors": errs.group(1) if errs else ""}))
PY
}
[ -z "${PERF:-}" ] || echo "perf data: $work/perf.data" >&2
echo "wrk: $conns connections, 2 threads, ${secs}s, playlist + newest segment alternately" >&2
run streamgate "http://127.0.0.1:$http/live/bench.m3u8" "$sg" | tee "$work/sg.json"
run nginx "http://127.0.0.1:$ngport/live/bench.m3u8" "${ngx_all[@]}" | tee "$work/ngx.json"
python3 - "$work/sg.json" "$work/ngx.json" <<'PY'
import json, sys
s, n = (json.load(open(p)) for p in sys.argv[1:])
print(f"streamgate/nginx: requests/s {s['requests_per_s'] / n['requests_per_s']:.2f}x, "
      f"CPU per request {s['cpu_ms_per_1k_req'] / n['cpu_ms_per_1k_req']:.2f}x")
PY
