//! The embedded engine: one SQLite file in WAL mode.
//!
//! One writer thread owns the write connection and commits in groups
//! ([`writer`]); a syncer thread makes each committed group durable and only
//! then publishes it and answers its writers ([`syncer`]); a checkpointer
//! thread copies the WAL into the main file off the commit path
//! ([`checkpoint`]). Readers use a small pool of read-only connections
//! (eight kept, [`READ_POOL`]); WAL lets them run beside the writer.
//!
//! This file holds the store itself (open, close, the read pool and the
//! shared read helpers [`SqliteStore::query_one`],
//! [`SqliteStore::query_all`] and [`SqliteStore::query_value`]) and the dispatcher [`apply_op`], which hands
//! each [`WriteOp`] to its domain's function. Each domain file
//! ([`accounts`], [`rooms`], [`ephemeral`], [`keys`], [`key_backup`],
//! [`identity`], [`media`]) holds that domain's SQL: its writes, its row
//! mappers and its read trait's implementation.
//!
//! Every connection keeps up to 64 prepared statements cached. The writer's
//! and the checkpointer's connections retry a busy database every 50 µs
//! ([`BUSY_STEP`]) for up to 10 s; readers wait up to 10 s with SQLite's own
//! busy handler.

mod accounts;
mod checkpoint;
mod ephemeral;
mod federation;
mod identity;
mod key_backup;
mod keys;
mod media;
mod rooms;
mod syncer;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc};

use parking_lot::{Mutex, RwLock};
use rusqlite::types::FromSql;
use rusqlite::{params, Connection, OptionalExtension, Params, Row};
use tokio::sync::oneshot;

use crate::walbuf;
use crate::*;
use checkpoint::{checkpoint_loop, WAL_SIZE_LIMIT};
use syncer::{wal_path, Syncer};
use writer::{writer_loop, Group, Inbox, WriterLinks};

const SCHEMA: &str = include_str!("../schema.sql");
/// Busy handlers retry this often.
const BUSY_STEP: std::time::Duration = std::time::Duration::from_micros(50);
/// Prepared statements each connection keeps.
const STATEMENT_CACHE: usize = 64;
/// Read-only connections kept for reuse; a read finding none opens one.
const READ_POOL: usize = 8;

/// The stream's high-water mark: the highest position any table holds, or
/// the one `meta` notes (positions of rows since replaced or deleted).
pub(crate) const HIGH_WATER_MARK: &str = "SELECT MAX(p) FROM (SELECT MAX(pos) AS p FROM events UNION ALL SELECT MAX(pos) FROM account_data UNION ALL SELECT MAX(pos) FROM receipts
     UNION ALL SELECT MAX(pos) FROM key_changes UNION ALL SELECT MAX(pos) FROM to_device UNION ALL SELECT MAX(pos) FROM presence
     UNION ALL SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'stream_pos')";

/// How hard a commit waits for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit: survives power loss.
    Full,
    /// fsync at WAL checkpoints: survives a killed process, not power loss.
    Normal,
}

impl Durability {
    /// SQLite's `synchronous` level for this durability.
    fn synchronous(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

fn engine<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Engine(e.to_string())
}

fn open(path: &Path, synchronous: &str) -> Result<Connection> {
    configure(Connection::open(path).map_err(engine)?, synchronous)
}

/// The writer's connection: through [`walbuf`], which writes each commit's
/// WAL frames in one go, at `synchronous = NORMAL` as that VFS requires.
fn open_writer(path: &Path) -> Result<Connection> {
    walbuf::register().map_err(StoreError::Engine)?;
    let conn =
        Connection::open_with_flags_and_vfs(path, rusqlite::OpenFlags::default(), walbuf::VFS_NAME)
            .map_err(engine)?;
    let conn = configure(conn, Durability::Normal.synchronous())?;
    let level: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .map_err(engine)?;
    if level > 1 {
        return Err(StoreError::Engine(format!(
            "the writer's connection must run at synchronous NORMAL, not {level}"
        )));
    }
    Ok(conn)
}

fn configure(conn: Connection, synchronous: &str) -> Result<Connection> {
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(engine)?;
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(engine)?;
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(engine)?;
    // SQLite's own busy handler sleeps 1, 2, 5, 10… ms between tries, far
    // longer than a commit or a RESTART round holds a lock here.
    conn.busy_handler(Some(wait_briefly)).map_err(engine)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Busy handler of every connection: retries for up to 10 s.
fn wait_briefly(tries: i32) -> bool {
    std::thread::sleep(BUSY_STEP);
    (tries as u128) < 10_000_000 / BUSY_STEP.as_micros()
}

/// SQLite engine.
pub struct SqliteStore {
    path: PathBuf,
    inbox: Arc<Inbox>,
    readers: Mutex<Vec<Connection>>,
    hook: Arc<RwLock<Option<CommitHook>>>,
    position: Arc<AtomicI64>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    syncer: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl Into<PathBuf>, durability: Durability) -> Result<Arc<Self>> {
        Self::open_with_wal_limit(path.into(), durability, WAL_SIZE_LIMIT)
    }

    /// [`SqliteStore::open`] with another [`WAL_SIZE_LIMIT`] (tests).
    fn open_with_wal_limit(
        path: PathBuf,
        durability: Durability,
        wal_limit: i64,
    ) -> Result<Arc<Self>> {
        let restart_frames = wal_limit / 4096;
        // The syncer makes each commit durable (`syncer`).
        let conn = open_writer(&path)?;
        conn.execute_batch(SCHEMA).map_err(engine)?;
        // Checkpoints are the checkpointer thread's job (`checkpoint`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(engine)?;
        conn.pragma_update(None, "journal_size_limit", wal_limit)
            .map_err(engine)?;
        let (dirty_tx, dirty_rx) = mpsc::sync_channel::<()>(1);
        let (long_tx, long_rx) = mpsc::sync_channel::<()>(1);
        let checkpointer = {
            let conn = open(&path, durability.synchronous())?;
            std::thread::Builder::new()
                .name("sqlite-checkpt".into())
                .spawn(move || checkpoint_loop(conn, dirty_rx, long_rx, restart_frames))
                .map_err(engine)?
        };
        let position: i64 = conn
            .query_row(HIGH_WATER_MARK, [], |r| r.get::<_, Option<i64>>(0))
            .map_err(engine)?
            .unwrap_or(0);
        let position = Arc::new(AtomicI64::new(position));
        let hook: Arc<RwLock<Option<CommitHook>>> = Arc::new(RwLock::new(None));
        let inbox = Arc::new(Inbox::new());
        let (done_tx, done_rx) = mpsc::channel::<Group>();
        let syncer = {
            let syncer = Syncer {
                wal: wal_path(&path),
                flush: durability == Durability::Full,
                position: position.clone(),
                hook: hook.clone(),
                inbox: inbox.clone(),
            };
            std::thread::Builder::new()
                .name("sqlite-syncer".into())
                .spawn(move || syncer.run(done_rx))
                .map_err(engine)?
        };
        let writer = {
            let start = position.load(Ordering::Acquire);
            std::thread::Builder::new()
                .name("sqlite-writer".into())
                .spawn({
                    let inbox = inbox.clone();
                    move || {
                        let links = WriterLinks {
                            done: done_tx,
                            dirty: dirty_tx,
                            long: long_tx,
                            restart_frames,
                        };
                        writer_loop(conn, &inbox, start, links)
                    }
                })
                .map_err(engine)?
        };
        Ok(Arc::new(Self {
            path,
            inbox,
            readers: Mutex::new(Vec::new()),
            hook,
            position,
            writer: Mutex::new(Some(writer)),
            syncer: Mutex::new(Some(syncer)),
            checkpointer: Mutex::new(Some(checkpointer)),
        }))
    }

    /// Stops the writer after the queued batches are committed.
    pub fn close(&self) {
        self.inbox.close();
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
        // The writer's exit closed the syncer's channel: it answers the
        // groups still waiting for the disk and stops.
        if let Some(h) = self.syncer.lock().take() {
            let _ = h.join();
        }
        // The writer's exit closed the checkpointer's channel: it copies
        // what is left and stops.
        if let Some(h) = self.checkpointer.lock().take() {
            let _ = h.join();
        }
    }

    /// Runs `f` on a read-only connection from the pool (opening one if the
    /// pool is empty), and keeps the connection if the pool has room.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = match self.readers.lock().pop() {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(engine)?;
                c.busy_timeout(std::time::Duration::from_secs(10))
                    .map_err(engine)?;
                c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                c
            }
        };
        let out = f(&conn).map_err(engine);
        let mut pool = self.readers.lock();
        if pool.len() < READ_POOL {
            pool.push(conn);
        }
        out
    }

    /// The first row of `sql` (a cached statement), mapped, if there is one.
    fn query_one<T>(
        &self,
        sql: &str,
        params: impl Params,
        map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        self.read(|c| c.prepare_cached(sql)?.query_row(params, map).optional())
    }

    /// Every row of `sql` (a cached statement), mapped.
    fn query_all<T>(
        &self,
        sql: &str,
        params: impl Params,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        self.read(|c| c.prepare_cached(sql)?.query_map(params, map)?.collect())
    }

    /// The first column of the one row `sql` always answers (an aggregate:
    /// `COUNT`, `MAX`).
    fn query_value<T: FromSql>(&self, sql: &str, params: impl Params) -> Result<T> {
        self.read(|c| c.prepare_cached(sql)?.query_row(params, |r| r.get(0)))
    }
}

/// Row mapper of a single column.
fn column<T: FromSql>(r: &Row<'_>) -> rusqlite::Result<T> {
    r.get(0)
}

/// Row mapper of two columns.
fn pair<A: FromSql, B: FromSql>(r: &Row<'_>) -> rusqlite::Result<(A, B)> {
    Ok((r.get(0)?, r.get(1)?))
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl Store for SqliteStore {
    fn write(&self, batch: WriteBatch) -> WriteFuture {
        let (reply, rx) = oneshot::channel();
        let sent = self.inbox.push((batch, reply)).is_ok();
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Engine("store is closed".into()));
            }
            rx.await
                .map_err(|_| StoreError::Engine("writer stopped".into()))?
        })
    }

    fn set_commit_hook(&self, hook: CommitHook) {
        *self.hook.write() = Some(hook);
    }

    fn current_position(&self) -> i64 {
        self.position.load(Ordering::Acquire)
    }

    fn count_events(&self) -> Result<u64> {
        self.query_value::<i64>("SELECT COUNT(*) FROM events", params![])
            .map(|n| n.max(0) as u64)
    }

    fn stored_position(&self) -> Result<i64> {
        let stored: Option<i64> = self.query_one(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'stream_pos'",
            params![],
            column,
        )?;
        Ok(stored.unwrap_or(0).max(self.current_position()))
    }
}

/// Applies one operation of a batch on the writer's connection; `pos` is
/// the stream position it takes (`0` for operations that take none). One
/// arm per variant, so the compiler checks every operation is handled.
fn apply_op(c: &Connection, op: &WriteOp, pos: i64) -> rusqlite::Result<()> {
    match op {
        // ----- accounts -----
        WriteOp::CreateUser(u) => accounts::create_user(c, u),
        WriteOp::SetPassword {
            user_id,
            password_hash,
        } => accounts::set_password(c, user_id, password_hash),
        WriteOp::SetProfile {
            user_id,
            displayname,
            avatar_url,
        } => accounts::set_profile(c, user_id, displayname, avatar_url),
        WriteOp::Deactivate { user_id } => accounts::deactivate(c, user_id),
        WriteOp::UpsertDevice(d) => accounts::upsert_device(c, d),
        WriteOp::DeleteDevice { user_id, device_id } => {
            accounts::delete_device(c, user_id, device_id)
        }
        WriteOp::InsertToken(t) => accounts::insert_token(c, t),
        WriteOp::DeleteDeviceTokens { user_id, device_id } => {
            accounts::delete_device_tokens(c, user_id, device_id)
        }
        WriteOp::SetDeviceSeen {
            user_id,
            device_id,
            ts,
            ip,
        } => accounts::set_device_seen(c, user_id, device_id, *ts, ip.as_deref()),
        WriteOp::CreateRegistrationToken(t) => accounts::create_registration_token(c, t),
        WriteOp::UseRegistrationToken { token, now_ms } => {
            accounts::use_registration_token(c, token, *now_ms)
        }
        WriteOp::PutFilter {
            user_id,
            filter_id,
            json,
        } => accounts::put_filter(c, user_id, filter_id, json),
        WriteOp::PutMeta { key, value } => accounts::put_meta(c, key, value),
        WriteOp::PutPusher(p) => accounts::put_pusher(c, p),
        WriteOp::DeletePusher {
            user_id,
            app_id,
            pushkey,
        } => accounts::delete_pusher(c, user_id, app_id, pushkey),
        WriteOp::DeletePushersOfKey {
            app_id,
            pushkey,
            except_user,
        } => accounts::delete_pushers_of_key(c, app_id, pushkey, except_user),
        WriteOp::SetPusherPosition {
            user_id,
            app_id,
            pushkey,
            position,
        } => accounts::set_pusher_position(c, user_id, app_id, pushkey, *position),

        // ----- rooms -----
        WriteOp::CreateRoom(r) => rooms::create_room(c, r),
        WriteOp::AppendEvent(e) => rooms::append_event(c, e, pos),
        WriteOp::AppendBackfilled(e) => rooms::append_backfilled(c, e),
        WriteOp::PutOutlier {
            event_id,
            room_id,
            json,
        } => rooms::put_outlier(c, event_id, room_id, json),
        WriteOp::SetCurrentState {
            room_id,
            event_type,
            state_key,
            event_id,
            membership,
        } => rooms::set_current_state(
            c,
            room_id,
            (event_type, state_key),
            event_id,
            membership,
            pos,
        ),
        WriteOp::ForgetRoom { user_id, room_id } => rooms::forget_room(c, user_id, room_id),
        WriteOp::PutAlias(a) => rooms::put_alias(c, a),
        WriteOp::DeleteAlias { alias } => rooms::delete_alias(c, alias),
        WriteOp::SetRoomPublished { room_id, published } => {
            rooms::set_room_published(c, room_id, *published)
        }
        WriteOp::RecordTxn {
            user_id,
            device_id,
            txn_id,
        } => rooms::record_txn(c, user_id, device_id, txn_id),

        // ----- ephemeral -----
        WriteOp::PutAccountData {
            user_id,
            room_id,
            kind,
            content,
        } => ephemeral::put_account_data(c, user_id, room_id, kind, content, pos),
        WriteOp::PutReceipt {
            room_id,
            user_id,
            receipt_type,
            thread_id,
            event_id,
            ts,
        } => ephemeral::put_receipt(
            c,
            ephemeral::NewReceipt {
                room_id,
                user_id,
                receipt_type,
                thread_id,
                event_id,
                ts: *ts,
            },
            pos,
        ),
        WriteOp::PutPresence {
            user_id,
            state,
            status_msg,
            last_active_ts,
        } => ephemeral::put_presence(
            c,
            user_id,
            state,
            status_msg.as_deref(),
            *last_active_ts,
            pos,
        ),

        // ----- keys -----
        WriteOp::PutDeviceKeys {
            user_id,
            device_id,
            json,
        } => keys::put_device_keys(c, user_id, device_id, json),
        WriteOp::PutOneTimeKeys {
            user_id,
            device_id,
            keys,
        } => keys::put_one_time_keys(c, user_id, device_id, keys),
        WriteOp::PutFallbackKey {
            user_id,
            device_id,
            algorithm,
            key_id,
            json,
        } => keys::put_fallback_key(c, user_id, device_id, algorithm, key_id, json),
        WriteOp::DeleteOneTimeKey {
            user_id,
            device_id,
            key_id,
        } => keys::delete_one_time_key(c, user_id, device_id, key_id),
        WriteOp::MarkFallbackUsed {
            user_id,
            device_id,
            algorithm,
        } => keys::mark_fallback_used(c, user_id, device_id, algorithm),
        WriteOp::PutCrossSigningKey {
            user_id,
            key_type,
            json,
        } => keys::put_cross_signing_key(c, user_id, key_type, json),
        WriteOp::PutKeySignature(k) => keys::put_key_signature(c, k),
        WriteOp::KeyChange { user_id } => keys::key_change(c, user_id, pos),
        WriteOp::PutToDevice {
            user_id,
            device_id,
            json,
            max_queued,
        } => keys::put_to_device(c, user_id, device_id, json, *max_queued, pos),
        WriteOp::DeleteToDevice {
            user_id,
            device_id,
            upto,
        } => keys::delete_to_device(c, user_id, device_id, *upto),

        // ----- key backup -----
        WriteOp::CreateBackupVersion(v) => key_backup::create_version(c, v),
        WriteOp::UpdateBackupVersion {
            user_id,
            version,
            auth_data,
        } => key_backup::update_version(c, user_id, *version, auth_data),
        WriteOp::DeleteBackupVersion { user_id, version } => {
            key_backup::delete_version(c, user_id, *version)
        }
        WriteOp::PutBackupKey {
            user_id,
            version,
            key,
        } => key_backup::put_key(c, user_id, *version, key),
        WriteOp::DeleteBackupKeys {
            user_id,
            version,
            room_id,
            session_id,
        } => key_backup::delete_keys(
            c,
            user_id,
            *version,
            room_id.as_deref(),
            session_id.as_deref(),
        ),

        // ----- identity -----
        WriteOp::PutOfficial(o) => identity::put_official(c, o),
        WriteOp::PutAttestation(a) => identity::put_attestation(c, a),
        WriteOp::RevokeAttestation { user_id, ts } => identity::revoke_attestation(c, user_id, *ts),
        WriteOp::PutLineInvite(i) => identity::put_line_invite(c, i),
        WriteOp::UseLineInvite {
            code,
            now_ms,
            redeemer,
        } => identity::use_line_invite(c, code, *now_ms, redeemer),
        WriteOp::RevokeLineInvite { code } => identity::revoke_line_invite(c, code),
        WriteOp::PutLine(l) => identity::put_line(c, l),
        WriteOp::AppendAudit(a) => identity::append_audit(c, a),

        // ----- media -----
        WriteOp::PutMedia(m) => media::put_media(c, m),
        WriteOp::PutRemoteMedia(m) => media::put_remote_media(c, m),

        // ----- federation -----
        WriteOp::QueueFederation {
            destination,
            event_id,
        } => federation::queue(c, destination, event_id),
        WriteOp::DequeueFederation { destination, upto } => {
            federation::dequeue(c, destination, *upto)
        }
        WriteOp::QueueFederationEdu { destination, edu } => {
            federation::queue_edu(c, destination, edu)
        }
        WriteOp::DequeueFederationEdus { destination, upto } => {
            federation::dequeue_edus(c, destination, *upto)
        }
    }
}

/// The error a write answers when a conditional update matched no row (a
/// token used up or expired): a constraint failure, so the batch fails
/// alone as a conflict.
fn refused(why: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
        Some(why.into()),
    )
}
