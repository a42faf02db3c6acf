//! Per-user data: account data (global and per room), filters, profiles,
//! and room aliases.

use hotline_store::{AliasRow, WriteBatch, WriteOp};
use rand::Rng;
use ruma::{OwnedUserId, RoomAliasId, RoomId, UserId};

use crate::{Error, Result, Services};

/// Largest account data or filter document accepted.
const MAX_DOC: usize = 64 * 1024;

/// Serialises read-modify-write of a user's account data documents
/// (`m.tag`, `m.push_rules`, `m.direct`): two concurrent edits of one
/// document must not lose either. Striped by user, so users do not wait on
/// each other (beyond a rare shared stripe).
pub struct DocLocks([tokio::sync::Mutex<()>; 32]);

impl Default for DocLocks {
    fn default() -> Self {
        DocLocks(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

impl DocLocks {
    pub(crate) async fn lock(&self, user: &UserId) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        user.hash(&mut h);
        self.0[(h.finish() % self.0.len() as u64) as usize]
            .lock()
            .await
    }
}

impl Services {
    /// `PUT /user/{userId}/account_data/{type}` and the room variant.
    pub async fn put_account_data(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
        content: String,
    ) -> Result<()> {
        if kind == "m.fully_read" && room.is_none() {
            return Err(Error::bad_json("m.fully_read is room account data"));
        }
        if kind == crate::push_rules::PUSH_RULES && room.is_none() {
            return Err(Error::ServerControlled(
                "Cannot set m.push_rules through this API: use /pushrules".into(),
            ));
        }
        if kind == crate::availability::AVAILABILITY_STATE {
            return Err(Error::ServerControlled(
                "Availability is set through /_hotline/v1/availability".into(),
            ));
        }
        self.write_account_data(user, room, kind, content).await
    }

    /// Stores an account data document (no client-facing type checks).
    pub(crate) async fn write_account_data(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
        content: String,
    ) -> Result<()> {
        if content.len() > MAX_DOC {
            return Err(Error::TooLarge("Account data too large".into()));
        }
        if let Some(room_id) = room {
            // Account data for a room the user cannot see would leak nothing, but
            // the spec asks for a clear error on unknown rooms.
            self.room(room_id)?;
        }
        // The commit hook moves the user's private position and wakes /sync.
        self.store
            .write(WriteBatch::one(WriteOp::PutAccountData {
                user_id: user.to_string(),
                room_id: room.map(|r| r.to_string()).unwrap_or_default(),
                kind: kind.to_owned(),
                content,
            }))
            .await?;
        Ok(())
    }

    /// `GET /user/{userId}/account_data/{type}` and the room variant.
    pub fn get_account_data(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
    ) -> Result<String> {
        if kind == crate::push_rules::PUSH_RULES && room.is_none() {
            // The rules in force, the server defaults included.
            return Ok(self.push_rules_content(user)?.to_string());
        }
        let room = room.map(|r| r.to_string()).unwrap_or_default();
        self.store
            .get_account_data(user.as_str(), &room, kind)?
            .map(|r| r.content)
            .ok_or_else(|| Error::not_found("Account data not found"))
    }

    /// Records `room` as a direct chat with `others` in `m.direct`.
    pub async fn add_direct_room(
        &self,
        user: &UserId,
        others: &[OwnedUserId],
        room: &RoomId,
    ) -> Result<()> {
        let _edit = self.doc_locks.lock(user).await;
        let mut direct: serde_json::Map<String, serde_json::Value> = self
            .store
            .get_account_data(user.as_str(), "", "m.direct")?
            .and_then(|r| serde_json::from_str(&r.content).ok())
            .unwrap_or_default();
        for other in others {
            let list = direct
                .entry(other.to_string())
                .or_insert_with(|| serde_json::json!([]));
            if let Some(a) = list.as_array_mut() {
                if !a.iter().any(|r| r == room.as_str()) {
                    a.push(serde_json::json!(room));
                }
            }
        }
        self.put_account_data(
            user,
            None,
            "m.direct",
            serde_json::Value::Object(direct).to_string(),
        )
        .await
    }

    /// `POST /user/{userId}/filter`: stores a filter, returns its id.
    pub async fn create_filter(&self, user: &UserId, json: String) -> Result<String> {
        if json.len() > MAX_DOC {
            return Err(Error::TooLarge("Filter too large".into()));
        }
        let id: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(12)
            .map(char::from)
            .collect();
        self.store
            .write(WriteBatch::one(WriteOp::PutFilter {
                user_id: user.to_string(),
                filter_id: id.clone(),
                json,
            }))
            .await?;
        Ok(id)
    }

    pub fn get_filter(&self, user: &UserId, id: &str) -> Result<String> {
        self.store
            .get_filter(user.as_str(), id)?
            .ok_or_else(|| Error::not_found("Unknown filter"))
    }

    /// `GET /profile/{userId}`: `(displayname, avatar_url)`.
    pub fn profile(&self, user: &UserId) -> Result<(Option<String>, Option<String>)> {
        let u = self
            .store
            .get_user(user.as_str())?
            .ok_or_else(|| Error::not_found("Unknown user"))?;
        Ok((u.displayname, u.avatar_url))
    }

    /// `GET /profile/{userId}`: a local user's profile from the store, a
    /// remote user's from their server (`/query/profile`, federation).
    pub async fn profile_anywhere(
        &self,
        user: &UserId,
    ) -> Result<(Option<String>, Option<String>)> {
        if user.server_name() == self.server_name() {
            return self.profile(user);
        }
        let request = ruma::api::federation::query::get_profile_information::v1::Request::new(
            user.to_owned(),
        );
        let answer = self.federation_call(user.server_name(), request).await?;
        let text = |f: &str| answer.get(f).and_then(|v| v.as_str().map(str::to_owned));
        Ok((text("displayname"), text("avatar_url")))
    }

    /// `PUT /profile/{userId}/displayname` and `/avatar_url`. Also updates
    /// the user's member event in each joined room, as clients expect.
    pub async fn set_profile(
        &self,
        user: &UserId,
        displayname: Option<Option<String>>,
        avatar_url: Option<Option<String>>,
    ) -> Result<()> {
        if let Some(Some(name)) = &displayname {
            if name.len() > 256 {
                return Err(Error::invalid_param("Display name too long"));
            }
            self.check_display_name(user, name)?;
        }
        self.store
            .write(WriteBatch::one(WriteOp::SetProfile {
                user_id: user.to_string(),
                displayname: displayname.clone(),
                avatar_url: avatar_url.clone(),
            }))
            .await?;
        for (room_id, (m, _)) in self.user_rooms(user)?.rooms {
            if m != ruma::events::room::member::MembershipState::Join {
                continue;
            }
            let room = self.room(&room_id)?;
            let content =
                self.member_content(user, ruma::events::room::member::MembershipState::Join)?;
            let draft = crate::pdu::EventDraft::new(
                ruma::events::TimelineEventType::RoomMember,
                &content,
                Some(user.to_string()),
            )?;
            if let Err(e) = self.append_event(&room, user, draft).await {
                tracing::warn!(room = %room_id, error = %e, "profile change not propagated");
            }
        }
        Ok(())
    }

    /// Hook for rules on display names; Hotline's impersonation guard extends it.
    pub(crate) fn check_display_name(&self, user: &UserId, name: &str) -> Result<()> {
        self.guard_name(user.as_str(), "display name", name)
    }

    /// `PUT /directory/room/{roomAlias}`.
    pub async fn put_alias(
        &self,
        user: &UserId,
        alias: &RoomAliasId,
        room_id: &RoomId,
    ) -> Result<()> {
        if alias.server_name() != self.server_name() {
            return Err(Error::invalid_param("Alias is not on this server"));
        }
        let room = self.room(room_id)?;
        self.require_joined(&room, user)?;
        // An alias is shown as the room's address: `#president.avalon` may
        // not pass for an official any more than a display name may.
        self.guard_name(user.as_str(), "room alias", alias.alias())?;
        let row = AliasRow {
            alias: alias.to_string(),
            room_id: room_id.to_string(),
            creator: user.to_string(),
        };
        match self
            .store
            .write(WriteBatch::one(WriteOp::PutAlias(row)))
            .await
        {
            Ok(_) => Ok(()),
            Err(hotline_store::StoreError::Conflict(_)) => Err(Error::RoomInUse),
            Err(e) => Err(e.into()),
        }
    }

    /// `DELETE /directory/room/{roomAlias}`: the creator or a room moderator.
    pub async fn delete_alias(&self, user: &UserId, alias: &RoomAliasId) -> Result<()> {
        let row = self
            .store
            .get_alias(alias.as_str())?
            .ok_or_else(|| Error::not_found("Unknown room alias"))?;
        if row.creator != user.as_str() {
            let room = self.room(&RoomId::parse(&row.room_id).map_err(Error::internal)?)?;
            if room.user_power(user) < 50 {
                return Err(Error::forbidden("You may not remove this alias"));
            }
        }
        self.store
            .write(WriteBatch::one(WriteOp::DeleteAlias {
                alias: alias.to_string(),
            }))
            .await?;
        Ok(())
    }
}
