//! Knocking across servers (`make_knock`, `send_knock` v1).
//!
//! Serving: a room held here answers a knock template as it answers a join
//! template ([`Services::make_membership`]: the asker's own user, the
//! room's ACL, the versions the asker speaks, the room's rules and
//! Hotline's), takes the signed knock through
//! [`Services::append_remote_events`], and answers with the room's public
//! face, as an invite carries it.

use ruma::api::federation::membership::RawStrippedState;
use ruma::events::room::member::MembershipState;
use ruma::{EventId, RoomId, RoomVersionId, ServerName, UserId};
use serde_json::value::RawValue;

use crate::{Result, Services};

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
        self.append_remote_events(&room, vec![checked])
            .await
            .remove(0)
            .1?;
        self.room_face(&room, None)
    }
}
