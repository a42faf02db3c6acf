//! Server configuration: TOML file, environment overrides, command-line flags.

use serde::Deserialize;
use std::path::PathBuf;

/// Everything a running server is told. Defaults make `hotline serve` run
/// with no file and no flags.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The name in user ids (`@alice:NAME`).
    pub server_name: String,
    /// `ADDR:PORT` to listen on.
    pub listen: String,
    /// Where the database, media and keys live.
    pub data_dir: PathBuf,
    /// Open registration (`m.login.dummy`). Off by default: accounts come
    /// from registration tokens or `hotline admin create-user`.
    pub allow_registration: bool,
    /// Largest request body accepted, in bytes (media uploads excepted).
    pub max_request_bytes: usize,
    /// Largest media upload, in bytes.
    pub max_upload_bytes: usize,
    /// `full` (fsync each commit) or `normal` (fsync at checkpoints; a
    /// killed process loses nothing, a power cut may lose the last commits).
    pub durability: String,
    /// Directory of the built web app served at `/`.
    pub web_dir: Option<PathBuf>,
    /// Public base URL advertised in `.well-known` (default: from the request).
    pub public_base_url: Option<String>,
    pub rate_limits: RateLimits,
    /// A user shows as offline this long after the last of their clients
    /// stopped syncing.
    pub offline_after_seconds: u64,
    /// TURN for calls. Unset: `hotline turn-config` stores the secret and
    /// URIs in the database, and those are used.
    pub turn: Option<Turn>,
}

/// A TURN server using coturn's REST API shared secret
/// (`use-auth-secret`): credentials are minted per user and expire.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    pub uris: Vec<String>,
    pub shared_secret: String,
    /// Credential lifetime in seconds.
    #[serde(default = "default_turn_ttl")]
    pub ttl_seconds: u64,
}

fn default_turn_ttl() -> u64 {
    86_400
}

/// Token buckets: a sustained rate per second and a burst.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Requests per second per user (authenticated requests).
    pub per_user_per_second: f64,
    pub per_user_burst: f64,
    /// Requests per second per client IP (unauthenticated requests: login, register).
    pub per_ip_per_second: f64,
    pub per_ip_burst: f64,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_user_per_second: 200.0,
            per_user_burst: 1000.0,
            per_ip_per_second: 20.0,
            per_ip_burst: 100.0,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".into(),
            listen: "127.0.0.1:8008".into(),
            data_dir: PathBuf::from("hotline-data"),
            allow_registration: false,
            max_request_bytes: 1024 * 1024,
            max_upload_bytes: 50 * 1024 * 1024,
            durability: "full".into(),
            web_dir: None,
            public_base_url: None,
            rate_limits: RateLimits::default(),
            offline_after_seconds: 30,
            turn: None,
        }
    }
}
