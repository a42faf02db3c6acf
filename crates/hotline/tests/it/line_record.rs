//! Official or personal: a line is official (recorded) unless both
//! principals together make it personal; either makes it official again;
//! a protocol office can keep every line official. Who may do what:
//! - a principal of the line gives or withdraws their consent;
//! - the line turns personal in the commit that brings the second consent;
//! - an aide, a stranger, a client writing the state itself: refused.

use crate::common;

use common::{status_errcode, Http, Server};
use serde_json::{json, Value};

async fn record(http: &Http, token: &str, line: &str, official: bool) -> (u16, Value) {
    http.call(
        "PUT",
        &format!("/_hotline/v1/lines/{line}/record"),
        Some(token),
        Some(&json!({ "official": official }).to_string()),
    )
    .await
}

async fn state(http: &Http, token: &str, line: &str, kind: &str, key: &str) -> Value {
    let (_, v) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{line}/state/{kind}/{key}"),
            Some(token),
            None,
        )
        .await;
    v
}

fn forbidden(r: &(u16, Value), what: &str) {
    assert_eq!(status_errcode(r), (403, "M_FORBIDDEN"), "{what}: {}", r.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_both_principals_together_make_a_line_personal_and_either_makes_it_official_again() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let common::LineCast {
        macron,
        scholz,
        aide,
        stranger,
        line,
    } = http.line_cast(&server).await;
    assert_eq!(
        state(&http, &scholz, &line, "org.hotline.line", "").await["official"],
        true
    );

    // One principal asks: the line stays official, and the other sees the
    // request as state.
    let r = record(&http, &macron, &line, false).await;
    assert_eq!(r, (200, json!({"official": true})));
    assert_eq!(
        state(&http, &scholz, &line, "org.hotline.line", "").await["official"],
        true
    );
    assert_eq!(
        state(
            &http,
            &scholz,
            &line,
            "org.hotline.record",
            "_@macron:localhost"
        )
        .await,
        json!({"personal": true})
    );
    // Asking again changes nothing.
    assert_eq!(
        record(&http, &macron, &line, false).await,
        (200, json!({"official": true}))
    );

    // Nobody else decides, nor writes the state by hand.
    forbidden(&record(&http, &aide, &line, false).await, "an aide");
    forbidden(&record(&http, &stranger, &line, false).await, "a stranger");
    let r = http
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{line}/state/org.hotline.record/_@scholz:localhost"),
            Some(&scholz),
            Some(r#"{"personal": true}"#),
        )
        .await;
    forbidden(&r, "a principal writing the consent state themself");
    assert_eq!(
        state(&http, &scholz, &line, "org.hotline.line", "").await["official"],
        true
    );

    // The other principal agrees: personal, in that commit.
    assert_eq!(
        record(&http, &scholz, &line, false).await,
        (200, json!({"official": false}))
    );
    let l = state(&http, &macron, &line, "org.hotline.line", "").await;
    assert_eq!(l["official"], false);
    assert_eq!(l["record_changed_by"], "@scholz:localhost");
    assert_eq!(
        l["principals"],
        json!(["@macron:localhost", "@scholz:localhost"])
    );

    // Either alone makes it official again, and both consents end.
    assert_eq!(
        record(&http, &macron, &line, true).await,
        (200, json!({"official": true}))
    );
    assert_eq!(
        state(&http, &scholz, &line, "org.hotline.line", "").await["official"],
        true
    );
    for p in ["_@macron:localhost", "_@scholz:localhost"] {
        assert_eq!(
            state(&http, &scholz, &line, "org.hotline.record", p).await,
            json!({"withdrawn_by": "@macron:localhost"})
        );
    }
    // A single consent after that is a request again, not a personal line.
    assert_eq!(
        record(&http, &scholz, &line, false).await,
        (200, json!({"official": true}))
    );

    let audit = server.admin(&["audit"]);
    for action in [
        "line_personal_asked",
        "line_made_personal",
        "line_made_official",
    ] {
        assert!(audit.contains(action), "audit has {action}:\n{audit}");
    }

    // Not a line; no such room; a body without `official`.
    let room = http.create_room(&macron).await;
    assert_eq!(
        status_errcode(&record(&http, &macron, &room, false).await),
        (404, "M_NOT_FOUND")
    );
    assert_eq!(
        status_errcode(&record(&http, &macron, "!nowhere:localhost", false).await),
        (404, "M_NOT_FOUND")
    );
    let r = http
        .call(
            "PUT",
            &format!("/_hotline/v1/lines/{line}/record"),
            Some(&macron),
            Some(r#"{"official": "no"}"#),
        )
        .await;
    assert_eq!(status_errcode(&r), (400, "M_BAD_JSON"), "{}", r.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_office_that_keeps_every_line_official_refuses_its_principals_consent() {
    let server = Server::start_configured(
        &[],
        "allow_registration = true\npersonal_lines = false\n",
        None,
    )
    .await;
    let http = Http::new(&server.url);
    let common::LineCast {
        macron,
        scholz,
        line,
        ..
    } = http.line_cast(&server).await;
    for token in [&macron, &scholz] {
        let r = record(&http, token, &line, false).await;
        forbidden(&r, "personal where the office keeps lines official");
        assert!(
            r.1["error"]
                .as_str()
                .unwrap()
                .contains("keeps every line official"),
            "{}",
            r.1
        );
    }
    assert_eq!(
        state(&http, &scholz, &line, "org.hotline.line", "").await["official"],
        true
    );
    // Official stays possible.
    assert_eq!(
        record(&http, &macron, &line, true).await,
        (200, json!({"official": true}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_official_line_carries_the_records_office_archiver_shown_as_a_member_and_a_personal_one_does_not(
) {
    let server = Server::start_configured(
        &[],
        "allow_registration = true\n[records]\narchiver = \"@records:localhost\"\noffice = \"Records office of Freedonia\"\n",
        None,
    )
    .await;
    let http = Http::new(&server.url);
    // Enrolled by the protocol office as a recorder, like its officials.
    let archiver = http
        .enrolled(
            &server,
            "records",
            "Records office of Freedonia",
            "recorder",
            None,
        )
        .await;
    let common::LineCast {
        macron,
        scholz,
        line,
        ..
    } = http.line_cast(&server).await;
    const KEY: &str = "_@records:localhost";

    // Brought onto the official line, marked for everyone to see.
    common::within(10, || async {
        let marking = state(&http, &scholz, &line, "org.hotline.recorder", KEY).await;
        let member = state(&http, &scholz, &line, "m.room.member", "@records:localhost").await;
        (marking["office"] == "Records office of Freedonia" && member["membership"] == "invite")
            .then_some(())
            .ok_or(format!("no archiver invited yet: {marking} {member}"))
    })
    .await;
    // Once: the line's opening asks twice (its state, its principal's join).
    let audit = server.admin(&["audit"]);
    assert_eq!(
        audit.matches("line_recorder_added").count(),
        1,
        "one invitation of the archiver:\n{audit}"
    );
    let (s, v) = http
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{line}"),
            Some(&archiver),
            Some("{}"),
        )
        .await;
    assert_eq!(s, 200, "the archiver joins: {v}");
    // It reads, it does not speak.
    let r = http
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{line}/send/m.room.message/a1"),
            Some(&archiver),
            Some(r#"{"msgtype": "m.text", "body": "hello"}"#),
        )
        .await;
    forbidden(&r, "the archiver sends into the line");

    // Vouched for by its office: the directory names it a recorder, for
    // everyone's device to show whose archiver it is; it is nobody's
    // principal, so it opens no lines.
    let _device = common::vouched(&server, &http, &archiver, "records").await;
    let (_, directory) = http
        .call("GET", "/_hotline/v1/directory", Some(&scholz), None)
        .await;
    let listed = directory["attestations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["user_id"] == "@records:localhost")
        .unwrap_or_else(|| panic!("the archiver in the directory: {directory}"));
    assert_eq!(listed["role"], "recorder");
    assert_eq!(listed["name"], "Records office of Freedonia");
    forbidden(
        &http
            .call(
                "POST",
                "/_hotline/v1/line_invites",
                Some(&archiver),
                Some("{}"),
            )
            .await,
        "the archiver opens a line",
    );

    // Personal: the records office is off the line in that commit.
    assert_eq!(record(&http, &macron, &line, false).await.0, 200);
    assert_eq!(
        record(&http, &scholz, &line, false).await,
        (200, json!({"official": false}))
    );
    assert_eq!(
        state(&http, &scholz, &line, "m.room.member", "@records:localhost").await["membership"],
        "leave"
    );
    assert_eq!(
        state(&http, &scholz, &line, "org.hotline.recorder", KEY).await,
        json!({"removed_by": "@scholz:localhost"})
    );

    // Official again: back on the line.
    assert_eq!(record(&http, &scholz, &line, true).await.0, 200);
    common::within(10, || async {
        let member = state(&http, &scholz, &line, "m.room.member", "@records:localhost").await;
        (member["membership"] == "invite")
            .then_some(())
            .ok_or(format!("the archiver is not invited again: {member}"))
    })
    .await;
    let audit = server.admin(&["audit"]);
    assert!(audit.contains("line_recorder_added"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_held_before_the_records_office_had_an_archiver_get_it_at_the_next_start() {
    let mut server = Server::start_configured(&[], "allow_registration = true\n", None).await;
    let http = Http::new(&server.url);
    server.admin(&["create-user", "records", "--password", "archiver password"]);
    let common::LineCast { scholz, line, .. } = http.line_cast(&server).await;
    assert_eq!(
        state(&http, &scholz, &line, "m.room.member", "@records:localhost").await["errcode"],
        "M_NOT_FOUND"
    );
    std::fs::write(
        server.config_path(),
        "allow_registration = true\n[records]\narchiver = \"@records:localhost\"\n",
    )
    .unwrap();
    server.kill9();
    server.spawn().await;
    let http = Http::new(&server.url);
    common::within(10, || async {
        let member = state(&http, &scholz, &line, "m.room.member", "@records:localhost").await;
        (member["membership"] == "invite")
            .then_some(())
            .ok_or(format!(
                "the archiver is not on the line after the start: {member}"
            ))
    })
    .await;
    let marking = state(
        &http,
        &scholz,
        &line,
        "org.hotline.recorder",
        "_@records:localhost",
    )
    .await;
    assert_eq!(marking["office"], "Records office of localhost");
}
