//! Users' devices and keys for other servers: `/user/devices`,
//! `/user/keys/query`, `/user/keys/claim`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use hotline_service::Error;
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::Value;

use super::Signed;
use crate::extract::PathArgs;
use crate::{ApiResult, AppState};

/// `GET /_matrix/federation/v1/user/devices/{userId}`.
pub async fn get_devices_route(
    State(s): State<AppState>,
    PathArgs(user): PathArgs<OwnedUserId>,
    _signed: Signed,
) -> ApiResult<Json<Value>> {
    Ok(Json(s.services.devices_for_federation(&user)?))
}

#[derive(Deserialize)]
struct QueryBody {
    device_keys: BTreeMap<String, Vec<String>>,
}

/// `POST /_matrix/federation/v1/user/keys/query`.
pub async fn get_keys_route(State(s): State<AppState>, signed: Signed) -> ApiResult<Json<Value>> {
    let body: QueryBody = serde_json::from_slice(&signed.body)
        .map_err(|e| Error::bad_json(format!("Invalid keys query: {e}")))?;
    Ok(Json(s.services.query_keys_for_federation(
        &signed.origin,
        body.device_keys,
    )?))
}

#[derive(Deserialize)]
struct ClaimBody {
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
}

/// `POST /_matrix/federation/v1/user/keys/claim`.
pub async fn claim_keys_route(State(s): State<AppState>, signed: Signed) -> ApiResult<Json<Value>> {
    let body: ClaimBody = serde_json::from_slice(&signed.body)
        .map_err(|e| Error::bad_json(format!("Invalid keys claim: {e}")))?;
    Ok(Json(
        s.services
            .claim_keys_for_federation(&signed.origin, body.one_time_keys)
            .await?,
    ))
}
