//! Text as it is, and what is embedded in it: base64 runs, archives and compressed
//! streams.
//!
//! A [`Sniffer`] feeds its input to the stream unchanged (the raw scan: no copy), and
//! - looks at the first bytes: a zip archive (`PK\x03\x04`), a gzip stream (`1f 8b 08`), a
//!   zlib stream (`78 01`, `78 9c`, `78 da`: levels 0–1 and 6–9) or a zstd frame (`28 b5 2f fd`) is
//!   decoded instead, one layer deeper (the decoder scans the
//!   raw bytes itself from wherever it cannot decode them); content that opens with a
//!   UTF-16 byte-order mark (`ff fe`, `fe ff`), or with two ASCII characters in UTF-16
//!   (`i\0d\0`: see [`utf16_without_mark`]), is transcoded, one layer deeper, and its
//!   raw bytes scanned too (see [`super::utf16`]); content that opens like JSON
//!   (`{` or `[`) is unescaped as JSON (when the depth allows: it is optional);
//! - in content that is not itself an archive or a compressed stream (whether it is read
//!   as text, JSON or UTF-16, or as a form, JSON or XML by [`Sniffer::searching`]), looks
//!   for a zip's local header signature anywhere (`memchr2` on its third byte, see
//!   [`find_signatures`]): an archive after other bytes (a self-extractor's stub, `cat
//!   stub.bin export.zip`) is opened where a header that reads as a real one starts
//!   ([`super::zip::plausible_header`]: bytes that merely contain the signature are left
//!   alone) and read up to its end record, one layer deeper (its bytes go to the zip
//!   reader only, so raw bytes do not cut its decoded entries; found in review:
//!   central-directory readers open such a file, and its deflated entries passed unread);
//!   the search goes on after it, and a stray end record outside any archive read makes
//!   the content not fully inspected;
//! - finds runs of at least [`BASE64_MIN_RUN`] base64 symbols (either alphabet) holding
//!   both upper- and lowercase letters (so hex digests and long lowercase words are left
//!   alone), and decodes each one layer deeper. A run may go on across line breaks, and
//!   ends at its padding or at any other byte. Lines of one width join (wrapped base64:
//!   MIME, PEM, SSH keys); lines of other lengths that end inside a group of four are
//!   values of their own (unpadded base64url one per line), each decoded from a group's
//!   start (see `Lines`).
//!
//! Runs are found 64 bytes at a time from masks (`crate::window`): a cheap range mask
//! first (bytes in `+..=z`, a superset of the symbols: a space, a line break or a quote
//! ends a run), the exact symbol mask only where the range mask's run could reach
//! [`BASE64_MIN_RUN`]; a run's ends are then found from the masks, not by a byte walk.
//! The decoded bytes of the runs go into the stream as their own segment, after a line
//! end outside any run (see [`Sniffer::scan_runs`]): the same place whatever the chunks.

use super::base64::{Decoder, is_symbol};
use super::encoding::Codec;
use super::json::JsonNode;
use super::node::Node;
use super::utf16::{BE_MARK, LE_MARK, Utf16Node};
use super::zip::{PLAUSIBLE_NEEDS, ZipNode, plausible_header};
use super::{Account, BASE64_MIN_RUN, Out, Reason, Waiting};
use crate::window::{WIDTH, Window};

// The window masks look at exactly one run's minimum length at a time.
const _: () = assert!(BASE64_MIN_RUN == WIDTH);

/// Decoded bytes of a run held before they are scanned.
const FLUSH: usize = 48 << 10;

/// Raw bytes at least between two insertions of decoded text (see [`Sniffer::scan_runs`]):
/// the raw pieces between them stay long enough for the engine to scan them where they
/// lie (`scan::Stream::feed` copies pieces under 16 KiB), and what waits stays under
/// [`FLUSH`].
const INSERT_EVERY: u64 = 32 << 10;

/// Decoded text still waiting this many raw bytes past [`Sniffer::next_insert`] (no run
/// ended a line there: text without line ends, as minified JSON is, or no run since) goes
/// in after the next separator instead (see [`force_place`]). A proxy streaming the body
/// holds its chunks back while decoded text waits ([`super::Inspection::waiting`]), so
/// this bounds what it holds.
const FORCE_AFTER: u64 = 32 << 10;

/// Past [`FORCE_AFTER`] and this many bytes more (longer than any match the engine takes)
/// with no separator, any byte outside the base64 alphabets is a place.
const FORCE_ANYWHERE: u64 = 4 << 10;

/// Magic numbers looked for at the start of content.
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";
/// Signature of a zip's end-of-central-directory record.
const END_MAGIC: &[u8] = b"PK\x05\x06";
/// `1f 8b` and the only compression method defined (8, deflate).
const GZIP_MAGIC: &[u8] = b"\x1f\x8b\x08";

/// Whether `head` opens a zlib stream (RFC 1950) as zlib, pako (`pako.deflate`, what a
/// browser app compresses with itself) and every other deflate library write it at levels
/// 0–1, 6 (the default) and 7–9: a 32 KiB window and the level marks `78 01`, `78 9c`,
/// `78 da` (found in review: a list zlib-compressed into a WebSocket message passed).
/// Levels 2–5 mark `78 5e`, which is text (`x^2 + y^2`: read as deflate it yields bytes
/// before it fails, a corrupt stream, so a 403); so are the other headers that pass
/// zlib's check (`Hj`, `(`…): not guessed.
fn is_zlib(head: &[u8]) -> bool {
    matches!(head, [0x78, 0x01 | 0x9c | 0xda, ..])
}
const ZSTD_MAGIC: &[u8] = b"\x28\xb5\x2f\xfd";
const HEAD: usize = 4;

enum Mode {
    /// Between runs; `carry` holds the symbols at the end of the last input (fewer than
    /// [`BASE64_MIN_RUN`]) that a run may start with.
    Idle,
    /// Inside a long run that is not decoded (implausible, or too deep).
    Skip,
    /// Inside a run being decoded.
    Active(Box<Run>),
}

/// A base64 run being decoded.
struct Run {
    decoder: Decoder,
    buf: Vec<u8>,
    padded: bool,
    /// Whether its first decoded bytes have been looked at.
    started: bool,
    /// Its own node, when its content starts like an archive, a compressed stream or
    /// JSON; otherwise its bytes join the sniffer's shared decoded text.
    own: Option<Node>,
    /// Symbols on the current line so far.
    line: usize,
    /// What the line breaks so far say about the run (see [`Lines`]).
    lines: Lines,
    /// While [`Lines::Undecided`]: the second line's symbols, not decoded yet.
    held: Vec<u8>,
}

/// How a run's lines go together.
///
/// A run goes on across line breaks: base64 is wrapped at a fixed width (76 for MIME, 64
/// for PEM, 70 for SSH keys, anything `base64 -w` is told), and the lines join into one
/// stream of groups of four. But values of their own one per line (base64url is usually
/// sent unpadded) must not join: a line that ends inside a group would shift every line
/// after it. A first line that ends inside a group decides nothing yet; the second line is
/// held until it ends too: the same length means wrapped, another means values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lines {
    /// No line break yet (or a blob ended at a line of another width).
    First,
    /// The first line, this many symbols, ended inside a group; the decoder holds its
    /// leftover symbols, and `held` the second line's. `true` once the second line ended
    /// shorter than the first: a wrapped blob's last line if the run ends there, a value
    /// of its own if another line follows.
    Undecided(usize, bool),
    /// Wrapped at this width: lines join; a line of another length ends the blob.
    Wrapped(usize),
    /// One value per line: a line that ends inside a group ends its value.
    PerLine,
}

/// A first line longer than this that ends inside a group is a value of its own: no
/// encoder wraps that wide. It also bounds the symbols held while undecided.
const MAX_WRAP: usize = 1024;

impl Run {
    fn new() -> Run {
        Run {
            decoder: Decoder::new(),
            buf: Vec::new(),
            padded: false,
            started: false,
            own: None,
            line: 0,
            lines: Lines::First,
            held: Vec::new(),
        }
    }

    /// Consumes run bytes from `data[from..]`: symbols, line breaks, padding. Returns
    /// where the run stopped, and whether it ended there.
    fn accept(&mut self, data: &[u8], from: usize) -> (usize, bool) {
        let mut i = from;
        while i < data.len() {
            if !self.padded {
                // The symbols up to the next other byte, decoded in bulk.
                let n = symbol_prefix(&data[i..]);
                if n > 0 {
                    self.symbols(&data[i..i + n]);
                    i += n;
                    continue;
                }
            }
            let b = data[i];
            if b == b'=' {
                if !self.padded {
                    self.finish_groups();
                    self.padded = true;
                }
            } else if (b == b'\n' || b == b'\r') && !self.padded {
                self.line_break();
            } else {
                return (i, true);
            }
            i += 1;
        }
        (i, false)
    }

    /// Symbols of the current line.
    fn symbols(&mut self, syms: &[u8]) {
        self.line += syms.len();
        match self.lines {
            Lines::Undecided(_, true) => {
                // A third line: the first two were values.
                self.decide(false);
                self.end_value();
                self.decoder.push(syms, &mut self.buf);
            }
            Lines::Undecided(width, false) => {
                let room = (width + 1).saturating_sub(self.held.len());
                self.held.extend_from_slice(&syms[..syms.len().min(room)]);
                if self.held.len() > width {
                    // Longer than the first line: values, not wrapping.
                    self.decide(false);
                    self.decoder
                        .push(&syms[room.min(syms.len())..], &mut self.buf);
                }
            }
            _ => self.decoder.push(syms, &mut self.buf),
        }
    }

    /// A line break inside the run (not after its padding).
    fn line_break(&mut self) {
        let len = std::mem::take(&mut self.line);
        if len == 0 {
            // A blank line, or the `\n` of a `\r\n`.
            return;
        }
        match self.lines {
            Lines::Undecided(width, false) if len < width => {
                // A short second line: decided by what comes after it.
                self.lines = Lines::Undecided(width, true);
                return;
            }
            Lines::Undecided(width, false) => self.decide(len == width),
            _ => {}
        }
        match self.lines {
            Lines::First if self.decoder.mid_group() && len > MAX_WRAP => {
                self.lines = Lines::PerLine;
                self.end_value();
            }
            Lines::First if self.decoder.mid_group() => {
                self.lines = Lines::Undecided(len, false);
                self.held.clear();
            }
            Lines::First => self.lines = Lines::Wrapped(len),
            Lines::Wrapped(width) if len != width => {
                // The blob's last line: what follows starts afresh.
                self.end_value();
                self.lines = Lines::First;
            }
            Lines::PerLine => self.end_value(),
            _ => {}
        }
    }

    /// Ends the current value if a group is open: its last bytes, then a line break, and
    /// the next symbols start a group.
    fn end_value(&mut self) {
        if self.decoder.mid_group() {
            self.decoder.finish(&mut self.buf);
            self.buf.push(b'\n');
        }
    }

    /// Leaves [`Lines::Undecided`]: the first line was wrapped (the held second line
    /// joins it) or a value of its own (it ends, the second line starts afresh).
    fn decide(&mut self, wrapped: bool) {
        let Lines::Undecided(width, _) = self.lines else {
            return;
        };
        if wrapped {
            self.lines = Lines::Wrapped(width);
        } else {
            self.lines = Lines::PerLine;
            self.end_value();
        }
        self.decoder.push(&self.held, &mut self.buf);
        self.held.clear();
    }

    /// The symbols end (padding, or the run's end): the last group's bytes. A run still
    /// undecided is settled first: a second line no longer than the first is a wrapped
    /// blob's last line.
    fn finish_groups(&mut self) {
        if let Lines::Undecided(width, ended) = self.lines {
            self.decide(ended || self.line <= width);
        }
        self.decoder.finish(&mut self.buf);
    }

    /// Back to a run's start, keeping the allocations.
    fn reset(&mut self) {
        let (mut buf, mut held) = (
            std::mem::take(&mut self.buf),
            std::mem::take(&mut self.held),
        );
        buf.clear();
        held.clear();
        *self = Run {
            buf,
            held,
            ..Run::new()
        };
    }
}

/// Text at some depth: scanned as it is, with what is embedded in it decoded.
pub(crate) struct Sniffer {
    segment: u64,
    depth: u32,
    /// The first bytes, until [`HEAD`] of them decide whether the content is an archive
    /// or a compressed stream; `None` once decided (or when not looked for).
    head: Option<Vec<u8>>,
    /// The decoder for content that turned out to be an archive or compressed stream.
    inner: Option<Node>,
    mode: Mode,
    carry: Vec<u8>,
    /// Decoded bytes of the runs that ended since the last insertion (each followed by a
    /// line break), scanned together at the next line end: one feed for all of them.
    decoded: Vec<u8>,
    /// Raw bytes looked at before the current input.
    seen: u64,
    /// The decoded text goes in at the end of a run's line at or past this raw position
    /// (see [`Sniffer::scan_runs`]).
    next_insert: u64,
    /// A run ended on the current line: its line end is a place for the decoded text.
    run_line: bool,
    /// Where the last run opened started (its symbols carried over from the input before
    /// included): in a run not decoded, waiting decoded text goes in at a place counted
    /// from it (see [`Sniffer::scan_runs`]), never among the carried symbols, which were
    /// scanned before the run was known.
    skip_start: u64,
    /// The text node those bytes go to (one layer deeper), opened with the first.
    decoded_node: Option<Node>,
    /// The last run's state, kept for the next one: a text full of digests and MIME blobs
    /// opens thousands of runs, and each would otherwise allocate its box and grow its
    /// buffer line by line again.
    spare: Option<Box<Run>>,
    /// The search for a zip archive after other bytes (`None`: not looked for).
    embedded: Option<Embedded>,
    /// Raw bytes the embedded search has been given.
    embedded_seen: u64,
    /// The last bytes [`Sniffer::raw`] scanned, for an end record cut by a chunk's end.
    raw_edge: Vec<u8>,
    /// Decoded bytes held here, not scanned yet.
    waiting: Waiting,
    /// An embedded archive's bytes, for `inner` once the archive ends (see
    /// [`Sniffer::hold_for_inner`]).
    held_for_inner: Vec<u8>,
    /// The archive being read passed [`INNER_HELD_HARD`]: its bytes are no longer held.
    held_overflow: bool,
}

/// Bytes of an embedded archive held at most for the node the content is read by.
const INNER_HELD_HARD: usize = 16 << 20;

/// Where the search for an embedded zip archive stands.
enum Embedded {
    /// Looking for the signature; the last bytes of the input, for a signature cut by the
    /// end of a chunk.
    Search(Vec<u8>),
    /// A signature found at this offset: its header's bytes, until they tell whether it
    /// is a real one.
    Candidate(u64, Vec<u8>),
    /// An archive being read.
    Open(Box<ZipNode>),
}

impl Sniffer {
    /// Content at `depth` read by `inner` (a form, JSON, XML: as its `Content-Type`
    /// says), searched for an embedded zip archive on the way: a server may read the body
    /// as it is, whatever its type says (`{}` in front of a zip sent as
    /// `application/json` passed unopened: found in review, session 15).
    pub(crate) fn searching(depth: u32, inner: Node, acct: &mut Account) -> Sniffer {
        Sniffer {
            head: None,
            inner: Some(inner),
            ..Sniffer::new(depth, true, acct)
        }
    }

    /// `magic`: whether the start of the content is looked at for archives.
    pub(crate) fn new(depth: u32, magic: bool, acct: &mut Account) -> Sniffer {
        Sniffer {
            segment: acct.segment(),
            depth,
            head: magic.then(Vec::new),
            inner: None,
            mode: Mode::Idle,
            carry: Vec::new(),
            decoded: Vec::new(),
            seen: 0,
            next_insert: 0,
            run_line: false,
            skip_start: 0,
            decoded_node: None,
            spare: None,
            embedded: magic.then(|| Embedded::Search(Vec::new())),
            embedded_seen: 0,
            raw_edge: Vec::new(),
            waiting: Waiting::new(acct),
            held_for_inner: Vec::new(),
            held_overflow: false,
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        self.feed_content(data, out);
        // Decoded text gathered for the stream, a run's bytes not handed on yet, and the
        // bytes of what may be a zip's local header, held until they tell (its name
        // alone may be a list: found in review).
        let run = match &self.mode {
            Mode::Active(run) => run.buf.len() + run.held.len(),
            _ => 0,
        };
        let candidate = match &self.embedded {
            Some(Embedded::Candidate(_, head)) => head.len(),
            _ => 0,
        };
        self.waiting
            .set(self.decoded.len() + run + candidate + self.held_for_inner.len());
    }

    fn feed_content(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        let mut rest = data;
        if let Some(head) = &mut self.head {
            let take = (HEAD - head.len()).min(rest.len());
            head.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if head.len() < HEAD {
                // Nothing goes on before the start of the content is known.
                return;
            }
            let head = self.decide_head(out);
            self.route(&head, out);
        }
        self.route(rest, out);
    }

    /// Bytes of the content once its start is known: through the search for an embedded
    /// zip archive (when it is looked for) to the node the content is read by, or its own
    /// scan. An archive or a compressed stream at the start has no search: its decoder
    /// scans what it holds (and the raw bytes from wherever it stops decoding), and its
    /// own bytes are not scanned here (interleaved with the decoded content, they would
    /// cut it).
    fn route(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        if self.embedded.is_some() {
            self.feed_searching(data, out);
        } else if let Some(inner) = &mut self.inner {
            inner.feed(data, out);
        } else {
            self.scan_runs(data, out);
        }
    }

    /// The next raw bytes, with the search for a zip archive in them: bytes outside an
    /// archive are scanned as they are, an archive's own bytes go to its reader only (its
    /// decoded entries would be cut by raw bytes interleaved with them), and a possible
    /// header's bytes wait until they tell. The last bytes of the input wait for the next
    /// input (a signature may be cut there): every byte is scanned once, in order,
    /// whatever the chunks.
    fn feed_searching(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        const KEEP: usize = ZIP_MAGIC.len() - 1;
        let mut owned: Vec<u8>;
        let mut rest: &[u8] = data;
        let mut at = self.embedded_seen;
        self.embedded_seen += data.len() as u64;
        loop {
            let Some(state) = self.embedded.take() else {
                // Not looked for any more (the depth limit): scanned as it is.
                return self.raw(rest, out);
            };
            match state {
                Embedded::Search(tail) => {
                    // `tail`: bytes not scanned yet, before `rest`.
                    let tail_at = at - tail.len() as u64;
                    let (found, stray_end) = find_signatures(&tail, rest);
                    if stray_end {
                        stray_end_record(out);
                    }
                    let Some((p, in_tail)) = found else {
                        // Everything but the last bytes is scanned now, without a copy
                        // of `rest` (a chunk: its copy was a twelfth of the text path).
                        let mut tail = tail;
                        let cut = (tail.len() + rest.len()).saturating_sub(KEEP);
                        if cut <= tail.len() {
                            self.pass(&tail[..cut], out);
                            tail.drain(..cut);
                            tail.extend_from_slice(rest);
                        } else {
                            self.pass(&tail, out);
                            let cut = cut - tail.len();
                            self.pass(&rest[..cut], out);
                            tail.clear();
                            tail.extend_from_slice(&rest[cut..]);
                        }
                        self.embedded = Some(Embedded::Search(tail));
                        return;
                    };
                    let (offset, mut head) = if in_tail {
                        self.pass(&tail[..p], out);
                        (tail_at + p as u64, tail[p..].to_vec())
                    } else {
                        self.pass(&tail, out);
                        self.pass(&rest[..p], out);
                        (at + p as u64, Vec::new())
                    };
                    head.extend_from_slice(if in_tail { rest } else { &rest[p..] });
                    self.embedded = Some(Embedded::Candidate(offset, Vec::new()));
                    owned = head;
                    rest = &owned;
                    at = offset;
                }
                Embedded::Candidate(offset, mut head) => {
                    head.extend_from_slice(rest);
                    match plausible_header(&head) {
                        None if head.len() < PLAUSIBLE_NEEDS => {
                            self.embedded = Some(Embedded::Candidate(offset, head));
                            return;
                        }
                        Some(true) if out.acct.may_open(self.depth + 1, "zip archive") => {
                            let zip = ZipNode::embedded(self.depth + 1, offset, out.acct);
                            self.embedded = Some(Embedded::Open(Box::new(zip)));
                            owned = head;
                            rest = &owned;
                            at = offset;
                        }
                        Some(true) => {
                            // Past the depth limit (recorded): scanned as it is.
                            self.raw(&head, out);
                            return;
                        }
                        // Not a header: its first byte is text, the search goes on from
                        // the next.
                        _ => {
                            self.raw(&head[..1], out);
                            self.embedded = Some(Embedded::Search(Vec::new()));
                            owned = head.split_off(1);
                            rest = &owned;
                            at = offset + 1;
                        }
                    }
                }
                Embedded::Open(mut zip) => {
                    self.hold_for_inner(rest, out);
                    match zip.feed_embedded(rest, out) {
                        None => {
                            self.embedded = Some(Embedded::Open(zip));
                            return;
                        }
                        Some(after) => {
                            zip.finish(out);
                            self.release_held(after.len(), out);
                            self.embedded = Some(Embedded::Search(Vec::new()));
                            // `after` may start before `rest` (bytes the reader held).
                            at = at + rest.len() as u64 - after.len() as u64;
                            owned = after;
                            rest = &owned;
                        }
                    }
                }
            }
        }
    }

    /// An archive's bytes, held for the node the content is read by (JSON, a form, XML,
    /// UTF-16) until the archive ends: that reader sees every byte, as a server reading
    /// the body its way does (found in review: taken out of its input, a zip's comment
    /// swallowed the `%40`-encoded list after it, an odd-length zip shifted UTF-16 text by
    /// a byte, and a `&` inside a zip's bytes ended a form field). Held, not fed at once,
    /// so that the archive's decoded entries are not cut by the reader's text. Past
    /// [`INNER_HELD_HARD`] the request is not fully inspected and the rest of the archive
    /// is not held.
    fn hold_for_inner(&mut self, bytes: &[u8], out: &mut Out<'_, '_>) {
        if self.inner.is_none() || self.held_overflow {
            return;
        }
        self.held_for_inner.extend_from_slice(bytes);
        if self.held_for_inner.len() > INNER_HELD_HARD {
            out.acct.problem(
                Reason::Unsupported,
                "an archive over 16 MiB inside content read as JSON, a form, XML or UTF-16",
            );
            self.release_held(0, out);
            self.held_overflow = true;
        }
    }

    /// The archive ended, `after` bytes of what it was given lying past its end: the
    /// rest of what was held goes to the content's reader now.
    fn release_held(&mut self, after: usize, out: &mut Out<'_, '_>) {
        self.held_overflow = false;
        let n = self.held_for_inner.len().saturating_sub(after);
        if let Some(inner) = &mut self.inner {
            inner.feed(&self.held_for_inner[..n], out);
        }
        self.held_for_inner.clear();
    }

    /// Raw bytes outside any archive read, scanned as they are. A zip end record among them
    /// (`PK\x05\x06`) makes the content not fully inspected: readers find an archive by
    /// its last end record, so one here means an archive this search did not read (a decoy
    /// archive read up to its own end record, with the real directory after it, or local
    /// headers too odd to be taken for one: found in review).
    fn raw(&mut self, bytes: &[u8], out: &mut Out<'_, '_>) {
        if bytes.is_empty() {
            return;
        }
        if find_signatures(&self.raw_edge, bytes).1 {
            stray_end_record(out);
        }
        self.pass(bytes, out);
    }

    /// Raw bytes outside any archive, their end records looked for already: scanned (or
    /// to the node the content is read by).
    fn pass(&mut self, bytes: &[u8], out: &mut Out<'_, '_>) {
        if bytes.is_empty() {
            return;
        }
        // The last bytes only: a chunk is not copied to keep three of them.
        let keep = END_MAGIC.len() - 1;
        self.raw_edge
            .extend_from_slice(&bytes[bytes.len().saturating_sub(keep)..]);
        let over = self.raw_edge.len().saturating_sub(keep);
        self.raw_edge.drain(..over);
        match &mut self.inner {
            Some(inner) => inner.feed(bytes, out),
            None => self.scan_runs(bytes, out),
        }
    }

    /// The end of the content for the search: what waits is scanned, an archive still open
    /// ends here (cut short: `corrupt`).
    fn finish_searching(&mut self, out: &mut Out<'_, '_>) {
        match self.embedded.take() {
            Some(Embedded::Open(mut zip)) => {
                zip.finish(out);
                self.release_held(0, out);
            }
            Some(Embedded::Candidate(offset, head)) => {
                if plausible_header(&head) == Some(true)
                    && out.acct.may_open(self.depth + 1, "zip archive")
                {
                    // A header cut by the end of the content: an archive that ends there.
                    let mut zip = ZipNode::embedded(self.depth + 1, offset, out.acct);
                    zip.feed_embedded(&head, out);
                    zip.finish(out);
                } else {
                    self.raw(&head, out);
                }
            }
            Some(Embedded::Search(tail)) => self.raw(&tail, out),
            None => {}
        }
    }

    pub(crate) fn finish(&mut self, out: &mut Out<'_, '_>) {
        if self.head.is_some() {
            let head = self.decide_head(out);
            self.route(&head, out);
        }
        self.finish_searching(out);
        if let Some(inner) = &mut self.inner {
            inner.finish(out);
        }
        if let Mode::Active(mut run) = std::mem::replace(&mut self.mode, Mode::Idle) {
            self.run_output(&mut run, true, out);
            self.keep_spare(run);
        }
        self.flush_decoded(out);
        self.waiting.set(0);
        if let Some(node) = &mut self.decoded_node {
            node.finish(out);
        }
    }

    /// Hands on what `run` has decoded so far (all of it, when `last`): to its own node,
    /// or to the shared decoded text.
    fn run_output(&mut self, run: &mut Run, last: bool, out: &mut Out<'_, '_>) {
        if last {
            run.finish_groups();
        }
        if !run.started && !run.buf.is_empty() {
            run.started = true;
            if opens_container(&run.buf) {
                run.own = Some(Node::text(self.depth + 1, out.acct));
            }
        }
        match &mut run.own {
            Some(node) => {
                node.feed(&run.buf, out);
                if last {
                    node.finish(out);
                }
            }
            None => {
                self.decoded.extend_from_slice(&run.buf);
                if last {
                    self.decoded.push(b'\n');
                }
            }
        }
        run.buf.clear();
    }

    /// Scans the shared decoded text gathered so far.
    fn flush_decoded(&mut self, out: &mut Out<'_, '_>) {
        if self.decoded.is_empty() {
            return;
        }
        let depth = self.depth + 1;
        let node = self
            .decoded_node
            .get_or_insert_with(|| Node::plain_text(depth, out.acct));
        node.feed(&self.decoded, out);
        self.decoded.clear();
    }

    /// Looks at the first bytes and opens the decoder they call for; returns them, to be
    /// fed on ([`Sniffer::route`]). Text read another way (UTF-16, JSON) is still searched
    /// for an embedded archive: `{}` or a byte-order mark in front of a zip hid it from
    /// the search, and zip readers open such a file (found in review, session 15).
    fn decide_head(&mut self, out: &mut Out<'_, '_>) -> Vec<u8> {
        let Some(head) = self.head.take() else {
            return Vec::new();
        };
        let depth = self.depth + 1;
        let acct = &mut *out.acct;
        let unmarked = utf16_without_mark(&head);
        let inner = if head.starts_with(ZIP_MAGIC) {
            acct.may_open(depth, "zip archive")
                .then(|| Node::Zip(Box::new(ZipNode::new(depth, acct))))
        } else if head.starts_with(GZIP_MAGIC) {
            acct.may_open(depth, "gzip stream").then(|| {
                let next = Node::text(depth, acct);
                Node::guessed_decompress(Codec::Gzip, next, self.depth, acct)
            })
        } else if is_zlib(&head) {
            acct.may_open(depth, "zlib stream").then(|| {
                let next = Node::text(depth, acct);
                Node::guessed_decompress(Codec::Deflate, next, self.depth, acct)
            })
        } else if head.starts_with(ZSTD_MAGIC) {
            acct.may_open(depth, "zstd stream").then(|| {
                let next = Node::text(depth, acct);
                Node::guessed_decompress(Codec::Zstd, next, self.depth, acct)
            })
        } else if head.starts_with(LE_MARK) || head.starts_with(BE_MARK) || unmarked.is_some() {
            acct.may_open(depth, "UTF-16 text").then(|| {
                // The raw bytes as plain text: their own head would open UTF-16 again.
                let raw = Node::plain_text(depth, acct);
                let text = Node::plain_text(depth, acct);
                Node::Utf16(Box::new(Utf16Node::new(unmarked, raw, text, acct)))
            })
        } else if looks_like_json(&head) && depth <= acct.limits().max_depth {
            // JSON sent as text: unescaped all the same. The unescaped view holds every
            // byte outside string escapes as it is, so it stands in for the raw one.
            let next = Node::decoded_text(false, depth, acct);
            Some(Node::Json(Box::new(JsonNode::new(next))))
        } else {
            None
        };
        if inner.is_some() && opens_archive(&head) {
            // The content is the archive or stream itself: nothing is embedded in it here.
            self.embedded = None;
        }
        self.inner = inner;
        head
    }

    /// Feeds `data` to the stream, decoding the base64 runs in it.
    ///
    /// The raw bytes go in as they are; the decoded text of the runs that ended goes in
    /// at the end of the line of a run (outside any run), the first such line end at
    /// least [`INSERT_EVERY`] raw bytes past the last insertion. So the same body puts it
    /// in the same place whatever its chunks (found by the split property test
    /// `tests/decode_split.rs`: it went in after the last run that ended in a chunk, which
    /// depended on the chunking); it never cuts a value after a run (a run ends at the
    /// first byte that is no symbol, and `/` is one, so `…/token/alice` ended at the `@`
    /// of an address, which a cut at every run's end missed: found in review); and it
    /// never goes in at a line end without a run on its line (a CSV header naming `ssn`
    /// and the value on the next line were parted by a cut at any line end: found in
    /// review). Text without line ends (minified JSON) puts it in at the end of the run
    /// that takes it past [`FLUSH`] bytes; a run still open with [`FLUSH`] bytes decoded
    /// puts them in at the end of the input (both rare, and where chunks still matter).
    /// Batching keeps a text full of short base64 tokens at a few feeds per
    /// [`INSERT_EVERY`] bytes: each feed costs the engine a pass over its rules.
    fn scan_runs(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        let base = self.seen;
        self.seen += data.len() as u64;
        let mut emitted = 0;
        let mut pos = 0;
        loop {
            match std::mem::replace(&mut self.mode, Mode::Idle) {
                Mode::Active(mut run) => {
                    let (end, ended) = run.accept(data, pos);
                    if !ended {
                        if run.own.is_some() {
                            // Its own node feeds the stream now: the raw text first.
                            out.emit(self.segment, &data[emitted..]);
                            emitted = data.len();
                            self.run_output(&mut run, false, out);
                        } else if run.buf.len() >= FLUSH {
                            self.run_output(&mut run, false, out);
                        }
                        self.mode = Mode::Active(run);
                        break;
                    }
                    if run.own.is_some() || opens_container(&run.buf) && !run.started {
                        // Content of its own (an archive in base64): the raw text up to
                        // here first, so that its segment does not cut the text.
                        out.emit(self.segment, &data[emitted..end]);
                        emitted = end;
                    }
                    self.run_output(&mut run, true, out);
                    self.keep_spare(run);
                    pos = end;
                    self.run_line = true;
                    if self.decoded.len() >= FLUSH {
                        // Too much waiting for a line end: in at this run's end.
                        out.emit(self.segment, &data[emitted..end]);
                        emitted = end;
                        self.insert_decoded(base + end as u64, out);
                    }
                }
                Mode::Skip => {
                    let n = symbol_prefix(&data[pos..]);
                    // Decoded text waiting, and a run not decoded (a hex digest, a long
                    // lowercase token) going on past where it is due: in at a place
                    // inside the run, or it waited for the run's end, unbounded (found
                    // in review).
                    if !self.decoded.is_empty() {
                        let at = (self.next_insert + FORCE_AFTER + FORCE_ANYWHERE)
                            .max(self.skip_start + BASE64_MIN_RUN as u64);
                        let stretch = base + pos as u64..base + (pos + n) as u64;
                        if stretch.contains(&at) {
                            let i = (at - base) as usize;
                            out.emit(self.segment, &data[emitted..i]);
                            emitted = i;
                            self.insert_decoded(at, out);
                        }
                    }
                    pos += n;
                    if pos == data.len() {
                        self.mode = Mode::Skip;
                        break;
                    }
                }
                Mode::Idle => {
                    if !self.carry.is_empty() {
                        let lead = symbol_prefix(&data[pos..]);
                        if self.carry.len() + lead >= BASE64_MIN_RUN {
                            let carry = std::mem::take(&mut self.carry);
                            self.skip_start = base + pos as u64 - carry.len() as u64;
                            self.open_run(&carry, &data[pos..pos + lead], out);
                            continue;
                        }
                        if pos + lead == data.len() {
                            self.carry.extend_from_slice(&data[pos..]);
                            break;
                        }
                        self.carry.clear();
                        pos += lead;
                    }
                    match find_run(data, pos) {
                        Some(start) => {
                            self.at_line_end(data, base, (pos, start), &mut emitted, out);
                            pos = start;
                            self.skip_start = base + start as u64;
                            self.open_run(&[], &data[start..], out);
                        }
                        None => {
                            self.at_line_end(data, base, (pos, data.len()), &mut emitted, out);
                            let t = data[pos..]
                                .iter()
                                .rev()
                                .take_while(|&&b| is_symbol(b))
                                .count();
                            self.carry.extend_from_slice(&data[data.len() - t..]);
                            break;
                        }
                    }
                }
            }
        }
        out.emit(self.segment, &data[emitted..]);
        if self.decoded.len() >= FLUSH {
            // A long run still open: what it decoded so far goes in now.
            self.insert_decoded(base + data.len() as u64, out);
        }
    }

    /// In `data[from..to]` (a stretch outside any run): at the end of a run's line, puts
    /// the waiting decoded text in after it when the line end is at or past
    /// [`Sniffer::next_insert`]; failing that, after the first separator at or past
    /// [`FORCE_AFTER`] bytes beyond it (see [`force_place`]).
    fn at_line_end(
        &mut self,
        data: &[u8],
        base: u64,
        (from, to): (usize, usize),
        emitted: &mut usize,
        out: &mut Out<'_, '_>,
    ) {
        if from >= to {
            return;
        }
        let mut place = None;
        if self.run_line
            && let Some(i) = memchr::memchr(b'\n', &data[from..to])
        {
            self.run_line = false;
            let at = from + i + 1;
            if base + at as u64 >= self.next_insert {
                place = Some(at);
            }
        }
        if self.decoded.is_empty() {
            return;
        }
        // Whichever place comes first in the content: a chunk's end between a forced place
        // and the line end must not change which is taken (found in review).
        let due = self.next_insert + FORCE_AFTER;
        let lo = due.max(base + from as u64);
        let forced = usize::try_from(lo - base)
            .ok()
            .filter(|&lo| lo < to)
            .and_then(|lo| {
                let anywhere = (due + FORCE_ANYWHERE).saturating_sub(base + lo as u64);
                force_place(&data[lo..to], anywhere).map(|i| lo + i + 1)
            });
        let place = match (place, forced) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(at) = place else {
            return;
        };
        out.emit(self.segment, &data[*emitted..at]);
        *emitted = at;
        self.insert_decoded(base + at as u64, out);
    }

    /// Scans the waiting decoded text now, at raw position `at`.
    fn insert_decoded(&mut self, at: u64, out: &mut Out<'_, '_>) {
        self.flush_decoded(out);
        self.next_insert = at + INSERT_EVERY;
    }

    /// A run of at least [`BASE64_MIN_RUN`] symbols starts with `carry` (bytes already
    /// scanned) followed by `rest`: decode it when it is plausible base64 and not too deep.
    fn open_run(&mut self, carry: &[u8], rest: &[u8], out: &mut Out<'_, '_>) {
        let depth = self.depth + 1;
        if !plausible(carry, rest) || !out.acct.may_open(depth, "base64") {
            self.mode = Mode::Skip;
            return;
        }
        let mut run = self.spare.take().unwrap_or_else(|| Box::new(Run::new()));
        // Through `symbols`: the carry is part of the first line's width.
        run.symbols(carry);
        self.mode = Mode::Active(run);
    }

    /// Keeps an ended run's box and buffer for the next run, reset to a run's start.
    fn keep_spare(&mut self, mut run: Box<Run>) {
        run.reset();
        self.spare = Some(run);
    }
}

/// Where in `bytes` (a stretch outside any run, at or past where waiting decoded text is
/// due) it goes in: after the first byte that separates values in the shapes text takes
/// (a line end, a tab, a JSON or CSV delimiter, a tag's bracket), so the insertion cuts no
/// value; failing one up to `anywhere` bytes in, after the first byte from there that
/// is no base64 symbol. A place depends only on the content, never on the chunks: every
/// byte of a stretch is outside any run whatever the chunks, and a symbol at a chunk's
/// end, which may yet start a run, is never a place.
fn force_place(bytes: &[u8], anywhere: u64) -> Option<usize> {
    bytes
        .iter()
        .enumerate()
        .position(|(i, &b)| separates_values(b) || (i as u64 >= anywhere && !is_symbol(b)))
}

/// A byte that separates values in the shapes text takes (a line end, a tab, a JSON or
/// CSV delimiter, a tag's bracket): content put into the stream right after it cuts no
/// value.
pub(crate) fn separates_values(b: u8) -> bool {
    matches!(
        b,
        b'\n' | b'\r' | b'\t' | b'"' | b',' | b';' | b'<' | b'>' | b'{' | b'}' | b'[' | b']'
    )
}

/// Whether decoded content starting with `head` needs a node of its own: an archive, a
/// compressed stream, or JSON.
fn opens_container(head: &[u8]) -> bool {
    opens_archive(head) || looks_like_json(&head[..head.len().min(HEAD)])
}

/// Where the first zip local header signature (`PK\x03\x04`) starts in `edge` followed
/// by `bytes` (`edge`: fewer than 4 bytes, the end of the input before): `(p, true)` at
/// `edge[p]`, cut by the inputs' seam, `(p, false)` at `bytes[p]`; and whether an end
/// record signature (`PK\x05\x06`) starts before it (anywhere, without one). One pass
/// for both: their third bytes are control bytes text rarely holds, found with
/// `memchr2` (two `memmem` passes were 6 % of a form body's instructions).
fn find_signatures(edge: &[u8], bytes: &[u8]) -> (Option<(usize, bool)>, bool) {
    debug_assert!(edge.len() < ZIP_MAGIC.len());
    let mut end = false;
    // Signatures that start in `edge`: the seam, on the stack.
    let mut seam = [0u8; 8];
    let from_bytes = bytes.len().min(ZIP_MAGIC.len() - 1);
    let n = edge.len() + from_bytes;
    seam[..edge.len()].copy_from_slice(edge);
    seam[edge.len()..n].copy_from_slice(&bytes[..from_bytes]);
    for p in 0..edge.len() {
        match seam[p..n] {
            [b'P', b'K', 3, 4, ..] => return (Some((p, true)), end),
            [b'P', b'K', 5, 6, ..] => end = true,
            _ => {}
        }
    }
    // Those that start in `bytes`: `q` is a signature's third byte.
    for q in memchr::memchr2_iter(3, 5, bytes) {
        if q < 2 || q + 1 >= bytes.len() || bytes[q - 2..q] != *b"PK" {
            continue;
        }
        match (bytes[q], bytes[q + 1]) {
            (3, 4) => return (Some((q - 2, false)), end),
            (5, 6) => end = true,
            _ => {}
        }
    }
    (None, end)
}

/// A zip end record in raw bytes outside any archive read (see [`Sniffer::raw`]).
fn stray_end_record(out: &mut Out<'_, '_>) {
    out.acct.problem(
        Reason::Corrupt,
        "a zip end record in content not read as a zip".to_owned(),
    );
}

/// Whether content starting with `head` is a zip archive, a gzip, zlib or zstd stream.
pub(crate) fn opens_archive(head: &[u8]) -> bool {
    head.starts_with(ZIP_MAGIC)
        || head.starts_with(GZIP_MAGIC)
        || head.starts_with(ZSTD_MAGIC)
        || is_zlib(head)
}

/// Whether content starting with `head` (its first four bytes) reads as UTF-16 text
/// without a byte-order mark: two ASCII characters, each a printable byte (or a tab or
/// line break) and a zero byte — `Some(true)` little endian (`i\0d\0`), `Some(false)`
/// big endian (`\0i\0d`). `iconv -t UTF-16LE`, .NET's `Encoding.Unicode.GetBytes` and
/// Java's `UTF_16LE` write no mark; a customer list converted so passed whole (README's
/// known gaps until session 15). The raw bytes are scanned too, so content that only
/// looks like it loses nothing.
fn utf16_without_mark(head: &[u8]) -> Option<bool> {
    let text = |b: u8| matches!(b, b'\t' | b'\n' | b'\r' | b' '..=b'~');
    match *head {
        [a, 0, b, 0, ..] if text(a) && text(b) => Some(true),
        [0, a, 0, b, ..] if text(a) && text(b) => Some(false),
        _ => None,
    }
}

/// Whether content starting with `head` is likely JSON: an object or array opens it
/// (after whitespace).
fn looks_like_json(head: &[u8]) -> bool {
    // A UTF-8 byte order mark first (as some editors save) hid the JSON (found in review).
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    matches!(
        head.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

/// Start of the first run of at least [`BASE64_MIN_RUN`] symbols in `data[from..]` (it may
/// go on past the end of `data`).
///
/// One pass, 64 bytes at a time, on a cheap superset of the symbols (bytes in `+..=z`):
/// `rs` is never after the start of the symbols run that reaches the block being looked at,
/// so a block where even the superset's run (from `rs`) stays short is passed over at the
/// cost of one range compare. Only where it could be long — base64, hex digests, long
/// URLs — are the exact masks taken, and the run's start found from them.
fn find_run(data: &[u8], from: usize) -> Option<usize> {
    let mut rs = from;
    let mut at = from;
    while at + WIDTH <= data.len() {
        let w = Window::load(data, at);
        let maybe = w.maybe_symbols();
        // A block all in the superset always goes on to the exact test (`rs <= at`).
        if at + (maybe.trailing_ones() as usize) < rs + BASE64_MIN_RUN {
            rs = at + WIDTH - maybe.leading_ones() as usize;
            at += WIDTH;
            continue;
        }
        let start = start_before(data, rs, at);
        let exact = w.symbols();
        if at + exact.trailing_ones() as usize >= start + BASE64_MIN_RUN {
            return Some(start);
        }
        // No run inside the block is that long (it would fill it): the next starts here.
        rs = at + WIDTH - exact.leading_ones() as usize;
        at += WIDTH;
    }
    let mut start = start_before(data, rs, at);
    for (i, &b) in data.iter().enumerate().skip(at) {
        if !is_symbol(b) {
            start = i + 1;
        } else if i + 1 - start >= BASE64_MIN_RUN {
            return Some(start);
        }
    }
    None
}

/// Start of the symbols run that ends right before `end`, not before `from` (`end` when
/// `data[end - 1]` is not a symbol).
fn start_before(data: &[u8], from: usize, end: usize) -> usize {
    if end > from && is_symbol(data[end - 1]) {
        run_start(data, from, end - 1)
    } else {
        end
    }
}

/// The first index `s >= from` such that `data[s..=p]` are all symbols (`data[p]` is one):
/// 64 bytes back at a time (windows may start before `from`: only the result is clamped).
fn run_start(data: &[u8], from: usize, p: usize) -> usize {
    let mut end = p + 1;
    while end > from && end >= WIDTH {
        let others = !Window::load(data, end - WIDTH).symbols();
        if others != 0 {
            // The last byte that is not a symbol is bit 63 - leading_zeros.
            return (end - others.leading_zeros() as usize).max(from);
        }
        end -= WIDTH;
    }
    while end > from && is_symbol(data[end - 1]) {
        end -= 1;
    }
    end.max(from)
}

/// How many bytes at `data[at..]` are symbols, 64 at a time; it stops counting at `limit`
/// or a little past it (it may return up to 63 more).
fn symbols_from(data: &[u8], at: usize, limit: usize) -> usize {
    let mut n = 0;
    while n < limit && at + n + WIDTH <= data.len() {
        let m = Window::load(data, at + n).symbols();
        if m != u64::MAX {
            return n + m.trailing_ones() as usize;
        }
        n += WIDTH;
    }
    while n < limit && at + n < data.len() && is_symbol(data[at + n]) {
        n += 1;
    }
    n
}

/// How many bytes at the start of `data` are base64 symbols.
pub(crate) fn symbol_prefix(data: &[u8]) -> usize {
    symbols_from(data, 0, usize::MAX)
}

/// Whether a run (its first [`BASE64_MIN_RUN`] symbols: `a` then `b`) looks like base64:
/// both upper- and lowercase letters (hex digests and long words do not).
pub(crate) fn plausible(a: &[u8], b: &[u8]) -> bool {
    if a.is_empty() && b.len() >= WIDTH {
        let w = Window::load(b, 0);
        return w.upper() != 0 && w.lower() != 0;
    }
    let (mut upper, mut lower) = (false, false);
    for &c in a.iter().chain(b).take(BASE64_MIN_RUN) {
        upper |= c.is_ascii_uppercase();
        lower |= c.is_ascii_lowercase();
    }
    upper && lower
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    /// `text` through one run, fed `chunk` bytes at a time, then ended: what it decoded.
    fn run_decode(text: &[u8], chunk: usize) -> Vec<u8> {
        let mut run = Run::new();
        for piece in text.chunks(chunk) {
            let (end, ended) = run.accept(piece, 0);
            assert!(!ended && end == piece.len(), "the run ended early");
        }
        run.finish_groups();
        run.buf
    }

    /// Wrapped at any width, with `\n` or `\r\n`: the lines join into one stream.
    #[test]
    fn wrapped_lines_join_at_any_width() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let encoded = STANDARD.encode(&data);
        for width in [60, 64, 70, 71, 73, 75, 76, 77, 200] {
            for eol in ["\n", "\r\n"] {
                let lines: Vec<&str> = encoded
                    .as_bytes()
                    .chunks(width)
                    .map(|l| std::str::from_utf8(l).unwrap())
                    .collect();
                let text = lines.join(eol);
                for chunk in [1, 3, 64, 4096] {
                    assert_eq!(
                        run_decode(text.as_bytes(), chunk),
                        data,
                        "width {width}, {eol:?}, chunk {chunk}"
                    );
                }
            }
        }
        // Two lines only, the second shorter (a wrapped blob's last line), with or without
        // a line break after it.
        let want = STANDARD.decode(&encoded[..100]).unwrap();
        for end in ["", "\n", "\r\n"] {
            let text = format!("{}\n{}{end}", &encoded[..70], &encoded[70..100]);
            for chunk in [1, 7, 4096] {
                assert_eq!(
                    run_decode(text.as_bytes(), chunk),
                    want,
                    "{end:?} chunk {chunk}"
                );
            }
        }
    }

    /// Values of their own one per line, unpadded, of different lengths: each decodes from
    /// a group's start, whatever the lines before it left over.
    #[test]
    fn unpadded_values_one_per_line_each_decode() {
        let values: Vec<String> = (0..9)
            .map(|i| format!("row {i}: user{i}@acme-corp.io {}", "x".repeat(i * 5 % 7)))
            .collect();
        for eol in ["\n", "\r\n"] {
            let text = values
                .iter()
                .map(|v| URL_SAFE_NO_PAD.encode(v))
                .collect::<Vec<_>>()
                .join(eol);
            for chunk in [1, 5, 4096] {
                let out = run_decode(text.as_bytes(), chunk);
                let out = String::from_utf8_lossy(&out);
                for v in &values {
                    assert!(
                        out.contains(v.as_str()),
                        "{v:?} not in {out:?} ({eol:?}, chunk {chunk})"
                    );
                }
            }
        }
        // The second value shorter than the first, then a third: three values.
        let three = ["first value: a@b.io and more", "b@c.io x", "third: c@d.io"];
        let text = three.map(|v| URL_SAFE_NO_PAD.encode(v)).join("\n");
        for chunk in [1, 5, 4096] {
            let out = run_decode(text.as_bytes(), chunk);
            let out = String::from_utf8_lossy(&out);
            for v in three {
                assert!(out.contains(v), "{v:?} not in {out:?} (chunk {chunk})");
            }
        }
        // A first line too long to be wrapping is a value at once.
        let long = "y".repeat(901);
        let text = format!(
            "{}\n{}",
            URL_SAFE_NO_PAD.encode(&long),
            URL_SAFE_NO_PAD.encode("a@b.io x")
        );
        let out = run_decode(text.as_bytes(), 64);
        assert!(
            String::from_utf8_lossy(&out).ends_with("\na@b.io x"),
            "{out:?}"
        );
    }

    #[test]
    fn finds_runs_of_the_minimum_length_wherever_they_are() {
        let run = "A".repeat(BASE64_MIN_RUN);
        let short = "A".repeat(BASE64_MIN_RUN - 1);
        let cases: Vec<(String, Option<usize>)> = vec![
            (run.clone(), Some(0)),
            (short.clone(), None),
            (format!("x {short} y"), None),
            (format!("hello {run} there"), Some(6)),
            (format!("{} {run}", "a b ".repeat(40)), Some(161)),
            (format!("{short} {short} {run}"), Some(128)),
            (format!("{short}.{run}"), Some(64)),
        ];
        for (text, want) in cases {
            assert_eq!(find_run(text.as_bytes(), 0), want, "{text}");
        }
    }

    #[test]
    fn symbol_prefix_counts_the_symbols() {
        let text = b"aGVsbG8-_/+0123456789abcdefABCDEFxyz.rest";
        for k in 0..text.len() {
            let want = text[k..].iter().take_while(|&&b| is_symbol(b)).count();
            assert_eq!(symbol_prefix(&text[k..]), want, "{k}");
        }
    }

    /// Runs found with the branch-free pre-check are those found by walking every sample.
    #[test]
    fn finds_the_first_long_run_as_a_byte_walk_does() {
        fn walk(data: &[u8], from: usize) -> Option<usize> {
            let mut s = from;
            while s < data.len() {
                let n = data[s..].iter().take_while(|&&b| is_symbol(b)).count();
                if n >= BASE64_MIN_RUN {
                    return Some(s);
                }
                s += n + 1;
            }
            None
        }
        let mut texts = Vec::new();
        for len in [31, 32, 33, 63, 64, 65, 100] {
            for at in [0, 1, 30, 31, 32, 33, 62, 63, 64, 65, 97, 127, 128, 129] {
                let mut t = "a b ".repeat(60).into_bytes();
                t.extend(std::iter::repeat_n(b'.', 3));
                t.truncate(at.min(t.len()));
                t.extend(std::iter::repeat_n(b'Q', len));
                t.extend_from_slice(b". tail ");
                t.extend(std::iter::repeat_n(b'z', 70));
                texts.push(t);
            }
        }
        // Long runs of the range mask's superset (`.`, `:`, `@`, `=` are in `+..=z` but are
        // not symbols) with symbol runs of every length around 64 inside, at every offset
        // against the 64-byte blocks.
        for cut in [0, 1, 20, 62, 63, 64, 65, 66, 100] {
            for lead in [0, 1, 33, 63, 64, 65] {
                let mut t = "x ".repeat(lead / 2).into_bytes();
                t.extend(std::iter::repeat_n(b'Q', cut));
                t.push(b'.');
                t.extend(std::iter::repeat_n(b'r', 130 - cut.min(130)));
                t.extend_from_slice(b":@=");
                t.extend(std::iter::repeat_n(b'S', cut));
                texts.push(t);
            }
        }
        // Pseudo-random texts over symbols, superset-only bytes and breaks.
        let alphabet = b"aZ09+/-_.:@=;  aZ09aZ09aZ09aZ09\n\"";
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in [10, 63, 64, 65, 127, 128, 129, 300, 1000] {
            for _ in 0..40 {
                let mut t = Vec::with_capacity(len);
                while t.len() < len {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Long stretches of symbols now and then.
                    if x % 7 == 0 {
                        t.extend(std::iter::repeat_n(b'k', (x >> 8) as usize % 90));
                    } else {
                        t.push(alphabet[(x >> 16) as usize % alphabet.len()]);
                    }
                }
                texts.push(t);
            }
        }
        for t in &texts {
            for from in [0, 1, 5, 40] {
                assert_eq!(find_run(t, from), walk(t, from), "{} from {from}", t.len());
            }
        }
    }

    /// The mask walks (64 bytes at a time, back and forth) against byte walks: runs of
    /// both alphabets, 63/64/65 long and several windows long, at every offset near the
    /// ends of the input and of a window.
    #[test]
    fn mask_walks_agree_with_byte_walks() {
        let alphabet = b"ABCxyz019+/-_";
        let mut texts = Vec::new();
        for len in [1, 31, 32, 63, 64, 65, 127, 128, 129, 200] {
            for at in [0, 1, 31, 32, 63, 64, 65, 100] {
                let mut t: Vec<u8> = b"word, ".iter().cycle().take(at).copied().collect();
                t.extend((0..len).map(|k| alphabet[(k * 7 + at) % alphabet.len()]));
                t.extend_from_slice(b"=\n. ");
                t.extend((0..70).map(|k| alphabet[k % 5]));
                texts.push(t);
            }
        }
        for t in &texts {
            for from in [0, 1, 7, 40] {
                for p in from..t.len() {
                    if !is_symbol(t[p]) {
                        continue;
                    }
                    let mut s = p;
                    while s > from && is_symbol(t[s - 1]) {
                        s -= 1;
                    }
                    assert_eq!(run_start(t, from, p), s, "{t:?} {from} {p}");
                }
            }
            for at in 0..t.len() {
                let want = t[at..].iter().take_while(|&&b| is_symbol(b)).count();
                assert_eq!(symbols_from(t, at, usize::MAX), want, "{at}");
                assert_eq!(symbol_prefix(&t[at..]), want, "{at}");
                for limit in [0, 1, 63, 64, 65] {
                    let got = symbols_from(t, at, limit);
                    assert!(got >= want.min(limit) && got <= want, "{at} {limit}");
                }
            }
        }
    }

    #[test]
    fn plausible_needs_both_cases() {
        assert!(plausible(b"aGVsbG8", b"Gd29ybGQ"));
        assert!(!plausible(b"0123456789abcdef", b""));
        assert!(!plausible(b"ABCDEF0123", b"456"));
        // A whole window at once: only its first 64 bytes count.
        let hex = "0123456789abcdef".repeat(4);
        assert!(!plausible(b"", format!("{hex}X").as_bytes()));
        assert!(plausible(b"", format!("{}X", &hex[..63]).as_bytes()));
        assert!(plausible(b"", format!("Q{hex}").as_bytes()));
    }
}
