//! Serving a router over HTTP/1.1 with the limits a public server needs and
//! `axum::serve` lacks: a cap on connections, a deadline for a request's
//! headers, and a deadline for each read of its body.
//!
//! - **Connections:** at most `max_connections` (4096) are served at once.
//!   Past the cap the server stops accepting: new connections wait in the
//!   kernel's listen backlog until one closes (nginx does the same when its
//!   `worker_connections` are used up), so a burst is delayed, not refused.
//! - **Headers:** `header_read_timeout_seconds` (30 s, hyper's own default
//!   once it has a timer; nginx uses 60 s). It runs from a connection's
//!   first byte and, on a kept-alive connection, from the end of the last
//!   response, so it is also the idle keep-alive time. Past it hyper closes
//!   the connection without an answer (as nginx does), which is what frees
//!   the slots of slow-header ("slowloris") clients.
//! - **Bodies:** `body_read_timeout_seconds` (60 s, nginx's
//!   `client_body_timeout`). Like nginx's, it bounds each wait between two
//!   reads, not the whole body, so a large upload on a slow but steady link
//!   completes, and only while a handler is reading the body, so a `/sync`
//!   long-poll (no body) is never cut. A stalled body is answered `408
//!   M_UNKNOWN` with `Connection: close`, as nginx answers `408`: the
//!   client learns why, and the unread rest of the body never delays the
//!   next request (Synapse's Twisted server instead drops a connection idle
//!   for 60 s without an answer).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The connection limits of one listener.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets the
/// requests in flight finish. Each request carries its peer's
/// `ConnectInfo<SocketAddr>`, as `into_make_service_with_connect_info` gives.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    serve_maybe_tls(listener, app, limits, None, shutdown).await
}

/// [`serve`] over TLS (the federation listener). The handshake must finish
/// within the header deadline; a client that never completes it is
/// dropped like one that never sends headers.
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    serve_maybe_tls(listener, app, limits, Some(acceptor), shutdown).await
}

async fn serve_maybe_tls(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A permit first: past the cap, connections are left in the
        // backlog rather than accepted and then starved.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers leave at once: a response written in two parts (a large
        // body) must not wait for the client's delayed ACK of the first.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let app = app.clone();
        let body_timeout = limits.body_read_timeout;
        let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let req = req.map(|body| TimedBody::new(body, body_timeout));
            app.clone().call(req)
        });
        match &tls {
            None => {
                let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
                tokio::spawn(async move {
                    // Timeouts and resets end connections all the time: not news.
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, %peer, "connection ended");
                    }
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp));
                let http = http.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let conn =
                                watcher.watch(http.serve_connection(TokioIo::new(stream), service));
                            if let Err(e) = conn.await {
                                tracing::debug!(error = %e, %peer, "connection ended");
                            }
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The error a stalled body ends with.
#[derive(Debug)]
struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timed out reading the request body")
    }
}

impl std::error::Error for BodyTimeout {}

/// Whether a body read failed because the client stopped sending.
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.is::<BodyTimeout>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// A request body whose every wait for the next frame is bounded.
struct TimedBody<B> {
    inner: B,
    timeout: Duration,
    /// Made on the first wait, then reset: one allocation per body that
    /// ever waits, none for bodies that arrive with their headers.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
}

impl<B> TimedBody<B> {
    fn new(inner: B, timeout: Duration) -> Self {
        TimedBody {
            inner,
            timeout,
            sleep: None,
            waiting: false,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.waiting {
                    this.waiting = true;
                    sleep.as_mut().reset(deadline);
                }
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body that sends one chunk, then nothing.
    struct Stalls(bool);

    impl Body for Stalls {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.0 {
                Poll::Pending
            } else {
                self.0 = true;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{")))))
            }
        }
    }

    #[tokio::test]
    async fn a_stalled_body_ends_in_a_timeout_error_and_a_finished_one_does_not() {
        let body = axum::body::Body::new(TimedBody::new(Stalls(false), Duration::from_millis(50)));
        let err = body.collect().await.unwrap_err();
        assert!(is_body_timeout(&err), "{err}");
        let body = axum::body::Body::new(TimedBody::new(
            http_body_util::Full::new(Bytes::from_static(b"{}")),
            Duration::from_secs(5),
        ));
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"{}");
    }
}
