//! Bodies built to make the scanner slow (session 22). A body repeating one rule's literal
//! used to cost a core seconds per megabyte: `eyJeyJ…` walked the JWT rule's 4 KiB
//! longest match from every hit, `@@@…` walked the email rule's back from every `@`. Those
//! walks now reuse what the previous hit learnt, and what no reuse bounds (`eyJ-` repeated:
//! a DFA walk of up to 800 bytes every 4 bytes) stops the rule at
//! `scan::WORK_PER_BYTE` and records the body as not fully scanned (`scan_work_limit`):
//! blocked by default, the other rules still counting. Speed is measured by
//! `examples/scan_loop repeat:UNIT|sprinkle:UNIT` (BENCHMARKS.md), not here.

mod ops_support;
mod support;

use std::path::PathBuf;

use egress_dlp::decode::{Inspection, Limits};
use egress_dlp::rules::load_dir;
use egress_dlp::scan::{Engine, Findings};
use support::{Upstream, request, shipped_proxy_with};

fn shipped() -> Engine {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules");
    Engine::new(&load_dir(&dir).expect("the shipped rules load"))
}

fn emails(n: usize) -> String {
    (0..n).map(|i| format!(" cust{i}@acme-corp.io ")).collect()
}

fn count(f: &Findings, rule: &str) -> (u64, u64) {
    f.rules
        .iter()
        .find(|r| r.rule == rule)
        .map_or((0, 0), |r| (r.count, r.distinct))
}

/// Feeds `data` in pieces of the given sizes (cycled).
fn streamed(engine: &Engine, data: &[u8], sizes: &[usize]) -> Findings {
    let mut stream = engine.stream();
    let (mut at, mut i) = (0, 0);
    while at < data.len() {
        let n = sizes[i % sizes.len()].min(data.len() - at);
        stream.feed(&data[at..at + n]);
        at += n;
        i += 1;
    }
    stream.finish()
}

/// Floods whose walks are now reused find exactly what the same values find without the
/// flood, whole or fed in pieces, and stop no rule: the reuse changes no finding.
#[test]
fn a_flood_of_one_rules_literal_hides_nothing_and_stops_no_rule() {
    let engine = shipped();
    let list = emails(30);
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    let plain = engine.scan_bytes(format!("{list} {jwt} CUST-00012345 ").as_bytes());
    assert_eq!(count(&plain, "email-address"), (30, 30));
    assert_eq!(count(&plain, "jwt").0, 1);
    assert_eq!(count(&plain, "customer-id").0, 1);
    for unit in ["eyJ", "@", "a@", "@a.", "ghp_", "xoxb-1-", "CUST-", "+1 "] {
        let flood = unit.repeat((300 << 10) / unit.len());
        let body = format!("{flood}{list}{flood} {jwt} {flood} CUST-00012345 {flood}");
        let whole = engine.scan_bytes(body.as_bytes());
        assert!(whole.stopped.is_empty(), "{unit}: {:?}", whole.stopped);
        // The flood's own matches aside (`@a.` floods hold no email, `+1 ` no phone: the
        // counts below are the hidden values'), the hidden values are all found.
        assert_eq!(count(&whole, "email-address"), (30, 30), "{unit}");
        assert_eq!(count(&whole, "jwt").0, 1, "{unit}");
        assert_eq!(count(&whole, "customer-id").0, 1, "{unit}");
        let pieces = streamed(&engine, body.as_bytes(), &[1, 7000, 3, 65536, 4095]);
        assert_eq!(pieces, whole, "{unit}: the split changed the findings");
    }
}

/// `eyJ-` repeated: every hit starts a walk of up to 800 bytes, about 200 bytes read per
/// byte. The JWT rule stops at the work limit; the emails hidden after the flood are
/// still counted (the other rules go on), and the body is not fully scanned.
#[test]
fn a_flood_no_reuse_bounds_stops_its_rule_and_the_body_is_not_fully_scanned() {
    let engine = shipped();
    let flood = "eyJ-".repeat(256 << 10);
    let body = format!("{flood}{}", emails(12));
    let whole = engine.scan_bytes(body.as_bytes());
    assert_eq!(whole.stopped, ["jwt"]);
    assert_eq!(count(&whole, "email-address"), (12, 12));

    let mut inspection = Inspection::new(&engine, &Limits::default(), Some(b"text/plain"), None);
    for chunk in body.as_bytes().chunks(16 << 10) {
        inspection.feed(chunk);
    }
    let seen_early = inspection.not_scanned().cloned();
    let outcome = inspection.finish();
    let problem = outcome.not_scanned.expect("not fully scanned");
    assert_eq!(problem.reason.as_str(), "scan_work_limit");
    assert!(problem.detail.contains("rule jwt"), "{}", problem.detail);
    assert_eq!(
        seen_early.map(|p| p.reason.as_str()),
        Some("scan_work_limit"),
        "known while the body streams, before its end"
    );
    assert_eq!(count(&outcome.findings, "email-address"), (12, 12));

    // One large piece fed at once is stopped within it, not at the next feed (found in
    // review: the limit was checked once per advance).
    let mut stream = engine.stream();
    stream.feed(flood.as_bytes());
    assert_eq!(stream.stopped(), Some("jwt"), "right after the one feed");
    let mut inspection = Inspection::new(&engine, &Limits::default(), None, None);
    inspection.feed(flood.as_bytes());
    assert_eq!(
        inspection.not_scanned().map(|p| p.reason.as_str()),
        Some("scan_work_limit")
    );

    // A body of ordinary size with a short flood is never stopped (the floor).
    let small = format!("{}{}", "eyJ-".repeat(2500), emails(3));
    assert!(engine.scan_bytes(small.as_bytes()).stopped.is_empty());
}

/// A body of digit groups and nothing else (`4111 4111 …`) walked the digit-run gates'
/// stretch of twice the longest match for every group and every rule, ~10 MB/s (session
/// 24: one walk now serves the groups of about seven longest matches). Cards planted
/// between two such floods are all counted, whole and fed in pieces, no rule stops, and
/// the floods add only what they find alone.
#[test]
fn a_flood_of_digit_groups_hides_no_card_and_stops_no_rule() {
    let engine = shipped();
    let cards = [
        "4012 8888 8888 1881",
        "5555-5555-5555-4444",
        "378282246310005",
        "6011 1111 1111 1117",
        "3530 1113 3330 0000",
    ];
    let list: String = cards.iter().map(|c| format!("\n{c}\n")).collect();
    let plain = engine.scan_bytes(list.as_bytes());
    assert_eq!(count(&plain, "payment-card"), (5, 5));
    for unit in ["4111 ", "4111-", "12 ", "7 ", "1234 5678 "] {
        let flood = unit.repeat((200 << 10) / unit.len());
        let alone = engine.scan_bytes(flood.as_bytes());
        let (n, distinct) = count(&alone, "payment-card");
        let body = format!("{flood}{list}{flood}");
        let whole = engine.scan_bytes(body.as_bytes());
        assert!(whole.stopped.is_empty(), "{unit}: {:?}", whole.stopped);
        let (wn, wd) = count(&whole, "payment-card");
        assert_eq!((wn, wd), (2 * n + 5, distinct + 5), "{unit}");
        let pieces = streamed(&engine, body.as_bytes(), &[1, 5000, 3, 65536, 4095, 17]);
        assert_eq!(pieces, whole, "{unit}: the split changed the findings");
    }
}

/// Through the proxy: the flood gets the "could not be inspected" answer and the upstream
/// nothing; under `on_inspection_error: allow` it arrives byte for byte.
#[tokio::test]
async fn through_the_proxy_a_work_flood_is_refused_by_default_and_passes_under_allow() {
    let upstream = Upstream::start().await;
    let body = "eyJ-".repeat(256 << 10).into_bytes();
    let headers = [
        ("Content-Type", "text/plain"),
        ("Accept", "application/json"),
    ];
    let (proxy, _data) = shipped_proxy_with("").await;
    let reply = request(proxy.addr, "POST", &upstream.url("/u"), &headers, &body).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    let page: serde_json::Value = serde_json::from_str(&reply.text()).unwrap();
    assert_eq!(page["error"], "not_inspected");
    assert_eq!(page["reason"], "scan_work_limit");
    assert!(upstream.requests().is_empty(), "the upstream got something");

    let (proxy, _data) = shipped_proxy_with("policy:\n  on_inspection_error: allow\n").await;
    let reply = request(proxy.addr, "POST", &upstream.url("/u"), &headers, &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, body);
}

/// A request refused as not fully inspected is a blocked request: it gets its audit event
/// (action `block`, `not_scanned` naming the reason, the other rules' findings), as the
/// contract says of every blocked request (found in session 24: it got a log line only, so
/// a work flood or a decompression bomb left no trace in the audit log).
#[tokio::test]
async fn a_request_refused_as_not_inspected_gets_its_audit_event() {
    let upstream = Upstream::start().await;
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut proxy = ops_support::OpsProxy::start_with_rules(&rules, "").await;
    let body = format!("{}{}", "eyJ-".repeat(256 << 10), emails(4)).into_bytes();
    let headers = [
        ("Content-Type", "text/plain"),
        ("Accept", "application/json"),
    ];
    let reply = request(proxy.addr, "POST", &upstream.url("/u"), &headers, &body).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(upstream.requests().is_empty(), "the upstream got something");
    proxy.stop().await;
    let events = ops_support::json_lines(&proxy.audit_path());
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["action"], "block", "{event}");
    assert_eq!(event["not_scanned"], "scan_work_limit", "{event}");
    assert_eq!(event["method"], "POST", "{event}");
    let rules = event["rules"].as_array().expect("the findings");
    let email = rules
        .iter()
        .find(|r| r["rule"] == "email-address")
        .expect("the emails counted");
    assert_eq!(email["distinct"], 4, "{event}");
    assert!(
        !event.to_string().contains("cust0@acme-corp.io"),
        "a raw value: {event}"
    );
}
