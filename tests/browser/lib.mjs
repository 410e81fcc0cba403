// Shared driver for browser tests and benchmarks: starts streamgate, the clock publisher, a page
// server and headless Chromium, and reads latency samples back.
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { createConnection, createServer as netServer } from 'node:net';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const root = join(here, '..', '..');

export function gatewayBin() {
  if (process.env.STREAMGATE_BIN) return process.env.STREAMGATE_BIN;
  const target = process.env.CARGO_TARGET_DIR || join(root, 'target');
  return join(target, 'release', 'streamgate');
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = netServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export async function waitPort(port, ms = 10000, host = '127.0.0.1') {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const ok = await new Promise((resolve) => {
      const c = createConnection({ port, host }, () => { c.end(); resolve(true); });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`port ${port} did not open`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Starts the gateway on free ports of `host` (loopback unless a test made another address);
/// WebRTC UDP on `udpHost`.
/// GATEWAY_ARGS adds arguments to every gateway a test starts (e.g. `--config x.toml`).
export async function startGateway(extraArgs = [], host = '127.0.0.1', udpHost = host) {
  extraArgs = [...(process.env.GATEWAY_ARGS || '').split(' ').filter(Boolean), ...extraArgs];
  const http = await freePort();
  const rtmp = await freePort();
  const udp = await freePort();
  const proc = spawn(
    gatewayBin(),
    ['--http', `${host}:${http}`, '--rtmp', `${host}:${rtmp}`, '--webrtc-udp', `${udpHost}:${udp}`, '--log', process.env.GATEWAY_LOG || 'warn', ...extraArgs],
    { cwd: root, stdio: ['ignore', process.env.GATEWAY_LOG ? 'inherit' : 'ignore', 'inherit'] },
  );
  await waitPort(http, 10000, host);
  await waitPort(rtmp, 10000, host);
  return { proc, host, http, rtmp, udp, stop: () => proc.kill('SIGTERM') };
}

export function startClockPublisher(url, seconds) {
  return spawn('python3', [join(root, 'tests', 'tools', 'clock_publisher.py'), url, String(seconds)], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

export async function waitLive(httpPort, key, ms = 10000, host = '127.0.0.1') {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const r = await fetch(`http://${host}:${httpPort}/api/v1/streams`).then((r) => r.json());
    const s = r.streams.find((s) => s.key === key);
    if (s && s.video) return s;
    await sleep(100);
  }
  throw new Error(`${key} did not go live`);
}

/// Serves the probe page and mpegts.js from this folder (a separate origin from the gateway, as
/// a user's site would be: CORS is part of what is tested).
export async function startPageServer(host = '127.0.0.1') {
  const file = (type, ...path) => ({ type, body: readFileSync(join(here, ...path)) });
  const html = 'text/html', js = 'text/javascript';
  const files = {
    '/whip.html': file(html, 'whip.html'),
    '/sfu.html': file(html, 'sfu.html'),
    '/clock.js': file(js, 'clock.js'),
    '/hls.js': file(js, 'node_modules', 'hls.js', 'dist', 'hls.min.js'),
    '/mpegts.js': file(js, 'node_modules', 'mpegts.js', 'dist', 'mpegts.js'),
  };
  const probe = file(html, 'latency.html');
  const server = createServer((req, res) => {
    const f = files[new URL(req.url, 'http://x').pathname] || probe;
    res.writeHead(200, { 'content-type': f.type });
    res.end(f.body);
  });
  const port = await new Promise((resolve) => server.listen(0, host, () => resolve(server.address().port)));
  return { port, close: () => server.close() };
}

/// `executablePath` lets a test run Chromium through a wrapper (e.g. inside a network namespace).
export async function launchChromium({ camera = false, executablePath = process.env.CHROMIUM || '/usr/bin/chromium', args = [] } = {}) {
  // Playwright gives every launch a fresh temporary profile (what --user-data-dir would do).
  const media = camera
    ? ['--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream', '--allow-loopback-in-peer-connection']
    : [];
  return chromium.launch({
    headless: true,
    executablePath,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required', '--disable-features=LocalNetworkAccessChecks',
      ...media,
      ...args,
    ],
  });
}

export function median(xs) {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/// Plays `url` in the probe page for `seconds`; returns the samples [[wallMs, latencyMs], ...].
export async function playAndMeasure(browser, pagePort, url, seconds, player = 'mpegts', query = '') {
  const page = await openPlayer(browser, pagePort, url, player, query);
  await sleep(seconds * 1000);
  const probe = await page.evaluate(() => ({ ...window.probe, quality: window.probe.quality?.() }));
  await page.close();
  return probe;
}

/// Opens the probe page playing `url` with `player` ('mpegts' or 'hls'; `query` adds e.g.
/// '&ll=1' for hls.js lowLatencyMode). Read `window.probe` from the page.
export async function openPlayer(browser, pagePort, url, player = 'mpegts', query = '', pageHost = '127.0.0.1') {
  const page = await browser.newPage();
  const extra = process.env.MPEGTS_CONFIG ? `&mpegts=${encodeURIComponent(process.env.MPEGTS_CONFIG)}` : '';
  await page.goto(`http://${pageHost}:${pagePort}/?url=${encodeURIComponent(url)}&player=${player}${query}${extra}`);
  return page;
}

export function summarize(probe, seconds) {
  const s = probe.samples;
  const t0 = s.length ? s[0][0] : 0;
  const window = (from, to) => s.filter(([t]) => t - t0 >= from * 1000 && t - t0 < to * 1000).map(([, l]) => l);
  const warm = window(5, 15);
  const end = window(seconds - 12, seconds);
  const all = s.map(([, l]) => l);
  return {
    samples: s.length,
    undecodable: probe.bad,
    errors: probe.errors,
    firstFrameMs: probe.firstFrameMs,
    startMedianMs: median(warm),
    endMedianMs: median(end),
    medianMs: median(all),
    p95Ms: all.length ? [...all].sort((a, b) => a - b)[Math.floor(all.length * 0.95)] : NaN,
    seeks: probe.seeks,
    decodedFrames: probe.quality?.total,
    droppedFrames: probe.quality?.dropped,
  };
}

/// Opens a page that publishes the fake camera and microphone to `whipUrl`; resolves once the
/// peer connection is connected. Returns the page (call `page.evaluate(() => window.unpublish())`).
/// `extra` adds whip.html query parameters (e.g. `{ simulcast: '1', clock: '640x480' }`).
export async function whipPublish(browser, pagePort, whipUrl, { codec = 'h264', token = '', timeoutMs = 15000, pageHost = '127.0.0.1', source = 'camera', width = 640, height = 480, extra = {} } = {}) {
  const page = await browser.newPage();
  const q = new URLSearchParams({ url: whipUrl, codec, token, source, width, height, ...extra });
  await page.goto(`http://${pageHost}:${pagePort}/whip.html?${q}`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const w = await page.evaluate(() => window.whip);
    if (w.state === 'connected') return page;
    if (w.state === 'error' || w.state === 'failed' || Date.now() > deadline) {
      await page.close();
      throw new Error(`WHIP publish to ${whipUrl}: ${w.state} ${JSON.stringify(w.errors)} (HTTP ${w.status})`);
    }
    await sleep(100);
  }
}

/// Runs `fn({ gw, pages, browser })` with a fresh gateway, page server and Chromium (with the
/// fake camera and microphone when `camera`), and stops all three afterwards, whatever happens.
export async function withGatewayAndBrowser({ camera = false } = {}, fn) {
  const gw = await startGateway();
  const pages = await startPageServer();
  const browser = await launchChromium({ camera });
  try {
    return await fn({ gw, pages, browser });
  } finally {
    await browser.close();
    pages.close();
    gw.stop();
  }
}
