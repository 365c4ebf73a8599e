//! Validation of the operating keys: `audit:` (configures [`crate::audit`]) and `log:`
//! (configures [`crate::logging`]).

use std::path::{Path, PathBuf};

use super::Errors;
use super::raw::{RawAudit, RawLog};

/// Default size at which the audit log is rotated.
pub const DEFAULT_ROTATE_BYTES: u64 = 100 << 20;
/// Default number of rotated audit files kept.
pub const DEFAULT_KEEP: usize = 10;
/// Default number of audit events that may wait to be written.
pub const DEFAULT_QUEUE: usize = 10_000;

/// `audit:` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Path of the audit log.
    pub path: PathBuf,
    /// Refuse a request whose event cannot be recorded, rather than pass it unrecorded.
    pub required: bool,
    /// Record every request, allowed ones included.
    pub all_requests: bool,
    /// Rotate at this size; `None`: only on SIGHUP (reopen).
    pub rotate_bytes: Option<u64>,
    /// Rotated files kept.
    pub keep: usize,
    /// Events that may wait to be written.
    pub queue: usize,
}

/// Format of the proxy's own log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `log:` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Log {
    /// Text or JSON lines.
    pub format: LogFormat,
}

pub(super) fn audit(raw: RawAudit, data_dir: &Path, errors: &mut Errors) -> Audit {
    let rotate_bytes = match raw.rotate_bytes {
        None => Some(DEFAULT_ROTATE_BYTES),
        Some(super::raw::RawSize::Bytes(0)) => None,
        Some(size) => {
            let n = errors.size("audit.rotate_bytes", Some(size), DEFAULT_ROTATE_BYTES, 0);
            if n == 0 {
                None
            } else if n < 4096 {
                errors.push(
                    "audit.rotate_bytes",
                    format!("{n} bytes is below the minimum of 4096 (0 turns size rotation off)"),
                );
                Some(DEFAULT_ROTATE_BYTES)
            } else {
                Some(n)
            }
        }
    };
    let path = raw.path.unwrap_or_else(|| data_dir.join("audit.jsonl"));
    if path.file_name().is_none() {
        errors.push(
            "audit.path",
            format!("{} does not name a file", path.display()),
        );
    }
    Audit {
        path,
        required: raw.required.unwrap_or(false),
        all_requests: raw.all_requests.unwrap_or(false),
        rotate_bytes,
        keep: errors.count("audit.keep", raw.keep, DEFAULT_KEEP, 1_000),
        queue: errors.count("audit.queue", raw.queue, DEFAULT_QUEUE, super::MAX_COUNT),
    }
}

pub(super) fn log(raw: RawLog, errors: &mut Errors) -> Log {
    let format = match raw.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            errors.push("log.format", format!("{other:?} is not one of: text, json"));
            LogFormat::Text
        }
    };
    Log { format }
}

#[cfg(test)]
mod tests {
    use crate::config::{Overrides, from_yaml};

    fn rules() -> String {
        format!(
            "rules: {}/tests/fixtures/rules\n",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    #[test]
    fn audit_and_log_defaults() {
        let c = from_yaml(&rules(), None, &Overrides::default()).unwrap();
        assert_eq!(c.audit.path, std::path::Path::new("data/audit.jsonl"));
        assert!(!c.audit.required && !c.audit.all_requests);
        assert_eq!(c.audit.rotate_bytes, Some(100 << 20));
        assert_eq!((c.audit.keep, c.audit.queue), (10, 10_000));
        assert_eq!(c.log.format, super::LogFormat::Text);
    }

    #[test]
    fn audit_and_log_keys_are_read() {
        let yaml = format!(
            "{}audit:\n  path: /var/log/dlp.jsonl\n  required: true\n  all_requests: true\n  rotate_bytes: 1MiB\n  keep: 3\n  queue: 50\nlog:\n  format: json\n",
            rules()
        );
        let c = from_yaml(&yaml, None, &Overrides::default()).unwrap();
        assert_eq!(c.audit.path, std::path::Path::new("/var/log/dlp.jsonl"));
        assert!(c.audit.required && c.audit.all_requests);
        assert_eq!(c.audit.rotate_bytes, Some(1 << 20));
        assert_eq!((c.audit.keep, c.audit.queue), (3, 50));
        assert_eq!(c.log.format, super::LogFormat::Json);
        let off = format!("{}audit:\n  rotate_bytes: 0\n", rules());
        let c = from_yaml(&off, None, &Overrides::default()).unwrap();
        assert_eq!(c.audit.rotate_bytes, None);
    }

    #[test]
    fn every_bad_audit_or_log_key_is_reported_at_once() {
        let yaml = format!(
            "{}audit:\n  rotate_bytes: 10\n  keep: 0\n  queue: 0\nlog:\n  format: xml\n",
            rules()
        );
        let errors = from_yaml(&yaml, None, &Overrides::default()).unwrap_err().0;
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "audit.rotate_bytes",
                "audit.keep",
                "audit.queue",
                "log.format"
            ]
        );
        let unknown = format!("{}audit:\n  pth: x\n", rules());
        assert!(from_yaml(&unknown, None, &Overrides::default()).is_err());
    }
}
