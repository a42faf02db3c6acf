//! The way out: one ordered queue per destination server, and the EDUs
//! received from others.
//!
//! A local event in a room with members on other servers is queued for
//! each of those servers in the commit that stores it
//! (`WriteOp::QueueFederation`), so what a client was told is sent stays
//! queued through a restart or a peer's outage. Each destination has one
//! task: it sends the oldest queued events (at most 50) with the EDUs
//! waiting for it (at most 100) in one transaction, moves past them once
//! the peer answers `200` (taking them off the stored queue within a
//! second, [`DEQUEUE_EVERY`]), and on failure waits and tries again,
//! twice as long each time from half a second up to [`MAX_BACKOFF`], or at
//! once when the peer is heard from. Every attempt has a fresh transaction
//! id: the events in it are deduplicated by id where they arrive.
//!
//! EDUs go with the events: to-device messages (room keys travel so),
//! read receipts and device-list changes are queued durably as well, on a
//! queue of their own per destination (`WriteOp::QueueFederationEdu`, in
//! the commit that stores what they report), and leave it as events do.
//! Typing is kept in memory only: it is stale after a restart or a failed
//! try. With several processes on one database, the process that runs the
//! deployment's jobs sends the queues; each process sends its own typing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use hotline_store::{WriteBatch, WriteOp};
use parking_lot::Mutex;
use ruma::api::federation::transactions::send_transaction_message;
use ruma::{OwnedServerName, OwnedTransactionId, RoomId, ServerName, UserId};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::{now_ms, Services};

/// Longest wait between two attempts to reach a peer.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Most queued events in one transaction (the spec's limit).
const PDUS_PER_TXN: usize = 50;
/// Most EDUs in one transaction (the spec's limit).
const EDUS_PER_TXN: usize = 100;
/// Most EDUs kept for a peer that cannot be reached.
const MAX_PENDING_EDUS: usize = 1000;

/// One destination: its task's wake-ups and what is known of it.
#[derive(Default)]
pub(crate) struct Destination {
    /// Something was queued for it.
    wake: Notify,
    /// It was heard from: retry now.
    retry: Notify,
    edus: Mutex<Vec<Value>>,
    status: Mutex<PeerStatus>,
}

/// What `/metrics` and `hotline admin federation` show of a peer.
#[derive(Clone, Debug, Default)]
pub struct PeerStatus {
    /// Failed attempts since the last success.
    pub failures: u64,
    /// When a transaction last went through (ms), 0 if never.
    pub last_success_ts: i64,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// Transactions and events delivered since start.
    pub transactions: u64,
    pub events: u64,
    /// The queue's `seq` delivered up to (taken off the stored queue at
    /// most a second later, or when the queue drains).
    pub sent_upto: i64,
}

/// The destinations and how to start their tasks.
pub(crate) struct Outbox {
    destinations: Mutex<HashMap<OwnedServerName, Arc<Destination>>>,
    runner: OnceLock<(tokio::runtime::Handle, Weak<Services>)>,
    /// Transaction ids are `{epoch}.{counter}`: unique across restarts.
    epoch: i64,
    txn_counter: AtomicU64,
}

impl Default for Outbox {
    fn default() -> Self {
        Self {
            destinations: Default::default(),
            runner: OnceLock::new(),
            epoch: now_ms(),
            txn_counter: AtomicU64::new(0),
        }
    }
}

impl Outbox {
    /// The destination's state, its task started if the sender runs.
    fn destination(&self, server: &ServerName) -> Arc<Destination> {
        let mut all = self.destinations.lock();
        if let Some(d) = all.get(server) {
            return d.clone();
        }
        let d = Arc::new(Destination::default());
        all.insert(server.to_owned(), d.clone());
        if let Some((handle, services)) = self.runner.get() {
            handle.spawn(run(services.clone(), server.to_owned(), d.clone()));
        }
        d
    }

    /// Runs `task` on the sender's runtime (from anywhere, the commit hook's
    /// thread included); nothing before the sender starts.
    pub(crate) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        match self.runner.get() {
            Some((handle, _)) => {
                handle.spawn(task);
            }
            // A process that does not serve (the admin CLI): the serving
            // process runs the same commit hooks as it catches up with
            // this one's writes, and does this work then.
            None => tracing::debug!("federation work left to the serving process"),
        }
    }

    /// Runs `task` with the services on the sender's runtime (from the
    /// commit hook's thread too); nothing before the sender starts. Whether
    /// it was started.
    pub(crate) fn spawn_with<F, Fut>(&self, task: F) -> bool
    where
        F: FnOnce(Arc<Services>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let Some((handle, services)) = self.runner.get() else {
            return false;
        };
        let services = services.clone();
        handle.spawn(async move {
            if let Some(s) = services.upgrade() {
                task(s).await;
            }
        });
        true
    }

    /// Something was queued for `server`.
    pub(crate) fn wake(&self, server: &str) {
        if let Ok(server) = ServerName::parse(server) {
            self.destination(&server).wake.notify_one();
        }
    }

    /// `server` made a request here: it is up, so a waiting retry goes now.
    pub(crate) fn heard_from(&self, server: &ServerName) {
        if let Some(d) = self.destinations.lock().get(server) {
            if d.status.lock().failures > 0 {
                d.retry.notify_one();
            }
        }
    }

    /// An ephemeral EDU (typing, presence) for `server`, kept in memory
    /// only (stale after a restart or a failed try); every other EDU is
    /// queued durably ([`queue_edu`]).
    pub(crate) fn push_ephemeral(&self, server: &ServerName, edu: Value) {
        let d = self.destination(server);
        {
            let mut edus = d.edus.lock();
            if edus.len() >= MAX_PENDING_EDUS {
                edus.remove(0);
            }
            edus.push(edu);
        }
        d.wake.notify_one();
    }

    /// Each known peer's state.
    pub(crate) fn statuses(&self) -> Vec<(OwnedServerName, PeerStatus)> {
        let mut out: Vec<_> = self
            .destinations
            .lock()
            .iter()
            .map(|(s, d)| (s.clone(), d.status.lock().clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl Services {
    /// Starts sending: a task per destination, and one at once for each
    /// destination with events still queued. Called once, on the runtime.
    pub fn start_federation_sender(self: &Arc<Self>) {
        if !self.federation.enabled() {
            return;
        }
        let outbox = &self.federation.outbox;
        {
            // Under the map's lock, so a destination gets one task: made
            // before this by the commit hook, or after by `destination`.
            let all = outbox.destinations.lock();
            if outbox
                .runner
                .set((tokio::runtime::Handle::current(), Arc::downgrade(self)))
                .is_err()
            {
                return;
            }
            for (server, d) in all.iter() {
                tokio::spawn(run(Arc::downgrade(self), server.clone(), d.clone()));
            }
        }
        self.wake_federation_queues();
    }

    /// Wakes the sender of every destination with something queued (at
    /// start, and when another process wrote to the queues).
    pub(crate) fn wake_federation_queues(&self) {
        if !self.federation.enabled() {
            return;
        }
        match self.store.federation_destinations() {
            Ok(list) => {
                for server in list {
                    self.federation.wake(&server);
                }
            }
            Err(e) => tracing::error!(error = %e, "reading the federation queue"),
        }
    }

    /// Each peer's state, for `/metrics` and `hotline admin federation`:
    /// with the number of events queued for it.
    pub fn federation_status(&self) -> Vec<(OwnedServerName, PeerStatus, usize)> {
        self.federation
            .outbox
            .statuses()
            .into_iter()
            .map(|(s, status)| {
                let queued = self
                    .store
                    .federation_outbox(s.as_str(), status.sent_upto, 10_000)
                    .map(|q| q.len())
                    .unwrap_or(0);
                (s, status, queued)
            })
            .collect()
    }

    /// A local user's presence, for the servers of those who share a room
    /// with them (`m.presence`, kept in memory like typing: the next change
    /// supersedes it). From the commit hook; once per deployment.
    pub(crate) fn federate_presence(
        &self,
        user: &UserId,
        state: &str,
        status_msg: Option<&str>,
        last_active_ts: i64,
        sharing: &std::collections::HashSet<ruma::OwnedUserId>,
    ) {
        let servers = self.peers_hearing_of(user, sharing);
        if servers.is_empty() {
            return;
        }
        let mut entry = json!({
            "user_id": user,
            "presence": state,
            "last_active_ago": (now_ms() - last_active_ts).max(0),
            "currently_active": state == "online",
        });
        if let Some(m) = status_msg {
            entry["status_msg"] = json!(m);
        }
        for server in servers {
            self.federation.outbox.push_ephemeral(
                server,
                json!({"edu_type": "m.presence", "content": {"push": [entry.clone()]}}),
            );
        }
    }

    /// The peers to tell of a change of local `user`'s (keys, presence):
    /// the servers of `sharing` (those who share a room with them), each
    /// once; none for another server's user, or where federation is off,
    /// or in a process that does not run the deployment's jobs (one tells
    /// for all).
    pub(crate) fn peers_hearing_of<'a>(
        &self,
        user: &UserId,
        sharing: impl IntoIterator<Item = &'a ruma::OwnedUserId>,
    ) -> Vec<&'a ServerName> {
        if user.server_name() != self.server_name() || !self.store.runs_deployment_jobs() {
            return Vec::new();
        }
        self.peers_of(sharing)
    }

    /// The allowed peers among the servers of `users`, each once; none
    /// where federation is off.
    pub(crate) fn peers_of<'a>(
        &self,
        users: impl IntoIterator<Item = &'a ruma::OwnedUserId>,
    ) -> Vec<&'a ServerName> {
        if !self.federation.enabled() {
            return Vec::new();
        }
        let mut servers: Vec<&ServerName> = users
            .into_iter()
            .map(|u| u.server_name())
            .filter(|s| *s != self.server_name() && self.federation_peer(s).is_ok())
            .collect();
        servers.sort();
        servers.dedup();
        servers
    }

    /// `m.presence` from `origin`: the states of its own users who share a
    /// room with a user of this server, stored as this server's own are
    /// (their server times them out and says so).
    async fn receive_presence(&self, origin: &ServerName, content: &Value) {
        let Some(push) = content["push"].as_array() else {
            return;
        };
        let mut batch = WriteBatch::new();
        for p in push.iter().take(EDUS_PER_TXN) {
            let Some(user) = p["user_id"]
                .as_str()
                .and_then(|u| UserId::parse(u).ok())
                .filter(|u| u.server_name() == origin)
            else {
                continue;
            };
            let state = match p["presence"].as_str() {
                Some(s @ ("online" | "offline" | "unavailable")) => s,
                _ => continue,
            };
            let shares = self
                .users_sharing_rooms(&user)
                .is_ok_and(|users| users.iter().any(|u| u.server_name() == self.server_name()));
            if !shares {
                continue;
            }
            let ago = p["last_active_ago"]
                .as_i64()
                .unwrap_or(0)
                .clamp(0, i64::MAX / 2);
            batch.push(WriteOp::PutPresence {
                user_id: user.to_string(),
                state: state.to_owned(),
                status_msg: p["status_msg"]
                    .as_str()
                    .map(|m| m.chars().take(256).collect()),
                last_active_ts: now_ms() - ago,
            });
        }
        if !batch.ops.is_empty() {
            if let Err(e) = self.store.write(batch).await {
                tracing::warn!(peer = %origin, error = %e, "presence from another server was not stored");
            }
        }
    }

    /// Sends `local_user`'s typing in `room_id` to the room's other servers.
    pub(crate) fn federate_typing(&self, room: &crate::rooms::Room, user: &UserId, typing: bool) {
        if user.server_name() != self.server_name() {
            return;
        }
        for server in self.federation_destinations_of(room) {
            self.federation.outbox.push_ephemeral(
                &server,
                json!({"edu_type": "m.typing", "content": {
                    "room_id": room.id, "user_id": user, "typing": typing }}),
            );
        }
    }

    /// A local user's public read receipt for the room's other servers:
    /// the operations that queue it.
    pub(crate) fn federate_receipt(
        &self,
        room: &crate::rooms::Room,
        user: &UserId,
        event_id: &str,
        thread_id: &str,
        ts: i64,
    ) -> Vec<WriteOp> {
        if user.server_name() != self.server_name() {
            return Vec::new();
        }
        let mut data = json!({ "ts": ts });
        if !thread_id.is_empty() {
            data["thread_id"] = json!(thread_id);
        }
        self.federation_destinations_of(room)
            .iter()
            .map(|server| {
                queue_edu(
                    server,
                    json!({"edu_type": "m.receipt", "content": {
                        (room.id.as_str()): { "m.read": { (user.as_str()): {
                            "event_ids": [event_id], "data": data }}}}}),
                )
            })
            .collect()
    }

    /// An EDU from `origin`: typing and read receipts of its own users in
    /// rooms this server is in. Anything else, or anything about another
    /// server's users, is ignored.
    pub(crate) async fn receive_edu(self: &Arc<Self>, origin: &ServerName, edu: Value) {
        let theirs = |user: &str| {
            UserId::parse(user)
                .ok()
                .filter(|u| u.server_name() == origin)
        };
        match edu["edu_type"].as_str() {
            Some("m.typing") => {
                let c = &edu["content"];
                let (Some(room_id), Some(user)) = (
                    c["room_id"].as_str().and_then(|r| RoomId::parse(r).ok()),
                    c["user_id"].as_str().and_then(theirs),
                ) else {
                    return;
                };
                let Ok(room) = self.room(&room_id) else {
                    return;
                };
                if room.is_joined(&user) && self.check_server_acl(&room, origin).is_ok() {
                    self.apply_typing(room, &user, c["typing"].as_bool() == Some(true), None);
                }
            }
            Some("m.receipt") => {
                let Some(rooms) = edu["content"].as_object() else {
                    return;
                };
                for (room_id, kinds) in rooms {
                    let Ok(room_id) = RoomId::parse(room_id) else {
                        continue;
                    };
                    if self
                        .room(&room_id)
                        .is_ok_and(|r| self.check_server_acl(&r, origin).is_err())
                    {
                        continue;
                    }
                    let Some(users) = kinds["m.read"].as_object() else {
                        continue;
                    };
                    for (user, receipt) in users {
                        let Some(user) = theirs(user) else {
                            continue;
                        };
                        let Some(event_id) = receipt["event_ids"][0]
                            .as_str()
                            .and_then(|e| ruma::EventId::parse(e).ok())
                        else {
                            continue;
                        };
                        let thread = receipt["data"]["thread_id"].as_str().map(str::to_owned);
                        if let Err(e) = self
                            .put_receipt(&user, &room_id, "m.read", &event_id, thread)
                            .await
                        {
                            tracing::debug!(peer = %origin, error = %e, "a receipt is dropped");
                        }
                    }
                }
            }
            Some("m.direct_to_device") => self.receive_to_device(origin, &edu["content"]).await,
            Some("m.presence") => self.receive_presence(origin, &edu["content"]).await,
            Some("m.device_list_update") | Some("m.signing_key_update") => {
                self.receive_key_change(origin, &edu["content"]).await
            }
            _ => {}
        }
    }
}

/// The operation that queues `edu` for `server`, durably (module docs).
pub(crate) fn queue_edu(server: &ServerName, edu: Value) -> WriteOp {
    WriteOp::QueueFederationEdu {
        destination: server.to_string(),
        edu: edu.to_string(),
    }
}

/// Longest a delivered entry stays on the stored queue: taking entries off
/// is a write, done once a second (or when the queue drains) rather than
/// once per transaction. A restart in between sends those entries again,
/// which the receiver ignores (it has their event ids).
const DEQUEUE_EVERY: Duration = Duration::from_secs(1);

/// One destination's task (module docs).
async fn run(services: Weak<Services>, server: OwnedServerName, d: Arc<Destination>) {
    let mut backoff = Duration::from_millis(500);
    // Delivered up to, and taken off the stored queues up to: (events, EDUs).
    let (mut sent, mut dequeued) = ((0i64, 0i64), (0i64, 0i64));
    let mut last_dequeue = std::time::Instant::now();
    let dequeue = |s: &Arc<Services>, upto: (i64, i64), done: (i64, i64)| {
        let store = s.store.clone();
        let destination = server.to_string();
        let mut ops = Vec::new();
        if upto.0 > done.0 {
            ops.push(WriteOp::DequeueFederation {
                destination: destination.clone(),
                upto: upto.0,
            });
        }
        if upto.1 > done.1 {
            ops.push(WriteOp::DequeueFederationEdus {
                destination: destination.clone(),
                upto: upto.1,
            });
        }
        if ops.is_empty() {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = store.write(WriteBatch { ops }).await {
                tracing::error!(peer = %destination, error = %e, "taking sent entries off the queue");
            }
        });
    };
    loop {
        let Some(s) = services.upgrade() else {
            return;
        };
        // Typing and presence, kept in memory (stale by a retry); then
        // the stored EDUs.
        let ephemeral: Vec<Value> = {
            let mut pending = d.edus.lock();
            let n = pending.len().min(EDUS_PER_TXN);
            pending.drain(..n).collect()
        };
        let (rows, stored) = if s.store.runs_deployment_jobs() {
            let rows = s
                .store
                .federation_outbox(server.as_str(), sent.0, PDUS_PER_TXN)
                .unwrap_or_else(|e| {
                    tracing::error!(peer = %server, error = %e, "reading the federation queue");
                    Vec::new()
                });
            let stored = s
                .store
                .federation_edu_outbox(server.as_str(), sent.1, EDUS_PER_TXN - ephemeral.len())
                .unwrap_or_else(|e| {
                    tracing::error!(peer = %server, error = %e, "reading the federation queue");
                    Vec::new()
                });
            (rows, stored)
        } else {
            (Vec::new(), Vec::new())
        };
        if rows.is_empty() && ephemeral.is_empty() && stored.is_empty() {
            if sent != dequeued {
                dequeue(&s, sent, dequeued);
                dequeued = sent;
                last_dequeue = std::time::Instant::now();
            }
            drop(s);
            d.wake.notified().await;
            continue;
        }
        let mut pdus = Vec::with_capacity(rows.len());
        for row in &rows {
            match outgoing(&s, &row.event_id) {
                Some(pdu) => pdus.push(pdu),
                None => {
                    tracing::warn!(peer = %server, event_id = %row.event_id, "a queued event is gone")
                }
            }
        }
        let txn_id = format!(
            "{}.{}",
            s.federation.outbox.epoch,
            s.federation
                .outbox
                .txn_counter
                .fetch_add(1, Ordering::Relaxed)
        );
        let mut request = send_transaction_message::v1::Request::new(
            OwnedTransactionId::from(txn_id),
            s.server_name().to_owned(),
            ruma::MilliSecondsSinceUnixEpoch::now(),
        );
        request.pdus = pdus;
        request.edus = ephemeral
            .iter()
            .filter_map(|e| serde_json::value::to_raw_value(e).ok())
            .chain(
                stored
                    .iter()
                    .filter_map(|e| serde_json::value::RawValue::from_string(e.edu.clone()).ok()),
            )
            .map(ruma::serde::Raw::from_json)
            .collect();
        match s.federation_call(&server, request).await {
            Ok(answer) => {
                for (id, verdict) in &answer.pdus {
                    if let Err(why) = verdict {
                        tracing::warn!(peer = %server, event_id = %id, %why, "the peer refused an event");
                    }
                }
                if let Some(last) = rows.last() {
                    sent.0 = last.seq;
                }
                if let Some(last) = stored.last() {
                    sent.1 = last.seq;
                }
                if last_dequeue.elapsed() >= DEQUEUE_EVERY && sent != dequeued {
                    dequeue(&s, sent, dequeued);
                    dequeued = sent;
                    last_dequeue = std::time::Instant::now();
                }
                let mut status = d.status.lock();
                status.failures = 0;
                status.last_error = None;
                status.last_success_ts = now_ms();
                status.transactions += 1;
                status.events += rows.len() as u64;
                status.sent_upto = sent.0;
                backoff = Duration::from_millis(500);
            }
            Err(e) => {
                {
                    let mut status = d.status.lock();
                    status.failures += 1;
                    status.last_error = Some(e.to_string());
                }
                // The stored entries stay queued for the next try; typing and
                // presence are stale by then.
                tracing::info!(peer = %server, error = %e, retry_in_ms = backoff.as_millis() as u64, "a transaction failed");
                drop(s);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = d.retry.notified() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// A queued event as it goes out.
fn outgoing(s: &Services, event_id: &str) -> Option<Box<serde_json::value::RawValue>> {
    let row = s.store.get_event(event_id).ok()??;
    let room = s.room(&RoomId::parse(&row.room_id).ok()?).ok()?;
    s.outgoing_pdu(&row.json, &room.version, false)
        .map_err(|e| tracing::error!(%event_id, error = %e, "signing an event to send"))
        .ok()
}
