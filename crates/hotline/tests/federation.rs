//! Federation between two Hotlines on loopback: server names are IP
//! literals with ports (no DNS, no SNI), certificates come from a CA the
//! test makes, and each server trusts it through `[federation] ca_file`.

mod common;

use common::{federation_request, FederatedServer, Http, TestCa};
use ruma::api::federation::authentication::ServerSignaturesInput;
use ruma::api::OutgoingRequest;
use ruma::signatures::Ed25519KeyPair;
use ruma::ServerName;
use serde_json::{json, Value};

async fn set_displayname(http: &Http, token: &str, user: &str, name: &str) {
    let (status, v) = http
        .call(
            "PUT",
            &format!("/_matrix/client/v3/profile/{user}/displayname"),
            Some(token),
            Some(&json!({ "displayname": name }).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{v}");
}

async fn profile(http: &Http, token: &str, user: &str) -> (u16, Value) {
    http.call(
        "GET",
        &format!("/_matrix/client/v3/profile/{user}"),
        Some(token),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_profile_is_read_across_servers_over_signed_federation() {
    let ca = TestCa::new();
    let ((pa, na), (pb, nb)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let a = FederatedServer::start(&ca, pa, &[&nb], "").await;
    let b = FederatedServer::start(&ca, pb, &[&na], "").await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let alice = ha.register("alice").await;
    let bob = hb.register("bob").await;
    set_displayname(&ha, &alice, &a.user("alice"), "Alice of A").await;
    set_displayname(&hb, &bob, &b.user("bob"), "Bob of B").await;
    // B asks A, signed with B's key, which A fetches from B over TLS; and
    // the other way round.
    let (status, v) = profile(&hb, &bob, &a.user("alice")).await;
    assert_eq!(
        (status, &v["displayname"]),
        (200, &json!("Alice of A")),
        "{v}"
    );
    let (status, v) = profile(&ha, &alice, &b.user("bob")).await;
    assert_eq!(
        (status, &v["displayname"]),
        (200, &json!("Bob of B")),
        "{v}"
    );
    // A user the other server does not have.
    let (status, v) = profile(&hb, &bob, &a.user("nobody")).await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_not_on_the_allow_list_is_refused_both_ways() {
    let ca = TestCa::new();
    let ((pa, _na), (pc, nc)) = (FederatedServer::reserve(), FederatedServer::reserve());
    // C would talk to A; A federates with nobody.
    let a = FederatedServer::start(&ca, pa, &[], "").await;
    let c = FederatedServer::start(&ca, pc, &[&a.name], "").await;
    let (ha, hc) = (Http::new(&a.server.url), Http::new(&c.server.url));
    let alice = ha.register("alice").await;
    let carol = hc.register("carol").await;
    // A refuses what C sends ...
    let (status, v) = profile(&hc, &carol, &a.user("alice")).await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{v}"
    );
    // ... and sends C nothing.
    let (status, v) = profile(&ha, &alice, &format!("@carol:{nc}")).await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{v}"
    );
}

/// A signed profile query for `user` as `origin` would send it, signed
/// with `key`.
fn profile_query(
    origin: &str,
    destination: &str,
    key: &Ed25519KeyPair,
    user: &str,
) -> http::Request<Vec<u8>> {
    let request = ruma::api::federation::query::get_profile_information::v1::Request::new(
        user.try_into().unwrap(),
    );
    let input = ServerSignaturesInput::new(
        ServerName::parse(origin).unwrap(),
        ServerName::parse(destination).unwrap(),
        key,
    );
    request
        .try_into_http_request::<Vec<u8>>(&format!("https://{destination}"), input, ())
        .unwrap()
}

fn new_key(version: &str) -> Ed25519KeyPair {
    Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), version.into()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_without_a_valid_signature_are_refused_with_401() {
    let ca = TestCa::new();
    let ((pa, na), (pb, nb)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let a = FederatedServer::start(&ca, pa, &[&nb], "").await;
    let _b = FederatedServer::start(&ca, pb, &[&na], "").await;
    let alice = a.user("alice");
    Http::new(&a.server.url).register("alice").await;
    let send = |r| federation_request(&ca.ca_file, a.fed_port, r);
    // Unsigned.
    let mut unsigned = profile_query(&nb, &na, &new_key("x"), &alice);
    unsigned.headers_mut().remove(http::header::AUTHORIZATION);
    let (status, v) = send(unsigned).await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (401, Some("M_UNAUTHORIZED")),
        "{v}"
    );
    // Signed in B's name with a key that is not B's (B publishes its own
    // key under another id; this one is unknown to B).
    let (status, v) = send(profile_query(&nb, &na, &new_key("forged"), &alice)).await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (401, Some("M_UNAUTHORIZED")),
        "{v}"
    );
    // B's real key id, a different key: the signature does not verify.
    let (_, keys) = federation_request(
        &ca.ca_file,
        pb,
        http::Request::get("/_matrix/key/v2/server")
            .body(vec![])
            .unwrap(),
    )
    .await;
    let b_key_id = keys["verify_keys"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let version = b_key_id.strip_prefix("ed25519:").unwrap();
    let (status, v) = send(profile_query(&nb, &na, &new_key(version), &alice)).await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (401, Some("M_UNAUTHORIZED")),
        "{v}"
    );
    // For another destination.
    let (status, v) = send(profile_query(&nb, "127.0.0.1:1", &new_key(version), &alice)).await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (401, Some("M_UNAUTHORIZED")),
        "{v}"
    );
    // The server keeps serving.
    let (status, _) = federation_request(
        &ca.ca_file,
        pa,
        http::Request::get("/_matrix/federation/v1/version")
            .body(vec![])
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
}

/// Checks `object`'s signature by `server`'s key `key_id` (`key`, base64).
fn signed_by(object: &Value, server: &str, key_id: &str, key: &str) -> bool {
    let mut keys = std::collections::BTreeMap::new();
    keys.insert(
        server.to_owned(),
        [(key_id.to_owned(), ruma::serde::Base64::parse(key).unwrap())]
            .into_iter()
            .collect(),
    );
    // Only `server`'s signature is checked.
    let mut only = object.clone();
    let mine = only["signatures"][server].clone();
    only["signatures"] = json!({ server: mine });
    let ruma::CanonicalJsonValue::Object(o) = ruma::CanonicalJsonValue::try_from(only).unwrap()
    else {
        panic!()
    };
    ruma::signatures::verify_json(&keys, &o).is_ok()
}

fn only_key(keys: &Value) -> (String, String) {
    let (id, k) = keys["verify_keys"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    (id.clone(), k["key"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_publishes_signed_keys_and_vouches_for_its_peers_as_a_notary() {
    let ca = TestCa::new();
    let ((pa, na), (pb, nb)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let _a = FederatedServer::start(&ca, pa, &[&nb], "").await;
    let _b = FederatedServer::start(&ca, pb, &[&na], "").await;
    let get = |port, path: &str| {
        federation_request(
            &ca.ca_file,
            port,
            http::Request::get(path).body(vec![]).unwrap(),
        )
    };
    let (status, a_keys) = get(pa, "/_matrix/key/v2/server").await;
    assert_eq!(status, 200, "{a_keys}");
    assert_eq!(a_keys["server_name"], json!(na));
    let (a_id, a_key) = only_key(&a_keys);
    assert!(signed_by(&a_keys, &na, &a_id, &a_key), "self-signed");
    assert!(a_keys["valid_until_ts"].as_i64().unwrap() > hotline_service::now_ms());
    // B vouches for A's keys: A's signature kept, B's added.
    let (status, v) = get(pb, &format!("/_matrix/key/v2/query/{na}")).await;
    assert_eq!(status, 200, "{v}");
    let vouched = &v["server_keys"][0];
    assert_eq!(only_key(vouched), (a_id.clone(), a_key.clone()));
    assert!(signed_by(vouched, &na, &a_id, &a_key));
    let (_, b_keys) = get(pb, "/_matrix/key/v2/server").await;
    let (b_id, b_key) = only_key(&b_keys);
    assert!(
        signed_by(vouched, &nb, &b_id, &b_key),
        "B's signature: {vouched}"
    );
    // B is no notary for servers it does not federate with.
    let (status, v) = get(pb, "/_matrix/key/v2/query/127.0.0.1:1").await;
    assert_eq!((status, &v["server_keys"]), (200, &json!([])), "{v}");
}

/// Sends a text; answers its event id.
async fn send_text(http: &Http, token: &str, room: &str, txn: &str, body: &str) -> String {
    let (status, v) = http
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            Some(token),
            Some(&json!({"msgtype": "m.text", "body": body}).to_string()),
        )
        .await;
    assert_eq!(status, 200, "send: {v}");
    v["event_id"].as_str().unwrap().to_owned()
}

/// The texts of a room's timeline as `token` reads them, oldest first.
async fn texts(http: &Http, token: &str, room: &str) -> Vec<String> {
    let (status, v) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 200, "messages: {v}");
    let mut out: Vec<String> = v["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    out.reverse();
    out
}

/// Waits (up to `secs`) until `token` reads `want` as the room's texts.
async fn wait_for_texts(http: &Http, token: &str, room: &str, want: &[&str], secs: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let got = texts(http, token, room).await;
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {want:?}, read {got:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn create_public_room(http: &Http, token: &str) -> String {
    let (status, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(token),
            Some(r#"{"preset": "public_chat"}"#),
        )
        .await;
    assert_eq!(status, 200, "createRoom: {v}");
    v["room_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_on_one_server_is_joined_from_the_other_and_texts_go_both_ways() {
    let ca = TestCa::new();
    let ((pa, na), (pb, nb)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let a = FederatedServer::start(&ca, pa, &[&nb], "").await;
    let b = FederatedServer::start(&ca, pb, &[&na], "").await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let alice = ha.register("alice").await;
    let bob = hb.register("bob").await;
    let room = create_public_room(&ha, &alice).await;
    send_text(&ha, &alice, &room, "a1", "before bob").await;
    let (status, v) = hb
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{room}?via={na}"),
            Some(&bob),
            Some("{}"),
        )
        .await;
    assert_eq!(status, 200, "join over federation: {v}");
    // Both servers see bob joined.
    for (http, token) in [(&ha, &alice), (&hb, &bob)] {
        let (status, v) = http
            .call(
                "GET",
                &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert!(v["joined"].get(b.user("bob")).is_some(), "{v}");
        assert!(v["joined"].get(a.user("alice")).is_some(), "{v}");
    }
    send_text(&hb, &bob, &room, "b1", "hello from B").await;
    wait_for_texts(&ha, &alice, &room, &["before bob", "hello from B"], 10).await;
    send_text(&ha, &alice, &room, "a2", "hello from A").await;
    wait_for_texts(&hb, &bob, &room, &["hello from B", "hello from A"], 10).await;
}
