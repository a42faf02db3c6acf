//! A room's past from other servers (`/backfill`): one page of it with a
//! join ([`Services::history_before`]), and more whenever a reader pages
//! back past the oldest event stored here ([`Services::backfill`], from
//! `/messages`).
//!
//! Every event of a page is checked as every received event is
//! ([`Services::check_incoming_pdu`]) and against its own auth events
//! ([`authorized_by_its_auth_events`]). Those come from the page, from what
//! the caller already holds, from the store (the timeline, or events kept
//! outside it), or, at most [`MAX_AUTH_FETCHES`] per page, from the
//! answering server (`/event`); an auth event fetched so is checked the same
//! way and kept outside the timeline (`WriteOp::PutOutlier`). An event that
//! fails is left out, and so is everything that needs it.
//!
//! A page fetched for `/messages` goes before every event stored
//! (`WriteOp::AppendBackfilled`: negative positions, newest first) and
//! changes no state: the room's state is what its join and the events since
//! made it. **Known limit:** the state a join brought sits in the timeline
//! where the join put it, so a page fetched later lies before the room's
//! create event there.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotline_store::{WriteBatch, WriteOp};
use ruma::events::TimelineEventType;
use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId, ServerName};
use serde_json::value::RawValue;

use super::pdus::CheckedPdu;
use super::rooms::{authorized_by_its_auth_events, new_event};
use crate::pdu::{rules, Pdu, PduEvent};
use crate::rooms::{Room, OLDEST_POS};
use crate::Services;

/// Events of a room's history fetched with a join over federation.
pub(super) const HISTORY_ON_JOIN: u32 = 50;

/// Most events one backfill for `/messages` asks for.
const MAX_BACKFILL: usize = 100;

/// Auth events of a page fetched one by one (`/event`), at most.
const MAX_AUTH_FETCHES: usize = 32;

/// Missing predecessors a backfill starts from, at most.
const EXTREMITIES: usize = 5;

/// The oldest stored events of a room looked at for missing predecessors.
const SCANNED: usize = 200;

/// How long a room whose past could not be had is not asked about again:
/// a reader paging at the top of what exists does not cost a request each.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Backfill's bookkeeping: one at a time (two would interleave their pages'
/// positions), and when each room last came back with nothing.
#[derive(Default)]
pub(crate) struct Backfills {
    one_at_a_time: tokio::sync::Mutex<()>,
    fruitless: parking_lot::Mutex<HashMap<OwnedRoomId, Instant>>,
}

/// A page of a room's past, checked: the events allowed, and the auth
/// events fetched to check them (to be kept outside the timeline).
struct CheckedPage {
    events: Vec<CheckedPdu>,
    fetched: Vec<CheckedPdu>,
}

impl Services {
    /// Up to [`HISTORY_ON_JOIN`] events before `join`, asked of `server`
    /// (`/backfill`), checked; `known` holds the join's state and auth
    /// chain. The events, and the auth events fetched to check them.
    /// Nothing if the server cannot say.
    pub(super) async fn history_before(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        version: &RoomVersionId,
        join: &PduEvent,
        known: &HashMap<OwnedEventId, CheckedPdu>,
    ) -> (Vec<CheckedPdu>, Vec<CheckedPdu>) {
        let ask = ruma::api::federation::backfill::get_backfill::v1::Request::new(
            room_id.to_owned(),
            join.pdu.prev_events.clone(),
            ruma::UInt::from(HISTORY_ON_JOIN),
        );
        let answer = match self.federation_call(server, ask).await {
            Ok(a) => a,
            Err(e) => {
                tracing::info!(peer = %server, %room_id, error = %e, "history before a join could not be had");
                return (Vec::new(), Vec::new());
            }
        };
        let create = known
            .values()
            .find(|c| c.event.pdu.kind == TimelineEventType::RoomCreate)
            .map(|c| c.event.event_id.clone());
        let pdus = &answer.pdus[..answer.pdus.len().min(HISTORY_ON_JOIN as usize)];
        let page = self
            .checked_page(server, room_id, version, pdus, known, create.as_deref())
            .await;
        (page.events, page.fetched)
    }

    /// Up to `want` (at most [`MAX_BACKFILL`]) events of `room`'s past
    /// before the oldest stored here, asked of the room's other servers in
    /// turn, checked, and stored before every stored event. How many were
    /// stored: none when federation is off, the room's past is all here, no
    /// server could say, or the room came back with nothing a moment ago.
    pub(crate) async fn backfill(&self, room: &Room, want: usize) -> usize {
        if !self.federation.enabled() {
            return 0;
        }
        let backfills = &self.federation.backfills;
        let recently = |at: &Instant| at.elapsed() < RETRY_AFTER;
        if backfills
            .fruitless
            .lock()
            .get(&room.id)
            .is_some_and(recently)
        {
            return 0;
        }
        let _one = backfills.one_at_a_time.lock().await;
        let stored = match self.backfill_once(room, want.clamp(1, MAX_BACKFILL)).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(room_id = %room.id, error = %e, "a room's past could not be stored");
                0
            }
        };
        let mut fruitless = backfills.fruitless.lock();
        fruitless.retain(|_, at| recently(at));
        if stored == 0 {
            fruitless.insert(room.id.clone(), Instant::now());
        }
        stored
    }

    async fn backfill_once(&self, room: &Room, want: usize) -> crate::Result<usize> {
        let from = self.backward_extremities(room)?;
        if from.is_empty() {
            return Ok(0);
        }
        let create = room
            .state_event("m.room.create", "")
            .map(|e| e.event_id.clone());
        for server in room.remote_servers(self.server_name()) {
            let ask = ruma::api::federation::backfill::get_backfill::v1::Request::new(
                room.id.clone(),
                from.clone(),
                ruma::UInt::try_from(want).unwrap_or(ruma::UInt::MAX),
            );
            let answer = match self.federation_call(&server, ask).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::info!(peer = %server, room_id = %room.id, error = %e, "a room's past could not be had");
                    continue;
                }
            };
            let pdus = &answer.pdus[..answer.pdus.len().min(want)];
            let page = self
                .checked_page(
                    &server,
                    &room.id,
                    &room.version,
                    pdus,
                    &HashMap::new(),
                    create.as_deref(),
                )
                .await;
            let mut events: Vec<CheckedPdu> = Vec::with_capacity(page.events.len());
            for c in page.events {
                if self.store.get_event(c.event.event_id.as_str())?.is_none() {
                    events.push(c);
                }
            }
            if events.is_empty() {
                continue;
            }
            // Newest first: each lands before the one stored before it.
            events.sort_by_key(|c| {
                std::cmp::Reverse((c.event.pdu.depth, c.event.pdu.origin_server_ts))
            });
            let mut batch = WriteBatch::new();
            for c in &page.fetched {
                batch.push(outlier(c));
            }
            for c in &events {
                batch.push(WriteOp::AppendBackfilled(new_event(c)?));
            }
            self.store.write(batch).await?;
            tracing::info!(peer = %server, room_id = %room.id, events = events.len(), "a room's past was fetched");
            return Ok(events.len());
        }
        Ok(0)
    }

    /// Where `room`'s known past ends: the predecessors, not stored here,
    /// of its oldest stored events (at most [`SCANNED`] of them looked at),
    /// the newest gaps first. The newest gap is the one a reader paging
    /// back meets first; older ones (before the state a join brought) are
    /// filled after it.
    fn backward_extremities(&self, room: &Room) -> crate::Result<Vec<OwnedEventId>> {
        let mut gaps: Vec<(ruma::UInt, OwnedEventId)> = Vec::new();
        for row in self
            .store
            .room_events_forward(room.id.as_str(), OLDEST_POS - 1, SCANNED)?
        {
            let Ok(pdu) = serde_json::from_str::<Pdu>(&row.json) else {
                continue;
            };
            for p in pdu.prev_events {
                if !gaps.iter().any(|(_, g)| *g == p) && self.store.get_event(p.as_str())?.is_none()
                {
                    gaps.push((pdu.depth, p));
                }
            }
        }
        gaps.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(gaps
            .into_iter()
            .take(EXTREMITIES)
            .map(|(_, id)| id)
            .collect())
    }

    /// `pdus` of `room_id` from `server`, each checked as received and
    /// against its own auth events (see the module docs), those it lacks
    /// fetched from `server`.
    async fn checked_page(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        version: &RoomVersionId,
        pdus: &[Box<RawValue>],
        known: &HashMap<OwnedEventId, CheckedPdu>,
        create: Option<&EventId>,
    ) -> CheckedPage {
        let Ok(rules) = rules(version) else {
            return CheckedPage {
                events: Vec::new(),
                fetched: Vec::new(),
            };
        };
        let mut page: HashMap<OwnedEventId, CheckedPdu> = HashMap::new();
        for raw in pdus {
            match self.check_incoming_pdu(raw, version).await {
                Ok(c) if c.event.room_id == room_id && !known.contains_key(&c.event.event_id) => {
                    page.insert(c.event.event_id.clone(), c);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::info!(peer = %server, reason = %e, "an event of a room's history is refused")
                }
            }
        }
        let stored = |id: &EventId| -> Option<Arc<PduEvent>> {
            let row = match self.store.get_event(id.as_str()).ok()? {
                Some(row) => row,
                None => self.store.get_outlier(id.as_str()).ok()??,
            };
            self.load_event(&row).ok().map(Arc::new)
        };
        // The auth events nothing here holds, fetched (and theirs, a few
        // rounds deep) within the budget.
        let mut fetched: HashMap<OwnedEventId, CheckedPdu> = HashMap::new();
        let mut budget = MAX_AUTH_FETCHES;
        let mut asked: HashSet<OwnedEventId> = HashSet::new();
        for _round in 0..3 {
            let wanted: Vec<OwnedEventId> = page
                .values()
                .chain(fetched.values())
                .flat_map(|c| c.event.pdu.auth_events.iter())
                .filter(|id| {
                    !known.contains_key(*id)
                        && !page.contains_key(*id)
                        && !fetched.contains_key(*id)
                        && !asked.contains(*id)
                        && stored(id).is_none()
                })
                .cloned()
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            if wanted.is_empty() || budget == 0 {
                break;
            }
            for id in wanted.into_iter().take(budget) {
                budget -= 1;
                asked.insert(id.clone());
                let ask = ruma::api::federation::event::get_event::v1::Request::new(id.clone());
                let raw = match self.federation_call(server, ask).await {
                    Ok(answer) => answer.pdu,
                    Err(e) => {
                        tracing::info!(peer = %server, event_id = %id, error = %e, "an auth event could not be had");
                        continue;
                    }
                };
                match self.check_incoming_pdu(&raw, version).await {
                    Ok(c) if c.event.event_id == id && c.event.room_id == room_id => {
                        fetched.insert(id, c);
                    }
                    Ok(_) => {
                        tracing::info!(peer = %server, event_id = %id, "a server answered for an auth event with another event")
                    }
                    Err(e) => {
                        tracing::info!(peer = %server, event_id = %id, reason = %e, "an auth event is refused")
                    }
                }
            }
        }
        // Oldest first, so an event's auth events are judged before it;
        // each checked against what was allowed so far.
        let mut order: Vec<&CheckedPdu> = page.values().chain(fetched.values()).collect();
        order.sort_by_key(|c| (c.event.pdu.depth, c.event.pdu.origin_server_ts));
        let mut allowed: HashMap<OwnedEventId, Arc<PduEvent>> = HashMap::new();
        for c in order {
            let id = &c.event.event_id;
            let fetch = |id: &EventId| -> Option<Arc<PduEvent>> {
                known
                    .get(id)
                    .map(|c| c.event.clone())
                    .or_else(|| allowed.get(id).cloned())
                    .or_else(|| stored(id))
            };
            match authorized_by_its_auth_events(&rules, &c.event, create, fetch) {
                Ok(()) => {
                    allowed.insert(id.clone(), c.event.clone());
                }
                Err(e) => {
                    tracing::info!(peer = %server, event_id = %id, reason = %e, "an event of a room's history is not allowed")
                }
            }
        }
        let keep = |map: HashMap<OwnedEventId, CheckedPdu>| -> Vec<CheckedPdu> {
            map.into_iter()
                .filter(|(id, _)| allowed.contains_key(id))
                .map(|(_, c)| c)
                .collect()
        };
        CheckedPage {
            events: keep(page),
            fetched: keep(fetched),
        }
    }
}

/// The write that keeps a checked event outside its room's timeline.
pub(crate) fn outlier(c: &CheckedPdu) -> WriteOp {
    WriteOp::PutOutlier {
        event_id: c.event.event_id.to_string(),
        room_id: c.event.room_id.to_string(),
        json: c.json.clone(),
    }
}
