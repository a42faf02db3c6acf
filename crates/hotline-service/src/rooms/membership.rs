//! Membership changes: invite, join, leave, kick, ban, unban, forget; and
//! the message and state sends that go through the same event path.

use ruma::events::room::member::MembershipState;
use ruma::events::TimelineEventType;
use ruma::{OwnedEventId, OwnedRoomId, RoomAliasId, RoomId, RoomOrAliasId, UserId};
use serde_json::value::RawValue;

use hotline_store::{WriteBatch, WriteOp};

use crate::pdu::{EventDraft, EventType};
use crate::{Error, Result, Services};

impl Services {
    async fn set_membership(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        membership: MembershipState,
        reason: Option<String>,
        is_direct: bool,
    ) -> Result<OwnedEventId> {
        let room = self.room(room_id)?;
        let mut content =
            if membership == MembershipState::Join || membership == MembershipState::Invite {
                self.member_content(target, membership)?
            } else {
                ruma::events::room::member::RoomMemberEventContent::new(membership)
            };
        content.reason = reason;
        if is_direct {
            content.is_direct = Some(true);
        }
        let draft = EventDraft::new(
            TimelineEventType::RoomMember,
            &content,
            Some(target.to_string()),
        )?;
        self.append_event(&room, sender, draft).await
    }

    /// `POST /rooms/{roomId}/invite`.
    pub async fn invite(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<()> {
        let remote = target.server_name() != self.server_name();
        if !remote && !self.user_exists(target)? {
            return Err(Error::not_found("Unknown user"));
        }
        let room = self.room(room_id)?;
        self.require_joined(&room, sender)?;
        if room.membership(target) == Some(MembershipState::Join) {
            return Err(Error::forbidden("User is already in the room"));
        }
        if remote {
            let mut content =
                ruma::events::room::member::RoomMemberEventContent::new(MembershipState::Invite);
            content.reason = reason;
            return self.invite_remote(sender, &room, target, content).await;
        }
        self.set_membership(
            sender,
            room_id,
            target,
            MembershipState::Invite,
            reason,
            false,
        )
        .await?;
        Ok(())
    }

    /// Resolves a room id or alias to a room id.
    pub fn resolve_room(&self, room: &RoomOrAliasId) -> Result<OwnedRoomId> {
        match <&RoomId>::try_from(room) {
            Ok(id) => Ok(id.to_owned()),
            Err(alias) => self.resolve_alias(alias),
        }
    }

    pub fn resolve_alias(&self, alias: &RoomAliasId) -> Result<OwnedRoomId> {
        let row = self
            .store
            .get_alias(alias.as_str())?
            .ok_or_else(|| Error::not_found("Unknown room alias"))?;
        RoomId::parse(row.room_id).map_err(Error::internal)
    }

    /// `POST /join/{roomIdOrAlias}` and `POST /rooms/{roomId}/join`.
    pub async fn join(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        reason: Option<String>,
    ) -> Result<()> {
        self.join_via(sender, room_id, reason, &[]).await
    }

    /// [`Self::join`], asking `via` (and the server the room id names) when
    /// the room is on other servers only.
    pub async fn join_via(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        reason: Option<String>,
        via: &[ruma::OwnedServerName],
    ) -> Result<()> {
        if let Some(servers) = self.servers_to_ask(sender, room_id, via) {
            return self.join_remote(sender, room_id, &servers).await;
        }
        let room = self
            .room(room_id)
            .map_err(|_| Error::not_found("Unknown room"))?;
        if room.is_joined(sender) {
            return Ok(());
        }
        self.set_membership(
            sender,
            room_id,
            sender,
            MembershipState::Join,
            reason,
            false,
        )
        .await?;
        Ok(())
    }

    /// The servers to reach a room through when no user of this server is
    /// joined to it (and federation is on): whoever invited `sender` (they
    /// are in the room), then `via`, then the server the room id names.
    /// `None` when the room is here, or there is nobody else to ask.
    fn servers_to_ask(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        via: &[ruma::OwnedServerName],
    ) -> Option<Vec<ruma::OwnedServerName>> {
        if !self.federation.enabled() {
            return None;
        }
        let known = self.room(room_id).ok();
        let here = known.as_ref().is_some_and(|room| {
            room.joined_members()
                .iter()
                .any(|u| u.server_name() == self.server_name())
        });
        if here {
            return None;
        }
        let mut servers = via.to_vec();
        if let Some(invite) = known
            .as_ref()
            .and_then(|r| r.state_event("m.room.member", sender.as_str()))
        {
            servers.insert(0, invite.pdu.sender.server_name().to_owned());
        }
        if let Some(named) = room_id.server_name() {
            servers.push(named.to_owned());
        }
        servers
            .iter()
            .any(|s| s != self.server_name())
            .then_some(servers)
    }

    /// `POST /knock/{roomIdOrAlias}`: asks to be let into a room whose join
    /// rule is `knock` (the auth rules refuse it anywhere else); a member
    /// with invite power answers with an invite, or a kick to refuse. A
    /// room on other servers only is knocked on through them (`via`, then
    /// the server the room id names).
    pub async fn knock(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        reason: Option<String>,
        via: &[ruma::OwnedServerName],
    ) -> Result<()> {
        let known = self.room(room_id).ok();
        match known.as_ref().and_then(|r| r.membership(sender)) {
            Some(MembershipState::Join) => {
                return Err(Error::forbidden("You are already in this room"))
            }
            Some(MembershipState::Invite) => {
                return Err(Error::forbidden("You are already invited; join instead"))
            }
            Some(MembershipState::Ban) => {
                return Err(Error::forbidden("You are banned from this room"))
            }
            _ => {}
        }
        if let Some(servers) = self.servers_to_ask(sender, room_id, via) {
            return self.knock_remote(sender, room_id, &servers, reason).await;
        }
        if known.is_none() {
            return Err(Error::not_found("Unknown room"));
        }
        self.set_membership(
            sender,
            room_id,
            sender,
            MembershipState::Knock,
            reason,
            false,
        )
        .await?;
        Ok(())
    }

    /// `POST /rooms/{roomId}/leave`.
    pub async fn leave(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        reason: Option<String>,
    ) -> Result<()> {
        let room = self.room(room_id)?;
        match room.membership(sender) {
            Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock) => {}
            _ => return Err(Error::forbidden("You are not in this room")),
        }
        // Invited into (or knocking on) a room this server is not in: the
        // leave goes through the inviting server (or the knock's).
        if room.state_event("m.room.create", "").is_none() && self.federation.enabled() {
            let mut via = Vec::new();
            if let Some(invite) = room.state_event("m.room.member", sender.as_str()) {
                via.push(invite.pdu.sender.server_name().to_owned());
            }
            // A knock went through a server of the room's.
            via.extend(self.knocked_through(room_id, sender));
            if let Some(named) = room_id.server_name() {
                via.push(named.to_owned());
            }
            return self.leave_remote(sender, room_id, &via, reason).await;
        }
        self.set_membership(
            sender,
            room_id,
            sender,
            MembershipState::Leave,
            reason,
            false,
        )
        .await?;
        Ok(())
    }

    /// `POST /rooms/{roomId}/kick`.
    pub async fn kick(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<()> {
        let room = self.room(room_id)?;
        if !matches!(
            room.membership(target),
            Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock)
        ) {
            return Err(Error::forbidden("User is not in the room"));
        }
        self.set_membership(
            sender,
            room_id,
            target,
            MembershipState::Leave,
            reason,
            false,
        )
        .await?;
        Ok(())
    }

    /// `POST /rooms/{roomId}/ban`.
    pub async fn ban(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<()> {
        self.set_membership(sender, room_id, target, MembershipState::Ban, reason, false)
            .await?;
        Ok(())
    }

    /// `POST /rooms/{roomId}/unban`.
    pub async fn unban(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<()> {
        let room = self.room(room_id)?;
        if room.membership(target) != Some(MembershipState::Ban) {
            return Err(Error::forbidden("User is not banned"));
        }
        self.set_membership(
            sender,
            room_id,
            target,
            MembershipState::Leave,
            reason,
            false,
        )
        .await?;
        Ok(())
    }

    /// `POST /rooms/{roomId}/forget`.
    pub async fn forget(&self, sender: &UserId, room_id: &RoomId) -> Result<()> {
        let room = self.room(room_id)?;
        if matches!(
            room.membership(sender),
            Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock)
        ) {
            return Err(Error::BadState(
                "Leave the room before forgetting it".into(),
            ));
        }
        if room.membership(sender).is_none() {
            return Err(Error::forbidden("You were never in this room"));
        }
        self.store
            .write(WriteBatch::one(WriteOp::ForgetRoom {
                user_id: sender.to_string(),
                room_id: room_id.to_string(),
            }))
            .await?;
        let all = self.rooms.memberships.lock();
        if let Some(r) = all.get(sender) {
            r.write().rooms.remove(room_id);
        }
        Ok(())
    }

    /// `PUT /rooms/{roomId}/send/{eventType}/{txnId}`: idempotent per device
    /// and transaction id.
    pub async fn send_message(
        &self,
        sender: &crate::accounts::Sender,
        room_id: &RoomId,
        kind: &str,
        txn_id: &str,
        content: Box<RawValue>,
    ) -> Result<OwnedEventId> {
        // No lookup of the transaction id first: the commit refuses a second
        // (user, device, txn) row, and any refused send looks the first one
        // up. Retries are rare; a database read on every send is not.
        match self
            .send_message_once(sender, room_id, kind, txn_id, content)
            .await
        {
            Ok(id) => Ok(id),
            // A retry (even after leaving the room), or one racing the
            // first attempt: answer like the first.
            Err(e) => match self.store.find_txn(
                sender.user_id.as_str(),
                sender.device_id.as_str(),
                &super::txn_key(room_id, &TimelineEventType::from(kind), None, txn_id),
            )? {
                Some(id) => OwnedEventId::try_from(id).map_err(Error::internal),
                None => Err(e),
            },
        }
    }

    async fn send_message_once(
        &self,
        sender: &crate::accounts::Sender,
        room_id: &RoomId,
        kind: &str,
        txn_id: &str,
        content: Box<RawValue>,
    ) -> Result<OwnedEventId> {
        let room = self.room(room_id)?;
        self.require_joined(&room, &sender.user_id)?;
        let kind = EventType::from(kind);
        if kind == TimelineEventType::RoomRedaction {
            return Err(Error::invalid_param(
                "Use the redact endpoint to redact events",
            ));
        }
        let draft = EventDraft {
            kind,
            content,
            state_key: None,
            redacts: None,
        };
        let txn = Some((sender.device_id.to_string(), txn_id.to_owned()));
        Ok(self
            .append_events(&room, &sender.user_id, vec![draft], txn)
            .await?
            .remove(0))
    }

    /// `PUT /rooms/{roomId}/state/{eventType}/{stateKey}`.
    pub async fn send_state(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        kind: &str,
        state_key: &str,
        content: Box<RawValue>,
    ) -> Result<OwnedEventId> {
        let room = self.room(room_id)?;
        self.require_joined(&room, sender)?;
        let kind = EventType::from(kind);
        if kind == TimelineEventType::RoomCreate {
            return Err(Error::forbidden("The create event cannot be replaced"));
        }
        // Setting the same content again is a no-op that returns the existing event.
        if let Some(existing) = room.state_event(kind.to_string().as_str(), state_key) {
            let same = serde_json::from_str::<serde_json::Value>(existing.pdu.content.get()).ok()
                == serde_json::from_str::<serde_json::Value>(content.get()).ok();
            if same && existing.pdu.sender == sender {
                return Ok(existing.event_id.clone());
            }
        }
        let draft = EventDraft {
            kind,
            content,
            state_key: Some(state_key.to_owned()),
            redacts: None,
        };
        self.append_event(&room, sender, draft).await
    }

    /// `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`.
    pub async fn redact(
        &self,
        sender: &crate::accounts::Sender,
        room_id: &RoomId,
        target: &ruma::EventId,
        txn_id: &str,
        reason: Option<String>,
    ) -> Result<OwnedEventId> {
        let key = super::txn_key(
            room_id,
            &TimelineEventType::RoomRedaction,
            Some(target),
            txn_id,
        );
        if let Some(id) =
            self.store
                .find_txn(sender.user_id.as_str(), sender.device_id.as_str(), &key)?
        {
            return OwnedEventId::try_from(id).map_err(Error::internal);
        }
        let room = self.room(room_id)?;
        self.require_joined(&room, &sender.user_id)?;
        let row = self
            .store
            .get_event(target.as_str())?
            .filter(|r| r.room_id == room_id.as_str());
        let row = row.ok_or_else(|| Error::not_found("Unknown event"))?;
        let event = crate::pdu::PduEvent::from_row(&row)?;
        if event.pdu.sender != sender.user_id {
            let pl = room.power_levels();
            if room.user_power(&sender.user_id) < i64::from(pl.redact) {
                return Err(Error::forbidden("You may not redact other users' events"));
            }
        }
        let redacted_json = event.redacted_json(&room.version)?;
        let mut content = serde_json::json!({ "redacts": target });
        if let Some(r) = reason {
            content["reason"] = serde_json::json!(r);
        }
        let mut draft = EventDraft::new(TimelineEventType::RoomRedaction, &content, None)?;
        draft.redacts = Some(target.to_owned());
        let txn = Some((sender.device_id.to_string(), txn_id.to_owned()));
        let ids = self
            .append_events_redacting(
                &room,
                &sender.user_id,
                vec![draft],
                txn,
                Some((target.to_string(), redacted_json)),
            )
            .await?;
        Ok(ids[0].clone())
    }
}
