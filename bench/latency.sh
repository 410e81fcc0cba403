#!/usr/bin/env bash
# Glass-to-glass latency and creep: tests/tools/clock_publisher.py burns the wall clock into
# every frame, mpegts.js in headless Chromium plays WS-FLV (for SECONDS, default 1800 = 30 min)
# and HTTP-FLV (30 s) and reads it back. Also measures the same path with FFmpeg as the player
# (no browser buffering) for reference, WHIP ingest -> WS-FLV (WHIP_SECONDS, default 120), and
# classic HLS and LL-HLS in hls.js (HLS_SECONDS, default 60).
# Prints JSON lines: median/p95 latency, start vs end median (creep), first-frame time.
#   bench/latency.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-1800}
scripts/deps.sh test >/dev/null
cargo build --release -q -p streamgate
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

echo "== mpegts.js in Chromium (WS-FLV ${secs}s, HTTP-FLV 30s)"
LATENCY_SECONDS=$secs node --test tests/browser/flv_latency.test.mjs 2>&1 | grep -E '^# (ws|http)-flv|^(ok|not ok)'

echo "== WHIP (Chromium canvas clock, H.264 passed through / VP8 transcoded) -> WS-FLV in mpegts.js (${WHIP_SECONDS:-120}s each)"
WHIP_LATENCY_SECONDS=${WHIP_SECONDS:-120} node --test tests/browser/whip_latency.test.mjs 2>&1 | grep -E '^# whip-|^(ok|not ok)'

echo "== hls.js in Chromium: classic HLS and LL-HLS (lowLatencyMode), ${HLS_SECONDS:-60}s each"
HLS_SECONDS=${HLS_SECONDS:-60} node --test --test-name-pattern='without a stall' tests/browser/hls.test.mjs 2>&1 | grep -E '^# (classic HLS|LL-HLS) |^(ok|not ok)'

echo "== FFmpeg as the player (RTMP and HTTP-FLV, 10 s each)"
SG=$CARGO_TARGET_DIR/release/streamgate
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http=$(port); rtmp=$(port)
"$SG" --http 127.0.0.1:"$http" --rtmp 127.0.0.1:"$rtmp" --webrtc-udp 127.0.0.1:0 --log warn &
sg=$!
trap 'kill $sg $pub 2>/dev/null || true' EXIT
sleep 0.5
python3 tests/tools/clock_publisher.py "rtmp://127.0.0.1:$rtmp/live/clock" 40 &
pub=$!
sleep 3
for url in "rtmp://127.0.0.1:$rtmp/live/clock" "http://127.0.0.1:$http/live/clock.flv"; do
  printf '%s: ' "${url%%:*}"
  ffmpeg -hide_banner -loglevel quiet -threads 1 -fflags nobuffer -flags low_delay -probesize 32 -analyzeduration 0 \
    -i "$url" -an -f rawvideo -pix_fmt gray - | python3 tests/tools/clock_reader.py 10 || true
done
