//! Starts a real `hotline serve` on a free loopback port with its own data
//! directory, and stops it (or kills it) on request.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub url: String,
    pub port: u16,
    pub data: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    child: Option<Child>,
    extra: Vec<String>,
    /// Where the server's log (its stderr) goes, with the filter it runs
    /// at; `None` passes it through at `HOTLINE_TEST_LOG` (default `warn`).
    log: Option<(PathBuf, String)>,
    /// The PostgreSQL database of this server (see [`test_database`]);
    /// `None`: SQLite in the data directory.
    pub database: Option<TestDatabase>,
}

/// A database of its own on the tests' PostgreSQL server, dropped with it
/// (by the server that made it, when several share it).
pub struct TestDatabase {
    pub url: String,
    name: String,
    server: String,
    owned: bool,
}

impl TestDatabase {
    /// The same database, for another server process; only the first
    /// drops it.
    pub fn share(&self) -> TestDatabase {
        TestDatabase {
            url: self.url.clone(),
            name: self.name.clone(),
            server: self.server.clone(),
            owned: false,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.owned {
            let _ = psql(
                &self.server,
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            );
        }
    }
}

fn psql(server: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-qtAX", "-v", "ON_ERROR_STOP=1", server, "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Whether the servers of the tests run on PostgreSQL
/// (`HOTLINE_TEST_ENGINE=postgres`; `scripts/test.sh` runs the suite on
/// each engine).
pub fn on_postgres() -> bool {
    std::env::var("HOTLINE_TEST_ENGINE").as_deref() == Ok("postgres")
}

/// On PostgreSQL, a new database for a server, on the server that
/// `HOTLINE_TEST_POSTGRES` names (`postgres://USER@HOST:PORT/DB`).
pub fn test_database() -> Option<TestDatabase> {
    on_postgres().then(postgres_database)
}

/// A new database on the tests' PostgreSQL server (`HOTLINE_TEST_POSTGRES`,
/// set by `scripts/test.sh` for both engines' passes), whichever engine
/// the other tests run on: for tests of PostgreSQL itself.
pub fn postgres_database() -> TestDatabase {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let server = std::env::var("HOTLINE_TEST_POSTGRES")
        .expect("HOTLINE_TEST_POSTGRES names the PostgreSQL server of the tests");
    let name = format!(
        "t_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    psql(&server, &format!("CREATE DATABASE {name}"));
    let (head, _) = server.rsplit_once('/').expect("a database URL");
    TestDatabase {
        url: format!("{head}/{name}"),
        name,
        server,
        owned: true,
    }
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port`
/// (Linux: the socket's inode in `/proc/net/tcp` among the process's fds).
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    // local_address is "0100007F:PORT" in hex; state 0A is LISTEN.
    let local = format!("0100007F:{port:04X}");
    let Some(inode) = table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| f[9].to_owned())
    }) else {
        return false;
    };
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy() == want))
        })
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(&["--allow-registration"]).await
    }

    pub async fn start_with(args: &[&str]) -> Server {
        Self::start_in_tmp(args, test_database()).await
    }

    /// Like [`Server::start_with`], on SQLite whatever the tests' engine
    /// (what the test checks is SQLite's: its files, its backup).
    pub async fn start_sqlite(args: &[&str]) -> Server {
        Self::start_in_tmp(args, None).await
    }

    /// A server on a new temporary data directory and `database`.
    async fn start_in_tmp(args: &[&str], database: Option<TestDatabase>) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Server {
            url: String::new(),
            port: 0,
            data: tmp.path().to_path_buf(),
            _tmp: Some(tmp),
            child: None,
            extra: args.iter().map(|s| s.to_string()).collect(),
            log: None,
            database,
        };
        s.spawn().await;
        s
    }

    /// Like [`Server::start`], with the server's log written to a file
    /// beside the data directory at the given `HOTLINE_LOG` filter.
    pub async fn start_logging(filter: &str) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut s = Server {
            url: String::new(),
            port: 0,
            log: Some((tmp.path().join("server.log"), filter.to_owned())),
            data,
            _tmp: Some(tmp),
            child: None,
            extra: vec!["--allow-registration".into()],
            database: test_database(),
        };
        s.spawn().await;
        s
    }

    /// Everything the server has logged so far (see [`Server::start_logging`]).
    pub fn log_text(&self) -> String {
        let (path, _) = self.log.as_ref().expect("started with start_logging");
        std::fs::read_to_string(path).unwrap()
    }

    /// Runs `hotline admin ...` against this server's data directory.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = self.command().arg("admin").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "admin failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Runs `hotline admin ...` with this server's configuration file too
    /// (a server started with [`Server::start_configured`]).
    pub fn admin_configured(&self, args: &[&str]) -> String {
        let config = self
            .extra
            .iter()
            .skip_while(|a| *a != "--config")
            .take(2)
            .cloned()
            .collect::<Vec<_>>();
        let out = self
            .command()
            .args(&config)
            .arg("admin")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "admin failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// The configuration file of a server started with
    /// [`Server::start_configured`] (rewrite it, then restart the server).
    pub fn config_path(&self) -> PathBuf {
        let at = self.extra.iter().position(|a| a == "--config").unwrap();
        PathBuf::from(&self.extra[at + 1])
    }

    /// `hotline --data-dir DATA`, on this server's database.
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hotline"));
        c.arg("--data-dir").arg(&self.data);
        match &self.database {
            Some(db) => c.env("HOTLINE_DATABASE", &db.url),
            None => c.env_remove("HOTLINE_DATABASE"),
        };
        c
    }

    /// Starts the server on a free port. A port is free when chosen, but
    /// another test's process may take it before this one binds it; then
    /// this one exits (or the other answers), and another port is tried.
    pub async fn spawn(&mut self) {
        for _ in 0..5 {
            if self.spawn_once().await {
                return;
            }
            self.kill9();
        }
        panic!("server did not start on any of five ports");
    }

    /// One try of [`Server::spawn`]: whether the server that answers on
    /// the chosen port is this child.
    async fn spawn_once(&mut self) -> bool {
        self.port = free_port();
        self.url = format!("http://127.0.0.1:{}", self.port);
        let child = self
            .command()
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.extra)
            .env(
                "HOTLINE_LOG",
                match &self.log {
                    Some((_, filter)) => filter.clone(),
                    None => std::env::var("HOTLINE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
                },
            )
            .stdout(Stdio::null())
            .stderr(match &self.log {
                // Appended: a restarted server adds to the same log.
                Some((path, _)) => Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .unwrap(),
                ),
                None => Stdio::inherit(),
            })
            .spawn()
            .expect("hotline binary runs");
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            if listens_on(pid, self.port) {
                if let Ok(r) = reqwest::get(format!("{}/_matrix/client/versions", self.url)).await {
                    if r.status().is_success() {
                        return true;
                    }
                }
            }
            assert!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: no shutdown, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Raw HTTP helper for error-shape tests.
/// What [`Http::get_bytes`] got.
#[derive(Debug)]
pub struct MediaAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub disposition: Option<String>,
    pub body: Vec<u8>,
}

impl MediaAnswer {
    /// The body as a Matrix error's JSON (for failures).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A `w` × `h` PNG, a gradient (so it compresses like a picture, not to
/// nothing).
pub fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 128])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

pub struct Http {
    pub client: reqwest::Client,
    pub base: String,
}

impl Http {
    pub fn new(base: &str) -> Self {
        Http {
            client: reqwest::Client::new(),
            base: base.to_owned(),
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// Uploads `bytes` as `content_type` named `filename`; the `mxc://` URI.
    pub async fn upload(
        &self,
        token: &str,
        bytes: Vec<u8>,
        content_type: &str,
        filename: &str,
    ) -> String {
        let resp = self
            .client
            .post(format!(
                "{}/_matrix/media/v3/upload?filename={filename}",
                self.base
            ))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: serde_json::Value = resp.json().await.unwrap();
        v["content_uri"].as_str().unwrap().to_owned()
    }

    /// A `GET` answered with bytes (media): the status, the `Content-Type`
    /// and `Content-Disposition` headers, and the body.
    pub async fn get_bytes(&self, path: &str, token: &str) -> MediaAnswer {
        let resp = self
            .client
            .get(format!("{}{}", self.base, path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let header = |name| {
            resp.headers()
                .get(name)
                .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned())
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let disposition = header(reqwest::header::CONTENT_DISPOSITION);
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap().to_vec();
        MediaAnswer {
            status,
            content_type,
            disposition,
            body,
        }
    }

    /// The device `token` belongs to (`/account/whoami`).
    pub async fn device_id(&self, token: &str) -> String {
        self.whoami(token).await["device_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The user `token` belongs to (`/account/whoami`).
    pub async fn user_id(&self, token: &str) -> String {
        self.whoami(token).await["user_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn whoami(&self, token: &str) -> serde_json::Value {
        let (status, who) = self
            .call(
                "GET",
                "/_matrix/client/v3/account/whoami",
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, 200, "whoami: {who}");
        who
    }

    /// Registers `name` with open registration; returns the access token.
    pub async fn register(&self, name: &str) -> String {
        let body = serde_json::json!({"username": name, "password": "correct horse", "auth": {"type": "m.login.dummy"}});
        let (status, v) = self
            .call(
                "POST",
                "/_matrix/client/v3/register",
                None,
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(status, 200, "register {name}: {v}");
        v["access_token"].as_str().unwrap().to_owned()
    }

    /// Sends a text; answers its event id.
    pub async fn send_text(&self, token: &str, room: &str, txn: &str, body: &str) -> String {
        let (status, v) = self
            .call(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
                Some(token),
                Some(&serde_json::json!({"msgtype": "m.text", "body": body}).to_string()),
            )
            .await;
        assert_eq!(status, 200, "send: {v}");
        v["event_id"].as_str().unwrap().to_owned()
    }

    /// The texts of a room's timeline as `token` reads them, oldest first.
    pub async fn texts(&self, token: &str, room: &str) -> Vec<String> {
        let (status, v) = self
            .call(
                "GET",
                &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, 200, "messages: {v}");
        let mut out: Vec<String> = v["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect();
        out.reverse();
        out
    }

    /// Every text of `room` as `token` reads it paging back `limit` at a
    /// time from the newest (`/messages` until it gives no `end`), oldest
    /// first.
    pub async fn texts_paging_back(&self, token: &str, room: &str, limit: u32) -> Vec<String> {
        let mut texts = Vec::new();
        let mut from = String::new();
        for _ in 0..100 {
            let (status, v) = self
                .call(
                    "GET",
                    &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit={limit}{from}"),
                    Some(token),
                    None,
                )
                .await;
            assert_eq!(status, 200, "messages: {v}");
            texts.extend(
                v["chunk"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|e| e["type"] == "m.room.message")
                    .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)),
            );
            match v["end"].as_str() {
                Some(end) => from = format!("&from={end}"),
                None => {
                    texts.reverse();
                    return texts;
                }
            }
        }
        panic!("paging back never ended");
    }

    /// Waits (up to `secs`) until `token` reads `want` as the room's texts.
    pub async fn wait_for_texts(&self, token: &str, room: &str, want: &[&str], secs: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let got = self.texts(token, room).await;
            if got == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "expected {want:?}, read {got:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Waits until `room`'s state event `kind` (empty state key) has
    /// `field` equal to `want`, as `token` reads it.
    pub async fn wait_for_state(
        &self,
        token: &str,
        room: &str,
        kind: &str,
        field: &str,
        want: &str,
        secs: u64,
    ) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        let path = format!("/_matrix/client/v3/rooms/{room}/state/{kind}/");
        loop {
            let (status, v) = self.call("GET", &path, Some(token), None).await;
            if status == 200 && v[field] == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "expected {kind} with {field} {want:?}, read {status} {v}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub async fn create_public_room(&self, token: &str) -> String {
        let (status, v) = self
            .call(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(token),
                Some(r#"{"preset": "public_chat"}"#),
            )
            .await;
        assert_eq!(status, 200, "createRoom: {v}");
        v["room_id"].as_str().unwrap().to_owned()
    }

    /// Creates a room anyone may knock on (join rule `knock`) of room
    /// `version`; returns its id.
    pub async fn create_knock_room(&self, token: &str, version: &str) -> String {
        let body = serde_json::json!({
            "room_version": version,
            "initial_state": [{
                "type": "m.room.join_rules", "state_key": "",
                "content": {"join_rule": "knock"},
            }],
        });
        self.create_room_with(token, &body).await
    }

    /// Creates a room from a `createRoom` body; returns its id.
    pub async fn create_room_with(&self, token: &str, body: &serde_json::Value) -> String {
        let (status, v) = self
            .call(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(token),
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(status, 200, "createRoom {body}: {v}");
        v["room_id"].as_str().unwrap().to_owned()
    }

    /// Creates a room with the defaults; returns its id.
    pub async fn create_room(&self, token: &str) -> String {
        let (status, v) = self
            .call(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(token),
                Some("{}"),
            )
            .await;
        assert_eq!(status, 200, "createRoom: {v}");
        v["room_id"].as_str().unwrap().to_owned()
    }
}

/// Every `(file, needle)` where a needle occurs in a file under `dir`
/// (the database, its WAL, media...), read as raw bytes.
///
/// On PostgreSQL ([`on_postgres`]) the cluster's write-ahead log and every
/// database's files are read too (`HOTLINE_TEST_POSTGRES_DIR` names the
/// cluster's directory), after a checkpoint has written the tables out.
pub fn scan_for_plaintext(dir: &std::path::Path, needles: &[&str]) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    if on_postgres() {
        let cluster = std::env::var("HOTLINE_TEST_POSTGRES_DIR")
            .expect("HOTLINE_TEST_POSTGRES_DIR names the tests' PostgreSQL cluster directory");
        let server = std::env::var("HOTLINE_TEST_POSTGRES").unwrap();
        psql(&server, "CHECKPOINT");
        let cluster = PathBuf::from(cluster);
        stack.push(cluster.join("pg_wal"));
        stack.push(cluster.join("base"));
    }
    // Other tests run beside this one on the same PostgreSQL cluster: they
    // drop their databases and the cluster recycles WAL segments, so a
    // directory or file listed a moment ago may be gone. Whatever vanished
    // is skipped; anything else that cannot be read fails the scan.
    fn vanished<T>(r: std::io::Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("plaintext scan: {e}"),
        }
    }
    let mut files = 0;
    while let Some(d) = stack.pop() {
        let Some(entries) = vanished(std::fs::read_dir(&d)) else {
            continue;
        };
        for entry in entries {
            let Some(entry) = vanished(entry) else {
                continue;
            };
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            // A socket (the server's office.sock) holds no bytes at rest.
            if !vanished(entry.file_type()).is_some_and(|t| t.is_file()) {
                continue;
            }
            let Some(bytes) = vanished(std::fs::read(&path)) else {
                continue;
            };
            files += 1;
            for n in needles {
                if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                    found.push((path.clone(), n.to_string()));
                }
            }
        }
    }
    assert!(files > 0, "the scan read no files in {}", dir.display());
    found
}

/// Registers `name` with `password` through a `matrix-sdk` client (open
/// registration, `m.login.dummy`), without signing in.
pub async fn sdk_register(url: &str, name: &str, password: &str) {
    use matrix_sdk::ruma::api::client::account::register::v3::Request;
    use matrix_sdk::ruma::api::client::uiaa::{AuthData, Dummy};
    let client = matrix_sdk::Client::builder()
        .homeserver_url(url)
        .build()
        .await
        .unwrap();
    let mut req = Request::new();
    req.username = Some(name.to_owned());
    req.password = Some(password.to_owned());
    req.auth = Some(AuthData::Dummy(Dummy::new()));
    req.inhibit_login = true;
    client.matrix_auth().register(req).await.unwrap();
}

/// The password officials set when they redeem their enrolment in tests.
pub const OFFICIAL_PW: &str = "long enough password";

impl Server {
    /// Enrols an official with `hotline admin enroll` (`role` is
    /// `principal` or `aide`; an aide serves `principal`), valid for
    /// `hours`; returns the one-time enrolment code.
    pub fn enroll(
        &self,
        user: &str,
        name: &str,
        role: &str,
        principal: Option<&str>,
        hours: &str,
    ) -> String {
        let mut args = vec![
            "enroll",
            user,
            "--name",
            name,
            "--title",
            "President",
            "--country",
            "Freedonia",
            "--office",
            "Office of the President",
            "--role",
            role,
            "--hours",
            hours,
        ];
        if let Some(p) = principal {
            args.extend(["--principal", p]);
        }
        let out = self.admin(&args);
        out.lines()
            .find_map(|l| l.strip_prefix("code "))
            .unwrap()
            .to_owned()
    }
}

impl Http {
    /// Redeems an enrolment code with [`OFFICIAL_PW`].
    pub async fn redeem_enrolment(&self, code: &str) -> (u16, serde_json::Value) {
        self.call(
            "POST",
            &format!("/_hotline/v1/enrol/{code}"),
            None,
            Some(&serde_json::json!({ "password": OFFICIAL_PW }).to_string()),
        )
        .await
    }

    /// Enrols an official and redeems the code; returns their access token.
    pub async fn enrolled(
        &self,
        server: &Server,
        user: &str,
        name: &str,
        role: &str,
        principal: Option<&str>,
    ) -> String {
        let code = server.enroll(user, name, role, principal, "72");
        let (s, v) = self.redeem_enrolment(&code).await;
        assert_eq!(s, 200, "{v}");
        v["access_token"].as_str().unwrap().to_owned()
    }

    /// Creates a line invite as `office` (a principal or their aide) with
    /// the options in `body`; returns the invite.
    pub async fn create_line_invite(
        &self,
        office: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let (s, inv) = self
            .call(
                "POST",
                "/_hotline/v1/line_invites",
                Some(office),
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(s, 200, "{inv}");
        inv
    }

    /// Creates a line invite as `office` and redeems it as `principal`;
    /// returns the line's room id.
    pub async fn open_line(&self, office: &str, principal: &str) -> String {
        let inv = self.create_line_invite(office, serde_json::json!({})).await;
        let (s, v) = self
            .call(
                "POST",
                &format!(
                    "/_hotline/v1/line_invites/{}/redeem",
                    inv["code"].as_str().unwrap()
                ),
                Some(principal),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["room_id"].as_str().unwrap().to_owned()
    }
}

/// The people of a line on one server: two principals holding it (Emmanuel
/// Macron, Olaf Scholz), an aide of Macron's (Marie Aide) and a stranger;
/// their access tokens and the line's room.
pub struct LineCast {
    pub macron: String,
    pub scholz: String,
    pub aide: String,
    pub stranger: String,
    pub line: String,
}

impl Http {
    /// Enrols the [`LineCast`] on `server` and opens the line.
    pub async fn line_cast(&self, server: &Server) -> LineCast {
        let macron = self
            .enrolled(server, "macron", "Emmanuel Macron", "principal", None)
            .await;
        let scholz = self
            .enrolled(server, "scholz", "Olaf Scholz", "principal", None)
            .await;
        let aide = self
            .enrolled(server, "aide", "Marie Aide", "aide", Some("macron"))
            .await;
        let stranger = self.register("stranger").await;
        let line = self.open_line(&macron, &scholz).await;
        LineCast {
            macron,
            scholz,
            aide,
            stranger,
            line,
        }
    }

    /// `principal` brings their aide `aide` onto `line`
    /// (`PUT /_hotline/v1/lines/{line}/aides/{aide}`), and the aide, signed
    /// in as `aide_token`, joins it.
    pub async fn bring_aide(&self, principal: &str, line: &str, aide: &str, aide_token: &str) {
        let (s, v) = self
            .call(
                "PUT",
                &format!("/_hotline/v1/lines/{line}/aides/{aide}"),
                Some(principal),
                Some("{}"),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let (s, v) = self
            .call(
                "POST",
                &format!("/_matrix/client/v3/join/{line}"),
                Some(aide_token),
                Some("{}"),
            )
            .await;
        assert_eq!(s, 200, "the aide joins: {v}");
    }

    /// Signs `user` in with `password`; the access token.
    pub async fn login(&self, user: &str, password: &str) -> String {
        let body = serde_json::json!({"type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user}, "password": password});
        let (s, v) = self
            .call(
                "POST",
                "/_matrix/client/v3/login",
                None,
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["access_token"].as_str().unwrap().to_owned()
    }
}

/// Polls `check` every 100 ms until it answers `Ok` (its value), for up to
/// `secs`; then fails with its last `Err`.
pub async fn within<T, F, Fut>(secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match check().await {
            Ok(v) => return v,
            Err(why) => assert!(Instant::now() < deadline, "{why}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status and `errcode` of a response.
pub fn status_errcode(r: &(u16, serde_json::Value)) -> (u16, &str) {
    (r.0, r.1["errcode"].as_str().unwrap_or(""))
}

/// Signs an official in with `matrix-sdk` ([`OFFICIAL_PW`]), its end-to-end
/// encryption set up.
pub async fn sdk_login_official(url: &str, user: &str) -> matrix_sdk::Client {
    let c = matrix_sdk::Client::builder()
        .homeserver_url(url)
        .build()
        .await
        .unwrap();
    c.matrix_auth()
        .login_username(user, OFFICIAL_PW)
        .send()
        .await
        .unwrap();
    c.encryption().wait_for_e2ee_initialization_tasks().await;
    c
}

/// User-interactive auth with an official's password.
pub fn official_password(user: &str) -> matrix_sdk::ruma::api::client::uiaa::AuthData {
    use matrix_sdk::ruma::api::client::uiaa::{AuthData, Password, UserIdentifier};
    AuthData::Password(Password::new(
        UserIdentifier::from(matrix_sdk::ruma::UserId::parse(user).unwrap()),
        OFFICIAL_PW.to_owned(),
    ))
}

/// The user's current cross-signing master key, as `/keys/query` shows it.
pub async fn master_key(http: &Http, token: &str, user: &str) -> String {
    let (_, v) = http
        .call(
            "POST",
            "/_matrix/client/v3/keys/query",
            Some(token),
            Some(&serde_json::json!({"device_keys": {user: []}}).to_string()),
        )
        .await;
    v["master_keys"][user]["keys"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// Signs the official `localpart` in with `matrix-sdk`, creates their
/// cross-signing keys, and has their office vouch for the master key
/// (`hotline admin vouch`). Keep the client while the device is needed.
pub async fn vouched(
    server: &Server,
    http: &Http,
    token: &str,
    localpart: &str,
) -> matrix_sdk::Client {
    let user = format!("@{localpart}:localhost");
    let client = sdk_login_official(&server.url, localpart).await;
    client
        .encryption()
        .bootstrap_cross_signing(Some(official_password(&user)))
        .await
        .unwrap();
    let key = master_key(http, token, &user).await;
    server.admin(&["vouch", localpart, "--master-key", &key]);
    client
}
impl Server {
    /// Starts a server on an existing data directory that the caller owns
    /// (a mount made by the test, a restored backup); nothing is removed
    /// when the server is dropped. With `log`, its log is appended to that
    /// file at that `HOTLINE_LOG` filter (see [`Server::log_text`]).
    pub async fn start_in(data: PathBuf, args: &[&str], log: Option<(PathBuf, &str)>) -> Server {
        let mut s = Server {
            url: String::new(),
            port: 0,
            data,
            _tmp: None,
            child: None,
            extra: args.iter().map(|s| s.to_string()).collect(),
            log: log.map(|(path, filter)| (path, filter.to_owned())),
            // A data directory the caller made holds its own SQLite database.
            database: None,
        };
        s.spawn().await;
        s
    }
}
impl Server {
    /// Like [`Server::start_with`], with `toml` as its configuration file
    /// (kept for restarts) and, given a `HOTLINE_LOG` filter, its log kept
    /// for [`Server::log_text`].
    pub async fn start_configured(args: &[&str], toml: &str, log_filter: Option<&str>) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = tmp.path().join("hotline.toml");
        std::fs::write(&cfg, toml).unwrap();
        let mut extra: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        extra.push("--config".into());
        extra.push(cfg.to_str().unwrap().to_owned());
        let mut s = Server {
            url: String::new(),
            port: 0,
            data: tmp.path().join("data"),
            log: log_filter.map(|f| (tmp.path().join("server.log"), f.to_owned())),
            _tmp: Some(tmp),
            child: None,
            extra,
            database: test_database(),
        };
        s.spawn().await;
        s
    }
}

/// A loopback port nothing listens on yet.
pub fn unused_port() -> u16 {
    free_port()
}

impl Server {
    /// A server process on `database` (PostgreSQL) and `data` (its media and
    /// signing key), which other processes may share.
    pub async fn start_on(data: PathBuf, database: TestDatabase, args: &[&str]) -> Server {
        let mut s = Server {
            url: String::new(),
            port: 0,
            data,
            _tmp: None,
            child: None,
            extra: args.iter().map(|s| s.to_string()).collect(),
            log: None,
            database: Some(database),
        };
        s.spawn().await;
        s
    }
}

impl TestDatabase {
    /// The answer of one SQL statement on this database (`psql -tA`).
    pub fn query(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }
}

impl Server {
    /// The EDUs the server holds queued for `destination`, oldest first,
    /// read from its store beside it (as `hotline admin` reads it).
    pub fn queued_edus(&self, destination: &str) -> Vec<serde_json::Value> {
        let lines: Vec<String> = match &self.database {
            Some(db) => db
                .query(&format!(
                    "SELECT edu FROM federation_edu_outbox WHERE destination = '{destination}' ORDER BY seq"
                ))
                .lines()
                .map(str::to_owned)
                .collect(),
            None => {
                use hotline_store::FederationStore;
                let store = hotline_store::SqliteStore::open(
                    self.data.join("hotline.db"),
                    hotline_store::Durability::Normal,
                )
                .unwrap();
                let queued = store.federation_edu_outbox(destination, 0, 10_000).unwrap();
                store.close();
                queued.into_iter().map(|q| q.edu).collect()
            }
        };
        lines
            .iter()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Stops the server as an operator does (SIGTERM: it finishes, flushes
    /// and closes the store) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let ok = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "kill -TERM");
            let status = c.wait().unwrap();
            assert!(status.success(), "the server exited with {status}");
        }
    }

    /// Starts the server again on the same data directory, its database
    /// now `db` (PostgreSQL) instead of the one it had.
    pub async fn restart_on(&mut self, db: TestDatabase) {
        self.stop();
        self.database = Some(db);
        self.spawn().await;
    }
}

/// A certificate authority of the test's own, and the certificates it
/// signs for federation listeners on loopback (no system trust touched:
/// servers are given its certificate as `[federation] ca_file`).
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // A name of its own (a leaf with its issuer's name looks
        // self-issued to OpenSSL, which Synapse verifies with) and the key
        // usage of a CA.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Hotline test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, issuer.pem()).unwrap();
        TestCa {
            issuer,
            dir,
            ca_file,
        }
    }

    /// A certificate for `names` (IP addresses become IP SANs), and its
    /// key (PKCS#8, ECDSA P-256), written to files named after `label`.
    pub fn issue(&self, label: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, label);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_file = self.dir.path().join(format!("{label}.crt"));
        let key_file = self.dir.path().join(format!("{label}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}

/// A Hotline server with federation on, named `127.0.0.1:PORT` after its
/// federation port (an IP-literal server name: no DNS, no SNI).
pub struct FederatedServer {
    pub server: Server,
    pub name: String,
    pub fed_port: u16,
}

impl FederatedServer {
    /// The federation port a server will have, and so its name, before it
    /// starts (peers' allow-lists name each other).
    pub fn reserve() -> (u16, String) {
        // Outside the kernel's ephemeral range (32768-60999 by default),
        // where outgoing connections and port-0 listeners take their ports:
        // a server's name is its port, so it cannot try another when one of
        // those takes it first. Each port is handed out once per process.
        use rand::Rng;
        static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
        loop {
            let port = rand::thread_rng().gen_range(20_000..32_000);
            let mut handed_out = HANDED_OUT.lock().unwrap();
            if handed_out.contains(&port)
                || std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
            {
                continue;
            }
            handed_out.push(port);
            return (port, format!("127.0.0.1:{port}"));
        }
    }

    /// Starts a server on `port` (from [`FederatedServer::reserve`]) that
    /// federates with `allow`, with a certificate from `ca`; `extra` is
    /// added to its configuration's top level.
    pub async fn start(ca: &TestCa, port: u16, allow: &[&str], extra: &str) -> FederatedServer {
        let name = format!("127.0.0.1:{port}");
        let (cert, key) = ca.issue(&format!("server-{port}"), &["127.0.0.1"]);
        let allow = allow
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let toml = format!(
            "server_name = {name:?}\nallow_registration = true\n{extra}\n\
             [federation]\nenabled = true\nlisten = {name:?}\n\
             tls_certificate = {cert:?}\ntls_private_key = {key:?}\nca_file = {ca_file:?}\n\
             allow = [{allow}]\n",
            ca_file = ca.ca_file,
        );
        let server = Server::start_configured(&[], &toml, None).await;
        FederatedServer {
            server,
            name,
            fed_port: port,
        }
    }

    /// A user id of this server.
    pub fn user(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.name)
    }

    /// The server's own signing key, read from its data directory: for
    /// tests that speak as this server.
    pub fn signing_key(&self) -> ruma::signatures::Ed25519KeyPair {
        use base64::Engine;
        let text = std::fs::read_to_string(self.server.data.join("signing.key")).unwrap();
        let (version, der) = text.trim().split_once(' ').unwrap();
        let der = base64::engine::general_purpose::STANDARD
            .decode(der)
            .unwrap();
        ruma::signatures::Ed25519KeyPair::from_der(&der, version.to_owned()).unwrap()
    }
}

/// An event a test makes as another server would.
pub struct Crafted<'a> {
    pub kind: &'a str,
    pub state_key: Option<&'a str>,
    pub content: serde_json::Value,
    /// Its `prev_events`; A's newest event if `None`.
    pub prev: Option<Vec<String>>,
    pub origin_server_ts: u64,
}

/// `draft` as a PDU from `sender`, authorized by A's current create,
/// power levels and sender's membership events, signed as `origin` with
/// `key`; the PDU and its event id.
pub async fn craft_pdu(
    ha: &Http,
    alice: &str,
    room: &str,
    sender: &str,
    (origin, key): (&str, &ruma::signatures::Ed25519KeyPair),
    draft: Crafted<'_>,
) -> (ruma::CanonicalJsonObject, String) {
    let (status, state) = ha
        .call(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state"),
            Some(alice),
            None,
        )
        .await;
    assert_eq!(status, 200, "{state}");
    let id_of = |t: &str, k: &str| {
        state
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == t && e["state_key"] == k)
            .unwrap()["event_id"]
            .clone()
    };
    let prev = match draft.prev {
        Some(prev) => serde_json::json!(prev),
        None => {
            let (_, latest) = ha
                .call(
                    "GET",
                    &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1"),
                    Some(alice),
                    None,
                )
                .await;
            serde_json::json!([latest["chunk"][0]["event_id"].clone()])
        }
    };
    let version = state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.create")
        .and_then(|e| e["content"]["room_version"].as_str())
        .unwrap_or("1")
        .to_owned();
    // From room version 12 the create event is implied, never listed.
    let mut auth = vec![
        id_of("m.room.power_levels", ""),
        id_of("m.room.member", sender),
    ];
    if version != "12" {
        auth.insert(0, id_of("m.room.create", ""));
    }
    let mut event = serde_json::json!({
        "auth_events": auth,
        "content": draft.content,
        "depth": 1000,
        "origin_server_ts": draft.origin_server_ts,
        "prev_events": prev,
        "room_id": room,
        "sender": sender,
        "type": draft.kind,
    });
    if let Some(k) = draft.state_key {
        event["state_key"] = serde_json::json!(k);
    }
    let mut object: ruma::CanonicalJsonObject = serde_json::from_value(event).unwrap();
    let rules = ruma::RoomVersionId::try_from(version.as_str())
        .unwrap()
        .rules()
        .unwrap();
    ruma::signatures::hash_and_sign_event(origin, key, &mut object, &rules.redaction).unwrap();
    let id = format!(
        "${}",
        ruma::signatures::reference_hash(&object, &rules).unwrap()
    );
    (object, id)
}

/// `request` (a ruma federation request) sent to A, signed as B.
pub async fn signed_as<R: ruma::api::OutgoingRequest>(
    ca: &TestCa,
    a: &FederatedServer,
    b: &FederatedServer,
    request: R,
) -> (u16, serde_json::Value)
where
    for<'k> R::Authentication: ruma::api::auth_scheme::AuthScheme<
        Input<'k> = ruma::api::federation::authentication::ServerSignaturesInput<'k>,
    >,
    R::PathBuilder: ruma::api::path_builder::PathBuilder<Input<'static> = ()>,
{
    let b_key = b.signing_key();
    let input = ruma::api::federation::authentication::ServerSignaturesInput::new(
        ruma::ServerName::parse(&b.name).unwrap(),
        ruma::ServerName::parse(&a.name).unwrap(),
        &b_key,
    );
    let request = request
        .try_into_http_request::<Vec<u8>>(&format!("https://{}", a.name), input, ())
        .unwrap();
    federation_request(&ca.ca_file, a.fed_port, request).await
}

/// Sends `pdus` to A in a transaction signed as B; A's answer.
pub async fn send_as(
    ca: &TestCa,
    a: &FederatedServer,
    b: &FederatedServer,
    txn_id: &str,
    pdus: &[&ruma::CanonicalJsonObject],
) -> (u16, serde_json::Value) {
    let mut txn = ruma::api::federation::transactions::send_transaction_message::v1::Request::new(
        txn_id.into(),
        ruma::ServerName::parse(&b.name).unwrap(),
        ruma::MilliSecondsSinceUnixEpoch::now(),
    );
    txn.pdus = pdus
        .iter()
        .map(|p| serde_json::value::to_raw_value(p).unwrap())
        .collect();
    signed_as(ca, a, b, txn).await
}

/// A request to a federation listener on loopback, over TLS checked
/// against `ca_file`: the status and the JSON answer.
pub async fn federation_request(
    ca_file: &std::path::Path,
    port: u16,
    request: http::Request<Vec<u8>>,
) -> (u16, serde_json::Value) {
    let answer = federation_request_raw(ca_file, port, request).await;
    (
        answer.status().as_u16(),
        serde_json::from_slice(answer.body()).unwrap_or(serde_json::Value::Null),
    )
}

/// [`federation_request`]'s answer whole (headers, bytes): for answers
/// that are not JSON (media).
pub async fn federation_request_raw(
    ca_file: &std::path::Path,
    port: u16,
    request: http::Request<Vec<u8>>,
) -> http::Response<Vec<u8>> {
    use http_body_util::BodyExt;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::IpAddress(
                "127.0.0.1".parse::<std::net::IpAddr>().unwrap().into(),
            ),
            tcp,
        )
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let (mut parts, body) = request.into_parts();
    parts.headers.insert(
        http::header::HOST,
        format!("127.0.0.1:{port}").parse().unwrap(),
    );
    let request =
        http::Request::from_parts(parts, http_body_util::Full::new(bytes::Bytes::from(body)));
    let answer = sender.send_request(request).await.unwrap();
    let (parts, body) = answer.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    http::Response::from_parts(parts, body.to_vec())
}

/// The reference homeserver, Synapse (from PyPI, installed into
/// `bench/.venv` by `scripts/synapse.sh install`, or `SYNAPSE_VENV`),
/// federating over TLS on loopback: named by IP literal and port like a
/// [`FederatedServer`], its certificate from the test's CA, which it trusts
/// for peers (`federation_custom_ca_list`), talking only to `allow`.
pub struct SynapseServer {
    /// The client API, plain HTTP.
    pub url: String,
    pub name: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl SynapseServer {
    /// Starts Synapse with its federation listener on `port` (from
    /// [`FederatedServer::reserve`]).
    pub async fn start(ca: &TestCa, port: u16, allow: &[&str]) -> SynapseServer {
        let venv = std::env::var("SYNAPSE_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/.venv")
            });
        let python = venv.join("bin/python");
        assert!(
            python.exists(),
            "Synapse is not installed at {} (scripts/synapse.sh install)",
            venv.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let name = format!("127.0.0.1:{port}");
        let client_port = free_port();
        let (cert, key) = ca.issue(&format!("synapse-{port}"), &["127.0.0.1"]);
        let allow = allow
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let secret = "interop-test-secret";
        std::fs::write(
            d.join("log.config"),
            format!(
                "version: 1\nformatters:\n  precise:\n    format: '%(asctime)s %(name)s %(levelname)s %(message)s'\n\
                 handlers:\n  file:\n    class: logging.FileHandler\n    formatter: precise\n    filename: {log}\n\
                 root:\n  level: {level}\n  handlers: [file]\ndisable_existing_loggers: false\n",
                log = d.join("homeserver.log").display(),
                level = std::env::var("SYNAPSE_TEST_LOG").unwrap_or_else(|_| "WARNING".into())
            ),
        )
        .unwrap();
        let config = format!(
            r#"server_name: "{name}"
pid_file: "{d}/homeserver.pid"
public_baseurl: "http://127.0.0.1:{client_port}/"
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: true
    resources:
      - names: [federation]
  - port: {client_port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    resources:
      - names: [client]
tls_certificate_path: "{cert}"
tls_private_key_path: "{key}"
federation_custom_ca_list: ["{ca}"]
federation_verify_certificates: true
federation_domain_whitelist: [{allow}]
ip_range_blacklist: []
federation_ip_range_blacklist: []
ip_range_whitelist: ["127.0.0.0/8"]
trusted_key_servers: []
suppress_key_server_warning: true
database:
  name: sqlite3
  args:
    database: "{d}/homeserver.db"
log_config: "{d}/log.config"
media_store_path: "{d}/media"
signing_key_path: "{d}/signing.key"
registration_shared_secret: "{secret}"
macaroon_secret_key: "{secret}"
form_secret: "{secret}"
report_stats: false
enable_registration: true
enable_registration_without_verification: true
bcrypt_rounds: 4
presence:
  enabled: false
rc_message:
  per_second: 1000
  burst_count: 1000
rc_joins:
  local:
    per_second: 1000
    burst_count: 1000
  remote:
    per_second: 1000
    burst_count: 1000
rc_login:
  address:
    per_second: 1000
    burst_count: 1000
  account:
    per_second: 1000
    burst_count: 1000
rc_registration:
  per_second: 1000
  burst_count: 1000
"#,
            d = d.display(),
            cert = cert.display(),
            key = key.display(),
            ca = ca.ca_file.display(),
        );
        let yaml = d.join("homeserver.yaml");
        std::fs::write(&yaml, config).unwrap();
        let keys = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&yaml)
            .arg("--generate-keys")
            .output()
            .unwrap();
        assert!(
            keys.status.success(),
            "synapse --generate-keys: {}",
            String::from_utf8_lossy(&keys.stderr)
        );
        let child = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&yaml)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(d.join("stderr.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{client_port}");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(r) = reqwest::get(format!("{url}/_matrix/client/versions")).await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "synapse did not start: {}",
                std::fs::read_to_string(d.join("stderr.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        SynapseServer {
            url,
            name,
            child,
            _dir: dir,
        }
    }

    /// A user id of this server.
    pub fn user(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.name)
    }

    /// Synapse's log so far (warnings and errors).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("homeserver.log")).unwrap_or_default()
    }
}

impl Drop for SynapseServer {
    fn drop(&mut self) {
        // A failing test shows what Synapse said.
        if std::thread::panicking() {
            eprintln!("--- synapse log ---\n{}", self.log_text());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls a full `/sync` for `token` until `check` holds (up to `secs`).
pub async fn wait_for_sync(
    http: &Http,
    token: &str,
    secs: u64,
    check: impl Fn(&serde_json::Value) -> bool,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    // Each poll asks with another timeout (an initial sync does not wait),
    // so Synapse answers afresh rather than from its cache of the request.
    for attempt in 0u64.. {
        let (status, v) = http
            .call(
                "GET",
                &format!("/_matrix/client/v3/sync?timeout={attempt}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        if check(&v) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not seen in time: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A user of a server, for tests across servers: the server's name, a
/// client of it, and the user's token and id.
pub struct Side {
    pub name: String,
    pub http: Http,
    pub token: String,
    pub user: String,
}

impl Side {
    /// `localpart`, registered on the server at `url` named `name`.
    pub async fn register(url: &str, name: &str, localpart: &str) -> Side {
        let http = Http::new(url);
        let token = http.register(localpart).await;
        Side {
            name: name.to_owned(),
            http,
            token,
            user: format!("@{localpart}:{name}"),
        }
    }

    /// `localpart`, registered on a Hotline of the test's.
    pub async fn of(server: &FederatedServer, localpart: &str) -> Side {
        Side::register(&server.server.url, &server.name, localpart).await
    }

    /// Knocks on `room` through `via`: the status and answer.
    pub async fn knock(&self, room: &str, via: &str) -> (u16, serde_json::Value) {
        self.http
            .call(
                "POST",
                &format!("/_matrix/client/v3/knock/{room}?via={via}"),
                Some(&self.token),
                Some(r#"{"reason": "let me in"}"#),
            )
            .await
    }

    /// `user`'s membership in `room`, as this side's user reads it (null
    /// when `user` has none).
    pub async fn membership_of(&self, room: &str, user: &str) -> serde_json::Value {
        let (status, v) = self
            .http
            .call(
                "GET",
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{user}"),
                Some(&self.token),
                None,
            )
            .await;
        assert!(status == 200 || status == 404, "{status} {v}");
        v["membership"].clone()
    }
}

/// `guest` knocks on a knock room of `host`'s (of room `version`) on the
/// other server: the
/// guest's `/sync` shows the knock with the room's face, the host sees it
/// and invites, the guest sees the invite and joins, and texts cross. A
/// `second` guest of the same server, if named, knocks and takes it back
/// (`/leave`) before that: the host sees the knock, then the leave.
pub async fn knock_invite_join(host: &Side, guest: &Side, second: Option<&Side>, version: &str) {
    let room = host.http.create_knock_room(&host.token, version).await;
    let (status, v) = guest.knock(&room, &host.name).await;
    assert_eq!(
        (status, &v["room_id"]),
        (200, &serde_json::json!(room)),
        "{v}"
    );
    wait_for_sync(&guest.http, &guest.token, 10, |v| {
        v["rooms"]["knock"][&room]["knock_state"]["events"]
            .as_array()
            .is_some_and(|es| {
                es.iter().any(|e| {
                    e["type"] == "m.room.join_rules" && e["content"]["join_rule"] == "knock"
                }) && es.iter().any(|e| e["type"] == "m.room.create")
                    && es.iter().any(|e| {
                        e["type"] == "m.room.member"
                            && e["state_key"] == guest.user
                            && e["content"]["membership"] == "knock"
                    })
            })
    })
    .await;
    // The host sees the knock, in /sync and in the room's state.
    let guest_id = guest.user.clone();
    wait_for_sync(&host.http, &host.token, 10, |v| {
        v["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .is_some_and(|es| {
                es.iter().any(|e| {
                    e["type"] == "m.room.member"
                        && e["state_key"] == guest_id
                        && e["content"]["membership"] == "knock"
                        && e["content"]["reason"] == "let me in"
                })
            })
    })
    .await;
    assert_eq!(host.membership_of(&room, &guest.user).await, "knock");
    // A knock taken back (before anyone of the guests' server is in the
    // room) goes through the room's server.
    if let Some(second) = second {
        let (status, v) = second.knock(&room, &host.name).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(host.membership_of(&room, &second.user).await, "knock");
        let (status, v) = second
            .http
            .call(
                "POST",
                &format!("/_matrix/client/v3/rooms/{room}/leave"),
                Some(&second.token),
                Some("{}"),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(host.membership_of(&room, &second.user).await, "leave");
    }
    let (status, v) = host
        .http
        .call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&host.token),
            Some(&serde_json::json!({"user_id": guest.user}).to_string()),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    wait_for_sync(&guest.http, &guest.token, 10, |v| {
        v["rooms"]["invite"][&room].is_object() && v["rooms"]["knock"][&room].is_null()
    })
    .await;
    let (status, v) = guest
        .http
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&guest.token),
            Some("{}"),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    guest
        .http
        .send_text(&guest.token, &room, "k1", "in by knocking")
        .await;
    host.http
        .wait_for_texts(&host.token, &room, &["in by knocking"], 10)
        .await;
}

/// Two Hotlines that federate (A and B), a user of each (their tokens),
/// and a public room on A that B's user joined: `(a, b, alice, bob, room)`.
pub async fn two_servers_sharing_a_room(
    ca: &TestCa,
) -> (FederatedServer, FederatedServer, String, String, String) {
    two_servers_sharing_a_room_with(ca, "").await
}

/// [`two_servers_sharing_a_room`], with `extra` in A's configuration.
pub async fn two_servers_sharing_a_room_with(
    ca: &TestCa,
    extra: &str,
) -> (FederatedServer, FederatedServer, String, String, String) {
    two_servers_sharing_a_room_made_with(ca, extra, r#"{"preset": "public_chat"}"#).await
}

/// [`two_servers_sharing_a_room_with`], the room made with the
/// `createRoom` body `create`.
pub async fn two_servers_sharing_a_room_made_with(
    ca: &TestCa,
    extra: &str,
    create: &str,
) -> (FederatedServer, FederatedServer, String, String, String) {
    let ((pa, na), (pb, nb)) = (FederatedServer::reserve(), FederatedServer::reserve());
    let a = FederatedServer::start(ca, pa, &[&nb], extra).await;
    let b = FederatedServer::start(ca, pb, &[&na], "").await;
    let (ha, hb) = (Http::new(&a.server.url), Http::new(&b.server.url));
    let alice = ha.register("alice").await;
    let bob = hb.register("bob").await;
    let (status, v) = ha
        .call(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            Some(create),
        )
        .await;
    assert_eq!(status, 200, "createRoom: {v}");
    let room = v["room_id"].as_str().unwrap().to_owned();
    let (status, v) = hb
        .call(
            "POST",
            &format!("/_matrix/client/v3/join/{room}?via={na}"),
            Some(&bob),
            Some("{}"),
        )
        .await;
    assert_eq!(status, 200, "join over federation: {v}");
    (a, b, alice, bob, room)
}
