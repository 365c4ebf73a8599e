//! Not an open proxy, not a soft target: the client allow-list, the CONNECT port list,
//! tunnels, malformed requests, oversized heads and slow clients, over real sockets.

mod support;

use std::time::{Duration, Instant};

use support::{Proxy, Upstream, exchange, parse_reply, read_to_close, request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn client_outside_the_allow_list_is_refused_and_disconnected() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("access: { clients: [10.0.0.0/8, '192.168.0.0/16'] }").await;
    // Keep-alive requested: the refusal must close the connection anyway.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        upstream.url("/"),
        upstream.addr
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let reply = parse_reply(&read_to_close(&mut stream).await);
    assert_eq!(reply.status, 403);
    assert!(reply.text().contains("not allowed to use this proxy"));
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn connect_to_port_25_is_refused() {
    let proxy = Proxy::start("").await;
    let raw = exchange(
        proxy.addr,
        b"CONNECT 127.0.0.1:25 HTTP/1.1\r\nHost: 127.0.0.1:25\r\nConnection: close\r\n\r\n",
    )
    .await;
    let reply = parse_reply(&raw);
    assert_eq!(reply.status, 403);
    assert!(reply.text().contains("port 25"), "{}", reply.text());
}

#[tokio::test]
async fn connect_to_an_allowed_port_tunnels_bytes_both_ways() {
    let echo = support::echo_server().await;
    let proxy = Proxy::start(&format!("access: {{ connect_ports: [{}] }}", echo.port())).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let req = format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed early");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // Arbitrary bytes, not HTTP: the tunnel is blind.
    let payload: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let (mut r, mut w) = stream.into_split();
    let writer = {
        let payload = payload.clone();
        tokio::spawn(async move { w.write_all(&payload).await.unwrap() })
    };
    let mut echoed = vec![0u8; payload.len()];
    r.read_exact(&mut echoed).await.unwrap();
    writer.await.unwrap();
    assert_eq!(echoed, payload);
}

#[tokio::test]
async fn connect_to_a_dead_port_is_a_502() {
    let dead = support::dead_port().await;
    let proxy = Proxy::start(&format!("access: {{ connect_ports: [{}] }}", dead.port())).await;
    let raw = exchange(
        proxy.addr,
        format!("CONNECT {dead} HTTP/1.1\r\nHost: {dead}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(parse_reply(&raw).status, 502);
}

#[tokio::test]
async fn malformed_requests_get_400_and_the_connection_closes() {
    let proxy = Proxy::start("").await;
    let cases: &[&[u8]] = &[
        b"GARBAGE\r\n\r\n",
        b"GET http://127.0.0.1/ HTTP/9.9\r\n\r\n",
        b"GET http://127.0.0.1/ HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"POST http://127.0.0.1/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"GET http://127.0.0.1/\x01 HTTP/1.1\r\n\r\n",
    ];
    for case in cases {
        let raw = exchange(proxy.addr, case).await;
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.starts_with("HTTP/1.1 400"),
            "{:?} got {text:?}",
            String::from_utf8_lossy(case)
        );
    }
}

#[tokio::test]
async fn oversized_request_heads_get_431() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { header_bytes: 4KiB, header_count: 20 }").await;
    let big = "x".repeat(8 * 1024);
    let reply = request(
        proxy.addr,
        "GET",
        &upstream.url("/"),
        &[("X-Big", &big)],
        b"",
    )
    .await;
    assert_eq!(reply.status, 431);
    let many: Vec<(String, String)> = (0..30).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let reply = request(proxy.addr, "GET", &upstream.url("/"), &many, b"").await;
    assert_eq!(reply.status, 431);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn slowloris_client_is_cut_off_after_the_header_timeout() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { header_read_timeout: 500ms }").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nX-Slow: {}",
        upstream.url("/"),
        upstream.addr,
        "a".repeat(100)
    );
    // One byte every 50 ms: the head would take over 8 s to arrive.
    let mut cut_off = None;
    for byte in head.bytes() {
        if stream.write_all(&[byte]).await.is_err() {
            cut_off = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut_off = Some(started.elapsed());
                break;
            }
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    let cut_off = cut_off.expect("the slow client was never cut off");
    assert!(
        cut_off >= Duration::from_millis(400) && cut_off < Duration::from_secs(3),
        "cut off after {cut_off:?}"
    );
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_header_timeout() {
    let proxy = Proxy::start("limits: { header_read_timeout: 300ms }").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    let rest = read_to_close(&mut stream).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    // Nothing was asked, so there is nothing to answer (or at most a timeout status).
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
        "{rest:?}"
    );
}

#[tokio::test]
async fn stalled_tunnels_are_closed_after_the_idle_timeout() {
    let echo = support::echo_server().await;
    let proxy = Proxy::start(&format!(
        "access: {{ connect_ports: [{}] }}\nlimits: {{ idle_timeout: 300ms }}",
        echo.port()
    ))
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    let got = read_to_close(&mut stream).await;
    assert!(got.starts_with(b"HTTP/1.1 200"));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { max_connections: 1 }").await;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        upstream.url("/"),
        upstream.addr
    );
    // The first connection takes the only slot and keeps it (keep-alive).
    let mut first = TcpStream::connect(proxy.addr).await.unwrap();
    first.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = first.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // The second is not served while the first is open...
    let mut second = TcpStream::connect(proxy.addr).await.unwrap();
    second.write_all(req.as_bytes()).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(waited.is_err(), "served over the connection cap");
    // ...and is once it closes.
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .expect("never served after the slot freed")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}

/// A target whose port is not a number from 1 to 65535, and a CONNECT with no host, are
/// malformed: 400 (they were sent to port 80, or tried and answered 502; found in review).
#[tokio::test]
async fn targets_with_a_bad_port_or_no_host_are_400() {
    let proxy = Proxy::start("access: { connect_ports: [443] }").await;
    for head in [
        "GET http://127.0.0.1:abc/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET http://127.0.0.1:99999/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET http://127.0.0.1:0/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET http://u:p@127.0.0.1:8x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        "CONNECT :443 HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let reply = parse_reply(&exchange(proxy.addr, head.as_bytes()).await);
        assert_eq!(reply.status, 400, "{head:?}: {}", reply.text());
    }
}
