//! Availability and the urgent override (docs/DESIGN.md capability 9):
//! a principal's available / do not disturb / asleep, with their local time
//! zone, reaches those who share a line with them, through `/sync`, and no
//! one else; while they are in do not disturb a call does not ring them and
//! a text arrives silently; an urgent signal (`org.hotline.urgent`) rings
//! through, within a quota the server enforces, on the record.

use std::time::{Duration, Instant};

use crate::common;
use crate::pushers::{exactly, pusher, set_pusher, Sink};

use common::{status_errcode, Http, Server};
use serde_json::{json, Value};

async fn set(http: &Http, token: &str, body: Value) -> (u16, Value) {
    http.call(
        "PUT",
        "/_hotline/v1/availability",
        Some(token),
        Some(&body.to_string()),
    )
    .await
}

async fn get(http: &Http, token: &str, user: &str) -> (u16, Value) {
    http.call(
        "GET",
        &format!("/_hotline/v1/availability/{user}"),
        Some(token),
        None,
    )
    .await
}

/// Sends an urgent signal (`kind` call or text) into `line`.
async fn urgent(http: &Http, token: &str, line: &str, txn: &str, kind: &str) -> (u16, Value) {
    http.call(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{line}/send/org.hotline.urgent/{txn}"),
        Some(token),
        Some(&json!({ "kind": kind }).to_string()),
    )
    .await
}

/// A device of `token`'s user joins the line's call (MatrixRTC
/// membership, as the web app places a call), or leaves it.
async fn call_member(http: &Http, token: &str, line: &str, user: &str, joined: bool) {
    let device = http.device_id(token).await;
    let key = format!("_{user}_{device}");
    let content = if joined {
        json!({"application": "m.call", "call_id": "", "scope": "m.room", "device_id": device,
               "expires": 3_600_000, "focus_active": {"type": "mesh"}, "foci_preferred": [],
               "created_ts": now_ms()})
    } else {
        json!({})
    };
    let (s, v) = http
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{line}/state/m.call.member/{key}"),
            Some(token),
            Some(&content.to_string()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

const HOUR: i64 = 3_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_and_local_time_reach_the_counterpart_through_sync_within_a_second() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let common::LineCast {
        macron,
        scholz,
        aide,
        line,
        ..
    } = http.line_cast(&server).await;

    // Never set: available.
    let (s, v) = get(&http, &scholz, "@macron:localhost").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["effective"], "available");

    // Scholz is syncing when Macron goes to sleep.
    let (_, first) = http
        .call(
            "GET",
            "/_matrix/client/v3/sync?timeout=0",
            Some(&scholz),
            None,
        )
        .await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    let until = now_ms() + 4 * HOUR;
    let started = Instant::now();
    let (s, v) = set(
        &http,
        &macron,
        json!({"state": "asleep", "until": until, "tz": "Europe/Paris"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let seen = within_sync(&http, &scholz, &since, &line).await;
    let elapsed = started.elapsed();
    // The measure the report quotes (`--nocapture`).
    eprintln!("availability: PUT to the counterpart's /sync in {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(1),
        "reached the counterpart in {elapsed:?}"
    );
    assert_eq!(seen["state_key"], "_@macron:localhost");
    assert_eq!(seen["sender"], "@macron:localhost");
    let c = &seen["content"];
    assert_eq!(c["state"], "asleep");
    assert_eq!(c["until"], json!(until));
    assert_eq!(c["tz"], "Europe/Paris");
    assert_eq!(c["place"], "Freedonia", "the country the directory has");
    assert_eq!(c["set_by"], "@macron:localhost");

    // The counterpart reads it before calling, with the state in force now.
    let (s, v) = get(&http, &scholz, "@macron:localhost").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (&v["state"], &v["effective"], &v["tz"]),
        (&json!("asleep"), &json!("asleep"), &json!("Europe/Paris"))
    );

    // The aide sets it for their principal; the time zone stays.
    let (s, v) = http
        .call(
            "PUT",
            "/_hotline/v1/availability/@macron:localhost",
            Some(&aide),
            Some(&json!({"state": "dnd"}).to_string()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = get(&http, &scholz, "@macron:localhost").await;
    assert_eq!(v["state"], "dnd");
    assert_eq!(v["tz"], "Europe/Paris");
    assert_eq!(v["set_by"], "@aide:localhost");
    // Both changes are in the audit log.
    let audit = server.admin(&["audit"]);
    assert_eq!(audit.matches("availability_set").count(), 2, "{audit}");

    // A line opened later carries the availability from its start.
    let merkel = http
        .enrolled(&server, "merkel", "Angela Merkel", "principal", None)
        .await;
    let line2 = http.open_line(&merkel, &macron).await;
    let (s, v) = http
        .call(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{line2}/state/org.hotline.availability/_@macron:localhost"
            ),
            Some(&merkel),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "dnd");
}

/// Incremental `/sync`s from `since` until `line` shows Macron's
/// availability; the event.
async fn within_sync(http: &Http, token: &str, since: &str, line: &str) -> Value {
    let mut since = since.to_owned();
    for _ in 0..20 {
        let (s, v) = http
            .call(
                "GET",
                &format!("/_matrix/client/v3/sync?since={since}&timeout=1000"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let room = &v["rooms"]["join"][line];
        let found = ["timeline", "state"].iter().find_map(|part| {
            room[part]["events"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["type"] == "org.hotline.availability")
                .cloned()
        });
        if let Some(e) = found {
            return e;
        }
        since = v["next_batch"].as_str().unwrap().to_owned();
    }
    panic!("no availability reached {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn someone_without_a_line_cannot_read_a_principals_availability_nor_anyone_write_it_by_hand()
{
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let common::LineCast {
        macron,
        scholz,
        stranger,
        line,
        ..
    } = http.line_cast(&server).await;
    let (s, _) = set(
        &http,
        &macron,
        json!({"state": "dnd", "tz": "Europe/Paris"}),
    )
    .await;
    assert_eq!(s, 200);
    // A principal without a line with Macron, and a stranger: refused,
    // alike whether the user asked about is a principal or not.
    let merkel = http
        .enrolled(&server, "merkel", "Angela Merkel", "principal", None)
        .await;
    for (who, token) in [("merkel", &merkel), ("stranger", &stranger)] {
        for target in ["@macron:localhost", "@nobody:localhost"] {
            let r = get(&http, token, target).await;
            assert_eq!(
                status_errcode(&r),
                (403, "M_FORBIDDEN"),
                "{who} → {target}: {}",
                r.1
            );
        }
        // Nor through the line's state.
        let r = http
            .call(
                "GET",
                &format!(
                    "/_matrix/client/v3/rooms/{line}/state/org.hotline.availability/_@macron:localhost"
                ),
                Some(token),
                None,
            )
            .await;
        assert_eq!(r.0, 403, "{who} reads the line's state: {}", r.1);
        // Nor set it.
        let r = http
            .call(
                "PUT",
                "/_hotline/v1/availability/@macron:localhost",
                Some(token),
                Some(r#"{"state":"available"}"#),
            )
            .await;
        assert_eq!(
            status_errcode(&r),
            (403, "M_FORBIDDEN"),
            "{who} sets: {}",
            r.1
        );
    }
    let r = get(&http, "not-a-token", "@macron:localhost").await;
    assert_eq!(status_errcode(&r), (401, "M_UNKNOWN_TOKEN"));
    // The counterpart does not set Macron's availability either.
    let r = http
        .call(
            "PUT",
            "/_hotline/v1/availability/@macron:localhost",
            Some(&scholz),
            Some(r#"{"state":"available"}"#),
        )
        .await;
    assert_eq!(status_errcode(&r), (403, "M_FORBIDDEN"), "{}", r.1);

    // Nobody writes it as state or account data by hand, not even Macron.
    for token in [&macron, &scholz] {
        let r = http
            .call(
                "PUT",
                &format!(
                    "/_matrix/client/v3/rooms/{line}/state/org.hotline.availability/_@macron:localhost"
                ),
                Some(token),
                Some(r#"{"state":"available"}"#),
            )
            .await;
        assert_eq!(status_errcode(&r), (403, "M_FORBIDDEN"), "{}", r.1);
    }
    let r = http
        .call(
            "PUT",
            "/_matrix/client/v3/user/@macron:localhost/account_data/org.hotline.availability",
            Some(&macron),
            Some(r#"{"state":"available"}"#),
        )
        .await;
    assert_eq!(r.0, 405, "{}", r.1);
    let (_, v) = get(&http, &scholz, "@macron:localhost").await;
    assert_eq!(v["state"], "dnd", "unchanged");

    // Bad requests, each with its reason.
    for (body, want) in [
        (json!({"state": "away"}), "M_INVALID_PARAM"),
        (json!({"state": "dnd", "until": 1000}), "M_INVALID_PARAM"),
        (
            json!({"state": "dnd", "tz": "../../etc/passwd"}),
            "M_INVALID_PARAM",
        ),
        (json!({"state": 3}), "M_BAD_JSON"),
        (json!({"state": "dnd", "colour": "red"}), "M_BAD_JSON"),
    ] {
        let r = set(&http, &macron, body.clone()).await;
        assert_eq!(status_errcode(&r), (400, want), "{body}: {}", r.1);
    }
    let r = set(&http, &stranger, json!({"state": "dnd"})).await;
    assert_eq!(status_errcode(&r), (403, "M_FORBIDDEN"), "{}", r.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnd_stops_a_non_urgent_call_from_ringing_texts_arrive_silently_and_an_urgent_call_rings_through(
) {
    let sink = Sink::start().await;
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let common::LineCast {
        macron,
        scholz,
        line,
        ..
    } = http.line_cast(&server).await;
    assert_eq!(
        set_pusher(&http, &scholz, pusher(&sink, "scholz-phone", None))
            .await
            .0,
        200
    );
    // Available: a call rings.
    call_member(&http, &macron, &line, "@macron:localhost", true).await;
    let got = exactly(&sink, 1).await;
    assert_eq!(
        (got[0]["type"].as_str(), got[0]["prio"].as_str()),
        (Some("m.call.member"), Some("high"))
    );
    call_member(&http, &macron, &line, "@macron:localhost", false).await;
    let got = exactly(&sink, 2).await;
    let before = got.len();

    // Do not disturb: the call does not ring, the text comes silently.
    let (s, v) = set(
        &http,
        &scholz,
        json!({"state": "dnd", "tz": "Europe/Berlin"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    call_member(&http, &macron, &line, "@macron:localhost", true).await;
    call_member(&http, &macron, &line, "@macron:localhost", false).await;
    let text = http.send_text(&macron, &line, "t1", "are you up?").await;
    let got = exactly(&sink, before + 1).await;
    let quiet = &got[before];
    assert_eq!(quiet["event_id"], json!(text), "only the text: {got:#?}");
    assert_eq!(quiet["prio"], "low");
    assert!(
        quiet["devices"][0]["tweaks"].get("sound").is_none(),
        "{quiet}"
    );

    // Urgent: the signal rings at high priority with sound, and the call
    // placed after it rings through.
    let (s, v) = urgent(&http, &macron, &line, "u1", "call").await;
    assert_eq!(s, 200, "{v}");
    call_member(&http, &macron, &line, "@macron:localhost", true).await;
    let got = exactly(&sink, before + 3).await;
    assert_eq!(got[before + 1]["type"], "org.hotline.urgent");
    assert_eq!(got[before + 1]["prio"], "high");
    assert!(got[before + 1]["devices"][0]["tweaks"]["sound"].is_string());
    assert_eq!(got[before + 2]["type"], "m.call.member");
    assert_eq!(got[before + 2]["prio"], "high");

    // `until` past: available again, without anyone changing it.
    let (s, _) = set(
        &http,
        &scholz,
        json!({"state": "asleep", "until": now_ms() + 1500}),
    )
    .await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (_, v) = get(&http, &macron, "@scholz:localhost").await;
    assert_eq!(
        (v["state"].as_str(), v["effective"].as_str()),
        (Some("asleep"), Some("available"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fourth_urgent_contact_of_a_day_is_refused_by_the_server_with_its_reason_and_reset_time(
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
    let (_, q) = http
        .call(
            "GET",
            &format!("/_hotline/v1/lines/{line}/urgent"),
            Some(&macron),
            None,
        )
        .await;
    assert_eq!(q, json!({"limit": 3, "remaining": 3, "resets_ts": null}));

    let first_ts = now_ms();
    for (i, kind) in ["call", "text", "call"].iter().enumerate() {
        let (s, v) = urgent(&http, &macron, &line, &format!("u{i}"), kind).await;
        assert_eq!(s, 200, "urgent {i}: {v}");
        if *kind == "text" {
            http.send_text(&macron, &line, "t-urgent", "urgent text")
                .await;
        }
    }
    let (_, q) = http
        .call(
            "GET",
            &format!("/_hotline/v1/lines/{line}/urgent"),
            Some(&macron),
            None,
        )
        .await;
    assert_eq!(q["remaining"], 0);
    let resets = q["resets_ts"].as_i64().unwrap();
    assert!(
        (first_ts + 86_400_000..first_ts + 86_400_000 + 5_000).contains(&resets),
        "{q}"
    );

    // The fourth, by Macron or his aide (the same side): refused, with why
    // and when it resets.
    for (who, token) in [("macron", &macron), ("aide", &aide)] {
        let r = urgent(&http, token, &line, "u4", "call").await;
        assert_eq!(
            status_errcode(&r),
            (429, "M_LIMIT_EXCEEDED"),
            "{who}: {}",
            r.1
        );
        let err = r.1["error"].as_str().unwrap();
        assert!(err.contains("limited to 3 a day"), "{err}");
        assert_eq!(r.1["org.hotline.resets_ts"], json!(resets), "{}", r.1);
        let retry = r.1["retry_after_ms"].as_i64().unwrap();
        assert!(retry > 86_000_000 && retry <= 86_400_000, "{retry}");
    }
    // Redacting one does not give it back.
    let (_, msgs) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{line}/messages?dir=b&limit=50"),
            Some(&macron),
            None,
        )
        .await;
    let signal = msgs["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "org.hotline.urgent")
        .unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, v) = http
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{line}/redact/{signal}/r1"),
            Some(&macron),
            Some("{}"),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let r = urgent(&http, &macron, &line, "u5", "text").await;
    assert_eq!(r.0, 429, "{}", r.1);

    // The other side has its own quota.
    let (s, v) = urgent(&http, &scholz, &line, "s1", "call").await;
    assert_eq!(s, 200, "{v}");

    // Not outside a line, not by a stranger, not with a bad kind.
    let room = http.create_room(&stranger).await;
    let r = urgent(&http, &stranger, &room, "x1", "call").await;
    assert_eq!(status_errcode(&r), (403, "M_FORBIDDEN"), "{}", r.1);
    let r = urgent(&http, &stranger, &line, "x2", "call").await;
    assert_eq!(r.0, 403, "{}", r.1);
    let r = urgent(&http, &scholz, &line, "x3", "shout").await;
    assert_eq!(status_errcode(&r), (400, "M_BAD_JSON"), "{}", r.1);
    let r = http
        .call(
            "GET",
            &format!("/_hotline/v1/lines/{room}/urgent"),
            Some(&stranger),
            None,
        )
        .await;
    assert_eq!(status_errcode(&r), (404, "M_NOT_FOUND"), "{}", r.1);
    let r = http
        .call(
            "GET",
            &format!("/_hotline/v1/lines/{line}/urgent"),
            Some(&stranger),
            None,
        )
        .await;
    assert_eq!(status_errcode(&r), (403, "M_FORBIDDEN"), "{}", r.1);

    // On the record: four accepted urgent contacts in the audit log, and
    // in the contact log Macron's three (the text marked urgent).
    let audit = server.admin(&["audit"]);
    assert_eq!(audit.matches("urgent_contact").count(), 4, "{audit}");
    let (s, log) = http
        .call("GET", "/_hotline/v1/contact_log", Some(&macron), None)
        .await;
    assert_eq!(s, 200, "{log}");
    let urgent_out: Vec<(&str, &str)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["urgent"] == true && e["direction"] == "outgoing")
        .map(|e| (e["kind"].as_str().unwrap(), e["by"].as_str().unwrap()))
        .collect();
    assert_eq!(
        urgent_out.iter().filter(|(k, _)| *k == "text").count(),
        1,
        "{log:#}"
    );
    assert_eq!(urgent_out.len(), 3, "{log:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_urgent_quota_is_configurable() {
    let server = Server::start_configured(
        &["--allow-registration"],
        "[lines]\nurgent_per_day = 1\n",
        None,
    )
    .await;
    let http = Http::new(&server.url);
    let common::LineCast { macron, line, .. } = http.line_cast(&server).await;
    assert_eq!(urgent(&http, &macron, &line, "a", "call").await.0, 200);
    let r = urgent(&http, &macron, &line, "b", "call").await;
    assert_eq!(status_errcode(&r), (429, "M_LIMIT_EXCEEDED"), "{}", r.1);
    assert!(r.1["error"]
        .as_str()
        .unwrap()
        .contains("limited to 1 a day"));
}
