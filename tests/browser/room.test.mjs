// The chat room (issue 16) end to end: the gateway serves the built pages (player/dist) and
// Socket.IO; Chromium participants, each in a browser context of its own, use the room page as
// a person would. Their camera is a clock canvas drawn n x 1000 s behind the wall clock, so that
// each tile's picture says whose it is; their microphone is Chromium's fake one.
// Two join a named room and see and hear each other; a third joins "random" from the home page
// and lands in that room; chat reaches the others; one leaves and the others see it go; a
// participant's HLS and HTTP-FLV carry H.264 + AAC; the share panel's QR code decodes to the
// watch link. Screenshots of the home and room pages (desktop, phone) go to
// $ARTIFACTS_DIR/screenshots (default /var/tmp/streamgate-artifacts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startGateway, launchChromium, sleep, root } from './lib.mjs';

const here = join(root, 'tests', 'browser');
const shots = join(process.env.ARTIFACTS_DIR || '/var/tmp/streamgate-artifacts', 'screenshots');
const clockJs = readFileSync(join(here, 'clock.js'), 'utf8');

/// An init script: the camera is a clock canvas `offset` ms behind, the name is preset.
function fakeCamera(offset, name) {
  return `${clockJs}
  window.readClock = readClock;
  (() => {
    ${name ? `localStorage.setItem('name', ${JSON.stringify(name)});` : ''}
    const md = navigator.mediaDevices;
    if (!md) return;
    const real = md.getUserMedia.bind(md);
    md.getUserMedia = async (c) => {
      const tracks = [];
      if (c && c.video) {
        const canvas = document.createElement('canvas');
        canvas.width = 640; canvas.height = 360;
        const ctx = canvas.getContext('2d');
        const draw = () => drawClock(ctx, 80, 60, ${offset});
        draw();
        setInterval(draw, 33);
        tracks.push(canvas.captureStream(30).getVideoTracks()[0]);
      }
      if (c && c.audio) tracks.push(...(await real({ audio: true })).getAudioTracks());
      return new MediaStream(tracks);
    };
  })();`;
}

/// A participant: its own browser context (storage, devices), the room page of `room`.
async function participant(browser, base, n, name, path, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport });
  await context.addInitScript({ content: fakeCamera(n * 1e6, path ? name : null) });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`${name} page error:`, e.message));
  if (path) await page.goto(`${base}${path}`);
  return { context, page, n, name };
}

/// What `p`'s page shows: per remote tile its key, state, whose clock its picture reads, and the
/// audio received (subscriber inbound-rtp).
async function look(p) {
  return p.page.evaluate(async () => {
    const c = document.createElement('canvas');
    c.width = 320; c.height = 240;
    const ctx = c.getContext('2d', { willReadFrequently: true });
    const tiles = [...document.querySelectorAll('figure.tile')].map((f) => {
      const v = f.querySelector('video');
      let clock = null;
      if (v && v.videoWidth) {
        const ms = readClock(ctx, v);
        if (ms !== null) clock = (Date.now() % 2 ** 40) - ms;
      }
      return { key: f.dataset.key, self: f.classList.contains('self'), state: f.dataset.state, behind: clock, width: v?.videoWidth || 0, time: v?.currentTime || 0 };
    });
    let audio = 0, energy = 0;
    const pc = window.__room?.subscriber()?.pc;
    if (pc) {
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') { audio += s.totalSamplesReceived || 0; energy += s.totalAudioEnergy || 0; }
      });
    }
    const chat = [...document.querySelectorAll('[data-test=chat-message] p')].map((e) => e.textContent);
    return { url: location.pathname, tiles, audio, energy, chat, notices: [...document.querySelectorAll('[data-test=notice]')].map((e) => e.dataset.code) };
  });
}

/// Waits until `p` plays the picture of every participant in `others` (their clock reads back:
/// n x 1e6 ms behind, give or take a second); returns the look.
async function waitSees(p, others, ms = 10000) {
  const deadline = Date.now() + ms;
  let l;
  for (;;) {
    l = await look(p);
    const ok = others.every((o) => l.tiles.some((t) => !t.self && t.behind !== null && Math.abs(t.behind - o.n * 1e6) < 1000));
    if (ok) return l;
    if (Date.now() > deadline) throw new Error(`${p.name} does not see ${others.map((o) => o.name)} within ${ms} ms: ${JSON.stringify(l)}`);
    await sleep(200);
  }
}

async function waitFor(what, fn, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(200);
  }
}

function streams(file) {
  const out = execFileSync('ffprobe', ['-v', 'error', '-rw_timeout', '5000000', '-show_streams', '-of', 'json', file], { timeout: 20000 });
  return JSON.parse(out).streams.map((s) => s.codec_name).sort();
}

test('the room: two see and hear each other, a third joins at random, chat, leaving, HLS/FLV of a participant, screenshots', { timeout: 240000 }, async () => {
  const gw = await startGateway();
  const browser = await launchChromium({ camera: true });
  const base = `http://127.0.0.1:${gw.http}`;
  mkdirSync(shots, { recursive: true });
  try {
    // The home page with nobody in: desktop and phone.
    const home = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await home.goto(base);
    await home.waitForSelector('[data-test=random]');
    await home.screenshot({ path: join(shots, 'home-empty-desktop.png') });

    const t0 = Date.now();
    const ann = await participant(browser, base, 1, 'Ann', '/room/t1');
    const bob = await participant(browser, base, 2, 'Bob', '/room/t1');
    const annSees = await waitSees(ann, [bob]);
    const bobSees = await waitSees(bob, [ann]);
    const firstMs = Date.now() - t0;
    // Audio arrives, and is not silence.
    const a1 = await look(ann);
    await sleep(2000);
    const a2 = await look(ann);
    const audioPerSec = (a2.audio - a1.audio) / 2;
    console.log('two in t1', JSON.stringify({ firstMs, audioPerSec, energy: a2.energy, annSees: annSees.tiles, bobSees: bobSees.tiles }));
    assert.ok(firstMs <= 10000 + 3000, `first pictures after ${firstMs} ms`);
    assert.ok(audioPerSec >= 30000, `${audioPerSec} audio samples/s`);
    assert.ok(a2.energy > 0, 'audio is not silence');
    const keys = annSees.tiles.map((t) => t.key).sort();
    assert.deepEqual(keys, ['t1/ann', 't1/bob']);

    // The home page lists t1 with 2 people; a third joins "random" from it and lands in t1.
    await home.reload();
    await home.waitForSelector('[data-room=t1]');
    const count = await home.textContent('[data-room=t1] .count');
    assert.match(count, /^2 \//);
    const cat = await participant(browser, base, 3, 'Cat', null);
    await cat.page.goto(base);
    await cat.page.fill('[data-test=name]', 'Cat');
    await cat.page.click('[data-test=random]');
    await cat.page.waitForURL(/\/room\/t1$/, { timeout: 5000 });
    const catSees = await waitSees(cat, [ann, bob]);
    await waitSees(ann, [bob, cat]);
    await waitSees(bob, [ann, cat]);
    console.log('random landed in t1', JSON.stringify(catSees.tiles));
    assert.equal(catSees.tiles.length, 3);

    // Chat: Ann's message reaches Bob and Cat.
    await ann.page.fill('[data-test=chat-input]', 'hello from ann 你好');
    await ann.page.click('[data-test=chat-send]');
    for (const p of [bob, cat]) {
      await waitFor(`${p.name} gets the chat`, async () => (await look(p)).chat.includes('hello from ann 你好'), 5000);
    }

    // A participant's stream plays at the gateway's URLs: HLS and HTTP-FLV carry H.264 + AAC.
    assert.deepEqual(streams(`${base}/t1/ann.flv`), ['aac', 'h264'], 'HTTP-FLV');
    assert.deepEqual(streams(`${base}/t1/bob.m3u8`), ['aac', 'h264'], 'HLS');
    const api = await fetch(`${base}/api/v1/streams`).then((r) => r.json());
    const annApi = api.streams.find((s) => s.key === 't1/ann');
    assert.equal(annApi.publisher.protocol, 'room');

    // The share panel: its QR code decodes to the watch link.
    await ann.page.click('figure.tile[data-key="t1/bob"] button.link');
    await ann.page.waitForSelector('[data-test=share-panel]');
    await ann.page.addScriptTag({ path: join(here, 'node_modules', 'jsqr', 'dist', 'jsQR.js') });
    const qr = await ann.page.evaluate(async () => {
      const svg = document.querySelector('[data-test=qr] svg');
      const img = new Image();
      img.src = `data:image/svg+xml;base64,${btoa(new XMLSerializer().serializeToString(svg))}`;
      await img.decode();
      const c = document.createElement('canvas');
      c.width = c.height = 400;
      const ctx = c.getContext('2d');
      ctx.fillStyle = '#fff';
      ctx.fillRect(0, 0, 400, 400);
      ctx.drawImage(img, 0, 0, 400, 400);
      const d = ctx.getImageData(0, 0, 400, 400);
      return { decoded: window.jsQR(d.data, 400, 400)?.data, shown: document.querySelector('[data-test=watch-url]').textContent };
    });
    assert.equal(qr.decoded, `${base}/watch/t1/bob`);
    assert.equal(qr.shown, qr.decoded);
    await ann.page.screenshot({ path: join(shots, 'room-share-desktop.png') });
    await ann.page.keyboard.press('Escape');
    await ann.page.waitForSelector('[data-test=share-panel]', { state: 'detached', timeout: 2000 });

    // Mute shows on the others' tiles.
    await bob.page.click('[data-test=mute]');
    await waitFor('Ann sees Bob muted', () => ann.page.$('figure.tile[data-key="t1/bob"] [data-test=muted]'), 5000);
    await ann.page.screenshot({ path: join(shots, 'room-3-desktop.png') });

    // Phone size: the same room in a narrow viewport.
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 3, isMobile: true, hasTouch: true });
    // In Chinese (its browser language would pick it too).
    await phone.addInitScript({ content: `${fakeCamera(4e6, 'Dan on a phone')}; localStorage.setItem('lang', 'zh');` });
    const dan = { context: phone, page: await phone.newPage(), n: 4, name: 'Dan' };
    await dan.page.goto(`${base}/room/t1`);
    await waitSees(dan, [ann, bob, cat], 15000);
    await dan.page.screenshot({ path: join(shots, 'room-4-phone.png') });
    const phoneHome = await phone.newPage();
    await phoneHome.goto(base);
    await phoneHome.waitForSelector('[data-room=t1]');
    await phoneHome.screenshot({ path: join(shots, 'home-phone.png') });
    await home.reload();
    await home.waitForSelector('[data-room=t1]');
    await home.screenshot({ path: join(shots, 'home-desktop.png') });
    await dan.page.click('[data-test=leave]');
    await phone.close();

    // Cat leaves: the others drop its tile (and its stream ends).
    const t1 = Date.now();
    await cat.page.click('[data-test=leave]');
    for (const p of [ann, bob]) {
      await waitFor(`${p.name} sees Cat go`, async () => (await look(p)).tiles.length === 2, 5000);
    }
    const goneMs = Date.now() - t1;
    await waitFor('t1/cat ends', async () => !(await fetch(`${base}/api/v1/streams`).then((r) => r.json())).streams.some((s) => s.key === 't1/cat'), 5000);
    // The two left keep seeing each other.
    await waitSees(ann, [bob], 5000);
    console.log('after leaving', JSON.stringify({ goneMs }));
    for (const p of [ann, bob, cat]) await p.context.close();
  } finally {
    await browser.close();
    gw.stop();
  }
});
