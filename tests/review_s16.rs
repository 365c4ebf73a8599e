//! Review of 2bbaaae: a JSON document in a form field or a JSON string read both ways
//! (`src/decode/unescape.rs` through `src/decode/views.rs`) from its first escaped letter,
//! digit or `_` on. Each test fails on the code as reviewed.

mod support;

use support::{Proxy, Upstream, fixture_engine as engine, inspected_distinct as distinct};

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

/// `FLUSH_HARD` in `src/decode/views.rs`.
const HARD: usize = 512 << 10;

/// Nine contacts (below the fixture's block threshold of ten), then about 4 KiB of note,
/// then one escaped letter (`\u0041`) in a JSON document sent as `payload=`. The second
/// view starts with the last 4 KiB (`TAIL`) of the text fed *before the chunk* holding the
/// first escaped letter, so where that tail begins depends on how the body was cut into
/// chunks; when it begins inside an address (`ustomer8@acme-corp.io`), that stub is a
/// tenth distinct value. Fed whole the body has 9 distinct addresses; cut before the
/// escape at some byte it has 10, and the proxy blocks a benign message depending on how
/// the client's TCP segments fell. The result must not depend on the chunking.
#[test]
fn the_tail_of_the_second_view_does_not_count_a_cut_address() {
    let engine = engine();
    let rows: Vec<String> = (0..9)
        .map(|i| format!("\"customer{i}@acme-corp.io\""))
        .collect();
    let json = format!(
        "{{\"rows\":[{}],\"note\":\"{}\",\"tag\":\"\\u0041BC\"}}",
        rows.join(","),
        "x".repeat(4000)
    );
    let body = format!("payload={}", support::bodies::form_encode(&json));
    let bytes = body.as_bytes();
    let whole = distinct(&engine, FORM, &[bytes], "email");
    assert_eq!(whole, 9, "fed whole");
    let esc = body.find("%5Cu0041").expect("the escape, form-encoded");
    let mut differ = Vec::new();
    for cut in esc.saturating_sub(1200)..=esc {
        let got = distinct(&engine, FORM, &[&bytes[..cut], &bytes[cut..]], "email");
        if got != whole {
            differ.push((cut, got));
        }
    }
    assert!(
        differ.is_empty(),
        "cut in two before the escape, the body counts otherwise than whole ({whole}) at {} \
         cuts, e.g. {:?}",
        differ.len(),
        &differ[..differ.len().min(5)]
    );
}

/// Six addresses, each with the first letter of its local part escaped
/// (`\u0063ustomer0@acme-corp.io` in a `payload=` JSON document). The raw view reads
/// `u0063ustomer0@acme-corp.io` (the backslash starts no address, the `u` does) and the
/// text view `customer0@acme-corp.io`: every address counts twice, 12 distinct values for
/// six people, and a payload under the block threshold is blocked. Before 2bbaaae the
/// same body counted 6. `distinct` must count one address once.
///
/// Kept as a known over-count: the as-written view must read what follows an escape
/// (`a@b.io\u0030c@d.io\u0030e@f.io…`, a list glued by escaped digits, is one value in
/// the decoded view and every address in the as-written one), and no JSON encoder writes
/// an ASCII letter as an escape, so only a hand-obfuscated body is counted high.
#[test]
#[ignore = "known (README): a value right after an escaped letter or digit also counts as written (u0063ustomer0@...)"]
fn an_address_with_an_escaped_first_letter_counts_once() {
    let engine = engine();
    let rows: Vec<String> = (0..6)
        .map(|i| format!("\"\\u0063ustomer{i}@acme-corp.io\""))
        .collect();
    let json = format!("{{\"rows\":[{}]}}", rows.join(","));
    let body = format!("payload={}", support::bodies::form_encode(&json));
    let got = distinct(&engine, FORM, &[body.as_bytes()], "email");
    assert_eq!(got, 6, "six addresses counted {got} times");
}

/// A JSON body holding a document as a string (`{"m":"…"}`, as an SNS message does) with
/// 12 addresses whose domain starts with an escaped letter (`customer1@\\u0061cme-corp.io`),
/// padded with `/` (a byte values hold, so neither a line end, a separator nor a space
/// offers a place) so that each escape sits 512 KiB after the last: the text view's
/// forced place (`FLUSH_HARD`) falls right after `customer1@` every time, the text view is
/// cut `customer1@` | `acme-corp.io`, and the raw view holds no address either. A server
/// that parses the inner document reads 12 addresses; none is counted. The README
/// promises the two views' places are "never inside a value the sender places there".
#[test]
fn the_hard_place_of_the_unescaped_view_does_not_cut_every_address() {
    let engine = engine();
    // The text the unescape node reads (the JSON layer's output), escapes at k * HARD.
    let mut text: Vec<u8> = b"{\"m\":\"".to_vec();
    for k in 1..=12 {
        let head = format!("customer{k}@");
        text.resize(k * HARD - head.len(), b'/');
        text.extend_from_slice(head.as_bytes());
        assert_eq!(text.len(), k * HARD);
        text.extend_from_slice(b"\\u0061cme-corp.io");
    }
    text.extend_from_slice(b"////\"}");
    // As sent: the inner document's backslashes escaped for the outer JSON string.
    let body: Vec<u8> = text
        .iter()
        .flat_map(|&b| {
            if b == b'\\' {
                vec![b'\\', b'\\']
            } else {
                vec![b]
            }
        })
        .collect();
    let got = distinct(&engine, Some("application/json"), &[&body], "email");
    assert!(
        got >= 10,
        "12 addresses in a JSON document inside a JSON string: {got} distinct emails"
    );
}

/// Default limits (`hold_bytes` 16 MiB, so a larger body streams; the pump holds back at
/// most 1 MiB while the decoders hold text not scanned). A form of a 16 MiB `notes` field,
/// then `payload=` with 12 addresses whose domain starts with an escaped letter, then
/// 490 KiB of `/` sent as `%2F`. Only the second view reads the addresses; its text has no
/// place before 512 KiB of form text (`FLUSH_HARD`: `/` is no line end, separator or
/// space), which is 1.5 MiB of body here, past the 1 MiB the pump holds back: the chunk
/// with the list goes upstream before the list is counted. The README promises the
/// views' places stay "within what a streamed body holds back" (the same attack through
/// quoted-printable HTML is `review_s14c::streamed_quoted_printable_html_text_lags_past_the_default_cap`,
/// which passes).
#[tokio::test]
async fn streamed_form_unescaped_view_lags_past_the_default_cap() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let mut first = b"notes=".to_vec();
    first.extend_from_slice(
        support::bodies::form_encode(&String::from_utf8(support::filler(16 << 20)).unwrap())
            .as_bytes(),
    );
    first.extend_from_slice(b"&payload=");
    let list: Vec<u8> = (0..12)
        .flat_map(|i| format!("customer{i}%40%5Cu0061cme-corp.io%2F").into_bytes())
        .collect();
    let after: Vec<u8> = b"%2F".repeat(490 << 10);
    support::assert_streamed_list_held_back(
        &proxy,
        &upstream,
        "/api/chat.postMessage",
        "application/x-www-form-urlencoded",
        [&first, &list, &after],
        "%5Cu0061cme-corp.io",
    )
    .await;
}
