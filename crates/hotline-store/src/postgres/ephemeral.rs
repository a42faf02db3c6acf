//! Per-user streams: account data, receipts, presence.

use tokio_postgres::Row;

use super::writer::Applied;
use super::{Conn, PgResult, PostgresStore};
use crate::*;

pub(crate) async fn put_account_data(
    c: &Conn,
    user_id: &str,
    room_id: &str,
    kind: &str,
    content: &str,
    pos: i64,
) -> Applied {
    c.exec(
        "INSERT INTO account_data (user_id, room_id, kind, content, pos) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id, room_id, kind) DO UPDATE SET content = excluded.content, pos = excluded.pos",
        &[&user_id, &room_id, &kind, &content, &pos],
    )
    .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn put_receipt(
    c: &Conn,
    room_id: &str,
    user_id: &str,
    receipt_type: &str,
    thread_id: &str,
    event_id: &str,
    ts: i64,
    pos: i64,
) -> Applied {
    c.exec(
        "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, pos) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, pos = excluded.pos",
        &[&room_id, &user_id, &receipt_type, &thread_id, &event_id, &ts, &pos],
    )
    .await?;
    Ok(())
}

pub(crate) async fn put_presence(
    c: &Conn,
    user_id: &str,
    state: &str,
    status_msg: Option<&str>,
    last_active_ts: i64,
    pos: i64,
) -> Applied {
    // SQLite's INSERT OR REPLACE: every column of the row is the new one.
    c.exec(
        "INSERT INTO presence (user_id, state, status_msg, last_active_ts, pos) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg,
           last_active_ts = excluded.last_active_ts, pos = excluded.pos",
        &[&user_id, &state, &status_msg, &last_active_ts, &pos],
    )
    .await?;
    Ok(())
}

fn account_data_row(r: &Row) -> PgResult<AccountDataRow> {
    Ok(AccountDataRow {
        user_id: r.try_get(0)?,
        room_id: r.try_get(1)?,
        kind: r.try_get(2)?,
        content: r.try_get(3)?,
        pos: r.try_get(4)?,
    })
}

fn receipt_row(r: &Row) -> PgResult<ReceiptRow> {
    Ok(ReceiptRow {
        room_id: r.try_get(0)?,
        user_id: r.try_get(1)?,
        receipt_type: r.try_get(2)?,
        thread_id: r.try_get(3)?,
        event_id: r.try_get(4)?,
        ts: r.try_get(5)?,
        pos: r.try_get(6)?,
    })
}

fn presence_row(r: &Row) -> PgResult<PresenceRow> {
    Ok(PresenceRow {
        user_id: r.try_get(0)?,
        state: r.try_get(1)?,
        status_msg: r.try_get(2)?,
        last_active_ts: r.try_get(3)?,
        pos: r.try_get(4)?,
    })
}

impl EphemeralStore for PostgresStore {
    fn account_data_since(&self, user_id: &str, since: i64) -> Result<Vec<AccountDataRow>> {
        self.query_all(
            "SELECT user_id, room_id, kind, content, pos FROM account_data WHERE user_id = $1 AND pos > $2 ORDER BY pos",
            &[&user_id, &since],
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
            "SELECT user_id, room_id, kind, content, pos FROM account_data WHERE user_id = $1 AND room_id = $2 AND kind = $3",
            &[&user_id, &room_id, &kind],
            account_data_row,
        )
    }

    fn receipts_since(&self, room_id: &str, since: i64) -> Result<Vec<ReceiptRow>> {
        // Oldest first, as SQLite reads them off `receipts_pos`.
        self.query_all(
            "SELECT room_id, user_id, receipt_type, thread_id, event_id, ts, pos FROM receipts WHERE room_id = $1 AND pos > $2 ORDER BY pos",
            &[&room_id, &since],
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
             WHERE room_id = $1 AND user_id = $2 AND receipt_type = $3 AND thread_id = $4",
            &[&room_id, &user_id, &receipt_type, &thread_id],
            receipt_row,
        )
    }

    fn get_presence(&self, user_id: &str) -> Result<Option<PresenceRow>> {
        self.query_one(
            "SELECT user_id, state, status_msg, last_active_ts, pos FROM presence WHERE user_id = $1",
            &[&user_id],
            presence_row,
        )
    }

    fn users_present(&self) -> Result<Vec<String>> {
        self.query_all(
            "SELECT user_id FROM presence WHERE state <> 'offline'",
            &[],
            |r| r.try_get(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::fresh_store;
    use crate::*;

    fn account_data(user: &str, room: &str, kind: &str, content: &str) -> WriteOp {
        WriteOp::PutAccountData {
            user_id: user.into(),
            room_id: room.into(),
            kind: kind.into(),
            content: content.into(),
        }
    }

    fn receipt(user: &str, kind: &str, thread: &str, event: &str, ts: i64) -> WriteOp {
        WriteOp::PutReceipt {
            room_id: "!r".into(),
            user_id: user.into(),
            receipt_type: kind.into(),
            thread_id: thread.into(),
            event_id: event.into(),
            ts,
        }
    }

    fn presence(user: &str, state: &str, status: Option<&str>, ts: i64) -> WriteOp {
        WriteOp::PutPresence {
            user_id: user.into(),
            state: state.into(),
            status_msg: status.map(String::from),
            last_active_ts: ts,
        }
    }

    #[tokio::test]
    async fn replaced_account_data_moves_to_its_new_position() {
        let store = fresh_store();
        let c = store
            .write(WriteBatch {
                ops: vec![
                    account_data("@a:hs", "", "m.push_rules", "{\"v\":1}"),
                    account_data("@a:hs", "!r", "m.tag", "{}"),
                    account_data("@b:hs", "", "m.push_rules", "{}"),
                    account_data("@a:hs", "", "m.push_rules", "{\"v\":2}"),
                ],
            })
            .await
            .unwrap();
        let positions: Vec<i64> = c.items.iter().map(|(p, _)| *p).collect();
        assert_eq!(positions, [1, 2, 3, 4]);
        let since: Vec<(String, String, i64)> = store
            .account_data_since("@a:hs", 0)
            .unwrap()
            .into_iter()
            .map(|d| (d.room_id, d.kind, d.pos))
            .collect();
        assert_eq!(
            since,
            [
                ("!r".into(), "m.tag".into(), 2),
                (String::new(), "m.push_rules".into(), 4)
            ]
        );
        assert_eq!(store.account_data_since("@a:hs", 2).unwrap().len(), 1);
        assert!(store.account_data_since("@a:hs", 4).unwrap().is_empty());
        let rules = store
            .get_account_data("@a:hs", "", "m.push_rules")
            .unwrap()
            .unwrap();
        assert_eq!((rules.content.as_str(), rules.pos), ("{\"v\":2}", 4));
        assert_eq!(rules.user_id, "@a:hs");
        assert!(store
            .get_account_data("@a:hs", "!r", "m.push_rules")
            .unwrap()
            .is_none());
        store.close();
    }

    #[tokio::test]
    async fn a_receipt_replaces_the_users_previous_one_of_its_type_and_thread() {
        let store = fresh_store();
        store
            .write(WriteBatch {
                ops: vec![
                    receipt("@a:hs", "m.read", "", "$1", 10),        // 1
                    receipt("@b:hs", "m.read", "", "$1", 11),        // 2
                    receipt("@a:hs", "m.read", "$thread", "$2", 12), // 3
                    receipt("@a:hs", "m.read", "", "$3", 13),        // 4
                ],
            })
            .await
            .unwrap();
        let latest: Vec<(String, String, String, i64)> = store
            .latest_receipts("!r")
            .unwrap()
            .into_iter()
            .map(|r| (r.user_id, r.thread_id, r.event_id, r.pos))
            .collect();
        assert_eq!(
            latest,
            [
                ("@b:hs".into(), "".into(), "$1".into(), 2),
                ("@a:hs".into(), "$thread".into(), "$2".into(), 3),
                ("@a:hs".into(), "".into(), "$3".into(), 4),
            ]
        );
        let since = store.receipts_since("!r", 3).unwrap();
        assert_eq!(since.len(), 1);
        assert_eq!((since[0].event_id.as_str(), since[0].ts), ("$3", 13));
        assert!(store.receipts_since("!other", 0).unwrap().is_empty());
        let r = store
            .get_receipt("!r", "@a:hs", "m.read", "$thread")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                r.room_id.as_str(),
                r.receipt_type.as_str(),
                r.event_id.as_str(),
                r.ts,
                r.pos
            ),
            ("!r", "m.read", "$2", 12, 3)
        );
        assert!(store
            .get_receipt("!r", "@a:hs", "m.read.private", "")
            .unwrap()
            .is_none());
        store.close();
    }

    #[tokio::test]
    async fn presence_is_replaced_whole_and_offline_users_are_not_present() {
        let store = fresh_store();
        store
            .write(WriteBatch {
                ops: vec![
                    presence("@a:hs", "online", Some("lunch"), 100),
                    presence("@b:hs", "unavailable", None, 50),
                    presence("@c:hs", "offline", None, 10),
                ],
            })
            .await
            .unwrap();
        let p = store.get_presence("@a:hs").unwrap().unwrap();
        assert_eq!(
            (
                p.state.as_str(),
                p.status_msg.as_deref(),
                p.last_active_ts,
                p.pos
            ),
            ("online", Some("lunch"), 100, 1)
        );
        let c = store
            .write(WriteBatch::one(presence("@a:hs", "offline", None, 200)))
            .await
            .unwrap();
        assert_eq!(c.items[0].0, 4);
        let p = store.get_presence("@a:hs").unwrap().unwrap();
        // The status message goes with the rest of the row.
        assert_eq!(
            (p.state.as_str(), p.status_msg, p.last_active_ts, p.pos),
            ("offline", None, 200, 4)
        );
        assert_eq!(store.users_present().unwrap(), ["@b:hs"]);
        assert!(store.get_presence("@nobody:hs").unwrap().is_none());
        store.close();
    }
}
