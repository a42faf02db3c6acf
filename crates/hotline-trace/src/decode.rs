//! Finding a watermark in a screenshot: the cell size (the screenshot may
//! have been scaled by any factor), the cells' phase, the tile's origin,
//! then the Reed-Solomon decode. See the crate doc for the why.

use crate::payload::{self, Payload, BITS, CODE_LEN, DATA_LEN, ECC_LEN, PAIRS, TILE};

/// Sub-bins per cell when folding: the cell phase is found to a quarter cell.
const R: usize = 4;
/// Bins per tile side.
const NB: usize = TILE * R;
/// Cell sizes searched on each level of the pyramid, in that level's pixels.
const S_MIN: f64 = 2.6;
const S_MAX: f64 = 8.0;
/// The coarse search's window (level pixels).
const WINDOW: usize = 192;
/// A pixel this much darker than the brightest near it is text, not
/// watermark (anti-aliased glyph edges included; JPEG's ringing around
/// glyphs is a few levels, so a lower bar would leave out a bubble's
/// pixels near every word).
const TEXT: f32 = 20.0;
/// How far from a pixel its background may be (the watermark's 4 levels,
/// and a little noise).
const PLATEAU: f32 = 5.0;
/// Text pixels are left out as they are, not widened: at a third of the
/// size, widening them would leave out most of a message's bubble.
const DILATE: usize = 0;
/// Parity bytes a decode must leave unused (erasures count one, errors
/// two): the margin that keeps a noise pattern from decoding.
pub const MARGIN: usize = 2;
/// Most bytes declared erased.
const MAX_ERASED: usize = ECC_LEN - MARGIN;
/// Fewest sync bits (of 8) that must read right before a decode is tried.
const MIN_SYNC: usize = 6;

/// A decoded watermark.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub payload: Payload,
    /// Codeword bytes the Reed-Solomon decoder found wrong (not erased).
    pub corrected: usize,
    /// The least certain bytes, declared erased before decoding.
    pub erased: usize,
    /// Of the tile's 200 bits, how many read as the decoded payload draws them.
    pub bits_agreeing: usize,
    /// The cell's side in the image's pixels (12 for an unscaled screenshot
    /// at device pixel ratio 1).
    pub cell_px: f64,
}

impl Detection {
    /// 0..1: the share of the tile's bits that read right, times what is
    /// left of the code's parity (half of it counted) after the decode.
    pub fn confidence(&self) -> f64 {
        let bits = self.bits_agreeing as f64 / BITS as f64;
        let spent = (self.erased + 2 * self.corrected) as f64 / ECC_LEN as f64;
        (bits * (1.0 - 0.5 * spent)).clamp(0.0, 1.0)
    }
}

/// A grey image as `f32`.
struct Grey {
    w: usize,
    h: usize,
    px: Vec<f32>,
}

impl Grey {
    fn from_image(img: &image::DynamicImage) -> Grey {
        let l = img.to_luma8();
        Grey {
            w: l.width() as usize,
            h: l.height() as usize,
            px: l.into_raw().into_iter().map(f32::from).collect(),
        }
    }

    /// Half the size, each pixel the mean of a 2x2 block.
    fn half(&self) -> Grey {
        let (w, h) = (self.w / 2, self.h / 2);
        let mut px = Vec::with_capacity(w * h);
        for y in 0..h {
            let (r0, r1) = (2 * y * self.w, (2 * y + 1) * self.w);
            for x in 0..w {
                px.push(
                    (self.px[r0 + 2 * x]
                        + self.px[r0 + 2 * x + 1]
                        + self.px[r1 + 2 * x]
                        + self.px[r1 + 2 * x + 1])
                        * 0.25,
                );
            }
        }
        Grey { w, h, px }
    }
}

/// One level of the pyramid, ready to fold: each pixel's darkness against
/// its local background (the mean of the pixels near it on its row that lie
/// on the same background), and whether it may count (not text, not a
/// dark area the overlay cannot darken).
struct Level {
    w: usize,
    h: usize,
    /// Level pixels per image pixel's inverse: image px = level px * factor.
    factor: f64,
    dark: Vec<f32>,
    valid: Vec<bool>,
}

impl Level {
    fn new(g: &Grey, factor: f64) -> Level {
        let (w, h) = (g.w, g.h);
        const RADIUS: usize = 12; // > 3 cells of S_MAX / 2
        let mut dark = vec![0f32; w * h];
        let mut text = vec![false; w * h];
        for y in 0..h {
            let row = &g.px[y * w..(y + 1) * w];
            let max = running_max(row, RADIUS);
            for x in 0..w {
                let i = y * w + x;
                text[i] = row[x] - max[x] < -TEXT || max[x] < 64.0;
            }
        }
        // Anti-aliased glyph edges and the worst of JPEG's ringing around text.
        let valid: Vec<bool> = dilate(&text, w, h, DILATE)
            .into_iter()
            .map(|t| !t)
            .collect();
        // Darkness against the mean of the pixels near it on its row that
        // lie on the same background, within PLATEAU levels of it (a pair's
        // cells differ by 4): the edge of a message bubble a few levels
        // lighter or darker than the page does not leak into the cells
        // beside it, and a mean is steadier than a maximum under JPEG noise.
        // Over several pairs the watermark's own mean is flat.
        for y in 0..h {
            let row = &g.px[y * w..(y + 1) * w];
            let ok = &valid[y * w..(y + 1) * w];
            for x in 0..w {
                let v = row[x];
                let (mut sum, mut n) = (0f32, 0u32);
                for k in x.saturating_sub(RADIUS)..(x + RADIUS + 1).min(w) {
                    let u = row[k];
                    if ok[k] && (u - v).abs() <= PLATEAU {
                        sum += u;
                        n += 1;
                    }
                }
                dark[y * w + x] = if n > 0 { v - sum / n as f32 } else { 0.0 };
            }
        }
        Level {
            w,
            h,
            factor,
            dark,
            valid,
        }
    }
}

fn running_max(row: &[f32], r: usize) -> Vec<f32> {
    let n = row.len();
    (0..n)
        .map(|x| {
            row[x.saturating_sub(r)..(x + r + 1).min(n)]
                .iter()
                .fold(f32::MIN, |a, b| a.max(*b))
        })
        .collect()
}

fn dilate(m: &[bool], w: usize, h: usize, r: usize) -> Vec<bool> {
    let mut a = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            if m[y * w + x] {
                for xx in x.saturating_sub(r)..(x + r + 1).min(w) {
                    a[y * w + xx] = true;
                }
            }
        }
    }
    let mut b = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            if a[y * w + x] {
                for yy in y.saturating_sub(r)..(y + r + 1).min(h) {
                    b[yy * w + x] = true;
                }
            }
        }
    }
    b
}

/// The region folded: `x0..x1`, `y0..y1`.
#[derive(Clone, Copy)]
struct Rect {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

/// The cell means of one fold, for every quarter-cell phase:
/// `cells[i * NB + j]` is the mean darkness of the cell whose top-left
/// corner is bin `(i, j)` (NaN when no pixel fell in it).
fn fold(level: &Level, r: Rect, s: f64) -> Vec<f32> {
    let mut sum = vec![0f32; NB * NB];
    let mut cnt = vec![0u32; NB * NB];
    let bin = |v: usize| ((v as f64 / s * R as f64) as usize) % NB;
    let bx: Vec<usize> = (r.x0..r.x1).map(bin).collect();
    for y in r.y0..r.y1 {
        let by = bin(y) * NB;
        let row = y * level.w;
        for (k, x) in (r.x0..r.x1).enumerate() {
            let i = row + x;
            if level.valid[i] {
                sum[by + bx[k]] += level.dark[i];
                cnt[by + bx[k]] += 1;
            }
        }
    }
    // R x R box sums, cyclic, separable.
    let mut hs = vec![0f32; NB * NB];
    let mut hc = vec![0u32; NB * NB];
    for i in 0..NB {
        for j in 0..NB {
            let (mut s_, mut c_) = (0f32, 0u32);
            for b in 0..R {
                s_ += sum[i * NB + (j + b) % NB];
                c_ += cnt[i * NB + (j + b) % NB];
            }
            hs[i * NB + j] = s_;
            hc[i * NB + j] = c_;
        }
    }
    let mut cells = vec![f32::NAN; NB * NB];
    for i in 0..NB {
        for j in 0..NB {
            let (mut s_, mut c_) = (0f32, 0u32);
            for a in 0..R {
                s_ += hs[((i + a) % NB) * NB + j];
                c_ += hc[((i + a) % NB) * NB + j];
            }
            if c_ > 0 {
                cells[i * NB + j] = s_ / c_ as f32;
            }
        }
    }
    cells
}

/// The pair contrast of a fold at its best phase: the mean |left - right|
/// over the tile's pairs. High only when the scale is right and the pairs
/// are aligned (every pair holds one dark and one light cell).
fn contrast(cells: &[f32]) -> (f32, usize, usize) {
    let mut best = (f32::MIN, 0, 0);
    for oy in 0..R {
        for ox in 0..2 * R {
            let (mut total, mut n) = (0f32, 0u32);
            for m in 0..TILE {
                let i = (oy + R * m) * NB;
                for k in 0..PAIRS {
                    let a = cells[i + (ox + 2 * R * k) % NB];
                    let b = cells[i + (ox + 2 * R * k + R) % NB];
                    if !a.is_nan() && !b.is_nan() {
                        total += (a - b).abs();
                        n += 1;
                    }
                }
            }
            if n * 2 >= (TILE * PAIRS) as u32 {
                let c = total / n as f32;
                if c > best.0 {
                    best = (c, ox, oy);
                }
            }
        }
    }
    best
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    score: f32,
    level: usize,
    s: f64,
}

/// [`decode`] of an encoded image (PNG or JPEG; the format is sniffed).
pub fn decode_bytes(bytes: &[u8]) -> Result<Option<Detection>, image::ImageError> {
    Ok(decode(&image::load_from_memory(bytes)?))
}

/// Finds and decodes the watermark in `img` on its own (the code's checks
/// alone), or `None`.
pub fn decode(img: &image::DynamicImage) -> Option<Detection> {
    soft_tiles(img, BLIND_SIZES).iter().find_map(read_tile)
}

/// Cell sizes read for the code's own decode, and for a match against the
/// issued tags (which can afford more: a wrong size only adds hypotheses).
pub const BLIND_SIZES: usize = 6;
pub const INFORMED_SIZES: usize = 12;

/// The tile as read at one cell size: every pair's soft bit, `soft[m][k]`
/// for row `m`, pair `k` of the fold (the tile's origin is still unknown:
/// any of its 200 pair positions). Positive: the pair's left cell is the
/// darker (a 1); 0 where no pixel fell.
#[derive(Clone, Debug)]
pub struct SoftTile {
    /// The cell's side in the image's pixels.
    pub cell_px: f64,
    pub soft: [[f32; PAIRS]; TILE],
}

/// The tile read at each of the (at most `sizes`) most likely cell sizes,
/// the likeliest first.
pub fn soft_tiles(img: &image::DynamicImage, sizes: usize) -> Vec<SoftTile> {
    let mut grey = Grey::from_image(img);
    let mut levels = Vec::new();
    let mut factor = 1.0;
    while grey.w.min(grey.h) >= 40 {
        levels.push(Level::new(&grey, factor));
        if grey.w.min(grey.h) < 80 {
            break;
        }
        grey = grey.half();
        factor *= 2.0;
    }
    // Coarse: on a window of each level, every cell size in steps small
    // enough that the fold stays in phase across the window.
    let mut candidates: Vec<Candidate> = Vec::new();
    for (li, level) in levels.iter().enumerate() {
        let win = best_window(level);
        let side = (win.x1 - win.x0).max(win.y1 - win.y0) as f64;
        let mut s = if li == 0 { S_MIN } else { 3.0 };
        while s <= S_MAX {
            let (score, _, _) = contrast(&fold(level, win, s));
            candidates.push(Candidate {
                score,
                level: li,
                s,
            });
            s *= 1.0 + 1.0 / (4.0 * side / s);
        }
    }
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut tried: Vec<f64> = Vec::new();
    let mut tiles = Vec::new();
    for c in candidates {
        let image_s = c.s * levels[c.level].factor;
        if tried.iter().any(|t| (t / image_s - 1.0).abs() < 0.03) {
            continue;
        }
        tried.push(image_s);
        // Read it on the finest level where the cell is at most S_MAX
        // pixels: the least blurred text to leave out.
        let level = levels
            .iter()
            .position(|l| image_s / l.factor <= S_MAX)
            .unwrap_or(c.level);
        if let Some(t) = refine(&levels[level], image_s / levels[level].factor) {
            tiles.push(t);
        }
        if tried.len() >= sizes {
            break;
        }
    }
    tiles
}

/// The window of at most WINDOW x WINDOW pixels, of 9 placed over the level,
/// with the most pixels that may count.
fn best_window(level: &Level) -> Rect {
    let (ww, wh) = (level.w.min(WINDOW), level.h.min(WINDOW));
    let mut best = (
        0usize,
        Rect {
            x0: 0,
            y0: 0,
            x1: ww,
            y1: wh,
        },
    );
    for a in 0..3 {
        for b in 0..3 {
            let x0 = (level.w - ww) * a / 2;
            let y0 = (level.h - wh) * b / 2;
            let r = Rect {
                x0,
                y0,
                x1: x0 + ww,
                y1: y0 + wh,
            };
            let n = (y0..y0 + wh)
                .step_by(2)
                .map(|y| {
                    level.valid[y * level.w + x0..y * level.w + x0 + ww]
                        .iter()
                        .filter(|v| **v)
                        .count()
                })
                .sum::<usize>();
            if n > best.0 {
                best = (n, r);
            }
        }
    }
    best.1
}

/// Fine: the cell size around `s` over the whole level, and the tile read
/// at it.
fn refine(level: &Level, s: f64) -> Option<SoftTile> {
    let all = Rect {
        x0: 0,
        y0: 0,
        x1: level.w,
        y1: level.h,
    };
    let side = level.w.max(level.h) as f64;
    let coarse = 1.0 / (4.0 * WINDOW.min(level.w.max(level.h)) as f64 / s);
    let fine = 1.0 / (4.0 * side / s);
    // 1.5 coarse steps either way (the coarse score is noisy on a small
    // image), at least 4 fine steps each way.
    let coarse = 1.5 * coarse;
    let steps = ((coarse / fine).ceil() as i64).clamp(4, 60);
    let mut best = (f32::MIN, s, Vec::new(), 0, 0);
    for k in -steps..=steps {
        let sk = s * (1.0 + coarse * k as f64 / steps as f64);
        let cells = fold(level, all, sk);
        let (score, ox, oy) = contrast(&cells);
        if score > best.0 {
            best = (score, sk, cells, ox, oy);
        }
    }
    let (_, s, cells, ox, oy) = best;
    if cells.is_empty() {
        return None;
    }
    // soft[m][k] > 0: the pair's left cell is the darker (a 1).
    let mut soft = [[0f32; PAIRS]; TILE];
    for (m, row) in soft.iter_mut().enumerate() {
        let i = (oy + R * m) * NB;
        for (k, v) in row.iter_mut().enumerate() {
            let a = cells[i + (ox + 2 * R * k) % NB];
            let b = cells[i + (ox + 2 * R * k + R) % NB];
            *v = if a.is_nan() || b.is_nan() { 0.0 } else { b - a };
        }
    }
    Some(SoftTile {
        cell_px: s * level.factor,
        soft,
    })
}

/// Decodes a read tile from every one of its 200 origins.
fn read_tile(tile: &SoftTile) -> Option<Detection> {
    let soft = &tile.soft;
    let white = payload::whitening();
    let rs = reed_solomon::Decoder::new(ECC_LEN);
    for m0 in 0..TILE {
        for k0 in 0..PAIRS {
            let bit = |i: usize| soft[(i / PAIRS + m0) % TILE][(i % PAIRS + k0) % PAIRS];
            let sync_ok = (0..8)
                .filter(|i| (bit(*i) > 0.0) ^ white[*i] == (payload::SYNC >> (7 - i) & 1 == 1))
                .count();
            if sync_ok < MIN_SYNC {
                continue;
            }
            let mut code = [0u8; CODE_LEN];
            let mut weakness = [(f32::MAX, 0u8); CODE_LEN];
            for (k, byte) in code.iter_mut().enumerate() {
                weakness[k].1 = k as u8;
                for j in 0..8 {
                    let i = 8 + k * 8 + j;
                    *byte = *byte << 1 | u8::from((bit(i) > 0.0) ^ white[i]);
                    weakness[k].0 = weakness[k].0.min(bit(i).abs());
                }
            }
            weakness.sort_by(|a, b| a.0.total_cmp(&b.0));
            // Hard decision first; then the least certain bytes declared
            // erased (an erasure costs the code one parity byte, an error two).
            for erased in (0..=MAX_ERASED).step_by(2) {
                let positions: Vec<u8> = weakness[..erased].iter().map(|w| w.1).collect();
                let Ok((fixed, _)) = rs.correct_err_count(&code, Some(&positions)) else {
                    continue;
                };
                let errors = (0..CODE_LEN)
                    .filter(|k| !positions.contains(&(*k as u8)) && fixed[*k] != code[*k])
                    .count();
                if erased + 2 * errors > ECC_LEN - MARGIN {
                    continue;
                }
                let Some(p) = payload::parse_data(&fixed[..DATA_LEN]) else {
                    continue;
                };
                let drawn = payload::tile_bits(&p);
                let bits_agreeing = (0..BITS).filter(|i| (bit(*i) > 0.0) == drawn[*i]).count();
                return Some(Detection {
                    payload: p,
                    corrected: errors,
                    erased,
                    bits_agreeing,
                    cell_px: tile.cell_px,
                });
            }
        }
    }
    None
}
