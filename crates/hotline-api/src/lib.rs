//! Hotline's HTTP edge: the Matrix Client-Server API and Hotline's own
//! `/_hotline/v1` API over axum.
//!
//! **API Boundary:** paths and methods of Matrix endpoints come from ruma's
//! request metadata (`route::<ruma::api::...::Request>`), never retyped.
//! Handlers are named after the spec's operations (`sendMessageEvent` →
//! `send_message_event_route`), one module per spec area.
//!
//! **Architecture Invariant:** this crate holds no rules; it parses, calls a
//! service, and serialises. Errors become Matrix errors only in [`error`].

pub mod client;
pub mod error;
pub mod extract;
pub mod federation;
mod hotline;
pub mod metrics;
pub mod office;
pub mod push_gateway;
pub mod server;
pub mod web_push;

use std::sync::Arc;

use axum::handler::Handler;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use hotline_service::Services;
use ruma::api::path_builder::{SinglePath, VersionHistory};
use ruma::api::Metadata;

pub use error::{ApiError, ApiResult};

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    pub metrics: Arc<metrics::Metrics>,
    /// The signed `/_matrix/key/v2/server` answer, re-signed when half its
    /// validity is gone (signing on every request is work for anyone).
    server_keys: Arc<parking_lot::Mutex<Option<federation::keys::SignedKeys>>>,
}

/// Every path a ruma endpoint is served at (stable and unstable).
pub trait EndpointPaths {
    fn all_paths(&self) -> Vec<&'static str>;
}

impl EndpointPaths for VersionHistory {
    fn all_paths(&self) -> Vec<&'static str> {
        self.stable_paths()
            .map(|(_, p)| p)
            .chain(self.unstable_paths().map(|(_, p)| p))
            .collect()
    }
}

impl EndpointPaths for SinglePath {
    fn all_paths(&self) -> Vec<&'static str> {
        vec![self.path()]
    }
}

fn method_filter(m: &http::Method) -> MethodFilter {
    match *m {
        http::Method::GET => MethodFilter::GET,
        http::Method::POST => MethodFilter::POST,
        http::Method::PUT => MethodFilter::PUT,
        http::Method::DELETE => MethodFilter::DELETE,
        _ => MethodFilter::GET,
    }
}

/// The routes being assembled, with every path they serve recorded, so
/// [`served_paths`] lists them from the same code that builds the router (the
/// fuzz test checks it covers each one).
pub struct Routes {
    router: Router<AppState>,
    paths: Vec<&'static str>,
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

impl Routes {
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            paths: Vec::new(),
        }
    }

    /// `Router::route`, recording the path.
    pub fn route(mut self, path: &'static str, method_router: MethodRouter<AppState>) -> Self {
        self.router = self.router.route(path, method_router);
        self.paths.push(path);
        self
    }

    /// `Router::merge`, keeping both lists of paths.
    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.paths.extend(other.paths);
        self
    }
}

/// Router extension: `.endpoint::<Request>(handler)` serves the handler at
/// the endpoint's method and paths, as ruma defines them.
pub trait RouterExt {
    fn endpoint<R, H, T>(self, handler: H) -> Self
    where
        R: Metadata,
        R::PathBuilder: EndpointPaths,
        H: Handler<T, AppState>,
        T: 'static;
}

impl RouterExt for Routes {
    fn endpoint<R, H, T>(mut self, handler: H) -> Self
    where
        R: Metadata,
        R::PathBuilder: EndpointPaths,
        H: Handler<T, AppState>,
        T: 'static,
    {
        for path in R::PATH_BUILDER.all_paths() {
            self = self.route(path, on(method_filter(&R::METHOD), handler.clone()));
        }
        self
    }
}

/// Unknown endpoints: `404 M_UNRECOGNIZED`.
pub(crate) async fn unrecognized_route(method: http::Method, uri: http::Uri) -> Response {
    tracing::debug!(%method, path = uri.path(), "unrecognized endpoint");
    unrecognized().await
}

async fn unrecognized() -> Response {
    ApiError(hotline_service::Error::Unrecognized).into_response()
}

/// Known path, wrong method: `405 M_UNRECOGNIZED`.
pub(crate) async fn method_not_allowed() -> Response {
    let mut r = ApiError(hotline_service::Error::Unrecognized).into_response();
    *r.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// Every route the application serves (the web app's files aside).
fn routes() -> Routes {
    client::routes()
        .merge(hotline::routes())
        .merge(web_push::routes())
        .route("/healthz", axum::routing::get(|| async { "ok" }))
}

/// The path templates of every route [`app`] serves (axum syntax,
/// `{param}`), each once per `route` call; the methods are whatever the
/// router answers at them without `405`.
pub fn served_paths() -> Vec<&'static str> {
    routes().paths
}

/// The paths the federation listener serves (for the fuzz test's coverage).
pub fn served_federation_paths() -> Vec<&'static str> {
    federation::routes().paths
}

/// The whole application.
pub fn app(services: Arc<Services>) -> Router {
    apps(services).main
}

/// The routers of a server's listeners, counting into one set of metrics.
pub struct Apps {
    /// The client listener: the Client-Server API, Hotline's API, the web app.
    pub main: Router,
    /// `metrics_listen`: `/metrics` only.
    pub metrics_only: Router,
    /// The federation listener (TLS): the Server-Server API only.
    pub federation: Router,
    /// The protocol office's Unix socket ([`office`]).
    pub office: Router,
}

/// The application, and a router serving only `/metrics` for the
/// `metrics_listen` address; both count into the same metrics.
///
/// The main router serves `/metrics` only to a request bearing
/// `metrics_token`; that route sits outside the layers below, so the
/// metrics token is never taken for an access token.
pub fn apps(services: Arc<Services>) -> Apps {
    let state = AppState {
        services,
        metrics: Arc::new(metrics::Metrics::default()),
        server_keys: Default::default(),
    };
    let metrics_only = Router::new()
        .route("/metrics", axum::routing::get(metrics::metrics_route))
        .with_state(state.clone());
    let federation = federation::app(state.services.clone(), state.metrics.clone());
    let office = office::router(state.clone());
    let main = routes()
        .router
        .fallback(web_app)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            extract::check_credentials,
        ))
        .layer(axum::middleware::from_fn(error::contain_failures))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(cors))
        .route(
            "/metrics",
            axum::routing::get(metrics::metrics_with_token_route),
        )
        .with_state(state);
    Apps {
        main,
        metrics_only,
        federation,
        office,
    }
}

/// Serves the web app's files; anything not a file falls back to
/// `index.html`, and Matrix paths that reach here are unknown endpoints.
async fn web_app(
    axum::extract::State(state): axum::extract::State<AppState>,
    method: http::Method,
    headers: http::HeaderMap,
    uri: http::Uri,
) -> Response {
    let path = uri.path();
    let Some(dir) = state.services.config.web_dir.clone() else {
        return unrecognized_route(method, uri).await;
    };
    if method != http::Method::GET || path.starts_with("/_matrix") || path.starts_with("/_hotline")
    {
        return unrecognized_route(method.clone(), uri.clone()).await;
    }
    let rel = path.trim_start_matches('/');
    let safe = !rel.split('/').any(|s| s == ".." || s.starts_with('.'));
    let mut file = if rel.is_empty() || !safe {
        dir.join("index.html")
    } else {
        dir.join(rel)
    };
    if !tokio::fs::metadata(&file).await.is_ok_and(|m| m.is_file()) {
        file = dir.join("index.html");
    }
    let mime = match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript",
        Some("css") => "text/css",
        Some("wasm") => "application/wasm",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") | Some("webmanifest") => "application/json",
        Some("woff2") => "font/woff2",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    };
    // Vite names everything under assets/ by content hash: it never changes
    // under the same name. The page itself is revalidated every time.
    let cache = if file.starts_with(dir.join("assets")) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    // The build writes a gzip twin (`NAME.gz`) beside large files; the
    // crypto WebAssembly shrinks from 5.4 to 1.8 MB.
    let gzip_ok = headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut gz = file.clone().into_os_string();
    gz.push(".gz");
    if gzip_ok {
        if let Ok(bytes) = tokio::fs::read(&gz).await {
            return (
                [
                    (http::header::CONTENT_TYPE, mime),
                    (http::header::CONTENT_ENCODING, "gzip"),
                    (http::header::CACHE_CONTROL, cache),
                    (http::header::VARY, "Accept-Encoding"),
                ],
                bytes,
            )
                .into_response();
        }
    }
    match tokio::fs::read(&file).await {
        Ok(bytes) => (
            [
                (http::header::CONTENT_TYPE, mime),
                (http::header::CACHE_CONTROL, cache),
                (http::header::VARY, "Accept-Encoding"),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => unrecognized().await,
    }
}

/// Matrix clients in browsers need CORS on every endpoint.
async fn cors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let preflight = req.method() == http::Method::OPTIONS;
    let mut resp = if preflight {
        http::StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(
        "access-control-allow-origin",
        http::HeaderValue::from_static("*"),
    );
    h.insert(
        "access-control-allow-methods",
        http::HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        http::HeaderValue::from_static("X-Requested-With, Content-Type, Authorization"),
    );
    resp
}
