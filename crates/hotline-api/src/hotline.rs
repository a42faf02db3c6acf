//! Hotline's own API (`/_hotline/v1`): enrolment, the directory of
//! attestations, line invites. Documented in `docs/hotline-api.yaml`.
//! Also the server key endpoint `/_matrix/key/v2/server`.

use axum::extract::State;
use axum::routing::{delete, get, post};
use axum::Json;
use hotline_service::identity::LineInviteRow;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::extract::{Auth, IpLimited, JsonBody, PathArgs};
use crate::{ApiResult, AppState, Routes};

pub fn routes() -> Routes {
    Routes::new()
        .route("/_matrix/key/v2/server", get(get_server_keys_route))
        .route("/_hotline/v1/directory", get(get_directory_route))
        .route("/_hotline/v1/enrol/{code}", post(redeem_enrolment_route))
        .route(
            "/_hotline/v1/line_invites",
            get(list_line_invites_route).post(create_line_invite_route),
        )
        .route(
            "/_hotline/v1/line_invites/{code}",
            delete(revoke_line_invite_route),
        )
        .route(
            "/_hotline/v1/line_invites/{code}/redeem",
            post(redeem_line_invite_route),
        )
}

/// A signed `/_matrix/key/v2/server` answer, serialised once.
pub(crate) struct SignedKeys {
    body: bytes::Bytes,
    /// Re-signed from then on: half its validity is gone.
    stale_at_ms: i64,
}

/// `GET /_matrix/key/v2/server`: the key attestations are signed with.
/// Anyone may ask, so the signed answer is kept and served as is until half
/// of its `valid_until_ts` span has passed (Synapse likewise signs its
/// answer once, not per request).
pub async fn get_server_keys_route(
    State(s): State<AppState>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let now = hotline_service::now_ms();
    let mut cached = s.server_keys.lock();
    let fresh = cached.as_ref().filter(|k| now < k.stale_at_ms);
    let body = match fresh {
        Some(k) => k.body.clone(),
        None => {
            let v = s.services.server_keys()?;
            let valid_until = v["valid_until_ts"].as_i64().unwrap_or(now);
            let body =
                bytes::Bytes::from(serde_json::to_vec(&v).map_err(hotline_service::Error::from)?);
            *cached = Some(SignedKeys {
                body: body.clone(),
                stale_at_ms: now + (valid_until - now) / 2,
            });
            body
        }
    };
    drop(cached);
    Ok(([(http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /_hotline/v1/directory`: current attestations and revocations.
pub async fn get_directory_route(
    State(s): State<AppState>,
    Auth(_sender): Auth,
) -> ApiResult<Json<Value>> {
    Ok(Json(s.services.directory()?))
}

#[derive(Deserialize)]
pub struct EnrolBody {
    password: String,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
}

/// `POST /_hotline/v1/enrol/{code}`: set the password, get a session.
pub async fn redeem_enrolment_route(
    State(s): State<AppState>,
    _: IpLimited,
    PathArgs(code): PathArgs<String>,
    JsonBody(body): JsonBody<EnrolBody>,
) -> ApiResult<Json<Value>> {
    let session = s
        .services
        .redeem_enrolment(
            &code,
            body.password,
            body.device_id,
            body.initial_device_display_name,
        )
        .await?;
    Ok(Json(json!({
        "user_id": session.user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
    })))
}

fn invite_json(s: &AppState, i: &LineInviteRow) -> Value {
    let base = s
        .services
        .config
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", s.services.config.listen));
    json!({
        "code": i.code,
        "url": format!("{}/#/line/{}", base.trim_end_matches('/'), i.code),
        "principal": i.principal,
        "created_by": i.created_by,
        "for_user": i.for_user,
        "max_uses": i.uses_allowed,
        "uses": i.uses,
        "expires_ts": i.expires_ts,
        "revoked": i.revoked,
        "created_ts": i.created_ts,
    })
}

#[derive(Deserialize)]
pub struct CreateInviteBody {
    max_uses: Option<i64>,
    expires_in_ms: Option<i64>,
    for_user: Option<String>,
}

/// `POST /_hotline/v1/line_invites`.
pub async fn create_line_invite_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    JsonBody(body): JsonBody<CreateInviteBody>,
) -> ApiResult<Json<Value>> {
    let row = s
        .services
        .create_line_invite(
            &sender.user_id,
            body.max_uses,
            body.expires_in_ms,
            body.for_user,
        )
        .await?;
    Ok(Json(invite_json(&s, &row)))
}

/// `GET /_hotline/v1/line_invites`.
pub async fn list_line_invites_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
) -> ApiResult<Json<Value>> {
    let invites: Vec<Value> = s
        .services
        .line_invites(&sender.user_id)?
        .iter()
        .map(|i| invite_json(&s, i))
        .collect();
    Ok(Json(json!({ "invites": invites })))
}

/// `DELETE /_hotline/v1/line_invites/{code}`.
pub async fn revoke_line_invite_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(code): PathArgs<String>,
) -> ApiResult<Json<Value>> {
    s.services
        .revoke_line_invite(&sender.user_id, &code)
        .await?;
    Ok(Json(json!({})))
}

/// `POST /_hotline/v1/line_invites/{code}/redeem`: opens the line.
pub async fn redeem_line_invite_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs(code): PathArgs<String>,
) -> ApiResult<Json<Value>> {
    let room_id = s.services.redeem_line_invite(&sender, &code).await?;
    Ok(Json(json!({ "room_id": room_id })))
}
