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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::accounts::Sender;
use crate::pdu::PduEvent;
use crate::rooms::Room;
use crate::{Error, Result, Services};

/// Which events of a room a client wants (a typed subset of the spec's
/// `RoomEventFilter`).
#[derive(Clone, Debug, Default)]
pub struct RoomEventFilter {
    pub limit: Option<usize>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub lazy_load_members: bool,
}

fn type_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

impl RoomEventFilter {
    pub fn matches(&self, e: &PduEvent) -> bool {
        self.matches_type_and_sender(&e.pdu.kind.to_string(), Some(e.pdu.sender.as_str()))
    }

    /// Whether events of `kind` (from `sender`, when known) pass the filter.
    pub fn matches_type_and_sender(&self, kind: &str, sender: Option<&str>) -> bool {
        self.types
            .as_ref()
            .is_none_or(|t| t.iter().any(|p| type_matches(p, kind)))
            && !self.not_types.iter().any(|p| type_matches(p, kind))
            && sender.is_none_or(|sender| {
                self.senders
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|x| x == sender))
                    && !self.not_senders.iter().any(|x| x == sender)
            })
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
        RoomEventFilter {
            limit: v.get("limit").and_then(|l| l.as_u64()).map(|l| l as usize),
            types: strings("types"),
            not_types: strings("not_types").unwrap_or_default(),
            senders: strings("senders"),
            not_senders: strings("not_senders").unwrap_or_default(),
            lazy_load_members: v
                .get("lazy_load_members")
                .and_then(|l| l.as_bool())
                .unwrap_or(false),
        }
    }
}

/// The parts of the spec's `Filter` that `/sync` honours.
#[derive(Clone, Debug, Default)]
pub struct SyncFilter {
    pub timeline: RoomEventFilter,
    pub state: RoomEventFilter,
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub include_leave: bool,
    pub account_data_types: Option<Vec<String>>,
    pub ephemeral_off: bool,
    /// The filter's `presence` part (types and senders).
    pub presence: RoomEventFilter,
}

impl SyncFilter {
    /// Reads a filter definition; unknown fields are ignored as the spec allows.
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        if !v.is_object() {
            return Err(Error::bad_json("Filter must be an object"));
        }
        let room = v.get("room").cloned().unwrap_or(json!({}));
        let strings = |x: Option<&serde_json::Value>| -> Option<Vec<String>> {
            x.and_then(|x| x.as_array()).map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
        };
        let timeline = RoomEventFilter::from_json(room.get("timeline").unwrap_or(&json!({})));
        let state = RoomEventFilter::from_json(room.get("state").unwrap_or(&json!({})));
        Ok(SyncFilter {
            rooms: strings(room.get("rooms")),
            not_rooms: strings(room.get("not_rooms")).unwrap_or_default(),
            include_leave: room
                .get("include_leave")
                .and_then(|b| b.as_bool())
                .unwrap_or(false),
            account_data_types: strings(v.get("account_data").and_then(|a| a.get("types"))),
            presence: RoomEventFilter::from_json(v.get("presence").unwrap_or(&json!({}))),
            ephemeral_off: room
                .get("ephemeral")
                .and_then(|e| e.get("limit"))
                .and_then(|l| l.as_u64())
                == Some(0),
            timeline,
            state,
        })
    }

    fn room_wanted(&self, room: &str) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|r| r.iter().any(|x| x == room))
            && !self.not_rooms.iter().any(|x| x == room)
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

/// Parsed `/sync` filters, so that a client's every long-poll does not
/// re-read and re-parse the same one. Filters never change once uploaded
/// (a new definition gets a new id), so an entry is never stale: inline
/// filters are keyed by their JSON text, stored ones by user and id.
#[derive(Default)]
pub struct FilterCache {
    /// Entries and the bytes of their keys.
    inner: Mutex<(HashMap<String, Arc<SyncFilter>>, usize)>,
}

/// Key bytes past which the cache starts over: it holds what the clients
/// of the moment use, and a client sending ever-new inline filters cannot
/// grow it without bound.
const FILTER_CACHE_BYTES: usize = 256 * 1024;

impl FilterCache {
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
            &req.filter.presence,
        )?;

        // Account data: global and per room, one indexed read when it moved.
        let mut room_account_data: BTreeMap<String, Vec<Box<RawValue>>> = BTreeMap::new();
        if since.is_none() || user_rooms.last_private_pos > since_pos {
            let mut rows = self.store.account_data_since(user.as_str(), since_pos)?;
            let max = rows.iter().map(|r| r.pos).max().unwrap_or(0);
            self.note_private_pos(user, max);
            // The stored rules (one row at most), refreshed against the
            // server defaults, as GET serves them.
            let mut push_rules_stored = false;
            for r in rows
                .iter_mut()
                .filter(|r| r.room_id.is_empty() && r.kind == crate::push_rules::PUSH_RULES)
            {
                r.content = self.push_rules_content(user)?.to_string();
                push_rules_stored = true;
            }
            if !push_rules_stored && since.is_none() {
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
                if req
                    .filter
                    .account_data_types
                    .as_ref()
                    .is_some_and(|t| !t.iter().any(|p| type_matches(p, &row.kind)))
                {
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
            if !req.filter.room_wanted(room_id.as_str()) || *mpos > upto {
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
                    let mut events: Vec<Box<RawValue>> = INVITE_STATE
                        .iter()
                        .filter_map(|k| room.state_event(k, ""))
                        .map(|e| stripped(&e))
                        .collect();
                    if let Some(m) = room.state_event("m.room.member", user.as_str()) {
                        if let Some(inviter) =
                            room.state_event("m.room.member", m.pdu.sender.as_str())
                        {
                            events.push(stripped(&inviter));
                        }
                        events.push(stripped(&m));
                    }
                    resp.rooms.invite.insert(
                        room_id.clone(),
                        InvitedRoom {
                            invite_state: Events { events },
                        },
                    );
                }
                MembershipState::Leave | MembershipState::Ban
                    if (since.is_some() && *mpos > since_pos)
                        || (since.is_none() && req.filter.include_leave) =>
                {
                    let room = self.room(room_id)?;
                    let limit = req.filter.timeline.limit.unwrap_or(DEFAULT_TIMELINE);
                    let (events, limited) = self.timeline_window(&room, since_pos, *mpos, limit)?;
                    let prev_batch = events
                        .first()
                        .map(|e| crate::rooms::position_token_before(e.pos()));
                    resp.rooms.leave.insert(
                        room_id.clone(),
                        LeftRoom {
                            timeline: Timeline {
                                events: Services::to_client_events(&events, sender, false),
                                limited,
                                prev_batch,
                            },
                            state: Events::default(),
                            account_data: Events::default(),
                        },
                    );
                }
                _ => {}
            }
        }
        Ok(resp)
    }

    fn note_private_pos(&self, user: &ruma::UserId, seen_max: i64) {
        self.set_private_pos_if_unknown(user, seen_max);
    }

    /// Events of `room` with `after < pos <= upto`, the newest `limit` of
    /// them, and whether older ones were left out.
    fn timeline_window(
        &self,
        room: &Room,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> Result<(Vec<Arc<PduEvent>>, bool)> {
        let limit = limit.clamp(1, 500);
        if let Some(mut events) = room.recent_window(after, upto) {
            let limited = events.len() > limit;
            if limited {
                events.drain(..events.len() - limit);
            }
            return Ok((events, limited));
        }
        let rows = self
            .store
            .room_events_backward(room.id.as_str(), upto + 1, limit + 1)?;
        let mut events: Vec<_> = rows
            .iter()
            .filter(|r| r.pos > after)
            .map(|r| self.load_event(r).map(Arc::new))
            .collect::<Result<_>>()?;
        let limited = events.len() > limit;
        events.truncate(limit);
        events.reverse();
        Ok((events, limited))
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
        let limit = filter.timeline.limit.unwrap_or(DEFAULT_TIMELINE);
        let has_new_events = room.last_event_pos() > since_pos;
        let (mut events, limited) = if newly {
            self.timeline_window(room, 0, upto, limit)?
        } else if has_new_events {
            self.timeline_window(room, since_pos, upto, limit)?
        } else {
            (vec![], false)
        };
        events.retain(|e| filter.timeline.matches(e));

        let mut ephemeral = Vec::new();
        if !filter.ephemeral_off {
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
            if newly || room.last_receipt_pos() > since_pos {
                let rows = self
                    .store
                    .receipts_since(room.id.as_str(), if newly { 0 } else { since_pos })?;
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
        }

        // State: everything for a room new to this client; after a gap, the
        // state that changed in it.
        let in_timeline: std::collections::HashSet<&ruma::EventId> =
            events.iter().map(|e| &*e.event_id).collect();
        let lazy = filter.state.lazy_load_members || filter.timeline.lazy_load_members;
        let mut wanted_members: std::collections::HashSet<&ruma::UserId> =
            events.iter().map(|e| &*e.pdu.sender).collect();
        wanted_members.insert(&sender.user_id);
        let state: Vec<Arc<PduEvent>> = if newly || limited {
            room.state()
                .into_iter()
                .filter(|e| !in_timeline.contains(&*e.event_id) && e.pos() <= upto)
                .filter(|e| newly || e.pos() > since_pos)
                .filter(|e| {
                    !lazy
                        || e.pdu.kind.to_string() != "m.room.member"
                        || e.pdu
                            .state_key
                            .as_deref()
                            .and_then(|k| ruma::UserId::parse(k).ok())
                            .is_some_and(|u| wanted_members.contains(&*u))
                })
                .collect()
        } else {
            vec![]
        };

        if !newly
            && events.is_empty()
            && ephemeral.is_empty()
            && account_data.is_empty()
            && state.is_empty()
        {
            return Ok(None);
        }
        let notification_count = self.unread_count(room, &sender.user_id);
        let joined_count = room.joined_members().len();
        let prev_batch = events
            .first()
            .map(|e| crate::rooms::position_token_before(e.pos()))
            .or_else(|| Some(crate::rooms::position_token(since_pos.min(upto))));
        Ok(Some(JoinedRoom {
            timeline: Timeline {
                events: Services::to_client_events(&events, sender, false),
                limited,
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
                highlight_count: 0,
            },
            summary: json!({ "m.joined_member_count": joined_count }),
        }))
    }
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
