//! Accounts in SQLite: users, access tokens, devices, registration tokens,
//! filters and the `meta` key-value table.

use rusqlite::{params, Connection, Row};

use super::{column, refused, SqliteStore};
use crate::*;

// ----- writes -----

pub(super) fn create_user(c: &Connection, u: &UserRow) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO users (user_id, password_hash, displayname, avatar_url, created_ts, deactivated) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![u.user_id, u.password_hash, u.displayname, u.avatar_url, u.created_ts, u.deactivated])?;
    Ok(())
}

pub(super) fn set_password(
    c: &Connection,
    user_id: &str,
    password_hash: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE users SET password_hash = ?2 WHERE user_id = ?1")?
        .execute(params![user_id, password_hash])?;
    Ok(())
}

/// `Some` fields are set (to a value or to `NULL`); `None` ones are kept.
pub(super) fn set_profile(
    c: &Connection,
    user_id: &str,
    displayname: &Option<Option<String>>,
    avatar_url: &Option<Option<String>>,
) -> rusqlite::Result<()> {
    if let Some(d) = displayname {
        c.prepare_cached("UPDATE users SET displayname = ?2 WHERE user_id = ?1")?
            .execute(params![user_id, d])?;
    }
    if let Some(a) = avatar_url {
        c.prepare_cached("UPDATE users SET avatar_url = ?2 WHERE user_id = ?1")?
            .execute(params![user_id, a])?;
    }
    Ok(())
}

pub(super) fn deactivate(c: &Connection, user_id: &str) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = ?1")?
        .execute(params![user_id])?;
    c.prepare_cached("DELETE FROM access_tokens WHERE user_id = ?1")?
        .execute(params![user_id])?;
    Ok(())
}

pub(super) fn upsert_device(c: &Connection, d: &DeviceRow) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts, last_seen_ip) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name, last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip",
    )?
    .execute(params![d.user_id, d.device_id, d.display_name, d.last_seen_ts, d.last_seen_ip])?;
    Ok(())
}

pub(super) fn delete_device(
    c: &Connection,
    user_id: &str,
    device_id: &str,
) -> rusqlite::Result<()> {
    // A device's keys and queue go with it.
    for sql in [
        "DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2",
        "DELETE FROM access_tokens WHERE user_id = ?1 AND device_id = ?2",
        "DELETE FROM device_keys WHERE user_id = ?1 AND device_id = ?2",
        "DELETE FROM one_time_keys WHERE user_id = ?1 AND device_id = ?2",
        "DELETE FROM fallback_keys WHERE user_id = ?1 AND device_id = ?2",
        "DELETE FROM to_device WHERE user_id = ?1 AND device_id = ?2",
        "DELETE FROM key_signatures WHERE target_user = ?1 AND target_key_id = ?2",
        "DELETE FROM pushers WHERE user_id = ?1 AND device_id = ?2",
    ] {
        c.prepare_cached(sql)?
            .execute(params![user_id, device_id])?;
    }
    Ok(())
}

pub(super) fn insert_token(c: &Connection, t: &TokenRow) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO access_tokens (token_hash, user_id, device_id) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![t.token_hash, t.user_id, t.device_id])?;
    Ok(())
}

pub(super) fn delete_device_tokens(
    c: &Connection,
    user_id: &str,
    device_id: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM access_tokens WHERE user_id = ?1 AND device_id = ?2")?
        .execute(params![user_id, device_id])?;
    Ok(())
}

pub(super) fn set_device_seen(
    c: &Connection,
    user_id: &str,
    device_id: &str,
    ts: i64,
    ip: Option<&str>,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE devices SET last_seen_ts = MAX(COALESCE(last_seen_ts, 0), ?3), last_seen_ip = COALESCE(?4, last_seen_ip)
         WHERE user_id = ?1 AND device_id = ?2",
    )?
    .execute(params![user_id, device_id, ts, ip])?;
    Ok(())
}

pub(super) fn create_registration_token(
    c: &Connection,
    t: &RegistrationTokenRow,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO registration_tokens (token, uses_allowed, completed, expiry_ts) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![t.token, t.uses_allowed, t.completed, t.expiry_ts])?;
    Ok(())
}

/// Counts a use of the token, or fails the batch as a conflict if it is
/// used up or expired.
pub(super) fn use_registration_token(
    c: &Connection,
    token: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let counted = c
        .prepare_cached(
            "UPDATE registration_tokens SET completed = completed + 1 WHERE token = ?1
             AND (uses_allowed IS NULL OR completed < uses_allowed)
             AND (expiry_ts IS NULL OR expiry_ts > ?2)",
        )?
        .execute(params![token, now_ms])?;
    if counted == 0 {
        return Err(refused("registration token used up or expired"));
    }
    Ok(())
}

pub(super) fn put_filter(
    c: &Connection,
    user_id: &str,
    filter_id: &str,
    json: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO filters (user_id, filter_id, json) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![user_id, filter_id, json])?;
    Ok(())
}

pub(super) fn put_pusher(c: &Connection, p: &PusherRow) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO pushers (user_id, app_id, pushkey, device_id, json, position) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![p.user_id, p.app_id, p.pushkey, p.device_id, p.json, p.position])?;
    Ok(())
}

pub(super) fn delete_pusher(
    c: &Connection,
    user_id: &str,
    app_id: &str,
    pushkey: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM pushers WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3")?
        .execute(params![user_id, app_id, pushkey])?;
    Ok(())
}

pub(super) fn delete_pushers_of_key(
    c: &Connection,
    app_id: &str,
    pushkey: &str,
    except_user: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM pushers WHERE app_id = ?1 AND pushkey = ?2 AND user_id <> ?3")?
        .execute(params![app_id, pushkey, except_user])?;
    Ok(())
}

pub(super) fn set_pusher_position(
    c: &Connection,
    user_id: &str,
    app_id: &str,
    pushkey: &str,
    position: i64,
) -> rusqlite::Result<()> {
    // Never backwards: a position only moves on.
    c.prepare_cached(
        "UPDATE pushers SET position = ?4 WHERE user_id = ?1 AND app_id = ?2 AND pushkey = ?3 AND position < ?4",
    )?
    .execute(params![user_id, app_id, pushkey, position])?;
    Ok(())
}

fn pusher_row(r: &Row<'_>) -> rusqlite::Result<PusherRow> {
    Ok(PusherRow {
        user_id: r.get(0)?,
        app_id: r.get(1)?,
        pushkey: r.get(2)?,
        device_id: r.get(3)?,
        json: r.get(4)?,
        position: r.get(5)?,
    })
}

pub(super) fn put_meta(c: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
        .execute(params![key, value])?;
    Ok(())
}

// ----- row mappers -----

fn user_row(r: &Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        user_id: r.get(0)?,
        password_hash: r.get(1)?,
        displayname: r.get(2)?,
        avatar_url: r.get(3)?,
        created_ts: r.get(4)?,
        deactivated: r.get(5)?,
    })
}

fn token_row(r: &Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        token_hash: r.get(0)?,
        user_id: r.get(1)?,
        device_id: r.get(2)?,
    })
}

fn device_row(r: &Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        user_id: r.get(0)?,
        device_id: r.get(1)?,
        display_name: r.get(2)?,
        last_seen_ts: r.get(3)?,
        last_seen_ip: r.get(4)?,
    })
}

fn registration_token_row(r: &Row<'_>) -> rusqlite::Result<RegistrationTokenRow> {
    Ok(RegistrationTokenRow {
        token: r.get(0)?,
        uses_allowed: r.get(1)?,
        completed: r.get(2)?,
        expiry_ts: r.get(3)?,
    })
}

// ----- reads -----

impl AccountStore for SqliteStore {
    fn get_user(&self, user_id: &str) -> Result<Option<UserRow>> {
        self.query_one(
            "SELECT user_id, password_hash, displayname, avatar_url, created_ts, deactivated FROM users WHERE user_id = ?1",
            params![user_id],
            user_row,
        )
    }

    fn count_users(&self) -> Result<i64> {
        self.query_value("SELECT COUNT(*) FROM users", params![])
    }

    fn find_token(&self, token_hash: &str) -> Result<Option<TokenRow>> {
        self.query_one(
            "SELECT token_hash, user_id, device_id FROM access_tokens WHERE token_hash = ?1",
            params![token_hash],
            token_row,
        )
    }

    fn list_devices(&self, user_id: &str) -> Result<Vec<DeviceRow>> {
        self.query_all(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = ?1 ORDER BY device_id",
            params![user_id],
            device_row,
        )
    }

    fn get_device(&self, user_id: &str, device_id: &str) -> Result<Option<DeviceRow>> {
        self.query_one(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = ?1 AND device_id = ?2",
            params![user_id, device_id],
            device_row,
        )
    }

    fn get_registration_token(&self, token: &str) -> Result<Option<RegistrationTokenRow>> {
        self.query_one(
            "SELECT token, uses_allowed, completed, expiry_ts FROM registration_tokens WHERE token = ?1",
            params![token],
            registration_token_row,
        )
    }

    fn get_filter(&self, user_id: &str, filter_id: &str) -> Result<Option<String>> {
        self.query_one(
            "SELECT json FROM filters WHERE user_id = ?1 AND filter_id = ?2",
            params![user_id, filter_id],
            column,
        )
    }

    fn get_meta(&self, key: &str) -> Result<Option<String>> {
        self.query_one(
            "SELECT value FROM meta WHERE key = ?1",
            params![key],
            column,
        )
    }

    fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        // substr, not LIKE: a prefix may hold `_` or `%`.
        self.query_all(
            "SELECT key, value FROM meta WHERE substr(key, 1, ?2) = ?1 ORDER BY key",
            params![prefix, prefix.chars().count() as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    fn pushers_of(&self, user_id: &str) -> Result<Vec<PusherRow>> {
        self.query_all(
            "SELECT user_id, app_id, pushkey, device_id, json, position FROM pushers WHERE user_id = ?1 ORDER BY app_id, pushkey",
            params![user_id],
            pusher_row,
        )
    }

    fn all_pushers(&self) -> Result<Vec<PusherRow>> {
        self.query_all(
            "SELECT user_id, app_id, pushkey, device_id, json, position FROM pushers ORDER BY user_id, app_id, pushkey",
            params![],
            pusher_row,
        )
    }
}
