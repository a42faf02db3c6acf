//! Official identity and lines: officials, attestations, line invites and their redemptions, lines, the audit log.

use tokio_postgres::Row;

use super::writer::{conflict, Applied};
use super::{Conn, PgResult, PostgresStore};
use crate::*;

pub(crate) async fn put_official(c: &Conn, o: &OfficialRow) -> Applied {
    c.exec(
        "INSERT INTO officials (user_id, name, title, country, office, role, principal, skeleton, enrol_code_hash, enrol_expires_ts, enrolled_ts, created_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (user_id) DO UPDATE SET name = EXCLUDED.name, title = EXCLUDED.title, country = EXCLUDED.country,
           office = EXCLUDED.office, role = EXCLUDED.role, principal = EXCLUDED.principal, skeleton = EXCLUDED.skeleton,
           enrol_code_hash = EXCLUDED.enrol_code_hash, enrol_expires_ts = EXCLUDED.enrol_expires_ts,
           enrolled_ts = EXCLUDED.enrolled_ts, created_ts = EXCLUDED.created_ts",
        &[
            &o.user_id,
            &o.name,
            &o.title,
            &o.country,
            &o.office,
            &o.role,
            &o.principal,
            &o.skeleton,
            &o.enrol_code_hash,
            &o.enrol_expires_ts,
            &o.enrolled_ts,
            &o.created_ts,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn put_attestation(c: &Conn, a: &AttestationRow) -> Applied {
    c.exec(
        "INSERT INTO attestations (user_id, json, issued_ts, revoked_ts) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id) DO UPDATE SET json = EXCLUDED.json, issued_ts = EXCLUDED.issued_ts, revoked_ts = EXCLUDED.revoked_ts",
        &[&a.user_id, &a.json, &a.issued_ts, &a.revoked_ts],
    )
    .await?;
    Ok(())
}

pub(crate) async fn revoke_attestation(c: &Conn, user_id: &str, ts: i64) -> Applied {
    c.exec(
        "UPDATE attestations SET revoked_ts = $2 WHERE user_id = $1",
        &[&user_id, &ts],
    )
    .await?;
    Ok(())
}

pub(crate) async fn put_line_invite(c: &Conn, i: &LineInviteRow) -> Applied {
    let revoked = i64::from(i.revoked);
    c.exec(
        "INSERT INTO line_invites (code, principal, created_by, for_user, uses_allowed, uses, expires_ts, revoked, created_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &i.code,
            &i.principal,
            &i.created_by,
            &i.for_user,
            &i.uses_allowed,
            &i.uses,
            &i.expires_ts,
            &revoked,
            &i.created_ts,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn use_line_invite(c: &Conn, code: &str, now_ms: i64, redeemer: &str) -> Applied {
    // Check and count in one statement: the row lock the UPDATE takes makes
    // concurrent redeems (other processes included) count one after the
    // other, each seeing the uses before it, so none goes past the limit.
    let counted = c
        .exec(
            "UPDATE line_invites SET uses = uses + 1 WHERE code = $1 AND revoked = 0
             AND (uses_allowed IS NULL OR uses < uses_allowed)
             AND (expires_ts IS NULL OR expires_ts > $2)",
            &[&code, &now_ms],
        )
        .await?;
    if counted == 0 {
        return Err(conflict("line invite revoked, used up or expired"));
    }
    c.exec(
        "INSERT INTO line_invite_redemptions (code, user_id, ts) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        &[&code, &redeemer, &now_ms],
    )
    .await?;
    Ok(())
}

pub(crate) async fn revoke_line_invite(c: &Conn, code: &str) -> Applied {
    c.exec(
        "UPDATE line_invites SET revoked = 1 WHERE code = $1",
        &[&code],
    )
    .await?;
    Ok(())
}

pub(crate) async fn put_line(c: &Conn, l: &LineRow) -> Applied {
    // Stored as given: the caller orders the pair (`principal_a <=
    // principal_b`, byte order) as `get_line` looks it up, so a second line
    // between the same two principals hits the primary key (a conflict).
    c.exec(
        "INSERT INTO lines (principal_a, principal_b, room_id, created_ts) VALUES ($1, $2, $3, $4)",
        &[&l.principal_a, &l.principal_b, &l.room_id, &l.created_ts],
    )
    .await?;
    Ok(())
}

pub(crate) async fn append_audit(c: &Conn, a: &AuditRow) -> Applied {
    // `seq` is the store's to assign (the identity column).
    c.exec(
        "INSERT INTO audit_log (ts, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)",
        &[&a.ts, &a.actor, &a.action, &a.subject, &a.detail],
    )
    .await?;
    Ok(())
}

/// The columns [`official_row`] reads, in order (a macro, so the queries
/// stay `&'static str`).
macro_rules! official_cols {
    () => {
        "user_id, name, title, country, office, role, principal, skeleton, enrol_code_hash, enrol_expires_ts, enrolled_ts, created_ts"
    };
}

macro_rules! attestation_cols {
    () => {
        "user_id, json, issued_ts, revoked_ts"
    };
}

macro_rules! invite_cols {
    () => {
        "code, principal, created_by, for_user, uses_allowed, uses, expires_ts, revoked, created_ts"
    };
}

fn official_row(r: &Row) -> PgResult<OfficialRow> {
    Ok(OfficialRow {
        user_id: r.try_get(0)?,
        name: r.try_get(1)?,
        title: r.try_get(2)?,
        country: r.try_get(3)?,
        office: r.try_get(4)?,
        role: r.try_get(5)?,
        principal: r.try_get(6)?,
        skeleton: r.try_get(7)?,
        enrol_code_hash: r.try_get(8)?,
        enrol_expires_ts: r.try_get(9)?,
        enrolled_ts: r.try_get(10)?,
        created_ts: r.try_get(11)?,
    })
}

fn attestation_row(r: &Row) -> PgResult<AttestationRow> {
    Ok(AttestationRow {
        user_id: r.try_get(0)?,
        json: r.try_get(1)?,
        issued_ts: r.try_get(2)?,
        revoked_ts: r.try_get(3)?,
    })
}

fn invite_row(r: &Row) -> PgResult<LineInviteRow> {
    Ok(LineInviteRow {
        code: r.try_get(0)?,
        principal: r.try_get(1)?,
        created_by: r.try_get(2)?,
        for_user: r.try_get(3)?,
        uses_allowed: r.try_get(4)?,
        uses: r.try_get(5)?,
        expires_ts: r.try_get(6)?,
        revoked: r.try_get::<_, i64>(7)? != 0,
        created_ts: r.try_get(8)?,
    })
}

fn redemption_row(r: &Row) -> PgResult<LineInviteRedemption> {
    Ok(LineInviteRedemption {
        code: r.try_get(0)?,
        user_id: r.try_get(1)?,
        ts: r.try_get(2)?,
    })
}

fn line_row(r: &Row) -> PgResult<LineRow> {
    Ok(LineRow {
        principal_a: r.try_get(0)?,
        principal_b: r.try_get(1)?,
        room_id: r.try_get(2)?,
        created_ts: r.try_get(3)?,
    })
}

fn audit_row(r: &Row) -> PgResult<AuditRow> {
    Ok(AuditRow {
        seq: r.try_get(0)?,
        ts: r.try_get(1)?,
        actor: r.try_get(2)?,
        action: r.try_get(3)?,
        subject: r.try_get(4)?,
        detail: r.try_get(5)?,
    })
}

impl IdentityStore for PostgresStore {
    fn get_official(&self, user_id: &str) -> Result<Option<OfficialRow>> {
        self.query_one(
            concat!(
                "SELECT ",
                official_cols!(),
                " FROM officials WHERE user_id = $1"
            ),
            &[&user_id],
            official_row,
        )
    }

    fn list_officials(&self) -> Result<Vec<OfficialRow>> {
        self.query_all(
            concat!(
                "SELECT ",
                official_cols!(),
                r#" FROM officials ORDER BY user_id COLLATE "C""#
            ),
            &[],
            official_row,
        )
    }

    fn official_by_enrol_code(&self, code_hash: &str) -> Result<Option<OfficialRow>> {
        self.query_one(
            concat!(
                "SELECT ",
                official_cols!(),
                " FROM officials WHERE enrol_code_hash = $1"
            ),
            &[&code_hash],
            official_row,
        )
    }

    fn list_attestations(&self) -> Result<Vec<AttestationRow>> {
        self.query_all(
            concat!(
                "SELECT ",
                attestation_cols!(),
                r#" FROM attestations ORDER BY user_id COLLATE "C""#
            ),
            &[],
            attestation_row,
        )
    }

    fn get_attestation(&self, user_id: &str) -> Result<Option<AttestationRow>> {
        self.query_one(
            concat!(
                "SELECT ",
                attestation_cols!(),
                " FROM attestations WHERE user_id = $1"
            ),
            &[&user_id],
            attestation_row,
        )
    }

    fn get_line_invite(&self, code: &str) -> Result<Option<LineInviteRow>> {
        self.query_one(
            concat!(
                "SELECT ",
                invite_cols!(),
                " FROM line_invites WHERE code = $1"
            ),
            &[&code],
            invite_row,
        )
    }

    fn line_invites_of(&self, principal: &str) -> Result<Vec<LineInviteRow>> {
        self.query_all(
            concat!(
                "SELECT ",
                invite_cols!(),
                " FROM line_invites WHERE principal = $1 ORDER BY created_ts DESC"
            ),
            &[&principal],
            invite_row,
        )
    }

    fn line_invite_redemptions_of(&self, principal: &str) -> Result<Vec<LineInviteRedemption>> {
        self.query_all(
            r#"SELECT r.code, r.user_id, r.ts FROM line_invite_redemptions r
               JOIN line_invites i ON i.code = r.code WHERE i.principal = $1
               ORDER BY r.ts, r.user_id COLLATE "C""#,
            &[&principal],
            redemption_row,
        )
    }

    fn get_line(&self, a: &str, b: &str) -> Result<Option<LineRow>> {
        // The pair is stored ordered by bytes (Rust's `str` order, which
        // the writers use), so it is ordered here the same way, not by SQL.
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        self.query_one(
            "SELECT principal_a, principal_b, room_id, created_ts FROM lines WHERE principal_a = $1 AND principal_b = $2",
            &[&a, &b],
            line_row,
        )
    }

    fn lines_of(&self, principal: &str) -> Result<Vec<LineRow>> {
        self.query_all(
            "SELECT principal_a, principal_b, room_id, created_ts FROM lines WHERE principal_a = $1 OR principal_b = $1 ORDER BY created_ts",
            &[&principal],
            line_row,
        )
    }

    fn audit_log(&self) -> Result<Vec<AuditRow>> {
        self.query_all(
            "SELECT seq, ts, actor, action, subject, detail FROM audit_log ORDER BY seq",
            &[],
            audit_row,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::block_on;
    use super::super::tests::fresh_store;
    use super::*;

    fn s(x: &str) -> String {
        x.to_owned()
    }

    async fn write(store: &PostgresStore, ops: Vec<WriteOp>) -> Result<Committed> {
        store.write(WriteBatch { ops }).await
    }

    fn official(user_id: &str, name: &str, code_hash: Option<&str>) -> OfficialRow {
        OfficialRow {
            user_id: s(user_id),
            name: s(name),
            title: s("Minister"),
            country: s("XX"),
            office: s("Foreign Affairs"),
            role: s("principal"),
            principal: None,
            skeleton: name.to_lowercase(),
            enrol_code_hash: code_hash.map(s),
            enrol_expires_ts: code_hash.map(|_| 5_000),
            enrolled_ts: None,
            created_ts: 1_000,
        }
    }

    fn invite(
        code: &str,
        principal: &str,
        uses_allowed: Option<i64>,
        expires_ts: Option<i64>,
        created_ts: i64,
    ) -> LineInviteRow {
        LineInviteRow {
            code: s(code),
            principal: s(principal),
            created_by: s("@aide:x"),
            for_user: None,
            uses_allowed,
            uses: 0,
            expires_ts,
            revoked: false,
            created_ts,
        }
    }

    fn redeem(code: &str, now_ms: i64, redeemer: &str) -> WriteOp {
        WriteOp::UseLineInvite {
            code: s(code),
            now_ms,
            redeemer: s(redeemer),
        }
    }

    fn audit(action: &str) -> WriteOp {
        WriteOp::AppendAudit(AuditRow {
            seq: 0,
            ts: 7,
            actor: s("@a:x"),
            action: s(action),
            subject: s("@b:x"),
            detail: s("{}"),
        })
    }

    fn line(a: &str, b: &str, room: &str) -> WriteOp {
        WriteOp::PutLine(LineRow {
            principal_a: s(a),
            principal_b: s(b),
            room_id: s(room),
            created_ts: 9,
        })
    }

    fn is_conflict<T: std::fmt::Debug>(r: Result<T>) -> bool {
        matches!(r, Err(StoreError::Conflict(_)))
    }

    #[tokio::test]
    async fn an_official_is_replaced_whole_and_found_by_id_or_enrolment_code() {
        let store = fresh_store();
        let mut aide = official("@aide:x", "Aide", None);
        aide.role = s("aide");
        aide.principal = Some(s("@min:x"));
        write(
            &store,
            vec![
                WriteOp::PutOfficial(official("@min:x", "Minister", Some("hash1"))),
                WriteOp::PutOfficial(aide),
                WriteOp::PutOfficial(official("@Zed:x", "Zed", None)),
            ],
        )
        .await
        .unwrap();
        let o = store.get_official("@aide:x").unwrap().unwrap();
        assert_eq!(
            (
                o.role.as_str(),
                o.principal.as_deref(),
                o.enrol_code_hash.as_deref()
            ),
            ("aide", Some("@min:x"), None)
        );
        let o = store.official_by_enrol_code("hash1").unwrap().unwrap();
        assert_eq!(
            (o.user_id.as_str(), o.enrol_expires_ts, o.enrolled_ts),
            ("@min:x", Some(5_000), None)
        );
        assert_eq!(o.created_ts, 1_000);
        assert_eq!(o.skeleton, "minister");

        // Enrolment redeems the code: the row is replaced, the code gone.
        let mut enrolled = official("@min:x", "Minister", None);
        enrolled.enrolled_ts = Some(2_000);
        write(&store, vec![WriteOp::PutOfficial(enrolled)])
            .await
            .unwrap();
        assert!(store.official_by_enrol_code("hash1").unwrap().is_none());
        let o = store.get_official("@min:x").unwrap().unwrap();
        assert_eq!((o.enrolled_ts, o.enrol_expires_ts), (Some(2_000), None));
        assert!(store.get_official("@nobody:x").unwrap().is_none());

        // By user id, in byte order (upper case before lower case).
        let ids: Vec<String> = store
            .list_officials()
            .unwrap()
            .into_iter()
            .map(|o| o.user_id)
            .collect();
        assert_eq!(ids, vec![s("@Zed:x"), s("@aide:x"), s("@min:x")]);
        store.close();
    }

    #[tokio::test]
    async fn an_attestation_is_replaced_by_a_new_one_and_a_revoked_one_is_still_read() {
        let store = fresh_store();
        let att = |u: &str, json: &str, issued| {
            WriteOp::PutAttestation(AttestationRow {
                user_id: s(u),
                json: s(json),
                issued_ts: issued,
                revoked_ts: None,
            })
        };
        write(
            &store,
            vec![
                att("@b:x", "{b}", 1),
                att("@B:x", "{B}", 1),
                att("@a:x", "{a}", 1),
            ],
        )
        .await
        .unwrap();
        write(
            &store,
            vec![WriteOp::RevokeAttestation {
                user_id: s("@a:x"),
                ts: 50,
            }],
        )
        .await
        .unwrap();
        let a = store.get_attestation("@a:x").unwrap().unwrap();
        assert_eq!(
            (a.json.as_str(), a.issued_ts, a.revoked_ts),
            ("{a}", 1, Some(50))
        );
        // A new attestation replaces the revoked one whole.
        write(&store, vec![att("@a:x", "{a2}", 60)]).await.unwrap();
        let a = store.get_attestation("@a:x").unwrap().unwrap();
        assert_eq!(
            (a.json.as_str(), a.issued_ts, a.revoked_ts),
            ("{a2}", 60, None)
        );
        assert!(store.get_attestation("@c:x").unwrap().is_none());
        let ids: Vec<String> = store
            .list_attestations()
            .unwrap()
            .into_iter()
            .map(|a| a.user_id)
            .collect();
        assert_eq!(ids, vec![s("@B:x"), s("@a:x"), s("@b:x")]);
        store.close();
    }

    #[tokio::test]
    async fn a_line_invite_is_read_back_whole_and_listed_newest_first() {
        let store = fresh_store();
        let mut full = invite("c1", "@min:x", Some(3), Some(9_000), 10);
        full.for_user = Some(s("@guest:x"));
        write(
            &store,
            vec![
                WriteOp::PutLineInvite(full),
                WriteOp::PutLineInvite(invite("c2", "@min:x", None, None, 30)),
                WriteOp::PutLineInvite(invite("c3", "@min:x", None, None, 20)),
                WriteOp::PutLineInvite(invite("c4", "@other:x", None, None, 40)),
            ],
        )
        .await
        .unwrap();
        let i = store.get_line_invite("c1").unwrap().unwrap();
        assert_eq!(i.principal, "@min:x");
        assert_eq!(i.created_by, "@aide:x");
        assert_eq!(i.for_user.as_deref(), Some("@guest:x"));
        assert_eq!(
            (
                i.uses_allowed,
                i.uses,
                i.expires_ts,
                i.revoked,
                i.created_ts
            ),
            (Some(3), 0, Some(9_000), false, 10)
        );
        assert!(store.get_line_invite("nope").unwrap().is_none());
        let codes: Vec<String> = store
            .line_invites_of("@min:x")
            .unwrap()
            .into_iter()
            .map(|i| i.code)
            .collect();
        assert_eq!(codes, vec![s("c2"), s("c3"), s("c1")]);
        // A code is unique.
        assert!(is_conflict(
            write(
                &store,
                vec![WriteOp::PutLineInvite(invite("c1", "@x:x", None, None, 1))]
            )
            .await
        ));
        assert_eq!(
            store.get_line_invite("c1").unwrap().unwrap().principal,
            "@min:x"
        );
        store.close();
    }

    #[tokio::test]
    async fn redeeming_counts_a_use_and_records_the_redeemer_until_the_invite_is_used_up() {
        let store = fresh_store();
        write(
            &store,
            vec![WriteOp::PutLineInvite(invite(
                "c1",
                "@min:x",
                Some(2),
                None,
                1,
            ))],
        )
        .await
        .unwrap();
        write(&store, vec![redeem("c1", 100, "@b:x")])
            .await
            .unwrap();
        write(&store, vec![redeem("c1", 50, "@a:x")]).await.unwrap();
        assert_eq!(store.get_line_invite("c1").unwrap().unwrap().uses, 2);
        // Used up: a conflict, and nothing else of the batch is kept.
        let r = write(
            &store,
            vec![audit("before"), redeem("c1", 200, "@c:x"), audit("after")],
        )
        .await;
        assert!(is_conflict(r));
        assert_eq!(store.get_line_invite("c1").unwrap().unwrap().uses, 2);
        assert!(store.audit_log().unwrap().is_empty());
        // Oldest first, then by user.
        assert_eq!(
            store.line_invite_redemptions_of("@min:x").unwrap(),
            vec![
                LineInviteRedemption {
                    code: s("c1"),
                    user_id: s("@a:x"),
                    ts: 50
                },
                LineInviteRedemption {
                    code: s("c1"),
                    user_id: s("@b:x"),
                    ts: 100
                },
            ]
        );
        assert!(store
            .line_invite_redemptions_of("@other:x")
            .unwrap()
            .is_empty());
        store.close();
    }

    #[tokio::test]
    async fn a_second_redemption_by_the_same_user_counts_but_keeps_the_first_record() {
        let store = fresh_store();
        write(
            &store,
            vec![WriteOp::PutLineInvite(invite(
                "c1", "@min:x", None, None, 1,
            ))],
        )
        .await
        .unwrap();
        write(&store, vec![redeem("c1", 10, "@a:x")]).await.unwrap();
        write(&store, vec![redeem("c1", 20, "@a:x")]).await.unwrap();
        assert_eq!(store.get_line_invite("c1").unwrap().unwrap().uses, 2);
        assert_eq!(
            store.line_invite_redemptions_of("@min:x").unwrap(),
            vec![LineInviteRedemption {
                code: s("c1"),
                user_id: s("@a:x"),
                ts: 10
            }]
        );
        store.close();
    }

    #[tokio::test]
    async fn a_revoked_expired_or_unknown_invite_cannot_be_redeemed() {
        let store = fresh_store();
        write(
            &store,
            vec![
                WriteOp::PutLineInvite(invite("revoked", "@min:x", None, None, 1)),
                WriteOp::PutLineInvite(invite("expiring", "@min:x", None, Some(1_000), 1)),
                WriteOp::RevokeLineInvite { code: s("revoked") },
            ],
        )
        .await
        .unwrap();
        assert!(store.get_line_invite("revoked").unwrap().unwrap().revoked);
        assert!(is_conflict(
            write(&store, vec![redeem("revoked", 10, "@a:x")]).await
        ));
        // Expired at its expiry time.
        assert!(is_conflict(
            write(&store, vec![redeem("expiring", 1_000, "@a:x")]).await
        ));
        assert!(is_conflict(
            write(&store, vec![redeem("unknown", 10, "@a:x")]).await
        ));
        for code in ["revoked", "expiring"] {
            assert_eq!(store.get_line_invite(code).unwrap().unwrap().uses, 0);
        }
        assert!(store
            .line_invite_redemptions_of("@min:x")
            .unwrap()
            .is_empty());
        // Just before its expiry it still works.
        write(&store, vec![redeem("expiring", 999, "@a:x")])
            .await
            .unwrap();
        assert_eq!(store.get_line_invite("expiring").unwrap().unwrap().uses, 1);
        store.close();
    }

    #[tokio::test]
    async fn a_failed_redemption_fails_alone_in_its_group() {
        let store = fresh_store();
        write(
            &store,
            vec![WriteOp::PutLineInvite(invite(
                "c1",
                "@min:x",
                Some(1),
                None,
                1,
            ))],
        )
        .await
        .unwrap();
        // Submitted together, likely committed as one group: the second
        // redeem of a one-use invite fails, the others commit.
        let a = store.write(WriteBatch {
            ops: vec![redeem("c1", 10, "@a:x"), audit("a")],
        });
        let b = store.write(WriteBatch {
            ops: vec![redeem("c1", 11, "@b:x"), audit("b")],
        });
        let c = store.write(WriteBatch {
            ops: vec![audit("c")],
        });
        assert!(a.await.is_ok());
        assert!(is_conflict(b.await));
        assert!(c.await.is_ok());
        let actions: Vec<String> = store
            .audit_log()
            .unwrap()
            .into_iter()
            .map(|a| a.action)
            .collect();
        assert_eq!(actions, vec![s("a"), s("c")]);
        assert_eq!(store.get_line_invite("c1").unwrap().unwrap().uses, 1);
        store.close();
    }

    #[tokio::test]
    async fn a_line_is_found_in_either_order_and_a_second_line_between_the_same_principals_conflicts(
    ) {
        let store = fresh_store();
        // Callers order the pair by bytes: "@Z" < "@a".
        write(&store, vec![line("@Z:x", "@a:x", "!r1:x")])
            .await
            .unwrap();
        for (a, b) in [("@Z:x", "@a:x"), ("@a:x", "@Z:x")] {
            let l = store.get_line(a, b).unwrap().unwrap();
            assert_eq!(
                (
                    l.principal_a.as_str(),
                    l.principal_b.as_str(),
                    l.room_id.as_str(),
                    l.created_ts
                ),
                ("@Z:x", "@a:x", "!r1:x", 9)
            );
        }
        assert!(store.get_line("@a:x", "@b:x").unwrap().is_none());
        let r = write(&store, vec![audit("x"), line("@Z:x", "@a:x", "!r2:x")]).await;
        assert!(is_conflict(r));
        assert_eq!(
            store.get_line("@a:x", "@Z:x").unwrap().unwrap().room_id,
            "!r1:x"
        );
        assert!(store.audit_log().unwrap().is_empty());
        store.close();
    }

    #[tokio::test]
    async fn an_audit_entry_beside_a_first_time_statement_leaves_no_gap() {
        let store = fresh_store();
        // The key change's statement is prepared for the first time on the
        // writer's connection: a pipeline would lose its order and run
        // again, after the audit entry had taken its number.
        let first = WriteOp::KeyChange {
            user_id: "@a:x".into(),
        };
        write(&store, vec![first, audit("one")]).await.unwrap();
        write(&store, vec![audit("two")]).await.unwrap();
        let seqs: Vec<i64> = store.audit_log().unwrap().iter().map(|a| a.seq).collect();
        assert_eq!(seqs, [1, 2]);
        store.close();
    }

    #[tokio::test]
    async fn the_audit_log_numbers_entries_in_order_and_refuses_updates_and_deletes() {
        let store = fresh_store();
        write(&store, vec![audit("one"), audit("two")])
            .await
            .unwrap();
        write(&store, vec![audit("three")]).await.unwrap();
        let log = store.audit_log().unwrap();
        let got: Vec<(i64, String)> = log.iter().map(|a| (a.seq, a.action.clone())).collect();
        assert_eq!(got, vec![(1, s("one")), (2, s("two")), (3, s("three"))]);
        let a = &log[0];
        assert_eq!(
            (
                a.ts,
                a.actor.as_str(),
                a.subject.as_str(),
                a.detail.as_str()
            ),
            (7, "@a:x", "@b:x", "{}")
        );
        // Append-only, whoever asks: the table's triggers refuse the rest.
        let conn = store.reader();
        for sql in [
            "UPDATE audit_log SET action = 'forged'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ] {
            let err = block_on(conn.batch(sql)).unwrap_err();
            assert!(
                err.to_string().contains("append-only")
                    || format!("{err:?}").contains("append-only"),
                "{sql}: {err:?}"
            );
        }
        assert_eq!(store.audit_log().unwrap().len(), 3);
        store.close();
    }
}
