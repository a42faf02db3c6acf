//! One room's entry in a sliding sync answer (`sliding.rs`): `initial`
//! (everything the room config asks) when the connection was never sent
//! the room, was sent it as an invite and the user joined since, or now
//! asks more of it (more state or a longer timeline); otherwise what
//! changed since it was last sent, or nothing.
//!
//! `required_state` entries are `[type, state_key]`, where `*` is any
//! type or key, `$ME` the user, and `["m.room.member", "$LAZY"]` the
//! members who sent the timeline's events (lazy loading).

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use ruma::events::room::member::MembershipState;
use ruma::events::TimelineEventType;
use serde_json::json;

use super::sliding::{timeline_len, RoomConfig, SentRoom, SlidingRoom};
use super::stripped::stripped_state;
use super::summary::room_summary;
use super::timeline::Window;
use super::SyncFilter;
use crate::accounts::Sender;
use crate::pdu::PduEvent;
use crate::rooms::Room;
use crate::{Result, Services};

/// The timeline filter of a sliding sync: every event the user may see.
static NO_FILTER: LazyLock<SyncFilter> = LazyLock::new(SyncFilter::default);

/// Which state a room config asks for.
struct Wants {
    all: bool,
    types: HashSet<String>,
    keys: HashSet<String>,
    exact: HashSet<(String, String)>,
    lazy: bool,
}

impl Wants {
    fn new(config: &RoomConfig, me: &str) -> Self {
        let mut w = Wants {
            all: false,
            types: HashSet::new(),
            keys: HashSet::new(),
            exact: HashSet::new(),
            lazy: false,
        };
        for (kind, key) in &config.required_state {
            let key = if key == "$ME" { me } else { key.as_str() };
            match (kind.as_str(), key) {
                ("*", "*") => w.all = true,
                ("m.room.member", "$LAZY") => w.lazy = true,
                (kind, "*") => {
                    w.types.insert(kind.to_owned());
                }
                ("*", key) => {
                    w.keys.insert(key.to_owned());
                }
                (kind, key) => {
                    w.exact.insert((kind.to_owned(), key.to_owned()));
                }
            }
        }
        w
    }

    fn wants(&self, e: &PduEvent) -> bool {
        let Some(key) = e.pdu.state_key.as_deref() else {
            return false;
        };
        let kind = e.pdu.kind.to_string();
        self.all
            || self.types.contains(&kind)
            || self.keys.contains(key)
            || self.exact.contains(&(kind, key.to_owned()))
    }
}

/// Whether `now` asks for something `before` did not: more state or a
/// longer timeline.
fn config_grew(before: &RoomConfig, now: &RoomConfig) -> bool {
    now.timeline_limit > before.timeline_limit
        || now
            .required_state
            .iter()
            .any(|rs| !before.required_state.contains(rs))
}

impl Services {
    /// The room's entry, as of position `upto`; `None` when nothing of it
    /// changed since `sent`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sliding_room(
        &self,
        sender: &Sender,
        room: &Room,
        membership: &MembershipState,
        membership_pos: i64,
        bump: i64,
        config: &RoomConfig,
        sent: Option<&SentRoom>,
        upto: i64,
        is_dm: bool,
    ) -> Result<Option<SlidingRoom>> {
        let user = &sender.user_id;
        let initial = match sent {
            None => true,
            Some(s) => {
                (s.membership != *membership && *membership == MembershipState::Join)
                    || config_grew(&s.config, config)
            }
        };
        let after = match sent {
            Some(s) if !initial => s.pos,
            _ => 0,
        };
        let mut entry = SlidingRoom {
            bump_stamp: Some(bump),
            is_dm: is_dm.then_some(true),
            ..Default::default()
        };
        match membership {
            MembershipState::Invite | MembershipState::Knock => {
                if !initial && membership_pos <= after {
                    return Ok(None);
                }
                entry.initial = Some(true);
                if *membership == MembershipState::Invite {
                    let events = if room.state_event("m.room.create", "").is_some() {
                        stripped_state(room, user, true)
                    } else {
                        // Invited over federation into a room not held here.
                        self.remote_stripped_state(room, user)
                    };
                    entry.invite_state = Some(events);
                }
                return Ok(Some(entry));
            }
            MembershipState::Join | MembershipState::Leave | MembershipState::Ban => {}
            _ => return Ok(None),
        }
        let joined = *membership == MembershipState::Join;
        // A left room is shown up to the leave, never after.
        let end = if joined {
            upto
        } else {
            membership_pos.min(upto)
        };
        if !initial {
            let own_receipt = joined
                && room.last_receipt_pos() > after
                && room
                    .receipts_since(after)
                    .iter()
                    .any(|r| r.user_id == user.as_str());
            if room.last_event_pos() <= after && membership_pos <= after && !own_receipt {
                return Ok(None);
            }
        }
        entry.initial = initial.then_some(true);

        let limit = timeline_len(config);
        let window = if limit == 0 || (!initial && room.last_event_pos() <= after) {
            Window::empty()
        } else {
            self.timeline_window(room, user, after, end, limit, &NO_FILTER.timeline, None)?
        };
        if !window.events.is_empty() || initial {
            entry.prev_batch = Some(crate::rooms::position_token(
                window.prev.unwrap_or(after).min(end),
            ));
        }
        entry.limited = window.limited;
        entry.num_live = Some(if initial { 0 } else { window.events.len() });

        // State: all of what is asked when initial, else what changed.
        let wants = Wants::new(config, user.as_str());
        let state: Vec<Arc<PduEvent>> = if joined {
            room.state()
        } else {
            self.state_at(room, Some(end), None)?
        };
        let changed = |e: &PduEvent| e.pos() > after && e.pos() <= end;
        let mut required: Vec<Arc<PduEvent>> = state
            .iter()
            .filter(|e| changed(e) && wants.wants(e))
            .cloned()
            .collect();
        if wants.lazy {
            let senders: HashSet<&str> = window
                .events
                .iter()
                .map(|e| e.pdu.sender.as_str())
                .collect();
            let have: HashSet<&str> = required.iter().map(|e| e.event_id.as_str()).collect();
            let lazy: Vec<Arc<PduEvent>> = state
                .iter()
                .filter(|e| {
                    e.pdu.kind == TimelineEventType::RoomMember
                        && e.pdu
                            .state_key
                            .as_deref()
                            .is_some_and(|k| senders.contains(k))
                        && !have.contains(e.event_id.as_str())
                })
                .cloned()
                .collect();
            required.extend(lazy);
        }
        entry.required_state = Services::to_client_events(&required, sender, false);
        entry.timeline = Services::to_client_events(&window.events, sender, false);

        // What names the room, when new or changed.
        let content = |kind: &str| -> Option<Arc<PduEvent>> {
            state
                .iter()
                .find(|e| e.pdu.kind.to_string() == kind && e.pdu.state_key.as_deref() == Some(""))
                .cloned()
        };
        let name_event = content("m.room.name");
        if let Some(e) = name_event.as_ref().filter(|e| changed(e)) {
            let name = e
                .content::<serde_json::Value>()
                .ok()
                .and_then(|c| c.get("name").and_then(|n| n.as_str()).map(str::to_owned))
                .unwrap_or_default();
            entry.name = Some(name);
        }
        if let Some(e) = content("m.room.avatar").filter(|e| changed(e)) {
            let url = e
                .content::<serde_json::Value>()
                .ok()
                .and_then(|c| c.get("url").and_then(|n| n.as_str()).map(str::to_owned))
                .filter(|u| !u.is_empty());
            entry.avatar = Some(url);
        }
        if initial || room.last_member_pos() > after {
            let summary = room_summary(room, user);
            entry.joined_count = Some(summary.joined);
            entry.invited_count = Some(summary.invited);
            if !summary.heroes.is_empty() {
                let heroes = summary
                    .heroes
                    .iter()
                    .map(|h| {
                        let member = content_of_member(&state, h.as_str());
                        let mut v = json!({"user_id": h});
                        if let Some(name) = member.as_ref().and_then(|m| m.get("displayname")) {
                            if name.is_string() {
                                v["displayname"] = name.clone();
                            }
                        }
                        if let Some(url) = member.as_ref().and_then(|m| m.get("avatar_url")) {
                            if url.is_string() {
                                v["avatar_url"] = url.clone();
                            }
                        }
                        v
                    })
                    .collect();
                entry.heroes = Some(heroes);
            }
        }
        if joined {
            let (notes, highlights) = self.unread_counts(room, user, upto, None)?;
            entry.notification_count = Some(notes);
            entry.highlight_count = Some(highlights);
        }
        Ok(Some(entry))
    }
}

/// A member's `m.room.member` content, from the given state.
fn content_of_member(state: &[Arc<PduEvent>], user: &str) -> Option<serde_json::Value> {
    state
        .iter()
        .find(|e| {
            e.pdu.kind == TimelineEventType::RoomMember && e.pdu.state_key.as_deref() == Some(user)
        })
        .and_then(|e| e.content::<serde_json::Value>().ok())
}
