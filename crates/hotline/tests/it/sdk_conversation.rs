//! Two users hold a direct conversation through Hotline using `matrix-sdk`,
//! a Matrix client nobody here wrote; a third user is kept out.

use crate::common;

use std::time::Duration;

use matrix_sdk::config::SyncSettings;
use matrix_sdk::media::{MediaFormat, MediaRequestParameters};
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::api::client::account::register::v3::Request as RegisterRequest;
use matrix_sdk::ruma::api::client::receipt::create_receipt::v3::ReceiptType;
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use matrix_sdk::ruma::api::client::uiaa::{AuthData, Dummy};
use matrix_sdk::ruma::events::receipt::ReceiptThread;
use matrix_sdk::ruma::events::room::message::{
    RoomMessageEventContent, RoomMessageEventContentWithoutRelation,
};
use matrix_sdk::ruma::events::room::MediaSource;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, UInt};
use matrix_sdk::Client;

async fn client(url: &str, name: &str) -> Client {
    let client = Client::builder().homeserver_url(url).build().await.unwrap();
    let mut req = RegisterRequest::new();
    req.username = Some(name.to_owned());
    req.password = Some("correct horse battery".to_owned());
    req.auth = Some(AuthData::Dummy(Dummy::new()));
    client.matrix_auth().register(req).await.unwrap();
    client
}

async fn sync(c: &Client) {
    c.sync_once(SyncSettings::default().timeout(Duration::from_millis(0)))
        .await
        .unwrap();
}

/// The room's history read backwards with `/messages`, `limit` events per
/// request: each page's events (raw JSON, newest first), in page order.
async fn pages(c: &Client, room: &OwnedRoomId, limit: u32) -> Vec<Vec<serde_json::Value>> {
    let room = c.get_room(room).unwrap();
    let mut pages = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut opts = MessagesOptions::backward().from(from.as_deref());
        opts.limit = UInt::from(limit);
        let page = room.messages(opts).await.unwrap();
        let events: Vec<serde_json::Value> = page
            .chunk
            .iter()
            .map(|ev| serde_json::from_str(ev.raw().json().get()).unwrap())
            .collect();
        let done = events.is_empty();
        if !done {
            pages.push(events);
        }
        match page.end {
            Some(end) if !done => from = Some(end),
            _ => break,
        }
        assert!(pages.len() < 1000, "pagination does not end");
    }
    pages
}

/// Text bodies of the room's history, oldest first, read with `/messages`.
async fn history(c: &Client, room: &OwnedRoomId) -> Vec<String> {
    let mut bodies: Vec<String> = pages(c, room, 10)
        .await
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "m.room.message")
        .map(|v| {
            v["content"]["body"]
                .as_str()
                .unwrap_or("<redacted>")
                .to_owned()
        })
        .collect();
    bodies.reverse();
    bodies
}

fn event_ids(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|v| v["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_converse_in_a_dm_and_a_stranger_is_kept_out() {
    let server = common::Server::start().await;
    let alice = client(&server.url, "alice").await;
    let bob = client(&server.url, "bob").await;
    let eve = client(&server.url, "eve").await;
    let bob_id: OwnedUserId = bob.user_id().unwrap().to_owned();

    // Alice opens a DM with Bob; Bob sees the invite and joins.
    let mut req = CreateRoomRequest::new();
    req.is_direct = true;
    req.preset = Some(RoomPreset::TrustedPrivateChat);
    req.invite = vec![bob_id.clone()];
    let room = alice.create_room(req).await.unwrap();
    let room_id = room.room_id().to_owned();
    sync(&bob).await;
    assert!(bob.get_room(&room_id).is_some(), "bob sees the invite");
    bob.join_room_by_id(&room_id).await.unwrap();
    sync(&alice).await;

    // Messages both ways, and a page of history.
    let alice_room = alice.get_room(&room_id).unwrap();
    let bob_room = bob.get_room(&room_id).unwrap();
    for i in 0..15 {
        alice_room
            .send(RoomMessageEventContent::text_plain(format!("alice {i}")))
            .await
            .unwrap();
    }
    let reply = bob_room
        .send(RoomMessageEventContent::text_plain("bob says hi"))
        .await
        .unwrap();
    // History in pages of at most 3 events: several pages, each within the
    // limit, and together exactly the events of one big page, in order.
    let small = pages(&alice, &room_id, 3).await;
    assert!(small.len() > 1, "history came in {} page(s)", small.len());
    for (i, page) in small.iter().enumerate() {
        assert!(
            !page.is_empty() && page.len() <= 3,
            "page {i} has {} events, limit 3",
            page.len()
        );
    }
    let paged: Vec<serde_json::Value> = small.into_iter().flatten().collect();
    let paged_ids = event_ids(&paged);
    let unique: std::collections::HashSet<&String> = paged_ids.iter().collect();
    assert_eq!(
        unique.len(),
        paged_ids.len(),
        "no event twice: {paged_ids:?}"
    );
    let whole = pages(&alice, &room_id, 1000).await;
    assert_eq!(whole.len(), 1, "limit 1000 gives one page");
    assert_eq!(
        paged_ids,
        event_ids(&whole[0]),
        "pages of 3 miss or reorder nothing"
    );
    assert_eq!(
        paged.last().unwrap()["type"],
        "m.room.create",
        "paging ends at the room's creation"
    );
    let h = history(&alice, &room_id).await;
    let expected: Vec<String> = (0..15)
        .map(|i| format!("alice {i}"))
        .chain(["bob says hi".to_owned()])
        .collect();
    assert_eq!(h, expected, "both sides' messages, in order, across pages");

    // Typing: Bob types, Alice's next sync shows it.
    bob_room.typing_notice(true).await.unwrap();
    let resp = alice
        .sync_once(SyncSettings::default().timeout(Duration::from_millis(0)))
        .await
        .unwrap();
    let typing_seen = resp.rooms.joined.get(&room_id).is_some_and(|r| {
        r.ephemeral.iter().any(|e| {
            e.json().get().contains("m.typing") && e.json().get().contains("@bob:localhost")
        })
    });
    assert!(typing_seen, "alice sees bob typing");

    // Read receipt: Alice reads Bob's reply; Bob sees the receipt.
    alice_room
        .send_single_receipt(
            ReceiptType::Read,
            ReceiptThread::Unthreaded,
            reply.response.event_id.clone(),
        )
        .await
        .unwrap();
    let resp = bob
        .sync_once(SyncSettings::default().timeout(Duration::from_millis(0)))
        .await
        .unwrap();
    let receipt_seen = resp.rooms.joined.get(&room_id).is_some_and(|r| {
        r.ephemeral.iter().any(|e| {
            let j = e.json().get();
            j.contains("m.receipt")
                && j.contains(reply.response.event_id.as_str())
                && j.contains("@alice:localhost")
        })
    });
    assert!(receipt_seen, "bob sees alice's read receipt");

    // Edit and redact.
    let original = alice_room
        .send(RoomMessageEventContent::text_plain("typo"))
        .await
        .unwrap();
    let edit = RoomMessageEventContentWithoutRelation::text_plain("fixed").make_replacement(
        matrix_sdk::ruma::events::room::message::ReplacementMetadata::new(
            original.response.event_id.clone(),
            None,
        ),
    );
    let edit_id = alice_room.send(edit).await.unwrap().response.event_id;
    // Bob gets the edit back as an m.replace of the original, with the new
    // content, both from /event and in his /messages history.
    let raw_edit = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v3/rooms/{}/event/{}",
            server.url, room_id, edit_id
        ))
        .bearer_auth(bob.access_token().unwrap())
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let paged_edit = pages(&bob, &room_id, 10)
        .await
        .into_iter()
        .flatten()
        .find(|v| v["event_id"] == edit_id.as_str())
        .expect("the edit is in bob's history");
    for (source, ev) in [("/event", &raw_edit), ("/messages", &paged_edit)] {
        let content = &ev["content"];
        assert_eq!(ev["sender"], "@alice:localhost", "{source}: {ev}");
        assert_eq!(
            content["m.relates_to"]["rel_type"], "m.replace",
            "{source}: {ev}"
        );
        assert_eq!(
            content["m.relates_to"]["event_id"],
            original.response.event_id.as_str(),
            "{source}: the edit points at the original: {ev}"
        );
        assert_eq!(content["m.new_content"]["body"], "fixed", "{source}: {ev}");
        assert_eq!(
            content["m.new_content"]["msgtype"], "m.text",
            "{source}: {ev}"
        );
        assert_eq!(
            content["body"], "* fixed",
            "{source}: the fallback body: {ev}"
        );
    }
    let secret = alice_room
        .send(RoomMessageEventContent::text_plain("delete me"))
        .await
        .unwrap();
    alice_room
        .redact(&secret.response.event_id, Some("oops"), None)
        .await
        .unwrap();
    let raw = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v3/rooms/{}/event/{}",
            server.url, room_id, secret.response.event_id
        ))
        .bearer_auth(bob.access_token().unwrap())
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(
        raw["content"],
        serde_json::json!({}),
        "redacted content is gone for everyone"
    );
    assert!(raw["unsigned"]["redacted_because"].is_object());
    let h = history(&bob, &room_id).await;
    assert!(
        h.contains(&"typo".to_owned()) && h.iter().any(|b| b.ends_with("fixed")),
        "original and edit both in history: {h:?}"
    );
    assert!(
        !h.contains(&"delete me".to_owned()),
        "redacted body never returned: {h:?}"
    );

    // Media round trip through authenticated media.
    let bytes = b"\x89PNG not really an image, but bytes".to_vec();
    let upload = alice
        .media()
        .upload(&"image/png".parse().unwrap(), bytes.clone(), None)
        .await
        .unwrap();
    let req = MediaRequestParameters {
        source: MediaSource::Plain(upload.content_uri.clone()),
        format: MediaFormat::File,
    };
    let downloaded = bob.media().get_media_content(&req, false).await.unwrap();
    assert_eq!(downloaded, bytes);

    // The empty state key works with and without the trailing slash.
    let http = common::Http::new(&server.url);
    let alice_token = alice.access_token().unwrap();
    for path in ["m.room.create", "m.room.create/"] {
        let (status, v) = http
            .call(
                "GET",
                &format!("/_matrix/client/v3/rooms/{room_id}/state/{path}"),
                Some(&alice_token),
                None,
            )
            .await;
        assert_eq!(
            (
                status,
                v["creator"].is_string() || v["room_version"].is_string()
            ),
            (200, true),
            "{path}: {v}"
        );
    }

    // A third user outside the room is refused its messages and state.
    let eve_token = eve.access_token().unwrap();
    for path in [
        format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b"),
        format!("/_matrix/client/v3/rooms/{room_id}/state"),
        format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.create"),
        format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.create/"),
        format!(
            "/_matrix/client/v3/rooms/{room_id}/event/{}",
            reply.response.event_id
        ),
        format!("/_matrix/client/v3/rooms/{room_id}/members"),
    ] {
        let (status, v) = http.call("GET", &path, Some(&eve_token), None).await;
        assert_eq!(
            (status, v["errcode"].as_str()),
            (403, Some("M_FORBIDDEN")),
            "{path}: {v}"
        );
    }
    let (status, v) = http
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{room_id}"),
            Some(&eve_token),
            Some("{}"),
        )
        .await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "eve cannot join an invite-only room: {v}"
    );

    // Bob leaves; he no longer sees new messages.
    bob_room.leave().await.unwrap();
    alice_room
        .send(RoomMessageEventContent::text_plain("after bob left"))
        .await
        .unwrap();
    let h = history(&bob, &room_id).await;
    assert!(!h.contains(&"after bob left".to_owned()));
    assert!(
        h.contains(&"bob says hi".to_owned()),
        "bob still reads what he saw"
    );
}
