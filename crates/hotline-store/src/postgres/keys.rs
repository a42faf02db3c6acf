//! End-to-end encryption keys (device keys, one-time and fallback keys, cross-signing keys and signatures), key changes, to-device messages.

use super::writer::Applied;
use super::Conn;
use crate::*;

pub(crate) async fn put_device_keys(c: &Conn, user_id: &str, device_id: &str, json: &str) -> Applied {
    todo!()
}

pub(crate) async fn put_one_time_keys(c: &Conn, user_id: &str, device_id: &str, keys: &[(String, String, String)]) -> Applied {
    todo!()
}

pub(crate) async fn put_fallback_key(c: &Conn, user_id: &str, device_id: &str, algorithm: &str, key_id: &str, json: &str) -> Applied {
    todo!()
}

pub(crate) async fn delete_one_time_key(c: &Conn, user_id: &str, device_id: &str, key_id: &str) -> Applied {
    todo!()
}

pub(crate) async fn mark_fallback_used(c: &Conn, user_id: &str, device_id: &str, algorithm: &str) -> Applied {
    todo!()
}

pub(crate) async fn put_cross_signing_key(c: &Conn, user_id: &str, key_type: &str, json: &str) -> Applied {
    todo!()
}

pub(crate) async fn put_key_signature(c: &Conn, s: &KeySignatureRow) -> Applied {
    todo!()
}

pub(crate) async fn key_change(c: &Conn, user_id: &str, pos: i64) -> Applied {
    todo!()
}

pub(crate) async fn put_to_device(c: &Conn, user_id: &str, device_id: &str, json: &str, max_queued: i64, pos: i64) -> Applied {
    todo!()
}

pub(crate) async fn delete_to_device(c: &Conn, user_id: &str, device_id: &str, upto: i64) -> Applied {
    todo!()
}
