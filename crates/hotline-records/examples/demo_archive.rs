//! Appends a few demonstration entries to an archive, as the archiver
//! would: `cargo run --release -p hotline-records --example demo_archive --
//! KEYDIR ARCHIVE` after `hotline records keygen --out KEYDIR`.

use std::path::PathBuf;

use hotline_records::{keys, Archive, ArchiveKeys, Kind, NewEntry, Options};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(key_dir), Some(archive)) = (args.next(), args.next()) else {
        return Err("usage: demo_archive KEYDIR ARCHIVE".into());
    };
    let keys = ArchiveKeys {
        recipient: keys::parse_recipient(&key_dir.join(keys::RECIPIENT_FILE).to_string_lossy())?,
        signing: keys::read_signing_key(&key_dir.join(keys::SIGNING_FILE))?,
    };
    let mut a = Archive::open(&archive, keys, Options::default())?;
    let line = "!demo:hotline.example";
    let entry = |n: u64, kind, content, attachment| NewEntry {
        event_id: format!("$demo{n}"),
        room_id: line.into(),
        sender: "@macron:hotline.example".into(),
        sender_name: Some("Emmanuel Macron".into()),
        sender_title: Some("President <of> the Republic".into()),
        origin_server_ts: 1_767_225_600_000 + n as i64 * 60_000,
        kind,
        content,
        attachment,
    };
    let results = a.append_all(&[
        entry(
            1,
            Kind::Message,
            json!({"msgtype": "m.text", "body": "Bonjour <b>Olaf</b>"}),
            None,
        ),
        entry(
            2,
            Kind::Attachment,
            json!({"msgtype": "m.file", "body": "memo.txt", "info": {"mimetype": "text/plain"}}),
            Some(b"the memo".to_vec()),
        ),
        entry(
            3,
            Kind::Call,
            json!({"event": "hangup", "call_id": "c1", "duration_ms": 185_000}),
            None,
        ),
        NewEntry {
            room_id: "!other:hotline.example".into(),
            ..entry(4, Kind::Message, json!({"body": "elsewhere"}), None)
        },
    ])?;
    println!("{results:?}");
    a.close()?;
    Ok(())
}
