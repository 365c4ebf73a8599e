//! Writes a generated scanner corpus to a file, streaming it in 1 MiB pieces so that even
//! a multi-GiB corpus needs only a few MiB of memory.
//!
//! ```text
//! cargo run --release --example gen_corpus -- benign|dense|mixed SIZE OUTFILE
//! ```
//!
//! `SIZE` is a byte count, optionally with a suffix: `K`/`KiB`, `M`/`MiB`, `G`/`GiB`
//! (powers of 1024) or `KB`, `MB`, `GB` (powers of 1000). `mixed` alternates 1 MiB pieces
//! of benign traffic and customer exports. Piece `i` is generated from seed `i`, so the
//! same arguments always give the same file. The generators are in
//! `benches/corpus/mod.rs`, shared with the criterion bench.

#[path = "../benches/corpus/mod.rs"]
mod corpus;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

/// Size of one generated piece.
const PIECE: usize = 1 << 20;

/// Parses `123`, `64KiB`, `256M`, `1GiB`, `10MB`, ...
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: gen_corpus benign|dense|mixed SIZE OUTFILE";
    let [kind, size, path] = args.as_slice() else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let Some(size) = parse_size(size) else {
        eprintln!("gen_corpus: bad size {size:?}\n{usage}");
        return ExitCode::from(2);
    };
    let generate: fn(usize, u64) -> Vec<u8> = match kind.as_str() {
        "benign" => |n, seed| corpus::benign(n, seed),
        "dense" => |n, seed| corpus::dense(n, seed),
        "mixed" => |n, seed| {
            if seed % 2 == 0 {
                corpus::benign(n, seed)
            } else {
                corpus::dense(n, seed)
            }
        },
        _ => {
            eprintln!("gen_corpus: unknown kind {kind:?}\n{usage}");
            return ExitCode::from(2);
        }
    };
    let result = File::create(path).and_then(|f| {
        let mut w = BufWriter::with_capacity(PIECE, f);
        let mut written = 0u64;
        let mut seed = 0u64;
        while written < size {
            let n = (size - written).min(PIECE as u64) as usize;
            w.write_all(&generate(n, seed))?;
            written += n as u64;
            seed += 1;
        }
        w.flush()
    });
    match result {
        Ok(()) => {
            eprintln!("gen_corpus: wrote {size} bytes of {kind} to {path}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen_corpus: cannot write {path}: {e}");
            ExitCode::from(2)
        }
    }
}
