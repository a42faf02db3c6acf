//! Server-side key backup: `/room_keys/version` and `/room_keys/keys`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use hotline_service::backup::{BackupSessions, BackupTally};
use hotline_service::Error;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::extract::{Auth, JsonBody, PathArgs, QueryArgs};
use crate::{ApiResult, AppState};

#[derive(Deserialize)]
pub struct CreateVersionBody {
    algorithm: String,
    auth_data: Value,
}

/// `POST /room_keys/version`.
pub async fn create_backup_version_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    JsonBody(body): JsonBody<CreateVersionBody>,
) -> ApiResult<Json<Value>> {
    let version = s
        .services
        .create_backup_version(sender.user_id.as_str(), body.algorithm, body.auth_data)
        .await?;
    Ok(Json(json!({ "version": version })))
}

/// `GET /room_keys/version`.
pub async fn get_latest_backup_info_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        s.services.get_backup_info(sender.user_id.as_str(), None)?,
    ))
}

/// `GET /room_keys/version/{version}`.
pub async fn get_backup_info_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(version): PathArgs<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(s.services.get_backup_info(
        sender.user_id.as_str(),
        Some(&version),
    )?))
}

/// `PUT /room_keys/version/{version}`.
pub async fn update_backup_version_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(version): PathArgs<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    s.services
        .update_backup_version(sender.user_id.as_str(), &version, &body)
        .await?;
    Ok(Json(json!({})))
}

/// `DELETE /room_keys/version/{version}`.
pub async fn delete_backup_version_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(version): PathArgs<String>,
) -> ApiResult<Json<Value>> {
    s.services
        .delete_backup_version(sender.user_id.as_str(), &version)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct VersionQuery {
    version: String,
}

#[derive(Deserialize)]
pub struct RoomSessions {
    sessions: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
pub struct AllSessions {
    rooms: BTreeMap<String, RoomSessions>,
}

fn tally_json(t: BackupTally) -> Json<Value> {
    Json(json!({ "etag": t.etag, "count": t.count }))
}

/// `PUT /room_keys/keys`.
pub async fn add_backup_keys_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    QueryArgs(q): QueryArgs<VersionQuery>,
    JsonBody(body): JsonBody<AllSessions>,
) -> ApiResult<Json<Value>> {
    let sessions: BackupSessions = body
        .rooms
        .into_iter()
        .map(|(room, r)| (room, r.sessions))
        .collect();
    let t = s
        .services
        .put_backup_keys(sender.user_id.as_str(), &q.version, sessions)
        .await?;
    Ok(tally_json(t))
}

/// `PUT /room_keys/keys/{roomId}`.
pub async fn add_backup_keys_for_room_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room): PathArgs<String>,
    QueryArgs(q): QueryArgs<VersionQuery>,
    JsonBody(body): JsonBody<RoomSessions>,
) -> ApiResult<Json<Value>> {
    let t = s
        .services
        .put_backup_keys(
            sender.user_id.as_str(),
            &q.version,
            BTreeMap::from([(room, body.sessions)]),
        )
        .await?;
    Ok(tally_json(t))
}

/// `PUT /room_keys/keys/{roomId}/{sessionId}`.
pub async fn add_backup_keys_for_session_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((room, session)): PathArgs<(String, String)>,
    QueryArgs(q): QueryArgs<VersionQuery>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let t = s
        .services
        .put_backup_keys(
            sender.user_id.as_str(),
            &q.version,
            BTreeMap::from([(room, BTreeMap::from([(session, body)]))]),
        )
        .await?;
    Ok(tally_json(t))
}

fn rooms_json(rooms: BTreeMap<String, Map<String, Value>>) -> Value {
    let rooms: Map<String, Value> = rooms
        .into_iter()
        .map(|(r, sessions)| (r, json!({ "sessions": sessions })))
        .collect();
    json!({ "rooms": rooms })
}

/// `GET /room_keys/keys`.
pub async fn get_backup_keys_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    QueryArgs(q): QueryArgs<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let rooms = s
        .services
        .get_backup_keys(sender.user_id.as_str(), &q.version, None, None)?;
    Ok(Json(rooms_json(rooms)))
}

/// `GET /room_keys/keys/{roomId}`.
pub async fn get_backup_keys_for_room_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room): PathArgs<String>,
    QueryArgs(q): QueryArgs<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let mut rooms =
        s.services
            .get_backup_keys(sender.user_id.as_str(), &q.version, Some(&room), None)?;
    let sessions = rooms.remove(&room).unwrap_or_default();
    Ok(Json(json!({ "sessions": sessions })))
}

/// `GET /room_keys/keys/{roomId}/{sessionId}`.
pub async fn get_backup_keys_for_session_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((room, session)): PathArgs<(String, String)>,
    QueryArgs(q): QueryArgs<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let mut rooms = s.services.get_backup_keys(
        sender.user_id.as_str(),
        &q.version,
        Some(&room),
        Some(&session),
    )?;
    rooms
        .remove(&room)
        .and_then(|mut r| r.remove(&session))
        .map(Json)
        .ok_or_else(|| Error::not_found("No such session in the backup").into())
}

/// `DELETE /room_keys/keys`.
pub async fn delete_backup_keys_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    QueryArgs(q): QueryArgs<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let t = s
        .services
        .delete_backup_keys(sender.user_id.as_str(), &q.version, None, None)
        .await?;
    Ok(tally_json(t))
}

/// `DELETE /room_keys/keys/{roomId}`.
pub async fn delete_backup_keys_for_room_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room): PathArgs<String>,
    QueryArgs(q): QueryArgs<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let t = s
        .services
        .delete_backup_keys(sender.user_id.as_str(), &q.version, Some(room), None)
        .await?;
    Ok(tally_json(t))
}

/// `DELETE /room_keys/keys/{roomId}/{sessionId}`.
pub async fn delete_backup_keys_for_session_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((room, session)): PathArgs<(String, String)>,
    QueryArgs(q): QueryArgs<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let t = s
        .services
        .delete_backup_keys(
            sender.user_id.as_str(),
            &q.version,
            Some(room),
            Some(session),
        )
        .await?;
    Ok(tally_json(t))
}
