#!/usr/bin/env python3
"""What a viewer of a capture would see: the clock barcode of the browser's `source=pattern`
publisher (tests/browser/whip.html) read back from every decoded frame, and how much the
picture varies.

usage: picture_check.py FILE    prints one JSON object:
  frames          frames decoded
  clocks          frames whose top-left quarter carries a valid clock (checksum right)
  increasing      whether those clocks never go backwards
  span_ms         last clock - first clock
  luma_stddev     the median over frames of the standard deviation of luma (a flat grey or black
                  picture is ~0; the camera picture and the barcode give tens)
  luma_mean       the median mean luma
  flat_frames     frames whose luma barely varies (stddev < 8): grey, black or one colour
  sizes           the picture sizes in the order they appear, e.g. ["640x480"]
"""
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clock_reader import W, H, decode  # noqa: E402


def frames(path, vf):
    p = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", path, "-an", "-vf", vf, "-fps_mode", "passthrough",
         "-pix_fmt", "gray", "-f", "rawvideo", "-"],
        capture_output=True, check=False)
    size = W * H
    return [p.stdout[i:i + size] for i in range(0, len(p.stdout) - size + 1, size)]


def main() -> int:
    path = sys.argv[1]
    quarter = frames(path, f"crop=iw/2:ih/2:0:0,scale={W}:{H}:flags=area")
    whole = frames(path, f"scale={W}:{H}:flags=area")
    # An all-dark quarter (a grey or black picture) reads as 0 with a valid checksum.
    clocks = [c for c in (decode(f) for f in quarter) if c]
    stds = [statistics.pstdev(f[::7]) for f in whole]
    means = [statistics.mean(f[::7]) for f in whole]
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "frame=width,height",
         "-of", "csv=p=0", path], capture_output=True, text=True, check=False).stdout.split()
    sizes = []
    for wh in probe:
        s = "x".join(wh.split(",")[:2])
        if not sizes or sizes[-1] != s:
            sizes.append(s)
    print(json.dumps({
        "frames": len(quarter),
        "clocks": len(clocks),
        "increasing": all(b >= a for a, b in zip(clocks, clocks[1:])),
        "span_ms": (clocks[-1] - clocks[0]) if clocks else 0,
        "luma_stddev": round(statistics.median(stds), 1) if stds else 0,
        "luma_mean": round(statistics.median(means), 1) if means else 0,
        "flat_frames": sum(1 for d in stds if d < 8),
        "sizes": sizes,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
