// WHEP playback in Chromium (issue 15): an RTMP-published stream (FFmpeg: H.264 + AAC, the AAC
// transcoded to Opus for WebRTC viewers), a WHIP-published H.264 + Opus stream (forwarded as
// received) and a WHIP-published VP8 one (VP8 reaches the viewer: no transcoding). Each viewer
// reads the burnt-in clock back (latency) and the receiver's WebRTC statistics say what arrived.
// WHEP_SECONDS sets how long each plays (default 12). Refusals and floods: gateway/tests/hostile.rs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withGatewayAndBrowser, startClockPublisher, whipPublish, waitLive, openPlayer, sleep, median } from './lib.mjs';

const SECONDS = Number(process.env.WHEP_SECONDS || 12);

/// Plays `url` over WHEP for SECONDS; returns the latency samples' summary and the statistics.
async function watch(browser, pagePort, url) {
  const page = await openPlayer(browser, pagePort, url, 'whep');
  // Frames decoded over a window that starts once playback runs, for the rate.
  await sleep(4000);
  const s0 = await page.evaluate(() => window.probe.stats());
  const t0 = Date.now();
  await sleep((SECONDS - 4) * 1000);
  const s1 = await page.evaluate(() => window.probe.stats());
  const dt = (Date.now() - t0) / 1000;
  const probe = await page.evaluate(() => ({ ...window.probe }));
  await page.close();
  const late = probe.samples.filter(([t]) => t - probe.samples[0][0] >= 4000).map(([, l]) => l);
  const rate = (k, f) => ((s1[k]?.[f] ?? 0) - (s0[k]?.[f] ?? 0)) / dt;
  return {
    errors: probe.errors,
    streamIds: probe.streamIds,
    samples: probe.samples.length,
    firstFrameMs: probe.firstFrameMs && Math.round(probe.firstFrameMs),
    medianMs: median(late),
    p95Ms: late.length ? [...late].sort((a, b) => a - b)[Math.floor(late.length * 0.95)] : NaN,
    videoCodec: s1.video?.codec,
    audioCodec: s1.audio?.codec,
    fps: Math.round(rate('video', 'framesDecoded') * 10) / 10,
    audioSamplesPerSec: Math.round(rate('audio', 'totalSamplesReceived')),
    audioEnergy: s1.audio?.totalAudioEnergy,
    video: s1.video,
    audio: s1.audio,
  };
}

function checkPlayed(r, { codec, fps, latencyMs }) {
  assert.deepEqual(r.errors, []);
  // Chromium synchronises audio with video only within one MediaStream.
  assert.equal(r.streamIds.length, 2, `tracks: ${r.streamIds}`);
  assert.equal(new Set(r.streamIds).size, 1, `audio and video in different streams: ${r.streamIds}`);
  assert.equal(r.videoCodec, codec, 'the codec the browser decoded');
  assert.equal(r.audioCodec, 'audio/opus');
  assert.ok(r.fps >= fps * 0.9, `video decoded at ${r.fps} fps, the source sends ${fps}`);
  // 48 kHz Opus, whatever the number of channels the receiver reports per sample.
  assert.ok(r.audioSamplesPerSec >= 40000, `audio: ${r.audioSamplesPerSec} samples/s received`);
  assert.ok(r.audioEnergy > 0, 'audio is not silence');
  assert.ok(r.samples >= SECONDS * 10, `only ${r.samples} frames read back`);
  assert.ok(r.medianMs <= latencyMs, `median latency ${r.medianMs} ms (target ${latencyMs})`);
}

test('WHEP plays RTMP (H.264 + AAC -> Opus), WHIP H.264 + Opus and WHIP VP8 in Chromium', { timeout: 180000 }, async () => {
  await withGatewayAndBrowser({ camera: true }, async ({ gw, pages, browser }) => {
    // RTMP: FFmpeg with x264 zerolatency (no B-frames), 30 fps, AAC.
    const ff = startClockPublisher(`rtmp://127.0.0.1:${gw.rtmp}/live/rtmpclock`, SECONDS + 30);
    try {
      await waitLive(gw.http, 'live/rtmpclock');
      const r = await watch(browser, pages.port, `http://127.0.0.1:${gw.http}/whep/live/rtmpclock`);
      console.log('whep-rtmp', JSON.stringify({ ...r, video: undefined, audio: undefined }));
      checkPlayed(r, { codec: 'video/H264', fps: 30, latencyMs: 300 });
      const api = await fetch(`http://127.0.0.1:${gw.http}/api/v1/streams`).then((x) => x.json());
      assert.ok(api.streams.find((s) => s.key === 'live/rtmpclock'), 'still live');
    } finally {
      ff.kill('SIGTERM');
    }

    for (const [codec, mime] of [['h264', 'video/H264'], ['vp8only', 'video/VP8']]) {
      const key = `whep${codec}`;
      const pub = await whipPublish(browser, pages.port, `http://127.0.0.1:${gw.http}/whip/live/${key}`, { codec, source: 'clock' });
      try {
        await waitLive(gw.http, `live/${key}`);
        const r = await watch(browser, pages.port, `http://127.0.0.1:${gw.http}/whep/live/${key}`);
        console.log(`whep-whip-${codec}`, JSON.stringify({ ...r, video: undefined, audio: undefined }));
        // The canvas source draws at 30 fps; WebRTC may drop a few.
        checkPlayed(r, { codec: mime, fps: 25, latencyMs: 300 });
      } finally {
        await pub.close();
      }
    }
  });
});
