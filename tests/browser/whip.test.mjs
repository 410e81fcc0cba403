// Headless Chromium (fake camera and microphone) publishes with WHIP; FFmpeg pulls the result
// over HTTP-FLV and RTMP and judges it with ffprobe. Also: two publishers on one UDP port,
// garbage datagrams on that port, DELETE, re-publish, a resolution switch, refused offers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withGatewayAndBrowser, whipPublish, waitLive, sleep, root } from './lib.mjs';
import { captureHttp, captureRtmp, judge } from './flvcheck.mjs';

const dir = mkdtempSync(join(tmpdir(), 'streamgate-whip-'));

/// AVC sequence headers (FLV video tags with AVCPacketType 0) in a capture, as hex strings.
function sequenceHeaders(file) {
  const b = readFileSync(file);
  const out = [];
  let pos = 9 + 4; // header + PreviousTagSize0
  while (pos + 11 <= b.length) {
    const type = b[pos] & 0x1f;
    const size = b.readUIntBE(pos + 1, 3);
    const body = b.subarray(pos + 11, pos + 11 + size);
    if (body.length < size) break;
    if (type === 9 && (body[0] & 0x0f) === 7 && body[1] === 0) out.push(body.subarray(5).toString('hex'));
    pos += 11 + size + 4;
  }
  return out;
}

/// Polls an HTTP-FLV URL (every 20 ms while it answers 404) and reads it until the first coded
/// video frame (a video tag after the sequence header); the wall-clock time it arrived.
async function firstVideoFrameAt(url, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    assert.ok(Date.now() < deadline, `${url}: no video within ${ms} ms`);
    const r = await fetch(url).catch(() => null);
    if (!r || r.status !== 200) {
      await sleep(20);
      continue;
    }
    const reader = r.body.getReader();
    let buf = Buffer.alloc(0);
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf = Buffer.concat([buf, value]);
      let pos = 13;
      while (pos + 11 <= buf.length) {
        const size = buf.readUIntBE(pos + 1, 3);
        if (pos + 11 + size > buf.length) break;
        if ((buf[pos] & 0x1f) === 9 && buf[pos + 12] === 1) {
          const at = Date.now();
          await reader.cancel().catch(() => {});
          return at;
        }
        pos += 11 + size + 4;
      }
    }
  }
}

async function streams(gw) {
  return (await fetch(`http://127.0.0.1:${gw.http}/api/v1/streams`).then((r) => r.json())).streams;
}

/// Junk on the media port: random bytes, RTP-looking and STUN-looking datagrams.
async function sprayGarbage(port, count) {
  const s = createSocket('udp4');
  for (let i = 0; i < count; i++) {
    const n = 1 + Math.floor(Math.random() * 1400);
    const d = Buffer.alloc(n);
    for (let j = 0; j < n; j++) d[j] = Math.floor(Math.random() * 256);
    if (i % 3 === 0) d[0] = 0x80; // RTP version 2
    if (i % 3 === 1 && n > 20) { d[0] = 0; d[1] = 1; d.writeUInt32BE(0x2112a442, 4); } // STUN binding request
    await new Promise((r) => s.send(d, port, '127.0.0.1', r));
    if (i % 100 === 0) await sleep(5);
  }
  s.close();
}

test('WHIP: two Chromium publishers on one UDP port, played as HTTP-FLV and RTMP', { timeout: 120000 }, async () => {
  await withGatewayAndBrowser({ camera: true }, async ({ gw, pages, browser }) => {
    // One prefers H.264 (passed through); the other offers VP8 only (transcoded to H.264). A
    // viewer waiting for the first one from before its offer sees its first frame as soon as
    // ICE, DTLS and a keyframe allow (the key is claimed when the session connects).
    const firstFrame = firstVideoFrameAt(`http://127.0.0.1:${gw.http}/live/h264.flv`);
    const h264 = await whipPublish(browser, pages.port, `http://127.0.0.1:${gw.http}/whip/live/h264`, { codec: 'h264', source: 'pattern' });
    const postToFirstFrame = (await firstFrame) - (await h264.evaluate(() => window.whip.postedAt));
    console.log(`WHIP offer to first video frame on HTTP-FLV: ${postToFirstFrame} ms`);
    assert.ok(postToFirstFrame < 1500, `first video frame ${postToFirstFrame} ms after the offer`);
    const vp8 = await whipPublish(browser, pages.port, `http://127.0.0.1:${gw.http}/whip/live/second`, { codec: 'vp8only', source: 'pattern' });
    const answer = await vp8.evaluate(() => window.whip.answer);
    assert.match(answer, /VP8\/90000/);
    assert.doesNotMatch(answer, /H264/);
    await waitLive(gw.http, 'live/h264');
    await waitLive(gw.http, 'live/second');
    const f1 = join(dir, 'h264.flv');
    const f2 = join(dir, 'h264-rtmp.flv');
    const f3 = join(dir, 'second.flv');
    const garbage = sprayGarbage(gw.udp, 3000);
    await Promise.all([
      captureHttp(`http://127.0.0.1:${gw.http}/live/h264.flv`, 10, f1),
      captureRtmp(`rtmp://127.0.0.1:${gw.rtmp}/live/h264`, 10, f2),
      captureHttp(`http://127.0.0.1:${gw.http}/live/second.flv`, 10, f3),
      garbage,
    ]);
    await judge(f1, 'HTTP-FLV', { clock: true });
    await judge(f2, 'RTMP', { clock: true });
    await judge(f3, 'HTTP-FLV (VP8 transcoded)', { clock: true });
    const metrics = await fetch(`http://127.0.0.1:${gw.http}/metrics`).then((r) => r.text());
    const unroutable = Number(/streamgate_webrtc_datagrams_dropped_total\{reason="unroutable"\} (\d+)/.exec(metrics)?.[1]);
    assert.ok(unroutable > 0, 'garbage datagrams are counted');
  });
});

test('WHIP: HLS segments hold the 1 s target (the segmenter asks the publisher for keyframes)', { timeout: 90000 }, async () => {
  await withGatewayAndBrowser({ camera: true }, async ({ gw, pages, browser }) => {
    await whipPublish(browser, pages.port, `http://127.0.0.1:${gw.http}/whip/live/hlswhip`, { codec: 'h264' });
    await waitLive(gw.http, 'live/hlswhip');
    // Without keyframe requests Chromium sends one per webrtc.pli_interval_ms (2 s).
    const base = `http://127.0.0.1:${gw.http}`;
    assert.equal((await fetch(`${base}/live/hlswhip.m3u8`)).status, 200);
    assert.equal((await fetch(`${base}/ll/live/hlswhip.m3u8`)).status, 200);
    await sleep(9000);
    for (const path of ['/live/hlswhip.m3u8', '/ll/live/hlswhip.m3u8']) {
      const playlist = await fetch(base + path).then((r) => r.text());
      const durations = [...playlist.matchAll(/#EXTINF:([\d.]+),/g)].map((m) => Number(m[1]));
      console.log('whip hls', path, JSON.stringify(durations));
      assert.ok(durations.length >= 4, playlist);
      // The first segment may be longer (it started before the first request arrived).
      assert.ok(Math.max(...durations.slice(1)) <= 1.5, `${path}: segments ${durations}`);
    }
  });
});

test('WHIP: a VP9-only publisher is transcoded and plays as H.264', { timeout: 90000 }, async () => {
  await withGatewayAndBrowser({ camera: true }, async ({ gw, pages, browser }) => {
    const page = await whipPublish(browser, pages.port, `http://127.0.0.1:${gw.http}/whip/live/vp9`, { codec: 'vp9only', source: 'pattern' });
    const answer = await page.evaluate(() => window.whip.answer);
    assert.match(answer, /VP9\/90000/);
    assert.doesNotMatch(answer, /H264|VP8/);
    await waitLive(gw.http, 'live/vp9');
    const f = join(dir, 'vp9.flv');
    await captureHttp(`http://127.0.0.1:${gw.http}/live/vp9.flv`, 10, f);
    await judge(f, 'HTTP-FLV (VP9 transcoded)', { clock: true });
  });
});

test('WHIP: DELETE ends the stream within 5 s; the key can be published again', { timeout: 90000 }, async () => {
  await withGatewayAndBrowser({ camera: true }, async ({ gw, pages, browser }) => {
    const url = `http://127.0.0.1:${gw.http}/whip/live/again`;
    const page = await whipPublish(browser, pages.port, url);
    const live = await waitLive(gw.http, 'live/again');
    assert.equal(live.publisher.protocol, 'webrtc');
    assert.match(live.publisher.remote, /^127\.0\.0\.1:\d+$/);
    // A second publisher for a live key is refused.
    const conflict = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/sdp' }, body: (await page.evaluate(() => window.pc.localDescription.sdp)) });
    assert.equal(conflict.status, 409);
    const t0 = Date.now();
    assert.equal(await page.evaluate(() => window.unpublish()), 200);
    while ((await streams(gw)).some((s) => s.key === 'live/again')) {
      assert.ok(Date.now() - t0 < 5000, 'stream still listed 5 s after DELETE');
      await sleep(100);
    }
    console.log(`stream gone ${Date.now() - t0} ms after DELETE`);
    await page.close();
    // A publisher that simply vanishes (tab closed, no DELETE) ends too.
    const p2 = await whipPublish(browser, pages.port, url);
    await waitLive(gw.http, 'live/again');
    const t1 = Date.now();
    await p2.close();
    while ((await streams(gw)).some((s) => s.key === 'live/again')) {
      assert.ok(Date.now() - t1 < 6000, 'stream still listed 6 s after the publisher vanished');
      await sleep(100);
    }
    console.log(`stream gone ${Date.now() - t1} ms after the tab closed`);
  });
});

test('WHIP: a resolution switch gives one new sequence header, not one per keyframe', { timeout: 90000 }, async () => {
  await withGatewayAndBrowser({ camera: true }, async ({ gw, pages, browser }) => {
    const page = await whipPublish(browser, pages.port, `http://127.0.0.1:${gw.http}/whip/live/resize`);
    await waitLive(gw.http, 'live/resize');
    const file = join(dir, 'resize.flv');
    const cap = captureHttp(`http://127.0.0.1:${gw.http}/live/resize.flv`, 14, file);
    await sleep(6000);
    await page.evaluate(() => window.resize(320, 240));
    await cap;
    const seq = sequenceHeaders(file);
    for (let i = 1; i < seq.length; i++) assert.notEqual(seq[i], seq[i - 1], `sequence header ${i} repeats the previous one`);
    assert.ok(seq.length >= 2, `${seq.length} sequence headers: the switch did not reach the viewer`);
    const frames = JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-select_streams', 'v', '-show_entries', 'frame=width,height', '-of', 'json', file])).frames;
    assert.equal(frames.at(-1).width, 320);
    assert.equal(frames[0].width, 640);
    console.log(`${seq.length} sequence headers over 14 s with periodic keyframes; ${frames.length} frames`);
  });
});

test('WHIP: refused offers get a clear 4xx', { timeout: 60000 }, async () => {
  await withGatewayAndBrowser({ camera: true }, async ({ gw, pages, browser }) => {
    const url = `http://127.0.0.1:${gw.http}/whip/live/bad`;
    const post = (body, type = 'application/sdp') => fetch(url, { method: 'POST', headers: { 'content-type': type }, body });
    let r = await post('v=0\r\nthis is not sdp');
    assert.equal(r.status, 400, await r.text());
    r = await post('x', 'text/plain');
    assert.equal(r.status, 415);
    r = await fetch(`http://127.0.0.1:${gw.http}/whip/live/..`, { method: 'POST', headers: { 'content-type': 'application/sdp' }, body: 'v=0' });
    assert.ok(r.status === 400 || r.status === 404, `path trick: ${r.status}`);
    r = await post('a'.repeat(100_000));
    assert.equal(r.status, 413);
    // A real browser offer with AV1 only (no H.264, VP8 or VP9): 406 with the reason.
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${pages.port}/whip.html?url=about:blank`);
    const sdp = await page.evaluate(async () => {
      const pc = new RTCPeerConnection();
      const t = pc.addTransceiver('video', { direction: 'sendonly' });
      t.setCodecPreferences(RTCRtpSender.getCapabilities('video').codecs.filter((c) => c.mimeType === 'video/AV1'));
      return (await pc.createOffer()).sdp;
    });
    r = await post(sdp);
    const text = await r.text();
    assert.equal(r.status, 406, text);
    assert.match(text, /H\.264/);
    assert.match(sdp, /AV1/);
    assert.ok(!(await streams(gw)).some((s) => s.key === 'live/bad'), 'refused offer left the key claimed');
    // An offer that never connects (nobody behind it) only reserves its key: shown as
    // connecting, not playable, and a browser publisher that connects first gets the key.
    const squat = readFileSync(join(root, 'webrtc', 'testdata', 'chromium156_offer.sdp'), 'utf8');
    r = await fetch(`http://127.0.0.1:${gw.http}/whip/live/squat`, { method: 'POST', headers: { 'content-type': 'application/sdp' }, body: squat });
    assert.equal(r.status, 201, await r.text());
    const reserved = (await streams(gw)).find((s) => s.key === 'live/squat');
    assert.equal(reserved?.state, 'connecting');
    assert.equal((await fetch(`http://127.0.0.1:${gw.http}/live/squat.flv`)).status, 404);
    const t0 = Date.now();
    await whipPublish(browser, pages.port, `http://127.0.0.1:${gw.http}/whip/live/squat`);
    const won = await waitLive(gw.http, 'live/squat');
    assert.equal(won.state, 'live');
    assert.equal(won.publisher.protocol, 'webrtc');
    console.log(`a browser publisher took a reserved key in ${Date.now() - t0} ms`);
    r = await fetch(`${url}/nosuchsession`, { method: 'DELETE' });
    assert.equal(r.status, 404);
    r = await fetch(url, { method: 'OPTIONS' });
    assert.ok(r.status === 204 || r.status === 200);
  });
});
