//! Metrics and the admin listener over real loopback sockets: traffic of every kind goes
//! through the proxy, `/metrics` is scraped and parsed, and each counter must have moved by
//! exactly what was sent. Plus `/healthz`, `/readyz` and `/rules`.

mod ops_support;
mod support;

use std::time::Duration;

use ops_support::{OpsProxy, Scrape};
use support::{Upstream, customer_export, dead_port, exchange, parse_reply, request};

/// What the engine is fed for a request: the decoded target, a line break, the body.
/// Bytes the engine sees for a request: the target, then a line break and the body when
/// there is one (the decoders separate the two so a match cannot join them).
/// Bytes scanned for a request to 127.0.0.1: the host, the target, the body, a line break
/// between each two.
fn scanned(target: &str, body: &[u8]) -> f64 {
    let body = if body.is_empty() { 0 } else { 1 + body.len() };
    ("127.0.0.1".len() + 1 + target.len() + body) as f64
}

async fn settle(proxy: &OpsProxy, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = proxy.scrape().await;
        if done(&s) || std::time::Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn counters_move_by_exactly_the_traffic_sent() {
    let upstream = Upstream::start().await;
    let dead = dead_port().await;
    let proxy = OpsProxy::start(&format!(
        "access: {{ connect_ports: [{}] }}\ntls: {{ intercept: false }}\n",
        upstream.addr.port()
    ))
    .await;
    let before = proxy.scrape().await;

    let mut scanned_bytes = 0.0;
    let mut body_bytes = 0.0;
    // Three benign uploads: allow.
    for (i, size) in [10usize, 1000, 70_000].into_iter().enumerate() {
        let body = vec![b'a' + i as u8; size];
        let target = format!("/benign/{i}?q=1");
        let reply = request(proxy.addr, "POST", &upstream.url(&target), &[], &body).await;
        assert_eq!(reply.status, 200);
        scanned_bytes += scanned(&target, &body);
        body_bytes += body.len() as f64;
    }
    // Four distinct emails: log (and forwarded).
    let log_body = customer_export(4);
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/crm"),
        &[],
        log_body.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200);
    scanned_bytes += scanned("/crm", log_body.as_bytes());
    body_bytes += log_body.len() as f64;
    // Twelve: block.
    let block_body = customer_export(12);
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/exfil"),
        &[],
        block_body.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 403);
    scanned_bytes += scanned("/exfil", block_body.as_bytes());
    body_bytes += block_body.len() as f64;
    // An upstream that refuses connections: inspected (allow), then a connect error.
    let reply = request(proxy.addr, "GET", &format!("http://{dead}/x"), &[], b"").await;
    assert_eq!(reply.status, 502);
    scanned_bytes += scanned("/x", b"");
    // Not a proxy request: refused before any verdict.
    let reply = parse_reply(
        &exchange(
            proxy.addr,
            b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert_eq!(reply.status, 400);
    // A CONNECT tunnel, closed at once.
    let raw = format!(
        "CONNECT 127.0.0.1:{0} HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\n\r\n",
        upstream.addr.port()
    );
    let mut tunnel = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tunnel, raw.as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut tunnel, &mut head)
        .await
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    drop(tunnel);

    let after = settle(&proxy, |s| {
        s.get("egress_dlp_active_connections") == 0.0
            && s.get("egress_dlp_audit_events_total{result=\"written\"}") >= 2.0
    })
    .await;
    let d = |series: &str| after.delta(&before, series);
    for (series, want) in [
        ("egress_dlp_requests_total{action=\"allow\"}", 4.0),
        ("egress_dlp_requests_total{action=\"log\"}", 1.0),
        ("egress_dlp_requests_total{action=\"block\"}", 1.0),
        ("egress_dlp_requests_total{action=\"refused\"}", 1.0),
        ("egress_dlp_requests_total{action=\"tunnel\"}", 1.0),
        ("egress_dlp_requests_total{action=\"error\"}", 0.0),
        (
            "egress_dlp_request_duration_seconds_count{action=\"allow\"}",
            4.0,
        ),
        (
            "egress_dlp_request_duration_seconds_count{action=\"block\"}",
            1.0,
        ),
        ("egress_dlp_findings_total{rule=\"email\"}", 16.0),
        ("egress_dlp_findings_total{rule=\"card\"}", 0.0),
        ("egress_dlp_scanned_bytes_total", scanned_bytes),
        ("egress_dlp_scan_duration_seconds_count", 6.0),
        ("egress_dlp_request_body_bytes_count", 6.0),
        ("egress_dlp_request_body_bytes_sum", body_bytes),
        ("egress_dlp_upstream_response_seconds_count", 4.0),
        ("egress_dlp_upstream_errors_total{kind=\"connect\"}", 1.0),
        ("egress_dlp_upstream_errors_total{kind=\"timeout\"}", 0.0),
        ("egress_dlp_not_scanned_total{reason=\"tunnel\"}", 1.0),
        ("egress_dlp_audit_events_total{result=\"written\"}", 2.0),
        ("egress_dlp_audit_events_total{result=\"dropped\"}", 0.0),
    ] {
        assert_eq!(d(series), want, "{series}");
    }
    // Buckets are cumulative: the 70 kB body is above 64 KiB, the others below.
    assert_eq!(d("egress_dlp_request_body_bytes_bucket{le=\"65536\"}"), 5.0);
    assert_eq!(after.get("egress_dlp_active_connections"), 0.0);
    assert_eq!(after.get("egress_dlp_audit_sink_up"), 1.0);
    assert_eq!(
        after.get("egress_dlp_rules_loaded"),
        proxy.config.rules.rules().len() as f64
    );
    assert_eq!(
        after.get("egress_dlp_rules_reloads_total{result=\"success\"}"),
        1.0
    );
    // No label carries a host, a path or a value.
    for bad in ["127.0.0.1", "/exfil", "acme-corp", "customer"] {
        assert!(!after.text.contains(bad), "{bad} in the scrape");
    }
}

#[tokio::test]
async fn open_connections_are_counted_while_they_last() {
    let proxy = OpsProxy::start("").await;
    let a = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let b = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let s = settle(&proxy, |s| s.get("egress_dlp_active_connections") == 2.0).await;
    assert_eq!(s.get("egress_dlp_active_connections"), 2.0);
    drop((a, b));
    let s = settle(&proxy, |s| s.get("egress_dlp_active_connections") == 0.0).await;
    assert_eq!(s.get("egress_dlp_active_connections"), 0.0);
}

#[tokio::test]
async fn upstream_timeouts_are_counted_by_kind() {
    let upstream = Upstream::start().await;
    upstream.set(support::Behavior::Delay(Duration::from_secs(3)));
    let proxy = OpsProxy::start("limits: { upstream_response_timeout: 200ms }\n").await;
    let reply = request(proxy.addr, "GET", &upstream.url("/slow"), &[], b"").await;
    assert_eq!(reply.status, 504);
    let s = proxy.scrape().await;
    assert_eq!(
        s.get("egress_dlp_upstream_errors_total{kind=\"timeout\"}"),
        1.0
    );
    assert_eq!(
        s.get("egress_dlp_upstream_errors_total{kind=\"connect\"}"),
        0.0
    );
    assert_eq!(s.get("egress_dlp_requests_total{action=\"allow\"}"), 1.0);
}

#[tokio::test]
async fn health_readiness_and_rules_endpoints() {
    let proxy = OpsProxy::start("").await;
    let health = proxy.admin_get("/healthz", "*/*").await;
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));

    let ready = proxy.admin_get("/readyz", "*/*").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let text = ready.text();
    assert!(text.starts_with("ready\n"), "{text}");
    for check in ["ok rules: 5 rules loaded", "ok audit:", "ok accepting:"] {
        assert!(text.contains(check), "{check} missing: {text}");
    }
    let ready = proxy.admin_get("/readyz", "application/json").await;
    let doc: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(doc["ready"], true);
    let names: Vec<&str> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rules", "audit", "accepting"]);

    let rules = proxy.admin_get("/rules", "*/*").await;
    assert_eq!(rules.status, 200);
    assert_eq!(rules.header("content-type"), Some("application/json"));
    let doc: serde_json::Value = serde_json::from_slice(&rules.body).unwrap();
    assert_eq!(doc["version"], proxy.config.rules.version());
    assert_eq!(doc["count"], 5);
    let email = &doc["rules"][0];
    assert_eq!(email["id"], "email");
    assert_eq!(email["category"], "email");
    assert_eq!(email["thresholds"]["log"], 3);
    assert_eq!(email["thresholds"]["block"], 10);
    assert!(doc["rules"][4]["thresholds"]["block"].is_null());
    // Rule metadata only: no pattern, no test case (which may hold sample data).
    let raw = rules.text();
    for leak in ["pattern", "alice@acme-corp.io", "CUST-12345678", "\\\\b"] {
        assert!(!raw.contains(leak), "{leak} in /rules");
    }

    assert_eq!(proxy.admin_get("/nope", "*/*").await.status, 404);
    let post = parse_reply(
        &exchange(
            proxy.admin,
            b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert_eq!(post.status, 405);
    assert_ne!(proxy.admin.port(), proxy.addr.port());
    // The proxy does not serve the admin endpoints, and refuses to loop to them.
    let via_proxy = request(
        proxy.addr,
        "GET",
        &format!("http://{}/metrics", proxy.admin),
        &[],
        b"",
    )
    .await;
    assert_eq!(via_proxy.status, 403, "{}", via_proxy.text());
    let direct = parse_reply(
        &exchange(
            proxy.addr,
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert_eq!(direct.status, 400);
}

#[tokio::test]
async fn readiness_fails_while_the_audit_log_cannot_be_written() {
    // /dev/null is not a directory: the log can be neither created nor opened (root neither).
    let proxy = OpsProxy::start("audit: { path: /dev/null/audit.jsonl }\n").await;
    let ready = proxy.admin_get("/readyz", "*/*").await;
    assert_eq!(ready.status, 503);
    let text = ready.text();
    assert!(text.starts_with("not ready\n"), "{text}");
    assert!(
        text.contains("FAIL audit: /dev/null/audit.jsonl cannot be written"),
        "{text}"
    );
    assert!(text.contains("ok rules:"), "{text}");
    let s = proxy.scrape().await;
    assert_eq!(s.get("egress_dlp_audit_sink_up"), 0.0);
    assert!(s.get("egress_dlp_audit_sink_errors_total{op=\"open\"}") >= 1.0);
}

#[tokio::test]
async fn readiness_fails_while_draining() {
    let upstream = Upstream::start().await;
    upstream.set(support::Behavior::Delay(Duration::from_millis(1500)));
    let mut proxy = OpsProxy::start("").await;
    let addr = proxy.addr;
    let url = upstream.url("/slow");
    let slow = tokio::spawn(async move { request(addr, "GET", &url, &[], b"").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let admin = proxy.admin;
    let stopping = tokio::spawn(async move {
        proxy.stop().await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let raw = b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let ready = parse_reply(&exchange(admin, raw).await);
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.text().contains("FAIL accepting: shutting down"));
    assert_eq!(slow.await.unwrap().status, 200);
    stopping.await.unwrap();
}
