//! The archiver's own files in its state directory: secrets read, the
//! session and the bookkeeping file written privately (mode 0600, written
//! whole to a temporary file, fsynced, renamed into place).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::convert::Calls;
use crate::Error;

/// The password (and the store passphrase) from the secret file: the
/// first line is the account's password; a second line, if any, is the
/// passphrase of the matrix-sdk store (else the password is). Never shown.
pub(crate) struct Secrets {
    pub password: String,
    pub store_passphrase: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

pub(crate) fn read_secrets(path: &Path) -> Result<Secrets, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    let password = lines.next().unwrap_or_default().to_owned();
    if password.is_empty() {
        return Err(Error::Config(format!(
            "{}: the first line must be the archiver account's password",
            path.display()
        )));
    }
    let store_passphrase = match lines.next() {
        Some(p) if !p.is_empty() => p.to_owned(),
        _ => password.clone(),
    };
    Ok(Secrets {
        password,
        store_passphrase,
    })
}

/// Creates `dir` (and its parents) and makes it private (0700).
pub(crate) fn private_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(dir, e))
}

/// Writes `bytes` to `path` durably and privately: a temporary file of
/// mode 0600, fsynced, renamed over `path`, the directory fsynced.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

/// A placeholder waiting for its keys.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Pending {
    pub room_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// The bookkeeping kept between runs (`archiver-state.json`). Losing it
/// loses no event: cursors only shorten the catch-up, and pending
/// placeholders are written here before they are appended.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Book {
    /// Per line, the last event processed (archived or not recorded).
    #[serde(default)]
    pub cursors: BTreeMap<String, String>,
    /// Undecryptable placeholders to retry, by event id.
    #[serde(default)]
    pub pending: BTreeMap<String, Pending>,
    /// Calls under way.
    #[serde(default)]
    pub calls: Calls,
}

pub(crate) struct BookFile {
    path: PathBuf,
    pub book: Book,
}

impl BookFile {
    pub fn open(state: &Path) -> Result<BookFile, Error> {
        let path = state.join("archiver-state.json");
        let book = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Book::default(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        Ok(BookFile { path, book })
    }

    pub fn save(&self) -> Result<(), Error> {
        let bytes = serde_json::to_vec(&self.book).expect("the book serializes");
        write_private(&self.path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_one_file_and_private_files_are_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "pw\n").unwrap();
        let s = read_secrets(&p).unwrap();
        assert_eq!(
            (s.password.as_str(), s.store_passphrase.as_str()),
            ("pw", "pw")
        );
        assert_eq!(format!("{s:?}"), "Secrets(..)");
        std::fs::write(&p, "pw\r\nstore phrase\n").unwrap();
        let s = read_secrets(&p).unwrap();
        assert_eq!(
            (s.password.as_str(), s.store_passphrase.as_str()),
            ("pw", "store phrase")
        );
        std::fs::write(&p, "\n").unwrap();
        assert!(read_secrets(&p).is_err());

        let state = dir.path().join("state");
        private_dir(&state).unwrap();
        let mut b = BookFile::open(&state).unwrap();
        b.book.cursors.insert("!r:x".into(), "$e".into());
        b.save().unwrap();
        let mode = std::fs::metadata(state.join("archiver-state.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(BookFile::open(&state).unwrap().book.cursors["!r:x"], "$e");
    }
}
