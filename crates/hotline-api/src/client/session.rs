//! Sessions: login, logout, whoami.

use axum::extract::State;
use axum::Json;
use hotline_service::Error;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::extract::{Auth, ClientAddr, IpLimited, JsonBody};
use crate::{ApiResult, AppState};

/// `GET /login`.
pub async fn get_login_types_route() -> Json<Value> {
    Json(json!({ "flows": [{ "type": "m.login.password" }] }))
}

#[derive(Deserialize)]
pub struct LoginBody {
    #[serde(rename = "type")]
    kind: String,
    identifier: Option<Value>,
    user: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
}

/// `POST /login`.
pub async fn login_route(
    State(s): State<AppState>,
    _: IpLimited,
    ClientAddr(client): ClientAddr,
    JsonBody(body): JsonBody<LoginBody>,
) -> ApiResult<Json<Value>> {
    if body.kind != "m.login.password" {
        return Err(Error::invalid_param("Unsupported login type").into());
    }
    let user = match &body.identifier {
        Some(id) => {
            if id.get("type").and_then(|t| t.as_str()) != Some("m.id.user") {
                return Err(
                    Error::invalid_param("Only m.id.user identifiers are supported").into(),
                );
            }
            id.get("user").and_then(|u| u.as_str()).map(str::to_owned)
        }
        None => body.user.clone(),
    }
    .ok_or_else(|| Error::bad_json("Missing user identifier"))?;
    let password = body
        .password
        .ok_or_else(|| Error::bad_json("Missing password"))?;
    let session = s
        .services
        .login_password(
            &user,
            password,
            body.device_id,
            body.initial_device_display_name,
            client,
        )
        .await?;
    Ok(Json(json!({
        "user_id": session.user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": s.services.server_name(),
    })))
}

/// `POST /logout`: the device and its token go.
pub async fn logout_route(State(s): State<AppState>, Auth(sender): Auth) -> ApiResult<Json<Value>> {
    s.services
        .delete_device(&sender.user_id, sender.device_id.as_str())
        .await?;
    Ok(Json(json!({})))
}

/// `POST /logout/all`.
pub async fn logout_all_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
) -> ApiResult<Json<Value>> {
    s.services.logout_all(&sender.user_id).await?;
    Ok(Json(json!({})))
}

/// `GET /account/whoami`.
pub async fn whoami_route(Auth(sender): Auth) -> Json<Value> {
    Json(json!({ "user_id": sender.user_id, "device_id": sender.device_id, "is_guest": false }))
}
