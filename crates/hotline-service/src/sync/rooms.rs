//! The `rooms` part of a `/sync` response: an entry for each room the
//! filter lets through whose membership or contents moved past the token.
//! A joined room carries its timeline, state, ephemeral events, account
//! data, unread counts and summary, and is left out when nothing of it
//! changed; an invite or a knock its stripped state, once; a room left
//! since the token (or, with `include_leave`, any left room on a fresh or
//! full-state sync) its timeline and state up to the leave, never after.
//!
//! A timeline holds 10 events when the filter names no `limit`.

use std::collections::BTreeMap;

use ruma::events::room::member::MembershipState;
use serde_json::json;
use serde_json::value::RawValue;

use super::stripped::stripped_state;
use super::summary::{room_summary, NAMED_BY};
use super::timeline::Window;
use super::{
    Events, InvitedRoom, JoinedRoom, LeftRoom, Rooms, SyncRequest, SyncToken, Timeline,
    UnreadCounts,
};
use crate::accounts::Sender;
use crate::rooms::{Room, UserRooms};
use crate::{Result, Services};

/// Default timeline length when the filter names none.
const DEFAULT_TIMELINE: usize = 10;

impl Services {
    /// The room entries of a response as of position `upto`, each joined or
    /// left room with its part of `room_account_data`.
    pub(super) fn rooms_for_sync(
        &self,
        sender: &Sender,
        req: &SyncRequest,
        user_rooms: &UserRooms,
        upto: i64,
        mut room_account_data: BTreeMap<String, Vec<Box<RawValue>>>,
    ) -> Result<Rooms> {
        let user = &sender.user_id;
        let since = req.since;
        let since_pos = since.map(|s| s.pos).unwrap_or(0);
        let filter = &req.filter;
        let mut rooms = Rooms::default();
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
                        rooms.join.insert(room_id.clone(), j);
                    }
                }
                MembershipState::Invite if newly => {
                    let room = self.room(room_id)?;
                    let events = if room.state_event("m.room.create", "").is_some() {
                        stripped_state(&room, user, true)
                    } else {
                        // Invited over federation into a room not held here.
                        self.remote_stripped_state(&room, user)
                    };
                    rooms.invite.insert(
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
                    let events = if room.state_event("m.room.create", "").is_some() {
                        stripped_state(&room, user, false)
                    } else {
                        // Knocked over federation on a room not held here.
                        self.remote_stripped_state(&room, user)
                    };
                    rooms
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
                    rooms.leave.insert(room_id.clone(), left);
                }
                _ => {}
            }
        }
        Ok(rooms)
    }

    /// A joined room's entry as of position `upto`; `newly`: the room is
    /// new to the client (or `full_state`). `None` when nothing of it
    /// changed since the token.
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

        let ephemeral = self.room_ephemeral(sender, room, filter, since, upto, newly)?;

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
}
