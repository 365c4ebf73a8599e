//! The shipped Grafana dashboard and Prometheus alert rules query only metrics a real proxy
//! exports: every `egress_dlp_*` name in `deploy/` must appear in a live scrape.

mod ops_support;
mod support;

use std::collections::BTreeSet;
use std::path::Path;

use ops_support::OpsProxy;
use support::{Upstream, customer_export, request};

/// Every `egress_dlp_[a-z0-9_]+` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("egress_dlp_") {
        let start = at + found;
        let mut end = start + "egress_dlp_".len();
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        names.insert(text[start..end].to_owned());
        at = end;
    }
    names
}

/// The PromQL expressions of every panel target in a dashboard.
fn dashboard_exprs(doc: &serde_json::Value, out: &mut Vec<String>) {
    match doc {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                out.push(expr.clone());
            }
            for v in map.values() {
                dashboard_exprs(v, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_query_exists_in_a_real_scrape() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy.join("grafana/egress-dlp.json")).unwrap(),
    )
    .expect("the dashboard is valid JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    let queried = metric_names(&exprs.join("\n"));
    // The panels the issue asks for are there.
    for family in [
        "egress_dlp_requests_total",
        "egress_dlp_findings_total",
        "egress_dlp_scan_duration_seconds_bucket",
        "egress_dlp_upstream_errors_total",
        "egress_dlp_tls_interceptions_total",
    ] {
        assert!(
            queried.contains(family),
            "the dashboard does not show {family}"
        );
    }
    let mut alerted = BTreeSet::new();
    for entry in std::fs::read_dir(deploy.join("prometheus")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            alerted.extend(metric_names(&std::fs::read_to_string(&path).unwrap()));
        }
    }
    assert!(alerted.contains("egress_dlp_audit_sink_up"));

    // A live proxy after a little traffic of each kind.
    let upstream = Upstream::start().await;
    let proxy = OpsProxy::start("").await;
    for body in [
        b"fine".to_vec(),
        customer_export(4).into_bytes(),
        customer_export(12).into_bytes(),
    ] {
        request(proxy.addr, "POST", &upstream.url("/"), &[], &body).await;
    }
    let exported = proxy.scrape().await.names();
    let missing: Vec<&String> = queried
        .union(&alerted)
        .filter(|n| !exported.contains(*n))
        .collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");
}
