//! Who is calling, before a line invite is redeemed
//! (`GET /_hotline/v1/line_invites/{code}`), who redeemed each invite, and
//! the identity fingerprint in the digit form an office compares in person
//! (`hotline admin show-key`, `hotline admin vouch` with the digits).

use crate::common;

use common::{status_errcode, Http, Server};
use serde_json::{json, Value};

async fn preview(http: &Http, token: Option<&str>, code: &str) -> (u16, Value) {
    http.call(
        "GET",
        &format!("/_hotline/v1/line_invites/{code}"),
        token,
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_shows_who_is_calling_and_nothing_more_to_any_signed_in_user() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let macron = http
        .enrolled(&server, "macron", "Emmanuel Macron", "principal", None)
        .await;
    let aide = http
        .enrolled(&server, "aide", "Marie Aide", "aide", Some("macron"))
        .await;
    let scholz = http
        .enrolled(&server, "scholz", "Olaf Scholz", "principal", None)
        .await;
    let stranger = http.register("stranger").await;

    // Made by the aide, bound to Scholz: the preview names the principal,
    // not the aide, and not whom it is bound to or its uses.
    let inv = http
        .create_line_invite(
            &aide,
            json!({"max_uses": 3, "for_user": "@scholz:localhost"}),
        )
        .await;
    let code = inv["code"].as_str().unwrap();
    let (s, v) = preview(&http, Some(&scholz), code).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({
            "principal": "@macron:localhost",
            "name": "Emmanuel Macron",
            "title": "President",
            "country": "Freedonia",
            "office": "Office of the President",
            "expires_ts": inv["expires_ts"],
        })
    );
    for hidden in [
        "uses",
        "max_uses",
        "for_user",
        "created_by",
        "redeemed_by",
        "code",
    ] {
        assert!(v.get(hidden).is_none(), "{hidden} is not shown: {v}");
    }
    // Bound to Scholz: anyone else is refused as a redeem would refuse them,
    // without learning whom it is for.
    for token in [&stranger, &macron] {
        let r = preview(&http, Some(token), code).await;
        assert_eq!(status_errcode(&r), (403, "M_FORBIDDEN"), "{}", r.1);
        assert_eq!(r.1["error"], "This line invite is meant for someone else");
        assert!(!r.1.to_string().contains("scholz"), "{}", r.1);
    }

    // Unbound: any signed-in user may look, a plain user included (they
    // then learn at redeem time that only a principal can redeem).
    let open = http.create_line_invite(&macron, json!({})).await;
    let open_code = open["code"].as_str().unwrap();
    for token in [&stranger, &scholz, &aide] {
        let (s, v) = preview(&http, Some(token), open_code).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["name"], "Emmanuel Macron");
    }
    // Signed out, or with a token nobody holds: refused.
    let r = preview(&http, None, open_code).await;
    assert_eq!(status_errcode(&r), (401, "M_MISSING_TOKEN"));
    let r = preview(&http, Some("not-a-token"), open_code).await;
    assert_eq!(status_errcode(&r), (401, "M_UNKNOWN_TOKEN"));

    // Unknown codes are M_NOT_FOUND, like a redeem of them.
    let r = preview(&http, Some(&scholz), "NoSuchInviteCode1234").await;
    assert_eq!(status_errcode(&r), (404, "M_NOT_FOUND"), "{}", r.1);
    let r = http
        .call(
            "POST",
            "/_hotline/v1/line_invites/NoSuchInviteCode1234/redeem",
            Some(&scholz),
            None,
        )
        .await;
    assert_eq!(status_errcode(&r), (404, "M_NOT_FOUND"));

    // Revoked and expired: refused in the redeem's words.
    let revoked = http.create_line_invite(&macron, json!({})).await;
    let revoked = revoked["code"].as_str().unwrap();
    let (s, _) = http
        .call(
            "DELETE",
            &format!("/_hotline/v1/line_invites/{revoked}"),
            Some(&macron),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let r = preview(&http, Some(&scholz), revoked).await;
    assert_eq!(status_errcode(&r), (403, "M_FORBIDDEN"));
    assert_eq!(r.1["error"], "This line invite was revoked by its office");
    let short = http
        .create_line_invite(&macron, json!({"expires_in_ms": 1000}))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = preview(&http, Some(&scholz), short["code"].as_str().unwrap()).await;
    assert_eq!(status_errcode(&r), (403, "M_FORBIDDEN"));
    assert_eq!(r.1["error"], "This line invite has expired");

    // Redeemed (used up): still shown, so its redeemer finds their line
    // again; the list names who redeemed it.
    let (s, v) = http
        .call(
            "POST",
            &format!("/_hotline/v1/line_invites/{open_code}/redeem"),
            Some(&scholz),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = preview(&http, Some(&scholz), open_code).await;
    assert_eq!(s, 200, "{v}");
    let (s, list) = http
        .call("GET", "/_hotline/v1/line_invites", Some(&aide), None)
        .await;
    assert_eq!(s, 200);
    let listed = |code: &str| -> Value {
        list["invites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["code"] == code)
            .cloned()
            .unwrap()
    };
    let by = listed(open_code)["redeemed_by"].clone();
    assert_eq!(by.as_array().unwrap().len(), 1, "{by}");
    assert_eq!(by[0]["user_id"], "@scholz:localhost");
    assert!(by[0]["ts"].as_i64().unwrap() > 0);
    assert_eq!(listed(code)["redeemed_by"], json!([]));
    // Redeeming again (idempotent) does not list the redeemer twice.
    let (s, _) = http
        .call(
            "POST",
            &format!("/_hotline/v1/line_invites/{open_code}/redeem"),
            Some(&scholz),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (_, list) = http
        .call("GET", "/_hotline/v1/line_invites", Some(&macron), None)
        .await;
    let again = list["invites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["code"] == open_code)
        .unwrap()["redeemed_by"]
        .clone();
    assert_eq!(again, by);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_past_the_per_user_limit_are_refused_with_limit_exceeded() {
    let server = Server::start_configured(
        &["--allow-registration"],
        "[rate_limits]\ncode_probes_per_user_per_minute = 1.0\ncode_probes_per_user_burst = 3.0\n",
        None,
    )
    .await;
    let http = Http::new(&server.url);
    let macron = http
        .enrolled(&server, "macron", "Emmanuel Macron", "principal", None)
        .await;
    let prober = http.register("prober").await;
    let other = http.register("other").await;
    let inv = http.create_line_invite(&macron, json!({})).await;
    let code = inv["code"].as_str().unwrap();
    // Guesses and hits alike use up the allowance.
    assert_eq!(
        preview(&http, Some(&prober), "Guess0000000000000001")
            .await
            .0,
        404
    );
    assert_eq!(
        preview(&http, Some(&prober), "Guess0000000000000002")
            .await
            .0,
        404
    );
    assert_eq!(preview(&http, Some(&prober), code).await.0, 200);
    let r = preview(&http, Some(&prober), code).await;
    assert_eq!(status_errcode(&r), (429, "M_LIMIT_EXCEEDED"), "{}", r.1);
    assert!(r.1["retry_after_ms"].as_u64().unwrap() > 0, "{}", r.1);
    // Other endpoints are not held back for the prober, and another user
    // has an allowance of their own.
    let (s, _) = http
        .call("GET", "/_hotline/v1/directory", Some(&prober), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(preview(&http, Some(&other), code).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_past_the_per_address_limit_are_refused_for_every_user_there() {
    let server = Server::start_configured(
        &["--allow-registration"],
        "[rate_limits]\ncode_probes_per_ip_per_minute = 1.0\ncode_probes_per_ip_burst = 4.0\n",
        None,
    )
    .await;
    let http = Http::new(&server.url);
    let mut tokens = vec![];
    for name in ["p1", "p2", "p3"] {
        tokens.push(http.register(name).await);
    }
    // Each user stays well inside their own allowance; the address does not.
    let mut refused = 0;
    for i in 0..6 {
        let r = preview(&http, Some(&tokens[i % 3]), &format!("Guess{i:016}")).await;
        match status_errcode(&r) {
            (404, "M_NOT_FOUND") => assert_eq!(refused, 0, "refused ones stay refused"),
            (429, "M_LIMIT_EXCEEDED") => refused += 1,
            other => panic!("unexpected {other:?}: {}", r.1),
        }
    }
    assert_eq!(refused, 2);
}

/// A master key's public half: any 32 bytes will do for the comparison.
const MASTER: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_key_prints_the_digit_form_and_vouch_accepts_it() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let token = http
        .enrolled(&server, "macron", "Emmanuel Macron", "principal", None)
        .await;
    let user = "@macron:localhost";
    // No key yet: show-key says so.
    let out = server
        .command()
        .args(["admin", "show-key", "macron"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no identity key yet"));

    let (s, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(&token),
            Some(&json!({"master_key": {"user_id": user, "usage": ["master"], "keys": {format!("ed25519:{MASTER}"): MASTER}}}).to_string()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let expected = hotline_service::fingerprint::digits_of_base64(MASTER, user).unwrap();
    let shown = server.admin(&["show-key", "macron"]);
    let line = |k: &str| {
        shown
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {shown}"))
            .to_owned()
    };
    assert_eq!(line("user "), user);
    assert_eq!(
        line("official "),
        "Emmanuel Macron, President of Freedonia (Office of the President)"
    );
    assert_eq!(line("fingerprint "), expected);
    assert_eq!(line("master_key "), MASTER);
    assert!(
        regex_like_groups(&expected),
        "12 groups of 5 digits: {expected}"
    );

    // Digits that differ in one place are refused.
    let mut wrong: Vec<char> = expected.chars().collect();
    wrong[0] = if wrong[0] == '1' { '2' } else { '1' };
    let wrong: String = wrong.into_iter().collect();
    let out = server
        .command()
        .args(["admin", "vouch", "macron", "--master-key", &wrong])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match"));
    // So are too few digits (they are not mistaken for base64).
    let out = server
        .command()
        .args(["admin", "vouch", "macron", "--master-key", &expected[..40]])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // The digits as the office typed them (any spacing): vouched.
    let typed = expected.replace(' ', "  ").replacen("  ", "-", 3);
    let att: Value =
        serde_json::from_str(&server.admin(&["vouch", "macron", "--master-key", &typed])).unwrap();
    assert_eq!(att["master_key"], MASTER);
    assert_eq!(att["user_id"], user);
    // The base64 form is still accepted.
    let att: Value =
        serde_json::from_str(&server.admin(&["vouch", "macron", "--master-key", MASTER])).unwrap();
    assert_eq!(att["master_key"], MASTER);
}

fn regex_like_groups(s: &str) -> bool {
    let g: Vec<&str> = s.split(' ').collect();
    g.len() == 12
        && g.iter()
            .all(|x| x.len() == 5 && x.bytes().all(|b| b.is_ascii_digit()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolment_link_names_the_official_before_a_password_is_set_and_only_while_unused() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let code = server.enroll("varga", "Jon Varga", "principal", None, "24");
    let look = |code: String| {
        let http = &http;
        async move {
            http.call("GET", &format!("/_hotline/v1/enrol/{code}"), None, None)
                .await
        }
    };

    // No token needed: the person enrolling has none yet.
    let (s, v) = look(code.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["user_id"], "@varga:localhost");
    assert_eq!(v["name"], "Jon Varga");
    assert_eq!(v["role"], "principal");
    assert!(v["expires_ts"].as_i64().is_some(), "{v}");
    assert!(v.get("enrol_code_hash").is_none(), "nothing secret: {v}");

    // A wrong code, a used one and an expired one answer as a redeem does.
    assert_eq!(
        status_errcode(&look("not-a-code".into()).await),
        (403, "M_FORBIDDEN")
    );
    let (s, _) = http.redeem_enrolment(&code).await;
    assert_eq!(s, 200);
    assert_eq!(
        status_errcode(&look(code).await),
        (403, "M_FORBIDDEN"),
        "a used code names nobody"
    );
    let stale = server.enroll("late", "Late Comer", "principal", None, "0");
    let (s, v) = look(stale).await;
    assert_eq!(s, 403);
    assert!(v["error"].as_str().unwrap().contains("expired"), "{v}");
}
