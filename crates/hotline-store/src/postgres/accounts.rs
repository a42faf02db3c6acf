//! Accounts: users, access tokens, devices, registration tokens, filters, meta.

use super::writer::Applied;
use super::Conn;
use crate::*;

pub(crate) async fn create_user(c: &Conn, u: &UserRow) -> Applied {
    todo!()
}

pub(crate) async fn set_password(c: &Conn, user_id: &str, password_hash: &str) -> Applied {
    todo!()
}

pub(crate) async fn set_profile(c: &Conn, user_id: &str, displayname: &Option<Option<String>>, avatar_url: &Option<Option<String>>) -> Applied {
    todo!()
}

pub(crate) async fn deactivate(c: &Conn, user_id: &str) -> Applied {
    todo!()
}

pub(crate) async fn upsert_device(c: &Conn, d: &DeviceRow) -> Applied {
    todo!()
}

pub(crate) async fn delete_device(c: &Conn, user_id: &str, device_id: &str) -> Applied {
    todo!()
}

pub(crate) async fn insert_token(c: &Conn, t: &TokenRow) -> Applied {
    todo!()
}

pub(crate) async fn delete_device_tokens(c: &Conn, user_id: &str, device_id: &str) -> Applied {
    todo!()
}

pub(crate) async fn set_device_seen(c: &Conn, user_id: &str, device_id: &str, ts: i64, ip: Option<&str>) -> Applied {
    todo!()
}

pub(crate) async fn create_registration_token(c: &Conn, t: &RegistrationTokenRow) -> Applied {
    todo!()
}

pub(crate) async fn use_registration_token(c: &Conn, token: &str, now_ms: i64) -> Applied {
    todo!()
}

pub(crate) async fn put_filter(c: &Conn, user_id: &str, filter_id: &str, json: &str) -> Applied {
    todo!()
}

pub(crate) async fn put_meta(c: &Conn, key: &str, value: &str) -> Applied {
    todo!()
}
