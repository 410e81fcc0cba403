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

cpu_ns() { # "pid..."
  local s=0 p t
  for p in $1; do
    for t in /proc/"$p"/task/*/schedstat; do s=$((s + $(cut -d' ' -f1 "$t" 2>/dev/null || echo 0))); done
  done
  echo "$s"
}
measure() { # name "pid..." url
  local pub a b
  publish "$3"; pub=$PUB
  sleep 4
  a=$(cpu_ns "$2"); sleep "$WINDOW"; b=$(cpu_ns "$2")
  printf '| %s | %d |\n' "$1" $(( (b - a) / WINDOW / 1000 ))
  stop "$pub"
}

echo "| server | CPU µs per second, publisher only |"
echo "|---|---|"
for _ in $(seq "$rounds"); do
  http=$(free_port); rtmp=$(free_port)
  "$SG" --http 127.0.0.1:"$http" --rtmp 127.0.0.1:"$rtmp" --webrtc-udp 127.0.0.1:0 --log warn >"$work/sg.log" 2>&1 &
  sg=$!; pids+=("$sg")
  wait_port "$http"; wait_port "$rtmp"
  measure streamgate "$sg" "rtmp://127.0.0.1:$rtmp/live/bench"
  stop "$sg"

  start_nginx_rtmp "$work/nginx"
  port=$NGINX_PORT; master=$NGINX_MASTER
  # Master and worker, as bench/fanout.sh counts them.
  measure nginx-rtmp "$master $NGINX_WORKERS" "rtmp://127.0.0.1:$port/live/bench"
  stop "$master"
done
