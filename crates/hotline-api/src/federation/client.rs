//! The HTTP client to other servers: resolution ([`super::resolve`]), TLS
//! checked against the system's roots plus `[federation] ca_file`, and
//! HTTP/1.1 connections kept per destination for the next request.
//!
//! Requests arrive signed (the service signs them); this only carries
//! them. A connection that fails is dropped with its resolution, so the
//! next request resolves again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hotline_service::federation::{Transport, TransportFuture, TransportResponse};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use ruma::ServerName;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName as TlsName};

use super::resolve::{self, Host, Target};

/// How long a resolution is kept.
const RESOLVED_FOR: Duration = Duration::from_secs(3600);
/// Connecting (TCP and TLS) gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole request and its answer give up after this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Idle connections kept per destination.
const IDLE_PER_DESTINATION: usize = 8;

/// The client (cheap to clone).
#[derive(Clone)]
pub struct FederationClient {
    inner: Arc<Inner>,
}

struct Inner {
    tls: tokio_rustls::TlsConnector,
    dns: tokio::sync::OnceCell<Option<hickory_resolver::TokioResolver>>,
    resolved: Mutex<HashMap<String, (Target, Instant)>>,
    idle: Mutex<HashMap<String, Vec<SendRequest<Full<Bytes>>>>>,
}

/// The roots other servers' certificates are checked against: the
/// system's, and those in `ca_file`.
pub fn roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|c| c.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("federation ca_file {}: {e}", path.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "federation ca_file {}: no certificate in it",
                path.display()
            ));
        }
    }
    Ok(roots)
}

impl FederationClient {
    pub fn new(ca_file: Option<&Path>) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots(ca_file)?)
            .with_no_client_auth();
        Ok(Self {
            inner: Arc::new(Inner {
                tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
                dns: tokio::sync::OnceCell::new(),
                resolved: Mutex::new(HashMap::new()),
                idle: Mutex::new(HashMap::new()),
            }),
        })
    }
}

impl Transport for FederationClient {
    fn send(&self, destination: &ServerName, request: http::Request<Vec<u8>>) -> TransportFuture {
        let inner = self.inner.clone();
        let destination = destination.as_str().to_owned();
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, inner.send(&destination, request)).await {
                Ok(answer) => answer,
                Err(_) => Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())),
            }
        })
    }
}

impl Inner {
    async fn send(
        self: &Arc<Self>,
        destination: &str,
        request: http::Request<Vec<u8>>,
    ) -> Result<TransportResponse, String> {
        let target = self.target(destination).await?;
        let (parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let build = || {
            let mut r = http::Request::builder()
                .method(parts.method.clone())
                .uri(path.as_str());
            for (k, v) in &parts.headers {
                r = r.header(k, v);
            }
            r.header(http::header::HOST, target.host_header.as_str())
                .body(Full::new(Bytes::from(body.clone())))
                .map_err(|e| e.to_string())
        };
        // A kept connection the peer closed meanwhile fails before the
        // request is sent: then once more on a new one.
        let mut sender = match self.take_idle(destination) {
            Some(s) => s,
            None => self.connect_or_forget(destination, &target).await?,
        };
        let answer = match sender.send_request(build()?).await {
            Ok(a) => a,
            Err(e) if e.is_canceled() || e.is_closed() => {
                sender = self.connect_or_forget(destination, &target).await?;
                sender
                    .send_request(build()?)
                    .await
                    .map_err(|e| e.to_string())?
            }
            Err(e) => return Err(e.to_string()),
        };
        let (parts, body) = answer.into_parts();
        let body = Limited::new(body, MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        if !sender.is_closed() {
            let mut idle = self.idle.lock();
            let list = idle.entry(destination.to_owned()).or_default();
            if list.len() < IDLE_PER_DESTINATION {
                list.push(sender);
            }
        }
        Ok(http::Response::from_parts(parts, body.to_vec()))
    }

    fn take_idle(&self, destination: &str) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock();
        let list = idle.get_mut(destination)?;
        while let Some(s) = list.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    /// Connects; a failure forgets the resolution, so the next try
    /// resolves again.
    async fn connect_or_forget(
        &self,
        destination: &str,
        target: &Target,
    ) -> Result<SendRequest<Full<Bytes>>, String> {
        match self.connect(target).await {
            Ok(s) => Ok(s),
            Err(e) => {
                self.resolved.lock().remove(destination);
                Err(e)
            }
        }
    }

    async fn target(self: &Arc<Self>, destination: &str) -> Result<Target, String> {
        if let Some((t, at)) = self.resolved.lock().get(destination) {
            if at.elapsed() < RESOLVED_FOR {
                return Ok(t.clone());
            }
        }
        let target = resolve::resolve(destination, &Network(self.clone())).await?;
        self.resolved
            .lock()
            .insert(destination.to_owned(), (target.clone(), Instant::now()));
        Ok(target)
    }

    async fn dns(&self) -> Option<&hickory_resolver::TokioResolver> {
        self.dns
            .get_or_init(|| async {
                match hickory_resolver::TokioResolver::builder_tokio().and_then(|b| b.build()) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(error = %e, "no DNS resolver: only IP-literal server names can be reached");
                        None
                    }
                }
            })
            .await
            .as_ref()
    }

    async fn addresses(&self, host: &Host, port: u16) -> Result<Vec<SocketAddr>, String> {
        match host {
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
            Host::Name(name) => {
                let dns = self.dns().await.ok_or("no DNS resolver")?;
                let found = dns
                    .lookup_ip(name.as_str())
                    .await
                    .map_err(|e| format!("looking up {name}: {e}"))?;
                Ok(found.iter().map(|ip| SocketAddr::new(ip, port)).collect())
            }
        }
    }

    async fn connect(&self, target: &Target) -> Result<SendRequest<Full<Bytes>>, String> {
        let addresses = self.addresses(&target.host, target.port).await?;
        let tls_name = TlsName::try_from(target.tls_name.clone())
            .map_err(|e| format!("{}: {e}", target.tls_name))?;
        let mut last = format!("no address for {:?}", target.host);
        for address in addresses {
            let attempt = async {
                let tcp = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(|e| format!("connecting to {address}: {e}"))?;
                let _ = tcp.set_nodelay(true);
                self.tls
                    .connect(tls_name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS with {address} as {}: {e}", target.tls_name))
            };
            let tls = match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    last = e;
                    continue;
                }
                Err(_) => {
                    last = format!("connecting to {address} timed out");
                    continue;
                }
            };
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "federation connection ended");
                }
            });
            return Ok(sender);
        }
        Err(last)
    }
}

/// The network's answers to resolution: `.well-known` over HTTPS, SRV
/// over DNS.
struct Network(Arc<Inner>);

impl resolve::Lookups for Network {
    async fn well_known(&self, host: &str) -> Option<String> {
        let target = Target {
            host: Host::Name(host.to_owned()),
            port: 443,
            tls_name: host.to_owned(),
            host_header: host.to_owned(),
        };
        let fetch = async {
            let mut sender = self.0.connect(&target).await.ok()?;
            let request = http::Request::get("/.well-known/matrix/server")
                .header(http::header::HOST, host)
                .body(Full::new(Bytes::new()))
                .ok()?;
            let answer = sender.send_request(request).await.ok()?;
            if !answer.status().is_success() {
                return None;
            }
            let body = Limited::new(answer.into_body(), 64 * 1024)
                .collect()
                .await
                .ok()?
                .to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
            v["m.server"].as_str().map(str::to_owned)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, fetch)
            .await
            .ok()
            .flatten()
    }

    async fn srv(&self, name: &str) -> Option<(String, u16)> {
        let dns = self.0.dns().await?;
        let found = dns.srv_lookup(name).await.ok()?;
        found
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                hickory_resolver::proto::rr::RData::SRV(srv) => Some(srv.clone()),
                _ => None,
            })
            // Lowest priority first; among equals, the heaviest.
            .min_by_key(|s| (s.priority, std::cmp::Reverse(s.weight)))
            .map(|s| (s.target.to_utf8().trim_end_matches('.').to_owned(), s.port))
    }
}
