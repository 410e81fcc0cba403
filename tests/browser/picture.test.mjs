// What a viewer sees of a WebRTC publisher: Chromium publishes a canvas (its fake camera, with
// the wall clock as a block barcode in the top-left quarter; whip.html source=pattern) with
// WHIP in H.264 (passed through), VP8 and VP9 (transcoded to H.264), at 640x480 and 1280x720.
// FFmpeg decodes what HTTP-FLV delivers and tests/tools/picture_check.py reads the clock back
// from every frame: a grey, black or frozen picture fails, whatever the frame counts say.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withGatewayAndBrowser, whipPublish, waitLive, root, sleep } from './lib.mjs';
import { captureHttp, assertPicture } from './flvcheck.mjs';

const dir = mkdtempSync(join(tmpdir(), 'streamgate-picture-'));
// PICTURE_SECONDS and PICTURE_CASES (e.g. "vp8only:640x480,h264:1280x720") for longer or other runs.
const SECONDS = Number(process.env.PICTURE_SECONDS || 8);
const CASES = (process.env.PICTURE_CASES || 'h264:640x480,vp8only:640x480,vp9only:640x480,h264:1280x720,vp8only:1280x720,vp9only:1280x720')
  .split(',')
  .map((c) => {
    const [codec, size] = c.split(':');
    const [width, height] = size.split('x').map(Number);
    return { codec, width, height };
  });

test('WHIP picture: the clock reads back through H.264, VP8 and VP9 at 640x480 and 1280x720', { timeout: 240000 }, async () => {
  await withGatewayAndBrowser({ camera: true }, async ({ gw, pages, browser }) => {
    const results = [];
    for (const { codec, width, height } of CASES) {
      {
        const key = `pic${codec}${width}`;
        const page = await whipPublish(browser, pages.port, `http://127.0.0.1:${gw.http}/whip/live/${key}`, { codec, source: 'pattern', width, height });
        await waitLive(gw.http, `live/${key}`);
        await sleep(1000);
        const file = join(dir, `${key}.flv`);
        await captureHttp(`http://127.0.0.1:${gw.http}/live/${key}.flv`, SECONDS, file);
        await page.close();
        const what = `${codec} ${width}x${height}`;
        const r = assertPicture(file, what, { clock: true, minSpanMs: (SECONDS - 2) * 1000 });
        assert.deepEqual(r.sizes, [`${width}x${height}`], `${what}: delivered at ${r.sizes}`);
        assert.ok(r.frames >= SECONDS * 10, `${what}: ${r.frames} frames`);
        results.push({ what, ...r });
      }
    }
    console.log(JSON.stringify(results));
  });
});
