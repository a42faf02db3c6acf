//! Resolving a server name to where to connect, as the spec's "Resolving
//! server names" says, step by step:
//!
//! 1. An IP literal: that address, the given port or 8448.
//! 2. A hostname with a port: that host and port.
//! 3. `https://HOST/.well-known/matrix/server` names a delegated
//!    `DHOST[:DPORT]`: an IP literal or a port is used as in 1 and 2;
//!    otherwise the SRV record `_matrix-fed._tcp.DHOST`, then the
//!    deprecated `_matrix._tcp.DHOST`, then `DHOST:8448`. The certificate
//!    must be for `DHOST`, and `Host` is `DHOST[:DPORT]`.
//! 4. Without delegation: the SRV records of `HOST` in the same order,
//!    then `HOST:8448`; the certificate must be for `HOST`.
//!
//! The decisions are [`resolve`], over [`Lookups`] (the network's
//! answers), so the whole table is checked without a DNS server.

use std::net::IpAddr;

/// Where to connect for a server name, and what to expect there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// An address, or a name to look up (A/AAAA).
    pub host: Host,
    pub port: u16,
    /// The name (or address) the server's certificate must hold.
    pub tls_name: String,
    /// The `Host` header of requests.
    pub host_header: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

/// The default federation port.
pub const DEFAULT_PORT: u16 = 8448;

/// What resolution asks of the network.
pub trait Lookups {
    /// The `m.server` of `https://host/.well-known/matrix/server`, if it
    /// answered with one.
    fn well_known(&self, host: &str) -> impl std::future::Future<Output = Option<String>> + Send;
    /// The preferred target of the SRV record `name`.
    fn srv(&self, name: &str) -> impl std::future::Future<Output = Option<(String, u16)>> + Send;
}

/// `host[:port]` split, with IPv6 literals in brackets; `None` when the
/// port is not a number.
pub fn split_host_port(name: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = name.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((ip, Some(port.parse().ok()?))),
            None if after.is_empty() => Some((ip, None)),
            None => None,
        };
    }
    match name.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((name, None)),
    }
}

/// Resolves `server_name` (see the module docs).
pub async fn resolve(server_name: &str, lookups: &impl Lookups) -> Result<Target, String> {
    let (host, port) = split_host_port(server_name)
        .ok_or_else(|| format!("{server_name} is not a server name"))?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Target {
            host: Host::Ip(ip),
            port: port.unwrap_or(DEFAULT_PORT),
            tls_name: ip.to_string(),
            host_header: server_name.to_owned(),
        });
    }
    if let Some(port) = port {
        return Ok(Target {
            host: Host::Name(host.to_owned()),
            port,
            tls_name: host.to_owned(),
            host_header: server_name.to_owned(),
        });
    }
    if let Some(delegated) = lookups.well_known(host).await {
        if let Some((dhost, dport)) = split_host_port(&delegated) {
            if let Ok(ip) = dhost.parse::<IpAddr>() {
                return Ok(Target {
                    host: Host::Ip(ip),
                    port: dport.unwrap_or(DEFAULT_PORT),
                    tls_name: ip.to_string(),
                    host_header: delegated.clone(),
                });
            }
            if let Some(dport) = dport {
                return Ok(Target {
                    host: Host::Name(dhost.to_owned()),
                    port: dport,
                    tls_name: dhost.to_owned(),
                    host_header: delegated.clone(),
                });
            }
            return Ok(by_srv(dhost, lookups).await);
        }
    }
    Ok(by_srv(host, lookups).await)
}

/// Steps 3.3-3.5 and 4-6: SRV `_matrix-fed._tcp`, then `_matrix._tcp`,
/// then port 8448; the certificate and `Host` are `host`'s.
async fn by_srv(host: &str, lookups: &impl Lookups) -> Target {
    let found = match lookups.srv(&format!("_matrix-fed._tcp.{host}")).await {
        Some(t) => Some(t),
        None => lookups.srv(&format!("_matrix._tcp.{host}")).await,
    };
    let (target, port) = found.unwrap_or_else(|| (host.to_owned(), DEFAULT_PORT));
    Target {
        host: Host::Name(target),
        port,
        tls_name: host.to_owned(),
        host_header: host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The network's answers as a table.
    #[derive(Default)]
    struct Answers {
        well_known: HashMap<&'static str, &'static str>,
        srv: HashMap<&'static str, (&'static str, u16)>,
    }

    impl Lookups for Answers {
        async fn well_known(&self, host: &str) -> Option<String> {
            self.well_known.get(host).map(|s| s.to_string())
        }
        async fn srv(&self, name: &str) -> Option<(String, u16)> {
            self.srv.get(name).map(|(h, p)| (h.to_string(), *p))
        }
    }

    fn target(host: Host, port: u16, tls: &str, header: &str) -> Target {
        Target {
            host,
            port,
            tls_name: tls.into(),
            host_header: header.into(),
        }
    }

    fn name(n: &str) -> Host {
        Host::Name(n.into())
    }

    async fn r(server: &str, answers: &Answers) -> Target {
        resolve(server, answers).await.unwrap()
    }

    #[tokio::test]
    async fn server_names_resolve_as_the_spec_orders_it() {
        let mut a = Answers::default();
        // 1. IP literals, v4 and v6, with and without a port.
        let ip = |s: &str| Host::Ip(s.parse().unwrap());
        assert_eq!(
            r("127.0.0.2:8449", &a).await,
            target(ip("127.0.0.2"), 8449, "127.0.0.2", "127.0.0.2:8449")
        );
        assert_eq!(
            r("[::1]", &a).await,
            target(ip("::1"), 8448, "::1", "[::1]")
        );
        // 2. An explicit port wins over delegation and SRV.
        a.well_known
            .insert("gov-a.example", "elsewhere.example:443");
        a.srv
            .insert("_matrix-fed._tcp.gov-a.example", ("srv.example", 1));
        assert_eq!(
            r("gov-a.example:8000", &a).await,
            target(
                name("gov-a.example"),
                8000,
                "gov-a.example",
                "gov-a.example:8000"
            )
        );
        // 3. Delegation to a host and port.
        assert_eq!(
            r("gov-a.example", &a).await,
            target(
                name("elsewhere.example"),
                443,
                "elsewhere.example",
                "elsewhere.example:443"
            )
        );
        // 3.1 Delegation to an IP literal.
        a.well_known.insert("gov-b.example", "10.0.0.7");
        assert_eq!(
            r("gov-b.example", &a).await,
            target(ip("10.0.0.7"), 8448, "10.0.0.7", "10.0.0.7")
        );
        // 3.3 Delegation to a bare host: its SRV record, certificate for
        // the delegated name; the deprecated record only when the new is
        // missing; 8448 when neither is there.
        a.well_known.insert("gov-c.example", "matrix.gov-c.example");
        a.srv.insert(
            "_matrix-fed._tcp.matrix.gov-c.example",
            ("fed1.gov-c.example", 8500),
        );
        a.srv.insert(
            "_matrix._tcp.matrix.gov-c.example",
            ("old.gov-c.example", 8501),
        );
        assert_eq!(
            r("gov-c.example", &a).await,
            target(
                name("fed1.gov-c.example"),
                8500,
                "matrix.gov-c.example",
                "matrix.gov-c.example"
            )
        );
        a.srv.remove("_matrix-fed._tcp.matrix.gov-c.example");
        assert_eq!(
            r("gov-c.example", &a).await,
            target(
                name("old.gov-c.example"),
                8501,
                "matrix.gov-c.example",
                "matrix.gov-c.example"
            )
        );
        a.srv.remove("_matrix._tcp.matrix.gov-c.example");
        assert_eq!(
            r("gov-c.example", &a).await,
            target(
                name("matrix.gov-c.example"),
                8448,
                "matrix.gov-c.example",
                "matrix.gov-c.example"
            )
        );
        // 4-6. No delegation: the name's own SRV records, then 8448.
        a.srv
            .insert("_matrix-fed._tcp.gov-d.example", ("fed.gov-d.example", 443));
        assert_eq!(
            r("gov-d.example", &a).await,
            target(
                name("fed.gov-d.example"),
                443,
                "gov-d.example",
                "gov-d.example"
            )
        );
        assert_eq!(
            r("gov-e.example", &a).await,
            target(
                name("gov-e.example"),
                8448,
                "gov-e.example",
                "gov-e.example"
            )
        );
        // A delegation that is not a server name is ignored.
        a.well_known.insert("gov-e.example", "bad:port:x");
        assert_eq!(
            r("gov-e.example", &a).await,
            target(
                name("gov-e.example"),
                8448,
                "gov-e.example",
                "gov-e.example"
            )
        );
        assert!(resolve("host:notaport", &a).await.is_err());
    }
}
