#!/usr/bin/env python3
"""Measures audio/video sync in a capture of the `source=sync` publisher (tests/browser/whip.html):
the video flashes white and the audio beeps at the same instants, every 2 s.

Flash times are the timestamps of the frames where the mean luma rises above mid-grey (ffprobe,
signalstats); beep onsets are found in the decoded PCM at 1 ms resolution (the first 1 ms window
whose RMS passes a tenth of the loudest window, after at least 500 ms of quiet). Each flash is
paired with the nearest beep within 500 ms; offset = beep - flash (positive: audio late).

usage: av_sync.py CAPTURE.flv [WINDOW_PAIRS]   -> one JSON line
"""
import json
import math
import operator
import subprocess
import sys


def flashes(path: str) -> list[float]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-f", "lavfi", "-i", f"movie={path},signalstats",
         "-show_entries", "frame=pts_time:frame_tags=lavfi.signalstats.YAVG", "-of", "json"],
        check=True, capture_output=True, text=True).stdout
    frames = json.loads(out).get("frames", [])
    times, prev = [], 0.0
    for f in frames:
        y = float(f.get("tags", {}).get("lavfi.signalstats.YAVG", 0))
        t = float(f.get("pts_time", "nan"))
        if y > 128 >= prev and not math.isnan(t):
            times.append(t)
        prev = y
    return times


def beeps(path: str) -> list[float]:
    first = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "packet=pts_time",
         "-read_intervals", "%+#1", "-of", "csv=p=0", path],
        check=True, capture_output=True, text=True).stdout.split()
    start = float(first[0])
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", path, "-map", "0:a:0", "-ac", "1", "-ar", "48000", "-f", "s16le", "-"],
        check=True, capture_output=True).stdout
    n = len(pcm) // 2
    samples = memoryview(pcm).cast("h")
    win = 48
    rms = []
    for i in range(0, n - win, win):
        chunk = samples[i:i + win]
        rms.append(math.sqrt(sum(map(operator.mul, chunk, chunk)) / win))
    if not rms:
        return []
    threshold = max(rms) / 10
    onsets, quiet = [], 500
    for i, r in enumerate(rms):
        if r > threshold:
            if quiet >= 500:
                onsets.append(start + i * win / 48000)
            quiet = 0
        else:
            quiet += 1
    return onsets


def median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if s else float("nan")


def main() -> int:
    path = sys.argv[1]
    window = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    v, a = flashes(path), beeps(path)
    pairs = []
    for t in v:
        near = min(a, key=lambda b: abs(b - t), default=None)
        if near is not None and abs(near - t) <= 0.5:
            pairs.append((t, (near - t) * 1000))
    offs = [o for _, o in pairs]
    result = {
        "flashes": len(v), "beeps": len(a), "pairs": len(pairs),
        "span_s": round(pairs[-1][0] - pairs[0][0], 1) if pairs else 0,
        "start_median_ms": round(median(offs[:window]), 1),
        "end_median_ms": round(median(offs[-window:]), 1),
        "min_ms": round(min(offs), 1) if offs else None,
        "max_ms": round(max(offs), 1) if offs else None,
        "median_ms": round(median(offs), 1),
    }
    result["drift_ms"] = round(result["end_median_ms"] - result["start_median_ms"], 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
