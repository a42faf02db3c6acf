//! The records office's archiver: a Matrix client (`matrix-sdk`, end-to-end
//! encryption, a persistent SQLite store) signed in as the account the
//! homeserver brings onto every official line (`[records] archiver`), which
//! appends every event of those lines to the official record
//! (`hotline-records`). The homeserver never holds plaintext; the archiver
//! decrypts as any member does, and the archive is encrypted to the records
//! office at once. `hotline archiver` runs it.
//!
//! # What it does
//!
//! - Signs in once and keeps its device: the device id is chosen and
//!   written (`STATE/device_id`) before the first login, the session
//!   (user, device, access token) is kept in `STATE/session.json` (mode
//!   0600) and restored at each start; the matrix-sdk store
//!   (`STATE/store/`: crypto, state, sync token) is encrypted with a
//!   passphrase from the secret file. It creates its account's
//!   cross-signing keys once, so offices can verify its device.
//! - Joins the rooms it is invited to that are lines marking it (the
//!   invite's preview shows `org.hotline.line` and this account's own
//!   `org.hotline.recorder` marking), declines other invites, and records a
//!   joined room only while its marking names this account.
//! - Appends, per line and in timeline order: `m.room.message` (text →
//!   `message`, `m.replace` → `edit`, image/file/audio/video →
//!   `attachment` with the decrypted file downloaded through matrix-sdk's
//!   media API), `m.room.redaction` → `redaction`, call events
//!   (`m.call.invite/answer/hangup/reject`, MatrixRTC `m.call.member`) →
//!   `call` with metadata only (who, when, call id, party, and on a hangup
//!   or a member leaving the duration; never SDP, candidates or media);
//!   other message-like events (reactions, ...) as `message` with their
//!   type. Other state is not recorded. Sender display names are added
//!   when the store knows them.
//! - An event it cannot decrypt is appended as `undecryptable` (with its
//!   event id and Megolm session), after a short grace for a key in flight
//!   (an event younger than a minute is retried for up to three seconds
//!   while the sync loop runs). It is retried when room keys arrive
//!   (matrix-sdk's room-keys-received stream), every `retry_interval`, and
//!   after a key import; once it decrypts, its entry is appended and the
//!   archive marks it `resolves: SEQ` of the placeholder. Keys for a
//!   session the sender never shared with this device cannot arrive by
//!   themselves (matrix-sdk forwards a key to another user's device only
//!   from the index it once shared with it), so the records office can
//!   hand in a standard Matrix key export from a principal's office: drop
//!   `NAME.keys` (the export) into `STATE/key-imports/`, then
//!   `NAME.passphrase` (its passphrase, written last); both are imported
//!   and deleted within seconds.
//! - Writes a signed checkpoint every `checkpoint_every` entries (by the
//!   archive) and every `checkpoint_interval`, and one when it stops on
//!   SIGTERM or ctrl-c.
//! - Logs ids, counts and errors; never message content, tokens or the
//!   password (matrix-sdk's own logging is capped at `info` by the
//!   `hotline` binary, whatever `HOTLINE_LOG` asks).
//!
//! # No gaps, no duplicates
//!
//! **Invariant:** for each line, the events the archiver has *processed*
//! (appended, or looked at and not recorded) are a prefix of the line's
//! timeline as the server orders it (`/messages`), and every processed
//! event that the record keeps is in the archive, durably.
//!
//! It holds because events are only ever processed in timeline order, a
//! batch at a time, and a batch is appended (`append_all` fsyncs before it
//! returns) before anything says it was processed: the per-line cursor
//! (`STATE/archiver-state.json`, the last processed event) is written
//! after the append. matrix-sdk saves its sync token when it has handled a
//! response, before the archiver has appended that response's events, so
//! the token is not trusted for completeness. Instead, a line's events are
//! processed after a *catch-up*: paging `/messages` backwards from the
//! newest event (or from a sync timeline's `prev_batch`) until the first
//! event that is processed (the line's cursor, or any event the archive
//! holds: `Archive::status`, which also knows events appended but not yet
//! in the cursor after a `kill -9`), then processing what was found
//! oldest first. A catch-up runs for every line at start (after the first
//! sync), for a line the first time it appears in this run's syncs, for a
//! sync timeline that is `limited` (the server left events out), and
//! every `catch_up_interval`; between them, consecutive sync timelines
//! are contiguous. Duplicates are refused by the archive (one entry per
//! event id, plus at most one `undecryptable` placeholder), so processing
//! an event twice (a catch-up overlapping a sync) appends nothing.
//! Placeholders to retry are written to the state file *before* they are
//! appended, so none is forgotten by a crash.
//!
//! A `kill -9` can still cost a room key, inside matrix-sdk: it saves a
//! new inbound Olm session as soon as it decrypts a pre-key to-device
//! message, and the room key inside only with the rest of the sync
//! response, so a kill between the two loses that key (the message is
//! delivered again but cannot be decrypted twice, and matrix-sdk takes
//! forwarded keys only from its own verified devices). The events of that
//! session are then recorded as `undecryptable` placeholders, in their
//! place, and resolved if the key is handed in; they are never skipped.
//!
//! An event redacted before the archiver read it (it was down, and the
//! server already stripped it) is recorded with the content the server
//! still has: nothing, for an encrypted one (`undecryptable`, reason
//! "redacted before the archiver read it").

mod archiver;
mod convert;
mod session;
mod state;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hotline_records::keys;

/// How to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// The homeserver's client-server URL.
    pub homeserver: String,
    /// The archiver's account (`@records:SERVER`).
    pub user: String,
    /// The secret file: the password on its first line; the store
    /// passphrase on the second, if any (else the password).
    pub password_file: PathBuf,
    /// The archiver's own directory: device id, session, matrix-sdk store,
    /// bookkeeping, key imports.
    pub state: PathBuf,
    /// The archive directory (`hotline-records`).
    pub archive: PathBuf,
    /// The directory with `records-office.pub` (the records office's
    /// public key) and `checkpoint-signing.key` (the archiver's); it must
    /// not hold the records office's secret key.
    pub keys: PathBuf,
    /// A checkpoint after this many entries.
    pub checkpoint_every: u64,
    /// And at least this often while entries come.
    pub checkpoint_interval: Duration,
    /// How often every line is caught up from its newest event.
    pub catch_up_interval: Duration,
    /// How often undecryptable placeholders are tried again.
    pub retry_interval: Duration,
}

impl Config {
    /// The defaults for everything but the paths and the account.
    pub fn new(
        homeserver: String,
        user: String,
        password_file: PathBuf,
        state: PathBuf,
        archive: PathBuf,
        keys: PathBuf,
    ) -> Config {
        Config {
            homeserver,
            user,
            password_file,
            state,
            archive,
            keys,
            checkpoint_every: 100,
            checkpoint_interval: Duration::from_secs(60),
            catch_up_interval: Duration::from_secs(300),
            retry_interval: Duration::from_secs(30),
        }
    }
}

/// Everything that stops the archiver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("the archive: {0}")]
    Records(#[from] hotline_records::Error),
    #[error("matrix: {0}")]
    Matrix(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What appending needs, from the keys directory: the records office's
/// recipient and the checkpoint signing key. Refuses a directory that
/// holds the records office's secret key: the archiver must never have it.
pub fn archive_keys(dir: &Path) -> Result<hotline_records::ArchiveKeys, Error> {
    let secret = dir.join(keys::IDENTITY_FILE);
    if secret.exists() {
        return Err(Error::Config(format!(
            "{} is the records office's secret key: the archiver must not hold it; move it off this machine",
            secret.display()
        )));
    }
    let recipient = dir.join(keys::RECIPIENT_FILE);
    if !recipient.is_file() {
        return Err(Error::Config(format!(
            "{}: missing (the records office's public key, from `hotline records keygen`)",
            recipient.display()
        )));
    }
    let recipient = keys::parse_recipient(
        recipient
            .to_str()
            .ok_or_else(|| Error::Config(format!("{}: not UTF-8", recipient.display())))?,
    )?;
    let signing = keys::read_signing_key(&dir.join(keys::SIGNING_FILE))?;
    Ok(hotline_records::ArchiveKeys { recipient, signing })
}

/// Runs the archiver until SIGTERM or ctrl-c; then writes a last
/// checkpoint and returns.
pub async fn run(config: Config) -> Result<(), Error> {
    // Taken over now, so that a SIGTERM while signing in is not fatal: it
    // is acted on once the loop runs.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::Config(format!("SIGTERM handler: {e}")))?;
    let interrupt = tokio::signal::ctrl_c();
    let shutdown = async move {
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    };
    run_until(config, shutdown).await
}

/// Runs the archiver until `shutdown` completes.
pub async fn run_until(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    archiver::run(config, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archiver_refuses_a_keys_directory_holding_the_records_offices_secret() {
        let dir = tempfile::tempdir().unwrap();
        keys::generate(dir.path()).unwrap();
        let e = archive_keys(dir.path()).err().expect("refused");
        assert!(e.to_string().contains("must not hold it"), "{e}");
        std::fs::remove_file(dir.path().join(keys::IDENTITY_FILE)).unwrap();
        let k = archive_keys(dir.path()).unwrap();
        assert!(k.recipient.to_string().starts_with("age1"));
    }
}
