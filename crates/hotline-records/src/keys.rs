//! The two key pairs and their files.
//!
//! - The records office's age X25519 identity (`records-office.key`,
//!   secret, kept by the records office, offline) and its recipient
//!   (`records-office.pub`, `age1...`, given to the archiver). The
//!   identity file is in `age-keygen`'s format, so the `age` tools read it.
//! - The archiver's Ed25519 checkpoint key (`checkpoint-signing.key`,
//!   secret, the seed in base64, kept by the archiver) and its verifying
//!   key (`checkpoint-verify.pub`, base64, for whoever verifies packages).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::RngCore;

use crate::Error;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub const IDENTITY_FILE: &str = "records-office.key";
pub const RECIPIENT_FILE: &str = "records-office.pub";
pub const SIGNING_FILE: &str = "checkpoint-signing.key";
pub const VERIFY_FILE: &str = "checkpoint-verify.pub";

/// What `keygen` wrote.
pub struct Generated {
    pub identity: PathBuf,
    pub recipient: PathBuf,
    pub signing: PathBuf,
    pub verify: PathBuf,
    pub recipient_text: String,
    pub verify_text: String,
}

/// Writes both key pairs into `dir` (created if needed); refuses to
/// replace any existing key file. Secrets get mode 0600.
pub fn generate(dir: &Path) -> Result<Generated, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let paths = [IDENTITY_FILE, RECIPIENT_FILE, SIGNING_FILE, VERIFY_FILE].map(|n| dir.join(n));
    if let Some(p) = paths.iter().find(|p| p.exists()) {
        return Err(Error::Key(format!(
            "{} exists; keygen does not replace keys",
            p.display()
        )));
    }
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let signing = SigningKey::from_bytes(&seed);
    let verify = B64.encode(signing.verifying_key().as_bytes());

    let [identity_path, recipient_path, signing_path, verify_path] = paths;
    write_new(
        &identity_path,
        format!(
            "# hotline records office identity (age X25519): SECRET, keep offline\n# public key: {recipient}\n{}\n",
            identity.to_string().expose_secret()
        )
        .as_bytes(),
        0o600,
    )?;
    write_new(&recipient_path, format!("{recipient}\n").as_bytes(), 0o644)?;
    write_new(
        &signing_path,
        format!("{}\n", B64.encode(seed)).as_bytes(),
        0o600,
    )?;
    write_new(&verify_path, format!("{verify}\n").as_bytes(), 0o644)?;
    Ok(Generated {
        identity: identity_path,
        recipient: recipient_path,
        signing: signing_path,
        verify: verify_path,
        recipient_text: recipient,
        verify_text: verify,
    })
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// The first line that is neither blank nor a `#` comment.
fn key_line(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Reads the records office's identity (an `age-keygen` file).
pub fn read_identity(path: &Path) -> Result<age::x25519::Identity, Error> {
    let text = read(path)?;
    key_line(&text)
        .and_then(|l| age::x25519::Identity::from_str(l).ok())
        .ok_or_else(|| Error::Key(format!("{}: no AGE-SECRET-KEY-1... line", path.display())))
}

/// Parses a recipient (`age1...`) given as text or as a file holding it.
pub fn parse_recipient(text_or_path: &str) -> Result<age::x25519::Recipient, Error> {
    let text = resolve(text_or_path)?;
    key_line(&text)
        .and_then(|l| age::x25519::Recipient::from_str(l).ok())
        .ok_or_else(|| Error::Key(format!("{text_or_path}: not an age1... recipient")))
}

/// Reads the archiver's checkpoint signing key.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, Error> {
    let text = read(path)?;
    let seed: [u8; 32] = key_line(&text)
        .and_then(|l| B64.decode(l).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Key(format!("{}: not a checkpoint signing key", path.display())))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Parses a checkpoint verifying key given as base64 or as a file holding it.
pub fn parse_verify_key(text_or_path: &str) -> Result<VerifyingKey, Error> {
    let text = resolve(text_or_path)?;
    key_line(&text)
        .and_then(|l| B64.decode(l).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| {
            Error::Key(format!(
                "{text_or_path}: not a checkpoint verifying key (base64 of 32 bytes)"
            ))
        })
}

pub(crate) fn verify_key_text(key: &VerifyingKey) -> String {
    B64.encode(key.as_bytes())
}

fn resolve(text_or_path: &str) -> Result<String, Error> {
    let p = Path::new(text_or_path);
    if p.is_file() {
        read(p)
    } else {
        Ok(text_or_path.to_owned())
    }
}
