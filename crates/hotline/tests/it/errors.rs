//! Every error the API promises, provoked on purpose: the right `errcode`
//! and HTTP status, never a 500.

use crate::common;

use common::{Http, Server};

#[tokio::test]
async fn each_error_has_its_errcode_and_status() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let (_, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            Some("{}"),
        )
        .await;
    let room = v["room_id"].as_str().unwrap().to_owned();
    // Under the request limit (1 MiB) but over the spec's 64 KiB per event.
    let big_event = format!(r#"{{"msgtype":"m.text","body":"{}"}}"#, "x".repeat(70_000));

    let cases: Vec<(&str, String, Option<&str>, Option<String>, u16, &str)> = vec![
        ("GET", "/_matrix/client/v3/account/whoami".into(), None, None, 401, "M_MISSING_TOKEN"),
        ("GET", "/_matrix/client/v3/account/whoami".into(), Some("hl_stale"), None, 401, "M_UNKNOWN_TOKEN"),
        ("POST", "/_matrix/client/v3/createRoom".into(), Some(&alice), Some("{not json".into()), 400, "M_NOT_JSON"),
        ("POST", "/_matrix/client/v3/createRoom".into(), Some(&alice), Some(r#"{"invite": "not-a-list"}"#.into()), 400, "M_BAD_JSON"),
        ("POST", "/_matrix/client/v3/createRoom".into(), Some(&alice), Some("[1,2]".into()), 400, "M_BAD_JSON"),
        ("GET", "/_matrix/client/v3/rooms/!nowhere:localhost/state".into(), Some(&alice), None, 404, "M_NOT_FOUND"),
        ("GET", "/_matrix/client/v3/rooms/not-a-room-id/state".into(), Some(&alice), None, 400, "M_INVALID_PARAM"),
        ("GET", "/_matrix/client/v3/no/such/endpoint".into(), None, None, 404, "M_UNRECOGNIZED"),
        ("DELETE", "/_matrix/client/versions".into(), None, None, 405, "M_UNRECOGNIZED"),
        (
            "POST",
            "/_matrix/client/v3/register".into(),
            None,
            Some(r#"{"username":"alice","password":"x","auth":{"type":"m.login.dummy"}}"#.into()),
            400,
            "M_USER_IN_USE",
        ),
        (
            "POST",
            "/_matrix/client/v3/register".into(),
            None,
            Some(r#"{"username":"Bad Name!","password":"x","auth":{"type":"m.login.dummy"}}"#.into()),
            400,
            "M_INVALID_USERNAME",
        ),
        // Events are canonical JSON: no floats.
        ("PUT", format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/f1"), Some(&alice), Some(r#"{"body":"x","n":1.5}"#.into()), 400, "M_BAD_JSON"),
        ("PUT", format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/f2"), Some(&alice), Some(big_event), 413, "M_TOO_LARGE"),
        ("GET", "/_matrix/client/v3/sync?since=garbage".into(), Some(&alice), None, 400, "M_INVALID_PARAM"),
        ("GET", format!("/_matrix/client/v3/rooms/{room}/messages?dir=sideways"), Some(&alice), None, 400, "M_INVALID_PARAM"),
        (
            "PUT",
            "/_matrix/client/v3/profile/@someone:localhost/displayname".into(),
            Some(&alice),
            Some(r#"{"displayname":"x"}"#.into()),
            403,
            "M_FORBIDDEN",
        ),
        (
            "POST",
            "/_matrix/client/v3/login".into(),
            None,
            Some(r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"wrong"}"#.into()),
            403,
            "M_FORBIDDEN",
        ),
    ];
    for (method, path, token, body, status, code) in cases {
        let (got, v) = http.call(method, &path, token, body.as_deref()).await;
        assert_eq!(
            (got, v["errcode"].as_str()),
            (status, Some(code)),
            "{method} {path}: {v}"
        );
        assert!(v["error"].is_string(), "{method} {path} has a message");
    }
}

/// An oversize body is refused from its declared length, before it is read:
/// the client has sent only its first kilobyte when the answer comes.
#[tokio::test]
async fn oversize_bodies_are_refused_before_being_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let room = http.create_room(&alice).await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let head = format!(
        "PUT /_matrix/client/v3/rooms/{room}/send/m.room.message/t1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {alice}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"body\": \"",
        2 * 1024 * 1024
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&[b'x'; 1024]).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tcp.read_to_end(&mut answer),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("M_TOO_LARGE"), "{answer}");
}

#[tokio::test]
async fn open_registration_is_off_by_default_and_tokens_work() {
    let server = Server::start_with(&[]).await;
    let http = Http::new(&server.url);
    let dummy = r#"{"username":"carol","password":"pw","auth":{"type":"m.login.dummy"}}"#;
    let (status, v) = http
        .call("POST", "/_matrix/client/v3/register", None, Some(dummy))
        .await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{v}"
    );

    let (status, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(r#"{"username":"carol","password":"pw"}"#),
        )
        .await;
    assert_eq!(status, 401);
    let flows = v["flows"].to_string();
    assert!(
        flows.contains("m.login.registration_token") && !flows.contains("m.login.dummy"),
        "{v}"
    );

    let token = server.admin(&["registration-token", "--uses", "1"]);
    let body = serde_json::json!({"username":"carol","password":"pw","auth":{"type":"m.login.registration_token","token": token}});
    let (status, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let body = serde_json::json!({"username":"dave","password":"pw","auth":{"type":"m.login.registration_token","token": token}});
    let (status, _) = http
        .call(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(status, 401, "a used-up token is refused");
}

#[tokio::test]
async fn a_registration_token_makes_no_more_accounts_than_its_uses_even_when_raced() {
    let server = Server::start_with(&[]).await;
    let http = Http::new(&server.url);
    let token = server.admin(&["registration-token", "--uses", "2"]);
    let validity = |t: String| {
        let http = &http;
        async move {
            let path = format!(
                "/_matrix/client/v1/register/m.login.registration_token/validity?token={t}"
            );
            let (status, v) = http.call("GET", &path, None, None).await;
            assert_eq!(status, 200, "{v}");
            v["valid"].as_bool().expect("a boolean `valid`")
        }
    };
    assert!(validity(token.clone()).await);
    assert!(!validity("no-such-token".into()).await);

    // Six registrations at once, for two uses.
    let mut attempts = tokio::task::JoinSet::new();
    for i in 0..6 {
        let body = serde_json::json!({"username": format!("racer{i}"), "password": "pw",
            "auth": {"type": "m.login.registration_token", "token": token}});
        let http = Http::new(&server.url);
        attempts.spawn(async move {
            http.call(
                "POST",
                "/_matrix/client/v3/register",
                None,
                Some(&body.to_string()),
            )
            .await
        });
    }
    let results = attempts.join_all().await;
    let made = results.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(made, 2, "{results:?}");
    for (status, v) in results.iter().filter(|(status, _)| *status != 200) {
        assert!(
            matches!(*status, 401 | 403) && v["errcode"] == "M_FORBIDDEN",
            "{status} {v}"
        );
    }
    assert!(!validity(token).await, "both uses are spent");
}

#[tokio::test]
async fn rate_limit_answers_m_limit_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hotline.toml");
    std::fs::write(
        &cfg,
        "[rate_limits]\nper_ip_per_second = 1.0\nper_ip_burst = 2.0\n",
    )
    .unwrap();
    let server = Server::start_with(&["--config", cfg.to_str().unwrap()]).await;
    let http = Http::new(&server.url);
    let mut limited = None;
    for _ in 0..10 {
        let (status, v) = http
            .call(
                "POST",
                "/_matrix/client/v3/login",
                None,
                Some(r#"{"type":"m.login.password","user":"x","password":"y"}"#),
            )
            .await;
        if status == 429 {
            limited = Some(v);
            break;
        }
    }
    let v = limited.expect("login is rate limited per address");
    assert_eq!(v["errcode"], "M_LIMIT_EXCEEDED");
    assert!(v["retry_after_ms"].as_u64().unwrap() > 0);
}

/// A server whose rate limits come from `toml`.
async fn server_with_limits(toml: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hotline.toml");
    std::fs::write(&cfg, format!("[rate_limits]\n{toml}")).unwrap();
    let server =
        Server::start_with(&["--allow-registration", "--config", cfg.to_str().unwrap()]).await;
    (server, dir)
}

#[tokio::test]
async fn a_user_past_their_request_limit_gets_m_limit_exceeded_and_others_do_not() {
    let (server, _dir) =
        server_with_limits("per_user_per_second = 0.2\nper_user_burst = 5.0\n").await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let bob = http.register("bob").await;
    let whoami = |token: String| {
        let http = &http;
        async move {
            http.call(
                "GET",
                "/_matrix/client/v3/account/whoami",
                Some(&token),
                None,
            )
            .await
        }
    };
    let mut answered = 0;
    let limited = loop {
        let (status, v) = whoami(alice.clone()).await;
        match status {
            200 => answered += 1,
            429 => break v,
            other => panic!("unexpected {other}: {v}"),
        }
        assert!(answered <= 5, "the burst is 5 requests");
    };
    assert_eq!(answered, 5, "the whole burst was served first");
    assert_eq!(limited["errcode"], "M_LIMIT_EXCEEDED");
    let retry = limited["retry_after_ms"].as_u64().unwrap();
    assert!(
        (1..=5000).contains(&retry),
        "one token comes back within 5 s: {retry}"
    );
    // The limit is alice's, not the address's: bob, from the same address,
    // is served.
    let (status, v) = whoami(bob).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn an_address_that_keeps_presenting_unknown_tokens_is_slowed_down() {
    let (server, _dir) = server_with_limits("per_ip_per_second = 0.01\nper_ip_burst = 3.0\n").await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let guess = |n: usize| {
        let http = &http;
        async move {
            let token = format!("hl_guess{n:034}");
            http.call(
                "GET",
                "/_matrix/client/v3/account/whoami",
                Some(&token),
                None,
            )
            .await
        }
    };
    let (status, v) = http
        .call(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    for n in 0..3 {
        let (status, v) = guess(n).await;
        assert_eq!(
            (status, v["errcode"].as_str()),
            (401, Some("M_UNKNOWN_TOKEN")),
            "{v}"
        );
    }
    let (status, v) = guess(3).await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (429, Some("M_LIMIT_EXCEEDED")),
        "{v}"
    );
    assert!(v["retry_after_ms"].as_u64().unwrap() > 0);
    // A token in use keeps working from that address: others behind it
    // are not locked out by a prober.
    let (status, v) = http
        .call(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn devices_need_password_auth_to_delete() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let token = http.register("erin").await;
    let device = http.device_id(&token).await;
    let path = format!("/_matrix/client/v3/devices/{device}");
    let (status, v) = http.call("DELETE", &path, Some(&token), Some("{}")).await;
    assert_eq!(status, 401);
    assert_eq!(v["flows"][0]["stages"][0], "m.login.password");
    let session = v["session"].as_str().unwrap();
    let wrong = serde_json::json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "erin"}, "password": "nope", "session": session}});
    let (status, v) = http
        .call("DELETE", &path, Some(&token), Some(&wrong.to_string()))
        .await;
    assert_eq!((status, v["errcode"].as_str()), (401, Some("M_FORBIDDEN")));
    let right = serde_json::json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "erin"}, "password": "correct horse", "session": session}});
    let (status, _) = http
        .call("DELETE", &path, Some(&token), Some(&right.to_string()))
        .await;
    assert_eq!(status, 200);
    let (status, v) = http
        .call(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (401, Some("M_UNKNOWN_TOKEN")),
        "deleted device's token is dead"
    );
}

/// Non-negotiable: secrets and message bodies never reach the log, at any
/// level. The server runs at `trace` for its own crates and `debug` for the
/// libraries under it, and signs up, signs in (body and query-string
/// tokens), sends a message, fails and passes password checks and changes
/// the password.
#[tokio::test]
async fn the_log_never_holds_passwords_tokens_or_message_bodies() {
    let server = Server::start_logging(
        "debug,hotline=trace,hotline_api=trace,hotline_service=trace,hotline_store=trace",
    )
    .await;
    let http = Http::new(&server.url);
    let (password, new_password, body) = (
        "lamplight-orchard-9071",
        "harbour-lantern-5520",
        "budget-figures-3317",
    );
    let reg = serde_json::json!({"username": "frank", "password": password, "auth": {"type": "m.login.dummy"}});
    let (status, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(&reg.to_string()),
        )
        .await;
    assert_eq!(status, 200, "register: {v}");
    let token1 = v["access_token"].as_str().unwrap().to_owned();
    let login = |pw: &str| {
        serde_json::json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "frank"}, "password": pw})
            .to_string()
    };
    let (status, _) = http
        .call(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(&login("wrong-guess-1")),
        )
        .await;
    assert_eq!(status, 403);
    let (status, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(&login(password)),
        )
        .await;
    assert_eq!(status, 200, "login: {v}");
    let token2 = v["access_token"].as_str().unwrap().to_owned();

    let room = http.create_room(&token2).await;
    let msg = serde_json::json!({"msgtype": "m.text", "body": body});
    let (status, _) = http
        .call(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1"),
            Some(&token2),
            Some(&msg.to_string()),
        )
        .await;
    assert_eq!(status, 200);
    // The token in the query string, as older clients send it.
    let (status, v) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/sync?timeout=0&access_token={token1}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "sync: {v}");
    assert!(v.to_string().contains(body), "the message is in the sync");

    let (status, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/account/password",
            Some(&token2),
            Some(&serde_json::json!({"new_password": new_password}).to_string()),
        )
        .await;
    assert_eq!(status, 401, "password change asks for auth: {v}");
    let session = v["session"].as_str().unwrap();
    let change = serde_json::json!({"new_password": new_password, "logout_devices": false, "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "frank"}, "password": password, "session": session}});
    let (status, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/account/password",
            Some(&token2),
            Some(&change.to_string()),
        )
        .await;
    assert_eq!(status, 200, "password change: {v}");
    let (status, _) = http
        .call(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(&login(new_password)),
        )
        .await;
    assert_eq!(status, 200, "the new password works");

    let log = server.log_text();
    assert!(
        log.contains("hotline is serving") && log.contains("DEBUG"),
        "the log was written, at debug level:\n{log}"
    );
    for secret in [
        password,
        new_password,
        "wrong-guess-1",
        body,
        &token1,
        &token2,
    ] {
        assert!(!log.contains(secret), "{secret:?} is in the server log");
    }
}
