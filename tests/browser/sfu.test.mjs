// The forwarding core (issue 15, SFU): Chromium participants publish with WHIP (a clock canvas
// drawn n x 1000 s behind the wall clock, so that each picture says whose it is, and the fake
// microphone) and receive each other on one peer connection per participant through the
// gateway's /sfu API. Two see each other within 5 s; a third joins and both get its tracks by
// renegotiation; it leaves and its tracks end for the others, who keep seeing each other.
// Media is forwarded as published: a VP8 publisher's subscribers decode VP8.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withGatewayAndBrowser, waitLive, sleep } from './lib.mjs';

/// Opens participant `n` publishing `room/{name}`.
async function join(browser, gw, pages, n, name, codec) {
  const page = await browser.newPage();
  const q = new URLSearchParams({
    whip: `http://127.0.0.1:${gw.http}/whip/room/${name}`,
    sfu: `ws://127.0.0.1:${gw.http}/sfu`,
    offset: String(n * 1e6),
    codec,
  });
  await page.goto(`http://127.0.0.1:${pages.port}/sfu.html?${q}`);
  await waitLive(gw.http, `room/${name}`, 15000);
  return { page, n, name, stream: `room.${name}` };
}

const probe = (p, since = 0) => p.page.evaluate((since) => window.probe(since), since);

/// Waits until `p` decodes `of`'s pictures (its clock, and nobody else's); returns the probe.
async function waitSees(p, of, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const r = await probe(p);
    const s = r.remotes[of.stream];
    if (s && s.reads >= 10) {
      // The clock's check byte is an XOR: about one damaged read in 256 passes it.
      const total = Object.values(s.who).reduce((x, y) => x + y, 0);
      assert.ok((s.who[of.n] ?? 0) >= 0.9 * total, `${p.name} sees ${of.name}'s stream showing clocks of ${JSON.stringify(s.who)}`);
      return r;
    }
    if (Date.now() > deadline) throw new Error(`${p.name} did not decode ${of.name} within ${ms} ms: ${JSON.stringify(r)}`);
    await sleep(100);
  }
}

/// What `p` received of `of` over the next `seconds`: frames read back, audio samples, the
/// median latency.
async function received(p, of, seconds) {
  const a = (await probe(p)).remotes[of.stream];
  const since = Date.now();
  await sleep(seconds * 1000);
  const r = await probe(p, since);
  const b = r.remotes[of.stream];
  const audio = (x) => x.tracks.find((t) => t.kind === 'audio') || {};
  const video = b.tracks.find((t) => t.kind === 'video') || {};
  const videoBefore = a.tracks.find((t) => t.kind === 'video') || {};
  return {
    // Frames the decoder put out; the clock reader samples what the page has CPU for.
    fps: ((video.framesDecoded ?? 0) - (videoBefore.framesDecoded ?? 0)) / seconds,
    reads: (b.reads - a.reads) / seconds,
    audioPerSec: ((audio(b).samples ?? 0) - (audio(a).samples ?? 0)) / seconds,
    energy: audio(b).energy,
    codec: video.codec,
    latency: b.medianLatency,
    errors: r.errors,
  };
}

function checkReceiving(r, who, codec) {
  assert.deepEqual(r.errors, [], `${who}: errors`);
  assert.equal(r.codec, codec, `${who}: forwarded as published`);
  // The canvas draws at 30 fps; Chromium's encoder may drop a few.
  assert.ok(r.fps >= 20, `${who}: ${r.fps} frames/s decoded`);
  assert.ok(r.reads >= 8, `${who}: ${r.reads} clocks/s read back`);
  assert.ok(r.audioPerSec >= 40000, `${who}: ${r.audioPerSec} audio samples/s`);
  assert.ok(r.energy > 0, `${who}: audio is not silence`);
  assert.ok(r.latency <= 150, `${who}: glass-to-glass ${r.latency} ms through the gateway`);
}

test('participants receive each other through the forwarding API, joining and leaving by renegotiation', { timeout: 180000 }, async () => {
  await withGatewayAndBrowser({ camera: true }, async ({ gw, pages, browser }) => {
    const ann = await join(browser, gw, pages, 1, 'ann', 'vp8only');
    const bob = await join(browser, gw, pages, 2, 'bob', 'h264');
    const t0 = Date.now();
    await ann.page.evaluate(() => window.subscribe(['room/bob']));
    await bob.page.evaluate(() => window.subscribe(['room/ann']));
    await waitSees(ann, bob, 5000);
    await waitSees(bob, ann, 5000 - (Date.now() - t0));
    const first = Date.now() - t0;

    const ab = await received(ann, bob, 4);
    const ba = await received(bob, ann, 4);
    console.log('two participants', JSON.stringify({ firstMs: first, annSeesBob: ab, bobSeesAnn: ba }));
    checkReceiving(ab, 'ann <- bob', 'video/H264');
    checkReceiving(ba, 'bob <- ann', 'video/VP8');

    // A third joins: the others add its feed to their sessions (a new offer each).
    const cat = await join(browser, gw, pages, 3, 'cat', 'vp9only');
    const t1 = Date.now();
    await cat.page.evaluate(() => window.subscribe(['room/ann', 'room/bob']));
    await ann.page.evaluate(() => window.subscribe(['room/cat']));
    await bob.page.evaluate(() => window.subscribe(['room/cat']));
    await waitSees(ann, cat, 5000);
    await waitSees(bob, cat, 5000);
    await waitSees(cat, ann, 5000);
    await waitSees(cat, bob, 5000);
    const joined = Date.now() - t1;
    const annProbe = await probe(ann);
    assert.ok(annProbe.offers >= 2, `ann renegotiated: ${annProbe.offers} offers`);
    const ac = await received(ann, cat, 3);
    console.log('third participant', JSON.stringify({ joinedMs: joined, annSeesCat: ac }));
    checkReceiving(ac, 'ann <- cat', 'video/VP9');

    // It leaves: its stream ends, the gateway removes its feed from the others' sessions.
    await cat.page.evaluate(() => window.leave());
    const t2 = Date.now();
    for (const p of [ann, bob]) {
      for (;;) {
        const r = await probe(p);
        const c = r.remotes[cat.stream];
        if (r.ended.includes('room/cat') && c.tracks.length === 0) break;
        if (Date.now() - t2 > 5000) throw new Error(`${p.name} still has cat's tracks: ${JSON.stringify(r)}`);
        await sleep(100);
      }
    }
    const left = Date.now() - t2;
    // The two left keep receiving each other (once the jitter buffers settle after the offer
    // that removed cat's tracks: a read right after it was once 145 ms behind).
    await sleep(1000);
    const after = await received(ann, bob, 3);
    console.log('after the third left', JSON.stringify({ tracksEndedMs: left, annSeesBob: after }));
    checkReceiving(after, 'ann <- bob after cat left', 'video/H264');
    const api = await fetch(`http://127.0.0.1:${gw.http}/api/v1/streams`).then((r) => r.json());
    assert.ok(!api.streams.find((s) => s.key === 'room/cat'), 'cat is no longer live');
    await ann.page.close();
    await bob.page.close();
    await cat.page.close();
  });
});
