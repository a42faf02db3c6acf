//! `GET /sync`, and Simplified Sliding Sync (MSC4186).

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use hotline_service::sync::{
    SlidingRequest, SlidingResponse, SyncRequest, SyncResponse, SyncToken,
};
use serde::Deserialize;

use crate::extract::{Auth, JsonBody, QueryArgs};
use crate::{ApiResult, AppState};

#[derive(Deserialize)]
pub struct SyncQuery {
    since: Option<String>,
    filter: Option<String>,
    #[serde(default)]
    full_state: bool,
    timeout: Option<u64>,
    set_presence: Option<String>,
}

/// `GET /sync`: a filter may be a stored filter id or inline JSON.
pub async fn sync_events_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    QueryArgs(q): QueryArgs<SyncQuery>,
) -> ApiResult<Json<SyncResponse>> {
    let filter = s
        .services
        .sync_filter(&sender.user_id, q.filter.as_deref())?;
    let since = q.since.as_deref().map(SyncToken::parse).transpose()?;
    // A client syncing as `offline` does not keep its user present.
    let _in_flight = (q.set_presence.as_deref() != Some("offline"))
        .then(|| s.services.presence.sync_started(&sender.user_id));
    s.services
        .presence_from_sync(&sender.user_id, q.set_presence.as_deref())
        .await?;
    let req = SyncRequest {
        since,
        full_state: q.full_state,
        timeout: Duration::from_millis(q.timeout.unwrap_or(0)),
        filter,
    };
    Ok(Json(s.services.sync(&sender, req).await?))
}

#[derive(Deserialize)]
pub struct SlidingSyncQuery {
    pos: Option<String>,
    timeout: Option<u64>,
    set_presence: Option<String>,
}

/// `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`:
/// Simplified Sliding Sync (MSC4186).
pub async fn sync_events_v5_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    QueryArgs(q): QueryArgs<SlidingSyncQuery>,
    JsonBody(body): JsonBody<SlidingRequest>,
) -> ApiResult<Json<SlidingResponse>> {
    let _in_flight = (q.set_presence.as_deref() != Some("offline"))
        .then(|| s.services.presence.sync_started(&sender.user_id));
    s.services
        .presence_from_sync(&sender.user_id, q.set_presence.as_deref())
        .await?;
    let timeout = Duration::from_millis(q.timeout.unwrap_or(0));
    Ok(Json(
        s.services
            .sliding_sync(&sender, q.pos.as_deref(), timeout, body)
            .await?,
    ))
}
