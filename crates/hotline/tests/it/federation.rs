//! Federation between two Hotlines on loopback: server names are IP
//! literals with ports (no DNS, no SNI), certificates come from a CA the
//! test makes, and each server trusts it through `[federation] ca_file`.

use crate::common;

use common::{
    craft_pdu, federation_request, knock_invite_join, send_as, signed_as,
    two_servers_sharing_a_room, two_servers_sharing_a_room_made_with,
    two_servers_sharing_a_room_with, wait_for_sync, Crafted, FederatedServer, Http, Side, TestCa,
};
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

/// Two servers, alice on A in a public room of hers, bob of B joined to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_on_one_server_is_joined_from_the_other_and_texts_go_both_ways() {
    let ca = TestCa::new();
    let ((pa, na), (pb, nb)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let a = FederatedServer::start(&ca, pa, &[&nb], "").await;
    let b = FederatedServer::start(&ca, pb, &[&na], "").await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let alice = ha.register("alice").await;
    let bob = hb.register("bob").await;
    let room = ha.create_public_room(&alice).await;
    ha.send_text(&alice, &room, "a1", "before bob").await;
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
    hb.send_text(&bob, &room, "b1", "hello from B").await;
    ha.wait_for_texts(&alice, &room, &["before bob", "hello from B"], 10)
        .await;
    let from_a = ha.send_text(&alice, &room, "a2", "hello from A").await;
    // What was said before Bob joined came with his join.
    hb.wait_for_texts(
        &bob,
        &room,
        &["before bob", "hello from B", "hello from A"],
        10,
    )
    .await;
    // Typing and read receipts cross too.
    let (status, v) = ha
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/typing/{}", a.user("alice")),
            Some(&alice),
            Some(r#"{"typing": true, "timeout": 20000}"#),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = hb
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{from_a}"),
            Some(&bob),
            Some("{}"),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let alice_id = a.user("alice");
    let bob_id = b.user("bob");
    wait_for_sync(&hb, &bob, 10, |v| {
        v["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .is_some_and(|es| {
                es.iter().any(|e| {
                    e["type"] == "m.typing"
                        && e["content"]["user_ids"]
                            .as_array()
                            .is_some_and(|u| u.contains(&json!(alice_id)))
                })
            })
    })
    .await;
    wait_for_sync(&ha, &alice, 10, |v| {
        v["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .is_some_and(|es| {
                es.iter().any(|e| {
                    e["type"] == "m.receipt" && e["content"][&from_a]["m.read"][&bob_id].is_object()
                })
            })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn texts_sent_while_the_other_server_is_down_arrive_once_when_it_returns() {
    let ca = TestCa::new();
    let (a, mut b, alice, bob, room) =
        two_servers_sharing_a_room_with(&ca, "metrics_token = \"scrape\"").await;
    let ha = Http::new(&a.server.url);
    Http::new(&b.server.url)
        .send_text(&bob, &room, "b1", "bob first")
        .await;
    ha.wait_for_texts(&alice, &room, &["bob first"], 10).await;
    b.server.kill9();
    // A accepts every send while B is down: a 200 never waits on a peer.
    let mut want = vec!["bob first".to_owned()];
    for i in 0..5 {
        let text = format!("while B is down {i}");
        ha.send_text(&alice, &room, &format!("down{i}"), &text)
            .await;
        want.push(text);
    }
    // The operator sees it: queued for B, which does not answer.
    let report = a.server.admin_configured(&["federation"]);
    assert!(
        report.contains(&format!("{}\tqueued 5\tunreachable", b.name)),
        "{report}"
    );
    let (status, metrics) = ha.call("GET", "/metrics", Some("scrape"), None).await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains(&format!(
            "hotline_federation_queued_events{{peer=\"{}\"}} 5",
            b.name
        )),
        "{metrics}"
    );
    b.server.spawn().await;
    let hb = Http::new(&b.server.url);
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    // Each once, in order (A retries at most every 30 s).
    hb.wait_for_texts(&bob, &room, &want, 45).await;
    // Delivered entries leave the stored queue once it drains.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let report = a.server.admin_configured(&["federation"]);
        if report.contains(&format!("{}\tqueued 0\tanswers (Hotline", b.name)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{report}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // And the conversation goes on both ways.
    hb.send_text(&bob, &room, "b2", "back again").await;
    let mut after = want.clone();
    after.push("back again");
    ha.wait_for_texts(&alice, &room, &after, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_to_device_message_for_another_server_survives_both_servers_being_killed() {
    let ca = TestCa::new();
    let (mut a, mut b, alice, bob, _room) = two_servers_sharing_a_room(&ca).await;
    let ha = Http::new(&a.server.url);
    b.server.kill9();
    // Room keys travel as to-device messages: a `200` means it will arrive.
    let body = json!({"messages": {b.user("bob"): {"*": {"n": 7}}}});
    let (status, v) = ha
        .call(
            "PUT",
            "/_matrix/client/v3/sendToDevice/org.example.key/t1",
            Some(&alice),
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    a.server.kill9();
    a.server.spawn().await;
    b.server.spawn().await;
    let hb = Http::new(&b.server.url);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
    let mut since: Option<String> = None;
    loop {
        let path = match &since {
            Some(t) => format!("/_matrix/client/v3/sync?timeout=2000&since={t}"),
            None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
        };
        let (status, v) = hb.call("GET", &path, Some(&bob), None).await;
        assert_eq!(status, 200, "{v}");
        let got: Vec<&Value> = v["to_device"]["events"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        if let Some(e) = got.iter().find(|e| e["type"] == "org.example.key") {
            assert_eq!(
                (&e["sender"], &e["content"]["n"]),
                (&json!(a.user("alice")), &json!(7))
            );
            break;
        }
        since = v["next_batch"].as_str().map(str::to_owned);
        assert!(
            std::time::Instant::now() < deadline,
            "the to-device message never arrived"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_through_the_rooms_server_reaches_its_third_servers() {
    let ca = TestCa::new();
    let ((pa, na), (pb, nb), (pc, nc)) = (
        FederatedServer::reserve(),
        FederatedServer::reserve(),
        FederatedServer::reserve(),
    );
    let a = FederatedServer::start(&ca, pa, &[&nb, &nc], "").await;
    let b = FederatedServer::start(&ca, pb, &[&na, &nc], "").await;
    let c = FederatedServer::start(&ca, pc, &[&na, &nb], "").await;
    let (ha, hb, hc) = (
        Http::new(&a.server.url),
        Http::new(&b.server.url),
        Http::new(&c.server.url),
    );
    let alice = ha.register("alice").await;
    let bob = hb.register("bob").await;
    let carol = hc.register("carol").await;
    let room = ha.create_public_room(&alice).await;
    for (http, token) in [(&hb, &bob), (&hc, &carol)] {
        let (status, v) = http
            .call(
                "POST",
                &format!("/_matrix/client/v3/join/{room}?via={na}"),
                Some(token),
                Some("{}"),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    // Carol joined through A; B hears of it from A, which passes it on.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, v) = hb
            .call(
                "GET",
                &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
                Some(&bob),
                None,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        if v["joined"].get(c.user("carol")).is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // And what Carol says reaches both other servers.
    hc.send_text(&carol, &room, "c1", "carol on C").await;
    ha.wait_for_texts(&alice, &room, &["carol on C"], 10).await;
    hb.wait_for_texts(&bob, &room, &["carol on C"], 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_reaches_those_who_share_a_room_on_the_other_server() {
    let ca = TestCa::new();
    let (a, b, alice, bob, _room) = two_servers_sharing_a_room(&ca).await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let alice_id = a.user("alice");
    let (status, v) = ha
        .call(
            "PUT",
            &format!("/_matrix/client/v3/presence/{alice_id}/status"),
            Some(&alice),
            Some(r#"{"presence": "unavailable", "status_msg": "in the summit"}"#),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, v) = hb
            .call(
                "GET",
                &format!("/_matrix/client/v3/presence/{alice_id}/status"),
                Some(&bob),
                None,
            )
            .await;
        if status == 200 && v["presence"] == "unavailable" {
            assert_eq!(v["status_msg"], "in the summit", "{v}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status} {v}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A PDU from `sender` (of `origin`) in `room` on top of A's newest event,
/// signed with `key` as `origin`; its event id.
async fn pdu_from(
    ha: &Http,
    alice: &str,
    room: &str,
    sender: &str,
    origin: &str,
    key: &Ed25519KeyPair,
    body: &str,
) -> (ruma::CanonicalJsonObject, String) {
    pdu_after(ha, alice, room, sender, origin, key, body, None).await
}

/// [`pdu_from`] on top of `prev` (an event id) instead of A's newest event.
#[allow(clippy::too_many_arguments)]
async fn pdu_after(
    ha: &Http,
    alice: &str,
    room: &str,
    sender: &str,
    origin: &str,
    key: &Ed25519KeyPair,
    body: &str,
    prev: Option<&str>,
) -> (ruma::CanonicalJsonObject, String) {
    let draft = Crafted {
        kind: "m.room.message",
        state_key: None,
        content: json!({"msgtype": "m.text", "body": body}),
        prev: prev.map(|p| vec![p.to_owned()]),
        origin_server_ts: 1_700_000_000_000,
    };
    craft_pdu(ha, alice, room, sender, (origin, key), draft).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_denied_by_the_room_acl_has_its_events_refused() {
    let ca = TestCa::new();
    let (a, b, alice, _bob, room) = two_servers_sharing_a_room(&ca).await;
    let ha = Http::new(&a.server.url);
    let bob = b.user("bob");
    let (ok, ok_id) = pdu_from(
        &ha,
        &alice,
        &room,
        &bob,
        &b.name,
        &b.signing_key(),
        "allowed",
    )
    .await;
    let (status, v) = send_as(&ca, &a, &b, "acl-1", &[&ok]).await;
    assert_eq!((status, &v["pdus"][&ok_id]), (200, &json!({})), "{v}");
    let (status, v) = ha
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.server_acl/"),
            Some(&alice),
            // Both servers are named by IP literals (ACLs ignore ports): the
            // ACL shuts out IP literals, and so B (A's own events are not
            // checked against it).
            Some(&json!({"allow": ["*"], "allow_ip_literals": false}).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (denied, denied_id) = pdu_from(
        &ha,
        &alice,
        &room,
        &bob,
        &b.name,
        &b.signing_key(),
        "denied",
    )
    .await;
    let (status, v) = send_as(&ca, &a, &b, "acl-2", &[&denied]).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["pdus"][&denied_id]["error"]
            .as_str()
            .is_some_and(|e| e.contains("ACL")),
        "{v}"
    );
    assert_eq!(ha.texts(&alice, &room).await, ["allowed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pdu_with_a_forged_signature_is_refused_and_one_with_a_broken_hash_is_kept_redacted() {
    let ca = TestCa::new();
    let (a, b, alice, _bob, room) = two_servers_sharing_a_room(&ca).await;
    let ha = Http::new(&a.server.url);
    let b_key = b.signing_key();
    let bob = b.user("bob");
    // Signed with B's key id but another key.
    let forger = new_key(b_key.version());
    let (forged, forged_id) = pdu_from(&ha, &alice, &room, &bob, &b.name, &forger, "forged").await;
    // Signed by B, then its content changed: the signature (over the
    // redacted form) still holds, the content hash does not.
    let (mut tampered, tampered_id) =
        pdu_from(&ha, &alice, &room, &bob, &b.name, &b_key, "original").await;
    tampered.insert(
        "content".into(),
        serde_json::from_value(json!({"msgtype": "m.text", "body": "tampered"})).unwrap(),
    );
    let mut txn = ruma::api::federation::transactions::send_transaction_message::v1::Request::new(
        "forgery-1".into(),
        ServerName::parse(&b.name).unwrap(),
        ruma::MilliSecondsSinceUnixEpoch::now(),
    );
    txn.pdus = vec![
        serde_json::value::to_raw_value(&forged).unwrap(),
        serde_json::value::to_raw_value(&tampered).unwrap(),
    ];
    let input = ServerSignaturesInput::new(
        ServerName::parse(&b.name).unwrap(),
        ServerName::parse(&a.name).unwrap(),
        &b_key,
    );
    let request = txn
        .try_into_http_request::<Vec<u8>>(&format!("https://{}", a.name), input, ())
        .unwrap();
    let (status, v) = federation_request(&ca.ca_file, a.fed_port, request).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["pdus"][&forged_id]["error"].is_string(), "{v}");
    assert_eq!(v["pdus"][&tampered_id], json!({}), "{v}");
    // Neither text shows; the tampered event is there, redacted.
    let got = ha.texts(&alice, &room).await;
    assert!(
        !got.iter()
            .any(|t| t == "forged" || t == "tampered" || t == "original"),
        "{got:?}"
    );
    let (status, v) = ha
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/event/{tampered_id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!((status, &v["content"]), (200, &json!({})), "{v}");
    let (status, _) = ha
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/event/{forged_id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

/// The room's power levels as `token`'s server holds them now.
async fn power_levels(http: &Http, token: &str, room: &str) -> Value {
    let (status, v) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Waits until the room's power levels, as `token`'s server holds them,
/// have `ban` at `level`.
async fn wait_for_ban_level(http: &Http, token: &str, room: &str, level: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let v = power_levels(http, token, room).await;
        if v["ban"] == level {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_state_changes_are_resolved_by_state_resolution_not_by_arrival_order() {
    concurrent_state_changes_resolve_in_room_version("11").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_state_changes_are_resolved_in_room_version_12_too() {
    concurrent_state_changes_resolve_in_room_version("12").await;
}

async fn concurrent_state_changes_resolve_in_room_version(version: &str) {
    let ca = TestCa::new();
    let create = json!({"preset": "public_chat", "room_version": version}).to_string();
    let (a, b, alice, bob_token, room) =
        two_servers_sharing_a_room_made_with(&ca, "", &create).await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let bob = b.user("bob");
    // Carol, of A, and Bob, of B, have the same power (the creator of a
    // room of version 12 outranks everyone, so she is not the one here).
    let carol_token = ha.register("carol").await;
    let carol = a.user("carol");
    let (status, v) = ha
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&carol_token),
            Some("{}"),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let levels = |ban: u64| {
        let mut users = json!({carol.clone(): 100, bob.clone(): 100});
        if version != "12" {
            users[a.user("alice")] = json!(100);
        }
        json!({"users": users, "users_default": 0,
               "events_default": 0, "state_default": 50, "ban": ban, "kick": 50,
               "redact": 50, "invite": 0, "events": {}})
    };
    let (_, latest) = ha
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1"),
            Some(&alice),
            None,
        )
        .await;
    let before_bob_had_power = latest["chunk"][0]["event_id"].as_str().unwrap().to_owned();
    let (status, v) = ha
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            Some(&alice),
            Some(&levels(50).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    wait_for_ban_level(&hb, &bob_token, &room, 50).await;
    // A change on top of the room as it was before Bob had the power to
    // make it is refused, although its auth events (today's) allow it: an
    // event is checked against the state before it.
    let (early, early_id) = craft_pdu(
        &ha,
        &alice,
        &room,
        &bob,
        (&b.name, &b.signing_key()),
        Crafted {
            kind: "m.room.power_levels",
            state_key: Some(""),
            content: levels(53),
            prev: Some(vec![before_bob_had_power]),
            origin_server_ts: ruma::MilliSecondsSinceUnixEpoch::now().get().into(),
        },
    )
    .await;
    let (status, v) = send_as(&ca, &a, &b, "fork-0", &[&early]).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["pdus"][&early_id]["error"]
            .as_str()
            .is_some_and(|e| e.contains("state before it")),
        "{v}"
    );
    assert_eq!(power_levels(&ha, &alice, &room).await["ban"], 50);
    // Bob's server changes the power levels on top of the room as it is
    // now, an hour in the past by its clock ...
    let hour_ago = ruma::MilliSecondsSinceUnixEpoch::now().get() - ruma::UInt::from(3_600_000u32);
    let (bobs, bobs_id) = craft_pdu(
        &ha,
        &alice,
        &room,
        &bob,
        (&b.name, &b.signing_key()),
        Crafted {
            kind: "m.room.power_levels",
            state_key: Some(""),
            content: levels(52),
            prev: None,
            origin_server_ts: hour_ago.into(),
        },
    )
    .await;
    // ... while Carol changes them too: the two changes fork the room.
    let (status, v) = ha
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            Some(&carol_token),
            Some(&levels(51).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let carols_id = v["event_id"].as_str().unwrap().to_owned();
    // Bob's change reaches A after Carol's. Both senders have the same
    // power, so the older change is applied first and the newer one wins
    // (reverse topological power ordering): Carol's stays current although
    // Bob's arrived last.
    let (status, v) = send_as(&ca, &a, &b, "fork-1", &[&bobs]).await;
    assert_eq!((status, &v["pdus"][&bobs_id]), (200, &json!({})), "{v}");
    assert_eq!(power_levels(&ha, &alice, &room).await["ban"], 51);
    let (status, v) = ha
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/event/{bobs_id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!((status, &v["content"]["ban"]), (200, &json!(52)), "{v}");
    // An event that joins the two forks sees the resolved state, and so
    // does the room after it.
    let (merge, merge_id) = craft_pdu(
        &ha,
        &alice,
        &room,
        &bob,
        (&b.name, &b.signing_key()),
        Crafted {
            kind: "m.room.message",
            state_key: None,
            content: json!({"msgtype": "m.text", "body": "after the fork"}),
            prev: Some(vec![carols_id, bobs_id]),
            origin_server_ts: ruma::MilliSecondsSinceUnixEpoch::now().get().into(),
        },
    )
    .await;
    let (status, v) = send_as(&ca, &a, &b, "fork-2", &[&merge]).await;
    assert_eq!((status, &v["pdus"][&merge_id]), (200, &json!({})), "{v}");
    assert_eq!(power_levels(&ha, &alice, &room).await["ban"], 51);
    assert!(ha
        .texts(&alice, &room)
        .await
        .iter()
        .any(|t| t == "after the fork"));
    // Bob's own server never saw his forked change and holds Carol's: the
    // two servers agree.
    wait_for_ban_level(&hb, &bob_token, &room, 51).await;
    // And the choice survives a restart of A (it is stored, not only cached).
    let mut a = a;
    a.server.stop();
    a.server.spawn().await;
    let ha = Http::new(&a.server.url);
    assert_eq!(power_levels(&ha, &alice, &room).await["ban"], 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_who_joins_from_another_server_reads_what_was_said_before() {
    let ca = TestCa::new();
    let ((pa, na), (pb, nb)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let a = FederatedServer::start(&ca, pa, &[&nb], "").await;
    let b = FederatedServer::start(&ca, pb, &[&na], "").await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let alice = ha.register("alice").await;
    let bob = hb.register("bob").await;
    // A public room's history is shared with its members, whenever they
    // joined.
    let room = ha.create_public_room(&alice).await;
    ha.send_text(&alice, &room, "h1", "said before Bob came")
        .await;
    let (status, v) = ha
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            Some(&alice),
            Some(r#"{"name": "Old name"}"#),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    ha.send_text(&alice, &room, "h2", "and this too").await;
    let (status, v) = ha
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            Some(&alice),
            Some(r#"{"name": "New name"}"#),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = hb
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{room}?via={na}"),
            Some(&bob),
            Some("{}"),
        )
        .await;
    assert_eq!(status, 200, "join over federation: {v}");
    assert_eq!(
        hb.texts(&bob, &room).await,
        ["said before Bob came", "and this too"]
    );
    // The history's older name is history: the room is called what A says.
    let (status, v) = hb
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!((status, &v["name"]), (200, &json!("New name")), "{v}");
    hb.send_text(&bob, &room, "b1", "hello from B").await;
    ha.wait_for_texts(
        &alice,
        &room,
        &["said before Bob came", "and this too", "hello from B"],
        10,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_that_asks_to_omit_members_gets_the_state_without_them_and_the_servers_in_the_room()
{
    use ruma::api::federation::membership::{create_join_event, prepare_join_event};
    let ca = TestCa::new();
    let ((pa, na), (pb, nb)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let a = FederatedServer::start(&ca, pa, &[&nb], "").await;
    let b = FederatedServer::start(&ca, pb, &[&na], "").await;
    let ha = Http::new(&a.server.url);
    let alice = ha.register("alice").await;
    let room = ha.create_public_room(&alice).await;
    for i in 0..8 {
        let token = ha.register(&format!("member{i}")).await;
        let (status, v) = ha
            .call(
                "POST",
                &format!("/_matrix/client/v3/join/{room}"),
                Some(&token),
                Some("{}"),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    let room_id = ruma::OwnedRoomId::try_from(room.as_str()).unwrap();
    let bob = ruma::OwnedUserId::try_from(b.user("bob")).unwrap();
    for omit in [false, true] {
        // Each pass a join of its own, as B would make it.
        let mut ask = prepare_join_event::v1::Request::new(room_id.clone(), bob.clone());
        ask.ver = vec![ruma::RoomVersionId::V11];
        let (status, made) = signed_as(&ca, &a, &b, ask).await;
        assert_eq!(status, 200, "{made}");
        let mut join = made["event"].clone();
        join["origin_server_ts"] = json!(ruma::MilliSecondsSinceUnixEpoch::now().get());
        join["content"]["displayname"] = json!(format!("bob {omit}"));
        let mut object: ruma::CanonicalJsonObject = serde_json::from_value(join).unwrap();
        let rules = ruma::RoomVersionId::V11.rules().unwrap();
        ruma::signatures::hash_and_sign_event(
            &b.name,
            &b.signing_key(),
            &mut object,
            &rules.redaction,
        )
        .unwrap();
        let id = format!(
            "${}",
            ruma::signatures::reference_hash(&object, &rules).unwrap()
        );
        let mut send = create_join_event::v2::Request::new(
            room_id.clone(),
            ruma::OwnedEventId::try_from(id).unwrap(),
            serde_json::value::to_raw_value(&object).unwrap(),
        );
        send.omit_members = omit;
        let (status, answer) = signed_as(&ca, &a, &b, send).await;
        assert_eq!(status, 200, "{answer}");
        let members = answer["state"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.member")
            .count();
        assert_eq!(answer["members_omitted"], omit, "{answer}");
        if omit {
            // Bob's own membership (he joined in the first pass) and five
            // heroes, of ten.
            assert_eq!(members, 6, "{answer}");
            let mut servers = vec![a.name.clone(), b.name.clone()];
            servers.sort();
            assert_eq!(answer["servers_in_room"], json!(servers));
        } else {
            // Alice and eight members (the state before Bob's first join).
            assert_eq!(members, 9, "{answer}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_of_the_other_server_is_invited_and_joins_by_the_invite() {
    let ca = TestCa::new();
    let ((pa, na), (pb, nb)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let a = FederatedServer::start(&ca, pa, &[&nb], "").await;
    let b = FederatedServer::start(&ca, pb, &[&na], "").await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let alice = ha.register("alice").await;
    let bob = hb.register("bob").await;
    // A private room, bob invited at creation, named.
    let (status, v) = ha
        .call(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            Some(&json!({"preset": "private_chat", "name": "Summit", "invite": [b.user("bob")], "is_direct": true}).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let room = v["room_id"].as_str().unwrap().to_owned();
    // Bob's /sync on B shows the invite, with the room's name and who asks.
    let (status, v) = hb
        .call("GET", "/_matrix/client/v3/sync", Some(&bob), None)
        .await;
    assert_eq!(status, 200, "{v}");
    let events = v["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no invite in {v}"))
        .clone();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Summit"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == b.user("bob")
            && e["content"]["membership"] == "invite"
            && e["sender"] == a.user("alice")),
        "{events:?}"
    );
    // Joined with no server named: the invite says where the room is.
    let (status, v) = hb
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            Some(&bob),
            Some("{}"),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    hb.send_text(&bob, &room, "b1", "accepted").await;
    ha.wait_for_texts(&alice, &room, &["accepted"], 10).await;
    // And the other way: bob invites carol of A into a room on B.
    let carol = ha.register("carol").await;
    let room_b = hb.create_room(&bob).await;
    let (status, v) = hb
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_b}/invite"),
            Some(&bob),
            Some(&json!({"user_id": a.user("carol")}).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = ha
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{room_b}"),
            Some(&carol),
            Some("{}"),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    ha.send_text(&carol, &room_b, "c1", "carol here").await;
    hb.wait_for_texts(&bob, &room_b, &["carol here"], 10).await;
    // An invite declined into a room A is not in: the leave goes through
    // the inviting server.
    let dave = ha.register("dave").await;
    let room_b = hb.create_room(&bob).await;
    let (status, v) = hb
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_b}/invite"),
            Some(&bob),
            Some(&json!({"user_id": a.user("dave")}).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = ha
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_b}/leave"),
            Some(&dave),
            Some("{}"),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = hb
        .call(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{room_b}/state/m.room.member/{}",
                a.user("dave")
            ),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!((status, &v["membership"]), (200, &json!("leave")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_missing_before_a_received_one_are_fetched_from_its_sender() {
    let ca = TestCa::new();
    let (a, b, alice, _bob, room) = two_servers_sharing_a_room(&ca).await;
    let ha = Http::new(&a.server.url);
    let alice_id = a.user("alice");
    let a_key = a.signing_key();
    // Two events of alice's, the second after the first, signed by A; B
    // is given both (as A would send them) ...
    let (e1, e1_id) = pdu_from(&ha, &alice, &room, &alice_id, &a.name, &a_key, "first").await;
    let (e2, e2_id) = pdu_after(
        &ha,
        &alice,
        &room,
        &alice_id,
        &a.name,
        &a_key,
        "second",
        Some(&e1_id),
    )
    .await;
    let (status, v) = send_as(&ca, &b, &a, "gap-1", &[&e1, &e2]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["pdus"][&e1_id], &v["pdus"][&e2_id]),
        (&json!({}), &json!({})),
        "{v}"
    );
    // ... and A, which never had them, is sent only the second: it asks B
    // for what lies between (get_missing_events) and takes both, in order.
    let (status, v) = send_as(&ca, &a, &b, "gap-2", &[&e2]).await;
    assert_eq!((status, &v["pdus"][&e2_id]), (200, &json!({})), "{v}");
    assert_eq!(ha.texts(&alice, &room).await, ["first", "second"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_is_joined_by_its_alias_on_the_other_server() {
    let ca = TestCa::new();
    let ((pa, na), (pb, nb)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let a = FederatedServer::start(&ca, pa, &[&nb], "").await;
    let b = FederatedServer::start(&ca, pb, &[&na], "").await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let alice = ha.register("alice").await;
    let bob = hb.register("bob").await;
    let (status, v) = ha
        .call(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            Some(r#"{"preset": "public_chat", "room_alias_name": "summit"}"#),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let room = v["room_id"].as_str().unwrap().to_owned();
    let alias = format!("%23summit:{na}");
    let (status, v) = hb
        .call(
            "GET",
            &format!("/_matrix/client/v3/directory/room/{alias}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!((status, &v["room_id"]), (200, &json!(room)), "{v}");
    assert!(v["servers"].as_array().unwrap().contains(&json!(na)), "{v}");
    let (status, v) = hb
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{alias}"),
            Some(&bob),
            Some("{}"),
        )
        .await;
    assert_eq!((status, &v["room_id"]), (200, &json!(room)), "{v}");
    hb.send_text(&bob, &room, "b1", "joined by alias").await;
    ha.wait_for_texts(&alice, &room, &["joined by alias"], 10)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_knock_from_the_other_server_is_seen_answered_with_an_invite_and_joined_both_ways() {
    let ca = TestCa::new();
    let ((pa, na), (pb, nb)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let a = FederatedServer::start(&ca, pa, &[&nb], "").await;
    let b = FederatedServer::start(&ca, pb, &[&na], "").await;
    let alice = Side::of(&a, "alice").await;
    let bob = Side::of(&b, "bob").await;
    let carol = Side::of(&a, "carol").await;
    let dave = Side::of(&b, "dave").await;
    // B's users knock on A's room, then A's on B's.
    knock_invite_join(&alice, &bob, Some(&dave), "11").await;
    knock_invite_join(&bob, &alice, Some(&carol), "11").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_knock_on_a_room_whose_join_rule_is_not_knock_is_refused_with_403() {
    let ca = TestCa::new();
    let ((pa, na), (pb, nb)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let a = FederatedServer::start(&ca, pa, &[&nb], "").await;
    let b = FederatedServer::start(&ca, pb, &[&na], "").await;
    let alice = Side::of(&a, "alice").await;
    let bob = Side::of(&b, "bob").await;
    for (host, guest) in [(&alice, &bob), (&bob, &alice)] {
        let public = host.http.create_public_room(&host.token).await;
        let private = host.http.create_room(&host.token).await;
        for room in [&public, &private] {
            let (status, v) = guest.knock(room, &host.name).await;
            assert_eq!(
                (status, v["errcode"].as_str()),
                (403, Some("M_FORBIDDEN")),
                "{v}"
            );
            assert_eq!(host.membership_of(room, &guest.user).await, Value::Null);
        }
        // Nothing is kept on the knocker's side.
        let (status, v) = guest
            .http
            .call("GET", "/_matrix/client/v3/sync", Some(&guest.token), None)
            .await;
        assert_eq!(status, 200, "{v}");
        assert!(v["rooms"]["knock"][&public].is_null(), "{v}");
        assert!(v["rooms"]["knock"][&private].is_null(), "{v}");
    }
}

/// A `make_knock` for `user` in `room` asked of `to` as `from` would ask it,
/// offering `versions`: the status and answer.
async fn make_knock_as(
    ca: &TestCa,
    to: &FederatedServer,
    from: &FederatedServer,
    room: &str,
    user: &str,
    versions: &[&str],
) -> (u16, Value) {
    let mut ask = ruma::api::federation::membership::prepare_knock_event::v1::Request::new(
        room.try_into().unwrap(),
        user.try_into().unwrap(),
    );
    ask.ver = versions.iter().map(|v| (*v).try_into().unwrap()).collect();
    signed_as(ca, to, from, ask).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn make_knock_answers_a_template_only_for_the_askers_users_in_a_version_it_speaks_past_the_acl(
) {
    let ca = TestCa::new();
    let ((pa, na), (pb, nb)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let a = FederatedServer::start(&ca, pa, &[&nb], "").await;
    let b = FederatedServer::start(&ca, pb, &[&na], "").await;
    let alice = Side::of(&a, "alice").await;
    let room = alice.http.create_knock_room(&alice.token, "11").await;
    let bob = b.user("bob");
    let (status, v) = make_knock_as(&ca, &a, &b, &room, &bob, &["10", "11"]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            &v["room_version"],
            &v["event"]["type"],
            &v["event"]["state_key"],
            &v["event"]["content"]["membership"]
        ),
        (
            &json!("11"),
            &json!("m.room.member"),
            &json!(bob),
            &json!("knock")
        ),
        "{v}"
    );
    let (status, v) = make_knock_as(&ca, &a, &b, &room, &bob, &["7", "10"]).await;
    assert_eq!(
        (status, v["errcode"].as_str(), &v["room_version"]),
        (400, Some("M_INCOMPATIBLE_ROOM_VERSION"), &json!("11")),
        "{v}"
    );
    // B asks for a user of A's.
    let (status, v) = make_knock_as(&ca, &a, &b, &room, &a.user("carol"), &["11"]).await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{v}"
    );
    // A room A does not have.
    let (status, v) = make_knock_as(&ca, &a, &b, &format!("!nowhere:{na}"), &bob, &["11"]).await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{v}"
    );
    // A server the room's ACL denies (IP literals, so B) is refused, as
    // for joins.
    let (status, v) = alice
        .http
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.server_acl/"),
            Some(&alice.token),
            Some(&json!({"allow": ["*"], "allow_ip_literals": false}).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = make_knock_as(&ca, &a, &b, &room, &bob, &["11"]).await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{v}"
    );
}

/// Two servers federating, alice on A (whose `/metrics` answers to
/// `scrape`), bob on B: their servers and tokens.
async fn two_servers_for_media(ca: &TestCa) -> (FederatedServer, FederatedServer, String, String) {
    let ((pa, na), (pb, nb)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let a = FederatedServer::start(ca, pa, &[&nb], "metrics_token = \"scrape\"").await;
    let b = FederatedServer::start(ca, pb, &[&na], "").await;
    let alice = Http::new(&a.server.url).register("alice").await;
    let bob = Http::new(&b.server.url).register("bob").await;
    (a, b, alice, bob)
}

/// The `{server}/{mediaId}` of an `mxc://` URI.
fn mxc_path(mxc: &str) -> &str {
    mxc.strip_prefix("mxc://").unwrap()
}

/// How many `GET`s of `route` the server behind `http` answered `200`, by
/// its `/metrics`.
async fn served_200(http: &Http, route: &str) -> u64 {
    let (status, metrics) = http.call("GET", "/metrics", Some("scrape"), None).await;
    assert_eq!(status, 200);
    let line =
        format!("hotline_http_requests_total{{method=\"GET\",path=\"{route}\",status=\"200\"}} ");
    metrics
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |n| n.parse().unwrap())
}

const FED_DOWNLOAD: &str = "/_matrix/federation/v1/media/download/{media_id}";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_media_is_fetched_once_over_federation_then_served_from_the_cache() {
    let ca = TestCa::new();
    let (mut a, b, alice, bob) = two_servers_for_media(&ca).await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let notes = ha
        .upload(&alice, bytes.clone(), "application/pdf", "minutes.pdf")
        .await;
    let never_fetched = ha
        .upload(&alice, b"not asked for".to_vec(), "text/plain", "later.txt")
        .await;
    assert!(notes.starts_with(&format!("mxc://{}/", a.name)), "{notes}");
    // Bob asks B five times at once: B fetches it from A once.
    let download = format!("/_matrix/client/v1/media/download/{}", mxc_path(&notes));
    let answers =
        futures_util::future::join_all((0..5).map(|_| hb.get_bytes(&download, &bob))).await;
    for got in answers {
        assert_eq!(got.status, 200, "{:?}", got.json());
        assert!(got.body == bytes, "the bytes as uploaded");
        assert_eq!(got.content_type.as_deref(), Some("application/pdf"));
        let disposition = got.disposition.unwrap();
        assert!(disposition.contains("minutes.pdf"), "{disposition}");
    }
    assert_eq!(served_200(&ha, FED_DOWNLOAD).await, 1, "fetched once");
    // The name in the path wins, as for local media.
    let got = hb.get_bytes(&format!("{download}/renamed.pdf"), &bob).await;
    assert_eq!(got.status, 200);
    assert!(got.disposition.unwrap().contains("renamed.pdf"));
    assert_eq!(served_200(&ha, FED_DOWNLOAD).await, 1, "from B's cache");
    // With A gone, B still serves what it keeps, and says A is out of
    // reach for what it does not.
    a.server.stop();
    let got = hb.get_bytes(&download, &bob).await;
    assert_eq!(got.status, 200, "{:?}", got.json());
    assert!(got.body == bytes);
    let got = hb
        .get_bytes(
            &format!(
                "/_matrix/client/v1/media/download/{}",
                mxc_path(&never_fetched)
            ),
            &bob,
        )
        .await;
    assert_eq!(
        (got.status, got.json()["errcode"].as_str()),
        (502, Some("M_UNKNOWN")),
        "{:?}",
        got.json()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thumbnail_of_remote_media_is_made_from_the_original_kept_here() {
    use ruma::api::federation::authenticated_media::{get_content_thumbnail, FileOrLocation};
    use ruma::api::IncomingResponse;
    let ca = TestCa::new();
    let (a, b, alice, bob) = two_servers_for_media(&ca).await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let photo = ha
        .upload(&alice, common::png(640, 480), "image/png", "photo.png")
        .await;
    let got = hb
        .get_bytes(
            &format!(
                "/_matrix/client/v1/media/thumbnail/{}?width=96&height=96&method=scale",
                mxc_path(&photo)
            ),
            &bob,
        )
        .await;
    assert_eq!(got.status, 200, "{:?}", got.json());
    assert_eq!(got.content_type.as_deref(), Some("image/png"));
    let thumb = image::load_from_memory(&got.body).unwrap();
    assert_eq!(
        (thumb.width(), thumb.height()),
        (96, 72),
        "scaled to fit 96×96"
    );
    // B asked A for the original, not for a thumbnail.
    assert_eq!(served_200(&ha, FED_DOWNLOAD).await, 1);
    assert_eq!(
        served_200(&ha, "/_matrix/federation/v1/media/thumbnail/{media_id}").await,
        0
    );
    // A serves a peer its thumbnails too: multipart, JSON metadata, then
    // the image inline.
    let media_id = photo.rsplit('/').next().unwrap().to_owned();
    let mut request = get_content_thumbnail::v1::Request::new(media_id, 32u32.into(), 32u32.into());
    request.method = Some(ruma::media::Method::Crop);
    let key = b.signing_key();
    let input = ServerSignaturesInput::new(
        ServerName::parse(&b.name).unwrap(),
        ServerName::parse(&a.name).unwrap(),
        &key,
    );
    let http = request
        .try_into_http_request::<Vec<u8>>(&format!("https://{}", a.name), input, ())
        .unwrap();
    let answer = common::federation_request_raw(&ca.ca_file, a.fed_port, http).await;
    assert_eq!(answer.status(), 200);
    assert!(answer.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("multipart/mixed; boundary="));
    let answer = get_content_thumbnail::v1::Response::try_from_http_response(answer).unwrap();
    let FileOrLocation::File(content) = answer.content else {
        panic!("a Location, not the thumbnail");
    };
    assert_eq!(content.content_type.as_deref(), Some("image/png"));
    let disposition = content.content_disposition.unwrap().to_string();
    assert!(disposition.starts_with("inline"), "{disposition}");
    let thumb = image::load_from_memory(&content.file).unwrap();
    assert_eq!(
        (thumb.width(), thumb.height()),
        (32, 32),
        "cropped to 32×32"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_remote_media_is_404_not_found() {
    let ca = TestCa::new();
    let (a, b, _alice, bob) = two_servers_for_media(&ca).await;
    let hb = Http::new(&b.server.url);
    for path in [
        format!("/_matrix/client/v1/media/download/{}/NoSuchMedia", a.name),
        format!(
            "/_matrix/client/v1/media/download/{}/NoSuchMedia/x.txt",
            a.name
        ),
        format!(
            "/_matrix/client/v1/media/thumbnail/{}/NoSuchMedia?width=32&height=32",
            a.name
        ),
    ] {
        let got = hb.get_bytes(&path, &bob).await;
        assert_eq!(
            (got.status, got.json()["errcode"].as_str()),
            (404, Some("M_NOT_FOUND")),
            "{path}: {:?}",
            got.json()
        );
    }
    // A peer asking A directly gets the same, signed or not.
    let request = ruma::api::federation::authenticated_media::get_content::v1::Request::new(
        "NoSuchMedia".into(),
    );
    let key = b.signing_key();
    let input = ServerSignaturesInput::new(
        ServerName::parse(&b.name).unwrap(),
        ServerName::parse(&a.name).unwrap(),
        &key,
    );
    let http = request
        .try_into_http_request::<Vec<u8>>(&format!("https://{}", a.name), input, ())
        .unwrap();
    let (status, v) = federation_request(&ca.ca_file, a.fed_port, http).await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn media_of_a_server_not_on_the_allow_list_is_refused() {
    let ca = TestCa::new();
    let ((pb, nb), (pc, nc)) = (FederatedServer::reserve(), FederatedServer::reserve());
    // C would serve B; B federates with nobody.
    let b = FederatedServer::start(&ca, pb, &[], "").await;
    let c = FederatedServer::start(&ca, pc, &[&nb], "").await;
    let (hb, hc) = (Http::new(&b.server.url), Http::new(&c.server.url));
    let bob = hb.register("bob").await;
    let carol = hc.register("carol").await;
    let file = hc
        .upload(&carol, b"for peers only".to_vec(), "text/plain", "c.txt")
        .await;
    assert!(file.starts_with(&format!("mxc://{nc}/")), "{file}");
    for path in [
        format!("/_matrix/client/v1/media/download/{}", mxc_path(&file)),
        format!(
            "/_matrix/client/v1/media/thumbnail/{}?width=32&height=32",
            mxc_path(&file)
        ),
    ] {
        let got = hb.get_bytes(&path, &bob).await;
        assert_eq!(
            (got.status, got.json()["errcode"].as_str()),
            (404, Some("M_NOT_FOUND")),
            "{path}: {:?}",
            got.json()
        );
        let error = got.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains("not a federation peer"), "{error}");
    }
    // And B serves C none of its own media: C is not on B's list (403,
    // as on every federation route).
    let own = hb
        .upload(&bob, b"B's".to_vec(), "text/plain", "b.txt")
        .await;
    let request = ruma::api::federation::authenticated_media::get_content::v1::Request::new(
        own.rsplit('/').next().unwrap().into(),
    );
    let key = c.signing_key();
    let input = ServerSignaturesInput::new(
        ServerName::parse(&nc).unwrap(),
        ServerName::parse(&nb).unwrap(),
        &key,
    );
    let http = request
        .try_into_http_request::<Vec<u8>>(&format!("https://{nb}"), input, ())
        .unwrap();
    let (status, v) = federation_request(&ca.ca_file, pb, http).await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_paging_back_past_what_the_join_brought_gets_the_rest_from_the_rooms_server() {
    let ca = TestCa::new();
    let ((pa, na), (pb, nb)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let mut a = FederatedServer::start(&ca, pa, &[&nb], "").await;
    let mut b = FederatedServer::start(&ca, pb, &[&na], "").await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let alice = ha.register("alice").await;
    let bob = hb.register("bob").await;
    let room = ha.create_public_room(&alice).await;
    // More than a join brings with it (one page of 50 events). Alice
    // renames herself halfway: the older texts are authorized by a
    // membership of hers that is no longer the room's state.
    let said: Vec<String> = (0..130).map(|i| format!("text {i}")).collect();
    for (i, text) in said.iter().enumerate() {
        if i == 40 {
            set_displayname(&ha, &alice, &a.user("alice"), "Alice A.").await;
        }
        ha.send_text(&alice, &room, &format!("t{i}"), text).await;
    }
    let (status, v) = hb
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{room}?via={na}"),
            Some(&bob),
            Some("{}"),
        )
        .await;
    assert_eq!(status, 200, "join over federation: {v}");
    // Paging back fetches the rest from A as it goes: every text once, in
    // the order it was said.
    assert_eq!(hb.texts_paging_back(&bob, &room, 25).await, said);
    // Kept: with A gone and B restarted, B reads it all from its own store.
    a.server.stop();
    b.server.stop();
    b.server.spawn().await;
    let hb = Http::new(&b.server.url);
    assert_eq!(hb.texts_paging_back(&bob, &room, 40).await, said);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_the_rooms_state_no_longer_allows_is_kept_but_never_shown_or_built_on() {
    let ca = TestCa::new();
    let (a, b, alice, _bob_token, room) = two_servers_sharing_a_room(&ca).await;
    let ha = Http::new(&a.server.url);
    let bob = b.user("bob");
    // Bob's server makes a text while anyone may still speak ...
    let (late, late_id) = pdu_from(
        &ha,
        &alice,
        &room,
        &bob,
        &b.name,
        &b.signing_key(),
        "said before the room was muted",
    )
    .await;
    // ... and Alice mutes the room before it arrives.
    let (status, v) = ha
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            Some(&alice),
            Some(
                &json!({"users": {a.user("alice"): 100}, "users_default": 0,
                        "events_default": 50, "state_default": 50, "ban": 50, "kick": 50,
                        "redact": 50, "invite": 0, "events": {}})
                .to_string(),
            ),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let muted_id = v["event_id"].as_str().unwrap().to_owned();
    // The state before the text allowed it, so it is accepted (soft
    // failure, not rejection) ...
    let (status, v) = send_as(&ca, &a, &b, "late-1", &[&late]).await;
    assert_eq!((status, &v["pdus"][&late_id]), (200, &json!({})), "{v}");
    // ... but no reader sees it,
    let (status, v) = ha
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/event/{late_id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 404, "{v}");
    assert!(ha.texts(&alice, &room).await.is_empty());
    // the next event made here does not build on it,
    let next_id = ha.send_text(&alice, &room, "n1", "still here").await;
    let (status, next) = signed_as(
        &ca,
        &a,
        &b,
        ruma::api::federation::event::get_event::v1::Request::new(
            ruma::OwnedEventId::try_from(next_id.as_str()).unwrap(),
        ),
    )
    .await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(next["pdus"][0]["prev_events"], json!([muted_id]), "{next}");
    // and it is kept: A serves it to the room's servers, and takes it
    // again as known.
    let (status, kept) = signed_as(
        &ca,
        &a,
        &b,
        ruma::api::federation::event::get_event::v1::Request::new(
            ruma::OwnedEventId::try_from(late_id.as_str()).unwrap(),
        ),
    )
    .await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(
        kept["pdus"][0]["content"]["body"],
        "said before the room was muted"
    );
    let (status, v) = send_as(&ca, &a, &b, "late-2", &[&late]).await;
    assert_eq!((status, &v["pdus"][&late_id]), (200, &json!({})), "{v}");
    assert_eq!(ha.texts(&alice, &room).await, ["still here"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_cross_signing_keys_are_queued_for_the_servers_sharing_a_room_as_a_signing_key_update()
{
    let ca = TestCa::new();
    let (mut a, b, alice, bob_token, room) = two_servers_sharing_a_room(&ca).await;
    let hb = Http::new(&b.server.url);
    let bob = b.user("bob");
    // A is down, so what B sends it stays queued where the test can read it.
    a.server.stop();
    let master = json!({"user_id": bob, "usage": ["master"],
                        "keys": {"ed25519:bobsmasterkey": "bobsmasterkey"}});
    let (status, v) = hb
        .call(
            "POST",
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(&bob_token),
            Some(&json!({"master_key": master}).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let queued = b.server.queued_edus(&a.name);
    let updates: Vec<&Value> = queued
        .iter()
        .filter(|e| e["edu_type"] == "m.signing_key_update")
        .collect();
    assert_eq!(updates.len(), 1, "{queued:?}");
    assert_eq!(updates[0]["content"]["user_id"], json!(bob));
    assert_eq!(updates[0]["content"]["master_key"], master);
    assert!(updates[0]["content"].get("user_signing_key").is_none());
    // And A hears of it when it is back (and heard from: a text from A
    // tells B it is up).
    a.server.spawn().await;
    Http::new(&a.server.url)
        .send_text(&alice, &room, "back", "back again")
        .await;
    for _ in 0..150 {
        if b.server.queued_edus(&a.name).is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("B never delivered its queued EDUs to A");
}
