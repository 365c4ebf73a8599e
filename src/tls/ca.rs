//! The corporate CA: creating one (`egress-dlp ca init`, or `serve` on first start),
//! loading it (or the company's own intermediate), and minting leaf certificates with it.
//!
//! A generated CA is an ECDSA P-256 key and a self-signed certificate valid for ten years,
//! path length 0 (it signs leaves, never other CAs). The key file is created with mode
//! 0600 and neither file is ever overwritten. A configured CA may be any CA certificate
//! whose key rcgen can sign with (ECDSA P-256/P-384, Ed25519, RSA), in PKCS#8 PEM; issuers
//! that follow it in the certificate file are sent to clients with every leaf.
//!
//! A leaf has its own fresh P-256 key, a random 128-bit serial, one subject alternative
//! name (the DNS name, or the IP address when the client sent no server name), the
//! server-auth extended key usage, and a validity that starts an hour back (clock skew)
//! and never outlasts the CA.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// How long a generated CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How far back a leaf's validity starts, for clients whose clocks run behind.
pub const LEAF_BACKDATE: Duration = Duration::from_secs(3600);
/// The common name of a generated CA.
pub const CA_COMMON_NAME: &str = "egress-dlp interception CA";

/// How to make a workstation trust the CA, printed by `ca init` and on first `serve`.
pub const TRUST_HOWTO: &str = "\
Trust it on workstations as a root CA (certificate only; the key never leaves this host):
  Debian/Ubuntu: cp ca.pem /usr/local/share/ca-certificates/egress-dlp.crt && update-ca-certificates
  RHEL/Fedora:   cp ca.pem /etc/pki/ca-trust/source/anchors/egress-dlp.pem && update-ca-trust
  macOS:         security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain ca.pem
  Windows:       certutil -addstore -f Root ca.pem   (or Group Policy for the whole fleet)
  Firefox, Java and Node keep their own stores: enterprise policy, keytool, NODE_EXTRA_CA_CERTS.";

/// Where the CA's two files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPaths {
    /// The certificate (PEM): the file workstations trust.
    pub cert: PathBuf,
    /// The private key (PEM, PKCS#8), mode 0600.
    pub key: PathBuf,
}

impl CaPaths {
    /// `DIR/ca.pem` and `DIR/ca-key.pem`.
    pub fn in_dir(dir: &Path) -> CaPaths {
        CaPaths {
            cert: dir.join(crate::config::tls::CA_CERT_FILE),
            key: dir.join(crate::config::tls::CA_KEY_FILE),
        }
    }
}

/// Why the CA could not be created, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// `ca init` never overwrites a CA.
    #[error("{0} already exists: refusing to overwrite a CA (move it away first)")]
    Exists(PathBuf),
    /// One of the two files is there and the other is not.
    #[error("{present} exists but {missing} does not: restore it, or move both away")]
    Partial {
        /// The file that exists.
        present: PathBuf,
        /// The file that does not.
        missing: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A file is not what it should be.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Generating or signing a certificate failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused a key it was given.
    #[error("TLS key: {0}")]
    Key(#[from] rustls::Error),
}

/// What a leaf certificate is for: a DNS name (from SNI or the CONNECT host) or an IP
/// address (no SNI).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeafName {
    /// A DNS name, lowercased.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl LeafName {
    /// The name a client's TLS server name (`sni`) or, without one, the CONNECT host
    /// (`connect_host`, brackets allowed around IPv6) stands for.
    pub fn new(sni: Option<&str>, connect_host: &str) -> LeafName {
        let name = sni.unwrap_or(connect_host);
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => LeafName::Ip(ip),
            Err(_) => LeafName::Dns(bare.trim_end_matches('.').to_ascii_lowercase()),
        }
    }

    /// The rustls server name to verify an upstream certificate against.
    pub fn server_name(
        &self,
    ) -> Result<rustls::pki_types::ServerName<'static>, rustls::pki_types::InvalidDnsNameError>
    {
        match self {
            LeafName::Dns(name) => rustls::pki_types::ServerName::try_from(name.clone()),
            LeafName::Ip(ip) => Ok(rustls::pki_types::ServerName::IpAddress((*ip).into())),
        }
    }
}

impl std::fmt::Display for LeafName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeafName::Dns(name) => f.write_str(name),
            LeafName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Creates a new CA at `paths`; refuses when either file exists. The key is written first,
/// with mode 0600, and the parent directory is created when missing.
pub fn init(paths: &CaPaths) -> Result<(), CaError> {
    for path in [&paths.key, &paths.cert] {
        if path.exists() {
            return Err(CaError::Exists(path.clone()));
        }
    }
    for path in [&paths.key, &paths.cert] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CaError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    name.push(DnType::OrganizationName, "egress-dlp");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = (now - LEAF_BACKDATE).into();
    params.not_after = (now + CA_VALIDITY).into();
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(&key)?;
    write_new(&paths.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&paths.cert, cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

/// Creates the CA at `paths` when neither file exists; `Ok(true)` when it did. One file
/// without the other is an error, never papered over by a new CA.
pub fn ensure(paths: &CaPaths) -> Result<bool, CaError> {
    match (paths.cert.exists(), paths.key.exists()) {
        (true, true) => Ok(false),
        (false, false) => init(paths).map(|()| true),
        (true, false) => Err(CaError::Partial {
            present: paths.cert.clone(),
            missing: paths.key.clone(),
        }),
        (false, true) => Err(CaError::Partial {
            present: paths.key.clone(),
            missing: paths.cert.clone(),
        }),
    }
}

/// Writes a file that must not exist yet, with `mode` (Unix) from its creation on.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

/// A random positive 128-bit serial number (RFC 5280 §4.1.2.2: at most 20 octets).
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CaError::Generate(rcgen::Error::RingUnspecified))?;
    // Positive, and 16 octets long whatever the random bits.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// A loaded CA, ready to mint leaves.
pub struct Ca {
    /// The CA certificate and the issuers that followed it in its file.
    chain: Vec<CertificateDer<'static>>,
    issuer: Issuer<'static, KeyPair>,
    not_after: SystemTime,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("chain", &self.chain.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads the CA at `paths`: the certificate must be a CA, currently valid, and match
    /// the key. A key file readable by others is logged as a warning.
    pub fn load(paths: &CaPaths, provider: Arc<CryptoProvider>) -> Result<Ca, CaError> {
        let invalid = |path: &Path, message: String| CaError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let cert_text = read(&paths.cert)?;
        let chain = CertificateDer::pem_slice_iter(cert_text.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&paths.cert, format!("not a PEM certificate: {e}")))?;
        let Some(ca_cert) = chain.first() else {
            return Err(invalid(&paths.cert, "holds no certificate".into()));
        };
        let key_text = read(&paths.key)?;
        warn_if_readable_by_others(&paths.key);
        let key_der = PrivateKeyDer::from_pem_slice(key_text.as_bytes())
            .map_err(|e| invalid(&paths.key, format!("not a PEM private key: {e}")))?;
        let key = KeyPair::try_from(&key_der).map_err(|e| {
            invalid(
                &paths.key,
                format!("cannot sign with this key ({e}); give it as PKCS#8"),
            )
        })?;

        let (_, parsed) = x509_parser::parse_x509_certificate(ca_cert)
            .map_err(|e| invalid(&paths.cert, format!("not an X.509 certificate: {e}")))?;
        let is_ca = parsed
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|b| b.value.ca);
        if !is_ca {
            return Err(invalid(
                &paths.cert,
                "is not a CA certificate (basicConstraints cA is not set)".into(),
            ));
        }
        let not_after = SystemTime::UNIX_EPOCH
            + Duration::from_secs(parsed.validity().not_after.timestamp().max(0) as u64);
        let not_before = SystemTime::UNIX_EPOCH
            + Duration::from_secs(parsed.validity().not_before.timestamp().max(0) as u64);
        let now = SystemTime::now();
        if now >= not_after {
            return Err(invalid(
                &paths.cert,
                "the CA certificate has expired".into(),
            ));
        }
        if now < not_before {
            return Err(invalid(
                &paths.cert,
                "the CA certificate is not valid yet".into(),
            ));
        }
        if parsed.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
            return Err(invalid(
                &paths.key,
                format!("is not the key of {}", paths.cert.display()),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(ca_cert, key)?;
        Ok(Ca {
            chain,
            issuer,
            not_after,
            provider,
        })
    }

    /// The CA certificate (DER), first of the chain sent after each leaf.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// Mints a leaf certificate for `name`, valid for `validity` from now (never past the
    /// CA's own end), with its own key and a random serial, ready for rustls.
    pub fn mint(&self, name: &LeafName, validity: Duration) -> Result<CertifiedKey, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let san = match name {
            LeafName::Dns(dns) => {
                // A CN is at most 64 characters (RFC 5280 ub-common-name); the SAN is what
                // clients check.
                let cn: String = dns.chars().take(64).collect();
                dn.push(DnType::CommonName, cn);
                SanType::DnsName(dns.clone().try_into()?)
            }
            LeafName::Ip(ip) => {
                dn.push(DnType::CommonName, ip.to_string());
                SanType::IpAddress(*ip)
            }
        };
        dn.push(DnType::OrganizationName, "egress-dlp interception");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![san];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = (now - LEAF_BACKDATE).into();
        params.not_after = (now + validity).min(self.not_after).into();
        params.serial_number = Some(random_serial()?);
        let cert = params.signed_by(&key, &self.issuer)?;

        let mut chain = Vec::with_capacity(1 + self.chain.len());
        chain.push(cert.der().clone());
        chain.extend(self.chain.iter().cloned());
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = self.provider.key_provider.load_private_key(key_der)?;
        Ok(CertifiedKey::new(chain, signing_key))
    }
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    key = %path.display(),
                    mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "the CA key is readable by other users: chmod 600 it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_names_from_sni_or_connect_host() {
        let cases: &[(Option<&str>, &str, LeafName)] = &[
            (
                Some("Example.COM"),
                "10.0.0.1",
                LeafName::Dns("example.com".into()),
            ),
            (None, "example.com", LeafName::Dns("example.com".into())),
            (None, "10.1.2.3", LeafName::Ip("10.1.2.3".parse().unwrap())),
            (None, "[::1]", LeafName::Ip("::1".parse().unwrap())),
            (
                Some("host.example."),
                "x",
                LeafName::Dns("host.example".into()),
            ),
        ];
        for (sni, host, want) in cases {
            assert_eq!(&LeafName::new(*sni, host), want, "{sni:?} {host}");
        }
    }

    #[test]
    fn init_refuses_to_overwrite_and_ensure_refuses_half_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let paths = CaPaths::in_dir(&dir.path().join("sub"));
        init(&paths).unwrap();
        let before = std::fs::read(&paths.key).unwrap();
        assert!(matches!(init(&paths), Err(CaError::Exists(_))));
        assert_eq!(std::fs::read(&paths.key).unwrap(), before);
        assert!(!ensure(&paths).unwrap());
        std::fs::remove_file(&paths.cert).unwrap();
        assert!(matches!(ensure(&paths), Err(CaError::Partial { .. })));
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            CaPaths::in_dir(&dir.path().join("a")),
            CaPaths::in_dir(&dir.path().join("b")),
        );
        init(&a).unwrap();
        init(&b).unwrap();
        let mixed = CaPaths {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let err = Ca::load(&mixed, provider.clone()).unwrap_err();
        assert!(err.to_string().contains("is not the key of"), "{err}");
        // A certificate that is not a CA is refused, with its own key.
        let not_ca = rcgen::generate_simple_self_signed(vec!["x.example".into()]).unwrap();
        std::fs::write(&a.cert, not_ca.cert.pem()).unwrap();
        std::fs::write(&a.key, not_ca.signing_key.serialize_pem()).unwrap();
        let err = Ca::load(&a, provider.clone()).unwrap_err();
        assert!(err.to_string().contains("not a CA certificate"), "{err}");
        // Garbage is a clear error, not a panic.
        std::fs::write(&a.cert, "not pem at all").unwrap();
        let err = Ca::load(&a, provider).unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
    }
}
