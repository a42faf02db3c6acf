//! Server-side key backup: versions and the sessions backed up in them.

use super::writer::Applied;
use super::Conn;
use crate::*;

pub(crate) async fn create_backup_version(c: &Conn, v: &BackupVersionRow) -> Applied {
    todo!()
}

pub(crate) async fn update_backup_version(c: &Conn, user_id: &str, version: i64, auth_data: &str) -> Applied {
    todo!()
}

pub(crate) async fn delete_backup_version(c: &Conn, user_id: &str, version: i64) -> Applied {
    todo!()
}

pub(crate) async fn put_backup_key(c: &Conn, user_id: &str, version: i64, key: &BackupKeyRow) -> Applied {
    todo!()
}

pub(crate) async fn delete_backup_keys(c: &Conn, user_id: &str, version: i64, room_id: Option<&str>, session_id: Option<&str>) -> Applied {
    todo!()
}
