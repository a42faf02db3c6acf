//! Reads of Hotline's official identity: officials and their enrolment,
//! attestations, line invites and their redemptions, lines, and the audit
//! log.

use crate::*;

/// Official identity and lines: officials, attestations, line invites,
/// lines, the audit log.
pub trait IdentityStore {
    fn get_official(&self, user_id: &str) -> Result<Option<OfficialRow>>;
    fn list_officials(&self) -> Result<Vec<OfficialRow>>;
    fn official_by_enrol_code(&self, code_hash: &str) -> Result<Option<OfficialRow>>;
    fn list_attestations(&self) -> Result<Vec<AttestationRow>>;
    /// The user's attestation, current or revoked.
    fn get_attestation(&self, user_id: &str) -> Result<Option<AttestationRow>>;
    fn get_line_invite(&self, code: &str) -> Result<Option<LineInviteRow>>;
    fn line_invites_of(&self, principal: &str) -> Result<Vec<LineInviteRow>>;
    /// The redemptions of the invites of `principal`, oldest first.
    fn line_invite_redemptions_of(&self, principal: &str) -> Result<Vec<LineInviteRedemption>>;
    /// The line between two principals, in either order.
    fn get_line(&self, a: &str, b: &str) -> Result<Option<LineRow>>;
    /// Every line `principal` holds, oldest first.
    fn lines_of(&self, principal: &str) -> Result<Vec<LineRow>>;
    fn audit_log(&self) -> Result<Vec<AuditRow>>;
}
