//! The `egress-dlp serve` binary: a bad config is refused with every problem listed; a
//! good one serves real clients (curl) until SIGTERM, then exits 0.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{Upstream, customer_export, fixture_rules};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_egress-dlp");

/// A loopback address that was free a moment ago.
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn wait_listening(addr: SocketAddr, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("egress-dlp serve exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the proxy never listened on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs curl through `proxy`; returns (status code, body).
async fn curl(proxy: SocketAddr, args: &[&str]) -> (u16, String) {
    let out = support::curl_via(proxy)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl printed no status: {text:?} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, body.to_owned())
}

#[tokio::test]
async fn a_bad_config_is_refused_with_every_problem_listed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    std::fs::write(
        &path,
        "listen: nowhere\naccess: { clients: [bogus] }\nlimits: { oversize: maybe }\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .arg("--rules")
        .arg(fixture_rules())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["listen:", "access.clients[0]:", "limits.oversize:"] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_through_the_served_proxy_then_sigterm_exits_0() {
    if support::curl_missing() {
        return;
    }
    let upstream = Upstream::start().await;
    let (listen, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    // The file says one listen address; the flag wins.
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:1\naccess: {{ connect_ports: [{}] }}\ntls: {{ intercept: false }}\n\
             limits: {{ drain_time: 2s }}\n",
            upstream.addr.port()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["--listen", &listen.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .arg("--rules")
        .arg(fixture_rules())
        .arg("--data-dir")
        .arg(dir.path())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_listening(listen, &mut child).await;

    // A benign upload arrives as sent.
    let benign = dir.path().join("notes.txt");
    std::fs::write(&benign, "meeting notes, nothing sensitive\n".repeat(1000)).unwrap();
    let (code, body) = curl(
        listen,
        &[
            "--data-binary",
            &format!("@{}", benign.display()),
            &upstream.url("/notes"),
        ],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(upstream.requests()[0].body, std::fs::read(&benign).unwrap());

    // A customer export is blocked, and the API client gets JSON.
    let export = dir.path().join("customers.csv");
    std::fs::write(&export, customer_export(40)).unwrap();
    let (code, body) = curl(
        listen,
        &[
            "-H",
            "Accept: application/json",
            "--data-binary",
            &format!("@{}", export.display()),
            &upstream.url("/exfil"),
        ],
    )
    .await;
    assert_eq!(code, 403, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["findings"][0]["category"], "email");
    assert_eq!(doc["findings"][0]["distinct"], 40);
    assert_eq!(
        upstream.requests().len(),
        1,
        "the blocked upload reached the upstream"
    );

    // curl -p: CONNECT to an allowed port, then HTTP inside the tunnel.
    let (code, body) = curl(listen, &["-p", &upstream.url("/tunnelled")]).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(upstream.requests()[1].target, "/tunnelled");

    let pid = child.id().expect("running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("no exit within 10 s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
