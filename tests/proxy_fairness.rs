//! One client cannot take what every client shares: connection slots
//! (`limits.max_connections_per_client`) and the hold budget (`limits.hold_per_client`).
//! Found in review: one workstation holding tunnels took every `max_connections` slot, and
//! one HTTP/2 connection whose streams each reserved `hold_bytes` took the whole hold
//! budget; every other client's request then waited or got 503.
//!
//! Other clients are other loopback addresses (127.0.0.2); everything stays on loopback.

mod ops_support;
mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use hyper::body::{Body, Frame};
use hyper_util::rt::TokioIo;
use support::{Proxy, Upstream, parse_reply, read_to_close};
use tls_support::{TestCa, TlsProxy, TlsUpstream};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// A request body that never sends a byte and never ends (no length, no end of stream).
struct Never;

impl Body for Never {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Pending
    }
}

/// A TCP connection to `proxy` from `source` (a loopback address: another workstation).
async fn connect_from(source: [u8; 4], proxy: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::from(source), 0))
        .unwrap();
    socket.connect(proxy).await.unwrap()
}

/// A small `Connection: close` POST through the proxy from `source`: the reply's status.
async fn small_post_from(source: [u8; 4], proxy: SocketAddr, url: &str) -> u16 {
    let mut s = connect_from(source, proxy).await;
    let body = b"meeting notes";
    let head = format!(
        "POST {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    parse_reply(&read_to_close(&mut s).await).status
}

#[tokio::test]
async fn one_client_gets_at_most_its_share_of_the_connection_slots() {
    let upstream = Upstream::start().await;
    let echo = support::echo_server().await;
    let proxy = Proxy::start(&format!(
        "access: {{ connect_ports: [{}] }}\n\
         limits: {{ max_connections: 8, max_connections_per_client: 2 }}",
        echo.port()
    ))
    .await;
    let mut tunnels = Vec::new();
    for _ in 0..2 {
        let (status, s) = tls_support::connect(proxy.addr, &echo.to_string()).await;
        assert_eq!(status, 200);
        tunnels.push(s);
    }
    // A third from the same address: 503 at once, saying why.
    let mut third = connect_from([127, 0, 0, 1], proxy.addr).await;
    let raw = tokio::time::timeout(Duration::from_secs(5), read_to_close(&mut third))
        .await
        .expect("answered at once");
    let reply = parse_reply(&raw);
    assert_eq!(reply.status, 503, "{}", String::from_utf8_lossy(&raw));
    let text = String::from_utf8_lossy(&reply.body);
    assert!(text.contains("Too many connections"), "{text}");
    // Another workstation is served.
    let other = tokio::time::timeout(
        Duration::from_secs(5),
        small_post_from([127, 0, 0, 2], proxy.addr, &upstream.url("/other")),
    )
    .await;
    assert_eq!(other.ok(), Some(200));
    // A slot given back is a slot again.
    drop(tunnels.pop());
    let mut again = None;
    for _ in 0..50 {
        let (status, s) = tls_support::connect(proxy.addr, &echo.to_string()).await;
        if status == 200 {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the freed slot was not given back");
}

#[tokio::test]
async fn one_http2_connection_cannot_take_the_whole_hold_budget() {
    let ca = TestCa::new();
    let tls_up = TlsUpstream::start(ca.issue(&["upstream.test"], false), &["h2"]).await;
    let plain_up = Upstream::start().await;
    // A quarter of the budget per client (the default share): one held body.
    let proxy = TlsProxy::trusting(
        &ca,
        tls_up.addr.port(),
        "limits: { hold_bytes: 64KiB, hold_total: 256KiB, hold_wait: 500ms }\n",
    )
    .await;
    let sender = tls_support::h2_via(&proxy, tls_up.addr, "upstream.test").await;
    let authority = format!("upstream.test:{}", tls_up.addr.port());
    // Four streams with bodies of unknown length that never come: each would reserve
    // hold_bytes, the four the whole budget.
    let mut held = Vec::new();
    for i in 0..4 {
        let mut sender = sender.clone();
        let req = Request::post(format!("https://{authority}/upload{i}"))
            .body(Never)
            .unwrap();
        held.push(tokio::spawn(async move { sender.send_request(req).await }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = small_post_from([127, 0, 0, 2], proxy.addr, &plain_up.url("/notes")).await;
    assert_eq!(
        status, 200,
        "another client's 13-byte upload was refused while one HTTP/2 connection held bodies"
    );
    // The streams over the client's share waited their hold_wait and got 503.
    let mut refused = 0;
    for h in held.drain(1..) {
        if let Ok(Ok(Ok(resp))) = tokio::time::timeout(Duration::from_secs(5), h).await {
            refused += usize::from(resp.status() == 503);
        }
    }
    assert_eq!(refused, 3, "streams over the client's share");
}

/// A held body that arrives slower than `limits.body_min_rate` (after the head's time)
/// gets 408 and gives its reservation back; one that keeps the rate goes through (found in
/// review: a body trickled at 3 bytes a second held its reservation past every timeout).
#[tokio::test]
async fn a_body_trickled_below_the_minimum_rate_gets_408_and_frees_the_budget() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        "limits: { hold_bytes: 64KiB, hold_total: 64KiB, hold_wait: 300ms, \
         header_read_timeout: 1s, body_min_rate: 100 }",
    )
    .await;
    let head = |path: &str| {
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            upstream.url(path)
        )
    };
    // About 10 bytes a second.
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(head("/slow").as_bytes()).await.unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..10 {
            if slow.write_all(b"1\r\nx\r\n").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        read_to_close(&mut slow).await
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The budget is free again: another client's upload goes through.
    let status = small_post_from([127, 0, 0, 2], proxy.addr, &upstream.url("/victim")).await;
    assert_eq!(status, 200, "the trickled body still holds the budget");
    let reply = parse_reply(&trickle.await.unwrap());
    assert_eq!(reply.status, 408);
    // 50 bytes every 100 ms (500 B/s) for 2 s: slow, but above the rate.
    let mut steady = TcpStream::connect(proxy.addr).await.unwrap();
    steady.write_all(head("/steady").as_bytes()).await.unwrap();
    for _ in 0..20 {
        steady
            .write_all(format!("32\r\n{}\r\n", "y".repeat(50)).as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    steady.write_all(b"0\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut steady, &mut buf),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let got = upstream.requests();
    let steady_body = got
        .iter()
        .find(|r| r.target == "/steady")
        .map(|r| r.body.len());
    assert_eq!(steady_body, Some(1000));
    assert!(
        got.iter().all(|r| r.target != "/slow"),
        "the trickled body reached the upstream"
    );
}

/// A TLS upstream speaking HTTP/1.1 only, answering each request after 1.5 s, counting
/// its handshakes.
async fn slow_h1_upstream(
    cert: tls_support::ServerCert,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let config = tls_support::server_config(&cert, &["http/1.1"]);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::Relaxed);
                let service =
                    hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                        Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, handshakes)
}

/// An HTTP/2 client of an HTTP/1.1-only upstream gets few streams at once: each stream in
/// flight takes an upstream connection of its own (found in review: 20 streams were 20
/// upstream connections and verified handshakes from one client connection).
#[tokio::test]
async fn an_http2_client_of_an_http1_upstream_gets_few_streams_at_once() {
    let ca = TestCa::new();
    let (up, handshakes) = slow_h1_upstream(ca.issue(&["upstream.test"], false)).await;
    let proxy = TlsProxy::trusting(&ca, up.port(), "").await;
    let sender = tls_support::h2_via(&proxy, up, "upstream.test").await;
    // The proxy's SETTINGS (its stream limit) first: streams a client opens before them
    // over the limit are refused (REFUSED_STREAM, which clients retry).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let authority = format!("upstream.test:{}", up.port());
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut sender = sender.clone();
        let req = Request::get(format!("https://{authority}/r{i}"))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        tasks.push(tokio::spawn(async move {
            sender.send_request(req).await.map(|r| r.status())
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let n = handshakes.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (1..=6).contains(&n),
        "one client connection with 20 streams made {n} upstream connections"
    );
    // Every request is still answered, a few at a time.
    for t in tasks {
        let status = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("answered")
            .unwrap()
            .unwrap();
        assert_eq!(status, 200);
    }
}

/// A request with a body and its own headers from `source`; the reply.
async fn post_from(
    source: [u8; 4],
    proxy: SocketAddr,
    url: &str,
    headers: &str,
    body: &[u8],
) -> support::Reply {
    let mut s = connect_from(source, proxy).await;
    let head = format!(
        "POST {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    parse_reply(&read_to_close(&mut s).await)
}

/// A brotli body reserves its decompressor's window (16 MiB) in the hold budget with the
/// body: found in review, a small brotli body pinned a window the budget did not count,
/// and many at once used far more memory than `hold_total` said. With room for one such
/// body, a second waits its `hold_wait` and gets 503 while the first is open; a body with
/// no content-encoding still fits, and once the first ends the second goes through.
#[tokio::test]
async fn a_brotli_body_reserves_its_decompressor_window_in_the_hold_budget() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        "limits: { hold_bytes: 64KiB, hold_total: 20MiB, hold_per_client: 20MiB, \
         hold_wait: 300ms }",
    )
    .await;
    let notes = support::bodies::brotli(b"quarterly planning notes, nothing else\n");
    let headers = "Content-Type: text/plain\r\nContent-Encoding: br\r\n";
    // The first brotli body starts and stays open: 64 KiB + 16 MiB reserved.
    let mut first = connect_from([127, 0, 0, 1], proxy.addr).await;
    first
        .write_all(
            format!(
                "POST {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\
                 Transfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                upstream.url("/first"),
                notes.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    first.write_all(&notes).await.unwrap();
    first.write_all(b"\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let second = upstream.url("/second");
    let busy = post_from([127, 0, 0, 2], proxy.addr, &second, headers, &notes).await;
    assert_eq!(busy.status, 503, "{}", String::from_utf8_lossy(&busy.body));
    let plain = post_from(
        [127, 0, 0, 2],
        proxy.addr,
        &upstream.url("/plain"),
        "Content-Type: text/plain\r\n",
        b"meeting notes",
    )
    .await;
    assert_eq!(plain.status, 200);

    first.write_all(b"0\r\n\r\n").await.unwrap();
    let reply = parse_reply(&read_to_close(&mut first).await);
    assert_eq!(reply.status, 200);
    let ok = post_from([127, 0, 0, 2], proxy.addr, &second, headers, &notes).await;
    assert_eq!(ok.status, 200);
    let seen = upstream.requests();
    let paths: Vec<&str> = seen.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(paths, ["/plain", "/first", "/second"]);
    assert!(
        seen.iter()
            .filter(|r| r.target != "/plain")
            .all(|r| r.body == notes)
    );
}

/// An upstream that answers 3 s after a request's end, another that answers at once, and
/// a proxy holding 64 KiB per body with `budget` in all and per client (a 300 ms wait).
async fn slow_upstream_behind(budget: &str) -> (Upstream, Upstream, Proxy) {
    let slow = Upstream::start().await;
    slow.set(support::Behavior::Delay(Duration::from_secs(3)));
    let other = Upstream::start().await;
    let proxy = Proxy::start(&format!(
        "limits: {{ hold_bytes: 64KiB, hold_total: {budget}, hold_per_client: {budget}, \
         hold_wait: 300ms }}"
    ))
    .await;
    (slow, other, proxy)
}

/// Review of 068115a: a streamed body (over `hold_bytes`) gives its reservation back once
/// its held part is passed on. A body whose last byte arrived with the held part (here
/// hold_bytes + 1 bytes) reads no further frame, so `shrink_to` never runs, and the
/// reservation now lives in `stream_through` until the upstream answers: a slow upstream
/// keeps the whole budget taken, and another client's 13-byte upload gets 503. Before
/// the commit the reservation went with the pump, as soon as the body was read.
#[tokio::test]
async fn a_streamed_body_read_whole_gives_its_reservation_back_before_the_answer() {
    let (slow, other, proxy) = slow_upstream_behind("64KiB").await;
    let body = support::filler((64 << 10) + 1);
    let url = slow.url("/big");
    let addr = proxy.addr;
    let big = tokio::spawn(async move {
        post_from(
            [127, 0, 0, 1],
            addr,
            &url,
            "Content-Type: text/plain\r\n",
            &body,
        )
        .await
    });
    // The whole body reached the upstream, which now takes 3 s to answer.
    slow.wait_for(|seen| seen.iter().any(|r| r.complete)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = small_post_from([127, 0, 0, 2], proxy.addr, &other.url("/notes")).await;
    assert_eq!(
        status, 200,
        "the streamed body, read and passed on whole, still holds the hold budget"
    );
    assert_eq!(big.await.unwrap().status, 200);
}

/// Review of 068115a: a streamed brotli body "keeps the windows until its scan ends". Its
/// scan ends when the whole body has been read and judged; the windows (16 MiB) stay
/// reserved until the upstream answers, so while a slow upstream thinks, another client's
/// small brotli body gets 503.
#[tokio::test]
async fn a_streamed_brotli_body_gives_its_window_back_when_its_scan_ends() {
    let (slow, other, proxy) = slow_upstream_behind("20MiB").await;
    let headers = "Content-Type: text/plain\r\nContent-Encoding: br\r\n";
    // Words of random letters: brotli leaves well over 64 KiB of 400 KB.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut text = Vec::new();
    while text.len() < 400_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push(if x % 7 == 0 {
            b' '
        } else {
            b'a' + (x >> 8) as u8 % 26
        });
    }
    let big = support::bodies::brotli(&text);
    assert!(big.len() > 128 << 10, "{}", big.len());
    let url = slow.url("/big");
    let addr = proxy.addr;
    let first =
        tokio::spawn(async move { post_from([127, 0, 0, 1], addr, &url, headers, &big).await });
    slow.wait_for(|seen| seen.iter().any(|r| r.complete)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let notes = support::bodies::brotli(b"quarterly planning notes, nothing else\n");
    let second = post_from(
        [127, 0, 0, 2],
        proxy.addr,
        &other.url("/notes"),
        headers,
        &notes,
    )
    .await;
    assert_eq!(
        second.status,
        200,
        "the first body's scan ended, its window is still reserved: {}",
        second.text()
    );
    assert_eq!(first.await.unwrap().status, 200);
}

/// Review of e78271b: "a held body keeps only its own bytes once judged". A body of
/// unknown length (chunked, or an HTTP/2 stream without Content-Length) reserves
/// `hold_bytes`, and after `judge` the reservation is shrunk to `may_hold` (still
/// `hold_bytes`), not to the 13 bytes held: while a slow upstream thinks, the whole
/// `hold_bytes` stays taken and another client's chunked upload waits and gets 503.
#[tokio::test]
async fn a_held_chunked_body_keeps_only_its_own_bytes_once_judged() {
    let slow = Upstream::start().await;
    slow.set(support::Behavior::Delay(Duration::from_secs(3)));
    let other = Upstream::start().await;
    let proxy = Proxy::start(
        "limits: { hold_bytes: 64KiB, hold_total: 100KiB, hold_per_client: 64KiB, \
         hold_wait: 300ms }",
    )
    .await;
    async fn chunked_from(source: [u8; 4], proxy: SocketAddr, url: &str) -> u16 {
        let mut s = connect_from(source, proxy).await;
        let head = format!(
            "POST {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Transfer-Encoding: chunked\r\n\r\nd\r\nmeeting notes\r\n0\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        parse_reply(&read_to_close(&mut s).await).status
    }
    let url = slow.url("/notes");
    let addr = proxy.addr;
    let first = tokio::spawn(async move { chunked_from([127, 0, 0, 1], addr, &url).await });
    // Judged and passed on whole: the upstream now takes 3 s to answer.
    slow.wait_for(|seen| seen.iter().any(|r| r.complete)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = chunked_from([127, 0, 0, 2], proxy.addr, &other.url("/notes")).await;
    assert_eq!(
        status, 200,
        "a 13-byte held body still holds hold_bytes of the budget"
    );
    assert_eq!(first.await.unwrap(), 200);
}

/// Review of f616bec: the decompressor-window pool (a quarter of `hold_total`: 64 MiB at
/// the defaults) has no per-client share, unlike the hold budget it sits beside. One
/// client's single small upload, a part with `Content-Encoding: br, br, br, br` left open
/// (trickled at the minimum rate), takes all of it; meanwhile every other workstation's
/// upload with a compressed part gets 403 `decoder_memory`.
#[tokio::test]
async fn one_client_cannot_take_every_decompressor_window() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let notes = b"quarterly planning notes, nothing sensitive\n".repeat(10);
    let br = support::bodies::brotli;
    let part = support::bodies::compressed_part;
    let end = support::bodies::PART_END;
    let greedy = part("br, br, br, br", &br(&br(&br(&br(&notes)))));
    let tcp = connect_from([127, 0, 0, 1], proxy.addr).await;
    let mut first = support::open_multipart_upload(tcp, &upstream.url("/first"), &greedy).await;

    let body = [&part("br", &br(&notes))[..], end].concat();
    let other = post_from(
        [127, 0, 0, 2],
        proxy.addr,
        &upstream.url("/other"),
        "Content-Type: multipart/form-data; boundary=XyZ\r\nAccept: application/json\r\n",
        &body,
    )
    .await;
    first.write_all(end).await.unwrap();
    assert_eq!(
        other.status,
        200,
        "another client's one upload holds every window: {}",
        other.text()
    );
    // The stack itself holds more than one request may (one brotli window): it is not
    // fully inspected, and refused under the default policy.
    let greedy = parse_reply(&read_to_close(&mut first).await);
    assert_eq!(greedy.status, 403);
    assert!(greedy.text().contains("decoder_memory") || greedy.text().contains("inspected"));
    let seen: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(seen, ["/other"]);
}

/// The decompressor-window pool has a share per client, as the hold budget does: one
/// workstation's four open uploads, each a brotli part (16 MiB of window), held the whole
/// default pool (64 MiB), and every other client's compressed part got 403
/// `decoder_memory` meanwhile. Now the client holds at most its share (a quarter of the
/// pool, raised to one request's 24 MiB): its first upload goes through, the others are
/// not fully inspected, and the other client's upload passes.
#[tokio::test]
async fn one_client_holds_at_most_its_share_of_the_decompressor_windows() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let notes = b"quarterly planning notes, nothing sensitive\n".repeat(10);
    let br = support::bodies::brotli;
    let part = support::bodies::compressed_part("br", &br(&notes));
    let end = support::bodies::PART_END;
    let mut open = Vec::new();
    for n in 0..4 {
        let tcp = connect_from([127, 0, 0, 1], proxy.addr).await;
        let url = upstream.url(&format!("/greedy{n}"));
        open.push(support::open_multipart_upload(tcp, &url, &part).await);
    }
    let body = [&part[..], end].concat();
    let other = post_from(
        [127, 0, 0, 2],
        proxy.addr,
        &upstream.url("/other"),
        "Content-Type: multipart/form-data; boundary=XyZ\r\nAccept: application/json\r\n",
        &body,
    )
    .await;
    assert_eq!(
        other.status,
        200,
        "one client's uploads hold every decompressor window: {}",
        other.text()
    );
    let mut statuses = Vec::new();
    for mut s in open {
        s.write_all(end).await.unwrap();
        let reply = parse_reply(&read_to_close(&mut s).await);
        if reply.status == 403 {
            assert!(reply.text().contains("inspected"), "{}", reply.text());
        }
        statuses.push(reply.status);
    }
    assert_eq!(statuses, [200, 403, 403, 403]);
    let mut seen: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    seen.sort();
    assert_eq!(seen, ["/greedy0", "/other"]);
}

/// Review of d127cd5: with a smaller `hold_total` (here 64 MiB, a quarter of the
/// default, with `hold_per_client` 16 MiB) the window pool is raised to one request's
/// windows (24 MiB) and so is a client's share of it: the share is the whole pool. One
/// workstation's single open upload with a brotli part (16 MiB of window) then leaves
/// every other client's compressed part 403 `decoder_memory`, as before the share.
#[tokio::test]
async fn a_small_hold_total_still_keeps_windows_for_other_clients() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_total: 64MiB, hold_per_client: 16MiB }\n").await;
    let notes = b"quarterly planning notes, nothing sensitive\n".repeat(10);
    let br = support::bodies::brotli;
    let part = support::bodies::compressed_part("br", &br(&notes));
    let end = support::bodies::PART_END;
    let tcp = connect_from([127, 0, 0, 1], proxy.addr).await;
    let mut first = support::open_multipart_upload(tcp, &upstream.url("/first"), &part).await;
    let body = [&part[..], end].concat();
    let other = post_from(
        [127, 0, 0, 2],
        proxy.addr,
        &upstream.url("/other"),
        "Content-Type: multipart/form-data; boundary=XyZ\r\nAccept: application/json\r\n",
        &body,
    )
    .await;
    first.write_all(end).await.unwrap();
    assert_eq!(
        parse_reply(&read_to_close(&mut first).await).status,
        200,
        "the first upload"
    );
    assert_eq!(
        other.status,
        200,
        "one client's one upload holds every decompressor window: {}",
        other.text()
    );
}

/// A body of unknown length (chunked; an HTTP/2 stream without Content-Length, as every
/// gRPC call is) reserves a little of the hold budget and more as it comes, not all of
/// `hold_bytes` before its first byte (found in session 20: with the client's share one
/// `hold_bytes`, a client's second concurrent chunked upload waited `hold_wait` and got
/// 503 while its first was still coming). Under the share, they all pass; the bytes held
/// are still counted: a body that grows past the share gets 503.
#[tokio::test]
async fn chunked_bodies_reserve_as_they_come_not_all_of_hold_bytes_at_once() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        "limits: { hold_bytes: 4MiB, hold_total: 4MiB, hold_per_client: 4MiB, \
         hold_wait: 300ms }",
    )
    .await;
    /// A chunked upload of `first`, then after `pause`, of `second`; the status.
    async fn upload(
        proxy: SocketAddr,
        url: String,
        first: usize,
        pause: u64,
        second: usize,
    ) -> u16 {
        let mut s = connect_from([127, 0, 0, 1], proxy).await;
        let head = format!(
            "POST {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Transfer-Encoding: chunked\r\n\r\n{first:x}\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&vec![b'a'; first]).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if second > 0 {
            s.write_all(format!("{second:x}\r\n").as_bytes())
                .await
                .unwrap();
            s.write_all(&vec![b'b'; second]).await.unwrap();
            s.write_all(b"\r\n").await.unwrap();
        }
        s.write_all(b"0\r\n\r\n").await.unwrap();
        parse_reply(&read_to_close(&mut s).await).status
    }
    let mut slow = Vec::new();
    for i in 0..3 {
        let url = upstream.url(&format!("/slow{i}"));
        slow.push(tokio::spawn(upload(proxy.addr, url, 1000, 1000, 1000)));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let quick = upload(proxy.addr, upstream.url("/quick"), 13, 0, 0).await;
    assert_eq!(
        quick, 200,
        "a small chunked upload waited for room and was refused"
    );
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
    // Held bytes still count: while one upload holds 3 MiB and waits, another that grows
    // past what is left of the share waits its hold_wait and gets 503.
    let holder = tokio::spawn(upload(proxy.addr, upstream.url("/big"), 3 << 20, 1500, 10));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let over = upload(proxy.addr, upstream.url("/over"), 2 << 20, 0, 0).await;
    assert_eq!(over, 503);
    assert_eq!(holder.await.unwrap(), 200);
}
