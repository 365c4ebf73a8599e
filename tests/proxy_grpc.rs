//! gRPC calls through the proxy (src/proxy/grpc.rs): a call's messages go upstream one by
//! one as each is judged, and the upstream's answer comes back while the client is still
//! sending (a streaming call used to hang: its body was held until it ended). An echo
//! upstream answers each message it receives with one of its own and records them.

mod ops_support;
mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::{Proxy, customer_export, grpc_message as message, http_chunk as chunk};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A response body fed through a channel.
struct Channel(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>);

impl hyper::body::Body for Channel {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx)
    }
}

/// What the echo upstreams received: each message's payload.
type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

/// An upstream that answers a call at once (200, `application/grpc`) and then, for each
/// whole message it receives, sends one back (`ok <n>`), recording the messages.
async fn echo_upstream() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Seen = Arc::default();
    let seen = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| echo(req, seen.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, got)
}

/// The echo upstream over TLS and HTTP/2, as `upstream.test` with a certificate from `ca`.
async fn echo_upstream_h2(ca: &tls_support::TestCa) -> (SocketAddr, Seen) {
    let config = tls_support::server_config(&ca.issue(&["upstream.test"], false), &["h2"]);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Seen = Arc::default();
    let seen = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |req| echo(req, seen.clone()));
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
            });
        }
    });
    (addr, got)
}

/// The echo upstreams' answer to one call.
async fn echo(
    req: hyper::Request<Incoming>,
    seen: Seen,
) -> Result<hyper::Response<Channel>, Infallible> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        let mut body = req.into_body();
        let mut buf = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while buf.len() >= 5 {
                let len = u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
                if buf.len() < 5 + len {
                    break;
                }
                let m: Vec<u8> = buf.drain(..5 + len).collect();
                let n = {
                    let mut s = seen.lock().unwrap();
                    s.push(m[5..].to_vec());
                    s.len()
                };
                let reply = message(format!("ok {n}").as_bytes(), false);
                let _ = tx.send(Ok(Frame::data(Bytes::from(reply)))).await;
            }
        }
    });
    Ok(hyper::Response::builder()
        .header("content-type", "application/grpc")
        .body(Channel(rx))
        .unwrap())
}

/// Opens a call through the proxy and sends `first`; returns the stream once the head of
/// the answer is read, and the head.
async fn open_call(
    proxy: SocketAddr,
    upstream: SocketAddr,
    extra: &str,
    first: &[u8],
) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let head = format!(
        "POST http://{upstream}/chat.Room/Talk HTTP/1.1\r\nHost: {upstream}\r\n\
         Content-Type: application/grpc\r\nTE: trailers\r\n{extra}\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&chunk(first)).await.unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("the answer's head within 5 s, while the call goes on")
            .unwrap();
        assert_eq!(n, 1, "closed in the head");
        got.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&got).into_owned())
}

/// Reads the next chunk of the answer's body (`None`: the connection ended without one).
async fn next_chunk(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("a chunk or the end within 5 s")
            .unwrap_or(0);
        if n == 0 {
            return None;
        }
        line.push(byte[0]);
    }
    let len =
        usize::from_str_radix(std::str::from_utf8(&line[..line.len() - 2]).unwrap(), 16).unwrap();
    let mut data = vec![0u8; len + 2];
    s.read_exact(&mut data).await.ok()?;
    data.truncate(len);
    Some(data)
}

#[tokio::test]
async fn a_streaming_call_gets_its_answers_while_it_sends_and_a_list_in_it_cuts_it() {
    let (upstream, got) = echo_upstream().await;
    let proxy = Proxy::start("").await;
    let (mut s, head) = open_call(proxy.addr, upstream, "", &message(b"hello", false)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The first message went on alone and its answer came back, the call still open.
    assert_eq!(next_chunk(&mut s).await.unwrap(), message(b"ok 1", false));
    s.write_all(&chunk(&message(b"second, benign", false)))
        .await
        .unwrap();
    assert_eq!(next_chunk(&mut s).await.unwrap(), message(b"ok 2", false));

    // A list in the third message: it never reaches the upstream, and the call is cut.
    let list = message(customer_export(12).as_bytes(), false);
    s.write_all(&chunk(&list[..40])).await.unwrap();
    s.write_all(&chunk(&list[40..])).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the call was not cut");
    assert!(
        !rest.ends_with(b"0\r\n\r\n"),
        "the answer ended as if the call were fine"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = got.lock().unwrap().clone();
    assert_eq!(seen, [b"hello".to_vec(), b"second, benign".to_vec()]);
}

#[tokio::test]
async fn a_unary_call_carrying_a_list_gets_403_and_the_upstream_nothing() {
    let (upstream, got) = echo_upstream().await;
    let proxy = Proxy::start("").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let body = message(customer_export(12).as_bytes(), false);
    let req = format!(
        "POST http://{upstream}/crm.Export/Send HTTP/1.1\r\nHost: {upstream}\r\n\
         Content-Type: application/grpc+proto\r\nConnection: close\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(&chunk(&body)).await.unwrap();
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let reply = support::parse_reply(&support::read_to_close(&mut s).await);
    assert_eq!(reply.status, 403, "{}", reply.text());
    // Told the gRPC way, so the application can show why: PERMISSION_DENIED and a message
    // with the kind, the count and the request id, never a value; no HTML for it to choke on.
    assert_grpc_denied(&reply.headers, "email: 12 distinct values");
    assert_eq!(reply.header("content-type"), Some("application/grpc"));
    assert!(
        reply.body.is_empty() || reply.body == b"0\r\n\r\n",
        "{}",
        reply.text()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(got.lock().unwrap().is_empty());
}

/// A unary call whose message cannot be inspected (a gzip bomb read through the call's
/// `grpc-encoding`: 4 MiB of zeros in 4 KiB, past `decode.max_ratio`) is refused under
/// the default `on_inspection_error: block`, the upstream gets nothing, and the refusal
/// gets its audit event with `not_scanned` (session 24 added the event; until session 25
/// no test covered the gRPC path).
#[tokio::test]
async fn a_message_that_cannot_be_inspected_is_refused_with_its_audit_event() {
    let (upstream, got) = echo_upstream().await;
    let mut proxy = ops_support::OpsProxy::start("audit: { path: '{data}/audit.jsonl' }\n").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let bomb = gzip(&vec![0u8; 4 << 20]);
    assert!(bomb.len() < 8 << 10, "{}", bomb.len());
    let req = format!(
        "POST http://{upstream}/crm.Export/Send HTTP/1.1\r\nHost: {upstream}\r\n\
         Content-Type: application/grpc\r\ngrpc-encoding: gzip\r\nConnection: close\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(&chunk(&message(&bomb, true))).await.unwrap();
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let reply = support::parse_reply(&support::read_to_close(&mut s).await);
    assert_eq!(reply.status, 403, "{}", reply.text());
    let status = reply
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("grpc-status"))
        .map(|(_, v)| v.as_str());
    assert_eq!(status, Some("7"), "{:?}", reply.headers);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(got.lock().unwrap().is_empty());
    // The proxy lingers reading what the client sent after its answer until it leaves.
    drop(s);
    proxy.stop().await;
    let events = ops_support::json_lines(&proxy.audit_path());
    let blocked: Vec<_> = events.iter().filter(|e| e["action"] == "block").collect();
    assert_eq!(blocked.len(), 1, "{events:?}");
    assert_eq!(
        blocked[0]["not_scanned"], "expansion_ratio",
        "{}",
        blocked[0]
    );
    assert_eq!(blocked[0]["path"], "/crm.Export/Send", "{}", blocked[0]);
}

/// `grpc-status: 7` and a `grpc-message` (percent-encoded) holding `found` and a request
/// id, and no address.
fn assert_grpc_denied(headers: &[(String, String)], found: &str) {
    let field = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
    };
    assert_eq!(field("grpc-status"), "7");
    let message = percent_decode(&field("grpc-message"));
    assert!(message.contains(found), "{message}");
    assert!(message.contains("Request id: "), "{message}");
    assert!(!message.contains('@'), "a value in {message}");
}

fn percent_decode(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// gRPC-Web carries trailers in the body: a call blocked after its answer began ends with
/// the trailer frame (`0x80`) saying PERMISSION_DENIED and why, between two messages of the
/// answer, where it used to be cut with no reason given.
#[tokio::test]
async fn a_grpc_web_call_blocked_midway_ends_with_permission_denied_in_its_trailer_frame() {
    let (upstream, got) = echo_upstream().await;
    let proxy = Proxy::start("").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST http://{upstream}/chat.Room/Talk HTTP/1.1\r\nHost: {upstream}\r\n\
         Content-Type: application/grpc-web+proto\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&chunk(&message(b"hello", false)))
        .await
        .unwrap();
    let mut got_head = Vec::new();
    let mut byte = [0u8; 1];
    while !got_head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "closed in the head");
        got_head.push(byte[0]);
    }
    assert!(got_head.starts_with(b"HTTP/1.1 200"));
    assert_eq!(next_chunk(&mut s).await.unwrap(), message(b"ok 1", false));
    let list = message(customer_export(12).as_bytes(), false);
    s.write_all(&chunk(&list)).await.unwrap();
    let mut frames = Vec::new();
    while let Some(data) = next_chunk(&mut s).await {
        if data.is_empty() {
            break;
        }
        frames.extend_from_slice(&data);
    }
    assert_eq!(
        frames.first(),
        Some(&0x80),
        "{:?}",
        String::from_utf8_lossy(&frames)
    );
    let len = u32::from_be_bytes(frames[1..5].try_into().unwrap()) as usize;
    assert_eq!(frames.len(), 5 + len);
    let fields: Vec<(String, String)> = String::from_utf8(frames[5..].to_vec())
        .unwrap()
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    // At least: the call's earlier messages went upstream.
    assert_grpc_denied(&fields, "email: at least 12 distinct values");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(got.lock().unwrap().clone(), [b"hello".to_vec()]);
}

#[tokio::test]
async fn a_compressed_message_is_read_through_the_calls_grpc_encoding() {
    let (upstream, got) = echo_upstream().await;
    let proxy = Proxy::start("").await;
    let packed = gzip(b"a benign note");
    let (mut s, head) = open_call(
        proxy.addr,
        upstream,
        "grpc-encoding: gzip\r\n",
        &message(&packed, true),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(next_chunk(&mut s).await.unwrap(), message(b"ok 1", false));
    let list = gzip(customer_export(12).as_bytes());
    s.write_all(&chunk(&message(&list, true))).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        got.lock().unwrap().len(),
        1,
        "the gzipped list reached the upstream"
    );
}

#[tokio::test]
async fn a_message_left_unfinished_cuts_the_call_at_the_minimum_rate() {
    let (upstream, got) = echo_upstream().await;
    let proxy = Proxy::start("limits: { header_read_timeout: 1s, body_min_rate: 1000 }\n").await;
    let (mut s, head) = open_call(proxy.addr, upstream, "", &message(b"hello", false)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(next_chunk(&mut s).await.unwrap(), message(b"ok 1", false));
    // A message that says 100 000 bytes and brings 10, then nothing: it would hold its
    // part of the hold budget as long as the call lives.
    let mut partial = vec![0u8];
    partial.extend_from_slice(&100_000u32.to_be_bytes());
    partial.extend_from_slice(b"0123456789");
    s.write_all(&chunk(&partial)).await.unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the call was not cut");
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(
        !rest.ends_with(b"0\r\n\r\n"),
        "the answer ended as if the call were fine"
    );
    assert_eq!(got.lock().unwrap().len(), 1);
}

/// HTTP/2 inside interception, as gRPC really travels: a unary call carrying a list gets
/// its refusal with PERMISSION_DENIED in the header fields, and a streaming call blocked
/// after its answer began ends with PERMISSION_DENIED in its trailer fields (it used to be
/// reset: the application saw INTERNAL with no reason).
#[tokio::test]
async fn over_http2_a_blocked_call_ends_with_permission_denied_and_the_reason() {
    let ca = tls_support::TestCa::new();
    let (upstream, got) = echo_upstream_h2(&ca).await;
    let proxy = tls_support::TlsProxy::trusting(&ca, upstream.port(), "").await;
    let url = format!("https://upstream.test:{}/chat.Room/Talk", upstream.port());
    fn call<B>(url: &str, body: B) -> hyper::Request<B> {
        hyper::Request::post(url)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body)
            .unwrap()
    }

    // Unary: held and judged whole, refused before the upstream hears of it.
    let mut sender =
        tls_support::h2_via::<http_body_util::Full<Bytes>>(&proxy, upstream, "upstream.test").await;
    let list = message(customer_export(12).as_bytes(), false);
    let resp = sender
        .send_request(call(
            &url,
            http_body_util::Full::new(Bytes::from(list.clone())),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let fields: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    assert_grpc_denied(&fields, "email: 12 distinct values");
    assert!(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );

    // Streaming: the answer has begun when the list comes.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let mut sender = tls_support::h2_via::<Channel>(&proxy, upstream, "upstream.test").await;
    tx.send(Ok(Frame::data(Bytes::from(message(b"hello", false)))))
        .await
        .unwrap();
    let resp = sender.send_request(call(&url, Channel(rx))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, message(b"ok 1", false));
    tx.send(Ok(Frame::data(Bytes::from(list)))).await.unwrap();
    let trailers = loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the answer ends within 5 s")
            .expect("trailers, not a bare end")
            .expect("trailers, not a reset");
        if let Ok(trailers) = frame.into_trailers() {
            break trailers;
        }
    };
    let fields: Vec<(String, String)> = trailers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    assert_grpc_denied(&fields, "email: at least 12 distinct values");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(got.lock().unwrap().clone(), [b"hello".to_vec()]);
}
