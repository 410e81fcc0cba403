#!/usr/bin/env bash
# Installs what streamgate needs on a Debian 12 machine that has only Rust, Node and Python.
#   scripts/deps.sh run    what building and running the gateway needs
#   scripts/deps.sh test   plus the real peers the tests use (ffmpeg, nginx-rtmp, Chromium, npm)
# Installs only what is missing, so a second run costs a few dpkg queries.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${1:-run}
# FFmpeg's libraries and headers (Opus -> AAC, VP8 -> H.264 through ffmpeg-next) and clang for
# its bindgen step; a C compiler (gcc) is already there for aws-lc-rs (str0m's DTLS/SRTP crypto);
# g++ builds the bundled Fraunhofer FDK AAC encoder (the fdk-aac crate).
run_pkgs=(pkg-config ca-certificates clang libclang-dev g++ libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev)
# coturn: the TURN server of the room's relay test; fonts-wqy-microhei: Chinese text in the
# pages' screenshots (a viewer's own browser has its fonts).
test_pkgs=(ffmpeg curl nginx libnginx-mod-rtmp chromium wrk procps iproute2 coturn fonts-wqy-microhei)

pkgs=("${run_pkgs[@]}")
if [ "$profile" = test ]; then
  pkgs+=("${test_pkgs[@]}")
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The web pages (player/: Vue + Vite) the gateway serves from player/dist.
if [ ! -d player/node_modules ] || [ player/package-lock.json -nt player/node_modules ]; then
  echo "installing npm packages for the web pages"
  (cd player && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "building the web pages (player/dist)"
(cd player && npm run --silent build -- --logLevel warn)

if [ "$profile" = test ]; then
  if [ ! -d tests/browser/node_modules ] || [ tests/browser/package-lock.json -nt tests/browser/node_modules ]; then
    echo "installing npm packages for browser tests"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
