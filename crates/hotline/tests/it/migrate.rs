//! `hotline admin migrate`: a SQLite deployment with data of every kind,
//! copied to PostgreSQL, answers every read as before, with the same access
//! tokens; the stream continues where it stood; a target holding data is
//! refused and left as it was.

use crate::common;

use common::{postgres_database, vouched, Http, Server};
use serde_json::{json, Value};

const V3: &str = "/_matrix/client/v3";

/// What the deployment holds, to read it back.
struct Deployment {
    alice: String,
    bob: String,
    macron: String,
    scholz: String,
    room: String,
    line: String,
    redacted: String,
    invite: String,
    media: String,
    filter: String,
    backup: String,
}

async fn ok(http: &Http, method: &str, path: &str, token: &str, body: Value) -> Value {
    let (s, v) = http
        .call(method, path, Some(token), Some(&body.to_string()))
        .await;
    assert_eq!(s, 200, "{method} {path}: {v}");
    v
}

/// Builds the deployment through the server's API (and `hotline admin`).
async fn populate(server: &Server, http: &Http) -> Deployment {
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let picture: Vec<u8> = (0..5000u32).map(|n| (n % 251) as u8).collect();
    let resp = http
        .client
        .post(format!(
            "{}/_matrix/media/v3/upload?filename=me.png",
            server.url
        ))
        .bearer_auth(&alice)
        .header("content-type", "image/png")
        .body(picture)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mxc = resp.json::<Value>().await.unwrap()["content_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let media = mxc.strip_prefix("mxc://").unwrap().to_owned();
    ok(
        http,
        "PUT",
        &format!("{V3}/profile/@alice:localhost/displayname"),
        &alice,
        json!({"displayname": "Alice A."}),
    )
    .await;
    ok(
        http,
        "PUT",
        &format!("{V3}/profile/@alice:localhost/avatar_url"),
        &alice,
        json!({"avatar_url": mxc}),
    )
    .await;

    // A published room with an alias, messages, state, a redaction.
    let room = ok(http, "POST", &format!("{V3}/createRoom"), &alice, json!({"name": "Moving day", "room_alias_name": "moving", "visibility": "public", "preset": "public_chat"})).await["room_id"].as_str().unwrap().to_owned();
    ok(
        http,
        "POST",
        &format!("{V3}/join/%23moving:localhost"),
        &bob,
        json!({}),
    )
    .await;
    let mut sent = Vec::new();
    for (i, (who, body)) in [(&alice, "one"), (&bob, "two"), (&alice, "three")]
        .iter()
        .enumerate()
    {
        let v = ok(
            http,
            "PUT",
            &format!("{V3}/rooms/{room}/send/m.room.message/t{i}"),
            who,
            json!({"msgtype": "m.text", "body": body}),
        )
        .await;
        sent.push(v["event_id"].as_str().unwrap().to_owned());
    }
    ok(
        http,
        "PUT",
        &format!("{V3}/rooms/{room}/state/m.room.topic/"),
        &alice,
        json!({"topic": "packing"}),
    )
    .await;
    ok(
        http,
        "PUT",
        &format!("{V3}/rooms/{room}/redact/{}/r1", sent[1]),
        &alice,
        json!({"reason": "oops"}),
    )
    .await;
    ok(
        http,
        "POST",
        &format!("{V3}/rooms/{room}/receipt/m.read/{}", sent[2]),
        &bob,
        json!({}),
    )
    .await;

    // Account data: global, per room, tags, a push rule, a filter.
    ok(
        http,
        "PUT",
        &format!("{V3}/user/@alice:localhost/account_data/org.example.g"),
        &alice,
        json!({"g": 1}),
    )
    .await;
    ok(
        http,
        "PUT",
        &format!("{V3}/user/@alice:localhost/rooms/{room}/account_data/org.example.r"),
        &alice,
        json!({"r": 2}),
    )
    .await;
    ok(
        http,
        "PUT",
        &format!("{V3}/user/@alice:localhost/rooms/{room}/tags/u.work"),
        &alice,
        json!({"order": 0.5}),
    )
    .await;
    ok(
        http,
        "PUT",
        &format!("{V3}/pushrules/global/content/cake"),
        &alice,
        json!({"pattern": "cake", "actions": ["notify"]}),
    )
    .await;
    let filter = ok(
        http,
        "POST",
        &format!("{V3}/user/@alice:localhost/filter"),
        &alice,
        json!({"room": {"timeline": {"limit": 7}}}),
    )
    .await["filter_id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(
        http,
        "PUT",
        &format!("{V3}/presence/@alice:localhost/status"),
        &alice,
        json!({"presence": "online", "status_msg": "moving"}),
    )
    .await;

    // Keys over raw HTTP: one-time and fallback keys are stored as given.
    let key = |k: &str| json!({"key": k, "signatures": {"@bob:localhost": {"ed25519:X": "sig"}}});
    ok(http, "POST", &format!("{V3}/keys/upload"), &bob, json!({
        "one_time_keys": {"signed_curve25519:AAAAAQ": key("one"), "signed_curve25519:AAAAAg": key("two")},
        "fallback_keys": {"signed_curve25519:AAAAAw": {"key": "fallback", "fallback": true, "signatures": {}}}
    })).await;
    // A to-device message waiting for bob's device.
    ok(
        http,
        "PUT",
        &format!("{V3}/sendToDevice/org.example.ping/td1"),
        &alice,
        json!({"messages": {"@bob:localhost": {"*": {"n": 1}}}}),
    )
    .await;
    // A key backup with a session in it.
    let backup = ok(http, "POST", &format!("{V3}/room_keys/version"), &alice, json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "abc"}})).await["version"].as_str().unwrap().to_owned();
    ok(http, "PUT", &format!("{V3}/room_keys/keys/{room}/S1?version={backup}"), &alice, json!({"first_message_index": 3, "forwarded_count": 0, "is_verified": true, "session_data": {"ciphertext": "c1"}})).await;

    // Officials: enrolled, one vouched for with real cross-signing keys
    // (device keys, one-time keys, signatures: matrix-sdk's own), a line
    // between them and an open invite; every step audited.
    let macron = http
        .enrolled(server, "macron", "Emmanuel Macron", "principal", None)
        .await;
    let scholz = http
        .enrolled(server, "scholz", "Olaf Scholz", "principal", None)
        .await;
    let client = vouched(server, http, &macron, "macron").await;
    drop(client);
    let line = http.open_line(&macron, &scholz).await;
    ok(
        http,
        "PUT",
        &format!("{V3}/rooms/{line}/send/m.room.message/l1"),
        &macron,
        json!({"msgtype": "m.text", "body": "on the line"}),
    )
    .await;
    let invite = http
        .create_line_invite(&macron, json!({"uses_allowed": 3}))
        .await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    server.admin(&["registration-token", "--uses", "2"]);
    Deployment {
        alice,
        bob,
        macron,
        scholz,
        room,
        line,
        redacted: sent[1].clone(),
        invite,
        media,
        filter,
        backup,
    }
}

/// Drops what legitimately differs between two reads of the same data
/// seconds apart, by another process:
/// - `age` and `last_active_ago` count from now, and `last_seen_ts` is when
///   the device last made a request (this read's own);
/// - `next_batch`: the reads themselves move the stream (a `/sync` marks its
///   user present); that the stream continues is checked after the reads;
/// - the server's address (links in line invites): each start takes a free
///   port;
/// - the order of a room's state and members, which are sets (sorted by
///   type and key).
fn normalise(v: &mut Value, base: &str) {
    match v {
        Value::Object(m) => {
            for k in ["age", "last_active_ago", "last_seen_ts", "next_batch"] {
                m.remove(k);
            }
            if let Some(Value::Object(state)) = m.get_mut("state") {
                if let Some(Value::Array(events)) = state.get_mut("events") {
                    sort_state(events);
                }
            }
            m.values_mut().for_each(|v| normalise(v, base));
        }
        Value::Array(a) => a.iter_mut().for_each(|v| normalise(v, base)),
        Value::String(s) if s.contains(base) => *s = s.replace(base, "BASE"),
        _ => {}
    }
}

fn sort_state(events: &mut [Value]) {
    events.sort_by_key(|e| (e["type"].to_string(), e["state_key"].to_string()));
}

/// The answers of the deployment's reads, labelled.
async fn answers(server: &Server, d: &Deployment) -> Vec<(String, Value)> {
    let http = Http::new(&server.url);
    let users = [
        "@alice:localhost",
        "@bob:localhost",
        "@macron:localhost",
        "@scholz:localhost",
    ];
    let mut reads: Vec<(&str, String, &str, Option<Value>)> = Vec::new();
    for token in [&d.alice, &d.bob, &d.macron, &d.scholz] {
        // No `since`: reading does not acknowledge to-device messages.
        reads.push((
            "GET",
            format!("{V3}/sync?timeout=0&full_state=true"),
            token,
            None,
        ));
        reads.push(("GET", format!("{V3}/account/whoami"), token, None));
        reads.push(("GET", format!("{V3}/devices"), token, None));
        reads.push(("GET", format!("{V3}/joined_rooms"), token, None));
        reads.push(("GET", "/_hotline/v1/directory".into(), token, None));
    }
    let a = d.alice.as_str();
    let room = &d.room;
    for r in [
        format!("{V3}/rooms/{room}/messages?dir=b&limit=100"),
        format!("{V3}/rooms/{room}/messages?dir=f&limit=100"),
        format!("{V3}/rooms/{room}/state"),
        format!("{V3}/rooms/{room}/members"),
        format!("{V3}/rooms/{room}/event/{}", d.redacted),
        format!("{V3}/directory/room/%23moving:localhost"),
        format!("{V3}/directory/list/room/{room}"),
        format!("{V3}/publicRooms"),
        format!("{V3}/profile/@alice:localhost"),
        format!("{V3}/profile/@macron:localhost"),
        format!("{V3}/user/@alice:localhost/account_data/org.example.g"),
        format!("{V3}/user/@alice:localhost/rooms/{room}/account_data/org.example.r"),
        format!("{V3}/user/@alice:localhost/rooms/{room}/tags"),
        format!("{V3}/user/@alice:localhost/filter/{}", d.filter),
        format!("{V3}/pushrules/"),
        format!("{V3}/presence/@alice:localhost/status"),
        format!("{V3}/room_keys/version"),
        format!("{V3}/room_keys/version/{}", d.backup),
        format!("{V3}/room_keys/keys?version={}", d.backup),
        format!("/_hotline/v1/line_invites/{}", d.invite),
        "/_matrix/key/v2/server".into(),
    ] {
        reads.push(("GET", r, a, None));
    }
    reads.push((
        "GET",
        format!("{V3}/rooms/{}/messages?dir=b&limit=100", d.line),
        &d.macron,
        None,
    ));
    reads.push((
        "GET",
        format!("{V3}/rooms/{}/state", d.line),
        &d.scholz,
        None,
    ));
    reads.push(("GET", "/_hotline/v1/line_invites".into(), &d.macron, None));
    reads.push(("POST", format!("{V3}/keys/query"), a, Some(json!({"device_keys": users.iter().map(|u| (u.to_string(), json!([]))).collect::<serde_json::Map<_, _>>()}))));
    let mut out = Vec::new();
    for (method, path, token, body) in reads {
        let (s, mut v) = http
            .call(
                method,
                &path,
                Some(token),
                body.map(|b| b.to_string()).as_deref(),
            )
            .await;
        assert_eq!(s, 200, "{method} {path}: {v}");
        if path.ends_with("/state") {
            sort_state(v.as_array_mut().unwrap());
        }
        if path.ends_with("/members") {
            sort_state(v["chunk"].as_array_mut().unwrap());
        }
        if path == "/_matrix/key/v2/server" {
            // Valid for a while from now, and signed as such at each request.
            v.as_object_mut().unwrap().remove("valid_until_ts");
            v.as_object_mut().unwrap().remove("signatures");
        }
        normalise(&mut v, &server.url);
        out.push((
            format!("{method} {path} as {}", &token[..8.min(token.len())]),
            v,
        ));
    }
    let resp = http
        .client
        .get(format!(
            "{}/_matrix/client/v1/media/download/{}",
            server.url, d.media
        ))
        .bearer_auth(&d.alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let bytes = resp.bytes().await.unwrap().to_vec();
    out.push((
        "media".into(),
        json!({"type": content_type, "bytes": bytes}),
    ));
    out.push((
        "admin audit".into(),
        Value::String(server.admin(&["audit"])),
    ));
    out
}

/// Where two answers differ: `path: before != after`, one a line.
fn differences(path: &str, b: &Value, a: &Value, out: &mut Vec<String>) {
    match (b, a) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let null = Value::Null;
                let (xv, yv) = (x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null));
                differences(&format!("{path}.{k}"), xv, yv, out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (xv, yv)) in x.iter().zip(y).enumerate() {
                differences(&format!("{path}[{i}]"), xv, yv, out);
            }
        }
        _ if a != b => out.push(format!("{path}: {b} != {a}")),
        _ => {}
    }
}

fn assert_same(before: &[(String, Value)], after: &[(String, Value)]) {
    assert_eq!(before.len(), after.len());
    let mut diffs = Vec::new();
    for ((label, b), (_, a)) in before.iter().zip(after) {
        differences(label, b, a, &mut diffs);
    }
    assert!(
        diffs.is_empty(),
        "answers differ after the migration:\n{}",
        diffs.join("\n")
    );
}

/// `hotline admin migrate ARGS` as the operator runs it: status and output.
fn migrate(server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = server
        .command()
        .args(["admin", "migrate"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_deployment_answers_every_read_as_before_and_continues_its_stream() {
    let mut server = Server::start_sqlite(&["--allow-registration"]).await;
    let http = Http::new(&server.url);
    let d = populate(&server, &http).await;
    // Read from a server started afresh on the stopped deployment, as the
    // migrated one will be: both answer from the database alone.
    // The reads are made twice: the first pass's own writes (each `/sync`
    // marks its user present) are then in the data both servers answer from.
    server.stop();
    server.spawn().await;
    answers(&server, &d).await;
    let before = answers(&server, &d).await;
    let next_batch = sync_token(&server, &d.alice).await;
    server.stop();

    let target = postgres_database();
    let url = target.url.clone();
    let (ok_, out, err) = migrate(&server, &["--to", &url]);
    assert!(ok_, "migrate failed: {err}");
    for table in [
        "events",
        "users",
        "access_tokens",
        "audit_log",
        "key_signatures",
        "line_invites",
        "backup_keys",
        "to_device",
        "fallback_keys",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{table}\t")))
            .unwrap_or_else(|| panic!("{table} missing from the report: {out}"));
        let n: u64 = line.split('\t').nth(1).unwrap().parse().unwrap();
        assert!(n > 0, "{table}: {out}");
    }
    // Migrating again into the same database is refused and changes nothing.
    let events = target.query("SELECT COUNT(*) FROM events");
    let (ok_, _, err) = migrate(
        &server,
        &[
            "--from",
            &format!("sqlite:{}", server.data.join("hotline.db").display()),
            "--to",
            &url,
        ],
    );
    assert!(!ok_);
    assert!(err.contains("not empty") && err.contains("table"), "{err}");
    assert_eq!(target.query("SELECT COUNT(*) FROM events"), events);

    server.restart_on(target).await;
    let after = answers(&server, &d).await;
    assert_same(&before, &after);

    // The stream continues where it stood: a new message is the one thing
    // after the old sync token, and the audit log numbers on.
    ok(
        &http_of(&server),
        "PUT",
        &format!("{V3}/rooms/{}/send/m.room.message/after", d.room),
        &d.alice,
        json!({"msgtype": "m.text", "body": "after"}),
    )
    .await;
    let (s, v) = http_of(&server)
        .call(
            "GET",
            &format!("{V3}/sync?timeout=0&since={next_batch}"),
            Some(&d.alice),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let timeline = v["rooms"]["join"][&d.room]["timeline"]["events"]
        .as_array()
        .unwrap();
    let bodies: Vec<&str> = timeline
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["after"], "{v}");
    let audit_before = server.admin(&["audit"]);
    server.admin(&["revoke", "macron"]);
    let audit = server.admin(&["audit"]);
    let last_seq = |text: &str| -> i64 {
        text.lines()
            .last()
            .unwrap()
            .split('\t')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(last_seq(&audit), last_seq(&audit_before) + 1, "{audit}");
}

async fn sync_token(server: &Server, token: &str) -> String {
    let (s, v) = http_of(server)
        .call("GET", &format!("{V3}/sync?timeout=0"), Some(token), None)
        .await;
    assert_eq!(s, 200, "{v}");
    v["next_batch"].as_str().unwrap().to_owned()
}

fn http_of(server: &Server) -> Http {
    Http::new(&server.url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_into_a_database_holding_data_is_refused_and_changes_nothing() {
    let server = Server::start_sqlite(&["--allow-registration"]).await;
    let http = Http::new(&server.url);
    http.register("alice").await;
    // A PostgreSQL deployment already in use.
    let mut other = Server::start_sqlite(&["--allow-registration"]).await;
    other.restart_on(postgres_database()).await;
    Http::new(&other.url).register("zed").await;
    let db = other.database.as_ref().unwrap();
    let users = db.query("SELECT string_agg(user_id, ',' ORDER BY user_id) FROM users");
    let position = db.query("SELECT pos FROM stream_position");
    assert_eq!(users, "@zed:localhost");
    let (ok_, _, err) = migrate(&server, &["--to", &db.url]);
    assert!(!ok_, "refused");
    assert!(err.contains("not empty: table "), "names the table: {err}");
    assert_eq!(
        db.query("SELECT string_agg(user_id, ',' ORDER BY user_id) FROM users"),
        users
    );
    assert_eq!(db.query("SELECT pos FROM stream_position"), position);
}

#[tokio::test]
async fn bad_arguments_get_clear_errors() {
    let server = Server::start_sqlite(&[]).await;
    let (ok_, _, err) = migrate(&server, &["--to", "mysql://x@y/z"]);
    assert!(!ok_ && err.contains("--to must be postgres://"), "{err}");
    let (ok_, _, err) = migrate(
        &server,
        &[
            "--from",
            "/no/prefix.db",
            "--to",
            "postgres://x@127.0.0.1:1/z",
        ],
    );
    assert!(!ok_ && err.contains("--from must be sqlite:PATH"), "{err}");
    let (ok_, _, err) = migrate(
        &server,
        &[
            "--from",
            "sqlite:/nonexistent/hotline.db",
            "--to",
            "postgres://x@127.0.0.1:1/z",
        ],
    );
    assert!(
        !ok_ && err.contains("no SQLite database at /nonexistent/hotline.db"),
        "{err}"
    );
    // Nothing listens on port 1.
    let (ok_, _, err) = migrate(&server, &["--to", "postgres://x@127.0.0.1:1/z"]);
    assert!(!ok_ && err.contains("connecting to PostgreSQL"), "{err}");
}
