//! Rows read from the store and operations written to it.
//!
//! Ids are plain strings here: the service layer owns the typed ids and
//! validates them before anything reaches the store.
//!
//! Operations and rows are `Serialize`: on PostgreSQL each commit is also
//! logged as JSON, for the other server processes to replay into their
//! caches (see `postgres/commit_log.rs`).

use serde::{Deserialize, Serialize};

/// A pusher (`/pushers/set`): where a user's notifications go. `json` is
/// the pusher as the client set it (served back by `/pushers`);
/// `position` is the stream position through which its notifications are
/// delivered (moved on only after the gateway took them).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PusherRow {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    /// The device whose access token set it ("" if none): it goes with it.
    pub device_id: String,
    pub json: String,
    pub position: i64,
}

/// An account.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserRow {
    pub user_id: String,
    /// argon2 PHC string; `None` for accounts that cannot log in with a password.
    pub password_hash: Option<String>,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub created_ts: i64,
    pub deactivated: bool,
}

/// An access token, stored by its SHA-256 so a copy of the database does not
/// hand out sessions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenRow {
    pub token_hash: String,
    pub user_id: String,
    pub device_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceRow {
    pub user_id: String,
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegistrationTokenRow {
    pub token: String,
    pub uses_allowed: Option<i64>,
    pub completed: i64,
    pub expiry_ts: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoomRow {
    pub room_id: String,
    pub room_version: String,
}

/// A persisted event. `json` is the full PDU as the server keeps it
/// (without `unsigned`), canonical JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventRow {
    pub pos: i64,
    pub event_id: String,
    pub room_id: String,
    pub json: String,
    /// The event id of the redaction that redacted this event, if any.
    pub redacted_by: Option<String>,
    /// Transaction id, for echoing back in `unsigned.transaction_id` to its sender's device.
    pub txn: Option<(String, String)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MembershipRow {
    pub room_id: String,
    pub user_id: String,
    pub membership: String,
    pub event_id: String,
    pub pos: i64,
    pub forgotten: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AliasRow {
    pub alias: String,
    pub room_id: String,
    pub creator: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountDataRow {
    pub user_id: String,
    /// Empty for global account data.
    pub room_id: String,
    pub kind: String,
    pub content: String,
    pub pos: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReceiptRow {
    pub room_id: String,
    pub user_id: String,
    pub receipt_type: String,
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
    pub pos: i64,
}

/// A user's latest presence.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PresenceRow {
    pub user_id: String,
    /// `online`, `unavailable` or `offline`.
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
    /// Stream position of the change.
    pub pos: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MediaRow {
    pub media_id: String,
    pub uploader: String,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub size: i64,
    pub created_ts: i64,
}

/// Media of another server kept here: its metadata as that server answered
/// it over federation (the file is beside the local media, in `remote/`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteMediaRow {
    /// The server that holds the original (the `mxc://` URI's server name).
    pub origin: String,
    pub media_id: String,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub size: i64,
    pub fetched_ts: i64,
}

/// A signature by `signer_user`'s key `signer_key_id` over `target_user`'s
/// key `target_key_id` (a device id or a cross-signing public key).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeySignatureRow {
    pub target_user: String,
    pub target_key_id: String,
    pub signer_user: String,
    pub signer_key_id: String,
    pub signature: String,
}

/// A queued to-device message: `json` is the event as delivered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToDeviceRow {
    pub pos: i64,
    pub json: String,
}

/// A server-side key backup version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupVersionRow {
    pub user_id: String,
    pub version: i64,
    pub algorithm: String,
    pub auth_data: String,
    pub etag: i64,
}

/// One backed-up Megolm session (client-encrypted `session_data`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupKeyRow {
    pub room_id: String,
    pub session_id: String,
    pub json: String,
}

/// An enrolled official (principal or aide).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OfficialRow {
    pub user_id: String,
    pub name: String,
    pub title: String,
    pub country: String,
    pub office: String,
    /// `principal` or `aide`.
    pub role: String,
    /// For an aide: the principal served.
    pub principal: Option<String>,
    /// Confusable skeleton of `name`, for the impersonation guard.
    pub skeleton: String,
    /// SHA-256 of the one-time enrolment code while it is unredeemed.
    pub enrol_code_hash: Option<String>,
    pub enrol_expires_ts: Option<i64>,
    pub enrolled_ts: Option<i64>,
    pub created_ts: i64,
}

/// A server-signed attestation of an official's identity and master key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttestationRow {
    pub user_id: String,
    pub json: String,
    pub issued_ts: i64,
    pub revoked_ts: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LineInviteRow {
    pub code: String,
    /// The principal a redeemer gets a line with.
    pub principal: String,
    pub created_by: String,
    /// Only this user may redeem it, when set.
    pub for_user: Option<String>,
    pub uses_allowed: Option<i64>,
    pub uses: i64,
    pub expires_ts: Option<i64>,
    pub revoked: bool,
    pub created_ts: i64,
}

/// One redemption of a line invite: who, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineInviteRedemption {
    pub code: String,
    pub user_id: String,
    pub ts: i64,
}

/// A direct line: one room between two principals (`principal_a < principal_b`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LineRow {
    pub principal_a: String,
    pub principal_b: String,
    pub room_id: String,
    pub created_ts: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditRow {
    pub seq: i64,
    pub ts: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
}

/// An EDU of the outgoing federation queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEdu {
    /// The queue order, assigned by the store.
    pub seq: i64,
    /// The EDU's JSON.
    pub edu: String,
}

/// An entry of the outgoing federation queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// The queue order, assigned by the store.
    pub seq: i64,
    pub destination: String,
    pub event_id: String,
}

/// A new event to persist. The store assigns `pos`.
/// The client transaction behind a new event.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewTxn {
    pub device_id: String,
    /// The client's own transaction id, echoed back in `unsigned`.
    pub txn_id: String,
    /// What makes the request unique for its device: the endpoint and its
    /// path parameters with the transaction id (the spec scopes transaction
    /// ids to a device and an endpoint). Recorded in the transactions table;
    /// a second event with the same `(sender, device_id, key)` is refused.
    pub key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewEvent {
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub json: String,
    /// The client transaction that made this event, for idempotency.
    pub txn: Option<NewTxn>,
    /// If this is a redaction: the target, whose stored JSON is replaced by
    /// `redacted_json` in the same transaction.
    pub redacts: Option<(String, String)>,
    /// Membership change carried by this event: `(user_id, membership)`.
    pub membership: Option<(String, String)>,
    /// The caller's parsed form of the event, handed back to the commit hook
    /// so it need not parse `json` again. Never stored, and absent when the
    /// hook replays another process's commit (then it parses `json`).
    #[serde(skip)]
    pub parsed: Attachment,
}

/// An opaque value carried through a write to the commit hook.
#[derive(Clone, Default)]
pub struct Attachment(pub Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>);

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Attachment")
    }
}

/// One operation in a [`WriteBatch`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WriteOp {
    CreateUser(UserRow),
    SetPassword {
        user_id: String,
        password_hash: String,
    },
    SetProfile {
        user_id: String,
        displayname: Option<Option<String>>,
        avatar_url: Option<Option<String>>,
    },
    Deactivate {
        user_id: String,
    },
    UpsertDevice(DeviceRow),
    DeleteDevice {
        user_id: String,
        device_id: String,
    },
    InsertToken(TokenRow),
    /// Deletes every token of the device.
    DeleteDeviceTokens {
        user_id: String,
        device_id: String,
    },
    /// When and from where a device was last seen; nothing if the device
    /// is gone.
    SetDeviceSeen {
        user_id: String,
        device_id: String,
        ts: i64,
        ip: Option<String>,
    },
    CreateRegistrationToken(RegistrationTokenRow),
    /// Counts one use of a registration token, which must still be valid
    /// at `now_ms`; otherwise the batch fails with a conflict. In the batch
    /// that creates the user, so a use is counted exactly when an account
    /// was made with it.
    UseRegistrationToken {
        token: String,
        now_ms: i64,
    },
    PutFilter {
        user_id: String,
        filter_id: String,
        json: String,
    },
    PutMeta {
        key: String,
        value: String,
    },
    PutPusher(PusherRow),
    DeletePusher {
        user_id: String,
        app_id: String,
        pushkey: String,
    },
    /// The same app and pushkey set by another user (`append: false`).
    DeletePushersOfKey {
        app_id: String,
        pushkey: String,
        except_user: String,
    },
    SetPusherPosition {
        user_id: String,
        app_id: String,
        pushkey: String,
        position: i64,
    },
    CreateRoom(RoomRow),
    /// Gets a stream position.
    AppendEvent(NewEvent),
    /// State resolution chose `event_id`, an event already stored, for
    /// `(event_type, state_key)` of the room's current state, overruling
    /// the newest event of that key (which `AppendEvent` made current).
    /// Gets a stream position: a membership it changes is a change `/sync`
    /// reports at that position.
    SetCurrentState {
        room_id: String,
        event_type: String,
        state_key: String,
        event_id: String,
        /// For an `m.room.member` key: `(user_id, membership)` of `event_id`.
        membership: Option<(String, String)>,
    },
    ForgetRoom {
        user_id: String,
        room_id: String,
    },
    PutAlias(AliasRow),
    DeleteAlias {
        alias: String,
    },
    /// Gets a stream position.
    PutAccountData {
        user_id: String,
        room_id: String,
        kind: String,
        content: String,
    },
    /// Gets a stream position.
    PutReceipt {
        room_id: String,
        user_id: String,
        receipt_type: String,
        thread_id: String,
        event_id: String,
        ts: i64,
    },
    PutMedia(MediaRow),
    /// Records (or replaces) a remote media file's metadata once its file
    /// is stored.
    PutRemoteMedia(RemoteMediaRow),
    /// Gets a stream position: replaces the user's presence.
    PutPresence {
        user_id: String,
        state: String,
        status_msg: Option<String>,
        last_active_ts: i64,
    },
    /// Lists the room in the published room directory, or takes it out.
    SetRoomPublished {
        room_id: String,
        published: bool,
    },
    /// Records a client transaction that produced no event (to-device
    /// sends), so a retry is answered without acting twice.
    RecordTxn {
        user_id: String,
        device_id: String,
        txn_id: String,
    },
    /// Inserts or replaces an official.
    PutOfficial(OfficialRow),
    PutAttestation(AttestationRow),
    RevokeAttestation {
        user_id: String,
        ts: i64,
    },
    PutLineInvite(LineInviteRow),
    /// Counts one use of a line invite, and fails the commit (a
    /// [`StoreError::Conflict`]) when the invite is revoked, used up or
    /// expired at `now_ms`: check and count in one conditional write, so
    /// concurrent redeems never use it past its limit.
    UseLineInvite {
        code: String,
        now_ms: i64,
        /// Recorded as the invite's redeemer.
        redeemer: String,
    },
    RevokeLineInvite {
        code: String,
    },
    /// Opens a line; fails the commit (a [`StoreError::Conflict`]) when the
    /// two principals already have one.
    PutLine(LineRow),
    /// Appends to the audit log (`seq` is assigned by the store).
    AppendAudit(AuditRow),
    PutDeviceKeys {
        user_id: String,
        device_id: String,
        json: String,
    },
    /// Adds one-time keys `(key_id, algorithm, json)`; ids already present are kept.
    PutOneTimeKeys {
        user_id: String,
        device_id: String,
        keys: Vec<(String, String, String)>,
    },
    /// Replaces the device's fallback key for `algorithm` (unused again).
    PutFallbackKey {
        user_id: String,
        device_id: String,
        algorithm: String,
        key_id: String,
        json: String,
    },
    /// Fails the batch with a [`StoreError::Conflict`] when the key is
    /// gone (claimed meanwhile, by another process): a key is handed out once.
    DeleteOneTimeKey {
        user_id: String,
        device_id: String,
        key_id: String,
    },
    MarkFallbackUsed {
        user_id: String,
        device_id: String,
        algorithm: String,
    },
    PutCrossSigningKey {
        user_id: String,
        key_type: String,
        json: String,
    },
    PutKeySignature(KeySignatureRow),
    /// Gets a stream position: `user_id`'s devices or keys changed.
    KeyChange {
        user_id: String,
    },
    /// Gets a stream position: queues `json` for one device, unless the
    /// device already holds `max_queued` messages (then it is dropped).
    PutToDevice {
        user_id: String,
        device_id: String,
        json: String,
        max_queued: i64,
    },
    /// Deletes the device's to-device messages with `pos <= upto`.
    DeleteToDevice {
        user_id: String,
        device_id: String,
        upto: i64,
    },
    CreateBackupVersion(BackupVersionRow),
    UpdateBackupVersion {
        user_id: String,
        version: i64,
        auth_data: String,
    },
    DeleteBackupVersion {
        user_id: String,
        version: i64,
    },
    /// Puts an event of a room's past, fetched from another server
    /// (`/backfill`), before every event stored: at a position below all
    /// others (such positions count down from -1). Only the event row is
    /// written: it changes no current state, membership or transaction, and
    /// no `/sync` hears of it. A batch's events go newest first, so each
    /// lands before the one put before it. An event already stored is left
    /// as it is.
    AppendBackfilled(NewEvent),
    /// Keeps an event that is not part of its room's timeline: one of a
    /// join's auth chain, one fetched to check another, or one the room's
    /// current state refused (soft-failed). Read by
    /// [`RoomStore::get_outlier`](crate::RoomStore::get_outlier); a second
    /// put of the same event is a no-op.
    PutOutlier {
        event_id: String,
        room_id: String,
        json: String,
    },
    /// Queues an event for another server, behind what is queued for it.
    QueueFederation {
        destination: String,
        event_id: String,
    },
    /// Queues an EDU (its JSON) for another server, behind the EDUs queued
    /// for it.
    QueueFederationEdu {
        destination: String,
        edu: String,
    },
    /// Takes the EDUs up to `upto` (a queue `seq`) off `destination`'s EDU
    /// queue: they were delivered.
    DequeueFederationEdus {
        destination: String,
        upto: i64,
    },
    /// Takes the entries up to `upto` (a queue `seq`) off `destination`'s
    /// queue: they were delivered.
    DequeueFederation {
        destination: String,
        upto: i64,
    },
    /// Stores (or replaces) a session and bumps the version's etag.
    PutBackupKey {
        user_id: String,
        version: i64,
        key: BackupKeyRow,
    },
    /// Deletes a version's sessions (all, one room's, or one) and bumps its etag.
    DeleteBackupKeys {
        user_id: String,
        version: i64,
        room_id: Option<String>,
        session_id: Option<String>,
    },
}

impl WriteOp {
    /// Whether this operation is an item of the sync stream.
    pub fn takes_position(&self) -> bool {
        matches!(
            self,
            WriteOp::AppendEvent(_)
                | WriteOp::SetCurrentState { .. }
                | WriteOp::PutAccountData { .. }
                | WriteOp::PutReceipt { .. }
                | WriteOp::KeyChange { .. }
                | WriteOp::PutToDevice { .. }
                | WriteOp::PutPresence { .. }
        )
    }
}

/// Operations committed together, all or nothing.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WriteBatch {
    pub ops: Vec<WriteOp>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn one(op: WriteOp) -> Self {
        Self { ops: vec![op] }
    }
    pub fn push(&mut self, op: WriteOp) -> &mut Self {
        self.ops.push(op);
        self
    }
}

/// An ephemeral change one server process tells the others of (see
/// [`crate::Store::broadcast`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Broadcast {
    /// `PUT /rooms/{roomId}/typing/{userId}`.
    Typing {
        room_id: String,
        user_id: String,
        typing: bool,
        timeout_ms: u64,
    },
    /// What a process's rate limiter charged since it last said, so every
    /// process's limits count every process's requests: keys as the
    /// service's limiter names them, each with how many times.
    RateCharges { charges: Vec<(String, u32)> },
    /// Users a process saw syncing since it last said (presence timeouts).
    Syncing { users: Vec<String> },
}

/// A committed batch: its operations with the positions they were given
/// (`0` for operations that take none).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Committed {
    pub items: Vec<(i64, WriteOp)>,
    /// On the last batch of a group commit: the stream's high-water mark
    /// after it. Every position up to it is committed, by this process or by
    /// another one on the same database (the `hotline admin` CLI), whose
    /// positions the writer skips past. `0` on the other batches.
    pub high_water: i64,
}

impl Committed {
    /// The highest position in the batch, if it has any stream item.
    pub fn max_position(&self) -> Option<i64> {
        self.items.iter().map(|(p, _)| *p).filter(|p| *p > 0).max()
    }
}
