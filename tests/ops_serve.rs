//! The `serve` binary as operators run it: the admin listener on its own port, SIGHUP
//! reopening the audit log after an external rotation, SIGTERM flushing it, and
//! `--log-format json` writing one JSON object per line — with no event lost.

mod ops_support;
mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ops_support::{Scrape, json_lines};
use support::{Upstream, exchange, fixture_rules, parse_reply, request};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_egress-dlp");

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
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

async fn scrape(admin: SocketAddr) -> Scrape {
    let raw = b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let reply = parse_reply(&exchange(admin, raw).await);
    assert_eq!(reply.status, 200);
    Scrape::parse(&reply.text())
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reopens_sigterm_flushes_and_json_logs_parse() {
    let upstream = Upstream::start().await;
    let (listen, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    std::fs::write(
        &config,
        "audit:\n  all_requests: true\nlimits: { drain_time: 5s }\n",
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
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let logs = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    wait_listening(listen, &mut child).await;
    wait_listening(admin, &mut child).await;

    let log = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");
    let send = |n: usize| {
        let url = upstream.url(&format!("/r{n}"));
        async move {
            let reply = request(listen, "POST", &url, &[], b"quarterly numbers").await;
            assert_eq!(reply.status, 200);
        }
    };
    for n in 0..30 {
        send(n).await;
    }
    // What logrotate does: move the file away, then SIGHUP. Requests keep coming meanwhile.
    std::fs::rename(&log, &rotated).unwrap();
    let during = tokio::spawn({
        let url = upstream.url("/during");
        async move {
            for _ in 0..20 {
                let reply = request(listen, "POST", &url, &[], b"x").await;
                assert_eq!(reply.status, 200);
            }
        }
    });
    signal(&child, "HUP").await;
    during.await.unwrap();
    // Waits for the SIGHUP's reopen itself: the file can be back earlier, when events
    // written between the rename and the signal find it gone ("replaced"), so its
    // existence says nothing of the signal (this test failed now and then on that).
    let deadline = Instant::now() + Duration::from_secs(10);
    while scrape(admin)
        .await
        .get("egress_dlp_audit_rotations_total{trigger=\"reopen\"}")
        < 1.0
    {
        assert!(Instant::now() < deadline, "SIGHUP did not reopen the log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(log.exists());
    for n in 30..60 {
        send(n).await;
    }
    let s = scrape(admin).await;
    assert_eq!(
        s.get("egress_dlp_audit_rotations_total{trigger=\"reopen\"}"),
        1.0
    );
    assert_eq!(s.get("egress_dlp_requests_total{action=\"allow\"}"), 80.0);

    // SIGTERM right after the last request: everything accepted must be on disk at exit.
    signal(&child, "TERM").await;
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exit after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let mut ids = BTreeSet::new();
    let mut total = 0;
    for f in [&rotated, &log] {
        for e in json_lines(f) {
            total += 1;
            ids.insert(e["request_id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(total, 80, "every request has exactly one event");
    assert_eq!(ids.len(), 80);
    assert!(!json_lines(&log).is_empty() && !json_lines(&rotated).is_empty());

    // Every log line is a JSON object; one per request, with id, verdict and time.
    let text = logs.await.unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let requests: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["message"] == "request").collect();
    assert_eq!(requests.len(), 80, "{text}");
    for r in &requests {
        assert_eq!(r["level"], "INFO");
        assert_eq!(r["verdict"], "allow");
        assert!(r["request_id"].as_str().is_some_and(|id| ids.contains(id)));
        assert!(r["ms"].as_f64().is_some());
    }
    assert!(lines.iter().any(|l| l["message"] == "audit log reopened"));
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_an_admin_address_equal_to_the_proxy_address() {
    let addr = free_addr().to_string();
    let out = Command::new(BIN)
        .arg("serve")
        .args(["--listen", &addr, "--admin-listen", &addr])
        .arg("--rules")
        .arg(fixture_rules())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin_listen"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_log_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    std::fs::write(&config, "log: { format: xml }\n").unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--rules")
        .arg(fixture_rules())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("log.format"));
}
