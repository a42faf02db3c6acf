//! Lazy-loaded members: the `m.room.member` events a lazy-loading client
//! needs for a timeline (its senders' and the heroes', as of the start of
//! the timeline), minus those this device was already sent. "Already sent"
//! is kept per device in the sync caches (`cache.rs`) and counts only once
//! the client's `since` has passed the response that carried it, so a lost
//! response re-sends them (`include_redundant_members` sends all).
//!
//! A member's event as of the timeline's start is found by stepping back
//! through their earlier member events (each a few reads of auth events),
//! at most 4 steps.

use std::sync::Arc;

use ruma::events::TimelineEventType;
use ruma::{OwnedUserId, UserId};

use super::cache::member_key;
use super::SyncFilter;
use crate::accounts::Sender;
use crate::pdu::PduEvent;
use crate::rooms::Room;
use crate::{Result, Services};

/// Steps back through a member's earlier member events (each a few reads
/// of auth events) to find the one in force at the start of a timeline.
const MEMBER_WALK: usize = 4;

/// Whether `e` is `user`'s member event.
fn is_member_event_of(e: &PduEvent, user: &UserId) -> bool {
    e.pdu.kind == TimelineEventType::RoomMember && e.pdu.state_key.as_deref() == Some(user.as_str())
}

impl Services {
    /// The member events a lazy-loading client needs for `timeline`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn lazy_members(
        &self,
        sender: &Sender,
        room: &Room,
        filter: &SyncFilter,
        since: Option<i64>,
        upto: i64,
        full: bool,
        timeline: &[Arc<PduEvent>],
        heroes: &[OwnedUserId],
        state: &[Arc<PduEvent>],
    ) -> Result<Vec<Arc<PduEvent>>> {
        let (user, device) = (&*sender.user_id, &*sender.device_id);
        let redundant = filter.redundant_members();
        // Only an incremental view of a room the client already holds skips
        // what it was sent; a full one sends every member it needs.
        let skip_sent = !redundant && !full;
        let since_pos = since.unwrap_or(0);
        let start = timeline.first().map_or(upto + 1, |e| e.pos());
        let mut wanted: Vec<&UserId> = Vec::new();
        if full {
            wanted.push(user);
        }
        // The timeline's senders, and the heroes a client names the room
        // after (the spec requires their member events with lazy loading).
        let senders = timeline.iter().map(|e| &*e.pdu.sender);
        for s in senders.chain(heroes.iter().map(|h| &**h)) {
            if !wanted.contains(&s) {
                wanted.push(s);
            }
        }
        let last_member = room.last_member_pos();
        let mut out = Vec::new();
        for s in wanted {
            // A member event of theirs in the timeline before anything they
            // sent introduces them there.
            if timeline
                .iter()
                .find(|e| e.pdu.sender == s || is_member_event_of(e, s))
                .is_some_and(|e| is_member_event_of(e, s))
            {
                continue;
            }
            let sent = if skip_sent {
                self.filters
                    .lazy_sent(user, device, member_key(&room.id, s.as_str()))
                    .filter(|x| x.at <= since_pos)
            } else {
                None
            };
            // No member event at all since the one sent: still current.
            if sent.is_some_and(|x| last_member <= x.pos) {
                continue;
            }
            let Some(m) = self.member_at(room, s, start)? else {
                continue;
            };
            if sent.is_some_and(|x| x.pos == m.pos())
                || timeline.iter().any(|e| e.event_id == m.event_id)
                || state.iter().any(|e| e.event_id == m.event_id)
                || !filter.state.matches(&m)
            {
                continue;
            }
            out.push(m);
        }
        if !redundant {
            // Whatever member events this response carries, the device has.
            let sent: Vec<(u64, i64)> = out
                .iter()
                .chain(state)
                .chain(timeline)
                .filter(|e| e.pdu.kind == TimelineEventType::RoomMember)
                .filter_map(|e| {
                    let key = e.pdu.state_key.as_deref()?;
                    Some((member_key(&room.id, key), e.pos()))
                })
                .collect();
            self.filters.lazy_record(user, device, &sent, upto);
        }
        Ok(out)
    }

    /// The member event of `user` in force just before position `before`:
    /// the current one, or, when it changed since, an earlier one found
    /// through the auth events (a member event's auth events hold the
    /// target's previous one). When they had none before (they joined
    /// later), their first one; after a few steps, the oldest reached.
    fn member_at(&self, room: &Room, user: &UserId, before: i64) -> Result<Option<Arc<PduEvent>>> {
        let Some(mut m) = room.state_event("m.room.member", user.as_str()) else {
            return Ok(None);
        };
        for _ in 0..MEMBER_WALK {
            if m.pos() < before {
                break;
            }
            let mut prev = None;
            for id in &m.pdu.auth_events {
                let Some(row) = self.store.get_event(id.as_str())? else {
                    continue;
                };
                let e = PduEvent::from_row(&row)?;
                if is_member_event_of(&e, user) {
                    prev = Some(if row.redacted_by.is_some() {
                        self.load_event(&row)?
                    } else {
                        e
                    });
                    break;
                }
            }
            match prev {
                Some(p) => m = Arc::new(p),
                None => break,
            }
        }
        Ok(Some(m))
    }
}
