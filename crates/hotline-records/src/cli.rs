//! `hotline records keygen|export|verify`: what each prints. The binary
//! parses flags and calls these.

use std::fmt::Write;
use std::path::Path;

use crate::canonical::utc;
use crate::package::{export as export_package, Filter, Package};
use crate::{keys, Error};

/// `hotline records keygen --out DIR`.
pub fn keygen(out: &Path) -> Result<String, Error> {
    let g = keys::generate(out)?;
    Ok(format!(
        "records office key pair (age X25519: the archive is encrypted to it):\n\
         \x20 {}  SECRET: the records office keeps it offline; `records export --key` reads it\n\
         \x20 {}  public ({}): give it to the archiver\n\
         checkpoint key pair (Ed25519: the archiver signs checkpoints with it):\n\
         \x20 {}  SECRET: the archiver's, and only the archiver's; keep it off the archive disk if you can\n\
         \x20 {}  public ({}): publish it; `records verify --checkpoint-key` takes it\n",
        g.identity.display(),
        g.recipient.display(),
        g.recipient_text,
        g.signing.display(),
        g.verify.display(),
        g.verify_text,
    ))
}

/// `hotline records export`.
pub fn export(
    archive: &Path,
    line: &str,
    from: Option<i64>,
    to: Option<i64>,
    key: &Path,
    out: &Path,
) -> Result<String, Error> {
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(Error::Format(format!("--from {f} is not before --to {t}")));
        }
    }
    let identity = keys::read_identity(key)?;
    let filter = Filter {
        line: line.to_owned(),
        from,
        to,
    };
    let r = export_package(archive, &identity, &filter, out)?;
    let mut s = format!(
        "wrote {}: {} entries of {line} exported, {} other entries withheld (hashes only), \
         entries 1 to {} under {} checkpoints\n\
         \x20 entries.jsonl, checkpoints.jsonl, manifest.json: the record; transcript.html: to read; attachments/\n",
        r.out.display(),
        r.exported,
        r.withheld,
        r.last_seq,
        r.checkpoints,
    );
    if r.not_yet_covered > 0 {
        let _ = writeln!(
            s,
            "note: {} newer entries of this line come after the archive's last checkpoint and are not exported; \
             export again once the archiver has written its next checkpoint",
            r.not_yet_covered
        );
    }
    Ok(s)
}

/// `hotline records verify`: the report, and whether the package verifies.
pub fn verify(package: &Path, checkpoint_key: Option<&str>) -> Result<(String, bool), Error> {
    let key = checkpoint_key.map(keys::parse_verify_key).transpose()?;
    let p = Package::read(package)?;
    let r = crate::verify::verify(&p, key.as_ref());
    let mut s = String::new();
    for problem in &r.problems {
        let _ = writeln!(s, "FAIL {problem}");
    }
    for note in &r.notes {
        let _ = writeln!(s, "note: {note}");
    }
    if r.ok() {
        let _ = write!(
            s,
            "OK: {} exported entries and {} withheld entries chain from entry 1 to {}, \
             under {} valid checkpoints",
            r.exported, r.withheld, r.last_seq, r.checkpoints
        );
        if let Some((n, seq, ts)) = r.last_checkpoint {
            let _ = write!(
                s,
                "; the line is complete as of checkpoint {n} (entry {seq}, signed {})",
                utc(ts)
            );
        }
        s.push('\n');
    } else {
        let _ = writeln!(
            s,
            "the package does not verify: {} problems",
            r.problems.len()
        );
    }
    Ok((s, r.ok()))
}
