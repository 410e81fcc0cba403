#!/usr/bin/env bash
# A room of N synthetic participants (issue 16): each publishes H.264 640x480@20 ~1 Mbit/s + Opus
# with WHIP (whipload: real ICE, DTLS, SRTP) and receives the N-1 others on one forwarding
# session (/sfu, the API the room's Socket.IO events drive). Prints the gateway's CPU with the
# publishers alone, with the forwarding, and per forwarded stream (N x (N-1) of them), and the
# video frame rate each participant received (expected: (N-1) x 20).
#   bench/room.sh [N...]     default N: 2 4 8
# Glass-to-glass latency between two Chromium participants is measured by
# tests/browser/room.test.mjs ("two in t1 ... latencyMs").
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
WARMUP=${WARMUP:-5}
WINDOW=${WINDOW:-10}

scripts/deps.sh test >/dev/null
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p streamgate -p streamgate-loadgen
SG=$target/release/streamgate
WHIPLOAD=$target/release/whipload
make_webrtc_media

counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(2 4 8)
work=$(mktemp -d /tmp/sg-room.XXXXXX)
results=$work/results.jsonl
for n in "${counts[@]}"; do
  webrtc_load_config "$((2 * n + 10))" "$work/sg.toml"
  start_gateway "$SG" "$work/sg.toml" "$work/sg-$n.log"
  echo "room of N=$n" >&2
  "$WHIPLOAD" room "http://127.0.0.1:$http" "$n" "$WARMUP" "$WINDOW" "$h264" "$opus" "$sg" >>"$results"
  kill "$sg"; wait "$sg" 2>/dev/null || true
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| participants | forwarded streams | subscribers connected | gateway CPU %, publishers only | gateway CPU %, with forwarding | CPU % per forwarded stream | video fps received per participant (min-max / expected) | skipped (congestion) fps per participant | RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['participants']} | {r['forwarded_streams']} | {r['subscribers_connected']} | {r['server_cpu_percent_publishers_only']:.1f} | {r['server_cpu_percent']:.1f} | "
          f"{r['server_cpu_percent_per_forwarded_stream']:.2f} | {r['video_fps_received_per_participant_min']:.1f}-{r['video_fps_received_per_participant_max']:.1f} / {r['video_fps_expected_per_participant']:.0f} | {r['video_fps_skipped_congested_per_participant']:.1f} | {r['server_rss_kb']/1024:.1f} |")
PY
echo "raw results: $results" >&2
