//! Review of fcebd35 (session 17): a raw base64 form field's decoded pieces go pending
//! where the reader handed them on, not at the chunk's end. Each test here failed on the
//! code as reviewed (and on the code before it); each says what fixed it, or why it is
//! ignored.

mod support;

use egress_dlp::scan::Engine;
use support::Summary;
use support::Upstream;
use support::bodies::base64;
use support::bodies::noise;
use support::post_raw_form;

const FORM: &str = "application/x-www-form-urlencoded";

fn inspect(engine: &Engine, ct: &str, pieces: &[&[u8]]) -> Summary {
    support::summarize(engine, ct, pieces)
}

/// Binary whose base64 has `++++` every 60 symbols (each 45-byte block starts with
/// `fb ef be`): no run of 64 symbols between the spaces a form makes of them, so the
/// form's text reader decodes nothing in it and emits no byte that separates values.
fn binary_with_dense_plus(n: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(n + 45);
    let mut k = 0u32;
    while data.len() < n {
        data.extend_from_slice(&[0xFB, 0xEF, 0xBE]);
        for _ in 0..42 {
            data.push((k.wrapping_mul(97) % 251) as u8 ^ 0x5A);
            k += 1;
        }
    }
    data
}

/// FINDING 1. The commit lifts the documented limit "a raw base64 field in a streamed
/// body whose decoded bytes pass 512 KiB is not fully inspected", and its test passes,
/// but only because that test's binary has long `+`-free stretches: the form's text
/// reader decodes those runs and its decoded text (random bytes) soon holds a `,` or a
/// `"`, where the pending piece goes in. Here the base64 has a `+` every 60 symbols, so
/// nothing after the first piece separates values: the piece waits, the pump passes its
/// 64 KiB cap, calls `Inspection::flush_pending` with the stream's last byte a base64
/// symbol, and the benign 900 KiB upload is refused as not inspected
/// ("header fields or skippable frames over 512 KiB inside a value of a streamed body").
/// Not fixed: scanning such a piece at once where it was handed on (tried) cut values of
/// prose read as base64 (`review_s17b::a_card_in_prose_is_not_cut_by_an_at_once_piece`);
/// the README names this limit.
#[tokio::test]
#[ignore = "known limit (README): a streamed raw base64 field past 512 KiB decoded, with no separator, is not fully inspected"]
async fn a_benign_streamed_raw_field_over_512_kib_without_separators_goes_through() {
    let upstream = Upstream::start().await;
    let proxy = support::Proxy::start("limits: { hold_bytes: 64KiB }\n").await;
    let data = binary_with_dense_plus(900 << 10);
    let b64 = base64(&data);
    assert!(
        b64.split('+').all(|run| run.len() < 64),
        "the test needs no 64-symbol run between `+`s"
    );
    let body = format!("name=backup.bin&data={b64}");
    let reply = post_raw_form(&upstream, &proxy, body.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].complete);
    assert_eq!(seen[0].body.len(), body.len());
}

/// A form body `f=<raw base64 field>&b=c` whose field decodes to `123456789`, a few
/// bytes, 60 letters, then `lines` (text lines each ending `... SSN\n`). Its base64 has
/// `++++` (spaces in the form) after its first 12 symbols and none after: the form's text
/// reader decodes the rest as one long run, aligned (the same lines). The raw reader's
/// first piece (512 KiB, starting `123456789`) is handed on inside that run.
fn ssn_field_body(lines: usize) -> (Vec<u8>, usize) {
    let mut data = b"123456789".to_vec();
    data.extend_from_slice(&[0xFB, 0xEF, 0xBE]);
    data.extend_from_slice(b"abcdefghijklmnopqrABCDEFGHIJKLMNOPQRabcdefghijklmnopqrABCDEF");
    assert_eq!(data.len() % 3, 0);
    let line = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor SSN\n";
    for _ in 0..lines {
        data.extend_from_slice(line.as_bytes());
    }
    // The text's reader puts its decoded text in just before the field's end: no `SSN`
    // near the end of it.
    data.extend_from_slice(
        b"the end of the export, nothing more to see here, goodbye now\n"
            .repeat(2)
            .as_slice(),
    );
    let b64 = base64(&data);
    assert_eq!(b64.find('+'), Some(12), "only the early `++++`");
    assert_eq!(b64.matches('+').count(), 4, "only the early `++++`");
    let body = format!("f={b64}&b=c");
    // A cut 560 KiB of decoded bytes into the field: past the first piece's hand-over
    // (512 KiB decoded) and more than 48 KiB of decoded bytes before the run's end.
    let cut = 2 + (560usize << 10) * 4 / 3;
    assert!(body.len() - cut > (64 << 10) * 4 / 3);
    (body.into_bytes(), cut)
}

/// FINDING 2. Split invariance still fails when a piece is handed on inside a long run of
/// symbols. `FieldBase64::feed` reads a whole `symbol_prefix` before it checks for a piece,
/// so the place it returns is the end of the symbols *in this chunk*: fed whole, the piece
/// goes pending after the run's last symbol; cut inside the run (after the hand-over), it
/// goes pending at the chunk's end. The text's reader (`Sniffer::scan_runs`) puts a long
/// open run's decoded text in at the end of each input once 48 KiB wait, so cut, the piece
/// goes in right after the first line end of the second chunk's decoded text
/// (`... tempor SSN\n`): its `123456789` is then 5 bytes after `SSN` and `ssn-plain` counts
/// it (1, 1); fed whole it goes in after the `&` (after `... goodbye now`) and counts
/// nothing. Fixed: the reader takes symbols up to the one that completes a piece and no
/// further (`FieldBase64::symbols_to_piece`), and the piece is scanned right there.
#[test]
fn a_piece_handed_on_inside_a_long_run_goes_in_at_the_same_place_whatever_the_chunks() {
    let engine = support::fixture_engine();
    let (body, cut) = ssn_field_body(8000);
    let whole = inspect(&engine, FORM, &[&body]);
    let split = inspect(&engine, FORM, &[&body[..cut], &body[cut..]]);
    assert_eq!(whole, split, "cut at {cut} of {}", body.len());
}

/// `n` distinct customer addresses, one CSV line each.
fn customers(n: usize) -> String {
    support::customer_export(n)
}

/// A gzip of 600 KiB of noise and then `n` customers, base64 wrapped at 76 symbols with
/// `\n` (`base64 export.csv.gz > export.b64; curl --data-binary "data=@..."`-style), as a
/// raw form field after `name=export.csv.gz&data=`: its `+` read as spaces.
fn wrapped_gzip_field_body(n: usize) -> Vec<u8> {
    let mut plain = noise(600 << 10, 0x9E37_79B9_7F4A_7C15);
    plain.extend_from_slice(b"\n");
    plain.extend_from_slice(customers(n).as_bytes());
    let gz = support::bodies::gzip(&plain);
    assert!(
        gz.len() > 560 << 10,
        "the gzip must pass 512 KiB: {}",
        gz.len()
    );
    let b64 = base64(&gz);
    assert!(
        b64[..4096].contains('+'),
        "a `+` before the first piece ends"
    );
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    format!("name=export.csv.gz&data={}\n", lines.join("\n")).into_bytes()
}

/// FINDING 3 (decode level). A gzip over 512 KiB in a raw base64 field is read piece by
/// piece (README: "cut short (not fully inspected)"): its first piece's decompressor ends
/// early and records `Corrupt`. Now that the piece goes pending mid-field, the field's
/// next line break (wrapped base64) puts it in *while the field's own text is being fed*
/// (`FormNode::feed_field_text`), so that problem is taken for one the text's reader found
/// in the field's text, and `FormNode::end_field` forgives it (`reads_whole_field`). The
/// list in the second piece is never decompressed, and the request comes out fully
/// inspected with no finding. Not introduced by fcebd35: it fails on 72866af too (there
/// the piece went pending at the end of the input and the body's last `\n` put it in,
/// also inside the field's text); fcebd35 keeps it and makes it independent of the
/// chunks. Fixed: a problem recorded while pending content is scanned is that content's
/// (`Account::problem_in_pending`), never forgiven, and one recorded after the text's own
/// takes its place when that is forgiven (`Account::forgive`).
#[test]
fn a_gzip_over_512_kib_in_a_wrapped_raw_field_is_not_reported_fully_inspected() {
    let engine = support::fixture_engine();
    let body = wrapped_gzip_field_body(40);
    let (rules, reason) = inspect(&engine, FORM, &[&body]);
    let emails = rules
        .iter()
        .find(|(r, ..)| r == "email")
        .map_or(0, |&(_, _, d)| d);
    assert!(
        emails >= 40 || reason.is_some(),
        "the list was neither counted ({emails} distinct) nor the body reported as not \
         fully inspected ({reason:?}): {rules:?}"
    );
}

/// FINDING 3 (proxy level): the same body through the proxy with the fixture rules
/// (`email` blocks at 10) and default limits reaches the upstream whole, 40 customer
/// addresses inside.
#[tokio::test]
async fn a_gzipped_list_past_512_kib_in_a_wrapped_raw_field_never_completes_upstream() {
    let upstream = Upstream::start().await;
    let proxy = support::Proxy::start("").await;
    let body = wrapped_gzip_field_body(40);
    let reply = post_raw_form(&upstream, &proxy, &body).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let seen = upstream.requests();
    assert!(
        reply.status == 403 && seen.iter().all(|r| !r.complete),
        "status {}, upstream saw {} complete request(s): {}",
        reply.status,
        seen.iter().filter(|r| r.complete).count(),
        reply.text().chars().take(200).collect::<String>()
    );
}

/// FINDING 4 (not from fcebd35; the decode pipeline's other chunk-dependent place). Once a
/// form's text holds an escaped letter (`%u0061`, read by IIS), `UnescapeNode` reads it two
/// ways (`views::TwoViews`), and the text view goes in between the raw bytes at a "place".
/// `unescape_both` offers a place at the end of each of its pieces, and a piece ends at
/// the end of the input (and every 4 KiB from its start): where the chunks end. So a chunk
/// ending on a `,` 16 KiB or more past the escape puts the text view in there, between the
/// raw view's `123456789,` and the ` SSN` after it: the raw view's value loses its context
/// word and `ssn-plain` counts 1 instead of 2 (fed whole, the text view goes in at the end).
/// Fixed: a span of plain text is cut at its first place (`TwoViews::place_in`) before it
/// goes in, so a place falls where the content decides.
#[test]
fn the_text_view_of_escaped_letters_goes_in_at_the_same_place_whatever_the_chunks() {
    let engine = support::fixture_engine();
    let filler = "lorem ipsum dolor sit amet consectetur adipiscing elit ";
    let mut body = String::from("a=%u0061+");
    while body.len() < 20_000 {
        body.push_str(filler);
    }
    body.push_str("id+123456789,");
    let cut = body.len();
    body.push_str("+SSN+on+file+");
    body.push_str(&filler.repeat(20));
    body.push_str("&b=c");
    let body = body.into_bytes();
    let whole = inspect(&engine, FORM, &[&body]);
    let split = inspect(&engine, FORM, &[&body[..cut], &body[cut..]]);
    assert_eq!(whole, split, "cut at {cut}");
}
