//! Server-side room-key backup in SQLite (Matrix's `/room_keys`): backup
//! versions and the sessions backed up in them. Each change to a version's
//! keys bumps its etag. (The online copy of the whole database is
//! `crate::backup`, not this.)

use rusqlite::{params, Connection, Row};

use super::SqliteStore;
use crate::*;

// ----- writes -----

pub(super) fn create_version(c: &Connection, v: &BackupVersionRow) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO backup_versions (user_id, version, algorithm, auth_data, etag, deleted) VALUES (?1, ?2, ?3, ?4, ?5, 0)",
    )?
    .execute(params![v.user_id, v.version, v.algorithm, v.auth_data, v.etag])?;
    Ok(())
}

pub(super) fn update_version(
    c: &Connection,
    user_id: &str,
    version: i64,
    auth_data: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE backup_versions SET auth_data = ?3 WHERE user_id = ?1 AND version = ?2",
    )?
    .execute(params![user_id, version, auth_data])?;
    Ok(())
}

/// Marks the version deleted (its number is never reused) and drops its keys.
pub(super) fn delete_version(c: &Connection, user_id: &str, version: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE backup_versions SET deleted = 1 WHERE user_id = ?1 AND version = ?2")?
        .execute(params![user_id, version])?;
    c.prepare_cached("DELETE FROM backup_keys WHERE user_id = ?1 AND version = ?2")?
        .execute(params![user_id, version])?;
    Ok(())
}

pub(super) fn put_key(
    c: &Connection,
    user_id: &str,
    version: i64,
    key: &BackupKeyRow,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO backup_keys (user_id, version, room_id, session_id, json) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![user_id, version, key.room_id, key.session_id, key.json])?;
    bump_etag(c, user_id, version)
}

/// Deletes the version's keys, of one room or one session when given.
pub(super) fn delete_keys(
    c: &Connection,
    user_id: &str,
    version: i64,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "DELETE FROM backup_keys WHERE user_id = ?1 AND version = ?2 AND (?3 IS NULL OR room_id = ?3) AND (?4 IS NULL OR session_id = ?4)",
    )?
    .execute(params![user_id, version, room_id, session_id])?;
    bump_etag(c, user_id, version)
}

fn bump_etag(c: &Connection, user_id: &str, version: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE backup_versions SET etag = etag + 1 WHERE user_id = ?1 AND version = ?2",
    )?
    .execute(params![user_id, version])?;
    Ok(())
}

// ----- row mappers -----

fn version_row(r: &Row<'_>) -> rusqlite::Result<BackupVersionRow> {
    Ok(BackupVersionRow {
        user_id: r.get(0)?,
        version: r.get(1)?,
        algorithm: r.get(2)?,
        auth_data: r.get(3)?,
        etag: r.get(4)?,
    })
}

fn key_row(r: &Row<'_>) -> rusqlite::Result<BackupKeyRow> {
    Ok(BackupKeyRow {
        room_id: r.get(0)?,
        session_id: r.get(1)?,
        json: r.get(2)?,
    })
}

// ----- reads -----

impl KeyBackupStore for SqliteStore {
    fn latest_backup_version(&self, user_id: &str) -> Result<Option<BackupVersionRow>> {
        self.query_one(
            "SELECT user_id, version, algorithm, auth_data, etag FROM backup_versions WHERE user_id = ?1 AND deleted = 0 ORDER BY version DESC LIMIT 1",
            params![user_id],
            version_row,
        )
    }

    fn max_backup_version(&self, user_id: &str) -> Result<i64> {
        self.query_value(
            "SELECT COALESCE(MAX(version), 0) FROM backup_versions WHERE user_id = ?1",
            params![user_id],
        )
    }

    fn get_backup_version(&self, user_id: &str, version: i64) -> Result<Option<BackupVersionRow>> {
        self.query_one(
            "SELECT user_id, version, algorithm, auth_data, etag FROM backup_versions WHERE user_id = ?1 AND version = ?2 AND deleted = 0",
            params![user_id, version],
            version_row,
        )
    }

    fn count_backup_keys(&self, user_id: &str, version: i64) -> Result<i64> {
        self.query_value(
            "SELECT COUNT(*) FROM backup_keys WHERE user_id = ?1 AND version = ?2",
            params![user_id, version],
        )
    }

    fn backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<BackupKeyRow>> {
        self.query_all(
            "SELECT room_id, session_id, json FROM backup_keys WHERE user_id = ?1 AND version = ?2 AND (?3 IS NULL OR room_id = ?3) AND (?4 IS NULL OR session_id = ?4)",
            params![user_id, version, room_id, session_id],
            key_row,
        )
    }
}
