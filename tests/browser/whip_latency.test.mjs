// Glass-to-glass latency of WebRTC ingest: a Chromium page publishes a canvas that carries its
// wall clock with WHIP (H.264 passed through; VP8 transcoded to H.264), mpegts.js in the same
// Chromium plays WS-FLV and reads the clock back. WHIP_LATENCY_SECONDS sets the length (default
// 20; bench/latency.sh uses more). Targets (issue 4): <= 500 ms for H.264, <= 700 ms through
// VP8 transcoding; CI checks a loose bound and the figures go to docs/benchmarks.md.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withGatewayAndBrowser, whipPublish, waitLive, playAndMeasure, summarize } from './lib.mjs';

const SECONDS = Number(process.env.WHIP_LATENCY_SECONDS || 20);

for (const [codec, target] of [['h264', 500], ['vp8only', 700]]) {
  test(`WHIP (${codec}) -> WS-FLV glass-to-glass latency, ${SECONDS} s`, { timeout: (SECONDS + 60) * 1000 }, async () => {
    await withGatewayAndBrowser({ camera: true }, async ({ gw, pages, browser }) => {
      const key = `lat${codec}`;
      await whipPublish(browser, pages.port, `http://127.0.0.1:${gw.http}/whip/live/${key}`, { codec, source: 'clock' });
      await waitLive(gw.http, `live/${key}`);
      const probe = await playAndMeasure(browser, pages.port, `ws://127.0.0.1:${gw.http}/live/${key}.flv`, SECONDS);
      const r = summarize(probe, SECONDS);
      console.log(`whip-${codec}`, JSON.stringify({ ...r, targetMs: target, met: r.medianMs <= target }));
      assert.deepEqual(r.errors, []);
      assert.ok(r.samples >= SECONDS * 10, `only ${r.samples} frames decoded in ${SECONDS} s`);
      // A storm of seeks to the live edge (the player's latency chasing against bursty delivery)
      // throws frames away; a healthy run has 0-3.
      assert.ok(r.seeks <= 10, `${r.seeks} seeks to the live edge`);
      assert.ok(r.medianMs <= 1500, `median latency ${r.medianMs} ms`);
    });
  });
}

// The headline path of issue 5: a browser publishes with WHIP, people watch LL-HLS (hls.js
// lowLatencyMode here; Safari natively). Segments hold 1 s because the segmenter asks the
// publisher for keyframes.
test(`WHIP (h264) -> LL-HLS glass-to-glass latency, ${SECONDS} s`, { timeout: (SECONDS + 60) * 1000 }, async () => {
  await withGatewayAndBrowser({ camera: true }, async ({ gw, pages, browser }) => {
    await whipPublish(browser, pages.port, `http://127.0.0.1:${gw.http}/whip/live/latll`, { codec: 'h264', source: 'clock' });
    await waitLive(gw.http, 'live/latll');
    const probe = await playAndMeasure(browser, pages.port, `http://127.0.0.1:${gw.http}/ll/live/latll.m3u8`, SECONDS, 'hls', '&ll=1');
    const r = summarize(probe, SECONDS);
    console.log('whip-h264-llhls', JSON.stringify({ ...r, stalls: probe.stalls, targetMs: 1500, met: r.medianMs <= 1500 }));
    assert.deepEqual(r.errors, []);
    assert.ok(r.samples >= SECONDS * 10, `only ${r.samples} frames decoded in ${SECONDS} s`);
    assert.ok(r.medianMs <= 3000, `median latency ${r.medianMs} ms`);
  });
});
