//! The admin listener (`admin_listen`, default `127.0.0.1:9090`; never the proxy port):
//!
//! - `GET /metrics`: every metric, Prometheus text format ([`crate::metrics`]);
//! - `GET /healthz`: 200 while the process serves (liveness);
//! - `GET /readyz`: 200 when every readiness [`Check`] passes, else 503; the body lists each
//!   check (`ok rules: 12 rules loaded` / `FAIL audit: ...`), JSON with `Accept:
//!   application/json`. The proxy registers the rule set, the audit sink and "accepting"
//!   (false while draining); other parts add theirs with [`Admin::add_check`] (the CA);
//! - `GET /rules`: the loaded rules — ids, names, categories, validators, thresholds — and
//!   the rule set's version hash, as JSON. No pattern, match or value.
//!
//! Anything else is 404 (405 for another method). The listener is plain HTTP/1.1 and meant
//! for loopback or a management network: it has no authentication, and so serves nothing
//! that is not safe to show to whoever can reach it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::metrics::{self, Metrics};
use crate::rules::RuleSet;

/// A readiness probe: `Ok(detail)` when ready, `Err(why not)` when not.
pub type Probe = Box<dyn Fn() -> Result<String, String> + Send + Sync>;

/// One readiness check shown on `/readyz`.
pub struct Check {
    /// Short stable name (`rules`, `audit`, `ca`).
    pub name: &'static str,
    /// The probe, called on every `/readyz`.
    pub probe: Probe,
}

/// What the admin listener serves.
pub struct Admin {
    metrics: Arc<Metrics>,
    checks: Vec<Check>,
    /// The `/rules` document and the rule count; replaced by a reload.
    rules: Arc<std::sync::RwLock<(String, usize)>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field(
                "checks",
                &self.checks.iter().map(|c| c.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct RulesView<'a> {
    version: &'a str,
    count: usize,
    rules: Vec<RuleView<'a>>,
}

#[derive(Serialize)]
struct RuleView<'a> {
    id: &'a str,
    name: &'a str,
    category: &'a str,
    validator: &'static str,
    thresholds: ThresholdsView,
}

#[derive(Serialize)]
struct ThresholdsView {
    log: Option<u64>,
    block: Option<u64>,
}

#[derive(Serialize)]
struct CheckView<'a> {
    name: &'a str,
    ok: bool,
    detail: String,
}

#[derive(Serialize)]
struct ReadyView<'a> {
    ready: bool,
    checks: Vec<CheckView<'a>>,
}

/// The `/rules` JSON for a rule set, and its rule count.
fn rules_document(rules: &RuleSet) -> (String, usize) {
    let view = RulesView {
        version: rules.version(),
        count: rules.rules().len(),
        rules: rules
            .rules()
            .iter()
            .map(|r| RuleView {
                id: &r.id,
                name: &r.name,
                category: &r.category,
                validator: r.validator.name(),
                thresholds: ThresholdsView {
                    log: r.thresholds.log,
                    block: r.thresholds.block,
                },
            })
            .collect(),
    };
    (
        serde_json::to_string_pretty(&view).expect("plain data serialises") + "\n",
        rules.rules().len(),
    )
}

impl Admin {
    /// Serves `metrics`, and `/rules` for `rules`; with the `rules` readiness check.
    pub fn new(metrics: Arc<Metrics>, rules: &RuleSet) -> Admin {
        let shown = Arc::new(std::sync::RwLock::new(rules_document(rules)));
        let mut admin = Admin {
            metrics,
            checks: Vec::new(),
            rules: shown.clone(),
        };
        admin.add_check(
            "rules",
            Box::new(move || {
                let count = shown.read().unwrap_or_else(|p| p.into_inner()).1;
                if count > 0 {
                    Ok(format!("{count} rules loaded"))
                } else {
                    Err("the rule set is empty".into())
                }
            }),
        );
        admin
    }

    /// Shows a newly loaded rule set (after a reload) on `/rules` and `/readyz`.
    pub fn set_rules(&self, rules: &RuleSet) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = rules_document(rules);
    }

    /// Adds a readiness check (shown in the order added).
    pub fn add_check(&mut self, name: &'static str, probe: Probe) {
        self.checks.push(Check { name, probe });
    }

    fn readiness(&self) -> ReadyView<'_> {
        let checks: Vec<CheckView<'_>> = self
            .checks
            .iter()
            .map(|c| match (c.probe)() {
                Ok(detail) => CheckView {
                    name: c.name,
                    ok: true,
                    detail,
                },
                Err(detail) => CheckView {
                    name: c.name,
                    ok: false,
                    detail,
                },
            })
            .collect();
        ReadyView {
            ready: checks.iter().all(|c| c.ok),
            checks,
        }
    }

    /// Answers one admin request.
    pub fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let known = matches!(path, "/metrics" | "/healthz" | "/readyz" | "/rules");
        if !known {
            return text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics /healthz /readyz /rules\n",
            );
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match path {
            "/metrics" => with_type(StatusCode::OK, self.metrics.encode(), metrics::CONTENT_TYPE),
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/rules" => with_type(
                StatusCode::OK,
                self.rules
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .0
                    .clone(),
                "application/json",
            ),
            _ => {
                let view = self.readiness();
                let status = if view.ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                if crate::proxy::page::prefers_json(req.headers()) {
                    let body = serde_json::to_string(&view).expect("plain data serialises") + "\n";
                    with_type(status, body, "application/json")
                } else {
                    let mut body = String::from(if view.ready { "ready\n" } else { "not ready\n" });
                    for c in &view.checks {
                        body.push_str(&format!(
                            "{} {}: {}\n",
                            if c.ok { "ok" } else { "FAIL" },
                            c.name,
                            c.detail.replace('\n', " ")
                        ));
                    }
                    text(status, &body)
                }
            }
        }
    }
}

fn with_type(
    status: StatusCode,
    body: String,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    with_type(status, body.to_owned(), "text/plain; charset=utf-8")
}

/// Serves the admin endpoints on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: impl Future<Output = ()>) {
    match listener.local_addr() {
        Ok(local) => info!(%local, "admin listening: /metrics /healthz /readyz /rules"),
        Err(e) => warn!(error = %e, "admin listener has no local address"),
    }
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let response = admin.respond(&req);
                async move { Ok::<_, Infallible>(response) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .max_buf_size(64 << 10)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(%peer, error = %e, "admin connection ended with an error");
            }
        });
    }
}
