//! The official record: an append-only, hash-chained archive of official
//! lines, encrypted at rest to the records office, its export as a
//! verifiable package, and the verification.
//!
//! The archiver (a Matrix client holding the records office's device keys
//! in each official line) decrypts events and calls [`Archive::append_all`];
//! the records office runs `hotline records export` with its secret key;
//! anyone runs `hotline records verify` on a package with the archiver's
//! public checkpoint key. This crate does no networking and knows no Matrix
//! rules; it depends on none of the other Hotline crates.
//!
//! # The archive directory
//!
//! ```text
//! ARCHIVE/
//!   archive.json        clear: format, random archive id, the recipient (age1...), the checkpoint verifying key
//!   lock                held (flock) by the one process appending
//!   segments/NNN.seg    frames, appended and fsynced; a new segment past 64 MiB
//!   blobs/SEQ.age       the attachment of entry SEQ: one age file, zero-padded to 4 KiB
//! ```
//!
//! A segment is a magic (`HLRSEG01`) then frames: `kind seq chain tag len
//! ciphertext sum` (see `segment.rs`). Each frame's ciphertext is one age
//! file (X25519 recipient: the records office's public key) holding the
//! canonical JSON of one entry or one checkpoint, padded with spaces to a
//! multiple of 256 bytes. Appending needs only the recipient and the
//! archiver's Ed25519 key; nothing on the archiver can decrypt the archive.
//!
//! # Entries and the chain
//!
//! An entry is a JSON object: `v`, `seq` (1, 2, ...), `prev` (the chain
//! value of entry `seq - 1`), `salt` (32 random bytes), `event_id`,
//! `room_id` (the line), `sender`, `sender_name` and `sender_title` if
//! known, `origin_server_ts`, `archived_ts`, `kind` (`message`, `edit`,
//! `redaction`, `attachment`, `call`, `undecryptable`), `content` (the
//! decrypted event content as JSON; for a call, metadata only),
//! `resolves` on the decrypted entry of an event first archived as
//! `undecryptable` (that placeholder's `seq`: the record shows the
//! placeholder resolved, and where) and, for an attachment,
//! `attachment: {sha256, size}` of the decrypted file, whose
//! bytes are kept apart in `blobs/` (so entries stay small, and a package
//! can list a file by hash). The chain (see `chain.rs` for the exact
//! bytes):
//!
//! ```text
//! chain_n = SHA-256(chain_{n-1} ‖ SHA-256(seq ‖ line_tag(room) ‖ ts ‖ SHA-256(canonical_json(entry_n))))
//! ```
//!
//! starting from a genesis value derived from the archive id. Canonical
//! JSON: keys sorted, no whitespace (`canonical.rs`). Every `checkpoint_every`
//! entries (default 100), when the archive closes, and when it opens with
//! entries uncovered, a checkpoint frame is written: the archiver's Ed25519
//! signature over (archive id, checkpoint number, seq, chain value, time).
//!
//! # Durability and resuming
//!
//! `append_all` writes its frames (and first each attachment's blob,
//! renamed into place) and `fdatasync`s the segment before it returns; an
//! entry reported appended survives `kill -9` and power loss. On open, the
//! segments are scanned: each frame carries a SHA-256 checksum, so a frame
//! torn by a crash at the end of the last segment is recognised without the
//! secret key and cut off (it was never acknowledged); damage anywhere else
//! is an error, not silently dropped. The state to continue the chain is
//! read from the frames' clear headers: the last `chain` value, the number
//! of entries, and the entries' deduplication tags, so an event is
//! appended at most once (per event id; an `undecryptable` placeholder and
//! its later decryption are two entries, each at most once, the second
//! naming the first with `resolves`).
//!
//! # What leaks, what does not
//!
//! Someone holding the archive directory (without the records office's
//! key) learns: how many entries and checkpoints there are, each entry's
//! approximate size (padded to 256 bytes) and each attachment's (to 4
//! KiB), when files were written (timestamps), and the chain values. Not
//! the content, the senders, the lines or the times of events: those are
//! only inside age ciphertexts. The chain values are hashes over a random
//! 256-bit salt inside each entry, so they cannot be used to confirm a
//! guessed message. The deduplication tags are HMAC-SHA-256 of the event
//! id under a key derived from the archiver's checkpoint signing key:
//! without that key they are random; with it (if it was on the same disk)
//! they confirm whether a known event id is in the archive and at which
//! entry, which the homeserver's own database already tells about its
//! events. Keep the signing key off the archive disk to close even that.
//!
//! # Packages
//!
//! An export (`package.rs`) covers one line and a time window, and holds
//! every entry from 1 to the first checkpoint after the last exported
//! entry: exported entries in full, every other one as its line tag, time
//! and body hash only, so the verifier recomputes the whole chain, checks
//! it against the signed checkpoints, and sees that each entry it was not
//! given belongs to another line or lies outside the window. A package so
//! reveals to its reader, of other lines, only that entries existed, when,
//! and which of them share a line (the line tag is a hash of the room id
//! with the archive id; it names a line only to someone who knows its room
//! id). Verification (`verify.rs`) names the entry that fails and how.
//!
//! A cut at a checkpoint is the one tampering a package alone cannot
//! show: a package ending at an earlier checkpoint than the manifest says
//! is reported, but a manifest rewritten with it is not. Compare the
//! package's last checkpoint with the archiver's latest (published, or
//! from another export) when the window's end matters.

mod archive;
mod canonical;
pub mod chain;
pub mod cli;
mod entry;
pub mod keys;
mod package;
mod read;
mod segment;
mod transcript;
mod verify;

use std::path::{Path, PathBuf};

pub use archive::{Appended, Archive, ArchiveKeys, Options, Status};
pub use canonical::{canonical_json, hex, utc};
pub use entry::{Kind, NewEntry};
pub use package::{build, export, ExportReport, Filter, Package};
pub use read::{read_archive, read_attachment, Contents, Record};
pub use transcript::escape;
pub use verify::{verify, Report};

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A damaged archive or package, or an argument that does not fit.
    #[error("{0}")]
    Format(String),
    #[error("{0}")]
    Key(String),
    #[error("encryption: {0}")]
    Crypto(String),
    #[error("the archive at {0} is open in another process")]
    Locked(PathBuf),
    #[error("an earlier write failed and could not be undone; reopen the archive")]
    Poisoned,
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
