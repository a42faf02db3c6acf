//! `/sync` filters over HTTP against the real binary: lazy-loaded members,
//! timeline filters applied before the limit, the `state`, `ephemeral` and
//! `room.account_data` filters, `contains_url`, left rooms, and unread
//! counts (highlights, private read receipts, push rules).

use crate::common;

use std::sync::atomic::{AtomicU64, Ordering};

use common::{Http, Server};
use serde_json::{json, Value};

const V3: &str = "/_matrix/client/v3";

static TXN: AtomicU64 = AtomicU64::new(0);

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

async fn call(http: &Http, method: &str, token: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string());
    let (status, v) = http
        .call(method, &format!("{V3}{path}"), Some(token), body.as_deref())
        .await;
    assert_eq!(status, 200, "{method} {path}: {v}");
    v
}

/// Sends a message event; returns its id.
async fn send(http: &Http, token: &str, room: &str, content: Value) -> String {
    send_kind(http, token, room, "m.room.message", content).await
}

async fn send_kind(http: &Http, token: &str, room: &str, kind: &str, content: Value) -> String {
    let txn = TXN.fetch_add(1, Ordering::Relaxed);
    let v = call(
        http,
        "PUT",
        token,
        &format!("/rooms/{room}/send/{kind}/t{txn}"),
        Some(content),
    )
    .await;
    v["event_id"].as_str().unwrap().to_owned()
}

async fn text(http: &Http, token: &str, room: &str, body: &str) -> String {
    send(
        http,
        token,
        room,
        json!({"msgtype": "m.text", "body": body}),
    )
    .await
}

async fn put_state(http: &Http, token: &str, room: &str, kind: &str, key: &str, content: Value) {
    call(
        http,
        "PUT",
        token,
        &format!("/rooms/{room}/state/{kind}/{key}"),
        Some(content),
    )
    .await;
}

async fn join(http: &Http, token: &str, room: &str) {
    call(
        http,
        "POST",
        token,
        &format!("/rooms/{room}/join"),
        Some(json!({})),
    )
    .await;
}

async fn public_room(http: &Http, token: &str) -> String {
    let v = call(
        http,
        "POST",
        token,
        "/createRoom",
        Some(json!({"preset": "public_chat", "name": "The room"})),
    )
    .await;
    v["room_id"].as_str().unwrap().to_owned()
}

/// `/sync` with an inline filter (`None`: no filter), from `since`.
async fn sync(http: &Http, token: &str, since: Option<&str>, filter: Option<&Value>) -> Value {
    let mut path = "/sync?timeout=0".to_owned();
    if let Some(s) = since {
        path.push_str(&format!("&since={s}"));
    }
    if let Some(f) = filter {
        path.push_str(&format!("&filter={}", urlencode(&f.to_string())));
    }
    call(http, "GET", token, &path, None).await
}

fn next_batch(v: &Value) -> String {
    v["next_batch"].as_str().unwrap().to_owned()
}

fn joined<'a>(v: &'a Value, room: &str) -> &'a Value {
    &v["rooms"]["join"][room]
}

fn events(section: &Value) -> Vec<Value> {
    section["events"].as_array().cloned().unwrap_or_default()
}

/// The state keys of the `m.room.member` events in a room entry's `state`.
fn state_members(entry: &Value) -> Vec<String> {
    let mut m: Vec<String> = events(&entry["state"])
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap().to_owned())
        .collect();
    m.sort();
    m
}

fn types(section: &Value) -> Vec<String> {
    events(section)
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

fn bodies(entry: &Value) -> Vec<String> {
    events(&entry["timeline"])
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn lazy_filter() -> Value {
    json!({"room": {
        "timeline": {"types": ["m.room.message"]},
        "state": {"lazy_load_members": true},
    }})
}

/// A room of alice's that bob, carol and dave joined before alice's client
/// started syncing (with `filter`). Returns (server, http, tokens, room,
/// alice's first sync).
async fn four_in_a_room(filter: &Value) -> (Server, Http, [String; 4], String, Value) {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let carol = http.register("carol").await;
    let dave = http.register("dave").await;
    let room = public_room(&http, &alice).await;
    for t in [&bob, &carol, &dave] {
        join(&http, t, &room).await;
    }
    let first = sync(&http, &alice, None, Some(filter)).await;
    (server, http, [alice, bob, carol, dave], room, first)
}

// ----- lazy-loaded members -----

#[tokio::test]
async fn a_lazy_loaded_timeline_brings_the_member_event_of_each_new_sender() {
    let f = lazy_filter();
    let (_server, http, [alice, bob, carol, _], room, first) = four_in_a_room(&f).await;
    // A fresh sync with no messages: only alice's own member event.
    assert_eq!(
        state_members(joined(&first, &room)),
        ["@alice:localhost"],
        "{first}"
    );
    assert!(
        types(&joined(&first, &room)["state"]).contains(&"m.room.name".to_owned()),
        "other state is all there: {first}"
    );

    // Bob joined long ago and speaks now: his member event comes with it.
    text(&http, &bob, &room, "hello from bob").await;
    let s1 = sync(&http, &alice, Some(&next_batch(&first)), Some(&f)).await;
    let entry = joined(&s1, &room);
    assert_eq!(bodies(entry), ["hello from bob"], "{s1}");
    assert_eq!(state_members(entry), ["@bob:localhost"], "{s1}");
    let bob_member = events(&entry["state"])[0].clone();
    assert_eq!(bob_member["content"]["membership"], "join");
    assert_eq!(bob_member["sender"], "@bob:localhost");

    // Bob and carol: only carol is new.
    text(&http, &bob, &room, "bob again").await;
    text(&http, &carol, &room, "carol here").await;
    let s2 = sync(&http, &alice, Some(&next_batch(&s1)), Some(&f)).await;
    assert_eq!(bodies(joined(&s2, &room)), ["bob again", "carol here"]);
    assert_eq!(
        state_members(joined(&s2, &room)),
        ["@carol:localhost"],
        "{s2}"
    );
}

#[tokio::test]
async fn a_member_already_sent_is_not_sent_again_unless_redundant_members_are_asked() {
    let f = lazy_filter();
    let (_server, http, [alice, bob, _, _], room, first) = four_in_a_room(&f).await;
    text(&http, &bob, &room, "one").await;
    let s1 = sync(&http, &alice, Some(&next_batch(&first)), Some(&f)).await;
    assert_eq!(
        state_members(joined(&s1, &room)),
        ["@bob:localhost"],
        "{s1}"
    );

    text(&http, &bob, &room, "two").await;
    let s2 = sync(&http, &alice, Some(&next_batch(&s1)), Some(&f)).await;
    assert_eq!(bodies(joined(&s2, &room)), ["two"]);
    assert!(state_members(joined(&s2, &room)).is_empty(), "{s2}");

    // A response the client never used proves nothing: syncing again from
    // the older token brings bob's member event again.
    let again = sync(&http, &alice, Some(&next_batch(&first)), Some(&f)).await;
    assert_eq!(state_members(joined(&again, &room)), ["@bob:localhost"]);

    // Asked for, redundant members come every time.
    let redundant = json!({"room": {
        "timeline": {"types": ["m.room.message"]},
        "state": {"lazy_load_members": true, "include_redundant_members": true},
    }});
    text(&http, &bob, &room, "three").await;
    let s3 = sync(&http, &alice, Some(&next_batch(&s2)), Some(&redundant)).await;
    assert_eq!(bodies(joined(&s3, &room)), ["three"]);
    assert_eq!(
        state_members(joined(&s3, &room)),
        ["@bob:localhost"],
        "{s3}"
    );

    // A changed member event is new again: bob renames himself.
    put_state(
        &http,
        &bob,
        &room,
        "m.room.member",
        "@bob:localhost",
        json!({"membership": "join", "displayname": "Bobby"}),
    )
    .await;
    text(&http, &bob, &room, "four").await;
    let s4 = sync(&http, &alice, Some(&next_batch(&s3)), Some(&f)).await;
    let members: Vec<Value> = events(&joined(&s4, &room)["state"]);
    assert_eq!(members.len(), 1, "{s4}");
    assert_eq!(members[0]["content"]["displayname"], "Bobby");
}

#[tokio::test]
async fn a_gap_brings_the_members_of_its_senders_and_its_membership_changes() {
    let f = json!({"room": {
        "timeline": {"limit": 2, "types": ["m.room.message"]},
        "state": {"lazy_load_members": true},
    }});
    let (_server, http, [alice, bob, carol, dave], room, first) = four_in_a_room(&f).await;
    // In the gap: dave leaves; then carol and bob speak.
    call(
        &http,
        "POST",
        &dave,
        &format!("/rooms/{room}/leave"),
        Some(json!({})),
    )
    .await;
    for i in 0..3 {
        text(&http, &carol, &room, &format!("carol {i}")).await;
    }
    text(&http, &bob, &room, "bob last").await;
    let s = sync(&http, &alice, Some(&next_batch(&first)), Some(&f)).await;
    let entry = joined(&s, &room);
    assert_eq!(entry["timeline"]["limited"], true, "{s}");
    assert_eq!(bodies(entry), ["carol 2", "bob last"]);
    assert_eq!(
        state_members(entry),
        ["@bob:localhost", "@carol:localhost", "@dave:localhost"],
        "the timeline's senders and the gap's membership change: {s}"
    );
}

// ----- the timeline filter runs before the limit -----

#[tokio::test]
async fn a_filtered_timeline_is_limited_only_when_matching_events_were_cut() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let room = public_room(&http, &alice).await;
    let f = json!({"room": {"timeline": {"limit": 3, "types": ["m.room.message"]}}});
    let first = sync(&http, &alice, None, Some(&f)).await;

    // Two messages, then more non-matching events than the limit.
    text(&http, &alice, &room, "m1").await;
    text(&http, &alice, &room, "m2").await;
    for i in 0..5 {
        put_state(
            &http,
            &alice,
            &room,
            "m.room.topic",
            "",
            json!({"topic": format!("t{i}")}),
        )
        .await;
    }
    let s1 = sync(&http, &alice, Some(&next_batch(&first)), Some(&f)).await;
    let entry = joined(&s1, &room);
    assert_eq!(bodies(entry), ["m1", "m2"], "{s1}");
    assert_eq!(entry["timeline"]["limited"], false, "{s1}");

    // Five messages among other events: the newest three, limited, and
    // prev_batch leads to the two before them.
    for i in 0..5 {
        text(&http, &alice, &room, &format!("n{i}")).await;
        put_state(
            &http,
            &alice,
            &room,
            "m.room.topic",
            "",
            json!({"topic": format!("u{i}")}),
        )
        .await;
    }
    let s2 = sync(&http, &alice, Some(&next_batch(&s1)), Some(&f)).await;
    let entry = joined(&s2, &room);
    assert_eq!(bodies(entry), ["n2", "n3", "n4"], "{s2}");
    assert_eq!(entry["timeline"]["limited"], true);
    let prev = entry["timeline"]["prev_batch"].as_str().unwrap();
    let page = call(
        &http,
        "GET",
        &alice,
        &format!(
            "/rooms/{room}/messages?dir=b&limit=2&from={prev}&filter={}",
            urlencode(r#"{"types":["m.room.message"]}"#)
        ),
        None,
    )
    .await;
    let older: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(older, ["n1", "n0"], "{page}");
}

#[tokio::test]
async fn a_filtered_timeline_reaches_below_the_in_memory_window() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let room = public_room(&http, &alice).await;
    text(&http, &alice, &room, "old message").await;
    // More than the 64 events a room keeps in memory, none a message.
    for i in 0..70 {
        put_state(
            &http,
            &alice,
            &room,
            "org.example.tick",
            &format!("k{i}"),
            json!({"i": i}),
        )
        .await;
    }
    let f = json!({"room": {"timeline": {"limit": 5, "types": ["m.room.message"]}}});
    let s = sync(&http, &alice, None, Some(&f)).await;
    let entry = joined(&s, &room);
    assert_eq!(bodies(entry), ["old message"], "{s}");
    assert_eq!(entry["timeline"]["limited"], false, "nothing older matches");
}

// ----- state, ephemeral, account data, contains_url, rooms -----

#[tokio::test]
async fn the_state_filter_keeps_only_its_types() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let room = public_room(&http, &alice).await;
    put_state(
        &http,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "t"}),
    )
    .await;

    let f = json!({"room": {"state": {"types": ["m.room.name", "m.room.topic"]},
                            "timeline": {"types": ["m.room.message"]}}});
    let s = sync(&http, &alice, None, Some(&f)).await;
    let mut got = types(&joined(&s, &room)["state"]);
    got.sort();
    assert_eq!(got, ["m.room.name", "m.room.topic"], "{s}");

    let f = json!({"room": {"state": {"not_types": ["m.room.member", "m.room.power_levels"]},
                            "timeline": {"limit": 1}}});
    let s = sync(&http, &alice, None, Some(&f)).await;
    let got = types(&joined(&s, &room)["state"]);
    assert!(got.contains(&"m.room.create".to_owned()), "{s}");
    assert!(
        !got.iter()
            .any(|t| t == "m.room.member" || t == "m.room.power_levels"),
        "{got:?}"
    );

    let f = json!({"room": {"state": {"senders": ["@nobody:localhost"]}}});
    let s = sync(&http, &alice, None, Some(&f)).await;
    assert_eq!(types(&joined(&s, &room)["state"]), Vec::<String>::new());
}

#[tokio::test]
async fn room_account_data_follows_the_room_account_data_filter() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let room = public_room(&http, &alice).await;
    for kind in ["org.example.a", "org.example.b"] {
        call(
            &http,
            "PUT",
            &alice,
            &format!("/user/@alice:localhost/rooms/{room}/account_data/{kind}"),
            Some(json!({"k": kind})),
        )
        .await;
    }
    call(
        &http,
        "PUT",
        &alice,
        "/user/@alice:localhost/account_data/org.example.global",
        Some(json!({})),
    )
    .await;
    // The global filter excludes everything; the room one keeps `a`.
    let f = json!({"account_data": {"types": []},
                   "room": {"account_data": {"types": ["org.example.a"]}}});
    let s = sync(&http, &alice, None, Some(&f)).await;
    assert_eq!(
        types(&joined(&s, &room)["account_data"]),
        ["org.example.a"],
        "{s}"
    );
    assert_eq!(types(&s["account_data"]), Vec::<String>::new());

    let f = json!({"room": {"account_data": {"not_types": ["org.example.a"]}}});
    let s = sync(&http, &alice, None, Some(&f)).await;
    assert_eq!(
        types(&joined(&s, &room)["account_data"]),
        ["org.example.b"],
        "{s}"
    );
    assert!(types(&s["account_data"]).contains(&"org.example.global".to_owned()));
}

#[tokio::test]
async fn the_ephemeral_filter_keeps_only_its_types() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = public_room(&http, &alice).await;
    join(&http, &bob, &room).await;
    let ev = text(&http, &bob, &room, "hi").await;
    call(
        &http,
        "POST",
        &bob,
        &format!("/rooms/{room}/receipt/m.read/{ev}"),
        Some(json!({})),
    )
    .await;
    call(
        &http,
        "PUT",
        &bob,
        &format!("/rooms/{room}/typing/@bob:localhost"),
        Some(json!({"typing": true, "timeout": 30000})),
    )
    .await;
    let all = sync(&http, &alice, None, None).await;
    let mut got = types(&joined(&all, &room)["ephemeral"]);
    got.sort();
    assert_eq!(got, ["m.receipt", "m.typing"], "{all}");

    let f = json!({"room": {"ephemeral": {"types": ["m.receipt"]}}});
    let s = sync(&http, &alice, None, Some(&f)).await;
    assert_eq!(types(&joined(&s, &room)["ephemeral"]), ["m.receipt"], "{s}");
    let f = json!({"room": {"ephemeral": {"not_types": ["m.receipt"]}}});
    let s = sync(&http, &alice, None, Some(&f)).await;
    assert_eq!(types(&joined(&s, &room)["ephemeral"]), ["m.typing"], "{s}");
}

#[tokio::test]
async fn contains_url_keeps_only_events_with_a_url() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let room = public_room(&http, &alice).await;
    text(&http, &alice, &room, "plain").await;
    send(
        &http,
        &alice,
        &room,
        json!({"msgtype": "m.image", "body": "pic", "url": "mxc://localhost/abc"}),
    )
    .await;
    let with = json!({"room": {"timeline": {"types": ["m.room.message"], "contains_url": true}}});
    let s = sync(&http, &alice, None, Some(&with)).await;
    assert_eq!(bodies(joined(&s, &room)), ["pic"], "{s}");
    let without =
        json!({"room": {"timeline": {"types": ["m.room.message"], "contains_url": false}}});
    let s = sync(&http, &alice, None, Some(&without)).await;
    assert_eq!(bodies(joined(&s, &room)), ["plain"], "{s}");
}

#[tokio::test]
async fn room_lists_choose_the_rooms_and_the_parts_of_rooms() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let a = public_room(&http, &alice).await;
    let b = public_room(&http, &alice).await;
    text(&http, &alice, &a, "in a").await;
    text(&http, &alice, &b, "in b").await;
    let rooms = |v: &Value| -> Vec<String> {
        let mut r: Vec<String> = v["rooms"]["join"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        r.sort();
        r
    };
    let s = sync(&http, &alice, None, Some(&json!({"room": {"rooms": [a]}}))).await;
    assert_eq!(rooms(&s), [a.clone()]);
    let s = sync(
        &http,
        &alice,
        None,
        Some(&json!({"room": {"not_rooms": [a]}})),
    )
    .await;
    assert_eq!(rooms(&s), [b.clone()]);
    // `not_rooms` wins over `rooms`.
    let s = sync(
        &http,
        &alice,
        None,
        Some(&json!({"room": {"rooms": [a, b], "not_rooms": [b]}})),
    )
    .await;
    assert_eq!(rooms(&s), [a.clone()]);
    // The timeline's own room list: room b's timeline is left out, its
    // state is not.
    let f = json!({"room": {"timeline": {"not_rooms": [b]}}});
    let s = sync(&http, &alice, None, Some(&f)).await;
    assert!(bodies(joined(&s, &a)).contains(&"in a".to_owned()), "{s}");
    assert_eq!(
        events(&joined(&s, &b)["timeline"]),
        Vec::<Value>::new(),
        "{s}"
    );
    assert!(!events(&joined(&s, &b)["state"]).is_empty());
}

// ----- left rooms -----

#[tokio::test]
async fn a_left_room_carries_its_timeline_up_to_the_leave() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = public_room(&http, &alice).await;
    join(&http, &bob, &room).await;
    let f = lazy_filter();
    let first = sync(&http, &bob, None, Some(&f)).await;

    text(&http, &alice, &room, "before").await;
    call(
        &http,
        "PUT",
        &bob,
        &format!("/user/@bob:localhost/rooms/{room}/account_data/org.example.note"),
        Some(json!({"n": 1})),
    )
    .await;
    call(
        &http,
        "POST",
        &bob,
        &format!("/rooms/{room}/leave"),
        Some(json!({})),
    )
    .await;
    text(&http, &alice, &room, "after").await;

    let s = sync(&http, &bob, Some(&next_batch(&first)), Some(&f)).await;
    let left = &s["rooms"]["leave"][&room];
    assert_eq!(bodies(left), ["before"], "filtered, up to the leave: {s}");
    assert_eq!(left["timeline"]["limited"], false);
    assert_eq!(state_members(left), ["@alice:localhost"], "{s}");
    assert_eq!(types(&left["account_data"]), ["org.example.note"], "{s}");
}

#[tokio::test]
async fn include_leave_shows_left_rooms_on_a_fresh_sync_with_their_state() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = public_room(&http, &alice).await;
    join(&http, &bob, &room).await;
    text(&http, &alice, &room, "hello").await;
    put_state(
        &http,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "earlier"}),
    )
    .await;
    text(&http, &alice, &room, "more").await;
    call(
        &http,
        "POST",
        &bob,
        &format!("/rooms/{room}/leave"),
        Some(json!({})),
    )
    .await;
    put_state(
        &http,
        &alice,
        &room,
        "m.room.topic",
        "",
        json!({"topic": "later"}),
    )
    .await;

    let none = sync(&http, &bob, None, None).await;
    assert!(none["rooms"]["leave"].get(&room).is_none(), "{none}");

    let f = json!({"room": {"include_leave": true,
                            "timeline": {"limit": 2},
                            "state": {"types": ["m.room.name", "m.room.topic"]}}});
    let s = sync(&http, &bob, None, Some(&f)).await;
    let left = &s["rooms"]["leave"][&room];
    let timeline = events(&left["timeline"]);
    let last = timeline.last().expect("a timeline");
    assert_eq!(
        (
            &last["type"],
            &last["state_key"],
            &last["content"]["membership"]
        ),
        (
            &json!("m.room.member"),
            &json!("@bob:localhost"),
            &json!("leave")
        ),
        "the timeline ends at the leave: {s}"
    );
    let mut kinds = types(&left["state"]);
    kinds.sort();
    assert_eq!(kinds, ["m.room.name", "m.room.topic"], "{s}");
    let topic = events(&left["state"])
        .into_iter()
        .find(|e| e["type"] == "m.room.topic")
        .unwrap();
    assert_eq!(
        topic["content"]["topic"], "earlier",
        "the topic as it was at the leave, not the later one: {s}"
    );
}

// ----- unread counts -----

fn counts(v: &Value, room: &str) -> (u64, u64) {
    let u = &joined(v, room)["unread_notifications"];
    (
        u["notification_count"].as_u64().unwrap(),
        u["highlight_count"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn a_mention_counts_as_a_highlight() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = public_room(&http, &alice).await;
    join(&http, &bob, &room).await;
    put_state(
        &http,
        &bob,
        &room,
        "m.room.member",
        "@bob:localhost",
        json!({"membership": "join", "displayname": "Robert Tables"}),
    )
    .await;
    let first = sync(&http, &bob, None, None).await;
    assert_eq!(counts(&first, &room), (0, 0));

    text(&http, &alice, &room, "nothing to see").await;
    text(&http, &alice, &room, "Hey BOB, look").await; // localpart, any case
    text(&http, &alice, &room, "robert tables: look").await; // display name
    text(&http, &alice, &room, "bobcat").await; // not a whole word
    send(
        &http,
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "ping", "m.mentions": {"user_ids": ["@bob:localhost"]}}),
    )
    .await;
    // With m.mentions, the body is not searched.
    send(
        &http,
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "bob", "m.mentions": {}}),
    )
    .await;
    let s = sync(&http, &bob, Some(&next_batch(&first)), None).await;
    assert_eq!(counts(&s, &room), (6, 3), "{s}");
    // Counted on: the next sync adds to it.
    text(&http, &alice, &room, "bob?").await;
    let s2 = sync(&http, &bob, Some(&next_batch(&s)), None).await;
    assert_eq!(counts(&s2, &room), (7, 4), "{s2}");
}

#[tokio::test]
async fn a_private_read_receipt_resets_the_unread_count() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = public_room(&http, &alice).await;
    join(&http, &bob, &room).await;
    let first = sync(&http, &bob, None, None).await;
    text(&http, &alice, &room, "one").await;
    let two = text(&http, &alice, &room, "two bob").await;
    let s = sync(&http, &bob, Some(&next_batch(&first)), None).await;
    assert_eq!(counts(&s, &room), (2, 1), "{s}");

    call(
        &http,
        "POST",
        &bob,
        &format!("/rooms/{room}/receipt/m.read.private/{two}"),
        Some(json!({})),
    )
    .await;
    text(&http, &alice, &room, "three").await;
    let s2 = sync(&http, &bob, Some(&next_batch(&s)), None).await;
    assert_eq!(counts(&s2, &room), (1, 0), "{s2}");
    // Alice does not see bob's private receipt.
    let a = sync(&http, &alice, None, None).await;
    assert!(!joined(&a, &room)["ephemeral"]
        .to_string()
        .contains("m.read.private"));
}

// ----- unread counts follow the user's push rules -----

/// Alice's public room with bob joined, and bob's first sync.
async fn bob_reads_alices_room() -> (Server, Http, String, String, String, Value) {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = public_room(&http, &alice).await;
    join(&http, &bob, &room).await;
    let first = sync(&http, &bob, None, None).await;
    assert_eq!(counts(&first, &room), (0, 0));
    (server, http, alice, bob, room, first)
}

async fn put_rule(http: &Http, token: &str, kind: &str, rule_id: &str, body: Value) {
    call(
        http,
        "PUT",
        token,
        &format!("/pushrules/global/{kind}/{}", urlencode(rule_id)),
        Some(body),
    )
    .await;
}

#[tokio::test]
async fn notices_reactions_and_edits_do_not_notify_by_the_default_rules() {
    let (_server, http, alice, bob, room, first) = bob_reads_alices_room().await;
    let original = text(&http, &alice, &room, "a message").await;
    send(
        &http,
        &alice,
        &room,
        json!({"msgtype": "m.notice", "body": "a bot's notice"}),
    )
    .await;
    send_kind(
        &http,
        &alice,
        &room,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": original, "key": "👍"}}),
    )
    .await;
    send(
        &http,
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "* an edit",
               "m.new_content": {"msgtype": "m.text", "body": "an edit"},
               "m.relates_to": {"rel_type": "m.replace", "event_id": original}}),
    )
    .await;
    send_kind(
        &http,
        &alice,
        &room,
        "m.room.encrypted",
        json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "sender_key": "k",
               "device_id": "D", "session_id": "s"}),
    )
    .await;
    let s = sync(&http, &bob, Some(&next_batch(&first)), None).await;
    assert_eq!(
        counts(&s, &room),
        (2, 0),
        "the message and the encrypted event notify; the notice, reaction and edit do not: {s}"
    );
}

#[tokio::test]
async fn a_muted_room_counts_no_notifications_and_unmuting_counts_again() {
    let (_server, http, alice, bob, room, first) = bob_reads_alices_room().await;
    text(&http, &alice, &room, "before the mute").await;
    let s = sync(&http, &bob, Some(&next_batch(&first)), None).await;
    assert_eq!(counts(&s, &room), (1, 0), "{s}");

    // What Element's "Mute" writes: an override rule for the room with no
    // actions.
    put_rule(
        &http,
        &bob,
        "override",
        &room,
        json!({"actions": [], "conditions": [
            {"kind": "event_match", "key": "room_id", "pattern": room}
        ]}),
    )
    .await;
    text(&http, &alice, &room, "bob, while muted").await;
    let s2 = sync(&http, &bob, Some(&next_batch(&s)), None).await;
    assert_eq!(counts(&s2, &room), (0, 0), "{s2}");

    call(
        &http,
        "DELETE",
        &bob,
        &format!("/pushrules/global/override/{}", urlencode(&room)),
        None,
    )
    .await;
    text(&http, &alice, &room, "after").await;
    let s3 = sync(&http, &bob, Some(&next_batch(&s2)), None).await;
    assert_eq!(
        counts(&s3, &room),
        (3, 1),
        "unmuted, every unread message counts again: {s3}"
    );
}

#[tokio::test]
async fn a_keyword_rule_highlights_and_a_disabled_default_rule_stops_counting() {
    let (_server, http, alice, bob, room, first) = bob_reads_alices_room().await;
    put_rule(
        &http,
        &bob,
        "content",
        "budget",
        json!({"pattern": "budget", "actions": ["notify", {"set_tweak": "highlight"}]}),
    )
    .await;
    text(&http, &alice, &room, "the Budget is ready").await;
    text(&http, &alice, &room, "lunch?").await;
    let s = sync(&http, &bob, Some(&next_batch(&first)), None).await;
    assert_eq!(counts(&s, &room), (2, 1), "the keyword highlights: {s}");

    // In a room of two, `.m.rule.room_one_to_one` comes first.
    for rule in [".m.rule.room_one_to_one", ".m.rule.message"] {
        call(
            &http,
            "PUT",
            &bob,
            &format!("/pushrules/global/underride/{rule}/enabled"),
            Some(json!({"enabled": false})),
        )
        .await;
    }
    text(&http, &alice, &room, "tea?").await;
    let s2 = sync(&http, &bob, Some(&next_batch(&s)), None).await;
    assert_eq!(
        counts(&s2, &room),
        (1, 1),
        "without the message rules only the keyword message notifies: {s2}"
    );
}

// ----- the room summary -----

fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn the_summary_names_the_heroes_and_counts_and_comes_again_when_members_change() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    http.register("carol").await;
    http.register("dave").await;
    let v = call(
        &http,
        "POST",
        &alice,
        "/createRoom",
        Some(json!({"preset": "private_chat", "invite": ["@bob:localhost", "@carol:localhost"]})),
    )
    .await;
    let room = v["room_id"].as_str().unwrap().to_owned();
    join(&http, &bob, &room).await;
    text(&http, &bob, &room, "hello").await;

    // A lazy-loading client with a one-event timeline: carol sent nothing,
    // yet as a hero her member event comes with the state.
    let filter = json!({"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": true}}});
    let first = sync(&http, &alice, None, Some(&filter)).await;
    let entry = joined(&first, &room);
    let summary = &entry["summary"];
    assert_eq!(
        sorted(&summary["m.heroes"]),
        ["@bob:localhost", "@carol:localhost"],
        "the other members, never the user: {summary}"
    );
    assert_eq!(summary["m.joined_member_count"], 2, "{summary}");
    assert_eq!(summary["m.invited_member_count"], 1, "{summary}");
    assert_eq!(
        state_members(entry),
        ["@alice:localhost", "@bob:localhost", "@carol:localhost"],
        "{entry}"
    );

    text(&http, &bob, &room, "no member changes").await;
    let s = sync(&http, &alice, Some(&next_batch(&first)), Some(&filter)).await;
    let summary = &joined(&s, &room)["summary"];
    assert!(
        summary.get("m.heroes").is_none() && summary.get("m.joined_member_count").is_none(),
        "unchanged, the summary is left out: {s}"
    );

    call(
        &http,
        "POST",
        &alice,
        &format!("/rooms/{room}/invite"),
        Some(json!({"user_id": "@dave:localhost"})),
    )
    .await;
    let s2 = sync(&http, &alice, Some(&next_batch(&s)), Some(&filter)).await;
    let summary = &joined(&s2, &room)["summary"];
    assert_eq!(
        sorted(&summary["m.heroes"]),
        ["@bob:localhost", "@carol:localhost", "@dave:localhost"],
        "{s2}"
    );
    assert_eq!(summary["m.invited_member_count"], 2, "{summary}");

    // Named, the room needs no heroes, and the client is told.
    put_state(
        &http,
        &alice,
        &room,
        "m.room.name",
        "",
        json!({"name": "Summit"}),
    )
    .await;
    let s3 = sync(&http, &alice, Some(&next_batch(&s2)), Some(&filter)).await;
    let summary = &joined(&s3, &room)["summary"];
    assert_eq!(summary["m.heroes"], json!([]), "{s3}");
    assert_eq!(summary["m.joined_member_count"], 2, "{summary}");
}
