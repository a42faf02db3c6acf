//! Official identity and direct lines (docs/DESIGN.md capabilities 4 and 5).
//!
//! - Enrolment: the protocol office enrols an official (`hotline admin
//!   enroll`); a one-time, expiring code lets the official set a password.
//! - Vouching: after comparing the master-key fingerprint in person, the
//!   office has the server sign an attestation with its Ed25519 key (the one
//!   at `/_matrix/key/v2/server`); `GET /_hotline/v1/directory` lists them.
//! - Impersonation guard: names that pass for an enrolled official's name
//!   or user id ([`crate::names`]) are refused to anyone else.
//! - Direct lines: principals are reachable (invites, rooms, to-device) only
//!   by their own aides and by offices that hold a line with them; lines are
//!   opened by redeeming a line invite.
//!
//! **Architecture Invariant:** every enrolment, vouch, revocation, line
//! invite created, redeemed or revoked, and refused impersonation is written
//! to the append-only audit log in the same transaction as its effect.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use hotline_store::{AttestationRow, LineRow, WriteBatch, WriteOp};
use ruma::signatures::Ed25519KeyPair;
use ruma::{OwnedUserId, UserId};
use serde_json::{json, Value};

pub use hotline_store::{AuditRow, LineInviteRedemption, LineInviteRow, OfficialRow};

use crate::accounts::{random_string, Sender, Session};
use crate::policy::Origin;
use crate::{now_ms, Error, Result, Services};

/// How long an attestation is valid.
const ATTESTATION_DAYS: i64 = 365;

/// The server's signing key: signs attestations, events and federation
/// requests, published at `/_matrix/key/v2/server` with the keys it
/// replaced (`hotline admin rotate-signing-key`).
pub struct ServerKey {
    pair: Ed25519KeyPair,
    /// `ed25519:{version}`.
    pub key_id: String,
    /// Keys rotated out: `(key id, public key, when it stopped being used)`,
    /// from `signing.old` (one `KEY_ID PUBLIC_KEY EXPIRED_TS` per line).
    old: Vec<(String, String, i64)>,
}

/// A new `signing.key` file's text: a fresh key and its version.
fn new_key_text() -> String {
    let der = Ed25519KeyPair::generate();
    let version = format!("a_{}", random_string(4));
    format!(
        "{version} {}\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

/// Writes `text` to `path` (mode 0600) durably: a temporary file, synced,
/// renamed over, the directory synced.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(Error::internal)?;
    f.write_all(text.as_bytes()).map_err(Error::internal)?;
    f.sync_all().map_err(Error::internal)?;
    std::fs::rename(&tmp, path).map_err(Error::internal)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(Error::internal)?;
    }
    Ok(())
}

/// The text of the secret file `path`; on first use, `make`'s, written
/// there first (mode 0600, synced). Never replaces a file: a process that
/// loses a race to create it reads the winner's.
pub(crate) fn read_or_create_private(path: &Path, make: impl FnOnce() -> String) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(t) => return Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::internal(e)),
    }
    let text = make();
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    let mut f = match created {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return std::fs::read_to_string(path).map_err(Error::internal)
        }
        Err(e) => return Err(Error::internal(e)),
    };
    f.write_all(text.as_bytes()).map_err(Error::internal)?;
    f.sync_all().map_err(Error::internal)?;
    Ok(text)
}

impl ServerKey {
    /// Loads the key from `dir/signing.key`, creating it (mode 0600) on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let text = read_or_create_private(&dir.join("signing.key"), new_key_text)?;
        let old = match std::fs::read_to_string(dir.join("signing.old")) {
            Ok(t) => t
                .lines()
                .filter_map(|l| {
                    let mut parts = l.split_whitespace();
                    let (id, key, ts) = (parts.next()?, parts.next()?, parts.next()?);
                    Some((id.to_owned(), key.to_owned(), ts.parse().ok()?))
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::internal(e)),
        };
        let (version, der) = text
            .trim()
            .split_once(' ')
            .ok_or_else(|| Error::internal("malformed signing.key"))?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(der)
            .map_err(Error::internal)?;
        let pair = Ed25519KeyPair::from_der(&der, version.to_owned()).map_err(Error::internal)?;
        Ok(ServerKey {
            pair,
            key_id: format!("ed25519:{version}"),
            old,
        })
    }

    /// Replaces the key in `dir` with a new one; the old one is kept in
    /// `signing.old` as expired now, so what it signed still verifies.
    /// Every server process on `dir` must restart to use the new key.
    /// Answers the old and the new key ids.
    pub fn rotate(dir: &Path) -> Result<(String, String)> {
        let current = Self::load_or_create(dir)?;
        let mut old_text = std::fs::read_to_string(dir.join("signing.old")).unwrap_or_default();
        old_text.push_str(&format!(
            "{} {} {}\n",
            current.key_id,
            current.public_key(),
            now_ms()
        ));
        write_private(&dir.join("signing.old"), &old_text)?;
        write_private(&dir.join("signing.key"), &new_key_text())?;
        let new = Self::load_or_create(dir)?;
        Ok((current.key_id, new.key_id))
    }

    /// The key pair (for signing federation requests).
    pub(crate) fn pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    /// The rotated-out keys, as `old_verify_keys`.
    pub fn old_keys_json(&self) -> Value {
        self.old
            .iter()
            .map(|(id, key, ts)| (id.clone(), json!({"key": key, "expired_ts": ts})))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// A rotated-out key that was still in use at `at_ts`.
    pub fn old_key(&self, key_id: &str, at_ts: i64) -> Option<String> {
        self.old
            .iter()
            .find(|(id, _, expired)| id == key_id && *expired > at_ts)
            .map(|(_, key, _)| key.clone())
    }

    /// The public key, unpadded base64.
    pub fn public_key(&self) -> String {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.pair.public_key())
    }

    /// Signs `object` in place (Matrix signed JSON: `signatures.{server}.{key_id}`).
    pub fn sign(&self, server_name: &str, object: &mut Value) -> Result<()> {
        let mut canonical = match ruma::CanonicalJsonValue::try_from(object.clone()) {
            Ok(ruma::CanonicalJsonValue::Object(o)) => o,
            _ => return Err(Error::internal("only canonical JSON objects can be signed")),
        };
        ruma::signatures::sign_json(server_name, &self.pair, &mut canonical)
            .map_err(Error::internal)?;
        *object = serde_json::to_value(canonical).map_err(Error::internal)?;
        Ok(())
    }
}

/// A verified attestation's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    pub user_id: String,
    pub name: String,
    pub title: String,
    pub country: String,
    pub role: String,
    pub principal: Option<String>,
    pub master_key: String,
    pub issued_ts: i64,
    pub expires_ts: i64,
}

/// Checks an attestation's signature by `issuer` with the Ed25519 public key
/// `public_key` (unpadded base64) and its validity at `now`.
pub fn verify_attestation(
    attestation: &Value,
    issuer: &str,
    key_id: &str,
    public_key: &str,
    now: i64,
) -> std::result::Result<Attestation, String> {
    let obj = match ruma::CanonicalJsonValue::try_from(attestation.clone()) {
        Ok(ruma::CanonicalJsonValue::Object(o)) => o,
        _ => return Err("not a JSON object".into()),
    };
    let sig = attestation["signatures"][issuer][key_id]
        .as_str()
        .ok_or("no signature by the issuer")?;
    let sig = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(sig.trim_end_matches('='))
        .map_err(|_| "signature is not base64")?;
    let key = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(public_key.trim_end_matches('='))
        .map_err(|_| "key is not base64")?;
    let canonical =
        ruma::signatures::to_canonical_json_string_for_signing(&obj).map_err(|e| e.to_string())?;
    ruma::signatures::verify_canonical_json_bytes(
        &ruma::SigningKeyAlgorithm::Ed25519,
        &key,
        &sig,
        canonical.as_bytes(),
    )
    .map_err(|_| "signature does not verify".to_string())?;
    let s = |k: &str| attestation[k].as_str().map(str::to_owned);
    let a = Attestation {
        user_id: s("user_id").ok_or("no user_id")?,
        name: s("name").ok_or("no name")?,
        title: s("title").ok_or("no title")?,
        country: s("country").ok_or("no country")?,
        role: s("role").ok_or("no role")?,
        principal: s("principal"),
        master_key: s("master_key").ok_or("no master_key")?,
        issued_ts: attestation["issued_ts"].as_i64().ok_or("no issued_ts")?,
        expires_ts: attestation["expires_ts"].as_i64().ok_or("no expires_ts")?,
    };
    if a.expires_ts <= now {
        return Err("attestation expired".into());
    }
    if attestation["issuer"].as_str() != Some(issuer) {
        return Err("issuer mismatch".into());
    }
    Ok(a)
}

/// An official a name passes for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resembled {
    pub user_id: String,
    pub name: String,
    pub title: String,
    pub country: String,
}

/// Two principals in the order a line records them.
pub(crate) fn line_pair<'a>(x: &'a UserId, y: &'a UserId) -> (&'a UserId, &'a UserId) {
    if x.as_str() <= y.as_str() {
        (x, y)
    } else {
        (y, x)
    }
}

/// Refuses an invite that is revoked, expired or used up, in the words a
/// redeemer sees (on this server or, through theirs, on another).
pub(crate) fn check_redeemable(inv: &LineInviteRow) -> Result<()> {
    let refuse = |why: &str| Err(Error::forbidden(format!("This line invite {why}")));
    if inv.revoked {
        return refuse("was revoked by its office");
    }
    if inv.expires_ts.is_some_and(|t| t <= now_ms()) {
        return refuse("has expired");
    }
    if inv.uses_allowed.is_some_and(|n| inv.uses >= n) {
        return refuse("has been used up");
    }
    Ok(())
}

/// What a line invite shows before it is redeemed: who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineInvitePreview {
    /// The principal a redeemer gets a line with.
    pub principal: String,
    pub name: String,
    pub title: String,
    pub country: String,
    pub office: String,
    pub expires_ts: Option<i64>,
}

/// A user's current master key, for `hotline admin show-key`.
pub struct CurrentKey {
    pub user_id: String,
    pub official: Option<OfficialRow>,
    /// Unpadded base64; `None` before the user set up cross-signing.
    pub master_key: Option<String>,
    /// [`crate::fingerprint`]'s 12 groups of 5 digits, space-separated.
    pub digits: Option<String>,
}

/// What `hotline admin enroll` asks for.
pub struct Enrolment {
    pub username: String,
    pub name: String,
    pub title: String,
    pub country: String,
    pub office: String,
    pub role: String,
    pub principal: Option<String>,
    pub valid_hours: i64,
}

pub(crate) fn audit(actor: &str, action: &str, subject: &str, detail: Value) -> WriteOp {
    WriteOp::AppendAudit(AuditRow {
        seq: 0,
        ts: now_ms(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        detail: detail.to_string(),
    })
}

fn digest(s: &str) -> String {
    use sha2::Digest;
    hex_lower(&sha2::Sha256::digest(s.as_bytes()))
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Normalises a key fingerprint as shown to humans (spaces, padding) to the
/// unpadded base64 public key.
fn normalise_fingerprint(f: &str) -> String {
    f.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .trim_end_matches('=')
        .to_owned()
}

impl Services {
    // ----- enrolment -----

    /// `hotline admin enroll`: creates the pending account; returns
    /// `(user_id, one-time code)`.
    pub async fn enroll(&self, e: Enrolment) -> Result<(OwnedUserId, String)> {
        // `recorder`: the records office's archiver (`[records] archiver`),
        // vouched for like an official so everyone's device shows whose it
        // is; it is nobody's principal and nobody's aide.
        if !matches!(&e.role[..], "principal" | "aide" | "recorder") {
            return Err(Error::invalid_param(
                "role must be principal, aide or recorder",
            ));
        }
        let principal = match (&e.role[..], &e.principal) {
            ("aide", Some(p)) => {
                let p = self.local_user_id(p)?;
                match self.store.get_official(p.as_str())? {
                    Some(o) if o.role == "principal" => Some(p.to_string()),
                    _ => {
                        return Err(Error::invalid_param(
                            "The principal served must be an enrolled principal",
                        ))
                    }
                }
            }
            ("aide", None) => return Err(Error::invalid_param("An aide needs --principal")),
            (_, Some(_)) => return Err(Error::invalid_param("Only an aide serves a principal")),
            _ => None,
        };
        let user_id = self.local_user_id(&e.username)?;
        if self.store.get_user(user_id.as_str())?.is_some() {
            return Err(Error::UserInUse);
        }
        self.create_user(&user_id, None, Some(e.name.clone()))
            .await?;
        let code = random_string(24);
        let row = OfficialRow {
            user_id: user_id.to_string(),
            // Kept for the column; the guard normalises names when it compares.
            skeleton: crate::names::skeleton(&e.name),
            name: e.name,
            title: e.title,
            country: e.country,
            office: e.office,
            role: e.role,
            principal,
            enrol_code_hash: Some(digest(&code)),
            enrol_expires_ts: Some(now_ms() + e.valid_hours * 3_600_000),
            enrolled_ts: None,
            created_ts: now_ms(),
        };
        let mut batch = WriteBatch::new();
        batch.push(audit(
            "protocol-office",
            "enrol",
            user_id.as_str(),
            json!({"name": row.name, "title": row.title, "country": row.country, "office": row.office, "role": row.role, "principal": row.principal}),
        ));
        batch.push(WriteOp::PutOfficial(row));
        self.store.write(batch).await?;
        Ok((user_id, code))
    }

    /// `GET /_hotline/v1/enrol/{code}`: whose enrolment a code opens, so
    /// the enrolment screen names the official before a password is set (a
    /// link forwarded to the wrong person shows at once). The code is the
    /// credential itself (it sets the password), so its holder learns
    /// nothing a redeem would not tell them: a redeem checks the code the
    /// same way, here, first.
    pub fn preview_enrolment(&self, code: &str) -> Result<OfficialRow> {
        let o = self
            .store
            .official_by_enrol_code(&digest(code))?
            .ok_or_else(|| Error::forbidden("Unknown or already used enrolment code"))?;
        if o.enrol_expires_ts.is_some_and(|t| t <= now_ms()) {
            return Err(Error::forbidden(
                "This enrolment code has expired; ask the protocol office for a new one",
            ));
        }
        Ok(o)
    }

    /// `POST /_hotline/v1/enrol/{code}`: sets the password and signs in;
    /// also returns the official's record, so the enrolment screens can
    /// say whose enrolment it is.
    pub async fn redeem_enrolment(
        &self,
        code: &str,
        password: String,
        device_id: Option<String>,
        device_name: Option<String>,
    ) -> Result<(Session, OfficialRow)> {
        let mut o = self.preview_enrolment(code)?;
        if password.len() < 8 || password.len() > 1024 {
            return Err(Error::invalid_param(
                "The password must have 8 to 1024 characters",
            ));
        }
        let user_id = UserId::parse(o.user_id.as_str()).map_err(Error::internal)?;
        // Before the code is used up, so a refused device name can be retried.
        self.check_device_name(&user_id, device_name.as_deref())?;
        let hash = self.accounts.hash_password(password).await?;
        o.enrol_code_hash = None;
        o.enrolled_ts = Some(now_ms());
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::SetPassword {
            user_id: o.user_id.clone(),
            password_hash: hash,
        });
        batch.push(audit(
            &o.user_id,
            "enrolment_redeemed",
            &o.user_id,
            json!({}),
        ));
        batch.push(WriteOp::PutOfficial(o.clone()));
        self.store.write(batch).await?;
        let session = self.open_session(&user_id, device_id, device_name).await?;
        Ok((session, o))
    }

    // ----- vouching -----

    /// `hotline admin vouch`: signs an attestation binding the official to
    /// the master key the office compared in person.
    pub async fn vouch(&self, user: &str, fingerprint: &str) -> Result<Value> {
        let user_id = self.local_user_id(user)?;
        let o = self
            .store
            .get_official(user_id.as_str())?
            .ok_or_else(|| Error::not_found("Not an enrolled official"))?;
        if o.enrolled_ts.is_none() {
            return Err(Error::forbidden(
                "The official has not redeemed their enrolment yet",
            ));
        }
        let master = self
            .master_public_key(user_id.as_str())?
            .ok_or_else(|| Error::forbidden("The official has no cross-signing master key yet"))?;
        // The office types what it compared: the digit form, or the base64 key.
        let matches = match crate::fingerprint::typed_digits(fingerprint) {
            Some(typed) => crate::fingerprint::digits_of_base64(&master, user_id.as_str())
                .is_some_and(|d| d.replace(' ', "") == typed),
            None => normalise_fingerprint(fingerprint) == master,
        };
        if !matches {
            return Err(Error::forbidden(
                "The fingerprint does not match the official's current master key",
            ));
        }
        let issued = now_ms();
        let mut att = json!({
            "type": "org.hotline.attestation.v1",
            "issuer": self.server_name().as_str(),
            "user_id": o.user_id,
            "name": o.name,
            "title": o.title,
            "country": o.country,
            "office": o.office,
            "role": o.role,
            "master_key": master,
            "issued_ts": issued,
            "expires_ts": issued + ATTESTATION_DAYS * 86_400_000,
        });
        if let Some(p) = &o.principal {
            att["principal"] = json!(p);
        }
        self.server_key
            .sign(self.server_name().as_str(), &mut att)?;
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::PutAttestation(AttestationRow {
            user_id: o.user_id.clone(),
            json: att.to_string(),
            issued_ts: issued,
            revoked_ts: None,
        }));
        batch.push(audit(
            "protocol-office",
            "vouch",
            &o.user_id,
            json!({"master_key": master}),
        ));
        // Everyone sharing a room re-reads the directory on this change,
        // here and on the other servers.
        batch.push(WriteOp::KeyChange {
            user_id: o.user_id.clone(),
        });
        batch.ops.extend(self.device_list_update_edus(&user_id)?);
        self.store.write(batch).await?;
        Ok(att)
    }

    /// `hotline admin show-key`: the user's current master key, as base64
    /// and in the digit form, and their official record if enrolled.
    pub fn current_key(&self, user: &str) -> Result<CurrentKey> {
        let user_id = self.local_user_id(user)?;
        let official = self.store.get_official(user_id.as_str())?;
        if official.is_none() && self.store.get_user(user_id.as_str())?.is_none() {
            return Err(Error::not_found("No such user"));
        }
        let master_key = self.master_public_key(user_id.as_str())?;
        let digits = master_key
            .as_deref()
            .and_then(|k| crate::fingerprint::digits_of_base64(k, user_id.as_str()));
        Ok(CurrentKey {
            user_id: user_id.to_string(),
            official,
            master_key,
            digits,
        })
    }

    /// `hotline admin revoke`: the attestation stops counting at once.
    pub async fn revoke(&self, user: &str) -> Result<()> {
        let user_id = self.local_user_id(user)?;
        let current = self
            .store
            .get_attestation(user_id.as_str())?
            .is_some_and(|a| a.revoked_ts.is_none());
        if !current {
            return Err(Error::not_found("No current attestation for this user"));
        }
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::RevokeAttestation {
            user_id: user_id.to_string(),
            ts: now_ms(),
        });
        batch.push(audit(
            "protocol-office",
            "revoke",
            user_id.as_str(),
            json!({}),
        ));
        batch.push(WriteOp::KeyChange {
            user_id: user_id.to_string(),
        });
        batch.ops.extend(self.device_list_update_edus(&user_id)?);
        self.store.write(batch).await?;
        Ok(())
    }

    /// `GET /_hotline/v1/directory`.
    pub fn directory(&self) -> Result<Value> {
        let mut attestations = Vec::new();
        let mut revocations = Vec::new();
        for a in self.store.list_attestations()? {
            match a.revoked_ts {
                Some(ts) => revocations.push(json!({"user_id": a.user_id, "revoked_ts": ts})),
                None => attestations
                    .push(serde_json::from_str::<Value>(&a.json).map_err(Error::internal)?),
            }
        }
        Ok(json!({
            "issuer": self.server_name().as_str(),
            "verify_keys": { (self.server_key.key_id.clone()): {"key": self.server_key.public_key()} },
            "old_verify_keys": self.server_key.old_keys_json(),
            "attestations": attestations,
            "revocations": revocations,
        }))
    }

    /// `hotline admin audit`.
    pub fn audit_entries(&self) -> Result<Vec<AuditRow>> {
        Ok(self.store.audit_log()?)
    }

    // ----- impersonation guard -----

    /// Refuses `text` (a display name, a device name, a room name or alias)
    /// when it passes for an enrolled official's name or user id
    /// ([`crate::names::impersonates`]) and `actor` is not that official.
    pub(crate) fn guard_name(&self, actor: &str, what: &str, text: &str) -> Result<()> {
        let candidate = crate::names::Candidate::new(text);
        self.guard(actor, what, text, |o| {
            crate::names::impersonates(&candidate, o)
        })
    }

    /// Refuses a username (a localpart) that passes for an enrolled
    /// official's ([`crate::names::impersonates_username`]).
    pub(crate) fn guard_username(&self, actor: &str, localpart: &str) -> Result<()> {
        self.guard(actor, "username", localpart, |o| {
            crate::names::impersonates_username(localpart, o)
        })
    }

    /// Refuses `text` when `matches` one enrolled official other than
    /// `actor`, with an audit entry.
    fn guard(
        &self,
        actor: &str,
        what: &str,
        text: &str,
        matches: impl Fn(&crate::names::Official) -> bool,
    ) -> Result<()> {
        let Some(o) = self.passes_for(actor, matches)? else {
            return Ok(());
        };
        // The refusal is answered now; its audit entry commits on its own.
        let write = self.store.write(WriteBatch::one(audit(
            actor,
            "impersonation_refused",
            &o.user_id,
            json!({"field": what, "attempt": text}),
        )));
        tokio::spawn(async move {
            if let Err(e) = write.await {
                tracing::error!(error = %e, "audit write failed");
            }
        });
        Err(Error::forbidden(format!(
            "This {what} is too close to the name of {}, {} of {}, an enrolled official",
            o.name, o.title, o.country
        )))
    }

    /// The official, other than `actor`, that `matches`: this server's
    /// enrolled officials and the peers' (as last read). Officials are
    /// normalised here, per check: they are few, and the rules may change
    /// without a migration.
    fn passes_for(
        &self,
        actor: &str,
        matches: impl Fn(&crate::names::Official) -> bool,
    ) -> Result<Option<Resembled>> {
        let local = self.store.list_officials()?.into_iter().map(|o| Resembled {
            user_id: o.user_id,
            name: o.name,
            title: o.title,
            country: o.country,
        });
        let peers = self.peer_officials().into_iter().map(|a| Resembled {
            user_id: a.user_id,
            name: a.name,
            title: a.title,
            country: a.country,
        });
        for o in local.chain(peers) {
            if o.user_id != actor && matches(&crate::names::Official::new(&o.name, &o.user_id)) {
                return Ok(Some(o));
            }
        }
        Ok(None)
    }

    /// `GET /_hotline/v1/resembles`: the official (of this server or a
    /// peer) whose name `user`'s display name `name` passes for, unless
    /// `user` is that official: what the web app warns of beside a user of
    /// another server, whose name this server's guard never saw.
    pub fn resembled_official(&self, user: &UserId, name: &str) -> Result<Option<Resembled>> {
        let candidate = crate::names::Candidate::new(name);
        self.passes_for(user.as_str(), |o| crate::names::impersonates(&candidate, o))
    }

    // ----- direct lines -----

    /// `POST /_hotline/v1/line_invites`.
    pub async fn create_line_invite(
        &self,
        sender: &UserId,
        max_uses: Option<i64>,
        expires_in_ms: Option<i64>,
        for_user: Option<String>,
    ) -> Result<LineInviteRow> {
        let principal = self.principal_of(sender)?.ok_or_else(|| {
            Error::forbidden("Only principals and their aides create line invites")
        })?;
        if max_uses.is_some_and(|n| n < 1) {
            return Err(Error::invalid_param("max_uses must be at least 1"));
        }
        let for_user = match for_user {
            Some(u) => Some(
                UserId::parse(u.as_str())
                    .map_err(|_| Error::invalid_param("for_user must be a user id"))?
                    .to_string(),
            ),
            None => None,
        };
        let expires_in = expires_in_ms.unwrap_or(7 * 86_400_000);
        if !(1_000..=90 * 86_400_000).contains(&expires_in) {
            return Err(Error::invalid_param(
                "expires_in_ms must be between one second and 90 days",
            ));
        }
        let row = LineInviteRow {
            code: random_string(22),
            principal: principal.to_string(),
            created_by: sender.to_string(),
            for_user,
            uses_allowed: Some(max_uses.unwrap_or(1)),
            uses: 0,
            expires_ts: Some(now_ms() + expires_in),
            revoked: false,
            created_ts: now_ms(),
        };
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::PutLineInvite(row.clone()));
        batch.push(audit(
            sender.as_str(),
            "line_invite_created",
            principal.as_str(),
            json!({"uses_allowed": row.uses_allowed, "expires_ts": row.expires_ts, "for_user": row.for_user, "code_prefix": &row.code[..4]}),
        ));
        self.store.write(batch).await?;
        Ok(row)
    }

    /// `GET /_hotline/v1/line_invites`: the invites of the sender's
    /// principal, each with who redeemed it (oldest first).
    pub fn line_invites(
        &self,
        sender: &UserId,
    ) -> Result<Vec<(LineInviteRow, Vec<LineInviteRedemption>)>> {
        let principal = self
            .principal_of(sender)?
            .ok_or_else(|| Error::forbidden("Only principals and their aides have line invites"))?;
        let mut redeemed: BTreeMap<String, Vec<LineInviteRedemption>> = BTreeMap::new();
        for r in self.store.line_invite_redemptions_of(principal.as_str())? {
            redeemed.entry(r.code.clone()).or_default().push(r);
        }
        Ok(self
            .store
            .line_invites_of(principal.as_str())?
            .into_iter()
            .map(|i| {
                let by = redeemed.remove(&i.code).unwrap_or_default();
                (i, by)
            })
            .collect())
    }

    /// `GET /_hotline/v1/line_invites/{code}`: who is calling, before a
    /// redeem. Any signed-in user may ask about a code they hold: what it
    /// shows (the inviting principal's name, title, country, office) is in
    /// the directory every signed-in user reads already, and only a
    /// principal can redeem. It does not show its uses, who created it, or
    /// whom it is bound to; a code bound to someone else, revoked or expired
    /// is refused in the words (and errcodes) a redeem would use, and an
    /// unknown one is `M_NOT_FOUND`. Used-up codes are shown: their
    /// redeemers open them again to get back to their line. Callers are
    /// limited per user and per address ([`crate::ratelimit`]) before this.
    pub fn preview_line_invite(&self, sender: &UserId, code: &str) -> Result<LineInvitePreview> {
        let inv = self.line_invite_for(code, sender)?;
        let refuse = |why: &str| Error::forbidden(format!("This line invite {why}"));
        if inv.revoked {
            return Err(refuse("was revoked by its office"));
        }
        if inv.expires_ts.is_some_and(|t| t <= now_ms()) {
            return Err(refuse("has expired"));
        }
        let o = self
            .store
            .get_official(&inv.principal)?
            .ok_or_else(|| Error::not_found("Unknown line invite"))?;
        Ok(LineInvitePreview {
            principal: o.user_id,
            name: o.name,
            title: o.title,
            country: o.country,
            office: o.office,
            expires_ts: inv.expires_ts,
        })
    }

    /// `DELETE /_hotline/v1/line_invites/{code}`.
    pub async fn revoke_line_invite(&self, sender: &UserId, code: &str) -> Result<()> {
        let inv = self
            .store
            .get_line_invite(code)?
            .ok_or_else(|| Error::not_found("Unknown line invite"))?;
        if self.principal_of(sender)?.as_ref().map(|p| p.as_str()) != Some(inv.principal.as_str()) {
            return Err(Error::forbidden(
                "Only the inviting office may revoke this invite",
            ));
        }
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::RevokeLineInvite {
            code: code.to_owned(),
        });
        batch.push(audit(
            sender.as_str(),
            "line_invite_revoked",
            &inv.principal,
            json!({"code_prefix": &code[..4.min(code.len())]}),
        ));
        self.store.write(batch).await?;
        Ok(())
    }

    /// `POST /_hotline/v1/line_invites/{code}/redeem`: opens the line (a
    /// direct, encrypted room between the two principals) or returns the
    /// existing one.
    ///
    /// Redeeming is idempotent per principal: a principal who already holds
    /// a line with the inviting office gets that line again (with the
    /// office's principal joined, should an earlier redeem have stopped
    /// short of it). The invite's use is counted by a conditional write in
    /// the transaction that creates the room and the line, so concurrent
    /// redeems never open more lines than the invite allows.
    pub async fn redeem_line_invite(
        &self,
        sender: &Sender,
        code: &str,
    ) -> Result<ruma::OwnedRoomId> {
        let me = &sender.user_id;
        // One redemption at a time in this process, so a principal's second
        // redeem finds the line their first one opened. Redeems are rare
        // human acts; the conditional write still guards other processes.
        let _one_at_a_time = self.line_redeem_lock.lock().await;
        let inv = self.line_invite_for(code, me)?;
        let mine = self.principal_of(me)?.filter(|p| p == me).ok_or_else(|| {
            Error::forbidden("Only an enrolled principal can redeem a line invite")
        })?;
        let theirs = UserId::parse(inv.principal.as_str()).map_err(Error::internal)?;
        if mine == theirs {
            return Err(Error::invalid_param("This is your own line invite"));
        }
        if let Some(room_id) = self.existing_line(&mine, &theirs).await? {
            return Ok(room_id);
        }
        check_redeemable(&inv)?;
        let created = self
            .create_line_room(me, vec![theirs.clone()], me, &theirs, &inv, json!({}))
            .await;
        let room_id = match created {
            Ok(room_id) => room_id,
            // Another process opened this line meanwhile.
            Err(e) => match self.existing_line(&mine, &theirs).await? {
                Some(room_id) => return Ok(room_id),
                None => return Err(e),
            },
        };
        self.join_line(&theirs, &room_id).await?;
        // Each side sees the other's availability from the line's start.
        self.spread_availability(&room_id, &[me, &theirs]).await?;
        self.add_direct_room(me, std::slice::from_ref(&theirs), &room_id)
            .await?;
        self.add_direct_room(&theirs, std::slice::from_ref(me), &room_id)
            .await?;
        Ok(room_id)
    }

    /// The line invite `code`, when `user` may use it: `M_NOT_FOUND` for
    /// an unknown code, refused when it is bound to someone else.
    pub(crate) fn line_invite_for(&self, code: &str, user: &UserId) -> Result<LineInviteRow> {
        let inv = self
            .store
            .get_line_invite(code)?
            .ok_or_else(|| Error::not_found("Unknown line invite"))?;
        if inv.for_user.as_deref().is_some_and(|u| u != user.as_str()) {
            return Err(Error::forbidden(
                "This line invite is meant for someone else",
            ));
        }
        Ok(inv)
    }

    /// Opens the line `inv` gives `redeemer`: a direct room created by
    /// `creator` (inviting `invite`), encrypted, with its `org.hotline.line`
    /// state naming the two principals; the invite's use (a conditional
    /// write: refused as used up when another redeem took the last one),
    /// the audit entry (with `detail`'s fields) and the line's row commit
    /// with it. The server writes the line's state and the invites on the
    /// consent the invite carries.
    pub(crate) async fn create_line_room(
        &self,
        creator: &UserId,
        invite: Vec<OwnedUserId>,
        redeemer: &UserId,
        theirs: &UserId,
        inv: &LineInviteRow,
        mut detail: Value,
    ) -> Result<ruma::OwnedRoomId> {
        let code = inv.code.as_str();
        let (a, b) = line_pair(redeemer, theirs);
        let line_state = json!({"principals": [a, b], "official": true, "opened_by": redeemer, "invite_from": inv.created_by});
        // Everyone on the line (aides too) may be in its calls: MatrixRTC
        // memberships are state events, which need power 50 by default.
        let mut events = crate::rooms::create::default_event_power();
        for kind in crate::contact_log::CALL_MEMBER_TYPES {
            events[kind] = json!(0);
        }
        let mut power = serde_json::Map::new();
        power.insert("events".into(), events);
        // Both principals hold the room alike (the other may be of another
        // server, invited apart from `invite`).
        power.insert(
            "users".into(),
            json!({ creator.as_str(): 100, a.as_str(): 100, b.as_str(): 100 }),
        );
        self.create_room_as(
            creator,
            crate::rooms::CreateRoom {
                preset: Some("trusted_private_chat".into()),
                is_direct: true,
                power_level_content_override: Some(power),
                invite,
                initial_state: vec![
                    (
                        "m.room.encryption".into(),
                        String::new(),
                        json!({"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_ms": 604800000u64, "rotation_period_msgs": 100}),
                    ),
                    (crate::policy::LINE_STATE.into(), String::new(), line_state),
                ],
                ..Default::default()
            },
            Origin::Server,
            |room_id| {
                detail["code_prefix"] = json!(&code[..4.min(code.len())]);
                detail["room_id"] = json!(room_id);
                vec![
                    WriteOp::UseLineInvite {
                        code: code.to_owned(),
                        now_ms: now_ms(),
                        redeemer: redeemer.to_string(),
                    },
                    audit(
                        redeemer.as_str(),
                        "line_invite_redeemed",
                        theirs.as_str(),
                        detail,
                    ),
                    WriteOp::PutLine(LineRow {
                        principal_a: a.to_string(),
                        principal_b: b.to_string(),
                        room_id: room_id.to_string(),
                        created_ts: now_ms(),
                    }),
                ]
            },
            || Error::forbidden("This line invite has been used up"),
        )
        .await
    }

    /// The line between two principals, if they hold one, with both joined.
    async fn existing_line(
        &self,
        mine: &UserId,
        theirs: &UserId,
    ) -> Result<Option<ruma::OwnedRoomId>> {
        let Some(line) = self.store.get_line(mine.as_str(), theirs.as_str())? else {
            return Ok(None);
        };
        let room_id = ruma::OwnedRoomId::try_from(line.room_id).map_err(Error::internal)?;
        self.join_line(theirs, &room_id).await?;
        Ok(Some(room_id))
    }

    /// The inviting office consented when it created the invite: its
    /// principal joins the line at once, so it is usable on both sides.
    async fn join_line(&self, principal: &UserId, room_id: &ruma::RoomId) -> Result<()> {
        let room = self.room(room_id)?;
        if room.membership(principal) != Some(ruma::events::room::member::MembershipState::Invite) {
            return Ok(());
        }
        let content =
            self.member_content(principal, ruma::events::room::member::MembershipState::Join)?;
        let draft = crate::pdu::EventDraft::new(
            ruma::events::TimelineEventType::RoomMember,
            &content,
            Some(principal.to_string()),
        )?;
        self.append_server_events(&room, principal, vec![draft])
            .await?;
        Ok(())
    }

    /// Officials for the demo and the admin CLI: user id → (name, role).
    pub fn officials(&self) -> Result<BTreeMap<String, OfficialRow>> {
        Ok(self
            .store
            .list_officials()?
            .into_iter()
            .map(|o| (o.user_id.clone(), o))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_key_stays_published_as_old_and_what_it_signed_still_verifies() {
        let dir = tempdir();
        let first = ServerKey::load_or_create(&dir).unwrap();
        let mut att = json!({"issuer": "gov.example", "user_id": "@p:gov.example", "name": "P", "title": "President",
            "country": "Freedonia", "role": "principal", "master_key": "abc", "issued_ts": 1, "expires_ts": 4_000_000_000_000i64});
        first.sign("gov.example", &mut att).unwrap();
        let before = now_ms();
        let (old_id, new_id) = ServerKey::rotate(&dir).unwrap();
        assert_eq!(old_id, first.key_id);
        let second = ServerKey::load_or_create(&dir).unwrap();
        assert_eq!(second.key_id, new_id);
        assert_ne!(second.public_key(), first.public_key());
        // The old key, with when it stopped being used.
        let old = second.old_keys_json();
        assert_eq!(old[&old_id]["key"], json!(first.public_key()));
        assert!(old[&old_id]["expired_ts"].as_i64().unwrap() >= before);
        // Valid for what it signed before, not after.
        let key = second.old_key(&old_id, before - 1).expect("valid then");
        assert!(verify_attestation(&att, "gov.example", &old_id, &key, 2).is_ok());
        assert!(second.old_key(&old_id, now_ms() + 1000).is_none());
        // A second rotation keeps both old keys.
        ServerKey::rotate(&dir).unwrap();
        let third = ServerKey::load_or_create(&dir).unwrap();
        assert_eq!(third.old_keys_json().as_object().unwrap().len(), 2);
    }

    #[test]
    fn attestations_verify_and_alterations_fail() {
        let dir = tempdir();
        let key = ServerKey::load_or_create(&dir).unwrap();
        let mut att = json!({"issuer": "gov.example", "user_id": "@p:gov.example", "name": "P", "title": "President",
            "country": "Freedonia", "role": "principal", "master_key": "abc", "issued_ts": 1, "expires_ts": 4_000_000_000_000i64});
        key.sign("gov.example", &mut att).unwrap();
        let pk = key.public_key();
        assert!(verify_attestation(&att, "gov.example", &key.key_id, &pk, 2).is_ok());
        let mut altered = att.clone();
        altered["title"] = json!("King");
        assert!(verify_attestation(&altered, "gov.example", &key.key_id, &pk, 2).is_err());
        let other = ServerKey::load_or_create(&tempdir()).unwrap();
        assert!(
            verify_attestation(&att, "gov.example", &key.key_id, &other.public_key(), 2).is_err()
        );
        // The same key is loaded again after a restart.
        assert_eq!(ServerKey::load_or_create(&dir).unwrap().public_key(), pk);
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("hotline-key-{}", random_string(8)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
