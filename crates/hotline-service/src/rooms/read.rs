//! Reading rooms: history pages, single events, context, state and members.
//!
//! **Architecture Invariant:** a user reads a room's events only while
//! joined, and after leaving only up to the moment they left.

use std::sync::Arc;

use ruma::events::room::member::MembershipState;
use ruma::{EventId, RoomId, UserId};
use serde_json::value::RawValue;

use super::Room;
use crate::pdu::PduEvent;
use crate::{Error, Result, Services};

/// Pagination direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Backward,
    Forward,
}

/// A page of `/messages`.
pub struct MessagesPage {
    pub start: String,
    pub end: Option<String>,
    pub chunk: Vec<Arc<PduEvent>>,
    pub state: Vec<Arc<PduEvent>>,
}

/// Pagination tokens are stream positions: `t{P}` is the boundary just after
/// position `P`. Sync tokens (`s{P}_{T}`) are accepted too.
pub fn parse_position_token(token: &str) -> Result<i64> {
    let bad = || Error::invalid_param("Invalid pagination token");
    let rest = token
        .strip_prefix('t')
        .or_else(|| token.strip_prefix('s'))
        .ok_or_else(bad)?;
    rest.split('_')
        .next()
        .and_then(|p| p.parse::<i64>().ok())
        .filter(|p| *p >= 0)
        .ok_or_else(bad)
}

pub fn position_token(pos: i64) -> String {
    format!("t{pos}")
}

impl Services {
    /// Up to which position `user` may read `room`.
    pub fn readable_upto(&self, room: &Room, user: &UserId) -> Result<i64> {
        match room.membership(user) {
            Some(MembershipState::Join) => Ok(i64::MAX),
            Some(MembershipState::Leave | MembershipState::Ban) => {
                let rooms = self.user_rooms(user)?;
                rooms
                    .rooms
                    .get(&room.id)
                    .map(|(_, pos)| *pos)
                    .ok_or_else(|| Error::forbidden("You are not in this room"))
            }
            _ => Err(Error::forbidden("You are not in this room")),
        }
    }

    /// `GET /rooms/{roomId}/messages`.
    pub fn messages(
        &self,
        user: &UserId,
        room_id: &RoomId,
        from: Option<&str>,
        to: Option<&str>,
        dir: Direction,
        limit: usize,
        filter: &crate::sync::RoomEventFilter,
    ) -> Result<MessagesPage> {
        let room = self.room(room_id)?;
        let upto = self.readable_upto(&room, user)?.min(self.visible_pos());
        let limit = limit.clamp(1, 1000);
        let from_pos = match from {
            Some(t) => parse_position_token(t)?,
            None if dir == Direction::Backward => upto,
            None => 0,
        };
        let to_pos = to.map(parse_position_token).transpose()?;
        let rows = match dir {
            Direction::Backward => {
                self.store
                    .room_events_backward(room_id.as_str(), from_pos.min(upto) + 1, limit)?
            }
            Direction::Forward => {
                self.store
                    .room_events_forward(room_id.as_str(), from_pos, limit)?
            }
        };
        let mut chunk = Vec::with_capacity(rows.len());
        let mut last_pos = None;
        for row in &rows {
            if row.pos > upto {
                break;
            }
            match (dir, to_pos) {
                (Direction::Backward, Some(t)) if row.pos <= t => break,
                (Direction::Forward, Some(t)) if row.pos > t => break,
                _ => {}
            }
            last_pos = Some(row.pos);
            let e = Arc::new(self.load_event(row)?);
            if filter.matches(&e) {
                chunk.push(e);
            }
        }
        let end = match (dir, last_pos) {
            (_, None) => None,
            (Direction::Backward, Some(p)) => {
                (rows.len() == limit && p > 1).then(|| position_token(p - 1))
            }
            (Direction::Forward, Some(p)) => Some(position_token(p)),
        };
        let state = if filter.lazy_load_members {
            let mut senders: Vec<_> = chunk.iter().map(|e| e.pdu.sender.clone()).collect();
            senders.sort();
            senders.dedup();
            senders
                .iter()
                .filter_map(|s| room.state_event("m.room.member", s.as_str()))
                .collect()
        } else {
            vec![]
        };
        Ok(MessagesPage {
            start: position_token(from_pos.min(upto)),
            end,
            chunk,
            state,
        })
    }

    /// `GET /rooms/{roomId}/event/{eventId}`.
    pub fn get_event(
        &self,
        user: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Arc<PduEvent>> {
        let room = self.room(room_id)?;
        let upto = self.readable_upto(&room, user)?;
        let row = self
            .store
            .get_event(event_id.as_str())?
            .filter(|r| r.room_id == room_id.as_str() && r.pos <= upto)
            .ok_or_else(|| Error::not_found("Event not found"))?;
        Ok(Arc::new(self.load_event(&row)?))
    }

    /// `GET /rooms/{roomId}/context/{eventId}`: the event, `limit` events
    /// around it, and the state members of those events' senders.
    pub fn context(
        &self,
        user: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        limit: usize,
    ) -> Result<(
        Arc<PduEvent>,
        Vec<Arc<PduEvent>>,
        Vec<Arc<PduEvent>>,
        String,
        String,
        Vec<Arc<PduEvent>>,
    )> {
        let event = self.get_event(user, room_id, event_id)?;
        let room = self.room(room_id)?;
        let upto = self.readable_upto(&room, user)?.min(self.visible_pos());
        let limit = limit.min(100);
        let before_n = limit / 2;
        let after_n = limit - before_n;
        let pos = event.pos();
        let before: Vec<_> = self
            .store
            .room_events_backward(room_id.as_str(), pos, before_n)?
            .iter()
            .map(|r| self.load_event(r).map(Arc::new))
            .collect::<Result<_>>()?;
        let after: Vec<_> = self
            .store
            .room_events_forward(room_id.as_str(), pos, after_n)?
            .iter()
            .filter(|r| r.pos <= upto)
            .map(|r| self.load_event(r).map(Arc::new))
            .collect::<Result<_>>()?;
        let start = position_token(before.last().map(|e| e.pos() - 1).unwrap_or(pos - 1));
        let end = position_token(after.last().map(|e| e.pos()).unwrap_or(pos));
        let state = room.state();
        Ok((event, before, after, start, end, state))
    }

    /// `GET /rooms/{roomId}/state`.
    pub fn room_state_events(&self, user: &UserId, room_id: &RoomId) -> Result<Vec<Arc<PduEvent>>> {
        let room = self.room(room_id)?;
        self.require_state_access(&room, user)?;
        Ok(room.state())
    }

    /// `GET /rooms/{roomId}/state/{eventType}/{stateKey}`.
    pub fn room_state_event(
        &self,
        user: &UserId,
        room_id: &RoomId,
        kind: &str,
        key: &str,
    ) -> Result<Arc<PduEvent>> {
        let room = self.room(room_id)?;
        self.require_state_access(&room, user)?;
        room.state_event(kind, key)
            .ok_or_else(|| Error::not_found("Event not found"))
    }

    fn require_state_access(&self, room: &Room, user: &UserId) -> Result<()> {
        self.readable_upto(room, user).map(|_| ())
    }

    /// `GET /rooms/{roomId}/members`: member events, optionally filtered.
    pub fn members(
        &self,
        user: &UserId,
        room_id: &RoomId,
        membership: Option<&str>,
        not_membership: Option<&str>,
    ) -> Result<Vec<Arc<PduEvent>>> {
        let room = self.room(room_id)?;
        self.require_state_access(&room, user)?;
        Ok(room
            .state()
            .into_iter()
            .filter(|e| e.pdu.kind.to_string() == "m.room.member")
            .filter(|e| {
                let m = e
                    .content::<ruma::events::room::member::RoomMemberEventContent>()
                    .map(|c| c.membership.to_string())
                    .unwrap_or_default();
                membership.is_none_or(|x| x == m) && not_membership.is_none_or(|x| x != m)
            })
            .collect())
    }

    /// `GET /rooms/{roomId}/joined_members`: `(user, displayname, avatar)`.
    pub fn joined_members(
        &self,
        user: &UserId,
        room_id: &RoomId,
    ) -> Result<Vec<(ruma::OwnedUserId, Option<String>, Option<String>)>> {
        let room = self.room(room_id)?;
        self.require_joined(&room, user)?;
        Ok(room
            .joined_members()
            .into_iter()
            .map(|u| {
                let c = room.state_event("m.room.member", u.as_str()).and_then(|e| {
                    e.content::<ruma::events::room::member::RoomMemberEventContent>()
                        .ok()
                });
                let (d, a) = c
                    .map(|c| (c.displayname, c.avatar_url.map(|a| a.to_string())))
                    .unwrap_or_default();
                (u, d, a)
            })
            .collect())
    }

    /// Client-format JSON for a list of events.
    pub fn to_client_events(
        events: &[Arc<PduEvent>],
        viewer: &crate::accounts::Sender,
        with_room: bool,
    ) -> Vec<Box<RawValue>> {
        events
            .iter()
            .map(|e| {
                e.to_client(
                    Some((&viewer.user_id, viewer.device_id.as_str())),
                    with_room,
                )
            })
            .collect()
    }
}
