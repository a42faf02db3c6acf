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
        let mut ephemeral = Vec::new();
        if !filter.ephemeral.room_ok(room.id.as_str()) {
            return Ok(ephemeral);
        }
        if !filter.typing_off {
            let since_typing = since.map(|s| s.typing).filter(|_| !newly);
            ephemeral.extend(self.room_typing(room, since_typing)?);
        }
        if !filter.receipts_off {
            let since_pos = since.map(|s| s.pos).filter(|_| !newly);
            ephemeral.extend(self.room_receipts(sender, room, since_pos, upto)?);
        }
        Ok(ephemeral)
    }

    /// `m.typing` when the room's typing serial passed `since` (or, with
    /// none, the room is new to the client and someone types).
    pub(super) fn room_typing(
        &self,
        room: &Room,
        since: Option<u64>,
    ) -> Result<Option<Box<RawValue>>> {
        let (typing_users, serial) = self.typing_users(room);
        let send = match since {
            Some(s) => serial > s,
            None => !typing_users.is_empty(),
        };
        if !send {
            return Ok(None);
        }
        Ok(Some(serde_json::value::to_raw_value(
            &json!({"type": "m.typing", "content": {"user_ids": typing_users}}),
        )?))
    }

    /// `m.receipt` with the receipts past `since` (all, with none) up to
    /// `upto`; private ones only the user's own.
    pub(super) fn room_receipts(
        &self,
        sender: &Sender,
        room: &Room,
        since: Option<i64>,
        upto: i64,
    ) -> Result<Option<Box<RawValue>>> {
        let since_pos = since.unwrap_or(0);
        if since.is_some() && room.last_receipt_pos() <= since_pos {
            return Ok(None);
        }
        let rows = room.receipts_since(since_pos);
        let mut content: BTreeMap<String, BTreeMap<String, BTreeMap<String, serde_json::Value>>> =
            BTreeMap::new();
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
        if content.is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::value::to_raw_value(
            &json!({"type": "m.receipt", "content": content}),
        )?))
    }
}
