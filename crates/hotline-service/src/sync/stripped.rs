//! Stripped state: what an invitee or a knocker is shown of a room before
//! they are in it.

use ruma::UserId;
use serde_json::json;
use serde_json::value::RawValue;

use crate::pdu::PduEvent;
use crate::rooms::Room;

/// Stripped state shown to invitees.
pub(crate) const INVITE_STATE: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
    // A line's principals: who the line is between, before accepting (only
    // its principals and marked aides are ever invited to it).
    crate::policy::LINE_STATE,
];

/// What an invitee or a knocker is shown of a room: its public face
/// ([`INVITE_STATE`]), the member event of whoever sent theirs (the inviter,
/// when `with_sender`), and their own member event.
pub(crate) fn stripped_state(room: &Room, user: &UserId, with_sender: bool) -> Vec<Box<RawValue>> {
    let mut events: Vec<Box<RawValue>> = INVITE_STATE
        .iter()
        .filter_map(|k| room.state_event(k, ""))
        .map(|e| stripped(&e))
        .collect();
    if let Some(m) = room.state_event("m.room.member", user.as_str()) {
        if with_sender {
            if let Some(sender) = room.state_event("m.room.member", m.pdu.sender.as_str()) {
                events.push(stripped(&sender));
            }
        }
        events.push(stripped(&m));
    }
    // An aide brought onto a line is shown the marking (for whom), a
    // records archiver its own (which office): an archiver joins only lines
    // it is marked on.
    for kind in [
        crate::line_aides::AIDE_STATE,
        crate::line_recorder::RECORDER_STATE,
    ] {
        if let Some(marking) = room.state_event(kind, &crate::policy::user_key(user)) {
            events.push(stripped(&marking));
        }
    }
    events
}

/// The stripped form of a state event, for invites.
pub(crate) fn stripped(e: &PduEvent) -> Box<RawValue> {
    serde_json::value::to_raw_value(&json!({
        "type": e.pdu.kind.to_string(),
        "state_key": e.pdu.state_key,
        "sender": e.pdu.sender,
        "content": e.pdu.content,
    }))
    .expect("stripped event serializes")
}
