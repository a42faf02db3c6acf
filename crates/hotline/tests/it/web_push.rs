//! Hotline's own push gateway for its web app: a pusher of
//! `org.hotline.web` whose `data.url` is this server's
//! `/_matrix/push/v1/notify`, and whose subscription (pushkey, endpoint,
//! auth) is a browser's, here played by the test: it makes the P-256 key
//! pair and auth secret a browser would, and a local HTTP "push service"
//! at the endpoint records each Web Push request. The test decrypts every
//! payload with its private key (web-push-native's RFC 8291 decryption)
//! and checks the VAPID signature against the key the server serves.
//!
//! Rules checked: a text, an encrypted event and a call ring (a MatrixRTC
//! membership joining the room's call) each reach the browser encrypted,
//! with the sender, their display name and the room's name, never an
//! encrypted event's content; the ring at high urgency with a short TTL,
//! the call's end at normal urgency, a renewed membership ringing nobody,
//! a muted room ringing nobody; the endpoint used is the pusher's, never
//! the notification's, and a pushkey named twice gets one push; the VAPID
//! token is ES256 by the served key for the endpoint's origin, valid under
//! 24 hours; a push service saying
//! the subscription is gone (410) gets the pusher removed, one asking to
//! be tried later gets the notification again; other apps' and unknown
//! pushkeys are rejected; a malformed notification is `M_NOT_JSON` /
//! `M_BAD_JSON`; a web pusher without a usable subscription is refused.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand::RngCore;
use serde_json::{json, Value};

use crate::common::{status_errcode, within, Http, Server};
use crate::pushers::set_pusher;

/// One Web Push request as the push service got it.
#[derive(Clone, Debug)]
struct Pushed {
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
    /// What the push service answered.
    status: u16,
}

/// A push service of the test's own: records each request and answers
/// `status` (201 unless told otherwise).
#[derive(Clone)]
struct PushService {
    got: Arc<Mutex<Vec<Pushed>>>,
    status: Arc<AtomicU16>,
    endpoint: String,
    origin: String,
}

impl PushService {
    async fn start() -> PushService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let service = PushService {
            got: Default::default(),
            status: Arc::new(AtomicU16::new(201)),
            endpoint: format!("{origin}/push/subscription-1"),
            origin,
        };
        let state = service.clone();
        let app = axum::Router::new().route(
            "/push/subscription-1",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let state = state.clone();
                    async move {
                        let status = state.status.load(Ordering::SeqCst);
                        state.got.lock().unwrap().push(Pushed {
                            headers,
                            body: body.to_vec(),
                            status,
                        });
                        axum::http::StatusCode::from_u16(status).unwrap()
                    }
                },
            ),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        service
    }

    fn pushed(&self) -> Vec<Pushed> {
        self.got.lock().unwrap().clone()
    }

    /// Waits for exactly `n` requests (then a moment more, to see no
    /// further one comes).
    async fn exactly(&self, n: usize) -> Vec<Pushed> {
        within(15, || async {
            let got = self.pushed().len();
            (got >= n)
                .then_some(())
                .ok_or(format!("{got} of {n} pushes"))
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let got = self.pushed();
        assert_eq!(got.len(), n, "no more than {n} pushes");
        got
    }
}

/// A browser's side of a subscription: its key pair and auth secret.
struct Browser {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl Browser {
    fn new() -> Browser {
        let mut rng = rand::thread_rng();
        let secret = loop {
            let mut bytes = [0u8; 32];
            rng.fill_bytes(&mut bytes);
            if let Ok(s) = p256::SecretKey::from_slice(&bytes) {
                break s;
            }
        };
        let mut auth = [0u8; 16];
        rng.fill_bytes(&mut auth);
        Browser { secret, auth }
    }

    /// The pushkey: the `p256dh` public key, base64url.
    fn pushkey(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.secret.public_key().to_encoded_point(false).as_bytes())
    }

    fn pusher(&self, server: &Server, endpoint: &str) -> Value {
        json!({
            "kind": "http",
            "app_id": "org.hotline.web",
            "pushkey": self.pushkey(),
            "app_display_name": "Hotline",
            "device_display_name": "test browser",
            "lang": "en",
            "data": {
                "url": format!("{}/_matrix/push/v1/notify", server.url),
                "endpoint": endpoint,
                "auth": URL_SAFE_NO_PAD.encode(self.auth),
            },
        })
    }

    /// The payload, decrypted as the browser's push service client would.
    fn open(&self, pushed: &Pushed) -> (Value, String) {
        let plain = web_push_native::decrypt(
            pushed.body.clone(),
            &self.secret,
            &web_push_native::Auth::clone_from_slice(&self.auth),
        )
        .expect("the payload decrypts with the subscription's key");
        let text = String::from_utf8(plain).unwrap();
        (serde_json::from_str(&text).unwrap(), text)
    }
}

fn header<'a>(p: &'a Pushed, name: &str) -> &'a str {
    p.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header: {:?}", p.headers))
        .to_str()
        .unwrap()
}

/// Checks the `Authorization: vapid t=JWT, k=KEY` header: the key is the
/// served one, the JWT an ES256 token it signed, for the endpoint's origin,
/// expiring within 24 hours.
fn check_vapid(p: &Pushed, served_key: &str, origin: &str) {
    let auth = header(p, "authorization");
    let (t, k) = auth
        .strip_prefix("vapid t=")
        .and_then(|r| r.split_once(", k="))
        .unwrap_or_else(|| panic!("not a VAPID header: {auth}"));
    assert_eq!(k, served_key, "k is the served VAPID key");
    let parts: Vec<&str> = t.split('.').collect();
    assert_eq!(parts.len(), 3, "{t}");
    let jwt_header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(jwt_header["alg"], "ES256");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["aud"], origin, "aud is the endpoint's origin");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = claims["exp"].as_u64().unwrap();
    assert!(
        exp > now && exp <= now + 24 * 3600,
        "exp within 24 h: {claims}"
    );
    let sub = claims["sub"].as_str().unwrap();
    assert!(
        sub.starts_with("mailto:") || sub.starts_with("https://"),
        "{sub}"
    );
    let key =
        p256::ecdsa::VerifyingKey::from_sec1_bytes(&URL_SAFE_NO_PAD.decode(k).unwrap()).unwrap();
    let sig =
        p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
    key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .expect("the JWT is signed by the served key");
}

/// Alice and Bob in a room named "Budget line" that Bob made; Bob's
/// display name "Bob Builder".
async fn pair(http: &Http) -> (String, String, String) {
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let room = http.create_room(&bob).await;
    for (token, method, path, body) in [
        (
            &bob,
            "POST",
            format!("/_matrix/client/v3/rooms/{room}/invite"),
            json!({"user_id": "@alice:localhost"}),
        ),
        (
            &alice,
            "POST",
            format!("/_matrix/client/v3/join/{room}"),
            json!({}),
        ),
        (
            &bob,
            "PUT",
            format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            json!({"name": "Budget line"}),
        ),
        (
            &bob,
            "PUT",
            "/_matrix/client/v3/profile/@bob:localhost/displayname".to_owned(),
            json!({"displayname": "Bob Builder"}),
        ),
    ] {
        let (s, v) = http
            .call(method, &path, Some(token), Some(&body.to_string()))
            .await;
        assert_eq!(s, 200, "{path}: {v}");
    }
    (alice, bob, room)
}

/// Bob's MatrixRTC membership for his device, as the web app writes it
/// (`{}` when he leaves).
async fn bob_call_membership(http: &Http, bob: &str, room: &str, joined: bool) {
    let device = http.device_id(bob).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let content = if joined {
        json!({"application": "m.call", "call_id": "", "scope": "m.room", "device_id": device,
               "expires": 14_400_000, "focus_active": {"type": "mesh"}, "foci_preferred": [],
               "created_ts": now})
    } else {
        json!({})
    };
    let (s, v) = http
        .call(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{room}/state/m.call.member/_@bob:localhost_{device}"
            ),
            Some(bob),
            Some(&content.to_string()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_encrypted_events_and_call_rings_reach_the_browser_encrypted_and_vapid_signed() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let service = PushService::start().await;
    let browser = Browser::new();

    // The key browsers subscribe with: public, the same on every read,
    // its secret half kept owner-only in the data directory.
    let (s, served) = http.call("GET", "/_hotline/v1/push/web", None, None).await;
    assert_eq!(s, 200, "{served}");
    assert_eq!(served["app_id"], "org.hotline.web");
    let vapid = served["vapid_public_key"].as_str().unwrap().to_owned();
    let raw = URL_SAFE_NO_PAD.decode(&vapid).unwrap();
    assert_eq!((raw.len(), raw[0]), (65, 4), "an uncompressed P-256 point");
    assert!(p256::PublicKey::from_sec1_bytes(&raw).is_ok());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(server.data.join("webpush.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "webpush.key is owner-only");

    let (alice, bob, room) = pair(&http).await;
    let (s, v) = set_pusher(&http, &alice, browser.pusher(&server, &service.endpoint)).await;
    assert_eq!(s, 200, "{v}");

    // A clear text: the content comes along (the worker shows none of it).
    let text = http
        .send_text(&bob, &room, "t1", "the budget is 4 billion")
        .await;
    // An encrypted event: never its ciphertext.
    let ciphertext = "AwgAEpABSENTINELCIPHERTEXT";
    let (s, v) = http
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.encrypted/e1"),
            Some(&bob),
            Some(
                &json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": ciphertext,
                        "sender_key": "k", "device_id": "D", "session_id": "s"})
                .to_string(),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let encrypted = v["event_id"].as_str().unwrap().to_owned();
    // Bob's device joins the room's call: Alice's browser rings. Renewed,
    // it rings nobody again; emptied, the ring is told to stop.
    bob_call_membership(&http, &bob, &room, true).await;
    bob_call_membership(&http, &bob, &room, true).await;
    bob_call_membership(&http, &bob, &room, false).await;

    let pushed = service.exactly(4).await;
    for p in &pushed {
        assert_eq!(header(p, "content-encoding"), "aes128gcm");
        assert!(!p.body.windows(6).any(|w| w == b"budget"), "encrypted");
        check_vapid(p, &vapid, &service.origin);
    }
    let opened: Vec<(Value, String)> = pushed.iter().map(|p| browser.open(p)).collect();
    for (payload, _) in &opened {
        assert_eq!(payload["room_id"], json!(room));
        assert_eq!(payload["sender"], "@bob:localhost");
        assert_eq!(payload["sender_display_name"], "Bob Builder");
        assert_eq!(payload["room_name"], "Budget line");
        assert!(payload["unread"].as_u64().is_some(), "{payload}");
    }
    let (first, _) = &opened[0];
    assert_eq!(first["event_id"], json!(text));
    assert_eq!(first["type"], "m.room.message");
    assert_eq!(first["content"]["body"], "the budget is 4 billion");
    assert_eq!(header(&pushed[0], "ttl"), "86400");

    let (second, raw) = &opened[1];
    assert_eq!(second["event_id"], json!(encrypted));
    assert_eq!(second["type"], "m.room.encrypted");
    assert_eq!(second["prio"], "high");
    assert!(second.get("content").is_none(), "{raw}");
    assert!(!raw.contains(ciphertext), "{raw}");
    assert_eq!(header(&pushed[1], "urgency"), "high");

    let (ring, _) = &opened[2];
    assert_eq!(ring["type"], "m.call.member");
    assert_eq!(ring["prio"], "high");
    assert_eq!(ring["content"]["application"], "m.call");
    assert_eq!(header(&pushed[2], "urgency"), "high");
    assert_eq!(
        header(&pushed[2], "ttl"),
        "90",
        "a ring is worth little later"
    );

    let (left, _) = &opened[3];
    assert_eq!(left["type"], "m.call.member");
    assert_eq!(left["prio"], "low");
    assert_eq!(left["content"], json!({}));
    assert_eq!(header(&pushed[3], "urgency"), "normal");

    // Alice mutes the room: Bob's next call rings nobody.
    let rule = format!("/_matrix/client/v3/pushrules/global/room/{room}");
    let (s, v) = http
        .call("PUT", &rule, Some(&alice), Some(r#"{"actions": []}"#))
        .await;
    assert_eq!(s, 200, "{v}");
    bob_call_membership(&http, &bob, &room, true).await;
    service.exactly(4).await;

    // The gateway posts to the endpoint stored with the pusher, whatever
    // the notification says, and once for a pushkey named twice.
    let (s, v) = http
        .call(
            "POST",
            "/_matrix/push/v1/notify",
            None,
            Some(
                &json!({"notification": {"event_id": "$direct", "room_id": room, "prio": "low",
                        "devices": [
                            {"app_id": "org.hotline.web", "pushkey": browser.pushkey(),
                             "data": {"endpoint": "http://127.0.0.1:9/elsewhere", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}},
                            {"app_id": "org.hotline.web", "pushkey": browser.pushkey()},
                        ]}})
                .to_string(),
            ),
        )
        .await;
    assert_eq!((s, v), (200, json!({"rejected": []})));
    let pushed = service.exactly(5).await;
    assert_eq!(browser.open(&pushed[4]).0["event_id"], "$direct");
    assert_eq!(header(&pushed[4], "urgency"), "normal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_subscription_removes_its_pusher_a_failing_push_service_is_tried_again_and_bad_notifications_are_refused(
) {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let service = PushService::start().await;
    let browser = Browser::new();
    let (alice, bob, room) = pair(&http).await;
    let (s, v) = set_pusher(&http, &alice, browser.pusher(&server, &service.endpoint)).await;
    assert_eq!(s, 200, "{v}");

    // The push service is down for a moment: the text arrives after.
    service.status.store(503, Ordering::SeqCst);
    let text = http.send_text(&bob, &room, "t1", "first").await;
    within(15, || async {
        (!service.pushed().is_empty())
            .then_some(())
            .ok_or("no push tried".to_owned())
    })
    .await;
    service.status.store(201, Ordering::SeqCst);
    within(15, || async {
        service
            .pushed()
            .iter()
            .any(|p| p.status == 201 && browser.open(p).0["event_id"] == json!(text))
            .then_some(())
            .ok_or(format!("delivered: {}", service.pushed().len()))
    })
    .await;

    // The subscription is gone (410): the pusher goes.
    service.status.store(410, Ordering::SeqCst);
    http.send_text(&bob, &room, "t2", "second").await;
    within(15, || async {
        let (_, listed) = http
            .call("GET", "/_matrix/client/v3/pushers", Some(&alice), None)
            .await;
        (listed["pushers"] == json!([]))
            .then_some(())
            .ok_or(format!("still listed: {listed}"))
    })
    .await;
    let before = service.pushed().len();
    http.send_text(&bob, &room, "t3", "third").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        service.pushed().len(),
        before,
        "nothing once the pusher is gone"
    );

    // The gateway called directly: another app's pushkey, and one no
    // pusher here holds, are rejected; nothing is sent for them.
    let notify = |devices: Value| {
        json!({"notification": {"event_id": "$e", "room_id": room, "type": "m.room.message",
               "sender": "@bob:localhost", "prio": "high", "counts": {"unread": 1},
               "devices": devices}})
        .to_string()
    };
    let (s, v) = http
        .call(
            "POST",
            "/_matrix/push/v1/notify",
            None,
            Some(&notify(json!([
                {"app_id": "org.example.other", "pushkey": "k1", "data": {}},
                {"app_id": "org.hotline.web", "pushkey": browser.pushkey(),
                 "data": {"endpoint": service.endpoint, "auth": URL_SAFE_NO_PAD.encode(browser.auth)}},
            ]))),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v, json!({"rejected": ["k1", browser.pushkey()]}));
    assert_eq!(
        service.pushed().len(),
        before,
        "no push for a pusher not set here"
    );

    // Malformed notifications.
    for (body, want) in [
        ("not json".to_owned(), "M_NOT_JSON"),
        ("{}".to_owned(), "M_BAD_JSON"),
        ("[1]".to_owned(), "M_BAD_JSON"),
        (
            json!({"notification": {"devices": "x"}}).to_string(),
            "M_BAD_JSON",
        ),
        (notify(json!([{"app_id": 7, "pushkey": "k"}])), "M_BAD_JSON"),
        (
            json!({"notification": {"prio": "urgent", "devices": []}}).to_string(),
            "M_BAD_JSON",
        ),
        (
            json!({"notification": {"counts": {"unread": -1}, "devices": []}}).to_string(),
            "M_BAD_JSON",
        ),
    ] {
        let r = http
            .call("POST", "/_matrix/push/v1/notify", None, Some(&body))
            .await;
        assert_eq!(status_errcode(&r), (400, want), "{body}: {}", r.1);
    }

    // A web pusher without a subscription the gateway can use is refused.
    let base = browser.pusher(&server, &service.endpoint);
    for (what, change) in [
        (
            "a pushkey that is no P-256 key",
            json!({"pushkey": "not-a-key"}),
        ),
        (
            "no auth secret",
            json!({"data": {"url": base["data"]["url"], "endpoint": service.endpoint}}),
        ),
        (
            "a short auth secret",
            json!({"data": {"url": base["data"]["url"], "endpoint": service.endpoint, "auth": "AAAA"}}),
        ),
        (
            "no endpoint",
            json!({"data": {"url": base["data"]["url"], "auth": base["data"]["auth"]}}),
        ),
    ] {
        let mut body = base.clone();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = set_pusher(&http, &alice, body).await;
        assert_eq!(
            status_errcode(&r),
            (400, "M_INVALID_PARAM"),
            "{what}: {}",
            r.1
        );
    }
}
