//! The watermark's payload and its tile layout: what the web app draws
//! (`web/src/lib/watermark.ts` builds the same bits; the shared test vector
//! below is checked on both sides).
//!
//! Payload (10 bytes, big-endian): the device's watermark tag (32 bits), the
//! line (24 bits of FNV-1a-32 of the room id; 0 on views without a line) and
//! the minute (minutes since the Unix epoch modulo 2^24, about 32 years).
//! Then a CRC-16/CCITT-FALSE over those 10 bytes, so that a word the
//! Reed-Solomon decoder "corrects" into a codeword by chance is still
//! refused, then 12 Reed-Solomon parity bytes: a 24-byte codeword that
//! corrects up to 6 wrong bytes.
//!
//! Bits: 8 sync bits, then the codeword's 192 bits (each byte most
//! significant bit first): 200 bits, each XORed with a fixed pseudo-random
//! sequence (so that runs of equal bytes draw no stripes), each drawn as a
//! horizontal pair of cells, the left one dark for a 1, the right one dark
//! for a 0 (Manchester): every pair has exactly one dark cell, so a bit is
//! read by comparing two neighbouring cells, whatever the background
//! behind them (white, a message bubble, the dark theme). The tile is 20
//! rows of 10 pairs, 20 x 20 cells, bit `i` at row `i / 10`, pair `i % 10`.

/// Cells per tile side.
pub const TILE: usize = 20;
/// Pairs per tile row.
pub const PAIRS: usize = TILE / 2;
/// Bits per tile.
pub const BITS: usize = TILE * PAIRS;
/// The cell's side in CSS pixels, as the web app draws it.
pub const CELL_CSS_PX: usize = 14;
/// How much a dark cell darkens (alpha of black, out of 255): 4 levels on
/// white, a PSNR of 10 log10(255^2 / 8) = 39.1 dB on a white page.
pub const ALPHA: u8 = 4;
/// Data bytes: payload and check.
pub const DATA_LEN: usize = 12;
/// Reed-Solomon parity bytes.
pub const ECC_LEN: usize = 12;
/// Codeword bytes.
pub const CODE_LEN: usize = DATA_LEN + ECC_LEN;
/// The sync bits, before whitening.
pub const SYNC: u8 = 0b1011_0100;

/// What a watermark says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    /// The viewing device's watermark tag (assigned by the server).
    pub tag: u32,
    /// [`line_hash`] of the room, 0 when the view shows no line.
    pub line: u32,
    /// Minutes since the epoch, modulo 2^24.
    pub minute: u32,
}

/// The 24-bit line number of a room id: FNV-1a-32 of its UTF-8, low 24 bits
/// (never 0: 0 means "no line").
pub fn line_hash(room_id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in room_id.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    match h & 0xff_ffff {
        0 => 1,
        x => x,
    }
}

/// The watermark's minute for a time in milliseconds since the epoch.
pub fn minute_of(ms: i64) -> u32 {
    ((ms.div_euclid(60_000)) & 0xff_ffff) as u32
}

/// The full minute (since the epoch) a 24-bit minute stands for: the latest
/// one not after `now_ms`.
pub fn full_minute(minute: u32, now_ms: i64) -> i64 {
    let now = now_ms.div_euclid(60_000);
    now - (now - i64::from(minute)).rem_euclid(1 << 24)
}

/// CRC-16/CCITT-FALSE (poly 0x1021, init 0xffff).
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xffff;
    for b in bytes {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The payload's 12 data bytes: payload, then its CRC.
pub fn data_bytes(p: &Payload) -> [u8; DATA_LEN] {
    let mut d = [0u8; DATA_LEN];
    d[0..4].copy_from_slice(&p.tag.to_be_bytes());
    d[4..7].copy_from_slice(&(p.line & 0xff_ffff).to_be_bytes()[1..]);
    d[7..10].copy_from_slice(&(p.minute & 0xff_ffff).to_be_bytes()[1..]);
    let crc = crc16(&d[..10]);
    d[10..12].copy_from_slice(&crc.to_be_bytes());
    d
}

/// The payload a checked data block holds, or `None` when its CRC fails.
pub fn parse_data(d: &[u8]) -> Option<Payload> {
    if d.len() != DATA_LEN || crc16(&d[..10]) != u16::from_be_bytes([d[10], d[11]]) {
        return None;
    }
    Some(Payload {
        tag: u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
        line: u32::from_be_bytes([0, d[4], d[5], d[6]]),
        minute: u32::from_be_bytes([0, d[7], d[8], d[9]]),
    })
}

/// The 24-byte codeword.
pub fn codeword(p: &Payload) -> [u8; CODE_LEN] {
    let enc = reed_solomon::Encoder::new(ECC_LEN).encode(&data_bytes(p));
    let mut out = [0u8; CODE_LEN];
    out.copy_from_slice(&enc[..]);
    out
}

/// The whitening sequence: xorshift32 from a fixed seed, one bit per step.
pub fn whitening() -> [bool; BITS] {
    let mut s: u32 = 0x9e37_79b9;
    let mut out = [false; BITS];
    for o in out.iter_mut() {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        *o = s & 1 == 1;
    }
    out
}

/// The 200 raw bits of a codeword (sync, then the bytes), before whitening.
pub fn raw_bits(code: &[u8; CODE_LEN]) -> [bool; BITS] {
    let mut bits = [false; BITS];
    for i in 0..8 {
        bits[i] = SYNC >> (7 - i) & 1 == 1;
    }
    for (k, byte) in code.iter().enumerate() {
        for i in 0..8 {
            bits[8 + k * 8 + i] = byte >> (7 - i) & 1 == 1;
        }
    }
    bits
}

/// The bits the tile draws (whitened), bit `i` at row `i / 10`, pair `i % 10`.
pub fn tile_bits(p: &Payload) -> [bool; BITS] {
    let mut bits = raw_bits(&codeword(p));
    for (b, w) in bits.iter_mut().zip(whitening()) {
        *b ^= w;
    }
    bits
}

/// The tile's dark cells, `[row][column]`.
pub fn tile_cells(p: &Payload) -> [[bool; TILE]; TILE] {
    let bits = tile_bits(p);
    let mut cells = [[false; TILE]; TILE];
    for (i, b) in bits.iter().enumerate() {
        let (row, pair) = (i / PAIRS, i % PAIRS);
        cells[row][2 * pair] = *b;
        cells[row][2 * pair + 1] = !*b;
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector `web/test/watermark.test.mjs` checks against
    /// `web/src/lib/watermark.ts`: both sides draw the same tile.
    pub const VECTOR: Payload = Payload {
        tag: 0xdead_beef,
        line: 0x12_3456,
        minute: 0xab_cdef,
    };

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn shared_test_vector_codeword_and_tile() {
        let code = codeword(&VECTOR);
        assert_eq!(hex(&code[..DATA_LEN]), "deadbeef123456abcdef4c64");
        assert_eq!(
            hex(&code),
            include_str!("../testdata/vector-codeword.txt").trim()
        );
        let rows: Vec<String> = tile_cells(&VECTOR)
            .iter()
            .map(|r| r.iter().map(|c| if *c { '#' } else { '.' }).collect())
            .collect();
        assert_eq!(
            rows.join("\n"),
            include_str!("../testdata/vector-tile.txt").trim()
        );
    }

    #[test]
    fn line_hash_is_fnv1a_low_24_bits() {
        // FNV-1a-32("a") = 0xe40c292c.
        assert_eq!(line_hash("a"), 0x0c_292c);
        assert_eq!(
            line_hash("!room:example.org"),
            line_hash("!room:example.org")
        );
    }

    #[test]
    fn crc16_is_ccitt_false() {
        // The catalogue's check value for CRC-16/CCITT-FALSE.
        assert_eq!(crc16(b"123456789"), 0x29b1);
    }

    #[test]
    fn crc_check_refuses_a_changed_payload() {
        let mut d = data_bytes(&VECTOR);
        assert_eq!(parse_data(&d), Some(VECTOR));
        d[3] ^= 1;
        assert_eq!(parse_data(&d), None);
    }

    #[test]
    fn full_minute_is_the_latest_one_not_after_now() {
        let now = 1_800_000_000_000;
        let m = minute_of(now - 5 * 60_000);
        assert_eq!(full_minute(m, now), now / 60_000 - 5);
    }

    #[test]
    fn every_pair_has_exactly_one_dark_cell() {
        for row in tile_cells(&VECTOR) {
            for p in 0..PAIRS {
                assert_ne!(row[2 * p], row[2 * p + 1]);
            }
        }
    }
}
