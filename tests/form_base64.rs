//! Raw base64 in a form body or a query, its `+` symbols sent as they are (`curl -d`,
//! scripts that build the body by hand): a `+` in a form reads as a space, which cut every
//! base64 run into pieces too short or misaligned to decode, so a customer list sent this
//! way reached the upstream (a known gap until session 15; `decode::form_base64`).
//! Each blocked shape asserts 403 and that the upstream received nothing; the benign
//! shape, that the upstream received the body byte for byte.

mod support;

use support::post_raw_form;
use support::{Upstream, assert_blocked, send, send_form, shipped_proxy};

fn customers(n: usize) -> String {
    support::bodies::customers_with_plus_in_base64(n)
}

/// Base64 of `data`, which must have a `+` in it.
fn b64_with_plus(data: &[u8]) -> String {
    let b64 = support::bodies::base64(data);
    assert!(b64.contains('+'), "the test needs `+` in the base64");
    b64
}

#[tokio::test]
async fn curl_d_with_raw_base64_of_a_csv_is_blocked() {
    if support::curl_missing() {
        return;
    }
    let upstream = Upstream::start().await;
    let (proxy, _d) = shipped_proxy().await;
    let b64 = b64_with_plus(customers(12).as_bytes());
    // `curl -d "export=$(base64 -w0 customers.csv)"`, exactly.
    let out = support::curl_via(proxy.addr)
        .args(["-o", "/dev/null", "-w", "%{http_code}", "-d"])
        .arg(format!("user=jdoe&export={b64}&submit=Send"))
        .arg(upstream.url("/upload.php"))
        .output()
        .await
        .expect("run curl");
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_blocked(
        code.trim().parse().unwrap_or(0),
        &upstream.requests(),
        "curl -d with the CSV's base64",
    );
}

#[tokio::test]
async fn a_body_that_is_only_base64_is_blocked() {
    // `curl -d @customers.b64` (the file from `base64 customers.csv`: curl drops its line
    // breaks), and `--data-binary @customers.b64` (it keeps them): no key, padding last.
    let upstream = Upstream::start().await;
    let (proxy, _d) = shipped_proxy().await;
    let b64 = b64_with_plus(customers(15).as_bytes());
    let wrapped: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    for (what, body) in [
        ("no line breaks", b64.clone()),
        ("wrapped at 76", wrapped.join("\n") + "\n"),
    ] {
        let (s, seen) = send_form(&upstream, &proxy, "/api/ingest", body.as_bytes()).await;
        assert_blocked(s, &seen, what);
    }
}

#[tokio::test]
async fn gzip_then_base64_in_a_field_is_blocked() {
    let upstream = Upstream::start().await;
    let (proxy, _d) = shipped_proxy().await;
    let gz = support::bodies::gzip(customers(20).as_bytes());
    let b64 = support::bodies::base64(&gz);
    assert!(b64.contains('+'));
    let body = format!("name=export.csv.gz&data={b64}");
    let (s, seen) = send_form(&upstream, &proxy, "/upload", body.as_bytes()).await;
    assert_blocked(s, &seen, "gzip, base64, raw in a form field");
}

#[tokio::test]
async fn raw_base64_in_the_query_is_blocked() {
    let upstream = Upstream::start().await;
    let (proxy, _d) = shipped_proxy().await;
    let b64 = b64_with_plus(customers(12).as_bytes());
    let path = format!("/collect?v=1&payload={b64}");
    let (s, seen) = send(&upstream, &proxy, "GET", &path, &[], b"").await;
    assert_blocked(s, &seen, "raw base64 in the query");
}

#[tokio::test]
async fn benign_raw_base64_in_a_form_arrives_byte_for_byte() {
    // An avatar image and a signed token as raw base64 fields, two customer addresses in
    // them (under the log threshold): forwarded as sent.
    let upstream = Upstream::start().await;
    let (proxy, _d) = shipped_proxy().await;
    let image: Vec<u8> = (0..6000u32).map(|i| (i * 97 % 251) as u8 ^ 0xF8).collect();
    let note = b"from customer1@acme-corp.io and customer2@acme-corp.io ~ thanks ~>>";
    let body = format!(
        "avatar={}&note={}&comment=Hello+there%2C+see+attached.",
        b64_with_plus(&image),
        b64_with_plus(note)
    );
    let (s, seen) = send_form(&upstream, &proxy, "/profile", body.as_bytes()).await;
    assert_eq!(s, 200);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, body.as_bytes());
}

#[tokio::test]
async fn the_count_is_the_same_however_the_body_is_cut() {
    // Through the decode pipeline: 12 distinct addresses, whatever the chunks (a field's
    // decoded bytes go in after the field's end, never between two chunks' text).
    let engine = support::fixture_engine();
    let b64 = b64_with_plus(customers(12).as_bytes());
    let body = format!("a=1&export={b64}&b=2");
    let body = body.as_bytes();
    let ct = Some("application/x-www-form-urlencoded");
    let whole = support::inspected_distinct(&engine, ct, &[body], "email");
    assert_eq!(whole, 12);
    for step in [1, 3, 64, 100, 1000] {
        let pieces: Vec<&[u8]> = body.chunks(step).collect();
        assert_eq!(
            support::inspected_distinct(&engine, ct, &pieces, "email"),
            12,
            "step {step}"
        );
    }
}

/// A body over `hold_bytes` is streamed: the field's decoded list is counted before the
/// upstream sees the body's end (the chunks wait while the field's decoded bytes do).
#[tokio::test]
async fn a_streamed_body_with_the_list_in_a_raw_field_never_completes_upstream() {
    let upstream = Upstream::start().await;
    let proxy = support::Proxy::start("limits: { hold_bytes: 64KiB }\n").await;
    let b64 = b64_with_plus(customers(2500).as_bytes());
    assert!(b64.len() > 128 << 10 && b64.len() < 512 << 10);
    let body = format!("user=jdoe&export={b64}&submit=Send");
    let (s, seen) = send_form(&upstream, &proxy, "/upload", body.as_bytes()).await;
    assert_eq!(s, 403);
    assert!(
        seen.iter().all(|r| !r.complete),
        "the upstream got the whole body"
    );
}

/// Binary (a 251-byte cycle) whose base64 has `+` in it, and long runs without one.
fn binary(n: u32) -> Vec<u8> {
    (0..n).map(|i| (i * 97 % 251) as u8 ^ 0xF8).collect()
}

/// A streamed raw base64 field that decodes to more than 512 KiB: each piece goes in after
/// the first byte that separates values past where it was handed on. Here the text's own
/// reader decodes the long `+`-free runs of this binary, whose bytes hold such a byte soon,
/// so 900 KiB of binary goes through whole (without one, such a field is not fully
/// inspected: the README's known limit, `review_s17`'s ignored test).
#[tokio::test]
async fn a_streamed_raw_field_over_512_kib_decoded_goes_through_whole() {
    let upstream = Upstream::start().await;
    let proxy = support::Proxy::start("limits: { hold_bytes: 64KiB }\n").await;
    let body = format!("name=backup.bin&data={}", b64_with_plus(&binary(900 << 10)));
    let reply = post_raw_form(&upstream, &proxy, body.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].complete);
    assert_eq!(seen[0].body, body.as_bytes());
}

/// The same shape with the list only in the second 512 KiB piece (after 600 KiB of
/// binary): blocked, and the upstream never sees the body's end.
#[tokio::test]
async fn a_streamed_raw_field_with_the_list_past_its_first_piece_is_blocked() {
    let upstream = Upstream::start().await;
    let proxy = support::Proxy::start("limits: { hold_bytes: 64KiB }\n").await;
    let mut data = binary(600 << 10);
    data.extend_from_slice(b"\n");
    data.extend_from_slice(customers(40).as_bytes());
    let body = format!("name=backup.bin&data={}&submit=Send", b64_with_plus(&data));
    let reply = post_raw_form(&upstream, &proxy, body.as_bytes()).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(reply.text().contains("email"), "{}", reply.text());
    upstream.aborted_if_any().await;
}
