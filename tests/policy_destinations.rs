//! Destinations and per-user thresholds over real loopback sockets: a sanctioned host gets
//! a bulk export, a blocked one gets nothing (plain and CONNECT), a default one the block
//! page; a user with raised thresholds sends what another user may not. And the config
//! errors, all at once.

mod support;

use std::path::Path;

use egress_dlp::config::{self, Overrides};
use support::{
    Proxy, Upstream, basic, credentials_file, customer_export, exchange, fixture_rules,
    parse_reply, request,
};

#[tokio::test]
async fn a_sanctioned_destination_receives_a_bulk_export_byte_for_byte() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("policy: { destinations: { sanctioned: ['127.0.0.1'] } }").await;
    let export = customer_export(50);
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/crm/import"),
        &[("Content-Type", "text/csv")],
        export.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].complete);
    assert_eq!(seen[0].body, export.as_bytes());
}

#[tokio::test]
async fn a_default_destination_gets_the_block_page_for_the_same_export() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        "policy: { destinations: { sanctioned: ['crm.acme.example'], blocked: ['*.paste.example'] } }",
    )
    .await;
    let export = customer_export(50);
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/crm/import"),
        &[],
        export.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 403);
    assert!(
        reply.text().contains("email: 50 distinct values"),
        "{}",
        reply.text()
    );
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_blocked_destination_receives_nothing_and_the_client_is_told_why() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("policy: { destinations: { blocked: ['127.0.0.1'] } }").await;
    // Benign content: the destination alone decides.
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/paste"),
        &[],
        b"just a note",
    )
    .await;
    assert_eq!(reply.status, 403);
    let page = reply.text();
    assert!(page.contains("Destination blocked"), "{page}");
    assert!(page.contains("blocked destinations (127.0.0.1)"), "{page}");
    assert!(!page.contains("just a note"));
    let json = request(
        proxy.addr,
        "GET",
        &upstream.url("/"),
        &[("Accept", "application/json")],
        b"",
    )
    .await;
    let doc: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(doc["error"], "destination_blocked");
    assert_eq!(upstream.connections(), 0, "the proxy connected upstream");
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_blocked_destination_is_refused_before_its_body_is_read() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("policy: { destinations: { blocked: ['127.0.0.1'] } }").await;
    // The head announces 50 MB that never come: the answer must not wait for them.
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: 50000000\r\n\r\n",
        upstream.url("/drop"),
        upstream.addr
    );
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
    )
    .await
    .expect("no answer before the body")
    .unwrap();
    let reply = parse_reply(&buf[..n]);
    assert_eq!(reply.status, 403);
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn connect_to_a_blocked_destination_is_refused() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&format!(
        "access: {{ connect_ports: [{}] }}\npolicy: {{ destinations: {{ blocked: ['127.0.0.1'] }} }}",
        upstream.addr.port()
    ))
    .await;
    let target = upstream.addr;
    let reply = parse_reply(
        &exchange(
            proxy.addr,
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await,
    );
    assert_eq!(reply.status, 403);
    assert!(reply.text().contains("Destination blocked"));
    assert_eq!(upstream.connections(), 0);
}

/// A proxy where alice has raised email thresholds, bob has none, and carol's group
/// `interns` has lowered ones.
async fn override_proxy(dir: &Path) -> Proxy {
    let file = credentials_file(
        dir,
        &[("alice", "a-pass"), ("bob", "b-pass"), ("carol", "c-pass")],
    );
    Proxy::start(&format!(
        "policy:
  auth:
    credentials: {}
  groups:
    interns: [carol]
  overrides:
    - users: [alice]
      thresholds: {{ email: {{ log: 20, block: 100 }} }}
    - groups: [interns]
      thresholds: {{ email: {{ block: 2 }} }}
",
        file.display()
    ))
    .await
}

#[tokio::test]
async fn a_raised_threshold_lets_one_user_send_what_another_may_not() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let proxy = override_proxy(dir.path()).await;
    let export = customer_export(50);
    let send = |user: &'static str, password: &'static str, body: Vec<u8>| {
        let url = upstream.url("/upload");
        let addr = proxy.addr;
        async move {
            request(
                addr,
                "POST",
                &url,
                &[("Proxy-Authorization", &basic(user, password))],
                &body,
            )
            .await
        }
    };
    let alice = send("alice", "a-pass", export.clone().into_bytes()).await;
    assert_eq!(alice.status, 200, "{}", alice.text());
    let bob = send("bob", "b-pass", export.clone().into_bytes()).await;
    assert_eq!(bob.status, 403);
    assert!(bob.text().contains("Signed in as: <strong>bob</strong>"));
    // Three addresses: under the rule's block (10), over the interns' (2).
    let three = customer_export(3).into_bytes();
    let bob_three = send("bob", "b-pass", three.clone()).await;
    assert_eq!(bob_three.status, 200);
    let carol = send("carol", "c-pass", three.clone()).await;
    assert_eq!(carol.status, 403);
    // Above alice's own block threshold she is blocked too.
    let alice_many = send("alice", "a-pass", customer_export(120).into_bytes()).await;
    assert_eq!(alice_many.status, 403);

    let seen = upstream.requests();
    assert_eq!(seen.len(), 2, "only alice's 50 and bob's 3 went out");
    assert_eq!(seen[0].body, export.as_bytes());
    assert_eq!(seen[1].body, three);
}

#[test]
fn policy_config_errors_are_reported_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = credentials_file(dir.path(), &[("alice", "pw")]);
    let yaml = format!(
        "rules: {rules}
policy:
  auth:
    credentials: {creds}
    clients: {{ '10.0.0.0/8': lab, 'not-a-net': x, '10.0.0.0/8 ': dup }}
    max_failures_per_client: 0
    realm: 'say \"hi\"'
  groups:
    staff: [alice, zed]
  destinations:
    sanctioned: ['crm.acme.example', '*.com', 'both.example']
    blocked: ['bad host', 'BOTH.example.']
  overrides:
    - users: [alice, nobody]
      groups: [staff, ghosts]
      thresholds:
        emial: {{ log: 5 }}
        email: {{ log: 50, block: 10 }}
        card: {{}}
        ssn: {{ block: 0 }}
    - thresholds: {{ email: {{ log: 1 }} }}
",
        rules = fixture_rules().display(),
        creds = file.display()
    );
    let err = config::from_yaml(&yaml, None, &Overrides::default())
        .unwrap_err()
        .to_string();
    let expected = [
        "policy.auth.clients.not-a-net",
        "10.0.0.0/8 is mapped already",
        "policy.auth.max_failures_per_client: must be at least 1",
        "policy.auth.realm",
        "policy.groups.staff[1]: unknown user \"zed\"",
        "policy.destinations.sanctioned[1]",
        "policy.destinations.blocked[0]",
        "both.example is both sanctioned and blocked",
        "policy.overrides[0].users[1]: unknown user \"nobody\"",
        "policy.overrides[0].groups[1]: unknown group \"ghosts\"",
        "policy.overrides[0].thresholds.emial: unknown category",
        "policy.overrides[0].thresholds.email: log (50) is above block (10)",
        "policy.overrides[0].thresholds.card: set at least one",
        "policy.overrides[0].thresholds.ssn.block: must be 1-",
        "policy.overrides[1]: name at least one of `users` and `groups`",
    ];
    for e in expected {
        assert!(err.contains(e), "missing {e:?} in:\n{err}");
    }
}

#[test]
fn overrides_without_auth_are_an_error() {
    let yaml = format!(
        "rules: {}\npolicy:\n  overrides:\n    - users: [alice]\n      thresholds: {{ email: {{ block: 5 }} }}\n",
        fixture_rules().display()
    );
    let err = config::from_yaml(&yaml, None, &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("overrides need policy.auth"), "{err}");
}

/// Log lines written by every proxy in this test binary (a global subscriber, set once).
fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    use std::sync::{Mutex, OnceLock};
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        struct Sink(&'static Mutex<Vec<u8>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Sink(logs))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        logs
    })
}

#[tokio::test]
async fn a_sanctioned_bulk_transfer_is_logged_with_its_user_and_reason() {
    let logs = captured_logs();
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let file = credentials_file(dir.path(), &[("dana", "d-pass")]);
    let proxy = Proxy::start(&format!(
        "policy:\n  auth:\n    credentials: {}\n  destinations:\n    sanctioned: ['127.0.0.1']\n",
        file.display()
    ))
    .await;
    let export = customer_export(50);
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/warehouse/load"),
        &[("Proxy-Authorization", &basic("dana", "d-pass"))],
        export.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(upstream.requests()[0].body, export.as_bytes());
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("user=\"dana\"") && l.contains("sanctioned destination"))
        .unwrap_or_else(|| panic!("no sanctioned log line for dana in:\n{text}"));
    assert!(line.contains("bulk=true"), "{line}");
    assert!(line.contains("sanctioned=127.0.0.1"), "{line}");
    assert!(!line.contains("acme-corp.io"), "a value in the log: {line}");
}

/// A blocked IP address is blocked however the target spells it, as long as the system
/// resolver reaches it (found in review: `2130706433` went through a block on
/// `127.0.0.1`).
#[tokio::test]
async fn a_blocked_ip_is_blocked_in_every_spelling_that_reaches_it() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("policy: { destinations: { blocked: ['127.0.0.1'] } }").await;
    let port = upstream.addr.port();
    for host in [
        "127.0.0.1",
        "2130706433",
        "127.1",
        "0x7f.0.0.1",
        "0177.0.0.1",
    ] {
        let url = format!("http://{host}:{port}/paste");
        let reply = request(proxy.addr, "POST", &url, &[], b"just a note").await;
        assert_eq!(reply.status, 403, "{host}: {}", reply.text());
    }
    assert!(upstream.requests().is_empty());
}
