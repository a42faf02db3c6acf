//! Server-side key backup: versions and the sessions backed up in them.

use tokio_postgres::Row;

use super::writer::Applied;
use super::{Conn, PgResult, PostgresStore};
use crate::*;

pub(crate) async fn create_backup_version(c: &Conn, v: &BackupVersionRow) -> Applied {
    c.exec(
        "INSERT INTO backup_versions (user_id, version, algorithm, auth_data, etag, deleted) VALUES ($1, $2, $3, $4, $5, 0)",
        &[&v.user_id, &v.version, &v.algorithm, &v.auth_data, &v.etag],
    )
    .await?;
    Ok(())
}

pub(crate) async fn update_backup_version(
    c: &Conn,
    user_id: &str,
    version: i64,
    auth_data: &str,
) -> Applied {
    c.exec(
        "UPDATE backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2",
        &[&user_id, &version, &auth_data],
    )
    .await?;
    Ok(())
}

pub(crate) async fn delete_backup_version(c: &Conn, user_id: &str, version: i64) -> Applied {
    // The version stays, marked deleted, so its number is never reused.
    c.exec(
        "UPDATE backup_versions SET deleted = 1 WHERE user_id = $1 AND version = $2",
        &[&user_id, &version],
    )
    .await?;
    c.exec(
        "DELETE FROM backup_keys WHERE user_id = $1 AND version = $2",
        &[&user_id, &version],
    )
    .await?;
    Ok(())
}

pub(crate) async fn put_backup_key(
    c: &Conn,
    user_id: &str,
    version: i64,
    key: &BackupKeyRow,
) -> Applied {
    c.exec(
        "INSERT INTO backup_keys (user_id, version, room_id, session_id, json) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET json = EXCLUDED.json",
        &[&user_id, &version, &key.room_id, &key.session_id, &key.json],
    )
    .await?;
    bump_backup_etag(c, user_id, version).await
}

pub(crate) async fn delete_backup_keys(
    c: &Conn,
    user_id: &str,
    version: i64,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> Applied {
    c.exec(
        "DELETE FROM backup_keys WHERE user_id = $1 AND version = $2 AND ($3::TEXT IS NULL OR room_id = $3) AND ($4::TEXT IS NULL OR session_id = $4)",
        &[&user_id, &version, &room_id, &session_id],
    )
    .await?;
    bump_backup_etag(c, user_id, version).await
}

/// Every change of a version's sessions changes its etag (clients compare
/// it to know whether to fetch the backup again).
async fn bump_backup_etag(c: &Conn, user_id: &str, version: i64) -> Applied {
    c.exec(
        "UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2",
        &[&user_id, &version],
    )
    .await?;
    Ok(())
}

fn backup_version_row(r: &Row) -> PgResult<BackupVersionRow> {
    Ok(BackupVersionRow {
        user_id: r.try_get(0)?,
        version: r.try_get(1)?,
        algorithm: r.try_get(2)?,
        auth_data: r.try_get(3)?,
        etag: r.try_get(4)?,
    })
}

fn backup_key_row(r: &Row) -> PgResult<BackupKeyRow> {
    Ok(BackupKeyRow {
        room_id: r.try_get(0)?,
        session_id: r.try_get(1)?,
        json: r.try_get(2)?,
    })
}

impl KeyBackupStore for PostgresStore {
    fn latest_backup_version(&self, user_id: &str) -> Result<Option<BackupVersionRow>> {
        self.query_one(
            "SELECT user_id, version, algorithm, auth_data, etag FROM backup_versions WHERE user_id = $1 AND deleted = 0 ORDER BY version DESC LIMIT 1",
            &[&user_id],
            backup_version_row,
        )
    }

    fn max_backup_version(&self, user_id: &str) -> Result<i64> {
        let n = self.query_one(
            "SELECT COALESCE(MAX(version), 0) FROM backup_versions WHERE user_id = $1",
            &[&user_id],
            |r| r.try_get(0),
        )?;
        Ok(n.unwrap_or(0))
    }

    fn get_backup_version(&self, user_id: &str, version: i64) -> Result<Option<BackupVersionRow>> {
        self.query_one(
            "SELECT user_id, version, algorithm, auth_data, etag FROM backup_versions WHERE user_id = $1 AND version = $2 AND deleted = 0",
            &[&user_id, &version],
            backup_version_row,
        )
    }

    fn count_backup_keys(&self, user_id: &str, version: i64) -> Result<i64> {
        let n = self.query_one(
            "SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2",
            &[&user_id, &version],
            |r| r.try_get(0),
        )?;
        Ok(n.unwrap_or(0))
    }

    /// In key order (room, then session, bytewise): the order SQLite
    /// returns them in, walking the table's primary key.
    fn backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<BackupKeyRow>> {
        self.query_all(
            "SELECT room_id, session_id, json FROM backup_keys WHERE user_id = $1 AND version = $2 AND ($3::TEXT IS NULL OR room_id = $3) AND ($4::TEXT IS NULL OR session_id = $4)
             ORDER BY room_id COLLATE \"C\", session_id COLLATE \"C\"",
            &[&user_id, &version, &room_id, &session_id],
            backup_key_row,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::fresh_store;
    use super::*;

    const ALICE: &str = "@alice:hl";

    async fn write(store: &PostgresStore, ops: Vec<WriteOp>) -> Result<Committed> {
        store.write(WriteBatch { ops }).await
    }

    fn version(user_id: &str, version: i64) -> WriteOp {
        WriteOp::CreateBackupVersion(BackupVersionRow {
            user_id: user_id.into(),
            version,
            algorithm: "m.megolm_backup.v1.curve25519-aes-sha2".into(),
            auth_data: format!("{{\"v\":{version}}}"),
            etag: 0,
        })
    }

    fn key(version: i64, room_id: &str, session_id: &str, json: &str) -> WriteOp {
        WriteOp::PutBackupKey {
            user_id: ALICE.into(),
            version,
            key: BackupKeyRow {
                room_id: room_id.into(),
                session_id: session_id.into(),
                json: json.into(),
            },
        }
    }

    fn delete_keys(version: i64, room_id: Option<&str>, session_id: Option<&str>) -> WriteOp {
        WriteOp::DeleteBackupKeys {
            user_id: ALICE.into(),
            version,
            room_id: room_id.map(Into::into),
            session_id: session_id.map(Into::into),
        }
    }

    fn etag(store: &PostgresStore, v: i64) -> i64 {
        store.get_backup_version(ALICE, v).unwrap().unwrap().etag
    }

    fn ids(keys: Vec<BackupKeyRow>) -> Vec<(String, String)> {
        keys.into_iter()
            .map(|k| (k.room_id, k.session_id))
            .collect()
    }

    #[tokio::test]
    async fn the_latest_version_skips_deleted_ones_and_the_highest_number_counts_them() {
        let store = fresh_store();
        assert!(store.latest_backup_version(ALICE).unwrap().is_none());
        assert_eq!(store.max_backup_version(ALICE).unwrap(), 0);
        write(
            &store,
            vec![version(ALICE, 1), version(ALICE, 2), version("@bob:hl", 7)],
        )
        .await
        .unwrap();
        let v = store.latest_backup_version(ALICE).unwrap().unwrap();
        assert_eq!(v.user_id, ALICE);
        assert_eq!(v.version, 2);
        assert_eq!(v.algorithm, "m.megolm_backup.v1.curve25519-aes-sha2");
        assert_eq!(v.auth_data, "{\"v\":2}");
        assert_eq!(v.etag, 0);
        assert_eq!(store.max_backup_version(ALICE).unwrap(), 2);
        write(
            &store,
            vec![WriteOp::DeleteBackupVersion {
                user_id: ALICE.into(),
                version: 2,
            }],
        )
        .await
        .unwrap();
        assert_eq!(
            store.latest_backup_version(ALICE).unwrap().unwrap().version,
            1
        );
        assert!(store.get_backup_version(ALICE, 2).unwrap().is_none());
        assert!(store.get_backup_version(ALICE, 1).unwrap().is_some());
        // A deleted number is never handed out again.
        assert_eq!(store.max_backup_version(ALICE).unwrap(), 2);
        assert_eq!(store.max_backup_version("@bob:hl").unwrap(), 7);
        assert!(store.get_backup_version("@bob:hl", 1).unwrap().is_none());
        store.close();
    }

    #[tokio::test]
    async fn a_taken_version_number_fails_its_batch_with_a_conflict_and_keeps_nothing_of_it() {
        let store = fresh_store();
        write(&store, vec![version(ALICE, 1)]).await.unwrap();
        let e = write(&store, vec![version(ALICE, 2), version(ALICE, 1)])
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        assert!(store.get_backup_version(ALICE, 2).unwrap().is_none());
        assert_eq!(store.max_backup_version(ALICE).unwrap(), 1);
        store.close();
    }

    #[tokio::test]
    async fn updating_a_version_replaces_its_auth_data_only() {
        let store = fresh_store();
        write(&store, vec![version(ALICE, 1), version(ALICE, 2)])
            .await
            .unwrap();
        write(
            &store,
            vec![WriteOp::UpdateBackupVersion {
                user_id: ALICE.into(),
                version: 1,
                auth_data: "{\"new\":true}".into(),
            }],
        )
        .await
        .unwrap();
        let v = store.get_backup_version(ALICE, 1).unwrap().unwrap();
        assert_eq!(v.auth_data, "{\"new\":true}");
        assert_eq!(v.etag, 0);
        assert_eq!(
            store
                .get_backup_version(ALICE, 2)
                .unwrap()
                .unwrap()
                .auth_data,
            "{\"v\":2}"
        );
        store.close();
    }

    #[tokio::test]
    async fn a_session_put_again_replaces_the_stored_one_and_every_put_bumps_the_etag() {
        let store = fresh_store();
        write(&store, vec![version(ALICE, 1)]).await.unwrap();
        write(&store, vec![key(1, "!r:hl", "s", "{\"n\":1}")])
            .await
            .unwrap();
        assert_eq!(etag(&store, 1), 1);
        write(&store, vec![key(1, "!r:hl", "s", "{\"n\":2}")])
            .await
            .unwrap();
        assert_eq!(etag(&store, 1), 2);
        assert_eq!(store.count_backup_keys(ALICE, 1).unwrap(), 1);
        let keys = store.backup_keys(ALICE, 1, None, None).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].room_id, "!r:hl");
        assert_eq!(keys[0].session_id, "s");
        assert_eq!(keys[0].json, "{\"n\":2}");
        store.close();
    }

    #[tokio::test]
    async fn sessions_read_by_room_or_session_in_byte_order_of_their_keys() {
        let store = fresh_store();
        write(&store, vec![version(ALICE, 1), version(ALICE, 2)])
            .await
            .unwrap();
        write(
            &store,
            vec![
                key(1, "!b:hl", "s1", "{}"),
                key(1, "!a:hl", "t", "{}"),
                key(1, "!a:hl", "S", "{}"),
                key(1, "!a:hl", "_", "{}"),
                key(1, "!B:hl", "s1", "{}"),
                key(2, "!a:hl", "other", "{}"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(store.count_backup_keys(ALICE, 1).unwrap(), 5);
        assert_eq!(store.count_backup_keys(ALICE, 2).unwrap(), 1);
        assert_eq!(store.count_backup_keys(ALICE, 3).unwrap(), 0);
        let pair = |r: &str, s: &str| (r.to_string(), s.to_string());
        assert_eq!(
            ids(store.backup_keys(ALICE, 1, None, None).unwrap()),
            [
                pair("!B:hl", "s1"),
                pair("!a:hl", "S"),
                pair("!a:hl", "_"),
                pair("!a:hl", "t"),
                pair("!b:hl", "s1"),
            ]
        );
        assert_eq!(
            ids(store.backup_keys(ALICE, 1, Some("!a:hl"), None).unwrap()),
            [pair("!a:hl", "S"), pair("!a:hl", "_"), pair("!a:hl", "t")]
        );
        assert_eq!(
            ids(store
                .backup_keys(ALICE, 1, Some("!a:hl"), Some("t"))
                .unwrap()),
            [pair("!a:hl", "t")]
        );
        assert_eq!(
            ids(store.backup_keys(ALICE, 1, None, Some("s1")).unwrap()),
            [pair("!B:hl", "s1"), pair("!b:hl", "s1")]
        );
        assert!(store
            .backup_keys("@bob:hl", 1, None, None)
            .unwrap()
            .is_empty());
        store.close();
    }

    #[tokio::test]
    async fn deleting_sessions_takes_one_a_rooms_or_all_of_a_version_and_bumps_its_etag() {
        let store = fresh_store();
        write(&store, vec![version(ALICE, 1), version(ALICE, 2)])
            .await
            .unwrap();
        write(
            &store,
            vec![
                key(1, "!a:hl", "s1", "{}"),
                key(1, "!a:hl", "s2", "{}"),
                key(1, "!b:hl", "s1", "{}"),
                key(1, "!b:hl", "s3", "{}"),
                key(1, "!c:hl", "s4", "{}"),
                key(2, "!a:hl", "s1", "{}"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(etag(&store, 1), 5);
        write(&store, vec![delete_keys(1, Some("!a:hl"), Some("s1"))])
            .await
            .unwrap();
        assert_eq!(store.count_backup_keys(ALICE, 1).unwrap(), 4);
        assert_eq!(etag(&store, 1), 6);
        write(&store, vec![delete_keys(1, Some("!b:hl"), None)])
            .await
            .unwrap();
        let pair = |r: &str, s: &str| (r.to_string(), s.to_string());
        assert_eq!(
            ids(store.backup_keys(ALICE, 1, None, None).unwrap()),
            [pair("!a:hl", "s2"), pair("!c:hl", "s4")]
        );
        assert_eq!(etag(&store, 1), 7);
        write(&store, vec![delete_keys(1, None, None)])
            .await
            .unwrap();
        assert_eq!(store.count_backup_keys(ALICE, 1).unwrap(), 0);
        assert_eq!(etag(&store, 1), 8);
        // The other version keeps its sessions and its etag.
        assert_eq!(store.count_backup_keys(ALICE, 2).unwrap(), 1);
        assert_eq!(etag(&store, 2), 1);
        store.close();
    }

    #[tokio::test]
    async fn deleting_a_version_deletes_its_sessions_only() {
        let store = fresh_store();
        write(
            &store,
            vec![
                version(ALICE, 1),
                version(ALICE, 2),
                key(1, "!a:hl", "s1", "{}"),
                key(2, "!a:hl", "s1", "{}"),
            ],
        )
        .await
        .unwrap();
        write(
            &store,
            vec![WriteOp::DeleteBackupVersion {
                user_id: ALICE.into(),
                version: 1,
            }],
        )
        .await
        .unwrap();
        assert_eq!(store.count_backup_keys(ALICE, 1).unwrap(), 0);
        assert!(store.backup_keys(ALICE, 1, None, None).unwrap().is_empty());
        assert_eq!(store.count_backup_keys(ALICE, 2).unwrap(), 1);
        store.close();
    }
}
