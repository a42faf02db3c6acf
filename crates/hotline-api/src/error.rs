//! The one place where Hotline's errors become Matrix `errcode`s and HTTP
//! statuses.
//!
//! **Architecture Invariant:** internal causes are logged with the request's
//! path, never shown to the client; clients get a clean message.

use std::panic::AssertUnwindSafe;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
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
        LimitExceeded { .. } | UrgentQuota { .. } => {
            (StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED")
        }
        RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "M_UNKNOWN"),
        Unrecognized => (StatusCode::NOT_FOUND, "M_UNRECOGNIZED"),
        UnsupportedRoomVersion(_) => (StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION"),
        IncompatibleRoomVersion(_) => (StatusCode::BAD_REQUEST, "M_INCOMPATIBLE_ROOM_VERSION"),
        BadState(_) => (StatusCode::BAD_REQUEST, "M_BAD_STATE"),
        RegistrationDisabled => (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        Uiaa(_) => (StatusCode::UNAUTHORIZED, "M_FORBIDDEN"),
        ServerControlled(_) => (StatusCode::METHOD_NOT_ALLOWED, "M_BAD_JSON"),
        CannotThumbnail => (StatusCode::BAD_REQUEST, "M_UNKNOWN"),
        WrongRoomKeysVersion { .. } => (StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION"),
        // 503, not Synapse's 403 for its user limits: the condition is the
        // server's and passes, and clients retry a 5xx (with the same
        // transaction id, so a message is sent once) where they give up on
        // a 4xx.
        UnknownPos => (StatusCode::BAD_REQUEST, "M_UNKNOWN_POS"),
        StorageFull => (StatusCode::SERVICE_UNAVAILABLE, "M_RESOURCE_LIMIT_EXCEEDED"),
        Unauthorized(_) => (StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED"),
        Unavailable(_) => (StatusCode::BAD_GATEWAY, "M_UNKNOWN"),
        RemoteTooLarge(_) => (StatusCode::BAD_GATEWAY, "M_TOO_LARGE"),
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
            Error::UrgentQuota {
                retry_after_ms,
                resets_ts,
                ..
            } => {
                json!({"errcode": code, "error": self.0.to_string(), "retry_after_ms": retry_after_ms, "org.hotline.resets_ts": resets_ts})
            }
            Error::IncompatibleRoomVersion(version) => {
                json!({"errcode": code, "error": self.0.to_string(), "room_version": version})
            }
            Error::WrongRoomKeysVersion { current_version } => {
                json!({"errcode": code, "error": self.0.to_string(), "current_version": current_version})
            }
            // The cause travels to `contain_failures`, which logs it
            // with the request's method and path.
            Error::Internal(_) => json!({"errcode": code, "error": "Internal server error"}),
            e => json!({"errcode": code, "error": e.to_string()}),
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Error::Internal(cause) = &self.0 {
            resp.extensions_mut().insert(InternalCause(cause.clone()));
        }
        if let Error::RequestTimeout = &self.0 {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        if let Error::LimitExceeded { retry_after_ms } | Error::UrgentQuota { retry_after_ms, .. } =
            &self.0
        {
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

/// The cause of a `500`, kept from the client and handed to the log.
#[derive(Clone)]
struct InternalCause(String);

/// Middleware around every handler: logs internal errors with the request's
/// method and path (never its query, which may hold an access token, nor its
/// body), and turns a panicking handler into `500 M_UNKNOWN` instead of a
/// dropped connection.
pub async fn contain_failures(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    // `Uri` clones share its bytes: no copy on the hot path.
    let uri = req.uri().clone();
    match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(resp) => {
            if let Some(InternalCause(cause)) = resp.extensions().get::<InternalCause>() {
                tracing::error!(%method, path = uri.path(), %cause, "internal error");
            }
            resp
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(%method, path = uri.path(), panic = %what, "handler panicked");
            let (status, code) = errcode(&Error::Internal(String::new()));
            (
                status,
                axum::Json(json!({"errcode": code, "error": "Internal server error"})),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn call(app: Router, path: &str) -> (StatusCode, serde_json::Value) {
        let resp = app
            .oneshot(http::Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_m_unknown_instead_of_dropping_the_connection() {
        async fn boom() -> &'static str {
            panic!("a bug")
        }
        let app = Router::new()
            .route("/boom", get(boom))
            .layer(axum::middleware::from_fn(contain_failures));
        let (status, body) = call(app, "/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["errcode"], "M_UNKNOWN");
        assert!(!body["error"].as_str().unwrap().contains("a bug"), "{body}");
    }

    #[tokio::test]
    async fn an_internal_error_shows_the_client_no_cause() {
        async fn fails() -> Result<&'static str, ApiError> {
            Err(ApiError(Error::internal("disk /secret/path is full")))
        }
        let app = Router::new()
            .route("/fails", get(fails))
            .layer(axum::middleware::from_fn(contain_failures));
        let (status, body) = call(app, "/fails").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["errcode"], "M_UNKNOWN");
        assert_eq!(body["error"], "Internal server error");
    }
}
