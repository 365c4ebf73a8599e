//! Red-team review of session 15, second pass: the zip search on the bytes as sent whatever
//! the content is read as (93d489c: `Sniffer::searching`, `Node::searched`), and the
//! forgiveness of a "corrupt" problem in a form field read whole as raw base64 (90d2758:
//! `FormNode::end_field`). Each test asserts the promised behaviour.

mod support;

use egress_dlp::decode::{Inspection, Limits, Outcome};
use support::bodies::{ZipMethod, zip};
use support::distinct_of as distinct;

const FORM_CT: Option<&str> = Some("application/x-www-form-urlencoded");

/// The whole outcome of a body fed in `pieces`.
fn inspect(ct: Option<&str>, pieces: &[&[u8]]) -> Outcome {
    support::inspect_pieces(&support::fixture_engine(), ct, None, pieces).0
}

/// Blocked under the shipped policy: ten distinct addresses, or not fully inspected.
fn refused(o: &Outcome) -> bool {
    distinct(o, "email") >= 10 || o.not_scanned.is_some()
}

fn describe(o: &Outcome) -> String {
    format!(
        "email distinct {}, not_scanned {:?}",
        distinct(o, "email"),
        o.not_scanned
    )
}

fn list(n: usize) -> String {
    (0..n)
        .map(|i| format!("{i},customer{i}@acme-corp.io\n"))
        .collect()
}

/// `text` as UTF-16 little endian, no byte-order mark.
fn utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// `z` with `comment` as its archive comment (its end record's last field).
fn with_comment(mut z: Vec<u8>, comment: &[u8]) -> Vec<u8> {
    let n = z.len();
    z[n - 2..].copy_from_slice(&(comment.len() as u16).to_le_bytes());
    z.extend_from_slice(comment);
    z
}

/// A small benign archive, an odd number of bytes long.
fn odd_zip() -> Vec<u8> {
    let z = zip(&[("a.txt", b"hello")], ZipMethod::Stored);
    assert_eq!(z.len() % 2, 1, "{}", z.len());
    z
}

/// Base64 of the list, chosen without `+` (a form would read it as a space).
fn list_b64() -> String {
    for n in 15..40 {
        let b = support::bodies::base64(list(n).as_bytes());
        if !b.contains('+') && !b.contains('/') {
            return b;
        }
    }
    panic!("no list without + or /");
}

fn b64_spaces(data: &[u8]) -> String {
    support::bodies::base64(data).replace('+', " ")
}

/// Bytes whose base64 has `+` in it.
fn data_with_plus(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 251 % 256) as u8 ^ 0xF8).collect()
}

/// A benign archive whose comment holds a second archive (the list), offsets as if the
/// whole file were the second archive's: readers going by the last end record open it.
fn hidden_zip() -> Vec<u8> {
    let a = zip(&[("readme.txt", b"hello")], ZipMethod::Stored);
    let mut b = zip(
        &[("customers.csv", list(30).as_bytes())],
        ZipMethod::Deflated,
    );
    let shift = a.len() as u32;
    // b's one central record: its local header offset at 42; the end record's directory
    // offset at 16 from its start.
    let n = b.len();
    let eocd = n - 22;
    let cd_off = u32::from_le_bytes(b[eocd + 16..eocd + 20].try_into().unwrap()) as usize;
    let lh = u32::from_le_bytes(b[cd_off + 42..cd_off + 46].try_into().unwrap()) + shift;
    b[cd_off + 42..cd_off + 46].copy_from_slice(&lh.to_le_bytes());
    let new_cd = cd_off as u32 + shift;
    b[eocd + 16..eocd + 20].copy_from_slice(&new_cd.to_le_bytes());
    with_comment(a, &b)
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// The value of form field `key` in `body` as a server splits it (`&`, then `=`), no
/// percent-decoding needed here.
fn form_field<'a>(body: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    body.split(|&b| b == b'&').find_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        (&pair[..eq] == key).then(|| &pair[eq + 1..])
    })
}

fn b64_decode(s: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

/// `curl -d "doc=$(base64 -w0 evil.zip)" -d "note=$(base64 -w0 other.bin)"`: two fields
/// of raw base64 whose `+` a form reads as spaces. The first is an archive whose comment
/// holds a second archive with the customer list (Python's `zipfile` and `unzip` open the
/// list: they go by the last end record); the proxy reads the first archive only and
/// rightly records "zip: another end record in the archive comment" (corrupt) — sent
/// alone, that field is refused. But the field's decoded bytes are scanned *after* the
/// field (pending content, at the next separator), so that problem is recorded while the
/// second field is read; the second field is raw base64 read whole and started with no
/// problem recorded, so `FormNode::end_field` clears the first field's problem as if it
/// were its own text reader's. 200, the list upstream.
#[tokio::test]
async fn a_later_raw_base64_field_forgives_an_earlier_fields_corrupt_archive() {
    let z = hidden_zip();
    let f1 = b64_spaces(&z);
    assert!(
        f1.contains(' '),
        "the shape needs a `+` in the archive's base64"
    );
    let f2 = b64_spaces(&data_with_plus(300));
    let alone = format!("doc={f1}");
    let two = format!("doc={f1}&note={f2}");

    let upstream = support::Upstream::start().await;
    let (proxy, _d) = support::shipped_proxy().await;
    let (s, seen) = support::send(
        &upstream,
        &proxy,
        "POST",
        "/upload",
        &[FORM],
        alone.as_bytes(),
    )
    .await;
    support::assert_blocked(s, &seen, "control: the archive field alone");
    let o = inspect(FORM_CT, &[alone.as_bytes()]);
    assert!(o.not_scanned.is_some(), "control: {}", describe(&o));

    let (s, seen) = support::send(
        &upstream,
        &proxy,
        "POST",
        "/upload",
        &[FORM],
        two.as_bytes(),
    )
    .await;
    let o = inspect(FORM_CT, &[two.as_bytes()]);
    assert!(
        refused(&o) && s == 403 && seen.is_empty(),
        "a corrupt archive in `doc` forgiven by the raw base64 in `note`: {}; proxy {s}, \
         upstream received {} request(s), complete: {:?}",
        describe(&o),
        seen.len(),
        seen.iter()
            .map(|r| (r.complete, r.body.len()))
            .collect::<Vec<_>>()
    );
}

/// The same forgiveness with a plainer problem: a gzip of the list cut short in one raw
/// base64 field ("gzip stream ends before its end", refused alone) is cleared by any raw
/// base64 field after it (benign content here: with a list in it, its count would block
/// anyway; the point is the flag "not fully inspected" gone). The clearing was meant for the problem the text's own reader
/// records in the field being ended; it clears whatever `Corrupt` was recorded since the
/// field started, including the previous field's pending content.
#[test]
fn a_later_raw_base64_field_forgives_an_earlier_fields_cut_gzip() {
    let text: String = (0..300)
        .map(|i| format!("row {i}: ok, {}\n", i * 7919 % 1000))
        .collect();
    let gz = support::bodies::gzip(text.as_bytes());
    let f1 = b64_spaces(&gz[..gz.len() - 20]);
    let f2 = b64_spaces(&data_with_plus(300));
    let o = inspect(FORM_CT, &[format!("f1={f1}").as_bytes()]);
    assert!(o.not_scanned.is_some(), "control: {}", describe(&o));
    let o = inspect(FORM_CT, &[format!("f1={f1}&f2={f2}").as_bytes()]);
    assert!(
        o.not_scanned.is_some(),
        "the cut gzip's problem was cleared by the next field: {}",
        describe(&o)
    );
}

/// A text file saved as UTF-16 (byte-order mark), with a small archive pasted in it (an
/// odd number of bytes, then one pad byte), then the list: any UTF-16 reader of the whole
/// body (strict `String::from_utf16` below) reads the list. The new search opens the
/// archive and gives its bytes to the zip reader *only*: the UTF-16 transcoder never sees
/// them, so after an odd-length archive every unit it reads is shifted by one byte and the
/// list is never seen. Before 93d489c the transcoder read every byte and found it.
#[tokio::test]
async fn utf16_text_after_an_odd_length_zip_is_still_read() {
    let mut body = support::bodies::utf16("note\n", true);
    body.extend_from_slice(&odd_zip());
    body.push(0);
    body.extend_from_slice(&utf16le(&list(15)));
    let units: Vec<u16> = body[2..]
        .chunks(2)
        .map(|u| u16::from_le_bytes([u[0], u[1]]))
        .collect();
    let read = String::from_utf16(&units).expect("valid UTF-16 for a strict reader");
    assert!(read.contains("14,customer14@acme-corp.io"));

    let upstream = support::Upstream::start().await;
    let (proxy, _d) = support::shipped_proxy().await;
    let (s, seen) = support::send(
        &upstream,
        &proxy,
        "PUT",
        "/notes.txt",
        &[("Content-Type", "text/plain")],
        &body,
    )
    .await;
    let mut wrong = Vec::new();
    for ct in [None, Some("text/plain"), Some("text/plain; charset=utf-16")] {
        let o = inspect(ct, &[&body]);
        if !refused(&o) {
            wrong.push(format!("as {ct:?}: {}", describe(&o)));
        }
    }
    assert!(
        wrong.is_empty() && s == 403 && seen.is_empty(),
        "{wrong:?}; proxy {s}, upstream received {} request(s), complete: {:?}",
        seen.len(),
        seen.iter()
            .map(|r| (r.complete, r.body == body))
            .collect::<Vec<_>>()
    );
}

/// A form whose bytes hold a small archive (raw, as `curl --data-binary` sends a file)
/// whose comment ends with `&f=`, then the list in base64. A server splits the form at
/// that `&`: field `f` is the list's base64, whole (checked below with a server's split).
/// The proxy's form reader never sees the archive's bytes (the search gives them to the
/// zip reader only), so for it `a`'s value `QU` runs on into the base64: decoded from
/// `QU`, two symbols off, nothing but noise. Before 93d489c the form reader read every
/// byte, split at the `&`, and found the list. 200, the list upstream.
#[tokio::test]
async fn a_zip_in_a_form_whose_bytes_hold_the_next_fields_separator() {
    let z = with_comment(odd_zip(), b"&f=");
    let mut body = b"a=QU".to_vec();
    body.extend_from_slice(&z);
    body.extend_from_slice(list_b64().as_bytes());
    let f = form_field(&body, b"f").expect("a field f");
    assert!(String::from_utf8_lossy(&b64_decode(f)).contains("customer14@acme-corp.io"));

    let upstream = support::Upstream::start().await;
    let (proxy, _d) = support::shipped_proxy().await;
    let (s, seen) = support::send(&upstream, &proxy, "POST", "/upload", &[FORM], &body).await;
    let o = inspect(FORM_CT, &[&body]);
    assert!(
        refused(&o) && s == 403 && seen.is_empty(),
        "{}; proxy {s}, upstream received {} request(s), complete: {:?}",
        describe(&o),
        seen.len(),
        seen.iter()
            .map(|r| (r.complete, r.body == body))
            .collect::<Vec<_>>()
    );
}

/// The same hole in XML (`TwoViews`): the archive's comment closes an element and opens
/// the next (`</a><b>`), the list's base64 is `b`'s text; the XML reader, without the
/// archive's bytes, reads `QU` and the base64 as one text, two symbols off.
#[test]
fn a_zip_in_xml_whose_bytes_close_an_element() {
    let z = with_comment(odd_zip(), b"</a><b>");
    let mut body = b"<r><a>QU".to_vec();
    body.extend_from_slice(&z);
    body.extend_from_slice(list_b64().as_bytes());
    body.extend_from_slice(b"</b></r>");
    let o = inspect(Some("text/xml"), &[&body]);
    assert!(refused(&o), "{}", describe(&o));
}

/// A form body sent `Content-Encoding: gzip` and cut short (its gzip stream ends before
/// its end: refused as corrupt when the body is read as text) whose last field is raw
/// base64 with `+` read as spaces: the decompressor records "gzip stream ends before its
/// end" while that field is the current one, and the field's end (the form's finish)
/// clears it. The problem is the body's own encoding, not anything the field's text
/// reader found: the request is passed as fully inspected.
#[test]
fn a_cut_gzip_body_is_forgiven_when_its_last_field_is_raw_base64() {
    let f = b64_spaces(&data_with_plus(3000));
    let rows: String = (0..200)
        .map(|i| format!("r{i}=v{}&", i * 7919 % 1000))
        .collect();
    let gz = support::bodies::gzip(format!("{rows}f={f}").as_bytes());
    let cut = &gz[..gz.len() - 8];
    let engine = support::fixture_engine();
    let limits = Limits::default();
    let mut wrong = Vec::new();
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let mut i = Inspection::new(&engine, &limits, Some(ct.as_bytes()), Some(b"gzip"));
        i.feed(cut);
        let o = i.finish();
        if o.not_scanned.is_none() {
            wrong.push(ct);
        }
    }
    assert!(
        wrong.is_empty(),
        "a cut gzip body passed as fully inspected as {wrong:?}"
    );
}

/// `prefix`, a small archive whose comment is `rest` (the comment length says so: a valid
/// archive, its end record last), i.e. `prefix + zip + rest` with `rest` inside the zip.
fn zip_swallowing(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut body = prefix.to_vec();
    body.extend_from_slice(&with_comment(
        zip(&[("a.txt", b"hello")], ZipMethod::Stored),
        rest,
    ));
    body
}

/// A raw archive whose comment length covers the rest of the body (a valid archive:
/// `unzip` lists it), and in that rest the list as the content's type encodes it: a
/// percent-encoded form field, UTF-16 text, XML character references. A server reads the
/// rest as the form, the text, the document it is. The proxy gives the archive's bytes,
/// comment included, to the zip reader only, which scans the comment as plain text: the
/// form reader, UTF-16 transcoder and XML reader never see the list, and plain text holds
/// `%40`, `c\0u\0…`, `&#64;` — no address. Before 93d489c each reader read every byte.
#[tokio::test]
async fn an_archive_comment_swallows_the_rest_of_the_body() {
    let rows = list(15);
    let form_rest = format!("&list={}", rows.replace('@', "%40").replace('\n', "%0A"));
    let xml_rest = format!("</a><b>{}</b></r>", rows.replace('@', "&#64;"));
    // One pad byte: the archive is an odd number of bytes, the list stays on units.
    let mut utf_rest = vec![0u8];
    utf_rest.extend_from_slice(&utf16le(&rows));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "application/x-www-form-urlencoded",
            zip_swallowing(b"name=x.zip&file=", form_rest.as_bytes()),
        ),
        (
            "text/plain",
            zip_swallowing(&support::bodies::utf16("note\n", true), &utf_rest),
        ),
        ("text/xml", zip_swallowing(b"<r><a>", xml_rest.as_bytes())),
    ];
    let upstream = support::Upstream::start().await;
    let (proxy, _d) = support::shipped_proxy().await;
    let mut wrong = Vec::new();
    for (ct, body) in &cases {
        let o = inspect(Some(ct), &[body]);
        let (s, seen) = support::send(
            &upstream,
            &proxy,
            "POST",
            "/in",
            &[("Content-Type", ct)],
            body,
        )
        .await;
        let got = seen
            .iter()
            .filter(|r| r.body == *body && r.complete)
            .count();
        if !refused(&o) || s != 403 || got > 0 {
            wrong.push(format!(
                "{ct}: {}; proxy {s}, upstream got it whole: {got}",
                describe(&o)
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
