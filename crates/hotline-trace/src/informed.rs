//! Reading a watermark too damaged to decode on its own, against the tags
//! the server handed out: a crop to one message, scaled to a third and
//! recompressed leaves about 80 bits' worth of signal in the tile's 200,
//! fewer than the 96 the code carries, but plenty to tell which of the
//! server's own devices (and lines and minutes) drew it.
//!
//! **How.** The drawn bits are an affine function, over GF(2), of the
//! payload's bits (the CRC and the Reed-Solomon code are linear, the sync
//! and whitening constant). For each read tile and each of its 200
//! origins, every issued (tag, line) is first scored on the 64 bits that
//! do not depend on the minute (sync, tag, line); the best few go on to a
//! full search of their minutes: within the tag's window, every minute's
//! correlation with all 200 bits at once by a Walsh-Hadamard transform
//! over the minute's low bits. The score is the normalised correlation
//! `z = sum(y_i s_i) / sqrt(sum(y_i^2))` of the soft bits `y` (clipped at
//! their RMS, so no one pair weighs much) with the candidate's
//! signs `s`.
//!
//! **Never an innocent device.** For a candidate that did not draw the
//! image, its signs are pseudo-random against the image's soft bits, and
//! Hoeffding's inequality bounds `P(z >= t)` by `exp(-t^2 / 2)` whatever
//! the image. A match is reported only when `z` clears the threshold at
//! which that bound, times every hypothesis tried (read tiles x origins x
//! candidates x minutes), is below [`FALSE_MATCH`]: a chance below 1e-6 per
//! image of naming anyone who did not draw it.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::decode::SoftTile;
use crate::payload::{self, Payload, BITS, PAIRS, TILE};

/// The chance per image, bounded, of a match naming a device that did not
/// draw it.
pub const FALSE_MATCH: f64 = 1e-6;
/// Soft bits are clipped at this many times their RMS (measured on the
/// web app's leaks: 1 gives the highest scores, 0.5 and 2 lower).
pub(crate) const CLIP: f32 = 1.0;
/// Bits that do not depend on the minute: sync and the tag and line bytes.
const FIXED_BITS: usize = 8 + 7 * 8;
/// Walsh-Hadamard transforms the minute search may spend (each of
/// 2^CHUNK_BITS points): it bounds how many (tile, origin, candidate)
/// triples go on from the first stage, between KEEP_MIN and KEEP_MAX.
const BUDGET: f64 = 4096.0;
const KEEP_MIN: usize = 16;
const KEEP_MAX: usize = 2048;
/// Low minute bits searched by one Walsh-Hadamard transform.
const CHUNK_BITS: u32 = 12;

/// A tag the server handed out, with what it may have drawn.
#[derive(Clone, Debug)]
pub struct Issued {
    pub tag: u32,
    /// [`payload::line_hash`] of each line the tag's user is or was on, and
    /// 0 (a view without a line).
    pub lines: Vec<u32>,
    /// The minutes (since the epoch) it may have drawn: from the tag's
    /// issue to now.
    pub from_minute: i64,
    pub to_minute: i64,
}

/// A watermark matched to an issued tag.
#[derive(Clone, Debug, PartialEq)]
pub struct Match {
    pub payload: Payload,
    /// The minute since the epoch.
    pub minute: i64,
    /// The normalised correlation, and the threshold it cleared.
    pub z: f64,
    pub threshold: f64,
    /// Of the tile's 200 bits, how many read as the match draws them.
    pub bits_agreeing: usize,
    pub cell_px: f64,
}

impl Match {
    /// 0..1: the share of the tile's bits read as the match draws them,
    /// scaled by how far the score clears the threshold.
    pub fn confidence(&self) -> f64 {
        let bits = self.bits_agreeing as f64 / BITS as f64;
        (bits * (1.0 - (self.threshold / self.z).powi(2) * 0.5)).clamp(0.0, 1.0)
    }
}

/// The bits drawn for a payload, as signs (+1: the pair's left cell dark).
fn signs(p: &Payload) -> [f32; BITS] {
    let bits = payload::tile_bits(p);
    let mut s = [0f32; BITS];
    for (o, b) in s.iter_mut().zip(bits) {
        *o = if b { 1.0 } else { -1.0 };
    }
    s
}

/// The soft bits of `tile` read from origin (`m0`, `k0`), in bit order.
fn read_at(tile: &[[f32; PAIRS]; TILE], m0: usize, k0: usize) -> [f32; BITS] {
    let mut y = [0f32; BITS];
    for (i, v) in y.iter_mut().enumerate() {
        *v = tile[(i / PAIRS + m0) % TILE][(i % PAIRS + k0) % PAIRS];
    }
    y
}

/// The tile's soft bits scaled to unit RMS (over the pairs read) and
/// clipped at [`CLIP`].
fn normalised(tile: &SoftTile) -> [[f32; PAIRS]; TILE] {
    let n = tile
        .soft
        .iter()
        .flatten()
        .filter(|v| **v != 0.0)
        .count()
        .max(1);
    let rms = (tile.soft.iter().flatten().map(|v| v * v).sum::<f32>() / n as f32).sqrt();
    let mut out = tile.soft;
    if rms > 0.0 {
        for v in out.iter_mut().flatten() {
            *v = (*v / rms).clamp(-CLIP, CLIP);
        }
    }
    out
}

/// The threshold on `z` for `trials` hypotheses (see the module doc).
pub fn threshold(trials: f64) -> f64 {
    (2.0 * (trials.max(1.0) / FALSE_MATCH).ln()).sqrt()
}

/// Matches the read tiles against the issued tags; the best match above
/// the threshold, or `None`.
pub fn search(tiles: &[SoftTile], issued: &[Issued]) -> Option<Match> {
    best_match(tiles, issued).filter(|m| m.z >= m.threshold)
}

/// The best-scoring hypothesis, above the threshold or not.
fn best_match(tiles: &[SoftTile], issued: &[Issued]) -> Option<Match> {
    // The linear part of minute -> drawn bits: D_j for minute bit j.
    let zero = payload::tile_bits(&Payload {
        tag: 0,
        line: 0,
        minute: 0,
    });
    let d: Vec<[bool; BITS]> = (0..24)
        .map(|j| {
            let b = payload::tile_bits(&Payload {
                tag: 0,
                line: 0,
                minute: 1 << j,
            });
            let mut x = [false; BITS];
            for i in 0..BITS {
                x[i] = b[i] ^ zero[i];
            }
            x
        })
        .collect();
    // Every (tag, line), its minute-0 signs and window.
    let mut cands: Vec<(u32, u32, [f32; BITS], i64, i64)> = Vec::new();
    let mut minutes_total = 0f64;
    for t in issued {
        let (from, to) = (t.from_minute, t.to_minute.max(t.from_minute));
        let to = to.min(from + (1 << 24) - 1);
        for &line in &t.lines {
            let p = Payload {
                tag: t.tag,
                line,
                minute: 0,
            };
            cands.push((t.tag, line, signs(&p), from, to));
            minutes_total += (to - from + 1) as f64;
        }
    }
    if cands.is_empty() || tiles.is_empty() {
        return None;
    }
    let trials = tiles.len() as f64 * BITS as f64 * minutes_total;
    let threshold = threshold(trials);

    // Stage 1: the minute-independent bits, every tile, origin, candidate.
    let chunks = cands
        .iter()
        .map(|c| ((c.4 >> CHUNK_BITS) - (c.3 >> CHUNK_BITS) + 1) as f64)
        .sum::<f64>()
        / cands.len() as f64;
    let keep = ((BUDGET / chunks) as usize).clamp(KEEP_MIN, KEEP_MAX);
    let norm: Vec<[[f32; PAIRS]; TILE]> = tiles.iter().map(normalised).collect();
    // A min-heap of the best `keep`: (score, tile, m0, k0, candidate).
    let mut heap: BinaryHeap<Reverse<Ranked>> = BinaryHeap::with_capacity(keep + 1);
    for (ti, tile) in norm.iter().enumerate() {
        for m0 in 0..TILE {
            for k0 in 0..PAIRS {
                let y = read_at(tile, m0, k0);
                let e = y[..FIXED_BITS].iter().map(|v| v * v).sum::<f32>().sqrt();
                if e == 0.0 {
                    continue;
                }
                for (ci, c) in cands.iter().enumerate() {
                    let s: f32 = (0..FIXED_BITS).map(|i| y[i] * c.2[i]).sum::<f32>() / e;
                    if heap.len() < keep || heap.peek().is_some_and(|r| s > r.0 .0) {
                        heap.push(Reverse(Ranked(s, ti, m0, k0, ci)));
                        if heap.len() > keep {
                            heap.pop();
                        }
                    }
                }
            }
        }
    }

    // Stage 2: every minute of the best, with all 200 bits. Rows of the
    // low bits' map: for bit i, which of minute bits 0..CHUNK_BITS flip it.
    let mut row = [0usize; BITS];
    for (i, r) in row.iter_mut().enumerate() {
        for (j, dj) in d.iter().enumerate().take(CHUNK_BITS as usize) {
            if dj[i] {
                *r |= 1 << j;
            }
        }
    }
    let mut found: Option<Match> = None;
    for Reverse(Ranked(_, ti, m0, k0, ci)) in heap.into_sorted_vec() {
        let y = read_at(&norm[ti], m0, k0);
        let e = y.iter().map(|v| v * v).sum::<f32>().sqrt();
        if e == 0.0 {
            continue;
        }
        let (tag, line, ref base, from, to) = cands[ci];
        let size = 1usize << CHUNK_BITS;
        let mut spectrum = vec![0f32; size];
        for chunk in (from >> CHUNK_BITS)..=(to >> CHUNK_BITS) {
            let high = ((chunk << CHUNK_BITS) & 0xff_ffff) as u32;
            spectrum.iter_mut().for_each(|v| *v = 0.0);
            for i in 0..BITS {
                // The sign of bit i for minute `high` (low bits 0).
                let mut s = base[i];
                for (j, dj) in d.iter().enumerate().skip(CHUNK_BITS as usize) {
                    if high >> j & 1 == 1 && dj[i] {
                        s = -s;
                    }
                }
                spectrum[row[i]] += y[i] * s;
            }
            walsh_hadamard(&mut spectrum);
            for (low, score) in spectrum.iter().enumerate() {
                let minute = (chunk << CHUNK_BITS) | low as i64;
                if minute < from || minute > to {
                    continue;
                }
                let z = f64::from(*score / e);
                if found.as_ref().is_none_or(|f| z > f.z) {
                    let payload = Payload {
                        tag,
                        line,
                        minute: (minute & 0xff_ffff) as u32,
                    };
                    let drawn = signs(&payload);
                    let bits_agreeing = (0..BITS).filter(|i| y[*i] * drawn[*i] > 0.0).count();
                    found = Some(Match {
                        payload,
                        minute,
                        z,
                        threshold,
                        bits_agreeing,
                        cell_px: tiles[ti].cell_px,
                    });
                }
            }
        }
    }
    found
}

/// A first-stage score and what it scored: (score, tile, m0, k0, candidate),
/// ordered by score.
struct Ranked(f32, usize, usize, usize, usize);

impl PartialEq for Ranked {
    fn eq(&self, o: &Self) -> bool {
        self.0.total_cmp(&o.0) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ranked {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// In place: `v[l] = sum over u of v[u] (-1)^popcount(u & l)`.
fn walsh_hadamard(v: &mut [f32]) {
    let mut h = 1;
    while h < v.len() {
        for i in (0..v.len()).step_by(2 * h) {
            for j in i..i + h {
                let (a, b) = (v[j], v[j + h]);
                v[j] = a + b;
                v[j + h] = a - b;
            }
        }
        h *= 2;
    }
}
