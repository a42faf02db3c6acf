//! Rooms: their cached state and recent timeline, and the one path by which
//! events are made ([`Services::append_events`]).
//!
//! **Architecture Invariant:** every event passes ruma's room-version auth
//! rules against the room's current state before it is written, under the
//! room's send lock, so state and `prev_events` are never raced.

pub(crate) mod create;
mod directory;
mod ephemeral;
mod membership;
mod read;
mod resolve;
mod visibility;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use hotline_store::{Attachment, NewEvent, NewTxn, WriteBatch, WriteOp};
use parking_lot::{Mutex, RwLock};
use ruma::events::room::member::{MembershipState, RoomMemberEventContent};
use ruma::events::room::power_levels::RoomPowerLevelsEventContent;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId,
    RoomVersionId, UInt, UserId,
};

pub use create::CreateRoom;
pub use directory::{PublicRoom, PublicRoomsPage, PublicRoomsQuery};
pub(crate) use read::OLDEST_POS;
pub use read::{
    parse_position_token, position_token, Direction, EventContext, MessagesPage, MAX_SCAN,
};

/// The pagination token just before the event at `pos`.
pub fn position_token_before(pos: i64) -> String {
    position_token(pos - 1)
}

use crate::pdu::{rules, EventDraft, Pdu, PduEvent};
use crate::policy::{Origin, Seam};
use crate::{Error, Result, Services};

/// How many recent events each loaded room keeps in memory for `/sync`.
const RECENT: usize = 64;

/// Forward extremities and their depths.
pub(crate) type Heads = Vec<(OwnedEventId, UInt)>;

/// Most forward extremities a room keeps: past this the oldest is dropped
/// (its events stay; only the next event stops naming it).
const MAX_HEADS: usize = 10;

/// State key map: `(event type, state key)` → event.
pub type StateMap = HashMap<(String, String), Arc<PduEvent>>;

/// A loaded room.
pub struct Room {
    pub id: OwnedRoomId,
    pub version: RoomVersionId,
    /// Serialises event creation: build, check, write, in one order.
    send_lock: tokio::sync::Mutex<()>,
    inner: RwLock<RoomInner>,
    auth_memo: AuthMemo,
}

/// The state an ordinary event last passed the auth rules against, by sender
/// and event type.
///
/// For an event without a state key whose type has no rules of its own (not
/// create, member, power levels, third-party invite, or redaction, which
/// early room versions check against its target), the room version's
/// auth rules read nothing but its type, its sender and the state events
/// [`ruma::state_res::auth_types_for_event`] names: the create event, the
/// power levels and the sender's membership. So when those are the very same
/// events (compared by identity: the entry holds them, so they cannot be
/// freed and their addresses reused) the verdict is the same, and ruma's
/// check, which re-reads the power levels' JSON each time, is skipped. Every
/// state change swaps in a new event, which misses the memo.
#[derive(Default)]
pub(crate) struct AuthMemo(Mutex<HashMap<OwnedUserId, HashMap<TimelineEventType, AuthEvents>>>);

/// The state events an event's auth rules read, in `auth_types` order.
type AuthEvents = Vec<Arc<PduEvent>>;

impl AuthMemo {
    /// Senders, and event types per sender, beyond which the map is dropped
    /// wholesale: the memo only saves work.
    const MAX_ENTRIES: usize = 256;

    fn applies_to(kind: &TimelineEventType, state_key: Option<&str>) -> bool {
        state_key.is_none()
            && !matches!(
                kind,
                TimelineEventType::RoomCreate
                    | TimelineEventType::RoomMember
                    | TimelineEventType::RoomPowerLevels
                    | TimelineEventType::RoomThirdPartyInvite
                    | TimelineEventType::RoomRedaction
            )
    }

    /// Looked up by reference: a send allocates nothing here.
    fn passed(&self, sender: &UserId, kind: &TimelineEventType, auth: &[Arc<PduEvent>]) -> bool {
        self.0
            .lock()
            .get(sender)
            .and_then(|kinds| kinds.get(kind))
            .is_some_and(|seen| {
                seen.len() == auth.len() && seen.iter().zip(auth).all(|(a, b)| Arc::ptr_eq(a, b))
            })
    }

    fn remember(&self, sender: &UserId, kind: &TimelineEventType, auth: AuthEvents) {
        let mut memo = self.0.lock();
        if memo.len() >= Self::MAX_ENTRIES && !memo.contains_key(sender) {
            memo.clear();
        }
        let kinds = memo.entry(sender.to_owned()).or_default();
        if kinds.len() >= Self::MAX_ENTRIES {
            kinds.clear();
        }
        kinds.insert(kind.clone(), auth);
    }
}

#[derive(Default)]
struct RoomInner {
    state: StateMap,
    /// The room's forward extremities (events nothing references yet) and
    /// their depths: the next event's `prev_events`. One, unless events
    /// from another server forked the room; the next local event joins the
    /// forks. Kept in memory: after a restart the newest event is the one
    /// head.
    heads: Heads,
    joined: BTreeSet<OwnedUserId>,
    /// The newest events, oldest first. Every event with a position above
    /// `recent_floor` is in here.
    recent: VecDeque<Arc<PduEvent>>,
    recent_floor: i64,
    last_event_pos: i64,
    /// Position of the newest event that bumps the room up a room list
    /// ([`is_bump`]); when none is in `recent`, `recent_floor` (it is no
    /// newer than that).
    last_bump_pos: i64,
    /// Position of the newest `m.room.member` event: the newest event of
    /// each member is in `state`, so this is exact from load on.
    last_member_pos: i64,
    last_receipt_pos: i64,
    /// Every member's receipts, the newest per user, type and thread, as
    /// the store holds them: an initial `/sync` reads them here rather than
    /// once per room from the store. Loaded with the room, kept current by
    /// the commit hook.
    receipts: HashMap<(String, String, String), hotline_store::ReceiptRow>,
    /// Typing users and when their typing expires.
    typing: HashMap<OwnedUserId, Instant>,
    typing_serial: u64,
    /// Position of the newest change of `state`.
    last_state_pos: i64,
    /// The state after events that forked the room (see [`resolve`]), for
    /// events that fork from them in turn; the newest
    /// [`resolve::FORK_STATES`], oldest first in `fork_order`.
    fork_states: HashMap<OwnedEventId, Arc<StateMap>>,
    fork_order: VecDeque<OwnedEventId>,
}

/// All loaded rooms, and each user's memberships.
#[derive(Default)]
pub struct Rooms {
    rooms: Mutex<HashMap<OwnedRoomId, Arc<Room>>>,
    /// Per user: room → (membership, position of the membership event).
    /// Loaded on first use, then kept current by the commit hook.
    memberships: Mutex<HashMap<OwnedUserId, Arc<RwLock<UserRooms>>>>,
}

#[derive(Default, Clone)]
pub struct UserRooms {
    pub rooms: HashMap<OwnedRoomId, (MembershipState, i64)>,
    /// Newest position of anything in the user's own streams (account data).
    pub last_private_pos: i64,
}

impl RoomInner {
    fn note_fork_state(&mut self, id: OwnedEventId, state: Arc<StateMap>) {
        if self.fork_states.insert(id.clone(), state).is_none() {
            self.fork_order.push_back(id);
        }
        while self.fork_order.len() > resolve::FORK_STATES {
            if let Some(old) = self.fork_order.pop_front() {
                self.fork_states.remove(&old);
            }
        }
    }

    /// A receipt stored: it replaces its user's earlier one of the same
    /// type and thread.
    fn note_receipt(&mut self, r: hotline_store::ReceiptRow) {
        self.last_receipt_pos = self.last_receipt_pos.max(r.pos);
        let key = (
            r.user_id.clone(),
            r.receipt_type.clone(),
            r.thread_id.clone(),
        );
        self.receipts.insert(key, r);
    }
}

impl Room {
    fn member_of(inner: &RoomInner, user: &UserId) -> Option<MembershipState> {
        inner
            .state
            .get(&(StateEventType::RoomMember.to_string(), user.to_string()))
            .and_then(|e| e.content::<RoomMemberEventContent>().ok())
            .map(|c| c.membership)
    }

    /// The user's current membership.
    pub fn membership(&self, user: &UserId) -> Option<MembershipState> {
        Self::member_of(&self.inner.read(), user)
    }

    pub fn is_joined(&self, user: &UserId) -> bool {
        self.inner.read().joined.contains(user)
    }

    pub fn joined_count(&self) -> usize {
        self.inner.read().joined.len()
    }

    /// The room's forward extremities.
    pub(crate) fn head_ids(&self) -> Vec<OwnedEventId> {
        self.inner
            .read()
            .heads
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The other servers with a member joined: where this server's events
    /// in the room go.
    pub fn remote_servers(&self, ours: &ruma::ServerName) -> Vec<ruma::OwnedServerName> {
        let inner = self.inner.read();
        let mut out: Vec<ruma::OwnedServerName> = Vec::new();
        for user in &inner.joined {
            let server = user.server_name();
            if server != ours && !out.iter().any(|s| s == server) {
                out.push(server.to_owned());
            }
        }
        out
    }

    pub fn joined_members(&self) -> Vec<OwnedUserId> {
        self.inner.read().joined.iter().cloned().collect()
    }

    pub fn state_event(&self, kind: &str, state_key: &str) -> Option<Arc<PduEvent>> {
        self.inner
            .read()
            .state
            .get(&(kind.to_owned(), state_key.to_owned()))
            .cloned()
    }

    /// The current state events of one type, with their state keys.
    pub fn state_of_type(&self, kind: &str) -> Vec<(String, Arc<PduEvent>)> {
        self.inner
            .read()
            .state
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|((_, key), e)| (key.clone(), e.clone()))
            .collect()
    }

    pub fn state(&self) -> Vec<Arc<PduEvent>> {
        self.inner.read().state.values().cloned().collect()
    }

    pub fn last_event_pos(&self) -> i64 {
        self.inner.read().last_event_pos
    }

    /// The room's `bump_stamp` for sliding sync's room lists.
    pub fn last_bump_pos(&self) -> i64 {
        self.inner.read().last_bump_pos
    }

    pub fn last_member_pos(&self) -> i64 {
        self.inner.read().last_member_pos
    }

    pub fn last_receipt_pos(&self) -> i64 {
        self.inner.read().last_receipt_pos
    }

    /// The room's receipts with a position above `since`, oldest first
    /// (what `Store::receipts_since` answers, from memory).
    pub fn receipts_since(&self, since: i64) -> Vec<hotline_store::ReceiptRow> {
        let inner = self.inner.read();
        let mut rows: Vec<_> = inner
            .receipts
            .values()
            .filter(|r| r.pos > since)
            .cloned()
            .collect();
        rows.sort_by_key(|r| r.pos);
        rows
    }

    /// The authorization rules of the room's version (version 11's for a
    /// version ruma does not know, which the server never creates).
    pub fn authorization_rules(&self) -> ruma::room_version_rules::AuthorizationRules {
        rules(&self.version)
            .map(|r| r.authorization)
            .unwrap_or(ruma::room_version_rules::AuthorizationRules::V11)
    }

    /// Who created the room: the sender of its `m.room.create`.
    pub fn creator(&self) -> Option<OwnedUserId> {
        self.state_event("m.room.create", "")
            .map(|e| e.pdu.sender.clone())
    }

    /// The room's power levels, or the defaults when it has none.
    pub fn power_levels(&self) -> RoomPowerLevelsEventContent {
        self.state_event("m.room.power_levels", "")
            .and_then(|e| e.content::<RoomPowerLevelsEventContent>().ok())
            .unwrap_or_else(|| RoomPowerLevelsEventContent::new(&self.authorization_rules()))
    }

    /// The room's creators: the create event's sender, and from room
    /// version 12 its `additional_creators`.
    pub fn creators(&self) -> Vec<OwnedUserId> {
        let Some(create) = self.state_event("m.room.create", "") else {
            return Vec::new();
        };
        let mut out = vec![create.pdu.sender.clone()];
        if self.authorization_rules().additional_room_creators {
            #[derive(serde::Deserialize)]
            struct Additional {
                #[serde(default)]
                additional_creators: Vec<OwnedUserId>,
            }
            if let Ok(a) = create.content::<Additional>() {
                out.extend(a.additional_creators);
            }
        }
        out
    }

    /// `user`'s power level; from room version 12 a creator's is above
    /// every other.
    pub fn user_power(&self, user: &UserId) -> i64 {
        if self
            .authorization_rules()
            .explicitly_privilege_room_creators
            && self.creators().iter().any(|c| c == user)
        {
            return i64::MAX;
        }
        let pl = self.power_levels();
        if self.state_event("m.room.power_levels", "").is_none()
            && self.creator().as_deref() == Some(user)
        {
            return 100;
        }
        pl.users
            .get(user)
            .copied()
            .unwrap_or(pl.users_default)
            .into()
    }

    /// Recent events with `after < pos <= upto`, oldest first, if the
    /// in-memory window covers `after`; otherwise `None`.
    pub(crate) fn recent_window(&self, after: i64, upto: i64) -> Option<Vec<Arc<PduEvent>>> {
        let inner = self.inner.read();
        if after < inner.recent_floor {
            return None;
        }
        Some(
            inner
                .recent
                .iter()
                .filter(|e| e.pos() > after && e.pos() <= upto)
                .cloned()
                .collect(),
        )
    }
}

/// Whether an event moves its room up a room list: what people send to
/// each other, not state or reactions (Synapse's default bump types).
fn is_bump(e: &PduEvent) -> bool {
    matches!(
        e.pdu.kind.to_string().as_str(),
        "m.room.create"
            | "m.room.message"
            | "m.room.encrypted"
            | "m.sticker"
            | "m.call.invite"
            | "m.poll.start"
            | "m.beacon_info"
    )
}

impl Rooms {
    pub fn loaded(&self, room_id: &RoomId) -> Option<Arc<Room>> {
        self.rooms.lock().get(room_id).cloned()
    }

    /// Drops a loaded room: the next use loads it from the store.
    pub(crate) fn forget(&self, room_id: &RoomId) {
        self.rooms.lock().remove(room_id);
    }

    /// Applies a committed event to the caches (commit hook).
    pub(crate) fn apply_committed(&self, pos: i64, new: &NewEvent, wake: &mut Vec<OwnedUserId>) {
        let event = match new.parsed.0.as_ref() {
            Some(a) => match a.clone().downcast::<PduEvent>() {
                Ok(e) => e,
                Err(_) => return tracing::error!("committed event with a foreign parsed form"),
            },
            // Another process's commit, replayed: parse what it stored.
            None => match PduEvent::from_new(new) {
                Ok(e) => Arc::new(e),
                Err(e) => {
                    return tracing::error!(error = %e, event_id = %new.event_id, "replaying a committed event")
                }
            },
        };
        event.set_pos(pos);
        let Some(room) = self.loaded(&event.room_id) else {
            // A room this process has not loaded (another process's
            // commit): only the member's own list of rooms may be cached.
            if let Some((user, membership)) = &new.membership {
                if let Ok(user) = UserId::parse(user.as_str()) {
                    self.note_membership(&user, &event.room_id, membership.as_str().into(), pos);
                    wake.push(user);
                }
            }
            return;
        };
        let mut membership_change = None;
        {
            let mut inner = room.inner.write();
            if pos <= inner.last_event_pos {
                // Loaded with the room: read from the store after it
                // committed, before this hook ran (a commit replayed from
                // another process arrives that late).
                wake.extend(inner.joined.iter().cloned());
                drop(inner);
                if let Some((user, membership)) = &new.membership {
                    if let Ok(user) = UserId::parse(user.as_str()) {
                        self.note_membership(&user, &room.id, membership.as_str().into(), pos);
                        wake.push(user);
                    }
                }
                return;
            }
            if let Some(key) = &event.pdu.state_key {
                inner.last_state_pos = pos;
                inner
                    .state
                    .insert((event.pdu.kind.to_string(), key.clone()), event.clone());
                if event.pdu.kind == TimelineEventType::RoomMember {
                    inner.last_member_pos = pos;
                    if let (Ok(user), Ok(c)) = (
                        UserId::parse(key.as_str()),
                        event.content::<RoomMemberEventContent>(),
                    ) {
                        if c.membership == MembershipState::Join {
                            inner.joined.insert(user.clone());
                        } else {
                            inner.joined.remove(&user);
                        }
                        membership_change = Some((user, c.membership));
                    }
                }
            }
            if let Some((target, redacted_json)) = &new.redacts {
                let redact = |old: &PduEvent| -> Option<Arc<PduEvent>> {
                    let mut pdu = serde_json::from_str::<Pdu>(redacted_json).ok()?;
                    pdu.hashes = old.pdu.hashes.clone();
                    let mut redacted = PduEvent::new(old.event_id.clone(), old.pos(), pdu).ok()?;
                    redacted.redacted_because = Some(event.to_client(None, true));
                    redacted.txn = old.txn.clone();
                    Some(Arc::new(redacted))
                };
                if let Some(slot) = inner
                    .recent
                    .iter_mut()
                    .find(|e| e.event_id.as_str() == target)
                {
                    if let Some(redacted) = redact(slot) {
                        *slot = redacted;
                    }
                }
                // A redacted state event that is still current state is
                // current in its redacted form: what `/state` shows and what
                // the auth rules read next (a new `Arc`, so `AuthMemo` misses).
                let current = inner
                    .state
                    .iter()
                    .find(|(_, e)| e.event_id.as_str() == target)
                    .map(|(k, e)| (k.clone(), redact(e)));
                if let Some((key, Some(redacted))) = current {
                    inner.state.insert(key, redacted);
                }
            }
            inner
                .heads
                .retain(|(id, _)| !event.pdu.prev_events.contains(id));
            if inner.heads.len() >= MAX_HEADS {
                inner.heads.remove(0);
            }
            inner.heads.push((event.event_id.clone(), event.pdu.depth));
            inner.recent.push_back(event.clone());
            while inner.recent.len() > RECENT {
                if let Some(old) = inner.recent.pop_front() {
                    inner.recent_floor = old.pos();
                }
            }
            inner.last_event_pos = pos;
            if is_bump(&event) {
                inner.last_bump_pos = pos;
            }
            wake.extend(inner.joined.iter().cloned());
        }
        if let Some((user, membership)) = membership_change {
            self.note_membership(&user, &room.id, membership, pos);
            wake.push(user);
        }
    }

    /// A membership change, in the member's cached list of rooms (if this
    /// process has it); never older than what the list holds.
    fn note_membership(
        &self,
        user: &UserId,
        room_id: &RoomId,
        membership: MembershipState,
        pos: i64,
    ) {
        if let Some(rooms) = self.memberships.lock().get(user) {
            let mut rooms = rooms.write();
            if rooms.rooms.get(room_id).is_none_or(|(_, at)| *at < pos) {
                rooms.rooms.insert(room_id.to_owned(), (membership, pos));
            }
        }
    }

    pub(crate) fn apply_receipt(&self, pos: i64, op: &WriteOp, wake: &mut Vec<OwnedUserId>) {
        let WriteOp::PutReceipt {
            room_id: room,
            user_id,
            receipt_type,
            thread_id,
            event_id,
            ts,
        } = op
        else {
            return;
        };
        let Ok(room_id) = RoomId::parse(room.as_str()) else {
            return;
        };
        if let Some(loaded) = self.loaded(&room_id) {
            let mut inner = loaded.inner.write();
            inner.note_receipt(hotline_store::ReceiptRow {
                room_id: room.clone(),
                user_id: user_id.clone(),
                receipt_type: receipt_type.clone(),
                thread_id: thread_id.clone(),
                event_id: event_id.clone(),
                ts: *ts,
                pos,
            });
            wake.extend(inner.joined.iter().cloned());
        }
    }

    /// State resolution's choice for a key of a room's current state
    /// (commit hook for [`WriteOp::SetCurrentState`]). The chosen event is
    /// one the room has in memory (recent, or in a fork's state); if not,
    /// the room is dropped and loads again from the store.
    pub(crate) fn apply_current_state(&self, pos: i64, op: &WriteOp, wake: &mut Vec<OwnedUserId>) {
        let WriteOp::SetCurrentState {
            room_id,
            event_type,
            state_key,
            event_id,
            membership,
        } = op
        else {
            return;
        };
        let Ok(room_id) = RoomId::parse(room_id.as_str()) else {
            return;
        };
        if let Some(room) = self.loaded(&room_id) {
            let mut inner = room.inner.write();
            let key = (event_type.clone(), state_key.clone());
            let chosen = inner
                .recent
                .iter()
                .rev()
                .find(|e| e.event_id.as_str() == event_id)
                .cloned()
                .or_else(|| {
                    inner.fork_states.values().find_map(|s| {
                        s.get(&key)
                            .filter(|e| e.event_id.as_str() == event_id)
                            .cloned()
                    })
                });
            match chosen {
                Some(chosen) => {
                    inner.state.insert(key, chosen);
                    inner.last_state_pos = pos;
                    if let Some((user, m)) = membership {
                        if let Ok(user) = UserId::parse(user.as_str()) {
                            inner.last_member_pos = pos;
                            if m == "join" {
                                inner.joined.insert(user);
                            } else {
                                inner.joined.remove(&user);
                            }
                        }
                    }
                    wake.extend(inner.joined.iter().cloned());
                }
                None => {
                    drop(inner);
                    self.forget(&room_id);
                }
            }
        }
        if let Some((user, m)) = membership {
            if let Ok(user) = UserId::parse(user.as_str()) {
                self.note_membership(&user, &room_id, m.as_str().into(), pos);
                wake.push(user);
            }
        }
    }

    /// Notes that a user's private stream (account data) moved.
    pub(crate) fn touch_private(&self, user: &UserId, pos: i64) {
        if let Some(rooms) = self.memberships.lock().get(user) {
            let mut r = rooms.write();
            r.last_private_pos = r.last_private_pos.max(pos);
        }
    }
}

impl Services {
    /// The room, loading it from the store on first use.
    pub fn room(&self, room_id: &RoomId) -> Result<Arc<Room>> {
        let mut rooms = self.rooms.rooms.lock();
        if let Some(r) = rooms.get(room_id) {
            return Ok(r.clone());
        }
        let row = self
            .store
            .get_room(room_id.as_str())?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let version =
            RoomVersionId::try_from(row.room_version.as_str()).map_err(Error::internal)?;
        let mut inner = RoomInner::default();
        for row in self.store.room_state(room_id.as_str())? {
            let e = Arc::new(self.load_event(&row)?);
            inner.last_state_pos = inner.last_state_pos.max(e.pos());
            if let Some(k) = &e.pdu.state_key {
                if e.pdu.kind == TimelineEventType::RoomMember {
                    inner.last_member_pos = inner.last_member_pos.max(e.pos());
                    if e.content::<RoomMemberEventContent>()
                        .is_ok_and(|c| c.membership == MembershipState::Join)
                    {
                        if let Ok(u) = UserId::parse(k.as_str()) {
                            inner.joined.insert(u);
                        }
                    }
                }
                inner.state.insert((e.pdu.kind.to_string(), k.clone()), e);
            }
        }
        let mut recent: Vec<_> =
            self.store
                .room_events_backward(room_id.as_str(), i64::MAX, RECENT + 1)?;
        if recent.len() > RECENT {
            inner.recent_floor = recent.pop().map(|r| r.pos).unwrap_or(0);
        }
        for row in recent.iter().rev() {
            inner.recent.push_back(Arc::new(self.load_event(row)?));
        }
        if let Some(last) = inner.recent.back() {
            inner.heads = vec![(last.event_id.clone(), last.pdu.depth)];
            inner.last_event_pos = last.pos();
        }
        inner.last_bump_pos = inner
            .recent
            .iter()
            .rev()
            .find(|e| is_bump(e))
            .map_or(inner.recent_floor, |e| e.pos());
        for r in self.store.latest_receipts(room_id.as_str())? {
            inner.note_receipt(r);
        }
        let room = Arc::new(Room {
            id: room_id.to_owned(),
            version,
            send_lock: tokio::sync::Mutex::new(()),
            inner: RwLock::new(inner),
            auth_memo: AuthMemo::default(),
        });
        rooms.insert(room_id.to_owned(), room.clone());
        Ok(room)
    }

    /// A stored event, with its redaction attached.
    pub(crate) fn load_event(&self, row: &hotline_store::EventRow) -> Result<PduEvent> {
        let mut e = PduEvent::from_row(row)?;
        if let Some(by) = &row.redacted_by {
            if let Some(r) = self.store.get_event(by)? {
                e.redacted_because = Some(PduEvent::from_row(&r)?.to_client(None, true));
            }
        }
        Ok(e)
    }

    /// The user's memberships, loading them on first use.
    pub fn user_rooms(&self, user: &UserId) -> Result<UserRooms> {
        let mut all = self.rooms.memberships.lock();
        if let Some(r) = all.get(user) {
            return Ok(r.read().clone());
        }
        let mut rooms = UserRooms::default();
        for m in self.store.memberships_of_user(user.as_str())? {
            if m.forgotten {
                continue;
            }
            let (Ok(room_id), state) = (
                RoomId::parse(m.room_id.as_str()),
                MembershipState::from(m.membership.as_str()),
            ) else {
                continue;
            };
            rooms.rooms.insert(room_id, (state, m.pos));
        }
        rooms.last_private_pos = i64::MAX; // unknown until first read: always look once
        all.insert(user.to_owned(), Arc::new(RwLock::new(rooms.clone())));
        Ok(rooms)
    }

    /// Records the newest private-stream position seen by a read; the
    /// first read replaces the "unknown" marker.
    pub(crate) fn set_private_pos_if_unknown(&self, user: &UserId, pos: i64) {
        if let Some(r) = self.rooms.memberships.lock().get(user) {
            let mut r = r.write();
            r.last_private_pos = if r.last_private_pos == i64::MAX {
                pos
            } else {
                r.last_private_pos.max(pos)
            };
        }
    }

    /// Builds, authorizes and commits events in `room`, in order. Returns
    /// their ids once they are durable.
    pub async fn append_events(
        &self,
        room: &Room,
        sender: &UserId,
        drafts: Vec<EventDraft>,
        txn: Option<(String, String)>,
    ) -> Result<Vec<OwnedEventId>> {
        self.append_events_redacting(room, sender, drafts, txn, None)
            .await
    }

    /// [`append_events`] for events the server makes on a consent it has
    /// checked itself (see [`Origin::Server`]).
    pub(crate) async fn append_server_events(
        &self,
        room: &Room,
        sender: &UserId,
        drafts: Vec<EventDraft>,
    ) -> Result<Vec<OwnedEventId>> {
        self.append_server_events_with(room, sender, drafts, Vec::new())
            .await
    }

    /// [`append_server_events`], with `extra` writes (an audit entry) in
    /// the same commit.
    pub(crate) async fn append_server_events_with(
        &self,
        room: &Room,
        sender: &UserId,
        drafts: Vec<EventDraft>,
        extra: Vec<WriteOp>,
    ) -> Result<Vec<OwnedEventId>> {
        self.append_events_as(room, sender, drafts, None, None, Origin::Server, extra)
            .await
    }

    /// [`append_events`], where the last event redacts `redacts`
    /// (`(target id, target's redacted JSON)`), replaced in the same commit.
    pub(crate) async fn append_events_redacting(
        &self,
        room: &Room,
        sender: &UserId,
        drafts: Vec<EventDraft>,
        txn: Option<(String, String)>,
        redacts: Option<(String, String)>,
    ) -> Result<Vec<OwnedEventId>> {
        self.append_events_as(
            room,
            sender,
            drafts,
            txn,
            redacts,
            Origin::Client,
            Vec::new(),
        )
        .await
    }

    async fn append_events_as(
        &self,
        room: &Room,
        sender: &UserId,
        drafts: Vec<EventDraft>,
        txn: Option<(String, String)>,
        redacts: Option<(String, String)>,
        origin: Origin,
        extra: Vec<WriteOp>,
    ) -> Result<Vec<OwnedEventId>> {
        let _guard = room.send_lock.lock().await;
        // Built under the read lock: the send lock keeps other writers out, and
        // borrowing the state avoids copying it on every send.
        let mut built = {
            let inner = room.inner.read();
            build_events(
                &room.version,
                &room.id,
                &inner.state,
                inner.heads.clone(),
                sender,
                drafts,
                txn,
                Some(&room.auth_memo),
                Some(&Seam {
                    services: self,
                    origin,
                }),
            )?
        };
        if let Some(last) = built.last_mut() {
            last.1.redacts = redacts;
        }
        let remote = self.federation_destinations_of(room);
        let mut batch = WriteBatch::new();
        let mut ids = Vec::new();
        for (event, new) in built {
            ids.push(event.event_id.clone());
            // An accepted urgent contact is on the record with its event.
            if let Some(entry) = crate::availability::urgent_audit(&event) {
                batch.push(entry);
            }
            batch.push(WriteOp::AppendEvent(new));
            // Queued in the same commit: a `200` means the event will reach
            // the room's other servers, whatever happens to this process.
            for destination in &remote {
                batch.push(WriteOp::QueueFederation {
                    destination: destination.to_string(),
                    event_id: event.event_id.to_string(),
                });
            }
        }
        batch.ops.extend(extra);
        self.store.write(batch).await?;
        Ok(ids)
    }

    /// Appends events another server sent (already checked by
    /// [`Services::check_incoming_pdu`]), each on its own: one that is
    /// already stored is accepted again, one that fails the room's
    /// authorization rules (against its auth events, the state before it,
    /// and the current state) or Hotline's rules is refused with the
    /// reason, and the others are committed together. An event that forks
    /// the room is checked against the state after its `prev_events` and
    /// the room's state is resolved with it ([`resolve`]). Nothing is
    /// queued for other servers: the origin sends its events to the room's
    /// servers itself.
    pub(crate) async fn append_remote_events(
        &self,
        room: &Room,
        events: Vec<crate::federation::CheckedPdu>,
    ) -> Vec<(OwnedEventId, Result<()>)> {
        let _guard = room.send_lock.lock().await;
        let rules = match rules(&room.version) {
            Ok(r) => r,
            Err(e) => {
                let why = e.to_string();
                return events
                    .into_iter()
                    .map(|c| (c.event.event_id.clone(), Err(Error::bad_json(why.clone()))))
                    .collect();
            }
        };
        let seam = Seam {
            services: self,
            origin: Origin::Federation,
        };
        // The batch's changes over the room's current state, and its heads
        // as the batch moves them.
        let mut overlay: StateMap = HashMap::new();
        let mut heads: Vec<OwnedEventId> = room.head_ids();
        // The state after each accepted event that forked the room.
        let mut forked: HashMap<OwnedEventId, Arc<StateMap>> = HashMap::new();
        let mut fresh: HashMap<OwnedEventId, Arc<PduEvent>> = HashMap::new();
        let mut results = Vec::with_capacity(events.len());
        let mut batch = WriteBatch::new();
        let mut accepted = Vec::new();
        for checked in events {
            let event = checked.event.clone();
            let id = event.event_id.clone();
            let verdict = (|| -> Result<Verdict> {
                if event.room_id != room.id {
                    return Err(Error::bad_json("The event belongs to another room"));
                }
                if fresh.contains_key(&id) || self.store.get_event(id.as_str())?.is_some() {
                    return Ok(Verdict::Known);
                }
                let inner = room.inner.read();
                let lookup = |t: &str, k: &str| -> Option<Arc<PduEvent>> {
                    let key = (t.to_owned(), k.to_owned());
                    overlay.get(&key).or_else(|| inner.state.get(&key)).cloned()
                };
                let fetch = |id: &EventId| -> Option<Arc<PduEvent>> {
                    if let Some(e) = fresh.get(id) {
                        return Some(e.clone());
                    }
                    let row = self.store.get_event(id.as_str()).ok()??;
                    self.load_event(&row).ok().map(Arc::new)
                };
                ruma::state_res::check_state_independent_auth_rules(
                    &rules.authorization,
                    &event,
                    fetch,
                )
                .map_err(|r| Error::forbidden(format!("Not allowed by its auth events: {r}")))?;
                let prevs = &event.pdu.prev_events;
                let linear = prevs.len() == heads.len() && heads.iter().all(|h| prevs.contains(h));
                // An event that forks the room: the state after it, and the
                // room's state resolved with it.
                let mut resolved = None;
                if !linear {
                    // Only an event that forks the room can have been
                    // soft-failed (kept outside the timeline) before.
                    if self.store.get_outlier(id.as_str())?.is_some() {
                        return Ok(Verdict::Known);
                    }
                    let mut befores = Vec::new();
                    for p in prevs {
                        if fresh.contains_key(p) && !forked.contains_key(p) {
                            // Accepted in this batch on top of the room's
                            // heads: the batch's state.
                            befores.push(Arc::new(current_with(&inner.state, &overlay)));
                        } else if let Some(s) = self.state_after(room, &inner, p, &forked)? {
                            befores.push(s);
                        }
                    }
                    let before = match befores.len() {
                        0 => current_with(&inner.state, &overlay),
                        1 => (*befores[0]).clone(),
                        _ => {
                            let forks: Vec<&StateMap> = befores.iter().map(|s| &**s).collect();
                            self.resolve_forks(room, &rules, &forks, &fresh)?
                        }
                    };
                    ruma::state_res::check_state_dependent_auth_rules(
                        &rules.authorization,
                        &event,
                        |t: &StateEventType, k: &str| {
                            before.get(&(t.to_string(), k.to_owned())).cloned()
                        },
                    )
                    .map_err(|r| {
                        Error::forbidden(format!("Not allowed by the state before it: {r}"))
                    })?;
                    let mut after = before;
                    if let Some(k) = &event.pdu.state_key {
                        after.insert((event.pdu.kind.to_string(), k.clone()), event.clone());
                    }
                    resolved = Some(after);
                }
                // Soft failure: an event the room's current state refuses,
                // although the state before it allowed it, is kept but not
                // taken in (no reader sees it, no event of ours follows
                // it). Its sender's server may still build on it.
                if let Err(r) = ruma::state_res::check_state_dependent_auth_rules(
                    &rules.authorization,
                    &event,
                    |t: &StateEventType, k: &str| lookup(&t.to_string(), k),
                ) {
                    if let Some(after) = resolved {
                        tracing::info!(event_id = %id, sender = %event.pdu.sender, reason = %r, "an event from another server is soft-failed: the room's state does not allow it");
                        return Ok(Verdict::SoftFailed(after));
                    }
                    return Err(Error::forbidden(format!(
                        "Not allowed by the room's state: {r}"
                    )));
                }
                seam.check(&event, &|t: &str, k: &str| lookup(t, k))?;
                Ok(Verdict::Take(
                    crate::federation::new_event(&checked)?,
                    resolved,
                ))
            })();
            match verdict {
                Ok(Verdict::SoftFailed(after)) => {
                    forked.insert(id.clone(), Arc::new(after));
                    fresh.insert(id.clone(), event.clone());
                    batch.push(WriteOp::PutOutlier {
                        event_id: id.to_string(),
                        room_id: room.id.to_string(),
                        json: checked.json.clone(),
                    });
                    accepted.push(results.len());
                    results.push((id, Ok(())));
                }
                Ok(Verdict::Take(new, after)) => {
                    let prevs = &event.pdu.prev_events;
                    let merges_all = heads.iter().all(|h| prevs.contains(h));
                    match after {
                        None => {
                            if let Some(k) = &event.pdu.state_key {
                                overlay
                                    .insert((event.pdu.kind.to_string(), k.clone()), event.clone());
                            }
                        }
                        Some(after) => {
                            let after = Arc::new(after);
                            let next = if merges_all {
                                Ok((*after).clone())
                            } else {
                                let current = current_with(&room.inner.read().state, &overlay);
                                self.resolve_forks(room, &rules, &[&current, &after], &fresh)
                            };
                            match next {
                                Ok(next) => {
                                    let inner = room.inner.read();
                                    overlay = next
                                        .into_iter()
                                        .filter(|(k, e)| {
                                            inner
                                                .state
                                                .get(k)
                                                .is_none_or(|c| c.event_id != e.event_id)
                                        })
                                        .collect();
                                }
                                Err(e) => {
                                    tracing::warn!(event_id = %id, reason = %e, "a forked room's state is kept as it was");
                                }
                            }
                            forked.insert(id.clone(), after);
                        }
                    }
                    heads.retain(|h| !prevs.contains(h));
                    heads.push(id.clone());
                    fresh.insert(id.clone(), event.clone());
                    if let Some(entry) = crate::availability::urgent_audit(&event) {
                        batch.push(entry);
                    }
                    batch.push(WriteOp::AppendEvent(new));
                    accepted.push(results.len());
                    results.push((id, Ok(())));
                }
                Ok(Verdict::Known) => results.push((id, Ok(()))),
                Err(e) => {
                    tracing::info!(event_id = %id, sender = %event.pdu.sender, reason = %e, "an event from another server is refused");
                    results.push((id, Err(e)));
                }
            }
        }
        if batch.ops.is_empty() {
            return results;
        }
        if !forked.is_empty() {
            // What the store makes current (each appended state event, in
            // order) where the resolution chose otherwise.
            let inner = room.inner.read();
            let mut newest: HashMap<(String, String), &Arc<PduEvent>> = HashMap::new();
            for op in &batch.ops {
                if let WriteOp::AppendEvent(n) = op {
                    if let (Some(k), Some(e)) = (&n.state_key, fresh.get(n.event_id.as_str())) {
                        newest.insert((n.event_type.clone(), k.clone()), e);
                    }
                }
            }
            let mut overrides = Vec::new();
            for (key, appended) in &newest {
                let chosen = overlay.get(key).or_else(|| inner.state.get(key));
                if let Some(chosen) = chosen.filter(|c| c.event_id != appended.event_id) {
                    overrides.push(set_current_state(&room.id, key, chosen));
                }
            }
            for (key, chosen) in &overlay {
                if !newest.contains_key(key) {
                    overrides.push(set_current_state(&room.id, key, chosen));
                }
            }
            drop(inner);
            batch.ops.extend(overrides);
        }
        if let Err(e) = self.store.write(batch).await {
            let e = Error::from(e);
            for i in accepted {
                results[i].1 = Err(Error::Unavailable(e.to_string()));
            }
            return results;
        }
        if !forked.is_empty() {
            let mut inner = room.inner.write();
            for (id, state) in forked {
                inner.note_fork_state(id, state);
            }
        }
        results
    }

    /// An event `sender` (of another server) could send next in `room`,
    /// checked against the room's rules and Hotline's as if it were sent:
    /// the template a `make_join` answers with.
    pub(crate) fn template_event(
        &self,
        room: &Room,
        sender: &UserId,
        draft: EventDraft,
    ) -> Result<Arc<PduEvent>> {
        Ok(self.build_one(room, sender, draft, Origin::Federation)?.0)
    }

    /// One event built and checked on top of the room's heads, not
    /// committed: for an event another server must see (and sign) first.
    pub(crate) fn build_one(
        &self,
        room: &Room,
        sender: &UserId,
        draft: EventDraft,
        origin: Origin,
    ) -> Result<(Arc<PduEvent>, NewEvent)> {
        let inner = room.inner.read();
        Ok(build_events(
            &room.version,
            &room.id,
            &inner.state,
            inner.heads.clone(),
            sender,
            vec![draft],
            None,
            None,
            Some(&Seam {
                services: self,
                origin,
            }),
        )?
        .remove(0))
    }

    /// Like [`append_events`] for one event.
    pub async fn append_event(
        &self,
        room: &Room,
        sender: &UserId,
        draft: EventDraft,
    ) -> Result<OwnedEventId> {
        Ok(self
            .append_events(room, sender, vec![draft], None)
            .await?
            .remove(0))
    }
}

/// The key a client transaction is recorded under. The spec scopes a
/// transaction id to its device and its endpoint, so the key holds the
/// endpoint's path parameters too: the same id sent to two rooms, or used
/// once for a message and once for a redaction, names two requests.
pub(crate) fn txn_key(
    room_id: &RoomId,
    kind: &TimelineEventType,
    redacts: Option<&EventId>,
    txn_id: &str,
) -> String {
    // A JSON array keeps the parts apart whatever characters they hold.
    let key = match redacts {
        Some(target) => serde_json::to_string(&("redact", room_id, target, txn_id)),
        None => serde_json::to_string(&("send", room_id, kind.to_string(), txn_id)),
    };
    key.expect("a tuple of strings always serializes")
}

/// Builds and authorizes `drafts` in order on top of `base`, each seeing the
/// state left by the ones before it (kept in a small overlay, so `base` is
/// only borrowed).
#[allow(clippy::too_many_arguments)] // one call site per caller; a struct would only rename them
pub(crate) fn build_events(
    version: &RoomVersionId,
    room_id: &RoomId,
    base: &StateMap,
    mut heads: Heads,
    sender: &UserId,
    drafts: Vec<EventDraft>,
    mut txn: Option<(String, String)>,
    memo: Option<&AuthMemo>,
    seam: Option<&Seam<'_>>,
) -> Result<Vec<(Arc<PduEvent>, NewEvent)>> {
    let rules = rules(version)?;
    let mut overlay: StateMap = HashMap::new();
    let lookup = |overlay: &StateMap, t: &str, k: &str| -> Option<Arc<PduEvent>> {
        let key = (t.to_owned(), k.to_owned());
        overlay.get(&key).or_else(|| base.get(&key)).cloned()
    };
    let mut out = Vec::with_capacity(drafts.len());
    for draft in drafts {
        let auth_types = ruma::state_res::auth_types_for_event(
            &draft.kind,
            sender,
            draft.state_key.as_deref(),
            &draft.content,
            &rules.authorization,
        )
        .map_err(Error::bad_json)?;
        let auth: AuthEvents = auth_types
            .iter()
            .filter_map(|(t, k)| lookup(&overlay, &t.to_string(), k))
            .collect();
        let auth_events = auth.iter().map(|e| e.event_id.clone()).collect();
        let memo = memo.filter(|_| AuthMemo::applies_to(&draft.kind, draft.state_key.as_deref()));
        let prev_events = heads.iter().map(|(id, _)| id.clone()).collect();
        let depth = heads
            .iter()
            .map(|(_, d)| *d)
            .max()
            .map_or(UInt::from(1u32), |d| d.saturating_add(UInt::from(1u32)));
        let pdu = Pdu {
            auth_events,
            content: draft.content,
            depth,
            hashes: crate::pdu::EventHashes {
                sha256: String::new(),
            },
            origin_server_ts: MilliSecondsSinceUnixEpoch::now(),
            prev_events,
            redacts: draft.redacts,
            // From room version 12 the create event's id names the room.
            room_id: (draft.kind != TimelineEventType::RoomCreate
                || !rules.authorization.room_create_event_id_as_room_id)
                .then(|| room_id.to_owned()),
            sender: sender.to_owned(),
            state_key: draft.state_key,
            kind: draft.kind,
            signatures: Default::default(),
        };
        let (mut event, json) = PduEvent::seal(pdu, version)?;
        let new_txn = txn.take().map(|(device_id, txn_id)| NewTxn {
            key: txn_key(
                room_id,
                &event.pdu.kind,
                event.pdu.redacts.as_deref(),
                &txn_id,
            ),
            device_id,
            txn_id,
        });
        event.txn = new_txn
            .as_ref()
            .map(|t| (t.device_id.clone(), t.txn_id.clone()));
        let event = Arc::new(event);
        if !memo.is_some_and(|m| m.passed(sender, &event.pdu.kind, &auth)) {
            ruma::state_res::check_state_dependent_auth_rules(
                &rules.authorization,
                &event,
                |t: &StateEventType, k: &str| lookup(&overlay, &t.to_string(), k),
            )
            .map_err(|reason| {
                Error::forbidden(format!("Not allowed by the room's rules: {reason}"))
            })?;
            if let Some(m) = memo {
                m.remember(sender, &event.pdu.kind, auth);
            }
        }
        // Hotline's rules, for every event whatever its endpoint.
        if let Some(seam) = seam {
            seam.check(&event, &|t: &str, k: &str| lookup(&overlay, t, k))?;
        }
        let membership = if event.pdu.kind == TimelineEventType::RoomMember {
            let c: RoomMemberEventContent = event.content()?;
            event
                .pdu
                .state_key
                .clone()
                .map(|k| (k, c.membership.to_string()))
        } else {
            None
        };
        if let Some(k) = &event.pdu.state_key {
            overlay.insert((event.pdu.kind.to_string(), k.clone()), event.clone());
        }
        heads = vec![(event.event_id.clone(), event.pdu.depth)];
        let new = NewEvent {
            event_id: event.event_id.to_string(),
            room_id: event.room_id.to_string(),
            sender: sender.to_string(),
            event_type: event.pdu.kind.to_string(),
            state_key: event.pdu.state_key.clone(),
            json,
            txn: new_txn,
            redacts: None,
            membership,
            parsed: Attachment(Some(event.clone())),
        };
        out.push((event, new));
    }
    Ok(out)
}

/// `base` under `overlay`: a room's whole current state while a batch of
/// events changes it.
/// What becomes of an event another server sent.
enum Verdict {
    /// Taken into the room: the write, and the state after it when it
    /// forked the room.
    Take(NewEvent, Option<StateMap>),
    /// Here already.
    Known,
    /// Allowed by the state before it, refused by the room's state now:
    /// kept outside the timeline, with the state after it.
    SoftFailed(StateMap),
}

fn current_with(base: &StateMap, overlay: &StateMap) -> StateMap {
    let mut out = base.clone();
    out.extend(overlay.iter().map(|(k, e)| (k.clone(), e.clone())));
    out
}

/// The store operation that makes `chosen` current for `key` in `room_id`.
pub(crate) fn set_current_state(
    room_id: &RoomId,
    key: &(String, String),
    chosen: &PduEvent,
) -> WriteOp {
    let membership = (chosen.pdu.kind == TimelineEventType::RoomMember)
        .then(|| chosen.content::<RoomMemberEventContent>().ok())
        .flatten()
        .map(|c| (key.1.clone(), c.membership.to_string()));
    WriteOp::SetCurrentState {
        room_id: room_id.to_string(),
        event_type: key.0.clone(),
        state_key: key.1.clone(),
        event_id: chosen.event_id.to_string(),
        membership,
    }
}

#[cfg(test)]
mod tests {
    use ruma::{owned_room_id, owned_user_id};
    use serde_json::json;

    use super::*;

    fn draft(kind: &str, state_key: Option<&str>, content: serde_json::Value) -> EventDraft {
        EventDraft::new(kind, &content, state_key.map(str::to_owned)).unwrap()
    }

    /// A room's state and newest event, as the send path sees them.
    #[derive(Default)]
    struct Head {
        state: StateMap,
        latest: Heads,
    }

    /// Builds one event as `sender` on top of `head`, and advances it.
    fn build(
        head: &mut Head,
        sender: &UserId,
        draft: EventDraft,
        memo: Option<&AuthMemo>,
    ) -> Result<Arc<PduEvent>> {
        let (event, _) = build_events(
            &RoomVersionId::V11,
            &owned_room_id!("!memo:hotline.test"),
            &head.state,
            head.latest.clone(),
            sender,
            vec![draft],
            None,
            memo,
            None,
        )?
        .remove(0);
        if let Some(k) = &event.pdu.state_key {
            head.state
                .insert((event.pdu.kind.to_string(), k.clone()), event.clone());
        }
        head.latest = vec![(event.event_id.clone(), event.pdu.depth)];
        Ok(event)
    }

    fn message() -> EventDraft {
        draft(
            "m.room.message",
            None,
            json!({"msgtype": "m.text", "body": "hi"}),
        )
    }

    #[test]
    fn auth_memo_never_outlives_the_state_it_saw() {
        let alice = owned_user_id!("@alice:hotline.test");
        let bob = owned_user_id!("@bob:hotline.test");
        let mut state = Head::default();
        let pl = |events_default: i64| {
            draft(
                "m.room.power_levels",
                Some(""),
                json!({"users": {alice.as_str(): 100}, "events_default": events_default}),
            )
        };
        let member = |user: &UserId, membership: &str| {
            draft(
                "m.room.member",
                Some(user.as_str()),
                json!({ "membership": membership }),
            )
        };
        let create = draft("m.room.create", Some(""), json!({"room_version": "11"}));
        let join_rules = draft(
            "m.room.join_rules",
            Some(""),
            json!({"join_rule": "public"}),
        );
        for (sender, event) in [
            (&alice, create),
            (&alice, member(&alice, "join")),
            (&alice, pl(0)),
            (&alice, join_rules),
            (&bob, member(&bob, "join")),
        ] {
            build(&mut state, sender, event, None).unwrap();
        }
        let refused = |r: Result<Arc<PduEvent>>| matches!(r, Err(Error::Forbidden(_)));

        let memo = AuthMemo::default();
        build(&mut state, &bob, message(), Some(&memo)).unwrap();
        assert_eq!(
            memo.0.lock()[&*bob].len(),
            1,
            "an allowed message is remembered"
        );
        build(&mut state, &bob, message(), Some(&memo)).unwrap();

        // New power levels: Bob's level 0 no longer reaches events_default.
        build(&mut state, &alice, pl(50), None).unwrap();
        assert!(refused(build(&mut state, &bob, message(), Some(&memo))));

        // Back to 0, allowed again; then Bob leaves and is refused.
        build(&mut state, &alice, pl(0), None).unwrap();
        build(&mut state, &bob, message(), Some(&memo)).unwrap();
        build(&mut state, &bob, member(&bob, "leave"), None).unwrap();
        assert!(refused(build(&mut state, &bob, message(), Some(&memo))));
    }

    #[test]
    fn auth_memo_leaves_state_and_redaction_events_to_the_rules() {
        let kinds = [
            ("m.room.message", None, true),
            ("m.room.encrypted", None, true),
            ("m.room.redaction", None, false),
            ("m.room.member", None, false),
            ("m.room.power_levels", None, false),
            ("m.room.topic", Some(""), false),
        ];
        for (kind, key, memoised) in kinds {
            assert_eq!(AuthMemo::applies_to(&kind.into(), key), memoised, "{kind}");
        }
    }
}
