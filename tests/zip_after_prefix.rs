//! A zip archive after a few bytes that make the content read another way: `{}` (JSON),
//! a UTF-16 byte-order mark, an XML prolog, a form field. Zip readers (Python's
//! `zipfile`, Java, `unzip`) open such a file by its end record whatever comes before,
//! and the proxy already opened a zip after a stub (`cat stub.bin export.zip`); but content
//! that *started* like JSON or UTF-16, or was sent as JSON, XML or a form, was read only
//! that way and its zip never searched for: a customer list zipped behind `{}` reached
//! the upstream (found in review, session 15). Each shape: 403 and nothing upstream.

mod support;

use support::bodies::{ZipMethod, zip};
use support::{Upstream, assert_blocked, send, shipped_proxy};

fn customers_zip() -> Vec<u8> {
    let mut csv = String::from("id,email\n");
    for i in 0..15 {
        csv.push_str(&format!("{i},customer{i}@acme-corp.io\n"));
    }
    zip(&[("customers.csv", csv.as_bytes())], ZipMethod::Deflated)
}

#[tokio::test]
async fn a_zip_behind_a_prefix_is_opened_whatever_the_type_says() {
    let upstream = Upstream::start().await;
    let (proxy, _d) = shipped_proxy().await;
    let z = customers_zip();
    let prefixes: [(&str, &[u8]); 5] = [
        ("JSON", b"{\"a\":1}\n"),
        ("UTF-16 mark", b"\xff\xfe"),
        ("UTF-16 mark and text", b"\xff\xfeh\x00i\x00\n\x00"),
        ("XML prolog", b"<?xml version=\"1.0\"?><a/>\n"),
        ("a form field", b"name=export&file="),
    ];
    let types = [
        "application/octet-stream",
        "text/plain",
        "application/json",
        "text/xml",
        "application/x-www-form-urlencoded",
        "text/plain; charset=utf-16",
    ];
    for (what, prefix) in prefixes {
        let mut body = prefix.to_vec();
        body.extend_from_slice(&z);
        for ct in types {
            let (s, seen) = send(
                &upstream,
                &proxy,
                "PUT",
                "/files/x",
                &[("Content-Type", ct)],
                &body,
            )
            .await;
            assert_blocked(s, &seen, &format!("{what} then a zip, as {ct}"));
        }
    }
}

#[tokio::test]
async fn benign_json_and_forms_still_arrive_byte_for_byte() {
    let upstream = Upstream::start().await;
    let (proxy, _d) = shipped_proxy().await;
    let bodies: [(&str, &[u8]); 3] = [
        (
            "application/json",
            b"{\"event\":\"PK\\u0003\\u0004 is a zip header\",\"n\":3}",
        ),
        ("application/x-www-form-urlencoded", b"q=PK%03%04&x=1"),
        ("text/xml", b"<a>PK&#3;&#4;</a>"),
    ];
    for (k, (ct, body)) in bodies.into_iter().enumerate() {
        let (s, seen) = send(
            &upstream,
            &proxy,
            "POST",
            "/e",
            &[("Content-Type", ct)],
            body,
        )
        .await;
        assert_eq!(s, 200, "{ct}");
        assert_eq!(seen.len(), k + 1);
        assert_eq!(seen[k].body, body, "{ct}");
    }
}

/// A multipart body with the zip in its preamble (before the first delimiter) or its
/// epilogue (after the closing one): servers' form parsers skip both, but a server that
/// keeps the body as it is has the archive. Both were scanned as text, but the zip in them
/// was not opened.
#[tokio::test]
async fn a_zip_in_a_multipart_preamble_or_epilogue_is_opened() {
    let upstream = Upstream::start().await;
    let (proxy, _d) = shipped_proxy().await;
    let z = customers_zip();
    let parts = support::bodies::multipart(&[("note", None, None, "", b"monthly report")]);
    let ct = support::bodies::multipart_type();
    let mut preamble = z.clone();
    preamble.extend_from_slice(b"\r\n");
    preamble.extend_from_slice(&parts);
    let mut epilogue = parts.clone();
    epilogue.extend_from_slice(&z);
    for (what, body) in [("preamble", preamble), ("epilogue", epilogue)] {
        let (s, seen) = send(
            &upstream,
            &proxy,
            "POST",
            "/upload",
            &[("Content-Type", &ct)],
            &body,
        )
        .await;
        assert_blocked(s, &seen, &format!("a zip in the multipart {what}"));
    }
}
