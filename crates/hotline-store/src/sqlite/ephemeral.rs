//! The per-user streams beside the timeline in SQLite: account data,
//! receipts and presence. Each row keeps the stream position of its last
//! change, so `/sync` reads what changed since a position.

use rusqlite::{params, Connection, Row};

use super::{column, SqliteStore};
use crate::*;

// ----- writes -----

pub(super) fn put_account_data(
    c: &Connection,
    user_id: &str,
    room_id: &str,
    kind: &str,
    content: &str,
    pos: i64,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO account_data (user_id, room_id, kind, content, pos) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (user_id, room_id, kind) DO UPDATE SET content = excluded.content, pos = excluded.pos",
    )?
    .execute(params![user_id, room_id, kind, content, pos])?;
    Ok(())
}

/// The fields of a [`WriteOp::PutReceipt`].
pub(super) struct NewReceipt<'a> {
    pub(super) room_id: &'a str,
    pub(super) user_id: &'a str,
    pub(super) receipt_type: &'a str,
    pub(super) thread_id: &'a str,
    pub(super) event_id: &'a str,
    pub(super) ts: i64,
}

pub(super) fn put_receipt(c: &Connection, r: NewReceipt<'_>, pos: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, pos) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, pos = excluded.pos",
    )?
    .execute(params![r.room_id, r.user_id, r.receipt_type, r.thread_id, r.event_id, r.ts, pos])?;
    Ok(())
}

pub(super) fn put_presence(
    c: &Connection,
    user_id: &str,
    state: &str,
    status_msg: Option<&str>,
    last_active_ts: i64,
    pos: i64,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO presence (user_id, state, status_msg, last_active_ts, pos) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![user_id, state, status_msg, last_active_ts, pos])?;
    Ok(())
}

// ----- row mappers -----

fn account_data_row(r: &Row<'_>) -> rusqlite::Result<AccountDataRow> {
    Ok(AccountDataRow {
        user_id: r.get(0)?,
        room_id: r.get(1)?,
        kind: r.get(2)?,
        content: r.get(3)?,
        pos: r.get(4)?,
    })
}

fn receipt_row(r: &Row<'_>) -> rusqlite::Result<ReceiptRow> {
    Ok(ReceiptRow {
        room_id: r.get(0)?,
        user_id: r.get(1)?,
        receipt_type: r.get(2)?,
        thread_id: r.get(3)?,
        event_id: r.get(4)?,
        ts: r.get(5)?,
        pos: r.get(6)?,
    })
}

fn presence_row(r: &Row<'_>) -> rusqlite::Result<PresenceRow> {
    Ok(PresenceRow {
        user_id: r.get(0)?,
        state: r.get(1)?,
        status_msg: r.get(2)?,
        last_active_ts: r.get(3)?,
        pos: r.get(4)?,
    })
}

// ----- reads -----

impl EphemeralStore for SqliteStore {
    fn account_data_since(&self, user_id: &str, since: i64) -> Result<Vec<AccountDataRow>> {
        self.query_all(
            "SELECT user_id, room_id, kind, content, pos FROM account_data WHERE user_id = ?1 AND pos > ?2 ORDER BY pos",
            params![user_id, since],
            account_data_row,
        )
    }

    fn get_account_data(
        &self,
        user_id: &str,
        room_id: &str,
        kind: &str,
    ) -> Result<Option<AccountDataRow>> {
        self.query_one(
            "SELECT user_id, room_id, kind, content, pos FROM account_data WHERE user_id = ?1 AND room_id = ?2 AND kind = ?3",
            params![user_id, room_id, kind],
            account_data_row,
        )
    }

    fn receipts_since(&self, room_id: &str, since: i64) -> Result<Vec<ReceiptRow>> {
        self.query_all(
            "SELECT room_id, user_id, receipt_type, thread_id, event_id, ts, pos FROM receipts WHERE room_id = ?1 AND pos > ?2",
            params![room_id, since],
            receipt_row,
        )
    }

    fn latest_receipts(&self, room_id: &str) -> Result<Vec<ReceiptRow>> {
        self.receipts_since(room_id, 0)
    }

    fn get_receipt(
        &self,
        room_id: &str,
        user_id: &str,
        receipt_type: &str,
        thread_id: &str,
    ) -> Result<Option<ReceiptRow>> {
        self.query_one(
            "SELECT room_id, user_id, receipt_type, thread_id, event_id, ts, pos FROM receipts \
             WHERE room_id = ?1 AND user_id = ?2 AND receipt_type = ?3 AND thread_id = ?4",
            params![room_id, user_id, receipt_type, thread_id],
            receipt_row,
        )
    }

    fn get_presence(&self, user_id: &str) -> Result<Option<PresenceRow>> {
        self.query_one(
            "SELECT user_id, state, status_msg, last_active_ts, pos FROM presence WHERE user_id = ?1",
            params![user_id],
            presence_row,
        )
    }

    fn users_present(&self) -> Result<Vec<String>> {
        self.query_all(
            "SELECT user_id FROM presence WHERE state <> 'offline'",
            params![],
            column,
        )
    }
}
