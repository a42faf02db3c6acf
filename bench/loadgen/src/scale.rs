//! The scale workload: a store seeded with many users, rooms and events,
//! and what a client pays against it as history grows.
//!
//! Setup: `--users` accounts; `--rooms` public rooms, each created by one
//! user and joined by `--members` others; a probe user (the first account)
//! joins the first `--probe-rooms` of them. Then messages are sent (closed
//! loop, `--concurrency` in flight) until each checkpoint's total; a share of
//! them (`--deep-pct`) goes to one room, the deep room, so its history is
//! long enough to page far back. At each checkpoint, sending pauses and the
//! probe measures, one request at a time:
//! - initial `/sync` (every joined room, timeline limit 10): the first call
//!   and the median of three;
//! - incremental `/sync`: after one new message in one of the probe's rooms
//!   (sent first, not timed), the `/sync` that returns it (`timeout=0`); and
//!   an incremental `/sync` with nothing new;
//! - `/messages` backwards through the deep room's whole history, 100 events
//!   a page: the first pages and the deepest;
//! - bytes on disk (`--size-cmd`, a shell command printing the store's
//!   size), per event and per message added since the last checkpoint.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::matrix::{bounded, enc, Api, Error, Session};
use crate::stats::pct_ms;
use crate::Common;

#[derive(clap::Args, Clone, Debug)]
pub struct ScaleArgs {
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    #[arg(long, default_value_t = 2_000)]
    pub rooms: usize,
    /// Members of each room besides its creator.
    #[arg(long, default_value_t = 5)]
    pub members: usize,
    /// Rooms the probe user joins (the first ones; the deep room is one).
    #[arg(long, default_value_t = 200)]
    pub probe_rooms: usize,
    /// Messages sent in total at each checkpoint, comma-separated, rising.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub checkpoints: Vec<u64>,
    /// Share of messages sent to the deep room, in percent.
    #[arg(long, default_value_t = 10)]
    pub deep_pct: u64,
    /// Messages in flight while seeding.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 8)]
    pub setup_concurrency: usize,
    /// Incremental `/sync` samples per checkpoint.
    #[arg(long, default_value_t = 30)]
    pub samples: usize,
    /// `/messages` pages walked at most per checkpoint.
    #[arg(long, default_value_t = 2_000)]
    pub max_pages: usize,
    /// Seconds to wait after seeding before measuring, for the database's
    /// background work after a bulk load (checkpoints, autovacuum) to pass.
    #[arg(long, default_value_t = 0)]
    pub settle: u64,
    /// Shell command printing the store's size in bytes (one number).
    #[arg(long)]
    pub size_cmd: Option<String>,
}

/// A room and the session that sends into it.
struct Room {
    id: String,
    sender: usize,
}

const SYNC_FILTER: &str = r#"{"room":{"timeline":{"limit":10}}}"#;

pub async fn run(api: Api, c: &Common, a: &ScaleArgs) -> Result<Value, Error> {
    if a.users < a.members + 2 || a.rooms == 0 || a.probe_rooms > a.rooms {
        return Err("scale: need users > members + 1, rooms > 0, probe-rooms <= rooms".into());
    }
    let prefix = c.user_prefix();
    let t = Instant::now();
    let names: Vec<String> = (0..a.users).map(|i| format!("{prefix}u{i}")).collect();
    let reg = {
        let api = api.clone();
        let (pw, token) = (c.password.clone(), c.registration_token.clone());
        bounded(names, a.setup_concurrency, move |n| {
            let (api, pw, token) = (api.clone(), pw.clone(), token.clone());
            async move { api.register(&n, &pw, token.as_deref()).await }
        })
        .await
    };
    let sessions: Arc<Vec<Session>> = Arc::new(reg.into_iter().collect::<Result<_, _>>()?);
    let register_s = t.elapsed().as_secs_f64();
    eprintln!("scale: {} users registered in {register_s:.1} s", a.users);

    // Rooms: room r is created by user 1 + r mod (users - 1) (never the
    // probe), its members the next `members` users after it.
    let t = Instant::now();
    let others = a.users - 1;
    let creators: Vec<(usize, usize)> = (0..a.rooms).map(|r| (r, 1 + r % others)).collect();
    let created = {
        let (api, sessions) = (api.clone(), sessions.clone());
        bounded(creators, a.setup_concurrency, move |(r, u)| {
            let (api, sessions) = (api.clone(), sessions.clone());
            async move {
                let body = json!({ "preset": "public_chat", "name": format!("Scale room {r}") });
                let v = api
                    .call(
                        Method::POST,
                        "/v3/createRoom",
                        Some(&sessions[u].token),
                        Some(&body),
                    )
                    .await?;
                let id = v["room_id"].as_str().ok_or(format!("createRoom: {v}"))?;
                Ok::<_, Error>(Room {
                    id: id.to_string(),
                    sender: u,
                })
            }
        })
        .await
    };
    let rooms: Arc<Vec<Room>> = Arc::new(created.into_iter().collect::<Result<_, _>>()?);
    let mut joins: Vec<(usize, usize)> = Vec::new();
    for (r, room) in rooms.iter().enumerate() {
        for k in 1..=a.members {
            let u = 1 + (room.sender - 1 + k * 7919 % others) % others;
            joins.push((r, u));
        }
        if r < a.probe_rooms {
            joins.push((r, 0));
        }
    }
    let join_count = joins.len();
    let joined = {
        let (api, sessions, rooms) = (api.clone(), sessions.clone(), rooms.clone());
        bounded(joins, a.setup_concurrency, move |(r, u)| {
            let (api, sessions, rooms) = (api.clone(), sessions.clone(), rooms.clone());
            async move {
                let path = format!("/v3/join/{}", enc(&rooms[r].id));
                api.call(
                    Method::POST,
                    &path,
                    Some(&sessions[u].token),
                    Some(&json!({})),
                )
                .await
                .map(drop)
            }
        })
        .await
    };
    joined.into_iter().collect::<Result<Vec<()>, _>>()?;
    let rooms_s = t.elapsed().as_secs_f64();
    eprintln!(
        "scale: {} rooms, {join_count} joins in {rooms_s:.1} s",
        a.rooms
    );

    let sent = Arc::new(AtomicU64::new(0));
    let mut points = Vec::new();
    let mut last_size: Option<(u64, u64)> = None;
    for &target in &a.checkpoints {
        let t = Instant::now();
        let before = sent.load(Relaxed);
        seed(&api, &sessions, &rooms, a, &sent, target).await?;
        let seeded = sent.load(Relaxed) - before;
        let seed_s = t.elapsed().as_secs_f64();
        eprintln!(
            "scale: {target} messages ({seeded} in {seed_s:.1} s, {:.0}/s); measuring",
            seeded as f64 / seed_s
        );
        tokio::time::sleep(Duration::from_secs(a.settle)).await;
        let mut p = measure(&api, &sessions, &rooms, a, points.len()).await?;
        // The measuring sent messages too.
        let total = sent.load(Relaxed) + a.samples as u64;
        sent.store(total, Relaxed);
        p["messages"] = json!(total);
        p["seed_msgs_per_s"] = json!(seeded as f64 / seed_s);
        if let Some(cmd) = &a.size_cmd {
            let bytes = store_size(cmd)?;
            p["store_bytes"] = json!(bytes);
            if let Some((b0, m0)) = last_size {
                p["bytes_per_message_added"] =
                    json!((bytes as f64 - b0 as f64) / (total - m0) as f64);
            }
            last_size = Some((bytes, total));
        }
        eprintln!("scale: {p}");
        points.push(p);
    }
    Ok(json!({
        "label": c.label,
        "workload": "scale",
        "users": a.users,
        "rooms": a.rooms,
        "members_per_room": a.members + 1,
        "probe_rooms": a.probe_rooms,
        "deep_pct": a.deep_pct,
        "settle_s": a.settle,
        "register_s": register_s,
        "rooms_and_joins_s": rooms_s,
        "checkpoints": points,
    }))
}

/// Sends messages until `sent` reaches `target`: message i goes to the
/// deep room (room 0) for `deep_pct` of every hundred, else to room i mod
/// rooms, from that room's creator.
async fn seed(
    api: &Api,
    sessions: &Arc<Vec<Session>>,
    rooms: &Arc<Vec<Room>>,
    a: &ScaleArgs,
    sent: &Arc<AtomicU64>,
    target: u64,
) -> Result<(), Error> {
    let mut workers = Vec::new();
    for _ in 0..a.concurrency {
        let (api, sessions, rooms, sent) =
            (api.clone(), sessions.clone(), rooms.clone(), sent.clone());
        let deep = a.deep_pct;
        workers.push(tokio::spawn(async move {
            loop {
                let i = sent.fetch_add(1, Relaxed);
                if i >= target {
                    sent.fetch_sub(1, Relaxed);
                    return Ok::<(), Error>(());
                }
                let r = if i % 100 < deep {
                    0
                } else {
                    (i as usize) % rooms.len()
                };
                send(&api, &sessions[rooms[r].sender], &rooms[r].id, i).await?;
            }
        }));
    }
    for w in workers {
        w.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

async fn send(api: &Api, s: &Session, room: &str, i: u64) -> Result<Value, Error> {
    let path = format!("/v3/rooms/{}/send/m.room.message/s{i}", enc(room));
    let body = json!({
        "msgtype": "m.text",
        "body": format!("Message {i}: the quarterly figures are attached; call me when you have read them."),
    });
    api.call(Method::PUT, &path, Some(&s.token), Some(&body))
        .await
}

async fn timed_get(api: &Api, path: &str, token: &str) -> Result<(Value, u64, usize), Error> {
    let t = Instant::now();
    let resp = api
        .http
        .get(api.url(path))
        .bearer_auth(token)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| format!("GET {path}: {e}"))?;
    let ns = t.elapsed().as_nanos() as u64;
    if !status.is_success() {
        return Err(format!(
            "GET {path}: {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let v: Value = serde_json::from_slice(&body).map_err(|e| format!("GET {path}: {e}"))?;
    Ok((v, ns, body.len()))
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn median_ms(mut v: Vec<u64>) -> Option<f64> {
    v.sort_unstable();
    pct_ms(&v, 50.0)
}

async fn measure(
    api: &Api,
    sessions: &[Session],
    rooms: &[Room],
    a: &ScaleArgs,
    checkpoint: usize,
) -> Result<Value, Error> {
    let probe = &sessions[0];
    let sync = |since: Option<&str>| {
        let mut p = format!("/v3/sync?timeout=0&filter={}", enc(SYNC_FILTER));
        if let Some(s) = since {
            p.push_str(&format!("&since={}", enc(s)));
        }
        p
    };
    // Initial sync.
    let mut initial = Vec::new();
    let mut next = String::new();
    let mut joined_rooms = 0;
    let mut initial_bytes = 0;
    for _ in 0..3 {
        let (v, ns, len) = timed_get(api, &sync(None), &probe.token).await?;
        joined_rooms = v["rooms"]["join"].as_object().map_or(0, |m| m.len());
        next = v["next_batch"].as_str().unwrap_or_default().to_string();
        initial.push(ns);
        initial_bytes = len;
    }
    if joined_rooms < a.probe_rooms {
        return Err(format!(
            "initial sync shows {joined_rooms} joined rooms, not {}",
            a.probe_rooms
        ));
    }
    // Incremental sync: a new message, then the sync that returns it.
    let mut incremental = Vec::new();
    let mut empty = Vec::new();
    for n in 0..a.samples {
        let room = &rooms[n % a.probe_rooms];
        // A transaction id of its own (the seeding's are 0, 1, ...).
        let txn = 1 << 40 | (checkpoint * a.samples + n) as u64;
        let sent = send(api, &sessions[room.sender], &room.id, txn).await?;
        let event_id = sent["event_id"].as_str().unwrap_or_default().to_string();
        let (v, ns, _) = timed_get(api, &sync(Some(&next)), &probe.token).await?;
        let got = v["rooms"]["join"][&room.id]["timeline"]["events"]
            .as_array()
            .is_some_and(|es| es.iter().any(|e| e["event_id"] == event_id.as_str()));
        if !got {
            return Err(format!("incremental sync lacks {event_id} in {}", room.id));
        }
        incremental.push(ns);
        next = v["next_batch"].as_str().unwrap_or_default().to_string();
        let (v, ns, _) = timed_get(api, &sync(Some(&next)), &probe.token).await?;
        empty.push(ns);
        next = v["next_batch"].as_str().unwrap_or_default().to_string();
    }
    incremental.sort_unstable();
    empty.sort_unstable();
    // /messages backwards through the deep room.
    let deep = &rooms[0];
    let mut pages: Vec<u64> = Vec::new();
    let mut events = 0usize;
    let mut from: Option<String> = None;
    while pages.len() < a.max_pages {
        let mut path = format!("/v3/rooms/{}/messages?dir=b&limit=100", enc(&deep.id));
        if let Some(f) = &from {
            path.push_str(&format!("&from={}", enc(f)));
        }
        let (v, ns, _) = timed_get(api, &path, &probe.token).await?;
        pages.push(ns);
        let chunk = v["chunk"].as_array().map_or(0, |c| c.len());
        events += chunk;
        match v["end"].as_str() {
            Some(end) if chunk > 0 => from = Some(end.to_string()),
            _ => break,
        }
    }
    let k = 10.min(pages.len());
    let first = median_ms(pages[..k].to_vec());
    let deepest = median_ms(pages[pages.len() - k..].to_vec());
    Ok(json!({
        "initial_sync_first_ms": ms(initial[0]),
        "initial_sync_median_ms": median_ms(initial),
        "initial_sync_bytes": initial_bytes,
        "initial_sync_rooms": joined_rooms,
        "incremental_sync_p50_ms": pct_ms(&incremental, 50.0),
        "incremental_sync_p90_ms": pct_ms(&incremental, 90.0),
        "empty_sync_p50_ms": pct_ms(&empty, 50.0),
        "messages_pages": pages.len(),
        "messages_events": events,
        "messages_first_pages_p50_ms": first,
        "messages_deepest_pages_p50_ms": deepest,
    }))
}

fn store_size(cmd: &str) -> Result<u64, Error> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map_err(|e| format!("size command: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .map_err(|e| format!("size command printed {text:?}: {e}"))
}

pub fn summary(v: &Value) -> String {
    let mut s = format!(
        "{}: {} users, {} rooms, probe in {} rooms\n",
        v["label"], v["users"], v["rooms"], v["probe_rooms"]
    );
    for p in v["checkpoints"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "  {} msgs: initial sync {:.1} ms (first {:.1}), incremental {:.2} ms (empty {:.2}), /messages first {:.2} deepest {:.2} ms over {} events, {} bytes\n",
            p["messages"],
            p["initial_sync_median_ms"].as_f64().unwrap_or(f64::NAN),
            p["initial_sync_first_ms"].as_f64().unwrap_or(f64::NAN),
            p["incremental_sync_p50_ms"].as_f64().unwrap_or(f64::NAN),
            p["empty_sync_p50_ms"].as_f64().unwrap_or(f64::NAN),
            p["messages_first_pages_p50_ms"].as_f64().unwrap_or(f64::NAN),
            p["messages_deepest_pages_p50_ms"].as_f64().unwrap_or(f64::NAN),
            p["messages_events"],
            p["store_bytes"],
        ));
    }
    s
}
