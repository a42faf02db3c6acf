//! Leak tracing of screenshots: the watermark the web app draws over every
//! view of a line, and its decoder. Pure functions over bytes and pixels:
//! no HTTP, no store (the `hotline trace` command resolves a decoded tag to
//! a device and a line number to a room through the service).
//!
//! **What is drawn.** [`payload`]: 80 bits (device tag, line, minute), a
//! CRC-16, 12 Reed-Solomon parity bytes, 8 sync bits: 200 bits, each a
//! horizontal pair of 14-CSS-pixel cells of which exactly one is darkened
//! by 4 levels out of 255 (black at alpha 4/255), in a tile of 20 x 20
//! cells (240 CSS pixels) repeated over the whole view.
//!
//! **Why so.** The view is mostly white, so the overlay can only darken;
//! darkening half the cells by 4 levels costs an MSE of 8, a PSNR of
//! 39 dB on a white page and more where text covers it (the 38 dB floor).
//! Cells must survive what a leak does to a screenshot: scaling to a third
//! leaves a 12-pixel cell 4 pixels wide, which is still a flat area to
//! JPEG at quality 50 (its 8x8 blocks keep a block's mean to 2 levels and
//! its lowest frequencies roughly); a crop to one message of 400 x 300
//! CSS pixels still holds more than one whole tile. Reading each bit as
//! the difference of two neighbouring cells (Manchester coding) makes the
//! background cancel: white, a message bubble, a dark theme.
//!
//! **How it is read** ([`decode::decode`]). Each pixel is taken against the
//! mean of the pixels near it on its row that lie on the same background
//! (within a few levels of it: a bubble's edge does not leak in), and
//! pixels of text (much darker than the brightest near them) are dropped. The image is folded onto the
//! tile's period: every pixel added to its position within the tile, at a
//! quarter-cell resolution, so all the tile's repetitions in the view add
//! up while text, which does not repeat with the tile, averages out. The
//! scale is unknown (untouched, halved, a third, anything between, a phone
//! screen at 3 device pixels per CSS pixel), so a pyramid of halved images
//! is searched for the cell size at which the fold shows the strongest pair
//! contrast (a fold at a wrong size smears the cells away), first on a
//! window, then refined over the whole image; the best phase of the same
//! fold aligns the pairs; the tile is read on the finest level where a cell
//! is at most 8 pixels. The tile's origin is then one of its 200 pair
//! positions: each is tried, its sync bits checked, its codeword decoded,
//! first as read, then with the least certain 2, 4, ... 10 bytes declared
//! erased (a cell no pixel fell in is least certain of all). Up to 6 cell
//! sizes are tried for the code alone, 12 for a match.
//!
//! **When the code alone is not enough** ([`informed`]). A crop to one
//! message of 400 x 300 CSS pixels, scaled to a third *and* recompressed at
//! quality 50 leaves 1.5 tiles of 4.6-pixel cells, a fifth of them under
//! text: each pair is read wrong 7-24% of the time (measured on the web
//! app's chat view), about 80 bits' worth of signal in the tile's 200, less
//! than the 96 the code carries (5 levels instead of 4 would fall below
//! the 38 dB floor). The server knows far fewer possibilities than that:
//! the tags it issued, each user's lines, the minutes since each tag's
//! issue. `hotline trace` matches the read tiles against those, with the
//! soft bits rather than decisions, and so reads every such leak of the
//! measured corpus.
//!
//! **Never an innocent device.** A decode is reported only when the
//! Reed-Solomon decode leaves 2 of its 12 parity bytes unused (erasures
//! count one, errors two), at least 6 of the 8 sync bits read right, the
//! CRC-16 of the corrected payload holds, and (in `hotline trace`) the tag
//! is one the server handed out. Noise passes the code with its margin at
//! one try with a chance below 2^-16, the CRC with 2^-16, and a tag must
//! still be one of the server's few thousand among 2^32: over the few
//! thousand tries a screenshot gets, below 1e-10. A match is reported only
//! when its score clears a threshold set by Hoeffding's bound and the
//! number of hypotheses tried: below 1e-6 per image.

pub mod decode;
pub mod informed;
pub mod payload;
pub mod tools;

pub use decode::{decode, decode_bytes, Detection};
pub use payload::{line_hash, minute_of, Payload};

#[cfg(test)]
mod tests;
