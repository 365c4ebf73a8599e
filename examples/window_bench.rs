//! What cumulative-window bookkeeping costs one request (issue 7: at most 5% of the
//! proxy's request rate). Times `Windows::observe` for requests carrying a few distinct
//! values each, from many principals, against a full table; the proxy bench's CPU time per
//! request (BENCHMARKS.md, "Audit and metrics") is what it is compared with.
//!
//! ```text
//! cargo run --release --example window_bench -- [VALUES_PER_REQUEST] [PRINCIPALS]
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use egress_dlp::policy::window::{WindowConfig, Windows};
use egress_dlp::rules::Thresholds;
use egress_dlp::scan::{CategoryCount, Findings};

fn findings(values: Vec<u64>) -> Findings {
    Findings {
        bytes: 0,
        rules: Vec::new(),
        categories: vec![CategoryCount {
            category: "email".into(),
            distinct: values.len() as u64,
            distinct_capped: false,
            values,
        }],
        exact_capped: false,
        stopped: Vec::new(),
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let per_request = args.first().copied().unwrap_or(9).max(1);
    let principals = args.get(1).copied().unwrap_or(10_000).max(1);
    let windows = Windows::new(WindowConfig {
        span: Duration::from_secs(3600),
        thresholds: BTreeMap::from([(
            "email".to_owned(),
            Thresholds {
                log: Some(5_000),
                block: Some(10_000),
            },
        )]),
        max_principals: 100_000,
        max_values: 10_000,
    });
    let names: Vec<String> = (0..principals).map(|p| format!("user{p}")).collect();
    let mut next = 0u64;
    let mut request = |i: u64| {
        let values: Vec<u64> = (0..per_request)
            .map(|_| {
                next = next.wrapping_add(0x9e37_79b9_7f4a_7c15);
                next
            })
            .collect();
        let name = &names[(i % principals) as usize];
        std::hint::black_box(windows.observe(name, &findings(values), true, Instant::now()));
    };
    // Warm up: every principal has a history.
    for i in 0..principals * 20 {
        request(i);
    }
    let mut rounds = Vec::new();
    for r in 0..9 {
        let n = 200_000;
        let t = Instant::now();
        for i in 0..n {
            request(r * n + i);
        }
        rounds.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    rounds.sort_by(f64::total_cmp);
    println!(
        "{per_request} values per request, {principals} principals: median {:.0} ns per request (best {:.0}, worst {:.0}); the findings are built inside the loop too",
        rounds[rounds.len() / 2],
        rounds[0],
        rounds[rounds.len() - 1]
    );
}
