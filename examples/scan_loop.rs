//! Scans a generated corpus in a loop and prints the best and median throughput: a quick
//! probe for engine work, and a steady workload for `perf record` or `valgrind
//! --tool=callgrind` (instruction counts do not care how busy the machine is).
//!
//! ```text
//! cargo run --release --example scan_loop -- benign|dense [ROUNDS] [MIB]
//! valgrind --tool=callgrind target/release/examples/scan_loop dense 1 4
//! SCAN_LOOP_RULES=/tmp/only-phone target/release/examples/scan_loop dense 1 4
//! target/release/examples/scan_loop repeat:eyJ- 3 4
//! target/release/examples/scan_loop sprinkle:eyJ- 3 4
//! ```
//!
//! Besides the two corpora, two hostile shapes probe what one rule's literal costs when a
//! body is full of it: `repeat:UNIT` is `UNIT` over and over, `sprinkle:UNIT` is random
//! base64url text with `UNIT` put in every 4 to 40 bytes and a `.` every 50 to 150.
//! `file:PATH` scans a file's bytes instead.
//!
//! `SCAN_LOOP_RULES` names another rules directory (default: the shipped `rules/`): a copy
//! of one rule file alone says what that file's rules cost.
//!
//! The criterion bench (`benches/scan.rs`) is the measurement of record; this is for
//! finding where the time goes.

#[path = "../benches/corpus/mod.rs"]
mod corpus;

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use egress_dlp::rules;
use egress_dlp::scan::Engine;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind = args.first().map_or("benign", String::as_str);
    let rounds: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let mib: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let data = match kind {
        "benign" => corpus::benign(mib << 20, 1),
        "dense" => corpus::dense(mib << 20, 1),
        other if other.starts_with("file:") => match std::fs::read(&other["file:".len()..]) {
            Ok(bytes) => bytes,
            Err(e) => {
                eprintln!("cannot read {other}: {e}");
                return ExitCode::from(2);
            }
        },
        other if other.starts_with("repeat:") => repeat(&other["repeat:".len()..], mib << 20),
        other if other.starts_with("sprinkle:") => sprinkle(&other["sprinkle:".len()..], mib << 20),
        other => {
            eprintln!(
                "unknown corpus {other:?}: benign, dense, file:PATH, repeat:UNIT or sprinkle:UNIT"
            );
            return ExitCode::from(2);
        }
    };
    let dir = std::env::var_os("SCAN_LOOP_RULES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"),
        std::path::PathBuf::from,
    );
    let set = match rules::load_dir_untested(&dir) {
        Ok(set) => set,
        Err(e) => {
            eprintln!("cannot load {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    let engine = Engine::new(&set);
    let mut speeds = Vec::with_capacity(rounds);
    let mut found = 0;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let findings = engine.scan_bytes(&data);
        let secs = t.elapsed().as_secs_f64();
        found = findings.rules.iter().map(|f| f.count).sum::<u64>();
        speeds.push(data.len() as f64 / secs / 1e6);
    }
    speeds.sort_by(f64::total_cmp);
    println!(
        "{kind} {} MiB x{}: median {:.0} MB/s, best {:.0} MB/s, {found} matches",
        mib,
        speeds.len(),
        speeds[speeds.len() / 2],
        speeds[speeds.len() - 1],
    );
    ExitCode::SUCCESS
}

/// `unit` repeated up to `size` bytes.
fn repeat(unit: &str, size: usize) -> Vec<u8> {
    unit.as_bytes().iter().copied().cycle().take(size).collect()
}

/// Random base64url bytes with `unit` every 4 to 40 bytes and a `.` every 50 to 150.
fn sprinkle(unit: &str, size: usize) -> Vec<u8> {
    const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut out = Vec::with_capacity(size + 64);
    let mut to_unit = 4 + next(37);
    let mut to_dot = 50 + next(101);
    while out.len() < size {
        if to_unit == 0 {
            out.extend_from_slice(unit.as_bytes());
            to_unit = 4 + next(37);
        } else if to_dot == 0 {
            out.push(b'.');
            to_dot = 50 + next(101);
        } else {
            out.push(B64URL[next(64) as usize]);
        }
        to_unit = to_unit.saturating_sub(1);
        to_dot = to_dot.saturating_sub(1);
    }
    out.truncate(size);
    out
}
