//! Red-team review (session 14): request shapes that carried 10+ distinct customer emails
//! through the proxy under the default config and the shipped rules (each failed on the
//! code before its fix). Each test asserts the promised behaviour: 403, and the upstream
//! received nothing; the last, that a bodyless request is not refused for its headers.
//! Raw base64 with `+` in a `curl -d` form body was a known gap until session 15 (see
//! `tests/form_base64.rs`).

mod support;

use support::{Upstream, assert_blocked, send, shipped_proxy as default_proxy};

/// `n` distinct customer emails, one CSV row each, with a header row.
fn emails(n: usize) -> String {
    let mut s = String::from("id\tname\temail\r\n");
    for i in 0..n {
        s.push_str(&format!("{i}\tCustomer {i}\tcustomer{i}@acme-corp.io\r\n"));
    }
    s
}

/// UTF-16LE with a byte order mark: what Excel's "Unicode Text (*.txt)" export, Notepad's
/// "Unicode" and Windows PowerShell 5.1's `Out-File` / `>` write.
fn utf16le_bom(text: &str) -> Vec<u8> {
    let mut out = vec![0xFF, 0xFE];
    for u in text.encode_utf16() {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out
}

/// UTF-16LE without a byte order mark (.NET `Encoding.Unicode.GetBytes`, Jackson and
/// RFC 4627 §3 detect it from the zero bytes).
fn utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// A customer list saved by Excel as "Unicode Text" (UTF-16LE with a BOM) and PUT as
/// `text/plain; charset=utf-16`: the proxy scans it as raw bytes, where every other byte
/// is a zero and no address matches.
#[tokio::test]
async fn utf16_text_body_is_inspected() {
    let upstream = Upstream::start().await;
    let (proxy, _d) = default_proxy().await;
    let body = utf16le_bom(&emails(12));
    for ct in ["text/plain; charset=utf-16", "text/tab-separated-values"] {
        let (s, seen) = send(
            &upstream,
            &proxy,
            "PUT",
            "/files/customers.txt",
            &[("Content-Type", ct)],
            &body,
        )
        .await;
        assert_blocked(s, &seen, &format!("UTF-16LE text as {ct}"));
    }
}

/// The same file uploaded by a browser form: a multipart part with its filename.
#[tokio::test]
async fn utf16_file_in_a_multipart_upload_is_inspected() {
    let upstream = Upstream::start().await;
    let (proxy, _d) = default_proxy().await;
    let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; \
        filename=\"customers.txt\"\r\nContent-Type: text/plain\r\n\r\n"
        .to_vec();
    body.extend_from_slice(&utf16le_bom(&emails(12)));
    body.extend_from_slice(b"\r\n--XyZ--\r\n");
    let (s, seen) = send(
        &upstream,
        &proxy,
        "POST",
        "/upload",
        &[("Content-Type", "multipart/form-data; boundary=XyZ")],
        &body,
    )
    .await;
    assert_blocked(s, &seen, "UTF-16LE file in multipart");
}

/// JSON in UTF-16 (RFC 4627 allowed it; Jackson detects it from the first four bytes,
/// ASP.NET Core transcodes by the `charset` parameter).
#[tokio::test]
async fn utf16_json_body_is_inspected() {
    let upstream = Upstream::start().await;
    let (proxy, _d) = default_proxy().await;
    let items: Vec<String> = (0..12)
        .map(|i| format!("{{\"email\":\"customer{i}@acme-corp.io\"}}"))
        .collect();
    let json = format!("[{}]", items.join(","));
    for (what, body) in [
        ("with BOM", utf16le_bom(&json)),
        ("without BOM", utf16le(&json)),
    ] {
        let (s, seen) = send(
            &upstream,
            &proxy,
            "POST",
            "/api/customers",
            &[("Content-Type", "application/json; charset=utf-16")],
            &body,
        )
        .await;
        assert_blocked(s, &seen, &format!("UTF-16LE JSON {what}"));
    }
}

/// `%uXXXX` escapes in a form: ASP.NET's `HttpUtility.UrlDecode` (and so `Request.Form`
/// and `Request.QueryString` on classic ASP.NET / IIS) decodes `%u0040` as `@`; the proxy
/// keeps it as written.
#[tokio::test]
async fn percent_u_escapes_in_a_form() {
    let upstream = Upstream::start().await;
    let (proxy, _d) = default_proxy().await;
    let body: String = (0..12)
        .map(|i| format!("email{i}=customer{i}%u0040acme-corp.io&"))
        .collect();
    let (s, seen) = send(
        &upstream,
        &proxy,
        "POST",
        "/Default.aspx",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .await;
    assert_blocked(s, &seen, "%u0040 in a form body");
    let (s, seen) = send(
        &upstream,
        &proxy,
        "GET",
        &format!("/Default.aspx?{body}"),
        &[],
        b"",
    )
    .await;
    assert_blocked(s, &seen, "%u0040 in a query");
}

/// JSON carried in a form field (Slack-style `payload=<json>`, Stripe/legacy `data=`):
/// the server's JSON parser turns `\u0040` into `@`, but the proxy looks for JSON only at
/// the start of a body (or of decoded content that may open an archive), not in a form
/// value, so the escapes stay as written.
#[tokio::test]
async fn json_escapes_in_a_form_field() {
    let upstream = Upstream::start().await;
    let (proxy, _d) = default_proxy().await;
    let items: Vec<String> = (0..12)
        .map(|i| format!("{{\"email\":\"customer{i}\\u0040acme-corp.io\"}}"))
        .collect();
    let json = format!("[{}]", items.join(","));
    let body = format!(
        "payload={}",
        percent_encoding::utf8_percent_encode(&json, percent_encoding::NON_ALPHANUMERIC)
    );
    let (s, seen) = send(
        &upstream,
        &proxy,
        "POST",
        "/hooks/import",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .await;
    assert_blocked(s, &seen, "JSON with \\u0040 in a form field");
}

/// Double-encoded JSON (a JSON document as a string value: SNS/SQS messages, GraphQL
/// `variables` sent as a string, many queue APIs): the outer layer is unescaped once, and
/// the inner document's `\u0040` is left as written.
#[tokio::test]
async fn json_escapes_in_a_json_string() {
    let upstream = Upstream::start().await;
    let (proxy, _d) = default_proxy().await;
    let items: Vec<String> = (0..12)
        .map(|i| format!("{{\\\"email\\\":\\\"customer{i}\\\\u0040acme-corp.io\\\"}}"))
        .collect();
    let body = format!("{{\"Message\":\"[{}]\"}}", items.join(","));
    let (s, seen) = send(
        &upstream,
        &proxy,
        "POST",
        "/queue",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await;
    assert_blocked(s, &seen, "JSON with \\u0040 in a JSON string");
}

/// Character references in an XML or HTML body (a SOAP call, an HTML mail sent through a
/// webmail API): every XML parser turns `&#64;` / `&#x40;` into `@`, and a browser shows
/// them as `@`. The proxy decodes them only in XML entries of a zip.
#[tokio::test]
async fn character_references_in_xml_and_html_bodies() {
    let upstream = Upstream::start().await;
    let (proxy, _d) = default_proxy().await;
    let xml: String = (0..12)
        .map(|i| format!("<email>customer{i}&#64;acme-corp.io</email>"))
        .collect();
    let xml = format!(
        "<?xml version=\"1.0\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\">\
         <soap:Body><ImportCustomers>{xml}</ImportCustomers></soap:Body></soap:Envelope>"
    );
    let (s, seen) = send(
        &upstream,
        &proxy,
        "POST",
        "/soap",
        &[("Content-Type", "text/xml; charset=utf-8")],
        xml.as_bytes(),
    )
    .await;
    assert_blocked(s, &seen, "&#64; in a SOAP body");
    let html: String = (0..12)
        .map(|i| format!("<li>customer{i}&#x40;acme-corp.io</li>"))
        .collect();
    let (s, seen) = send(
        &upstream,
        &proxy,
        "POST",
        "/mail/send",
        &[("Content-Type", "text/html")],
        format!("<ul>{html}</ul>").as_bytes(),
    )
    .await;
    assert_blocked(s, &seen, "&#x40; in an HTML body");
}

/// `curl -d "file=$(gzip -c customers.csv | base64 -w0)"`: curl does not percent-encode
/// `-d`, so the base64's `+` symbols go raw into the form body. The proxy decoded the
/// form first (`+` as a space), which cut the run into pieces that no longer decoded to
/// the gzip stream (a known gap in session 14; read since session 15 by
/// `decode::form_base64`). The same body percent-encoded, `%2B`, was always blocked.
#[tokio::test]
async fn raw_base64_in_a_curl_d_form_body() {
    let upstream = Upstream::start().await;
    let (proxy, _d) = default_proxy().await;
    let b64 = support::bodies::base64(&support::bodies::gzip(emails(12).as_bytes()));
    assert!(b64.contains('+'), "the test needs `+` in the base64");
    let raw = format!("file={b64}");
    let encoded = format!(
        "file={}",
        percent_encoding::utf8_percent_encode(&b64, percent_encoding::NON_ALPHANUMERIC)
    );
    let (s, seen) = send(
        &upstream,
        &proxy,
        "POST",
        "/upload.php",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        encoded.as_bytes(),
    )
    .await;
    assert_blocked(s, &seen, "control: the same base64 percent-encoded");
    let (s, seen) = send(
        &upstream,
        &proxy,
        "POST",
        "/upload.php",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        raw.as_bytes(),
    )
    .await;
    assert_blocked(s, &seen, "raw base64 (gzip) with `+` in a form body");
}

/// A benign request with no body at all, whose client sends a `Content-Type:
/// multipart/form-data` header anyway (a header pasted from a Postman collection, an HTTP
/// client configured with it as a default for every call): nothing can be hidden in a
/// body that does not exist, yet the proxy refuses it as "not inspected" (`corrupt`),
/// because the media type's problem is recorded when the inspection is set up, not when a
/// body comes (as an unsupported `Content-Encoding` is).
#[tokio::test]
async fn no_body_with_a_multipart_content_type_is_forwarded() {
    let upstream = Upstream::start().await;
    let (proxy, _d) = default_proxy().await;
    for (method, ct) in [
        ("GET", "multipart/form-data"),
        ("DELETE", "multipart/form-data"),
        ("GET", "application/json, text/plain"),
    ] {
        let reply = support::request(
            proxy.addr,
            method,
            &upstream.url("/items"),
            &[("Content-Type", ct)],
            b"",
        )
        .await;
        assert_eq!(
            reply.status,
            200,
            "{method} with Content-Type {ct:?} and no body: {}",
            reply.text()
        );
    }
}
