//! Hotline's rules: who may do what, and what happens when they do.
//!
//! This crate knows nothing of HTTP or SQL. It takes typed requests from the
//! api layer, applies the Matrix rules (room authorization via
//! `ruma::state_res`), and persists through [`hotline_store::Store`].
//!
//! **Architecture Invariant:** this layer never sees plaintext of encrypted
//! rooms: `m.room.encrypted` content is opaque JSON that is stored and relayed
//! as-is.
//!
//! **Architecture Invariant:** in-memory caches (room state, recent events,
//! memberships) are only changed by the store's commit hook, so they never
//! show anything that is not durable, and they change in stream order.

pub mod accounts;
pub mod availability;
pub mod backup;
pub mod config;
pub mod contact_log;
pub mod error;
pub mod federation;
pub mod fingerprint;
pub mod identity;
pub mod keys;
pub mod line_aides;
pub mod line_record;
pub mod line_recorder;
pub mod lines_across;
pub mod media;
pub mod names;
mod notifier;
pub mod pdu;
pub mod peer_officials;
pub mod policy;
pub mod presence;
pub mod push_rules;
pub mod pushers;
pub mod ratelimit;
pub mod rooms;
pub mod sync;
pub mod tags;
pub mod user_data;
pub mod voip;
pub mod watermark;
pub mod web_push;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

pub use config::Config;
pub use error::{Error, Result};
use hotline_store::Store;

/// Every service, wired once at start and shared by all requests.
pub struct Services {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub accounts: accounts::Accounts,
    pub rooms: rooms::Rooms,
    pub notifier: notifier::Notifier,
    pub media: media::Media,
    pub keys: keys::Keys,
    pub presence: presence::Presence,
    /// Delivery to push gateways.
    pub pushers: pushers::Pushers,
    pub(crate) filters: sync::FilterCache,
    /// Sliding sync connections: what each was sent.
    pub(crate) sliding: sync::SlidingConnections,
    /// Each user's push rules in force, for unread counts.
    pub(crate) push_rules_cache: push_rules::RulesCache,
    /// Serialises edits of a user's account data documents.
    pub(crate) doc_locks: user_data::DocLocks,
    /// Signs attestations; published at `/_matrix/key/v2/server`.
    pub server_key: identity::ServerKey,
    /// Signs for the Web Push this server's push gateway sends (VAPID).
    pub(crate) web_push: web_push::VapidKey,
    pub federation: federation::Federation,
    /// Peers' directories of officials as last read.
    pub(crate) peer_directories: peer_officials::PeerDirectories,
    pub ratelimit: ratelimit::RateLimiter,
    /// Serialises line invite redemptions (see `redeem_line_invite`).
    pub(crate) line_redeem_lock: tokio::sync::Mutex<()>,
    /// Highest stream position whose effects are visible in the caches.
    visible_pos: AtomicI64,
    /// Serial of ephemeral (typing) changes; part of sync tokens.
    typing_serial: AtomicU64,
    /// Room events in the store: counted once at start, then per commit.
    events_stored: AtomicU64,
    /// One archiver invitation at a time: the commit hook asks for a new
    /// line twice (its state, its principal's join), and two tasks reading
    /// the same state would both invite.
    pub(crate) recorder_ensuring: tokio::sync::Mutex<()>,
    /// The serving process's runtime, for the records archiver's invites
    /// the commit hook asks for (`line_recorder`).
    pub(crate) recorder_runner:
        std::sync::OnceLock<(tokio::runtime::Handle, std::sync::Weak<Services>)>,
}

impl Services {
    /// Wires the services over `store` and installs the commit hook.
    pub fn new(config: Config, store: Arc<dyn Store>) -> Result<Arc<Self>> {
        let media = media::Media::new(config.data_dir.join("media"))?;
        let server_key = identity::ServerKey::load_or_create(&config.data_dir)?;
        let web_push = web_push::VapidKey::load_or_create(&config.data_dir)?;
        let services = Arc::new(Self {
            accounts: accounts::Accounts::new(&config),
            rooms: rooms::Rooms::default(),
            notifier: notifier::Notifier::default(),
            ratelimit: ratelimit::RateLimiter::new(config.rate_limits.clone()),
            line_redeem_lock: Default::default(),
            media,
            keys: keys::Keys::new(store.current_position()),
            presence: presence::Presence::new(store.current_position()),
            pushers: Default::default(),
            doc_locks: Default::default(),
            filters: Default::default(),
            sliding: Default::default(),
            push_rules_cache: Default::default(),
            server_key,
            web_push,
            federation: federation::Federation::new(&config.federation),
            peer_directories: Default::default(),
            visible_pos: AtomicI64::new(store.current_position()),
            typing_serial: AtomicU64::new(0),
            events_stored: AtomicU64::new(store.count_events()?),
            recorder_runner: Default::default(),
            recorder_ensuring: Default::default(),
            config,
            store,
        });
        let weak = Arc::downgrade(&services);
        services.store.set_commit_hook(Arc::new(move |committed| {
            if let Some(s) = weak.upgrade() {
                s.on_commit(committed);
            }
        }));
        // Broadcasts arrive on the store's thread; typing expiry needs the
        // server's runtime.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&services);
            services.store.set_broadcast_hook(Arc::new(move |message| {
                if let Some(s) = weak.upgrade() {
                    let message = message.clone();
                    runtime.spawn(async move { s.on_broadcast(&message) });
                }
            }));
        }
        if services.store.shared() {
            services.ratelimit.share();
            let weak = Arc::downgrade(&services);
            std::thread::Builder::new()
                .name("share-rate-limits".into())
                .spawn(move || share_rate_limits(weak))
                .map_err(Error::internal)?;
        }
        Ok(services)
    }

    /// The server name users live on.
    pub fn server_name(&self) -> &ruma::ServerName {
        self.accounts.server_name()
    }

    pub(crate) fn visible_pos(&self) -> i64 {
        self.visible_pos.load(Ordering::Acquire)
    }

    /// Room events stored, for `/metrics`. Events another process (the
    /// `hotline admin` CLI) wrote since this one started are not included.
    pub fn events_stored(&self) -> u64 {
        self.events_stored.load(Ordering::Relaxed)
    }

    pub(crate) fn typing_serial(&self) -> u64 {
        self.typing_serial.load(Ordering::Acquire)
    }

    /// Applies a committed batch to the caches, then wakes whoever it concerns.
    fn on_commit(&self, committed: &hotline_store::Committed) {
        let mut wake = Vec::new();
        let mut lines_to_record = Vec::new();
        for (pos, op) in &committed.items {
            match op {
                hotline_store::WriteOp::AppendEvent(e) => {
                    self.events_stored.fetch_add(1, Ordering::Relaxed);
                    // A line turned official, or a principal joined one: the
                    // records office's archiver comes onto it.
                    let joined = e.membership.as_ref().is_some_and(|(u, m)| {
                        m == "join" && u.ends_with(&format!(":{}", self.server_name()))
                    });
                    if e.event_type == policy::LINE_STATE || joined {
                        if let Ok(room) = ruma::OwnedRoomId::try_from(e.room_id.as_str()) {
                            lines_to_record.push(room);
                        }
                    }
                    self.rooms.apply_committed(*pos, e, &mut wake);
                    self.pushers.wake();
                }
                hotline_store::WriteOp::QueueFederation { destination, .. }
                | hotline_store::WriteOp::QueueFederationEdu { destination, .. } => {
                    self.federation.wake(destination)
                }
                hotline_store::WriteOp::PutAccountData {
                    user_id,
                    room_id,
                    kind,
                    ..
                } => {
                    if let Ok(u) = ruma::UserId::parse(user_id.as_str()) {
                        if room_id.is_empty() && kind == push_rules::PUSH_RULES {
                            // Edited here, the editor puts the new rules in
                            // after this; edited by another process, the next
                            // read loads them.
                            self.push_rules_cache.forget(&u);
                        }
                        // Before the wake: the woken /sync must see it moved.
                        self.rooms.touch_private(&u, *pos);
                        wake.push(u);
                    }
                }
                op @ hotline_store::WriteOp::SetCurrentState { .. } => {
                    self.rooms.apply_current_state(*pos, op, &mut wake)
                }
                op @ hotline_store::WriteOp::PutReceipt { .. } => {
                    self.rooms.apply_receipt(*pos, op, &mut wake)
                }
                op @ hotline_store::WriteOp::PutPresence { .. } => {
                    self.apply_presence(*pos, op, &mut wake)
                }
                hotline_store::WriteOp::KeyChange { user_id } => {
                    self.keys.note_key_change(*pos);
                    if let Ok(u) = ruma::UserId::parse(user_id.as_str()) {
                        // A vouch or revocation on a peer comes as one.
                        self.reread_peer_directory(u.server_name());
                        // Everyone who shares a room hears of it in `device_lists`.
                        match self.users_sharing_rooms(&u) {
                            Ok(users) => {
                                let users: Vec<_> = users.into_iter().collect();
                                self.federate_key_change(&u, &users, *pos);
                                wake.extend(users)
                            }
                            Err(e) => tracing::warn!(error = %e, "device list wake-up"),
                        }
                    }
                }
                hotline_store::WriteOp::PutToDevice {
                    user_id, device_id, ..
                } => {
                    self.keys.note_to_device(user_id, device_id, *pos);
                    if let Ok(u) = ruma::UserId::parse(user_id.as_str()) {
                        wake.push(u);
                    }
                }
                hotline_store::WriteOp::PutOneTimeKeys {
                    user_id, device_id, ..
                }
                | hotline_store::WriteOp::PutFallbackKey {
                    user_id, device_id, ..
                }
                | hotline_store::WriteOp::DeleteOneTimeKey {
                    user_id, device_id, ..
                }
                | hotline_store::WriteOp::MarkFallbackUsed {
                    user_id, device_id, ..
                } => self.keys.counts_changed(user_id, device_id),
                hotline_store::WriteOp::DeleteDevice { user_id, device_id } => {
                    self.keys.forget_device(user_id, device_id);
                    // Its tokens stop working in each process as it applies this commit
                    // (another process replays it within milliseconds).
                    if let Ok(u) = ruma::UserId::parse(user_id.as_str()) {
                        self.forget_cached_tokens(&u, Some(device_id));
                    }
                }
                hotline_store::WriteOp::DeleteDeviceTokens { user_id, device_id } => {
                    if let Ok(u) = ruma::UserId::parse(user_id.as_str()) {
                        self.forget_cached_tokens(&u, Some(device_id));
                    }
                }
                hotline_store::WriteOp::Deactivate { user_id } => {
                    if let Ok(u) = ruma::UserId::parse(user_id.as_str()) {
                        self.forget_cached_tokens(&u, None);
                    }
                }
                _ => {}
            }
        }
        let upto = committed
            .max_position()
            .unwrap_or(0)
            .max(committed.high_water);
        let before = self.visible_pos.fetch_max(upto, Ordering::AcqRel);
        if committed.high_water > committed.max_position().unwrap_or(0) && upto > before {
            // Positions this process did not write: another process's
            // commits (the admin CLI vouching or revoking). Their key
            // changes reach `device_lists` now; wake whom they concern.
            self.external_key_changes(before, upto, &mut wake);
        }
        for user in wake {
            self.notifier.wake(&user);
        }
        // After the caches took the commit: the task reads the line's state.
        for room in lines_to_record {
            self.ensure_recorder_soon(room);
        }
    }

    /// Key changes committed by another process in `(from, to]`: noted for
    /// `device_lists`, and everyone sharing a room with those users woken.
    fn external_key_changes(&self, from: i64, to: i64, wake: &mut Vec<ruma::OwnedUserId>) {
        let users = match self.store.key_changes(from, to) {
            Ok(users) => users,
            Err(e) => return tracing::warn!(error = %e, "reading another process's key changes"),
        };
        if users.is_empty() {
            return;
        }
        self.keys.note_key_change(to);
        for u in users
            .iter()
            .filter_map(|u| ruma::UserId::parse(u.as_str()).ok())
        {
            match self.users_sharing_rooms(&u) {
                Ok(others) => wake.extend(others),
                Err(e) => tracing::warn!(error = %e, "device list wake-up"),
            }
            wake.push(u);
        }
    }

    /// Notices commits made by another process on the same database (the
    /// `hotline admin` CLI beside a running server) within `every`: when
    /// the stored high-water mark passed ours, an empty commit through our
    /// own writer carries it into the commit hook, in commit order.
    pub fn watch_other_processes(self: &Arc<Self>, every: std::time::Duration) {
        self.run_every(every, |s| async move {
            match s.store.stored_position() {
                Ok(stored) if stored > s.store.current_position() => {
                    if let Err(e) = s.store.write(hotline_store::WriteBatch::new()).await {
                        tracing::warn!(error = %e, "catching up with another process");
                    }
                    // What it queued for other servers goes out now.
                    s.wake_federation_queues();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading the stored position"),
            }
        });
    }

    /// Runs `round` every `every` on the runtime, for as long as the
    /// services live (the task holds them only during a round).
    pub(crate) fn run_every<F, Fut>(self: &Arc<Self>, every: std::time::Duration, round: F)
    where
        F: Fn(Arc<Self>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(s) = weak.upgrade() else { return };
                round(s).await;
            }
        });
    }

    /// Bumps the typing serial and wakes the room's members.
    pub(crate) fn typing_changed(&self, members: Vec<ruma::OwnedUserId>) {
        self.typing_serial.fetch_add(1, Ordering::AcqRel);
        for u in members {
            self.notifier.wake(&u);
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    ruma::MilliSecondsSinceUnixEpoch::now().get().into()
}

/// Tells the other processes on the database what this one's rate limiter
/// charged, every [`ratelimit::SHARE_EVERY`], until the services are gone.
fn share_rate_limits(services: std::sync::Weak<Services>) {
    loop {
        std::thread::sleep(ratelimit::SHARE_EVERY);
        let Some(s) = services.upgrade() else { return };
        let charges = s.ratelimit.take_charges();
        s.broadcast_in_parts(
            charges,
            |(k, _)| k.len() + 16,
            |charges| hotline_store::Broadcast::RateCharges { charges },
        );
    }
}

impl Services {
    /// Broadcasts `items` to the other processes in as many messages as a
    /// notification's size allows (`bytes`: an item's size in JSON, about).
    pub(crate) fn broadcast_in_parts<T>(
        &self,
        mut items: Vec<T>,
        bytes: impl Fn(&T) -> usize,
        message: impl Fn(Vec<T>) -> hotline_store::Broadcast,
    ) {
        // A PostgreSQL notification carries at most 8000 bytes.
        const MAX_BYTES: usize = 6000;
        while !items.is_empty() {
            let mut total = 0;
            let split = items
                .iter()
                .position(|item| {
                    total += bytes(item);
                    total > MAX_BYTES
                })
                .unwrap_or(items.len())
                .max(1);
            let rest = items.split_off(split);
            self.store.broadcast(&message(items));
            items = rest;
        }
    }
}
