//! Scans a generated corpus in a loop and prints the best and median throughput: a quick
//! probe for engine work, and a steady workload for `perf record` or `valgrind
//! --tool=callgrind` (instruction counts do not care how busy the machine is).
//!
//! ```text
//! cargo run --release --example scan_loop -- benign|dense [ROUNDS] [MIB]
//! valgrind --tool=callgrind target/release/examples/scan_loop dense 1 4
//! SCAN_LOOP_RULES=/tmp/only-phone target/release/examples/scan_loop dense 1 4
//! ```
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
        other => {
            eprintln!("unknown corpus {other:?}: benign or dense");
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
