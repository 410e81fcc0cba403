#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# cargo-fuzz wants nightly flags; RUSTC_BOOTSTRAP lets this machine's stable toolchain take them.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(rtmp_chunk rtmp_session amf0 avc_config flv_body whip_offer h264_access_unit rtp_receive http_head hls_name)
for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${secs}s"
  RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz "$t" -- -max_total_time="$secs" -rss_limit_mb=2048
done
