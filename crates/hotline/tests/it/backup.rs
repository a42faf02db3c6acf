//! `hotline admin backup DEST` beside a running server under load, and a
//! server started on the copy: everything acknowledged before the backup
//! began is there, in order, without holes or half-written state; accounts,
//! media and the signing key come along.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Http, Server};
use serde_json::json;

/// Senders in the load, each with its own numbered sequence.
const SENDERS: usize = 3;

/// The bodies of the room's messages, oldest first.
async fn messages(http: &Http, token: &str, room: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=1000");
        if let Some(f) = &from {
            path.push_str(&format!("&from={f}"));
        }
        let (status, v) = http.call("GET", &path, Some(token), None).await;
        assert_eq!(status, 200, "{v}");
        let chunk = v["chunk"].as_array().unwrap();
        bodies.extend(
            chunk
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .map(|e| e["content"]["body"].as_str().unwrap().to_owned()),
        );
        match v["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => return bodies,
        }
    }
}

async fn server_key(http: &Http) -> serde_json::Value {
    let (status, v) = http.call("GET", "/_matrix/key/v2/server", None, None).await;
    assert_eq!(status, 200, "{v}");
    v["verify_keys"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_every_acknowledged_message_media_and_the_key() {
    let mut server = Server::start_sqlite(&["--allow-registration"]).await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let room = http.create_room(&alice).await;
    let picture: Vec<u8> = (0..300_000u32).map(|n| (n % 253) as u8).collect();
    let resp = http
        .client
        .post(format!("{}/_matrix/media/v3/upload", server.url))
        .bearer_auth(&alice)
        .header("content-type", "application/octet-stream")
        .body(picture.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mxc = resp.json::<serde_json::Value>().await.unwrap()["content_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = server_key(&http).await;

    // The load: senders that each send their numbered messages one after
    // another, noting how many were acknowledged.
    let acked: Arc<Vec<Mutex<usize>>> = Arc::new((0..SENDERS).map(|_| Mutex::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for s in 0..SENDERS {
        let (base, token, room, acked, stop) = (
            server.url.clone(),
            alice.clone(),
            room.clone(),
            acked.clone(),
            stop.clone(),
        );
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = client
                    .put(format!(
                        "{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/t{s}-{i}"
                    ))
                    .bearer_auth(&token)
                    .json(&json!({"msgtype": "m.text", "body": format!("m-{s}-{i}")}))
                    .send()
                    .await
                    .unwrap();
                if r.status() == 429 {
                    // The per-user limit: the same send again, later.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                assert_eq!(r.status(), 200);
                i += 1;
                *acked[s].lock().unwrap() = i;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The backup, while the load goes on.
    let before: Vec<usize> = acked.iter().map(|a| *a.lock().unwrap()).collect();
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("backup");
    let out = {
        let (data, dest) = (server.data.clone(), dest.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_hotline"))
                .arg("--data-dir")
                .arg(&data)
                .args(["admin", "backup"])
                .arg(&dest)
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    assert!(
        out.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let during: Vec<usize> = acked.iter().map(|a| *a.lock().unwrap()).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert!(
        before.iter().all(|&n| n > 10),
        "the load was running: {before:?}"
    );
    server.kill9();

    // A server on the copy.
    let restored = Server::start_in(dest.clone(), &["--allow-registration"], None).await;
    let http = Http::new(&restored.url);
    let bodies = messages(&http, &alice, &room).await;
    for s in 0..SENDERS {
        let mine: Vec<&String> = bodies
            .iter()
            .filter(|b| b.starts_with(&format!("m-{s}-")))
            .collect();
        // Each sender's messages are a prefix of what it sent: in order,
        // no holes, none twice; and at least what was acknowledged before
        // the backup began.
        let expected: Vec<String> = (0..mine.len()).map(|i| format!("m-{s}-{i}")).collect();
        assert_eq!(
            mine.iter().map(|b| b.as_str()).collect::<Vec<_>>(),
            expected,
            "sender {s}"
        );
        assert!(
            mine.len() >= before[s],
            "sender {s}: {} restored, {} acknowledged before the backup",
            mine.len(),
            before[s]
        );
        assert!(
            mine.len() <= during[s] + 1,
            "sender {s}: more restored than was sent by the backup's end"
        );
    }

    // The same signing key, so attestations it signed still verify.
    assert_eq!(server_key(&http).await, key);

    // Accounts work: a password login, then a send.
    let (status, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(
                &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "correct horse"})
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let token = v["access_token"].as_str().unwrap().to_owned();
    let (status, v) = http
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/after-restore"),
            Some(&token),
            Some(&json!({"msgtype": "m.text", "body": "after restore"}).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        messages(&http, &token, &room)
            .await
            .last()
            .map(|s| s.as_str()),
        Some("after restore")
    );

    // Media uploaded before the backup downloads whole.
    let got = http
        .client
        .get(format!(
            "{}/_matrix/client/v1/media/download/{}",
            restored.url,
            mxc.trim_start_matches("mxc://")
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), picture.as_slice());
}

#[tokio::test]
async fn a_backup_refuses_a_destination_that_is_not_empty() {
    let server = Server::start_sqlite(&["--allow-registration"]).await;
    let parent = tempfile::tempdir().unwrap();
    std::fs::write(parent.path().join("keep.txt"), b"mine").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hotline"))
        .arg("--data-dir")
        .arg(&server.data)
        .args(["admin", "backup"])
        .arg(parent.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(parent.path().join("keep.txt")).unwrap(),
        b"mine"
    );
}
