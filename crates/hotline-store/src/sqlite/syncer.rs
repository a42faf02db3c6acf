//! The syncer: makes committed groups durable, then publishes them.
//!
//! The writer's connection runs with `synchronous = NORMAL` (SQLite syncs
//! only around checkpoints and when the WAL restarts) and hands each
//! committed group here; the syncer `fdatasync`s the WAL file, once for
//! every group that committed meanwhile, and only then advances the
//! store's position, runs the commit hook and answers the writers, in
//! commit order. So the disk flush of one group overlaps the work of the
//! next instead of stalling the only writer, and still nothing is
//! acknowledged, or shown to readers through the hook, before it is on
//! disk. At [`Durability::Normal`](super::Durability::Normal) groups are
//! answered without a flush.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc};

use parking_lot::RwLock;

use super::writer::{Group, Inbox};
use crate::*;

/// The WAL file of the database at `db`.
pub(super) fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Makes committed groups durable, then publishes them: one `fdatasync` of
/// the WAL file covers every group that arrived meanwhile. fdatasync acts on
/// the file, not the descriptor, so its own descriptor flushes the frames
/// the writer's connection wrote.
pub(super) struct Syncer {
    pub(super) wal: PathBuf,
    /// `Durability::Full`; otherwise groups are answered without a flush.
    pub(super) flush: bool,
    pub(super) position: Arc<AtomicI64>,
    pub(super) hook: Arc<RwLock<Option<CommitHook>>>,
    /// Told of every group answered, so the writer knows the disk is free.
    pub(super) inbox: Arc<Inbox>,
}

impl Syncer {
    pub(super) fn run(self, rx: mpsc::Receiver<Group>) {
        let mut file: Option<std::fs::File> = None;
        while let Ok(first) = rx.recv() {
            let mut groups = vec![first];
            while let Ok(g) = rx.try_recv() {
                groups.push(g);
            }
            let wrote = groups.iter().any(|g| {
                g.results
                    .iter()
                    .any(|r| matches!(r, Ok(placed) if !placed.is_empty()))
            });
            let synced = if self.flush && wrote {
                sync_file(&mut file, &self.wal)
            } else {
                Ok(())
            };
            if let Err(e) = &synced {
                // Durability unknown: nothing in these groups is acknowledged.
                tracing::error!(error = %e, "fdatasync of the WAL failed");
                file = None;
            }
            let n = groups.len();
            self.answer(groups, &synced);
            self.inbox.synced(n);
        }
    }

    fn answer(&self, groups: Vec<Group>, synced: &std::io::Result<()>) {
        let hook = self.hook.read().clone();
        for Group {
            jobs,
            results,
            position: upto,
        } in groups
        {
            if synced.is_ok() {
                self.position.fetch_max(upto, Ordering::AcqRel);
            }
            // The last batch that committed carries the high-water mark.
            let last_ok = results.iter().rposition(|r| r.is_ok());
            for (i, ((batch, reply), result)) in jobs.into_iter().zip(results).enumerate() {
                let result = match (synced, result) {
                    (Err(e), Ok(_)) => Err(StoreError::Engine(format!("flushing the commit: {e}"))),
                    (_, Err(e)) => Err(e),
                    (Ok(()), Ok(placed)) => Ok(Committed {
                        items: placed.into_iter().zip(batch.ops).collect(),
                        high_water: if Some(i) == last_ok { upto } else { 0 },
                    }),
                };
                if let (Some(h), Ok(c)) = (&hook, &result) {
                    h(c);
                }
                let _ = reply.send(result);
            }
        }
    }
}

fn sync_file(file: &mut Option<std::fs::File>, path: &Path) -> std::io::Result<()> {
    if file.is_none() {
        *file = Some(std::fs::OpenOptions::new().read(true).open(path)?);
    }
    file.as_ref().map_or(Ok(()), |f| f.sync_data())
}
