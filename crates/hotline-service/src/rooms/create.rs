//! `createRoom`: the initial events of a room, committed in one transaction.

use std::sync::Arc;

use hotline_store::{AliasRow, RoomRow, WriteBatch, WriteOp};
use parking_lot::RwLock;
use ruma::events::room::member::{MembershipState, RoomMemberEventContent};
use ruma::events::TimelineEventType;
use ruma::{OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, RoomVersionId, UserId};
use serde_json::{json, Map, Value as JsonValue};

use super::{build_events, Room, RoomInner};
use crate::pdu::EventDraft;
use crate::policy::{Origin, Seam};
use crate::{Error, Result, Services};

/// What a client asked `createRoom` for, already typed.
#[derive(Default)]
pub struct CreateRoom {
    pub preset: Option<String>,
    pub visibility_public: bool,
    pub is_direct: bool,
    pub invite: Vec<OwnedUserId>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub room_alias_name: Option<String>,
    pub room_version: Option<String>,
    pub creation_content: Option<Map<String, JsonValue>>,
    pub power_level_content_override: Option<Map<String, JsonValue>>,
    /// `(type, state_key, content)`.
    pub initial_state: Vec<(String, String, JsonValue)>,
}

/// The power each event type needs in a new room, before a client's
/// `power_level_content_override`.
pub(crate) fn default_event_power() -> JsonValue {
    json!({
        "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
        "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
        "m.room.server_acl": 100, "m.room.encryption": 100
    })
}

fn draft(kind: &str, state_key: &str, content: JsonValue) -> Result<EventDraft> {
    EventDraft::new(
        TimelineEventType::from(kind),
        &content,
        Some(state_key.to_owned()),
    )
}

impl Services {
    /// Creates a room with `creator` joined; returns its id once committed.
    pub async fn create_room(&self, creator: &UserId, req: CreateRoom) -> Result<OwnedRoomId> {
        self.create_room_as(
            creator,
            req,
            Origin::Client,
            |_| Vec::new(),
            || Error::RoomInUse,
        )
        .await
    }

    /// [`create_room`] as `origin`, with the ops `extra` makes for the new
    /// room's id committed in the same transaction as the room (a line's
    /// row, its invite's use); a conflict in that transaction is answered
    /// with `conflict()`.
    pub(crate) async fn create_room_as(
        &self,
        creator: &UserId,
        req: CreateRoom,
        origin: Origin,
        extra: impl FnOnce(&RoomId) -> Vec<WriteOp>,
        conflict: impl FnOnce() -> Error,
    ) -> Result<OwnedRoomId> {
        let version = match req.room_version.as_deref() {
            None => RoomVersionId::V11,
            Some(v) => {
                let v = RoomVersionId::try_from(v)
                    .map_err(|_| Error::UnsupportedRoomVersion("Unknown room version".into()))?;
                if !matches!(
                    v,
                    RoomVersionId::V10 | RoomVersionId::V11 | RoomVersionId::V12
                ) {
                    return Err(Error::UnsupportedRoomVersion(format!(
                        "Room version {v} is not supported"
                    )));
                }
                v
            }
        };
        let authorization = crate::pdu::rules(&version)?.authorization;
        let alias = match &req.room_alias_name {
            Some(local) => {
                let alias = RoomAliasId::parse(format!("#{local}:{}", self.server_name()))
                    .map_err(|_| Error::invalid_param("Invalid room alias"))?;
                if self.store.get_alias(alias.as_str())?.is_some() {
                    return Err(Error::RoomInUse);
                }
                Some(alias)
            }
            None => None,
        };
        // Users of other servers are invited once the room exists (their
        // server signs the invite first).
        let (local_invites, remote_invites): (Vec<OwnedUserId>, Vec<OwnedUserId>) = req
            .invite
            .iter()
            .cloned()
            .partition(|u| u.server_name() == self.server_name());
        for u in &local_invites {
            if !self.user_exists(u)? {
                return Err(Error::not_found(format!("Unknown user {u}")));
            }
        }
        if !remote_invites.is_empty() {
            for u in &remote_invites {
                self.federation_peer(u.server_name())?;
            }
        }
        let preset = req.preset.clone().unwrap_or_else(|| {
            if req.visibility_public {
                "public_chat".into()
            } else {
                "private_chat".into()
            }
        });
        if !matches!(
            preset.as_str(),
            "public_chat" | "private_chat" | "trusted_private_chat"
        ) {
            return Err(Error::invalid_param("Unknown preset"));
        }

        let mut drafts = Vec::new();
        let mut create = req.creation_content.clone().unwrap_or_default();
        create.insert("room_version".into(), json!(version.as_str()));
        if version == RoomVersionId::V10 {
            create.insert("creator".into(), json!(creator));
        }
        // From room version 12 creators hold a power above every level and
        // may not be listed in the power levels; a trusted chat's invitees
        // are made creators too, as Synapse does.
        let privileged_creators = authorization.explicitly_privilege_room_creators;
        if privileged_creators && preset == "trusted_private_chat" && !req.invite.is_empty() {
            create.insert("additional_creators".into(), json!(req.invite));
        }
        drafts.push(draft("m.room.create", "", JsonValue::Object(create))?);

        let profile = self.store.get_user(creator.as_str())?;
        let mut member = json!({"membership": "join"});
        if let Some(p) = &profile {
            if let Some(d) = &p.displayname {
                member["displayname"] = json!(d);
            }
            if let Some(a) = &p.avatar_url {
                member["avatar_url"] = json!(a);
            }
        }
        drafts.push(draft("m.room.member", creator.as_str(), member)?);

        let mut users = Map::new();
        if !privileged_creators {
            users.insert(creator.to_string(), json!(100));
            if preset == "trusted_private_chat" {
                for u in &req.invite {
                    users.insert(u.to_string(), json!(100));
                }
            }
        }
        let mut power = json!({
            "users": users,
            "users_default": 0,
            "events": default_event_power(),
            "events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0,
            "notifications": {"room": 50}
        });
        if let Some(over) = &req.power_level_content_override {
            for (k, v) in over {
                power[k] = v.clone();
            }
        }
        drafts.push(draft("m.room.power_levels", "", power)?);
        if let Some(alias) = &alias {
            drafts.push(draft(
                "m.room.canonical_alias",
                "",
                json!({"alias": alias}),
            )?);
        }
        let join_rule = if preset == "public_chat" {
            "public"
        } else {
            "invite"
        };
        drafts.push(draft(
            "m.room.join_rules",
            "",
            json!({"join_rule": join_rule}),
        )?);
        drafts.push(draft(
            "m.room.history_visibility",
            "",
            json!({"history_visibility": "shared"}),
        )?);
        if preset != "public_chat" {
            drafts.push(draft(
                "m.room.guest_access",
                "",
                json!({"guest_access": "can_join"}),
            )?);
        }
        for (kind, key, content) in &req.initial_state {
            if kind == "m.room.create" || kind == "m.room.member" {
                return Err(Error::invalid_param(
                    "initial_state may not set m.room.create or m.room.member",
                ));
            }
            drafts.push(draft(kind, key, content.clone())?);
        }
        if let Some(name) = &req.name {
            if name.len() > 255 {
                return Err(Error::invalid_param("Room name too long"));
            }
            drafts.push(draft("m.room.name", "", json!({"name": name}))?);
        }
        if let Some(topic) = &req.topic {
            drafts.push(draft("m.room.topic", "", json!({"topic": topic}))?);
        }
        for u in &local_invites {
            let mut content = json!({"membership": "invite"});
            if req.is_direct {
                content["is_direct"] = json!(true);
            }
            if let Some(p) = self.store.get_user(u.as_str())? {
                if let Some(d) = p.displayname {
                    content["displayname"] = json!(d);
                }
            }
            drafts.push(draft("m.room.member", u.as_str(), content)?);
        }

        let seam = Seam {
            services: self,
            origin,
        };
        // The create event is built first: from room version 12 its id
        // names the room (the id proposed here is then not used), and the
        // other events are built on top of it.
        let create = drafts.remove(0);
        let mut built = build_events(
            &version,
            &RoomId::new_v1(self.server_name()),
            &Default::default(),
            Vec::new(),
            creator,
            vec![create],
            None,
            None,
            Some(&seam),
        )?;
        let create = built[0].0.clone();
        let room_id = create.room_id.clone();
        let base: super::StateMap =
            [(("m.room.create".to_owned(), String::new()), create.clone())].into();
        built.extend(build_events(
            &version,
            &room_id,
            &base,
            vec![(create.event_id.clone(), create.pdu.depth)],
            creator,
            drafts,
            None,
            None,
            Some(&seam),
        )?);
        let room = Arc::new(Room {
            id: room_id.clone(),
            version: version.clone(),
            send_lock: tokio::sync::Mutex::new(()),
            inner: RwLock::new(RoomInner::default()),
            auth_memo: Default::default(),
        });
        // The hook finds the room in the map and fills it as the events commit.
        self.rooms.rooms.lock().insert(room_id.clone(), room);
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::CreateRoom(RoomRow {
            room_id: room_id.to_string(),
            room_version: version.to_string(),
        }));
        if req.visibility_public {
            // Published in the room directory in the same transaction.
            batch.push(WriteOp::SetRoomPublished {
                room_id: room_id.to_string(),
                published: true,
            });
        }
        if let Some(alias) = &alias {
            batch.push(WriteOp::PutAlias(AliasRow {
                alias: alias.to_string(),
                room_id: room_id.to_string(),
                creator: creator.to_string(),
            }));
        }
        for (_, new) in built {
            batch.push(WriteOp::AppendEvent(new));
        }
        batch.ops.extend(extra(&room_id));
        if let Err(e) = self.store.write(batch).await {
            self.rooms.rooms.lock().remove(&room_id);
            return Err(match e {
                hotline_store::StoreError::Conflict(_) => conflict(),
                e => e.into(),
            });
        }
        for u in &remote_invites {
            let room = self.room(&room_id)?;
            let mut content = RoomMemberEventContent::new(MembershipState::Invite);
            content.is_direct = req.is_direct.then_some(true);
            self.invite_remote(creator, &room, u, content).await?;
        }
        if req.is_direct {
            self.add_direct_room(creator, &req.invite, &room_id).await?;
        }
        Ok(room_id)
    }

    /// Whether `user` is a member in `membership` of `room`.
    pub fn require_joined(&self, room: &Room, user: &UserId) -> Result<()> {
        if room.is_joined(user) {
            Ok(())
        } else {
            Err(Error::forbidden("You are not joined to this room"))
        }
    }

    pub(crate) fn member_content(
        &self,
        user: &UserId,
        membership: MembershipState,
    ) -> Result<RoomMemberEventContent> {
        let mut c = RoomMemberEventContent::new(membership);
        if let Some(p) = self.store.get_user(user.as_str())? {
            c.displayname = p.displayname;
            c.avatar_url = p.avatar_url.map(ruma::OwnedMxcUri::from);
        }
        Ok(c)
    }
}
