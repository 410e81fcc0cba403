#!/usr/bin/env bash
# WebRTC egress benchmark: one publisher of H.264 640x480@20 ~1 Mbit/s + Opus 20 ms (looped from
# files) and N synthetic viewers (whipload play: real ICE, DTLS, SRTP; frames depacketized and
# counted). Gateway CPU per viewer and per delivered Mbit/s, RSS per viewer, and the frames the
# worst-served viewer received against what the source sent.
#   bench/whep.sh [N...]           default N: 50 200 500
#   JANUS=1 bench/whep.sh [N...]   Janus' streaming plugin (Debian `janus`) beside streamgate,
#                                  N by N: an RTP mountpoint fed by FFmpeg from the same files,
#                                  its viewers driven through its HTTP API by the same client.
# streamgate gets the media from a WHIP publisher (whipload publish), Janus as plain RTP from
# FFmpeg (what its streaming plugin takes); both then send the same H.264 and Opus to every
# viewer. Both servers run in a network namespace of their own (a veth pair; Janus' ICE leaves
# loopback out), the publisher and the viewers on the host side. Every process started here is
# stopped by PID; the namespace is removed on exit. Needs root (ip netns).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
WARMUP=${WARMUP:-10}
WINDOW=${WINDOW:-15}
PER_LOADGEN=${PER_LOADGEN:-100}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

scripts/deps.sh test >/dev/null
if [ -n "${JANUS:-}" ] && ! command -v janus >/dev/null; then
  apt-get install -y -q janus >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q janus >/dev/null; }
fi
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p streamgate -p streamgate-loadgen
SG=$target/release/streamgate
WHIPLOAD=$target/release/whipload

make_webrtc_media

# The namespace: the servers at $SRV, the host side at $HOST.
id=$(( $$ % 10000 ))
ns=sgwhep$id; vh=sgwh$id; vn=sgwn$id
sub=$(( 16 + $$ % 200 ))
HOST=10.232.$sub.1; SRV=10.232.$sub.2
teardown() { ip link del "$vh" 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; }
teardown
ip netns add "$ns"
ip link add "$vh" type veth peer name "$vn"
ip link set "$vn" netns "$ns"
ip addr add "$HOST/30" dev "$vh"; ip link set "$vh" up
ip netns exec "$ns" ip addr add "$SRV/30" dev "$vn"
ip netns exec "$ns" ip link set "$vn" up
ip netns exec "$ns" ip link set lo up
trap 'cleanup; teardown' EXIT
export WHIPLOAD_BIND=$HOST

wait_tcp() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.1; done; echo "$1:$2 never opened" >&2; return 1; }

counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(50 200 500)
work=$(mktemp -d /tmp/sg-whep.XXXXXX)
results=$work/results.jsonl

# Viewers of BASE/KEY (KEY `janus`: Janus' mountpoint 1), PER_LOADGEN per load generator, all
# over the same window; one merged JSON line to $results.
play() { # server n base key pid
  local server=$1 n=$2 base=$3 key=$4 pid=$5 k i share parts=()
  k=$(( (n + PER_LOADGEN - 1) / PER_LOADGEN ))
  for i in $(seq "$k"); do
    share=$(( n / k + (i <= n % k ? 1 : 0) ))
    "$WHIPLOAD" play "$base" "$key" "$share" "$((WARMUP + n / 100))" "$WINDOW" "$pid" >"$work/part-$server-$n-$i.json" &
    parts+=($!); pids+=($!)
  done
  for i in "${parts[@]}"; do wait "$i" || true; done
  python3 - "$server" "$work"/part-"$server"-"$n"-*.json >>"$results" <<'PY'
import json, sys
server, files = sys.argv[1], sys.argv[2:]
parts = [json.load(open(f)) for f in files]
n = sum(p["connected"] for p in parts)
cpu = sum(p["server_cpu_percent"] for p in parts) / len(parts)
mbit = sum(p["delivered_mbit_per_s"] for p in parts)
idle = parts[0]["server_rss_kb"] - parts[0]["server_rss_kb_per_viewer"] * parts[0]["connected"]
rss = max(p["server_rss_kb"] for p in parts)
print(json.dumps({
    "server": server, "loadgens": len(parts),
    "viewers": sum(p["viewers"] for p in parts), "connected": n, "failed": sum(p["failed"] for p in parts),
    "delivered_mbit_per_s": mbit,
    "source_video_fps": parts[0]["source_video_fps"], "source_audio_fps": parts[0]["source_audio_fps"],
    "video_fps_min": min(p["video_fps_min"] for p in parts),
    "video_fps_median": sorted(p["video_fps_median"] for p in parts)[len(parts) // 2],
    "audio_fps_min": min(p["audio_fps_min"] for p in parts),
    "server_cpu_percent": cpu, "server_cpu_percent_per_viewer": cpu / max(n, 1),
    "server_cpu_percent_per_mbit": cpu / mbit if mbit else 0,
    "server_rss_kb": rss, "server_rss_kb_per_viewer": (rss - idle) / max(n, 1),
    "loadgen_cpu_percent": sum(p["loadgen_cpu_percent"] for p in parts),
}))
PY
}

run_streamgate() { # n
  local n=$1 http rtmp udp sg pub secs
  http=$(free_port); rtmp=$(free_port); udp=$(free_port)
  # The viewers come from one address, 100 a second: lift the per-address offer limits.
  webrtc_load_config "$((n + 10))" "$work/sg.toml"
  ip netns exec "$ns" "$SG" --config "$work/sg.toml" --http "$SRV:$http" --rtmp "$SRV:$rtmp" --webrtc-udp "$SRV:$udp" --log warn >"$work/sg-$n.log" 2>&1 &
  sg=$!; pids+=($sg)
  wait_tcp "$SRV" "$http"
  secs=$((WARMUP + WINDOW + n / 100 + 10))
  "$WHIPLOAD" publish "http://$SRV:$http" 1 "$secs" 1 "$h264" "$opus" "$sg" >/dev/null &
  pub=$!; pids+=($pub)
  for _ in $(seq 100); do curl -s "http://$SRV:$http/api/v1/streams" | grep -q '"bench/pub0"' && break; sleep 0.1; done
  sleep 2
  echo "N=$n WHEP viewers of streamgate" >&2
  play streamgate "$n" "http://$SRV:$http" bench/pub0 "$sg"
  stop "$pub" "$sg"
}

run_janus() { # n
  local n=$1 dir jp vp ap janus feed
  dir=$work/janus-$n; mkdir -p "$dir"
  jp=$(free_port); vp=$((20000 + RANDOM % 5000 * 2)); ap=$((vp + 2))
  for f in bench/janus/*.jcfg; do
    sed -e "s|@DIR@|$dir|" -e "s|@HTTP_PORT@|$jp|" -e "s|@VIDEO_PORT@|$vp|" -e "s|@AUDIO_PORT@|$ap|" \
      -e "s|ice_enforce_list = \"lo\"|ice_enforce_list = \"$vn\"|" -e "s|ip = \"127.0.0.1\"|ip = \"$SRV\"|" "$f" >"$dir/$(basename "$f")"
  done
  ip netns exec "$ns" janus -F "$dir" -C "$dir/janus.jcfg" >"$dir/janus.log" 2>&1 &
  janus=$!; pids+=($janus)
  wait_tcp "$SRV" "$jp"
  # One stream per RTP output (the muxer takes no more): -map each.
  ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -framerate 20 -i "$h264" -re -stream_loop -1 -i "$opus" \
    -map 0:v -c copy -payload_type 96 -f rtp "rtp://$SRV:$vp?pkt_size=1200" \
    -map 1:a -c copy -payload_type 111 -f rtp "rtp://$SRV:$ap" </dev/null >"$dir/ffmpeg.log" 2>&1 &
  feed=$!; pids+=($feed)
  sleep 2
  echo "N=$n viewers of Janus' streaming plugin" >&2
  play janus "$n" "http://$SRV:$jp" janus "$janus"
  stop "$feed" "$janus"
}

for n in "${counts[@]}"; do
  run_streamgate "$n"
  [ -z "${JANUS:-}" ] || run_janus "$n"
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| server | viewers | connected | delivered Mbit/s | source video fps | viewer video fps (min / median) | source / viewer min audio fps | server CPU % | CPU %/viewer | CPU %/Mbit/s | RSS MiB | RSS KiB/viewer | load generators CPU % |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    src = f"{r['source_video_fps']:.1f}" if r["server"] == "streamgate" else "20 (file)"
    asrc = f"{r['source_audio_fps']:.1f}" if r["server"] == "streamgate" else "50 (file)"
    print(f"| {r['server']} | {r['viewers']} | {r['connected']} | {r['delivered_mbit_per_s']:.1f} | {src} | {r['video_fps_min']:.1f} / {r['video_fps_median']:.1f} | {asrc} / {r['audio_fps_min']:.1f} | "
          f"{r['server_cpu_percent']:.1f} | {r['server_cpu_percent_per_viewer']:.3f} | {r['server_cpu_percent_per_mbit']:.2f} | {r['server_rss_kb']/1024:.1f} | {r['server_rss_kb_per_viewer']:.0f} | {r['loadgen_cpu_percent']:.1f} |")
by = {}
for r in rows:
    by.setdefault(r["viewers"], {})[r["server"]] = r
for n, s in sorted(by.items()):
    if "janus" in s and "streamgate" in s and s["janus"]["server_cpu_percent_per_mbit"]:
        ratio = s["streamgate"]["server_cpu_percent_per_mbit"] / s["janus"]["server_cpu_percent_per_mbit"]
        print(f"N={n}: streamgate CPU per delivered Mbit/s = {ratio:.2f} x Janus'")
PY
echo "raw results: $results" >&2
