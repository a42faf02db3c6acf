//! The writing side: [`Archive`], which the archiver appends to with only
//! the records office's public recipient and its own checkpoint key.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::canonical::{canonical_json, hex, unhex};
use crate::chain::{self, Checkpoint, Hash};
use crate::entry::{entry_value, AttachmentRef, Kind, NewEntry};
use crate::segment::{self, Frame, Tail, CHECKPOINT, ENTRY};
use crate::Error;

/// What appending needs: no secret of the records office.
#[derive(Clone)]
pub struct ArchiveKeys {
    /// The records office's public key; every file is encrypted to it.
    pub recipient: age::x25519::Recipient,
    /// The archiver's own key, signing checkpoints.
    pub signing: SigningKey,
}

/// Tuning.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// A checkpoint after this many entries (and when the archive closes,
    /// and when it opens with entries not yet covered).
    pub checkpoint_every: u64,
    /// A new segment once the current one reaches this size.
    pub segment_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            checkpoint_every: 100,
            segment_bytes: 64 << 20,
        }
    }
}

/// The outcome of appending one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Written (durably) as this entry.
    Entry(u64),
    /// Already in the archive as this entry; nothing written.
    Duplicate(u64),
}

/// What the archive holds of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Absent,
    /// Only an `undecryptable` placeholder, this entry: retry when keys come.
    Undecryptable(u64),
    /// Archived (decrypted), this entry.
    Archived(u64),
}

pub(crate) const META_FILE: &str = "archive.json";
pub(crate) const SEGMENTS: &str = "segments";
pub(crate) const BLOBS: &str = "blobs";
const FORMAT: &str = "hotline-records/1";
/// Entries are padded to a multiple of this (their sizes leak less).
const ENTRY_PAD: usize = 256;
/// Attachments are padded to a multiple of this.
const BLOB_PAD: usize = 4096;

/// An archive open for appending. One per directory (a lock file keeps a
/// second writer out); readers (export) may run beside it.
pub struct Archive {
    dir: PathBuf,
    keys: ArchiveKeys,
    options: Options,
    archive_id: [u8; 16],
    index_key: [u8; 32],
    next_seq: u64,
    chain: Hash,
    tags: HashMap<[u8; 16], u64>,
    checkpoints: u64,
    last_checkpoint_seq: u64,
    segment: File,
    segment_index: u64,
    segment_len: u64,
    poisoned: bool,
    _lock: File,
}

/// The clear metadata file: public values only.
pub(crate) struct Meta {
    pub archive_id: [u8; 16],
    pub recipient: String,
    pub checkpoint_key: String,
}

pub(crate) fn read_meta(dir: &Path) -> Result<Meta, Error> {
    let path = dir.join(META_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let bad = || Error::Format(format!("{}: not a records archive", path.display()));
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(bad());
    }
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    Ok(Meta {
        archive_id: s("archive_id").and_then(|a| unhex(&a)).ok_or_else(bad)?,
        recipient: s("recipient").ok_or_else(bad)?,
        checkpoint_key: s("checkpoint_key").ok_or_else(bad)?,
    })
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// age ciphertext of `plain` padded with `pad` bytes of `fill`.
fn seal(
    recipient: &age::x25519::Recipient,
    plain: &[u8],
    pad: usize,
    fill: u8,
) -> Result<Vec<u8>, Error> {
    let mut padded = Vec::with_capacity(plain.len().div_ceil(pad).max(1) * pad);
    padded.extend_from_slice(plain);
    padded.resize(plain.len().div_ceil(pad).max(1) * pad, fill);
    age::encrypt(recipient, &padded).map_err(|e| Error::Crypto(e.to_string()))
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

impl Archive {
    /// Opens the archive in `dir`, creating it if `dir` holds none. A
    /// frame torn by a crash at the end of the last segment is cut off
    /// (it was never acknowledged); entries after the last checkpoint get
    /// one now.
    pub fn open(dir: &Path, keys: ArchiveKeys, options: Options) -> Result<Archive, Error> {
        for d in [dir.to_path_buf(), dir.join(SEGMENTS), dir.join(BLOBS)] {
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        if lock.try_lock().is_err() {
            return Err(Error::Locked(dir.to_path_buf()));
        }
        let recipient = keys.recipient.to_string();
        let checkpoint_key = crate::keys::verify_key_text(&keys.signing.verifying_key());
        let archive_id = if dir.join(META_FILE).exists() {
            let meta = read_meta(dir)?;
            if meta.recipient != recipient {
                return Err(Error::Key(format!(
                    "{} is encrypted to {}, not to {recipient}",
                    dir.display(),
                    meta.recipient
                )));
            }
            if meta.checkpoint_key != checkpoint_key {
                return Err(Error::Key(format!(
                    "{}'s checkpoints are signed by {}, not by this key ({checkpoint_key})",
                    dir.display(),
                    meta.checkpoint_key
                )));
            }
            meta.archive_id
        } else {
            let mut id = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut id);
            let text = serde_json::json!({
                "format": FORMAT,
                "archive_id": hex(&id),
                "recipient": recipient,
                "checkpoint_key": checkpoint_key,
            });
            let tmp = dir.join("archive.json.tmp");
            let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
            f.write_all(format!("{text:#}\n").as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| Error::io(&tmp, e))?;
            let meta = dir.join(META_FILE);
            std::fs::rename(&tmp, &meta).map_err(|e| Error::io(&meta, e))?;
            sync_dir(dir)?;
            id
        };
        let index_key: [u8; 32] = Sha256::new()
            .chain_update(b"hotline-records index key v1\0")
            .chain_update(keys.signing.to_bytes())
            .finalize()
            .into();

        let seg_dir = dir.join(SEGMENTS);
        let mut paths = segment::list(&seg_dir).map_err(Error::Format)?;
        let mut next_seq = 1;
        let mut chain = chain::genesis(&archive_id);
        let mut tags = HashMap::new();
        let mut checkpoints = 0;
        let mut last_checkpoint_seq = 0;
        for (i, path) in paths.iter().enumerate() {
            let (frames, tail) = segment::scan(path).map_err(Error::Format)?;
            if let Tail::Torn(at) = tail {
                if i + 1 != paths.len() {
                    return Err(Error::Format(format!(
                        "{}: damaged at offset {at}, and it is not the last segment",
                        path.display()
                    )));
                }
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::io(path, e))?;
                let keep = if at == 0 { 0 } else { at };
                f.set_len(keep)
                    .and_then(|_| {
                        if keep == 0 {
                            (&f).write_all(segment::MAGIC)?;
                        }
                        f.sync_all()
                    })
                    .map_err(|e| Error::io(path, e))?;
            }
            for f in frames {
                let expected = if f.kind == ENTRY {
                    next_seq
                } else {
                    next_seq - 1
                };
                if f.seq != expected {
                    return Err(Error::Format(format!(
                        "{}: frame for entry {} where entry {expected} belongs",
                        path.display(),
                        f.seq
                    )));
                }
                if f.kind == ENTRY {
                    tags.insert(f.tag, f.seq);
                    chain = f.chain;
                    next_seq += 1;
                } else if f.kind == CHECKPOINT {
                    checkpoints += 1;
                    last_checkpoint_seq = f.seq;
                }
            }
        }
        if paths.is_empty() {
            paths.push(Self::create_segment(&seg_dir, 1)?);
        }
        let last = paths.last().expect("one segment at least");
        let segment_index = segment::index(last).expect("listed segments have numbers");
        let segment = OpenOptions::new()
            .append(true)
            .open(last)
            .map_err(|e| Error::io(last, e))?;
        let segment_len = segment.metadata().map_err(|e| Error::io(last, e))?.len();
        let mut archive = Archive {
            dir: dir.to_path_buf(),
            keys,
            options,
            archive_id,
            index_key,
            next_seq,
            chain,
            tags,
            checkpoints,
            last_checkpoint_seq,
            segment,
            segment_index,
            segment_len,
            poisoned: false,
            _lock: lock,
        };
        archive.checkpoint()?;
        Ok(archive)
    }

    fn create_segment(seg_dir: &Path, index: u64) -> Result<PathBuf, Error> {
        let path = seg_dir.join(segment::name(index));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        f.write_all(segment::MAGIC)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(&path, e))?;
        sync_dir(seg_dir)?;
        Ok(path)
    }

    /// The archive's random id (public; it seeds the chain and line tags).
    pub fn archive_id(&self) -> [u8; 16] {
        self.archive_id
    }

    /// The number of entries, and the chain value after the last.
    pub fn head(&self) -> (u64, Hash) {
        (self.next_seq - 1, self.chain)
    }

    fn tag(&self, event_id: &str, kind: Kind) -> [u8; 16] {
        let class: &[u8] = if kind == Kind::Undecryptable {
            b"undecryptable"
        } else {
            b"final"
        };
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.index_key)
            .expect("HMAC takes any key length");
        mac.update(class);
        mac.update(b"\0");
        mac.update(event_id.as_bytes());
        mac.finalize().into_bytes()[..16].try_into().unwrap()
    }

    /// What the archive holds of `event_id`.
    pub fn status(&self, event_id: &str) -> Status {
        if let Some(s) = self.tags.get(&self.tag(event_id, Kind::Message)) {
            Status::Archived(*s)
        } else if let Some(s) = self.tags.get(&self.tag(event_id, Kind::Undecryptable)) {
            Status::Undecryptable(*s)
        } else {
            Status::Absent
        }
    }

    /// Appends one event; see [`Archive::append_all`].
    pub fn append(&mut self, entry: &NewEntry) -> Result<Appended, Error> {
        Ok(self.append_all(std::slice::from_ref(entry))?[0])
    }

    /// Appends events in order, one `fdatasync` for all: when this returns
    /// `Ok`, every entry it reports is durable. An event already archived
    /// (the same event id; an `undecryptable` placeholder and the decrypted
    /// entry count apart) is not written again. A decrypted entry of an
    /// event held as an `undecryptable` placeholder (earlier, or before it
    /// in the same batch) carries `"resolves": SEQ`, the placeholder's
    /// entry number. On `Err` nothing of the batch counts: the file is cut
    /// back to where it was, and the same batch may be appended again.
    pub fn append_all(&mut self, entries: &[NewEntry]) -> Result<Vec<Appended>, Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let now = now_ms();
        let mut out = Vec::with_capacity(entries.len());
        let mut fresh: HashMap<[u8; 16], u64> = HashMap::new();
        let mut buf = Vec::new();
        let mut seq = self.next_seq;
        let mut chain = self.chain;
        let (mut checkpoints, mut last_checkpoint_seq) =
            (self.checkpoints, self.last_checkpoint_seq);
        for e in entries {
            let tag = self.tag(&e.event_id, e.kind);
            if let Some(s) = self.tags.get(&tag).or(fresh.get(&tag)) {
                out.push(Appended::Duplicate(*s));
                continue;
            }
            let attachment = match &e.attachment {
                Some(bytes) => Some(self.write_blob(seq, bytes)?),
                None => None,
            };
            let mut salt = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut salt);
            // A decrypted entry names the placeholder it resolves, so the
            // record shows that `undecryptable` was later read, and where.
            let resolves = if e.kind == Kind::Undecryptable {
                None
            } else {
                let placeholder = self.tag(&e.event_id, Kind::Undecryptable);
                self.tags
                    .get(&placeholder)
                    .or(fresh.get(&placeholder))
                    .copied()
            };
            let value = entry_value(e, seq, &chain, &salt, now, attachment.as_ref(), resolves);
            let digest = chain::digest(
                seq,
                &chain::line_tag(&self.archive_id, &e.room_id),
                e.origin_server_ts,
                &chain::body_hash(&value),
            );
            chain = chain::link(&chain, &digest);
            let ciphertext = seal(
                &self.keys.recipient,
                &canonical_json(&value),
                ENTRY_PAD,
                b' ',
            )?;
            segment::encode(
                &Frame {
                    kind: ENTRY,
                    seq,
                    chain,
                    tag,
                    ciphertext,
                },
                &mut buf,
            );
            fresh.insert(tag, seq);
            out.push(Appended::Entry(seq));
            if seq - last_checkpoint_seq >= self.options.checkpoint_every {
                checkpoints += 1;
                last_checkpoint_seq = seq;
                self.checkpoint_frame(checkpoints, seq, chain, &mut buf)?;
            }
            seq += 1;
        }
        if buf.is_empty() {
            return Ok(out);
        }
        self.write_durably(&buf)?;
        self.tags.extend(fresh);
        self.next_seq = seq;
        self.chain = chain;
        self.checkpoints = checkpoints;
        self.last_checkpoint_seq = last_checkpoint_seq;
        Ok(out)
    }

    /// Writes a checkpoint if entries came since the last one; returns the
    /// entry it covers. The archiver may also call it on a timer, so that
    /// a quiet line's last entries are covered soon.
    pub fn checkpoint(&mut self) -> Result<Option<u64>, Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let last = self.next_seq - 1;
        if last == self.last_checkpoint_seq {
            return Ok(None);
        }
        let mut buf = Vec::new();
        self.checkpoint_frame(self.checkpoints + 1, last, self.chain, &mut buf)?;
        self.write_durably(&buf)?;
        self.checkpoints += 1;
        self.last_checkpoint_seq = last;
        Ok(Some(last))
    }

    /// Writes the last checkpoint and releases the directory.
    pub fn close(mut self) -> Result<(), Error> {
        self.checkpoint().map(|_| ())
    }

    fn checkpoint_frame(
        &self,
        number: u64,
        seq: u64,
        chain: Hash,
        buf: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let cp = Checkpoint::sign(
            &self.keys.signing,
            self.archive_id,
            number,
            seq,
            chain,
            now_ms(),
        );
        let json = cp.to_json(&self.keys.signing.verifying_key());
        let ciphertext = seal(
            &self.keys.recipient,
            &canonical_json(&json),
            ENTRY_PAD,
            b' ',
        )?;
        segment::encode(
            &Frame {
                kind: CHECKPOINT,
                seq,
                chain,
                tag: [0; 16],
                ciphertext,
            },
            buf,
        );
        Ok(())
    }

    /// The attachment, encrypted, as `blobs/SEQ.age` (written whole and
    /// renamed into place before its entry is written).
    fn write_blob(&self, seq: u64, bytes: &[u8]) -> Result<AttachmentRef, Error> {
        let blobs = self.dir.join(BLOBS);
        let ciphertext = seal(&self.keys.recipient, bytes, BLOB_PAD, 0)?;
        let tmp = blobs.join(format!("{seq:020}.tmp"));
        let path = blobs.join(blob_name(seq));
        let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&ciphertext)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        sync_dir(&blobs)?;
        Ok(AttachmentRef {
            sha256: Sha256::digest(bytes).into(),
            size: bytes.len() as u64,
        })
    }

    fn write_durably(&mut self, buf: &[u8]) -> Result<(), Error> {
        if self.segment_len >= self.options.segment_bytes {
            self.rotate()?;
        }
        let before = self.segment_len;
        match self
            .segment
            .write_all(buf)
            .and_then(|_| self.segment.sync_data())
        {
            Ok(()) => {
                self.segment_len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                let undone = self
                    .segment
                    .set_len(before)
                    .and_then(|_| self.segment.sync_data());
                if undone.is_err() {
                    self.poisoned = true;
                }
                Err(Error::io(&self.dir.join(SEGMENTS), e))
            }
        }
    }

    fn rotate(&mut self) -> Result<(), Error> {
        let path = Self::create_segment(&self.dir.join(SEGMENTS), self.segment_index + 1)?;
        self.segment_index += 1;
        self.segment = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        self.segment_len = segment::MAGIC.len() as u64;
        Ok(())
    }
}

// The archiver moves the archive to a blocking thread (`spawn_blocking`).
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Archive>();
};

pub(crate) fn blob_name(seq: u64) -> String {
    format!("{seq:020}.age")
}
