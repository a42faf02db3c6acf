//! Official or personal (docs/DESIGN.md capability 7): a line is official,
//! and so recorded, unless both principals together make it personal.
//!
//! `PUT /_hotline/v1/lines/{roomId}/record` with `{"official": false}` is
//! one principal's consent to a personal line, written by the server as
//! `org.hotline.record` state keyed `_` and the principal's user id
//! (`{"personal": true}`). When the other principal's consent is already
//! there, the same commit turns the line personal: `org.hotline.line` with
//! `official: false`. Either principal alone makes it official again
//! (`{"official": true}`), which also withdraws both consents. A protocol
//! office that keeps every line official (`personal_lines = false` in its
//! server's configuration) has its principals' consents refused.
//! Every change is a state event in the line, so both sides see it as it
//! happens, and an entry in the audit log.
//!
//! Across servers each server writes its own principal's consent; the
//! seam lets a peer's consent in for its own principal, and the line's
//! turn to personal only when both consents stand ([`crate::policy`]).

use ruma::events::TimelineEventType;
use ruma::{RoomId, UserId};
use serde_json::{json, Value};

use crate::identity::audit;
use crate::pdu::{EventDraft, PduEvent};
use crate::policy::{user_key, LINE_STATE};
use crate::{Error, Result, Services};

/// A principal's consent to a personal line; keyed by their
/// [`user_key`].
pub const RECORD_STATE: &str = "org.hotline.record";

/// Whether a consent event says personal.
pub(crate) fn consents(event: &PduEvent) -> bool {
    event
        .content::<Value>()
        .is_ok_and(|c| c.get("personal") == Some(&Value::Bool(true)))
}

/// Whether a line's state says official (the default).
pub(crate) fn is_official(line: &PduEvent) -> bool {
    line.content::<Value>()
        .is_ok_and(|c| c.get("official") != Some(&Value::Bool(false)))
}

impl Services {
    /// `PUT /_hotline/v1/lines/{roomId}/record`: `principal` asks for the
    /// line to be official or personal. Answers whether it is official now.
    pub async fn set_line_record(
        &self,
        principal: &UserId,
        room_id: &RoomId,
        official: bool,
    ) -> Result<bool> {
        let (room, line, principals) = self.line_room(room_id)?;
        if !principals.iter().any(|p| p == principal)
            || self.principal_of(principal)?.as_deref() != Some(principal)
        {
            return Err(Error::forbidden(
                "Only the line's principals decide whether it is official",
            ));
        }
        self.require_joined(&room, principal)?;
        let consent = |p: &UserId| {
            room.state_event(RECORD_STATE, &user_key(p))
                .is_some_and(|e| consents(&e))
        };
        let now_official = is_official(&line);
        let mut drafts = Vec::new();
        let mut line_content: Value = line.content()?;
        let mut official_after = now_official;
        let action;
        if official {
            if now_official && !principals.iter().any(|p| consent(p)) {
                return Ok(true);
            }
            for p in principals.iter().filter(|p| consent(p)) {
                // Withdrawn: consents are the principals' own to give, but
                // making the line official again ends the request for both.
                drafts.push(EventDraft::new(
                    TimelineEventType::from(RECORD_STATE),
                    &json!({"withdrawn_by": principal}),
                    Some(user_key(p)),
                )?);
            }
            if !now_official {
                official_after = true;
                line_content["official"] = json!(true);
                line_content["record_changed_by"] = json!(principal);
                drafts.push(EventDraft::new(
                    TimelineEventType::from(LINE_STATE),
                    &line_content,
                    Some(String::new()),
                )?);
            }
            action = "line_made_official";
        } else {
            if !self.config.personal_lines {
                return Err(Error::forbidden(
                    "Your protocol office keeps every line official: it cannot be made personal",
                ));
            }
            if !now_official {
                return Ok(false);
            }
            if !consent(principal) {
                drafts.push(EventDraft::new(
                    TimelineEventType::from(RECORD_STATE),
                    &json!({"personal": true}),
                    Some(user_key(principal)),
                )?);
            }
            let other_agrees = principals
                .iter()
                .filter(|p| *p != principal)
                .all(|p| consent(p));
            if other_agrees {
                official_after = false;
                line_content["official"] = json!(false);
                line_content["record_changed_by"] = json!(principal);
                drafts.push(EventDraft::new(
                    TimelineEventType::from(LINE_STATE),
                    &line_content,
                    Some(String::new()),
                )?);
                // Not recorded from now on: the records offices leave.
                drafts.extend(self.recorder_removals(&room, principal)?);
                action = "line_made_personal";
            } else {
                action = "line_personal_asked";
            }
        }
        if drafts.is_empty() {
            return Ok(now_official);
        }
        self.append_server_events_with(
            &room,
            principal,
            drafts,
            vec![audit(
                principal.as_str(),
                action,
                room_id.as_str(),
                json!({"official": official}),
            )],
        )
        .await?;
        Ok(official_after)
    }
}
