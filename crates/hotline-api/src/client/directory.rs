//! The published room directory: a room's visibility in it, and its pages.

use axum::extract::State;
use axum::Json;
use hotline_service::rooms::{PublicRoomsPage, PublicRoomsQuery};
use hotline_service::Error;
use ruma::OwnedRoomId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::extract::{Auth, IpLimited, JsonBody, PathArgs, QueryArgs};
use crate::{ApiResult, AppState};

/// `GET /directory/list/room/{roomId}` (no access token needed).
pub async fn get_room_visibility_on_directory_route(
    State(s): State<AppState>,
    _: IpLimited,
    PathArgs(room): PathArgs<OwnedRoomId>,
) -> ApiResult<Json<Value>> {
    let public = s.services.room_visibility(&room)?;
    Ok(Json(
        json!({ "visibility": if public { "public" } else { "private" } }),
    ))
}

#[derive(Deserialize)]
pub struct VisibilityBody {
    visibility: Option<String>,
}

/// `PUT /directory/list/room/{roomId}`: `visibility` defaults to `public`.
pub async fn set_room_visibility_on_directory_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room): PathArgs<OwnedRoomId>,
    JsonBody(body): JsonBody<VisibilityBody>,
) -> ApiResult<Json<Value>> {
    let public = match body.visibility.as_deref() {
        None | Some("public") => true,
        Some("private") => false,
        Some(_) => return Err(Error::invalid_param("visibility must be public or private").into()),
    };
    s.services
        .set_room_visibility(&sender.user_id, &room, public)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct PublicRoomsParams {
    limit: Option<u64>,
    since: Option<String>,
    server: Option<String>,
}

/// `GET /publicRooms` (no access token needed).
pub async fn get_public_rooms_route(
    State(s): State<AppState>,
    _: IpLimited,
    QueryArgs(q): QueryArgs<PublicRoomsParams>,
) -> ApiResult<Json<PublicRoomsPage>> {
    Ok(Json(s.services.public_rooms(&PublicRoomsQuery {
        limit: q.limit,
        since: q.since,
        server: q.server,
        ..Default::default()
    })?))
}

#[derive(Deserialize)]
pub struct ServerParam {
    server: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct RoomsFilter {
    generic_search_term: Option<String>,
    room_types: Option<Vec<Option<String>>>,
}

#[derive(Deserialize)]
pub struct QueryPublicRoomsBody {
    limit: Option<u64>,
    since: Option<String>,
    filter: Option<RoomsFilter>,
    #[serde(default)]
    include_all_networks: bool,
    third_party_instance_id: Option<String>,
}

/// `POST /publicRooms`: with a search term and room types.
pub async fn query_public_rooms_route(
    State(s): State<AppState>,
    Auth(_): Auth,
    QueryArgs(q): QueryArgs<ServerParam>,
    JsonBody(b): JsonBody<QueryPublicRoomsBody>,
) -> ApiResult<Json<PublicRoomsPage>> {
    let filter = b.filter.unwrap_or_default();
    Ok(Json(s.services.public_rooms(&PublicRoomsQuery {
        limit: b.limit,
        since: b.since,
        server: q.server,
        search_term: filter.generic_search_term,
        room_types: filter.room_types,
        include_all_networks: b.include_all_networks,
        third_party_instance_id: b.third_party_instance_id,
    })?))
}
