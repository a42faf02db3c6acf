//! End-to-end encryption across two federating Hotlines, with `matrix-sdk`
//! clients on each side: device keys, one-time keys and to-device room keys
//! cross servers; each server relays ciphertext only.

#![recursion_limit = "256"]

mod common;
#[path = "common/sdk.rs"]
mod sdk;

use common::{scan_for_plaintext, FederatedServer, TestCa};
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use sdk::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_encrypted_dm_between_users_of_two_servers_decrypts_on_both_sides() {
    let ca = TestCa::new();
    let ((pa, na), (pb, nb)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let a = FederatedServer::start(&ca, pa, &[&nb], "").await;
    let b = FederatedServer::start(&ca, pb, &[&na], "").await;
    register(&a.server.url, "alice").await;
    register(&b.server.url, "bob").await;
    let alice = login(&a.server.url, "alice", "ALICE1").await;
    let bob = login(&b.server.url, "bob", "BOB1").await;
    // Alice (on A) opens an encrypted DM with Bob (on B), who joins.
    let room = encrypted_dm(&alice, &bob).await;
    let on_a = alice.client.get_room(&room).unwrap();
    assert!(on_a.latest_encryption_state().await.unwrap().is_encrypted());
    on_a.send(RoomMessageEventContent::text_plain("the summit is at nine"))
        .await
        .unwrap();
    wait_seen(&bob, "the summit is at nine").await;
    let on_b = joined_room(&bob, &room).await;
    on_b.send(RoomMessageEventContent::text_plain("agreed, nine it is"))
        .await
        .unwrap();
    wait_seen(&alice, "agreed, nine it is").await;
    // A second device of Bob's, signed in later, gets the next message's
    // key too: its keys reach A through B.
    let bob2 = login(&b.server.url, "bob", "BOB2").await;
    eventually("Alice's client knows Bob's second device", || async {
        alice
            .client
            .encryption()
            .get_user_devices(bob.client.user_id().unwrap())
            .await
            .is_ok_and(|d| d.devices().count() == 2)
    })
    .await;
    on_a.send(RoomMessageEventContent::text_plain(
        "for both of your devices",
    ))
    .await
    .unwrap();
    wait_seen(&bob2, "for both of your devices").await;
    wait_seen(&bob, "for both of your devices").await;
    // Neither server's files hold a word of it.
    drop((alice, bob, bob2));
    for server in [&a, &b] {
        let found = scan_for_plaintext(
            &server.server.data,
            &["summit is at nine", "nine it is", "both of your devices"],
        );
        assert!(found.is_empty(), "plaintext on {}: {found:?}", server.name);
    }
}
