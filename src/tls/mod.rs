//! TLS interception: the corporate CA, minting and caching leaf certificates, verified
//! upstream TLS, reading the ClientHello, and the bypass list.
//!
//! The proxy's CONNECT handling (`proxy::intercept`) drives one intercepted connection
//! with these parts, in this order:
//!
//! 1. [`hello::read`]: the client's ClientHello (server name, ALPN), bytes kept;
//! 2. [`Interceptor::bypassed`]: a host in `tls.bypass` gets a blind tunnel instead;
//! 3. [`UpstreamTls::connect`]: the handshake with the origin first, verified against the
//!    system roots plus `tls.upstream_roots`, offering the client's HTTP ALPN protocols;
//! 4. [`Interceptor::leaf`]: a leaf for the server name (or the IP without one), from the
//!    [`LeafCache`] or minted by the [`Ca`];
//! 5. [`Interceptor::server_config`]: the client's handshake finishes offering the one
//!    protocol the upstream accepted.
//!
//! Failures are counted in [`Stats`] by bounded reason. What this module does not do:
//! sockets, HTTP, inspection (all in `proxy`), certificate revocation checks (rustls has no
//! online OCSP/CRL fetching; a CRL could be configured later), client certificates.

pub mod ca;
pub mod hello;
pub mod leaf;
pub mod stats;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello as RustlsHello, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;

pub use ca::{Ca, CaError, CaPaths, LeafName};
pub use leaf::LeafCache;
pub use stats::{ClientFailure, Stats, UpstreamFailure};
pub use upstream::{RootsError, UpstreamTls, UpstreamTlsError};

use crate::config::Tls as TlsConfig;

/// Resumable client sessions kept (TLS 1.2 session ids; TLS 1.3 uses tickets).
const SESSION_CACHE_SIZE: usize = 4096;

/// Why interception could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The CA could not be loaded.
    #[error("CA: {0}")]
    Ca(#[from] CaError),
    /// The upstream trust store could not be built.
    #[error("{0}")]
    Roots(#[from] RootsError),
    /// rustls refused its configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Everything an intercepted connection needs, shared by all of them.
pub struct Interceptor {
    ca: Arc<Ca>,
    leaves: LeafCache,
    upstream: UpstreamTls,
    bypass: Vec<String>,
    handshake_timeout: Duration,
    provider: Arc<CryptoProvider>,
    sessions: Arc<dyn StoresServerSessions + Send + Sync>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor")
            .field("ca", &self.ca)
            .field("leaves", &self.leaves)
            .field("bypass", &self.bypass)
            .finish_non_exhaustive()
    }
}

impl Interceptor {
    /// Loads the CA (`tls.ca_cert`/`tls.ca_key`, which must exist: `serve` and `ca init`
    /// create the default one) and the upstream trust store.
    pub fn new(config: &TlsConfig) -> Result<Interceptor, SetupError> {
        let provider = Arc::new(crypto_provider());
        let paths = CaPaths {
            cert: config.ca_cert.clone(),
            key: config.ca_key.clone(),
        };
        let ca = Arc::new(Ca::load(&paths, provider.clone())?);
        let stats = Arc::new(Stats::default());
        let leaves = LeafCache::new(
            ca.clone(),
            config.leaf_cache_size,
            config.leaf_cache_ttl,
            config.max_concurrent_mints,
            stats.clone(),
        );
        let upstream = UpstreamTls::new(
            provider.clone(),
            &config.upstream_roots,
            config.handshake_timeout,
        )?;
        Ok(Interceptor {
            ca,
            leaves,
            upstream,
            bypass: config.bypass.clone(),
            handshake_timeout: config.handshake_timeout,
            provider,
            sessions: rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
            ticketer: rustls::crypto::ring::Ticketer::new()?,
            stats,
        })
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The CA leaves are signed with.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The leaf cache.
    pub fn leaves(&self) -> &LeafCache {
        &self.leaves
    }

    /// `tls.handshake_timeout`.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Verified TLS to upstreams.
    pub fn upstream(&self) -> &UpstreamTls {
        &self.upstream
    }

    /// Whether `host` (a CONNECT host or a TLS server name) matches `tls.bypass`.
    pub fn bypassed(&self, host: &str) -> bool {
        bypass_matches(&self.bypass, host)
    }

    /// The leaf certificate for `name`, cached or minted.
    pub async fn leaf(&self, name: &LeafName) -> Result<Arc<CertifiedKey>, CaError> {
        self.leaves.get(name).await
    }

    /// The server configuration a client's handshake finishes with: `leaf`, offering
    /// `alpn` (the protocol the upstream accepted) when there is one. Client sessions
    /// resume across connections (one shared cache and ticketer).
    pub fn server_config(
        &self,
        leaf: Arc<CertifiedKey>,
        alpn: Option<&[u8]>,
    ) -> Result<Arc<ServerConfig>, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(FixedCert(leaf)));
        config.alpn_protocols = alpn.map(|p| vec![p.to_vec()]).unwrap_or_default();
        config.ignore_client_order = true;
        config.session_storage = self.sessions.clone();
        config.ticketer = self.ticketer.clone();
        Ok(Arc::new(config))
    }
}

/// rustls's ring provider with AES-128-GCM/SHA-256 preferred, on both sides of an
/// intercepted connection (the proxy's choice as a server: `ignore_client_order`). It is
/// as strong as anyone needs and cheaper per handshake than AES-256-GCM/SHA-384, whose
/// SHA-384 key schedule was the largest single cost of a new intercepted connection.
pub fn crypto_provider() -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    let rank = |suite: &rustls::SupportedCipherSuite| match suite.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 1,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 2,
        _ => 3,
    };
    // A stable sort: TLS 1.2 suites keep their order, after the TLS 1.3 ones.
    provider.cipher_suites.sort_by_key(rank);
    provider
}

/// Whether `host` matches one of `patterns` (lowercase; `*.domain` matches any name under
/// `domain`, at any depth, but not `domain` itself). A trailing dot and brackets around an
/// IPv6 address are ignored; names compare case-insensitively.
pub fn bypass_matches(patterns: &[String], host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    patterns
        .iter()
        .any(|pattern| match pattern.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            None => host == *pattern,
        })
}

/// A certificate resolver that always answers with one leaf (minted for this connection's
/// name before the handshake resumes).
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _: RustlsHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_128_gcm_sha256_first_tls12_suites_last() {
        let suites: Vec<_> = crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(suites[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let first_tls12 = suites
            .iter()
            .position(|s| !format!("{s:?}").starts_with("TLS13"));
        assert!(first_tls12.is_some_and(|i| {
            suites[i..]
                .iter()
                .all(|s| !format!("{s:?}").starts_with("TLS13"))
        }));
        assert_eq!(
            suites.len(),
            rustls::crypto::ring::default_provider().cipher_suites.len()
        );
    }

    #[test]
    fn bypass_patterns() {
        let patterns: Vec<String> = ["*.bank.example", "pinned.example", "10.0.0.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cases: &[(&str, bool)] = &[
            ("www.bank.example", true),
            ("a.b.bank.example", true),
            ("WWW.Bank.Example.", true),
            ("bank.example", false),
            ("evilbank.example", false),
            ("bank.example.evil", false),
            ("pinned.example", true),
            ("www.pinned.example", false),
            ("10.0.0.1", true),
            ("10.0.0.10", false),
            ("", false),
        ];
        for (host, want) in cases {
            assert_eq!(bypass_matches(&patterns, host), *want, "{host}");
        }
    }
}
