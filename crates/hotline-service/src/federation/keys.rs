//! Other servers' signing keys: fetched, checked, kept until their
//! `valid_until_ts`; and this server as a notary for its peers' keys.
//!
//! A server's keys are asked of the server itself first
//! (`/_matrix/key/v2/server`): the answer must name that server and be
//! signed by every key it lists. When it cannot be reached, each other
//! allowed peer is asked as a notary (`/_matrix/key/v2/query/{server}`):
//! its answer must carry the server's own signature as above and the
//! notary's, checked with the notary's key fetched directly (never through
//! another notary, so a chain of notaries cannot vouch for itself).
//! A key past its `valid_until_ts` is fetched again; an answer that would
//! keep a key valid for more than a week is trusted for a week only (the
//! spec's cap for room versions that honour `valid_until_ts`).

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use ruma::api::federation::discovery::{get_remote_server_keys, get_server_keys};
use ruma::{OwnedServerName, ServerName};
use serde_json::{json, Value};

use crate::{now_ms, Error, Result, Services};

/// Longest a fetched key is trusted without asking again.
const MAX_VALIDITY_MS: i64 = 7 * 86_400_000;

/// How long this server's own published keys are valid.
pub const OWN_VALIDITY_MS: i64 = 7 * 86_400_000;

/// A server's keys as last fetched.
#[derive(Clone, Debug)]
pub(crate) struct ServerKeys {
    /// Current keys: key id → unpadded base64.
    verify_keys: BTreeMap<String, String>,
    /// Keys it used to have: key id → (key, when it stopped using it).
    old_verify_keys: BTreeMap<String, (String, i64)>,
    /// Trusted until then (capped, see the module docs).
    valid_until_ts: i64,
    /// The object as the server signed it, for notary answers.
    signed: Value,
}

/// Fetched keys per server, and one fetch at a time per server.
#[derive(Default)]
pub struct KeyCache {
    keys: Mutex<HashMap<OwnedServerName, ServerKeys>>,
    fetching: Mutex<HashMap<OwnedServerName, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyCache {
    fn fresh(&self, server: &ServerName, now: i64) -> Option<ServerKeys> {
        self.keys
            .lock()
            .get(server)
            .filter(|k| k.valid_until_ts > now)
            .cloned()
    }
}

/// Checks a key object `server` published: it names `server` and every key
/// in `verify_keys` signed it. Answers its keys.
fn check_self_signed(server: &ServerName, object: &Value, now: i64) -> Result<ServerKeys> {
    let bad = |why: &str| Error::Unavailable(format!("{server}'s keys: {why}"));
    if object["server_name"].as_str() != Some(server.as_str()) {
        return Err(bad("they name another server"));
    }
    let verify_keys: BTreeMap<String, String> = object["verify_keys"]
        .as_object()
        .ok_or_else(|| bad("no verify_keys"))?
        .iter()
        .filter_map(|(id, k)| Some((id.clone(), k["key"].as_str()?.to_owned())))
        .collect();
    if verify_keys.is_empty() {
        return Err(bad("no key"));
    }
    for (id, key) in &verify_keys {
        if !crate::keys::signature_valid(object, server.as_str(), id, key) {
            return Err(bad(&format!("not signed by {id}")));
        }
    }
    let old_verify_keys = object["old_verify_keys"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(id, k)| {
                    Some((
                        id.clone(),
                        (k["key"].as_str()?.to_owned(), k["expired_ts"].as_i64()?),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let valid_until_ts = object["valid_until_ts"]
        .as_i64()
        .ok_or_else(|| bad("no valid_until_ts"))?
        .min(now + MAX_VALIDITY_MS);
    Ok(ServerKeys {
        verify_keys,
        old_verify_keys,
        valid_until_ts,
        signed: object.clone(),
    })
}

impl Services {
    /// This server's keys, signed (`GET /_matrix/key/v2/server`): the
    /// current key and the ones it rotated out, with when.
    pub fn server_keys(&self) -> Result<Value> {
        let mut v = json!({
            "server_name": self.server_name().as_str(),
            "valid_until_ts": now_ms() + OWN_VALIDITY_MS,
            "verify_keys": { (self.server_key.key_id.clone()): {"key": self.server_key.public_key()} },
            "old_verify_keys": self.server_key.old_keys_json(),
        });
        self.server_key.sign(self.server_name().as_str(), &mut v)?;
        Ok(v)
    }

    /// The public key `key_id` of `server` (unpadded base64), as a current
    /// key, fetched if not known or no longer fresh.
    pub async fn server_verify_key(&self, server: &ServerName, key_id: &str) -> Result<String> {
        if server == self.server_name() {
            return if key_id == self.server_key.key_id {
                Ok(self.server_key.public_key())
            } else {
                Err(Error::NotFound(format!("No current key {key_id}")))
            };
        }
        let keys = self.keys_of(server, true).await?;
        keys.verify_keys
            .get(key_id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("{server} has no current key {key_id}")))
    }

    /// The public key `key_id` of `server` that was valid at `at_ts`:
    /// current, or rotated out after then (checking old signatures).
    pub async fn server_key_at(
        &self,
        server: &ServerName,
        key_id: &str,
        at_ts: i64,
    ) -> Result<String> {
        if server == self.server_name() {
            if key_id == self.server_key.key_id {
                return Ok(self.server_key.public_key());
            }
            return self
                .server_key
                .old_key(key_id, at_ts)
                .ok_or_else(|| Error::NotFound(format!("No key {key_id} valid then")));
        }
        let keys = self.keys_of(server, true).await?;
        if let Some(k) = keys.verify_keys.get(key_id) {
            return Ok(k.clone());
        }
        match keys.old_verify_keys.get(key_id) {
            Some((k, expired)) if *expired > at_ts => Ok(k.clone()),
            _ => Err(Error::NotFound(format!(
                "{server} has no key {key_id} valid then"
            ))),
        }
    }

    /// `server`'s keys, from the cache or fetched (directly, then, with
    /// `notaries`, through the other peers).
    async fn keys_of(&self, server: &ServerName, notaries: bool) -> Result<ServerKeys> {
        let cache = &self.federation.keys;
        if let Some(k) = cache.fresh(server, now_ms()) {
            return Ok(k);
        }
        let lock = cache
            .fetching
            .lock()
            .entry(server.to_owned())
            .or_default()
            .clone();
        let _one_fetch = lock.lock().await;
        // Fetched meanwhile by whoever held the lock.
        if let Some(k) = cache.fresh(server, now_ms()) {
            return Ok(k);
        }
        let fetched = match self.fetch_keys_directly(server).await {
            Ok(k) => Ok(k),
            Err(e) if notaries => {
                tracing::info!(peer = %server, error = %e, "asking the other peers for its keys");
                self.fetch_keys_from_notaries(server).await.map_err(|_| e)
            }
            Err(e) => Err(e),
        }?;
        cache.keys.lock().insert(server.to_owned(), fetched.clone());
        Ok(fetched)
    }

    /// `server`'s key document as it signed it (checked as the module docs
    /// say), with its current keys and those it rotated out (key id →
    /// unpadded base64).
    pub(crate) async fn peer_key_document(
        &self,
        server: &ServerName,
    ) -> Result<(Value, BTreeMap<String, String>, BTreeMap<String, String>)> {
        let k = self.keys_of(server, true).await?;
        let old = k
            .old_verify_keys
            .into_iter()
            .map(|(id, (key, _))| (id, key))
            .collect();
        Ok((k.signed, k.verify_keys, old))
    }

    async fn fetch_keys_directly(&self, server: &ServerName) -> Result<ServerKeys> {
        let answer = self
            .federation_call_unsigned(server, get_server_keys::v2::Request::new())
            .await?;
        let object: Value = answer
            .server_key
            .deserialize_as_unchecked()
            .map_err(|e| Error::Unavailable(format!("{server}'s keys are unreadable: {e}")))?;
        check_self_signed(server, &object, now_ms())
    }

    async fn fetch_keys_from_notaries(&self, server: &ServerName) -> Result<ServerKeys> {
        let now = now_ms();
        let peers: Vec<OwnedServerName> = self
            .federation
            .peers()
            .filter(|p| p.as_str() != server.as_str())
            .filter_map(|p| ServerName::parse(p).ok())
            .collect();
        for notary in peers {
            let request = get_remote_server_keys::v2::Request::new(
                server.to_owned(),
                ruma::MilliSecondsSinceUnixEpoch::now(),
            );
            let answer = match self.federation_call_unsigned(&notary, request).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::info!(peer = %notary, error = %e, "a notary could not answer");
                    continue;
                }
            };
            // The notary's own key, fetched directly (module docs).
            let Ok(notary_keys) = Box::pin(self.keys_of(&notary, false)).await else {
                continue;
            };
            for raw in answer.server_keys {
                let Ok(object) = raw.deserialize_as_unchecked::<Value>() else {
                    continue;
                };
                let Ok(keys) = check_self_signed(server, &object, now) else {
                    continue;
                };
                let vouched = notary_keys.verify_keys.iter().any(|(id, key)| {
                    crate::keys::signature_valid(&object, notary.as_str(), id, key)
                });
                if vouched && keys.valid_until_ts > now {
                    return Ok(keys);
                }
            }
        }
        Err(Error::Unavailable(format!(
            "No peer could vouch for {server}'s keys"
        )))
    }

    /// The notary's answer for `server` (`/_matrix/key/v2/query`): its keys
    /// as it signed them, with this server's signature added. Only this
    /// server's and its peers' keys are served: it is no notary for
    /// servers it does not federate with.
    pub async fn notary_keys(&self, server: &ServerName) -> Result<Option<Value>> {
        if server == self.server_name() {
            return self.server_keys().map(Some);
        }
        if self.federation_peer(server).is_err() {
            return Ok(None);
        }
        let keys = match self.keys_of(server, false).await {
            Ok(k) => k,
            Err(e) => {
                tracing::info!(peer = %server, error = %e, "no keys to serve as a notary");
                return Ok(None);
            }
        };
        let mut object = keys.signed;
        self.server_key
            .sign(self.server_name().as_str(), &mut object)?;
        Ok(Some(object))
    }
}
