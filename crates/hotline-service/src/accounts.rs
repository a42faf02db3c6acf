//! Accounts, devices, access tokens, registration and user-interactive auth.
//!
//! **Architecture Invariant:** passwords are stored only as argon2 hashes and
//! access tokens only as SHA-256 digests; neither is ever logged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
pub use hotline_store::DeviceRow;
use hotline_store::{RegistrationTokenRow, TokenRow, UserRow, WriteBatch, WriteOp};
use parking_lot::Mutex;
use rand::Rng;
use ruma::{OwnedDeviceId, OwnedServerName, OwnedUserId, ServerName, UserId};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::{now_ms, Config, Error, Result, Services};

/// Who made a request.
#[derive(Clone, Debug)]
pub struct Sender {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
}

/// A resolved token, with when its device was last noted as seen.
struct CachedToken {
    sender: Sender,
    noted_ms: AtomicI64,
}

/// A device's `last_seen_ts` moves in steps of this much: a request notes
/// its device at most once a minute, so the hot path is one clock read and
/// one atomic load.
const SEEN_STEP_MS: i64 = 60_000;

/// How often noted devices are written to the store.
pub const SEEN_FLUSH: std::time::Duration = std::time::Duration::from_secs(60);

/// Caches and settings for accounts.
/// When (ms) and from which address a device was last seen.
type SeenAt = (i64, Option<String>);

pub struct Accounts {
    server_name: OwnedServerName,
    /// token digest → sender; filled on first use, emptied on logout.
    tokens: Mutex<HashMap<String, CachedToken>>,
    /// Devices seen since the last flush: `(user, device)` → when and from
    /// where. Written to the store every [`SEEN_FLUSH`] and merged into
    /// `/devices` answers meanwhile.
    seen: Mutex<HashMap<(OwnedUserId, OwnedDeviceId), SeenAt>>,
    /// argon2 takes several MiB per hash: one at a time bounds memory.
    hashing: Semaphore,
}

/// A user-interactive auth submission, as the client sent it.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct AuthData {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub session: Option<String>,
    pub password: Option<String>,
    pub identifier: Option<serde_json::Value>,
    pub user: Option<String>,
    pub token: Option<String>,
}

/// What a successful login or registration hands out.
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub access_token: String,
}

fn digest(token: &str) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

pub(crate) fn random_string(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn new_device_id() -> String {
    let mut rng = rand::thread_rng();
    (0..10)
        .map(|_| char::from(b'A' + rng.gen_range(0..26)))
        .collect()
}

fn argon2() -> Argon2<'static> {
    // OWASP's m=7 MiB, t=5 choice: as strong as 19 MiB/t=2 with a third of the memory.
    let params = argon2::Params::new(7 * 1024, 5, 1, None).expect("valid argon2 params");
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

impl Accounts {
    pub fn new(config: &Config) -> Self {
        Self {
            server_name: ServerName::parse(&config.server_name)
                .unwrap_or_else(|_| ServerName::parse("localhost").unwrap()),
            tokens: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            hashing: Semaphore::new(1),
        }
    }

    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    pub(crate) async fn hash_password(&self, password: String) -> Result<String> {
        let _permit = self.hashing.acquire().await.map_err(Error::internal)?;
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            argon2()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(Error::internal)
        })
        .await
        .map_err(Error::internal)?
    }

    async fn verify_password(&self, password: String, hash: String) -> Result<bool> {
        let _permit = self.hashing.acquire().await.map_err(Error::internal)?;
        tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash).map_err(Error::internal)?;
            Ok(Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        })
        .await
        .map_err(Error::internal)?
    }
}

impl Services {
    /// Parses a user id or localpart into a local user id, checking the
    /// localpart grammar of the spec.
    pub fn local_user_id(&self, name: &str) -> Result<OwnedUserId> {
        let localpart = if name.starts_with('@') {
            let id = UserId::parse(name)
                .map_err(|_| Error::InvalidUsername("Invalid user id".into()))?;
            if id.server_name() != self.server_name() {
                return Err(Error::InvalidUsername("User is not on this server".into()));
            }
            id.localpart().to_owned()
        } else {
            name.to_owned()
        };
        if localpart.is_empty()
            || localpart.len() > 200
            || !localpart.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'))
        {
            return Err(Error::InvalidUsername(
                "User names may only contain a-z, 0-9 and . _ = - / +".into(),
            ));
        }
        UserId::parse(format!("@{localpart}:{}", self.server_name()))
            .map_err(|_| Error::InvalidUsername("Invalid user name".into()))
    }

    /// Whether a user name can still be registered.
    pub fn username_available(&self, name: &str) -> Result<bool> {
        let user_id = self.local_user_id(name)?;
        Ok(self.store.get_user(user_id.as_str())?.is_none())
    }

    /// Creates an account. Used by registration and by `hotline admin`.
    pub async fn create_user(
        &self,
        user_id: &UserId,
        password: Option<String>,
        displayname: Option<String>,
    ) -> Result<()> {
        self.create_user_using(user_id, password, displayname, None)
            .await
    }

    /// [`Self::create_user`], counting a use of `registration_token` in the
    /// same commit: a token past its uses or expiry refuses the account.
    async fn create_user_using(
        &self,
        user_id: &UserId,
        password: Option<String>,
        displayname: Option<String>,
        registration_token: Option<String>,
    ) -> Result<()> {
        let password_hash = match password {
            Some(p) => Some(self.accounts.hash_password(p).await?),
            None => None,
        };
        let row = UserRow {
            user_id: user_id.to_string(),
            password_hash,
            displayname: displayname.or_else(|| Some(user_id.localpart().to_owned())),
            avatar_url: None,
            created_ts: now_ms(),
            deactivated: false,
        };
        let mut batch = WriteBatch::one(WriteOp::CreateUser(row));
        if let Some(token) = &registration_token {
            batch.push(WriteOp::UseRegistrationToken {
                token: token.clone(),
                now_ms: now_ms(),
            });
        }
        match self.store.write(batch).await {
            Ok(_) => Ok(()),
            // Two registrations raced for the last use of the token.
            Err(hotline_store::StoreError::Conflict(_))
                if registration_token
                    .as_deref()
                    .is_some_and(|t| !self.registration_token_valid(t).unwrap_or(false)) =>
            {
                Err(Error::forbidden("Invalid registration token"))
            }
            Err(hotline_store::StoreError::Conflict(_)) => Err(Error::UserInUse),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts or continues the registration auth flow. Returns `Ok(token)`
    /// (the registration token used, if any) when a flow is complete.
    fn registration_flows(&self) -> serde_json::Value {
        let mut flows = vec![json!({"stages": ["m.login.registration_token"]})];
        if self.config.allow_registration {
            flows.insert(0, json!({"stages": ["m.login.dummy"]}));
        }
        json!({ "flows": flows, "params": {} })
    }

    /// The `401` that asks for user-interactive auth. Every flow Hotline
    /// offers is one stage, so a session has nothing to remember: the
    /// session id is only echoed, and a flow begun on one server process
    /// can end on another (nothing is kept per process). A submission whose
    /// `auth` carries only the `session` (a client asking where the flow
    /// stands) gets the plain challenge again, no `errcode`: no stage of it
    /// is completed until the one stage is.
    fn uiaa_challenge(
        &self,
        mut flows: serde_json::Value,
        session: Option<String>,
        error: Option<(&str, &str)>,
    ) -> Error {
        let session = session.unwrap_or_else(|| random_string(24));
        flows["session"] = json!(session);
        flows["completed"] = json!([]);
        if let Some((code, msg)) = error {
            flows["errcode"] = json!(code);
            flows["error"] = json!(msg);
        }
        Error::Uiaa(flows)
    }

    /// `POST /register`.
    pub async fn register(
        &self,
        username: Option<String>,
        password: Option<String>,
        device_id: Option<String>,
        device_name: Option<String>,
        inhibit_login: bool,
        auth: Option<AuthData>,
    ) -> Result<(OwnedUserId, Option<Session>)> {
        let username = username.unwrap_or_else(|| random_string(12).to_lowercase());
        let user_id = self.local_user_id(&username)?;
        if self.store.get_user(user_id.as_str())?.is_some() {
            return Err(Error::UserInUse);
        }
        self.guard_username(user_id.as_str(), user_id.localpart())?;
        // Before the account exists, so a refused device name leaves nothing behind.
        self.check_device_name(&user_id, device_name.as_deref())?;
        let flows = self.registration_flows();
        let Some(auth) = auth else {
            return Err(self.uiaa_challenge(flows, None, None));
        };
        if auth.kind.is_none() {
            return Err(self.uiaa_challenge(flows, auth.session, None));
        }
        let mut used_token = None;
        match auth.kind.as_deref() {
            Some("m.login.dummy") if self.config.allow_registration => {}
            Some("m.login.registration_token") => {
                let token = auth.token.clone().unwrap_or_default();
                if !self.registration_token_valid(&token)? {
                    return Err(self.uiaa_challenge(
                        flows,
                        auth.session,
                        Some(("M_FORBIDDEN", "Invalid registration token")),
                    ));
                }
                used_token = Some(token);
            }
            Some("m.login.dummy") => {
                return Err(Error::forbidden(
                    "Open registration is disabled; use a registration token",
                ));
            }
            _ => {
                return Err(self.uiaa_challenge(
                    flows,
                    auth.session,
                    Some(("M_UNRECOGNIZED", "Unknown auth stage")),
                ))
            }
        }
        let password =
            password.ok_or_else(|| Error::MissingParam("A password is required".into()))?;
        if password.len() > 1024 {
            return Err(Error::invalid_param("Password too long"));
        }
        self.create_user_using(&user_id, Some(password), None, used_token)
            .await?;
        if inhibit_login {
            return Ok((user_id, None));
        }
        let session = self.open_session(&user_id, device_id, device_name).await?;
        Ok((user_id, Some(session)))
    }

    pub fn registration_token_valid(&self, token: &str) -> Result<bool> {
        Ok(match self.store.get_registration_token(token)? {
            Some(RegistrationTokenRow {
                uses_allowed,
                completed,
                expiry_ts,
                ..
            }) => {
                uses_allowed.is_none_or(|n| completed < n) && expiry_ts.is_none_or(|t| t > now_ms())
            }
            None => false,
        })
    }

    /// Creates a registration token (`hotline admin registration-token`).
    pub async fn create_registration_token(
        &self,
        uses_allowed: Option<i64>,
        expiry_ts: Option<i64>,
    ) -> Result<String> {
        let token = random_string(20);
        self.store
            .write(WriteBatch::one(WriteOp::CreateRegistrationToken(
                RegistrationTokenRow {
                    token: token.clone(),
                    uses_allowed,
                    completed: 0,
                    expiry_ts,
                },
            )))
            .await?;
        Ok(token)
    }

    /// Issues a token for a (new or existing) device.
    pub(crate) async fn open_session(
        &self,
        user_id: &UserId,
        device_id: Option<String>,
        device_name: Option<String>,
    ) -> Result<Session> {
        let device_id = device_id
            .filter(|d| !d.is_empty() && d.len() <= 255)
            .unwrap_or_else(new_device_id);
        let existing = self.store.get_device(user_id.as_str(), &device_id)?;
        let existing_is_new = existing.is_none();
        let access_token = format!("hl_{}", random_string(40));
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::UpsertDevice(DeviceRow {
            user_id: user_id.to_string(),
            device_id: device_id.clone(),
            display_name: device_name.or(existing.and_then(|d| d.display_name)),
            last_seen_ts: Some(now_ms()),
            last_seen_ip: None,
        }));
        batch.push(WriteOp::InsertToken(TokenRow {
            token_hash: digest(&access_token),
            user_id: user_id.to_string(),
            device_id: device_id.clone(),
        }));
        if existing_is_new {
            batch.push(WriteOp::KeyChange {
                user_id: user_id.to_string(),
            });
        }
        self.store.write(batch).await?;
        Ok(Session {
            user_id: user_id.to_owned(),
            device_id: device_id.into(),
            access_token,
        })
    }

    /// `POST /login` with `m.login.password`. `client` is the address the
    /// attempt came from, for the log of a lockout.
    pub async fn login_password(
        &self,
        user: &str,
        password: String,
        device_id: Option<String>,
        device_name: Option<String>,
        client: Option<std::net::IpAddr>,
    ) -> Result<Session> {
        let user_id = self
            .local_user_id(user)
            .map_err(|_| Error::forbidden("Invalid username or password"))?;
        self.check_password(&user_id, password, client).await?;
        self.check_device_name(&user_id, device_name.as_deref())?;
        self.open_session(&user_id, device_id, device_name).await
    }

    /// Checks `password` against the account's hash, under the account's
    /// failed-login backoff (`ratelimit`): while it runs, the attempt is
    /// refused before the password is looked at.
    async fn check_password(
        &self,
        user_id: &UserId,
        password: String,
        client: Option<std::net::IpAddr>,
    ) -> Result<()> {
        self.ratelimit.check_login(user_id.as_str())?;
        let hash = self
            .store
            .get_user(user_id.as_str())?
            .filter(|u| !u.deactivated)
            .and_then(|u| u.password_hash);
        let ok = match hash {
            Some(hash) => self.accounts.verify_password(password, hash).await?,
            None => false,
        };
        if ok {
            self.ratelimit.note_login_success(user_id.as_str());
            return Ok(());
        }
        if let Some(lock) = self.ratelimit.note_login_failure(user_id.as_str()) {
            tracing::warn!(
                user_id = %user_id,
                client = %client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
                failures = lock.failures,
                wait_seconds = lock.wait.as_secs_f64(),
                "failed logins: password attempts for this account paused"
            );
        }
        Err(Error::forbidden("Invalid username or password"))
    }

    /// Resolves an access token to its user and device. `client` is the
    /// address the request came from: an address that has failed too many
    /// token checks is refused before its token reaches the database, and
    /// an unknown token counts against it.
    pub fn authenticate(&self, token: &str, client: Option<std::net::IpAddr>) -> Result<Sender> {
        let hash = digest(token);
        if let Some(t) = self.accounts.tokens.lock().get(&hash) {
            let now = now_ms();
            if now - t.noted_ms.load(Ordering::Relaxed) >= SEEN_STEP_MS {
                t.noted_ms.store(now, Ordering::Relaxed);
                self.note_seen(&t.sender, now, client);
            }
            return Ok(t.sender.clone());
        }
        // Tokens are 40 random alphanumerics: nobody guesses one. The limit
        // keeps a prober from costing a database read per guess, and only
        // tokens not already known are checked, so others behind the same
        // address keep working.
        self.ratelimit.check_auth_failures(client)?;
        let Some(row) = self.store.find_token(&hash)? else {
            self.ratelimit.note_auth_failure(client);
            return Err(Error::UnknownToken);
        };
        let sender = Sender {
            user_id: UserId::parse(row.user_id).map_err(Error::internal)?,
            device_id: row.device_id.into(),
        };
        let now = now_ms();
        self.note_seen(&sender, now, client);
        let mut tokens = self.accounts.tokens.lock();
        if tokens.len() > 100_000 {
            tokens.clear();
        }
        tokens.insert(
            hash,
            CachedToken {
                sender: sender.clone(),
                noted_ms: AtomicI64::new(now),
            },
        );
        Ok(sender)
    }

    fn note_seen(&self, sender: &Sender, now: i64, client: Option<std::net::IpAddr>) {
        let key = (sender.user_id.clone(), sender.device_id.clone());
        let mut seen = self.accounts.seen.lock();
        // Bounded: past this, the oldest news is the least worth keeping.
        if seen.len() >= 100_000 {
            seen.clear();
        }
        seen.insert(key, (now, client.map(|ip| ip.to_string())));
    }

    /// Writes the devices noted as seen since the last flush.
    pub async fn flush_seen_devices(&self) -> Result<()> {
        let noted: Vec<_> = self.accounts.seen.lock().drain().collect();
        if noted.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        for ((user, device), (ts, ip)) in noted {
            batch.push(WriteOp::SetDeviceSeen {
                user_id: user.to_string(),
                device_id: device.to_string(),
                ts,
                ip,
            });
        }
        self.store.write(batch).await?;
        Ok(())
    }

    /// Flushes noted devices every [`SEEN_FLUSH`] (the server's task).
    pub fn flush_seen_devices_regularly(self: &std::sync::Arc<Self>) {
        self.run_every(SEEN_FLUSH, |s| async move {
            if let Err(e) = s.flush_seen_devices().await {
                tracing::warn!(error = %e, "recording when devices were last seen");
            }
        });
    }

    /// `row` with what was noted since the last flush.
    fn with_seen(&self, mut row: DeviceRow) -> DeviceRow {
        let Ok(user) = UserId::parse(row.user_id.as_str()) else {
            return row;
        };
        let key = (user, OwnedDeviceId::from(row.device_id.as_str()));
        if let Some((ts, ip)) = self.accounts.seen.lock().get(&key) {
            if row.last_seen_ts.is_none_or(|t| t <= *ts) {
                row.last_seen_ts = Some(*ts);
                if ip.is_some() {
                    row.last_seen_ip = ip.clone();
                }
            }
        }
        row
    }

    pub(crate) fn forget_cached_tokens(&self, user_id: &UserId, device_id: Option<&str>) {
        self.accounts.tokens.lock().retain(|_, t| {
            let s = &t.sender;
            !(s.user_id == user_id && device_id.is_none_or(|d| s.device_id.as_str() == d))
        });
        // A sliding sync connection ends with its device.
        self.sliding.forget_devices(user_id, device_id);
    }

    /// Deletes a device with its tokens (logout, device removal).
    pub async fn delete_device(&self, user_id: &UserId, device_id: &str) -> Result<()> {
        let mut batch = WriteBatch::one(WriteOp::DeleteDevice {
            user_id: user_id.to_string(),
            device_id: device_id.to_owned(),
        });
        // Others learn through `device_lists` that the device is gone.
        batch.push(WriteOp::KeyChange {
            user_id: user_id.to_string(),
        });
        self.store.write(batch).await?;
        self.forget_cached_tokens(user_id, Some(device_id));
        Ok(())
    }

    /// `POST /logout/all`.
    pub async fn logout_all(&self, user_id: &UserId) -> Result<()> {
        let mut batch = WriteBatch::new();
        for d in self.store.list_devices(user_id.as_str())? {
            batch.push(WriteOp::DeleteDevice {
                user_id: d.user_id,
                device_id: d.device_id,
            });
        }
        batch.push(WriteOp::KeyChange {
            user_id: user_id.to_string(),
        });
        self.store.write(batch).await?;
        self.forget_cached_tokens(user_id, None);
        Ok(())
    }

    /// Checks a user-interactive auth submission that must prove the
    /// password of `user_id` (device deletion, password change).
    pub async fn require_password_auth(
        &self,
        user_id: &UserId,
        auth: Option<AuthData>,
    ) -> Result<()> {
        let flows = json!({ "flows": [{"stages": ["m.login.password"]}], "params": {} });
        let Some(auth) = auth else {
            return Err(self.uiaa_challenge(flows, None, None));
        };
        if auth.kind.is_none() {
            return Err(self.uiaa_challenge(flows, auth.session, None));
        }
        if auth.kind.as_deref() != Some("m.login.password") {
            return Err(self.uiaa_challenge(
                flows,
                auth.session,
                Some(("M_UNRECOGNIZED", "Unknown auth stage")),
            ));
        }
        let claimed = auth
            .identifier
            .as_ref()
            .and_then(|i| i.get("user"))
            .and_then(|u| u.as_str())
            .map(str::to_owned)
            .or(auth.user.clone())
            .unwrap_or_else(|| user_id.to_string());
        let claimed = self.local_user_id(&claimed).ok();
        let ok = claimed.as_deref() == Some(user_id)
            && match self
                .check_password(user_id, auth.password.clone().unwrap_or_default(), None)
                .await
            {
                Ok(()) => true,
                // The account's failed-login backoff covers this check too.
                Err(e @ Error::LimitExceeded { .. }) => return Err(e),
                Err(_) => false,
            };
        if !ok {
            return Err(self.uiaa_challenge(
                flows,
                auth.session,
                Some(("M_FORBIDDEN", "Invalid password")),
            ));
        }
        Ok(())
    }

    /// `POST /account/password`.
    pub async fn change_password(
        &self,
        sender: &Sender,
        new_password: String,
        logout_devices: bool,
    ) -> Result<()> {
        let hash = self.accounts.hash_password(new_password).await?;
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::SetPassword {
            user_id: sender.user_id.to_string(),
            password_hash: hash,
        });
        if logout_devices {
            for d in self.store.list_devices(sender.user_id.as_str())? {
                if d.device_id != sender.device_id.as_str() {
                    batch.push(WriteOp::DeleteDevice {
                        user_id: d.user_id,
                        device_id: d.device_id,
                    });
                }
            }
            batch.push(WriteOp::KeyChange {
                user_id: sender.user_id.to_string(),
            });
        }
        self.store.write(batch).await?;
        if logout_devices {
            let keep = sender.device_id.clone();
            self.accounts
                .tokens
                .lock()
                .retain(|_, t| t.sender.user_id != sender.user_id || t.sender.device_id == keep);
        }
        Ok(())
    }

    pub async fn rename_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<String>,
    ) -> Result<()> {
        let mut device = self
            .store
            .get_device(user_id.as_str(), device_id)?
            .ok_or_else(|| Error::not_found("Unknown device"))?;
        self.check_device_name(user_id, name.as_deref())?;
        device.display_name = name;
        self.store
            .write(WriteBatch::one(WriteOp::UpsertDevice(device)))
            .await?;
        Ok(())
    }

    /// Device names are shown to everyone who shares a room (`/keys/query`),
    /// so they may not pass for an official's name either.
    pub(crate) fn check_device_name(&self, user_id: &UserId, name: Option<&str>) -> Result<()> {
        match name {
            Some(name) => self.guard_name(user_id.as_str(), "device name", name),
            None => Ok(()),
        }
    }

    pub fn devices(&self, user_id: &UserId) -> Result<Vec<DeviceRow>> {
        Ok(self
            .store
            .list_devices(user_id.as_str())?
            .into_iter()
            .map(|d| self.with_seen(d))
            .collect())
    }

    pub fn device(&self, user_id: &UserId, device_id: &str) -> Result<Option<DeviceRow>> {
        Ok(self
            .store
            .get_device(user_id.as_str(), device_id)?
            .map(|d| self.with_seen(d)))
    }

    pub fn user_exists(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.store.get_user(user_id.as_str())?.is_some())
    }
}
