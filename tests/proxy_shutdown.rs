//! Graceful shutdown: no new connections, in-flight requests finish within the drain time,
//! and what is still running when it ends is cut.

mod support;

use std::time::{Duration, Instant};

use support::{Behavior, Proxy, Upstream, request};

#[tokio::test]
async fn in_flight_requests_finish_and_new_connections_are_refused() {
    let upstream = Upstream::start().await;
    upstream.set(Behavior::Delay(Duration::from_millis(600)));
    let mut proxy = Proxy::start("limits: { drain_time: 5s }").await;
    let addr = proxy.addr;
    let url = upstream.url("/slow");
    let in_flight = tokio::spawn(async move { request(addr, "GET", &url, &[], b"").await });
    // Let the request reach the upstream, then shut down while it waits.
    upstream.wait_for(|s| s.len() == 1).await;
    let started = Instant::now();
    let done = proxy.shutdown();
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight request was cut");
    done.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_hold_up_shutdown() {
    let mut proxy = Proxy::start("limits: { drain_time: 10s, header_read_timeout: 30s }").await;
    let _idle = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    proxy.shutdown().await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn what_outlives_the_drain_time_is_cut() {
    let upstream = Upstream::start().await;
    upstream.set(Behavior::Delay(Duration::from_secs(30)));
    let mut proxy = Proxy::start("limits: { drain_time: 300ms }").await;
    let addr = proxy.addr;
    let url = upstream.url("/forever");
    let in_flight = tokio::spawn(async move {
        support::exchange(
            addr,
            format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
    });
    upstream.wait_for(|s| s.len() == 1).await;
    let started = Instant::now();
    proxy.shutdown().await.unwrap().unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    // The client saw its connection close without an answer.
    assert!(in_flight.await.unwrap().is_empty());
}
