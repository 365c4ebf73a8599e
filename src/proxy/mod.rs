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
//!   error pages and the outcome log line, body tracking, client allow-list, proxy
//!   authentication (`auth`), blocked destinations (`destination`)), then
//!   CONNECT to an allowed port is intercepted (`intercept`: TLS ends here with a minted
//!   leaf, requests inside go through this same pipeline, upstream over verified TLS,
//!   whose idle connections wait in `origins` for the same client's next CONNECT) or,
//!   with `tls.intercept: false` or a host in `tls.bypass`, becomes a blind tunnel (`tunnel`);
//!   anything else must be an absolute `http://` URL, inspected and forwarded (`forward`)
//!   through the pooled client ([`upstream`]), with requests to the proxy's own addresses
//!   refused as loops; a WebSocket upgrade the upstream accepts is relayed with the
//!   client's messages inspected one by one (`websocket`; other upgrades, `h2c` above all,
//!   are forwarded as plain requests); request bodies
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
//! - **observing** (`observe`): every verdict, error, byte count and timing goes to the
//!   [`Metrics`](crate::metrics::Metrics); a verdict that calls for it becomes an audit
//!   event ([`crate::audit`]); each request ends with one log line. [`run_with`] also serves
//!   the admin listener ([`crate::admin`]) and reopens the audit log on request (SIGHUP in
//!   [`serve`]); shutdown returns only once every accepted audit event is written.
//!
//! Not here yet: HTTP/2 to clients outside TLS (h2c), inspecting WebSocket messages.

pub mod auth;
mod budget;
mod destination;
pub mod error;
mod forward;
mod grpc;
pub mod idle;
mod intercept;
mod layers;
mod linger;
mod observe;
mod origins;
pub mod page;
pub mod reload;
mod tunnel;
pub mod upstream;
mod websocket;

use std::future::Future;
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
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

use crate::admin::{self, Admin};
use crate::audit::Auditor;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::identity::AuthCounters;
use crate::policy::window::Windows;
use crate::scan::random_key;
use crate::tls::Interceptor;
use budget::HoldBudget;
pub use error::ProxyError;
use idle::{Activity, IdleIo};
use linger::{LingerIo, Unread};
use reload::{Live, LiveCell, Reloads};
use tower::Service;
use upstream::{Connector, UpstreamClient};

/// The error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the proxy sends: its own pages or an upstream's body.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Serves the proxy on `listener` until `shutdown` completes, then drains.
///
/// In-flight requests and tunnels get `limits.drain_time` to finish once `shutdown`
/// completes; whatever is left then is cut. Returns once every connection is closed and
/// every audit event accepted is written. No admin listener: see [`run_with`].
pub async fn run(
    listener: TcpListener,
    config: Arc<Config>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run_with(listener, RunOptions::default(), config, shutdown).await
}

/// What [`run_with`] runs besides the proxy listener.
#[derive(Default)]
pub struct RunOptions {
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`, `/rules`), already bound.
    pub admin: Option<TcpListener>,
    /// Each message reopens the audit log (SIGHUP in `serve`).
    pub reopen_audit: Option<mpsc::UnboundedReceiver<()>>,
    /// Reload requests; with them the watched files are polled too (see [`reload`]).
    pub reloads: Option<Reloads>,
    /// Where authentication outcomes are counted (a fresh set when absent).
    pub auth_counters: Option<Arc<AuthCounters>>,
    /// A ready TLS interceptor (tests pass their own); absent, one is built from `tls:`
    /// when `tls.intercept` is on.
    pub tls: Option<Arc<Interceptor>>,
}

/// [`run`] with a ready TLS interceptor (`None`: CONNECT is a blind tunnel).
pub async fn run_with_tls(
    listener: TcpListener,
    config: Arc<Config>,
    tls: Option<Arc<Interceptor>>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let intercept = tls.is_some();
    let options = RunOptions {
        tls,
        ..RunOptions::default()
    };
    let mut config = config;
    if !intercept && config.tls.intercept {
        // Asked for no interception: say so in the config the proxy runs on.
        let mut plain = (*config).clone();
        plain.tls.intercept = false;
        config = Arc::new(plain);
    }
    run_with(listener, options, config, shutdown).await
}

/// [`run`], plus the admin listener, an audit-log reopen trigger and hot reload.
pub async fn run_with(
    listener: TcpListener,
    options: RunOptions,
    config: Arc<Config>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let mut own_addrs = vec![local, config.admin_listen];
    if let Some(admin) = &options.admin {
        own_addrs.push(admin.local_addr()?);
    }
    let connector = Connector::new(own_addrs, config.limits.upstream_connect_timeout);
    let metrics = Arc::new(Metrics::new(&config.rules));
    metrics.rules_reload(Some(config.rules.rules().len()));
    let (audit, audit_writer) = Auditor::start(&config.audit, &config.data_dir, metrics.clone())
        .map_err(|e| io::Error::new(e.kind(), format!("audit: {e}")))?;
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let tls = match (options.tls, config.tls.intercept) {
        (Some(tls), _) => Some(tls),
        (None, true) => Some(Arc::new(
            Interceptor::new(&config.tls).map_err(|e| io::Error::other(e.to_string()))?,
        )),
        (None, false) => None,
    };
    let hash_key = random_key();
    let live = Live::new(config.clone(), hash_key)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut admin_handle = None;
    let admin_task = options.admin.map(|listener| {
        let mut admin = Admin::new(metrics.clone(), &config.rules);
        let sink = audit.clone();
        let path = config.audit.path.clone();
        admin.add_check(
            "audit",
            Box::new(move || {
                if sink.sink_up() {
                    Ok(format!("{} writable", path.display()))
                } else {
                    Err(format!("{} cannot be written", path.display()))
                }
            }),
        );
        if let Some(tls) = &tls {
            let leaves = tls.clone();
            admin.add_check(
                "ca",
                Box::new(move || {
                    Ok(format!(
                        "CA loaded, {} leaf certificates cached",
                        leaves
                            .stats()
                            .leaf_cache_size
                            .load(std::sync::atomic::Ordering::Relaxed)
                    ))
                }),
            );
        }
        let phase = phase_rx.clone();
        admin.add_check(
            "accepting",
            Box::new(move || match *phase.borrow() {
                Phase::Running => Ok("accepting connections".into()),
                _ => Err("shutting down".into()),
            }),
        );
        let mut phase = phase_rx.clone();
        let stop = async move {
            let _ = phase.wait_for(|p| *p == Phase::Stopped).await;
        };
        let admin = Arc::new(admin);
        admin_handle = Some(admin.clone());
        tokio::spawn(admin::serve(listener, admin, stop))
    });
    if let Some(mut reopen) = options.reopen_audit {
        let audit = audit.clone();
        tokio::spawn(async move {
            while reopen.recv().await.is_some() {
                audit.reopen();
            }
        });
    }
    let auth_counters = options.auth_counters.unwrap_or_default();
    metrics.watch_auth(auth_counters.clone());
    if let Some(tls) = &tls {
        metrics.watch_tls(tls.stats().clone());
    }
    let origins = Arc::new(origins::OriginPool::default());
    origins::OriginPool::sweep_while_alive(Arc::downgrade(&origins));
    let shared = Arc::new(Shared {
        tls,
        origins,
        auth: auth::AuthState::new(
            auth_counters,
            config
                .policy
                .auth
                .as_ref()
                .map_or(1, |a| a.limits.max_verifications),
        ),
        metrics,
        audit,
        live: LiveCell::new(live),
        hash_key,
        windows: Windows::new(config.windows.clone()),
        admin: admin_handle,
        client: upstream::client(connector.clone()),
        connector,
        http1: http1_builder(&config),
        request_ids: RequestIds::default(),
        // Room for one request's windows whatever `hold_total` (found in review: a small one
        // refused every compressed part on an idle proxy).
        decoder_windows: decoder_windows(&config.limits),
        hold_budget: HoldBudget::new(
            config.limits.hold_total,
            config.limits.hold_per_client,
            config.limits.hold_wait,
        ),
        config,
    });
    info!(%local, rules = shared.config.rules.rules().len(), "proxy listening");
    if let Some(reloads) = options.reloads {
        tokio::spawn(reload_loop(shared.clone(), reloads, phase_rx.clone()));
    }

    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let permits = Arc::new(Semaphore::new(shared.config.limits.max_connections));
    let per_client = Arc::new(ClientSlots::default());
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
        let Some(slot) =
            per_client.take(peer.ip(), shared.config.limits.max_connections_per_client)
        else {
            // Its permit goes back now: one client cannot hold every slot.
            drop(permit);
            debug!(%peer, "connection refused: limits.max_connections_per_client open from this address");
            shared
                .metrics
                .request(crate::metrics::Outcome::Refused, Duration::ZERO);
            tokio::spawn(too_many_connections(stream));
            continue;
        };
        let ctx = ConnCtx {
            shared: shared.clone(),
            peer,
            activity: Activity::new(),
            allowed: shared.live.get().config.access.allows_client(peer.ip()),
            unread: Unread::default(),
            phase: phase_rx.clone(),
            guard: Guard {
                _alive: alive_tx.clone(),
                _permit: Arc::new(permit),
                _counted: Arc::new(shared.metrics.connection()),
                _slot: Arc::new(slot),
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
    // Every request is done: what they handed the audit log is written before returning.
    audit_writer.close().await;
    let _ = phase_tx.send(Phase::Stopped);
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    info!("proxy stopped");
    Ok(())
}

/// Serves reload requests and watches the files until the server stops.
async fn reload_loop(shared: Arc<Shared>, mut reloads: Reloads, mut phase: watch::Receiver<Phase>) {
    let interval = reload::watch_interval(&shared.config);
    let mut watched = reload::Watched::look(&reloads.source, &shared.live.get().config);
    let mut ticker = tokio::time::interval(interval.unwrap_or(Duration::from_secs(3600)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        let reply = tokio::select! {
            _ = phase.changed() => return,
            request = reloads.requests.recv() => match request {
                Some(reply) => Some(reply),
                // Every handle is gone: only the file watch is left.
                None if interval.is_some() => {
                    ticker.tick().await;
                    None
                }
                None => return,
            },
            _ = ticker.tick(), if interval.is_some() => {
                let now = reload::Watched::look(&reloads.source, &shared.live.get().config);
                if now == watched {
                    continue;
                }
                info!("watched config or rule files changed: reloading");
                None
            }
        };
        let before = reload::Watched::look(&reloads.source, &shared.live.get().config);
        let outcome = reload::reload(&reloads.source, &shared.live, shared.hash_key, |config| {
            shared.windows.reconfigure(config.windows.clone());
            shared.metrics.rules_changed(&config.rules);
            if let Some(admin) = &shared.admin {
                admin.set_rules(&config.rules);
            }
        })
        .await;
        let loaded = outcome
            .as_ref()
            .ok()
            .map(|_| shared.live.get().config.rules.rules().len());
        shared.metrics.rules_reload(loaded);
        // Look again whatever the outcome: a broken file is not retried until it changes.
        let after = reload::Watched::look(&reloads.source, &shared.live.get().config);
        watched = reload::Watched::loaded(before, after);
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }
}

/// State shared by every connection.
struct Shared {
    /// The config the proxy started with: listeners, limits, TLS, audit (what a reload
    /// cannot change). What requests are judged by is in `live`.
    config: Arc<Config>,
    /// Config, rules and engine in force now (swapped by a reload).
    live: LiveCell,
    /// Key of the engine's value hashes: the same across reloads.
    hash_key: [u64; 2],
    /// Cumulative windows: outlive rule reloads.
    windows: Windows,
    /// The admin listener's state, told about reloads.
    admin: Option<Arc<Admin>>,
    client: UpstreamClient,
    connector: Connector,
    http1: http1::Builder,
    request_ids: RequestIds,
    /// Body bytes held across all requests (`limits.hold_total`).
    hold_budget: HoldBudget,
    /// Memory for decompressor windows opened inside request content (a quarter of
    /// `limits.hold_total`, at least one brotli window, beside it): see
    /// [`crate::decode::WindowPool`].
    decoder_windows: crate::decode::WindowPool,
    /// Every metric (scraped on the admin listener).
    metrics: Arc<Metrics>,
    /// Failed-login tables, verification cache, counters (`policy.auth`).
    auth: auth::AuthState,
    /// The audit log.
    audit: Auditor,
    /// TLS interception (`tls.intercept`), or `None`: CONNECT is a blind tunnel.
    tls: Option<Arc<Interceptor>>,
    /// Idle verified upstream connections of intercepted CONNECTs, per client and host.
    origins: Arc<origins::OriginPool>,
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
/// connection slot is free again when the last holder ends. The connection is counted in
/// `egress_dlp_active_connections` as long, a CONNECT tunnel's life included (found in
/// review: it was counted only until hyper handed the socket to the tunnel).
#[derive(Clone)]
struct Guard {
    _alive: mpsc::Sender<()>,
    _permit: Arc<OwnedSemaphorePermit>,
    _counted: Arc<crate::metrics::ConnectionGauge>,
    _slot: Arc<ClientSlot>,
}

/// Connections open per client address, for `limits.max_connections_per_client` (found in
/// review: one workstation holding tunnels took every `max_connections` slot, and every
/// other client waited in the listen backlog).
#[derive(Debug, Default)]
struct ClientSlots(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One connection's place in [`ClientSlots`], given back when dropped.
#[derive(Debug)]
struct ClientSlot {
    ip: std::net::IpAddr,
    slots: Arc<ClientSlots>,
}

impl ClientSlots {
    /// A slot for a connection from `ip`, unless `cap` are open from it already.
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, cap: usize) -> Option<ClientSlot> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            ip,
            slots: self.clone(),
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.slots.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The answer to a connection over its client's cap: a short 503, then close.
async fn too_many_connections(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = "Too many connections from this address to the proxy; try again shortly.\n";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\nRetry-After: 5\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Finish what is in flight; take no new requests.
    Draining,
    /// The drain time is over: close everything now.
    Stop,
    /// Everything is closed and written (the admin listener stops).
    Stopped,
}

/// Completes when the drain time is over (or the server is gone).
async fn stopped(phase: &mut watch::Receiver<Phase>) {
    let _ = phase
        .wait_for(|p| matches!(p, Phase::Stop | Phase::Stopped))
        .await;
}

/// The pool for the windows of decompressors opened inside content: a quarter of
/// `hold_total` beside it, at least one request's windows whatever `hold_total` (found in
/// review: a small one refused every compressed part on an idle proxy). A client's share
/// of it is its share of the hold budget (`hold_per_client` of `hold_total`: a quarter at
/// the defaults, raised to one request's windows), so one workstation cannot hold all of
/// it: the pool is at least a share and one request's windows more.
fn decoder_windows(limits: &crate::config::Limits) -> crate::decode::WindowPool {
    use crate::decode::REQUEST_WINDOWS;
    let total = (limits.hold_total / 4).max(REQUEST_WINDOWS);
    let per_client = limits.hold_per_client.min(limits.hold_total);
    let share = u128::from(total) * u128::from(per_client) / u128::from(limits.hold_total.max(1));
    let share = u64::try_from(share).unwrap_or(total).max(REQUEST_WINDOWS);
    // A client's whole share taken, another's request still finds its windows (found in
    // review: with a small `hold_total` the share was the whole pool).
    let total = total.max(share.saturating_add(REQUEST_WINDOWS));
    crate::decode::WindowPool::shared(total, share)
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
    let io = TokioIo::new(IdleIo::new(stream, activity));
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
    drive(
        &ctx,
        conn,
        |c| c.graceful_shutdown(),
        idle_timeout,
        "client connection",
    )
    .await;
}

/// Runs a server connection (`what`, for the log) to its end, the idle limit, or the end
/// of the drain time: graceful shutdown when draining starts, cut when it is over.
async fn drive<C, E>(
    ctx: &ConnCtx,
    mut conn: Pin<&mut C>,
    graceful: impl Fn(Pin<&mut C>),
    idle_timeout: Duration,
    what: &'static str,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut phase = ctx.phase.clone();
    let mut draining = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    debug!(peer = %ctx.peer, error = %e, "{what} ended with an error");
                }
                break;
            }
            changed = phase.changed() => {
                let now = if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Stop };
                match now {
                    Phase::Running => {}
                    Phase::Draining if !draining => {
                        draining = true;
                        graceful(conn.as_mut());
                    }
                    Phase::Draining => {}
                    Phase::Stop | Phase::Stopped => break,
                }
            }
            _ = ctx.activity.idle(idle_timeout) => {
                debug!(peer = %ctx.peer, "{what} idle, closed");
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

/// Binds `config.listen` and `config.admin_listen` and runs the proxy until SIGTERM or
/// SIGINT (Ctrl-C), then drains; SIGHUP reopens the audit log and reloads from `source`
/// (config, rules, EDM index), as a change to those files does.
pub async fn serve(config: Arc<Config>, source: reload::ReloadSource) -> io::Result<()> {
    let listener = TcpListener::bind(config.listen).await.map_err(|e| {
        io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
    })?;
    let admin = TcpListener::bind(config.admin_listen).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {} (admin): {e}", config.admin_listen),
        )
    })?;
    let (reloads, handle) = Reloads::new(source);
    let options = RunOptions {
        admin: Some(admin),
        reopen_audit: Some(hangup_signal(handle)),
        reloads: Some(reloads),
        auth_counters: None,
        tls: None,
    };
    run_with(listener, options, config, shutdown_signal()).await
}

/// A message on every SIGHUP (none where there are no signals).
fn hangup_signal(reload: reload::ReloadHandle) -> mpsc::UnboundedReceiver<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => {
                tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        info!("SIGHUP: reopening the audit log and reloading");
                        if tx.send(()).is_err() {
                            break;
                        }
                        let _ = reload.reload().await;
                    }
                });
            }
            Err(e) => warn!(error = %e, "cannot watch SIGHUP; the audit log is not reopened on it"),
        }
    }
    #[cfg(not(unix))]
    drop((tx, reload));
    rx
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
