//! Accounts: users, access tokens, devices, registration tokens, filters, meta.

use tokio_postgres::Row;

use super::writer::{conflict, Applied};
use super::{Conn, PgResult, PostgresStore};
use crate::*;

pub(crate) async fn create_user(c: &Conn, u: &UserRow) -> Applied {
    c.exec(
        "INSERT INTO users (user_id, password_hash, displayname, avatar_url, created_ts, deactivated) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&u.user_id, &u.password_hash, &u.displayname, &u.avatar_url, &u.created_ts, &(u.deactivated as i64)],
    )
    .await?;
    Ok(())
}

pub(crate) async fn set_password(c: &Conn, user_id: &str, password_hash: &str) -> Applied {
    c.exec(
        "UPDATE users SET password_hash = $2 WHERE user_id = $1",
        &[&user_id, &password_hash],
    )
    .await?;
    Ok(())
}

pub(crate) async fn set_profile(
    c: &Conn,
    user_id: &str,
    displayname: &Option<Option<String>>,
    avatar_url: &Option<Option<String>>,
) -> Applied {
    // `None` leaves a field as it is; `Some(None)` clears it.
    if let Some(d) = displayname {
        c.exec(
            "UPDATE users SET displayname = $2 WHERE user_id = $1",
            &[&user_id, d],
        )
        .await?;
    }
    if let Some(a) = avatar_url {
        c.exec(
            "UPDATE users SET avatar_url = $2 WHERE user_id = $1",
            &[&user_id, a],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn deactivate(c: &Conn, user_id: &str) -> Applied {
    c.exec(
        "UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = $1",
        &[&user_id],
    )
    .await?;
    c.exec("DELETE FROM access_tokens WHERE user_id = $1", &[&user_id])
        .await?;
    Ok(())
}

pub(crate) async fn upsert_device(c: &Conn, d: &DeviceRow) -> Applied {
    c.exec(
        "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts, last_seen_ip) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = EXCLUDED.display_name, last_seen_ts = EXCLUDED.last_seen_ts, last_seen_ip = EXCLUDED.last_seen_ip",
        &[&d.user_id, &d.device_id, &d.display_name, &d.last_seen_ts, &d.last_seen_ip],
    )
    .await?;
    Ok(())
}

pub(crate) async fn delete_device(c: &Conn, user_id: &str, device_id: &str) -> Applied {
    // A device's tokens, keys, queue and the signatures over its key go
    // with it.
    const DELETES: [&str; 8] = [
        "DELETE FROM devices WHERE user_id = $1 AND device_id = $2",
        "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2",
        "DELETE FROM device_keys WHERE user_id = $1 AND device_id = $2",
        "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2",
        "DELETE FROM fallback_keys WHERE user_id = $1 AND device_id = $2",
        "DELETE FROM to_device WHERE user_id = $1 AND device_id = $2",
        "DELETE FROM key_signatures WHERE target_user = $1 AND target_key_id = $2",
        "DELETE FROM pushers WHERE user_id = $1 AND device_id = $2",
    ];
    for sql in DELETES {
        c.exec(sql, &[&user_id, &device_id]).await?;
    }
    Ok(())
}

pub(crate) async fn insert_token(c: &Conn, t: &TokenRow) -> Applied {
    c.exec(
        "INSERT INTO access_tokens (token_hash, user_id, device_id) VALUES ($1, $2, $3)",
        &[&t.token_hash, &t.user_id, &t.device_id],
    )
    .await?;
    Ok(())
}

pub(crate) async fn delete_device_tokens(c: &Conn, user_id: &str, device_id: &str) -> Applied {
    c.exec(
        "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2",
        &[&user_id, &device_id],
    )
    .await?;
    Ok(())
}

pub(crate) async fn set_device_seen(
    c: &Conn,
    user_id: &str,
    device_id: &str,
    ts: i64,
    ip: Option<&str>,
) -> Applied {
    // The last-seen time never goes back (concurrent requests of one
    // device finish in any order); an unknown address keeps the last one.
    c.exec(
        "UPDATE devices SET last_seen_ts = GREATEST(COALESCE(last_seen_ts, 0), $3), last_seen_ip = COALESCE($4::TEXT, last_seen_ip)
         WHERE user_id = $1 AND device_id = $2",
        &[&user_id, &device_id, &ts, &ip],
    )
    .await?;
    Ok(())
}

pub(crate) async fn create_registration_token(c: &Conn, t: &RegistrationTokenRow) -> Applied {
    c.exec(
        "INSERT INTO registration_tokens (token, uses_allowed, completed, expiry_ts) VALUES ($1, $2, $3, $4)",
        &[&t.token, &t.uses_allowed, &t.completed, &t.expiry_ts],
    )
    .await?;
    Ok(())
}

pub(crate) async fn use_registration_token(c: &Conn, token: &str, now_ms: i64) -> Applied {
    // Counted only while the token is valid; otherwise the batch (which
    // creates the account) fails.
    let counted = c
        .exec(
            "UPDATE registration_tokens SET completed = completed + 1 WHERE token = $1
             AND (uses_allowed IS NULL OR completed < uses_allowed)
             AND (expiry_ts IS NULL OR expiry_ts > $2)",
            &[&token, &now_ms],
        )
        .await?;
    if counted == 0 {
        return Err(conflict("registration token used up or expired"));
    }
    Ok(())
}

pub(crate) async fn put_filter(c: &Conn, user_id: &str, filter_id: &str, json: &str) -> Applied {
    c.exec(
        "INSERT INTO filters (user_id, filter_id, json) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, filter_id) DO UPDATE SET json = EXCLUDED.json",
        &[&user_id, &filter_id, &json],
    )
    .await?;
    Ok(())
}

pub(crate) async fn put_pusher(c: &Conn, p: &PusherRow) -> Applied {
    c.exec(
        "INSERT INTO pushers (user_id, app_id, pushkey, device_id, json, position) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET device_id = EXCLUDED.device_id, json = EXCLUDED.json, position = EXCLUDED.position",
        &[&p.user_id, &p.app_id, &p.pushkey, &p.device_id, &p.json, &p.position],
    )
    .await?;
    Ok(())
}

pub(crate) async fn delete_pusher(c: &Conn, user_id: &str, app_id: &str, pushkey: &str) -> Applied {
    c.exec(
        "DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
        &[&user_id, &app_id, &pushkey],
    )
    .await?;
    Ok(())
}

pub(crate) async fn delete_pushers_of_key(
    c: &Conn,
    app_id: &str,
    pushkey: &str,
    except_user: &str,
) -> Applied {
    c.exec(
        "DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3",
        &[&app_id, &pushkey, &except_user],
    )
    .await?;
    Ok(())
}

pub(crate) async fn set_pusher_position(
    c: &Conn,
    user_id: &str,
    app_id: &str,
    pushkey: &str,
    position: i64,
) -> Applied {
    // Never backwards: a position only moves on.
    c.exec(
        "UPDATE pushers SET position = $4 WHERE user_id = $1 AND app_id = $2 AND pushkey = $3 AND position < $4",
        &[&user_id, &app_id, &pushkey, &position],
    )
    .await?;
    Ok(())
}

fn pusher_row(r: &Row) -> PgResult<PusherRow> {
    Ok(PusherRow {
        user_id: r.try_get(0)?,
        app_id: r.try_get(1)?,
        pushkey: r.try_get(2)?,
        device_id: r.try_get(3)?,
        json: r.try_get(4)?,
        position: r.try_get(5)?,
    })
}

pub(crate) async fn put_meta(c: &Conn, key: &str, value: &str) -> Applied {
    c.exec(
        "INSERT INTO meta (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&key, &value],
    )
    .await?;
    Ok(())
}

fn user_row(r: &Row) -> PgResult<UserRow> {
    Ok(UserRow {
        user_id: r.try_get(0)?,
        password_hash: r.try_get(1)?,
        displayname: r.try_get(2)?,
        avatar_url: r.try_get(3)?,
        created_ts: r.try_get(4)?,
        deactivated: r.try_get::<_, i64>(5)? != 0,
    })
}

fn token_row(r: &Row) -> PgResult<TokenRow> {
    Ok(TokenRow {
        token_hash: r.try_get(0)?,
        user_id: r.try_get(1)?,
        device_id: r.try_get(2)?,
    })
}

fn device_row(r: &Row) -> PgResult<DeviceRow> {
    Ok(DeviceRow {
        user_id: r.try_get(0)?,
        device_id: r.try_get(1)?,
        display_name: r.try_get(2)?,
        last_seen_ts: r.try_get(3)?,
        last_seen_ip: r.try_get(4)?,
    })
}

fn registration_token_row(r: &Row) -> PgResult<RegistrationTokenRow> {
    Ok(RegistrationTokenRow {
        token: r.try_get(0)?,
        uses_allowed: r.try_get(1)?,
        completed: r.try_get(2)?,
        expiry_ts: r.try_get(3)?,
    })
}

impl AccountStore for PostgresStore {
    fn get_user(&self, user_id: &str) -> Result<Option<UserRow>> {
        self.query_one(
            "SELECT user_id, password_hash, displayname, avatar_url, created_ts, deactivated FROM users WHERE user_id = $1",
            &[&user_id],
            user_row,
        )
    }

    fn count_users(&self) -> Result<i64> {
        let n = self.query_one("SELECT COUNT(*) FROM users", &[], |r| r.try_get(0))?;
        Ok(n.unwrap_or(0))
    }

    fn find_token(&self, token_hash: &str) -> Result<Option<TokenRow>> {
        self.query_one(
            "SELECT token_hash, user_id, device_id FROM access_tokens WHERE token_hash = $1",
            &[&token_hash],
            token_row,
        )
    }

    fn list_devices(&self, user_id: &str) -> Result<Vec<DeviceRow>> {
        self.query_all(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = $1 ORDER BY device_id COLLATE \"C\"",
            &[&user_id],
            device_row,
        )
    }

    fn get_device(&self, user_id: &str, device_id: &str) -> Result<Option<DeviceRow>> {
        self.query_one(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = $1 AND device_id = $2",
            &[&user_id, &device_id],
            device_row,
        )
    }

    fn get_registration_token(&self, token: &str) -> Result<Option<RegistrationTokenRow>> {
        self.query_one(
            "SELECT token, uses_allowed, completed, expiry_ts FROM registration_tokens WHERE token = $1",
            &[&token],
            registration_token_row,
        )
    }

    fn get_filter(&self, user_id: &str, filter_id: &str) -> Result<Option<String>> {
        self.query_one(
            "SELECT json FROM filters WHERE user_id = $1 AND filter_id = $2",
            &[&user_id, &filter_id],
            |r| r.try_get(0),
        )
    }

    fn get_meta(&self, key: &str) -> Result<Option<String>> {
        self.query_one("SELECT value FROM meta WHERE key = $1", &[&key], |r| {
            r.try_get(0)
        })
    }

    fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        // left(), not LIKE: a prefix may hold `_` or `%`.
        let n = prefix.chars().count() as i32;
        self.query_all(
            "SELECT key, value FROM meta WHERE left(key, $2) = $1 ORDER BY key COLLATE \"C\"",
            &[&prefix, &n],
            |r| Ok((r.try_get(0)?, r.try_get(1)?)),
        )
    }

    fn pushers_of(&self, user_id: &str) -> Result<Vec<PusherRow>> {
        self.query_all(
            "SELECT user_id, app_id, pushkey, device_id, json, position FROM pushers WHERE user_id = $1 ORDER BY app_id COLLATE \"C\", pushkey COLLATE \"C\"",
            &[&user_id],
            pusher_row,
        )
    }

    fn all_pushers(&self) -> Result<Vec<PusherRow>> {
        self.query_all(
            "SELECT user_id, app_id, pushkey, device_id, json, position FROM pushers ORDER BY user_id COLLATE \"C\", app_id COLLATE \"C\", pushkey COLLATE \"C\"",
            &[],
            pusher_row,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::fresh_store;
    use super::*;

    async fn write(store: &PostgresStore, ops: Vec<WriteOp>) -> Result<Committed> {
        store.write(WriteBatch { ops }).await
    }

    /// Rows of a table for one user and device, read past the store's
    /// reads (other domains' tables).
    async fn count(store: &PostgresStore, sql: &'static str, a: &str, b: &str) -> i64 {
        store
            .reader()
            .opt(sql, &[&a, &b])
            .await
            .unwrap()
            .unwrap()
            .get(0)
    }

    fn user(id: &str) -> UserRow {
        UserRow {
            user_id: id.into(),
            password_hash: Some("$argon2id$hash".into()),
            displayname: Some("Alice".into()),
            avatar_url: None,
            created_ts: 1_700_000_000_000,
            deactivated: false,
        }
    }

    fn device(user_id: &str, device_id: &str) -> DeviceRow {
        DeviceRow {
            user_id: user_id.into(),
            device_id: device_id.into(),
            display_name: Some("phone".into()),
            last_seen_ts: None,
            last_seen_ip: None,
        }
    }

    fn token(hash: &str, user_id: &str, device_id: &str) -> WriteOp {
        WriteOp::InsertToken(TokenRow {
            token_hash: hash.into(),
            user_id: user_id.into(),
            device_id: device_id.into(),
        })
    }

    fn reg_token(token: &str, uses_allowed: Option<i64>, expiry_ts: Option<i64>) -> WriteOp {
        WriteOp::CreateRegistrationToken(RegistrationTokenRow {
            token: token.into(),
            uses_allowed,
            completed: 0,
            expiry_ts,
        })
    }

    fn use_token(token: &str, now_ms: i64) -> WriteOp {
        WriteOp::UseRegistrationToken {
            token: token.into(),
            now_ms,
        }
    }

    fn meta(key: &str, value: &str) -> WriteOp {
        WriteOp::PutMeta {
            key: key.into(),
            value: value.into(),
        }
    }

    #[tokio::test]
    async fn a_created_user_reads_back_whole_and_takes_no_stream_position() {
        let store = fresh_store();
        assert_eq!(store.count_users().unwrap(), 0);
        assert!(store.get_user("@alice:hl").unwrap().is_none());
        let mut gone = user("@bob:hl");
        gone.deactivated = true;
        gone.password_hash = None;
        let c = write(
            &store,
            vec![
                WriteOp::CreateUser(user("@alice:hl")),
                WriteOp::CreateUser(gone),
            ],
        )
        .await
        .unwrap();
        assert!(c.items.iter().all(|(pos, _)| *pos == 0));
        assert_eq!(store.stored_position().unwrap(), 0);
        let u = store.get_user("@alice:hl").unwrap().unwrap();
        assert_eq!(u.user_id, "@alice:hl");
        assert_eq!(u.password_hash.as_deref(), Some("$argon2id$hash"));
        assert_eq!(u.displayname.as_deref(), Some("Alice"));
        assert_eq!(u.avatar_url, None);
        assert_eq!(u.created_ts, 1_700_000_000_000);
        assert!(!u.deactivated);
        let b = store.get_user("@bob:hl").unwrap().unwrap();
        assert!(b.deactivated);
        assert_eq!(b.password_hash, None);
        assert_eq!(store.count_users().unwrap(), 2);
        store.close();
    }

    #[tokio::test]
    async fn a_taken_user_id_fails_its_batch_with_a_conflict_and_keeps_nothing_of_it() {
        let store = fresh_store();
        write(&store, vec![WriteOp::CreateUser(user("@alice:hl"))])
            .await
            .unwrap();
        let mut again = user("@alice:hl");
        again.displayname = Some("Impostor".into());
        let e = write(&store, vec![meta("kept", "no"), WriteOp::CreateUser(again)])
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        assert_eq!(store.get_meta("kept").unwrap(), None);
        let u = store.get_user("@alice:hl").unwrap().unwrap();
        assert_eq!(u.displayname.as_deref(), Some("Alice"));
        assert_eq!(store.count_users().unwrap(), 1);
        // The writer goes on after a failed batch.
        write(&store, vec![meta("kept", "yes")]).await.unwrap();
        assert_eq!(store.get_meta("kept").unwrap().as_deref(), Some("yes"));
        store.close();
    }

    #[tokio::test]
    async fn a_new_password_replaces_the_old_one() {
        let store = fresh_store();
        write(&store, vec![WriteOp::CreateUser(user("@alice:hl"))])
            .await
            .unwrap();
        write(
            &store,
            vec![WriteOp::SetPassword {
                user_id: "@alice:hl".into(),
                password_hash: "$argon2id$new".into(),
            }],
        )
        .await
        .unwrap();
        let u = store.get_user("@alice:hl").unwrap().unwrap();
        assert_eq!(u.password_hash.as_deref(), Some("$argon2id$new"));
        store.close();
    }

    #[tokio::test]
    async fn a_profile_change_sets_clears_or_leaves_each_field() {
        let store = fresh_store();
        write(&store, vec![WriteOp::CreateUser(user("@alice:hl"))])
            .await
            .unwrap();
        let profile = |displayname, avatar_url| WriteOp::SetProfile {
            user_id: "@alice:hl".into(),
            displayname,
            avatar_url,
        };
        // Only the avatar: the name stays.
        write(&store, vec![profile(None, Some(Some("mxc://hl/a".into())))])
            .await
            .unwrap();
        let u = store.get_user("@alice:hl").unwrap().unwrap();
        assert_eq!(u.displayname.as_deref(), Some("Alice"));
        assert_eq!(u.avatar_url.as_deref(), Some("mxc://hl/a"));
        // The name cleared, the avatar left.
        write(&store, vec![profile(Some(None), None)])
            .await
            .unwrap();
        let u = store.get_user("@alice:hl").unwrap().unwrap();
        assert_eq!(u.displayname, None);
        assert_eq!(u.avatar_url.as_deref(), Some("mxc://hl/a"));
        // Both at once.
        write(&store, vec![profile(Some(Some("Al".into())), Some(None))])
            .await
            .unwrap();
        let u = store.get_user("@alice:hl").unwrap().unwrap();
        assert_eq!(u.displayname.as_deref(), Some("Al"));
        assert_eq!(u.avatar_url, None);
        store.close();
    }

    #[tokio::test]
    async fn deactivation_drops_the_password_and_every_token_of_the_user_only() {
        let store = fresh_store();
        write(
            &store,
            vec![
                WriteOp::CreateUser(user("@alice:hl")),
                WriteOp::CreateUser(user("@bob:hl")),
                token("t1", "@alice:hl", "A"),
                token("t2", "@alice:hl", "B"),
                token("t3", "@bob:hl", "A"),
            ],
        )
        .await
        .unwrap();
        write(
            &store,
            vec![WriteOp::Deactivate {
                user_id: "@alice:hl".into(),
            }],
        )
        .await
        .unwrap();
        let u = store.get_user("@alice:hl").unwrap().unwrap();
        assert!(u.deactivated);
        assert_eq!(u.password_hash, None);
        assert!(store.find_token("t1").unwrap().is_none());
        assert!(store.find_token("t2").unwrap().is_none());
        let t = store.find_token("t3").unwrap().unwrap();
        assert_eq!((t.user_id.as_str(), t.device_id.as_str()), ("@bob:hl", "A"));
        assert!(!store.get_user("@bob:hl").unwrap().unwrap().deactivated);
        store.close();
    }

    #[tokio::test]
    async fn a_token_is_found_by_its_hash_and_a_reused_hash_conflicts() {
        let store = fresh_store();
        assert!(store.find_token("h").unwrap().is_none());
        write(&store, vec![token("h", "@alice:hl", "DEV")])
            .await
            .unwrap();
        let t = store.find_token("h").unwrap().unwrap();
        assert_eq!(t.token_hash, "h");
        assert_eq!(t.user_id, "@alice:hl");
        assert_eq!(t.device_id, "DEV");
        let e = write(&store, vec![token("h", "@bob:hl", "X")])
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        assert_eq!(store.find_token("h").unwrap().unwrap().user_id, "@alice:hl");
        store.close();
    }

    #[tokio::test]
    async fn deleting_a_devices_tokens_keeps_the_other_devices_tokens() {
        let store = fresh_store();
        write(
            &store,
            vec![
                token("a1", "@alice:hl", "A"),
                token("a2", "@alice:hl", "A"),
                token("b1", "@alice:hl", "B"),
                token("x1", "@bob:hl", "A"),
            ],
        )
        .await
        .unwrap();
        write(
            &store,
            vec![WriteOp::DeleteDeviceTokens {
                user_id: "@alice:hl".into(),
                device_id: "A".into(),
            }],
        )
        .await
        .unwrap();
        assert!(store.find_token("a1").unwrap().is_none());
        assert!(store.find_token("a2").unwrap().is_none());
        assert!(store.find_token("b1").unwrap().is_some());
        assert!(store.find_token("x1").unwrap().is_some());
        store.close();
    }

    #[tokio::test]
    async fn upserting_a_device_replaces_every_field_and_devices_list_in_byte_order() {
        let store = fresh_store();
        assert!(store.list_devices("@alice:hl").unwrap().is_empty());
        write(
            &store,
            vec![
                WriteOp::UpsertDevice(device("@alice:hl", "b")),
                WriteOp::UpsertDevice(device("@alice:hl", "B")),
                WriteOp::UpsertDevice(device("@alice:hl", "_")),
                WriteOp::UpsertDevice(device("@alice:hl", "a")),
                WriteOp::UpsertDevice(device("@bob:hl", "Z")),
            ],
        )
        .await
        .unwrap();
        let ids: Vec<String> = store
            .list_devices("@alice:hl")
            .unwrap()
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        // Bytewise, as SQLite orders: upper case, then '_', then lower case.
        assert_eq!(ids, ["B", "_", "a", "b"]);
        let mut seen = device("@alice:hl", "a");
        seen.last_seen_ts = Some(5);
        seen.last_seen_ip = Some("10.0.0.1".into());
        write(&store, vec![WriteOp::UpsertDevice(seen)])
            .await
            .unwrap();
        let mut renamed = device("@alice:hl", "a");
        renamed.display_name = None;
        write(&store, vec![WriteOp::UpsertDevice(renamed)])
            .await
            .unwrap();
        let d = store.get_device("@alice:hl", "a").unwrap().unwrap();
        assert_eq!(d.user_id, "@alice:hl");
        assert_eq!(d.device_id, "a");
        assert_eq!(d.display_name, None);
        assert_eq!(d.last_seen_ts, None);
        assert_eq!(d.last_seen_ip, None);
        assert_eq!(store.list_devices("@alice:hl").unwrap().len(), 4);
        assert!(store.get_device("@alice:hl", "Z").unwrap().is_none());
        assert!(store.get_device("@bob:hl", "Z").unwrap().is_some());
        store.close();
    }

    #[tokio::test]
    async fn a_devices_last_seen_time_never_goes_back_and_an_unknown_address_keeps_the_last() {
        let store = fresh_store();
        write(
            &store,
            vec![WriteOp::UpsertDevice(device("@alice:hl", "D"))],
        )
        .await
        .unwrap();
        let seen = |ts, ip: Option<&str>| WriteOp::SetDeviceSeen {
            user_id: "@alice:hl".into(),
            device_id: "D".into(),
            ts,
            ip: ip.map(Into::into),
        };
        write(&store, vec![seen(100, Some("10.0.0.1"))])
            .await
            .unwrap();
        let d = store.get_device("@alice:hl", "D").unwrap().unwrap();
        assert_eq!(d.last_seen_ts, Some(100));
        assert_eq!(d.last_seen_ip.as_deref(), Some("10.0.0.1"));
        // Older: the time stays, the address is taken.
        write(&store, vec![seen(50, Some("10.0.0.2"))])
            .await
            .unwrap();
        let d = store.get_device("@alice:hl", "D").unwrap().unwrap();
        assert_eq!(d.last_seen_ts, Some(100));
        assert_eq!(d.last_seen_ip.as_deref(), Some("10.0.0.2"));
        // No address: the last one stays.
        write(&store, vec![seen(200, None)]).await.unwrap();
        let d = store.get_device("@alice:hl", "D").unwrap().unwrap();
        assert_eq!(d.last_seen_ts, Some(200));
        assert_eq!(d.last_seen_ip.as_deref(), Some("10.0.0.2"));
        store.close();
    }

    #[tokio::test]
    async fn seeing_a_device_that_is_gone_writes_nothing_and_does_not_fail() {
        let store = fresh_store();
        write(
            &store,
            vec![WriteOp::SetDeviceSeen {
                user_id: "@alice:hl".into(),
                device_id: "GONE".into(),
                ts: 1,
                ip: Some("10.0.0.1".into()),
            }],
        )
        .await
        .unwrap();
        assert!(store.get_device("@alice:hl", "GONE").unwrap().is_none());
        store.close();
    }

    #[tokio::test]
    async fn deleting_a_device_takes_its_tokens_keys_queue_and_signatures_and_nothing_else() {
        let store = fresh_store();
        write(
            &store,
            vec![
                WriteOp::UpsertDevice(device("@alice:hl", "A")),
                WriteOp::UpsertDevice(device("@alice:hl", "B")),
                token("ta", "@alice:hl", "A"),
                token("tb", "@alice:hl", "B"),
            ],
        )
        .await
        .unwrap();
        // Rows of the keys domain, written past its operations.
        let c = store.reader();
        for d in ["A", "B"] {
            for sql in [
                "INSERT INTO device_keys (user_id, device_id, json) VALUES ($1, $2, '{}')",
                "INSERT INTO one_time_keys (user_id, device_id, key_id, algorithm, json) VALUES ($1, $2, 'k', 'alg', '{}')",
                "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, json) VALUES ($1, $2, 'alg', 'k', '{}')",
                "INSERT INTO key_signatures (target_user, target_key_id, signer_user, signer_key_id, signature) VALUES ($1, $2, '@alice:hl', 'ssk', 'sig')",
            ] {
                c.exec(sql, &[&"@alice:hl", &d]).await.unwrap();
            }
        }
        c.exec(
            "INSERT INTO to_device (pos, user_id, device_id, json) VALUES (1, $1, $2, '{}'), (2, $1, $3, '{}')",
            &[&"@alice:hl", &"A", &"B"],
        )
        .await
        .unwrap();
        write(
            &store,
            vec![WriteOp::DeleteDevice {
                user_id: "@alice:hl".into(),
                device_id: "A".into(),
            }],
        )
        .await
        .unwrap();
        assert!(store.get_device("@alice:hl", "A").unwrap().is_none());
        assert!(store.get_device("@alice:hl", "B").unwrap().is_some());
        assert!(store.find_token("ta").unwrap().is_none());
        assert!(store.find_token("tb").unwrap().is_some());
        // The device's rows go, the other device's stay.
        for sql in [
            "SELECT COUNT(*) FROM device_keys WHERE user_id = $1 AND device_id = $2",
            "SELECT COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2",
            "SELECT COUNT(*) FROM fallback_keys WHERE user_id = $1 AND device_id = $2",
            "SELECT COUNT(*) FROM to_device WHERE user_id = $1 AND device_id = $2",
            "SELECT COUNT(*) FROM key_signatures WHERE target_user = $1 AND target_key_id = $2",
        ] {
            assert_eq!(count(&store, sql, "@alice:hl", "A").await, 0, "{sql}");
            assert_eq!(count(&store, sql, "@alice:hl", "B").await, 1, "{sql}");
        }
        store.close();
    }

    #[tokio::test]
    async fn a_registration_token_counts_each_use_until_it_is_used_up() {
        let store = fresh_store();
        assert!(store.get_registration_token("tok").unwrap().is_none());
        write(&store, vec![reg_token("tok", Some(2), Some(1_000))])
            .await
            .unwrap();
        let t = store.get_registration_token("tok").unwrap().unwrap();
        assert_eq!(t.token, "tok");
        assert_eq!(t.uses_allowed, Some(2));
        assert_eq!(t.completed, 0);
        assert_eq!(t.expiry_ts, Some(1_000));
        for (n, id) in [(1, "@a:hl"), (2, "@b:hl")] {
            write(
                &store,
                vec![use_token("tok", 10), WriteOp::CreateUser(user(id))],
            )
            .await
            .unwrap();
            assert_eq!(
                store
                    .get_registration_token("tok")
                    .unwrap()
                    .unwrap()
                    .completed,
                n
            );
        }
        // Used up: the batch fails as a conflict and its account is not made.
        let e = write(
            &store,
            vec![WriteOp::CreateUser(user("@c:hl")), use_token("tok", 10)],
        )
        .await
        .unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        assert!(store.get_user("@c:hl").unwrap().is_none());
        assert_eq!(store.count_users().unwrap(), 2);
        assert_eq!(
            store
                .get_registration_token("tok")
                .unwrap()
                .unwrap()
                .completed,
            2
        );
        store.close();
    }

    #[tokio::test]
    async fn an_expired_or_unknown_registration_token_fails_its_batch_with_a_conflict() {
        let store = fresh_store();
        write(&store, vec![reg_token("tok", None, Some(1_000))])
            .await
            .unwrap();
        write(&store, vec![use_token("tok", 999)]).await.unwrap();
        // Expired at its expiry time itself.
        for (token, now) in [("tok", 1_000), ("tok", 5_000), ("nope", 0)] {
            let e = write(
                &store,
                vec![WriteOp::CreateUser(user("@late:hl")), use_token(token, now)],
            )
            .await
            .unwrap_err();
            assert!(
                matches!(e, StoreError::Conflict(_)),
                "{token} at {now}: {e:?}"
            );
        }
        assert!(store.get_user("@late:hl").unwrap().is_none());
        assert_eq!(
            store
                .get_registration_token("tok")
                .unwrap()
                .unwrap()
                .completed,
            1
        );
        store.close();
    }

    #[tokio::test]
    async fn a_registration_token_without_limits_is_never_used_up() {
        let store = fresh_store();
        write(&store, vec![reg_token("free", None, None)])
            .await
            .unwrap();
        for _ in 0..3 {
            write(&store, vec![use_token("free", i64::MAX)])
                .await
                .unwrap();
        }
        let t = store.get_registration_token("free").unwrap().unwrap();
        assert_eq!((t.uses_allowed, t.completed, t.expiry_ts), (None, 3, None));
        // A token's name is taken once.
        let e = write(&store, vec![reg_token("free", Some(1), None)])
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        store.close();
    }

    #[tokio::test]
    async fn a_filter_put_again_replaces_the_stored_one_of_that_user_only() {
        let store = fresh_store();
        let put = |user_id: &str, json: &str| WriteOp::PutFilter {
            user_id: user_id.into(),
            filter_id: "0".into(),
            json: json.into(),
        };
        assert_eq!(store.get_filter("@alice:hl", "0").unwrap(), None);
        write(
            &store,
            vec![put("@alice:hl", "{\"a\":1}"), put("@bob:hl", "{}")],
        )
        .await
        .unwrap();
        write(&store, vec![put("@alice:hl", "{\"a\":2}")])
            .await
            .unwrap();
        assert_eq!(
            store.get_filter("@alice:hl", "0").unwrap().as_deref(),
            Some("{\"a\":2}")
        );
        assert_eq!(
            store.get_filter("@bob:hl", "0").unwrap().as_deref(),
            Some("{}")
        );
        assert_eq!(store.get_filter("@alice:hl", "1").unwrap(), None);
        store.close();
    }

    #[tokio::test]
    async fn a_meta_value_put_again_replaces_the_stored_one() {
        let store = fresh_store();
        assert_eq!(store.get_meta("server_name").unwrap(), None);
        write(&store, vec![meta("server_name", "hl"), meta("other", "x")])
            .await
            .unwrap();
        write(&store, vec![meta("server_name", "hl2")])
            .await
            .unwrap();
        assert_eq!(
            store.get_meta("server_name").unwrap().as_deref(),
            Some("hl2")
        );
        assert_eq!(store.get_meta("other").unwrap().as_deref(), Some("x"));
        // A prefix is matched as it is: `_` is no wildcard.
        write(&store, vec![meta("a_b:1", "x"), meta("axb:2", "y")])
            .await
            .unwrap();
        assert_eq!(
            store.meta_with_prefix("a_b:").unwrap(),
            vec![("a_b:1".to_owned(), "x".to_owned())]
        );
        store.close();
    }
}
