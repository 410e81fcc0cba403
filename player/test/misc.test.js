import { describe, it, expect } from 'vitest';
import { playUrls, gridColumns } from '../src/room/urls.js';
import { quality } from '../src/room/quality.js';
import { mediaErrorKey, openLocalMedia } from '../src/room/media.js';
import { messages, pickLocale, translate } from '../src/i18n.js';
import { parseRoute } from '../src/router.js';

describe('share URLs', () => {
  it('gives every protocol of INTERFACE.md for a key', () => {
    const u = Object.fromEntries(playUrls('t1/ann', { protocol: 'https:', host: 'h:8443', hostname: 'h', rtmpPort: 1936 }).map((x) => [x.id, x.url]));
    expect(u).toEqual({
      watch: 'https://h:8443/watch/t1/ann',
      whep: 'https://h:8443/whep/t1/ann',
      rtmp: 'rtmp://h:1936/t1/ann',
      wsflv: 'wss://h:8443/t1/ann.flv',
      flv: 'https://h:8443/t1/ann.flv',
      llhls: 'https://h:8443/ll/t1/ann.m3u8',
      hls: 'https://h:8443/t1/ann.m3u8',
    });
    expect(playUrls('a/b', { protocol: 'http:', host: 'x', hostname: 'x' }).find((v) => v.id === 'wsflv').url).toBe('ws://x/a/b.flv');
  });
});

describe('grid', () => {
  it('columns for 1 to 12 tiles, phones at most 2', () => {
    expect([1, 2, 3, 4, 5, 9, 10, 12].map((n) => gridColumns(n, false))).toEqual([1, 2, 2, 2, 3, 3, 4, 4]);
    expect([1, 2, 3, 9].map((n) => gridColumns(n, true))).toEqual([1, 1, 2, 2]);
  });
});

describe('quality', () => {
  const s = (framesDecoded, packetsReceived, packetsLost = 0, jitter = 0.005) => ({ framesDecoded, packetsReceived, packetsLost, jitter });
  it('classifies from two snapshots', () => {
    expect(quality(null, s(1, 1), 2000)).toBe('unknown');
    expect(quality(s(0, 0), s(60, 200), 2000)).toBe('good');
    expect(quality(s(0, 0), s(60, 200, 8), 2000)).toBe('fair');
    expect(quality(s(0, 0), s(60, 200, 40), 2000)).toBe('poor');
    expect(quality(s(0, 0), s(10, 30), 2000)).toBe('poor');
    expect(quality(s(50, 200), s(50, 200), 3000)).toBe('lost');
  });
});

describe('local media', () => {
  it('names each refusal', () => {
    expect(mediaErrorKey({ name: 'NotAllowedError' })).toBe('err_permission');
    expect(mediaErrorKey({ name: 'NotFoundError' })).toBe('err_nodevice');
    expect(mediaErrorKey({ name: 'NotReadableError' })).toBe('err_busy');
    expect(mediaErrorKey({}, false)).toBe('err_insecure');
  });
  it('falls back to what exists, and does not ask again after a refusal', async () => {
    const asked = [];
    const md = (fail) => ({ getUserMedia: async (c) => { asked.push(c); const e = fail(c); if (e) throw e; return { c }; } });
    const audioOnly = await openLocalMedia(md((c) => (c.video ? { name: 'NotFoundError' } : null)), true);
    expect(audioOnly.stream.c).toEqual({ audio: true, video: false });
    expect(audioOnly.error).toBe('err_nodevice');
    asked.length = 0;
    const denied = await openLocalMedia(md(() => ({ name: 'NotAllowedError' })), true);
    expect(denied).toEqual({ stream: null, error: 'err_permission' });
    expect(asked).toHaveLength(1);
    expect((await openLocalMedia(md(() => null), false)).error).toBe('err_insecure');
  });
});

describe('i18n', () => {
  it('has every key in both languages with the same placeholders', () => {
    const keys = (l) => Object.keys(messages[l]).sort();
    expect(keys('zh')).toEqual(keys('en'));
    const vars = (s) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
    for (const k of keys('en')) expect(vars(messages.zh[k]), k).toEqual(vars(messages.en[k]));
  });
  it('picks the language', () => {
    expect(pickLocale(null, ['zh-CN', 'en'])).toBe('zh');
    expect(pickLocale(null, ['en-US'])).toBe('en');
    expect(pickLocale('en', ['zh-TW'])).toBe('en');
    expect(translate('en', 'people', { n: 2, max: 12 })).toBe('2 / 12');
    expect(translate('zh', 'nonexistent')).toBe('nonexistent');
  });
});

describe('routes', () => {
  it('parses the paths', () => {
    expect(parseRoute('/')).toEqual({ name: 'home' });
    expect(parseRoute('/room/t%201')).toEqual({ name: 'room', room: 't 1' });
    expect(parseRoute('/room/a/b')).toEqual({ name: 'notfound' });
    expect(parseRoute('/watch/live/cam%201')).toEqual({ name: 'watch', app: 'live', stream: 'cam 1' });
    expect(parseRoute('/watch/live')).toEqual({ name: 'notfound' });
  });
});
