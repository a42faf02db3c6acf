//! Discovery: versions, well-known, capabilities, TURN servers.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::extract::Auth;
use crate::AppState;

/// Spec versions this server speaks.
const VERSIONS: &[&str] = &[
    "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
    "v1.11", "v1.12",
];

/// Unstable features served, as Synapse names them: Simplified Sliding
/// Sync (MSC4186), which matrix-rust-sdk and Element X look for here.
fn unstable_features() -> Value {
    json!({ "org.matrix.simplified_msc3575": true })
}

/// `GET /_matrix/client/versions`.
pub async fn get_supported_versions_route() -> Json<Value> {
    Json(json!({ "versions": VERSIONS, "unstable_features": unstable_features() }))
}

/// `GET /.well-known/matrix/server`: where other servers reach this one
/// (`[federation] public_address`), when it delegates; `404` otherwise.
pub async fn discover_federation_server_route(
    State(s): State<AppState>,
) -> crate::ApiResult<Json<Value>> {
    let f = &s.services.config.federation;
    match f.public_address.as_deref().filter(|_| f.enabled) {
        Some(address) => Ok(Json(json!({ "m.server": address }))),
        None => Err(
            hotline_service::Error::not_found("This server does not delegate federation").into(),
        ),
    }
}

/// `GET /.well-known/matrix/client`.
pub async fn discover_homeserver_route(
    State(s): State<AppState>,
    headers: http::HeaderMap,
) -> Json<Value> {
    let base = s
        .services
        .config
        .public_base_url
        .clone()
        .unwrap_or_else(|| {
            let host = headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}")
        });
    Json(json!({ "m.homeserver": { "base_url": base } }))
}

/// `GET /capabilities`.
pub async fn get_capabilities_route(Auth(_): Auth) -> Json<Value> {
    Json(json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.room_versions": { "default": "11", "available": { "10": "stable", "11": "stable", "12": "stable" } },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": false },
            "m.get_login_token": { "enabled": false }
        }
    }))
}

/// `GET /voip/turnServer`: time-limited TURN credentials for calls.
pub async fn get_turn_server_info_route(
    axum::extract::State(s): axum::extract::State<crate::AppState>,
    crate::extract::Auth(sender): crate::extract::Auth,
) -> crate::ApiResult<axum::Json<serde_json::Value>> {
    Ok(axum::Json(s.services.turn_server(&sender.user_id)?))
}
