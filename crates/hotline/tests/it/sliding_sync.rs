//! Simplified Sliding Sync (MSC4186) with the clients built on it:
//! `matrix-sdk-ui`'s `RoomListService` (Element X's room list) and its
//! `Timeline`, run against Hotline and, for the room list, against Synapse
//! in the same test, and every answer of a raw session checked against
//! the MSC's shapes (ruma's `v5::Response` and the fields the MSC names).

use crate::common;
use crate::sdk;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{FederatedServer, Http, SynapseServer, TestCa};
use futures_util::StreamExt;
use matrix_sdk::ruma::api::client::sync::sync_events::v5 as msc4186;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::OwnedRoomId;
use matrix_sdk::sliding_sync::VersionBuilder;
use matrix_sdk::Client;
use matrix_sdk_ui::eyeball_im::Vector;
use matrix_sdk_ui::room_list_service::filters::new_filter_non_left;
use matrix_sdk_ui::room_list_service::RoomListItem;
use matrix_sdk_ui::sync_service::SyncService;
use matrix_sdk_ui::timeline::RoomExt;
use serde_json::{json, Value};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// A client that must find sliding sync in the server's `/versions`, as
/// Element X does.
async fn sliding_client(url: &str, user: &str) -> Client {
    let client = Client::builder()
        .homeserver_url(url)
        .sliding_sync_version_builder(VersionBuilder::DiscoverNative)
        .build()
        .await
        .expect("the server advertises Simplified Sliding Sync");
    client
        .matrix_auth()
        .login_username(user, sdk::PASSWORD)
        .device_id("ROOMLIST")
        .send()
        .await
        .unwrap();
    client
}

/// The room list as the app shows it: names, in order, of rooms not left.
struct Shown(Arc<Mutex<Vector<RoomListItem>>>);

impl Shown {
    fn names(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.name().unwrap_or_else(|| r.room_id().to_string()))
            .collect()
    }

    async fn until(&self, what: &str, want: &[&str]) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let names = self.names();
            if names == want {
                return names;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the room list shows {names:?}, not {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn create_named(http: &Http, token: &str, name: &str, invite: &str) -> String {
    let body = json!({"name": name, "invite": [invite], "preset": "private_chat"});
    http.create_room_with(token, &body).await
}

/// One server's run of the story: the room list's orders as it goes.
async fn room_list_story(url: &str) -> Vec<Vec<String>> {
    let http = Http::new(url);
    let bob = http.register("bob").await;
    common::sdk_register(url, "alice", sdk::PASSWORD).await;
    let bob_id = http.user_id(&bob).await;
    let alice_id = format!("@alice:{}", bob_id.split_once(':').unwrap().1);
    let mut rooms = BTreeMap::new();
    for name in ["Summit", "Tariffs", "Treaty"] {
        rooms.insert(name, create_named(&http, &bob, name, &alice_id).await);
    }
    let alice = sliding_client(url, "alice").await;
    for id in rooms.values() {
        alice
            .join_room_by_id(&OwnedRoomId::try_from(id.as_str()).unwrap())
            .await
            .unwrap();
    }
    // Apart in time: clients order rooms by their newest event's
    // timestamp, to the millisecond, then by name.
    for (i, name) in ["Summit", "Tariffs", "Treaty"].iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(20)).await;
        http.send_text(
            &bob,
            &rooms[name],
            &format!("t{i}"),
            &format!("about the {name}"),
        )
        .await;
    }

    let sync = SyncService::builder(alice.clone()).build().await.unwrap();
    sync.start().await;
    let list_service = sync.room_list_service();
    let all_rooms = list_service.all_rooms().await.unwrap();
    let shown = Shown(Arc::new(Mutex::new(Vector::new())));
    let into = shown.0.clone();
    let follow = tokio::spawn(async move {
        let (stream, controller) = all_rooms.entries_with_dynamic_adapters(50);
        controller.set_filter(Box::new(new_filter_non_left()));
        futures_util::pin_mut!(stream);
        while let Some(diffs) = stream.next().await {
            let mut v = into.lock().unwrap();
            for d in diffs {
                d.apply(&mut v);
            }
        }
    });

    let mut orders = Vec::new();
    orders.push(
        shown
            .until(
                "the newest conversation first",
                &["Treaty", "Tariffs", "Summit"],
            )
            .await,
    );
    http.send_text(&bob, &rooms["Summit"], "t9", "the summit moves")
        .await;
    orders.push(
        shown
            .until(
                "a new text moves its room up",
                &["Summit", "Treaty", "Tariffs"],
            )
            .await,
    );
    let accord = create_named(&http, &bob, "Accord", &alice_id).await;
    orders.push(
        shown
            .until(
                "an invitation comes in at the top",
                &["Accord", "Summit", "Treaty", "Tariffs"],
            )
            .await,
    );
    alice
        .get_room(&OwnedRoomId::try_from(rooms["Tariffs"].as_str()).unwrap())
        .unwrap()
        .leave()
        .await
        .unwrap();
    orders.push(
        shown
            .until("a room left goes", &["Accord", "Summit", "Treaty"])
            .await,
    );
    alice
        .join_room_by_id(&OwnedRoomId::try_from(accord.as_str()).unwrap())
        .await
        .unwrap();
    http.send_text(&bob, &rooms["Treaty"], "t10", "treaty text agreed")
        .await;
    orders.push(
        shown
            .until(
                "the invitation accepted, and a newer text",
                &["Treaty", "Accord", "Summit"],
            )
            .await,
    );
    sync.stop().await;
    follow.abort();
    orders
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_room_list_service_lists_orders_and_updates_rooms_on_hotline_as_on_synapse() {
    let server = common::Server::start().await;
    let hotline = room_list_story(&server.url).await;

    let ca = TestCa::new();
    let (ps, _) = FederatedServer::reserve();
    let synapse = SynapseServer::start(&ca, ps, &[]).await;
    let reference = room_list_story(&synapse.url).await;
    assert_eq!(
        hotline, reference,
        "the room list on Hotline (left) as on Synapse (right)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_timeline_over_sliding_sync_shows_an_encrypted_conversation_both_ways() {
    let server = common::Server::start().await;
    sdk::register(&server.url, "alice").await;
    sdk::register(&server.url, "bob").await;
    // Bob on the classic `/v3/sync`; Alice on sliding sync only, her
    // to-device messages and device lists through its extensions.
    let bob = sdk::login(&server.url, "bob", "BOB").await;
    let alice = sliding_client(&server.url, "alice").await;
    let sync = SyncService::builder(alice.clone()).build().await.unwrap();
    sync.start().await;

    let alice_id = alice.user_id().unwrap().to_owned();
    let room = bob.client.create_dm(&alice_id).await.unwrap();
    let room_id = room.room_id().to_owned();
    sdk::eventually("Alice's room list has Bob's invitation", || async {
        alice.get_room(&room_id).is_some()
    })
    .await;
    alice.join_room_by_id(&room_id).await.unwrap();
    sdk::eventually("Bob sees Alice joined", || async {
        room.get_member_no_sync(&alice_id)
            .await
            .ok()
            .flatten()
            .is_some_and(|m| {
                *m.membership() == matrix_sdk::ruma::events::room::member::MembershipState::Join
            })
    })
    .await;
    room.send(RoomMessageEventContent::text_plain("the summit is on"))
        .await
        .unwrap();

    let alice_room = alice.get_room(&room_id).unwrap();
    let timeline = alice_room.timeline().await.unwrap();
    let bodies = |items: &Vector<Arc<matrix_sdk_ui::timeline::TimelineItem>>| -> Vec<String> {
        items
            .iter()
            .filter_map(|i| i.as_event())
            .filter_map(|e| e.content().as_message().map(|m| m.body().to_owned()))
            .collect()
    };
    sdk::eventually("Alice's timeline shows Bob's text, decrypted", || async {
        bodies(&timeline.items().await).contains(&"the summit is on".to_owned())
    })
    .await;
    assert!(
        alice_room
            .latest_encryption_state()
            .await
            .unwrap()
            .is_encrypted(),
        "the conversation is encrypted"
    );

    timeline
        .send(RoomMessageEventContent::text_plain("see you there").into())
        .await
        .unwrap();
    sdk::wait_seen(&bob, "see you there").await;
    sdk::eventually("Alice's timeline shows her own text", || async {
        bodies(&timeline.items().await).contains(&"see you there".to_owned())
    })
    .await;

    // The server holds only ciphertext of either text.
    let (_, messages) = Http::new(&server.url)
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=20"),
            Some(&bob.client.access_token().unwrap()),
            None,
        )
        .await;
    let kinds: Vec<&str> = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.get("state_key").is_none())
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.len() >= 2 && kinds.iter().all(|k| *k == "m.room.encrypted"),
        "only ciphertext on the server: {kinds:?}"
    );
    sync.stop().await;
}

/// The fields the MSC gives a room entry.
const ROOM_FIELDS: &[&str] = &[
    "name",
    "avatar",
    "heroes",
    "initial",
    "is_dm",
    "invite_state",
    "required_state",
    "timeline",
    "prev_batch",
    "limited",
    "num_live",
    "bump_stamp",
    "joined_count",
    "invited_count",
    "notification_count",
    "highlight_count",
];

/// Checks one answer against the MSC: ruma's parse of the whole (types of
/// every known field), then what ruma lets pass: no field the MSC does not
/// name, events shaped as events.
fn check_shape(answer: &Value) -> msc4186::Response {
    use matrix_sdk::ruma::api::IncomingResponse;
    let http = http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(answer).unwrap())
        .unwrap();
    let parsed = msc4186::Response::try_from_http_response(http)
        .unwrap_or_else(|e| panic!("not an MSC4186 response ({e}): {answer}"));
    assert!(answer["pos"].is_string(), "pos is a string: {answer}");
    for (name, list) in answer["lists"].as_object().unwrap() {
        assert!(list["count"].is_u64(), "list {name}: {list}");
        assert_eq!(list.as_object().unwrap().len(), 1, "list {name}: {list}");
    }
    for (id, room) in answer["rooms"].as_object().unwrap() {
        assert!(id.starts_with('!'), "a room id: {id}");
        for key in room.as_object().unwrap().keys() {
            assert!(ROOM_FIELDS.contains(&key.as_str()), "{id}: field {key:?}");
        }
        for e in room["timeline"].as_array().into_iter().flatten() {
            for f in ["event_id", "type", "sender", "origin_server_ts", "content"] {
                assert!(!e[f].is_null(), "{id}: timeline event without {f}: {e}");
            }
            assert!(
                e.get("room_id").is_none(),
                "sync events carry no room_id: {e}"
            );
        }
        for e in room["required_state"].as_array().into_iter().flatten() {
            assert!(e["state_key"].is_string(), "{id}: state without a key: {e}");
        }
        for e in room["invite_state"].as_array().into_iter().flatten() {
            for f in ["type", "state_key", "content", "sender"] {
                assert!(!e[f].is_null(), "{id}: stripped state without {f}: {e}");
            }
        }
        if room.get("timeline").is_some() {
            assert!(
                room["prev_batch"].is_string(),
                "{id}: a timeline has prev_batch"
            );
        }
    }
    let ext = &answer["extensions"];
    if let Some(t) = ext.get("to_device") {
        assert!(t["next_batch"].is_string(), "to_device: {t}");
    }
    if let Some(k) = ext.get("e2ee") {
        assert!(k["device_one_time_keys_count"].is_object(), "e2ee: {k}");
    }
    for (kind, key) in [("receipts", "m.receipt"), ("typing", "m.typing")] {
        for (room, e) in ext[kind]["rooms"].as_object().into_iter().flatten() {
            assert_eq!(e["type"], key, "{kind} of {room}: {e}");
            assert!(e["content"].is_object(), "{kind} of {room}: {e}");
        }
    }
    parsed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_sliding_sync_answer_has_the_msc_shapes_and_sees_only_what_v3_sync_would() {
    let server = common::Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let carol = http.register("carol").await;
    let alice_id = http.user_id(&alice).await;
    let shared = create_named(&http, &bob, "Shared", &alice_id).await;
    http.call(
        "POST",
        &format!("/_matrix/client/v3/join/{shared}"),
        Some(&alice),
        Some("{}"),
    )
    .await;
    for i in 0..5 {
        http.send_text(&bob, &shared, &format!("s{i}"), &format!("text {i}"))
            .await;
    }
    let invited = create_named(&http, &bob, "Invited", &alice_id).await;
    let private = http.create_room(&carol).await;
    http.send_text(&carol, &private, "p1", "carol alone").await;

    let body = |extensions: bool| {
        let mut b = json!({
            "conn_id": "shapes",
            "txn_id": "t-1",
            "lists": {"all": {
                "ranges": [[0, 9]],
                "required_state": [["m.room.name", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"]],
                "timeline_limit": 3
            }},
            "room_subscriptions": {
                shared.clone(): {"required_state": [["*", "*"]], "timeline_limit": 10},
                private.clone(): {"required_state": [["*", "*"]], "timeline_limit": 10}
            }
        });
        if extensions {
            b["extensions"] = json!({
                "to_device": {"enabled": true},
                "e2ee": {"enabled": true},
                "account_data": {"enabled": true},
                "receipts": {"enabled": true},
                "typing": {"enabled": true}
            });
        }
        b.to_string()
    };

    // First answer: both rooms of the list, initial, newest first.
    let (status, first) = http
        .call("POST", PATH, Some(&alice), Some(&body(true)))
        .await;
    assert_eq!(status, 200, "{first}");
    let parsed = check_shape(&first);
    assert_eq!(parsed.txn_id.as_deref(), Some("t-1"));
    assert_eq!(first["lists"]["all"]["count"], 2, "{first}");
    let rooms = first["rooms"].as_object().unwrap();
    assert_eq!(
        rooms.len(),
        2,
        "the list's rooms, not Carol's private room: {first}"
    );
    assert!(
        !rooms.contains_key(&private),
        "a subscription reveals nothing"
    );
    let s = &first["rooms"][&shared];
    assert_eq!(s["initial"], true);
    assert_eq!(s["name"], "Shared");
    assert_eq!(
        s["timeline"].as_array().unwrap().len(),
        10,
        "the subscription's longer timeline"
    );
    assert!(s["limited"] == true || s["timeline"].as_array().unwrap().len() < 10);
    assert_eq!(s["joined_count"], 2);
    assert!(s["bump_stamp"].is_u64());
    assert!(
        s["required_state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.create"),
        "the subscription's [*, *] sends all state"
    );
    let i = &first["rooms"][&invited];
    assert!(
        i["invite_state"].is_array(),
        "an invitation's stripped state: {i}"
    );
    assert!(i.get("timeline").is_none(), "no timeline for an invitation");
    assert!(
        first["rooms"][&invited]["bump_stamp"].as_u64() > s["bump_stamp"].as_u64(),
        "the invitation is newer"
    );
    assert!(first["extensions"]["e2ee"]["device_one_time_keys_count"].is_object());
    assert!(first["extensions"]["account_data"]["global"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "m.push_rules"));
    let pos = first["pos"].as_str().unwrap().to_owned();

    // Nothing new: a long-poll answers at the timeout, empty.
    let started = Instant::now();
    let (status, quiet) = http
        .call(
            "POST",
            &format!("{PATH}?pos={pos}&timeout=300"),
            Some(&alice),
            Some(&body(true)),
        )
        .await;
    assert_eq!(status, 200, "{quiet}");
    check_shape(&quiet);
    assert!(started.elapsed() >= Duration::from_millis(250), "it waited");
    assert!(quiet["rooms"].as_object().unwrap().is_empty(), "{quiet}");
    let pos = quiet["pos"].as_str().unwrap().to_owned();

    // A new text ends a long-poll at once, carrying only the new event.
    let waiting = {
        let http = Http::new(&server.url);
        let (alice, body) = (alice.clone(), body(true));
        let pos = pos.clone();
        tokio::spawn(async move {
            http.call(
                "POST",
                &format!("{PATH}?pos={pos}&timeout=20000"),
                Some(&alice),
                Some(&body),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_at = Instant::now();
    let event = http.send_text(&bob, &shared, "s-live", "live text").await;
    let (status, live) = waiting.await.unwrap();
    assert!(
        sent_at.elapsed() < Duration::from_secs(5),
        "the long-poll woke"
    );
    assert_eq!(status, 200, "{live}");
    check_shape(&live);
    let r = &live["rooms"][&shared];
    assert!(r.get("initial").is_none(), "an update, not initial: {r}");
    let timeline = r["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 1, "only the new event: {r}");
    assert_eq!(timeline[0]["event_id"], event);
    assert_eq!(r["num_live"], 1);
    // The unread count is /v3/sync's, from the same push rules: six texts
    // and the invitation (`.m.rule.invite_for_me`).
    let (_, v3) = http
        .call(
            "GET",
            "/_matrix/client/v3/sync?timeout=0",
            Some(&alice),
            None,
        )
        .await;
    let v3_count = &v3["rooms"]["join"][&shared]["unread_notifications"]["notification_count"];
    assert_eq!(&r["notification_count"], v3_count, "/v3/sync's count");
    assert_eq!(
        r["notification_count"], 7,
        "six unread texts and the invitation"
    );
    assert!(
        live["rooms"].get(&invited).is_none(),
        "unchanged rooms are left out"
    );
    let live_pos = live["pos"].as_str().unwrap().to_owned();

    // The same request again from the earlier pos: answered the same way
    // (a client retrying a lost answer).
    let (status, again) = http
        .call(
            "POST",
            &format!("{PATH}?pos={pos}&timeout=0"),
            Some(&alice),
            Some(&body(true)),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["rooms"][&shared]["timeline"][0]["event_id"], event);

    // Wrong input: each its errcode.
    let cases = [
        (
            format!("{PATH}?pos=12345"),
            body(false),
            400,
            "M_UNKNOWN_POS",
        ),
        (
            format!("{PATH}?pos={live_pos}"),
            "{not json".to_owned(),
            400,
            "M_NOT_JSON",
        ),
        (
            PATH.to_owned(),
            r#"{"lists": []}"#.to_owned(),
            400,
            "M_BAD_JSON",
        ),
        (
            PATH.to_owned(),
            r#"{"lists": {"a": {"ranges": [[5, 1]], "timeline_limit": 1}}}"#.to_owned(),
            400,
            "M_INVALID_PARAM",
        ),
        (
            PATH.to_owned(),
            r#"{"lists": {"a": {"ranges": [[0, 1]], "timeline_limit": "ten"}}}"#.to_owned(),
            400,
            "M_BAD_JSON",
        ),
    ];
    for (path, b, want_status, want_code) in cases {
        let (status, v) = http.call("POST", &path, Some(&alice), Some(&b)).await;
        assert_eq!(
            (status, v["errcode"].as_str()),
            (want_status, Some(want_code)),
            "{path} {b}: {v}"
        );
    }
    let (status, v) = http.call("POST", PATH, None, Some(&body(false))).await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (401, Some("M_MISSING_TOKEN"))
    );

    // Carol's own connection: only her room, and none of Alice's.
    let (_, carols) = http
        .call("POST", PATH, Some(&carol), Some(&body(false)))
        .await;
    check_shape(&carols);
    let ids: Vec<&String> = carols["rooms"].as_object().unwrap().keys().collect();
    assert_eq!(ids, vec![&private], "Carol sees her room only");
    let (status, v) = http
        .call(
            "POST",
            &format!("{PATH}?pos={live_pos}"),
            Some(&carol),
            Some(&body(false)),
        )
        .await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (400, Some("M_UNKNOWN_POS")),
        "a connection is its device's alone"
    );

    // Advertised as Synapse advertises it.
    let (_, versions) = http
        .call("GET", "/_matrix/client/versions", None, None)
        .await;
    assert_eq!(
        versions["unstable_features"]["org.matrix.simplified_msc3575"],
        true
    );
}
