//! Hotline's storage: one interface ([`Store`]), engines behind it.
//!
//! The store knows rows, not rules: it never decides who may do what, and it
//! never parses event content beyond what it is handed as typed fields.
//!
//! **Architecture Invariant:** a write future resolves `Ok` only after the
//! transaction holding it is committed. Callers acknowledge clients after that
//! and never before.
//!
//! **Architecture Invariant:** stream positions are allocated by the store at
//! commit time, so commit order and position order are the same. The commit
//! hook sees every committed batch in position order, before any writer is
//! told its write succeeded.
//!
//! **API Boundary:** nothing engine-specific (SQL, connection types, SQLite
//! error codes) crosses this crate's public interface.

mod backup;
mod postgres;
mod sqlite;
mod types;
mod walbuf;

pub use backup::BackupReport;
pub use postgres::PostgresStore;
pub use sqlite::{Durability, SqliteStore};
pub use types::*;

use std::sync::Arc;

/// Result of a store call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store call failed. Never shown to clients as-is.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness constraint was hit (user id taken, alias taken, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The storage ran out of space (the disk or a quota is full). Nothing
    /// of the write was kept; the same write may succeed once space returns.
    #[error("storage full: {0}")]
    Full(String),
    /// The engine failed (I/O, corruption, closed).
    #[error("storage engine: {0}")]
    Engine(String),
}

/// Called with each committed batch, in commit (= stream position) order,
/// before the writers of that batch are answered.
pub type CommitHook = Arc<dyn Fn(&Committed) + Send + Sync>;

/// The storage interface. Reads may run concurrently; writes are batched
/// and committed in order.
pub trait Store: Send + Sync + 'static {
    /// Commits `batch` atomically; positions are assigned to the stream
    /// items in it. Resolves after the commit is durable.
    fn write(&self, batch: WriteBatch) -> WriteFuture;

    /// Installs the hook that observes committed batches (once, at start).
    fn set_commit_hook(&self, hook: CommitHook);

    /// The highest stream position committed so far.
    fn current_position(&self) -> i64;

    /// How many room events the database holds (read once at start; the
    /// server counts its own commits from there).
    fn count_events(&self) -> Result<u64>;

    /// The highest stream position in the database, including positions
    /// committed by another process since this one last wrote.
    fn stored_position(&self) -> Result<i64>;

    // ----- accounts -----
    fn get_user(&self, user_id: &str) -> Result<Option<UserRow>>;
    fn count_users(&self) -> Result<i64>;
    fn find_token(&self, token_hash: &str) -> Result<Option<TokenRow>>;
    fn list_devices(&self, user_id: &str) -> Result<Vec<DeviceRow>>;
    fn get_device(&self, user_id: &str, device_id: &str) -> Result<Option<DeviceRow>>;
    fn get_registration_token(&self, token: &str) -> Result<Option<RegistrationTokenRow>>;
    fn get_filter(&self, user_id: &str, filter_id: &str) -> Result<Option<String>>;
    fn get_meta(&self, key: &str) -> Result<Option<String>>;

    // ----- rooms and events -----
    fn list_rooms(&self) -> Result<Vec<RoomRow>>;
    fn get_room(&self, room_id: &str) -> Result<Option<RoomRow>>;
    fn room_state(&self, room_id: &str) -> Result<Vec<EventRow>>;
    fn get_event(&self, event_id: &str) -> Result<Option<EventRow>>;
    /// Events of a room with `from < pos <= to`, newest first, at most `limit`.
    fn room_events_backward(
        &self,
        room_id: &str,
        before: i64,
        limit: usize,
    ) -> Result<Vec<EventRow>>;
    /// Events of a room with `pos > after`, oldest first, at most `limit`.
    fn room_events_forward(&self, room_id: &str, after: i64, limit: usize)
        -> Result<Vec<EventRow>>;
    /// Every state event of `(event_type, state_key)` in the room, oldest
    /// first: the history of one piece of state (a user's memberships, the
    /// history visibility).
    fn state_history(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Result<Vec<EventRow>>;
    /// The room's state as it was just after position `at`: for each
    /// `(type, state key)`, the newest state event with `pos <= at`; only
    /// events of `event_type` when given.
    fn room_state_at(
        &self,
        room_id: &str,
        at: i64,
        event_type: Option<&str>,
    ) -> Result<Vec<EventRow>>;
    /// The newest state event of `(event_type, state_key)` with `pos <= at`.
    fn state_event_at(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        at: i64,
    ) -> Result<Option<EventRow>>;
    fn memberships_of_user(&self, user_id: &str) -> Result<Vec<MembershipRow>>;
    /// The event id recorded for a transaction, by its scoped key (see
    /// [`NewTxn::key`]; sends to devices use their own keys).
    fn find_txn(&self, user_id: &str, device_id: &str, key: &str) -> Result<Option<String>>;
    fn get_alias(&self, alias: &str) -> Result<Option<AliasRow>>;
    /// Whether the room is listed in the published room directory.
    fn is_room_published(&self, room_id: &str) -> Result<bool>;
    /// Every room in the published room directory.
    fn published_rooms(&self) -> Result<Vec<String>>;

    // ----- per-user streams -----
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

    // ----- end-to-end encryption keys -----
    /// `(device_id, json)` of every device of the user that uploaded keys.
    fn device_keys(&self, user_id: &str) -> Result<Vec<(String, String)>>;
    /// `(algorithm, count)` of the device's unclaimed one-time keys.
    fn one_time_key_counts(&self, user_id: &str, device_id: &str) -> Result<Vec<(String, i64)>>;
    /// Algorithms of the device's fallback keys not yet handed out.
    fn unused_fallback_algorithms(&self, user_id: &str, device_id: &str) -> Result<Vec<String>>;
    /// Some unclaimed one-time key `(key_id, json)` of `algorithm`.
    fn find_one_time_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<(String, String)>>;
    /// The device's fallback key `(key_id, json)` of `algorithm`.
    fn fallback_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<(String, String)>>;
    /// `(key_type, json)` of the user's cross-signing keys.
    fn cross_signing_keys(&self, user_id: &str) -> Result<Vec<(String, String)>>;
    /// Signatures over the user's keys.
    fn key_signatures(&self, target_user: &str) -> Result<Vec<KeySignatureRow>>;
    /// Users whose keys changed with `from < pos <= to`.
    fn key_changes(&self, from: i64, to: i64) -> Result<Vec<String>>;
    /// The device's queued to-device messages with `pos > after`, oldest first.
    fn to_device_since(
        &self,
        user_id: &str,
        device_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ToDeviceRow>>;
    /// Position of the device's newest queued to-device message.
    fn to_device_latest(&self, user_id: &str, device_id: &str) -> Result<Option<i64>>;
    /// The user's newest key backup version that is not deleted.
    fn latest_backup_version(&self, user_id: &str) -> Result<Option<BackupVersionRow>>;
    /// The highest backup version number ever created (deleted ones included).
    fn max_backup_version(&self, user_id: &str) -> Result<i64>;
    fn get_backup_version(&self, user_id: &str, version: i64) -> Result<Option<BackupVersionRow>>;
    fn count_backup_keys(&self, user_id: &str, version: i64) -> Result<i64>;
    /// Backed-up sessions, optionally of one room or one session.
    fn backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<BackupKeyRow>>;

    // ----- official identity and lines -----
    fn get_official(&self, user_id: &str) -> Result<Option<OfficialRow>>;
    fn list_officials(&self) -> Result<Vec<OfficialRow>>;
    fn official_by_enrol_code(&self, code_hash: &str) -> Result<Option<OfficialRow>>;
    fn list_attestations(&self) -> Result<Vec<AttestationRow>>;
    /// The user's attestation, current or revoked.
    fn get_attestation(&self, user_id: &str) -> Result<Option<AttestationRow>>;
    fn get_line_invite(&self, code: &str) -> Result<Option<LineInviteRow>>;
    fn line_invites_of(&self, principal: &str) -> Result<Vec<LineInviteRow>>;
    /// The redemptions of the invites of `principal`, oldest first.
    fn line_invite_redemptions_of(&self, principal: &str) -> Result<Vec<LineInviteRedemption>>;
    /// The line between two principals, in either order.
    fn get_line(&self, a: &str, b: &str) -> Result<Option<LineRow>>;
    fn audit_log(&self) -> Result<Vec<AuditRow>>;

    // ----- media -----
    fn get_media(&self, media_id: &str) -> Result<Option<MediaRow>>;

    // ----- /sync: read markers -----
    /// The stream position of the newest event `user_id` marked read in the
    /// room's main timeline (an `m.read` or `m.read.private` receipt,
    /// unthreaded or `main`), if any names a stored event.
    fn read_marker_pos(&self, room_id: &str, user_id: &str) -> Result<Option<i64>>;
}

/// The future a [`Store::write`] returns.
pub type WriteFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Committed>> + Send>>;
