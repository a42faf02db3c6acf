//! A VFS for the writer's connection that hands each commit's WAL frames to
//! the kernel in one `pwrite`.
//!
//! SQLite writes a WAL frame as two writes, its 24-byte header and then its
//! page; a commit of the benchmark's groups is ~60 frames, so ~120 `pwrite`s,
//! and a 4 KiB page behind a 24-byte header straddles two pages of the file,
//! each touched twice. That was ~15% of the server's CPU. Here the WAL file
//! of the connection buffers contiguous writes and writes them out when the
//! commit's last frame is complete.
//!
//! **Invariant:** a commit's frames are in the file (in the kernel, as with
//! plain SQLite) before the commit returns, so before SQLite publishes the
//! new frames to readers through the WAL index, which it does only after its
//! last write. The last frame of a commit is the one whose header carries a
//! nonzero database size (bytes 4..8, the "commit" mark); the buffer is
//! written out right after that frame's page. Only appends are buffered: a
//! write below the furthest byte written (SQLite fixing frame checksums
//! after a commit's last frame, or rewriting a page within a transaction)
//! goes straight to the file, after the buffer. Any other call on the file
//! (read, sync, size, truncate, file control, close) writes the buffer out
//! first, so the file always reads as if nothing were buffered.
//!
//! A failed write-out is reported as the failure of the write that triggered
//! it: the commit fails as it would have without the buffer, and SQLite
//! never publishes its frames. (A full disk: `ENOSPC` and `EDQUOT` are
//! `SQLITE_FULL`, as the unix VFS reports them.) The next transaction
//! writes its frames over the failed ones; those writes are below the
//! furthest byte written, so they go straight to the file until they pass
//! it, and a commit mark is followed whichever way its header went.
//!
//! **Precondition:** the connection runs at `synchronous = NORMAL` (or
//! `OFF`). At `FULL`, SQLite may split a commit's last page around a sync
//! to pad the log to a sector, and the page's second half would stay
//! buffered. [`crate::sqlite`] opens only its writer through this VFS, and
//! checks the level.
//!
//! Every other file (the database, its shared memory) is the unix VFS's
//! own, unwrapped.

use std::ffi::{c_int, c_void, CStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::ptr;
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name connections open the database with.
pub const VFS_NAME: &CStr = c"hotline-wal-batch";

/// Size of the log's header, written at offset 0 when the log starts over.
const WAL_HEADER: usize = 32;
/// Size of a frame's header; its bytes 4..8 are the commit mark.
const FRAME_HEADER: usize = 24;
/// Past this much buffered (a transaction far larger than a commit group),
/// the buffer is written out early; frames are invisible until the commit
/// anyway.
const MAX_BUFFERED: usize = 4 << 20;

/// The WAL file as this VFS opens it. SQLite allocates `szOsFile` bytes for
/// it and knows only `base`.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    /// The unix VFS's file, allocated with `sqlite3_malloc`.
    inner: *mut ffi::sqlite3_file,
    /// The same file, opened again for the buffer's single write: the unix
    /// VFS writes at most 128 KiB per system call. (The WAL file carries no
    /// POSIX locks, so closing this descriptor releases nothing of SQLite's.)
    out: std::fs::File,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: i64,
    /// The last write was a commit frame's header: its page completes the
    /// commit.
    commit_pending: bool,
    /// End of the furthest byte written (or buffered) since the log last
    /// started over: a write below it rewrites, a write from it appends.
    frontier: i64,
}

/// Registers the VFS (once per process; later calls return the first
/// outcome).
pub fn register() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        // SAFETY: `sqlite3_vfs_find` initializes SQLite and returns a VFS
        // that lives as long as the process; ours is leaked likewise, as
        // SQLite keeps the pointer.
        unsafe {
            let unix = ffi::sqlite3_vfs_find(c"unix".as_ptr());
            if unix.is_null() {
                return Err("SQLite has no unix VFS".into());
            }
            let u = &*unix;
            let size = c_int::try_from(std::mem::size_of::<WalFile>())
                .map_err(|e| e.to_string())?
                .max(u.szOsFile);
            let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
                iVersion: u.iVersion,
                szOsFile: size,
                mxPathname: u.mxPathname,
                pNext: ptr::null_mut(),
                zName: VFS_NAME.as_ptr(),
                pAppData: unix.cast::<c_void>(),
                xOpen: Some(x_open),
                // The unix VFS's other methods ignore the VFS they are
                // handed; only its xOpen reads its own `pAppData`.
                xDelete: u.xDelete,
                xAccess: u.xAccess,
                xFullPathname: u.xFullPathname,
                xDlOpen: u.xDlOpen,
                xDlError: u.xDlError,
                xDlSym: u.xDlSym,
                xDlClose: u.xDlClose,
                xRandomness: u.xRandomness,
                xSleep: u.xSleep,
                xCurrentTime: u.xCurrentTime,
                xGetLastError: u.xGetLastError,
                xCurrentTimeInt64: u.xCurrentTimeInt64,
                xSetSystemCall: u.xSetSystemCall,
                xGetSystemCall: u.xGetSystemCall,
                xNextSystemCall: u.xNextSystemCall,
            }));
            match ffi::sqlite3_vfs_register(vfs, 0) {
                ffi::SQLITE_OK => Ok(()),
                rc => Err(format!("registering the WAL VFS: SQLite error {rc}")),
            }
        }
    })
    .clone()
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    // Version 1: no shared memory or mmap methods, which SQLite calls on
    // the database file only.
    iVersion: 1,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY (whole function): SQLite hands a VFS registered by `register`
    // and `szOsFile` writable bytes at `file`.
    unsafe {
        let unix = (*vfs).pAppData.cast::<ffi::sqlite3_vfs>();
        let Some(unix_open) = (*unix).xOpen else {
            return ffi::SQLITE_ERROR;
        };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return unix_open(unix, name, file, flags, out_flags);
        }
        if name.is_null() {
            return ffi::SQLITE_CANTOPEN;
        }
        let size = (*unix).szOsFile;
        let inner = ffi::sqlite3_malloc(size).cast::<ffi::sqlite3_file>();
        if inner.is_null() {
            return ffi::SQLITE_NOMEM;
        }
        ptr::write_bytes(inner.cast::<u8>(), 0, size.unsigned_abs() as usize);
        let rc = unix_open(unix, name, inner, flags, out_flags);
        // Our own descriptor is opened after SQLite's open, which creates the
        // file with the database's permissions.
        let out = match rc {
            ffi::SQLITE_OK => {
                let path = std::ffi::OsStr::from_bytes(CStr::from_ptr(name).to_bytes());
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|_| ffi::SQLITE_CANTOPEN)
            }
            rc => Err(rc),
        };
        let out = match out {
            Ok(out) => out,
            Err(rc) => {
                // A file whose open failed is still closed if it got methods.
                if let Some(close) = (*inner).pMethods.as_ref().and_then(|m| m.xClose) {
                    close(inner);
                }
                ffi::sqlite3_free(inner.cast::<c_void>());
                (*file).pMethods = ptr::null();
                return rc;
            }
        };
        ptr::write(
            file.cast::<WalFile>(),
            WalFile {
                base: ffi::sqlite3_file {
                    pMethods: &WAL_METHODS,
                },
                inner,
                out,
                buf: Vec::new(),
                start: 0,
                commit_pending: false,
                frontier: 0,
            },
        );
        ffi::SQLITE_OK
    }
}

/// The file behind an `sqlite3_file` this VFS opened as a WAL.
///
/// # Safety
/// `f` must be a file opened by [`x_open`] with the WAL flag and not closed.
unsafe fn wal<'a>(f: *mut ffi::sqlite3_file) -> &'a mut WalFile {
    unsafe { &mut *f.cast::<WalFile>() }
}

/// The unix file's methods.
///
/// # Safety
/// As for [`wal`].
unsafe fn inner(w: &WalFile) -> &ffi::sqlite3_io_methods {
    unsafe { &*(*w.inner).pMethods }
}

/// Writes the buffer out. On failure the buffer is dropped: SQLite sees
/// the write fail and does not publish those frames.
fn flush(w: &mut WalFile) -> c_int {
    if w.buf.is_empty() {
        return ffi::SQLITE_OK;
    }
    let rc = write_at(&w.out, &w.buf, w.start);
    w.buf.clear();
    // A commit group's frames fit well under this; a rare huge
    // transaction's buffer is not kept for the life of the connection.
    w.buf.shrink_to(MAX_BUFFERED / 4);
    w.commit_pending = false;
    rc
}

fn write_at(out: &std::fs::File, bytes: &[u8], offset: i64) -> c_int {
    match u64::try_from(offset)
        .map_err(std::io::Error::other)
        .and_then(|at| out.write_all_at(bytes, at))
    {
        Ok(()) => ffi::SQLITE_OK,
        // ENOSPC, EDQUOT: the unix VFS's answer to a write that runs out
        // of space, which the store tells its callers as "full".
        Err(e) if matches!(e.raw_os_error(), Some(28 | 122)) => ffi::SQLITE_FULL,
        Err(_) => ffi::SQLITE_IOERR_WRITE,
    }
}

unsafe extern "C" fn x_close(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes each file it opened once; nothing uses it after.
    unsafe {
        let w = wal(f);
        let flushed = flush(w);
        let closed = inner(w)
            .xClose
            .map_or(ffi::SQLITE_OK, |close| close(w.inner));
        ffi::sqlite3_free(w.inner.cast::<c_void>());
        ptr::drop_in_place(f.cast::<WalFile>());
        (*f).pMethods = ptr::null();
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn x_write(
    f: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite passes `amount` readable bytes at `data`.
    let (w, bytes) = unsafe {
        (
            wal(f),
            std::slice::from_raw_parts(data.cast::<u8>(), amount.unsigned_abs() as usize),
        )
    };
    let end = offset + i64::from(amount);
    if offset == 0 && bytes.len() == WAL_HEADER {
        // The log starts over: everything after the header is new again.
        w.frontier = 0;
    }
    let appends = if w.buf.is_empty() {
        offset >= w.frontier
    } else {
        offset == w.start + w.buf.len() as i64
    };
    let commit_header = bytes.len() == FRAME_HEADER && bytes[4..8] != [0; 4];
    if !appends {
        // A rewrite of bytes already written: frame checksums SQLite fixes
        // after a commit's last frame, a page rewritten within a
        // transaction, or, after a commit that failed (a full disk), the
        // next transaction's frames over the failed one's. Straight to the
        // file, after what is buffered.
        let rc = flush(w);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        w.frontier = w.frontier.max(end);
        // After a failed commit the frontier is where its frames ended, so
        // a commit frame's header may go straight and its page be appended:
        // the mark must carry over, or that page would stay buffered.
        w.commit_pending = commit_header;
        return write_at(&w.out, bytes, offset);
    }
    if w.buf.is_empty() {
        w.start = offset;
    }
    w.buf.extend_from_slice(bytes);
    w.frontier = w.frontier.max(end);
    let completes_commit = w.commit_pending;
    let mut rc = ffi::SQLITE_OK;
    if completes_commit || w.buf.len() >= MAX_BUFFERED {
        rc = flush(w);
    }
    w.commit_pending = commit_header;
    rc
}

/// Writes the buffer out, then calls the unix file's method through
/// `call`; the write-out's error instead if it failed.
///
/// # Safety
/// As for [`wal`]; `call` gets the unix file and its methods.
unsafe fn after_flush(
    f: *mut ffi::sqlite3_file,
    call: impl FnOnce(&ffi::sqlite3_io_methods, *mut ffi::sqlite3_file) -> c_int,
) -> c_int {
    unsafe {
        let w = wal(f);
        match flush(w) {
            ffi::SQLITE_OK => call(inner(w), w.inner),
            rc => rc,
        }
    }
}

unsafe extern "C" fn x_read(
    f: *mut ffi::sqlite3_file,
    out: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: forwarded as received, after the buffer is written out.
    unsafe {
        after_flush(f, |m, file| {
            m.xRead.map_or(ffi::SQLITE_IOERR_READ, |read| {
                read(file, out, amount, offset)
            })
        })
    }
}

unsafe extern "C" fn x_truncate(f: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: as for `x_read`.
    unsafe {
        after_flush(f, |m, file| {
            m.xTruncate
                .map_or(ffi::SQLITE_IOERR_TRUNCATE, |t| t(file, size))
        })
    }
}

unsafe extern "C" fn x_sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: as for `x_read`.
    unsafe {
        after_flush(f, |m, file| {
            m.xSync.map_or(ffi::SQLITE_IOERR_FSYNC, |s| s(file, flags))
        })
    }
}

unsafe extern "C" fn x_file_size(f: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: as for `x_read`.
    unsafe {
        after_flush(f, |m, file| {
            m.xFileSize
                .map_or(ffi::SQLITE_IOERR_FSTAT, |s| s(file, size))
        })
    }
}

unsafe extern "C" fn x_lock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: forwarded as received.
    unsafe {
        let w = wal(f);
        inner(w).xLock.map_or(ffi::SQLITE_OK, |l| l(w.inner, level))
    }
}

unsafe extern "C" fn x_unlock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: forwarded as received.
    unsafe {
        let w = wal(f);
        inner(w)
            .xUnlock
            .map_or(ffi::SQLITE_OK, |u| u(w.inner, level))
    }
}

unsafe extern "C" fn x_check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: forwarded as received.
    unsafe {
        let w = wal(f);
        inner(w)
            .xCheckReservedLock
            .map_or(ffi::SQLITE_OK, |c| c(w.inner, out))
    }
}

unsafe extern "C" fn x_file_control(
    f: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: as for `x_read`.
    unsafe {
        after_flush(f, |m, file| {
            m.xFileControl
                .map_or(ffi::SQLITE_NOTFOUND, |c| c(file, op, arg))
        })
    }
}

unsafe extern "C" fn x_sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwarded as received.
    unsafe {
        let w = wal(f);
        inner(w).xSectorSize.map_or(4096, |s| s(w.inner))
    }
}

unsafe extern "C" fn x_device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwarded as received.
    unsafe {
        let w = wal(f);
        inner(w).xDeviceCharacteristics.map_or(0, |d| d(w.inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{params, Connection, OpenFlags};
    use std::path::{Path, PathBuf};

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hotline-walbuf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A connection through this VFS, as the store's writer opens it.
    fn writer(db: &Path) -> Connection {
        register().unwrap();
        let c = Connection::open_with_flags_and_vfs(db, OpenFlags::default(), VFS_NAME).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.pragma_update(None, "synchronous", "NORMAL").unwrap();
        c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        c.execute_batch("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        c
    }

    fn count_and_check(c: &Connection) -> (i64, String) {
        let n = c
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        let ok = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        (n, ok)
    }

    /// What `kill -9` leaves: the database and its log as they are in the
    /// kernel, opened by plain SQLite, which recovers from the log.
    fn recovered_copy(dir: &Path, db: &Path) -> Connection {
        let copy = dir.join("copy");
        let _ = std::fs::remove_dir_all(&copy);
        std::fs::create_dir_all(&copy).unwrap();
        std::fs::copy(db, copy.join("c.db")).unwrap();
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::copy(&wal, copy.join("c.db-wal")).unwrap();
        Connection::open(copy.join("c.db")).unwrap()
    }

    fn value(i: i64) -> String {
        format!("{i}:{}", "v".repeat((i as usize * 37) % 900))
    }

    #[test]
    fn every_commit_is_in_the_file_when_it_returns() {
        let dir = temp_dir("each");
        let db = dir.join("w.db");
        let w = writer(&db);
        let reader = Connection::open(&db).unwrap();
        for i in 1..=300 {
            w.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", params![i, value(i)])
                .unwrap();
            // The reader finds the commit's frames through the WAL index
            // and reads them from the file with its own descriptor.
            let (n, last): (i64, String) = reader
                .query_row(
                    "SELECT COUNT(*), (SELECT v FROM t WHERE k = ?1) FROM t",
                    [i],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert_eq!((n, last), (i, value(i)), "after commit {i}");
            if i % 50 == 0 {
                // And it is durable as far as the kernel goes: a process
                // killed now leaves a log that recovers it.
                let copy = recovered_copy(&dir, &db);
                assert_eq!(count_and_check(&copy), (i, "ok".into()), "after commit {i}");
            }
        }
        assert_eq!(count_and_check(&reader), (300, "ok".into()));
        let copy = recovered_copy(&dir, &db);
        assert_eq!(count_and_check(&copy), (300, "ok".into()));
        drop((w, reader, copy));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A transaction larger than the page cache spills frames before its
    /// commit, rewrites some of them in place, and passes the size past
    /// which the buffer is written out early.
    #[test]
    fn a_transaction_larger_than_the_cache_and_the_buffer_commits_whole() {
        let dir = temp_dir("big");
        let db = dir.join("w.db");
        let w = writer(&db);
        w.pragma_update(None, "cache_size", 16).unwrap();
        let rows = 20_000;
        w.execute_batch("BEGIN").unwrap();
        for i in 1..=rows {
            w.execute(
                "INSERT INTO t (k, v) VALUES (?1, ?2)",
                params![i, "x".repeat(300)],
            )
            .unwrap();
        }
        w.execute("UPDATE t SET v = k || ':' || v WHERE k % 3 = 0", [])
            .unwrap();
        w.execute_batch("COMMIT").unwrap();
        let reader = Connection::open(&db).unwrap();
        assert_eq!(count_and_check(&reader), (rows, "ok".into()));
        let v: String = reader
            .query_row("SELECT v FROM t WHERE k = 9", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, format!("9:{}", "x".repeat(300)));
        let copy = recovered_copy(&dir, &db);
        assert_eq!(count_and_check(&copy), (rows, "ok".into()));
        drop((w, reader, copy));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The log holds the messages' ciphertext and everything else: it is
    /// created with the database's permissions, as SQLite creates it.
    #[test]
    fn the_log_gets_the_permissions_of_the_database() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("mode");
        let db = dir.join("w.db");
        std::fs::write(&db, b"").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
        let w = writer(&db);
        w.execute("INSERT INTO t (k, v) VALUES (1, 'x')", [])
            .unwrap();
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let mode = std::fs::metadata(&wal).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the log is {mode:o}");
        drop(w);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// After a checkpoint has copied the whole log, the next commit starts
    /// the log over from its header: the buffer starts at offset 0.
    #[test]
    fn the_log_starts_over_after_a_full_checkpoint() {
        let dir = temp_dir("restart");
        let db = dir.join("w.db");
        let w = writer(&db);
        let checkpointer = Connection::open(&db).unwrap();
        for round in 0..5i64 {
            for i in 0..50 {
                let k = round * 50 + i + 1;
                w.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", params![k, value(k)])
                    .unwrap();
            }
            let (busy, log, copied): (i64, i64, i64) = checkpointer
                .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .unwrap();
            assert_eq!((busy, log), (0, copied), "round {round}");
        }
        let frames_after_restart: i64 = {
            w.execute("INSERT INTO t (k, v) VALUES (1000, 'last')", [])
                .unwrap();
            checkpointer
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
                .unwrap()
        };
        assert!(
            (1..10).contains(&frames_after_restart),
            "the log started over: {frames_after_restart} frames"
        );
        let copy = recovered_copy(&dir, &db);
        assert_eq!(count_and_check(&copy), (251, "ok".into()));
        drop((w, checkpointer, copy));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
