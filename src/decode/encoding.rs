//! Content-encodings (`gzip`, `x-gzip`, `deflate`, `br`, `zstd`) undone as streams.
//!
//! Backends: `flate2` on `zlib-rs` (gzip, deflate, zip entries), `brotli-decompressor`
//! (large windows refused: at most 16 MiB), `zstd` (libzstd; windows up to
//! 2^[`ZSTD_WINDOW_LOG_MAX`] bytes). Each decompressor is push-based: a chunk in, its output
//! out through a fixed buffer into the next node, counted against the request's
//! `max_decoded_bytes` and this stream's `max_ratio` as it goes — a bomb stops at the limit,
//! not at the end of its output. A stream that fails to decode, stops at a limit or ends
//! early marks the request not fully scanned; what is left of its input is then scanned
//! as raw bytes, so nothing passes unseen. What the backends skip unseen is read here and
//! scanned: a gzip member's header (name, comment, extra field: the deflate data after it
//! is inflated raw, the CRCs checked here) and zstd skippable frames. A brotli metadata
//! block is not (a known gap: finding one means parsing brotli's bit stream).

use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};
use flate2::{Decompress, FlushDecompress, Status};
use zstd::stream::raw::{DParameter, Decoder as ZstdDecoder, InBuffer, Operation, OutBuffer};

use super::node::Node;
use super::{Account, Out, RATIO_FLOOR, Reason, Waiting};

/// Most codings one `Content-Encoding` header may stack.
pub const MAX_CODINGS: usize = 4;

/// Largest zstd window accepted (8 MiB), as browsers and curl do by default.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Output buffer of one decompressor.
const OUT_BUF: usize = 64 << 10;

/// A compression format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// gzip (RFC 1952), concatenated members included.
    Gzip,
    /// HTTP `deflate`: zlib (RFC 1950), or raw deflate as some clients send it.
    Deflate,
    /// Raw deflate (zip entries).
    RawDeflate,
    /// Brotli (RFC 7932).
    Brotli,
    /// Zstandard (RFC 8878).
    Zstd,
}

impl Codec {
    /// The window its decompressor may pin beyond the fixed buffers (0: none of note).
    pub(crate) fn window(self) -> u64 {
        match self {
            Codec::Brotli => BROTLI_WINDOW_MAX,
            Codec::Zstd => 1 << ZSTD_WINDOW_LOG_MAX,
            Codec::Gzip | Codec::Deflate | Codec::RawDeflate => 0,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Deflate => "deflate",
            Codec::RawDeflate => "deflate",
            Codec::Brotli => "br",
            Codec::Zstd => "zstd",
        }
    }
}

/// Largest brotli window accepted (16 MiB: standard windows; large ones are refused).
pub const BROTLI_WINDOW_MAX: u64 = 16 << 20;

/// The most memory the decompressors of a `Content-Encoding` value's codings may pin
/// beyond their fixed buffers: a brotli or zstd window each (gzip and deflate keep 32 KiB
/// inside the fixed buffers). 0 for a value that is not decoded (no decompressor opens).
pub(crate) fn window_bytes(value: &[u8]) -> u64 {
    parse(value).map_or(0, |codecs| codecs.iter().map(|c| c.window()).sum())
}

/// Parses a `Content-Encoding` value into the codings in the order they were applied
/// (`identity` dropped). An unknown coding, or more than [`MAX_CODINGS`], is an error
/// saying which.
pub fn parse(value: &[u8]) -> Result<Vec<Codec>, String> {
    let text = String::from_utf8_lossy(value);
    let mut codings = Vec::new();
    for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let codec = match token.to_ascii_lowercase().as_str() {
            "identity" => continue,
            "gzip" | "x-gzip" => Codec::Gzip,
            "deflate" => Codec::Deflate,
            "br" => Codec::Brotli,
            "zstd" => Codec::Zstd,
            _ => {
                let shown = super::shown_name(token);
                return Err(format!("content-encoding {shown} is not decoded"));
            }
        };
        codings.push(codec);
    }
    if codings.len() > MAX_CODINGS {
        return Err(format!(
            "content-encoding stacks {} codings (at most {MAX_CODINGS})",
            codings.len()
        ));
    }
    Ok(codings)
}

enum Engine {
    /// `deflate` before its first two bytes say zlib or raw.
    DeflateHead(Vec<u8>),
    /// A gzip member's header, read here (not by zlib, which skips its fields unseen):
    /// its bytes so far.
    GzipHead(Vec<u8>),
    /// A gzip member's trailer (CRC-32 and size): its bytes so far.
    GzipTrailer(Vec<u8>),
    Flate(Decompress),
    Brotli(Box<BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>>),
    Zstd(Box<ZstdDecoder<'static>>),
}

/// What one step of a decompressor did.
struct Step {
    used: usize,
    produced: usize,
    /// The stream (or gzip member, or zstd frame) is complete.
    end: bool,
}

/// One decompressor and the node its output feeds.
pub(crate) struct DecompressNode {
    codec: Codec,
    engine: Option<Engine>,
    /// The compressed stream is complete (a gzip member or zstd frame may follow).
    ended: bool,
    fed: bool,
    consumed: u64,
    produced: u64,
    buf: Vec<u8>,
    next: Node,
    /// After a failure or a limit: the rest of the input, scanned as raw bytes.
    raw: Option<Node>,
    depth: u32,
    /// The window memory taken for it from the inspection's pool (see
    /// [`super::WindowPool`]), given back when the node is dropped or stops decoding.
    window: Option<super::WindowTicket>,
    /// A guessed inner layer's window, not taken yet: taken once its first bytes show a
    /// frame header (see [`zstd_header`]); until then its input waits in `head`.
    wanted: u64,
    head: Vec<u8>,
    /// Where a zstd stream stands between frames (see [`ZstdFrame`]).
    zstd_frame: ZstdFrame,
    /// The CRC-32 and length of the current gzip member's output, checked against its
    /// trailer (zlib checked them when it read the framing).
    member: (crc32fast::Hasher, u64),
    /// The gzip header fields read (name, comment, extra field) and the pieces of zstd
    /// skippable frames, not yet scanned: they travel with the body, and were places to
    /// hide a list (the decoders skip them unseen; found in review). Each is scanned as
    /// content of its own (an archive in one is opened), after the decoded content has
    /// ended: scanned between two members' output, one cut the last value of the first
    /// (found in review). Only those met before any output, and any past
    /// [`FIELDS_HELD_MAX`], go in at once.
    fields: Vec<Vec<u8>>,
    /// The skippable frame being read (at most [`FIELD_PIECE`] bytes of it).
    piece: Vec<u8>,
    /// A gzip header that did not read as one: its bytes, scanned as they are (as plain
    /// text: sniffed, they would open the same broken stream again).
    unread: Vec<u8>,
    /// What `fields` and `piece` hold, as part of the inspection's waiting bytes.
    waiting: Waiting,
    /// A layer guessed from magic bytes (not declared by a header), until it produces its
    /// first output: the input taken so far. If it fails before then, it was not this
    /// format after all: its input is scanned as raw bytes from the start, and no problem
    /// is recorded (the bytes were inspected, just not decoded).
    guess: Option<Vec<u8>>,
}

/// Input a guessed layer may take before producing output; past it, the guess stands.
const GUESS_MAX: usize = 64 << 10;

/// Where a zstd stream stands: libzstd skips a skippable frame (RFC 8878 §3.1.2: a magic
/// `0x184D2A5?`, a 32-bit size, that many bytes of anything) unseen, so a list sent as one
/// passed as inspected (found in review). Frames are told apart here, and a skippable
/// frame's content is scanned (see `DecompressNode::fields`).
enum ZstdFrame {
    /// At a frame's start: its first bytes so far (up to 8: a skippable frame's magic and
    /// size).
    Start(Vec<u8>),
    /// Inside a skippable frame: bytes left.
    Skip(u64),
    /// Inside a frame the decoder reads.
    Frame,
}

/// One step of libzstd inside a frame over `input` into `buf`; at the frame's end the
/// stream is back at a frame's start.
fn zstd_run(
    d: &mut ZstdDecoder<'static>,
    input: &[u8],
    buf: &mut [u8],
    frame: &mut ZstdFrame,
) -> Result<Step, String> {
    let mut inb = InBuffer::around(input);
    let mut outb = OutBuffer::around(buf);
    let hint = d.run(&mut inb, &mut outb).map_err(|e| e.to_string())?;
    if hint == 0 {
        *frame = ZstdFrame::Start(Vec::new());
    }
    Ok(Step {
        used: inb.pos(),
        produced: outb.pos(),
        end: hint == 0,
    })
}

/// Whether a frame starting with `magic` is a skippable one.
fn skippable(magic: &[u8]) -> bool {
    magic.len() >= 4 && magic[0] & 0xf0 == 0x50 && magic[1..4] == [0x2a, 0x4d, 0x18]
}

/// Longest gzip member header read (its name, comment and extra field together); a longer
/// one is `corrupt`. Real ones are a few dozen bytes.
const GZIP_HEAD_MAX: usize = 256 << 10;

/// Skippable frame content is scanned in pieces of this size (a place that depends on the
/// content only).
const FIELD_PIECE: usize = 64 << 10;

/// Header fields and skippable frame pieces held for the end of the content at most;
/// past this they are due, and go into the stream right after the next byte that
/// separates values ([`Out::put_pending`]): put in between two steps of the decoder, they
/// cut the value across them (found in session 13: twelve addresses, each split by a
/// skippable frame of 1.1 MiB, were all lost). Half the held-back chunks of a streamed
/// body (1 MiB), so what a node still holds lies in the chunks held back, and what is
/// pending is put in before they go ([`super::Inspection::flush_pending`]).
const FIELDS_HELD_MAX: usize = 512 << 10;

/// Pending content past this goes in at once, separator or not (decoded text with no
/// separator while this much comes: one value may be cut). Fields due wait for the next
/// output of the decoder, and a stream of tiny frames between large skippable ones holds
/// about 2 MiB of them before its text shows a separator (the test
/// `decode_edges::fields_past_the_held_limit_do_not_cut_the_decoded_text`).
const FIELDS_HELD_HARD: usize = 4 << 20;

/// A gzip member header (RFC 1952 §2.3) at the start of `head`, when all of it is there:
/// its length, with its name, comment and extra field appended to `fields`.
fn gzip_header(head: &[u8], fields: &mut Vec<Vec<u8>>) -> Result<Option<usize>, String> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if head.len() < 10 {
        return Ok(None);
    }
    if head[..3] != [0x1f, 0x8b, 8] {
        return Err("not a gzip member header".into());
    }
    let flags = head[3];
    if flags & 0xe0 != 0 {
        return Err("reserved gzip header flags set".into());
    }
    let mut at = 10;
    let mut found: Vec<&[u8]> = Vec::new();
    if flags & FEXTRA != 0 {
        let Some(len) = head.get(at..at + 2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let Some(extra) = head.get(at + 2..at + 2 + len) else {
            return Ok(None);
        };
        found.push(extra);
        at += 2 + len;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let Some(nul) = memchr::memchr(0, &head[at..]) else {
                return Ok(None);
            };
            found.push(&head[at..at + nul]);
            at += nul + 1;
        }
    }
    if flags & FHCRC != 0 {
        let Some(crc) = head.get(at..at + 2) else {
            return Ok(None);
        };
        // The low 16 bits of the CRC-32 of the header before it (the fields are scanned
        // all the same).
        if u16::from_le_bytes([crc[0], crc[1]]) != crc32fast::hash(&head[..at]) as u16 {
            fields.extend(found.into_iter().map(<[u8]>::to_vec));
            return Err("the header's CRC does not match".into());
        }
        at += 2;
    }
    fields.extend(
        found
            .into_iter()
            .filter(|f| !f.is_empty())
            .map(<[u8]>::to_vec),
    );
    Ok(Some(at))
}

impl DecompressNode {
    /// A decompressor at `depth` (its output is at `depth + 1`) feeding `next`; `inner`:
    /// opened inside the content (not for the request's own `Content-Encoding`), its
    /// window taken from the inspection's pool.
    pub(crate) fn new(
        codec: Codec,
        next: Node,
        depth: u32,
        inner: bool,
        acct: &mut Account,
    ) -> DecompressNode {
        let window = match codec.window() {
            bytes if inner && bytes > 0 => acct.take_window(bytes, codec.name()),
            _ => Ok(None),
        };
        // No window: the bytes are scanned as they are (the problem is recorded).
        let engine = window.is_ok().then(|| Self::engine(codec, acct)).flatten();
        DecompressNode::with_engine(codec, engine, next, depth, window.unwrap_or(None), acct)
    }

    /// A decompressor for a stream guessed from its magic bytes inside the content (see
    /// `guess`). A window, if its codec needs one, is taken only once the bytes after the
    /// magic read as a frame header, so bytes that merely start like one are scanned as
    /// they are, never refused for want of memory (found in review).
    pub(crate) fn guessed(
        codec: Codec,
        next: Node,
        depth: u32,
        acct: &mut Account,
    ) -> DecompressNode {
        let engine = Self::engine(codec, acct);
        let decodes = engine.is_some();
        let mut node = DecompressNode::with_engine(codec, engine, next, depth, None, acct);
        if decodes {
            node.wanted = codec.window();
        }
        node.guess = Some(Vec::new());
        node
    }

    fn engine(codec: Codec, acct: &mut Account) -> Option<Engine> {
        match codec {
            Codec::Gzip => Some(Engine::GzipHead(Vec::new())),
            Codec::Deflate => Some(Engine::DeflateHead(Vec::new())),
            Codec::RawDeflate => Some(Engine::Flate(Decompress::new(false))),
            Codec::Brotli => {
                let mut state = BrotliState::new(
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                );
                // Standard windows only (at most 16 MiB): large windows reach 1 GiB.
                state.large_window = false;
                Some(Engine::Brotli(Box::new(state)))
            }
            Codec::Zstd => match ZstdDecoder::new().and_then(|mut d| {
                d.set_parameter(DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))?;
                Ok(d)
            }) {
                Ok(d) => Some(Engine::Zstd(Box::new(d))),
                Err(e) => {
                    acct.problem(Reason::Corrupt, format!("zstd decoder: {e}"));
                    None
                }
            },
        }
    }

    fn with_engine(
        codec: Codec,
        engine: Option<Engine>,
        next: Node,
        depth: u32,
        window: Option<super::WindowTicket>,
        acct: &mut Account,
    ) -> DecompressNode {
        let raw = engine.is_none().then(|| Node::plain_text(depth, acct));
        DecompressNode {
            codec,
            engine,
            ended: false,
            fed: false,
            consumed: 0,
            produced: 0,
            buf: vec![0; OUT_BUF],
            next,
            raw,
            depth,
            window,
            wanted: 0,
            head: Vec::new(),
            zstd_frame: ZstdFrame::Start(Vec::new()),
            member: (crc32fast::Hasher::new(), 0),
            fields: Vec::new(),
            piece: Vec::new(),
            unread: Vec::new(),
            waiting: Waiting::new(acct),
            guess: None,
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        self.feed_input(data, out);
        // Inside a zstd frame libzstd may hold part of a block, which it decodes only once
        // all of it is in (up to 128 KiB of input not scanned yet: found in review). How
        // much it holds is not known, so a frame counts as waiting while it lasts: a proxy
        // streaming the body then holds its last chunks back (1 MiB: more than a block).
        let inside = matches!(self.zstd_frame, ZstdFrame::Frame) && self.raw.is_none();
        let held = self.fields_held() + usize::from(inside && self.engine.is_some());
        self.waiting.set(held);
    }

    fn feed_input(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        if self.wanted == 0 {
            return self.decode(data, out);
        }
        self.fed = true;
        self.head.extend_from_slice(data);
        let Some(header) = zstd_header(&self.head) else {
            return;
        };
        let head = std::mem::take(&mut self.head);
        let wanted = std::mem::take(&mut self.wanted);
        let problem = match header {
            // Without room the problem is recorded: a frame, not decoded.
            ZstdHeader::Frame => match out.acct.take_window(wanted, self.codec.name()) {
                Ok(ticket) => {
                    self.window = ticket;
                    return self.decode(&head, out);
                }
                Err(()) => None,
            },
            ZstdHeader::NotFrame => None,
            // A frame this decoder refuses is content not seen: said so (found in review:
            // a frame with a 16 MiB window passed as fully inspected, its bytes scanned
            // compressed).
            ZstdHeader::Refused(why) => Some((Reason::Unsupported, why.to_owned())),
        };
        // Every byte as it is.
        self.guess = None;
        self.stop(problem, &head, out);
    }

    fn decode(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        self.fed = true;
        let mut input = data;
        while self.raw.is_none() && !input.is_empty() {
            if self.ended {
                // Something after the end: another gzip member, or trailing bytes.
                if self.codec == Codec::Gzip && input[0] == 0x1f {
                    self.engine = Some(Engine::GzipHead(Vec::new()));
                    self.ended = false;
                } else if self.codec != Codec::Zstd {
                    self.stop(None, input, out);
                    return;
                }
            }
            let step = match self.step(input) {
                Ok(step) => step,
                Err(why) => {
                    if let Some(mut taken) = self.guess.take() {
                        // Not this format: every byte is scanned as it is.
                        taken.extend_from_slice(input);
                        self.stop(None, &taken, out);
                        return;
                    }
                    let detail = format!("{} stream: {why}", self.codec.name());
                    self.stop(Some((Reason::Corrupt, detail)), input, out);
                    return;
                }
            };
            if !self.fields.is_empty() {
                if self.produced == 0 {
                    // Nothing decoded yet (a first member's header: the usual case), so
                    // nothing to cut.
                    self.scan_fields(out);
                } else if self.fields.iter().map(Vec::len).sum::<usize>() > FIELDS_HELD_MAX {
                    // Whole fields and pieces only (a piece ends at a place in the content,
                    // a chunk anywhere: found in review, counting the piece being filled
                    // moved the fields at a place that depended on the chunks).
                    for field in std::mem::take(&mut self.fields) {
                        out.put_pending(self.depth + 1, field);
                    }
                    if out.pending_bytes() > FIELDS_HELD_HARD {
                        out.flush_pending();
                    }
                }
            }
            if let Some(taken) = &mut self.guess {
                if step.produced > 0 || taken.len() + step.used > GUESS_MAX {
                    self.guess = None;
                } else {
                    taken.extend_from_slice(&input[..step.used]);
                }
            }
            input = &input[step.used..];
            self.consumed += step.used as u64;
            if step.end {
                self.ended = true;
            }
            if step.produced > 0 {
                self.produced += step.produced as u64;
                if !out.acct.take_decoded(step.produced as u64) {
                    // The account recorded which limit.
                    self.stop(None, input, out);
                    return;
                }
                if let Some(problem) = self.over_ratio(out) {
                    self.stop(Some(problem), input, out);
                    return;
                }
                self.next.feed(&self.buf[..step.produced], out);
            } else if step.used == 0 && !step.end {
                // No progress: the decoder wants more input than this chunk held.
                break;
            }
        }
        if let Some(raw) = &mut self.raw {
            raw.feed(input, out);
        }
    }

    /// Bytes held in `fields` and `piece`.
    fn fields_held(&self) -> usize {
        self.fields.iter().map(Vec::len).sum::<usize>() + self.piece.len() + self.unread.len()
    }

    /// Scans the fields held, each as content of its own.
    fn scan_fields(&mut self, out: &mut Out<'_, '_>) {
        if !self.unread.is_empty() {
            let mut node = Node::plain_text(self.depth + 1, out.acct);
            node.feed(&std::mem::take(&mut self.unread), out);
            node.finish(out);
        }
        for field in std::mem::take(&mut self.fields) {
            let mut node = Node::text(self.depth + 1, out.acct);
            node.feed(&field, out);
            node.finish(out);
        }
    }

    /// One decompression step over `input` into `self.buf`.
    fn step(&mut self, input: &[u8]) -> Result<Step, String> {
        let Some(engine) = &mut self.engine else {
            return Ok(Step {
                used: input.len(),
                produced: 0,
                end: false,
            });
        };
        match engine {
            Engine::DeflateHead(head) => {
                let take = (2 - head.len()).min(input.len());
                head.extend_from_slice(&input[..take]);
                if head.len() == 2 {
                    // RFC 1950: CM = 8, and the header is a multiple of 31.
                    let zlib = head[0] & 0x0f == 8
                        && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0;
                    let mut d = Decompress::new(zlib);
                    let head = std::mem::take(head);
                    let mut sink = [0u8; 0];
                    // Two header bytes never produce output.
                    d.decompress(&head, &mut sink, FlushDecompress::None)
                        .map_err(|e| e.to_string())?;
                    *engine = Engine::Flate(d);
                }
                Ok(Step {
                    used: take,
                    produced: 0,
                    end: false,
                })
            }
            Engine::GzipHead(head) => {
                let before = head.len();
                let take = input.len().min(GZIP_HEAD_MAX - before);
                head.extend_from_slice(&input[..take]);
                let header = gzip_header(head, &mut self.fields).inspect_err(|_| {
                    // Not read: its bytes are scanned as they are (those of this input
                    // are again, with the rest of it; a guess scans all it took).
                    if self.guess.is_none() {
                        self.unread = std::mem::take(head);
                    }
                })?;
                match header {
                    Some(len) => {
                        // The deflate data after it, raw.
                        *engine = Engine::Flate(Decompress::new(false));
                        self.member = (crc32fast::Hasher::new(), 0);
                        Ok(Step {
                            used: len - before,
                            produced: 0,
                            end: false,
                        })
                    }
                    None if head.len() >= GZIP_HEAD_MAX => {
                        Err(format!("a header over {GZIP_HEAD_MAX} bytes"))
                    }
                    None => Ok(Step {
                        used: take,
                        produced: 0,
                        end: false,
                    }),
                }
            }
            Engine::GzipTrailer(trailer) => {
                let take = (8 - trailer.len()).min(input.len());
                trailer.extend_from_slice(&input[..take]);
                let end = trailer.len() == 8;
                if end {
                    let field = |i: usize| {
                        u32::from_le_bytes([
                            trailer[i],
                            trailer[i + 1],
                            trailer[i + 2],
                            trailer[i + 3],
                        ])
                    };
                    let (crc, len) = std::mem::take(&mut self.member);
                    if (field(0), field(4)) != (crc.finalize(), len as u32) {
                        return Err("a member's CRC-32 or size does not match its data".into());
                    }
                }
                Ok(Step {
                    used: take,
                    produced: 0,
                    end,
                })
            }
            Engine::Flate(d) => {
                let (in0, out0) = (d.total_in(), d.total_out());
                let status = d
                    .decompress(input, &mut self.buf, FlushDecompress::None)
                    .map_err(|e| e.to_string())?;
                let end = status == Status::StreamEnd;
                let step = Step {
                    used: (d.total_in() - in0) as usize,
                    produced: (d.total_out() - out0) as usize,
                    end: end && self.codec != Codec::Gzip,
                };
                if self.codec == Codec::Gzip {
                    self.member.0.update(&self.buf[..step.produced]);
                    self.member.1 += step.produced as u64;
                    if end {
                        // A member's deflate data ends with its 8-byte trailer.
                        *engine = Engine::GzipTrailer(Vec::with_capacity(8));
                    }
                }
                Ok(step)
            }
            Engine::Brotli(state) => {
                let (mut avail_in, mut in_off) = (input.len(), 0);
                let (mut avail_out, mut out_off, mut total) = (self.buf.len(), 0, 0);
                let result = BrotliDecompressStream(
                    &mut avail_in,
                    &mut in_off,
                    input,
                    &mut avail_out,
                    &mut out_off,
                    &mut self.buf,
                    &mut total,
                    state,
                );
                match result {
                    BrotliResult::ResultFailure => Err("invalid brotli data".into()),
                    r => Ok(Step {
                        used: in_off,
                        produced: out_off,
                        end: matches!(r, BrotliResult::ResultSuccess),
                    }),
                }
            }
            Engine::Zstd(d) => match &mut self.zstd_frame {
                ZstdFrame::Start(head) => {
                    let take = (8 - head.len()).min(input.len());
                    head.extend_from_slice(&input[..take]);
                    if head.len() >= 4 && !skippable(head) {
                        // A frame for the decoder: the bytes held here first, all taken.
                        // (Not ended until it ends: a second frame cut short is corrupt.)
                        let held = std::mem::take(head);
                        self.zstd_frame = ZstdFrame::Frame;
                        self.ended = false;
                        let step = zstd_run(d, &held, &mut self.buf, &mut self.zstd_frame)?;
                        if step.used < held.len() {
                            return Err("a frame's first bytes not taken".into());
                        }
                        return Ok(Step { used: take, ..step });
                    }
                    if head.len() == 8 {
                        let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
                        self.zstd_frame = ZstdFrame::Skip(u64::from(size));
                        self.ended = size == 0;
                    }
                    Ok(Step {
                        used: take,
                        produced: 0,
                        end: false,
                    })
                }
                ZstdFrame::Skip(left) => {
                    let room = (FIELD_PIECE - self.piece.len()) as u64;
                    let take = (*left).min(room).min(input.len() as u64) as usize;
                    self.piece.extend_from_slice(&input[..take]);
                    *left -= take as u64;
                    let end = *left == 0;
                    if end || self.piece.len() == FIELD_PIECE {
                        self.fields.push(std::mem::take(&mut self.piece));
                    }
                    if end {
                        self.zstd_frame = ZstdFrame::Start(Vec::new());
                    }
                    Ok(Step {
                        used: take,
                        produced: 0,
                        end,
                    })
                }
                ZstdFrame::Frame => zstd_run(d, input, &mut self.buf, &mut self.zstd_frame),
            },
        }
    }

    /// The expansion-ratio problem, once the output is over the floor and more than
    /// `max_ratio` times the input taken.
    fn over_ratio(&self, out: &Out<'_, '_>) -> Option<(Reason, String)> {
        let max_ratio = out.acct.limits().max_ratio;
        (self.produced > RATIO_FLOOR && self.produced > self.consumed.saturating_mul(max_ratio))
            .then(|| {
                let name = self.codec.name();
                (
                    Reason::Ratio,
                    format!("{name} stream expands more than {max_ratio} times"),
                )
            })
    }

    /// Stops decoding (recording `problem`, if any); `rest` and what follows are scanned
    /// as raw bytes — as plain text: sniffing them would open the same broken stream again,
    /// one node inside the other without end (a fuzzing find).
    fn stop(&mut self, problem: Option<(Reason, String)>, rest: &[u8], out: &mut Out<'_, '_>) {
        if let Some((reason, detail)) = problem {
            out.acct.problem(reason, detail);
        }
        self.engine = None;
        // No decoder, no window: given back at once (found in review: a stopped or
        // failed layer kept it as long as its part or body went on).
        self.window = None;
        let mut raw = Node::plain_text(self.depth, out.acct);
        raw.feed(rest, out);
        self.raw = Some(raw);
    }

    pub(crate) fn finish(&mut self, out: &mut Out<'_, '_>) {
        if self.wanted > 0 && self.raw.is_none() {
            // Ended before a frame header: not a frame.
            let head = std::mem::take(&mut self.head);
            self.wanted = 0;
            self.guess = None;
            self.stop(None, &head, out);
        }
        if self.raw.is_none() && self.fed && !self.ended {
            // Output still held by the decoder comes out with empty input.
            loop {
                match self.step(&[]) {
                    Ok(step) if step.produced > 0 => {
                        self.guess = None;
                        self.produced += step.produced as u64;
                        if !out.acct.take_decoded(step.produced as u64) {
                            break;
                        }
                        // What a decoder holds back can be most of a bomb (brotli takes a
                        // whole small input in one step): the ratio applies here too.
                        if let Some(problem) = self.over_ratio(out) {
                            self.stop(Some(problem), &[], out);
                            break;
                        }
                        self.next.feed(&self.buf[..step.produced], out);
                        if step.end {
                            self.ended = true;
                            break;
                        }
                    }
                    Ok(step) => {
                        self.ended |= step.end;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if let Some(taken) = self.guess.take() {
                // Ended before producing anything: not this format.
                self.stop(None, &taken, out);
            } else if !self.ended {
                out.acct.problem(
                    Reason::Corrupt,
                    format!("{} stream ends before its end", self.codec.name()),
                );
            }
        }
        self.next.finish(out);
        // The decoded content has ended: what was due goes in now.
        out.flush_pending();
        // The fields after the decoded content has ended (a piece of a skippable frame
        // cut short too).
        if !self.piece.is_empty() {
            self.fields.push(std::mem::take(&mut self.piece));
        }
        self.scan_fields(out);
        self.waiting.set(0);
        if let Some(raw) = &mut self.raw {
            raw.finish(out);
        }
    }
}

/// What the bytes after a zstd magic say (RFC 8878 3.1.1.1).
#[derive(Debug, PartialEq, Eq)]
enum ZstdHeader {
    /// A frame header this decoder takes.
    Frame,
    /// The reserved bit is set: no frame, bytes that only start like one.
    NotFrame,
    /// A frame this decoder refuses (a dictionary, a window over 8 MiB).
    Refused(&'static str),
}

/// Reads the frame header after a zstd magic: `None` until its bytes are there (at most
/// 13).
fn zstd_header(head: &[u8]) -> Option<ZstdHeader> {
    let &descriptor = head.get(4)?;
    if descriptor & 0x08 != 0 {
        return Some(ZstdHeader::NotFrame);
    }
    if descriptor & 0x03 != 0 {
        return Some(ZstdHeader::Refused("a zstd frame that needs a dictionary"));
    }
    let window = if descriptor & 0x20 != 0 {
        // Single segment: the content size, right after the descriptor, is the window.
        let size = [1usize, 2, 4, 8][usize::from(descriptor >> 6)];
        let field = head.get(5..5 + size)?;
        let value = field
            .iter()
            .rev()
            .fold(0u64, |acc, &b| acc << 8 | u64::from(b));
        if size == 2 { value + 256 } else { value }
    } else {
        let &w = head.get(5)?;
        let base = 1u64 << (10 + u32::from(w >> 3));
        base + base / 8 * u64::from(w & 7)
    };
    Some(if window <= 1 << ZSTD_WINDOW_LOG_MAX {
        ZstdHeader::Frame
    } else {
        ZstdHeader::Refused("a zstd frame whose window is over 8 MiB")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zstd_frame_header_is_told_from_bytes_that_only_start_like_one() {
        use ZstdHeader::{Frame, NotFrame, Refused};
        let real = zstd::stream::encode_all(&b"alice@acme-corp.io\n".repeat(50)[..], 3).unwrap();
        assert_eq!(zstd_header(&real), Some(Frame));
        assert_eq!(zstd_header(&real[..4]), None);
        let magic = [0x28, 0xb5, 0x2f, 0xfd];
        let with = |rest: &[u8]| [&magic[..], rest].concat();
        let refused = |h: Option<ZstdHeader>| matches!(h, Some(Refused(_)));
        assert_eq!(zstd_header(&with(&[0x08, 0x00])), Some(NotFrame));
        assert!(refused(zstd_header(&with(&[0x01, 0x00]))), "a dictionary");
        // Windows: 2^(10 + exponent) plus mantissa eighths; 8 MiB is the most.
        assert!(refused(zstd_header(&with(&[0x00, 14 << 3]))));
        assert!(refused(zstd_header(&with(&[0x00, 13 << 3 | 1]))), "9 MiB");
        assert_eq!(zstd_header(&with(&[0x00, 13 << 3])), Some(Frame));
        assert_eq!(zstd_header(&with(&[0x00])), None);
        // Single segment: the content size is the window (2-byte fields start at 256).
        assert_eq!(zstd_header(&with(&[0x20, 200])), Some(Frame));
        assert_eq!(zstd_header(&with(&[0x60, 0xff])), None);
        assert_eq!(zstd_header(&with(&[0x60, 0xff, 0xff])), Some(Frame));
        assert!(
            refused(zstd_header(&with(&[0xa0, 0, 0, 0x81, 0]))),
            "8.1 MiB"
        );
        assert_eq!(zstd_header(&with(&[0xa0, 0, 0, 0x80, 0])), Some(Frame));
    }

    #[test]
    fn parses_content_encoding_stacks() {
        let cases: &[(&str, Result<&[Codec], ()>)] = &[
            ("gzip", Ok(&[Codec::Gzip])),
            ("x-gzip", Ok(&[Codec::Gzip])),
            ("GZIP, br", Ok(&[Codec::Gzip, Codec::Brotli])),
            ("identity", Ok(&[])),
            ("deflate,zstd", Ok(&[Codec::Deflate, Codec::Zstd])),
            (" , gzip ,", Ok(&[Codec::Gzip])),
            ("compress", Err(())),
            ("gzip, aes128gcm", Err(())),
            ("gzip,gzip,gzip,gzip,gzip", Err(())),
        ];
        for (value, want) in cases {
            let got = parse(value.as_bytes());
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(*w), "{value}"),
                Err(()) => assert!(got.is_err(), "{value}"),
            }
        }
    }
}
