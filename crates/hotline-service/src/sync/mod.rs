//! `/sync`: what changed for a user since their token, or a long wait until
//! something does.
//!
//! **Architecture Invariant:** an incremental sync reads only what changed
//! since its token: rooms whose latest position passed it (known from the
//! room cache), and per-user rows by position index. Its cost does not grow
//! with total history or total users.
//!
//! Tokens are `s{P}_{T}`: everything up to stream position `P` and typing
//! serial `T` has been delivered.
//!
//! Filters apply before limits: a timeline keeps the newest `limit`
//! matching events (a bounded scan below the in-memory window), so
//! `limited` and `prev_batch` describe what the client asked for. Lazy
//! loading sends the member events of the timeline's senders that the
//! device was not yet sent ([`SyncCaches`]), and unread counts are kept per
//! user and room and moved on by the events each sync brings.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ruma::events::room::member::MembershipState;
use ruma::events::TimelineEventType;
use ruma::{DeviceId, EventId, OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use crate::accounts::Sender;
use crate::pdu::PduEvent;
use crate::push_rules::PushEval;
use crate::rooms::Room;
use crate::{Error, Result, Services};

/// Which events of a room a client wants: the spec's `RoomEventFilter`
/// (also read for `EventFilter`s, whose fields are a subset).
#[derive(Clone, Debug, Default)]
pub struct RoomEventFilter {
    pub limit: Option<usize>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    /// `Some(true)`: only events whose content has a `url` string;
    /// `Some(false)`: only events without one.
    pub contains_url: Option<bool>,
    pub lazy_load_members: bool,
    pub include_redundant_members: bool,
}

fn type_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

/// Calls `f` with the name of an event type, written into a stack buffer
/// (ruma's event types only show their name through `Display`), so that
/// matching a filter allocates nothing for ordinary names.
fn with_kind_str<R>(kind: &TimelineEventType, f: impl FnOnce(&str) -> R) -> R {
    use std::fmt::Write;
    struct Buf {
        bytes: [u8; 128],
        len: usize,
        spill: Option<String>,
    }
    impl Write for Buf {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            if let Some(spill) = &mut self.spill {
                spill.push_str(s);
            } else if self.len + s.len() <= self.bytes.len() {
                self.bytes[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
                self.len += s.len();
            } else {
                let mut spill = String::with_capacity(self.len + s.len());
                spill.push_str(std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default());
                spill.push_str(s);
                self.spill = Some(spill);
            }
            Ok(())
        }
    }
    let mut buf = Buf {
        bytes: [0; 128],
        len: 0,
        spill: None,
    };
    let _ = write!(buf, "{kind}");
    match &buf.spill {
        Some(s) => f(s),
        // Whole `str`s were copied in, so the bytes are UTF-8.
        None => f(std::str::from_utf8(&buf.bytes[..buf.len]).unwrap_or_default()),
    }
}

/// Whether an event's content has a `url` string (`contains_url`).
fn content_has_url(content: &RawValue) -> bool {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow, default)]
        url: Option<&'a RawValue>,
    }
    serde_json::from_str::<Probe>(content.get())
        .ok()
        .and_then(|p| p.url)
        .is_some_and(|u| u.get().starts_with('"'))
}

impl RoomEventFilter {
    /// Whether every event passes (room lists aside): nothing to look at
    /// per event.
    pub fn passes_all(&self) -> bool {
        self.types.is_none()
            && self.not_types.is_empty()
            && self.senders.is_none()
            && self.not_senders.is_empty()
            && self.contains_url.is_none()
    }

    /// Whether no event can pass (`types: []` or `senders: []`).
    pub fn passes_none(&self) -> bool {
        self.types.as_ref().is_some_and(|t| t.is_empty())
            || self.senders.as_ref().is_some_and(|s| s.is_empty())
    }

    /// Whether the filter's `rooms` / `not_rooms` let `room` through.
    pub fn room_ok(&self, room: &str) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|r| r.iter().any(|x| x == room))
            && !self.not_rooms.iter().any(|x| x == room)
    }

    pub fn matches(&self, e: &PduEvent) -> bool {
        if self.passes_all() {
            return true;
        }
        let type_ok = (self.types.is_none() && self.not_types.is_empty())
            || with_kind_str(&e.pdu.kind, |k| self.type_ok(k));
        type_ok
            && self.sender_ok(e.pdu.sender.as_str())
            && self
                .contains_url
                .is_none_or(|want| content_has_url(&e.pdu.content) == want)
    }

    fn type_ok(&self, kind: &str) -> bool {
        self.types
            .as_ref()
            .is_none_or(|t| t.iter().any(|p| type_matches(p, kind)))
            && !self.not_types.iter().any(|p| type_matches(p, kind))
    }

    fn sender_ok(&self, sender: &str) -> bool {
        self.senders
            .as_ref()
            .is_none_or(|s| s.iter().any(|x| x == sender))
            && !self.not_senders.iter().any(|x| x == sender)
    }

    /// Whether events of `kind` (from `sender`, when known) pass the filter.
    pub fn matches_type_and_sender(&self, kind: &str, sender: Option<&str>) -> bool {
        self.type_ok(kind) && sender.is_none_or(|sender| self.sender_ok(sender))
    }

    /// Reads the spec's `RoomEventFilter` JSON.
    pub fn from_json(v: &serde_json::Value) -> Self {
        let strings = |k: &str| -> Option<Vec<String>> {
            v.get(k).and_then(|x| x.as_array()).map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
        };
        let flag = |k: &str| v.get(k).and_then(|l| l.as_bool());
        RoomEventFilter {
            limit: v.get("limit").and_then(|l| l.as_u64()).map(|l| l as usize),
            types: strings("types"),
            not_types: strings("not_types").unwrap_or_default(),
            senders: strings("senders"),
            not_senders: strings("not_senders").unwrap_or_default(),
            rooms: strings("rooms"),
            not_rooms: strings("not_rooms").unwrap_or_default(),
            contains_url: flag("contains_url"),
            lazy_load_members: flag("lazy_load_members").unwrap_or(false),
            include_redundant_members: flag("include_redundant_members").unwrap_or(false),
        }
    }
}

/// The parts of the spec's `Filter` that `/sync` honours.
#[derive(Clone, Debug, Default)]
pub struct SyncFilter {
    pub timeline: RoomEventFilter,
    pub state: RoomEventFilter,
    pub ephemeral: RoomEventFilter,
    /// `room.account_data`: per-room account data.
    pub room_account_data: RoomEventFilter,
    /// `account_data`: global account data.
    pub account_data: RoomEventFilter,
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub include_leave: bool,
    /// The filter's `presence` part (types and senders).
    pub presence: RoomEventFilter,
    /// Whether `m.typing` / `m.receipt` are filtered out of `ephemeral`
    /// (worked out once: the filter is cached and read at every sync).
    pub typing_off: bool,
    pub receipts_off: bool,
}

impl SyncFilter {
    /// Reads a filter definition; unknown fields are ignored as the spec allows.
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        if !v.is_object() {
            return Err(Error::bad_json("Filter must be an object"));
        }
        let empty = json!({});
        let room = v.get("room").unwrap_or(&empty);
        let strings = |x: Option<&serde_json::Value>| -> Option<Vec<String>> {
            x.and_then(|x| x.as_array()).map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
        };
        let part = |parent: &serde_json::Value, k: &str| {
            RoomEventFilter::from_json(parent.get(k).unwrap_or(&empty))
        };
        let ephemeral = part(room, "ephemeral");
        let ephemeral_on = ephemeral.limit != Some(0) && !ephemeral.passes_none();
        Ok(SyncFilter {
            rooms: strings(room.get("rooms")),
            not_rooms: strings(room.get("not_rooms")).unwrap_or_default(),
            include_leave: room
                .get("include_leave")
                .and_then(|b| b.as_bool())
                .unwrap_or(false),
            account_data: part(v, "account_data"),
            room_account_data: part(room, "account_data"),
            presence: part(v, "presence"),
            typing_off: !(ephemeral_on && ephemeral.matches_type_and_sender("m.typing", None)),
            receipts_off: !(ephemeral_on && ephemeral.matches_type_and_sender("m.receipt", None)),
            ephemeral,
            timeline: part(room, "timeline"),
            state: part(room, "state"),
        })
    }

    fn room_wanted(&self, room: &str) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|r| r.iter().any(|x| x == room))
            && !self.not_rooms.iter().any(|x| x == room)
    }

    /// Whether `m.room.member` events are lazy-loaded.
    fn lazy_members(&self) -> bool {
        self.state.lazy_load_members || self.timeline.lazy_load_members
    }

    fn redundant_members(&self) -> bool {
        self.state.include_redundant_members || self.timeline.include_redundant_members
    }
}

/// A parsed `since` token.
#[derive(Clone, Copy, Debug)]
pub struct SyncToken {
    pub pos: i64,
    pub typing: u64,
    pub to_device: i64,
}

impl SyncToken {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::invalid_param("Invalid since token");
        let rest = s.strip_prefix('s').ok_or_else(bad)?;
        let mut parts = rest.split('_');
        let p = parts.next().ok_or_else(bad)?;
        let t = parts.next().ok_or_else(bad)?;
        let d = parts.next().unwrap_or("0");
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(SyncToken {
            pos: p.parse().map_err(|_| bad())?,
            typing: t.parse().map_err(|_| bad())?,
            to_device: d.parse().map_err(|_| bad())?,
        })
    }
}

impl std::fmt::Display for SyncToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}_{}_{}", self.pos, self.typing, self.to_device)
    }
}

// ----- response shapes (the spec's `/sync` 200 body) -----

#[derive(Serialize, Default)]
pub struct SyncResponse {
    pub next_batch: String,
    pub rooms: Rooms,
    pub account_data: Events,
    pub presence: Events,
    pub to_device: Events,
    pub device_lists: DeviceLists,
    pub device_one_time_keys_count: BTreeMap<String, u64>,
    pub device_unused_fallback_key_types: Vec<String>,
}

#[derive(Serialize, Default)]
pub struct Rooms {
    pub join: BTreeMap<OwnedRoomId, JoinedRoom>,
    pub invite: BTreeMap<OwnedRoomId, InvitedRoom>,
    pub leave: BTreeMap<OwnedRoomId, LeftRoom>,
    pub knock: BTreeMap<OwnedRoomId, serde_json::Value>,
}

#[derive(Serialize, Default)]
pub struct Events {
    pub events: Vec<Box<RawValue>>,
}

#[derive(Serialize, Default)]
pub struct DeviceLists {
    pub changed: Vec<OwnedUserId>,
    pub left: Vec<OwnedUserId>,
}

#[derive(Serialize)]
pub struct Timeline {
    pub events: Vec<Box<RawValue>>,
    pub limited: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_batch: Option<String>,
}

#[derive(Serialize)]
pub struct JoinedRoom {
    pub timeline: Timeline,
    pub state: Events,
    pub ephemeral: Events,
    pub account_data: Events,
    pub unread_notifications: UnreadCounts,
    pub summary: serde_json::Value,
}

#[derive(Serialize)]
pub struct UnreadCounts {
    pub notification_count: u64,
    pub highlight_count: u64,
}

#[derive(Serialize)]
pub struct InvitedRoom {
    pub invite_state: Events,
}

#[derive(Serialize)]
pub struct LeftRoom {
    pub timeline: Timeline,
    pub state: Events,
    pub account_data: Events,
}

impl SyncResponse {
    fn is_empty(&self) -> bool {
        self.rooms.join.is_empty()
            && self.rooms.invite.is_empty()
            && self.rooms.knock.is_empty()
            && self.rooms.leave.is_empty()
            && self.account_data.events.is_empty()
            && self.presence.events.is_empty()
            && self.to_device.events.is_empty()
            && self.device_lists.changed.is_empty()
            && self.device_lists.left.is_empty()
    }
}

/// What a `/sync` call asks for.
pub struct SyncRequest {
    pub since: Option<SyncToken>,
    pub full_state: bool,
    pub timeout: Duration,
    pub filter: Arc<SyncFilter>,
}

/// The caches `/sync` keeps between calls: parsed filters, the member
/// events each device was sent (lazy loading), and unread counts.
pub type FilterCache = SyncCaches;

/// Parsed `/sync` filters, so that a client's every long-poll does not
/// re-read and re-parse the same one. Filters never change once uploaded
/// (a new definition gets a new id), so an entry is never stale: inline
/// filters are keyed by their JSON text, stored ones by user and id.
///
/// Also, per device, which `m.room.member` events it was sent (so lazy
/// loading sends each once), and per user and room the unread counts,
/// kept up to date from the events each sync brings. Both only save work
/// or repetition: when an entry is dropped (they are bounded), the next
/// sync sends a member event again (redundant members are allowed) or
/// counts again from the read marker.
#[derive(Default)]
pub struct SyncCaches {
    /// Entries and the bytes of their keys.
    inner: Mutex<(HashMap<String, Arc<SyncFilter>>, usize)>,
    lazy: Shards<LazyShard>,
    unread: Shards<UnreadShard>,
}

/// Key bytes past which the cache starts over: it holds what the clients
/// of the moment use, and a client sending ever-new inline filters cannot
/// grow it without bound.
const FILTER_CACHE_BYTES: usize = 256 * 1024;

const SHARDS: usize = 16;

/// A map split by user, so that syncs of different users rarely wait on
/// one another.
struct Shards<T>([Mutex<T>; SHARDS]);

impl<T: Default> Default for Shards<T> {
    fn default() -> Self {
        Shards(std::array::from_fn(|_| Mutex::default()))
    }
}

impl<T> Shards<T> {
    fn of(&self, user: &UserId) -> &Mutex<T> {
        // FNV-1a: cheap, and users spread well enough.
        let h = user.as_bytes().iter().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ *b as u64).wrapping_mul(0x100000001b3)
        });
        &self.0[(h % SHARDS as u64) as usize]
    }
}

/// A member event a device was sent: its position, and the position of the
/// sync response that carried it (`at`). A client that syncs from a token
/// at or past `at` has it; a response lost on the way proves nothing.
#[derive(Clone, Copy)]
struct LazySent {
    pos: i64,
    at: i64,
}

/// Per device: a hash of (room, member) → what it was sent. A hash
/// collision can only make a member event look unsent (two events never
/// share a position), so it costs a redundant send, never a missing one.
#[derive(Default)]
struct LazyShard {
    devices: HashMap<OwnedUserId, HashMap<OwnedDeviceId, HashMap<u64, LazySent>>>,
    entries: usize,
}

/// Members remembered per device, and per shard, past which the device's
/// (or the shard's) memory starts over.
const LAZY_PER_DEVICE: usize = 4096;
const LAZY_PER_SHARD: usize = 32 * 1024;

fn member_key(room: &RoomId, member: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    room.as_str().hash(&mut h);
    member.hash(&mut h);
    h.finish()
}

/// A user's unread counts in a room, counted through `counted_upto`.
#[derive(Clone, Default)]
struct Unread {
    /// Position of the event the user last read (0: none).
    marker: i64,
    /// The room's newest receipt position when `marker` was read.
    receipts_at: i64,
    counted_upto: i64,
    notifications: u64,
    highlights: u64,
    /// The room's newest member position when `name` was read.
    members_at: i64,
    /// The user's display name in the room (mentions by name).
    name: Option<Arc<str>>,
    /// The generation of the push rules the counts were taken under.
    rules_generation: u64,
    /// The push rules with the room's context, and what that context was
    /// built from: `(rules generation, members_at, power levels position)`.
    eval: Option<((u64, i64, i64), Arc<PushEval>)>,
}

#[derive(Default)]
struct UnreadShard {
    users: HashMap<OwnedUserId, HashMap<OwnedRoomId, Unread>>,
    entries: usize,
}

const UNREAD_PER_SHARD: usize = 16 * 1024;

impl SyncCaches {
    fn get(&self, key: &str) -> Option<Arc<SyncFilter>> {
        self.inner.lock().0.get(key).cloned()
    }

    fn insert(&self, key: String, filter: Arc<SyncFilter>) {
        let mut inner = self.inner.lock();
        if inner.1 + key.len() > FILTER_CACHE_BYTES {
            *inner = Default::default();
        }
        inner.1 += key.len();
        inner.0.insert(key, filter);
    }

    /// Forgets what a device was sent (it starts a new sync sequence).
    fn lazy_forget(&self, user: &UserId, device: &DeviceId) {
        let mut shard = self.lazy.of(user).lock();
        let removed = shard
            .devices
            .get_mut(user)
            .and_then(|d| d.remove(device))
            .map_or(0, |m| m.len());
        shard.entries = shard.entries.saturating_sub(removed);
    }

    fn lazy_sent(&self, user: &UserId, device: &DeviceId, key: u64) -> Option<LazySent> {
        self.lazy
            .of(user)
            .lock()
            .devices
            .get(user)
            .and_then(|d| d.get(device))
            .and_then(|m| m.get(&key))
            .copied()
    }

    fn lazy_record(&self, user: &UserId, device: &DeviceId, sent: &[(u64, i64)], at: i64) {
        if sent.is_empty() {
            return;
        }
        let mut guard = self.lazy.of(user).lock();
        let shard = &mut *guard;
        if shard.entries + sent.len() > LAZY_PER_SHARD {
            shard.devices.clear();
            shard.entries = 0;
        }
        if !shard.devices.contains_key(user) {
            shard.devices.insert(user.to_owned(), HashMap::new());
        }
        let Some(devices) = shard.devices.get_mut(user) else {
            return;
        };
        if !devices.contains_key(device) {
            devices.insert(device.to_owned(), HashMap::new());
        }
        let Some(map) = devices.get_mut(device) else {
            return;
        };
        if map.len() + sent.len() > LAZY_PER_DEVICE {
            shard.entries = shard.entries.saturating_sub(map.len());
            map.clear();
        }
        for &(key, pos) in sent {
            if map.insert(key, LazySent { pos, at }).is_none() {
                shard.entries += 1;
            }
        }
    }

    fn unread_get(&self, user: &UserId, room: &RoomId) -> Option<Unread> {
        self.unread
            .of(user)
            .lock()
            .users
            .get(user)
            .and_then(|r| r.get(room))
            .cloned()
    }

    fn unread_put(&self, user: &UserId, room: &RoomId, u: Unread) {
        let mut guard = self.unread.of(user).lock();
        let shard = &mut *guard;
        if let Some(slot) = shard.users.get_mut(user).and_then(|r| r.get_mut(room)) {
            *slot = u;
            return;
        }
        if shard.entries >= UNREAD_PER_SHARD {
            shard.users.clear();
            shard.entries = 0;
        }
        shard
            .users
            .entry(user.to_owned())
            .or_default()
            .insert(room.to_owned(), u);
        shard.entries += 1;
    }
}

impl Services {
    /// The filter a `/sync` names: none, inline JSON, or the id of one the
    /// user uploaded.
    pub fn sync_filter(&self, user: &UserId, filter: Option<&str>) -> Result<Arc<SyncFilter>> {
        let Some(filter) = filter else {
            return Ok(Default::default());
        };
        let inline = filter.trim_start().starts_with('{');
        let key = if inline {
            std::borrow::Cow::Borrowed(filter)
        } else {
            std::borrow::Cow::Owned(format!("{user}\n{filter}"))
        };
        if let Some(parsed) = self.filters.get(&key) {
            return Ok(parsed);
        }
        let parsed = if inline {
            let v: serde_json::Value =
                serde_json::from_str(filter).map_err(|e| Error::bad_json(e.to_string()))?;
            SyncFilter::from_json(&v)?
        } else {
            let json = self.get_filter(user, filter)?;
            SyncFilter::from_json(&serde_json::from_str(&json).map_err(Error::internal)?)?
        };
        let parsed = Arc::new(parsed);
        self.filters.insert(key.into_owned(), parsed.clone());
        Ok(parsed)
    }
}

/// Default timeline length when the filter names none.
const DEFAULT_TIMELINE: usize = 10;

/// Rows read per store query when a filtered timeline is looked for below
/// the in-memory window, and the most rows one timeline reads: past that,
/// it is `limited` and `prev_batch` continues from where it stopped.
const TIMELINE_SCAN_BATCH: usize = 100;
const TIMELINE_SCAN_MAX: usize = 500;

/// Steps back through a member's earlier member events (each a few reads
/// of auth events) to find the one in force at the start of a timeline.
const MEMBER_WALK: usize = 4;

/// Events read from the store to count unread messages when the read
/// marker is older than the room's in-memory window.
const UNREAD_SCAN: usize = 100;

/// Stripped state shown to invitees.
const INVITE_STATE: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

/// A room's timeline for one response.
struct Window {
    events: Vec<Arc<PduEvent>>,
    /// Matching events older than `events` were left out (or not looked at).
    limited: bool,
    /// The position `prev_batch` paginates back from, when known.
    prev: Option<i64>,
}

impl Window {
    fn empty() -> Self {
        Window {
            events: Vec::new(),
            limited: false,
            prev: None,
        }
    }
}

/// A room's `summary`: member counts and heroes.
struct Summary {
    joined: usize,
    invited: usize,
    heroes: Vec<OwnedUserId>,
}

/// Heroes a summary names at most (the spec's "first 5 members").
const HEROES: usize = 5;

/// The state a room is named by; without either, clients name it after its
/// heroes.
const NAMED_BY: [&str; 2] = ["m.room.name", "m.room.canonical_alias"];

impl Summary {
    fn to_json(&self) -> serde_json::Value {
        json!({
            "m.heroes": self.heroes,
            "m.joined_member_count": self.joined,
            "m.invited_member_count": self.invited,
        })
    }
}

/// The summary `user` is shown of `room`: the counts of joined and invited
/// members and, when the room has neither a name nor a canonical alias, its
/// heroes, whom clients name the room after: the first five other joined or
/// invited members by the order of their member events (or, when there are
/// none, the first five who left or were banned). A named room has none, as
/// in Synapse: a lazy-loading client is then not sent their member events.
fn room_summary(room: &Room, user: &UserId) -> Summary {
    #[derive(Deserialize)]
    struct Member {
        membership: MembershipState,
    }
    #[derive(Deserialize)]
    struct Named {
        name: Option<String>,
        alias: Option<String>,
    }
    let named = NAMED_BY.iter().any(|k| {
        room.state_event(k, "")
            .and_then(|e| e.content::<Named>().ok())
            .is_some_and(|c| c.name.or(c.alias).is_some_and(|n| !n.is_empty()))
    });
    let (mut joined, mut invited) = (0, 0);
    let mut present: Vec<(i64, &UserId)> = Vec::new();
    let mut gone: Vec<(i64, &UserId)> = Vec::new();
    let state = room.state();
    for e in &state {
        if e.pdu.kind != TimelineEventType::RoomMember {
            continue;
        }
        let (Some(key), Ok(m)) = (e.pdu.state_key.as_deref(), e.content::<Member>()) else {
            continue;
        };
        let Ok(member) = <&UserId>::try_from(key) else {
            continue;
        };
        let here = match m.membership {
            MembershipState::Join => {
                joined += 1;
                true
            }
            MembershipState::Invite => {
                invited += 1;
                true
            }
            MembershipState::Leave | MembershipState::Ban => false,
            _ => continue,
        };
        if member != user && !named {
            if here { &mut present } else { &mut gone }.push((e.pos(), member));
        }
    }
    let mut heroes = if present.is_empty() { gone } else { present };
    heroes.sort_unstable();
    Summary {
        joined,
        invited,
        heroes: heroes
            .into_iter()
            .take(HEROES)
            .map(|(_, u)| u.to_owned())
            .collect(),
    }
}

fn is_member_event_of(e: &PduEvent, user: &UserId) -> bool {
    e.pdu.kind == TimelineEventType::RoomMember && e.pdu.state_key.as_deref() == Some(user.as_str())
}

impl Services {
    /// `GET /sync`.
    pub async fn sync(&self, sender: &Sender, req: SyncRequest) -> Result<SyncResponse> {
        let deadline = tokio::time::Instant::now() + req.timeout.min(Duration::from_secs(300));
        if let Some(since) = req.since {
            self.prune_to_device(sender, since.to_device).await?;
        }
        loop {
            let mut rx = self.notifier.subscribe(&sender.user_id);
            let upto = self.visible_pos();
            let typing = self.typing_serial();
            let resp = self.build_sync(sender, &req, upto, typing)?;
            let waited_enough = tokio::time::Instant::now() >= deadline;
            if req.since.is_none() || req.full_state || !resp.is_empty() || waited_enough {
                return Ok(resp);
            }
            // Typing changes alone also end the wait: they are in `ephemeral`,
            // which `is_empty` counts through the joined room entries.
            tokio::select! {
                changed = rx.changed() => { if changed.is_err() { return Ok(resp); } }
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    fn build_sync(
        &self,
        sender: &Sender,
        req: &SyncRequest,
        upto: i64,
        typing: u64,
    ) -> Result<SyncResponse> {
        let user = &sender.user_id;
        let since = req.since;
        let since_pos = since.map(|s| s.pos).unwrap_or(0);
        let filter = &req.filter;
        let (to_device, to_device_pos) =
            self.to_device_for_sync(sender, since.map(|s| s.to_device).unwrap_or(0), upto)?;
        let mut resp = SyncResponse {
            next_batch: SyncToken {
                pos: upto,
                typing,
                to_device: to_device_pos,
            }
            .to_string(),
            to_device: Events { events: to_device },
            ..Default::default()
        };
        let counts = self.key_counts(user.as_str(), sender.device_id.as_str())?;
        resp.device_one_time_keys_count = counts.one_time_keys;
        resp.device_unused_fallback_key_types = counts.unused_fallback;
        let user_rooms = self.user_rooms(user)?;
        if since.is_none() && filter.lazy_members() {
            // A new sync sequence: the client remembers no member events.
            self.filters.lazy_forget(user, &sender.device_id);
        }
        if let Some(since) = since {
            let (changed, left) = self.device_list_changes(user, &user_rooms, since.pos, upto)?;
            resp.device_lists = DeviceLists { changed, left };
        }
        // Presence: everything on a fresh (or full-state) sync; otherwise
        // what changed, and the current state of users newly sharing a room
        // (exactly the `changed` device-list users, already computed).
        let presence_since = since.filter(|_| !req.full_state).map(|s| s.pos);
        resp.presence.events = self.presence_for_sync(
            user,
            presence_since,
            upto,
            &resp.device_lists.changed,
            &filter.presence,
        )?;

        // Account data: global and per room, one indexed read when it moved
        // (none when the filters want neither).
        let global_ad = !filter.account_data.passes_none();
        let room_ad = !filter.room_account_data.passes_none();
        let mut room_account_data: BTreeMap<String, Vec<Box<RawValue>>> = BTreeMap::new();
        if (global_ad || room_ad) && (since.is_none() || user_rooms.last_private_pos > since_pos) {
            let mut rows = self.store.account_data_since(user.as_str(), since_pos)?;
            let max = rows.iter().map(|r| r.pos).max().unwrap_or(0);
            self.note_private_pos(user, max);
            let push_rules_wanted = global_ad
                && filter
                    .account_data
                    .matches_type_and_sender(crate::push_rules::PUSH_RULES, None);
            // The stored rules (one row at most), refreshed against the
            // server defaults, as GET serves them.
            let mut push_rules_stored = false;
            for r in rows
                .iter_mut()
                .filter(|r| r.room_id.is_empty() && r.kind == crate::push_rules::PUSH_RULES)
            {
                if push_rules_wanted {
                    r.content = self.push_rules_content(user)?.to_string();
                }
                push_rules_stored = true;
            }
            if !push_rules_stored && since.is_none() && push_rules_wanted {
                // A fresh client gets the rules in force, defaults included,
                // as with a stored document (as Synapse does).
                rows.push(hotline_store::AccountDataRow {
                    user_id: user.to_string(),
                    room_id: String::new(),
                    kind: crate::push_rules::PUSH_RULES.to_owned(),
                    content: self.push_rules_content(user)?.to_string(),
                    pos: 0,
                });
            }
            for row in rows.into_iter().filter(|r| r.pos <= upto) {
                let wanted = if row.room_id.is_empty() {
                    global_ad && filter.account_data.matches_type_and_sender(&row.kind, None)
                } else {
                    room_ad
                        && filter.room_account_data.room_ok(&row.room_id)
                        && filter
                            .room_account_data
                            .matches_type_and_sender(&row.kind, None)
                };
                if !wanted {
                    continue;
                }
                let Ok(content) = RawValue::from_string(row.content) else {
                    continue;
                };
                let ev = serde_json::value::to_raw_value(
                    &json!({"type": row.kind, "content": content}),
                )?;
                if row.room_id.is_empty() {
                    resp.account_data.events.push(ev);
                } else {
                    room_account_data.entry(row.room_id).or_default().push(ev);
                }
            }
        }

        for (room_id, (membership, mpos)) in &user_rooms.rooms {
            if !filter.room_wanted(room_id.as_str()) || *mpos > upto {
                continue;
            }
            let newly = since.is_none() || *mpos > since_pos || req.full_state;
            match membership {
                MembershipState::Join => {
                    let room = self.room(room_id)?;
                    let ad = room_account_data
                        .remove(room_id.as_str())
                        .unwrap_or_default();
                    if let Some(j) = self.joined_room(sender, &room, req, since, upto, newly, ad)? {
                        resp.rooms.join.insert(room_id.clone(), j);
                    }
                }
                MembershipState::Invite if newly => {
                    let room = self.room(room_id)?;
                    let events = stripped_state(&room, user, true);
                    resp.rooms.invite.insert(
                        room_id.clone(),
                        InvitedRoom {
                            invite_state: Events { events },
                        },
                    );
                }
                // A knock waiting for an answer: the room's public face
                // and the knock itself, like an invite's.
                MembershipState::Knock if newly => {
                    let room = self.room(room_id)?;
                    let events = stripped_state(&room, user, false);
                    resp.rooms
                        .knock
                        .insert(room_id.clone(), json!({"knock_state": {"events": events}}));
                }
                // Left since the token; or, when the client asks for left
                // rooms, on a fresh or full-state sync.
                MembershipState::Leave | MembershipState::Ban
                    if (since.is_some() && *mpos > since_pos)
                        || ((since.is_none() || req.full_state) && filter.include_leave) =>
                {
                    let room = self.room(room_id)?;
                    let ad = room_account_data
                        .remove(room_id.as_str())
                        .unwrap_or_default();
                    let left = self.left_room(sender, &room, req, since, *mpos, ad)?;
                    resp.rooms.leave.insert(room_id.clone(), left);
                }
                _ => {}
            }
        }
        Ok(resp)
    }

    fn note_private_pos(&self, user: &ruma::UserId, seen_max: i64) {
        self.set_private_pos_if_unknown(user, seen_max);
    }

    /// The events of `room` with `after < pos <= upto` that pass `filter`,
    /// the newest `limit` of them, and whether older matching ones were
    /// left out. The filter runs before the limit, so `limited` and
    /// `prev_batch` describe the filtered timeline. `known` are the events
    /// of that range when the caller already holds them.
    #[allow(clippy::too_many_arguments)] // two callers; a struct would only rename them
    fn timeline_window(
        &self,
        room: &Room,
        user: &UserId,
        after: i64,
        upto: i64,
        limit: usize,
        filter: &RoomEventFilter,
        known: Option<Vec<Arc<PduEvent>>>,
    ) -> Result<Window> {
        let limit = limit.clamp(1, 500);
        if !filter.room_ok(room.id.as_str()) || filter.passes_none() {
            return Ok(Window::empty());
        }
        // History visibility, like the filter, runs before the limit. A
        // member joined since before `after` sees it all: no read.
        let visibility = self.timeline_visibility(room, user, after)?;
        let visible = |e: &PduEvent| visibility.as_ref().is_none_or(|v| v.allows(e.pos()));
        if let Some(mut events) = known.or_else(|| room.recent_window(after, upto)) {
            if !filter.passes_all() || visibility.is_some() {
                events.retain(|e| visible(e) && filter.matches(e));
            }
            let limited = events.len() > limit;
            if limited {
                events.drain(..events.len() - limit);
            }
            let prev = events.first().map(|e| e.pos() - 1);
            return Ok(Window {
                events,
                limited,
                prev,
            });
        }
        // Below the in-memory window: read back from the store, in batches
        // when a filter may skip rows, up to a bound.
        let passes_all = filter.passes_all();
        let batch = if passes_all {
            limit + 1
        } else {
            (limit + 1).max(TIMELINE_SCAN_BATCH)
        };
        let mut before = upto + 1;
        let mut scanned = 0;
        let mut found: Vec<Arc<PduEvent>> = Vec::new(); // newest first
        let limited = 'scan: loop {
            let rows = self
                .store
                .room_events_backward(room.id.as_str(), before, batch)?;
            let exhausted = rows.len() < batch;
            for r in &rows {
                if r.pos <= after {
                    break 'scan false;
                }
                before = r.pos;
                scanned += 1;
                let keep = if visibility.as_ref().is_some_and(|v| !v.allows(r.pos)) {
                    None
                } else if passes_all {
                    Some(self.load_event(r)?)
                } else {
                    let e = PduEvent::from_row(r)?;
                    match (filter.matches(&e), r.redacted_by.is_some()) {
                        (false, _) => None,
                        (true, false) => Some(e),
                        (true, true) => Some(self.load_event(r)?),
                    }
                };
                if let Some(e) = keep {
                    found.push(Arc::new(e));
                    if found.len() > limit {
                        break 'scan true;
                    }
                }
            }
            if exhausted {
                break false;
            }
            if scanned >= TIMELINE_SCAN_MAX {
                break true;
            }
        };
        found.truncate(limit);
        found.reverse();
        let prev = match found.first() {
            Some(e) => Some(e.pos() - 1),
            None if limited => Some(before - 1),
            None => None,
        };
        Ok(Window {
            events: found,
            limited,
            prev,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn joined_room(
        &self,
        sender: &Sender,
        room: &Room,
        req: &SyncRequest,
        since: Option<SyncToken>,
        upto: i64,
        newly: bool,
        account_data: Vec<Box<RawValue>>,
    ) -> Result<Option<JoinedRoom>> {
        let since_pos = since.map(|s| s.pos).unwrap_or(0);
        let filter = &req.filter;
        let room_id = room.id.as_str();
        let limit = filter.timeline.limit.unwrap_or(DEFAULT_TIMELINE);
        let has_new_events = room.last_event_pos() > since_pos;
        // Without a gap, every new event is in memory: read them once, for
        // the unread counts and then (filtered) the timeline.
        let fresh = if !newly && has_new_events {
            room.recent_window(since_pos, upto)
        } else {
            None
        };
        let mut counts = None;
        if let Some(fresh) = &fresh {
            counts =
                Some(self.unread_counts(room, &sender.user_id, upto, Some((since_pos, fresh)))?);
        }
        let window = if newly {
            let user = &sender.user_id;
            self.timeline_window(room, user, 0, upto, limit, &filter.timeline, None)?
        } else if has_new_events {
            let user = &sender.user_id;
            self.timeline_window(room, user, since_pos, upto, limit, &filter.timeline, fresh)?
        } else {
            Window::empty()
        };

        let mut ephemeral = Vec::new();
        let ephemeral_room = filter.ephemeral.room_ok(room_id);
        if !filter.typing_off && ephemeral_room {
            let (typing_users, serial) = self.typing_users(room);
            if newly || since.is_some_and(|s| serial > s.typing) {
                if newly && typing_users.is_empty() {
                    // Nothing to tell a fresh client.
                } else {
                    ephemeral.push(serde_json::value::to_raw_value(
                        &json!({"type": "m.typing", "content": {"user_ids": typing_users}}),
                    )?);
                }
            }
        }
        if !filter.receipts_off && ephemeral_room && (newly || room.last_receipt_pos() > since_pos)
        {
            let rows = self
                .store
                .receipts_since(room_id, if newly { 0 } else { since_pos })?;
            let mut content: BTreeMap<
                String,
                BTreeMap<String, BTreeMap<String, serde_json::Value>>,
            > = BTreeMap::new();
            for r in rows.into_iter().filter(|r| r.pos <= upto) {
                if r.receipt_type == "m.read.private" && r.user_id != sender.user_id.as_str() {
                    continue;
                }
                let mut receipt = json!({"ts": r.ts});
                if !r.thread_id.is_empty() {
                    receipt["thread_id"] = json!(r.thread_id);
                }
                content
                    .entry(r.event_id)
                    .or_default()
                    .entry(r.receipt_type)
                    .or_default()
                    .insert(r.user_id, receipt);
            }
            if !content.is_empty() {
                ephemeral.push(serde_json::value::to_raw_value(
                    &json!({"type": "m.receipt", "content": content}),
                )?);
            }
        }

        // Sent whole when the room is new to the client, or its members or
        // what it is named by changed; otherwise left out, which the spec
        // reads as unchanged.
        let renamed = || {
            NAMED_BY
                .iter()
                .any(|k| room.state_event(k, "").is_some_and(|e| e.pos() > since_pos))
        };
        let summary = (newly || room.last_member_pos() > since_pos || renamed())
            .then(|| room_summary(room, &sender.user_id));
        let heroes = summary.as_ref().map_or(&[][..], |s| &s.heroes[..]);
        let state = self.room_state(
            sender,
            room,
            filter,
            since.map(|s| s.pos),
            upto,
            newly,
            window.limited,
            &window.events,
            heroes,
        )?;

        if !newly
            && window.events.is_empty()
            && ephemeral.is_empty()
            && account_data.is_empty()
            && state.is_empty()
        {
            return Ok(None);
        }
        let (notification_count, highlight_count) = match counts {
            Some(c) => c,
            None => self.unread_counts(room, &sender.user_id, upto, None)?,
        };
        let prev_batch = Some(match window.prev {
            Some(p) => crate::rooms::position_token(p),
            None => crate::rooms::position_token(since_pos.min(upto)),
        });
        Ok(Some(JoinedRoom {
            timeline: Timeline {
                events: Services::to_client_events(&window.events, sender, false),
                limited: window.limited,
                prev_batch,
            },
            state: Events {
                events: Services::to_client_events(&state, sender, false),
            },
            ephemeral: Events { events: ephemeral },
            account_data: Events {
                events: account_data,
            },
            unread_notifications: UnreadCounts {
                notification_count,
                highlight_count,
            },
            summary: summary.map_or_else(|| json!({}), |s| s.to_json()),
        }))
    }

    /// A room the user left (or was banned from) at `left_at`: its timeline
    /// up to the leave, the state before that timeline, its account data.
    /// Nothing after the leave is shown.
    fn left_room(
        &self,
        sender: &Sender,
        room: &Room,
        req: &SyncRequest,
        since: Option<SyncToken>,
        left_at: i64,
        account_data: Vec<Box<RawValue>>,
    ) -> Result<LeftRoom> {
        let filter = &req.filter;
        let limit = filter.timeline.limit.unwrap_or(DEFAULT_TIMELINE);
        let full = since.is_none() || req.full_state;
        let since_pos = since.map(|s| s.pos).filter(|_| !full);
        let window = self.timeline_window(
            room,
            &sender.user_id,
            since_pos.unwrap_or(0),
            left_at,
            limit,
            &filter.timeline,
            None,
        )?;
        let state = self.room_state(
            sender,
            room,
            filter,
            since_pos,
            left_at,
            full,
            window.limited,
            &window.events,
            &[],
        )?;
        let prev_batch = match window.prev {
            Some(p) => Some(crate::rooms::position_token(p)),
            None => since_pos.map(|p| crate::rooms::position_token(p.min(left_at))),
        };
        Ok(LeftRoom {
            timeline: Timeline {
                events: Services::to_client_events(&window.events, sender, false),
                limited: window.limited,
                prev_batch,
            },
            state: Events {
                events: Services::to_client_events(&state, sender, false),
            },
            account_data: Events {
                events: account_data,
            },
        })
    }

    /// The `state` of a room's entry: the state up to the start of
    /// `timeline` that the client lacks, as of position `upto`. `full`: all
    /// of it (a room new to the client, or `full_state`); after a gap
    /// (`limited`), what changed since `since`; otherwise nothing but
    /// lazy-loaded members. Everything passes the `state` filter.
    ///
    /// With lazy-loaded members, member events are sent only for the senders
    /// of the timeline (and, in a full view, the user), as of the start of
    /// the timeline, each once per device unless redundant members are
    /// asked for; after a gap, every member event of the gap is sent.
    #[allow(clippy::too_many_arguments)]
    fn room_state(
        &self,
        sender: &Sender,
        room: &Room,
        filter: &SyncFilter,
        since: Option<i64>,
        upto: i64,
        full: bool,
        limited: bool,
        timeline: &[Arc<PduEvent>],
        heroes: &[OwnedUserId],
    ) -> Result<Vec<Arc<PduEvent>>> {
        let sf = &filter.state;
        if sf.passes_none() || !sf.room_ok(room.id.as_str()) {
            return Ok(Vec::new());
        }
        let lazy = filter.lazy_members();
        let since_pos = since.unwrap_or(0);
        let start = timeline.first().map_or(upto + 1, |e| e.pos());
        let mut state = Vec::new();
        if full || limited {
            let in_timeline: HashSet<&EventId> = timeline.iter().map(|e| &*e.event_id).collect();
            // As of `upto`: a left room's state as it was at the leave, even
            // where it changed since (read from the store only then).
            for e in self.state_at(room, Some(upto), None)? {
                if e.pos() > upto
                    || (!full && e.pos() <= since_pos)
                    || in_timeline.contains(&*e.event_id)
                {
                    continue;
                }
                // Lazy: members are chosen below, except the gap's changes.
                if lazy && e.pdu.kind == TimelineEventType::RoomMember && (full || e.pos() >= start)
                {
                    continue;
                }
                if sf.matches(&e) {
                    state.push(e);
                }
            }
        }
        if lazy && (full || !timeline.is_empty() || !heroes.is_empty()) {
            let members = self.lazy_members(
                sender, room, filter, since, upto, full, timeline, heroes, &state,
            )?;
            state.extend(members);
        }
        Ok(state)
    }

    /// The member events a lazy-loading client needs for `timeline`.
    #[allow(clippy::too_many_arguments)]
    fn lazy_members(
        &self,
        sender: &Sender,
        room: &Room,
        filter: &SyncFilter,
        since: Option<i64>,
        upto: i64,
        full: bool,
        timeline: &[Arc<PduEvent>],
        heroes: &[OwnedUserId],
        state: &[Arc<PduEvent>],
    ) -> Result<Vec<Arc<PduEvent>>> {
        let (user, device) = (&*sender.user_id, &*sender.device_id);
        let redundant = filter.redundant_members();
        // Only an incremental view of a room the client already holds skips
        // what it was sent; a full one sends every member it needs.
        let skip_sent = !redundant && !full;
        let since_pos = since.unwrap_or(0);
        let start = timeline.first().map_or(upto + 1, |e| e.pos());
        let mut wanted: Vec<&UserId> = Vec::new();
        if full {
            wanted.push(user);
        }
        // The timeline's senders, and the heroes a client names the room
        // after (the spec requires their member events with lazy loading).
        let senders = timeline.iter().map(|e| &*e.pdu.sender);
        for s in senders.chain(heroes.iter().map(|h| &**h)) {
            if !wanted.contains(&s) {
                wanted.push(s);
            }
        }
        let last_member = room.last_member_pos();
        let mut out = Vec::new();
        for s in wanted {
            // A member event of theirs in the timeline before anything they
            // sent introduces them there.
            if timeline
                .iter()
                .find(|e| e.pdu.sender == s || is_member_event_of(e, s))
                .is_some_and(|e| is_member_event_of(e, s))
            {
                continue;
            }
            let sent = if skip_sent {
                self.filters
                    .lazy_sent(user, device, member_key(&room.id, s.as_str()))
                    .filter(|x| x.at <= since_pos)
            } else {
                None
            };
            // No member event at all since the one sent: still current.
            if sent.is_some_and(|x| last_member <= x.pos) {
                continue;
            }
            let Some(m) = self.member_at(room, s, start)? else {
                continue;
            };
            if sent.is_some_and(|x| x.pos == m.pos())
                || timeline.iter().any(|e| e.event_id == m.event_id)
                || state.iter().any(|e| e.event_id == m.event_id)
                || !filter.state.matches(&m)
            {
                continue;
            }
            out.push(m);
        }
        if !redundant {
            // Whatever member events this response carries, the device has.
            let sent: Vec<(u64, i64)> = out
                .iter()
                .chain(state)
                .chain(timeline)
                .filter(|e| e.pdu.kind == TimelineEventType::RoomMember)
                .filter_map(|e| {
                    let key = e.pdu.state_key.as_deref()?;
                    Some((member_key(&room.id, key), e.pos()))
                })
                .collect();
            self.filters.lazy_record(user, device, &sent, upto);
        }
        Ok(out)
    }

    /// The member event of `user` in force just before position `before`:
    /// the current one, or, when it changed since, an earlier one found
    /// through the auth events (a member event's auth events hold the
    /// target's previous one). When they had none before (they joined
    /// later), their first one; after a few steps, the oldest reached.
    fn member_at(&self, room: &Room, user: &UserId, before: i64) -> Result<Option<Arc<PduEvent>>> {
        let Some(mut m) = room.state_event("m.room.member", user.as_str()) else {
            return Ok(None);
        };
        for _ in 0..MEMBER_WALK {
            if m.pos() < before {
                break;
            }
            let mut prev = None;
            for id in &m.pdu.auth_events {
                let Some(row) = self.store.get_event(id.as_str())? else {
                    continue;
                };
                let e = PduEvent::from_row(&row)?;
                if is_member_event_of(&e, user) {
                    prev = Some(if row.redacted_by.is_some() {
                        self.load_event(&row)?
                    } else {
                        e
                    });
                    break;
                }
            }
            match prev {
                Some(p) => m = Arc::new(p),
                None => break,
            }
        }
        Ok(Some(m))
    }

    /// `(notification_count, highlight_count)` of `user` in `room` as of
    /// `upto`: the events after the user's read marker (the newer of their
    /// `m.read` and `m.read.private` receipts) whose push rules say
    /// `notify`, and those of them that also set `highlight`. Counted
    /// incrementally from the events each sync brings (`fresh`: the events
    /// after a position, when the caller holds them); counted afresh when the
    /// read marker moves or the user's rules change, within the in-memory
    /// window or the last `UNREAD_SCAN` events.
    fn unread_counts(
        &self,
        room: &Room,
        user: &UserId,
        upto: i64,
        fresh: Option<(i64, &[Arc<PduEvent>])>,
    ) -> Result<(u64, u64)> {
        let receipts_at = room.last_receipt_pos();
        let members_at = room.last_member_pos();
        let rules = self.push_rules_in_force(user)?;
        let cached = self.filters.unread_get(user, &room.id);
        let known = cached.is_some();
        let mut u = cached.unwrap_or_default();
        let mut recount = !known || u.rules_generation != rules.generation;
        let mut dirty = recount;
        u.rules_generation = rules.generation;
        if !known || u.receipts_at < receipts_at {
            dirty = true;
            let marker = self
                .store
                .read_marker_pos(room.id.as_str(), user.as_str())?
                .unwrap_or(0);
            recount |= marker != u.marker;
            u.marker = marker;
            u.receipts_at = receipts_at;
        }
        if !known || u.members_at < members_at {
            dirty = true;
            #[derive(Deserialize)]
            struct Name {
                displayname: Option<String>,
            }
            u.name = room
                .state_event("m.room.member", user.as_str())
                .and_then(|m| m.content::<Name>().ok())
                .and_then(|n| n.displayname)
                .filter(|n| !n.trim().is_empty())
                .map(Arc::from);
            u.members_at = members_at;
        }
        // The rules' context holds the room's power levels, member count and
        // the user's name: kept while none of them changed, and checked (or
        // built) on the first event from someone else, since most syncs
        // weigh none, or only the user's own.
        let mut eval = u.eval.take();
        let (mut checked, mut built) = (false, false);
        let mut weigh = |e: &PduEvent| -> (u64, u64) {
            if e.pdu.sender == user {
                return (0, 0);
            }
            if !checked {
                checked = true;
                let pl_at = room
                    .state_event("m.room.power_levels", "")
                    .map_or(0, |e| e.pos());
                let key = (rules.generation, members_at, pl_at);
                if eval.as_ref().is_none_or(|(k, _)| *k != key) {
                    let fresh = PushEval::new(rules.rules.clone(), room, user, u.name.as_deref());
                    eval = Some((key, Arc::new(fresh)));
                    built = true;
                }
            }
            let Some((_, eval)) = &eval else {
                return (0, 0);
            };
            let (notify, highlight) = eval.weigh(e);
            (notify as u64, (notify && highlight) as u64)
        };
        if !recount && u.counted_upto < upto {
            dirty = true;
            let new = match fresh {
                Some((from, events)) if from == u.counted_upto => Some(Cow::Borrowed(events)),
                _ => room.recent_window(u.counted_upto, upto).map(Cow::Owned),
            };
            match new {
                Some(events) => {
                    for e in events.iter() {
                        let (n, h) = weigh(e);
                        u.notifications += n;
                        u.highlights += h;
                    }
                    u.counted_upto = upto;
                }
                None => recount = true,
            }
        }
        if recount {
            let (mut n, mut h) = (0, 0);
            let mut add = |e: &PduEvent| {
                let (dn, dh) = weigh(e);
                n += dn;
                h += dh;
            };
            match room.recent_window(u.marker, upto) {
                Some(events) => events.iter().for_each(|e| add(e)),
                None => {
                    for row in
                        self.store
                            .room_events_backward(room.id.as_str(), upto + 1, UNREAD_SCAN)?
                    {
                        if row.pos > u.marker {
                            add(&PduEvent::from_row(&row)?);
                        }
                    }
                }
            }
            (u.notifications, u.highlights, u.counted_upto) = (n, h, upto);
        }
        u.eval = eval;
        dirty |= built;
        let counts = (u.notifications, u.highlights);
        if dirty || recount {
            self.filters.unread_put(user, &room.id, u);
        }
        Ok(counts)
    }
}

/// What an invitee or a knocker is shown of a room: its public face
/// ([`INVITE_STATE`]), the member event of whoever sent theirs (the inviter,
/// when `with_sender`), and their own member event.
fn stripped_state(room: &Room, user: &UserId, with_sender: bool) -> Vec<Box<RawValue>> {
    let mut events: Vec<Box<RawValue>> = INVITE_STATE
        .iter()
        .filter_map(|k| room.state_event(k, ""))
        .map(|e| stripped(&e))
        .collect();
    if let Some(m) = room.state_event("m.room.member", user.as_str()) {
        if with_sender {
            if let Some(sender) = room.state_event("m.room.member", m.pdu.sender.as_str()) {
                events.push(stripped(&sender));
            }
        }
        events.push(stripped(&m));
    }
    events
}

/// The stripped form of a state event, for invites.
fn stripped(e: &PduEvent) -> Box<RawValue> {
    serde_json::value::to_raw_value(&json!({
        "type": e.pdu.kind.to_string(),
        "state_key": e.pdu.state_key,
        "sender": e.pdu.sender,
        "content": e.pdu.content,
    }))
    .expect("stripped event serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ephemeral_filter_is_worked_out_once() {
        let f = SyncFilter::from_json(&json!({})).unwrap();
        assert!(!f.typing_off && !f.receipts_off);
        let f = SyncFilter::default();
        assert!(!f.typing_off && !f.receipts_off, "no filter: everything");
        let f = SyncFilter::from_json(&json!({"room": {"ephemeral": {"limit": 0}}})).unwrap();
        assert!(f.typing_off && f.receipts_off);
        let f = SyncFilter::from_json(&json!({"room": {"ephemeral": {"types": ["m.receipt"]}}}))
            .unwrap();
        assert!(f.typing_off && !f.receipts_off);
    }

    #[test]
    fn filter_cache_starts_over_past_its_byte_budget() {
        let cache = FilterCache::default();
        let key = |i: usize| format!("{{\"n\":{i:0>1000}}}");
        let fit = FILTER_CACHE_BYTES / key(0).len();
        for i in 0..fit {
            cache.insert(key(i), Default::default());
        }
        assert!(cache.get(&key(0)).is_some() && cache.get(&key(fit - 1)).is_some());
        cache.insert(key(fit), Default::default());
        assert!(cache.get(&key(0)).is_none(), "old entries are dropped");
        assert!(cache.get(&key(fit)).is_some(), "the new one is kept");
        assert!(cache.inner.lock().1 <= FILTER_CACHE_BYTES);
    }
}
