//! Abuse limits, tried as an attacker would over HTTP against the real
//! binary: password guessing per account, floods of unauthenticated
//! requests per address, slow and idle connections, `/metrics`, and media
//! a browser could be tricked into running.

use crate::common;

use std::io::Cursor;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{Http, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn login(http: &Http, user: &str, password: &str) -> (u16, Value) {
    let body = json!({"type": "m.login.password", "user": user, "password": password});
    http.call(
        "POST",
        "/_matrix/client/v3/login",
        None,
        Some(&body.to_string()),
    )
    .await
}

/// `retry_after_ms` of a `429 M_LIMIT_EXCEEDED`, after checking it is one.
fn limited(r: &(u16, Value)) -> u64 {
    assert_eq!(
        (r.0, r.1["errcode"].as_str()),
        (429, Some("M_LIMIT_EXCEEDED")),
        "{}",
        r.1
    );
    r.1["retry_after_ms"].as_u64().expect("retry_after_ms")
}

fn forbidden(r: &(u16, Value)) {
    assert_eq!(
        (r.0, r.1["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{}",
        r.1
    );
}

#[tokio::test]
async fn failed_logins_pause_the_account_with_a_doubling_wait_that_ends_and_is_logged() {
    let server = Server::start_configured(
        &["--allow-registration"],
        "[rate_limits]\nlogin_failures_allowed = 3\nlogin_backoff_seconds = 1.0\n\
         login_backoff_max_seconds = 2.0\n",
        Some("warn"),
    )
    .await;
    let http = Http::new(&server.url);
    http.register("alice").await;
    http.register("bob").await;
    let right = "correct horse";

    for n in 0..3 {
        forbidden(&login(&http, "alice", &format!("guess-{n}")).await);
    }
    // The fourth failure starts a 1 s pause.
    forbidden(&login(&http, "alice", "guess-3").await);
    // During it even the right password is refused, unchecked, exactly as
    // a wrong one: the answer tells the guesser nothing.
    let wait = limited(&login(&http, "alice", right).await);
    assert!((1..=1000).contains(&wait), "{wait}");
    limited(&login(&http, "@alice:localhost", "guess-4").await);
    // Another account is not affected, right or wrong.
    assert_eq!(login(&http, "bob", right).await.0, 200);
    forbidden(&login(&http, "bob", "guess").await);

    // After the wait a password is checked again; one more failure doubles it.
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    forbidden(&login(&http, "alice", "guess-5").await);
    let wait = limited(&login(&http, "alice", right).await);
    assert!((1001..=2000).contains(&wait), "doubled: {wait}");
    // Capped: the next failure waits 2 s again, not 4.
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    forbidden(&login(&http, "alice", "guess-6").await);
    let wait = limited(&login(&http, "alice", right).await);
    assert!((1001..=2000).contains(&wait), "capped: {wait}");

    // The real user gets in after the wait, and that clears the count:
    // three failures are free again.
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    let (status, v) = login(&http, "alice", right).await;
    assert_eq!(status, 200, "{v}");
    for n in 7..10 {
        forbidden(&login(&http, "alice", &format!("guess-{n}")).await);
    }
    assert_eq!(login(&http, "alice", right).await.0, 200);

    // An account that does not exist pauses the same way, so pausing
    // tells no one which accounts exist.
    for n in 0..4 {
        forbidden(&login(&http, "nobody", &format!("guess-{n}")).await);
    }
    limited(&login(&http, "nobody", "guess-4").await);

    // Each pause is logged at warn with the account and the address, never
    // with a password.
    let log = server.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("password attempts for this account paused"))
        .collect();
    assert_eq!(lines.len(), 4, "{log}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("WARN") && l.contains("client=127.0.0.1")),
        "{log}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("@alice:localhost"))
            .count(),
        3,
        "{log}"
    );
    assert!(lines[3].contains("@nobody:localhost"), "{log}");
    assert!(
        !log.contains("guess-") && !log.contains(right),
        "no password in the log: {log}"
    );
}

/// A client whose requests come from `ip` (any 127.0.0.0/8 address reaches
/// the loopback listener), so each endpoint below gets its own address's
/// bucket.
fn client_from(ip: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip)
        .build()
        .unwrap()
}

#[tokio::test]
async fn every_unauthenticated_endpoint_is_limited_per_address() {
    let server = Server::start_configured(
        &["--allow-registration"],
        "[rate_limits]\nper_ip_per_second = 0.001\nper_ip_burst = 3.0\n",
        None,
    )
    .await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let endpoints: &[(&str, &str, Option<&str>)] = &[
        ("GET", "/_matrix/client/versions", None),
        ("GET", "/.well-known/matrix/client", None),
        ("GET", "/_matrix/client/v3/login", None),
        (
            "POST",
            "/_matrix/client/v3/login",
            Some(r#"{"type":"m.login.password","user":"alice","password":"x"}"#),
        ),
        ("POST", "/_matrix/client/v3/register", Some("{}")),
        (
            "GET",
            "/_matrix/client/v3/register/available?username=zed",
            None,
        ),
        (
            "GET",
            "/_matrix/client/v1/register/m.login.registration_token/validity?token=x",
            None,
        ),
        ("GET", "/_matrix/client/v3/profile/@alice:localhost", None),
        (
            "GET",
            "/_matrix/client/v3/profile/@alice:localhost/displayname",
            None,
        ),
        ("GET", "/_matrix/key/v2/server", None),
        ("GET", "/_matrix/client/v3/publicRooms", None),
        ("POST", "/_matrix/client/v3/publicRooms", Some("{}")),
        (
            "GET",
            "/_matrix/client/v3/directory/list/room/!r:localhost",
            None,
        ),
        ("GET", "/_hotline/v1/directory", None),
        (
            "POST",
            "/_hotline/v1/enrol/no-such-code",
            Some(r#"{"password":"x"}"#),
        ),
        ("GET", "/_matrix/client/v1/media/config", None),
        ("GET", "/_matrix/client/v3/account/whoami", None),
        ("GET", "/healthz", None),
        ("GET", "/_matrix/client/v3/no/such/endpoint", None),
    ];
    for (i, (method, path, body)) in endpoints.iter().enumerate() {
        let ip: IpAddr = format!("127.0.0.{}", 10 + i).parse().unwrap();
        let from = Http {
            client: client_from(ip),
            base: server.url.clone(),
        };
        for n in 0..3 {
            let r = from.call(method, path, None, *body).await;
            assert_ne!(r.0, 429, "{method} {path}: request {n} is within the burst");
        }
        let r = from.call(method, path, None, *body).await;
        assert!(limited(&r) > 0, "{method} {path}");
        // The address's limit is for requests without a valid token: a
        // signed-in user behind it is served.
        let (status, v) = from
            .call(
                "GET",
                "/_matrix/client/v3/account/whoami",
                Some(&alice),
                None,
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    // An address that sends unknown tokens instead is limited too (by its
    // failed token checks), not let through for carrying a token.
    let from = Http {
        client: client_from("127.0.0.200".parse().unwrap()),
        base: server.url.clone(),
    };
    let mut statuses = vec![];
    for n in 0..5 {
        let token = format!("hl_guess{n:034}");
        let r = from
            .call("GET", "/_matrix/client/versions", Some(&token), None)
            .await;
        statuses.push(r.0);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
}

#[tokio::test]
async fn the_server_key_answer_is_signed_once_and_served_until_half_its_validity() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let (status, first) = http.call("GET", "/_matrix/key/v2/server", None, None).await;
    assert_eq!(status, 200, "{first}");
    let valid_until = first["valid_until_ts"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(valid_until > now + 6 * 86_400_000, "{first}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Signed per request, `valid_until_ts` (now + 7 days) would have moved.
    let (_, second) = http.call("GET", "/_matrix/key/v2/server", None, None).await;
    assert_eq!(first, second);
    assert!(first["signatures"]["localhost"].is_object(), "{first}");
}

/// Reads until the server closes the connection or `limit` passes; returns
/// what was read and whether it closed.
async fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_connection_dribbling_its_headers_is_closed_after_the_header_timeout() {
    let server = Server::start_configured(&[], "header_read_timeout_seconds = 1\n", None).await;
    let mut tcp = connect(&server).await;
    let start = Instant::now();
    tcp.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    // One byte every 200 ms: data keeps coming, the headers never end.
    let closed = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if tcp.write_all(b"a").await.is_err() {
            break true;
        }
        if start.elapsed() > Duration::from_secs(6) {
            break false;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut probe)).await
        {
            break true;
        }
    };
    let took = start.elapsed();
    assert!(closed, "still open after {took:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // An idle kept-alive connection goes the same way.
    let mut tcp = connect(&server).await;
    tcp.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut tcp, Duration::from_secs(4)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        closed,
        "an idle connection is closed after the header timeout"
    );
}

#[tokio::test]
async fn a_stalled_body_is_answered_408_and_closed_while_long_polls_are_not_cut() {
    let server = Server::start_configured(
        &["--allow-registration"],
        "header_read_timeout_seconds = 1\nbody_read_timeout_seconds = 1\n",
        None,
    )
    .await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;

    let mut tcp = connect(&server).await;
    let start = Instant::now();
    tcp.write_all(
        b"POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":",
    )
    .await
    .unwrap();
    let (answer, closed) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    let took = start.elapsed();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "{answer:?} after {took:?}"
    );
    assert!(answer.contains("M_UNKNOWN"), "{answer}");
    assert!(closed, "closed after the 408");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );

    // A body that arrives slowly but steadily is read to the end: the
    // timeout bounds each wait, not the whole body.
    let body = br#"{"type":"m.login.password","user":"alice","password":"correct horse"}"#;
    let mut tcp = connect(&server).await;
    tcp.write_all(
        format!(
            "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    for chunk in body.chunks(body.len() / 4 + 1) {
        tokio::time::sleep(Duration::from_millis(600)).await;
        tcp.write_all(chunk).await.unwrap();
    }
    let (answer, _) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A /sync long-poll outlasts both timeouts.
    let (status, v) = http
        .call("GET", "/_matrix/client/v3/sync", Some(&alice), None)
        .await;
    assert_eq!(status, 200, "{v}");
    let since = v["next_batch"].as_str().unwrap().to_owned();
    let start = Instant::now();
    let (status, v) = http
        .call(
            "GET",
            &format!("/_matrix/client/v3/sync?since={since}&timeout=2500"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(start.elapsed() >= Duration::from_millis(2400));
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let server = Server::start_configured(&[], "max_connections = 3\n", None).await;
    // Let the start-up probe's connection close and free its slot.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut holders = Vec::new();
    for _ in 0..3 {
        holders.push(connect(&server).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The fourth connects (the kernel's backlog takes it) but is not served.
    let mut fourth = connect(&server).await;
    fourth
        .write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut fourth, Duration::from_millis(1500)).await;
    assert_eq!(answer, "", "served past the cap");
    // One holder leaves: the waiting connection is served.
    drop(holders.pop());
    let (answer, _) = read_until_closed(&mut fourth, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

#[tokio::test]
async fn metrics_are_not_served_on_the_main_listener_by_default() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let (status, v) = http.call("GET", "/metrics", None, None).await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (404, Some("M_UNRECOGNIZED")),
        "{v}"
    );
}

#[tokio::test]
async fn metrics_need_the_token_on_the_main_listener_or_their_own_address() {
    let metrics_port = common::unused_port();
    let server = Server::start_configured(
        &["--allow-registration"],
        &format!(
            "metrics_token = \"m3trics-s3cret\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n"
        ),
        None,
    )
    .await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let r = http.call("GET", "/metrics", None, None).await;
    assert_eq!(
        (r.0, r.1["errcode"].as_str()),
        (401, Some("M_MISSING_TOKEN"))
    );
    // An access token is not the metrics token.
    let r = http.call("GET", "/metrics", Some(&alice), None).await;
    forbidden(&r);
    let r = http
        .call("GET", "/metrics", Some("m3trics-s3cret"), None)
        .await;
    assert_eq!(r.0, 200);
    assert!(
        r.1.as_str().unwrap().contains("hotline_stream_position "),
        "{}",
        r.1
    );

    let own = Http::new(&format!("http://127.0.0.1:{metrics_port}"));
    let (status, text) = own.call("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let text = text.as_str().unwrap();
    // The same counters: it saw the registration on the main listener.
    assert!(
        text.contains("path=\"/_matrix/client/v3/register\",status=\"200\"} 1"),
        "{text}"
    );
    // It serves nothing else.
    let (status, _) = own
        .call("GET", "/_matrix/client/versions", None, None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn media_downloads_and_thumbnails_are_served_nosniff_in_a_sandbox() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let token = http.register("alice").await;
    let mut png = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image::RgbImage::new(64, 64))
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let resp = http
        .client
        .post(format!("{}/_matrix/media/v3/upload", server.url))
        .bearer_auth(&token)
        .header("content-type", "image/png")
        .body(png.into_inner())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let id = v["content_uri"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    for path in [
        format!("/_matrix/client/v1/media/download/localhost/{id}"),
        format!("/_matrix/client/v1/media/download/localhost/{id}/page.html"),
        format!("/_matrix/client/v1/media/thumbnail/localhost/{id}?width=32&height=32"),
    ] {
        let resp = http
            .client
            .get(format!("{}{path}", server.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(
            h["content-security-policy"], "sandbox; default-src 'none'",
            "{path}"
        );
    }
}
