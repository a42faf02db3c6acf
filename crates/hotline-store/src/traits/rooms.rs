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
    /// An event kept outside its room's timeline
    /// ([`WriteOp::PutOutlier`]), with position 0.
    fn get_outlier(&self, event_id: &str) -> Result<Option<EventRow>>;
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

/// The contract of a room's past fetched from other servers and of events
/// kept outside the timeline, run against each engine by its tests.
#[cfg(test)]
pub(crate) async fn backfilled_events_go_before_all_others_and_outliers_stay_out_of_the_timeline(
    store: &dyn Store,
) {
    let event = |id: &str, state_key: Option<&str>, membership: Option<&str>| NewEvent {
        event_id: id.into(),
        room_id: "!r".into(),
        sender: "@a:hs".into(),
        event_type: if state_key.is_some() {
            "m.room.member"
        } else {
            "m.room.message"
        }
        .into(),
        state_key: state_key.map(Into::into),
        json: format!(r#"{{"event_id":"{id}"}}"#),
        txn: None,
        redacts: None,
        membership: membership.map(|m| ("@a:hs".into(), m.into())),
        parsed: Attachment(None),
    };
    store
        .write(WriteBatch {
            ops: vec![
                WriteOp::CreateRoom(RoomRow {
                    room_id: "!r".into(),
                    room_version: "11".into(),
                }),
                WriteOp::AppendEvent(event("$join", Some("@a:hs"), Some("join"))),
                WriteOp::AppendEvent(event("$now", None, None)),
            ],
        })
        .await
        .unwrap();
    // Newest first, in two batches: each lands before the one put before it.
    for batch in [vec!["$old3", "$old2"], vec!["$old1"]] {
        let ops = batch
            .into_iter()
            .map(|id| WriteOp::AppendBackfilled(event(id, None, None)))
            .collect();
        store.write(WriteBatch { ops }).await.unwrap();
    }
    // An older membership of the same user: history, not the current state.
    store
        .write(WriteBatch::one(WriteOp::AppendBackfilled(event(
            "$left",
            Some("@a:hs"),
            Some("leave"),
        ))))
        .await
        .unwrap();
    let ids = |rows: Vec<EventRow>| rows.into_iter().map(|r| r.event_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.room_events_forward("!r", i64::MIN, 10).unwrap()),
        ["$left", "$old1", "$old2", "$old3", "$join", "$now"]
    );
    let old3 = store.get_event("$old3").unwrap().unwrap();
    assert!(old3.pos < 0, "{}", old3.pos);
    assert_eq!(
        ids(store.room_events_backward("!r", old3.pos, 10).unwrap()),
        ["$old2", "$old1", "$left"]
    );
    assert_eq!(ids(store.room_state("!r").unwrap()), ["$join"]);
    let m = store.memberships_of_user("@a:hs").unwrap();
    assert_eq!(
        (m[0].membership.as_str(), m[0].event_id.as_str()),
        ("join", "$join")
    );
    // The stream a /sync follows did not move.
    let top = store.current_position();
    store
        .write(WriteBatch::one(WriteOp::AppendBackfilled(event(
            "$now", None, None,
        ))))
        .await
        .unwrap();
    assert_eq!(store.current_position(), top);
    assert_eq!(store.get_event("$now").unwrap().unwrap().pos, 2);

    // An outlier is found by id, and is no part of the room's timeline.
    let put = || WriteOp::PutOutlier {
        event_id: "$out".into(),
        room_id: "!r".into(),
        json: r#"{"x":1}"#.into(),
    };
    store.write(WriteBatch::one(put())).await.unwrap();
    store.write(WriteBatch::one(put())).await.unwrap();
    let out = store.get_outlier("$out").unwrap().unwrap();
    assert_eq!(
        (out.room_id.as_str(), out.json.as_str(), out.pos),
        ("!r", r#"{"x":1}"#, 0)
    );
    assert!(store.get_event("$out").unwrap().is_none());
    assert!(store.get_outlier("$now").unwrap().is_none());
    assert_eq!(
        store.room_events_forward("!r", i64::MIN, 10).unwrap().len(),
        6
    );
}
