//! The upstream side of an intercepted connection: TLS to the origin server, verified
//! against the system's roots plus `tls.upstream_roots`, never skipped.
//!
//! A failed verification is classified ([`UpstreamTlsError`]) so that the client can be
//! told why (expired, wrong name, unknown issuer) on a 502 page, and counted.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::ca::LeafName;
use super::stats::UpstreamFailure;

/// Why the TLS connection to an upstream could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamTlsError {
    /// The upstream's certificate failed verification.
    #[error("the site's certificate {problem}")]
    Certificate {
        /// Which check failed.
        reason: UpstreamFailure,
        /// The same, in words, after "the site's certificate".
        problem: String,
    },
    /// The handshake failed for another reason.
    #[error("TLS handshake with the site failed: {0}")]
    Handshake(String),
    /// The handshake did not finish in time.
    #[error("TLS handshake with the site did not finish within {0:?}")]
    Timeout(Duration),
}

impl UpstreamTlsError {
    /// The counter label.
    pub fn reason(&self) -> UpstreamFailure {
        match self {
            UpstreamTlsError::Certificate { reason, .. } => *reason,
            UpstreamTlsError::Handshake(_) => UpstreamFailure::Handshake,
            UpstreamTlsError::Timeout(_) => UpstreamFailure::Timeout,
        }
    }

    /// Classifies a handshake error from tokio-rustls (a rustls error inside an io error).
    pub fn from_io(err: &std::io::Error) -> UpstreamTlsError {
        let tls = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls {
            Some(rustls::Error::InvalidCertificate(cert)) => certificate(cert),
            Some(other) => UpstreamTlsError::Handshake(other.to_string()),
            None => UpstreamTlsError::Handshake(err.to_string()),
        }
    }
}

fn certificate(err: &CertificateError) -> UpstreamTlsError {
    let (reason, problem) = match err {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            (UpstreamFailure::Expired, "has expired".to_owned())
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            (UpstreamFailure::NotYetValid, "is not valid yet".to_owned())
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => (
            UpstreamFailure::WrongName,
            "is for a different name (wrong name)".to_owned(),
        ),
        CertificateError::UnknownIssuer => (
            UpstreamFailure::UnknownIssuer,
            "is not signed by a trusted authority (unknown issuer; self-signed or a private CA)"
                .to_owned(),
        ),
        other => (
            UpstreamFailure::BadCertificate,
            format!("is not valid: {other}"),
        ),
    };
    UpstreamTlsError::Certificate { reason, problem }
}

/// Why the upstream trust store could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    /// A `tls.upstream_roots` file could not be read or holds no certificate.
    #[error("tls.upstream_roots: {}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the client configuration.
    #[error("upstream TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// An ALPN list, most preferred first.
type AlpnList = Vec<Vec<u8>>;

/// Client configurations for upstream handshakes, one per ALPN offer, sharing one trust
/// store and one session-resumption cache.
#[derive(Debug)]
pub struct UpstreamTls {
    base: Arc<ClientConfig>,
    /// The base configuration with each ALPN list asked for so far (a handful: the HTTP
    /// versions in some order), built once each.
    with_alpn: Mutex<Vec<(AlpnList, Arc<ClientConfig>)>>,
    timeout: Duration,
}

impl UpstreamTls {
    /// Trusts the system's roots plus every certificate in `extra_roots`.
    pub fn new(
        provider: Arc<CryptoProvider>,
        extra_roots: &[PathBuf],
        timeout: Duration,
    ) -> Result<UpstreamTls, RootsError> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(error = %e, "some system root certificates could not be read");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        if ignored > 0 {
            tracing::debug!(added, ignored, "system roots: some could not be parsed");
        }
        for path in extra_roots {
            let file_error = |message: String| RootsError::File {
                path: path.clone(),
                message,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| file_error(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| file_error(format!("not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(file_error("holds no certificate".into()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| file_error(format!("not a usable root: {e}")))?;
            }
        }
        if roots.is_empty() {
            // Not fatal: every intercepted upstream then fails verification, and its
            // clients get a 502 page saying "unknown issuer" — never an unverified site.
            tracing::warn!(
                "no trusted roots for upstream servers (the system has none and \
                 tls.upstream_roots is empty): every intercepted HTTPS request will get a 502"
            );
        }
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(UpstreamTls {
            base: Arc::new(config),
            with_alpn: Mutex::new(Vec::new()),
            timeout,
        })
    }

    /// The client configuration offering `alpn` (sharing the trust store and the
    /// session cache of the base one).
    fn config(&self, alpn: &[Vec<u8>]) -> Arc<ClientConfig> {
        if alpn.is_empty() {
            return self.base.clone();
        }
        let mut variants = self.with_alpn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, config)) = variants.iter().find(|(list, _)| list == alpn) {
            return config.clone();
        }
        let mut config = (*self.base).clone();
        config.alpn_protocols = alpn.to_vec();
        let config = Arc::new(config);
        variants.push((alpn.to_vec(), config.clone()));
        config
    }

    /// Handshakes with the upstream on `tcp` for `name`, offering `alpn`; returns the
    /// stream and the protocol the upstream chose.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        name: &LeafName,
        alpn: &[Vec<u8>],
    ) -> Result<(TlsStream<TcpStream>, Option<Vec<u8>>), UpstreamTlsError> {
        let server_name = name
            .server_name()
            .map_err(|e| UpstreamTlsError::Handshake(format!("invalid server name: {e}")))?;
        let config = self.config(alpn);
        let handshake = TlsConnector::from(config).connect(server_name, tcp);
        let stream = tokio::time::timeout(self.timeout, handshake)
            .await
            .map_err(|_| UpstreamTlsError::Timeout(self.timeout))?
            .map_err(|e| UpstreamTlsError::from_io(&e))?;
        let chosen = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        Ok((stream, chosen))
    }
}
