// The screenshot watermark: the same payload, code and tile layout as the
// server's decoder (crates/hotline-trace/src/payload.rs; both check one test
// vector, web/test/watermark.test.mjs). `hotline trace IMAGE` reads it back.
//
//   payload  tag (32 bits, the device's, from GET /_hotline/v1/watermark),
//            line (24 bits: FNV-1a-32 of the room id, low 24 bits, never 0;
//            0 on a view without a line), minute (since the epoch, mod 2^24)
//   data     the 10 payload bytes big-endian, then CRC-16/CCITT-FALSE of them
//   code     Reed-Solomon over GF(256) (0x11d), 12 parity bytes, generator
//            roots alpha^0..alpha^11: 24 bytes
//   bits     8 sync bits (10110100), then the 24 bytes MSB first: 200 bits,
//            each XORed with xorshift32 (seed 0x9e3779b9) bit 0, one per step
//   tile     20 x 20 cells of 14 CSS px; bit i at row i/10, pair i%10; a
//            pair is two cells side by side, the left dark for a 1, the
//            right dark for a 0; dark = black at alpha 4/255

export const TILE = 20;
export const PAIRS = TILE / 2;
export const BITS = TILE * PAIRS;
export const CELL_CSS_PX = 14;
export const ALPHA = 4;
const SYNC = 0b1011_0100;
const ECC_LEN = 12;

export interface WatermarkPayload {
  tag: number;
  line: number;
  minute: number;
}

/** FNV-1a-32 of the room id's UTF-8, low 24 bits (never 0). */
export function lineHash(roomId: string): number {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(roomId)) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h & 0xffffff || 1;
}

/** Minutes since the epoch, modulo 2^24. */
export function minuteOf(ms: number): number {
  return Math.floor(ms / 60_000) % 0x1000000;
}

export function crc16(bytes: Uint8Array): number {
  let crc = 0xffff;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

// GF(256) with the primitive polynomial 0x11d.
const EXP = new Uint8Array(512);
const LOG = new Uint8Array(256);
{
  let x = 1;
  for (let i = 0; i < 255; i++) {
    EXP[i] = x;
    LOG[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= 0x11d;
  }
  for (let i = 255; i < 512; i++) EXP[i] = EXP[i - 255];
}
const gfMul = (a: number, b: number) => (a === 0 || b === 0 ? 0 : EXP[LOG[a] + LOG[b]]);

/** The generator polynomial (x - a^0)...(x - a^(n-1)), highest power first. */
function generator(n: number): number[] {
  let g = [1];
  for (let i = 0; i < n; i++) {
    const next = new Array(g.length + 1).fill(0);
    for (let j = 0; j < g.length; j++) {
      next[j] ^= g[j];
      next[j + 1] ^= gfMul(g[j], EXP[i]);
    }
    g = next;
  }
  return g;
}
const GEN = generator(ECC_LEN);

/** The systematic Reed-Solomon codeword: data, then the parity bytes. */
export function rsEncode(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.length + ECC_LEN);
  out.set(data);
  for (let i = 0; i < data.length; i++) {
    const coef = out[i];
    if (coef !== 0) for (let j = 1; j < GEN.length; j++) out[i + j] ^= gfMul(GEN[j], coef);
  }
  out.set(data);
  return out;
}

export function codeword(p: WatermarkPayload): Uint8Array {
  const d = new Uint8Array(12);
  d[0] = (p.tag >>> 24) & 0xff;
  d[1] = (p.tag >>> 16) & 0xff;
  d[2] = (p.tag >>> 8) & 0xff;
  d[3] = p.tag & 0xff;
  d[4] = (p.line >>> 16) & 0xff;
  d[5] = (p.line >>> 8) & 0xff;
  d[6] = p.line & 0xff;
  d[7] = (p.minute >>> 16) & 0xff;
  d[8] = (p.minute >>> 8) & 0xff;
  d[9] = p.minute & 0xff;
  const crc = crc16(d.subarray(0, 10));
  d[10] = crc >>> 8;
  d[11] = crc & 0xff;
  return rsEncode(d);
}

/** The tile's 200 drawn bits (whitened). */
export function tileBits(p: WatermarkPayload): boolean[] {
  const code = codeword(p);
  const bits: boolean[] = [];
  for (let i = 0; i < 8; i++) bits.push(((SYNC >> (7 - i)) & 1) === 1);
  for (const byte of code) for (let i = 0; i < 8; i++) bits.push(((byte >> (7 - i)) & 1) === 1);
  let s = 0x9e3779b9;
  return bits.map((b) => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return b !== ((s & 1) === 1);
  });
}

/** The tile's dark cells, [row][column]. */
export function tileCells(p: WatermarkPayload): boolean[][] {
  const bits = tileBits(p);
  const cells = Array.from({ length: TILE }, () => new Array<boolean>(TILE).fill(false));
  bits.forEach((b, i) => {
    const row = Math.floor(i / PAIRS);
    const pair = i % PAIRS;
    cells[row][2 * pair] = b;
    cells[row][2 * pair + 1] = !b;
  });
  return cells;
}

/**
 * The tile as a PNG data URL, `scale` device pixels per CSS pixel (drawn
 * at the screen's resolution so no resampling blurs the cells' edges).
 */
export function tileDataUrl(p: WatermarkPayload, scale: number): string {
  const cell = Math.max(1, Math.round(CELL_CSS_PX * scale));
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = cell * TILE;
  const ctx = canvas.getContext("2d")!;
  ctx.fillStyle = `rgba(0, 0, 0, ${ALPHA / 255})`;
  tileCells(p).forEach((row, y) =>
    row.forEach((dark, x) => {
      if (dark) ctx.fillRect(x * cell, y * cell, cell, cell);
    }),
  );
  return canvas.toDataURL("image/png");
}
