//! Reading rooms: history pages, single events, context, state and members.
//!
//! **Architecture Invariant:** every event read here passes the room's
//! history visibility for the reader ([`super::visibility`]): the setting in
//! force at the event and the reader's membership then. A reader who may see
//! nothing of a room (never a member, never world-readable) gets `403`.
//!
//! **Architecture Invariant:** state is the current state for a joined
//! member (or anyone, in a room that is world-readable now) and the state
//! just after their leave, kick or ban for one who left; others (never in
//! the room, forgot it, banned without ever joining) get `403`
//! ([`Services::state_position`]).
//!
//! **Architecture Invariant:** filters apply before the limit, and a request
//! examines at most [`MAX_SCAN`] rows: a page that ran out of rows to look
//! at ends early with an `end` token from which the client continues.

use std::sync::Arc;

use hotline_store::EventRow;
use ruma::events::room::member::RoomMemberEventContent;
use ruma::{EventId, RoomId, UserId};
use serde_json::value::RawValue;

use super::visibility::Visibility;
use super::Room;
use crate::pdu::PduEvent;
use crate::sync::RoomEventFilter;
use crate::{Error, Result, Services};

/// Rows one request examines at most, visible or filtered out alike.
pub const MAX_SCAN: usize = 5000;

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

/// The lowest position a token may name. Events of a room's past fetched
/// from another server sit at negative positions (counting down from -1);
/// this bound leaves room for any number of them and for arithmetic on it.
pub(crate) const OLDEST_POS: i64 = i64::MIN / 4;

/// Pagination tokens are stream positions: `t{P}` is the boundary just after
/// position `P` (negative in a past fetched from another server). Sync
/// tokens (`s{P}_{T}`) are accepted too.
pub fn parse_position_token(token: &str) -> Result<i64> {
    let bad = || Error::invalid_param("Invalid pagination token");
    let rest = token
        .strip_prefix('t')
        .or_else(|| token.strip_prefix('s'))
        .ok_or_else(bad)?;
    rest.split('_')
        .next()
        .and_then(|p| p.parse::<i64>().ok())
        .filter(|p| *p >= OLDEST_POS)
        .ok_or_else(bad)
}

pub fn position_token(pos: i64) -> String {
    format!("t{pos}")
}

/// `GET /rooms/{roomId}/context/{eventId}`.
pub struct EventContext {
    pub event: Arc<PduEvent>,
    /// Newest first.
    pub before: Vec<Arc<PduEvent>>,
    /// Oldest first.
    pub after: Vec<Arc<PduEvent>>,
    pub start: String,
    pub end: String,
    /// The state at the last event returned.
    pub state: Vec<Arc<PduEvent>>,
}

/// A joined member of `/joined_members`: `(user, displayname, avatar)`.
pub type JoinedMember = (ruma::OwnedUserId, Option<String>, Option<String>);

/// How a walk over a room's events ended.
enum ScanEnd {
    /// No event is left that the reader may see.
    Exhausted,
    /// The page filled at the event at this position.
    Full(i64),
    /// [`MAX_SCAN`] rows were examined. The position is the walk's cursor:
    /// backward, every position from it up was examined; forward, every
    /// position up to it.
    Budget(i64),
}

/// Whether a member event's membership passes `/members`' filters: when
/// both are given, the spec makes them an "or".
fn membership_wanted(m: &str, membership: Option<&str>, not_membership: Option<&str>) -> bool {
    match (membership, not_membership) {
        (Some(x), Some(y)) => m == x || m != y,
        (Some(x), None) => m == x,
        (None, Some(y)) => m != y,
        (None, None) => true,
    }
}

impl Services {
    /// Walks `room_id`'s events within `runs` (ascending, from
    /// [`Visibility::visible_runs`]), newest first when backward, handing
    /// each to `take` until it says the page is full, there are no more, or
    /// [`MAX_SCAN`] rows were examined.
    fn scan(
        &self,
        room_id: &RoomId,
        runs: &[(i64, i64)],
        dir: Direction,
        mut take: impl FnMut(&EventRow) -> Result<bool>,
    ) -> Result<ScanEnd> {
        let mut left = MAX_SCAN;
        let mut batch = 32usize;
        let ordered: Box<dyn Iterator<Item = &(i64, i64)>> = match dir {
            Direction::Backward => Box::new(runs.iter().rev()),
            Direction::Forward => Box::new(runs.iter()),
        };
        for &(lo, hi) in ordered {
            // Exclusive bound: the next row is below it (backward) or above.
            let mut cursor = match dir {
                Direction::Backward => hi + 1,
                Direction::Forward => lo - 1,
            };
            'run: loop {
                let span = match dir {
                    Direction::Backward => cursor - lo,
                    Direction::Forward => hi - cursor,
                };
                if span <= 0 {
                    break;
                }
                if left == 0 {
                    return Ok(ScanEnd::Budget(cursor));
                }
                let n = batch
                    .min(left)
                    .min(usize::try_from(span).unwrap_or(usize::MAX));
                batch = (batch * 2).min(512);
                let rows = match dir {
                    Direction::Backward => {
                        self.store
                            .room_events_backward(room_id.as_str(), cursor, n)?
                    }
                    Direction::Forward => {
                        self.store
                            .room_events_forward(room_id.as_str(), cursor, n)?
                    }
                };
                for row in &rows {
                    let inside = match dir {
                        Direction::Backward => row.pos >= lo,
                        Direction::Forward => row.pos <= hi,
                    };
                    if !inside {
                        break 'run;
                    }
                    left -= 1;
                    cursor = row.pos;
                    if take(row)? {
                        return Ok(ScanEnd::Full(row.pos));
                    }
                }
                if rows.len() < n {
                    // The room has no more events this way at all.
                    return Ok(ScanEnd::Exhausted);
                }
            }
        }
        Ok(ScanEnd::Exhausted)
    }

    /// The event of `row` if it passes `filter` (redaction attached).
    fn filtered_event(
        &self,
        row: &EventRow,
        filter: &RoomEventFilter,
    ) -> Result<Option<Arc<PduEvent>>> {
        let e = PduEvent::from_row(row)?;
        if !filter.matches(&e) {
            return Ok(None);
        }
        let e = if row.redacted_by.is_some() {
            self.load_event(row)?
        } else {
            e
        };
        Ok(Some(Arc::new(e)))
    }

    /// `GET /rooms/{roomId}/messages`: the filter applies before the limit.
    /// A backward page that reaches the oldest event stored here, short of
    /// its limit, in a room other servers are in, asks them for the room's
    /// past first ([`Services::backfill`]) when the reader could see it.
    #[allow(clippy::too_many_arguments)]
    pub async fn messages(
        &self,
        user: &UserId,
        room_id: &RoomId,
        from: Option<&str>,
        to: Option<&str>,
        dir: Direction,
        limit: usize,
        filter: &RoomEventFilter,
    ) -> Result<MessagesPage> {
        let page = self.messages_page(user, room_id, from, to, dir, limit, filter)?;
        let short = page.end.is_none() && page.chunk.len() < limit.clamp(1, 1000);
        if dir != Direction::Backward || !short || to.is_some() || !self.federation.enabled() {
            return Ok(page);
        }
        let room = self.room(room_id)?;
        // Negative positions are the room's past from other servers.
        if room.remote_servers(self.server_name()).is_empty()
            || !self.visibility(&room, user)?.allows(-1)
        {
            return Ok(page);
        }
        if self.backfill(&room, limit.max(20)).await == 0 {
            return Ok(page);
        }
        self.messages_page(user, room_id, from, to, dir, limit, filter)
    }

    #[allow(clippy::too_many_arguments)]
    fn messages_page(
        &self,
        user: &UserId,
        room_id: &RoomId,
        from: Option<&str>,
        to: Option<&str>,
        dir: Direction,
        limit: usize,
        filter: &RoomEventFilter,
    ) -> Result<MessagesPage> {
        let room = self.room(room_id)?;
        let vis = self.visibility_or_forbidden(&room, user)?;
        let top = self.visible_pos();
        let limit = limit.clamp(1, 1000);
        let from_pos = match from {
            Some(t) => parse_position_token(t)?.min(top),
            None if dir == Direction::Backward => top,
            None => OLDEST_POS,
        };
        let to_pos = to.map(parse_position_token).transpose()?;
        let runs = match dir {
            Direction::Backward => {
                vis.visible_runs(to_pos.map_or(OLDEST_POS + 1, |t| t + 1), from_pos)
            }
            Direction::Forward => {
                vis.visible_runs(from_pos + 1, to_pos.map_or(top, |t| t.min(top)))
            }
        };
        let mut chunk = Vec::new();
        let ended = self.scan(room_id, &runs, dir, |row| {
            if let Some(e) = self.filtered_event(row, filter)? {
                chunk.push(e);
            }
            Ok(chunk.len() >= limit)
        })?;
        let end = match (dir, ended) {
            (Direction::Backward, ScanEnd::Full(p) | ScanEnd::Budget(p)) => {
                Some(position_token(p - 1))
            }
            (Direction::Forward, ScanEnd::Full(p) | ScanEnd::Budget(p)) => Some(position_token(p)),
            (Direction::Backward, ScanEnd::Exhausted) => None,
            // Forward to the live end: where to wait for what comes next.
            (Direction::Forward, ScanEnd::Exhausted) => {
                (to_pos.is_none() && top > from_pos).then(|| position_token(top))
            }
        };
        let state = if filter.lazy_load_members {
            let at = chunk.iter().map(|e| e.pos()).max().unwrap_or(from_pos);
            self.senders_members_at(&room, &chunk, at)?
        } else {
            vec![]
        };
        Ok(MessagesPage {
            start: position_token(from_pos),
            end,
            chunk,
            state,
        })
    }

    /// The member events, as of `at`, of the senders of `events` (each
    /// sender once): the state a lazy-loading client needs for them.
    fn senders_members_at<'a>(
        &self,
        room: &Room,
        events: impl IntoIterator<Item = &'a Arc<PduEvent>>,
        at: i64,
    ) -> Result<Vec<Arc<PduEvent>>> {
        let mut senders: Vec<_> = events.into_iter().map(|e| e.pdu.sender.clone()).collect();
        senders.sort();
        senders.dedup();
        let mut state = Vec::with_capacity(senders.len());
        for s in &senders {
            if let Some(e) = self.state_event_at(room, "m.room.member", s.as_str(), Some(at))? {
                state.push(e);
            }
        }
        Ok(state)
    }

    /// The event `event_id` of `room`, if `vis` lets the reader see it.
    fn visible_event(
        &self,
        room: &Room,
        vis: &Visibility,
        event_id: &EventId,
    ) -> Result<Arc<PduEvent>> {
        let row = self
            .store
            .get_event(event_id.as_str())?
            .filter(|r| r.room_id == room.id.as_str() && vis.allows(r.pos))
            .ok_or_else(|| Error::not_found("Event not found"))?;
        Ok(Arc::new(self.load_event(&row)?))
    }

    /// `GET /rooms/{roomId}/event/{eventId}`.
    pub fn get_event(
        &self,
        user: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Arc<PduEvent>> {
        let room = self.room(room_id)?;
        let vis = self.visibility_or_forbidden(&room, user)?;
        self.visible_event(&room, &vis, event_id)
    }

    /// `GET /rooms/{roomId}/context/{eventId}`: the event, up to `limit`
    /// visible events around it that pass `filter`, and the state at the
    /// last event returned (only the senders' member events when the filter
    /// lazy-loads members), filtered too.
    pub fn context(
        &self,
        user: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        limit: usize,
        filter: &RoomEventFilter,
    ) -> Result<EventContext> {
        let room = self.room(room_id)?;
        let vis = self.visibility_or_forbidden(&room, user)?;
        let event = self.visible_event(&room, &vis, event_id)?;
        let pos = event.pos();
        let top = self.visible_pos().max(pos);
        let limit = limit.min(100);
        let before_n = limit / 2;
        let after_n = limit - before_n;

        let mut before = Vec::new();
        let start = if before_n == 0 {
            position_token(pos - 1)
        } else {
            let runs = vis.visible_runs(OLDEST_POS + 1, pos - 1);
            match self.scan(room_id, &runs, Direction::Backward, |row| {
                if let Some(e) = self.filtered_event(row, filter)? {
                    before.push(e);
                }
                Ok(before.len() >= before_n)
            })? {
                ScanEnd::Full(p) | ScanEnd::Budget(p) => position_token(p - 1),
                ScanEnd::Exhausted => position_token(before.last().map_or(pos, |e| e.pos()) - 1),
            }
        };
        let mut after = Vec::new();
        let end = if after_n == 0 {
            position_token(pos)
        } else {
            let runs = vis.visible_runs(pos + 1, top);
            match self.scan(room_id, &runs, Direction::Forward, |row| {
                if let Some(e) = self.filtered_event(row, filter)? {
                    after.push(e);
                }
                Ok(after.len() >= after_n)
            })? {
                ScanEnd::Full(p) | ScanEnd::Budget(p) => position_token(p),
                ScanEnd::Exhausted => position_token(top),
            }
        };

        let at = after.last().map_or(pos, |e| e.pos());
        let mut state = if filter.lazy_load_members {
            let shown = std::iter::once(&event).chain(&before).chain(&after);
            self.senders_members_at(&room, shown, at)?
        } else {
            self.state_at(&room, Some(at), None)?
        };
        state.retain(|e| filter.matches(e));
        Ok(EventContext {
            event,
            before,
            after,
            start,
            end,
            state,
        })
    }

    /// The room's state just after `pos` (`None`: now), only of `kind` when
    /// given. The cached current state answers unless something of it
    /// changed since `pos`.
    pub(crate) fn state_at(
        &self,
        room: &Room,
        pos: Option<i64>,
        kind: Option<&str>,
    ) -> Result<Vec<Arc<PduEvent>>> {
        let current: Vec<_> = room
            .state()
            .into_iter()
            .filter(|e| kind.is_none_or(|k| e.pdu.kind.to_string() == k))
            .collect();
        match pos {
            Some(p) if current.iter().any(|e| e.pos() > p) => self
                .store
                .room_state_at(room.id.as_str(), p, kind)?
                .iter()
                .map(|r| self.load_event(r).map(Arc::new))
                .collect(),
            _ => Ok(current),
        }
    }

    /// The state event `(kind, key)` just after `pos` (`None`: now).
    fn state_event_at(
        &self,
        room: &Room,
        kind: &str,
        key: &str,
        pos: Option<i64>,
    ) -> Result<Option<Arc<PduEvent>>> {
        let current = room.state_event(kind, key);
        match (pos, &current) {
            (Some(p), Some(e)) if e.pos() > p => self
                .store
                .state_event_at(room.id.as_str(), kind, key, p)?
                .map(|r| self.load_event(&r).map(Arc::new))
                .transpose(),
            _ => Ok(current),
        }
    }

    /// `GET /rooms/{roomId}/state`.
    pub fn room_state_events(&self, user: &UserId, room_id: &RoomId) -> Result<Vec<Arc<PduEvent>>> {
        let room = self.room(room_id)?;
        let pos = self.state_position(&room, user)?;
        self.state_at(&room, pos, None)
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
        let pos = self.state_position(&room, user)?;
        self.state_event_at(&room, kind, key, pos)?
            .ok_or_else(|| Error::not_found("Event not found"))
    }

    /// `GET /rooms/{roomId}/members`: member events as of `at` (a sync or
    /// pagination token; default now, or the reader's leave), filtered by
    /// membership. A past point is shown only to one who may see the room's
    /// history there.
    pub fn members(
        &self,
        user: &UserId,
        room_id: &RoomId,
        at: Option<&str>,
        membership: Option<&str>,
        not_membership: Option<&str>,
    ) -> Result<Vec<Arc<PduEvent>>> {
        let room = self.room(room_id)?;
        let base = self.state_position(&room, user)?;
        let pos = match at {
            None => base,
            Some(t) => {
                let p = parse_position_token(t)?.min(base.unwrap_or_else(|| self.visible_pos()));
                let last = self
                    .store
                    .room_events_backward(room_id.as_str(), p + 1, 1)?
                    .first()
                    .map(|r| r.pos);
                if let Some(last) = last {
                    if !self.visibility(&room, user)?.allows(last) {
                        return Err(Error::forbidden(
                            "You may not see this room's history at that point",
                        ));
                    }
                }
                Some(p)
            }
        };
        Ok(self
            .state_at(&room, pos, Some("m.room.member"))?
            .into_iter()
            .filter(|e| {
                let m = e
                    .content::<RoomMemberEventContent>()
                    .map(|c| c.membership.to_string())
                    .unwrap_or_default();
                membership_wanted(&m, membership, not_membership)
            })
            .collect())
    }

    /// `GET /rooms/{roomId}/joined_members`: `(user, displayname, avatar)`.
    pub fn joined_members(&self, user: &UserId, room_id: &RoomId) -> Result<Vec<JoinedMember>> {
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
