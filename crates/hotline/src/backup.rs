//! `hotline admin backup DEST`: a copy of the data directory that a server
//! can be started on, taken while the server runs.
//!
//! Order matters. The database is copied first, as one snapshot (see
//! `hotline_store::SqliteStore::backup`); the files come after. A media
//! file is durable under its name before the row naming it commits, and is
//! never deleted, so every file the snapshot names is there when the files
//! are copied. Uploads finished since are copied too, as files no row names
//! (harmless); uploads still being written (`*.part`), thumbnails
//! (derived, made again on request) and other servers' media kept in
//! `remote/` (whose rows a restored server finds without their files, and
//! so fetches again) are not. The signing key and the keys
//! it replaced (`signing.old`) change only by `hotline admin
//! rotate-signing-key`; the Web Push key (`webpush.key`) never changes
//! (browsers' subscriptions are bound to it). The configuration file is not in the data
//! directory: keep it with the copy.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use hotline_store::SqliteStore;

use crate::anyhow_lite::Result;

/// Copies `data_dir` into `dest` (created; must not exist or be empty) and
/// says what was copied.
pub fn run(data_dir: &Path, dest: &Path) -> Result<String> {
    let db = data_dir.join("hotline.db");
    if !db.is_file() {
        return Err(format!("no database at {}", db.display()).into());
    }
    match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!("{} exists and is not empty", dest.display()).into());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // The copy holds everything the server keeps: its owner only.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dest)
                .map_err(|e| format!("creating {}: {e}", dest.display()))?;
        }
        Err(e) => return Err(format!("reading {}: {e}", dest.display()).into()),
    }
    let report = SqliteStore::backup(&db, &dest.join("hotline.db"))
        .map_err(|e| format!("copying the database: {e}"))?;
    let key = data_dir.join("signing.key");
    if key.exists() {
        copy_file(&key, &dest.join("signing.key"))?;
    }
    let old_keys = data_dir.join("signing.old");
    if old_keys.exists() {
        copy_file(&old_keys, &dest.join("signing.old"))?;
    }
    let web_push_key = data_dir.join(hotline_service::web_push::KEY_FILE);
    if web_push_key.exists() {
        copy_file(
            &web_push_key,
            &dest.join(hotline_service::web_push::KEY_FILE),
        )?;
    }
    let media = data_dir.join("media");
    let mut files = 0u64;
    let mut bytes = 0u64;
    if media.is_dir() {
        let to = dest.join("media");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&to)
            .map_err(|e| format!("creating {}: {e}", to.display()))?;
        for entry in fs::read_dir(&media)? {
            let entry = entry?;
            let name = entry.file_name();
            if !entry.file_type()?.is_file() || Path::new(&name).extension().is_some() {
                // `thumbnails/`, `remote/`, and uploads still being written (`.part`):
                // media ids have no dot.
                continue;
            }
            bytes += copy_file(&entry.path(), &to.join(&name))?;
            files += 1;
        }
        sync_dir(&to)?;
    }
    sync_dir(dest)?;
    Ok(format!(
        "backed up {} to {}: database {} bytes ({} pages), {} media files ({} bytes){}",
        data_dir.display(),
        dest.display(),
        report.bytes,
        report.pages,
        files,
        bytes,
        match (key.exists(), web_push_key.exists()) {
            (true, true) => ", signing key, Web Push key",
            (true, false) => ", signing key",
            (false, true) => ", Web Push key",
            (false, false) => "",
        },
    ))
}

/// Copies one file, owner-only, and syncs it. Returns its size.
fn copy_file(from: &Path, to: &Path) -> Result<u64> {
    let what = |e: std::io::Error| format!("copying {} to {}: {e}", from.display(), to.display());
    let mut src = fs::File::open(from).map_err(what)?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(what)?;
    let bytes = std::io::copy(&mut src, &mut f).map_err(what)?;
    f.sync_all().map_err(what)?;
    Ok(bytes)
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("syncing {}: {e}", dir.display()).into())
}
