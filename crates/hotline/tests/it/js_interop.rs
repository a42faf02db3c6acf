//! Two independent end-to-end encryption stacks talk through Hotline: the
//! Rust `matrix-sdk` (vodozemac) on one side, `matrix-js-sdk` with its Rust
//! crypto compiled to WebAssembly (`matrix-sdk-crypto-wasm`, in node) on the
//! other, driven by `tests/interop/e2ee_peer.mjs`.
//!
//! Each test opens an encrypted DM from one side, and each side decrypts the
//! other's message. The server only relays device keys, one-time keys,
//! to-device room keys and Megolm ciphertext; afterwards its data directory
//! holds none of the plaintexts.
//!
//! Needs `node` (20+) on PATH; installs the npm dependencies of
//! `tests/interop` (`npm ci`) when they are missing.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::{AlgorithmInfo, EncryptionInfo};

use matrix_sdk::ruma::events::room::message::{
    OriginalSyncRoomMessageEvent, RoomMessageEventContent,
};
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use matrix_sdk::{Client, Room, RoomState};
use serde_json::Value;

const PASSWORD: &str = "correct horse battery";
/// The whole conversation (both clients in the room, two messages, the JS
/// peer's result) must finish within this, so a hang fails instead of
/// blocking the suite.
const CONVERSATION_LIMIT: Duration = Duration::from_secs(90);
/// The JS peer gives up earlier, so its own account of where it was stuck
/// reaches the failure message.
const PEER_TIMEOUT_SECS: u64 = 75;
/// A Rust-side wait (invite seen, member joined, message decrypted).
const WAIT: Duration = Duration::from_secs(60);

// ----- the JS side -----

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop")
}

/// `node` (20+) is on PATH and `tests/interop/node_modules` holds the
/// packages of `package.json` (installed with `npm ci` when any is missing).
/// Fails the test with the reason otherwise: a skipped interop test would
/// hide a broken server.
fn node_with_deps() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let out = Command::new("node")
            .arg("--version")
            .output()
            .map_err(|e| {
                format!(
                    "`node` is not on PATH ({e}): this test runs matrix-js-sdk in node; \
                 install Node.js 20 or later (CI installs it via scripts/)"
                )
            })?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let major: u32 = version
            .trim_start_matches('v')
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if !out.status.success() || major < 20 {
            return Err(format!(
                "`node --version` gave {version:?}; tests/interop needs Node.js 20 or later"
            ));
        }
        let dir = interop_dir();
        let package: Value = serde_json::from_slice(
            &std::fs::read(dir.join("package.json")).map_err(|e| format!("{e}"))?,
        )
        .map_err(|e| format!("tests/interop/package.json: {e}"))?;
        let mut needed: Vec<String> = package["dependencies"]
            .as_object()
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default();
        // The crypto, a dependency of matrix-js-sdk.
        needed.push("@matrix-org/matrix-sdk-crypto-wasm".into());
        let missing = |needed: &[String]| -> Vec<String> {
            needed
                .iter()
                .filter(|p| {
                    !dir.join("node_modules")
                        .join(p)
                        .join("package.json")
                        .is_file()
                })
                .cloned()
                .collect()
        };
        if !missing(&needed).is_empty() {
            eprintln!("js_interop: installing the npm dependencies of tests/interop (npm ci)");
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .status()
                .map_err(|e| {
                    format!("`npm` could not be run ({e}); install Node.js 20 with npm")
                })?;
            if !status.success() {
                return Err(format!("`npm ci` in {} failed ({status})", dir.display()));
            }
            let still = missing(&needed);
            if !still.is_empty() {
                return Err(format!("after `npm ci`, still missing: {still:?}"));
            }
        }
        Ok(())
    });
    if let Err(e) = ready {
        panic!("js_interop: {e}");
    }
}

/// A running `e2ee_peer.mjs`: its stdout JSON lines arrive on a channel; the
/// process is killed when this is dropped.
struct JsPeer {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    transcript: Vec<String>,
}

impl JsPeer {
    fn spawn(args: &[&str]) -> JsPeer {
        node_with_deps();
        let dir = interop_dir();
        let mut child = Command::new("node")
            .arg(dir.join("e2ee_peer.mjs"))
            .args(args)
            .args(["--timeout", &PEER_TIMEOUT_SECS.to_string()])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs e2ee_peer.mjs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        JsPeer {
            child,
            lines,
            transcript: Vec::new(),
        }
    }

    /// The next line whose `event` is `name`. A failed `result` or the end
    /// of the output before it fails the test with what the peer said.
    async fn event(&mut self, name: &str) -> Value {
        loop {
            let Some(line) = self.lines.recv().await else {
                let status = self.child.wait().ok();
                panic!(
                    "the JS peer exited ({status:?}) before {name:?}; it printed: {:#?}",
                    self.transcript
                );
            };
            self.transcript.push(line.clone());
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("the JS peer printed a non-JSON line ({e}): {line}"));
            if v["event"] == "result" && v["ok"] != true && name != "result" {
                panic!("the JS peer failed while we waited for {name:?}: {v}");
            }
            if v["event"] == name {
                return v;
            }
        }
    }

    /// Waits for the process to exit; its exit code.
    async fn exit_code(&mut self) -> Option<i32> {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for JsPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- the Rust side -----

/// A message the Rust client decrypted, with how it was encrypted.
#[derive(Clone, Debug)]
struct Received {
    event_id: OwnedEventId,
    sender: OwnedUserId,
    body: String,
    encryption: Option<EncryptionInfo>,
}

/// A `matrix-sdk` device (in-memory stores) with a background sync loop.
struct RustDevice {
    client: Client,
    received: Arc<Mutex<Vec<Received>>>,
    sync: tokio::task::JoinHandle<()>,
}

impl Drop for RustDevice {
    fn drop(&mut self) {
        self.sync.abort();
    }
}

async fn register_rust(url: &str, name: &str) {
    common::sdk_register(url, name, PASSWORD).await;
}

async fn login_rust(url: &str, name: &str, device: &str) -> RustDevice {
    let client = Client::builder().homeserver_url(url).build().await.unwrap();
    client
        .matrix_auth()
        .login_username(name, PASSWORD)
        .device_id(device)
        .initial_device_display_name("matrix-sdk (Rust)")
        .send()
        .await
        .unwrap();
    client
        .encryption()
        .wait_for_e2ee_initialization_tasks()
        .await;
    let received = Arc::new(Mutex::new(Vec::new()));
    let r = received.clone();
    client.add_event_handler(
        move |ev: OriginalSyncRoomMessageEvent, encryption: Option<EncryptionInfo>| {
            let r = r.clone();
            async move {
                r.lock().unwrap().push(Received {
                    event_id: ev.event_id.clone(),
                    sender: ev.sender.clone(),
                    body: ev.content.body().to_owned(),
                    encryption,
                });
            }
        },
    );
    let c = client.clone();
    let sync = tokio::spawn(async move {
        let _ = c
            .sync(SyncSettings::default().timeout(Duration::from_secs(2)))
            .await;
    });
    RustDevice {
        client,
        received,
        sync,
    }
}

async fn eventually<F, Fut, T>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The event as the server stores and serves it, without decryption.
async fn raw_event(server: &common::Server, token: &str, room: &RoomId, event: &str) -> String {
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v3/rooms/{room}/event/{event}",
            server.url
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "GET event {event}: {text}");
    text
}

/// The event is Megolm ciphertext on the wire and its text is not there.
async fn assert_ciphertext_on_the_wire(
    server: &common::Server,
    rust: &RustDevice,
    room: &RoomId,
    event: &str,
    plaintext: &str,
) {
    let token = rust.client.access_token().unwrap();
    let text = raw_event(server, &token, room, event).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["type"], "m.room.encrypted",
        "event {event} on the wire: {v}"
    );
    assert_eq!(
        v["content"]["algorithm"], "m.megolm.v1.aes-sha2",
        "event {event} on the wire: {v}"
    );
    assert!(
        v["content"]["ciphertext"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "event {event} carries Megolm ciphertext: {v}"
    );
    assert!(
        !text.contains(plaintext),
        "the plaintext {plaintext:?} is visible in event {event} as served: {text}"
    );
}

struct Texts {
    from_rust: &'static str,
    from_js: &'static str,
}

/// Both clients are in the encrypted room `room` and the JS peer has printed
/// `ready`: Rust sends, the JS peer decrypts it; the JS peer sends, Rust
/// decrypts it and attributes it to the JS device.
async fn both_directions_decrypt(
    server: &common::Server,
    rust: &RustDevice,
    room: &Room,
    js: &mut JsPeer,
    js_user: &UserId,
    js_device: &str,
    texts: &Texts,
) {
    let room_id = room.room_id().to_owned();
    let rust_user = rust.client.user_id().unwrap().to_owned();
    let rust_device = rust.client.device_id().unwrap().to_owned();

    // Rust → JS. The JS device's keys are on the server (it said ready);
    // matrix-sdk queries them and shares the room key with it over Olm.
    let sent = room
        .send(RoomMessageEventContent::text_plain(texts.from_rust))
        .await
        .unwrap();
    let rust_event = sent.response.event_id.to_string();
    assert_ciphertext_on_the_wire(server, rust, &room_id, &rust_event, texts.from_rust).await;

    // JS → Rust.
    let js_sent = js.event("sent").await;
    assert_eq!(js_sent["room_id"], room_id.as_str(), "{js_sent}");
    let js_event = js_sent["event_id"].as_str().unwrap().to_owned();
    assert_ciphertext_on_the_wire(server, rust, &room_id, &js_event, texts.from_js).await;
    let got = eventually(
        &format!("matrix-sdk decrypts {:?} from the JS peer", texts.from_js),
        || async {
            rust.received
                .lock()
                .unwrap()
                .iter()
                .find(|r| r.body == texts.from_js)
                .cloned()
        },
    )
    .await;
    assert_eq!(
        got.event_id.as_str(),
        js_event,
        "the decrypted event is the one JS sent"
    );
    assert_eq!(got.sender, js_user);
    let info = got
        .encryption
        .as_ref()
        .expect("the JS message arrived encrypted (it has encryption info)");
    assert_eq!(
        info.sender_device.as_deref().map(|d| d.as_str()),
        Some(js_device),
        "matrix-sdk attributes the message to the JS device: {info:?}"
    );
    let AlgorithmInfo::MegolmV1AesSha2 { curve25519_key, .. } = &info.algorithm_info else {
        panic!("the JS message was not Megolm: {info:?}");
    };
    let device = rust
        .client
        .encryption()
        .get_device(js_user, js_device.into())
        .await
        .unwrap()
        .expect("matrix-sdk knows the JS device");
    assert_eq!(
        device.curve25519_key().map(|k| k.to_base64()).as_deref(),
        Some(curve25519_key.as_str()),
        "the Megolm session came from the JS device's Curve25519 key"
    );

    // The JS side decrypted the Rust message.
    let result = js.event("result").await;
    eprintln!("js_interop: the JS peer's result: {result}");
    assert_eq!(result["ok"], true, "the JS peer failed: {result}");
    assert_eq!(result["room_id"], room_id.as_str(), "{result}");
    assert_eq!(result["device_id"], js_device, "{result}");
    assert_eq!(result["received_text"], texts.from_rust, "{result}");
    assert_eq!(result["received_event_id"], rust_event.as_str(), "{result}");
    assert_eq!(result["received_wire_type"], "m.room.encrypted", "{result}");
    assert_eq!(result["sender"], rust_user.as_str(), "{result}");
    // The (deprecated) `device_id` of the Megolm content, as matrix-sdk
    // 0.18 still sends it.
    assert_eq!(result["sender_device"], rust_device.as_str(), "{result}");
    // Every response the JS peer got matched the spec's schemas.
    let violations = result["schema_violations"]
        .as_array()
        .expect("--validate lists schema_violations");
    assert!(violations.is_empty(), "schema violations: {violations:#?}");
    let operations = result["operations_validated"].as_array().unwrap();
    // The E2EE endpoints were among them (spec operation ids).
    for op in ["uploadKeys", "queryKeys", "sendToDevice", "sync"] {
        assert!(
            operations.iter().any(|o| o == op),
            "the JS peer validated no {op} response: {operations:?}"
        );
    }
    assert_eq!(js.exit_code().await, Some(0), "the JS peer's exit code");
}

fn assert_no_plaintext(server: &common::Server, texts: &Texts) {
    let found = common::scan_for_plaintext(&server.data, &[texts.from_rust, texts.from_js]);
    assert!(
        found.is_empty(),
        "plaintext found in the data directory: {found:?}"
    );
}

async fn within_limit<F: std::future::Future<Output = ()>>(f: F) {
    if tokio::time::timeout(CONVERSATION_LIMIT, f).await.is_err() {
        panic!(
            "the conversation did not finish within {} s",
            CONVERSATION_LIMIT.as_secs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn js_sdk_and_matrix_sdk_decrypt_each_other_in_a_dm_the_rust_side_opened() {
    node_with_deps();
    let server = common::Server::start().await;
    let texts = Texts {
        from_rust: "rust to js: the ferry leaves at nine",
        from_js: "js to rust: two tickets, aisle seats",
    };
    within_limit(async {
        register_rust(&server.url, "rust").await;
        // The JS user exists before Rust invites it.
        common::Http::new(&server.url).register("js").await;
        let rust = login_rust(&server.url, "rust", "RUSTDEVICE").await;
        let js_user = UserId::parse("@js:localhost").unwrap();

        let mut js = JsPeer::spawn(&[
            "--homeserver",
            &server.url,
            "--user",
            js_user.as_str(),
            "--password",
            "correct horse",
            "--peer",
            "@rust:localhost",
            "--send",
            texts.from_js,
            "--expect",
            texts.from_rust,
            "--validate",
        ]);

        let room = rust.client.create_dm(&js_user).await.unwrap();
        let room_id: OwnedRoomId = room.room_id().to_owned();
        let encryption = raw_event_state(&server, &rust, &room_id, "m.room.encryption").await;
        assert_eq!(
            encryption["algorithm"], "m.megolm.v1.aes-sha2",
            "the DM is Megolm-encrypted: {encryption}"
        );

        let ready = js.event("ready").await;
        assert_eq!(
            ready["room_id"],
            room_id.as_str(),
            "the JS peer joined our DM: {ready}"
        );
        assert_eq!(ready["user_id"], js_user.as_str(), "{ready}");
        let js_device = ready["device_id"].as_str().unwrap().to_owned();

        eventually("matrix-sdk sees the JS user joined", || async {
            (room.joined_members_count() == 2).then_some(())
        })
        .await;
        both_directions_decrypt(&server, &rust, &room, &mut js, &js_user, &js_device, &texts).await;
    })
    .await;
    assert_no_plaintext(&server, &texts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn js_sdk_and_matrix_sdk_decrypt_each_other_in_a_dm_the_js_side_opened() {
    node_with_deps();
    let server = common::Server::start().await;
    let texts = Texts {
        from_rust: "rust to js: the archive opens at noon",
        from_js: "js to rust: bring the blue folder",
    };
    within_limit(async {
        register_rust(&server.url, "rust").await;
        let rust = login_rust(&server.url, "rust", "RUSTDEVICE").await;
        let js_user = UserId::parse("@js:localhost").unwrap();

        // The JS peer registers itself, creates the encrypted DM and invites us.
        let mut js = JsPeer::spawn(&[
            "--homeserver",
            &server.url,
            "--user",
            js_user.as_str(),
            "--password",
            PASSWORD,
            "--register",
            "--invite",
            "@rust:localhost",
            "--send",
            texts.from_js,
            "--expect",
            texts.from_rust,
            "--validate",
        ]);
        let ready = js.event("ready").await;
        assert_eq!(ready["user_id"], js_user.as_str(), "{ready}");
        let js_device = ready["device_id"].as_str().unwrap().to_owned();
        let room_id = RoomId::parse(ready["room_id"].as_str().unwrap()).unwrap();

        let invited = eventually("matrix-sdk sees the JS peer's invite", || async {
            rust.client
                .get_room(&room_id)
                .filter(|r| r.state() == RoomState::Invited)
        })
        .await;
        let invite = invited.invite_details().await.unwrap();
        assert_eq!(invite.inviter_id, js_user, "the invite is from the JS user");
        rust.client.join_room_by_id(&room_id).await.unwrap();
        let encryption = raw_event_state(&server, &rust, &room_id, "m.room.encryption").await;
        assert_eq!(
            encryption["algorithm"], "m.megolm.v1.aes-sha2",
            "the JS peer's DM is Megolm-encrypted: {encryption}"
        );
        let room = eventually("matrix-sdk has joined the JS peer's room", || async {
            let r = rust.client.get_room(&room_id)?;
            (r.state() == RoomState::Joined && r.joined_members_count() == 2).then_some(r)
        })
        .await;
        assert!(
            room.latest_encryption_state().await.unwrap().is_encrypted(),
            "matrix-sdk treats the JS peer's room as encrypted"
        );
        both_directions_decrypt(&server, &rust, &room, &mut js, &js_user, &js_device, &texts).await;
    })
    .await;
    assert_no_plaintext(&server, &texts);
}

/// The content of the room's state event `kind` (empty state key), as served.
async fn raw_event_state(
    server: &common::Server,
    rust: &RustDevice,
    room: &RoomId,
    kind: &str,
) -> Value {
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v3/rooms/{room}/state/{kind}/",
            server.url
        ))
        .bearer_auth(rust.client.access_token().unwrap())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "GET state {kind}: {v}");
    v
}
