//! Messages: send, history, redaction, typing, receipts, read markers.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use hotline_service::rooms::Direction;
use hotline_service::sync::RoomEventFilter;
use hotline_service::Error;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::room::events_json;
use crate::extract::{Auth, JsonBody, PathArgs, QueryArgs, RawJsonObject};
use crate::{ApiResult, AppState};

/// `PUT /rooms/{roomId}/send/{eventType}/{txnId}`. The `200` is sent after
/// the event is committed.
pub async fn send_message_event_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((room, kind, txn)): PathArgs<(OwnedRoomId, String, String)>,
    RawJsonObject(content): RawJsonObject,
) -> ApiResult<Json<Value>> {
    let id = s
        .services
        .send_message(&sender, &room, &kind, &txn, content)
        .await?;
    Ok(Json(json!({ "event_id": id })))
}

#[derive(Deserialize)]
pub struct MessagesQuery {
    from: Option<String>,
    to: Option<String>,
    dir: String,
    limit: Option<usize>,
    filter: Option<String>,
}

/// `GET /rooms/{roomId}/messages`.
pub async fn get_message_events_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room): PathArgs<OwnedRoomId>,
    QueryArgs(q): QueryArgs<MessagesQuery>,
) -> ApiResult<Json<Value>> {
    let dir = match q.dir.as_str() {
        "b" => Direction::Backward,
        "f" => Direction::Forward,
        _ => return Err(Error::invalid_param("dir must be b or f").into()),
    };
    let filter = match &q.filter {
        Some(f) => RoomEventFilter::from_json(
            &serde_json::from_str(f).map_err(|e| Error::bad_json(e.to_string()))?,
        ),
        None => RoomEventFilter::default(),
    };
    let limit = q.limit.or(filter.limit).unwrap_or(10);
    let page = s
        .services
        .messages(
            &sender.user_id,
            &room,
            q.from.as_deref(),
            q.to.as_deref(),
            dir,
            limit,
            &filter,
        )
        .await?;
    let mut out = json!({
        "start": page.start,
        "chunk": events_json(&page.chunk, &sender),
        "state": events_json(&page.state, &sender),
    });
    if let Some(end) = page.end {
        out["end"] = json!(end);
    }
    Ok(Json(out))
}

#[derive(Deserialize, Default)]
pub struct RedactBody {
    reason: Option<String>,
}

/// `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`.
pub async fn redact_event_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((room, event, txn)): PathArgs<(OwnedRoomId, OwnedEventId, String)>,
    JsonBody(b): JsonBody<RedactBody>,
) -> ApiResult<Json<Value>> {
    let id = s
        .services
        .redact(&sender, &room, &event, &txn, b.reason)
        .await?;
    Ok(Json(json!({ "event_id": id })))
}

#[derive(Deserialize)]
pub struct TypingBody {
    typing: bool,
    timeout: Option<u64>,
}

/// `PUT /rooms/{roomId}/typing/{userId}`.
pub async fn create_typing_event_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((room, user)): PathArgs<(OwnedRoomId, OwnedUserId)>,
    JsonBody(b): JsonBody<TypingBody>,
) -> ApiResult<Json<Value>> {
    if user != sender.user_id {
        return Err(Error::forbidden("You may only set your own typing state").into());
    }
    s.services
        .set_typing(&user, &room, b.typing, b.timeout.map(Duration::from_millis))?;
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
pub struct ReceiptBody {
    thread_id: Option<String>,
}

/// `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`.
pub async fn create_receipt_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((room, kind, event)): PathArgs<(OwnedRoomId, String, OwnedEventId)>,
    JsonBody(b): JsonBody<ReceiptBody>,
) -> ApiResult<Json<Value>> {
    s.services
        .put_receipt(&sender.user_id, &room, &kind, &event, b.thread_id)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct ReadMarkersBody {
    #[serde(rename = "m.fully_read")]
    fully_read: Option<OwnedEventId>,
    #[serde(rename = "m.read")]
    read: Option<OwnedEventId>,
    #[serde(rename = "m.read.private")]
    read_private: Option<OwnedEventId>,
}

/// `POST /rooms/{roomId}/read_markers`.
pub async fn set_read_marker_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(room): PathArgs<OwnedRoomId>,
    JsonBody(b): JsonBody<ReadMarkersBody>,
) -> ApiResult<Json<Value>> {
    if let Some(e) = &b.fully_read {
        s.services.set_fully_read(&sender.user_id, &room, e).await?;
    }
    if let Some(e) = &b.read {
        s.services
            .put_receipt(&sender.user_id, &room, "m.read", e, None)
            .await?;
    }
    if let Some(e) = &b.read_private {
        s.services
            .put_receipt(&sender.user_id, &room, "m.read.private", e, None)
            .await?;
    }
    Ok(Json(json!({})))
}
