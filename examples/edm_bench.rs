//! The exact-data-match bench (issue 7): index size and load time for a large customer
//! table, and what EDM costs the dense-corpus scan. Driven by `benches/edm_bench.sh`.
//!
//! ```text
//! edm_bench build N DIR        # DIR/customers.csv with N records, DIR/edm.key, DIR/customers.edm
//! edm_bench load DIR           # load the index: seconds, RSS it added, peak RSS
//! edm_bench scan DIR [ROUNDS]  # dense 16 MiB: shipped pack vs the pack with edm on email
//! ```
//!
//! The table's first rows are the dense corpus's own emails (so about half the corpus's
//! rows hold a real customer), the rest synthetic. Every record has an email and a phone;
//! the email column is indexed (the shipped pack's email rule is the one given `edm:`).

#[path = "../benches/corpus/mod.rs"]
#[allow(dead_code)] // only the dense generator is used here
mod corpus;

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use egress_dlp::cli;
use egress_dlp::policy::edm::{EdmIndex, EdmKey};
use egress_dlp::rules;
use egress_dlp::scan::{Engine, EngineOptions, ExactIndex};

const CORPUS_BYTES: usize = 16 << 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build") if args.len() == 3 => {
            build(args[1].parse().unwrap_or(0), Path::new(&args[2]))
        }
        Some("load") if args.len() == 2 => load(Path::new(&args[1])),
        Some("scan") if args.len() >= 2 => scan(
            Path::new(&args[1]),
            args.get(2).and_then(|r| r.parse().ok()).unwrap_or(15),
        ),
        _ => Err("usage: edm_bench build N DIR | load DIR | scan DIR [ROUNDS]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edm_bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// The shipped pack with `edm: {field: email}` on the email rule, in `dir/rules`.
fn edm_rules(dir: &Path) -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let dst = dir.join("rules");
    fs::create_dir_all(&dst).map_err(|e| e.to_string())?;
    for entry in fs::read_dir(&src).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let Some(name) = path.file_name() else {
            continue;
        };
        let mut text = fs::read_to_string(&path).map_err(|e| e.to_string())?;
        text = text.replace(
            "  - id: email-address\n",
            "  - id: email-address\n    edm: { field: email }\n",
        );
        fs::write(dst.join(name), text).map_err(|e| e.to_string())?;
    }
    Ok(dst)
}

fn corpus_emails() -> Vec<String> {
    let data = corpus::dense(CORPUS_BYTES, 1);
    let text = String::from_utf8_lossy(&data);
    text.lines()
        .skip(1)
        .filter_map(|line| line.split(',').nth(2))
        .filter(|e| e.contains('@'))
        .map(str::to_owned)
        .collect()
}

fn build(n: u64, dir: &Path) -> Result<(), String> {
    if n == 0 {
        return Err("N must be a positive number".into());
    }
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let csv_path = dir.join("customers.csv");
    let started = Instant::now();
    {
        let file = fs::File::create(&csv_path).map_err(|e| e.to_string())?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        writeln!(out, "id,email,phone").map_err(|e| e.to_string())?;
        let real = corpus_emails();
        // Every other corpus email is a customer.
        let mut written = 0u64;
        for email in real.iter().step_by(2) {
            if written == n {
                break;
            }
            writeln!(
                out,
                "{written},{email},+1 415 {:03} {:04}",
                written % 1000,
                written % 10_000
            )
            .map_err(|e| e.to_string())?;
            written += 1;
        }
        while written < n {
            writeln!(
                out,
                "{written},member{written}@customers.example-shop.com,+44 20 {:04} {:04}",
                (written / 10_000) % 10_000,
                written % 10_000
            )
            .map_err(|e| e.to_string())?;
            written += 1;
        }
        out.flush().map_err(|e| e.to_string())?;
    }
    println!(
        "wrote {} ({} bytes) in {:.1}s",
        csv_path.display(),
        fs::metadata(&csv_path).map(|m| m.len()).unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    let rules = edm_rules(dir)?;
    let args = cli::edm::BuildArgs {
        rules,
        columns: vec!["email".into()],
        key: dir.join("edm.key"),
        out: dir.join("customers.edm"),
        csv: csv_path,
    };
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    match cli::edm::build(&args, &mut out, &mut err) {
        0 => Ok(()),
        _ => Err("edm build failed".into()),
    }
}

fn rss_kib(field: &str) -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn load_index(dir: &Path) -> Result<EdmIndex, String> {
    let key = EdmKey::parse(&fs::read_to_string(dir.join("edm.key")).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let path = dir.join("customers.edm");
    let file = fs::File::open(&path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    EdmIndex::read_from(file, len, &key).map_err(|e| e.to_string())
}

fn load(dir: &Path) -> Result<(), String> {
    let before = rss_kib("VmRSS:");
    let started = Instant::now();
    let index = load_index(dir)?;
    let secs = started.elapsed().as_secs_f64();
    let after = rss_kib("VmRSS:");
    println!(
        "loaded {} records, {} entries in {secs:.2}s: RSS +{:.1} MiB (now {:.1} MiB, peak {:.1} MiB)",
        index.record_count(),
        index.entries(),
        (after.saturating_sub(before)) as f64 / 1024.0,
        after as f64 / 1024.0,
        rss_kib("VmHWM:") as f64 / 1024.0
    );
    Ok(())
}

fn scan(dir: &Path, rounds: usize) -> Result<(), String> {
    let plain_set = rules::load_dir_untested(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"))
        .map_err(|e| e.to_string())?;
    let edm_set = rules::load_dir_untested(&edm_rules(dir)?).map_err(|e| e.to_string())?;
    let index: Arc<dyn ExactIndex> = Arc::new(load_index(dir)?);
    let key = [7, 11];
    let plain = Engine::with_options(
        &plain_set,
        EngineOptions {
            hash_key: key,
            exact: None,
        },
    )
    .map_err(|e| e.to_string())?;
    let edm = Engine::with_options(
        &edm_set,
        EngineOptions {
            hash_key: key,
            exact: Some(index),
        },
    )
    .map_err(|e| e.to_string())?;
    let data = corpus::dense(CORPUS_BYTES, 1);
    {
        let probe = load_index(dir)?;
        let field = probe.field("email").ok_or("no email column")?;
        let values: Vec<Vec<u8>> = corpus_emails()
            .into_iter()
            .map(|e| e.to_ascii_lowercase().into_bytes())
            .collect();
        let mut out = Vec::new();
        let t = Instant::now();
        let mut hits = 0;
        for v in &values {
            out.clear();
            probe.records(field, v, &mut out);
            hits += usize::from(!out.is_empty());
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{} lookups ({hits} customers) in {:.1} ms: {:.0} ns each",
            values.len(),
            secs * 1e3,
            secs * 1e9 / values.len() as f64
        );
    }
    let emails = |e: &Engine| e.scan_bytes(&data).category_distinct("email");
    if std::env::var("EDM_BENCH_ONLY").is_err() {
        println!(
            "distinct emails in the corpus: {} without EDM, {} customers with it",
            emails(&plain),
            emails(&edm)
        );
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    // Alternate which engine goes first, so neither always runs on a warmer cache.
    for round in 0..rounds.max(1) {
        let mut order = [(&plain, &mut a), (&edm, &mut b)];
        if round % 2 == 1 {
            order.reverse();
        }
        for (engine, out) in order {
            if std::env::var("EDM_BENCH_ONLY")
                .is_ok_and(|only| (only == "edm") != std::ptr::eq(engine, &edm))
            {
                continue;
            }
            let t = Instant::now();
            std::hint::black_box(engine.scan_bytes(&data));
            out.push(data.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (a, b) = (median(&mut a), median(&mut b));
    println!(
        "dense 16 MiB, {rounds} alternating rounds: without EDM {a:.1} MB/s, with EDM {b:.1} MB/s: {:.1}%",
        100.0 * b / a
    );
    Ok(())
}
