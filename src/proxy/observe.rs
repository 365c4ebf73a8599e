//! What the proxy records about each request: metrics, the audit event and the one log line.
//!
//! Three calls, from the places where each thing becomes known:
//! - [`decided`], when a verdict is reached (`forward`): findings, bytes and engine time
//!   into the metrics, the verdict into the request's [`Record`], and the audit event when
//!   the verdict calls for one — refusing the request when the event cannot be recorded
//!   and `audit.required` is set;
//! - [`tunnel_opened`] / [`upgraded`], when traffic starts passing uninspected;
//! - [`finish`], once per request, from the error-page layer: the outcome counter and
//!   duration, upstream error kinds, and the request's log line (id, verdict, status, time;
//!   never its target or a value).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, StatusCode};
use tracing::{info, warn};

use super::{ProxyError, Shared};
use crate::audit::RequestMeta;
use crate::metrics::{Label, NotScanned, Outcome, ScanError};
use crate::policy::{Action, Verdict};
use crate::scan::Findings;

/// At most this many bytes of a request (target, then body) are copied to recover the
/// values behind an audit event's samples: the first distinct values are nearly always
/// early, and memory stays bounded whatever the body size; a sample whose value lies
/// beyond gets no fingerprint.
const SEEN_CAP: usize = 1 << 20;

/// One request's record, in its extensions: when it started and what was decided.
#[derive(Debug)]
pub(super) struct Record {
    started: Instant,
    /// 0: no verdict yet; else 1 + `Action as u8`.
    verdict: AtomicU8,
}

impl Record {
    /// A request starting now.
    pub(super) fn start() -> Arc<Record> {
        Arc::new(Record {
            started: Instant::now(),
            verdict: AtomicU8::new(0),
        })
    }

    /// Records a verdict; a request judged more than once (a gRPC call's head, then each
    /// message) keeps the strictest (found in review: a call whose message was blocked was
    /// counted allowed, by its head).
    fn set_verdict(&self, action: Action) {
        self.verdict.fetch_max(1 + action as u8, Ordering::Relaxed);
    }

    fn verdict(&self) -> Option<Action> {
        match self.verdict.load(Ordering::Relaxed) {
            1 => Some(Action::Allow),
            2 => Some(Action::Log),
            3 => Some(Action::Block),
            _ => None,
        }
    }
}

/// What an audit event needs to know about an inspected request besides its findings.
pub(super) struct Inspection<'a> {
    /// What the policy knows besides the findings: user, destination, overrides.
    pub(super) input: crate::policy::Input,
    /// The request id.
    pub(super) request_id: &'a str,
    /// The request's record (absent only if a layer was left out).
    pub(super) record: Option<Arc<Record>>,
    /// Client address.
    pub(super) client: IpAddr,
    /// Method.
    pub(super) method: Method,
    /// The absolute request target.
    pub(super) uri: http::Uri,
    /// Body bytes read so far.
    pub(super) body_bytes: u64,
    /// What the request has recorded in the cumulative windows so far (a body streamed
    /// past the hold limit records as it goes: see
    /// [`Windows::observe_streamed`](crate::policy::window::Windows::observe_streamed)).
    pub(super) window_recorded: std::sync::Mutex<crate::policy::window::Recorded>,
    /// The audit samples' values of the rule set that judges the request (its snapshot's).
    pub(super) samples: Arc<crate::audit::SampleValues>,
}

/// A request whose content keeps coming after its head was judged and it went upstream (a
/// WebSocket connection's messages, a gRPC call's), and what each piece of that content is
/// judged with: the request's own policy input, address, method and target, each piece as
/// a request of its own (id `<request id>-<piece>`).
pub(super) struct Ongoing {
    pub(super) shared: Arc<Shared>,
    /// The rules and policy in force when the request started: they judge all of it.
    pub(super) live: Arc<super::reload::Live>,
    pub(super) input: crate::policy::Input,
    pub(super) client: IpAddr,
    pub(super) method: Method,
    pub(super) uri: http::Uri,
    pub(super) request_id: String,
    /// The request's record, when a piece's verdict should count as the request's (a gRPC
    /// call's: it keeps the strictest); `None` for pieces counted on their own.
    pub(super) record: Option<Arc<Record>>,
}

impl Ongoing {
    /// The request `insp` describes, judged with `live`; its record only with `record`.
    pub(super) fn of(
        shared: Arc<Shared>,
        live: Arc<super::reload::Live>,
        insp: &Inspection<'_>,
        record: bool,
    ) -> Ongoing {
        Ongoing {
            shared,
            live,
            input: insp.input.clone(),
            client: insp.client,
            method: insp.method.clone(),
            uri: insp.uri.clone(),
            request_id: insp.request_id.to_owned(),
            record: insp.record.clone().filter(|_| record),
        }
    }

    /// The [`Inspection`] one piece (`id`, `body_bytes` long) is judged as.
    pub(super) fn inspection<'a>(&'a self, id: &'a str, body_bytes: u64) -> Inspection<'a> {
        Inspection {
            input: self.input.clone(),
            request_id: id,
            record: self.record.clone(),
            client: self.client,
            method: self.method.clone(),
            uri: self.uri.clone(),
            body_bytes,
            window_recorded: Default::default(),
            samples: self.live.samples.clone(),
        }
    }
}

/// The port a request goes to: its target's, else the default of its scheme (443 for
/// `https`, as a request inside an intercepted CONNECT is made absolute, and for a
/// CONNECT; 80 otherwise). Found in review: intercepted requests on 443 were recorded as
/// port 80.
pub(super) fn port_of(uri: &http::Uri, method: &Method) -> u16 {
    uri.port_u16().unwrap_or(
        if uri.scheme() == Some(&http::uri::Scheme::HTTPS) || method == Method::CONNECT {
            443
        } else {
            80
        },
    )
}

impl Inspection<'_> {
    fn meta(&self) -> RequestMeta {
        RequestMeta {
            request_id: self.request_id.to_owned(),
            client: self.client,
            user: self.input.user.as_deref().map(str::to_owned),
            method: shown_method(&self.method).to_owned(),
            host: self.uri.host().unwrap_or_default().to_owned(),
            port: port_of(&self.uri, &self.method),
            path: self.uri.path().to_owned(),
        }
    }

    /// The bytes the engine was fed, as far as they are still held and up to
    /// [`SEEN_CAP`]: the decoded target, a line break, then `held` (the body, or its held
    /// part).
    fn seen(&self, held: &[Bytes]) -> Vec<u8> {
        let target = self
            .uri
            .path_and_query()
            .map(|t| percent_encoding::percent_decode(t.as_str().as_bytes()).collect::<Vec<u8>>())
            .unwrap_or_default();
        let total = target.len() + 1 + held.iter().map(Bytes::len).sum::<usize>();
        let mut seen = Vec::with_capacity(total.min(SEEN_CAP));
        seen.extend_from_slice(&target);
        seen.push(b'\n');
        for chunk in held {
            let room = SEEN_CAP.saturating_sub(seen.len());
            seen.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        seen.truncate(SEEN_CAP.max(target.len() + 1));
        seen
    }
}

/// A verdict was reached: records it (metrics, the request's record, the audit event).
/// `held`: the body bytes still in memory; `partial`: part of the body went upstream.
/// Errs with [`ProxyError::AuditUnavailable`] when the event is required but cannot be
/// recorded and the verdict would let the request pass.
pub(super) fn decided(
    shared: &Shared,
    insp: &Inspection<'_>,
    findings: &Findings,
    scan_time: std::time::Duration,
    verdict: &Verdict,
    held: &[Bytes],
    partial: bool,
) -> Result<(), ProxyError> {
    shared
        .metrics
        .inspected(findings, insp.body_bytes, scan_time);
    if let Some(record) = &insp.record {
        record.set_verdict(verdict.action);
    }
    audit_request(shared, insp, findings, verdict, (held, partial), None)
}

/// A request refused because it could not be fully inspected (`reason`, under
/// `policy.on_inspection_error: block`): a blocked request, so it gets its audit event,
/// with what was found and `not_scanned` naming the reason (found in session 24: it got
/// none, only a log line, so a bomb or a work flood left no trace in the audit log).
pub(super) fn refused_uninspected(
    shared: &Shared,
    insp: &Inspection<'_>,
    findings: &Findings,
    verdict: &Verdict,
    (held, partial): (&[Bytes], bool),
    reason: &'static str,
) -> Result<(), ProxyError> {
    let verdict = Verdict {
        action: Action::Block,
        ..verdict.clone()
    };
    audit_request(
        shared,
        insp,
        findings,
        &verdict,
        (held, partial),
        Some(reason),
    )
}

/// Writes a request's audit event when the log wants its action.
fn audit_request(
    shared: &Shared,
    insp: &Inspection<'_>,
    findings: &Findings,
    verdict: &Verdict,
    (held, partial): (&[Bytes], bool),
    not_scanned: Option<&'static str>,
) -> Result<(), ProxyError> {
    if !shared.audit.wants(verdict.action) {
        return Ok(());
    }
    let seen = if findings.rules.is_empty() {
        Vec::new()
    } else {
        insp.seen(held)
    };
    let mut event = shared.audit.event(
        &insp.samples,
        insp.meta(),
        verdict,
        findings,
        &seen,
        partial,
    );
    event.not_scanned = not_scanned;
    match shared.audit.submit(event) {
        Ok(()) => Ok(()),
        Err(why) if shared.audit.required() && verdict.action != Action::Block => {
            Err(ProxyError::AuditUnavailable(why))
        }
        Err(why) => {
            warn!(request_id = insp.request_id, error = %why, "audit event not recorded");
            Ok(())
        }
    }
}

/// A CONNECT tunnel of `user` is about to pass bytes uninspected (`why`: a blind tunnel, a
/// bypassed host). With `audit.all_requests` it gets an event of its own (and, with
/// `audit.required`, is refused if that cannot be recorded).
pub(super) fn tunnel_opened(
    shared: &Shared,
    request_id: &str,
    (client, host, port): (IpAddr, &str, u16),
    user: Option<&str>,
    why: NotScanned,
) -> Result<(), ProxyError> {
    if shared.audit.wants(Action::Allow) {
        let user = user.map(str::to_owned);
        let meta = RequestMeta {
            request_id: request_id.to_owned(),
            client,
            user: user.clone(),
            method: Method::CONNECT.as_str().to_owned(),
            host: host.to_owned(),
            port,
            path: String::new(),
        };
        // No findings: nothing to mask.
        let samples = shared.live.get().samples.clone();
        let mut event = shared.audit.event(
            &samples,
            meta,
            &Verdict {
                action: Action::Allow,
                reasons: Vec::new(),
                user,
                destination: crate::policy::Destination::Default,
                sanctioned_bulk: false,
            },
            &Findings {
                bytes: 0,
                rules: Vec::new(),
                categories: Vec::new(),
                exact_capped: false,
                stopped: Vec::new(),
            },
            &[],
            false,
        );
        event.not_scanned = Some(why.as_str());
        if let Err(why) = shared.audit.submit(event) {
            if shared.audit.required() {
                return Err(ProxyError::AuditUnavailable(why));
            }
            warn!(request_id, error = %why, "audit event not recorded");
        }
    }
    shared.metrics.not_scanned(why);
    Ok(())
}

/// A request refused because its destination is on `policy.destinations.blocked`: a
/// blocked request, so it gets its audit event like any other (found in review: it got
/// none). Nothing was scanned, so the path is left out (it could hold an identifier no
/// scan has masked); the event names the host and the pattern that blocked it.
pub(super) fn destination_blocked(
    shared: &Shared,
    request_id: &str,
    (client, user): (IpAddr, Option<&str>),
    (method, host, port): (&Method, &str, u16),
    pattern: &str,
) {
    if !shared.audit.wants(Action::Block) {
        return;
    }
    let meta = RequestMeta {
        request_id: request_id.to_owned(),
        client,
        user: user.map(str::to_owned),
        method: method.as_str().to_owned(),
        host: host.to_owned(),
        port,
        path: String::new(),
    };
    let verdict = Verdict {
        action: Action::Block,
        reasons: Vec::new(),
        user: user.map(str::to_owned),
        destination: crate::policy::Destination::Blocked(pattern.to_owned()),
        sanctioned_bulk: false,
    };
    let findings = Findings {
        bytes: 0,
        rules: Vec::new(),
        categories: Vec::new(),
        exact_capped: false,
        stopped: Vec::new(),
    };
    let samples = shared.live.get().samples.clone();
    let mut event = shared
        .audit
        .event(&samples, meta, &verdict, &findings, &[], false);
    event.destination_blocked = Some(pattern.to_owned());
    if let Err(why) = shared.audit.submit(event) {
        // A block stays a block (403) whether or not it is recorded.
        warn!(request_id, error = %why, "audit event not recorded");
    }
}

/// The method as logs and audit events show it: an extension method only when it is
/// letters and dashes (`PROPFIND`, `VERSION-CONTROL`), else `OTHER` — a client-chosen
/// token could carry identifiers (found in review; it is scanned as well).
pub(super) fn shown_method(method: &Method) -> &str {
    let name = method.as_str();
    if super::forward::is_standard_method(method)
        || (name.len() <= 20 && name.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-'))
    {
        name
    } else {
        "OTHER"
    }
}

/// How a request ended, for `egress_dlp_requests_total{action}`.
fn outcome(record: &Record, method: &Method, result: Result<StatusCode, &ProxyError>) -> Outcome {
    match result {
        Err(ProxyError::AuditUnavailable(_)) => Outcome::Refused,
        _ if record.verdict().is_some() => {
            Outcome::from(record.verdict().expect("checked just above"))
        }
        Ok(_) if method == Method::CONNECT => Outcome::Tunnel,
        // Only `forward` answers other requests, and always after a verdict.
        Ok(_) => Outcome::Allow,
        Err(e) if e.status().is_client_error() || e.status() == StatusCode::SERVICE_UNAVAILABLE => {
            Outcome::Refused
        }
        Err(_) => Outcome::Error,
    }
}

/// A request ended: its outcome and duration, upstream error kind, and its one log line.
pub(super) fn finish(
    shared: &Shared,
    record: &Record,
    (request_id, peer, user): (&str, std::net::SocketAddr, &str),
    method: &Method,
    result: Result<StatusCode, &ProxyError>,
) {
    let elapsed = record.started.elapsed();
    let outcome = outcome(record, method, result);
    let metrics = &shared.metrics;
    metrics.request(outcome, elapsed);
    let ms = (elapsed.as_secs_f64() * 1e4).round() / 10.0;
    let verdict = outcome.as_str();
    let method = shown_method(method);
    match result {
        Ok(status) => {
            info!(request_id, %peer, user, method, verdict, status = status.as_u16(), ms, "request");
        }
        Err(err) => {
            if let Some(kind) = err.upstream_error() {
                metrics.upstream_error(kind);
            }
            if matches!(err, ProxyError::Internal(_)) && record.verdict().is_none() {
                metrics.scan_error(ScanError::Internal);
            }
            let status = err.status().as_u16();
            if err.status().is_server_error() || matches!(err, ProxyError::Blocked(_)) {
                warn!(request_id, %peer, user, method, verdict, status, ms, kind = err.kind(), error = %err, "request failed");
            } else {
                info!(request_id, %peer, user, method, verdict, status, ms, kind = err.kind(), error = %err, "request refused");
            }
        }
    }
}
