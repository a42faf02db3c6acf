//! Fuzzes the request bodies and path parameters of every route the server
//! serves, through the real router (`hotline_api::app`) over a real store
//! (SQLite in a temporary directory, or a PostgreSQL database of its own
//! when the suite runs on PostgreSQL), in process
//! (`tower::ServiceExt::oneshot`, no socket).
//!
//! The property: no request ever gets a `5xx` (a panicking handler becomes a
//! `500` in `contain_failures`, so a panic shows as one), and every error
//! body is a JSON object with an `errcode` (the first step of user-interactive
//! auth, a `401` carrying `flows`, is the spec's one exception).
//!
//! Coverage: [`SPECS`] gives each route a valid body shape; the test fails
//! when the router serves a method and path that has no entry (a new route
//! must come with its fuzz shape) and when an entry serves nothing. Each case
//! picks a route in turn, a token (Alice's, Bob's, none, an unknown one), path
//! parameters (the fixture's real ids, or ids with bad sigils, very long,
//! percent-escaped), a content type, and a body mutated from the valid shape:
//! malformed JSON, a wrong type at any field, huge, negative and float
//! numbers, deep nesting, long and odd Unicode strings, nulls, missing and
//! extra fields, non-object bodies, empty bodies, bodies past the size limit.
//!
//! Budget: `HOTLINE_FUZZ_CASES` cases (default 40,000, about a minute on two
//! busy cores in release), or `HOTLINE_FUZZ_SECONDS` to run for a time
//! instead; `HOTLINE_FUZZ_SEED` picks another deterministic sequence (the
//! default seed is fixed, so CI runs are reproducible). A failure prints the
//! seed, the case number and the request, enough to replay it.

use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tower::ServiceExt;

/// The valid shape of each route's request: `(method, path key, query,
/// body)`. The key is the path with its prefix and version taken off
/// (`/_matrix/client/v3/createRoom` → `/createRoom`, `/_matrix/media/v3/
/// upload` → `/media/upload`); other paths are kept whole. `$NAME` is
/// replaced with the fixture's values (see [`Fx::subst`]). An empty body means
/// the route reads none (bodies are fuzzed all the same).
const SPECS: &[(&str, &str, &str, &str)] = &[
    // discovery
    ("GET", "/versions", "", ""),
    ("GET", "/.well-known/matrix/client", "", ""),
    ("GET", "/.well-known/matrix/server", "", ""),
    ("GET", "/capabilities", "", ""),
    ("GET", "/voip/turnServer", "", ""),
    // session
    ("GET", "/login", "", ""),
    (
        "POST",
        "/login",
        "",
        r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"$ALICE_NAME"},"password":"$PASSWORD_WRONG","device_id":"FUZZDEV","initial_device_display_name":"fuzz"}"#,
    ),
    ("POST", "/logout", "", ""),
    ("POST", "/logout/all", "", ""),
    ("GET", "/account/whoami", "", ""),
    // account and devices
    (
        "POST",
        "/register",
        "",
        r#"{"username":"$FRESH","password":"pw-$FRESH","auth":{"type":"m.login.dummy"},"device_id":"D$FRESH","initial_device_display_name":"fuzz","inhibit_login":false}"#,
    ),
    ("GET", "/register/available", "username=$FRESH", ""),
    (
        "GET",
        "/register/m.login.registration_token/validity",
        "token=abc",
        "",
    ),
    (
        "GET",
        "/register/org.matrix.msc3231.login.registration_token/validity",
        "token=abc",
        "",
    ),
    (
        "POST",
        "/account/password",
        "",
        r#"{"new_password":"$PASSWORD","logout_devices":false,"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"$ALICE"},"password":"$PASSWORD"}}"#,
    ),
    ("GET", "/devices", "", ""),
    ("GET", "/devices/{device_id}", "", ""),
    ("PUT", "/devices/{device_id}", "", r#"{"display_name":"phone"}"#),
    (
        "DELETE",
        "/devices/{device_id}",
        "",
        r#"{"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"$ALICE"},"password":"$PASSWORD_WRONG"}}"#,
    ),
    (
        "POST",
        "/delete_devices",
        "",
        r#"{"devices":["$DEVICE","NOSUCH"],"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"$ALICE"},"password":"$PASSWORD_WRONG"}}"#,
    ),
    // profile, account data, filters
    ("GET", "/profile/{user_id}", "", ""),
    ("GET", "/profile/{user_id}/{field}", "", ""),
    (
        "PUT",
        "/profile/{user_id}/{field}",
        "",
        r#"{"displayname":"Alice A."}"#,
    ),
    (
        "PUT",
        "/user/{user_id}/account_data/{event_type}",
        "",
        r#"{"a":[1,2,{"b":"c"}],"d":true}"#,
    ),
    ("GET", "/user/{user_id}/account_data/{event_type}", "", ""),
    (
        "PUT",
        "/user/{user_id}/rooms/{room_id}/account_data/{event_type}",
        "",
        r#"{"a":"b"}"#,
    ),
    (
        "GET",
        "/user/{user_id}/rooms/{room_id}/account_data/{event_type}",
        "",
        "",
    ),
    ("GET", "/user/{user_id}/rooms/{room_id}/tags", "", ""),
    (
        "PUT",
        "/user/{user_id}/rooms/{room_id}/tags/{tag}",
        "",
        r#"{"order":0.5}"#,
    ),
    ("DELETE", "/user/{user_id}/rooms/{room_id}/tags/{tag}", "", ""),
    (
        "POST",
        "/user/{user_id}/filter",
        "",
        r#"{"event_fields":["content.body"],"event_format":"client","presence":{"not_types":["*"],"limit":5},"room":{"rooms":["$ROOM"],"timeline":{"limit":10,"types":["m.room.message"],"not_senders":["$BOB"],"lazy_load_members":true,"contains_url":false},"state":{"types":["m.room.*"]},"include_leave":false}}"#,
    ),
    ("GET", "/user/{user_id}/filter/{filter_id}", "", ""),
    // push rules
    ("GET", "/pushers", "", ""),
    (
        "POST",
        "/pushers/set",
        "",
        r#"{"kind":"http","app_id":"org.hotline.fuzz","pushkey":"fuzzkey","app_display_name":"fuzz","device_display_name":"fuzz","lang":"en","append":false,"data":{"url":"http://127.0.0.1:9/_matrix/push/v1/notify","format":"event_id_only"}}"#,
    ),
    ("GET", "/pushrules/", "", ""),
    ("GET", "/pushrules/global/", "", ""),
    ("GET", "/pushrules/global/{kind}/{rule_id}", "", ""),
    (
        "PUT",
        "/pushrules/global/{kind}/{rule_id}",
        "before=.m.rule.master",
        r#"{"actions":["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight"}],"conditions":[{"kind":"event_match","key":"content.body","pattern":"fuzz*"},{"kind":"room_member_count","is":">2"}],"pattern":"fuzz"}"#,
    ),
    ("DELETE", "/pushrules/global/{kind}/{rule_id}", "", ""),
    ("GET", "/pushrules/global/{kind}/{rule_id}/enabled", "", ""),
    (
        "PUT",
        "/pushrules/global/{kind}/{rule_id}/enabled",
        "",
        r#"{"enabled":false}"#,
    ),
    ("GET", "/pushrules/global/{kind}/{rule_id}/actions", "", ""),
    (
        "PUT",
        "/pushrules/global/{kind}/{rule_id}/actions",
        "",
        r#"{"actions":["notify",{"set_tweak":"highlight","value":false}]}"#,
    ),
    // presence
    ("GET", "/presence/{user_id}/status", "", ""),
    (
        "PUT",
        "/presence/{user_id}/status",
        "",
        r#"{"presence":"unavailable","status_msg":"away"}"#,
    ),
    // published room directory
    ("GET", "/directory/list/room/{room_id}", "", ""),
    (
        "PUT",
        "/directory/list/room/{room_id}",
        "",
        r#"{"visibility":"public"}"#,
    ),
    ("GET", "/publicRooms", "limit=5&since=x&server=localhost", ""),
    (
        "POST",
        "/publicRooms",
        "server=localhost",
        r#"{"limit":5,"since":"o0","filter":{"generic_search_term":"fuzz","room_types":[null,"m.space"]},"include_all_networks":false}"#,
    ),
    // rooms
    (
        "POST",
        "/createRoom",
        "",
        r#"{"name":"Fuzz","topic":"t","preset":"private_chat","visibility":"private","invite":["$BOB"],"is_direct":true,"room_version":"11","creation_content":{"m.federate":false},"initial_state":[{"type":"m.room.guest_access","state_key":"","content":{"guest_access":"forbidden"}}],"power_level_content_override":{"users_default":0,"events":{"m.room.name":50}}}"#,
    ),
    ("GET", "/joined_rooms", "", ""),
    ("GET", "/rooms/{room_id}/event/{event_id}", "", ""),
    (
        "GET",
        "/rooms/{room_id}/context/{event_id}",
        "limit=5&filter=%7B%22types%22%3A%5B%22m.room.message%22%5D%7D",
        "",
    ),
    (
        "GET",
        "/rooms/{room_id}/members",
        "membership=join&not_membership=leave&at=s1_0",
        "",
    ),
    ("GET", "/rooms/{room_id}/joined_members", "", ""),
    ("GET", "/rooms/{room_id}/state", "", ""),
    ("GET", "/rooms/{room_id}/state/{event_type}/{state_key}", "", ""),
    (
        "PUT",
        "/rooms/{room_id}/state/{event_type}/{state_key}",
        "",
        r#"{"topic":"fuzzed"}"#,
    ),
    ("GET", "/rooms/{room_id}/state/{event_type}", "", ""),
    (
        "PUT",
        "/rooms/{room_id}/state/{event_type}",
        "",
        r#"{"topic":"fuzzed"}"#,
    ),
    ("GET", "/rooms/{room_id}/state/{event_type}/", "", ""),
    (
        "PUT",
        "/rooms/{room_id}/state/{event_type}/",
        "",
        r#"{"topic":"fuzzed"}"#,
    ),
    (
        "PUT",
        "/directory/room/{room_alias}",
        "",
        r##"{"room_id":"$ROOM"}"##,
    ),
    ("GET", "/directory/room/{room_alias}", "", ""),
    ("DELETE", "/directory/room/{room_alias}", "", ""),
    // membership
    (
        "POST",
        "/rooms/{room_id}/invite",
        "",
        r#"{"user_id":"$BOB","reason":"hi"}"#,
    ),
    ("POST", "/rooms/{room_id}/join", "", r#"{"reason":"hi"}"#),
    (
        "POST",
        "/join/{room_id_or_alias}",
        "server_name=localhost&via=localhost",
        r#"{"reason":"hi"}"#,
    ),
    (
        "POST",
        "/knock/{room_id_or_alias}",
        "via=localhost",
        r#"{"reason":"hi"}"#,
    ),
    ("POST", "/rooms/{room_id}/leave", "", r#"{"reason":"bye"}"#),
    (
        "POST",
        "/rooms/{room_id}/kick",
        "",
        r#"{"user_id":"$BOB","reason":"out"}"#,
    ),
    (
        "POST",
        "/rooms/{room_id}/ban",
        "",
        r#"{"user_id":"$BOB","reason":"out"}"#,
    ),
    (
        "POST",
        "/rooms/{room_id}/unban",
        "",
        r#"{"user_id":"$BOB","reason":"in"}"#,
    ),
    ("POST", "/rooms/{room_id}/forget", "", "{}"),
    // messages
    (
        "PUT",
        "/rooms/{room_id}/send/{event_type}/{txn_id}",
        "",
        r#"{"msgtype":"m.text","body":"hello","m.relates_to":{"rel_type":"m.thread","event_id":"$EVENT"},"m.mentions":{"user_ids":["$BOB"]}}"#,
    ),
    (
        "GET",
        "/rooms/{room_id}/messages",
        "dir=b&limit=10&filter=%7B%22lazy_load_members%22%3Atrue%7D",
        "",
    ),
    (
        "PUT",
        "/rooms/{room_id}/redact/{event_id}/{txn_id}",
        "",
        r#"{"reason":"oops"}"#,
    ),
    (
        "PUT",
        "/rooms/{room_id}/typing/{user_id}",
        "",
        r#"{"typing":true,"timeout":30000}"#,
    ),
    (
        "POST",
        "/rooms/{room_id}/receipt/{receipt_type}/{event_id}",
        "",
        r#"{"thread_id":"main"}"#,
    ),
    (
        "POST",
        "/rooms/{room_id}/read_markers",
        "",
        r#"{"m.fully_read":"$EVENT","m.read":"$EVENT","m.read.private":"$EVENT"}"#,
    ),
    // sync (always `timeout=0`: a long-poll is not a hang)
    (
        "GET",
        "/sync",
        "full_state=false&set_presence=online&filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A3%7D%7D%7D",
        "",
    ),
    // Simplified Sliding Sync (MSC4186), under its unstable prefix
    (
        "POST",
        "/sync",
        "",
        r#"{"conn_id":"fuzz","txn_id":"t1","lists":{"all":{"ranges":[[0,20]],"required_state":[["m.room.name",""],["m.room.member","$LAZY"],["m.room.member","$ME"],["*","*"]],"timeline_limit":5,"filters":{"is_dm":false,"is_invite":false,"is_encrypted":false,"room_types":[null],"not_room_types":["m.space"]}}},"room_subscriptions":{"$ROOM":{"required_state":[["m.room.create",""]],"timeline_limit":3}},"extensions":{"to_device":{"enabled":true,"limit":10},"e2ee":{"enabled":true},"account_data":{"enabled":true},"receipts":{"enabled":true,"rooms":["*"]},"typing":{"enabled":true,"lists":["all"]}}}"#,
    ),
    // end-to-end encryption
    (
        "POST",
        "/keys/upload",
        "",
        r#"{"one_time_keys":{"signed_curve25519:FUZZ$FRESH":{"key":"zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs","signatures":{}}},"fallback_keys":{"signed_curve25519:FB$FRESH":{"key":"zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs","fallback":true,"signatures":{}}}}"#,
    ),
    (
        "POST",
        "/keys/query",
        "",
        r#"{"device_keys":{"$ALICE":[],"$BOB":["$DEVICE"]},"timeout":1000}"#,
    ),
    (
        "POST",
        "/keys/claim",
        "",
        r#"{"one_time_keys":{"$ALICE":{"$DEVICE":"signed_curve25519"}},"timeout":1000}"#,
    ),
    ("GET", "/keys/changes", "from=s0_0&to=s99_0", ""),
    (
        "POST",
        "/keys/device_signing/upload",
        "",
        r#"{"master_key":{"user_id":"$ALICE","usage":["master"],"keys":{"ed25519:abc":"abc"}},"self_signing_key":{"user_id":"$ALICE","usage":["self_signing"],"keys":{"ed25519:def":"def"},"signatures":{"$ALICE":{"ed25519:abc":"sig"}}},"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"$ALICE"},"password":"$PASSWORD"}}"#,
    ),
    (
        "POST",
        "/keys/signatures/upload",
        "",
        r#"{"$ALICE":{"$DEVICE":{"user_id":"$ALICE","device_id":"$DEVICE","algorithms":["m.megolm.v1.aes-sha2"],"keys":{"ed25519:$DEVICE":"abc"},"signatures":{"$ALICE":{"ed25519:abc":"sig"}}}}}"#,
    ),
    (
        "PUT",
        "/sendToDevice/{event_type}/{txn_id}",
        "",
        r#"{"messages":{"$BOB":{"*":{"body":"x"}},"$ALICE":{"$DEVICE":{"n":1}}}}"#,
    ),
    // key backup
    (
        "POST",
        "/room_keys/version",
        "",
        r#"{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"public_key":"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo","signatures":{}}}"#,
    ),
    ("GET", "/room_keys/version", "", ""),
    ("GET", "/room_keys/version/{version}", "", ""),
    (
        "PUT",
        "/room_keys/version/{version}",
        "",
        r#"{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"public_key":"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo","signatures":{}},"version":"$VERSION"}"#,
    ),
    ("DELETE", "/room_keys/version/{version}", "", ""),
    (
        "PUT",
        "/room_keys/keys",
        "version=$VERSION",
        r#"{"rooms":{"$ROOM":{"sessions":{"sess":{"first_message_index":1,"forwarded_count":0,"is_verified":true,"session_data":{"ephemeral":"e","ciphertext":"c","mac":"m"}}}}}}"#,
    ),
    (
        "PUT",
        "/room_keys/keys/{room_id}",
        "version=$VERSION",
        r#"{"sessions":{"sess":{"first_message_index":1,"forwarded_count":0,"is_verified":true,"session_data":{"ephemeral":"e","ciphertext":"c","mac":"m"}}}}"#,
    ),
    (
        "PUT",
        "/room_keys/keys/{room_id}/{session_id}",
        "version=$VERSION",
        r#"{"first_message_index":1,"forwarded_count":0,"is_verified":true,"session_data":{"ephemeral":"e","ciphertext":"c","mac":"m"}}"#,
    ),
    ("GET", "/room_keys/keys", "version=$VERSION", ""),
    ("GET", "/room_keys/keys/{room_id}", "version=$VERSION", ""),
    (
        "GET",
        "/room_keys/keys/{room_id}/{session_id}",
        "version=$VERSION",
        "",
    ),
    ("DELETE", "/room_keys/keys", "version=$VERSION", ""),
    ("DELETE", "/room_keys/keys/{room_id}", "version=$VERSION", ""),
    (
        "DELETE",
        "/room_keys/keys/{room_id}/{session_id}",
        "version=$VERSION",
        "",
    ),
    // media (the upload body is the file itself)
    ("POST", "/media/upload", "filename=f.png", "$RAW"),
    (
        "GET",
        "/media/download/{server_name}/{media_id}",
        "timeout_ms=10",
        "",
    ),
    (
        "GET",
        "/media/download/{server_name}/{media_id}/{filename}",
        "",
        "",
    ),
    (
        "GET",
        "/media/thumbnail/{server_name}/{media_id}",
        "width=32&height=32&method=scale&animated=true",
        "",
    ),
    ("GET", "/media/config", "", ""),
    // Hotline's own API, server keys, operations
    ("GET", "/_matrix/key/v2/server", "", ""),
    ("GET", "/_hotline/v1/directory", "", ""),
    ("GET", "/_hotline/v1/directory/{server_name}", "", ""),
    (
        "GET",
        "/_hotline/v1/resembles",
        "user_id=$BOB&name=Bob%20Smith",
        "",
    ),
    ("GET", "/_hotline/v1/enrol/{code}", "", ""),
    (
        "POST",
        "/_hotline/v1/enrol/{code}",
        "",
        r#"{"password":"a long enough password","device_id":"ENROL","initial_device_display_name":"laptop"}"#,
    ),
    ("GET", "/_hotline/v1/line_invites", "", ""),
    (
        "POST",
        "/_hotline/v1/line_invites",
        "",
        r#"{"max_uses":1,"expires_in_ms":60000,"for_user":"$BOB"}"#,
    ),
    ("GET", "/_hotline/v1/line_invites/{code}", "", ""),
    ("DELETE", "/_hotline/v1/line_invites/{code}", "", ""),
    ("POST", "/_hotline/v1/line_invites/{code}/redeem", "", "{}"),
    ("GET", "/_hotline/v1/contact_log", "format=csv&from=0&to=99", ""),
    ("GET", "/_hotline/v1/watermark", "", ""),
    ("PUT", "/_hotline/v1/lines/{room_id}/aides/{user_id}", "", "{}"),
    ("PUT", "/_hotline/v1/lines/{room_id}/record", "", r#"{"official":false}"#),
    ("DELETE", "/_hotline/v1/lines/{room_id}/aides/{user_id}", "", ""),
    ("GET", "/_hotline/v1/lines/{room_id}/urgent", "", ""),
    (
        "PUT",
        "/_hotline/v1/availability",
        "",
        r#"{"state":"dnd","until":null,"tz":"Europe/Paris"}"#,
    ),
    (
        "PUT",
        "/_hotline/v1/availability/{user_id}",
        "",
        r#"{"state":"asleep","until":4102444800000,"tz":"UTC"}"#,
    ),
    ("GET", "/_hotline/v1/availability/{user_id}", "", ""),
    ("GET", "/healthz", "", ""),
    // Hotline's own push gateway for its web app (no token: called by
    // pushers) and the VAPID key its browsers subscribe with.
    (
        "POST",
        "/_matrix/push/v1/notify",
        "",
        r##"{"notification":{"event_id":"$EVENT","room_id":"$ROOM","type":"m.room.message","sender":"$BOB","sender_display_name":"Bob","room_name":"fuzz room","room_alias":"#fuzz:localhost","user_is_target":false,"prio":"high","content":{"msgtype":"m.text","body":"fuzz"},"counts":{"unread":2,"missed_calls":1},"devices":[{"app_id":"org.hotline.web","pushkey":"BFUZZKEY","pushkey_ts":12345,"data":{"endpoint":"http://127.0.0.1:9/push/fuzz","auth":"AAAAAAAAAAAAAAAAAAAAAA"},"tweaks":{"sound":"default","highlight":true}}]}}"##,
    ),
    ("GET", "/_hotline/v1/push/web", "", ""),
];

/// The spec key of a served path: the client-server prefix and its version
/// (`v3`, `r0`, `v1`, `unstable/org.matrix.mscNNNN`) taken off.
fn key_of(path: &str) -> String {
    let strip = |rest: &str| -> String {
        let mut segs: Vec<&str> = rest.split('/').collect();
        let first = segs[0];
        let versioned = first == "r0"
            || first == "unstable"
            || (first.starts_with('v') && first[1..].parse::<u32>().is_ok());
        if versioned {
            segs.remove(0);
            if first == "unstable" && segs.first().is_some_and(|s| s.contains('.')) {
                segs.remove(0);
            }
        }
        format!("/{}", segs.join("/"))
    };
    if let Some(rest) = path.strip_prefix("/_matrix/client/") {
        strip(rest)
    } else if let Some(rest) = path.strip_prefix("/_matrix/media/") {
        format!("/media{}", strip(rest))
    } else {
        path.to_owned()
    }
}

struct User {
    id: String,
    name: String,
    password: String,
    token: String,
    device: String,
}

/// A server with two users, a room both are in with an event, an alias, a
/// filter, a key backup, an upload, and a device with signed keys.
struct Fx {
    app: axum::Router,
    _dir: tempfile::TempDir,
    _database: Option<common::TestDatabase>,
    alice: User,
    bob: User,
    room: String,
    event: String,
    alias: String,
    filter: String,
    version: String,
    media: String,
    fresh: u64,
}

/// What one call returned.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

const PEER: ([u8; 4], u16) = ([127, 0, 0, 1], 40_000);

async fn call(
    app: &axum::Router,
    method: &Method,
    uri: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Answer, String> {
    let mut req = Request::builder().method(method.clone()).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let mut req = req
        .body(Body::from(body))
        .map_err(|e| format!("unbuildable: {e}"))?;
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(SocketAddr::from(PEER)));
    let resp = tokio::time::timeout(Duration::from_secs(30), app.clone().oneshot(req))
        .await
        .map_err(|_| "no answer within 30 s".to_string())?
        .unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    Ok(Answer {
        status,
        body: body.to_vec(),
    })
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Fx {
    async fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let mut config = hotline_service::Config {
            data_dir: dir.path().to_path_buf(),
            allow_registration: true,
            ..Default::default()
        };
        // Limits would answer most cases with 429 and fuzz nothing behind them.
        config.rate_limits.per_user_per_second = 1e9;
        config.rate_limits.per_user_burst = 1e9;
        config.rate_limits.per_ip_per_second = 1e9;
        config.rate_limits.per_ip_burst = 1e9;
        // `normal`: a real store and the same code paths; only the fsync at
        // each commit is skipped, which would make the budget a disk test.
        // On PostgreSQL (the suite's second engine), a database of its own.
        let database = common::test_database();
        let store: std::sync::Arc<dyn hotline_store::Store> = match &database {
            Some(db) => hotline_store::PostgresStore::open(&db.url).unwrap(),
            None => hotline_store::SqliteStore::open(
                dir.path().join("hotline.db"),
                hotline_store::Durability::Normal,
            )
            .unwrap(),
        };
        let services = hotline_service::Services::new(config, store).unwrap();
        let app = hotline_api::app(services);
        let empty = || User {
            id: String::new(),
            name: String::new(),
            password: "fuzz password 1".into(),
            token: String::new(),
            device: String::new(),
        };
        let mut fx = Fx {
            app,
            _dir: dir,
            _database: database,
            alice: empty(),
            bob: empty(),
            room: String::new(),
            event: String::new(),
            alias: String::new(),
            filter: String::new(),
            version: String::new(),
            media: String::new(),
            fresh: 0,
        };
        fx.alice = fx.register("alice").await;
        fx.bob = fx.register("bob").await;
        fx.upload_device_keys().await;
        fx.new_room().await;
        let alias = "#fuzz:localhost".to_owned();
        let room = fx.room.clone();
        fx.ok(
            "PUT",
            &format!("/_matrix/client/v3/directory/room/{}", enc(&alias)),
            json!({ "room_id": room }),
        )
        .await;
        fx.alias = alias;
        let f = fx
            .ok(
                "POST",
                &format!("/_matrix/client/v3/user/{}/filter", enc(&fx.alice.id)),
                json!({"room": {"timeline": {"limit": 5}}}),
            )
            .await;
        fx.filter = f["filter_id"].as_str().unwrap().to_owned();
        let v = fx
            .ok(
                "POST",
                "/_matrix/client/v3/room_keys/version",
                json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                       "auth_data": {"public_key": "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo"}}),
            )
            .await;
        fx.version = v["version"].as_str().unwrap().to_owned();
        let up = call(
            &fx.app,
            &Method::POST,
            "/_matrix/media/v3/upload?filename=a.txt",
            &[
                ("authorization", format!("Bearer {}", fx.alice.token)),
                ("content-type", "text/plain".into()),
            ],
            b"hello".to_vec(),
        )
        .await
        .unwrap();
        assert_eq!(up.status, 200, "{}", String::from_utf8_lossy(&up.body));
        let mxc = up.json()["content_uri"].as_str().unwrap().to_owned();
        fx.media = mxc.rsplit('/').next().unwrap().to_owned();
        fx
    }

    /// A call as Alice that must succeed.
    async fn ok(&self, method: &str, uri: &str, body: Value) -> Value {
        self.ok_as(&self.alice.token, method, uri, body).await
    }

    async fn ok_as(&self, token: &str, method: &str, uri: &str, body: Value) -> Value {
        let a = call(
            &self.app,
            &Method::from_bytes(method.as_bytes()).unwrap(),
            uri,
            &[
                ("authorization", format!("Bearer {token}")),
                ("content-type", "application/json".into()),
            ],
            body.to_string().into_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(
            a.status,
            200,
            "{method} {uri}: {}",
            String::from_utf8_lossy(&a.body)
        );
        a.json()
    }

    async fn register(&mut self, name: &str) -> User {
        let password = "fuzz password 1".to_owned();
        let a = call(
            &self.app,
            &Method::POST,
            "/_matrix/client/v3/register",
            &[("content-type", "application/json".into())],
            json!({"username": name, "password": password, "auth": {"type": "m.login.dummy"}})
                .to_string()
                .into_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        let v = a.json();
        User {
            id: v["user_id"].as_str().unwrap().to_owned(),
            name: name.to_owned(),
            password,
            token: v["access_token"].as_str().unwrap().to_owned(),
            device: v["device_id"].as_str().unwrap().to_owned(),
        }
    }

    /// Logs in again whoever the last case logged out (logout, a deleted
    /// device, a changed password); Alice's new device gets keys again.
    async fn restore_sessions(&mut self) {
        for alice in [true, false] {
            let u = if alice { &self.alice } else { &self.bob };
            let a = call(
                &self.app,
                &Method::GET,
                "/_matrix/client/v3/account/whoami",
                &[("authorization", format!("Bearer {}", u.token))],
                Vec::new(),
            )
            .await
            .unwrap();
            if a.status == 200 {
                continue;
            }
            let body = json!({"type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": u.name}, "password": u.password});
            let a = call(
                &self.app,
                &Method::POST,
                "/_matrix/client/v3/login",
                &[("content-type", "application/json".into())],
                body.to_string().into_bytes(),
            )
            .await
            .unwrap();
            assert_eq!(a.status, 200, "login: {}", String::from_utf8_lossy(&a.body));
            let v = a.json();
            let u = if alice {
                &mut self.alice
            } else {
                &mut self.bob
            };
            u.token = v["access_token"].as_str().unwrap().to_owned();
            u.device = v["device_id"].as_str().unwrap().to_owned();
            if alice {
                self.upload_device_keys().await;
            }
        }
    }

    /// Signed device keys and a signed one-time key for Alice's device.
    async fn upload_device_keys(&self) {
        use ruma::serde::Base64;
        use ruma::signatures::{sign_json, Ed25519KeyPair};
        let doc = Ed25519KeyPair::generate();
        let kp = Ed25519KeyPair::from_der(&doc, self.alice.device.clone()).unwrap();
        let ed = Base64::<ruma::serde::base64::Standard>::new(kp.public_key().to_vec()).encode();
        let ed = ed.trim_end_matches('=').to_owned();
        let (user, dev) = (&self.alice.id, &self.alice.device);
        let mut keys: ruma::CanonicalJsonObject = serde_json::from_value(json!({
            "user_id": user, "device_id": dev,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {format!("curve25519:{dev}"): "zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs",
                     format!("ed25519:{dev}"): ed},
        }))
        .unwrap();
        sign_json(user, &kp, &mut keys).unwrap();
        let mut otk: ruma::CanonicalJsonObject =
            serde_json::from_value(json!({"key": "6EEEO2ZmvUSNWOh0uF6N6pAtt6/0k6wUCDGVpSfU9Ds"}))
                .unwrap();
        sign_json(user, &kp, &mut otk).unwrap();
        self.ok(
            "POST",
            "/_matrix/client/v3/keys/upload",
            json!({"device_keys": keys, "one_time_keys": {"signed_curve25519:AAAAAQ": otk}}),
        )
        .await;
    }

    /// A fresh room with both users in it and one message: fuzzed state
    /// events (power levels, join rules, bans) wear the room down.
    async fn new_room(&mut self) {
        let v = self
            .ok(
                "POST",
                "/_matrix/client/v3/createRoom",
                json!({"preset": "private_chat", "invite": [self.bob.id]}),
            )
            .await;
        self.room = v["room_id"].as_str().unwrap().to_owned();
        let room = enc(&self.room);
        let bob = self.bob.token.clone();
        self.ok_as(
            &bob,
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            json!({}),
        )
        .await;
        let v = self
            .ok(
                "PUT",
                &format!(
                    "/_matrix/client/v3/rooms/{room}/send/m.room.message/fx{}",
                    self.fresh
                ),
                json!({"msgtype": "m.text", "body": "fixture"}),
            )
            .await;
        self.event = v["event_id"].as_str().unwrap().to_owned();
    }

    /// Replaces `$NAME`s in a spec's query or body, each value passed
    /// through `esc` (JSON-escaped in bodies, percent-encoded in queries:
    /// a fuzzed password change may leave any character in the password).
    fn subst(&mut self, s: &str, esc: fn(&str) -> String) -> String {
        self.fresh += 1;
        s.replace("$ALICE_NAME", &esc(&self.alice.name))
            .replace("$ALICE", &esc(&self.alice.id))
            .replace("$BOB", &esc(&self.bob.id))
            .replace("$ROOM", &esc(&self.room))
            .replace("$EVENT", &esc(&self.event))
            .replace("$DEVICE", &esc(&self.alice.device))
            .replace("$PASSWORD_WRONG", "not the password")
            .replace("$PASSWORD", &esc(&self.alice.password))
            .replace("$VERSION", &esc(&self.version))
            .replace("$FRESH", &format!("fz{}", self.fresh))
    }

    /// The fixture's value for a path parameter.
    fn param(&self, name: &str, path: &str, rng: &mut StdRng) -> String {
        let pick = |xs: &[&str], rng: &mut StdRng| xs[rng.gen_range(0..xs.len())].to_owned();
        match name {
            "room_id" => self.room.clone(),
            "event_id" => self.event.clone(),
            "user_id" => {
                if rng.gen_bool(0.9) {
                    self.alice.id.clone()
                } else {
                    self.bob.id.clone()
                }
            }
            "device_id" => self.alice.device.clone(),
            "event_type" | "type" if path.contains("/state/") => pick(
                &[
                    "m.room.topic",
                    "m.room.name",
                    "m.room.power_levels",
                    "m.room.join_rules",
                    "m.room.member",
                    "m.room.history_visibility",
                    "m.room.canonical_alias",
                    "m.room.create",
                    "org.hotline.line",
                    "m.room.encryption",
                ],
                rng,
            ),
            "event_type" | "type" => pick(
                &[
                    "m.room.message",
                    "m.reaction",
                    "m.room.encrypted",
                    "m.push_rules",
                    "m.direct",
                    "m.fully_read",
                    "m.tag",
                    "m.ignored_user_list",
                    "org.hotline.line",
                ],
                rng,
            ),
            "state_key" => {
                if rng.gen_bool(0.5) {
                    self.alice.id.clone()
                } else {
                    pick(&["x", &self.bob.id, " "], rng)
                }
            }
            "txn_id" => format!("t{}", rng.gen::<u64>()),
            "filter_id" => self.filter.clone(),
            "room_alias" => self.alias.clone(),
            "room_id_or_alias" => {
                if rng.gen_bool(0.5) {
                    self.room.clone()
                } else {
                    self.alias.clone()
                }
            }
            "kind" => pick(&["override", "content", "room", "sender", "underride"], rng),
            "rule_id" => pick(
                &[
                    ".m.rule.master",
                    ".m.rule.contains_display_name",
                    "fuzz",
                    ".m.rule.message",
                ],
                rng,
            ),
            "receipt_type" => pick(&["m.read", "m.read.private", "m.fully_read"], rng),
            "tag" => pick(&["u.fuzz", "m.favourite", "m.lowpriority"], rng),
            "field" => pick(&["displayname", "avatar_url", "m.tz", "org.fuzz"], rng),
            "server_name" => "localhost".into(),
            "media_id" => self.media.clone(),
            "filename" => "f.txt".into(),
            "version" => self.version.clone(),
            "session_id" => "sess".into(),
            "code" => pick(&["nosuchcode", "AAAAAAAAAAAAAAAA"], rng),
            other => panic!(
                "path parameter {{{other}}} in {path} has no fixture value; add one to Fx::param"
            ),
        }
    }
}

/// Path parameter values that are wrong in form, not just unknown.
fn bad_param(rng: &mut StdRng) -> String {
    let long = "a".repeat(rng.gen_range(256..20_000));
    let xs: Vec<String> = vec![
        "%00".into(),
        "%ZZ".into(),
        "%".into(),
        "%2F%2E%2E%2F".into(),
        "%C0%AF".into(),
        "%FF%FE".into(),
        "%F0%9F%92%A9".into(),
        "%E2%80%AE%E2%80%8B".into(),
        "..".into(),
        "!".into(),
        "@".into(),
        "$".into(),
        "#".into(),
        "%23nosigil".into(),
        "!nocolon".into(),
        "@a:".into(),
        "@:localhost".into(),
        "!x:localhost:99999999".into(),
        "$abc:localhost".into(),
        "%40ALICE%3Alocalhost".into(),
        "%21room%3A%5B%3A%3A1%5D".into(),
        "%24".into(),
        format!("%40{long}%3Alocalhost"),
        format!("%21{long}%3Alocalhost"),
        long.clone(),
        "%20".into(),
        "-1".into(),
        "18446744073709551616".into(),
        "null".into(),
        "%7B%7D".into(),
        "%0D%0Ainjected".into(),
    ];
    xs[rng.gen_range(0..xs.len())].clone()
}

/// Values of the wrong kind for almost any field.
fn odd_value(rng: &mut StdRng) -> Value {
    let n = rng.gen_range(0..ODD_VALUES);
    odd_value_n(n, rng)
}

const ODD_VALUES: u64 = 24;

/// The `n`th kind of odd value (of [`ODD_VALUES`]).
fn odd_value_n(n: u64, rng: &mut StdRng) -> Value {
    match n {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(0),
        3 => json!(-1),
        4 => json!(i64::MIN),
        5 => json!(i64::MAX),
        6 => json!(u64::MAX),
        7 => json!(1.5),
        8 => json!(-0.0),
        9 => json!(1e308),
        10 => json!(""),
        11 => json!("x".repeat(rng.gen_range(1000..70_000))),
        12 => json!("\u{202e}\u{200b}𝔄𝔩𝔦𝔠𝔢\u{0}\u{fffd}"),
        13 => json!([]),
        14 => json!({}),
        15 => json!([null, 1, "a", {}]),
        16 => json!({"": null, "\u{0}": 1}),
        17 => json!("@alice:localhost"),
        18 => json!("!room:localhost"),
        19 => json!("$event"),
        20 => json!(9007199254740993u64),
        21 => nest(rng.gen_range(20..120)),
        22 => random_value(rng, 3),
        _ => json!("mxc://localhost/x"),
    }
}

fn nest(depth: usize) -> Value {
    let mut v = json!(1);
    for i in 0..depth {
        v = if i % 2 == 0 {
            json!([v])
        } else {
            json!({ "a": v })
        };
    }
    v
}

fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.gen_range(0..if depth == 0 { 4 } else { 6 }) {
        0 => Value::Null,
        1 => json!(rng.gen::<bool>()),
        2 => json!(rng.gen::<i64>() >> rng.gen_range(0..63)),
        3 => json!((0..rng.gen_range(0..12))
            .map(|_| rng.gen_range(' '..='\u{3000}'))
            .collect::<String>()),
        4 => Value::Array(
            (0..rng.gen_range(0..4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.gen_range(0..4))
                .map(|i| (format!("k{i}"), random_value(rng, depth - 1)))
                .collect(),
        ),
    }
}

/// Every place in `v` a value sits, as a path of keys and indices.
fn places(v: &Value, here: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                here.push(json!(k));
                out.push(here.clone());
                places(x, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                here.push(json!(i));
                out.push(here.clone());
                places(x, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

/// Applies `f` to the parent of the value at `path` and the last step.
fn at_parent(v: &mut Value, path: &[Value], f: impl FnOnce(&mut Value, &Value)) {
    let (last, init) = path.split_last().unwrap();
    let mut cur = v;
    for step in init {
        cur = match step {
            Value::String(k) => cur.get_mut(k.as_str()).unwrap(),
            Value::Number(i) => cur.get_mut(i.as_u64().unwrap() as usize).unwrap(),
            _ => unreachable!(),
        };
    }
    f(cur, last)
}

/// A body and its content type, mutated from the route's valid shape.
/// `nth` counts the route's single-field mutations: they walk every place
/// in the shape with one kind of odd value, then the next kind, so a route's
/// every field gets every kind of value within a few hundred cases.
fn gen_body(
    rng: &mut StdRng,
    valid: &str,
    raw_route: bool,
    limit: usize,
    nth: &mut u64,
) -> (Vec<u8>, String) {
    let json_ct = "application/json".to_owned();
    let ct = match rng.gen_range(0..20) {
        0 => String::new(),
        1 => "text/plain".into(),
        2 => "application/x-www-form-urlencoded".into(),
        3 => "multipart/form-data; boundary=x".into(),
        4 => "application/json; charset=utf-16".into(),
        5 => "image/png".into(),
        _ => json_ct,
    };
    if raw_route {
        // A media upload: the body is the file. PNG headers, truncated
        // images, empty files, random bytes.
        let mut b: Vec<u8> = match rng.gen_range(0..4) {
            0 => b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\x7f\xff\0\0\x7f\xff\x08\x02".to_vec(),
            1 => Vec::new(),
            2 => b"GIF89a\xff\xff\xff\xff".to_vec(),
            _ => (0..rng.gen_range(0..4096)).map(|_| rng.gen()).collect(),
        };
        if rng.gen_bool(0.01) {
            b.resize(limit + 1, 0);
        }
        return (b, ct);
    }
    let template: Value = if valid.is_empty() {
        json!({})
    } else {
        serde_json::from_str(valid).unwrap()
    };
    let mut v = template.clone();
    let mut ps = Vec::new();
    places(&v, &mut Vec::new(), &mut ps);
    let body = match rng.gen_range(0..100) {
        // The valid shape itself: reaches the deepest code.
        0..=14 => v.to_string().into_bytes(),
        // A wrong type (or odd value) at one field.
        15..=44 if !ps.is_empty() => {
            let p = &ps[(*nth % ps.len() as u64) as usize];
            let new = odd_value_n((*nth / ps.len() as u64) % ODD_VALUES, rng);
            *nth += 1;
            at_parent(&mut v, p, |parent, last| match last {
                Value::String(k) => parent[k.as_str()] = new,
                Value::Number(i) => parent[i.as_u64().unwrap() as usize] = new,
                _ => unreachable!(),
            });
            v.to_string().into_bytes()
        }
        // Several fields at once.
        45..=52 if !ps.is_empty() => {
            for _ in 0..rng.gen_range(2..5) {
                let mut ps = Vec::new();
                places(&v, &mut Vec::new(), &mut ps);
                if ps.is_empty() {
                    break;
                }
                let p = ps[rng.gen_range(0..ps.len())].clone();
                let new = odd_value(rng);
                at_parent(&mut v, &p, |parent, last| match last {
                    Value::String(k) => parent[k.as_str()] = new,
                    Value::Number(i) => parent[i.as_u64().unwrap() as usize] = new,
                    _ => unreachable!(),
                });
            }
            v.to_string().into_bytes()
        }
        // A missing field.
        53..=60 if !ps.is_empty() => {
            let p = &ps[rng.gen_range(0..ps.len())];
            at_parent(&mut v, p, |parent, last| match last {
                Value::String(k) => {
                    parent.as_object_mut().unwrap().remove(k.as_str());
                }
                Value::Number(i) => {
                    parent
                        .as_array_mut()
                        .unwrap()
                        .remove(i.as_u64().unwrap() as usize);
                }
                _ => unreachable!(),
            });
            v.to_string().into_bytes()
        }
        // An extra field, at the top or inside.
        61..=66 => {
            let target = if !ps.is_empty() && rng.gen_bool(0.5) {
                let p = &ps[rng.gen_range(0..ps.len())];
                let mut cur = &mut v;
                for step in p {
                    cur = match step {
                        Value::String(k) => cur.get_mut(k.as_str()).unwrap(),
                        Value::Number(i) => cur.get_mut(i.as_u64().unwrap() as usize).unwrap(),
                        _ => unreachable!(),
                    };
                }
                cur
            } else {
                &mut v
            };
            let extra = odd_value(rng);
            if let Some(o) = target.as_object_mut() {
                o.insert(
                    ["extra", "", "\u{0}", "$", "m.relates_to", "type", "auth"]
                        [rng.gen_range(0..7)]
                    .to_owned(),
                    extra,
                );
            } else if let Some(a) = target.as_array_mut() {
                a.push(extra);
            }
            v.to_string().into_bytes()
        }
        // Malformed JSON text.
        67..=78 => {
            let text = template.to_string();
            let mut b = text.into_bytes();
            match rng.gen_range(0..12) {
                0 => {
                    let n = rng.gen_range(0..=b.len());
                    b.truncate(n)
                }
                1 => {
                    let i = rng.gen_range(0..b.len());
                    b[i] = rng.gen();
                }
                2 => b.extend_from_slice(b"}garbage"),
                3 => b
                    .splice(0..0, b"\xEF\xBB\xBF".iter().copied())
                    .for_each(drop),
                4 => b = b"{\"a\":\xff\xfe}".to_vec(),
                5 => b = b"{\"a\":NaN,\"b\":Infinity}".to_vec(),
                6 => b = b"{\"a\":1e999,\"b\":-1e999}".to_vec(),
                7 => b = b"{\"a\":123456789012345678901234567890123456789}".to_vec(),
                8 => {
                    // Duplicate keys: the last one must not slip past checks
                    // made on the first.
                    let t = template.to_string();
                    b = if t.len() > 2 {
                        format!("{},{}", &t[..t.len() - 1], &t[1..]).into_bytes()
                    } else {
                        b"{\"a\":1,\"a\":2}".to_vec()
                    };
                }
                9 => b = "[".repeat(rng.gen_range(100..100_000)).into_bytes(),
                10 => b = format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200)).into_bytes(),
                _ => b = b"{\"\\ud800\":\"\\udfff\\u0000\"}".to_vec(),
            }
            b
        }
        // Not an object.
        79..=84 => ["[]", "null", "1", "\"{}\"", "true", "[{}]", "-0", "1.0e3"]
            [rng.gen_range(0..8)]
        .as_bytes()
        .to_vec(),
        // Empty and blank bodies.
        85..=88 => ["", " ", "\n\t", "\0"][rng.gen_range(0..4)]
            .as_bytes()
            .to_vec(),
        // Past the size limit, sometimes as valid JSON.
        89 => {
            let pad = "x".repeat(limit + 16);
            json!({ "pad": pad }).to_string().into_bytes()
        }
        // Deeply nested but within the parser's limit, at a field.
        90..=94 if !ps.is_empty() => {
            let p = &ps[rng.gen_range(0..ps.len())];
            let new = nest(rng.gen_range(60..127));
            at_parent(&mut v, p, |parent, last| match last {
                Value::String(k) => parent[k.as_str()] = new,
                Value::Number(i) => parent[i.as_u64().unwrap() as usize] = new,
                _ => unreachable!(),
            });
            v.to_string().into_bytes()
        }
        // Something random.
        _ => random_value(rng, 4).to_string().into_bytes(),
    };
    (body, ct)
}

/// Query strings that are wrong in form.
fn bad_query(rng: &mut StdRng) -> &'static str {
    const QS: &[&str] = &[
        "limit=-1",
        "limit=99999999999999999999",
        "limit=1.5",
        "limit=",
        "from=%ZZ",
        "from=s-1_-1",
        "from=s99999999999999999999_0",
        "dir=x",
        "dir=f&from=t0_0",
        "filter=%7B",
        "filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A-5%7D%7D%7D",
        "filter=999999",
        "since=garbage",
        "since=s1_1&full_state=maybe",
        "version=-1",
        "version=99999999999999999999",
        "width=-1&height=0",
        "width=100000&height=100000",
        "membership=banana",
        "at=%00",
        "access_token=",
        "a=%E2%80%AE&&&=&",
        "set_presence=busy",
        "timeout_ms=-5",
    ];
    QS[rng.gen_range(0..QS.len())]
}

struct Failure {
    case: u64,
    what: String,
}

fn check(answer: &Answer) -> Result<(), String> {
    if answer.status.is_server_error() {
        return Err(format!("status {}", answer.status));
    }
    if answer.status.is_client_error() {
        let v: Value = serde_json::from_slice(&answer.body)
            .map_err(|_| format!("status {}: error body is not JSON", answer.status))?;
        let Some(o) = v.as_object() else {
            return Err(format!(
                "status {}: error body is not an object",
                answer.status
            ));
        };
        let uiaa = answer.status == 401 && o.contains_key("flows");
        if !uiaa && !o.get("errcode").is_some_and(Value::is_string) {
            return Err(format!(
                "status {}: error body has no errcode",
                answer.status
            ));
        }
    }
    Ok(())
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_body_or_path_parameter_makes_any_endpoint_answer_5xx_or_an_error_without_errcode(
) {
    let cases = env_u64("HOTLINE_FUZZ_CASES").unwrap_or(40_000);
    let seconds = env_u64("HOTLINE_FUZZ_SECONDS");
    let seed = env_u64("HOTLINE_FUZZ_SEED").unwrap_or(0x0048_6f74_6c69_6e65);
    let mut fx = Fx::new().await;
    let limit = hotline_service::Config::default().max_request_bytes;

    // Which methods the router serves at each path: anything but its
    // `405 M_UNRECOGNIZED`. Probed without a token, so nothing happens.
    let mut routes: Vec<(Method, &'static str)> = Vec::new();
    let paths: BTreeSet<&'static str> = hotline_api::served_paths().into_iter().collect();
    let mut probe_rng = StdRng::seed_from_u64(seed);
    for path in &paths {
        let uri = fill(&fx, path, &mut probe_rng);
        for m in [Method::GET, Method::PUT, Method::POST, Method::DELETE] {
            let a = call(&fx.app, &m, &uri, &[], Vec::new()).await.unwrap();
            let unrecognized = a.json()["errcode"] == "M_UNRECOGNIZED";
            if !(a.status == StatusCode::METHOD_NOT_ALLOWED && unrecognized) {
                routes.push((m, path));
            }
        }
    }
    let keys: BTreeSet<(String, String)> = routes
        .iter()
        .map(|(m, p)| (m.to_string(), key_of(p)))
        .collect();
    let specs: BTreeSet<(String, String)> = SPECS
        .iter()
        .map(|(m, k, _, _)| (m.to_string(), k.to_string()))
        .collect();
    let uncovered: Vec<_> = keys.difference(&specs).collect();
    assert!(
        uncovered.is_empty(),
        "routes served without a fuzz shape in SPECS: {uncovered:?}"
    );
    let stale: Vec<_> = specs.difference(&keys).collect();
    assert!(
        stale.is_empty(),
        "SPECS entries the router does not serve: {stale:?}"
    );
    eprintln!(
        "fuzz: {} routes ({} paths), seed {seed}, {} cases{}",
        routes.len(),
        paths.len(),
        cases,
        seconds.map(|s| format!(" or {s} s")).unwrap_or_default()
    );

    let mut rng = StdRng::seed_from_u64(seed);
    let mut failures: Vec<Failure> = Vec::new();
    let mut seen: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut statuses: std::collections::BTreeMap<u16, u64> = Default::default();
    let start = Instant::now();
    let mut case = 0u64;
    let mut mutations: std::collections::HashMap<usize, u64> = Default::default();
    loop {
        let over = match seconds {
            Some(s) => start.elapsed() >= Duration::from_secs(s),
            None => case >= cases,
        };
        if over {
            break;
        }
        let (method, path) = routes[(case as usize) % routes.len()].clone();
        let (_, _, query, body_shape) = SPECS
            .iter()
            .find(|(m, k, _, _)| *m == method.as_str() && *k == key_of(path))
            .unwrap();
        // A route is hit every `routes.len()` cases; the rest is random.
        let mut uri = String::new();
        for (i, seg) in path.split('/').enumerate() {
            if i > 0 {
                uri.push('/');
            }
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if rng.gen_bool(0.92) {
                    uri.push_str(&enc(&fx.param(name, path, &mut rng)));
                } else {
                    uri.push_str(&bad_param(&mut rng));
                }
            } else {
                uri.push_str(seg);
            }
        }
        let mut q = fx.subst(query, enc);
        if rng.gen_bool(0.15) {
            if !q.is_empty() {
                q.push('&');
            }
            q.push_str(bad_query(&mut rng));
        }
        if key_of(path) == "/sync" {
            if !q.is_empty() {
                q.push('&');
            }
            q.push_str("timeout=0");
        }
        let token = match rng.gen_range(0..30) {
            0..=22 => Some(fx.alice.token.clone()),
            23..=25 => Some(fx.bob.token.clone()),
            26 => None,
            27 => Some("syt_bogus_token".to_owned()),
            28 => Some(String::new()),
            _ => {
                if !q.is_empty() {
                    q.push('&');
                }
                q.push_str(&format!("access_token={}", fx.alice.token));
                None
            }
        };
        if !q.is_empty() {
            uri.push('?');
            uri.push_str(&q);
        }
        let valid = fx.subst(body_shape, json_escape);
        let nth = mutations.entry(case as usize % routes.len()).or_default();
        let (body, ct) = gen_body(&mut rng, &valid, valid == "$RAW", limit, nth);
        let mut headers: Vec<(&str, String)> = Vec::new();
        if let Some(t) = &token {
            headers.push(("authorization", format!("Bearer {t}")));
        }
        if !ct.is_empty() {
            headers.push(("content-type", ct.clone()));
        }
        let answer = match call(&fx.app, &method, &uri, &headers, body.clone()).await {
            Ok(a) => a,
            // A URI or header the http crate refuses never reaches a server.
            Err(e) if e.starts_with("unbuildable") => {
                case += 1;
                continue;
            }
            Err(e) => Answer {
                status: StatusCode::from_u16(599).unwrap(),
                body: e.into_bytes(),
            },
        };
        *statuses.entry(answer.status.as_u16()).or_default() += 1;
        if let Err(why) = check(&answer) {
            let errcode = answer.json()["errcode"].as_str().unwrap_or("").to_owned();
            let key = (format!("{method} {path}"), why.clone(), errcode);
            if seen.insert(key) {
                let shown = String::from_utf8_lossy(&body[..body.len().min(600)]).into_owned();
                let answer_text =
                    String::from_utf8_lossy(&answer.body[..answer.body.len().min(400)])
                        .into_owned();
                let uri_shown = uri.replace(&fx.alice.token, "ALICE_TOKEN");
                failures.push(Failure {
                    case,
                    what: format!(
                        "{why}\n    {method} {}\n    content-type: {ct:?}, token: {}\n    body ({} bytes): {shown}\n    answer: {answer_text}",
                        &uri_shown[..uri_shown.len().min(400)],
                        match &token {
                            Some(t) if *t == fx.alice.token => "alice",
                            Some(t) if *t == fx.bob.token => "bob",
                            Some(_) => "bogus",
                            None => "none",
                        },
                        body.len()
                    ),
                });
            }
        }
        if key_of(path) == "/account/password" && answer.status == 200 {
            let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let who_alice =
                token.as_deref() == Some(fx.alice.token.as_str()) || uri.contains(&fx.alice.token);
            if let Some(p) = sent["new_password"].as_str() {
                if who_alice {
                    fx.alice.password = p.to_owned();
                } else {
                    fx.bob.password = p.to_owned();
                }
            }
        }
        fx.restore_sessions().await;
        case += 1;
        if case.is_multiple_of(400) {
            fx.new_room().await;
        }
    }
    eprintln!(
        "fuzz: {case} cases in {:.1} s; statuses {statuses:?}",
        start.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        let mut report = format!(
            "{} distinct failures (seed {seed}; replay with HOTLINE_FUZZ_SEED={seed} HOTLINE_FUZZ_CASES={}):\n",
            failures.len(),
            failures.last().unwrap().case + 1
        );
        for f in &failures {
            report.push_str(&format!("case {}: {}\n", f.case, f.what));
        }
        panic!("{report}");
    }
}

/// `s` as the inside of a JSON string.
fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap();
    quoted[1..quoted.len() - 1].to_owned()
}

/// A path with every parameter set to the fixture's value.
fn fill(fx: &Fx, path: &str, rng: &mut StdRng) -> String {
    path.split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => enc(&fx.param(name, path, rng)),
                None => seg.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// The valid shape of each federation route's request: `(method, path,
/// query, body)`, the path whole. `$NAME`s as in [`SPECS`], with the
/// federation fixture's values ([`FedFx`]).
const FED_SPECS: &[(&str, &str, &str, &str)] = &[
    ("GET", "/_matrix/federation/v1/version", "", ""),
    ("GET", "/_matrix/key/v2/server", "", ""),
    ("GET", "/_matrix/key/v2/query/{server_name}", "", ""),
    (
        "POST",
        "/_matrix/key/v2/query",
        "",
        r#"{"server_keys":{"$PEER":{}}}"#,
    ),
    (
        "GET",
        "/_matrix/federation/v1/query/profile",
        "user_id=$ALICE",
        "",
    ),
    (
        "GET",
        "/_matrix/federation/v1/query/directory",
        "room_alias=$ALIAS",
        "",
    ),
    (
        "GET",
        "/_matrix/federation/v1/make_join/{room_id}/{user_id}",
        "ver=10&ver=11",
        "",
    ),
    (
        "PUT",
        "/_matrix/federation/v2/send_join/{room_id}/{event_id}",
        "",
        "$PDU",
    ),
    (
        "GET",
        "/_matrix/federation/v1/make_leave/{room_id}/{user_id}",
        "",
        "",
    ),
    (
        "PUT",
        "/_matrix/federation/v2/send_leave/{room_id}/{event_id}",
        "",
        "$PDU",
    ),
    (
        "GET",
        "/_matrix/federation/v1/make_knock/{room_id}/{user_id}",
        "ver=10&ver=11",
        "",
    ),
    (
        "PUT",
        "/_matrix/federation/v1/send_knock/{room_id}/{event_id}",
        "",
        "$PDU",
    ),
    (
        "PUT",
        "/_matrix/federation/v2/invite/{room_id}/{event_id}",
        "",
        r#"{"room_version":"11","event":$PDU,"invite_room_state":[]}"#,
    ),
    (
        "PUT",
        "/_matrix/federation/v1/send/{transaction_id}",
        "",
        r#"{"origin":"$PEER","origin_server_ts":1700000000000,"pdus":[$PDU],"edus":[{"edu_type":"m.typing","content":{"room_id":"$ROOM","user_id":"$BOB","typing":true}},{"edu_type":"m.receipt","content":{"$ROOM":{"m.read":{"$BOB":{"event_ids":["$EVENT"],"data":{"ts":1}}}}}},{"edu_type":"m.direct_to_device","content":{"sender":"$BOB","type":"m.room_key_request","message_id":"m1","messages":{"$ALICE":{"*":{"x":1}}}}},{"edu_type":"m.device_list_update","content":{"user_id":"$BOB","device_id":"D","stream_id":1,"prev_id":[]}}]}"#,
    ),
    ("GET", "/_matrix/federation/v1/event/{event_id}", "", ""),
    (
        "GET",
        "/_matrix/federation/v1/state/{room_id}",
        "event_id=$EVENT",
        "",
    ),
    (
        "GET",
        "/_matrix/federation/v1/state_ids/{room_id}",
        "event_id=$EVENT",
        "",
    ),
    (
        "GET",
        "/_matrix/federation/v1/event_auth/{room_id}/{event_id}",
        "",
        "",
    ),
    (
        "GET",
        "/_matrix/federation/v1/backfill/{room_id}",
        "v=$EVENT&limit=10",
        "",
    ),
    (
        "POST",
        "/_matrix/federation/v1/get_missing_events/{room_id}",
        "",
        r#"{"limit":10,"min_depth":0,"earliest_events":[],"latest_events":["$EVENT"]}"#,
    ),
    (
        "GET",
        "/_matrix/federation/v1/user/devices/{user_id}",
        "",
        "",
    ),
    (
        "POST",
        "/_matrix/federation/v1/user/keys/query",
        "",
        r#"{"device_keys":{"$ALICE":[]}}"#,
    ),
    (
        "POST",
        "/_matrix/federation/v1/user/keys/claim",
        "",
        r#"{"one_time_keys":{"$ALICE":{"DEV":"signed_curve25519"}}}"#,
    ),
    (
        "GET",
        "/_matrix/federation/v1/media/download/{media_id}",
        "",
        "",
    ),
    (
        "GET",
        "/_matrix/federation/v1/media/thumbnail/{media_id}",
        "width=32&height=32&method=crop&timeout_ms=1000&animated=false",
        "",
    ),
    // Hotline's own federation endpoints
    ("GET", "/_hotline/federation/v1/directory", "", ""),
    (
        "GET",
        "/_hotline/federation/v1/line_invites/{code}",
        "redeemer=$BOB",
        "",
    ),
    (
        "POST",
        "/_hotline/federation/v1/line_invites/{code}/redeem",
        "",
        r#"{"redeemer":"$BOB"}"#,
    ),
];

/// The server under test's name (in process: it is never dialled).
const FED_NAME: &str = "fuzz-a.hotline.test";

/// A Hotline with federation on, served in process, whose peer is a real
/// Hotline (B) that the test speaks for with B's own signing key: a room of
/// alice's that B's bob joined (through make_join and send_join, signed as
/// B), an alias, an event, and a valid PDU of bob's to mutate.
struct FedFx {
    app: axum::Router,
    _dir: tempfile::TempDir,
    _database: Option<common::TestDatabase>,
    _ca: common::TestCa,
    peer: common::FederatedServer,
    key: ruma::signatures::Ed25519KeyPair,
    alice: String,
    bob: String,
    room: String,
    alias: String,
    event: String,
    pdu: String,
    /// An image alice uploaded.
    media: String,
}

impl FedFx {
    async fn new() -> FedFx {
        let ca = common::TestCa::new();
        let (port, _) = common::FederatedServer::reserve();
        let peer = common::FederatedServer::start(&ca, port, &[FED_NAME], "").await;
        let key = peer.signing_key();
        let dir = tempfile::tempdir().unwrap();
        let mut config = hotline_service::Config {
            server_name: FED_NAME.into(),
            data_dir: dir.path().to_path_buf(),
            allow_registration: true,
            ..Default::default()
        };
        config.rate_limits.per_user_per_second = 1e9;
        config.rate_limits.per_user_burst = 1e9;
        config.rate_limits.per_ip_per_second = 1e9;
        config.rate_limits.per_ip_burst = 1e9;
        config.federation.enabled = true;
        config.federation.allow = vec![peer.name.clone()];
        config.federation.ca_file = Some(ca.ca_file.clone());
        let database = common::test_database();
        let store: std::sync::Arc<dyn hotline_store::Store> = match &database {
            Some(db) => hotline_store::PostgresStore::open(&db.url).unwrap(),
            None => hotline_store::SqliteStore::open(
                dir.path().join("hotline.db"),
                hotline_store::Durability::Normal,
            )
            .unwrap(),
        };
        let services = hotline_service::Services::new(config, store).unwrap();
        services.federation.set_transport(std::sync::Arc::new(
            hotline_api::federation::client::FederationClient::new(Some(&ca.ca_file)).unwrap(),
        ));
        let apps = hotline_api::apps(services);
        let client = apps.main;
        let register = json!({"username": "alice", "password": "fuzz password", "auth": {"type": "m.login.dummy"}});
        let a = call(
            &client,
            &Method::POST,
            "/_matrix/client/v3/register",
            &[("content-type", "application/json".into())],
            register.to_string().into_bytes(),
        )
        .await
        .unwrap();
        let token = a.json()["access_token"].as_str().unwrap().to_owned();
        let auth = || {
            vec![
                ("authorization", format!("Bearer {token}")),
                ("content-type", "application/json".to_owned()),
            ]
        };
        let a = call(
            &client,
            &Method::POST,
            "/_matrix/client/v3/createRoom",
            &auth(),
            br#"{"preset":"public_chat","room_alias_name":"fuzz"}"#.to_vec(),
        )
        .await
        .unwrap();
        let room = a.json()["room_id"].as_str().unwrap().to_owned();
        let a = call(
            &client,
            &Method::POST,
            "/_matrix/media/v3/upload?filename=fuzz.png",
            &[
                ("authorization", format!("Bearer {token}")),
                ("content-type", "image/png".to_owned()),
            ],
            common::png(64, 48),
        )
        .await
        .unwrap();
        let media = a.json()["content_uri"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        let mut fx = FedFx {
            app: apps.federation,
            _dir: dir,
            _database: database,
            _ca: ca,
            alice: format!("@alice:{FED_NAME}"),
            bob: peer.user("bob"),
            alias: format!("#fuzz:{FED_NAME}"),
            peer,
            key,
            room,
            event: String::new(),
            pdu: String::new(),
            media,
        };
        // Bob of B joins, as B would: make_join, then a signed send_join.
        let uri = format!(
            "/_matrix/federation/v1/make_join/{}/{}?ver=11",
            enc(&fx.room),
            enc(&fx.bob)
        );
        let made = fx.signed_call(&Method::GET, &uri, &[]).await;
        assert_eq!(made.status, 200, "{}", made.json());
        let mut join = made.json()["event"].clone();
        join["origin_server_ts"] = json!(1_700_000_000_000u64);
        let (join, join_id) = fx.sign_pdu(join);
        let uri = format!(
            "/_matrix/federation/v2/send_join/{}/{}",
            enc(&fx.room),
            enc(&join_id)
        );
        let joined = fx
            .signed_call(&Method::PUT, &uri, join.to_string().as_bytes())
            .await;
        assert_eq!(joined.status, 200, "{}", joined.json());
        fx.event = join_id.clone();
        // A message of bob's after his join: the PDU the bodies start from.
        let state = call(
            &client,
            &Method::GET,
            &format!("/_matrix/client/v3/rooms/{}/state", enc(&fx.room)),
            &auth(),
            Vec::new(),
        )
        .await
        .unwrap()
        .json();
        let id_of = |t: &str| {
            state
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["type"] == t && e["state_key"] == "")
                .unwrap()["event_id"]
                .clone()
        };
        let template = json!({
            "auth_events": [id_of("m.room.create"), id_of("m.room.power_levels"), join_id],
            "content": {"msgtype": "m.text", "body": "fuzz"},
            "depth": join["depth"].as_u64().unwrap() + 1,
            "origin_server_ts": 1_700_000_000_001u64,
            "prev_events": [join_id],
            "room_id": fx.room,
            "sender": fx.bob,
            "type": "m.room.message",
        });
        let (pdu, _) = fx.sign_pdu(template);
        fx.pdu = pdu.to_string();
        fx
    }

    /// Hashes and signs `event` as B; the event and its id.
    fn sign_pdu(&self, event: Value) -> (Value, String) {
        let mut object: ruma::CanonicalJsonObject = serde_json::from_value(event).unwrap();
        let rules = ruma::RoomVersionId::V11.rules().unwrap();
        ruma::signatures::hash_and_sign_event(
            &self.peer.name,
            &self.key,
            &mut object,
            &rules.redaction,
        )
        .unwrap();
        let id = format!(
            "${}",
            ruma::signatures::reference_hash(&object, &rules).unwrap()
        );
        (serde_json::to_value(object).unwrap(), id)
    }

    /// The `X-Matrix` header for a request from `origin` to `destination`
    /// signed with `key`.
    fn x_matrix(
        origin: &str,
        destination: &str,
        key: &ruma::signatures::Ed25519KeyPair,
        method: &Method,
        uri: &str,
        body: &[u8],
    ) -> String {
        let mut object = json!({"method": method.as_str(), "uri": uri, "origin": origin, "destination": destination});
        if let Ok(content) = serde_json::from_slice::<Value>(body) {
            if !body.is_empty() {
                object["content"] = content;
            }
        }
        let mut object: ruma::CanonicalJsonObject = match serde_json::from_value(object) {
            Ok(o) => o,
            // Content that is not canonical JSON (floats, huge numbers):
            // signed without it, which the server refuses as it should.
            Err(_) => serde_json::from_value(json!({"method": method.as_str(), "uri": uri, "origin": origin, "destination": destination})).unwrap(),
        };
        ruma::signatures::sign_json(origin, key, &mut object).unwrap();
        let sig = object["signatures"].as_object().unwrap()[origin]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        format!(
            "X-Matrix origin=\"{origin}\",destination=\"{destination}\",key=\"ed25519:{}\",sig=\"{sig}\"",
            key.version()
        )
    }

    async fn signed_call(&self, method: &Method, uri: &str, body: &[u8]) -> Answer {
        let auth = Self::x_matrix(&self.peer.name, FED_NAME, &self.key, method, uri, body);
        call(
            &self.app,
            method,
            uri,
            &[
                ("authorization", auth),
                ("content-type", "application/json".into()),
            ],
            body.to_vec(),
        )
        .await
        .unwrap()
    }

    fn subst(&self, s: &str, esc: impl Fn(&str) -> String) -> String {
        s.replace("$PDU", &self.pdu)
            .replace("$PEER", &esc(&self.peer.name))
            .replace("$ALICE", &esc(&self.alice))
            .replace("$BOB", &esc(&self.bob))
            .replace("$ROOM", &esc(&self.room))
            .replace("$ALIAS", &esc(&self.alias))
            .replace("$EVENT", &esc(&self.event))
    }

    fn param(&self, name: &str, path: &str, rng: &mut StdRng) -> String {
        match name {
            "room_id" => self.room.clone(),
            "event_id" => self.event.clone(),
            "server_name" => self.peer.name.clone(),
            "transaction_id" => format!("t{}", rng.gen::<u32>()),
            "media_id" => self.media.clone(),
            "code" => "nosuchcode".into(),
            "user_id" if path.contains("/devices/") => self.alice.clone(),
            "user_id" => self.bob.clone(),
            other => panic!("no fuzz value for {{{other}}}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_federation_request_makes_any_endpoint_answer_5xx_or_an_error_without_errcode() {
    let cases = env_u64("HOTLINE_FEDERATION_FUZZ_CASES").unwrap_or(4_000);
    let seed = env_u64("HOTLINE_FUZZ_SEED").unwrap_or(0x0048_6f74_6c69_6e65);
    let fx = FedFx::new().await;
    let limit = hotline_service::Config::default().max_request_bytes;
    // Coverage: every federation route has a shape, every shape a route.
    let mut routes: Vec<(Method, &'static str)> = Vec::new();
    let mut probe_rng = StdRng::seed_from_u64(seed);
    for path in hotline_api::served_federation_paths() {
        let uri: String = path
            .split('/')
            .map(
                |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => enc(&fx.param(name, path, &mut probe_rng)),
                    None => seg.to_owned(),
                },
            )
            .collect::<Vec<_>>()
            .join("/");
        for m in [Method::GET, Method::PUT, Method::POST, Method::DELETE] {
            let a = call(&fx.app, &m, &uri, &[], Vec::new()).await.unwrap();
            if !(a.status == StatusCode::METHOD_NOT_ALLOWED
                && a.json()["errcode"] == "M_UNRECOGNIZED")
            {
                routes.push((m, path));
            }
        }
    }
    let served: BTreeSet<(String, String)> = routes
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let specs: BTreeSet<(String, String)> = FED_SPECS
        .iter()
        .map(|(m, p, _, _)| (m.to_string(), p.to_string()))
        .collect();
    let uncovered: Vec<_> = served.difference(&specs).collect();
    assert!(
        uncovered.is_empty(),
        "federation routes without a fuzz shape in FED_SPECS: {uncovered:?}"
    );
    let stale: Vec<_> = specs.difference(&served).collect();
    assert!(stale.is_empty(), "FED_SPECS entries not served: {stale:?}");

    let stranger = ruma::signatures::Ed25519KeyPair::from_der(
        &ruma::signatures::Ed25519KeyPair::generate(),
        fx.key.version().to_owned(),
    )
    .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut failures: Vec<String> = Vec::new();
    let mut statuses: std::collections::BTreeMap<u16, u64> = Default::default();
    let mut mutations: std::collections::HashMap<usize, u64> = Default::default();
    for case in 0..cases {
        let (method, path) = routes[(case as usize) % routes.len()].clone();
        let (_, _, query, shape) = FED_SPECS
            .iter()
            .find(|(m, p, _, _)| *m == method.as_str() && *p == path)
            .unwrap();
        let mut uri = String::new();
        for (i, seg) in path.split('/').enumerate() {
            if i > 0 {
                uri.push('/');
            }
            match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if rng.gen_bool(0.9) => {
                    uri.push_str(&enc(&fx.param(name, path, &mut rng)))
                }
                Some(_) => uri.push_str(&bad_param(&mut rng)),
                None => uri.push_str(seg),
            }
        }
        let mut q = fx.subst(query, enc);
        if rng.gen_bool(0.15) {
            if !q.is_empty() {
                q.push('&');
            }
            q.push_str(bad_query(&mut rng));
        }
        if !q.is_empty() {
            uri.push('?');
            uri.push_str(&q);
        }
        let valid = fx.subst(shape, json_escape);
        let nth = mutations.entry(case as usize % routes.len()).or_default();
        let (body, ct) = gen_body(&mut rng, &valid, false, limit, nth);
        // Mostly signed as B; sometimes unsigned, by a stranger's key under
        // B's key id, for another destination, or from a server A does not
        // federate with.
        let auth = match rng.gen_range(0..20) {
            0 => None,
            1 => Some(FedFx::x_matrix(
                &fx.peer.name,
                FED_NAME,
                &stranger,
                &method,
                &uri,
                &body,
            )),
            2 => Some(FedFx::x_matrix(
                &fx.peer.name,
                "elsewhere.test",
                &fx.key,
                &method,
                &uri,
                &body,
            )),
            3 => Some(FedFx::x_matrix(
                "stranger.test",
                FED_NAME,
                &fx.key,
                &method,
                &uri,
                &body,
            )),
            4 => Some("X-Matrix garbage".to_owned()),
            _ => Some(FedFx::x_matrix(
                &fx.peer.name,
                FED_NAME,
                &fx.key,
                &method,
                &uri,
                &body,
            )),
        };
        let mut headers: Vec<(&str, String)> = Vec::new();
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        if !ct.is_empty() {
            headers.push(("content-type", ct.clone()));
        }
        let answer = match call(&fx.app, &method, &uri, &headers, body.clone()).await {
            Ok(a) => a,
            Err(e) if e.starts_with("unbuildable") => continue,
            Err(e) => Answer {
                status: StatusCode::from_u16(599).unwrap(),
                body: e.into_bytes(),
            },
        };
        *statuses.entry(answer.status.as_u16()).or_default() += 1;
        if let Err(why) = check(&answer) {
            if failures.len() < 20 {
                let shown = String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned();
                failures.push(format!(
                    "case {case}: {why}\n    {method} {}\n    body: {shown}\n    answer: {}",
                    &uri[..uri.len().min(300)],
                    String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
                ));
            }
        }
    }
    eprintln!(
        "federation fuzz: {cases} cases over {} routes; statuses {statuses:?}",
        routes.len()
    );
    // The fuzz reached the handlers, not only the signature check.
    assert!(
        statuses.get(&200).copied().unwrap_or(0) > cases / 20,
        "{statuses:?}"
    );
    assert!(failures.is_empty(), "seed {seed}:\n{}", failures.join("\n"));
    // And the server still serves.
    let a = fx
        .signed_call(&Method::GET, "/_matrix/federation/v1/version", &[])
        .await;
    assert_eq!(a.status, 200);
}
