//! What an event of a line becomes in the record: pure functions from the
//! event's JSON (decrypted, or clear, or still encrypted) to the
//! [`NewEntry`] to append, with the call bookkeeping that gives a hangup
//! its duration. No networking here: the attachment's bytes are fetched by
//! the caller from [`Plan::media`].

use std::collections::BTreeMap;

use hotline_records::{Kind, NewEntry};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// What is known of a call (or of a MatrixRTC membership) between its
/// events, kept across restarts in the archiver's state file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CallState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_ts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_ts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_ts: Option<i64>,
}

/// The calls under way, by `ROOM CALL_ID` (1:1 calls) and `ROOM STATE_KEY`
/// (MatrixRTC memberships).
pub(crate) type Calls = BTreeMap<String, CallState>;

/// How the archiver got the event.
pub(crate) enum Seen<'a> {
    /// Clear, or decrypted: the event as the sender wrote it.
    Read(&'a Value),
    /// Encrypted and not decryptable now.
    Undecryptable {
        event: &'a Value,
        reason: &'a str,
        session_id: Option<&'a str>,
    },
}

/// What to append for one event.
#[derive(Debug)]
pub(crate) struct Plan {
    pub entry: NewEntry,
    /// An attachment's content (`file` or `url`) to download and decrypt.
    pub media: Option<Value>,
    /// A placeholder to retry: the Megolm session it waits for.
    pub pending: Option<Option<String>>,
}

/// Call signalling that says nothing a record needs (ICE candidates hold
/// addresses, renegotiation holds SDP): skipped, except to resolve a
/// placeholder (then as metadata, like any call event).
const CALL_PLUMBING: &[&str] = &[
    "m.call.candidates",
    "m.call.negotiate",
    "m.call.select_answer",
    "m.call.sdp_stream_metadata_changed",
    "org.matrix.call.sdp_stream_metadata_changed",
    "m.call.asserted_identity",
];

/// The call fields a record keeps: no SDP, no candidates.
const CALL_FIELDS: &[&str] = &[
    "call_id", "party_id", "version", "lifetime", "invitee", "reason",
];

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// Whether the server stripped the event's content (it was redacted
/// before the archiver read it).
pub(crate) fn redacted(ev: &Value) -> bool {
    ev.pointer("/unsigned/redacted_because").is_some()
}

fn base(room_id: &str, ev: &Value, kind: Kind, content: Value) -> Option<NewEntry> {
    Some(NewEntry {
        event_id: s(ev, "event_id")?.to_owned(),
        room_id: room_id.to_owned(),
        sender: s(ev, "sender")?.to_owned(),
        sender_name: None,
        sender_title: None,
        origin_server_ts: ev.get("origin_server_ts").and_then(Value::as_i64)?,
        kind,
        content,
        attachment: None,
    })
}

/// The plan for one event of the line `room_id`, or `None` for what the
/// record does not keep (state other than call memberships, call
/// plumbing). With `resolving` (the event was archived as undecryptable
/// and now decrypts) every event gives an entry, so the placeholder is
/// always resolved.
pub(crate) fn plan(
    room_id: &str,
    seen: Seen<'_>,
    calls: &mut Calls,
    resolving: bool,
) -> Option<Plan> {
    let ev = match seen {
        Seen::Read(ev) => ev,
        Seen::Undecryptable {
            event,
            reason,
            session_id,
        } => {
            let gone = redacted(event) || event.pointer("/content/ciphertext").is_none();
            let mut content = json!({ "reason": reason });
            if let Some(sid) = session_id {
                content["session_id"] = json!(sid);
            }
            if gone {
                content["reason"] = json!("redacted before the archiver read it");
            }
            let entry = base(room_id, event, Kind::Undecryptable, content)?;
            return Some(Plan {
                entry,
                media: None,
                // A redacted event never decrypts: nothing to wait for.
                pending: (!gone).then(|| session_id.map(str::to_owned)),
            });
        }
    };
    let kind = s(ev, "type")?;
    let content = ev.get("content").cloned().unwrap_or_else(|| json!({}));
    let is_state = ev.get("state_key").is_some();
    if kind == "m.room.encrypted" {
        // Not decrypted and not reported as undecryptable: a redacted
        // encrypted event, or one the client did not try.
        return plan(
            room_id,
            Seen::Undecryptable {
                event: ev,
                reason: "not decrypted",
                session_id: s(&content, "session_id"),
            },
            calls,
            resolving,
        );
    }
    if kind == "m.call.member" && is_state {
        return call_member(room_id, ev, &content, calls);
    }
    if is_state {
        return None;
    }
    if let Some(name) = kind.strip_prefix("m.call.") {
        if CALL_PLUMBING.contains(&kind) && !resolving {
            return None;
        }
        return call(room_id, ev, name, &content, calls);
    }
    let (kind, media) = match kind {
        "m.room.redaction" => {
            let redacts = s(&content, "redacts").or(s(ev, "redacts"));
            let mut c = json!({ "redacts": redacts });
            if let Some(r) = s(&content, "reason") {
                c["reason"] = json!(r);
            }
            return Some(Plan {
                entry: base(room_id, ev, Kind::Redaction, c)?,
                media: None,
                pending: None,
            });
        }
        "m.room.message" => {
            let relation = content
                .pointer("/m.relates_to/rel_type")
                .and_then(Value::as_str);
            if relation == Some("m.replace") {
                (Kind::Edit, None)
            } else {
                match s(&content, "msgtype") {
                    Some("m.image" | "m.file" | "m.audio" | "m.video") => {
                        (Kind::Attachment, Some(content.clone()))
                    }
                    _ => (Kind::Message, None),
                }
            }
        }
        "m.sticker" => (Kind::Attachment, Some(content.clone())),
        // Reactions, polls and whatever else a client says in the line:
        // kept as they were written.
        _ => (Kind::Message, None),
    };
    let mut content = content;
    if kind == Kind::Message && s(ev, "type") != Some("m.room.message") {
        content = json!({ "type": s(ev, "type"), "content": content });
    }
    Some(Plan {
        entry: base(room_id, ev, kind, content)?,
        media: media.filter(|m| m.get("file").is_some() || m.get("url").is_some()),
        pending: None,
    })
}

/// A 1:1 call event (`m.call.invite`, `answer`, `hangup`, `reject`, ...)
/// as metadata: its name, call id and party, and on a hangup or reject
/// whether it was answered and how long it lasted.
fn call(room_id: &str, ev: &Value, name: &str, content: &Value, calls: &mut Calls) -> Option<Plan> {
    let ts = ev.get("origin_server_ts").and_then(Value::as_i64)?;
    let mut c = Map::new();
    c.insert("event".into(), json!(name));
    for f in CALL_FIELDS {
        if let Some(v) = content.get(*f) {
            c.insert((*f).into(), v.clone());
        }
    }
    if let Some(call_id) = s(content, "call_id") {
        let key = format!("{room_id} {call_id}");
        match name {
            "invite" => calls.entry(key).or_default().invite_ts = Some(ts),
            "answer" => {
                let st = calls.entry(key).or_default();
                st.answer_ts.get_or_insert(ts);
            }
            "hangup" | "reject" => {
                let st = calls.remove(&key).unwrap_or_default();
                c.insert("answered".into(), json!(st.answer_ts.is_some()));
                if let Some(a) = st.answer_ts {
                    c.insert("duration_ms".into(), json!((ts - a).max(0)));
                } else if let Some(i) = st.invite_ts {
                    c.insert("ringing_ms".into(), json!((ts - i).max(0)));
                }
            }
            _ => {}
        }
    }
    Some(Plan {
        entry: base(room_id, ev, Kind::Call, Value::Object(c))?,
        media: None,
        pending: None,
    })
}

/// A MatrixRTC membership (`m.call.member` state): joined with content,
/// left with none; on leaving, how long the member was in the call.
fn call_member(room_id: &str, ev: &Value, content: &Value, calls: &mut Calls) -> Option<Plan> {
    let ts = ev.get("origin_server_ts").and_then(Value::as_i64)?;
    let state_key = s(ev, "state_key")?;
    // The legacy form lists memberships; the current one is one membership.
    let m = match content.get("memberships").and_then(Value::as_array) {
        Some(list) => list.first().cloned().unwrap_or_else(|| json!({})),
        None => content.clone(),
    };
    let joined = m.as_object().is_some_and(|o| !o.is_empty());
    let key = format!("{room_id} {state_key}");
    let mut c = Map::new();
    c.insert(
        "event".into(),
        json!(if joined {
            "member_joined"
        } else {
            "member_left"
        }),
    );
    c.insert("member".into(), json!(state_key));
    for f in ["call_id", "application", "scope", "device_id"] {
        if let Some(v) = m.get(f) {
            c.insert(f.into(), v.clone());
        }
    }
    if joined {
        calls.entry(key).or_default().joined_ts.get_or_insert(ts);
    } else if let Some(st) = calls.remove(&key) {
        if let Some(j) = st.joined_ts {
            c.insert("duration_ms".into(), json!((ts - j).max(0)));
        }
    }
    Some(Plan {
        entry: base(room_id, ev, Kind::Call, Value::Object(c))?,
        media: None,
        pending: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: &str = "!line:gov.example";

    fn ev(kind: &str, id: &str, ts: i64, content: Value) -> Value {
        json!({"type": kind, "event_id": id, "sender": "@macron:gov.example",
               "origin_server_ts": ts, "content": content})
    }

    fn read(e: &Value, calls: &mut Calls) -> Option<Plan> {
        plan(ROOM, Seen::Read(e), calls, false)
    }

    #[test]
    fn texts_edits_attachments_and_redactions_get_their_kinds() {
        let mut calls = Calls::new();
        let text = ev(
            "m.room.message",
            "$1",
            1,
            json!({"msgtype": "m.text", "body": "hello"}),
        );
        let p = read(&text, &mut calls).unwrap();
        assert_eq!(p.entry.kind, Kind::Message);
        assert_eq!(p.entry.content["body"], "hello");
        assert_eq!(p.entry.event_id, "$1");
        assert_eq!(p.entry.origin_server_ts, 1);

        let edit = ev(
            "m.room.message",
            "$2",
            2,
            json!({"msgtype": "m.text", "body": "* hi",
            "m.new_content": {"msgtype": "m.text", "body": "hi"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$1"}}),
        );
        assert_eq!(read(&edit, &mut calls).unwrap().entry.kind, Kind::Edit);

        let file =
            json!({"url": "mxc://gov.example/abc", "key": {}, "iv": "x", "hashes": {}, "v": "v2"});
        let image = ev(
            "m.room.message",
            "$3",
            3,
            json!({"msgtype": "m.image", "body": "a.png", "file": file}),
        );
        let p = read(&image, &mut calls).unwrap();
        assert_eq!(p.entry.kind, Kind::Attachment);
        assert_eq!(p.media.unwrap()["file"]["url"], "mxc://gov.example/abc");

        let mut red = ev(
            "m.room.redaction",
            "$4",
            4,
            json!({"redacts": "$1", "reason": "oops"}),
        );
        red["redacts"] = json!("$1");
        let p = read(&red, &mut calls).unwrap();
        assert_eq!(p.entry.kind, Kind::Redaction);
        assert_eq!(p.entry.content, json!({"redacts": "$1", "reason": "oops"}));

        // State other than call memberships is not recorded.
        let mut name = ev("m.room.name", "$5", 5, json!({"name": "x"}));
        name["state_key"] = json!("");
        assert!(read(&name, &mut calls).is_none());
    }

    #[test]
    fn calls_are_metadata_with_a_duration_and_never_sdp() {
        let mut calls = Calls::new();
        let invite = ev(
            "m.call.invite",
            "$i",
            1_000,
            json!({"call_id": "c1", "party_id": "p", "version": "1",
            "lifetime": 60000, "offer": {"type": "offer", "sdp": "v=0 SECRET-SDP"}}),
        );
        let p = read(&invite, &mut calls).unwrap();
        assert_eq!(p.entry.kind, Kind::Call);
        assert!(!p.entry.content.to_string().contains("SECRET-SDP"));
        assert_eq!(p.entry.content["event"], "invite");
        let cand = ev(
            "m.call.candidates",
            "$c",
            1_100,
            json!({"call_id": "c1", "candidates": [{"candidate": "candidate:1 1 UDP 10.0.0.1"}]}),
        );
        assert!(read(&cand, &mut calls).is_none());
        let answer = ev(
            "m.call.answer",
            "$a",
            2_000,
            json!({"call_id": "c1", "answer": {"type": "answer", "sdp": "v=0 SECRET-SDP"}}),
        );
        assert!(!read(&answer, &mut calls)
            .unwrap()
            .entry
            .content
            .to_string()
            .contains("SECRET"));
        let hangup = ev(
            "m.call.hangup",
            "$h",
            62_000,
            json!({"call_id": "c1", "reason": "user_hangup"}),
        );
        let c = read(&hangup, &mut calls).unwrap().entry.content;
        assert_eq!(c["duration_ms"], 60_000);
        assert_eq!(c["answered"], true);
        assert!(calls.is_empty());

        // Unanswered: how long it rang.
        read(
            &ev("m.call.invite", "$i2", 0, json!({"call_id": "c2"})),
            &mut calls,
        );
        let c = read(
            &ev("m.call.hangup", "$h2", 5_000, json!({"call_id": "c2"})),
            &mut calls,
        )
        .unwrap()
        .entry
        .content;
        assert_eq!(
            (c["answered"].clone(), c["ringing_ms"].clone()),
            (json!(false), json!(5_000))
        );

        // MatrixRTC: joined, then left 1.5 s later.
        let mut join = ev(
            "m.call.member",
            "$j",
            10_000,
            json!({"application": "m.call", "call_id": "", "device_id": "D",
            "focus_active": {"type": "livekit"}}),
        );
        join["state_key"] = json!("_@macron:gov.example_D");
        assert_eq!(
            read(&join, &mut calls).unwrap().entry.content["event"],
            "member_joined"
        );
        let mut left = ev("m.call.member", "$l", 11_500, json!({}));
        left["state_key"] = json!("_@macron:gov.example_D");
        let c = read(&left, &mut calls).unwrap().entry.content;
        assert_eq!(
            (c["event"].clone(), c["duration_ms"].clone()),
            (json!("member_left"), json!(1_500))
        );
    }

    #[test]
    fn an_undecryptable_event_is_a_placeholder_to_retry_unless_redacted() {
        let mut calls = Calls::new();
        let enc = ev(
            "m.room.encrypted",
            "$e",
            1,
            json!({"algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": "AwgA", "session_id": "S", "sender_key": "k"}),
        );
        let p = plan(
            ROOM,
            Seen::Undecryptable {
                event: &enc,
                reason: "missing room key",
                session_id: Some("S"),
            },
            &mut calls,
            false,
        )
        .unwrap();
        assert_eq!(p.entry.kind, Kind::Undecryptable);
        assert_eq!(p.pending, Some(Some("S".to_owned())));
        assert_eq!(
            p.entry.content,
            json!({"reason": "missing room key", "session_id": "S"})
        );
        // A redacted one never decrypts.
        let mut gone = ev("m.room.encrypted", "$g", 1, json!({}));
        gone["unsigned"] = json!({"redacted_because": {"type": "m.room.redaction"}});
        let p = read(&gone, &mut calls).unwrap();
        assert_eq!(p.entry.kind, Kind::Undecryptable);
        assert_eq!(p.pending, None);
        // Resolving: even call plumbing gives an entry.
        let cand = ev(
            "m.call.candidates",
            "$c",
            1,
            json!({"call_id": "c", "candidates": []}),
        );
        let p = plan(ROOM, Seen::Read(&cand), &mut calls, true).unwrap();
        assert_eq!(
            p.entry.content,
            json!({"event": "candidates", "call_id": "c"})
        );
    }
}
