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
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

pub use crate::config::LogFormat;

/// Keeps the log writer thread alive; dropping it writes out every line still queued.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(Option<Batched>);

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(batched) = self.0.take() {
            batched.stop();
        }
    }
}

/// Installs the global subscriber, filtered by `RUST_LOG` (default `info`), writing to
/// stderr from a thread of its own ([`Batched`]): a request formats its line and appends
/// it to a buffer, and never waits for a `write` (unless a full buffer makes it wait
/// rather than drop a line). Call once, from `main`, and keep the guard until exit.
pub fn init(format: LogFormat) -> LogGuard {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let batched = Batched::start(std::io::stderr(), BATCH_EVERY, BATCH_MAX);
    let _ = try_init(format, filter, batched.writer(), ansi);
    LogGuard(Some(batched))
}

/// How often the log writer thread writes out what was queued.
const BATCH_EVERY: Duration = Duration::from_millis(10);

/// Bytes queued past which a line waits for the writer thread (which is woken at once).
const BATCH_MAX: usize = 4 << 20;

/// Log lines written out in batches by a thread of their own.
///
/// A line is appended to a shared buffer under a lock (no syscall, no thread woken);
/// the writer thread takes the whole buffer every [`BATCH_EVERY`] and writes it in one go.
/// At `info` the proxy writes a line per request: a queue with a blocking receiver (as
/// `tracing-appender`'s) woke the writer thread and made a `write` for every request,
/// about a quarter of a small request's CPU time on a 2-core machine (session 14:
/// 88-110 µs a request at `info` against 58-70 at `warn`). Lines keep their order; a
/// buffer past `max` bytes wakes the writer and makes the line wait, so nothing is
/// dropped; stopping writes out everything queued.
pub struct Batched {
    shared: Arc<BatchShared>,
    thread: Option<std::thread::JoinHandle<Box<dyn Write + Send>>>,
}

struct BatchShared {
    queue: Mutex<BatchQueue>,
    /// The writer thread waits here (with a timeout); woken early when full or stopping.
    wake: Condvar,
    /// Lines wait here while the queue is full.
    room: Condvar,
    max: usize,
}

#[derive(Default)]
struct BatchQueue {
    buf: Vec<u8>,
    stopping: bool,
    /// The writer thread is gone (it failed to start, or panicked in a `write`): a full
    /// queue then drops lines instead of making them wait for nobody (found in review).
    dead: bool,
}

/// Marks the queue dead when the writer thread ends, however it ends.
struct Alive(Arc<BatchShared>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.lock().dead = true;
        self.0.room.notify_all();
    }
}

impl Batched {
    /// Starts the writer thread over `out`, writing every `every` (or when `max` bytes
    /// are queued).
    pub fn start<W: Write + Send + 'static>(out: W, every: Duration, max: usize) -> Batched {
        let shared = Arc::new(BatchShared {
            queue: Mutex::new(BatchQueue::default()),
            wake: Condvar::new(),
            room: Condvar::new(),
            max,
        });
        let mut out: Box<dyn Write + Send> = Box::new(out);
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || {
                    let _alive = Alive(shared.clone());
                    let mut taken = Vec::new();
                    loop {
                        let stopping = {
                            let mut q = shared.lock();
                            if !q.stopping && q.buf.len() < shared.max {
                                q = shared
                                    .wake
                                    .wait_timeout(q, every)
                                    .unwrap_or_else(|e| e.into_inner())
                                    .0;
                            }
                            std::mem::swap(&mut taken, &mut q.buf);
                            q.stopping
                        };
                        shared.room.notify_all();
                        write_out(&mut out, &mut taken);
                        if stopping {
                            return out;
                        }
                    }
                })
                .ok()
        };
        if thread.is_none() {
            shared.lock().dead = true;
        }
        Batched { shared, thread }
    }

    /// A [`MakeWriter`] appending whole lines to the queue.
    pub fn writer(&self) -> BatchWriter {
        BatchWriter(self.shared.clone())
    }

    /// Writes out everything queued and stops the writer thread. Lines logged after this
    /// (by threads still running at exit) are not written.
    pub fn stop(mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        self.shared.room.notify_all();
        if let Some(Ok(mut out)) = self.thread.take().map(std::thread::JoinHandle::join) {
            let mut rest = std::mem::take(&mut self.shared.lock().buf);
            write_out(&mut out, &mut rest);
        }
    }
}

/// Writes `bytes` out and empties it (a failing stderr has nowhere to report to).
fn write_out(out: &mut Box<dyn Write + Send>, bytes: &mut Vec<u8>) {
    if !bytes.is_empty() {
        let _ = out.write_all(bytes);
        let _ = out.flush();
        bytes.clear();
    }
}

impl BatchShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, BatchQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Appends to a [`Batched`] queue; each `write` (the formatter writes a line at once)
/// goes in whole.
#[derive(Clone)]
pub struct BatchWriter(Arc<BatchShared>);

impl std::fmt::Debug for BatchWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchWriter")
    }
}

impl Write for BatchWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let shared = &self.0;
        let mut q = shared.lock();
        while q.buf.len() >= shared.max && !q.stopping && !q.dead {
            shared.wake.notify_one();
            q = shared.room.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        if q.buf.len() < shared.max || !q.dead {
            q.buf.extend_from_slice(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'w self) -> BatchWriter {
        self.clone()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose bytes and `write` calls the test can read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut s = self.0.lock().unwrap();
            s.0.extend_from_slice(buf);
            s.1 += 1;
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_whole_in_order_and_in_few_writes() {
        let sink = Sink::default();
        // A long interval: everything is written at the stop, in one go.
        let batched = Batched::start(sink.clone(), Duration::from_secs(60), 1 << 20);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = batched.writer();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        w.write_all(format!("thread {t} line {i}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        batched.stop();
        let (bytes, writes) = sink.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        for t in 0..4 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            let want: Vec<String> = (0..500).map(|i| format!("thread {t} line {i}")).collect();
            assert_eq!(mine, want, "thread {t}: every line, whole, in order");
        }
        assert_eq!(text.lines().count(), 2000);
        assert!(writes <= 2, "{writes} writes for 2000 lines");
    }

    #[test]
    fn a_full_queue_makes_lines_wait_not_vanish() {
        let sink = Sink::default();
        // Room for about ten lines: the writers wait for the writer thread, which is
        // woken when the queue is full (its interval alone would take minutes).
        let batched = Batched::start(sink.clone(), Duration::from_secs(60), 200);
        let mut w = batched.writer();
        for i in 0..1000 {
            w.write_all(format!("line {i:04}\n").as_bytes()).unwrap();
        }
        batched.stop();
        let text = String::from_utf8(sink.0.lock().unwrap().0.clone()).unwrap();
        let want: String = (0..1000).map(|i| format!("line {i:04}\n")).collect();
        assert_eq!(text, want);
    }

    #[test]
    fn lines_go_out_within_the_interval() {
        let sink = Sink::default();
        let batched = Batched::start(sink.clone(), Duration::from_millis(5), 1 << 20);
        batched.writer().write_all(b"listening\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.0.lock().unwrap().0.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the line never went out"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        batched.stop();
        assert_eq!(sink.0.lock().unwrap().0, b"listening\n");
    }
}
