//! Membership across servers: `make_join` and `send_join` (v2),
//! `make_leave` and `send_leave` (v2), `make_knock` and `send_knock` (v1),
//! answered for the rooms this server is in; invites (v2).

use axum::extract::State;
use axum::Json;
use hotline_service::Error;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId};
use serde_json::{json, Value};

use super::Signed;
use crate::extract::{repeated_query, PathArgs};
use crate::{ApiResult, AppState};

/// The room versions a `make_*` request says its server speaks (`ver`).
fn offered_versions(uri: &axum::http::Uri) -> ApiResult<Vec<RoomVersionId>> {
    Ok(repeated_query(uri.query(), "ver")?
        .into_iter()
        .filter_map(|v| RoomVersionId::try_from(v).ok())
        .collect())
}

/// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`.
pub async fn prepare_join_event_route(
    State(s): State<AppState>,
    PathArgs((room_id, user_id)): PathArgs<(OwnedRoomId, OwnedUserId)>,
    uri: axum::http::Uri,
    signed: Signed,
) -> ApiResult<Json<Value>> {
    let versions = offered_versions(&uri)?;
    let (version, event) = s
        .services
        .make_join(&signed.origin, &room_id, &user_id, &versions)?;
    Ok(Json(json!({ "room_version": version, "event": event })))
}

/// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}[?omit_members=true]`.
pub async fn create_join_event_route(
    State(s): State<AppState>,
    PathArgs((room_id, event_id)): PathArgs<(OwnedRoomId, OwnedEventId)>,
    uri: axum::http::Uri,
    signed: Signed,
) -> ApiResult<Json<Value>> {
    let omit_members = match repeated_query(uri.query(), "omit_members")?
        .last()
        .map(String::as_str)
    {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(Error::invalid_param("omit_members is true or false").into()),
    };
    let pdu = signed.pdu()?;
    let answer = s
        .services
        .send_join(&signed.origin, &room_id, &event_id, &pdu, omit_members)
        .await?;
    let mut body = json!({
        "origin": s.services.server_name(),
        "state": answer.state,
        "auth_chain": answer.auth_chain,
        "event": answer.event,
        "members_omitted": answer.members_omitted,
    });
    if answer.members_omitted {
        body["servers_in_room"] = json!(answer.servers_in_room);
    }
    Ok(Json(body))
}

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`.
pub async fn create_invite_route(
    State(s): State<AppState>,
    PathArgs((room_id, event_id)): PathArgs<(OwnedRoomId, OwnedEventId)>,
    signed: Signed,
) -> ApiResult<Json<Value>> {
    let event = s
        .services
        .receive_invite(&signed.origin, &room_id, &event_id, &signed.body)
        .await?;
    Ok(Json(json!({ "event": event })))
}

/// `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`.
pub async fn prepare_leave_event_route(
    State(s): State<AppState>,
    PathArgs((room_id, user_id)): PathArgs<(OwnedRoomId, OwnedUserId)>,
    signed: Signed,
) -> ApiResult<Json<Value>> {
    let (version, event) = s.services.make_leave(&signed.origin, &room_id, &user_id)?;
    Ok(Json(json!({ "room_version": version, "event": event })))
}

/// `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`.
pub async fn create_leave_event_route(
    State(s): State<AppState>,
    PathArgs((room_id, event_id)): PathArgs<(OwnedRoomId, OwnedEventId)>,
    signed: Signed,
) -> ApiResult<Json<Value>> {
    let pdu = signed.pdu()?;
    s.services
        .send_leave(&signed.origin, &room_id, &event_id, &pdu)
        .await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}`.
pub async fn prepare_knock_event_route(
    State(s): State<AppState>,
    PathArgs((room_id, user_id)): PathArgs<(OwnedRoomId, OwnedUserId)>,
    uri: axum::http::Uri,
    signed: Signed,
) -> ApiResult<Json<Value>> {
    let versions = offered_versions(&uri)?;
    let (version, event) = s
        .services
        .make_knock(&signed.origin, &room_id, &user_id, &versions)?;
    Ok(Json(json!({ "room_version": version, "event": event })))
}

/// `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`.
pub async fn create_knock_event_route(
    State(s): State<AppState>,
    PathArgs((room_id, event_id)): PathArgs<(OwnedRoomId, OwnedEventId)>,
    signed: Signed,
) -> ApiResult<Json<Value>> {
    let pdu = signed.pdu()?;
    let face = s
        .services
        .send_knock(&signed.origin, &room_id, &event_id, &pdu)
        .await?;
    Ok(Json(json!({ "knock_room_state": face })))
}
