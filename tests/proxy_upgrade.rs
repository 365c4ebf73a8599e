//! WebSocket (HTTP/1.1 upgrade) through the proxy: the handshake is inspected and
//! forwarded with its `Upgrade` headers; after the upstream's 101, frames pass both ways
//! (the client's messages inspected on their way: tests/proxy_websocket.rs).

mod support;

use std::net::SocketAddr;

use support::{Proxy, customer_export};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// An upstream that answers one upgrade request with 101 and then echoes bytes; it hands
/// back the request head it received.
async fn upgrading_upstream() -> (SocketAddr, oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let head = read_head(&mut stream).await;
        let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
        stream
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            )
            .await
            .unwrap();
        let (mut r, mut w) = stream.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    (addr, rx)
}

async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "closed in the head"
        );
        head.push(byte[0]);
    }
    head
}

#[tokio::test]
async fn websocket_upgrades_pass_through() {
    let (upstream, seen) = upgrading_upstream().await;
    let proxy = Proxy::start("").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let req = format!(
        "GET http://{upstream}/chat HTTP/1.1\r\nHost: {upstream}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let head = String::from_utf8(read_head(&mut stream).await).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );

    let forwarded = seen.await.unwrap().to_ascii_lowercase();
    assert!(forwarded.starts_with("get /chat http/1.1"), "{forwarded}");
    assert!(forwarded.contains("upgrade: websocket"), "{forwarded}");
    assert!(forwarded.contains("connection: upgrade"), "{forwarded}");
    assert!(forwarded.contains("via: 1.1 egress-dlp"), "{forwarded}");

    // A masked text frame `hello` (RFC 6455 §5.7's example), as a client sends it.
    let frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
    stream.write_all(frame).await.unwrap();
    let mut echoed = vec![0u8; frame.len()];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, frame);
}

#[tokio::test]
async fn an_upgrade_request_carrying_a_customer_list_is_blocked() {
    let (upstream, seen) = upgrading_upstream().await;
    let proxy = Proxy::start("").await;
    let query: String = customer_export(12).replace('\n', "&");
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let req = format!(
        "GET http://{upstream}/chat?{} HTTP/1.1\r\nHost: {upstream}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\n\r\n",
        query.replace(' ', "%20")
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 403"));
    // The upstream never received a request head.
    let forwarded = tokio::time::timeout(std::time::Duration::from_millis(300), seen).await;
    assert!(forwarded.is_err(), "the upstream got {forwarded:?}");
}

#[tokio::test]
async fn an_h2c_upgrade_is_forwarded_as_a_plain_request() {
    // An h2c session after a 101 would carry whole HTTP/2 requests past the scanner: the
    // upstream is never offered the upgrade, and the request is inspected and answered as
    // plain HTTP/1.1.
    let upstream = support::Upstream::start().await;
    let proxy = Proxy::start("").await;
    let reply = support::request(
        proxy.addr,
        "GET",
        &upstream.url("/h2c"),
        &[
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    for name in ["upgrade", "http2-settings"] {
        assert!(
            !seen[0].headers.contains_key(name),
            "{name} reached the upstream: {:?}",
            seen[0].headers
        );
    }
}
