//! Reads of the per-user streams beside the timeline: account data,
//! receipts and presence.

use crate::*;

/// Per-user streams: account data, receipts, presence.
pub trait EphemeralStore {
    fn account_data_since(&self, user_id: &str, since: i64) -> Result<Vec<AccountDataRow>>;
    fn get_account_data(
        &self,
        user_id: &str,
        room_id: &str,
        kind: &str,
    ) -> Result<Option<AccountDataRow>>;
    fn receipts_since(&self, room_id: &str, since: i64) -> Result<Vec<ReceiptRow>>;
    fn latest_receipts(&self, room_id: &str) -> Result<Vec<ReceiptRow>>;
    /// The user's current receipt of `receipt_type` in the room's `thread_id`
    /// (`""` for the unthreaded one).
    fn get_receipt(
        &self,
        room_id: &str,
        user_id: &str,
        receipt_type: &str,
        thread_id: &str,
    ) -> Result<Option<ReceiptRow>>;
    /// The user's latest presence, if they ever set one.
    fn get_presence(&self, user_id: &str) -> Result<Option<PresenceRow>>;
    /// Users whose stored presence is not `offline` (read once at start).
    fn users_present(&self) -> Result<Vec<String>>;
}
