//! The audit log through the proxy: the canary test (distinctive identifiers never reach
//! the audit log, the block page, the log lines or the metrics, while the events carry the
//! right masked samples and fingerprints), `audit.required`, `audit.all_requests`, and
//! rotation by size with no event lost.

mod ops_support;
mod support;

use std::collections::BTreeSet;

use egress_dlp::logging::Capture;
use egress_dlp::scan::MaskStyle;
use hmac::{Hmac, KeyInit, Mac};
use ops_support::{OpsProxy, captured_logs, json_lines};
use sha2::Sha256;
use support::{Upstream, customer_export, request};

/// Every log line of this test binary, at debug level and above.
fn logs() -> &'static Capture {
    captured_logs("debug")
}

/// HMAC-SHA256 with the key the proxy created in its data directory, computed here
/// independently of the proxy's code.
fn expected_fingerprint(data: &std::path::Path, normalized: &str) -> String {
    let hex = std::fs::read_to_string(data.join("audit-hmac.key")).unwrap();
    let hex = hex.trim();
    assert_eq!(hex.len(), 64);
    let key: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(normalized.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A Luhn-valid 16-digit number starting with `prefix` (15 digits).
fn luhn(prefix: &str) -> String {
    assert_eq!(prefix.len(), 15);
    for check in 0..10u32 {
        let candidate = format!("{prefix}{check}");
        let sum: u32 = candidate
            .bytes()
            .rev()
            .enumerate()
            .map(|(i, b)| {
                let d = u32::from(b - b'0');
                if i % 2 == 1 {
                    let x = d * 2;
                    if x > 9 { x - 9 } else { x }
                } else {
                    d
                }
            })
            .sum();
        if sum % 10 == 0 {
            return candidate;
        }
    }
    unreachable!()
}

fn rule<'a>(event: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    event["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == id)
        .unwrap_or_else(|| panic!("no {id} in {event}"))
}

fn samples(rule: &serde_json::Value) -> Vec<(String, Option<String>)> {
    rule["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["masked"].as_str().unwrap().to_owned(),
                s["fingerprint"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test]
async fn canary_identifiers_never_leave_in_any_output() {
    let logs = logs();
    let upstream = Upstream::start().await;
    let mut proxy = OpsProxy::start("").await;
    let data = proxy.data.path().to_path_buf();

    // Distinctive values: none of these strings may appear anywhere but the upstream.
    let emails: Vec<String> = (0..12)
        .map(|i| format!("Zq{i}Canary.Vaultwright{i}@exfil-canary.example"))
        .collect();
    let cards: Vec<String> = ["492988127344551", "537711290066183", "601155667788990"]
        .iter()
        .map(|p| luhn(p))
        .collect();
    let customers = ["CUST-86753091", "CUST-86753092", "CUST-86753093"];
    let mut canaries: Vec<String> = Vec::new();
    canaries.extend(emails.iter().cloned());
    canaries.extend(emails.iter().map(|e| e.to_lowercase()));
    canaries.extend(
        emails
            .iter()
            .map(|e| e.split('@').next().unwrap().to_owned()),
    );
    canaries.extend(cards.iter().cloned());
    canaries.extend(cards.iter().map(|c| c[..12].to_owned()));
    canaries.extend(customers.iter().map(|c| c.to_string()));
    canaries.extend(customers.iter().map(|c| c[5..].to_string()));

    // Request A (log): one email in the path, one in the query, two in the body; three
    // cards and three customer ids.
    let target_a = format!(
        "/users/{}/export?ref={}&to={}",
        emails[0], customers[0], emails[1]
    );
    let body_a = format!(
        "owner={}\ncc={}\nsecond {}\ncards {} and {} and {}\nids {} {}\n",
        emails[2], emails[3], emails[2], cards[0], cards[1], cards[2], customers[1], customers[2]
    );
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url(&target_a),
        &[],
        body_a.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // Request B (block): the same first emails again, then eight more; the first card again.
    let body_b = format!("{}\ncard {}\n", emails[..12].join("\n"), cards[0]);
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/paste"),
        &[],
        body_b.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 403);
    let block_page = reply.text();
    let reply_json = request(
        proxy.addr,
        "POST",
        &upstream.url("/paste"),
        &[("Accept", "application/json")],
        body_b.as_bytes(),
    )
    .await;
    assert_eq!(reply_json.status, 403);
    let scrape = proxy.scrape().await;
    proxy.stop().await;

    // What the audit log says.
    let audit_text = std::fs::read_to_string(proxy.audit_path()).unwrap();
    let events = json_lines(&proxy.audit_path());
    assert_eq!(events.len(), 3, "{audit_text}");
    let (a, b) = (&events[0], &events[1]);
    assert_eq!(a["action"], "log");
    assert_eq!(b["action"], "block");
    assert_eq!(a["method"], "POST");
    assert_eq!(a["host"], "127.0.0.1");
    assert_eq!(a["port"], upstream.addr.port());
    assert_eq!(a["client"], "127.0.0.1");
    assert!(a["user"].is_null());
    // The path without its query, and the email in it masked.
    assert_eq!(a["path"], "/users/Z***@exfil-canary.example/export");
    assert!(a["time"].as_str().unwrap().ends_with('Z'));
    assert!(!a["request_id"].as_str().unwrap().is_empty());
    assert!(block_page.contains(b["request_id"].as_str().unwrap()));

    // Emails: the engine's first three distinct values, in stream order (path, query,
    // body), each masked and fingerprinted as the HMAC of its normalised (lowercase) value.
    let email_a = rule(a, "email");
    assert_eq!(email_a["count"], 5);
    assert_eq!(email_a["distinct"], 4);
    let want: Vec<(String, Option<String>)> = emails[..3]
        .iter()
        .map(|e| {
            (
                MaskStyle::Email.mask(e.as_bytes()),
                Some(expected_fingerprint(&data, &e.to_lowercase())),
            )
        })
        .collect();
    assert_eq!(samples(email_a), want);
    let card_a = rule(a, "card");
    assert_eq!(card_a["distinct"], 3);
    let got = samples(card_a);
    for (i, (masked, fingerprint)) in got.iter().enumerate() {
        assert_eq!(masked, &MaskStyle::Card.mask(cards[i].as_bytes()));
        assert!(masked.ends_with(&cards[i][12..]));
        assert_eq!(
            fingerprint.as_deref(),
            Some(expected_fingerprint(&data, &cards[i]).as_str())
        );
    }
    let cust_a = rule(a, "cust");
    assert_eq!(cust_a["distinct"], 3);
    assert_eq!(
        samples(cust_a)[0].1.as_deref(),
        Some(expected_fingerprint(&data, customers[0]).as_str())
    );

    // Request B carried the same first emails and card: the same fingerprints, so an
    // analyst can tie the two events together without seeing a value; different values
    // have different fingerprints.
    let email_b = rule(b, "email");
    assert_eq!(email_b["distinct"], 12);
    assert_eq!(samples(email_b), want);
    let fingerprints: BTreeSet<String> = want.iter().filter_map(|(_, f)| f.clone()).collect();
    assert_eq!(fingerprints.len(), 3);
    assert_eq!(samples(rule(b, "card"))[0].1, samples(card_a)[0].1);
    assert_eq!(
        samples(rule(&events[2], "email")),
        want,
        "the JSON-page request too"
    );
    assert_eq!(b["reasons"][0]["rule"], "email");
    assert_eq!(b["reasons"][0]["action"], "block");

    // Nowhere: not the audit log, the block pages, the log lines or the metrics.
    let log_text = logs.text();
    assert!(
        log_text.contains(b["request_id"].as_str().unwrap()),
        "the request's log line is captured"
    );
    for canary in &canaries {
        for (name, text) in [
            ("audit log", &audit_text),
            ("block page", &block_page),
            ("JSON block page", &reply_json.text()),
            ("log lines", &log_text),
            ("metrics", &scrape.text),
        ] {
            assert!(!text.contains(canary.as_str()), "{canary} in the {name}");
        }
    }
    // The upstream did get request A, whole: the proxy hides values from its own outputs,
    // not from the allowed destination.
    assert_eq!(upstream.requests()[0].body, body_a.as_bytes());
}

#[tokio::test]
async fn one_info_line_per_request_with_id_verdict_and_time() {
    let logs = logs();
    let upstream = Upstream::start().await;
    let proxy = OpsProxy::start("").await;
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/x"),
        &[],
        customer_export(12).as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 403);
    let text = logs.text();
    // The request target never appears in a log line.
    assert!(!text.contains(&upstream.url("/x")), "{text}");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("verdict=\"block\"") && l.contains("peer=127.0.0.1"))
        .collect();
    assert!(!lines.is_empty(), "{text}");
    let line = lines.last().unwrap();
    for field in ["request_id=", "status=403", "ms=", "verdict=\"block\""] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}

#[tokio::test]
async fn required_audit_refuses_what_it_cannot_record() {
    let _ = logs();
    let upstream = Upstream::start().await;
    // The log can never be opened: /dev/null is not a directory.
    let proxy = OpsProxy::start("audit: { path: /dev/null/audit.jsonl, required: true }\n").await;
    // A request that needs an event (log) is refused, and nothing leaves.
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/crm"),
        &[],
        customer_export(4).as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.text().contains("cannot record"));
    // A block stays a block.
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/exfil"),
        &[],
        customer_export(12).as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 403);
    // A clean request needs no event (all_requests is off) and passes.
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/notes"),
        &[],
        b"nothing here",
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1, "only the clean request reached the upstream");
    assert_eq!(seen[0].target, "/notes");
    let s = proxy.scrape().await;
    assert_eq!(s.get("egress_dlp_requests_total{action=\"refused\"}"), 1.0);
    assert_eq!(s.get("egress_dlp_requests_total{action=\"block\"}"), 1.0);
    assert_eq!(
        s.get("egress_dlp_audit_events_total{result=\"refused\"}"),
        2.0
    );
    assert_eq!(s.get("egress_dlp_audit_sink_up"), 0.0);
    assert!(logs().text().contains("audit log cannot be written"));
}

#[tokio::test]
async fn required_with_all_requests_refuses_even_clean_requests_and_tunnels() {
    let upstream = Upstream::start().await;
    let proxy = OpsProxy::start(&format!(
        "audit: {{ path: /dev/null/audit.jsonl, required: true, all_requests: true }}\n\
         access: {{ connect_ports: [{}] }}\ntls: {{ intercept: false }}\n",
        upstream.addr.port()
    ))
    .await;
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/notes"),
        &[],
        b"nothing here",
    )
    .await;
    assert_eq!(reply.status, 503);
    let connect = format!(
        "CONNECT 127.0.0.1:{0} HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nConnection: close\r\n\r\n",
        upstream.addr.port()
    );
    let reply = support::parse_reply(&support::exchange(proxy.addr, connect.as_bytes()).await);
    assert_eq!(reply.status, 503);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn without_required_a_failing_sink_lets_traffic_pass_and_counts_the_loss() {
    // Captured from the start: alone in its process (nextest), the shutdown's line came
    // before any capture was installed, and the test passed only after another had.
    let _ = logs();
    let upstream = Upstream::start().await;
    let mut proxy = OpsProxy::start("audit: { path: /dev/null/audit.jsonl }\n").await;
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/crm"),
        &[],
        customer_export(4).as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200);
    let s = proxy.scrape().await;
    assert_eq!(
        s.get("egress_dlp_audit_queue_events"),
        1.0,
        "the event waits for the sink"
    );
    proxy.stop().await;
    // It could never be written: reported lost at shutdown (the metric outlives nothing
    // here, so the log line is the evidence).
    assert!(
        logs()
            .text()
            .contains("audit log unwritable at shutdown: events lost")
    );
}

#[tokio::test]
async fn all_requests_records_clean_requests_and_tunnels() {
    let upstream = Upstream::start().await;
    let mut proxy = OpsProxy::start(&format!(
        "audit: {{ all_requests: true }}\naccess: {{ connect_ports: [{}] }}\ntls: {{ intercept: false }}\n",
        upstream.addr.port()
    ))
    .await;
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/notes"),
        &[],
        b"nothing here",
    )
    .await;
    assert_eq!(reply.status, 200);
    let connect = format!(
        "CONNECT 127.0.0.1:{0} HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\n\r\n",
        upstream.addr.port()
    );
    let mut tunnel = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tunnel, connect.as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut tunnel, &mut head)
        .await
        .unwrap();
    drop(tunnel);
    proxy.stop().await;
    let events = json_lines(&proxy.audit_path());
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["action"], "allow");
    assert_eq!(events[0]["path"], "/notes");
    assert_eq!(
        events[0]["bytes"],
        // What was scanned: the host, the target and the body, a line break between.
        "127.0.0.1".len() + 1 + "/notes".len() + 1 + "nothing here".len()
    );
    assert_eq!(events[0]["rules"].as_array().unwrap().len(), 0);
    assert_eq!(events[1]["method"], "CONNECT");
    assert_eq!(events[1]["not_scanned"], "tunnel");
    assert_eq!(events[1]["port"], upstream.addr.port());
}

#[tokio::test]
async fn size_rotation_under_concurrent_traffic_loses_no_event() {
    let upstream = Upstream::start().await;
    let mut proxy =
        OpsProxy::start("audit: { all_requests: true, rotate_bytes: 8KiB, keep: 200 }\n").await;
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (addr, url) = (proxy.addr, upstream.url(&format!("/w{worker}")));
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let reply = request(addr, "POST", &url, &[], b"hello").await;
                assert_eq!(reply.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // And one SIGHUP-style reopen in the middle of it all.
    proxy.reopen_audit();
    let reply = request(proxy.addr, "POST", &upstream.url("/last"), &[], b"hello").await;
    assert_eq!(reply.status, 200);
    proxy.stop().await;
    let path = proxy.audit_path();
    let mut ids = BTreeSet::new();
    let mut total = 0;
    let mut files = 0;
    for i in 0..=200 {
        let f = if i == 0 {
            path.clone()
        } else {
            path.with_file_name(format!("audit.jsonl.{i}"))
        };
        if !f.exists() {
            continue;
        }
        files += 1;
        assert!(std::fs::metadata(&f).unwrap().len() <= 8192);
        for e in json_lines(&f) {
            total += 1;
            ids.insert(e["request_id"].as_str().unwrap().to_owned());
        }
    }
    assert!(files > 3, "rotated into {files} files");
    assert_eq!(total, 201, "every request once");
    assert_eq!(ids.len(), 201, "no duplicates");
}

#[tokio::test]
async fn values_past_the_first_mebibyte_keep_their_masked_sample_without_a_fingerprint() {
    let upstream = Upstream::start().await;
    let mut proxy = OpsProxy::start("").await;
    let mut body = customer_export(1).into_bytes();
    body.extend(std::iter::repeat_n(b'.', 1_100_000));
    body.extend_from_slice(b"\n");
    body.extend_from_slice(customer_export(4).as_bytes());
    let reply = request(proxy.addr, "POST", &upstream.url("/big"), &[], &body).await;
    assert_eq!(reply.status, 200);
    proxy.stop().await;
    let events = json_lines(&proxy.audit_path());
    assert_eq!(events.len(), 1);
    let got = samples(rule(&events[0], "email"));
    assert_eq!(
        got.len(),
        3,
        "customer0 (early and late), customer1, customer2: {got:?}"
    );
    assert_eq!(got[0].0, "c***@acme-corp.io");
    let data = proxy.data.path();
    assert_eq!(
        got[0].1.as_deref(),
        Some(expected_fingerprint(data, "customer0@acme-corp.io").as_str()),
        "the first value is in the first MiB"
    );
    for later in &got[1..] {
        assert_eq!(later.0, "c***@acme-corp.io");
        assert_eq!(later.1, None, "past it: no fingerprint rather than a guess");
    }
}

/// Under `audit.required`, an audit log that could not be opened comes back by itself once
/// the problem is fixed (found in review: with nothing queued it was never retried, and
/// every request got 503 until a restart).
#[tokio::test]
async fn a_required_audit_log_that_could_not_open_comes_back_by_itself() {
    let upstream = Upstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    // A file where the log's directory should be: the log cannot be opened.
    let blocker = tmp.path().join("logs");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let mut proxy = OpsProxy::start(&format!(
        "audit: {{ path: {}/audit.jsonl, required: true }}\n",
        blocker.display()
    ))
    .await;
    let export = customer_export(4);
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/crm"),
        &[],
        export.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 503, "down at first: refused");
    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir(&blocker).unwrap();
    let mut up = 0.0;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        up = proxy.scrape().await.get("egress_dlp_audit_sink_up");
        if up == 1.0 {
            break;
        }
    }
    assert_eq!(up, 1.0, "the log was tried again and came back");
    let reply = request(
        proxy.addr,
        "POST",
        &upstream.url("/crm"),
        &[],
        export.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    proxy.stop().await;
    assert_eq!(json_lines(&blocker.join("audit.jsonl")).len(), 1);
}

/// A request refused by `policy.destinations.blocked` is a blocked request: it gets its
/// audit event, naming the pattern, without the path (nothing was scanned to mask it)
/// (found in review: it got none).
#[tokio::test]
async fn a_request_to_a_blocked_destination_gets_its_audit_event() {
    let upstream = Upstream::start().await;
    let mut proxy = OpsProxy::start(
        "policy: { destinations: { blocked: ['127.0.0.1'] } }\naudit: { path: '{data}/audit.jsonl' }\n",
    )
    .await;
    let url = upstream.url("/users/alice.smith@acme-corp.io/export");
    let reply = request(proxy.addr, "POST", &url, &[], b"a note").await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    proxy.stop().await;
    let events = json_lines(&proxy.audit_path());
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["action"], "block");
    assert_eq!(e["destination_blocked"], "127.0.0.1");
    assert_eq!(e["host"], "127.0.0.1");
    assert_eq!(e["method"], "POST");
    assert!(!e.to_string().contains("alice.smith"), "{e}");
    assert!(upstream.requests().is_empty());
}
