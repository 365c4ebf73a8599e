//! Forwarding absolute-form HTTP through the proxy, over real loopback sockets: what the
//! upstream receives, what is blocked before anything leaves, and the answers for upstream
//! failures.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{Behavior, Proxy, Upstream, customer_export, exchange, parse_reply, request};

#[tokio::test]
async fn benign_post_with_content_length_arrives_byte_for_byte() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let body: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/upload?name=report.bin"),
        &[
            ("Content-Type", "application/octet-stream"),
            ("X-Kept", "yes"),
            ("Connection", "close, X-Hop"),
            ("X-Hop", "1"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Keep-Alive", "timeout=5"),
        ],
        &body,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), format!("ok {}", body.len()));
    assert_eq!(reply.header("x-upstream"), Some("recording"));
    assert!(
        reply
            .header("via")
            .is_some_and(|v| v.contains("egress-dlp"))
    );

    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/upload?name=report.bin");
    assert!(r.complete);
    assert_eq!(r.body, body);
    assert_eq!(r.headers["x-kept"], "yes");
    assert!(r.headers["via"].to_str().unwrap().contains("egress-dlp"));
    for hop in ["x-hop", "proxy-authorization", "keep-alive"] {
        assert!(!r.headers.contains_key(hop), "{hop} was forwarded");
    }
}

#[tokio::test]
async fn benign_chunked_post_arrives_byte_for_byte() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let chunks: [&[u8]; 3] = [b"first,chunk;", &[0u8, 1, 2, 255, 13, 10], b"the end"];
    let mut raw = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        upstream.url("/chunked"),
        upstream.addr
    )
    .into_bytes();
    for c in chunks {
        raw.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        raw.extend_from_slice(c);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let reply = parse_reply(&exchange(proxy.addr, &raw).await);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "PUT");
    assert!(seen[0].complete);
    assert_eq!(seen[0].body, chunks.concat());
}

#[tokio::test]
async fn every_method_is_forwarded() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    for method in ["GET", "HEAD", "DELETE", "OPTIONS", "PATCH", "PROPFIND"] {
        let reply = request(proxy.addr, method, &upstream.url("/m"), &[], b"").await;
        assert_eq!(reply.status, 200, "{method}");
    }
    let methods: Vec<String> = upstream.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(
        methods,
        ["GET", "HEAD", "DELETE", "OPTIONS", "PATCH", "PROPFIND"]
    );
}

#[tokio::test]
async fn bulk_customer_export_is_blocked_and_nothing_reaches_the_upstream() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("block_page: { contact: 'Call the DLP desk on 4242.' }").await;
    let export = customer_export(25);
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/paste"),
        &[("Accept", "text/html,*/*;q=0.8")],
        export.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 403);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let page = reply.text();
    assert!(page.contains("email: 25 distinct values"), "{page}");
    assert!(page.contains("Call the DLP desk on 4242."), "{page}");
    assert!(page.contains("Request id: <code>"), "{page}");
    assert!(
        !page.contains("acme-corp.io"),
        "the page shows a value: {page}"
    );
    assert!(
        upstream.requests().is_empty(),
        "the upstream saw the request"
    );
}

#[tokio::test]
async fn api_clients_get_the_block_as_json() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let export = customer_export(12);
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/api/import"),
        &[("Accept", "application/json")],
        export.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let doc: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(doc["error"], "blocked");
    assert_eq!(doc["findings"][0]["category"], "email");
    assert_eq!(doc["findings"][0]["distinct"], 12);
    assert!(doc["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(doc["contact"].is_string());
    assert!(!reply.text().contains("acme-corp.io"));
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn customer_list_in_the_query_string_is_blocked() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let query: String = (0..10)
        .map(|i| format!("to=user{i}%40acme-corp.io&"))
        .collect();
    let reply = request(
        proxy.addr,
        "GET",
        &upstream.url(&format!("/share?{query}")),
        &[],
        b"",
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_few_values_are_logged_and_forwarded() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let export = customer_export(5);
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/crm"),
        &[],
        export.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(upstream.requests()[0].body, export.as_bytes());
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    for i in 0..3 {
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
            upstream.url(&format!("/k{i}")),
            upstream.addr
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        let reply = parse_reply(&buf[..n]);
        assert_eq!(reply.status, 200);
    }
    let targets: Vec<String> = upstream.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/k0", "/k1", "/k2"]);
}

#[tokio::test]
async fn dead_upstream_is_a_502_that_says_so() {
    let dead = support::dead_port().await;
    let proxy = Proxy::start("").await;
    let reply = request(
        proxy.addr,
        "GET",
        &format!("http://{dead}/"),
        &[("Accept", "application/json")],
        b"",
    )
    .await;
    assert_eq!(reply.status, 502);
    let doc: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(doc["error"], "upstream_connect");
}

#[tokio::test]
async fn upstream_closing_without_an_answer_is_a_502() {
    let upstream = Upstream::start().await;
    upstream.set(Behavior::Close);
    let proxy = Proxy::start("").await;
    let reply = request(proxy.addr, "GET", &upstream.url("/"), &[], b"").await;
    assert_eq!(reply.status, 502);
    assert!(
        reply.text().contains("closed the connection"),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn slow_upstream_is_a_504_that_says_so() {
    let upstream = Upstream::start().await;
    upstream.set(Behavior::Delay(Duration::from_secs(5)));
    let proxy = Proxy::start("limits: { upstream_response_timeout: 300ms }").await;
    let started = std::time::Instant::now();
    let reply = request(proxy.addr, "GET", &upstream.url("/slow"), &[], b"").await;
    assert_eq!(reply.status, 504);
    assert!(
        reply
            .text()
            .contains("did not start answering within 300ms")
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn requests_to_the_proxy_itself_are_refused() {
    let proxy = Proxy::start("").await;
    let reply = request(
        proxy.addr,
        "GET",
        &format!("http://{}/", proxy.addr),
        &[],
        b"",
    )
    .await;
    assert_eq!(reply.status, 403);
    assert!(reply.text().contains("addressed to the proxy itself"));
    let admin = proxy.config.admin_listen;
    let reply = request(
        proxy.addr,
        "GET",
        &format!("http://{admin}/metrics"),
        &[],
        b"",
    )
    .await;
    assert_eq!(reply.status, 403);
}

#[tokio::test]
async fn origin_form_requests_are_not_proxied() {
    let proxy = Proxy::start("").await;
    let raw = exchange(
        proxy.addr,
        b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    let reply = parse_reply(&raw);
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("absolute http:// URL"));
}

#[tokio::test]
async fn the_host_header_is_the_targets_authority() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let raw = format!(
        "GET {} HTTP/1.1\r\nHost: elsewhere.example\r\nConnection: close\r\n\r\n",
        upstream.url("/h")
    );
    let reply = parse_reply(&exchange(proxy.addr, raw.as_bytes()).await);
    assert_eq!(reply.status, 200);
    let seen = upstream.requests();
    assert_eq!(seen[0].headers["host"], upstream.addr.to_string().as_str());
}

#[tokio::test]
async fn waiting_on_a_slow_upstream_is_not_idleness() {
    let upstream = Upstream::start().await;
    upstream.set(Behavior::Delay(Duration::from_millis(900)));
    let proxy = Proxy::start("limits: { idle_timeout: 300ms }").await;
    let reply = request(proxy.addr, "POST", &upstream.url("/slow"), &[], b"data").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn a_client_that_stalls_mid_body_is_cut_after_the_idle_timeout() {
    use tokio::io::AsyncWriteExt;
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { idle_timeout: 300ms }").await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly ten b",
        upstream.url("/stall")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    support::read_to_close(&mut stream).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert!(upstream.requests().is_empty(), "a held body went upstream");
}

#[tokio::test]
async fn upstream_connections_are_pooled_across_clients() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    // Each request comes on its own client connection (Connection: close).
    for i in 0..5 {
        let reply = request(
            proxy.addr,
            "POST",
            &upstream.url(&format!("/p{i}")),
            &[],
            b"x",
        )
        .await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(upstream.requests().len(), 5);
    assert_eq!(
        upstream.connections(),
        1,
        "the upstream connection was not reused"
    );
}

/// A loopback listener that never accepts, with its backlog already full: new connections
/// to it hang in SYN-SENT (Linux drops SYNs for a full accept queue). Keep the returned
/// listener and connections alive for as long as the address must stay unanswering.
async fn unanswering_upstream() -> (
    SocketAddr,
    tokio::net::TcpListener,
    Vec<tokio::net::TcpStream>,
) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    // Fill the accept queue; stop at the first connection that does not complete.
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    (addr, listener, fillers)
}

#[tokio::test]
async fn an_upstream_that_does_not_accept_in_time_is_a_504() {
    let (addr, _listener, _fillers) = unanswering_upstream().await;
    let proxy = Proxy::start("limits: { upstream_connect_timeout: 300ms }").await;
    let started = std::time::Instant::now();
    let reply = request(
        proxy.addr,
        "GET",
        &format!("http://{addr}/"),
        &[("Accept", "application/json")],
        b"",
    )
    .await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    let doc: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(doc["error"], "upstream_connect_timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
}
