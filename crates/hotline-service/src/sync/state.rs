//! A room's `state` for one response: the state up to the start of its
//! timeline that the client lacks. All of it for a room new to the client
//! (or with `full_state`), what changed since the token after a gap, and
//! otherwise only lazy-loaded members (`lazy_members.rs`).

use std::collections::HashSet;
use std::sync::Arc;

use ruma::events::TimelineEventType;
use ruma::{EventId, OwnedUserId};

use super::SyncFilter;
use crate::accounts::Sender;
use crate::pdu::PduEvent;
use crate::rooms::Room;
use crate::{Result, Services};

impl Services {
    /// The `state` of a room's entry: the state up to the start of
    /// `timeline` that the client lacks, as of position `upto`. `full`: all
    /// of it (a room new to the client, or `full_state`); after a gap
    /// (`limited`), what changed since `since`; otherwise nothing but
    /// lazy-loaded members. Everything passes the `state` filter.
    ///
    /// With lazy-loaded members, member events are sent only for the senders
    /// of the timeline (and, in a full view, the user), as of the start of
    /// the timeline, each once per device unless redundant members are
    /// asked for; after a gap, every member event of the gap is sent.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn room_state(
        &self,
        sender: &Sender,
        room: &Room,
        filter: &SyncFilter,
        since: Option<i64>,
        upto: i64,
        full: bool,
        limited: bool,
        timeline: &[Arc<PduEvent>],
        heroes: &[OwnedUserId],
    ) -> Result<Vec<Arc<PduEvent>>> {
        let sf = &filter.state;
        if sf.passes_none() || !sf.room_ok(room.id.as_str()) {
            return Ok(Vec::new());
        }
        let lazy = filter.lazy_members();
        let since_pos = since.unwrap_or(0);
        let start = timeline.first().map_or(upto + 1, |e| e.pos());
        let mut state = Vec::new();
        if full || limited {
            let in_timeline: HashSet<&EventId> = timeline.iter().map(|e| &*e.event_id).collect();
            // As of `upto`: a left room's state as it was at the leave, even
            // where it changed since (read from the store only then).
            for e in self.state_at(room, Some(upto), None)? {
                if e.pos() > upto
                    || (!full && e.pos() <= since_pos)
                    || in_timeline.contains(&*e.event_id)
                {
                    continue;
                }
                // Lazy: members are chosen below, except the gap's changes.
                if lazy && e.pdu.kind == TimelineEventType::RoomMember && (full || e.pos() >= start)
                {
                    continue;
                }
                if sf.matches(&e) {
                    state.push(e);
                }
            }
        }
        if lazy && (full || !timeline.is_empty() || !heroes.is_empty()) {
            let members = self.lazy_members(
                sender, room, filter, since, upto, full, timeline, heroes, &state,
            )?;
            state.extend(members);
        }
        Ok(state)
    }
}
