//! Through the proxy: cumulative windows catch a slow drip from one sender only, and an
//! exact-data-match rule blocks real customers while letting look-alikes through.

mod support;

use std::net::SocketAddr;
use std::path::Path;

use egress_dlp::cli;
use egress_dlp::config::{self, Overrides};
use support::{Proxy, Upstream, parse_reply, read_to_close};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

/// A `Connection: close` POST through the proxy from source address `from`.
async fn post_from(from: &str, proxy: SocketAddr, url: &str, body: &str) -> support::Reply {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(proxy).await.unwrap();
    let host = url.split('/').nth(2).unwrap();
    let head = format!(
        "POST {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    parse_reply(&read_to_close(&mut stream).await)
}

/// `n` distinct emails starting at number `from`.
fn emails(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("row {i}: person{i}@acme-corp.io\n"))
        .collect()
}

#[tokio::test]
async fn a_slow_drip_is_blocked_once_the_window_fills_for_that_sender_only() {
    let upstream = Upstream::start().await;
    // Per request the fixture logs at 3 and blocks at 10; the hourly window blocks at 50.
    let proxy = Proxy::start(
        "access: { clients: [127.0.0.0/8] }\n\
         policy: { windows: { span: 1h, thresholds: { email: { log: 20, block: 50 } } } }\n",
    )
    .await;
    let url = upstream.url("/drip");
    for i in 0..5 {
        let reply = post_from("127.0.0.1", proxy.addr, &url, &emails(i * 9, 9)).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
    }
    // 45 distinct so far; nine more would make 54.
    let reply = post_from("127.0.0.1", proxy.addr, &url, &emails(45, 9)).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(upstream.requests().len(), 5, "the sixth request left");
    // Values already sent do not count twice: resending them is fine.
    let reply = post_from("127.0.0.1", proxy.addr, &url, &emails(0, 9)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Another sender with the same nine is far from its own window's threshold.
    let reply = post_from("127.0.0.2", proxy.addr, &url, &emails(45, 9)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream.requests().len(), 7);
}

/// Writes a customer table of `n` rows and builds its index; returns the config lines.
fn build_index(dir: &Path, n: usize) -> String {
    let csv: String = std::iter::once("id,name,email\n".to_owned())
        .chain((0..n).map(|i| format!("{i},Customer {i},Customer{i}@Acme-Corp.io\n")))
        .collect();
    std::fs::write(dir.join("customers.csv"), csv).unwrap();
    let args = cli::edm::BuildArgs {
        rules: "tests/fixtures/edm-only".into(),
        columns: vec!["email".into()],
        key: dir.join("edm.key"),
        out: dir.join("customers.edm"),
        csv: dir.join("customers.csv"),
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = cli::edm::build(&args, &mut out, &mut err);
    assert_eq!(status, 0, "{}", String::from_utf8_lossy(&err));
    let said = String::from_utf8_lossy(&out);
    assert!(said.contains(&format!("indexed {n} records")), "{said}");
    let index = std::fs::read(dir.join("customers.edm")).unwrap();
    assert!(
        !index.windows(8).any(|w| w == b"customer"),
        "plaintext in the index"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("edm.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    format!(
        "rules: tests/fixtures/edm-only\ntls: {{ intercept: false }}\ndata_dir: {}\n\
         policy: {{ edm: {{ index: {}, key: {} }} }}\n",
        dir.display(),
        dir.join("customers.edm").display(),
        dir.join("edm.key").display()
    )
}

#[tokio::test]
async fn an_edm_rule_blocks_real_customers_and_passes_look_alikes() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = build_index(dir.path(), 200);
    let config = config::from_yaml(&yaml, None, &Overrides::default())
        .unwrap_or_else(|e| panic!("config: {e}"));
    let upstream = Upstream::start().await;
    let proxy = Proxy::start_with(config).await;
    let url = upstream.url("/export");
    // Thirty customers from the table (case differs: normalised like the table).
    let real: String = (0..30)
        .map(|i| format!("{i},customer{i}@acme-corp.io\n"))
        .collect();
    let reply = post_from("127.0.0.1", proxy.addr, &url, &real).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(upstream.requests().is_empty(), "a customer export left");
    // Thirty addresses of the same shape and domain that are not customers.
    let fake: String = (0..30)
        .map(|i| format!("{i},prospect{i}@acme-corp.io\n"))
        .collect();
    let reply = post_from("127.0.0.1", proxy.addr, &url, &fake).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, fake.as_bytes());
}

#[test]
fn edm_misconfiguration_is_refused_at_start_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = build_index(dir.path(), 5);
    // A rule using edm: with no index configured.
    let err = config::from_yaml(
        "rules: tests/fixtures/edm-only\n",
        None,
        &Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("customer-email use edm: but no index"),
        "{err}"
    );
    // The wrong key.
    std::fs::write(dir.path().join("other.key"), "ab".repeat(32)).unwrap();
    let wrong = yaml.replace("edm.key", "other.key");
    let err = config::from_yaml(&wrong, None, &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("built with another key"), "{err}");
    // A truncated index.
    let index = dir.path().join("customers.edm");
    let bytes = std::fs::read(&index).unwrap();
    std::fs::write(&index, &bytes[..bytes.len() - 5]).unwrap();
    let err = config::from_yaml(&yaml, None, &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("policy.edm.index"), "{err}");
    // Windows on a category no rule has, and log above block.
    let err = config::from_yaml(
        "policy: { windows: { thresholds: { emial: { log: 5 }, email: { log: 9, block: 3 } } } }\n",
        None,
        &Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no rule has category \"emial\""), "{err}");
    assert!(err.contains("log (9) is above block (3)"), "{err}");
}

/// A request refused as not fully inspected records nothing in the sender's window, like
/// one blocked by a rule (found in review: its values were counted).
#[tokio::test]
async fn a_request_refused_as_not_inspected_does_not_fill_the_window() {
    let upstream = Upstream::start().await;
    let proxy =
        Proxy::start("policy: { windows: { span: 1h, thresholds: { email: { block: 12 } } } }\n")
            .await;
    let query = |from: usize, n: usize| {
        (from..from + n)
            .map(|i| format!("e{i}=person{i}@acme-corp.io"))
            .collect::<Vec<_>>()
            .join("&")
    };
    let refused = support::request(
        proxy.addr,
        "POST",
        &upstream.url(&format!("/up?{}", query(0, 9))),
        &[("Content-Encoding", "compress")],
        b"\x1f\x9d\x90 data",
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(upstream.requests().is_empty());
    let next = support::request(
        proxy.addr,
        "POST",
        &upstream.url(&format!("/up?{}", query(100, 3))),
        &[],
        b"hello",
    )
    .await;
    assert_eq!(
        next.status,
        200,
        "the refused request's values were counted: {}",
        next.text()
    );
}
