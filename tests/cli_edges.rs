//! Command-line edges found in review, each failing before its fix: `edm build` on a
//! broken customer table fails clearly instead of writing a silently wrong index, and
//! `scan` whose report cannot be written exits 2, not 0 ("allow").

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_egress-dlp");
const RULES: &str = "tests/fixtures/edm-only";

/// Runs `edm build --column email` on `csv`: (exit code, stdout, stderr).
fn build(csv: &[u8]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("customers.csv");
    std::fs::write(&path, csv).unwrap();
    let out = Command::new(BIN)
        .args([
            "edm", "build", "--rules", RULES, "--column", "email", "--key",
        ])
        .arg(dir.path().join("edm.key"))
        .arg("--out")
        .arg(dir.path().join("customers.edm"))
        .arg(&path)
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_good_table_builds() {
    let (code, out, err) = build(b"email,name\na@b.io,A\n\"c@d.io\",\"D, E\"\n");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("indexed 2 records"), "{out}");
}

#[test]
fn a_column_named_twice_in_the_header_is_refused() {
    let (code, out, err) = build(b"email,email\na@b.io,c@d.io\n");
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("more than once"), "{err}");
}

#[test]
fn an_unclosed_quote_does_not_swallow_the_rest_of_the_table() {
    let (code, out, err) = build(b"email\n\"a@b.io\nc@d.io\ne@f.io\ng@h.io\n");
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("line break"), "{err}");
}

#[test]
fn a_cell_longer_than_any_match_is_refused() {
    let mut csv = b"email\nx@y.io\n".to_vec();
    csv.resize(csv.len() + (64 << 10), b'a');
    csv.extend_from_slice(b"@b.io\n");
    let (code, out, err) = build(&csv);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("line 3") && err.contains("longer than any value"),
        "{err}"
    );
}

#[test]
fn a_scan_report_that_cannot_be_written_is_an_error() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    for format in ["json", "text"] {
        let out = Command::new(BIN)
            .args([
                "scan",
                "--rules",
                "tests/fixtures/rules",
                "--format",
                format,
            ])
            .arg("Cargo.toml")
            .stdout(full.try_clone().unwrap())
            .output()
            .expect("the binary runs");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
