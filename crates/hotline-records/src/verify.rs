//! `hotline records verify`: proves a package complete and untampered, or
//! says which entry fails and how.
//!
//! The checks, in the order their problems are reported:
//! 1. sequence: entries run 1, 2, 3, ... with none missing, repeated or
//!    out of order;
//! 2. chain: each entry's chain value is recomputed from the one before
//!    and its content (an exported entry) or its line tag, time and body
//!    hash (a withheld one); an exported entry must be on the package's
//!    line and in its window, and a withheld one must not be;
//!    attachments must match the hash their entry gives; an entry that
//!    `resolves` a placeholder names an earlier `undecryptable` entry of
//!    the same event (when that one is exported too);
//! 3. checkpoints: each one's signature verifies with the checkpoint key,
//!    and the chain value it signs is the one of the entry it names; the
//!    package must reach its last checkpoint (else its tail was cut) and
//!    every entry must be covered by one.

use std::collections::{BTreeMap, HashMap, HashSet};

use ed25519_dalek::VerifyingKey;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::canonical::{hex, unhex};
use crate::chain::{self, Checkpoint, Hash};
use crate::entry::fields;
use crate::package::{Filter, Package, FORMAT};

/// The verdict.
#[derive(Debug, Default)]
pub struct Report {
    /// Each failure, naming the entry or checkpoint; empty when the package verifies.
    pub problems: Vec<String>,
    /// Remarks that are not failures.
    pub notes: Vec<String>,
    pub exported: usize,
    pub withheld: usize,
    pub last_seq: u64,
    pub checkpoints: usize,
    /// The last valid checkpoint: its number, entry and time.
    pub last_checkpoint: Option<(u64, u64, i64)>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

enum Body {
    Exported(Value),
    Withheld { line: Hash, ts: i64, body: Hash },
}

struct Item {
    seq: u64,
    chain: Hash,
    body: Body,
}

fn parse_item(v: &Value) -> Option<Item> {
    let seq = v.get("seq")?.as_u64()?;
    let chain = unhex(v.get("chain")?.as_str()?)?;
    let body = if let Some(e) = v.get("entry") {
        Body::Exported(e.clone())
    } else {
        let w = v.get("withheld")?;
        Body::Withheld {
            line: unhex(w.get("line")?.as_str()?)?,
            ts: w.get("ts")?.as_i64()?,
            body: unhex(w.get("body")?.as_str()?)?,
        }
    };
    Some(Item { seq, chain, body })
}

/// Missing, repeated and misplaced entry numbers, in the order found.
fn sequence_problems(seqs: &[u64], out: &mut Vec<String>) {
    let mut seen = HashSet::new();
    let mut unique = Vec::with_capacity(seqs.len());
    for &s in seqs {
        if seen.insert(s) {
            unique.push(s);
        } else {
            out.push(format!("entry {s} appears twice"));
        }
    }
    let mut sorted = unique.clone();
    sorted.sort_unstable();
    let mut expected = 1;
    for &s in &sorted {
        if s > expected {
            let (a, b) = (expected, s - 1);
            let jump = if a == 1 {
                format!("sequence starts at {s}")
            } else {
                format!("sequence jumps from {} to {s}", a - 1)
            };
            out.push(if a == b {
                format!("entry {a} missing: {jump}")
            } else {
                format!("entries {a} to {b} missing: {jump}")
            });
        }
        expected = s + 1;
    }
    let mut reported = HashSet::new();
    for (&is, &should) in unique.iter().zip(&sorted) {
        if is != should {
            let pair = (is.min(should), is.max(should));
            if reported.insert(pair) {
                out.push(format!("entries {} and {} out of order", pair.0, pair.1));
            }
        }
    }
}

/// Verifies `p`; checkpoints against `key`, or, without one, against the
/// key the package names (which proves only that the package agrees with
/// itself: say so).
pub fn verify(p: &Package, key: Option<&VerifyingKey>) -> Report {
    let mut r = Report::default();
    let manifest: Value = match serde_json::from_str(&p.manifest) {
        Ok(v) => v,
        Err(e) => {
            r.problems
                .push(format!("manifest.json: not valid JSON ({e})"));
            return r;
        }
    };
    if manifest["format"].as_str() != Some(FORMAT) {
        r.problems
            .push(format!("manifest.json: not a {FORMAT} package"));
        return r;
    }
    let Some(archive_id) = manifest["archive_id"].as_str().and_then(unhex::<16>) else {
        r.problems.push("manifest.json: no archive_id".into());
        return r;
    };
    let filter = Filter {
        line: manifest["line"].as_str().unwrap_or_default().to_owned(),
        from: manifest["from"].as_i64(),
        to: manifest["to"].as_i64(),
    };
    let key = match key {
        Some(k) => *k,
        None => match manifest["checkpoint_key"]
            .as_str()
            .and_then(|k| crate::keys::parse_verify_key(k).ok())
        {
            Some(k) => {
                r.notes.push(format!(
                    "checkpoints were checked against the key the package names ({}); \
                     pass --checkpoint-key with the archiver's published key to know they are its",
                    crate::keys::verify_key_text(&k)
                ));
                k
            }
            None => {
                r.problems
                    .push("manifest.json: no checkpoint_key, and none given".into());
                return r;
            }
        },
    };

    // 1. Sequence.
    let mut items = Vec::new();
    for (i, line) in p.entries.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line)
            .ok()
            .as_ref()
            .and_then(parse_item)
        {
            Some(item) => items.push(item),
            None => r.problems.push(format!(
                "entries.jsonl line {}: not an entry line (damaged)",
                i + 1
            )),
        }
    }
    let seqs: Vec<u64> = items.iter().map(|i| i.seq).collect();
    sequence_problems(&seqs, &mut r.problems);
    items.sort_by_key(|i| i.seq);
    items.dedup_by_key(|i| i.seq);

    // 2. Chain, scope, attachments.
    let this_line = chain::line_tag(&archive_id, &filter.line);
    let mut prev: (u64, Hash) = (0, chain::genesis(&archive_id));
    for it in &items {
        let n = it.seq;
        let before = (prev.0 + 1 == n).then_some(prev.1);
        match &it.body {
            Body::Exported(e) => {
                r.exported += 1;
                let Some(f) = fields(e) else {
                    r.problems
                        .push(format!("entry {n}: not a well-formed entry"));
                    prev = (n, it.chain);
                    continue;
                };
                let body = chain::body_hash(e);
                let digest =
                    chain::digest(n, &chain::line_tag(&archive_id, f.room_id), f.ts, &body);
                if f.seq != n {
                    r.problems
                        .push(format!("entry {n}: its content says it is entry {}", f.seq));
                } else if let Some(b) = before {
                    if f.prev != hex(&b) {
                        r.problems.push(format!(
                            "entry {n}: does not follow entry {}: its prev hash is not entry {}'s hash",
                            n - 1,
                            n - 1
                        ));
                    } else if chain::link(&b, &digest) != it.chain {
                        r.problems
                            .push(format!("entry {n}: hash does not match its content"));
                    }
                }
                if f.room_id != filter.line {
                    r.problems.push(format!(
                        "entry {n}: exported, but on another line ({}) than the package's",
                        f.room_id
                    ));
                } else if !filter.in_window(f.ts) {
                    r.problems.push(format!(
                        "entry {n}: exported, but outside the package's time window"
                    ));
                }
                check_attachment(n, e, &p.attachments, &mut r.problems);
            }
            Body::Withheld { line, ts, body } => {
                r.withheld += 1;
                if let Some(b) = before {
                    if chain::link(&b, &chain::digest(n, line, *ts, body)) != it.chain {
                        r.problems.push(format!(
                            "entry {n} (withheld): hash does not match its line, time and body hash"
                        ));
                    }
                }
                if *line == this_line && filter.in_window(*ts) {
                    r.problems.push(format!(
                        "entry {n}: withheld, but it is on this line within the window: the package leaves it out"
                    ));
                }
            }
        }
        prev = (n, it.chain);
    }
    resolution_problems(&items, &mut r.problems);
    r.last_seq = items.last().map_or(0, |i| i.seq);

    // 3. Checkpoints.
    let chain_at: HashMap<u64, Hash> = items.iter().map(|i| (i.seq, i.chain)).collect();
    let mut covered = 0;
    let mut truncated = false;
    for (i, line) in p.checkpoints.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some(cp) = serde_json::from_str::<Value>(line)
            .ok()
            .as_ref()
            .and_then(Checkpoint::from_json)
        else {
            r.problems.push(format!(
                "checkpoints.jsonl line {}: not a checkpoint (damaged)",
                i + 1
            ));
            continue;
        };
        let label = format!("checkpoint {}", cp.number);
        if cp.archive_id != archive_id {
            r.problems
                .push(format!("{label}: belongs to another archive"));
            continue;
        }
        if !cp.verifies(&key) {
            r.problems
                .push(format!("{label}: signature does not verify"));
            continue;
        }
        r.checkpoints += 1;
        if cp.seq > r.last_seq {
            if !truncated {
                r.problems.push(format!(
                    "tail truncated: checkpoint at {} covers entries past {}",
                    cp.seq, r.last_seq
                ));
            }
            truncated = true;
            continue;
        }
        match chain_at.get(&cp.seq) {
            Some(h) if *h == cp.chain => {
                covered = covered.max(cp.seq);
                r.last_checkpoint = Some((cp.number, cp.seq, cp.ts));
            }
            Some(_) => r.problems.push(format!(
                "{label}: the chain hash it signs is not entry {}'s",
                cp.seq
            )),
            None => r.problems.push(format!(
                "{label}: covers entry {}, which is missing",
                cp.seq
            )),
        }
    }
    if r.checkpoints == 0 {
        r.problems
            .push("no checkpoint verifies: nothing in the package is proven".into());
    } else if !truncated && r.last_seq > covered {
        r.problems.push(format!(
            "entries {} to {} are not covered by a signed checkpoint",
            covered + 1,
            r.last_seq
        ));
    }
    if let Some(m) = manifest["last_seq"].as_u64() {
        if !truncated && m > r.last_seq {
            r.problems.push(format!(
                "tail truncated: the manifest lists entries up to {m}, the package ends at {}",
                r.last_seq
            ));
        }
    }
    r
}

/// Each exported entry's `resolves` names an earlier entry; when that one
/// is exported too, it is the `undecryptable` placeholder of the same event.
fn resolution_problems(items: &[Item], problems: &mut Vec<String>) {
    let exported: HashMap<u64, &Value> = items
        .iter()
        .filter_map(|i| match &i.body {
            Body::Exported(e) => Some((i.seq, e)),
            Body::Withheld { .. } => None,
        })
        .collect();
    for it in items {
        let Body::Exported(e) = &it.body else {
            continue;
        };
        let Some(r) = e.get("resolves") else {
            continue;
        };
        let n = it.seq;
        let Some(m) = r.as_u64().filter(|m| *m < n) else {
            problems.push(format!(
                "entry {n}: resolves {r}, which is not an earlier entry"
            ));
            continue;
        };
        if let Some(p) = exported.get(&m) {
            if p["kind"] != "undecryptable" || p["event_id"] != e["event_id"] {
                problems.push(format!(
                    "entry {n}: resolves entry {m}, which is not the undecryptable placeholder of its event"
                ));
            }
        }
    }
}

fn check_attachment(
    n: u64,
    e: &Value,
    files: &BTreeMap<u64, (String, Vec<u8>)>,
    problems: &mut Vec<String>,
) {
    let Some(a) = e.get("attachment") else {
        return;
    };
    match files.get(&n) {
        None => problems.push(format!("entry {n}: its attachment file is missing")),
        Some((name, bytes)) => {
            if a["sha256"].as_str() != Some(hex(&Sha256::digest(bytes)).as_str()) {
                problems.push(format!(
                    "entry {n}: attachment {name} does not match the hash in its entry"
                ));
            }
        }
    }
}
