//! Review of the two views (`decode::views`), the second unescape's escaped letters and
//! the batched log writer. Each test failed on the code as reviewed; three are known gaps
//! (ignored, in the README).

mod support;

use std::io::Write;
use std::time::Duration;

use egress_dlp::logging::Batched;
use support::{Proxy, Upstream, fixture_engine as engine, inspected_distinct as distinct};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// `FLUSH_HARD` in `src/decode/views.rs`: past this many raw bytes the text goes in
/// wherever it is.
const HARD: usize = 512 << 10;

/// 12 addresses only the text view sees (`&#64;`), each placed so that the forced place
/// at every 512 KiB of raw bytes falls right after `&#64;acme`: spaces between them (no
/// line end, no separator in the text, so no other place). The place is a pure function
/// of the content, so the sender can put it inside every address: the text view is cut
/// 12 times, `customer0@acme` | `-corp.io`, and nothing is counted. A browser (or any
/// HTML parser) reads 12 addresses. Fed whole, in one chunk.
#[test]
fn html_text_view_is_not_cut_inside_addresses_by_the_hard_place() {
    let engine = engine();
    let mut body = Vec::new();
    for k in 1..=12 {
        let head = format!("customer{k}&#64;acme");
        let target = k * HARD - head.len();
        body.resize(target, b' ');
        body.extend_from_slice(head.as_bytes());
        body.extend_from_slice(b"-corp.io ");
    }
    let got = distinct(&engine, Some("text/html"), &[&body], "email");
    assert!(
        got >= 10,
        "12 addresses in an HTML body, the 512 KiB place inside each: {got} distinct emails"
    );
}

/// UTF-16 little endian without a mark.
fn le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// The same with UTF-16: a genuine UTF-16LE list (`charset=utf-16le`, which only the
/// transcoded view reads) whose 512 KiB places fall inside every address.
#[test]
fn utf16_text_view_is_not_cut_inside_addresses_by_the_hard_place() {
    let engine = engine();
    let mut body = Vec::new();
    for k in 1..=12 {
        let head: Vec<u8> = le(&format!("customer{k}@acme"));
        let target = k * HARD - head.len();
        while body.len() < target {
            body.extend_from_slice(b" \0");
        }
        body.extend_from_slice(&head);
        body.extend_from_slice(&le("-corp.io "));
    }
    let got = distinct(
        &engine,
        Some("text/plain; charset=utf-16le"),
        &[&body],
        "email",
    );
    assert!(
        got >= 10,
        "12 addresses in UTF-16LE text, the 512 KiB place inside each: {got} distinct emails"
    );
}

/// `hold_bytes: 64KiB` (so the pump's cap is 64 KiB) and an HTML body whose list only its
/// text view sees (`&#64;`), followed by spaces: the text has no line end and no separator,
/// so it is held until 512 KiB of raw bytes (`FLUSH_HARD`), eight times what the pump
/// holds back. The list's chunk goes upstream while the text holding it is still waiting
/// (the request is not blocked; the upstream got the addresses). The module docs promise
/// the text stays "within what a streamed body holds back".
#[tokio::test]
#[ignore = "known gap (README): with hold_bytes under 512 KiB a text view may lag past the held-back cap"]
async fn streamed_html_text_lags_past_a_small_hold_cap() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 64KiB }\n").await;
    let url = upstream.url("/page");
    let first = vec![b' '; 128 << 10];
    let list: Vec<u8> = (0..12)
        .flat_map(|i| format!("customer{i}&#64;acme-corp.io ").into_bytes())
        .collect();
    let after = vec![b' '; 256 << 10];
    let total = first.len() + list.len() + after.len() + (1 << 20);
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {url} HTTP/1.1\r\nHost: x\r\nContent-Type: text/html\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(&list).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(&after).await.unwrap();
    let list_end = (first.len() + list.len()) as u64;
    let leaked = upstream.reaches(list_end).await;
    let sent: usize = upstream
        .requests()
        .iter()
        .map(|r| {
            String::from_utf8_lossy(&r.body)
                .matches("&#64;acme-corp.io")
                .count()
        })
        .sum();
    assert!(
        !leaked && sent < 10,
        "{sent} addresses of a list went upstream before its text was counted"
    );
}

/// The same with the default limits (`hold_bytes` 16 MiB, cap 1 MiB): the HTML is a
/// multipart part in quoted-printable, each of its padding spaces written `=20` (3 bytes
/// of body a byte of HTML), so the 512 KiB the text may lag are 1.5 MiB of body, past the
/// 1 MiB cap. A 16 MiB first part makes the body stream.
#[tokio::test]
async fn streamed_quoted_printable_html_text_lags_past_the_default_cap() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let b = support::bodies::BOUNDARY;
    let mut first = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"notes\"\r\nContent-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    first.extend_from_slice(&support::filler(16 << 20));
    first.extend_from_slice(
        format!(
            "\r\n--{b}\r\nContent-Disposition: form-data; name=\"page\"; filename=\"p.html\"\r\n\
             Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        )
        .as_bytes(),
    );
    let list: Vec<u8> = (0..12)
        .flat_map(|i| format!("customer{i}&#64;acme-corp.io =\r\n").into_bytes())
        .collect();
    // 400 KiB of spaces as `=20`, 24 a line with a soft break: 1.25 MiB of body.
    let line = format!("{}=\r\n", "=20".repeat(24));
    let after: Vec<u8> = line.as_bytes().repeat((400 << 10) / 24);
    support::assert_streamed_list_held_back(
        &proxy,
        &upstream,
        "/upload",
        &support::bodies::multipart_type(),
        [&first, &list, &after],
        "&#64;acme-corp.io",
    )
    .await;
}

/// An output whose first `write` panics: the log-writer thread dies with it.
struct Dies;

impl Write for Dies {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        panic!("the log output failed");
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Once the log-writer thread is gone (here its output panicked; a failed spawn leaves
/// none at all: `Batched::start` keeps `thread: None`), nothing empties the queue: the
/// first `max` bytes of lines pile up, then every thread that logs waits on `room`
/// forever (in the proxy: every tokio worker that logs a request line, so the proxy
/// hangs). A dead writer should make lines go (or be dropped), not block.
#[test]
fn a_dead_log_writer_thread_does_not_block_loggers_forever() {
    let batched = Batched::start(Dies, Duration::from_millis(1), 1024);
    let mut w = batched.writer();
    w.write_all(b"first line\n").unwrap();
    // The thread takes the line within its interval and dies writing it.
    std::thread::sleep(Duration::from_millis(200));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for i in 0..100 {
            let _ = w.write_all(format!("line {i:04} after the writer died\n").as_bytes());
        }
        let _ = done_tx.send(());
    });
    let finished = done_rx.recv_timeout(Duration::from_secs(3)).is_ok();
    assert!(
        finished,
        "logging 100 short lines after the writer thread died blocked for 3 s (still blocked)"
    );
    std::mem::forget(batched);
}

/// A JSON document in a form field (Slack's `payload=`), each address with one letter of
/// its domain written as an escape (`customer0@\u0061cme-corp.io`): the server parses the
/// form, then the JSON, and reads 12 addresses. The second unescape now leaves escaped
/// letters as written, and `customer0@\u0061cme-corp.io` is no address: none found. The
/// README names only a card with an escaped digit as the gap this leaves.
#[test]
fn an_escaped_letter_in_the_domain_of_a_json_document_in_a_form_hides_nothing() {
    let engine = engine();
    let rows: Vec<String> = (0..12)
        .map(|i| format!("\"customer{i}@\\u0061cme-corp.io\""))
        .collect();
    let json = format!("{{\"rows\":[{}]}}", rows.join(","));
    let body = format!("payload={}", support::bodies::form_encode(&json));
    let got = distinct(
        &engine,
        Some("application/x-www-form-urlencoded"),
        &[body.as_bytes()],
        "email",
    );
    assert!(
        got >= 10,
        "payload={{\"rows\":[\"customer0@\\u0061cme-corp.io\",...]}}: {got} distinct emails (12 after the server's JSON parse)"
    );
}

/// The same inside a JSON string (an SNS message's `Message`, GraphQL `variables`).
#[test]
fn an_escaped_letter_in_the_domain_of_a_json_document_in_a_json_string_hides_nothing() {
    let engine = engine();
    let rows: Vec<String> = (0..12)
        .map(|i| format!("\\\"customer{i}@\\\\u0061cme-corp.io\\\""))
        .collect();
    let body = format!("{{\"Message\":\"{{\\\"rows\\\":[{}]}}\"}}", rows.join(","));
    let got = distinct(
        &engine,
        Some("application/json"),
        &[body.as_bytes()],
        "email",
    );
    assert!(
        got >= 10,
        "{{\"Message\":\"{{\\\"rows\\\":[\\\"customer0@\\\\u0061cme-corp.io\\\",...]}}\"}}: {got} distinct emails"
    );
}

/// 12 `<e>` elements of an XML body each `text/xml` as `customer{i}@<![CDATA[acme-corp.io]]>`:
/// any XML parser reads `customer0@acme-corp.io` (CDATA is text). The text view treats
/// the CDATA section as a tag (dropped, and in a body's markup a line end), the raw view
/// sees `@<![CDATA[`: none found.
#[test]
fn cdata_in_an_xml_body_is_text() {
    let engine = engine();
    let body: String = (0..12)
        .map(|i| format!("<e>customer{i}@<![CDATA[acme-corp.io]]></e>"))
        .collect();
    let got = distinct(&engine, Some("text/xml"), &[body.as_bytes()], "email");
    assert!(
        got >= 10,
        "CDATA inside 12 addresses: {got} distinct emails"
    );
}

/// `customer0@<!---->acme-corp.io` in an XML or HTML body: a comment is no tag, the text
/// around it is one text (`textContent`, what a browser shows), but in a body's markup
/// the text view ends a line at it: none found.
#[test]
fn a_comment_inside_an_address_in_a_markup_body_ends_no_line() {
    let engine = engine();
    for ct in ["text/xml", "text/html"] {
        let body: String = (0..12)
            .map(|i| format!("<p>customer{i}@<!---->acme-corp.io</p>"))
            .collect();
        let got = distinct(&engine, Some(ct), &[body.as_bytes()], "email");
        assert!(
            got >= 10,
            "{ct}: a comment inside 12 addresses: {got} distinct emails"
        );
    }
}

/// `<customer email="customer0&#64;acme-corp.io"/>` ×12 in a SOAP-like XML body: the
/// parser's attribute value is the address; the text view drops everything inside a tag,
/// the raw view has `&#64;`: none found.
#[test]
fn character_references_in_xml_attribute_values_are_read() {
    let engine = engine();
    let body: String = (0..12)
        .map(|i| format!("<customer email=\"customer{i}&#64;acme-corp.io\"/>"))
        .collect();
    let got = distinct(&engine, Some("text/xml"), &[body.as_bytes()], "email");
    assert!(
        got >= 10,
        "12 addresses in attribute values with &#64;: {got} distinct emails"
    );
}

/// Found in testing the fixes above: the views' nodes kept their last bytes back (a
/// sniffer looking for a zip signature across chunks), and those came out after the other
/// view's piece, so the last address of a UTF-16 body was cut in two.
#[test]
fn the_last_address_of_a_utf16_body_is_whole() {
    let engine = engine();
    let text = format!(
        "{}customer1@acme-corp.io {}customer2@acme-corp.io \n",
        " ".repeat(100),
        " ".repeat(100)
    );
    for ct in [
        "text/plain; charset=utf-16le",
        "text/html; charset=utf-16le",
    ] {
        assert_eq!(
            distinct(&engine, Some(ct), &[&le(&text)], "email"),
            2,
            "{ct}"
        );
    }
    let mut marked = vec![0xFF, 0xFE];
    marked.extend_from_slice(&le(&text));
    assert_eq!(
        distinct(&engine, Some("text/plain"), &[&marked], "email"),
        2
    );
}
