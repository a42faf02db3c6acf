//! The contact log: a principal's texts and calls on their lines, metadata
//! only, read by the principal, their aides and their office, never by
//! anyone else; as JSON and as CSV.

use crate::common;

use common::{status_errcode, Http, Server};
use serde_json::{json, Value};

const ENC: &str = r#"{"algorithm": "m.megolm.v1.aes-sha2", "sender_key": "k", "session_id": "s", "ciphertext": "AwgAEnACgAkLmt"}"#;

async fn send(http: &Http, token: &str, room: &str, kind: &str, txn: &str, body: &str) {
    let (s, v) = http
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}"),
            Some(token),
            Some(body),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

/// A MatrixRTC membership (MSC4143): joined with content, left with `{}`.
async fn call_member(http: &Http, token: &str, room: &str, user: &str, device: &str, joined: bool) {
    let content = if joined {
        json!({"application": "m.call", "call_id": "", "scope": "m.room", "device_id": device,
               "expires": 14_400_000, "focus_active": {"type": "livekit", "focus_selection": "oldest_membership"},
               "foci_preferred": []})
    } else {
        json!({})
    };
    let (s, v) = http
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.call.member/_{user}_{device}"),
            Some(token),
            Some(&content.to_string()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

async fn log(http: &Http, token: &str, query: &str) -> (u16, Value) {
    http.call(
        "GET",
        &format!("/_hotline/v1/contact_log{query}"),
        Some(token),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principals_texts_and_calls_are_logged_by_side_without_content_and_read_only_by_their_side(
) {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let common::LineCast {
        macron,
        scholz,
        aide,
        stranger,
        line,
    } = http.line_cast(&server).await;
    http.bring_aide(&macron, &line, "@aide:localhost", &aide)
        .await;

    // Texts: the President, her aide, the Chancellor twice (one urgent);
    // an edit and a reaction are not texts.
    send(&http, &macron, &line, "m.room.encrypted", "t1", ENC).await;
    send(&http, &aide, &line, "m.room.encrypted", "t2", ENC).await;
    send(&http, &scholz, &line, "m.room.encrypted", "t3", ENC).await;
    let mut urgent: Value = serde_json::from_str(ENC).unwrap();
    urgent["org.hotline.urgent"] = json!(true);
    send(
        &http,
        &scholz,
        &line,
        "m.room.encrypted",
        "t4",
        &urgent.to_string(),
    )
    .await;
    let mut edit: Value = serde_json::from_str(ENC).unwrap();
    edit["m.relates_to"] = json!({"rel_type": "m.replace", "event_id": "$x"});
    send(
        &http,
        &macron,
        &line,
        "m.room.encrypted",
        "t5",
        &edit.to_string(),
    )
    .await;
    send(
        &http,
        &scholz,
        &line,
        "m.reaction",
        "t6",
        r#"{"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": "+1"}}"#,
    )
    .await;

    // A call the Chancellor places; the President and her aide join; it
    // lasts a second and a half with both sides on it. Its signalling is
    // encrypted like a text, and is not one: what a caller sends while in
    // the call (and just before or after) is not counted as a text.
    tokio::time::sleep(std::time::Duration::from_millis(3_500)).await;
    call_member(&http, &scholz, &line, "@scholz:localhost", "SDEV", true).await;
    send(&http, &scholz, &line, "m.room.encrypted", "invite", ENC).await;
    call_member(&http, &macron, &line, "@macron:localhost", "MDEV", true).await;
    send(&http, &macron, &line, "m.room.encrypted", "answer", ENC).await;
    call_member(&http, &aide, &line, "@aide:localhost", "ADEV", true).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    call_member(&http, &macron, &line, "@macron:localhost", "MDEV", false).await;
    call_member(&http, &aide, &line, "@aide:localhost", "ADEV", false).await;
    call_member(&http, &scholz, &line, "@scholz:localhost", "SDEV", false).await;

    let (s, v) = log(&http, &macron, "").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["principal"], "@macron:localhost");
    let entries = v["entries"].as_array().unwrap();
    let seen: Vec<(&str, &str, &str, bool)> = entries
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["direction"].as_str().unwrap(),
                e["by"].as_str().unwrap(),
                e["urgent"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("text", "outgoing", "@macron:localhost", false),
            ("text", "outgoing", "@aide:localhost", false),
            ("text", "incoming", "@scholz:localhost", false),
            ("text", "incoming", "@scholz:localhost", true),
            ("call", "incoming", "@scholz:localhost", false),
        ],
        "{v}"
    );
    for e in entries {
        assert_eq!(e["counterpart"], "@scholz:localhost");
        assert_eq!(e["room_id"], json!(line));
        // Metadata only: nothing of the events' content.
        assert!(!e.to_string().contains("AwgAEnACgAkLmt"), "{e}");
    }
    let call = &entries[4];
    assert_eq!(call["answered"], true);
    assert_eq!(call["ongoing"], false);
    let ms = call["duration_ms"].as_i64().unwrap();
    assert!((1_400..15_000).contains(&ms), "{call}");

    // The aide reads their principal's log; the other principal reads the
    // same contacts the other way round.
    let (s, of_aide) = log(&http, &aide, "").await;
    assert_eq!(s, 200, "{of_aide}");
    assert_eq!(of_aide, v);
    let (_, theirs) = log(&http, &scholz, "").await;
    let directions: Vec<&str> = theirs["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["direction"].as_str().unwrap())
        .collect();
    assert_eq!(
        directions,
        ["incoming", "incoming", "outgoing", "outgoing", "outgoing"]
    );

    // A window: nothing before the first text, nothing at all in the past.
    let first = entries[0]["ts"].as_i64().unwrap();
    let (_, v2) = log(&http, &macron, &format!("?from={}", first + 1)).await;
    assert!(v2["entries"].as_array().unwrap().len() < 5, "{v2}");
    let (_, v3) = log(&http, &macron, "?to=1").await;
    assert_eq!(v3["entries"], json!([]));

    // CSV, for the records office's spreadsheet.
    let csv = http
        .get_bytes("/_hotline/v1/contact_log?format=csv", &macron)
        .await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.content_type.as_deref(), Some("text/csv; charset=utf-8"));
    assert!(csv.disposition.unwrap().contains("contact-log-macron.csv"));
    let text = String::from_utf8(csv.body).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 6, "{text}");
    assert!(rows[0].starts_with("time_utc,kind,direction,counterpart,by,duration_s"));
    assert!(
        rows[5].contains(",call,incoming,@scholz:localhost,@scholz:localhost,"),
        "{text}"
    );
    // The office reads it too, with the admin CLI.
    let office = server.admin(&["contact-log", "macron"]);
    assert_eq!(office.lines().count(), 6, "{office}");

    // Nobody else: a stranger, the other side's log, an unknown format.
    for (who, token, query) in [
        ("a stranger", &stranger, ""),
        (
            "the other principal's",
            &macron,
            "?principal=@scholz:localhost",
        ),
        (
            "an aide, the other principal's",
            &aide,
            "?principal=@scholz:localhost",
        ),
    ] {
        let r = log(&http, token, query).await;
        assert_eq!(status_errcode(&r), (403, "M_FORBIDDEN"), "{who}: {}", r.1);
    }
    let r = log(&http, &macron, "?format=xml").await;
    assert_eq!(status_errcode(&r), (400, "M_INVALID_PARAM"), "{}", r.1);
    let r = http
        .call("GET", "/_hotline/v1/contact_log", None, None)
        .await;
    assert_eq!(status_errcode(&r), (401, "M_MISSING_TOKEN"), "{}", r.1);
}
