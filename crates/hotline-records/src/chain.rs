//! The hash chain and the signed checkpoints: every hash the format
//! defines, in one place, so the writer, the exporter and the verifier
//! cannot disagree.
//!
//! ```text
//! genesis      = SHA-256("hotline-records genesis v1\0" ‖ archive_id)
//! body_n       = SHA-256("hotline-records body v1\0"    ‖ canonical_json(entry_n))
//! line_tag(r)  = SHA-256("hotline-records line v1\0"    ‖ archive_id ‖ room_id r)
//! digest_n     = SHA-256("hotline-records entry v1\0"   ‖ seq_n ‖ line_tag(room_n) ‖ ts_n ‖ body_n)
//! chain_n      = SHA-256("hotline-records chain v1\0"   ‖ chain_{n-1} ‖ digest_n),  chain_0 = genesis
//! checkpoint   = Ed25519 over "hotline-records checkpoint v1\0" ‖ archive_id ‖ number ‖ seq ‖ chain_seq ‖ ts
//! ```
//!
//! Integers are 8 bytes big-endian (`ts` as a two's-complement `i64`).
//! `entry_n` itself holds `seq` and `prev` (= `chain_{n-1}`), so each entry
//! carries its predecessor's hash; `digest_n` repeats the entry's seq, line
//! and time outside the body so that an entry left out of a package can be
//! shown as out of its scope (another line, another time) by its line tag,
//! time and body hash alone.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::canonical::canonical_json;

/// A SHA-256 value.
pub type Hash = [u8; 32];

fn sha(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The chain value before the first entry.
pub fn genesis(archive_id: &[u8; 16]) -> Hash {
    sha(&[b"hotline-records genesis v1\0", archive_id])
}

/// The hash of an entry's canonical JSON.
pub fn body_hash(entry: &serde_json::Value) -> Hash {
    sha(&[b"hotline-records body v1\0", &canonical_json(entry)])
}

/// A line's pseudonym in packages: it names the line to whoever knows its
/// room id, and nothing else.
pub fn line_tag(archive_id: &[u8; 16], room_id: &str) -> Hash {
    sha(&[b"hotline-records line v1\0", archive_id, room_id.as_bytes()])
}

/// The leaf the chain links: the entry's place, line, time and body.
pub fn digest(seq: u64, line_tag: &Hash, ts: i64, body: &Hash) -> Hash {
    sha(&[
        b"hotline-records entry v1\0",
        &seq.to_be_bytes(),
        line_tag,
        &ts.to_be_bytes(),
        body,
    ])
}

/// `chain_n` from `chain_{n-1}` and `digest_n`.
pub fn link(prev: &Hash, digest: &Hash) -> Hash {
    sha(&[b"hotline-records chain v1\0", prev, digest])
}

/// A checkpoint: the archiver's signed statement that entry `seq` has
/// chain value `chain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub archive_id: [u8; 16],
    /// 1 for the archive's first checkpoint, then 2, 3, ...
    pub number: u64,
    /// The last entry covered.
    pub seq: u64,
    pub chain: Hash,
    /// When it was written, milliseconds since the epoch.
    pub ts: i64,
    pub signature: [u8; 64],
}

impl Checkpoint {
    fn message(archive_id: &[u8; 16], number: u64, seq: u64, chain: &Hash, ts: i64) -> Vec<u8> {
        let mut m = Vec::with_capacity(32 + 16 + 8 * 3 + 32);
        m.extend_from_slice(b"hotline-records checkpoint v1\0");
        m.extend_from_slice(archive_id);
        m.extend_from_slice(&number.to_be_bytes());
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(chain);
        m.extend_from_slice(&ts.to_be_bytes());
        m
    }

    pub fn sign(
        key: &SigningKey,
        archive_id: [u8; 16],
        number: u64,
        seq: u64,
        chain: Hash,
        ts: i64,
    ) -> Checkpoint {
        let signature = key
            .sign(&Self::message(&archive_id, number, seq, &chain, ts))
            .to_bytes();
        Checkpoint {
            archive_id,
            number,
            seq,
            chain,
            ts,
            signature,
        }
    }

    /// Whether `key` signed exactly these fields.
    pub fn verifies(&self, key: &VerifyingKey) -> bool {
        let m = Self::message(
            &self.archive_id,
            self.number,
            self.seq,
            &self.chain,
            self.ts,
        );
        key.verify(&m, &Signature::from_bytes(&self.signature))
            .is_ok()
    }

    /// The JSON form, in the archive (encrypted) and in packages.
    pub fn to_json(&self, key: &VerifyingKey) -> serde_json::Value {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        serde_json::json!({
            "archive": crate::canonical::hex(&self.archive_id),
            "n": self.number,
            "seq": self.seq,
            "chain": crate::canonical::hex(&self.chain),
            "ts": self.ts,
            "key": b64.encode(key.as_bytes()),
            "sig": b64.encode(self.signature),
        })
    }

    /// Parses [`Checkpoint::to_json`]'s form (the `key` field is not
    /// trusted here: the verifier chooses the key).
    pub fn from_json(v: &serde_json::Value) -> Option<Checkpoint> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let sig = b64.decode(v.get("sig")?.as_str()?).ok()?;
        Some(Checkpoint {
            archive_id: crate::canonical::unhex(v.get("archive")?.as_str()?)?,
            number: v.get("n")?.as_u64()?,
            seq: v.get("seq")?.as_u64()?,
            chain: crate::canonical::unhex(v.get("chain")?.as_str()?)?,
            ts: v.get("ts")?.as_i64()?,
            signature: sig.try_into().ok()?,
        })
    }
}
