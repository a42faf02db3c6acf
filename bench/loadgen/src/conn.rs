//! One keep-alive HTTP/1.1 connection owned by one simulated client task, as
//! a real client holds its own connection. The measured hot paths (sends and
//! `/sync` long-polls) use this instead of a pooled client.
//!
//! Why a hand-written client: the generator shares the machine's two cores
//! with the server it measures, so every microsecond it spends per message
//! is taken from the server. A request here is one `write` of a buffer
//! built in place and reads into a buffer kept for the connection, in the
//! calling task; hyper's client adds a connection task, a channel between
//! the two, a header map and a URI parse per request (about a quarter of
//! the generator's CPU at full load, measured in BENCHMARKS.md).
//!
//! What it speaks: requests with an optional JSON body; responses with a
//! `Content-Length`, a chunked body, or (with `Connection: close`) a body to
//! the end of the stream. Anything it cannot read closes the connection and
//! fails the request; the next request connects afresh.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Response heads larger than this are refused (ours are a few hundred bytes).
const MAX_HEAD: usize = 64 * 1024;

pub struct Conn {
    addr: String,
    /// The header lines every request carries (`Host`, `Authorization`).
    fixed_headers: String,
    stream: Option<TcpStream>,
    /// Bytes read and not yet consumed.
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
}

pub enum Failure {
    Timeout,
    Transport(String),
}

fn transport(e: impl std::fmt::Display) -> Failure {
    Failure::Transport(e.to_string())
}

/// How a response's body ends.
enum BodyEnd {
    Length(usize),
    Chunked,
    Close,
}

impl Conn {
    /// `base` is `http://HOST:PORT` (loopback, plain HTTP).
    pub fn new(base: &str, token: &str) -> Conn {
        let hostport = base
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Conn {
            fixed_headers: format!("Host: {hostport}\r\nAuthorization: Bearer {token}\r\n"),
            addr: hostport,
            stream: None,
            rbuf: Vec::with_capacity(16 * 1024),
            wbuf: Vec::with_capacity(1024),
        }
    }

    /// A connection that sends no `Authorization` header.
    pub fn anonymous(base: &str) -> Conn {
        let mut c = Conn::new(base, "");
        c.fixed_headers = format!("Host: {}\r\n", c.addr);
        c
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
        let res = match tokio::time::timeout(timeout, self.exchange(&method, path, body)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout),
        };
        if res.is_err() {
            self.disconnect();
        }
        res
    }

    fn disconnect(&mut self) {
        self.stream = None;
        self.rbuf.clear();
    }

    async fn exchange(
        &mut self,
        method: &Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), Failure> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.addr).await.map_err(transport)?;
            stream.set_nodelay(true).map_err(transport)?;
            self.stream = Some(stream);
            self.rbuf.clear();
        }
        self.wbuf.clear();
        let w = &mut self.wbuf;
        w.extend_from_slice(method.as_str().as_bytes());
        w.push(b' ');
        w.extend_from_slice(path.as_bytes());
        w.extend_from_slice(b" HTTP/1.1\r\n");
        w.extend_from_slice(self.fixed_headers.as_bytes());
        match &body {
            Some(b) => {
                w.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
                w.extend_from_slice(b.len().to_string().as_bytes());
                w.extend_from_slice(b"\r\n\r\n");
                w.extend_from_slice(b);
            }
            None => w.extend_from_slice(b"\r\n"),
        }
        let stream = self.stream.as_mut().expect("connected");
        stream.write_all(&self.wbuf).await.map_err(transport)?;
        let (status, head_len, end, close) = loop {
            if let Some(head) = parse_head(&self.rbuf)? {
                break head;
            }
            if self.rbuf.len() > MAX_HEAD {
                return Err(transport("response head too large"));
            }
            read_more(stream, &mut self.rbuf).await?;
        };
        self.rbuf.drain(..head_len);
        let close = close || matches!(end, BodyEnd::Close);
        let body = match end {
            BodyEnd::Length(n) => {
                while self.rbuf.len() < n {
                    read_more(stream, &mut self.rbuf).await?;
                }
                let body = Bytes::copy_from_slice(&self.rbuf[..n]);
                self.rbuf.drain(..n);
                body
            }
            BodyEnd::Chunked => read_chunked(stream, &mut self.rbuf).await?,
            BodyEnd::Close => {
                loop {
                    match stream.read_buf(&mut self.rbuf).await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => return Err(transport(e)),
                    }
                }
                Bytes::from(std::mem::take(&mut self.rbuf))
            }
        };
        if close {
            self.disconnect();
        }
        Ok((status, body))
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Failure> {
    buf.reserve(8 * 1024);
    match stream.read_buf(buf).await {
        Ok(0) => Err(transport("connection closed by the server")),
        Ok(_) => Ok(()),
        Err(e) => Err(transport(e)),
    }
}

/// The response head at the start of `buf`, once it is complete: status,
/// head length, how the body ends, and whether the server closes after it.
fn parse_head(buf: &[u8]) -> Result<Option<(StatusCode, usize, BodyEnd, bool)>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf).map_err(transport)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let code = resp.code.ok_or_else(|| transport("no status code"))?;
    let status = StatusCode::from_u16(code).map_err(transport)?;
    let mut end = None;
    let mut close = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| transport("bad content-length"))?;
            end = Some(BodyEnd::Length(n));
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            && h.value.eq_ignore_ascii_case(b"chunked")
        {
            end = Some(BodyEnd::Chunked);
        } else if h.name.eq_ignore_ascii_case("connection")
            && h.value.eq_ignore_ascii_case(b"close")
        {
            close = true;
        }
    }
    let end = match end {
        Some(e) => e,
        None if code == 204 || code == 304 || (100..200).contains(&code) => BodyEnd::Length(0),
        None => BodyEnd::Close,
    };
    Ok(Some((status, head_len, end, close)))
}

/// A chunked body at the start of `buf`, reading more as needed.
async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Bytes, Failure> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            read_more(stream, buf).await?;
        };
        let size_text = std::str::from_utf8(&buf[..line_end]).map_err(transport)?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(transport)?;
        // The chunk, then its CRLF (for the last, empty chunk: the CRLF
        // ending the absent trailers).
        let need = line_end + 2 + size + 2;
        while buf.len() < need {
            read_more(stream, buf).await?;
        }
        body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
        buf.drain(..need);
        if size == 0 {
            return Ok(Bytes::from(body));
        }
    }
}
