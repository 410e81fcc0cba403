// Captures of a live stream (HTTP-FLV with curl, RTMP with FFmpeg) and the checks the WebRTC
// tests apply to them with ffprobe.
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { root } from './lib.mjs';

/// What a viewer sees (tests/tools/picture_check.py): every frame decoded and judged.
export function picture(file) {
  return JSON.parse(execFileSync('python3', [join(root, 'tests', 'tools', 'picture_check.py'), file], { maxBuffer: 16 << 20 }));
}

/// The picture is not flat (grey, black) in any frame; with `clock`, the publisher's clock
/// (whip.html source=pattern) reads back from nearly every frame and moves on with the capture.
export function assertPicture(file, label, { clock = false, minSpanMs = 0 } = {}) {
  const p = picture(file);
  console.log(`${label} picture`, JSON.stringify(p));
  assert.equal(p.flat_frames, 0, `${label}: ${p.flat_frames} of ${p.frames} frames are flat (grey or black)`);
  assert.ok(p.luma_stddev >= 20, `${label}: a flat picture (luma stddev ${p.luma_stddev})`);
  if (clock) {
    assert.ok(p.clocks >= p.frames * 0.9, `${label}: the clock reads back in only ${p.clocks} of ${p.frames} frames`);
    assert.ok(p.increasing, `${label}: the clock went backwards`);
    assert.ok(p.span_ms >= minSpanMs, `${label}: the clock covers only ${p.span_ms} ms (a frozen picture)`);
  }
  return p;
}

export function run(cmd, args) {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => { err += d; });
    p.on('close', (code) => resolve({ code, err }));
  });
}

export const captureHttp = (url, secs, file) => run('curl', ['-s', '-m', String(secs), '-o', file, url]);
export const captureRtmp = (url, secs, file) => run('ffmpeg', ['-v', 'error', '-y', '-i', url, '-t', String(secs), '-c', 'copy', '-f', 'flv', file]);

export function probe(file) {
  const out = execFileSync('ffprobe', ['-v', 'error', '-show_streams', '-show_packets', '-of', 'json', file], { maxBuffer: 64 << 20 });
  return JSON.parse(out);
}

/// Checks a capture: H.264 + AAC, frame rate, monotonic DTS, both tracks start together, and
/// FFmpeg decodes it without an error.
export async function judge(file, label, { minSpan = 8, clock = false } = {}) {
  const p = probe(file);
  const codecs = p.streams.map((s) => s.codec_name).sort();
  assert.deepEqual(codecs, ['aac', 'h264'], `${label}: codecs ${codecs}`);
  const v = p.packets.filter((x) => x.codec_type === 'video');
  const a = p.packets.filter((x) => x.codec_type === 'audio');
  assert.ok(v.length && a.length, `${label}: ${v.length} video, ${a.length} audio packets`);
  assert.ok(v[0].flags.includes('K'), `${label}: first video packet is not a keyframe`);
  for (const t of [v, a]) {
    for (let i = 1; i < t.length; i++) assert.ok(Number(t[i].dts_time) >= Number(t[i - 1].dts_time), `${label}: DTS went backwards at ${i}`);
  }
  const span = Number(v.at(-1).dts_time) - Number(v[0].dts_time);
  const fps = (v.length - 1) / span;
  // Signed: positive when audio starts after video.
  const startGap = Number(a[0].pts_time) - Number(v[0].pts_time);
  // Decode everything; the null muxer's own complaints (it rounds browser frame times, which are
  // not on a fixed grid, to 1/fps) are not decode errors.
  const dec = await run('ffmpeg', ['-v', 'error', '-i', file, '-f', 'null', '-']);
  // FFmpeg folds a repeated line into "Last message repeated N times": that goes with the line.
  let dropped = false;
  dec.err = dec.err.split('\n').filter((l) => {
    const keep = l && !l.startsWith('[null @') && !(dropped && /^\s*Last message repeated \d+ times/.test(l));
    if (l) dropped = !keep;
    return keep;
  }).join('\n');
  const r = { label, video: v.length, audio: a.length, span: span.toFixed(2), fps: fps.toFixed(1), startGapMs: Math.round(startGap * 1000), decodeErrors: dec.err.trim() };
  console.log(JSON.stringify(r));
  assert.ok(span >= minSpan, `${label}: only ${span.toFixed(1)} s of video`);
  assert.ok(fps >= 15, `${label}: ${fps.toFixed(1)} fps`);
  // These captures join mid-stream: the hub's GOP cache starts both tracks at the keyframe.
  assert.ok(Math.abs(startGap) <= 0.1, `${label}: audio and video start ${Math.round(startGap * 1000)} ms apart`);
  assert.equal(dec.err.trim(), '', `${label}: FFmpeg decode errors`);
  assertPicture(file, label, { clock, minSpanMs: (minSpan - 1) * 1000 });
  return r;
}

