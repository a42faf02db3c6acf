//! Discovery and keys: `/_matrix/federation/v1/version`, the server's own
//! keys, and this server as a notary for its peers' keys.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use ruma::OwnedServerName;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::extract::{JsonBody, PathArgs};
use crate::{ApiResult, AppState};

/// `GET /_matrix/federation/v1/version`.
pub async fn get_server_version_route() -> Json<Value> {
    Json(json!({"server": {"name": "Hotline", "version": env!("CARGO_PKG_VERSION")}}))
}

/// A signed `/_matrix/key/v2/server` answer, serialised once.
pub(crate) struct SignedKeys {
    body: bytes::Bytes,
    /// Re-signed from then on: half its validity is gone.
    stale_at_ms: i64,
}

/// `GET /_matrix/key/v2/server`: the key attestations, events and
/// federation requests are signed with, and the keys it replaced. Anyone
/// may ask, so the signed answer is kept and served as is until half of
/// its `valid_until_ts` span has passed (Synapse likewise signs its answer
/// once, not per request).
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

/// `GET /_matrix/key/v2/query/{serverName}`.
pub async fn get_remote_server_keys_route(
    State(s): State<AppState>,
    PathArgs(server): PathArgs<OwnedServerName>,
) -> ApiResult<Json<Value>> {
    let keys = s.services.notary_keys(&server).await?;
    Ok(Json(
        json!({ "server_keys": keys.into_iter().collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize)]
pub struct KeyQuery {
    server_keys: BTreeMap<OwnedServerName, Value>,
}

/// The most servers one notary query may name.
const MAX_QUERIED_SERVERS: usize = 32;

/// `POST /_matrix/key/v2/query`.
pub async fn get_remote_server_keys_batch_route(
    State(s): State<AppState>,
    JsonBody(query): JsonBody<KeyQuery>,
) -> ApiResult<Json<Value>> {
    if query.server_keys.len() > MAX_QUERIED_SERVERS {
        return Err(hotline_service::Error::invalid_param(format!(
            "At most {MAX_QUERIED_SERVERS} servers per query"
        ))
        .into());
    }
    let mut out = Vec::new();
    for server in query.server_keys.keys() {
        if let Some(k) = s.services.notary_keys(server).await? {
            out.push(k);
        }
    }
    Ok(Json(json!({ "server_keys": out })))
}
