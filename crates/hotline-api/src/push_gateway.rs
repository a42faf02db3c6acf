//! The way out to push gateways ([`hotline_service::pushers::PushGateway`]):
//! one HTTP/1.1 `POST` of a notification to the pusher's `data.url`, over
//! TCP, or TLS checked against the system's roots (plus the federation
//! `ca_file`) for `https`. A connection per notification: a user's
//! notifications are few, and a gateway far away is better asked afresh.
//! This server's own gateway ([`crate::web_push`]) sends its Web Push
//! requests to browsers' push services the same way.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hotline_service::pushers::{GatewayFuture, PushGateway};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName as TlsName;

/// How long a gateway has to answer, connection included.
const TIMEOUT: Duration = Duration::from_secs(15);
/// How long a push service has: less than a gateway, so this server's own
/// gateway answers the pusher posting to it within the pusher's wait.
const WEB_PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a gateway's answer read (it is a short JSON object).
const MAX_ANSWER: usize = 64 * 1024;

pub struct PushGatewayClient {
    tls: tokio_rustls::TlsConnector,
}

impl PushGatewayClient {
    pub fn new(ca_file: Option<&std::path::Path>) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(crate::federation::client::roots(ca_file)?)
            .with_no_client_auth();
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

impl PushGateway for PushGatewayClient {
    fn notify(&self, url: &str, body: Vec<u8>) -> GatewayFuture {
        let tls = self.tls.clone();
        let request = url
            .parse::<http::Uri>()
            .map_err(|_| "not a URL".to_owned())
            .and_then(|uri| {
                http::Request::post(uri)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .map_err(|e| e.to_string())
            });
        Box::pin(async move { within(TIMEOUT, post(tls, request?)).await })
    }

    fn web_push(&self, request: http::Request<Vec<u8>>) -> GatewayFuture {
        let tls = self.tls.clone();
        Box::pin(within(WEB_PUSH_TIMEOUT, post(tls, request)))
    }
}

async fn within(
    limit: Duration,
    answer: impl std::future::Future<Output = Result<(u16, Vec<u8>), String>>,
) -> Result<(u16, Vec<u8>), String> {
    match tokio::time::timeout(limit, answer).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
    }
}

/// Sends `request` (its URI absolute: where to connect) with its headers,
/// `Host` added.
async fn post(
    tls: tokio_rustls::TlsConnector,
    request: http::Request<Vec<u8>>,
) -> Result<(u16, Vec<u8>), String> {
    let (mut parts, body) = request.into_parts();
    let uri = parts.uri.clone();
    let https = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .ok_or("no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| host.clone());
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    parts.uri = path.parse().map_err(|_| "not a URL path".to_owned())?;
    parts.headers.insert(
        http::header::HOST,
        http::HeaderValue::from_str(&authority).map_err(|e| e.to_string())?,
    );
    let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
    let answer = if https {
        let name = TlsName::try_from(host).map_err(|e| e.to_string())?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        send(TokioIo::new(stream), request).await?
    } else {
        send(TokioIo::new(tcp), request).await?
    };
    Ok(answer)
}

async fn send<T>(io: T, request: http::Request<Full<Bytes>>) -> Result<(u16, Vec<u8>), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = answer.status().as_u16();
    let body = Limited::new(answer.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, body.to_vec()))
}
