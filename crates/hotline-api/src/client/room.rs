//! Rooms: create, read, state, aliases.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use hotline_service::pdu::PduEvent;
use hotline_service::rooms::CreateRoom;
use hotline_service::sync::RoomEventFilter;
use hotline_service::{Error, Services};
use ruma::{OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::extract::{Auth, JsonBody, PathArgs, QueryArgs, RawJsonObject};
use crate::{ApiResult, AppState};

#[derive(Deserialize)]
pub struct CreateRoomBody {
    preset: Option<String>,
    visibility: Option<String>,
    #[serde(default)]
    is_direct: bool,
    #[serde(default)]
    invite: Vec<OwnedUserId>,
    name: Option<String>,
    topic: Option<String>,
    room_alias_name: Option<String>,
    room_version: Option<String>,
    creation_content: Option<Map<String, Value>>,
    power_level_content_override: Option<Map<String, Value>>,
    #[serde(default)]
    initial_state: Vec<InitialState>,
}

#[derive(Deserialize)]
pub struct InitialState {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    state_key: String,
    content: Value,
}

/// `POST /createRoom`.
pub async fn create_room_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    JsonBody(b): JsonBody<CreateRoomBody>,
) -> ApiResult<Json<Value>> {
    let req = CreateRoom {
        preset: b.preset,
        visibility_public: b.visibility.as_deref() == Some("public"),
        is_direct: b.is_direct,
        invite: b.invite,
        name: b.name,
        topic: b.topic,
        room_alias_name: b.room_alias_name,
        room_version: b.room_version,
        creation_content: b.creation_content,
        power_level_content_override: b.power_level_content_override,
        initial_state: b
            .initial_state
            .into_iter()
            .map(|i| (i.kind, i.state_key, i.content))
            .collect(),
    };
    let room_id = s.services.create_room(&sender.user_id, req).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// `GET /joined_rooms`.
pub async fn joined_rooms_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
) -> ApiResult<Json<Value>> {
    let rooms: Vec<_> = s
        .services
        .user_rooms(&sender.user_id)?
        .rooms
        .into_iter()
        .filter(|(_, (m, _))| *m == ruma::events::room::member::MembershipState::Join)
        .map(|(r, _)| r)
        .collect();
    Ok(Json(json!({ "joined_rooms": rooms })))
}

pub(crate) fn events_json(
    events: &[Arc<PduEvent>],
    sender: &hotline_service::accounts::Sender,
) -> Vec<Box<serde_json::value::RawValue>> {
    Services::to_client_events(events, sender, true)
}

/// `GET /rooms/{roomId}/event/{eventId}`.
pub async fn get_room_event_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((room, event)): PathArgs<(OwnedRoomId, OwnedEventId)>,
) -> ApiResult<Json<Box<serde_json::value::RawValue>>> {
    let e = s.services.get_event(&sender.user_id, &room, &event)?;
    Ok(Json(e.to_client(
        Some((&sender.user_id, sender.device_id.as_str())),
        true,
    )))
}

#[derive(Deserialize)]
pub struct ContextQuery {
    limit: Option<usize>,
    filter: Option<String>,
}

/// `GET /rooms/{roomId}/context/{eventId}`: the `filter` (a JSON
/// `RoomEventFilter`) applies to the events around the event and the state.
pub async fn get_context_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((room, event)): PathArgs<(OwnedRoomId, OwnedEventId)>,
    QueryArgs(q): QueryArgs<ContextQuery>,
) -> ApiResult<Json<Value>> {
    let filter = match &q.filter {
        Some(f) => RoomEventFilter::from_json(
            &serde_json::from_str(f).map_err(|e| Error::bad_json(e.to_string()))?,
        ),
        None => RoomEventFilter::default(),
    };
    let limit = q.limit.or(filter.limit).unwrap_or(10);
    let c = s
        .services
        .context(&sender.user_id, &room, &event, limit, &filter)?;
    Ok(Json(json!({
        "event": c.event.to_client(Some((&sender.user_id, sender.device_id.as_str())), true),
        "events_before": events_json(&c.before, &sender),
        "events_after": events_json(&c.after, &sender),
        "start": c.start,
        "end": c.end,
        "state": events_json(&c.state, &sender),
    })))
}

#[derive(Deserialize)]
pub struct MembersQuery {
    membership: Option<String>,
    not_membership: Option<String>,
    at: Option<String>,
}

/// `GET /rooms/{roomId}/members`.
pub async fn get_member_events_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room): PathArgs<OwnedRoomId>,
    QueryArgs(q): QueryArgs<MembersQuery>,
) -> ApiResult<Json<Value>> {
    let events = s.services.members(
        &sender.user_id,
        &room,
        q.at.as_deref(),
        q.membership.as_deref(),
        q.not_membership.as_deref(),
    )?;
    Ok(Json(json!({ "chunk": events_json(&events, &sender) })))
}

/// `GET /rooms/{roomId}/joined_members`.
pub async fn joined_members_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room): PathArgs<OwnedRoomId>,
) -> ApiResult<Json<Value>> {
    let mut joined = Map::new();
    for (u, d, a) in s.services.joined_members(&sender.user_id, &room)? {
        let mut m = serde_json::Map::new();
        if let Some(d) = d {
            m.insert("display_name".into(), json!(d));
        }
        if let Some(a) = a {
            m.insert("avatar_url".into(), json!(a));
        }
        joined.insert(u.to_string(), Value::Object(m));
    }
    Ok(Json(json!({ "joined": joined })))
}

/// `GET /rooms/{roomId}/state`.
pub async fn get_state_events_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room): PathArgs<OwnedRoomId>,
) -> ApiResult<Json<Vec<Box<serde_json::value::RawValue>>>> {
    let events = s.services.room_state_events(&sender.user_id, &room)?;
    Ok(Json(events_json(&events, &sender)))
}

#[derive(Deserialize)]
pub struct StateQuery {
    format: Option<String>,
}

fn state_response(
    e: &PduEvent,
    format: Option<&str>,
    sender: &hotline_service::accounts::Sender,
) -> Box<serde_json::value::RawValue> {
    if format == Some("event") {
        e.to_client(Some((&sender.user_id, sender.device_id.as_str())), true)
    } else {
        e.pdu.content.clone()
    }
}

/// `GET /rooms/{roomId}/state/{eventType}/{stateKey}`.
pub async fn get_state_event_for_key_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((room, kind, key)): PathArgs<(OwnedRoomId, String, String)>,
    QueryArgs(q): QueryArgs<StateQuery>,
) -> ApiResult<Json<Box<serde_json::value::RawValue>>> {
    let e = s
        .services
        .room_state_event(&sender.user_id, &room, &kind, &key)?;
    Ok(Json(state_response(&e, q.format.as_deref(), &sender)))
}

/// `GET /rooms/{roomId}/state/{eventType}` (empty state key).
pub async fn get_state_event_empty_key_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((room, kind)): PathArgs<(OwnedRoomId, String)>,
    QueryArgs(q): QueryArgs<StateQuery>,
) -> ApiResult<Json<Box<serde_json::value::RawValue>>> {
    let e = s
        .services
        .room_state_event(&sender.user_id, &room, &kind, "")?;
    Ok(Json(state_response(&e, q.format.as_deref(), &sender)))
}

/// `PUT /rooms/{roomId}/state/{eventType}/{stateKey}`.
pub async fn send_state_event_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((room, kind, key)): PathArgs<(OwnedRoomId, String, String)>,
    RawJsonObject(content): RawJsonObject,
) -> ApiResult<Json<Value>> {
    let id = s
        .services
        .send_state(&sender.user_id, &room, &kind, &key, content)
        .await?;
    Ok(Json(json!({ "event_id": id })))
}

/// `PUT /rooms/{roomId}/state/{eventType}` (empty state key).
pub async fn send_state_event_empty_key_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((room, kind)): PathArgs<(OwnedRoomId, String)>,
    RawJsonObject(content): RawJsonObject,
) -> ApiResult<Json<Value>> {
    let id = s
        .services
        .send_state(&sender.user_id, &room, &kind, "", content)
        .await?;
    Ok(Json(json!({ "event_id": id })))
}

#[derive(Deserialize)]
pub struct AliasBody {
    room_id: OwnedRoomId,
}

/// `PUT /directory/room/{roomAlias}`.
pub async fn create_alias_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(alias): PathArgs<OwnedRoomAliasId>,
    JsonBody(b): JsonBody<AliasBody>,
) -> ApiResult<Json<Value>> {
    s.services
        .put_alias(&sender.user_id, &alias, &b.room_id)
        .await?;
    Ok(Json(json!({})))
}

/// `GET /directory/room/{roomAlias}`.
pub async fn get_alias_route(
    State(s): State<AppState>,
    PathArgs(alias): PathArgs<OwnedRoomAliasId>,
) -> ApiResult<Json<Value>> {
    let (room_id, mut servers) = s
        .services
        .resolve_room_anywhere(<&ruma::RoomOrAliasId>::from(&*alias))
        .await?;
    if alias.server_name() == s.services.server_name() {
        servers.insert(0, s.services.server_name().to_owned());
    }
    Ok(Json(json!({ "room_id": room_id, "servers": servers })))
}

/// `DELETE /directory/room/{roomAlias}`.
pub async fn delete_alias_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(alias): PathArgs<OwnedRoomAliasId>,
) -> ApiResult<Json<Value>> {
    s.services
        .delete_alias(&sender.user_id, &alias)
        .await
        .map_err(|e| match e {
            Error::NotFound(m) => Error::NotFound(m),
            e => e,
        })?;
    Ok(Json(json!({})))
}
