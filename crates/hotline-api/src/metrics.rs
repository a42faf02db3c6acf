//! Prometheus metrics: requests and latencies by endpoint, open `/sync`
//! waiters, events stored. Plain text exposition, no extra dependency.
//!
//! Not public: served on the `metrics_listen` address (only there, nothing
//! else), and on the main listener only to a request bearing
//! `metrics_token`; with neither set, nowhere.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::Method;
use parking_lot::Mutex;

use crate::AppState;

/// Latency buckets in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 30.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// One route's numbers.
#[derive(Default)]
struct Route {
    /// (method, status) → count; a route sees few of each.
    requests: Vec<((Method, u16), u64)>,
    latency: Histogram,
}

#[derive(Default)]
pub struct Metrics {
    /// By route (the matched path pattern): keyed by `str` so that a request
    /// on a known route allocates nothing here.
    inner: Mutex<BTreeMap<Box<str>, Route>>,
}

/// Middleware recording each request.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let start = Instant::now();
    let resp = next.run(req).await;
    let secs = start.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    let path = path.as_ref().map_or("unmatched", |p| p.as_str());
    let mut routes = state.metrics.inner.lock();
    let route = match routes.get_mut(path) {
        Some(r) => r,
        None => routes.entry(path.into()).or_default(),
    };
    match route
        .requests
        .iter_mut()
        .find(|(k, _)| k.0 == method && k.1 == status)
    {
        Some((_, n)) => *n += 1,
        None => route.requests.push(((method, status), 1)),
    }
    let h = &mut route.latency;
    for (i, b) in BUCKETS.iter().enumerate() {
        if secs <= *b {
            h.counts[i] += 1;
        }
    }
    h.sum += secs;
    h.count += 1;
    resp
}

/// Compares two secrets in time that depends on their length only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /metrics` on the main listener: `404 M_UNRECOGNIZED` unless
/// `metrics_token` is set, then `401 M_MISSING_TOKEN` without a bearer
/// token and `403 M_FORBIDDEN` with another one. Wrong tokens are charged to
/// the address's bucket, so the token cannot be guessed at speed.
pub async fn metrics_with_token_route(State(state): State<AppState>, req: Request) -> Response {
    use axum::response::IntoResponse;
    use hotline_service::Error;
    let Some(expected) = state.services.config.metrics_token.as_deref() else {
        return crate::ApiError(Error::Unrecognized).into_response();
    };
    let given = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let refused = match given {
        Some(t) if same_secret(t.as_bytes(), expected.as_bytes()) => {
            return metrics_route(State(state)).await.into_response();
        }
        Some(_) => Error::forbidden("Wrong metrics token"),
        None => Error::MissingToken,
    };
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    if let Err(e) = state.services.ratelimit.check_ip(&ip) {
        return crate::ApiError(e).into_response();
    }
    crate::ApiError(refused).into_response()
}

/// `GET /metrics`.
pub async fn metrics_route(State(state): State<AppState>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let routes = state.metrics.inner.lock();
    out.push_str("# TYPE hotline_http_requests_total counter\n");
    for (path, route) in routes.iter() {
        let mut requests = route.requests.clone();
        requests.sort_by(|a, b| (a.0 .0.as_str(), a.0 .1).cmp(&(b.0 .0.as_str(), b.0 .1)));
        for ((method, status), n) in requests {
            let _ = writeln!(out, "hotline_http_requests_total{{method=\"{method}\",path=\"{path}\",status=\"{status}\"}} {n}");
        }
    }
    out.push_str("# TYPE hotline_http_request_duration_seconds histogram\n");
    for (path, route) in routes.iter() {
        let h = &route.latency;
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "hotline_http_request_duration_seconds_bucket{{path=\"{path}\",le=\"{b}\"}} {}",
                h.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "hotline_http_request_duration_seconds_bucket{{path=\"{path}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "hotline_http_request_duration_seconds_sum{{path=\"{path}\"}} {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "hotline_http_request_duration_seconds_count{{path=\"{path}\"}} {}",
            h.count
        );
    }
    drop(routes);
    out.push_str("# TYPE hotline_sync_waiters gauge\n");
    let _ = writeln!(
        out,
        "hotline_sync_waiters {}",
        state.services.notifier.waiters()
    );
    out.push_str("# HELP hotline_events_stored Room events in the store.\n");
    out.push_str("# TYPE hotline_events_stored gauge\n");
    let _ = writeln!(
        out,
        "hotline_events_stored {}",
        state.services.events_stored()
    );
    let peers = state.services.federation_status();
    if !peers.is_empty() {
        out.push_str("# HELP hotline_federation_queued_events Events waiting to go to a peer.\n");
        out.push_str("# TYPE hotline_federation_queued_events gauge\n");
        for (peer, _, queued) in &peers {
            let _ = writeln!(
                out,
                "hotline_federation_queued_events{{peer=\"{peer}\"}} {queued}"
            );
        }
        out.push_str(
            "# HELP hotline_federation_failures Failed attempts since the last success.\n",
        );
        out.push_str("# TYPE hotline_federation_failures gauge\n");
        for (peer, status, _) in &peers {
            let _ = writeln!(
                out,
                "hotline_federation_failures{{peer=\"{peer}\"}} {}",
                status.failures
            );
        }
        out.push_str("# HELP hotline_federation_last_success_timestamp_seconds When a transaction last reached the peer.\n");
        out.push_str("# TYPE hotline_federation_last_success_timestamp_seconds gauge\n");
        for (peer, status, _) in &peers {
            let _ = writeln!(
                out,
                "hotline_federation_last_success_timestamp_seconds{{peer=\"{peer}\"}} {}",
                status.last_success_ts as f64 / 1000.0
            );
        }
        out.push_str("# TYPE hotline_federation_events_sent_total counter\n");
        for (peer, status, _) in &peers {
            let _ = writeln!(
                out,
                "hotline_federation_events_sent_total{{peer=\"{peer}\"}} {}",
                status.events
            );
        }
    }
    out.push_str("# TYPE hotline_stream_position gauge\n");
    let _ = writeln!(
        out,
        "hotline_stream_position {}",
        state.services.store.current_position()
    );
    out
}
