//! The proxy's own log lines (tracing): human text by default, JSON lines with
//! `log.format: json` or `--log-format json`.
//!
//! The level comes from `RUST_LOG` (default `info`). At `info` the proxy writes one line
//! per request (`request` with its id, verdict, status and time; see `proxy`), one per
//! state change (listening, draining, audit log failing or back) and nothing per body
//! chunk. No line carries a request target, a header value or a matched value: a finding
//! appears as rule ids and counts only.
//!
//! Not here: the audit log ([`crate::audit`]), which is the record of decisions; these
//! lines are for operators.

use std::io::Write;

pub use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

pub use crate::config::LogFormat;

/// Keeps the log writer thread alive; dropping it writes out every line still queued.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] tracing_appender::non_blocking::WorkerGuard);

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

/// Installs the global subscriber, filtered by `RUST_LOG` (default `info`), writing to
/// stderr from a thread of its own: a request formats its line but never waits for the
/// `write` (lines queue, and a full queue makes the caller wait rather than drop a line).
/// Call once, from `main`, and keep the guard until exit.
pub fn init(format: LogFormat) -> LogGuard {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    let _ = try_init(format, filter, writer, ansi);
    LogGuard(guard)
}

/// Installs the global subscriber writing to `writer`; an error if one is installed.
pub fn try_init<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    }
}

/// A [`MakeWriter`] that appends to a shared buffer: for tests that read the log lines.
#[derive(Debug, Clone, Default)]
pub struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Capture {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for Capture {
    type Writer = Capture;

    fn make_writer(&'w self) -> Capture {
        self.clone()
    }
}
