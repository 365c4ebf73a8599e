//! JSON with its strings unescaped, as a stream.
//!
//! The document goes to the scanner as it is — keys, numbers, punctuation — except that
//! inside strings every escape is resolved: `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`,
//! `\t`, and `\uXXXX` as UTF-8, a surrogate pair as the one character it encodes (a lone
//! surrogate as U+FFFD). Nothing is validated: a malformed document is unescaped as far as
//! it reads like JSON (an unknown escape is kept as written), so a request cannot hide a
//! value by breaking the syntax. The unescaped text goes on to a text node, where base64
//! in string values is found.

use memchr::{memchr, memchr2};

use super::Out;
use super::block::{self, BLOCK};
use super::node::Node;
use crate::window::{self as mask, WIDTH, Window};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Outside,
    InString,
    Escape,
    /// Inside `\u`: digits read and their value.
    Unicode(u8, u32),
}

/// Unescapes JSON text into `out`, keeping state across calls.
#[derive(Debug, Clone)]
pub struct Unescaper {
    state: State,
    /// A high surrogate waiting for its low half.
    high: Option<u32>,
}

impl Default for Unescaper {
    fn default() -> Unescaper {
        Unescaper::new()
    }
}

impl Unescaper {
    /// At the start of a document.
    pub fn new() -> Unescaper {
        Unescaper {
            state: State::Outside,
            high: None,
        }
    }

    /// Unescapes the next piece of the document onto `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let base = out.len();
        out.resize(base + max_output(data.len()), 0);
        let n = self.push_into(data, &mut out[base..]);
        out.truncate(base + n);
    }

    /// When unescaping would leave `data` as it is (no escape under way, no backslash in
    /// it), moves the string state past it and returns true: the caller hands the bytes on
    /// without copying them. Otherwise changes nothing and returns false.
    ///
    /// Most JSON bodies (telemetry, API payloads) hold no escape at all: for them this is a
    /// backslash search and a count of quotes (whose parity is the string state).
    pub fn pass_through(&mut self, data: &[u8]) -> bool {
        if !matches!(self.state, State::Outside | State::InString)
            || self.high.is_some()
            || memchr(b'\\', data).is_some()
        {
            return false;
        }
        let windows = data.chunks_exact(WIDTH);
        let tail = windows.remainder();
        let quotes = windows
            .map(|w| Window::load(w, 0).eq(b'"').count_ones() as usize)
            .sum::<usize>()
            + tail.iter().filter(|&&b| b == b'"').count();
        if quotes % 2 == 1 {
            self.state = match self.state {
                State::Outside => State::InString,
                _ => State::Outside,
            };
        }
        true
    }

    /// Unescapes the next piece of the document into `out` (at least
    /// [`max_output`]`(data.len())` bytes long); returns how many bytes it wrote.
    ///
    /// Plain stretches are copied 64 bytes at a time with masks of their quotes and
    /// backslashes (`crate::window`): quotes only flip the string state (their parity), so only
    /// backslashes are looked at one by one. The last bytes of a piece go a block at a time
    /// ([`block`]), and the state machine takes what is cut by the piece's end.
    pub(crate) fn push_into(&mut self, data: &[u8], out: &mut [u8]) -> usize {
        let (mut i, mut o) = (0, 0);
        while i < data.len() {
            if matches!(self.state, State::Outside | State::InString) && self.high.is_none() {
                (i, o) = self.plain(data, i, out, o);
                if i == data.len() {
                    break;
                }
            }
            // One step of the state machine: what `plain` leaves (an escape cut by the end
            // of the piece, a surrogate waiting for its other half, a broken `\u`).
            match self.state {
                State::Outside => {
                    // Up to and including the next quote.
                    while i + BLOCK <= data.len() {
                        let p = block::copy_find2(&data[i..], &mut out[o..], b'"', b'"');
                        if p < BLOCK {
                            let p = p + 1;
                            i += p;
                            o += p;
                            self.state = State::InString;
                            break;
                        }
                        i += BLOCK;
                        o += BLOCK;
                    }
                    if self.state == State::InString {
                        continue;
                    }
                    let rest = &data[i..];
                    let take = memchr(b'"', rest).map_or(rest.len(), |p| p + 1);
                    out[o..o + take].copy_from_slice(&rest[..take]);
                    i += take;
                    o += take;
                    if take > 0 && rest[take - 1] == b'"' {
                        self.state = State::InString;
                    }
                }
                State::InString => {
                    if self.high.is_some() && data[i] != b'\\' {
                        o += self.lone_surrogate(&mut out[o..]);
                    }
                    // The plain bytes up to the next quote or backslash.
                    let mut special = None;
                    while i + BLOCK <= data.len() {
                        let p = block::copy_find2(&data[i..], &mut out[o..], b'"', b'\\');
                        if p < BLOCK {
                            i += p;
                            o += p;
                            special = Some(i);
                            break;
                        }
                        i += BLOCK;
                        o += BLOCK;
                    }
                    if special.is_none() {
                        let rest = &data[i..];
                        let p = memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
                        out[o..o + p].copy_from_slice(&rest[..p]);
                        i += p;
                        o += p;
                        if i == data.len() {
                            break;
                        }
                    }
                    if data[i] == b'"' {
                        out[o] = b'"';
                        o += 1;
                        self.state = State::Outside;
                    } else {
                        self.state = State::Escape;
                    }
                    i += 1;
                }
                State::Escape => {
                    let b = data[i];
                    i += 1;
                    if b == b'u' {
                        // The common case whole: four hex digits in this piece.
                        match data.get(i..i + 4).and_then(hex4) {
                            Some(unit) => {
                                i += 4;
                                self.state = State::InString;
                                o += self.code_unit(unit, &mut out[o..]);
                            }
                            None => self.state = State::Unicode(0, 0),
                        }
                        continue;
                    }
                    if self.high.is_some() {
                        o += self.lone_surrogate(&mut out[o..]);
                    }
                    let plain = match b {
                        b'"' | b'\\' | b'/' => b,
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        other => {
                            out[o] = b'\\';
                            o += 1;
                            other
                        }
                    };
                    out[o] = plain;
                    o += 1;
                    self.state = State::InString;
                }
                State::Unicode(n, v) => {
                    let b = data[i];
                    let Some(d) = (b as char).to_digit(16) else {
                        // Not an escape after all: keep what was written, read `b` again.
                        if self.high.is_some() {
                            o += self.lone_surrogate(&mut out[o..]);
                        }
                        o += cut_unicode(n, v, &mut out[o..]);
                        self.state = State::InString;
                        continue;
                    };
                    i += 1;
                    let v = v << 4 | d;
                    if n < 3 {
                        self.state = State::Unicode(n + 1, v);
                        continue;
                    }
                    self.state = State::InString;
                    o += self.code_unit(v, &mut out[o..]);
                }
            }
        }
        o
    }

    /// The common case in a tight loop: text outside and inside strings, and escapes whole
    /// in this piece. Returns where it stopped (in `data` and `out`), leaving the rest to
    /// the state machine: the end of the piece, a cut escape, a high surrogate read.
    fn plain(&mut self, data: &[u8], mut i: usize, out: &mut [u8], mut o: usize) -> (usize, usize) {
        let mut in_string = self.state == State::InString;
        'outer: while i < data.len() {
            // 64 bytes at a time while there is room: the window is copied whole, its
            // quotes only counted (their parity is the string state), and only its
            // backslashes looked at one by one. After an escape the rest of the window is
            // copied again at its new place in the output.
            while i + WIDTH <= data.len() && o + WIDTH <= out.len() {
                let window = Window::load(data, i);
                let quotes = window.eq(b'"');
                let slashes = window.eq(b'\\');
                let parity = mask::Parity::new(quotes);
                out[o..o + WIDTH].copy_from_slice(&data[i..i + WIDTH]);
                // Bytes of the window consumed.
                let mut rel = 0;
                loop {
                    let next = mask::from(slashes, rel);
                    if next == 0 {
                        in_string ^= parity.odd(rel, WIDTH);
                        i += WIDTH - rel;
                        o += WIDTH - rel;
                        break;
                    }
                    let b = next.trailing_zeros() as usize;
                    in_string ^= parity.odd(rel, b);
                    i += b - rel;
                    o += b - rel;
                    if !in_string {
                        // A backslash outside strings is a byte like any other.
                        i += 1;
                        o += 1;
                        rel = b + 1;
                    } else {
                        let used = match data.get(i + 1) {
                            Some(b'u') => match data.get(i + 2..i + 6).and_then(hex4) {
                                Some(unit) => {
                                    o += self.code_unit(unit, &mut out[o..]);
                                    6
                                }
                                None => break 'outer,
                            },
                            Some(&e) => {
                                o += simple_escape(e, &mut out[o..]);
                                2
                            }
                            None => break 'outer,
                        };
                        i += used;
                        rel = b + used;
                        if self.high.is_some() {
                            break 'outer;
                        }
                        if rel < WIDTH && i + WIDTH <= data.len() && o + WIDTH <= out.len() {
                            out[o..o + WIDTH].copy_from_slice(&data[i..i + WIDTH]);
                        } else {
                            break;
                        }
                    }
                    if rel >= WIDTH {
                        break;
                    }
                }
            }
            if i == data.len() {
                break;
            }
            // The plain bytes up to the next quote (or, in a string, backslash).
            let stop = if in_string { b'\\' } else { b'"' };
            let mut found = false;
            while i + BLOCK <= data.len() {
                let p = block::copy_find2(&data[i..], &mut out[o..], b'"', stop);
                i += p;
                o += p;
                if p < BLOCK {
                    found = true;
                    break;
                }
            }
            if !found {
                let rest = &data[i..];
                let p = memchr2(b'"', stop, rest).unwrap_or(rest.len());
                out[o..o + p].copy_from_slice(&rest[..p]);
                i += p;
                o += p;
                if i == data.len() {
                    break;
                }
            }
            if data[i] == b'"' {
                out[o] = b'"';
                o += 1;
                i += 1;
                in_string = !in_string;
                continue;
            }
            // A backslash in a string.
            match data.get(i + 1) {
                Some(b'u') => match data.get(i + 2..i + 6).and_then(hex4) {
                    Some(unit) => {
                        i += 6;
                        o += self.code_unit(unit, &mut out[o..]);
                        if self.high.is_some() {
                            break;
                        }
                    }
                    None => break,
                },
                Some(&e) => {
                    o += simple_escape(e, &mut out[o..]);
                    i += 2;
                }
                None => break,
            }
        }
        self.state = if in_string {
            State::InString
        } else {
            State::Outside
        };
        (i, o)
    }

    /// One `\uXXXX` code unit; returns the bytes written.
    fn code_unit(&mut self, unit: u32, out: &mut [u8]) -> usize {
        match (self.high.take(), unit) {
            (Some(high), 0xDC00..=0xDFFF) => {
                let c = 0x10000 + ((high - 0xD800) << 10) + (unit - 0xDC00);
                put_char(
                    char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER),
                    out,
                )
            }
            (high, 0xD800..=0xDBFF) => {
                self.high = Some(unit);
                if high.is_some() {
                    put_char(char::REPLACEMENT_CHARACTER, out)
                } else {
                    0
                }
            }
            (high, _) => {
                let mut n = 0;
                if high.is_some() {
                    n = put_char(char::REPLACEMENT_CHARACTER, out);
                }
                n + put_char(
                    char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER),
                    &mut out[n..],
                )
            }
        }
    }

    fn lone_surrogate(&mut self, out: &mut [u8]) -> usize {
        self.high = None;
        put_char(char::REPLACEMENT_CHARACTER, out)
    }

    /// Ends the document: a dangling high surrogate becomes U+FFFD, a cut escape is kept.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let base = out.len();
        out.resize(base + max_output(0), 0);
        let n = self.finish_into(&mut out[base..]);
        out.truncate(base + n);
    }

    /// [`Unescaper::finish`] into `out` (at least [`max_output`]`(0)` bytes long); returns
    /// how many bytes it wrote.
    pub(crate) fn finish_into(&mut self, out: &mut [u8]) -> usize {
        let mut o = 0;
        if self.high.is_some() {
            o += self.lone_surrogate(out);
        }
        match self.state {
            State::Escape => {
                out[o] = b'\\';
                o += 1;
            }
            State::Unicode(n, v) => o += cut_unicode(n, v, &mut out[o..]),
            State::Outside | State::InString => {}
        }
        self.state = State::Outside;
        o
    }
}

/// Most bytes [`Unescaper::push_into`] writes for `len` bytes of input: an escape never
/// writes more than it reads, but one cut by the end of the previous piece may add what
/// it held (a pending surrogate's U+FFFD, a broken `\uXXX` kept as written).
pub(crate) const fn max_output(len: usize) -> usize {
    len + 16
}

/// What each one-character escape stands for (`\n` is a line break); 0: not an escape, kept
/// as written.
static SIMPLE_ESCAPES: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t[b'/' as usize] = b'/';
    t[b'b' as usize] = 0x08;
    t[b'f' as usize] = 0x0c;
    t[b'n' as usize] = b'\n';
    t[b'r' as usize] = b'\r';
    t[b't' as usize] = b'\t';
    t
};

/// A one-character escape (`\` then `e`) into `out`; returns the bytes written (one, or
/// two for an unknown escape kept as written).
#[inline(always)]
fn simple_escape(e: u8, out: &mut [u8]) -> usize {
    match SIMPLE_ESCAPES[usize::from(e)] {
        0 => {
            out[..2].copy_from_slice(&[b'\\', e]);
            2
        }
        v => {
            out[0] = v;
            1
        }
    }
}

/// `\u` and the `n` digits of `v` read so far, written back as they were (lowercased).
fn cut_unicode(n: u8, v: u32, out: &mut [u8]) -> usize {
    out[..2].copy_from_slice(b"\\u");
    let mut o = 2;
    for k in (0..n).rev() {
        let digit = (v >> (4 * u32::from(k))) & 0xf;
        out[o] = char::from_digit(digit, 16).unwrap_or('0') as u8;
        o += 1;
    }
    o
}

/// The value of four hex digits.
fn hex4(digits: &[u8]) -> Option<u32> {
    digits
        .iter()
        .try_fold(0u32, |v, &b| Some(v << 4 | (b as char).to_digit(16)?))
}

fn put_char(c: char, out: &mut [u8]) -> usize {
    c.encode_utf8(out).len()
}

/// Unescapes a whole JSON text.
pub fn unescape(data: &[u8]) -> Vec<u8> {
    let mut u = Unescaper::new();
    let mut out = Vec::new();
    u.push(data, &mut out);
    u.finish(&mut out);
    out
}

/// A JSON body feeding its text node.
pub(crate) struct JsonNode {
    unescaper: Unescaper,
    buf: Vec<u8>,
    next: Node,
}

impl JsonNode {
    pub(crate) fn new(next: Node) -> JsonNode {
        JsonNode {
            unescaper: Unescaper::new(),
            buf: Vec::new(),
            next,
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        if self.unescaper.pass_through(data) {
            self.next.feed(data, out);
            return;
        }
        // The buffer keeps its length between pieces: written over, never cleared, so a
        // piece costs no zeroing.
        let need = max_output(data.len());
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        let n = self.unescaper.push_into(data, &mut self.buf);
        self.next.feed(&self.buf[..n], out);
    }

    pub(crate) fn finish(&mut self, out: &mut Out<'_, '_>) {
        let need = max_output(0);
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        let n = self.unescaper.finish_into(&mut self.buf);
        self.next.feed(&self.buf[..n], out);
        self.next.finish(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_strings_and_leaves_the_rest() {
        let cases: &[(&str, &str)] = &[
            (r#"{"a":"b"}"#, r#"{"a":"b"}"#),
            (
                r#"{"e":"alice\u0040acme-corp.io"}"#,
                r#"{"e":"alice@acme-corp.io"}"#,
            ),
            (r#"["x\"y", "a\\b", "c\/d"]"#, r#"["x"y", "a\b", "c/d"]"#),
            (r#""l1\nl2\tt\r\b\f""#, "\"l1\nl2\tt\r\u{8}\u{c}\""),
            (r#""\u00e9\u20AC""#, "\"é€\""),
            (r#""\ud83d\ude00""#, "\"😀\""),
            (r#""\ud83d x""#, "\"\u{FFFD} x\""),
            (r#""\ude00""#, "\"\u{FFFD}\""),
            (r#""\ud83d\u0041""#, "\"\u{FFFD}A\""),
            (r#""\ud83d\n""#, "\"\u{FFFD}\n\""),
            (r#""\uzz""#, r#""\uzz""#),
            (r#""\u00zz""#, r#""\u00zz""#),
            (r#""\q""#, r#""\q""#),
            (
                r#"{"n": 4111111111111111, "k\u0040": true}"#,
                r#"{"n": 4111111111111111, "k@": true}"#,
            ),
            (r#"not json \u0040 outside"#, r#"not json \u0040 outside"#),
            (r#""cut \u00"#, r#""cut \u00"#),
            (r#""cut \"#, r#""cut \"#),
        ];
        for (input, want) in cases {
            let got = unescape(input.as_bytes());
            assert_eq!(String::from_utf8_lossy(&got), *want, "{input}");
        }
    }

    /// Unescapes `data` one byte per piece: no block or whole-escape fast path is taken.
    fn bytewise(data: &[u8]) -> Vec<u8> {
        let mut u = Unescaper::new();
        let mut out = Vec::new();
        for b in data.chunks(1) {
            u.push(b, &mut out);
        }
        u.finish(&mut out);
        out
    }

    /// Escapes and quotes at every offset of a block and at the ends of pieces.
    #[test]
    fn blocks_and_pieces_unescape_as_byte_by_byte() {
        let pad = "p".repeat(29);
        let mut texts = vec![
            format!(r#"{{"k":"{pad}\"{pad}\\{pad}\u0040{pad}\ud83d\ude00{pad}\ud83d{pad}\q"}}"#),
            format!(r#"{pad}{pad}"{pad}\u00e9{pad}"{pad}\n"{pad}\uD83D\u0041\u12"#),
            format!(r#""{}\u004"#, "x".repeat(60)),
            format!(r#""{}\"#, "x".repeat(63)),
            r#""\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"""#.to_string(),
        ];
        for at in 0..40 {
            texts.push(format!(r#""{}\u0040{}""#, "a".repeat(at), "b".repeat(40)));
            texts.push(format!(r#"{}"{}""#, "a".repeat(at), "b".repeat(40)));
        }
        // The 64-byte windows: an escape at every offset of one and across its end, escapes
        // back to back, escaped quotes and backslashes (which must not count as quotes or
        // open escapes), backslashes outside strings, pairs cut by a window's end.
        for at in 56..72 {
            let a = "a".repeat(at);
            let b = "b".repeat(90);
            for esc in [
                r"\u0040",
                r"\n",
                r#"\""#,
                r"\\",
                r"\q",
                r"\ud83d\ude00",
                r"\ud83d",
            ] {
                texts.push(format!(r#""{a}{esc}{b}""#));
                texts.push(format!(r#"{{"k": "{a}{esc}{esc}\"{esc}{b}", "x": 1}}"#));
            }
            texts.push(format!(r#"{a}\n "{b}\\" {b} "\" \\\"" {b}"#));
            texts.push(format!(r#""{a}\\\\\\"{b}"{b}"\"#));
        }
        texts.push(r#"\\\"\\""#.repeat(40));
        texts.push(r#"{"x":"a\"b","y":"\\","z":"\u00e9\""}"#.repeat(8));
        for text in &texts {
            let data = text.as_bytes();
            let want = bytewise(data);
            assert_eq!(unescape(data), want, "{text}");
            for a in 0..=data.len() {
                let mut u = Unescaper::new();
                let mut out = Vec::new();
                u.push(&data[..a], &mut out);
                u.push(&data[a..], &mut out);
                u.finish(&mut out);
                assert_eq!(out, want, "{text} split at {a}");
            }
        }
    }

    /// Pieces without a backslash are handed on as they are whenever no escape is under
    /// way: the result and the string state after them are what unescaping gives.
    #[test]
    fn pieces_passed_through_unescape_as_whole() {
        let pad = "p".repeat(70);
        let texts = [
            format!(r#"{{"a":"{pad}","b":["{pad}", 1, "x\u0040y"], "c": "\"{pad}\""}}"#),
            format!(r#"{pad}"{pad}"{pad}"\ud83d{pad}\ude00" "\ud83d" x"#),
            format!(r#""{pad}\"#),
            format!(r#"\ "{pad}" \"#),
        ];
        for text in &texts {
            let data = text.as_bytes();
            let want = unescape(data);
            let mut passed = 0;
            for a in 0..=data.len() {
                for b in a..=data.len().min(a + 90) {
                    let mut u = Unescaper::new();
                    let mut out = Vec::new();
                    for piece in [&data[..a], &data[a..b], &data[b..]] {
                        if u.pass_through(piece) {
                            out.extend_from_slice(piece);
                            passed += usize::from(!piece.is_empty());
                        } else {
                            u.push(piece, &mut out);
                        }
                    }
                    u.finish(&mut out);
                    assert_eq!(out, want, "{text} split at {a}, {b}");
                }
            }
            assert!(passed > 0, "{text}: no piece was passed through");
        }
    }

    #[test]
    fn any_split_unescapes_the_same() {
        let text = br#"{"list":["alice\u0040acme-corp.io","\ud83d\ude00 \"q\" \\"]}"#;
        let whole = unescape(text);
        for split in 0..text.len() {
            let mut u = Unescaper::new();
            let mut out = Vec::new();
            u.push(&text[..split], &mut out);
            u.push(&text[split..], &mut out);
            u.finish(&mut out);
            assert_eq!(out, whole, "split at {split}");
        }
    }
}
