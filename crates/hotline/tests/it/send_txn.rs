//! `PUT /rooms/{roomId}/send/{eventType}/{txnId}` is idempotent per device
//! and transaction id: a retry answers with the first event, and stores
//! nothing new.

use crate::common;

use common::{Http, Server};

async fn send(
    http: &Http,
    token: &str,
    room: &str,
    txn: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    http.call(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
        Some(token),
        Some(&serde_json::json!({"msgtype": "m.text", "body": body}).to_string()),
    )
    .await
}

/// Bodies of the room's messages, oldest first.
async fn bodies(http: &Http, token: &str, room: &str) -> Vec<String> {
    let (status, v) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=100"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_retried_transaction_returns_the_first_event_and_stores_nothing_new() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let room = http.create_room(&alice).await;

    let (s1, first) = send(&http, &alice, &room, "t1", "hello").await;
    assert_eq!(s1, 200, "{first}");
    // The same transaction again, even with other content: the first event.
    let (s2, again) = send(&http, &alice, &room, "t1", "hello again").await;
    assert_eq!(s2, 200, "{again}");
    assert_eq!(first["event_id"], again["event_id"]);
    // A new transaction id is a new event.
    let (s3, other) = send(&http, &alice, &room, "t2", "second").await;
    assert_eq!(s3, 200, "{other}");
    assert_ne!(first["event_id"], other["event_id"]);

    assert_eq!(bodies(&http, &alice, &room).await, ["hello", "second"]);
}

#[tokio::test]
async fn transaction_ids_are_scoped_to_the_device() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let room = http.create_room(&alice).await;
    let (status, login) = http
        .call(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"correct horse"}"#),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let alice2 = login["access_token"].as_str().unwrap();

    let (_, a) = send(&http, &alice, &room, "same", "from the first device").await;
    let (_, b) = send(&http, alice2, &room, "same", "from the second device").await;
    assert!(
        a["event_id"].is_string() && b["event_id"].is_string(),
        "{a} {b}"
    );
    assert_ne!(a["event_id"], b["event_id"]);
    assert_eq!(
        bodies(&http, &alice, &room).await,
        ["from the first device", "from the second device"]
    );
}

#[tokio::test]
async fn a_retry_after_leaving_the_room_still_answers_with_the_first_event() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let room = http.create_room(&alice).await;
    let (_, first) = send(&http, &alice, &room, "t1", "hello").await;
    assert!(first["event_id"].is_string(), "{first}");
    let (status, v) = http
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&alice),
            Some("{}"),
        )
        .await;
    assert_eq!(status, 200, "{v}");

    let (status, again) = send(&http, &alice, &room, "t1", "hello").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(first["event_id"], again["event_id"]);
    // A new transaction is refused: she is no longer a member.
    let (status, refused) = send(&http, &alice, &room, "t2", "hello").await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["errcode"], "M_FORBIDDEN");
}

#[tokio::test]
async fn transaction_ids_are_scoped_to_the_endpoint_so_two_rooms_get_two_events() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let room_a = http.create_room(&alice).await;
    let room_b = http.create_room(&alice).await;

    let (s1, in_a) = send(&http, &alice, &room_a, "same", "to a").await;
    assert_eq!(s1, 200, "{in_a}");
    let (s2, in_b) = send(&http, &alice, &room_b, "same", "to b").await;
    assert_eq!(s2, 200, "{in_b}");
    assert_ne!(in_a["event_id"], in_b["event_id"]);
    assert_eq!(bodies(&http, &alice, &room_a).await, ["to a"]);
    assert_eq!(bodies(&http, &alice, &room_b).await, ["to b"]);

    // Another event type is another endpoint too.
    let (s3, reaction) = http
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room_a}/send/m.reaction/same"),
            Some(&alice),
            Some(&serde_json::json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": in_a["event_id"], "key": "👍"}}).to_string()),
        )
        .await;
    assert_eq!(s3, 200, "{reaction}");
    assert_ne!(reaction["event_id"], in_a["event_id"]);
}

#[tokio::test]
async fn a_redaction_reusing_a_message_transaction_id_still_redacts() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let room = http.create_room(&alice).await;

    let (s1, sent) = send(&http, &alice, &room, "t1", "secret").await;
    assert_eq!(s1, 200, "{sent}");
    let event_id = sent["event_id"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/rooms/{room}/redact/{event_id}/t1");
    let (s2, redaction) = http.call("PUT", &path, Some(&alice), Some("{}")).await;
    assert_eq!(s2, 200, "{redaction}");
    assert_ne!(
        redaction["event_id"], sent["event_id"],
        "a redaction, not the message"
    );
    // Retrying the redaction answers with the same redaction.
    let (s3, again) = http.call("PUT", &path, Some(&alice), Some("{}")).await;
    assert_eq!(s3, 200, "{again}");
    assert_eq!(again["event_id"], redaction["event_id"]);

    let (s4, event) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/event/{event_id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(s4, 200, "{event}");
    assert_eq!(
        event["content"],
        serde_json::json!({}),
        "the message was redacted: {event}"
    );
    assert_eq!(
        event["unsigned"]["redacted_because"]["event_id"],
        redaction["event_id"]
    );
}
