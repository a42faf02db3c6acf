//! History visibility: which of a room's events a user may see.
//!
//! The spec's rule, applied to each event with the `m.room.history_visibility`
//! in force at it (the state before it) and the user's membership at it:
//! 1. `world_readable`: anyone may see it;
//! 2. the user was joined: they may see it;
//! 3. `shared`, and the user joined at any point after it: they may see it;
//! 4. `invited`, and the user was invited: they may see it;
//! 5. otherwise not.
//!
//! As Synapse does, a user's own membership event counts with the more
//! privileged of the membership before and after it (so a joiner sees their
//! join, a leaver their leave), and a visibility change is judged with the
//! more open of the old and new settings.
//!
//! Two kinds of former member count as never having been in the room, as in
//! Synapse: one who forgot it, and one banned without ever having joined
//! (they read nothing of it, not even their own ban). Like anyone, they
//! still read what is world-readable.
//!
//! Both inputs are short histories (the room's visibility changes, the
//! user's membership changes in that room), read by index per request, so
//! the check costs no more as the room's history grows. Between two of those
//! changes the verdict is the same for every event, so readers page through
//! [`Visibility::visible_runs`] and never scan what the user cannot see.

use std::sync::Arc;

use ruma::UserId;
use serde_json::Value;

use super::Room;
use crate::pdu::PduEvent;
use crate::{Error, Result, Services};

/// `m.room.history_visibility`, ordered from the most closed to the most open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum HistoryVisibility {
    Joined,
    Invited,
    Shared,
    WorldReadable,
}

impl HistoryVisibility {
    /// Unknown values are read as the most closed setting.
    fn parse(s: Option<&str>) -> Self {
        match s {
            Some("world_readable") => Self::WorldReadable,
            Some("shared") => Self::Shared,
            Some("invited") => Self::Invited,
            _ => Self::Joined,
        }
    }
}

/// A membership, ordered from the least to the most privileged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Membership {
    Ban,
    Leave,
    Knock,
    Invite,
    Join,
}

impl Membership {
    fn parse(s: Option<&str>) -> Self {
        match s {
            Some("join") => Self::Join,
            Some("invite") => Self::Invite,
            Some("knock") => Self::Knock,
            Some("ban") => Self::Ban,
            _ => Self::Leave,
        }
    }
}

/// What one user may see of one room's history.
#[derive(Clone, Debug, Default)]
pub(crate) struct Visibility {
    /// Positions of the room's history visibility events and their values,
    /// oldest first.
    history: Vec<(i64, HistoryVisibility)>,
    /// Positions of the user's membership events in the room and their
    /// values, oldest first.
    memberships: Vec<(i64, Membership)>,
    /// Position of the user's latest join, [`i64::MIN`] if they never
    /// joined.
    last_join: i64,
}

impl Visibility {
    pub(crate) fn new(
        history: Vec<(i64, HistoryVisibility)>,
        mut memberships: Vec<(i64, Membership)>,
    ) -> Self {
        let banned = memberships
            .last()
            .is_some_and(|(_, m)| *m == Membership::Ban);
        if banned && !memberships.iter().any(|(_, m)| *m == Membership::Join) {
            // Banned before ever joining: an outsider, not a former member.
            memberships.clear();
        }
        let last_join = memberships
            .iter()
            .rev()
            .find(|(_, m)| *m == Membership::Join)
            .map_or(i64::MIN, |(p, _)| *p);
        Visibility {
            history,
            memberships,
            last_join,
        }
    }

    /// Whether the user counts as a former or present member: some
    /// membership, not forgotten, and not banned without ever joining.
    pub(crate) fn is_member_once(&self) -> bool {
        !self.memberships.is_empty()
    }

    /// Whether the user may see anything at all: they have had some
    /// membership in the room, or it has been world-readable at some time.
    pub(crate) fn may_see_any(&self) -> bool {
        !self.memberships.is_empty()
            || self
                .history
                .iter()
                .any(|(_, h)| *h == HistoryVisibility::WorldReadable)
    }

    fn before<T: Copy>(list: &[(i64, T)], pos: i64) -> Option<T> {
        let i = list.partition_point(|(p, _)| *p < pos);
        i.checked_sub(1).map(|i| list[i].1)
    }

    fn exactly<T: Copy>(list: &[(i64, T)], pos: i64) -> Option<T> {
        list.binary_search_by_key(&pos, |(p, _)| *p)
            .ok()
            .map(|i| list[i].1)
    }

    /// Whether the user may see the room's event at `pos`.
    pub(crate) fn allows(&self, pos: i64) -> bool {
        // No visibility event yet: the spec's default, `shared`. Except in
        // a past fetched from another server (negative positions, below
        // the state a join brought): what was in force there is unknown
        // here, so the oldest setting known after it stands for it.
        let before =
            Self::before(&self.history, pos).unwrap_or_else(|| match self.history.first() {
                Some((_, oldest)) if pos < 0 => *oldest,
                _ => HistoryVisibility::Shared,
            });
        let visibility = match Self::exactly(&self.history, pos) {
            Some(new) => before.max(new),
            None => before,
        };
        if visibility == HistoryVisibility::WorldReadable {
            return true;
        }
        let before = Self::before(&self.memberships, pos).unwrap_or(Membership::Leave);
        let membership = match Self::exactly(&self.memberships, pos) {
            // One's own membership events are always shown to one: the
            // invite, its rejection, the kick, the ban and the unban tell
            // the user nothing but their own standing.
            Some(_) => return true,
            None => before,
        };
        match membership {
            Membership::Join => true,
            _ if visibility == HistoryVisibility::Shared => self.last_join > pos,
            Membership::Invite => visibility == HistoryVisibility::Invited,
            _ => false,
        }
    }

    /// The ranges `(first, last)` of positions within `lo..=hi` (ascending,
    /// disjoint) outside which the user can see no event. The verdict only
    /// changes at a visibility or membership event, so each stretch between
    /// two is judged once.
    pub(crate) fn visible_runs(&self, lo: i64, hi: i64) -> Vec<(i64, i64)> {
        let mut changes: Vec<i64> = self
            .history
            .iter()
            .map(|(p, _)| *p)
            .chain(self.memberships.iter().map(|(p, _)| *p))
            .filter(|p| (lo..=hi).contains(p))
            .collect();
        changes.sort_unstable();
        changes.dedup();
        let mut runs: Vec<(i64, i64)> = Vec::new();
        let mut push = |a: i64, b: i64| match runs.last_mut() {
            Some(last) if last.1 + 1 >= a => last.1 = b,
            _ => runs.push((a, b)),
        };
        let mut next = lo;
        for change in changes {
            if next < change && self.allows(next) {
                push(next, change - 1);
            }
            if self.allows(change) {
                push(change, change);
            }
            next = change + 1;
        }
        if next <= hi && self.allows(next) {
            push(next, hi);
        }
        runs
    }
}

/// The string at `content.<key>` of a stored event's JSON.
fn content_str(json: &str, key: &str) -> Option<String> {
    let v: Value = serde_json::from_str(json).ok()?;
    v.get("content")?.get(key)?.as_str().map(str::to_owned)
}

impl Services {
    /// What `user` may see of `room`'s history: two reads by index, the
    /// room's visibility changes and the user's membership changes.
    pub(crate) fn visibility(&self, room: &Room, user: &UserId) -> Result<Visibility> {
        let history = self
            .store
            .state_history(room.id.as_str(), "m.room.history_visibility", "")?
            .iter()
            .map(|r| {
                let v = content_str(&r.json, "history_visibility");
                (r.pos, HistoryVisibility::parse(v.as_deref()))
            })
            .collect();
        // A room the user forgot is as if they had never been in it.
        let memberships = if self.remembers_room(user, &room.id)? {
            self.store
                .state_history(room.id.as_str(), "m.room.member", user.as_str())?
                .iter()
                .map(|r| {
                    let m = content_str(&r.json, "membership");
                    (r.pos, Membership::parse(m.as_deref()))
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Visibility::new(history, memberships))
    }

    /// Whether `room` is among `user`'s rooms: any membership, not forgotten.
    fn remembers_room(&self, user: &UserId, room_id: &ruma::RoomId) -> Result<bool> {
        let cached = self.rooms.memberships.lock().get(user).cloned();
        Ok(match cached {
            Some(rooms) => rooms.read().rooms.contains_key(room_id),
            None => self.user_rooms(user)?.rooms.contains_key(room_id),
        })
    }

    /// Like [`Services::visibility`], refusing a user who may see nothing
    /// of the room (never a member, never world-readable).
    pub(crate) fn visibility_or_forbidden(&self, room: &Room, user: &UserId) -> Result<Visibility> {
        let v = self.visibility(room, user)?;
        if v.may_see_any() {
            Ok(v)
        } else {
            Err(Error::forbidden("You are not in this room"))
        }
    }

    /// Which state `user` reads in `room`: `None` for the current state (a
    /// joined member, or anyone while the room is world-readable), the
    /// position of their leave, kick or ban for a former member; others
    /// (never in the room, forgot it, banned without ever joining) are
    /// refused.
    pub(crate) fn state_position(&self, room: &Room, user: &UserId) -> Result<Option<i64>> {
        if room.is_joined(user) {
            return Ok(None);
        }
        let world_readable = room
            .state_event("m.room.history_visibility", "")
            .and_then(|e| e.content::<Value>().ok())
            .is_some_and(|c| c["history_visibility"] == "world_readable");
        if world_readable {
            return Ok(None);
        }
        let member = room.state_event("m.room.member", user.as_str());
        let departed = member.filter(|e| {
            e.content::<Value>()
                .ok()
                .is_some_and(|c| matches!(c["membership"].as_str(), Some("leave" | "ban")))
        });
        match departed {
            Some(e) if self.visibility(room, user)?.is_member_once() => Ok(Some(e.pos())),
            _ => Err(Error::forbidden("You are not in this room")),
        }
    }

    /// For a timeline of `room` with positions above `after`: `None` when
    /// `user` may see all of it (joined now, since before `after`; decided
    /// on the room cache, no read), else their [`Visibility`], to check
    /// each event with [`Visibility::allows`] before any limit.
    pub(crate) fn timeline_visibility(
        &self,
        room: &Room,
        user: &UserId,
        after: i64,
    ) -> Result<Option<Visibility>> {
        // The common case, from the cache alone: joined, and no membership
        // event at all since `after`.
        if room.is_joined(user) && room.last_member_pos() <= after {
            return Ok(None);
        }
        let joined_since = room
            .state_event("m.room.member", user.as_str())
            .filter(|_| room.is_joined(user))
            .map(|e| e.pos());
        match joined_since {
            Some(join) if join <= after => Ok(None),
            _ => self.visibility(room, user).map(Some),
        }
    }

    /// The events of `room` that `user` may see by the room's history
    /// visibility, in their order. A member whose current join is older
    /// than every event is answered without a read.
    pub fn visible_events(
        &self,
        room: &Room,
        user: &UserId,
        mut events: Vec<Arc<PduEvent>>,
    ) -> Result<Vec<Arc<PduEvent>>> {
        let Some(oldest) = events.iter().map(|e| e.pos()).min() else {
            return Ok(events);
        };
        if let Some(v) = self.timeline_visibility(room, user, oldest - 1)? {
            events.retain(|e| v.allows(e.pos()));
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::HistoryVisibility::*;
    use super::Membership::*;
    use super::*;

    /// Which of positions 1..=40 the user may see. Before the first
    /// visibility event (and at it, the more open of the two) the default,
    /// `shared`, holds.
    fn visible(
        history: &[(i64, HistoryVisibility)],
        memberships: &[(i64, Membership)],
    ) -> Vec<i64> {
        let v = Visibility::new(history.to_vec(), memberships.to_vec());
        (1..=40).filter(|p| v.allows(*p)).collect()
    }

    fn runs_agree(history: &[(i64, HistoryVisibility)], memberships: &[(i64, Membership)]) {
        let v = Visibility::new(history.to_vec(), memberships.to_vec());
        let from_runs: Vec<i64> = v
            .visible_runs(1, 40)
            .into_iter()
            .flat_map(|(a, b)| a..=b)
            .collect();
        assert_eq!(from_runs, visible(history, memberships));
    }

    #[test]
    fn joined_visibility_shows_only_what_happened_while_joined() {
        let h = [(2, Joined)];
        let m = [(10, Join), (20, Leave)];
        let expected: Vec<i64> = [1, 2].into_iter().chain(10..=20).collect();
        assert_eq!(visible(&h, &m), expected);
        runs_agree(&h, &m);
    }

    #[test]
    fn shared_visibility_shows_everything_before_the_last_join_and_while_joined() {
        let h = [(2, Shared)];
        assert_eq!(visible(&h, &[(10, Join)]), (1..=40).collect::<Vec<_>>());
        assert_eq!(
            visible(&h, &[(10, Join), (20, Leave)]),
            (1..=20).collect::<Vec<_>>()
        );
        runs_agree(&h, &[(10, Join), (20, Leave)]);
        // Invited but never joined: nothing under `shared` but the invite.
        assert_eq!(visible(&h, &[(10, Invite)]), [10]);
        runs_agree(&h, &[(10, Invite)]);
    }

    #[test]
    fn ones_own_membership_events_are_always_visible() {
        let h = [(2, Joined)];
        // Banned, then unbanned while out of the room: both are shown.
        let m = [(10, Join), (20, Ban), (30, Leave)];
        let expected: Vec<i64> = [1, 2].into_iter().chain(10..=20).chain([30]).collect();
        assert_eq!(visible(&h, &m), expected);
        runs_agree(&h, &m);
    }

    #[test]
    fn a_banned_user_who_never_joined_sees_nothing_but_world_readable_events() {
        let v = Visibility::new(vec![(2, Shared)], vec![(10, Invite), (20, Ban)]);
        assert!(!v.may_see_any() && !v.is_member_once());
        assert_eq!(
            visible(&[(2, Invited)], &[(10, Invite), (20, Ban)]),
            Vec::<i64>::new()
        );
        assert_eq!(visible(&[(2, Shared)], &[(20, Ban)]), Vec::<i64>::new());
        let h = [(2, Joined), (12, WorldReadable), (18, Joined)];
        assert_eq!(visible(&h, &[(5, Ban)]), (12..=18).collect::<Vec<_>>());
        runs_agree(&h, &[(5, Ban)]);
        // Banned after joining: still a former member, who sees up to the ban.
        let v = Visibility::new(vec![(2, Joined)], vec![(10, Join), (20, Ban)]);
        assert!(v.is_member_once());
    }

    #[test]
    fn invited_visibility_shows_history_from_the_invite() {
        let h = [(2, Invited)];
        let m = [(10, Invite), (15, Join), (30, Ban)];
        let expected: Vec<i64> = [1, 2].into_iter().chain(10..=30).collect();
        assert_eq!(visible(&h, &m), expected);
        runs_agree(&h, &m);
    }

    #[test]
    fn visibility_changes_apply_from_the_next_event_and_world_readable_is_for_everyone() {
        let h = [(2, Joined), (12, WorldReadable), (18, Joined)];
        // Never a member: only the world-readable stretch, the change to it
        // and the change away from it.
        assert_eq!(visible(&h, &[]), (12..=18).collect::<Vec<_>>());
        runs_agree(&h, &[]);
        runs_agree(&h, &[(5, Invite), (25, Join), (35, Leave)]);
    }
}
