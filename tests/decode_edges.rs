//! Decoder edge cases found in review, each failing before its fix: a multipart body cut
//! one byte before a part's closing delimiter, and a brotli bomb whose output came out only
//! when the stream was finished.

mod support;

use std::io::Write;

use egress_dlp::decode::{Inspection, Limits, Reason};
use egress_dlp::rules;
use egress_dlp::scan::Engine;
use support::fixture_rules;

fn engine() -> Engine {
    Engine::new(&rules::load_dir(&fixture_rules()).unwrap())
}

/// A zstd-compressed CSV upload in a multipart body, cut in two at every offset: the `\r`
/// of the closing `\r\n--boundary` is not part of the file, however the body is split (it
/// was fed to the part when the cut fell one byte before the delimiter's end, and the zstd
/// decoder read it as a broken frame: "corrupt", a 403).
#[test]
fn a_multipart_part_ends_at_its_delimiter_wherever_the_body_is_cut() {
    let e = engine();
    let limits = Limits::default();
    let csv = b"name,email\nalice,alice@acme-corp.io\nbob,bob@acme-corp.io\n".repeat(20);
    let mut body =
        b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"export.csv.zst\"\r\n\
Content-Type: application/octet-stream\r\n\r\n"
            .to_vec();
    body.extend_from_slice(&zstd::stream::encode_all(&csv[..], 3).unwrap());
    body.extend_from_slice(b"\r\n--XyZ--\r\n");
    let ct: &[u8] = b"multipart/form-data; boundary=XyZ";
    let whole = {
        let mut i = Inspection::new(&e, &limits, Some(ct), None);
        i.feed(&body);
        i.finish()
    };
    assert!(whole.not_scanned.is_none(), "{:?}", whole.not_scanned);
    assert_eq!(whole.findings.category_distinct("email"), 2);
    let mut bad = Vec::new();
    for cut in 0..=body.len() {
        let mut i = Inspection::new(&e, &limits, Some(ct), None);
        i.feed(&body[..cut]);
        i.feed(&body[cut..]);
        let o = i.finish();
        if let Some(p) = &o.not_scanned {
            bad.push((cut, p.to_string()));
        } else if o.findings.category_distinct("email") != 2 {
            bad.push((cut, "emails lost".to_owned()));
        }
    }
    assert!(
        bad.is_empty(),
        "{} bytes; cuts that differ: {bad:?}",
        body.len()
    );
}

/// 14 bytes of brotli that expand to 16 MiB: the decoder takes the whole input in its
/// first step, so nearly all of the output comes out when the stream is finished, and
/// that output counts against the expansion ratio too.
#[test]
fn a_brotli_bomb_drained_at_the_end_stops_at_the_ratio_limit() {
    let e = engine();
    let zeros = vec![0u8; 16 << 20];
    let mut bomb = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut bomb, 1 << 20, 11, 24);
        w.write_all(&zeros).unwrap();
    }
    assert!(bomb.len() < 64, "{} bytes", bomb.len());
    let limits = Limits::default();
    let mut i = Inspection::new(&e, &limits, None, Some(b"br"));
    i.feed(&bomb);
    let o = i.finish();
    assert_eq!(
        o.not_scanned.map(|p| p.reason),
        Some(Reason::Ratio),
        "{} compressed bytes, {} bytes scanned",
        bomb.len(),
        o.findings.bytes
    );
    // Stopped near the limit, not at the end of the 16 MiB.
    assert!(
        o.findings.bytes < 8 << 20,
        "{} bytes scanned",
        o.findings.bytes
    );
}

/// A base64 token as a path segment is decoded from its first symbol whatever the path
/// before it (`/` is a base64 symbol: the run began at the path's first `/`, and decoded
/// misaligned three times in four; found in review). In a Referer too; while a header value
/// that is not a URL keeps its `/`s inside the run (standard base64), as does a path token
/// that holds `/`s after its first 64 symbols.
#[test]
fn a_base64_token_in_a_path_segment_is_decoded_whatever_comes_before_it() {
    let e = engine();
    let limits = Limits::default();
    let emails: Vec<String> = (0..12).map(|i| format!("user{i}@acme-corp.io")).collect();
    let list = emails.join(",");
    let token = support::bodies::base64url(list.as_bytes());
    let found = |feed: &dyn Fn(&mut Inspection)| {
        let mut i = Inspection::new(&e, &limits, None, None);
        feed(&mut i);
        i.finish().findings.category_distinct("email")
    };
    for prefix in [
        "/",
        "/s/",
        "/ab/",
        "/abc/",
        "/share/",
        "/v1/export/",
        "/x/yy/zzz/",
    ] {
        let path = format!("{prefix}{token}?a=1");
        assert_eq!(found(&|i| i.feed_target(path.as_bytes())), 12, "{prefix}");
        let referer = format!("https://app.example{prefix}{token}");
        assert_eq!(
            found(&|i| i.feed_header(referer.as_bytes())),
            12,
            "{prefix}"
        );
    }
    // Standard base64 with `/`s in it, as a header value of its own: one run.
    // (`?` is 0x3F: at one of any three places in a row, its low six bits are a `/`.)
    let value = base64_std(format!("{list},???").as_bytes());
    assert!(value.contains('/'), "{value}");
    assert_eq!(found(&|i| i.feed_header(value.as_bytes())), 12, "{value}");
    // And as a path segment once a run is under way.
    if value.find('/').unwrap() >= 64 {
        let path = format!("/upload/x/{value}");
        assert_eq!(found(&|i| i.feed_target(path.as_bytes())), 12, "{value}");
    }
}

/// Decoding a token from its own start never costs what the run's start found: a
/// standard-alphabet token with an early `/` (a UTF-8 list, a gzip stream
/// `H4sIAAAAAAAA/`) after a path a multiple of four long, Latin-1 text whose first bytes
/// are not ASCII, a token after a long hex segment (the run opened on it was skipped),
/// and an unpadded form value followed by another field (it ran on into the next
/// field's name, which reached the zstd frame as junk: "corrupt"). Each found in review.
#[test]
fn base64_tokens_are_decoded_where_their_data_begins() {
    let e = engine();
    let limits = Limits::default();
    let emails: Vec<String> = (0..12).map(|i| format!("user{i}@acme-corp.io")).collect();
    let list = format!("Zoé,{}", emails.join(","));
    let utf8 = base64_std(list.as_bytes());
    assert!(utf8[..64].contains('/'), "{utf8}");
    let gz = base64_std(&support::bodies::gzip(emails.join(",").as_bytes()));
    assert!(gz.starts_with("H4sIAAAAAAAA/"), "{gz}");
    let target = |path: &str| {
        let mut i = Inspection::new(&e, &limits, None, None);
        i.feed_target(path.as_bytes());
        i.finish().findings.category_distinct("email")
    };
    let body = |ct: &[u8], body: &[u8]| {
        let mut i = Inspection::new(&e, &limits, Some(ct), None);
        i.feed(body);
        let o = i.finish();
        assert!(o.not_scanned.is_none(), "{:?}", o.not_scanned);
        o.findings.category_distinct("email")
    };
    for token in [&utf8, &gz] {
        for prefix in ["", "/v1/", "/upload/", "/api/v2/"] {
            assert_eq!(target(&format!("{prefix}{token}")), 12, "{prefix}{token}");
        }
    }
    let url = support::bodies::base64url(emails.join(",").as_bytes());
    let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    for prefix in [
        format!("/v1/blobs/{hex}/"),
        "/blog/this-is-a-rather-long-lowercase-article-slug-for-seo/".to_owned(),
    ] {
        assert_eq!(target(&format!("{prefix}{url}")), 12, "{prefix}");
    }
    let mut latin1 =
        b"R\xe9f. \xe9l\xe8ve \xe0 Zo\xe9 M\xfcller: zoe@acme-corp.io, bob@acme-corp.io, eve@acme-corp.io"
            .to_vec();
    while latin1.len() % 3 != 2 {
        latin1.push(b' ');
    }
    latin1.push(b'?');
    latin1.extend_from_slice(b" All fine here, nothing else to see in this note at all, thanks.\n");
    let text = format!("data: {}\n", base64_std(&latin1));
    assert_eq!(body(b"text/plain", text.as_bytes()), 3);
    let zst = support::bodies::base64url(&zstd::stream::encode_all(list.as_bytes(), 3).unwrap());
    let form = format!("file={zst}&name=report");
    assert_eq!(
        body(b"application/x-www-form-urlencoded", form.as_bytes()),
        12
    );
    let form = format!(
        "file={}&name=report",
        support::bodies::base64url(
            &zstd::stream::encode_all(format!("{list} ").as_bytes(), 3).unwrap()
        )
    );
    assert_eq!(
        body(b"application/x-www-form-urlencoded", form.as_bytes()),
        12
    );
}

fn base64_std(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A pool with a share per client: one client's inspections hold at most its share (here
/// one brotli window), another client's still find room, and the share comes back with
/// the window.
#[test]
fn one_client_holds_at_most_its_share_of_the_window_pool() {
    use egress_dlp::decode::WindowPool;
    let e = engine();
    let limits = Limits::default();
    let pool = WindowPool::shared(64 << 20, 0);
    let (a, b): (std::net::IpAddr, std::net::IpAddr) =
        ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let ct: &[u8] = b"multipart/form-data; boundary=XyZ";
    let head = b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n\
Content-Type: text/plain\r\nContent-Encoding: br\r\n\r\n";
    let mut part = head.to_vec();
    part.extend_from_slice(&support::bodies::brotli(b"nothing sensitive here\n"));
    let end = b"\r\n--XyZ--\r\n";
    let open = |who| {
        let mut i = Inspection::new(&e, &limits, Some(ct), None).with_windows(pool.for_client(who));
        i.feed(&part);
        i
    };
    // A share below one request's windows is raised to them (24 MiB): one brotli window.
    let mut first = open(a);
    assert_eq!(pool.held_by(a), 16 << 20);
    let mut second = open(a);
    second.feed(end);
    let refused = second.finish();
    assert_eq!(
        refused.not_scanned.expect("over the client's share").reason,
        Reason::DecoderMemory
    );
    let mut other = open(b);
    other.feed(end);
    assert!(other.finish().not_scanned.is_none());
    assert_eq!(pool.held_by(b), 0);
    first.feed(end);
    assert!(first.finish().not_scanned.is_none());
    assert_eq!((pool.held_by(a), pool.left()), (0, 64 << 20));
    let mut again = open(a);
    again.feed(end);
    assert!(again.finish().not_scanned.is_none(), "the share came back");
}

/// Decompressors opened inside the content take their windows from the pool the
/// inspections share (found in review: a multipart part's own `Content-Encoding: br` pinned
/// 16 MiB counted nowhere, up to four per part). While one upload's brotli part is open,
/// another's finds the pool short: not fully scanned (`decoder_memory`), its bytes still
/// scanned as they are; once the first is done the window is back. The request's own
/// `Content-Encoding` takes nothing from the pool (the proxy reserves it with the body).
#[test]
fn decompressors_inside_content_share_a_bounded_pool_of_window_memory() {
    use egress_dlp::decode::WindowPool;
    let e = engine();
    let limits = Limits::default();
    let pool = WindowPool::new(16 << 20);
    let ct: &[u8] = b"multipart/form-data; boundary=XyZ";
    let csv = b"name,email\nalice,alice@acme-corp.io\nbob,bob@acme-corp.io\n".repeat(20);
    let head = b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"export.csv\"\r\n\
Content-Type: text/csv\r\nContent-Encoding: br\r\n\r\n";
    let mut part = head.to_vec();
    part.extend_from_slice(&support::bodies::brotli(&csv));
    let end = b"\r\n--XyZ--\r\n";

    let mut first = Inspection::new(&e, &limits, Some(ct), None).with_windows(pool.clone());
    first.feed(&part);
    assert_eq!(pool.left(), 0, "the open part holds a brotli window");

    let mut second = Inspection::new(&e, &limits, Some(ct), None).with_windows(pool.clone());
    second.feed(&part);
    second.feed(end);
    let refused = second.finish();
    let problem = refused.not_scanned.expect("not fully scanned");
    assert_eq!(problem.reason, Reason::DecoderMemory);
    assert_eq!(problem.reason.as_str(), "decoder_memory");

    first.feed(end);
    let done = first.finish();
    assert!(done.not_scanned.is_none(), "{:?}", done.not_scanned);
    assert_eq!(done.findings.category_distinct("email"), 2);
    assert_eq!(pool.left(), 16 << 20, "the window is given back");

    let mut third = Inspection::new(&e, &limits, Some(ct), None).with_windows(pool.clone());
    third.feed(&part);
    third.feed(end);
    let o = third.finish();
    assert!(o.not_scanned.is_none(), "{:?}", o.not_scanned);
    assert_eq!(o.findings.category_distinct("email"), 2);

    // The request's own coding takes nothing from the pool.
    let mut own = Inspection::new(&e, &limits, Some(b"text/csv"), Some(b"br"))
        .with_windows(WindowPool::new(0));
    own.feed(&support::bodies::brotli(&csv));
    let o = own.finish();
    assert!(o.not_scanned.is_none(), "{:?}", o.not_scanned);
    assert_eq!(o.findings.category_distinct("email"), 2);
}

/// Review of f616bec: a binary upload that merely starts with the zstd magic
/// (`28 b5 2f fd`) but is not zstd is scanned as it is, with no problem recorded (the
/// guess "was not this format after all"). When the window pool is short at that moment
/// (other uploads hold it), `DecompressNode::new` records `decoder_memory` before the
/// guess is ever tested: the same ordinary upload becomes "not fully inspected" (a 403
/// under the default policy) only because others were decompressing.
#[test]
fn a_guessed_zstd_that_is_not_zstd_is_never_a_decoder_memory_problem() {
    use egress_dlp::decode::WindowPool;
    let e = engine();
    let limits = Limits::default();
    // The magic, then a frame header descriptor with its reserved bit set: not zstd.
    let mut body = vec![0x28, 0xb5, 0x2f, 0xfd, 0xff];
    body.extend_from_slice(&[0x5a; 4096]);
    let ct: &[u8] = b"application/octet-stream";
    let free = {
        let mut i = Inspection::new(&e, &limits, Some(ct), None);
        i.feed(&body);
        i.finish()
    };
    assert!(free.not_scanned.is_none(), "{:?}", free.not_scanned);
    let mut i = Inspection::new(&e, &limits, Some(ct), None).with_windows(WindowPool::new(0));
    i.feed(&body);
    let o = i.finish();
    assert!(
        o.not_scanned.is_none(),
        "not zstd, scanned whole, yet: {:?}",
        o.not_scanned
    );
}

/// Review of f616bec: a guessed zstd layer that turns out not to be zstd drops its decoder
/// (its bytes are scanned as they are) but keeps its 8 MiB ticket until the whole
/// inspection is dropped. A long streamed binary upload that starts with the magic thus
/// pins window memory it does not use for as long as it streams, and meanwhile another
/// client's real `.zst` upload finds the pool short: 403 `decoder_memory`.
#[test]
fn a_guessed_zstd_that_is_not_zstd_gives_its_window_back_at_once() {
    use egress_dlp::decode::WindowPool;
    let e = engine();
    let limits = Limits::default();
    let pool = WindowPool::new(8 << 20);
    let ct: &[u8] = b"application/octet-stream";
    let mut binary = vec![0x28, 0xb5, 0x2f, 0xfd, 0xff];
    binary.extend_from_slice(&[0x5a; 4096]);
    let mut first = Inspection::new(&e, &limits, Some(ct), None).with_windows(pool.clone());
    first.feed(&binary);
    // The guess failed: no decoder is open any more (more of the upload still to come).
    first.feed(&[0x5a; 4096]);
    let left = pool.left();

    let csv = b"name,email\nalice,alice@acme-corp.io\nbob,bob@acme-corp.io\n".repeat(20);
    let mut second = Inspection::new(&e, &limits, Some(ct), None).with_windows(pool.clone());
    second.feed(&support::bodies::zstd(&csv));
    let o = second.finish();
    drop(first);
    assert_eq!(left, 8 << 20, "a failed guess still holds its window");
    assert!(o.not_scanned.is_none(), "{:?}", o.not_scanned);
    assert_eq!(o.findings.category_distinct("email"), 2);
}

/// Review of 3d31ebd: the window check read only the descriptor's exponent. Exponent 13
/// with mantissa 7 is a 15 MiB window, which the decoder (at most 8 MiB) refuses: a frame
/// this proxy cannot decode. It is never a `decoder_memory` problem (no window is taken
/// for it), and never passed as fully inspected either (the next test): `unsupported`,
/// with or without room in the pool, and its bytes are still scanned as they are.
#[test]
fn a_zstd_window_over_8_mib_by_its_mantissa_is_never_a_decoder_memory_problem() {
    use egress_dlp::decode::WindowPool;
    let e = engine();
    let limits = Limits::default();
    let mut body = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, (13 << 3) | 7];
    body.extend_from_slice(b"alice@acme-corp.io x bob@acme-corp.io\n");
    let ct: &[u8] = b"application/octet-stream";
    for pool in [
        None,
        Some(WindowPool::new(0)),
        Some(WindowPool::new(64 << 20)),
    ] {
        let mut i = Inspection::new(&e, &limits, Some(ct), None);
        if let Some(pool) = pool {
            i = i.with_windows(pool);
        }
        i.feed(&body);
        let o = i.finish();
        assert_eq!(o.findings.category_distinct("email"), 2);
        let reason = o.not_scanned.map(|p| p.reason);
        assert_eq!(reason, Some(Reason::Unsupported));
    }
}

/// Review of 3d31ebd: a real zstd frame whose window is over 8 MiB (`zstd --long=24`, or
/// a dictionary id) is ruled "not a frame" by `zstd_header_ok` and its compressed bytes are
/// scanned as they are with no problem recorded: the upload passes as fully inspected,
/// its content never seen (declared as `Content-Encoding: zstd` the same frame is
/// `corrupt`).
#[test]
fn a_zstd_frame_the_decoder_refuses_is_not_passed_as_fully_inspected() {
    let e = engine();
    let limits = Limits::default();
    let csv = b"name,email\nalice,alice@acme-corp.io\nbob,bob@acme-corp.io\n".repeat(20);
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    enc.window_log(24).unwrap();
    enc.write_all(&csv).unwrap();
    let frame = enc.finish().unwrap();
    let ct: &[u8] = b"application/octet-stream";
    let mut i = Inspection::new(&e, &limits, Some(ct), None);
    i.feed(&frame);
    let o = i.finish();
    assert!(
        o.not_scanned.is_some() || o.findings.category_distinct("email") == 2,
        "a zstd frame neither decoded nor reported: {:?}, {} emails",
        o.not_scanned,
        o.findings.category_distinct("email")
    );
}

/// Review of 3d31ebd: `REQUEST_WINDOWS` is one brotli window, so a `.zst` file sent in a
/// part with `Content-Encoding: br` (16 MiB + 8 MiB) is refused for want of memory on an
/// idle proxy whose pool is nearly all free: `decoder_memory`, a 403. The same file in a
/// body whose own coding is `br` is decoded.
#[test]
fn a_zstd_file_in_a_brotli_part_is_decoded_when_the_pool_is_free() {
    use egress_dlp::decode::WindowPool;
    let e = engine();
    let limits = Limits::default();
    let csv = b"name,email\nalice,alice@acme-corp.io\nbob,bob@acme-corp.io\n".repeat(20);
    let file = support::bodies::brotli(&support::bodies::zstd(&csv));
    let mut body =
        b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"export.csv.zst\"\r\n\
Content-Type: application/octet-stream\r\nContent-Encoding: br\r\n\r\n"
            .to_vec();
    body.extend_from_slice(&file);
    body.extend_from_slice(b"\r\n--XyZ--\r\n");
    let ct: &[u8] = b"multipart/form-data; boundary=XyZ";
    let pool = WindowPool::new(64 << 20);
    let mut i = Inspection::new(&e, &limits, Some(ct), None).with_windows(pool.clone());
    i.feed(&body);
    let o = i.finish();
    assert_eq!(pool.left(), 64 << 20);
    assert!(o.not_scanned.is_none(), "{:?}", o.not_scanned);
    assert_eq!(o.findings.category_distinct("email"), 2);
}

/// A zip after other bytes (a self-extractor's stub, `cat stub.bin export.zip`), which
/// central-directory readers open: its deflated entries are read wherever the body is cut
/// (the signature split across chunks too), alone or after a decoy signature; a benign
/// one is fully inspected, and the content around it is still scanned. Found in a
/// red-team review: only content starting with `PK\x03\x04` was opened.
#[test]
fn a_zip_after_other_bytes_is_opened_wherever_the_body_is_cut() {
    use support::bodies::{ZipMethod, zip};
    let e = engine();
    let limits = Limits::default();
    let csv =
        b"name,email\nalice,alice@acme-corp.io\nbob,bob@acme-corp.io\ncarol,carol@acme-corp.io\n";
    let archive = zip(&[("export.csv", &csv[..])], ZipMethod::Deflated);
    let with = |prefix: &[u8], archive: &[u8], suffix: &[u8]| [prefix, archive, suffix].concat();
    let run = |body: &[u8], piece: usize| {
        let mut i = Inspection::new(&e, &limits, Some(b"application/octet-stream"), None);
        for c in body.chunks(piece) {
            i.feed(c);
        }
        i.finish()
    };
    let stub = b"MZ\x90\x00 stub that extracts the archive below\n".repeat(3);
    let decoy = b"PK\x03\x04 not a header at all\n";
    for body in [
        with(&stub, &archive, b""),
        with(
            &[&stub[..], decoy].concat(),
            &archive,
            b"\ntrailing bytes\n",
        ),
    ] {
        for piece in [1, 3, 7, 64, body.len()] {
            let o = run(&body, piece);
            assert!(o.not_scanned.is_none(), "{piece}: {:?}", o.not_scanned);
            assert_eq!(o.findings.category_distinct("email"), 3, "piece {piece}");
        }
    }
    // Two archives, one after the other with bytes between (files in a tar): both read.
    let other = zip(
        &[("more.csv", &b"dave,dave@acme-corp.io\n"[..])],
        ZipMethod::DeflatedWithDescriptor,
    );
    let body = [&stub[..], &archive, b"\0\0padding\0\0", &other, b"\0\0"].concat();
    let o = run(&body, 5);
    assert!(o.not_scanned.is_none(), "{:?}", o.not_scanned);
    assert_eq!(o.findings.category_distinct("email"), 4);
    // A benign one passes as fully inspected.
    let benign = zip(&[("notes.txt", &b"nothing here\n"[..])], ZipMethod::Stored);
    let o = run(&with(&stub, &benign, b""), 2);
    assert!(o.not_scanned.is_none(), "{:?}", o.not_scanned);
    assert_eq!(o.findings.category_distinct("email"), 0);
}

/// A zip after other bytes whose local header says "stored" over deflated data (its
/// directory says "deflated", as Python's zipfile reads it) is not passed as inspected;
/// nor is one cut short. Offsets counted from the content's first byte (as `zip -A`
/// writes a self-extractor) are accepted as a reader accepts them.
#[test]
fn a_zip_after_other_bytes_is_checked_against_its_directory() {
    use support::bodies::{ZipMethod, zip};
    let e = engine();
    let limits = Limits::default();
    let csv = b"alice,alice@acme-corp.io\nbob,bob@acme-corp.io\n";
    let run = |body: &[u8]| {
        let mut i = Inspection::new(&e, &limits, Some(b"application/octet-stream"), None);
        for c in body.chunks(9) {
            i.feed(c);
        }
        i.finish()
    };
    let stub = b"MZ stub\n".to_vec();
    let honest = zip(&[("a.csv", &csv[..])], ZipMethod::Deflated);
    // The local header's method (offset 8) made "stored", sizes made equal.
    let mut lying = honest.clone();
    lying[8] = 0;
    let csize = lying[18..22].to_vec();
    lying[22..26].copy_from_slice(&csize);
    let o = run(&[&stub[..], &lying].concat());
    assert_eq!(
        o.not_scanned.map(|p| p.reason),
        Some(Reason::Corrupt),
        "a lying local header passed"
    );
    let cut = &honest[..honest.len() - 10];
    let o = run(&[&stub[..], cut].concat());
    assert_eq!(o.not_scanned.map(|p| p.reason), Some(Reason::Corrupt));
    // `zip -A`: every offset counts the stub too.
    let mut adjusted = honest.clone();
    let shift = stub.len() as u32;
    let eocd = adjusted.len() - 22;
    let cd = u32::from_le_bytes(adjusted[eocd + 16..eocd + 20].try_into().unwrap()) as usize;
    for (at, base) in [(eocd + 16, 0usize), (cd + 42, 0)] {
        let v = u32::from_le_bytes(adjusted[at + base..at + base + 4].try_into().unwrap());
        adjusted[at..at + 4].copy_from_slice(&(v + shift).to_le_bytes());
    }
    let o = run(&[&stub[..], &adjusted].concat());
    assert!(o.not_scanned.is_none(), "{:?}", o.not_scanned);
    assert_eq!(o.findings.category_distinct("email"), 2);
}

// ---------------------------------------------------------------- zip central directory (review)

fn le16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn le32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn le64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn zip_crc(data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(data);
    c.sum()
}

/// A local file header (30 bytes, name, extra).
fn local_header(
    method: u16,
    crc: u32,
    csize: u32,
    usize_: u32,
    name: &[u8],
    extra: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    le32(&mut v, 0x0403_4b50);
    le16(&mut v, 20);
    le16(&mut v, 0);
    le16(&mut v, method);
    le32(&mut v, 0x0021_0000);
    le32(&mut v, crc);
    le32(&mut v, csize);
    le32(&mut v, usize_);
    le16(&mut v, name.len() as u16);
    le16(&mut v, extra.len() as u16);
    v.extend_from_slice(name);
    v.extend_from_slice(extra);
    v
}

/// Python's `zipfile` (and other readers that take the zip64 end record's values as they
/// are) reads the central directory's place from the zip64 end record whenever one is
/// present, even when the classic end record's values are not saturated; the proxy
/// checked only the classic values. Here the zip64 record's directory offset is off by
/// `D`: every local header offset is then read `D` bytes further, which lands on a second
/// local header hidden in the first one's extra field (never scanned). `zipfile` extracts
/// the twelve addresses from it; the proxy reads a benign entry and says "fully
/// inspected".
#[test]
fn a_zip64_end_record_disagreeing_with_the_classic_one_is_not_fully_inspected() {
    let e = engine();
    let limits = Limits::default();
    let secret: String = (0..12)
        .map(|i| format!("Customer {i}, email customer{i}@acme-corp.io\n"))
        .collect();
    let name = b"a.txt";
    let hidden_data = support::bodies::deflate(secret.as_bytes());
    let crc = zip_crc(secret.as_bytes());
    let mut hidden = local_header(
        8,
        crc,
        hidden_data.len() as u32,
        secret.len() as u32,
        name,
        b"",
    );
    hidden.extend_from_slice(&hidden_data);
    let mut extra = Vec::new();
    le16(&mut extra, 0xCAFE);
    le16(&mut extra, hidden.len() as u16);
    extra.extend_from_slice(&hidden);
    let benign = b"nothing here\n";
    let mut benign_data = support::bodies::deflate(benign);
    let csize = benign_data.len().max(hidden_data.len());
    benign_data.resize(csize, 0);
    let mut zip = local_header(
        8,
        zip_crc(benign),
        csize as u32,
        benign.len() as u32,
        name,
        &extra,
    );
    zip.extend_from_slice(&benign_data);
    let d = (30 + name.len() + 4) as u64;
    let cd_off = zip.len() as u64;
    let mut cd = Vec::new();
    le32(&mut cd, 0x0201_4b50);
    le16(&mut cd, 20);
    le16(&mut cd, 20);
    le16(&mut cd, 0);
    le16(&mut cd, 8);
    le32(&mut cd, 0x0021_0000);
    le32(&mut cd, crc);
    le32(&mut cd, csize as u32);
    le32(&mut cd, secret.len() as u32);
    le16(&mut cd, name.len() as u16);
    cd.extend_from_slice(&[0; 12]);
    le32(&mut cd, 0);
    cd.extend_from_slice(name);
    zip.extend_from_slice(&cd);
    // Zip64 end record: same count and size, the directory "at" cd_off - d.
    le32(&mut zip, 0x0606_4b50);
    le64(&mut zip, 44);
    le16(&mut zip, 45);
    le16(&mut zip, 45);
    le32(&mut zip, 0);
    le32(&mut zip, 0);
    le64(&mut zip, 1);
    le64(&mut zip, 1);
    le64(&mut zip, cd.len() as u64);
    le64(&mut zip, cd_off - d);
    // Locator.
    le32(&mut zip, 0x0706_4b50);
    le32(&mut zip, 0);
    le64(&mut zip, cd_off + cd.len() as u64);
    le32(&mut zip, 1);
    // Classic end record, all true.
    le32(&mut zip, 0x0605_4b50);
    le32(&mut zip, 0);
    le16(&mut zip, 1);
    le16(&mut zip, 1);
    le32(&mut zip, cd.len() as u32);
    le32(&mut zip, cd_off as u32);
    le16(&mut zip, 0);
    let mut i = Inspection::new(&e, &limits, Some(b"application/zip"), None);
    i.feed(&zip);
    let o = i.finish();
    assert!(
        o.not_scanned.is_some() || o.findings.category_distinct("email") > 0,
        "python's zipfile extracts 12 addresses; the proxy found {} and says fully inspected",
        o.findings.category_distinct("email")
    );
}

/// A zip64 end record whose size field is near `u64::MAX`: the check of the central
/// directory must say corrupt, not overflow (`pos + 4` after a saturating add).
#[test]
fn a_zip64_end_record_with_a_huge_size_is_corrupt_not_a_panic() {
    let e = engine();
    let limits = Limits::default();
    let mut zip =
        support::bodies::zip(&[("a.txt", b"hello\n")], support::bodies::ZipMethod::Stored);
    // Insert a zip64 end record before the classic end record (the last 22 bytes).
    let eocd = zip.split_off(zip.len() - 22);
    le32(&mut zip, 0x0606_4b50);
    le64(&mut zip, u64::MAX - 4);
    zip.extend_from_slice(&[0; 44]);
    zip.extend_from_slice(&eocd);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut i = Inspection::new(&e, &limits, Some(b"application/zip"), None);
        i.feed(&zip);
        i.finish().not_scanned.map(|p| p.reason)
    }));
    assert_eq!(r.ok(), Some(Some(Reason::Corrupt)));
}

/// A central directory record (46 bytes, name, comment).
#[allow(clippy::too_many_arguments)]
fn central_record(
    method: u16,
    crc: u32,
    csize: u32,
    usize_: u32,
    name: &[u8],
    comment_len: u16,
    comment: &[u8],
    offset: u32,
) -> Vec<u8> {
    let mut v = Vec::new();
    le32(&mut v, 0x0201_4b50);
    le16(&mut v, 20);
    le16(&mut v, 20);
    le16(&mut v, 0);
    le16(&mut v, method);
    le32(&mut v, 0x0021_0000);
    le32(&mut v, crc);
    le32(&mut v, csize);
    le32(&mut v, usize_);
    le16(&mut v, name.len() as u16);
    le16(&mut v, 0);
    le16(&mut v, comment_len);
    v.extend_from_slice(&[0; 8]);
    le32(&mut v, offset);
    v.extend_from_slice(name);
    v.extend_from_slice(comment);
    v
}

/// A zip64 end record with no locator after it (or one a reader cannot find): the proxy
/// took the record as part of the end, Python's `zipfile` (no locator 20 bytes before
/// the end record) goes by the classic end record alone and puts the directory
/// `size` bytes before it, that is 56 bytes later than the proxy: it reads a directory
/// record hidden in the first record's comment, whose offset (plus the 56 bytes it then
/// adds to every offset) points at a local header hidden in an extra field.
#[test]
fn a_zip64_end_record_without_its_locator_is_not_fully_inspected() {
    let e = engine();
    let limits = Limits::default();
    let secret: String = (0..12)
        .map(|i| format!("Customer {i}, email customer{i}@acme-corp.io\n"))
        .collect();
    let name = b"a.txt";
    let hidden_data = support::bodies::deflate(secret.as_bytes());
    let crc = zip_crc(secret.as_bytes());
    let mut hidden = local_header(
        8,
        crc,
        hidden_data.len() as u32,
        secret.len() as u32,
        name,
        b"",
    );
    hidden.extend_from_slice(&hidden_data);
    let mut extra = Vec::new();
    le16(&mut extra, 0xCAFE);
    le16(&mut extra, (30 + hidden.len()) as u16);
    extra.extend_from_slice(&[b'F'; 30]);
    extra.extend_from_slice(&hidden);
    let hidden_at = (30 + name.len() + 4 + 30) as u32;
    let benign = b"nothing here\n";
    let benign_data = support::bodies::deflate(benign);
    let crc_b = zip_crc(benign);
    let mut zip = local_header(
        8,
        crc_b,
        benign_data.len() as u32,
        benign.len() as u32,
        name,
        &extra,
    );
    zip.extend_from_slice(&benign_data);
    let cd_off = zip.len() as u32;
    // Python starts the directory at the end record less its size: 56 bytes (the zip64
    // record) into the first record, where the hidden record begins; its comment runs on
    // to the end record.
    let (shift, comment_len) = (56u32, 300u16);
    let hidden_record = central_record(
        8,
        crc,
        hidden_data.len() as u32,
        secret.len() as u32,
        name,
        comment_len,
        b"",
        hidden_at - shift,
    );
    let mut comment = vec![b'x'; shift as usize - 46 - name.len()];
    comment.extend_from_slice(&hidden_record);
    comment.resize(usize::from(comment_len), b' ');
    let cd = central_record(
        8,
        crc_b,
        benign_data.len() as u32,
        benign.len() as u32,
        name,
        comment_len,
        &comment,
        0,
    );
    zip.extend_from_slice(&cd);
    le32(&mut zip, 0x0606_4b50);
    le64(&mut zip, 44);
    le16(&mut zip, 45);
    le16(&mut zip, 45);
    le32(&mut zip, 0);
    le32(&mut zip, 0);
    le64(&mut zip, 1);
    le64(&mut zip, 1);
    le64(&mut zip, cd.len() as u64);
    le64(&mut zip, u64::from(cd_off));
    le32(&mut zip, 0x0605_4b50);
    le32(&mut zip, 0);
    le16(&mut zip, 1);
    le16(&mut zip, 1);
    le32(&mut zip, cd.len() as u32);
    le32(&mut zip, cd_off);
    le16(&mut zip, 0);
    let mut i = Inspection::new(&e, &limits, Some(b"application/zip"), None);
    i.feed(&zip);
    let o = i.finish();
    assert!(
        o.not_scanned.is_some() || o.findings.category_distinct("email") > 0,
        "python's zipfile extracts 12 addresses; the proxy found {} and says fully inspected",
        o.findings.category_distinct("email")
    );
}

/// `boundary*=` (RFC 2231) is the boundary too for Werkzeug (Flask), which takes the last
/// of `boundary=AAA; boundary*=utf-8''BBB` (and `boundary*0=`/`boundary*1=` continue it):
/// the proxy saw one boundary, AAA, and read the BBB body as the text of one AAA part, its
/// gzip file never opened; Flask reads the file under BBB. Like `boundary` given twice,
/// this must not pass as fully inspected.
#[test]
fn an_extended_boundary_parameter_counts_as_a_second_boundary() {
    let e = engine();
    let limits = Limits::default();
    let emails: String = (0..12)
        .map(|i| format!("Customer {i}, email customer{i}@acme-corp.io\n"))
        .collect();
    let mut inner =
        b"--BBB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"export.csv.gz\"\r\n\
Content-Type: application/gzip\r\n\r\n"
            .to_vec();
    inner.extend_from_slice(&support::bodies::gzip(emails.as_bytes()));
    inner.extend_from_slice(b"\r\n--BBB--\r\n");
    let mut body = b"--AAA\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n".to_vec();
    body.extend_from_slice(&inner);
    body.extend_from_slice(b"\r\n--AAA--\r\n");
    for ct in [
        "multipart/form-data; boundary=AAA; boundary*=utf-8''BBB",
        "multipart/form-data; boundary=AAA; boundary*0=B; boundary*1=BB",
    ] {
        let mut i = Inspection::new(&e, &limits, Some(ct.as_bytes()), None);
        i.feed(&body);
        let o = i.finish();
        assert!(
            o.not_scanned.is_some() || o.findings.category_distinct("email") >= 10,
            "{ct}: Werkzeug reads 12 addresses under BBB; the proxy found {} and says fully inspected",
            o.findings.category_distinct("email")
        );
    }
}

/// A body that is one part (`note`) under the boundary `outer`, whose content is a whole
/// multipart body under `inner` with a gzip file of twelve addresses.
fn multipart_in_a_part(outer: &[u8], inner: &[u8]) -> Vec<u8> {
    let emails: String = (0..12)
        .map(|i| format!("Customer {i}, email customer{i}@acme-corp.io\n"))
        .collect();
    let mut body = [
        b"--",
        outer,
        b"\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n--",
        inner,
    ]
    .concat();
    body.extend_from_slice(
        b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"export.csv.gz\"\r\n\
Content-Type: application/gzip\r\n\r\n",
    );
    body.extend_from_slice(&support::bodies::gzip(emails.as_bytes()));
    body.extend_from_slice(&[b"\r\n--", inner, b"--\r\n\r\n--", outer, b"--\r\n"].concat());
    body
}

/// Werkzeug (Flask) reads an unquoted parameter value as a token, up to the first byte
/// that is not a token character (`boundary=AAA x`, `AAA/x`, `AAA:x`, `AAA=x` ... are
/// `AAA` to it), and turns `%22` in a quoted one into `"`: the proxy took the whole value
/// up to `;` (and `%22` as it is), split the body by a boundary Flask does not, and passed
/// as fully inspected a gzip file Flask reads as a part of its own.
#[test]
fn a_boundary_werkzeug_reads_otherwise_is_not_fully_inspected() {
    let e = engine();
    let limits = Limits::default();
    let mut passed = Vec::new();
    for (ct, proxy_reads, werkzeug_reads) in [
        ("multipart/form-data; boundary=AAA x", "AAA x", "AAA"),
        ("multipart/form-data; boundary=AAA\tx", "AAA\tx", "AAA"),
        ("multipart/form-data; boundary=AAA/x", "AAA/x", "AAA"),
        ("multipart/form-data; boundary=AAA:x", "AAA:x", "AAA"),
        ("multipart/form-data; boundary=AAA=x", "AAA=x", "AAA"),
        ("multipart/form-data; boundary=AAA?x", "AAA?x", "AAA"),
        ("multipart/form-data; boundary=\"A%22B\"", "A%22B", "A\"B"),
    ] {
        let body = multipart_in_a_part(proxy_reads.as_bytes(), werkzeug_reads.as_bytes());
        let mut i = Inspection::new(&e, &limits, Some(ct.as_bytes()), None);
        i.feed(&body);
        let o = i.finish();
        if o.not_scanned.is_none() && o.findings.category_distinct("email") < 10 {
            passed.push(ct);
        }
    }
    assert!(
        passed.is_empty(),
        "Werkzeug reads 12 addresses in a part of its own; passed as fully inspected: {passed:?}"
    );
}

/// The decoder of an entry is chosen by its local header's name (`.xml`: its text, with
/// entities decoded), while Java's `ZipFile`, .NET and `unzip` name the entry as the
/// central directory does. A local `notes.txt` listed as `sharedStrings.xml` had its XML
/// scanned as plain text (`customer0&#64;acme-corp.io` is no address as it is); Java reads
/// `sharedStrings.xml` and an XML parser gives the twelve addresses. The directory's name
/// must match the local header's.
#[test]
fn a_central_directory_name_other_than_the_local_one_is_not_fully_inspected() {
    let e = engine();
    let limits = Limits::default();
    let xml: String = std::iter::once("<?xml version=\"1.0\"?><sst>".to_owned())
        .chain((0..12).map(|i| format!("<si><t>customer{i}&#64;acme-corp.io</t></si>")))
        .chain(std::iter::once("</sst>".to_owned()))
        .collect();
    let data = support::bodies::deflate(xml.as_bytes());
    let crc = zip_crc(xml.as_bytes());
    let (csize, usize_) = (data.len() as u32, xml.len() as u32);
    let mut zip = local_header(8, crc, csize, usize_, b"notes.txt", b"");
    zip.extend_from_slice(&data);
    let cd = central_record(8, crc, csize, usize_, b"sharedStrings.xml", 0, b"", 0);
    let cd_off = zip.len() as u32;
    zip.extend_from_slice(&cd);
    le32(&mut zip, 0x0605_4b50);
    le32(&mut zip, 0);
    le16(&mut zip, 1);
    le16(&mut zip, 1);
    le32(&mut zip, cd.len() as u32);
    le32(&mut zip, cd_off);
    le16(&mut zip, 0);
    let mut i = Inspection::new(&e, &limits, Some(b"application/zip"), None);
    i.feed(&zip);
    let o = i.finish();
    assert!(
        o.not_scanned.is_some() || o.findings.category_distinct("email") >= 10,
        "Java's ZipFile reads sharedStrings.xml; the proxy found {} addresses and says fully inspected",
        o.findings.category_distinct("email")
    );
}

/// Pre-existing (not from the reviewed commits): Info-ZIP writing to a pipe
/// (`zip -r - dir | curl --data-binary @- ...`) stores an empty file with its sizes in a
/// data descriptor (flag 8, sizes 0): the descriptor follows the header at once. That
/// ordinary archive was refused as "a stored entry of unknown size".
#[test]
fn an_empty_stored_entry_with_a_data_descriptor_is_read() {
    let e = engine();
    let limits = Limits::default();
    let mut zip = local_header(0, 0, 0, 0, b"e.txt", b"");
    zip[6] = 8; // flags: sizes in a data descriptor
    le32(&mut zip, 0x0807_4b50);
    le32(&mut zip, 0);
    le32(&mut zip, 0);
    le32(&mut zip, 0);
    let text = b"hello\n";
    let second = zip.len() as u32;
    zip.extend_from_slice(&local_header(0, zip_crc(text), 6, 6, b"a.txt", b""));
    zip.extend_from_slice(text);
    let mut cd = central_record(0, 0, 0, 0, b"e.txt", 0, b"", 0);
    cd[8] = 8;
    cd.extend_from_slice(&central_record(
        0,
        zip_crc(text),
        6,
        6,
        b"a.txt",
        0,
        b"",
        second,
    ));
    let cd_off = zip.len() as u32;
    zip.extend_from_slice(&cd);
    le32(&mut zip, 0x0605_4b50);
    le32(&mut zip, 0);
    le16(&mut zip, 2);
    le16(&mut zip, 2);
    le32(&mut zip, cd.len() as u32);
    le32(&mut zip, cd_off);
    le16(&mut zip, 0);
    let mut i = Inspection::new(&e, &limits, Some(b"application/zip"), None);
    i.feed(&zip);
    let o = i.finish();
    assert!(o.not_scanned.is_none(), "{:?}", o.not_scanned);
}

/// Pre-existing (not from the reviewed commits): a zip is opened only when the content
/// starts with its magic. With anything before it (a self-extractor's stub, a shell
/// script, four zero bytes) the archive is scanned as raw text, its deflated entries never
/// inflated, and passed as fully inspected; Python's `zipfile`, Java's `ZipFile` and
/// `unzip` all find the central directory from the end and read the entries (the offsets
/// are taken relative to where the directory is found).
#[test]
fn a_zip_after_a_prefix_is_not_passed_as_fully_inspected() {
    let e = engine();
    let limits = Limits::default();
    let emails: String = (0..12)
        .map(|i| format!("Customer {i}, email customer{i}@acme-corp.io\n"))
        .collect();
    let zip = support::bodies::zip(
        &[("customers.csv", emails.as_bytes())],
        support::bodies::ZipMethod::Deflated,
    );
    for prefix in [&b"#!/bin/sh\nexit 0\n"[..], &[0u8; 4][..]] {
        let body = [prefix, &zip[..]].concat();
        let mut i = Inspection::new(&e, &limits, Some(b"application/zip"), None);
        i.feed(&body);
        let o = i.finish();
        assert!(
            o.not_scanned.is_some() || o.findings.category_distinct("email") >= 10,
            "prefix {prefix:?}: the proxy found {} addresses and says fully inspected",
            o.findings.category_distinct("email")
        );
    }
}

/// PHP (main/rfc1867.c, to this day) takes as the boundary what follows the first `=`
/// after the first `boundary` anywhere in the Content-Type (`strstr`), up to `,` or `;`:
/// in `PHPboundaryPHP=BBB; boundary=AAA` (a known WAF bypass) that is BBB, while the proxy
/// splits by AAA, reads the BBB body as the text of one part and passes its gzip file as
/// fully inspected.
#[test]
fn a_boundary_php_reads_otherwise_is_not_fully_inspected() {
    let e = engine();
    let limits = Limits::default();
    let mut passed = Vec::new();
    for ct in [
        "multipart/form-data; PHPboundaryPHP=BBB; boundary=AAA",
        "multipart/form-data; xboundary=BBB; boundary=AAA",
        "multipart/form-data; x-boundary-x=BBB; boundary=AAA",
    ] {
        let body = multipart_in_a_part(b"AAA", b"BBB");
        let mut i = Inspection::new(&e, &limits, Some(ct.as_bytes()), None);
        i.feed(&body);
        let o = i.finish();
        if o.not_scanned.is_none() && o.findings.category_distinct("email") < 10 {
            passed.push(ct);
        }
    }
    assert!(
        passed.is_empty(),
        "PHP reads 12 addresses in a part of its own; passed as fully inspected: {passed:?}"
    );
}

/// An embedded zip's end record comment (and its directory records' comments) never
/// reach the scan: the caller gives the archive's bytes to the zip reader only, and
/// `end_central` leaves them to the caller. A list in the comment of a zip after a stub
/// passes as fully inspected; the same zip alone is caught.
#[test]
fn an_embedded_zips_comment_is_scanned() {
    use support::bodies::{ZipMethod, zip};
    let e = engine();
    let limits = Limits::default();
    let comment = b"alice,alice@acme-corp.io\nbob,bob@acme-corp.io\n";
    let mut archive = zip(
        &[("notes.txt", &b"nothing here\n"[..])],
        ZipMethod::Deflated,
    );
    let eocd = archive.len() - 22;
    archive[eocd + 20..eocd + 22].copy_from_slice(&(comment.len() as u16).to_le_bytes());
    archive.extend_from_slice(comment);
    for body in [archive.clone(), [&b"MZ stub\n"[..], &archive].concat()] {
        let mut i = Inspection::new(&e, &limits, Some(b"application/octet-stream"), None);
        i.feed(&body);
        let o = i.finish();
        assert!(
            o.not_scanned.is_some() || o.findings.category_distinct("email") == 2,
            "a list in the comment passed (body of {} bytes): {:?}",
            body.len(),
            o.not_scanned
        );
    }
}

/// An embedded zip that stops on a problem hands the bytes after the stop back to the
/// content's scan, but only those of the last input: what the reader held from earlier
/// inputs (16 bytes waiting for an empty stored entry's descriptor) is never scanned, so
/// the findings depend on the chunks.
#[test]
fn an_embedded_zip_that_stops_hands_back_every_byte_wherever_the_body_is_cut() {
    let e = engine();
    let limits = Limits::default();
    // A stored entry with its sizes in a descriptor, not empty: the descriptor check
    // fails and the reading stops (unsupported); the data is the content's again.
    let mut archive = local_header(0, 0, 0, 0, b"a.txt", b"");
    archive[6] = 8;
    archive.extend_from_slice(b"alice@acme-corp.io,bob@acme-corp.io\n");
    let body = [&b"MZ stub\n"[..], &archive].concat();
    let run = |piece: usize| {
        let mut i = Inspection::new(&e, &limits, Some(b"application/octet-stream"), None);
        for c in body.chunks(piece) {
            i.feed(c);
        }
        let o = i.finish();
        (
            o.findings.category_distinct("email"),
            o.not_scanned.map(|p| p.reason),
        )
    };
    let whole = run(body.len());
    for piece in 1..8 {
        assert_eq!(run(piece), whole, "piece {piece}");
    }
}

/// A zip after other bytes is read up to the first end record after its header, but
/// readers (Python's `zipfile`, `unzip`) go by the last one in the file. A decoy archive
/// whose second entry hides the real archive's local entry in its extra field (never
/// scanned nor searched) ends with a consistent directory; the real directory and end
/// record follow it, raw bytes to the proxy, and point at the hidden entry. `zipfile`
/// extracts the deflated list; the proxy passed the body as fully inspected.
#[test]
fn a_zip_after_other_bytes_is_not_ended_by_a_decoy_end_record() {
    use support::bodies::{ZipMethod, zip};
    let e = engine();
    let limits = Limits::default();
    let csv = b"name,email\nalice,alice@acme-corp.io\nbob,bob@acme-corp.io\n";
    let real = zip(&[("export.csv", &csv[..])], ZipMethod::Deflated);
    let eocd = real.len() - 22;
    let u32at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let (cd_size, cd_off) = (
        u32at(&real, eocd + 12) as usize,
        u32at(&real, eocd + 16) as usize,
    );
    let hidden = &real[..cd_off];
    let mut real_cd = real[cd_off..cd_off + cd_size].to_vec();
    let stub = b"MZ stub\n".to_vec();
    // The decoy: a.txt, then b.txt carrying the real entry in its extra field.
    let mut body = stub.clone();
    let (one, two) = (b"hi\n", b"ok\n");
    let a_at = 0u32;
    body.extend_from_slice(&local_header(0, zip_crc(one), 3, 3, b"a.txt", b""));
    body.extend_from_slice(one);
    let b_at = (body.len() - stub.len()) as u32;
    let hidden_at = body.len() + 30 + 5;
    body.extend_from_slice(&local_header(0, zip_crc(two), 3, 3, b"b.txt", hidden));
    body.extend_from_slice(two);
    let mut cd = central_record(0, zip_crc(one), 3, 3, b"a.txt", 0, b"", a_at);
    cd.extend_from_slice(&central_record(
        0,
        zip_crc(two),
        3,
        3,
        b"b.txt",
        0,
        b"",
        b_at,
    ));
    let cd_at = (body.len() - stub.len()) as u32;
    body.extend_from_slice(&cd);
    le32(&mut body, 0x0605_4b50);
    le32(&mut body, 0);
    le16(&mut body, 2);
    le16(&mut body, 2);
    le32(&mut body, cd.len() as u32);
    le32(&mut body, cd_at);
    le16(&mut body, 0);
    // The real directory, its offsets from the content's first byte.
    real_cd[42..46].copy_from_slice(&(hidden_at as u32).to_le_bytes());
    let real_cd_at = body.len() as u32;
    body.extend_from_slice(&real_cd);
    le32(&mut body, 0x0605_4b50);
    le32(&mut body, 0);
    le16(&mut body, 1);
    le16(&mut body, 1);
    le32(&mut body, real_cd.len() as u32);
    le32(&mut body, real_cd_at);
    le16(&mut body, 0);
    if let Ok(path) = std::env::var("DECOY_ZIP_OUT") {
        std::fs::write(path, &body).unwrap();
    }
    let mut i = Inspection::new(&e, &limits, Some(b"application/octet-stream"), None);
    i.feed(&body);
    let o = i.finish();
    assert!(
        o.not_scanned.is_some() || o.findings.category_distinct("email") == 2,
        "the list behind a decoy end record passed as fully inspected"
    );
}

/// Decoded base64 text in a body without line ends (minified JSON) is counted once a
/// separator past its due place comes, before the body ends, and `waiting` says when the
/// findings do not cover the input yet: a proxy streaming the body holds chunks back on
/// it (found by a red-team probe: the list went upstream before it was counted).
#[test]
fn decoded_base64_text_in_text_without_line_ends_is_counted_before_the_end() {
    let e = engine();
    let limits = Limits::default();
    let emails: Vec<String> = (0..12).map(|i| format!("user{i}@acme-corp.io")).collect();
    let field = format!(
        "{{\"file\":\"{}\",",
        base64_std(emails.join("\n").as_bytes())
    );
    let filler = |n: usize| "lorem ipsum dolor sit amet, ".repeat(n / 28 + 1)[..n].to_owned();
    let matches = |i: &Inspection<'_>| i.findings().category_distinct("email");

    // Past the due place (32 KiB of raw text before it): in at the quote closing it.
    let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), None);
    i.feed(filler(40 << 10).as_bytes());
    i.feed(field.as_bytes());
    // (The last three bytes of text wait for the next input: a zip signature may be cut
    // there.)
    i.feed(b" and more");
    assert_eq!(i.waiting(), 0);
    assert!(i.undecided());
    i.feed(filler(8 << 10).as_bytes());
    assert!(!i.undecided());
    assert_eq!(matches(&i), 12);

    // At the start: it waits until 32 KiB of raw text past it, then goes in at the next
    // separator; meanwhile `waiting` holds its decoded bytes.
    let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), None);
    i.feed(field.as_bytes());
    i.feed(filler(31 << 10).as_bytes());
    assert!(i.waiting() > 200, "waiting {}", i.waiting());
    assert!(i.undecided());
    assert_eq!(matches(&i), 0);
    i.feed(filler(2 << 10).as_bytes());
    assert_eq!(i.waiting(), 0);
    i.feed(filler(8 << 10).as_bytes());
    assert_eq!(matches(&i), 12);

    // No separator at all: in at the first byte outside the base64 alphabets 4 KiB on.
    let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), None);
    i.feed(field.as_bytes());
    i.feed("loremipsum.".repeat(3300).as_bytes());
    assert!(i.waiting() > 0);
    i.feed("loremipsum.".repeat(400).as_bytes());
    assert_eq!(i.waiting(), 0);
    i.feed("loremipsum.".repeat(800).as_bytes());
    assert_eq!(matches(&i), 12);

    // Split anywhere, the same findings at the end.
    let body = format!("{}{}{}", filler(100), field, filler(40 << 10));
    let whole = {
        let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), None);
        i.feed(body.as_bytes());
        i.finish().findings
    };
    assert_eq!(whole.category_distinct("email"), 12);
    for cut in (0..body.len()).step_by(97) {
        let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), None);
        i.feed(&body.as_bytes()[..cut]);
        i.feed(&body.as_bytes()[cut..]);
        assert_eq!(
            i.finish().findings.category_distinct("email"),
            12,
            "cut {cut}"
        );
    }
}

/// An unfinished multipart header block and a zip's central directory are input not
/// scanned yet: `waiting` counts them until they are.
#[test]
fn unfinished_part_headers_and_a_zip_directory_are_waiting() {
    let e = engine();
    let limits = Limits::default();
    let ct = b"multipart/form-data; boundary=XyZ";
    let names: Vec<String> = (0..12).map(|i| format!("user{i}@acme-corp.io")).collect();
    let head = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"{}.csv\"\r\n",
        names.join(" ")
    );
    let mut i = Inspection::new(&e, &limits, Some(ct), None);
    i.feed(head.as_bytes());
    assert!(
        i.waiting() >= head.len() as u64 - 8,
        "waiting {}",
        i.waiting()
    );
    assert_eq!(i.findings().category_distinct("email"), 0);
    i.feed(b"Content-Type: text/plain\r\n\r\nhello\r\n");
    assert_eq!(i.waiting(), 0);
    // The engine decides the last addresses once enough bytes have gone past them.
    assert!(i.undecided());
    i.feed(&[b'x'; 8 << 10]);
    assert!(!i.undecided());
    assert_eq!(i.findings().category_distinct("email"), 12);

    let zip = support::bodies::zip(
        &[("a.txt", b"hello world".as_slice())],
        support::bodies::ZipMethod::Stored,
    );
    let cd = zip.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    let mut i = Inspection::new(&e, &limits, Some(b"application/zip"), None);
    i.feed(&zip[..cd + 10]);
    assert!(i.waiting() >= 10, "waiting {}", i.waiting());
    // Until the end: the end record must be the archive's last bytes.
    i.feed(&zip[cd + 10..]);
    assert!(
        i.waiting() >= (zip.len() - cd) as u64,
        "waiting {}",
        i.waiting()
    );
    let out = i.finish();
    assert_eq!(out.not_scanned, None);
}

/// The counts a streamed body is judged on are the findings' counts, without the values'
/// hashes (copied and sorted at every judgement, up to 10 000 per category).
#[test]
fn counts_are_the_findings_without_the_hashes() {
    let e = engine();
    let limits = Limits::default();
    let list: String = (0..40)
        .map(|i| format!("user{i}@acme-corp.io, 4111 1111 1111 1111\n"))
        .collect();
    let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), None);
    i.feed(list.as_bytes());
    i.feed(&[b' '; 8 << 10]);
    let (full, counts) = (i.findings(), i.counts());
    assert_eq!(full.category_distinct("email"), 40);
    assert_eq!(full.categories[0].values.len(), 40);
    assert_eq!(full.rules, counts.rules);
    for (f, c) in full.categories.iter().zip(&counts.categories) {
        assert_eq!((&f.category, f.distinct), (&c.category, c.distinct));
        assert!(c.values.is_empty());
    }
    assert_eq!(full.categories.len(), counts.categories.len());
}

/// Review of 444975b: decoded base64 text waiting for its place goes in at the line end
/// of its run's line, or, failing one, at a separator 32 KiB past its due place
/// (`force_place`). When the run's line end comes after that separator, which of the two
/// is taken depends on whether the line end is in the same chunk: whole, the text goes in
/// after the line end; cut between the separator and the line end, after the separator.
/// Here the decoded text starts with a nine-digit number and the separator follows the
/// context word `ssn`: the `ssn-plain` finding depends on how the body is chunked.
#[test]
fn a_forced_insertion_place_does_not_depend_on_the_chunks() {
    let e = engine();
    let limits = Limits::default();
    // Both runs end at their padding.
    let first = base64_std(b"A harmless note: Hello World, nothing to see in this one at all!!");
    let second = base64_std(b"219099999 is the number we talked about on the phone, ok");
    assert!(first.ends_with('=') && second.ends_with('='));
    // The first run's decoded text goes in at its line end: the next is due 32 KiB on,
    // forced 32 KiB after that.
    let mut body = format!("{first}\nnote: {second} ");
    let forced = first.len() + 1 + (64 << 10);
    // Words and spaces only (no separator) up to the forced place, then a separator after
    // a context word, and the run's line end a little later.
    while body.len() < forced + 8 {
        body.push_str("lorem ipsum ");
    }
    body.push_str("ssn, ");
    while body.len() < forced + 300 {
        body.push_str("dolor sit ");
    }
    body.push('\n');
    for _ in 0..100 {
        body.push_str("lorem ipsum dolor sit amet\n");
    }
    let ssn = |cut: Option<usize>| {
        let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), None);
        match cut {
            Some(c) => {
                i.feed(&body.as_bytes()[..c]);
                i.feed(&body.as_bytes()[c..]);
            }
            None => i.feed(body.as_bytes()),
        }
        i.finish().findings.category_distinct("ssn")
    };
    let whole = ssn(None);
    let differ: Vec<(usize, u64)> = (forced - 200..forced + 600)
        .step_by(25)
        .map(|c| (c, ssn(Some(c))))
        .filter(|&(_, n)| n != whole)
        .collect();
    assert!(
        differ.is_empty(),
        "whole: {whole} ssn; cuts (offset, ssn) that differ: {differ:?}"
    );
}

/// Decoded text waiting while a long run that is not decoded (hex) goes on past where it
/// is due goes in at a place inside that run, counted from the run's start: the same
/// place whatever the chunks, cuts inside the run's first symbols (carried over to the
/// next input) included.
#[test]
fn decoded_text_goes_in_inside_a_long_undecoded_run_at_one_place() {
    let e = engine();
    let limits = Limits::default();
    let emails: Vec<String> = (0..12).map(|i| format!("user{i}@acme-corp.io")).collect();
    let hex: String = (0..40_000u32).map(|i| format!("{:x}", i % 16)).collect();
    let body = format!(
        "{{\"file\":\"{}\",\"sig\":\"{hex}\"}}",
        base64_std(emails.join("\n").as_bytes())
    );
    let findings = |cuts: &[usize]| {
        let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), None);
        let mut from = 0;
        for &cut in cuts.iter().chain([&body.len()]) {
            i.feed(&body.as_bytes()[from..cut]);
            from = cut;
        }
        (i.waiting(), i.finish().findings)
    };
    // Counted before the body's end: nothing waits once the place has passed.
    let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), None);
    i.feed(&body.as_bytes()[..body.len() - 2]);
    assert_eq!(i.waiting(), 0);
    let whole = findings(&[]).1;
    assert_eq!(whole.category_distinct("email"), 12);
    let start = body.find("\"sig\"").unwrap() + 7;
    let due = (32 << 10) + (4 << 10);
    for cut in [
        start + 1,
        start + 30,
        start + 63,
        start + 64,
        due - 1,
        due,
        due + 1,
    ] {
        for step in [1, 7, 4096] {
            let cuts: Vec<usize> = (cut..body.len()).step_by(step).take(40).collect();
            let (_, f) = findings(&cuts);
            assert_eq!(f, whole, "cuts from {cut} every {step}");
        }
    }
}

/// A gzip member's header is read here, its fields scanned: every field, in any split,
/// with a header CRC; a header too long, or with reserved flags set, is corrupt.
#[test]
fn gzip_headers_are_read_in_any_split_and_bounded() {
    use flate2::{Compression, write::DeflateEncoder};
    let e = engine();
    let limits = Limits::default();
    let emails: Vec<String> = (0..12).map(|i| format!("user{i}@acme-corp.io")).collect();
    let member = |flags: u8, extra: &[u8], name: &[u8], comment: &[u8]| {
        let mut m = vec![0x1f, 0x8b, 8, flags, 0, 0, 0, 0, 0, 3];
        if flags & 4 != 0 {
            m.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            m.extend_from_slice(extra);
        }
        for (bit, field) in [(8, name), (16, comment)] {
            if flags & bit != 0 {
                m.extend_from_slice(field);
                m.push(0);
            }
        }
        if flags & 2 != 0 {
            m.extend_from_slice(&(crc32fast::hash(&m) as u16).to_le_bytes());
        }
        let text = b"the text, then the fields\n";
        let mut d = DeflateEncoder::new(Vec::new(), Compression::default());
        d.write_all(text).unwrap();
        m.extend(d.finish().unwrap());
        m.extend_from_slice(&crc32fast::hash(text).to_le_bytes());
        m.extend_from_slice(&(text.len() as u32).to_le_bytes());
        m
    };
    let run = |body: &[u8], step: usize| {
        let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), Some(b"gzip"));
        for piece in body.chunks(step) {
            i.feed(piece);
        }
        i.finish()
    };
    let (a, b, c) = (
        emails[..4].join(" "),
        emails[4..8].join(" "),
        emails[8..].join(" "),
    );
    let body = member(2 | 4 | 8 | 16, a.as_bytes(), b.as_bytes(), c.as_bytes());
    for step in [1, 3, 10, 64, body.len()] {
        let o = run(&body, step);
        assert_eq!(o.not_scanned, None, "step {step}");
        assert_eq!(o.findings.category_distinct("email"), 12, "step {step}");
    }
    // Two members, the fields in the second.
    let mut two = member(0, b"", b"", b"");
    two.extend(member(8 | 16, b"", b.as_bytes(), c.as_bytes()));
    assert_eq!(run(&two, 5).findings.category_distinct("email"), 8);

    let long = vec![b'n'; (256 << 10) + 10];
    let o = run(&member(8, b"", &long, b""), 4096);
    assert_eq!(o.not_scanned.map(|n| n.reason), Some(Reason::Corrupt));
    let o = run(&member(0x20, b"", b"", b""), 4096);
    assert_eq!(o.not_scanned.map(|n| n.reason), Some(Reason::Corrupt));
    // A CRC that does not match (the header's, the data's) or a wrong size: corrupt, as
    // zlib said when it read the framing.
    let mut bad = body.clone();
    bad[10 + 2 + a.len() + b.len() + 1 + c.len() + 1] ^= 1;
    let mut bad_trailer = body.clone();
    let n = bad_trailer.len();
    bad_trailer[n - 8] ^= 1;
    let mut bad_size = body.clone();
    bad_size[n - 1] ^= 1;
    for (what, body) in [
        ("header", bad),
        ("trailer", bad_trailer),
        ("size", bad_size),
    ] {
        let o = run(&body, 7);
        assert_eq!(
            o.not_scanned.map(|n| n.reason),
            Some(Reason::Corrupt),
            "{what}"
        );
        // The fields were scanned all the same (a bad header's bytes raw too: its
        // fields run together there, and may read as one more address).
        assert!(o.findings.category_distinct("email") >= 12, "{what}");
    }
    // Cut inside the header: the stream ends before its end.
    let o = run(&body[..12], 4096);
    assert_eq!(o.not_scanned.map(|n| n.reason), Some(Reason::Corrupt));
}

/// A zstd skippable frame (RFC 8878 §3.1.2) holds any bytes, and libzstd skips it unseen:
/// its content is scanned as text, before, between or after frames, in any split; a
/// second frame cut short is corrupt.
#[test]
fn zstd_skippable_frames_are_scanned() {
    let e = engine();
    let limits = Limits::default();
    let list: String = (0..12).map(|i| format!("user{i}@acme-corp.io ")).collect();
    let mut skip = vec![0x5e, 0x2a, 0x4d, 0x18];
    skip.extend_from_slice(&(list.len() as u32).to_le_bytes());
    skip.extend_from_slice(list.as_bytes());
    let frame = zstd::encode_all(&b"hello world\n"[..], 3).unwrap();
    let run = |body: &[u8], step: usize| {
        let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), Some(b"zstd"));
        for piece in body.chunks(step) {
            i.feed(piece);
        }
        i.finish()
    };
    for body in [
        [skip.clone(), frame.clone()].concat(),
        [frame.clone(), skip.clone(), frame.clone()].concat(),
        [frame.clone(), skip.clone()].concat(),
    ] {
        for step in [1, 3, 9, body.len()] {
            let o = run(&body, step);
            assert_eq!(o.not_scanned, None, "step {step}");
            assert_eq!(o.findings.category_distinct("email"), 12, "step {step}");
        }
    }
    let cut = [frame.clone(), frame[..frame.len() - 2].to_vec()].concat();
    let o = run(&cut, 4096);
    assert_eq!(o.not_scanned.map(|n| n.reason), Some(Reason::Corrupt));
    let o = run(&[frame.clone(), skip[..20].to_vec()].concat(), 4096);
    assert_eq!(o.not_scanned.map(|n| n.reason), Some(Reason::Corrupt));
}

/// A brotli metadata block (RFC 7932 §9.2: `MNIBBLES` 0) holds up to 16 MiB of any bytes,
/// and decoders skip it unseen: a list in one, alone or between two stored blocks of text
/// with addresses of their own, should be found, and the text's own addresses too, however
/// the body is cut into chunks. Known gap (README): `brotli-decompressor` reports metadata
/// only through its C interface; scanning the compressed bytes as well was tried in
/// session 13 and reverted (see `tests/brotli_review.rs`).
#[test]
#[ignore = "known gap (README): brotli metadata blocks are not scanned; run with --ignored"]
fn brotli_metadata_is_scanned() {
    use support::{BrotliBlock, brotli_stream};
    let e = engine();
    let limits = Limits::default();
    let list = |from: usize, n: usize| -> String {
        (from..from + n)
            .map(|i| format!("user{i}@acme-corp.io "))
            .collect()
    };
    let (before, hidden, after) = (list(0, 5), list(100, 12), list(200, 5));
    for blocks in [
        vec![BrotliBlock::Metadata(hidden.as_bytes())],
        vec![
            BrotliBlock::Stored(before.as_bytes()),
            BrotliBlock::Metadata(hidden.as_bytes()),
            BrotliBlock::Stored(after.as_bytes()),
        ],
    ] {
        let body = brotli_stream(&blocks);
        let mut plain = Vec::new();
        brotli::BrotliDecompress(&mut &body[..], &mut plain).expect("a valid brotli stream");
        let shown = if blocks.len() == 1 { 0 } else { 10 };
        assert_eq!(String::from_utf8_lossy(&plain).matches('@').count(), shown);
        for step in [1, 5, 64, body.len()] {
            let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), Some(b"br"));
            for piece in body.chunks(step) {
                i.feed(piece);
            }
            let o = i.finish();
            assert_eq!(o.not_scanned, None);
            assert_eq!(
                o.findings.category_distinct("email"),
                12 + shown as u64,
                "step {step}"
            );
        }
    }
}

/// Review of 85a0e78: the text node of a gzip member's header fields is fed as soon as
/// the header is read, into the same engine stream as the decoded text, while the decoded
/// text's node still holds the end of the member before (its last value): the fields cut
/// it. `cat a.gz b.gz` of files gzipped the ordinary way (`gzip` stores the file name)
/// loses the last address of every member but the last; a list sent one address per
/// member loses all but one, and passes as fully inspected (before b0c7dcf zlib read the
/// members and all 12 were found).
#[test]
fn gzip_member_names_do_not_cut_the_text_of_the_member_before() {
    use flate2::{Compression, GzBuilder};
    let e = engine();
    let limits = Limits::default();
    let named = |data: &[u8], name: &str| {
        let mut g = GzBuilder::new()
            .filename(name.as_bytes().to_vec())
            .write(Vec::new(), Compression::default());
        g.write_all(data).unwrap();
        g.finish().unwrap()
    };
    let run = |body: &[u8], step: usize| {
        let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), Some(b"gzip"));
        for piece in body.chunks(step) {
            i.feed(piece);
        }
        i.finish()
    };
    // One address per member, each member named.
    let body: Vec<u8> = (0..12)
        .flat_map(|i| named(format!("customer{i}@acme-corp.io\n").as_bytes(), "part.txt"))
        .collect();
    for step in [7, body.len()] {
        let o = run(&body, step);
        assert_eq!(o.not_scanned, None, "step {step}");
        assert_eq!(
            o.findings.category_distinct("email"),
            12,
            "one address per named gzip member, step {step}"
        );
    }
    // A list of 10 (the blocking count) in a.gz, then b.gz.
    let list: String = (0..10)
        .map(|i| format!("{i},customer{i}@acme-corp.io\n"))
        .collect();
    let body = [named(list.as_bytes(), "a.csv"), named(b"done\n", "b.csv")].concat();
    assert_eq!(
        run(&body, body.len()).findings.category_distinct("email"),
        10,
        "a list of 10 in the first of two named members"
    );
}

/// Review of 85a0e78: a zstd skippable frame's content is fed to its text node while the
/// decoded text's node still holds the end of the frame before: the skippable content
/// cuts the frame's last value. A seekable-format or pzstd file (a skippable frame after
/// or between the frames) with a list of 10 passes with 9 counted; a list sent one
/// address per frame, each followed by a skippable frame, passes with none (before
/// 85a0e78 libzstd skipped the skippable frames and all were found).
#[test]
fn zstd_skippable_frames_do_not_cut_the_text_of_the_frame_before() {
    let e = engine();
    let limits = Limits::default();
    let skippable = |content: &[u8]| {
        let mut s = vec![0x50, 0x2a, 0x4d, 0x18];
        s.extend_from_slice(&(content.len() as u32).to_le_bytes());
        s.extend_from_slice(content);
        s
    };
    let frame = |data: &[u8]| zstd::encode_all(data, 3).unwrap();
    let run = |body: &[u8], step: usize| {
        let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), Some(b"zstd"));
        for piece in body.chunks(step) {
            i.feed(piece);
        }
        i.finish()
    };
    let body: Vec<u8> = (0..12)
        .flat_map(|i| {
            [
                frame(format!("customer{i}@acme-corp.io\n").as_bytes()),
                skippable(&[0, 0, 0, 0]),
            ]
            .concat()
        })
        .collect();
    for step in [5, body.len()] {
        let o = run(&body, step);
        assert_eq!(o.not_scanned, None, "step {step}");
        assert_eq!(
            o.findings.category_distinct("email"),
            12,
            "one address per frame, each followed by a skippable frame, step {step}"
        );
    }
    let list: String = (0..10)
        .map(|i| format!("{i},customer{i}@acme-corp.io\n"))
        .collect();
    let body = [frame(list.as_bytes()), skippable(b"seek table")].concat();
    assert_eq!(
        run(&body, body.len()).findings.category_distinct("email"),
        10,
        "a list of 10 in a frame followed by a skippable frame"
    );
}

/// Review of 85a0e78 (a gap the fix leaves, not a regression): a skippable frame's content
/// and a gzip header's fields are scanned as plain text, where no archive is looked for:
/// a gzipped list as a skippable frame's content, or as a gzip member's extra field,
/// passes as fully inspected — the same bytes as a `text/plain` body are opened and all
/// 12 found.
#[test]
fn a_compressed_list_in_a_skippable_frame_or_a_gzip_field_is_not_passed_as_inspected() {
    use flate2::{Compression, GzBuilder};
    let e = engine();
    let limits = Limits::default();
    let list: String = (0..12)
        .map(|i| format!("{i},customer{i}@acme-corp.io\n"))
        .collect();
    let gzipped = support::bodies::gzip(list.as_bytes());
    let run = |ce: Option<&[u8]>, body: &[u8]| {
        let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), ce);
        i.feed(body);
        let o = i.finish();
        (
            o.findings.category_distinct("email"),
            o.not_scanned.map(|n| n.reason),
        )
    };
    assert_eq!(
        run(None, &gzipped),
        (12, None),
        "the gzipped list as a body"
    );
    let mut skip = vec![0x50, 0x2a, 0x4d, 0x18];
    skip.extend_from_slice(&(gzipped.len() as u32).to_le_bytes());
    skip.extend_from_slice(&gzipped);
    let body = [skip, zstd::encode_all(&b"hello\n"[..], 3).unwrap()].concat();
    let (found, reason) = run(Some(b"zstd"), &body);
    assert!(
        found >= 10 || reason.is_some(),
        "a gzipped list in a zstd skippable frame: {found} addresses, not_scanned {reason:?}"
    );
    let mut g = GzBuilder::new()
        .extra(gzipped.clone())
        .write(Vec::new(), Compression::default());
    g.write_all(b"hello\n").unwrap();
    let (found, reason) = run(Some(b"gzip"), &g.finish().unwrap());
    assert!(
        found >= 10 || reason.is_some(),
        "a gzipped list in a gzip extra field: {found} addresses, not_scanned {reason:?}"
    );
}

/// libzstd decodes a block only once all of it is in, holding up to 128 KiB of input
/// unscanned meanwhile (found in review: the chunks of a list's block went upstream before
/// it was decoded): a zstd frame counts as waiting while it lasts.
#[test]
fn a_zstd_frame_is_waiting_until_it_ends() {
    let e = engine();
    let limits = Limits::default();
    let text: String = (0..4000)
        .map(|i| format!("line {i} of the text\n"))
        .collect();
    let z = zstd::encode_all(text.as_bytes(), 3).unwrap();
    let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), Some(b"zstd"));
    i.feed(&z[..z.len() / 2]);
    assert!(i.waiting() > 0);
    i.feed(&z[z.len() / 2..]);
    assert_eq!(i.waiting(), 0);
    assert_eq!(i.finish().not_scanned, None);
}

/// Header fields and skippable frames held past 1 MiB are scanned before the decoded
/// content ends; put into the stream between two steps of the decoder, they cut the
/// decoded value across them. Twelve addresses, each split between two zstd frames around
/// a skippable frame of 1.1 MiB (so the fields are due right between the halves): all
/// twelve must be found, however the body is cut.
#[test]
fn fields_past_the_held_limit_do_not_cut_the_decoded_text() {
    let e = engine();
    let limits = Limits::default();
    let pad = vec![b' '; (1 << 20) + (100 << 10)];
    let mut skippable = vec![0x50, 0x2a, 0x4d, 0x18];
    skippable.extend_from_slice(&(pad.len() as u32).to_le_bytes());
    skippable.extend_from_slice(&pad);
    let mut body = Vec::new();
    for i in 0..12 {
        let head = if i == 0 {
            String::new()
        } else {
            "corp.io\n".to_owned()
        };
        let text = format!("{head}row {i}: user{i}@acme-");
        body.extend(zstd::encode_all(text.as_bytes(), 3).unwrap());
        body.extend_from_slice(&skippable);
    }
    body.extend(zstd::encode_all(&b"corp.io\n"[..], 3).unwrap());
    for step in [body.len(), 65_536, 7_001] {
        let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), Some(b"zstd"));
        for piece in body.chunks(step) {
            i.feed(piece);
        }
        let o = i.finish();
        assert_eq!(o.not_scanned, None);
        assert_eq!(o.findings.category_distinct("email"), 12, "step {step}");
    }
}

/// A zlib stream (RFC 1950, what `pako.deflate` and zlib write) with no Content-Encoding
/// to say so is opened by its header, as gzip and zstd are (found in session 20's review:
/// a list zlib-compressed into a WebSocket message passed), at the levels whose header is
/// not text; text that starts with `x^` (levels 2–5's header) is not a problem.
#[test]
fn a_zlib_stream_is_opened_by_its_header_and_text_like_it_is_left_alone() {
    let e = engine();
    let limits = Limits::default();
    let list = support::customer_export(12);
    for level in [0, 1, 6, 9] {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
        z.write_all(list.as_bytes()).unwrap();
        let body = z.finish().unwrap();
        let mut i = Inspection::new(&e, &limits, Some(b"application/octet-stream"), None);
        for piece in body.chunks(7) {
            i.feed(piece);
        }
        let o = i.finish();
        assert!(o.not_scanned.is_none(), "{:?}", o.not_scanned);
        assert_eq!(
            o.findings.category_distinct("email"),
            12,
            "level {level}: header {:02x?}",
            &body[..2]
        );
    }
    for text in [
        &b"x^2 + y^2 = z^2, wrote customer0@acme-corp.io"[..],
        b"x\x01 not zlib at all",
    ] {
        let mut i = Inspection::new(&e, &limits, None, None);
        i.feed(text);
        let o = i.finish();
        assert!(o.not_scanned.is_none(), "{:?}", o.not_scanned);
    }
    let mut i = Inspection::new(&e, &limits, None, None);
    i.feed(b"x^2 + y^2 = z^2, wrote customer0@acme-corp.io");
    assert_eq!(i.finish().findings.category_distinct("email"), 1);
}
