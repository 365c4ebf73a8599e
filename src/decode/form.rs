//! `application/x-www-form-urlencoded` bodies and request targets, percent-decoded as a
//! stream.
//!
//! Keys and values are percent-decoded and `+` becomes a space; each `&` becomes a tab, so
//! that a match never joins two fields and a base64 run ends with its field. A `%` not
//! followed by two hex digits is
//! kept as it is (browsers send it that way too). A request target is decoded the same way
//! except that its path (up to the first `?`) keeps `+` and `&` as they are.

use super::block;
use super::form_base64::FieldBase64;
use super::node::Node;
use super::{Account, BASE64_MIN_RUN, Out};
use crate::window::{WIDTH, Window};

/// A form or target decoder feeding its text node.
pub(crate) struct FormNode {
    /// In the query (or a form body): `+` is a space and `&` separates fields.
    query: bool,
    /// A `%` escape cut by the end of a chunk: `%` and at most one more byte.
    pending: [u8; 2],
    pending_len: usize,
    /// The decoded chunk. It keeps its length between chunks (written over, never
    /// cleared): at least the chunk's length plus [`SLACK`].
    buf: Vec<u8>,
    /// The last bytes of a form chunk (after its 64-byte windows) with `+` and `&`
    /// translated, before their escapes are resolved.
    translated: Vec<u8>,
    next: Node,
    /// Raw base64 in the fields, its `+` read as spaces (see [`super::form_base64`]).
    fields: Box<FieldBase64>,
    /// Decoded pieces of it, handed on and not yet put pending.
    pieces: Vec<Vec<u8>>,
    /// Reading the current field's text recorded the request's first problem, a corrupt
    /// stream.
    field_corrupt: bool,
}

/// Output room past a chunk's length: a cut escape's bytes written back as they were, and
/// a window's copies, which write up to 64 bytes past what it decodes to (see
/// [`FormNode::decode_query`]).
const SLACK: usize = 2 * WIDTH;

/// Decoded pieces of a raw base64 field held at most for the field's end (see
/// [`FormNode::put_pieces`]).
const PIECES_HELD_HARD: usize = 4 << 20;

/// Copies the 64 bytes at `src[from..]` to `dst[to..]`: a window's plain span and
/// whatever follows it, in fixed-size moves (no call to `memcpy`, no branch on the span's
/// length); the bytes past the span are written over by what comes next.
#[inline(always)]
fn copy_window(src: &[u8; 2 * WIDTH], from: usize, dst: &mut [u8; 2 * WIDTH], to: usize) {
    dst[to..to + WIDTH].copy_from_slice(&src[from..from + WIDTH]);
}

impl FormNode {
    /// A form body whose decoded text `next` reads at `depth`.
    pub(crate) fn body(next: Node, depth: u32, acct: &Account) -> FormNode {
        FormNode::new(true, next, depth, acct)
    }

    /// A request target (path, then query) whose decoded text `next` reads at `depth`.
    pub(crate) fn target(next: Node, depth: u32, acct: &Account) -> FormNode {
        FormNode::new(false, next, depth, acct)
    }

    fn new(query: bool, next: Node, depth: u32, acct: &Account) -> FormNode {
        FormNode {
            query,
            pending: [0; 2],
            pending_len: 0,
            buf: Vec::new(),
            translated: Vec::new(),
            next,
            fields: Box::new(FieldBase64::new(query, depth + 1, acct)),
            pieces: Vec::new(),
            field_corrupt: false,
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        let need = data.len() + SLACK;
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        let mut buf = std::mem::take(&mut self.buf);
        let n = self.decode(data, &mut buf);
        self.feed_fields(&buf[..n], out);
        self.buf = buf;
    }

    /// Decoded text to `next`, field by field (a field ends at a `\t`, a `&` as sent).
    /// What the field's raw base64 decoded goes in where it cuts no value of the text:
    /// `Out::put_pending` puts it after the next byte that separates values past the
    /// place it was handed on (the end of the candidate, or of a piece of it), which the
    /// text decides, not the chunks.
    fn feed_fields(&mut self, text: &[u8], out: &mut Out<'_, '_>) {
        // `text[..fed]` has gone to `next`. A field the raw base64 reader decodes gets a
        // feed of its own; the others go on in one feed (a feed per field made a form of
        // 400 000 small fields 3-4 times slower).
        let (mut fed, mut field) = (0, 0);
        for t in memchr::memchr_iter(b'\t', text) {
            if t - field < BASE64_MIN_RUN && self.fields.at_field_start() {
                // Too short to hold a run: nothing to read.
                field = t + 1;
                continue;
            }
            fed = self.read_field(text, fed, field, t, out);
            self.end_field(out);
            field = t + 1;
        }
        fed = self.read_field(text, fed, field, text.len(), out);
        self.next.feed(&text[fed..], out);
    }

    /// Reads `text[field..end]`, the current field's next bytes, with the raw base64
    /// reader; `text[fed..]` has not gone to `next` yet. Where the reader hands on a piece,
    /// the text up to there goes to `next` and the piece is put pending; so does the field's
    /// text when its candidate is still being decoded at `end`. Returns the new `fed`.
    fn read_field(
        &mut self,
        text: &[u8],
        mut fed: usize,
        field: usize,
        end: usize,
        out: &mut Out<'_, '_>,
    ) -> usize {
        let mut at = field;
        loop {
            at += self.fields.feed(&text[at..end], &mut self.pieces);
            if !self.pieces.is_empty() || at == end && self.fields.decoding() {
                if fed < field {
                    self.next.feed(&text[fed..field], out);
                    fed = field;
                }
                self.feed_field_text(&text[fed..at], out);
                fed = at;
                self.put_pieces(out);
            }
            if at == end {
                return fed;
            }
        }
    }

    /// Some of the current field's text, to `next`; whether reading it recorded the
    /// request's first problem, a corrupt stream, is noted (see [`FormNode::end_field`]).
    /// A problem of pending content put in meanwhile (this field's own decoded pieces,
    /// going in at one of its line ends) is not the text's, and is not forgiven: a
    /// compressed stream cut short between two pieces is not fully inspected, and
    /// forgiving it let a gzipped list in the second piece pass unread (found in review).
    fn feed_field_text(&mut self, text: &[u8], out: &mut Out<'_, '_>) {
        let clean = out.acct.problem.is_none();
        let outer = std::mem::replace(&mut out.acct.field_text, true);
        self.next.feed(text, out);
        out.acct.field_text = outer;
        if clean && out.acct.problem_forgivable() {
            self.field_corrupt = true;
        }
    }

    /// The current field ended. A corrupt stream the text's reader found in this field's
    /// own text (the request's first problem, recorded while that text was read) is
    /// forgiven when the field's raw base64 was read whole: its `+` read as a space cut
    /// the text's run, and the whole decoding records its own problems, the first of which
    /// then takes its place (found in review: a benign gzip sent that way was refused as
    /// corrupt; in a second review, a problem of the field before, or of the body's own
    /// decompressor, was forgiven too; in a third, the problem of the whole decoding,
    /// recorded after the text's, went with it).
    fn end_field(&mut self, out: &mut Out<'_, '_>) {
        if std::mem::take(&mut self.field_corrupt) && self.fields.reads_whole_field() {
            out.acct.forgive();
        }
        self.fields.end_field(&mut self.pieces);
        if !self.pieces.is_empty() {
            self.put_pieces(out);
        }
    }

    /// The field's decoded pieces wait for the next byte that separates values (as pending
    /// content); past [`PIECES_HELD_HARD`] of them they go in now, wherever the text is
    /// (found in review: a 40 MiB raw field in a gzipped body held 30 MiB). Not at once
    /// where they are handed on, even inside a field read whole as base64: its symbols and
    /// spaces are prose and cards too, and a piece put in there cut a card in two (tried
    /// in session 17, found in review).
    fn put_pieces(&mut self, out: &mut Out<'_, '_>) {
        for piece in self.pieces.drain(..) {
            out.put_pending(self.fields.depth(), piece);
        }
        if out.pending_bytes() > PIECES_HELD_HARD {
            out.flush_pending();
        }
    }

    /// Decodes `data` into `out` (at least `data.len() + SLACK` long), keeping a cut escape
    /// in `self.pending`; returns the bytes written.
    fn decode(&mut self, data: &[u8], out: &mut [u8]) -> usize {
        let (mut i, mut o) = (0, 0);
        // An escape cut by the end of the last chunk, completed from this one.
        while self.pending_len > 0 {
            let held = self.pending_len;
            let mut esc = [b'%', self.pending[1], 0];
            let mut k = held;
            while k < 3 && i < data.len() {
                esc[k] = data[i];
                k += 1;
                i += 1;
            }
            if k < 3 {
                self.pending[..k].copy_from_slice(&esc[..k]);
                self.pending_len = k;
                return o;
            }
            self.pending_len = 0;
            if let Some(b) = unhex(esc[1], esc[2]) {
                out[o] = b;
                o += 1;
                break;
            }
            // Not an escape: the `%` is literal and the two bytes after it are read again
            // (one may open an escape of its own). Those from this chunk are read from it.
            out[o] = b'%';
            o += 1;
            i = 0;
            if held == 2 {
                let x = esc[1];
                if x == b'%' {
                    self.pending_len = 1;
                    continue;
                }
                out[o] = self.special_or_plain(x);
                o += 1;
            }
        }
        // The path of a target, up to its `?`, a byte at a time (it is short).
        while !self.query && i < data.len() {
            let b = data[i];
            if b == b'%' {
                match self.escape(data, i) {
                    Some((v, used)) => {
                        out[o] = v;
                        i += used;
                    }
                    None => return o,
                }
            } else {
                out[o] = self.special_or_plain(b);
                i += 1;
            }
            o += 1;
        }
        if i < data.len() {
            o = self.decode_query(&data[i..], out, o);
        }
        o
    }

    /// The escape at `data[i]` (a `%`): its byte and length, or a literal `%` (length 1);
    /// `None` (and the escape kept in `self.pending`) when the chunk ends inside it.
    fn escape(&mut self, data: &[u8], i: usize) -> Option<(u8, usize)> {
        if i + 2 >= data.len() {
            let rest = &data[i..];
            self.pending[..rest.len()].copy_from_slice(rest);
            self.pending_len = rest.len();
            return None;
        }
        Some(match unhex(data[i + 1], data[i + 2]) {
            Some(v) => (v, 3),
            None => (b'%', 1),
        })
    }

    /// Decodes query text (a form body) into `out[o..]`; returns the end of what it wrote.
    ///
    /// 64 bytes at a time (`crate::window`): a window's `%` bytes are found at once and its
    /// `+` and `&` translated at once (into a copy on the stack: a decoded `%2B` is
    /// therefore never taken for a `+`), then the window is compacted into `out` — each
    /// escape written as its byte, the plain span before it copied with fixed-size moves —
    /// at one loop trip per escape (a `%` without two hex digits after it stays in the
    /// span). The chunk's last bytes go eight at a time, then one by one.
    fn decode_query(&mut self, data: &[u8], out: &mut [u8], o: usize) -> usize {
        let n = data.len();
        let (mut k, mut w) = (0, o);
        // The window translated, and room for a span's copy to read past it (its bytes
        // there are never kept).
        let mut translated = [0u8; 2 * WIDTH];
        while k + WIDTH <= n && w + 2 * WIDTH <= out.len() {
            let raw: &[u8; WIDTH] = data[k..k + WIDTH].try_into().expect("a window");
            // The output's room as an array: the offsets below are kept under 64 by a
            // mask (a no-op on them), so no copy needs a bounds check.
            let d: &mut [u8; 2 * WIDTH] = (&mut out[w..w + 2 * WIDTH]).try_into().expect("room");
            let window = Window::load(raw, 0);
            let percents = window.eq(b'%');
            let plain = window.replace(b'+', b' ').replace(b'&', b'\t');
            if percents == 0 {
                plain.store((&mut d[..WIDTH]).try_into().expect("a window"));
                k += WIDTH;
                w += WIDTH;
                continue;
            }
            plain.store((&mut translated[..WIDTH]).try_into().expect("a window"));
            let s = &translated;
            // A `%` at 62 or 63 may open an escape that the window cuts: the window ends
            // before it and the next one starts there. An escape before it ends before it
            // too (a hex digit is no `%`).
            let cut = percents >> (WIDTH - 2);
            let end = if cut == 0 {
                WIDTH
            } else {
                WIDTH - 2 + cut.trailing_zeros() as usize
            };
            // Those at 62 and 63 are past `end`.
            let mut percents = percents & (u64::MAX >> 2);
            // The window's bytes before `from` are decoded into `d[..t]`.
            let (mut from, mut t) = (0, 0);
            while percents != 0 {
                let p = percents.trailing_zeros() as usize & (WIDTH - 1);
                percents &= percents - 1;
                // Hex digits are not translated.
                let (hi, lo) = (HEX[usize::from(s[p + 1])], HEX[usize::from(s[p + 2])]);
                if (hi | lo) > 0xF {
                    // Not an escape: the `%` stays in the span.
                    continue;
                }
                copy_window(s, from & (WIDTH - 1), d, t & (WIDTH - 1));
                t += p - from;
                d[t & (WIDTH - 1)] = hi << 4 | lo;
                t += 1;
                from = p + 3;
            }
            copy_window(s, from.min(WIDTH), d, t & (WIDTH - 1));
            t += end - from;
            k += end;
            w += t;
        }
        if k >= n {
            return w;
        }
        // The rest, translated first (the words below are copied as they are).
        let mut src = std::mem::take(&mut self.translated);
        if src.len() < n {
            src.resize(n, 0);
        }
        for (d, &c) in src[k..n].iter_mut().zip(&data[k..n]) {
            *d = block::form_byte(c);
        }
        while k < n {
            while k + 8 <= n {
                let x = block::word(&src, k);
                out[w..w + 8].copy_from_slice(&x.to_le_bytes());
                let m = block::first_eq(x, b'%');
                if m != 0 {
                    let p = m.trailing_zeros() as usize / 8;
                    k += p;
                    w += p;
                    break;
                }
                k += 8;
                w += 8;
            }
            if k >= n {
                break;
            }
            let b = src[k];
            if b == b'%' {
                match self.escape(data, k) {
                    Some((v, used)) => {
                        out[w] = v;
                        k += used;
                    }
                    None => break,
                }
            } else {
                out[w] = b;
                k += 1;
            }
            w += 1;
        }
        self.translated = src;
        w
    }

    /// One byte outside an escape, as it reads.
    fn special_or_plain(&mut self, b: u8) -> u8 {
        if self.query {
            return block::form_byte(b);
        }
        if b == b'?' {
            self.query = true;
        }
        b
    }

    pub(crate) fn finish(&mut self, out: &mut Out<'_, '_>) {
        let (tail, n) = self.tail();
        self.feed_fields(&tail[..n], out);
        self.end_field(out);
        self.next.finish(out);
    }

    /// At the end: a cut escape as it was written (`%`, then its byte as it reads).
    fn tail(&mut self) -> ([u8; 2], usize) {
        let mut tail = [0u8; 2];
        let held = std::mem::take(&mut self.pending_len);
        for (k, slot) in tail.iter_mut().enumerate().take(held) {
            *slot = if k == 0 {
                b'%'
            } else {
                self.special_or_plain(self.pending[k])
            };
        }
        (tail, held)
    }
}

const fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unhex(hi: u8, lo: u8) -> Option<u8> {
    Some(hex(hi)? << 4 | hex(lo)?)
}

/// The value of each hex digit; 0xFF for the other bytes.
static HEX: [u8; 256] = {
    let mut t = [0xFF; 256];
    let mut b = 0;
    while b < 256 {
        if let Some(v) = hex(b as u8) {
            t[b] = v;
        }
        b += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::super::{Account, Limits};
    use super::*;

    /// Decodes `pieces` one after the other, as chunks of one body (`query`) or target.
    fn decode(query: bool, pieces: &[&[u8]]) -> Vec<u8> {
        let mut acct = Account::new(Limits::default());
        let next = Node::plain_text(0, &mut acct);
        let mut node = if query {
            FormNode::body(next, 1, &acct)
        } else {
            FormNode::target(next, 1, &acct)
        };
        let mut got = Vec::new();
        for piece in pieces {
            let mut out = vec![0u8; piece.len() + SLACK];
            let n = node.decode(piece, &mut out);
            got.extend_from_slice(&out[..n]);
        }
        let (tail, n) = node.tail();
        got.extend_from_slice(&tail[..n]);
        got
    }

    /// The decoding a byte at a time, as the definition to compare with.
    fn reference(query: bool, data: &[u8]) -> Vec<u8> {
        let mut query = query;
        let mut out = Vec::new();
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            if b == b'%' {
                if let Some(v) = data.get(i + 1..i + 3).and_then(|h| unhex(h[0], h[1])) {
                    out.push(v);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            } else if query {
                out.push(match b {
                    b'+' => b' ',
                    b'&' => b'\t',
                    b => b,
                });
            } else {
                query = b == b'?';
                out.push(b);
            }
            i += 1;
        }
        out
    }

    #[test]
    fn hex_digits_and_nothing_else() {
        for hi in 0..=255u8 {
            for lo in 0..=255u8 {
                let want = std::str::from_utf8(&[hi, lo])
                    .ok()
                    .filter(|t| t.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|t| u8::from_str_radix(t, 16).ok());
                assert_eq!(unhex(hi, lo), want, "{hi} {lo}");
                let table = ((HEX[usize::from(hi)] | HEX[usize::from(lo)]) <= 0xF)
                    .then(|| HEX[usize::from(hi)] << 4 | HEX[usize::from(lo)]);
                assert_eq!(table, want, "{hi} {lo}");
            }
        }
    }

    #[test]
    fn decodes_escapes_plus_and_fields() {
        let cases: &[(bool, &str, &str)] = &[
            (true, "a=1&b=2", "a=1\tb=2"),
            (true, "to=alice%40acme-corp.io", "to=alice@acme-corp.io"),
            (true, "x=a+b%2Bc", "x=a b+c"),
            (true, "%41%4a%4A", "AJJ"),
            (true, "100%", "100%"),
            (true, "100%4", "100%4"),
            (true, "%zz%4g%", "%zz%4g%"),
            (true, "%%41", "%A"),
            (true, "%%%", "%%%"),
            (true, "%2", "%2"),
            (true, "%2+", "%2 "),
            (true, "%+41", "% 41"),
            (true, "%26%2B", "&+"),
            (false, "/a+b&c/%41?q=a+b&r=%40", "/a+b&c/A?q=a b\tr=@"),
            (false, "/p%3Fq=a+b", "/p?q=a+b"),
            (false, "/x?", "/x?"),
            (false, "/x%?a+b", "/x%?a b"),
            (false, "/x%4?a+b", "/x%4?a b"),
        ];
        for &(query, input, want) in cases {
            let got = decode(query, &[input.as_bytes()]);
            assert_eq!(String::from_utf8_lossy(&got), want, "{input}");
            assert_eq!(got, reference(query, input.as_bytes()), "{input}");
        }
    }

    /// Escapes at every offset of a block, at the ends of chunks, invalid, doubled.
    #[test]
    fn any_split_decodes_as_the_whole() {
        let long = "name=notes.txt&content=Dear+customer%2C%0Athe+order+%23123+costs+%2412%25+%E2%82%AC+%%+%4+%zz+%%41%+&k=v%";
        let texts = [
            long.to_string(),
            format!("{}%41{}", "a".repeat(31), "b+".repeat(20)),
            format!("{}%4", "x".repeat(62)),
            format!("/{}%2F?{}", "p".repeat(40), long),
            "%".repeat(70),
            "%4".repeat(40),
            // The 64-byte windows: escapes at every offset near a window's end and across
            // it, back to back, invalid, and `%` as the last bytes of a 64-byte body.
            format!("{}%41%4", "y".repeat(60)),
            format!("{}%%41%zz%2B+", "y".repeat(61)),
            format!("{}%E2%82%AC{}%40", "a+b&".repeat(16), "c".repeat(62)),
            format!("{}%", "z".repeat(63)),
            format!("{}%4", "z".repeat(62)),
            "%41".repeat(50),
            "a%4Xb%".repeat(24),
        ];
        for text in &texts {
            let data = text.as_bytes();
            for query in [true, false] {
                let want = reference(query, data);
                assert_eq!(decode(query, &[data]), want, "{text}");
                for a in 0..=data.len() {
                    let (x, rest) = data.split_at(a);
                    assert_eq!(decode(query, &[x, rest]), want, "{text} at {a}");
                    for b in [1, 2, 3] {
                        let b = (a + b).min(data.len());
                        let (y, z) = data[a..].split_at(b - a);
                        assert_eq!(decode(query, &[x, y, z]), want, "{text} at {a} {b}");
                    }
                }
            }
        }
    }

    /// `filler` repeated, with `probe` written over it from `at`, cut to `len` bytes.
    fn placed(filler: &str, at: usize, probe: &str, len: usize) -> String {
        let mut text = filler.repeat(len.div_ceil(filler.len()))[..at].to_string();
        text.push_str(probe);
        while text.len() < len {
            text.push_str(filler);
        }
        text.truncate(len);
        text
    }

    /// The 64-byte windows' edges, one case a line: escapes ending on a window's end, cut
    /// by it, invalid next to it, `+` on either side of it, bodies of 63, 64 and 65 bytes.
    #[test]
    fn window_edges() {
        let a = |n: usize| "a".repeat(n);
        let cases: Vec<(bool, String, String)> = vec![
            (true, a(63), a(63)),
            (true, a(64), a(64)),
            (true, a(65), a(65)),
            (true, format!("{}%41b", a(60)), format!("{}Ab", a(60))),
            (true, format!("{}%41b", a(61)), format!("{}Ab", a(61))),
            (true, format!("{}%41b", a(62)), format!("{}Ab", a(62))),
            (true, format!("{}%41b", a(63)), format!("{}Ab", a(63))),
            (true, format!("{}%41b", a(64)), format!("{}Ab", a(64))),
            (true, format!("{}%41", a(61)), format!("{}A", a(61))),
            (true, format!("{}%4", a(62)), format!("{}%4", a(62))),
            (true, format!("{}%", a(63)), format!("{}%", a(63))),
            (true, format!("{}%41", a(62)), format!("{}A", a(62))),
            (true, format!("{}%", a(64)), format!("{}%", a(64))),
            (true, format!("{}%zz", a(60)), format!("{}%zz", a(60))),
            (true, format!("{}%zzb", a(61)), format!("{}%zzb", a(61))),
            (true, format!("{}%4zb", a(62)), format!("{}%4zb", a(62))),
            (true, format!("{}%z%41", a(61)), format!("{}%zA", a(61))),
            (true, format!("{}%%41", a(62)), format!("{}%A", a(62))),
            (true, format!("{}%%%41", a(61)), format!("{}%%A", a(61))),
            (true, format!("{}%4%41", a(61)), format!("{}%4A", a(61))),
            (true, format!("{}+b", a(63)), format!("{} b", a(63))),
            (true, format!("{}+b", a(64)), format!("{} b", a(64))),
            (true, format!("{}%2B+", a(61)), format!("{}+ ", a(61))),
            (true, format!("{}%2+b", a(62)), format!("{}%2 b", a(62))),
            (true, format!("{}&%26", a(62)), format!("{}\t&", a(62))),
            (true, "+".repeat(65), " ".repeat(65)),
            (true, "%2B".repeat(22), "+".repeat(22)),
            (true, "%41".repeat(43), "A".repeat(43)),
            (true, "%".repeat(65), "%".repeat(65)),
            (true, "%4".repeat(33), "%4".repeat(33)),
            (true, format!("{}%E2%82%AC", a(58)), format!("{}€", a(58))),
            (
                false,
                format!("/{}?%41+b", a(61)),
                format!("/{}?A b", a(61)),
            ),
            (
                false,
                format!("/{}+?{}+%41", a(30), a(30)),
                format!("/{}+?{} A", a(30), a(30)),
            ),
        ];
        for (query, input, want) in &cases {
            let got = decode(*query, &[input.as_bytes()]);
            assert_eq!(String::from_utf8_lossy(&got), *want, "{input}");
        }
    }

    /// Each probe at every offset across the ends of the first two windows, in bodies of
    /// 63 to 200 bytes (a probe cut by the body's end too), decodes as the reference does:
    /// whole, and split in two and in three at every byte around the probe.
    #[test]
    fn escapes_near_window_and_chunk_ends() {
        let probes = [
            "%41",
            "%4",
            "%",
            "%zz",
            "%4z",
            "%%41",
            "%41%42",
            "%2B+",
            "+",
            "&%26",
            "%E2%82%AC",
        ];
        for filler in ["a", "+", "b%41", "%zz"] {
            for probe in probes {
                for len in [63, 64, 65, 127, 128, 129, 200] {
                    for at in (56..72).chain(118..136).filter(|&at| at < len) {
                        let text = placed(filler, at, probe, len);
                        let data = text.as_bytes();
                        for query in [true, false] {
                            let want = reference(query, data);
                            assert_eq!(decode(query, &[data]), want, "{text}");
                            let near = at.saturating_sub(3)..(at + probe.len() + 3).min(len);
                            for cut in near {
                                let (x, rest) = data.split_at(cut);
                                assert_eq!(decode(query, &[x, rest]), want, "{text} at {cut}");
                                for more in [1, 2] {
                                    let (y, z) = rest.split_at(more.min(rest.len()));
                                    let got = decode(query, &[x, y, z]);
                                    assert_eq!(got, want, "{text} at {cut} +{more}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
