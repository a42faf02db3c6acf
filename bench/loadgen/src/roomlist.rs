//! The room-list workload: what a sliding sync client (Element X,
//! matrix-rust-sdk's `RoomListService`) waits for before it shows a user's
//! rooms, on Simplified Sliding Sync (MSC4186).
//!
//! Setup: `--others` accounts create `--rooms` public rooms between them
//! (round robin), the probe user (the first account) joins every one, and
//! each room gets one text from its creator.
//!
//! Measured, one request at a time, each `--samples` times on a fresh
//! connection (a new `conn_id`, no `pos`: a client starting up):
//! - first room list: the `RoomListService`'s first request, list
//!   `all_rooms` with range 0-19, `timeline_limit` 1, its required state
//!   and the account-data, receipts and typing extensions;
//! - whole room list: the same list with range 0-(rooms-1), which the
//!   service grows to;
//! - incremental: on a connection past its first answer, one new text in
//!   one of the rooms (sent first, not timed), then the request that
//!   carries it (`timeout=0`).

use std::time::Instant;

use reqwest::Method;
use serde_json::{json, Value};

use crate::matrix::{bounded, Api, Error, Session};
use crate::stats::pct_ms;
use crate::Common;

#[derive(clap::Args, Clone, Debug)]
pub struct RoomListArgs {
    #[arg(long, default_value_t = 500)]
    pub rooms: usize,
    /// Users besides the probe who create the rooms.
    #[arg(long, default_value_t = 10)]
    pub others: usize,
    #[arg(long, default_value_t = 10)]
    pub samples: usize,
    #[arg(long, default_value_t = 8)]
    pub setup_concurrency: usize,
}

const PATH: &str = "/unstable/org.matrix.simplified_msc3575/sync";

/// matrix-sdk-ui's room list request (its `DEFAULT_REQUIRED_STATE`).
fn room_list_request(conn: &str, last: usize) -> Value {
    json!({
        "conn_id": conn,
        "lists": {"all_rooms": {
            "ranges": [[0, last]],
            "timeline_limit": 1,
            "required_state": [
                ["m.room.name", ""], ["m.room.encryption", ""], ["m.room.member", "$LAZY"],
                ["m.room.member", "$ME"], ["m.room.topic", ""], ["m.room.canonical_alias", ""],
                ["m.room.power_levels", ""], ["m.room.join_rules", ""], ["m.room.create", ""],
                ["m.room.history_visibility", ""], ["m.room.avatar", ""], ["m.room.tombstone", ""],
                ["m.call.member", "*"], ["m.space.parent", "*"], ["m.space.child", "*"]
            ]
        }},
        "extensions": {
            "account_data": {"enabled": true},
            "receipts": {"enabled": true, "rooms": ["*"]},
            "typing": {"enabled": true}
        }
    })
}

async fn timed(
    api: &Api,
    probe: &Session,
    body: &Value,
    pos: Option<&str>,
) -> Result<(u64, Value), Error> {
    let path = match pos {
        Some(p) => format!("{PATH}?timeout=0&pos={p}"),
        None => format!("{PATH}?timeout=0"),
    };
    let t = Instant::now();
    let v = api
        .call(Method::POST, &path, Some(&probe.token), Some(body))
        .await?;
    Ok((t.elapsed().as_nanos() as u64, v))
}

pub async fn run(api: Api, c: &Common, a: &RoomListArgs) -> Result<Value, Error> {
    if a.rooms == 0 || a.others == 0 || a.samples == 0 {
        return Err("roomlist: need rooms, others and samples > 0".into());
    }
    let prefix = c.user_prefix();
    let t = Instant::now();
    let names: Vec<String> = (0..=a.others).map(|i| format!("{prefix}u{i}")).collect();
    let reg = {
        let api = api.clone();
        let (pw, token) = (c.password.clone(), c.registration_token.clone());
        bounded(names, a.setup_concurrency, move |n| {
            let (api, pw, token) = (api.clone(), pw.clone(), token.clone());
            async move { api.register(&n, &pw, token.as_deref()).await }
        })
        .await
    };
    let sessions: Vec<Session> = reg.into_iter().collect::<Result<_, _>>()?;
    let sessions = std::sync::Arc::new(sessions);
    let jobs: Vec<usize> = (0..a.rooms).collect();
    let others = a.others;
    let seeded = {
        let (api, sessions) = (api.clone(), sessions.clone());
        bounded(jobs, a.setup_concurrency, move |r| {
            let (api, sessions) = (api.clone(), sessions.clone());
            async move {
                let creator = &sessions[1 + r % others];
                let probe = &sessions[0];
                let body = json!({"preset": "public_chat", "name": format!("Room {r}")});
                let v = api
                    .call(
                        Method::POST,
                        "/v3/createRoom",
                        Some(&creator.token),
                        Some(&body),
                    )
                    .await?;
                let id = v["room_id"]
                    .as_str()
                    .ok_or(format!("createRoom: {v}"))?
                    .to_owned();
                api.call(
                    Method::POST,
                    &format!("/v3/join/{}", crate::matrix::enc(&id)),
                    Some(&probe.token),
                    Some(&json!({})),
                )
                .await?;
                api.call(
                    Method::PUT,
                    &format!(
                        "/v3/rooms/{}/send/m.room.message/seed{r}",
                        crate::matrix::enc(&id)
                    ),
                    Some(&creator.token),
                    Some(&json!({"msgtype": "m.text", "body": format!("hello room {r}")})),
                )
                .await?;
                Ok::<_, Error>(id)
            }
        })
        .await
    };
    let rooms: Vec<String> = seeded.into_iter().collect::<Result<_, _>>()?;
    let setup_s = t.elapsed().as_secs_f64();
    eprintln!("roomlist: {} rooms seeded in {setup_s:.1} s", rooms.len());
    let probe = &sessions[0];

    let mut first_page = Vec::new();
    let mut whole = Vec::new();
    let mut incremental = Vec::new();
    for i in 0..a.samples {
        let (ns, v) = timed(&api, probe, &room_list_request(&format!("p{i}"), 19), None).await?;
        let shown = v["rooms"].as_object().map_or(0, |r| r.len());
        if shown != 20.min(a.rooms) || v["lists"]["all_rooms"]["count"] != json!(a.rooms) {
            return Err(format!(
                "first room list: {shown} rooms, count {}",
                v["lists"]["all_rooms"]["count"]
            ));
        }
        first_page.push(ns);
        let (ns, v) = timed(
            &api,
            probe,
            &room_list_request(&format!("w{i}"), a.rooms - 1),
            None,
        )
        .await?;
        let shown = v["rooms"].as_object().map_or(0, |r| r.len());
        if shown != a.rooms {
            return Err(format!("whole room list: {shown} rooms"));
        }
        whole.push(ns);
        // Incremental: one new text, then the answer that carries it.
        let pos = v["pos"].as_str().ok_or("no pos")?.to_owned();
        let room = &rooms[(i * 37) % rooms.len()];
        let creator = &sessions[1 + ((i * 37) % rooms.len()) % others];
        api.call(
            Method::PUT,
            &format!(
                "/v3/rooms/{}/send/m.room.message/inc{i}",
                crate::matrix::enc(room)
            ),
            Some(&creator.token),
            Some(&json!({"msgtype": "m.text", "body": format!("new text {i}")})),
        )
        .await?;
        let body = room_list_request(&format!("w{i}"), a.rooms - 1);
        let mut waited = 0u64;
        loop {
            let (ns, v) = timed(&api, probe, &body, Some(&pos)).await?;
            if v["rooms"].get(room.as_str()).is_some() {
                incremental.push(ns + waited);
                break;
            }
            // The text may not be visible to the probe's sync yet (a
            // server that commits asynchronously): count the wait.
            waited += ns;
            if waited > 10_000_000_000 {
                return Err("incremental: the new text never came".into());
            }
        }
    }
    let stat = |v: &mut Vec<u64>| {
        let first = v.first().map(|n| *n as f64 / 1e6);
        v.sort_unstable();
        json!({"first_ms": first, "p50_ms": pct_ms(v, 50.0), "p95_ms": pct_ms(v, 95.0)})
    };
    Ok(json!({
        "label": c.label,
        "workload": "roomlist",
        "rooms": a.rooms,
        "samples": a.samples,
        "setup_s": setup_s,
        "first_room_list": stat(&mut first_page),
        "whole_room_list": stat(&mut whole),
        "incremental": stat(&mut incremental),
    }))
}

pub fn summary(v: &Value) -> String {
    let f = |k: &str, s: &str| v[k][s].as_f64().unwrap_or(f64::NAN);
    format!(
        "{}: {} rooms: first room list p50 {:.1} ms (first {:.1}), whole list p50 {:.1} ms, incremental p50 {:.2} ms",
        v["label"],
        v["rooms"],
        f("first_room_list", "p50_ms"),
        f("first_room_list", "first_ms"),
        f("whole_room_list", "p50_ms"),
        f("incremental", "p50_ms"),
    )
}
