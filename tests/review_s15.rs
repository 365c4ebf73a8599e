//! Red-team review of session 15 (raw base64 in form fields, `decode::form_base64`; the
//! sniffer's zip search without chunk copies). Each test asserts the promised behaviour
//! and failed on the code under review.

mod support;

use egress_dlp::decode::Outcome;
use support::distinct_of as distinct;
use support::{Upstream, assert_blocked, send, send_form, shipped_proxy};

const FORM_CT: Option<&str> = Some("application/x-www-form-urlencoded");

fn customers(n: usize) -> String {
    support::bodies::customers_with_plus_in_base64(n)
}

/// The whole outcome of a body fed in `pieces`.
fn inspect(ct: Option<&str>, ce: Option<&str>, pieces: &[&[u8]]) -> (Outcome, u64) {
    support::inspect_pieces(&support::fixture_engine(), ct, ce, pieces)
}

/// Index of the first `+` in `b64`.
fn first_plus(b64: &str) -> Option<usize> {
    b64.find('+')
}

/// `curl -d "data=$(gzip -c customers.csv | base64 -w0)"` where the base64's first `+`
/// lies past its 64th symbol (so for about half of all gzip files): the text's own reader
/// decodes the run up to the first space (a `+` read as a space), a gzip stream cut after
/// a few dozen bytes, and `form_base64` skips those bytes (`own_from`: "the text's reader
/// decoded the run before it") and hands on the rest, which starts mid-stream and is
/// never opened as gzip. 33 customers: no address counted, nothing flagged, 200.
#[tokio::test]
async fn gzip_base64_whose_first_plus_is_past_64_symbols_is_blocked() {
    let gz = support::bodies::gzip(customers(33).as_bytes());
    let b64 = support::bodies::base64(&gz);
    let first = first_plus(&b64).expect("a plus");
    assert!(
        first >= 64,
        "the shape needs the first `+` past 64 symbols: {first}"
    );
    let body = format!("name=export.csv.gz&data={b64}");
    let upstream = Upstream::start().await;
    let (proxy, _d) = shipped_proxy().await;
    let (s, seen) = send_form(&upstream, &proxy, "/upload", body.as_bytes()).await;
    assert_blocked(s, &seen, "gzip, base64 with its first `+` at symbol 76");
}

/// The same shape through the decode pipeline, for every list of 10 to 39 customers:
/// each is counted whole only when the base64's first `+` comes within 64 symbols;
/// otherwise 0 or 1 address is counted (and usually a "gzip stream ends before its end"
/// problem is all that blocks it).
#[test]
fn gzip_in_a_raw_field_is_counted_wherever_the_first_plus_falls() {
    let mut wrong = Vec::new();
    for n in 10..40 {
        let gz = support::bodies::gzip(customers(n).as_bytes());
        let b64 = support::bodies::base64(&gz);
        let body = format!("data={b64}");
        let (o, _) = inspect(FORM_CT, None, &[body.as_bytes()]);
        let d = distinct(&o, "email");
        if d != n as u64 {
            wrong.push((n, first_plus(&b64), d, o.not_scanned.map(|p| p.detail)));
        }
    }
    assert!(
        wrong.is_empty(),
        "(customers, first `+` at, distinct counted, problem): {wrong:?}"
    );
}

/// The benign side of the same cause: a harmless gzip file (no identifiers) sent raw in a
/// form field, its base64's first `+` past 64 symbols, is refused as "could not be
/// inspected" (the text's reader opened the run cut at the first space as gzip: corrupt),
/// although the field decodes to a whole, valid gzip stream.
#[tokio::test]
async fn a_benign_gzip_in_a_raw_field_is_forwarded() {
    let mut chosen = None;
    for k in 0..200 {
        let text = format!("release notes {k}\n").repeat(40) + "nothing personal here\n";
        let b64 = support::bodies::base64(&support::bodies::gzip(text.as_bytes()));
        if first_plus(&b64).is_some_and(|p| (64..300).contains(&p)) {
            chosen = Some(b64);
            break;
        }
    }
    let b64 = chosen.expect("a gzip whose base64 has its first `+` past 64 symbols");
    let body = format!("name=notes.txt.gz&data={b64}");
    let (o, _) = inspect(FORM_CT, None, &[body.as_bytes()]);
    let upstream = Upstream::start().await;
    let (proxy, _d) = shipped_proxy().await;
    let (s, seen) = send_form(&upstream, &proxy, "/upload", body.as_bytes()).await;
    assert_eq!(s, 200, "not_scanned: {:?}", o.not_scanned);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, body.as_bytes());
}

/// `curl -d "files[]=$(gzip -c customers.csv | base64 -w0)"` (PHP and Rails field names:
/// `files[]`, `user[export]`, `export.csv`): the README says a field's *value* made only
/// of base64 symbols and spaces is decoded, but `FieldBase64::feed` reads the key as part
/// of the candidate and passes the whole field over at the key's first `[` or `.`. The
/// same body with the key `data` is blocked.
#[tokio::test]
async fn raw_base64_under_a_bracketed_key_is_blocked() {
    let gz = support::bodies::gzip(customers(20).as_bytes());
    let b64 = support::bodies::base64(&gz);
    assert!(first_plus(&b64).is_some_and(|p| p < 64));
    let upstream = Upstream::start().await;
    let (proxy, _d) = shipped_proxy().await;
    let mut failed = Vec::new();
    for key in ["data", "files[]", "user[export]", "export.csv.gz"] {
        let body = format!("user=jdoe&{key}={b64}&submit=Send");
        let (o, _) = inspect(FORM_CT, None, &[body.as_bytes()]);
        let before = upstream.requests().len();
        let (s, seen) = send_form(&upstream, &proxy, "/upload", body.as_bytes()).await;
        if s != 403 || seen.len() != before {
            failed.push((key, s, distinct(&o, "email")));
        }
    }
    assert!(
        failed.is_empty(),
        "(key, status, distinct counted): {failed:?}"
    );
}

/// The query of a request target: `GET /collect?payload[csv]=<raw base64>`.
#[tokio::test]
async fn raw_base64_under_a_bracketed_query_key_is_blocked() {
    let gz = support::bodies::gzip(customers(20).as_bytes());
    let b64 = support::bodies::base64(&gz);
    let upstream = Upstream::start().await;
    let (proxy, _d) = shipped_proxy().await;
    let path = format!("/collect?v=1&payload[csv]={b64}");
    let (s, seen) = send(&upstream, &proxy, "GET", &path, &[], b"").await;
    assert_blocked(s, &seen, "raw base64 under a bracketed query key");
}

/// Memory: a form body under `Content-Encoding: gzip` (3.3 MiB sent, under `hold_bytes`,
/// within `max_ratio` and `max_decoded_bytes`) whose one field is 40 MiB of raw base64
/// with spaces: every 512 KiB piece `form_base64` decodes is put pending
/// (`Out::put_pending`) and waits for a separator after it (none comes until the field's
/// end), so the inspection holds the whole 30 MiB decoded field at once (up to about 190
/// MiB within the default 256 MiB `max_decoded_bytes`). The other pending content has a hard bound
/// (`encoding::FIELDS_HELD_HARD`, 4 MiB); this one has none.
#[test]
fn a_huge_raw_field_under_content_encoding_is_not_held_whole() {
    // Mostly `A` (zero bytes), a pseudo-random symbol now and then: compresses about 12x.
    const SYMS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 /";
    // Spaces (raw `+`) often enough that the text's own reader sees no run of 64.
    let mut text = b"f=Ab c".to_vec();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut run = 0;
    while text.len() < 40 << 20 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (x >> 33) as usize;
        let b = if run >= 60 || r % 32 == 0 {
            b' '
        } else if r % 61 == 1 {
            SYMS[(r >> 8) % 62]
        } else {
            b'A'
        };
        run = if b == b' ' { 0 } else { run + 1 };
        text.push(b);
    }
    let gz = support::bodies::gzip(&text);
    assert!(gz.len() < 4 << 20, "{}", gz.len());
    let pieces: Vec<&[u8]> = gz.chunks(64 << 10).collect();
    let (o, max_waiting) = inspect(FORM_CT, Some("gzip"), &pieces);
    eprintln!(
        "sent {} KiB, max waiting {} KiB",
        gz.len() >> 10,
        max_waiting >> 10
    );
    assert!(o.not_scanned.is_none(), "{:?}", o.not_scanned);
    assert!(
        max_waiting <= 8 << 20,
        "the inspection held {} MiB of decoded field at once ({} KiB sent)",
        max_waiting >> 20,
        gz.len() >> 10
    );
}
