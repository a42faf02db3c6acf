//! Federation with clients nobody here wrote: `matrix-sdk` users on two
//! Hotlines, and a Hotline beside Synapse (the reference homeserver, from
//! PyPI), federating on loopback over TLS, named by IP literal and port,
//! with certificates from the test's CA.
//!
//! Device keys, one-time keys and to-device room keys cross servers; each
//! server relays ciphertext only. Against Synapse this is the proof that
//! Hotline speaks the Server-Server protocol, not a dialect of its own.
//! Synapse runs with its defaults: its clients' rooms are of version 12
//! (the room id is the create event's hash), Hotline's of 11 unless asked.

use crate::common;
use crate::sdk;

use common::{
    knock_invite_join, scan_for_plaintext, FederatedServer, Http, Side, SynapseServer, TestCa,
};
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use sdk::*;
use serde_json::json;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hotline_and_a_synapse_share_rooms_and_an_encrypted_dm_both_ways() {
    let ca = TestCa::new();
    let ((ph, nh), (ps, ns)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let hotline = FederatedServer::start(&ca, ph, &[&ns], "").await;
    let synapse = SynapseServer::start(&ca, ps, &[&nh]).await;
    let (hh, hs) = (Http::new(&hotline.server.url), Http::new(&synapse.url));
    let alice = hh.register("alice").await;
    let sam = hs.register("sam").await;

    // Rooms on Hotline, of the version it makes by default and of the one
    // Synapse does (12: the room id is the create event's hash), joined
    // from Synapse.
    for version in ["11", "12"] {
        let (status, v) = hh
            .call(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&alice),
                Some(&json!({"preset": "public_chat", "room_version": version}).to_string()),
            )
            .await;
        assert_eq!(status, 200, "createRoom {version}: {v}");
        let room = v["room_id"].as_str().unwrap().to_owned();
        assert_eq!(room_version(&hh, &alice, &room).await, version);
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
            "Synapse joins a Hotline room of version {version}: {v}\n{}",
            synapse.log_text()
        );
        assert_eq!(room_version(&hs, &sam, &room).await, version);
        let (from_synapse, from_hotline) = (
            format!("from synapse, v{version}"),
            format!("from hotline, v{version}"),
        );
        hs.send_text(&sam, &room, "s1", &from_synapse).await;
        hh.wait_for_texts(&alice, &room, &[from_synapse.as_str()], 20)
            .await;
        hh.send_text(&alice, &room, "h1", &from_hotline).await;
        hs.wait_for_texts(
            &sam,
            &room,
            &[from_synapse.as_str(), from_hotline.as_str()],
            20,
        )
        .await;
    }

    // A room on Synapse, of its default version (12), joined from Hotline.
    let room = hs.create_public_room(&sam).await;
    assert_eq!(room_version(&hs, &sam, &room).await, "12");
    hs.send_text(&sam, &room, "s0", "said before hotline came")
        .await;
    let (status, v) = hh
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{room}?via={ns}"),
            Some(&alice),
            Some("{}"),
        )
        .await;
    assert_eq!(status, 200, "Hotline joins a Synapse room: {v}");
    assert_eq!(room_version(&hh, &alice, &room).await, "12");
    hh.send_text(&alice, &room, "h2", "hotline in synapse's room")
        .await;
    hs.wait_for_texts(
        &sam,
        &room,
        &["said before hotline came", "hotline in synapse's room"],
        20,
    )
    .await;
    hs.send_text(&sam, &room, "s2", "synapse answers").await;
    // The history before the join came with it, from Synapse's /backfill.
    hh.wait_for_texts(
        &alice,
        &room,
        &[
            "said before hotline came",
            "hotline in synapse's room",
            "synapse answers",
        ],
        20,
    )
    .await;
    // Its creator holds a power above every level: Hotline lets Synapse's
    // creator name the room and refuses the same of a plain member.
    let (status, v) = hs
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            Some(&sam),
            Some(r#"{"name": "Named by its creator"}"#),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    hh.wait_for_state(
        &alice,
        &room,
        "m.room.name",
        "name",
        "Named by its creator",
        20,
    )
    .await;
    let (status, v) = hh
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            Some(&alice),
            Some(r#"{"name": "Renamed by a member"}"#),
        )
        .await;
    assert_eq!(status, 403, "{v}");

    // A room with more history than a join brings: Hotline fetches the
    // rest from Synapse (its /backfill) as Alice pages back.
    let long = hs.create_public_room(&sam).await;
    let said: Vec<String> = (0..75).map(|i| format!("long ago {i}")).collect();
    for (i, text) in said.iter().enumerate() {
        hs.send_text(&sam, &long, &format!("l{i}"), text).await;
    }
    let (status, v) = hh
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{long}?via={ns}"),
            Some(&alice),
            Some("{}"),
        )
        .await;
    assert_eq!(status, 200, "Hotline joins a Synapse room: {v}");
    assert_eq!(hh.texts_paging_back(&alice, &long, 20).await, said);

    // Encrypted DMs with matrix-sdk clients, opened from either side (rooms
    // of version 11 on Hotline, 12 on Synapse).
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

/// The version of `room` as `token`'s server holds it (its create event).
async fn room_version(http: &Http, token: &str, room: &str) -> String {
    let (status, v) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.create/"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["room_version"].as_str().unwrap_or("1").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hotline_user_knocks_on_a_synapse_room_and_a_synapse_user_on_a_hotline_room() {
    let ca = TestCa::new();
    let ((ph, nh), (ps, ns)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let hotline = FederatedServer::start(&ca, ph, &[&ns], "").await;
    let synapse = SynapseServer::start(&ca, ps, &[&nh]).await;
    let alice = Side::of(&hotline, "alice").await;
    let carol = Side::of(&hotline, "carol").await;
    let sam = Side::register(&synapse.url, &synapse.name, "sam").await;
    // On Synapse, a room of its default version (12), knocked on from
    // Hotline, and a knock taken back through Synapse.
    knock_invite_join(&sam, &alice, Some(&carol), "12").await;
    // On Hotline, rooms of its own version (11) and of Synapse's, knocked
    // on from Synapse. (Synapse takes its users' knocks on other servers'
    // rooms back locally, telling the room's server nothing, so that step
    // is not checked this way.)
    let hal = Side::of(&hotline, "hal").await;
    let sue = Side::register(&synapse.url, &synapse.name, "sue").await;
    knock_invite_join(&alice, &sam, None, "11").await;
    knock_invite_join(&hal, &sue, None, "12").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn media_crosses_between_a_hotline_and_a_synapse_both_ways() {
    let ca = TestCa::new();
    let ((ph, nh), (ps, ns)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let hotline = FederatedServer::start(&ca, ph, &[&ns], "").await;
    let synapse = SynapseServer::start(&ca, ps, &[&nh]).await;
    let (hh, hs) = (Http::new(&hotline.server.url), Http::new(&synapse.url));
    let alice = hh.register("alice").await;
    let sam = hs.register("sam").await;
    let hotline_png = common::png(320, 200);
    let synapse_png = common::png(200, 320);
    let on_hotline = hh
        .upload(&alice, hotline_png.clone(), "image/png", "from-hotline.png")
        .await;
    let on_synapse = hs
        .upload(&sam, synapse_png.clone(), "image/png", "from-synapse.png")
        .await;
    assert!(
        on_hotline.starts_with(&format!("mxc://{nh}/")),
        "{on_hotline}"
    );
    assert!(
        on_synapse.starts_with(&format!("mxc://{ns}/")),
        "{on_synapse}"
    );
    // Each server's user downloads the other's file through their own
    // server: the same bytes, type and name.
    for (http, token, mxc, bytes, name) in [
        (&hs, &sam, &on_hotline, &hotline_png, "from-hotline.png"),
        (&hh, &alice, &on_synapse, &synapse_png, "from-synapse.png"),
    ] {
        let path = mxc.strip_prefix("mxc://").unwrap();
        let got = http
            .get_bytes(&format!("/_matrix/client/v1/media/download/{path}"), token)
            .await;
        assert_eq!(
            got.status,
            200,
            "{mxc}: {:?}\n{}",
            got.json(),
            synapse.log_text()
        );
        assert!(&got.body == bytes, "{mxc}: the bytes as uploaded");
        assert_eq!(got.content_type.as_deref(), Some("image/png"), "{mxc}");
        let disposition = got.disposition.unwrap_or_default();
        assert!(disposition.contains(name), "{mxc}: {disposition}");
        // And a thumbnail of it: at least the size asked, never upscaled
        // (Synapse answers from its preset sizes, up to the original's).
        let got = http
            .get_bytes(
                &format!(
                    "/_matrix/client/v1/media/thumbnail/{path}?width=32&height=32&method=scale"
                ),
                token,
            )
            .await;
        assert_eq!(got.status, 200, "{mxc} thumbnail: {:?}", got.json());
        let thumb = image::load_from_memory(&got.body).unwrap();
        let (w, h) = (thumb.width(), thumb.height());
        assert!(w.max(h) >= 32 && w <= 320 && h <= 320, "{mxc}: {w}×{h}");
    }
}
