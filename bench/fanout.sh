#!/usr/bin/env bash
# Fan-out benchmark: one ~2 Mbps publisher (H.264 720p30 + AAC, pre-encoded and looped with
# -c copy so no encoder competes for CPU), N viewers over HTTP-FLV and RTMP play from streamgate,
# and the same N over RTMP play from nginx-rtmp in the same run.
# Prints a markdown table: server CPU per delivered byte, CPU %, RSS per viewer.
#   bench/fanout.sh [N...]          (default: 100 500 1000)
# Everything binds to 127.0.0.1; every process started here is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(100 500 1000)
WARMUP=${WARMUP:-4}
WINDOW=${WINDOW:-10}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

scripts/deps.sh test >/dev/null
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p streamgate -p streamgate-loadgen
SG=$target/release/streamgate
LOADGEN=$target/release/streamgate-loadgen

work=$(mktemp -d /tmp/sg-fanout.XXXXXX)
source bench/common.sh
make_source



PUB=
publish() { # url; sets PUB
  ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$src" -c copy -f flv "$1" </dev/null >/dev/null &
  PUB=$!
  pids+=("$PUB")
}

results=$work/results.jsonl
run_streamgate() { # proto N coalesce_ms
  local http rtmp sg pub
  http=$(free_port); rtmp=$(free_port)
  local config=()
  if [ "$3" != default ]; then
    printf '[egress]\nwrite_coalesce_ms = %s\n' "$3" >"$work/sg.toml"
    config=(--config "$work/sg.toml")
  fi
  "$SG" "${config[@]}" --http 127.0.0.1:"$http" --rtmp 127.0.0.1:"$rtmp" --webrtc-udp 127.0.0.1:0 --log warn >"$work/sg.log" 2>&1 &
  sg=$!; pids+=($sg)
  wait_port "$http"; wait_port "$rtmp"
  publish "rtmp://127.0.0.1:$rtmp/live/bench"; pub=$PUB
  sleep 2
  local url="http://127.0.0.1:$http/live/bench.flv"
  [ "$1" = rtmp ] && url="rtmp://127.0.0.1:$rtmp/live/bench"
  local name=streamgate
  [ "$3" = default ] || name="streamgate coalesce ${3}ms"
  "$LOADGEN" "$1" "$url" "$2" "$WARMUP" "$WINDOW" "$sg" | sed "s/^{/{\"server\":\"$name\",/" >>"$results"
  kill "$pub" "$sg"; wait "$pub" "$sg" 2>/dev/null || true
}

run_nginx() { # N
  local port conf pub master workers
  port=$(free_port)
  mkdir -p "$work/nginx/logs"
  conf=$work/nginx/nginx.conf
  cat >"$conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
worker_processes 1;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 8192; }
rtmp { server { listen 127.0.0.1:$port; chunk_size 4096; application live { live on; } } }
CONF
  nginx -c "$conf" -p "$work/nginx" -g "daemon off; pid $work/nginx/nginx.pid;" &
  master=$!; pids+=($master)
  wait_port "$port"
  workers=$(pgrep -P "$master" | tr '\n' ' ')
  publish "rtmp://127.0.0.1:$port/live/bench"; pub=$PUB
  sleep 2
  # shellcheck disable=SC2086
  "$LOADGEN" rtmp "rtmp://127.0.0.1:$port/live/bench" "$1" "$WARMUP" "$WINDOW" "$master" $workers | sed "s/^{/{\"server\":\"nginx-rtmp\",/" >>"$results"
  kill "$pub" "$master"; wait "$pub" "$master" 2>/dev/null || true
}

# COALESCE: other egress.write_coalesce_ms settings to measure beside the default (0: each frame
# at once), e.g. COALESCE=100 for batched writes.
for n in "${counts[@]}"; do
  for c in default ${COALESCE:-}; do
    echo "N=$n: streamgate HTTP-FLV (coalesce $c ms)" >&2; run_streamgate http "$n" "$c"
    echo "N=$n: streamgate RTMP (coalesce $c ms)" >&2; run_streamgate rtmp "$n" "$c"
  done
  echo "N=$n: nginx-rtmp RTMP" >&2; run_nginx "$n"
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| N | server | protocol | receiving | Mbit/s delivered | server CPU % | CPU ns/byte | RSS MiB | RSS KiB/viewer | vs nginx CPU/byte |")
print("|---|---|---|---|---|---|---|---|---|---|")
nginx = {r["viewers"]: r for r in rows if r["server"] == "nginx-rtmp"}
for r in rows:
    per_viewer = (r["server_rss_kb"] - r["server_rss_before_kb"]) / r["viewers"]
    ref = nginx.get(r["viewers"])
    ratio = r["server_cpu_ns_per_byte"] / ref["server_cpu_ns_per_byte"] if ref and ref["server_cpu_ns_per_byte"] > 0 else float("nan")
    print(f"| {r['viewers']} | {r['server']} | {r['protocol']} | {r['viewers_receiving']}/{r['viewers']} | {r['mbit_per_s_total']:.0f} | "
          f"{r['server_cpu_percent']:.1f} | {r['server_cpu_ns_per_byte']:.3f} | {r['server_rss_kb']/1024:.1f} | {per_viewer:.1f} | {ratio:.2f} |")
PY
echo "raw results: $results" >&2
