//! A JSON document inside a form field or a JSON string, read both ways once a letter or
//! digit in it is written as an escape (`src/decode/unescape.rs`): as written (a server
//! that does not parse the inner document) and decoded (one that does).

mod support;

use support::{
    Upstream, assert_blocked, fixture_engine as engine, inspected_distinct as distinct, send_form,
    shipped_proxy,
};

/// `payload=<json>` of `n` addresses, each with the first letter of its domain escaped
/// (`customer0@\u0061cme-corp.io`), after `lead` bytes of plain JSON text.
fn payload(n: usize, lead: usize) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| format!("\"customer{i}@\\u0061cme-corp.io\""))
        .collect();
    let json = format!(
        "{{\"note\":\"{}\",\"rows\":[{}]}}",
        "x".repeat(lead),
        rows.join(",")
    );
    format!("payload={}", support::bodies::form_encode(&json))
}

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

#[test]
fn every_cut_of_the_body_finds_every_address() {
    let engine = engine();
    let body = payload(12, 40);
    let bytes = body.as_bytes();
    assert_eq!(distinct(&engine, FORM, &[bytes], "email"), 12, "whole");
    // Cut in two anywhere, the first escape's address among the places (its first
    // half went to one view before the second view began).
    for at in 0..=bytes.len() {
        let got = distinct(&engine, FORM, &[&bytes[..at], &bytes[at..]], "email");
        assert_eq!(got, 12, "cut at {at}");
    }
    // And in pieces of every small size.
    for size in 1..=17 {
        let pieces: Vec<&[u8]> = bytes.chunks(size).collect();
        assert_eq!(
            distinct(&engine, FORM, &pieces, "email"),
            12,
            "pieces of {size}"
        );
    }
}

#[test]
fn an_address_before_an_escaped_digit_is_still_read_as_written() {
    // A server that does not parse the inner document reads `c0@acme-corp.io\u0030`
    // as the address `c0@acme-corp.io`; one that does reads `…io0`, no address. Both
    // views are read once the first escaped letter starts the second: 12 addresses,
    // each counted once, whichever view found it.
    let engine = engine();
    let mut rows = vec!["\"first@\\u0061cme-corp.io\"".to_owned()];
    rows.extend((0..11).map(|i| format!("\"c{i}@acme-corp.io\\u0030\"")));
    let json = format!("{{\"rows\":[{}]}}", rows.join(","));
    let body = format!("payload={}", support::bodies::form_encode(&json));
    assert_eq!(distinct(&engine, FORM, &[body.as_bytes()], "email"), 12);
}

#[test]
fn the_second_view_starts_with_the_text_before_the_first_escape() {
    // The first escape comes after 100 KiB of plain text, the address it is in begins
    // before it: a second view starting at the escape would hold only `acme-corp.io`.
    let engine = engine();
    let body = payload(12, 100 << 10);
    let bytes = body.as_bytes();
    let first = body
        .find("%5Cu0061")
        .expect("the first escape, form-encoded");
    let cut = first - 3;
    assert_eq!(
        distinct(&engine, FORM, &[&bytes[..cut], &bytes[cut..]], "email"),
        12
    );
}

#[test]
fn a_json_string_holding_a_document_is_read_both_ways_too() {
    let engine = engine();
    let rows: Vec<String> = (0..12)
        .map(|i| format!("\\\"customer{i}@ac\\\\u006de-corp.io\\\""))
        .collect();
    let body = format!("{{\"Message\":\"{{\\\"rows\\\":[{}]}}\"}}", rows.join(","));
    let bytes = body.as_bytes();
    for size in [1, 5, 64, bytes.len()] {
        let pieces: Vec<&[u8]> = bytes.chunks(size).collect();
        assert_eq!(
            distinct(&engine, Some("application/json"), &pieces, "email"),
            12,
            "pieces of {size}"
        );
    }
}

#[tokio::test]
async fn a_slack_style_payload_with_escaped_letters_is_blocked_and_a_benign_one_passes() {
    let upstream = Upstream::start().await;
    let (proxy, _d) = shipped_proxy().await;
    let body = payload(12, 10);
    let (status, seen) =
        send_form(&upstream, &proxy, "/api/chat.postMessage", body.as_bytes()).await;
    assert_blocked(
        status,
        &seen,
        "payload= JSON with escaped letters in 12 addresses",
    );

    // One address among escaped letters: a message, not a list.
    let benign = format!(
        "payload={}",
        support::bodies::form_encode(
            "{\"text\":\"caf\\u00e9 \\u0061t noon? write to jane@\\u0061cme-corp.io\"}"
        )
    );
    let (status, seen) = send_form(
        &upstream,
        &proxy,
        "/api/chat.postMessage",
        benign.as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "a benign payload with escaped letters");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, benign.as_bytes(), "forwarded byte for byte");
}

#[test]
fn a_list_glued_by_escaped_digits_is_counted_as_written() {
    // `x0@acme-corp.io\u0030x1@acme-corp.io\u0030…`: decoded, one run of letters and
    // digits with at most one address in it; as written, every address (the reason the
    // as-written view reads what follows an escape, see `review_s16`).
    let engine = engine();
    let rows: String = (0..12)
        .map(|i| format!("x{i}@acme-corp.io\\u0030"))
        .collect();
    let json = format!("{{\"a\":\"\\u0061\",\"rows\":\"{rows}\"}}");
    let body = format!("payload={}", support::bodies::form_encode(&json));
    let got = distinct(&engine, FORM, &[body.as_bytes()], "email");
    assert!(got >= 10, "12 addresses glued by escaped digits: {got}");
}
