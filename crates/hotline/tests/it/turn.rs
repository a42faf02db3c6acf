//! TURN for calls: `/voip/turnServer` mints credentials that a real coturn
//! (Debian's package, configured by `hotline turn-config`) accepts, and
//! refuses altered ones.

use crate::common;

use std::process::{Command, Stdio};

use common::{Http, Server};

struct Coturn(std::process::Child);

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Allocates relays on coturn with `turnutils_uclient` (coturn's own test
/// client) and exchanges a few packets through them.
fn relay_works(port: u16, username: &str, password: &str) -> bool {
    let out = Command::new("turnutils_uclient")
        .args([
            "-y",
            "-n",
            "2",
            "-m",
            "1",
            "-l",
            "100",
            "-p",
            &port.to_string(),
        ])
        .args(["-u", username, "-w", password, "127.0.0.1"])
        .output()
        .expect("turnutils_uclient runs (scripts/deps.sh installs coturn)");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success() && log.contains("tot_recv_msgs=") && !log.contains("tot_recv_msgs=0\n")
}

#[tokio::test]
async fn turn_credentials_from_the_server_open_a_real_coturn_relay() {
    let server = Server::start().await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let (status, v) = http
        .call("GET", "/_matrix/client/v3/voip/turnServer", None, None)
        .await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (401, Some("M_MISSING_TOKEN"))
    );
    let (status, v) = http
        .call(
            "GET",
            "/_matrix/client/v3/voip/turnServer",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(
        (status, v),
        (200, serde_json::json!({})),
        "no TURN configured yet"
    );

    let port = free_port();
    let relay_min = 50_000 + (port % 100) * 100;
    let conf = server.data.join("coturn.conf");
    let out = server
        .command()
        .arg("turn-config")
        .arg("--out")
        .arg(&conf)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--relay-ports",
            &format!("{}-{}", relay_min, relay_min + 50),
        ])
        .arg("--allow-loopback-peers")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _coturn = Coturn(
        Command::new("turnserver")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver runs (scripts/deps.sh installs coturn)"),
    );

    let (status, v) = http
        .call(
            "GET",
            "/_matrix/client/v3/voip/turnServer",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["uris"][0], format!("turn:127.0.0.1:{port}?transport=udp"));
    let username = v["username"].as_str().unwrap().to_owned();
    let password = v["password"].as_str().unwrap().to_owned();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "@alice:localhost");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        expiry.parse::<u64>().unwrap() > now,
        "credentials expire in the future"
    );
    assert_eq!(v["ttl"], 86_400);

    // coturn needs a moment to bind.
    let mut ok = false;
    for _ in 0..20 {
        if relay_works(port, &username, &password) {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(ok, "coturn accepts the server's credentials and relays");
    assert!(
        !relay_works(port, &username, "AAAA"),
        "a wrong password is refused"
    );
    let other_user = username.replace("@alice", "@mallory");
    assert!(
        !relay_works(port, &other_user, &password),
        "the password is bound to the username"
    );
}
