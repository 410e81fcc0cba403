#!/usr/bin/env python3
"""Memory and CPU of WHIP offers that never connect (issue 13).

    bench/offer_flood.py [N]   (default 200)

Starts the release gateway with the per-address limits lifted, posts N copies of a Chromium
offer (nobody behind them connects), and prints the gateway's RSS growth per pending session,
the time per offer, and the RSS once every reservation has lapsed. Loopback only; the gateway is
stopped by PID.
"""
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
binary = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target")), "release", "streamgate")
sdp = open(os.path.join(root, "webrtc", "testdata", "chromium156_offer.sdp")).read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


http_port = free_port()
cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
cfg.write(f"[webrtc]\nmax_pending = {n + 10}\nmax_pending_per_address = {n + 10}\noffers_per_second_per_address = 0.0\n")
cfg.close()
gw = subprocess.Popen(
    [binary, "--config", cfg.name, "--http", f"127.0.0.1:{http_port}", "--rtmp", f"127.0.0.1:{free_port()}",
     "--webrtc-udp", f"127.0.0.1:{free_port()}", "--log", "warn"],
    stdout=subprocess.DEVNULL,
)
try:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", http_port), 0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    rss0, cpu0, t0 = rss_kb(gw.pid), cpu_s(gw.pid), time.time()
    created = 0
    for i in range(n):
        c = http.client.HTTPConnection("127.0.0.1", http_port)
        c.request("POST", f"/whip/flood/k{i}", body=sdp, headers={"content-type": "application/sdp"})
        created += c.getresponse().status == 201
        c.close()
    wall, cpu, rss1 = time.time() - t0, cpu_s(gw.pid) - cpu0, rss_kb(gw.pid)
    time.sleep(6.5)
    print({
        "offers": n, "created": created, "wall_s": round(wall, 2),
        "gateway_cpu_ms_per_offer": round(cpu * 1000 / n, 2),
        "rss_kb_before": rss0, "rss_kb_pending": rss1,
        "rss_kb_per_pending_session": round((rss1 - rss0) / max(created, 1)),
        "rss_kb_after_lapse": rss_kb(gw.pid),
    })
finally:
    gw.terminate()
    gw.wait()
    os.unlink(cfg.name)
