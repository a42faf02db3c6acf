//! End-to-end encryption support: device and cross-signing keys, one-time
//! and fallback keys, signatures, to-device messages, and the device-list
//! changes `/sync` reports.
//!
//! **Architecture Invariant:** the server holds only public keys and
//! ciphertext. Every key object is the client's signed JSON, stored as
//! given; the server checks its shape and signatures, never its secrets.
//!
//! To-device messages and key changes are items of the sync stream (they get
//! stream positions), so the commit hook wakes exactly the users concerned.
//! A device's to-device queue is read from its own cursor in the sync token
//! (`s{P}_{T}_{D}`) and pruned once a later `since` acknowledges it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use hotline_store::{KeySignatureRow, WriteBatch, WriteOp};
use parking_lot::Mutex;
use ruma::events::room::member::MembershipState;
use ruma::serde::base64::Standard;
use ruma::serde::Base64;
use ruma::{OwnedUserId, UserId};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::accounts::{AuthData, Sender};
use crate::{Error, Result, Services};

/// A device holds at most this many unclaimed one-time keys.
pub const MAX_ONE_TIME_KEYS: i64 = 1000;
/// A device's to-device queue holds at most this many messages; more are dropped.
pub const MAX_QUEUED_TO_DEVICE: i64 = 10_000;
/// To-device messages delivered per `/sync` response.
const TO_DEVICE_PER_SYNC: usize = 100;

/// Caches and locks of the key service.
pub struct Keys {
    /// Claims read then delete; one at a time so no key is handed out twice.
    claim_lock: tokio::sync::Mutex<()>,
    /// Position of the newest key change (an upper bound until first known).
    last_key_change: AtomicI64,
    /// Per device: newest queued to-device position, and the position up to
    /// which the queue is known to be pruned.
    to_device: std::sync::Arc<Mutex<HashMap<(String, String), ToDeviceCursor>>>,
    /// Per device: one-time key counts and unused fallback algorithms.
    counts: Mutex<HashMap<(String, String), KeyCounts>>,
    /// Bumped whenever any device's counts change, so a reader that loaded
    /// counts before a change does not cache them after it.
    counts_generation: AtomicU64,
}

#[derive(Clone, Copy, Default)]
struct ToDeviceCursor {
    latest: i64,
    pruned_upto: i64,
}

/// What `/sync` tells a device about its own keys.
#[derive(Clone, Default)]
pub struct KeyCounts {
    pub one_time_keys: BTreeMap<String, u64>,
    pub unused_fallback: Vec<String>,
}

impl Keys {
    pub fn new(current_position: i64) -> Self {
        Keys {
            claim_lock: tokio::sync::Mutex::new(()),
            last_key_change: AtomicI64::new(current_position),
            to_device: Default::default(),
            counts: Mutex::new(HashMap::new()),
            counts_generation: AtomicU64::new(0),
        }
    }

    /// Commit hook: a key change at `pos`.
    pub(crate) fn note_key_change(&self, pos: i64) {
        self.last_key_change.fetch_max(pos, Ordering::AcqRel);
    }

    /// Commit hook: a to-device message queued for a device at `pos`.
    pub(crate) fn note_to_device(&self, user: &str, device: &str, pos: i64) {
        let mut map = self.to_device.lock();
        let c = map.entry((user.to_owned(), device.to_owned())).or_default();
        c.latest = c.latest.max(pos);
    }

    /// Commit hook: a device's key counts changed.
    pub(crate) fn counts_changed(&self, user: &str, device: &str) {
        self.counts_generation.fetch_add(1, Ordering::AcqRel);
        self.counts
            .lock()
            .remove(&(user.to_owned(), device.to_owned()));
    }

    pub(crate) fn forget_device(&self, user: &str, device: &str) {
        let key = (user.to_owned(), device.to_owned());
        self.to_device.lock().remove(&key);
        self.counts_changed(user, device);
    }
}

/// `algorithm:key_id` → `(algorithm, key_id)`.
fn split_key_id(id: &str) -> Result<(&str, &str)> {
    match id.split_once(':') {
        Some((alg, key)) if !alg.is_empty() && !key.is_empty() => Ok((alg, key)),
        _ => Err(Error::invalid_param(format!(
            "Key id '{id}' is not of the form algorithm:id"
        ))),
    }
}

/// Checks the ed25519 signature by `signer`'s key `key_id` over `object`.
pub(crate) fn signature_valid(
    object: &Value,
    signer: &str,
    key_id: &str,
    public_key: &str,
) -> bool {
    let Some(sig) = object
        .get("signatures")
        .and_then(|s| s.get(signer))
        .and_then(|s| s.get(key_id))
        .and_then(|s| s.as_str())
    else {
        return false;
    };
    let (Ok(sig), Ok(key)) = (
        Base64::<Standard>::parse(sig),
        Base64::<Standard>::parse(public_key),
    ) else {
        return false;
    };
    let Ok(ruma::CanonicalJsonValue::Object(obj)) =
        ruma::CanonicalJsonValue::try_from(object.clone())
    else {
        return false;
    };
    let Ok(canonical) = ruma::signatures::to_canonical_json_string_for_signing(&obj) else {
        return false;
    };
    ruma::signatures::verify_canonical_json_bytes(
        &ruma::SigningKeyAlgorithm::Ed25519,
        key.as_bytes(),
        sig.as_bytes(),
        canonical.as_bytes(),
    )
    .is_ok()
}

/// The single ed25519 public key of a cross-signing key object.
fn cross_signing_public_key(key: &Value) -> Option<String> {
    let keys = key.get("keys")?.as_object()?;
    if keys.len() != 1 {
        return None;
    }
    let (id, v) = keys.iter().next()?;
    id.strip_prefix("ed25519:")?;
    Some(v.as_str()?.to_owned())
}

fn parse_object(v: &Value, what: &str) -> Result<Map<String, Value>> {
    v.as_object()
        .cloned()
        .ok_or_else(|| Error::bad_json(format!("{what} must be an object")))
}

/// Whether `new` carries the same key material as `old` (signatures aside).
fn same_key(old: &str, new: &Value) -> bool {
    let Ok(mut old) = serde_json::from_str::<Value>(old) else {
        return false;
    };
    let mut new = new.clone();
    for v in [&mut old, &mut new] {
        if let Some(o) = v.as_object_mut() {
            o.remove("signatures");
            o.remove("unsigned");
        }
    }
    old == new
}

/// Who claims one-time keys: a user of this server, or another server
/// for its users.
#[derive(Clone, Copy)]
pub enum Claimant<'a> {
    User(&'a UserId),
    Server(&'a ruma::ServerName),
}

impl Services {
    /// Whether `user` lives here. Users of other servers (no federation) are
    /// noted in `failures` by server name, as `/keys/query|claim` report them;
    /// malformed ids are skipped.
    fn is_local_or_failure(&self, user: &str, failures: &mut Map<String, Value>) -> bool {
        let Ok(user_id) = UserId::parse(user) else {
            return false;
        };
        if user_id.server_name() == self.server_name() {
            return true;
        }
        failures.insert(
            user_id.server_name().to_string(),
            json!({"errcode": "M_UNAVAILABLE", "error": "Federation is not enabled"}),
        );
        false
    }

    /// The user's cross-signing keys by type (`master`, `self_signing`,
    /// `user_signing`), parsed.
    pub(crate) fn cross_signing_key_map(&self, user: &str) -> Result<HashMap<String, Value>> {
        Ok(self
            .store
            .cross_signing_keys(user)?
            .into_iter()
            .filter_map(|(k, j)| Some((k, serde_json::from_str(&j).ok()?)))
            .collect())
    }

    /// The user's current cross-signing master public key (unpadded base64).
    pub(crate) fn master_public_key(&self, user: &str) -> Result<Option<String>> {
        Ok(self
            .cross_signing_key_map(user)?
            .get("master")
            .and_then(cross_signing_public_key))
    }

    // ----- upload -----

    /// `POST /keys/upload`: returns the device's one-time key counts.
    pub async fn upload_keys(&self, sender: &Sender, body: Value) -> Result<BTreeMap<String, u64>> {
        let body = parse_object(&body, "Request body")?;
        let user = sender.user_id.as_str();
        let device = sender.device_id.as_str();
        let mut batch = WriteBatch::new();
        if let Some(dk) = body.get("device_keys").filter(|v| !v.is_null()) {
            serde_json::from_value::<ruma::encryption::DeviceKeys>(dk.clone())
                .map_err(|e| Error::bad_json(format!("Invalid device_keys: {e}")))?;
            if dk["user_id"] != user || dk["device_id"] != device {
                return Err(Error::invalid_param(
                    "device_keys must be for the device making the request",
                ));
            }
            let key_id = format!("ed25519:{device}");
            let ed = dk["keys"][&key_id]
                .as_str()
                .ok_or_else(|| Error::invalid_param("device_keys has no ed25519 key"))?;
            if !signature_valid(dk, user, &key_id, ed) {
                return Err(Error::invalid_param(
                    "device_keys is not signed by the device's own key",
                ));
            }
            let mut stored = dk.clone();
            if let Some(o) = stored.as_object_mut() {
                o.remove("unsigned");
            }
            let existing = self
                .store
                .device_keys(user)?
                .into_iter()
                .find(|(d, _)| d == device);
            let changed = match &existing {
                Some((_, old)) => serde_json::from_str::<Value>(old).ok() != Some(stored.clone()),
                None => true,
            };
            if changed {
                batch.push(WriteOp::PutDeviceKeys {
                    user_id: user.to_owned(),
                    device_id: device.to_owned(),
                    json: stored.to_string(),
                });
                batch.push(WriteOp::KeyChange {
                    user_id: user.to_owned(),
                });
            }
        }
        if let Some(otks) = body.get("one_time_keys").filter(|v| !v.is_null()) {
            let otks = parse_object(otks, "one_time_keys")?;
            let held: i64 = self
                .store
                .one_time_key_counts(user, device)?
                .iter()
                .map(|(_, n)| n)
                .sum();
            if held + otks.len() as i64 > MAX_ONE_TIME_KEYS {
                return Err(Error::invalid_param(format!(
                    "A device may hold at most {MAX_ONE_TIME_KEYS} one-time keys"
                )));
            }
            let mut keys = Vec::with_capacity(otks.len());
            for (id, key) in &otks {
                let (alg, _) = split_key_id(id)?;
                if !(key.is_string() || key.is_object()) {
                    return Err(Error::bad_json(format!("One-time key {id} is malformed")));
                }
                keys.push((id.clone(), alg.to_owned(), key.to_string()));
            }
            if !keys.is_empty() {
                batch.push(WriteOp::PutOneTimeKeys {
                    user_id: user.to_owned(),
                    device_id: device.to_owned(),
                    keys,
                });
            }
        }
        let fallback = body
            .get("fallback_keys")
            .or_else(|| body.get("org.matrix.msc2732.fallback_keys"))
            .filter(|v| !v.is_null());
        if let Some(fks) = fallback {
            let fks = parse_object(fks, "fallback_keys")?;
            for (id, key) in &fks {
                let (alg, _) = split_key_id(id)?;
                if !key.is_object() {
                    return Err(Error::bad_json(format!("Fallback key {id} is malformed")));
                }
                batch.push(WriteOp::PutFallbackKey {
                    user_id: user.to_owned(),
                    device_id: device.to_owned(),
                    algorithm: alg.to_owned(),
                    key_id: id.clone(),
                    json: key.to_string(),
                });
            }
        }
        if !batch.ops.is_empty() {
            self.store.write(batch).await?;
        }
        Ok(self.key_counts(user, device)?.one_time_keys)
    }

    /// One-time key counts and unused fallback algorithms of a device.
    pub fn key_counts(&self, user: &str, device: &str) -> Result<KeyCounts> {
        let k = &self.keys;
        let key = (user.to_owned(), device.to_owned());
        if let Some(c) = k.counts.lock().get(&key) {
            return Ok(c.clone());
        }
        let generation = k.counts_generation.load(Ordering::Acquire);
        let mut counts = KeyCounts::default();
        // Clients read a missing count as "unknown"; say zero explicitly.
        counts.one_time_keys.insert("signed_curve25519".into(), 0);
        for (alg, n) in self.store.one_time_key_counts(user, device)? {
            counts.one_time_keys.insert(alg, n as u64);
        }
        counts.unused_fallback = self.store.unused_fallback_algorithms(user, device)?;
        let mut cache = k.counts.lock();
        if k.counts_generation.load(Ordering::Acquire) == generation {
            if cache.len() > 100_000 {
                cache.clear();
            }
            cache.insert(key, counts.clone());
        }
        Ok(counts)
    }

    // ----- query -----

    /// `POST /keys/query`.
    /// `POST /keys/query` for this server's users. `viewer` (the asking
    /// user; `None` for another server) also sees their own signatures of
    /// others' keys, and their own user-signing key.
    pub fn query_keys(
        &self,
        viewer: Option<&UserId>,
        device_keys: BTreeMap<String, Vec<String>>,
    ) -> Result<Value> {
        let mut out_devices = Map::new();
        let mut master = Map::new();
        let mut self_signing = Map::new();
        let mut user_signing = Map::new();
        let mut failures = Map::new();
        for (user, wanted) in device_keys {
            if !self.is_local_or_failure(&user, &mut failures) {
                continue;
            }
            let sigs = self.store.key_signatures(&user)?;
            let visible = |s: &&KeySignatureRow| {
                s.signer_user == s.target_user
                    || viewer.is_some_and(|v| s.signer_user == v.as_str())
            };
            let add_sigs = |obj: &mut Value, target_key: &str| {
                for s in sigs
                    .iter()
                    .filter(visible)
                    .filter(|s| s.target_key_id == target_key)
                {
                    if !obj["signatures"].is_object() {
                        obj["signatures"] = json!({});
                    }
                    if !obj["signatures"][&s.signer_user].is_object() {
                        obj["signatures"][&s.signer_user] = json!({});
                    }
                    obj["signatures"][&s.signer_user][&s.signer_key_id] = json!(s.signature);
                }
            };
            let names: HashMap<String, Option<String>> = self
                .store
                .list_devices(&user)?
                .into_iter()
                .map(|d| (d.device_id, d.display_name))
                .collect();
            let mut devices = Map::new();
            for (device_id, dk) in self.store.device_keys(&user)? {
                if !wanted.is_empty() && !wanted.contains(&device_id) {
                    continue;
                }
                let Ok(mut obj) = serde_json::from_str::<Value>(&dk) else {
                    continue;
                };
                add_sigs(&mut obj, &device_id);
                if let Some(Some(name)) = names.get(&device_id) {
                    obj["unsigned"] = json!({ "device_display_name": name });
                }
                devices.insert(device_id, obj);
            }
            out_devices.insert(user.clone(), Value::Object(devices));
            for (kind, key) in self.store.cross_signing_keys(&user)? {
                let Ok(mut obj) = serde_json::from_str::<Value>(&key) else {
                    continue;
                };
                if let Some(pk) = cross_signing_public_key(&obj) {
                    add_sigs(&mut obj, &pk);
                }
                match kind.as_str() {
                    "master" => {
                        master.insert(user.clone(), obj);
                    }
                    "self_signing" => {
                        self_signing.insert(user.clone(), obj);
                    }
                    "user_signing" if viewer.is_some_and(|v| user == v.as_str()) => {
                        user_signing.insert(user.clone(), obj);
                    }
                    _ => {}
                }
            }
        }
        Ok(json!({
            "device_keys": out_devices,
            "master_keys": master,
            "self_signing_keys": self_signing,
            "user_signing_keys": user_signing,
            "failures": failures,
        }))
    }

    // ----- claim -----

    /// `POST /keys/claim`: one one-time key per requested device, else its
    /// fallback key. A principal's keys go only to those who may reach them
    /// (the reach rule): a stranger cannot open an Olm session with a
    /// principal, nor drain their one-time keys.
    pub async fn claim_keys(
        &self,
        claimant: Claimant<'_>,
        wanted: BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<Value> {
        // A claim in this process waits for the one before; one in another
        // process sharing the database may take a key this one picked, and
        // the store then refuses the second (a conflict): pick again.
        for _ in 0..8 {
            if let Some(claimed) = self.claim_keys_once(claimant, &wanted).await? {
                return Ok(claimed);
            }
        }
        Err(Error::internal(
            "one-time keys kept being claimed elsewhere",
        ))
    }

    /// One try of [`Services::claim_keys`]; `None` when another process
    /// claimed one of the keys first.
    async fn claim_keys_once(
        &self,
        claimant: Claimant<'_>,
        wanted: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<Option<Value>> {
        let _one_at_a_time = self.keys.claim_lock.lock().await;
        let mut out = Map::new();
        let mut failures = Map::new();
        let mut batch = WriteBatch::new();
        for (user, devices) in wanted {
            if !self.is_local_or_failure(user, &mut failures) {
                continue;
            }
            let may_reach = match UserId::parse(user.as_str()) {
                Ok(u) => self.claimant_may_reach(claimant, &u)?,
                Err(_) => false,
            };
            if !may_reach {
                continue;
            }
            let mut per_user = Map::new();
            for (device, algorithm) in devices {
                let found = match self.store.find_one_time_key(&user, &device, &algorithm)? {
                    Some((key_id, json)) => {
                        batch.push(WriteOp::DeleteOneTimeKey {
                            user_id: user.clone(),
                            device_id: device.clone(),
                            key_id: key_id.clone(),
                        });
                        Some((key_id, json))
                    }
                    None => match self.store.fallback_key(&user, &device, &algorithm)? {
                        Some((key_id, json)) => {
                            batch.push(WriteOp::MarkFallbackUsed {
                                user_id: user.clone(),
                                device_id: device.clone(),
                                algorithm: algorithm.clone(),
                            });
                            Some((key_id, json))
                        }
                        None => None,
                    },
                };
                if let Some((key_id, json)) = found {
                    let key: Value = serde_json::from_str(&json).map_err(Error::internal)?;
                    per_user.insert(device.clone(), json!({ key_id: key }));
                }
            }
            if !per_user.is_empty() {
                out.insert(user.clone(), Value::Object(per_user));
            }
        }
        if !batch.ops.is_empty() {
            match self.store.write(batch).await {
                Err(hotline_store::StoreError::Conflict(_)) => return Ok(None),
                other => {
                    other?;
                }
            }
        }
        Ok(Some(json!({ "one_time_keys": out, "failures": failures })))
    }

    /// Whether a claim may take `target`'s keys. Another server's claim
    /// names no user (`/user/keys/claim` carries none), so it may take a
    /// principal's keys when one of its users sharing a room with them may
    /// reach them: the counterpart of a line, or that principal's aides.
    fn claimant_may_reach(&self, claimant: Claimant<'_>, target: &UserId) -> Result<bool> {
        match claimant {
            Claimant::User(sender) => Ok(self.check_may_reach(sender, target).is_ok()),
            Claimant::Server(origin) => {
                if self.reach_protected(target)?.is_none() {
                    return Ok(true);
                }
                for u in self.users_sharing_rooms(target)? {
                    if u.server_name() == origin && self.check_may_reach(&u, target).is_ok() {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }

    // ----- cross-signing -----

    /// `POST /keys/device_signing/upload`. Replacing an existing master key
    /// needs the password; the first upload does not.
    pub async fn upload_signing_keys(
        &self,
        sender: &Sender,
        body: Value,
        auth: Option<AuthData>,
    ) -> Result<()> {
        let body = parse_object(&body, "Request body")?;
        let user = sender.user_id.as_str();
        let existing: HashMap<String, String> =
            self.store.cross_signing_keys(user)?.into_iter().collect();
        let mut new = BTreeMap::new();
        for (field, kind) in [
            ("master_key", "master"),
            ("self_signing_key", "self_signing"),
            ("user_signing_key", "user_signing"),
        ] {
            let Some(key) = body.get(field).filter(|v| !v.is_null()) else {
                continue;
            };
            serde_json::from_value::<ruma::encryption::CrossSigningKey>(key.clone())
                .map_err(|e| Error::bad_json(format!("Invalid {field}: {e}")))?;
            if key["user_id"] != user {
                return Err(Error::invalid_param(format!("{field} is for another user")));
            }
            if !key["usage"]
                .as_array()
                .is_some_and(|u| u.iter().any(|x| x == kind))
            {
                return Err(Error::invalid_param(format!(
                    "{field} must have usage '{kind}'"
                )));
            }
            if cross_signing_public_key(key).is_none() {
                return Err(Error::invalid_param(format!(
                    "{field} must hold exactly one ed25519 key"
                )));
            }
            new.insert(kind, key.clone());
        }
        if new.is_empty() {
            return Ok(());
        }
        let replaces = new
            .iter()
            .any(|(kind, key)| existing.get(*kind).is_some_and(|old| !same_key(old, key)));
        if replaces {
            self.require_password_auth(&sender.user_id, auth).await?;
        }
        let master = match new.get("master") {
            Some(m) => m.clone(),
            None => existing
                .get("master")
                .and_then(|m| serde_json::from_str(m).ok())
                .ok_or_else(|| Error::invalid_param("Upload a master key first"))?,
        };
        let master_pk = cross_signing_public_key(&master).expect("checked above or stored checked");
        for kind in ["self_signing", "user_signing"] {
            if let Some(key) = new.get(kind) {
                if !signature_valid(key, user, &format!("ed25519:{master_pk}"), &master_pk) {
                    return Err(Error::invalid_param(format!(
                        "The {kind} key is not signed by the master key"
                    )));
                }
            }
        }
        let mut batch = WriteBatch::new();
        let public: serde_json::Map<String, Value> = new
            .iter()
            .filter(|(kind, _)| matches!(**kind, "master" | "self_signing"))
            .map(|(kind, key)| (format!("{kind}_key"), key.clone()))
            .collect();
        batch
            .ops
            .extend(self.signing_key_update_edus(&sender.user_id, public)?);
        for (kind, key) in new {
            batch.push(WriteOp::PutCrossSigningKey {
                user_id: user.to_owned(),
                key_type: kind.to_owned(),
                json: key.to_string(),
            });
        }
        batch.push(WriteOp::KeyChange {
            user_id: user.to_owned(),
        });
        self.store.write(batch).await?;
        Ok(())
    }

    /// `POST /keys/signatures/upload`: signatures of one's own devices and
    /// master key, and of other users' master keys. Returns `failures`.
    pub async fn upload_signatures(&self, sender: &Sender, body: Value) -> Result<Value> {
        let body = parse_object(&body, "Request body")?;
        let me = sender.user_id.as_str();
        let my_keys = self.cross_signing_key_map(me)?;
        let my_ssk = my_keys
            .get("self_signing")
            .and_then(cross_signing_public_key);
        let my_usk = my_keys
            .get("user_signing")
            .and_then(cross_signing_public_key);
        let my_devices: HashMap<String, Value> = self
            .store
            .device_keys(me)?
            .into_iter()
            .filter_map(|(d, j)| Some((d, serde_json::from_str(&j).ok()?)))
            .collect();

        let mut failures: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        let mut fail = |user: &str, key_id: &str, errcode: &str, error: &str| {
            failures.entry(user.to_owned()).or_default().insert(
                key_id.to_owned(),
                json!({"errcode": errcode, "error": error}),
            );
        };
        let mut batch = WriteBatch::new();
        let mut changed: BTreeSet<String> = BTreeSet::new();
        for (target_user, objects) in body {
            let Some(objects) = objects.as_object() else {
                return Err(Error::bad_json("Each user's signatures must be an object"));
            };
            let target_keys: HashMap<String, Value> = if target_user == me {
                my_keys.clone()
            } else {
                self.cross_signing_key_map(&target_user)?
            };
            let target_master = target_keys.get("master").and_then(cross_signing_public_key);
            for (key_id, signed) in objects {
                let Some(sigs) = signed
                    .get("signatures")
                    .and_then(|s| s.get(me))
                    .and_then(|s| s.as_object())
                else {
                    fail(
                        &target_user,
                        key_id,
                        "M_INVALID_SIGNATURE",
                        "No signature by the uploader",
                    );
                    continue;
                };
                // Which key of mine may sign this object, and against which stored copy.
                let (signer_pk, stored): (Option<String>, Option<&Value>) = if target_user == me {
                    if let Some(dk) = my_devices.get(key_id) {
                        (my_ssk.clone(), Some(dk))
                    } else if target_master.as_deref() == Some(key_id.as_str()) {
                        (None, target_keys.get("master"))
                    } else {
                        fail(&target_user, key_id, "M_NOT_FOUND", "Unknown key");
                        continue;
                    }
                } else if target_master.as_deref() == Some(key_id.as_str()) {
                    (my_usk.clone(), target_keys.get("master"))
                } else {
                    fail(
                        &target_user,
                        key_id,
                        "M_NOT_FOUND",
                        "Only master keys of other users can be signed",
                    );
                    continue;
                };
                let Some(stored) = stored else {
                    fail(&target_user, key_id, "M_NOT_FOUND", "Unknown key");
                    continue;
                };
                if !same_key(&stored.to_string(), signed) {
                    fail(
                        &target_user,
                        key_id,
                        "M_INVALID_PARAM",
                        "Signed object differs from the stored key",
                    );
                    continue;
                }
                for (signer_key_id, sig) in sigs {
                    let Some(sig) = sig.as_str() else { continue };
                    let Some(pk_id) = signer_key_id.strip_prefix("ed25519:") else {
                        continue;
                    };
                    // The public key that made this signature: my cross-signing
                    // key, or (for my own master key) one of my devices.
                    let public = match &signer_pk {
                        Some(pk) if pk == pk_id => Some(pk.clone()),
                        Some(_) => None,
                        None => my_devices
                            .get(pk_id)
                            .and_then(|d| d["keys"][signer_key_id].as_str())
                            .map(str::to_owned),
                    };
                    let Some(public) = public else { continue };
                    if !signature_valid(signed, me, signer_key_id, &public) {
                        fail(
                            &target_user,
                            key_id,
                            "M_INVALID_SIGNATURE",
                            "Invalid signature",
                        );
                        continue;
                    }
                    batch.push(WriteOp::PutKeySignature(KeySignatureRow {
                        target_user: target_user.clone(),
                        target_key_id: key_id.clone(),
                        signer_user: me.to_owned(),
                        signer_key_id: signer_key_id.clone(),
                        signature: sig.to_owned(),
                    }));
                    // Signatures of others' keys are visible to the signer only.
                    changed.insert(if target_user == me {
                        target_user.clone()
                    } else {
                        me.to_owned()
                    });
                }
            }
        }
        for user_id in changed {
            batch.push(WriteOp::KeyChange { user_id });
        }
        if !batch.ops.is_empty() {
            self.store.write(batch).await?;
        }
        Ok(json!({ "failures": failures }))
    }

    // ----- to-device -----

    /// `PUT /sendToDevice/{eventType}/{txnId}`. Messages to unknown users or
    /// devices are dropped; a device's queue is capped.
    pub async fn send_to_device(
        &self,
        sender: &Sender,
        event_type: &str,
        txn_id: &str,
        messages: BTreeMap<String, BTreeMap<String, Box<RawValue>>>,
    ) -> Result<()> {
        let txn_key = format!("to_device:{txn_id}");
        if self
            .store
            .find_txn(sender.user_id.as_str(), sender.device_id.as_str(), &txn_key)?
            .is_some()
        {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        let mut remote: BTreeMap<OwnedUserId, Map<String, Value>> = BTreeMap::new();
        for (user, devices) in messages {
            let Ok(user_id) = UserId::parse(user.as_str()) else {
                return Err(Error::invalid_param(format!("Invalid user id '{user}'")));
            };
            if user_id.server_name() != self.server_name() {
                self.check_may_send_to_device(sender, &user_id)?;
                let entry = remote.entry(user_id).or_default();
                for (device, content) in devices {
                    let content: Value = serde_json::from_str(content.get())?;
                    entry.insert(device, content);
                }
                continue;
            }
            self.check_may_send_to_device(sender, &user_id)?;
            let known: Vec<String> = self
                .store
                .list_devices(&user)?
                .into_iter()
                .map(|d| d.device_id)
                .collect();
            for (device, content) in devices {
                let targets: Vec<&String> = if device == "*" {
                    known.iter().collect()
                } else {
                    known.iter().filter(|d| **d == device).collect()
                };
                let event = serde_json::to_string(&json!({
                    "type": event_type,
                    "sender": sender.user_id,
                    "content": content,
                }))?;
                for d in targets {
                    batch.push(WriteOp::PutToDevice {
                        user_id: user.clone(),
                        device_id: d.clone(),
                        json: event.clone(),
                        max_queued: MAX_QUEUED_TO_DEVICE,
                    });
                }
            }
        }
        batch.push(WriteOp::RecordTxn {
            user_id: sender.user_id.to_string(),
            device_id: sender.device_id.to_string(),
            txn_id: txn_key,
        });
        if !remote.is_empty() {
            // Queued for the users' servers in the same commit: room keys
            // travel this way, and a `200` must mean they will arrive.
            let message_id = format!("{}.{txn_id}", sender.device_id);
            batch.ops.extend(self.federate_to_device(
                &sender.user_id,
                event_type,
                &message_id,
                remote,
            ));
        }
        self.store.write(batch).await?;
        Ok(())
    }

    /// Principals' devices are reached only through a direct line.
    fn check_may_send_to_device(&self, sender: &Sender, target: &UserId) -> Result<()> {
        self.check_may_reach(&sender.user_id, target)
    }

    /// Deletes the device's to-device messages that a `since` cursor of
    /// `acked` acknowledges (once per cursor advance).
    pub(crate) async fn prune_to_device(&self, sender: &Sender, acked: i64) -> Result<()> {
        let key = (sender.user_id.to_string(), sender.device_id.to_string());
        let cursor = self.keys.to_device.lock().get(&key).copied();
        let needed = match cursor {
            Some(c) => acked > c.pruned_upto && c.latest > c.pruned_upto,
            None => acked > 0,
        };
        if !needed {
            return Ok(());
        }
        self.store
            .write(WriteBatch::one(WriteOp::DeleteToDevice {
                user_id: key.0.clone(),
                device_id: key.1.clone(),
                upto: acked,
            }))
            .await?;
        let mut map = self.keys.to_device.lock();
        let c = map.entry(key).or_default();
        c.pruned_upto = c.pruned_upto.max(acked);
        Ok(())
    }

    /// The device's to-device messages after `after` (up to `upto`), and the
    /// cursor to put in the next token.
    pub(crate) fn to_device_for_sync(
        &self,
        sender: &Sender,
        after: i64,
        upto: i64,
    ) -> Result<(Vec<Box<RawValue>>, i64)> {
        let user = sender.user_id.as_str();
        let device = sender.device_id.as_str();
        let key = (user.to_owned(), device.to_owned());
        let cached = self.keys.to_device.lock().get(&key).copied();
        let cursor = match cached {
            Some(c) => c,
            None => {
                let latest = self.store.to_device_latest(user, device)?.unwrap_or(0);
                let mut map = self.keys.to_device.lock();
                let c = map.entry(key.clone()).or_default();
                c.latest = c.latest.max(latest);
                *c
            }
        };
        if cursor.latest <= after {
            return Ok((Vec::new(), after));
        }
        let rows = self
            .store
            .to_device_since(user, device, after, TO_DEVICE_PER_SYNC)?;
        let mut next = after;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            if row.pos > upto {
                break;
            }
            next = row.pos;
            if let Ok(raw) = RawValue::from_string(row.json) {
                events.push(raw);
            }
        }
        Ok((events, next))
    }

    // ----- device lists -----

    /// Users who share a joined room with `user`, and `user`.
    pub(crate) fn users_sharing_rooms(&self, user: &UserId) -> Result<HashSet<OwnedUserId>> {
        let mut out = HashSet::new();
        out.insert(user.to_owned());
        for (room_id, (m, _)) in self.user_rooms(user)?.rooms {
            if m == MembershipState::Join {
                out.extend(self.room(&room_id)?.joined_members());
            }
        }
        Ok(out)
    }

    /// `device_lists` for an incremental sync from `since` to `upto`:
    /// users sharing a room whose keys changed, who joined a shared room,
    /// or who no longer share any room.
    pub(crate) fn device_list_changes(
        &self,
        user: &UserId,
        user_rooms: &crate::rooms::UserRooms,
        since: i64,
        upto: i64,
    ) -> Result<(Vec<OwnedUserId>, Vec<OwnedUserId>)> {
        let mut changed: BTreeSet<OwnedUserId> = BTreeSet::new();
        let mut gone: BTreeSet<OwnedUserId> = BTreeSet::new();
        for (room_id, (membership, mpos)) in &user_rooms.rooms {
            let room = self.room(room_id)?;
            let i_moved = *mpos > since && *mpos <= upto;
            if *membership == MembershipState::Join && i_moved {
                // Newly joined: everyone in it may be new to this user.
                changed.extend(room.joined_members());
                continue;
            }
            if *membership != MembershipState::Join && i_moved {
                gone.extend(room.joined_members());
                continue;
            }
            // Only membership events change who shares the room.
            if *membership != MembershipState::Join || room.last_member_pos() <= since {
                continue;
            }
            let events = match room.recent_window(since, upto) {
                Some(e) => e,
                None => self
                    .store
                    .room_events_forward(room_id.as_str(), since, 10_000)?
                    .iter()
                    .filter(|r| r.pos <= upto)
                    .map(|r| self.load_event(r).map(std::sync::Arc::new))
                    .collect::<Result<_>>()?,
            };
            for e in events {
                if e.pdu.kind != ruma::events::TimelineEventType::RoomMember {
                    continue;
                }
                let Some(target) = e
                    .pdu
                    .state_key
                    .as_deref()
                    .and_then(|k| UserId::parse(k).ok())
                else {
                    continue;
                };
                let membership = e
                    .content::<ruma::events::room::member::RoomMemberEventContent>()
                    .ok()
                    .map(|c| c.membership);
                match membership {
                    Some(MembershipState::Join) => {
                        changed.insert(target);
                    }
                    Some(MembershipState::Leave) | Some(MembershipState::Ban) => {
                        gone.insert(target);
                    }
                    _ => {}
                }
            }
        }
        if self.keys.last_key_change.load(Ordering::Acquire) > since {
            let users = self.store.key_changes(since, upto)?;
            if !users.is_empty() {
                let sharing = self.users_sharing_rooms(user)?;
                for u in users {
                    if let Ok(u) = UserId::parse(u) {
                        if sharing.contains(&u) {
                            changed.insert(u);
                        }
                    }
                }
            }
        }
        let left: Vec<OwnedUserId> = if gone.is_empty() {
            Vec::new()
        } else {
            let sharing = self.users_sharing_rooms(user)?;
            gone.into_iter()
                .filter(|u| !sharing.contains(u) && u != user)
                .collect()
        };
        for u in &left {
            changed.remove(u);
        }
        Ok((changed.into_iter().collect(), left))
    }

    /// `GET /keys/changes`.
    pub fn key_changes_between(
        &self,
        user: &UserId,
        from: i64,
        to: i64,
    ) -> Result<(Vec<OwnedUserId>, Vec<OwnedUserId>)> {
        let user_rooms = self.user_rooms(user)?;
        self.device_list_changes(user, &user_rooms, from, to.min(self.visible_pos()))
    }
}
