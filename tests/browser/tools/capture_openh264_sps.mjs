// Captures the SPS that Chromium's OpenH264 encoder writes for WebRTC (kept in media/testdata/).
// Run from tests/browser: node tools/capture_openh264_sps.mjs (writes /tmp/cap/openh264_WxH.sps).
import { mkdirSync } from 'node:fs';
mkdirSync('/tmp/cap', { recursive: true });
import { chromium } from 'playwright-core';
import { writeFileSync } from 'node:fs';
const browser = await chromium.launch({ headless: true, executablePath: '/usr/bin/chromium', args: ['--no-sandbox','--disable-gpu','--use-fake-ui-for-media-stream','--use-fake-device-for-media-stream','--allow-loopback-in-peer-connection','--disable-background-networking','--disable-component-update','--disable-sync','--no-first-run'] });
const page = await browser.newPage();
const { createServer } = await import('node:http'); const srv = createServer((q, r) => { r.end('<html>ok</html>'); }); await new Promise((r) => srv.listen(0, '127.0.0.1', r)); await page.goto('http://127.0.0.1:' + srv.address().port + '/');
const result = await page.evaluate(async () => {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  const a = new RTCPeerConnection({ encodedInsertableStreams: true });
  const b = new RTCPeerConnection();
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  const tr = a.addTransceiver(stream.getVideoTracks()[0], { direction: 'sendonly' });
  const caps = RTCRtpSender.getCapabilities('video').codecs.filter((c) => c.mimeType === 'video/H264' && /packetization-mode=1/.test(c.sdpFmtpLine || ''));
  tr.setCodecPreferences(caps);
  const found = [];
  const { readable, writable } = tr.sender.createEncodedStreams();
  readable.pipeThrough(new TransformStream({ transform(frame, ctl) {
    if (frame.type === 'key') {
      const d = new Uint8Array(frame.data);
      found.push({ size: Array.from(d.slice(0, 200)), w: frame.getMetadata().width, h: frame.getMetadata().height });
    }
    ctl.enqueue(frame);
  }})).pipeTo(writable);
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
  await new Promise((r) => setTimeout(r, 8000));
  return found;
});
await browser.close(); srv.close();
// Extract SPS NALs (Annex B) from each keyframe.
const seen = new Set();
for (const k of result) {
  const d = k.size;
  const starts = [];
  for (let i = 0; i + 3 < d.length; i++) if (d[i] === 0 && d[i+1] === 0 && d[i+2] === 1) starts.push(i + 3);
  for (let j = 0; j < starts.length; j++) {
    const s = starts[j];
    if ((d[s] & 0x1f) !== 7) continue;
    let e = j + 1 < starts.length ? starts[j+1] - 3 : d.length;
    while (e > s && d[e-1] === 0) e--;
    const hex = Buffer.from(d.slice(s, e)).toString('hex');
    if (!seen.has(hex)) { seen.add(hex); console.log(k.w, k.h, hex); writeFileSync(`/tmp/cap/openh264_${k.w}x${k.h}.sps`, Buffer.from(d.slice(s, e))); }
  }
}
