//! The writer on its own: rotation, reopen, shutdown and failure lose no accepted event.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::Audit as AuditConfig;
use crate::rules::RuleSet;

fn rules() -> RuleSet {
    crate::rules::load_dir(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rules"
    )))
    .expect("fixture rules load")
}

fn config(path: PathBuf) -> AuditConfig {
    AuditConfig {
        path,
        required: false,
        all_requests: false,
        rotate_bytes: None,
        keep: 10,
        queue: 10_000,
    }
}

fn event(n: usize) -> Event {
    Event {
        time: now(),
        request_id: format!("req-{n}"),
        client: "127.0.0.1".parse().unwrap(),
        user: None,
        method: "POST".into(),
        host: "upload.example".into(),
        port: 80,
        path: "/submit".into(),
        action: Action::Log,
        partial: false,
        bytes: 100,
        rules: Vec::new(),
        reasons: Vec::new(),
        not_scanned: None,
        destination_blocked: None,
    }
}

/// Request ids of every event line in `files`, in order; panics on a line that is not an
/// event.
fn ids(files: &[PathBuf]) -> Vec<String> {
    let mut ids = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: bad line {line:?}: {e}", f.display()));
            ids.push(v["request_id"].as_str().unwrap().to_owned());
        }
    }
    ids
}

fn start(config: &AuditConfig, data: &Path) -> (Auditor, sink::Writer, Arc<Metrics>) {
    let set = rules();
    let metrics = Arc::new(Metrics::new(&set));
    let (auditor, writer) = Auditor::start(config, data, metrics.clone()).unwrap();
    (auditor, writer, metrics)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    sorted(range.map(|n| format!("req-{n}")).collect())
}

#[tokio::test]
async fn size_rotation_keeps_every_event_whole_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut cfg = config(path.clone());
    cfg.rotate_bytes = Some(4096);
    cfg.keep = 100;
    let (auditor, writer, metrics) = start(&cfg, dir.path());
    for n in 0..300 {
        auditor.submit(event(n)).unwrap();
    }
    writer.close().await;
    let mut files = vec![path.clone()];
    files.extend((1..=100).map(|i| dir.path().join(format!("audit.jsonl.{i}"))));
    let present: Vec<&PathBuf> = files.iter().filter(|f| f.exists()).collect();
    assert!(present.len() > 5, "rotated into {} files", present.len());
    for f in &present {
        let size = std::fs::metadata(f).unwrap().len();
        assert!(size <= 4096, "{} is {size} bytes", f.display());
    }
    // Newest first: .N is the oldest; read oldest to newest and the order is submission's.
    let mut oldest_first: Vec<PathBuf> = files[1..].iter().rev().cloned().collect();
    oldest_first.push(path);
    let got = ids(&oldest_first);
    let want: Vec<String> = (0..300).map(|n| format!("req-{n}")).collect();
    assert_eq!(got, want);
    let text = metrics.encode();
    assert!(text.contains("egress_dlp_audit_events_total{result=\"written\"} 300"));
    let rotations = (present.len() - 1).to_string();
    assert!(
        text.contains(&format!(
            "egress_dlp_audit_rotations_total{{trigger=\"size\"}} {rotations}"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn size_rotation_keeps_at_most_keep_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut cfg = config(path.clone());
    cfg.rotate_bytes = Some(4096);
    cfg.keep = 2;
    let (auditor, writer, _) = start(&cfg, dir.path());
    for n in 0..300 {
        auditor.submit(event(n)).unwrap();
    }
    writer.close().await;
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("audit.jsonl"))
        .collect();
    names.sort();
    assert_eq!(names, ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]);
    // The newest events survive, in order, ending with the last one.
    let got = ids(&[
        dir.path().join("audit.jsonl.2"),
        dir.path().join("audit.jsonl.1"),
        path,
    ]);
    assert_eq!(got.last().unwrap(), "req-299");
}

#[tokio::test]
async fn reopen_after_an_external_move_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let moved = dir.path().join("audit.jsonl.moved");
    let (auditor, writer, metrics) = start(&config(path.clone()), dir.path());
    for n in 0..100 {
        auditor.submit(event(n)).unwrap();
    }
    // What logrotate does: move the file, then signal.
    std::fs::rename(&path, &moved).unwrap();
    auditor.reopen();
    for n in 100..200 {
        auditor.submit(event(n)).unwrap();
    }
    writer.close().await;
    assert!(path.exists(), "a new file was opened");
    assert_eq!(sorted(ids(&[moved, path])), expected(0..200));
    assert!(
        metrics
            .encode()
            .contains("egress_dlp_audit_rotations_total{trigger=\"reopen\"} 1")
    );
}

/// Waits until the writer has written `n` events in all.
async fn written(metrics: &Metrics, n: usize) {
    let want = format!("egress_dlp_audit_events_total{{result=\"written\"}} {n}\n");
    for _ in 0..500 {
        if metrics.encode().contains(&want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} events never written: {}", metrics.encode());
}

#[tokio::test]
async fn a_deleted_log_file_is_replaced_before_the_next_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (auditor, writer, metrics) = start(&config(path.clone()), dir.path());
    for n in 0..50 {
        auditor.submit(event(n)).unwrap();
    }
    written(&metrics, 50).await;
    // Deleted, not moved, and no SIGHUP: these events must not go into the deleted file.
    std::fs::remove_file(&path).unwrap();
    for n in 50..100 {
        auditor.submit(event(n)).unwrap();
    }
    written(&metrics, 100).await;
    assert_eq!(sorted(ids(std::slice::from_ref(&path))), expected(50..100));
    // The same when another file is put in its place.
    let other = dir.path().join("other");
    std::fs::write(&other, "").unwrap();
    std::fs::rename(&other, &path).unwrap();
    for n in 100..150 {
        auditor.submit(event(n)).unwrap();
    }
    writer.close().await;
    assert_eq!(sorted(ids(&[path])), expected(100..150));
    assert!(
        metrics
            .encode()
            .contains("egress_dlp_audit_rotations_total{trigger=\"replaced\"} 2")
    );
}

#[tokio::test]
async fn a_log_truncated_in_place_is_written_on_and_rotated_by_its_new_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut cfg = config(path.clone());
    cfg.rotate_bytes = Some(8192);
    let (auditor, writer, metrics) = start(&cfg, dir.path());
    for n in 0..20 {
        auditor.submit(event(n)).unwrap();
    }
    written(&metrics, 20).await;
    let before = std::fs::metadata(&path).unwrap().len();
    assert!(before > 4096 && before < 8192, "{before} bytes");
    // logrotate's copytruncate: the same file, emptied.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    for n in 20..40 {
        auditor.submit(event(n)).unwrap();
    }
    writer.close().await;
    // 20 more events fit the emptied file: no rotation, and they are all there, whole.
    assert!(!dir.path().join("audit.jsonl.1").exists());
    assert_eq!(sorted(ids(&[path])), expected(20..40));
    assert!(!metrics.encode().contains("trigger=\"size\"} 1"));
}

#[tokio::test]
async fn an_unwritable_sink_is_reported_and_required_refuses() {
    let dir = tempfile::tempdir().unwrap();
    // The parent of the log is a regular file: no one can create it (root neither).
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let mut cfg = config(blocker.join("audit.jsonl"));
    cfg.required = true;
    let (auditor, writer, metrics) = start(&cfg, dir.path());
    assert!(!auditor.sink_up());
    assert_eq!(auditor.submit(event(1)), Err(Unrecorded::SinkDown));
    let text = metrics.encode();
    assert!(text.contains("egress_dlp_audit_sink_up 0"), "{text}");
    assert!(text.contains("egress_dlp_audit_events_total{result=\"refused\"} 1"));
    assert!(text.contains("egress_dlp_audit_sink_errors_total{op=\"open\"} 1"));
    writer.close().await;
}

#[tokio::test]
async fn events_wait_for_a_failing_sink_and_are_written_when_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("later-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let path = blocker.join("audit.jsonl");
    let (auditor, writer, metrics) = start(&config(path.clone()), dir.path());
    assert!(!auditor.sink_up());
    for n in 0..20 {
        auditor.submit(event(n)).unwrap();
    }
    assert!(
        metrics
            .encode()
            .contains("egress_dlp_audit_queue_events 20")
    );
    // The operator fixes the directory; the writer retries on its own.
    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir(&blocker).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !auditor.sink_up() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(auditor.sink_up(), "the sink recovered");
    writer.close().await;
    assert_eq!(sorted(ids(&[path])), expected(0..20));
    let text = metrics.encode();
    assert!(text.contains("egress_dlp_audit_events_total{result=\"written\"} 20"));
    assert!(text.contains("egress_dlp_audit_queue_events 0"));
    assert!(text.contains("egress_dlp_audit_sink_up 1"));
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_or_refuses_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("f");
    std::fs::write(&blocker, "x").unwrap();
    let mut cfg = config(blocker.join("audit.jsonl"));
    cfg.queue = 5;
    let (auditor, writer, metrics) = start(&cfg, dir.path());
    for n in 0..5 {
        auditor.submit(event(n)).unwrap();
    }
    assert_eq!(auditor.submit(event(5)), Err(Unrecorded::QueueFull));
    assert!(
        metrics
            .encode()
            .contains("egress_dlp_audit_events_total{result=\"dropped\"} 1")
    );
    writer.close().await;
    // Still unwritable at shutdown: the five waiting are reported lost.
    assert!(
        metrics
            .encode()
            .contains("egress_dlp_audit_events_total{result=\"dropped\"} 6")
    );
}

#[tokio::test]
async fn a_torn_last_line_is_ended_before_new_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, "{\"request_id\":\"old\"}\n{\"request_id\":\"tor").unwrap();
    let (auditor, writer, _) = start(&config(path.clone()), dir.path());
    auditor.submit(event(7)).unwrap();
    writer.close().await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1], "{\"request_id\":\"tor");
    assert!(lines[2].contains("\"req-7\""));
}

#[cfg(unix)]
#[tokio::test]
async fn the_log_is_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/audit.jsonl");
    let (auditor, writer, _) = start(&config(path.clone()), dir.path());
    auditor.submit(event(1)).unwrap();
    writer.close().await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// The audit path hides what the scanner decodes as base64, and only that: a token after
/// the path's words, the wrapped lines after it (found in review), not a long slug.
#[test]
fn base64_runs_are_hidden_in_the_audit_path() {
    let token = "dXNlcjBAYWNtZS1jb3JwLmlvLHVzZXIxQGFjbWUtY29ycC5pbyx1c2VyMkBhY21lLWNvcnAuaW8s";
    let masked = |p: &str| String::from_utf8(mask_base64_runs(p.as_bytes())).unwrap();
    assert_eq!(masked(&format!("/s/{token}")), "/s/[base64]");
    assert_eq!(
        masked(&format!("/v1/export/{token}?x")),
        "/v1/export/[base64]?x"
    );
    assert_eq!(
        masked(&format!(
            "/u/{token}\ndXgwMUBhY21lLWNvcnAuaW8s\r\ndXgwMkBhY21lLWNvcnAuaW8s\n?x"
        )),
        "/u/[base64]\n?x"
    );
    let slug = "/blog/2024/this-is-a-very-long-article-slug-about-data-loss-prevention-at-scale";
    assert_eq!(masked(slug), slug);
    assert_eq!(masked("/short/Path"), "/short/Path");
}
