//! Every way a proxied request can fail, and the one place those failures become HTTP
//! responses.
//!
//! Each [`ProxyError`] variant says where the failure came from — the client, a policy
//! decision, the upstream, or us — and [`ProxyError::status`] / [`ProxyError::kind`] map it
//! to a status code and a stable label. No variant carries a request target, a header value
//! or a body byte: messages are safe to log and to show.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::auth::AuthFailure;
use super::upstream::ConnectError;
use crate::metrics::UpstreamError;
use crate::policy::Verdict;

/// A request the proxy could not (or would not) forward.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Client: the request is not something a forward proxy can act on.
    #[error("client: bad request: {0}")]
    BadRequest(&'static str),
    /// Client: a transfer coding other than `chunked` (RFC 9112 §6.1: 501). Forwarded, the
    /// body would be scanned still encoded and reach the upstream without the header that
    /// says how (found in review).
    /// (The coding is not named: it is the client's text.)
    #[error("client: a transfer coding other than chunked is not supported")]
    TransferCoding,
    /// Client: its address is not in `access.clients`.
    #[error("client: {0} is not allowed to use this proxy")]
    ClientNotAllowed(IpAddr),
    /// Client: CONNECT to a port not in `access.connect_ports`.
    #[error("client: CONNECT to port {0} is not allowed")]
    PortNotAllowed(u16),
    /// Client: a body over `limits.hold_bytes` with `limits.oversize: block`.
    #[error("client: request body is larger than the hold limit of {limit} bytes")]
    BodyTooLarge {
        /// The hold limit.
        limit: u64,
    },
    /// Client: the body arrived slower than `limits.body_min_rate` while held (408).
    #[error("client: the request body arrived slower than {0} bytes per second")]
    SlowBody(u64),
    /// Client: reading the request body failed (the client went away or broke framing).
    #[error("client: reading the request body: {0}")]
    ClientBody(#[source] hyper::Error),
    /// Client: the request is addressed to this proxy's own listener or admin listener.
    #[error("client: request addressed to this proxy itself ({0})")]
    Loop(std::net::SocketAddr),
    /// Client: no valid proxy credentials (407 with the `Proxy-Authenticate` challenge).
    #[error("client: proxy authentication required ({})", auth_failure(.why))]
    AuthRequired {
        /// The challenge's realm.
        realm: String,
        /// Missing, malformed or wrong.
        why: AuthFailure,
    },
    /// Client: too many failed logins from its address or for the user name (429).
    #[error("client: too many failed logins, refused for {0:?}")]
    AuthRateLimited(Duration),
    /// Policy: the destination is in `policy.destinations.blocked`.
    #[error("policy: destination blocked (matches {pattern})")]
    DestinationBlocked {
        /// The blocked pattern the host matched (from the config, not the request).
        pattern: String,
        /// The request's user, shown on the page.
        user: Option<Arc<str>>,
    },
    /// Policy: the findings crossed a block threshold.
    #[error("policy: blocked ({})", .0.summary())]
    Blocked(Box<Blocked>),
    /// Policy: part of the request could not be inspected (a decoding limit, corrupt or
    /// unsupported encoding) and `policy.on_inspection_error` is `block`.
    #[error("policy: not inspected ({})", .0.reason.as_str())]
    NotInspected(Box<NotInspected>),
    /// Upstream: the host name does not resolve.
    #[error("upstream: cannot resolve the host name")]
    UpstreamDns,
    /// Upstream: the connection was refused or failed.
    #[error("upstream: cannot connect: {0}")]
    UpstreamConnect(String),
    /// Upstream: no connection within `limits.upstream_connect_timeout`.
    #[error("upstream: no connection within {0:?}")]
    UpstreamConnectTimeout(Duration),
    /// Upstream: no response within `limits.upstream_response_timeout`.
    #[error("upstream: no response within {0:?}")]
    UpstreamTimeout(Duration),
    /// Upstream: the connection broke or the response was not valid HTTP.
    #[error("upstream: {0}")]
    Upstream(String),
    /// Upstream: TLS to the site failed (its certificate did not verify, or the handshake
    /// broke) on an intercepted connection.
    #[error("upstream: {0}")]
    UpstreamTls(crate::tls::UpstreamTlsError),
    /// Us: the hold budget (`limits.hold_total`) stayed spent for `limits.hold_wait`.
    #[error("proxy: busy: no room to hold the request body within {0:?}")]
    Busy(Duration),
    /// Us: a failure inside the proxy.
    #[error("proxy: {0}")]
    Internal(String),
    /// Us: the request needs an audit event that cannot be recorded, and `audit.required`
    /// says not to pass it unrecorded.
    #[error("proxy: audit log unavailable: {0}")]
    AuditUnavailable(crate::audit::Unrecorded),
}

/// What a block decision shows: categories and distinct counts, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// (category, distinct values) for each category that crossed a block threshold.
    pub categories: Vec<(String, u64)>,
    /// Rule ids that crossed a block threshold.
    pub rules: Vec<String>,
    /// The block was decided part-way through a body over the hold limit: part of it had
    /// already gone upstream (as a request that never completes), and the counts are those
    /// found up to that point, a lower bound.
    pub partial: bool,
    /// The request's user, shown on the page (theirs only).
    pub user: Option<String>,
}

fn auth_failure(why: &AuthFailure) -> String {
    match why {
        AuthFailure::Missing => "no credentials".into(),
        AuthFailure::Malformed(e) => e.to_string(),
        AuthFailure::Invalid => "unknown user or wrong password".into(),
    }
}

impl Blocked {
    /// Builds the block summary from a verdict (only the reasons that block); `partial` as
    /// in [`Blocked::partial`].
    pub fn from_verdict(verdict: &Verdict, partial: bool) -> Blocked {
        let mut categories: Vec<(String, u64)> = Vec::new();
        let mut rules = Vec::new();
        for r in verdict
            .reasons
            .iter()
            .filter(|r| r.action == crate::policy::Action::Block)
        {
            rules.push(r.rule.clone());
            match categories.iter_mut().find(|(c, _)| *c == r.category) {
                Some((_, d)) => *d = (*d).max(r.distinct),
                None => categories.push((r.category.clone(), r.distinct)),
            }
        }
        Blocked {
            categories,
            rules,
            partial,
            user: verdict.user.clone(),
        }
    }

    /// `email: 12 distinct, card: 10 distinct` for log lines.
    pub fn summary(&self) -> String {
        self.categories
            .iter()
            .map(|(c, d)| format!("{c}: {d} distinct"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A request refused because it could not be fully inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotInspected {
    /// Why.
    pub reason: crate::decode::Reason,
    /// Part of the body had already gone upstream (as a request that never completes).
    pub partial: bool,
}

impl From<&ConnectError> for ProxyError {
    fn from(e: &ConnectError) -> ProxyError {
        match e {
            ConnectError::Dns(_) | ConnectError::NoAddress => ProxyError::UpstreamDns,
            ConnectError::Timeout(d) => ProxyError::UpstreamConnectTimeout(*d),
            ConnectError::Loop(addr) => ProxyError::Loop(*addr),
            e @ (ConnectError::Refused(_) | ConnectError::Io(..)) => {
                ProxyError::UpstreamConnect(e.to_string())
            }
        }
    }
}

impl ProxyError {
    /// The status code the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::SlowBody(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::ClientNotAllowed(_)
            | ProxyError::PortNotAllowed(_)
            | ProxyError::Loop(_)
            | ProxyError::Blocked(_)
            | ProxyError::DestinationBlocked { .. } => StatusCode::FORBIDDEN,
            ProxyError::AuthRequired { .. } => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ProxyError::AuthRateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::NotInspected(_) => StatusCode::FORBIDDEN,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UpstreamDns
            | ProxyError::UpstreamConnect(_)
            | ProxyError::Upstream(_)
            | ProxyError::UpstreamTls(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamConnectTimeout(_) | ProxyError::UpstreamTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::Busy(_) | ProxyError::AuditUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::TransferCoding => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// A stable label for logs and metrics (`client_not_allowed`, `upstream_timeout`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::TransferCoding => "transfer_coding",
            ProxyError::ClientNotAllowed(_) => "client_not_allowed",
            ProxyError::PortNotAllowed(_) => "port_not_allowed",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::ClientBody(_) => "client_body",
            ProxyError::SlowBody(_) => "slow_body",
            ProxyError::Loop(_) => "loop",
            ProxyError::Blocked(_) => "blocked",
            ProxyError::AuthRequired { .. } => "auth_required",
            ProxyError::AuthRateLimited(_) => "auth_rate_limited",
            ProxyError::DestinationBlocked { .. } => "destination_blocked",
            ProxyError::NotInspected(_) => "not_inspected",
            ProxyError::UpstreamDns => "upstream_dns",
            ProxyError::UpstreamConnect(_) => "upstream_connect",
            ProxyError::UpstreamConnectTimeout(_) => "upstream_connect_timeout",
            ProxyError::UpstreamTimeout(_) => "upstream_timeout",
            ProxyError::Upstream(_) => "upstream",
            ProxyError::UpstreamTls(_) => "upstream_tls",
            ProxyError::Busy(_) => "busy",
            ProxyError::Internal(_) => "internal",
            ProxyError::AuditUnavailable(_) => "audit_unavailable",
        }
    }

    /// The `egress_dlp_upstream_errors_total{kind}` label, for upstream failures.
    pub fn upstream_error(&self) -> Option<UpstreamError> {
        match self {
            ProxyError::UpstreamDns => Some(UpstreamError::Dns),
            ProxyError::UpstreamConnect(_) => Some(UpstreamError::Connect),
            ProxyError::UpstreamConnectTimeout(_) => Some(UpstreamError::ConnectTimeout),
            ProxyError::UpstreamTimeout(_) => Some(UpstreamError::Timeout),
            ProxyError::Upstream(_) => Some(UpstreamError::Protocol),
            ProxyError::UpstreamTls(_) => Some(UpstreamError::Tls),
            _ => None,
        }
    }

    /// Whether the client connection is closed after the response (the client broke the
    /// protocol, is refused outright, or left a body unread).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::TransferCoding
                | ProxyError::ClientBody(_)
                | ProxyError::SlowBody(_)
                | ProxyError::ClientNotAllowed(_)
                | ProxyError::BodyTooLarge { .. }
                | ProxyError::Busy(_)
                | ProxyError::AuthRateLimited(_)
        )
    }

    /// Page title: what happened, in a few words.
    pub fn title(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) | ProxyError::ClientBody(_) => "Bad request",
            ProxyError::SlowBody(_) => "Upload too slow",
            ProxyError::TransferCoding => "Transfer coding not supported",
            ProxyError::ClientNotAllowed(_) => "Proxy access denied",
            ProxyError::PortNotAllowed(_) => "Destination port not allowed",
            ProxyError::BodyTooLarge { .. } => "Upload too large to inspect",
            ProxyError::Loop(_) => "Request addressed to the proxy itself",
            ProxyError::Blocked(_) => "Request blocked: it contains sensitive data",
            ProxyError::AuthRequired { .. } => "Proxy authentication required",
            ProxyError::AuthRateLimited(_) => "Too many failed logins",
            ProxyError::DestinationBlocked { .. } => "Destination blocked",
            ProxyError::NotInspected(_) => "Request blocked: its content could not be inspected",
            ProxyError::UpstreamDns => "Unknown host",
            ProxyError::UpstreamConnect(_) => "Cannot reach the site",
            ProxyError::UpstreamConnectTimeout(_) => "The site did not accept a connection in time",
            ProxyError::UpstreamTimeout(_) => "The site did not answer in time",
            ProxyError::Upstream(_) => "The site's answer was broken",
            ProxyError::UpstreamTls(_) => "The site's identity could not be verified",
            ProxyError::Busy(_) => "The proxy is busy",
            ProxyError::Internal(_) => "Proxy error",
            ProxyError::AuditUnavailable(_) => "The proxy cannot record this request",
        }
    }

    /// The user the page is shown to (blocks only; a page never names anyone else).
    pub fn user(&self) -> Option<&str> {
        match self {
            ProxyError::Blocked(b) => b.user.as_deref(),
            ProxyError::DestinationBlocked { user, .. } => user.as_deref(),
            _ => None,
        }
    }

    /// One sentence for the person reading the page.
    pub fn message(&self) -> String {
        match self {
            ProxyError::BadRequest(why) => format!("The proxy could not use this request: {why}."),
            ProxyError::ClientBody(_) => "The request body could not be read.".into(),
            ProxyError::SlowBody(rate) => format!(
                "The upload arrived slower than {rate} bytes per second, the least this proxy \
                 waits for while it holds an upload for inspection. Nothing was sent."
            ),
            ProxyError::TransferCoding => {
                "The request body was sent with a transfer coding this proxy does not \
                 support (only chunked): it could not be inspected."
                    .into()
            }
            ProxyError::ClientNotAllowed(ip) => {
                format!("Your address {ip} is not allowed to use this proxy.")
            }
            ProxyError::PortNotAllowed(port) => {
                format!("Tunnels to port {port} are not allowed through this proxy.")
            }
            ProxyError::BodyTooLarge { limit } => format!(
                "The request body is larger than {limit} bytes, the most this proxy inspects."
            ),
            ProxyError::Loop(_) => {
                "The request was addressed to this proxy rather than through it.".into()
            }
            ProxyError::Blocked(b) if b.partial => {
                "This upload carries customer data or secrets in a quantity that this \
                 company's policy does not allow to leave. It was stopped before its end: \
                 the site did not receive a complete request."
                    .into()
            }
            ProxyError::Blocked(_) => {
                "This request carries customer data or secrets in a quantity that this \
                 company's policy does not allow to leave. Nothing was sent."
                    .into()
            }
            ProxyError::AuthRequired { why, .. } => match why {
                AuthFailure::Missing => "This proxy needs your user name and password.".into(),
                AuthFailure::Malformed(_) => {
                    "The proxy credentials your client sent could not be read.".into()
                }
                AuthFailure::Invalid => "The user name or password is not right.".into(),
            },
            ProxyError::AuthRateLimited(d) => format!(
                "Too many failed logins from your address or for this user name. Try again in {} s.",
                d.as_secs().max(1)
            ),
            ProxyError::DestinationBlocked { pattern, .. } => format!(
                "This site is on the company's list of blocked destinations ({pattern}): \
                 nothing may be sent to it through this proxy. Nothing was sent."
            ),
            ProxyError::NotInspected(n) => format!(
                "The content of this request could not be inspected: {}. This company's \
                 policy does not allow content that cannot be inspected to leave. {}",
                n.reason.describe(),
                if n.partial {
                    "It was stopped before its end: the site did not receive a complete request."
                } else {
                    "Nothing was sent."
                }
            ),
            ProxyError::UpstreamDns => "The host name of the site does not resolve (DNS).".into(),
            ProxyError::UpstreamConnect(_) => {
                "The site refused the connection or could not be reached.".into()
            }
            ProxyError::UpstreamConnectTimeout(d) => format!(
                "The site did not accept a connection within {}.",
                humantime::format_duration(*d)
            ),
            ProxyError::UpstreamTimeout(d) => format!(
                "The site did not start answering within {}.",
                humantime::format_duration(*d)
            ),
            ProxyError::Upstream(_) => {
                "The site closed the connection or sent an answer that is not valid HTTP.".into()
            }
            ProxyError::UpstreamTls(e) => format!(
                "The secure connection to the site failed: {e}. The proxy does not pass \
                 such a site off as trusted."
            ),
            ProxyError::Busy(_) => {
                "Too many uploads are being inspected at once. Try again in a moment.".into()
            }
            ProxyError::Internal(_) => "The proxy failed while handling this request.".into(),
            ProxyError::AuditUnavailable(_) => {
                "This company's policy requires every inspected request of this kind to be \
                 recorded, and the proxy's audit log cannot be written right now. Nothing was \
                 sent. Try again later."
                    .into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn each_error_maps_to_one_status_and_label() {
        let addr: std::net::SocketAddr = "127.0.0.1:3128".parse().unwrap();
        let blocked = Blocked {
            categories: vec![("email".into(), 12)],
            rules: vec!["email".into()],
            partial: false,
            user: None,
        };
        let io = || io::Error::other("x");
        let cases: Vec<(ProxyError, u16, &str)> = vec![
            (ProxyError::BadRequest("x"), 400, "bad_request"),
            (ProxyError::TransferCoding, 501, "transfer_coding"),
            (
                ProxyError::ClientNotAllowed(addr.ip()),
                403,
                "client_not_allowed",
            ),
            (ProxyError::PortNotAllowed(25), 403, "port_not_allowed"),
            (ProxyError::BodyTooLarge { limit: 1 }, 413, "body_too_large"),
            (ProxyError::Loop(addr), 403, "loop"),
            (ProxyError::Blocked(Box::new(blocked)), 403, "blocked"),
            (
                ProxyError::AuthRequired {
                    realm: "r".into(),
                    why: AuthFailure::Missing,
                },
                407,
                "auth_required",
            ),
            (
                ProxyError::AuthRateLimited(Duration::from_secs(3)),
                429,
                "auth_rate_limited",
            ),
            (
                ProxyError::DestinationBlocked {
                    pattern: "*.paste.example".into(),
                    user: None,
                },
                403,
                "destination_blocked",
            ),
            (
                ProxyError::NotInspected(Box::new(NotInspected {
                    reason: crate::decode::Reason::Ratio,
                    partial: false,
                })),
                403,
                "not_inspected",
            ),
            ((&ConnectError::Dns(io())).into(), 502, "upstream_dns"),
            ((&ConnectError::NoAddress).into(), 502, "upstream_dns"),
            (
                (&ConnectError::Refused(addr)).into(),
                502,
                "upstream_connect",
            ),
            (
                (&ConnectError::Io(addr, io())).into(),
                502,
                "upstream_connect",
            ),
            (
                (&ConnectError::Timeout(Duration::from_secs(1))).into(),
                504,
                "upstream_connect_timeout",
            ),
            ((&ConnectError::Loop(addr)).into(), 403, "loop"),
            (
                ProxyError::UpstreamTimeout(Duration::from_secs(1)),
                504,
                "upstream_timeout",
            ),
            (ProxyError::Upstream("x".into()), 502, "upstream"),
            (ProxyError::Busy(Duration::from_secs(1)), 503, "busy"),
            (ProxyError::Internal("x".into()), 500, "internal"),
            (
                ProxyError::AuditUnavailable(crate::audit::Unrecorded::SinkDown),
                503,
                "audit_unavailable",
            ),
            (
                ProxyError::UpstreamTls(crate::tls::UpstreamTlsError::Handshake("x".into())),
                502,
                "upstream_tls",
            ),
        ];
        for (err, status, kind) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.kind(), kind, "{err}");
            assert!(!err.title().is_empty() && !err.message().is_empty());
        }
    }
}
