//! The writer: one thread, one connection, commits in groups.
//!
//! It takes every batch waiting in its queue (at most [`MAX_GROUP`]) and
//! applies them in one transaction. Batches rarely fail (a retried
//! transaction id, a lost race for a name), so the group first runs without
//! a savepoint per batch; if one fails, the transaction is rolled back and
//! the group runs again with each batch in its own savepoint, so a failing
//! batch fails alone. A failure of the storage (the
//! disk, the connection, the server) fails the whole group.
//!
//! While a commit waits for PostgreSQL's WAL flush, new batches queue up
//! and make the next group: that is the group commit, with no timer.
//!
//! **Round trips.** A group's statements are pipelined ([`Conn::pipeline`]):
//! the lock on the high-water mark with `BEGIN`, each stretch of the
//! group's one-round operations (an event, a receipt, a to-device message:
//! statements that need no answer before the next) in one round trip, and
//! the commit log, the new mark, the notice and `COMMIT` in one more. So a
//! group of twenty messages takes three round trips rather than thirty;
//! statement by statement, the writer's round trips to a backend that
//! shares the CPU were most of a group's time (BENCHMARKS.md). The server
//! runs a pipeline's statements in the order they were sent; a pipeline
//! that could not keep the order (a statement's first use on the
//! connection prepares it before it goes out) is rolled back and the group
//! runs again statement by statement.
//!
//! The commit hook runs on this thread for each committed batch, in
//! position order, before its writer is answered (the store's invariant).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{mpsc, Arc};

use parking_lot::RwLock;
use tokio::sync::oneshot;

use super::replay::{LoggedGroup, Replay, RETENTION_MS};
use super::{accounts, ephemeral, federation, identity, key_backup, keys, media, rooms};
use super::{block_on, failure, storage_failed, Conn, Params, PgError, JOBS_LOCK};
use crate::*;

pub(crate) type Job = (WriteBatch, oneshot::Sender<Result<Committed>>);

/// The writer's session settings, on each connection it makes: durable
/// commits whatever the server's default, so a write is acknowledged only
/// once PostgreSQL has flushed it.
pub(crate) const SESSION_SETUP: &str = "SET synchronous_commit = on";

/// How many waiting batches one commit takes at most.
const MAX_GROUP: usize = 256;

pub(crate) struct Writer {
    pub(crate) conn: Conn,
    pub(crate) hook: Arc<RwLock<Option<CommitHook>>>,
    pub(crate) position: Arc<AtomicI64>,
    /// Orders this process's commits among the others' for the hook.
    pub(crate) replay: Arc<Replay>,
    /// Whether this process holds the deployment-jobs lock (a session
    /// lock of this connection).
    pub(crate) jobs: Arc<AtomicBool>,
}

/// The writer prunes `commit_log` after this many groups.
const PRUNE_EVERY: u64 = 1024;

/// Positions given to each operation of a committed batch (`0` for
/// operations that take none), or why the batch failed.
type Placed = Result<Vec<i64>>;

/// How a group's batches run. Each mode is the fallback of the one before.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Mode {
    /// Every batch in one transaction, the statements pipelined: each
    /// stretch of one-round operations ([`one_round`]) goes to the server
    /// in one round trip, and the others run alone between stretches.
    Pipelined,
    /// Every batch in one transaction, one statement after another: after
    /// a pipeline's statements may have reached the server out of order
    /// (the first use of a statement on the connection prepares it first).
    Serial,
    /// Each batch in a savepoint of its own, so a failing batch fails
    /// alone: after a batch failed.
    Isolated,
}

/// A group's run: committed (each batch's positions or failure, the new
/// high-water mark, the commit's sequence number), or rolled back to run
/// again in the given mode.
enum Group {
    Committed(Vec<Placed>, i64, i64),
    Again(Mode),
}

/// The statements of every group, prepared when the writer starts so a
/// pipeline of them sends each on its first poll.
const LOCK_POSITION: &str = "SELECT pos, commit_seq FROM stream_position FOR UPDATE";
const LOG_COMMIT: &str =
    "INSERT INTO commit_log (seq, origin, ts, batches) VALUES ($1, $2, $3, $4)";
const SET_POSITION: &str = "UPDATE stream_position SET pos = $1, commit_seq = $2";
const NOTIFY: &str = "SELECT pg_notify('hotline_stream', $1)";

/// Why a batch failed, and whether the storage did (then the whole group
/// fails).
struct Failed {
    error: StoreError,
    storage: bool,
}

impl Writer {
    pub(crate) fn run(self, rx: mpsc::Receiver<Job>) {
        if let Err(e) = block_on(self.conn.batch(SESSION_SETUP)) {
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
            self.redial_if_lost();
            let outcome = block_on(async {
                let mut mode = if jobs.iter().any(|(b, _)| b.ops.iter().any(numbered)) {
                    Mode::Serial
                } else {
                    Mode::Pipelined
                };
                loop {
                    match self.commit_group(&jobs, mode).await {
                        Ok(Group::Again(again)) if again > mode => mode = again,
                        Ok(Group::Again(_)) => return Ok(None),
                        Ok(Group::Committed(results, next, seq)) => {
                            return Ok(Some((results, next, seq)))
                        }
                        Err(e) => return Err(e),
                    }
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

    /// Connects again if the connection was lost (a failed group found it
    /// so, or it was cut while idle), and takes the deployment-jobs lock
    /// again, which went with the old session. Should PostgreSQL still be
    /// unreachable, this group fails and the next tries again.
    fn redial_if_lost(&self) {
        match block_on(self.conn.redial(None)) {
            Ok(false) => {}
            Ok(true) => {
                let held = block_on(
                    self.conn
                        .opt("SELECT pg_try_advisory_lock($1)", &[&JOBS_LOCK]),
                )
                .ok()
                .flatten()
                .and_then(|r| r.try_get::<_, bool>(0).ok())
                .unwrap_or(false);
                self.jobs.store(held, Ordering::Release);
            }
            Err(e) => tracing::error!(error = %e, "connecting the writer to PostgreSQL again"),
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

    /// Commits one group in one transaction, its batches run as `mode`
    /// says. A storage failure fails the whole group (`Err`).
    async fn commit_group(&self, jobs: &[Job], mode: Mode) -> Result<Group> {
        let c = &self.conn;
        let fail = |e: PgError| failure(&e);
        c.prepare_all(&[LOCK_POSITION, LOG_COMMIT, SET_POSITION, NOTIFY])
            .await
            .map_err(fail)?;
        // The high-water mark's row lock orders this group after any other
        // process's uncommitted one (module docs of `postgres`).
        // Polled together, `BEGIN` first: both go out in one round trip.
        let (began, row) =
            futures_util::future::join(c.batch("BEGIN"), c.opt(LOCK_POSITION, &[])).await;
        began.map_err(fail)?;
        let row = row
            .map_err(fail)?
            .ok_or_else(|| StoreError::Engine("stream_position has no row".into()))?;
        let start: i64 = row.try_get(0).map_err(fail)?;
        let seq: i64 = row.try_get::<_, i64>(1).map_err(fail)? + 1;
        let (results, next) = match mode {
            Mode::Pipelined => match pipelined(c, jobs, start).await {
                Ok(placed) => placed,
                Err(again) => return again,
            },
            Mode::Serial | Mode::Isolated => {
                match one_by_one(c, jobs, start, mode == Mode::Isolated).await {
                    Ok(placed) => placed,
                    Err(again) => return again,
                }
            }
        };
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
        // The log, the new mark, the notice (delivered at commit to every
        // process listening on `hotline_stream`, payload the sequence
        // number) and the commit, in one round trip. Should a statement
        // fail, PostgreSQL turns the `COMMIT` into a rollback, and the
        // failure fails the group.
        let (seq_text, ts) = (seq.to_string(), now_ms());
        let (log, mark, notify): (Params, Params, Params) = (
            &[&seq, &self.replay.origin, &ts, &json],
            &[&next, &seq],
            &[&seq_text],
        );
        let (tail, in_order) = c
            .pipeline(vec![
                Box::pin(async { c.exec(LOG_COMMIT, log).await.map(drop) }),
                Box::pin(async { c.exec(SET_POSITION, mark).await.map(drop) }),
                Box::pin(async { c.exec(NOTIFY, notify).await.map(drop) }),
                Box::pin(c.batch("COMMIT")),
            ])
            .await;
        if let Some(e) = tail.into_iter().find_map(|r| r.err()) {
            return Err(failure(&e));
        }
        if !in_order {
            // Cannot happen: every statement of the tail was prepared
            // above, so each went out on its first poll.
            return Err(StoreError::Engine(
                "a commit's statements went out of order".into(),
            ));
        }
        Ok(Group::Committed(results, next, seq))
    }
}

/// Whether an operation sends all its statements at once (none waits for
/// another's answer), so it can share a pipeline with the operations around
/// it. An operation wrongly listed here costs a group its pipeline (the
/// group runs again in [`Mode::Serial`]), not its order. Listed: what a
/// busy deployment writes most.
fn one_round(op: &WriteOp) -> bool {
    use WriteOp as W;
    matches!(
        op,
        W::AppendEvent(_)
            | W::RecordTxn { .. }
            | W::PutReceipt { .. }
            | W::PutAccountData { .. }
            | W::PutPresence { .. }
            | W::SetDeviceSeen { .. }
            | W::PutToDevice { .. }
            | W::DeleteToDevice { .. }
            | W::KeyChange { .. }
            | W::InsertToken(_)
            | W::UpsertDevice(_)
            | W::PutDeviceKeys { .. }
            | W::DeleteOneTimeKey { .. }
            | W::MarkFallbackUsed { .. }
            | W::QueueFederation { .. }
            | W::QueueFederationEdu { .. }
    )
}

/// Whether an operation takes a number from a sequence: the audit log's
/// entries. A group holding one is not pipelined: a pipeline rolled back
/// for its order would leave the log with a gap (a sequence does not roll
/// back), and such groups are rare.
fn numbered(op: &WriteOp) -> bool {
    matches!(op, WriteOp::AppendAudit(_))
}

/// Positions for each operation of each batch, in order, from `start`;
/// the new high-water mark.
fn place(jobs: &[Job], start: i64) -> (Vec<Vec<i64>>, i64) {
    let mut next = start;
    let placed = jobs
        .iter()
        .map(|(batch, _)| {
            batch
                .ops
                .iter()
                .map(|op| {
                    if op.takes_position() {
                        next += 1;
                        next
                    } else {
                        0
                    }
                })
                .collect()
        })
        .collect();
    (placed, next)
}

/// What the modes' runs answer: each batch's positions or failure and the
/// new mark, or (`Err`) how the group ends instead.
type Run = std::result::Result<(Vec<Placed>, i64), Result<Group>>;

/// The group's operations in [`Mode::Pipelined`]: stretches of one-round
/// operations in one round trip each, the others alone. Any failure rolls
/// the group back, to run again [`Mode::Isolated`] (or [`Mode::Serial`]
/// if the pipeline lost its order, which may be the failure's cause).
async fn pipelined(c: &Conn, jobs: &[Job], start: i64) -> Run {
    let (positions, next) = place(jobs, start);
    let ops: Vec<(&WriteOp, i64)> = jobs
        .iter()
        .zip(&positions)
        .flat_map(|((batch, _), placed)| batch.ops.iter().zip(placed.iter().copied()))
        .collect();
    let mut failures: Vec<ApplyError> = Vec::new();
    let mut in_order = true;
    let mut rest = &ops[..];
    while !rest.is_empty() && failures.is_empty() && in_order {
        let stretch = rest.iter().take_while(|(op, _)| one_round(op)).count();
        if stretch == 0 {
            let (op, pos) = rest[0];
            rest = &rest[1..];
            if let Err(e) = apply_op(c, op, pos).await {
                failures.push(e);
            }
            continue;
        }
        let (now, later) = rest.split_at(stretch);
        rest = later;
        let (applied, ordered): (Vec<Applied>, bool) = c
            .pipeline(
                now.iter()
                    .map(|&(op, pos)| Box::pin(apply_op(c, op, pos)) as std::pin::Pin<Box<_>>)
                    .collect(),
            )
            .await;
        in_order &= ordered;
        failures.extend(applied.into_iter().filter_map(|r| r.err()));
    }
    if let Some(storage) = failures.iter().find_map(|e| match e {
        ApplyError::Pg(e) if storage_failed(e) => Some(failure(e)),
        _ => None,
    }) {
        return Err(Err(storage));
    }
    if !in_order || !failures.is_empty() {
        c.batch("ROLLBACK").await.map_err(|e| Err(failure(&e)))?;
        let again = if in_order {
            Mode::Isolated
        } else {
            Mode::Serial
        };
        return Err(Ok(Group::Again(again)));
    }
    Ok((positions.into_iter().map(Ok).collect(), next))
}

/// The group's operations one statement after another ([`Mode::Serial`]),
/// or each batch in a savepoint of its own ([`Mode::Isolated`]).
async fn one_by_one(c: &Conn, jobs: &[Job], start: i64, isolate: bool) -> Run {
    let fail = |e: PgError| Err(failure(&e));
    let mut next = start;
    let mut results: Vec<Placed> = Vec::with_capacity(jobs.len());
    for (batch, _) in jobs {
        if !isolate {
            match apply_batch(c, batch, &mut next).await {
                Ok(placed) => results.push(Ok(placed)),
                Err(Failed {
                    error,
                    storage: true,
                }) => return Err(Err(error)),
                Err(_) => {
                    c.batch("ROLLBACK").await.map_err(fail)?;
                    return Err(Ok(Group::Again(Mode::Isolated)));
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
            }) => return Err(Err(error)),
            Err(Failed { error, .. }) => {
                c.batch("ROLLBACK TO SAVEPOINT batch; RELEASE SAVEPOINT batch")
                    .await
                    .map_err(fail)?;
                next = saved;
                results.push(Err(error));
            }
        }
    }
    Ok((results, next))
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
        W::PutPusher(p) => accounts::put_pusher(c, p).await,
        W::DeletePusher {
            user_id,
            app_id,
            pushkey,
        } => accounts::delete_pusher(c, user_id, app_id, pushkey).await,
        W::DeletePushersOfKey {
            app_id,
            pushkey,
            except_user,
        } => accounts::delete_pushers_of_key(c, app_id, pushkey, except_user).await,
        W::SetPusherPosition {
            user_id,
            app_id,
            pushkey,
            position,
        } => accounts::set_pusher_position(c, user_id, app_id, pushkey, *position).await,
        // rooms and events
        W::CreateRoom(r) => rooms::create_room(c, r).await,
        W::AppendEvent(e) => rooms::append_event(c, e, pos).await,
        W::AppendBackfilled(e) => rooms::append_backfilled(c, e).await,
        W::PutOutlier {
            event_id,
            room_id,
            json,
        } => rooms::put_outlier(c, event_id, room_id, json).await,
        W::SetCurrentState {
            room_id,
            event_type,
            state_key,
            event_id,
            membership,
        } => {
            rooms::set_current_state(
                c,
                room_id,
                (event_type, state_key),
                event_id,
                membership,
                pos,
            )
            .await
        }
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
        W::PutRemoteMedia(m) => media::put_remote_media(c, m).await,
        // federation
        W::QueueFederation {
            destination,
            event_id,
        } => federation::queue(c, destination, event_id).await,
        W::DequeueFederation { destination, upto } => {
            federation::dequeue(c, destination, *upto).await
        }
        W::QueueFederationEdu { destination, edu } => {
            federation::queue_edu(c, destination, edu).await
        }
        W::DequeueFederationEdus { destination, upto } => {
            federation::dequeue_edus(c, destination, *upto).await
        }
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

#[cfg(test)]
mod tests {
    use super::super::tests::fresh_store;
    use super::super::PgResult;
    use super::*;
    use std::pin::Pin;

    type Boxed<'a> = Pin<Box<dyn std::future::Future<Output = PgResult<u64>> + 'a>>;
    const PROBE: &str = "INSERT INTO probe (v) VALUES ($1)";

    #[tokio::test]
    async fn a_pipeline_keeps_its_futures_order_and_says_when_a_statement_went_out_late() {
        let store = fresh_store();
        let c = store.reader();
        c.batch("CREATE TEMP TABLE probe (n BIGSERIAL PRIMARY KEY, v TEXT)")
            .await
            .unwrap();
        // A future that is not ready to send on its first poll (as one
        // waiting for an answer, or for a statement's preparation, may
        // be) sends later, and the pipeline says its order may be lost.
        let mut yielded = false;
        let yield_once = std::future::poll_fn(move |cx| {
            if yielded {
                return std::task::Poll::Ready(());
            }
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        });
        let first: Vec<Boxed> = vec![Box::pin(async {
            yield_once.await;
            c.exec(PROBE, &[&"late"]).await
        })];
        let (out, in_order) = c.pipeline(first).await;
        assert!(out.iter().all(|r| r.is_ok()));
        assert!(!in_order, "a statement sent after the first pass");
        // Prepared: every execution goes out on the first pass, in order.
        let values: Vec<String> = (0..60).map(|i| format!("v{i}")).collect();
        let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 1]> =
            values.iter().map(|v| [v as _]).collect();
        let ordered: Vec<Boxed> = params
            .iter()
            .map(|p| Box::pin(c.exec(PROBE, p)) as Boxed)
            .collect();
        let (out, in_order) = c.pipeline(ordered).await;
        assert!(in_order);
        assert_eq!(
            out.into_iter().map(|r| r.unwrap()).collect::<Vec<_>>(),
            vec![1; 60]
        );
        let stored: Vec<String> = c
            .all("SELECT v FROM probe ORDER BY n", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut expected = vec!["late".to_string()];
        expected.extend(values.iter().cloned());
        assert_eq!(stored, expected);
        store.close();
    }

    fn receipt(event_id: String) -> WriteOp {
        WriteOp::PutReceipt {
            room_id: "!r:x".into(),
            user_id: "@a:x".into(),
            receipt_type: "m.read".into(),
            thread_id: String::new(),
            event_id,
            ts: 1,
        }
    }

    #[tokio::test]
    async fn batches_committed_together_take_effect_in_position_order() {
        let store = fresh_store();
        // Warm the writer's statements, then queue many batches at once:
        // the writer takes them in a few groups, each a pipeline.
        store
            .write(WriteBatch::one(receipt("$warm".into())))
            .await
            .unwrap();
        const N: usize = 300;
        let pending: Vec<_> = (0..N)
            .map(|i| store.write(WriteBatch::one(receipt(format!("${i}")))))
            .collect();
        let mut last = (0, String::new());
        for (i, w) in pending.into_iter().enumerate() {
            let c = w.await.unwrap();
            let pos = c.items[0].0;
            assert!(pos > last.0, "positions follow the queue's order");
            last = (pos, format!("${i}"));
        }
        // The receipt the last position wrote is the one that stands,
        // whichever groups and pipelines carried the others.
        let stored = store.receipts_since("!r:x", 0).unwrap();
        let mine: Vec<_> = stored.iter().filter(|r| r.user_id == "@a:x").collect();
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert_eq!(
            (mine[0].event_id.as_str(), mine[0].pos),
            (last.1.as_str(), last.0)
        );
        store.close();
    }
}
