//! Zip archives (.zip, and the Office and OpenDocument formats built on zip: .xlsx, .docx,
//! .pptx, .odt, .ods) read entry by entry as a stream, and the text of XML entries.
//!
//! The archive is read front to back by its local file headers, the way it arrives: each
//! entry's name is scanned, then its content — stored, or deflated (inflated here; sizes
//! from the header, or from the data descriptor that follows when the header has none;
//! zip64 sizes understood) — goes to a node chosen by the entry's name: XML (.xml, .rels)
//! is scanned raw and as its text (tags dropped, entities decoded, a line break where a
//! paragraph, row or cell ends, so that `<w:t>alice@</w:t><w:t>acme.io</w:t>` reads as one
//! address), JSON as JSON, anything else as text with embedded content looked for (a zip
//! in a zip is one layer deeper).
//!
//! The central directory, which is what most readers go by (Python's `zipfile`, Java's
//! `ZipFile`, .NET, Office), is then checked against the entries read (found in review:
//! a local header saying "stored" where the directory said "deflated" had the deflated
//! bytes scanned as they were, and an entry hidden inside another's stored data was
//! reached only through the directory): every directory record must point at the start
//! of a local header read here, with the same method and compressed size; the end record
//! must be the archive's last bytes (its comment holding no other end record) and give
//! the directory's own place, size and count, as on one disk. Anything else is `corrupt`.
//! The directory's bytes (names, comments) are scanned as text.
//!
//! Bounds: `max_archive_entries` entries per request, every inflated byte counted against
//! `max_decoded_bytes`, each entry's expansion ratio against `max_ratio`. An encrypted
//! entry, another compression method (bzip2, LZMA, zstd...), or a stored entry whose size
//! only a data descriptor gives, cannot be inspected: not fully scanned (`unsupported`),
//! and the entry is skipped when its size is known (the reading stops when not). A broken
//! header, or an archive that ends inside an entry or before its central directory, is
//! `corrupt`.

use flate2::{Decompress, FlushDecompress, Status};

use super::node::{Node, for_entry};
use super::views::TwoViews;
use super::{Account, Out, RATIO_FLOOR, Reason, Waiting};

/// Signature of a local file header.
pub const LOCAL_HEADER_SIG: u32 = 0x0403_4b50;
const CENTRAL_HEADER_SIG: u32 = 0x0201_4b50;
const END_OF_CENTRAL_DIR_SIG: u32 = 0x0605_4b50;
const ZIP64_END_SIG: u32 = 0x0606_4b50;
const DIGITAL_SIGNATURE_SIG: u32 = 0x0505_4b50;
const DATA_DESCRIPTOR_SIG: u32 = 0x0807_4b50;
const LOCAL_HEADER_LEN: usize = 30;

/// Inflated bytes handed on at once.
const OUT_BUF: usize = 64 << 10;

enum State {
    /// Expecting a signature (a local header, or the central directory).
    Header,
    /// Inside an entry's data.
    Data(Box<Entry>),
    /// After an entry whose sizes come in a data descriptor.
    Descriptor { zip64: bool },
    /// Skipping the data of an entry that cannot be read.
    Skip(u64),
    /// After a stored entry whose sizes come in a data descriptor: empty when the
    /// descriptor follows at once with zero sizes (Info-ZIP writing to a pipe).
    EmptyStored { zip64: bool },
    /// In the central directory (and the end records): gathered, checked at the end.
    Central,
    /// Past the entries (the reading stopped).
    Done,
}

/// Central directory bytes kept for the check at the end: far more than
/// `max_archive_entries` records with ordinary names need (a record is 46 bytes and its
/// name, extra field and comment).
const MAX_CENTRAL: usize = 8 << 20;

/// Signature of the zip64 end-of-central-directory locator.
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;

/// A local entry as read: where its header starts (from the archive's first byte), its
/// method, and how many bytes its data took (the header's compressed size, or what the
/// deflate stream used when a data descriptor gives the size).
#[derive(Debug, Clone)]
struct Seen {
    offset: u64,
    method: u16,
    len: u64,
    /// The local header's name (the entry's decoder was chosen by it).
    name: Box<[u8]>,
}

/// What [`ZipNode::data`] did with its input.
enum Took {
    /// The entry ended after this many bytes: go on in the next state.
    Next(usize),
    /// The entry goes on: this many bytes were used, the rest waits for more input.
    More(usize),
    /// The reading stopped.
    Stopped,
}

/// How inflating an entry's input went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// The deflate stream goes on.
    More,
    /// The deflate stream ended.
    End,
    /// A limit stopped it.
    Stop,
}

struct Entry {
    /// Compressed bytes left, when the header says.
    remaining: Option<u64>,
    inflate: Option<Decompress>,
    descriptor: bool,
    zip64: bool,
    consumed: u64,
    produced: u64,
    /// Bytes of the entry's data taken so far.
    taken: u64,
    node: Node,
}

/// A zip archive feeding one node per entry.
pub(crate) struct ZipNode {
    state: State,
    pending: Vec<u8>,
    buf: Vec<u8>,
    depth: u32,
    segment: u64,
    entries: u64,
    /// After a problem: the rest of the input, scanned as raw bytes.
    raw: Option<Node>,
    /// Where the first byte not yet consumed sits in the archive.
    at: u64,
    /// The local entries read, in order.
    seen: Vec<Seen>,
    /// The central directory and end records, from their first byte (at `central_at`).
    central: Vec<u8>,
    central_at: u64,
    /// Found inside other content (see [`ZipNode::embedded`]): where its first byte sits
    /// in that content; `None` for content that is the archive.
    embedded: Option<u64>,
    /// An embedded archive that ended: the bytes it was given (this input's and any it
    /// held from earlier ones) that came after it.
    after: Option<Vec<u8>>,
    /// What `pending` and `central` hold (a header not read whole yet, the directory until
    /// the end record): not scanned yet.
    waiting: Waiting,
}

impl ZipNode {
    /// An archive whose entries are read at `depth`.
    pub(crate) fn new(depth: u32, acct: &mut Account) -> ZipNode {
        ZipNode {
            state: State::Header,
            pending: Vec::new(),
            buf: Vec::new(),
            depth,
            segment: acct.segment(),
            entries: 0,
            raw: None,
            at: 0,
            seen: Vec::new(),
            central: Vec::new(),
            central_at: 0,
            embedded: None,
            after: None,
            waiting: Waiting::new(acct),
        }
    }

    /// An archive found inside other content at `offset` (a self-extractor's stub, or any
    /// bytes, before it): read as one, up to the end of its end record; whatever follows
    /// is the content's again. Its directory may give offsets from the archive's first
    /// byte or from the content's (as `zip -A` writes); both are what readers accept.
    /// The content around it is scanned as it is by the caller, so nothing is scanned raw
    /// here when the reading stops.
    pub(crate) fn embedded(depth: u32, offset: u64, acct: &mut Account) -> ZipNode {
        ZipNode {
            embedded: Some(offset),
            ..ZipNode::new(depth, acct)
        }
    }

    /// Feeds an embedded archive; once it has ended (or stopped), how many bytes at the
    /// end of `data` are not its own.
    pub(crate) fn feed_embedded(&mut self, data: &[u8], out: &mut Out<'_, '_>) -> Option<Vec<u8>> {
        self.feed(data, out);
        if matches!(self.state, State::Done) {
            return Some(self.after.take().unwrap_or_default());
        }
        None
    }

    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        self.feed_archive(data, out);
        let held = match self.state {
            _ if self.raw.is_some() => 0,
            State::Done => 0,
            _ => self.pending.len() + self.central.len(),
        };
        self.waiting.set(held);
    }

    fn feed_archive(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        if let Some(raw) = &mut self.raw {
            raw.feed(data, out);
            return;
        }
        match self.state {
            State::Done => return,
            State::Central => return self.gather_central(data, out),
            _ => {}
        }
        // Entry data flows through without being copied when nothing is pending.
        if self.pending.is_empty() {
            let used = self.process(data, out);
            self.at += used as u64;
            if used < data.len() && !matches!(self.state, State::Done) {
                self.pending.extend_from_slice(&data[used..]);
            }
            return;
        }
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(data);
        let used = self.process(&buf, out);
        self.at += used as u64;
        if !matches!(self.state, State::Done) {
            buf.drain(..used);
            self.pending = buf;
        }
    }

    /// Keeps central directory bytes for the check at the end (at most [`MAX_CENTRAL`]:
    /// past that the archive is not checked, so not fully inspected).
    fn gather_central(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        if self.embedded.is_some() {
            self.central.extend_from_slice(data);
            if let Some(end) = central_end(&self.central) {
                self.after = Some(self.central.split_off(end));
                self.end_central(out);
            } else if self.central.len() > MAX_CENTRAL {
                self.central = Vec::new();
                self.stop(
                    out,
                    Reason::Corrupt,
                    "zip: a central directory too large to check",
                );
            }
            return;
        }
        if self.central.len() + data.len() > MAX_CENTRAL {
            let mut text = Node::plain_text(self.depth, out.acct);
            text.feed(&std::mem::take(&mut self.central), out);
            text.feed(data, out);
            self.stop(
                out,
                Reason::Corrupt,
                "zip: a central directory too large to check",
            );
            self.raw = Some(text);
            return;
        }
        self.central.extend_from_slice(data);
    }

    /// Where the reading stopped on a problem: the rest of `b` from `at`, and everything
    /// after it, is scanned as raw bytes.
    fn rest_raw(&mut self, b: &[u8], at: usize, out: &mut Out<'_, '_>) -> usize {
        if self.embedded.is_some() {
            // The caller scans the content as it is already: the rest is its own again.
            self.after = Some(b[at.min(b.len())..].to_vec());
            return b.len();
        }
        let mut raw = Node::plain_text(self.depth, out.acct);
        raw.feed(&b[at.min(b.len())..], out);
        self.raw = Some(raw);
        b.len()
    }

    /// Consumes what it can of `b`; returns how much.
    fn process(&mut self, b: &[u8], out: &mut Out<'_, '_>) -> usize {
        let mut pos = 0;
        loop {
            let rest = &b[pos..];
            match &mut self.state {
                State::Done => return b.len(),
                State::Central => {
                    self.gather_central(rest, out);
                    return b.len();
                }
                State::Header => {
                    if rest.len() < 4 {
                        return pos;
                    }
                    match u32le(rest, 0) {
                        LOCAL_HEADER_SIG => {}
                        CENTRAL_HEADER_SIG
                        | END_OF_CENTRAL_DIR_SIG
                        | ZIP64_END_SIG
                        | DIGITAL_SIGNATURE_SIG => {
                            self.state = State::Central;
                            self.central_at = self.at + pos as u64;
                            self.gather_central(rest, out);
                            return b.len();
                        }
                        _ => {
                            self.stop(out, Reason::Corrupt, "zip: not a local file header");
                            return self.rest_raw(b, pos, out);
                        }
                    }
                    if rest.len() < LOCAL_HEADER_LEN {
                        return pos;
                    }
                    let name_len = usize::from(u16le(rest, 26));
                    let extra_len = usize::from(u16le(rest, 28));
                    let len = LOCAL_HEADER_LEN + name_len + extra_len;
                    if rest.len() < len {
                        return pos;
                    }
                    self.open_entry(&rest[..len], self.at + pos as u64, out);
                    pos += len;
                    if matches!(self.state, State::Done) {
                        // An entry that cannot be read and cannot be skipped, or one too
                        // many: the rest is scanned as it is.
                        return self.rest_raw(b, pos, out);
                    }
                }
                State::Data(_) => match self.data(rest, out) {
                    Took::Next(used) => pos += used,
                    Took::More(used) => return pos + used,
                    Took::Stopped => return self.rest_raw(b, pos, out),
                },
                State::Descriptor { zip64 } => {
                    let sizes = if *zip64 { 16 } else { 8 };
                    if rest.len() < 4 {
                        return pos;
                    }
                    let len = if u32le(rest, 0) == DATA_DESCRIPTOR_SIG {
                        8 + sizes
                    } else {
                        4 + sizes
                    };
                    if rest.len() < len {
                        return pos;
                    }
                    pos += len;
                    self.state = State::Header;
                }
                State::EmptyStored { zip64 } => {
                    let len = if *zip64 { 24 } else { 16 };
                    if rest.len() < len {
                        return pos;
                    }
                    if u32le(rest, 0) != DATA_DESCRIPTOR_SIG || rest[4..len].iter().any(|&b| b != 0)
                    {
                        out.acct.problem(
                            Reason::Unsupported,
                            format!("zip entry {}: a stored entry of unknown size", self.entries),
                        );
                        self.state = State::Done;
                        return self.rest_raw(b, pos, out);
                    }
                    pos += len;
                    self.state = State::Header;
                }
                State::Skip(n) => {
                    let take = (*n).min(rest.len() as u64);
                    *n -= take;
                    pos += take as usize;
                    if *n > 0 {
                        return pos;
                    }
                    self.state = State::Header;
                }
            }
        }
    }

    /// Entry data: feeds what of `rest` belongs to the entry.
    fn data(&mut self, rest: &[u8], out: &mut Out<'_, '_>) -> Took {
        let State::Data(entry) = &mut self.state else {
            return Took::Next(0);
        };
        let take = entry
            .remaining
            .map_or(rest.len(), |r| r.min(rest.len() as u64) as usize);
        let (used, flow) = if entry.inflate.is_none() {
            entry.node.feed(&rest[..take], out);
            (take, Flow::More)
        } else {
            match inflate(entry, &rest[..take], &mut self.buf, out) {
                Ok(r) => r,
                Err(why) => {
                    self.stop(out, Reason::Corrupt, &why);
                    return Took::Stopped;
                }
            }
        };
        if flow == Flow::Stop {
            // A limit was reached (the account says which).
            entry.node.finish(out);
            self.state = State::Done;
            return Took::Stopped;
        }
        if let Some(r) = &mut entry.remaining {
            *r -= used as u64;
        }
        entry.taken += used as u64;
        let ended = flow == Flow::End || entry.remaining == Some(0);
        if !ended {
            // More of this entry's data is to come.
            return Took::More(used);
        }
        if entry.inflate.is_some() && flow != Flow::End {
            self.stop(out, Reason::Corrupt, "zip: a deflated entry is cut short");
            return Took::Stopped;
        }
        entry.node.finish(out);
        let left = entry.remaining.unwrap_or(0);
        if let Some(last) = self.seen.last_mut() {
            last.len = entry.taken + left;
        }
        self.state = if entry.descriptor {
            State::Descriptor { zip64: entry.zip64 }
        } else if left > 0 {
            State::Skip(left)
        } else {
            State::Header
        };
        Took::Next(used)
    }

    /// A local file header (with its name and extra field): the entry's name is scanned
    /// and its data node opened, or the entry is skipped.
    fn open_entry(&mut self, header: &[u8], offset: u64, out: &mut Out<'_, '_>) {
        self.entries += 1;
        if !out.acct.take_entry() {
            self.state = State::Done;
            return;
        }
        let flags = u16le(header, 6);
        let method = u16le(header, 8);
        let mut csize = u64::from(u32le(header, 18));
        let mut usize_ = u64::from(u32le(header, 22));
        let name_len = usize::from(u16le(header, 26));
        let name = &header[LOCAL_HEADER_LEN..LOCAL_HEADER_LEN + name_len];
        let extra = &header[LOCAL_HEADER_LEN + name_len..];
        let zip64 = zip64_sizes(extra).map(|(u, c)| {
            usize_ = u;
            csize = c;
        });
        let zip64 = zip64.is_some();
        let _ = usize_;
        let descriptor = flags & 0x0008 != 0;
        out.emit(self.segment, name);
        out.emit(self.segment, b"\n");
        let known = (!descriptor || csize > 0).then_some(csize);
        self.seen.push(Seen {
            offset,
            method,
            len: known.unwrap_or(0),
            name: name.into(),
        });
        if method == 0 && descriptor && csize == 0 && flags & 0x0001 == 0 {
            self.state = State::EmptyStored { zip64 };
            return;
        }
        let unreadable = if flags & 0x0001 != 0 {
            Some("an encrypted entry".to_owned())
        } else if method != 0 && method != 8 {
            Some(format!("an entry compressed with method {method}"))
        } else if method == 0 && known.is_none() {
            Some("a stored entry of unknown size".to_owned())
        } else {
            None
        };
        if let Some(why) = unreadable {
            out.acct.problem(
                Reason::Unsupported,
                format!("zip entry {}: {why}", self.entries),
            );
            self.state = match known {
                Some(n) if !descriptor => State::Skip(n),
                _ => State::Done,
            };
            return;
        }
        let node = for_entry(name, self.depth, out.acct);
        self.state = State::Data(Box::new(Entry {
            remaining: known.filter(|_| !descriptor || method == 0),
            inflate: (method == 8).then(|| Decompress::new(false)),
            descriptor,
            zip64,
            consumed: 0,
            produced: 0,
            taken: 0,
            node,
        }));
    }

    /// Records why the reading stops here; the rest of the archive is not read.
    fn stop(&mut self, out: &mut Out<'_, '_>, reason: Reason, why: &str) {
        out.acct.problem(reason, why);
        if let State::Data(entry) = &mut self.state {
            entry.node.finish(out);
        }
        self.state = State::Done;
    }

    pub(crate) fn finish(&mut self, out: &mut Out<'_, '_>) {
        self.waiting.set(0);
        if let Some(raw) = &mut self.raw {
            raw.finish(out);
            return;
        }
        match &self.state {
            State::Done => {}
            State::Central => self.end_central(out),
            State::Header if self.entries > 0 || !self.pending.is_empty() => self.stop(
                out,
                Reason::Corrupt,
                "zip: the archive ends before its central directory",
            ),
            State::Header => self.stop(
                out,
                Reason::Corrupt,
                "zip: an empty archive without a directory",
            ),
            _ => self.stop(
                out,
                Reason::Corrupt,
                "zip: the archive ends inside an entry",
            ),
        }
        self.pending = Vec::new();
    }
}

impl ZipNode {
    /// The central directory is all here: its text scanned, the archive checked.
    fn end_central(&mut self, out: &mut Out<'_, '_>) {
        let central = std::mem::take(&mut self.central);
        // Embedded too: the caller gives the archive's bytes to this reader only.
        let mut text = Node::plain_text(self.depth, out.acct);
        text.feed(&central, out);
        text.finish(out);
        if let Err(why) = self.check_central(&central) {
            out.acct.problem(Reason::Corrupt, format!("zip: {why}"));
        }
        self.state = State::Done;
    }

    /// Checks the central directory and end records (`central`, from their first byte)
    /// against the local entries read: what a reader going by the directory extracts must
    /// be what was scanned.
    fn check_central(&self, central: &[u8]) -> Result<(), String> {
        let short = || "the central directory is cut short".to_owned();
        let mut pos = 0;
        let mut records = 0u64;
        let mut records_end = None;
        loop {
            let rest = central
                .get(pos..)
                .filter(|r| r.len() >= 4)
                .ok_or_else(short)?;
            match u32le(rest, 0) {
                CENTRAL_HEADER_SIG if records_end.is_none() => {
                    let len = record_len(rest).ok_or_else(short)?;
                    rest.get(..len).ok_or_else(short)?;
                    records += 1;
                    pos += len;
                }
                DIGITAL_SIGNATURE_SIG if records_end.is_none() => {
                    let size = usize::from(u16le(rest.get(..6).ok_or_else(short)?, 4));
                    pos += 6 + size;
                    records_end = Some(pos);
                }
                ZIP64_END_SIG | ZIP64_LOCATOR_SIG | END_OF_CENTRAL_DIR_SIG => break,
                _ => return Err("an unknown record in the central directory".to_owned()),
            }
        }
        let records_len = records_end.unwrap_or(pos) as u64;
        // Zip64 end record (no extensible data: Python's `zipfile` looks for it 56 bytes
        // before its locator) and its locator, pointing at it; then the end record, last.
        let mut zip64 = None;
        if u32le(&central[pos..], 0) == ZIP64_END_SIG {
            let fixed = central.get(pos..pos + 56).ok_or_else(short)?;
            if u64le(fixed, 4) != 44 {
                return Err("a zip64 end record with extensible data".to_owned());
            }
            if u32le(fixed, 16) != 0 || u32le(fixed, 20) != 0 {
                return Err("an archive on several disks".to_owned());
            }
            zip64 = Some((
                u64le(fixed, 24),
                u64le(fixed, 32),
                u64le(fixed, 40),
                u64le(fixed, 48),
            ));
            let record_at = self.central_at + pos as u64;
            pos += 56;
            let locator = central
                .get(pos..pos + 20)
                .filter(|l| u32le(l, 0) == ZIP64_LOCATOR_SIG)
                .ok_or_else(|| "a zip64 end record without its locator".to_owned())?;
            let points_at = u64le(locator, 8);
            let shifted =
                points_at != record_at && Some(points_at.wrapping_sub(record_at)) != self.embedded;
            if u32le(locator, 4) != 0 || shifted || u32le(locator, 16) > 1 {
                return Err("a zip64 locator pointing elsewhere".to_owned());
            }
            pos += 20;
        } else if central.get(pos..pos + 4).map(|s| u32le(s, 0)) == Some(ZIP64_LOCATOR_SIG) {
            return Err("a zip64 locator without its record".to_owned());
        }
        let end = central
            .get(pos..pos + 22)
            .filter(|e| u32le(e, 0) == END_OF_CENTRAL_DIR_SIG)
            .ok_or_else(|| "no end record after the central directory".to_owned())?;
        let comment = usize::from(u16le(end, 20));
        if central.len() != pos + 22 + comment {
            return Err("bytes after the end record".to_owned());
        }
        let tail = &central[pos + 4..];
        if memchr::memmem::find(tail, b"PK\x05\x06").is_some() {
            // A reader looking for the end record from the back finds this one.
            return Err("another end record in the archive comment".to_owned());
        }
        if u16le(end, 4) != 0 || u16le(end, 6) != 0 {
            return Err("an archive on several disks".to_owned());
        }
        // Readers differ on which of the two end records they go by (Python's `zipfile`
        // takes the zip64 one whenever it is there, Java only when the classic one is
        // saturated): both must give the directory as it is.
        let agree = |small: u64, max: u64, big: Option<u64>, actual: u64| {
            (small == actual || small == max && big.is_some()) && big.is_none_or(|b| b == actual)
        };
        let z = |i: usize| zip64.map(|z: (u64, u64, u64, u64)| [z.0, z.1, z.2, z.3][i]);
        if !agree(u64::from(u16le(end, 8)), 0xFFFF, z(0), records)
            || !agree(u64::from(u16le(end, 10)), 0xFFFF, z(1), records)
        {
            return Err(format!(
                "the end records do not count the {records} entries of the directory"
            ));
        }
        if !agree(u64::from(u32le(end, 12)), 0xFFFF_FFFF, z(2), records_len) {
            return Err("the end records give the directory another size".to_owned());
        }
        // Offsets from the archive's first byte, or (embedded) from the content's; the
        // two end records must give the same.
        let classic = u64::from(u32le(end, 16));
        let declared = match z(3) {
            Some(big) if classic != 0xFFFF_FFFF && classic != big => {
                return Err("the end records place the central directory apart".to_owned());
            }
            Some(big) => big,
            None => classic,
        };
        let shift = declared.wrapping_sub(self.central_at);
        if shift != 0 && Some(shift) != self.embedded {
            return Err("the end record places the central directory elsewhere".to_owned());
        }
        self.check_records(central, records_len as usize, shift)
    }

    /// Each directory record against the local entries read; `shift`: what the offsets
    /// count before the archive's first byte.
    fn check_records(&self, central: &[u8], len: usize, shift: u64) -> Result<(), String> {
        let mut pos = 0;
        let mut n = 0;
        // The records' lengths were checked by the walk in `check_central`.
        while pos < len && u32le(&central[pos..], 0) == CENTRAL_HEADER_SIG {
            let fixed = &central[pos..pos + 46];
            let (name, extra) = (usize::from(u16le(fixed, 28)), usize::from(u16le(fixed, 30)));
            let name_bytes = &central[pos + 46..pos + 46 + name];
            let extra = &central[pos + 46 + name..pos + 46 + name + extra];
            self.check_record(fixed, name_bytes, extra, n, shift)?;
            n += 1;
            pos += record_len(&central[pos..]).expect("a whole record");
        }
        Ok(())
    }

    /// One central directory record (`fixed`: its first 46 bytes) against the local
    /// entries read.
    fn check_record(
        &self,
        fixed: &[u8],
        name: &[u8],
        extra: &[u8],
        n: u64,
        shift: u64,
    ) -> Result<(), String> {
        let method = u16le(fixed, 10);
        let csize = u64::from(u32le(fixed, 20));
        let usize_ = u64::from(u32le(fixed, 24));
        let offset = u64::from(u32le(fixed, 42));
        let (csize, offset) = zip64_central(extra, usize_, csize, offset);
        let offset = offset.wrapping_sub(shift);
        if u16le(fixed, 34) != 0 {
            return Err("an archive on several disks".to_owned());
        }
        let Ok(i) = self.seen.binary_search_by_key(&offset, |s| s.offset) else {
            return Err(format!(
                "directory entry {} points at no local header read",
                n + 1
            ));
        };
        let local = &self.seen[i];
        if *local.name != *name {
            return Err(format!(
                "directory entry {} names another file than its local header",
                n + 1
            ));
        }
        if local.method != method {
            return Err(format!(
                "directory entry {} says method {method}, its local header {}",
                n + 1,
                local.method
            ));
        }
        if local.len != csize {
            return Err(format!(
                "directory entry {} says {csize} bytes, its local entry took {}",
                n + 1,
                local.len
            ));
        }
        Ok(())
    }
}

/// The length of the central directory record at the start of `rest` (46 bytes, then its
/// name, extra field and comment); `None` while its fixed part is not all there.
fn record_len(rest: &[u8]) -> Option<usize> {
    let fixed = rest.get(..46)?;
    Some(
        46 + usize::from(u16le(fixed, 28))
            + usize::from(u16le(fixed, 30))
            + usize::from(u16le(fixed, 32)),
    )
}

/// Where the end record (and its comment) of a central directory that starts at
/// `central[0]` ends, once all of it is there: the records are walked by their lengths,
/// so a signature inside a name is not taken for one. At a record that is none of a
/// directory's, that place (the check then finds no end record).
fn central_end(central: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let rest = central.get(pos..)?;
        if rest.len() < 4 {
            return None;
        }
        let len = match u32le(rest, 0) {
            CENTRAL_HEADER_SIG => record_len(rest)?,
            DIGITAL_SIGNATURE_SIG => 6 + usize::from(u16le(rest.get(..6)?, 4)),
            ZIP64_END_SIG => usize::try_from(u64le(rest.get(..12)?, 4).saturating_add(12)).ok()?,
            ZIP64_LOCATOR_SIG => 20,
            END_OF_CENTRAL_DIR_SIG => {
                let end = 22 + usize::from(u16le(rest.get(..22)?, 20));
                return (rest.len() >= end).then_some(pos + end);
            }
            _ => return Some(pos),
        };
        if rest.len() < len {
            return None;
        }
        pos += len;
    }
}

/// The bytes a local file header needs before [`plausible_header`] can tell.
pub(crate) const PLAUSIBLE_NEEDS: usize = LOCAL_HEADER_LEN + MAX_GUESSED_NAME;

/// The longest entry name a header found inside other content may have.
const MAX_GUESSED_NAME: usize = 512;

/// Whether `b` (starting with a local header's signature) reads as a real local file
/// header, strictly enough that bytes which merely contain the signature (4 bytes in any
/// binary) are not taken for an archive: `None` while more bytes are needed.
pub(crate) fn plausible_header(b: &[u8]) -> Option<bool> {
    if b.len() < LOCAL_HEADER_LEN {
        return None;
    }
    let version = u16le(b, 4);
    let flags = u16le(b, 6);
    let method = u16le(b, 8);
    let (csize, usize_) = (u32le(b, 18), u32le(b, 22));
    let name_len = usize::from(u16le(b, 26));
    let sane = version & 0xFF <= 63
        && version >> 8 <= 19
        && flags & !0x080F == 0
        && (method == 0 || method == 8)
        && (1..=MAX_GUESSED_NAME).contains(&name_len)
        && usize::from(u16le(b, 28)) <= 1024
        && (method != 0 || flags & 0x0008 != 0 || csize == usize_);
    if !sane {
        return Some(false);
    }
    let name = b.get(LOCAL_HEADER_LEN..LOCAL_HEADER_LEN + name_len)?;
    Some(name.iter().all(|&c| c >= 0x20 && c != 0x7F))
}

/// The compressed size and local header offset of a central directory record, from its
/// zip64 field where the record's own values are `0xFFFFFFFF` (the field holds, in order,
/// the uncompressed size, the compressed size and the offset, each only when saturated).
fn zip64_central(extra: &[u8], usize_: u64, csize: u64, offset: u64) -> (u64, u64) {
    const MAX: u64 = 0xFFFF_FFFF;
    let Some((_, body)) = extra_fields(extra).find(|&(id, _)| id == 0x0001) else {
        return (csize, offset);
    };
    let mut at = 0;
    let mut next = |value: u64| {
        if value != MAX {
            return value;
        }
        let v = body.get(at..at + 8).map_or(value, |b| u64le(b, 0));
        at += 8;
        v
    };
    let _ = next(usize_);
    let c = next(csize);
    let o = next(offset);
    (c, o)
}

/// Inflates `input` into the entry's node; returns the bytes used and how it went (a
/// limit is recorded in the account).
fn inflate(
    entry: &mut Entry,
    input: &[u8],
    buf: &mut Vec<u8>,
    out: &mut Out<'_, '_>,
) -> Result<(usize, Flow), String> {
    let Some(d) = &mut entry.inflate else {
        return Ok((0, Flow::More));
    };
    if buf.len() < OUT_BUF {
        buf.resize(OUT_BUF, 0);
    }
    let mut pos = 0;
    loop {
        let (in0, out0) = (d.total_in(), d.total_out());
        let status = d
            .decompress(&input[pos..], buf, FlushDecompress::None)
            .map_err(|e| format!("zip: inflating an entry: {e}"))?;
        let used = (d.total_in() - in0) as usize;
        let produced = (d.total_out() - out0) as usize;
        pos += used;
        entry.consumed += used as u64;
        if produced > 0 {
            entry.produced += produced as u64;
            if !out.acct.take_decoded(produced as u64) {
                return Ok((pos, Flow::Stop));
            }
            let max_ratio = out.acct.limits().max_ratio;
            if entry.produced > RATIO_FLOOR
                && entry.produced > entry.consumed.saturating_mul(max_ratio)
            {
                out.acct.problem(
                    Reason::Ratio,
                    format!("zip entry expands more than {max_ratio} times"),
                );
                return Ok((pos, Flow::Stop));
            }
            entry.node.feed(&buf[..produced], out);
        }
        if status == Status::StreamEnd {
            return Ok((pos, Flow::End));
        }
        if used == 0 && produced == 0 {
            return Ok((pos, Flow::More));
        }
    }
}

/// The zip64 extended-information field (0x0001) of a local header's extra field:
/// (uncompressed, compressed) sizes.
fn zip64_sizes(extra: &[u8]) -> Option<(u64, u64)> {
    extra_fields(extra)
        .find(|&(id, body)| id == 0x0001 && body.len() >= 16)
        .map(|(_, body)| (u64le(body, 0), u64le(body, 8)))
}

/// The `(id, body)` fields of an extra field, up to the end or a field cut short.
fn extra_fields(mut extra: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if extra.len() < 4 {
            return None;
        }
        let id = u16le(extra, 0);
        let len = usize::from(u16le(extra, 2));
        let body = extra.get(4..4 + len)?;
        extra = &extra[4 + len..];
        Some((id, body))
    })
}

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64le(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Local names of XML elements whose end is a line break in the text view (paragraphs,
/// rows, cells, breaks: Office Open XML and OpenDocument).
const BLOCK_ELEMENTS: &[&[u8]] = &[
    b"p",
    b"br",
    b"cr",
    b"tr",
    b"tc",
    b"c",
    b"row",
    b"si",
    b"h",
    b"li",
    b"td",
    b"th",
    b"table-cell",
    b"table-row",
    b"line-break",
    b"list-item",
    b"div",
    b"v",
    b"f",
];
/// Local names of XML elements that stand for a space or a tab.
const SPACE_ELEMENTS: &[&[u8]] = &[b"tab", b"s", b"space"];

/// HTML's inline elements: in a body's markup every other tag ends a line of the text
/// view (`<email>a@b.io</email><email>c@d.io</email>` is two values), these join what they
/// hold to the text around them (`<span>alice</span>@acme.io` is one).
const INLINE_ELEMENTS: &[&[u8]] = &[
    b"a", b"abbr", b"b", b"bdi", b"bdo", b"big", b"cite", b"code", b"data", b"del", b"dfn", b"em",
    b"font", b"i", b"ins", b"kbd", b"mark", b"q", b"s", b"samp", b"small", b"span", b"strike",
    b"strong", b"sub", b"sup", b"time", b"tt", b"u", b"var", b"wbr",
];

/// Longest tag name or entity looked at.
const MAX_NAME: usize = 32;

/// XML or HTML (a zip entry, a body): scanned raw, and as its text (tags out, character
/// references in), the two views put together as [`TwoViews`] says.
pub(crate) struct XmlNode {
    views: TwoViews,
    state: XmlState,
}

/// Where the text reader is in the markup.
struct XmlState {
    /// A body's markup (any tag but HTML's inline ones ends a line), not an Office or
    /// OpenDocument part (whose text runs join across tags).
    markup: bool,
    in_tag: bool,
    name: Vec<u8>,
    naming: bool,
    entity: Option<Vec<u8>>,
    /// Inside a quoted attribute value of a body's markup (its quote): read as text, a
    /// line of its own (an address in `email="…"` is one to a parser: found in review).
    attr: Option<u8>,
    /// Inside `<![CDATA[`, and how many `]` wait to be told from its `]]>`.
    cdata: Option<u8>,
}

impl XmlNode {
    /// An XML entry of a zip (Office, OpenDocument).
    pub(crate) fn new(raw: Node, text: Node, acct: &Account) -> XmlNode {
        XmlNode::with(raw, text, false, acct)
    }

    /// An XML or HTML body.
    pub(crate) fn markup(raw: Node, text: Node, acct: &Account) -> XmlNode {
        XmlNode::with(raw, text, true, acct)
    }

    fn with(raw: Node, text: Node, markup: bool, acct: &Account) -> XmlNode {
        XmlNode {
            views: TwoViews::new(raw, text, acct),
            state: XmlState {
                markup,
                in_tag: false,
                name: Vec::new(),
                naming: false,
                entity: None,
                attr: None,
                cdata: None,
            },
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        let mut start = 0;
        for (i, &b) in data.iter().enumerate() {
            let before = self.views.buf.len();
            xml_byte(&mut self.state, &mut self.views.buf, b);
            let grew = self.views.buf.len() > before;
            if self.views.step(1, grew) {
                self.views.put_in(&data[start..=i], out);
                start = i + 1;
            }
        }
        self.views.raw_only(&data[start..], out);
    }

    pub(crate) fn finish(&mut self, out: &mut Out<'_, '_>) {
        if let Some(e) = self.state.entity.take() {
            self.views.buf.push(b'&');
            self.views.buf.extend_from_slice(&e);
        }
        self.views.finish(out);
    }
}

/// Appends the text of `data` to `buf`.
#[cfg(test)]
fn xml_text(x: &mut XmlState, buf: &mut Vec<u8>, data: &[u8]) {
    for &b in data {
        xml_byte(x, buf, b);
    }
}

/// Appends the text of the next byte `b` (if any) to `buf`.
fn xml_byte(x: &mut XmlState, buf: &mut Vec<u8>, b: u8) {
    if let Some(brackets) = x.cdata {
        // CDATA is text as it is, to its `]]>` (found in review: it was read as a tag).
        match b {
            b']' => x.cdata = Some(brackets.saturating_add(1)),
            b'>' if brackets >= 2 => {
                buf.extend(std::iter::repeat_n(b']', usize::from(brackets - 2)));
                x.cdata = None;
            }
            _ => {
                buf.extend(std::iter::repeat_n(b']', usize::from(brackets)));
                buf.push(b);
                x.cdata = Some(0);
            }
        }
        return;
    }
    if let Some(quote) = x.attr {
        if entity_byte(x, buf, b) {
            return;
        }
        if b == quote {
            x.attr = None;
            buf.push(b'\n');
        } else if b == b'&' {
            x.entity = Some(Vec::new());
        } else {
            buf.push(b);
        }
        return;
    }
    if x.in_tag {
        if b == b'>' {
            x.in_tag = false;
            let name = x.name.strip_prefix(b"/").unwrap_or(&x.name);
            let name = name.strip_suffix(b"/").unwrap_or(name);
            let local = match name.iter().rposition(|&c| c == b':') {
                Some(colon) => &name[colon + 1..],
                None => name,
            };
            if x.markup {
                // Comments, declarations and processing instructions end no line: a
                // comment inside an address is not there to a browser (found in review).
                let aside = matches!(x.name.first(), Some(b'!' | b'?'));
                let inline = aside
                    || local.len() <= 8 && {
                        let lower = local.to_ascii_lowercase();
                        INLINE_ELEMENTS.contains(&lower.as_slice())
                    };
                if !inline && buf.last() != Some(&b'\n') {
                    buf.push(b'\n');
                }
            } else if BLOCK_ELEMENTS.contains(&local)
                && (x.name.starts_with(b"/") || x.name.ends_with(b"/"))
            {
                buf.push(b'\n');
            } else if SPACE_ELEMENTS.contains(&local) {
                buf.push(b' ');
            }
        } else if x.naming {
            if b.is_ascii_whitespace() || x.name.len() >= MAX_NAME {
                x.naming = false;
            } else if b == b'/' && !x.name.is_empty() {
                // `<br/>`: an empty element ends here.
                x.naming = false;
                x.name.push(b'/');
            } else {
                x.name.push(b);
                if x.name == b"![CDATA[" {
                    x.in_tag = false;
                    x.naming = false;
                    x.cdata = Some(0);
                }
            }
        } else if x.markup && (b == b'"' || b == b'\'') && !x.name.starts_with(b"!") {
            x.attr = Some(b);
        } else if b == b'/' && x.name.last() != Some(&b'/') {
            x.name.push(b'/');
        }
        return;
    }
    if entity_byte(x, buf, b) {
        return;
    }
    match b {
        b'<' => {
            x.in_tag = true;
            x.naming = true;
            x.name.clear();
        }
        b'&' => x.entity = Some(Vec::new()),
        _ => buf.push(b),
    }
}

/// A byte of a character reference being read: true when it took `b` (a name byte, or
/// the `;` that ends it); a reference that ends otherwise goes in as written.
fn entity_byte(x: &mut XmlState, buf: &mut Vec<u8>, b: u8) -> bool {
    let Some(entity) = &mut x.entity else {
        return false;
    };
    if b == b';' {
        let e = std::mem::take(entity);
        x.entity = None;
        match decode_entity(&e) {
            Some(c) => {
                let mut tmp = [0u8; 4];
                buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
            }
            None => {
                buf.push(b'&');
                buf.extend_from_slice(&e);
                buf.push(b';');
            }
        }
        return true;
    }
    if entity.len() < MAX_NAME && (b.is_ascii_alphanumeric() || b == b'#') {
        entity.push(b);
        return true;
    }
    let e = std::mem::take(entity);
    x.entity = None;
    buf.push(b'&');
    buf.extend_from_slice(&e);
    false
}

/// `amp`, `#64`, `#x40` ... as the character.
fn decode_entity(e: &[u8]) -> Option<char> {
    match e {
        b"amp" => Some('&'),
        b"lt" => Some('<'),
        b"gt" => Some('>'),
        b"quot" => Some('"'),
        b"apos" => Some('\''),
        // HTML's names for the bytes of identifiers (an address written `a&commat;b.io` to
        // keep it from harvesters), and its non-breaking space as a space.
        b"commat" => Some('@'),
        b"period" => Some('.'),
        b"lowbar" => Some('_'),
        b"plus" => Some('+'),
        b"nbsp" => Some(' '),
        [b'#', b'x' | b'X', hex @ ..] => {
            char::from_u32(u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?)
        }
        [b'#', dec @ ..] => char::from_u32(std::str::from_utf8(dec).ok()?.parse().ok()?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(xml: &str) -> String {
        text_as(xml, false)
    }

    fn text_as(xml: &str, markup: bool) -> String {
        let mut acct = Account::new(super::super::Limits::default());
        let raw = Node::text(0, &mut acct);
        let text = Node::plain_text(0, &mut acct);
        let mut x = XmlNode::with(raw, text, markup, &acct);
        let mut buf = Vec::new();
        xml_text(&mut x.state, &mut buf, xml.as_bytes());
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[test]
    fn markup_text_ends_lines_at_tags_but_inline_ones() {
        let cases: &[(&str, &str)] = &[
            (
                "<email>a&#64;b.io</email><email>c&#x40;d.io</email>",
                "\na@b.io\nc@d.io\n",
            ),
            (
                "<li><SPAN>alice</SPAN>&commat;<b>acme</b>.io</li><li>x</li>",
                "\nalice@acme.io\nx\n",
            ),
            ("<p>one<br/>two</p>", "\none\ntwo\n"),
            (
                "<e>a@<![CDATA[b]x]]y.io]]]></e><e>c&#64;<!-- x -->d.io</e>",
                "\na@b]x]]y.io]\nc@d.io\n",
            ),
            (
                "<c email=\"a&#64;b.io\" n='x'/><a href=\"/\">y</a>",
                "a@b.io\nx\n/\ny",
            ),
        ];
        for (markup, want) in cases {
            assert_eq!(text_as(markup, true), *want, "{markup}");
        }
    }

    #[test]
    fn xml_text_joins_runs_and_breaks_blocks() {
        let cases: &[(&str, &str)] = &[
            (
                "<w:p><w:r><w:t>alice@</w:t></w:r><w:r><w:t>acme.io</w:t></w:r></w:p>",
                "alice@acme.io\n",
            ),
            (
                "<si><t>a@b.io</t></si><si><t>c@d.io</t></si>",
                "a@b.io\nc@d.io\n",
            ),
            (
                "<c r=\"A1\"><v>1</v></c><c r=\"B1\"><v>2</v></c>",
                "1\n\n2\n\n",
            ),
            (
                "alice&#64;acme.io &amp; bob&#x40;acme.io",
                "alice@acme.io & bob@acme.io",
            ),
            ("a&bogus;b &nbsp c", "a&bogus;b &nbsp c"),
            ("bob&commat;acme&period;io&nbsp;x", "bob@acme.io x"),
            (
                "<text:p>one<text:s/>two<text:line-break/>three</text:p>",
                "one two\nthree\n",
            ),
            ("<w:t xml:space=\"preserve\">x</w:t><w:tab/>y", "x y"),
        ];
        for (xml, want) in cases {
            assert_eq!(text_of(xml), *want, "{xml}");
        }
    }

    #[test]
    fn zip64_extra_field() {
        let mut extra = vec![0x99, 0x99, 2, 0, 7, 7];
        extra.extend_from_slice(&[1, 0, 16, 0]);
        extra.extend_from_slice(&5u64.to_le_bytes());
        extra.extend_from_slice(&3u64.to_le_bytes());
        assert_eq!(zip64_sizes(&extra), Some((5, 3)));
        assert_eq!(zip64_sizes(&[1, 0, 200, 0]), None);
    }
}
