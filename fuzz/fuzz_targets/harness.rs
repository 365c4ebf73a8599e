//! What each fuzz target does with its input, shared with the regression test that
//! replays committed crash inputs (`tests/decode_fuzz_regressions.rs`) under `cargo test`.
//!
//! Every target feeds the input through the one pipeline ([`Inspection`]) as a body of its
//! content type, cut into chunks of a size taken from the first byte, with small limits so
//! that the limit paths run too, and checks properties of the decoder it targets.

use std::path::Path;
use std::sync::OnceLock;

use egress_dlp::decode::{self, Inspection, Limits};
use egress_dlp::rules;
use egress_dlp::scan::Engine;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = if dir.join("tests/fixtures/rules").is_dir() {
            dir.join("tests/fixtures/rules")
        } else {
            dir.join("../tests/fixtures/rules")
        };
        Engine::new(&rules::load_dir(&dir).expect("fixture rules"))
    })
}

/// Feeds `body` (after its first byte, which picks the chunk size) as a body with these
/// headers; the inspection must finish without panicking, and so must a whole-body run.
fn inspect(content_type: &[u8], content_encoding: Option<&[u8]>, data: &[u8]) {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let chunk = 1 + usize::from(first) * 3;
    let limits = Limits {
        max_depth: 3,
        max_decoded_bytes: 4 << 20,
        max_ratio: 100,
        max_archive_entries: 64,
    };
    for size in [chunk, body.len().max(1)] {
        let mut i = Inspection::new(engine(), &limits, Some(content_type), content_encoding);
        for piece in body.chunks(size) {
            i.feed(piece);
        }
        let _ = i.finish();
    }
}

/// `multipart/form-data` bodies (parts with any headers, nested multipart, base64 and
/// quoted-printable parts, zip parts).
pub fn multipart(data: &[u8]) {
    inspect(b"multipart/form-data; boundary=XyZ", None, data);
    inspect(b"multipart/mixed; boundary=\"a b\"", None, data);
}

/// JSON: the unescaper is the same in any split, and through the pipeline.
pub fn json(data: &[u8]) {
    let whole = decode::json::unescape(data);
    let cut = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut u = decode::json::Unescaper::new();
    let mut split = Vec::new();
    u.push(&data[..cut], &mut split);
    u.push(&data[cut..], &mut split);
    u.finish(&mut split);
    assert_eq!(whole, split, "split at {cut}");
    // Pieces handed on as they are when nothing in them needs unescaping (`JsonNode`'s
    // copy-free path): the same text, and the same state after them.
    let mut u = decode::json::Unescaper::new();
    let mut passed = Vec::new();
    let cuts = [cut / 2, cut, cut + (data.len() - cut) / 2];
    let mut from = 0;
    for to in cuts.into_iter().chain([data.len()]) {
        let piece = &data[from..to];
        if u.pass_through(piece) {
            passed.extend_from_slice(piece);
        } else {
            u.push(piece, &mut passed);
        }
        from = to;
    }
    u.finish(&mut passed);
    assert_eq!(whole, passed, "passed through in pieces at {cuts:?}");
    inspect(b"application/json", None, data);
}

/// base64: decoding is the same in any split, and runs inside text and JSON go through the
/// pipeline.
pub fn base64(data: &[u8]) {
    let whole = decode::base64::decode(data);
    let cut = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut d = decode::base64::Decoder::new();
    let mut split = Vec::new();
    for part in [&data[..cut], &data[cut..]] {
        for &b in part {
            if b == b'=' {
                d.finish(&mut split);
            } else {
                d.push_symbol(b, &mut split);
            }
        }
    }
    d.finish(&mut split);
    assert_eq!(whole, split, "split at {cut}");
    inspect(b"text/plain", None, data);
}

/// `application/x-www-form-urlencoded` bodies.
pub fn form(data: &[u8]) {
    inspect(b"application/x-www-form-urlencoded", None, data);
}
