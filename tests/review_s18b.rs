//! Red-team review (session 18b): TLS interception and HTTP/2 inside it.
//!
//! Each test here fails on the code as reviewed, because of a defect a user would see:
//!
//! - an HTTP/2 request's `te: trailers` is dropped on its way to an HTTP/2 upstream (gRPC
//!   sends it precisely to detect proxies that cannot carry trailers; gRPC C-core servers
//!   answer a request without it with "Missing te header");
//! - after an HTTP/2 upstream sends GOAWAY (a graceful shutdown: nginx reload, its
//!   `keepalive_requests`), every new request on the intercepted connection is answered
//!   502 for as long as an older stream keeps that upstream connection open, instead of
//!   going on a new verified connection (the requests GOAWAY refuses were never processed
//!   and are safe to send again; a browser talking to the site directly does exactly that);
//! - an HTTP/2 client's cookie crumbs (browsers send each cookie as its own `cookie`
//!   field) reach an HTTP/1.1 upstream as several `Cookie` lines instead of one joined
//!   with `; ` (RFC 9113 §8.2.3, a MUST for a translation to HTTP/1.1).
//!
//! Fixed in session 19, which added the last two tests (a stream the upstream refuses
//! unprocessed is sent again; one reset for another reason is not).

mod ops_support;
mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tls_support::{Intercepted, TestCa, TlsProxy};

/// gRPC over an intercepted HTTP/2 connection: the client's `te: trailers` must reach the
/// HTTP/2 upstream (RFC 9113 §8.2.2 allows exactly this value in HTTP/2; the gRPC protocol
/// requires it "to detect incompatible proxies", and C-core servers refuse a call without
/// it). Today the proxy strips `te` with the hop-by-hop fields, so every gRPC call through
/// interception to such a server fails.
#[tokio::test]
async fn an_h2_grpc_call_keeps_te_trailers_on_its_way_to_an_h2_upstream() {
    let setup = Intercepted::start(&["h2"], "").await;
    let mut sender = setup.h2::<Full<Bytes>>().await;
    // A unary gRPC call: a 5-byte message prefix and an empty message.
    let req = Request::post(setup.url("/pkg.Greeter/SayHello"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = setup.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers.get("te").map(|v| v.to_str().unwrap()),
        Some("trailers"),
        "the upstream got the gRPC call without `te: trailers`: {:?}",
        seen[0].headers
    );
}

/// An HTTP/2-only TLS upstream that shuts down gracefully (GOAWAY) when a request for
/// `/slow` arrives, answering that one after 2 s (the connection stays open for it, as
/// nginx does on a reload or at `keepalive_requests`); every other request gets 200 `fast`.
/// Counts requests it answered other than `/slow`.
async fn goaway_upstream(
    cert: tls_support::ServerCert,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let config = tls_support::server_config(&cert, &["h2"]);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fast = Arc::new(AtomicUsize::new(0));
    let f = fast.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, f) = (acceptor.clone(), f.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let notify = Arc::new(tokio::sync::Notify::new());
                let n = notify.clone();
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (n, f) = (n.clone(), f.clone());
                        async move {
                            let slow = req.uri().path() == "/slow";
                            let _ = req.into_body().collect().await;
                            if slow {
                                n.notify_one();
                                tokio::time::sleep(Duration::from_secs(2)).await;
                            } else {
                                f.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from_static(if slow { b"slow" } else { b"fast" }),
                            )))
                        }
                    });
                let conn =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = notify.notified() => conn.as_mut().graceful_shutdown(),
                }
                let _ = conn.await;
            });
        }
    });
    (addr, fast, task)
}

/// An HTTP/2 upstream shuts down gracefully (GOAWAY) while one stream (`/slow`, 2 s) is
/// still open. A request the client sends meanwhile on its intercepted connection should
/// reach the upstream on a new verified connection (GOAWAY guarantees it was not
/// processed; the proxy holds its whole body). Today the proxy keeps handing out the
/// connection that sent GOAWAY (it is not closed yet), h2 refuses the new stream, and the
/// client gets a 502 "The site's answer was broken" page that it cannot retry: for as long
/// as any older stream (a download, a long poll, server-sent events) keeps it open.
#[tokio::test]
async fn a_request_after_the_upstream_sent_goaway_is_not_answered_502() {
    let ca = TestCa::new();
    let (addr, fast, _task) = goaway_upstream(ca.issue(&["upstream.test"], false)).await;
    let proxy = TlsProxy::trusting(&ca, addr.port(), "").await;
    let sender = tls_support::h2_via::<Full<Bytes>>(&proxy, addr, "upstream.test").await;
    let post = |path: &str| {
        let mut sender = sender.clone();
        let req = Request::post(format!("https://upstream.test:{}{path}", addr.port()))
            .body(Full::new(Bytes::from_static(b"hi")))
            .unwrap();
        async move {
            let resp = sender.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    assert_eq!(post("/fast").await, (200, "fast".to_owned()));
    // The upstream sends GOAWAY as `/slow` arrives, and answers it 2 s later.
    let slow = tokio::spawn(post("/slow"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = post("/fast").await;
    assert_eq!(slow.await.unwrap(), (200, "slow".to_owned()));
    assert_eq!(
        during.0, 200,
        "a request sent after the upstream's GOAWAY got: {during:?}"
    );
    assert_eq!(during.1, "fast");
    assert_eq!(fast.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// An HTTP/2-only client (the proxy translates to an HTTP/1.1-only upstream, as the README
/// promises) sends its cookies as separate `cookie` fields, as browsers do over HTTP/2 for
/// header compression. RFC 9113 §8.2.3: before such a request goes on over HTTP/1.1 they
/// MUST be joined into one field with `; ` (RFC 6265 §5.4 allows one `Cookie` line).
/// Today the upstream gets two `Cookie` lines; servers that read one line, or join
/// repeated lines with `,` (a list header's rule), lose the session cookie.
#[tokio::test]
async fn h2_cookie_crumbs_reach_an_http1_upstream_as_one_cookie_line() {
    let setup = Intercepted::start(&["http/1.1"], "").await;
    let mut sender = setup.h2::<Full<Bytes>>().await;
    let req = Request::get(setup.url("/account"))
        .header("cookie", "session=abc")
        .header("cookie", "theme=dark")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(setup.upstream.versions(), [http::Version::HTTP_11]);
    let seen = setup.upstream.requests();
    let cookies: Vec<_> = seen[0]
        .headers
        .get_all("cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        cookies,
        ["session=abc; theme=dark"],
        "the HTTP/1.1 upstream got these Cookie lines"
    );
}

/// An HTTP/2-only TLS upstream (the h2 crate's server, to choose its resets) that resets
/// the first `reset_first` request streams with `reason` as their heads arrive, before
/// reading any body, and answers every other with 200 and the length of the body it read.
/// Returns its address and the number of request heads it got.
async fn resetting_upstream(
    cert: tls_support::ServerCert,
    reason: h2::Reason,
    reset_first: usize,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let config = tls_support::server_config(&cert, &["h2"]);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(AtomicUsize::new(0));
    let h = heads.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, h) = (acceptor.clone(), h.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut conn) = h2::server::handshake(tls).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    if h.fetch_add(1, Ordering::SeqCst) < reset_first {
                        respond.send_reset(reason);
                        continue;
                    }
                    tokio::spawn(async move {
                        let mut body = req.into_body();
                        let mut len = 0;
                        while let Some(Ok(chunk)) = body.data().await {
                            len += chunk.len();
                            let _ = body.flow_control().release_capacity(chunk.len());
                        }
                        let resp = http::Response::new(());
                        let Ok(mut send) = respond.send_response(resp, false) else {
                            return;
                        };
                        let _ = send.send_data(Bytes::from(len.to_string()), true);
                    });
                }
            });
        }
    });
    (addr, heads)
}

/// POSTs `body` through an intercepted HTTP/2 connection to `addr`: (status, body).
async fn post_via(
    proxy: &TlsProxy,
    addr: std::net::SocketAddr,
    body: &'static [u8],
) -> (u16, String) {
    let mut sender = tls_support::h2_via::<Full<Bytes>>(proxy, addr, "upstream.test").await;
    let req = Request::post(format!("https://upstream.test:{}/submit", addr.port()))
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// An HTTP/2 upstream that refuses a stream with `REFUSED_STREAM` (RFC 9113 §8.7: it did
/// no processing; servers do so when overloaded or shutting down) gets the request again,
/// held body and all, on a new connection: the client gets the upstream's answer, not a
/// 502 it cannot retry (found while fixing the GOAWAY case: a request that had left was
/// never sent again).
#[tokio::test]
async fn a_request_an_h2_upstream_refuses_unprocessed_is_sent_again() {
    let ca = TestCa::new();
    let (addr, heads) = resetting_upstream(
        ca.issue(&["upstream.test"], false),
        h2::Reason::REFUSED_STREAM,
        1,
    )
    .await;
    let proxy = TlsProxy::trusting(&ca, addr.port(), "").await;
    let got = post_via(&proxy, addr, b"twelve bytes").await;
    assert_eq!(got, (200, "12".to_owned()), "the client got {got:?}");
    assert_eq!(heads.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A stream reset for any other reason may have been processed: it is not sent again
/// (a POST twice is a payment twice), and the client gets the 502.
#[tokio::test]
async fn a_request_reset_for_another_reason_is_not_sent_again() {
    let ca = TestCa::new();
    let (addr, heads) = resetting_upstream(
        ca.issue(&["upstream.test"], false),
        h2::Reason::INTERNAL_ERROR,
        1,
    )
    .await;
    let proxy = TlsProxy::trusting(&ca, addr.port(), "").await;
    let (status, _) = post_via(&proxy, addr, b"twelve bytes").await;
    assert_eq!(status, 502);
    assert_eq!(heads.load(std::sync::atomic::Ordering::SeqCst), 1);
}
