//! Reads of rooms: rooms, their events and state, memberships, transaction
//! ids, aliases, the published room directory, and read markers.

use crate::*;

/// Rooms and events: rooms, events, state, memberships, transactions,
/// aliases, the room directory, read markers.
pub trait RoomStore {
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

    // ----- /sync: read markers -----
    /// The stream position of the newest event `user_id` marked read in the
    /// room's main timeline (an `m.read` or `m.read.private` receipt,
    /// unthreaded or `main`), if any names a stored event.
    fn read_marker_pos(&self, room_id: &str, user_id: &str) -> Result<Option<i64>>;
}
