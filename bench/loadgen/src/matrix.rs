//! The few Client-Server API calls the workloads need, on a shared HTTP pool.

use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

pub type Error = String;

#[derive(Clone)]
pub struct Api {
    pub http: Client,
    pub base: String,
}

#[derive(Clone, Debug)]
pub struct Session {
    pub user_id: String,
    pub token: String,
    pub device_id: String,
}

/// Bounded retries for setup calls: a server that rate-limits or hiccups
/// during setup must not abort the run, but nothing may loop forever.
const SETUP_ATTEMPTS: usize = 20;

impl Api {
    pub fn new(base: &str, pool_per_host: usize) -> Api {
        let http = Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(pool_per_host)
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        Api {
            http,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/_matrix/client{}", self.base, path)
    }

    /// One JSON request with retries on 429 and transport errors; any other
    /// non-2xx is returned as an error with the body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let mut last = String::new();
        for _ in 0..SETUP_ATTEMPTS {
            let mut rb = self
                .http
                .request(method.clone(), self.url(path))
                .timeout(Duration::from_secs(60));
            if let Some(t) = token {
                rb = rb.bearer_auth(t);
            }
            if let Some(b) = body {
                rb = rb.json(b);
            }
            match rb.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let v: Value = resp.json().await.unwrap_or(Value::Null);
                    if status.is_success() {
                        return Ok(v);
                    }
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        tokio::time::sleep(retry_after(&v)).await;
                        last = format!("{method} {path}: 429 {v}");
                        continue;
                    }
                    return Err(format!("{method} {path}: {status} {v}"));
                }
                Err(e) => {
                    last = format!("{method} {path}: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Err(format!("gave up after {SETUP_ATTEMPTS} attempts: {last}"))
    }

    /// Password login: each call creates a new device for the user.
    pub async fn login(&self, user_id: &str, password: &str) -> Result<Session, Error> {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user_id },
            "password": password,
            "initial_device_display_name": "hotline-loadgen",
        });
        let v = self
            .call(Method::POST, "/v3/login", None, Some(&body))
            .await?;
        let get = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .ok_or(format!("login: no {k} in {v}"))
        };
        Ok(Session {
            user_id: get("user_id")?,
            token: get("access_token")?,
            device_id: get("device_id")?,
        })
    }

    /// Registers through user-interactive auth: tries the given stage first
    /// and follows the server's flows (and session) when it answers 401, so
    /// both "dummy in one request" servers and strict UIA servers work.
    pub async fn register(
        &self,
        username: &str,
        password: &str,
        reg_token: Option<&str>,
    ) -> Result<Session, Error> {
        let first_stage = if reg_token.is_some() {
            "m.login.registration_token"
        } else {
            "m.login.dummy"
        };
        let mut stage = first_stage.to_string();
        let mut session: Option<String> = None;
        let mut last = String::new();
        for _ in 0..SETUP_ATTEMPTS {
            let mut auth = json!({ "type": stage });
            if stage == "m.login.registration_token" {
                auth["token"] = json!(reg_token.unwrap_or_default());
            }
            if let Some(s) = &session {
                auth["session"] = json!(s);
            }
            let body = json!({
                "username": username,
                "password": password,
                "auth": auth,
                "initial_device_display_name": "hotline-loadgen",
            });
            let resp = match self
                .http
                .post(self.url("/v3/register"))
                .timeout(Duration::from_secs(60))
                .json(&body)
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    last = e.to_string();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let status = resp.status();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            match status {
                s if s.is_success() => {
                    let get = |k: &str| {
                        v[k].as_str()
                            .map(str::to_string)
                            .ok_or(format!("register: no {k} in {v}"))
                    };
                    return Ok(Session {
                        user_id: get("user_id")?,
                        token: get("access_token")?,
                        device_id: get("device_id")?,
                    });
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    tokio::time::sleep(retry_after(&v)).await;
                    last = format!("429 {v}");
                }
                StatusCode::UNAUTHORIZED => {
                    let uia: Uia = serde_json::from_value(v.clone())
                        .map_err(|e| format!("register: bad 401 body {v}: {e}"))?;
                    session = uia.session.or(session);
                    let next = uia
                        .flows
                        .iter()
                        .filter(|f| {
                            reg_token.is_some()
                                || !f.stages.iter().any(|s| s == "m.login.registration_token")
                        })
                        .find_map(|f| {
                            f.stages
                                .iter()
                                .find(|s| !uia.completed.contains(s))
                                .cloned()
                        });
                    match next {
                        Some(n) if n == "m.login.dummy" || n == "m.login.registration_token" => {
                            stage = n
                        }
                        _ => {
                            return Err(format!("register {username}: no usable UIA stage in {v}"))
                        }
                    }
                    last = format!("401 {v}");
                }
                _ => return Err(format!("register {username}: {status} {v}")),
            }
        }
        Err(format!("register {username}: gave up: {last}"))
    }
}

#[derive(Deserialize)]
struct Uia {
    #[serde(default)]
    flows: Vec<Flow>,
    #[serde(default)]
    completed: Vec<String>,
    session: Option<String>,
}

#[derive(Deserialize)]
struct Flow {
    #[serde(default)]
    stages: Vec<String>,
}

pub fn retry_after(v: &Value) -> Duration {
    let ms = v["retry_after_ms"].as_u64().unwrap_or(100).clamp(10, 5000);
    Duration::from_millis(ms)
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for path
/// segments (room and user ids) and query values (inline filters).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs `f` over `items` with at most `limit` in flight, keeping order.
pub async fn bounded<T, R, F, Fut>(items: Vec<T>, limit: usize, f: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
    let mut handles = Vec::with_capacity(items.len());
    for it in items {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let fut = f(it);
        handles.push(tokio::spawn(async move {
            let r = fut.await;
            drop(permit);
            r
        }));
    }
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task panicked"));
    }
    out
}
