//! The official record's rules, each a test named after it: packages
//! verify untouched and fail naming the entry for each tampering; the
//! archive directory holds no plaintext; a torn append loses no
//! acknowledged entry and duplicates none.

use std::path::Path;

use ed25519_dalek::SigningKey;
use hotline_records::chain::Checkpoint;
use hotline_records::{
    build, read_archive, verify, Appended, Archive, ArchiveKeys, Filter, Kind, NewEntry, Options,
    Package, Status,
};
use proptest::prelude::*;
use rand::RngCore;
use serde_json::{json, Value};

const LINES: [&str; 3] = [
    "!alpha:gov.example",
    "!bravo:gov.example",
    "!charlie:other.example",
];

fn new_keys() -> (age::x25519::Identity, ArchiveKeys) {
    let identity = age::x25519::Identity::generate();
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let keys = ArchiveKeys {
        recipient: identity.to_public(),
        signing: SigningKey::from_bytes(&seed),
    };
    (identity, keys)
}

#[derive(Clone, Debug)]
struct Spec {
    line: usize,
    ts: i64,
    kind: Kind,
    body: String,
    attachment: Option<Vec<u8>>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..LINES.len(),
        0..1000i64,
        0..6u8,
        proptest::collection::vec(proptest::char::range('a', 'z'), 1..24),
        proptest::collection::vec(any::<u8>(), 0..96),
    )
        .prop_map(|(line, ts, k, body, bytes)| {
            let kind = [
                Kind::Message,
                Kind::Edit,
                Kind::Redaction,
                Kind::Attachment,
                Kind::Call,
                Kind::Undecryptable,
            ][k as usize];
            Spec {
                line,
                ts: 1_700_000_000_000 + ts * 1000,
                kind,
                body: body.into_iter().collect(),
                attachment: (kind == Kind::Attachment).then_some(bytes),
            }
        })
}

fn new_entry(i: usize, s: &Spec) -> NewEntry {
    NewEntry {
        event_id: format!("$event{i}:gov.example"),
        room_id: LINES[s.line].into(),
        sender: format!("@official{}:gov.example", i % 4),
        sender_name: Some(format!("Official {}", i % 4)),
        sender_title: i.is_multiple_of(2).then(|| "Minister".to_owned()),
        origin_server_ts: s.ts,
        kind: s.kind,
        content: json!({"msgtype": "m.text", "body": s.body}),
        attachment: s.attachment.clone(),
    }
}

/// An archive of `specs`, appended in batches of `batch`, closed.
fn write_archive(dir: &Path, keys: &ArchiveKeys, specs: &[Spec], every: u64, batch: usize) {
    let options = Options {
        checkpoint_every: every,
        segment_bytes: 4096,
    };
    let mut a = Archive::open(dir, keys.clone(), options).unwrap();
    let entries: Vec<NewEntry> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| new_entry(i, s))
        .collect();
    for chunk in entries.chunks(batch.max(1)) {
        for r in a.append_all(chunk).unwrap() {
            assert!(matches!(r, Appended::Entry(_)));
        }
    }
    a.close().unwrap();
}

struct Case {
    package: Package,
    keys: ArchiveKeys,
    in_scope: usize,
    _dir: tempfile::TempDir,
}

fn case(
    specs: Vec<Spec>,
    every: u64,
    batch: usize,
    line: usize,
    window: Option<(i64, i64)>,
) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let (identity, keys) = new_keys();
    write_archive(dir.path(), &keys, &specs, every, batch);
    let filter = Filter {
        line: LINES[line].into(),
        from: window.map(|w| 1_700_000_000_000 + w.0.min(w.1) * 1000),
        to: window.map(|w| 1_700_000_000_000 + w.0.max(w.1) * 1000),
    };
    let in_scope = specs
        .iter()
        .filter(|s| s.line == line && filter.in_window(s.ts))
        .count();
    let (package, report) = build(dir.path(), &identity, &filter).unwrap();
    assert_eq!(report.exported, in_scope);
    assert_eq!(report.not_yet_covered, 0);
    Case {
        package,
        keys,
        in_scope,
        _dir: dir,
    }
}

fn archives() -> impl Strategy<Value = (Vec<Spec>, u64, usize, usize, Option<(i64, i64)>)> {
    (
        proptest::collection::vec(spec(), 2..28),
        1..8u64,
        1..10usize,
        0..LINES.len(),
        proptest::option::of((0..1000i64, 0..1000i64)),
    )
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

fn join(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn first_problem(p: &Package, keys: &ArchiveKeys) -> String {
    let report = verify(p, Some(&keys.signing.verifying_key()));
    assert!(!report.ok(), "a tampered package verified");
    report.problems[0].clone()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn untouched_export_verifies((specs, every, batch, line, window) in archives()) {
        let c = case(specs, every, batch, line, window);
        let report = verify(&c.package, Some(&c.keys.signing.verifying_key()));
        prop_assert!(report.ok(), "{:?}", report.problems);
        prop_assert_eq!(report.exported, c.in_scope);
        prop_assert_eq!(report.exported + report.withheld, report.last_seq as usize);
    }

    #[test]
    fn changed_byte_in_an_entry_names_that_entry(
        (specs, every, batch, line, window) in archives(), pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(), shift in 1..26u8,
    ) {
        let mut c = case(specs, every, batch, line, window);
        let mut ls = lines(&c.package.entries);
        let exported: Vec<usize> = (0..ls.len()).filter(|i| ls[*i].contains("\"entry\":")).collect();
        prop_assume!(!exported.is_empty());
        let i = exported[pick.index(exported.len())];
        let v: Value = serde_json::from_str(&ls[i]).unwrap();
        let body = v["entry"]["content"]["body"].as_str().unwrap().to_owned();
        let start = ls[i].find(&format!("\"body\":\"{body}\"")).unwrap() + 8;
        let j = start + at.index(body.len());
        let mut bytes = ls[i].clone().into_bytes();
        bytes[j] = b'a' + (bytes[j] - b'a' + shift) % 26;
        ls[i] = String::from_utf8(bytes).unwrap();
        c.package.entries = join(&ls);
        prop_assert_eq!(first_problem(&c.package, &c.keys), format!("entry {}: hash does not match its content", i + 1));
    }

    #[test]
    fn removed_entry_is_reported_missing(
        (specs, every, batch, line, window) in archives(), pick in any::<prop::sample::Index>(),
    ) {
        let mut c = case(specs, every, batch, line, window);
        let mut ls = lines(&c.package.entries);
        prop_assume!(ls.len() >= 2);
        let i = pick.index(ls.len() - 1); // not the last: that is a truncation
        ls.remove(i);
        c.package.entries = join(&ls);
        let n = i + 1;
        let expected = if n == 1 {
            "entry 1 missing: sequence starts at 2".to_owned()
        } else {
            format!("entry {n} missing: sequence jumps from {} to {}", n - 1, n + 1)
        };
        prop_assert_eq!(first_problem(&c.package, &c.keys), expected);
    }

    #[test]
    fn swapped_entries_are_reported_out_of_order(
        (specs, every, batch, line, window) in archives(),
        a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>(),
    ) {
        let mut c = case(specs, every, batch, line, window);
        let mut ls = lines(&c.package.entries);
        let (i, j) = (a.index(ls.len()), b.index(ls.len()));
        prop_assume!(i != j);
        ls.swap(i, j);
        c.package.entries = join(&ls);
        prop_assert_eq!(
            first_problem(&c.package, &c.keys),
            format!("entries {} and {} out of order", i.min(j) + 1, i.max(j) + 1)
        );
    }

    #[test]
    fn truncated_tail_is_reported(
        (specs, every, batch, line, window) in archives(), cut in any::<prop::sample::Index>(),
    ) {
        let mut c = case(specs, every, batch, line, window);
        let mut ls = lines(&c.package.entries);
        let keep = cut.index(ls.len()); // 0..len-1 entries kept
        ls.truncate(keep);
        c.package.entries = join(&ls);
        let covering = c.package.checkpoints.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap())
            .find(|s| *s > keep as u64)
            .unwrap();
        prop_assert_eq!(
            first_problem(&c.package, &c.keys),
            format!("tail truncated: checkpoint at {covering} covers entries past {keep}")
        );
    }

    #[test]
    fn forged_checkpoint_does_not_verify(
        (specs, every, batch, line, window) in archives(), pick in any::<prop::sample::Index>(),
        how in 0..3u8,
    ) {
        let mut c = case(specs, every, batch, line, window);
        let mut cps = lines(&c.package.checkpoints);
        let i = pick.index(cps.len());
        let v: Value = serde_json::from_str(&cps[i]).unwrap();
        let mut cp = Checkpoint::from_json(&v).unwrap();
        let forged = match how {
            0 => {
                cp.chain[0] ^= 1; // claims another chain value
                cp.to_json(&c.keys.signing.verifying_key())
            }
            1 => {
                cp.ts += 1; // claims another time
                cp.to_json(&c.keys.signing.verifying_key())
            }
            _ => {
                let (_, other) = new_keys(); // signed by someone else
                Checkpoint::sign(&other.signing, cp.archive_id, cp.number, cp.seq, cp.chain, cp.ts)
                    .to_json(&other.signing.verifying_key())
            }
        };
        cps[i] = forged.to_string();
        c.package.checkpoints = join(&cps);
        prop_assert_eq!(
            first_problem(&c.package, &c.keys),
            format!("checkpoint {}: signature does not verify", cp.number)
        );
    }

    /// kill -9 mid-append, simulated: the segment cut at a random offset
    /// inside the frame being written (and, sometimes, zeros after it, as
    /// a file system may leave).
    #[test]
    fn torn_append_loses_no_acknowledged_entry_and_duplicates_none(
        specs in proptest::collection::vec(spec(), 2..16), k in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(), zeros in 0..200usize, every in 1..6u64,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (identity, keys) = new_keys();
        let options = Options { checkpoint_every: every, segment_bytes: u64::MAX };
        let entries: Vec<NewEntry> = specs.iter().enumerate().map(|(i, s)| new_entry(i, s)).collect();
        let k = k.index(entries.len()); // acknowledged before the crash
        let segment = dir.path().join("segments").join(format!("{:020}.seg", 1));
        let size = || std::fs::metadata(&segment).unwrap().len();
        {
            let mut a = Archive::open(dir.path(), keys.clone(), options).unwrap();
            for e in &entries[..k] {
                prop_assert!(matches!(a.append(e).unwrap(), Appended::Entry(_)));
            }
            let before = size();
            a.append(&entries[k]).unwrap();
            let after = size();
            drop(a); // no close: the process dies
            let at = before + cut.index((after - before) as usize) as u64;
            let f = std::fs::OpenOptions::new().write(true).open(&segment).unwrap();
            f.set_len(at).unwrap();
            if zeros > 0 {
                f.set_len(at + zeros as u64).unwrap();
            }
        }
        let mut a = Archive::open(dir.path(), keys.clone(), options).unwrap();
        let kept = a.head().0 as usize;
        prop_assert!(kept == k || kept == k + 1, "kept {} of {} acknowledged", kept, k);
        for (i, e) in entries.iter().enumerate() {
            let r = a.append(e).unwrap();
            if i < kept {
                prop_assert_eq!(r, Appended::Duplicate(i as u64 + 1));
            } else {
                prop_assert_eq!(r, Appended::Entry(i as u64 + 1));
            }
        }
        a.close().unwrap();
        let contents = read_archive(dir.path(), &identity).unwrap();
        let ids: Vec<&str> = contents.records.iter().map(|r| r.entry["event_id"].as_str().unwrap()).collect();
        let expected: Vec<String> = (0..entries.len()).map(|i| format!("$event{i}:gov.example")).collect();
        prop_assert_eq!(ids, expected.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

#[test]
fn archive_directory_holds_no_plaintext() {
    const MARKER: &str = "PLAINTEXT-MARKER-zq7";
    let dir = tempfile::tempdir().unwrap();
    let (identity, keys) = new_keys();
    let mut a = Archive::open(dir.path(), keys.clone(), Options::default()).unwrap();
    for i in 0..20 {
        let marked = |s: &str| format!("{s}{MARKER}{i}");
        a.append(&NewEntry {
            event_id: marked("$"),
            room_id: marked("!"),
            sender: marked("@"),
            sender_name: Some(marked("name ")),
            sender_title: Some(marked("title ")),
            origin_server_ts: 1_700_000_000_000 + i,
            kind: if i % 3 == 0 {
                Kind::Attachment
            } else {
                Kind::Message
            },
            content: json!({"msgtype": "m.text", "body": marked("the body says ")}),
            attachment: (i % 3 == 0).then(|| marked("file bytes ").repeat(50).into_bytes()),
        })
        .unwrap();
    }
    a.close().unwrap();
    let mut files = 0;
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&p).unwrap();
            for needle in [MARKER.as_bytes(), b"PLAINTEXT", b"gov.example"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{} holds plaintext",
                    p.display()
                );
            }
        }
    }
    assert!(files >= 3 + 7, "segments, blobs and metadata were scanned");
    // And the secret key does read it all back.
    assert_eq!(
        read_archive(dir.path(), &identity).unwrap().records.len(),
        20
    );
}

#[test]
fn second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, keys) = new_keys();
    let _a = Archive::open(dir.path(), keys.clone(), Options::default()).unwrap();
    assert!(matches!(
        Archive::open(dir.path(), keys, Options::default()),
        Err(hotline_records::Error::Locked(_))
    ));
}

#[test]
fn archive_refuses_another_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let (_, keys) = new_keys();
    Archive::open(dir.path(), keys.clone(), Options::default())
        .unwrap()
        .close()
        .unwrap();
    let (_, other) = new_keys();
    let mixed = ArchiveKeys {
        recipient: other.recipient,
        signing: keys.signing,
    };
    assert!(matches!(
        Archive::open(dir.path(), mixed, Options::default()),
        Err(hotline_records::Error::Key(_))
    ));
}

#[test]
fn undecryptable_and_its_decryption_are_each_appended_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_, keys) = new_keys();
    let mut a = Archive::open(dir.path(), keys, Options::default()).unwrap();
    let s = Spec {
        line: 0,
        ts: 1,
        kind: Kind::Undecryptable,
        body: "x".into(),
        attachment: None,
    };
    let pending = new_entry(7, &s);
    let decrypted = NewEntry {
        kind: Kind::Message,
        ..pending.clone()
    };
    assert_eq!(a.status(&pending.event_id), Status::Absent);
    assert_eq!(a.append(&pending).unwrap(), Appended::Entry(1));
    assert_eq!(a.status(&pending.event_id), Status::Undecryptable(1));
    assert_eq!(a.append(&pending).unwrap(), Appended::Duplicate(1));
    assert_eq!(a.append(&decrypted).unwrap(), Appended::Entry(2));
    assert_eq!(a.status(&pending.event_id), Status::Archived(2));
    assert_eq!(
        a.append_all(&[decrypted.clone(), pending]).unwrap(),
        vec![Appended::Duplicate(2), Appended::Duplicate(1)]
    );
}

#[test]
fn entry_withheld_on_the_exported_line_is_reported() {
    let specs: Vec<Spec> = (0..6)
        .map(|i| Spec {
            line: i % 2,
            ts: 1_700_000_000_000 + i as i64,
            kind: Kind::Message,
            body: format!("message {i}"),
            attachment: None,
        })
        .collect();
    let mut c = case(specs, 4, 2, 0, None);
    // A dishonest exporter turns entry 3 (line 0) into a withheld line
    // with correct hashes: the chain still verifies, the scope does not.
    let mut ls = lines(&c.package.entries);
    let v: Value = serde_json::from_str(&ls[2]).unwrap();
    let manifest: Value = serde_json::from_str(&c.package.manifest).unwrap();
    let e = &v["entry"];
    ls[2] = json!({"seq": 3, "chain": v["chain"], "withheld": {
        "line": manifest["line_tag"],
        "ts": e["origin_server_ts"],
        "body": hotline_records::hex(&hotline_records::chain::body_hash(e)),
    }})
    .to_string();
    c.package.entries = join(&ls);
    assert_eq!(
        first_problem(&c.package, &c.keys),
        "entry 3: withheld, but it is on this line within the window: the package leaves it out"
    );
}

#[test]
fn transcript_escapes_everything() {
    let specs = vec![Spec {
        line: 0,
        ts: 0,
        kind: Kind::Message,
        body: "<script>alert('x')</script> & \"quoted\"".into(),
        attachment: None,
    }];
    let c = case(specs, 1, 1, 0, None);
    let t = &c.package.transcript;
    assert!(!t.contains("<script>"), "{t}");
    assert!(t.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quoted&quot;"));
    assert!(t.contains("Official 0") && t.contains("Minister"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Events first archived as `undecryptable` and decrypted later, in
    /// any batches, across reopenings: each decrypted entry names its
    /// placeholder (`resolves`), no other entry names one, and the export
    /// verifies.
    #[test]
    fn a_decrypted_entry_names_the_undecryptable_placeholder_it_resolves(
        events in proptest::collection::vec((any::<bool>(), any::<bool>()), 1..16),
        batch in 1..6usize,
        reopen_every in 1..4usize,
    ) {
        // Event i: placeholder first when `events[i].0`; decrypted (at the
        // end, in reverse order) when `events[i].1`.
        let dir = tempfile::tempdir().unwrap();
        let (identity, keys) = new_keys();
        let entry = |i: usize, kind: Kind| NewEntry {
            kind,
            ..new_entry(i, &Spec { line: 0, ts: i as i64, kind, body: format!("body {i}"), attachment: None })
        };
        let mut stream: Vec<NewEntry> = events.iter().enumerate()
            .map(|(i, (placeholder, _))| entry(i, if *placeholder { Kind::Undecryptable } else { Kind::Message }))
            .collect();
        stream.extend(events.iter().enumerate().rev()
            .filter(|(_, (placeholder, later))| *placeholder && *later)
            .map(|(i, _)| entry(i, Kind::Message)));
        // Each appended twice: the second time is a duplicate.
        let doubled: Vec<NewEntry> = stream.iter().flat_map(|e| [e.clone(), e.clone()]).collect();
        let mut a = Some(Archive::open(dir.path(), keys.clone(), Options::default()).unwrap());
        for (n, chunk) in doubled.chunks(batch).enumerate() {
            a.as_mut().unwrap().append_all(chunk).unwrap();
            if n % reopen_every == 0 {
                a.take().unwrap().close().unwrap();
                a = Some(Archive::open(dir.path(), keys.clone(), Options::default()).unwrap());
            }
        }
        a.take().unwrap().close().unwrap();

        let contents = read_archive(dir.path(), &identity).unwrap();
        prop_assert_eq!(contents.records.len(), stream.len());
        let mut placeholder_of = std::collections::HashMap::new();
        for r in &contents.records {
            let id = r.entry["event_id"].as_str().unwrap().to_owned();
            if r.entry["kind"] == "undecryptable" {
                prop_assert!(r.entry.get("resolves").is_none());
                placeholder_of.insert(id, r.seq);
            } else {
                prop_assert_eq!(r.entry.get("resolves").and_then(Value::as_u64), placeholder_of.get(&id).copied(), "{}", r.entry);
            }
        }
        let filter = Filter { line: LINES[0].into(), from: None, to: None };
        let (package, _) = build(dir.path(), &identity, &filter).unwrap();
        let report = verify(&package, Some(&keys.signing.verifying_key()));
        prop_assert!(report.ok(), "{:?}", report.problems);
        if !placeholder_of.is_empty() && events.iter().any(|(p, l)| *p && *l) {
            prop_assert!(package.transcript.contains("decrypted later: resolves entry"));
        }
    }
}
