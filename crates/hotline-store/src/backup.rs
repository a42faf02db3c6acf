//! Online backup of the SQLite engine's database: one consistent copy taken
//! while a server keeps writing to it, by SQLite's online backup API.
//!
//! The copy is of one snapshot. The backup's connection opens a read
//! transaction before the first page and keeps it until the last, so every
//! step copies pages of the same snapshot (without it, SQLite restarts the
//! copy whenever another process commits, and under steady writes it would
//! never finish). In WAL mode a reader never blocks the writer: the server
//! keeps committing throughout; only its checkpoints cannot copy frames
//! past the snapshot, so its log grows for the length of the backup, and a
//! RESTART round (past 256 MiB of log) gives up after its 20 ms wait.
//!
//! Pages are copied 1,024 at a time ([`PAGES_PER_STEP`]) with 5 ms
//! ([`PAUSE`]) between steps, so the copy leaves the disk to the server
//! between bursts: 4 MiB a step, ~1 s of pauses per GiB.
//!
//! The copy is written to `DEST.partial`, checked (`PRAGMA
//! integrity_check`), synced and only then renamed to `DEST`, so `DEST`
//! is either a whole checked copy or absent.

use std::path::Path;
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::{Result, SqliteStore, StoreError};

/// Pages copied per step (4 KiB pages: 4 MiB).
const PAGES_PER_STEP: i32 = 1024;
/// Pause between steps, and before retrying a step the destination was
/// busy for.
const PAUSE: Duration = Duration::from_millis(5);

fn engine<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Engine(e.to_string())
}

/// What a backup copied.
#[derive(Debug, Clone, Copy)]
pub struct BackupReport {
    /// Pages in the copy.
    pub pages: u64,
    /// Bytes in the copy.
    pub bytes: u64,
}

impl SqliteStore {
    /// Copies the database at `src` (which a server may be writing) to
    /// `dest`, which must not exist: one snapshot, checked and synced
    /// (module docs).
    pub fn backup(src: &Path, dest: &Path) -> Result<BackupReport> {
        if dest.exists() {
            return Err(StoreError::Engine(format!("{} exists", dest.display())));
        }
        let source = Connection::open_with_flags(
            src,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(engine)?;
        source
            .busy_timeout(Duration::from_secs(10))
            .map_err(engine)?;
        // The snapshot: a read transaction, begun by its first read.
        source.execute_batch("BEGIN").map_err(engine)?;
        source
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(engine)?;
        let mut partial = dest.as_os_str().to_owned();
        partial.push(".partial");
        let partial = std::path::PathBuf::from(partial);
        let _ = std::fs::remove_file(&partial);
        let copied = copy(&source, &partial);
        let _ = source.execute_batch("COMMIT");
        match copied.and_then(|pages| finish(&partial, dest).map(|bytes| (pages, bytes))) {
            Ok((pages, bytes)) => Ok(BackupReport { pages, bytes }),
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                Err(e)
            }
        }
    }
}

/// Copies the source's snapshot into a new database at `to`, step by step;
/// checks it. Returns the pages copied.
fn copy(source: &Connection, to: &Path) -> Result<u64> {
    let mut dest = Connection::open(to).map_err(engine)?;
    {
        let backup = Backup::new(source, &mut dest).map_err(engine)?;
        loop {
            match backup.step(PAGES_PER_STEP).map_err(engine)? {
                StepResult::Done => break,
                // `Busy`/`Locked` concern the destination, which no one
                // else opens; retried all the same.
                _ => std::thread::sleep(PAUSE),
            }
        }
    }
    let check: String = dest
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(engine)?;
    if check != "ok" {
        return Err(StoreError::Engine(format!(
            "the copy failed its integrity check: {check}"
        )));
    }
    let pages: i64 = dest
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .map_err(engine)?;
    dest.close().map_err(|(_, e)| engine(e))?;
    Ok(pages.unsigned_abs())
}

/// Makes the copy at `partial` durable under its name `dest`. Returns its
/// size.
fn finish(partial: &Path, dest: &Path) -> Result<u64> {
    let file = std::fs::File::open(partial).map_err(engine)?;
    file.sync_all().map_err(engine)?;
    let bytes = file.metadata().map_err(engine)?.len();
    std::fs::rename(partial, dest).map_err(engine)?;
    if let Some(dir) = dest.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(engine)?;
    }
    Ok(bytes)
}
