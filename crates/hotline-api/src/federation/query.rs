//! Queries: profiles, aliases, and this government's directory of
//! officials (Hotline's own federation endpoint).

use axum::extract::State;
use axum::Json;
use hotline_service::Error;
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Signed;
use crate::extract::QueryArgs;
use crate::{ApiResult, AppState};

#[derive(Deserialize)]
pub struct ProfileQuery {
    user_id: OwnedUserId,
    field: Option<String>,
}

/// `GET /_matrix/federation/v1/query/profile`: a local user's profile.
pub async fn get_profile_information_route(
    State(s): State<AppState>,
    QueryArgs(q): QueryArgs<ProfileQuery>,
    _signed: Signed,
) -> ApiResult<Json<Value>> {
    if q.user_id.server_name() != s.services.server_name() {
        return Err(Error::not_found("Not a user of this server").into());
    }
    let (displayname, avatar_url) = s.services.profile(&q.user_id)?;
    let mut out = json!({});
    let wants = |f: &str| q.field.as_deref().is_none_or(|w| w == f);
    if let Some(d) = displayname.filter(|_| wants("displayname")) {
        out["displayname"] = json!(d);
    }
    if let Some(a) = avatar_url.filter(|_| wants("avatar_url")) {
        out["avatar_url"] = json!(a);
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
pub struct DirectoryQuery {
    room_alias: ruma::OwnedRoomAliasId,
}

/// `GET /_matrix/federation/v1/query/directory`: a local alias's room and
/// the servers in it.
pub async fn get_room_information_route(
    State(s): State<AppState>,
    QueryArgs(q): QueryArgs<DirectoryQuery>,
    _signed: Signed,
) -> ApiResult<Json<Value>> {
    let (room_id, servers) = s.services.directory_for_peer(&q.room_alias)?;
    Ok(Json(json!({ "room_id": room_id, "servers": servers })))
}

/// `GET /_hotline/federation/v1/directory`: this server's attestations and
/// revocations, as its clients read them, for a peer.
pub async fn get_hotline_directory_route(
    State(s): State<AppState>,
    _signed: Signed,
) -> ApiResult<Json<Value>> {
    Ok(Json(s.services.directory()?))
}

#[derive(Deserialize)]
pub struct RedeemerQuery {
    redeemer: OwnedUserId,
}

/// `GET /_hotline/federation/v1/line_invites/{code}?redeemer=U`: who is
/// calling, for a user of the asking server who holds the code.
pub async fn preview_line_invite_for_peer_route(
    State(s): State<AppState>,
    crate::extract::PathArgs(code): crate::extract::PathArgs<String>,
    QueryArgs(q): QueryArgs<RedeemerQuery>,
    signed: Signed,
) -> ApiResult<Json<Value>> {
    let p = s
        .services
        .preview_line_invite_for_peer(&signed.origin, &code, &q.redeemer)?;
    Ok(Json(hotline_service::lines_across::preview_json(&p)))
}

#[derive(Deserialize)]
struct RedeemBody {
    redeemer: OwnedUserId,
}

/// `POST /_hotline/federation/v1/line_invites/{code}/redeem`: the line a
/// principal of the asking server opens with this server's invite.
pub async fn redeem_line_invite_for_peer_route(
    State(s): State<AppState>,
    crate::extract::PathArgs(code): crate::extract::PathArgs<String>,
    signed: Signed,
) -> ApiResult<Json<Value>> {
    let body: RedeemBody = serde_json::from_slice(&signed.body)
        .map_err(|e| Error::bad_json(format!("Not a redeem request: {e}")))?;
    let (room_id, principal) = s
        .services
        .redeem_line_invite_for_peer(&signed.origin, &code, &body.redeemer)
        .await?;
    Ok(Json(json!({ "room_id": room_id, "principal": principal })))
}
