//! Read receipts over HTTP against the real binary: the same receipt again
//! is a no-op (no write, no new stream position, no /sync woken), while a
//! new one reaches a waiting /sync at once.

use crate::common;

use std::time::{Duration, Instant};

use common::{Http, Server};
use serde_json::{json, Value};

const V3: &str = "/_matrix/client/v3";

fn enc(s: &str) -> String {
    s.replace('!', "%21")
        .replace('$', "%24")
        .replace(':', "%3A")
        .replace('@', "%40")
}

async fn ok(http: &Http, method: &str, token: &str, path: &str, body: Value) -> Value {
    let (status, v) = http
        .call(
            method,
            &format!("{V3}{path}"),
            Some(token),
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(status, 200, "{method} {path}: {v}");
    v
}

async fn sync(http: &Http, token: &str, since: Option<&str>, timeout_ms: u64) -> Value {
    let path = match since {
        Some(s) => format!("{V3}/sync?since={}&timeout={timeout_ms}", enc(s)),
        None => format!("{V3}/sync?timeout=0"),
    };
    let (status, v) = http.call("GET", &path, Some(token), None).await;
    assert_eq!(status, 200, "sync: {v}");
    v
}

fn has_receipt(s: &Value, room: &str) -> bool {
    s["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()
        .is_some_and(|e| e.iter().any(|e| e["type"] == "m.receipt"))
}

#[tokio::test]
async fn an_identical_receipt_causes_no_write_and_wakes_no_sync() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = http.create_room(&alice).await;
    let r = enc(&room);
    ok(
        &http,
        "POST",
        &alice,
        &format!("/rooms/{r}/invite"),
        json!({"user_id": "@bob:localhost"}),
    )
    .await;
    ok(&http, "POST", &bob, &format!("/rooms/{r}/join"), json!({})).await;
    let send = |token: String, txn: &'static str, body: &'static str| {
        let http = &http;
        let r = r.clone();
        async move {
            let v = ok(
                http,
                "PUT",
                &token,
                &format!("/rooms/{r}/send/m.room.message/{txn}"),
                json!({"msgtype": "m.text", "body": body}),
            )
            .await;
            v["event_id"].as_str().unwrap().to_owned()
        }
    };
    let first = send(bob.clone(), "t1", "first").await;
    let receipt = |ev: String| {
        let http = &http;
        let r = r.clone();
        let alice = alice.clone();
        async move {
            ok(
                http,
                "POST",
                &alice,
                &format!("/rooms/{r}/receipt/m.read/{}", enc(&ev)),
                json!({}),
            )
            .await;
        }
    };
    receipt(first.clone()).await;
    let token = sync(&http, &bob, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    // Bob waits; alice sends the very same receipt again. Bob's /sync must
    // not come back with anything: it runs to its timeout, with the same
    // position it was given (nothing was written).
    let wait = 2_000;
    let started = Instant::now();
    let (quiet, ()) = tokio::join!(sync(&http, &bob, Some(&token), wait), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        receipt(first.clone()).await;
    });
    assert!(
        !has_receipt(&quiet, &room),
        "an identical receipt is not news: {quiet}"
    );
    assert_eq!(
        quiet["next_batch"],
        token.as_str(),
        "an identical receipt advanced the stream: {quiet}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(wait),
        "the /sync returned early ({:?}): {quiet}",
        started.elapsed()
    );

    // A receipt on a newer event is news: the waiting /sync returns with it
    // well before its (long) timeout.
    let second = send(bob.clone(), "t2", "second").await;
    let token = sync(&http, &bob, Some(&token), 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    let (woken, ()) = tokio::join!(sync(&http, &bob, Some(&token), 30_000), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        receipt(second.clone()).await;
    });
    assert!(
        has_receipt(&woken, &room),
        "the new receipt reaches bob: {woken}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the new receipt woke the /sync"
    );
    let content = woken["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .unwrap()["content"]
        .clone();
    assert!(
        content[&second]["m.read"]["@alice:localhost"].is_object(),
        "{content}"
    );
}
