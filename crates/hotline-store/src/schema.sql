-- Hotline SQLite schema. Every statement is idempotent: it runs at each start.
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
  user_id TEXT PRIMARY KEY, password_hash TEXT, displayname TEXT, avatar_url TEXT,
  created_ts INTEGER NOT NULL, deactivated INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS devices (
  user_id TEXT NOT NULL, device_id TEXT NOT NULL, display_name TEXT,
  last_seen_ts INTEGER, last_seen_ip TEXT, PRIMARY KEY (user_id, device_id));
CREATE TABLE IF NOT EXISTS access_tokens (
  token_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL, device_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS access_tokens_device ON access_tokens (user_id, device_id);
CREATE TABLE IF NOT EXISTS registration_tokens (
  token TEXT PRIMARY KEY, uses_allowed INTEGER, completed INTEGER NOT NULL DEFAULT 0, expiry_ts INTEGER);
CREATE TABLE IF NOT EXISTS filters (
  user_id TEXT NOT NULL, filter_id TEXT NOT NULL, json TEXT NOT NULL, PRIMARY KEY (user_id, filter_id));
CREATE TABLE IF NOT EXISTS pushers (
  user_id TEXT NOT NULL, app_id TEXT NOT NULL, pushkey TEXT NOT NULL, device_id TEXT NOT NULL,
  json TEXT NOT NULL, position INTEGER NOT NULL, PRIMARY KEY (user_id, app_id, pushkey));
CREATE TABLE IF NOT EXISTS rooms (room_id TEXT PRIMARY KEY, room_version TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
  pos INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, room_id TEXT NOT NULL,
  sender TEXT NOT NULL, event_type TEXT NOT NULL, state_key TEXT, json TEXT NOT NULL,
  redacted_by TEXT, txn_device TEXT, txn_id TEXT);
CREATE INDEX IF NOT EXISTS events_room_pos ON events (room_id, pos);
-- State events by key, for the state of a room at a past position and the
-- history of one key (a user's memberships, the history visibility).
CREATE INDEX IF NOT EXISTS events_room_state ON events (room_id, event_type, state_key, pos)
  WHERE state_key IS NOT NULL;
-- Events known but outside their room's timeline: a join's auth chain,
-- events fetched to check others, soft-failed events.
CREATE TABLE IF NOT EXISTS outliers (
  event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS txns (
  user_id TEXT NOT NULL, device_id TEXT NOT NULL, txn_id TEXT NOT NULL, event_id TEXT NOT NULL,
  PRIMARY KEY (user_id, device_id, txn_id));
CREATE TABLE IF NOT EXISTS room_state (
  room_id TEXT NOT NULL, event_type TEXT NOT NULL, state_key TEXT NOT NULL, event_id TEXT NOT NULL,
  PRIMARY KEY (room_id, event_type, state_key));
CREATE TABLE IF NOT EXISTS memberships (
  room_id TEXT NOT NULL, user_id TEXT NOT NULL, membership TEXT NOT NULL, event_id TEXT NOT NULL,
  pos INTEGER NOT NULL, forgotten INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (room_id, user_id));
CREATE INDEX IF NOT EXISTS memberships_user ON memberships (user_id);
CREATE TABLE IF NOT EXISTS aliases (alias TEXT PRIMARY KEY, room_id TEXT NOT NULL, creator TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS account_data (
  user_id TEXT NOT NULL, room_id TEXT NOT NULL, kind TEXT NOT NULL, content TEXT NOT NULL,
  pos INTEGER NOT NULL, PRIMARY KEY (user_id, room_id, kind));
CREATE INDEX IF NOT EXISTS account_data_pos ON account_data (user_id, pos);
CREATE TABLE IF NOT EXISTS receipts (
  room_id TEXT NOT NULL, user_id TEXT NOT NULL, receipt_type TEXT NOT NULL, thread_id TEXT NOT NULL,
  event_id TEXT NOT NULL, ts INTEGER NOT NULL, pos INTEGER NOT NULL,
  PRIMARY KEY (room_id, user_id, receipt_type, thread_id));
CREATE INDEX IF NOT EXISTS receipts_pos ON receipts (room_id, pos);
CREATE TABLE IF NOT EXISTS media (
  media_id TEXT PRIMARY KEY, uploader TEXT NOT NULL, content_type TEXT, filename TEXT,
  size INTEGER NOT NULL, created_ts INTEGER NOT NULL);
-- Other servers' media fetched over federation and kept (a cache: the file
-- is fetched again when missing).
CREATE TABLE IF NOT EXISTS remote_media (
  origin TEXT NOT NULL, media_id TEXT NOT NULL, content_type TEXT, filename TEXT,
  size INTEGER NOT NULL, fetched_ts INTEGER NOT NULL, PRIMARY KEY (origin, media_id));
-- End-to-end encryption. Key material is public-key JSON signed by clients;
-- the server stores and serves it as-is and never holds private keys.
CREATE TABLE IF NOT EXISTS device_keys (
  user_id TEXT NOT NULL, device_id TEXT NOT NULL, json TEXT NOT NULL, PRIMARY KEY (user_id, device_id));
CREATE TABLE IF NOT EXISTS one_time_keys (
  user_id TEXT NOT NULL, device_id TEXT NOT NULL, key_id TEXT NOT NULL, algorithm TEXT NOT NULL,
  json TEXT NOT NULL, PRIMARY KEY (user_id, device_id, key_id));
CREATE INDEX IF NOT EXISTS one_time_keys_alg ON one_time_keys (user_id, device_id, algorithm);
CREATE TABLE IF NOT EXISTS fallback_keys (
  user_id TEXT NOT NULL, device_id TEXT NOT NULL, algorithm TEXT NOT NULL, key_id TEXT NOT NULL,
  json TEXT NOT NULL, used INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (user_id, device_id, algorithm));
CREATE TABLE IF NOT EXISTS cross_signing_keys (
  user_id TEXT NOT NULL, key_type TEXT NOT NULL, json TEXT NOT NULL, PRIMARY KEY (user_id, key_type));
CREATE TABLE IF NOT EXISTS key_signatures (
  target_user TEXT NOT NULL, target_key_id TEXT NOT NULL, signer_user TEXT NOT NULL,
  signer_key_id TEXT NOT NULL, signature TEXT NOT NULL,
  PRIMARY KEY (target_user, target_key_id, signer_user, signer_key_id));
CREATE TABLE IF NOT EXISTS key_changes (pos INTEGER PRIMARY KEY, user_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS to_device (
  pos INTEGER PRIMARY KEY, user_id TEXT NOT NULL, device_id TEXT NOT NULL, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS to_device_target ON to_device (user_id, device_id, pos);
CREATE TABLE IF NOT EXISTS backup_versions (
  user_id TEXT NOT NULL, version INTEGER NOT NULL, algorithm TEXT NOT NULL, auth_data TEXT NOT NULL,
  etag INTEGER NOT NULL DEFAULT 0, deleted INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (user_id, version));
CREATE TABLE IF NOT EXISTS backup_keys (
  user_id TEXT NOT NULL, version INTEGER NOT NULL, room_id TEXT NOT NULL, session_id TEXT NOT NULL,
  json TEXT NOT NULL, PRIMARY KEY (user_id, version, room_id, session_id));
-- Official identity and direct lines.
CREATE TABLE IF NOT EXISTS officials (
  user_id TEXT PRIMARY KEY, name TEXT NOT NULL, title TEXT NOT NULL, country TEXT NOT NULL,
  office TEXT NOT NULL, role TEXT NOT NULL, principal TEXT, skeleton TEXT NOT NULL,
  enrol_code_hash TEXT, enrol_expires_ts INTEGER, enrolled_ts INTEGER, created_ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS attestations (
  user_id TEXT PRIMARY KEY, json TEXT NOT NULL, issued_ts INTEGER NOT NULL, revoked_ts INTEGER);
CREATE TABLE IF NOT EXISTS line_invites (
  code TEXT PRIMARY KEY, principal TEXT NOT NULL, created_by TEXT NOT NULL, for_user TEXT,
  uses_allowed INTEGER, uses INTEGER NOT NULL DEFAULT 0, expires_ts INTEGER,
  revoked INTEGER NOT NULL DEFAULT 0, created_ts INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS line_invites_principal ON line_invites (principal);
-- Who redeemed which invite (written with the use it counts).
CREATE TABLE IF NOT EXISTS line_invite_redemptions (
  code TEXT NOT NULL, user_id TEXT NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (code, user_id));
CREATE TABLE IF NOT EXISTS lines (
  principal_a TEXT NOT NULL, principal_b TEXT NOT NULL, room_id TEXT NOT NULL, created_ts INTEGER NOT NULL,
  PRIMARY KEY (principal_a, principal_b));
-- Append-only: rows are inserted, never updated or deleted.
CREATE TABLE IF NOT EXISTS audit_log (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, actor TEXT NOT NULL,
  action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
-- Presence: each user's latest state; `pos` is its place in the sync stream.
CREATE TABLE IF NOT EXISTS presence (
  user_id TEXT PRIMARY KEY, state TEXT NOT NULL, status_msg TEXT, last_active_ts INTEGER NOT NULL,
  pos INTEGER NOT NULL);
-- The published room directory: a room is listed while it has a row here.
CREATE TABLE IF NOT EXISTS published_rooms (room_id TEXT PRIMARY KEY);
-- Federation: events waiting to go to another server, in order per destination.
CREATE TABLE IF NOT EXISTS federation_outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, destination TEXT NOT NULL, event_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS federation_outbox_destination ON federation_outbox (destination, seq);
-- Federation: EDUs (to-device messages, receipts, device-list changes) waiting
-- to go to another server, in order per destination.
CREATE TABLE IF NOT EXISTS federation_edu_outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, destination TEXT NOT NULL, edu TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS federation_edu_outbox_destination ON federation_edu_outbox (destination, seq);
