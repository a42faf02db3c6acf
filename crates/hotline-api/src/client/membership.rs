//! Membership: invite, join, knock, leave, kick, ban, unban, forget.

use axum::extract::State;
use axum::Json;
use ruma::{OwnedRoomId, OwnedRoomOrAliasId, OwnedUserId};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::extract::{repeated_query, Auth, JsonBody, PathArgs};
use crate::{ApiResult, AppState};

#[derive(Deserialize)]
pub struct TargetBody {
    user_id: OwnedUserId,
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct ReasonBody {
    reason: Option<String>,
}

/// `POST /rooms/{roomId}/invite`.
pub async fn invite_user_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room): PathArgs<OwnedRoomId>,
    JsonBody(b): JsonBody<TargetBody>,
) -> ApiResult<Json<Value>> {
    s.services
        .invite(&sender.user_id, &room, &b.user_id, b.reason)
        .await?;
    Ok(Json(json!({})))
}

/// `POST /rooms/{roomId}/join`.
pub async fn join_room_by_id_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room): PathArgs<OwnedRoomId>,
    JsonBody(b): JsonBody<ReasonBody>,
) -> ApiResult<Json<Value>> {
    s.services.join(&sender.user_id, &room, b.reason).await?;
    Ok(Json(json!({ "room_id": room })))
}

/// `POST /join/{roomIdOrAlias}`.
pub async fn join_room_by_id_or_alias_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room): PathArgs<OwnedRoomOrAliasId>,
    uri: axum::http::Uri,
    JsonBody(b): JsonBody<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let (room_id, via) = servers_for(&s, &room, &uri).await?;
    s.services
        .join_via(&sender.user_id, &room_id, b.reason, &via)
        .await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// `POST /knock/{roomIdOrAlias}`.
pub async fn knock_room_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room): PathArgs<OwnedRoomOrAliasId>,
    uri: axum::http::Uri,
    JsonBody(b): JsonBody<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let (room_id, via) = servers_for(&s, &room, &uri).await?;
    s.services
        .knock(&sender.user_id, &room_id, b.reason, &via)
        .await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// The room a join or knock names, and the servers to reach it through:
/// those the client names first (`via`, or `server_name` as before), then
/// those the alias's server gave.
async fn servers_for(
    s: &AppState,
    room: &OwnedRoomOrAliasId,
    uri: &axum::http::Uri,
) -> ApiResult<(OwnedRoomId, Vec<ruma::OwnedServerName>)> {
    let (room_id, mut via) = s.services.resolve_room_anywhere(room).await?;
    let mut asked = repeated_query(uri.query(), "via")?;
    asked.extend(repeated_query(uri.query(), "server_name")?);
    via.splice(
        0..0,
        asked
            .into_iter()
            .filter_map(|v| ruma::OwnedServerName::try_from(v).ok()),
    );
    Ok((room_id, via))
}

/// `POST /rooms/{roomId}/leave`.
pub async fn leave_room_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room): PathArgs<OwnedRoomId>,
    JsonBody(b): JsonBody<ReasonBody>,
) -> ApiResult<Json<Value>> {
    s.services.leave(&sender.user_id, &room, b.reason).await?;
    Ok(Json(json!({})))
}

/// `POST /rooms/{roomId}/kick`.
pub async fn kick_user_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room): PathArgs<OwnedRoomId>,
    JsonBody(b): JsonBody<TargetBody>,
) -> ApiResult<Json<Value>> {
    s.services
        .kick(&sender.user_id, &room, &b.user_id, b.reason)
        .await?;
    Ok(Json(json!({})))
}

/// `POST /rooms/{roomId}/ban`.
pub async fn ban_user_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room): PathArgs<OwnedRoomId>,
    JsonBody(b): JsonBody<TargetBody>,
) -> ApiResult<Json<Value>> {
    s.services
        .ban(&sender.user_id, &room, &b.user_id, b.reason)
        .await?;
    Ok(Json(json!({})))
}

/// `POST /rooms/{roomId}/unban`.
pub async fn unban_user_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room): PathArgs<OwnedRoomId>,
    JsonBody(b): JsonBody<TargetBody>,
) -> ApiResult<Json<Value>> {
    s.services
        .unban(&sender.user_id, &room, &b.user_id, b.reason)
        .await?;
    Ok(Json(json!({})))
}

/// `POST /rooms/{roomId}/forget`.
pub async fn forget_room_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room): PathArgs<OwnedRoomId>,
) -> ApiResult<Json<Value>> {
    s.services.forget(&sender.user_id, &room).await?;
    Ok(Json(json!({})))
}
