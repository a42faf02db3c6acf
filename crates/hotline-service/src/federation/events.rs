//! Events for other servers that ask: one event, the state at an event and
//! its auth chain, history before an event (`backfill`), and the events
//! between what a server has and what it was sent (`get_missing_events`).
//!
//! A server is answered about a room only while one of its users is joined
//! to it, as Synapse does: what a room holds is for its members' servers.

use std::collections::{BTreeSet, HashSet};

use ruma::{EventId, OwnedEventId, RoomId, ServerName};
use serde_json::value::RawValue;

use crate::pdu::{Pdu, PduEvent};
use crate::rooms::Room;
use crate::{Error, Result, Services};

/// Most events one `backfill` or `get_missing_events` answer holds.
const MAX_EVENTS: usize = 100;

impl Services {
    /// The room, when `origin` has a user joined to it.
    fn room_for_peer(&self, origin: &ServerName, room_id: &RoomId) -> Result<std::sync::Arc<Room>> {
        let room = self
            .room(room_id)
            .map_err(|_| Error::not_found("Unknown room"))?;
        if !room
            .remote_servers(self.server_name())
            .iter()
            .any(|s| s == origin)
        {
            return Err(Error::forbidden("Your server is not in the room"));
        }
        self.check_server_acl(&room, origin)?;
        Ok(room)
    }

    /// A stored event of `room`, by id.
    fn stored_in(&self, room: &Room, event_id: &EventId) -> Result<hotline_store::EventRow> {
        self.store
            .get_event(event_id.as_str())?
            .filter(|r| r.room_id == room.id.as_str())
            .ok_or_else(|| Error::not_found("Unknown event"))
    }

    /// A stored event by id, in a timeline or kept outside one.
    pub(crate) fn known_event_row(
        &self,
        event_id: &EventId,
    ) -> Result<Option<hotline_store::EventRow>> {
        match self.store.get_event(event_id.as_str())? {
            Some(row) => Ok(Some(row)),
            None => Ok(self.store.get_outlier(event_id.as_str())?),
        }
    }

    /// `GET /_matrix/federation/v1/event/{eventId}`.
    pub fn event_for_peer(&self, origin: &ServerName, event_id: &EventId) -> Result<Box<RawValue>> {
        let row = self
            .known_event_row(event_id)?
            .ok_or_else(|| Error::not_found("Unknown event"))?;
        let room_id = RoomId::parse(&row.room_id).map_err(Error::internal)?;
        let room = self.room_for_peer(origin, &room_id)?;
        self.outgoing_pdu(&row.json, &room.version, false)
    }

    /// The state before `event_id` and that state's auth chain, as ids
    /// (`/state_ids`) and as stored JSON (`/state`).
    pub fn state_for_peer(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<(
        Vec<(OwnedEventId, Box<RawValue>)>,
        Vec<(OwnedEventId, Box<RawValue>)>,
    )> {
        let room = self.room_for_peer(origin, room_id)?;
        let at = self.stored_in(&room, event_id)?;
        let state = self
            .store
            .room_state_at(room_id.as_str(), at.pos - 1, None)?;
        let ids: Vec<OwnedEventId> = state
            .iter()
            .filter_map(|r| EventId::parse(&r.event_id).ok())
            .collect();
        let mut pdus = Vec::with_capacity(state.len());
        for row in &state {
            pdus.push((
                EventId::parse(&row.event_id).map_err(Error::internal)?,
                self.outgoing_pdu(&row.json, &room.version, false)?,
            ));
        }
        let chain = self.auth_chain_rows(&ids)?;
        let mut auth = Vec::with_capacity(chain.len());
        for (id, json) in chain {
            auth.push((id, self.outgoing_pdu(&json, &room.version, false)?));
        }
        Ok((pdus, auth))
    }

    /// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`.
    pub fn event_auth_for_peer(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Vec<Box<RawValue>>> {
        let room = self.room_for_peer(origin, room_id)?;
        self.stored_in(&room, event_id)?;
        self.auth_chain_rows(&[event_id.to_owned()])?
            .into_iter()
            .map(|(_, json)| self.outgoing_pdu(&json, &room.version, false))
            .collect()
    }

    /// `GET /_matrix/federation/v1/backfill/{roomId}`: the events `from`
    /// and before them, newest first, at most `limit`.
    pub fn backfill_for_peer(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        from: &[OwnedEventId],
        limit: usize,
    ) -> Result<Vec<Box<RawValue>>> {
        let room = self.room_for_peer(origin, room_id)?;
        let Some(upto) = from
            .iter()
            .filter_map(|id| self.stored_in(&room, id).ok())
            .map(|row| row.pos)
            .max()
        else {
            return Ok(Vec::new());
        };
        self.store
            .room_events_backward(room_id.as_str(), upto + 1, limit.min(MAX_EVENTS))?
            .iter()
            .map(|r| self.outgoing_pdu(&r.json, &room.version, false))
            .collect()
    }

    /// `POST /_matrix/federation/v1/get_missing_events/{roomId}`: walking
    /// back from `latest` through `prev_events`, the events not in
    /// `earliest` and not below `min_depth`, oldest first, at most `limit`.
    pub fn missing_events_for_peer(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        earliest: &[OwnedEventId],
        latest: &[OwnedEventId],
        limit: usize,
        min_depth: u64,
    ) -> Result<Vec<Box<RawValue>>> {
        let room = self.room_for_peer(origin, room_id)?;
        let stop: HashSet<&OwnedEventId> = earliest.iter().collect();
        let mut seen: HashSet<OwnedEventId> = latest.iter().cloned().collect();
        let mut frontier: Vec<OwnedEventId> = Vec::new();
        for id in latest {
            if let Ok(row) = self.stored_in(&room, id) {
                let pdu: Pdu = serde_json::from_str(&row.json).map_err(Error::internal)?;
                frontier.extend(pdu.prev_events);
            }
        }
        let mut found: BTreeSet<(u64, i64, String)> = BTreeSet::new();
        let limit = limit.min(MAX_EVENTS);
        while let Some(id) = frontier.pop() {
            if found.len() >= limit {
                break;
            }
            if stop.contains(&id) || !seen.insert(id.clone()) {
                continue;
            }
            let Ok(row) = self.stored_in(&room, &id) else {
                continue;
            };
            let event = PduEvent::from_row(&row)?;
            let depth = u64::from(event.pdu.depth);
            if depth < min_depth {
                continue;
            }
            frontier.extend(event.pdu.prev_events.iter().cloned());
            found.insert((depth, row.pos, row.json));
        }
        found
            .into_iter()
            .map(|(_, _, json)| self.outgoing_pdu(&json, &room.version, false))
            .collect()
    }

    /// `(id, stored JSON)` of every event in the auth chains of `ids`.
    pub(crate) fn auth_chain_rows(
        &self,
        ids: &[OwnedEventId],
    ) -> Result<Vec<(OwnedEventId, String)>> {
        let mut seen: HashSet<OwnedEventId> = HashSet::new();
        let mut todo: Vec<OwnedEventId> = Vec::new();
        for id in ids {
            if let Some(row) = self.store.get_event(id.as_str())? {
                let pdu: Pdu = serde_json::from_str(&row.json).map_err(Error::internal)?;
                // From room version 12 the create event is no event's auth
                // event but every event's: the room id names it.
                if let Some(create) = pdu.room_id.as_deref().and_then(crate::pdu::create_event_id) {
                    todo.push(create);
                }
                todo.extend(pdu.auth_events);
            }
        }
        let mut out = Vec::new();
        while let Some(id) = todo.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            let Some(row) = self.known_event_row(&id)? else {
                continue;
            };
            let pdu: Pdu = serde_json::from_str(&row.json).map_err(Error::internal)?;
            todo.extend(pdu.auth_events.into_iter().filter(|a| !seen.contains(a)));
            out.push((id, row.json));
        }
        Ok(out)
    }
}
