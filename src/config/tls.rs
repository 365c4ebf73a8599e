//! `tls:` — configures [`crate::tls`]: whether CONNECT traffic is intercepted, which hosts
//! never are, what upstream certificates are trusted, where the CA lives, and the limits of
//! the interception machinery (handshake time, leaf-certificate cache, concurrent mints).
//!
//! Raw serde type ([`RawTls`]) first, then [`validate`] into the runtime [`Tls`], reporting
//! every problem through the config's shared error list.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::Errors;
use super::raw::RawDuration;

/// Default for [`Tls::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`Tls::leaf_cache_size`].
pub const DEFAULT_LEAF_CACHE_SIZE: usize = 10_000;
/// Default for [`Tls::leaf_cache_ttl`].
pub const DEFAULT_LEAF_CACHE_TTL: Duration = Duration::from_secs(3600);
/// Default for [`Tls::max_concurrent_mints`].
pub const DEFAULT_MAX_CONCURRENT_MINTS: usize = 4;
/// File name of the CA certificate in the data directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key in the data directory.
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// `tls:` — how CONNECT traffic is treated.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Whether CONNECT traffic is intercepted (default true); false makes it a blind tunnel.
    pub intercept: Option<bool>,
    /// Host patterns never intercepted (`host.example` or `*.example`): blind tunnels,
    /// still logged by host. Matched against the CONNECT host and the TLS server name.
    pub bypass: Option<Vec<String>>,
    /// Extra PEM files trusted for upstream servers, besides the system's roots.
    pub upstream_roots: Option<Vec<PathBuf>>,
    /// PEM certificate of an existing CA to sign with (the company's own intermediate; a
    /// chain file may follow it with its issuers, which are sent to clients too). Set with
    /// `ca_key`. Default: `DATA_DIR/ca.pem`, created on first start when missing.
    pub ca_cert: Option<PathBuf>,
    /// PEM private key of `ca_cert`, PKCS#8 (`BEGIN PRIVATE KEY`: ECDSA P-256/P-384,
    /// Ed25519 or RSA; convert others with `openssl pkcs8 -topk8 -nocrypt`). Set with
    /// `ca_cert`. Default: `DATA_DIR/ca-key.pem`.
    pub ca_key: Option<PathBuf>,
    /// Time a TLS handshake may take, each side: reading the client's ClientHello and
    /// finishing its handshake, and the handshake with the upstream (default `10s`).
    pub handshake_timeout: Option<RawDuration>,
    /// Most minted leaf certificates kept (default 10000); the oldest is dropped beyond.
    pub leaf_cache_size: Option<usize>,
    /// How long a minted leaf certificate is reused before a fresh one is minted (default
    /// `1h`); each leaf is valid for this long plus a day, never past the CA's own end.
    pub leaf_cache_ttl: Option<RawDuration>,
    /// Most leaf certificates minted at once (default 4); one host is never minted twice
    /// at the same time whatever this says.
    pub max_concurrent_mints: Option<usize>,
}

/// The validated `tls:` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// Whether CONNECT traffic is to be intercepted.
    pub intercept: bool,
    /// Host patterns never intercepted, lowercased (`host.example` or `*.example`).
    pub bypass: Vec<String>,
    /// Extra PEM files trusted for upstream servers.
    pub upstream_roots: Vec<PathBuf>,
    /// The CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// The CA private key (PEM).
    pub ca_key: PathBuf,
    /// Whether the CA was configured (`ca_cert`/`ca_key`) rather than the data directory's
    /// default, which `serve` creates when missing.
    pub ca_configured: bool,
    /// Time a TLS handshake may take, each side.
    pub handshake_timeout: Duration,
    /// Most minted leaf certificates kept.
    pub leaf_cache_size: usize,
    /// How long a minted leaf certificate is reused.
    pub leaf_cache_ttl: Duration,
    /// Most leaf certificates minted at once.
    pub max_concurrent_mints: usize,
}

/// Validates `raw` (the CA defaults to files in `data_dir`), pushing problems to `errors`.
pub(super) fn validate(raw: RawTls, data_dir: &Path, errors: &mut Errors) -> Tls {
    let bypass: Vec<(usize, String)> = raw
        .bypass
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, errors.host_pattern(&format!("tls.bypass[{i}]"), &p)?)))
        .collect();
    errors.no_repeats("tls.bypass", &bypass);
    let bypass = bypass.into_iter().map(|(_, p)| p).collect();
    let upstream_roots = raw.upstream_roots.unwrap_or_default();
    for (i, root) in upstream_roots.iter().enumerate() {
        if !root.is_file() {
            errors.push(
                &format!("tls.upstream_roots[{i}]"),
                format!("{} is not a readable file", root.display()),
            );
        }
    }
    let ca_configured = raw.ca_cert.is_some() || raw.ca_key.is_some();
    let (ca_cert, ca_key) = match (raw.ca_cert, raw.ca_key) {
        (None, None) => (data_dir.join(CA_CERT_FILE), data_dir.join(CA_KEY_FILE)),
        (Some(cert), Some(key)) => {
            for (key_name, path) in [("tls.ca_cert", &cert), ("tls.ca_key", &key)] {
                if !path.is_file() {
                    errors.push(
                        key_name,
                        format!("{} is not a readable file", path.display()),
                    );
                }
            }
            (cert, key)
        }
        (cert, key) => {
            let missing = if cert.is_none() {
                "tls.ca_cert"
            } else {
                "tls.ca_key"
            };
            errors.push(
                missing,
                "tls.ca_cert and tls.ca_key must be set together".into(),
            );
            (cert.unwrap_or_default(), key.unwrap_or_default())
        }
    };
    Tls {
        intercept: raw.intercept.unwrap_or(true),
        bypass,
        upstream_roots,
        ca_cert,
        ca_key,
        ca_configured,
        handshake_timeout: errors.duration(
            "tls.handshake_timeout",
            raw.handshake_timeout,
            DEFAULT_HANDSHAKE_TIMEOUT,
        ),
        leaf_cache_size: errors.count(
            "tls.leaf_cache_size",
            raw.leaf_cache_size,
            DEFAULT_LEAF_CACHE_SIZE,
            super::MAX_COUNT,
        ),
        leaf_cache_ttl: errors.duration(
            "tls.leaf_cache_ttl",
            raw.leaf_cache_ttl,
            DEFAULT_LEAF_CACHE_TTL,
        ),
        max_concurrent_mints: errors.count(
            "tls.max_concurrent_mints",
            raw.max_concurrent_mints,
            DEFAULT_MAX_CONCURRENT_MINTS,
            super::MAX_PARALLEL,
        ),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Overrides, from_yaml};

    fn load(tls: &str) -> Result<super::Tls, String> {
        let text = format!("rules: tests/fixtures/rules\ndata_dir: /var/lib/dlp\ntls: {tls}\n");
        from_yaml(&text, None, &Overrides::default())
            .map(|c| c.tls)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_limits() {
        let tls = load("{}").unwrap();
        assert!(tls.intercept);
        assert_eq!(tls.ca_cert, std::path::Path::new("/var/lib/dlp/ca.pem"));
        assert_eq!(tls.ca_key, std::path::Path::new("/var/lib/dlp/ca-key.pem"));
        assert!(!tls.ca_configured);
        assert_eq!(tls.handshake_timeout, super::DEFAULT_HANDSHAKE_TIMEOUT);
        assert_eq!(tls.leaf_cache_size, super::DEFAULT_LEAF_CACHE_SIZE);
        let tls = load(
            "{ handshake_timeout: 2s, leaf_cache_size: 50, leaf_cache_ttl: 10m, max_concurrent_mints: 1 }",
        )
        .unwrap();
        assert_eq!(tls.handshake_timeout, std::time::Duration::from_secs(2));
        assert_eq!(tls.leaf_cache_size, 50);
        assert_eq!(tls.leaf_cache_ttl, std::time::Duration::from_secs(600));
        assert_eq!(tls.max_concurrent_mints, 1);
    }

    #[test]
    fn every_bad_key_is_reported_at_once() {
        let cases: &[(&str, &[&str])] = &[
            ("{ ca_cert: /etc/hosts }", &["tls.ca_key:", "set together"]),
            ("{ ca_key: /etc/hosts }", &["tls.ca_cert:", "set together"]),
            (
                "{ ca_cert: /nonexistent/ca.pem, ca_key: /nonexistent/key.pem }",
                &["tls.ca_cert:", "tls.ca_key:"],
            ),
            (
                "{ leaf_cache_size: 0, max_concurrent_mints: 0, handshake_timeout: soon }",
                &[
                    "tls.leaf_cache_size:",
                    "tls.max_concurrent_mints:",
                    "tls.handshake_timeout:",
                ],
            ),
            ("{ leaf_cache_ttl: 0s }", &["tls.leaf_cache_ttl:"]),
            ("{ mint_everything: true }", &["unknown field"]),
        ];
        for (tls, wants) in cases {
            let err = load(tls).unwrap_err();
            for want in *wants {
                assert!(err.contains(want), "{tls}: {want} missing from {err}");
            }
        }
    }
}
