//! The key, to-device and backup rules, checked over raw HTTP where a
//! client library would hide them: malformed keys are refused, claims hand
//! out each one-time key once, to-device messages arrive once, backups keep
//! the better copy of a session.

mod common;

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
