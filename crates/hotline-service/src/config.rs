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
    /// Where media and keys live, and the SQLite database by default.
    pub data_dir: PathBuf,
    /// The database: unset (or `sqlite`) for SQLite in `data_dir`,
    /// `sqlite:PATH` for another file, or `postgres://USER@HOST:PORT/DB`
    /// for PostgreSQL (several `hotline serve` processes may share one).
    pub database: Option<String>,
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
    /// Connections served at once; past it, new connections wait in the
    /// listen backlog until one closes.
    pub max_connections: usize,
    /// A client has this long to send a request's headers, counted from
    /// the connection's first byte or, on a kept-alive connection, from the
    /// end of the previous response (so it is also the idle keep-alive
    /// time); past it the connection is closed.
    pub header_read_timeout_seconds: u64,
    /// A request body that sends nothing for this long is answered `408`
    /// and its connection closed. It runs only while a body is being read,
    /// so `/sync` long-polls (no body) are never cut by it.
    pub body_read_timeout_seconds: u64,
    /// `ADDR:PORT` of a listener serving only `/metrics` (keep it private).
    pub metrics_listen: Option<String>,
    /// Serves `/metrics` on the main listener to requests bearing this
    /// token (`Authorization: Bearer ...`). Without it (and by default)
    /// the main listener does not serve `/metrics`.
    pub metrics_token: Option<String>,
    /// Talking to other Matrix servers (the Server-Server API).
    pub federation: Federation,
    /// Whether this server's principals may make a line personal (both
    /// principals together; an official line is recorded, a personal one
    /// is not). `false`: the protocol office keeps every line official.
    pub personal_lines: bool,
    /// The records office's archiver on official lines.
    pub records: Records,
    /// Rules of lines: the urgent contacts' quota.
    pub lines: Lines,
    /// Who may trace a leaked screenshot (`hotline trace`).
    pub trace: Trace,
}

/// The `[lines]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Lines {
    /// Urgent contacts (calls and texts that ring through do not disturb
    /// and sleep) each side of a line may make in any 24 hours.
    pub urgent_per_day: u32,
}

impl Default for Lines {
    fn default() -> Self {
        Self { urgent_per_day: 3 }
    }
}

/// The `[trace]` table: leak tracing of screenshots.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Trace {
    /// The names allowed to run `hotline trace IMAGE --by NAME`. Empty (the
    /// default): anyone with the data directory may trace, `--by` is
    /// optional. Set: `--by` must name one of them; a refused attempt is
    /// written to the trace log too.
    pub operators: Vec<String>,
}

/// The `[records]` table: this government's records office.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Records {
    /// The archiver's account (a user id of this server): brought onto every
    /// official line of this server's principals. Unset: lines are not
    /// recorded.
    pub archiver: Option<String>,
    /// The office's name, shown on the line ("Records office of Avalon").
    pub office: Option<String>,
}

/// The `[federation]` table. Off by default; when on, only the servers in
/// `allow` are talked to or listened to.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Federation {
    pub enabled: bool,
    /// `ADDR:PORT` of the federation listener (TLS).
    pub listen: String,
    /// PEM certificate chain the federation listener presents.
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key of that certificate (PKCS#8, SEC1 or PKCS#1; ECDSA
    /// P-256, Ed25519 or RSA).
    pub tls_private_key: Option<PathBuf>,
    /// Extra roots (PEM) trusted for other servers' certificates, beside
    /// the system's.
    pub ca_file: Option<PathBuf>,
    /// The servers federated with (`name` or `name:port`, as in their user
    /// ids). Nobody by default.
    pub allow: Vec<String>,
    /// `HOST:PORT` other servers reach this one at, served as
    /// `/.well-known/matrix/server` on the client listener (delegation).
    /// Unset: no delegation (`404`).
    pub public_address: Option<String>,
    /// Peers' attestation keys pinned by the operator, each
    /// `"SERVER KEY_ID KEY"` (`gov-b.example ed25519:a_1 BASE64`). A peer
    /// named here is trusted with these keys only; any other peer's key is
    /// pinned when first seen (trust on first use).
    pub pinned_keys: Vec<String>,
}

impl Default for Federation {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "0.0.0.0:8448".into(),
            tls_certificate: None,
            tls_private_key: None,
            ca_file: None,
            allow: Vec::new(),
            public_address: None,
            pinned_keys: Vec::new(),
        }
    }
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
    /// Requests per second per client IP: unauthenticated requests (login,
    /// register, the public room directory) and failed token checks.
    pub per_ip_per_second: f64,
    pub per_ip_burst: f64,
    /// Failed logins an account takes before its backoff starts.
    pub login_failures_allowed: u32,
    /// The first backoff; it doubles with each further failure (0: off).
    pub login_backoff_seconds: f64,
    /// The longest backoff.
    pub login_backoff_max_seconds: f64,
    /// Line invite previews, a probe of guessable codes: per user and per
    /// client address, a sustained rate per minute and a burst (0: off).
    pub code_probes_per_user_per_minute: f64,
    pub code_probes_per_user_burst: f64,
    pub code_probes_per_ip_per_minute: f64,
    pub code_probes_per_ip_burst: f64,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_user_per_second: 200.0,
            per_user_burst: 1000.0,
            per_ip_per_second: 20.0,
            per_ip_burst: 100.0,
            login_failures_allowed: 5,
            login_backoff_seconds: 10.0,
            login_backoff_max_seconds: 900.0,
            code_probes_per_user_per_minute: 10.0,
            code_probes_per_user_burst: 20.0,
            code_probes_per_ip_per_minute: 30.0,
            code_probes_per_ip_burst: 60.0,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".into(),
            listen: "127.0.0.1:8008".into(),
            data_dir: PathBuf::from("hotline-data"),
            database: None,
            allow_registration: false,
            max_request_bytes: 1024 * 1024,
            max_upload_bytes: 50 * 1024 * 1024,
            durability: "full".into(),
            web_dir: None,
            public_base_url: None,
            rate_limits: RateLimits::default(),
            offline_after_seconds: 30,
            turn: None,
            max_connections: 4096,
            header_read_timeout_seconds: 30,
            body_read_timeout_seconds: 60,
            metrics_listen: None,
            metrics_token: None,
            federation: Federation::default(),
            personal_lines: true,
            records: Records::default(),
            lines: Lines::default(),
            trace: Trace::default(),
        }
    }
}

/// How an environment variable's text becomes a TOML value.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Bool,
    Integer,
    Float,
    /// Comma-separated.
    List,
}

/// Every setting an environment variable can set: `HOTLINE_` and the key's
/// path in capitals, `__` between a table and its key
/// (`HOTLINE_RATE_LIMITS__PER_IP_BURST`).
const ENV_SETTINGS: &[(&str, Kind)] = &[
    ("server_name", Kind::Text),
    ("listen", Kind::Text),
    ("data_dir", Kind::Text),
    ("database", Kind::Text),
    ("allow_registration", Kind::Bool),
    ("max_request_bytes", Kind::Integer),
    ("max_upload_bytes", Kind::Integer),
    ("durability", Kind::Text),
    ("web_dir", Kind::Text),
    ("public_base_url", Kind::Text),
    ("offline_after_seconds", Kind::Integer),
    ("rate_limits.per_user_per_second", Kind::Float),
    ("rate_limits.per_user_burst", Kind::Float),
    ("rate_limits.per_ip_per_second", Kind::Float),
    ("rate_limits.per_ip_burst", Kind::Float),
    ("rate_limits.login_failures_allowed", Kind::Integer),
    ("rate_limits.login_backoff_seconds", Kind::Float),
    ("rate_limits.login_backoff_max_seconds", Kind::Float),
    ("max_connections", Kind::Integer),
    ("header_read_timeout_seconds", Kind::Integer),
    ("body_read_timeout_seconds", Kind::Integer),
    ("metrics_listen", Kind::Text),
    ("metrics_token", Kind::Text),
    ("turn.uris", Kind::List),
    ("turn.shared_secret", Kind::Text),
    ("turn.ttl_seconds", Kind::Integer),
    ("federation.enabled", Kind::Bool),
    ("federation.listen", Kind::Text),
    ("federation.tls_certificate", Kind::Text),
    ("federation.tls_private_key", Kind::Text),
    ("federation.ca_file", Kind::Text),
    ("federation.allow", Kind::List),
    ("federation.pinned_keys", Kind::List),
    ("federation.public_address", Kind::Text),
    ("personal_lines", Kind::Bool),
    ("records.archiver", Kind::Text),
    ("records.office", Kind::Text),
    ("lines.urgent_per_day", Kind::Integer),
    ("trace.operators", Kind::List),
];

/// Which engine holds the data, from [`Config::database`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Config {
    /// The database the configuration names (see [`Config::database`]).
    pub fn database(&self) -> std::result::Result<Database, String> {
        match self.database.as_deref().map(str::trim) {
            None | Some("") | Some("sqlite") => Ok(Database::Sqlite(self.data_dir.join("hotline.db"))),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Database::Postgres(url.to_owned()))
            }
            Some(other) => match other.strip_prefix("sqlite:") {
                Some(path) if !path.is_empty() => Ok(Database::Sqlite(PathBuf::from(path))),
                _ => Err(format!(
                    "database must be sqlite, sqlite:PATH or postgres://USER@HOST:PORT/DB, not {other:?}"
                )),
            },
        }
    }

    /// The environment variable that sets `key` (a dotted TOML path).
    pub fn env_name(key: &str) -> String {
        format!("HOTLINE_{}", key.replace('.', "__").to_uppercase())
    }

    /// Reads a configuration: the TOML text (if any), then each setting
    /// named in `env` on top of it. Errors name the file's problem or the
    /// variable at fault, for the operator.
    pub fn load(
        toml_text: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<Config, String> {
        let mut table: toml::Table = match toml_text {
            Some(text) => toml::from_str(text).map_err(|e| e.to_string())?,
            None => toml::Table::new(),
        };
        for (key, kind) in ENV_SETTINGS {
            let name = Self::env_name(key);
            let Some(raw) = env(&name) else { continue };
            let bad = |what: &str| format!("{name}={raw:?} is not {what}");
            let value = match kind {
                Kind::Text => toml::Value::String(raw.clone()),
                Kind::Bool => match raw.to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => toml::Value::Boolean(true),
                    "0" | "false" | "no" | "off" | "" => toml::Value::Boolean(false),
                    _ => return Err(bad("true or false")),
                },
                Kind::Integer => {
                    toml::Value::Integer(raw.trim().parse().map_err(|_| bad("a whole number"))?)
                }
                Kind::Float => toml::Value::Float(raw.trim().parse().map_err(|_| bad("a number"))?),
                Kind::List => toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_owned()))
                        .collect(),
                ),
            };
            let mut at = &mut table;
            let mut parts = key.split('.').peekable();
            while let Some(part) = parts.next() {
                if parts.peek().is_none() {
                    at.insert(part.to_owned(), value);
                    break;
                }
                let next = at
                    .entry(part.to_owned())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                at = next
                    .as_table_mut()
                    .ok_or_else(|| format!("{part} must be a table to take {name}"))?;
            }
        }
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn environment_variables_override_the_file_and_reach_nested_tables() {
        let file = "max_upload_bytes = 10\n[rate_limits]\nper_ip_burst = 5.0\n";
        let c = Config::load(
            Some(file),
            env(&[
                ("HOTLINE_MAX_UPLOAD_BYTES", "2048"),
                ("HOTLINE_RATE_LIMITS__PER_USER_BURST", "7.5"),
                ("HOTLINE_DURABILITY", "normal"),
                ("HOTLINE_TURN__URIS", "turn:a:3478, turns:b:5349"),
                ("HOTLINE_TURN__SHARED_SECRET", "s3"),
            ]),
        )
        .unwrap();
        assert_eq!(c.max_upload_bytes, 2048);
        assert_eq!(c.rate_limits.per_user_burst, 7.5);
        assert_eq!(c.rate_limits.per_ip_burst, 5.0, "from the file");
        assert_eq!(c.rate_limits.per_user_per_second, 200.0, "the default");
        assert_eq!(c.durability, "normal");
        let turn = c.turn.unwrap();
        assert_eq!(turn.uris, ["turn:a:3478", "turns:b:5349"]);
        assert_eq!(turn.ttl_seconds, 86_400);
    }

    #[test]
    fn a_malformed_variable_is_an_error_that_names_it() {
        let e = Config::load(None, env(&[("HOTLINE_MAX_REQUEST_BYTES", "lots")])).unwrap_err();
        assert!(e.contains("HOTLINE_MAX_REQUEST_BYTES"), "{e}");
        let e = Config::load(None, env(&[("HOTLINE_ALLOW_REGISTRATION", "maybe")])).unwrap_err();
        assert!(e.contains("HOTLINE_ALLOW_REGISTRATION"), "{e}");
    }

    #[test]
    fn federation_is_off_and_allows_nobody_unless_configured() {
        let c = Config::load(None, env(&[])).unwrap();
        assert!(!c.federation.enabled);
        assert!(c.federation.allow.is_empty());
        assert_eq!(c.federation.listen, "0.0.0.0:8448");
        let c = Config::load(
            Some("[federation]\nenabled = true\nallow = [\"gov-b.example\"]\n"),
            env(&[
                ("HOTLINE_FEDERATION__ALLOW", "gov-c.example, 127.0.0.2:8448"),
                ("HOTLINE_FEDERATION__LISTEN", "127.0.0.1:8449"),
                ("HOTLINE_FEDERATION__TLS_CERTIFICATE", "/etc/hl/cert.pem"),
                ("HOTLINE_FEDERATION__TLS_PRIVATE_KEY", "/etc/hl/key.pem"),
                ("HOTLINE_FEDERATION__CA_FILE", "/etc/hl/ca.pem"),
            ]),
        )
        .unwrap();
        assert!(c.federation.enabled, "from the file");
        assert_eq!(c.federation.allow, ["gov-c.example", "127.0.0.2:8448"]);
        assert_eq!(c.federation.listen, "127.0.0.1:8449");
        assert_eq!(c.federation.ca_file, Some(PathBuf::from("/etc/hl/ca.pem")));
        let e = Config::load(None, env(&[("HOTLINE_FEDERATION__ENABLED", "perhaps")])).unwrap_err();
        assert!(e.contains("HOTLINE_FEDERATION__ENABLED"), "{e}");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(Config::load(Some("listne = \"x\""), env(&[])).is_err());
    }

    #[test]
    fn the_database_is_sqlite_in_the_data_dir_unless_a_url_names_another() {
        let c = Config::load(Some("data_dir = \"/d\""), env(&[])).unwrap();
        assert_eq!(
            c.database(),
            Ok(Database::Sqlite(PathBuf::from("/d/hotline.db")))
        );
        let c = Config::load(
            None,
            env(&[("HOTLINE_DATABASE", "postgres://h@127.0.0.1:5432/hl")]),
        )
        .unwrap();
        assert_eq!(
            c.database(),
            Ok(Database::Postgres("postgres://h@127.0.0.1:5432/hl".into()))
        );
        let c = Config::load(Some("database = \"sqlite:/x/y.db\""), env(&[])).unwrap();
        assert_eq!(c.database(), Ok(Database::Sqlite(PathBuf::from("/x/y.db"))));
        let c = Config::load(Some("database = \"mysql://x\""), env(&[])).unwrap();
        assert!(c.database().unwrap_err().contains("mysql://x"));
    }
}
