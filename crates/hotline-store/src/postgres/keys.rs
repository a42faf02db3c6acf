//! End-to-end encryption keys (device keys, one-time and fallback keys, cross-signing keys and signatures), key changes, to-device messages.

use tokio_postgres::Row;

use super::writer::Applied;
use super::{Conn, PgResult, PostgresStore};
use crate::*;

pub(crate) async fn put_device_keys(
    c: &Conn,
    user_id: &str,
    device_id: &str,
    json: &str,
) -> Applied {
    c.exec(
        "INSERT INTO device_keys (user_id, device_id, json) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, device_id) DO UPDATE SET json = EXCLUDED.json",
        &[&user_id, &device_id, &json],
    )
    .await?;
    Ok(())
}

pub(crate) async fn put_one_time_keys(
    c: &Conn,
    user_id: &str,
    device_id: &str,
    keys: &[(String, String, String)],
) -> Applied {
    // A key id already uploaded keeps its first key (a client re-uploading
    // after a lost answer must not replace a key a peer may have claimed).
    for (key_id, algorithm, json) in keys {
        c.exec(
            "INSERT INTO one_time_keys (user_id, device_id, key_id, algorithm, json) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[&user_id, &device_id, key_id, algorithm, json],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn put_fallback_key(
    c: &Conn,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
    key_id: &str,
    json: &str,
) -> Applied {
    // A new fallback key starts unused.
    c.exec(
        "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, json, used) VALUES ($1, $2, $3, $4, $5, 0)
         ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = EXCLUDED.key_id, json = EXCLUDED.json, used = 0",
        &[&user_id, &device_id, &algorithm, &key_id, &json],
    )
    .await?;
    Ok(())
}

pub(crate) async fn delete_one_time_key(
    c: &Conn,
    user_id: &str,
    device_id: &str,
    key_id: &str,
) -> Applied {
    let deleted = c
        .exec(
            "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND key_id = $3",
            &[&user_id, &device_id, &key_id],
        )
        .await?;
    if deleted == 0 {
        // Claimed meanwhile (by another process): never hand a key out twice.
        return Err(super::writer::conflict("one-time key already claimed"));
    }
    Ok(())
}

pub(crate) async fn mark_fallback_used(
    c: &Conn,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> Applied {
    c.exec(
        "UPDATE fallback_keys SET used = 1 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3",
        &[&user_id, &device_id, &algorithm],
    )
    .await?;
    Ok(())
}

pub(crate) async fn put_cross_signing_key(
    c: &Conn,
    user_id: &str,
    key_type: &str,
    json: &str,
) -> Applied {
    c.exec(
        "INSERT INTO cross_signing_keys (user_id, key_type, json) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, key_type) DO UPDATE SET json = EXCLUDED.json",
        &[&user_id, &key_type, &json],
    )
    .await?;
    Ok(())
}

pub(crate) async fn put_key_signature(c: &Conn, s: &KeySignatureRow) -> Applied {
    c.exec(
        "INSERT INTO key_signatures (target_user, target_key_id, signer_user, signer_key_id, signature) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (target_user, target_key_id, signer_user, signer_key_id) DO UPDATE SET signature = EXCLUDED.signature",
        &[&s.target_user, &s.target_key_id, &s.signer_user, &s.signer_key_id, &s.signature],
    )
    .await?;
    Ok(())
}

pub(crate) async fn key_change(c: &Conn, user_id: &str, pos: i64) -> Applied {
    c.exec(
        "INSERT INTO key_changes (pos, user_id) VALUES ($1, $2)",
        &[&pos, &user_id],
    )
    .await?;
    Ok(())
}

pub(crate) async fn put_to_device(
    c: &Conn,
    user_id: &str,
    device_id: &str,
    json: &str,
    max_queued: i64,
    pos: i64,
) -> Applied {
    // A device that already holds `max_queued` messages drops this one (the
    // write still succeeds and its position is spent, as on SQLite). The
    // count stops at the limit, so a full queue costs no more than that.
    // The casts type the parameters: in `INSERT ... SELECT` PostgreSQL
    // would otherwise take the select list's parameters as text.
    c.exec(
        "INSERT INTO to_device (pos, user_id, device_id, json)
         SELECT $1::BIGINT, $2::TEXT, $3::TEXT, $4::TEXT
         WHERE (SELECT COUNT(*) FROM (SELECT 1 FROM to_device WHERE user_id = $2::TEXT AND device_id = $3::TEXT LIMIT $5::BIGINT) q) < $5::BIGINT",
        &[&pos, &user_id, &device_id, &json, &max_queued],
    )
    .await?;
    Ok(())
}

pub(crate) async fn delete_to_device(
    c: &Conn,
    user_id: &str,
    device_id: &str,
    upto: i64,
) -> Applied {
    c.exec(
        "DELETE FROM to_device WHERE user_id = $1 AND device_id = $2 AND pos <= $3",
        &[&user_id, &device_id, &upto],
    )
    .await?;
    Ok(())
}

fn pair_row(r: &Row) -> PgResult<(String, String)> {
    Ok((r.try_get(0)?, r.try_get(1)?))
}

fn key_signature_row(r: &Row) -> PgResult<KeySignatureRow> {
    Ok(KeySignatureRow {
        target_user: r.try_get(0)?,
        target_key_id: r.try_get(1)?,
        signer_user: r.try_get(2)?,
        signer_key_id: r.try_get(3)?,
        signature: r.try_get(4)?,
    })
}

fn to_device_row(r: &Row) -> PgResult<ToDeviceRow> {
    Ok(ToDeviceRow {
        pos: r.try_get(0)?,
        json: r.try_get(1)?,
    })
}

// SQLite gives no ORDER BY for several of these reads; its primary-key
// index returns them in key order, so the same order is asked for here
// (byte order, as SQLite compares text), to make both engines agree.
impl KeyStore for PostgresStore {
    fn device_keys(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        self.query_all(
            r#"SELECT device_id, json FROM device_keys WHERE user_id = $1 ORDER BY device_id COLLATE "C""#,
            &[&user_id],
            pair_row,
        )
    }

    fn one_time_key_counts(&self, user_id: &str, device_id: &str) -> Result<Vec<(String, i64)>> {
        self.query_all(
            r#"SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2
               GROUP BY algorithm ORDER BY algorithm COLLATE "C""#,
            &[&user_id, &device_id],
            |r| Ok((r.try_get(0)?, r.try_get(1)?)),
        )
    }

    fn unused_fallback_algorithms(&self, user_id: &str, device_id: &str) -> Result<Vec<String>> {
        self.query_all(
            r#"SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = 0
               ORDER BY algorithm COLLATE "C""#,
            &[&user_id, &device_id],
            |r| r.try_get(0),
        )
    }

    fn find_one_time_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<(String, String)>> {
        self.query_one(
            r#"SELECT key_id, json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
               ORDER BY key_id COLLATE "C" LIMIT 1"#,
            &[&user_id, &device_id, &algorithm],
            pair_row,
        )
    }

    fn fallback_key(
        &self,
        user_id: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<(String, String)>> {
        self.query_one(
            "SELECT key_id, json FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3",
            &[&user_id, &device_id, &algorithm],
            pair_row,
        )
    }

    fn cross_signing_keys(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        self.query_all(
            r#"SELECT key_type, json FROM cross_signing_keys WHERE user_id = $1 ORDER BY key_type COLLATE "C""#,
            &[&user_id],
            pair_row,
        )
    }

    fn key_signatures(&self, target_user: &str) -> Result<Vec<KeySignatureRow>> {
        self.query_all(
            r#"SELECT target_user, target_key_id, signer_user, signer_key_id, signature FROM key_signatures
               WHERE target_user = $1
               ORDER BY target_key_id COLLATE "C", signer_user COLLATE "C", signer_key_id COLLATE "C""#,
            &[&target_user],
            key_signature_row,
        )
    }

    fn key_changes(&self, from: i64, to: i64) -> Result<Vec<String>> {
        // Each user once, in the order of their first change in the range.
        self.query_all(
            "SELECT user_id FROM key_changes WHERE pos > $1 AND pos <= $2 GROUP BY user_id ORDER BY MIN(pos)",
            &[&from, &to],
            |r| r.try_get(0),
        )
    }

    fn to_device_since(
        &self,
        user_id: &str,
        device_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ToDeviceRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query_all(
            "SELECT pos, json FROM to_device WHERE user_id = $1 AND device_id = $2 AND pos > $3 ORDER BY pos LIMIT $4",
            &[&user_id, &device_id, &after, &limit],
            to_device_row,
        )
    }

    fn to_device_latest(&self, user_id: &str, device_id: &str) -> Result<Option<i64>> {
        let latest: Option<Option<i64>> = self.query_one(
            "SELECT MAX(pos) FROM to_device WHERE user_id = $1 AND device_id = $2",
            &[&user_id, &device_id],
            |r| r.try_get(0),
        )?;
        Ok(latest.flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::fresh_store;
    use super::*;

    fn s(x: &str) -> String {
        x.to_owned()
    }

    async fn write(store: &PostgresStore, ops: Vec<WriteOp>) -> Result<Committed> {
        store.write(WriteBatch { ops }).await
    }

    fn otk(key_id: &str, algorithm: &str, json: &str) -> (String, String, String) {
        (s(key_id), s(algorithm), s(json))
    }

    fn to_device(device_id: &str, json: &str, max_queued: i64) -> WriteOp {
        WriteOp::PutToDevice {
            user_id: s("@a:x"),
            device_id: s(device_id),
            json: s(json),
            max_queued,
        }
    }

    #[tokio::test]
    async fn device_keys_are_replaced_per_device_and_listed_by_device() {
        let store = fresh_store();
        let put = |d: &str, j: &str| WriteOp::PutDeviceKeys {
            user_id: s("@a:x"),
            device_id: s(d),
            json: s(j),
        };
        write(
            &store,
            vec![put("DEV2", "{2}"), put("DEV1", "{1}"), put("DEV1", "{1b}")],
        )
        .await
        .unwrap();
        write(
            &store,
            vec![WriteOp::PutDeviceKeys {
                user_id: s("@b:x"),
                device_id: s("DEV1"),
                json: s("{b}"),
            }],
        )
        .await
        .unwrap();
        assert_eq!(
            store.device_keys("@a:x").unwrap(),
            vec![(s("DEV1"), s("{1b}")), (s("DEV2"), s("{2}"))]
        );
        assert!(store.device_keys("@c:x").unwrap().is_empty());
        store.close();
    }

    #[tokio::test]
    async fn one_time_keys_keep_the_first_upload_of_a_key_id_and_are_counted_per_algorithm() {
        let store = fresh_store();
        let put = |keys: Vec<(String, String, String)>| WriteOp::PutOneTimeKeys {
            user_id: s("@a:x"),
            device_id: s("D"),
            keys,
        };
        write(
            &store,
            vec![
                put(vec![
                    otk("signed_curve25519:B", "signed_curve25519", "{b}"),
                    otk("signed_curve25519:A", "signed_curve25519", "{a}"),
                    otk("curve25519:C", "curve25519", "{c}"),
                ]),
                put(vec![otk(
                    "signed_curve25519:A",
                    "signed_curve25519",
                    "{a2}",
                )]),
            ],
        )
        .await
        .unwrap();
        assert_eq!(
            store.one_time_key_counts("@a:x", "D").unwrap(),
            vec![(s("curve25519"), 1), (s("signed_curve25519"), 2)]
        );
        assert_eq!(
            store
                .find_one_time_key("@a:x", "D", "signed_curve25519")
                .unwrap(),
            Some((s("signed_curve25519:A"), s("{a}")))
        );
        assert_eq!(store.find_one_time_key("@a:x", "D", "other").unwrap(), None);
        assert_eq!(
            store.find_one_time_key("@a:x", "E", "curve25519").unwrap(),
            None
        );
        store.close();
    }

    #[tokio::test]
    async fn a_claimed_one_time_key_is_gone_and_the_next_is_found() {
        let store = fresh_store();
        write(
            &store,
            vec![WriteOp::PutOneTimeKeys {
                user_id: s("@a:x"),
                device_id: s("D"),
                keys: vec![otk("k:1", "k", "{1}"), otk("k:2", "k", "{2}")],
            }],
        )
        .await
        .unwrap();
        let claim = |key_id: &str| WriteOp::DeleteOneTimeKey {
            user_id: s("@a:x"),
            device_id: s("D"),
            key_id: s(key_id),
        };
        write(&store, vec![claim("k:1")]).await.unwrap();
        assert_eq!(
            store.one_time_key_counts("@a:x", "D").unwrap(),
            vec![(s("k"), 1)]
        );
        assert_eq!(
            store.find_one_time_key("@a:x", "D", "k").unwrap(),
            Some((s("k:2"), s("{2}")))
        );
        write(&store, vec![claim("k:2")]).await.unwrap();
        assert!(store.one_time_key_counts("@a:x", "D").unwrap().is_empty());
        assert_eq!(store.find_one_time_key("@a:x", "D", "k").unwrap(), None);
        store.close();
    }

    #[tokio::test]
    async fn a_fallback_key_is_unused_until_marked_and_a_new_upload_makes_it_unused_again() {
        let store = fresh_store();
        let put = |alg: &str, key_id: &str, json: &str| WriteOp::PutFallbackKey {
            user_id: s("@a:x"),
            device_id: s("D"),
            algorithm: s(alg),
            key_id: s(key_id),
            json: s(json),
        };
        write(
            &store,
            vec![put("z", "z:1", "{z1}"), put("a", "a:1", "{a1}")],
        )
        .await
        .unwrap();
        assert_eq!(
            store.unused_fallback_algorithms("@a:x", "D").unwrap(),
            vec![s("a"), s("z")]
        );
        write(
            &store,
            vec![WriteOp::MarkFallbackUsed {
                user_id: s("@a:x"),
                device_id: s("D"),
                algorithm: s("z"),
            }],
        )
        .await
        .unwrap();
        assert_eq!(
            store.unused_fallback_algorithms("@a:x", "D").unwrap(),
            vec![s("a")]
        );
        // A used fallback key is still handed out.
        assert_eq!(
            store.fallback_key("@a:x", "D", "z").unwrap(),
            Some((s("z:1"), s("{z1}")))
        );
        write(&store, vec![put("z", "z:2", "{z2}")]).await.unwrap();
        assert_eq!(
            store.unused_fallback_algorithms("@a:x", "D").unwrap(),
            vec![s("a"), s("z")]
        );
        assert_eq!(
            store.fallback_key("@a:x", "D", "z").unwrap(),
            Some((s("z:2"), s("{z2}")))
        );
        assert_eq!(store.fallback_key("@a:x", "D", "none").unwrap(), None);
        store.close();
    }

    #[tokio::test]
    async fn cross_signing_keys_and_signatures_are_replaced_by_their_keys() {
        let store = fresh_store();
        let csk = |t: &str, j: &str| WriteOp::PutCrossSigningKey {
            user_id: s("@a:x"),
            key_type: s(t),
            json: s(j),
        };
        let sig = |target_key: &str, signer: &str, signature: &str| {
            WriteOp::PutKeySignature(KeySignatureRow {
                target_user: s("@a:x"),
                target_key_id: s(target_key),
                signer_user: s(signer),
                signer_key_id: s("ed25519:K"),
                signature: s(signature),
            })
        };
        write(
            &store,
            vec![
                csk("self_signing", "{ss}"),
                csk("master", "{m}"),
                csk("master", "{m2}"),
                sig("DEV", "@b:x", "s1"),
                sig("DEV", "@a:x", "s2"),
                sig("DEV", "@b:x", "s3"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(
            store.cross_signing_keys("@a:x").unwrap(),
            vec![(s("master"), s("{m2}")), (s("self_signing"), s("{ss}"))]
        );
        let sigs: Vec<(String, String)> = store
            .key_signatures("@a:x")
            .unwrap()
            .into_iter()
            .map(|k| {
                assert_eq!(k.target_user, "@a:x");
                assert_eq!(k.target_key_id, "DEV");
                assert_eq!(k.signer_key_id, "ed25519:K");
                (k.signer_user, k.signature)
            })
            .collect();
        assert_eq!(sigs, vec![(s("@a:x"), s("s2")), (s("@b:x"), s("s3"))]);
        assert!(store.key_signatures("@b:x").unwrap().is_empty());
        assert!(store.cross_signing_keys("@b:x").unwrap().is_empty());
        store.close();
    }

    #[tokio::test]
    async fn key_changes_take_positions_and_list_each_user_once_within_the_range() {
        let store = fresh_store();
        let change = |u: &str| WriteOp::KeyChange { user_id: s(u) };
        let c = write(&store, vec![change("@b:x"), change("@a:x"), change("@b:x")])
            .await
            .unwrap();
        let pos: Vec<i64> = c.items.iter().map(|(p, _)| *p).collect();
        assert_eq!(pos, vec![1, 2, 3]);
        assert_eq!(c.high_water, 3);
        assert_eq!(store.key_changes(0, 3).unwrap(), vec![s("@b:x"), s("@a:x")]);
        // `from` is exclusive, `to` inclusive.
        assert_eq!(store.key_changes(1, 2).unwrap(), vec![s("@a:x")]);
        assert_eq!(store.key_changes(2, 3).unwrap(), vec![s("@b:x")]);
        assert!(store.key_changes(3, 10).unwrap().is_empty());
        store.close();
    }

    #[tokio::test]
    async fn to_device_messages_are_read_in_position_order_after_a_position_up_to_a_limit() {
        let store = fresh_store();
        let c = write(
            &store,
            vec![
                to_device("D", "{1}", 100),
                to_device("E", "{other}", 100),
                to_device("D", "{2}", 100),
                to_device("D", "{3}", 100),
            ],
        )
        .await
        .unwrap();
        let pos: Vec<i64> = c.items.iter().map(|(p, _)| *p).collect();
        assert_eq!(pos, vec![1, 2, 3, 4]);
        let read = |after, limit| -> Vec<(i64, String)> {
            store
                .to_device_since("@a:x", "D", after, limit)
                .unwrap()
                .into_iter()
                .map(|r| (r.pos, r.json))
                .collect()
        };
        assert_eq!(
            read(0, 10),
            vec![(1, s("{1}")), (3, s("{2}")), (4, s("{3}"))]
        );
        assert_eq!(read(0, 2), vec![(1, s("{1}")), (3, s("{2}"))]);
        assert_eq!(read(1, 10), vec![(3, s("{2}")), (4, s("{3}"))]);
        assert_eq!(read(4, usize::MAX), vec![]);
        assert_eq!(store.to_device_latest("@a:x", "D").unwrap(), Some(4));
        assert_eq!(store.to_device_latest("@a:x", "E").unwrap(), Some(2));
        assert_eq!(store.to_device_latest("@a:x", "F").unwrap(), None);

        // Delivered messages (up to and including `upto`) are deleted.
        write(
            &store,
            vec![WriteOp::DeleteToDevice {
                user_id: s("@a:x"),
                device_id: s("D"),
                upto: 3,
            }],
        )
        .await
        .unwrap();
        assert_eq!(read(0, 10), vec![(4, s("{3}"))]);
        assert_eq!(store.to_device_latest("@a:x", "E").unwrap(), Some(2));
        store.close();
    }

    #[tokio::test]
    async fn a_to_device_message_to_a_full_queue_is_dropped_without_failing_the_batch() {
        let store = fresh_store();
        let c = write(
            &store,
            vec![
                to_device("D", "{1}", 2),
                to_device("D", "{2}", 2),
                // The queue holds 2: dropped, the batch still commits.
                to_device("D", "{3}", 2),
                // Another device's queue is its own.
                to_device("E", "{e}", 2),
            ],
        )
        .await
        .unwrap();
        let pos: Vec<i64> = c.items.iter().map(|(p, _)| *p).collect();
        assert_eq!(pos, vec![1, 2, 3, 4]);
        let jsons = |d: &str| -> Vec<String> {
            store
                .to_device_since("@a:x", d, 0, 100)
                .unwrap()
                .into_iter()
                .map(|r| r.json)
                .collect()
        };
        assert_eq!(jsons("D"), vec![s("{1}"), s("{2}")]);
        assert_eq!(jsons("E"), vec![s("{e}")]);
        // Once the device takes its messages, the queue has room again.
        write(
            &store,
            vec![
                WriteOp::DeleteToDevice {
                    user_id: s("@a:x"),
                    device_id: s("D"),
                    upto: 1,
                },
                to_device("D", "{4}", 2),
                to_device("D", "{5}", 2),
            ],
        )
        .await
        .unwrap();
        assert_eq!(jsons("D"), vec![s("{2}"), s("{4}")]);
        store.close();
    }
}
