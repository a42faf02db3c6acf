//! A joined room's `summary`: its joined and invited member counts and,
//! when it has neither a name nor a canonical alias, its heroes (at most
//! the spec's five), whom clients name the room after and whose member
//! events a lazy-loading client is sent. It comes whole when the room is
//! new to the client or its members or name changed, and is left out
//! otherwise (which the spec reads as unchanged).

use ruma::events::room::member::MembershipState;
use ruma::events::TimelineEventType;
use ruma::{OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::json;

use crate::rooms::Room;

/// A room's `summary`: member counts and heroes.
pub(super) struct Summary {
    pub(super) joined: usize,
    pub(super) invited: usize,
    pub(super) heroes: Vec<OwnedUserId>,
}

/// Heroes a summary names at most (the spec's "first 5 members").
const HEROES: usize = 5;

/// The state a room is named by; without either, clients name it after its
/// heroes.
pub(super) const NAMED_BY: [&str; 2] = ["m.room.name", "m.room.canonical_alias"];

impl Summary {
    pub(super) fn to_json(&self) -> serde_json::Value {
        json!({
            "m.heroes": self.heroes,
            "m.joined_member_count": self.joined,
            "m.invited_member_count": self.invited,
        })
    }
}

/// The summary `user` is shown of `room`: the counts of joined and invited
/// members and, when the room has neither a name nor a canonical alias, its
/// heroes, whom clients name the room after: the first five other joined or
/// invited members by the order of their member events (or, when there are
/// none, the first five who left or were banned). A named room has none, as
/// in Synapse: a lazy-loading client is then not sent their member events.
pub(super) fn room_summary(room: &Room, user: &UserId) -> Summary {
    #[derive(Deserialize)]
    struct Member {
        membership: MembershipState,
    }
    #[derive(Deserialize)]
    struct Named {
        name: Option<String>,
        alias: Option<String>,
    }
    let named = NAMED_BY.iter().any(|k| {
        room.state_event(k, "")
            .and_then(|e| e.content::<Named>().ok())
            .is_some_and(|c| c.name.or(c.alias).is_some_and(|n| !n.is_empty()))
    });
    let (mut joined, mut invited) = (0, 0);
    let mut present: Vec<(i64, &UserId)> = Vec::new();
    let mut gone: Vec<(i64, &UserId)> = Vec::new();
    let state = room.state();
    for e in &state {
        if e.pdu.kind != TimelineEventType::RoomMember {
            continue;
        }
        let (Some(key), Ok(m)) = (e.pdu.state_key.as_deref(), e.content::<Member>()) else {
            continue;
        };
        let Ok(member) = <&UserId>::try_from(key) else {
            continue;
        };
        let here = match m.membership {
            MembershipState::Join => {
                joined += 1;
                true
            }
            MembershipState::Invite => {
                invited += 1;
                true
            }
            MembershipState::Leave | MembershipState::Ban => false,
            _ => continue,
        };
        if member != user && !named {
            if here { &mut present } else { &mut gone }.push((e.pos(), member));
        }
    }
    let mut heroes = if present.is_empty() { gone } else { present };
    heroes.sort_unstable();
    Summary {
        joined,
        invited,
        heroes: heroes
            .into_iter()
            .take(HEROES)
            .map(|(_, u)| u.to_owned())
            .collect(),
    }
}
