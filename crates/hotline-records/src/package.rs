//! `hotline records export`: a package of one line's entries over a time
//! window, verifiable on its own.
//!
//! ```text
//! PACKAGE/
//!   manifest.json      format, archive id, line, window, last entry, counts, checkpoint key
//!   entries.jsonl      every entry 1..=last, in order, one JSON object a line:
//!                        {"seq":N,"chain":HEX,"entry":{...}}                         exported
//!                        {"seq":N,"chain":HEX,"withheld":{"line":HEX,"ts":MS,"body":HEX}}   not
//!   checkpoints.jsonl  the signed checkpoints up to the last entry
//!   attachments/N-NAME the decrypted files of exported attachment entries
//!   transcript.html    the readable transcript (a rendering; entries.jsonl is the record)
//! ```
//!
//! The package always runs from entry 1 to the archive's last checkpoint,
//! so the verifier recomputes the chain from its start to a signature, and
//! sees that every entry it was not given is out of scope (another line
//! tag, or a time outside the window): the line is complete as of that
//! checkpoint. Entries after it wait for the next export.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::canonical::hex;
use crate::chain::line_tag;
use crate::read::{read_archive, read_attachment, Record};
use crate::Error;

pub const FORMAT: &str = "hotline-records-package/1";

/// Which entries to export: one line, from `from` (inclusive) to `to`
/// (exclusive), by `origin_server_ts` in milliseconds.
#[derive(Clone, Debug)]
pub struct Filter {
    pub line: String,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl Filter {
    pub fn in_window(&self, ts: i64) -> bool {
        self.from.is_none_or(|f| ts >= f) && self.to.is_none_or(|t| ts < t)
    }
}

/// A package's files, in memory.
#[derive(Clone, Debug, Default)]
pub struct Package {
    pub manifest: String,
    pub entries: String,
    pub checkpoints: String,
    /// Attachment files by entry: file name, bytes.
    pub attachments: BTreeMap<u64, (String, Vec<u8>)>,
    pub transcript: String,
}

/// What an export did.
#[derive(Debug)]
pub struct ExportReport {
    pub out: PathBuf,
    pub exported: usize,
    pub withheld: usize,
    pub last_seq: u64,
    pub checkpoints: usize,
    /// Entries in scope after the archive's last checkpoint: not exported
    /// (nothing signed covers them yet).
    pub not_yet_covered: usize,
}

/// A file name with only harmless characters.
fn safe_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let s = s.trim_start_matches('.');
    if s.is_empty() {
        "file".into()
    } else {
        s.into()
    }
}

/// The attachment's original name, from its event content.
pub(crate) fn attachment_name(entry: &Value) -> String {
    let c = &entry["content"];
    c["filename"]
        .as_str()
        .or(c["body"].as_str())
        .unwrap_or("file")
        .to_owned()
}

/// Decrypts the archive at `archive` and builds the package for `filter`.
pub fn build(
    archive: &Path,
    identity: &age::x25519::Identity,
    filter: &Filter,
) -> Result<(Package, ExportReport), Error> {
    let contents = read_archive(archive, identity)?;
    let tag = line_tag(&contents.archive_id, &filter.line);
    let in_scope = |r: &Record| r.room_id() == filter.line && filter.in_window(r.ts);
    let Some(last_cp) = contents.checkpoints.last() else {
        return Err(Error::Format(
            "the archive has no checkpoint yet: nothing to export".into(),
        ));
    };
    // Up to the archive's last checkpoint: the package then shows the
    // line complete as of that signature, not only up to its last entry.
    let end = last_cp;
    let not_yet_covered = contents
        .records
        .iter()
        .filter(|r| r.seq > end.seq && in_scope(r))
        .count();
    let mut p = Package::default();
    let (mut exported, mut withheld) = (0, 0);
    let mut shown = Vec::new();
    for r in contents.records.iter().take_while(|r| r.seq <= end.seq) {
        let line = if in_scope(r) {
            exported += 1;
            if let Some(bytes) = read_attachment(archive, identity, r)? {
                let name = format!("{}-{}", r.seq, safe_name(&attachment_name(&r.entry)));
                p.attachments.insert(r.seq, (name, bytes));
            }
            shown.push(r);
            json!({"seq": r.seq, "chain": hex(&r.chain), "entry": r.entry})
        } else {
            withheld += 1;
            json!({"seq": r.seq, "chain": hex(&r.chain),
                   "withheld": {"line": hex(&r.line_tag), "ts": r.ts, "body": hex(&r.body)}})
        };
        p.entries.push_str(&line.to_string());
        p.entries.push('\n');
    }
    let checkpoints: Vec<_> = contents
        .checkpoints
        .iter()
        .take_while(|c| c.seq <= end.seq)
        .collect();
    for c in &checkpoints {
        p.checkpoints
            .push_str(&c.to_json(&contents.checkpoint_key).to_string());
        p.checkpoints.push('\n');
    }
    let manifest = json!({
        "format": FORMAT,
        "archive_id": hex(&contents.archive_id),
        "line": filter.line,
        "line_tag": hex(&tag),
        "from": filter.from,
        "to": filter.to,
        "last_seq": end.seq,
        "exported": exported,
        "withheld": withheld,
        "checkpoint_key": crate::keys::verify_key_text(&contents.checkpoint_key),
        "created_ts": crate::archive::now_ms(),
    });
    p.manifest = format!("{manifest:#}\n");
    p.transcript = crate::transcript::render(filter, &manifest, &shown, &p.attachments);
    let report = ExportReport {
        out: PathBuf::new(),
        exported,
        withheld,
        last_seq: end.seq,
        checkpoints: checkpoints.len(),
        not_yet_covered,
    };
    Ok((p, report))
}

/// `hotline records export`: builds the package and writes it to `out`,
/// which must not exist or be empty.
pub fn export(
    archive: &Path,
    identity: &age::x25519::Identity,
    filter: &Filter,
    out: &Path,
) -> Result<ExportReport, Error> {
    if out.exists()
        && std::fs::read_dir(out)
            .map_err(|e| Error::io(out, e))?
            .next()
            .is_some()
    {
        return Err(Error::Format(format!(
            "{} exists and is not empty",
            out.display()
        )));
    }
    let (package, mut report) = build(archive, identity, filter)?;
    package.write(out)?;
    report.out = out.to_path_buf();
    Ok(report)
}

impl Package {
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        let att = dir.join("attachments");
        std::fs::create_dir_all(&att).map_err(|e| Error::io(&att, e))?;
        let put = |name: &str, bytes: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).map_err(|e| Error::io(&p, e))
        };
        put("manifest.json", self.manifest.as_bytes())?;
        put("entries.jsonl", self.entries.as_bytes())?;
        put("checkpoints.jsonl", self.checkpoints.as_bytes())?;
        put("transcript.html", self.transcript.as_bytes())?;
        for (name, bytes) in self.attachments.values() {
            put(&format!("attachments/{name}"), bytes)?;
        }
        Ok(())
    }

    pub fn read(dir: &Path) -> Result<Package, Error> {
        let get = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))
        };
        let mut p = Package {
            manifest: get("manifest.json")?,
            entries: get("entries.jsonl")?,
            checkpoints: get("checkpoints.jsonl")?,
            transcript: get("transcript.html").unwrap_or_default(),
            attachments: BTreeMap::new(),
        };
        let att = dir.join("attachments");
        if att.is_dir() {
            for e in std::fs::read_dir(&att).map_err(|e| Error::io(&att, e))? {
                let e = e.map_err(|e| Error::io(&att, e))?;
                let name = e.file_name().to_string_lossy().into_owned();
                let seq = name.split('-').next().and_then(|s| s.parse::<u64>().ok());
                if let Some(seq) = seq {
                    let bytes = std::fs::read(e.path()).map_err(|err| Error::io(&e.path(), err))?;
                    p.attachments.insert(seq, (name, bytes));
                }
            }
        }
        Ok(p)
    }
}
