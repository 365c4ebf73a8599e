//! The forward proxy: the hyper server workstations point at.
//!
//! [`run`] takes an already-bound listener, the validated [`Config`] and a shutdown future,
//! and serves HTTP/1.1 until the future completes:
//!
//! - **accept**: at most `limits.max_connections` connections at once (more wait in the
//!   listen backlog); a client outside `access.clients` gets 403 and the connection closes;
//! - **per connection** (hyper `http1::Builder`): header size and count limits (431),
//!   `limits.header_read_timeout` for each request head (slowloris), malformed requests
//!   answered 400 and closed by hyper, `limits.idle_timeout` when no bytes move;
//! - **per request**: a pipeline of tower layers assembled in one place (`layers`: id,
//!   error pages and the outcome log line, body tracking, client allow-list), then
//!   CONNECT to an allowed port is intercepted (`intercept`: TLS ends here with a minted
//!   leaf, requests inside go through this same pipeline, upstream over verified TLS) or,
//!   with `tls.intercept: false` or a host in `tls.bypass`, becomes a blind tunnel (`tunnel`);
//!   anything else must be an absolute `http://` URL, inspected and forwarded (`forward`)
//!   through the pooled client ([`upstream`]), with requests to the proxy's own addresses
//!   refused as loops; a WebSocket upgrade the upstream accepts becomes a tunnel too
//!   (other upgrades, `h2c` above all, are forwarded as plain requests); request bodies
//!   are held up to `limits.hold_bytes` each and `limits.hold_total` across all requests
//!   (`budget`), larger ones streamed and aborted as soon as a scan snapshot blocks;
//! - **errors**: every failure is a [`ProxyError`] that says where it came from, turned into
//!   a response in one place ([`page::error_response`]);
//! - **closing**: a client connection closed with a request body unread lingers
//!   (`linger`): FIN, then what the client still sends is read and discarded for up to
//!   `limits.linger_time`, so that a block page sent before the end of an upload is not
//!   lost to a connection reset;
//! - **shutdown**: stop accepting, let in-flight requests and tunnels finish for up to
//!   `limits.drain_time`, then cut what is left.
//!
//! Not here yet: body decoding, audit events, metrics, the admin listener, HTTP/2 to
//! clients outside TLS (h2c), inspecting WebSocket messages.

mod budget;
pub mod error;
mod forward;
pub mod idle;
mod intercept;
mod layers;
mod linger;
pub mod page;
mod tunnel;
pub mod upstream;

use std::future::Future;
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::scan::Engine;
use crate::tls::Interceptor;
use budget::HoldBudget;
pub use error::ProxyError;
use idle::{Activity, IdleIo};
use linger::{LingerIo, Unread};
use tower::Service;
use upstream::{Connector, UpstreamClient};

/// The error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the proxy sends: its own pages or an upstream's body.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Serves the proxy on `listener` until `shutdown` completes, then drains.
///
/// In-flight requests and tunnels get `limits.drain_time` to finish once `shutdown`
/// completes; whatever is left then is cut. Returns once every connection is closed.
pub async fn run(
    listener: TcpListener,
    config: Arc<Config>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let tls = match config.tls.intercept {
        true => Some(Arc::new(
            Interceptor::new(&config.tls).map_err(|e| io::Error::other(e.to_string()))?,
        )),
        false => None,
    };
    run_with_tls(listener, config, tls, shutdown).await
}

/// [`run`] with an interceptor built by the caller (who keeps it to read its
/// [`tls::Stats`](crate::tls::Stats)); `None` makes every CONNECT a blind tunnel.
pub async fn run_with_tls(
    listener: TcpListener,
    config: Arc<Config>,
    tls: Option<Arc<Interceptor>>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let connector = Connector::new(
        vec![local, config.admin_listen],
        config.limits.upstream_connect_timeout,
    );
    let shared = Arc::new(Shared {
        engine: Engine::new(&config.rules),
        client: upstream::client(connector.clone()),
        connector,
        http1: http1_builder(&config),
        request_ids: RequestIds::default(),
        hold_budget: HoldBudget::new(config.limits.hold_total, config.limits.hold_wait),
        config,
        tls,
    });
    info!(%local, rules = shared.config.rules.rules().len(), "proxy listening");

    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let permits = Arc::new(Semaphore::new(shared.config.limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ctx = ConnCtx {
            shared: shared.clone(),
            peer,
            activity: Activity::new(),
            allowed: shared.config.access.allows_client(peer.ip()),
            unread: Unread::default(),
            phase: phase_rx.clone(),
            guard: Guard {
                _alive: alive_tx.clone(),
                _permit: Arc::new(permit),
            },
        };
        tokio::spawn(serve_connection(Arc::new(ctx), stream));
    }

    drop(listener);
    let drain_time = shared.config.limits.drain_time;
    info!(?drain_time, "shutting down: no new connections, draining");
    let _ = phase_tx.send(Phase::Draining);
    drop(alive_tx);
    if tokio::time::timeout(drain_time, alive_rx.recv())
        .await
        .is_err()
    {
        warn!("drain time over: closing the remaining connections");
        let _ = phase_tx.send(Phase::Stop);
        let _ = tokio::time::timeout(Duration::from_secs(5), alive_rx.recv()).await;
    }
    info!("proxy stopped");
    Ok(())
}

/// State shared by every connection.
struct Shared {
    config: Arc<Config>,
    engine: Engine,
    client: UpstreamClient,
    connector: Connector,
    http1: http1::Builder,
    request_ids: RequestIds,
    /// Body bytes held across all requests (`limits.hold_total`).
    hold_budget: HoldBudget,
    /// TLS interception (`tls.intercept`), or `None`: CONNECT is a blind tunnel.
    tls: Option<Arc<Interceptor>>,
}

/// One client connection's context, shared by its requests.
struct ConnCtx {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// When bytes last moved on the client socket.
    activity: Activity,
    allowed: bool,
    /// Set while the current request's body has bytes not yet read.
    unread: Unread,
    phase: watch::Receiver<Phase>,
    guard: Guard,
}

/// Held by every connection and tunnel: `run` waits for all of them to be dropped, and the
/// connection slot is free again when the last holder ends.
#[derive(Clone)]
struct Guard {
    _alive: mpsc::Sender<()>,
    _permit: Arc<OwnedSemaphorePermit>,
}

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Finish what is in flight; take no new requests.
    Draining,
    /// The drain time is over: close everything now.
    Stop,
}

/// Completes when the drain time is over (or the server is gone).
async fn stopped(phase: &mut watch::Receiver<Phase>) {
    let _ = phase.wait_for(|p| *p == Phase::Stop).await;
}

fn http1_builder(config: &Config) -> http1::Builder {
    let limits = &config.limits;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        // Request head: size (431 above it), field count (431), time to arrive.
        .max_header_size(limits.header_bytes)
        .max_headers(limits.header_count)
        .header_read_timeout(limits.header_read_timeout)
        // The read buffer must hold a whole head.
        .max_buf_size(limits.header_bytes.max(400 << 10));
    builder
}

async fn serve_connection(ctx: Arc<ConnCtx>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let activity = ctx.activity.clone();
    let stream = LingerIo::new(
        stream,
        ctx.unread.clone(),
        ctx.shared.config.limits.linger_time,
        ctx.phase.clone(),
        ctx.guard.clone(),
    );
    let io = TokioIo::new(IdleIo::new(stream, activity.clone()));
    let mut phase = ctx.phase.clone();
    // The request pipeline (tower layers, see `layers::stack`), called through hyper's
    // `&self` service interface: each request gets its own clone of the stack.
    let stack = layers::stack(ctx.clone());
    let service = service_fn(move |req| {
        let mut stack = stack.clone();
        async move {
            std::future::poll_fn(|cx| stack.poll_ready(cx)).await?;
            stack.call(req).await
        }
    });
    let conn = ctx
        .shared
        .http1
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let idle_timeout = ctx.shared.config.limits.idle_timeout;
    let mut draining = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    debug!(peer = %ctx.peer, error = %e, "client connection ended with an error");
                }
                break;
            }
            changed = phase.changed() => {
                let now = if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Stop };
                match now {
                    Phase::Running => {}
                    Phase::Draining if !draining => {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    Phase::Draining => {}
                    Phase::Stop => break,
                }
            }
            _ = activity.idle(idle_timeout) => {
                debug!(peer = %ctx.peer, "client connection idle, closed");
                break;
            }
        }
    }
}

/// A spawned task that is aborted when its owner is dropped.
struct OwnedTask<T>(tokio::task::JoinHandle<T>);

impl<T> OwnedTask<Result<T, ProxyError>> {
    /// Its result; a panic in the task is our failure.
    async fn join(mut self) -> Result<T, ProxyError> {
        (&mut self.0)
            .await
            .unwrap_or_else(|e| Err(ProxyError::Internal(format!("request task failed: {e}"))))
    }
}

impl<T> Drop for OwnedTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Request ids: unique within the process, not guessable across restarts.
struct RequestIds {
    next: AtomicU64,
    key: std::collections::hash_map::RandomState,
}

impl Default for RequestIds {
    fn default() -> RequestIds {
        RequestIds {
            next: AtomicU64::new(0),
            key: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl RequestIds {
    fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // Sequence number (unique) then a keyed hash (unguessable).
        format!("{n:x}-{:016x}", self.key.hash_one(n))
    }
}

/// Binds `config.listen` and runs the proxy until SIGTERM or SIGINT (Ctrl-C), then drains.
pub async fn serve(config: Arc<Config>) -> io::Result<()> {
    let listener = TcpListener::bind(config.listen).await.map_err(|e| {
        io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
    })?;
    run(listener, config, shutdown_signal()).await
}

/// Completes on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the proxy");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    info!("shutdown signal received");
}
