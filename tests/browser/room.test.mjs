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
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startGateway, launchChromium, sleep } from './lib.mjs';
import { fakeCamera, participant, look, waitSees, waitFor, readQr } from './roomlib.mjs';

const shots = join(process.env.ARTIFACTS_DIR || '/var/tmp/streamgate-artifacts', 'screenshots');
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
    // Glass to glass: a tile's clock is n x 1e6 ms behind plus the latency (loopback).
    const lat = [];
    for (let i = 0; i < 10; i++) {
      for (const [p, o] of [[ann, bob], [bob, ann]]) {
        const t = (await look(p)).tiles.find((x) => x.key === `t1/${o.name.toLowerCase()}`);
        if (t?.behind != null) lat.push(t.behind - o.n * 1e6);
      }
      await sleep(100);
    }
    lat.sort((x, y) => x - y);
    const latencyMs = lat[Math.floor(lat.length / 2)];
    console.log('two in t1', JSON.stringify({ firstMs, latencyMs, audioPerSec, energy: a2.energy, annSees: annSees.tiles, bobSees: bobSees.tiles }));
    assert.ok(latencyMs <= 150, `glass-to-glass ${latencyMs} ms between two participants`);
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
    const qr = await readQr(ann.page);
    assert.equal(qr.decoded, `${base}/watch/t1/bob`);
    assert.equal(qr.shown, qr.decoded);
    await ann.page.screenshot({ path: join(shots, 'room-share-desktop.png') });
    await ann.page.keyboard.press('Escape');
    await ann.page.waitForSelector('[data-test=share-panel]', { state: 'detached', timeout: 2000 });

    // Mute shows on the others' tiles.
    await bob.page.click('[data-test=mute]');
    await waitFor('Ann sees Bob muted', () => ann.page.$('figure.tile[data-key="t1/bob"] [data-test=muted]'), 5000);
    await ann.page.screenshot({ path: join(shots, 'room-3-desktop.png') });

    // Speaking: Ann's microphone (Chromium's fake one beeps) lights her tile on Bob's page; Bob
    // is muted, so his does not light on Ann's.
    await waitFor('Bob sees Ann speaking', () => bob.page.$('figure.tile[data-key="t1/ann"].speaking'), 10000);
    await waitFor('Ann sees Bob (muted) not speaking', async () => !(await ann.page.$('figure.tile[data-key="t1/bob"].speaking')), 3000);
    // Screen share: Ann's "screen" (a clock 50e6 ms further behind) replaces her camera on the
    // same stream; stopping brings the camera back.
    await ann.page.click('[data-test=screen]');
    await waitSees(bob, [{ n: 51, name: "Ann's screen" }], 10000);
    await ann.page.click('[data-test=screen]');
    await waitSees(bob, [ann], 10000);

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

/// A Node socket.io client (socket.io-client 4.8.4) on `base`, connected.
async function rawClient(base, opts = {}) {
  const { io } = await import('socket.io-client');
  const s = io(base, { transports: ['websocket'], reconnection: false, ...opts });
  await new Promise((resolve, reject) => {
    s.once('connect', resolve);
    s.once('connect_error', reject);
  });
  s.errors = [];
  s.on('room:error', (e) => s.errors.push(e));
  return s;
}

const ask = (s, ev, data) => s.timeout(5000).emitWithAck(ev, data);

/// Frames `p` decoded of each remote tile's video so far.
const frames = (p) => p.page.evaluate(() => [...document.querySelectorAll('figure.tile:not(.self) video')].map((v) => v.getVideoPlaybackQuality().totalVideoFrames));

test('hostile signalling gets errors for that client only; the room plays on', { timeout: 180000 }, async () => {
  const { writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const cfg = join(tmpdir(), `sg-room-${process.pid}.toml`);
  writeFileSync(cfg, '[room]\nmax_participants = 4\nevents_per_second = 10.0\nevents_burst = 40\n');
  const gw = await startGateway(['--config', cfg]);
  const browser = await launchChromium({ camera: true });
  const base = `http://127.0.0.1:${gw.http}`;
  const clients = [];
  try {
    const ann = await participant(browser, base, 1, 'Ann', '/room/h1');
    const bob = await participant(browser, base, 2, 'Bob', '/room/h1');
    await waitSees(ann, [bob]);
    await waitSees(bob, [ann]);
    const before = [await frames(ann), await frames(bob)];
    const t0 = Date.now();
    const results = {};

    // An unknown event, a join whose payload has the wrong shape, a chat before joining.
    const x = await rawClient(base);
    clients.push(x);
    results.unknown = await ask(x, 'room:destroy', {});
    assert.equal(results.unknown.error.code, 'unknown-event');
    results.badJoin = await ask(x, 'room:join', 42);
    assert.equal(results.badJoin.error.code, 'bad-payload');
    results.badJoin2 = await ask(x, 'room:join', { room: 'h1', name: { $gt: '' } });
    assert.equal(results.badJoin2.error.code, 'bad-payload');
    results.notIn = await ask(x, 'chat:send', { text: 'hi' });
    assert.equal(results.notIn.error.code, 'not-in-room');
    results.reserved = await ask(x, 'room:join', { room: 'api', name: 'x' });
    assert.equal(results.reserved.error.code, 'bad-room-name');
    // Without an ack, the error comes as room:error.
    x.emit('what:ever', {});
    await waitFor('room:error for an event without ack', () => x.errors.some((e) => e.code === 'unknown-event' && e.event === 'what:ever'), 3000);

    // Two observers join (no media); the room then has 4 of 4: a fifth is refused.
    const o1 = await rawClient(base);
    const o2 = await rawClient(base);
    clients.push(o1, o2);
    assert.equal((await ask(o1, 'room:join', { room: 'h1', name: 'Observer' })).ok, true);
    assert.equal((await ask(o2, 'room:join', { room: 'h1', name: 'Observer' })).self.peer, 'observer-2');
    results.full = await ask(x, 'room:join', { room: 'h1', name: 'Fifth' });
    assert.equal(results.full.error.code, 'room-full');

    // A chat over the size limit; 100 chats sent back to back arrive in order (each client's
    // events are handled in the order sent), up to the chat rate limit.
    results.long = await ask(o1, 'chat:send', { text: 'x'.repeat(501) });
    assert.equal(results.long.error.code, 'too-large');
    const got = [];
    o2.on('chat:message', (m) => got.push(m.text));
    const acks = await Promise.all(Array.from({ length: 100 }, (_, i) => ask(o1, 'chat:send', { text: `n${i}` })));
    const okN = acks.filter((a) => a.ok).length;
    const limited = acks.filter((a) => !a.ok && a.error.code === 'rate-limited').length;
    await sleep(500);
    results.chatOrder = { ok: okN, limited, received: got.length };
    assert.equal(okN + limited, 100);
    assert.ok(okN >= 4 && okN <= 10, `${okN} of a burst of 100 chats were taken (burst 5 at 2/s)`);
    assert.deepEqual(got, acks.map((a, i) => (a.ok ? `n${i}` : null)).filter(Boolean), 'chats arrive in the order sent');
    assert.deepEqual(acks.slice(0, okN).map((a) => a.ok), Array(okN).fill(true), 'the first ones are taken, then refused');

    // A flood: 500 events in a second. The flooder gets rate-limited answers, then (the 201st
    // refusal in 10 s, room.flood_refusals = 200) a flood error and the disconnect; nobody else
    // hears of it.
    const xGone = new Promise((r) => x.once('disconnect', r));
    const flood = await Promise.all(Array.from({ length: 500 }, () => ask(x, 'rooms:list', {}).catch(() => ({ ok: false, error: { code: 'no-answer' } }))));
    const codes = {};
    for (const a of flood) {
      const c = a.ok ? 'ok' : a.error.code;
      codes[c] = (codes[c] || 0) + 1;
    }
    results.flood = codes;
    results.floodDisconnect = await Promise.race([xGone, sleep(2000).then(() => 'still connected')]);
    assert.ok((codes.ok || 0) <= 60, `a flood of 500 got ${codes.ok} answers`);
    // Every refusal before the flood error was answered (the send buffer holds them all).
    assert.equal(codes['rate-limited'], 200, JSON.stringify(codes));
    assert.ok(x.errors.some((e) => e.code === 'flood'), JSON.stringify(x.errors));
    assert.equal(results.floodDisconnect, 'io server disconnect');
    assert.deepEqual(o1.errors, [], 'the observers got no error of the flood');

    // A 2 MB chat over WebSocket: more than the largest message; the connection is closed.
    const big = await rawClient(base);
    clients.push(big);
    const closed = new Promise((r) => big.once('disconnect', r));
    big.emit('chat:send', { text: 'y'.repeat(2 << 20) });
    results.bigClosed = await Promise.race([closed, sleep(5000).then(() => 'still open')]);
    assert.notEqual(results.bigClosed, 'still open');

    // Broken framing on the engine's WebSocket: the connection is closed, nothing else.
    const { default: WebSocketImpl } = await import('ws');
    const ws = new WebSocketImpl(`ws://127.0.0.1:${gw.http}/socket.io/?EIO=4&transport=websocket`);
    await new Promise((r) => { ws.onopen = r; });
    const wsClosed = new Promise((r) => { ws.onclose = () => r('closed'); });
    ws.send('40');
    ws.send('42["chat:send",{"text":');
    ws.send('\u0000\u0001garbage');
    results.garbage = await Promise.race([wsClosed, sleep(5000).then(() => 'still open')]);
    assert.equal(results.garbage, 'closed');

    // The room played on: Ann and Bob still see each other and their frames advanced; the
    // observers still get events.
    await waitSees(ann, [bob], 5000);
    await waitSees(bob, [ann], 5000);
    await sleep(2000);
    const after = [await frames(ann), await frames(bob)];
    const secs = (Date.now() - t0) / 1000;
    console.log('hostile', JSON.stringify({ results, before, after, secs }));
    for (const [i, p] of [ann, bob].entries()) {
      const fps = (Math.max(...after[i]) - Math.max(...before[i])) / secs;
      assert.ok(fps >= 20, `${p.name} kept decoding: ${before[i]} -> ${after[i]} frames in ${secs} s`);
    }
    assert.equal((await ask(o2, 'presence', { seq: 1, muted: true })).ok, true);
    for (const p of [ann, bob]) await p.context.close();
  } finally {
    for (const c of clients) c.close();
    await browser.close();
    gw.stop();
  }
});

/// Starts coturn on free loopback ports with `secret` (TURN REST, use-auth-secret).
async function startCoturn(secret) {
  const { spawn } = await import('node:child_process');
  const { freePort } = await import('./lib.mjs');
  const { tmpdir } = await import('node:os');
  const port = await freePort();
  const min = 40000 + Math.floor(Math.random() * 10000);
  const p = spawn('turnserver', ['-n', '--listening-ip=127.0.0.1', `--listening-port=${port}`, '--relay-ip=127.0.0.1',
    `--min-port=${min}`, `--max-port=${min + 200}`, '--use-auth-secret', `--static-auth-secret=${secret}`, '--realm=streamgate.test',
    '--no-tls', '--no-dtls', '--no-cli', '--allow-loopback-peers', '--no-multicast-peers', '--log-file=stdout', '--simple-log', '-v', `--pidfile=${join(tmpdir(), `turn-${port}.pid`)}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  p.stdout.on('data', (d) => { log += d; });
  p.stderr.on('data', (d) => { log += d; });
  await sleep(800);
  return { port, stop: () => p.kill('SIGTERM'), log: () => log };
}

/// The candidate types of the selected pair of each of `p`'s peer connections.
const pairs = (p) => p.page.evaluate(async () => {
  const out = {};
  for (const [name, pc] of [['publisher', window.__room.publisher()?.pc], ['subscriber', window.__room.subscriber()?.pc]]) {
    if (!pc) continue;
    const st = await pc.getStats();
    let pair = null;
    st.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = st.get(s.selectedCandidatePairId); });
    out[name] = pair ? st.get(pair.localCandidateId)?.candidateType : null;
  }
  return out;
});

test('TURN: relay-only participants send through coturn with the credentials the gateway minted; a wrong secret shows an error', { timeout: 180000 }, async () => {
  const { writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const turn = await startCoturn('right-secret');
  const browser = await launchChromium({ camera: true });
  const conf = (secret) => {
    const f = join(tmpdir(), `sg-turn-${process.pid}-${secret}.toml`);
    writeFileSync(f, `[turn]\nurls = ["turn:127.0.0.1:${turn.port}?transport=udp"]\nsecret = "${secret}"\nttl_secs = 600\nice_transport_policy = "relay"\n`);
    return f;
  };
  let gw = await startGateway(['--config', conf('right-secret')]);
  try {
    const base = `http://127.0.0.1:${gw.http}`;
    const ann = await participant(browser, base, 1, 'Ann', '/room/turn1');
    const bob = await participant(browser, base, 2, 'Bob', '/room/turn1');
    await waitSees(ann, [bob], 15000);
    await waitSees(bob, [ann], 15000);
    const used = { ann: await pairs(ann), bob: await pairs(bob) };
    const allocations = (turn.log().match(/ALLOCATE processed, success/gi) || []).length;
    if (!allocations) console.log(turn.log().split('\n').filter((l) => /ALLOC|session|401/i.test(l)).slice(0, 20).join('\n'));
    console.log('TURN relay', JSON.stringify({ used, allocations }));
    for (const u of Object.values(used)) assert.deepEqual(u, { publisher: 'relay', subscriber: 'relay' });
    assert.ok(allocations >= 4, `coturn allocated ${allocations} relays`);
    for (const p of [ann, bob]) await p.context.close();
    gw.stop();

    // The gateway's secret is not coturn's: the credentials are refused, the page says so.
    gw = await startGateway(['--config', conf('wrong-secret')]);
    const cat = await participant(browser, `http://127.0.0.1:${gw.http}`, 3, 'Cat', '/room/turn2');
    const notices = await waitFor('a TURN error on the page', async () => {
      const n = (await look(cat)).notices;
      return n.includes('err_turn') && n;
    }, 15000);
    const text = await cat.page.textContent('[data-test=notice][data-code=err_turn]');
    console.log('wrong secret', JSON.stringify({ notices, text }));
    assert.match(text, /TURN/);
    await cat.context.close();
  } finally {
    await browser.close();
    gw.stop();
    turn.stop();
  }
});

test('HTTPS: the room over --tls-self-signed on a host name that is not loopback (the camera needs it); plain http there says why', { timeout: 120000 }, async () => {
  const { freePort } = await import('./lib.mjs');
  const port = await freePort();
  const gw = await startGateway(['--https', `127.0.0.1:${port}`, '--tls-self-signed']);
  // A name that resolves to this machine but is not loopback to the browser: a secure context
  // only over https.
  const browser = await launchChromium({ camera: true, args: ['--host-resolver-rules=MAP streamgate.test 127.0.0.1'] });
  try {
    const base = `https://streamgate.test:${port}`;
    const opts = { ignoreHTTPSErrors: true };
    const ann = await participant(browser, base, 1, 'Ann', '/room/s1', undefined, opts);
    const bob = await participant(browser, base, 2, 'Bob', '/room/s1', undefined, opts);
    await waitSees(ann, [bob]);
    await waitSees(bob, [ann]);
    const secure = await ann.page.evaluate(() => ({ secure: window.isSecureContext, protocol: location.protocol }));
    assert.deepEqual(secure, { secure: true, protocol: 'https:' });
    // The share URLs follow the page: wss:// and https://.
    await ann.page.click('[data-test=links]');
    const ws = await ann.page.inputValue('[data-protocol=wsflv] input');
    assert.equal(ws, `wss://streamgate.test:${port}/s1/ann.flv`);
    // Over plain http on that name the page cannot have the camera, and says to use https.
    const cat = await participant(browser, `http://streamgate.test:${gw.http}`, 3, 'Cat', '/room/s1');
    const n = await waitFor('the insecure-context notice', async () => {
      const l = await look(cat);
      return l.notices.includes('err_insecure') && l;
    }, 10000);
    console.log('https', JSON.stringify({ secure, ws, insecureNotices: n.notices }));
    // It still receives the others.
    await waitSees(cat, [ann, bob]);
    for (const p of [ann, bob, cat]) await p.context.close();
  } finally {
    await browser.close();
    gw.stop();
  }
});

test('reconnect: a participant whose socket drops for 2 s shows as reconnecting, not left, and comes back with the same stream', { timeout: 120000 }, async () => {
  const gw = await startGateway();
  const browser = await launchChromium({ camera: true });
  try {
    const base = `http://127.0.0.1:${gw.http}`;
    const ann = await participant(browser, base, 1, 'Ann', '/room/re1');
    const bob = await participant(browser, base, 2, 'Bob', '/room/re1');
    await waitSees(ann, [bob]);
    await waitSees(bob, [ann]);
    // Ann's page records every state of Bob's tile it shows.
    await ann.page.evaluate(() => {
      window.__bobStates = [];
      const record = () => {
        const s = document.querySelector('figure.tile[data-key="re1/bob"]')?.dataset.state ?? 'gone';
        if (window.__bobStates.at(-1) !== s) window.__bobStates.push(s);
      };
      record();
      setInterval(record, 50);
    });
    await bob.page.evaluate(() => window.__room.socket().disconnect());
    await sleep(2000);
    const during = await bob.page.evaluate(() => document.querySelector('[data-test=reconnecting]') !== null);
    await bob.page.evaluate(() => window.__room.socket().connect());
    await waitFor('Bob live again at Ann', async () => (await ann.page.evaluate(() => window.__bobStates)).at(-1) === 'live', 5000);
    const states = await ann.page.evaluate(() => window.__bobStates);
    console.log('reconnect', JSON.stringify({ states, bobShowedReconnecting: during }));
    assert.deepEqual(states, ['live', 'reconnecting', 'live']);
    assert.ok(during, "Bob's page said it was reconnecting");
    // Same stream, never gone; media went on; signalling works again (a chat).
    const api = await fetch(`${base}/api/v1/streams`).then((r) => r.json());
    assert.ok(api.streams.some((s) => s.key === 're1/bob'));
    await waitSees(ann, [bob], 5000);
    await bob.page.fill('[data-test=chat-input]', 'back');
    await bob.page.click('[data-test=chat-send]');
    await waitFor('the chat after the resume', async () => (await look(ann)).chat.includes('back'), 5000);
    for (const p of [ann, bob]) await p.context.close();
  } finally {
    await browser.close();
    gw.stop();
  }
});
