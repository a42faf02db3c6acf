//! Reads of server-side key backup (the Matrix room-key backup: versions and
//! the sessions backed up in them). Not the database's own backup, which is
//! the SQLite engine's `backup.rs`.

use crate::*;

/// Server-side room-key backup: versions and backed-up sessions.
pub trait KeyBackupStore {
    /// The user's newest key backup version that is not deleted.
    fn latest_backup_version(&self, user_id: &str) -> Result<Option<BackupVersionRow>>;
    /// The highest backup version number ever created (deleted ones included).
    fn max_backup_version(&self, user_id: &str) -> Result<i64>;
    fn get_backup_version(&self, user_id: &str, version: i64) -> Result<Option<BackupVersionRow>>;
    fn count_backup_keys(&self, user_id: &str, version: i64) -> Result<i64>;
    /// Backed-up sessions, optionally of one room or one session.
    fn backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<BackupKeyRow>>;
}
