//! The `hotline` command as an operator uses it: a bare `hotline` is
//! `hotline serve` with every setting from flags, environment variables or
//! the file, and `admin create-user` can take its password on stdin.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the server when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `/versions` answers on `port`.
async fn answers(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) =
            reqwest::get(format!("http://127.0.0.1:{port}/_matrix/client/versions")).await
        {
            if r.status().is_success() {
                return;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "the server exited");
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn register(port: u16, name: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/_matrix/client/v3/register"))
        .body(
            serde_json::json!({"username": name, "password": "pw", "auth": {"type": "m.login.dummy"}})
                .to_string(),
        )
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_bare_hotline_serves_with_settings_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_hotline"))
        .env("HOTLINE_DATA_DIR", dir.path())
        .env("HOTLINE_LISTEN", format!("127.0.0.1:{port}"))
        .env("HOTLINE_ALLOW_REGISTRATION", "true")
        .env("HOTLINE_SERVER_NAME", "env.example")
        .env("HOTLINE_MAX_REQUEST_BYTES", "4096")
        .env("HOTLINE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Running(child);
    answers(port, &mut server.0).await;

    // Open registration came from the environment, and the server name too.
    assert_eq!(register(port, "alice").await, 200);
    let login: serde_json::Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/_matrix/client/v3/login"))
        .body(r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"pw"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(login["user_id"], "@alice:env.example", "{login}");
    // So did the request size limit.
    let token = login["access_token"].as_str().unwrap();
    let big = format!(r#"{{"big":"{}"}}"#, "x".repeat(5000));
    let r = reqwest::Client::new()
        .put(format!(
            "http://127.0.0.1:{port}/_matrix/client/v3/user/@alice:env.example/account_data/x.big"
        ))
        .bearer_auth(token)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // The database is where the environment said.
    assert!(dir.path().join("hotline.db").exists());
}

#[tokio::test]
async fn serve_flags_work_before_and_after_serve() {
    for before in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hotline"));
        cmd.env("HOTLINE_LOG", "warn").stdout(Stdio::null());
        let flags = [
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            &listen,
        ];
        if before {
            cmd.args(flags).arg("--allow-registration");
        } else {
            cmd.arg("serve").args(flags).arg("--allow-registration");
        }
        let mut server = Running(cmd.spawn().unwrap());
        answers(port, &mut server.0).await;
        assert_eq!(
            register(port, "bob").await,
            200,
            "flags before serve: {before}"
        );
    }
}

#[tokio::test]
async fn a_malformed_setting_stops_the_server_with_a_message_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_hotline"))
        .env("HOTLINE_RATE_LIMITS__PER_IP_BURST", "plenty")
        .env("HOTLINE_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HOTLINE_RATE_LIMITS__PER_IP_BURST"),
        "{stderr}"
    );
}

#[tokio::test]
async fn create_user_reads_the_password_from_stdin_when_not_given() {
    let dir = tempfile::tempdir().unwrap();
    let mut admin = Command::new(env!("CARGO_BIN_EXE_hotline"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["admin", "create-user", "carol"])
        .env("HOTLINE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    admin
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\n")
        .unwrap();
    let out = admin.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("@carol:localhost"));

    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_hotline"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("HOTLINE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Running(child);
    answers(port, &mut server.0).await;
    let login = |password: &'static str| async move {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/_matrix/client/v3/login"))
            .body(
                serde_json::json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "carol"}, "password": password})
                    .to_string(),
            )
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(
        login("from stdin").await,
        200,
        "the line, without its newline"
    );
    assert_eq!(login("from stdin\n").await, 403);
}

async fn call(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut r = reqwest::Client::new().request(
        method.parse().unwrap(),
        format!("http://127.0.0.1:{port}/_matrix/client/v3{path}"),
    );
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.body(b.to_string());
    }
    let resp = r.send().await.unwrap();
    assert!(
        resp.status().is_success(),
        "{method} {path}: {}",
        resp.status()
    );
    resp.json().await.unwrap()
}

fn serve(dir: &std::path::Path, port: u16) -> Running {
    Running(
        Command::new(env!("CARGO_BIN_EXE_hotline"))
            .arg("--data-dir")
            .arg(dir)
            .args([
                "serve",
                "--allow-registration",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env("HOTLINE_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test]
async fn devices_show_when_and_from_where_they_were_last_seen_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = serve(dir.path(), port);
    answers(port, &mut server.0).await;
    let reg = call(
        port,
        "POST",
        "/register",
        None,
        Some(serde_json::json!(
        {"username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}})),
    )
    .await;
    let (first, first_device) = (
        reg["access_token"].as_str().unwrap().to_owned(),
        reg["device_id"].clone(),
    );
    let login = call(port, "POST", "/login", None, Some(serde_json::json!(
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw"}))).await;
    let second = login["access_token"].as_str().unwrap().to_owned();

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let devices = call(port, "GET", "/devices", Some(&first), None).await;
    let d = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == first_device)
        .unwrap()
        .clone();
    assert_eq!(d["last_seen_ip"], "127.0.0.1", "{devices}");
    assert!(
        d["last_seen_ts"].as_i64().unwrap() >= before - 60_000,
        "{devices}"
    );

    // A clean stop writes what was noted; the other device reads it back.
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(server.0.wait().unwrap().success());
    let mut server = serve(dir.path(), port);
    answers(port, &mut server.0).await;
    let d = call(
        port,
        "GET",
        &format!("/devices/{}", first_device.as_str().unwrap()),
        Some(&second),
        None,
    )
    .await;
    assert_eq!(d["last_seen_ip"], "127.0.0.1", "{d}");
}
