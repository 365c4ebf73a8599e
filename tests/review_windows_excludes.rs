//! Review of 8965d3d (streamed bodies record their values in the windows as they go) and
//! d826821 (a rule's exclude patterns searched as one joined regex).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use egress_dlp::policy::window::{Recorded, WindowConfig, Windows};
use egress_dlp::rules::{Thresholds, load_dir};
use egress_dlp::scan::{CategoryCount, Engine, Findings};

fn findings(values: impl IntoIterator<Item = u64>) -> Findings {
    let mut values: Vec<u64> = values.into_iter().collect();
    values.sort_unstable();
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

/// A streamed body's snapshots each re-record *all* its values so far. Once they are more
/// than `max_values` (a log-only window: no block keeps the count under the cap), every
/// snapshot puts back the values the previous one pushed out and pushes them out again,
/// counting them in `evicted_values` each time: 25 values in 15 snapshots and the end count 135
/// evictions where the same body held whole counts 15 (the README: "both caps are counted
/// when they evict").
#[test]
fn streamed_snapshots_count_each_evicted_value_once() {
    let config = WindowConfig {
        span: Duration::from_secs(3600),
        thresholds: [(
            "email".to_owned(),
            Thresholds {
                log: Some(5),
                block: None,
            },
        )]
        .into(),
        max_principals: 64,
        max_values: 10,
    };
    let t0 = Instant::now();
    let held = Windows::new(config.clone());
    held.observe("a", &findings(0..25), true, t0);
    assert_eq!(held.stats.evicted_values.load(Ordering::Relaxed), 15);

    let streamed = Windows::new(config);
    // As the proxy does: one `Recorded` for the body's snapshots and its end.
    let mut recorded = Recorded::default();
    for n in 11..=25 {
        streamed.observe_streamed("a", &findings(0..n), t0, &mut recorded);
    }
    streamed.observe_recorded("a", &findings(0..25), true, t0, &mut recorded);
    assert_eq!(streamed.distinct("a", "email", t0), 10);
    assert_eq!(
        streamed.stats.evicted_values.load(Ordering::Relaxed),
        15,
        "the same 15 values counted as evicted again at every snapshot"
    );
}

fn engine_with_excludes(excludes: &[&str]) -> Engine {
    let dir = tempfile::tempdir().unwrap();
    let list: String = excludes
        .iter()
        .map(|e| format!("      - {}\n", serde_json::to_string(e).unwrap()))
        .collect();
    std::fs::write(
        dir.path().join("email.yaml"),
        format!(
            r#"rules:
  - id: email
    name: Email
    category: email
    description: emails
    pattern: '(?i)\b[a-z0-9._%+-]{{1,64}}@[a-z0-9-]{{1,63}}(?:\.[a-z0-9-]{{1,63}}){{0,6}}\.[a-z]{{2,24}}\b'
    keywords: ['@']
    exclude:
{list}    thresholds: {{ log: 1 }}
    tests:
      match: ['x person1@acme-corp.io y']
"#
        ),
    )
    .unwrap();
    Engine::new(&load_dir(dir.path()).unwrap())
}

/// d826821 joins a rule's excludes as `(?:a)|(?:b)`. A verbose-mode exclude (`(?x)`)
/// ending in a `#` comment swallows the `)|(?:` after it up to the next line break: with a
/// second, multi-line verbose exclude the join still compiles (so the fallback to
/// separate regexes never runs) but reads `(?x:example\.com$ test\.org$)`, which matches
/// nothing: both excludes are lost, and the addresses they exempt count again (here the
/// docs domain's addresses; with the fixture's block at 10, a benign page of them is
/// blocked). Each pattern alone excludes as written.
#[test]
fn a_verbose_exclude_ending_in_a_comment_keeps_its_meaning_when_joined() {
    let docs = r"(?x) example\.com$   # the docs domain";
    let tests = "(?x)\n  test\\.org$   # the test domain\n";
    let body = b"mail a@example.com and b@test.org and c@acme-corp.io";
    // Each alone.
    for (exclude, kept) in [(docs, 2), (tests, 2)] {
        let n = engine_with_excludes(&[exclude])
            .scan_bytes(body)
            .category_distinct("email");
        assert_eq!(n, kept, "{exclude:?} alone");
    }
    // Together: only c@acme-corp.io should count.
    let n = engine_with_excludes(&[docs, tests])
        .scan_bytes(body)
        .category_distinct("email");
    assert_eq!(
        n, 1,
        "the joined excludes lost their meaning: {n} emails counted"
    );
}
