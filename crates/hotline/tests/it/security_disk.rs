//! A full disk: the server runs on a small tmpfs it fills up. Writes that
//! find no space answer `503 M_RESOURCE_LIMIT_EXCEEDED` (never another 5xx,
//! never a dropped connection), nothing acknowledged is lost (also across
//! `kill -9`), no half-written upload is left, and once space returns the
//! same server takes writes again without a restart.
//!
//! Mounting needs root (as these tests run, here and in CI); a refused
//! mount fails the test rather than passing it.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Http, Server};
use serde_json::json;

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("hotline-disk-test")
            .arg(&path)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and must run as root (with CAP_SYS_ADMIN); mount said: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { path, _dir: dir }
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a server still holding files (a failed assertion) does not
        // keep the mount alive.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// What a send answered: acknowledged, or refused for want of space.
#[derive(Debug, PartialEq)]
enum Sent {
    Ok,
    Full,
}

/// One send; anything but a `200` or a `503 M_RESOURCE_LIMIT_EXCEEDED`
/// (another 5xx, a dropped connection) fails the test.
async fn send(http: &Http, token: &str, room: &str, txn: &str, body: &str) -> Sent {
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
    let content = json!({"msgtype": "m.text", "body": body}).to_string();
    let (status, v) = http.call("PUT", &path, Some(token), Some(&content)).await;
    match status {
        200 => Sent::Ok,
        503 if v["errcode"] == "M_RESOURCE_LIMIT_EXCEEDED" => Sent::Full,
        _ => panic!("send {txn}: {status} {v}"),
    }
}

/// The bodies of the room's messages, oldest first, paging forward.
async fn messages(http: &Http, token: &str, room: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=500");
        if let Some(f) = &from {
            path.push_str(&format!("&from={f}"));
        }
        let (status, v) = http.call("GET", &path, Some(token), None).await;
        assert_eq!(status, 200, "{v}");
        let chunk = v["chunk"].as_array().unwrap();
        bodies.extend(
            chunk
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .map(|e| e["content"]["body"].as_str().unwrap().to_owned()),
        );
        match v["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => return bodies,
        }
    }
}

async fn upload(http: &Http, token: &str, bytes: Vec<u8>) -> (u16, serde_json::Value) {
    let resp = http
        .client
        .post(format!("{}/_matrix/media/v3/upload", http.base))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .expect("the upload is answered, not dropped");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Files in the media directory (not its thumbnails).
fn media_files(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.join("media"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A message body of about 1.5 KB, so the disk fills in a few hundred sends.
fn body(i: usize) -> String {
    format!("m-{i:05} {}", "x".repeat(1500))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_503_keeps_what_was_acknowledged_and_recovers() {
    let disk = Tmpfs::mount("3m");
    let data = disk.path.join("data");
    let log = disk._dir.path().join("server.log");
    let args = ["--allow-registration"];
    let mut server = Server::start_in(data.clone(), &args, Some((log.clone(), "info"))).await;
    let http = Http::new(&server.url);
    let alice = http.register("alice").await;
    let room = http.create_room(&alice).await;

    // Send until the disk is full, then a few more: every answer is a 200
    // or the 503, and the refusals go on while the disk stays full.
    let mut acked: Vec<String> = Vec::new();
    let mut refused: Vec<usize> = Vec::new();
    let mut i = 0;
    while refused.len() < 20 {
        assert!(i < 20_000, "3 MB never filled up");
        match send(&http, &alice, &room, &format!("t{i}"), &body(i)).await {
            Sent::Ok => acked.push(body(i)),
            Sent::Full => refused.push(i),
        }
        i += 1;
    }
    assert!(acked.len() > 10, "only {} sends fit", acked.len());
    eprintln!(
        "{} sends fit in 3 MB; then {} refused of {}",
        acked.len(),
        refused.len(),
        i - acked.len()
    );

    // An upload on the full disk is refused alike and leaves no file.
    let before = media_files(&data);
    let (status, v) = upload(&http, &alice, vec![7u8; 512 * 1024]).await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (503, Some("M_RESOURCE_LIMIT_EXCEEDED")),
        "{v}"
    );
    assert_eq!(media_files(&data), before, "a refused upload left a file");

    // Everything acknowledged is there, once, in order.
    assert_eq!(messages(&http, &alice, &room).await, acked);

    // The episode is logged once, not per refused request.
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("storage full: writes are refused").count(),
        1,
        "{text}"
    );

    // `kill -9` on the full disk, and a restart on it: still all there.
    server.kill9();
    drop(server);
    let mut server = Server::start_in(data.clone(), &args, Some((log.clone(), "info"))).await;
    let http = Http::new(&server.url);
    assert_eq!(messages(&http, &alice, &room).await, acked);
    let first_refused = refused[0];
    assert_eq!(
        send(
            &http,
            &alice,
            &room,
            &format!("t{first_refused}"),
            &body(first_refused)
        )
        .await,
        Sent::Full,
        "the disk is still full"
    );

    // Space returns; the same server takes writes again. The refused send,
    // retried with its transaction id, is stored once.
    disk.resize("64m");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        send(
            &http,
            &alice,
            &room,
            &format!("t{first_refused}"),
            &body(first_refused)
        )
        .await,
        Sent::Ok
    );
    acked.push(body(first_refused));
    for j in i..i + 20 {
        assert_eq!(
            send(&http, &alice, &room, &format!("t{j}"), &body(j)).await,
            Sent::Ok
        );
        acked.push(body(j));
    }
    let bytes: Vec<u8> = (0..200_000u32).map(|n| (n % 251) as u8).collect();
    let (status, v) = upload(&http, &alice, bytes.clone()).await;
    assert_eq!(status, 200, "{v}");
    let mxc = v["content_uri"].as_str().unwrap();
    let media_id = mxc.rsplit('/').next().unwrap();
    let got = http
        .client
        .get(format!(
            "{}/_matrix/client/v1/media/download/{}",
            http.base,
            mxc.trim_start_matches("mxc://")
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), bytes.as_slice());
    assert_eq!(media_files(&data), {
        let mut v = before.clone();
        v.push(media_id.to_owned());
        v.sort();
        v
    });
    assert_eq!(messages(&http, &alice, &room).await, acked);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("storage has space again"), "{text}");

    // And it all survives another `kill -9`.
    server.kill9();
    server.spawn().await;
    let http = Http::new(&server.url);
    assert_eq!(messages(&http, &alice, &room).await, acked);
    server.kill9();
}
