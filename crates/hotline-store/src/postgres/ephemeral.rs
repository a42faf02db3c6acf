//! Per-user streams: account data, receipts, presence.

use super::writer::Applied;
use super::Conn;
use crate::*;

pub(crate) async fn put_account_data(c: &Conn, user_id: &str, room_id: &str, kind: &str, content: &str, pos: i64) -> Applied {
    todo!()
}

pub(crate) async fn put_receipt(c: &Conn, room_id: &str, user_id: &str, receipt_type: &str, thread_id: &str, event_id: &str, ts: i64, pos: i64) -> Applied {
    todo!()
}

pub(crate) async fn put_presence(c: &Conn, user_id: &str, state: &str, status_msg: Option<&str>, last_active_ts: i64, pos: i64) -> Applied {
    todo!()
}
