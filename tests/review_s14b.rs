//! Review of session 14's new decoding paths (UTF-16 transcoding, the second unescape,
//! XML/HTML bodies in markup mode): each test is a way a list of 10+ distinct emails
//! stopped being counted, or its count depended on how the body was cut. Each fails on
//! the code as reviewed.

mod support;

use std::time::Duration;

use support::{Proxy, Upstream, fixture_engine as engine, inspected_distinct as distinct};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Plain ASCII rows behind a UTF-16LE byte-order mark, each address followed by a vertical
/// tab placed at an odd offset of the content: the transcoder pairs the tab with the
/// address's last letter (`o`, 0x0B → U+0B6F) and the `.io` loses its `o`. Without the
/// mark the 12 addresses are found; with it (the UTF-16 view replaces the raw one) none.
/// The doc's promise: "a mark cannot hide plain text".
#[test]
fn a_mark_before_plain_text_with_control_separators_hides_nothing() {
    let engine = engine();
    let mut content = Vec::new();
    for i in 0..12 {
        let email = format!("customer{i}@acme-corp.io");
        // The email's last byte at an even offset, the tab right after it (odd).
        if (content.len() + email.len() - 1) % 2 == 1 {
            content.push(b' ');
        }
        content.extend_from_slice(email.as_bytes());
        content.push(0x0B);
    }
    let plain = distinct(&engine, Some("text/plain"), &[&content], "email");
    assert_eq!(plain, 12, "control: the plain text is found");
    let marked = [b"\xff\xfe".as_slice(), &content].concat();
    let got = distinct(&engine, Some("text/plain"), &[&marked], "email");
    assert!(
        got >= 10,
        "FF FE + ASCII list with \\x0b separators: {got} distinct emails (12 without the mark)"
    );
}

/// The same ASCII rows with `charset=utf-16` in the Content-Type (a server that ignores
/// the charset, as PHP does, reads them as they are).
#[test]
fn a_utf16_charset_on_plain_text_with_control_separators_hides_nothing() {
    let engine = engine();
    let mut content = Vec::new();
    for i in 0..12 {
        let email = format!("customer{i}@acme-corp.io");
        if (content.len() + email.len() - 1) % 2 == 1 {
            content.push(b' ');
        }
        content.extend_from_slice(email.as_bytes());
        content.push(0x0B);
    }
    let got = distinct(
        &engine,
        Some("text/plain; charset=utf-16le"),
        &[&content],
        "email",
    );
    assert!(
        got >= 10,
        "ASCII list as charset=utf-16le: {got} distinct emails"
    );
}

/// The second unescape replaces the text a JSON layer decoded: `%u0030` after each address
/// (not a JSON escape: a JSON server reads the string as written, with the address in it)
/// becomes `0`, and `acme-corp.io0` is no address. Before the second unescape the 12 were
/// found.
#[test]
fn percent_u_after_addresses_in_json_hides_nothing() {
    let engine = engine();
    let items: Vec<String> = (0..12)
        .map(|i| format!("\"customer{i}@acme-corp.io%u0030\""))
        .collect();
    let body = format!("{{\"contacts\":[{}]}}", items.join(","));
    let got = distinct(
        &engine,
        Some("application/json"),
        &[body.as_bytes()],
        "email",
    );
    assert!(got >= 10, "JSON {body}: {got} distinct emails");
}

/// The same in a plain text body that happens to start with `[` (sniffed as JSON, so its
/// unescaped view stands in for the raw one): `%u005f` becomes `_`, a word byte after the
/// TLD.
#[test]
fn percent_u_after_addresses_in_text_hides_nothing() {
    let engine = engine();
    let mut body = String::from("[export]\n");
    for i in 0..12 {
        body.push_str(&format!("{i} customer{i}@acme-corp.io%u005f\n"));
    }
    let got = distinct(&engine, Some("text/plain"), &[body.as_bytes()], "email");
    assert!(got >= 10, "text {body:?}: {got} distinct emails");
}

/// A form field (PHP, Rails, Django: one percent-decoding, no JSON unescape) holding
/// addresses each followed by `\u005f`: the proxy now reads `acme-corp.io_`, the server
/// stores the address followed by a backslash.
#[test]
fn json_escape_after_addresses_in_a_form_hides_nothing() {
    let engine = engine();
    let body: Vec<String> = (0..12)
        .map(|i| format!("c{i}=customer{i}%40acme-corp.io%5Cu005f"))
        .collect();
    let body = body.join("&");
    let got = distinct(
        &engine,
        Some("application/x-www-form-urlencoded"),
        &[body.as_bytes()],
        "email",
    );
    assert!(got >= 10, "form {body}: {got} distinct emails");
}

/// UTF-16LE JSON (no mark) declared `charset=utf-16-le`: Express's body-parser (iconv-lite
/// strips everything but letters and digits from the name) and Python's codecs read it;
/// the proxy knows only `utf-16le`/`utf16le`, so it scans the zero-interleaved bytes.
#[test]
fn utf16_charset_spelled_with_a_dash_before_le_is_transcoded() {
    let engine = engine();
    let items: Vec<String> = (0..12)
        .map(|i| format!("{{\"email\":\"customer{i}@acme-corp.io\"}}"))
        .collect();
    let json = format!("[{}]", items.join(","));
    let body: Vec<u8> = json.encode_utf16().flat_map(u16::to_le_bytes).collect();
    for ct in [
        "application/json; charset=utf-16-le",
        "application/json; charset=ucs2",
    ] {
        let got = distinct(&engine, Some(ct), &[&body], "email");
        assert!(got >= 10, "UTF-16LE JSON as {ct}: {got} distinct emails");
    }
}

/// An XML body's text view is flushed to the stream when 256 KiB of text are held, after
/// whatever chunk took it there: when that chunk ends inside an address written with
/// `&#64;` (only the text view can see it), the flushed text ends mid-address and the rest
/// starts a new segment after the raw view's bytes. Fed whole: 12 found.
#[test]
fn xml_body_text_flush_does_not_depend_on_chunk_cuts() {
    let engine = engine();
    let fill: Vec<u8> = support::filler(256 << 10);
    let mut body = Vec::new();
    let mut cuts = Vec::new();
    for i in 0..12 {
        body.extend_from_slice(&fill);
        body.extend_from_slice(format!("\ncustomer{i}&#64;acme").as_bytes());
        cuts.push(body.len());
        body.extend_from_slice(b"-corp.io\n");
    }
    let mut pieces = Vec::new();
    let mut from = 0;
    for c in cuts {
        pieces.push(&body[from..c]);
        from = c;
    }
    pieces.push(&body[from..]);
    let whole = distinct(&engine, Some("text/xml"), &[&body], "email");
    let cut = distinct(&engine, Some("text/xml"), &pieces, "email");
    assert_eq!(whole, 12, "control: fed whole");
    assert_eq!(cut, whole, "the same XML body cut after each `&#64;acme`");
}

/// A streamed XML body (past `hold_bytes`) whose addresses only its text view sees
/// (`&#64;`), each followed by a long tag (no text): the text stays held in the XmlNode
/// (flushed only at 256 KiB of *text*), its Waiting share keeps the chunks back only up to
/// the wait cap, then they go. All 12 addresses reach the upstream while the proxy has
/// counted none (the request is still open, not blocked).
#[tokio::test]
async fn streamed_xml_list_does_not_reach_the_upstream_before_it_is_counted() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 64KiB }\n").await;
    let url = upstream.url("/soap");
    let mut first = b"<?xml version=\"1.0\"?><r>".to_vec();
    first.extend_from_slice(b"<pad a=\"");
    first.extend(std::iter::repeat_n(b'a', 128 << 10));
    first.extend_from_slice(b"\"/>");
    let mut list = Vec::new();
    for i in 0..12 {
        list.extend_from_slice(format!("<e>customer{i}&#64;acme-corp.io</e><pad a=\"").as_bytes());
        list.extend(std::iter::repeat_n(b'a', 16 << 10));
        list.extend_from_slice(b"\"/>");
    }
    let mut after = b"<pad a=\"".to_vec();
    after.extend(std::iter::repeat_n(b'a', 256 << 10));
    after.extend_from_slice(b"\"/>");
    let more = 1 << 20;
    let total = first.len() + list.len() + after.len() + more;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {url} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(&list).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(&after).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let seen = upstream.requests();
    let sent = seen
        .iter()
        .map(|r| {
            String::from_utf8_lossy(&r.body)
                .matches("&#64;acme-corp.io")
                .count()
        })
        .sum::<usize>();
    assert!(
        sent < 10,
        "{sent} addresses of a list went upstream before it was counted"
    );
}

/// A UTF-16LE list with its mark (`FF FE`), declared `charset=utf-16be`: the Encoding
/// Standard's decode (and .NET's StreamReader, Java's `UTF-16`) goes by the mark over the
/// label, so the server reads the list; the proxy goes by the label, reads every unit
/// byte-swapped (`c\0` as U+6300) and finds nothing.
#[test]
fn a_mark_that_contradicts_the_utf16_charset_hides_nothing() {
    let engine = engine();
    let text = support::customer_export(12);
    let mut le = vec![0xFF, 0xFE];
    le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    let mut be = vec![0xFE, 0xFF];
    be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
    for (ct, body) in [
        ("text/plain; charset=utf-16be", &le),
        ("text/plain; charset=utf-16le", &be),
    ] {
        let got = distinct(&engine, Some(ct), &[body], "email");
        assert!(got >= 10, "{ct} with the other mark: {got} distinct emails");
    }
}
