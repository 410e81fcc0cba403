// The watch page (issue 17) end to end: FFmpeg publishes the burnt-in clock over RTMP
// (tests/tools/clock_publisher.py); Chromium opens /watch/{app}/{stream} as a viewer would.
// The page picks its protocol by what the browser can do (WebRTC here), falls back when WebRTC
// is blocked (WS-FLV), takes native HLS where there is no MSE, plays ?protocol=hls, waits for a
// stream that is not live yet; its latency readout (the gateway's clock against the clock the
// gateway stamped on the picture) is checked against the clock burnt into the picture, for
// WS-FLV (within 150 ms) and HLS (within 1.5 s).
// Screenshots (desktop, phone) go to $ARTIFACTS_DIR/screenshots.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startGateway, launchChromium, sleep, startClockPublisher, waitLive, median, root } from './lib.mjs';
import { waitFor, readQr } from './roomlib.mjs';

const here = join(root, 'tests', 'browser');
const shots = join(process.env.ARTIFACTS_DIR || '/var/tmp/streamgate-artifacts', 'screenshots');
const clockJs = readFileSync(join(here, 'clock.js'), 'utf8');

/// Removes WebRTC's way through: the answer's candidates are dropped, so ICE never connects
/// (as behind a firewall that blocks UDP).
const blockIce = `(() => {
  const set = RTCPeerConnection.prototype.setRemoteDescription;
  RTCPeerConnection.prototype.setRemoteDescription = function (d) {
    if (d && d.sdp) d = { type: d.type, sdp: d.sdp.split('\\r\\n').filter((l) => !l.startsWith('a=candidate')).join('\\r\\n') };
    return set.call(this, d);
  };
})();`;

/// A browser like WeChat's in-app one: no RTCPeerConnection, no MSE, HLS in the video element.
const nativeHlsOnly = `(() => {
  delete window.RTCPeerConnection;
  delete window.MediaSource;
  delete window.ManagedMediaSource;
  delete window.WebKitMediaSource;
  const can = HTMLMediaElement.prototype.canPlayType;
  HTMLMediaElement.prototype.canPlayType = function (t) { return /mpegurl/i.test(t) ? 'maybe' : can.call(this, t); };
})();`;

async function watchPage(browser, url, { init = '', viewport = { width: 1280, height: 800 }, ...opts } = {}) {
  const context = await browser.newContext({ viewport, ...opts });
  await context.addInitScript({ content: `${clockJs}; window.readClock = readClock; ${init}` });
  const page = await context.newPage();
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('pageerror', (e) => console.log('watch page error:', e.message));
  await page.goto(url);
  return { context, page, requests };
}

const state = (page) => page.evaluate(() => {
  const s = window.__watch?.fsm();
  return s ? { phase: s.phase, protocol: s.protocol, reasons: s.reasons, attempt: s.attempt } : null;
});

/// Waits until the page plays `protocol`.
async function waitPlaying(page, protocol, ms) {
  return waitFor(`playing ${protocol}`, async () => {
    const s = await state(page);
    return s && s.phase === 'playing' && s.protocol === protocol ? s : null;
  }, ms);
}

/// Over `seconds`: the burnt-in clock's latency (this machine's clock: the publisher's too)
/// and the page's readout, sampled together.
async function compare(page, seconds) {
  const samples = await page.evaluate(async (seconds) => {
    const c = document.createElement('canvas');
    c.width = 320; c.height = 240;
    const ctx = c.getContext('2d', { willReadFrequently: true });
    const v = document.querySelector('[data-test=video]');
    const out = [];
    let clocks = 0, readouts = 0;
    const end = performance.now() + seconds * 1000;
    while (performance.now() < end) {
      const ms = v.videoWidth ? readClock(ctx, v) : null;
      const shown = document.querySelector('[data-test=latency]').dataset.ms;
      if (ms !== null) clocks += 1;
      if (shown !== '') readouts += 1;
      if (ms !== null && shown !== '') out.push([(Date.now() % 2 ** 40) - ms, Number(shown)]);
      await new Promise((r) => setTimeout(r, 250));
    }
    return { out, clocks, readouts, width: v.videoWidth };
  }, seconds);
  const clock = median(samples.out.map((s) => s[0]));
  const readout = median(samples.out.map((s) => s[1]));
  return { reads: samples.out.length, clocks: samples.clocks, readouts: samples.readouts, width: samples.width, clock, readout, diff: readout - clock };
}

test('the watch page: WebRTC first, WS-FLV when WebRTC is blocked (its latency readout true to the picture\'s clock), native HLS without MSE, ?protocol=hls, waiting for a stream, QR, screenshots', { timeout: 300000 }, async () => {
  const gw = await startGateway();
  const browser = await launchChromium();
  const base = `http://127.0.0.1:${gw.http}`;
  mkdirSync(shots, { recursive: true });
  const ff = startClockPublisher(`rtmp://127.0.0.1:${gw.rtmp}/live/w1`, 240);
  const results = {};
  try {
    await waitLive(gw.http, 'live/w1', 15000);

    // Chromium: WebRTC, playing the clock. (Its latency readout is not there yet: headless
    // Chromium gives no estimatedPlayoutTimestamp; see the issue 17 note.)
    const a = await watchPage(browser, `${base}/watch/live/w1`);
    await waitPlaying(a.page, 'webrtc', 15000);
    await sleep(3000);
    results.webrtc = await compare(a.page, 4);
    assert.ok(results.webrtc.clocks >= 10, JSON.stringify(results.webrtc));
    await a.page.screenshot({ path: join(shots, 'watch-desktop.png') });
    // The share panel: its QR code is the watch link.
    await a.page.click('[data-test=share]');
    const qr = await readQr(a.page);
    assert.equal(qr.decoded, `${base}/watch/live/w1`);
    assert.equal(qr.shown, qr.decoded);
    assert.equal(await a.page.$eval('[data-test=embed] textarea', (e) => e.value), `<iframe src="${base}/watch/live/w1" width="640" height="360" allow="autoplay; fullscreen; picture-in-picture" frameborder="0"></iframe>`);
    await a.page.screenshot({ path: join(shots, 'watch-share-desktop.png') });
    await a.context.close();

    // WebRTC blocked (no candidate gets through): after 5 s without ICE, WS-FLV, with the reason.
    const b = await watchPage(browser, `${base}/watch/live/w1`, { init: blockIce });
    const t0 = Date.now();
    const s = await waitPlaying(b.page, 'wsflv', 20000);
    results.fallbackMs = Date.now() - t0;
    assert.equal(s.reasons.webrtc, 'no-ice');
    assert.match(await b.page.textContent('[data-test=fell-back]'), /no-ice/);
    await sleep(3000);
    results.wsflv = await compare(b.page, 8);
    assert.ok(results.wsflv.reads >= 10, JSON.stringify(results.wsflv));
    assert.ok(Math.abs(results.wsflv.diff) <= 150, `WS-FLV readout vs clock: ${JSON.stringify(results.wsflv)}`);
    await b.context.close();

    // No MSE, no WebRTC, native HLS (as WeChat's in-app browser): the HLS path.
    const c = await watchPage(browser, `${base}/watch/live/w1`, { init: nativeHlsOnly });
    await waitFor('the native HLS path', async () => (await state(c.page))?.protocol === 'hls-native', 10000);
    await waitFor('the playlist requested', () => c.requests.some((u) => u.endsWith('/live/w1.m3u8')), 10000);
    await c.context.close();

    // ?protocol=hls: hls.js, playing the clock.
    const d = await watchPage(browser, `${base}/watch/live/w1?protocol=hls`);
    await waitPlaying(d.page, 'hls', 20000);
    await sleep(2000);
    results.hls = await compare(d.page, 6);
    assert.ok(results.hls.reads >= 5, JSON.stringify(results.hls));
    // HLS is seconds behind; its readout comes from the playlist's program date time (seen
    // 60-880 ms under the picture's clock: to look at, see the issue 17 note).
    assert.ok(results.hls.readout > 500 && Math.abs(results.hls.diff) <= 1500, `HLS readout vs clock: ${JSON.stringify(results.hls)}`);
    await d.context.close();

    // A stream that is not live yet: the page waits and starts by itself.
    const e = await watchPage(browser, `${base}/watch/live/w2`, { viewport: { width: 390, height: 844 }, deviceScaleFactor: 3, isMobile: true, hasTouch: true });
    await waitFor('waiting', () => e.page.$('[data-test=waiting]'), 10000);
    await e.page.screenshot({ path: join(shots, 'watch-waiting-phone.png') });
    const ff2 = startClockPublisher(`rtmp://127.0.0.1:${gw.rtmp}/live/w2`, 60);
    try {
      const spawned = Date.now();
      await waitLive(gw.http, 'live/w2', 15000);
      const live = Date.now();
      await waitPlaying(e.page, 'webrtc', 10000);
      results.waiting = { fromLiveMs: Date.now() - live, fromPublisherMs: Date.now() - spawned };
      assert.ok(results.waiting.fromLiveMs <= 3000, JSON.stringify(results.waiting));
      await sleep(1500);
      await e.page.screenshot({ path: join(shots, 'watch-phone.png') });
    } finally {
      ff2.kill('SIGTERM');
    }
    await e.context.close();
    console.log('watch', JSON.stringify(results));
  } finally {
    ff.kill('SIGTERM');
    await browser.close();
    gw.stop();
  }
});
