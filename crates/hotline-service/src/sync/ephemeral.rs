//! A joined room's `ephemeral` events: `m.typing` (when the room's typing
//! serial passed the token's, or the room is new to the client and someone
//! types) and `m.receipt` (the receipts since the token; private ones only
//! the user's own), each unless the filter leaves it out.

use std::collections::BTreeMap;

use serde_json::json;
use serde_json::value::RawValue;

use super::{SyncFilter, SyncToken};
use crate::accounts::Sender;
use crate::rooms::Room;
use crate::{Result, Services};

impl Services {
    /// The `ephemeral` events of `room` as of position `upto`; `newly`: the
    /// room is new to the client.
    pub(super) fn room_ephemeral(
        &self,
        sender: &Sender,
        room: &Room,
        filter: &SyncFilter,
        since: Option<SyncToken>,
        upto: i64,
        newly: bool,
    ) -> Result<Vec<Box<RawValue>>> {
        let since_pos = since.map(|s| s.pos).unwrap_or(0);
        let room_id = room.id.as_str();
        let mut ephemeral = Vec::new();
        let ephemeral_room = filter.ephemeral.room_ok(room_id);
        if !filter.typing_off && ephemeral_room {
            let (typing_users, serial) = self.typing_users(room);
            if newly || since.is_some_and(|s| serial > s.typing) {
                if newly && typing_users.is_empty() {
                    // Nothing to tell a fresh client.
                } else {
                    ephemeral.push(serde_json::value::to_raw_value(
                        &json!({"type": "m.typing", "content": {"user_ids": typing_users}}),
                    )?);
                }
            }
        }
        if !filter.receipts_off && ephemeral_room && (newly || room.last_receipt_pos() > since_pos)
        {
            let rows = room.receipts_since(if newly { 0 } else { since_pos });
            let mut content: BTreeMap<
                String,
                BTreeMap<String, BTreeMap<String, serde_json::Value>>,
            > = BTreeMap::new();
            for r in rows.into_iter().filter(|r| r.pos <= upto) {
                if r.receipt_type == "m.read.private" && r.user_id != sender.user_id.as_str() {
                    continue;
                }
                let mut receipt = json!({"ts": r.ts});
                if !r.thread_id.is_empty() {
                    receipt["thread_id"] = json!(r.thread_id);
                }
                content
                    .entry(r.event_id)
                    .or_default()
                    .entry(r.receipt_type)
                    .or_default()
                    .insert(r.user_id, receipt);
            }
            if !content.is_empty() {
                ephemeral.push(serde_json::value::to_raw_value(
                    &json!({"type": "m.receipt", "content": content}),
                )?);
            }
        }
        Ok(ephemeral)
    }
}
