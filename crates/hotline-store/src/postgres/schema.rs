//! Versioned migrations, run at start.
//!
//! `schema_migrations` records each version applied. A start takes a
//! transaction-scoped advisory lock first, so processes starting together
//! migrate once, one after the other; each migration runs in one
//! transaction with its record. A migration is never edited once released:
//! a change is a new entry at the end of [`MIGRATIONS`].
//!
//! Columns are those of the SQLite schema (`../schema.sql`), with integers as
//! `BIGINT` (every integer the store reads is an `i64`) and the stream's
//! high-water mark in its own one-row table, which orders commits across
//! processes (see the module docs of `postgres`).

use super::{engine, Conn};
use crate::Result;

/// The advisory lock key of migrations (any constant shared by processes).
const MIGRATION_LOCK: i64 = 0x686f_746c_696e_65; // "hotline"

/// `(version, SQL)`, in order.
pub(crate) const MIGRATIONS: &[(i64, &str)] =
    &[(1, V1), (2, V2), (3, V3), (4, V4), (5, V5), (6, V6)];

const V1: &str = r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- The stream's high-water mark and the number of the last commit: one row,
-- locked by each commit (module docs of `postgres`).
CREATE TABLE stream_position (
  only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row), pos BIGINT NOT NULL,
  commit_seq BIGINT NOT NULL DEFAULT 0);
INSERT INTO stream_position (pos) VALUES (0);
-- Each commit's batches, for the other server processes to replay into
-- their caches (`postgres/replay.rs`); pruned after a few minutes.
CREATE TABLE commit_log (
  seq BIGINT PRIMARY KEY, origin TEXT NOT NULL, ts BIGINT NOT NULL, batches TEXT NOT NULL);
CREATE TABLE users (
  user_id TEXT PRIMARY KEY, password_hash TEXT, displayname TEXT, avatar_url TEXT,
  created_ts BIGINT NOT NULL, deactivated BIGINT NOT NULL DEFAULT 0);
CREATE TABLE devices (
  user_id TEXT NOT NULL, device_id TEXT NOT NULL, display_name TEXT,
  last_seen_ts BIGINT, last_seen_ip TEXT, PRIMARY KEY (user_id, device_id));
CREATE TABLE access_tokens (
  token_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL, device_id TEXT NOT NULL);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);
CREATE TABLE registration_tokens (
  token TEXT PRIMARY KEY, uses_allowed BIGINT, completed BIGINT NOT NULL DEFAULT 0, expiry_ts BIGINT);
CREATE TABLE filters (
  user_id TEXT NOT NULL, filter_id TEXT NOT NULL, json TEXT NOT NULL, PRIMARY KEY (user_id, filter_id));
CREATE TABLE rooms (room_id TEXT PRIMARY KEY, room_version TEXT NOT NULL);
CREATE TABLE events (
  pos BIGINT PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, room_id TEXT NOT NULL,
  sender TEXT NOT NULL, event_type TEXT NOT NULL, state_key TEXT, json TEXT NOT NULL,
  redacted_by TEXT, txn_device TEXT, txn_id TEXT);
CREATE INDEX events_room_pos ON events (room_id, pos);
CREATE INDEX events_room_state ON events (room_id, event_type, state_key, pos)
  WHERE state_key IS NOT NULL;
CREATE TABLE txns (
  user_id TEXT NOT NULL, device_id TEXT NOT NULL, txn_id TEXT NOT NULL, event_id TEXT NOT NULL,
  PRIMARY KEY (user_id, device_id, txn_id));
CREATE TABLE room_state (
  room_id TEXT NOT NULL, event_type TEXT NOT NULL, state_key TEXT NOT NULL, event_id TEXT NOT NULL,
  PRIMARY KEY (room_id, event_type, state_key));
CREATE TABLE memberships (
  room_id TEXT NOT NULL, user_id TEXT NOT NULL, membership TEXT NOT NULL, event_id TEXT NOT NULL,
  pos BIGINT NOT NULL, forgotten BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (room_id, user_id));
CREATE INDEX memberships_user ON memberships (user_id);
CREATE TABLE aliases (alias TEXT PRIMARY KEY, room_id TEXT NOT NULL, creator TEXT NOT NULL);
CREATE TABLE account_data (
  user_id TEXT NOT NULL, room_id TEXT NOT NULL, kind TEXT NOT NULL, content TEXT NOT NULL,
  pos BIGINT NOT NULL, PRIMARY KEY (user_id, room_id, kind));
CREATE INDEX account_data_pos ON account_data (user_id, pos);
CREATE TABLE receipts (
  room_id TEXT NOT NULL, user_id TEXT NOT NULL, receipt_type TEXT NOT NULL, thread_id TEXT NOT NULL,
  event_id TEXT NOT NULL, ts BIGINT NOT NULL, pos BIGINT NOT NULL,
  PRIMARY KEY (room_id, user_id, receipt_type, thread_id));
CREATE INDEX receipts_pos ON receipts (room_id, pos);
CREATE TABLE media (
  media_id TEXT PRIMARY KEY, uploader TEXT NOT NULL, content_type TEXT, filename TEXT,
  size BIGINT NOT NULL, created_ts BIGINT NOT NULL);
CREATE TABLE device_keys (
  user_id TEXT NOT NULL, device_id TEXT NOT NULL, json TEXT NOT NULL, PRIMARY KEY (user_id, device_id));
CREATE TABLE one_time_keys (
  user_id TEXT NOT NULL, device_id TEXT NOT NULL, key_id TEXT NOT NULL, algorithm TEXT NOT NULL,
  json TEXT NOT NULL, PRIMARY KEY (user_id, device_id, key_id));
CREATE INDEX one_time_keys_alg ON one_time_keys (user_id, device_id, algorithm);
CREATE TABLE fallback_keys (
  user_id TEXT NOT NULL, device_id TEXT NOT NULL, algorithm TEXT NOT NULL, key_id TEXT NOT NULL,
  json TEXT NOT NULL, used BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (user_id, device_id, algorithm));
CREATE TABLE cross_signing_keys (
  user_id TEXT NOT NULL, key_type TEXT NOT NULL, json TEXT NOT NULL, PRIMARY KEY (user_id, key_type));
CREATE TABLE key_signatures (
  target_user TEXT NOT NULL, target_key_id TEXT NOT NULL, signer_user TEXT NOT NULL,
  signer_key_id TEXT NOT NULL, signature TEXT NOT NULL,
  PRIMARY KEY (target_user, target_key_id, signer_user, signer_key_id));
CREATE TABLE key_changes (pos BIGINT PRIMARY KEY, user_id TEXT NOT NULL);
CREATE TABLE to_device (
  pos BIGINT PRIMARY KEY, user_id TEXT NOT NULL, device_id TEXT NOT NULL, json TEXT NOT NULL);
CREATE INDEX to_device_target ON to_device (user_id, device_id, pos);
CREATE TABLE backup_versions (
  user_id TEXT NOT NULL, version BIGINT NOT NULL, algorithm TEXT NOT NULL, auth_data TEXT NOT NULL,
  etag BIGINT NOT NULL DEFAULT 0, deleted BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (user_id, version));
CREATE TABLE backup_keys (
  user_id TEXT NOT NULL, version BIGINT NOT NULL, room_id TEXT NOT NULL, session_id TEXT NOT NULL,
  json TEXT NOT NULL, PRIMARY KEY (user_id, version, room_id, session_id));
CREATE TABLE officials (
  user_id TEXT PRIMARY KEY, name TEXT NOT NULL, title TEXT NOT NULL, country TEXT NOT NULL,
  office TEXT NOT NULL, role TEXT NOT NULL, principal TEXT, skeleton TEXT NOT NULL,
  enrol_code_hash TEXT, enrol_expires_ts BIGINT, enrolled_ts BIGINT, created_ts BIGINT NOT NULL);
CREATE TABLE attestations (
  user_id TEXT PRIMARY KEY, json TEXT NOT NULL, issued_ts BIGINT NOT NULL, revoked_ts BIGINT);
CREATE TABLE line_invites (
  code TEXT PRIMARY KEY, principal TEXT NOT NULL, created_by TEXT NOT NULL, for_user TEXT,
  uses_allowed BIGINT, uses BIGINT NOT NULL DEFAULT 0, expires_ts BIGINT,
  revoked BIGINT NOT NULL DEFAULT 0, created_ts BIGINT NOT NULL);
CREATE INDEX line_invites_principal ON line_invites (principal);
CREATE TABLE line_invite_redemptions (
  code TEXT NOT NULL, user_id TEXT NOT NULL, ts BIGINT NOT NULL, PRIMARY KEY (code, user_id));
CREATE TABLE lines (
  principal_a TEXT NOT NULL, principal_b TEXT NOT NULL, room_id TEXT NOT NULL, created_ts BIGINT NOT NULL,
  PRIMARY KEY (principal_a, principal_b));
-- Append-only: rows are inserted, never updated or deleted. `seq` may be
-- given (a migrated deployment keeps its numbers).
CREATE TABLE audit_log (
  seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, ts BIGINT NOT NULL, actor TEXT NOT NULL,
  action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN RAISE EXCEPTION 'audit log is append-only'; END; $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
CREATE TABLE presence (
  user_id TEXT PRIMARY KEY, state TEXT NOT NULL, status_msg TEXT, last_active_ts BIGINT NOT NULL,
  pos BIGINT NOT NULL);
CREATE TABLE published_rooms (room_id TEXT PRIMARY KEY);
"#;

/// Federation's outgoing queue.
const V2: &str = r#"
CREATE TABLE federation_outbox (
  seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, destination TEXT NOT NULL,
  event_id TEXT NOT NULL);
CREATE INDEX federation_outbox_destination ON federation_outbox (destination, seq);
"#;

/// Other servers' media kept here.
const V3: &str = r#"
CREATE TABLE remote_media (
  origin TEXT NOT NULL, media_id TEXT NOT NULL, content_type TEXT, filename TEXT,
  size BIGINT NOT NULL, fetched_ts BIGINT NOT NULL, PRIMARY KEY (origin, media_id));
"#;

/// Federation's outgoing EDUs, durable like its events.
const V4: &str = r#"
CREATE TABLE federation_edu_outbox (
  seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, destination TEXT NOT NULL,
  edu TEXT NOT NULL);
CREATE INDEX federation_edu_outbox_destination ON federation_edu_outbox (destination, seq);
"#;

/// Events known but outside their room's timeline (a join's auth chain,
/// events fetched to check others, soft-failed events).
const V5: &str = r#"
CREATE TABLE outliers (
  event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, json TEXT NOT NULL);
"#;

/// Pushers (`/pushers/set`) and how far each has delivered.
const V6: &str = r#"
CREATE TABLE pushers (
  user_id TEXT NOT NULL, app_id TEXT NOT NULL, pushkey TEXT NOT NULL, device_id TEXT NOT NULL,
  json TEXT NOT NULL, position BIGINT NOT NULL, PRIMARY KEY (user_id, app_id, pushkey));
"#;

/// Applies the migrations the database lacks.
pub(crate) async fn migrate(c: &mut Conn) -> Result<()> {
    // Session-level: held across the table's creation and every migration.
    c.exec("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(engine)?;
    let out = apply_missing(c).await;
    let _ = c
        .exec("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    out
}

async fn apply_missing(c: &Conn) -> Result<()> {
    c.batch("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_ts BIGINT NOT NULL)")
        .await
        .map_err(engine)?;
    for (version, sql) in MIGRATIONS {
        let done = c
            .opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[version],
            )
            .await
            .map_err(engine)?
            .is_some();
        if done {
            continue;
        }
        let step = async {
            c.batch("BEGIN").await?;
            c.batch(sql).await?;
            c.exec(
                "INSERT INTO schema_migrations (version, applied_ts) VALUES ($1, (extract(epoch FROM now()) * 1000)::BIGINT)",
                &[version],
            )
            .await?;
            c.batch("COMMIT").await
        };
        if let Err(e) = step.await {
            let _ = c.batch("ROLLBACK").await;
            return Err(crate::StoreError::Engine(format!(
                "PostgreSQL schema migration {version}: {e}"
            )));
        }
        tracing::info!(version, "applied PostgreSQL schema migration");
    }
    Ok(())
}
