//! Server-side key backup (`/room_keys`): Megolm sessions encrypted by the
//! client with its backup key. The server stores `session_data` opaque and
//! only compares the public metadata to keep the better copy of a session.

use std::collections::BTreeMap;

use hotline_store::{BackupKeyRow, BackupVersionRow, WriteBatch, WriteOp};
use serde_json::{json, Map, Value};

use crate::{Error, Result, Services};

/// `(etag, count)` after a change, as the spec's responses carry them.
pub struct BackupTally {
    pub etag: String,
    pub count: i64,
}

/// Sessions to store: room id → session id → `KeyBackupData`.
pub type BackupSessions = BTreeMap<String, BTreeMap<String, Value>>;

fn parse_version(v: &str) -> Result<i64> {
    v.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| Error::not_found("Unknown backup version"))
}

/// Checks a `KeyBackupData` object's shape.
fn check_key_data(v: &Value) -> Result<()> {
    let ok = v.get("first_message_index").is_some_and(Value::is_u64)
        && v.get("forwarded_count").is_some_and(Value::is_u64)
        && v.get("is_verified").is_some_and(Value::is_boolean)
        && v.get("session_data").is_some_and(Value::is_object);
    if ok {
        Ok(())
    } else {
        Err(Error::bad_json(
            "Key backup data needs first_message_index, forwarded_count, is_verified and session_data",
        ))
    }
}

/// Whether `new` should replace `old`: verified beats unverified, then a
/// lower first message index, then fewer forwards.
fn better(new: &Value, old: &Value) -> bool {
    let key = |v: &Value| {
        (
            !v["is_verified"].as_bool().unwrap_or(false),
            v["first_message_index"].as_u64().unwrap_or(u64::MAX),
            v["forwarded_count"].as_u64().unwrap_or(u64::MAX),
        )
    };
    key(new) < key(old)
}

impl Services {
    fn backup_info_json(&self, v: &BackupVersionRow) -> Result<Value> {
        let auth_data: Value = serde_json::from_str(&v.auth_data).map_err(Error::internal)?;
        Ok(json!({
            "algorithm": v.algorithm,
            "auth_data": auth_data,
            "count": self.store.count_backup_keys(&v.user_id, v.version)?,
            "etag": v.etag.to_string(),
            "version": v.version.to_string(),
        }))
    }

    /// `POST /room_keys/version`: returns the new version.
    pub async fn create_backup_version(
        &self,
        user: &str,
        algorithm: String,
        auth_data: Value,
    ) -> Result<String> {
        if !auth_data.is_object() {
            return Err(Error::bad_json("auth_data must be an object"));
        }
        let version = self.store.max_backup_version(user)? + 1;
        self.store
            .write(WriteBatch::one(WriteOp::CreateBackupVersion(
                BackupVersionRow {
                    user_id: user.to_owned(),
                    version,
                    algorithm,
                    auth_data: auth_data.to_string(),
                    etag: 0,
                },
            )))
            .await?;
        Ok(version.to_string())
    }

    /// `GET /room_keys/version[/{version}]`.
    pub fn get_backup_info(&self, user: &str, version: Option<&str>) -> Result<Value> {
        let row = match version {
            Some(v) => self.store.get_backup_version(user, parse_version(v)?)?,
            None => self.store.latest_backup_version(user)?,
        };
        let row = row.ok_or_else(|| Error::not_found("No current backup version"))?;
        self.backup_info_json(&row)
    }

    /// `PUT /room_keys/version/{version}`: new `auth_data`, same algorithm.
    pub async fn update_backup_version(
        &self,
        user: &str,
        version: &str,
        body: &Value,
    ) -> Result<()> {
        let n = parse_version(version)?;
        let row = self
            .store
            .get_backup_version(user, n)?
            .ok_or_else(|| Error::not_found("Unknown backup version"))?;
        if let Some(v) = body.get("version") {
            if v.as_str() != Some(version) {
                return Err(Error::invalid_param(
                    "Version in body does not match the path",
                ));
            }
        }
        if body["algorithm"].as_str() != Some(row.algorithm.as_str()) {
            return Err(Error::invalid_param(
                "The algorithm of a backup cannot change",
            ));
        }
        let auth_data = body
            .get("auth_data")
            .filter(|a| a.is_object())
            .ok_or_else(|| Error::bad_json("auth_data must be an object"))?;
        self.store
            .write(WriteBatch::one(WriteOp::UpdateBackupVersion {
                user_id: user.to_owned(),
                version: n,
                auth_data: auth_data.to_string(),
            }))
            .await?;
        Ok(())
    }

    /// `DELETE /room_keys/version/{version}`.
    pub async fn delete_backup_version(&self, user: &str, version: &str) -> Result<()> {
        let n = parse_version(version)?;
        self.store
            .get_backup_version(user, n)?
            .ok_or_else(|| Error::not_found("Unknown backup version"))?;
        self.store
            .write(WriteBatch::one(WriteOp::DeleteBackupVersion {
                user_id: user.to_owned(),
                version: n,
            }))
            .await?;
        Ok(())
    }

    /// The version a write must name: the current one.
    fn writable_version(&self, user: &str, version: &str) -> Result<BackupVersionRow> {
        let current = self.store.latest_backup_version(user)?;
        match current {
            Some(c) if c.version.to_string() == version => Ok(c),
            Some(c) => Err(Error::WrongRoomKeysVersion {
                current_version: Some(c.version.to_string()),
            }),
            None => Err(Error::not_found("No current backup version")),
        }
    }

    fn tally(&self, user: &str, version: i64) -> Result<BackupTally> {
        let row = self
            .store
            .get_backup_version(user, version)?
            .ok_or_else(|| Error::not_found("Unknown backup version"))?;
        Ok(BackupTally {
            etag: row.etag.to_string(),
            count: self.store.count_backup_keys(user, version)?,
        })
    }

    /// `PUT /room_keys/keys[/{roomId}[/{sessionId}]]`.
    pub async fn put_backup_keys(
        &self,
        user: &str,
        version: &str,
        sessions: BackupSessions,
    ) -> Result<BackupTally> {
        let v = self.writable_version(user, version)?;
        let mut batch = WriteBatch::new();
        for (room_id, per_room) in sessions {
            let existing: BTreeMap<String, Value> = self
                .store
                .backup_keys(user, v.version, Some(&room_id), None)?
                .into_iter()
                .filter_map(|r| Some((r.session_id, serde_json::from_str(&r.json).ok()?)))
                .collect();
            for (session_id, data) in per_room {
                check_key_data(&data)?;
                if existing
                    .get(&session_id)
                    .is_some_and(|old| !better(&data, old))
                {
                    continue;
                }
                batch.push(WriteOp::PutBackupKey {
                    user_id: user.to_owned(),
                    version: v.version,
                    key: BackupKeyRow {
                        room_id: room_id.clone(),
                        session_id,
                        json: data.to_string(),
                    },
                });
            }
        }
        if !batch.ops.is_empty() {
            self.store.write(batch).await?;
        }
        self.tally(user, v.version)
    }

    /// `GET /room_keys/keys[/{roomId}[/{sessionId}]]` as room → session → data.
    pub fn get_backup_keys(
        &self,
        user: &str,
        version: &str,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<BTreeMap<String, Map<String, Value>>> {
        let n = parse_version(version)?;
        self.store
            .get_backup_version(user, n)?
            .ok_or_else(|| Error::not_found("Unknown backup version"))?;
        let mut rooms: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for r in self.store.backup_keys(user, n, room_id, session_id)? {
            let data: Value = serde_json::from_str(&r.json).map_err(Error::internal)?;
            rooms
                .entry(r.room_id)
                .or_default()
                .insert(r.session_id, data);
        }
        Ok(rooms)
    }

    /// `DELETE /room_keys/keys[/{roomId}[/{sessionId}]]`.
    pub async fn delete_backup_keys(
        &self,
        user: &str,
        version: &str,
        room_id: Option<String>,
        session_id: Option<String>,
    ) -> Result<BackupTally> {
        let n = parse_version(version)?;
        self.store
            .get_backup_version(user, n)?
            .ok_or_else(|| Error::not_found("Unknown backup version"))?;
        self.store
            .write(WriteBatch::one(WriteOp::DeleteBackupKeys {
                user_id: user.to_owned(),
                version: n,
                room_id,
                session_id,
            }))
            .await?;
        self.tally(user, n)
    }
}
