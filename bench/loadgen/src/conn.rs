//! One keep-alive HTTP/1.1 connection owned by one simulated client task, as
//! a real client holds its own connection. The measured hot paths (sends and
//! `/sync` long-polls) use this instead of a pooled client: no pool checkout,
//! no URL parsing per request, so the generator spends its CPU on syscalls
//! and JSON and its ceiling stays well above the server's.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub struct Conn {
    addr: String,
    host: HeaderValue,
    auth: HeaderValue,
    tx: Option<SendRequest<Full<Bytes>>>,
}

pub enum Failure {
    Timeout,
    Transport(String),
}

impl Conn {
    /// `base` is `http://HOST:PORT` (loopback, plain HTTP).
    pub fn new(base: &str, token: &str) -> Conn {
        let hostport = base
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Conn {
            host: HeaderValue::from_str(&hostport).expect("host header"),
            addr: hostport,
            auth: HeaderValue::from_str(&format!("Bearer {token}")).expect("auth header"),
            tx: None,
        }
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, Failure> {
        if self.tx.as_ref().is_none_or(|t| t.is_closed()) {
            let stream = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| Failure::Transport(e.to_string()))?;
            stream
                .set_nodelay(true)
                .map_err(|e| Failure::Transport(e.to_string()))?;
            let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| Failure::Transport(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.tx = Some(tx);
        }
        Ok(self.tx.as_mut().expect("connected"))
    }

    /// One request; on any failure the connection is dropped so the next
    /// request starts on a fresh one.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), Failure> {
        let fut = async {
            let mut b = Request::builder()
                .method(method)
                .uri(path)
                .header(HOST, self.host.clone())
                .header(AUTHORIZATION, self.auth.clone());
            if body.is_some() {
                b = b.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            let req = b
                .body(Full::new(body.unwrap_or_default()))
                .map_err(|e| Failure::Transport(e.to_string()))?;
            let tx = self.connect().await?;
            tx.ready()
                .await
                .map_err(|e| Failure::Transport(e.to_string()))?;
            let resp = tx
                .send_request(req)
                .await
                .map_err(|e| Failure::Transport(e.to_string()))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| Failure::Transport(e.to_string()))?
                .to_bytes();
            Ok((status, bytes))
        };
        let res = match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout),
        };
        if res.is_err() {
            self.tx = None;
        }
        res
    }
}
