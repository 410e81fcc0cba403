#!/usr/bin/env bash
# Ingest cost: the CPU a server spends on one ~2 Mbps RTMP publisher (FFmpeg, -c copy) with no
# viewer, streamgate against nginx-rtmp in the same run. This is the fixed part of the fan-out
# bench's figures, which weighs most at small N.
#   bench/ingest.sh [ROUNDS]   (default 2; WINDOW=16 seconds per measurement)
# CPU is the scheduler run time of every thread (/proc/PID/task/*/schedstat, ns).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
WINDOW=${WINDOW:-16}
scripts/deps.sh test >/dev/null
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p streamgate
SG=$target/release/streamgate
work=$(mktemp -d /tmp/sg-ingest.XXXXXX)
source bench/common.sh
make_source

cpu_ns() { # pid
  local s=0 t
  for t in /proc/"$1"/task/*/schedstat; do s=$((s + $(cut -d' ' -f1 "$t"))); done
  echo "$s"
}
measure() { # name pid url
  local pub a b
  ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$src" -c copy -f flv "$3" </dev/null >/dev/null 2>&1 &
  pub=$!; pids+=("$pub")
  sleep 4
  a=$(cpu_ns "$2"); sleep "$WINDOW"; b=$(cpu_ns "$2")
  printf '| %s | %d |\n' "$1" $(( (b - a) / WINDOW / 1000 ))
  kill "$pub"; wait "$pub" 2>/dev/null || true
}

echo "| server | CPU µs per second, publisher only |"
echo "|---|---|"
for _ in $(seq "$rounds"); do
  http=$(free_port); rtmp=$(free_port)
  "$SG" --http 127.0.0.1:"$http" --rtmp 127.0.0.1:"$rtmp" --webrtc-udp 127.0.0.1:0 --log warn >"$work/sg.log" 2>&1 &
  sg=$!; pids+=("$sg")
  wait_port "$http"; wait_port "$rtmp"
  measure streamgate "$sg" "rtmp://127.0.0.1:$rtmp/live/bench"
  kill "$sg"; wait "$sg" 2>/dev/null || true

  start_nginx_rtmp "$work/nginx"
  port=$NGINX_PORT; master=$NGINX_MASTER
  sleep 0.5
  measure nginx-rtmp "$(pgrep -P "$master" | head -1)" "rtmp://127.0.0.1:$port/live/bench"
  kill "$master"; wait "$master" 2>/dev/null || true
done
