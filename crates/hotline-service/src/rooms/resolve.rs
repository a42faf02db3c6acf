//! State resolution where a room's history forks.
//!
//! A room made and used on this server alone never forks: every local event
//! names all the room's forward extremities as its `prev_events`, so its
//! state before it is the room's current state. Across servers, two events
//! can be sent at once on top of the same event; each server receives the
//! other's event after its own. Then the state before a received event is
//! the state after its `prev_events` (resolved, if there are several), and
//! the room's current state is the resolution of the state at each forward
//! extremity, so both servers end with the same state whatever order the
//! events reached them in. The resolution itself is ruma's
//! ([`ruma::state_res::resolve`], state resolution v2 and, from room version
//! 12, v2.1); this module gives it what it reads: the forks' state maps,
//! their full auth chains, the events, and (v2.1) the conflicted state
//! subgraph.
//!
//! Where the state after a `prev_event` comes from, in order:
//! 1. an event of the same batch, or one that forked the room earlier:
//!    the state computed for it then ([`RoomInner::fork_states`], the newest
//!    [`FORK_STATES`] in memory);
//! 2. an event after which the room's state has not changed: that state;
//! 3. otherwise the room's state at the event's position in the store,
//!    which is the state after it for every event that did not fork the
//!    room (and an approximation for an older fork forgotten since, or one
//!    from before a restart).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ruma::events::StateEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::state_res::utils::event_id_set::EventIdSet;
use ruma::{EventId, OwnedEventId};

use super::{Room, RoomInner, StateMap};
use crate::pdu::PduEvent;
use crate::{Error, Result, Services};

/// States after forking events kept per room, newest first out.
pub(super) const FORK_STATES: usize = 256;

/// Events read while resolving, by id: the forks' own, the batch's, and
/// those loaded from the store on the way.
struct Events<'a> {
    services: &'a Services,
    known: RefCell<HashMap<OwnedEventId, Option<Arc<PduEvent>>>>,
}

impl<'a> Events<'a> {
    fn new(
        services: &'a Services,
        forks: &[&StateMap],
        fresh: &HashMap<OwnedEventId, Arc<PduEvent>>,
    ) -> Self {
        let mut known = HashMap::new();
        for e in forks.iter().flat_map(|f| f.values()).chain(fresh.values()) {
            known.insert(e.event_id.clone(), Some(e.clone()));
        }
        Self {
            services,
            known: RefCell::new(known),
        }
    }

    fn get(&self, id: &EventId) -> Option<Arc<PduEvent>> {
        if let Some(e) = self.known.borrow().get(id) {
            return e.clone();
        }
        let loaded = self
            .services
            .store
            .get_event(id.as_str())
            .ok()
            .flatten()
            .and_then(|row| self.services.load_event(&row).ok())
            .map(Arc::new);
        self.known
            .borrow_mut()
            .insert(id.to_owned(), loaded.clone());
        loaded
    }

    /// Every event reachable from `from` through `auth_events`, `from`
    /// included.
    fn auth_chain(&self, from: impl IntoIterator<Item = OwnedEventId>) -> HashSet<OwnedEventId> {
        let mut seen = HashSet::new();
        let mut todo: Vec<OwnedEventId> = from.into_iter().collect();
        while let Some(id) = todo.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            if let Some(e) = self.get(&id) {
                todo.extend(
                    e.pdu
                        .auth_events
                        .iter()
                        .filter(|a| !seen.contains(*a))
                        .cloned(),
                );
            }
        }
        seen
    }

    /// Room version 12's conflicted state subgraph: the events that are
    /// both an auth ancestor (or one) of a conflicted event and an auth
    /// descendant (or one) of a conflicted event.
    fn conflicted_subgraph(&self, conflicted: &HashSet<OwnedEventId>) -> EventIdSet<OwnedEventId> {
        // Whether an event has a conflicted event among its strict auth
        // ancestors, for every event reached from a conflicted one.
        let mut above: HashMap<OwnedEventId, bool> = HashMap::new();
        fn visit(
            events: &Events<'_>,
            id: &EventId,
            conflicted: &HashSet<OwnedEventId>,
            above: &mut HashMap<OwnedEventId, bool>,
        ) -> bool {
            if let Some(known) = above.get(id) {
                return *known;
            }
            // Marked first: a cycle (a malformed graph) ends here.
            above.insert(id.to_owned(), false);
            let parents = events
                .get(id)
                .map(|e| e.pdu.auth_events.clone())
                .unwrap_or_default();
            let mut found = false;
            for p in parents {
                let reaches = visit(events, &p, conflicted, above);
                found |= reaches || conflicted.contains(&p);
            }
            above.insert(id.to_owned(), found);
            found
        }
        for c in conflicted {
            visit(self, c, conflicted, &mut above);
        }
        above
            .into_iter()
            .filter(|(id, reaches)| *reaches || conflicted.contains(id))
            .map(|(id, _)| id)
            .collect()
    }
}

/// Keys on which the forks disagree (a key missing from one fork counts).
fn conflicted_keys(forks: &[&StateMap]) -> bool {
    let Some((first, rest)) = forks.split_first() else {
        return false;
    };
    rest.iter().any(|f| {
        f.len() != first.len()
            || f.iter().any(|(k, e)| {
                first
                    .get(k)
                    .is_none_or(|other| other.event_id != e.event_id)
            })
    })
}

impl Services {
    /// The resolution of the room states `forks` of `room` (see the module
    /// docs); `fresh` holds events not stored yet that the forks' events
    /// may name. Forks that agree need no resolution.
    pub(super) fn resolve_forks(
        &self,
        room: &Room,
        rules: &RoomVersionRules,
        forks: &[&StateMap],
        fresh: &HashMap<OwnedEventId, Arc<PduEvent>>,
    ) -> Result<StateMap> {
        if !conflicted_keys(forks) {
            return Ok(forks.first().map(|f| (*f).clone()).unwrap_or_default());
        }
        let Some(v2) = rules.state_res.v2_rules() else {
            return Err(Error::UnsupportedRoomVersion(format!(
                "Room version {} resolves state with the first algorithm, which Hotline does not run",
                room.version
            )));
        };
        let events = Events::new(self, forks, fresh);
        let maps: Vec<ruma::state_res::StateMap<OwnedEventId>> = forks
            .iter()
            .map(|f| {
                f.iter()
                    .map(|((t, k), e)| {
                        (
                            (StateEventType::from(t.as_str()), k.clone()),
                            e.event_id.clone(),
                        )
                    })
                    .collect()
            })
            .collect();
        let chains: Vec<EventIdSet<OwnedEventId>> = forks
            .iter()
            .map(|f| {
                events
                    .auth_chain(f.values().map(|e| e.event_id.clone()))
                    .into_iter()
                    .collect()
            })
            .collect();
        let resolved = ruma::state_res::resolve(
            &rules.authorization,
            v2,
            maps.iter(),
            chains,
            |id: &EventId| events.get(id),
            |conflicted: &ruma::state_res::StateMap<Vec<OwnedEventId>>| {
                let set: HashSet<OwnedEventId> = conflicted.values().flatten().cloned().collect();
                Some(events.conflicted_subgraph(&set))
            },
        )
        .map_err(|e| Error::forbidden(format!("The room's state could not be resolved: {e}")))?;
        let mut out = StateMap::with_capacity(resolved.len());
        for ((t, k), id) in resolved {
            let e = events.get(&id).ok_or_else(|| {
                Error::Unavailable(format!("A resolved state event is not stored: {id}"))
            })?;
            out.insert((t.to_string(), k), e);
        }
        tracing::info!(room_id = %room.id, forks = forks.len(), "forked room state resolved");
        Ok(out)
    }

    /// The room's state after `id` (see the module docs for where it comes
    /// from); `None` for an event this server does not have. `batch` holds
    /// the states after the forking events of the batch being appended.
    pub(super) fn state_after(
        &self,
        room: &Room,
        inner: &RoomInner,
        id: &EventId,
        batch: &HashMap<OwnedEventId, Arc<StateMap>>,
    ) -> Result<Option<Arc<StateMap>>> {
        if let Some(s) = batch.get(id).or_else(|| inner.fork_states.get(id)) {
            return Ok(Some(s.clone()));
        }
        let Some(row) = self.store.get_event(id.as_str())? else {
            return Ok(None);
        };
        if row.room_id != room.id.as_str() {
            return Ok(None);
        }
        if row.pos >= inner.last_state_pos {
            return Ok(Some(Arc::new(inner.state.clone())));
        }
        let mut state = StateMap::new();
        for row in self.store.room_state_at(room.id.as_str(), row.pos, None)? {
            let e = Arc::new(self.load_event(&row)?);
            if let Some(k) = &e.pdu.state_key {
                state.insert((e.pdu.kind.to_string(), k.clone()), e);
            }
        }
        Ok(Some(Arc::new(state)))
    }
}
