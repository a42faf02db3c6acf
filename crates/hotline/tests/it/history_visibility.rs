//! History visibility and what a reader sees of a room, checked over HTTP
//! against the real binary: `m.room.history_visibility` as it was at each
//! event decides who reads it (`/messages`, `/event`, `/context`); one who
//! left reads the state as it was when they left; filters apply before the
//! limit; `/context` honours its filter and `/members` its `at` and
//! membership filters.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{Http, Server};
use serde_json::{json, Value};

const V3: &str = "/_matrix/client/v3";

/// `(status, errcode)` of a response, for compact assertions.
fn code(r: &(u16, Value)) -> (u16, Option<&str>) {
    (r.0, r.1["errcode"].as_str())
}

async fn get(http: &Http, token: &str, path: &str) -> (u16, Value) {
    http.call("GET", &format!("{V3}{path}"), Some(token), None)
        .await
}

async fn post(http: &Http, token: &str, path: &str, body: Value) -> (u16, Value) {
    http.call(
        "POST",
        &format!("{V3}{path}"),
        Some(token),
        Some(&body.to_string()),
    )
    .await
}

async fn put(http: &Http, token: &str, path: &str, body: Value) -> (u16, Value) {
    http.call(
        "PUT",
        &format!("{V3}{path}"),
        Some(token),
        Some(&body.to_string()),
    )
    .await
}

/// A public room whose history visibility is `visibility`; returns its id.
async fn room_with(http: &Http, token: &str, visibility: &str) -> String {
    let body = json!({
        "preset": "public_chat",
        "initial_state": [{
            "type": "m.room.history_visibility",
            "content": {"history_visibility": visibility}
        }]
    });
    let (status, v) = post(http, token, "/createRoom", body).await;
    assert_eq!(status, 200, "createRoom: {v}");
    v["room_id"].as_str().unwrap().to_owned()
}

static TXN: AtomicUsize = AtomicUsize::new(0);

/// Sends an event of `kind` with `content`; returns its id.
async fn send_event(http: &Http, token: &str, room: &str, kind: &str, content: Value) -> String {
    let txn = TXN.fetch_add(1, Ordering::Relaxed);
    let (status, v) = put(
        http,
        token,
        &format!("/rooms/{room}/send/{kind}/t{txn}"),
        content,
    )
    .await;
    assert_eq!(status, 200, "send: {v}");
    v["event_id"].as_str().unwrap().to_owned()
}

async fn say(http: &Http, token: &str, room: &str, body: &str) -> String {
    send_event(
        http,
        token,
        room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": body}),
    )
    .await
}

async fn set_state(http: &Http, token: &str, room: &str, kind: &str, content: Value) {
    let (status, v) = put(http, token, &format!("/rooms/{room}/state/{kind}"), content).await;
    assert_eq!(status, 200, "state {kind}: {v}");
}

async fn membership_call(http: &Http, token: &str, room: &str, action: &str, body: Value) {
    let (status, v) = post(http, token, &format!("/rooms/{room}/{action}"), body).await;
    assert_eq!(status, 200, "{action}: {v}");
}

/// The bodies of the `m.room.message` events in a list of events.
fn bodies(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

/// Every message body `token` reads in `room`, oldest first, paging
/// backwards with the default filter.
async fn readable_bodies(http: &Http, token: &str, room: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/rooms/{room}/messages?dir=b&limit=7");
        if let Some(f) = &from {
            path.push_str(&format!("&from={f}"));
        }
        let (status, v) = get(http, token, &path).await;
        assert_eq!(status, 200, "messages: {v}");
        out.extend(bodies(&v["chunk"]));
        match v["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => {
                out.reverse();
                return out;
            }
        }
    }
    panic!("/messages did not end in 100 pages");
}

/// `userId → membership` of a `/members` chunk.
fn memberships(v: &Value) -> std::collections::BTreeMap<String, String> {
    v["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["state_key"].as_str().unwrap().to_owned(),
                e["content"]["membership"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn a_member_who_joins_a_joined_visibility_room_cannot_read_earlier_messages() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = room_with(&http, &alice, "joined").await;
    let secret = say(&http, &alice, &room, "before bob").await;
    say(&http, &alice, &room, "also before bob").await;
    membership_call(&http, &bob, &room, "join", json!({})).await;
    let after = say(&http, &alice, &room, "after bob joined").await;

    assert_eq!(
        readable_bodies(&http, &bob, &room).await,
        ["after bob joined"],
        "bob reads only what was sent since he joined"
    );
    assert_eq!(
        readable_bodies(&http, &alice, &room).await,
        ["before bob", "also before bob", "after bob joined"],
        "alice, joined throughout, reads everything"
    );
    let r = get(&http, &bob, &format!("/rooms/{room}/event/{secret}")).await;
    assert_eq!(code(&r), (404, Some("M_NOT_FOUND")), "{:?}", r.1);
    let r = get(&http, &bob, &format!("/rooms/{room}/context/{secret}")).await;
    assert_eq!(code(&r), (404, Some("M_NOT_FOUND")), "{:?}", r.1);
    let (status, v) = get(&http, &bob, &format!("/rooms/{room}/context/{after}")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["event"]["content"]["body"], "after bob joined");
    assert_eq!(
        bodies(&v["events_before"]),
        Vec::<String>::new(),
        "no earlier message around it either: {v}"
    );
    // Forward from the start of the room too.
    let (status, v) = get(
        &http,
        &bob,
        &format!("/rooms/{room}/messages?dir=f&limit=50"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(bodies(&v["chunk"]), ["after bob joined"]);
}

#[tokio::test]
async fn shared_visibility_shows_a_new_member_the_earlier_history() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = room_with(&http, &alice, "joined").await;
    say(&http, &alice, &room, "while joined-only").await;
    set_state(
        &http,
        &alice,
        &room,
        "m.room.history_visibility",
        json!({"history_visibility": "shared"}),
    )
    .await;
    let open = say(&http, &alice, &room, "while shared").await;
    membership_call(&http, &bob, &room, "join", json!({})).await;
    say(&http, &alice, &room, "after bob joined").await;

    // The visibility in force at each event decides: what was sent while
    // the room was `shared` is his, what was sent while `joined` is not.
    assert_eq!(
        readable_bodies(&http, &bob, &room).await,
        ["while shared", "after bob joined"]
    );
    let (status, v) = get(&http, &bob, &format!("/rooms/{room}/event/{open}")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["content"]["body"], "while shared");

    // Once he leaves, he keeps what he could see up to then and no more.
    membership_call(&http, &bob, &room, "leave", json!({})).await;
    say(&http, &alice, &room, "after bob left").await;
    assert_eq!(
        readable_bodies(&http, &bob, &room).await,
        ["while shared", "after bob joined"]
    );
}

#[tokio::test]
async fn invited_visibility_shows_history_from_the_invite() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let carol = http.register("carol").await;
    let room = room_with(&http, &alice, "invited").await;
    say(&http, &alice, &room, "before the invite").await;
    membership_call(
        &http,
        &alice,
        &room,
        "invite",
        json!({"user_id": "@bob:localhost"}),
    )
    .await;
    say(&http, &alice, &room, "after the invite").await;

    // Invited, not yet joined: already reads from the invite on.
    assert_eq!(
        readable_bodies(&http, &bob, &room).await,
        ["after the invite"]
    );
    membership_call(&http, &bob, &room, "join", json!({})).await;
    say(&http, &alice, &room, "after bob joined").await;
    assert_eq!(
        readable_bodies(&http, &bob, &room).await,
        ["after the invite", "after bob joined"]
    );

    // Never invited nor joined: refused outright.
    let r = get(&http, &carol, &format!("/rooms/{room}/messages?dir=b")).await;
    assert_eq!(code(&r), (403, Some("M_FORBIDDEN")), "{:?}", r.1);
}

#[tokio::test]
async fn a_world_readable_room_is_readable_by_a_non_member_but_only_while_world_readable() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let eve = http.register("eve").await;
    let room = room_with(&http, &alice, "world_readable").await;
    let public = say(&http, &alice, &room, "for everyone").await;
    set_state(
        &http,
        &alice,
        &room,
        "m.room.history_visibility",
        json!({"history_visibility": "joined"}),
    )
    .await;
    say(&http, &alice, &room, "for members").await;

    assert_eq!(readable_bodies(&http, &eve, &room).await, ["for everyone"]);
    let (status, v) = get(&http, &eve, &format!("/rooms/{room}/event/{public}")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["content"]["body"], "for everyone");
    // The room is no longer world-readable: its current state is not hers.
    let r = get(&http, &eve, &format!("/rooms/{room}/state")).await;
    assert_eq!(code(&r), (403, Some("M_FORBIDDEN")), "{:?}", r.1);
}

#[tokio::test]
async fn a_user_who_left_sees_the_state_as_it_was_when_they_left() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let carol = http.register("carol").await;
    let room = room_with(&http, &alice, "shared").await;
    membership_call(&http, &bob, &room, "join", json!({})).await;
    set_state(
        &http,
        &alice,
        &room,
        "m.room.name",
        json!({"name": "Old name"}),
    )
    .await;
    let last_seen = say(&http, &alice, &room, "before bob left").await;
    membership_call(&http, &bob, &room, "leave", json!({})).await;
    set_state(
        &http,
        &alice,
        &room,
        "m.room.name",
        json!({"name": "New name"}),
    )
    .await;
    membership_call(&http, &carol, &room, "join", json!({})).await;
    say(&http, &alice, &room, "after bob left").await;

    let (status, v) = get(&http, &bob, &format!("/rooms/{room}/state/m.room.name")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["name"], "Old name");
    let (status, v) = get(&http, &alice, &format!("/rooms/{room}/state/m.room.name")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["name"], "New name", "a member sees the current state");

    let (status, v) = get(&http, &bob, &format!("/rooms/{room}/state")).await;
    assert_eq!(status, 200, "{v}");
    let state = v.as_array().unwrap();
    let name = state.iter().find(|e| e["type"] == "m.room.name").unwrap();
    assert_eq!(name["content"]["name"], "Old name");
    assert!(
        !state.iter().any(|e| e["state_key"] == "@carol:localhost"),
        "carol joined after bob left: {v}"
    );
    let bob_member = state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == "@bob:localhost")
        .unwrap();
    assert_eq!(bob_member["content"]["membership"], "leave");

    let (status, v) = get(&http, &bob, &format!("/rooms/{room}/members")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        memberships(&v),
        map(&[("@alice:localhost", "join"), ("@bob:localhost", "leave")])
    );
    let r = get(
        &http,
        &bob,
        &format!("/rooms/{room}/state/m.room.member/@carol:localhost"),
    )
    .await;
    assert_eq!(code(&r), (404, Some("M_NOT_FOUND")), "{:?}", r.1);

    // /context's state is the state at its last event, never after the leave.
    let (status, v) = get(
        &http,
        &bob,
        &format!("/rooms/{room}/context/{last_seen}?limit=10"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let state = v["state"].as_array().unwrap();
    let name = state.iter().find(|e| e["type"] == "m.room.name").unwrap();
    assert_eq!(name["content"]["name"], "Old name");
    assert!(!state.iter().any(|e| e["state_key"] == "@carol:localhost"));
    assert_eq!(bodies(&v["events_after"]), Vec::<String>::new(), "{v}");

    assert_eq!(
        readable_bodies(&http, &bob, &room).await,
        ["before bob left"],
        "history stops at the leave"
    );
}

#[tokio::test]
async fn a_filtered_messages_page_is_full_when_enough_events_match() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let room = room_with(&http, &alice, "shared").await;
    for i in 0..24 {
        say(&http, &alice, &room, &format!("m{i}")).await;
        for _ in 0..2 {
            send_event(&http, &alice, &room, "com.example.noise", json!({})).await;
        }
    }
    let filter = urlencode(&json!({"types": ["m.room.message"]}).to_string());
    let mut got = Vec::new();
    let mut from: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/rooms/{room}/messages?dir=b&limit=10&filter={filter}");
        if let Some(f) = &from {
            path.push_str(&format!("&from={f}"));
        }
        let (status, v) = get(&http, &alice, &path).await;
        assert_eq!(status, 200, "{v}");
        let chunk = v["chunk"].as_array().unwrap();
        assert!(chunk.iter().all(|e| e["type"] == "m.room.message"), "{v}");
        pages += 1;
        got.extend(bodies(&v["chunk"]));
        match v["end"].as_str() {
            Some(end) => {
                assert_eq!(chunk.len(), 10, "a page with more to come is full: {v}");
                from = Some(end.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(pages, 3, "24 matches in pages of 10");
    got.reverse();
    let expected: Vec<String> = (0..24).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected);

    // Forward, the same.
    let (status, v) = get(
        &http,
        &alice,
        &format!("/rooms/{room}/messages?dir=f&limit=5&filter={filter}"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(bodies(&v["chunk"]), ["m0", "m1", "m2", "m3", "m4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_messages_page_examines_a_bounded_number_of_rows_and_ends_with_a_token_to_continue() {
    // hotline_service::rooms::MAX_SCAN rows, and some more.
    const NOISE: usize = 5_200;
    let conf = tempfile::tempdir().unwrap();
    let conf_path = conf.path().join("hotline.toml");
    std::fs::write(
        &conf_path,
        "[rate_limits]\nper_user_per_second = 1000000.0\nper_user_burst = 1000000.0\n",
    )
    .unwrap();
    let server = Server::start_with(&[
        "--allow-registration",
        "--config",
        conf_path.to_str().unwrap(),
    ])
    .await;
    let http = Arc::new(Http::new(&server.url));
    let alice = http.register("alice").await;
    let room = room_with(&http, &alice, "shared").await;
    say(&http, &alice, &room, "the needle").await;
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, alice, room, sent) = (http.clone(), alice.clone(), room.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            while sent.fetch_add(1, Ordering::Relaxed) < NOISE {
                send_event(&http, &alice, &room, "com.example.noise", json!({})).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let filter = urlencode(&json!({"types": ["m.room.message"]}).to_string());
    let path = format!("/rooms/{room}/messages?dir=b&limit=10&filter={filter}");
    let (status, v) = get(&http, &alice, &path).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(bodies(&v["chunk"]), Vec::<String>::new(), "{v}");
    let end = v["end"]
        .as_str()
        .expect("a page cut short by the scan bound says where to continue");
    let (status, v) = get(&http, &alice, &format!("{path}&from={end}")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(bodies(&v["chunk"]), ["the needle"], "{v}");
    assert!(v.get("end").is_none(), "nothing is left: {v}");
}

#[tokio::test]
async fn context_honours_its_filter() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = room_with(&http, &alice, "shared").await;
    membership_call(&http, &bob, &room, "join", json!({})).await;
    say(&http, &bob, &room, "bob speaks early").await;
    let noise = || send_event(&http, &alice, &room, "com.example.noise", json!({}));
    say(&http, &alice, &room, "m1").await;
    noise().await;
    say(&http, &alice, &room, "m2").await;
    noise().await;
    let target = say(&http, &alice, &room, "target").await;
    noise().await;
    say(&http, &alice, &room, "m3").await;
    noise().await;
    say(&http, &alice, &room, "m4").await;
    noise().await;

    let filter = urlencode(
        &json!({"not_types": ["com.example.noise"], "lazy_load_members": true}).to_string(),
    );
    let (status, v) = get(
        &http,
        &alice,
        &format!("/rooms/{room}/context/{target}?limit=4&filter={filter}"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["event"]["content"]["body"], "target");
    let types = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(types("events_before"), ["m.room.message"; 2], "{v}");
    assert_eq!(bodies(&v["events_before"]), ["m2", "m1"]);
    assert_eq!(bodies(&v["events_after"]), ["m3", "m4"]);
    // Lazy-loaded: only the member events of the senders shown (alice),
    // not bob's nor the rest of the state.
    let state: Vec<(String, String)> = v["state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["state_key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        state,
        [("m.room.member".to_owned(), "@alice:localhost".to_owned())]
    );

    // A `types` filter restricts the state too.
    let filter = urlencode(&json!({"types": ["com.example.noise"]}).to_string());
    let (status, v) = get(
        &http,
        &alice,
        &format!("/rooms/{room}/context/{target}?limit=2&filter={filter}"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let all_noise = |k: &str| {
        v[k].as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] == "com.example.noise")
    };
    assert_eq!(v["events_before"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["events_after"].as_array().unwrap().len(), 1, "{v}");
    assert!(
        all_noise("events_before") && all_noise("events_after") && all_noise("state"),
        "{v}"
    );

    let r = get(
        &http,
        &alice,
        &format!("/rooms/{room}/context/{target}?filter=not-json"),
    )
    .await;
    assert_eq!(code(&r), (400, Some("M_BAD_JSON")), "{:?}", r.1);
}

#[tokio::test]
async fn members_at_a_token_lists_the_membership_of_then() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let carol = http.register("carol").await;
    let room = room_with(&http, &alice, "shared").await;
    membership_call(&http, &bob, &room, "join", json!({})).await;
    let (status, v) = get(&http, &alice, "/sync?timeout=0").await;
    assert_eq!(status, 200, "{v}");
    let then = v["next_batch"].as_str().unwrap().to_owned();
    membership_call(&http, &carol, &room, "join", json!({})).await;
    membership_call(&http, &bob, &room, "leave", json!({})).await;

    let members = |query: String| {
        let (http, alice, room) = (&http, &alice, &room);
        async move {
            let (status, v) = get(http, alice, &format!("/rooms/{room}/members{query}")).await;
            assert_eq!(status, 200, "{v}");
            memberships(&v)
        }
    };
    assert_eq!(
        members(format!("?at={then}")).await,
        map(&[("@alice:localhost", "join"), ("@bob:localhost", "join")])
    );
    assert_eq!(
        members(String::new()).await,
        map(&[
            ("@alice:localhost", "join"),
            ("@bob:localhost", "leave"),
            ("@carol:localhost", "join")
        ])
    );
    assert_eq!(
        members("?membership=join".into()).await,
        map(&[("@alice:localhost", "join"), ("@carol:localhost", "join")])
    );
    assert_eq!(
        members("?not_membership=join".into()).await,
        map(&[("@bob:localhost", "leave")])
    );
    assert_eq!(
        members(format!("?at={then}&not_membership=join")).await,
        map(&[])
    );

    // A point before one joined a `joined`-visibility room is not shown.
    let secret = room_with(&http, &alice, "joined").await;
    say(&http, &alice, &secret, "before carol").await;
    let (_, v) = get(&http, &alice, "/sync?timeout=0").await;
    let before_carol = v["next_batch"].as_str().unwrap().to_owned();
    membership_call(&http, &carol, &secret, "join", json!({})).await;
    let r = get(
        &http,
        &carol,
        &format!("/rooms/{secret}/members?at={before_carol}"),
    )
    .await;
    assert_eq!(code(&r), (403, Some("M_FORBIDDEN")), "{:?}", r.1);
    let r = get(&http, &carol, &format!("/rooms/{room}/members?at=nonsense")).await;
    assert_eq!(code(&r), (400, Some("M_INVALID_PARAM")), "{:?}", r.1);
}

/// Percent-encodes a query value.
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

#[tokio::test]
async fn sync_shows_a_new_member_of_a_joined_visibility_room_no_earlier_messages() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = room_with(&http, &alice, "joined").await;
    say(&http, &alice, &room, "before bob").await;
    membership_call(&http, &bob, &room, "join", json!({})).await;
    say(&http, &alice, &room, "after bob joined").await;

    let (status, v) = get(&http, &bob, "/sync").await;
    assert_eq!(status, 200, "{v}");
    let timeline = &v["rooms"]["join"][room.as_str()]["timeline"]["events"];
    assert_eq!(bodies(timeline), ["after bob joined"], "{v}");
    // Alice, joined throughout, gets both.
    let (status, v) = get(&http, &alice, "/sync").await;
    assert_eq!(status, 200, "{v}");
    let timeline = &v["rooms"]["join"][room.as_str()]["timeline"]["events"];
    assert_eq!(bodies(timeline), ["before bob", "after bob joined"], "{v}");

    // In a shared room, the same join shows the earlier message.
    let shared = room_with(&http, &alice, "shared").await;
    say(&http, &alice, &shared, "before bob").await;
    membership_call(&http, &bob, &shared, "join", json!({})).await;
    let (status, v) = get(&http, &bob, "/sync").await;
    assert_eq!(status, 200, "{v}");
    let timeline = &v["rooms"]["join"][shared.as_str()]["timeline"]["events"];
    assert_eq!(bodies(timeline), ["before bob"], "{v}");
}
