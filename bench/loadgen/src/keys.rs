//! The end-to-end-encryption key workload: one user ("querier") shares a
//! room with U users of D devices each (U×D devices, 1,000 by default), every
//! device having uploaded signed device keys, one-time keys and a fallback
//! key. Measured, one request at a time so each number is a latency:
//! - `/keys/query` for all U users (what a client does before encrypting),
//! - `/keys/claim` of one key from every device (what it does to open Olm
//!   sessions),
//! - to-device fan-out: one `/sendToDevice` addressed to every device while
//!   all of them long-poll `/sync`; latency from issuing the send to each
//!   device's `/sync` returning it, and to the last device having it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::matrix::{bounded, enc, Api, Error, Session};
use crate::stats::{
    cores, machine_busy_s, mean_ms, now_ns, pct_ms, proc_cpu_s, proc_status_kb, self_cpu_s,
};
use crate::Common;

#[derive(clap::Args, Clone, Debug)]
pub struct KeysArgs {
    /// Users sharing a room with the querier.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Devices per user (the first from registration, the rest from logins).
    #[arg(long, default_value_t = 10)]
    pub devices_per_user: usize,
    /// One-time keys uploaded per device; claims beyond them get the fallback key.
    #[arg(long, default_value_t = 20)]
    pub otks: usize,
    /// Measured `/keys/query` requests (after 3 unmeasured ones).
    #[arg(long, default_value_t = 30)]
    pub query_reps: usize,
    /// Measured `/keys/claim` requests (each claims one key from every device).
    #[arg(long, default_value_t = 10)]
    pub claim_reps: usize,
    /// To-device fan-outs (each to every device), one after the other.
    #[arg(long, default_value_t = 10)]
    pub fanout_reps: usize,
    /// Seconds to wait for one fan-out to reach every device.
    #[arg(long, default_value_t = 30.0)]
    pub fanout_timeout: f64,
    /// Address to-device messages to `*` per user instead of listing each device.
    #[arg(long)]
    pub to_device_star: bool,
    /// Skip phases: comma-separated subset of query,claim,fanout to run.
    #[arg(long, default_value = "query,claim,fanout")]
    pub phases: String,
    #[arg(long, default_value_t = 8)]
    pub setup_concurrency: usize,
}

/// Canonical JSON (sorted keys, no whitespace) as the Matrix spec signs it.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&m[*k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

fn sign(obj: &mut Value, user_id: &str, device_id: &str, key: &SigningKey) {
    let mut bare = obj.clone();
    if let Some(m) = bare.as_object_mut() {
        m.remove("signatures");
        m.remove("unsigned");
    }
    let sig = key.sign(canonical(&bare).as_bytes());
    obj["signatures"] =
        json!({ user_id: { format!("ed25519:{device_id}"): B64.encode(sig.to_bytes()) } });
}

/// Device keys, `otks` signed one-time keys and a signed fallback key, as a
/// client's Olm machine would upload them.
fn key_upload(s: &Session, otks: usize) -> Value {
    let sk = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let dev = &s.device_id;
    let mut device_keys = json!({
        "user_id": s.user_id,
        "device_id": dev,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{dev}"): B64.encode(rand::random::<[u8; 32]>()),
            format!("ed25519:{dev}"): B64.encode(sk.verifying_key().to_bytes()),
        },
    });
    sign(&mut device_keys, &s.user_id, dev, &sk);
    let mut one_time = Map::new();
    for i in 0..otks {
        let mut k = json!({ "key": B64.encode(rand::random::<[u8; 32]>()) });
        sign(&mut k, &s.user_id, dev, &sk);
        one_time.insert(format!("signed_curve25519:AAAA{i:06}"), k);
    }
    let mut fb = json!({ "key": B64.encode(rand::random::<[u8; 32]>()), "fallback": true });
    sign(&mut fb, &s.user_id, dev, &sk);
    json!({
        "device_keys": device_keys,
        "one_time_keys": one_time,
        "fallback_keys": { "signed_curve25519:AAAAFB": fb },
    })
}

fn lat(v: &mut [u64]) -> Value {
    v.sort_unstable();
    let r = |x: Option<f64>| x.map(|m| (m * 1000.0).round() / 1000.0);
    json!({
        "p50": r(pct_ms(v, 50.0)), "p90": r(pct_ms(v, 90.0)), "p99": r(pct_ms(v, 99.0)),
        "max": r(v.last().map(|&x| x as f64 / 1e6)), "mean": r(mean_ms(v)), "n": v.len(),
    })
}

/// Devices' to-device filter: no rooms, presence or account data.
const TD_FILTER: &str =
    r#"{"room":{"rooms":[]},"presence":{"types":[]},"account_data":{"types":[]}}"#;
const PING: &str = "org.hotline.bench.ping";

pub async fn run(api: Api, c: &Common, a: &KeysArgs) -> Result<Value, Error> {
    let t_setup = now_ns();
    let prefix = c.user_prefix();
    let n_dev = a.users * a.devices_per_user;
    eprintln!(
        "keys: setting up {} users × {} devices = {n_dev} devices on {}",
        a.users, a.devices_per_user, api.base
    );
    let conc = a.setup_concurrency;
    let pw = c.password.clone();
    let tok = c.registration_token.clone();

    let querier = api
        .register(&format!("{prefix}q"), &pw, tok.as_deref())
        .await?;
    let names: Vec<String> = (0..a.users).map(|i| format!("{prefix}u{i}")).collect();
    let firsts: Vec<Session> = {
        let (api, pw, tok) = (api.clone(), pw.clone(), tok.clone());
        bounded(names, conc, move |n| {
            let (api, pw, tok) = (api.clone(), pw.clone(), tok.clone());
            async move { api.register(&n, &pw, tok.as_deref()).await }
        })
        .await
        .into_iter()
        .collect::<Result<_, _>>()?
    };
    let extra: Vec<String> = firsts
        .iter()
        .flat_map(|s| std::iter::repeat_n(s.user_id.clone(), a.devices_per_user.saturating_sub(1)))
        .collect();
    let more: Vec<Session> = {
        let (api, pw) = (api.clone(), pw.clone());
        bounded(extra, conc, move |u| {
            let (api, pw) = (api.clone(), pw.clone());
            async move { api.login(&u, &pw).await }
        })
        .await
        .into_iter()
        .collect::<Result<_, _>>()?
    };
    let devices: Vec<Session> = firsts.iter().cloned().chain(more).collect();
    eprintln!(
        "keys: {} users, {} devices in {:.1}s",
        firsts.len() + 1,
        devices.len(),
        secs(now_ns() - t_setup)
    );

    let otks = a.otks;
    let all: Vec<Session> = devices.iter().cloned().chain([querier.clone()]).collect();
    {
        let api = api.clone();
        bounded(all, conc, move |s| {
            let api = api.clone();
            async move {
                let body = key_upload(&s, otks);
                let v = api
                    .call(Method::POST, "/v3/keys/upload", Some(&s.token), Some(&body))
                    .await?;
                let n = v["one_time_key_counts"]["signed_curve25519"]
                    .as_u64()
                    .unwrap_or(0);
                if n < otks as u64 {
                    return Err(format!(
                        "keys/upload: server counts {n} one-time keys, uploaded {otks}: {v}"
                    ));
                }
                Ok(())
            }
        })
        .await
        .into_iter()
        .collect::<Result<Vec<()>, Error>>()?;
    }

    // One room shared by the querier and every user: the server's visibility
    // rules allow querying their keys and they appear in device lists.
    let invite: Vec<&str> = firsts.iter().map(|s| s.user_id.as_str()).collect();
    let v = api
        .call(
            Method::POST,
            "/v3/createRoom",
            Some(&querier.token),
            Some(&json!({ "preset": "private_chat", "invite": invite, "name": "keys bench" })),
        )
        .await?;
    let room = v["room_id"]
        .as_str()
        .ok_or(format!("createRoom: {v}"))?
        .to_string();
    {
        let (api, room) = (api.clone(), room.clone());
        bounded(firsts.clone(), conc, move |s| {
            let (api, room) = (api.clone(), room.clone());
            async move {
                api.call(
                    Method::POST,
                    &format!("/v3/join/{}", enc(&room)),
                    Some(&s.token),
                    Some(&json!({})),
                )
                .await
            }
        })
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    }
    let setup_s = secs(now_ns() - t_setup);
    eprintln!("keys: setup done in {setup_s:.1}s");

    let phases: Vec<&str> = a.phases.split(',').map(str::trim).collect();
    let (cpu0, srv0, mach0, t0) = (
        self_cpu_s(),
        c.server_pid().and_then(proc_cpu_s),
        machine_busy_s(),
        now_ns(),
    );
    let mut out = json!({
        "mode": "keys",
        "label": c.label,
        "base_url": api.base,
        "users": a.users,
        "devices_per_user": a.devices_per_user,
        "devices": n_dev,
        "setup_s": round1(setup_s),
    });

    if phases.contains(&"query") {
        let body = json!({ "device_keys": firsts.iter().map(|s| (s.user_id.clone(), json!([]))).collect::<Map<_, _>>(), "timeout": 10000 });
        let mut lats = Vec::new();
        let (mut bytes, mut devs_seen, mut failures) = (0usize, 0usize, 0usize);
        for i in 0..a.query_reps + 3 {
            let t = now_ns();
            let resp = api
                .http
                .post(api.url("/v3/keys/query"))
                .bearer_auth(&querier.token)
                .json(&body)
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .map_err(|e| format!("keys/query: {e}"))?;
            let status = resp.status();
            let b = resp.bytes().await.map_err(|e| format!("keys/query: {e}"))?;
            let dt = now_ns() - t;
            if !status.is_success() {
                return Err(format!(
                    "keys/query: {status} {}",
                    String::from_utf8_lossy(&b)
                ));
            }
            let v: Value =
                serde_json::from_slice(&b).map_err(|e| format!("keys/query json: {e}"))?;
            devs_seen = v["device_keys"]
                .as_object()
                .map(|m| {
                    m.values()
                        .filter_map(|d| d.as_object())
                        .map(|d| d.len())
                        .sum()
                })
                .unwrap_or(0);
            failures = v["failures"].as_object().map(|m| m.len()).unwrap_or(0);
            bytes = b.len();
            if i >= 3 {
                lats.push(dt);
            }
        }
        if devs_seen != n_dev {
            eprintln!("keys: WARNING /keys/query returned {devs_seen} devices, expected {n_dev}");
        }
        out["query"] = json!({ "latency_ms": lat(&mut lats), "devices_returned": devs_seen, "failures": failures, "response_bytes": bytes });
        eprintln!(
            "keys: /keys/query of {n_dev} devices: {}",
            out["query"]["latency_ms"]
        );
    }

    if phases.contains(&"claim") {
        let mut wanted: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for d in &devices {
            wanted
                .entry(d.user_id.clone())
                .or_default()
                .insert(d.device_id.clone(), json!("signed_curve25519"));
        }
        let body = json!({ "one_time_keys": wanted, "timeout": 10000 });
        let mut lats = Vec::new();
        let (mut claimed_min, mut fallback_total) = (usize::MAX, 0usize);
        for _ in 0..a.claim_reps {
            let t = now_ns();
            let v = api
                .call(
                    Method::POST,
                    "/v3/keys/claim",
                    Some(&querier.token),
                    Some(&body),
                )
                .await?;
            lats.push(now_ns() - t);
            let mut claimed = 0;
            for devs in v["one_time_keys"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                for keys in devs.as_object().into_iter().flat_map(|m| m.values()) {
                    for k in keys.as_object().into_iter().flat_map(|m| m.values()) {
                        claimed += 1;
                        fallback_total += (k["fallback"] == json!(true)) as usize;
                    }
                }
            }
            claimed_min = claimed_min.min(claimed);
        }
        if claimed_min != n_dev {
            eprintln!("keys: WARNING /keys/claim returned {claimed_min} keys in its worst request, expected {n_dev}");
        }
        out["claim"] = json!({ "latency_ms": lat(&mut lats), "keys_per_claim_min": claimed_min, "fallback_keys_returned": fallback_total });
        eprintln!(
            "keys: /keys/claim of {n_dev} keys: {}",
            out["claim"]["latency_ms"]
        );
    }

    if phases.contains(&"fanout") {
        out["fanout"] = fanout(&api, a, &querier, &firsts, &devices).await?;
        eprintln!(
            "keys: to-device fan-out to {n_dev} devices: {}",
            out["fanout"]
        );
    }

    let win = secs(now_ns() - t0);
    let (cpu1, srv1, mach1) = (
        self_cpu_s(),
        c.server_pid().and_then(proc_cpu_s),
        machine_busy_s(),
    );
    let gen_pct = 100.0 * (cpu1 - cpu0) / win;
    let srv = srv0.zip(srv1).map(|(x, y)| y - x);
    out["generator"] = json!({
        "cpu_core_pct": round1(gen_pct),
        "cpu_machine_pct": round1(gen_pct / cores() as f64),
        "threads": c.threads.max(1),
        "saturated": gen_pct > 85.0 * c.threads.max(1) as f64,
    });
    out["other_cpu_core_pct"] = json!(mach0.zip(mach1).map(|(x, y)| round1(
        100.0 * ((y - x) - (cpu1 - cpu0) - srv.unwrap_or(0.0)).max(0.0) / win
    )));
    if let Some(pid) = c.server_pid() {
        out["server"] = json!({
            "pid": pid,
            "cpu_core_pct": srv.map(|s| round1(100.0 * s / win)),
            "peak_rss_kb": proc_status_kb(pid, "VmHWM"),
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
struct TdSync {
    next_batch: String,
    #[serde(default)]
    to_device: Option<TdEvents>,
}
#[derive(Deserialize)]
struct TdEvents {
    #[serde(default)]
    events: Vec<TdEvent>,
}
#[derive(Deserialize)]
struct TdEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    content: Value,
}

async fn fanout(
    api: &Api,
    a: &KeysArgs,
    querier: &Session,
    firsts: &[Session],
    devices: &[Session],
) -> Result<Value, Error> {
    let n_dev = devices.len();
    let filter = enc(TD_FILTER);
    // Initial syncs, so the measured ones are incremental long-polls.
    let sinces: Vec<String> = {
        let (api, f) = (api.clone(), filter.clone());
        bounded(devices.to_vec(), a.setup_concurrency, move |d| {
            let (api, f) = (api.clone(), f.clone());
            async move {
                let v = api
                    .call(
                        Method::GET,
                        &format!("/v3/sync?timeout=0&filter={f}"),
                        Some(&d.token),
                        None,
                    )
                    .await?;
                v["next_batch"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or(format!("sync: {v}"))
            }
        })
        .await
        .into_iter()
        .collect::<Result<_, _>>()?
    };
    // Per device, the rep number it last received and when.
    let got: Arc<Vec<(AtomicU64, AtomicU64)>> = Arc::new(
        (0..n_dev)
            .map(|_| (AtomicU64::new(u64::MAX), AtomicU64::new(0)))
            .collect(),
    );
    let received = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for (i, (d, since)) in devices.iter().zip(sinces).enumerate() {
        let (api, f, got, received, errors, mut stop) = (
            api.clone(),
            filter.clone(),
            got.clone(),
            received.clone(),
            errors.clone(),
            stop_rx.clone(),
        );
        let token = d.token.clone();
        tasks.push(tokio::spawn(async move {
            let mut since = since;
            loop {
                let url = api.url(&format!("/v3/sync?timeout=30000&filter={f}&since={}", enc(&since)));
                let req = api.http.get(url).bearer_auth(&token).timeout(Duration::from_secs(45)).send();
                let res = tokio::select! {
                    _ = stop.changed() => break,
                    r = async { match req.await { Ok(r) if r.status().is_success() => r.bytes().await.ok(), _ => None } } => r,
                };
                let t = now_ns();
                let Some(parsed) = res.and_then(|b| serde_json::from_slice::<TdSync>(&b).ok()) else {
                    errors.fetch_add(1, Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                since = parsed.next_batch;
                for ev in parsed.to_device.map(|t| t.events).unwrap_or_default() {
                    if ev.kind == PING {
                        if let Some(rep) = ev.content["rep"].as_u64() {
                            got[i].0.store(rep, Relaxed);
                            got[i].1.store(t, Relaxed);
                            received.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
        }));
    }
    // Let every long-poll reach the server before the first send.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut by_user: HashMap<&str, Vec<&str>> = HashMap::new();
    for d in devices {
        by_user.entry(&d.user_id).or_default().push(&d.device_id);
    }
    let (mut per_device, mut completion, mut acks) = (Vec::new(), Vec::new(), Vec::new());
    let mut missing = 0u64;
    let txn_base = now_ns();
    for rep in 0..a.fanout_reps as u64 {
        let before = received.load(Relaxed);
        let t0 = now_ns();
        let content = json!({ "rep": rep, "t": t0, "pad": "x".repeat(64) });
        let messages: Map<String, Value> = firsts
            .iter()
            .map(|u| {
                let per: Map<String, Value> = if a.to_device_star {
                    [("*".to_string(), content.clone())].into_iter().collect()
                } else {
                    by_user[u.user_id.as_str()]
                        .iter()
                        .map(|d| (d.to_string(), content.clone()))
                        .collect()
                };
                (u.user_id.clone(), Value::Object(per))
            })
            .collect();
        api.call(
            Method::PUT,
            &format!("/v3/sendToDevice/{PING}/fo{txn_base}.{rep}"),
            Some(&querier.token),
            Some(&json!({ "messages": messages })),
        )
        .await?;
        acks.push(now_ns() - t0);
        let deadline = t0 + (a.fanout_timeout * 1e9) as u64;
        while received.load(Relaxed) - before < n_dev as u64 && now_ns() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut last = 0;
        for g in got.iter() {
            if g.0.load(Relaxed) == rep {
                let dt = g.1.load(Relaxed) - t0;
                per_device.push(dt);
                last = last.max(dt);
            } else {
                missing += 1;
            }
        }
        completion.push(last);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(json!({
        "reps": a.fanout_reps,
        "addressing": if a.to_device_star { "*" } else { "each device" },
        "send_ack_ms": lat(&mut acks),
        "per_device_delivery_ms": lat(&mut per_device),
        "all_devices_delivered_ms": lat(&mut completion),
        "missing_deliveries": missing,
        "sync_errors": errors.load(Relaxed),
    }))
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn summary(v: &Value) -> String {
    let f = |p: &Value| format!("p50 {} p99 {} ms", p["p50"], p["p99"]);
    let mut s = format!(
        "{}: {} devices ({} users × {})",
        v["label"].as_str().unwrap_or("-"),
        v["devices"],
        v["users"],
        v["devices_per_user"]
    );
    if v["query"].is_object() {
        s.push_str(&format!(
            "\n  /keys/query: {} ({} devices returned)",
            f(&v["query"]["latency_ms"]),
            v["query"]["devices_returned"]
        ));
    }
    if v["claim"].is_object() {
        s.push_str(&format!(
            "\n  /keys/claim: {} (min {} keys per claim)",
            f(&v["claim"]["latency_ms"]),
            v["claim"]["keys_per_claim_min"]
        ));
    }
    if v["fanout"].is_object() {
        let fo = &v["fanout"];
        s.push_str(&format!(
            "\n  to-device fan-out: send ack {}, per device {}, all devices {}, missing {}",
            f(&fo["send_ack_ms"]),
            f(&fo["per_device_delivery_ms"]),
            f(&fo["all_devices_delivered_ms"]),
            fo["missing_deliveries"]
        ));
    }
    s.push_str(&format!(
        "\n  generator CPU {}% of one core",
        v["generator"]["cpu_core_pct"]
    ));
    if let Some(srv) = v["server"].as_object() {
        s.push_str(&format!(
            "; server CPU {}% of one core, peak RSS {} kB",
            srv["cpu_core_pct"], srv["peak_rss_kb"]
        ));
    }
    s.push_str(&format!(
        "; other processes {}% of one core",
        v["other_cpu_core_pct"]
    ));
    s
}
