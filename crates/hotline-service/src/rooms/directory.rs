//! The published room directory: `/directory/list/room/{roomId}` and
//! `/publicRooms`.
//!
//! A room is listed while it is published (`createRoom` with `visibility:
//! public`, or `PUT /directory/list/room`) *and* anyone can find a way in:
//! its join rule is `public` or `knock`, or its history is world-readable
//! (as Synapse does). So a published room that turns invite-only drops out
//! of the list without being unpublished, and a private line never shows.
//! Entries are built from the room cache's current state.

use ruma::events::TimelineEventType;
use ruma::{OwnedRoomId, RoomId, UserId};
use serde::Serialize;
use serde_json::Value;

use super::Room;
use crate::{Error, Result, Services};

/// Rooms per `/publicRooms` page at most (and when no `limit` is given).
const MAX_PAGE: usize = 500;

/// One room of the directory (the spec's `PublishedRoomsChunk`).
#[derive(Debug, Serialize)]
pub struct PublicRoom {
    pub room_id: OwnedRoomId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canonical_alias: Option<String>,
    pub num_joined_members: u64,
    pub world_readable: bool,
    pub guest_can_join: bool,
    pub join_rule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

/// A page of the directory (the spec's `/publicRooms` response).
#[derive(Debug, Serialize)]
pub struct PublicRoomsPage {
    pub chunk: Vec<PublicRoom>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_batch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_batch: Option<String>,
    pub total_room_count_estimate: u64,
}

/// What a client asks `/publicRooms` for.
#[derive(Debug, Default)]
pub struct PublicRoomsQuery {
    pub limit: Option<u64>,
    pub since: Option<String>,
    /// The server whose directory is wanted; `None` is this one.
    pub server: Option<String>,
    pub search_term: Option<String>,
    /// Room types to keep (`None` in the list: rooms without a type).
    pub room_types: Option<Vec<Option<String>>>,
    pub include_all_networks: bool,
    pub third_party_instance_id: Option<String>,
}

/// Page tokens are offsets into the ordered list: `o{offset}`.
fn parse_since(since: &str) -> Result<usize> {
    since
        .strip_prefix('o')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::invalid_param("Invalid since token"))
}

/// A string field of a state event's content.
fn state_str(room: &Room, kind: &str, field: &str) -> Option<String> {
    let e = room.state_event(kind, "")?;
    let v: Value = e.content().ok()?;
    v.get(field)?.as_str().map(str::to_owned)
}

fn entry(room: &Room) -> PublicRoom {
    let join_rule =
        state_str(room, "m.room.join_rules", "join_rule").unwrap_or_else(|| "invite".into());
    PublicRoom {
        room_id: room.id.clone(),
        name: state_str(room, "m.room.name", "name").filter(|n| !n.is_empty()),
        topic: state_str(room, "m.room.topic", "topic").filter(|t| !t.is_empty()),
        canonical_alias: state_str(room, "m.room.canonical_alias", "alias"),
        num_joined_members: room.joined_members().len() as u64,
        world_readable: state_str(room, "m.room.history_visibility", "history_visibility")
            .as_deref()
            == Some("world_readable"),
        guest_can_join: state_str(room, "m.room.guest_access", "guest_access").as_deref()
            == Some("can_join"),
        join_rule,
        room_type: state_str(room, "m.room.create", "type"),
        avatar_url: state_str(room, "m.room.avatar", "url").filter(|u| u.starts_with("mxc://")),
    }
}

impl PublicRoom {
    /// Whether someone outside can get in or read along.
    fn discoverable(&self) -> bool {
        matches!(
            self.join_rule.as_str(),
            "public" | "knock" | "knock_restricted"
        ) || self.world_readable
    }

    fn matches(&self, q: &PublicRoomsQuery) -> bool {
        let term_ok = q.search_term.as_deref().map(str::trim).is_none_or(|t| {
            let t = t.to_lowercase();
            t.is_empty()
                || [&self.name, &self.topic, &self.canonical_alias]
                    .into_iter()
                    .flatten()
                    .any(|s| s.to_lowercase().contains(&t))
        });
        let type_ok = q
            .room_types
            .as_ref()
            .is_none_or(|types| types.contains(&self.room_type));
        term_ok && type_ok
    }
}

impl Services {
    /// `GET /directory/list/room/{roomId}`: whether the room is published.
    pub fn room_visibility(&self, room_id: &RoomId) -> Result<bool> {
        self.room(room_id)?;
        Ok(self.store.is_room_published(room_id.as_str())?)
    }

    /// `PUT /directory/list/room/{roomId}`: a joined member with the power
    /// to set the room's canonical alias, or its creator, may publish or
    /// unpublish it.
    pub async fn set_room_visibility(
        &self,
        user: &UserId,
        room_id: &RoomId,
        public: bool,
    ) -> Result<()> {
        let room = self.room(room_id)?;
        self.require_joined(&room, user)?;
        let pl = room.power_levels();
        let needed: i64 = pl
            .events
            .get(&TimelineEventType::RoomCanonicalAlias)
            .copied()
            .unwrap_or(pl.state_default)
            .into();
        let creator = room.creator().as_deref() == Some(user);
        if !creator && room.user_power(user) < needed {
            return Err(Error::forbidden(
                "You need the power to set the room's canonical alias to change its directory visibility",
            ));
        }
        self.store
            .write(hotline_store::WriteBatch::one(
                hotline_store::WriteOp::SetRoomPublished {
                    room_id: room_id.to_string(),
                    published: public,
                },
            ))
            .await?;
        Ok(())
    }

    /// `GET`/`POST /publicRooms`: published, discoverable rooms, most joined
    /// members first (then by room id, so pages are stable).
    pub fn public_rooms(&self, q: &PublicRoomsQuery) -> Result<PublicRoomsPage> {
        if let Some(server) = &q.server {
            if server.as_str() != self.server_name().as_str() {
                return Err(Error::invalid_param(
                    "This server does not federate: only its own directory can be listed",
                ));
            }
        }
        if q.include_all_networks && q.third_party_instance_id.is_some() {
            return Err(Error::invalid_param(
                "include_all_networks and third_party_instance_id exclude each other",
            ));
        }
        let start = q
            .since
            .as_deref()
            .map(parse_since)
            .transpose()?
            .unwrap_or(0);
        let limit = q
            .limit
            .map(|l| (l as usize).clamp(1, MAX_PAGE))
            .unwrap_or(MAX_PAGE);
        let mut rooms = Vec::new();
        // No bridged networks here: a third-party network lists nothing.
        if q.third_party_instance_id.is_none() {
            for id in self.store.published_rooms()? {
                let Ok(id) = RoomId::parse(&id) else { continue };
                let Ok(room) = self.room(&id) else { continue };
                let e = entry(&room);
                if e.discoverable() && e.matches(q) {
                    rooms.push(e);
                }
            }
        }
        rooms.sort_by(|a, b| {
            b.num_joined_members
                .cmp(&a.num_joined_members)
                .then_with(|| a.room_id.cmp(&b.room_id))
        });
        let total = rooms.len();
        let end = start.saturating_add(limit).min(total);
        let chunk: Vec<PublicRoom> = rooms.into_iter().skip(start).take(limit).collect();
        Ok(PublicRoomsPage {
            chunk,
            next_batch: (end < total).then(|| format!("o{end}")),
            prev_batch: (start > 0).then(|| format!("o{}", start.saturating_sub(limit))),
            total_room_count_estimate: total as u64,
        })
    }
}
