//! Rooms and events: rooms, the event stream, current state, memberships, transactions, aliases, the published directory, read markers.

use super::writer::Applied;
use super::Conn;
use crate::*;

pub(crate) async fn create_room(c: &Conn, r: &RoomRow) -> Applied {
    todo!()
}

pub(crate) async fn append_event(c: &Conn, e: &NewEvent, pos: i64) -> Applied {
    todo!()
}

pub(crate) async fn forget_room(c: &Conn, user_id: &str, room_id: &str) -> Applied {
    todo!()
}

pub(crate) async fn put_alias(c: &Conn, a: &AliasRow) -> Applied {
    todo!()
}

pub(crate) async fn delete_alias(c: &Conn, alias: &str) -> Applied {
    todo!()
}

pub(crate) async fn set_room_published(c: &Conn, room_id: &str, published: bool) -> Applied {
    todo!()
}

pub(crate) async fn record_txn(c: &Conn, user_id: &str, device_id: &str, txn_id: &str) -> Applied {
    todo!()
}
