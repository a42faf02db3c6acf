//! Abuse beside the DM workload (`dm --abuse`): what an attacker on the
//! same network throws at a server while its real users talk, all at once,
//! all to loopback, all bounded in count and time (they run from the start
//! of the warm-up to the end of the measurement window, then stop):
//!
//! - **slowloris**: `--slowloris` (500) connections that each send a partial
//!   request head and trickle one more header line every
//!   `--slowloris-interval` seconds, never finishing it. A connection the
//!   server closes is opened again after `--slowloris-reconnect` seconds, as
//!   an attacker would; each one closed by the server is counted.
//! - **login brute force**: wrong passwords against one real account
//!   (`--brute-one-rate` per second) and spread over many accounts, the DM
//!   users and ones that do not exist (`--brute-many-rate`).
//! - **unauthenticated flood**: `/profile/{user}`, `/_matrix/key/v2/server`
//!   and `/versions` in turn (`--flood-rate` per second in all).
//!
//! The request streams are open loops: each of `--abuse-conns` keep-alive
//! connections per stream fires at its share of the rate and keeps at most
//! one request in flight (an attacker's connection is as patient as a real
//! client's); ticks that find the previous request unanswered are skipped
//! and counted. Reported per stream: requests sent, answers by status (so
//! how many were refused with 429), connections the server closed, timeouts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::conn::{Conn, Failure};
use crate::matrix::enc;
use crate::stats::now_ns;

#[derive(clap::Args, Clone, Debug)]
pub struct AbuseArgs {
    /// Run the abuse below beside the DM pairs, from the start of the
    /// warm-up to the end of the window.
    #[arg(long)]
    pub abuse: bool,
    /// Idle slow connections held open (partial request heads).
    #[arg(long, default_value_t = 500)]
    pub slowloris: usize,
    /// Seconds between the header lines each slow connection trickles.
    #[arg(long, default_value_t = 5.0)]
    pub slowloris_interval: f64,
    /// Seconds before a slow connection the server closed is opened again.
    #[arg(long, default_value_t = 1.0)]
    pub slowloris_reconnect: f64,
    /// Wrong-password logins per second against one real account.
    #[arg(long, default_value_t = 100.0)]
    pub brute_one_rate: f64,
    /// Wrong-password logins per second spread over many accounts (the DM
    /// users and 100 that do not exist).
    #[arg(long, default_value_t = 100.0)]
    pub brute_many_rate: f64,
    /// Unauthenticated requests per second in all, in turn to `/profile`,
    /// `/_matrix/key/v2/server` and `/versions`.
    #[arg(long, default_value_t = 1000.0)]
    pub flood_rate: f64,
    /// Keep-alive connections per request stream (brute force, flood).
    #[arg(long, default_value_t = 8)]
    pub abuse_conns: usize,
}

/// Who the abuse aims at.
pub struct Targets {
    /// `http://HOST:PORT`.
    pub base: String,
    /// The real account the one-account brute force guesses at.
    pub victim: String,
    /// Localparts the many-account brute force cycles through.
    pub many: Vec<String>,
    /// A real user id, for `/profile`.
    pub profile_user: String,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    skipped: AtomicU64,
    timeouts: AtomicU64,
    closed_by_server: AtomicU64,
    transport_errors: AtomicU64,
    by_status: parking_counts::Statuses,
}

/// A tiny lock-free status histogram (100..=599).
mod parking_counts {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    pub struct Statuses(Vec<AtomicU64>);

    impl Default for Statuses {
        fn default() -> Self {
            Statuses((0..600).map(|_| AtomicU64::new(0)).collect())
        }
    }

    impl Statuses {
        pub fn add(&self, code: u16) {
            if let Some(c) = self.0.get(code as usize) {
                c.fetch_add(1, Relaxed);
            }
        }
        pub fn snapshot(&self) -> Vec<(u16, u64)> {
            self.0
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let n = c.load(Relaxed);
                    (n > 0).then_some((i as u16, n))
                })
                .collect()
        }
    }
}

impl Counts {
    fn report(&self, secs: f64) -> Value {
        let statuses: BTreeMap<String, u64> = self
            .by_status
            .snapshot()
            .into_iter()
            .map(|(c, n)| (c.to_string(), n))
            .collect();
        let refused_429 = statuses.get("429").copied().unwrap_or(0);
        let sent = self.sent.load(Relaxed);
        json!({
            "sent": sent,
            "per_s": ((sent as f64 / secs.max(1e-9)) * 10.0).round() / 10.0,
            "refused_429": refused_429,
            "statuses": statuses,
            "skipped_ticks": self.skipped.load(Relaxed),
            "timeouts": self.timeouts.load(Relaxed),
            "closed_by_server": self.closed_by_server.load(Relaxed),
            "other_transport_errors": self.transport_errors.load(Relaxed),
        })
    }
}

#[derive(Default)]
struct SlowCounts {
    connects: AtomicU64,
    connect_failures: AtomicU64,
    closed_by_server: AtomicU64,
    /// Closed after the server wrote something (e.g. a `408`).
    answered_then_closed: AtomicU64,
    open_now: AtomicU64,
    peak_open: AtomicU64,
    header_lines_sent: AtomicU64,
    /// Lifetimes (ms) of the connections the server closed.
    lifetimes_ms: std::sync::Mutex<Vec<u64>>,
}

/// Runs every kind of abuse until `stop` turns true; returns the counts.
pub async fn run(a: AbuseArgs, t: Targets, stop: watch::Receiver<bool>) -> Value {
    let t0 = now_ns();
    let t = Arc::new(t);
    let slow = Arc::new(SlowCounts::default());
    let one = Arc::new(Counts::default());
    let many = Arc::new(Counts::default());
    let flood = Arc::new(Counts::default());
    let mut tasks = tokio::task::JoinSet::new();

    let interval = Duration::from_secs_f64(a.slowloris_interval.max(0.01));
    let reconnect = Duration::from_secs_f64(a.slowloris_reconnect.max(0.01));
    for i in 0..a.slowloris {
        let (t, slow, stop) = (t.clone(), slow.clone(), stop.clone());
        // Spread over the first second: 500 connects at one instant would
        // test the accept backlog, not the server.
        let delay = Duration::from_micros(i as u64 * 1_000_000 / a.slowloris.max(1) as u64);
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            slowloris(i, &t.base, interval, reconnect, &slow, stop).await
        });
    }

    let hostport = t.base.trim_start_matches("http://").to_string();
    let login = |user: &str, n: u64| -> Bytes {
        Bytes::from(
            json!({"type": "m.login.password",
                   "identifier": {"type": "m.id.user", "user": user},
                   "password": format!("guess-{n}")})
            .to_string(),
        )
    };
    let conns = a.abuse_conns.max(1);
    let streams: [(Arc<Counts>, f64, u8); 3] = [
        (one.clone(), a.brute_one_rate, 0),
        (many.clone(), a.brute_many_rate, 1),
        (flood.clone(), a.flood_rate, 2),
    ];
    for (counts, rate, kind) in streams {
        if rate <= 0.0 {
            continue;
        }
        let period = Duration::from_secs_f64(conns as f64 / rate);
        for c in 0..conns {
            let (t, counts, mut stop) = (t.clone(), counts.clone(), stop.clone());
            let hostport = hostport.clone();
            let phase = period.mul_f64(c as f64 / conns as f64);
            tasks.spawn(async move {
                let mut conn = Conn::anonymous(&format!("http://{hostport}"));
                let start = tokio::time::Instant::now() + phase;
                let mut k: u64 = 0;
                loop {
                    let due = start + period.mul_f64(k as f64);
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = stop.changed() => return,
                    }
                    if *stop.borrow() {
                        return;
                    }
                    let n = k * conns as u64 + c as u64;
                    let (method, path, body) = match kind {
                        0 => (
                            Method::POST,
                            "/_matrix/client/v3/login".to_string(),
                            Some(login(&t.victim, n)),
                        ),
                        1 => {
                            let user = &t.many[(n as usize) % t.many.len()];
                            (
                                Method::POST,
                                "/_matrix/client/v3/login".to_string(),
                                Some(login(user, n)),
                            )
                        }
                        _ => match n % 3 {
                            0 => (
                                Method::GET,
                                format!("/_matrix/client/v3/profile/{}", enc(&t.profile_user)),
                                None,
                            ),
                            1 => (Method::GET, "/_matrix/key/v2/server".to_string(), None),
                            _ => (Method::GET, "/_matrix/client/versions".to_string(), None),
                        },
                    };
                    counts.sent.fetch_add(1, Relaxed);
                    match conn
                        .request(method, &path, body, Duration::from_secs(10))
                        .await
                    {
                        Ok((status, _)) => counts.by_status.add(status.as_u16()),
                        Err(Failure::Timeout) => {
                            counts.timeouts.fetch_add(1, Relaxed);
                        }
                        Err(Failure::Transport(e)) => {
                            if e.contains("closed")
                                || e.contains("reset")
                                || e.contains("broken pipe")
                            {
                                counts.closed_by_server.fetch_add(1, Relaxed);
                            } else {
                                counts.transport_errors.fetch_add(1, Relaxed);
                            }
                            // Do not spin on a refusing server.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    // Ticks that passed while the request was out are skipped.
                    let next = k + 1;
                    let now = tokio::time::Instant::now();
                    let behind = now.saturating_duration_since(start + period.mul_f64(next as f64));
                    let missed = (behind.as_secs_f64() / period.as_secs_f64()) as u64;
                    counts.skipped.fetch_add(missed, Relaxed);
                    k = next + missed;
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    let secs = (now_ns() - t0) as f64 / 1e9;
    let mut life = slow.lifetimes_ms.lock().unwrap().clone();
    life.sort_unstable();
    let q = |p: f64| -> Option<f64> {
        (!life.is_empty()).then(|| life[((life.len() - 1) as f64 * p) as usize] as f64 / 1000.0)
    };
    json!({
        "seconds": (secs * 10.0).round() / 10.0,
        "slowloris": {
            "target_open": a.slowloris,
            "connects": slow.connects.load(Relaxed),
            "connect_failures": slow.connect_failures.load(Relaxed),
            "closed_by_server": slow.closed_by_server.load(Relaxed),
            "answered_then_closed": slow.answered_then_closed.load(Relaxed),
            "peak_open": slow.peak_open.load(Relaxed),
            "open_at_end": slow.open_now.load(Relaxed),
            "header_lines_sent": slow.header_lines_sent.load(Relaxed),
            "closed_lifetime_s": {"p50": q(0.5), "max": q(1.0)},
        },
        "login_one_account": one.report(secs),
        "login_many_accounts": many.report(secs),
        "unauthenticated_flood": flood.report(secs),
    })
}

/// One slow connection slot: connect, send a partial head, trickle header
/// lines; when the server closes it, connect again; stop on `stop`.
async fn slowloris(
    i: usize,
    base: &str,
    interval: Duration,
    reconnect: Duration,
    c: &SlowCounts,
    mut stop: watch::Receiver<bool>,
) {
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut buf = [0u8; 4096];
    loop {
        if *stop.borrow() {
            return;
        }
        let mut s = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(_) => {
                c.connect_failures.fetch_add(1, Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(reconnect) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        c.connects.fetch_add(1, Relaxed);
        let open = c.open_now.fetch_add(1, Relaxed) + 1;
        c.peak_open.fetch_max(open, Relaxed);
        let opened = now_ns();
        let head =
            format!("GET /_matrix/client/versions HTTP/1.1\r\nHost: {addr}\r\nX-Slow: {i}\r\n");
        let mut closed = s.write_all(head.as_bytes()).await.is_err();
        let mut answered = false;
        let mut line = 0u64;
        while !closed {
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => closed = true,
                    // The server answered (a timeout's 408, say); it will
                    // close next, or we keep trickling into a dead head.
                    Ok(_) => answered = true,
                },
                _ = tokio::time::sleep(interval) => {
                    line += 1;
                    if s.write_all(format!("X-Trickle-{line}: {line}\r\n").as_bytes()).await.is_err() {
                        closed = true;
                    } else {
                        c.header_lines_sent.fetch_add(1, Relaxed);
                    }
                }
                _ = stop.changed() => {
                    c.open_now.fetch_sub(1, Relaxed);
                    return;
                }
            }
        }
        c.open_now.fetch_sub(1, Relaxed);
        c.closed_by_server.fetch_add(1, Relaxed);
        if answered {
            c.answered_then_closed.fetch_add(1, Relaxed);
        }
        c.lifetimes_ms
            .lock()
            .unwrap()
            .push((now_ns() - opened) / 1_000_000);
        tokio::select! {
            _ = tokio::time::sleep(reconnect) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The human lines for a summary.
pub fn summary(v: &Value) -> String {
    let s = &v["slowloris"];
    let mut out = format!(
        "  abuse over {}s:\n    slowloris: {} held open (peak {}), {} connects, {} closed by the server ({} after an answer), {} connect failures, lifetime of closed p50 {} s",
        v["seconds"],
        s["target_open"],
        s["peak_open"],
        s["connects"],
        s["closed_by_server"],
        s["answered_then_closed"],
        s["connect_failures"],
        s["closed_lifetime_s"]["p50"],
    );
    for (name, key) in [
        ("login brute force, one account", "login_one_account"),
        ("login brute force, many accounts", "login_many_accounts"),
        ("unauthenticated flood", "unauthenticated_flood"),
    ] {
        let x = &v[key];
        out.push_str(&format!(
            "\n    {name}: {} sent ({}/s), {} refused with 429, statuses {}, {} connections closed by the server, {} timeouts, {} skipped ticks",
            x["sent"], x["per_s"], x["refused_429"], x["statuses"], x["closed_by_server"], x["timeouts"], x["skipped_ticks"]
        ));
    }
    out
}
