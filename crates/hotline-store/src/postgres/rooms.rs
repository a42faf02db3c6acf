//! Rooms and events: rooms, the event stream, current state, memberships, transactions, aliases, the published directory, read markers.

use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::writer::Applied;
use super::{Conn, PgError, PgResult, PostgresStore};
use crate::*;

/// The columns [`event_row`] reads, in its order (a macro so that queries
/// stay `&'static str` for the statement cache).
macro_rules! event_cols {
    () => {
        "pos, event_id, room_id, json, redacted_by, txn_device, txn_id"
    };
}

/// [`event_cols`] of the events table aliased `e`.
macro_rules! e_event_cols {
    () => {
        "e.pos, e.event_id, e.room_id, e.json, e.redacted_by, e.txn_device, e.txn_id"
    };
}

pub(crate) async fn create_room(c: &Conn, r: &RoomRow) -> Applied {
    c.exec(
        "INSERT INTO rooms (room_id, room_version) VALUES ($1, $2)",
        &[&r.room_id, &r.room_version],
    )
    .await?;
    Ok(())
}

/// The event row, its transaction, the current state, the membership and
/// the redaction of the target. None of these statements reads what
/// another writes, so they are sent together (pipelined on the writer's
/// connection) and cost one round trip; a non-state event sends only the
/// statements it needs, as on SQLite.
pub(crate) async fn append_event(c: &Conn, e: &NewEvent, pos: i64) -> Applied {
    let (txn_device, txn_id) = match &e.txn {
        Some(t) => (Some(t.device_id.as_str()), Some(t.txn_id.as_str())),
        None => (None, None),
    };
    let event = async {
        c.exec(
            "INSERT INTO events (pos, event_id, room_id, sender, event_type, state_key, json, txn_device, txn_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[&pos, &e.event_id, &e.room_id, &e.sender, &e.event_type, &e.state_key, &e.json, &txn_device, &txn_id],
        )
        .await
        .map(drop)
    };
    let txn = async {
        match &e.txn {
            Some(t) => c
                .exec(
                    "INSERT INTO txns (user_id, device_id, txn_id, event_id) VALUES ($1, $2, $3, $4)",
                    &[&e.sender, &t.device_id, &t.key, &e.event_id],
                )
                .await
                .map(drop),
            None => Ok(()),
        }
    };
    let state = async {
        match &e.state_key {
            Some(state_key) => c
                .exec(
                    "INSERT INTO room_state (room_id, event_type, state_key, event_id) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id",
                    &[&e.room_id, &e.event_type, state_key, &e.event_id],
                )
                .await
                .map(drop),
            None => Ok(()),
        }
    };
    let membership = async {
        match &e.membership {
            Some((user_id, membership)) => c
                .exec(
                    "INSERT INTO memberships (room_id, user_id, membership, event_id, pos, forgotten) VALUES ($1, $2, $3, $4, $5, 0)
                     ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, event_id = excluded.event_id, pos = excluded.pos, forgotten = 0",
                    &[&e.room_id, user_id, membership, &e.event_id, &pos],
                )
                .await
                .map(drop),
            None => Ok(()),
        }
    };
    let redaction = async {
        match &e.redacts {
            Some((target, redacted_json)) => c
                .exec(
                    "UPDATE events SET json = $2, redacted_by = $3 WHERE event_id = $1",
                    &[target, redacted_json, &e.event_id],
                )
                .await
                .map(drop),
            None => Ok(()),
        }
    };
    let (a, b, s, m, r) = tokio::join!(event, txn, state, membership, redaction);
    first_failure([a, b, s, m, r])
}

/// The failure that caused the others: once a statement fails, PostgreSQL
/// refuses the ones pipelined after it with "current transaction is
/// aborted", which must not hide the cause (a uniqueness violation is a
/// conflict, an aborted transaction is not).
fn first_failure<const N: usize>(results: [PgResult<()>; N]) -> Applied {
    let mut errors: Vec<PgError> = results.into_iter().filter_map(|r| r.err()).collect();
    let cause = errors
        .iter()
        .position(|e| e.code() != Some(&SqlState::IN_FAILED_SQL_TRANSACTION))
        .unwrap_or(0);
    if errors.is_empty() {
        return Ok(());
    }
    Err(errors.swap_remove(cause).into())
}

/// [`WriteOp::AppendBackfilled`]: the event row alone, below every
/// position taken (the writer holds the stream's lock, so no other process
/// takes the same one).
pub(crate) async fn append_backfilled(c: &Conn, e: &NewEvent) -> Applied {
    c.exec(
        "INSERT INTO events (pos, event_id, room_id, sender, event_type, state_key, json)
         VALUES ((SELECT LEAST(0, COALESCE(MIN(pos), 0)) FROM events) - 1, $1, $2, $3, $4, $5, $6)
         ON CONFLICT (event_id) DO NOTHING",
        &[
            &e.event_id,
            &e.room_id,
            &e.sender,
            &e.event_type,
            &e.state_key,
            &e.json,
        ],
    )
    .await?;
    Ok(())
}

/// [`WriteOp::PutOutlier`].
pub(crate) async fn put_outlier(c: &Conn, event_id: &str, room_id: &str, json: &str) -> Applied {
    c.exec(
        "INSERT INTO outliers (event_id, room_id, json) VALUES ($1, $2, $3)
         ON CONFLICT (event_id) DO NOTHING",
        &[&event_id, &room_id, &json],
    )
    .await?;
    Ok(())
}

/// [`WriteOp::SetCurrentState`].
pub(crate) async fn set_current_state(
    c: &Conn,
    room_id: &str,
    (event_type, state_key): (&str, &str),
    event_id: &str,
    membership: &Option<(String, String)>,
    pos: i64,
) -> Applied {
    c.exec(
        "INSERT INTO room_state (room_id, event_type, state_key, event_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id",
        &[&room_id, &event_type, &state_key, &event_id],
    )
    .await?;
    if let Some((user_id, membership)) = membership {
        c.exec(
            "INSERT INTO memberships (room_id, user_id, membership, event_id, pos, forgotten) VALUES ($1, $2, $3, $4, $5, 0)
             ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, event_id = excluded.event_id, pos = excluded.pos, forgotten = 0",
            &[&room_id, user_id, membership, &event_id, &pos],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn forget_room(c: &Conn, user_id: &str, room_id: &str) -> Applied {
    c.exec(
        "UPDATE memberships SET forgotten = 1 WHERE room_id = $1 AND user_id = $2",
        &[&room_id, &user_id],
    )
    .await?;
    Ok(())
}

pub(crate) async fn put_alias(c: &Conn, a: &AliasRow) -> Applied {
    c.exec(
        "INSERT INTO aliases (alias, room_id, creator) VALUES ($1, $2, $3)",
        &[&a.alias, &a.room_id, &a.creator],
    )
    .await?;
    Ok(())
}

pub(crate) async fn delete_alias(c: &Conn, alias: &str) -> Applied {
    c.exec("DELETE FROM aliases WHERE alias = $1", &[&alias])
        .await?;
    Ok(())
}

pub(crate) async fn set_room_published(c: &Conn, room_id: &str, published: bool) -> Applied {
    if published {
        c.exec(
            "INSERT INTO published_rooms (room_id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&room_id],
        )
        .await?;
    } else {
        c.exec(
            "DELETE FROM published_rooms WHERE room_id = $1",
            &[&room_id],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn record_txn(c: &Conn, user_id: &str, device_id: &str, txn_id: &str) -> Applied {
    c.exec(
        "INSERT INTO txns (user_id, device_id, txn_id, event_id) VALUES ($1, $2, $3, '') ON CONFLICT DO NOTHING",
        &[&user_id, &device_id, &txn_id],
    )
    .await?;
    Ok(())
}

fn room_row(r: &Row) -> PgResult<RoomRow> {
    Ok(RoomRow {
        room_id: r.try_get(0)?,
        room_version: r.try_get(1)?,
    })
}

fn event_row(r: &Row) -> PgResult<EventRow> {
    let txn_device: Option<String> = r.try_get(5)?;
    let txn_id: Option<String> = r.try_get(6)?;
    Ok(EventRow {
        pos: r.try_get(0)?,
        event_id: r.try_get(1)?,
        room_id: r.try_get(2)?,
        json: r.try_get(3)?,
        redacted_by: r.try_get(4)?,
        txn: txn_device.zip(txn_id),
    })
}

fn membership_row(r: &Row) -> PgResult<MembershipRow> {
    Ok(MembershipRow {
        room_id: r.try_get(0)?,
        user_id: r.try_get(1)?,
        membership: r.try_get(2)?,
        event_id: r.try_get(3)?,
        pos: r.try_get(4)?,
        forgotten: r.try_get::<_, i64>(5)? != 0,
    })
}

fn alias_row(r: &Row) -> PgResult<AliasRow> {
    Ok(AliasRow {
        alias: r.try_get(0)?,
        room_id: r.try_get(1)?,
        creator: r.try_get(2)?,
    })
}

/// A limit as PostgreSQL's `LIMIT` takes it.
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl RoomStore for PostgresStore {
    fn list_rooms(&self) -> Result<Vec<RoomRow>> {
        self.query_all("SELECT room_id, room_version FROM rooms", &[], room_row)
    }

    fn get_room(&self, room_id: &str) -> Result<Option<RoomRow>> {
        self.query_one(
            "SELECT room_id, room_version FROM rooms WHERE room_id = $1",
            &[&room_id],
            room_row,
        )
    }

    fn room_state(&self, room_id: &str) -> Result<Vec<EventRow>> {
        self.query_all(
            concat!(
                "SELECT ",
                e_event_cols!(),
                " FROM room_state s JOIN events e ON e.event_id = s.event_id WHERE s.room_id = $1"
            ),
            &[&room_id],
            event_row,
        )
    }

    fn get_event(&self, event_id: &str) -> Result<Option<EventRow>> {
        self.query_one(
            concat!("SELECT ", event_cols!(), " FROM events WHERE event_id = $1"),
            &[&event_id],
            event_row,
        )
    }

    fn get_outlier(&self, event_id: &str) -> Result<Option<EventRow>> {
        self.query_one(
            "SELECT 0::BIGINT, event_id, room_id, json, NULL::TEXT, NULL::TEXT, NULL::TEXT FROM outliers WHERE event_id = $1",
            &[&event_id],
            event_row,
        )
    }

    fn room_events_backward(
        &self,
        room_id: &str,
        before: i64,
        limit: usize,
    ) -> Result<Vec<EventRow>> {
        self.query_all(
            concat!(
                "SELECT ",
                event_cols!(),
                " FROM events WHERE room_id = $1 AND pos < $2 ORDER BY pos DESC LIMIT $3"
            ),
            &[&room_id, &before, &self::limit(limit)],
            event_row,
        )
    }

    fn room_events_forward(
        &self,
        room_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<EventRow>> {
        self.query_all(
            concat!(
                "SELECT ",
                event_cols!(),
                " FROM events WHERE room_id = $1 AND pos > $2 ORDER BY pos ASC LIMIT $3"
            ),
            &[&room_id, &after, &self::limit(limit)],
            event_row,
        )
    }

    fn state_history(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Result<Vec<EventRow>> {
        // `state_key IS NOT NULL` lets the planner use the partial index.
        self.query_all(
            concat!(
                "SELECT ",
                event_cols!(),
                " FROM events WHERE room_id = $1 AND event_type = $2 AND state_key = $3 \
                 AND state_key IS NOT NULL ORDER BY pos ASC"
            ),
            &[&room_id, &event_type, &state_key],
            event_row,
        )
    }

    fn room_state_at(
        &self,
        room_id: &str,
        at: i64,
        event_type: Option<&str>,
    ) -> Result<Vec<EventRow>> {
        // Every (type, state key) the room ever had is in `room_state`
        // (its rows are replaced, never deleted): for each, one backward
        // probe of `events_room_state` finds the newest event at or
        // before `at`, and only those rows are read, however long the
        // history of each key. Oldest first, as on SQLite.
        match event_type {
            Some(kind) => self.query_all(
                concat!(
                    "SELECT ",
                    e_event_cols!(),
                    " FROM room_state s CROSS JOIN LATERAL (
                       SELECT ",
                    event_cols!(),
                    " FROM events x
                       WHERE x.room_id = s.room_id AND x.event_type = s.event_type
                         AND x.state_key = s.state_key AND x.state_key IS NOT NULL AND x.pos <= $2
                       ORDER BY x.pos DESC LIMIT 1) e
                     WHERE s.room_id = $1 AND s.event_type = $3
                     ORDER BY e.pos"
                ),
                &[&room_id, &at, &kind],
                event_row,
            ),
            None => self.query_all(
                concat!(
                    "SELECT ",
                    e_event_cols!(),
                    " FROM room_state s CROSS JOIN LATERAL (
                       SELECT ",
                    event_cols!(),
                    " FROM events x
                       WHERE x.room_id = s.room_id AND x.event_type = s.event_type
                         AND x.state_key = s.state_key AND x.state_key IS NOT NULL AND x.pos <= $2
                       ORDER BY x.pos DESC LIMIT 1) e
                     WHERE s.room_id = $1
                     ORDER BY e.pos"
                ),
                &[&room_id, &at],
                event_row,
            ),
        }
    }

    fn state_event_at(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        at: i64,
    ) -> Result<Option<EventRow>> {
        self.query_one(
            concat!(
                "SELECT ",
                event_cols!(),
                " FROM events WHERE room_id = $1 AND event_type = $2 AND state_key = $3 \
                 AND state_key IS NOT NULL AND pos <= $4 ORDER BY pos DESC LIMIT 1"
            ),
            &[&room_id, &event_type, &state_key, &at],
            event_row,
        )
    }

    fn memberships_of_user(&self, user_id: &str) -> Result<Vec<MembershipRow>> {
        self.query_all(
            "SELECT room_id, user_id, membership, event_id, pos, forgotten FROM memberships WHERE user_id = $1",
            &[&user_id],
            membership_row,
        )
    }

    fn find_txn(&self, user_id: &str, device_id: &str, key: &str) -> Result<Option<String>> {
        self.query_one(
            "SELECT event_id FROM txns WHERE user_id = $1 AND device_id = $2 AND txn_id = $3",
            &[&user_id, &device_id, &key],
            |r| r.try_get(0),
        )
    }

    fn get_alias(&self, alias: &str) -> Result<Option<AliasRow>> {
        self.query_one(
            "SELECT alias, room_id, creator FROM aliases WHERE alias = $1",
            &[&alias],
            alias_row,
        )
    }

    fn is_room_published(&self, room_id: &str) -> Result<bool> {
        self.query_one(
            "SELECT 1 FROM published_rooms WHERE room_id = $1",
            &[&room_id],
            |_| Ok(()),
        )
        .map(|r| r.is_some())
    }

    fn published_rooms(&self) -> Result<Vec<String>> {
        // In byte order, as SQLite reads them off the primary key.
        self.query_all(
            "SELECT room_id FROM published_rooms ORDER BY room_id COLLATE \"C\"",
            &[],
            |r| r.try_get(0),
        )
    }

    fn read_marker_pos(&self, room_id: &str, user_id: &str) -> Result<Option<i64>> {
        self.query_one(
            "SELECT MAX(e.pos) FROM receipts r JOIN events e ON e.event_id = r.event_id \
             WHERE r.room_id = $1 AND r.user_id = $2 \
             AND r.receipt_type IN ('m.read', 'm.read.private') AND r.thread_id IN ('', 'main')",
            &[&room_id, &user_id],
            |r| r.try_get::<_, Option<i64>>(0),
        )
        .map(Option::flatten)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::fresh_store;
    use crate::*;

    fn room(id: &str) -> WriteOp {
        WriteOp::CreateRoom(RoomRow {
            room_id: id.into(),
            room_version: "10".into(),
        })
    }

    fn message(id: &str, room: &str) -> NewEvent {
        NewEvent {
            event_id: id.into(),
            room_id: room.into(),
            sender: "@a:hs".into(),
            event_type: "m.room.message".into(),
            state_key: None,
            json: format!("{{\"id\":\"{id}\"}}"),
            txn: None,
            redacts: None,
            membership: None,
            parsed: Attachment::default(),
        }
    }

    fn state(id: &str, room: &str, kind: &str, key: &str) -> NewEvent {
        NewEvent {
            event_type: kind.into(),
            state_key: Some(key.into()),
            ..message(id, room)
        }
    }

    fn member(id: &str, room: &str, user: &str, membership: &str) -> NewEvent {
        NewEvent {
            membership: Some((user.into(), membership.into())),
            ..state(id, room, "m.room.member", user)
        }
    }

    fn with_txn(e: NewEvent, key: &str) -> NewEvent {
        NewEvent {
            txn: Some(NewTxn {
                device_id: "DEV".into(),
                txn_id: format!("t-{key}"),
                key: key.into(),
            }),
            ..e
        }
    }

    fn append(e: NewEvent) -> WriteOp {
        WriteOp::AppendEvent(e)
    }

    fn ids(rows: &[EventRow]) -> Vec<&str> {
        rows.iter().map(|e| e.event_id.as_str()).collect()
    }

    #[tokio::test]
    async fn rooms_are_created_once_and_listed() {
        let store = fresh_store();
        store
            .write(WriteBatch {
                ops: vec![room("!a"), room("!b")],
            })
            .await
            .unwrap();
        let again = store.write(WriteBatch::one(room("!a"))).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        let mut listed: Vec<String> = store
            .list_rooms()
            .unwrap()
            .into_iter()
            .map(|r| r.room_id)
            .collect();
        listed.sort();
        assert_eq!(listed, ["!a", "!b"]);
        let a = store.get_room("!a").unwrap().unwrap();
        assert_eq!((a.room_id.as_str(), a.room_version.as_str()), ("!a", "10"));
        assert!(store.get_room("!nope").unwrap().is_none());
        store.close();
    }

    #[tokio::test]
    async fn an_event_gets_its_position_and_keeps_its_transaction() {
        let store = fresh_store();
        let c = store
            .write(WriteBatch {
                ops: vec![
                    room("!r"),
                    append(message("$1", "!r")),
                    append(with_txn(message("$2", "!r"), "send/k1")),
                ],
            })
            .await
            .unwrap();
        let positions: Vec<i64> = c.items.iter().map(|(p, _)| *p).collect();
        assert_eq!(positions, [0, 1, 2]);
        let first = store.get_event("$1").unwrap().unwrap();
        assert_eq!((first.pos, first.room_id.as_str()), (1, "!r"));
        assert_eq!(first.json, "{\"id\":\"$1\"}");
        assert!(first.txn.is_none() && first.redacted_by.is_none());
        let second = store.get_event("$2").unwrap().unwrap();
        assert_eq!(second.pos, 2);
        assert_eq!(second.txn, Some(("DEV".into(), "t-send/k1".into())));
        // The transaction is recorded by its scoped key, not the client's id.
        assert_eq!(
            store
                .find_txn("@a:hs", "DEV", "send/k1")
                .unwrap()
                .as_deref(),
            Some("$2")
        );
        assert!(store
            .find_txn("@a:hs", "DEV", "t-send/k1")
            .unwrap()
            .is_none());
        assert!(store.get_event("$nope").unwrap().is_none());
        store.close();
    }

    #[tokio::test]
    async fn a_message_leaves_the_current_state_alone() {
        let store = fresh_store();
        store
            .write(WriteBatch {
                ops: vec![
                    room("!r"),
                    append(state("$c", "!r", "m.room.create", "")),
                    append(message("$m", "!r")),
                ],
            })
            .await
            .unwrap();
        assert_eq!(ids(&store.room_state("!r").unwrap()), ["$c"]);
        store.close();
    }

    #[tokio::test]
    async fn a_reused_transaction_key_fails_the_batch_and_keeps_nothing_of_it() {
        let store = fresh_store();
        store
            .write(WriteBatch {
                ops: vec![room("!r"), append(with_txn(message("$1", "!r"), "k"))],
            })
            .await
            .unwrap();
        let retried = store
            .write(WriteBatch {
                ops: vec![
                    room("!other"),
                    append(with_txn(member("$2", "!r", "@b:hs", "join"), "k")),
                ],
            })
            .await;
        assert!(
            matches!(retried, Err(StoreError::Conflict(_))),
            "{retried:?}"
        );
        assert!(store.get_event("$2").unwrap().is_none());
        assert!(store.get_room("!other").unwrap().is_none());
        assert!(store.room_state("!r").unwrap().is_empty());
        assert!(store.memberships_of_user("@b:hs").unwrap().is_empty());
        // The failed batch's position is not used up.
        let next = store
            .write(WriteBatch::one(append(message("$3", "!r"))))
            .await
            .unwrap();
        assert_eq!(next.items[0].0, 2);
        store.close();
    }

    #[tokio::test]
    async fn a_duplicate_event_id_is_a_conflict() {
        let store = fresh_store();
        store
            .write(WriteBatch::one(append(message("$1", "!r"))))
            .await
            .unwrap();
        let dup = store
            .write(WriteBatch::one(append(state(
                "$1",
                "!r",
                "m.room.name",
                "",
            ))))
            .await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        assert!(store.room_state("!r").unwrap().is_empty());
        store.close();
    }

    #[tokio::test]
    async fn newer_state_replaces_the_current_state_of_its_key() {
        let store = fresh_store();
        store
            .write(WriteBatch {
                ops: vec![
                    append(state("$n1", "!r", "m.room.name", "")),
                    append(state("$t", "!r", "m.room.topic", "")),
                    append(state("$n2", "!r", "m.room.name", "")),
                    append(state("$other", "!s", "m.room.name", "")),
                ],
            })
            .await
            .unwrap();
        let mut current = ids(&store.room_state("!r").unwrap())
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        current.sort();
        assert_eq!(current, ["$n2", "$t"]);
        store.close();
    }

    #[tokio::test]
    async fn backfilled_events_go_before_all_others_and_outliers_stay_out_of_the_timeline() {
        let store = fresh_store();
        crate::traits::backfilled_events_go_before_all_others_and_outliers_stay_out_of_the_timeline(&*store)
            .await;
        store.close();
    }

    #[tokio::test]
    async fn a_resolved_state_key_points_at_the_chosen_event_and_its_membership() {
        let store = fresh_store();
        store
            .write(WriteBatch {
                ops: vec![
                    append(member("$j", "!r", "@b:hs", "join")),
                    append(member("$x", "!r", "@b:hs", "ban")),
                    WriteOp::SetCurrentState {
                        room_id: "!r".into(),
                        event_type: "m.room.member".into(),
                        state_key: "@b:hs".into(),
                        event_id: "$j".into(),
                        membership: Some(("@b:hs".into(), "join".into())),
                    },
                ],
            })
            .await
            .unwrap();
        assert_eq!(ids(&store.room_state("!r").unwrap()), ["$j"]);
        let m = store.memberships_of_user("@b:hs").unwrap();
        assert_eq!(
            (m[0].membership.as_str(), m[0].event_id.as_str(), m[0].pos),
            ("join", "$j", 3)
        );
        store.close();
    }

    #[tokio::test]
    async fn membership_follows_the_newest_event_and_a_new_one_unforgets() {
        let store = fresh_store();
        store
            .write(WriteBatch {
                ops: vec![
                    append(member("$j", "!r", "@b:hs", "join")),
                    append(member("$l", "!r", "@b:hs", "leave")),
                    WriteOp::ForgetRoom {
                        user_id: "@b:hs".into(),
                        room_id: "!r".into(),
                    },
                ],
            })
            .await
            .unwrap();
        let m = store.memberships_of_user("@b:hs").unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(
            (
                m[0].room_id.as_str(),
                m[0].membership.as_str(),
                m[0].event_id.as_str()
            ),
            ("!r", "leave", "$l")
        );
        assert_eq!(m[0].pos, 2);
        assert!(m[0].forgotten);
        store
            .write(WriteBatch::one(append(member(
                "$i", "!r", "@b:hs", "invite",
            ))))
            .await
            .unwrap();
        let m = store.memberships_of_user("@b:hs").unwrap();
        assert_eq!((m[0].membership.as_str(), m[0].pos), ("invite", 3));
        assert!(!m[0].forgotten);
        store.close();
    }

    #[tokio::test]
    async fn a_redaction_replaces_its_targets_json_and_names_itself() {
        let store = fresh_store();
        store
            .write(WriteBatch::one(append(message("$m", "!r"))))
            .await
            .unwrap();
        let redaction = NewEvent {
            event_type: "m.room.redaction".into(),
            redacts: Some(("$m".into(), "{}".into())),
            ..message("$x", "!r")
        };
        store
            .write(WriteBatch::one(append(redaction)))
            .await
            .unwrap();
        let target = store.get_event("$m").unwrap().unwrap();
        assert_eq!(target.json, "{}");
        assert_eq!(target.redacted_by.as_deref(), Some("$x"));
        assert_eq!(target.pos, 1);
        store.close();
    }

    #[tokio::test]
    async fn timeline_pages_go_before_and_after_a_position_within_the_limit() {
        let store = fresh_store();
        let mut ops = Vec::new();
        for i in 1..=6 {
            ops.push(append(message(&format!("$r{i}"), "!r")));
            ops.push(append(message(&format!("$s{i}"), "!s")));
        }
        store.write(WriteBatch { ops }).await.unwrap();
        // !r holds positions 1, 3, 5, 7, 9, 11.
        let back = store.room_events_backward("!r", 9, 3).unwrap();
        assert_eq!(ids(&back), ["$r4", "$r3", "$r2"]);
        let back = store.room_events_backward("!r", i64::MAX, 100).unwrap();
        assert_eq!(back.len(), 6);
        assert_eq!(back[0].event_id, "$r6");
        let fwd = store.room_events_forward("!r", 3, 2).unwrap();
        assert_eq!(ids(&fwd), ["$r3", "$r4"]);
        assert!(store.room_events_forward("!r", 11, 10).unwrap().is_empty());
        assert_eq!(store.room_events_forward("!r", 0, 0).unwrap().len(), 0);
        store.close();
    }

    #[tokio::test]
    async fn state_at_a_position_is_the_newest_of_each_key_up_to_it() {
        let store = fresh_store();
        store
            .write(WriteBatch {
                ops: vec![
                    append(state("$c", "!r", "m.room.create", "")), // 1
                    append(member("$aj", "!r", "@a:hs", "join")),   // 2
                    append(state("$n1", "!r", "m.room.name", "")),  // 3
                    append(message("$m", "!r")),                    // 4
                    append(member("$bj", "!r", "@b:hs", "join")),   // 5
                    append(state("$n2", "!r", "m.room.name", "")),  // 6
                    append(member("$bl", "!r", "@b:hs", "leave")),  // 7
                    append(state("$x", "!s", "m.room.name", "")),   // 8
                ],
            })
            .await
            .unwrap();
        assert_eq!(
            ids(&store.room_state_at("!r", 5, None).unwrap()),
            ["$c", "$aj", "$n1", "$bj"]
        );
        assert_eq!(
            ids(&store.room_state_at("!r", 7, None).unwrap()),
            ["$c", "$aj", "$n2", "$bl"]
        );
        assert_eq!(
            ids(&store.room_state_at("!r", 6, Some("m.room.member")).unwrap()),
            ["$aj", "$bj"]
        );
        assert!(store.room_state_at("!r", 0, None).unwrap().is_empty());
        assert_eq!(
            ids(&store.room_state_at("!r", 1, Some("m.room.name")).unwrap()),
            Vec::<&str>::new()
        );
        let at = |pos| {
            store
                .state_event_at("!r", "m.room.member", "@b:hs", pos)
                .unwrap()
                .map(|e| e.event_id)
        };
        assert_eq!(at(4), None);
        assert_eq!(at(6).as_deref(), Some("$bj"));
        assert_eq!(at(100).as_deref(), Some("$bl"));
        assert_eq!(
            ids(&store.state_history("!r", "m.room.member", "@b:hs").unwrap()),
            ["$bj", "$bl"]
        );
        assert_eq!(
            ids(&store.state_history("!r", "m.room.name", "").unwrap()),
            ["$n1", "$n2"]
        );
        store.close();
    }

    #[tokio::test]
    async fn an_alias_is_taken_once_and_can_be_freed() {
        let store = fresh_store();
        let alias = |room: &str| {
            WriteOp::PutAlias(AliasRow {
                alias: "#a:hs".into(),
                room_id: room.into(),
                creator: "@a:hs".into(),
            })
        };
        store.write(WriteBatch::one(alias("!r"))).await.unwrap();
        let taken = store.write(WriteBatch::one(alias("!s"))).await;
        assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
        let a = store.get_alias("#a:hs").unwrap().unwrap();
        assert_eq!((a.room_id.as_str(), a.creator.as_str()), ("!r", "@a:hs"));
        store
            .write(WriteBatch::one(WriteOp::DeleteAlias {
                alias: "#a:hs".into(),
            }))
            .await
            .unwrap();
        assert!(store.get_alias("#a:hs").unwrap().is_none());
        store.write(WriteBatch::one(alias("!s"))).await.unwrap();
        assert_eq!(store.get_alias("#a:hs").unwrap().unwrap().room_id, "!s");
        store.close();
    }

    #[tokio::test]
    async fn publishing_is_idempotent_and_listed_in_byte_order() {
        let store = fresh_store();
        let publish = |room: &str, published| WriteOp::SetRoomPublished {
            room_id: room.into(),
            published,
        };
        store
            .write(WriteBatch {
                ops: vec![
                    publish("!b", true),
                    publish("!B", true),
                    publish("!a", true),
                    publish("!a", true),
                ],
            })
            .await
            .unwrap();
        assert_eq!(store.published_rooms().unwrap(), ["!B", "!a", "!b"]);
        assert!(store.is_room_published("!a").unwrap());
        store
            .write(WriteBatch {
                ops: vec![publish("!a", false), publish("!never", false)],
            })
            .await
            .unwrap();
        assert!(!store.is_room_published("!a").unwrap());
        assert_eq!(store.published_rooms().unwrap(), ["!B", "!b"]);
        store.close();
    }

    #[tokio::test]
    async fn a_recorded_transaction_is_kept_once_without_an_event() {
        let store = fresh_store();
        let record = || WriteOp::RecordTxn {
            user_id: "@a:hs".into(),
            device_id: "DEV".into(),
            txn_id: "sendToDevice/t".into(),
        };
        store.write(WriteBatch::one(record())).await.unwrap();
        // A retry is not a conflict.
        store.write(WriteBatch::one(record())).await.unwrap();
        assert_eq!(
            store
                .find_txn("@a:hs", "DEV", "sendToDevice/t")
                .unwrap()
                .as_deref(),
            Some("")
        );
        assert!(store
            .find_txn("@a:hs", "OTHER", "sendToDevice/t")
            .unwrap()
            .is_none());
        store.close();
    }

    #[tokio::test]
    async fn the_read_marker_is_the_newest_main_timeline_read_receipt_of_a_stored_event() {
        let store = fresh_store();
        let mut ops: Vec<WriteOp> = (1..=4)
            .map(|i| append(message(&format!("$m{i}"), "!r")))
            .collect();
        let receipt = |kind: &str, thread: &str, event: &str| WriteOp::PutReceipt {
            room_id: "!r".into(),
            user_id: "@a:hs".into(),
            receipt_type: kind.into(),
            thread_id: thread.into(),
            event_id: event.into(),
            ts: 1,
        };
        ops.push(receipt("m.read", "", "$m2"));
        ops.push(receipt("m.read.private", "main", "$m3"));
        // Neither counts: a thread's receipt, and a receipt of no stored event.
        ops.push(receipt("m.read", "$m1", "$m4"));
        ops.push(receipt("m.fully_read", "", "$m4"));
        store.write(WriteBatch { ops }).await.unwrap();
        assert_eq!(store.read_marker_pos("!r", "@a:hs").unwrap(), Some(3));
        assert_eq!(store.read_marker_pos("!r", "@b:hs").unwrap(), None);
        store
            .write(WriteBatch::one(receipt("m.read", "", "$gone")))
            .await
            .unwrap();
        assert_eq!(store.read_marker_pos("!r", "@a:hs").unwrap(), Some(3));
        store.close();
    }
}
