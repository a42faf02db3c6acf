//! Segment files: a magic, then frames, each one age ciphertext with a
//! small clear header and a checksum.
//!
//! ```text
//! segment = "HLRSEG01" frame*
//! frame   = kind:u8 seq:u64 chain:[32] tag:[16] len:u32 ciphertext:[len] sum:[32]
//! sum     = SHA-256(kind ‖ seq ‖ chain ‖ tag ‖ len ‖ ciphertext)
//! ```
//!
//! `kind` is 1 for an entry, 2 for a checkpoint; `seq` the entry's number
//! (a checkpoint's: the last entry it covers); `chain` the chain value
//! after that entry; `tag` the entry's deduplication tag (zero for a
//! checkpoint). The checksum lets a writer without the secret key tell a
//! whole frame from a torn one.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::chain::Hash;

pub(crate) const MAGIC: &[u8; 8] = b"HLRSEG01";
const HEADER: usize = 1 + 8 + 32 + 16 + 4;
const SUM: usize = 32;
/// No frame is larger (an entry is a message; files are blobs).
const MAX_CIPHERTEXT: u32 = 64 << 20;

pub(crate) const ENTRY: u8 = 1;
pub(crate) const CHECKPOINT: u8 = 2;

#[derive(Clone, Debug)]
pub(crate) struct Frame {
    pub kind: u8,
    pub seq: u64,
    pub chain: Hash,
    pub tag: [u8; 16],
    pub ciphertext: Vec<u8>,
}

pub(crate) fn encode(f: &Frame, out: &mut Vec<u8>) {
    let start = out.len();
    out.push(f.kind);
    out.extend_from_slice(&f.seq.to_be_bytes());
    out.extend_from_slice(&f.chain);
    out.extend_from_slice(&f.tag);
    out.extend_from_slice(&(f.ciphertext.len() as u32).to_be_bytes());
    out.extend_from_slice(&f.ciphertext);
    let sum: [u8; 32] = Sha256::digest(&out[start..]).into();
    out.extend_from_slice(&sum);
}

/// How a segment's bytes end.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// The last frame ends at the end of the file.
    Clean,
    /// From this offset on, a frame was being written when the writer
    /// stopped: incomplete, or complete but failing its checksum with
    /// nothing but zeros after it (a file system that grew the file before
    /// the data reached it). Never acknowledged; discarded on open.
    Torn(u64),
}

/// A segment's frames, and how it ends. A frame that fails its checksum
/// with data after it is corruption, not a torn write: an error.
pub(crate) fn scan(path: &Path) -> Result<(Vec<Frame>, Tail), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

pub(crate) fn parse(bytes: &[u8]) -> Result<(Vec<Frame>, Tail), String> {
    if bytes.len() < MAGIC.len() {
        // Torn while the segment was being created.
        return if MAGIC.starts_with(bytes) || bytes.iter().all(|b| *b == 0) {
            Ok((Vec::new(), Tail::Torn(0)))
        } else {
            Err("not a records segment".into())
        };
    }
    if &bytes[..8] != MAGIC {
        return Err("not a records segment".into());
    }
    let mut frames = Vec::new();
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < HEADER {
            return Ok((frames, Tail::Torn(at as u64)));
        }
        let kind = rest[0];
        let len = u32::from_be_bytes(rest[57..61].try_into().unwrap());
        let header_ok = (kind == ENTRY || kind == CHECKPOINT) && len <= MAX_CIPHERTEXT;
        let end = HEADER + len as usize + SUM;
        if header_ok && rest.len() < end {
            return Ok((frames, Tail::Torn(at as u64)));
        }
        let whole = header_ok && {
            let sum: [u8; 32] = Sha256::digest(&rest[..end - SUM]).into();
            sum[..] == rest[end - SUM..end]
        };
        if !whole {
            let after = if header_ok { end } else { HEADER };
            return if rest[after.min(rest.len())..].iter().all(|b| *b == 0) {
                Ok((frames, Tail::Torn(at as u64)))
            } else {
                Err(format!(
                    "frame at offset {at} is damaged and data follows it"
                ))
            };
        }
        frames.push(Frame {
            kind,
            seq: u64::from_be_bytes(rest[1..9].try_into().unwrap()),
            chain: rest[9..41].try_into().unwrap(),
            tag: rest[41..57].try_into().unwrap(),
            ciphertext: rest[HEADER..end - SUM].to_vec(),
        });
        at += end;
    }
    Ok((frames, Tail::Clean))
}

/// Segment file name: its number (1, 2, ...), zero-padded so names sort.
pub(crate) fn name(index: u64) -> String {
    format!("{index:020}.seg")
}

/// A segment file's number.
pub(crate) fn index(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_suffix(".seg")?
        .parse()
        .ok()
}

/// The segment files of `dir`, in order.
pub(crate) fn list(dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(format!("reading {}: {e}", dir.display())),
    };
    for entry in rd {
        let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let n = entry.file_name();
        let n = n.to_string_lossy();
        if n.len() == 24 && n.ends_with(".seg") && n[..20].bytes().all(|b| b.is_ascii_digit()) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}
