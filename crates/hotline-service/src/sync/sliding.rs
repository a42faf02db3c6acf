//! Simplified Sliding Sync (MSC4186): `POST
//! /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`, the sync
//! of Element X and every client built on matrix-rust-sdk's room list.
//!
//! A client names **lists** (the user's rooms, newest activity first, cut
//! to `ranges`, narrowed by `filters`) and **room subscriptions** (rooms it
//! has open), each with the `required_state` and `timeline_limit` it wants
//! of a room. The answer carries every room of those windows that is new
//! to the connection (`initial`, with its state and newest events) or
//! changed since the connection's `pos`, each list's `count`, and the
//! extensions asked for (to-device, e2ee, account data, receipts, typing).
//!
//! The rooms come from the same reads as `/v3/sync` (`rooms_for_sync`'s
//! pieces: the timeline window with history visibility, the room state,
//! unread counts, stripped invite state), so what a user may see is decided
//! once for both.
//!
//! **Connections.** What a connection (`conn_id`, per device) was sent
//! lives in memory: per room, the stream position it is up to date with,
//! its membership then and the room config it was sent with. Each answer
//! gets a new `pos`; the last [`SNAPSHOTS`] of a connection are kept, so a
//! client retrying a request whose answer it lost is answered from the same
//! point. A `pos` the server does not hold (too old, or from before a
//! restart) is `400 M_UNKNOWN_POS`, on which clients start the connection
//! again. At most [`CONNECTIONS`] connections are kept; the least recently
//! used goes first.
//!
//! Rooms are ordered by `bump_stamp`: the position of the room's newest
//! message-like event (`Room::last_bump_pos`), or of the user's own
//! membership when that is newer (a fresh invite or join comes first).
//! Sorting reads every room of the user once, as an initial `/v3/sync`
//! does; an incremental answer reads only the rooms in the windows.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::SyncToken;
use crate::accounts::Sender;
use crate::rooms::Room;
use crate::{Error, Result, Services};

/// Snapshots kept per connection: the newest answers' starting points (a
/// client retries at most its last request).
const SNAPSHOTS: usize = 3;
/// Connections kept; past this the least recently used is dropped (its
/// client gets `M_UNKNOWN_POS` and starts again). A snapshot holds one
/// small entry per room the connection was sent (the room configs are
/// shared), about 100 bytes: 4,096 connections of users in 500 rooms
/// hold at most about 600 MB, and far less in practice.
const CONNECTIONS: usize = 4_096;
/// The longest list window a request may ask: more rooms than this in one
/// answer are cut (a client pages with ranges).
const MAX_WINDOW: u64 = 1_000;
/// The most events one room's timeline carries, whatever it asks.
const MAX_TIMELINE: u64 = 100;

// ----- the request -----

/// The body of a sliding sync request.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct SlidingRequest {
    pub conn_id: Option<String>,
    pub txn_id: Option<String>,
    pub lists: BTreeMap<String, ListRequest>,
    pub room_subscriptions: BTreeMap<OwnedRoomId, RoomConfig>,
    pub extensions: ExtensionsRequest,
}

/// What a client wants of each room of a list or subscription.
#[derive(Deserialize, Default, Clone, Debug, PartialEq)]
#[serde(default)]
pub struct RoomConfig {
    pub required_state: Vec<(String, String)>,
    pub timeline_limit: u64,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct ListRequest {
    pub ranges: Vec<(u64, u64)>,
    #[serde(flatten)]
    pub config: RoomConfig,
    pub filters: Option<ListFilters>,
}

/// A list's filters; each one given must hold for a room to be listed.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct ListFilters {
    pub is_dm: Option<bool>,
    pub is_encrypted: Option<bool>,
    pub is_invite: Option<bool>,
    /// Room types (`null` is a room with no type).
    pub room_types: Vec<Option<String>>,
    pub not_room_types: Vec<Option<String>>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct ExtensionsRequest {
    pub to_device: ToDeviceRequest,
    pub e2ee: Toggle,
    pub account_data: RoomExtension,
    pub receipts: RoomExtension,
    pub typing: RoomExtension,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct Toggle {
    pub enabled: Option<bool>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct ToDeviceRequest {
    pub enabled: Option<bool>,
    pub since: Option<String>,
    pub limit: Option<u64>,
}

/// An extension about rooms: which lists' and subscriptions' rooms it
/// covers (`None`: all of them; `"*"` in `rooms`: every subscription).
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct RoomExtension {
    pub enabled: Option<bool>,
    pub lists: Option<Vec<String>>,
    pub rooms: Option<Vec<String>>,
}

// ----- the response -----

#[derive(Serialize, Default)]
pub struct SlidingResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub txn_id: Option<String>,
    pub pos: String,
    pub lists: BTreeMap<String, ListCount>,
    pub rooms: BTreeMap<OwnedRoomId, SlidingRoom>,
    pub extensions: Extensions,
}

#[derive(Serialize)]
pub struct ListCount {
    pub count: usize,
}

/// One room's entry. Absent fields are unchanged since the connection's
/// `pos` (or, in an `initial` entry, do not exist).
#[derive(Serialize, Default)]
pub struct SlidingRoom {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Some(None)`: the avatar was removed (sent as `null`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_dm: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invite_state: Option<Vec<Box<RawValue>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub highlight_count: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<Box<RawValue>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub required_state: Vec<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_batch: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub limited: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invited_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_live: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bump_stamp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heroes: Option<Vec<serde_json::Value>>,
}

#[derive(Serialize, Default)]
pub struct Extensions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_device: Option<ToDeviceResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2ee: Option<E2eeResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_data: Option<AccountDataResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipts: Option<RoomsEvents>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typing: Option<RoomsEvents>,
}

#[derive(Serialize)]
pub struct ToDeviceResponse {
    pub next_batch: String,
    pub events: Vec<Box<RawValue>>,
}

#[derive(Serialize)]
pub struct E2eeResponse {
    pub device_lists: super::DeviceLists,
    pub device_one_time_keys_count: BTreeMap<String, u64>,
    pub device_unused_fallback_key_types: Vec<String>,
}

#[derive(Serialize, Default)]
pub struct AccountDataResponse {
    pub global: Vec<Box<RawValue>>,
    pub rooms: BTreeMap<String, Vec<Box<RawValue>>>,
}

/// One ephemeral event per room (`m.receipt` or `m.typing`).
#[derive(Serialize, Default)]
pub struct RoomsEvents {
    pub rooms: BTreeMap<OwnedRoomId, Box<RawValue>>,
}

impl SlidingResponse {
    /// Whether nothing changed: a long-poll keeps waiting.
    fn is_empty(&self, counts_before: &BTreeMap<String, usize>) -> bool {
        let e = &self.extensions;
        self.rooms.is_empty()
            && self
                .lists
                .iter()
                .all(|(name, l)| counts_before.get(name) == Some(&l.count))
            && e.to_device.as_ref().is_none_or(|t| t.events.is_empty())
            && e.e2ee
                .as_ref()
                .is_none_or(|k| k.device_lists.changed.is_empty() && k.device_lists.left.is_empty())
            && e.account_data
                .as_ref()
                .is_none_or(|a| a.global.is_empty() && a.rooms.is_empty())
            && e.receipts.as_ref().is_none_or(|r| r.rooms.is_empty())
            && e.typing.as_ref().is_none_or(|r| r.rooms.is_empty())
    }
}

// ----- connections -----

/// What a connection was sent of one room.
#[derive(Clone)]
pub(super) struct SentRoom {
    /// The stream position the client is up to date with.
    pub(super) pos: i64,
    pub(super) membership: MembershipState,
    /// Shared by the rooms of one list: one room's entry stays small.
    pub(super) config: Arc<RoomConfig>,
}

/// A connection as of one answer: where the next request starts from.
#[derive(Clone, Default)]
struct Snapshot {
    token: Option<SyncToken>,
    rooms: HashMap<OwnedRoomId, SentRoom>,
    counts: BTreeMap<String, usize>,
}

struct Connection {
    snapshots: VecDeque<(u64, Arc<Snapshot>)>,
    used: Instant,
}

type ConnKey = (OwnedUserId, OwnedDeviceId, String);

/// The sliding sync connections of every device (see the module docs).
pub struct SlidingConnections {
    conns: Mutex<HashMap<ConnKey, Connection>>,
    next_pos: AtomicU64,
}

impl Default for SlidingConnections {
    fn default() -> Self {
        // Positions from before a restart must not match new ones by chance.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1)
            * 1_000;
        SlidingConnections {
            conns: Mutex::default(),
            next_pos: AtomicU64::new(start),
        }
    }
}

impl SlidingConnections {
    fn snapshot(&self, key: &ConnKey, pos: &str) -> Option<Arc<Snapshot>> {
        let pos: u64 = pos.parse().ok()?;
        let mut conns = self.conns.lock();
        let conn = conns.get_mut(key)?;
        conn.used = Instant::now();
        conn.snapshots
            .iter()
            .find(|(p, _)| *p == pos)
            .map(|(_, s)| s.clone())
    }

    fn keep(&self, key: ConnKey, snapshot: Snapshot) -> u64 {
        let pos = self.next_pos.fetch_add(1, Ordering::Relaxed);
        let mut conns = self.conns.lock();
        if !conns.contains_key(&key) && conns.len() >= CONNECTIONS {
            let oldest = conns
                .iter()
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                conns.remove(&k);
            }
        }
        let conn = conns.entry(key).or_insert_with(|| Connection {
            snapshots: VecDeque::new(),
            used: Instant::now(),
        });
        conn.used = Instant::now();
        conn.snapshots.push_back((pos, Arc::new(snapshot)));
        while conn.snapshots.len() > SNAPSHOTS {
            conn.snapshots.pop_front();
        }
        pos
    }

    /// A device's connections end with the device (logout, deletion);
    /// `None`: every device of the user.
    pub(crate) fn forget_devices(&self, user: &ruma::UserId, device: Option<&str>) {
        self.conns
            .lock()
            .retain(|(u, d, _), _| !(u == user && device.is_none_or(|x| d.as_str() == x)));
    }
}

// ----- building an answer -----

/// A room of the user's that may be listed, with what sorts it.
struct Candidate {
    room: Arc<Room>,
    membership: MembershipState,
    membership_pos: i64,
    bump: i64,
}

impl Services {
    /// `POST …/org.matrix.simplified_msc3575/sync`: an answer as soon as
    /// something changed since `pos` (or at once without one), or an empty
    /// one after `timeout` (at most 300 seconds).
    pub async fn sliding_sync(
        &self,
        sender: &Sender,
        pos: Option<&str>,
        timeout: Duration,
        req: SlidingRequest,
    ) -> Result<SlidingResponse> {
        let key: ConnKey = (
            sender.user_id.clone(),
            sender.device_id.clone(),
            req.conn_id.clone().unwrap_or_default(),
        );
        let before = match pos {
            Some(p) => Some(self.sliding.snapshot(&key, p).ok_or(Error::UnknownPos)?),
            None => None,
        };
        validate(&req)?;
        let to_device_since = match req.extensions.to_device.since.as_deref() {
            Some(s) => s
                .parse::<i64>()
                .map_err(|_| Error::invalid_param("Invalid to_device since token"))?,
            None => 0,
        };
        if to_device_since > 0 && req.extensions.to_device.enabled == Some(true) {
            self.prune_to_device(sender, to_device_since).await?;
        }
        let deadline = tokio::time::Instant::now() + timeout.min(Duration::from_secs(300));
        let empty = Snapshot::default();
        let prev = before.as_deref().unwrap_or(&empty);
        loop {
            let mut rx = self.notifier.subscribe(&sender.user_id);
            let upto = self.visible_pos();
            let typing = self.typing_serial();
            let (mut resp, next) =
                self.build_sliding(sender, &req, prev, upto, typing, to_device_since)?;
            let waited_enough = tokio::time::Instant::now() >= deadline;
            if before.is_none() || !resp.is_empty(&prev.counts) || waited_enough {
                resp.pos = self.sliding.keep(key, next).to_string();
                resp.txn_id = req.txn_id.clone();
                return Ok(resp);
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        resp.pos = self.sliding.keep(key, next).to_string();
                        resp.txn_id = req.txn_id.clone();
                        return Ok(resp);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// One answer as of position `upto` and typing serial `typing`, and the
    /// connection's snapshot after it.
    fn build_sliding(
        &self,
        sender: &Sender,
        req: &SlidingRequest,
        prev: &Snapshot,
        upto: i64,
        typing: u64,
        to_device_since: i64,
    ) -> Result<(SlidingResponse, Snapshot)> {
        let user = &sender.user_id;
        let user_rooms = self.user_rooms(user)?;
        let since = prev.token;
        let since_pos = since.map(|t| t.pos);
        let direct = self.direct_rooms(user)?;

        // Every room that may be listed, newest first.
        let mut candidates = Vec::new();
        for (room_id, (membership, mpos)) in &user_rooms.rooms {
            if *mpos > upto {
                continue;
            }
            let listed = match membership {
                MembershipState::Join | MembershipState::Invite | MembershipState::Knock => true,
                // A room left during the connection is listed once more,
                // so that the client sees the leave.
                MembershipState::Leave | MembershipState::Ban => {
                    prev.rooms.contains_key(room_id) && since_pos.is_some_and(|s| *mpos > s)
                }
                _ => false,
            };
            if !listed {
                continue;
            }
            let room = self.room(room_id)?;
            let bump = room.last_bump_pos().max(*mpos).min(upto);
            candidates.push(Candidate {
                room,
                membership: membership.clone(),
                membership_pos: *mpos,
                bump,
            });
        }
        candidates.sort_by(|a, b| b.bump.cmp(&a.bump).then_with(|| a.room.id.cmp(&b.room.id)));

        // The windows: each list's ranges over its filtered rooms, then the
        // subscriptions. A room in several gets the union of their configs.
        let mut resp = SlidingResponse::default();
        let mut wanted: BTreeMap<OwnedRoomId, (usize, Arc<RoomConfig>)> = BTreeMap::new();
        let mut in_list: HashMap<&str, HashSet<OwnedRoomId>> = HashMap::new();
        let index: HashMap<OwnedRoomId, usize> = candidates
            .iter()
            .enumerate()
            .map(|(i, c)| (c.room.id.clone(), i))
            .collect();
        for (name, list) in &req.lists {
            let config = Arc::new(list.config.clone());
            let rooms: Vec<&Candidate> = candidates
                .iter()
                .filter(|c| list_wants(list.filters.as_ref(), c, &direct))
                .collect();
            resp.lists
                .insert(name.clone(), ListCount { count: rooms.len() });
            let members = in_list.entry(name.as_str()).or_default();
            for &(start, end) in &list.ranges {
                let end = end.min(start.saturating_add(MAX_WINDOW - 1));
                for i in start..=end {
                    let Some(c) = rooms.get(i as usize) else {
                        break;
                    };
                    let idx = index[&c.room.id];
                    merge(&mut wanted, &c.room.id, idx, &config);
                    members.insert(c.room.id.clone());
                }
            }
        }
        let mut subscribed: HashSet<OwnedRoomId> = HashSet::new();
        for (room_id, config) in &req.room_subscriptions {
            let config = &Arc::new(config.clone());
            // Only rooms the user is or was in; others are ignored, as in
            // Synapse (a subscription reveals nothing of a room).
            if let Some(&idx) = index.get(room_id) {
                merge(&mut wanted, room_id, idx, config);
                subscribed.insert(room_id.clone());
            } else if let Some((m @ (MembershipState::Leave | MembershipState::Ban), mpos)) =
                user_rooms.rooms.get(room_id)
            {
                if *mpos <= upto {
                    let room = self.room(room_id)?;
                    candidates.push(Candidate {
                        room,
                        membership: m.clone(),
                        membership_pos: *mpos,
                        bump: *mpos,
                    });
                    merge(&mut wanted, room_id, candidates.len() - 1, config);
                    subscribed.insert(room_id.clone());
                }
            }
        }

        let mut next = Snapshot {
            token: Some(SyncToken {
                pos: upto,
                typing,
                to_device: 0,
            }),
            rooms: prev.rooms.clone(),
            counts: resp
                .lists
                .iter()
                .map(|(k, v)| (k.clone(), v.count))
                .collect(),
        };
        let mut initial_rooms = HashSet::new();
        for (room_id, (idx, config)) in &wanted {
            let c = &candidates[*idx];
            let sent = prev.rooms.get(room_id);
            let entry = self.sliding_room(
                sender,
                &c.room,
                &c.membership,
                c.membership_pos,
                c.bump,
                config,
                sent,
                upto,
                direct.contains(room_id),
            )?;
            let sent_upto = if matches!(c.membership, MembershipState::Leave | MembershipState::Ban)
            {
                c.membership_pos
            } else {
                upto
            };
            if let Some(entry) = entry {
                if entry.initial == Some(true) {
                    initial_rooms.insert(room_id.clone());
                }
                resp.rooms.insert(room_id.clone(), entry);
            }
            next.rooms.insert(
                room_id.clone(),
                SentRoom {
                    pos: sent_upto,
                    membership: c.membership.clone(),
                    config: config.clone(),
                },
            );
        }

        // Extensions.
        let ext = &req.extensions;
        let covered = |e: &RoomExtension, room_id: &OwnedRoomId| -> bool {
            let by_list = match &e.lists {
                None => in_list.values().any(|s| s.contains(room_id)),
                Some(names) => names.iter().any(|n| {
                    if n == "*" {
                        in_list.values().any(|s| s.contains(room_id))
                    } else {
                        in_list.get(n.as_str()).is_some_and(|s| s.contains(room_id))
                    }
                }),
            };
            let by_sub = match &e.rooms {
                None => subscribed.contains(room_id),
                Some(rooms) => rooms
                    .iter()
                    .any(|r| (r == "*" && subscribed.contains(room_id)) || r == room_id.as_str()),
            };
            by_list || by_sub
        };
        if ext.to_device.enabled == Some(true) {
            let (events, next_pos) = self.to_device_for_sync(sender, to_device_since, upto)?;
            resp.extensions.to_device = Some(ToDeviceResponse {
                next_batch: next_pos.to_string(),
                events,
            });
        }
        if ext.e2ee.enabled == Some(true) {
            let counts = self.key_counts(user.as_str(), sender.device_id.as_str())?;
            let device_lists = match since {
                Some(s) => {
                    let (changed, left) =
                        self.device_list_changes(user, &user_rooms, s.pos, upto)?;
                    super::DeviceLists { changed, left }
                }
                None => Default::default(),
            };
            resp.extensions.e2ee = Some(E2eeResponse {
                device_lists,
                device_one_time_keys_count: counts.one_time_keys,
                device_unused_fallback_key_types: counts.unused_fallback,
            });
        }
        if ext.account_data.enabled == Some(true) {
            let filter = super::SyncFilter::default();
            let (global, mut rooms) = self.account_data_for_sync(
                user,
                &filter,
                since,
                upto,
                user_rooms.last_private_pos,
            )?;
            // A room new to the connection gets all its account data.
            if since.is_some() && !initial_rooms.is_empty() {
                let (_, all) = self.account_data_for_sync(
                    user,
                    &filter,
                    None,
                    upto,
                    user_rooms.last_private_pos,
                )?;
                for (room_id, events) in all {
                    if initial_rooms.iter().any(|r| r.as_str() == room_id) {
                        rooms.insert(room_id, events);
                    }
                }
            }
            rooms.retain(|room_id, _| {
                OwnedRoomId::try_from(room_id.as_str())
                    .is_ok_and(|r| wanted.contains_key(&r) && covered(&ext.account_data, &r))
            });
            resp.extensions.account_data = Some(AccountDataResponse { global, rooms });
        }
        for (on, is_receipts) in [
            (ext.receipts.enabled == Some(true), true),
            (ext.typing.enabled == Some(true), false),
        ] {
            if !on {
                continue;
            }
            let conf = if is_receipts {
                &ext.receipts
            } else {
                &ext.typing
            };
            let mut out = RoomsEvents::default();
            for (room_id, (idx, _)) in &wanted {
                let c = &candidates[*idx];
                if c.membership != MembershipState::Join || !covered(conf, room_id) {
                    continue;
                }
                let fresh = initial_rooms.contains(room_id) || !prev.rooms.contains_key(room_id);
                let since_here = prev.rooms.get(room_id).filter(|_| !fresh).and(since);
                let ev = if is_receipts {
                    self.room_receipts(sender, &c.room, since_here.map(|s| s.pos), upto)?
                } else {
                    self.room_typing(&c.room, since_here.map(|s| s.typing))?
                };
                if let Some(ev) = ev {
                    out.rooms.insert(room_id.clone(), ev);
                }
            }
            if is_receipts {
                resp.extensions.receipts = Some(out);
            } else {
                resp.extensions.typing = Some(out);
            }
        }
        Ok((resp, next))
    }

    /// The rooms the user marked as direct chats (`m.direct`).
    fn direct_rooms(&self, user: &ruma::UserId) -> Result<HashSet<OwnedRoomId>> {
        let Some(row) = self.store.get_account_data(user.as_str(), "", "m.direct")? else {
            return Ok(HashSet::new());
        };
        let doc: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&row.content).unwrap_or_default();
        Ok(doc
            .values()
            .filter_map(|v| v.as_array())
            .flatten()
            .filter_map(|r| r.as_str())
            .filter_map(|r| OwnedRoomId::try_from(r).ok())
            .collect())
    }
}

/// A room in several windows gets every state any of them asks and the
/// longest timeline.
fn merge(
    wanted: &mut BTreeMap<OwnedRoomId, (usize, Arc<RoomConfig>)>,
    room_id: &OwnedRoomId,
    idx: usize,
    config: &Arc<RoomConfig>,
) {
    let entry = wanted
        .entry(room_id.clone())
        .or_insert_with(|| (idx, config.clone()));
    if Arc::ptr_eq(&entry.1, config) {
        return;
    }
    let grows = config.timeline_limit > entry.1.timeline_limit
        || config
            .required_state
            .iter()
            .any(|rs| !entry.1.required_state.contains(rs));
    if grows {
        let merged = Arc::make_mut(&mut entry.1);
        for rs in &config.required_state {
            if !merged.required_state.contains(rs) {
                merged.required_state.push(rs.clone());
            }
        }
        merged.timeline_limit = merged.timeline_limit.max(config.timeline_limit);
    }
}

/// Whether a list with `filters` lists the room.
fn list_wants(filters: Option<&ListFilters>, c: &Candidate, direct: &HashSet<OwnedRoomId>) -> bool {
    let Some(f) = filters else { return true };
    if f.is_dm.is_some_and(|dm| dm != direct.contains(&c.room.id)) {
        return false;
    }
    if f.is_encrypted
        .is_some_and(|e| e != c.room.state_event("m.room.encryption", "").is_some())
    {
        return false;
    }
    if f.is_invite
        .is_some_and(|i| i != (c.membership == MembershipState::Invite))
    {
        return false;
    }
    if !f.room_types.is_empty() || !f.not_room_types.is_empty() {
        let kind: Option<String> = c
            .room
            .state_event("m.room.create", "")
            .and_then(|e| e.content::<serde_json::Value>().ok())
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned));
        if !f.room_types.is_empty() && !f.room_types.contains(&kind) {
            return false;
        }
        if f.not_room_types.contains(&kind) {
            return false;
        }
    }
    true
}

/// What no request may ask: bounds are the server's, said up front.
fn validate(req: &SlidingRequest) -> Result<()> {
    for (name, list) in &req.lists {
        if name.len() > 64 {
            return Err(Error::invalid_param("List names are at most 64 bytes"));
        }
        for (start, end) in &list.ranges {
            if start > end {
                return Err(Error::invalid_param("A range's start is after its end"));
            }
        }
        check_config(&list.config)?;
    }
    for config in req.room_subscriptions.values() {
        check_config(config)?;
    }
    if req.lists.len() > 100 || req.room_subscriptions.len() > MAX_WINDOW as usize {
        return Err(Error::invalid_param("Too many lists or room subscriptions"));
    }
    Ok(())
}

fn check_config(c: &RoomConfig) -> Result<()> {
    if c.required_state.len() > 100 {
        return Err(Error::invalid_param("At most 100 required_state entries"));
    }
    if c.timeline_limit > 10_000 {
        return Err(Error::invalid_param("timeline_limit is too large"));
    }
    Ok(())
}

/// The timeline length a room config gets.
pub(super) fn timeline_len(c: &RoomConfig) -> usize {
    c.timeline_limit.min(MAX_TIMELINE) as usize
}
