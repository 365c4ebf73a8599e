//! Scanner throughput: the engine against its ceiling and a naive baseline, side by side.
//!
//! Two generated corpora of 16 MiB each (see `benches/corpus/mod.rs`): `benign` egress
//! (JSON telemetry, prose, source code, hashes: no customer identifiers) and `dense`
//! customer exports (a CSV whose every row holds an email, phone, card, SSN, IBAN and
//! customer id). For each corpus, one criterion group measures:
//!
//! - `ceiling_memchr`: `memchr` counting `@` over the same bytes: the speed of touching
//!   every byte once with SIMD, which no scanner beats;
//! - `engine`: [`Engine::scan_bytes`] on the whole corpus;
//! - `engine_stream_64k`: the same through [`Engine::stream`] in 64 KiB chunks (how the
//!   proxy and `scan` feed it);
//! - `naive_regex_automata`: one multi-pattern `regex_automata::meta::Regex` over all the
//!   pack's patterns (bytes, Unicode off), counting `find_iter` matches: what a user would
//!   write instead of this engine.
//!
//! Throughput is reported in bytes per second. Measure on one core, pinned:
//!
//! ```text
//! taskset -c 0 cargo bench --bench scan
//! taskset -c 0 cargo bench --bench scan -- --quick      # faster, rougher
//! ```
//!
//! Before measuring, the bench checks what the engine finds: plenty of emails in `dense`,
//! counts per rule against the number of rows, the same findings streamed and whole, and
//! an `allow` verdict on `benign`. Anything found in `benign` is a false positive and is
//! printed loudly with the lines it was found in (the bench still runs).

#[path = "corpus/mod.rs"]
mod corpus;

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use egress_dlp::policy::{self, Action};
use egress_dlp::rules::{self, RuleSet};
use egress_dlp::scan::{Engine, Findings};
use regex_automata::meta::Regex;

/// Size of each corpus.
const CORPUS_BYTES: usize = 16 << 20;
/// Chunk size of the streaming variant (the proxy's and `scan`'s read size).
const STREAM_CHUNK: usize = 64 << 10;

/// Loads the shipped rule pack.
fn load_rules() -> RuleSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    match rules::load_dir(&dir) {
        Ok(set) => set,
        Err(e) => panic!("cannot load {}: {e}", dir.display()),
    }
}

/// The naive baseline: every pattern of the pack in one meta regex, as bytes, Unicode off.
fn naive_regex(set: &RuleSet) -> Regex {
    let patterns: Vec<&str> = set.rules().iter().map(|r| r.pattern.as_str()).collect();
    Regex::builder()
        .syntax(
            regex_automata::util::syntax::Config::new()
                .unicode(false)
                .utf8(false),
        )
        .configure(
            Regex::config()
                .utf8_empty(false)
                .nfa_size_limit(Some(256 << 20))
                .hybrid_cache_capacity(16 << 20),
        )
        .build_many(&patterns)
        .expect("the pack's patterns compile as one regex")
}

/// Counts the naive baseline's matches.
fn naive_count(re: &Regex, data: &[u8]) -> usize {
    re.find_iter(data).count()
}

/// Scans `data` through a stream in `STREAM_CHUNK` pieces.
fn scan_streamed(engine: &Engine, data: &[u8]) -> Findings {
    let mut stream = engine.stream();
    for chunk in data.chunks(STREAM_CHUNK) {
        stream.feed(chunk);
    }
    stream.finish()
}

/// The comparable part of findings: (rule, category, count, distinct) per rule.
fn summary(f: &Findings) -> Vec<(String, String, u64, u64)> {
    let mut v: Vec<_> = f
        .rules
        .iter()
        .map(|r| (r.rule.clone(), r.category.clone(), r.count, r.distinct))
        .collect();
    v.sort();
    v
}

/// Prints one table of findings.
fn print_findings(label: &str, f: &Findings, rows: Option<u64>) {
    eprintln!(
        "  {label}: {} bytes, {} rule(s) fired",
        f.bytes,
        f.rules.len()
    );
    for r in &f.rules {
        let ratio = rows.map_or(String::new(), |n| {
            format!("  count/rows {:.3}", r.count as f64 / n.max(1) as f64)
        });
        eprintln!(
            "    {:<24} {:<14} count {:>8} distinct {:>7}{} corroborated {:>7}{}  samples {:?}",
            r.rule,
            r.category,
            r.count,
            r.distinct,
            if r.distinct_capped { " (capped)" } else { "" },
            r.corroborated,
            ratio,
            r.samples.iter().take(3).collect::<Vec<_>>(),
        );
    }
}

/// Checks what the engine finds before anything is measured; panics only on a broken
/// dense result or a streaming mismatch, prints benign false positives loudly.
fn sanity(set: &RuleSet, engine: &Engine, benign: &[u8], dense: &[u8]) {
    eprintln!("sanity: {} rules loaded", set.rules().len());

    let rows = dense
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"CUST-"))
        .count() as u64;
    let found = engine.scan_bytes(dense);
    print_findings("dense", &found, Some(rows));
    eprintln!("  dense: {rows} data rows (one value of each identifier kind per row)");
    let emails: u64 = found
        .rules
        .iter()
        .filter(|r| r.category == "email")
        .map(|r| r.count)
        .sum();
    assert!(
        emails > 1000,
        "the engine found only {emails} email addresses in the dense corpus"
    );
    let off: Vec<usize> = found
        .rules
        .iter()
        .filter(|r| r.count != rows)
        .map(|r| r.index)
        .collect();
    for r in found.rules.iter().filter(|r| r.count != rows) {
        eprintln!(
            "  NOTE dense: rule {} counted {} values for {rows} rows",
            r.rule, r.count
        );
    }
    if !off.is_empty() {
        explain_dense(set, engine, dense, &off);
    }
    let verdict = policy::evaluate(set, &found, &policy::Input::default());
    eprintln!("  dense verdict: {}", verdict.action.as_str());

    let found_benign = engine.scan_bytes(benign);
    let verdict = policy::evaluate(set, &found_benign, &policy::Input::default());
    if !found_benign.rules.is_empty() {
        let bar = "!".repeat(78);
        eprintln!("{bar}");
        eprintln!(
            "FALSE POSITIVES in the benign corpus (verdict {}):",
            verdict.action.as_str()
        );
        print_findings("benign", &found_benign, None);
        explain_benign(set, engine, benign);
        eprintln!("{bar}");
    } else {
        eprintln!("  benign: nothing found");
    }
    if verdict.action != Action::Allow {
        eprintln!(
            "!!! benign verdict is {} (expected allow): {:?}",
            verdict.action.as_str(),
            verdict.reasons
        );
    }

    for (name, data, whole) in [("dense", dense, &found), ("benign", benign, &found_benign)] {
        let streamed = scan_streamed(engine, data);
        assert_eq!(
            summary(whole),
            summary(&streamed),
            "{name}: streamed findings differ from whole-input findings"
        );
    }
    eprintln!("  streamed (64 KiB chunks) and whole-input findings agree");
}

/// For each rule in `rules` whose count differs from the number of rows, prints a few rows
/// (scanned one by one) where it finds more than one value, and a few where it finds none.
fn explain_dense(set: &RuleSet, engine: &Engine, dense: &[u8], rules: &[usize]) {
    let mut extra = vec![0usize; set.rules().len()];
    let mut missed = vec![0usize; set.rules().len()];
    for line in dense.split(|&b| b == b'\n') {
        if !line.starts_with(b"CUST-") {
            continue;
        }
        let f = engine.scan_bytes(line);
        for &i in rules {
            let n = f.rule_count(i);
            let (shown, what) = match n {
                0 => (&mut missed[i], "no value in"),
                1 => continue,
                _ => (&mut extra[i], "several values in"),
            };
            if *shown < 3 {
                *shown += 1;
                eprintln!(
                    "    [{}] {what} (count {n}): {}",
                    set.rules()[i].id,
                    String::from_utf8_lossy(line)
                );
            }
        }
    }
}

/// For each rule that fired on benign text, prints a few of the lines it fires on alone
/// (lines scanned one by one, so a match that needs context across lines is not shown).
fn explain_benign(set: &RuleSet, engine: &Engine, benign: &[u8]) {
    let mut shown = vec![0usize; set.rules().len()];
    for line in benign.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        let f = engine.scan_bytes(line);
        for r in &f.rules {
            if shown[r.index] < 5 {
                shown[r.index] += 1;
                let text = String::from_utf8_lossy(&line[..line.len().min(240)]);
                eprintln!("    [{}] {text}", r.rule);
            }
        }
    }
}

/// The benchmarks.
fn bench(c: &mut Criterion) {
    let set = load_rules();
    let engine = Engine::new(&set);
    let naive = naive_regex(&set);
    let benign = corpus::benign(CORPUS_BYTES, 1);
    let dense = corpus::dense(CORPUS_BYTES, 2);
    sanity(&set, &engine, &benign, &dense);
    for (name, data) in [("benign", &benign), ("dense", &dense)] {
        eprintln!(
            "  {name}: naive baseline finds {} raw matches",
            naive_count(&naive, data)
        );
    }

    for (name, data) in [("benign", &benign), ("dense", &dense)] {
        let mut group = c.benchmark_group(format!("scan/{name}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(5))
            .throughput(Throughput::Bytes(data.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter("ceiling_memchr"),
            data,
            |b, d| b.iter(|| memchr::memchr_iter(b'@', black_box(d)).count()),
        );
        group.bench_with_input(BenchmarkId::from_parameter("engine"), data, |b, d| {
            b.iter(|| engine.scan_bytes(black_box(d)))
        });
        group.bench_with_input(
            BenchmarkId::from_parameter("engine_stream_64k"),
            data,
            |b, d| b.iter(|| scan_streamed(&engine, black_box(d))),
        );
        group.bench_with_input(
            BenchmarkId::from_parameter("naive_regex_automata"),
            data,
            |b, d| b.iter(|| naive_count(&naive, black_box(d))),
        );
        group.finish();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
