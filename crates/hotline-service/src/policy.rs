//! Hotline's trust rules, at the one seam every event passes.
//!
//! [`crate::rooms::build_events`] calls [`Seam::check`] on each event after
//! the room version's auth rules passed and before anything is written, for
//! events a client asked for and events the server makes alike. Whatever
//! endpoint an event comes through (`send`, `state`, `redact`, the
//! membership endpoints, `createRoom` with its `initial_state` and
//! `invite`), it meets these rules, so no handler repeats them:
//!
//! - **Server-only state.** `org.hotline.*` state (a line's principals, its
//!   official flag) is written by the server alone. A client can neither
//!   create it, nor change it, nor redact it, whatever its power level.
//! - **Reach.** A principal is reached only by themself, their aides, and
//!   the principals (and aides) holding a line with them
//!   ([`Services::check_may_reach`]): an invite of a principal; a join or a
//!   knock into a room where a principal is joined, unless that principal
//!   or their aide invited the joiner; and, in a line, an invite by anyone
//!   but the line's principals and their aides.
//! - **Members of a line.** A line holds its principals and the aides a
//!   principal brought onto it, marked `org.hotline.aide` by the server
//!   ([`crate::line_aides`]); nobody else enters it or sends into it. A
//!   peer server may send an aide marking of its own principal's aide.
//! - **Pause.** While a line is paused ([`Services::check_line_open`]),
//!   every event in it is refused except a member leaving and in-room
//!   key verification, which is how the parties re-verify each other.
//! - **Urgent.** An `org.hotline.urgent` signal is sent only in a line,
//!   within its side's daily quota ([`crate::availability`]).
//! - **Names.** Every name a room event can show (a member's display name,
//!   the room's name, its topic, its canonical alias and alternative
//!   aliases) passes the impersonation guard (`Services::guard_name`).
//!
//! The non-event paths to the same things call the same functions: to-device
//! messages and `/keys/claim` the reach rule; profile, device and alias
//! names the impersonation guard.
//!
//! Officials' roles grant something only while their attestation stands:
//! [`Services::principal_of`] answers `None` for a revoked official, and for
//! the aide of a revoked principal, on the next request.

use std::sync::Arc;

use ruma::events::room::member::{MembershipState, RoomMemberEventContent};
use ruma::events::TimelineEventType;
use ruma::{OwnedUserId, UserId};
use serde_json::Value;

use crate::availability::{AVAILABILITY_STATE, URGENT_EVENT};
use crate::line_aides::{marked_for, AIDE_STATE};
use crate::line_record::{consents, RECORD_STATE};
use crate::line_recorder::{is_marked_recorder, marked_recorder};
use crate::pdu::PduEvent;
use crate::{Error, Result, Services};

/// Who asked for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A client, through the Client-Server API.
    Client,
    /// The server itself, acting on a consent it has checked (a line
    /// invite's redemption): it may write server-only state and reach the
    /// line's principals.
    Server,
    /// Another server, over federation: held to the same rules as a local
    /// client (it may not write this server's `org.hotline.*` state, nor
    /// reach a principal without a line).
    Federation,
}

/// The state an event is checked against: the room's state with the
/// events before it in the same batch applied.
pub(crate) type StateLookup<'a> = &'a dyn Fn(&str, &str) -> Option<Arc<PduEvent>>;

/// The seam: the services and the origin of the events being built.
pub(crate) struct Seam<'a> {
    pub services: &'a Services,
    pub origin: Origin,
}

/// The state type of a line, written by the server when a line invite is
/// redeemed.
pub const LINE_STATE: &str = "org.hotline.line";

/// The state key of the server's per-user state in a line (an aide's or a
/// records archiver's marking, a principal's consent): `_` and the user id,
/// since the room version's rules let only a user send state keyed by their
/// bare id.
pub fn user_key(user: &UserId) -> String {
    format!("_{user}")
}

/// The user a [`user_key`] names.
pub(crate) fn user_of_key(key: &str) -> Option<OwnedUserId> {
    key.strip_prefix('_').and_then(|u| UserId::parse(u).ok())
}

/// Event types that stay open in a paused line.
fn allowed_while_paused(event: &PduEvent) -> bool {
    let kind = event.pdu.kind.to_string();
    if kind.starts_with("m.key.verification.") {
        return true;
    }
    if event.pdu.kind == TimelineEventType::RoomMember
        && event.pdu.state_key.as_deref() == Some(event.pdu.sender.as_str())
    {
        return event
            .content::<RoomMemberEventContent>()
            .is_ok_and(|c| c.membership == MembershipState::Leave);
    }
    if event.pdu.kind == TimelineEventType::RoomMessage {
        // An in-room verification request is an `m.room.message`.
        return event.content::<Value>().is_ok_and(|c| {
            c.get("msgtype").and_then(Value::as_str) == Some("m.key.verification.request")
        });
    }
    false
}

impl Seam<'_> {
    /// Hotline's rules for one event, against `state` (the state before it).
    pub(crate) fn check(&self, event: &PduEvent, state: StateLookup<'_>) -> Result<()> {
        let s = self.services;
        let kind = &event.pdu.kind;
        if self.origin != Origin::Server {
            let hotline_state =
                event.pdu.state_key.is_some() && kind.to_string().starts_with("org.hotline.");
            if hotline_state
                && !(self.origin == Origin::Federation && self.peer_line_state(event, state)?)
            {
                return Err(Error::forbidden(
                    "org.hotline.* state is written by the server only",
                ));
            }
            if *kind == TimelineEventType::RoomRedaction {
                self.check_redaction_target(event, state)?;
            }
        }
        if let Some(line) = state(LINE_STATE, "") {
            if !allowed_while_paused(event) {
                s.check_line_open(&line)?;
            }
            self.check_line_members(event, &line, state)?;
        }
        if *kind == TimelineEventType::RoomMember {
            self.check_membership(event, state)?;
        }
        if kind.as_str() == URGENT_EVENT {
            s.check_urgent(event, state)?;
        }
        self.check_names(event)
    }

    /// A redaction may not strip server-only state of its content.
    fn check_redaction_target(&self, event: &PduEvent, state: StateLookup<'_>) -> Result<()> {
        let target = event.pdu.redacts.clone().or_else(|| {
            event
                .content::<Value>()
                .ok()?
                .get("redacts")?
                .as_str()
                .and_then(|t| ruma::OwnedEventId::try_from(t).ok())
        });
        let Some(target) = target else {
            return Ok(());
        };
        // Server-only state is looked up by its type: the line's is the one
        // that exists today, and it is current (never replaced by a client).
        if state(LINE_STATE, "").is_some_and(|e| e.event_id == target) {
            return Err(Error::forbidden(
                "org.hotline.* state is written by the server only",
            ));
        }
        if let Some(row) = self.services.store.get_event(target.as_str())? {
            let old = PduEvent::from_row(&row)?;
            if old.pdu.state_key.is_some() && old.pdu.kind.to_string().starts_with("org.hotline.") {
                return Err(Error::forbidden(
                    "org.hotline.* state is written by the server only",
                ));
            }
        }
        Ok(())
    }

    /// The reach rule for invites, joins and knocks.
    fn check_membership(&self, event: &PduEvent, state: StateLookup<'_>) -> Result<()> {
        if self.origin == Origin::Server {
            return Ok(());
        }
        let s = self.services;
        let sender = &event.pdu.sender;
        let Some(target) = event
            .pdu
            .state_key
            .as_deref()
            .and_then(|k| UserId::parse(k).ok())
        else {
            return Ok(());
        };
        let content: RoomMemberEventContent = event.content()?;
        match content.membership {
            MembershipState::Invite => {
                s.check_may_reach(sender, &target)?;
                if let Some(line) = state(LINE_STATE, "") {
                    let principals = line_principals(&line);
                    let acts_for = s.principal_of(sender)?;
                    if !acts_for.is_some_and(|p| principals.contains(&p)) {
                        return Err(Error::forbidden(
                            "Only the line's principals and their aides may invite into a line",
                        ));
                    }
                }
            }
            MembershipState::Join | MembershipState::Knock => {
                // Who invited the joiner: their office's invitation is the
                // principal's consent.
                let invited_by = state("m.room.member", target.as_str())
                    .filter(|m| {
                        m.content::<RoomMemberEventContent>()
                            .is_ok_and(|c| c.membership == MembershipState::Invite)
                    })
                    .map(|m| m.pdu.sender.clone());
                let inviter_acts_for = match &invited_by {
                    Some(inviter) => s.principal_of(inviter)?,
                    None => None,
                };
                // A records office's archiver, marked by its server on a
                // consent it checked (an official line of its principal).
                if state(LINE_STATE, "").is_some() && is_marked_recorder(state, &target) {
                    return Ok(());
                }
                for principal in self.joined_principals(state)? {
                    if inviter_acts_for.as_ref() == Some(&principal) {
                        continue;
                    }
                    s.check_may_reach(&target, &principal)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Who is in a line: its principals and the aides marked on it
    /// (`org.hotline.aide`, [`crate::line_aides`]). Nobody else is invited,
    /// joins or knocks; nobody else sends anything but their own leave.
    fn check_line_members(
        &self,
        event: &PduEvent,
        line: &PduEvent,
        state: StateLookup<'_>,
    ) -> Result<()> {
        let principals = line_principals(line);
        let is_principal = |u: &UserId| principals.iter().any(|p| p == u);
        // An aide is on the line while marked for a principal of it whose
        // aide they are now (a revoked aide acts for nobody).
        let marked_aide = |u: &UserId| -> Result<bool> {
            let Some(marked) = state(AIDE_STATE, &user_key(u)).and_then(|m| marked_for(&m)) else {
                return Ok(false);
            };
            Ok(is_principal(&marked) && self.services.principal_of(u)?.as_ref() == Some(&marked))
        };
        let sender = &event.pdu.sender;
        if event.pdu.kind == TimelineEventType::RoomMember {
            let target = event
                .pdu
                .state_key
                .as_deref()
                .and_then(|k| UserId::parse(k).ok());
            let membership = event.content::<RoomMemberEventContent>()?.membership;
            if let Some(target) = target {
                let entering = matches!(
                    membership,
                    MembershipState::Invite | MembershipState::Join | MembershipState::Knock
                );
                if entering
                    && !is_principal(&target)
                    && !is_marked_recorder(state, &target)
                    && !marked_aide(&target)?
                {
                    return Err(Error::forbidden(
                        "Only the line's principals, and the aides a principal brings onto it, are members of a line",
                    ));
                }
                if target == *sender && membership == MembershipState::Leave {
                    return Ok(());
                }
                if entering && target == *sender {
                    return Ok(());
                }
            }
        }
        if is_principal(sender) || marked_aide(sender)? {
            return Ok(());
        }
        Err(Error::forbidden(
            "Only the line's principals and its aides send into a line",
        ))
    }

    /// Whether line state another server sent is its to send. Always by a
    /// principal of the line from that server:
    /// - an aide marking of an aide of theirs from the same server (as its
    ///   government's directory says), or taking any aide off the line;
    /// - their own consent to a personal line, or withdrawing consents;
    /// - their own availability (`org.hotline.availability`);
    /// - the line turned personal once both consents stand, or official
    ///   again, nothing else of it changed.
    fn peer_line_state(&self, event: &PduEvent, state: StateLookup<'_>) -> Result<bool> {
        let Some(line) = state(LINE_STATE, "") else {
            return Ok(false);
        };
        let sender = &event.pdu.sender;
        let principals = line_principals(&line);
        if sender.server_name() == self.services.server_name()
            || !principals.iter().any(|p| p == sender)
        {
            return Ok(false);
        }
        let key = event.pdu.state_key.as_deref().unwrap_or_default();
        match event.pdu.kind.to_string().as_str() {
            AIDE_STATE => {
                let Some(aide) = user_of_key(key) else {
                    return Ok(false);
                };
                match marked_for(event) {
                    None => Ok(true),
                    Some(principal) => Ok(principal == *sender
                        && aide.server_name() == sender.server_name()
                        && self.services.principal_of(&aide)?.as_ref() == Some(sender)),
                }
            }
            RECORD_STATE => Ok(key == user_key(sender) || !consents(event)),
            AVAILABILITY_STATE => Ok(key == user_key(sender)),
            crate::line_recorder::RECORDER_STATE => Ok(!marked_recorder(event)
                || user_of_key(key).is_some_and(|u| u.server_name() == sender.server_name())),
            LINE_STATE if key.is_empty() => {
                let (Ok(mut old), Ok(mut new)) =
                    (line.content::<Value>(), event.content::<Value>())
                else {
                    return Ok(false);
                };
                let official = new.get("official") != Some(&Value::Bool(false));
                for c in [&mut old, &mut new] {
                    if let Some(o) = c.as_object_mut() {
                        o.remove("official");
                        o.remove("record_changed_by");
                    }
                }
                let both_consent = principals
                    .iter()
                    .all(|p| state(RECORD_STATE, &user_key(p)).is_some_and(|e| consents(&e)));
                Ok(old == new && (official || both_consent))
            }
            _ => Ok(false),
        }
    }

    /// The principals among a room's joined members.
    fn joined_principals(&self, state: StateLookup<'_>) -> Result<Vec<OwnedUserId>> {
        // The officials are few; the members may be many.
        let mut out = Vec::new();
        for o in self.services.store.list_officials()? {
            if o.role != "principal" {
                continue;
            }
            let joined = state("m.room.member", &o.user_id).is_some_and(|m| {
                m.content::<RoomMemberEventContent>()
                    .is_ok_and(|c| c.membership == MembershipState::Join)
            });
            if joined {
                if let Ok(u) = UserId::parse(o.user_id.as_str()) {
                    out.push(u);
                }
            }
        }
        Ok(out)
    }

    /// The impersonation guard over every name a room event shows.
    fn check_names(&self, event: &PduEvent) -> Result<()> {
        let s = self.services;
        let sender = event.pdu.sender.as_str();
        let str_field = |field: &str| -> Option<String> {
            event
                .content::<Value>()
                .ok()?
                .get(field)?
                .as_str()
                .map(str::to_owned)
        };
        match *event.pdu.kind {
            TimelineEventType::RoomMember => {
                // A member's name is theirs: the official may show their own.
                if let (Some(name), Some(who)) =
                    (str_field("displayname"), event.pdu.state_key.as_deref())
                {
                    s.guard_name(who, "display name", &name)?;
                }
            }
            TimelineEventType::RoomName => {
                if let Some(name) = str_field("name") {
                    s.guard_name(sender, "room name", &name)?;
                }
            }
            TimelineEventType::RoomTopic => {
                if let Some(topic) = str_field("topic") {
                    s.guard_name(sender, "room topic", &topic)?;
                }
            }
            TimelineEventType::RoomCanonicalAlias => {
                let content: Value = event.content().unwrap_or_default();
                let aliases = content
                    .get("alias")
                    .into_iter()
                    .chain(
                        content
                            .get("alt_aliases")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten(),
                    )
                    .filter_map(Value::as_str);
                for alias in aliases {
                    let local = alias
                        .strip_prefix('#')
                        .and_then(|a| a.split(':').next())
                        .unwrap_or(alias);
                    s.guard_name(sender, "room alias", local)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The principals a line's state names.
pub(crate) fn line_principals(line: &PduEvent) -> Vec<OwnedUserId> {
    line.content::<Value>()
        .ok()
        .and_then(|c| c.get("principals").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|p| UserId::parse(p).ok())
        .collect()
}

impl Services {
    /// The principal an official acts for: themself, or the one they serve;
    /// `None` for everyone else, and for an official whose attestation (or
    /// whose principal's attestation) was revoked: a revoked role grants
    /// nothing.
    pub fn principal_of(&self, user: &UserId) -> Result<Option<OwnedUserId>> {
        if user.server_name() != self.server_name() {
            // Another government's official, as its directory says.
            return Ok(self.peer_principal_of(user));
        }
        let Some(o) = self.store.get_official(user.as_str())? else {
            return Ok(None);
        };
        let principal = match o.role.as_str() {
            "principal" => user.to_owned(),
            "aide" => match o.principal.as_deref().map(UserId::parse) {
                Some(Ok(p)) => p,
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        if self.is_revoked(user)? || (principal != user && self.is_revoked(&principal)?) {
            return Ok(None);
        }
        Ok(Some(principal))
    }

    /// Whether the user's attestation was revoked (and not vouched again).
    fn is_revoked(&self, user: &UserId) -> Result<bool> {
        Ok(self
            .store
            .get_attestation(user.as_str())?
            .is_some_and(|a| a.revoked_ts.is_some()))
    }

    /// The name of `target` when the reach rule protects them (a
    /// principal, of this server or, as its directory says, of a peer
    /// government's); `None` when anyone may reach them.
    pub(crate) fn reach_protected(&self, target: &UserId) -> Result<Option<String>> {
        if target.server_name() != self.server_name() {
            return Ok(self.peer_principal_name(target));
        }
        Ok(self
            .store
            .get_official(target.as_str())?
            .filter(|t| t.role == "principal")
            .map(|t| t.name))
    }

    /// Whether `sender` may reach `target` (invite, room, to-device, one-time
    /// keys): anyone may reach a non-principal; a principal is reached by
    /// themself, their aides, and the principals (and aides) holding a line
    /// with them.
    pub(crate) fn check_may_reach(&self, sender: &UserId, target: &UserId) -> Result<()> {
        if sender == target {
            return Ok(());
        }
        let Some(name) = self.reach_protected(target)? else {
            return Ok(());
        };
        if let Some(p) = self.principal_of(sender)? {
            if p == target || self.store.get_line(p.as_str(), target.as_str())?.is_some() {
                return Ok(());
            }
        }
        Err(Error::forbidden(format!(
            "{name} can only be reached through a direct line: ask their office for a line invite"
        )))
    }

    /// A line pauses (no messages, no calls, no state) while either
    /// principal's attestation is revoked, or their current cross-signing
    /// master key differs from the one their attestation vouches for, until
    /// the office vouches again. Two indexed reads per principal.
    pub(crate) fn check_line_open(&self, line: &PduEvent) -> Result<()> {
        for p in line_principals(line) {
            if p.server_name() != self.server_name() {
                self.check_peer_principal_open(&p)?;
                continue;
            }
            let Some(att) = self.store.get_attestation(p.as_str())? else {
                continue;
            };
            let vouched: Value = serde_json::from_str(&att.json).map_err(Error::internal)?;
            let name = vouched["name"].as_str().unwrap_or(p.as_str());
            if att.revoked_ts.is_some() {
                return Err(Error::forbidden(format!(
                    "This line is paused: the office of {name} revoked their attestation."
                )));
            }
            let current = self.master_public_key(p.as_str())?;
            if current.as_deref() != vouched["master_key"].as_str() {
                return Err(Error::forbidden(format!(
                    "This line is paused: the identity key of {name} changed since their office vouched for it. Their protocol office must vouch again."
                )));
            }
        }
        Ok(())
    }
}
