//! Federation: the rules for talking to other Matrix servers (the
//! Server-Server API). The network itself (resolving a server name, TLS,
//! HTTP) is the HTTP edge's ([`Transport`], implemented in `hotline-api`);
//! this module decides who may be talked to and checks who is talking.
//!
//! **Architecture Invariant:** nothing is sent to, and no request is
//! accepted from, a server that is not on `[federation] allow`
//! ([`Services::federation_peer`], the one check): a government federates
//! with named peers only. Every request received is checked against the
//! origin's signing key ([`Services::authenticate_federation`]) before its
//! handler runs; every request sent is signed.
//!
//! Server keys ([`keys`]) are fetched from the server itself, and from the
//! other peers as notaries when it cannot be reached, and kept until their
//! `valid_until_ts`.

mod backfill;
mod e2ee;
mod events;
mod invite;
pub mod keys;
mod knock;
mod media;
mod pdus;
mod rooms;
mod sender;

pub use media::MediaFile;
pub(crate) use pdus::CheckedPdu;
pub(crate) use rooms::new_event;
pub use rooms::{JoinAnswer, FEDERATED_VERSIONS};
pub use sender::PeerStatus;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use ruma::api::auth_scheme::NoAuthentication;
use ruma::api::federation::authentication::{ServerSignatures, ServerSignaturesInput, XMatrix};
use ruma::api::path_builder::PathBuilder;
use ruma::api::{IncomingResponse, OutgoingRequest};
use ruma::{OwnedServerName, ServerName};

use crate::config;
use crate::{Error, Result, Services};

/// A response from another server, as the network gave it.
pub type TransportResponse = http::Response<Vec<u8>>;

/// The future a [`Transport`] answers with.
pub type TransportFuture =
    Pin<Box<dyn Future<Output = std::result::Result<TransportResponse, String>> + Send>>;

/// Sends requests to other servers: resolves `destination` as the spec says,
/// connects over TLS (checking the certificate), and sends `request` (its
/// path and query, method, headers and body; the authority is ignored).
/// An error is the reason the server could not be reached, for logs.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, destination: &ServerName, request: http::Request<Vec<u8>>) -> TransportFuture;
}

/// Federation state: the configuration's allow-list, the way out, and the
/// keys of other servers.
pub struct Federation {
    enabled: bool,
    allow: HashSet<String>,
    transport: OnceLock<Arc<dyn Transport>>,
    pub(crate) keys: keys::KeyCache,
    pub(crate) outbox: sender::Outbox,
    pub(crate) backfills: backfill::Backfills,
}

impl Federation {
    pub fn new(config: &config::Federation) -> Self {
        Self {
            enabled: config.enabled,
            allow: config
                .allow
                .iter()
                .map(|s| s.trim().to_ascii_lowercase())
                .collect(),
            transport: OnceLock::new(),
            keys: keys::KeyCache::default(),
            outbox: sender::Outbox::default(),
            backfills: backfill::Backfills::default(),
        }
    }

    /// Whether federation is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Installs the way out (once, at start; the binary wires the HTTP
    /// edge's client in).
    pub fn set_transport(&self, transport: Arc<dyn Transport>) {
        let _ = self.transport.set(transport);
    }

    /// Something was queued for `server` (the commit hook).
    pub(crate) fn wake(&self, server: &str) {
        if self.enabled {
            self.outbox.wake(server);
        }
    }

    /// `server` made a request here.
    pub(crate) fn heard_from(&self, server: &ServerName) {
        self.outbox.heard_from(server);
    }

    /// The allowed peers, in order.
    pub fn allowed(&self) -> Vec<String> {
        let mut peers: Vec<String> = self.allow.iter().cloned().collect();
        peers.sort();
        peers
    }

    /// The allowed peers, for notary fallback.
    fn peers(&self) -> impl Iterator<Item = &String> {
        self.allow.iter()
    }
}

impl Services {
    /// Refuses `server` unless federation is on and it is an allowed peer.
    pub fn federation_peer(&self, server: &ServerName) -> Result<()> {
        if !self.federation.enabled {
            return Err(Error::forbidden("Federation is disabled on this server"));
        }
        if server == self.server_name() {
            return Err(Error::forbidden("A server does not federate with itself"));
        }
        if !self
            .federation
            .allow
            .contains(&server.as_str().to_ascii_lowercase())
        {
            return Err(Error::forbidden(format!(
                "{server} is not a federation peer of this server"
            )));
        }
        Ok(())
    }

    /// Sends a signed request to `destination` and reads its answer.
    pub async fn federation_call<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest<Authentication = ServerSignatures>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = ()>,
    {
        self.federation_peer(destination)?;
        let input = ServerSignaturesInput::new(
            self.server_name().to_owned(),
            destination.to_owned(),
            self.server_key.pair(),
        );
        let http = request
            .try_into_http_request::<Vec<u8>>(&format!("https://{destination}"), input, ())
            .map_err(Error::internal)?;
        self.federation_exchange::<R>(destination, http).await
    }

    /// Sends an unauthenticated request (the key endpoints) to `destination`.
    pub(crate) async fn federation_call_unsigned<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest<Authentication = NoAuthentication>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = ()>,
    {
        self.federation_peer(destination)?;
        let http = request
            .try_into_http_request::<Vec<u8>>(&format!("https://{destination}"), (), ())
            .map_err(Error::internal)?;
        self.federation_exchange::<R>(destination, http).await
    }

    /// A signed `GET` of `path` (with its query) on `destination`, for
    /// Hotline's own federation endpoints (which have no ruma types): the
    /// JSON answered.
    pub(crate) async fn federation_get_json(
        &self,
        destination: &ServerName,
        path: &str,
    ) -> Result<serde_json::Value> {
        self.federation_json(http::Method::GET, destination, path, None)
            .await
    }

    /// A signed request of `method` on `path` of `destination` with the
    /// JSON `body`, for Hotline's own federation endpoints: the JSON
    /// answered.
    pub(crate) async fn federation_json(
        &self,
        method: http::Method,
        destination: &ServerName,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        self.federation_peer(destination)?;
        let origin = self.server_name().as_str();
        let mut signed = serde_json::json!({
            "method": method.as_str(),
            "uri": path,
            "origin": origin,
            "destination": destination.as_str(),
        });
        if let Some(b) = &body {
            signed["content"] = b.clone();
        }
        self.server_key.sign(origin, &mut signed)?;
        let key_id = &self.server_key.key_id;
        let sig = signed["signatures"][origin][key_id]
            .as_str()
            .ok_or_else(|| Error::internal("a request was not signed"))?;
        let bytes = match &body {
            Some(b) => serde_json::to_vec(b)?,
            None => Vec::new(),
        };
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("https://{destination}{path}"))
            .header(
                http::header::AUTHORIZATION,
                format!(
                    "X-Matrix origin=\"{origin}\",destination=\"{destination}\",key=\"{key_id}\",sig=\"{sig}\""
                ),
            );
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(bytes).map_err(Error::internal)?;
        let response = self.federation_send(destination, request).await?;
        serde_json::from_slice(response.body()).map_err(|e| {
            tracing::warn!(peer = %destination, %path, error = %e, "an unreadable federation answer");
            Error::Unavailable(format!("{destination} gave an unreadable answer"))
        })
    }

    async fn federation_exchange<R: OutgoingRequest>(
        &self,
        destination: &ServerName,
        request: http::Request<Vec<u8>>,
    ) -> Result<R::IncomingResponse> {
        let path = request.uri().path().to_owned();
        let response = self.federation_send(destination, request).await?;
        R::IncomingResponse::try_from_http_response(response).map_err(|e| {
            tracing::warn!(peer = %destination, %path, error = %e, "an unreadable federation answer");
            Error::Unavailable(format!("{destination} gave an unreadable answer"))
        })
    }

    /// Sends `request` to `destination`: its answer when it succeeded, the
    /// reason (as an error of the kind its status says) when not.
    async fn federation_send(
        &self,
        destination: &ServerName,
        request: http::Request<Vec<u8>>,
    ) -> Result<TransportResponse> {
        let transport = self
            .federation
            .transport
            .get()
            .ok_or_else(|| Error::Unavailable("Federation is not running".into()))?
            .clone();
        let path = request.uri().path().to_owned();
        let response = transport
            .send(destination, request)
            .await
            .map_err(|reason| {
                tracing::warn!(peer = %destination, %path, %reason, "federation request failed");
                Error::Unavailable(format!("{destination} could not be reached"))
            })?;
        let status = response.status();
        if !status.is_success() {
            let body: serde_json::Value =
                serde_json::from_slice(response.body()).unwrap_or_default();
            let said = body["error"].as_str().unwrap_or("").to_owned();
            tracing::info!(peer = %destination, %path, %status, errcode = %body["errcode"], "federation request refused");
            return Err(match status.as_u16() {
                404 => Error::NotFound(format!("{destination}: {said}")),
                403 => Error::Forbidden(format!("{destination}: {said}")),
                429 => Error::Unavailable(format!("{destination} is limiting requests")),
                _ => Error::Unavailable(format!("{destination} answered {status}")),
            });
        }
        Ok(response)
    }

    /// Checks a request received over federation: an `X-Matrix`
    /// authorization for this server, from an allowed peer, signed with
    /// the origin's current key. Answers the origin.
    ///
    /// `401 M_UNAUTHORIZED` when the signature is missing, malformed, for
    /// another destination or wrong; `403 M_FORBIDDEN` when the origin is
    /// not a peer. Each refusal is logged with the peer and the reason.
    pub async fn authenticate_federation<T: AsRef<[u8]>>(
        &self,
        request: &http::Request<T>,
    ) -> Result<OwnedServerName> {
        let refuse = |origin: &str, reason: &str| {
            tracing::warn!(peer = %origin, path = request.uri().path(), %reason, "federation request refused");
        };
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .ok_or_else(|| {
                refuse("?", "no X-Matrix authorization");
                Error::Unauthorized("An X-Matrix authorization is required".into())
            })?;
        let x = XMatrix::try_from(header).map_err(|e| {
            refuse("?", &format!("malformed X-Matrix authorization: {e}"));
            Error::Unauthorized("Malformed X-Matrix authorization".into())
        })?;
        let origin = x.origin.clone();
        if let Err(e) = self.federation_peer(&origin) {
            refuse(origin.as_str(), "not an allowed peer");
            return Err(e);
        }
        let key = self
            .server_verify_key(&origin, x.key.as_str())
            .await
            .map_err(|e| {
                refuse(
                    origin.as_str(),
                    &format!("its key {} could not be had: {e}", x.key),
                );
                Error::Unauthorized(format!("The key {} of {origin} is not known", x.key))
            })?;
        let key = ruma::serde::Base64::parse(&key).map_err(Error::internal)?;
        let map = [(
            origin.to_string(),
            [(x.key.to_string(), key)].into_iter().collect(),
        )]
        .into_iter()
        .collect();
        x.verify_request(request, self.server_name(), &map)
            .map_err(|e| {
                refuse(origin.as_str(), &format!("bad signature: {e}"));
                Error::Unauthorized("The request's signature does not verify".into())
            })?;
        Ok(origin)
    }

    /// What `hotline admin federation` shows of each allowed peer: the
    /// events queued for it, and whether it answers now (its software and
    /// version, or why not).
    pub async fn federation_report(
        &self,
    ) -> Vec<(String, usize, std::result::Result<String, String>)> {
        use ruma::api::federation::discovery::get_server_version;
        let mut out = Vec::new();
        for peer in self.federation.allowed() {
            let queued = self
                .store
                .federation_outbox(&peer, 0, 100_000)
                .map(|q| q.len())
                .unwrap_or(0);
            let reached = match ServerName::parse(&peer) {
                Ok(server) => self
                    .federation_call_unsigned(&server, get_server_version::v1::Request::new())
                    .await
                    .map(|v| {
                        let s = v.server.unwrap_or_default();
                        format!(
                            "{} {}",
                            s.name.unwrap_or_else(|| "?".into()),
                            s.version.unwrap_or_default()
                        )
                    })
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("not a server name: {e}")),
            };
            out.push((peer, queued, reached));
        }
        out
    }
}
