//! Bodies over the hold limit: streamed through as they are scanned, aborted before their
//! end when they carry a customer list, or refused outright with `oversize: block`.
//! (1 MiB hold limit and 20 MiB uploads keep the tests quick; the mechanism is the same at
//! 16 MiB and 200 MB.)

mod support;

use std::net::SocketAddr;

use support::{Proxy, Reply, Upstream, customer_export, parse_reply, read_to_close};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const UPLOAD: usize = 20 << 20;

/// A benign body of `len` bytes: printable filler without anything a rule matches.
fn filler(len: usize) -> Vec<u8> {
    b"lorem ipsum dolor sit amet, consectetur adipiscing elit; "
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// POSTs `body` with a Content-Length, writing and reading at the same time.
async fn upload(proxy: SocketAddr, url: &str, body: Vec<u8>) -> Reply {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let head = format!(
        "POST {url} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let writer = tokio::spawn(async move {
        // The proxy may answer and close before it has read everything: that is fine.
        let _ = w.write_all(head.as_bytes()).await;
        let _ = w.write_all(&body).await;
        w
    });
    let mut raw = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut raw)
        .await
        .ok();
    drop(writer.await.unwrap());
    parse_reply(&raw)
}

#[tokio::test]
async fn a_large_benign_upload_streams_through_whole() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 1MiB }").await;
    let body = filler(UPLOAD);
    let reply = upload(proxy.addr, &upstream.url("/big"), body.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), format!("ok {UPLOAD}"));
    let seen = upstream.requests();
    assert!(seen[0].complete);
    assert!(seen[0].body == body, "the upstream got different bytes");
}

#[tokio::test]
async fn a_large_upload_with_a_customer_list_is_aborted_before_its_end() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 1MiB }").await;
    let mut body = filler(UPLOAD);
    let export = customer_export(50);
    // The customer list sits past the hold limit, so part of the body has already gone.
    let at = 3 << 20;
    body[at..at + export.len()].copy_from_slice(export.as_bytes());
    let reply = upload(proxy.addr, &upstream.url("/exfil"), body).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(reply.text().contains("email: 50 distinct values"));
    let seen = upstream.wait_for(|s| s.len() == 1 && s[0].aborted).await;
    assert!(!seen[0].complete, "the upstream saw a complete request");
    assert!(seen[0].body.len() < UPLOAD);
}

#[tokio::test]
async fn oversize_block_refuses_a_declared_large_body_with_413() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 1MiB, oversize: block }").await;
    let reply = upload(proxy.addr, &upstream.url("/big"), filler(4 << 20)).await;
    assert_eq!(reply.status, 413);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn oversize_block_refuses_a_large_chunked_body_with_413() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 1MiB, oversize: block }").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        upstream.url("/big")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = filler(64 << 10);
    // 1.5 MiB: over the limit, and the proxy answers without waiting for the end.
    for _ in 0..24 {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        stream.write_all(&chunk).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
    }
    let reply = parse_reply(&read_to_close(&mut stream).await);
    assert_eq!(reply.status, 413);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_body_exactly_at_the_hold_limit_is_held_and_blocked_whole() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 64KiB }").await;
    let mut body = filler(64 << 10);
    let export = customer_export(10);
    let end = body.len();
    body[end - export.len()..].copy_from_slice(export.as_bytes());
    let reply = upload(proxy.addr, &upstream.url("/edge"), body).await;
    assert_eq!(reply.status, 403);
    assert!(upstream.requests().is_empty());
}
