//! The contact log (docs/DESIGN.md capability 10): per principal, who
//! texted or called whom, when, and for how long. Metadata only, read from
//! what the server already holds of the principal's lines: each event's
//! sender, time and type, and the relations and call memberships that stay
//! in clear text. Nothing inside an encrypted event is read.
//!
//! What counts:
//! - **a text:** an `m.room.encrypted`, `m.room.message` or `m.sticker`
//!   event that is not an edit (`m.replace`) or a reaction
//!   (`m.annotation`), by its clear-text `m.relates_to`;
//! - **a call:** a MatrixRTC session (MSC4143 `m.call.member` state, and
//!   MSC3401's `org.matrix.msc3401.call.member`), from its first member's
//!   join to its last member's leave (or the membership's `expires`);
//!   answered when both sides of the line were in it, and lasting as long
//!   as both were. A clear-text 1:1 call (`m.call.invite`, `m.call.answer`,
//!   `m.call.hangup`, as clients send them in unencrypted rooms) counts
//!   too. (In an encrypted room a 1:1 call's events are encrypted and
//!   cannot be told from texts: line calls use MatrixRTC.)
//! - **urgent:** a call or text that an accepted `org.hotline.urgent`
//!   signal of its side announced ([`crate::availability`]): the side's
//!   next call (for `kind: call`) or text (`kind: text`) within
//!   [`URGENT_RING_WINDOW_MS`] of it; a signal followed by no such contact
//!   is listed on its own, kind `urgent`. (An event whose clear-text
//!   content says `"org.hotline.urgent": true` counts as urgent too.)
//!
//! The side of a sender is the principal's when they are the principal or
//! an aide the line's marking names for them (`org.hotline.aide`), as the
//! line's events up to then say; the counterpart's otherwise. The records
//! office's archiver and anyone else count for neither.
//!
//! Served to the principal, their aides and their office
//! (`GET /_hotline/v1/contact_log`, `hotline admin contact-log`), as JSON or
//! CSV. Read on request by paging through each line's events: a few
//! thousand events a line is milliseconds.

use std::collections::{BTreeMap, HashMap, HashSet};

use ruma::UserId;
use serde::Serialize;
use serde_json::Value;

use crate::availability::{URGENT_EVENT, URGENT_RING_WINDOW_MS};
use crate::line_aides::AIDE_STATE;

/// The state types of a MatrixRTC call membership: MSC4143's and MSC3401's
/// (keyed `_@user:server_DEVICE`).
pub const CALL_MEMBER_TYPES: [&str; 2] = ["m.call.member", "org.matrix.msc3401.call.member"];
use crate::{Error, Result, Services};

/// One text or call in a principal's contact log.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ContactEntry {
    /// `text`, `call`, or `urgent` (an urgent signal no contact followed).
    pub kind: &'static str,
    /// `outgoing` (the principal's side sent it or placed the call) or
    /// `incoming`.
    pub direction: &'static str,
    /// The other principal of the line.
    pub counterpart: String,
    /// Who sent it or placed the call: a principal or an aide.
    pub by: String,
    /// When (milliseconds since the epoch, the origin server's clock).
    pub ts: i64,
    /// A call's length while both sides were on it; `None` for a text, an
    /// unanswered call, or one still going on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// Whether the other side joined the call; `None` for a text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered: Option<bool>,
    /// Whether the call is still going on; `None` for a text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ongoing: Option<bool>,
    pub urgent: bool,
    pub room_id: String,
    /// The event that placed the call or carried the text.
    pub event_id: String,
}

/// The window asked for (milliseconds since the epoch, both optional).
#[derive(Debug, Default, Clone, Copy)]
pub struct Window {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl Window {
    fn holds(&self, ts: i64) -> bool {
        self.from.is_none_or(|f| ts >= f) && self.to.is_none_or(|t| ts < t)
    }
}

impl Services {
    /// Whose contact log `requester` may read: their own as a principal,
    /// their principal's as an aide. `principal` names it when given.
    pub fn contact_log_subject(
        &self,
        requester: &UserId,
        principal: Option<&UserId>,
    ) -> Result<ruma::OwnedUserId> {
        let acts_for = self.principal_of(requester)?;
        match (principal, acts_for) {
            (None, Some(p)) => Ok(p),
            (Some(asked), Some(p)) if asked == p => Ok(p),
            _ => Err(Error::forbidden(
                "A contact log is read by its principal, their aides and their office",
            )),
        }
    }

    /// The contact log of `principal`, oldest first.
    pub fn contact_log(&self, principal: &UserId, window: Window) -> Result<Vec<ContactEntry>> {
        let mut out = Vec::new();
        for line in self.store.lines_of(principal.as_str())? {
            let counterpart = if line.principal_a == principal.as_str() {
                line.principal_b.clone()
            } else {
                line.principal_a.clone()
            };
            let mut reader = LineReader::new(principal.as_str(), &counterpart, &line.room_id);
            let mut after = 0;
            loop {
                let page = self.store.room_events_forward(&line.room_id, after, 500)?;
                let Some(last) = page.last() else { break };
                after = last.pos;
                for row in &page {
                    if let Ok(event) = serde_json::from_str::<Value>(&row.json) {
                        reader.read(&row.event_id, &event);
                    }
                }
            }
            out.extend(reader.finish(crate::now_ms()));
        }
        out.retain(|e| window.holds(e.ts));
        // Stable: contacts of one line in the same millisecond keep their
        // order in the line.
        out.sort_by_key(|e| e.ts);
        Ok(out)
    }
}

/// Which side of the line someone is on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Side {
    Ours,
    Theirs,
}

/// A MatrixRTC session being read: who is in it now, and when each side
/// was.
struct Session {
    event_id: String,
    started: i64,
    by: String,
    side: Side,
    urgent: bool,
    /// Member key (state key) → (side, when their membership ends by
    /// itself, if it says).
    members: HashMap<String, (Side, Option<i64>)>,
    /// When both sides were last found in it, while they still are.
    both_since: Option<i64>,
    both_ms: i64,
    answered: bool,
}

impl Session {
    fn sides(&self) -> HashSet<Side> {
        self.members.values().map(|(s, _)| *s).collect()
    }

    /// Members whose membership ran out by `now`, taken out at their end.
    fn expire(&mut self, now: i64) {
        loop {
            let next = self
                .members
                .iter()
                .filter_map(|(k, (_, end))| end.filter(|e| *e <= now).map(|e| (e, k.clone())))
                .min();
            let Some((end, key)) = next else { return };
            self.leave(&key, end);
        }
    }

    fn join(&mut self, key: String, side: Side, end: Option<i64>, ts: i64) {
        self.members.insert(key, (side, end));
        if self.sides().len() == 2 && self.both_since.is_none() {
            self.both_since = Some(ts);
            self.answered = true;
        }
    }

    fn leave(&mut self, key: &str, ts: i64) {
        self.members.remove(key);
        if self.sides().len() < 2 {
            if let Some(since) = self.both_since.take() {
                self.both_ms += (ts - since).max(0);
            }
        }
    }
}

/// Reads one line's events in order into contact entries.
struct LineReader<'a> {
    principal: &'a str,
    counterpart: &'a str,
    room_id: &'a str,
    /// Aide → the principal the line's marking names (while marked).
    aides: HashMap<String, String>,
    /// Call id → the session going on.
    sessions: BTreeMap<String, Session>,
    /// Clear-text 1:1 calls: call id → (invite event, caller, side, invite
    /// time, answer time, urgent).
    voip: HashMap<String, (String, String, Side, i64, Option<i64>, bool)>,
    entries: Vec<ContactEntry>,
    /// Encrypted events counted as texts, which a call's encrypted
    /// signalling may turn out to be (see [`SIGNALLING_GRACE_MS`]).
    encrypted: HashSet<String>,
    /// Each user's times in a MatrixRTC call: (joined, left).
    in_call: HashMap<String, Vec<(i64, Option<i64>)>>,
    /// Urgent signals waiting for the contact they announce: (side, kind)
    /// → (signal event, sender, time).
    urgent: HashMap<(Side, String), (String, String, i64)>,
}

/// A 1:1 call's signalling in an encrypted room is encrypted too, so it
/// cannot be told from a text by its type. An encrypted event that a
/// user sends while their MatrixRTC membership says they are in a call is
/// taken for signalling, not a text; so is one this long before they join
/// (an answer may land before the membership) or [`SIGNALLING_AFTER_MS`]
/// after they leave (a hangup queued before the membership's end may land
/// after it). A text typed during a call is therefore not in the log as a
/// text: a known limit until line calls signal over to-device messages.
const SIGNALLING_GRACE_MS: i64 = 3_000;
/// See [`SIGNALLING_GRACE_MS`].
const SIGNALLING_AFTER_MS: i64 = 1_000;

impl<'a> LineReader<'a> {
    fn new(principal: &'a str, counterpart: &'a str, room_id: &'a str) -> Self {
        LineReader {
            principal,
            counterpart,
            room_id,
            aides: HashMap::new(),
            sessions: BTreeMap::new(),
            voip: HashMap::new(),
            entries: Vec::new(),
            encrypted: HashSet::new(),
            in_call: HashMap::new(),
            urgent: HashMap::new(),
        }
    }

    fn side(&self, user: &str) -> Option<Side> {
        let of = |p: &str| {
            if p == self.principal {
                Some(Side::Ours)
            } else if p == self.counterpart {
                Some(Side::Theirs)
            } else {
                None
            }
        };
        of(user).or_else(|| self.aides.get(user).and_then(|p| of(p)))
    }

    fn entry(
        &self,
        kind: &'static str,
        side: Side,
        by: &str,
        ts: i64,
        event_id: &str,
    ) -> ContactEntry {
        ContactEntry {
            kind,
            direction: match side {
                Side::Ours => "outgoing",
                Side::Theirs => "incoming",
            },
            counterpart: self.counterpart.to_owned(),
            by: by.to_owned(),
            ts,
            duration_ms: None,
            answered: None,
            ongoing: None,
            urgent: false,
            room_id: self.room_id.to_owned(),
            event_id: event_id.to_owned(),
        }
    }

    fn read(&mut self, event_id: &str, event: &Value) {
        let kind = event["type"].as_str().unwrap_or_default();
        let sender = event["sender"].as_str().unwrap_or_default();
        let ts = event["origin_server_ts"].as_i64().unwrap_or_default();
        let content = &event["content"];
        let state_key = event["state_key"].as_str();
        let urgent = content["org.hotline.urgent"] == Value::Bool(true);
        self.expire_urgent(ts);
        for session in self.sessions.values_mut() {
            session.expire(ts);
        }
        self.close_empty_sessions();
        match (kind, state_key) {
            (AIDE_STATE, Some(key)) => {
                let aide = crate::policy::user_of_key(key)
                    .map_or_else(|| key.to_owned(), |u| u.to_string());
                match content["principal"].as_str() {
                    Some(p) => {
                        self.aides.insert(aide, p.to_owned());
                    }
                    None => {
                        self.aides.remove(&aide);
                    }
                }
            }
            (URGENT_EVENT, None) => {
                // A redacted signal lost its kind, not its place on the record.
                let k = content["kind"].as_str().unwrap_or("redacted");
                if let Some(side) = self.side(sender) {
                    // A signal still waiting is listed on its own.
                    let before = self.urgent.insert(
                        (side, k.to_owned()),
                        (event_id.to_owned(), sender.to_owned(), ts),
                    );
                    if let Some((id, by, at)) = before {
                        let mut e = self.entry("urgent", side, &by, at, &id);
                        e.urgent = true;
                        self.entries.push(e);
                    }
                }
            }
            ("m.call.member" | "org.matrix.msc3401.call.member", Some(key)) => {
                self.call_member(event_id, key, sender, ts, content, urgent)
            }
            ("m.room.encrypted" | "m.room.message" | "m.sticker", None) => {
                let rel = content["m.relates_to"]["rel_type"].as_str();
                if matches!(rel, Some("m.replace" | "m.annotation")) {
                    return;
                }
                if let Some(side) = self.side(sender) {
                    let mut e = self.entry("text", side, sender, ts, event_id);
                    e.urgent = urgent || self.take_urgent(side, "text");
                    self.entries.push(e);
                    if kind == "m.room.encrypted" {
                        self.encrypted.insert(event_id.to_owned());
                    }
                }
            }
            ("m.call.invite", None) => {
                if let (Some(side), Some(call)) = (self.side(sender), content["call_id"].as_str()) {
                    let urgent =
                        urgent || (!self.voip.contains_key(call) && self.take_urgent(side, "call"));
                    self.voip.entry(call.to_owned()).or_insert((
                        event_id.to_owned(),
                        sender.to_owned(),
                        side,
                        ts,
                        None,
                        urgent,
                    ));
                }
            }
            ("m.call.answer", None) => {
                if let Some(call) = content["call_id"]
                    .as_str()
                    .and_then(|c| self.voip.get_mut(c))
                {
                    call.4.get_or_insert(ts);
                }
            }
            ("m.call.hangup" | "m.call.reject", None) => {
                if let Some(call) = content["call_id"]
                    .as_str()
                    .and_then(|c| self.voip.remove(c))
                {
                    self.push_voip(call, Some(ts));
                }
            }
            _ => {}
        }
    }

    fn push_voip(
        &mut self,
        call: (String, String, Side, i64, Option<i64>, bool),
        end: Option<i64>,
    ) {
        let (event_id, by, side, ts, answered_at, urgent) = call;
        let mut e = self.entry("call", side, &by, ts, &event_id);
        e.urgent = urgent;
        e.answered = Some(answered_at.is_some());
        e.ongoing = Some(end.is_none());
        e.duration_ms = match (answered_at, end) {
            (Some(a), Some(end)) => Some((end - a).max(0)),
            _ => None,
        };
        self.entries.push(e);
    }

    /// One member's MatrixRTC membership changed. Content with an
    /// `application` (MSC4143) or a non-empty `memberships` list (MSC3401)
    /// is a join; empty content, a leave.
    fn call_member(
        &mut self,
        event_id: &str,
        key: &str,
        sender: &str,
        ts: i64,
        content: &Value,
        urgent: bool,
    ) {
        let memberships: Vec<&Value> = match content["memberships"].as_array() {
            Some(list) => list.iter().collect(),
            None if content.get("application").is_some() => vec![content],
            None => Vec::new(),
        };
        let spans = self.in_call.entry(sender.to_owned()).or_default();
        let open = spans.last().is_some_and(|(_, left)| left.is_none());
        match (memberships.is_empty(), open) {
            (false, false) => spans.push((ts, None)),
            (true, true) => {
                if let Some(last) = spans.last_mut() {
                    last.1 = Some(ts);
                }
            }
            _ => {}
        }
        // A member leaves the sessions they were in, then joins the ones
        // their membership names now.
        let ids: Vec<String> = self.sessions.keys().cloned().collect();
        for id in &ids {
            if let Some(s) = self.sessions.get_mut(id) {
                if s.members.contains_key(key) {
                    s.leave(key, ts);
                }
            }
        }
        let Some(side) = self.side(sender) else {
            self.close_empty_sessions();
            return;
        };
        for m in memberships {
            let call_id = m["call_id"].as_str().unwrap_or_default().to_owned();
            let urgent =
                urgent || (!self.sessions.contains_key(&call_id) && self.take_urgent(side, "call"));
            let end = m["expires"]
                .as_i64()
                .map(|e| m["created_ts"].as_i64().unwrap_or(ts) + e)
                .or_else(|| m["expires_ts"].as_i64());
            let session = self.sessions.entry(call_id).or_insert_with(|| Session {
                event_id: event_id.to_owned(),
                started: ts,
                by: sender.to_owned(),
                side,
                urgent,
                members: HashMap::new(),
                both_since: None,
                both_ms: 0,
                answered: false,
            });
            session.join(key.to_owned(), side, end, ts);
        }
        self.close_empty_sessions();
    }

    /// The urgent signal of `side` waiting for a contact of `kind`, taken.
    fn take_urgent(&mut self, side: Side, kind: &str) -> bool {
        self.urgent.remove(&(side, kind.to_owned())).is_some()
    }

    /// Urgent signals no contact followed in time are listed on their own.
    fn expire_urgent(&mut self, now: i64) {
        let stale: Vec<(Side, String)> = self
            .urgent
            .iter()
            .filter(|(_, (_, _, ts))| now.saturating_sub(*ts) > URGENT_RING_WINDOW_MS)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            if let Some((event_id, by, ts)) = self.urgent.remove(&key) {
                let mut e = self.entry("urgent", key.0, &by, ts, &event_id);
                e.urgent = true;
                self.entries.push(e);
            }
        }
    }

    fn close_empty_sessions(&mut self) {
        let ended: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.members.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for id in ended {
            if let Some(s) = self.sessions.remove(&id) {
                self.push_session(s, false);
            }
        }
    }

    fn push_session(&mut self, s: Session, ongoing: bool) {
        let mut e = self.entry("call", s.side, &s.by, s.started, &s.event_id);
        e.urgent = s.urgent;
        e.answered = Some(s.answered);
        e.ongoing = Some(ongoing);
        e.duration_ms = (s.answered && !ongoing).then_some(s.both_ms);
        self.entries.push(e);
    }

    /// The entries, with the calls still going on at `now`.
    fn finish(mut self, now: i64) -> Vec<ContactEntry> {
        // Signals still waiting for their contact are listed as they are.
        self.expire_urgent(i64::MAX);
        for session in self.sessions.values_mut() {
            session.expire(now);
        }
        self.close_empty_sessions();
        let open: Vec<Session> = std::mem::take(&mut self.sessions).into_values().collect();
        for s in open {
            self.push_session(s, true);
        }
        let calls: Vec<_> = self.voip.drain().map(|(_, c)| c).collect();
        for c in calls {
            self.push_voip(c, None);
        }
        let (encrypted, in_call) = (&self.encrypted, &self.in_call);
        self.entries.retain(|e| {
            let signalling = e.kind == "text"
                && encrypted.contains(&e.event_id)
                && in_call.get(&e.by).is_some_and(|spans| {
                    spans.iter().any(|(joined, left)| {
                        e.ts >= joined - SIGNALLING_GRACE_MS
                            && left.is_none_or(|l| e.ts <= l + SIGNALLING_AFTER_MS)
                    })
                });
            !signalling
        });
        self.entries
    }
}

/// The log as CSV (RFC 4180), one row an entry, times in UTC (ISO 8601).
pub fn to_csv(entries: &[ContactEntry]) -> String {
    let mut out = String::from(
        "time_utc,kind,direction,counterpart,by,duration_s,answered,urgent,room_id,event_id\r\n",
    );
    for e in entries {
        let fields = [
            iso8601(e.ts),
            e.kind.to_owned(),
            e.direction.to_owned(),
            e.counterpart.clone(),
            e.by.clone(),
            e.duration_ms
                .map(|d| format!("{}", d / 1000))
                .unwrap_or_default(),
            e.answered.map(|a| a.to_string()).unwrap_or_default(),
            e.urgent.to_string(),
            e.room_id.clone(),
            e.event_id.clone(),
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}

/// A CSV field, quoted when it holds a separator, a quote or a line break,
/// and never read as a formula by a spreadsheet (a leading `=`, `+`, `-` is
/// prefixed with `'`; Matrix ids, which start with `@`, `!` or `$`, hold no
/// formula).
fn csv_field(f: &str) -> String {
    let f = if f.starts_with(['=', '+', '-']) {
        format!("'{f}")
    } else {
        f.to_owned()
    };
    if f.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for milliseconds since the epoch (the proleptic
/// Gregorian calendar, days to civil date as in Howard Hinnant's
/// `civil_from_days`).
pub fn iso8601(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P: &str = "@p:gov.a";
    const Q: &str = "@q:gov.b";

    fn ev(kind: &str, sender: &str, ts: i64, state_key: Option<&str>, content: Value) -> Value {
        let mut e =
            json!({"type": kind, "sender": sender, "origin_server_ts": ts, "content": content});
        if let Some(k) = state_key {
            e["state_key"] = json!(k);
        }
        e
    }

    fn read(events: &[Value], now: i64) -> Vec<ContactEntry> {
        let mut r = LineReader::new(P, Q, "!line:gov.a");
        for (i, e) in events.iter().enumerate() {
            r.read(&format!("$e{i}"), e);
        }
        r.finish(now)
    }

    fn member(sender: &str, device: &str, ts: i64, joined: bool) -> Value {
        let content = if joined {
            json!({"application": "m.call", "call_id": "", "scope": "m.room", "device_id": device, "expires": 14_400_000})
        } else {
            json!({})
        };
        ev(
            "m.call.member",
            sender,
            ts,
            Some(&format!("_{sender}_{device}")),
            content,
        )
    }

    #[test]
    fn an_urgent_signal_marks_the_contact_of_its_kind_it_precedes_and_one_without_stands_alone() {
        let urgent = |sender: &str, ts: i64, kind: &str| {
            ev(URGENT_EVENT, sender, ts, None, json!({ "kind": kind }))
        };
        let text = |sender: &str, ts: i64| {
            ev(
                "m.room.message",
                sender,
                ts,
                None,
                json!({"msgtype": "m.text", "body": "x"}),
            )
        };
        let entries = read(
            &[
                // A call announced: the encrypted signalling before the
                // membership does not take the mark, the call does.
                urgent(P, 1_000, "call"),
                ev(
                    "m.room.encrypted",
                    P,
                    1_100,
                    None,
                    json!({"algorithm": "m.megolm.v1.aes-sha2"}),
                ),
                member(P, "D1", 1_200, true),
                member(P, "D1", 5_000, false),
                // A text announced; the other side's text is not marked.
                urgent(P, 10_000, "text"),
                text(Q, 10_500),
                text(P, 11_000),
                // A signal nothing followed within the window, and a
                // redacted one (no kind): each listed on its own.
                urgent(Q, 20_000, "call"),
                ev(URGENT_EVENT, P, 30_000, None, json!({})),
                text(P, 20_000 + URGENT_RING_WINDOW_MS + 1),
            ],
            10_000_000,
        );
        let got: Vec<_> = entries
            .iter()
            .map(|e| (e.ts, e.kind, e.direction, e.urgent))
            .collect();
        assert_eq!(
            got,
            vec![
                // (The encrypted event was the call's signalling.)
                (1_200, "call", "outgoing", true),
                (10_500, "text", "incoming", false),
                (11_000, "text", "outgoing", true),
                (20_000, "urgent", "incoming", true),
                (
                    20_000 + URGENT_RING_WINDOW_MS + 1,
                    "text",
                    "outgoing",
                    false
                ),
                (30_000, "urgent", "outgoing", true),
            ]
        );
    }

    #[test]
    fn texts_count_by_side_and_edits_and_reactions_do_not() {
        let enc = |rel: Option<&str>| {
            let mut c = json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x"});
            if let Some(rel) = rel {
                c["m.relates_to"] = json!({"rel_type": rel, "event_id": "$x"});
            }
            c
        };
        let log = read(
            &[
                ev("m.room.encrypted", P, 1, None, enc(None)),
                ev("m.room.encrypted", Q, 2, None, enc(None)),
                ev("m.room.encrypted", P, 3, None, enc(Some("m.replace"))),
                ev("m.reaction", Q, 4, None, json!({})),
                ev("m.room.encrypted", Q, 5, None, enc(Some("m.annotation"))),
                ev("m.room.encrypted", "@stranger:gov.c", 6, None, enc(None)),
                ev(
                    "m.room.message",
                    Q,
                    7,
                    None,
                    json!({"msgtype": "m.text", "body": "x", "org.hotline.urgent": true}),
                ),
            ],
            100,
        );
        let seen: Vec<_> = log
            .iter()
            .map(|e| (e.ts, e.kind, e.direction, e.urgent))
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, "text", "outgoing", false),
                (2, "text", "incoming", false),
                (7, "text", "incoming", true)
            ]
        );
    }

    #[test]
    fn an_aide_counts_for_the_principal_the_marking_names_while_marked() {
        let enc = json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x"});
        let log = read(
            &[
                ev("m.room.encrypted", "@aide:gov.b", 1, None, enc.clone()),
                ev(
                    AIDE_STATE,
                    Q,
                    2,
                    Some("_@aide:gov.b"),
                    json!({"principal": Q, "added_by": Q}),
                ),
                ev("m.room.encrypted", "@aide:gov.b", 3, None, enc.clone()),
                ev(
                    AIDE_STATE,
                    P,
                    4,
                    Some("_@aide:gov.b"),
                    json!({"removed_by": P}),
                ),
                ev("m.room.encrypted", "@aide:gov.b", 5, None, enc),
            ],
            100,
        );
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(
            (log[0].ts, log[0].direction, log[0].by.as_str()),
            (3, "incoming", "@aide:gov.b")
        );
    }

    #[test]
    fn a_call_lasts_while_both_sides_are_on_it() {
        let log = read(
            &[
                member(Q, "QD", 1_000, true),
                member(P, "PD", 4_000, true),
                ev(
                    AIDE_STATE,
                    P,
                    4_500,
                    Some("_@aide:gov.a"),
                    json!({"principal": P}),
                ),
                member("@aide:gov.a", "AD", 5_000, true),
                member(P, "PD", 10_000, false),
                // The aide stays on the President's side until 12 s.
                member("@aide:gov.a", "AD", 12_000, false),
                member(Q, "QD", 13_000, false),
            ],
            100_000,
        );
        assert_eq!(log.len(), 1, "{log:?}");
        let call = &log[0];
        assert_eq!(
            (call.kind, call.direction, call.by.as_str(), call.ts),
            ("call", "incoming", Q, 1_000)
        );
        assert_eq!(call.answered, Some(true));
        assert_eq!(call.duration_ms, Some(8_000));
        assert_eq!(call.ongoing, Some(false));
    }

    #[test]
    fn an_unanswered_call_an_ongoing_one_and_one_that_expired() {
        let log = read(
            &[member(P, "PD", 1_000, true), member(P, "PD", 2_000, false)],
            10_000,
        );
        assert_eq!(
            (log[0].answered, log[0].duration_ms, log[0].direction),
            (Some(false), None, "outgoing")
        );
        let log = read(
            &[member(P, "PD", 1_000, true), member(Q, "QD", 2_000, true)],
            10_000,
        );
        assert_eq!(
            (log[0].answered, log[0].ongoing, log[0].duration_ms),
            (Some(true), Some(true), None)
        );
        // Memberships that ran out (a crashed client) end the call then.
        let log = read(
            &[member(P, "PD", 1_000, true), member(Q, "QD", 2_000, true)],
            2_000 + 14_400_000 + 1,
        );
        assert_eq!(log[0].ongoing, Some(false));
        assert_eq!(log[0].duration_ms, Some(14_400_000 + 1_000 - 2_000));
    }

    #[test]
    fn a_calls_encrypted_signalling_is_not_counted_as_texts() {
        let enc = json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x"});
        let log = read(
            &[
                ev("m.room.encrypted", P, 1_000, None, enc.clone()),
                ev("m.room.encrypted", P, 95_000, None, enc.clone()),
                member(P, "PD", 100_000, true),
                ev("m.room.encrypted", P, 100_100, None, enc.clone()),
                member(Q, "QD", 101_000, true),
                ev("m.room.encrypted", Q, 100_900, None, enc.clone()),
                ev("m.room.encrypted", Q, 101_100, None, enc.clone()),
                member(P, "PD", 110_000, false),
                member(Q, "QD", 110_000, false),
                ev("m.room.encrypted", Q, 110_500, None, enc.clone()),
                ev("m.room.encrypted", Q, 111_500, None, enc.clone()),
                ev("m.room.encrypted", Q, 200_000, None, enc),
            ],
            300_000,
        );
        let seen: Vec<_> = log.iter().map(|e| (e.kind, e.ts)).collect();
        assert_eq!(
            seen,
            vec![
                ("text", 1_000),
                ("text", 95_000),
                ("call", 100_000),
                ("text", 111_500),
                ("text", 200_000)
            ]
        );
    }

    #[test]
    fn a_clear_text_call_counts_from_answer_to_hangup() {
        let log = read(
            &[
                ev(
                    "m.call.invite",
                    P,
                    1_000,
                    None,
                    json!({"call_id": "c1", "version": "1"}),
                ),
                ev(
                    "m.call.answer",
                    Q,
                    3_000,
                    None,
                    json!({"call_id": "c1", "version": "1"}),
                ),
                ev(
                    "m.call.hangup",
                    Q,
                    9_000,
                    None,
                    json!({"call_id": "c1", "version": "1"}),
                ),
                ev(
                    "m.call.invite",
                    Q,
                    20_000,
                    None,
                    json!({"call_id": "c2", "version": "1"}),
                ),
                ev(
                    "m.call.hangup",
                    Q,
                    25_000,
                    None,
                    json!({"call_id": "c2", "version": "1"}),
                ),
            ],
            100_000,
        );
        let seen: Vec<_> = log
            .iter()
            .map(|e| (e.ts, e.direction, e.answered, e.duration_ms))
            .collect();
        assert_eq!(
            seen,
            vec![
                (1_000, "outgoing", Some(true), Some(6_000)),
                (20_000, "incoming", Some(false), None)
            ]
        );
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-1+2"), "'-1+2");
        assert_eq!(csv_field("@user:x"), "@user:x");
    }

    #[test]
    fn iso8601_matches_known_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_796_601_599_999), "2026-12-06T23:59:59Z");
        assert_eq!(iso8601(-1_000), "1969-12-31T23:59:59Z");
    }
}
