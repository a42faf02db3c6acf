//! Official identity and lines: officials, attestations, line invites and their redemptions, lines, the audit log.

use super::writer::Applied;
use super::Conn;
use crate::*;

pub(crate) async fn put_official(c: &Conn, o: &OfficialRow) -> Applied {
    todo!()
}

pub(crate) async fn put_attestation(c: &Conn, a: &AttestationRow) -> Applied {
    todo!()
}

pub(crate) async fn revoke_attestation(c: &Conn, user_id: &str, ts: i64) -> Applied {
    todo!()
}

pub(crate) async fn put_line_invite(c: &Conn, i: &LineInviteRow) -> Applied {
    todo!()
}

pub(crate) async fn use_line_invite(c: &Conn, code: &str, now_ms: i64, redeemer: &str) -> Applied {
    todo!()
}

pub(crate) async fn revoke_line_invite(c: &Conn, code: &str) -> Applied {
    todo!()
}

pub(crate) async fn put_line(c: &Conn, l: &LineRow) -> Applied {
    todo!()
}

pub(crate) async fn append_audit(c: &Conn, a: &AuditRow) -> Applied {
    todo!()
}
