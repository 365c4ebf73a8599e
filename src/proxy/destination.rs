//! Destinations as a tower layer: a request (plain, CONNECT, or inside an intercepted
//! tunnel) to a host in `policy.destinations.blocked` is refused with the
//! blocked-destination page before its body is read or anything is sent upstream; any
//! other request carries its [`Destination`] class in its extensions for the policy.
//!
//! The host is the CONNECT target's, the absolute URL's, or — for origin-form requests
//! inside a tunnel — the `Host` header's, without its port.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::HOST;
use http::{Method, Request, Response};
use tower::{Layer, Service};

use super::auth::{RequestUser, policy_config};
use super::layers::BoxFuture;
use super::{ConnCtx, ProxyBody, ProxyError};
use crate::policy::{Destination, Input};

/// Layer: classifies the destination, refuses blocked ones.
#[derive(Clone)]
pub(super) struct DestinationLayer {
    pub(super) ctx: Arc<ConnCtx>,
}

impl<S> Layer<S> for DestinationLayer {
    type Service = Destinations<S>;

    fn layer(&self, inner: S) -> Destinations<S> {
        Destinations {
            inner,
            ctx: self.ctx.clone(),
        }
    }
}

/// See [`DestinationLayer`].
#[derive(Clone)]
pub(super) struct Destinations<S> {
    inner: S,
    ctx: Arc<ConnCtx>,
}

impl<S, B> Service<Request<B>> for Destinations<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = BoxFuture<Result<Response<ProxyBody>, ProxyError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Brackets hold an IPv6 address and nothing else (RFC 3986; no zone id: it names
        // an interface of this host). `http` takes anything there, and the connector strips
        // the brackets and resolves what is left, so `[localhost]` or `[2130706433]` reached
        // a blocked destination under a name no list matched (found in review).
        if target_host(&req).is_some_and(|host| !bracketed_ipv6_or_none(host)) {
            return Box::pin(async {
                Err(ProxyError::BadRequest(
                    "a host in brackets must be an IPv6 address",
                ))
            });
        }
        let config = policy_config(&self.ctx, &req);
        let destinations = &config.policy.destinations;
        if !destinations.is_empty() {
            let destination = target_host(&req)
                .map(|host| destinations.classify(host))
                .unwrap_or_default();
            if let Destination::Blocked(pattern) = destination {
                let user = req.extensions().get::<RequestUser>().and_then(|u| u.get());
                let request_id = req
                    .extensions()
                    .get::<super::layers::RequestId>()
                    .map_or("-", |id| &id.0);
                let uri = req.uri();
                super::observe::destination_blocked(
                    &self.ctx.shared,
                    request_id,
                    (self.ctx.peer.ip(), user.as_deref()),
                    (
                        req.method(),
                        uri.host().unwrap_or_default(),
                        super::observe::port_of(uri, req.method()),
                    ),
                    &pattern,
                );
                return Box::pin(
                    async move { Err(ProxyError::DestinationBlocked { pattern, user }) },
                );
            }
            req.extensions_mut().insert(destination);
        }
        Box::pin(self.inner.call(req))
    }
}

/// The host a request goes to, without port (IPv6 keeps its brackets).
fn target_host<B>(req: &Request<B>) -> Option<&str> {
    if req.method() == Method::CONNECT {
        return req.uri().authority().map(|a| a.host());
    }
    if let Some(host) = req.uri().host() {
        return Some(host);
    }
    let host = req.headers().get(HOST)?.to_str().ok()?;
    Some(strip_port(host))
}

/// Whether `host` is not in brackets, or is an IPv6 address in them.
fn bracketed_ipv6_or_none(host: &str) -> bool {
    match host.strip_prefix('[') {
        None => !host.contains(']'),
        Some(inner) => inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
    }
}

/// `host:port` -> `host`; `[v6]:port` -> `[v6]`; a bare IPv6 address stays whole.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// The policy input of a request: its user (from the auth layer) and destination class
/// (from this layer), with the user's threshold overrides.
pub(super) fn policy_input<B>(ctx: &ConnCtx, req: &Request<B>) -> Input {
    let user = req.extensions().get::<RequestUser>().and_then(|u| u.get());
    let destination = req
        .extensions()
        .get::<Destination>()
        .cloned()
        .unwrap_or_default();
    policy_config(ctx, req).policy.input(user, destination)
}

#[cfg(test)]
mod tests {
    use super::bracketed_ipv6_or_none;

    #[test]
    fn only_ipv6_addresses_go_in_brackets() {
        for host in [
            "acme.example",
            "127.0.0.1",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "[2001:db8::1]",
        ] {
            assert!(bracketed_ipv6_or_none(host), "{host}");
        }
        for host in [
            "[localhost]",
            "[2130706433]",
            "[::ffff:127.0.0.1%1]",
            "[::1",
            "[]",
            "a]",
        ] {
            assert!(!bracketed_ipv6_or_none(host), "{host}");
        }
    }

    use super::*;

    #[test]
    fn ports_are_stripped_from_host_headers() {
        let cases = [
            ("paste.example", "paste.example"),
            ("paste.example:8080", "paste.example"),
            ("[2001:db8::1]:443", "[2001:db8::1]"),
            ("[2001:db8::1]", "[2001:db8::1]"),
            ("2001:db8::1", "2001:db8::1"),
            ("192.0.2.1:80", "192.0.2.1"),
        ];
        for (host, want) in cases {
            assert_eq!(strip_port(host), want, "{host}");
        }
    }
}
