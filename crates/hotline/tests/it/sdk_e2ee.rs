//! End-to-end encryption on Hotline with `matrix-sdk` (its `e2e-encryption`
//! feature: vodozemac Olm/Megolm), a client nobody here wrote.
//!
//! The server only relays keys and ciphertext; these tests prove that real
//! clients can encrypt, share keys, verify each other and restore history
//! through it, and that the server's files never hold the plaintext.

use crate::common;
use crate::sdk;

use sdk::*;

use std::time::{Duration, Instant};

use matrix_sdk::encryption::verification::Verification;
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::OwnedDeviceId;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_device_decrypts_and_device_changes_reach_the_other_side() {
    let server = common::Server::start().await;
    register(&server.url, "alice").await;
    register(&server.url, "bob").await;
    let alice1 = login(&server.url, "alice", "ALICE1").await;
    let alice2 = login(&server.url, "alice", "ALICE2").await;
    let bob1 = login(&server.url, "bob", "BOB1").await;
    let bob2 = login(&server.url, "bob", "BOB2").await;
    let bob_id = bob1.client.user_id().unwrap().to_owned();

    let room_id = encrypted_dm(&alice1, &bob1).await;
    let room = alice1.client.get_room(&room_id).unwrap();
    eventually("the room is encrypted for Alice", || async {
        room.latest_encryption_state().await.unwrap().is_encrypted()
    })
    .await;

    // The server carries ciphertext only.
    let sent = room
        .send(RoomMessageEventContent::text_plain("the summit is on"))
        .await
        .unwrap();
    let token = alice1.client.access_token().unwrap();
    let stored: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v3/rooms/{}/event/{}",
            server.url, room_id, sent.response.event_id
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stored["type"], "m.room.encrypted",
        "the server holds only ciphertext"
    );
    assert!(stored["content"]["ciphertext"].is_string());

    for d in [&alice1, &alice2, &bob1, &bob2] {
        wait_seen(d, "the summit is on").await;
    }
    let bob_room = joined_room(&bob2, &room_id).await;
    bob_room
        .send(RoomMessageEventContent::text_plain("agreed, Tuesday"))
        .await
        .unwrap();
    for d in [&alice1, &alice2, &bob1, &bob2] {
        wait_seen(d, "agreed, Tuesday").await;
    }

    // A device added later receives later messages.
    let bob3 = login(&server.url, "bob", "BOB3").await;
    eventually("Alice learns of Bob's new device", || async {
        alice1
            .client
            .encryption()
            .get_user_devices(&bob_id)
            .await
            .unwrap()
            .devices()
            .any(|d| d.device_id() == "BOB3")
    })
    .await;
    room.send(RoomMessageEventContent::text_plain("welcome, new phone"))
        .await
        .unwrap();
    wait_seen(&bob3, "welcome, new phone").await;

    // A deleted device stops receiving: its token dies, its keys go, and
    // Alice's client drops it from Bob's device list.
    let bob2_id: OwnedDeviceId = "BOB2".into();
    bob1.client
        .delete_devices(&[bob2_id.clone()], Some(password_auth(&bob_id)))
        .await
        .unwrap();
    eventually("Alice forgets Bob's deleted device", || async {
        !alice1
            .client
            .encryption()
            .get_user_devices(&bob_id)
            .await
            .unwrap()
            .devices()
            .any(|d| d.device_id() == "BOB2")
    })
    .await;
    let whoami = bob2.client.whoami().await;
    assert!(whoami.is_err(), "the deleted device's token is refused");
    room.send(RoomMessageEventContent::text_plain("after the reshuffle"))
        .await
        .unwrap();
    for d in [&alice2, &bob1, &bob3] {
        wait_seen(d, "after the reshuffle").await;
    }
    assert!(
        !bob2
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|b| b == "after the reshuffle"),
        "the deleted device did not get the later message"
    );

    // Nothing the clients said is in the server's files.
    drop((alice1, alice2, bob1, bob2, bob3));
    let found = common::scan_for_plaintext(
        &server.data,
        &[
            "the summit is on",
            "agreed, Tuesday",
            "welcome, new phone",
            "after the reshuffle",
        ],
    );
    assert!(
        found.is_empty(),
        "plaintext found in the data directory: {found:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_signing_and_emoji_verification_of_a_new_device() {
    let server = common::Server::start().await;
    register(&server.url, "alice").await;
    let alice1 = login(&server.url, "alice", "ALICE1").await;
    let alice_id = alice1.client.user_id().unwrap().to_owned();
    alice1
        .client
        .encryption()
        .bootstrap_cross_signing(Some(password_auth(&alice_id)))
        .await
        .unwrap();
    let status = alice1
        .client
        .encryption()
        .cross_signing_status()
        .await
        .unwrap();
    assert!(
        status.is_complete(),
        "ALICE1 holds all three cross-signing keys"
    );

    let alice2 = login(&server.url, "alice", "ALICE2").await;
    eventually(
        "ALICE2 sees ALICE1 and the cross-signing identity",
        || async {
            alice2
                .client
                .encryption()
                .get_device(&alice_id, "ALICE1".into())
                .await
                .unwrap()
                .is_some()
        },
    )
    .await;

    // ALICE1 learns of ALICE2 through `device_lists` and `/keys/query`.
    eventually("ALICE1 sees the new device ALICE2", || async {
        alice1
            .client
            .encryption()
            .get_device(&alice_id, "ALICE2".into())
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let device1 = alice2
        .client
        .encryption()
        .get_device(&alice_id, "ALICE1".into())
        .await
        .unwrap()
        .unwrap();
    let request2 = device1.request_verification().await.unwrap();
    let flow = request2.flow_id().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let request1 = loop {
        assert!(
            Instant::now() < deadline,
            "ALICE1 never got the verification request"
        );
        match alice1
            .client
            .encryption()
            .get_verification_request(&alice_id, &flow)
            .await
        {
            Some(r) => break r,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    request1.accept().await.unwrap();
    eventually("the request is ready on ALICE2", || async {
        request2.is_ready()
    })
    .await;
    let sas2 = request2.start_sas().await.unwrap().expect("SAS starts");
    let sas1 = loop {
        assert!(Instant::now() < deadline, "ALICE1 never saw the SAS start");
        match alice1
            .client
            .encryption()
            .get_verification(&alice_id, &flow)
            .await
        {
            Some(Verification::SasV1(s)) => break s,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    sas1.accept().await.unwrap();
    eventually("both sides show emoji", || async {
        sas1.emoji().is_some() && sas2.emoji().is_some()
    })
    .await;
    let e1: Vec<_> = sas1.emoji().unwrap().iter().map(|e| e.symbol).collect();
    let e2: Vec<_> = sas2.emoji().unwrap().iter().map(|e| e.symbol).collect();
    assert_eq!(e1, e2, "both devices show the same seven emoji");
    sas1.confirm().await.unwrap();
    // As two people would, one device confirms a moment after the other.
    // Confirmed in the same instant, the flow stalls in about 1 run in 10,
    // on the client's side: traced through the server's to-device log,
    // ALICE2's sync task, handling ALICE1's `mac`, sends its `done` on one
    // request while `confirm()` sends its own `mac` on another, and the
    // `done` reaches the server ~0.1 ms first. The server delivers in the
    // order it receives, so ALICE1 sees `done` before `mac` and its SAS
    // stays `Confirmed`.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sas2.confirm().await.unwrap();
    eventually("the verification completes on both sides", || async {
        sas1.is_done() && sas2.is_done()
    })
    .await;

    // ALICE1 now trusts ALICE2 through cross-signing (ALICE2's key is signed
    // by Alice's self-signing key, uploaded with /keys/signatures/upload).
    eventually("ALICE2 is cross-signed in ALICE1's view", || async {
        alice1
            .client
            .encryption()
            .get_device(&alice_id, "ALICE2".into())
            .await
            .unwrap()
            .is_some_and(|d| d.is_cross_signed_by_owner() && d.is_verified())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_backup_restores_history_on_a_fresh_login() {
    let server = common::Server::start().await;
    register(&server.url, "alice").await;
    register(&server.url, "bob").await;
    let alice1 = login(&server.url, "alice", "ALICE1").await;
    let bob1 = login(&server.url, "bob", "BOB1").await;

    let recovery_key = alice1
        .client
        .encryption()
        .recovery()
        .enable()
        .await
        .unwrap();
    let room_id = encrypted_dm(&alice1, &bob1).await;
    let room = alice1.client.get_room(&room_id).unwrap();
    for text in ["minutes of the call", "next call at nine"] {
        room.send(RoomMessageEventContent::text_plain(text))
            .await
            .unwrap();
        wait_seen(&bob1, text).await;
    }
    alice1
        .client
        .encryption()
        .backups()
        .wait_for_steady_state()
        .await
        .unwrap();

    // A new device of Alice's knows nothing until it restores the backup.
    let alice2 = login(&server.url, "alice", "ALICE2").await;
    alice2
        .client
        .encryption()
        .recovery()
        .recover(&recovery_key)
        .await
        .unwrap();
    let room2 = joined_room(&alice2, &room_id).await;
    alice2
        .client
        .encryption()
        .backups()
        .download_room_keys_for_room(&room_id)
        .await
        .unwrap();
    let page = room2.messages(MessagesOptions::backward()).await.unwrap();
    let bodies: Vec<String> = page
        .chunk
        .iter()
        .filter_map(|e| {
            let v: serde_json::Value = serde_json::from_str(e.raw().json().get()).ok()?;
            (v["type"] == "m.room.message")
                .then(|| v["content"]["body"].as_str().map(str::to_owned))?
        })
        .collect();
    assert!(
        bodies.contains(&"minutes of the call".to_owned())
            && bodies.contains(&"next call at nine".to_owned()),
        "the fresh login decrypts earlier history from the backup, got {bodies:?}"
    );
}
