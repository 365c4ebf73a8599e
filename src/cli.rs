//! The `scan` and `rules` commands as library functions: the binary only parses arguments
//! and calls these, so they are tested like everything else.

pub mod edm;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::decode::{self, Inspection};
use crate::policy::{self, Action, Reason};
use crate::rules::{self, RuleErrors, RuleSet};
use crate::scan::{Engine, RuleFinding};

/// Exit status: allowed or logged.
pub const EXIT_OK: i32 = 0;
/// Exit status: a scanned input would be blocked, or a rule test failed.
pub const EXIT_BLOCK: i32 = 1;
/// Exit status: an error (unreadable input, invalid rules).
pub const EXIT_ERROR: i32 = 2;

/// Read size when streaming an input into the engine.
const READ_CHUNK: usize = 64 * 1024;

/// Output format of `scan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per input, one per line.
    Json,
}

/// How `scan` decodes its inputs: the headers a proxied body would have come with.
#[derive(Debug, Clone, Default)]
pub struct BodyHeaders {
    /// `Content-Type` (`--content-type`).
    pub content_type: Option<String>,
    /// `Content-Encoding` (`--content-encoding`).
    pub content_encoding: Option<String>,
}

#[derive(Serialize)]
struct ScanReport<'a> {
    input: &'a str,
    verdict: Action,
    bytes: u64,
    findings: &'a [RuleFinding],
    reasons: &'a [Reason],
    #[serde(skip_serializing_if = "Option::is_none")]
    not_scanned: Option<NotScannedReport<'a>>,
}

/// Why an input was not fully scanned (`{"reason": "corrupt", "detail": "..."}`).
#[derive(Serialize)]
struct NotScannedReport<'a> {
    reason: &'static str,
    detail: &'a str,
}

#[derive(Serialize)]
struct ScanError<'a> {
    input: &'a str,
    error: String,
}

/// Loads a rules directory and the engine its checks built, printing every problem to
/// `err` on failure.
pub fn load_rules(dir: &Path, err: &mut dyn Write) -> Option<(RuleSet, Engine)> {
    report_rule_errors(dir, rules::load_dir_with_engine(dir), err)
}

/// What loaded, or `None` after printing every problem to `err`.
fn report_rule_errors<T>(
    dir: &Path,
    loaded: Result<T, RuleErrors>,
    err: &mut dyn Write,
) -> Option<T> {
    match loaded {
        Ok(loaded) => Some(loaded),
        Err(RuleErrors(errors)) => {
            let _ = writeln!(
                err,
                "error: {} problem(s) in {}:",
                errors.len(),
                dir.display()
            );
            for e in errors {
                let _ = writeln!(err, "  {e}");
            }
            None
        }
    }
}

/// `egress-dlp scan`: streams each input (`-` is stdin) through the decoders, engine and
/// policy, as the proxy would a body sent with `body`'s headers. An input that cannot be
/// fully inspected is blocked, as `policy.on_inspection_error` does by default.
/// Returns the exit status: 0 allow/log, 1 block, 2 error (an error wins over a block).
pub fn scan(
    rules_dir: &Path,
    inputs: &[PathBuf],
    format: Format,
    body: &BodyHeaders,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let Some((set, engine)) = load_rules(rules_dir, err) else {
        return EXIT_ERROR;
    };
    let stdin = [PathBuf::from("-")];
    let inputs = if inputs.is_empty() {
        &stdin[..]
    } else {
        inputs
    };
    let mut status = EXIT_OK;
    for input in inputs {
        let name = input.to_string_lossy();
        let result = if name == "-" {
            scan_body(&engine, body, io::stdin().lock())
        } else {
            std::fs::File::open(input).and_then(|f| scan_body(&engine, body, f))
        };
        match result {
            Ok(outcome) => {
                let findings = &outcome.findings;
                let mut verdict = policy::evaluate(&set, findings, &policy::Input::default());
                if outcome.not_scanned.is_some() {
                    verdict.action = Action::Block;
                }
                if verdict.action == Action::Block && status == EXIT_OK {
                    status = EXIT_BLOCK;
                }
                let report = ScanReport {
                    input: &name,
                    verdict: verdict.action,
                    bytes: outcome.body_bytes,
                    findings: &findings.rules,
                    reasons: &verdict.reasons,
                    not_scanned: outcome.not_scanned.as_ref().map(|n| NotScannedReport {
                        reason: n.reason.as_str(),
                        detail: &n.detail,
                    }),
                };
                let written = match format {
                    Format::Json => writeln!(out, "{}", json(&report)),
                    Format::Text => write_text(out, &report),
                };
                if let Err(e) = written {
                    // A verdict nobody can read is no verdict (found in review: stdout on
                    // a full disk exited 0, "allow").
                    status = EXIT_ERROR;
                    let _ = writeln!(err, "error: cannot write the report on {name}: {e}");
                }
            }
            Err(e) => {
                status = EXIT_ERROR;
                let message = format!("cannot read {name}: {e}");
                match format {
                    Format::Json => {
                        let _ = writeln!(
                            out,
                            "{}",
                            json(&ScanError {
                                input: &name,
                                error: message.clone()
                            })
                        );
                    }
                    Format::Text => {}
                }
                let _ = writeln!(err, "error: {message}");
            }
        }
    }
    if let Err(e) = out.flush() {
        status = EXIT_ERROR;
        let _ = writeln!(err, "error: cannot write the report: {e}");
    }
    status
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Streams a reader through the engine in bounded chunks: the input is never held whole.
pub fn scan_reader(engine: &Engine, mut reader: impl Read) -> io::Result<crate::scan::Findings> {
    let mut stream = engine.stream();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        stream.feed(&chunk[..n]);
    }
    Ok(stream.finish())
}

/// Streams a reader through the decoders and the engine in bounded chunks, as the proxy
/// does a body with these headers (default decoding limits).
pub fn scan_body(
    engine: &Engine,
    body: &BodyHeaders,
    mut reader: impl Read,
) -> io::Result<decode::Outcome> {
    let mut stream = Inspection::new(
        engine,
        &decode::Limits::default(),
        body.content_type.as_deref().map(str::as_bytes),
        body.content_encoding.as_deref().map(str::as_bytes),
    );
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        stream.feed(&chunk[..n]);
    }
    Ok(stream.finish())
}

fn write_text(out: &mut dyn Write, r: &ScanReport<'_>) -> io::Result<()> {
    writeln!(
        out,
        "{}: {} ({} bytes scanned)",
        r.input,
        r.verdict.as_str(),
        r.bytes
    )?;
    if let Some(n) = &r.not_scanned {
        writeln!(out, "  not fully scanned: {}: {}", n.reason, n.detail)?;
    }
    for f in r.findings {
        writeln!(
            out,
            "  {:<24} {:<10} count={} distinct={}{}  e.g. {}",
            f.rule,
            f.category,
            f.count,
            f.distinct,
            if f.distinct_capped { "+" } else { "" },
            f.samples.join(", ")
        )?;
    }
    for reason in r.reasons {
        writeln!(
            out,
            "  => {}: {} distinct {} value(s), {} threshold {} (rule {})",
            reason.action.as_str(),
            reason.distinct,
            reason.category,
            reason.action.as_str(),
            reason.threshold,
            reason.rule
        )?;
    }
    Ok(())
}

/// `egress-dlp rules check`: validates a rules directory (embedded tests included).
pub fn rules_check(dir: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some((set, engine)) = load_rules(dir, err) else {
        return EXIT_ERROR;
    };
    let _ = writeln!(
        out,
        "ok: {} rules, version {}",
        set.rules().len(),
        set.version()
    );
    let kebab = |v: serde_json::Result<serde_json::Value>| {
        v.ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let searches = engine.searches();
    for (((id, anchor), rule), search) in
        engine.anchors().into_iter().zip(set.rules()).zip(searches)
    {
        let _ = writeln!(
            out,
            "  {id:<24} {:<10} log={:<6} block={:<6} longest match {} B, prefilter {}, search {}",
            rule.category,
            rule.thresholds
                .log
                .map_or("-".to_string(), |n| n.to_string()),
            rule.thresholds
                .block
                .map_or("-".to_string(), |n| n.to_string()),
            rule.info.max_len,
            kebab(serde_json::to_value(anchor)),
            kebab(serde_json::to_value(search)),
        );
    }
    EXIT_OK
}

/// `egress-dlp rules test`: runs every embedded test and prints pass/fail per rule.
/// Exit 0 when all pass, 1 when any fails, 2 when the rules do not load.
pub fn rules_test(dir: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some((set, engine)) =
        report_rule_errors(dir, rules::load_dir_untested_with_engine(dir), err)
    else {
        return EXIT_ERROR;
    };
    let outcomes = rules::run_tests(&set, &engine);
    let mut failed_rules = 0;
    for rule in set.rules() {
        let mine: Vec<_> = outcomes.iter().filter(|o| o.rule == rule.id).collect();
        let failed: Vec<_> = mine.iter().filter(|o| !o.passed).collect();
        if failed.is_empty() {
            let _ = writeln!(out, "PASS {:<24} {} cases", rule.id, mine.len());
        } else {
            failed_rules += 1;
            let _ = writeln!(
                out,
                "FAIL {:<24} {}/{} cases failed",
                rule.id,
                failed.len(),
                mine.len()
            );
            for o in failed {
                let _ = writeln!(
                    out,
                    "       {} {:?} {}",
                    o.kind,
                    o.input,
                    if o.kind == "match" {
                        "was not matched"
                    } else {
                        "was matched"
                    }
                );
            }
        }
    }
    let total = outcomes.len();
    let passed = outcomes.iter().filter(|o| o.passed).count();
    let _ = writeln!(
        out,
        "{passed}/{total} cases passed, {failed_rules} rule(s) failing"
    );
    if failed_rules == 0 {
        EXIT_OK
    } else {
        EXIT_BLOCK
    }
}

/// Longest password `passwd` reads (bytes).
const MAX_PASSWORD_BYTES: usize = 1024;

/// `egress-dlp passwd USER`: reads a password (its first line) from `input` and prints the
/// `USER:$argon2id$...` line to add to the credentials file. Exit 2 on a bad user name, an
/// empty or over-long password, or unreadable input.
pub fn passwd(user: &str, input: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    use crate::policy::identity;
    if !identity::valid_user_name(user) {
        let _ = writeln!(
            err,
            "error: user name {user:?} must be 1-{} letters, digits or . _ - @ +",
            identity::MAX_USER_BYTES
        );
        return EXIT_ERROR;
    }
    let mut raw = Vec::new();
    if let Err(e) = input
        .take(MAX_PASSWORD_BYTES as u64 + 2)
        .read_to_end(&mut raw)
    {
        let _ = writeln!(err, "error: cannot read the password: {e}");
        return EXIT_ERROR;
    }
    let line = raw.split(|&b| b == b'\n').next().unwrap_or_default();
    let password = line.strip_suffix(b"\r").unwrap_or(line);
    if password.is_empty() {
        let _ = writeln!(err, "error: empty password (write it on standard input)");
        return EXIT_ERROR;
    }
    if password.len() > MAX_PASSWORD_BYTES {
        let _ = writeln!(
            err,
            "error: the password is longer than {MAX_PASSWORD_BYTES} bytes"
        );
        return EXIT_ERROR;
    }
    let _ = writeln!(out, "{user}:{}", identity::hash_password(password));
    EXIT_OK
}

/// `egress-dlp ca init`: creates the interception CA in `data_dir` (`ca.pem`, and
/// `ca-key.pem` with mode 0600) and says how to trust it. Exit 2 when a CA is already there
/// (never overwritten) or the files cannot be written.
pub fn ca_init(data_dir: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let paths = crate::tls::CaPaths::in_dir(data_dir);
    match crate::tls::ca::init(&paths) {
        Ok(()) => {
            write_ca_created(&paths, out);
            EXIT_OK
        }
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            EXIT_ERROR
        }
    }
}

/// Before `serve` with `tls.intercept`: creates the data directory's CA when neither of its
/// files exists (a configured `tls.ca_cert` is never created) and says so on `out`, or
/// names the CA in use. `Err` says why the CA cannot be used.
pub fn prepare_ca(tls: &crate::config::Tls, out: &mut dyn Write) -> Result<(), String> {
    if !tls.intercept {
        return Ok(());
    }
    let paths = crate::tls::CaPaths {
        cert: tls.ca_cert.clone(),
        key: tls.ca_key.clone(),
    };
    if tls.ca_configured {
        let _ = writeln!(out, "TLS interception CA: {}", paths.cert.display());
        return Ok(());
    }
    match crate::tls::ca::ensure(&paths) {
        Ok(true) => {
            write_ca_created(&paths, out);
            Ok(())
        }
        Ok(false) => {
            let _ = writeln!(out, "TLS interception CA: {}", paths.cert.display());
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn write_ca_created(paths: &crate::tls::CaPaths, out: &mut dyn Write) {
    let _ = writeln!(
        out,
        "Created the TLS interception CA:\n  certificate: {}\n  private key: {} (mode 0600)\n{}",
        paths.cert.display(),
        paths.key.display(),
        crate::tls::ca::TRUST_HOWTO.replace("ca.pem", &paths.cert.display().to_string()),
    );
}
