//! The audit writer: a thread of its own that owns the log file.
//!
//! Events arrive over a channel (bounded by the count the [`Auditor`](super::Auditor)
//! keeps, `audit.queue`) and are written in batches, one `write` per batch, each line
//! whole. Between batches the file is rotated when it would grow past
//! `audit.rotate_bytes` (`audit.jsonl` becomes `audit.jsonl.1`, `.1` becomes `.2`, ...,
//! `audit.keep` files kept), and reopened on request (SIGHUP, after an external rotation)
//! or when the file at the path is no longer the open one (deleted or replaced: checked
//! before each batch, so the batch goes to a new file rather than a deleted one).
//!
//! When the file cannot be opened or written, the events stay queued and the thread
//! retries every [`RETRY`]; the failure and the recovery are each logged once and counted.
//! A write that failed part-way may have left a partial line: the next open ends it with a
//! newline before writing, so every line of the file is a whole event or a visibly broken
//! one, and the event itself is written again in full (an event may then appear twice,
//! never not at all). On [`Writer::close`] everything accepted is written and synced.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use tracing::{error, info, warn};

use super::{Event, Shared};
use crate::config::Audit as AuditConfig;
use crate::metrics::{AuditOp, AuditResult, Rotation};

/// How often a failing sink is retried.
pub const RETRY: Duration = Duration::from_secs(1);

/// After the first event of a batch arrives, how long the writer waits for more.
const GATHER: Duration = Duration::from_millis(5);

/// Most events written in one batch.
const BATCH: usize = 1024;

/// At shutdown, how many times a failing sink is retried before what is left is dropped.
const CLOSE_RETRIES: usize = 5;

/// A message to the writer thread.
pub(crate) enum Msg {
    /// Write this event.
    Event(Box<Event>),
    /// Reopen the file (SIGHUP).
    Reopen,
    /// Write everything received so far, sync, stop; then signal the sender.
    Close(std::sync::mpsc::SyncSender<()>),
}

/// The writer thread; [`Writer::close`] stops it after writing everything accepted.
pub struct Writer {
    tx: Sender<Msg>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// Writes every event accepted so far, syncs the file and stops the thread. Events
    /// submitted afterwards are refused ([`Unrecorded::Closed`](super::Unrecorded)).
    pub async fn close(mut self) {
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        let sent = self.tx.send(Msg::Close(done_tx)).is_ok();
        let thread = self.thread.take();
        let _ = tokio::task::spawn_blocking(move || {
            if sent {
                let _ = done_rx.recv();
            }
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// Starts the writer thread, having tried to open the file once (so that the sink's state
/// is known before the first request).
pub(crate) fn spawn(
    config: &AuditConfig,
    shared: Arc<Shared>,
) -> io::Result<(Sender<Msg>, Writer)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut sink = FileSink {
        path: config.path.clone(),
        file: None,
        size: 0,
        rotate_bytes: config.rotate_bytes,
        keep: config.keep,
        shared,
        failing: false,
    };
    sink.ensure_open();
    let thread = std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || writer_loop(sink, rx))?;
    Ok((
        tx.clone(),
        Writer {
            tx,
            thread: Some(thread),
        },
    ))
}

fn writer_loop(mut sink: FileSink, rx: Receiver<Msg>) {
    let mut pending: VecDeque<Box<Event>> = VecDeque::new();
    let mut close: Option<std::sync::mpsc::SyncSender<()>> = None;
    loop {
        let first = if sink.file.is_none() {
            rx.recv_timeout(RETRY)
        } else {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        let mut next = match first {
            Ok(msg) => Some(msg),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if matches!(next, Some(Msg::Event(_))) {
            // Let a batch gather: one write for many events, and while this thread is not
            // parked in `recv`, sending an event wakes nobody (no syscall on the request path).
            std::thread::sleep(GATHER);
        }
        // Take what else is waiting, in order, up to a batch.
        while let Some(msg) = next.take() {
            match msg {
                Msg::Event(event) => pending.push_back(event),
                Msg::Reopen => {
                    sink.write(&mut pending);
                    sink.reopen();
                }
                Msg::Close(done) => {
                    close = Some(done);
                    break;
                }
            }
            if pending.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        sink.write(&mut pending);
        if pending.is_empty() && sink.file.is_none() {
            // Down with nothing queued (under `audit.required` nothing is accepted while
            // down): the file is still tried again every `RETRY`, or the log would never
            // come back (found in review).
            sink.ensure_open();
        }
        if close.is_some() {
            break;
        }
    }
    // Closing: everything accepted gets its chance.
    while let Ok(msg) = rx.try_recv() {
        if let Msg::Event(event) = msg {
            pending.push_back(event);
        }
    }
    for _ in 0..CLOSE_RETRIES {
        sink.write(&mut pending);
        if pending.is_empty() {
            break;
        }
        std::thread::sleep(RETRY / 5);
    }
    if !pending.is_empty() {
        error!(
            events = pending.len(),
            path = %sink.path.display(),
            "audit log unwritable at shutdown: events lost"
        );
        sink.dropped(pending.len());
    }
    sink.sync();
    if let Some(done) = close {
        let _ = done.send(());
    }
}

/// The log file and its state.
struct FileSink {
    path: PathBuf,
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    rotate_bytes: Option<u64>,
    keep: usize,
    shared: Arc<Shared>,
    /// A failure has been logged and not yet its recovery.
    failing: bool,
}

impl FileSink {
    /// Opens the file if it is not open; says whether it is.
    fn ensure_open(&mut self) -> bool {
        if self.file.is_some() {
            return true;
        }
        match open_append(&self.path) {
            Ok((file, size)) => {
                self.file = Some(file);
                self.size = size;
                self.up();
                true
            }
            Err(e) => {
                self.down(AuditOp::Open, &e);
                false
            }
        }
    }

    /// Writes as many pending events as the file takes; those not written stay pending.
    fn write(&mut self, pending: &mut VecDeque<Box<Event>>) {
        if !pending.is_empty() && !self.still_at_path() {
            // Deleted or replaced behind our back: events written to the old file would be
            // lost with it (found in review), so they go to a new file at the path.
            warn!(path = %self.path.display(), "audit log file was deleted or replaced: reopening it");
            self.sync();
            self.file = None;
            if self.ensure_open() {
                self.shared.metrics.audit_rotated(Rotation::Replaced);
            }
        }
        while !pending.is_empty() {
            if !self.ensure_open() {
                return;
            }
            let mut buf = Vec::with_capacity(pending.len().min(BATCH) * 512);
            let mut taken = 0;
            for event in pending.iter().take(BATCH) {
                let before = buf.len();
                if serde_json::to_writer(&mut buf, event).is_err() {
                    // An event that does not serialise is a bug; write what can be said.
                    buf.truncate(before);
                    buf.extend_from_slice(b"{\"error\":\"unserialisable audit event\"}");
                }
                buf.push(b'\n');
                if let Some(limit) = self.rotate_bytes {
                    let first_line = before == 0;
                    // A line alone in an empty file is written whatever its size.
                    let alone = first_line && self.size == 0;
                    if !alone && self.size + buf.len() as u64 > limit {
                        if first_line {
                            // This event starts a new file.
                            self.rotate();
                            if !self.ensure_open() {
                                return;
                            }
                        } else {
                            // Write what fits; the event goes in the next round.
                            buf.truncate(before);
                            break;
                        }
                    }
                }
                taken += 1;
            }
            let file = self.file.as_mut().expect("opened above");
            match file.write_all(&buf) {
                Ok(()) => {
                    self.size += buf.len() as u64;
                    pending.drain(..taken);
                    self.written(taken);
                }
                Err(e) => {
                    self.file = None;
                    self.down(AuditOp::Write, &e);
                    return;
                }
            }
        }
    }

    /// Whether the open file is still the one at `path`: false when it was deleted, moved
    /// away or replaced (two `stat`s, once per batch). A file truncated in place
    /// (logrotate's `copytruncate`) is still ours; its size is taken again so that size
    /// rotation counts from there.
    fn still_at_path(&mut self) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let Some(open) = self.file.as_ref().and_then(|f| f.metadata().ok()) else {
                return true;
            };
            match fs::metadata(&self.path) {
                Ok(named) if named.dev() == open.dev() && named.ino() == open.ino() => {
                    self.size = open.len();
                    true
                }
                Ok(_) => false,
                Err(e) => e.kind() != io::ErrorKind::NotFound,
            }
        }
        #[cfg(not(unix))]
        {
            true
        }
    }

    /// Size rotation: `path` -> `path.1` -> ... -> `path.keep`, then a new `path`.
    fn rotate(&mut self) {
        self.sync();
        self.file = None;
        let base = self.path.clone();
        let numbered = |i: usize| {
            let mut name = base.as_os_str().to_owned();
            name.push(format!(".{i}"));
            PathBuf::from(name)
        };
        for i in (1..self.keep).rev() {
            match fs::rename(numbered(i), numbered(i + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => self.down(AuditOp::Rotate, &e),
            }
        }
        match fs::rename(&self.path, numbered(1)) {
            Ok(()) => {
                self.shared.metrics.audit_rotated(Rotation::Size);
                info!(path = %self.path.display(), "audit log rotated by size");
            }
            // Keeps writing to the same file: better one big file than a lost event.
            Err(e) => self.down(AuditOp::Rotate, &e),
        }
    }

    /// Closes and reopens the file (it may have been moved away).
    fn reopen(&mut self) {
        self.sync();
        self.file = None;
        if self.ensure_open() {
            self.shared.metrics.audit_rotated(Rotation::Reopen);
            info!(path = %self.path.display(), "audit log reopened");
        }
    }

    fn sync(&mut self) {
        if let Some(file) = &self.file {
            if let Err(e) = file.sync_data() {
                self.down(AuditOp::Flush, &e);
            }
        }
    }

    fn written(&mut self, n: usize) {
        self.shared
            .metrics
            .audit_events(AuditResult::Written, n as u64);
        self.settle(n);
        self.up();
    }

    fn dropped(&mut self, n: usize) {
        self.shared
            .metrics
            .audit_events(AuditResult::Dropped, n as u64);
        self.settle(n);
    }

    fn settle(&mut self, n: usize) {
        let before = self.shared.depth.fetch_sub(n, Ordering::AcqRel);
        self.shared.metrics.audit_queue(before.saturating_sub(n));
    }

    fn up(&mut self) {
        self.shared.up.store(true, Ordering::Release);
        self.shared.metrics.audit_sink_up(true);
        if self.failing {
            self.failing = false;
            info!(path = %self.path.display(), "audit log writable again");
        }
    }

    fn down(&mut self, op: AuditOp, e: &io::Error) {
        self.shared.metrics.audit_sink_error(op);
        if matches!(op, AuditOp::Open | AuditOp::Write) {
            self.shared.up.store(false, Ordering::Release);
            self.shared.metrics.audit_sink_up(false);
        }
        if !self.failing || op == AuditOp::Rotate {
            warn!(path = %self.path.display(), op = op_name(op), error = %e, "audit log cannot be written");
        }
        if matches!(op, AuditOp::Open | AuditOp::Write) {
            self.failing = true;
        }
    }
}

fn op_name(op: AuditOp) -> &'static str {
    use crate::metrics::Label;
    op.as_str()
}

/// Opens `path` for appending (creating it, and its directory, owner-only), and makes sure
/// it ends with a newline (a torn last line from a crash or a failed write is ended).
fn open_append(path: &Path) -> io::Result<(File, u64)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let mut size = file.metadata()?.len();
    if size > 0 {
        let mut last = [0u8];
        file.seek(SeekFrom::Start(size - 1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
            size += 1;
        }
    }
    Ok((file, size))
}
