//! WAL checkpoints: copying committed pages into the main file, on their own
//! thread and connection, not in the writer's commit.
//!
//! SQLite's automatic checkpoint would stall every commit that crosses the
//! WAL size threshold, and with it every request waiting on that commit. The
//! checkpointer's connection keeps the configured `synchronous` level, so the
//! WAL is synced before its pages are copied and the main file after, before
//! the WAL may be reused. Rounds are PASSIVE, at most every
//! [`CHECKPOINT_EVERY`] (400 ms) while writes come.
//!
//! Passive checkpoints alone never let the WAL be reused under steady writes:
//! SQLite rewinds the log only when a write begins with every frame already
//! copied, and by the time a passive round ends the writer has appended more.
//! The log would grow without bound, and every commit would extend the file,
//! so each `fdatasync` would also commit the file system's journal (about
//! three times the cost of syncing overwritten blocks). So once the log passes
//! [`WAL_SIZE_LIMIT`] (256 MiB), the checkpointer follows its passive round
//! with a RESTART one: it holds the writer back while it copies the frames
//! committed since (waiting at most 20 ms for the writer and older readers,
//! [`wait_for_restart`]), and the next commit rewinds the log and overwrites
//! blocks the file already has. At the benchmark's full load that stall is
//! 5–40 ms, which the p99 pays, so the threshold is large (see
//! [`WAL_SIZE_LIMIT`]). The writer learns the log's length from SQLite's WAL
//! hook after each commit ([`CountedWal`]) and wakes the checkpointer as
//! soon as the log passes it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;

use rusqlite::Connection;

use super::{wait_briefly, BUSY_STEP};

/// Pause between background checkpoints while writes keep coming: pages
/// rewritten within it (index leaves, the stream position) are copied once.
/// Each round ends in an `fsync` of the main file that the WAL's own
/// flushes queue behind; at the benchmark's full load 400 ms took the p99
/// from ~18 to ~14 ms against 100 ms (1 s: ~12 ms, but the log then outgrows
/// [`WAL_SIZE_LIMIT`] between rounds; the writer then wakes the
/// checkpointer early).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(400);
/// The WAL file is truncated back to this size after a checkpoint resets it,
/// and a log this long (in 4 KiB frames) is rewound by a RESTART round
/// (module docs). Only sustained writes reach it (any pause lets a passive
/// round copy the whole log, and the next commit rewinds it); then each
/// RESTART round stalls the writer. At the benchmark's full load the log
/// grows ~200 MB/s: 256 MiB is a stall every ~1.3 s, and measured a p99 of
/// ~12 ms against ~21 ms at 64 MiB (~14 ms at 128 MiB).
pub(super) const WAL_SIZE_LIMIT: i64 = 256 * 1024 * 1024;

/// Busy handler of a RESTART checkpoint: it waits for the writer's commit and
/// for readers on older snapshots for up to 20 ms, then settles for a passive
/// round. The writer waits behind it meanwhile, so this bounds that stall.
fn wait_for_restart(tries: i32) -> bool {
    std::thread::sleep(BUSY_STEP);
    (tries as u128) < 20_000 / BUSY_STEP.as_micros()
}

/// Copies committed WAL pages into the main file whenever the writer has
/// committed since the last round, at most every [`CHECKPOINT_EVERY`]
/// unless the writer reports the log past `restart_frames` (`long`).
/// PASSIVE: it never blocks the writer or readers, and a later round picks
/// up whatever a busy reader kept it from copying.
/// Once the log is longer than `restart_frames`, a RESTART round
/// follows so that the next commit rewinds it (module docs).
pub(super) fn checkpoint_loop(
    conn: Connection,
    dirty: mpsc::Receiver<()>,
    long: mpsc::Receiver<()>,
    restart_frames: i64,
) {
    // A checkpoint that fails (a full disk: the main file cannot grow)
    // fails again every round until it is fixed: logged when it starts
    // failing and when it works again. The log keeps every frame meanwhile.
    let failing = std::cell::Cell::new(false);
    // Column 1 of the pragma's row: frames in the log.
    let checkpoint = |mode: &str| {
        let done = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            r.get::<_, i64>(1)
        });
        match (&done, failing.get()) {
            (Err(e), false) => tracing::warn!(error = %e, mode, "WAL checkpoint failed"),
            (Ok(_), true) => tracing::info!(mode, "WAL checkpoint works again"),
            _ => {}
        }
        failing.set(done.is_err());
        done
    };
    while dirty.recv().is_ok() {
        if checkpoint("PASSIVE").is_ok_and(|frames| frames >= restart_frames) {
            let _ = conn.busy_handler(Some(wait_for_restart));
            let _ = checkpoint("RESTART");
            let _ = conn.busy_handler(Some(wait_briefly));
        }
        // A signal sent during the round is stale: the round saw its log.
        let _ = long.try_recv();
        // Both senders belong to the writer: disconnected, it has closed,
        // and the TRUNCATE round below copies whatever it committed last
        // (waiting out the pause would hold the store's close by 400 ms).
        if let Err(mpsc::RecvTimeoutError::Disconnected) = long.recv_timeout(CHECKPOINT_EVERY) {
            break;
        }
    }
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

/// The writer's connection, told by SQLite's WAL hook how long the log is
/// after each commit. The hook is removed before the connection closes.
pub(super) struct CountedWal {
    pub(super) conn: Connection,
    pub(super) frames: Box<AtomicI64>,
}

/// `sqlite3_wal_hook` callback: `arg` is the [`CountedWal`]'s counter.
unsafe extern "C" fn note_wal_frames(
    arg: *mut std::ffi::c_void,
    _db: *mut rusqlite::ffi::sqlite3,
    _name: *const std::ffi::c_char,
    frames: std::ffi::c_int,
) -> std::ffi::c_int {
    // SAFETY: the counter outlives the hook (`CountedWal`'s drop).
    unsafe { (*arg.cast::<AtomicI64>()).store(frames.into(), Ordering::Relaxed) };
    rusqlite::ffi::SQLITE_OK
}

impl CountedWal {
    pub(super) fn new(conn: Connection) -> Self {
        let frames = Box::new(AtomicI64::new(0));
        // SAFETY: the connection is open; the counter is boxed, so its
        // address is stable for as long as the hook is installed.
        unsafe {
            let arg: *const AtomicI64 = &*frames;
            rusqlite::ffi::sqlite3_wal_hook(
                conn.handle(),
                Some(note_wal_frames),
                arg.cast_mut().cast(),
            );
        }
        CountedWal { conn, frames }
    }
}

impl Drop for CountedWal {
    fn drop(&mut self) {
        // SAFETY: removes the hook before the counter goes.
        unsafe {
            rusqlite::ffi::sqlite3_wal_hook(self.conn.handle(), None, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::syncer::wal_path;
    use super::super::{Durability, SqliteStore};
    use crate::*;

    /// Under writes that never pause, passive checkpoints alone never let
    /// SQLite rewind the WAL: it would grow by everything written. The
    /// RESTART rounds keep it near the limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wal_stays_bounded_under_sustained_writes() {
        let dir = std::env::temp_dir().join(format!("hotline-wal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("hotline.db");
        let limit = 16 * 1024 * 1024;
        let store =
            SqliteStore::open_with_wal_limit(db.clone(), Durability::Normal, limit).unwrap();
        // Rows rewritten in place: the log gains frames as fast as with new
        // rows, while the main file (and each checkpoint's copy) stays small.
        let json = "x".repeat(16 * 1024);
        let (mut written, mut largest) = (0u64, 0u64);
        while written < 6 * limit as u64 {
            let mut batch = WriteBatch::new();
            for device in 0..16 {
                batch.push(WriteOp::PutDeviceKeys {
                    user_id: "@a:test".into(),
                    device_id: format!("D{device}"),
                    json: json.clone(),
                });
                written += json.len() as u64;
            }
            store.write(batch).await.unwrap();
            let wal = std::fs::metadata(wal_path(&db)).map_or(0, |m| m.len());
            largest = largest.max(wal);
        }
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
        // Past the threshold the log keeps growing until a RESTART round
        // catches the writer between commits (this writer never rests): about
        // 1.7 times the limit here, up to 4.4 times on a loaded 2-core
        // machine (the checkpointer starved), against over 6 times without
        // them.
        assert!(
            largest < 5 * limit as u64,
            "WAL reached {largest} bytes after {written} written"
        );
    }
}
