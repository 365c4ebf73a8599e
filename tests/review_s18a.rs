//! Session 18 red-team review of the HTTP front door: upgrades, and the answers a client
//! gets from a stalled or slow upstream. Every test here failed on the code as reviewed
//! (fixed in session 19, which added the trailer test); each says what a user sees and
//! what they should see.

mod ops_support;
mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{Proxy, customer_export};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads one request head (up to the blank line) off `s`; `None` when it closes first.
async fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.unwrap_or(0) == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(head)
}

/// An upstream that answers every request head with `answer`, then records every byte
/// that follows on the connection (with the head).
async fn answering_upstream(answer: &'static [u8]) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Arc<Mutex<Vec<u8>>> = Arc::default();
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let g = g.clone();
            tokio::spawn(async move {
                let Some(head) = read_head(&mut s).await else {
                    return;
                };
                g.lock().unwrap().extend_from_slice(&head);
                let _ = s.write_all(answer).await;
                let mut buf = [0u8; 65536];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => g.lock().unwrap().extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (addr, got)
}

/// Sends a WebSocket handshake for `/chat` to `upstream` through `proxy`, then (whatever
/// came back) 12 customer rows on the same connection; returns the proxy's first answer.
async fn websocket_then_list(proxy: &Proxy, upstream: SocketAddr) -> String {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let req = format!(
        "GET http://{upstream}/chat HTTP/1.1\r\nHost: {upstream}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer within 5 s")
        .unwrap_or(0);
    let _ = s.write_all(customer_export(12).as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The client offers only `websocket`; the upstream answers 101 switching to `h2c`. RFC
/// 9110 §7.8: a server MUST NOT switch to a protocol the client did not offer; the README
/// says "Only WebSocket upgrades pass through ... so no protocol switch escapes
/// inspection", h2c above all. The proxy passes the 101 on and splices the connections:
/// the client can now speak h2c to the upstream, uninspected. (This adds no channel an
/// exfiltrating upstream lacks: WebSocket frames are not inspected either, a documented
/// gap; it breaks the "only WebSocket" contract.) It should refuse that 101 (502) and
/// open no tunnel.
#[tokio::test]
async fn a_101_to_a_protocol_the_client_did_not_offer_opens_no_tunnel() {
    let (addr, got) = answering_upstream(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    )
    .await;
    let proxy = Proxy::start("").await;
    let answer = websocket_then_list(&proxy, addr).await;
    let leaked = String::from_utf8_lossy(&got.lock().unwrap()).contains("customer11@acme-corp.io");
    assert!(
        !answer.starts_with("HTTP/1.1 101") && !leaked,
        "the proxy switched the client to h2c, a protocol it never offered: the client got \
         {answer:?}; the rows sent after it reached the upstream uninspected: {leaked}"
    );
}

/// The same with a 101 that names no protocol at all (RFC 9110 §7.8: a 101 MUST carry
/// `Upgrade`): the proxy tunnels anyway.
#[tokio::test]
async fn a_101_without_an_upgrade_header_opens_no_tunnel() {
    let (addr, got) = answering_upstream(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").await;
    let proxy = Proxy::start("").await;
    let answer = websocket_then_list(&proxy, addr).await;
    let leaked = String::from_utf8_lossy(&got.lock().unwrap()).contains("customer11@acme-corp.io");
    assert!(
        !answer.starts_with("HTTP/1.1 101") && !leaked,
        "a 101 naming no protocol became a tunnel: the client got {answer:?}; rows sent \
         after it reached the upstream: {leaked}"
    );
}

/// POSTs `total` bytes of benign filler to `addr` through `proxy` (Content-Length, the
/// connection left open both ways once it is sent) and returns how long until the proxy
/// answered or closed, and the start of what came back (at most 25 s).
async fn upload(proxy: &Proxy, addr: SocketAddr, total: usize) -> (Duration, String) {
    let s = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let head = format!(
        "POST http://{addr}/up HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Length: {total}\r\n\r\n"
    );
    w.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        let chunk = support::filler(64 << 10);
        let mut sent = 0usize;
        while sent < total {
            match tokio::time::timeout(Duration::from_secs(30), w.write_all(&chunk)).await {
                Ok(Ok(())) => sent += chunk.len(),
                _ => break,
            }
        }
        // No half-close: the client waits for its answer with the connection open.
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(w);
    });
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(25), r.read_to_end(&mut out)).await;
    writer.abort();
    let text = String::from_utf8_lossy(&out[..out.len().min(300)]).into_owned();
    (started.elapsed(), text)
}

/// An upstream that reads a request head and then neither reads another byte nor answers
/// (a hung application server).
async fn stalled_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut s).await.is_some() {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                drop(s);
            });
        }
    });
    addr
}

/// A streamed upload (over `hold_bytes`) to an upstream that stops reading it: the client
/// gets no answer at all. The proxy stops reading the client while it waits on the
/// upstream, counts that as the client's idleness, and after `idle_timeout` (120 s by
/// default) closes the connection in silence (curl: a send failure or an empty reply,
/// no status). The same
/// upload held whole (under `hold_bytes`) to the same upstream gets a 504 page after
/// `upstream_response_timeout`; the README promises a slow upstream "504 ... with a page
/// saying so".
#[tokio::test]
async fn a_streamed_upload_to_an_upstream_that_stops_reading_gets_an_answer() {
    let upstream = stalled_upstream().await;
    let proxy = Proxy::start(
        "limits: { hold_bytes: 1MiB, idle_timeout: 3s, upstream_response_timeout: 3s }\n",
    )
    .await;
    let (elapsed, reply) = upload(&proxy, upstream, 256 << 20).await;
    assert!(
        reply.starts_with("HTTP/1.1 50"),
        "after {elapsed:?} the client got {reply:?} instead of a 502/504 page"
    );
}

/// An upstream that reads a request at about `rate` bytes a second (a slow uplink, a
/// throttled upload API) and answers `200 ok` as soon as it has the whole body.
async fn slow_reading_upstream(rate: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Some(head) = read_head(&mut s).await else {
                    return;
                };
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let want: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let step = rate / 10;
                let mut buf = vec![0u8; step];
                let mut got = 0;
                while got < want {
                    let n = s.read(&mut buf[..step.min(want - got)]).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got += n;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
                let _ = s.write_all(reply).await;
            });
        }
    });
    addr
}

/// A held upload (12 MiB, under `hold_bytes`) to an upstream that takes it at 2 MiB/s and
/// answers 200 the moment it has it all. `upstream_response_timeout` (4 s here, 60 s by
/// default) was applied to sending the held body as well as to waiting for the answer, so
/// the upload was cut part-way and the client got 504 "the upstream did not answer" after
/// 4 s, while the upstream was reading steadily. At the defaults: any held upload that
/// took the upstream over 60 s to read (16 MiB below 280 KB/s, 10 MB on a 1 Mbit/s
/// branch-office uplink) failed with 504, where the same upload over 16 MiB (streamed,
/// timed only from its end) went through. It should get the upstream's 200.
///
/// The timeout now counts from the last piece the upstream connection took. What the
/// kernel's socket buffers hold after that (a few MiB on loopback, measured about 2 MiB)
/// must drain within it, as with nginx's `proxy_read_timeout`: hence 2 MiB/s and 4 s here,
/// not a rate that makes that drain alone take longer than the timeout.
#[tokio::test]
async fn a_held_upload_to_a_slow_but_reading_upstream_is_not_cut_at_the_response_timeout() {
    let upstream = slow_reading_upstream(2 << 20).await;
    let proxy = Proxy::start("limits: { upstream_response_timeout: 4s }\n").await;
    let (elapsed, reply) = upload(&proxy, upstream, 12 << 20).await;
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "after {elapsed:?} the client got {:?} while the upstream was still reading the body",
        reply.lines().next()
    );
}

/// A gRPC call from an HTTP/2 client through interception to an HTTP/1.1-only upstream
/// (gRPC-Web gateways, some load balancers): the client's `te: trailers` (which gRPC
/// requires, and gRPC C-core servers refuse a call without) must reach the upstream, with
/// the `Connection: te` HTTP/1.1 asks of a sender of `TE` (RFC 9110 §10.1.4). Found
/// stripped with the hop-by-hop fields; `review_s18b` has the HTTP/2 upstream's case.
#[tokio::test]
async fn a_grpc_calls_te_trailers_reaches_an_http1_upstream() {
    let setup = tls_support::Intercepted::start(&["http/1.1"], "").await;
    let mut sender = setup.h2().await;
    // helloworld.Greeter/SayHello {name: "world"}, length-prefixed as gRPC frames it.
    let message = bytes::Bytes::from_static(b"\0\0\0\0\x07\n\x05world");
    let req = http::Request::builder()
        .method("POST")
        .uri(setup.url("/helloworld.Greeter/SayHello"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(message))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(setup.upstream.versions(), [http::Version::HTTP_11]);
    let seen = setup.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers.get("te").map(|v| v.as_bytes()),
        Some(&b"trailers"[..]),
        "the upstream got the gRPC call without `te: trailers`: {:?}",
        seen[0].headers
    );
    let connection: Vec<_> = seen[0].headers.get_all("connection").iter().collect();
    assert_eq!(connection, ["te"], "{:?}", seen[0].headers);
}

/// An upstream that answers every request with a 200 carrying `n` `Set-Cookie` fields.
async fn cookie_heavy_upstream(n: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut s).await.is_none() {
                    return;
                }
                let mut resp = String::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");
                for i in 0..n {
                    resp.push_str(&format!("Set-Cookie: c{i}=1; Path=/; Secure\r\n"));
                }
                resp.push_str("Connection: close\r\n\r\nok");
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

/// A response with more than 100 header fields (here 120 `Set-Cookie` lines, 4 KiB of
/// head: an SSO logout clearing every cookie, an ad-tech page) becomes a 502 "bad
/// gateway": the upstream client keeps hyper's default limit of 100 response fields,
/// while the request side has `limits.header_count` and browsers and Squid have no count
/// limit. The page should arrive.
#[tokio::test]
async fn a_response_with_more_than_100_header_fields_is_passed_on() {
    let upstream = cookie_heavy_upstream(120).await;
    let proxy = Proxy::start("").await;
    let reply = support::request(proxy.addr, "GET", &format!("http://{upstream}/"), &[], b"").await;
    assert_eq!(
        reply.status,
        200,
        "a 4 KiB response head of 122 fields got {}: {}",
        reply.status,
        reply.text().lines().take(3).collect::<Vec<_>>().join(" | ")
    );
}

/// A response with whitespace between a field name and its colon (`X-Powered-By : ...`,
/// as some embedded and legacy servers send; browsers read it) becomes a 502: RFC 9112
/// §5.1 says "A proxy MUST remove any such whitespace from a response message before
/// forwarding the message downstream" (hyper's client has an option for it,
/// `allow_spaces_after_header_name_in_responses`, not set). The page should arrive.
#[tokio::test]
async fn a_response_with_whitespace_before_a_colon_is_passed_on() {
    let (upstream, _) = answering_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Powered-By : legacy\r\nConnection: close\r\n\r\nok",
    )
    .await;
    let proxy = Proxy::start("").await;
    let reply = support::request(proxy.addr, "GET", &format!("http://{upstream}/"), &[], b"").await;
    assert_eq!(
        reply.status,
        200,
        "got {}: {}",
        reply.status,
        reply.text().lines().take(3).collect::<Vec<_>>().join(" | ")
    );
}

/// The other half of trailers (found with the `te` fix): an upstream's chunked response
/// announcing `Trailer: x-checksum` reaches an HTTP/1.1 client with its trailer field.
/// hyper writes only the trailer fields a response's `Trailer` names, and that header was
/// removed as hop-by-hop (RFC 9110 §6.6.2 makes it end to end), so the field was lost.
#[tokio::test]
async fn a_responses_trailer_fields_reach_an_http1_client() {
    let (upstream, got) = answering_upstream(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\
          Connection: close\r\n\r\n2\r\nok\r\n0\r\nx-checksum: abc123\r\n\r\n",
    )
    .await;
    let proxy = Proxy::start("").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let req = format!(
        "GET http://{upstream}/sum HTTP/1.1\r\nHost: {upstream}\r\nTE: trailers\r\n\
         Connection: close, TE\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("the answer within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(
        text.contains("\r\n0\r\nx-checksum: abc123\r\n"),
        "the client got no trailer field: {text:?}"
    );
    let head = String::from_utf8_lossy(&got.lock().unwrap()).to_ascii_lowercase();
    assert!(head.contains("\r\nte: trailers\r\n"), "{head}");
}
