//! A room's `timeline` for one response: the newest `limit` events in a
//! position range that pass the timeline filter and history visibility,
//! both applied before the limit so that `limited` and `prev_batch`
//! describe what the client asked for.
//!
//! The limit is clamped to 1..=500. Within the room's in-memory window the
//! events are filtered there; below it they are read back from the store,
//! in batches of 100 rows when a filter may skip rows, and at most 500 rows
//! per timeline: past that it is `limited`, and `prev_batch` continues from
//! where the scan stopped.

use std::sync::Arc;

use ruma::UserId;

use super::RoomEventFilter;
use crate::pdu::PduEvent;
use crate::rooms::Room;
use crate::{Result, Services};

/// Rows read per store query when a filtered timeline is looked for below
/// the in-memory window, and the most rows one timeline reads: past that,
/// it is `limited` and `prev_batch` continues from where it stopped.
const TIMELINE_SCAN_BATCH: usize = 100;
const TIMELINE_SCAN_MAX: usize = 500;

/// A room's timeline for one response.
pub(super) struct Window {
    pub(super) events: Vec<Arc<PduEvent>>,
    /// Matching events older than `events` were left out (or not looked at).
    pub(super) limited: bool,
    /// The position `prev_batch` paginates back from, when known.
    pub(super) prev: Option<i64>,
}

impl Window {
    pub(super) fn empty() -> Self {
        Window {
            events: Vec::new(),
            limited: false,
            prev: None,
        }
    }
}

impl Services {
    /// The events of `room` with `after < pos <= upto` that pass `filter`,
    /// the newest `limit` of them, and whether older matching ones were
    /// left out. The filter runs before the limit, so `limited` and
    /// `prev_batch` describe the filtered timeline. `known` are the events
    /// of that range when the caller already holds them.
    #[allow(clippy::too_many_arguments)] // two callers; a struct would only rename them
    pub(super) fn timeline_window(
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
}
