//! Presence: a user's status, set by themself, seen by those sharing a room.

use axum::extract::State;
use axum::Json;
use hotline_service::presence::PresenceStatus;
use hotline_service::Error;
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::extract::{Auth, JsonBody, PathArgs};
use crate::{ApiResult, AppState};

/// `GET /presence/{userId}/status`.
pub async fn get_presence_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(user): PathArgs<OwnedUserId>,
) -> ApiResult<Json<PresenceStatus>> {
    Ok(Json(s.services.get_presence(&sender.user_id, &user)?))
}

#[derive(Deserialize)]
pub struct SetPresenceBody {
    presence: String,
    status_msg: Option<String>,
}

/// `PUT /presence/{userId}/status`: only for oneself; answered once durable.
pub async fn set_presence_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(user): PathArgs<OwnedUserId>,
    JsonBody(body): JsonBody<SetPresenceBody>,
) -> ApiResult<Json<Value>> {
    if user != sender.user_id {
        return Err(Error::forbidden("You may only set your own presence").into());
    }
    s.services
        .set_presence(&user, &body.presence, body.status_msg)
        .await?;
    Ok(Json(json!({})))
}
