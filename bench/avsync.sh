#!/usr/bin/env bash
# A/V sync soak of WebRTC ingest: Chromium's fake camera and microphone play a flash and a beep
# every 2 s, published with WHIP; the HTTP-FLV output is captured for SECONDS (default 1800) and
# tests/tools/av_sync.py measures beep - flash for every pair. Prints one JSON line: offset at
# the start and end (medians of 10 pairs), min/max, drift. Target (issue 4): drift <= 40 ms.
#   bench/avsync.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-1800}
scripts/deps.sh test >/dev/null
cargo build --release -q -p streamgate
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
SYNC_SECONDS=$secs node --test tests/browser/av_sync.test.mjs 2>&1 | grep -E '^# av-sync|^(ok|not ok)'
