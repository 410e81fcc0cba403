#!/usr/bin/env python3
"""Reads the clock that clock_publisher.py burnt into frames, from raw 320x240 gray frames on
stdin (e.g. `ffmpeg -i URL -f rawvideo -pix_fmt gray -`), and prints latency statistics.

usage: ffmpeg ... | clock_reader.py SECONDS
"""
import statistics
import sys
import time

W, H, BLOCK = 320, 240, 40


def decode(buf: bytes):
    bits = 0
    for r in range(6):
        for c in range(8):
            y, x = r * BLOCK + BLOCK // 2, c * BLOCK + BLOCK // 2
            v = sum(buf[(y + dy) * W + x + dx] for dy in (-3, 0, 3) for dx in (-3, 0, 3)) / 9
            bits = (bits << 1) | (1 if v > 128 else 0)
    data = bits.to_bytes(6, "big")
    if data[0] ^ data[1] ^ data[2] ^ data[3] ^ data[4] != data[5]:
        return None
    return int.from_bytes(data[:5], "big")


def main() -> int:
    seconds = float(sys.argv[1])
    size = W * H
    lat = []
    bad = 0
    start = time.monotonic()
    inp = sys.stdin.buffer
    while time.monotonic() - start < seconds:
        buf = inp.read(size)
        if len(buf) < size:
            break
        ms = decode(buf)
        if ms is None:
            bad += 1
            continue
        now = int(time.time() * 1000) % (1 << 40)
        lat.append((now - ms) % (1 << 40))
    if not lat:
        print("no frames decoded")
        return 1
    lat.sort()
    print(f"frames={len(lat)} undecodable={bad} median_ms={statistics.median(lat):.0f} "
          f"p95_ms={lat[int(len(lat) * 0.95)]} min_ms={lat[0]} max_ms={lat[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
