//! Connecting to PostgreSQL, over TLS when the URL asks for it.
//!
//! The URL's `sslmode` means what it means to libpq, with the same
//! defaults, so a URL that works with `psql` works here:
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (the default) | when the server offers it | only with `sslrootcert` (as `verify-ca`) |
//! | `require` | always | only with `sslrootcert` (as `verify-ca`) |
//! | `verify-ca` | always | chains to a trusted root |
//! | `verify-full` | always | chains to a trusted root and names the host |
//!
//! The trusted roots are those in the `sslrootcert` file (PEM) when the URL
//! names one, else the system's (libpq would read `~/.postgresql/root.crt`;
//! a server has no such home). A database on another machine should be
//! reached with `verify-full`: anything less lets whoever sits on the path
//! read every message's metadata and every key upload. `require` without a
//! root is warned about at start for that reason.
//!
//! The TLS library is rustls (the one federation uses), with the aws-lc-rs
//! provider: one TLS stack in the binary.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{Result, StoreError};

/// A connection's I/O half, to be polled by a task of its own.
pub(crate) type Connection =
    tokio_postgres::Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Check {
    /// Encrypted against a passive listener only.
    Nothing,
    /// It chains to a trusted root.
    Chain,
    /// It chains to a trusted root and names the host.
    Full,
}

/// A database URL taken apart: what tokio-postgres reads, and what it does
/// not (`sslrootcert`, the `verify-*` modes).
#[derive(Debug, PartialEq)]
struct Target {
    /// The URL for tokio-postgres: `sslmode` as it knows it, no `sslrootcert`.
    url: String,
    check: Check,
    root_file: Option<String>,
    /// `sslmode=require` without a root to check against.
    unchecked_required: bool,
}

fn target(url: &str) -> Result<Target> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            (b, q)
        }
        _ => {
            // No query, or the key=value form: tokio-postgres reads it all
            // (and refuses the `verify-*` modes there with its own error).
            return Ok(Target {
                url: url.to_owned(),
                check: Check::Nothing,
                root_file: None,
                unchecked_required: false,
            });
        }
    };
    let mut mode = None;
    let mut root_file = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => mode = Some(percent_decode(value)?),
            "sslrootcert" => root_file = Some(percent_decode(value)?),
            _ => kept.push(pair),
        }
    }
    let mode = mode.unwrap_or_else(|| "prefer".to_owned());
    let (wire_mode, check) = match (mode.as_str(), &root_file) {
        ("disable", _) => ("disable", Check::Nothing),
        (m @ ("prefer" | "require"), Some(_)) => (m, Check::Chain),
        (m @ ("prefer" | "require"), None) => (m, Check::Nothing),
        ("verify-ca", _) => ("require", Check::Chain),
        ("verify-full", _) => ("require", Check::Full),
        (other, _) => {
            return Err(StoreError::Engine(format!(
                "sslmode={other} in the database URL: use disable, prefer, require, verify-ca or verify-full"
            )))
        }
    };
    kept.push(match wire_mode {
        "disable" => "sslmode=disable",
        "prefer" => "sslmode=prefer",
        _ => "sslmode=require",
    });
    Ok(Target {
        url: format!("{base}?{}", kept.join("&")),
        check,
        unchecked_required: mode == "require" && root_file.is_none(),
        root_file,
    })
}

/// `%XX` escapes in a URL parameter (a path may hold them).
fn percent_decode(s: &str) -> Result<String> {
    let bad = || StoreError::Engine(format!("a bad %-escape in the database URL: {s}"));
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Connects to the database at `url`, over TLS as its `sslmode` says.
pub(crate) async fn connect(url: &str) -> Result<(Client, Connection)> {
    let target = target(url)?;
    let tls = MakeRustlsConnect::new(client_config(&target)?);
    tokio_postgres::connect(&target.url, tls)
        .await
        .map_err(|e| {
            // The handshake's reason is in the source ("error performing
            // TLS handshake" alone tells an operator nothing).
            let mut text = format!("connecting to PostgreSQL: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            StoreError::Engine(text)
        })
}

/// Says, once at start, what a URL's TLS settings leave open.
pub(crate) fn warn_if_unchecked(url: &str) {
    if let Ok(t) = target(url) {
        if t.unchecked_required {
            tracing::warn!(
                "the database connection is encrypted but the server's certificate is not \
                 checked (sslmode=require without sslrootcert): use sslmode=verify-full"
            );
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn client_config(target: &Target) -> Result<rustls::ClientConfig> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match target.check {
        Check::Nothing => Arc::new(Unchecked(provider.clone())),
        check => {
            let roots = Arc::new(roots(target.root_file.as_deref())?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| StoreError::Engine(format!("the database's trusted roots: {e}")))?;
            if check == Check::Full {
                webpki
            } else {
                Arc::new(AnyName(webpki))
            }
        }
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Engine(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The roots in `file`, or the system's.
fn roots(file: Option<&str>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| StoreError::Engine(format!("sslrootcert {path}: {e}")))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(StoreError::Engine(format!(
                    "sslrootcert {path}: no certificate in it"
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(StoreError::Engine(
                    "no system root certificates to check the database's certificate against: \
                     name a file with sslrootcert"
                        .into(),
                ));
            }
        }
    }
    Ok(roots)
}

/// `verify-ca`: the chain is checked, the name is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root (libpq's meaning): any
/// certificate, though the handshake must still be signed by its key.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_s_sslmode_means_what_it_means_to_libpq() {
        let t = |url: &str| target(url).unwrap();
        let plain = t("postgres://u@h:5/db");
        assert_eq!(
            (plain.url.as_str(), plain.check),
            ("postgres://u@h:5/db", Check::Nothing)
        );
        let full = t(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=5",
        );
        assert_eq!(
            full.url,
            "postgres://u@h/db?connect_timeout=5&sslmode=require"
        );
        assert_eq!(full.check, Check::Full);
        assert_eq!(full.root_file.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(t("postgres://h/db?sslmode=verify-ca").check, Check::Chain);
        assert_eq!(
            t("postgres://h/db?sslmode=require&sslrootcert=ca.pem").check,
            Check::Chain
        );
        let unchecked = t("postgres://h/db?sslmode=require");
        assert!(unchecked.unchecked_required);
        assert_eq!(unchecked.check, Check::Nothing);
        assert_eq!(
            t("postgres://h/db?sslmode=disable").url,
            "postgres://h/db?sslmode=disable"
        );
        assert!(target("postgres://h/db?sslmode=sometimes").is_err());
        assert!(target("postgres://h/db?sslrootcert=%zz").is_err());
    }

    /// A PostgreSQL cluster of the test's own (scripts/postgres.sh), TLS
    /// on, its certificate for `localhost` signed by a CA of the test's.
    struct TlsCluster {
        dir: tempfile::TempDir,
        port: u16,
        ca_file: std::path::PathBuf,
    }

    fn script() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres.sh")
    }

    impl TlsCluster {
        fn start() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let cluster = dir.path().join("pg");
            let started = std::process::Command::new(script())
                .args(["start", cluster.to_str().unwrap(), &port.to_string()])
                .status()
                .unwrap();
            assert!(started.success());
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            let ca_file = dir.path().join("ca.pem");
            std::fs::write(&ca_file, ca.pem()).unwrap();
            // The server's files, owned by whoever runs the cluster (the
            // `postgres` user when the tests run as root), the key private.
            let owner = std::fs::metadata(&cluster).unwrap();
            for (name, pem) in [
                ("server.crt", cert.pem()),
                ("server.key", key.serialize_pem()),
            ] {
                use std::os::unix::fs::{MetadataExt, PermissionsExt};
                let path = cluster.join(name);
                std::fs::write(&path, pem).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
                std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
            }
            let this = TlsCluster { dir, port, ca_file };
            let admin = super::super::PostgresStore::open_admin(&this.url("127.0.0.1", "disable"));
            super::super::block_on(admin.batch("ALTER SYSTEM SET ssl = on")).unwrap();
            super::super::block_on(admin.batch("SELECT pg_reload_conf()")).unwrap();
            // The reload is asynchronous: wait for new sessions to get TLS.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while ssl_in_use(&this.url("127.0.0.1", "require")) != Ok(true) {
                assert!(std::time::Instant::now() < deadline, "TLS never came on");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            this
        }

        fn url(&self, host: &str, mode: &str) -> String {
            format!(
                "postgres://hotline@{host}:{}/postgres?sslmode={mode}",
                self.port
            )
        }

        fn with_root(&self, host: &str, mode: &str) -> String {
            format!(
                "{}&sslrootcert={}",
                self.url(host, mode),
                self.ca_file.display()
            )
        }
    }

    impl Drop for TlsCluster {
        fn drop(&mut self) {
            let _ = std::process::Command::new(script())
                .args(["stop", self.dir.path().join("pg").to_str().unwrap()])
                .status();
        }
    }

    /// Whether a connection to `url` is encrypted, as the server sees it;
    /// the connection error's text when there is none.
    fn ssl_in_use(url: &str) -> std::result::Result<bool, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, connection) = connect(url).await.map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let row = client
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(row.get::<_, bool>(0))
        })
    }

    #[test]
    fn a_database_reached_over_tls_is_checked_as_the_url_asks() {
        if std::env::var_os("HOTLINE_TEST_POSTGRES").is_none() {
            panic!(
                "HOTLINE_TEST_POSTGRES is unset: scripts/test.sh runs these tests with PostgreSQL"
            );
        }
        let c = TlsCluster::start();
        // Checked in full against the CA, by the name the certificate holds.
        assert_eq!(
            ssl_in_use(&c.with_root("localhost", "verify-full")),
            Ok(true)
        );
        // Not by an address it does not name ...
        let wrong_name = ssl_in_use(&c.with_root("127.0.0.1", "verify-full")).unwrap_err();
        assert!(wrong_name.contains("certificate"), "{wrong_name}");
        // ... which verify-ca lets pass: the chain is all it checks.
        assert_eq!(ssl_in_use(&c.with_root("127.0.0.1", "verify-ca")), Ok(true));
        // A CA nobody trusts: the system's roots do not hold the test's.
        let unknown = ssl_in_use(&c.url("localhost", "verify-full")).unwrap_err();
        assert!(unknown.contains("certificate"), "{unknown}");
        // libpq's require and prefer: encrypted, unchecked; disable: plain.
        assert_eq!(ssl_in_use(&c.url("127.0.0.1", "require")), Ok(true));
        assert_eq!(ssl_in_use(&c.url("127.0.0.1", "prefer")), Ok(true));
        assert_eq!(ssl_in_use(&c.url("127.0.0.1", "disable")), Ok(false));
        // The whole store over it: writer, readers and listener.
        let store =
            super::super::PostgresStore::open(&c.with_root("localhost", "verify-full")).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let committed = runtime
            .block_on(crate::Store::write(
                &*store,
                crate::WriteBatch::one(crate::WriteOp::PutAccountData {
                    user_id: "@tls:x".into(),
                    room_id: String::new(),
                    kind: "org.hotline.test".into(),
                    content: "{}".into(),
                }),
            ))
            .unwrap();
        assert!(committed.max_position().is_some());
    }
}
