//! Knocking across servers (`make_knock`, `send_knock` v1), both ways.
//!
//! Serving: a room held here answers a knock template as it answers a join
//! template ([`Services::make_membership`]: the asker's own user, the
//! room's ACL, the versions the asker speaks, the room's rules and
//! Hotline's), takes the signed knock through
//! [`Services::append_remote_events`], and answers with the room's public
//! face, as an invite carries it.
//!
//! Sending: a local user's knock on a room this server is not in goes
//! through the servers the client named (or the alias's, or the one the
//! room id names); the knock is kept with the face the room's server sent,
//! which `/sync` shows under `rooms.knock`, and the server that took it is
//! remembered, so a knock taken back (`/leave`) goes through it.

use std::sync::Arc;

use hotline_store::{RoomRow, WriteBatch, WriteOp};
use ruma::api::federation::membership::{
    create_knock_event, prepare_knock_event, RawStrippedState,
};
use ruma::events::room::member::{MembershipState, RoomMemberEventContent};
use ruma::{EventId, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId};
use serde_json::value::RawValue;

use super::invite::{remote_state_key, strip_face};
use super::rooms::{fill_template, FEDERATED_VERSIONS};
use super::CheckedPdu;
use crate::pdu::rules;
use crate::{Error, Result, Services};

/// The meta key under which the server a local user's knock went through
/// is kept.
fn knock_via_key(room_id: &RoomId, user: &UserId) -> String {
    format!("federation.knock_via {room_id} {user}")
}

/// The room versions this server knocks in: those it federates that allow
/// knocking (7 on).
fn knock_versions() -> Vec<RoomVersionId> {
    FEDERATED_VERSIONS
        .iter()
        .filter(|v| rules(v).is_ok_and(|r| r.authorization.knocking))
        .cloned()
        .collect()
}

impl Services {
    /// `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}`: a knock
    /// event for `user` to fill in and sign, if the room would take it.
    pub fn make_knock(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user: &UserId,
        versions: &[RoomVersionId],
    ) -> Result<(RoomVersionId, Box<RawValue>)> {
        self.make_membership(
            origin,
            room_id,
            user,
            Some(versions),
            MembershipState::Knock,
        )
    }

    /// `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`: takes
    /// `origin`'s signed knock into the room and answers with the room's
    /// public face.
    pub async fn send_knock(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        pdu: &RawValue,
    ) -> Result<Vec<RawStrippedState>> {
        let (room, checked) = self
            .received_membership(origin, room_id, event_id, pdu, MembershipState::Knock)
            .await?;
        self.append_membership_from(origin, &room, checked).await?;
        self.room_face(&room, None)
    }

    /// Knocks for `sender` on a room this server is not in, through the
    /// first of `via` that takes the knock (`make_knock`, then
    /// `send_knock`).
    pub(crate) async fn knock_remote(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        via: &[OwnedServerName],
        reason: Option<String>,
    ) -> Result<()> {
        self.through_first(via, room_id, "knock", |server| {
            self.knock_through(sender, room_id, server, reason.clone())
        })
        .await
    }

    async fn knock_through(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        server: &ServerName,
        reason: Option<String>,
    ) -> Result<()> {
        let mut ask = prepare_knock_event::v1::Request::new(room_id.to_owned(), sender.to_owned());
        ask.ver = knock_versions();
        let made = self.federation_call(server, ask).await?;
        let version = made.room_version;
        if !knock_versions().contains(&version) {
            return Err(Error::UnsupportedRoomVersion(format!(
                "Room version {version} is not supported for knocking across servers"
            )));
        }
        let mut content = RoomMemberEventContent::new(MembershipState::Knock);
        content.reason = reason;
        let (knock, json) =
            fill_template(server, &made.event, &version, sender, room_id, &content)?;
        let signed = self.outgoing_pdu(&json, &version, false)?;
        let answer = self
            .federation_call(
                server,
                create_knock_event::v1::Request::new(
                    room_id.to_owned(),
                    knock.event_id.clone(),
                    signed.clone(),
                ),
            )
            .await?;
        #[allow(deprecated)] // Servers before Matrix 1.16 send stripped events.
        let face = strip_face(answer.knock_room_state.iter().filter_map(|s| match s {
            RawStrippedState::Pdu(pdu) => Some(&**pdu),
            RawStrippedState::Stripped(raw) => Some(raw.json()),
            _ => None,
        }));
        let stored = CheckedPdu {
            event: Arc::new(knock),
            json: signed.get().to_owned(),
        };
        let mut batch = WriteBatch::new();
        if self.store.get_room(room_id.as_str())?.is_none() {
            batch.push(WriteOp::CreateRoom(RoomRow {
                room_id: room_id.to_string(),
                room_version: version.to_string(),
            }));
        }
        batch.push(WriteOp::PutMeta {
            key: remote_state_key(room_id, sender),
            value: serde_json::to_string(&face)?,
        });
        batch.push(WriteOp::PutMeta {
            key: knock_via_key(room_id, sender),
            value: server.to_string(),
        });
        batch.push(WriteOp::AppendEvent(super::new_event(&stored)?));
        self.store.write(batch).await?;
        Ok(())
    }

    /// The server a local user's knock on a room this server is not in
    /// went through, if it did.
    pub(crate) fn knocked_through(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Option<OwnedServerName> {
        self.store
            .get_meta(&knock_via_key(room_id, user))
            .ok()
            .flatten()
            .and_then(|s| OwnedServerName::try_from(s).ok())
    }
}
