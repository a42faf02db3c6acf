//! The protocol office's own door to a running server: a Unix socket in
//! the data directory (`office.sock`, owner-only), which `hotline admin`
//! commands that change rooms talk to. Such a change must go through the
//! running server's writer: its rooms' state lives in its memory, so a
//! second process writing events beside it would fork them. The socket's
//! file permissions are the authority, as the data directory's are for the
//! other admin commands; nothing here is reachable over the network.
//!
//! Errors are the Matrix API's (`errcode`, `error`), from the same
//! [`ApiError`] mapping as every other route.

use axum::extract::State;
use axum::{Json, Router};
use hotline_service::line_aides::Actor;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiResult;
use crate::extract::JsonBody;
use crate::AppState;

/// The socket's file name in the data directory.
pub const SOCKET: &str = "office.sock";

/// The routes the office socket serves.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/_hotline/office/v1/line_aides/add",
            axum::routing::post(office_add_line_aide_route),
        )
        .route(
            "/_hotline/office/v1/line_aides/remove",
            axum::routing::post(office_remove_line_aide_route),
        )
        .layer(axum::middleware::from_fn(crate::error::contain_failures))
        .with_state(state)
}

/// `{"aide": USER, "room_id": ROOM}` or `{"aide": USER, "with": COUNTERPART}`.
#[derive(Deserialize)]
struct LineAideRequest {
    aide: ruma::OwnedUserId,
    room_id: Option<ruma::OwnedRoomId>,
    with: Option<ruma::OwnedUserId>,
}

impl LineAideRequest {
    /// The line meant, and the principal the office acts for on it (for
    /// `with`): the aide's principal when the aide is this server's.
    fn line(&self, s: &AppState) -> ApiResult<ruma::OwnedRoomId> {
        let with = match (&self.room_id, &self.with) {
            (Some(r), None) => return Ok(r.clone()),
            (None, Some(w)) => w,
            _ => {
                return Err(hotline_service::Error::bad_json(
                    "Name the line by room_id or by the counterpart (with), one of them",
                )
                .into())
            }
        };
        let principal = s.services.principal_of(&self.aide)?.ok_or_else(|| {
            hotline_service::Error::forbidden(format!(
                "{} is not an aide this office has enrolled",
                self.aide
            ))
        })?;
        Ok(s.services.line_between(&principal, with)?)
    }
}

/// `hotline admin line-aide add`: the office brings its principal's aide
/// onto a line, the marking naming the office.
async fn office_add_line_aide_route(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<LineAideRequest>,
) -> ApiResult<Json<Value>> {
    let room_id = req.line(&s)?;
    s.services
        .add_line_aide(Actor::Office, &room_id, &req.aide)
        .await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// `hotline admin line-aide remove`: the office takes an aide off a line
/// through its principal on it.
async fn office_remove_line_aide_route(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<LineAideRequest>,
) -> ApiResult<Json<Value>> {
    let room_id = req.line(&s)?;
    s.services
        .remove_line_aide(Actor::Office, &room_id, &req.aide)
        .await?;
    Ok(Json(json!({ "room_id": room_id })))
}
