//! Prometheus metrics: requests and latencies by endpoint, open `/sync`
//! waiters, events stored. Plain text exposition, no extra dependency.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
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

#[derive(Default)]
pub struct Metrics {
    /// (method, path, status class) → count; path → latency histogram.
    inner: Mutex<(
        BTreeMap<(String, String, u16), u64>,
        BTreeMap<String, Histogram>,
    )>,
}

/// Middleware recording each request.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let secs = start.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    let mut m = state.metrics.inner.lock();
    *m.0.entry((method, path.clone(), status)).or_default() += 1;
    let h = m.1.entry(path).or_default();
    for (i, b) in BUCKETS.iter().enumerate() {
        if secs <= *b {
            h.counts[i] += 1;
        }
    }
    h.sum += secs;
    h.count += 1;
    resp
}

/// `GET /metrics`.
pub async fn metrics_route(State(state): State<AppState>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let m = state.metrics.inner.lock();
    out.push_str("# TYPE hotline_http_requests_total counter\n");
    for ((method, path, status), n) in &m.0 {
        let _ = writeln!(out, "hotline_http_requests_total{{method=\"{method}\",path=\"{path}\",status=\"{status}\"}} {n}");
    }
    out.push_str("# TYPE hotline_http_request_duration_seconds histogram\n");
    for (path, h) in &m.1 {
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
    drop(m);
    out.push_str("# TYPE hotline_sync_waiters gauge\n");
    let _ = writeln!(
        out,
        "hotline_sync_waiters {}",
        state.services.notifier.waiters()
    );
    out.push_str("# TYPE hotline_stream_position gauge\n");
    let _ = writeln!(
        out,
        "hotline_stream_position {}",
        state.services.store.current_position()
    );
    out
}
