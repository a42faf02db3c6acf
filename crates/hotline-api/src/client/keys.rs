//! End-to-end encryption: keys, cross-signing, signatures, to-device.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use hotline_service::accounts::AuthData;
use hotline_service::sync::SyncToken;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::extract::{Auth, JsonBody, PathArgs, QueryArgs};
use crate::{ApiResult, AppState};

/// `POST /keys/upload`.
pub async fn upload_keys_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let counts = s.services.upload_keys(&sender, body).await?;
    Ok(Json(json!({ "one_time_key_counts": counts })))
}

#[derive(Deserialize)]
pub struct QueryKeysBody {
    device_keys: BTreeMap<String, Vec<String>>,
    #[allow(dead_code)]
    timeout: Option<u64>,
}

/// `POST /keys/query`.
pub async fn get_keys_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    JsonBody(body): JsonBody<QueryKeysBody>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        s.services
            .query_keys_anywhere(&sender, body.device_keys)
            .await?,
    ))
}

#[derive(Deserialize)]
pub struct ClaimKeysBody {
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
    #[allow(dead_code)]
    timeout: Option<u64>,
}

/// `POST /keys/claim`.
pub async fn claim_keys_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    JsonBody(body): JsonBody<ClaimKeysBody>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        s.services
            .claim_keys_anywhere(&sender.user_id, body.one_time_keys)
            .await?,
    ))
}

#[derive(Deserialize)]
pub struct KeyChangesQuery {
    from: String,
    to: String,
}

/// `GET /keys/changes`.
pub async fn get_key_changes_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    QueryArgs(q): QueryArgs<KeyChangesQuery>,
) -> ApiResult<Json<Value>> {
    let from = SyncToken::parse(&q.from)?;
    let to = SyncToken::parse(&q.to)?;
    let (changed, left) = s
        .services
        .key_changes_between(&sender.user_id, from.pos, to.pos)?;
    Ok(Json(json!({ "changed": changed, "left": left })))
}

/// `POST /keys/device_signing/upload` (user-interactive auth when replacing keys).
pub async fn upload_signing_keys_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    JsonBody(mut body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let auth: Option<AuthData> = match body.as_object_mut().and_then(|o| o.remove("auth")) {
        Some(a) if !a.is_null() => Some(
            serde_json::from_value(a)
                .map_err(|e| hotline_service::Error::bad_json(e.to_string()))?,
        ),
        _ => None,
    };
    s.services.upload_signing_keys(&sender, body, auth).await?;
    Ok(Json(json!({})))
}

/// `POST /keys/signatures/upload`.
pub async fn upload_signatures_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    Ok(Json(s.services.upload_signatures(&sender, body).await?))
}

#[derive(Deserialize)]
pub struct SendToDeviceBody {
    messages: BTreeMap<String, BTreeMap<String, Box<RawValue>>>,
}

/// `PUT /sendToDevice/{eventType}/{txnId}`.
pub async fn send_event_to_device_route(
    State(s): State<AppState>,
    Auth(sender): Auth,
    PathArgs((event_type, txn_id)): PathArgs<(String, String)>,
    JsonBody(body): JsonBody<SendToDeviceBody>,
) -> ApiResult<Json<Value>> {
    s.services
        .send_to_device(&sender, &event_type, &txn_id, body.messages)
        .await?;
    Ok(Json(json!({})))
}
