//! The audit log: one JSON object per line for every logged or blocked request (and, with
//! `audit.all_requests`, every request), written off the request path.
//!
//! - **Schema** ([`Event`]): time, request id, client address, user, method, host, port,
//!   path (never the query), action, bytes scanned, and per rule that found something its
//!   id, category, count, distinct count and up to three masked samples, each with an
//!   HMAC-SHA256 fingerprint of the value ([`fingerprint`]); plus the thresholds crossed.
//!   A raw identifier or secret is never written: a path segment the engine matched is
//!   masked too.
//! - **Writing** ([`sink`]): [`Auditor::submit`] only counts the event in and hands it to a
//!   dedicated writer thread (a bounded queue: `audit.queue` events); the thread writes
//!   batches, flushes after each, rotates by size (`audit.rotate_bytes`, keeping
//!   `audit.keep` files) and reopens the file on [`Auditor::reopen`] (SIGHUP).
//!   [`Auditor::close`] writes what was accepted and syncs it before shutdown returns.
//! - **Failure**: when the file cannot be opened or written, `egress_dlp_audit_sink_up`
//!   drops to 0, `egress_dlp_audit_sink_errors_total{op}` counts it, one warning says so
//!   (and one line when it recovers), and accepted events wait, retried every second, up to
//!   the queue bound. With `audit.required: true`, a request whose event cannot be
//!   accepted — sink down or queue full — is refused instead of passing unrecorded;
//!   otherwise the event is dropped and counted.
//!
//! Not here: deciding what to record (the proxy calls [`Auditor::submit`] with a verdict),
//! shipping the log elsewhere (a log shipper reads the file), the user's identity (a later
//! issue fills `user`).

pub mod fingerprint;
pub mod sink;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::SystemTime;

use serde::Serialize;

use crate::config::Audit as AuditConfig;
use crate::metrics::{AuditResult, Metrics};
use crate::policy::{Action, Reason, Verdict};
use crate::scan::Findings;
pub use fingerprint::{FingerprintKey, SampleValues};

/// One audit event: one line of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// When the verdict was reached (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// The request id (also on the block page and the log lines).
    pub request_id: String,
    /// The client's address.
    pub client: IpAddr,
    /// The authenticated user, when the proxy knows one.
    pub user: Option<String>,
    /// Request method.
    pub method: String,
    /// Destination host.
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Request path, without the query; values the rules matched in it are masked.
    pub path: String,
    /// What was done: `allow`, `log` or `block`.
    pub action: Action,
    /// The block was decided before the end of a body larger than the hold limit: part of
    /// it had gone upstream and the counts are those found up to that point.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// Bytes inspected (target and body).
    pub bytes: u64,
    /// Per rule that found something.
    pub rules: Vec<RuleEvent>,
    /// The thresholds crossed.
    pub reasons: Vec<Reason>,
    /// Why the content was not inspected, when it was not (a tunnel with `all_requests`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_scanned: Option<&'static str>,
    /// The `policy.destinations.blocked` pattern that refused the request, when one did
    /// (nothing was scanned then; the path is left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_blocked: Option<String>,
}

/// What one rule found in the request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RuleEvent {
    /// Rule id.
    pub rule: String,
    /// Rule category.
    pub category: String,
    /// Matches.
    pub count: u64,
    /// Distinct values.
    pub distinct: u64,
    /// More distinct values were seen than are counted.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub distinct_capped: bool,
    /// Masked samples of the first distinct values, with their fingerprints.
    pub samples: Vec<Sample>,
}

/// One masked value.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Sample {
    /// The value masked (`j***@acme-corp.io`).
    pub masked: String,
    /// HMAC-SHA256 of the normalised value (hex), keyed by `DATA_DIR/audit-hmac.key`;
    /// `null` when the proxy no longer held the bytes to tell which value it was.
    pub fingerprint: Option<String>,
}

/// Who sent a request and where it went: the part of an [`Event`] known before the verdict.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// Request id.
    pub request_id: String,
    /// Client address.
    pub client: IpAddr,
    /// Authenticated user, if any.
    pub user: Option<String>,
    /// Method.
    pub method: String,
    /// Destination host.
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Path without the query.
    pub path: String,
}

/// The current time as the audit log writes it.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Why an event was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unrecorded {
    /// The audit log cannot be written now.
    #[error("the audit log cannot be written")]
    SinkDown,
    /// Too many events are waiting to be written.
    #[error("the audit queue is full")]
    QueueFull,
    /// The writer has stopped (shutting down).
    #[error("the audit writer has stopped")]
    Closed,
}

/// State shared by the [`Auditor`] handles and the writer thread.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The file is writable (last open or write succeeded).
    up: AtomicBool,
    /// Events accepted and not yet written or dropped.
    depth: AtomicUsize,
    metrics: Arc<Metrics>,
}

/// The handle requests use to record events; cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    tx: std::sync::mpsc::Sender<sink::Msg>,
    shared: Arc<Shared>,
    key: FingerprintKey,
    required: bool,
    all_requests: bool,
    queue: usize,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("required", &self.required)
            .field("all_requests", &self.all_requests)
            .finish_non_exhaustive()
    }
}

impl Auditor {
    /// Loads (or creates) the fingerprint key in `data_dir` and starts the writer thread on
    /// `config.path`. A log file that cannot be opened is not an error here: the sink
    /// starts down, says so, and retries. A key that cannot be read or created is.
    pub fn start(
        config: &AuditConfig,
        data_dir: &std::path::Path,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Auditor, sink::Writer)> {
        let key = FingerprintKey::load_or_create(data_dir)?;
        let shared = Arc::new(Shared {
            up: AtomicBool::new(false),
            depth: AtomicUsize::new(0),
            metrics,
        });
        let (tx, writer) = sink::spawn(config, shared.clone())?;
        Ok((
            Auditor {
                tx,
                shared,
                key,
                required: config.required,
                all_requests: config.all_requests,
                queue: config.queue,
            },
            writer,
        ))
    }

    /// Whether `action` calls for an event (log and block always; allow with
    /// `audit.all_requests`).
    pub fn wants(&self, action: Action) -> bool {
        self.all_requests || action != Action::Allow
    }

    /// Whether a request must be refused when its event is not accepted.
    pub fn required(&self) -> bool {
        self.required
    }

    /// Whether the audit log is writable now.
    pub fn sink_up(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }

    /// Builds the event for a verdict: samples with fingerprints recovered from `seen` (the
    /// bytes the engine was fed, or a prefix of them), the path with matched values masked,
    /// both by `samples` of the rule set that made `findings` (found in review: the rule set
    /// the process started with masked nothing of a rule a reload added).
    pub fn event(
        &self,
        samples: &SampleValues,
        meta: RequestMeta,
        verdict: &Verdict,
        findings: &Findings,
        seen: &[u8],
        partial: bool,
    ) -> Event {
        let rules = findings
            .rules
            .iter()
            .map(|f| {
                let fingerprints = if f.samples.is_empty() {
                    Vec::new()
                } else {
                    samples.fingerprints(&self.key, f, seen)
                };
                RuleEvent {
                    rule: f.rule.clone(),
                    category: f.category.clone(),
                    count: f.count,
                    distinct: f.distinct,
                    distinct_capped: f.distinct_capped,
                    samples: f
                        .samples
                        .iter()
                        .zip(fingerprints.into_iter().chain(std::iter::repeat(None)))
                        .map(|(masked, fingerprint)| Sample {
                            masked: masked.clone(),
                            fingerprint,
                        })
                        .collect(),
                }
            })
            .collect();
        Event {
            time: now(),
            path: samples.mask_path(findings, meta.path),
            request_id: meta.request_id,
            client: meta.client,
            user: meta.user,
            method: meta.method,
            // The host's labels are scanned too: an identifier there is masked like one in
            // the path (found in review).
            host: samples.mask_path(findings, meta.host),
            port: meta.port,
            action: verdict.action,
            partial,
            bytes: findings.bytes,
            rules,
            reasons: verdict.reasons.clone(),
            not_scanned: None,
            destination_blocked: None,
        }
    }

    /// Accepts an event for writing. Never blocks: the event is queued for the writer
    /// thread. Refused when the queue is full or the writer has stopped, and — with
    /// `audit.required` — also while the sink is down, since the event could not be written
    /// now; without `required` an event is accepted while the sink is down and written once
    /// it is back (or dropped when the queue overflows).
    pub fn submit(&self, event: Event) -> Result<(), Unrecorded> {
        let refuse = |why| {
            let result = if self.required {
                AuditResult::Refused
            } else {
                AuditResult::Dropped
            };
            self.shared.metrics.audit_events(result, 1);
            Err(why)
        };
        if self.required && !self.sink_up() {
            return refuse(Unrecorded::SinkDown);
        }
        let depth = self.shared.depth.fetch_add(1, Ordering::AcqRel);
        if depth >= self.queue {
            self.shared.depth.fetch_sub(1, Ordering::AcqRel);
            return refuse(Unrecorded::QueueFull);
        }
        self.shared.metrics.audit_queue(depth + 1);
        if self.tx.send(sink::Msg::Event(Box::new(event))).is_err() {
            self.shared.depth.fetch_sub(1, Ordering::AcqRel);
            return refuse(Unrecorded::Closed);
        }
        Ok(())
    }

    /// Asks the writer to reopen the log file (after an external rotation: SIGHUP).
    pub fn reopen(&self) {
        let _ = self.tx.send(sink::Msg::Reopen);
    }
}

impl SampleValues {
    /// `path` with every value a finding's rule matches in it masked (the path is written to
    /// the audit log; a customer id in it must not be).
    pub fn mask_path(&self, findings: &Findings, path: String) -> String {
        if findings.rules.is_empty() {
            return path;
        }
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(&path).collect();
        let masked = mask_base64_runs(&self.mask_matches(findings, &decoded));
        String::from_utf8_lossy(&masked).into_owned()
    }
}

/// Shortest piece of a base64 run (between `/`s) that is taken for encoded data rather
/// than a word of the path.
const BASE64_PIECE: usize = 16;

/// `path` with the encoded part of every base64 run the scanner decodes (at least
/// [`BASE64_MIN_RUN`](crate::decode::BASE64_MIN_RUN) symbols, upper- and lowercase
/// letters both) replaced by `[base64]`: values found inside it would otherwise be written
/// out, merely encoded (found in review). The short words of the path before it (`/s/`,
/// `/v1/export/`) are kept; from the first piece of [`BASE64_PIECE`] symbols on, the run
/// is hidden, and so are the lines of symbols that follow it (the scanner joins wrapped
/// lines, so they are decoded as part of it: found in review).
fn mask_base64_runs(path: &[u8]) -> Vec<u8> {
    let symbols = |from: usize| crate::decode::sniff::symbol_prefix(&path[from..]);
    let mut out = Vec::with_capacity(path.len());
    let mut at = 0;
    while at < path.len() {
        let len = symbols(at);
        if len == 0 {
            out.push(path[at]);
            at += 1;
            continue;
        }
        let run = &path[at..at + len];
        at += len;
        let decoded = len >= crate::decode::BASE64_MIN_RUN
            && run.iter().any(u8::is_ascii_uppercase)
            && run.iter().any(u8::is_ascii_lowercase);
        let mut kept = 0;
        for piece in run.split(|&b| b == b'/') {
            if piece.len() >= BASE64_PIECE {
                break;
            }
            kept += piece.len() + 1;
        }
        if !decoded || kept >= run.len() {
            out.extend_from_slice(run);
            continue;
        }
        out.extend_from_slice(&run[..kept]);
        out.extend_from_slice(b"[base64]");
        // Lines of symbols right after it go with it.
        loop {
            let brk = match path.get(at..at + 2) {
                Some(b"\r\n") => 2,
                _ if matches!(path.get(at), Some(b'\n' | b'\r')) => 1,
                _ => 0,
            };
            let more = if brk > 0 { symbols(at + brk) } else { 0 };
            if more == 0 {
                break;
            }
            at += brk + more;
        }
    }
    out
}

#[cfg(test)]
mod tests;
