#!/usr/bin/env bash
# WebRTC ingest benchmarks.
#   bench/whip.sh publishers [N...]   N synthetic WHIP publishers (whipload: real ICE/DTLS/SRTP),
#                                     each H.264 640x480@20 ~1 Mbit/s + Opus, looped from files;
#                                     gateway CPU and RSS per publisher (default N: 10 50 100).
#   bench/whip.sh transcode           CPU of the gateway's transcoders per stream: VP8 640x480@20
#                                     -> H.264, and Opus -> AAC (share of one core in real time).
# The media are made once with FFmpeg into bench/.cache. Everything binds to 127.0.0.1; every
# process started here is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
mode=${1:-publishers}
shift || true
WARMUP=${WARMUP:-8}
WINDOW=${WINDOW:-15}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

scripts/deps.sh test >/dev/null
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p streamgate -p streamgate-loadgen
SG=$target/release/streamgate
WHIPLOAD=$target/release/whipload

make_webrtc_media

if [ "$mode" = transcode ]; then
  "$WHIPLOAD" transcode-cost "$vp8" "$opus" "$opus2"
  exit 0
fi

counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(10 50 100)
work=$(mktemp -d /tmp/sg-whip.XXXXXX)

results=$work/results.jsonl
# BASELINE=/path/to/older/streamgate: an older build measured beside this one, N by N.
servers=(streamgate)
[ -z "${BASELINE:-}" ] || servers+=(baseline)
for n in "${counts[@]}"; do
  for server in "${servers[@]}"; do
    bin=$SG
    # whipload starts 50 publishers a second from one address: lift the per-address offer limits.
    webrtc_load_config "$((n + 10))" "$work/sg.toml"
    if [ "$server" = baseline ]; then
      bin=$BASELINE
      printf '[webrtc]\nmax_sessions = %s\n' "$((n + 10))" >"$work/sg.toml"
    fi
    start_gateway "$bin" "$work/sg.toml" "$work/sg-$n.log"
    echo "N=$n WHIP publishers ($server)" >&2
    "$WHIPLOAD" publish "http://127.0.0.1:$http" "$n" "$WARMUP" "$WINDOW" "$h264" "$opus" "$sg" | sed "s/^{/{\"server\":\"$server\",/" >>"$results"
    kill "$sg"; wait "$sg" 2>/dev/null || true
  done
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| server | publishers | connected | live streams | ingest Mbit/s | gateway CPU % | CPU %/publisher | RSS MiB | RSS KiB/publisher | load generator CPU % |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r.get('server', 'streamgate')} | {r['publishers']} | {r['connected']} | {r['streams_live']} | {r['publish_mbit_per_s']:.1f} | {r['server_cpu_percent']:.1f} | "
          f"{r['server_cpu_percent_per_publisher']:.2f} | {r['server_rss_kb']/1024:.1f} | {r['server_rss_kb_per_publisher']:.0f} | {r['loadgen_cpu_percent']:.1f} |")
PY
echo "raw results: $results" >&2
