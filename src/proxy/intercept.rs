//! An intercepted CONNECT: the client's TLS ends here, with a certificate minted by the
//! corporate CA, and every request inside goes through the same pipeline as plain HTTP
//! (`layers::stack`: request id, error and block pages, inspection, forwarding) to an
//! upstream reached over verified TLS.
//!
//! Steps, each bounded by `tls.handshake_timeout` where it waits on a peer:
//!
//! 1. read the ClientHello (SNI, ALPN); a server name other than the CONNECT host is
//!    scanned with it first (`forward::judge_name`: a block refuses the connection's
//!    requests with the block page and nothing goes upstream); a server name in
//!    `tls.bypass` turns the CONNECT into a blind tunnel (the hello is replayed to the
//!    upstream), logged by host; bytes that are not TLS, or ALPN offering only protocols
//!    other than HTTP, end the connection (counted: nothing uninspectable passes a tunnel
//!    meant to be inspected);
//! 2. handshake with the upstream first (`tls::UpstreamTls`, never unverified), offering
//!    the client's HTTP protocols;
//! 3. finish the client's handshake with the leaf for its server name (or the IP), offering
//!    the protocol the upstream chose. If the upstream failed verification the client's
//!    handshake still completes, and every request gets a 502 page that says why: a
//!    certificate error is never hidden behind a valid-looking minted one;
//! 4. serve HTTP/1.1 or HTTP/2 (by ALPN). Requests are checked against the connection's
//!    server name (no domain fronting through one verified connection), made absolute
//!    (`https://name[:port]/path`) and tagged with the connection's [`Origin`], which
//!    `forward` uses instead of the pooled plain-HTTP client.
//!
//! The [`Origin`] keeps the upstream connection made in step 2 (HTTP/2: one, multiplexed;
//! HTTP/1.1: a few, one request at a time each) and reconnects, verified again, when the
//! upstream closes it. When the client connection ends, those connections go to the pool
//! of `origins`: the next CONNECT of the same client and user to the same host and port,
//! for the same server name and ALPN offer, starts with one of them instead of step 2 (no
//! TCP connect, no upstream handshake; it was verified when it was made).

use std::convert::Infallible;

use std::io;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1 as client1, http2 as client2};
use hyper::service::service_fn;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tower::Service;
use tracing::{debug, info, warn};

use super::error::ProxyError;
use super::idle::{Activity, IdleIo};
use super::origins::{OriginPool, PoolKey, Pooled};
use super::upstream::{
    BodyAborted, Connector, RESPONSE_HEADER_BYTES, RESPONSE_HEADER_FIELDS, UpstreamBody,
    UpstreamClient,
};
use super::{ConnCtx, layers, page};
use crate::metrics::{NotScanned, TlsOutcome};
use crate::tls::hello::{self, ALPN_H2, Prefixed};
use crate::tls::{ClientFailure, Interceptor, LeafName, UpstreamTlsError};

/// Idle upstream HTTP/1.1 connections kept per intercepted client connection (an HTTP/2
/// client may have several requests in flight to an HTTP/1.1-only upstream).
const H1_IDLE_PER_CONNECTION: usize = 4;

/// Most concurrent streams an intercepted HTTP/2 client may open.
const H2_MAX_STREAMS: u32 = 100;

/// Most concurrent streams when the upstream is not known to speak HTTP/2: each stream in
/// flight takes an HTTP/1.1 connection of its own upstream, and 100 streams were 100 TCP
/// connections and verified handshakes from one client connection (found in review). Six
/// is what browsers open to one HTTP/1.1 server.
const H2_STREAMS_OVER_H1: u32 = 6;

/// Where a CONNECT goes: host (as the client wrote it) and port.
pub(super) struct Target {
    pub(super) host: String,
    pub(super) port: u16,
    /// The CONNECT's request id (for the audit event of a bypass by server name).
    pub(super) request_id: String,
}

/// What a CONNECT to be intercepted starts with on the upstream side.
pub(super) enum Upstream {
    /// A new TCP connection (the TLS handshake comes next).
    Tcp(TcpStream),
    /// A verified connection an earlier CONNECT of the same client left in the pool (see
    /// `origins`); used when it fits the ClientHello, else returned and a TCP connection made.
    Pooled(Pooled),
}

/// How the upstream side of an intercepted connection begins.
enum Start {
    /// With a pooled verified connection.
    Reuse(Pooled),
    /// With the TLS handshake on a new TCP connection.
    Handshake(TcpStream),
    /// Without a connection: the pooled one did not fit and a new one failed.
    Unreachable,
    /// No upstream at all: the server name was refused (see [`State::Refused`]).
    Refused(Box<super::error::Blocked>),
}

/// Takes over a CONNECT whose upstream is reachable (a new TCP connection, or a pooled
/// verified one) and whose 200 is on its way: runs the interception in a task of its own
/// (see the module docs).
pub(super) fn start(
    ctx: &ConnCtx,
    tls: Arc<Interceptor>,
    client: OnUpgrade,
    upstream: Upstream,
    target: Target,
    user: Option<Arc<str>>,
) {
    let inner = Arc::new(ConnCtx {
        shared: ctx.shared.clone(),
        peer: ctx.peer,
        activity: Activity::new(),
        allowed: ctx.allowed,
        // The client socket is the same: a block page sent before the end of an upload
        // inside TLS needs the same lingering close.
        unread: ctx.unread.clone(),
        phase: ctx.phase.clone(),
        guard: ctx.guard.clone(),
    });
    tokio::spawn(async move {
        let client = match client.await {
            Ok(client) => client,
            Err(e) => {
                inner
                    .shared
                    .metrics
                    .tls_interception(TlsOutcome::ClientFailed);
                debug!(error = %e, "CONNECT: the client connection was not handed over");
                return;
            }
        };
        intercept(inner, tls, client, upstream, target, user).await;
    });
}

/// Whether a server name on `tls.bypass` may bypass a CONNECT to `host`: only when `host`
/// is an IP address the name resolves to (a client that connects by address). A CONNECT
/// by name was matched against the list already; any other pairing is a name chosen to
/// pass (`CONNECT paste.example` with a bank's name in the ClientHello), and is
/// intercepted like any other — the upstream's certificate is then checked against that
/// name, so a server that is not the bank fails there.
async fn names_the_address(name: &str, host: &str, port: u16, timeout: Duration) -> bool {
    let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    else {
        return false;
    };
    match tokio::time::timeout(timeout, tokio::net::lookup_host((name, port))).await {
        Ok(Ok(mut addrs)) => addrs.any(|a| a.ip() == ip),
        _ => false,
    }
}

async fn intercept(
    ctx: Arc<ConnCtx>,
    tls: Arc<Interceptor>,
    client: Upgraded,
    upstream: Upstream,
    target: Target,
    user: Option<Arc<str>>,
) {
    let peer = ctx.peer;
    let host_owned = target.host.clone();
    let host = host_owned.as_str();
    let stats = tls.stats().clone();
    let timeout = tls.handshake_timeout();
    let mut client = IdleIo::new(TokioIo::new(client), ctx.activity.clone());

    let metrics = &ctx.shared.metrics;
    let hello = match tokio::time::timeout(timeout, hello::read(&mut client)).await {
        Ok(Ok(hello)) => hello,
        Ok(Err(reason)) => {
            return client_failed(&ctx, &tls, reason, peer, host, "no TLS ClientHello");
        }
        Err(_) => {
            let reason = ClientFailure::Timeout;
            return client_failed(&ctx, &tls, reason, peer, host, "no ClientHello");
        }
    };
    let sni = hello.server_name.clone();
    // A server name other than the CONNECT's host (judged before the connect) goes out in
    // the upstream handshake, and in the lookup a bypass by name makes: judged first,
    // together with the host (values in each count together), and by the default policy
    // whatever the name's destination class (the handshake goes to the CONNECT's address,
    // not to a sanctioned name's: found in review). Refused, no byte goes to the upstream
    // (the TCP connection made for the CONNECT is closed unused) and every request inside
    // gets the block page.
    let refused = match sni.as_deref().filter(|n| !n.eq_ignore_ascii_case(host)) {
        None => None,
        Some(server_name) => {
            let live = ctx.shared.live.get();
            let input = live
                .config
                .policy
                .input(user.clone(), crate::policy::Destination::Default);
            let uri = format!("{server_name}:{}", target.port)
                .parse()
                .unwrap_or_else(|_| Uri::from_static("invalid.invalid:443"));
            let judged = super::forward::judge_name(
                &ctx,
                &live,
                input,
                (&target.request_id, None),
                uri,
                &[host, server_name],
            );
            match judged {
                Ok(()) => None,
                Err(ProxyError::Blocked(blocked)) => Some(blocked),
                Err(e) => {
                    metrics.tls_interception(TlsOutcome::ClientFailed);
                    warn!(%peer, host, error = %e, "server name not judged: connection closed");
                    return;
                }
            }
        }
    };
    let pool = ctx.shared.origins.clone();
    let key = PoolKey::new(peer.ip(), user.clone(), host, target.port);
    // A server name on the blocked list is never bypassed, whatever `tls.bypass` says:
    // intercepted, its requests get the destination's refusal (found in review: a bypass
    // by name opened a blind tunnel to a blocked host reached by its address).
    let blocked_name = |name: &str| {
        matches!(
            ctx.shared
                .live
                .get()
                .config
                .policy
                .destinations
                .classify(name),
            crate::policy::Destination::Blocked(_)
        )
    };
    let bypass = match sni
        .as_deref()
        .filter(|name| refused.is_none() && tls.bypassed(name) && !blocked_name(name))
    {
        Some(name) => names_the_address(name, host, target.port, timeout).await,
        None => false,
    };
    if let Some(name) = sni.as_deref().filter(|_| bypass) {
        // The audit event names the bypassed server (checked above to resolve to the
        // CONNECT's address): an address alone told the reader nothing of why it passed.
        let opened = super::observe::tunnel_opened(
            &ctx.shared,
            &target.request_id,
            (peer.ip(), name, target.port),
            user.as_deref(),
            NotScanned::TlsBypass,
        );
        if let Err(e) = opened {
            // `audit.required` and no audit: nothing passes unrecorded, and the CONNECT
            // counts as the server-name verdict that could not be recorded does.
            metrics.tls_interception(TlsOutcome::ClientFailed);
            info!(%peer, host, error = %e, "bypass tunnel not recorded: closed");
            return;
        }
        stats
            .bypassed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics.tls_interception(TlsOutcome::Bypassed);
        info!(%peer, host, port = target.port, sni = name, "CONNECT bypassed by server name (tls.bypass): blind tunnel");
        let tcp = match upstream {
            Upstream::Tcp(tcp) => tcp,
            Upstream::Pooled(pooled) => {
                pool.put(&key, pooled);
                match ctx.shared.connector.connect(host, target.port).await {
                    Ok(tcp) => tcp,
                    Err(e) => {
                        info!(%peer, host, error = %e, "bypass tunnel: cannot connect, closed");
                        return;
                    }
                }
            }
        };
        return blind(&ctx, client, tcp, hello.bytes).await;
    }
    let Some(offer) = hello::upstream_offer(&hello.alpn) else {
        return client_failed(
            &ctx,
            &tls,
            ClientFailure::UnsupportedAlpn,
            peer,
            host,
            "the client offers no HTTP protocol",
        );
    };
    let name = LeafName::new(sni.as_deref(), host);
    // How log lines name it: never a refused name, whose labels are what was refused.
    let shown = match refused {
        Some(_) => "(a refused server name)".to_owned(),
        None => name.to_string(),
    };
    // The upstream first: its answer decides the protocol offered to the client.
    let origin_base = OriginBase {
        tls: tls.clone(),
        connector: ctx.shared.connector.clone(),
        target,
        name: name.clone(),
        offer: offer.clone(),
        pool: pool.clone(),
        key: key.clone(),
    };
    let start = match (upstream, refused) {
        (Upstream::Pooled(pooled), Some(blocked)) => {
            pool.put(&key, pooled);
            Start::Refused(blocked)
        }
        (Upstream::Tcp(_), Some(blocked)) => Start::Refused(blocked),
        (Upstream::Pooled(pooled), None) if pooled.fits(&name, &offer) => Start::Reuse(pooled),
        (Upstream::Pooled(pooled), None) => {
            // Made for another server name or ALPN offer: back for a CONNECT it fits, and
            // one that fits this one, or a new one.
            pool.put(&key, pooled);
            match pool.take_fitting(&key, &name, &offer) {
                Some(pooled) => Start::Reuse(pooled),
                None => {
                    let base = &origin_base;
                    match base
                        .connector
                        .connect(&base.target.host, base.target.port)
                        .await
                    {
                        Ok(tcp) => Start::Handshake(tcp),
                        Err(e) => {
                            debug!(%peer, host = %shown, error = %e, "cannot connect: requests will try again");
                            Start::Unreachable
                        }
                    }
                }
            }
        }
        (Upstream::Tcp(tcp), None) => Start::Handshake(tcp),
    };
    let mut upstream_failed = false;
    let (origin, chosen) = match start {
        Start::Reuse(pooled) => {
            stats
                .upstream_reused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let chosen = pooled.alpn().map(<[u8]>::to_vec);
            debug!(host = %shown, ?chosen, "upstream connection reused from the pool");
            (Origin::pooled(origin_base, pooled.sender), chosen)
        }
        // Each request connects (and verifies) anew, and gets the 502 or 504 page if the
        // upstream is still unreachable.
        Start::Unreachable => (Origin::new(origin_base, State::empty()), None),
        Start::Refused(blocked) => (Origin::new(origin_base, State::Refused(blocked)), None),
        Start::Handshake(tcp) => match tls.upstream().connect(tcp, &name, &offer).await {
            Ok((stream, chosen)) => {
                let h2 = chosen.as_deref() == Some(ALPN_H2);
                debug!(host = %shown, handshake = ?stream.get_ref().1.handshake_kind(), h2, "upstream TLS established");
                (Origin::live(origin_base, stream, h2).await, chosen)
            }
            Err(e) => {
                stats.upstream_failed(e.reason());
                upstream_failed = true;
                warn!(%peer, host = %shown, error = %e, "upstream TLS failed: requests get a 502 page");
                (Origin::failed(origin_base, e), None)
            }
        },
    };
    let client_alpn = hello::client_choice(&hello.alpn, chosen.as_deref());

    let leaf = match tls.leaf(&name).await {
        Ok(leaf) => leaf,
        Err(e) => {
            metrics.tls_interception(TlsOutcome::ClientFailed);
            warn!(%peer, host = %shown, error = %e, "cannot mint a certificate: connection closed");
            return;
        }
    };
    let config = match tls.server_config(leaf, client_alpn.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            metrics.tls_interception(TlsOutcome::ClientFailed);
            warn!(error = %e, "TLS server configuration refused: connection closed");
            return;
        }
    };
    let accept = async {
        let start = LazyConfigAcceptor::new(
            rustls::server::Acceptor::default(),
            Prefixed::new(hello.bytes, client),
        )
        .await?;
        start.into_stream(config).await
    };
    let stream = match tokio::time::timeout(timeout, accept).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let reason = client_failure(&e);
            debug!(%peer, host = %shown, error = %e, "client TLS handshake failed");
            return client_failed(
                &ctx,
                &tls,
                reason,
                peer,
                host,
                "client TLS handshake failed",
            );
        }
        Err(_) => {
            return client_failed(
                &ctx,
                &tls,
                ClientFailure::Timeout,
                peer,
                host,
                "client TLS handshake",
            );
        }
    };
    stats
        .intercepted
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // One outcome per CONNECT, once both handshakes are settled: inspected inside (the
    // upstream's handshake done, or left to each request), or every request answered 502.
    metrics.tls_interception(if upstream_failed {
        TlsOutcome::UpstreamFailed
    } else {
        TlsOutcome::Intercepted
    });
    let h2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
    debug!(%peer, host = %shown, h2, "intercepting");
    let streams = if chosen.as_deref() == Some(ALPN_H2) {
        H2_MAX_STREAMS
    } else {
        H2_STREAMS_OVER_H1
    };
    serve(ctx, TokioIo::new(stream), origin, (h2, streams), user).await;
}

/// The client's handshake with the proxy did not complete: counted (the CONNECT's outcome,
/// and the reason) and logged.
fn client_failed(
    ctx: &ConnCtx,
    tls: &Interceptor,
    reason: ClientFailure,
    peer: std::net::SocketAddr,
    host: &str,
    what: &str,
) {
    tls.stats().client_failed(reason);
    let metrics = &ctx.shared.metrics;
    metrics.tls_interception(TlsOutcome::ClientFailed);
    metrics.tls_client_handshake_failed(reason);
    info!(%peer, host, reason = reason.label(), "{what}: intercepted connection closed");
}

/// Why a client's handshake failed, from the error tokio-rustls returned.
fn client_failure(err: &io::Error) -> ClientFailure {
    use rustls::AlertDescription as A;
    match err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(
            A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::AccessDenied,
        )) => ClientFailure::Untrusted,
        Some(_) => ClientFailure::Protocol,
        None => match err.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => ClientFailure::Closed,
            _ => ClientFailure::Protocol,
        },
    }
}

/// A blind tunnel for a bypassed server name: the ClientHello already read goes first.
async fn blind(
    ctx: &ConnCtx,
    mut client: IdleIo<TokioIo<Upgraded>>,
    upstream: TcpStream,
    hello: Vec<u8>,
) {
    let activity = ctx.activity.clone();
    let mut upstream = IdleIo::new(upstream, activity.clone());
    if upstream.write_all(&hello).await.is_err() {
        return;
    }
    let mut phase = ctx.phase.clone();
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Ok((up, down)) = copied {
                debug!(up, down, "bypass tunnel closed");
            }
        }
        _ = activity.idle(ctx.shared.config.limits.idle_timeout) => debug!("bypass tunnel idle, closed"),
        _ = super::stopped(&mut phase) => debug!("bypass tunnel cut at the end of the drain time"),
    }
}

/// Serves HTTP/1.1 or HTTP/2 on the client's TLS stream until it ends, the connection is
/// idle for `limits.idle_timeout`, or the server stops (graceful on drain). HTTP/2 takes at
/// most `streams` streams at once (fewer when the upstream speaks HTTP/1.1).
async fn serve<I>(
    ctx: Arc<ConnCtx>,
    io: I,
    origin: Origin,
    (h2, streams): (bool, u32),
    user: Option<Arc<str>>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let stack = layers::stack(ctx.clone());
    let service_ctx = ctx.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let mut stack = stack.clone();
        let origin = origin.clone();
        let ctx = service_ctx.clone();
        let user = user.clone();
        async move {
            let mut req = match retarget(req, &origin) {
                Ok(req) => req,
                Err((err, json)) => {
                    let id = ctx.shared.request_ids.next();
                    info!(request_id = id, peer = %ctx.peer, kind = err.kind(), error = %err, "request refused");
                    // Counted like any request refused before a verdict (found in review:
                    // these never reached `egress_dlp_requests_total`).
                    ctx.shared
                        .metrics
                        .request(crate::metrics::Outcome::Refused, Duration::ZERO);
                    // The contact line in force now, not the one at start (found in review).
                    let live = ctx.shared.live.get();
                    return Ok::<_, Infallible>(page::error_response(
                        &err,
                        &id,
                        json,
                        &live.config.block_page.contact,
                    ));
                }
            };
            // The user the CONNECT authenticated as (browsers send credentials there).
            req.extensions_mut()
                .insert(super::auth::InheritedUser(user.clone()));
            std::future::poll_fn(|cx| stack.poll_ready(cx)).await?;
            stack.call(req).await
        }
    });
    let limits = &ctx.shared.config.limits;
    let idle_timeout = limits.idle_timeout;
    if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(streams);
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        super::drive(
            &ctx,
            conn,
            |c| c.graceful_shutdown(),
            idle_timeout,
            "intercepted connection",
        )
        .await;
    } else {
        let conn = ctx
            .shared
            .http1
            .serve_connection(io, service)
            .with_upgrades();
        tokio::pin!(conn);
        super::drive(
            &ctx,
            conn,
            |c| c.graceful_shutdown(),
            idle_timeout,
            "intercepted connection",
        )
        .await;
    }
}

/// Checks a request inside the intercepted connection and makes its target absolute
/// (`https://name[:port]/path?query`), tagged with the connection's [`Origin`].
fn retarget(
    req: Request<Incoming>,
    origin: &Origin,
) -> Result<Request<Incoming>, (ProxyError, bool)> {
    let json = page::prefers_json(req.headers());
    if req.method() == http::Method::CONNECT {
        return Err((
            ProxyError::BadRequest("CONNECT inside an intercepted connection"),
            json,
        ));
    }
    let (mut parts, body) = req.into_parts();
    // The host the request names (HTTP/2 :authority, or Host) must be the server this
    // connection was verified for.
    let named = parts.uri.host().map(str::to_owned).or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<Authority>().ok())
            .map(|a| a.host().to_owned())
    });
    let base = &origin.0.base;
    if let Some(named) = named {
        if LeafName::new(Some(&named), &named) != base.name {
            return Err((
                ProxyError::BadRequest(
                    "the request names another host than the TLS connection it came on",
                ),
                json,
            ));
        }
    }
    let authority = origin.0.authority.clone();
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let uri = Uri::builder()
        .scheme(Scheme::HTTPS)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| {
            (
                ProxyError::BadRequest("the request target is not valid"),
                json,
            )
        })?;
    parts.uri = uri;
    parts.extensions.insert(origin.clone());
    Ok(Request::from_parts(parts, body))
}

/// Sends a forwarded request: over the intercepted connection's [`Origin`] when it came
/// through one, else through the pooled plain-HTTP client.
pub(super) async fn send(
    client: &UpstreamClient,
    request: Request<UpstreamBody>,
) -> Result<Response<Incoming>, ProxyError> {
    match request.extensions().get::<Origin>().cloned() {
        Some(origin) => origin.send(request).await,
        None => {
            let mut request = request;
            super::forward::name_te_in_connection(request.headers_mut());
            client
                .request(request)
                .await
                .map_err(super::upstream::classify)
        }
    }
}

/// What an [`Origin`] needs to (re)connect.
struct OriginBase {
    tls: Arc<Interceptor>,
    connector: Connector,
    target: Target,
    name: LeafName,
    offer: Vec<Vec<u8>>,
    /// Where its connections go when the client connection ends, and under which key.
    pool: Arc<OriginPool>,
    key: PoolKey,
}

/// The upstream of one intercepted client connection.
#[derive(Clone)]
pub(super) struct Origin(Arc<OriginInner>);

struct OriginInner {
    base: OriginBase,
    /// `name[:port]` of the absolute request targets.
    authority: Authority,
    state: Mutex<State>,
}

enum State {
    /// The upstream failed TLS: every request gets this as a 502.
    Failed(UpstreamTlsError),
    /// The server name alone was a block: the upstream is never contacted, and every
    /// request gets the block page.
    Refused(Box<super::error::Blocked>),
    /// Connections to reuse.
    Live {
        h2: Option<client2::SendRequest<UpstreamBody>>,
        h1: Vec<client1::SendRequest<UpstreamBody>>,
    },
}

impl State {
    /// Live, with no connection yet: the first request makes one.
    fn empty() -> State {
        State::Live {
            h2: None,
            h1: Vec::new(),
        }
    }
}

impl Drop for OriginInner {
    /// The client connection is over: its verified upstream connections go to the pool
    /// for the next CONNECT of the same client (closed there if it has no room).
    fn drop(&mut self) {
        let state = std::mem::replace(
            self.state.get_mut().unwrap_or_else(|e| e.into_inner()),
            State::empty(),
        );
        let State::Live { h2, h1 } = state else {
            return;
        };
        let base = &self.base;
        let senders = h2
            .map(Sender::H2)
            .into_iter()
            .chain(h1.into_iter().map(Sender::H1));
        for sender in senders {
            let pooled = Pooled {
                name: base.name.clone(),
                offer: base.offer.clone(),
                sender,
            };
            base.pool.put(&base.key, pooled);
        }
    }
}

/// A way to send requests on one upstream connection.
pub(super) enum Sender {
    /// An HTTP/1.1 connection: one request at a time.
    H1(client1::SendRequest<UpstreamBody>),
    /// An HTTP/2 connection: shared, multiplexed.
    H2(client2::SendRequest<UpstreamBody>),
}

impl Origin {
    fn new(base: OriginBase, state: State) -> Origin {
        let host = match &base.name {
            LeafName::Dns(name) => name.clone(),
            LeafName::Ip(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
            LeafName::Ip(ip) => ip.to_string(),
        };
        let text = match base.target.port {
            443 => host,
            port => format!("{host}:{port}"),
        };
        let authority = text
            .parse()
            .unwrap_or_else(|_| Authority::from_static("invalid.invalid"));
        Origin(Arc::new(OriginInner {
            base,
            authority,
            state: Mutex::new(state),
        }))
    }

    async fn live(
        base: OriginBase,
        stream: tokio_rustls::client::TlsStream<TcpStream>,
        h2: bool,
    ) -> Origin {
        let state = match handshake(stream, h2).await {
            Ok(Sender::H2(s)) => State::Live {
                h2: Some(s),
                h1: Vec::new(),
            },
            Ok(Sender::H1(s)) => State::Live {
                h2: None,
                h1: vec![s],
            },
            Err(e) => {
                debug!(error = %e, "HTTP handshake with the upstream failed; will reconnect");
                State::empty()
            }
        };
        Origin::new(base, state)
    }

    /// With a connection from the pool.
    fn pooled(base: OriginBase, sender: Sender) -> Origin {
        let state = match sender {
            Sender::H2(s) => State::Live {
                h2: Some(s),
                h1: Vec::new(),
            },
            Sender::H1(s) => State::Live {
                h2: None,
                h1: vec![s],
            },
        };
        Origin::new(base, state)
    }

    fn failed(base: OriginBase, error: UpstreamTlsError) -> Origin {
        Origin::new(base, State::Failed(error))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a request to the upstream. A request the upstream did not process is sent once
    /// more on a new connection: one that never left (its connection closed, or the
    /// upstream shut it down gracefully with GOAWAY, before it was written), and one with
    /// a held body that an HTTP/2 upstream refused unprocessed (see [`refused`]). The
    /// client has no way to tell (found in review: after an HTTP/2 upstream's GOAWAY,
    /// requests got 502 until its last stream ended).
    async fn send(&self, req: Request<UpstreamBody>) -> Result<Response<Incoming>, ProxyError> {
        let copy = req.body().copy().map(|body| {
            let mut copy = Request::new(body);
            *copy.method_mut() = req.method().clone();
            *copy.uri_mut() = req.uri().clone();
            *copy.version_mut() = req.version();
            *copy.headers_mut() = req.headers().clone();
            *copy.extensions_mut() = req.extensions().clone();
            copy
        });
        let sender = self.checkout(false).await?;
        let again = match self.send_on(sender, req).await {
            Ok(response) => return Ok(response),
            Err(Unsent::Back(req)) => *req,
            Err(Unsent::Refused(e)) => match copy {
                Some(copy) => copy,
                None => return Err(e),
            },
            Err(Unsent::Failed(e)) => return Err(e),
        };
        debug!("the upstream did not take the request; once more on a new connection");
        let sender = self.checkout(true).await?;
        match self.send_on(sender, again).await {
            Ok(response) => Ok(response),
            Err(Unsent::Back(_)) => Err(ProxyError::Upstream(
                "the new upstream connection closed before the request left".into(),
            )),
            Err(Unsent::Refused(e) | Unsent::Failed(e)) => Err(e),
        }
    }

    /// Sends `req` on one connection.
    async fn send_on(
        &self,
        sender: Sender,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, Unsent> {
        let answered = match sender {
            Sender::H2(mut sender) => {
                for_h2(&mut req, &self.0.authority).map_err(Unsent::Failed)?;
                if sender.ready().await.is_err() {
                    return Err(Unsent::Back(Box::new(req)));
                }
                sender.try_send_request(req).await
            }
            Sender::H1(mut sender) => {
                for_h1(&mut req, &self.0.authority).map_err(Unsent::Failed)?;
                if sender.ready().await.is_err() {
                    return Err(Unsent::Back(Box::new(req)));
                }
                let answered = sender.try_send_request(req).await;
                // Reusable once the response body has been read: kept for later requests.
                let mut state = self.lock();
                if let State::Live { h1, .. } = &mut *state {
                    if h1.len() < H1_IDLE_PER_CONNECTION && !sender.is_closed() {
                        h1.push(sender);
                    }
                }
                answered
            }
        };
        answered.map_err(|mut e| match e.take_message() {
            Some(req) => Unsent::Back(Box::new(req)),
            None if refused(e.error()) => Unsent::Refused(classify(e.into_error())),
            None => Unsent::Failed(classify(e.into_error())),
        })
    }

    /// A connection to send on: a live one (unless `fresh`), or a new verified one.
    async fn checkout(&self, fresh: bool) -> Result<Sender, ProxyError> {
        {
            let mut state = self.lock();
            match &mut *state {
                State::Failed(e) => return Err(ProxyError::UpstreamTls(e.clone())),
                State::Refused(blocked) => return Err(ProxyError::Blocked(blocked.clone())),
                State::Live { h2, h1 } => {
                    if let Some(sender) = h2 {
                        if !sender.is_closed() && !fresh {
                            return Ok(Sender::H2(sender.clone()));
                        }
                        if sender.is_closed() {
                            *h2 = None;
                        }
                    }
                    h1.retain(|s| !s.is_closed());
                    if let Some(i) = h1.iter().position(|s| s.is_ready()).filter(|_| !fresh) {
                        return Ok(Sender::H1(h1.swap_remove(i)));
                    }
                }
            }
        }
        let base = &self.0.base;
        let tcp = base
            .connector
            .connect(&base.target.host, base.target.port)
            .await
            .map_err(|e| ProxyError::from(&e))?;
        let (stream, chosen) = base
            .tls
            .upstream()
            .connect(tcp, &base.name, &base.offer)
            .await
            .map_err(|e| {
                base.tls.stats().upstream_failed(e.reason());
                ProxyError::UpstreamTls(e)
            })?;
        let sender = handshake(stream, chosen.as_deref() == Some(ALPN_H2)).await?;
        if let Sender::H2(s) = &sender {
            if let State::Live { h2, .. } = &mut *self.lock() {
                // A connection still open stays in use (a request asked for a fresh one
                // after its own went away; another may have made one meanwhile).
                if h2.as_ref().is_none_or(|old| old.is_closed() || fresh) {
                    *h2 = Some(s.clone());
                }
            }
        }
        Ok(sender)
    }
}

/// Why a request got no answer on a connection.
enum Unsent {
    /// It never left: the connection closed (or went away) first. Safe to send again.
    Back(Box<Request<UpstreamBody>>),
    /// It left, and the upstream refused it unprocessed (see [`refused`]): safe to send
    /// again when its body can be.
    Refused(ProxyError),
    /// It failed after it left, or could not be sent at all.
    Failed(ProxyError),
}

/// Whether an HTTP/2 upstream refused a request it did not process (RFC 9113 §8.7): its
/// stream was reset with `REFUSED_STREAM`, or was above the last stream a graceful GOAWAY
/// (`NO_ERROR`) let finish. h2 reports a remote GOAWAY on a stream only then: a stream the
/// upstream kept sees the connection's end as a broken pipe, and a GOAWAY with an error
/// code is not taken as a promise either.
fn refused(err: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && ((h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM))
                    || (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR)));
        }
        source = e.source();
    }
    false
}

/// Makes `req` an HTTP/1.1 request to `authority`: origin-form target, `Host`, one
/// `Cookie` line, `TE` named in `Connection`. [`for_h2`] undoes what HTTP/2 cannot carry.
fn for_h1<B>(req: &mut Request<B>, authority: &Authority) -> Result<(), ProxyError> {
    *req.version_mut() = Version::HTTP_11;
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    *req.uri_mut() = path
        .parse()
        .map_err(|_| ProxyError::BadRequest("the request target is not valid"))?;
    if !req.headers().contains_key(header::HOST) {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    join_cookies(req.headers_mut());
    super::forward::name_te_in_connection(req.headers_mut());
    Ok(())
}

/// Makes `req` an HTTP/2 request to `authority`: absolute target (HTTP/2 carries the host
/// in `:authority`), no `Host`, no `Connection`. A request an HTTP/1.1 connection gave back
/// unsent was already made one by [`for_h1`], and the new connection may speak HTTP/2: as
/// it was, h2 refused it and the client got 502 (found in review). `Connection` here is
/// only ever the one `for_h1` added: the client's hop-by-hop fields went long before.
fn for_h2<B>(req: &mut Request<B>, authority: &Authority) -> Result<(), ProxyError> {
    *req.version_mut() = Version::HTTP_2;
    if req.uri().scheme().is_none() || req.uri().authority().is_none() {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::builder()
            .scheme(Scheme::HTTPS)
            .authority(authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|_| ProxyError::BadRequest("the request target is not valid"))?;
    }
    req.headers_mut().remove(header::HOST);
    req.headers_mut().remove(header::CONNECTION);
    Ok(())
}

/// Joins an HTTP/2 request's cookie crumbs (a `cookie` field per cookie, as browsers send
/// them for header compression) into the one `Cookie` line HTTP/1.1 has (RFC 9113 §8.2.3:
/// a MUST for a translation to HTTP/1.1; found in review).
fn join_cookies(headers: &mut http::HeaderMap) {
    let mut crumbs = headers.get_all(header::COOKIE).iter();
    let Some(first) = crumbs.next() else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    let mut more = false;
    for crumb in crumbs {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(crumb.as_bytes());
        more = true;
    }
    if more {
        if let Ok(value) = HeaderValue::from_bytes(&joined) {
            headers.insert(header::COOKIE, value);
        }
    }
}

/// Starts HTTP on a verified upstream TLS stream; its connection task runs until the
/// upstream closes or every sender is gone.
async fn handshake(
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    h2: bool,
) -> Result<Sender, ProxyError> {
    let io = TokioIo::new(stream);
    if h2 {
        let (sender, conn) = client2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(RESPONSE_HEADER_BYTES)
            .handshake(io)
            .await
            .map_err(classify)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) = client1::Builder::new()
            .max_headers(RESPONSE_HEADER_FIELDS)
            .allow_spaces_after_header_name_in_responses(true)
            .handshake(io)
            .await
            .map_err(classify)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(error = %e, "upstream HTTP/1.1 connection ended with an error");
            }
        });
        Ok(Sender::H1(sender))
    }
}

/// Where a failure on an upstream connection came from.
fn classify(err: hyper::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if e.downcast_ref::<BodyAborted>().is_some() {
            return ProxyError::Upstream("request body aborted".into());
        }
        source = e.source();
    }
    let detail = std::error::Error::source(&err)
        .map(|s| format!("{err}: {s}"))
        .unwrap_or_else(|| err.to_string());
    ProxyError::Upstream(detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request<()> {
        Request::builder()
            .method("POST")
            .uri("https://shop.example:8443/cart?id=7")
            .header(header::TE, "trailers")
            .header(header::COOKIE, "a=1")
            .header(header::COOKIE, "b=2")
            .body(())
            .unwrap()
    }

    #[test]
    fn a_request_made_for_http1_is_made_whole_again_for_http2() {
        let authority: Authority = "shop.example:8443".parse().unwrap();
        let mut req = request();
        for_h1(&mut req, &authority).unwrap();
        assert_eq!(req.uri(), "/cart?id=7");
        assert_eq!(req.headers()[header::HOST], "shop.example:8443");
        assert_eq!(req.headers()[header::CONNECTION], "te");
        assert_eq!(req.headers()[header::COOKIE], "a=1; b=2");

        for_h2(&mut req, &authority).unwrap();
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.uri(), "https://shop.example:8443/cart?id=7");
        assert!(!req.headers().contains_key(header::HOST));
        assert!(!req.headers().contains_key(header::CONNECTION));
        assert_eq!(req.headers()[header::TE], "trailers");
    }

    #[test]
    fn an_absolute_request_keeps_its_target_for_http2() {
        let authority: Authority = "shop.example:8443".parse().unwrap();
        let mut req = request();
        for_h2(&mut req, &authority).unwrap();
        assert_eq!(req.uri(), "https://shop.example:8443/cart?id=7");
        assert_eq!(req.headers().get_all(header::COOKIE).iter().count(), 2);
    }
}
