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
