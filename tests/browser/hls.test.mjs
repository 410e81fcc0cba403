// hls.js in headless Chromium plays streamgate's classic HLS (MPEG-TS, 1 s segments) from an
// FFmpeg publisher whose frames carry the wall clock: no fatal error, no stall, and the
// glass-to-glass latency (target for issue 5: <= 3.0 s; figures in docs/benchmarks.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withGatewayAndBrowser, startClockPublisher, waitLive, playAndMeasure, summarize } from './lib.mjs';

const SECONDS = Number(process.env.HLS_SECONDS || 30);

test(`HLS: ${SECONDS} s of hls.js playback without a stall`, { timeout: (SECONDS + 90) * 1000 }, async () => {
  await withGatewayAndBrowser({}, async ({ gw, pages, browser }) => {
    const pub = startClockPublisher(`rtmp://127.0.0.1:${gw.rtmp}/live/hlsclock`, SECONDS + 20);
    try {
      await waitLive(gw.http, 'live/hlsclock');
      const probe = await playAndMeasure(browser, pages.port, `http://127.0.0.1:${gw.http}/live/hlsclock.m3u8`, SECONDS, 'hls');
      const r = summarize(probe, SECONDS);
      console.log('hls', JSON.stringify({ ...r, stalls: probe.stalls, stallAtMs: probe.stallAt }));
      assert.deepEqual(r.errors, []);
      assert.equal(probe.stalls, 0, 'hls.js stalled');
      assert.ok(r.samples >= (SECONDS - 8) * 25, `only ${r.samples} frames decoded in ${SECONDS} s`);
      assert.ok(r.medianMs <= 6000, `median latency ${r.medianMs} ms`);
    } finally {
      pub.kill('SIGTERM');
    }
  });
});
