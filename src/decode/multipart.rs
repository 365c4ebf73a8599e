//! `multipart/*` bodies (RFC 2046 §5.1, RFC 7578), parsed as a stream.
//!
//! Every part is inspected: its header block goes to the scanner as text (the field name
//! and the filename included, an RFC 5987 `filename*` decoded as well), and its body is
//! decoded by its own `Content-Transfer-Encoding` (base64, quoted-printable) and then by
//! its own `Content-Type` and `Content-Encoding` — a JSON part as JSON, a nested multipart
//! as multipart, a zip or an .xlsx by its first bytes. The preamble and the epilogue are
//! scanned as text (an archive in them opened, as in any text). Delimiters may end in
//! CRLF or a bare LF.
//!
//! Bounds: a part's header block may hold at most [`MAX_PART_HEADERS`] bytes; past that,
//! or when the body ends before its closing delimiter, the request is not fully scanned
//! (`corrupt`) and the rest is scanned as raw bytes.

use memchr::memmem::Finder;

use super::node::{Node, for_part};
use super::{Account, Out, Reason, Waiting};

/// Largest header block of one part.
pub const MAX_PART_HEADERS: usize = 16 << 10;

/// Longest line after a delimiter (it should hold only transport padding).
const MAX_DELIMITER_LINE: usize = 1024;

enum State {
    /// In the preamble, a part body or (with no node) past a broken part.
    Body,
    /// Right after a delimiter: `--` closes, otherwise the line ends.
    AfterDelimiter,
    /// Reading a part's header block.
    Headers,
    /// After the close delimiter.
    Epilogue,
}

/// A multipart body feeding one node per part.
pub(crate) struct MultipartNode {
    /// `\n--boundary`.
    finder: Finder<'static>,
    delimiter_len: usize,
    state: State,
    /// Bytes not yet consumed: a possible delimiter prefix, an unfinished header block.
    pending: Vec<u8>,
    /// Where the current region's bytes go (preamble, part body, epilogue).
    node: Option<Node>,
    depth: u32,
    segment: u64,
    parts: u64,
    /// An unfinished header block held in `pending` (its names and filename not scanned).
    waiting: Waiting,
}

impl MultipartNode {
    /// Multipart content with this boundary; parts are decoded at `depth`.
    pub(crate) fn new(boundary: &[u8], depth: u32, acct: &mut Account) -> MultipartNode {
        let mut needle = b"\n--".to_vec();
        needle.extend_from_slice(boundary);
        let finder = Finder::new(&needle).into_owned();
        MultipartNode {
            delimiter_len: needle.len(),
            finder,
            state: State::Body,
            // The first delimiter may open the body: it needs no line break before it.
            pending: b"\n".to_vec(),
            // The preamble (and the epilogue): text, searched for an archive as any text
            // is (a zip there passed unopened: found in session 15).
            node: Some(Node::text(depth, acct)),
            depth,
            segment: acct.segment(),
            parts: 0,
            waiting: Waiting::new(acct),
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(data);
        let used = self.process(&buf, false, out);
        buf.drain(..used);
        self.pending = buf;
        // Outside a header block it holds at most a delimiter cut by the chunk's end.
        let held = match self.state {
            State::Headers | State::AfterDelimiter => self.pending.len(),
            _ => 0,
        };
        self.waiting.set(held);
    }

    /// Consumes what it can of `b`; returns how much. `last`: no more input follows.
    fn process(&mut self, b: &[u8], last: bool, out: &mut Out<'_, '_>) -> usize {
        let mut pos = 0;
        loop {
            match self.state {
                State::Body | State::Epilogue => {
                    let found = match self.state {
                        State::Body => self.finder.find(&b[pos..]),
                        _ => None,
                    };
                    match found {
                        Some(k) => {
                            let end = pos + k;
                            let body_end = if end > pos && b[end - 1] == b'\r' {
                                end - 1
                            } else {
                                end
                            };
                            if let Some(node) = &mut self.node {
                                node.feed(&b[pos..body_end], out);
                                node.finish(out);
                            }
                            self.node = None;
                            pos = end + self.delimiter_len;
                            self.state = State::AfterDelimiter;
                        }
                        None => {
                            let keep = match self.state {
                                // A delimiter cut by the end, and the `\r` before it
                                // (not part of the body; found in review: it broke a zstd
                                // part whose delimiter was cut one byte short). Only what
                                // may start one: the last bytes whatever they were held
                                // up to 73 bytes of the part unscanned, room for a list
                                // of short addresses (found in review).
                                State::Body if !last => {
                                    cut_delimiter(&b[pos..], self.finder.needle())
                                }
                                _ => 0,
                            };
                            let end = b.len() - keep;
                            if let Some(node) = &mut self.node {
                                node.feed(&b[pos..end], out);
                            }
                            return end;
                        }
                    }
                }
                State::AfterDelimiter => {
                    let rest = &b[pos..];
                    if rest.len() < 2 && !last {
                        return pos;
                    }
                    if rest.starts_with(b"--") {
                        self.state = State::Epilogue;
                        self.node = Some(Node::text(self.depth, out.acct));
                        continue;
                    }
                    match memchr::memchr(b'\n', rest) {
                        Some(nl) => {
                            pos += nl + 1;
                            self.state = State::Headers;
                        }
                        None if rest.len() > MAX_DELIMITER_LINE || last => {
                            return self.broken(b, pos, "a delimiter line does not end", out);
                        }
                        None => return pos,
                    }
                }
                State::Headers => {
                    let rest = &b[pos..];
                    let end = header_end(rest);
                    let Some((block_len, skip)) = end else {
                        if rest.len() > MAX_PART_HEADERS || last {
                            return self.broken(b, pos, "a part's headers do not end", out);
                        }
                        return pos;
                    };
                    if block_len > MAX_PART_HEADERS {
                        return self.broken(b, pos, "a part's headers are too long", out);
                    }
                    self.open_part(&rest[..block_len], out);
                    pos += block_len + skip;
                    self.state = State::Body;
                }
            }
        }
    }

    /// The structure broke at `pos`: record it and scan the rest as raw text.
    fn broken(&mut self, b: &[u8], pos: usize, why: &str, out: &mut Out<'_, '_>) -> usize {
        out.acct
            .problem(Reason::Corrupt, format!("multipart: {why}"));
        let mut node = Node::text(self.depth, out.acct);
        node.feed(&b[pos..], out);
        self.node = Some(node);
        self.state = State::Epilogue;
        b.len()
    }

    /// A part's header block: scanned as text; its body node opened.
    fn open_part(&mut self, block: &[u8], out: &mut Out<'_, '_>) {
        self.parts += 1;
        out.emit(self.segment, block);
        let headers = parse_headers(block);
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_slice())
        };
        if let Some(disposition) = get("content-disposition") {
            if let Some(name) = super::header_param(disposition, "filename*") {
                let decoded = decode_ext_value(&name);
                out.emit(self.segment, b"\n");
                out.emit(self.segment, &decoded);
            }
        }
        self.node = Some(for_part(
            get("content-type"),
            get("content-encoding"),
            get("content-transfer-encoding"),
            self.depth,
            out.acct,
        ));
    }

    pub(crate) fn finish(&mut self, out: &mut Out<'_, '_>) {
        let buf = std::mem::take(&mut self.pending);
        self.process(&buf, true, out);
        self.waiting.set(0);
        let why = match self.state {
            State::Epilogue => None,
            State::Body if self.parts == 0 => Some("no delimiter found"),
            _ => Some("the body ends before its close delimiter"),
        };
        if let Some(why) = why {
            out.acct
                .problem(Reason::Corrupt, format!("multipart: {why}"));
        }
        if let Some(node) = &mut self.node {
            node.finish(out);
        }
        self.node = None;
    }
}

/// How many bytes at the end of `b` may be the start of a delimiter cut by the end of the
/// input (a proper prefix of `needle`, `\n--boundary`), with the `\r` before it.
fn cut_delimiter(b: &[u8], needle: &[u8]) -> usize {
    let longest = needle.len().saturating_sub(1).min(b.len());
    let k = (1..=longest)
        .rev()
        .find(|&k| b.ends_with(&needle[..k]))
        .unwrap_or(0);
    if b.len() > k && b[b.len() - k - 1] == b'\r' {
        k + 1
    } else {
        k
    }
}

/// The end of a header block in `b`: (block length, terminator length). An empty block
/// (the part starts with its blank line) has length 0.
fn header_end(b: &[u8]) -> Option<(usize, usize)> {
    if b.starts_with(b"\r\n") {
        return Some((0, 2));
    }
    if b.starts_with(b"\n") {
        return Some((0, 1));
    }
    let mut from = 0;
    while let Some(k) = memchr::memchr(b'\n', &b[from..]) {
        let nl = from + k;
        match b.get(nl + 1) {
            Some(b'\n') => return Some((nl + 1, 1)),
            Some(b'\r') if b.get(nl + 2) == Some(&b'\n') => return Some((nl + 1, 2)),
            Some(_) => from = nl + 1,
            None => return None,
        }
    }
    None
}

/// Header fields of a block (folded lines joined), names as text.
fn parse_headers(block: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, v)) = fields.last_mut() {
                v.push(b' ');
                v.extend_from_slice(line.trim_ascii());
            }
            continue;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(line[..colon].trim_ascii()).into_owned();
            fields.push((name, line[colon + 1..].trim_ascii().to_vec()));
        }
    }
    fields
}

/// An RFC 5987 `ext-value` (`UTF-8''n%C3%A4me.csv`): the percent-decoded value.
fn decode_ext_value(v: &[u8]) -> Vec<u8> {
    let value = match v.iter().rposition(|&b| b == b'\'') {
        Some(q) => &v[q + 1..],
        None => v,
    };
    percent_encoding::percent_decode(value).collect()
}

/// A MIME part in `Content-Transfer-Encoding: quoted-printable` (RFC 2045 §6.7), decoded
/// into its content node: `=XX` is a byte, `=` at a line end a soft break.
pub(crate) struct QuotedPrintableNode {
    pending: Vec<u8>,
    buf: Vec<u8>,
    next: Node,
}

impl QuotedPrintableNode {
    pub(crate) fn new(next: Node) -> QuotedPrintableNode {
        QuotedPrintableNode {
            pending: Vec::new(),
            buf: Vec::new(),
            next,
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(data);
        self.buf.clear();
        let mut i = 0;
        while i < input.len() {
            let Some(off) = memchr::memchr(b'=', &input[i..]) else {
                self.buf.extend_from_slice(&input[i..]);
                i = input.len();
                break;
            };
            let j = i + off;
            self.buf.extend_from_slice(&input[i..j]);
            if j + 2 >= input.len() {
                // `=`, `=X` or `=\r` at the end: wait for the rest.
                self.pending.extend_from_slice(&input[j..]);
                i = input.len();
                break;
            }
            match (input[j + 1], input[j + 2]) {
                (b'\r', b'\n') => i = j + 3,
                (b'\n', _) => i = j + 2,
                (hi, lo) => match (hex(hi), hex(lo)) {
                    (Some(h), Some(l)) => {
                        self.buf.push(h << 4 | l);
                        i = j + 3;
                    }
                    _ => {
                        self.buf.push(b'=');
                        i = j + 1;
                    }
                },
            }
        }
        debug_assert_eq!(i, input.len());
        self.next.feed(&self.buf, out);
    }

    pub(crate) fn finish(&mut self, out: &mut Out<'_, '_>) {
        let rest = std::mem::take(&mut self.pending);
        // A trailing `=` is a soft break; anything else is kept as written.
        let rest: &[u8] = match rest.as_slice() {
            [b'='] | [b'=', b'\n'] | [b'=', b'\r'] => &[],
            r => r,
        };
        self.next.feed(rest, out);
        self.next.finish(out);
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks_end_at_a_blank_line() {
        let cases: &[(&str, Option<(usize, usize)>)] = &[
            ("\r\nbody", Some((0, 2))),
            ("\nbody", Some((0, 1))),
            ("A: b\r\n\r\nbody", Some((6, 2))),
            ("A: b\n\nbody", Some((5, 1))),
            ("A: b\r\nC: d\r\n\r\n", Some((12, 2))),
            ("A: b\r\n", None),
            ("A: b", None),
        ];
        for (text, want) in cases {
            assert_eq!(header_end(text.as_bytes()), *want, "{text:?}");
        }
    }

    #[test]
    fn parses_part_headers_with_folding() {
        let block = b"Content-Disposition: form-data; name=\"f\";\r\n filename=\"a.csv\"\r\ncontent-type: text/csv\r\n";
        let h = parse_headers(block);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].0, "Content-Disposition");
        assert_eq!(h[0].1, b"form-data; name=\"f\"; filename=\"a.csv\"");
        assert_eq!(h[1].1, b"text/csv");
        assert_eq!(
            decode_ext_value(b"UTF-8''n%C3%A4me.csv"),
            "näme.csv".as_bytes()
        );
    }
}
