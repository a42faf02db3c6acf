//! `kill -9` while messages are being sent: every acknowledged message is
//! there after restart, in order, exactly once.

use crate::common;

use std::sync::{Arc, Mutex};

use common::{Http, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9_in_order_exactly_once() {
    let mut server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let (_, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            Some("{}"),
        )
        .await;
    let room = v["room_id"].as_str().unwrap().to_owned();

    // Four senders keep sending; each records the messages that got a 200.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for sender in 0..4 {
        let (base, token, room, acked) = (
            server.url.clone(),
            alice.clone(),
            room.clone(),
            acked.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..100_000 {
                let body = format!("m-{sender}-{i}");
                let url = format!(
                    "{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/t{sender}-{i}"
                );
                let r = client
                    .put(url)
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"msgtype":"m.text","body":body}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => acked.lock().unwrap().push(body),
                    _ => break,
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    server.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "the load produced acknowledged sends ({})",
        acked.len()
    );

    server.spawn().await;
    let http = Http::new(&server.url);
    let mut bodies = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=1000");
        if let Some(f) = &from {
            path.push_str(&format!("&from={f}"));
        }
        let (status, v) = http.call("GET", &path, Some(&alice), None).await;
        assert_eq!(status, 200, "{v}");
        let chunk = v["chunk"].as_array().unwrap();
        for e in chunk {
            if e["type"] == "m.room.message" {
                bodies.push(e["content"]["body"].as_str().unwrap().to_owned());
            }
        }
        match v["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    // Exactly once.
    let mut unique = bodies.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), bodies.len(), "no message stored twice");
    // Every acknowledged message is there.
    for a in &acked {
        assert!(bodies.contains(a), "acknowledged {a} lost");
    }
    // In order per sender (each sender's sends are sequential).
    for sender in 0..4 {
        let prefix = format!("m-{sender}-");
        let seq: Vec<u64> = bodies
            .iter()
            .filter_map(|b| b.strip_prefix(&prefix))
            .map(|n| n.parse().unwrap())
            .collect();
        assert!(
            seq.windows(2).all(|w| w[1] == w[0] + 1),
            "sender {sender} in order with no gaps"
        );
    }
    // And `/sync` after restart returns the same history's tail.
    let (status, v) = http
        .call("GET", "/_matrix/client/v3/sync", Some(&alice), None)
        .await;
    assert_eq!(status, 200);
    let tl = v["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap();
    let last = tl.last().unwrap()["content"]["body"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        &last,
        bodies.last().unwrap(),
        "sync's newest event is the newest stored"
    );
}
