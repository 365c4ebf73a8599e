//! Every Prometheus metric the proxy exports, defined once, with its name, help and labels.
//!
//! One [`Metrics`] is created per running proxy (its own registry, so two proxies in one
//! process — tests — never share counters) and scraped on the admin listener's `/metrics`.
//! All names start with `egress_dlp_`; counters end in `_total`, durations are histograms
//! in seconds and sizes histograms in bytes.
//!
//! Labels are bounded by construction: every label value comes from a closed enum here
//! ([`Outcome`], [`NotScanned`], [`UpstreamError`], [`TlsOutcome`],
//! [`AuditResult`], [`AuditOp`], [`Rotation`]) or from the loaded rule set (rule ids). A
//! host, user, path or matched value is never a label: there is no function here that takes
//! one. Every label combination is created at start with the value 0, so a scrape shows
//! every series before it first moves (dashboards and `rate()` see a zero, not a gap).
//!
//! Hot-path updates are single atomic operations on handles resolved when the proxy starts
//! (no label lookup per request).
//!
//! # The families
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `egress_dlp_requests_total` | counter | `action` | requests by outcome: `allow`, `log`, `block` (the verdict), `tunnel` (CONNECT), `refused` (turned away before a verdict), `error` (failed before a verdict) |
//! | `egress_dlp_websocket_messages_total` | counter | `action` | WebSocket messages clients sent, by outcome: `allow`, `log`, `block` (the verdict), `refused` (the connection was closed on it: a protocol violation, too large, no room to hold it) |
//! | `egress_dlp_request_duration_seconds` | histogram | `action` | time from request head to response head |
//! | `egress_dlp_request_body_bytes` | histogram | | request body size, per inspected request |
//! | `egress_dlp_findings_total` | counter | `rule` | matches per rule |
//! | `egress_dlp_scanned_bytes_total` | counter | | bytes through the engine |
//! | `egress_dlp_scan_duration_seconds` | histogram | | engine time per request |
//! | `egress_dlp_scan_errors_total` | counter | `reason` | requests whose inspection failed |
//! | `egress_dlp_not_scanned_total` | counter | `reason` | traffic that passed uninspected |
//! | `egress_dlp_upstream_errors_total` | counter | `kind` | upstream failures |
//! | `egress_dlp_upstream_response_seconds` | histogram | | time for an upstream to start answering |
//! | `egress_dlp_active_connections` | gauge | | open client connections |
//! | `egress_dlp_rules_loaded` | gauge | | rules in the active set |
//! | `egress_dlp_rules_reloads_total` | counter | `result` | rule-set loads: `success`, `failure` |
//! | `egress_dlp_audit_events_total` | counter | `result` | audit events `written`, `dropped`, `refused` |
//! | `egress_dlp_audit_sink_errors_total` | counter | `op` | audit sink failures: `open`, `write`, `flush`, `rotate` |
//! | `egress_dlp_audit_sink_up` | gauge | | 1 while the audit log is writable |
//! | `egress_dlp_audit_queue_events` | gauge | | events accepted but not yet written |
//! | `egress_dlp_audit_rotations_total` | counter | `trigger` | audit log rotations: `size`, `reopen` |
//! | `egress_dlp_tls_interceptions_total` | counter | `outcome` | CONNECTs by TLS outcome |
//! | `egress_dlp_tls_client_handshake_failures_total` | counter | `reason` | client-side handshakes that failed |
//! | `egress_dlp_tls_leaf_cache_certificates` | gauge | | minted leaf certificates cached |
//! | `egress_dlp_tls_leaf_mints_total` | counter | | leaf certificates minted |
//! | `egress_dlp_tls_leaf_mint_failures_total` | counter | | leaf certificates that could not be minted |
//! | `egress_dlp_tls_upstream_reused_total` | counter | | intercepted CONNECTs served by a pooled, verified upstream connection |
//! | `egress_dlp_tls_upstream_handshake_failures_total` | counter | `reason` | upstream TLS handshakes that failed |
//! | `egress_dlp_auth_attempts_total` | counter | `result` | proxy authentication: `success`, `cached`, `failure`, `malformed`, `missing`, `client_map`, `rate_limited` |
//! | `egress_dlp_auth_failure_evictions_total` | counter | | failed-login entries forgotten early (table full) |
//! | `egress_dlp_auth_cache_evictions_total` | counter | | verified credentials forgotten early (cache full) |
//! | `egress_dlp_build_info` | gauge | `version` | always 1 |

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::policy::Action;
use crate::rules::RuleSet;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets for per-request durations (seconds): 1 ms to 60 s.
const REQUEST_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Buckets for engine time per request (seconds): 20 µs to 5 s.
const SCAN_SECONDS: &[f64] = &[
    0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0,
];

/// Buckets for body sizes (bytes): 256 B to 1 GiB, ×4 each.
const BODY_BYTES: &[f64] = &[
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
];

/// A closed set of label values.
pub trait Label: Copy + 'static {
    /// Every value, in export order.
    const ALL: &'static [Self];
    /// The label value.
    fn as_str(self) -> &'static str;
    /// Position in [`Label::ALL`].
    fn index(self) -> usize;
}

macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl Label for $name {
            const ALL: &'static [Self] = &[$($name::$variant,)+];
            fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label_enum! {
    /// What became of a WebSocket message a client sent:
    /// `egress_dlp_websocket_messages_total{action}`.
    MessageOutcome {
        /// Inspected, allowed, forwarded.
        Allow => "allow",
        /// Inspected, forwarded, audited.
        Log => "log",
        /// Inspected and blocked: not forwarded, the connection closed.
        Block => "block",
        /// The connection was closed on it before a verdict: a protocol violation, a message
        /// over the hold limit with `limits.oversize: block`, or no room to hold it.
        Refused => "refused",
    }
}

label_enum! {
    /// How a request ended: `egress_dlp_requests_total{action}`.
    Outcome {
        /// Inspected, allowed, forwarded.
        Allow => "allow",
        /// Inspected, forwarded, audited.
        Log => "log",
        /// Inspected and blocked.
        Block => "block",
        /// A CONNECT tunnel (its bytes are counted in `not_scanned_total` unless intercepted).
        Tunnel => "tunnel",
        /// Turned away before a verdict: client ACL, bad request, too large, busy, loop,
        /// or the audit log could not record it with `audit.required`.
        Refused => "refused",
        /// Failed before a verdict for a reason that is not the client's (upstream, internal).
        Error => "error",
    }
}

impl From<Action> for Outcome {
    fn from(action: Action) -> Outcome {
        match action {
            Action::Allow => Outcome::Allow,
            Action::Log => Outcome::Log,
            Action::Block => Outcome::Block,
        }
    }
}

label_enum! {
    /// Why traffic went through uninspected: `egress_dlp_not_scanned_total{reason}`.
    NotScanned {
        /// A CONNECT tunnel that is not intercepted (interception off, or a TLS failure
        /// that fell back to a blind tunnel).
        Tunnel => "tunnel",
        /// A CONNECT to a host on `tls.bypass`.
        TlsBypass => "tls_bypass",
        /// What follows an accepted protocol upgrade. No longer counted: WebSocket, the
        /// only upgrade let through, has its client's messages inspected (`proxy::websocket`);
        /// the series stays, at 0, for dashboards that plot it.
        Upgrade => "upgrade",
    }
}

label_enum! {
    /// Why inspecting a request failed: `egress_dlp_scan_errors_total{reason}`.
    ScanError {
        /// The proxy failed internally while inspecting (a task panicked, a bug).
        Internal => "internal",
        /// A body could not be decoded (corrupt compression or archive, decoder limit).
        Decode => "decode",
    }
}

label_enum! {
    /// Upstream failure kinds: `egress_dlp_upstream_errors_total{kind}`.
    UpstreamError {
        /// The host name does not resolve.
        Dns => "dns",
        /// The connection was refused or failed.
        Connect => "connect",
        /// No connection within `limits.upstream_connect_timeout`.
        ConnectTimeout => "connect_timeout",
        /// No response within `limits.upstream_response_timeout`.
        Timeout => "timeout",
        /// The connection broke or the answer was not valid HTTP.
        Protocol => "protocol",
        /// The upstream TLS handshake or certificate verification failed.
        Tls => "tls",
    }
}

label_enum! {
    /// The TLS fate of one CONNECT: `egress_dlp_tls_interceptions_total{outcome}`.
    TlsOutcome {
        /// The client's handshake with the proxy succeeded and the upstream's did not fail
        /// (done, or left to each request when the upstream could not be reached): the
        /// traffic inside is inspected. A refused server name counts here too: every
        /// request inside gets the block page.
        Intercepted => "intercepted",
        /// The host is on `tls.bypass`: blind tunnel.
        Bypassed => "bypassed",
        /// Interception is off (`tls.intercept: false`): blind tunnel.
        Disabled => "disabled",
        /// The upstream's TLS failed (handshake, certificate) and the client's handshake
        /// with the proxy succeeded: every request inside gets a 502 page that says why.
        UpstreamFailed => "upstream_failed",
        /// The client's TLS handshake with the proxy did not complete (the client left
        /// before the hand-over, no ClientHello, a failed or timed-out handshake, no HTTP
        /// protocol offered, no certificate could be minted, a server name whose verdict
        /// could not be recorded): nothing inside was read. The handshake failures proper
        /// also count a reason in `egress_dlp_tls_client_handshake_failures_total`.
        ClientFailed => "client_failed",
    }
}

label_enum! {
    /// What became of an audit event: `egress_dlp_audit_events_total{result}`.
    AuditResult {
        /// Written to the audit log.
        Written => "written",
        /// Lost: the queue was full or the sink stayed unwritable (`audit.required: false`).
        Dropped => "dropped",
        /// Not accepted, and so its request refused (`audit.required: true`).
        Refused => "refused",
    }
}

label_enum! {
    /// Audit sink operations that can fail: `egress_dlp_audit_sink_errors_total{op}`.
    AuditOp {
        /// Opening (or reopening) the log file.
        Open => "open",
        /// Writing events.
        Write => "write",
        /// Flushing to the file.
        Flush => "flush",
        /// Renaming files for a size rotation.
        Rotate => "rotate",
    }
}

label_enum! {
    /// Why the audit log was rotated: `egress_dlp_audit_rotations_total{trigger}`.
    Rotation {
        /// It reached `audit.rotate_bytes`.
        Size => "size",
        /// SIGHUP: the file was reopened (after an external rotation).
        Reopen => "reopen",
        /// The file at the path was deleted or replaced behind the writer: a new one was
        /// opened.
        Replaced => "replaced",
    }
}

label_enum! {
    /// Result of loading a rule set: `egress_dlp_rules_reloads_total{result}`.
    ReloadResult {
        /// Loaded and active.
        Success => "success",
        /// Refused; the previous set stays active.
        Failure => "failure",
    }
}

/// A counter family with its children resolved for every label value of `L`.
struct Counters<L: Label> {
    children: Vec<IntCounter>,
    _label: std::marker::PhantomData<L>,
}

impl<L: Label> Counters<L> {
    fn new(registry: &Registry, name: &str, help: &str, label: &str) -> Counters<L> {
        let vec = counter_vec(registry, (name, help), label, []);
        Counters {
            children: L::ALL
                .iter()
                .map(|l| vec.with_label_values(&[l.as_str()]))
                .collect(),
            _label: std::marker::PhantomData,
        }
    }

    fn inc(&self, label: L) {
        self.children[label.index()].inc();
    }

    fn add(&self, label: L, n: u64) {
        self.children[label.index()].inc_by(n);
    }
}

/// Every metric of one running proxy.
pub struct Metrics {
    registry: Registry,
    requests: Counters<Outcome>,
    messages: Counters<MessageOutcome>,
    request_seconds: Vec<Histogram>,
    request_body_bytes: Histogram,
    findings_vec: IntCounterVec,
    /// Per rule index of the rule set in force (replaced by a reload).
    /// Each rule's counter with its id, in the rule set's order (a finding's index).
    findings: std::sync::RwLock<Vec<(String, IntCounter)>>,
    scanned_bytes: IntCounter,
    scan_seconds: Histogram,
    scan_errors: Counters<ScanError>,
    not_scanned: Counters<NotScanned>,
    upstream_errors: Counters<UpstreamError>,
    upstream_seconds: Histogram,
    active_connections: IntGauge,
    rules_loaded: IntGauge,
    rules_reloads: Counters<ReloadResult>,
    audit_events: Counters<AuditResult>,
    audit_sink_errors: Counters<AuditOp>,
    audit_sink_up: IntGauge,
    audit_queue: IntGauge,
    audit_rotations: Counters<Rotation>,
    tls_interceptions: Counters<TlsOutcome>,
    tls_handshake_failures: IntCounterVec,
    tls_leaf_cache: IntGauge,
    tls_leaf_mints: IntCounter,
    tls_leaf_mint_failures: IntCounter,
    tls_upstream_reused: IntCounter,
    tls_upstream_failures: IntCounterVec,
    /// The interception counters, copied into the TLS families above at each scrape.
    tls: std::sync::Mutex<Option<TlsWatch>>,
    auth_attempts: IntCounterVec,
    auth_failure_evictions: IntCounter,
    auth_cache_evictions: IntCounter,
    /// The authentication counters, copied into the families above at each scrape.
    auth: std::sync::Mutex<Option<AuthWatch>>,
}

/// Interception counters read at scrape time, with what was already exported: the three
/// plain counters, then one per upstream failure reason.
struct TlsWatch {
    stats: std::sync::Arc<crate::tls::Stats>,
    exported: Vec<u64>,
}

/// Authentication counters read at scrape time, with what was already exported.
struct AuthWatch {
    counters: std::sync::Arc<crate::policy::identity::AuthCounters>,
    exported: Vec<u64>,
}

/// Reads one authentication counter.
type AuthRead = fn(&crate::policy::identity::AuthCounters) -> u64;

/// `egress_dlp_auth_attempts_total{result}` values, and how each is read.
const AUTH_RESULTS: &[(&str, AuthRead)] = &[
    ("success", |c| {
        c.success.load(std::sync::atomic::Ordering::Relaxed)
    }),
    ("cached", |c| {
        c.cached.load(std::sync::atomic::Ordering::Relaxed)
    }),
    ("failure", |c| {
        c.failure.load(std::sync::atomic::Ordering::Relaxed)
    }),
    ("malformed", |c| {
        c.malformed.load(std::sync::atomic::Ordering::Relaxed)
    }),
    ("missing", |c| {
        c.missing.load(std::sync::atomic::Ordering::Relaxed)
    }),
    ("client_map", |c| {
        c.client_map.load(std::sync::atomic::Ordering::Relaxed)
    }),
    ("rate_limited", |c| {
        c.rate_limited.load(std::sync::atomic::Ordering::Relaxed)
    }),
    ("failure_evictions", |c| {
        c.failure_evictions
            .load(std::sync::atomic::Ordering::Relaxed)
    }),
    ("cache_evictions", |c| {
        c.cache_evictions.load(std::sync::atomic::Ordering::Relaxed)
    }),
];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("each metric registered once");
    h
}

/// Moves `counter` up to `now`, a source counter's value, of which `exported` was already
/// counted.
fn export(counter: &IntCounter, now: u64, exported: &mut u64) {
    counter.inc_by(now.saturating_sub(*exported));
    *exported = now;
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("each metric registered once");
    c
}

/// A counter family with one label, registered, with a zero series for each of `values`.
fn counter_vec<'a>(
    registry: &Registry,
    (name, help): (&str, &str),
    label: &str,
    values: impl IntoIterator<Item = &'a str>,
) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
    registry
        .register(Box::new(v.clone()))
        .expect("each metric registered once");
    for value in values {
        v.with_label_values(&[value]);
    }
    v
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("each metric registered once");
    g
}

impl Metrics {
    /// Creates every family in a registry of its own, with a zero series for every label
    /// value and for every rule of `rules`.
    pub fn new(rules: &RuleSet) -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let request_seconds_vec = HistogramVec::new(
            HistogramOpts::new(
                "egress_dlp_request_duration_seconds",
                "Time from a request's head to its response head, by outcome.",
            )
            .buckets(REQUEST_SECONDS.to_vec()),
            &["action"],
        )
        .expect("valid metric");
        r.register(Box::new(request_seconds_vec.clone()))
            .expect("each metric registered once");
        let findings_vec = IntCounterVec::new(
            Opts::new(
                "egress_dlp_findings_total",
                "Matches found in inspected requests, by rule id.",
            ),
            &["rule"],
        )
        .expect("valid metric");
        r.register(Box::new(findings_vec.clone()))
            .expect("each metric registered once");
        let build = IntGaugeVec::new(
            Opts::new("egress_dlp_build_info", "Always 1; the version as a label."),
            &["version"],
        )
        .expect("valid metric");
        r.register(Box::new(build.clone()))
            .expect("each metric registered once");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        let metrics = Metrics {
            requests: Counters::new(
                r,
                "egress_dlp_requests_total",
                "Requests by outcome: allow, log, block (the verdict), tunnel (CONNECT), \
                 refused (before a verdict), error (failed before a verdict).",
                "action",
            ),
            messages: Counters::new(
                r,
                "egress_dlp_websocket_messages_total",
                "WebSocket messages clients sent, by outcome: allow, log, block (the verdict), \
                 refused (the connection was closed on it before a verdict).",
                "action",
            ),
            request_seconds: Outcome::ALL
                .iter()
                .map(|o| request_seconds_vec.with_label_values(&[o.as_str()]))
                .collect(),
            request_body_bytes: histogram(
                r,
                "egress_dlp_request_body_bytes",
                "Request body size of inspected requests, in bytes.",
                BODY_BYTES,
            ),
            findings: std::sync::RwLock::new(
                rules
                    .rules()
                    .iter()
                    .map(|rule| {
                        let counter = findings_vec.with_label_values(&[rule.id.as_str()]);
                        (rule.id.clone(), counter)
                    })
                    .collect(),
            ),
            findings_vec: findings_vec.clone(),
            auth_attempts: counter_vec(
                r,
                (
                    "egress_dlp_auth_attempts_total",
                    "Proxy authentication attempts by result (policy.auth).",
                ),
                "result",
                AUTH_RESULTS[..7].iter().map(|&(result, _)| result),
            ),
            auth_failure_evictions: {
                let c = IntCounter::new(
                    "egress_dlp_auth_failure_evictions_total",
                    "Failed-login entries forgotten early because the table was full.",
                )
                .expect("valid metric");
                r.register(Box::new(c.clone()))
                    .expect("each metric registered once");
                c
            },
            auth_cache_evictions: {
                let c = IntCounter::new(
                    "egress_dlp_auth_cache_evictions_total",
                    "Verified credentials forgotten early because the cache was full.",
                )
                .expect("valid metric");
                r.register(Box::new(c.clone()))
                    .expect("each metric registered once");
                c
            },
            auth: std::sync::Mutex::new(None),
            scanned_bytes: {
                let c = IntCounter::new(
                    "egress_dlp_scanned_bytes_total",
                    "Bytes inspected by the engine (request targets and bodies).",
                )
                .expect("valid metric");
                r.register(Box::new(c.clone()))
                    .expect("each metric registered once");
                c
            },
            scan_seconds: histogram(
                r,
                "egress_dlp_scan_duration_seconds",
                "Engine time spent inspecting one request, in seconds.",
                SCAN_SECONDS,
            ),
            scan_errors: Counters::new(
                r,
                "egress_dlp_scan_errors_total",
                "Requests whose inspection failed, by reason.",
                "reason",
            ),
            not_scanned: Counters::new(
                r,
                "egress_dlp_not_scanned_total",
                "Requests or tunnels whose content passed uninspected, by reason.",
                "reason",
            ),
            upstream_errors: Counters::new(
                r,
                "egress_dlp_upstream_errors_total",
                "Upstream failures, by kind.",
                "kind",
            ),
            upstream_seconds: histogram(
                r,
                "egress_dlp_upstream_response_seconds",
                "Time from sending a request upstream to the upstream's response head, in seconds.",
                REQUEST_SECONDS,
            ),
            active_connections: gauge(
                r,
                "egress_dlp_active_connections",
                "Client connections open now.",
            ),
            rules_loaded: gauge(
                r,
                "egress_dlp_rules_loaded",
                "Rules in the active rule set.",
            ),
            rules_reloads: Counters::new(
                r,
                "egress_dlp_rules_reloads_total",
                "Rule-set loads, by result.",
                "result",
            ),
            audit_events: Counters::new(
                r,
                "egress_dlp_audit_events_total",
                "Audit events by result: written, dropped, refused (its request was refused).",
                "result",
            ),
            audit_sink_errors: Counters::new(
                r,
                "egress_dlp_audit_sink_errors_total",
                "Audit log failures, by operation.",
                "op",
            ),
            audit_sink_up: gauge(
                r,
                "egress_dlp_audit_sink_up",
                "1 while the audit log is writable, 0 while it is failing.",
            ),
            audit_queue: gauge(
                r,
                "egress_dlp_audit_queue_events",
                "Audit events accepted but not yet written.",
            ),
            audit_rotations: Counters::new(
                r,
                "egress_dlp_audit_rotations_total",
                "Audit log rotations, by trigger.",
                "trigger",
            ),
            tls_interceptions: Counters::new(
                r,
                "egress_dlp_tls_interceptions_total",
                "CONNECT requests by TLS outcome.",
                "outcome",
            ),
            tls_handshake_failures: counter_vec(
                r,
                (
                    "egress_dlp_tls_client_handshake_failures_total",
                    "Client TLS handshakes with the proxy that failed, by reason.",
                ),
                "reason",
                crate::tls::ClientFailure::ALL.map(|reason| reason.label()),
            ),
            tls_leaf_cache: gauge(
                r,
                "egress_dlp_tls_leaf_cache_certificates",
                "Minted leaf certificates in the cache.",
            ),
            tls_leaf_mints: counter(
                r,
                "egress_dlp_tls_leaf_mints_total",
                "Leaf certificates minted for intercepted hosts.",
            ),
            tls_leaf_mint_failures: counter(
                r,
                "egress_dlp_tls_leaf_mint_failures_total",
                "Leaf certificates that could not be minted.",
            ),
            tls_upstream_reused: counter(
                r,
                "egress_dlp_tls_upstream_reused_total",
                "Intercepted CONNECTs served by a pooled, already verified upstream connection.",
            ),
            // Its series appear with `watch_tls` (interception on).
            tls_upstream_failures: counter_vec(
                r,
                (
                    "egress_dlp_tls_upstream_handshake_failures_total",
                    "Upstream TLS handshakes that failed, by reason.",
                ),
                "reason",
                [],
            ),
            tls: std::sync::Mutex::new(None),
            registry,
        };
        metrics.rules_loaded.set(rules.rules().len() as i64);
        metrics
    }

    /// Exports these interception counters from now on.
    pub fn watch_tls(&self, stats: std::sync::Arc<crate::tls::Stats>) {
        for reason in crate::tls::UpstreamFailure::ALL {
            self.tls_upstream_failures
                .with_label_values(&[reason.label()]);
        }
        *self.tls.lock().unwrap_or_else(|p| p.into_inner()) = Some(TlsWatch {
            stats,
            exported: vec![0; 3 + crate::tls::UpstreamFailure::ALL.len()],
        });
    }

    /// Brings the TLS families up to the interception counters' values.
    fn sync_tls(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut watch = self.tls.lock().unwrap_or_else(|p| p.into_inner());
        let Some(watch) = watch.as_mut() else { return };
        let stats = &watch.stats;
        self.tls_leaf_cache
            .set(i64::try_from(stats.leaf_cache_size.load(Relaxed)).unwrap_or(i64::MAX));
        let plain = [
            (&self.tls_leaf_mints, stats.leaf_mints.load(Relaxed)),
            (
                &self.tls_leaf_mint_failures,
                stats.leaf_mint_failures.load(Relaxed),
            ),
            (
                &self.tls_upstream_reused,
                stats.upstream_reused.load(Relaxed),
            ),
        ];
        let failures = stats.upstream_failures();
        let counters =
            plain
                .iter()
                .map(|&(c, now)| (c.clone(), now))
                .chain(failures.iter().map(|&(reason, now)| {
                    (self.tls_upstream_failures.with_label_values(&[reason]), now)
                }));
        for ((counter, now), exported) in counters.zip(&mut watch.exported) {
            export(&counter, now, exported);
        }
    }

    /// Exports these authentication counters from now on.
    pub fn watch_auth(&self, counters: std::sync::Arc<crate::policy::identity::AuthCounters>) {
        *self.auth.lock().unwrap_or_else(|p| p.into_inner()) = Some(AuthWatch {
            counters,
            exported: vec![0; AUTH_RESULTS.len()],
        });
    }

    /// A reload loaded `rules`: findings count under their ids from now on.
    pub fn rules_changed(&self, rules: &RuleSet) {
        *self.findings.write().unwrap_or_else(|p| p.into_inner()) = rules
            .rules()
            .iter()
            .map(|rule| {
                let counter = self.findings_vec.with_label_values(&[rule.id.as_str()]);
                (rule.id.clone(), counter)
            })
            .collect();
    }

    /// Brings the authentication families up to the counters' values.
    fn sync_auth(&self) {
        let mut watch = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        let Some(watch) = watch.as_mut() else { return };
        for (i, (result, read)) in AUTH_RESULTS.iter().enumerate() {
            let counter = match *result {
                "failure_evictions" => self.auth_failure_evictions.clone(),
                "cache_evictions" => self.auth_cache_evictions.clone(),
                _ => self.auth_attempts.with_label_values(&[result]),
            };
            export(&counter, read(&watch.counters), &mut watch.exported[i]);
        }
    }

    /// The text exposition of every family (`/metrics`).
    pub fn encode(&self) -> String {
        self.sync_auth();
        self.sync_tls();
        let mut out = Vec::with_capacity(16 << 10);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("the text encoder writes to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// One request ended with `outcome` after `elapsed`.
    pub fn request(&self, outcome: Outcome, elapsed: Duration) {
        self.requests.inc(outcome);
        self.request_seconds[outcome.index()].observe(elapsed.as_secs_f64());
    }

    /// One inspected request's scan: its findings (matches per rule index), the bytes the
    /// engine saw, the body size and the engine time.
    pub fn inspected(
        &self,
        findings: &crate::scan::Findings,
        body_bytes: u64,
        scan_time: Duration,
    ) {
        let counters = self.findings.read().unwrap_or_else(|p| p.into_inner());
        for f in &findings.rules {
            // By index while the rule set is the request's; a request judged by the rules
            // before a reload that reordered them is counted by its rule's id (found in
            // review: its emails were counted under another rule).
            match counters.get(f.index) {
                Some((id, counter)) if *id == f.rule => counter.inc_by(f.count),
                _ => self
                    .findings_vec
                    .with_label_values(&[f.rule.as_str()])
                    .inc_by(f.count),
            }
        }
        self.scanned_bytes.inc_by(findings.bytes);
        self.request_body_bytes.observe(body_bytes as f64);
        self.scan_seconds.observe(scan_time.as_secs_f64());
    }

    /// Inspecting a request failed.
    pub fn scan_error(&self, reason: ScanError) {
        self.scan_errors.inc(reason);
    }

    /// A WebSocket message a client sent was judged (or refused).
    pub fn websocket_message(&self, outcome: MessageOutcome) {
        self.messages.inc(outcome);
    }

    /// Traffic passed uninspected.
    pub fn not_scanned(&self, reason: NotScanned) {
        self.not_scanned.inc(reason);
    }

    /// An upstream failed.
    pub fn upstream_error(&self, kind: UpstreamError) {
        self.upstream_errors.inc(kind);
    }

    /// An upstream started answering `elapsed` after the request was sent.
    pub fn upstream_response(&self, elapsed: Duration) {
        self.upstream_seconds.observe(elapsed.as_secs_f64());
    }

    /// A client connection opened; the connection is counted until the guard is dropped.
    pub fn connection(&self) -> ConnectionGauge {
        self.active_connections.inc();
        ConnectionGauge(self.active_connections.clone())
    }

    /// A rule set was loaded (`Some(rule count)`) or refused (`None`).
    pub fn rules_reload(&self, loaded: Option<usize>) {
        match loaded {
            Some(n) => {
                self.rules_reloads.inc(ReloadResult::Success);
                self.rules_loaded.set(n as i64);
            }
            None => self.rules_reloads.inc(ReloadResult::Failure),
        }
    }

    /// Audit events reached `result`.
    pub fn audit_events(&self, result: AuditResult, n: u64) {
        self.audit_events.add(result, n);
    }

    /// An audit sink operation failed.
    pub fn audit_sink_error(&self, op: AuditOp) {
        self.audit_sink_errors.inc(op);
    }

    /// Whether the audit log is writable now.
    pub fn audit_sink_up(&self, up: bool) {
        self.audit_sink_up.set(i64::from(up));
    }

    /// Events waiting to be written.
    pub fn audit_queue(&self, events: usize) {
        self.audit_queue.set(events as i64);
    }

    /// The audit log was rotated.
    pub fn audit_rotated(&self, trigger: Rotation) {
        self.audit_rotations.inc(trigger);
    }

    /// Records the TLS fate of one CONNECT (call once per CONNECT).
    pub fn tls_interception(&self, outcome: TlsOutcome) {
        self.tls_interceptions.inc(outcome);
    }

    /// A client's TLS handshake with the proxy failed (call as well as
    /// `tls_interception(TlsOutcome::ClientFailed)`):
    /// `egress_dlp_tls_client_handshake_failures_total{reason}`, the reasons of
    /// [`crate::tls::ClientFailure`] (the same as the interception stats').
    pub fn tls_client_handshake_failed(&self, reason: crate::tls::ClientFailure) {
        self.tls_handshake_failures
            .with_label_values(&[reason.label()])
            .inc();
    }
}

/// Counts one open client connection until dropped.
#[derive(Debug)]
pub struct ConnectionGauge(IntGauge);

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Engine time of one request: wraps its [`Stream`](crate::scan::Stream) and times every
/// call into it, so that `scan_duration_seconds` is the time spent scanning, not the time
/// spent waiting for body bytes.
pub struct TimedScan<'e> {
    scan: crate::decode::Inspection<'e>,
    spent: Duration,
}

impl<'e> TimedScan<'e> {
    /// Starts timing `scan`.
    pub fn new(scan: crate::decode::Inspection<'e>) -> TimedScan<'e> {
        TimedScan {
            scan,
            spent: Duration::ZERO,
        }
    }

    fn timed<T>(&mut self, f: impl FnOnce(&mut crate::decode::Inspection<'e>) -> T) -> T {
        let start = std::time::Instant::now();
        let out = f(&mut self.scan);
        self.spent += start.elapsed();
        out
    }

    /// [`Inspection::feed_target`](crate::decode::Inspection::feed_target), timed.
    pub fn feed_target(&mut self, path_and_query: &[u8]) {
        self.timed(|s| s.feed_target(path_and_query));
    }

    /// [`Inspection::feed_header`](crate::decode::Inspection::feed_header), timed.
    pub fn feed_header(&mut self, value: &[u8]) {
        self.timed(|s| s.feed_header(value));
    }

    /// [`Inspection::feed`](crate::decode::Inspection::feed), timed.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.timed(|s| s.feed(chunk));
    }

    /// Bytes through the engine so far (every decoded layer included).
    pub fn bytes(&self) -> u64 {
        self.scan.scanned_bytes()
    }

    /// [`Inspection::matches`](crate::decode::Inspection::matches).
    pub fn matches(&self) -> u64 {
        self.scan.matches()
    }

    /// [`Inspection::findings`](crate::decode::Inspection::findings), timed.
    pub fn findings(&mut self) -> crate::scan::Findings {
        self.timed(|s| s.findings())
    }

    /// [`Inspection::counts`](crate::decode::Inspection::counts), timed.
    pub fn counts(&mut self) -> crate::scan::Findings {
        self.timed(|s| s.counts())
    }

    /// [`Inspection::counts_with_values`](crate::decode::Inspection::counts_with_values),
    /// timed.
    pub fn counts_with_values(&mut self, wanted: &dyn Fn(&str) -> bool) -> crate::scan::Findings {
        self.timed(|s| s.counts_with_values(wanted))
    }

    /// [`Inspection::flush_pending`](crate::decode::Inspection::flush_pending), timed.
    pub fn flush_pending(&mut self) {
        self.timed(|s| s.flush_pending());
    }

    /// [`Inspection::undecided`](crate::decode::Inspection::undecided).
    pub fn undecided(&self) -> bool {
        self.scan.undecided()
    }

    /// Why the request is already known not to be fully inspectable, if it is.
    pub fn not_scanned(&self) -> Option<&crate::decode::NotScanned> {
        self.scan.not_scanned()
    }

    /// Time spent decoding and scanning so far.
    pub fn spent(&self) -> Duration {
        self.spent
    }

    /// [`Inspection::finish`](crate::decode::Inspection::finish), timed: the outcome and
    /// the total time.
    pub fn finish(self) -> (crate::decode::Outcome, Duration) {
        let start = std::time::Instant::now();
        let outcome = self.scan.finish();
        (outcome, self.spent + start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RuleSet {
        crate::rules::load_dir(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/rules"
        )))
        .expect("fixture rules load")
    }

    #[test]
    fn every_series_exists_at_zero_before_it_moves() {
        let set = rules();
        let m = Metrics::new(&set);
        let text = m.encode();
        for o in Outcome::ALL {
            let series = format!("egress_dlp_requests_total{{action=\"{}\"}} 0", o.as_str());
            assert!(text.contains(&series), "{series} missing");
        }
        for rule in set.rules() {
            let series = format!("egress_dlp_findings_total{{rule=\"{}\"}} 0", rule.id);
            assert!(text.contains(&series), "{series} missing");
        }
        for r in crate::tls::ClientFailure::ALL {
            let series = format!(
                "egress_dlp_tls_client_handshake_failures_total{{reason=\"{}\"}} 0",
                r.label()
            );
            assert!(text.contains(&series), "{series} missing");
        }
        assert!(text.contains(&format!("egress_dlp_rules_loaded {}", set.rules().len())));
        assert!(text.contains("egress_dlp_build_info{version="));
    }

    /// The interception counters reach `/metrics` at each scrape, as deltas: a scrape after
    /// no change adds nothing, and the leaf cache gauge follows the cache.
    #[test]
    fn tls_stats_are_copied_at_each_scrape() {
        use std::sync::atomic::Ordering::Relaxed;
        let m = Metrics::new(&rules());
        let stats = std::sync::Arc::new(crate::tls::Stats::default());
        m.watch_tls(stats.clone());
        let text = m.encode();
        assert!(
            text.contains("egress_dlp_tls_upstream_reused_total 0"),
            "{text}"
        );
        assert!(text.contains("egress_dlp_tls_leaf_cache_certificates 0"));
        for r in crate::tls::UpstreamFailure::ALL {
            let series = format!(
                "egress_dlp_tls_upstream_handshake_failures_total{{reason=\"{}\"}} 0",
                r.label()
            );
            assert!(text.contains(&series), "{series} missing");
        }
        stats.upstream_reused.fetch_add(3, Relaxed);
        stats.leaf_mints.fetch_add(2, Relaxed);
        stats.leaf_mint_failures.fetch_add(1, Relaxed);
        stats.leaf_cache_size.store(2, Relaxed);
        stats.upstream_failures[0].fetch_add(4, Relaxed);
        let reason = crate::tls::UpstreamFailure::ALL[0].label();
        for _ in 0..2 {
            let text = m.encode();
            assert!(
                text.contains("egress_dlp_tls_upstream_reused_total 3"),
                "{text}"
            );
            assert!(text.contains("egress_dlp_tls_leaf_mints_total 2"));
            assert!(text.contains("egress_dlp_tls_leaf_mint_failures_total 1"));
            assert!(text.contains("egress_dlp_tls_leaf_cache_certificates 2"));
            assert!(text.contains(&format!(
                "egress_dlp_tls_upstream_handshake_failures_total{{reason=\"{reason}\"}} 4"
            )));
        }
        stats.leaf_cache_size.store(1, Relaxed);
        assert!(
            m.encode()
                .contains("egress_dlp_tls_leaf_cache_certificates 1")
        );
    }

    #[test]
    fn every_name_has_the_prefix_and_counters_end_in_total() {
        let m = Metrics::new(&rules());
        for line in m.encode().lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut words = line.split_whitespace().skip(2);
            let (name, kind) = (words.next().unwrap(), words.next().unwrap());
            assert!(name.starts_with("egress_dlp_"), "{name}");
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "{name} is a {kind}"
            );
        }
    }

    #[test]
    fn connection_gauge_counts_until_dropped() {
        let m = Metrics::new(&rules());
        let a = m.connection();
        let b = m.connection();
        assert!(m.encode().contains("egress_dlp_active_connections 2"));
        drop(a);
        drop(b);
        assert!(m.encode().contains("egress_dlp_active_connections 0"));
    }

    #[test]
    fn label_values_are_unique_per_family() {
        fn unique<L: Label>() {
            let mut seen: Vec<&str> = L::ALL.iter().map(|l| l.as_str()).collect();
            let n = seen.len();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), n);
            for (i, l) in L::ALL.iter().enumerate() {
                assert_eq!(l.index(), i);
            }
        }
        unique::<Outcome>();
        unique::<NotScanned>();
        unique::<ScanError>();
        unique::<UpstreamError>();
        unique::<TlsOutcome>();
        unique::<AuditResult>();
        unique::<AuditOp>();
        unique::<Rotation>();
        unique::<ReloadResult>();
    }
}
