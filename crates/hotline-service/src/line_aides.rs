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
//!   aide). Their office does the same with `hotline admin line-aide add`
//!   ([`Actor::Office`]): the invite is the principal's, the marking names
//!   the office (`"by_office": NAME`).
//! - **remove:** either principal of the line, for any aide on it: the
//!   other side may object to an aide by taking them off. Either side's
//!   office does the same for its principal (`hotline admin line-aide
//!   remove`).
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

/// Who asks for an aide to be added to a line or taken off it.
#[derive(Clone, Copy, Debug)]
pub enum Actor<'a> {
    /// A principal of the line, through their own account.
    Principal(&'a UserId),
    /// This server's protocol office (`hotline admin line-aide`), acting
    /// for its principal on the line.
    Office,
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
        actor: Actor<'_>,
        room_id: &RoomId,
        aide: &UserId,
    ) -> Result<()> {
        let (room, _, principals) = self.line_room(room_id)?;
        let (principal, office) = match actor {
            Actor::Principal(p) => (p.to_owned(), None),
            Actor::Office => {
                let enrolled = (aide.server_name() == self.server_name())
                    .then(|| self.store.get_official(aide.as_str()))
                    .transpose()?
                    .flatten()
                    .filter(|o| o.role == "aide");
                let (Some(o), Some(p)) = (enrolled, self.principal_of(aide)?) else {
                    return Err(Error::forbidden(format!(
                        "{aide} is not an aide this office has enrolled"
                    )));
                };
                (p, Some(o.office))
            }
        };
        let principal = principal.as_ref();
        if !principals.iter().any(|p| p == principal)
            || self.principal_of(principal)?.as_deref() != Some(principal)
        {
            return Err(Error::forbidden(match actor {
                Actor::Principal(_) => {
                    "Only a principal of the line brings aides onto it".to_owned()
                }
                Actor::Office => {
                    format!("{principal}, whom {aide} is the aide of, is no principal of this line")
                }
            }));
        }
        self.require_joined(&room, principal)?;
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
        let mut marking = json!({"principal": principal, "added_by": principal});
        if let Some(office) = &office {
            marking["by_office"] = json!(office);
        }
        let mut drafts = vec![EventDraft::new(
            TimelineEventType::from(AIDE_STATE),
            &marking,
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
        let audited = if office.is_some() {
            "protocol-office"
        } else {
            principal.as_str()
        };
        self.append_server_events_with(
            &room,
            principal,
            drafts,
            vec![audit(audited, "line_aide_added", aide.as_str(), detail)],
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
        actor: Actor<'_>,
        room_id: &RoomId,
        aide: &UserId,
    ) -> Result<Vec<OwnedEventId>> {
        let (room, _, principals) = self.line_room(room_id)?;
        let (sender, office) = match actor {
            Actor::Principal(p) => (p.to_owned(), None),
            // The office acts through its own principal on the line: the
            // aide's, when the aide is this server's, else this server's
            // principal objecting to the other side's aide.
            Actor::Office => {
                let ours = principals
                    .iter()
                    .filter(|p| p.server_name() == self.server_name() && room.is_joined(p));
                let mut ours: Vec<_> = ours.collect();
                let served = self.principal_of(aide)?;
                ours.sort_by_key(|p| Some(*p) != served.as_ref());
                let Some(p) = ours.first() else {
                    return Err(Error::forbidden(
                        "No principal of this server is on the line",
                    ));
                };
                let office = self.store.get_official(p.as_str())?.map(|o| o.office);
                (
                    (*p).clone(),
                    Some(office.unwrap_or_else(|| "protocol-office".to_owned())),
                )
            }
        };
        let sender = sender.as_ref();
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
            let mut ended = json!({"removed_by": sender});
            if let Some(office) = &office {
                ended["by_office"] = json!(office);
            }
            drafts.push(EventDraft::new(
                TimelineEventType::from(AIDE_STATE),
                &ended,
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
                if office.is_some() {
                    "protocol-office"
                } else {
                    sender.as_str()
                },
                "line_aide_removed",
                aide.as_str(),
                detail,
            )],
        )
        .await
    }

    /// The line between `principal` and `counterpart`, for the office
    /// naming a line by who is on it.
    pub fn line_between(
        &self,
        principal: &UserId,
        counterpart: &UserId,
    ) -> Result<ruma::OwnedRoomId> {
        self.store
            .lines_of(principal.as_str())?
            .into_iter()
            .find(|l| {
                l.principal_a == counterpart.as_str() || l.principal_b == counterpart.as_str()
            })
            .and_then(|l| ruma::OwnedRoomId::try_from(l.room_id).ok())
            .ok_or_else(|| Error::not_found(format!("{principal} has no line with {counterpart}")))
    }
}
