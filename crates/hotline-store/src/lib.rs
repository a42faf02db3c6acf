//! Hotline's storage: one interface ([`Store`]), engines behind it.
//!
//! The store knows rows, not rules: it never decides who may do what, and it
//! never parses event content beyond what it is handed as typed fields.
//!
//! **Architecture Invariant:** a write future resolves `Ok` only after the
//! transaction holding it is committed. Callers acknowledge clients after that
//! and never before.
//!
//! **Architecture Invariant:** stream positions are allocated by the store at
//! commit time, so commit order and position order are the same. The commit
//! hook sees every committed batch in position order, before any writer is
//! told its write succeeded.
//!
//! **API Boundary:** nothing engine-specific (SQL, connection types, SQLite
//! error codes) crosses this crate's public interface.

mod backup;
mod migrate;
mod postgres;
mod sqlite;
mod traits;
mod types;
mod walbuf;

pub use backup::BackupReport;
pub use migrate::{migrate_sqlite_to_postgres, MigrationReport};
pub use postgres::PostgresStore;
pub use sqlite::{Durability, SqliteStore};
pub use traits::*;
pub use types::*;

/// Every storage trait, for callers of a [`Store`]: the domain traits'
/// methods need their trait in scope.
pub mod prelude {
    pub use crate::traits::*;
    pub use crate::Store;
}

use std::sync::Arc;

/// Result of a store call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store call failed. Never shown to clients as-is.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness constraint was hit (user id taken, alias taken, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The storage ran out of space (the disk or a quota is full). Nothing
    /// of the write was kept; the same write may succeed once space returns.
    #[error("storage full: {0}")]
    Full(String),
    /// The engine cannot store a value as given (PostgreSQL's text holds no
    /// NUL character). Nothing of the write was kept.
    #[error("unstorable value: {0}")]
    Invalid(String),
    /// The engine failed (I/O, corruption, closed).
    #[error("storage engine: {0}")]
    Engine(String),
}

/// The writer's log of storage-full episodes, shared by the engines: an
/// episode is logged once when it starts and once when it ends, not for
/// every group in between; other failures are logged each time.
#[derive(Default)]
pub(crate) struct FullEpisodes {
    since: Option<std::time::Instant>,
}

impl FullEpisodes {
    /// Notes a group's outcome: committed, or failed with `error`.
    pub(crate) fn observe(&mut self, error: Option<&StoreError>) {
        match (error, self.since) {
            (None, Some(since)) => {
                tracing::warn!(
                    after_seconds = since.elapsed().as_secs(),
                    "storage has space again: writes succeed"
                );
                self.since = None;
            }
            (Some(StoreError::Full(e)), None) => {
                tracing::error!(
                    error = %e,
                    "storage full: writes are refused (M_RESOURCE_LIMIT_EXCEEDED) until space returns"
                );
                self.since = Some(std::time::Instant::now());
            }
            (Some(StoreError::Full(e)), Some(_)) => {
                tracing::debug!(error = %e, "storage still full")
            }
            (Some(e), _) => tracing::error!(error = %e, "commit failed"),
            (None, None) => {}
        }
    }
}

/// Called with each committed batch, in commit (= stream position) order,
/// before the writers of that batch are answered.
pub type CommitHook = Arc<dyn Fn(&Committed) + Send + Sync>;

/// Called with each [`Broadcast`] another server process sent.
pub type BroadcastHook = Arc<dyn Fn(&Broadcast) + Send + Sync>;

/// The storage interface. Reads may run concurrently; writes are batched
/// and committed in order.
///
/// The reads are split by domain ([`AccountStore`], [`RoomStore`],
/// [`EphemeralStore`], [`KeyStore`], [`KeyBackupStore`], [`IdentityStore`],
/// [`MediaStore`], [`FederationStore`]), so an engine keeps each domain in its own file and a
/// second engine implements the same traits. This trait holds the write
/// path and the stream position. Callers holding an `Arc<dyn Store>` bring
/// the domain traits into scope with `use hotline_store::prelude::*;`.
pub trait Store:
    AccountStore
    + RoomStore
    + EphemeralStore
    + KeyStore
    + KeyBackupStore
    + IdentityStore
    + MediaStore
    + FederationStore
    + Send
    + Sync
    + 'static
{
    /// Commits `batch` atomically; positions are assigned to the stream
    /// items in it. Resolves after the commit is durable.
    fn write(&self, batch: WriteBatch) -> WriteFuture;

    /// Installs the hook that observes committed batches (once, at start).
    fn set_commit_hook(&self, hook: CommitHook);

    /// The highest stream position committed so far.
    fn current_position(&self) -> i64;

    /// How many room events the database holds (read once at start; the
    /// server counts its own commits from there).
    fn count_events(&self) -> Result<u64>;

    /// The highest stream position in the database, including positions
    /// committed by another process since this one last wrote.
    fn stored_position(&self) -> Result<i64>;

    /// Tells the other server processes on this database of an ephemeral
    /// change, one that is never stored (typing). Best effort, like the
    /// change itself. Nothing to do where there are no others (SQLite: one
    /// serving process).
    fn broadcast(&self, _message: &Broadcast) {}

    /// Installs the hook that hears other processes' broadcasts (once, at
    /// start).
    fn set_broadcast_hook(&self, _hook: BroadcastHook) {}

    /// Whether other server processes may share this database, so what one
    /// process keeps in memory for the deployment (rate limits) has to be
    /// broadcast. False on SQLite (one serving process).
    fn shared(&self) -> bool {
        false
    }

    /// Whether this process runs the deployment's one-per-deployment jobs
    /// (of several processes on one database, exactly one does). Always
    /// true on SQLite.
    fn runs_deployment_jobs(&self) -> bool {
        true
    }
}

/// The future a [`Store::write`] returns.
pub type WriteFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Committed>> + Send>>;
