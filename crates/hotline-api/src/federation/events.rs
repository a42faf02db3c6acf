//! Events for other servers: `/event`, `/state`, `/state_ids`,
//! `/event_auth`, `/backfill`, `/get_missing_events`.

use axum::extract::State;
use axum::Json;
use hotline_service::Error;
use ruma::{OwnedEventId, OwnedRoomId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Signed;
use crate::extract::{repeated_query, PathArgs, QueryArgs};
use crate::{ApiResult, AppState};

/// `GET /_matrix/federation/v1/event/{eventId}`.
pub async fn get_event_route(
    State(s): State<AppState>,
    PathArgs(event_id): PathArgs<OwnedEventId>,
    signed: Signed,
) -> ApiResult<Json<Value>> {
    let pdu = s.services.event_for_peer(&signed.origin, &event_id)?;
    Ok(Json(json!({
        "origin": s.services.server_name(),
        "origin_server_ts": hotline_service::now_ms(),
        "pdus": [pdu],
    })))
}

#[derive(Deserialize)]
pub struct AtEvent {
    event_id: OwnedEventId,
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}`.
pub async fn get_room_state_ids_route(
    State(s): State<AppState>,
    PathArgs(room_id): PathArgs<OwnedRoomId>,
    QueryArgs(q): QueryArgs<AtEvent>,
    signed: Signed,
) -> ApiResult<Json<Value>> {
    let (state, auth) = s
        .services
        .state_for_peer(&signed.origin, &room_id, &q.event_id)?;
    Ok(Json(json!({
        "pdu_ids": state.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        "auth_chain_ids": auth.iter().map(|(id, _)| id).collect::<Vec<_>>(),
    })))
}

/// `GET /_matrix/federation/v1/state/{roomId}`.
pub async fn get_room_state_route(
    State(s): State<AppState>,
    PathArgs(room_id): PathArgs<OwnedRoomId>,
    QueryArgs(q): QueryArgs<AtEvent>,
    signed: Signed,
) -> ApiResult<Json<Value>> {
    let (state, auth) = s
        .services
        .state_for_peer(&signed.origin, &room_id, &q.event_id)?;
    Ok(Json(json!({
        "pdus": state.into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
        "auth_chain": auth.into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
    })))
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`.
pub async fn get_event_authorization_route(
    State(s): State<AppState>,
    PathArgs((room_id, event_id)): PathArgs<(OwnedRoomId, OwnedEventId)>,
    signed: Signed,
) -> ApiResult<Json<Value>> {
    let chain = s
        .services
        .event_auth_for_peer(&signed.origin, &room_id, &event_id)?;
    Ok(Json(json!({ "auth_chain": chain })))
}

/// `GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=...`.
pub async fn get_backfill_route(
    State(s): State<AppState>,
    PathArgs(room_id): PathArgs<OwnedRoomId>,
    uri: axum::http::Uri,
    signed: Signed,
) -> ApiResult<Json<Value>> {
    let from: Vec<OwnedEventId> = repeated_query(uri.query(), "v")?
        .into_iter()
        .map(|v| OwnedEventId::try_from(v).map_err(|_| Error::invalid_param("Invalid event id")))
        .collect::<Result<_, _>>()?;
    let limit = repeated_query(uri.query(), "limit")?
        .first()
        .map(|l| l.parse::<usize>())
        .transpose()
        .map_err(|_| Error::invalid_param("limit must be a number"))?
        .ok_or_else(|| Error::MissingParam("limit is required".into()))?;
    let pdus = s
        .services
        .backfill_for_peer(&signed.origin, &room_id, &from, limit)?;
    Ok(Json(json!({
        "origin": s.services.server_name(),
        "origin_server_ts": hotline_service::now_ms(),
        "pdus": pdus,
    })))
}

#[derive(Deserialize)]
struct MissingEventsBody {
    #[serde(default = "ten")]
    limit: usize,
    #[serde(default)]
    min_depth: u64,
    earliest_events: Vec<OwnedEventId>,
    latest_events: Vec<OwnedEventId>,
}

fn ten() -> usize {
    10
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`.
pub async fn get_missing_events_route(
    State(s): State<AppState>,
    PathArgs(room_id): PathArgs<OwnedRoomId>,
    signed: Signed,
) -> ApiResult<Json<Value>> {
    let body: MissingEventsBody = serde_json::from_slice(&signed.body)
        .map_err(|e| Error::bad_json(format!("Invalid request: {e}")))?;
    let events = s.services.missing_events_for_peer(
        &signed.origin,
        &room_id,
        &body.earliest_events,
        &body.latest_events,
        body.limit,
        body.min_depth,
    )?;
    Ok(Json(json!({ "events": events })))
}
