//! Extractors: who is asking, and what they sent, with every rejection
//! turned into a Matrix error.

use axum::extract::{FromRequest, FromRequestParts, Request};
use hotline_service::accounts::Sender;
use hotline_service::Error;
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::AppState;

/// The authenticated sender. Rejects with `M_MISSING_TOKEN` /
/// `M_UNKNOWN_TOKEN`; rate-limits per user.
pub struct Auth(pub Sender);

fn bearer(headers: &http::HeaderMap, uri: &http::Uri) -> Option<String> {
    if let Some(h) = headers.get(http::header::AUTHORIZATION) {
        let v = h.to_str().ok()?;
        return v.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    // Deprecated query-parameter form, still used by some clients.
    uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("access_token=").map(|t| t.to_owned()))
    })
}

/// What the request's access token turned out to be, decided once by
/// [`check_credentials`] for every request.
#[derive(Clone)]
enum Credentials {
    /// No token.
    Absent,
    Valid(Sender),
    /// A token nobody holds (counted against the address).
    Unknown,
}

impl Credentials {
    /// The sender, or the error an endpoint that needs one answers.
    fn sender(&self) -> Result<Option<Sender>, ApiError> {
        match self {
            Credentials::Absent => Ok(None),
            Credentials::Valid(s) => Ok(Some(s.clone())),
            Credentials::Unknown => Err(Error::UnknownToken.into()),
        }
    }
}

/// The layer every request passes: resolves its access token once, and
/// takes from the client address's bucket when the request carries no
/// valid token, so every unauthenticated endpoint (`/login`, `/register`,
/// `/profile`, `/versions`, `/_matrix/key/v2/server`, `/publicRooms`, the
/// Hotline directory and enrolment, the web app's files ...) is limited per
/// address in this one place. An unknown token is already limited per
/// address by the failed token checks, so it is not charged twice. An
/// unknown token on an endpoint that needs none is ignored there, as before.
pub async fn check_credentials(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let ip = client_ip(req.extensions());
    let credentials = match bearer(req.headers(), req.uri()) {
        None => Credentials::Absent,
        Some(token) => match state.services.authenticate(&token, ip) {
            Ok(sender) => Credentials::Valid(sender),
            Err(Error::UnknownToken) => Credentials::Unknown,
            Err(e) => return ApiError(e).into_response(),
        },
    };
    if matches!(credentials, Credentials::Absent) {
        let key = ip.map(|ip| ip.to_string()).unwrap_or_default();
        if let Err(e) = state.services.ratelimit.check_ip(&key) {
            return ApiError(e).into_response();
        }
    }
    req.extensions_mut().insert(credentials);
    next.run(req).await
}

/// The request's credentials: from [`check_credentials`], or resolved here
/// when the router runs without it.
fn credentials(parts: &Parts, state: &AppState) -> Result<Credentials, ApiError> {
    if let Some(c) = parts.extensions.get::<Credentials>() {
        return Ok(c.clone());
    }
    let ip = client_ip(&parts.extensions);
    Ok(match bearer(&parts.headers, &parts.uri) {
        None => Credentials::Absent,
        Some(token) => match state.services.authenticate(&token, ip) {
            Ok(sender) => Credentials::Valid(sender),
            Err(Error::UnknownToken) => Credentials::Unknown,
            Err(e) => return Err(e.into()),
        },
    })
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let sender = credentials(parts, state)?
            .sender()?
            .ok_or(Error::MissingToken)?;
        state
            .services
            .ratelimit
            .check_user(sender.user_id.as_str())?;
        Ok(Auth(sender))
    }
}

/// The client's address (absent only when served without connection info).
fn client_ip(extensions: &http::Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The sender if a token was given (for endpoints where it is optional);
/// an unknown token is refused. Rate-limits per user when there is one.
pub struct MaybeAuth(pub Option<Sender>);

impl FromRequestParts<AppState> for MaybeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let sender = credentials(parts, state)?.sender()?;
        if let Some(s) = &sender {
            state.services.ratelimit.check_user(s.user_id.as_str())?;
        }
        Ok(MaybeAuth(sender))
    }
}

/// The address a request came from, for logs.
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(client_ip(&parts.extensions)))
    }
}

/// The client address's bucket also for callers with a valid token, on
/// endpoints that guess at credentials or names (login, registration,
/// enrolment, the room directory): one valid token must not lift the
/// address's limit there. Callers without a token were charged once by
/// [`check_credentials`] already.
pub struct IpLimited;

impl FromRequestParts<AppState> for IpLimited {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(Credentials::Absent) = parts.extensions.get::<Credentials>() {
            return Ok(IpLimited);
        }
        let ip = client_ip(&parts.extensions)
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        state.services.ratelimit.check_ip(&ip)?;
        Ok(IpLimited)
    }
}

/// A JSON body: `M_NOT_JSON` when it is not JSON, `M_BAD_JSON` when it is
/// JSON of the wrong shape, `M_TOO_LARGE` past the configured size (refused
/// before it is read whole).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.services.config.max_request_bytes;
        let bytes = read_body(req, limit).await?;
        let bytes: &[u8] = if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            b"{}"
        } else {
            &bytes
        };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| Error::NotJson)?;
        if !value.is_object() {
            return Err(Error::bad_json("Request body must be a JSON object").into());
        }
        check_depth(&value)?;
        serde_json::from_value(value)
            .map(JsonBody)
            .map_err(|e| Error::bad_json(e.to_string()).into())
    }
}

/// The deepest nesting a JSON body may have. serde_json reads at most 128
/// levels, and what a client sends is read again inside larger documents
/// (event content inside an event, inside a `/sync` response; push rule
/// matching): a body at 127 levels parsed here would fail, or panic, there.
/// No Matrix client nests anywhere near this.
pub const MAX_BODY_DEPTH: usize = 64;

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn check_depth(v: &serde_json::Value) -> Result<(), ApiError> {
    if depth(v) > MAX_BODY_DEPTH {
        return Err(Error::bad_json(format!(
            "JSON nested more than {MAX_BODY_DEPTH} levels deep"
        ))
        .into());
    }
    Ok(())
}

/// Reads a body of at most `limit` bytes.
pub async fn read_body(req: Request, limit: usize) -> Result<bytes::Bytes, ApiError> {
    if let Some(len) = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
    {
        if len > limit {
            return Err(Error::TooLarge("Request body too large".into()).into());
        }
    }
    let body = http_body_util::Limited::new(req.into_body(), limit);
    match http_body_util::BodyExt::collect(body).await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Error::TooLarge("Request body too large".into()).into())
        }
        Err(e) if crate::server::is_body_timeout(&*e) => Err(Error::RequestTimeout.into()),
        Err(_) => Err(Error::bad_json("Could not read the request body").into()),
    }
}

/// Path parameters, percent-decoded, parsed into `T` with `M_INVALID_PARAM`
/// on failure (bad room id, bad user id...).
pub struct PathArgs<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for PathArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(p) => Ok(PathArgs(p.0)),
            Err(e) => Err(Error::invalid_param(format!(
                "Invalid path parameter: {}",
                e.body_text()
            ))
            .into()),
        }
    }
}

/// Every value of a query parameter that may repeat (`?via=a&via=b`),
/// which the struct form of [`QueryArgs`] cannot read.
pub fn repeated_query(query: Option<&str>, key: &str) -> Result<Vec<String>, Error> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|e| Error::invalid_param(format!("Invalid query parameter: {e}")))?;
    Ok(pairs
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect())
}

/// Query parameters with `M_INVALID_PARAM` on failure.
pub struct QueryArgs<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for QueryArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // serde_urlencoded directly: axum's `Query` also tracks the path of
        // the failing field, which costs as much again on every `/sync`.
        serde_urlencoded::from_str(parts.uri.query().unwrap_or_default())
            .map(QueryArgs)
            .map_err(|e| Error::invalid_param(format!("Invalid query parameter: {e}")).into())
    }
}

/// A JSON object body kept as raw JSON (event content, account data): the
/// server relays it without looking inside.
pub struct RawJsonObject(pub Box<serde_json::value::RawValue>);

impl FromRequest<AppState> for RawJsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.services.config.max_request_bytes;
        let bytes = read_body(req, limit).await?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| Error::NotJson)?;
        if !value.is_object() {
            return Err(Error::bad_json("Request body must be a JSON object").into());
        }
        check_depth(&value)?;
        // Re-serialised from the parsed value: no duplicate keys or odd
        // whitespace reach storage.
        Ok(RawJsonObject(
            serde_json::value::to_raw_value(&value).map_err(Error::from)?,
        ))
    }
}
