//! Hotline's own push gateway, for its web app: the Push Gateway API's
//! `notify` for pushers of `org.hotline.web`, sent on to browsers as Web
//! Push ([`hotline_service::web_push`] holds the rules, [`crate::push_gateway`]
//! the way out), and the VAPID public key browsers subscribe with.

use axum::extract::State;
use axum::routing::{get, post};
use axum::Json;
use hotline_service::pushers::NOTIFY_PATH;
use hotline_service::web_push::{Notify, APP_ID};
use serde_json::{json, Value};

use crate::extract::JsonBody;
use crate::{ApiResult, AppState, Routes};

pub fn routes() -> Routes {
    Routes::new()
        .route(NOTIFY_PATH, post(send_event_notification_route))
        .route("/_hotline/v1/push/web", get(get_web_push_route))
}

/// `POST /_matrix/push/v1/notify` (the spec's `sendEventNotification`):
/// `{"rejected": [pushkey, ...]}`, the pushkeys whose pushers should go.
/// No token: a push gateway is called by homeservers (here, this one's
/// pushers), and a pushkey it serves is one a pusher of this server holds.
pub async fn send_event_notification_route(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<Notify>,
) -> ApiResult<Json<Value>> {
    let rejected = s.services.web_push_notify(body.notification).await?;
    Ok(Json(json!({ "rejected": rejected })))
}

/// `GET /_hotline/v1/push/web`: the app id the web app's pushers use and
/// the VAPID public key (base64url, an uncompressed P-256 point) its
/// browsers subscribe with (`applicationServerKey`). Public: push services
/// check requests against it.
pub async fn get_web_push_route(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "app_id": APP_ID,
        "vapid_public_key": s.services.web_push_key(),
    }))
}
