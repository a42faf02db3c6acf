//! Accounts and devices: register, availability, password, devices.

use axum::extract::State;
use axum::Json;
use hotline_service::accounts::AuthData;
use hotline_service::Error;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::extract::{Auth, IpLimited, JsonBody, PathArgs, QueryArgs};
use crate::{ApiResult, AppState};

#[derive(Deserialize)]
pub struct RegisterBody {
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
    auth: Option<AuthData>,
}

#[derive(Deserialize)]
pub struct RegisterQuery {
    kind: Option<String>,
}

/// `POST /register`.
pub async fn register_route(
    State(s): State<AppState>,
    _: IpLimited,
    QueryArgs(q): QueryArgs<RegisterQuery>,
    JsonBody(body): JsonBody<RegisterBody>,
) -> ApiResult<Json<Value>> {
    if q.kind.as_deref() == Some("guest") {
        return Err(Error::forbidden("Guest access is disabled").into());
    }
    let (user_id, session) = s
        .services
        .register(
            body.username,
            body.password,
            body.device_id,
            body.initial_device_display_name,
            body.inhibit_login,
            body.auth,
        )
        .await?;
    Ok(Json(match session {
        Some(sess) => {
            json!({ "user_id": user_id, "access_token": sess.access_token, "device_id": sess.device_id })
        }
        None => json!({ "user_id": user_id }),
    }))
}

#[derive(Deserialize)]
pub struct AvailabilityQuery {
    username: String,
}

/// `GET /register/available`.
pub async fn get_username_availability_route(
    State(s): State<AppState>,
    _: IpLimited,
    QueryArgs(q): QueryArgs<AvailabilityQuery>,
) -> ApiResult<Json<Value>> {
    if s.services.username_available(&q.username)? {
        Ok(Json(json!({ "available": true })))
    } else {
        Err(Error::UserInUse.into())
    }
}

#[derive(Deserialize)]
pub struct TokenValidityQuery {
    token: String,
}

/// `GET /register/m.login.registration_token/validity`: whether a token
/// can still be used, before the user fills in the rest of the form.
pub async fn check_registration_token_validity_route(
    State(s): State<AppState>,
    _: IpLimited,
    QueryArgs(q): QueryArgs<TokenValidityQuery>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({ "valid": s.services.registration_token_valid(&q.token)? }),
    ))
}

#[derive(Deserialize)]
pub struct ChangePasswordBody {
    new_password: String,
    #[serde(default = "yes")]
    logout_devices: bool,
    auth: Option<AuthData>,
}

fn yes() -> bool {
    true
}

/// `POST /account/password`.
pub async fn change_password_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    JsonBody(body): JsonBody<ChangePasswordBody>,
) -> ApiResult<Json<Value>> {
    s.services
        .require_password_auth(&sender.user_id, body.auth)
        .await?;
    s.services
        .change_password(&sender, body.new_password, body.logout_devices)
        .await?;
    Ok(Json(json!({})))
}

fn device_json(d: &hotline_store_rows::DeviceRow) -> Value {
    let mut v = json!({ "device_id": d.device_id });
    // Absent fields are left out: the spec types them as strings/integers, not null.
    if let Some(n) = &d.display_name {
        v["display_name"] = json!(n);
    }
    if let Some(t) = d.last_seen_ts {
        v["last_seen_ts"] = json!(t);
    }
    if let Some(ip) = &d.last_seen_ip {
        v["last_seen_ip"] = json!(ip);
    }
    v
}

mod hotline_store_rows {
    pub use hotline_service::accounts::DeviceRow;
}

/// `GET /devices`.
pub async fn get_devices_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
) -> ApiResult<Json<Value>> {
    let devices: Vec<Value> = s
        .services
        .devices(&sender.user_id)?
        .iter()
        .map(device_json)
        .collect();
    Ok(Json(json!({ "devices": devices })))
}

/// `GET /devices/{deviceId}`.
pub async fn get_device_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(device_id): PathArgs<String>,
) -> ApiResult<Json<Value>> {
    let d = s
        .services
        .device(&sender.user_id, &device_id)?
        .ok_or_else(|| Error::not_found("Unknown device"))?;
    Ok(Json(device_json(&d)))
}

#[derive(Deserialize)]
pub struct UpdateDeviceBody {
    display_name: Option<String>,
}

/// `PUT /devices/{deviceId}`.
pub async fn update_device_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(device_id): PathArgs<String>,
    JsonBody(body): JsonBody<UpdateDeviceBody>,
) -> ApiResult<Json<Value>> {
    s.services
        .rename_device(&sender.user_id, &device_id, body.display_name)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct AuthOnlyBody {
    auth: Option<AuthData>,
}

/// `DELETE /devices/{deviceId}` (user-interactive auth: password).
pub async fn delete_device_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(device_id): PathArgs<String>,
    JsonBody(body): JsonBody<AuthOnlyBody>,
) -> ApiResult<Json<Value>> {
    if s.services.device(&sender.user_id, &device_id)?.is_none() {
        return Err(Error::not_found("Unknown device").into());
    }
    s.services
        .require_password_auth(&sender.user_id, body.auth)
        .await?;
    s.services
        .delete_device(&sender.user_id, &device_id)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct DeleteDevicesBody {
    devices: Vec<String>,
    auth: Option<AuthData>,
}

/// `POST /delete_devices`.
pub async fn delete_devices_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    JsonBody(body): JsonBody<DeleteDevicesBody>,
) -> ApiResult<Json<Value>> {
    s.services
        .require_password_auth(&sender.user_id, body.auth)
        .await?;
    for d in &body.devices {
        s.services.delete_device(&sender.user_id, d).await?;
    }
    Ok(Json(json!({})))
}
