//! Hotline and Synapse (the reference homeserver, from PyPI) federating on
//! loopback: the proof that Hotline speaks the Server-Server protocol, not
//! a dialect of its own. Both are named by IP literal and port and present
//! certificates from the test's CA, which each trusts for its peers.
//!
//! Synapse is configured with `default_room_version: "11"`: the rooms its
//! clients make by default are version 12 today, which Hotline does not
//! federate yet.

#![recursion_limit = "256"]

mod common;
#[path = "common/sdk.rs"]
mod sdk;

use common::{FederatedServer, Http, SynapseServer, TestCa};
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use sdk::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hotline_and_a_synapse_share_rooms_and_an_encrypted_dm_both_ways() {
    let ca = TestCa::new();
    let ((ph, nh), (ps, ns)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let hotline = FederatedServer::start(&ca, ph, &[&ns], "").await;
    let synapse = SynapseServer::start(&ca, ps, &[&nh]).await;
    let (hh, hs) = (Http::new(&hotline.server.url), Http::new(&synapse.url));
    let alice = hh.register("alice").await;
    let sam = hs.register("sam").await;

    // A room on Hotline, joined from Synapse.
    let room = hh.create_public_room(&alice).await;
    let (status, v) = hs
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{room}?server_name={nh}"),
            Some(&sam),
            Some("{}"),
        )
        .await;
    assert_eq!(
        status,
        200,
        "Synapse joins a Hotline room: {v}\n{}",
        synapse.log_text()
    );
    hs.send_text(&sam, &room, "s1", "from synapse").await;
    hh.wait_for_texts(&alice, &room, &["from synapse"], 20)
        .await;
    hh.send_text(&alice, &room, "h1", "from hotline").await;
    hs.wait_for_texts(&sam, &room, &["from synapse", "from hotline"], 20)
        .await;

    // A room on Synapse, joined from Hotline.
    let room = hs.create_public_room(&sam).await;
    let (status, v) = hh
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{room}?via={ns}"),
            Some(&alice),
            Some("{}"),
        )
        .await;
    assert_eq!(status, 200, "Hotline joins a Synapse room: {v}");
    hh.send_text(&alice, &room, "h2", "hotline in synapse's room")
        .await;
    hs.wait_for_texts(&sam, &room, &["hotline in synapse's room"], 20)
        .await;
    hs.send_text(&sam, &room, "s2", "synapse answers").await;
    hh.wait_for_texts(
        &alice,
        &room,
        &["hotline in synapse's room", "synapse answers"],
        20,
    )
    .await;

    // Encrypted DMs with matrix-sdk clients, opened from either side.
    register(&hotline.server.url, "hana").await;
    register(&synapse.url, "sid").await;
    let hana = login(&hotline.server.url, "hana", "HANA1").await;
    let sid = login(&synapse.url, "sid", "SID1").await;
    for (opener, other) in [(&hana, &sid), (&sid, &hana)] {
        let dm = encrypted_dm(opener, other).await;
        let here = opener.client.get_room(&dm).unwrap();
        let from = opener.client.user_id().unwrap().server_name().to_string();
        let first = format!("sealed, from {from}");
        here.send(RoomMessageEventContent::text_plain(&first))
            .await
            .unwrap();
        wait_seen(other, &first).await;
        let there = joined_room(other, &dm).await;
        let reply = format!("sealed reply to {from}");
        there
            .send(RoomMessageEventContent::text_plain(&reply))
            .await
            .unwrap();
        wait_seen(opener, &reply).await;
    }
}
