#!/usr/bin/env bash
# Fan-out benchmark: one ~2 Mbps publisher (H.264 720p30 + AAC, pre-encoded and looped with
# -c copy so no encoder competes for CPU), N viewers over HTTP-FLV and RTMP play from streamgate,
# and the same N over RTMP play from nginx-rtmp in the same run.
# Prints a markdown table: server CPU per delivered byte, CPU %, RSS per viewer.
#   bench/fanout.sh [N...]          (default: 100 500 1000)
#   REPEAT=3 COALESCE=0 WORKERS=2 WINDOW=16 bench/fanout.sh 100
#     (rounds; other egress.write_coalesce_ms and server.workers settings beside the default;
#     window in seconds)
#   BASELINE=/path/to/older/streamgate bench/fanout.sh 100
#     (an older build, e.g. of the last release, measured in the same rounds as "baseline")
# Everything binds to 127.0.0.1; every process started here is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(100 500 1000)
WARMUP=${WARMUP:-4}
WINDOW=${WINDOW:-16}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

scripts/deps.sh test >/dev/null
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p streamgate -p streamgate-loadgen
SG=$target/release/streamgate
LOADGEN=$target/release/streamgate-loadgen

work=$(mktemp -d /tmp/sg-fanout.XXXXXX)
source bench/common.sh
make_source

results=$work/results.jsonl
run_streamgate() { # proto N variant ("default", "coalesce=MS", "workers=N" or "baseline")
  local http rtmp sg pub
  http=$(free_port); rtmp=$(free_port)
  local name=streamgate bin=$SG
  # The load generator opens every viewer at once from one address: far beyond the RTMP limit
  # on connections still in handshake/connect from one address, which is for the open internet.
  printf '[rtmp]\nmax_pending = 100000\nmax_pending_per_address = 100000\n' >"$work/sg.toml"
  case $3 in
    coalesce=*) printf '[egress]\nwrite_coalesce_ms = %s\n' "${3#*=}" >>"$work/sg.toml"; name="streamgate coalesce ${3#*=}ms" ;;
    workers=*) printf '[server]\nworkers = %s\n' "${3#*=}" >>"$work/sg.toml"; name="streamgate workers ${3#*=}" ;;
    # An older build may not know the newer keys: its defaults.
    baseline) : >"$work/sg.toml"; name=baseline; bin=$BASELINE ;;
  esac
  "$bin" --config "$work/sg.toml" --http 127.0.0.1:"$http" --rtmp 127.0.0.1:"$rtmp" --webrtc-udp 127.0.0.1:0 --log warn >"$work/sg.log" 2>&1 &
  sg=$!; pids+=($sg)
  wait_port "$http"; wait_port "$rtmp"
  publish "rtmp://127.0.0.1:$rtmp/live/bench"; pub=$PUB
  sleep 2
  local url="http://127.0.0.1:$http/live/bench.flv"
  [ "$1" = rtmp ] && url="rtmp://127.0.0.1:$rtmp/live/bench"
  "$LOADGEN" "$1" "$url" "$2" "$WARMUP" "$WINDOW" "$sg" | sed "s/^{/{\"server\":\"$name\",/" >>"$results"
  stop "$pub" "$sg"
}

run_nginx() { # N
  local port pub master workers
  start_nginx_rtmp "$work/nginx"
  port=$NGINX_PORT; master=$NGINX_MASTER
  workers=$NGINX_WORKERS
  publish "rtmp://127.0.0.1:$port/live/bench"; pub=$PUB
  sleep 2
  # shellcheck disable=SC2086
  "$LOADGEN" rtmp "rtmp://127.0.0.1:$port/live/bench" "$1" "$WARMUP" "$WINDOW" "$master" $workers | sed "s/^{/{\"server\":\"nginx-rtmp\",/" >>"$results"
  stop "$pub" "$master"
}

# COALESCE: other egress.write_coalesce_ms settings to measure beside the default (100 ms), e.g.
# COALESCE=0 for a write per frame; WORKERS: other server.workers settings beside the default
# (1), e.g. WORKERS=2. REPEAT: rounds per N (each round runs every server once, so
# drift on the machine hits all of them); the table gives medians and the range over rounds.
REPEAT=${REPEAT:-1}
for n in "${counts[@]}"; do
  for r in $(seq "$REPEAT"); do
    variants=(default)
    for c in ${COALESCE:-}; do variants+=("coalesce=$c"); done
    for w in ${WORKERS:-}; do variants+=("workers=$w"); done
    [ -z "${BASELINE:-}" ] || variants+=(baseline)
    for v in "${variants[@]}"; do
      echo "N=$n round $r: streamgate HTTP-FLV ($v)" >&2; run_streamgate http "$n" "$v"
      echo "N=$n round $r: streamgate RTMP ($v)" >&2; run_streamgate rtmp "$n" "$v"
    done
    echo "N=$n round $r: nginx-rtmp RTMP" >&2; run_nginx "$n"
  done
done

python3 - "$results" <<'PY'
import json, sys
from statistics import median
rows = [json.loads(l) for l in open(sys.argv[1])]
groups = {}
for r in rows:
    groups.setdefault((r["viewers"], r["server"], r["protocol"]), []).append(r)
def ns(rs):
    return [r["server_cpu_ns_per_byte"] for r in rs]
print("| N | server | protocol | rounds | receiving | Mbit/s delivered | server CPU % | CPU ns/byte (range) | RSS MiB | RSS KiB/viewer | vs nginx CPU/byte (range) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for (n, server, proto), rs in groups.items():
    ref = groups.get((n, "nginx-rtmp", "rtmp"))
    v = ns(rs)
    m = median(v)
    if ref:
        refm = median(ns(ref))
        # Ratio of medians, and the range of the same-round ratios.
        per_round = [a / b for a, b in zip(v, ns(ref)) if b > 0]
        ratio = f"{m / refm:.2f} ({min(per_round):.2f}–{max(per_round):.2f})" if len(per_round) > 1 else f"{m / refm:.2f}"
    else:
        ratio = "n/a"
    recv = min(r["viewers_receiving"] for r in rs)
    mbit = median(r["mbit_per_s_total"] for r in rs)
    cpu = median(r["server_cpu_percent"] for r in rs)
    rss = median(r["server_rss_kb"] for r in rs) / 1024
    per_viewer = median((r["server_rss_kb"] - r["server_rss_before_kb"]) / r["viewers"] for r in rs)
    rng = f" ({min(v):.3f}–{max(v):.3f})" if len(v) > 1 else ""
    print(f"| {n} | {server} | {proto} | {len(rs)} | {recv}/{n} | {mbit:.0f} | {cpu:.1f} | {m:.3f}{rng} | {rss:.1f} | {per_viewer:.1f} | {ratio} |")
PY
echo "raw results: $results" >&2
