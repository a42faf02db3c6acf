//! The DM workload: N sender/receiver pairs, each pair in its own direct
//! room. Senders PUT messages stamped with the generator's monotonic clock;
//! receivers long-poll `/sync` and record when each stamped message arrives.
//! Latency = arrival at the receiver - moment the send was issued, both read
//! from the same clock in this process.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::conn::{Conn, Failure};
use crate::matrix::{bounded, enc, retry_after, Api, Error, Session};
use crate::stats::{
    cores, disk_written_bytes, machine_busy_s, mean_ms, now_ns, pct_ms, proc_cpu_s, proc_status_kb,
    proc_written_bytes, self_cpu_s, tree_cpu_s,
};
use crate::Common;

#[derive(clap::Args, Clone, Debug)]
pub struct DmArgs {
    /// Number of sender/receiver pairs (2N users, N rooms).
    #[arg(long, default_value_t = 40)]
    pub pairs: usize,
    /// Seconds of load before measuring (connections, caches, JIT-free warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub warmup: f64,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// End the measurement early once this many messages sent in it are acked.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Closed loop: sends each sender keeps in flight (the next is issued
    /// when one is acked), so throughput is set by the server.
    #[arg(long, default_value_t = 1)]
    pub inflight: usize,
    /// Open loop instead: total messages per second across all senders, paced
    /// evenly; latency at a fixed offered load.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: cap on sends in flight per sender; ticks beyond it are skipped and counted.
    #[arg(long, default_value_t = 256)]
    pub max_inflight: usize,
    /// Seconds to wait after sending stops for acked messages to arrive.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// `/sync` timeline limit in the receivers' filter; a `limited` timeline would hide messages.
    #[arg(long, default_value_t = 1000)]
    pub timeline_limit: u32,
    /// Send `/sync` without the lean filter (the server's default sync body).
    #[arg(long)]
    pub no_filter: bool,
    /// Concurrent requests during setup (registration, room creation, joins).
    #[arg(long, default_value_t = 8)]
    pub setup_concurrency: usize,
    #[command(flatten)]
    pub abuse: crate::abuse::AbuseArgs,
}

struct Pair {
    sender: Session,
    receiver: Session,
    room_id: String,
}

struct Ctrl {
    stop_send: AtomicBool,
    /// Measurement window start (ns); u64::MAX until it begins.
    window_start: AtomicU64,
    acked_in_window: AtomicU64,
    acked_total: AtomicU64,
    delivered_total: AtomicU64,
}

#[derive(Clone, Copy)]
struct SendRec {
    seq: u64,
    t_issue: u64,
    t_done: u64,
    ok: bool,
}

#[derive(Default)]
struct SendOut {
    recs: Vec<SendRec>,
    errors: BTreeMap<String, u64>,
    skipped: u64,
}

#[derive(Default)]
struct RecvOut {
    /// (seq, t_send, t_recv) for each distinct message.
    got: Vec<(u64, u64, u64)>,
    duplicates: u64,
    limited: u64,
    syncs: u64,
    syncs_with_events: u64,
    errors: BTreeMap<String, u64>,
}

/// The key under which the send stamp travels in message content.
const STAMP: &str = "org.hotline.bench";

pub async fn run(api: Api, c: &Common, a: &DmArgs) -> Result<Value, Error> {
    let t_setup = now_ns();
    let prefix = c.user_prefix();
    eprintln!(
        "dm: setting up {} pairs on {} (users {prefix}s*/r*)",
        a.pairs, api.base
    );

    let names: Vec<String> = (0..a.pairs)
        .flat_map(|i| [format!("{prefix}s{i}"), format!("{prefix}r{i}")])
        .collect();
    let localparts = names.clone();
    // With several server URLs (one server, several processes), pair i's
    // sender talks to process i mod n and its receiver to the next one, so
    // every message is written by one process and delivered by another.
    // Each user does everything on its own process (registration, room
    // creation, join, sync), as a client with a sticky session would.
    let on = |i: usize| Api {
        http: api.http.clone(),
        base: c.base_url[i % c.base_url.len()]
            .trim_end_matches('/')
            .to_string(),
    };
    let sender_api: Vec<Api> = (0..a.pairs).map(on).collect();
    let receiver_api: Vec<Api> = (0..a.pairs).map(|i| on(i + 1)).collect();
    if c.base_url.len() > 1 {
        eprintln!(
            "dm: senders and receivers spread over {} server URLs, each pair across two",
            c.base_url.len()
        );
    }
    let sessions = {
        let (pw, tok) = (c.password.clone(), c.registration_token.clone());
        let work: Vec<(Api, String)> = names
            .into_iter()
            .enumerate()
            .map(|(j, n)| {
                let api = if j % 2 == 0 {
                    &sender_api
                } else {
                    &receiver_api
                };
                (api[j / 2].clone(), n)
            })
            .collect();
        bounded(work, a.setup_concurrency, move |(api, n)| {
            let (pw, tok) = (pw.clone(), tok.clone());
            async move { api.register(&n, &pw, tok.as_deref()).await }
        })
        .await
    };
    let sessions: Vec<Session> = sessions.into_iter().collect::<Result<_, _>>()?;
    eprintln!(
        "dm: registered {} users in {:.1}s",
        sessions.len(),
        secs(now_ns() - t_setup)
    );

    // The abuse's targets: a real account of its own for the one-account
    // brute force (the DM users keep their sessions either way), the DM
    // users and accounts that do not exist for the many-account one.
    let targets = if a.abuse.abuse {
        let victim = format!("{prefix}victim");
        api.register(&victim, &c.password, c.registration_token.as_deref())
            .await?;
        let mut many = localparts;
        many.extend((0..100).map(|i| format!("{prefix}ghost{i}")));
        Some(crate::abuse::Targets {
            base: api.base.clone(),
            victim,
            many,
            profile_user: sessions[0].user_id.clone(),
        })
    } else {
        None
    };

    let couples: Vec<(Api, Session, Api, Session)> = sessions
        .chunks(2)
        .enumerate()
        .map(|(i, c)| {
            (
                sender_api[i].clone(),
                c[0].clone(),
                receiver_api[i].clone(),
                c[1].clone(),
            )
        })
        .collect();
    let pairs = bounded(couples, a.setup_concurrency, |(sa, s, ra, r)| async move {
        make_dm(&sa, s, &ra, r).await
    })
    .await;
    let pairs: Vec<Pair> = pairs.into_iter().collect::<Result<_, _>>()?;

    let filter = if a.no_filter {
        None
    } else {
        Some(enc(&lean_filter(a.timeline_limit).to_string()))
    };
    // Each receiver starts from an initial sync so the measured syncs are
    // incremental, as for a client that is already running.
    let sinces = {
        let f = filter.clone();
        let work: Vec<(Api, String)> = pairs
            .iter()
            .zip(&receiver_api)
            .map(|(p, api)| (api.clone(), p.receiver.token.clone()))
            .collect();
        bounded(work, a.setup_concurrency, move |(api, tok)| {
            let f = f.clone();
            async move {
                let mut path = "/v3/sync?timeout=0".to_string();
                if let Some(f) = &f {
                    path.push_str("&filter=");
                    path.push_str(f);
                }
                let v = api.call(Method::GET, &path, Some(&tok), None).await?;
                v["next_batch"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or(format!("initial sync: no next_batch in {v}"))
            }
        })
        .await
    };
    let sinces: Vec<String> = sinces.into_iter().collect::<Result<_, _>>()?;
    let setup_s = secs(now_ns() - t_setup);
    eprintln!(
        "dm: setup done in {setup_s:.1}s; warm-up {}s, measuring {}s",
        a.warmup, a.duration
    );

    let ctrl = Arc::new(Ctrl {
        stop_send: AtomicBool::new(false),
        window_start: AtomicU64::new(u64::MAX),
        acked_in_window: AtomicU64::new(0),
        acked_total: AtomicU64::new(0),
        delivered_total: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let run_tag = format!("{prefix}{}", now_ns());

    let mut receivers = Vec::new();
    for ((p, since), api) in pairs.iter().zip(sinces).zip(&receiver_api) {
        receivers.push(tokio::spawn(receive(
            api.clone(),
            p.receiver.token.clone(),
            since,
            filter.clone(),
            ctrl.clone(),
            stop_rx.clone(),
        )));
    }
    let mut senders = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        let url = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{run_tag}.",
            enc(&p.room_id)
        );
        let tok = p.sender.token.clone();
        senders.push(match a.rate {
            Some(rate) => {
                let period = Duration::from_secs_f64(a.pairs as f64 / rate.max(0.001));
                // Senders are spread evenly over the period: started in
                // step, every sender would fire at the same instant and
                // the offered load would arrive as one burst per period.
                let phase = period.mul_f64(i as f64 / pairs.len() as f64);
                tokio::spawn(send_open(
                    sender_api[i].clone(),
                    url,
                    tok,
                    period,
                    phase,
                    a.max_inflight,
                    ctrl.clone(),
                ))
            }
            None => tokio::spawn(send_closed(
                sender_api[i].clone(),
                url,
                tok,
                a.inflight.max(1),
                ctrl.clone(),
            )),
        });
    }

    let (abuse_stop, abuse_stop_rx) = watch::channel(false);
    let abuse = targets.map(|t| {
        eprintln!("dm: abuse starts with the warm-up");
        tokio::spawn(crate::abuse::run(a.abuse.clone(), t, abuse_stop_rx))
    });

    tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    let (cpu0, srv0, mach0) = (self_cpu_s(), servers_cpu_s(c), machine_busy_s());
    let (disk0, srv_w0) = (disk_written_bytes(), servers_written(c));
    let db0 = c.db_pid.and_then(tree_cpu_s);
    let ws = now_ns();
    ctrl.window_start.store(ws, Relaxed);
    let deadline = ws + (a.duration * 1e9) as u64;
    loop {
        let now = now_ns();
        if now >= deadline
            || a.messages
                .is_some_and(|m| ctrl.acked_in_window.load(Relaxed) >= m)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5).min(Duration::from_nanos(deadline - now)))
            .await;
    }
    let we = now_ns();
    let (cpu1, srv1, mach1) = (self_cpu_s(), servers_cpu_s(c), machine_busy_s());
    let (disk1, srv_w1) = (disk_written_bytes(), servers_written(c));
    let db1 = c.db_pid.and_then(tree_cpu_s);
    ctrl.stop_send.store(true, Relaxed);
    let _ = abuse_stop.send(true);
    let abuse = match abuse {
        Some(h) => Some(h.await.map_err(|e| e.to_string())?),
        None => None,
    };

    let mut sent = Vec::new();
    for h in senders {
        sent.push(h.await.map_err(|e| e.to_string())?);
    }
    // Drain: let acked messages arrive, bounded in time.
    let drain_end = now_ns() + (a.drain * 1e9) as u64;
    while now_ns() < drain_end
        && ctrl.delivered_total.load(Relaxed) < ctrl.acked_total.load(Relaxed)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    let mut recv = Vec::new();
    for h in receivers {
        recv.push(h.await.map_err(|e| e.to_string())?);
    }

    let cpu = Cpu {
        gen: cpu1 - cpu0,
        server: srv0.zip(srv1).map(|(x, y)| y - x),
        machine: mach0.zip(mach1).map(|(x, y)| y - x),
        disk_written: disk0.zip(disk1).map(|(x, y)| y.saturating_sub(x)),
        server_written: srv_w0.zip(srv_w1).map(|(x, y)| y.saturating_sub(x)),
        db: db0.zip(db1).map(|(before, after)| {
            after
                .iter()
                .map(|(pid, t)| t - before.get(pid).copied().unwrap_or(0.0))
                .sum()
        }),
    };
    let mut v = report(c, a, &api, ws, we, cpu, setup_s, &sent, &recv);
    if let Some(abuse) = abuse {
        v["abuse"] = abuse;
    }
    Ok(v)
}

/// CPU seconds of all the server's processes together.
fn servers_cpu_s(c: &Common) -> Option<f64> {
    c.server_pids.iter().map(|&p| proc_cpu_s(p)).sum()
}

fn servers_written(c: &Common) -> Option<u64> {
    c.server_pids.iter().map(|&p| proc_written_bytes(p)).sum()
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The sender creates the room on its process, the receiver joins on its
/// own; on another process than the sender's the invite may not have
/// reached it yet, so a refused join is retried for a bounded while.
async fn make_dm(sapi: &Api, s: Session, rapi: &Api, r: Session) -> Result<Pair, Error> {
    let body =
        json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [r.user_id] });
    let v = sapi
        .call(Method::POST, "/v3/createRoom", Some(&s.token), Some(&body))
        .await?;
    let room_id = v["room_id"]
        .as_str()
        .ok_or(format!("createRoom: no room_id in {v}"))?
        .to_string();
    let join = format!("/v3/join/{}", enc(&room_id));
    let mut tries = 0;
    while let Err(e) = rapi
        .call(Method::POST, &join, Some(&r.token), Some(&json!({})))
        .await
    {
        tries += 1;
        if tries >= 50 || sapi.base == rapi.base {
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Pair {
        sender: s,
        receiver: r,
        room_id,
    })
}

/// Only message timelines: no presence, state, ephemeral or account data, so
/// the sync measured is message delivery, not payload size.
fn lean_filter(limit: u32) -> Value {
    json!({
        "presence": { "types": [] },
        "account_data": { "types": [] },
        "room": {
            "state": { "types": [] },
            "ephemeral": { "types": [] },
            "account_data": { "types": [] },
            "timeline": { "limit": limit, "types": ["m.room.message"] },
        },
    })
}

async fn send_one(
    conn: &mut Conn,
    path_prefix: &str,
    seq: u64,
    ctrl: &Ctrl,
    out_err: &mut BTreeMap<String, u64>,
) -> (SendRec, Option<Duration>) {
    let t_issue = now_ns();
    let body = format!(
        r#"{{"msgtype":"m.text","body":"bench {seq}","{STAMP}":{{"t":{t_issue},"seq":{seq}}}}}"#
    );
    let res = conn
        .request(
            Method::PUT,
            &format!("{path_prefix}{seq}"),
            Some(body.into()),
            Duration::from_secs(30),
        )
        .await;
    let mut backoff = None;
    let ok = match res {
        Ok((status, _)) if status.is_success() => true,
        Ok((status, bytes)) => {
            *out_err
                .entry(format!("send {}", status.as_u16()))
                .or_default() += 1;
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            backoff = Some(if status.as_u16() == 429 {
                retry_after(&v)
            } else {
                Duration::from_millis(50)
            });
            false
        }
        Err(e) => {
            let kind = match e {
                Failure::Timeout => "send timeout",
                Failure::Transport(m) => {
                    // The first one explains the rest; counts go in the report.
                    if !out_err.contains_key("send transport") {
                        eprintln!("dm: send transport error: {m}");
                    }
                    "send transport"
                }
            };
            *out_err.entry(kind.into()).or_default() += 1;
            backoff = Some(Duration::from_millis(50));
            false
        }
    };
    let t_done = now_ns();
    if ok {
        ctrl.acked_total.fetch_add(1, Relaxed);
        if t_issue >= ctrl.window_start.load(Relaxed) {
            ctrl.acked_in_window.fetch_add(1, Relaxed);
        }
    }
    (
        SendRec {
            seq,
            t_issue,
            t_done,
            ok,
        },
        backoff,
    )
}

/// Closed loop: `inflight` workers per sender, each issuing its next send
/// when the previous one is answered.
async fn send_closed(
    api: Api,
    url: String,
    token: String,
    inflight: usize,
    ctrl: Arc<Ctrl>,
) -> SendOut {
    let seq = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for _ in 0..inflight {
        let (api, url, token, ctrl, seq) = (
            api.clone(),
            url.clone(),
            token.clone(),
            ctrl.clone(),
            seq.clone(),
        );
        set.spawn(async move {
            let mut out = SendOut::default();
            let mut conn = Conn::new(&api.base, &token);
            while !ctrl.stop_send.load(Relaxed) {
                let n = seq.fetch_add(1, Relaxed);
                let (rec, backoff) = send_one(&mut conn, &url, n, &ctrl, &mut out.errors).await;
                out.recs.push(rec);
                if let Some(b) = backoff {
                    tokio::time::sleep(b).await;
                }
            }
            out
        });
    }
    let mut all = SendOut::default();
    while let Some(r) = set.join_next().await {
        merge(&mut all, r.expect("sender panicked"));
    }
    all
}

/// Open loop: one send per tick regardless of answers, up to a cap in flight.
async fn send_open(
    api: Api,
    url: String,
    token: String,
    period: Duration,
    phase: Duration,
    cap: usize,
    ctrl: Arc<Ctrl>,
) -> SendOut {
    let mut all = SendOut::default();
    let mut set = JoinSet::new();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    // Idle connections of this sender, reused like a client's small pool.
    let idle: Arc<std::sync::Mutex<Vec<Conn>>> = Arc::default();
    while !ctrl.stop_send.load(Relaxed) {
        tick.tick().await;
        while let Some(r) = set.try_join_next() {
            merge(&mut all, r.expect("sender panicked"));
        }
        if set.len() >= cap {
            all.skipped += 1;
            continue;
        }
        let (url, ctrl, idle) = (url.clone(), ctrl.clone(), idle.clone());
        let mut conn = idle
            .lock()
            .expect("idle conns")
            .pop()
            .unwrap_or_else(|| Conn::new(&api.base, &token));
        set.spawn(async move {
            let mut out = SendOut::default();
            let (rec, _) = send_one(&mut conn, &url, n, &ctrl, &mut out.errors).await;
            idle.lock().expect("idle conns").push(conn);
            out.recs.push(rec);
            out
        });
        n += 1;
    }
    while let Some(r) = set.join_next().await {
        merge(&mut all, r.expect("sender panicked"));
    }
    all
}

fn merge(into: &mut SendOut, from: SendOut) {
    into.recs.extend(from.recs);
    into.skipped += from.skipped;
    for (k, v) in from.errors {
        *into.errors.entry(k).or_default() += v;
    }
}

#[derive(Deserialize)]
struct SyncResp {
    next_batch: String,
    #[serde(default)]
    rooms: Option<Rooms>,
}
#[derive(Deserialize)]
struct Rooms {
    #[serde(default)]
    join: std::collections::HashMap<String, Joined>,
}
#[derive(Deserialize)]
struct Joined {
    #[serde(default)]
    timeline: Option<Timeline>,
}
#[derive(Deserialize)]
struct Timeline {
    #[serde(default)]
    events: Vec<Ev>,
    #[serde(default)]
    limited: bool,
}
#[derive(Deserialize)]
struct Ev {
    #[serde(default)]
    content: Option<Content>,
}
#[derive(Deserialize)]
struct Content {
    #[serde(rename = "org.hotline.bench")]
    stamp: Option<Stamp>,
}
#[derive(Deserialize)]
struct Stamp {
    t: u64,
    seq: u64,
}

async fn receive(
    api: Api,
    token: String,
    mut since: String,
    filter: Option<String>,
    ctrl: Arc<Ctrl>,
    mut stop: watch::Receiver<bool>,
) -> RecvOut {
    let mut out = RecvOut::default();
    let mut seen = HashSet::new();
    let mut conn = Conn::new(&api.base, &token);
    loop {
        let mut url = format!(
            "/_matrix/client/v3/sync?timeout=30000&since={}",
            enc(&since)
        );
        if let Some(f) = &filter {
            url.push_str("&filter=");
            url.push_str(f);
        }
        let res = tokio::select! {
            _ = stop.changed() => break,
            r = conn.request(Method::GET, &url, None, Duration::from_secs(45)) => r,
        };
        let t_recv = now_ns();
        out.syncs += 1;
        let body = match res {
            Ok((s, b)) if s.is_success() => b,
            Ok((s, _)) => {
                *out.errors
                    .entry(format!("sync {}", s.as_u16()))
                    .or_default() += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => {
                let kind = match e {
                    Failure::Timeout => "sync timeout",
                    Failure::Transport(m) => {
                        if !out.errors.contains_key("sync transport") {
                            eprintln!("dm: sync transport error: {m}");
                        }
                        "sync transport"
                    }
                };
                *out.errors.entry(kind.into()).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let resp: SyncResp = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(_) => {
                *out.errors.entry("sync bad json".into()).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        since = resp.next_batch;
        let mut any = false;
        for room in resp.rooms.into_iter().flat_map(|r| r.join.into_values()) {
            let Some(tl) = room.timeline else { continue };
            out.limited += tl.limited as u64;
            for ev in tl.events {
                if let Some(Stamp { t, seq }) = ev.content.and_then(|c| c.stamp) {
                    any = true;
                    if seen.insert(seq) {
                        out.got.push((seq, t, t_recv));
                        ctrl.delivered_total.fetch_add(1, Relaxed);
                    } else {
                        out.duplicates += 1;
                    }
                }
            }
        }
        out.syncs_with_events += any as u64;
    }
    out
}

fn lat(v: &mut [u64]) -> Value {
    v.sort_unstable();
    let r = |x: Option<f64>| x.map(|m| (m * 1000.0).round() / 1000.0);
    json!({
        "p50": r(pct_ms(v, 50.0)), "p90": r(pct_ms(v, 90.0)), "p99": r(pct_ms(v, 99.0)),
        "max": r(v.last().map(|&x| x as f64 / 1e6)), "mean": r(mean_ms(v)), "n": v.len(),
    })
}

#[allow(clippy::too_many_arguments)]
fn report(
    c: &Common,
    a: &DmArgs,
    api: &Api,
    ws: u64,
    we: u64,
    cpu: Cpu,
    setup_s: f64,
    sent: &[SendOut],
    recv: &[RecvOut],
) -> Value {
    let win = secs(we - ws);
    let inw = |t: u64| t >= ws && t < we;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut sent_w, mut acked_w, mut failed_w, mut acked_all, mut lost, mut lost_w, mut skipped) =
        (0, 0, 0, 0u64, 0u64, 0u64, 0);
    let mut ack_lat = Vec::new();
    let mut e2e = Vec::new();
    let mut delivered_w = 0u64;
    let (mut dups, mut limited, mut syncs, mut syncs_ev, mut got_all) = (0, 0, 0, 0, 0);
    for (s, r) in sent.iter().zip(recv) {
        let got: HashSet<u64> = r.got.iter().map(|g| g.0).collect();
        for rec in &s.recs {
            if inw(rec.t_issue) {
                sent_w += 1;
                if rec.ok {
                    acked_w += 1;
                    ack_lat.push(rec.t_done - rec.t_issue);
                } else {
                    failed_w += 1;
                }
            }
            if rec.ok {
                acked_all += 1;
                if !got.contains(&rec.seq) {
                    lost += 1;
                    lost_w += inw(rec.t_issue) as u64;
                }
            }
        }
        skipped += s.skipped;
        for (k, v) in s.errors.iter().chain(r.errors.iter()) {
            *errors.entry(k.clone()).or_default() += v;
        }
        for &(_, t_send, t_recv) in &r.got {
            delivered_w += inw(t_recv) as u64;
            if inw(t_send) {
                e2e.push(t_recv - t_send);
            }
        }
        dups += r.duplicates;
        limited += r.limited;
        syncs += r.syncs;
        syncs_ev += r.syncs_with_events;
        got_all += r.got.len();
    }
    let threads = c.threads.max(1);
    let gen_core_pct = 100.0 * cpu.gen / win;
    // CPU used during the window by everything but generator and server: if
    // large, the machine was not quiet and the numbers are not comparable.
    let other_pct = cpu.machine.map(|m| {
        round1(
            100.0 * (m - cpu.gen - cpu.server.unwrap_or(0.0) - cpu.db.unwrap_or(0.0)).max(0.0)
                / win,
        )
    });
    let saturated = gen_core_pct > 85.0 * threads as f64;
    // Several processes: CPU and RSS summed (each process's own peak, so
    // the sum is an upper bound of the peak they held together).
    let sum_kb = |field: &str| -> Option<u64> {
        c.server_pids
            .iter()
            .map(|&p| proc_status_kb(p, field))
            .sum()
    };
    let server = c.server_pid().map(|pid| {
        json!({
            "pid": pid,
            "pids": c.server_pids,
            "cpu_core_pct": cpu.server.map(|s| round1(100.0 * s / win)),
            "peak_rss_kb": sum_kb("VmHWM"),
            "rss_kb": sum_kb("VmRSS"),
        })
    });
    let v = json!({
        "mode": "dm",
        "label": c.label,
        "base_url": api.base,
        "base_urls": c.base_url,
        "pairs": a.pairs,
        "load": match a.rate { Some(r) => format!("open loop {r} msg/s"), None => format!("closed loop, {} in flight per sender", a.inflight) },
        "setup_s": round1(setup_s),
        "warmup_s": a.warmup,
        "window_s": (win * 1000.0).round() / 1000.0,
        "sent": sent_w,
        "acked": acked_w,
        "send_failed": failed_w,
        "skipped_ticks": skipped,
        "delivered": delivered_w,
        "delivered_per_s": round1(delivered_w as f64 / win),
        "acked_per_s": round1(acked_w as f64 / win),
        "latency_ms": lat(&mut e2e),
        "ack_latency_ms": lat(&mut ack_lat),
        "acked_total": acked_all,
        "lost": lost,
        "lost_in_window": lost_w,
        "duplicates": dups,
        "limited_timelines": limited,
        "syncs": syncs,
        // Whole run: messages per /sync that carried any, and /sync responses
        // that carried none (wake-ups the receivers did not need).
        "msgs_per_sync": if syncs_ev > 0 { round1(got_all as f64 / syncs_ev as f64) } else { 0.0 },
        "empty_syncs": syncs - syncs_ev,
        "errors": errors,
        "generator": {
            "cpu_core_pct": round1(gen_core_pct),
            "cpu_machine_pct": round1(gen_core_pct / cores() as f64),
            "threads": threads,
            "cores": cores(),
            "saturated": saturated,
        },
        "server": server,
        "database": c.db_pid.map(|pid| json!({
            "pid": pid,
            "cpu_core_pct": cpu.db.map(|s| round1(100.0 * s / win)),
        })),
        "other_cpu_core_pct": other_pct,
        // Disk writes by other processes compete with the servers' fsyncs
        // (writeback makes this approximate).
        "disk_written_mb": cpu.disk_written.map(|b| round1(b as f64 / 1e6)),
        "server_written_mb": cpu.server_written.map(|b| round1(b as f64 / 1e6)),
        "other_written_mb": cpu.disk_written.map(|d| round1(d.saturating_sub(cpu.server_written.unwrap_or(0)) as f64 / 1e6)),
    });
    v
}

struct Cpu {
    gen: f64,
    server: Option<f64>,
    machine: Option<f64>,
    /// Bytes written to disk by everyone, and by the server, in the window.
    disk_written: Option<u64>,
    server_written: Option<u64>,
    /// The database server's CPU seconds (postmaster and backends).
    db: Option<f64>,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn summary(v: &Value) -> String {
    let l = &v["latency_ms"];
    let g = &v["generator"];
    let mut s = format!(
        "{label}: {pairs} pairs, {load}, {win}s window\n  delivered {d} msg ({dps} msg/s), sent {sent}, acked {acked}, failed {failed}, lost {lost}, dup {dup}\n  send->delivery ms: p50 {p50} p90 {p90} p99 {p99} max {max}  (ack p50 {ap50})\n  generator CPU {gc}% of one core ({gm}% of machine, {th} thread(s)){sat}",
        label = v["label"].as_str().unwrap_or("-"),
        pairs = v["pairs"],
        load = v["load"].as_str().unwrap_or(""),
        win = v["window_s"],
        d = v["delivered"],
        dps = v["delivered_per_s"],
        sent = v["sent"],
        acked = v["acked"],
        failed = v["send_failed"],
        lost = v["lost"],
        dup = v["duplicates"],
        p50 = l["p50"],
        p90 = l["p90"],
        p99 = l["p99"],
        max = l["max"],
        ap50 = v["ack_latency_ms"]["p50"],
        gc = g["cpu_core_pct"],
        gm = g["cpu_machine_pct"],
        th = g["threads"],
        sat = if g["saturated"].as_bool() == Some(true) { "  ** GENERATOR SATURATED: numbers are a floor **" } else { "" },
    );
    if let Some(srv) = v["server"].as_object() {
        s.push_str(&format!(
            "\n  server pid {}: CPU {}% of one core, peak RSS {} kB",
            srv["pid"], srv["cpu_core_pct"], srv["peak_rss_kb"]
        ));
    }
    if let Some(db) = v["database"]["cpu_core_pct"].as_f64() {
        s.push_str(&format!("\n  database server: CPU {db}% of one core"));
    }
    if let (Some(d), Some(o)) = (
        v["disk_written_mb"].as_f64(),
        v["other_written_mb"].as_f64(),
    ) {
        s.push_str(&format!(
            "\n  disk writes in window: {d} MB, {o} MB of them not by the server"
        ));
    }
    if let Some(o) = v["other_cpu_core_pct"].as_f64() {
        s.push_str(&format!(
            "\n  other processes: {o}% of one core{}",
            if o > 20.0 {
                "  ** MACHINE NOT QUIET **"
            } else {
                ""
            }
        ));
    }
    if v["errors"].as_object().is_some_and(|e| !e.is_empty()) {
        s.push_str(&format!("\n  errors: {}", v["errors"]));
    }
    if v["abuse"].is_object() {
        s.push('\n');
        s.push_str(&crate::abuse::summary(&v["abuse"]));
    }
    s
}
