//! Session 21a red-team review of the parts security engineers and operators touch: rule
//! files and their validation (`src/rules/`, `rules check`), `scan` (`src/cli.rs`), config
//! loading (`src/config/`), hot reload (`src/proxy/reload.rs`, the reload loop in
//! `src/proxy/mod.rs`) and the admin listener (`src/admin.rs`, `src/metrics.rs`).
//!
//! Every test here fails on the code as reviewed (main at 677a066; all but the fifth fixed in
//! session 21, the fifth in session 24, the third's test is in `review_s21b.rs`), over loopback sockets
//! to servers the test starts, or by running the binary on temp files. Each says what a
//! user sees and what they should see:
//!
//! 1. the audit log's path/host masking (and sample fingerprints) keep using the rule set
//!    the proxy started with: a rule added by a reload leaves its values raw in `path`;
//! 2. `egress_dlp_findings_total{rule}` counts an in-flight request's findings by index in
//!    the NEW rule set: after a reload they land under another rule's id;
//! 3. `access.clients` is judged once per connection: a client removed by a reload keeps
//!    its open keep-alive connection proxied;
//! 4. a file saved while a reload runs is never picked up (the watch baseline is taken
//!    after the reload);
//! 5. `rules check` accepts a keyword rule whose regex costs ~200 µs per input byte;
//! 6. a rule refused as too slow to search hides every other rule's failing test case.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egress_dlp::config::{self, Overrides};
use egress_dlp::proxy;
use egress_dlp::proxy::reload::ReloadHandle;
use support::{Upstream, customer_export};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const BIN: &str = env!("CARGO_BIN_EXE_egress-dlp");

/// An email rule that blocks at `block` distinct values (logs at 2).
fn email_rule(block: u64) -> String {
    format!(
        "rules:\n  - id: email\n    name: Email address\n    category: email\n    \
         pattern: '(?i)\\b[a-z0-9._%+-]{{1,64}}@[a-z0-9-]{{1,63}}(?:\\.[a-z0-9-]{{1,63}}){{0,6}}\\.[a-z]{{2,24}}\\b'\n    \
         keywords: ['@']\n    normalize: lowercase\n    thresholds: {{ log: 2, block: {block} }}\n    \
         tests:\n      match: ['mail alice@acme-corp.io now']\n      no_match: ['user@localhost']\n"
    )
}

/// A customer-id rule that logs at one value.
const CUST_RULE: &str = "rules:\n  - id: cust\n    name: Customer id\n    category: customer-id\n    \
    pattern: '\\bCUST-\\d{8}\\b'\n    thresholds: { log: 1, block: 50 }\n    \
    tests:\n      match: ['id CUST-12345678 here']\n      no_match: ['CUST-1234']\n";

struct Running {
    addr: SocketAddr,
    admin: SocketAddr,
    handle: ReloadHandle,
    dir: tempfile::TempDir,
    rules: PathBuf,
    _stop: oneshot::Sender<()>,
}

fn config_text(dir: &Path, rules: &Path, extra_yaml: &str) -> String {
    format!(
        "rules: {}\ndata_dir: {}\ntls: {{ intercept: false }}\n{extra_yaml}",
        rules.display(),
        dir.display()
    )
}

/// A reloadable proxy with an admin listener, its rules directory holding `email.yaml`
/// (blocking at `block`) and the `extra` files, its config `extra_yaml`.
async fn start(block: u64, extra: &[(&str, String)], extra_yaml: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("email.yaml"), email_rule(block)).unwrap();
    for (name, text) in extra {
        std::fs::write(rules.join(name), text).unwrap();
    }
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, config_text(dir.path(), &rules, extra_yaml)).unwrap();
    let config = config::load(Some(&config_path), &Overrides::default())
        .unwrap_or_else(|e| panic!("config: {e}"));
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = admin_listener.local_addr().unwrap();
    let options = proxy::RunOptions {
        admin: Some(admin_listener),
        ..proxy::RunOptions::default()
    };
    let support::Reloadable { addr, handle, stop } =
        support::serve_reloadable(&config_path, config, options).await;
    Running {
        addr,
        admin,
        handle,
        dir,
        rules,
        _stop: stop,
    }
}

/// One keep-alive request on `stream`; returns the status.
async fn send_on(stream: &mut TcpStream, method: &str, url: &str, body: &str) -> u16 {
    let host = url.split('/').nth(2).unwrap();
    let head = format!(
        "{method} {url} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    read_response(stream).await.0
}

/// Reads one response with a Content-Length body; returns its status and body.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let (status, body) = support::read_keepalive_reply(stream)
        .await
        .expect("a response within 10 s");
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn status_of(addr: SocketAddr, method: &str, url: &str, body: &str) -> u16 {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    send_on(&mut conn, method, url, body).await
}

/// `GET path` on the admin listener: the body.
async fn admin_get(admin: SocketAddr, path: &str) -> String {
    let mut conn = TcpStream::connect(admin).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\n\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    read_response(&mut conn).await.1
}

/// The value of a metric series line `name{labels} value` in a scrape (0 when absent).
fn metric(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Defect: the audit log's masking of the path and host uses the rule set the proxy
/// STARTED with (`Auditor::start` builds `SampleValues` once, `src/audit/mod.rs`; the
/// reload loop in `src/proxy/mod.rs` never replaces it, and `mask_matches` looks the
/// finding up by its index in that old set). What a user sees: a security engineer adds a
/// customer-id rule and reloads; a request whose path carries a customer id is logged by
/// the new rule, and the audit event's `path` holds the raw id (`/orders/CUST-12345678`),
/// which DESIGN.md says is never written to the audit log. After a restart the same
/// request is masked.
#[tokio::test]
async fn a_rule_added_by_a_reload_has_its_values_masked_in_the_audit_path() {
    let upstream = Upstream::start().await;
    let proxy = start(10, &[], "reload: { watch_interval: 0 }\n").await;
    std::fs::write(proxy.rules.join("zz-cust.yaml"), CUST_RULE).unwrap();
    proxy.handle.reload().await.expect("a good reload");
    let url = upstream.url("/orders/CUST-12345678/invoice");
    assert_eq!(status_of(proxy.addr, "GET", &url, "").await, 200);
    let log = proxy.dir.path().join("audit.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("\"cust\"") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no audit event for the logged request: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !text.contains("CUST-12345678"),
        "a raw customer id is in the audit log:\n{text}"
    );
}

/// Defect: `egress_dlp_findings_total{rule}` counts a finding under the rule at the same
/// INDEX in the rule set in force when the request ends (`Metrics::scanned` indexes the
/// counters `rules_changed` rebuilt on reload by `RuleFinding::index`, which is an index in
/// the snapshot the request started with). What a user sees: an upload in flight during a
/// reload that adds a rule file sorting first (`a-cust.yaml`) has its five emails counted
/// as `rule="cust"` and none as `rule="email"`: the dashboard's top rules and any alert on
/// a rule's findings are wrong after every reload that changes the rules' order.
#[tokio::test]
async fn findings_of_a_request_in_flight_across_a_reload_are_counted_under_their_own_rule() {
    let upstream = Upstream::start().await;
    let proxy = start(10, &[], "reload: { watch_interval: 0 }\n").await;
    let url = upstream.url("/inflight");
    let five = customer_export(5);
    let (first, rest) = five.split_at(five.len() / 2);
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {url} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
        upstream.addr,
        five.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(proxy.rules.join("a-cust.yaml"), CUST_RULE).unwrap();
    proxy.handle.reload().await.expect("a good reload");
    slow.write_all(rest.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut slow).await.0, 200, "5 emails: logged");
    let scrape = admin_get(proxy.admin, "/metrics").await;
    let email = metric(&scrape, "egress_dlp_findings_total{rule=\"email\"}");
    let cust = metric(&scrape, "egress_dlp_findings_total{rule=\"cust\"}");
    assert_eq!(
        (email, cust),
        (5.0, 0.0),
        "five emails counted as (email, cust) findings"
    );
}

/// A rule file that takes a while to load (many rules, each compiled and tested). Named
/// to sort after `email.yaml`, so that the email rule is read first.
fn bulk_rules(n: usize) -> String {
    let mut text = String::from("rules:\n");
    for i in 0..n {
        text.push_str(&format!(
            "  - {{id: k{i}, name: K{i}, category: k{}, pattern: 'K{i:04}-\\d{{8}}', \
             thresholds: {{log: 5}}, tests: {{match: ['K{i:04}-12345678'], no_match: ['K{i:04}-1234']}}}}\n",
            i % 50
        ));
    }
    text
}

/// Defect: a change saved while a reload is running is never applied. The reload loop
/// (`reload_loop`, `src/proxy/mod.rs`) takes the files' stamps to compare against AFTER
/// the reload ends ("Look again whatever the outcome"), so a file changed between the
/// reload's reading of it and that look is taken as already loaded. What a user sees: an
/// engineer saves a rule change, notices a mistake and saves the fix a moment later (or
/// a config-management run writes two files one after the other); the proxy goes on
/// serving the first version for as long as nothing else changes, while `rules check` on
/// disk says the fix is there. Here: `email.yaml` goes to block 100, then (during that
/// reload) back to block 10; a 12-email export must end up blocked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_change_saved_while_a_reload_runs_is_applied() {
    let upstream = Upstream::start().await;
    let bulk = bulk_rules(1500);
    // How long a load takes here (the reload does at least this much).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("zz-bulk.yaml"), &bulk).unwrap();
    let t0 = Instant::now();
    egress_dlp::rules::load_dir(dir.path()).expect("bulk rules load");
    let load_time = t0.elapsed();
    assert!(
        load_time > Duration::from_millis(400),
        "the bulk rules must take a while to load for this test to mean anything: {load_time:?}"
    );
    let proxy = start(
        10,
        &[("zz-bulk.yaml", bulk)],
        "reload: { watch_interval: 50ms }\n",
    )
    .await;
    let url = upstream.url("/race");
    let twelve = customer_export(12);
    assert_eq!(status_of(proxy.addr, "POST", &url, &twelve).await, 403);
    // First save: block at 100. The watcher starts a reload within ~50 ms; it reads the
    // files at once, then compiles and tests for about `load_time`.
    std::fs::write(proxy.rules.join("email.yaml"), email_rule(100)).unwrap();
    tokio::time::sleep(load_time / 2).await;
    // Second save, during that reload: back to block at 10 (another size, too).
    std::fs::write(
        proxy.rules.join("email.yaml"),
        format!("{}# back to 10\n", email_rule(10)),
    )
    .unwrap();
    // The first save is applied at the end of that reload (200: block at 100); the second
    // must follow (403 again). Until the first is applied the old rules answer 403 too.
    let deadline = Instant::now() + load_time * 6 + Duration::from_secs(5);
    let mut first_applied = false;
    let mut last = 0;
    while Instant::now() < deadline {
        last = status_of(proxy.addr, "POST", &url, &twelve).await;
        first_applied |= last == 200;
        if first_applied && last == 403 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        last, 403,
        "the second save (block at 10) was never applied: a 12-email export still gets \
         {last}, the first save's block at 100 stays in force"
    );
}

/// Defect (fixed in session 24): `rules check` accepted a keyword rule whose regex costs
/// thousands of steps per input byte (`too_slow_to_search` in `src/rules/mod.rs` only
/// looked at `full-scan` rules; a keyword rule's regex runs over every window around a
/// keyword hit). With a one-byte keyword and a wide bounded gap (`a[^\n]{0,4000}Z`,
/// keyword `a`) the regex crate's lazy DFA gives up and each byte costs ~200 µs: `scan` of
/// 40 KB of `a` took about 10 s (1 MB: 2.5 minutes, measured), and the proxy spent that on
/// one request. The same guard refuses `[\x00-\xff]{4096}` because it "would take seconds
/// per megabyte". What a user sees: `rules check` says ok, then the proxy stalls on any
/// body dense in the keyword. Either `rules check` refuses the rule (exit 2, naming it and
/// its pattern) or scanning stays fast.
#[test]
fn a_keyword_rule_too_slow_to_search_is_refused_or_scans_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("gap.yaml"),
        "rules:\n  - id: gap\n    name: Gap\n    category: secret\n    \
         pattern: 'a[^\\n]{0,4000}Z'\n    keywords: ['a']\n    thresholds: { log: 1 }\n    \
         tests:\n      match: ['a   Z']\n      no_match: ['b   Z']\n",
    )
    .unwrap();
    let check = std::process::Command::new(BIN)
        .args(["rules", "check"])
        .arg(&rules)
        .output()
        .unwrap();
    if check.status.code() == Some(2) {
        // Refused: it must say which rule and why.
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert!(
            stderr.contains("gap") && stderr.contains("pattern") && stderr.contains("too complex"),
            "{stderr}"
        );
        return;
    }
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let input = dir.path().join("a.txt");
    std::fs::write(&input, "a".repeat(40_000)).unwrap();
    let started = Instant::now();
    let mut child = std::process::Command::new(BIN)
        .args(["scan", "--rules"])
        .arg(&rules)
        .arg(&input)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let limit = Duration::from_secs(4);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.code().is_some());
            return;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`rules check` accepted the rule, and `scan` of 40 KB took over {limit:?} \
                 (killed)"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Defect: one rule refused as "too complex to search for at every byte" hides every
/// failing embedded test of the OTHER rules (`load_dir` in `src/rules/mod.rs` returns as
/// soon as `too_slow_to_search` finds one, before `test_failures`), although the README
/// promises that these checks run on the rules that loaded "so one run lists every
/// problem". What a user sees: `rules check` lists one problem; they fix it and run again,
/// and only then learn that a rule in another file fails its own test case.
#[test]
fn rules_check_lists_a_failing_case_together_with_a_rule_too_slow_to_search() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "rules:\n  - {id: v, name: V, category: c, pattern: '[\\x00-\\xff]{4096}', \
         thresholds: {log: 1}, tests: {match: [xxx]}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "rules:\n  - {id: ok-pattern, name: Ok, category: c, pattern: 'ORD-\\d{6}', \
         thresholds: {log: 1}, tests: {match: ['ORD-12345'], no_match: [x]}}\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["rules", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{printed}");
    assert!(
        printed.contains("rule v: pattern: too complex"),
        "{printed}"
    );
    assert!(
        printed.contains("rule ok-pattern: tests.match"),
        "the failing case of ok-pattern (b.yaml) is not listed:\n{printed}"
    );
}
