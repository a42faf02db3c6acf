//! Aides on a line, visibly (docs/DESIGN.md capability 6).
//!
//! A principal brings one of their enrolled aides onto a line, and either
//! of the line's principals takes an aide off it again. The server writes
//! the marking, `org.hotline.aide` state keyed by the aide's user id after
//! an underscore, `_@aide:server` (the room version's rules let only a user
//! send state keyed by their bare id), `{"principal": P, "added_by": P}`
//! while on the line and `{"removed_by": S}` after, in the same commit as the invite or the kick, so every member
//! sees who the aide is and for whom as it happens.
//!
//! Who may do what:
//! - **add:** a principal of the line, for an aide their own government
//!   vouches for as theirs (never another's aide, never someone who is no
//!   aide). Their office does the same with `hotline admin line-aide`.
//! - **remove:** either principal of the line, for any aide on it: the
//!   other side may object to an aide by taking them off.
//! - **the aide** leaves when they like.
//!
//! The rule that makes the marking unavoidable is the seam's
//! ([`crate::policy`]): in a line, nobody but its principals joins, is
//! invited or knocks without a marking naming a principal they are the aide
//! of, and nobody but its principals and marked aides sends anything.

use ruma::events::room::member::MembershipState;
use ruma::events::TimelineEventType;
use ruma::{OwnedEventId, RoomId, UserId};
use serde_json::{json, Value};

use crate::contact_log::CALL_MEMBER_TYPES;
use crate::identity::audit;
use crate::pdu::EventDraft;
use crate::policy::{line_principals, user_key, LINE_STATE};
use crate::rooms::Room;
use crate::{Error, Result, Services};

/// The state type marking an aide on a line; its state key is the aide's
/// [`user_key`].
pub const AIDE_STATE: &str = "org.hotline.aide";

/// The principal an aide marking names while the aide is on the line.
pub(crate) fn marked_for(marking: &crate::pdu::PduEvent) -> Option<ruma::OwnedUserId> {
    marking
        .content::<Value>()
        .ok()?
        .get("principal")?
        .as_str()
        .and_then(|p| UserId::parse(p).ok())
}

impl Services {
    /// The line's room, its `org.hotline.line` state and its principals;
    /// `404` for a room that is not a line.
    pub(crate) fn line_room(
        &self,
        room_id: &RoomId,
    ) -> Result<(
        std::sync::Arc<Room>,
        std::sync::Arc<crate::pdu::PduEvent>,
        Vec<ruma::OwnedUserId>,
    )> {
        let room = self
            .room(room_id)
            .map_err(|_| Error::not_found("No such line"))?;
        let Some(line) = room.state_event(LINE_STATE, "") else {
            return Err(Error::not_found("This room is not a line"));
        };
        let principals = line_principals(&line);
        Ok((room, line, principals))
    }

    /// `PUT /_hotline/v1/lines/{roomId}/aides/{userId}`: `principal` brings
    /// their aide `aide` onto the line: the marking and the invite, in one
    /// commit. Again for an aide already on it: nothing changes.
    pub async fn add_line_aide(
        &self,
        principal: &UserId,
        room_id: &RoomId,
        aide: &UserId,
    ) -> Result<()> {
        let (room, _, principals) = self.line_room(room_id)?;
        self.require_joined(&room, principal)?;
        if !principals.iter().any(|p| p == principal)
            || self.principal_of(principal)?.as_deref() != Some(principal)
        {
            return Err(Error::forbidden(
                "Only a principal of the line brings aides onto it",
            ));
        }
        if aide.server_name() != self.server_name()
            || self.principal_of(aide)?.as_deref() != Some(principal)
            || aide == principal
        {
            return Err(Error::forbidden(format!(
                "{aide} is not an aide your office has enrolled for you"
            )));
        }
        let on_line = room
            .state_event(AIDE_STATE, &user_key(aide))
            .is_some_and(|m| marked_for(&m).as_deref() == Some(principal));
        let membership = room.membership(aide);
        if on_line
            && matches!(
                membership,
                Some(MembershipState::Join | MembershipState::Invite)
            )
        {
            return Ok(());
        }
        let mut drafts = vec![EventDraft::new(
            TimelineEventType::from(AIDE_STATE),
            &json!({"principal": principal, "added_by": principal}),
            Some(user_key(aide)),
        )?];
        if !matches!(
            membership,
            Some(MembershipState::Join | MembershipState::Invite)
        ) {
            let content = self.member_content(aide, MembershipState::Invite)?;
            drafts.push(EventDraft::new(
                TimelineEventType::RoomMember,
                &content,
                Some(aide.to_string()),
            )?);
        }
        let detail = json!({"room_id": room_id, "principal": principal});
        self.append_server_events_with(
            &room,
            principal,
            drafts,
            vec![audit(
                principal.as_str(),
                "line_aide_added",
                aide.as_str(),
                detail,
            )],
        )
        .await?;
        Ok(())
    }

    /// `DELETE /_hotline/v1/lines/{roomId}/aides/{userId}`: either
    /// principal of the line takes an aide off it: the marking ends, the
    /// aide's call memberships are emptied and the aide is removed from the
    /// room, in one commit.
    pub async fn remove_line_aide(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        aide: &UserId,
    ) -> Result<Vec<OwnedEventId>> {
        let (room, _, principals) = self.line_room(room_id)?;
        self.require_joined(&room, sender)?;
        if !principals.iter().any(|p| p == sender) {
            return Err(Error::forbidden(
                "Only a principal of the line takes aides off it",
            ));
        }
        if principals.iter().any(|p| p == aide) {
            return Err(Error::forbidden("A principal is not an aide of the line"));
        }
        let marked = room
            .state_event(AIDE_STATE, &user_key(aide))
            .is_some_and(|m| marked_for(&m).is_some());
        let membership = room.membership(aide);
        let in_room = matches!(
            membership,
            Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock)
        );
        if !marked && !in_room {
            return Err(Error::not_found("No such aide on this line"));
        }
        let mut drafts = Vec::new();
        if marked {
            drafts.push(EventDraft::new(
                TimelineEventType::from(AIDE_STATE),
                &json!({"removed_by": sender}),
                Some(user_key(aide)),
            )?);
        }
        // Off the line is out of its call: an aide taken off mid-call can no
        // longer empty their own MatrixRTC memberships, so the commit that
        // removes them does (else the call would list them, and the
        // contact log count them, until the membership expires).
        for kind in CALL_MEMBER_TYPES {
            let prefix = format!("_{aide}_");
            for (key, membership) in room.state_of_type(kind) {
                let standing = membership
                    .content::<Value>()
                    .is_ok_and(|c| c.as_object().is_some_and(|o| !o.is_empty()));
                if key.starts_with(&prefix) && standing {
                    drafts.push(EventDraft::new(kind, &json!({}), Some(key))?);
                }
            }
        }
        if in_room {
            drafts.push(EventDraft::new(
                TimelineEventType::RoomMember,
                &ruma::events::room::member::RoomMemberEventContent::new(MembershipState::Leave),
                Some(aide.to_string()),
            )?);
        }
        let detail = json!({"room_id": room_id});
        self.append_server_events_with(
            &room,
            sender,
            drafts,
            vec![audit(
                sender.as_str(),
                "line_aide_removed",
                aide.as_str(),
                detail,
            )],
        )
        .await
    }
}
