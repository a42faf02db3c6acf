//! Reads by those who are no longer (or never were) members, over HTTP on
//! the real server: a user banned before ever joining and a user who left
//! and forgot the room read nothing of it, on every read endpoint, as
//! Synapse does; one who left without forgetting reads up to their leave;
//! in a world-readable room they read what anyone may.

use crate::common;

use common::{Http, Server};
use serde_json::{json, Value};

const C: &str = "/_matrix/client/v3";

async fn post(http: &Http, token: &str, path: &str, body: Value) -> (u16, Value) {
    http.call(
        "POST",
        &format!("{C}{path}"),
        Some(token),
        Some(&body.to_string()),
    )
    .await
}

async fn ok_post(http: &Http, token: &str, path: &str, body: Value) -> Value {
    let (s, v) = post(http, token, path, body).await;
    assert_eq!(s, 200, "POST {path}: {v}");
    v
}

async fn send(http: &Http, token: &str, room: &str, body: &str) -> String {
    let txn = format!("t{}", rand_suffix());
    let (s, v) = http
        .call(
            "PUT",
            &format!("{C}/rooms/{room}/send/m.room.message/{txn}"),
            Some(token),
            Some(&json!({"msgtype": "m.text", "body": body}).to_string()),
        )
        .await;
    assert_eq!(s, 200, "send: {v}");
    v["event_id"].as_str().unwrap().to_owned()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Every read endpoint of a room, with `event` for those that name one.
fn read_paths(room: &str, event: &str) -> Vec<String> {
    vec![
        format!("/rooms/{room}/state"),
        format!("/rooms/{room}/state/m.room.create/"),
        format!("/rooms/{room}/state/m.room.member/@alice:localhost"),
        format!("/rooms/{room}/members"),
        format!("/rooms/{room}/joined_members"),
        format!("/rooms/{room}/messages?dir=b&limit=10"),
        format!("/rooms/{room}/messages?dir=f&limit=10"),
        format!("/rooms/{room}/context/{event}?limit=4"),
        format!("/rooms/{room}/event/{event}"),
    ]
}

/// Asserts `403 M_FORBIDDEN` on every read endpoint, and that no answer
/// carries the room's secret message.
async fn reads_nothing(http: &Http, token: &str, room: &str, event: &str, who: &str) {
    for path in read_paths(room, event) {
        let (s, v) = http
            .call("GET", &format!("{C}{path}"), Some(token), None)
            .await;
        assert_eq!(
            (s, v["errcode"].as_str()),
            (403, Some("M_FORBIDDEN")),
            "{who}: GET {path}: {v}"
        );
        assert!(!v.to_string().contains("secret"), "{who}: {path}: {v}");
    }
}

async fn get(http: &Http, token: &str, path: &str) -> (u16, Value) {
    http.call("GET", &format!("{C}{path}"), Some(token), None)
        .await
}

fn bodies(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_user_who_never_joined_reads_nothing_of_the_room() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let carol = http.register("carol").await;
    // History `shared` (the default), so a joiner would read it all.
    let room = http.create_room(&alice).await;
    let secret = send(&http, &alice, &room, "the secret plan").await;

    // Banned out of the blue, never in the room.
    ok_post(
        &http,
        &alice,
        &format!("/rooms/{room}/ban"),
        json!({"user_id": "@bob:localhost"}),
    )
    .await;
    reads_nothing(&http, &bob, &room, &secret, "bob, banned").await;

    // Invited, then banned before joining: the invite gave them no standing.
    ok_post(
        &http,
        &alice,
        &format!("/rooms/{room}/invite"),
        json!({"user_id": "@carol:localhost"}),
    )
    .await;
    ok_post(
        &http,
        &alice,
        &format!("/rooms/{room}/ban"),
        json!({"user_id": "@carol:localhost"}),
    )
    .await;
    reads_nothing(&http, &carol, &room, &secret, "carol, invited then banned").await;

    // The members still read it all.
    for path in read_paths(&room, &secret) {
        let (s, v) = get(&http, &alice, &path).await;
        assert_eq!(s, 200, "alice: {path}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_banned_after_joining_still_reads_up_to_the_ban() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = http.create_room(&alice).await;
    ok_post(
        &http,
        &alice,
        &format!("/rooms/{room}/invite"),
        json!({"user_id": "@bob:localhost"}),
    )
    .await;
    ok_post(&http, &bob, &format!("/rooms/{room}/join"), json!({})).await;
    let seen = send(&http, &alice, &room, "seen by bob").await;
    ok_post(
        &http,
        &alice,
        &format!("/rooms/{room}/ban"),
        json!({"user_id": "@bob:localhost"}),
    )
    .await;
    send(&http, &alice, &room, "after the ban").await;
    let (s, v) = get(
        &http,
        &bob,
        &format!("/rooms/{room}/messages?dir=b&limit=50"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let b = bodies(&v, "chunk");
    assert!(b.contains(&"seen by bob".to_owned()), "{v}");
    assert!(!b.contains(&"after the ban".to_owned()), "{v}");
    let (s, v) = get(&http, &bob, &format!("/rooms/{room}/event/{seen}")).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = get(&http, &bob, &format!("/rooms/{room}/state")).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_left_reads_up_to_the_leave_and_after_forgetting_nothing() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = http.create_room(&alice).await;
    ok_post(
        &http,
        &alice,
        &format!("/rooms/{room}/invite"),
        json!({"user_id": "@bob:localhost"}),
    )
    .await;
    ok_post(&http, &bob, &format!("/rooms/{room}/join"), json!({})).await;
    let secret = send(&http, &alice, &room, "the secret plan").await;
    ok_post(&http, &bob, &format!("/rooms/{room}/leave"), json!({})).await;
    send(&http, &alice, &room, "after bob left").await;

    // Left, not forgotten: every read but /joined_members answers, up to the leave.
    for path in read_paths(&room, &secret) {
        let (s, v) = get(&http, &bob, &path).await;
        let expected = if path.ends_with("/joined_members") {
            403
        } else {
            200
        };
        assert_eq!(s, expected, "bob, left: {path}: {v}");
        assert!(!v.to_string().contains("after bob left"), "{path}: {v}");
    }
    let (_, v) = get(
        &http,
        &bob,
        &format!("/rooms/{room}/messages?dir=b&limit=50"),
    )
    .await;
    assert!(
        bodies(&v, "chunk").contains(&"the secret plan".to_owned()),
        "{v}"
    );

    ok_post(&http, &bob, &format!("/rooms/{room}/forget"), json!({})).await;
    reads_nothing(&http, &bob, &room, &secret, "bob, forgot").await;

    // Rejoining restores what the room's history visibility allows.
    ok_post(
        &http,
        &alice,
        &format!("/rooms/{room}/invite"),
        json!({"user_id": "@bob:localhost"}),
    )
    .await;
    ok_post(&http, &bob, &format!("/rooms/{room}/join"), json!({})).await;
    let (s, v) = get(&http, &bob, &format!("/rooms/{room}/state")).await;
    assert_eq!(s, 200, "{v}");
}

/// As in Synapse (`check_user_in_room_or_world_readable`): one who forgot a
/// world-readable room, or was banned from it without joining, is no member
/// but reads what anyone may: the current state and the world-readable
/// history. `/joined_members` stays for members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_world_readable_room_forgotten_and_banned_users_read_what_anyone_may() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let carol = http.register("carol").await;
    let room = http.create_room(&alice).await;
    let (s, v) = http
        .call(
            "PUT",
            &format!("{C}/rooms/{room}/state/m.room.history_visibility/"),
            Some(&alice),
            Some(r#"{"history_visibility": "world_readable"}"#),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    ok_post(
        &http,
        &alice,
        &format!("/rooms/{room}/invite"),
        json!({"user_id": "@bob:localhost"}),
    )
    .await;
    ok_post(&http, &bob, &format!("/rooms/{room}/join"), json!({})).await;
    let open = send(&http, &alice, &room, "open to all").await;
    ok_post(&http, &bob, &format!("/rooms/{room}/leave"), json!({})).await;
    ok_post(&http, &bob, &format!("/rooms/{room}/forget"), json!({})).await;
    ok_post(
        &http,
        &alice,
        &format!("/rooms/{room}/ban"),
        json!({"user_id": "@carol:localhost"}),
    )
    .await;
    let later = send(&http, &alice, &room, "still open").await;

    for (who, token) in [("bob, forgot", &bob), ("carol, banned", &carol)] {
        for path in read_paths(&room, &open) {
            let (s, v) = get(&http, token, &path).await;
            let expected = if path.ends_with("/joined_members") {
                403
            } else {
                200
            };
            assert_eq!(s, expected, "{who}: {path}: {v}");
        }
        // The current state, not the state at a leave: the ban is in it.
        let (_, v) = get(
            &http,
            token,
            &format!("/rooms/{room}/state/m.room.member/@carol:localhost"),
        )
        .await;
        assert_eq!(v["membership"], "ban", "{who}: {v}");
        let (_, v) = get(
            &http,
            token,
            &format!("/rooms/{room}/messages?dir=b&limit=50"),
        )
        .await;
        let b = bodies(&v, "chunk");
        assert!(
            b.contains(&"open to all".to_owned()) && b.contains(&"still open".to_owned()),
            "{who}: {v}"
        );
        let (s, v) = get(&http, token, &format!("/rooms/{room}/event/{later}")).await;
        assert_eq!(s, 200, "{who}: {v}");
    }
}
