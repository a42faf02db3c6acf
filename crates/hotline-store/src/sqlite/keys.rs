//! End-to-end encryption keys in SQLite: device keys, one-time and fallback
//! keys, cross-signing keys and signatures, the key-change stream, and the
//! to-device queues.

use rusqlite::{params, Connection, Row};

use super::{column, pair, refused, SqliteStore};
use crate::*;

// ----- writes -----

pub(super) fn put_device_keys(
    c: &Connection,
    user_id: &str,
    device_id: &str,
    json: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO device_keys (user_id, device_id, json) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![user_id, device_id, json])?;
    Ok(())
}

/// Adds `(key_id, algorithm, json)` one-time keys; a key id already stored
/// is kept as it is.
pub(super) fn put_one_time_keys(
    c: &Connection,
    user_id: &str,
    device_id: &str,
    keys: &[(String, String, String)],
) -> rusqlite::Result<()> {
    let mut st = c.prepare_cached(
        "INSERT OR IGNORE INTO one_time_keys (user_id, device_id, key_id, algorithm, json) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (key_id, algorithm, json) in keys {
        st.execute(params![user_id, device_id, key_id, algorithm, json])?;
    }
    Ok(())
}

pub(super) fn put_fallback_key(
    c: &Connection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
    key_id: &str,
    json: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO fallback_keys (user_id, device_id, algorithm, key_id, json, used) VALUES (?1, ?2, ?3, ?4, ?5, 0)",
    )?
    .execute(params![user_id, device_id, algorithm, key_id, json])?;
    Ok(())
}

pub(super) fn delete_one_time_key(
    c: &Connection,
    user_id: &str,
    device_id: &str,
    key_id: &str,
) -> rusqlite::Result<()> {
    let deleted = c
        .prepare_cached(
            "DELETE FROM one_time_keys WHERE user_id = ?1 AND device_id = ?2 AND key_id = ?3",
        )?
        .execute(params![user_id, device_id, key_id])?;
    if deleted == 0 {
        // Claimed meanwhile (by another claim): never hand a key out twice.
        return Err(refused("one-time key already claimed"));
    }
    Ok(())
}

pub(super) fn mark_fallback_used(
    c: &Connection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE fallback_keys SET used = 1 WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3",
    )?
    .execute(params![user_id, device_id, algorithm])?;
    Ok(())
}

pub(super) fn put_cross_signing_key(
    c: &Connection,
    user_id: &str,
    key_type: &str,
    json: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO cross_signing_keys (user_id, key_type, json) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![user_id, key_type, json])?;
    Ok(())
}

pub(super) fn put_key_signature(c: &Connection, k: &KeySignatureRow) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO key_signatures (target_user, target_key_id, signer_user, signer_key_id, signature) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![k.target_user, k.target_key_id, k.signer_user, k.signer_key_id, k.signature])?;
    Ok(())
}

pub(super) fn key_change(c: &Connection, user_id: &str, pos: i64) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO key_changes (pos, user_id) VALUES (?1, ?2)")?
        .execute(params![pos, user_id])?;
    Ok(())
}

/// Queues a message for the device at `pos`, unless `max_queued` are
/// already waiting (then it is dropped, and the batch still succeeds).
pub(super) fn put_to_device(
    c: &Connection,
    user_id: &str,
    device_id: &str,
    json: &str,
    max_queued: i64,
    pos: i64,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO to_device (pos, user_id, device_id, json)
         SELECT ?1, ?2, ?3, ?4 WHERE (SELECT COUNT(*) FROM (SELECT 1 FROM to_device WHERE user_id = ?2 AND device_id = ?3 LIMIT ?5)) < ?5",
    )?
    .execute(params![pos, user_id, device_id, json, max_queued])?;
    Ok(())
}

pub(super) fn delete_to_device(
    c: &Connection,
    user_id: &str,
    device_id: &str,
    upto: i64,
) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM to_device WHERE user_id = ?1 AND device_id = ?2 AND pos <= ?3")?
        .execute(params![user_id, device_id, upto])?;
    Ok(())
}

// ----- row mappers -----

fn key_signature_row(r: &Row<'_>) -> rusqlite::Result<KeySignatureRow> {
    Ok(KeySignatureRow {
        target_user: r.get(0)?,
        target_key_id: r.get(1)?,
        signer_user: r.get(2)?,
        signer_key_id: r.get(3)?,
        signature: r.get(4)?,
    })
}

fn to_device_row(r: &Row<'_>) -> rusqlite::Result<ToDeviceRow> {
    Ok(ToDeviceRow {
        pos: r.get(0)?,
        json: r.get(1)?,
    })
}

// ----- reads -----

impl KeyStore for SqliteStore {
    fn device_keys(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        self.query_all(
            "SELECT device_id, json FROM device_keys WHERE user_id = ?1",
            params![user_id],
            pair,
        )
    }

    fn one_time_key_counts(&self, user_id: &str, device_id: &str) -> Result<Vec<(String, i64)>> {
        self.query_all(
            "SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = ?1 AND device_id = ?2 GROUP BY algorithm",
            params![user_id, device_id],
            pair,
        )
    }

    fn unused_fallback_algorithms(&self, user_id: &str, device_id: &str) -> Result<Vec<String>> {
        self.query_all(
            "SELECT algorithm FROM fallback_keys WHERE user_id = ?1 AND device_id = ?2 AND used = 0",
            params![user_id, device_id],
            column,
        )
    }

    fn find_one_time_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<(String, String)>> {
        self.query_one(
            "SELECT key_id, json FROM one_time_keys WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3 LIMIT 1",
            params![user_id, device_id, algorithm],
            pair,
        )
    }

    fn fallback_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<(String, String)>> {
        self.query_one(
            "SELECT key_id, json FROM fallback_keys WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3",
            params![user_id, device_id, algorithm],
            pair,
        )
    }

    fn cross_signing_keys(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        self.query_all(
            "SELECT key_type, json FROM cross_signing_keys WHERE user_id = ?1",
            params![user_id],
            pair,
        )
    }

    fn key_signatures(&self, target_user: &str) -> Result<Vec<KeySignatureRow>> {
        self.query_all(
            "SELECT target_user, target_key_id, signer_user, signer_key_id, signature FROM key_signatures WHERE target_user = ?1",
            params![target_user],
            key_signature_row,
        )
    }

    fn key_changes(&self, from: i64, to: i64) -> Result<Vec<String>> {
        self.query_all(
            "SELECT DISTINCT user_id FROM key_changes WHERE pos > ?1 AND pos <= ?2",
            params![from, to],
            column,
        )
    }

    fn to_device_since(
        &self,
        user_id: &str,
        device_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ToDeviceRow>> {
        self.query_all(
            "SELECT pos, json FROM to_device WHERE user_id = ?1 AND device_id = ?2 AND pos > ?3 ORDER BY pos LIMIT ?4",
            params![user_id, device_id, after, limit as i64],
            to_device_row,
        )
    }

    fn to_device_latest(&self, user_id: &str, device_id: &str) -> Result<Option<i64>> {
        self.query_value(
            "SELECT MAX(pos) FROM to_device WHERE user_id = ?1 AND device_id = ?2",
            params![user_id, device_id],
        )
    }
}
