//! Transactions: `PUT /_matrix/federation/v1/send/{txnId}`.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::Signed;
use crate::extract::PathArgs;
use crate::{ApiResult, AppState};

/// `PUT /_matrix/federation/v1/send/{txnId}`: each PDU's fate in `pdus`;
/// a PDU refused is named with the reason, the others are taken.
pub async fn send_transaction_message_route(
    State(s): State<AppState>,
    PathArgs(_txn_id): PathArgs<String>,
    signed: Signed,
) -> ApiResult<Json<Value>> {
    let pdus = s
        .services
        .receive_transaction(&signed.origin, &signed.body)
        .await?;
    Ok(Json(json!({ "pdus": pdus })))
}
