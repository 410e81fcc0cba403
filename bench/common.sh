# Shared by the bench/ scripts (sourced): the looped 2 Mbps source, ports, and stopping by PID.

# bench/.cache/src-720p-2mbps.flv: 20 s of H.264 720p30 (~1.85 Mbps, 1 s GOP) + AAC, made once.
src=bench/.cache/src-720p-2mbps.flv
make_source() {
  mkdir -p bench/.cache
  if [ ! -s "$src" ]; then
    ffmpeg -hide_banner -loglevel error -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440 -t 20 \
      -c:v libx264 -preset veryfast -b:v 1850k -maxrate 1900k -bufsize 1900k -g 30 -pix_fmt yuv420p \
      -c:a aac -b:a 128k -f flv "$src"
  fi
}

# Every process a script starts goes into pids and is stopped by PID on exit.
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
# Stops the given PIDs, waits for them and drops them from pids (so the exit trap never signals a
# PID that a new process may have taken).
stop() {
  local p keep=() q
  for p in "$@"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for q in "${pids[@]}"; do
    for p in "$@"; do [ "$q" = "$p" ] && continue 2; done
    keep+=("$q")
  done
  pids=("${keep[@]}")
}

# FFmpeg publishing the looped source to an RTMP URL in real time (-c copy: no encoder competes
# for CPU). Sets PUB.
PUB=
publish() { # url; sets PUB
  ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$src" -c copy -f flv "$1" </dev/null >/dev/null &
  PUB=$!
  pids+=("$PUB")
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
# A [webrtc] section that lets one load generator's address open LIMIT sessions, at any rate.
webrtc_load_config() { # limit file
  printf '[webrtc]\nmax_sessions = %s\nmax_pending = %s\nmax_pending_per_address = %s\noffers_per_second_per_address = 0.0\n' \
    "$1" "$1" "$1" >"$2"
}
# Starts BIN with CONFIG on free loopback ports (log level $SG_LOG, default warn), its output to
# LOG; sets http, rtmp, udp and sg (the pid, also in pids) once its HTTP port is open.
start_gateway() { # bin config log
  http=$(free_port); rtmp=$(free_port); udp=$(free_port)
  "$1" --config "$2" --http 127.0.0.1:"$http" --rtmp 127.0.0.1:"$rtmp" --webrtc-udp 127.0.0.1:"$udp" --log "${SG_LOG:-warn}" >"$3" 2>&1 &
  sg=$!; pids+=($sg)
  wait_port "$http"
}

# nginx with the RTMP module (Debian's libnginx-mod-rtmp), one worker, serving live/ on a free
# port under directory $1. Sets NGINX_PORT, NGINX_MASTER and NGINX_WORKERS (stopped on exit like
# the rest).
start_nginx_rtmp() { # workdir
  NGINX_PORT=$(free_port)
  mkdir -p "$1/logs"
  cat >"$1/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
worker_processes 1;
error_log $1/logs/error.log warn;
events { worker_connections 8192; }
rtmp { server { listen 127.0.0.1:$NGINX_PORT; chunk_size 4096; application live { live on; } } }
CONF
  nginx -c "$1/nginx.conf" -p "$1" -g "daemon off; pid $1/nginx.pid;" &
  NGINX_MASTER=$!; pids+=("$NGINX_MASTER")
  wait_port "$NGINX_PORT"
  # nginx listens before it forks its worker.
  for _ in $(seq 50); do pgrep -P "$NGINX_MASTER" >/dev/null && break; sleep 0.1; done
  NGINX_WORKERS=$(pgrep -P "$NGINX_MASTER" | tr '\n' ' ')
}

# The WebRTC benchmarks' media, made once into bench/.cache: sets h264, opus, opus2, vp8.
make_webrtc_media() {
  local cache=bench/.cache audio_src
  mkdir -p "$cache"
  h264=$cache/whip-640x480-20fps-1mbps.h264
  opus=$cache/whip-opus-48k-mono.ogg
  opus2=$cache/whip-opus-48k-stereo.ogg
  vp8=$cache/whip-640x480-20fps-vp8.webm
  enc() { ffmpeg -hide_banner -loglevel error -y "$@"; }
  # Like a browser's sender: constrained baseline, no B-frames, SPS/PPS before every IDR, 2 s GOP.
  [ -s "$h264" ] || enc -f lavfi -i testsrc2=size=640x480:rate=20 -t 20 -c:v libx264 -preset veryfast \
    -profile:v baseline -tune zerolatency -b:v 1000k -maxrate 1000k -bufsize 1000k -g 40 \
    -x264-params repeat-headers=1 -pix_fmt yuv420p -f h264 "$h264"
  # Opus as browsers send it: mono unless the answer asks for stereo; 20 ms frames. Speech-like
  # content (a tone sweeping with noise), not a pure sine, which costs the AAC encoder less.
  audio_src="aevalsrc=0.3*sin(2*PI*(300+200*sin(2*PI*0.5*t))*t)+0.05*(random(0)-0.5):s=48000"
  [ -s "$opus" ] || enc -f lavfi -i "$audio_src" -t 20 -c:a libopus -b:a 48k -frame_duration 20 -ac 1 "$opus"
  [ -s "$opus2" ] || enc -f lavfi -i "$audio_src" -t 20 -c:a libopus -b:a 96k -frame_duration 20 -ac 2 "$opus2"
  [ -s "$vp8" ] || enc -f lavfi -i testsrc2=size=640x480:rate=20 -t 20 -c:v libvpx -deadline realtime -cpu-used 8 \
    -b:v 1000k -g 40 -lag-in-frames 0 "$vp8"
}
