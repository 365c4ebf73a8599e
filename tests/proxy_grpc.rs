//! gRPC calls through the proxy (src/proxy/grpc.rs): a call's messages go upstream one by
//! one as each is judged, and the upstream's answer comes back while the client is still
//! sending (a streaming call used to hang: its body was held until it ended). An echo
//! upstream answers each message it receives with one of its own and records them.

mod support;

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

/// An upstream that answers a call at once (200, `application/grpc`) and then, for each
/// whole message it receives, sends one back (`ok <n>`), recording the messages.
async fn echo_upstream() -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let seen = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let (tx, rx) =
                            tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
                        tokio::spawn(async move {
                            let mut body = req.into_body();
                            let mut buf = Vec::new();
                            while let Some(Ok(frame)) = body.frame().await {
                                let Ok(data) = frame.into_data() else {
                                    continue;
                                };
                                buf.extend_from_slice(&data);
                                while buf.len() >= 5 {
                                    let len =
                                        u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
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
                        let body = Channel(rx);
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(body)
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, got)
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
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(got.lock().unwrap().is_empty());
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
