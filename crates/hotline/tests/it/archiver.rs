//! `hotline archiver`, the records office's archiver, against a real
//! server and real `matrix-sdk` principals on an official (encrypted)
//! line: every event is archived, in order, once, across `kill -9`; the
//! export verifies; nothing is stored in clear; an event it could not
//! decrypt is recorded as such and resolved when its keys arrive.

use crate::common;
use crate::sdk;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Http, Server};
use matrix_sdk::attachment::AttachmentConfig;
use matrix_sdk::ruma::events::room::member::MembershipState;
use matrix_sdk::ruma::events::room::message::{
    ReplacementMetadata, RoomMessageEventContent, RoomMessageEventContentWithoutRelation,
};
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, UserId};
use matrix_sdk::Room;
use serde_json::Value;

const ARCHIVER: &str = "@records:localhost";
const ARCHIVER_PASSWORD: &str = "records office archiver password";

/// A principal's `matrix-sdk` device, syncing in the background.
async fn principal(url: &str, name: &str) -> sdk::Device {
    sdk::Device::syncing(common::sdk_login_official(url, name).await)
}

/// The archiver process and its files.
struct Archiver {
    url: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Archiver {
    /// Keys as the records office makes them, its secret key kept apart
    /// (`office/`): the archiver gets `keys/` only.
    fn new(url: &str) -> Archiver {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_hotline"))
            .args(["records", "keygen", "--out"])
            .arg(dir.path().join("keys"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::create_dir(dir.path().join("office")).unwrap();
        std::fs::rename(
            dir.path().join("keys/records-office.key"),
            dir.path().join("office/records-office.key"),
        )
        .unwrap();
        std::fs::write(dir.path().join("secret"), format!("{ARCHIVER_PASSWORD}\n")).unwrap();
        Archiver {
            url: url.to_owned(),
            dir,
            child: None,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("archiver.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hotline"))
            .arg("archiver")
            .args(["--homeserver", &self.url, "--user", ARCHIVER])
            .arg("--password-file")
            .arg(self.path("secret"))
            .arg("--state")
            .arg(self.path("state"))
            .arg("--archive")
            .arg(self.path("archive"))
            .arg("--keys")
            .arg(self.path("keys"))
            .args(["--checkpoint-seconds", "1", "--retry-seconds", "2"])
            // The most it would log: still no content, token or password.
            .env("HOTLINE_LOG", "debug")
            .env_remove("HOTLINE_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("archiver.log")).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM: a clean stop, with a last checkpoint.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let ok = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "the archiver stopped with {status}:\n{}",
                    self.log()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the archiver did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The archive's entries as the records office reads them.
    fn entries(&self) -> Vec<Value> {
        if !self.path("archive/archive.json").exists() {
            return Vec::new();
        }
        let identity =
            hotline_records::keys::read_identity(&self.path("office/records-office.key")).unwrap();
        hotline_records::read_archive(&self.path("archive"), &identity)
            .map(|c| c.records.into_iter().map(|r| r.entry).collect())
            .unwrap_or_default()
    }

    /// Waits until the archive holds every one of `events` (decrypted).
    async fn wait_for(&self, events: &[OwnedEventId], secs: u64) {
        self.wait_for_entries(events, secs, true).await
    }

    /// Waits until the archive holds an entry for every one of `events`:
    /// decrypted, or (unless `decrypted`) an undecryptable placeholder.
    async fn wait_for_entries(&self, events: &[OwnedEventId], secs: u64, decrypted: bool) {
        let want: HashSet<&str> = events.iter().map(|e| e.as_str()).collect();
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let entries = self.entries();
            let have: HashSet<&str> = entries
                .iter()
                .filter(|e| !decrypted || e["kind"] != "undecryptable")
                .map(|e| e["event_id"].as_str().unwrap())
                .collect();
            let missing: Vec<&&str> = want.iter().filter(|e| !have.contains(**e)).collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} events not archived: {missing:?}\nundecryptable: {:?}\nlog:\n{}",
                missing.len(),
                want.len(),
                entries
                    .iter()
                    .filter(|e| e["kind"] == "undecryptable")
                    .map(|e| &e["event_id"])
                    .collect::<Vec<_>>(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `hotline records export` then `verify`; the exported entries.
    fn export_and_verify(&self, line: &str) -> (PathBuf, Vec<Value>) {
        let package = self.path("package");
        let out = Command::new(env!("CARGO_BIN_EXE_hotline"))
            .args(["records", "export", "--line", line])
            .arg("--archive")
            .arg(self.path("archive"))
            .arg("--key")
            .arg(self.path("office/records-office.key"))
            .arg("--out")
            .arg(&package)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "export: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(env!("CARGO_BIN_EXE_hotline"))
            .args(["records", "verify"])
            .arg(&package)
            .arg("--checkpoint-key")
            .arg(self.path("keys/checkpoint-verify.pub"))
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "verify: {report} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(report.starts_with("OK:"), "{report}");
        let entries = std::fs::read_to_string(package.join("entries.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter_map(|v| v.get("entry").cloned())
            .collect();
        (package, entries)
    }
}

impl Drop for Archiver {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An official line between two `matrix-sdk` principals on a server whose
/// records office runs an archiver.
struct Line {
    server: Server,
    http: Http,
    macron: sdk::Device,
    scholz: sdk::Device,
    line: OwnedRoomId,
    archiver: Archiver,
}

impl Line {
    async fn new() -> Line {
        let server = Server::start_configured(
            &[],
            "allow_registration = true\n[records]\narchiver = \"@records:localhost\"\noffice = \"Records office of Freedonia\"\n",
            None,
        )
        .await;
        server.admin(&["create-user", "records", "--password", ARCHIVER_PASSWORD]);
        let http = Http::new(&server.url);
        let cast = http.line_cast(&server).await;
        let line: OwnedRoomId = cast.line.parse().unwrap();
        let macron = principal(&server.url, "macron").await;
        let scholz = principal(&server.url, "scholz").await;
        for d in [&macron, &scholz] {
            sdk::joined_room(d, &line).await;
        }
        // The server brings the archiver's account onto the line.
        common::within(10, || async {
            let (_, m) = http
                .call(
                    "GET",
                    &format!("/_matrix/client/v3/rooms/{line}/state/m.room.member/{ARCHIVER}"),
                    Some(&cast.scholz),
                    None,
                )
                .await;
            (m["membership"] == "invite")
                .then_some(())
                .ok_or(format!("the archiver is not invited: {m}"))
        })
        .await;
        let archiver = Archiver::new(&server.url);
        Line {
            server,
            http,
            macron,
            scholz,
            line,
            archiver,
        }
    }

    fn room(&self, d: &sdk::Device) -> Room {
        d.client.get_room(&self.line).unwrap()
    }

    /// Starts the archiver and waits until it is on the line and both
    /// principals' devices know its device (so they share keys with it).
    async fn start_archiver(&mut self) {
        self.archiver.start();
        let archiver = UserId::parse(ARCHIVER).unwrap();
        for d in [&self.macron, &self.scholz] {
            let room = self.room(d);
            sdk::eventually("the principal sees the archiver joined", || async {
                room.get_member_no_sync(&archiver)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|m| *m.membership() == MembershipState::Join)
            })
            .await;
            sdk::eventually("the principal knows the archiver's device", || async {
                d.client
                    .encryption()
                    .get_user_devices(&archiver)
                    .await
                    .is_ok_and(|devices| devices.devices().count() > 0)
            })
            .await;
        }
    }
}

async fn send_text(room: &Room, body: &str) -> OwnedEventId {
    room.send(RoomMessageEventContent::text_plain(body))
        .await
        .unwrap()
        .response
        .event_id
}

/// What was sent, for comparing with the export.
#[derive(Debug, PartialEq)]
enum Sent {
    Text(OwnedEventId, String),
    Edit(OwnedEventId, String),
    Redaction(OwnedEventId, OwnedEventId),
    Attachment(OwnedEventId, Vec<u8>),
}

impl Sent {
    fn id(&self) -> &OwnedEventId {
        match self {
            Sent::Text(id, _)
            | Sent::Edit(id, _)
            | Sent::Redaction(id, _)
            | Sent::Attachment(id, _) => id,
        }
    }
}

fn body_of(e: &Value) -> String {
    match e["kind"].as_str().unwrap() {
        "edit" => e["content"]["m.new_content"]["body"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        "redaction" => e["content"]["redacts"].as_str().unwrap_or("").to_owned(),
        _ => e["content"]["body"].as_str().unwrap_or("").to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_of_an_official_line_is_archived_in_order_once_and_the_export_verifies() {
    let started = Instant::now();
    let mut l = Line::new().await;
    l.start_archiver().await;
    let rooms = [l.room(&l.macron), l.room(&l.scholz)];
    let mut sent: Vec<Sent> = Vec::new();
    let mut texts: Vec<OwnedEventId> = Vec::new();
    let attachment: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    while sent.len() < 200 {
        let n = sent.len();
        let room = &rooms[n % 2];
        if n == 120 {
            // The redactions come once what they redact is archived (the
            // server strips redacted content, so an archiver that had not
            // read it by then could not recover it).
            let ids: Vec<OwnedEventId> = sent.iter().map(|s| s.id().clone()).collect();
            l.archiver.wait_for(&ids, 30).await;
            for k in 0..5 {
                let target = texts[k * 7 + 1].clone();
                let r = rooms[0]
                    .redact(&target, Some("withdrawn"), None)
                    .await
                    .unwrap();
                sent.push(Sent::Redaction(r.event_id, target));
            }
            let r = rooms[1]
                .send_attachment(
                    "minutes.pdf",
                    &"application/pdf".parse().unwrap(),
                    attachment.clone(),
                    AttachmentConfig::new(),
                )
                .await
                .unwrap();
            sent.push(Sent::Attachment(r.event_id, attachment.clone()));
            continue;
        }
        if n % 10 == 9 {
            let original = texts.last().unwrap().clone();
            let body = format!("corrected archived line message {n}");
            let edit = RoomMessageEventContentWithoutRelation::text_plain(&body)
                .make_replacement(ReplacementMetadata::new(original, None));
            let id = room.send(edit).await.unwrap().response.event_id;
            sent.push(Sent::Edit(id, body));
        } else {
            let body = format!("archived line message {n} from the summit");
            let id = send_text(room, &body).await;
            texts.push(id.clone());
            sent.push(Sent::Text(id, body));
        }
    }
    let ids: Vec<OwnedEventId> = sent.iter().map(|s| s.id().clone()).collect();
    l.archiver.wait_for(&ids, 30).await;
    l.archiver.stop();

    let (package, entries) = l.archiver.export_and_verify(l.line.as_str());
    // Exactly what was sent, in the order sent, each once. A key slower
    // than the archiver's grace would show as a placeholder and, later, its
    // resolution: the event is then in its place (its first entry) with
    // the resolution's content.
    for p in entries.iter().filter(|e| e["kind"] == "undecryptable") {
        assert!(
            entries.iter().any(|r| r["resolves"] == p["seq"]),
            "a placeholder never resolved: {p}"
        );
    }
    let mut order: Vec<&str> = Vec::new();
    for e in &entries {
        let id = e["event_id"].as_str().unwrap();
        if !order.contains(&id) {
            order.push(id);
        }
    }
    let finals: Vec<&Value> = order
        .iter()
        .map(|id| {
            entries
                .iter()
                .find(|e| e["event_id"] == *id && e["kind"] != "undecryptable")
                .unwrap()
        })
        .collect();
    let got: Vec<(String, String, String)> = finals
        .iter()
        .map(|e| {
            (
                e["event_id"].as_str().unwrap().to_owned(),
                e["kind"].as_str().unwrap().to_owned(),
                body_of(e),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = sent
        .iter()
        .map(|s| match s {
            Sent::Text(id, b) => (id.to_string(), "message".into(), b.clone()),
            Sent::Edit(id, b) => (id.to_string(), "edit".into(), b.clone()),
            Sent::Redaction(id, of) => (id.to_string(), "redaction".into(), of.to_string()),
            Sent::Attachment(id, _) => (id.to_string(), "attachment".into(), "minutes.pdf".into()),
        })
        .collect();
    assert_eq!(got.len(), 200);
    assert_eq!(got, want);
    // The sender is named, the attachment is the file itself.
    for e in &finals {
        let who = (e["sender"].as_str().unwrap(), e["sender_name"].as_str());
        assert!(
            who == ("@macron:localhost", Some("Emmanuel Macron"))
                || who == ("@scholz:localhost", Some("Olaf Scholz")),
            "{e}"
        );
    }
    let att = entries.iter().find(|e| e["kind"] == "attachment").unwrap();
    let seq = att["seq"].as_u64().unwrap();
    let file = std::fs::read(package.join(format!("attachments/{seq}-minutes.pdf"))).unwrap();
    assert_eq!(
        file, attachment,
        "the archived attachment is the decrypted file"
    );
    eprintln!("archiver conversation test: {:?}", started.elapsed());
    drop(l);
}

/// `kill -9` while the conversation goes on, twice. The rule: every event
/// sent has its entry, in the order sent, and none twice. An entry may be
/// an `undecryptable` placeholder here, and stay one: matrix-sdk saves a
/// new inbound Olm session as soon as it decrypts a pre-key to-device
/// message, before the room key inside it is stored with the rest of the
/// sync response, so a kill between the two loses that room key for good
/// (the message cannot be decrypted twice, and matrix-sdk takes forwarded
/// keys only from its own verified devices). The record then says so,
/// with the event id and session, rather than leaving a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_archiver_killed_mid_conversation_resumes_with_no_gap_and_no_duplicate() {
    let mut l = Line::new().await;
    l.start_archiver().await;
    let rooms = [l.room(&l.macron), l.room(&l.scholz)];
    let mut sent: Vec<(OwnedEventId, String)> = Vec::new();
    for round in 0..3 {
        for i in 0..20 {
            let n = round * 20 + i;
            let body = format!("kill test message {n}");
            sent.push((send_text(&rooms[n % 2], &body).await, body));
            if round == 0 && i == 12 {
                // Killed while the conversation goes on, mid-append maybe.
                l.archiver.kill9();
            }
        }
        // Down from message 13 of the first round to the end of the
        // second: 27 messages come while it is not running.
        if round == 1 {
            l.archiver.start();
        }
    }
    let ids: Vec<OwnedEventId> = sent.iter().map(|(id, _)| id.clone()).collect();
    l.archiver.wait_for_entries(&ids, 30, false).await;
    // Killed again once everything is in, and started again: nothing twice.
    l.archiver.kill9();
    l.archiver.start();
    let last = send_text(&rooms[0], "after the second restart").await;
    sent.push((last.clone(), "after the second restart".into()));
    l.archiver.wait_for_entries(&[last], 30, false).await;
    l.archiver.stop();

    let (_, entries) = l.archiver.export_and_verify(l.line.as_str());
    let of = |kind_final: bool| -> Vec<&str> {
        entries
            .iter()
            .filter(|e| (e["kind"] != "undecryptable") == kind_final)
            .map(|e| e["event_id"].as_str().unwrap())
            .collect()
    };
    let (finals, placeholders) = (of(true), of(false));
    for (what, list) in [("archived", &finals), ("a placeholder", &placeholders)] {
        let unique: HashSet<&str> = list.iter().copied().collect();
        assert_eq!(unique.len(), list.len(), "an event {what} twice: {list:?}");
    }
    // No gap: each event sent has its entry, and the first entries of the
    // events come in the order sent.
    let mut first_seen: Vec<&str> = Vec::new();
    for e in &entries {
        let id = e["event_id"].as_str().unwrap();
        if !first_seen.contains(&id) {
            first_seen.push(id);
        }
    }
    let want: Vec<&str> = sent.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(first_seen, want, "every event, in the order sent, once");
    // What was decrypted is what was sent.
    for e in entries.iter().filter(|e| e["kind"] == "message") {
        let (_, body) = sent
            .iter()
            .find(|(id, _)| e["event_id"] == id.as_str())
            .unwrap();
        assert_eq!(e["content"]["body"], body.as_str());
    }
    let unresolved = placeholders
        .iter()
        .filter(|id| !finals.contains(id))
        .count();
    eprintln!(
        "kill test: {} events, {} decrypted, {} placeholders ({unresolved} unresolved: room keys lost with the kill)",
        sent.len(),
        finals.len(),
        placeholders.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_message_body_is_in_clear_in_the_servers_or_the_archives_files_or_the_log() {
    let mut l = Line::new().await;
    l.start_archiver().await;
    let rooms = [l.room(&l.macron), l.room(&l.scholz)];
    let bodies: Vec<String> = (0..12)
        .map(|i| format!("plaintext canary {i} zebra quartz"))
        .collect();
    let mut ids = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        ids.push(send_text(&rooms[i % 2], b).await);
    }
    let file = b"attachment canary bytes: the treaty text".repeat(50);
    let r = rooms[0]
        .send_attachment(
            "treaty.txt",
            &"text/plain".parse().unwrap(),
            file.clone(),
            AttachmentConfig::new(),
        )
        .await
        .unwrap();
    ids.push(r.event_id);
    l.archiver.wait_for(&ids, 30).await;
    l.archiver.stop();
    // What the records office reads has the bodies: the archive is not empty.
    let entries = l.archiver.entries();
    assert!(entries
        .iter()
        .any(|e| e["content"]["body"] == bodies[0].as_str()));

    drop((l.macron, l.scholz));
    let session: Value =
        serde_json::from_slice(&std::fs::read(l.archiver.path("state/session.json")).unwrap())
            .unwrap();
    let token = session["access_token"].as_str().unwrap().to_owned();
    let mut needles: Vec<&str> = bodies.iter().map(String::as_str).collect();
    needles.push("attachment canary bytes");
    let found = common::scan_for_plaintext(&l.server.data, &needles);
    assert!(
        found.is_empty(),
        "plaintext in the server's data directory: {found:?}"
    );
    let found = common::scan_for_plaintext(&l.archiver.path("archive"), &needles);
    assert!(found.is_empty(), "plaintext in the archive: {found:?}");
    let found = common::scan_for_plaintext(&l.archiver.path("state/store"), &needles);
    assert!(
        found.is_empty(),
        "plaintext in the archiver's store: {found:?}"
    );
    let log = l.archiver.log();
    assert!(log.contains("archive open"), "the log was written: {log}");
    for secret in needles
        .iter()
        .copied()
        .chain([token.as_str(), ARCHIVER_PASSWORD])
    {
        assert!(!log.contains(secret), "the archiver's log holds {secret:?}");
    }
    // The session is the archiver's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(l.archiver.path("state/session.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(l.http);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_sent_before_the_archiver_had_a_device_is_archived_undecryptable_then_resolved_when_its_keys_arrive(
) {
    let mut l = Line::new().await;
    // The archiver is invited but has never signed in: no device to share
    // the room key with.
    let early = send_text(&l.room(&l.macron), "sent before the archiver had a device").await;
    l.start_archiver().await;
    let later = send_text(&l.room(&l.scholz), "sent once the archiver was known").await;
    l.archiver.wait_for(std::slice::from_ref(&later), 30).await;
    let entries = l.archiver.entries();
    let placeholder = entries
        .iter()
        .find(|e| e["event_id"] == early.as_str())
        .unwrap_or_else(|| panic!("the early event is not archived: {entries:?}"));
    assert_eq!(placeholder["kind"], "undecryptable", "{placeholder}");
    assert_eq!(
        placeholder["content"]["reason"], "missing room key",
        "{placeholder}"
    );
    assert_eq!(placeholder["sender"], "@macron:localhost");
    let placeholder_seq = placeholder["seq"].as_u64().unwrap();

    // The keys arrive: Macron's office exports the line's room keys and the
    // records office hands them to the archiver.
    let export = l.archiver.path("export.keys");
    let line = l.line.clone();
    l.macron
        .client
        .encryption()
        .export_room_keys(export.clone(), "office handover passphrase", |s| {
            s.room_id() == &*line
        })
        .await
        .unwrap();
    let imports = l.archiver.path("state/key-imports");
    std::fs::rename(&export, imports.join("handover.keys")).unwrap();
    std::fs::write(
        imports.join("handover.passphrase"),
        "office handover passphrase\n",
    )
    .unwrap();
    l.archiver.wait_for(std::slice::from_ref(&early), 30).await;
    assert!(
        !imports.join("handover.keys").exists(),
        "the key export is deleted once imported"
    );
    l.archiver.stop();

    let (package, entries) = l.archiver.export_and_verify(l.line.as_str());
    let of_early: Vec<&Value> = entries
        .iter()
        .filter(|e| e["event_id"] == early.as_str())
        .collect();
    assert_eq!(
        of_early.len(),
        2,
        "the placeholder and its resolution: {of_early:?}"
    );
    assert_eq!(of_early[0]["kind"], "undecryptable");
    assert_eq!(of_early[1]["kind"], "message");
    assert_eq!(
        of_early[1]["content"]["body"],
        "sent before the archiver had a device"
    );
    assert_eq!(
        of_early[1]["resolves"],
        placeholder_seq,
        "{of_early:#?}\n{}",
        l.archiver.log()
    );
    let transcript = std::fs::read_to_string(package.join("transcript.html")).unwrap();
    assert!(
        transcript.contains(&format!("resolves entry {placeholder_seq}")),
        "{transcript}"
    );
}
