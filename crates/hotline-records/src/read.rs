//! The reading side: the whole archive decrypted with the records
//! office's identity, every chain value and checkpoint checked on the way.
//! It only reads, so it may run beside the archiver: a frame still being
//! written is not yet there for it.

use std::path::Path;

use ed25519_dalek::VerifyingKey;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::archive::{blob_name, read_meta, BLOBS, SEGMENTS};
use crate::canonical::hex;
use crate::chain::{self, Checkpoint, Hash};
use crate::entry::fields;
use crate::segment::{self, Tail, CHECKPOINT};
use crate::Error;

/// One decrypted entry with its hashes.
#[derive(Clone, Debug)]
pub struct Record {
    pub seq: u64,
    /// The chain value after this entry.
    pub chain: Hash,
    /// The entry, as stored.
    pub entry: Value,
    pub line_tag: Hash,
    pub ts: i64,
    pub body: Hash,
}

impl Record {
    pub fn room_id(&self) -> &str {
        self.entry["room_id"].as_str().unwrap_or_default()
    }
}

/// A decrypted archive.
pub struct Contents {
    pub archive_id: [u8; 16],
    pub checkpoint_key: VerifyingKey,
    pub records: Vec<Record>,
    pub checkpoints: Vec<Checkpoint>,
}

fn open_frame(identity: &age::x25519::Identity, ciphertext: &[u8]) -> Result<Vec<u8>, Error> {
    age::decrypt(identity, ciphertext).map_err(|e| Error::Crypto(e.to_string()))
}

/// Decrypts and checks the archive in `dir`.
pub fn read_archive(dir: &Path, identity: &age::x25519::Identity) -> Result<Contents, Error> {
    let meta = read_meta(dir)?;
    let checkpoint_key = crate::keys::parse_verify_key(&meta.checkpoint_key)?;
    let archive_id = meta.archive_id;
    let paths = segment::list(&dir.join(SEGMENTS)).map_err(Error::Format)?;
    let mut chain = chain::genesis(&archive_id);
    let mut records: Vec<Record> = Vec::new();
    let mut checkpoints = Vec::new();
    let damaged = |what: String| Error::Format(format!("archive damaged: {what}"));
    for (i, path) in paths.iter().enumerate() {
        let (frames, tail) = segment::scan(path).map_err(Error::Format)?;
        if matches!(tail, Tail::Torn(_)) && i + 1 != paths.len() {
            return Err(damaged(format!("{} ends in a torn frame", path.display())));
        }
        for f in frames {
            let plain = open_frame(identity, &f.ciphertext)?;
            let v: Value = serde_json::from_slice(&plain)
                .map_err(|e| damaged(format!("frame for entry {}: {e}", f.seq)))?;
            let last = records.len() as u64;
            if f.kind == CHECKPOINT {
                let cp = Checkpoint::from_json(&v)
                    .ok_or_else(|| damaged(format!("checkpoint after entry {last} unreadable")))?;
                if cp.seq != last || cp.chain != chain || f.seq != last {
                    return Err(damaged(format!(
                        "checkpoint {} does not match entry {last}",
                        cp.number
                    )));
                }
                if !cp.verifies(&checkpoint_key) {
                    return Err(damaged(format!(
                        "checkpoint {}: signature does not verify",
                        cp.number
                    )));
                }
                checkpoints.push(cp);
                continue;
            }
            let seq = last + 1;
            let fl = fields(&v).ok_or_else(|| damaged(format!("entry {seq} malformed")))?;
            if fl.seq != seq || f.seq != seq {
                return Err(damaged(format!(
                    "entry {} where entry {seq} belongs",
                    fl.seq
                )));
            }
            if fl.prev != hex(&chain) {
                return Err(damaged(format!("entry {seq} does not follow entry {last}")));
            }
            let line_tag = chain::line_tag(&archive_id, fl.room_id);
            let ts = fl.ts;
            let body = chain::body_hash(&v);
            chain = chain::link(&chain, &chain::digest(seq, &line_tag, ts, &body));
            if chain != f.chain {
                return Err(damaged(format!(
                    "entry {seq}: hash does not match its content"
                )));
            }
            records.push(Record {
                seq,
                chain,
                entry: v,
                line_tag,
                ts,
                body,
            });
        }
    }
    Ok(Contents {
        archive_id,
        checkpoint_key,
        records,
        checkpoints,
    })
}

/// The decrypted attachment of entry `seq`, checked against its entry.
pub fn read_attachment(
    dir: &Path,
    identity: &age::x25519::Identity,
    record: &Record,
) -> Result<Option<Vec<u8>>, Error> {
    let Some(a) = record.entry.get("attachment") else {
        return Ok(None);
    };
    let size = a["size"].as_u64().unwrap_or(0) as usize;
    let path = dir.join(BLOBS).join(blob_name(record.seq));
    let ciphertext = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let mut bytes = open_frame(identity, &ciphertext)?;
    if bytes.len() < size {
        return Err(Error::Format(format!(
            "archive damaged: entry {}'s attachment is short",
            record.seq
        )));
    }
    bytes.truncate(size);
    if a["sha256"].as_str() != Some(hex(&Sha256::digest(&bytes)).as_str()) {
        return Err(Error::Format(format!(
            "archive damaged: entry {}'s attachment does not match its hash",
            record.seq
        )));
    }
    Ok(Some(bytes))
}
