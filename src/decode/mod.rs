//! Body decoders: content-encodings, forms, multipart, JSON, base64, zip archives — all
//! bounded — feeding one engine [`Stream`] per request.
//!
//! A customer list rarely leaves as plain text: it is gzipped, percent-encoded in a form,
//! a file inside multipart, a base64 string inside JSON, escaped as `\u0040`, or zipped
//! (an .xlsx or .docx is a zip). An [`Inspection`] sees through those shapes and scans what
//! is inside with the same engine and the same distinct counting as the raw bytes.
//!
//! # How the layers fit
//!
//! An [`Inspection`] owns the request's single [`Stream`]: the request target, the
//! configured headers and the body's views are all fed into it, so a value is counted once
//! per request however many layers it appears in (the raw body and a decoded layer, two
//! parts of a multipart upload). Each kind of content is a push-based state machine over
//! byte chunks (a *node*) that writes what it sees into the stream and hands embedded
//! content to child nodes:
//!
//! - `Content-Encoding` (`gzip`, `x-gzip`, `deflate`, `br`, `zstd`, stacks such as
//!   `gzip, br` undone right to left): [`encoding`];
//! - the `Content-Type`: `application/x-www-form-urlencoded` ([`form`]: keys and values
//!   percent-decoded, `+` as space), `multipart/*` ([`multipart`]: every part, its
//!   headers and filename, each part by its own `Content-Type` and
//!   `Content-Transfer-Encoding`), JSON ([`json`]: string values unescaped, `\uXXXX` and
//!   surrogate pairs included); anything else is scanned as the raw bytes;
//! - embedded content, found in any text or decoded layer (`sniff`): base64 runs of at
//!   least [`BASE64_MIN_RUN`] characters (standard or URL-safe alphabet) are decoded and
//!   scanned ([`base64`]); content that starts like a zip archive (.zip, .xlsx, .docx,
//!   .odt: [`zip`]) is read entry by entry, XML entries also as their text; content that
//!   starts like a gzip or zstd stream is decompressed; text that starts with a UTF-16
//!   byte-order mark (Excel's "Unicode Text", Windows PowerShell's `Out-File`) is
//!   transcoded to UTF-8 ([`utf16`]).
//!
//! Each decoded layer is fed as its own segment: a line break goes into the stream
//! whenever the output switches between layers, so no match joins bytes of two layers.
//! The raw bytes of a text body are fed exactly as they arrive (no copy), and the
//! embedded-base64 search samples one byte in [`BASE64_MIN_RUN`], so a plain body costs
//! the scan and little else.
//!
//! # Limits
//!
//! Every limit is in [`Limits`] (config keys `decode.*`): decompressed bytes per request,
//! the expansion ratio of each decompressor, archive entries per request and the nesting
//! depth. Hitting one, or meeting corrupt or unsupported input, stops that layer (its raw
//! bytes are still scanned) and records the request as *not fully scanned* with a
//! [`NotScanned`] reason; the proxy then follows `policy.on_inspection_error`. Memory per
//! request is bounded: a few fixed buffers per open layer, at most [`Limits::max_depth`]
//! layers deep, and a decompressor window each (brotli: at most 16 MiB, large windows
//! refused; zstd: at most [`encoding::ZSTD_WINDOW_LOG_MAX`]).
//!
//! This module does no I/O and knows nothing of tokio or hyper.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::scan::{Engine, Findings, Stream};

pub mod base64;
mod block;
pub mod encoding;
pub mod form;
mod form_base64;
pub mod json;

pub mod multipart;
mod node;
pub(crate) mod sniff;
mod unescape;
mod utf16;
mod views;
pub mod zip;

use node::Node;

/// Base64 runs shorter than this are not decoded (a 64-character run holds 48 bytes).
pub const BASE64_MIN_RUN: usize = 64;

/// The bounds every decoder works within. See the `decode:` config keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Decode layers followed inside each other (default 3).
    pub max_depth: u32,
    /// Bytes all decompressors (content-encodings, gzip/zstd inside, zip entries) may
    /// produce for one request, together (default 256 MiB).
    pub max_decoded_bytes: u64,
    /// Most bytes one decompressor may produce per byte it consumes, checked once it has
    /// produced [`RATIO_FLOOR`] bytes (default 100).
    pub max_ratio: u64,
    /// Zip entries read per request, across all archives (default 1000).
    pub max_archive_entries: u32,
}

/// A decompressor's expansion ratio is only judged past this much output: small, highly
/// repetitive payloads (a JSON array of zeros) are not bombs.
pub const RATIO_FLOOR: u64 = 1 << 20;

impl Limits {
    /// The decompressor windows a request's own `Content-Encoding` value opens under
    /// these limits (see [`encoding::window_bytes`]): none when no layer may open
    /// (`max_depth: 0`), as [`Account::may_open`] decides for the body's first layer.
    pub fn encoding_windows(&self, content_encoding: &[u8]) -> u64 {
        if self.max_depth == 0 {
            return 0;
        }
        encoding::window_bytes(content_encoding)
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: 3,
            max_decoded_bytes: 256 << 20,
            max_ratio: 100,
            max_archive_entries: 1000,
        }
    }
}

/// Why part of a request could not be inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `decode.max_decoded_bytes` was reached.
    DecodedBytes,
    /// A decompressor passed `decode.max_ratio`.
    Ratio,
    /// `decode.max_archive_entries` was reached.
    ArchiveEntries,
    /// Content nested deeper than `decode.max_depth`.
    Depth,
    /// Input that does not decode (a broken gzip stream, a truncated archive).
    Corrupt,
    /// An encoding or archive feature this proxy does not decode (`compress`, an
    /// encrypted or bzip2 zip entry).
    Unsupported,
    /// A brotli or zstd stream inside the content (a multipart part's own
    /// `Content-Encoding`, a zstd frame found in it) found the memory for decompressor
    /// windows (the [`WindowPool`] the proxy gives its inspections) taken.
    DecoderMemory,
    /// A rule's searches read more than [`crate::scan::WORK_PER_BYTE`] bytes per byte
    /// scanned and were stopped (content built to make the scanner slow: a JWT prefix
    /// repeated thousands of times in one token).
    ScanWork,
}

impl Reason {
    /// The stable label for metrics (`not_scanned_total{reason}`), logs and the JSON page.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DecodedBytes => "decoded_bytes_limit",
            Reason::Ratio => "expansion_ratio",
            Reason::ArchiveEntries => "archive_entries",
            Reason::Depth => "nesting_depth",
            Reason::Corrupt => "corrupt",
            Reason::Unsupported => "unsupported",
            Reason::DecoderMemory => "decoder_memory",
            Reason::ScanWork => "scan_work_limit",
        }
    }

    /// What it means, for the person reading a block page.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::DecodedBytes => "it decompresses to more than the proxy inspects",
            Reason::Ratio => "it expands far more than compressed data normally does",
            Reason::ArchiveEntries => "it holds more archive entries than the proxy inspects",
            Reason::Depth => "it is encoded inside more layers than the proxy follows",
            Reason::Corrupt => "its encoding is broken",
            Reason::Unsupported => "it uses an encoding or archive feature the proxy cannot read",
            Reason::DecoderMemory => {
                "the proxy is decompressing too much at once to decompress it too; try again"
            }
            Reason::ScanWork => "it would take far more work to inspect than any ordinary content",
        }
    }
}

/// A request (or part of it) was not fully scanned: the first reason met, and a short
/// description of where. The description never holds a byte of the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotScanned {
    /// Why.
    pub reason: Reason,
    /// Where, for logs (`gzip stream: invalid block type`, `zip entry 3: bzip2`).
    pub detail: String,
}

impl fmt::Display for NotScanned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.detail)
    }
}

/// What an inspection found: the findings over every layer, and whether anything could
/// not be inspected.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Findings of the whole request (target, headers, body and every decoded layer).
    pub findings: Findings,
    /// Set when part of the request was not fully scanned.
    pub not_scanned: Option<NotScanned>,
    /// Body bytes as received (before decoding).
    pub body_bytes: u64,
}

/// The request's bookkeeping shared by every node: the limits and what they have used.
#[derive(Debug)]
pub(crate) struct Account {
    limits: Limits,
    /// Memory for the windows of decompressors opened inside the content (`None`: no
    /// bound, as for `egress-dlp scan`).
    windows: Option<WindowPool>,
    /// What this request's own tickets hold now (at most [`REQUEST_WINDOWS`]).
    mine: Arc<AtomicU64>,
    decoded: u64,
    entries: u32,
    problem: Option<NotScanned>,
    /// Pending content is being scanned ([`Out::flush_pending`]).
    flushing: bool,
    /// A form field's own text is being read (see `FormNode::feed_field_text`).
    field_text: bool,
    /// `problem` is of the kind [`Account::forgive`] may drop: a corrupt stream that the
    /// text of a form field gave (not pending content scanned meanwhile).
    forgivable: bool,
    /// The first problem recorded after `problem` that is not of that kind: it takes its
    /// place when `problem` is forgiven.
    later_problem: Option<NotScanned>,
    /// The segment whose bytes went into the stream last (see [`Out::emit`]); 0 before
    /// the first.
    last_segment: u64,
    next_segment: u64,
    /// Input bytes the layers hold that are not scanned yet, every layer's [`Waiting`]
    /// together (see [`Inspection::waiting`]).
    waiting: Arc<AtomicU64>,
    /// Content due before its layer's decoded text ends (a decompressor's header fields
    /// and skippable frames past 512 KiB held: see [`Out::put_pending`]), each with the
    /// depth it is scanned at: it goes into the stream right after the next byte that
    /// separates values, so it cuts none. Counted in `waiting` meanwhile.
    pending: Vec<(u32, Vec<u8>)>,
    /// The last byte fed to the stream separates values (or none was fed): pending
    /// content put in here cuts no value.
    after_separator: bool,
}

/// What one layer holds of its input, not scanned yet (decoded base64 text waiting for its
/// place in the stream, an unfinished multipart header block, a zip's central directory):
/// a share of its request's [`Inspection::waiting`], given back when the layer goes.
#[derive(Debug)]
pub(crate) struct Waiting {
    total: Arc<AtomicU64>,
    mine: u64,
}

impl Waiting {
    pub(crate) fn new(acct: &Account) -> Waiting {
        Waiting {
            total: acct.waiting.clone(),
            mine: 0,
        }
    }

    /// The layer now holds `bytes` not scanned yet.
    pub(crate) fn set(&mut self, bytes: usize) {
        let bytes = bytes as u64;
        if bytes > self.mine {
            self.total.fetch_add(bytes - self.mine, Ordering::Relaxed);
        } else if bytes < self.mine {
            self.total.fetch_sub(self.mine - bytes, Ordering::Relaxed);
        }
        self.mine = bytes;
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.set(0);
    }
}

impl Account {
    fn new(limits: Limits) -> Account {
        Account {
            limits,
            windows: None,
            mine: Arc::default(),
            waiting: Arc::default(),
            decoded: 0,
            entries: 0,
            problem: None,
            flushing: false,
            field_text: false,
            forgivable: false,
            later_problem: None,
            last_segment: 0,
            next_segment: 1,
            pending: Vec::new(),
            after_separator: true,
        }
    }

    /// The window memory for a brotli or zstd decompressor opened inside the content:
    /// `Err` (the problem recorded) when the pool has not that much left.
    pub(crate) fn take_window(
        &mut self,
        bytes: u64,
        what: &str,
    ) -> Result<Option<WindowTicket>, ()> {
        let Some(pool) = &self.windows else {
            return Ok(None);
        };
        // One request holds at most `REQUEST_WINDOWS` at once: a part declaring
        // `br, br, br, br` took a whole default pool (found in review).
        let held = self.mine.load(Ordering::Relaxed);
        let ticket = (held + bytes <= REQUEST_WINDOWS)
            .then(|| pool.take(bytes, &self.mine))
            .flatten();
        match ticket {
            Some(ticket) => Ok(Some(ticket)),
            None => {
                self.problem(
                    Reason::DecoderMemory,
                    format!("{what}: no decompressor memory left"),
                );
                Err(())
            }
        }
    }

    /// A fresh segment id for a new layer's output.
    pub(crate) fn segment(&mut self) -> u64 {
        self.next_segment += 1;
        self.next_segment
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Records the first reason the request is not fully scanned.
    pub(crate) fn problem(&mut self, reason: Reason, detail: impl Into<String>) {
        let forgivable = self.field_text && !self.flushing && reason == Reason::Corrupt;
        if self.problem.is_none() {
            self.problem = Some(NotScanned {
                reason,
                detail: detail.into(),
            });
            self.forgivable = forgivable;
        } else if self.later_problem.is_none() && !forgivable {
            self.later_problem = Some(NotScanned {
                reason,
                detail: detail.into(),
            });
        }
    }

    /// Whether the request's problem is a corrupt stream a form field's own text gave
    /// (see `FormNode::end_field`).
    pub(crate) fn problem_forgivable(&self) -> bool {
        self.problem.is_some() && self.forgivable
    }

    /// Drops the request's problem (a layer found it was no problem after all); the first
    /// problem recorded after it takes its place (found in review: a depth limit met after
    /// a forgiven corrupt run went with it, and 1 000 addresses past it passed unread).
    pub(crate) fn forgive(&mut self) {
        self.problem = self.later_problem.take();
        self.forgivable = false;
    }

    /// Counts `n` more decompressed bytes; false (and the problem recorded) once the
    /// request's `max_decoded_bytes` is passed.
    pub(crate) fn take_decoded(&mut self, n: u64) -> bool {
        self.decoded += n;
        if self.decoded > self.limits.max_decoded_bytes {
            let limit = self.limits.max_decoded_bytes;
            self.problem(
                Reason::DecodedBytes,
                format!("more than {limit} decompressed bytes"),
            );
            return false;
        }
        true
    }

    /// Counts one more archive entry; false (and the problem recorded) past the limit.
    pub(crate) fn take_entry(&mut self) -> bool {
        self.entries += 1;
        if self.entries > self.limits.max_archive_entries {
            let limit = self.limits.max_archive_entries;
            self.problem(
                Reason::ArchiveEntries,
                format!("more than {limit} archive entries"),
            );
            return false;
        }
        true
    }

    /// Whether a layer at `depth` may be opened; records the problem when not.
    pub(crate) fn may_open(&mut self, depth: u32, what: &str) -> bool {
        if depth <= self.limits.max_depth {
            return true;
        }
        // Only the first problem is kept (and the first after it, see `later_problem`):
        // the text is not written again for every base64 run of a body at the depth limit.
        if self.problem.is_none() || self.later_problem.is_none() {
            let limit = self.limits.max_depth;
            self.problem(
                Reason::Depth,
                format!("{what} nested more than {limit} layers deep"),
            );
        }
        false
    }
}

/// Where nodes write: the request's stream and its account.
pub(crate) struct Out<'a, 'e> {
    pub(crate) stream: &'a mut Stream<'e>,
    pub(crate) acct: &'a mut Account,
}

impl Out<'_, '_> {
    /// Feeds `bytes` of segment `segment`; a line break first when the previous bytes
    /// came from another segment, so that no match joins two layers. Pending content
    /// ([`Out::put_pending`]) goes in right after the first byte of them that separates
    /// values.
    pub(crate) fn emit(&mut self, segment: u64, bytes: &[u8]) {
        if !self.acct.pending.is_empty()
            && let Some(p) = bytes.iter().position(|&b| sniff::separates_values(b))
        {
            self.emit_here(segment, &bytes[..=p]);
            self.flush_pending();
            return self.emit(segment, &bytes[p + 1..]);
        }
        self.emit_here(segment, bytes);
    }

    /// Content of its own (scanned at `depth`, as text) due now but not to be put between
    /// two bytes of the text being decoded, where it would cut the value across them
    /// (found in session 13: twelve addresses, each split by a zstd skippable frame of
    /// 1.1 MiB, were all lost): it goes in at the next byte that separates values, at the
    /// end of the content ([`Out::flush_pending`]), or before a streamed body's chunks go
    /// ([`Inspection::flush_pending`]). Counted as waiting meanwhile.
    pub(crate) fn put_pending(&mut self, depth: u32, content: Vec<u8>) {
        self.acct
            .waiting
            .fetch_add(content.len() as u64, Ordering::Relaxed);
        self.acct.pending.push((depth, content));
    }

    /// Bytes of pending content.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.acct.pending.iter().map(|(_, c)| c.len()).sum()
    }

    /// Scans the pending content now, each as content of its own.
    /// Its problems are pending content's, never forgiven (see [`Account::forgive`]).
    pub(crate) fn flush_pending(&mut self) {
        let flushing = std::mem::replace(&mut self.acct.flushing, true);
        for (depth, content) in std::mem::take(&mut self.acct.pending) {
            self.acct
                .waiting
                .fetch_sub(content.len() as u64, Ordering::Relaxed);
            let mut node = Node::text(depth, self.acct);
            node.feed(&content, self);
            node.finish(self);
        }
        self.acct.flushing = flushing;
    }

    fn emit_here(&mut self, segment: u64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if segment != self.acct.last_segment {
            if self.acct.last_segment != 0 {
                self.stream.feed(b"\n");
            }
            self.acct.last_segment = segment;
        }
        self.stream.feed(bytes);
        self.acct.after_separator = bytes.last().is_some_and(|&b| sniff::separates_values(b));
    }
}

/// One request's inspection: the target, the configured headers and the body, every layer
/// into one engine stream.
pub struct Inspection<'e> {
    stream: Stream<'e>,
    acct: Account,
    body: Node,
    body_bytes: u64,
    /// What setting the body's decoders up found wrong with its headers (an encoding that
    /// cannot be undone, a media type servers read differently): it matters only once
    /// there is a body, so it is recorded when the first body byte comes (a bodyless
    /// `GET` with a client's default `Content-Type: multipart/form-data` is not refused:
    /// found in review).
    deferred: Option<NotScanned>,
    /// A rule's stop for too much work is recorded (once).
    work_noted: bool,
}

impl fmt::Debug for Inspection<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inspection")
            .field("body_bytes", &self.body_bytes)
            .field("account", &self.acct)
            .finish_non_exhaustive()
    }
}

/// Memory for the windows of brotli and zstd decompressors opened *inside* content (a
/// multipart part's own `Content-Encoding`, a zstd frame found in a body), shared by every
/// inspection given a clone. A request's own `Content-Encoding` windows are not taken from
/// it: the proxy reserves those in its hold budget before reading the body. A decompressor
/// holds its window until it is dropped (its part or stream ended); when a new one finds
/// the pool short, that content is scanned as it is and the request is not fully
/// inspected ([`Reason::DecoderMemory`]): a burst of such bodies gets "not inspected"
/// answers instead of taking the proxy's memory (found in review: each could pin up to
/// 64 MiB of windows per part, counted nowhere).
///
/// Like the hold budget beside it, the pool has a share per client address
/// ([`WindowPool::for_client`]): one workstation's uploads hold at most that much of it
/// at once, so they cannot leave every other client's compressed parts uninspected.
#[derive(Debug, Clone)]
pub struct WindowPool {
    state: Arc<std::sync::Mutex<PoolState>>,
    /// The client the windows are taken for (`None`: no share applies).
    client: Option<std::net::IpAddr>,
}

#[derive(Debug)]
struct PoolState {
    left: u64,
    /// The most one client holds at once.
    share: u64,
    /// What each client holding windows holds now (an entry goes with its last window).
    clients: std::collections::HashMap<std::net::IpAddr, u64>,
}

/// The most window memory one request's decompressors inside its content hold at once:
/// one brotli window and one zstd (a `.zst` file in a brotli part), or three zstd.
pub const REQUEST_WINDOWS: u64 = encoding::BROTLI_WINDOW_MAX + (1 << encoding::ZSTD_WINDOW_LOG_MAX);

/// Window memory taken from a [`WindowPool`] (and counted as its request's and its
/// client's), given back when dropped.
#[derive(Debug)]
pub(crate) struct WindowTicket {
    pool: WindowPool,
    mine: Arc<AtomicU64>,
    bytes: u64,
}

impl Drop for WindowTicket {
    fn drop(&mut self) {
        self.mine.fetch_sub(self.bytes, Ordering::Relaxed);
        let mut state = self.pool.lock();
        state.left += self.bytes;
        if let Some(client) = self.pool.client
            && let Some(held) = state.clients.get_mut(&client)
        {
            *held -= self.bytes;
            if *held == 0 {
                state.clients.remove(&client);
            }
        }
    }
}

impl WindowPool {
    /// A pool of `bytes` with no share per client.
    pub fn new(bytes: u64) -> WindowPool {
        WindowPool::shared(bytes, bytes)
    }

    /// A pool of `bytes` of which one client holds at most `share` at once (no less than
    /// [`REQUEST_WINDOWS`]: one request's windows always fit an idle pool's share).
    pub fn shared(bytes: u64, share: u64) -> WindowPool {
        WindowPool {
            state: Arc::new(std::sync::Mutex::new(PoolState {
                left: bytes,
                share: share.max(REQUEST_WINDOWS),
                clients: std::collections::HashMap::new(),
            })),
            client: None,
        }
    }

    /// The same pool, its windows taken within `client`'s share.
    pub fn for_client(&self, client: std::net::IpAddr) -> WindowPool {
        WindowPool {
            state: self.state.clone(),
            client: Some(client),
        }
    }

    /// Bytes not taken now.
    pub fn left(&self) -> u64 {
        self.lock().left
    }

    /// Bytes `client` holds now.
    pub fn held_by(&self, client: std::net::IpAddr) -> u64 {
        self.lock().clients.get(&client).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // The state is plain numbers updated in one step: a panic elsewhere cannot leave
        // it half-written, so a poisoned lock is still good.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self, bytes: u64, mine: &Arc<AtomicU64>) -> Option<WindowTicket> {
        let mut state = self.lock();
        if state.left < bytes {
            return None;
        }
        if let Some(client) = self.client {
            let share = state.share;
            let held = state.clients.entry(client).or_insert(0);
            if *held + bytes > share {
                if *held == 0 {
                    state.clients.remove(&client);
                }
                return None;
            }
            *held += bytes;
        }
        state.left -= bytes;
        drop(state);
        mine.fetch_add(bytes, Ordering::Relaxed);
        Some(WindowTicket {
            pool: self.clone(),
            mine: mine.clone(),
            bytes,
        })
    }
}

impl<'e> Inspection<'e> {
    /// Starts inspecting a request whose body has these `Content-Type` and
    /// `Content-Encoding` header values (absent: `None`).
    pub fn new(
        engine: &'e Engine,
        limits: &Limits,
        content_type: Option<&[u8]>,
        content_encoding: Option<&[u8]>,
    ) -> Inspection<'e> {
        let mut acct = Account::new(limits.clone());
        // An encoding that cannot be undone: the body is scanned as it is, and the request
        // is not fully scanned — once there is a body.
        let (content_encoding, unsupported) = match content_encoding.map(encoding::parse) {
            Some(Err(why)) => (None, Some(why)),
            _ => (content_encoding, None),
        };
        if let Some(why) = unsupported {
            acct.problem(Reason::Unsupported, why);
        }
        let body = Node::for_body(content_type, content_encoding, 0, &mut acct);
        let deferred = acct.problem.take();
        Inspection {
            stream: engine.stream(),
            acct,
            body,
            body_bytes: 0,
            deferred,
            work_noted: false,
        }
    }

    /// Takes the windows of decompressors opened inside the content from `pool` (see
    /// [`WindowPool`]); without it, they are not bounded beyond each request's limits.
    pub fn with_windows(mut self, pool: WindowPool) -> Inspection<'e> {
        self.acct.windows = Some(pool);
        self
    }

    /// Scans the request target (`/path?query`): the path percent-decoded, the query as a
    /// form (`+` as space), embedded base64 decoded.
    pub fn feed_target(&mut self, path_and_query: &[u8]) {
        let mut out = Out {
            stream: &mut self.stream,
            acct: &mut self.acct,
        };
        let mut node = Node::target(out.acct);
        node.feed(path_and_query, &mut out);
        node.finish(&mut out);
        let path_end = path_and_query
            .iter()
            .position(|&b| b == b'?')
            .unwrap_or(path_and_query.len());
        self.path_tokens(&path_and_query[..path_end]);
        self.note_work();
    }

    /// Records a rule's stop for too much work ([`Reason::ScanWork`]) the first time.
    fn note_work(&mut self) {
        note_stop(&mut self.work_noted, &mut self.acct, self.stream.stopped());
    }

    /// Base64 tokens that are segments of a URL path, decoded from their own first symbol
    /// when the text scan would not: `/` is a base64 symbol, so the scan's run starts at the
    /// path's first `/`, and a token after `/s/` or `/v1/export/` came out misaligned three
    /// times in four, or not at all when the run opened with a long hex or lowercase
    /// segment (found in review). A segment the run already decodes aligned is left to it:
    /// nothing is decoded twice.
    fn path_tokens(&mut self, path: &[u8]) {
        let path: Vec<u8> = percent_encoding::percent_decode(path).collect();
        for run in path.split(|&b| !base64::is_symbol(b)) {
            if run.len() < BASE64_MIN_RUN {
                continue;
            }
            let run_decoded = sniff::plausible(&run[..BASE64_MIN_RUN], &[]);
            // An archive or compressed stream after the path's words: the run's own decoding
            // has the words' noise before its magic, so it would not be opened.
            for (p, _) in run.iter().enumerate().filter(|&(_, &b)| b == b'/') {
                let rest = &run[p + 1..];
                if rest.len() < BASE64_MIN_RUN {
                    break;
                }
                let magic = sniff::opens_archive(&base64::decode(&rest[..8]));
                if magic && self.acct.may_open(1, "base64") {
                    self.decode_token(rest, true);
                    break;
                }
            }
            let mut offset = 0;
            for segment in run.split(|&b| b == b'/') {
                let aligned = offset % 4 == 0 && run_decoded;
                offset += segment.len() + 1;
                if aligned
                    || segment.len() < BASE64_MIN_RUN
                    || !sniff::plausible(&segment[..BASE64_MIN_RUN], &[])
                    || !self.acct.may_open(1, "base64")
                {
                    continue;
                }
                self.decode_token(segment, false);
            }
        }
    }

    /// Scans the base64 `token` decoded, one layer down (`magic`: its content opens an
    /// archive or a compressed stream, decoded in turn).
    fn decode_token(&mut self, token: &[u8], magic: bool) {
        let mut out = Out {
            stream: &mut self.stream,
            acct: &mut self.acct,
        };
        let next = if magic {
            Node::text(1, out.acct)
        } else {
            Node::plain_text(1, out.acct)
        };
        let mut node = Node::Base64(Box::new(base64::Base64Node::new(next)));
        node.feed(token, &mut out);
        node.finish(&mut out);
    }

    /// Scans one request header value (percent-decoded, embedded base64 decoded). The
    /// value is only scanned: it is never logged or kept.
    pub fn feed_header(&mut self, value: &[u8]) {
        // The target decoder is the right one: percent-decoding, base64 runs; a value has
        // no `?`, so all of it is decoded as a path would be.
        self.feed_target(value);
    }

    /// Scans the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        self.body_bytes += chunk.len() as u64;
        if let Some(NotScanned { reason, detail }) = self.deferred.take() {
            self.acct.problem(reason, detail);
        }
        let mut out = Out {
            stream: &mut self.stream,
            acct: &mut self.acct,
        };
        self.body.feed(chunk, &mut out);
        self.note_work();
    }

    /// Body bytes fed so far (as received: before any decoding).
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// Bytes scanned so far, every layer included.
    pub fn scanned_bytes(&self) -> u64 {
        self.stream.bytes()
    }

    /// What has been found so far: a lower bound on the final findings (see
    /// [`Stream::findings`]).
    pub fn findings(&self) -> Findings {
        self.stream.findings()
    }

    /// The findings so far without the distinct values' hashes ([`Stream::counts`]).
    pub fn counts(&self) -> Findings {
        self.stream.counts()
    }

    /// The findings so far with the hashes of the categories `wanted` says only
    /// ([`Stream::counts_with_values`]).
    pub fn counts_with_values(&self, wanted: &dyn Fn(&str) -> bool) -> Findings {
        self.stream.counts_with_values(wanted)
    }

    /// Values counted so far ([`Stream::matches`]): the findings change only when it grows.
    pub fn matches(&self) -> u64 {
        self.stream.matches()
    }

    /// Whether part of the request has already been found not to be fully scannable.
    pub fn not_scanned(&self) -> Option<&NotScanned> {
        self.acct.problem.as_ref()
    }

    /// Bytes the decoders hold that are not scanned yet: decoded base64 text waiting for
    /// its place in the stream (see `sniff`), a multipart part's unfinished header block,
    /// a zip's central directory until its end. The findings do not cover the input that
    /// gave them until this is 0 again, so a proxy streaming the body holds its chunks
    /// back meanwhile (found by a red-team probe: a base64 list in a minified JSON body
    /// went upstream before its decoded text was counted).
    pub fn waiting(&self) -> u64 {
        self.acct.waiting.load(Ordering::Relaxed)
    }

    /// Scans the pending content now ([`Out::put_pending`]: a decompressor's header
    /// fields or skippable frames past 512 KiB, waiting for a byte of the decoded text that
    /// separates values), wherever the stream is. A proxy streaming a body calls this
    /// before it lets go of chunks the findings may not cover (past its held-back cap):
    /// inside a large skippable frame no decoded text comes, and a list in it went upstream
    /// before it was counted (found in review). If the stream's last byte does not
    /// separate values, the content may cut a value of the decoded text: the request is
    /// then not fully inspected (no benign sender holds a value open across half a megabyte
    /// of skipped frames).
    pub fn flush_pending(&mut self) {
        if self.acct.pending.is_empty() {
            return;
        }
        if !self.acct.after_separator {
            self.acct.problem(
                Reason::Unsupported,
                "header fields or skippable frames over 512 KiB inside a value of a streamed body",
            );
        }
        let mut out = Out {
            stream: &mut self.stream,
            acct: &mut self.acct,
        };
        out.flush_pending();
    }

    /// Whether the findings may not cover every byte fed so far: the decoders hold bytes
    /// not scanned yet ([`Inspection::waiting`]), or the engine has places where a value
    /// may lie that more bytes will decide ([`Stream::undecided`]: a list of a dozen
    /// addresses, a few hundred bytes, is counted only once the longest match and its
    /// context window have gone past it).
    pub fn undecided(&self) -> bool {
        self.waiting() > 0 || self.stream.undecided()
    }

    /// Ends the body (an encoding or archive that stops early is corrupt) and returns what
    /// was found.
    pub fn finish(mut self) -> Outcome {
        let mut out = Out {
            stream: &mut self.stream,
            acct: &mut self.acct,
        };
        self.body.finish(&mut out);
        out.flush_pending();
        let findings = self.stream.finish();
        let stopped = findings.stopped.first().map(String::as_str);
        note_stop(&mut self.work_noted, &mut self.acct, stopped);
        Outcome {
            findings,
            not_scanned: self.acct.problem,
            body_bytes: self.body_bytes,
        }
    }
}

/// Records [`Reason::ScanWork`] for the `stopped` rule, unless `noted` says it is already
/// recorded. The detail names the rule (an id from the rule files, never content).
fn note_stop(noted: &mut bool, acct: &mut Account, stopped: Option<&str>) {
    if let Some(rule) = stopped.filter(|_| !*noted) {
        *noted = true;
        let detail = format!(
            "rule {rule}: its searches read more than {} bytes per byte scanned",
            crate::scan::WORK_PER_BYTE
        );
        acct.problem(Reason::ScanWork, detail);
    }
}

/// A client-sent name (a `Content-Encoding` token, a media type) as a "not fully scanned"
/// detail may show it: quoted when it looks like a name — at most [`SHOWN_NAME_MAX`] bytes
/// of letters, digits and `-._+/`, no `@`, at most two digits — else only its length.
/// Details go to log lines and audit events, where a raw identifier must never appear, and
/// these values are whatever the client put there (a part's headers are body bytes).
pub(crate) fn shown_name(name: &str) -> String {
    let safe_byte = |b: u8| b.is_ascii_alphanumeric() || b"-._+/".contains(&b);
    let digits = name.bytes().filter(u8::is_ascii_digit).count();
    if name.len() <= SHOWN_NAME_MAX && name.bytes().all(safe_byte) && digits <= 2 {
        format!("{name:?}")
    } else {
        format!("(a {}-byte value, not shown)", name.len())
    }
}

/// The longest client-sent name shown in a detail (see [`shown_name`]).
const SHOWN_NAME_MAX: usize = 24;

/// The media type of a `Content-Type` value, lowercased, without parameters.
///
/// The type ends at the first `;`, `,` or white space: PHP reads
/// `application/x-www-form-urlencoded, text/plain` (or with a space for the `;`) as a form,
/// and a type cut only at `;` left such a body scanned raw, its `%40`s undecoded (found in
/// review).
pub(crate) fn media_type(content_type: &[u8]) -> String {
    let text = String::from_utf8_lossy(content_type);
    text.trim_start()
        .split([';', ',', ' ', '\t'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Whether a `Content-Type` value names more than one type (a `,` outside quotes): one
/// server reads the first, another may read the second, so the body cannot be inspected
/// as each would see it.
pub(crate) fn names_several_types(content_type: &[u8]) -> bool {
    unquoted(content_type, b',').is_some()
}

/// A parameter of a header value (`boundary`, `name`, `filename`), unquoted, its name
/// compared case-insensitively; quoted-pair escapes resolved. The first, when it is given
/// more than once (see [`header_params`]).
pub(crate) fn header_param(value: &[u8], name: &str) -> Option<Vec<u8>> {
    header_params(value, name).into_iter().next()
}

/// Every value of a parameter given more than once (`boundary=A; boundary=B`: servers
/// differ on which they take, so a caller must not pick one), in order.
pub(crate) fn header_params(value: &[u8], name: &str) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    let mut rest = value;
    // Skip the value itself, up to the first `;` outside quotes.
    loop {
        let Some(semi) = param_end(rest) else {
            return found;
        };
        rest = &rest[semi + 1..];
        let trimmed = trim_start(rest);
        let Some(eq) = trimmed.iter().position(|&b| b == b'=' || b == b';') else {
            return found;
        };
        if trimmed[eq] == b';' {
            rest = &trimmed[eq..];
            continue;
        }
        let key = trim_end(&trimmed[..eq]);
        let after = trim_start(&trimmed[eq + 1..]);
        let (val, used) = if after.first() == Some(&b'"') {
            let mut v = Vec::new();
            let mut i = 1;
            while i < after.len() && after[i] != b'"' {
                if after[i] == b'\\' && i + 1 < after.len() {
                    i += 1;
                }
                v.push(after[i]);
                i += 1;
            }
            (v, (i + 1).min(after.len()))
        } else {
            let end = after.iter().position(|&b| b == b';').unwrap_or(after.len());
            (trim_end(&after[..end]).to_vec(), end)
        };
        if key.eq_ignore_ascii_case(name.as_bytes()) {
            found.push(val);
        }
        rest = &after[used..];
        // `rest` starts at (or before) the next `;`: find it from here.
        let Some(next) = rest.iter().position(|&b| b == b';') else {
            return found;
        };
        rest = &rest[next..];
    }
}

/// Index of the first `;` not inside a quoted string.
fn param_end(value: &[u8]) -> Option<usize> {
    unquoted(value, b';')
}

/// Index of the first `byte` not inside a quoted string (quoted-pair escapes skipped).
pub(crate) fn unquoted(value: &[u8], byte: u8) -> Option<usize> {
    let mut quoted = false;
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b if b == byte && !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

fn trim_end(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .rev()
        .take_while(|c| c.is_ascii_whitespace())
        .count();
    &b[..b.len() - n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_params() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("multipart/form-data; boundary=abc", "boundary", Some("abc")),
            (
                "multipart/form-data; BOUNDARY=\"a;b c\"",
                "boundary",
                Some("a;b c"),
            ),
            (
                "form-data; name=\"f\"; filename=\"x\\\"y.csv\"",
                "filename",
                Some("x\"y.csv"),
            ),
            (
                "form-data; name=\"f\"; filename=\"a.csv\"",
                "name",
                Some("f"),
            ),
            ("form-data; name=f", "filename", None),
            ("text/plain", "charset", None),
            ("text/plain; charset=utf-8 ; x=1", "x", Some("1")),
            ("a; ; b=2", "b", Some("2")),
            ("a; flag; b=2", "b", Some("2")),
        ];
        for (value, name, want) in cases {
            let got = header_param(value.as_bytes(), name);
            assert_eq!(
                got.as_deref().map(|v| std::str::from_utf8(v).unwrap()),
                *want,
                "{value} {name}"
            );
        }
    }

    #[test]
    fn only_name_like_values_are_shown() {
        for (name, shown) in [
            ("compress", "\"compress\""),
            ("x-bzip2", "\"x-bzip2\""),
            ("multipart/x-mixed-replace", "(a 25-byte value, not shown)"),
            ("multipart/related", "\"multipart/related\""),
            ("zq7secret@hidden-corp.io", "(a 24-byte value, not shown)"),
            ("4111111111111111", "(a 16-byte value, not shown)"),
            ("123-45-6789", "(a 11-byte value, not shown)"),
            ("AB123456C", "(a 9-byte value, not shown)"),
            ("with space", "(a 10-byte value, not shown)"),
            ("quote\"", "(a 6-byte value, not shown)"),
        ] {
            assert_eq!(shown_name(name), shown, "{name}");
        }
    }

    #[test]
    fn media_types() {
        assert_eq!(
            media_type(b"Application/JSON; charset=utf-8"),
            "application/json"
        );
        assert_eq!(media_type(b""), "");
        // Cut where PHP cuts: a comma or white space ends the type too.
        for ct in [
            "application/x-www-form-urlencoded, text/plain",
            "application/x-www-form-urlencoded charset=UTF-8",
            " Application/X-WWW-Form-URLEncoded\t; charset=UTF-8",
        ] {
            assert_eq!(
                media_type(ct.as_bytes()),
                "application/x-www-form-urlencoded"
            );
        }
        assert!(names_several_types(b"text/plain, application/json"));
        assert!(!names_several_types(
            b"multipart/form-data; boundary=\"a,b\""
        ));
        assert!(!names_several_types(b"text/plain; charset=utf-8"));
    }

    #[test]
    fn every_value_of_a_repeated_parameter() {
        let values = |v: &str, n: &str| -> Vec<String> {
            super::header_params(v.as_bytes(), n)
                .into_iter()
                .map(|v| String::from_utf8(v).unwrap())
                .collect()
        };
        assert_eq!(
            values(
                "multipart/form-data; boundary=AAA; boundary=\"BBB\"",
                "boundary"
            ),
            ["AAA", "BBB"]
        );
        assert_eq!(
            values("multipart/form-data; boundary=AAA", "boundary"),
            ["AAA"]
        );
        assert!(values("text/plain", "boundary").is_empty());
        assert_eq!(
            header_param(b"x; boundary=AAA; boundary=BBB", "boundary").as_deref(),
            Some(&b"AAA"[..])
        );
    }
}
