//! The one place where Hotline's errors become Matrix `errcode`s and HTTP
//! statuses.
//!
//! **Architecture Invariant:** internal causes are logged with the request's
//! path, never shown to the client; clients get a clean message.

use axum::response::{IntoResponse, Response};
use hotline_service::Error;
use http::StatusCode;
use serde_json::json;

/// An error on its way to a client.
pub struct ApiError(pub Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

/// The errcode and status of each error.
pub fn errcode(e: &Error) -> (StatusCode, &'static str) {
    use Error::*;
    match e {
        Forbidden(_) => (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        NotFound(_) => (StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        MissingToken => (StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        UnknownToken => (StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
        NotJson => (StatusCode::BAD_REQUEST, "M_NOT_JSON"),
        BadJson(_) => (StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        InvalidParam(_) => (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        MissingParam(_) => (StatusCode::BAD_REQUEST, "M_MISSING_PARAM"),
        InvalidUsername(_) => (StatusCode::BAD_REQUEST, "M_INVALID_USERNAME"),
        UserInUse => (StatusCode::BAD_REQUEST, "M_USER_IN_USE"),
        RoomInUse => (StatusCode::BAD_REQUEST, "M_ROOM_IN_USE"),
        TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
        LimitExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED"),
        Unrecognized => (StatusCode::NOT_FOUND, "M_UNRECOGNIZED"),
        UnsupportedRoomVersion(_) => (StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION"),
        BadState(_) => (StatusCode::BAD_REQUEST, "M_BAD_STATE"),
        RegistrationDisabled => (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        Uiaa(_) => (StatusCode::UNAUTHORIZED, "M_FORBIDDEN"),
        ServerControlled(_) => (StatusCode::METHOD_NOT_ALLOWED, "M_BAD_JSON"),
        WrongRoomKeysVersion { .. } => (StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION"),
        Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = errcode(&self.0);
        let body = match &self.0 {
            Error::Uiaa(flows) => flows.clone(),
            Error::LimitExceeded { retry_after_ms } => {
                json!({"errcode": code, "error": self.0.to_string(), "retry_after_ms": retry_after_ms})
            }
            Error::WrongRoomKeysVersion { current_version } => {
                json!({"errcode": code, "error": self.0.to_string(), "current_version": current_version})
            }
            Error::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                json!({"errcode": code, "error": "Internal server error"})
            }
            e => json!({"errcode": code, "error": e.to_string()}),
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Error::LimitExceeded { retry_after_ms } = &self.0 {
            let secs = retry_after_ms.div_ceil(1000).to_string();
            if let Ok(v) = http::HeaderValue::from_str(&secs) {
                resp.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
        }
        if matches!(self.0, Error::MissingToken | Error::UnknownToken) {
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
