//! The `scan` and `rules` commands, run as the real binary: exit codes, output, errors.

use std::io::Write;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_egress-dlp");
const FIXTURE: &str = "tests/fixtures/rules";

fn run(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    // The binary may exit before reading stdin (broken rules): a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn export(n: usize) -> String {
    (0..n)
        .map(|i| format!("{i},Customer {i},user{i}@acme-corp.io\n"))
        .collect()
}

#[test]
fn scan_exit_status_follows_the_verdict() {
    // (input, exit status, verdict)
    let cases: &[(String, i32, &str)] = &[
        ("nothing to see here".into(), 0, "allow"),
        (export(1), 0, "allow"),
        (export(3), 0, "log"),
        (export(10), 1, "block"),
        (export(500), 1, "block"),
    ];
    for (input, status, verdict) in cases {
        let (code, out, err) = run(
            &["scan", "--rules", FIXTURE, "--format", "json"],
            input.as_bytes(),
        );
        assert_eq!(code, *status, "{out}{err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["verdict"], *verdict);
        assert_eq!(v["input"], "-");
        assert_eq!(v["bytes"], input.len());
    }
}

#[test]
fn scan_json_never_contains_raw_values() {
    let input = export(12);
    let (code, out, _) = run(
        &["scan", "--rules", FIXTURE, "--format", "json", "-"],
        input.as_bytes(),
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let f = &v["findings"][0];
    assert_eq!(f["rule"], "email");
    assert_eq!(f["category"], "email");
    assert_eq!(f["count"], 12);
    assert_eq!(f["distinct"], 12);
    assert_eq!(f["samples"][0], "u***@acme-corp.io");
    for i in 0..12 {
        assert!(
            !out.contains(&format!("user{i}@")),
            "raw value in output: {out}"
        );
    }
}

#[test]
fn scan_several_files_text_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.txt");
    let dirty = dir.path().join("dirty.csv");
    std::fs::write(&clean, "hello").unwrap();
    std::fs::write(&dirty, export(20)).unwrap();
    let missing = dir.path().join("missing.txt");
    let (code, out, _) = run(
        &[
            "scan",
            "--rules",
            FIXTURE,
            clean.to_str().unwrap(),
            dirty.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("clean.txt: allow"), "{out}");
    assert!(out.contains("dirty.csv: block"), "{out}");
    assert!(out.contains("=> block: 20 distinct email"), "{out}");
    // An unreadable input is an error (2), reported, and the others are still scanned.
    let (code, out, err) = run(
        &[
            "scan",
            "--rules",
            FIXTURE,
            "--format",
            "json",
            missing.to_str().unwrap(),
            dirty.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read") && err.contains("missing.txt"),
        "{err}"
    );
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.lines()
            .nth(1)
            .unwrap()
            .contains("\"verdict\":\"block\"")
    );
}

#[test]
fn scan_with_broken_rules_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "rules: [{id: x}]").unwrap();
    let (code, _, err) = run(&["scan", "--rules", dir.path().to_str().unwrap()], b"data");
    assert_eq!(code, 2);
    assert!(err.contains("bad.yaml"), "{err}");
}

#[test]
fn rules_check_and_test() {
    let (code, out, _) = run(&["rules", "check", FIXTURE], b"");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: 5 rules"), "{out}");
    // `\b[A-Z]{3}[a-z]{5}\b` has no literal and no digit, but its leading classes are
    // rare: it is found by them, not by a full scan.
    let shape = out
        .lines()
        .find(|l| l.contains("upper-token"))
        .expect("rule listed");
    assert!(
        shape.ends_with("prefilter lead-bytes, search anchored-table"),
        "{out}"
    );
    let plain = tempfile::tempdir().unwrap();
    std::fs::write(
        plain.path().join("plain.yaml"),
        r"rules:
  - id: plain
    name: Lowercase words then a dot
    category: plain
    pattern: '[a-z]{4}[.]'
    thresholds: { log: 1 }
    tests: { match: ['abcd.'], no_match: ['abc.'] }
",
    )
    .unwrap();
    let (code, out, _) = run(&["rules", "check", plain.path().to_str().unwrap()], b"");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("prefilter full-scan, search table"), "{out}");
    let (code, out, _) = run(&["rules", "test", FIXTURE], b"");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("PASS email"), "{out}");

    // A failing embedded test: `rules test` names it and exits 1, `rules check` exits 2.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.yaml"),
        concat!(
            "rules:\n",
            "  - {id: x, name: X, category: c, pattern: 'x{3}', thresholds: {log: 1}, tests: {match: [yyy], no_match: [zzz]}}\n",
            "  - {id: y, name: Y, category: c, pattern: 'y{3}', thresholds: {log: 1}, tests: {match: [yyy]}}\n",
        ),
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, out, _) = run(&["rules", "test", d], b"");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL x") && out.contains("\"yyy\" was not matched"),
        "{out}"
    );
    assert!(out.contains("PASS y"), "{out}");
    let (code, _, err) = run(&["rules", "check", d], b"");
    assert_eq!(code, 2);
    assert!(err.contains("rule x: tests.match"), "{err}");

    let (code, _, err) = run(&["rules", "check", "/nonexistent"], b"");
    assert_eq!(code, 2);
    assert!(err.contains("cannot read the rules directory"), "{err}");
}
