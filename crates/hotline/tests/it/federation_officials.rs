//! Officials across governments' servers: each government's directory of
//! attestations reaches the other's clients over signed federation, checked
//! against the issuing server's own key, pinned on first use; a revocation
//! there reaches clients here within seconds; the reach rule and the name
//! guard hold for the other server's users and officials.

use crate::common;

use common::{
    craft_pdu, send_as, signed_as, two_servers_sharing_a_room, within, Crafted, FederatedServer,
    Http, TestCa,
};
use serde_json::{json, Value};

/// A master key as a client would upload it (32 bytes, unpadded base64).
const MASTER: &str = "bWFzdGVyIGtleSBvZiBwZXRyYSBub3ZhaywgcG0hISE";

/// Enrols `localpart` on `server` as a principal named `name`, has them
/// upload a master key, and has their office vouch for it. Their token.
async fn vouched_principal(server: &FederatedServer, localpart: &str, name: &str) -> String {
    vouched_official(server, localpart, name, None).await
}

/// [`vouched_principal`], or an aide of `principal` (a localpart) when given.
async fn vouched_official(
    server: &FederatedServer,
    localpart: &str,
    name: &str,
    principal: Option<&str>,
) -> String {
    let http = Http::new(&server.server.url);
    let principal_id = principal.map(|p| server.user(p));
    let mut args = vec![
        "enroll",
        localpart,
        "--name",
        name,
        "--title",
        "Prime Minister",
        "--country",
        "Borduria",
        "--office",
        "Borduria Chancellery",
        "--hours",
        "72",
    ];
    match &principal_id {
        Some(p) => args.extend(["--role", "aide", "--principal", p.as_str()]),
        None => args.extend(["--role", "principal"]),
    }
    let out = server.server.admin_configured(&args);
    let code = out.lines().find_map(|l| l.strip_prefix("code ")).unwrap();
    let (status, v) = http.redeem_enrolment(code).await;
    assert_eq!(status, 200, "{v}");
    let token = v["access_token"].as_str().unwrap().to_owned();
    let user = server.user(localpart);
    let master = json!({"user_id": user, "usage": ["master"],
                        "keys": {format!("ed25519:{MASTER}"): MASTER}});
    let (status, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(&token),
            Some(&json!({ "master_key": master }).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    server
        .server
        .admin_configured(&["vouch", localpart, "--master-key", MASTER]);
    token
}

/// `GET /_hotline/v1/directory/{server}` as `token` on `http`.
async fn peer_directory(http: &Http, token: &str, server: &str) -> (u16, Value) {
    http.call(
        "GET",
        &format!("/_hotline/v1/directory/{server}"),
        Some(token),
        None,
    )
    .await
}

/// The to-device messages `token`'s device has waiting (`/sync`).
async fn to_device_of(http: &Http, token: &str) -> Vec<Value> {
    let (status, v) = http
        .call(
            "GET",
            "/_matrix/client/v3/sync?timeout=0",
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["to_device"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The newest 20 events of `room` as `token` reads them.
async fn events_of(http: &Http, token: &str, room: &str) -> Vec<Value> {
    let (status, v) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=20"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["chunk"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_governments_attestations_reach_clients_here_signed_by_its_key_pinned_on_first_use()
{
    let ca = TestCa::new();
    let (a, b, alice, _bob, _room) = two_servers_sharing_a_room(&ca).await;
    let ha = Http::new(&a.server.url);
    vouched_principal(&b, "pm", "Petra Novak").await;
    // The directory names the peers whose directories are served here.
    let (status, own) = ha
        .call("GET", "/_hotline/v1/directory", Some(&alice), None)
        .await;
    assert_eq!((status, &own["peers"]), (200, &json!([b.name])), "{own}");
    let (status, v) = peer_directory(&ha, &alice, &b.name).await;
    assert_eq!(status, 200, "{v}");
    let dir = &v["directory"];
    assert_eq!(dir["issuer"], json!(b.name));
    let att = dir["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["user_id"] == json!(b.user("pm")))
        .unwrap_or_else(|| panic!("no attestation of pm: {dir}"));
    assert_eq!(
        (&att["name"], &att["master_key"]),
        (&json!("Petra Novak"), &json!(MASTER))
    );
    // The key document is B's own, and the key pinned here is its current
    // key: the attestation verifies with it, and with nothing else.
    let (status, keys) = Http::new(&b.server.url)
        .call("GET", "/_matrix/key/v2/server", None, None)
        .await;
    assert_eq!(status, 200, "{keys}");
    assert_eq!(v["server_keys"]["verify_keys"], keys["verify_keys"]);
    let (key_id, key) = keys["verify_keys"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .map(|(id, k)| (id.clone(), k["key"].as_str().unwrap().to_owned()))
        .unwrap();
    assert_eq!(v["pinned_keys"], json!({ key_id.clone(): key.clone() }));
    let verifies = |with: &str| {
        let object: ruma::CanonicalJsonObject = serde_json::from_value(att.clone()).unwrap();
        let map = [(
            b.name.clone(),
            [(key_id.clone(), ruma::serde::Base64::parse(with).unwrap())].into(),
        )]
        .into();
        ruma::signatures::verify_json(&map, &object).is_ok()
    };
    assert!(verifies(&key));
    assert!(!verifies("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    // The pin was recorded when B was first seen.
    let audit = a.server.admin_configured(&["audit"]);
    assert!(
        audit
            .lines()
            .any(|l| l.contains("peer_key_pinned") && l.contains(&b.name)),
        "{audit}"
    );
    // B answers its directory to signed requests of its peers only.
    let unsigned = http::Request::get(format!(
        "https://{}/_hotline/federation/v1/directory",
        b.name
    ))
    .body(Vec::new())
    .unwrap();
    let (status, v) = common::federation_request(&ca.ca_file, b.fed_port, unsigned).await;
    assert_eq!(
        (status, &v["errcode"]),
        (401, &json!("M_UNAUTHORIZED")),
        "{v}"
    );
    // A server that is no peer is not asked.
    let (status, v) = peer_directory(&ha, &alice, "127.0.0.1:1").await;
    assert_eq!((status, &v["errcode"]), (403, &json!("M_FORBIDDEN")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_on_the_issuing_server_reaches_the_other_sides_clients_within_seconds() {
    let ca = TestCa::new();
    let (a, b, alice, _bob, room) = two_servers_sharing_a_room(&ca).await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let pm = vouched_principal(&b, "pm", "Petra Novak").await;
    // The principal shares a room with Alice: B tells A of her key changes.
    let (status, v) = hb
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{room}?via={}", a.name),
            Some(&pm),
            Some("{}"),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = peer_directory(&ha, &alice, &b.name).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["directory"]["revocations"], json!([]));
    b.server.admin_configured(&["revoke", "pm"]);
    // Within seconds (a directory read here is otherwise reused for a
    // minute): the revocation, as B signed it.
    within(10, || async {
        let (status, v) = peer_directory(&ha, &alice, &b.name).await;
        assert_eq!(status, 200, "{v}");
        let revoked = v["directory"]["revocations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["user_id"] == json!(b.user("pm")));
        revoked
            .then_some(())
            .ok_or(format!("the revocation did not reach A: {v}"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_whose_signing_key_changed_since_it_was_pinned_is_not_trusted_until_an_operator_pins_it(
) {
    let ca = TestCa::new();
    let (mut a, mut b, alice, _bob, _room) = two_servers_sharing_a_room(&ca).await;
    vouched_principal(&b, "pm", "Petra Novak").await;
    let (status, v) = peer_directory(&Http::new(&a.server.url), &alice, &b.name).await;
    assert_eq!(status, 200, "{v}");
    // B replaces its key; A, restarted, sees the new one.
    b.server.stop();
    b.server.admin_configured(&["rotate-signing-key"]);
    b.server.spawn().await;
    a.server.stop();
    a.server.spawn().await;
    let ha = Http::new(&a.server.url);
    let (status, v) = peer_directory(&ha, &alice, &b.name).await;
    assert_eq!((status, &v["errcode"]), (403, &json!("M_FORBIDDEN")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("pinned_keys"), "{v}");
    // The operator pins B's new key: trusted again.
    let (_, keys) = Http::new(&b.server.url)
        .call("GET", "/_matrix/key/v2/server", None, None)
        .await;
    let (key_id, key) = keys["verify_keys"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .map(|(id, k)| (id.clone(), k["key"].as_str().unwrap().to_owned()))
        .unwrap();
    let config = a.server.data.parent().unwrap().join("hotline.toml");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!("pinned_keys = [\"{} {key_id} {key}\"]\n", b.name));
    std::fs::write(&config, toml).unwrap();
    a.server.stop();
    a.server.spawn().await;
    let (status, v) = peer_directory(&Http::new(&a.server.url), &alice, &b.name).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["pinned_keys"], json!({ key_id: key }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stranger_on_another_server_can_neither_invite_nor_message_a_principal_here() {
    let ca = TestCa::new();
    let (a, b, _alice, bob, _room) = two_servers_sharing_a_room(&ca).await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let pres = vouched_principal(&a, "pres", "Anna Weber").await;
    let carol = ha.register("carol").await;
    // Bob, who holds no line with the President, invites her: A refuses.
    let room = hb.create_room(&bob).await;
    let (status, v) = hb
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&bob),
            Some(&json!({"user_id": a.user("pres")}).to_string()),
        )
        .await;
    assert_eq!((status, &v["errcode"]), (403, &json!("M_FORBIDDEN")), "{v}");
    // Anyone else on A he may invite.
    let (status, v) = hb
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&bob),
            Some(&json!({"user_id": a.user("carol")}).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    // His to-device messages reach Carol, never the President.
    for (txn, user) in [("t1", a.user("pres")), ("t2", a.user("carol"))] {
        let (status, v) = hb
            .call(
                "PUT",
                &format!("/_matrix/client/v3/sendToDevice/m.test/{txn}"),
                Some(&bob),
                Some(&json!({"messages": {user: {"*": {"note": "hello"}}}}).to_string()),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    within(10, || async {
        let got = to_device_of(&ha, &carol).await;
        (!got.is_empty())
            .then_some(())
            .ok_or("Carol got nothing".to_owned())
    })
    .await;
    assert_eq!(to_device_of(&ha, &pres).await, Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invite_or_knock_over_federation_from_someone_without_a_line_to_a_principal_here_is_refused(
) {
    // B here is a server that would let its user try (a Hotline refuses
    // before anything leaves it): the test speaks as B, with B's key.
    let ca = TestCa::new();
    let (a, b, alice, bob, room) = two_servers_sharing_a_room(&ca).await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let pres = vouched_principal(&a, "pres", "Anna Weber").await;
    let key = b.signing_key();
    fn invite(user: &str) -> Crafted<'_> {
        Crafted {
            kind: "m.room.member",
            state_key: Some(user),
            content: json!({"membership": "invite"}),
            prev: None,
            origin_server_ts: 1_700_000_000_000,
        }
    }
    let (pres_id, carol_id) = (a.user("pres"), a.user("carol"));
    ha.register("carol").await;
    // In a transaction: refused for the President, allowed for Carol.
    let (pdu, id) = craft_pdu(
        &ha,
        &alice,
        &room,
        &b.user("bob"),
        (&b.name, &key),
        invite(&pres_id),
    )
    .await;
    let (status, v) = send_as(&ca, &a, &b, "reach-1", &[&pdu]).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["pdus"][&id]["error"]
            .as_str()
            .is_some_and(|e| e.contains("direct line")),
        "{v}"
    );
    let (pdu, id) = craft_pdu(
        &ha,
        &alice,
        &room,
        &b.user("bob"),
        (&b.name, &key),
        invite(&carol_id),
    )
    .await;
    let (status, v) = send_as(&ca, &a, &b, "reach-2", &[&pdu]).await;
    assert_eq!((status, &v["pdus"][&id]), (200, &json!({})), "{v}");
    // Through `/invite`, A's countersignature is refused: 403.
    let (pdu, id) = craft_pdu(
        &ha,
        &alice,
        &room,
        &b.user("bob"),
        (&b.name, &key),
        invite(&pres_id),
    )
    .await;
    let request = ruma::api::federation::membership::create_invite::v2::Request::new(
        room.parse().unwrap(),
        id.parse().unwrap(),
        ruma::RoomVersionId::V11,
        serde_json::value::to_raw_value(&pdu).unwrap(),
        Vec::new(),
    );
    let (status, v) = signed_as(&ca, &a, &b, request).await;
    assert_eq!((status, &v["errcode"]), (403, &json!("M_FORBIDDEN")), "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("direct line")),
        "{v}"
    );
    // The President got no invitation.
    let (_, sync) = ha
        .call(
            "GET",
            "/_matrix/client/v3/sync?timeout=0",
            Some(&pres),
            None,
        )
        .await;
    assert_eq!(sync["rooms"]["invite"], json!({}), "{sync}");
    // A knock from Bob on a room of the President's: refused by A.
    let knock_room = ha.create_knock_room(&pres, "12").await;
    let knock = |room: String| {
        let (hb, bob, via) = (&hb, &bob, &a.name);
        async move {
            hb.call(
                "POST",
                &format!("/_matrix/client/v3/knock/{room}?via={via}"),
                Some(bob),
                Some("{}"),
            )
            .await
        }
    };
    let (status, v) = knock(knock_room).await;
    assert_eq!((status, &v["errcode"]), (403, &json!("M_FORBIDDEN")), "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("direct line")),
        "{v}"
    );
    // On Alice's, he may knock.
    let (status, v) = knock(ha.create_knock_room(&alice, "12").await).await;
    assert_eq!(status, 200, "{v}");
}

/// `POST /keys/claim` of `user`'s `device` through `http`: the keys got.
async fn claim(http: &Http, token: &str, user: &str, device: &str) -> Value {
    let (status, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/keys/claim",
            Some(token),
            Some(&json!({"one_time_keys": {user: {device: "signed_curve25519"}}}).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["one_time_keys"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_principals_one_time_keys_go_to_the_other_server_for_their_lines_counterpart_and_never_for_a_stranger(
) {
    let ca = TestCa::new();
    let (a, b, _alice, bob, _room) = two_servers_sharing_a_room(&ca).await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let pres = vouched_principal(&a, "pres", "Anna Weber").await;
    let pm = vouched_principal(&b, "pm", "Petra Novak").await;
    let (_, who) = ha
        .call(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&pres),
            None,
        )
        .await;
    let device = who["device_id"].as_str().unwrap().to_owned();
    let otk = |k: &str| json!({"key": k, "signatures": {}});
    let (status, v) = ha
        .call(
            "POST",
            "/_matrix/client/v3/keys/upload",
            Some(&pres),
            Some(
                &json!({"one_time_keys": {
                    "signed_curve25519:AAAAAQ": otk("zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs"),
                    "signed_curve25519:AAAAAg": otk("wKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs"),
                }})
                .to_string(),
            ),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    // Bob on B holds no line with the President: B asks A, which gives
    // nothing (an Olm session with her is the reach rule's to allow).
    assert_eq!(claim(&hb, &bob, &a.user("pres"), &device).await, json!({}));
    // Nor does the Prime Minister before a line joins them.
    assert_eq!(claim(&hb, &pm, &a.user("pres"), &device).await, json!({}));
    cross_server_line(&a, &b, &pres, &pm).await;
    // With the line, B's claim for him gets one of her keys.
    let got = claim(&hb, &pm, &a.user("pres"), &device).await;
    let keys = got[a.user("pres")][&device]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert_eq!(keys.len(), 1, "{got}");
    assert!(
        keys.keys().all(|k| k.starts_with("signed_curve25519:")),
        "{got}"
    );
    // And still none for Bob, who shares a server with him.
    let (_, counts) = ha
        .call(
            "POST",
            "/_matrix/client/v3/keys/upload",
            Some(&pres),
            Some("{}"),
        )
        .await;
    assert_eq!(
        counts["one_time_key_counts"]["signed_curve25519"],
        json!(1),
        "{counts}"
    );
    assert_eq!(claim(&hb, &bob, &a.user("pres"), &device).await, json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_name_that_passes_for_a_peer_governments_official_is_refused_here() {
    let ca = TestCa::new();
    let (a, b, alice, _bob, room) = two_servers_sharing_a_room(&ca).await;
    let ha = Http::new(&a.server.url);
    vouched_principal(&b, "pm", "Petra Novak").await;
    // Once A has read B's directory ...
    let (status, v) = peer_directory(&ha, &alice, &b.name).await;
    assert_eq!(status, 200, "{v}");
    // ... nobody here may take her name, or one that passes for it.
    for name in ["Petra Novak", "Petr\u{430} Nov\u{430}k"] {
        let (status, v) = ha
            .call(
                "PUT",
                &format!("/_matrix/client/v3/profile/{}/displayname", a.user("alice")),
                Some(&alice),
                Some(&json!({ "displayname": name }).to_string()),
            )
            .await;
        assert_eq!(
            (status, &v["errcode"]),
            (403, &json!("M_FORBIDDEN")),
            "{name}: {v}"
        );
        assert!(v["error"].as_str().unwrap().contains("Petra Novak"), "{v}");
    }
    let (status, v) = ha
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            Some(&alice),
            Some(r#"{"name": "Petra Novak"}"#),
        )
        .await;
    assert_eq!((status, &v["errcode"]), (403, &json!("M_FORBIDDEN")), "{v}");
    // A name of her own is hers to take.
    let (status, v) = ha
        .call(
            "PUT",
            &format!("/_matrix/client/v3/profile/{}/displayname", a.user("alice")),
            Some(&alice),
            Some(r#"{"displayname": "Alice Martin"}"#),
        )
        .await;
    assert_eq!(status, 200, "{v}");
}

/// Redeems `code` of `server` as `token` through `http` (their own server).
async fn redeem(http: &Http, token: &str, code: &str, server: &str) -> (u16, Value) {
    http.call(
        "POST",
        &format!("/_hotline/v1/line_invites/{code}/redeem?server={server}"),
        Some(token),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_line_invite_of_one_government_opens_an_encrypted_line_with_a_principal_of_the_other() {
    let ca = TestCa::new();
    let (a, b, _alice, _bob, _room) = two_servers_sharing_a_room(&ca).await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let pres = vouched_principal(&a, "pres", "Anna Weber").await;
    let pm = vouched_principal(&b, "pm", "Petra Novak").await;
    // The President's office issues an invite; its link names A.
    let inv = ha.create_line_invite(&pres, json!({})).await;
    let code = inv["code"].as_str().unwrap().to_owned();
    assert_eq!(inv["server"], json!(a.name));
    assert!(
        inv["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("#/line/{code}/{}", a.name)),
        "{inv}"
    );
    // The Prime Minister, on B, sees who is calling, as A says ...
    let (status, v) = hb
        .call(
            "GET",
            &format!("/_hotline/v1/line_invites/{code}?server={}", a.name),
            Some(&pm),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["principal"], &v["name"]),
        (&json!(a.user("pres")), &json!("Anna Weber"))
    );
    // ... and opens the line through B.
    let (status, v) = redeem(&hb, &pm, &code, &a.name).await;
    assert_eq!(status, 200, "{v}");
    let line = v["room_id"].as_str().unwrap().to_owned();
    // Both principals are joined, on both servers; the room is encrypted
    // and marked as their line.
    for (http, token) in [(&ha, &pres), (&hb, &pm)] {
        let (status, v) = http
            .call(
                "GET",
                &format!("/_matrix/client/v3/rooms/{line}/joined_members"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        let mut joined: Vec<&String> = v["joined"].as_object().unwrap().keys().collect();
        joined.sort();
        let mut want = vec![a.user("pres"), b.user("pm")];
        want.sort();
        assert_eq!(joined, want.iter().collect::<Vec<_>>());
    }
    let (status, v) = ha
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{line}/state/org.hotline.line/"),
            Some(&pres),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let mut principals = vec![a.user("pres"), b.user("pm")];
    principals.sort();
    assert_eq!(v["principals"], json!(principals));
    let (status, v) = hb
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{line}/state/m.room.encryption/"),
            Some(&pm),
            None,
        )
        .await;
    assert_eq!(
        (status, &v["algorithm"]),
        (200, &json!("m.megolm.v1.aes-sha2")),
        "{v}"
    );
    // Ciphertext crosses both ways.
    let sealed = |n: &str| {
        json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": format!("sealed-{n}"),
               "device_id": "D", "sender_key": "k", "session_id": "s"})
        .to_string()
    };
    for (from, http, token) in [("b", &hb, &pm), ("a", &ha, &pres)] {
        let (status, v) = http
            .call(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{line}/send/m.room.encrypted/{from}1"),
                Some(token),
                Some(&sealed(from)),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    for (http, token, from) in [(&ha, &pres, "b"), (&hb, &pm, "a")] {
        within(10, || async {
            let events = events_of(http, token, &line).await;
            let seen = events
                .iter()
                .any(|e| e["content"]["ciphertext"] == json!(format!("sealed-{from}")));
            seen.then_some(())
                .ok_or(format!("the text never crossed: {events:?}"))
        })
        .await;
    }
    // The line lets the President's devices reach the Prime Minister's on B
    // (room keys travel as to-device messages).
    let (status, v) = ha
        .call(
            "PUT",
            "/_matrix/client/v3/sendToDevice/m.test/k1",
            Some(&pres),
            Some(&json!({"messages": {b.user("pm"): {"*": {"key": "for the line"}}}}).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    within(10, || async {
        let events = to_device_of(&hb, &pm).await;
        let got = events.iter().any(|e| e["content"]["key"] == "for the line");
        got.then_some(())
            .ok_or(format!("the key never reached B: {events:?}"))
    })
    .await;
    // Redeeming again gives the same line; both audit logs record it.
    let (status, v) = redeem(&hb, &pm, &code, &a.name).await;
    assert_eq!((status, &v["room_id"]), (200, &json!(line)), "{v}");
    for (server, other) in [(&a, &b), (&b, &a)] {
        let audit = server.server.admin_configured(&["audit"]);
        assert!(
            audit.lines().any(|l| l.contains("line_invite_redeemed")
                && l.contains(&line)
                && l.contains(&other.name)),
            "{}: {audit}",
            server.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn used_up_expired_revoked_and_wrongly_bound_invites_are_refused_across_servers_in_the_issuers_words(
) {
    let ca = TestCa::new();
    let (a, b, _alice, bob, _room) = two_servers_sharing_a_room(&ca).await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let pres = vouched_principal(&a, "pres", "Anna Weber").await;
    let pm = vouched_principal(&b, "pm", "Petra Novak").await;
    let fm = vouched_principal(&b, "fm", "Otto Brandt").await;
    let refused = |r: (u16, Value), why: &str| {
        assert_eq!(r.0, 403, "{}", r.1);
        let said = r.1["error"].as_str().unwrap_or_default().to_owned();
        assert!(said.contains(why), "expected {why:?}, got {said:?}");
    };
    // Used up: one use, taken by the Prime Minister.
    let once = ha.create_line_invite(&pres, json!({})).await;
    let once = once["code"].as_str().unwrap();
    assert_eq!(redeem(&hb, &pm, once, &a.name).await.0, 200);
    refused(
        redeem(&hb, &fm, once, &a.name).await,
        "This line invite has been used up",
    );
    // Expired.
    let short = ha
        .create_line_invite(&pres, json!({"expires_in_ms": 1000}))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    refused(
        redeem(&hb, &fm, short["code"].as_str().unwrap(), &a.name).await,
        "This line invite has expired",
    );
    // Revoked by its office.
    let revoked = ha.create_line_invite(&pres, json!({})).await;
    let revoked = revoked["code"].as_str().unwrap();
    let (status, v) = ha
        .call(
            "DELETE",
            &format!("/_hotline/v1/line_invites/{revoked}"),
            Some(&pres),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    refused(
        redeem(&hb, &fm, revoked, &a.name).await,
        "This line invite was revoked by its office",
    );
    // Bound to the Prime Minister: the Foreign Minister is refused, at the
    // preview already.
    let bound = ha
        .create_line_invite(&pres, json!({"for_user": b.user("pm")}))
        .await;
    let bound = bound["code"].as_str().unwrap();
    refused(
        hb.call(
            "GET",
            &format!("/_hotline/v1/line_invites/{bound}?server={}", a.name),
            Some(&fm),
            None,
        )
        .await,
        "This line invite is meant for someone else",
    );
    refused(
        redeem(&hb, &fm, bound, &a.name).await,
        "This line invite is meant for someone else",
    );
    // Someone nobody vouches for as a principal cannot redeem at all.
    let open = ha.create_line_invite(&pres, json!({})).await;
    refused(
        redeem(&hb, &bob, open["code"].as_str().unwrap(), &a.name).await,
        "Only an enrolled principal can redeem a line invite",
    );
}

/// Opens a line between the President (on A) and the Prime Minister (on
/// B) with an invite of A's: the line's room.
async fn cross_server_line(
    a: &FederatedServer,
    b: &FederatedServer,
    pres: &str,
    pm: &str,
) -> String {
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let inv = ha.create_line_invite(pres, json!({})).await;
    let (status, v) = redeem(&hb, pm, inv["code"].as_str().unwrap(), &a.name).await;
    assert_eq!(status, 200, "{v}");
    v["room_id"].as_str().unwrap().to_owned()
}

/// Sends a text into `room` as `token`: the status and answer.
async fn text(http: &Http, token: &str, room: &str, txn: &str) -> (u16, Value) {
    http.call(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
        Some(token),
        Some(r#"{"msgtype": "m.text", "body": "hello"}"#),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_key_reset_on_one_server_pauses_the_line_on_the_other_until_vouched_again() {
    let ca = TestCa::new();
    let (a, b, _alice, _bob, _room) = two_servers_sharing_a_room(&ca).await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let pres = vouched_principal(&a, "pres", "Anna Weber").await;
    let pm = vouched_principal(&b, "pm", "Petra Novak").await;
    let line = cross_server_line(&a, &b, &pres, &pm).await;
    assert_eq!(text(&hb, &pm, &line, "t0").await.0, 200);
    // The President's identity key is reset (a new master key, her
    // password confirming it).
    const NEW: &str = "bmV3IG1hc3RlciBrZXkgb2YgYW5uYSB3ZWJlciEhISE";
    let user = a.user("pres");
    let (status, v) = ha
        .call(
            "POST",
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(&pres),
            Some(
                &json!({
                    "master_key": {"user_id": user, "usage": ["master"],
                                   "keys": {format!("ed25519:{NEW}"): NEW}},
                    "auth": {"type": "m.login.password",
                             "identifier": {"type": "m.id.user", "user": user},
                             "password": common::OFFICIAL_PW}
                })
                .to_string(),
            ),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    // B hears of it and pauses the line: the Prime Minister cannot text.
    // Texts until the answer is `want` (each with a transaction id of its own).
    let until = |want: u16, what: &'static str| {
        let (hb, pm, line) = (&hb, &pm, &line);
        let tries = std::sync::atomic::AtomicU32::new(0);
        async move {
            within(10, || async {
                let i = tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let r = text(hb, pm, line, &format!("{what}{i}")).await;
                (r.0 == want)
                    .then(|| r.clone())
                    .ok_or(format!("{what}: {}", r.1))
            })
            .await
        }
    };
    let (_, v) = until(403, "paused").await;
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("identity key of Anna Weber changed"),
        "{v}"
    );
    // Her office vouches for the new key: the line opens again on B.
    a.server
        .admin_configured(&["vouch", "pres", "--master-key", NEW]);
    until(200, "open").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aides_of_either_principal_act_on_a_line_across_servers_as_they_do_locally() {
    let ca = TestCa::new();
    let (a, b, _alice, bob, _room) = two_servers_sharing_a_room(&ca).await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let pres = vouched_principal(&a, "pres", "Anna Weber").await;
    let aide = vouched_official(&a, "aide", "Karl Brandt", Some("pres")).await;
    let pm = vouched_principal(&b, "pm", "Petra Novak").await;
    // The President's aide issues the invite, for her.
    let inv = ha.create_line_invite(&aide, json!({})).await;
    assert_eq!(inv["principal"], json!(a.user("pres")));
    let (status, v) = redeem(&hb, &pm, inv["code"].as_str().unwrap(), &a.name).await;
    assert_eq!(status, 200, "{v}");
    let line = v["room_id"].as_str().unwrap().to_owned();
    // She brings her aide onto the line; B lets him in (his government
    // vouches for him as her aide), and the Prime Minister reads him.
    ha.bring_aide(&pres, &line, &a.user("aide"), &aide).await;
    assert_eq!(text(&ha, &aide, &line, "aide1").await.0, 200);
    within(10, || async {
        let events = events_of(&hb, &pm, &line).await;
        let from_aide = events
            .iter()
            .any(|e| e["sender"] == json!(a.user("aide")) && e["type"] == "m.room.message");
        from_aide
            .then_some(())
            .ok_or(format!("B never showed the aide's text: {events:?}"))
    })
    .await;
    // His devices reach the Prime Minister's (room keys), a stranger's do not.
    for (txn, http, token) in [("k1", &ha, &aide), ("k2", &hb, &bob)] {
        let (status, v) = http
            .call(
                "PUT",
                &format!("/_matrix/client/v3/sendToDevice/m.test/{txn}"),
                Some(token),
                Some(&json!({"messages": {b.user("pm"): {"*": {"from": txn}}}}).to_string()),
            )
            .await;
        // A local stranger is refused at once; the aide's goes out.
        assert!(
            status == 200 || (txn == "k2" && status == 403),
            "{txn}: {v}"
        );
    }
    let events = within(10, || async {
        let events = to_device_of(&hb, &pm).await;
        if events.iter().any(|e| e["content"]["from"] == "k1") {
            Ok(events)
        } else {
            Err(format!("the aide's key never reached B: {events:?}"))
        }
    })
    .await;
    assert!(
        !events.iter().any(|e| e["content"]["from"] == "k2"),
        "{events:?}"
    );

    // The Prime Minister brings an aide of his, enrolled just now: A reads
    // B's directory again for the marking B's server wrote (its principal,
    // its aide) and shows the aide's text.
    let pm_aide = vouched_official(&b, "paide", "Lena Hof", Some("pm")).await;
    hb.bring_aide(&pm, &line, &b.user("paide"), &pm_aide).await;
    assert_eq!(text(&hb, &pm_aide, &line, "paide1").await.0, 200);
    within(10, || async {
        let events = events_of(&ha, &pres, &line).await;
        let marked = events.iter().any(|e| {
            e["type"] == "org.hotline.aide"
                && e["state_key"] == json!(format!("_{}", b.user("paide")))
                && e["content"]["principal"] == json!(b.user("pm"))
        });
        let spoke = events
            .iter()
            .any(|e| e["sender"] == json!(b.user("paide")) && e["type"] == "m.room.message");
        (marked && spoke)
            .then_some(())
            .ok_or(format!("A never showed the marked aide's text: {events:?}"))
    })
    .await;

    // The Prime Minister objects to the President's aide: off the line on
    // both servers, and A refuses his next text.
    let (status, v) = hb
        .call(
            "DELETE",
            &format!("/_hotline/v1/lines/{line}/aides/{}", a.user("aide")),
            Some(&pm),
            Some("{}"),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    within(10, || async {
        let (_, m) = ha
            .call(
                "GET",
                &format!(
                    "/_matrix/client/v3/rooms/{line}/state/m.room.member/{}",
                    a.user("aide")
                ),
                Some(&pres),
                None,
            )
            .await;
        (m["membership"] == "leave")
            .then_some(())
            .ok_or(format!("A still has the aide on the line: {m}"))
    })
    .await;
    assert_eq!(text(&ha, &aide, &line, "aide2").await.0, 403);

    // The offices do the same through their principals: Avalon's brings
    // the President's aide back, Borduria's takes him off again through the
    // Prime Minister (`hotline admin line-aide`, each on its own server).
    let office = |server: &FederatedServer, verb: &str, with: &str| {
        let out = server
            .server
            .command()
            .args(["admin", "line-aide", verb, &a.user("aide"), "--with", with])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    office(&a, "add", &b.user("pm"));
    assert_eq!(
        ha.call(
            "POST",
            &format!("/_matrix/client/v3/join/{line}"),
            Some(&aide),
            Some("{}")
        )
        .await
        .0,
        200
    );
    assert_eq!(text(&ha, &aide, &line, "aide3").await.0, 200);
    office(&b, "remove", &a.user("pres"));
    within(10, || async {
        let (_, marking) = ha
            .call(
                "GET",
                &format!(
                    "/_matrix/client/v3/rooms/{line}/state/org.hotline.aide/_{}",
                    a.user("aide")
                ),
                Some(&pres),
                None,
            )
            .await;
        (marking["removed_by"] == json!(b.user("pm")) && marking["by_office"].is_string())
            .then_some(())
            .ok_or(format!(
                "A never saw Borduria's office take the aide off: {marking}"
            ))
    })
    .await;
    assert_eq!(text(&ha, &aide, &line, "aide4").await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_of_another_server_whose_name_passes_for_an_official_is_named_for_a_warning() {
    let ca = TestCa::new();
    let (a, b, alice, _bob, _room) = two_servers_sharing_a_room(&ca).await;
    let ha = Http::new(&a.server.url);
    vouched_principal(&a, "pres", "Anna Weber").await;
    vouched_principal(&b, "pm", "Petra Novak").await;
    let (status, v) = peer_directory(&ha, &alice, &b.name).await;
    assert_eq!(status, 200, "{v}");
    let resembles = |user: String, name: &'static str| {
        let (ha, alice) = (&ha, &alice);
        async move {
            let (status, v) = ha
                .call(
                    "GET",
                    &format!(
                        "/_hotline/v1/resembles?user_id={}&name={}",
                        user.replace(':', "%3A").replace('@', "%40"),
                        name.replace(' ', "%20")
                    ),
                    Some(alice),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{v}");
            v
        }
    };
    // Someone on B calling himself after A's President, or after B's own
    // Prime Minister: A names the official, for the web app's warning.
    let v = resembles(b.user("mallory"), "Anna Weber").await;
    assert_eq!(v["official"]["user_id"], json!(a.user("pres")), "{v}");
    let v = resembles(b.user("mallory"), "Petra Novak").await;
    assert_eq!(
        (&v["official"]["user_id"], &v["official"]["title"]),
        (&json!(b.user("pm")), &json!("Prime Minister")),
        "{v}"
    );
    // The official herself, and an unremarkable name, are nothing to warn of.
    assert_eq!(resembles(b.user("pm"), "Petra Novak").await, json!({}));
    assert_eq!(
        resembles(b.user("mallory"), "Mallory Jones").await,
        json!({})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_line_across_servers_turns_personal_only_with_both_principals_consent() {
    let ca = TestCa::new();
    let (a, b, _alice, _bob, _room) = two_servers_sharing_a_room(&ca).await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let pres = vouched_principal(&a, "pres", "Anna Weber").await;
    let pm = vouched_principal(&b, "pm", "Petra Novak").await;
    let line = cross_server_line(&a, &b, &pres, &pm).await;
    let record = |http: &Http, token: &str, official: bool| {
        let (http, token) = (http.base.clone(), token.to_owned());
        let line = line.clone();
        async move {
            Http::new(&http)
                .call(
                    "PUT",
                    &format!("/_hotline/v1/lines/{line}/record"),
                    Some(&token),
                    Some(&json!({ "official": official }).to_string()),
                )
                .await
        }
    };
    let official_on = |http: &Http, token: &str| {
        let (http, token) = (http.base.clone(), token.to_owned());
        let line = line.clone();
        async move {
            let (_, v) = Http::new(&http)
                .call(
                    "GET",
                    &format!("/_matrix/client/v3/rooms/{line}/state/org.hotline.line/"),
                    Some(&token),
                    None,
                )
                .await;
            v["official"].clone()
        }
    };
    // The Prime Minister asks on B; his consent reaches A, where the
    // President's agreement turns the line personal on both servers.
    assert_eq!(
        record(&hb, &pm, false).await,
        (200, json!({"official": true}))
    );
    let consent_key = format!("_{}", b.user("pm"));
    within(10, || async {
        let (_, v) = ha
            .call(
                "GET",
                &format!("/_matrix/client/v3/rooms/{line}/state/org.hotline.record/{consent_key}"),
                Some(&pres),
                None,
            )
            .await;
        (v == json!({"personal": true}))
            .then_some(())
            .ok_or(format!("A never had the Prime Minister's consent: {v}"))
    })
    .await;
    assert_eq!(
        record(&ha, &pres, false).await,
        (200, json!({"official": false}))
    );
    within(10, || async {
        let v = official_on(&hb, &pm).await;
        (v == json!(false))
            .then_some(())
            .ok_or(format!("B still has the line official: {v}"))
    })
    .await;
    // The Prime Minister alone makes it official again, on both.
    assert_eq!(
        record(&hb, &pm, true).await,
        (200, json!({"official": true}))
    );
    within(10, || async {
        let v = official_on(&ha, &pres).await;
        (v == json!(true))
            .then_some(())
            .ok_or(format!("A still has the line personal: {v}"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_line_opened_across_servers_shows_each_principals_availability_on_the_other_from_its_start(
) {
    let ca = TestCa::new();
    let (a, b, _alice, _bob, _room) = two_servers_sharing_a_room(&ca).await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let pres = vouched_principal(&a, "pres", "Anna Weber").await;
    let pm = vouched_principal(&b, "pm", "Petra Novak").await;
    // Both set their availability before any line exists.
    for (http, token, body) in [
        (&ha, &pres, json!({"state": "dnd", "tz": "Europe/Paris"})),
        (&hb, &pm, json!({"state": "asleep", "tz": "Asia/Tokyo"})),
    ] {
        let (status, v) = http
            .call(
                "PUT",
                "/_hotline/v1/availability",
                Some(token),
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    let line = cross_server_line(&a, &b, &pres, &pm).await;
    // Each side reads the other's, as the line's state on its own server.
    for (http, token, other, state, tz) in [
        (&hb, &pm, a.user("pres"), "dnd", "Europe/Paris"),
        (&ha, &pres, b.user("pm"), "asleep", "Asia/Tokyo"),
    ] {
        let path =
            format!("/_matrix/client/v3/rooms/{line}/state/org.hotline.availability/_{other}");
        within(20, || {
            let (path, other) = (path.clone(), other.clone());
            async move {
                let (status, v) = http.call("GET", &path, Some(token), None).await;
                if status == 200 && v["state"] == state && v["tz"] == tz {
                    Ok(())
                } else {
                    Err(format!("{other}'s availability on the line: {status} {v}"))
                }
            }
        })
        .await;
        let (status, v) = http
            .call(
                "GET",
                &format!("/_hotline/v1/availability/{other}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["effective"], json!(state), "{v}");
    }
}
