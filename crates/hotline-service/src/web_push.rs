//! Hotline's own push gateway, for its web app (`org.hotline.web`): the
//! Push Gateway API's `notify` (`POST /_matrix/push/v1/notify`, which this
//! server's pushers post to like any gateway's) turned into Web Push
//! (RFC 8030) requests to the browsers' push services, as Sygnal's
//! `webpush` kind does.
//!
//! A browser's push subscription is the pusher, in Sygnal's convention:
//! `pushkey` is its `p256dh` public key (base64url, a P-256 point),
//! `data.endpoint` the push service's URL for it, `data.auth` its 16-byte
//! authentication secret (base64url); `/pushers/set` refuses a web pusher
//! without them ([`check_subscription`]). Each notification is one `POST`
//! to the endpoint: a small JSON payload ([`browser_payload`]) encrypted
//! to the browser as RFC 8291 has it (`aes128gcm`, RFC 8188; the push
//! service sees only its length), signed for by this server's VAPID key
//! (RFC 8292), with `TTL` and `Urgency` headers. The push service
//! answering `404` or `410` means the subscription is gone: its pushkey is
//! `rejected`, and the pusher removed. Another app id is rejected too.
//!
//! **No open relay:** only pushers set on this server are served, and the
//! endpoint and secret used are the ones stored with the pusher, never the
//! notification's: this server posts only where one of its signed-in users
//! asked their own notifications to go. A pushkey no pusher here holds is
//! rejected. (Like any push gateway's, the notify endpoint takes no token:
//! knowing a pushkey, a random public key only the browser and this server
//! hold, is what lets one push to it.)
//!
//! **Privacy:** the payload holds what the notification held, and pushers
//! never send an encrypted event's content; the web app's service worker
//! shows no message text even for a clear one. Nothing of a payload, a
//! key, an endpoint (a push service's endpoint names its subscription) or a
//! pushkey is logged.
//!
//! The VAPID key pair is made on first start and kept in the data
//! directory (`webpush.key`, mode 0600, beside `signing.key`); browsers
//! subscribe with its public half (`GET /_hotline/v1/push/web`), and push
//! services refuse requests signed by any other, so it must survive
//! restores (`hotline admin backup` copies it).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hotline_store::PusherRow;
use p256::ecdsa::signature::Signer;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::identity::read_or_create_private;
use crate::{now_ms, Error, Result, Services};

/// The web app's app id: its pushers are delivered by this gateway.
pub const APP_ID: &str = "org.hotline.web";

/// Where the VAPID key is kept, in the data directory.
pub const KEY_FILE: &str = "webpush.key";

/// The largest payload sent. A push service takes 4,096 bytes of encrypted
/// body (RFC 8291: 3,993 of plaintext); this leaves room and keeps a
/// notification small on a phone's data.
pub const MAX_PAYLOAD: usize = 3000;

/// Names (sender, room) are cut to this many characters when the payload
/// would be too large with them whole.
const MAX_NAME_CHARS: usize = 100;

/// How long the VAPID token is valid (RFC 8292: at most 24 hours).
const VAPID_VALIDITY_SECONDS: u64 = 12 * 60 * 60;

/// How long a push service keeps a notification for a browser that is
/// offline: a day for a text; a ring is worth nothing once the caller
/// has given up, so a minute and a half.
const TTL_SECONDS: u64 = 24 * 60 * 60;
const RING_TTL_SECONDS: u64 = 90;

/// The event types a browser is to ring for (the server pushes a MatrixRTC
/// membership joining a call as `m.call.member`).
pub const CALL_TYPES: [&str; 6] = [
    "m.call.member",
    "org.matrix.msc3401.call.member",
    "m.call.invite",
    "m.rtc.notification",
    "org.matrix.msc4075.rtc.notification",
    "org.matrix.msc4075.call.notify",
];

/// The Push Gateway API's request body.
#[derive(Debug, Deserialize)]
pub struct Notify {
    pub notification: Notification,
}

/// The spec's `notification`: what happened, and the devices to tell.
#[derive(Debug, Deserialize)]
pub struct Notification {
    pub event_id: Option<String>,
    pub room_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub sender: Option<String>,
    pub sender_display_name: Option<String>,
    pub room_name: Option<String>,
    pub room_alias: Option<String>,
    pub user_is_target: Option<bool>,
    pub prio: Option<Prio>,
    /// Only for clear events, and only when the pusher wants it.
    pub content: Option<Map<String, Value>>,
    pub counts: Option<Counts>,
    pub devices: Vec<Device>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Prio {
    High,
    Low,
}

#[derive(Debug, Deserialize)]
pub struct Counts {
    pub unread: Option<u64>,
    pub missed_calls: Option<u64>,
}

/// One pusher the notification is for.
#[derive(Debug, Deserialize)]
pub struct Device {
    pub app_id: String,
    pub pushkey: String,
    pub pushkey_ts: Option<u64>,
    pub data: Option<Map<String, Value>>,
    pub tweaks: Option<Map<String, Value>>,
}

/// A browser's push subscription, as its pusher holds it.
pub struct Subscription {
    pub endpoint: http::Uri,
    p256dh: p256::PublicKey,
    auth: [u8; 16],
}

/// Base64url, with or without padding (browsers' `toJSON()` writes none;
/// some libraries pad).
fn unbase64url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// The subscription a web pusher's `pushkey` and `data` describe, or why
/// it is none (`M_INVALID_PARAM`).
pub fn check_subscription(pushkey: &str, data: &Map<String, Value>) -> Result<Subscription> {
    let p256dh = unbase64url(pushkey)
        .and_then(|k| p256::PublicKey::from_sec1_bytes(&k).ok())
        .ok_or_else(|| {
            Error::invalid_param(format!(
                "A pusher of {APP_ID} has the subscription's p256dh key as its pushkey (base64url, a P-256 point)"
            ))
        })?;
    let auth = data
        .get("auth")
        .and_then(Value::as_str)
        .and_then(unbase64url)
        .and_then(|a| <[u8; 16]>::try_from(a).ok())
        .ok_or_else(|| {
            Error::invalid_param(format!(
                "A pusher of {APP_ID} needs data.auth, the subscription's 16-byte auth secret in base64url"
            ))
        })?;
    let endpoint = data
        .get("endpoint")
        .and_then(Value::as_str)
        .filter(|e| e.len() <= 2048)
        .and_then(|e| e.parse::<http::Uri>().ok())
        .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
        .ok_or_else(|| {
            Error::invalid_param(format!(
                "A pusher of {APP_ID} needs data.endpoint, the subscription's http(s) endpoint URL"
            ))
        })?;
    Ok(Subscription {
        endpoint,
        p256dh,
        auth,
    })
}

/// The JSON the browser's service worker gets: who, where, what kind, the
/// unread count; the content only if the notification carried it (never
/// for an encrypted event), and left out first when the payload would pass
/// [`MAX_PAYLOAD`], then the names cut.
pub fn browser_payload(n: &Notification) -> Vec<u8> {
    let mut p = json!({
        "event_id": n.event_id,
        "room_id": n.room_id,
        "type": n.kind,
        "sender": n.sender,
        "sender_display_name": n.sender_display_name,
        "room_name": n.room_name,
        "prio": match n.prio { Some(Prio::High) => "high", _ => "low" },
        "unread": n.counts.as_ref().and_then(|c| c.unread),
    });
    if let Some(content) = &n.content {
        p["content"] = Value::Object(content.clone());
        let bytes = p.to_string().into_bytes();
        if bytes.len() <= MAX_PAYLOAD {
            return bytes;
        }
        if let Some(o) = p.as_object_mut() {
            o.remove("content");
        }
    }
    let mut bytes = p.to_string().into_bytes();
    if bytes.len() > MAX_PAYLOAD {
        for key in ["sender_display_name", "room_name"] {
            if let Some(s) = p[key].as_str() {
                p[key] = json!(s.chars().take(MAX_NAME_CHARS).collect::<String>());
            }
        }
        bytes = p.to_string().into_bytes();
    }
    // Ids are at most 255 bytes each (the spec's limit, which rooms and
    // senders here keep); a notification with longer ones is cut to its
    // room and event.
    if bytes.len() > MAX_PAYLOAD {
        bytes = json!({"event_id": n.event_id.as_deref().map(|e| e.chars().take(255).collect::<String>()),
                       "room_id": n.room_id.as_deref().map(|r| r.chars().take(255).collect::<String>())})
        .to_string()
        .into_bytes();
    }
    bytes
}

/// This server's VAPID key pair (ECDSA P-256).
pub struct VapidKey {
    key: p256::ecdsa::SigningKey,
    /// The public key as browsers take it (`applicationServerKey`):
    /// base64url of the uncompressed point.
    public: String,
}

impl VapidKey {
    /// Loads the key from `dir/webpush.key` (its secret scalar, base64url),
    /// creating it (mode 0600) on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let text = read_or_create_private(&dir.join(KEY_FILE), || {
            let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
            format!("{}\n", URL_SAFE_NO_PAD.encode(secret.to_bytes()))
        })?;
        let secret = unbase64url(text.trim())
            .and_then(|b| p256::SecretKey::from_slice(&b).ok())
            .ok_or_else(|| Error::internal(format!("malformed {KEY_FILE}")))?;
        let public = URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes());
        Ok(VapidKey {
            key: p256::ecdsa::SigningKey::from(&secret),
            public,
        })
    }

    /// The public key, base64url of the uncompressed P-256 point.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The `Authorization` header of a request to `endpoint` (RFC 8292):
    /// `vapid t=JWT, k=PUBLIC_KEY`, the token an ES256 JWT whose audience
    /// is the endpoint's origin, valid [`VAPID_VALIDITY_SECONDS`] from
    /// `now_s`, naming `sub` as whom to contact.
    pub fn authorization(&self, endpoint: &http::Uri, sub: &str, now_s: u64) -> Result<String> {
        let scheme = endpoint
            .scheme_str()
            .ok_or_else(|| Error::internal("endpoint without a scheme"))?;
        let host = endpoint
            .host()
            .ok_or_else(|| Error::internal("endpoint without a host"))?;
        // The origin as RFC 6454 writes it: the port only when it is not
        // the scheme's own.
        let aud = match endpoint.port_u16() {
            Some(p) if !matches!((scheme, p), ("https", 443) | ("http", 80)) => {
                format!("{scheme}://{host}:{p}")
            }
            _ => format!("{scheme}://{host}"),
        };
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = URL_SAFE_NO_PAD.encode(
            json!({"aud": aud, "exp": now_s + VAPID_VALIDITY_SECONDS, "sub": sub}).to_string(),
        );
        let signed = format!("{header}.{claims}");
        // JWS's ES256: the signature as r || s, 64 bytes.
        let signature: p256::ecdsa::Signature = self.key.sign(signed.as_bytes());
        Ok(format!(
            "vapid t={signed}.{}, k={}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes()),
            self.public
        ))
    }
}

/// What a push service's answer means for the subscription.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Taken,
    /// `404`, `410`: the subscription expired or was withdrawn.
    Gone,
    /// No answer, `429`, `5xx`: worth trying again later.
    Failed,
    /// Any other `4xx`: this notification will never be taken.
    Refused,
}

pub fn answer(status: Option<u16>) -> Answer {
    match status {
        Some(200..=299) => Answer::Taken,
        Some(404 | 410) => Answer::Gone,
        None | Some(429 | 500..=599) => Answer::Failed,
        Some(_) => Answer::Refused,
    }
}

impl Services {
    /// The VAPID public key browsers subscribe with.
    pub fn web_push_key(&self) -> &str {
        self.web_push.public_key()
    }

    /// The VAPID `sub`: the server's public base URL when it is `https`
    /// (push services want `https:` or `mailto:`), else the mailbox every
    /// mail domain keeps (RFC 5321's postmaster) at the server's name.
    fn vapid_contact(&self) -> String {
        match &self.config.public_base_url {
            Some(url) if url.starts_with("https://") => url.trim_end_matches('/').to_owned(),
            _ => {
                let host = self.server_name().host().to_string();
                format!("mailto:postmaster@{}", host.trim_matches(['[', ']']))
            }
        }
    }

    /// `POST /_matrix/push/v1/notify`: sends the notification to each of
    /// its devices' browsers. Answers the pushkeys to reject: another app's,
    /// a pushkey no web pusher here holds, a subscription its push service
    /// says is gone. A push service that could not be reached, or asks to
    /// be tried later, fails the whole notification (`502`), so the pusher
    /// sending it tries again with backoff (Hotline's pushers send one
    /// device per notification).
    pub async fn web_push_notify(&self, n: Notification) -> Result<Vec<String>> {
        let mut rejected = Vec::new();
        let mut ours: Vec<(&Device, PusherRow)> = Vec::new();
        // The web pushers set here, by pushkey (a pushkey named twice in
        // one notification is sent to once).
        let mut pushers: HashMap<String, PusherRow> = HashMap::new();
        if n.devices.iter().any(|d| d.app_id == APP_ID) {
            for p in self.store.all_pushers()? {
                if p.app_id == APP_ID {
                    pushers.insert(p.pushkey.clone(), p);
                }
            }
        }
        let mut taken: HashSet<&str> = HashSet::new();
        for d in &n.devices {
            if d.app_id == APP_ID {
                if let Some(p) = pushers.remove(&d.pushkey) {
                    taken.insert(&d.pushkey);
                    ours.push((d, p));
                    continue;
                }
                if taken.contains(d.pushkey.as_str()) {
                    continue;
                }
            }
            rejected.push(d.pushkey.clone());
        }
        if ours.is_empty() {
            return Ok(rejected);
        }
        let Some(gateway) = self.pushers.gateway() else {
            return Err(Error::Unavailable(
                "This server process sends no Web Push".into(),
            ));
        };
        let payload = browser_payload(&n);
        let ring = n.prio == Some(Prio::High)
            && n.kind.as_deref().is_some_and(|k| CALL_TYPES.contains(&k))
            && !n.content.as_ref().is_some_and(|c| c.is_empty());
        let ttl = if ring { RING_TTL_SECONDS } else { TTL_SECONDS };
        let urgency = if n.prio == Some(Prio::High) {
            "high"
        } else {
            "normal"
        };
        let contact = self.vapid_contact();
        let mut failed = false;
        for (device, pusher) in ours {
            let stored: Value = serde_json::from_str(&pusher.json).unwrap_or_default();
            let data = stored["data"].as_object().cloned().unwrap_or_default();
            let Ok(sub) = check_subscription(&pusher.pushkey, &data) else {
                rejected.push(device.pushkey.clone());
                continue;
            };
            let body = web_push_native::encrypt(
                payload.clone(),
                &sub.p256dh,
                &web_push_native::Auth::clone_from_slice(&sub.auth),
            )
            .map_err(|e| Error::internal(format!("encrypting a Web Push payload: {e}")))?;
            let request = http::Request::post(sub.endpoint.clone())
                .header("TTL", ttl)
                .header("Urgency", urgency)
                .header(http::header::CONTENT_ENCODING, "aes128gcm")
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .header(
                    http::header::AUTHORIZATION,
                    self.web_push.authorization(
                        &sub.endpoint,
                        &contact,
                        (now_ms() / 1000) as u64,
                    )?,
                )
                .body(body)
                .map_err(Error::internal)?;
            let status = gateway.web_push(request).await;
            match answer(status.as_ref().ok().map(|(s, _)| *s)) {
                Answer::Taken => {}
                Answer::Gone => {
                    tracing::info!("a push service says a browser's subscription is gone: its pusher is removed");
                    rejected.push(device.pushkey.clone());
                }
                Answer::Failed => {
                    match &status {
                        Ok((s, _)) => {
                            tracing::info!(status = s, "a push service asks to be tried later")
                        }
                        Err(e) => {
                            tracing::info!(reason = %e, "a push service could not be reached")
                        }
                    }
                    failed = true;
                }
                Answer::Refused => {
                    let s = status.as_ref().map(|(s, _)| *s).unwrap_or_default();
                    tracing::warn!(status = s, "a push service refused a notification");
                }
            }
        }
        if failed {
            return Err(Error::Unavailable(
                "A push service did not take the notification; try again later".into(),
            ));
        }
        Ok(rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(content: Option<Value>) -> Notification {
        serde_json::from_value(json!({
            "event_id": "$e", "room_id": "!r:x", "type": "m.room.message", "sender": "@bob:x",
            "sender_display_name": "Bob", "room_name": "Budget", "prio": "high",
            "counts": {"unread": 3}, "content": content, "devices": []
        }))
        .unwrap()
    }

    #[test]
    fn the_payload_names_sender_and_room_and_keeps_content_only_when_given_and_small() {
        let p: Value = serde_json::from_slice(&browser_payload(&notification(None))).unwrap();
        assert_eq!(p["sender_display_name"], "Bob");
        assert_eq!(p["room_name"], "Budget");
        assert_eq!(p["unread"], 3);
        assert_eq!(p["prio"], "high");
        assert!(p.get("content").is_none(), "{p}");
        let p: Value =
            serde_json::from_slice(&browser_payload(&notification(Some(json!({"body": "hi"})))))
                .unwrap();
        assert_eq!(p["content"]["body"], "hi");
        let big = browser_payload(&notification(Some(json!({"body": "x".repeat(5000)}))));
        assert!(big.len() <= MAX_PAYLOAD);
        let p: Value = serde_json::from_slice(&big).unwrap();
        assert!(p.get("content").is_none(), "content dropped first");
        assert_eq!(p["room_name"], "Budget");
        let mut long = notification(None);
        long.room_name = Some("r".repeat(4000));
        long.sender_display_name = Some("s".repeat(4000));
        let p = browser_payload(&long);
        assert!(p.len() <= MAX_PAYLOAD, "{}", p.len());
    }

    #[test]
    fn a_subscription_needs_a_p256_pushkey_a_16_byte_auth_and_an_http_endpoint() {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let key = URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes());
        let auth = URL_SAFE_NO_PAD.encode([7u8; 16]);
        let data = |v: Value| v.as_object().unwrap().clone();
        let good = data(json!({"endpoint": "https://push.example/x", "auth": auth}));
        assert!(check_subscription(&key, &good).is_ok());
        assert!(
            check_subscription(&format!("{key}="), &good).is_ok(),
            "padding tolerated"
        );
        for (pushkey, d) in [
            ("not-a-key", good.clone()),
            (
                key.as_str(),
                data(json!({"endpoint": "https://push.example/x"})),
            ),
            (
                key.as_str(),
                data(json!({"endpoint": "https://push.example/x", "auth": "AAAA"})),
            ),
            (
                key.as_str(),
                data(json!({"endpoint": "ftp://push.example/x", "auth": auth})),
            ),
            (
                key.as_str(),
                data(json!({"endpoint": "/relative", "auth": auth})),
            ),
            (key.as_str(), data(json!({"endpoint": 7, "auth": auth}))),
        ] {
            assert!(
                matches!(check_subscription(pushkey, &d), Err(Error::InvalidParam(_))),
                "{pushkey} {d:?}"
            );
        }
    }

    #[test]
    fn the_vapid_token_is_an_es256_jwt_for_the_endpoints_origin() {
        use p256::ecdsa::signature::Verifier;
        let dir = std::env::temp_dir().join(format!(
            "hotline-vapid-{}",
            crate::accounts::random_string(8)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key = VapidKey::load_or_create(&dir).unwrap();
        assert_eq!(
            VapidKey::load_or_create(&dir).unwrap().public_key(),
            key.public_key(),
            "kept"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        for (endpoint, aud) in [
            ("http://127.0.0.1:8123/push/1", "http://127.0.0.1:8123"),
            (
                "https://fcm.googleapis.com:443/fcm/send/x",
                "https://fcm.googleapis.com",
            ),
            ("https://push.example/x", "https://push.example"),
        ] {
            let header = key
                .authorization(&endpoint.parse().unwrap(), "mailto:postmaster@x", 1000)
                .unwrap();
            let (t, k) = header
                .strip_prefix("vapid t=")
                .and_then(|r| r.split_once(", k="))
                .unwrap();
            assert_eq!(k, key.public_key());
            let parts: Vec<&str> = t.split('.').collect();
            let claims: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
            assert_eq!(claims["aud"], aud);
            assert_eq!(claims["exp"], 1000 + VAPID_VALIDITY_SECONDS);
            assert_eq!(claims["sub"], "mailto:postmaster@x");
            let public =
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&URL_SAFE_NO_PAD.decode(k).unwrap())
                    .unwrap();
            let sig =
                p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
                    .unwrap();
            public
                .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
                .unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn gone_subscriptions_are_rejected_and_failures_retried() {
        assert_eq!(answer(Some(201)), Answer::Taken);
        assert_eq!(answer(Some(404)), Answer::Gone);
        assert_eq!(answer(Some(410)), Answer::Gone);
        assert_eq!(answer(Some(503)), Answer::Failed);
        assert_eq!(answer(Some(429)), Answer::Failed);
        assert_eq!(answer(None), Answer::Failed);
        assert_eq!(answer(Some(413)), Answer::Refused);
    }
}
