//! Official identity in SQLite: officials and their enrolment, attestations,
//! line invites and their redemptions, lines, and the append-only audit log.

use rusqlite::{params, Connection, Row};

use super::{refused, SqliteStore};
use crate::*;

// ----- writes -----

pub(super) fn put_official(c: &Connection, o: &OfficialRow) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO officials (user_id, name, title, country, office, role, principal, skeleton, enrol_code_hash, enrol_expires_ts, enrolled_ts, created_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![o.user_id, o.name, o.title, o.country, o.office, o.role, o.principal, o.skeleton, o.enrol_code_hash, o.enrol_expires_ts, o.enrolled_ts, o.created_ts])?;
    Ok(())
}

pub(super) fn put_attestation(c: &Connection, a: &AttestationRow) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO attestations (user_id, json, issued_ts, revoked_ts) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![a.user_id, a.json, a.issued_ts, a.revoked_ts])?;
    Ok(())
}

pub(super) fn revoke_attestation(c: &Connection, user_id: &str, ts: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE attestations SET revoked_ts = ?2 WHERE user_id = ?1")?
        .execute(params![user_id, ts])?;
    Ok(())
}

pub(super) fn put_line_invite(c: &Connection, i: &LineInviteRow) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO line_invites (code, principal, created_by, for_user, uses_allowed, uses, expires_ts, revoked, created_ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![i.code, i.principal, i.created_by, i.for_user, i.uses_allowed, i.uses, i.expires_ts, i.revoked, i.created_ts])?;
    Ok(())
}

/// Counts a use of the invite and records who redeemed it, or fails the
/// batch as a conflict if the invite is revoked, used up or expired.
pub(super) fn use_line_invite(
    c: &Connection,
    code: &str,
    now_ms: i64,
    redeemer: &str,
) -> rusqlite::Result<()> {
    let counted = c
        .prepare_cached(
            "UPDATE line_invites SET uses = uses + 1 WHERE code = ?1 AND revoked = 0
             AND (uses_allowed IS NULL OR uses < uses_allowed)
             AND (expires_ts IS NULL OR expires_ts > ?2)",
        )?
        .execute(params![code, now_ms])?;
    if counted == 0 {
        return Err(refused("line invite revoked, used up or expired"));
    }
    c.prepare_cached(
        "INSERT OR IGNORE INTO line_invite_redemptions (code, user_id, ts) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![code, redeemer, now_ms])?;
    Ok(())
}

pub(super) fn revoke_line_invite(c: &Connection, code: &str) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE line_invites SET revoked = 1 WHERE code = ?1")?
        .execute(params![code])?;
    Ok(())
}

pub(super) fn put_line(c: &Connection, l: &LineRow) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO lines (principal_a, principal_b, room_id, created_ts) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        l.principal_a,
        l.principal_b,
        l.room_id,
        l.created_ts
    ])?;
    Ok(())
}

pub(super) fn append_audit(c: &Connection, a: &AuditRow) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO audit_log (ts, actor, action, subject, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![a.ts, a.actor, a.action, a.subject, a.detail])?;
    Ok(())
}

// ----- row mappers -----

const OFFICIAL_COLS: &str = "user_id, name, title, country, office, role, principal, skeleton, enrol_code_hash, enrol_expires_ts, enrolled_ts, created_ts";

fn official_row(r: &Row<'_>) -> rusqlite::Result<OfficialRow> {
    Ok(OfficialRow {
        user_id: r.get(0)?,
        name: r.get(1)?,
        title: r.get(2)?,
        country: r.get(3)?,
        office: r.get(4)?,
        role: r.get(5)?,
        principal: r.get(6)?,
        skeleton: r.get(7)?,
        enrol_code_hash: r.get(8)?,
        enrol_expires_ts: r.get(9)?,
        enrolled_ts: r.get(10)?,
        created_ts: r.get(11)?,
    })
}

const ATTESTATION_COLS: &str = "user_id, json, issued_ts, revoked_ts";

fn attestation_row(r: &Row<'_>) -> rusqlite::Result<AttestationRow> {
    Ok(AttestationRow {
        user_id: r.get(0)?,
        json: r.get(1)?,
        issued_ts: r.get(2)?,
        revoked_ts: r.get(3)?,
    })
}

const INVITE_COLS: &str =
    "code, principal, created_by, for_user, uses_allowed, uses, expires_ts, revoked, created_ts";

fn invite_row(r: &Row<'_>) -> rusqlite::Result<LineInviteRow> {
    Ok(LineInviteRow {
        code: r.get(0)?,
        principal: r.get(1)?,
        created_by: r.get(2)?,
        for_user: r.get(3)?,
        uses_allowed: r.get(4)?,
        uses: r.get(5)?,
        expires_ts: r.get(6)?,
        revoked: r.get(7)?,
        created_ts: r.get(8)?,
    })
}

fn redemption_row(r: &Row<'_>) -> rusqlite::Result<LineInviteRedemption> {
    Ok(LineInviteRedemption {
        code: r.get(0)?,
        user_id: r.get(1)?,
        ts: r.get(2)?,
    })
}

fn line_row(r: &Row<'_>) -> rusqlite::Result<LineRow> {
    Ok(LineRow {
        principal_a: r.get(0)?,
        principal_b: r.get(1)?,
        room_id: r.get(2)?,
        created_ts: r.get(3)?,
    })
}

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        seq: r.get(0)?,
        ts: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        subject: r.get(4)?,
        detail: r.get(5)?,
    })
}

// ----- reads -----

impl IdentityStore for SqliteStore {
    fn get_official(&self, user_id: &str) -> Result<Option<OfficialRow>> {
        self.query_one(
            &format!("SELECT {OFFICIAL_COLS} FROM officials WHERE user_id = ?1"),
            params![user_id],
            official_row,
        )
    }

    fn list_officials(&self) -> Result<Vec<OfficialRow>> {
        self.query_all(
            &format!("SELECT {OFFICIAL_COLS} FROM officials ORDER BY user_id"),
            params![],
            official_row,
        )
    }

    fn official_by_enrol_code(&self, code_hash: &str) -> Result<Option<OfficialRow>> {
        self.query_one(
            &format!("SELECT {OFFICIAL_COLS} FROM officials WHERE enrol_code_hash = ?1"),
            params![code_hash],
            official_row,
        )
    }

    fn list_attestations(&self) -> Result<Vec<AttestationRow>> {
        self.query_all(
            &format!("SELECT {ATTESTATION_COLS} FROM attestations ORDER BY user_id"),
            params![],
            attestation_row,
        )
    }

    fn get_attestation(&self, user_id: &str) -> Result<Option<AttestationRow>> {
        self.query_one(
            &format!("SELECT {ATTESTATION_COLS} FROM attestations WHERE user_id = ?1"),
            params![user_id],
            attestation_row,
        )
    }

    fn get_line_invite(&self, code: &str) -> Result<Option<LineInviteRow>> {
        self.query_one(
            &format!("SELECT {INVITE_COLS} FROM line_invites WHERE code = ?1"),
            params![code],
            invite_row,
        )
    }

    fn line_invites_of(&self, principal: &str) -> Result<Vec<LineInviteRow>> {
        self.query_all(
            &format!(
                "SELECT {INVITE_COLS} FROM line_invites WHERE principal = ?1 ORDER BY created_ts DESC"
            ),
            params![principal],
            invite_row,
        )
    }

    fn line_invite_redemptions_of(&self, principal: &str) -> Result<Vec<LineInviteRedemption>> {
        self.query_all(
            "SELECT r.code, r.user_id, r.ts FROM line_invite_redemptions r
             JOIN line_invites i ON i.code = r.code WHERE i.principal = ?1 ORDER BY r.ts, r.user_id",
            params![principal],
            redemption_row,
        )
    }

    fn get_line(&self, a: &str, b: &str) -> Result<Option<LineRow>> {
        // Stored with the principals in order.
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        self.query_one(
            "SELECT principal_a, principal_b, room_id, created_ts FROM lines WHERE principal_a = ?1 AND principal_b = ?2",
            params![a, b],
            line_row,
        )
    }

    fn lines_of(&self, principal: &str) -> Result<Vec<LineRow>> {
        self.query_all(
            "SELECT principal_a, principal_b, room_id, created_ts FROM lines WHERE principal_a = ?1 OR principal_b = ?1 ORDER BY created_ts",
            params![principal],
            line_row,
        )
    }

    fn audit_log(&self) -> Result<Vec<AuditRow>> {
        self.query_all(
            "SELECT seq, ts, actor, action, subject, detail FROM audit_log ORDER BY seq",
            params![],
            audit_row,
        )
    }
}
