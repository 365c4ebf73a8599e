//! Counters of the interception machinery, as plain atomics: the metrics module exports them
//! (suggested names in each field's doc), tests and benches read them directly.
//!
//! Every reason is a fixed, bounded label: never a host name.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a client's side of an intercepted connection never carried a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFailure {
    /// No complete ClientHello, or no finished handshake, within `tls.handshake_timeout`.
    Timeout,
    /// The client closed (or reset) the connection during the handshake: what many pinned
    /// apps do when they see a certificate they do not expect.
    Closed,
    /// The client rejected the minted certificate with an alert (unknown CA, bad
    /// certificate...): a client that does not trust the CA, or pins its server's key.
    Untrusted,
    /// The first bytes after CONNECT are not a TLS ClientHello (refused: an uninspectable
    /// protocol is not let through a tunnel the proxy was told to inspect).
    NotTls,
    /// The client offers only application protocols other than HTTP/1.1 and HTTP/2.
    UnsupportedAlpn,
    /// Any other TLS error on the client side (no common cipher suite or version...).
    Protocol,
}

impl ClientFailure {
    /// Every reason, in [`Stats::client_failures`] order.
    pub const ALL: [ClientFailure; 6] = [
        ClientFailure::Timeout,
        ClientFailure::Closed,
        ClientFailure::Untrusted,
        ClientFailure::NotTls,
        ClientFailure::UnsupportedAlpn,
        ClientFailure::Protocol,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            ClientFailure::Timeout => "timeout",
            ClientFailure::Closed => "closed",
            ClientFailure::Untrusted => "untrusted",
            ClientFailure::NotTls => "not_tls",
            ClientFailure::UnsupportedAlpn => "unsupported_alpn",
            ClientFailure::Protocol => "protocol",
        }
    }
}

/// Why the upstream side of an intercepted connection could not be established securely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet.
    NotYetValid,
    /// The certificate is for another name.
    WrongName,
    /// The certificate chains to no trusted root (self-signed, private CA not configured).
    UnknownIssuer,
    /// Any other certificate problem (bad signature, revoked, wrong usage...).
    BadCertificate,
    /// The TLS handshake failed for another reason (protocol, alert, connection closed).
    Handshake,
    /// No finished handshake within `tls.handshake_timeout`.
    Timeout,
}

impl UpstreamFailure {
    /// Every reason, in [`Stats::upstream_failures`] order.
    pub const ALL: [UpstreamFailure; 7] = [
        UpstreamFailure::Expired,
        UpstreamFailure::NotYetValid,
        UpstreamFailure::WrongName,
        UpstreamFailure::UnknownIssuer,
        UpstreamFailure::BadCertificate,
        UpstreamFailure::Handshake,
        UpstreamFailure::Timeout,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamFailure::Expired => "expired",
            UpstreamFailure::NotYetValid => "not_yet_valid",
            UpstreamFailure::WrongName => "wrong_name",
            UpstreamFailure::UnknownIssuer => "unknown_issuer",
            UpstreamFailure::BadCertificate => "bad_certificate",
            UpstreamFailure::Handshake => "handshake",
            UpstreamFailure::Timeout => "timeout",
        }
    }
}

/// The interception counters. All are monotonic counters except `leaf_cache_size`.
/// `/metrics` copies them at each scrape (`Metrics::watch_tls`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Client handshakes completed with a minted certificate: connections whose requests
    /// are inspected (the proxy counts them as
    /// `egress_dlp_tls_interceptions_total{outcome="intercepted"}`).
    pub intercepted: AtomicU64,
    /// CONNECTs passed through as blind tunnels because the CONNECT host or the TLS server
    /// name matched `tls.bypass` (counted as
    /// `egress_dlp_tls_interceptions_total{outcome="bypassed"}`).
    pub bypassed: AtomicU64,
    /// Failed client handshakes, indexed like [`ClientFailure::ALL`]
    /// (`egress_dlp_tls_client_handshake_failures_total{reason}`); read with
    /// [`Stats::client_failures`].
    pub client_failures: [AtomicU64; 6],
    /// Failed upstream handshakes, indexed like [`UpstreamFailure::ALL`]
    /// (`egress_dlp_tls_upstream_handshake_failures_total{reason}`); read with
    /// [`Stats::upstream_failures`].
    pub upstream_failures: [AtomicU64; 7],
    /// Intercepted CONNECTs that reused a verified upstream connection an earlier CONNECT
    /// of the same client and user left idle, instead of a new TCP connection and TLS
    /// handshake (`egress_dlp_tls_upstream_reused_total`).
    pub upstream_reused: AtomicU64,
    /// Leaf certificates minted (`egress_dlp_tls_leaf_mints_total`).
    pub leaf_mints: AtomicU64,
    /// Leaf certificates that could not be minted (`egress_dlp_tls_leaf_mint_failures_total`).
    pub leaf_mint_failures: AtomicU64,
    /// Leaf lookups answered from the cache (not exported: mints against intercepted
    /// connections tell the same).
    pub leaf_cache_hits: AtomicU64,
    /// Leaf certificates in the cache now, a gauge
    /// (`egress_dlp_tls_leaf_cache_certificates`).
    pub leaf_cache_size: AtomicU64,
}

impl Stats {
    /// Counts one failed client handshake.
    pub fn client_failed(&self, reason: ClientFailure) {
        let i = ClientFailure::ALL.iter().position(|r| *r == reason);
        if let Some(i) = i {
            self.client_failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one failed upstream handshake.
    pub fn upstream_failed(&self, reason: UpstreamFailure) {
        let i = UpstreamFailure::ALL.iter().position(|r| *r == reason);
        if let Some(i) = i {
            self.upstream_failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Failed client handshakes so far, per reason label.
    pub fn client_failures(&self) -> Vec<(&'static str, u64)> {
        ClientFailure::ALL
            .iter()
            .zip(&self.client_failures)
            .map(|(r, n)| (r.label(), n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Failed upstream handshakes so far, per reason label.
    pub fn upstream_failures(&self) -> Vec<(&'static str, u64)> {
        UpstreamFailure::ALL
            .iter()
            .zip(&self.upstream_failures)
            .map(|(r, n)| (r.label(), n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Failed client handshakes for one reason.
    pub fn client_failure_count(&self, reason: ClientFailure) -> u64 {
        self.client_failures()
            .into_iter()
            .find(|(l, _)| *l == reason.label())
            .map_or(0, |(_, n)| n)
    }

    /// Failed upstream handshakes for one reason.
    pub fn upstream_failure_count(&self, reason: UpstreamFailure) -> u64 {
        self.upstream_failures()
            .into_iter()
            .find(|(l, _)| *l == reason.label())
            .map_or(0, |(_, n)| n)
    }
}
