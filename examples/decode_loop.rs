//! Runs one variant of the decode bench (`benches/decode.rs`) a few times on the benign
//! corpus: a steady workload for `valgrind --tool=callgrind`, whose instruction counts do
//! not care how busy the machine is (the criterion bench is the measurement of record).
//!
//! ```text
//! cargo build --release --example decode_loop
//! valgrind --tool=callgrind --toggle-collect='*run_once*' \
//!     target/release/examples/decode_loop text 1 4
//! ```
//!
//! Variants: `raw` (the engine alone), `text`, `text0` (`max_depth: 0`: runs searched for,
//! none decoded), `multipart`, `json`, `form`, `gzip` (decode and scan), `inflate` (the
//! decompressor alone). The pipeline's own cost is a variant's count less `raw`'s.

#[path = "../benches/corpus/bodies.rs"]
mod bodies;
#[path = "../benches/corpus/mod.rs"]
#[allow(dead_code)]
mod corpus;

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use bodies::{BOUNDARY, CHUNK, form, gzip, inflate_only, json_string, multipart};
use egress_dlp::decode::{Inspection, Limits};
use egress_dlp::rules;
use egress_dlp::scan::Engine;

fn inspect(engine: &Engine, limits: &Limits, ct: &[u8], ce: Option<&[u8]>, body: &[u8]) -> u64 {
    let mut i = Inspection::new(engine, limits, Some(ct), ce);
    for c in body.chunks(CHUNK) {
        i.feed(c);
    }
    i.finish().findings.bytes
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let variant = args.first().map_or("text", String::as_str).to_string();
    let rounds: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let mib: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let text = corpus::benign(mib << 20, 1);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let engine = match rules::load_dir_untested(&dir) {
        Ok(set) => Engine::new(&set),
        Err(e) => {
            eprintln!("cannot load {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    let limits = Limits {
        max_decoded_bytes: 1 << 30,
        ..Limits::default()
    };
    let flat = Limits {
        max_depth: 0,
        ..limits.clone()
    };
    let mp_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let body: Vec<u8> = match variant.as_str() {
        "raw" | "text" | "text0" => text.clone(),
        "multipart" => multipart(&text),
        "json" => json_string(&text),
        "form" => form(&text),
        "gzip" | "inflate" => gzip(&text),
        other => {
            eprintln!("unknown variant {other:?}");
            return ExitCode::from(2);
        }
    };
    let mut buf = vec![0u8; CHUNK];
    let mut times = Vec::new();
    let mut scanned = 0;
    // One round, apart, so that `--toggle-collect=*run_once*` counts it alone.
    #[inline(never)]
    fn run_once(f: &mut dyn FnMut() -> u64) -> u64 {
        f()
    }
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        scanned = run_once(&mut || match variant.as_str() {
            "raw" => {
                let mut s = engine.stream();
                for c in body.chunks(CHUNK) {
                    s.feed(c);
                }
                s.finish().bytes
            }
            "text" => inspect(&engine, &limits, b"text/plain", None, &body),
            "text0" => inspect(&engine, &flat, b"text/plain", None, &body),
            "multipart" => inspect(&engine, &limits, mp_type.as_bytes(), None, &body),
            "json" => inspect(&engine, &limits, b"application/json", None, &body),
            "form" => inspect(
                &engine,
                &limits,
                b"application/x-www-form-urlencoded",
                None,
                &body,
            ),
            "gzip" => inspect(&engine, &limits, b"text/plain", Some(b"gzip"), &body),
            _ => inflate_only(&body, &mut buf),
        });
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let mib_s = |t: f64| text.len() as f64 / (1 << 20) as f64 / t;
    println!(
        "{variant} {mib} MiB x{}: median {:.0} MiB/s, best {:.0} MiB/s, {scanned} bytes scanned",
        times.len(),
        mib_s(times[times.len() / 2]),
        mib_s(times[0]),
    );
    ExitCode::SUCCESS
}
