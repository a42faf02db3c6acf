//! Official identity and direct lines, through the public API and
//! `matrix-sdk`: enrolment codes, the impersonation guard, principals
//! reachable only through lines, line invites, vouching with a verifiable
//! attestation, revocation, and a line that pauses when a key changes.

use crate::common;

use common::{master_key, official_password as password, sdk_login_official as sdk_login};
use common::{Http, Server};
use hotline_service::identity::verify_attestation;
use serde_json::{json, Value};

async fn errcode(r: (u16, Value)) -> (u16, String) {
    (r.0, r.1["errcode"].as_str().unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_guard_lines_and_invites() {
    let server = Server::start().await;
    let http = Http::new(&server.url);

    // Enrolment codes: one use, and they expire.
    let code = server.enroll("macron", "Emmanuel Macron", "principal", None, "72");
    let (s, v) = http.redeem_enrolment(&code).await;
    assert_eq!(s, 200, "{v}");
    let macron = v["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        errcode(http.redeem_enrolment(&code).await).await,
        (403, "M_FORBIDDEN".into()),
        "a code works once"
    );
    let stale = server.enroll("late", "Late Comer", "principal", None, "0");
    let (s, v) = http.redeem_enrolment(&stale).await;
    assert_eq!(s, 403);
    assert!(v["error"].as_str().unwrap().contains("expired"), "{v}");
    let scholz = http
        .enrolled(&server, "scholz", "Olaf Scholz", "principal", None)
        .await;
    let aide = http
        .enrolled(&server, "aide", "Marie Aide", "aide", Some("macron"))
        .await;
    let meloni = http
        .enrolled(&server, "meloni", "Giorgia Meloni", "principal", None)
        .await;

    // The impersonation guard: case, accents, homoglyphs, spacing.
    let stranger = http.register("stranger").await;
    for name in [
        "emmanuel macron",
        "Emmanuél  Macrón",
        "Emmanuel Macr\u{043E}n",
        "Emmanue1 Macron",
    ] {
        let (s, v) = http
            .call(
                "PUT",
                "/_matrix/client/v3/profile/@stranger:localhost/displayname",
                Some(&stranger),
                Some(&json!({"displayname": name}).to_string()),
            )
            .await;
        assert_eq!(
            (s, v["errcode"].as_str()),
            (403, Some("M_FORBIDDEN")),
            "{name}: {v}"
        );
        assert!(
            v["error"].as_str().unwrap().contains("Emmanuel Macron"),
            "a clear message: {v}"
        );
    }
    let (s, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&stranger),
            Some(r#"{"name": "OLAF SCH0LZ"}"#),
        )
        .await;
    assert_eq!(
        (s, v["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "room name: {v}"
    );
    // Nor through createRoom's initial_state.
    let (s, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&stranger),
            Some(r#"{"initial_state": [{"type": "m.room.name", "state_key": "", "content": {"name": "OLAF SCH0LZ"}}]}"#),
        )
        .await;
    assert_eq!(
        (s, v["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "room name in initial_state: {v}"
    );
    let (s, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(
                r#"{"username": "olafscholz", "password": "x", "auth": {"type": "m.login.dummy"}}"#,
            ),
        )
        .await;
    assert_eq!(
        (s, v["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "username: {v}"
    );
    // The official may use their own name; an unrelated name is fine.
    let (s, _) = http
        .call(
            "PUT",
            "/_matrix/client/v3/profile/@macron:localhost/displayname",
            Some(&macron),
            Some(r#"{"displayname": "Emmanuel Macron"}"#),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = http
        .call(
            "PUT",
            "/_matrix/client/v3/profile/@stranger:localhost/displayname",
            Some(&stranger),
            Some(r#"{"displayname": "Emmanuel Marcon Fan Club"}"#),
        )
        .await;
    assert_eq!(s, 200);

    // A stranger cannot invite, create a room with, or to-device a principal.
    let (s, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&stranger),
            Some(r#"{"invite": ["@macron:localhost"], "is_direct": true}"#),
        )
        .await;
    assert_eq!(
        (s, v["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{v}"
    );
    let room = http.create_room(&stranger).await;
    let (s, v) = http
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&stranger),
            Some(r#"{"user_id": "@macron:localhost"}"#),
        )
        .await;
    assert_eq!(
        (s, v["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{v}"
    );
    let (s, v) = http
        .call(
            "PUT",
            "/_matrix/client/v3/sendToDevice/m.room.encrypted/t1",
            Some(&stranger),
            Some(r#"{"messages": {"@macron:localhost": {"*": {"ciphertext": "x"}}}}"#),
        )
        .await;
    assert_eq!(
        (s, v["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{v}"
    );
    // Neither can another principal without a line; the aide can.
    let (s, _) = http
        .call(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&scholz),
            Some(r#"{"invite": ["@macron:localhost"]}"#),
        )
        .await;
    assert_eq!(s, 403);
    let (s, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&aide),
            Some(r#"{"invite": ["@macron:localhost"]}"#),
        )
        .await;
    assert_eq!(s, 200, "an aide reaches their principal: {v}");

    // Line invites: only offices create them; revoked, used-up, expired and
    // bound invites are refused with a clear error.
    let (s, _) = http
        .call(
            "POST",
            "/_hotline/v1/line_invites",
            Some(&stranger),
            Some("{}"),
        )
        .await;
    assert_eq!(s, 403);
    let (s, inv) = http
        .call(
            "POST",
            "/_hotline/v1/line_invites",
            Some(&aide),
            Some(r#"{"max_uses": 1}"#),
        )
        .await;
    assert_eq!(s, 200, "{inv}");
    assert_eq!(inv["principal"], "@macron:localhost");
    assert!(inv["url"]
        .as_str()
        .unwrap()
        .contains(inv["code"].as_str().unwrap()));
    let code = inv["code"].as_str().unwrap().to_owned();
    let (s, v) = http
        .call(
            "POST",
            &format!("/_hotline/v1/line_invites/{code}/redeem"),
            Some(&stranger),
            None,
        )
        .await;
    assert_eq!(
        (s, v["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "only principals redeem: {v}"
    );
    let (s, v) = http
        .call(
            "POST",
            &format!("/_hotline/v1/line_invites/{code}/redeem"),
            Some(&scholz),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let line = v["room_id"].as_str().unwrap().to_owned();
    let (s, v) = http
        .call(
            "POST",
            &format!("/_hotline/v1/line_invites/{code}/redeem"),
            Some(&meloni),
            None,
        )
        .await;
    assert_eq!(s, 403);
    assert!(v["error"].as_str().unwrap().contains("used up"), "{v}");

    // The line: both principals joined, encrypted, marked official.
    let (_, members) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{line}/joined_members"),
            Some(&macron),
            None,
        )
        .await;
    let joined: Vec<&String> = members["joined"].as_object().unwrap().keys().collect();
    assert_eq!(joined, ["@macron:localhost", "@scholz:localhost"]);
    let (s, mark) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{line}/state/org.hotline.line/"),
            Some(&scholz),
            None,
        )
        .await;
    assert_eq!((s, &mark["official"]), (200, &json!(true)), "{mark}");
    let (s, enc) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{line}/state/m.room.encryption"),
            Some(&scholz),
            None,
        )
        .await;
    assert_eq!(
        (s, enc["algorithm"].as_str()),
        (200, Some("m.megolm.v1.aes-sha2"))
    );
    // With a line, Scholz may now reach Macron elsewhere too.
    let (s, _) = http
        .call(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&scholz),
            Some(r#"{"invite": ["@macron:localhost"]}"#),
        )
        .await;
    assert_eq!(s, 200);

    let (_, revoked) = http
        .call(
            "POST",
            "/_hotline/v1/line_invites",
            Some(&macron),
            Some("{}"),
        )
        .await;
    let rcode = revoked["code"].as_str().unwrap().to_owned();
    let (s, _) = http
        .call(
            "DELETE",
            &format!("/_hotline/v1/line_invites/{rcode}"),
            Some(&scholz),
            None,
        )
        .await;
    assert_eq!(s, 403, "only the inviting office revokes");
    let (s, _) = http
        .call(
            "DELETE",
            &format!("/_hotline/v1/line_invites/{rcode}"),
            Some(&macron),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = http
        .call(
            "POST",
            &format!("/_hotline/v1/line_invites/{rcode}/redeem"),
            Some(&meloni),
            None,
        )
        .await;
    assert!(
        s == 403 && v["error"].as_str().unwrap().contains("revoked"),
        "{v}"
    );
    let (_, bound) = http
        .call(
            "POST",
            "/_hotline/v1/line_invites",
            Some(&macron),
            Some(r#"{"for_user": "@meloni:localhost"}"#),
        )
        .await;
    let bcode = bound["code"].as_str().unwrap().to_owned();
    let (s, v) = http
        .call(
            "POST",
            &format!("/_hotline/v1/line_invites/{bcode}/redeem"),
            Some(&scholz),
            None,
        )
        .await;
    assert!(
        s == 403 && v["error"].as_str().unwrap().contains("someone else"),
        "{v}"
    );
    let (_, short) = http
        .call(
            "POST",
            "/_hotline/v1/line_invites",
            Some(&macron),
            Some(r#"{"expires_in_ms": 1000}"#),
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let scode = short["code"].as_str().unwrap();
    let (s, v) = http
        .call(
            "POST",
            &format!("/_hotline/v1/line_invites/{scode}/redeem"),
            Some(&meloni),
            None,
        )
        .await;
    assert!(
        s == 403 && v["error"].as_str().unwrap().contains("expired"),
        "{v}"
    );
    let (s, v) = http
        .call(
            "POST",
            &format!("/_hotline/v1/line_invites/{bcode}/redeem"),
            Some(&meloni),
            None,
        )
        .await;
    assert_eq!(s, 200, "the bound invite works for its counterpart: {v}");

    // Everything above is in the append-only audit log.
    let audit = server.admin(&["audit"]);
    for action in [
        "\tenrol\t",
        "enrolment_redeemed",
        "impersonation_refused",
        "line_invite_created",
        "line_invite_redeemed",
        "line_invite_revoked",
    ] {
        assert!(audit.contains(action), "audit has {action}:\n{audit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vouching_signs_a_verifiable_attestation_and_a_key_change_pauses_the_line() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let macron = http
        .enrolled(&server, "macron", "Emmanuel Macron", "principal", None)
        .await;
    let scholz = http
        .enrolled(&server, "scholz", "Olaf Scholz", "principal", None)
        .await;
    let m = sdk_login(&server.url, "macron").await;
    m.encryption()
        .bootstrap_cross_signing(Some(password("@macron:localhost")))
        .await
        .unwrap();
    let key = master_key(&http, &macron, "@macron:localhost").await;

    // The office compares the fingerprint: a wrong one is refused.
    let out = server
        .command()
        .args(["admin", "vouch", "macron", "--master-key", "AAAAwrongAAAA"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a wrong fingerprint is refused");
    let spaced: String = key
        .chars()
        .collect::<Vec<_>>()
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(" ");
    server.admin(&["vouch", "macron", "--master-key", &spaced]);

    // The directory carries the attestation; it verifies against the key
    // at /_matrix/key/v2/server, and an altered copy does not.
    let (_, keys) = http.call("GET", "/_matrix/key/v2/server", None, None).await;
    let (key_id, pk) = keys["verify_keys"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let pk = pk["key"].as_str().unwrap();
    let (s, dir) = http
        .call("GET", "/_hotline/v1/directory", Some(&scholz), None)
        .await;
    assert_eq!(s, 200, "{dir}");
    let att = dir["attestations"][0].clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let verified =
        verify_attestation(&att, "localhost", key_id, pk, now).expect("the attestation verifies");
    assert_eq!(
        (verified.user_id.as_str(), verified.master_key.as_str()),
        ("@macron:localhost", key.as_str())
    );
    assert_eq!(verified.title, "President");
    let mut forged = att.clone();
    forged["user_id"] = json!("@scholz:localhost");
    assert!(
        verify_attestation(&forged, "localhost", key_id, pk, now).is_err(),
        "an altered attestation fails"
    );

    // A line between them works while the keys match the attestation.
    let (_, inv) = http
        .call(
            "POST",
            "/_hotline/v1/line_invites",
            Some(&macron),
            Some("{}"),
        )
        .await;
    let (_, v) = http
        .call(
            "POST",
            &format!(
                "/_hotline/v1/line_invites/{}/redeem",
                inv["code"].as_str().unwrap()
            ),
            Some(&scholz),
            None,
        )
        .await;
    let line = v["room_id"].as_str().unwrap().to_owned();
    let send = |txn: &'static str| {
        let http = &http;
        let scholz = &scholz;
        let line = line.clone();
        async move {
            http.call(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{line}/send/m.room.encrypted/{txn}"),
                Some(scholz),
                Some(r#"{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA"}"#),
            )
            .await
        }
    };
    assert_eq!(send("a").await.0, 200);

    // Macron's master key changes (a reset on a new device): the line pauses.
    let m2 = sdk_login(&server.url, "macron").await;
    m2.encryption()
        .bootstrap_cross_signing(Some(password("@macron:localhost")))
        .await
        .unwrap();
    let new_key = master_key(&http, &macron, "@macron:localhost").await;
    assert_ne!(new_key, key);
    let (s, v) = send("b").await;
    assert_eq!(
        (s, v["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("paused"), "{v}");
    server.admin(&["vouch", "macron", "--master-key", &new_key]);
    assert_eq!(send("c").await.0, 200, "vouching again reopens the line");

    // Revocation takes effect at once.
    server.admin(&["revoke", "macron"]);
    let (_, dir) = http
        .call("GET", "/_hotline/v1/directory", Some(&scholz), None)
        .await;
    assert_eq!(dir["attestations"], json!([]));
    assert_eq!(dir["revocations"][0]["user_id"], "@macron:localhost");
    let audit = server.admin(&["audit"]);
    assert!(
        audit.contains("\tvouch\t") && audit.contains("\trevoke\t"),
        "{audit}"
    );
    drop((m, m2));
}

/// The office runs `hotline admin vouch` as its own process beside the
/// running server; clients sharing a room with the official hear of it in
/// `device_lists.changed` at once (their waiting `/sync` returns), not at
/// the server's next unrelated write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vouching_from_the_cli_wakes_the_syncs_of_those_sharing_a_room() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let macron = http
        .enrolled(&server, "macron", "Emmanuel Macron", "principal", None)
        .await;
    let alice = http.register("alice").await;
    let (s, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&macron),
            Some(&json!({"invite": ["@alice:localhost"]}).to_string()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let room = v["room_id"].as_str().unwrap().to_owned();
    let (s, v) = http
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&alice),
            Some("{}"),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let m = sdk_login(&server.url, "macron").await;
    m.encryption()
        .bootstrap_cross_signing(Some(password("@macron:localhost")))
        .await
        .unwrap();
    let key = master_key(&http, &macron, "@macron:localhost").await;

    // Alice's sync position after the cross-signing upload.
    let (s, v) = http
        .call(
            "GET",
            "/_matrix/client/v3/sync?timeout=0",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let since = v["next_batch"].as_str().unwrap().to_owned();
    let (s, v) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/sync?timeout=0&since={since}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(
        !v["device_lists"]["changed"]
            .to_string()
            .contains("@macron:localhost"),
        "nothing new before the vouch: {v}"
    );
    let since = v["next_batch"].as_str().unwrap().to_owned();

    let poll = {
        let http = Http::new(&server.url);
        let alice = alice.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let r = http
                .call(
                    "GET",
                    &format!("/_matrix/client/v3/sync?timeout=30000&since={since}"),
                    Some(&alice),
                    None,
                )
                .await;
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    server.admin(&["vouch", "macron", "--master-key", &key]);
    let ((s, v), waited) = poll.await.unwrap();
    assert_eq!(s, 200, "{v}");
    assert!(
        v["device_lists"]["changed"]
            .to_string()
            .contains("@macron:localhost"),
        "the vouch reaches device_lists: {v}"
    );
    assert!(
        waited < std::time::Duration::from_secs(10),
        "the waiting sync returned at the vouch, not at its 30 s timeout ({waited:?})"
    );
}
