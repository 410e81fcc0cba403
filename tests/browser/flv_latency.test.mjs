// mpegts.js in headless Chromium plays streamgate's WebSocket-FLV and HTTP-FLV from an ffmpeg
// publisher whose frames carry the wall clock. Checks glass-to-glass latency and that it does not
// creep over a long session. LATENCY_SECONDS sets the long session (default 120; bench/ uses 1800).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  withGatewayAndBrowser, startClockPublisher, waitLive, playAndMeasure, summarize,
} from './lib.mjs';

const LONG = Number(process.env.LATENCY_SECONDS || 120);

async function session(transport, seconds, key) {
  return withGatewayAndBrowser({}, async ({ gw, pages, browser }) => {
    const pub = startClockPublisher(`rtmp://127.0.0.1:${gw.rtmp}/live/${key}`, seconds + 15);
    try {
      await waitLive(gw.http, `live/${key}`);
      const scheme = transport === 'ws' ? 'ws' : 'http';
      const probe = await playAndMeasure(browser, pages.port, `${scheme}://127.0.0.1:${gw.http}/live/${key}.flv`, seconds);
      return summarize(probe, seconds);
    } finally {
      pub.kill('SIGTERM');
    }
  });
}

test(`WS-FLV: ${LONG} s mpegts.js session, latency does not creep`, { timeout: (LONG + 90) * 1000 }, async () => {
  const r = await session('ws', LONG, 'wscreep');
  console.log('ws-flv', JSON.stringify(r));
  assert.deepEqual(r.errors, []);
  // 30 fps rendered for most of the session (the first second or two are start-up).
  assert.ok(r.samples >= LONG * 30 * 0.85, `only ${r.samples} frames decoded in ${LONG} s`);
  assert.ok(Math.abs(r.endMedianMs - r.startMedianMs) <= 200, `latency crept from ${r.startMedianMs} to ${r.endMedianMs} ms`);
  // Seeks to the live edge throw frames away; a healthy run has 0-5, a CI run on a busy shared
  // machine was seen at 13 (7 frames dropped, latency steady); a storm of them (latency chasing
  // fighting bursty delivery) is one every few seconds or more.
  assert.ok(r.seeks <= LONG / 6, `${r.seeks} seeks to the live edge in ${LONG} s`);
  assert.ok(r.medianMs <= 500, `median latency ${r.medianMs} ms (target 500)`);
});

test('HTTP-FLV: 30 s mpegts.js session plays at low latency', { timeout: 120000 }, async () => {
  const r = await session('http', 30, 'httpflv');
  console.log('http-flv', JSON.stringify(r));
  assert.deepEqual(r.errors, []);
  assert.ok(r.samples >= 30 * 30 * 0.85, `only ${r.samples} frames decoded`);
  assert.ok(r.seeks <= 10, `${r.seeks} seeks to the live edge`);
  assert.ok(r.medianMs <= 500, `median latency ${r.medianMs} ms (target 500)`);
});
