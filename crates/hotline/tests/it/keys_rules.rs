//! The key, to-device and backup rules, checked over raw HTTP where a
//! client library would hide them: malformed keys are refused, claims hand
//! out each one-time key once, to-device messages arrive once, backups keep
//! the better copy of a session.

use crate::common;

use common::{Http, Server};
use serde_json::{json, Value};

async fn login_device(http: &Http, user: &str, device: &str) -> String {
    let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": "correct horse", "device_id": device});
    let (status, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(status, 200, "login: {v}");
    v["access_token"].as_str().unwrap().to_owned()
}

async fn sync(http: &Http, token: &str, since: Option<&str>) -> Value {
    let path = match since {
        Some(s) => format!("/_matrix/client/v3/sync?timeout=0&since={s}"),
        None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
    };
    let (status, v) = http.call("GET", &path, Some(token), None).await;
    assert_eq!(status, 200, "sync: {v}");
    v
}

#[tokio::test]
async fn malformed_keys_are_refused_with_their_errcodes() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let whoami = http
        .call(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&alice),
            None,
        )
        .await
        .1;
    let dev = whoami["device_id"].as_str().unwrap().to_owned();
    let ed = "QWxpY2UncyBlZDI1NTE5IGtleSBmb3IgdGVzdGluZzE"; // 32 bytes, unpadded base64
    let device_keys = |device: &str, sig: &str| {
        json!({"device_keys": {
            "user_id": "@alice:localhost", "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {format!("curve25519:{device}"): ed, format!("ed25519:{device}"): ed},
            "signatures": {"@alice:localhost": {format!("ed25519:{device}"): sig}}
        }})
    };
    let bad_sig = "A".repeat(86);
    let cases = vec![
        (json!({"device_keys": {"user_id": 5}}), 400, "M_BAD_JSON"),
        (device_keys("SOMEONEELSE", &bad_sig), 400, "M_INVALID_PARAM"),
        (device_keys(&dev, &bad_sig), 400, "M_INVALID_PARAM"),
        (
            json!({"one_time_keys": {"no-algorithm": {"key": "x"}}}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            json!({"one_time_keys": ["not", "a", "map"]}),
            400,
            "M_BAD_JSON",
        ),
        (
            json!({"fallback_keys": {"signed_curve25519:AAA": 7}}),
            400,
            "M_BAD_JSON",
        ),
    ];
    for (body, status, errcode) in cases {
        let (s, v) = http
            .call(
                "POST",
                "/_matrix/client/v3/keys/upload",
                Some(&alice),
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(
            (s, v["errcode"].as_str().unwrap_or("")),
            (status, errcode),
            "for {body}: {v}"
        );
    }
    // Cross-signing keys of the wrong shape or for someone else.
    let (s, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(&alice),
            Some(&json!({"master_key": {"user_id": "@bob:localhost", "usage": ["master"], "keys": {format!("ed25519:{ed}"): ed}}}).to_string()),
        )
        .await;
    assert_eq!(
        (s, v["errcode"].as_str().unwrap()),
        (400, "M_INVALID_PARAM"),
        "{v}"
    );
    let (s, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(&alice),
            Some(r#"{"master_key": {"usage": "master"}}"#),
        )
        .await;
    assert_eq!(
        (s, v["errcode"].as_str().unwrap()),
        (400, "M_BAD_JSON"),
        "{v}"
    );

    // Unknown users and devices give empty results, remote servers failures.
    let (s, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/keys/query",
            Some(&alice),
            Some(r#"{"device_keys": {"@nobody:localhost": [], "@x:elsewhere.example": []}}"#),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["device_keys"]["@nobody:localhost"], json!({}));
    assert!(v["failures"]["elsewhere.example"].is_object(), "{v}");
    let (s, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/keys/claim",
            Some(&alice),
            Some(r#"{"one_time_keys": {"@nobody:localhost": {"NODEVICE": "signed_curve25519"}}}"#),
        )
        .await;
    assert_eq!((s, &v["one_time_keys"]), (200, &json!({})), "{v}");
}

#[tokio::test]
async fn each_one_time_key_is_claimed_once_then_the_fallback_key() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    http.register("alice").await;
    let bob = http.register("bob").await;
    let alice = login_device(&http, "alice", "PHONE").await;
    let key =
        |k: &str| json!({"key": k, "signatures": {"@alice:localhost": {"ed25519:PHONE": "sig"}}});
    let body = json!({
        "one_time_keys": {"signed_curve25519:AAAAAQ": key("one"), "signed_curve25519:AAAAAg": key("two")},
        "fallback_keys": {"signed_curve25519:AAAAAw": {"key": "fallback", "fallback": true, "signatures": {}}}
    });
    let (s, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/keys/upload",
            Some(&alice),
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["one_time_key_counts"]["signed_curve25519"], 2);
    let first = sync(&http, &alice, None).await;
    assert_eq!(first["device_one_time_keys_count"]["signed_curve25519"], 2);
    assert_eq!(
        first["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    let claim = r#"{"one_time_keys": {"@alice:localhost": {"PHONE": "signed_curve25519"}}}"#;
    let mut handed_out = Vec::new();
    for _ in 0..3 {
        let (s, v) = http
            .call(
                "POST",
                "/_matrix/client/v3/keys/claim",
                Some(&bob),
                Some(claim),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let keys = v["one_time_keys"]["@alice:localhost"]["PHONE"]
            .as_object()
            .unwrap()
            .clone();
        handed_out.push(
            keys.values().next().unwrap()["key"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    handed_out[..2].sort();
    assert_eq!(handed_out, ["one", "two", "fallback"]);
    let later = sync(&http, &alice, first["next_batch"].as_str()).await;
    assert_eq!(later["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert_eq!(later["device_unused_fallback_key_types"], json!([]));
}

#[tokio::test]
async fn to_device_messages_arrive_once_and_unknown_devices_are_skipped() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    http.register("bob").await;
    let bob = login_device(&http, "bob", "LAPTOP").await;
    let first = sync(&http, &bob, None).await;

    let body = json!({"messages": {
        "@bob:localhost": {"LAPTOP": {"n": 1}, "NOSUCHDEVICE": {"n": 2}},
        "@nobody:localhost": {"*": {"n": 3}}
    }});
    for _ in 0..2 {
        // The same transaction twice delivers once.
        let (s, v) = http
            .call(
                "PUT",
                "/_matrix/client/v3/sendToDevice/org.example.ping/txn1",
                Some(&alice),
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let star = json!({"messages": {"@bob:localhost": {"*": {"n": 4}}}});
    http.call(
        "PUT",
        "/_matrix/client/v3/sendToDevice/org.example.ping/txn2",
        Some(&alice),
        Some(&star.to_string()),
    )
    .await;

    let got = sync(&http, &bob, first["next_batch"].as_str()).await;
    let events = got["to_device"]["events"].as_array().unwrap();
    let ns: Vec<i64> = events
        .iter()
        .map(|e| e["content"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [1, 4], "{got}");
    assert_eq!(events[0]["sender"], "@alice:localhost");
    assert_eq!(events[0]["type"], "org.example.ping");
    let again = sync(&http, &bob, got["next_batch"].as_str()).await;
    assert_eq!(
        again["to_device"]["events"],
        json!([]),
        "delivered messages are not repeated"
    );
    // Acknowledged messages are deleted: even the old token no longer sees them.
    let retry = sync(&http, &bob, first["next_batch"].as_str()).await;
    assert_eq!(retry["to_device"]["events"], json!([]), "{retry}");
}

#[tokio::test]
async fn key_backup_keeps_the_better_session_and_checks_versions() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let (s, v) = http
        .call(
            "GET",
            "/_matrix/client/v3/room_keys/version",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!((s, v["errcode"].as_str().unwrap()), (404, "M_NOT_FOUND"));
    let create = r#"{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "abc"}}"#;
    let (_, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/room_keys/version",
            Some(&alice),
            Some(create),
        )
        .await;
    let v1 = v["version"].as_str().unwrap().to_owned();
    let session = |index: u64, verified: bool, data: &str| json!({"first_message_index": index, "forwarded_count": 0, "is_verified": verified, "session_data": {"ciphertext": data}});
    let path = format!("/_matrix/client/v3/room_keys/keys/!r:localhost/S1?version={v1}");
    let put = |body: Value| {
        let http = &http;
        let alice = &alice;
        let path = path.clone();
        async move {
            http.call("PUT", &path, Some(alice), Some(&body.to_string()))
                .await
        }
    };
    let (s, v) = put(session(5, false, "first")).await;
    assert_eq!((s, v["count"].as_i64()), (200, Some(1)), "{v}");
    let etag1 = v["etag"].as_str().unwrap().to_owned();
    put(session(9, false, "worse")).await;
    let (_, got) = http.call("GET", &path, Some(&alice), None).await;
    assert_eq!(
        got["session_data"]["ciphertext"], "first",
        "a later first index does not replace"
    );
    let (_, v) = put(session(9, true, "verified")).await;
    assert_ne!(
        v["etag"].as_str().unwrap(),
        etag1,
        "the etag moves on change"
    );
    let (_, got) = http.call("GET", &path, Some(&alice), None).await;
    assert_eq!(
        got["session_data"]["ciphertext"], "verified",
        "verified beats unverified"
    );

    // A new version makes the old one read-only for writes.
    http.call(
        "POST",
        "/_matrix/client/v3/room_keys/version",
        Some(&alice),
        Some(create),
    )
    .await;
    let (s, v) = put(session(0, true, "late")).await;
    assert_eq!(
        (s, v["errcode"].as_str().unwrap()),
        (403, "M_WRONG_ROOM_KEYS_VERSION"),
        "{v}"
    );
    assert_eq!(v["current_version"], "2");
    let (s, v) = http
        .call(
            "PUT",
            "/_matrix/client/v3/room_keys/keys/!r:localhost/S1?version=2",
            Some(&alice),
            Some(r#"{"first_message_index": "zero"}"#),
        )
        .await;
    assert_eq!(
        (s, v["errcode"].as_str().unwrap()),
        (400, "M_BAD_JSON"),
        "{v}"
    );
    let (_, info) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/room_keys/version/{v1}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(info["count"], 1);
    let (s, _) = http
        .call(
            "DELETE",
            &format!("/_matrix/client/v3/room_keys/version/{v1}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = http.call("GET", &path, Some(&alice), None).await;
    assert_eq!((s, v["errcode"].as_str().unwrap()), (404, "M_NOT_FOUND"));
}

/// Sends `{"n": i}` to `@bob:localhost`'s device `LAPTOP` for each `i` in
/// `range`, one `/sendToDevice` transaction per message (the API takes one
/// message per device per request), 16 at a time; each must answer 200.
async fn send_numbered_to_bob(
    http: &std::sync::Arc<Http>,
    token: &str,
    range: std::ops::Range<usize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = std::sync::Arc::new(AtomicUsize::new(range.start));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (http, token, next, end) = (http.clone(), token.to_owned(), next.clone(), range.end);
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                let body = json!({"messages": {"@bob:localhost": {"LAPTOP": {"n": i}}}});
                let (s, v) = http
                    .call(
                        "PUT",
                        &format!("/_matrix/client/v3/sendToDevice/org.example.ping/cap{i}"),
                        Some(&token),
                        Some(&body.to_string()),
                    )
                    .await;
                assert_eq!(s, 200, "message {i}: {v}");
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
}

/// Reads the device's to-device queue with `/sync` until a response brings
/// none; the `n` of each message in order, and the last token.
async fn drain_to_device(
    http: &Http,
    token: &str,
    mut since: Option<String>,
) -> (Vec<usize>, String) {
    let mut got = Vec::new();
    // 100 per response (TO_DEVICE_PER_SYNC); the bound only stops a loop.
    for _ in 0..200 {
        let v = sync(http, token, since.as_deref()).await;
        let events = v["to_device"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        since = Some(v["next_batch"].as_str().unwrap().to_owned());
        if events.is_empty() {
            return (got, since.unwrap());
        }
        for e in events {
            assert_eq!(e["sender"], "@alice:localhost", "{e}");
            assert_eq!(e["type"], "org.example.ping", "{e}");
            got.push(e["content"]["n"].as_u64().unwrap() as usize);
        }
    }
    panic!("the to-device queue did not drain in 200 /sync calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_devices_to_device_queue_holds_at_most_10000_messages_and_more_are_dropped() {
    // keys::MAX_QUEUED_TO_DEVICE.
    const CAP: usize = 10_000;
    const OVER: usize = 100;
    // The per-user rate limit (200/s, burst 1000) is raised for this test
    // only: it sends 10,100 messages in a few seconds.
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
    let http = std::sync::Arc::new(Http::new(&server.url));
    let alice = http.register("alice").await;
    http.register("bob").await;
    let bob = login_device(&http, "bob", "LAPTOP").await;

    // Bob's laptop is offline: its queue fills to the cap, then messages
    // are dropped, and the sender is told 200 either way.
    send_numbered_to_bob(&http, &alice, 0..CAP).await;
    send_numbered_to_bob(&http, &alice, CAP..CAP + OVER).await;

    let (mut got, token) = drain_to_device(&http, &bob, None).await;
    assert_eq!(got.len(), CAP, "the device receives exactly the cap");
    got.sort_unstable();
    assert_eq!(
        got,
        (0..CAP).collect::<Vec<_>>(),
        "the first {CAP} messages are kept (each once), the later ones dropped"
    );

    // Read and acknowledged, the queue is empty again and takes messages.
    send_numbered_to_bob(&http, &alice, CAP + OVER..CAP + OVER + 1).await;
    let (after, _) = drain_to_device(&http, &bob, Some(token)).await;
    assert_eq!(
        after,
        [CAP + OVER],
        "a message sent after the queue was read arrives"
    );
}
