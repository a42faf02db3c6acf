//! Availability, and the urgent contact that rings through it
//! (docs/DESIGN.md capability 9).
//!
//! **Availability.** A principal, or their aide for them, says
//! `available`, `dnd` (do not disturb) or `asleep`, with an optional
//! `until` and their IANA time zone (`PUT /_hotline/v1/availability`).
//! The server keeps it as the principal's account data
//! (`org.hotline.availability`, which clients cannot write) with an audit
//! entry, in one commit, and then writes it as server-only state of the
//! same type keyed by the principal's [`user_key`] into each line the
//! principal is joined to (one commit per line). Only a line's members see
//! its state, so the availability reaches exactly those who share a line,
//! through `/sync`, as each line commits. A line opened later gets both
//! principals' availability when it opens ([`Services::spread_availability`];
//! across servers, each principal's own server writes theirs).
//! Across servers each server writes its own principal's availability;
//! the seam lets a peer's in for its own principal ([`crate::policy`]).
//!
//! Once `until` is past the effective state is `available`: the server's
//! ringing decision and the web app compute it alike from `until` and now
//! ([`effective_state`]).
//!
//! **Urgent.** Messages are encrypted, so the caller's client says a call
//! or text is urgent with a clear-text timeline event before it,
//! `org.hotline.urgent` (`{"kind": "call"|"text"}`). The seam
//! ([`crate::policy::Seam::check`]) accepts it only in a line, from a
//! member (the line's rule), within the quota: a side of a line (a
//! principal and their aides) makes at most `[lines] urgent_per_day`
//! urgent contacts in any 24 hours (rolling), counted from the line's own
//! events, so redacting one does not give it back. Past the quota it is
//! refused with `429 M_LIMIT_EXCEEDED`, why, and when the oldest of the
//! window leaves it (`retry_after_ms`, `org.hotline.resets_ts`). An
//! accepted one is written to the audit log in the same commit as the
//! event, and the contact log marks the contact it precedes urgent.
//!
//! **Ringing.** One rule decides whether a contact rings a user now
//! ([`Services::rings_for`]): it does unless the user is a principal whose
//! effective availability in that line is `dnd` or `asleep`, and it does
//! anyway when the sender's side sent an accepted urgent signal in the
//! line within [`URGENT_RING_WINDOW_MS`]. The pushers follow it; the web
//! app applies the same rule on its side.

use ruma::events::TimelineEventType;
use ruma::{RoomId, UserId};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::identity::audit;
use crate::pdu::{EventDraft, PduEvent};
use crate::policy::{user_key, StateLookup};
use crate::rooms::Room;
use crate::{now_ms, Error, Result, Services};

/// A principal's availability: account data of the principal, and
/// server-only state keyed by their [`user_key`] in each of their lines.
pub const AVAILABILITY_STATE: &str = "org.hotline.availability";

/// The clear-text signal that the call or text following it is urgent.
pub const URGENT_EVENT: &str = "org.hotline.urgent";

/// The urgent quota's window: a rolling day.
pub const URGENT_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// How long after an accepted urgent signal its sender's side's call or
/// text still rings through: long enough for the call that follows it,
/// short enough that one signal does not open the line for the night.
pub const URGENT_RING_WINDOW_MS: i64 = 2 * 60 * 1000;

/// `PUT /_hotline/v1/availability[/{userId}]`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAvailability {
    pub state: String,
    #[serde(default)]
    pub until: Option<i64>,
    #[serde(default)]
    pub tz: Option<String>,
}

/// The state an availability content says now: `dnd` and `asleep` hold
/// until their `until` (if any), then it is `available`.
pub fn effective_state(content: &Value, now: i64) -> &str {
    let state = content["state"].as_str().unwrap_or("available");
    match content["until"].as_i64() {
        Some(until) if until <= now => "available",
        _ => state,
    }
}

/// Whether a state stops a non-urgent contact from ringing.
fn quiet(state: &str) -> bool {
    matches!(state, "dnd" | "asleep")
}

/// An IANA zone name as the web app's `Intl` takes it (`Europe/Paris`,
/// `UTC`, `America/Argentina/Buenos_Aires`, `Etc/GMT+3`): checked for shape
/// only, the server holding no zone database.
fn valid_tz(tz: &str) -> bool {
    !tz.is_empty()
        && tz.len() <= 64
        && tz
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'))
        && !tz.starts_with('/')
        && !tz.contains("//")
}

impl Services {
    /// Whether `target` is a principal and `actor` is them or their aide.
    fn availability_subject(&self, actor: &UserId, target: &UserId) -> Result<bool> {
        Ok(self.principal_of(actor)?.as_deref() == Some(target)
            && self.principal_of(target)?.as_deref() == Some(target))
    }

    /// `PUT /_hotline/v1/availability/{userId}`: `actor` (the principal or
    /// their aide) sets `principal`'s availability. Answers what was set.
    pub async fn set_availability(
        &self,
        actor: &UserId,
        principal: &UserId,
        body: SetAvailability,
    ) -> Result<Value> {
        if principal.server_name() != self.server_name()
            || !self.availability_subject(actor, principal)?
        {
            return Err(Error::forbidden(
                "Only a principal and their aides set the principal's availability",
            ));
        }
        if !matches!(body.state.as_str(), "available" | "dnd" | "asleep") {
            return Err(Error::invalid_param("state is available, dnd or asleep"));
        }
        let now = now_ms();
        if body.until.is_some_and(|u| u <= now) {
            return Err(Error::invalid_param("until is in the past"));
        }
        let tz = match body.tz {
            Some(tz) if valid_tz(&tz) => tz,
            Some(_) => {
                return Err(Error::invalid_param(
                    "tz is an IANA time zone name, like Europe/Paris",
                ))
            }
            // Kept from before: an aide changing the state need not know it.
            None => self
                .availability_of(principal)?
                .and_then(|c| c["tz"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "UTC".to_owned()),
        };
        let place = self
            .store
            .get_official(principal.as_str())?
            .map(|o| o.country)
            .unwrap_or_default();
        let until = if body.state == "available" {
            None
        } else {
            body.until
        };
        let content = json!({
            "state": body.state,
            "until": until,
            "tz": tz,
            "place": place,
            "set_by": actor,
            "set_ts": now,
        });
        // The record first, with its audit entry: a line that misses its
        // copy (a crash between commits) gets it on the next change.
        self.store
            .write(hotline_store::WriteBatch {
                ops: vec![
                    hotline_store::WriteOp::PutAccountData {
                        user_id: principal.to_string(),
                        room_id: String::new(),
                        kind: AVAILABILITY_STATE.to_owned(),
                        content: content.to_string(),
                    },
                    audit(
                        actor.as_str(),
                        "availability_set",
                        principal.as_str(),
                        json!({"state": body.state, "until": until, "tz": content["tz"]}),
                    ),
                ],
            })
            .await?;
        for line in self.store.lines_of(principal.as_str())? {
            let Ok(room_id) = ruma::OwnedRoomId::try_from(line.room_id) else {
                continue;
            };
            self.write_availability_state(&room_id, principal, &content)
                .await?;
        }
        Ok(content)
    }

    /// Writes `principal`'s availability `content` into the line
    /// `room_id`, if they are joined to it.
    async fn write_availability_state(
        &self,
        room_id: &RoomId,
        principal: &UserId,
        content: &Value,
    ) -> Result<()> {
        let Ok(room) = self.room(room_id) else {
            return Ok(());
        };
        if !room.is_joined(principal) {
            return Ok(());
        }
        let draft = EventDraft::new(
            TimelineEventType::from(AVAILABILITY_STATE),
            content,
            Some(user_key(principal)),
        )?;
        self.append_server_events(&room, principal, vec![draft])
            .await?;
        Ok(())
    }

    /// A line just opened gets its local principals' availability, when
    /// they set one.
    pub(crate) async fn spread_availability(
        &self,
        room_id: &RoomId,
        principals: &[&UserId],
    ) -> Result<()> {
        for p in principals {
            if p.server_name() != self.server_name() {
                continue;
            }
            if let Some(content) = self.availability_of(p)? {
                self.write_availability_state(room_id, p, &content).await?;
            }
        }
        Ok(())
    }

    /// A local principal's availability record, if they set one.
    fn availability_of(&self, principal: &UserId) -> Result<Option<Value>> {
        Ok(self
            .store
            .get_account_data(principal.as_str(), "", AVAILABILITY_STATE)?
            .and_then(|r| serde_json::from_str(&r.content).ok()))
    }

    /// `GET /_hotline/v1/availability/{userId}`: a principal's
    /// availability, for the principal, their aides, and those sharing a
    /// line with them; `403` for anyone else, whether or not `target` is a
    /// principal, so the answer tells a stranger nothing. Never set:
    /// `available`. The answer carries `effective`, the state now.
    pub fn get_availability(&self, reader: &UserId, target: &UserId) -> Result<Value> {
        let refused = || {
            Error::forbidden(
                "A principal's availability is shown to those who share a line with them",
            )
        };
        let own_side = self.principal_of(reader)?;
        let content =
            if own_side.as_deref() == Some(target) && target.server_name() == self.server_name() {
                self.availability_of(target)?
            } else {
                // From a line both hold: what its members see.
                let Some(reader_p) = own_side else {
                    return Err(refused());
                };
                let Some(line) = self.store.get_line(reader_p.as_str(), target.as_str())? else {
                    return Err(refused());
                };
                let room_id = ruma::OwnedRoomId::try_from(line.room_id).map_err(Error::internal)?;
                let room = self.room(&room_id)?;
                if !room.is_joined(reader) {
                    return Err(refused());
                }
                room.state_event(AVAILABILITY_STATE, &user_key(target))
                    .and_then(|e| e.content::<Value>().ok())
            };
        let mut content = content.unwrap_or_else(|| json!({"state": "available", "until": null}));
        let effective = effective_state(&content, now_ms()).to_owned();
        content["effective"] = json!(effective);
        content["user_id"] = json!(target);
        Ok(content)
    }

    /// Whether a contact from `sender` in `room` rings `user` at `at_ms`
    /// (the one rule the pushers and the web app follow): yes, unless
    /// `user` is a principal whose effective availability in the room is
    /// `dnd` or `asleep` and the sender's side sent no accepted urgent
    /// signal in the room within [`URGENT_RING_WINDOW_MS`] before `at_ms`.
    pub fn rings_for(
        &self,
        room: &Room,
        user: &UserId,
        sender: &UserId,
        at_ms: i64,
    ) -> Result<bool> {
        let Some(content) = room
            .state_event(AVAILABILITY_STATE, &user_key(user))
            .and_then(|e| e.content::<Value>().ok())
        else {
            return Ok(true);
        };
        if !quiet(effective_state(&content, at_ms)) {
            return Ok(true);
        }
        let recent =
            self.urgent_signals(room.id.as_str(), sender, at_ms - URGENT_RING_WINDOW_MS)?;
        Ok(recent.iter().any(|ts| *ts <= at_ms + 1_000))
    }

    /// The times of the accepted urgent signals in `room_id` since
    /// `since_ms` by `sender`'s side (the sender, or everyone acting for
    /// the same principal), newest first. Reads the room's events back to
    /// `since_ms`, parsing only those that name the urgent type.
    fn urgent_signals(&self, room_id: &str, sender: &UserId, since_ms: i64) -> Result<Vec<i64>> {
        let side = self.principal_of(sender)?;
        let mut out = Vec::new();
        let mut before = i64::MAX;
        'pages: loop {
            let page = self.store.room_events_backward(room_id, before, 200)?;
            let Some(last) = page.last() else { break };
            before = last.pos;
            for row in &page {
                // Cheap filter first: most events are not urgent signals.
                let named = row.json.contains(URGENT_EVENT);
                let event: Value = if named {
                    serde_json::from_str(&row.json).unwrap_or_default()
                } else {
                    // Only its time is needed, to know where to stop.
                    let ts = serde_json::from_str::<TsOnly>(&row.json)
                        .map(|t| t.origin_server_ts)
                        .unwrap_or(i64::MAX);
                    if ts < since_ms {
                        break 'pages;
                    }
                    continue;
                };
                let ts = event["origin_server_ts"].as_i64().unwrap_or_default();
                if ts < since_ms {
                    break 'pages;
                }
                if event["type"] != URGENT_EVENT || event.get("state_key").is_some() {
                    continue;
                }
                let by = event["sender"].as_str().and_then(|s| UserId::parse(s).ok());
                let Some(by) = by else { continue };
                let same_side = by == sender || (side.is_some() && self.principal_of(&by)? == side);
                if same_side {
                    out.push(ts);
                }
            }
            if page.len() < 200 {
                break;
            }
        }
        Ok(out)
    }

    /// The urgent quota of `[lines] urgent_per_day`.
    fn urgent_quota(&self) -> usize {
        self.config.lines.urgent_per_day as usize
    }

    /// `GET /_hotline/v1/lines/{roomId}/urgent`: how many urgent contacts
    /// `user`'s side has left in the line now, and when the next one comes
    /// back (`resets_ts`, `null` while none is used).
    pub fn urgent_remaining(&self, user: &UserId, room_id: &RoomId) -> Result<Value> {
        let (room, _, _) = self.line_room(room_id)?;
        if !room.is_joined(user) {
            return Err(Error::forbidden("You are not joined to this line"));
        }
        let now = now_ms();
        let used = self.urgent_signals(room_id.as_str(), user, now - URGENT_WINDOW_MS)?;
        let limit = self.urgent_quota();
        Ok(json!({
            "limit": limit,
            "remaining": limit.saturating_sub(used.len()),
            "resets_ts": used.last().map(|oldest| oldest + URGENT_WINDOW_MS),
        }))
    }

    /// The seam's rule for an urgent signal: in a line (membership is the
    /// line's own rule), as a timeline event with a known `kind`, and
    /// within the sender's side's quota.
    pub(crate) fn check_urgent(&self, event: &PduEvent, state: StateLookup<'_>) -> Result<()> {
        if event.pdu.state_key.is_some() {
            return Err(Error::forbidden("org.hotline.urgent is no state"));
        }
        if state(crate::policy::LINE_STATE, "").is_none() {
            return Err(Error::forbidden("Urgent contacts are made on a line"));
        }
        let content: Value = event.content()?;
        if !matches!(content["kind"].as_str(), Some("call" | "text")) {
            return Err(Error::bad_json("org.hotline.urgent's kind is call or text"));
        }
        let ts: i64 = event.pdu.origin_server_ts.get().into();
        let used = self.urgent_signals(
            event.room_id.as_str(),
            &event.pdu.sender,
            ts - URGENT_WINDOW_MS,
        )?;
        let limit = self.urgent_quota();
        if used.len() >= limit {
            // The window frees its oldest use first.
            let oldest = used
                .get(limit.saturating_sub(1))
                .or(used.last())
                .copied()
                .unwrap_or(ts);
            let resets = oldest + URGENT_WINDOW_MS;
            return Err(Error::UrgentQuota {
                message: format!(
                    "Urgent contacts on this line are limited to {limit} a day, and all {limit} are used. The next one is available at {} UTC. You can still call or text without urgency.",
                    crate::contact_log::iso8601(resets).replace('T', " ").trim_end_matches('Z')
                ),
                retry_after_ms: (resets - now_ms()).max(0) as u64,
                resets_ts: resets,
            });
        }
        Ok(())
    }
}

/// An event's time, read without the rest of it.
#[derive(Deserialize)]
struct TsOnly {
    origin_server_ts: i64,
}

/// The audit entry of an accepted urgent signal, written in the same
/// commit as the event.
pub(crate) fn urgent_audit(event: &PduEvent) -> Option<hotline_store::WriteOp> {
    if event.pdu.kind.to_string() != URGENT_EVENT || event.pdu.state_key.is_some() {
        return None;
    }
    let content: Value = event.content().unwrap_or_default();
    Some(audit(
        event.pdu.sender.as_str(),
        "urgent_contact",
        event.room_id.as_str(),
        json!({"kind": content["kind"], "event_id": event.event_id, "call_id": content.get("call_id")}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_past_its_until_is_available() {
        let c = json!({"state": "asleep", "until": 1000});
        assert_eq!(effective_state(&c, 999), "asleep");
        assert_eq!(effective_state(&c, 1000), "available");
        let open = json!({"state": "dnd", "until": null});
        assert_eq!(effective_state(&open, i64::MAX), "dnd");
    }

    #[test]
    fn time_zones_are_checked_for_shape() {
        for ok in [
            "Europe/Paris",
            "UTC",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+3",
        ] {
            assert!(valid_tz(ok), "{ok}");
        }
        for bad in ["", "/etc/passwd", "Europe//Paris", "Paris; DROP", "a\u{0}b"] {
            assert!(!valid_tz(bad), "{bad:?}");
        }
    }
}
