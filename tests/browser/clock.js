// The burnt-in clock of the test pages (the block barcode of tests/tools/clock_publisher.py):
// 8x6 blocks, the Unix time in ms modulo 2^40 (40 bits, most significant first), then the XOR
// of those 5 bytes. whip.html and sfu.html draw it, latency.html and sfu.html read it back.

// Draws the clock, `offsetMs` behind the wall clock (tests tell publishers apart by it), in
// blocks of bw x bh pixels from the canvas's top-left corner.
function drawClock(ctx, bw, bh, offsetMs = 0) {
  let ms = (Date.now() - offsetMs) % 2 ** 40;
  const bytes = [];
  for (let i = 4; i >= 0; i--) { bytes[i] = ms % 256; ms = Math.floor(ms / 256); }
  bytes.push(bytes[0] ^ bytes[1] ^ bytes[2] ^ bytes[3] ^ bytes[4]);
  for (let bit = 0; bit < 48; bit++) {
    const on = (bytes[bit >> 3] >> (7 - (bit & 7))) & 1;
    ctx.fillStyle = on ? '#ebebeb' : '#101010';
    ctx.fillRect((bit % 8) * bw, Math.floor(bit / 8) * bh, bw, bh);
  }
}

// Reads the clock off a video's current frame, drawn on `ctx` (a 320x240 canvas): the time
// it carries in ms modulo 2^40, or null when the check byte does not match.
function readClock(ctx, video) {
  ctx.drawImage(video, 0, 0, 320, 240);
  const img = ctx.getImageData(0, 0, 320, 240).data;
  const bits = [];
  for (let r = 0; r < 6; r++) {
    for (let c = 0; c < 8; c++) {
      let sum = 0;
      for (let dy = -5; dy < 5; dy++) {
        for (let dx = -5; dx < 5; dx++) {
          const x = c * 40 + 20 + dx, y = r * 40 + 20 + dy;
          sum += img[(y * 320 + x) * 4];
        }
      }
      bits.push(sum / 100 > 128 ? 1 : 0);
    }
  }
  const bytes = [];
  for (let i = 0; i < 6; i++) {
    let b = 0;
    for (let j = 0; j < 8; j++) b = (b << 1) | bits[i * 8 + j];
    bytes.push(b);
  }
  if ((bytes[0] ^ bytes[1] ^ bytes[2] ^ bytes[3] ^ bytes[4]) !== bytes[5]) return null;
  let ms = 0;
  for (let i = 0; i < 5; i++) ms = ms * 256 + bytes[i];
  return ms;
}

// How far `ms` (a clock read back) is behind the wall clock now, modulo 2^40.
function behind(ms) {
  const mod = 2 ** 40;
  return ((Date.now() % mod) - ms + mod) % mod;
}
