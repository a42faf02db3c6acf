//! The account data a `/sync` carries: global (the response's
//! `account_data`) and per room (each room entry's `account_data`), from
//! one indexed read of the user's rows past the token, made only when the
//! user's private stream moved and the filters want either. Push rules
//! (`m.push_rules`) are served as `GET /pushrules` serves them: the stored
//! document refreshed against the server defaults, and on a fresh sync the
//! rules in force even when none were stored.

use std::collections::BTreeMap;

use ruma::UserId;
use serde_json::json;
use serde_json::value::RawValue;

use super::{SyncFilter, SyncToken};
use crate::{Result, Services};

/// Global account data events, and per-room ones by room id.
pub(super) type AccountData = (Vec<Box<RawValue>>, BTreeMap<String, Vec<Box<RawValue>>>);

impl Services {
    /// The account data past `since` up to position `upto` that `filter`
    /// wants; `last_private_pos`: the newest position of the user's own
    /// streams, known without a read.
    pub(super) fn account_data_for_sync(
        &self,
        user: &UserId,
        filter: &SyncFilter,
        since: Option<SyncToken>,
        upto: i64,
        last_private_pos: i64,
    ) -> Result<AccountData> {
        let since_pos = since.map(|s| s.pos).unwrap_or(0);
        let global_ad = !filter.account_data.passes_none();
        let room_ad = !filter.room_account_data.passes_none();
        let mut global = Vec::new();
        let mut room_account_data: BTreeMap<String, Vec<Box<RawValue>>> = BTreeMap::new();
        if (global_ad || room_ad) && (since.is_none() || last_private_pos > since_pos) {
            let mut rows = self.store.account_data_since(user.as_str(), since_pos)?;
            let max = rows.iter().map(|r| r.pos).max().unwrap_or(0);
            self.note_private_pos(user, max);
            let push_rules_wanted = global_ad
                && filter
                    .account_data
                    .matches_type_and_sender(crate::push_rules::PUSH_RULES, None);
            // The stored rules (one row at most), refreshed against the
            // server defaults, as GET serves them.
            let mut push_rules_stored = false;
            for r in rows
                .iter_mut()
                .filter(|r| r.room_id.is_empty() && r.kind == crate::push_rules::PUSH_RULES)
            {
                if push_rules_wanted {
                    r.content = self.push_rules_content(user)?.to_string();
                }
                push_rules_stored = true;
            }
            if !push_rules_stored && since.is_none() && push_rules_wanted {
                // A fresh client gets the rules in force, defaults included,
                // as with a stored document (as Synapse does).
                rows.push(hotline_store::AccountDataRow {
                    user_id: user.to_string(),
                    room_id: String::new(),
                    kind: crate::push_rules::PUSH_RULES.to_owned(),
                    content: self.push_rules_content(user)?.to_string(),
                    pos: 0,
                });
            }
            for row in rows.into_iter().filter(|r| r.pos <= upto) {
                let wanted = if row.room_id.is_empty() {
                    global_ad && filter.account_data.matches_type_and_sender(&row.kind, None)
                } else {
                    room_ad
                        && filter.room_account_data.room_ok(&row.room_id)
                        && filter
                            .room_account_data
                            .matches_type_and_sender(&row.kind, None)
                };
                if !wanted {
                    continue;
                }
                let Ok(content) = RawValue::from_string(row.content) else {
                    continue;
                };
                let ev = serde_json::value::to_raw_value(
                    &json!({"type": row.kind, "content": content}),
                )?;
                if row.room_id.is_empty() {
                    global.push(ev);
                } else {
                    room_account_data.entry(row.room_id).or_default().push(ev);
                }
            }
        }
        Ok((global, room_account_data))
    }

    fn note_private_pos(&self, user: &UserId, seen_max: i64) {
        self.set_private_pos_if_unknown(user, seen_max);
    }
}
