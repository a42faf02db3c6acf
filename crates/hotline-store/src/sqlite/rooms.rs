//! Rooms in SQLite: rooms, events (the timeline and its state), the current
//! state and memberships derived from them, transaction ids, aliases, the
//! published room directory, and read markers.
//!
//! Reads of past state name the `events_room_state` index (room, type,
//! state key, position) with `INDEXED BY`, so they walk one piece of state
//! rather than the room's timeline.

use rusqlite::{params, Connection, Row};

use super::{column, SqliteStore};
use crate::*;

// ----- writes -----

pub(super) fn create_room(c: &Connection, r: &RoomRow) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO rooms (room_id, room_version) VALUES (?1, ?2)")?
        .execute(params![r.room_id, r.room_version])?;
    Ok(())
}

/// Appends the event at `pos`, and with it what it changes: its transaction
/// id, the room's current state, the sender's or target's membership, and
/// the event it redacts.
pub(super) fn append_event(c: &Connection, e: &NewEvent, pos: i64) -> rusqlite::Result<()> {
    let (txn_device, txn_id) = match &e.txn {
        Some(t) => (Some(t.device_id.as_str()), Some(t.txn_id.as_str())),
        None => (None, None),
    };
    c.prepare_cached(
        "INSERT INTO events (pos, event_id, room_id, sender, event_type, state_key, json, txn_device, txn_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![pos, e.event_id, e.room_id, e.sender, e.event_type, e.state_key, e.json, txn_device, txn_id])?;
    if let Some(t) = &e.txn {
        c.prepare_cached(
            "INSERT INTO txns (user_id, device_id, txn_id, event_id) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![e.sender, t.device_id, t.key, e.event_id])?;
    }
    if let Some(state_key) = &e.state_key {
        c.prepare_cached(
            "INSERT INTO room_state (room_id, event_type, state_key, event_id) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id",
        )?
        .execute(params![e.room_id, e.event_type, state_key, e.event_id])?;
    }
    if let Some((user_id, membership)) = &e.membership {
        c.prepare_cached(
            "INSERT INTO memberships (room_id, user_id, membership, event_id, pos, forgotten) VALUES (?1, ?2, ?3, ?4, ?5, 0)
             ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, event_id = excluded.event_id, pos = excluded.pos, forgotten = 0",
        )?
        .execute(params![e.room_id, user_id, membership, e.event_id, pos])?;
    }
    if let Some((target, redacted_json)) = &e.redacts {
        c.prepare_cached("UPDATE events SET json = ?2, redacted_by = ?3 WHERE event_id = ?1")?
            .execute(params![target, redacted_json, e.event_id])?;
    }
    Ok(())
}

/// [`WriteOp::AppendBackfilled`](crate::WriteOp::AppendBackfilled): the
/// event row alone, below every position taken.
pub(super) fn append_backfilled(c: &Connection, e: &NewEvent) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO events (pos, event_id, room_id, sender, event_type, state_key, json)
         VALUES ((SELECT MIN(0, IFNULL(MIN(pos), 0)) FROM events) - 1, ?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (event_id) DO NOTHING",
    )?
    .execute(params![
        e.event_id,
        e.room_id,
        e.sender,
        e.event_type,
        e.state_key,
        e.json
    ])?;
    Ok(())
}

/// [`WriteOp::PutOutlier`](crate::WriteOp::PutOutlier).
pub(super) fn put_outlier(
    c: &Connection,
    event_id: &str,
    room_id: &str,
    json: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO outliers (event_id, room_id, json) VALUES (?1, ?2, ?3)
         ON CONFLICT (event_id) DO NOTHING",
    )?
    .execute(params![event_id, room_id, json])?;
    Ok(())
}

/// [`WriteOp::SetCurrentState`](crate::WriteOp::SetCurrentState).
pub(super) fn set_current_state(
    c: &Connection,
    room_id: &str,
    (event_type, state_key): (&str, &str),
    event_id: &str,
    membership: &Option<(String, String)>,
    pos: i64,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO room_state (room_id, event_type, state_key, event_id) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id",
    )?
    .execute(params![room_id, event_type, state_key, event_id])?;
    if let Some((user_id, membership)) = membership {
        c.prepare_cached(
            "INSERT INTO memberships (room_id, user_id, membership, event_id, pos, forgotten) VALUES (?1, ?2, ?3, ?4, ?5, 0)
             ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, event_id = excluded.event_id, pos = excluded.pos, forgotten = 0",
        )?
        .execute(params![room_id, user_id, membership, event_id, pos])?;
    }
    Ok(())
}

pub(super) fn forget_room(c: &Connection, user_id: &str, room_id: &str) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE memberships SET forgotten = 1 WHERE room_id = ?1 AND user_id = ?2")?
        .execute(params![room_id, user_id])?;
    Ok(())
}

pub(super) fn put_alias(c: &Connection, a: &AliasRow) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO aliases (alias, room_id, creator) VALUES (?1, ?2, ?3)")?
        .execute(params![a.alias, a.room_id, a.creator])?;
    Ok(())
}

pub(super) fn delete_alias(c: &Connection, alias: &str) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM aliases WHERE alias = ?1")?
        .execute(params![alias])?;
    Ok(())
}

pub(super) fn set_room_published(
    c: &Connection,
    room_id: &str,
    published: bool,
) -> rusqlite::Result<()> {
    let sql = if published {
        "INSERT OR IGNORE INTO published_rooms (room_id) VALUES (?1)"
    } else {
        "DELETE FROM published_rooms WHERE room_id = ?1"
    };
    c.prepare_cached(sql)?.execute(params![room_id])?;
    Ok(())
}

/// Records a transaction id that produced no event (sends to devices).
pub(super) fn record_txn(
    c: &Connection,
    user_id: &str,
    device_id: &str,
    txn_id: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR IGNORE INTO txns (user_id, device_id, txn_id, event_id) VALUES (?1, ?2, ?3, '')",
    )?
    .execute(params![user_id, device_id, txn_id])?;
    Ok(())
}

// ----- row mappers -----

const EVENT_COLS: &str = "pos, event_id, room_id, json, redacted_by, txn_device, txn_id";

fn event_row(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    let txn_device: Option<String> = r.get(5)?;
    let txn_id: Option<String> = r.get(6)?;
    Ok(EventRow {
        pos: r.get(0)?,
        event_id: r.get(1)?,
        room_id: r.get(2)?,
        json: r.get(3)?,
        redacted_by: r.get(4)?,
        txn: txn_device.zip(txn_id),
    })
}

fn room_row(r: &Row<'_>) -> rusqlite::Result<RoomRow> {
    Ok(RoomRow {
        room_id: r.get(0)?,
        room_version: r.get(1)?,
    })
}

fn membership_row(r: &Row<'_>) -> rusqlite::Result<MembershipRow> {
    Ok(MembershipRow {
        room_id: r.get(0)?,
        user_id: r.get(1)?,
        membership: r.get(2)?,
        event_id: r.get(3)?,
        pos: r.get(4)?,
        forgotten: r.get(5)?,
    })
}

fn alias_row(r: &Row<'_>) -> rusqlite::Result<AliasRow> {
    Ok(AliasRow {
        alias: r.get(0)?,
        room_id: r.get(1)?,
        creator: r.get(2)?,
    })
}

// ----- reads -----

impl RoomStore for SqliteStore {
    fn list_rooms(&self) -> Result<Vec<RoomRow>> {
        self.query_all(
            "SELECT room_id, room_version FROM rooms",
            params![],
            room_row,
        )
    }

    fn get_room(&self, room_id: &str) -> Result<Option<RoomRow>> {
        self.query_one(
            "SELECT room_id, room_version FROM rooms WHERE room_id = ?1",
            params![room_id],
            room_row,
        )
    }

    fn room_state(&self, room_id: &str) -> Result<Vec<EventRow>> {
        self.query_all(
            "SELECT e.pos, e.event_id, e.room_id, e.json, e.redacted_by, e.txn_device, e.txn_id FROM room_state s JOIN events e ON e.event_id = s.event_id WHERE s.room_id = ?1",
            params![room_id],
            event_row,
        )
    }

    fn get_event(&self, event_id: &str) -> Result<Option<EventRow>> {
        self.query_one(
            &format!("SELECT {EVENT_COLS} FROM events WHERE event_id = ?1"),
            params![event_id],
            event_row,
        )
    }

    fn get_outlier(&self, event_id: &str) -> Result<Option<EventRow>> {
        self.query_one(
            "SELECT 0, event_id, room_id, json, NULL, NULL, NULL FROM outliers WHERE event_id = ?1",
            params![event_id],
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
            &format!("SELECT {EVENT_COLS} FROM events WHERE room_id = ?1 AND pos < ?2 ORDER BY pos DESC LIMIT ?3"),
            params![room_id, before, limit as i64],
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
            &format!("SELECT {EVENT_COLS} FROM events WHERE room_id = ?1 AND pos > ?2 ORDER BY pos ASC LIMIT ?3"),
            params![room_id, after, limit as i64],
            event_row,
        )
    }

    fn state_history(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Result<Vec<EventRow>> {
        self.query_all(
            &format!(
                "SELECT {EVENT_COLS} FROM events INDEXED BY events_room_state
                 WHERE room_id = ?1 AND event_type = ?2 AND state_key = ?3 ORDER BY pos ASC"
            ),
            params![room_id, event_type, state_key],
            event_row,
        )
    }

    fn room_state_at(
        &self,
        room_id: &str,
        at: i64,
        event_type: Option<&str>,
    ) -> Result<Vec<EventRow>> {
        // One index entry per state event of the room (or of the type):
        // the newest at or before `at` per key, then those rows.
        match event_type {
            Some(kind) => self.query_all(
                &format!(
                    "SELECT {EVENT_COLS} FROM events WHERE pos IN (
                       SELECT MAX(pos) FROM events INDEXED BY events_room_state
                       WHERE room_id = ?1 AND event_type = ?3 AND state_key IS NOT NULL AND pos <= ?2
                       GROUP BY state_key)"
                ),
                params![room_id, at, kind],
                event_row,
            ),
            None => self.query_all(
                &format!(
                    "SELECT {EVENT_COLS} FROM events WHERE pos IN (
                       SELECT MAX(pos) FROM events INDEXED BY events_room_state
                       WHERE room_id = ?1 AND state_key IS NOT NULL AND pos <= ?2
                       GROUP BY event_type, state_key)"
                ),
                params![room_id, at],
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
            &format!(
                "SELECT {EVENT_COLS} FROM events INDEXED BY events_room_state
                 WHERE room_id = ?1 AND event_type = ?2 AND state_key = ?3 AND pos <= ?4
                 ORDER BY pos DESC LIMIT 1"
            ),
            params![room_id, event_type, state_key, at],
            event_row,
        )
    }

    fn memberships_of_user(&self, user_id: &str) -> Result<Vec<MembershipRow>> {
        self.query_all(
            "SELECT room_id, user_id, membership, event_id, pos, forgotten FROM memberships WHERE user_id = ?1",
            params![user_id],
            membership_row,
        )
    }

    fn find_txn(&self, user_id: &str, device_id: &str, txn_id: &str) -> Result<Option<String>> {
        self.query_one(
            "SELECT event_id FROM txns WHERE user_id = ?1 AND device_id = ?2 AND txn_id = ?3",
            params![user_id, device_id, txn_id],
            column,
        )
    }

    fn get_alias(&self, alias: &str) -> Result<Option<AliasRow>> {
        self.query_one(
            "SELECT alias, room_id, creator FROM aliases WHERE alias = ?1",
            params![alias],
            alias_row,
        )
    }

    fn is_room_published(&self, room_id: &str) -> Result<bool> {
        self.query_one(
            "SELECT 1 FROM published_rooms WHERE room_id = ?1",
            params![room_id],
            |_| Ok(()),
        )
        .map(|r| r.is_some())
    }

    fn published_rooms(&self) -> Result<Vec<String>> {
        self.query_all("SELECT room_id FROM published_rooms", params![], column)
    }

    fn read_marker_pos(&self, room_id: &str, user_id: &str) -> Result<Option<i64>> {
        self.query_value(
            "SELECT MAX(e.pos) FROM receipts r JOIN events e ON e.event_id = r.event_id \
             WHERE r.room_id = ?1 AND r.user_id = ?2 \
             AND r.receipt_type IN ('m.read', 'm.read.private') AND r.thread_id IN ('', 'main')",
            params![room_id, user_id],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn backfilled_events_go_before_all_others_and_outliers_stay_out_of_the_timeline() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db.sqlite"), Durability::Normal).unwrap();
        crate::traits::backfilled_events_go_before_all_others_and_outliers_stay_out_of_the_timeline(&*store)
            .await;
        store.close();
    }
}
