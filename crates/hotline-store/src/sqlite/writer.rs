//! The writer: one thread owns the write connection and commits in groups.
//!
//! It takes every batch waiting in its [`Inbox`] (at most [`MAX_GROUP`]),
//! applies them all in one transaction and commits once. A batch that fails
//! (a retried transaction id, a lost race for a name) rolls the group back,
//! and the group runs again with each batch in its own savepoint, so one
//! failing batch does not fail its neighbours. Stream positions are
//! allocated here, inside the commit, so commit order is position order.
//!
//! The committed group goes to the syncer ([`super::syncer`]), which makes
//! it durable and answers its writers. While a flush is under way the
//! writer lets the next group grow (until [`GROUP_WHILE_FLUSHING`], 16
//! batches) rather than commit it in pieces: it would wait for the next
//! flush either way, and every commit rewrites some pages (the stream
//! position, index interiors) whatever its size. Batches reach the writer
//! through the inbox, a queue under a mutex rather than a channel, so a
//! group costs the writer one wake-up, not one per batch.
//!
//! A failure of the storage itself (a full disk: `ENOSPC`, `EDQUOT`; an I/O
//! error) fails the whole group at once with [`StoreError::Full`] or
//! [`StoreError::Engine`] instead of running it again batch by batch; the
//! transaction is rolled back (`ROLLBACK` issued if SQLite left it open) and
//! the writer goes on to the next group on the same connection. A storage
//! that is full is logged once when it starts and once when it ends.

use std::sync::atomic::Ordering;
use std::sync::mpsc;

use parking_lot::{Condvar, Mutex};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::checkpoint::CountedWal;
use super::{apply_op, engine};
use crate::*;

/// How many waiting batches one commit takes at most.
const MAX_GROUP: usize = 256;
/// While the syncer flushes, the writer holds back a group smaller than this.
const GROUP_WHILE_FLUSHING: usize = 16;

pub(super) type Job = (WriteBatch, oneshot::Sender<Result<Committed>>);

/// The writer's queue. Batches wait here until the writer takes them as a
/// group, and a sender wakes the writer only when that group may be
/// committed now: while the syncer flushes an earlier group, the queue
/// grows silently until it reaches [`GROUP_WHILE_FLUSHING`] or the syncer
/// reports the flush done. (A channel would wake the writer for every batch,
/// only for it to go back to sleep.)
pub(super) struct Inbox {
    state: Mutex<InboxState>,
    wake: Condvar,
}

struct InboxState {
    jobs: Vec<Job>,
    /// Cleared by [`Inbox::close`]: what is queued is still committed.
    open: bool,
    /// Groups the writer has taken and the syncer not yet answered.
    unsynced: usize,
    /// The writer is blocked in [`Inbox::take`].
    writer_waiting: bool,
}

impl InboxState {
    /// Whether the writer should commit what is queued now: a group
    /// committed while the syncer is still flushing an earlier one would
    /// only wait for the next flush anyway, so it grows until the syncer is
    /// free or it is big enough that committing it now saves the next flush
    /// work.
    fn ready(&self) -> bool {
        !self.jobs.is_empty()
            && (!self.open || self.unsynced == 0 || self.jobs.len() >= GROUP_WHILE_FLUSHING)
    }

    fn wake_writer_if_ready(&mut self, wake: &Condvar) {
        if self.writer_waiting && self.ready() {
            self.writer_waiting = false;
            wake.notify_one();
        }
    }
}

impl Inbox {
    pub(super) fn new() -> Self {
        Inbox {
            state: Mutex::new(InboxState {
                jobs: Vec::new(),
                open: true,
                unsynced: 0,
                writer_waiting: false,
            }),
            wake: Condvar::new(),
        }
    }

    /// Queues a batch; gives it back once the store is closed.
    pub(super) fn push(&self, job: Job) -> std::result::Result<(), Job> {
        let mut s = self.state.lock();
        if !s.open {
            return Err(job);
        }
        s.jobs.push(job);
        s.wake_writer_if_ready(&self.wake);
        Ok(())
    }

    /// No more batches: the writer commits what is queued and stops.
    pub(super) fn close(&self) {
        let mut s = self.state.lock();
        s.open = false;
        if s.writer_waiting {
            s.writer_waiting = false;
            self.wake.notify_one();
        }
    }

    /// The syncer has answered `n` groups.
    pub(super) fn synced(&self, n: usize) {
        let mut s = self.state.lock();
        s.unsynced -= n;
        s.wake_writer_if_ready(&self.wake);
    }

    /// The writer has stopped (the syncer went away, or a panic): nothing
    /// more is accepted, and dropping the queued batches' reply senders
    /// fails their requests instead of leaving them waiting.
    fn abandon(&self) {
        // Dropped outside the lock: each drop wakes a waiting request.
        let jobs = {
            let mut s = self.state.lock();
            s.open = false;
            std::mem::take(&mut s.jobs)
        };
        drop(jobs);
    }

    /// The next group to commit, once [`InboxState::ready`]; `None` once the
    /// store is closed and everything queued was taken. The group counts as
    /// unsynced from here until the syncer answers it.
    fn take(&self) -> Option<Vec<Job>> {
        let mut s = self.state.lock();
        loop {
            if s.ready() {
                let jobs = if s.jobs.len() <= MAX_GROUP {
                    std::mem::take(&mut s.jobs)
                } else {
                    s.jobs.drain(..MAX_GROUP).collect()
                };
                s.unsynced += 1;
                return Some(jobs);
            }
            if !s.open && s.jobs.is_empty() {
                return None;
            }
            s.writer_waiting = true;
            self.wake.wait(&mut s);
        }
    }
}

/// One committed (or failed) group on its way from the writer to the syncer.
pub(super) struct Group {
    pub(super) jobs: Vec<Job>,
    pub(super) results: Vec<Placed>,
    /// The stream position after this group: published once it is durable.
    pub(super) position: i64,
}

/// Where the writer's commits go: the syncer, and the checkpointer's two
/// signals (a commit happened; the log is past `restart_frames`).
pub(super) struct WriterLinks {
    pub(super) done: mpsc::Sender<Group>,
    pub(super) dirty: mpsc::SyncSender<()>,
    pub(super) long: mpsc::SyncSender<()>,
    pub(super) restart_frames: i64,
}

pub(super) fn writer_loop(conn: Connection, inbox: &Inbox, mut position: i64, links: WriterLinks) {
    let WriterLinks {
        done,
        dirty,
        long,
        restart_frames,
    } = links;
    struct Abandon<'a>(&'a Inbox);
    impl Drop for Abandon<'_> {
        fn drop(&mut self) {
            self.0.abandon();
        }
    }
    let _abandon = Abandon(inbox);
    let mut wal = CountedWal::new(conn);
    let mut full = FullEpisodes::default();
    while let Some(jobs) = inbox.take() {
        // Batches rarely fail (a retried transaction id, a lost race for a
        // name), so the group first runs without a savepoint per batch,
        // which would copy every page it touches into a statement journal.
        // If one fails, the whole transaction is rolled back and the group
        // runs again with each batch isolated.
        let outcome = match commit_group(&mut wal.conn, &jobs, position, false) {
            Ok(None) => commit_group(&mut wal.conn, &jobs, position, true),
            other => other,
        };
        // SQLite rolls a transaction back by itself after some I/O errors
        // (a full disk among them) but not all: a group that failed must
        // not leave one open, or the next group would run inside it.
        if outcome.is_err() && !wal.conn.is_autocommit() {
            if let Err(e) = wal.conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "rolling back a failed commit");
            }
        }
        match &outcome {
            Ok(Some(_)) => full.observe(None),
            Err(e) => full.observe(Some(e)),
            Ok(None) => {}
        }
        let results = match outcome {
            Ok(Some((results, next))) => {
                // Full means a round is already due.
                let _ = dirty.try_send(());
                // A fast writer fills the log long before the next round.
                if wal.frames.load(Ordering::Relaxed) >= restart_frames {
                    let _ = long.try_send(());
                }
                position = next;
                results
            }
            // Only the fast path answers `None`; should the isolated run
            // ever do so, nothing of the group was committed.
            Ok(None) => jobs
                .iter()
                .map(|_| Err(StoreError::Engine("group not committed".into())))
                .collect(),
            // Nothing of the group was committed: every batch fails alike.
            Err(e) => jobs.iter().map(|_| Err(e.clone())).collect(),
        };
        let group = Group {
            jobs,
            results,
            position,
        };
        // Failed groups go the same way, so answers keep commit order.
        if done.send(group).is_err() {
            return;
        }
    }
}

/// Positions given to each operation of a committed batch (`0` for
/// operations that take none), or why the batch failed.
pub(super) type Placed = Result<Vec<i64>>;

/// Commits one group in one transaction, continuing the stream after
/// `position`. With `isolate`, each batch runs in its own savepoint, and a
/// failing batch is rolled back alone; without, the first failure rolls the
/// whole transaction back and answers `Ok(None)`. A failure of the storage
/// itself (a full disk, an I/O error) fails the whole group either way: the
/// other batches would fail alike, and SQLite may already have rolled the
/// transaction back.
fn commit_group(
    conn: &mut Connection,
    jobs: &[Job],
    position: i64,
    isolate: bool,
) -> Result<Option<(Vec<Placed>, i64)>> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(engine)?;
    let fail = |e: rusqlite::Error| failure(&tx, e);
    // Another process (`hotline admin ...` beside a running server) may have
    // committed positions: continue after the highest. (`position` is this
    // thread's own: commits the syncer has not made durable yet already took
    // theirs.)
    let stored: Option<i64> = tx
        .prepare_cached("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'stream_pos'")
        .and_then(|mut q| q.query_row([], |r| r.get(0)).optional())
        .map_err(fail)?;
    let start = position.max(stored.unwrap_or(0));
    let mut next = start;
    let mut results: Vec<Placed> = Vec::with_capacity(jobs.len());
    for (batch, _) in jobs {
        if !isolate {
            match apply_batch(&tx, batch, &mut next) {
                Ok(placed) => results.push(Ok(placed)),
                // Dropping the transaction rolls it back.
                Err(Failed {
                    error,
                    storage: true,
                }) => return Err(error),
                Err(_) => return Ok(None),
            }
            continue;
        }
        let saved = next;
        let sp = tx.unchecked_transaction_savepoint().map_err(fail)?;
        match apply_batch(sp.conn, batch, &mut next) {
            Ok(placed) => {
                sp.commit().map_err(fail)?;
                results.push(Ok(placed));
            }
            Err(Failed {
                error,
                storage: true,
            }) => return Err(error),
            Err(Failed { error, .. }) => {
                sp.rollback().map_err(fail)?;
                next = saved;
                results.push(Err(error));
            }
        }
    }
    // Rows of some streams are deleted (delivered to-device messages), so
    // the high-water mark is kept: positions are never reused after a
    // restart.
    if next != start {
        tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('stream_pos', ?1)")
            .and_then(|mut q| q.execute(params![next.to_string()]))
            .map_err(fail)?;
    }
    // On failure the transaction is dropped, which rolls it back if SQLite
    // has not already.
    if let Err(e) = tx.commit() {
        return Err(failure(conn, e));
    }
    Ok(Some((results, next)))
}

/// Savepoint helper: rusqlite's savepoint needs `&mut Connection`; inside the
/// group transaction we issue the statements ourselves.
trait SavepointExt {
    fn unchecked_transaction_savepoint(&self) -> rusqlite::Result<Sp<'_>>;
}

struct Sp<'a> {
    conn: &'a Connection,
    done: bool,
}

impl SavepointExt for rusqlite::Transaction<'_> {
    fn unchecked_transaction_savepoint(&self) -> rusqlite::Result<Sp<'_>> {
        self.execute_batch("SAVEPOINT batch")?;
        Ok(Sp {
            conn: self,
            done: false,
        })
    }
}

impl Sp<'_> {
    fn commit(mut self) -> rusqlite::Result<()> {
        self.done = true;
        self.conn.execute_batch("RELEASE batch")
    }
    fn rollback(mut self) -> rusqlite::Result<()> {
        self.done = true;
        self.conn.execute_batch("ROLLBACK TO batch; RELEASE batch")
    }
}

impl Drop for Sp<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.execute_batch("ROLLBACK TO batch; RELEASE batch");
        }
    }
}

/// `errno` values of a storage out of space (Linux): the file system is
/// full (`ENOSPC`), or the user's quota is (`EDQUOT`).
const NO_SPACE_ERRNOS: [i32; 2] = [28, 122];

/// What a failed statement on `c` means to the store's callers. SQLite
/// reports a full disk as `SQLITE_FULL` when a file write falls short, but
/// as an I/O error when growing the WAL index fails; the system error
/// behind it tells.
fn failure(c: &Connection, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => f.code,
        _ => return engine(e),
    };
    match code {
        ConstraintViolation => StoreError::Conflict(e.to_string()),
        DiskFull => StoreError::Full(e.to_string()),
        // SAFETY: the connection is open; this reads its last system error.
        SystemIoFailure
            if NO_SPACE_ERRNOS
                .contains(&unsafe { rusqlite::ffi::sqlite3_system_errno(c.handle()) }) =>
        {
            StoreError::Full(e.to_string())
        }
        _ => engine(e),
    }
}

/// Whether a statement failed for want of storage (space, I/O) rather than
/// because of what it wrote.
fn storage_failed(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, DiskFull | SystemIoFailure | CannotOpen | DatabaseCorrupt | NotADatabase))
}

/// Why a batch failed, and whether the storage did (then the whole group
/// fails; see [`commit_group`]).
struct Failed {
    error: StoreError,
    storage: bool,
}

fn apply_batch(
    c: &Connection,
    batch: &WriteBatch,
    next: &mut i64,
) -> std::result::Result<Vec<i64>, Failed> {
    let mut placed = Vec::with_capacity(batch.ops.len());
    for op in &batch.ops {
        let pos = if op.takes_position() {
            *next += 1;
            *next
        } else {
            0
        };
        apply_op(c, op, pos).map_err(|e| Failed {
            storage: storage_failed(&e),
            error: failure(c, e),
        })?;
        placed.push(pos);
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::super::{open, SCHEMA};
    use super::*;
    use std::sync::Arc;

    /// One group: two batches that commit around one that conflicts (a
    /// registration token that exists already), each with an account-data
    /// write that takes a stream position.
    fn group_with_a_conflict() -> Vec<Job> {
        let batch = |token: &str, kind: &str| {
            let mut b = WriteBatch::new();
            b.push(WriteOp::PutAccountData {
                user_id: "@a:test".into(),
                room_id: String::new(),
                kind: kind.into(),
                content: "{}".into(),
            });
            b.push(WriteOp::CreateRegistrationToken(RegistrationTokenRow {
                token: token.into(),
                uses_allowed: None,
                completed: 0,
                expiry_ts: None,
            }));
            (b, oneshot::channel().0)
        };
        vec![batch("t1", "k1"), batch("t1", "k2"), batch("t2", "k3")]
    }

    fn kinds_stored(conn: &Connection) -> Vec<(String, i64)> {
        conn.prepare("SELECT kind, pos FROM account_data ORDER BY pos")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// A failing batch costs the group its fast path, never its neighbours:
    /// without savepoints the whole transaction is rolled back, and run
    /// again isolated, only the failing batch is left out, and the stream
    /// positions stay contiguous.
    #[test]
    fn a_conflicting_batch_fails_alone_in_its_group() {
        let dir = std::env::temp_dir().join(format!("hotline-group-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut conn = open(&dir.join("hotline.db"), "NORMAL").unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let jobs = group_with_a_conflict();

        assert!(commit_group(&mut conn, &jobs, 10, false).unwrap().is_none());
        assert_eq!(kinds_stored(&conn), vec![], "the fast path left rows");

        let (results, next) = commit_group(&mut conn, &jobs, 10, true).unwrap().unwrap();
        assert_eq!(results[0].as_ref().unwrap(), &vec![11, 0]);
        assert!(
            matches!(results[1], Err(StoreError::Conflict(_))),
            "{:?}",
            results[1]
        );
        assert_eq!(results[2].as_ref().unwrap(), &vec![12, 0]);
        assert_eq!(next, 12);
        assert_eq!(
            kinds_stored(&conn),
            vec![("k1".to_owned(), 11), ("k3".to_owned(), 12)]
        );
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn job() -> (Job, oneshot::Receiver<Result<Committed>>) {
        let (tx, rx) = oneshot::channel();
        ((WriteBatch::new(), tx), rx)
    }

    #[test]
    fn a_group_waits_for_the_flush_of_the_last_unless_it_grows_big() {
        let inbox = Inbox::new();
        inbox.push(job().0).ok().unwrap();
        assert_eq!(inbox.take().map(|g| g.len()), Some(1), "idle disk: at once");
        for _ in 0..GROUP_WHILE_FLUSHING - 1 {
            inbox.push(job().0).ok().unwrap();
        }
        assert!(!inbox.state.lock().ready(), "held while the syncer flushes");
        inbox.synced(1);
        assert!(
            inbox.state.lock().ready(),
            "released when the flush is done"
        );
        assert_eq!(
            inbox.take().map(|g| g.len()),
            Some(GROUP_WHILE_FLUSHING - 1)
        );
        for _ in 0..GROUP_WHILE_FLUSHING {
            inbox.push(job().0).ok().unwrap();
        }
        assert!(
            inbox.state.lock().ready(),
            "a big group goes during a flush"
        );
    }

    #[test]
    fn a_blocked_writer_is_woken_by_the_end_of_the_flush() {
        let inbox = Arc::new(Inbox::new());
        inbox.push(job().0).ok().unwrap();
        inbox.take().unwrap();
        inbox.push(job().0).ok().unwrap();
        let writer = std::thread::spawn({
            let inbox = inbox.clone();
            move || inbox.take().map(|g| g.len())
        });
        while !inbox.state.lock().writer_waiting {
            std::thread::yield_now();
        }
        inbox.synced(1);
        assert_eq!(writer.join().unwrap(), Some(1));
    }

    #[test]
    fn a_closed_inbox_refuses_batches_and_hands_over_the_queued_ones() {
        let inbox = Inbox::new();
        inbox.push(job().0).ok().unwrap();
        inbox.take().unwrap();
        inbox.push(job().0).ok().unwrap();
        inbox.close();
        assert!(inbox.push(job().0).is_err());
        assert_eq!(
            inbox.take().map(|g| g.len()),
            Some(1),
            "closing commits the rest without waiting for the flush"
        );
        assert!(inbox.take().is_none());
    }

    #[test]
    fn batches_left_by_a_stopped_writer_fail_instead_of_hanging() {
        let inbox = Inbox::new();
        inbox.push(job().0).ok().unwrap();
        inbox.take().unwrap();
        let (queued, mut answer) = job();
        inbox.push(queued).ok().unwrap();
        inbox.abandon();
        assert!(matches!(
            answer.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(inbox.push(job().0).is_err());
    }
}
