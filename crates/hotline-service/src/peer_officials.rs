//! Other governments' officials (docs/DESIGN.md capability 4 across
//! servers): each peer serves its directory of attestations and
//! revocations over signed federation (`GET
//! /_hotline/federation/v1/directory`), and this server hands it to its
//! own clients (`GET /_hotline/v1/directory/{serverName}`) with the peer's
//! self-signed key document and the keys pinned here, so the web app
//! verifies each attestation against the issuing server's own key.
//!
//! **Pinning.** A peer's attestation keys are pinned on first use (kept in
//! the store's `meta`, the pin written to the audit log) unless the
//! operator pinned them (`[federation] pinned_keys`). A key document that
//! gives a pinned key id another key, or whose current keys are none of the
//! pinned ones, is refused: a peer that rotated its key is trusted again
//! once its operator's pin says so.
//!
//! **Freshness.** A peer's directory is reused for [`FRESH_FOR`]; it is
//! forgotten at once when a key change of one of the peer's users arrives
//! (a vouch or a revocation there sends one to the servers sharing a room
//! with the official), so a revocation reaches the clients here within
//! seconds: their `/sync` reports the change, and their next read of the
//! directory asks the peer again. The verified officials of every peer
//! are kept for the name guard ([`Services::peer_officials`]), refreshed
//! every [`REFRESH_EVERY`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotline_store::{WriteBatch, WriteOp};
use parking_lot::Mutex;
use ruma::{OwnedServerName, ServerName};
use serde_json::{json, Value};

use crate::identity::{verify_attestation, Attestation};
use crate::{now_ms, Error, Result, Services};

/// Where a server serves its directory to its peers (request-signed like
/// all of federation).
pub const FEDERATION_DIRECTORY_PATH: &str = "/_hotline/federation/v1/directory";

/// How long a peer's directory is reused.
const FRESH_FOR: Duration = Duration::from_secs(60);

/// How often every peer's directory is read again for the name guard.
const REFRESH_EVERY: Duration = Duration::from_secs(300);

/// A peer's directory as this server hands it to clients, and what it
/// verified of it.
#[derive(Debug)]
pub struct PeerDirectory {
    /// The directory as the peer sent it.
    pub directory: Value,
    /// The peer's key document, as the peer signed it.
    pub server_keys: Value,
    /// The peer's keys pinned here: key id → unpadded base64.
    pub pinned: BTreeMap<String, String>,
    /// The peer's officials whose attestation verifies with a pinned key
    /// (current, unexpired, of the peer's own users).
    pub officials: Vec<Attestation>,
}

/// Peers' directories as last read.
#[derive(Default)]
pub(crate) struct PeerDirectories {
    /// When each was read (`None`: to be read again when next asked; the
    /// name guard keeps using it meanwhile).
    cache: Mutex<HashMap<OwnedServerName, (Option<Instant>, Arc<PeerDirectory>)>>,
    /// One read at a time per peer.
    reading: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
    /// Peers whose directory is to be read again and not yet being read:
    /// a burst of key changes reads it once.
    rereads: Mutex<std::collections::HashSet<OwnedServerName>>,
}

/// The `meta` key of a peer's pinned keys.
fn pin_key(server: &ServerName) -> String {
    format!("peer_attestation_keys/{server}")
}

impl Services {
    /// `GET /_hotline/v1/directory/{serverName}`: `server`'s directory,
    /// this server's own or an allowed peer's (`403` for anyone else).
    pub async fn peer_directory(&self, server: &ServerName) -> Result<Arc<PeerDirectory>> {
        if server == self.server_name() {
            let directory = self.directory()?;
            let pinned = [(self.server_key.key_id.clone(), self.server_key.public_key())].into();
            let officials = self.verified_in(server, &directory, &pinned);
            return Ok(Arc::new(PeerDirectory {
                directory,
                server_keys: self.server_keys()?,
                pinned,
                officials,
            }));
        }
        if !self.federation.enabled() {
            return Err(Error::forbidden("This server does not federate"));
        }
        self.federation_peer(server)?;
        let dirs = &self.peer_directories;
        let fresh = |at: &Option<Instant>| at.is_some_and(|at| at.elapsed() < FRESH_FOR);
        if let Some((_, d)) = dirs.cache.lock().get(server).filter(|(at, _)| fresh(at)) {
            return Ok(d.clone());
        }
        let lock = dirs
            .reading
            .lock()
            .entry(server.to_owned())
            .or_default()
            .clone();
        let _one = lock.lock().await;
        if let Some((_, d)) = dirs.cache.lock().get(server).filter(|(at, _)| fresh(at)) {
            return Ok(d.clone());
        }
        let read = Arc::new(self.read_peer_directory(server).await?);
        dirs.cache
            .lock()
            .insert(server.to_owned(), (Some(Instant::now()), read.clone()));
        Ok(read)
    }

    async fn read_peer_directory(&self, server: &ServerName) -> Result<PeerDirectory> {
        let (server_keys, current, old) = self.peer_key_document(server).await?;
        let pinned = self.pinned_keys_of(server, &current, &old).await?;
        let directory = self
            .federation_get_json(server, FEDERATION_DIRECTORY_PATH)
            .await?;
        if directory["issuer"].as_str() != Some(server.as_str()) {
            return Err(Error::Unavailable(format!(
                "{server} sent the directory of another server"
            )));
        }
        let officials = self.verified_in(server, &directory, &pinned);
        Ok(PeerDirectory {
            directory,
            server_keys,
            pinned,
            officials,
        })
    }

    /// The attestations of `directory` that verify with one of `keys`,
    /// are current and name a user of `server`.
    fn verified_in(
        &self,
        server: &ServerName,
        directory: &Value,
        keys: &BTreeMap<String, String>,
    ) -> Vec<Attestation> {
        let now = now_ms();
        let Some(list) = directory["attestations"].as_array() else {
            return Vec::new();
        };
        list.iter()
            .filter_map(|att| {
                let ids = att["signatures"][server.as_str()].as_object()?;
                let verified = ids.keys().find_map(|id| {
                    let key = keys.get(id)?;
                    verify_attestation(att, server.as_str(), id, key, now).ok()
                })?;
                let own =
                    ruma::UserId::parse(&verified.user_id).is_ok_and(|u| u.server_name() == server);
                own.then_some(verified)
            })
            .collect()
    }

    /// The keys of `server` trusted for its attestations: the operator's
    /// pin, or the one made when the peer was first seen (made now if this
    /// is the first time); checked against the keys it now publishes.
    async fn pinned_keys_of(
        &self,
        server: &ServerName,
        current: &BTreeMap<String, String>,
        old: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let configured: BTreeMap<String, String> = self
            .config
            .federation
            .pinned_keys
            .iter()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let (s, id, key) = (parts.next()?, parts.next()?, parts.next()?);
                (s.eq_ignore_ascii_case(server.as_str())).then(|| (id.to_owned(), key.to_owned()))
            })
            .collect();
        let pinned: Option<BTreeMap<String, String>> = if configured.is_empty() {
            match self.store.get_meta(&pin_key(server))? {
                Some(text) => Some(serde_json::from_str(&text).map_err(Error::internal)?),
                None => None,
            }
        } else {
            Some(configured.clone())
        };
        let Some(pinned) = pinned else {
            // First seen: its current keys are pinned, and that is recorded.
            let keys = current.clone();
            let mut batch = WriteBatch::new();
            batch.push(WriteOp::PutMeta {
                key: pin_key(server),
                value: serde_json::to_string(&keys)?,
            });
            batch.push(crate::identity::audit(
                "server",
                "peer_key_pinned",
                server.as_str(),
                json!({ "keys": keys }),
            ));
            self.store.write(batch).await?;
            tracing::info!(peer = %server, keys = ?keys.keys().collect::<Vec<_>>(), "a peer's attestation keys are pinned on first use");
            return Ok(keys);
        };
        let changed = current
            .iter()
            .chain(old.iter())
            .any(|(id, key)| pinned.get(id).is_some_and(|p| p != key));
        let still = current.keys().any(|id| pinned.contains_key(id));
        if changed || !still {
            let how = if configured.is_empty() {
                "first seen"
            } else {
                "pinned in [federation] pinned_keys"
            };
            tracing::warn!(peer = %server, "a peer's signing key is not the one pinned here");
            return Err(Error::forbidden(format!(
                "The signing key of {server} is not the one {how} here; its attestations are not trusted until an operator pins the new key ([federation] pinned_keys)"
            )));
        }
        Ok(pinned)
    }

    /// A user of `server` had a key change (a vouch or revocation there
    /// comes as one): its directory is read again when next asked (the
    /// name guard keeps the officials it named until then).
    pub(crate) fn forget_peer_directory(&self, server: &ServerName) {
        if let Some((at, _)) = self.peer_directories.cache.lock().get_mut(server) {
            *at = None;
        }
    }

    /// Every peer's officials known here (from the directories last read),
    /// for the name guard.
    pub(crate) fn peer_officials(&self) -> Vec<Attestation> {
        self.peer_directories
            .cache
            .lock()
            .values()
            .flat_map(|(_, d)| d.officials.iter().cloned())
            .collect()
    }

    /// The principal a user of another server acts for, as their
    /// government's directory (last read here) vouches: themself for a
    /// principal, theirs for an aide (of the same server). `None` for
    /// anyone it does not vouch for now.
    pub(crate) fn peer_principal_of(&self, user: &ruma::UserId) -> Option<ruma::OwnedUserId> {
        let cache = self.peer_directories.cache.lock();
        let (_, d) = cache.get(user.server_name())?;
        let a = d.officials.iter().find(|a| a.user_id == user.as_str())?;
        match a.role.as_str() {
            "principal" => Some(user.to_owned()),
            "aide" => a
                .principal
                .as_deref()
                .and_then(|p| ruma::UserId::parse(p).ok())
                .filter(|p| p.server_name() == user.server_name()),
            _ => None,
        }
    }

    /// The name of a principal of another server, as their government's
    /// directory (last read here) lists them; `None` for anyone else.
    pub(crate) fn peer_principal_name(&self, user: &ruma::UserId) -> Option<String> {
        let cache = self.peer_directories.cache.lock();
        let (_, d) = cache.get(user.server_name())?;
        d.officials
            .iter()
            .find(|a| a.user_id == user.as_str() && a.role == "principal")
            .map(|a| a.name.clone())
    }

    /// [`Services::check_line_open`] for a principal of another server:
    /// paused while their government's directory (as last read here)
    /// lists them revoked, or while the master key their server last
    /// reported differs from the one their attestation vouches for. Nothing
    /// to check before either is known here.
    pub(crate) fn check_peer_principal_open(&self, principal: &ruma::UserId) -> Result<()> {
        let (attested, revoked) = {
            let cache = self.peer_directories.cache.lock();
            let Some((_, d)) = cache.get(principal.server_name()) else {
                return Ok(());
            };
            let attested = d
                .officials
                .iter()
                .find(|a| a.user_id == principal.as_str())
                .cloned();
            let revoked = d.directory["revocations"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["user_id"] == principal.as_str()));
            (attested, revoked)
        };
        let server = principal.server_name();
        match attested {
            None if revoked => Err(Error::forbidden(format!(
                "This line is paused: the government of {principal} ({server}) revoked their attestation."
            ))),
            None => Ok(()),
            Some(att) => {
                let current = self.master_public_key(principal.as_str())?;
                if current.is_some_and(|k| k != att.master_key) {
                    return Err(Error::forbidden(format!(
                        "This line is paused: the identity key of {} changed since their office ({server}) vouched for it. Their protocol office must vouch again.",
                        att.name
                    )));
                }
                Ok(())
            }
        }
    }

    /// A key change of a user of `server` arrived: its directory is read
    /// again at once (a vouch or revocation there comes as one), so a line
    /// paused for a key change opens again when the office vouches again.
    pub(crate) fn reread_peer_directory(&self, server: &ServerName) {
        if server == self.server_name() || !self.federation.enabled() {
            return;
        }
        self.forget_peer_directory(server);
        if !self
            .peer_directories
            .rereads
            .lock()
            .insert(server.to_owned())
        {
            return;
        }
        let peer = server.to_owned();
        let started = self.federation.outbox.spawn_with(move |s| async move {
            // Taken off first: a change from now on asks for another read.
            s.peer_directories.rereads.lock().remove(&peer);
            if let Err(e) = s.peer_directory(&peer).await {
                tracing::info!(%peer, error = %e, "a peer's directory could not be read again");
            }
        });
        if !started {
            self.peer_directories.rereads.lock().remove(server);
        }
    }

    /// Reads every peer's directory now and every [`REFRESH_EVERY`], so
    /// the name guard knows their officials. Called once, on the runtime.
    pub fn start_peer_directory_refresh(self: &Arc<Self>) {
        if !self.federation.enabled() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(services) = weak.upgrade() else {
                    return;
                };
                for peer in services.federation.allowed() {
                    let Ok(server) = ServerName::parse(&peer) else {
                        continue;
                    };
                    services.forget_peer_directory(&server);
                    if let Err(e) = services.peer_directory(&server).await {
                        tracing::info!(peer = %server, error = %e, "a peer's directory could not be read");
                    }
                }
                drop(services);
                tokio::time::sleep(REFRESH_EVERY).await;
            }
        });
    }
}
