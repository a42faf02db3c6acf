//! Aides on a line, visibly: a principal brings their own aide onto a line,
//! marked by the server (`org.hotline.aide`) for every member to see; either
//! principal takes an aide off it; nobody enters or speaks in a line
//! without being a principal or a marked aide.
//!
//! Who may do what, as these tests check it:
//! - a principal of the line adds an aide their office enrolled for them;
//! - either principal of the line removes any aide from it;
//! - an aide, a stranger, the other principal (for an aide not theirs) add
//!   nobody; an aide removes nobody but leaves when they like.

use crate::common;

use common::{status_errcode, Http, Server};
use serde_json::{json, Value};

struct Line {
    server: Server,
    http: Http,
    macron: String,
    scholz: String,
    aide: String,
    scholz_aide: String,
    stranger: String,
    line: String,
}

async fn line() -> Line {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let common::LineCast {
        macron,
        scholz,
        aide,
        stranger,
        line,
    } = http.line_cast(&server).await;
    let scholz_aide = http
        .enrolled(&server, "saide", "Karl Helfer", "aide", Some("scholz"))
        .await;
    Line {
        server,
        http,
        macron,
        scholz,
        aide,
        scholz_aide,
        stranger,
        line,
    }
}

impl Line {
    async fn aides(&self, method: &str, token: &str, user: &str) -> (u16, Value) {
        self.http
            .call(
                method,
                &format!("/_hotline/v1/lines/{}/aides/{user}", self.line),
                Some(token),
                Some("{}"),
            )
            .await
    }

    async fn join(&self, token: &str) -> (u16, Value) {
        self.http
            .call(
                "POST",
                &format!("/_matrix/client/v3/join/{}", self.line),
                Some(token),
                Some("{}"),
            )
            .await
    }

    async fn text(&self, token: &str, txn: &str) -> (u16, Value) {
        self.http
            .call(
                "PUT",
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                    self.line
                ),
                Some(token),
                Some(r#"{"msgtype": "m.text", "body": "aide here"}"#),
            )
            .await
    }

    /// The aide's marking as the other principal reads it.
    async fn marking(&self, user: &str) -> (u16, Value) {
        self.http
            .call(
                "GET",
                &format!(
                    "/_matrix/client/v3/rooms/{}/state/org.hotline.aide/_{user}",
                    self.line
                ),
                Some(&self.scholz),
                None,
            )
            .await
    }

    async fn membership(&self, user: &str) -> String {
        let (_, v) = self
            .http
            .call(
                "GET",
                &format!(
                    "/_matrix/client/v3/rooms/{}/state/m.room.member/{user}",
                    self.line
                ),
                Some(&self.scholz),
                None,
            )
            .await;
        v["membership"].as_str().unwrap_or("none").to_owned()
    }
}

fn forbidden(r: &(u16, Value), what: &str) {
    assert_eq!(status_errcode(r), (403, "M_FORBIDDEN"), "{what}: {}", r.1);
}

const AIDE: &str = "@aide:localhost";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_brings_their_aide_onto_a_line_marked_for_all_and_either_principal_takes_them_off(
) {
    let l = line().await;
    let (_, sync) = l
        .http
        .call(
            "GET",
            "/_matrix/client/v3/sync?timeout=0",
            Some(&l.scholz),
            None,
        )
        .await;
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    let r = l.aides("PUT", &l.macron, AIDE).await;
    assert_eq!(r.0, 200, "{}", r.1);
    // The other principal reads the marking, as state and as it happens.
    let (s, marking) = l.marking(AIDE).await;
    assert_eq!(s, 200, "{marking}");
    assert_eq!(marking["principal"], "@macron:localhost");
    assert_eq!(marking["added_by"], "@macron:localhost");
    assert_eq!(l.membership(AIDE).await, "invite");
    let (_, sync) = l
        .http
        .call(
            "GET",
            &format!("/_matrix/client/v3/sync?timeout=5000&since={since}"),
            Some(&l.scholz),
            None,
        )
        .await;
    let timeline = sync["rooms"]["join"][&l.line]["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let marked = timeline
        .iter()
        .position(|e| e["type"] == "org.hotline.aide" && e["state_key"] == format!("_{AIDE}"));
    let invited = timeline
        .iter()
        .position(|e| e["type"] == "m.room.member" && e["state_key"] == AIDE);
    assert!(
        matches!((marked, invited), (Some(m), Some(i)) if m < i),
        "the marking comes before the invite: {timeline:?}"
    );
    // Again: nothing changes.
    assert_eq!(l.aides("PUT", &l.macron, AIDE).await.0, 200);
    // The aide's invite says who the line is between and for whom.
    let (_, sync) = l
        .http
        .call(
            "GET",
            "/_matrix/client/v3/sync?timeout=0",
            Some(&l.aide),
            None,
        )
        .await;
    let invite_state = sync["rooms"]["invite"][&l.line]["invite_state"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let of = |kind: &str| invite_state.iter().find(|e| e["type"] == kind).cloned();
    assert_eq!(
        of("org.hotline.line").map(|e| e["content"]["principals"].clone()),
        Some(json!(["@macron:localhost", "@scholz:localhost"])),
        "{invite_state:?}"
    );
    assert_eq!(
        of("org.hotline.aide").map(|e| e["content"]["principal"].clone()),
        Some(json!("@macron:localhost")),
        "{invite_state:?}"
    );

    // The aide joins, speaks on the line and is in its call.
    let r = l.join(&l.aide).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(l.text(&l.aide, "a1").await.0, 200);
    let call_key = format!("_{AIDE}_AIDEDEVICE");
    let call_member = format!(
        "/_matrix/client/v3/rooms/{}/state/m.call.member/{call_key}",
        l.line
    );
    let membership = r#"{"application": "m.call", "call_id": "", "scope": "m.room", "device_id": "AIDEDEVICE", "focus_active": {"type": "mesh"}}"#;
    let r = l
        .http
        .call("PUT", &call_member, Some(&l.aide), Some(membership))
        .await;
    assert_eq!(r.0, 200, "{}", r.1);

    // The other principal objects: the aide is off the line, and out of
    // its call in the same commit.
    let r = l.aides("DELETE", &l.scholz, AIDE).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(l.membership(AIDE).await, "leave");
    let r = l
        .http
        .call("GET", &call_member, Some(&l.scholz), None)
        .await;
    assert_eq!(
        r,
        (200, json!({})),
        "the removed aide's call membership is emptied"
    );
    let (_, marking) = l.marking(AIDE).await;
    assert_eq!(marking, json!({"removed_by": "@scholz:localhost"}));
    forbidden(&l.text(&l.aide, "a2").await, "a removed aide texts");
    forbidden(&l.join(&l.aide).await, "a removed aide joins again alone");
    // Off again: there is no such aide on the line any more.
    assert_eq!(
        status_errcode(&l.aides("DELETE", &l.macron, AIDE).await),
        (404, "M_NOT_FOUND")
    );

    // Their principal brings them back; the aide leaves by themself.
    assert_eq!(l.aides("PUT", &l.macron, AIDE).await.0, 200);
    assert_eq!(l.join(&l.aide).await.0, 200);
    let r = l
        .http
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/leave", l.line),
            Some(&l.aide),
            Some("{}"),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);

    let audit = l.server.admin(&["audit"]);
    for action in ["line_aide_added", "line_aide_removed"] {
        assert!(audit.contains(action), "audit has {action}:\n{audit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_principal_of_the_line_adds_and_only_their_own_aide() {
    let l = line().await;
    const SAIDE: &str = "@saide:localhost";
    const STRANGER: &str = "@stranger:localhost";
    // The other principal cannot bring someone else's aide; an aide, a
    // stranger cannot bring anyone; nobody brings a non-aide.
    forbidden(
        &l.aides("PUT", &l.scholz, AIDE).await,
        "scholz adds macron's aide",
    );
    forbidden(
        &l.aides("PUT", &l.aide, AIDE).await,
        "the aide adds themself",
    );
    forbidden(
        &l.aides("PUT", &l.stranger, AIDE).await,
        "a stranger adds the aide",
    );
    forbidden(
        &l.aides("PUT", &l.macron, STRANGER).await,
        "macron adds a stranger",
    );
    forbidden(
        &l.aides("PUT", &l.macron, SAIDE).await,
        "macron adds scholz's aide",
    );
    forbidden(
        &l.aides("PUT", &l.macron, "@scholz:localhost").await,
        "macron adds the other principal as an aide",
    );
    // Each principal brings their own.
    assert_eq!(l.aides("PUT", &l.scholz, SAIDE).await.0, 200);
    assert_eq!(l.join(&l.scholz_aide).await.0, 200);

    // Past the endpoint: a plain invite or join of anyone unmarked is
    // refused by the line itself, whoever asks.
    for (who, token, target) in [
        ("macron", &l.macron, AIDE),
        ("macron", &l.macron, STRANGER),
        ("scholz's aide", &l.scholz_aide, AIDE),
    ] {
        let r = l
            .http
            .call(
                "POST",
                &format!("/_matrix/client/v3/rooms/{}/invite", l.line),
                Some(token),
                Some(&json!({"user_id": target}).to_string()),
            )
            .await;
        forbidden(&r, &format!("{who} invites {target} without the marking"));
    }
    forbidden(&l.join(&l.aide).await, "the unmarked aide joins");
    forbidden(&l.join(&l.stranger).await, "a stranger joins");

    // An aide takes nobody off; a stranger neither.
    forbidden(
        &l.aides("DELETE", &l.scholz_aide, SAIDE).await,
        "an aide removes",
    );
    forbidden(
        &l.aides("DELETE", &l.stranger, SAIDE).await,
        "a stranger removes",
    );
    // Neither principal is an aide to take off.
    forbidden(
        &l.aides("DELETE", &l.macron, "@scholz:localhost").await,
        "a principal removed as an aide",
    );

    // Not a line, and no room at all.
    let room = l.http.create_room(&l.macron).await;
    let r = l
        .http
        .call(
            "PUT",
            &format!("/_hotline/v1/lines/{room}/aides/{AIDE}"),
            Some(&l.macron),
            Some("{}"),
        )
        .await;
    assert_eq!(status_errcode(&r), (404, "M_NOT_FOUND"), "{}", r.1);
    let r = l
        .http
        .call(
            "PUT",
            &format!("/_hotline/v1/lines/!nowhere:localhost/aides/{AIDE}"),
            Some(&l.macron),
            Some("{}"),
        )
        .await;
    assert_eq!(status_errcode(&r), (404, "M_NOT_FOUND"), "{}", r.1);
    let r = l
        .http
        .call(
            "PUT",
            &format!("/_hotline/v1/lines/{}/aides/{AIDE}", l.line),
            None,
            Some("{}"),
        )
        .await;
    assert_eq!(status_errcode(&r), (401, "M_MISSING_TOKEN"), "{}", r.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_aide_is_nobodys_aide_on_the_line() {
    let l = line().await;
    let _device = common::vouched(&l.server, &l.http, &l.aide, "aide").await;
    assert_eq!(l.aides("PUT", &l.macron, AIDE).await.0, 200);
    assert_eq!(l.join(&l.aide).await.0, 200);
    assert_eq!(l.text(&l.aide, "before").await.0, 200);
    l.server.admin(&["revoke", "aide"]);
    forbidden(&l.text(&l.aide, "after").await, "a revoked aide texts");
    // Still marked, and still free to leave.
    let r = l
        .http
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/leave", l.line),
            Some(&l.aide),
            Some("{}"),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    forbidden(
        &l.aides("PUT", &l.macron, AIDE).await,
        "a revoked aide brought back",
    );
}

/// `hotline admin line-aide`, as the office types it, against the running
/// server; the answer's status and what it printed.
fn office(l: &Line, args: &[&str]) -> (bool, String) {
    let out = l
        .server
        .command()
        .args(["admin", "line-aide"])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_office_brings_its_principals_aide_onto_a_line_and_either_office_takes_aides_off_named_as_the_office(
) {
    let l = line().await;
    // By the counterpart's name: the line between the aide's principal and
    // scholz. The running server writes it, and the line says the office did.
    let (ok, said) = office(&l, &["add", "aide", "--with", "@scholz:localhost"]);
    assert!(ok, "office add: {said}");
    assert!(said.contains(&l.line), "names the line: {said}");
    assert_eq!(l.membership(AIDE).await, "invite");
    let (status, marking) = l.marking(AIDE).await;
    assert_eq!(status, 200);
    assert_eq!(marking["principal"], "@macron:localhost");
    assert_eq!(marking["added_by"], "@macron:localhost");
    assert!(
        marking["by_office"].as_str().is_some_and(|o| !o.is_empty()),
        "the marking names the office: {marking}"
    );
    assert_eq!(l.join(&l.aide).await.0, 200);
    assert_eq!(l.text(&l.aide, "office-1").await.0, 200);

    // Refused, with the reason, and nothing written: someone who is no aide,
    // an aide of a principal who is not on the line, no line named.
    let (ok, said) = office(&l, &["add", "stranger", "--line", &l.line]);
    assert!(!ok && said.contains("not an aide"), "a stranger: {said}");
    let (ok, said) = office(&l, &["add", "aide", "--with", "@stranger:localhost"]);
    assert!(!ok && said.contains("no line"), "no such line: {said}");
    assert_eq!(l.membership("@stranger:localhost").await, "none");

    // Taken off by the office, through its principal on the line.
    let (ok, said) = office(&l, &["remove", "aide", "--line", &l.line]);
    assert!(ok, "office remove: {said}");
    assert_eq!(l.membership(AIDE).await, "leave");
    let (_, ended) = l.marking(AIDE).await;
    assert!(
        ended.get("principal").is_none(),
        "the marking ended: {ended}"
    );
    assert!(ended["by_office"].is_string(), "{ended}");
    forbidden(
        &l.text(&l.aide, "office-2").await,
        "the removed aide speaks",
    );

    // The audit log says the office did both.
    let audit = l.server.admin(&["audit"]);
    for action in ["line_aide_added", "line_aide_removed"] {
        assert!(
            audit
                .lines()
                .any(|e| e.contains(action) && e.contains("protocol-office") && e.contains(AIDE)),
            "{action} by the office in the audit log:\n{audit}"
        );
    }

    // With no server running, the command says so.
    let mut l = l;
    l.server.kill9();
    let (ok, said) = office(&l, &["add", "aide", "--line", &l.line]);
    assert!(!ok && said.contains("no running server"), "{said}");
}
