//! Presence (`/presence/{userId}/status`) and the `presence` section of
//! `/sync`.
//!
//! A change is a stream item (`WriteOp::PutPresence`): its `200` follows the
//! commit, and the commit hook updates the cache, notes the change for every
//! user who shares a room with the changer and wakes them.
//!
//! **Architecture Invariant:** presence adds no per-sync scan that grows
//! with history. An incremental `/sync` looks at presence only when the
//! hook noted a change by someone sharing a room with the user since the
//! token (one map lookup otherwise), then reads the latest state of those
//! users from the cache; users new to the syncing user (the `changed` list
//! of `device_lists`: joined a shared room, or in a room the user joined)
//! get their current state too.
//!
//! Presence is what users set with `PUT`, and what their syncing clients say
//! with `/sync`'s `set_presence` (omitted means `online`): a sync marks its
//! user online if they were offline or never set, and refreshes their
//! `last_active` at most every [`SYNC_REFRESH_MS`] (a write per sync would
//! cost a commit each); `unavailable` marks them idle; `offline` changes
//! nothing. An `unavailable` the user set stays until they change it.
//!
//! A user whose clients all stop syncing goes `offline`
//! (`offline_after_seconds` after the last sync ended, 30 by default, as
//! Synapse does), keeping their status message. [`Presence`] counts each
//! user's syncs in flight and when the last one ended, in memory, for the
//! users who are not offline: those who synced or set a presence since the
//! start, and those stored as present at the start (so a restart times out
//! who never comes back). A background task ([`Services::time_out_presence`])
//! writes one batch for all who timed out. Idle (`unavailable`) is left to
//! clients, which know when their user is away from the keyboard. With
//! several processes on one database, each tells the others every round
//! whom it saw syncing (`Broadcast::Syncing`), so a user is timed out only
//! when no process has seen them: clients need not stick to one process.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hotline_store::{PresenceRow, WriteBatch, WriteOp};
use parking_lot::Mutex;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedUserId, UserId};
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::sync::RoomEventFilter;
use crate::{now_ms, Error, Result, Services};

/// A user last active this recently (and online) is `currently_active`.
const ACTIVE_WINDOW_MS: i64 = 60_000;
/// A syncing user's `last_active` is rewritten once it is this old.
const SYNC_REFRESH_MS: i64 = ACTIVE_WINDOW_MS / 2;
/// Longest status message accepted: it is sent to every contact.
const MAX_STATUS_MSG: usize = 1024;

/// Presence caches, changed only by the commit hook.
pub struct Presence {
    /// Latest state per user (`None`: never set). Filled on first use.
    states: Mutex<HashMap<OwnedUserId, Option<Arc<PresenceRow>>>>,
    /// Per user: newest position of a presence change by someone sharing a
    /// room with them.
    heard: Mutex<HashMap<OwnedUserId, i64>>,
    /// Stream position at start: a token older than this may predate
    /// changes that `heard` never saw.
    start_pos: i64,
    /// One presence write at a time: a sync's decision to mark its user
    /// online is taken and written under it, so it never overwrites a
    /// `PUT` that committed in between.
    writes: tokio::sync::Mutex<()>,
    /// Users who may be shown present, with their syncs (module docs).
    syncing: Arc<Mutex<HashMap<OwnedUserId, Syncing>>>,
}

/// A user's syncs, for the offline timeout.
#[derive(Clone, Copy)]
struct Syncing {
    /// Syncs in flight on this process.
    in_flight: u32,
    /// When the last sync ended (or the user was last seen otherwise), on
    /// this process or, as another process said, on that one.
    last_seen_ms: i64,
    /// When last seen by this process itself: what it tells the others.
    here_ms: i64,
}

/// Held for the life of one `/sync` request: counts it as in flight, and
/// notes when it ended, however it ends (a client that hangs up drops it).
pub struct SyncInFlight {
    syncing: Arc<Mutex<HashMap<OwnedUserId, Syncing>>>,
    user: OwnedUserId,
}

impl Drop for SyncInFlight {
    fn drop(&mut self) {
        // A user timed out while this sync ran is back as seen now.
        let mut map = self.syncing.lock();
        let s = seen_now(&mut map, &self.user);
        s.in_flight = s.in_flight.saturating_sub(1);
    }
}

/// `user`'s entry, (re)created if needed, marked as seen now.
fn seen_now<'a>(map: &'a mut HashMap<OwnedUserId, Syncing>, user: &UserId) -> &'a mut Syncing {
    let now = now_ms();
    if !map.contains_key(user) {
        map.insert(
            user.to_owned(),
            Syncing {
                in_flight: 0,
                last_seen_ms: now,
                here_ms: now,
            },
        );
    }
    let s = map.get_mut(user).expect("inserted above");
    s.last_seen_ms = now;
    s.here_ms = now;
    s
}

impl Presence {
    pub fn new(current_position: i64) -> Self {
        Presence {
            states: Mutex::new(HashMap::new()),
            heard: Mutex::new(HashMap::new()),
            start_pos: current_position,
            writes: tokio::sync::Mutex::new(()),
            syncing: Arc::default(),
        }
    }

    /// Counts a `/sync` of `user` as in flight until the guard drops.
    pub fn sync_started(&self, user: &UserId) -> SyncInFlight {
        seen_now(&mut self.syncing.lock(), user).in_flight += 1;
        SyncInFlight {
            syncing: self.syncing.clone(),
            user: user.to_owned(),
        }
    }

    /// Notes `user` as seen now, so their presence times out from here.
    fn seen(&self, user: &UserId) {
        seen_now(&mut self.syncing.lock(), user);
    }

    /// Users this process saw syncing since `since_ms`, or syncing now:
    /// for the other processes on the database, which must not time them
    /// out (several processes, see [`Services::time_out_presence`]).
    fn seen_here_since(&self, since_ms: i64) -> Vec<String> {
        self.syncing
            .lock()
            .iter()
            .filter(|(_, s)| s.in_flight > 0 || s.here_ms >= since_ms)
            .map(|(u, _)| u.to_string())
            .collect()
    }

    /// Another process saw these users syncing: their timeout starts over.
    pub(crate) fn seen_elsewhere(&self, users: &[String]) {
        let now = now_ms();
        let mut map = self.syncing.lock();
        for user in users {
            let Ok(user) = UserId::parse(user.as_str()) else {
                continue;
            };
            map.entry(user)
                .or_insert(Syncing {
                    in_flight: 0,
                    last_seen_ms: now,
                    here_ms: 0,
                })
                .last_seen_ms = now;
        }
    }

    /// Newest presence change the user may not have been told of.
    fn heard_upto(&self, user: &UserId) -> i64 {
        self.heard
            .lock()
            .get(user)
            .copied()
            .unwrap_or(self.start_pos)
    }
}

/// `GET /presence/{userId}/status`.
#[derive(Debug, Serialize)]
pub struct PresenceStatus {
    pub presence: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active_ago: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_msg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currently_active: Option<bool>,
}

impl PresenceStatus {
    fn of(row: Option<&PresenceRow>, now: i64) -> Self {
        let Some(row) = row else {
            return PresenceStatus {
                presence: "offline".into(),
                last_active_ago: None,
                status_msg: None,
                currently_active: None,
            };
        };
        let ago = (now - row.last_active_ts).max(0);
        PresenceStatus {
            presence: row.state.clone(),
            last_active_ago: Some(ago),
            status_msg: row.status_msg.clone(),
            currently_active: (row.state == "online").then_some(ago < ACTIVE_WINDOW_MS),
        }
    }
}

impl Services {
    /// `PUT /presence/{userId}/status`: answers after the change is durable.
    pub async fn set_presence(
        &self,
        user: &UserId,
        state: &str,
        status_msg: Option<String>,
    ) -> Result<()> {
        if !matches!(state, "online" | "unavailable" | "offline") {
            return Err(Error::invalid_param(
                "presence must be online, unavailable or offline",
            ));
        }
        if status_msg
            .as_ref()
            .is_some_and(|m| m.len() > MAX_STATUS_MSG)
        {
            return Err(Error::invalid_param("status_msg is too long"));
        }
        let _one_at_a_time = self.presence.writes.lock().await;
        if state != "offline" {
            self.presence.seen(user);
        }
        self.store
            .write(WriteBatch::one(WriteOp::PutPresence {
                user_id: user.to_string(),
                state: state.to_owned(),
                status_msg,
                last_active_ts: now_ms(),
            }))
            .await?;
        Ok(())
    }

    /// `/sync`'s `set_presence` (module docs): answers once any change it
    /// makes is durable, before the sync looks for news.
    pub async fn presence_from_sync(
        &self,
        user: &UserId,
        set_presence: Option<&str>,
    ) -> Result<()> {
        let wanted = match set_presence {
            None | Some("online") => "online",
            Some("unavailable") => "unavailable",
            Some("offline") => return Ok(()),
            Some(_) => {
                return Err(Error::invalid_param(
                    "set_presence must be online, unavailable or offline",
                ))
            }
        };
        let due = |row: Option<&PresenceRow>, now: i64| match row {
            None => true,
            Some(r) => match (wanted, r.state.as_str()) {
                ("online", "online") => now - r.last_active_ts >= SYNC_REFRESH_MS,
                ("online", "unavailable") => false,
                ("unavailable", "unavailable") => false,
                _ => true,
            },
        };
        // Nearly every sync stops here, on the cache, without the lock.
        if !due(self.presence_of(user)?.as_deref(), now_ms()) {
            return Ok(());
        }
        let _one_at_a_time = self.presence.writes.lock().await;
        let current = self.presence_of(user)?;
        if !due(current.as_deref(), now_ms()) {
            return Ok(());
        }
        self.store
            .write(WriteBatch::one(WriteOp::PutPresence {
                user_id: user.to_string(),
                state: wanted.to_owned(),
                status_msg: current.and_then(|r| r.status_msg.clone()),
                last_active_ts: now_ms(),
            }))
            .await?;
        Ok(())
    }

    /// Starts the offline timeout (module docs): users stored as present
    /// count as seen now, and a task checks every quarter of the timeout
    /// (at least every 5 s) for users whose syncs all ended longer ago.
    pub fn time_out_presence(self: &Arc<Self>) -> Result<()> {
        let after_ms = i64::try_from(self.config.offline_after_seconds.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        // Users stored as present when the deployment starts are timed out
        // if they never come back; with several processes, by one of them
        // (the others would time out users syncing elsewhere). Otherwise a
        // process times out the users it saw syncing.
        if self.store.runs_deployment_jobs() {
            for user in self.store.users_present()? {
                if let Ok(u) = UserId::parse(user.as_str()) {
                    self.presence.seen(&u);
                }
            }
        }
        let every =
            std::time::Duration::from_millis((after_ms / 4).clamp(100, 5_000).unsigned_abs());
        // With several processes, each says every round whom it saw
        // syncing, so a user whose syncs moved to another process is not
        // timed out by this one: everyone is heard of at least four times
        // within the timeout.
        let shared = self.store.shared();
        let last_told = Arc::new(std::sync::atomic::AtomicI64::new(0));
        self.run_every(every, move |s| {
            let last_told = last_told.clone();
            async move {
                if shared {
                    let now = now_ms();
                    let since = last_told.swap(now, std::sync::atomic::Ordering::AcqRel);
                    let users = s.presence.seen_here_since(since);
                    s.broadcast_in_parts(
                        users,
                        |u| u.len() + 3,
                        |users| hotline_store::Broadcast::Syncing { users },
                    );
                }
                if let Err(e) = s.mark_offline(after_ms).await {
                    tracing::warn!(error = %e, "presence timeout");
                }
            }
        });
        Ok(())
    }

    /// One round of the offline timeout: every user with no sync in flight
    /// and none ended within `after_ms` goes offline, in one commit.
    async fn mark_offline(&self, after_ms: i64) -> Result<()> {
        let now = now_ms();
        let due = |s: &Syncing| s.in_flight == 0 && now - s.last_seen_ms >= after_ms;
        if !self.presence.syncing.lock().values().any(due) {
            return Ok(());
        }
        let _one_at_a_time = self.presence.writes.lock().await;
        let gone: Vec<OwnedUserId> = self
            .presence
            .syncing
            .lock()
            .extract_if(|_, s| due(s))
            .map(|(u, _)| u)
            .collect();
        let mut batch = WriteBatch::new();
        for user in &gone {
            if let Some(row) = self.presence_of(user)? {
                if row.state != "offline" {
                    batch.push(WriteOp::PutPresence {
                        user_id: user.to_string(),
                        state: "offline".to_owned(),
                        status_msg: row.status_msg.clone(),
                        last_active_ts: row.last_active_ts,
                    });
                }
            }
        }
        if batch.ops.is_empty() {
            return Ok(());
        }
        self.store.write(batch).await?;
        // A sync that began meanwhile saw its user still online in the cache
        // and wrote nothing: put those users back.
        let back: Vec<OwnedUserId> = {
            let map = self.presence.syncing.lock();
            gone.into_iter().filter(|u| map.contains_key(u)).collect()
        };
        if back.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        for user in back {
            let status_msg = self.presence_of(&user)?.and_then(|r| r.status_msg.clone());
            batch.push(WriteOp::PutPresence {
                user_id: user.to_string(),
                state: "online".to_owned(),
                status_msg,
                last_active_ts: now_ms(),
            });
        }
        self.store.write(batch).await?;
        Ok(())
    }

    /// `GET /presence/{userId}/status`: the user's own, or that of someone
    /// they share a room with; anyone else (existing or not) is refused alike.
    pub fn get_presence(&self, asker: &UserId, target: &UserId) -> Result<PresenceStatus> {
        if asker != target && !self.shares_room(asker, target)? {
            return Err(Error::forbidden(
                "You are not allowed to see their presence",
            ));
        }
        Ok(PresenceStatus::of(
            self.presence_of(target)?.as_deref(),
            now_ms(),
        ))
    }

    fn shares_room(&self, a: &UserId, b: &UserId) -> Result<bool> {
        for (room_id, (m, _)) in self.user_rooms(a)?.rooms {
            if m == MembershipState::Join && self.room(&room_id)?.is_joined(b) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The user's latest presence, from the cache (loaded on first use).
    fn presence_of(&self, user: &UserId) -> Result<Option<Arc<PresenceRow>>> {
        // Loaded under the lock: the commit hook waits for it, so a row
        // read before a commit cannot overwrite the hook's newer one.
        let mut states = self.presence.states.lock();
        if let Some(s) = states.get(user) {
            return Ok(s.clone());
        }
        let row = self.store.get_presence(user.as_str())?.map(Arc::new);
        states.insert(user.to_owned(), row.clone());
        Ok(row)
    }

    /// Commit hook: a presence change at `pos`; everyone sharing a room with
    /// the changer (and the changer) hears of it and is woken.
    pub(crate) fn apply_presence(&self, pos: i64, op: &WriteOp, wake: &mut Vec<OwnedUserId>) {
        let WriteOp::PutPresence {
            user_id,
            state,
            status_msg,
            last_active_ts,
        } = op
        else {
            return;
        };
        let Ok(user) = UserId::parse(user_id.as_str()) else {
            return;
        };
        let row = PresenceRow {
            user_id: user_id.clone(),
            state: state.clone(),
            status_msg: status_msg.clone(),
            last_active_ts: *last_active_ts,
            pos,
        };
        self.presence
            .states
            .lock()
            .insert(user.clone(), Some(Arc::new(row)));
        match self.users_sharing_rooms(&user) {
            Ok(users) => {
                self.federate_presence(
                    &user,
                    state,
                    status_msg.as_deref(),
                    *last_active_ts,
                    &users,
                );
                let mut heard = self.presence.heard.lock();
                for u in users {
                    let h = heard.entry(u.clone()).or_insert(pos);
                    *h = (*h).max(pos);
                    wake.push(u);
                }
            }
            Err(e) => tracing::warn!(error = %e, "presence wake-up"),
        }
    }

    /// The `m.presence` events for a `/sync` up to `upto`: every contact's
    /// state when `since` is `None` (initial or full-state sync); otherwise
    /// the contacts whose presence changed after `since`, and `new_contacts`.
    pub(crate) fn presence_for_sync(
        &self,
        user: &UserId,
        since: Option<i64>,
        upto: i64,
        new_contacts: &[OwnedUserId],
        filter: &RoomEventFilter,
    ) -> Result<Vec<Box<RawValue>>> {
        if !filter.matches_type_and_sender("m.presence", None) {
            return Ok(Vec::new());
        }
        let mut found: BTreeMap<OwnedUserId, Arc<PresenceRow>> = BTreeMap::new();
        let mut consider = |u: &UserId, changed_after: Option<i64>| -> Result<()> {
            if let Some(row) = self.presence_of(u)? {
                if row.pos <= upto && changed_after.is_none_or(|s| row.pos > s) {
                    found.insert(u.to_owned(), row);
                }
            }
            Ok(())
        };
        match since {
            None => {
                for u in self.users_sharing_rooms(user)? {
                    consider(&u, None)?;
                }
            }
            Some(since) => {
                if self.presence.heard_upto(user) > since {
                    for u in self.users_sharing_rooms(user)? {
                        consider(&u, Some(since))?;
                    }
                }
                for u in new_contacts {
                    consider(u, None)?;
                }
            }
        }
        let now = now_ms();
        let mut events = Vec::with_capacity(found.len());
        for (u, row) in found {
            if !filter.matches_type_and_sender("m.presence", Some(u.as_str())) {
                continue;
            }
            let content = PresenceStatus::of(Some(&row), now);
            events.push(serde_json::value::to_raw_value(
                &json!({"type": "m.presence", "sender": u, "content": content}),
            )?);
        }
        Ok(events)
    }
}
