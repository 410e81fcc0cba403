#!/usr/bin/env python3
"""Publishes video whose every frame carries the wall clock at which it was made.

Frames are 320x240 gray, 8x6 blocks of 40x40 pixels = 48 bits: the Unix time in milliseconds
modulo 2^40 (40 bits, most significant first), then the XOR of those 5 bytes. ffmpeg encodes
them with libx264 (zerolatency, 1 s GOP) plus a sine tone in AAC and pushes FLV over RTMP.
A player decodes the blocks from the displayed frame and subtracts from its own clock:
glass-to-glass latency, publisher encode included.

usage: clock_publisher.py RTMP_URL SECONDS [FPS]
"""
import subprocess
import sys
import time

W, H, BLOCK = 320, 240, 40
LOW, HIGH = b"\x10", b"\xeb"


def frame(ms: int) -> bytes:
    data = (ms & ((1 << 40) - 1)).to_bytes(5, "big")
    chk = 0
    for b in data:
        chk ^= b
    bits = int.from_bytes(data + bytes([chk]), "big")
    rows = []
    for r in range(H // BLOCK):
        row = b"".join((HIGH if (bits >> (47 - (r * 8 + c))) & 1 else LOW) * BLOCK for c in range(W // BLOCK))
        rows.append(row * BLOCK)
    return b"".join(rows)


def main() -> int:
    url, seconds = sys.argv[1], float(sys.argv[2])
    fps = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{W}x{H}", "-framerate", str(fps), "-i", "-",
        "-t", str(seconds), "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", str(fps), "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "64k", "-f", "flv", url,
    ]
    ff = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    start = time.monotonic()
    n = 0
    try:
        while time.monotonic() - start < seconds:
            target = start + n / fps
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ff.stdin.write(frame(int(time.time() * 1000)))
            ff.stdin.flush()
            n += 1
    except BrokenPipeError:
        return ff.wait() or 1
    ff.stdin.close()
    return ff.wait()


if __name__ == "__main__":
    sys.exit(main())
