//! Invites across servers (`PUT /_matrix/federation/v2/invite`), both
//! ways.
//!
//! Inviting a user of another server: the invite is built and checked here
//! as any event, sent to the invitee's server to sign, and committed (and
//! queued for the room's other servers) with both signatures. Receiving an
//! invite for a local user: the inviter's signature is checked, and so is
//! Hotline's reach rule (a principal is invited only by someone who may
//! reach them); the invite is signed, stored in the room (known here by
//! that invite alone until the user joins) with the stripped state the
//! inviting server sent, which `/sync` shows the invitee.

use std::sync::Arc;

use hotline_store::{RoomRow, WriteBatch, WriteOp};
use ruma::api::federation::membership::{create_invite, RawStrippedState};
use ruma::events::room::member::{MembershipState, RoomMemberEventContent};
use ruma::events::TimelineEventType;
use ruma::{EventId, RoomId, RoomVersionId, ServerName, UserId};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::rooms::FEDERATED_VERSIONS;
use crate::pdu::{EventDraft, PduEvent};
use crate::policy::Origin;
use crate::rooms::Room;
use crate::{Error, Result, Services};

/// The meta key under which the stripped state of a room this server is
/// not in is kept for `user`, as its server sent it with an invite or a
/// knock's answer (the key's name is from when only invites kept it).
pub(crate) fn remote_state_key(room_id: &RoomId, user: &UserId) -> String {
    format!("federation.invite_state {room_id} {user}")
}

#[derive(Deserialize)]
struct InviteBody {
    room_version: RoomVersionId,
    event: Box<RawValue>,
    #[serde(default)]
    invite_room_state: Vec<Box<RawValue>>,
}

impl Services {
    /// Invites `target`, a user of another server (module docs).
    pub(crate) async fn invite_remote(
        &self,
        sender: &UserId,
        room: &Room,
        target: &UserId,
        content: RoomMemberEventContent,
    ) -> Result<()> {
        self.federation_peer(target.server_name())?;
        let draft = EventDraft::new(
            TimelineEventType::RoomMember,
            &content,
            Some(target.to_string()),
        )?;
        let (event, mut new) = self.build_one(room, sender, draft, Origin::Client)?;
        let signed = self.outgoing_pdu(&new.json, &room.version, false)?;
        let inviter = room.state_event("m.room.member", sender.as_str());
        let face = self.room_face(room, inviter)?;
        let request = create_invite::v2::Request::new(
            room.id.clone(),
            event.event_id.clone(),
            room.version.clone(),
            signed,
            face,
        );
        let answer = self.federation_call(target.server_name(), request).await?;
        let back = self
            .check_incoming_pdu(&answer.event, &room.version)
            .await?;
        if back.event.event_id != event.event_id {
            return Err(Error::Unavailable(format!(
                "{} answered the invite with another event",
                target.server_name()
            )));
        }
        new.json = back.json;
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::AppendEvent(new));
        for destination in self.federation_destinations_of(room) {
            batch.push(WriteOp::QueueFederation {
                destination: destination.to_string(),
                event_id: event.event_id.to_string(),
            });
        }
        self.store.write(batch).await?;
        Ok(())
    }

    /// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`: an invite
    /// from `origin` for a local user; answers the event signed by this
    /// server too.
    pub async fn receive_invite(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        body: &[u8],
    ) -> Result<Box<RawValue>> {
        let body: InviteBody = serde_json::from_slice(body)
            .map_err(|e| Error::bad_json(format!("Not an invite: {e}")))?;
        let version = body.room_version;
        if !FEDERATED_VERSIONS.contains(&version) {
            return Err(Error::IncompatibleRoomVersion(version));
        }
        let checked = self.check_incoming_pdu(&body.event, &version).await?;
        let event = checked.event.clone();
        if event.event_id != event_id || event.room_id != room_id {
            return Err(Error::bad_json("The event does not match the path"));
        }
        let is_invite = event.pdu.kind == TimelineEventType::RoomMember
            && event
                .content::<RoomMemberEventContent>()
                .is_ok_and(|c| c.membership == MembershipState::Invite);
        if !is_invite {
            return Err(Error::bad_json("Not an invite event"));
        }
        if event.pdu.sender.server_name() != origin {
            return Err(Error::forbidden("A server invites for its own users only"));
        }
        let target = event
            .pdu
            .state_key
            .as_deref()
            .and_then(|k| UserId::parse(k).ok())
            .filter(|u| u.server_name() == self.server_name())
            .ok_or_else(|| Error::bad_json("The invite is not for a user of this server"))?;
        if !self.user_exists(&target)? {
            return Err(Error::not_found("Unknown user"));
        }
        // Hotline's reach rule: a principal is invited only by whoever may
        // reach them.
        self.check_may_reach(&event.pdu.sender, &target)?;
        let signed = self.outgoing_pdu(&checked.json, &version, true)?;
        let stored = super::CheckedPdu {
            event: event.clone(),
            json: signed.get().to_owned(),
        };
        let resident = self.room(room_id).ok().filter(|r| {
            r.joined_members()
                .iter()
                .any(|u| u.server_name() == self.server_name())
        });
        if let Some(room) = resident {
            self.check_server_acl(&room, origin)?;
            // This server is in the room: the invite is an event of it.
            let (_, verdict) = self
                .append_remote_events(&room, vec![stored])
                .await
                .remove(0);
            verdict?;
            return Ok(signed);
        }
        if self.store.get_event(event_id.as_str())?.is_none() {
            let mut batch = WriteBatch::new();
            if self.store.get_room(room_id.as_str())?.is_none() {
                batch.push(WriteOp::CreateRoom(RoomRow {
                    room_id: room_id.to_string(),
                    room_version: version.to_string(),
                }));
            }
            let face = strip_face(body.invite_room_state.iter().map(|r| &**r));
            batch.push(WriteOp::PutMeta {
                key: remote_state_key(room_id, &target),
                value: serde_json::to_string(&face)?,
            });
            batch.push(WriteOp::AppendEvent(super::new_event(&stored)?));
            self.store.write(batch).await?;
        }
        Ok(signed)
    }

    /// The room's public face ([`INVITE_STATE`]) and `extra` (the
    /// inviter's member event, for an invite), as full PDUs (the spec's
    /// form since Matrix 1.16): the state an invite carries and a knock is
    /// answered with.
    ///
    /// [`INVITE_STATE`]: crate::sync::stripped::INVITE_STATE
    pub(super) fn room_face(
        &self,
        room: &Room,
        extra: Option<Arc<PduEvent>>,
    ) -> Result<Vec<RawStrippedState>> {
        let mut face = Vec::new();
        for e in crate::sync::stripped::INVITE_STATE
            .iter()
            .filter_map(|k| room.state_event(k, ""))
            .chain(extra)
        {
            if let Some(row) = self.store.get_event(e.event_id.as_str())? {
                face.push(RawStrippedState::Pdu(self.outgoing_pdu(
                    &row.json,
                    &room.version,
                    false,
                )?));
            }
        }
        Ok(face)
    }

    /// The stripped state `/sync` shows for an invite into (or a knock on)
    /// a room this server is not in: what the room's server sent, and the
    /// user's own member event.
    pub(crate) fn remote_stripped_state(&self, room: &Room, user: &UserId) -> Vec<Box<RawValue>> {
        let mut events: Vec<Box<RawValue>> = self
            .store
            .get_meta(&remote_state_key(&room.id, user))
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default();
        events.extend(crate::sync::stripped::stripped_state(room, user, false));
        events
    }
}

/// A room's state as another server sent it with an invite or a knock's
/// answer, kept stripped whether sent stripped or (since Matrix 1.16) as
/// full PDUs.
pub(super) fn strip_face<'a>(raws: impl Iterator<Item = &'a RawValue>) -> Vec<serde_json::Value> {
    raws.filter_map(|raw| serde_json::from_str::<serde_json::Value>(raw.get()).ok())
        .map(|e| {
            serde_json::json!({
                "type": e["type"], "state_key": e["state_key"],
                "sender": e["sender"], "content": e["content"],
            })
        })
        .collect()
}
