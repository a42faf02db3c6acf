//! End-to-end encryption across servers: device keys and one-time keys of
//! other servers' users (asked of their server when a client asks), the
//! device list of a local user for other servers, to-device messages as
//! `m.direct_to_device` EDUs, device-list changes as `m.device_list_update`
//! EDUs, and new public cross-signing keys as `m.signing_key_update`.
//!
//! Keys of remote users are not cached: each `/keys/query` for them asks
//! their server, so what a client sees is never older than the request. A
//! `m.device_list_update` from a server is recorded as a key change of its
//! user (`WriteOp::KeyChange`), which puts them in the `device_lists` of
//! every local user sharing a room, whose client then queries again.

use std::collections::BTreeMap;

use hotline_store::{WriteBatch, WriteOp};
use ruma::api::federation::keys::{claim_keys, get_keys};
use ruma::{OwnedServerName, OwnedUserId, ServerName, UserId};
use serde_json::{json, Map, Value};

use super::sender::queue_edu;
use crate::accounts::Sender;
use crate::{Error, Result, Services};

/// Splits user ids into this server's and each other server's.
fn by_server<T>(
    ours: &ServerName,
    wanted: BTreeMap<String, T>,
) -> (
    BTreeMap<String, T>,
    BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>>,
) {
    let mut local = BTreeMap::new();
    let mut remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>> = BTreeMap::new();
    for (user, v) in wanted {
        match UserId::parse(user.as_str()) {
            Ok(u) if u.server_name() != ours => {
                remote
                    .entry(u.server_name().to_owned())
                    .or_default()
                    .insert(u, v);
            }
            _ => {
                local.insert(user, v);
            }
        }
    }
    (local, remote)
}

/// Merges the objects at `key` of `from` into `into`'s.
fn merge(into: &mut Value, key: &str, from: &Value) {
    if let Some(from) = from.get(key).and_then(Value::as_object) {
        if !into[key].is_object() {
            into[key] = json!({});
        }
        if let Some(target) = into[key].as_object_mut() {
            for (k, v) in from {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The failure entry for a server that could not answer.
fn failure(e: &Error) -> Value {
    json!({"errcode": "M_UNAVAILABLE", "error": e.to_string()})
}

impl Services {
    /// `POST /keys/query` for local and remote users alike.
    pub async fn query_keys_anywhere(
        &self,
        sender: &Sender,
        device_keys: BTreeMap<String, Vec<String>>,
    ) -> Result<Value> {
        if !self.federation.enabled() {
            return self.query_keys(Some(&sender.user_id), device_keys);
        }
        let (local, remote) = by_server(self.server_name(), device_keys);
        let mut out = self.query_keys(Some(&sender.user_id), local)?;
        for (server, users) in remote {
            let mut request = get_keys::v1::Request::new(BTreeMap::new());
            for (user, devices) in users {
                let devices = devices
                    .into_iter()
                    .filter_map(|d| ruma::OwnedDeviceId::try_from(d).ok())
                    .collect();
                request.device_keys.insert(user, devices);
            }
            match self.federation_call(&server, request).await {
                Ok(answer) => {
                    let answer = serde_json::to_value(json!({
                        "device_keys": answer.device_keys,
                        "master_keys": answer.master_keys,
                        "self_signing_keys": answer.self_signing_keys,
                    }))?;
                    // Only what its server says of its own users.
                    let answer = own_users_only(&server, answer);
                    for key in ["device_keys", "master_keys", "self_signing_keys"] {
                        merge(&mut out, key, &answer);
                    }
                }
                Err(e) => {
                    out["failures"][server.as_str()] = failure(&e);
                }
            }
        }
        Ok(out)
    }

    /// `POST /keys/claim` for local and remote users alike.
    pub async fn claim_keys_anywhere(
        &self,
        sender: &UserId,
        wanted: BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<Value> {
        if !self.federation.enabled() {
            return self
                .claim_keys(crate::keys::Claimant::User(sender), wanted)
                .await;
        }
        let (local, remote) = by_server(self.server_name(), wanted);
        let mut out = self
            .claim_keys(crate::keys::Claimant::User(sender), local)
            .await?;
        for (server, users) in remote {
            let mut claims = BTreeMap::new();
            for (user, devices) in users {
                // The other server is asked for the user's sake, unnamed:
                // the reach rule is this server's to keep for its own.
                if self.check_may_reach(sender, &user).is_err() {
                    continue;
                }
                let devices = devices
                    .into_iter()
                    .filter_map(|(d, alg)| {
                        Some((
                            ruma::OwnedDeviceId::try_from(d).ok()?,
                            ruma::OneTimeKeyAlgorithm::from(alg.as_str()),
                        ))
                    })
                    .collect();
                claims.insert(user, devices);
            }
            match self
                .federation_call(&server, claim_keys::v1::Request::new(claims))
                .await
            {
                Ok(answer) => {
                    let answer = json!({ "one_time_keys": answer.one_time_keys });
                    merge(&mut out, "one_time_keys", &own_users_only(&server, answer));
                }
                Err(e) => {
                    out["failures"][server.as_str()] = failure(&e);
                }
            }
        }
        Ok(out)
    }

    /// `GET /_matrix/federation/v1/user/devices/{userId}`: a local user's
    /// devices with their keys, and their cross-signing keys.
    pub fn devices_for_federation(&self, user: &UserId) -> Result<Value> {
        if user.server_name() != self.server_name() || !self.user_exists(user)? {
            return Err(Error::not_found("Not a user of this server"));
        }
        let keys = self.query_keys(None, BTreeMap::from([(user.to_string(), Vec::new())]))?;
        let names: BTreeMap<String, Option<String>> = self
            .store
            .list_devices(user.as_str())?
            .into_iter()
            .map(|d| (d.device_id, d.display_name))
            .collect();
        let mut devices = Vec::new();
        if let Some(map) = keys["device_keys"][user.as_str()].as_object() {
            for (device_id, k) in map {
                let mut k = k.clone();
                if let Some(o) = k.as_object_mut() {
                    o.remove("unsigned");
                }
                let mut d = json!({ "device_id": device_id, "keys": k });
                if let Some(Some(name)) = names.get(device_id) {
                    d["device_display_name"] = json!(name);
                }
                devices.push(d);
            }
        }
        let mut out = json!({
            "user_id": user,
            "stream_id": self.store.current_position(),
            "devices": devices,
        });
        if let Some(k) = keys["master_keys"].get(user.as_str()) {
            out["master_key"] = k.clone();
        }
        if let Some(k) = keys["self_signing_keys"].get(user.as_str()) {
            out["self_signing_key"] = k.clone();
        }
        Ok(out)
    }

    /// `POST /_matrix/federation/v1/user/keys/query`: local users' keys
    /// for `origin`.
    pub fn query_keys_for_federation(
        &self,
        origin: &ServerName,
        device_keys: BTreeMap<String, Vec<String>>,
    ) -> Result<Value> {
        let _ = origin;
        let (local, _) = by_server(self.server_name(), device_keys);
        let mut out = self.query_keys(None, local)?;
        if let Some(o) = out.as_object_mut() {
            o.remove("user_signing_keys");
            o.remove("failures");
        }
        Ok(out)
    }

    /// `POST /_matrix/federation/v1/user/keys/claim`: one-time keys of
    /// local users for `origin`'s users.
    pub async fn claim_keys_for_federation(
        &self,
        origin: &ServerName,
        wanted: BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<Value> {
        let (local, _) = by_server(self.server_name(), wanted);
        let mut out = self
            .claim_keys(crate::keys::Claimant::Server(origin), local)
            .await?;
        if let Some(o) = out.as_object_mut() {
            o.remove("failures");
        }
        Ok(out)
    }

    /// To-device messages for users of other servers: one
    /// `m.direct_to_device` EDU per server, as the operations that queue
    /// them.
    pub(crate) fn federate_to_device(
        &self,
        sender: &UserId,
        event_type: &str,
        message_id: &str,
        messages: BTreeMap<OwnedUserId, Map<String, Value>>,
    ) -> Vec<WriteOp> {
        let mut per_server: BTreeMap<OwnedServerName, Map<String, Value>> = BTreeMap::new();
        for (user, devices) in messages {
            if self.federation_peer(user.server_name()).is_err() {
                continue;
            }
            per_server
                .entry(user.server_name().to_owned())
                .or_default()
                .insert(user.to_string(), Value::Object(devices));
        }
        per_server
            .into_iter()
            .map(|(server, messages)| {
                queue_edu(
                    &server,
                    json!({"edu_type": "m.direct_to_device", "content": {
                        "sender": sender, "type": event_type, "message_id": message_id,
                        "messages": messages }}),
                )
            })
            .collect()
    }

    /// A local user's devices or keys changed: the servers sharing a room
    /// with them hear of it.
    pub(crate) fn federate_key_change(&self, user: &UserId, sharing: &[OwnedUserId], pos: i64) {
        let ops: Vec<WriteOp> = self
            .peers_hearing_of(user, sharing)
            .into_iter()
            .map(|server| {
                queue_edu(
                    server,
                    json!({"edu_type": "m.device_list_update", "content": {
                        "user_id": user, "device_id": "", "stream_id": pos, "prev_id": [] }}),
                )
            })
            .collect();
        if ops.is_empty() {
            return;
        }
        // Called from the commit hook, which cannot write: queued by a
        // write of its own (a crash before it lands loses the notice; the
        // peer still learns of the change at its next keys query).
        let store = self.store.clone();
        self.federation.outbox.spawn(async move {
            if let Err(e) = store.write(WriteBatch { ops }).await {
                tracing::error!(error = %e, "queueing a device-list change for other servers");
            }
        });
    }

    /// `m.signing_key_update` for the servers of those sharing a room with
    /// `user` (of this server), whose public cross-signing keys changed to
    /// `keys` (`master_key`, `self_signing_key`): writes to go with the
    /// change, so the notice is as durable as the keys.
    pub(crate) fn signing_key_update_edus(
        &self,
        user: &UserId,
        keys: Map<String, Value>,
    ) -> Result<Vec<WriteOp>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut content = keys;
        content.insert("user_id".into(), json!(user));
        self.edus_for_servers_sharing_a_room(
            user,
            json!({"edu_type": "m.signing_key_update", "content": content}),
        )
    }

    /// `m.device_list_update` for the servers of those sharing a room with
    /// `user` (of this server), as writes to go with a change made outside
    /// the running server (`hotline admin vouch` and `revoke`, whose
    /// commits the server's commit hook does not see on SQLite).
    pub(crate) fn device_list_update_edus(&self, user: &UserId) -> Result<Vec<WriteOp>> {
        self.edus_for_servers_sharing_a_room(
            user,
            json!({"edu_type": "m.device_list_update", "content": {
                "user_id": user, "device_id": "", "stream_id": crate::now_ms(), "prev_id": [] }}),
        )
    }

    fn edus_for_servers_sharing_a_room(&self, user: &UserId, edu: Value) -> Result<Vec<WriteOp>> {
        if !self.federation.enabled() {
            return Ok(Vec::new());
        }
        let sharing = self.users_sharing_rooms(user)?;
        Ok(self
            .peers_of(&sharing)
            .into_iter()
            .map(|s| queue_edu(s, edu.clone()))
            .collect())
    }

    /// `m.direct_to_device` from `origin`: queued for the local devices
    /// named, under the reach rule.
    pub(crate) async fn receive_to_device(&self, origin: &ServerName, content: &Value) {
        let Some(sender) = content["sender"]
            .as_str()
            .and_then(|s| UserId::parse(s).ok())
            .filter(|s| s.server_name() == origin)
        else {
            return;
        };
        let Some(event_type) = content["type"].as_str() else {
            return;
        };
        let Some(messages) = content["messages"].as_object() else {
            return;
        };
        let mut batch = WriteBatch::new();
        for (user, devices) in messages {
            let Ok(user) = UserId::parse(user.as_str()) else {
                continue;
            };
            if user.server_name() != self.server_name()
                || self.check_may_reach(&sender, &user).is_err()
            {
                continue;
            }
            let Ok(known) = self.store.list_devices(user.as_str()) else {
                continue;
            };
            let Some(devices) = devices.as_object() else {
                continue;
            };
            for (device, message) in devices {
                let json =
                    json!({"type": event_type, "sender": sender, "content": message}).to_string();
                for d in known
                    .iter()
                    .filter(|d| device == "*" || d.device_id == *device)
                {
                    batch.push(WriteOp::PutToDevice {
                        user_id: user.to_string(),
                        device_id: d.device_id.clone(),
                        json: json.clone(),
                        max_queued: crate::keys::MAX_QUEUED_TO_DEVICE,
                    });
                }
            }
        }
        if !batch.ops.is_empty() {
            if let Err(e) = self.store.write(batch).await {
                tracing::warn!(peer = %origin, error = %e, "to-device messages from another server were not stored");
            }
        }
    }

    /// `m.device_list_update` or `m.signing_key_update` from `origin`: its
    /// user's keys changed. A new master key is kept (the line with them
    /// pauses when it is not the one their government vouched for).
    pub(crate) async fn receive_key_change(&self, origin: &ServerName, content: &Value) {
        let Some(user) = content["user_id"]
            .as_str()
            .and_then(|s| UserId::parse(s).ok())
            .filter(|u| u.server_name() == origin)
        else {
            return;
        };
        let mut batch = WriteBatch::new();
        if let Some(op) = content
            .get("master_key")
            .and_then(|k| remote_master_key(&user, k))
        {
            batch.push(op);
        }
        batch.push(WriteOp::KeyChange {
            user_id: user.to_string(),
        });
        if let Err(e) = self.store.write(batch).await {
            tracing::warn!(peer = %origin, error = %e, "a device list change was not stored");
        }
    }

    /// Asks `user`'s server for their current master key, and keeps it
    /// (when a line with them opens: from then on, `m.signing_key_update`
    /// keeps it current).
    pub(crate) async fn fetch_remote_master_key(&self, user: &UserId) -> Result<()> {
        let server = user.server_name();
        let mut request = get_keys::v1::Request::new(BTreeMap::new());
        request.device_keys.insert(user.to_owned(), Vec::new());
        let answer = self.federation_call(server, request).await?;
        let Some(raw) = answer.master_keys.get(user) else {
            return Ok(());
        };
        let key: Value = serde_json::to_value(raw)?;
        if let Some(op) = remote_master_key(user, &key) {
            self.store.write(WriteBatch::one(op)).await?;
        }
        Ok(())
    }
}

/// The write that keeps `key` as the master key of `user` (of another
/// server), when it is one: theirs, for `master` usage, one ed25519 key.
fn remote_master_key(user: &UserId, key: &Value) -> Option<WriteOp> {
    let usage_master = key["usage"]
        .as_array()
        .is_some_and(|u| u.iter().any(|x| x == "master"));
    let one_key = key["keys"].as_object().is_some_and(|k| {
        k.len() == 1
            && k.keys().all(|id| id.starts_with("ed25519:"))
            && k.values().all(Value::is_string)
    });
    (key["user_id"] == user.as_str() && usage_master && one_key).then(|| {
        WriteOp::PutCrossSigningKey {
            user_id: user.to_string(),
            key_type: "master".into(),
            json: key.to_string(),
        }
    })
}

/// Keeps only the entries (by user id, one level down) of `server`'s users:
/// a server speaks for its own users only.
fn own_users_only(server: &ServerName, mut answer: Value) -> Value {
    if let Some(o) = answer.as_object_mut() {
        for (_, per_user) in o.iter_mut() {
            if let Some(m) = per_user.as_object_mut() {
                m.retain(|user, _| {
                    UserId::parse(user.as_str()).is_ok_and(|u| u.server_name() == server)
                });
            }
        }
    }
    answer
}
