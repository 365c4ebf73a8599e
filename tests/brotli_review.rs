//! From the review of session 13's attempt at brotli metadata blocks (75883ec, reverted):
//! it scanned a brotli body's compressed bytes as plain text too, in 256 KiB pieces. The
//! review showed a list hidden across the pieces' places (the sender chooses them), the
//! decoded text cut where the packets ended (a list lost), and benign bodies blocked (an
//! encoder stores what it cannot compress: raw JSON escapes glued to addresses made new
//! ones). Metadata blocks are a known gap again (README); these tests stay for the next
//! attempt: the two that pass guard the decoded text and benign bodies, the two ignored
//! ones hide a list in a metadata block as that review did.

mod support;

use std::time::Duration;

use egress_dlp::decode::{Inspection, Limits};
use egress_dlp::rules;
use egress_dlp::scan::Engine;
use support::{
    BrotliBlock, Proxy, Upstream, brotli_stream, fixture_rules, parse_reply, read_to_close,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn engine() -> Engine {
    Engine::new(&rules::load_dir(&fixture_rules()).unwrap())
}

const PIECE: usize = 256 << 10;

fn emails(e: &Engine, body: &[u8], cuts: &[usize]) -> (u64, Option<String>) {
    let limits = Limits::default();
    let mut i = Inspection::new(e, &limits, Some(b"text/plain"), Some(b"br"));
    let mut at = 0;
    for &cut in cuts {
        i.feed(&body[at..cut]);
        at = cut;
    }
    i.feed(&body[at..]);
    let o = i.finish();
    (
        o.findings.category_distinct("email"),
        o.not_scanned.map(|p| p.to_string()),
    )
}

/// Pieces cut at fixed offsets of the compressed stream, which the sender chooses: a
/// metadata block with one address across each of twelve piece boundaries hid the whole
/// list (every value, whatever the packets).
#[test]
#[ignore = "known gap (README): brotli metadata blocks are not scanned; run with --ignored"]
fn a_list_with_each_address_across_a_piece_boundary_is_found() {
    let e = engine();
    let n = 12;
    let body = list_across_pieces(n);
    for step in [body.len(), 65_536] {
        let cuts: Vec<usize> = (step..body.len()).step_by(step).collect();
        let (found, problem) = emails(&e, &body, &cuts);
        assert!(
            found >= 10 || problem.is_some(),
            "step {step}: {found} of {n} addresses found, and the body passes as inspected"
        );
    }
}

/// Each completed piece was scanned into the stream between two steps of the decoder, so
/// it cut the decoded text at a place that depends on the packets. An address whose
/// two halves are stored blocks on either side of a large metadata block (so never whole
/// in the compressed bytes) is found when the body comes whole, and lost when a packet
/// ends after its first half: twelve such addresses, twelve packets, the list passes.
#[test]
fn decoded_addresses_are_found_however_the_body_is_cut() {
    let e = engine();
    let n = 12;
    let firsts: Vec<String> = (0..n).map(|i| format!("row {i}: user{i}@acme-")).collect();
    let pad = vec![b' '; PIECE];
    let tail = b"corp.io\n".to_vec();
    let mut blocks = Vec::new();
    let mut cuts = Vec::new();
    for first in &firsts {
        blocks.push(BrotliBlock::Stored(first.as_bytes()));
        cuts.push(brotli_stream(&blocks).len() - 1);
        blocks.push(BrotliBlock::Metadata(&pad));
        blocks.push(BrotliBlock::Stored(&tail));
    }
    let body = brotli_stream(&blocks);
    let mut plain = Vec::new();
    brotli::BrotliDecompress(&mut &body[..], &mut plain).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&plain)
            .matches("@acme-corp.io")
            .count(),
        n
    );
    let whole = emails(&e, &body, &[]);
    let cut = emails(&e, &body, &cuts);
    assert_eq!(whole, (n as u64, None));
    assert_eq!(cut, whole, "a packet after each address's first half");
}

/// A brotli encoder stores what it cannot compress (a meta-block of the input as it is),
/// and the compressed bytes were scanned as plain text: the raw JSON, whose escapes glue
/// to the values after them (`\nuser1@...` reads as `nuser1@...`, another value), so a
/// body with six addresses counted eleven distinct ones and was blocked (threshold 10),
/// while the same body unencoded (or brotli-compressed) counts six.
#[test]
fn raw_escapes_in_stored_blocks_do_not_add_values() {
    let e = engine();
    let limits = Limits::default();
    let note: String = (0..6).map(|i| format!("user{i}@acme-corp.io\\n")).collect();
    let json = format!("{{\"note\":\"{note}\"}}");
    let count = |body: &[u8], coding: Option<&[u8]>| {
        let mut i = Inspection::new(&e, &limits, Some(b"application/json"), coding);
        i.feed(body);
        let o = i.finish();
        assert_eq!(o.not_scanned, None);
        o.findings.category_distinct("email")
    };
    assert_eq!(count(json.as_bytes(), None), 6);
    let compressed = support::bodies::brotli(json.as_bytes());
    assert_eq!(count(&compressed, Some(b"br")), 6);
    // What an encoder does with an upload it cannot compress: a multipart form with the
    // note as a JSON field and a photo (random bytes), brotli-encoded by the `brotli`
    // crate (quality 5) — it stores the meta-block, the raw JSON among the photo's bytes.
    let form = form_with_photo(&json);
    let ct = support::bodies::multipart_type();
    let count_form = |body: &[u8], coding: Option<&[u8]>| {
        let mut i = Inspection::new(&e, &limits, Some(ct.as_bytes()), coding);
        i.feed(body);
        let o = i.finish();
        assert_eq!(o.not_scanned, None);
        o.findings.category_distinct("email")
    };
    assert_eq!(count_form(&form, None), 6);
    let encoded = support::bodies::brotli(&form);
    assert!(encoded.windows(json.len()).any(|w| w == json.as_bytes()));
    assert_eq!(
        count_form(&encoded, Some(b"br")),
        6,
        "the form, brotli-encoded"
    );
    let stored = brotli_stream(&[BrotliBlock::Stored(json.as_bytes())]);
    assert_eq!(count(&stored, Some(b"br")), 6, "stored: {json}");
}

/// Sends `pieces` of a `Content-Encoding: br` text body (each its own write, then a
/// pause) and returns the reply's status.
async fn send_br(proxy: &Proxy, url: &str, pieces: &[&[u8]], pause_ms: u64) -> u16 {
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {url} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Encoding: br\r\n\
         Content-Length: {total}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for piece in pieces {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
    }
    let reply = tokio::time::timeout(Duration::from_secs(20), read_to_close(&mut s))
        .await
        .expect("an answer");
    parse_reply(&reply).status
}

fn leaked(upstream: &Upstream) -> usize {
    upstream
        .requests()
        .iter()
        .filter(|r| r.complete)
        .map(|r| r.body.len())
        .sum()
}

/// A metadata block of 3.25 MiB (held whole under the default `hold_bytes`) with each of
/// twelve addresses across one of the 256 KiB piece boundaries of the compressed bytes:
/// nothing was found, the request went upstream whole as fully inspected.
#[tokio::test]
#[ignore = "known gap (README): brotli metadata blocks are not scanned; run with --ignored"]
async fn a_metadata_list_across_piece_boundaries_is_blocked() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let body = list_across_pieces(12);
    let status = send_br(&proxy, &upstream.url("/meta"), &[&body], 0).await;
    assert_eq!(
        (status, leaked(&upstream)),
        (403, 0),
        "12 addresses in a metadata block went upstream in a complete request"
    );
}

/// Twelve addresses, each split between two stored blocks around a 256 KiB metadata
/// block (so never whole in the compressed bytes): the decoded text has all twelve, but
/// each completed piece was scanned into the stream between two decoder steps, at a
/// packet's end: sent with a pause after each first half, every address was cut and
/// nothing found (sent in one write, the proxy's own reads cut them as well).
#[tokio::test]
async fn a_list_cut_by_piece_scans_at_packet_ends_is_blocked() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let firsts: Vec<String> = (0..12).map(|i| format!("row {i}: user{i}@acme-")).collect();
    let pad = vec![b' '; PIECE];
    let tail = b"corp.io\n".to_vec();
    let mut blocks = Vec::new();
    let mut cuts = vec![0];
    for first in &firsts {
        blocks.push(BrotliBlock::Stored(first.as_bytes()));
        cuts.push(brotli_stream(&blocks).len() - 1);
        blocks.push(BrotliBlock::Metadata(&pad));
        blocks.push(BrotliBlock::Stored(&tail));
    }
    let body = brotli_stream(&blocks);
    cuts.push(body.len());
    // In one write (the proxy reads it in its own packets), and with a pause after each
    // address's first half.
    let whole = send_br(&proxy, &upstream.url("/whole"), &[&body], 0).await;
    let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &body[w[0]..w[1]]).collect();
    let paced = send_br(&proxy, &upstream.url("/paced"), &pieces, 100).await;
    assert_eq!(
        (whole, paced, leaked(&upstream)),
        (403, 403, 0),
        "(one write, paced, bytes upstream in complete requests)"
    );
}

/// A benign form (a JSON field naming six recipients, a photo the encoder cannot
/// compress), brotli-encoded by a stock encoder: it stores the meta-block, and the raw
/// JSON in the compressed bytes read `\nuser1@...` as five more addresses: 11, a 403.
/// Unencoded, the same form passes.
#[tokio::test]
async fn a_benign_form_brotli_encoded_is_not_blocked() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    let note: String = (0..6).map(|i| format!("user{i}@acme-corp.io\\n")).collect();
    let json = format!("{{\"to\":\"{note}\"}}");
    let form = form_with_photo(&json);
    let mut statuses = Vec::new();
    for (coding, body) in [
        (None, form.clone()),
        (Some("br"), support::bodies::brotli(&form)),
    ] {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        let coding = coding
            .map(|c| format!("Content-Encoding: {c}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: {}\r\n{coding}\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            upstream.url("/form"),
            support::bodies::multipart_type(),
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body).await.unwrap();
        statuses.push(parse_reply(&read_to_close(&mut s).await).status);
    }
    assert_eq!(statuses, [200, 200], "(plain, brotli-encoded)");
}

/// A multipart form of `json` as a field and a photo (100 KiB of random bytes, which a
/// brotli encoder cannot compress, so it stores the meta-block: the raw JSON among them).
fn form_with_photo(json: &str) -> Vec<u8> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let photo: Vec<u8> = (0..(100 << 10))
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    support::bodies::multipart(&[
        ("meta", None, Some("application/json"), "", json.as_bytes()),
        ("photo", Some("p.jpg"), Some("image/jpeg"), "", &photo),
    ])
}

/// A brotli stream of one metadata block holding `n` addresses, the `@` of the `i`-th on
/// the stream's offset `(i + 1) * PIECE` (where the scanned pieces of session 13's attempt
/// were cut).
fn list_across_pieces(n: usize) -> Vec<u8> {
    let build = |data: &[u8]| brotli_stream(&[BrotliBlock::Metadata(data)]);
    let len = (n + 1) * PIECE;
    // Where the metadata block's bytes start in the stream (its header's length depends
    // only on the block's length).
    let start = build(&vec![b' '; len]).len() - 1 - len;
    let mut data = vec![b' '; len];
    for i in 0..n {
        let email = format!("user{i}@acme-corp.io");
        let at = (i + 1) * PIECE - start - email.find('@').unwrap();
        data[at..at + email.len()].copy_from_slice(email.as_bytes());
    }
    build(&data)
}
