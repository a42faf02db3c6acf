//! A joined room's `unread_notifications`: the events after the user's read
//! marker (the newer of their `m.read` and `m.read.private` receipts) that
//! their push rules say notify, and those that also highlight. The rules
//! are matched by ruma's matcher (`push_rules::PushEval`): an event counts
//! when its first matching rule notifies, and highlights when that rule
//! sets `highlight`; so a muted room counts nothing, and notices, reactions
//! and edits nothing by the default rules, while encrypted events count
//! (their content cannot be matched).
//!
//! Counts are cached per user and room (`cache.rs`) and moved on by the
//! events each sync brings; they are counted afresh when the read marker
//! moves or the user's rules change (a generation in
//! `push_rules::RulesCache`), within the room's in-memory window or, when
//! the marker is older, the room's last 100 events.

use std::borrow::Cow;
use std::sync::Arc;

use ruma::UserId;
use serde::Deserialize;

use crate::pdu::PduEvent;
use crate::push_rules::PushEval;
use crate::rooms::Room;
use crate::{Result, Services};

/// A user's unread counts in a room, counted through `counted_upto`.
#[derive(Clone, Default)]
pub(super) struct Unread {
    /// Position of the event the user last read (0: none).
    marker: i64,
    /// The room's newest receipt position when `marker` was read.
    receipts_at: i64,
    counted_upto: i64,
    notifications: u64,
    highlights: u64,
    /// The room's newest member position when `name` was read.
    members_at: i64,
    /// The user's display name in the room (mentions by name).
    name: Option<Arc<str>>,
    /// The generation of the push rules the counts were taken under.
    rules_generation: u64,
    /// The push rules with the room's context, and what that context was
    /// built from: `(rules generation, members_at, power levels position)`.
    eval: Option<((u64, i64, i64), Arc<PushEval>)>,
}

/// Events read from the store to count unread messages when the read
/// marker is older than the room's in-memory window.
const UNREAD_SCAN: usize = 100;

impl Services {
    /// `(notification_count, highlight_count)` of `user` in `room` as of
    /// `upto`: the events after the user's read marker (the newer of their
    /// `m.read` and `m.read.private` receipts) whose push rules say
    /// `notify`, and those of them that also set `highlight`. Counted
    /// incrementally from the events each sync brings (`fresh`: the events
    /// after a position, when the caller holds them); counted afresh when the
    /// read marker moves or the user's rules change, within the in-memory
    /// window or the last `UNREAD_SCAN` events.
    pub(crate) fn unread_counts(
        &self,
        room: &Room,
        user: &UserId,
        upto: i64,
        fresh: Option<(i64, &[Arc<PduEvent>])>,
    ) -> Result<(u64, u64)> {
        let receipts_at = room.last_receipt_pos();
        let members_at = room.last_member_pos();
        let rules = self.push_rules_in_force(user)?;
        let cached = self.filters.unread_get(user, &room.id);
        let known = cached.is_some();
        let mut u = cached.unwrap_or_default();
        let mut recount = !known || u.rules_generation != rules.generation;
        let mut dirty = recount;
        u.rules_generation = rules.generation;
        if !known || u.receipts_at < receipts_at {
            dirty = true;
            let marker = self
                .store
                .read_marker_pos(room.id.as_str(), user.as_str())?
                .unwrap_or(0);
            recount |= marker != u.marker;
            u.marker = marker;
            u.receipts_at = receipts_at;
        }
        if !known || u.members_at < members_at {
            dirty = true;
            #[derive(Deserialize)]
            struct Name {
                displayname: Option<String>,
            }
            u.name = room
                .state_event("m.room.member", user.as_str())
                .and_then(|m| m.content::<Name>().ok())
                .and_then(|n| n.displayname)
                .filter(|n| !n.trim().is_empty())
                .map(Arc::from);
            u.members_at = members_at;
        }
        // The rules' context holds the room's power levels, member count and
        // the user's name: kept while none of them changed, and checked (or
        // built) on the first event from someone else, since most syncs
        // weigh none, or only the user's own.
        let mut eval = u.eval.take();
        let (mut checked, mut built) = (false, false);
        let mut weigh = |e: &PduEvent| -> (u64, u64) {
            if e.pdu.sender == user {
                return (0, 0);
            }
            if !checked {
                checked = true;
                let pl_at = room
                    .state_event("m.room.power_levels", "")
                    .map_or(0, |e| e.pos());
                let key = (rules.generation, members_at, pl_at);
                if eval.as_ref().is_none_or(|(k, _)| *k != key) {
                    let fresh = PushEval::new(rules.rules.clone(), room, user, u.name.as_deref());
                    eval = Some((key, Arc::new(fresh)));
                    built = true;
                }
            }
            let Some((_, eval)) = &eval else {
                return (0, 0);
            };
            let (notify, highlight) = eval.weigh(e);
            (notify as u64, (notify && highlight) as u64)
        };
        if !recount && u.counted_upto < upto {
            dirty = true;
            let new = match fresh {
                Some((from, events)) if from == u.counted_upto => Some(Cow::Borrowed(events)),
                _ => room.recent_window(u.counted_upto, upto).map(Cow::Owned),
            };
            match new {
                Some(events) => {
                    for e in events.iter() {
                        let (n, h) = weigh(e);
                        u.notifications += n;
                        u.highlights += h;
                    }
                    u.counted_upto = upto;
                }
                None => recount = true,
            }
        }
        if recount {
            let (mut n, mut h) = (0, 0);
            let mut add = |e: &PduEvent| {
                let (dn, dh) = weigh(e);
                n += dn;
                h += dh;
            };
            match room.recent_window(u.marker, upto) {
                Some(events) => events.iter().for_each(|e| add(e)),
                None => {
                    for row in
                        self.store
                            .room_events_backward(room.id.as_str(), upto + 1, UNREAD_SCAN)?
                    {
                        if row.pos > u.marker {
                            add(&PduEvent::from_row(&row)?);
                        }
                    }
                }
            }
            (u.notifications, u.highlights, u.counted_upto) = (n, h, upto);
        }
        u.eval = eval;
        dirty |= built;
        let counts = (u.notifications, u.highlights);
        if dirty || recount {
            self.filters.unread_put(user, &room.id, u);
        }
        Ok(counts)
    }
}
