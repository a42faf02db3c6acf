//! Pushers and their delivery to push gateways (the spec's Push Gateway
//! API): a gateway here is a local HTTP sink the test reads, so each
//! payload can be inspected; it can be told to fail (an outage) or to
//! reject the pushkey.
//!
//! Rules checked: one notification per event the user's push rules say
//! notifies, in order, with the unread count; none for a muted room, none
//! once the pusher is removed or its device deleted; nothing lost across a
//! gateway outage and a `kill -9` of the server; an encrypted event's
//! ciphertext never leaves; a rejected pushkey removes its pusher; a bad
//! pusher is refused with the right error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common;

use common::{status_errcode, within, Http, Server};
use serde_json::{json, Value};

/// A push gateway of the test's own.
#[derive(Clone, Default)]
pub(crate) struct Sink {
    got: Arc<std::sync::Mutex<Vec<Value>>>,
    /// Answer `503` (an outage).
    failing: Arc<AtomicBool>,
    /// Answer `{"rejected": [every pushkey]}`.
    rejecting: Arc<AtomicBool>,
    url: String,
}

impl Sink {
    pub(crate) async fn start() -> Sink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink = Sink {
            url: format!(
                "http://{}/_matrix/push/v1/notify",
                listener.local_addr().unwrap()
            ),
            ..Sink::default()
        };
        let state = sink.clone();
        let app = axum::Router::new().route(
            "/_matrix/push/v1/notify",
            axum::routing::post(move |body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    if state.failing.load(Ordering::SeqCst) {
                        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "{}".to_owned());
                    }
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let keys: Vec<Value> = v["notification"]["devices"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|d| d["pushkey"].clone())
                        .collect();
                    state.got.lock().unwrap().push(v);
                    let rejected = if state.rejecting.load(Ordering::SeqCst) {
                        keys
                    } else {
                        Vec::new()
                    };
                    (
                        axum::http::StatusCode::OK,
                        json!({ "rejected": rejected }).to_string(),
                    )
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        sink
    }

    fn notifications(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["notification"].clone())
            .collect()
    }

    pub(crate) fn event_ids(&self) -> Vec<String> {
        self.notifications()
            .iter()
            .map(|n| n["event_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

pub(crate) async fn set_pusher(http: &Http, token: &str, body: Value) -> (u16, Value) {
    http.call(
        "POST",
        "/_matrix/client/v3/pushers/set",
        Some(token),
        Some(&body.to_string()),
    )
    .await
}

pub(crate) fn pusher(sink: &Sink, pushkey: &str, format: Option<&str>) -> Value {
    let mut data = json!({ "url": sink.url });
    if let Some(f) = format {
        data["format"] = json!(f);
    }
    json!({
        "kind": "http",
        "app_id": "org.hotline.test",
        "pushkey": pushkey,
        "app_display_name": "Hotline test",
        "device_display_name": "test phone",
        "lang": "en",
        "data": data,
    })
}

/// Alice and Bob in a room Bob made; Alice's pusher set.
struct Pair {
    server: Server,
    http: Http,
    alice: String,
    bob: String,
    room: String,
}

async fn pair(server: Server) -> Pair {
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = http.create_room(&bob).await;
    for (token, path) in [
        (&bob, format!("/_matrix/client/v3/rooms/{room}/invite")),
        (&alice, format!("/_matrix/client/v3/join/{room}")),
    ] {
        let body = json!({"user_id": "@alice:localhost"}).to_string();
        let (s, v) = http.call("POST", &path, Some(token), Some(&body)).await;
        assert_eq!(s, 200, "{path}: {v}");
    }
    Pair {
        server,
        http,
        alice,
        bob,
        room,
    }
}

/// Waits until the sink holds exactly `n` notifications, then a moment
/// more to see that no further one comes.
pub(crate) async fn exactly(sink: &Sink, n: usize) -> Vec<Value> {
    within(15, || async {
        let got = sink.notifications();
        (got.len() >= n)
            .then_some(())
            .ok_or(format!("{} of {n} notifications: {got:?}", got.len()))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let got = sink.notifications();
    assert_eq!(got.len(), n, "no more than {n}: {got:#?}");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pusher_gets_one_notification_per_notifying_event_in_order_with_its_unread_count() {
    let sink = Sink::start().await;
    let p = pair(Server::start().await).await;
    assert_eq!(
        set_pusher(&p.http, &p.alice, pusher(&sink, "alice-phone", None))
            .await
            .0,
        200
    );
    let (_, listed) = p
        .http
        .call("GET", "/_matrix/client/v3/pushers", Some(&p.alice), None)
        .await;
    assert_eq!(listed["pushers"][0]["pushkey"], "alice-phone");
    assert_eq!(listed["pushers"][0]["data"]["url"], json!(sink.url));

    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(
            p.http
                .send_text(&p.bob, &p.room, &format!("t{i}"), &format!("text {i}"))
                .await,
        );
    }
    // A notice notifies nobody by the default rules; Alice's own text
    // neither.
    let (s, _) = p
        .http
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/n1", p.room),
            Some(&p.bob),
            Some(r#"{"msgtype": "m.notice", "body": "a notice"}"#),
        )
        .await;
    assert_eq!(s, 200);
    p.http.send_text(&p.alice, &p.room, "own", "mine").await;
    let got = exactly(&sink, 3).await;
    assert_eq!(sink.event_ids(), sent, "one per text, in order");
    for (i, n) in got.iter().enumerate() {
        assert_eq!(n["room_id"], json!(p.room));
        assert_eq!(n["sender"], "@bob:localhost");
        assert_eq!(n["type"], "m.room.message");
        assert_eq!(n["content"]["body"], json!(format!("text {i}")));
        // One more unread each time (the invite before counts, as /sync
        // counts it).
        let first = got[0]["counts"]["unread"].as_u64().unwrap();
        assert!(first >= 1);
        assert_eq!(
            n["counts"]["unread"],
            json!(first + i as u64),
            "unread after text {i}: {n}"
        );
        assert_eq!(n["devices"][0]["pushkey"], "alice-phone");
        assert_eq!(n["devices"][0]["app_id"], "org.hotline.test");
        assert!(n["devices"][0]["data"].get("url").is_none(), "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_event_is_pushed_at_high_priority_without_its_ciphertext_and_event_id_only_sends_no_content(
) {
    let sink = Sink::start().await;
    let p = pair(Server::start().await).await;
    set_pusher(&p.http, &p.alice, pusher(&sink, "full", None)).await;
    let ciphertext = "AwgAEpABSENTINELCIPHERTEXT";
    let (s, v) = p
        .http
        .call(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.encrypted/e1",
                p.room
            ),
            Some(&p.bob),
            Some(
                &json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": ciphertext,
                        "sender_key": "k", "device_id": "D", "session_id": "s"})
                .to_string(),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let got = exactly(&sink, 1).await;
    let raw = serde_json::to_string(&sink.got.lock().unwrap()[0]).unwrap();
    assert!(!raw.contains(ciphertext), "no ciphertext leaves: {raw}");
    assert!(got[0].get("content").is_none(), "{raw}");
    assert_eq!(got[0]["type"], "m.room.encrypted");
    assert_eq!(got[0]["prio"], "high");

    // A call rings at high priority too.
    let (s, v) = p
        .http
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{}/send/m.call.invite/c1", p.room),
            Some(&p.bob),
            Some(
                &json!({"call_id": "c1", "version": "1", "lifetime": 60000, "party_id": "p",
                        "offer": {"type": "offer", "sdp": "v=0"}})
                .to_string(),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let got = exactly(&sink, 2).await;
    assert_eq!(got[1]["type"], "m.call.invite");
    assert_eq!(got[1]["prio"], "high");

    // event_id_only: the ids and counts, no sender, type or content.
    let only = Sink::start().await;
    set_pusher(
        &p.http,
        &p.alice,
        pusher(&only, "ids", Some("event_id_only")),
    )
    .await;
    let id = p.http.send_text(&p.bob, &p.room, "t", "a plain text").await;
    let got = exactly(&only, 1).await;
    assert_eq!(got[0]["event_id"], json!(id));
    for field in ["content", "sender", "type"] {
        assert!(got[0].get(field).is_none(), "{field} in {}", got[0]);
    }
    assert!(got[0]["counts"]["unread"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_pushed_for_a_muted_room_nor_once_the_pusher_is_removed_or_its_device_deleted() {
    let sink = Sink::start().await;
    let p = pair(Server::start().await).await;
    set_pusher(&p.http, &p.alice, pusher(&sink, "k1", None)).await;
    // Muted: a room rule with no actions.
    let rule = format!("/_matrix/client/v3/pushrules/global/room/{}", p.room);
    let (s, v) = p
        .http
        .call("PUT", &rule, Some(&p.alice), Some(r#"{"actions": []}"#))
        .await;
    assert_eq!(s, 200, "{v}");
    p.http.send_text(&p.bob, &p.room, "m1", "while muted").await;
    // Weighed when delivered, by the rules then: delivery has passed it
    // before the room is unmuted.
    exactly(&sink, 0).await;
    // Unmuted: the next text is pushed, and only it.
    let (s, _) = p.http.call("DELETE", &rule, Some(&p.alice), None).await;
    assert_eq!(s, 200);
    let heard = p.http.send_text(&p.bob, &p.room, "m2", "unmuted").await;
    exactly(&sink, 1).await;
    assert_eq!(sink.event_ids(), vec![heard]);

    // Removed (kind null): nothing more.
    let mut gone = pusher(&sink, "k1", None);
    gone["kind"] = Value::Null;
    assert_eq!(set_pusher(&p.http, &p.alice, gone).await.0, 200);
    p.http
        .send_text(&p.bob, &p.room, "m3", "after removal")
        .await;
    exactly(&sink, 1).await;

    // Set from a second device, which is then deleted: nothing more, and
    // the pusher is gone from /pushers.
    let second = p.http.login("alice", "correct horse").await;
    set_pusher(&p.http, &second, pusher(&sink, "k2", None)).await;
    let device = p.http.device_id(&second).await;
    let (s, v) = p
        .http
        .call(
            "DELETE",
            &format!("/_matrix/client/v3/devices/{device}"),
            Some(&p.alice),
            Some(
                &json!({"auth": {"type": "m.login.password", "password": "correct horse",
                    "identifier": {"type": "m.id.user", "user": "alice"}}})
                .to_string(),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    p.http
        .send_text(&p.bob, &p.room, "m4", "after the device")
        .await;
    exactly(&sink, 1).await;
    let (_, listed) = p
        .http
        .call("GET", "/_matrix/client/v3/pushers", Some(&p.alice), None)
        .await;
    assert_eq!(listed["pushers"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_outage_and_a_kill_9_delay_notifications_but_lose_none() {
    let sink = Sink::start().await;
    let mut p = pair(Server::start().await).await;
    set_pusher(&p.http, &p.alice, pusher(&sink, "k", None)).await;
    sink.failing.store(true, Ordering::SeqCst);
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(
            p.http
                .send_text(
                    &p.bob,
                    &p.room,
                    &format!("o{i}"),
                    &format!("during the outage {i}"),
                )
                .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(sink.notifications().is_empty());
    // The server dies mid-outage; what it owed is owed after the restart.
    p.server.kill9();
    p.server.spawn().await;
    p.http = Http::new(&p.server.url);
    sent.push(
        p.http
            .send_text(&p.bob, &p.room, "o3", "after the restart")
            .await,
    );
    sink.failing.store(false, Ordering::SeqCst);
    within(30, || async {
        let ids = sink.event_ids();
        (ids == sent)
            .then_some(())
            .ok_or(format!("delivered {ids:?}, sent {sent:?}"))
    })
    .await;
    let got = sink.notifications();
    let first = got[0]["counts"]["unread"].as_u64().unwrap();
    for (i, n) in got.iter().enumerate() {
        assert_eq!(n["counts"]["unread"], json!(first + i as u64), "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushkey_the_gateway_rejects_removes_its_pusher() {
    let sink = Sink::start().await;
    let p = pair(Server::start().await).await;
    set_pusher(&p.http, &p.alice, pusher(&sink, "stale", None)).await;
    sink.rejecting.store(true, Ordering::SeqCst);
    p.http
        .send_text(&p.bob, &p.room, "r1", "to a stale key")
        .await;
    within(15, || async {
        let (_, listed) = p
            .http
            .call("GET", "/_matrix/client/v3/pushers", Some(&p.alice), None)
            .await;
        (listed["pushers"] == json!([]))
            .then_some(())
            .ok_or(format!("still listed: {listed}"))
    })
    .await;
    p.http.send_text(&p.bob, &p.room, "r2", "after").await;
    exactly(&sink, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_pusher_is_refused_with_its_reason() {
    let sink = Sink::start().await;
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let token = http.register("carol").await;
    let base = pusher(&sink, "k", None);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = base.clone();
        f(&mut b);
        b
    };
    for (what, body, want) in [
        (
            "an email pusher",
            with(&|b| b["kind"] = json!("email")),
            "M_INVALID_PARAM",
        ),
        (
            "no data.url",
            with(&|b| b["data"] = json!({})),
            "M_INVALID_PARAM",
        ),
        (
            "another path",
            with(&|b| b["data"]["url"] = json!("http://127.0.0.1:1/notify")),
            "M_INVALID_PARAM",
        ),
        (
            "not http",
            with(&|b| b["data"]["url"] = json!("ftp://x/_matrix/push/v1/notify")),
            "M_INVALID_PARAM",
        ),
        (
            "an unknown format",
            with(&|b| b["data"]["format"] = json!("everything")),
            "M_INVALID_PARAM",
        ),
        (
            "no app_id",
            with(&|b| {
                b.as_object_mut().unwrap().remove("app_id");
            }),
            "M_MISSING_PARAM",
        ),
        (
            "no lang",
            with(&|b| {
                b.as_object_mut().unwrap().remove("lang");
            }),
            "M_MISSING_PARAM",
        ),
        (
            "a long app_id",
            with(&|b| b["app_id"] = json!("a".repeat(65))),
            "M_INVALID_PARAM",
        ),
        (
            "kind a number",
            with(&|b| b["kind"] = json!(1)),
            "M_BAD_JSON",
        ),
    ] {
        let r = set_pusher(&http, &token, body).await;
        assert_eq!(status_errcode(&r), (400, want), "{what}: {}", r.1);
    }
    let (_, listed) = http
        .call("GET", "/_matrix/client/v3/pushers", Some(&token), None)
        .await;
    assert_eq!(listed["pushers"], json!([]), "nothing was set");
    let (s, _) = http
        .call("GET", "/_matrix/client/v3/pushers", None, None)
        .await;
    assert_eq!(s, 401);
}
