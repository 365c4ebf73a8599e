//! CONNECT: a blind TCP tunnel to an allowed port, through [`splice`], the byte copy.
//! (An upgraded WebSocket connection is not a blind tunnel: see `websocket`.)
//!
//! The port must be in `access.connect_ports`, and the host is scanned before anything is
//! sent to it or about it (`forward::judge_name`: a block is a 403 and an audit event;
//! the name would otherwise leave in the lookup and the connect); the upstream is connected (with the connect
//! timeout and the loop guard) before the client gets its 200, so a dead upstream is a 502
//! or 504 rather than a tunnel that closes at once (an intercepted CONNECT for which the
//! same client left a verified connection idle in the pool of `origins` takes that one
//! instead). Bytes are copied both ways until either
//! side closes, the tunnel is idle for `limits.idle_timeout`, or the drain time runs out on
//! shutdown. Nothing inside a tunnel is inspected: with `tls.intercept` on, a CONNECT is
//! handed to `intercept` instead, unless its host is in `tls.bypass` (a blind tunnel,
//! logged by host).

use std::future::Future;
use std::io;
use std::sync::atomic::Ordering;

use http::{Request, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use super::error::ProxyError;
use super::idle::{Activity, IdleIo};
use super::intercept::Upstream;
use super::linger::ClientBody;
use super::origins::PoolKey;
use super::{ConnCtx, ProxyBody, intercept, page};
use crate::metrics::{NotScanned, TlsOutcome};

/// Answers a CONNECT request and, once the client has the 200, runs the tunnel.
pub(super) async fn connect(
    ctx: &ConnCtx,
    mut req: Request<ClientBody>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Some(authority) = req.uri().authority().cloned() else {
        return Err(ProxyError::BadRequest("CONNECT needs a host:port target"));
    };
    let Some(port) = authority
        .port_u16()
        .filter(|_| !authority.host().is_empty())
    else {
        return Err(ProxyError::BadRequest("CONNECT needs a host:port target"));
    };
    let live = super::auth::live_of(ctx, req.extensions());
    if !live.config.access.allows_connect_port(port) {
        return Err(ProxyError::PortNotAllowed(port));
    }
    // Requests inside an intercepted tunnel carry the CONNECT's user: browsers
    // authenticate the CONNECT only.
    let user = req
        .extensions()
        .get::<super::auth::RequestUser>()
        .and_then(|u| u.get());
    let request_id = req
        .extensions()
        .get::<super::layers::RequestId>()
        .map(|id| id.0.clone());
    let request_id = request_id.as_deref().unwrap_or("-");
    // The host goes out in the lookup and the connect below: judged first.
    super::forward::judge_name(
        ctx,
        &live,
        super::destination::policy_input(ctx, &req),
        (
            request_id,
            req.extensions()
                .get::<std::sync::Arc<super::observe::Record>>()
                .cloned(),
        ),
        req.uri().clone(),
        &[authority.host()],
    )?;
    let intercepting = ctx
        .shared
        .tls
        .as_ref()
        .is_some_and(|tls| !tls.bypassed(authority.host()));
    // An intercepted CONNECT first looks for a verified connection the same client and
    // user left idle to this host and port: the upstream is reachable, nothing to connect.
    let pooled = intercepting
        .then(|| {
            let key = PoolKey::new(ctx.peer.ip(), user.clone(), authority.host(), port);
            ctx.shared.origins.take(&key)
        })
        .flatten();
    let upstream = match pooled {
        Some(pooled) => Upstream::Pooled(pooled),
        None => {
            let busy = ctx.activity.busy();
            let tcp = ctx
                .shared
                .connector
                .connect(authority.host(), port)
                .await
                .map_err(|e| ProxyError::from(&e))?;
            drop(busy);
            Upstream::Tcp(tcp)
        }
    };
    let target = (ctx.peer.ip(), authority.host(), port);
    let metrics = &ctx.shared.metrics;
    let client = hyper::upgrade::on(&mut req);
    match &ctx.shared.tls {
        Some(tls) if tls.bypassed(authority.host()) => {
            let host = authority.host();
            // Counted once its audit event is recorded: a CONNECT refused because it could
            // not be (`audit.required`) was no tunnel.
            super::observe::tunnel_opened(
                &ctx.shared,
                request_id,
                target,
                user.as_deref(),
                NotScanned::TlsBypass,
            )?;
            tls.stats().bypassed.fetch_add(1, Ordering::Relaxed);
            metrics.tls_interception(TlsOutcome::Bypassed);
            info!(peer = %ctx.peer, host, port, "CONNECT bypassed (tls.bypass): blind tunnel");
        }
        Some(tls) => {
            // Counted as intercepted or bypassed once the ClientHello has named the server.
            let target = intercept::Target {
                host: authority.host().to_owned(),
                port,
                request_id: request_id.to_owned(),
            };
            intercept::start(ctx, tls.clone(), client, upstream, target, user);
            return Ok(Response::new(page::full("")));
        }
        None => {
            super::observe::tunnel_opened(
                &ctx.shared,
                request_id,
                target,
                user.as_deref(),
                NotScanned::Tunnel,
            )?;
            metrics.tls_interception(TlsOutcome::Disabled);
        }
    }
    let Upstream::Tcp(upstream) = upstream else {
        unreachable!("only an intercepted CONNECT takes a pooled connection");
    };
    splice(ctx, "CONNECT", client, async move { Ok(upstream) });
    Ok(Response::new(page::full("")))
}

/// Copies bytes both ways between the client (once its connection is handed over by hyper)
/// and `upstream` (once it resolves), in a task of its own, until either side closes, the
/// pair is idle for `limits.idle_timeout`, or the drain time is over.
pub(super) fn splice<U, F>(ctx: &ConnCtx, what: &'static str, client: OnUpgrade, upstream: F)
where
    F: Future<Output = io::Result<U>> + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle_timeout = ctx.shared.config.limits.idle_timeout;
    spawn_pair(
        ctx,
        what,
        idle_timeout,
        (client, upstream),
        move |mut client, mut upstream| async move {
            if let Ok((up, down)) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await
            {
                debug!(what, up, down, "tunnel closed");
            }
        },
    );
}

/// The client's connection once hyper hands it over, counting as activity.
pub(super) type ClientIo = IdleIo<TokioIo<hyper::upgrade::Upgraded>>;

/// In a task of its own: once the client's connection is handed over and `upstream`
/// resolves, runs `relay` on the two (bytes either way count as activity) until it ends,
/// the pair is idle for `idle_timeout`, or the drain time is over. The connection's guard
/// is held meanwhile (`run` waits for it; the slot stays taken).
pub(super) fn spawn_pair<U, F, R, Fut>(
    ctx: &ConnCtx,
    what: &'static str,
    idle_timeout: std::time::Duration,
    (client, upstream): (OnUpgrade, F),
    relay: R,
) where
    F: Future<Output = io::Result<U>> + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: FnOnce(ClientIo, IdleIo<U>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let mut phase = ctx.phase.clone();
    let guard = ctx.guard.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let (client, upstream) =
            match tokio::try_join!(async { client.await.map_err(io::Error::other) }, upstream) {
                Ok(pair) => pair,
                Err(e) => {
                    debug!(what, error = %e, "not established");
                    return;
                }
            };
        let activity = Activity::new();
        let client = IdleIo::new(TokioIo::new(client), activity.clone());
        let upstream = IdleIo::new(upstream, activity.clone());
        tokio::select! {
            () = relay(client, upstream) => {}
            _ = activity.idle(idle_timeout) => debug!(what, "idle, closed"),
            _ = super::stopped(&mut phase) => debug!(what, "cut at the end of the drain time"),
        }
    });
}
