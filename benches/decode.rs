//! Decoding throughput: each decoder + scan against what it is compared with, side by side.
//!
//! Input: the 16 MiB `benign` corpus (see `benches/corpus/mod.rs`) with the shipped rule
//! pack. Groups (throughput always in bytes of the *content*, the corpus, so that the
//! figures compare directly):
//!
//! - `gzip`: `decode_only` (flate2 on zlib-rs inflating the gzipped corpus in 64 KiB input
//!   chunks into a reused buffer: the decompressor's own cost) against `decode_and_scan`
//!   (the same body through [`Inspection`] with `Content-Encoding: gzip`). Target:
//!   decode + scan ≥ 70% of decode alone.
//! - `content`: `raw_scan` (the engine's stream over the corpus in 64 KiB chunks: the raw
//!   scan speed) against `text` (the corpus as `text/plain` through [`Inspection`]: the raw
//!   path with the embedded-base64 search), `multipart` (the corpus as a file part),
//!   `json` (the corpus as one escaped JSON string value) and `form` (the corpus
//!   form-encoded). Target: multipart/JSON/form ≥ 50% of `raw_scan`.
//!
//! ```text
//! taskset -c 0 cargo bench --bench decode
//! taskset -c 0 cargo bench --bench decode -- --quick      # faster, rougher
//! ```

#[path = "corpus/mod.rs"]
#[allow(dead_code)]
mod corpus;

use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use egress_dlp::decode::{Inspection, Limits};
use egress_dlp::rules;
use egress_dlp::scan::Engine;
use flate2::{Compression, Decompress, FlushDecompress};

const CORPUS_BYTES: usize = 16 << 20;
const CHUNK: usize = 64 << 10;
const BOUNDARY: &str = "----bench-boundary-5f1c";

fn engine() -> Engine {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    Engine::new(&rules::load_dir(&dir).expect("shipped rules load"))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn json_string(data: &[u8]) -> Vec<u8> {
    let mut out = b"{\"name\":\"notes.txt\",\"content\":\"".to_vec();
    for &b in data {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'@' => out.extend_from_slice(b"\\u0040"),
            b if b < 0x20 => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            b => out.push(b),
        }
    }
    out.extend_from_slice(b"\"}");
    out
}

fn form(data: &[u8]) -> Vec<u8> {
    let mut out = b"name=notes.txt&content=".to_vec();
    for &b in data {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b),
            b' ' => out.push(b'+'),
            b => out.extend_from_slice(format!("%{b:02X}").as_bytes()),
        }
    }
    out
}

fn multipart(data: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\nContent-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// Feeds `body` through an inspection in 64 KiB chunks; the email count keeps the work.
fn inspect(engine: &Engine, ct: Option<&[u8]>, ce: Option<&[u8]>, body: &[u8]) -> u64 {
    let limits = Limits {
        max_decoded_bytes: 1 << 30,
        ..Limits::default()
    };
    let mut i = Inspection::new(engine, &limits, ct, ce);
    for c in body.chunks(CHUNK) {
        i.feed(c);
    }
    let out = i.finish();
    assert!(out.not_scanned.is_none(), "{:?}", out.not_scanned);
    out.findings.bytes
}

fn inflate_only(gz: &[u8], buf: &mut [u8]) -> u64 {
    let mut d = Decompress::new_gzip(15);
    let mut total = 0u64;
    for chunk in gz.chunks(CHUNK) {
        let mut input = chunk;
        loop {
            let (i0, o0) = (d.total_in(), d.total_out());
            d.decompress(input, buf, FlushDecompress::None).unwrap();
            let used = (d.total_in() - i0) as usize;
            let produced = (d.total_out() - o0) as usize;
            total += black_box(&buf[..produced]).len() as u64;
            input = &input[used..];
            if used == 0 && produced == 0 {
                break;
            }
        }
    }
    total
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    let engine = engine();
    let text = corpus::benign(CORPUS_BYTES, 1);
    let gz = gzip(&text);
    let mp = multipart(&text);
    let json = json_string(&text);
    let fm = form(&text);
    let mut buf = vec![0u8; CHUNK];
    assert_eq!(inflate_only(&gz, &mut buf), text.len() as u64);

    let mut g = c.benchmark_group("gzip");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("decode_only", |b| b.iter(|| inflate_only(&gz, &mut buf)));
    g.bench_function("decode_and_scan", |b| {
        b.iter(|| inspect(&engine, Some(b"text/plain"), Some(b"gzip"), &gz))
    });
    g.finish();

    let mut g = c.benchmark_group("content");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("raw_scan", |b| {
        b.iter(|| {
            let mut s = engine.stream();
            for chunk in text.chunks(CHUNK) {
                s.feed(chunk);
            }
            s.finish().bytes
        })
    });
    g.bench_function("text", |b| {
        b.iter(|| inspect(&engine, Some(b"text/plain"), None, &text))
    });
    let mp_type = format!("multipart/form-data; boundary={BOUNDARY}");
    g.bench_function("multipart", |b| {
        b.iter(|| inspect(&engine, Some(mp_type.as_bytes()), None, &mp))
    });
    g.bench_function("json", |b| {
        b.iter(|| inspect(&engine, Some(b"application/json"), None, &json))
    });
    g.bench_function("form", |b| {
        b.iter(|| {
            inspect(
                &engine,
                Some(b"application/x-www-form-urlencoded"),
                None,
                &fm,
            )
        })
    });
    g.finish();
    c.final_summary();
}
