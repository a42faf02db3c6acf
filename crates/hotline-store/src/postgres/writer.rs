//! The writer: one thread, one connection, commits in groups.
//!
//! It takes every batch waiting in its queue (at most [`MAX_GROUP`]) and
//! applies them in one transaction. Batches rarely fail (a retried
//! transaction id, a lost race for a name), so the group first runs without
//! a savepoint per batch; if one fails, PostgreSQL aborts the transaction,
//! it is rolled back, and the group runs again with each batch in its own
//! savepoint, so a failing batch fails alone. A failure of the storage (the
//! disk, the connection, the server) fails the whole group.
//!
//! While a commit waits for PostgreSQL's WAL flush, new batches queue up
//! and make the next group: that is the group commit, with no timer.
//!
//! The commit hook runs on this thread for each committed batch, in
//! position order, before its writer is answered (the store's invariant).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc};

use parking_lot::RwLock;
use tokio::sync::oneshot;

use super::replay::{LoggedGroup, Replay, RETENTION_MS};
use super::{accounts, ephemeral, identity, key_backup, keys, media, rooms};
use super::{block_on, failure, storage_failed, Conn, PgError};
use crate::*;

pub(crate) type Job = (WriteBatch, oneshot::Sender<Result<Committed>>);

/// How many waiting batches one commit takes at most.
const MAX_GROUP: usize = 256;

pub(crate) struct Writer {
    pub(crate) conn: Conn,
    pub(crate) hook: Arc<RwLock<Option<CommitHook>>>,
    pub(crate) position: Arc<AtomicI64>,
    /// Orders this process's commits among the others' for the hook.
    pub(crate) replay: Arc<Replay>,
}

/// The writer prunes `commit_log` after this many groups.
const PRUNE_EVERY: u64 = 1024;

/// Positions given to each operation of a committed batch (`0` for
/// operations that take none), or why the batch failed.
type Placed = Result<Vec<i64>>;

/// Why a batch failed, and whether the storage did (then the whole group
/// fails).
struct Failed {
    error: StoreError,
    storage: bool,
}

impl Writer {
    pub(crate) fn run(self, rx: mpsc::Receiver<Job>) {
        // Durable commits whatever the server's default: a write is
        // acknowledged only once PostgreSQL has flushed it.
        if let Err(e) = block_on(self.conn.batch("SET synchronous_commit = on")) {
            tracing::error!(error = %e, "setting synchronous_commit on the writer's connection");
        }
        let mut full = FullEpisodes::default();
        let mut groups: u64 = 0;
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let outcome = block_on(async {
                match self.commit_group(&jobs, false).await {
                    Ok(None) => self.commit_group(&jobs, true).await,
                    other => other,
                }
            });
            if outcome.is_err() {
                // Nothing of the group may stay open for the next one.
                let _ = block_on(self.conn.batch("ROLLBACK"));
            }
            match &outcome {
                Ok(Some(_)) => full.observe(None),
                Err(e) => full.observe(Some(e)),
                Ok(None) => {}
            }
            let (results, upto, seq) = match outcome {
                Ok(Some((results, next, seq))) => (results, next, Some(seq)),
                Ok(None) => (
                    jobs.iter()
                        .map(|_| Err(StoreError::Engine("group not committed".into())))
                        .collect(),
                    0,
                    None,
                ),
                Err(e) => (jobs.iter().map(|_| Err(e.clone())).collect(), 0, None),
            };
            match seq {
                Some(seq) => {
                    let replay = self.replay.clone();
                    replay.own(seq, || self.answer(jobs, results, upto));
                    groups += 1;
                    if groups % PRUNE_EVERY == 0 {
                        self.prune();
                    }
                }
                None => self.answer(jobs, results, upto),
            }
        }
    }

    /// Drops commit log entries every process has had time to replay.
    fn prune(&self) {
        let before = now_ms() - RETENTION_MS;
        if let Err(e) = block_on(
            self.conn
                .exec("DELETE FROM commit_log WHERE ts < $1", &[&before]),
        ) {
            tracing::warn!(error = %e, "pruning the commit log");
        }
    }

    /// Publishes a committed (or failed) group: the hook sees each batch
    /// in order, then its writer is answered.
    fn answer(&self, jobs: Vec<Job>, results: Vec<Placed>, upto: i64) {
        if upto > 0 {
            self.position.fetch_max(upto, Ordering::AcqRel);
        }
        let hook = self.hook.read().clone();
        let last_ok = results.iter().rposition(|r| r.is_ok());
        for (i, ((batch, reply), result)) in jobs.into_iter().zip(results).enumerate() {
            let result = result.map(|placed| Committed {
                items: placed.into_iter().zip(batch.ops).collect(),
                high_water: if Some(i) == last_ok { upto } else { 0 },
            });
            if let (Some(h), Ok(c)) = (&hook, &result) {
                h(c);
            }
            let _ = reply.send(result);
        }
    }

    /// Commits one group in one transaction. With `isolate`, each batch
    /// runs in its own savepoint and a failing batch is rolled back alone;
    /// without, the first failure rolls the whole transaction back and
    /// answers `Ok(None)`.
    async fn commit_group(
        &self,
        jobs: &[Job],
        isolate: bool,
    ) -> Result<Option<(Vec<Placed>, i64, i64)>> {
        let c = &self.conn;
        let fail = |e: PgError| failure(&e);
        c.batch("BEGIN").await.map_err(fail)?;
        // The high-water mark's row lock orders this group after any other
        // process's uncommitted one (module docs of `postgres`).
        let row = c
            .opt(
                "SELECT pos, commit_seq FROM stream_position FOR UPDATE",
                &[],
            )
            .await
            .map_err(fail)?
            .ok_or_else(|| StoreError::Engine("stream_position has no row".into()))?;
        let start: i64 = row.try_get(0).map_err(fail)?;
        let seq: i64 = row.try_get::<_, i64>(1).map_err(fail)? + 1;
        let mut next = start;
        let mut results: Vec<Placed> = Vec::with_capacity(jobs.len());
        for (batch, _) in jobs {
            if !isolate {
                match apply_batch(c, batch, &mut next).await {
                    Ok(placed) => results.push(Ok(placed)),
                    Err(Failed {
                        error,
                        storage: true,
                    }) => return Err(error),
                    Err(_) => {
                        c.batch("ROLLBACK").await.map_err(fail)?;
                        return Ok(None);
                    }
                }
                continue;
            }
            let saved = next;
            c.batch("SAVEPOINT batch").await.map_err(fail)?;
            match apply_batch(c, batch, &mut next).await {
                Ok(placed) => {
                    c.batch("RELEASE SAVEPOINT batch").await.map_err(fail)?;
                    results.push(Ok(placed));
                }
                Err(Failed {
                    error,
                    storage: true,
                }) => return Err(error),
                Err(Failed { error, .. }) => {
                    c.batch("ROLLBACK TO SAVEPOINT batch; RELEASE SAVEPOINT batch")
                        .await
                        .map_err(fail)?;
                    next = saved;
                    results.push(Err(error));
                }
            }
        }
        // The committed batches, for the other processes to replay.
        let logged = LoggedGroup {
            batches: results
                .iter()
                .zip(jobs)
                .filter_map(|(r, (batch, _))| {
                    let placed = r.as_ref().ok()?;
                    Some(placed.iter().copied().zip(batch.ops.iter()).collect())
                })
                .collect(),
            upto: next,
        };
        let json = serde_json::to_string(&logged).map_err(|e| StoreError::Engine(e.to_string()))?;
        c.exec(
            "INSERT INTO commit_log (seq, origin, ts, batches) VALUES ($1, $2, $3, $4)",
            &[&seq, &self.replay.origin, &now_ms(), &json],
        )
        .await
        .map_err(fail)?;
        c.exec(
            "UPDATE stream_position SET pos = $1, commit_seq = $2",
            &[&next, &seq],
        )
        .await
        .map_err(fail)?;
        // Delivered at commit, to every process listening on
        // `hotline_stream` (payload: the commit's sequence number).
        c.exec(
            "SELECT pg_notify('hotline_stream', $1)",
            &[&seq.to_string()],
        )
        .await
        .map_err(fail)?;
        c.batch("COMMIT").await.map_err(fail)?;
        Ok(Some((results, next, seq)))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn apply_batch(
    c: &Conn,
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
        apply_op(c, op, pos).await.map_err(|e| match e {
            ApplyError::Pg(e) => Failed {
                storage: storage_failed(&e),
                error: failure(&e),
            },
            ApplyError::Conflict(m) => Failed {
                storage: false,
                error: StoreError::Conflict(m),
            },
        })?;
        placed.push(pos);
    }
    Ok(placed)
}

/// A conditional write that found its condition false: the batch fails
/// with a conflict, as a uniqueness violation would.
pub(crate) fn conflict(what: &str) -> ApplyError {
    ApplyError::Conflict(what.to_owned())
}

/// Why an operation failed: a statement, or a condition the operation
/// checks itself (a used-up invite, an expired token).
pub(crate) enum ApplyError {
    Pg(PgError),
    Conflict(String),
}

impl From<PgError> for ApplyError {
    fn from(e: PgError) -> Self {
        ApplyError::Pg(e)
    }
}

pub(crate) type Applied = std::result::Result<(), ApplyError>;

/// Every operation, by its domain. One arm per variant, so the compiler
/// checks that each is handled.
async fn apply_op(c: &Conn, op: &WriteOp, pos: i64) -> Applied {
    use WriteOp as W;
    match op {
        // accounts
        W::CreateUser(u) => accounts::create_user(c, u).await,
        W::SetPassword {
            user_id,
            password_hash,
        } => accounts::set_password(c, user_id, password_hash).await,
        W::SetProfile {
            user_id,
            displayname,
            avatar_url,
        } => accounts::set_profile(c, user_id, displayname, avatar_url).await,
        W::Deactivate { user_id } => accounts::deactivate(c, user_id).await,
        W::UpsertDevice(d) => accounts::upsert_device(c, d).await,
        W::DeleteDevice { user_id, device_id } => {
            accounts::delete_device(c, user_id, device_id).await
        }
        W::InsertToken(t) => accounts::insert_token(c, t).await,
        W::DeleteDeviceTokens { user_id, device_id } => {
            accounts::delete_device_tokens(c, user_id, device_id).await
        }
        W::SetDeviceSeen {
            user_id,
            device_id,
            ts,
            ip,
        } => accounts::set_device_seen(c, user_id, device_id, *ts, ip.as_deref()).await,
        W::CreateRegistrationToken(t) => accounts::create_registration_token(c, t).await,
        W::UseRegistrationToken { token, now_ms } => {
            accounts::use_registration_token(c, token, *now_ms).await
        }
        W::PutFilter {
            user_id,
            filter_id,
            json,
        } => accounts::put_filter(c, user_id, filter_id, json).await,
        W::PutMeta { key, value } => accounts::put_meta(c, key, value).await,
        // rooms and events
        W::CreateRoom(r) => rooms::create_room(c, r).await,
        W::AppendEvent(e) => rooms::append_event(c, e, pos).await,
        W::ForgetRoom { user_id, room_id } => rooms::forget_room(c, user_id, room_id).await,
        W::PutAlias(a) => rooms::put_alias(c, a).await,
        W::DeleteAlias { alias } => rooms::delete_alias(c, alias).await,
        W::SetRoomPublished { room_id, published } => {
            rooms::set_room_published(c, room_id, *published).await
        }
        W::RecordTxn {
            user_id,
            device_id,
            txn_id,
        } => rooms::record_txn(c, user_id, device_id, txn_id).await,
        // account data, receipts, presence
        W::PutAccountData {
            user_id,
            room_id,
            kind,
            content,
        } => ephemeral::put_account_data(c, user_id, room_id, kind, content, pos).await,
        W::PutReceipt {
            room_id,
            user_id,
            receipt_type,
            thread_id,
            event_id,
            ts,
        } => {
            ephemeral::put_receipt(
                c,
                room_id,
                user_id,
                receipt_type,
                thread_id,
                event_id,
                *ts,
                pos,
            )
            .await
        }
        W::PutPresence {
            user_id,
            state,
            status_msg,
            last_active_ts,
        } => {
            ephemeral::put_presence(
                c,
                user_id,
                state,
                status_msg.as_deref(),
                *last_active_ts,
                pos,
            )
            .await
        }
        // media
        W::PutMedia(m) => media::put_media(c, m).await,
        // official identity and lines
        W::PutOfficial(o) => identity::put_official(c, o).await,
        W::PutAttestation(a) => identity::put_attestation(c, a).await,
        W::RevokeAttestation { user_id, ts } => identity::revoke_attestation(c, user_id, *ts).await,
        W::PutLineInvite(i) => identity::put_line_invite(c, i).await,
        W::UseLineInvite {
            code,
            now_ms,
            redeemer,
        } => identity::use_line_invite(c, code, *now_ms, redeemer).await,
        W::RevokeLineInvite { code } => identity::revoke_line_invite(c, code).await,
        W::PutLine(l) => identity::put_line(c, l).await,
        W::AppendAudit(a) => identity::append_audit(c, a).await,
        // end-to-end encryption keys, to-device
        W::PutDeviceKeys {
            user_id,
            device_id,
            json,
        } => keys::put_device_keys(c, user_id, device_id, json).await,
        W::PutOneTimeKeys {
            user_id,
            device_id,
            keys: otks,
        } => keys::put_one_time_keys(c, user_id, device_id, otks).await,
        W::PutFallbackKey {
            user_id,
            device_id,
            algorithm,
            key_id,
            json,
        } => keys::put_fallback_key(c, user_id, device_id, algorithm, key_id, json).await,
        W::DeleteOneTimeKey {
            user_id,
            device_id,
            key_id,
        } => keys::delete_one_time_key(c, user_id, device_id, key_id).await,
        W::MarkFallbackUsed {
            user_id,
            device_id,
            algorithm,
        } => keys::mark_fallback_used(c, user_id, device_id, algorithm).await,
        W::PutCrossSigningKey {
            user_id,
            key_type,
            json,
        } => keys::put_cross_signing_key(c, user_id, key_type, json).await,
        W::PutKeySignature(s) => keys::put_key_signature(c, s).await,
        W::KeyChange { user_id } => keys::key_change(c, user_id, pos).await,
        W::PutToDevice {
            user_id,
            device_id,
            json,
            max_queued,
        } => keys::put_to_device(c, user_id, device_id, json, *max_queued, pos).await,
        W::DeleteToDevice {
            user_id,
            device_id,
            upto,
        } => keys::delete_to_device(c, user_id, device_id, *upto).await,
        // key backup
        W::CreateBackupVersion(v) => key_backup::create_backup_version(c, v).await,
        W::UpdateBackupVersion {
            user_id,
            version,
            auth_data,
        } => key_backup::update_backup_version(c, user_id, *version, auth_data).await,
        W::DeleteBackupVersion { user_id, version } => {
            key_backup::delete_backup_version(c, user_id, *version).await
        }
        W::PutBackupKey {
            user_id,
            version,
            key,
        } => key_backup::put_backup_key(c, user_id, *version, key).await,
        W::DeleteBackupKeys {
            user_id,
            version,
            room_id,
            session_id,
        } => {
            key_backup::delete_backup_keys(
                c,
                user_id,
                *version,
                room_id.as_deref(),
                session_id.as_deref(),
            )
            .await
        }
    }
}
