//! Several `hotline serve` processes on one PostgreSQL database: clients of
//! the same room on different processes see every message once, in one
//! order, whichever process took it; a process killed with `kill -9` loses
//! nothing it acknowledged.
//!
//! These tests always run on PostgreSQL (`HOTLINE_TEST_POSTGRES`), whatever
//! the engine of the suite's pass: several processes is PostgreSQL's case.

use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{postgres_database, Http, Server};
use serde_json::{json, Value};

/// Two `hotline serve` processes on one new PostgreSQL database and one
/// data directory, as a deployment runs them.
struct TwoProcesses {
    a: Server,
    b: Server,
    // Dropped after the servers (fields drop in order).
    _data: tempfile::TempDir,
    _db: common::TestDatabase,
}

impl TwoProcesses {
    async fn start() -> Self {
        Self::start_configured("").await
    }

    /// Both processes with `toml` as their configuration file.
    async fn start_configured(toml: &str) -> Self {
        let data = tempfile::tempdir().unwrap();
        let db = postgres_database();
        let config = data.path().join("hotline.toml");
        std::fs::write(&config, toml).unwrap();
        let args = &["--allow-registration", "--config", config.to_str().unwrap()];
        let a = Server::start_on(data.path().into(), db.share(), args).await;
        let b = Server::start_on(data.path().into(), db.share(), args).await;
        Self {
            a,
            b,
            _data: data,
            _db: db,
        }
    }
}

/// A room everyone joined; returns its id.
async fn shared_room(owner: (&Http, &str), others: &[(&Http, &str)]) -> String {
    let (status, v) = owner
        .0
        .call(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(owner.1),
            Some(r#"{"preset":"public_chat"}"#),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let room = v["room_id"].as_str().unwrap().to_owned();
    for (http, token) in others {
        let (status, v) = http
            .call(
                "POST",
                &format!("/_matrix/client/v3/join/{room}"),
                Some(token),
                Some("{}"),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    room
}

/// A request that meets the per-user rate limit (these clients send and
/// sync as fast as the server answers) waits as told and goes again, as a
/// client does.
async fn call(http: &Http, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    loop {
        let (status, v) = http.call(method, path, token, None).await;
        if status != 429 {
            return (status, v);
        }
        let ms = v["retry_after_ms"].as_u64().unwrap_or(100);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Follows `/sync` on one process until `want` messages with the body
/// prefix arrived in the room; every batch must be complete (`limited`
/// would hide messages). Returns the bodies in the order they came.
async fn receive(http: &Http, token: &str, room: &str, prefix: &str, want: usize) -> Vec<String> {
    let filter = urlencode(&json!({"room": {"timeline": {"limit": 100_000}}}).to_string());
    let (status, first) = call(
        http,
        "GET",
        &format!("/_matrix/client/v3/sync?filter={filter}"),
        Some(token),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let mut since = first["next_batch"].as_str().unwrap().to_owned();
    let mut bodies = Vec::new();
    collect(&first, room, prefix, &mut bodies);
    let deadline = Instant::now() + Duration::from_secs(120);
    while bodies.len() < want {
        assert!(
            Instant::now() < deadline,
            "{} of {want} messages after 120 s",
            bodies.len()
        );
        let (status, v) = call(
            http,
            "GET",
            &format!("/_matrix/client/v3/sync?since={since}&timeout=5000&filter={filter}"),
            Some(token),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_ne!(
            v["rooms"]["join"][room]["timeline"]["limited"],
            json!(true),
            "an incremental sync left messages out"
        );
        collect(&v, room, prefix, &mut bodies);
        since = v["next_batch"].as_str().unwrap().to_owned();
    }
    bodies
}

fn collect(sync: &Value, room: &str, prefix: &str, out: &mut Vec<String>) {
    if let Some(events) = sync["rooms"]["join"][room]["timeline"]["events"].as_array() {
        for e in events {
            if let Some(body) = e["content"]["body"].as_str() {
                if body.starts_with(prefix) {
                    out.push(body.to_owned());
                }
            }
        }
    }
}

/// The room's message bodies, oldest first, paginating `/messages`
/// backwards to the start.
async fn history(http: &Http, token: &str, room: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut from = String::new();
    loop {
        let (status, v) = call(
            http,
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1000{from}"),
            Some(token),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        bodies.extend(
            v["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)),
        );
        match v["end"].as_str() {
            Some(end) => from = format!("&from={end}"),
            None => break,
        }
    }
    bodies.reverse();
    bodies
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends `n` messages `PREFIX-who-i` one after the other; returns those
/// acknowledged (a `200` with an event id).
async fn send_all(http: Http, token: String, room: String, who: &str, n: usize) -> Vec<String> {
    let mut acked = Vec::new();
    let mut i = 0;
    while i < n {
        let body = format!("m-{who}-{i}");
        let r = http
            .client
            .put(format!(
                "{}/_matrix/client/v3/rooms/{room}/send/m.room.message/{who}-{i}",
                http.base
            ))
            .bearer_auth(&token)
            .json(&json!({"msgtype": "m.text", "body": body}))
            .send()
            .await;
        match r {
            Ok(resp) if resp.status().is_success() => {
                let v: Value = resp.json().await.unwrap();
                assert!(v["event_id"].is_string(), "{v}");
                acked.push(body);
                i += 1;
            }
            // The per-user rate limit: wait as told and send the same
            // transaction again, as a client does.
            Ok(resp) if resp.status().as_u16() == 429 => {
                let v: Value = resp.json().await.unwrap_or_default();
                let ms = v["retry_after_ms"].as_u64().unwrap_or(100);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            // The process was killed under this request: not acknowledged.
            _ => break,
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_on_two_processes_receive_every_message_once_in_one_order() {
    let two = TwoProcesses::start().await;
    let (ha, hb) = (Http::new(&two.a.url), Http::new(&two.b.url));
    // Two users on each process.
    let alice = ha.register("alice").await;
    let carol = ha.register("carol").await;
    let bob = hb.register("bob").await;
    let dave = hb.register("dave").await;
    let room = shared_room((&ha, &alice), &[(&hb, &bob), (&ha, &carol), (&hb, &dave)]).await;

    let (history_a, history_b) = (alice.clone(), bob.clone());
    const EACH: usize = 500;
    let total = 4 * EACH;
    let readers = [
        (Http::new(&two.a.url), alice.clone()),
        (Http::new(&two.b.url), bob.clone()),
        (Http::new(&two.a.url), carol.clone()),
        (Http::new(&two.b.url), dave.clone()),
    ]
    .map(|(http, token)| {
        let room = room.clone();
        tokio::spawn(async move { receive(&http, &token, &room, "m-", total).await })
    });
    // Sends from both processes, interleaved.
    let senders = [
        (Http::new(&two.a.url), alice, "alice"),
        (Http::new(&two.b.url), bob, "bob"),
        (Http::new(&two.a.url), carol, "carol"),
        (Http::new(&two.b.url), dave, "dave"),
    ]
    .map(|(http, token, who)| {
        let room = room.clone();
        tokio::spawn(async move { send_all(http, token, room, who, EACH).await })
    });
    for s in senders {
        assert_eq!(s.await.unwrap().len(), EACH, "every send acknowledged");
    }
    let mut orders = Vec::new();
    for r in readers {
        let got = r.await.unwrap();
        let distinct: HashSet<&String> = got.iter().collect();
        assert_eq!(distinct.len(), got.len(), "a message arrived twice");
        assert_eq!(got.len(), total, "every message arrived");
        orders.push(got);
    }
    for o in &orders[1..] {
        assert!(o == &orders[0], "all clients see one order");
    }
    // The same order as the room's history, read back on either process.
    for (http, token) in [(&ha, &history_a), (&hb, &history_b)] {
        let history: Vec<String> = history(http, token, &room)
            .await
            .into_iter()
            .filter(|b| b.starts_with("m-"))
            .collect();
        assert!(history == orders[0], "the history is the order clients saw");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_killed_mid_stream_loses_nothing_it_acknowledged() {
    let mut two = TwoProcesses::start().await;
    let (ha, hb) = (Http::new(&two.a.url), Http::new(&two.b.url));
    let alice = ha.register("alice").await;
    let bob = hb.register("bob").await;
    let room = shared_room((&ha, &alice), &[(&hb, &bob)]).await;

    let to_a = tokio::spawn(send_all(
        Http::new(&two.a.url),
        alice.clone(),
        room.clone(),
        "alice",
        100_000,
    ));
    let to_b = tokio::spawn(send_all(
        Http::new(&two.b.url),
        bob.clone(),
        room.clone(),
        "bob",
        300,
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    two.a.kill9();
    let acked_a = to_a.await.unwrap();
    let acked_b = to_b.await.unwrap();
    assert!(
        !acked_a.is_empty(),
        "process A acknowledged sends before it died"
    );
    assert_eq!(acked_b.len(), 300, "process B went on");

    // Everything A acknowledged is in the room, seen from B.
    let stored = history(&hb, &bob, &room).await;
    let distinct: HashSet<&String> = stored.iter().collect();
    assert_eq!(distinct.len(), stored.len(), "no message stored twice");
    for body in acked_a.iter().chain(&acked_b) {
        assert!(
            distinct.contains(body),
            "{body} was acknowledged but is not stored"
        );
    }
    // A restarts on the same database and serves the same history.
    two.a.spawn().await;
    assert_eq!(history(&Http::new(&two.a.url), &alice, &room).await, stored);
    drop(two);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_made_through_one_process_shows_in_the_members_sync_on_the_other() {
    let two = TwoProcesses::start().await;
    let (ha, hb) = (Http::new(&two.a.url), Http::new(&two.b.url));
    let alice = ha.register("alice").await;
    let bob = ha.register("bob").await;
    // Bob's sync runs on B before he is in any room: B has his (empty)
    // list of rooms cached, and has not loaded the room.
    let (status, v) = hb
        .call("GET", "/_matrix/client/v3/sync", Some(&bob), None)
        .await;
    assert_eq!(status, 200, "{v}");
    // He joins through A (the room lives only in A's caches).
    let room = shared_room((&ha, &alice), &[(&ha, &bob)]).await;
    let sent = send_all(
        Http::new(&two.a.url),
        alice.clone(),
        room.clone(),
        "alice",
        20,
    )
    .await;
    assert_eq!(sent.len(), 20);
    let got = receive(&hb, &bob, &room, "m-", 20).await;
    assert_eq!(got, sent, "B's sync shows the room and its messages");
    drop(two);
}

/// The `m.receipt` content of a room in a sync response: event id →
/// users with an `m.read` receipt on it.
fn read_receipts(sync: &Value, room: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.receipt")
    {
        for (event, types) in e["content"].as_object().into_iter().flatten() {
            for user in types["m.read"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(u, _)| u)
            {
                out.push((event.clone(), user.clone()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receipts_sent_through_one_process_show_in_an_initial_sync_on_the_other() {
    let two = TwoProcesses::start().await;
    let (ha, hb) = (Http::new(&two.a.url), Http::new(&two.b.url));
    let alice = ha.register("alice").await;
    let bob = hb.register("bob").await;
    let room = shared_room((&ha, &alice), &[(&hb, &bob)]).await;
    let mut sent = Vec::new();
    for i in 0..2 {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/r{i}",
            urlencode(&room)
        );
        let body = r#"{"msgtype":"m.text","body":"read me"}"#;
        let (status, v) = ha.call("PUT", &path, Some(&alice), Some(body)).await;
        assert_eq!(status, 200, "{v}");
        sent.push(v["event_id"].as_str().unwrap().to_owned());
    }
    // B has loaded the room (Bob's first sync) before the receipts come.
    let (status, first) = call(&hb, "GET", "/_matrix/client/v3/sync", Some(&bob)).await;
    assert_eq!(status, 200, "{first}");
    let mut ids = Vec::new();
    for (http, token) in [(&ha, &alice), (&hb, &bob)] {
        let (status, v) = call(
            http,
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(token),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        ids.push(v["user_id"].as_str().unwrap().to_owned());
    }
    let (alice_id, bob_id) = (ids[0].clone(), ids[1].clone());
    for (http, token, event) in [
        (&hb, &bob, &sent[0]),
        (&ha, &alice, &sent[0]),
        (&hb, &bob, &sent[1]),
    ] {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
            urlencode(&room),
            urlencode(event)
        );
        let (status, v) = http.call("POST", &path, Some(token), Some("{}")).await;
        assert_eq!(status, 200, "{v}");
    }
    // Each process's initial sync shows each user's newest receipt only,
    // whichever process took it.
    let want = {
        let mut w = vec![(sent[0].clone(), alice_id), (sent[1].clone(), bob_id)];
        w.sort();
        w
    };
    for (http, token) in [(&ha, &alice), (&hb, &bob)] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, v) = call(http, "GET", "/_matrix/client/v3/sync", Some(token)).await;
            assert_eq!(status, 200, "{v}");
            let got = read_receipts(&v, &room);
            if got == want {
                break;
            }
            assert!(Instant::now() < deadline, "receipts {got:?}, want {want:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(two);
}

/// Long enough for one process's rate-limit charges to reach the other
/// (they are shared every 50 ms).
const CHARGES_HEARD: Duration = Duration::from_millis(300);

async fn login(http: &Http, user: &str, password: &str) -> (u16, Value) {
    let body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    });
    http.call(
        "POST",
        "/_matrix/client/v3/login",
        None,
        Some(&body.to_string()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_lock_earned_on_one_process_holds_on_the_other() {
    let two = TwoProcesses::start_configured(
        "[rate_limits]\nlogin_failures_allowed = 3\nlogin_backoff_seconds = 60.0\n",
    )
    .await;
    let (ha, hb) = (Http::new(&two.a.url), Http::new(&two.b.url));
    ha.register("alice").await;
    // Guesses spread over both processes count together.
    for (i, http) in [&ha, &hb, &ha].into_iter().enumerate() {
        let (status, v) = login(http, "alice", &format!("guess {i}")).await;
        assert_eq!(status, 403, "{v}");
        tokio::time::sleep(CHARGES_HEARD).await;
    }
    // The fourth failure anywhere starts the lock ...
    let (status, v) = login(&hb, "alice", "guess 3").await;
    assert_eq!(status, 403, "{v}");
    tokio::time::sleep(CHARGES_HEARD).await;
    // ... which the other process keeps, even for the right password.
    let (status, v) = login(&ha, "alice", "correct horse").await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (429, Some("M_LIMIT_EXCEEDED")),
        "{v}"
    );
    let (status, v) = login(&hb, "alice", "correct horse").await;
    assert_eq!(status, 429, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_gets_one_request_allowance_across_processes() {
    const BURST: usize = 12;
    let two = TwoProcesses::start_configured(&format!(
        "[rate_limits]\nper_user_per_second = 0.01\nper_user_burst = {BURST}.0\n"
    ))
    .await;
    let (ha, hb) = (Http::new(&two.a.url), Http::new(&two.b.url));
    let alice = ha.register("alice").await;
    let mut allowed = 0;
    for i in 0..2 * BURST {
        let http = if i % 2 == 0 { &ha } else { &hb };
        let (status, v) = http
            .call(
                "GET",
                "/_matrix/client/v3/account/whoami",
                Some(&alice),
                None,
            )
            .await;
        match status {
            200 => allowed += 1,
            429 => assert_eq!(v["errcode"], "M_LIMIT_EXCEEDED", "{v}"),
            _ => panic!("{status} {v}"),
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // One burst between them (a process alone would allow a burst each).
    assert_eq!(allowed, BURST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_auth_flow_begun_on_one_process_ends_on_the_other() {
    let two = TwoProcesses::start().await;
    let (ha, hb) = (Http::new(&two.a.url), Http::new(&two.b.url));
    let alice = ha.register("alice").await;
    let (status, me) = ha
        .call(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 200, "{me}");
    let device = me["device_id"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/devices/{device}");
    let (status, challenge) = ha.call("DELETE", &path, Some(&alice), Some("{}")).await;
    assert_eq!(status, 401, "{challenge}");
    let session = challenge["session"].as_str().unwrap();
    let body = json!({"auth": {
        "type": "m.login.password",
        "session": session,
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "correct horse",
    }});
    let (status, v) = hb
        .call("DELETE", &path, Some(&alice), Some(&body.to_string()))
        .await;
    assert_eq!(status, 200, "{v}");
    // The device and its token are gone on B at once, and on A as soon as
    // A replays B's commit (its cached token goes with it).
    let (status, _) = hb
        .call(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 401);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = ha
            .call(
                "GET",
                "/_matrix/client/v3/account/whoami",
                Some(&alice),
                None,
            )
            .await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            Instant::now() < deadline,
            "A still accepts the deleted device's token after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn presence(http: &Http, token: &str, user: &str) -> String {
    let (status, v) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/presence/{user}/status"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["presence"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_syncing_on_another_process_is_not_timed_out_by_this_one() {
    let two = TwoProcesses::start_configured("offline_after_seconds = 1\n").await;
    let (ha, hb) = (Http::new(&two.a.url), Http::new(&two.b.url));
    let alice = ha.register("alice").await;
    let user = "@alice:localhost";
    // Seen syncing on A first, then on B only, for several timeouts.
    let (status, v) = ha
        .call("GET", "/_matrix/client/v3/sync", Some(&alice), None)
        .await;
    assert_eq!(status, 200, "{v}");
    let mut since = v["next_batch"].as_str().unwrap().to_owned();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let (status, v) = hb
            .call(
                "GET",
                &format!("/_matrix/client/v3/sync?since={since}&timeout=300"),
                Some(&alice),
                None,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        since = v["next_batch"].as_str().unwrap().to_owned();
        assert_eq!(
            presence(&ha, &alice, user).await,
            "online",
            "timed out while syncing on B"
        );
    }
    // Once no process sees her, one of them times her out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while presence(&hb, &alice, user).await != "offline" {
        assert!(Instant::now() < deadline, "never timed out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushers_notifications_are_delivered_once_whichever_process_took_the_events() {
    use crate::pushers::{exactly, pusher, set_pusher, Sink};
    let two = TwoProcesses::start().await;
    let (ha, hb) = (Http::new(&two.a.url), Http::new(&two.b.url));
    let alice = ha.register("alice").await;
    let bob = hb.register("bob").await;
    let room = shared_room((&ha, &alice), &[(&hb, &bob)]).await;
    let sink = Sink::start().await;
    // Set through one process, texts through both.
    let (s, v) = set_pusher(&hb, &alice, pusher(&sink, "k", None)).await;
    assert_eq!(s, 200, "{v}");
    let mut sent = Vec::new();
    for i in 0..6 {
        let http = if i % 2 == 0 { &ha } else { &hb };
        sent.push(
            http.send_text(&bob, &room, &format!("p{i}"), "to alice")
                .await,
        );
    }
    exactly(&sink, sent.len()).await;
    let mut got = sink.event_ids();
    got.sort();
    sent.sort();
    assert_eq!(got, sent, "each once");
}
