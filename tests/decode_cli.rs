//! `scan --content-type/--content-encoding`: a captured body decoded exactly as the proxy
//! would, by the real binary.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::bodies::*;
use support::customer_export;

const BIN: &str = env!("CARGO_BIN_EXE_egress-dlp");
const FIXTURE: &str = "tests/fixtures/rules";

fn scan(extra: &[&str], stdin: &[u8]) -> (i32, serde_json::Value) {
    let mut args = vec!["scan", "--rules", FIXTURE, "--format", "json"];
    args.extend_from_slice(extra);
    args.push("-");
    let mut child = Command::new(BIN)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let doc = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    (out.status.code().unwrap_or(-1), doc)
}

fn emails(doc: &serde_json::Value) -> u64 {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["category"] == "email")
        .map_or(0, |f| f["distinct"].as_u64().unwrap())
}

#[test]
fn scan_decodes_a_captured_body_as_the_proxy_would() {
    let export = customer_export(20);
    let body = gzip(format!("{{\"rows\":{}}}", json_escaped(&export)).as_bytes());
    let (status, doc) = scan(
        &[
            "--content-type",
            "application/json",
            "--content-encoding",
            "gzip",
        ],
        &body,
    );
    assert_eq!(status, 1, "{doc}");
    assert_eq!(doc["verdict"], "block");
    assert_eq!(emails(&doc), 20);
    assert!(doc.get("not_scanned").is_none());

    // Multipart with its boundary.
    let body = multipart(&[("f", Some("a.csv"), Some("text/csv"), "", export.as_bytes())]);
    let (status, doc) = scan(&["--content-type", &multipart_type()], &body);
    assert_eq!((status, emails(&doc)), (1, 20), "{doc}");
}

#[test]
fn without_headers_embedded_content_is_still_found() {
    let export = customer_export(20);
    // A zip file and a gzip file are recognised by their first bytes.
    let (status, doc) = scan(
        &[],
        &zip(&[("a.csv", export.as_bytes())], ZipMethod::Deflated),
    );
    assert_eq!((status, emails(&doc)), (1, 20), "{doc}");
    let (status, doc) = scan(&[], &gzip(export.as_bytes()));
    assert_eq!((status, emails(&doc)), (1, 20), "{doc}");
    // Escaped JSON without its content type: recognised by its opening brace.
    let json = format!("{{\"rows\":{}}}", json_escaped(&export));
    let (status, doc) = scan(&[], json.as_bytes());
    assert_eq!((status, emails(&doc)), (1, 20), "{doc}");
    let (status, doc) = scan(&["--content-type", "text/plain"], json.as_bytes());
    assert_eq!((status, emails(&doc)), (1, 20), "{doc}");
}

#[test]
fn an_input_that_cannot_be_inspected_is_reported_and_blocked() {
    let (status, doc) = scan(&["--content-encoding", "gzip"], b"plain text, not gzip");
    assert_eq!(status, 1, "{doc}");
    assert_eq!(doc["verdict"], "block");
    assert_eq!(doc["not_scanned"]["reason"], "corrupt");
    let (status, doc) = scan(&["--content-encoding", "compress"], b"x");
    assert_eq!(
        (status, doc["not_scanned"]["reason"].as_str()),
        (1, Some("unsupported"))
    );
}
