//! Red-team review: streamed bodies (over `limits.hold_bytes`) inside intercepted TLS with
//! HTTP/2, sent DATA frame by DATA frame with pauses: a list in a last frame followed by a
//! pause, a list cut across many small frames, a list in trailers, a base64 list in
//! minified JSON. Nothing of a list reaches the upstream, and the client gets a 403.

mod ops_support;
mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::BodyExt;
use hyper::body::Frame;
use support::filler;
use tls_support::Intercepted;
use tokio::sync::mpsc;

/// A request body fed frame by frame from the test.
struct Fed(mpsc::UnboundedReceiver<Frame<Bytes>>);

impl hyper::body::Body for Fed {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

async fn setup(extra: &str) -> Intercepted {
    Intercepted::start(&["h2"], extra).await
}

/// Starts a POST over h2 through the proxy; returns the frame sender and the response
/// task (status, body).
async fn start_post(
    s: &Intercepted,
    path: &str,
) -> (
    mpsc::UnboundedSender<Frame<Bytes>>,
    tokio::task::JoinHandle<Result<(u16, String), String>>,
) {
    let mut sender = tls_support::h2_via::<Fed>(&s.proxy, s.upstream.addr, "upstream.test").await;
    let (tx, rx) = mpsc::unbounded_channel();
    let req = Request::post(format!(
        "https://upstream.test:{}{path}",
        s.upstream.addr.port()
    ))
    .header("content-type", "text/plain")
    .body(Fed(rx))
    .unwrap();
    let task = tokio::spawn(async move {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        Ok((status, body))
    });
    (tx, task)
}

fn data(tx: &mpsc::UnboundedSender<Frame<Bytes>>, bytes: &[u8]) {
    let _ = tx.send(Frame::data(Bytes::copy_from_slice(bytes)));
}

fn upstream_count(s: &Intercepted, needle: &str) -> usize {
    s.upstream
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).matches(needle).count())
        .sum()
}

fn upstream_longest(s: &Intercepted) -> usize {
    s.upstream
        .requests()
        .iter()
        .map(|r| r.body.len())
        .max()
        .unwrap_or(0)
}

/// The answer (or the stream's reset) within 10 s.
async fn answer(
    task: tokio::task::JoinHandle<Result<(u16, String), String>>,
) -> Result<(u16, String), String> {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("an answer within 10 s")
        .unwrap()
}

/// A list in the last DATA frame sent so far, then a pause (no END_STREAM): judged without
/// more bytes, a 403, and none of it upstream.
#[tokio::test]
async fn h2_a_list_in_a_last_data_frame_then_a_pause_is_blocked_before_it_leaves() {
    let s = setup("limits: { hold_bytes: 64KiB }\n").await;
    let (tx, task) = start_post(&s, "/last").await;
    for _ in 0..8 {
        data(&tx, &filler(16 << 10));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let list = support::customer_export(40);
    data(&tx, list.as_bytes());
    let reply = answer(task).await;
    assert_eq!(
        upstream_count(&s, "@acme-corp.io"),
        0,
        "the list went upstream"
    );
    match reply {
        Ok((status, body)) => assert_eq!(status, 403, "{body}"),
        Err(e) => panic!("no block page, the stream failed: {e}"),
    }
}

/// A list cut across many small DATA frames (7 bytes each), each its own write with a
/// pause now and then.
#[tokio::test]
async fn h2_a_list_cut_across_many_small_data_frames_never_reaches_the_upstream() {
    let s = setup("limits: { hold_bytes: 64KiB }\n").await;
    let (tx, task) = start_post(&s, "/small").await;
    for _ in 0..8 {
        data(&tx, &filler(16 << 10));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let list: String = (0..12).map(|i| format!("c{i}@acme-corp.io ")).collect();
    for (n, piece) in list.as_bytes().chunks(7).enumerate() {
        data(&tx, piece);
        if n % 8 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for _ in 0..4 {
        data(&tx, b" ");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(upstream_longest(&s) >= 32 << 10, "nothing went upstream");
    assert_eq!(
        upstream_count(&s, "acme-corp"),
        0,
        "a piece of the list went upstream"
    );
    assert!(
        s.upstream
            .requests()
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.body).contains("@acme")),
        "a piece of the list went upstream"
    );
    data(&tx, &filler(8 << 10));
    let reply = answer(task).await;
    assert_eq!(upstream_count(&s, "acme-corp"), 0, "the list went upstream");
    match reply {
        Ok((status, body)) => assert_eq!(status, 403, "{body}"),
        Err(e) => panic!("no block page, the stream failed: {e}"),
    }
}

/// A list in the trailers of a streamed h2 body: never forwarded (trailers are dropped).
#[tokio::test]
async fn h2_a_list_in_trailers_never_reaches_the_upstream() {
    let s = setup("limits: { hold_bytes: 64KiB }\n").await;
    let (tx, task) = start_post(&s, "/trailers").await;
    for _ in 0..8 {
        data(&tx, &filler(16 << 10));
    }
    let mut trailers = HeaderMap::new();
    for i in 0..40 {
        trailers.insert(
            http::HeaderName::from_bytes(format!("x-c{i}").as_bytes()).unwrap(),
            format!("customer{i}@acme-corp.io").parse().unwrap(),
        );
    }
    let _ = tx.send(Frame::trailers(trailers));
    drop(tx);
    let reply = answer(task).await;
    for r in s.upstream.requests() {
        assert!(!format!("{:?}", r.headers).contains("acme-corp"));
        assert!(!String::from_utf8_lossy(&r.body).contains("acme-corp"));
    }
    let _ = reply;
}

/// A base64 list in a minified JSON field, over h2, cut by frames inside the run, then a
/// pause.
#[tokio::test]
async fn h2_a_base64_list_in_minified_json_is_not_sent_before_it_is_counted() {
    use base64::Engine as _;
    let s = setup("limits: { hold_bytes: 64KiB }\n").await;
    let (tx, task) = start_post(&s, "/json").await;
    let list: String = (0..40)
        .map(|i| format!("customer{i}@acme-corp.io\n"))
        .collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&list);
    data(&tx, b"{\"pad\":\"");
    for _ in 0..8 {
        data(
            &tx,
            &filler(16 << 10)
                .iter()
                .map(|b| if *b == b'\n' { b' ' } else { *b })
                .collect::<Vec<u8>>(),
        );
    }
    data(&tx, b"\",\"file\":\"");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for piece in encoded.as_bytes().chunks(100) {
        data(&tx, piece);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    data(&tx, b"\",\"x\":\"");
    data(&tx, &[b'a'; 100]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(upstream_longest(&s) >= 32 << 10, "nothing went upstream");
    for r in s.upstream.requests() {
        assert!(
            !String::from_utf8_lossy(&r.body).contains(&encoded[..40]),
            "the encoded list went upstream before it was counted"
        );
    }
    drop(tx);
    let reply = answer(task).await;
    for r in s.upstream.requests() {
        assert!(!String::from_utf8_lossy(&r.body).contains(&encoded[..40]));
    }
    match reply {
        Ok((status, body)) => assert_eq!(status, 403, "{body}"),
        Err(e) => panic!("no block page, the stream failed: {e}"),
    }
}
