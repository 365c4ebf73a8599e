//! JSON string escapes in text that a layer has already decoded once: a JSON document
//! carried in a form field (`payload=<json>`, as Slack's webhooks take it), or as a string
//! inside another JSON document (an SNS or SQS message, GraphQL `variables` sent as a
//! string). The outer layer's decoder leaves the inner document's escapes as written, so
//! `customer0\u0040acme-corp.io` would not read as an address; the server's second parse
//! makes it one.
//!
//! So the text after a form or a JSON layer goes through here: `\uXXXX` (a surrogate pair
//! as one character, a lone surrogate as `U+FFFD`), `\"`, `\\`, `\/`, `\n`, `\t`, `\r`,
//! `\b`, `\f` become what they stand for, left to right (`\\u0040` is a backslash and
//! `u0040`); any other backslash stays as it is, and so does an escape of an ASCII letter,
//! digit or `_` in this view: a server that does not parse the inner document reads the
//! escape as written, so decoding one after a value (`a@b.io\u0030`) would hide the value
//! from the proxy (found in review). A server that does parse it reads the letter, so an
//! address with one letter of its domain escaped (`customer0@\u0061cme-corp.io`) is one
//! to it: from the first such escape on, the layer is read both ways ([`TwoViews`]), the
//! second view with escaped letters, digits and `_` decoded too, starting within the last
//! [`TAIL`] bytes before that escape, after the last separator there (the value the escape
//! is in began there; a place the content decides, not the chunks). A value right after
//! an escape as written counts in the first view too (`\u0063ustomer0@…` as
//! `u0063ustomer0@…`): that view must read past escapes, or a list glued by escaped digits
//! (`x0@a.io\u0030x1@a.io…`, one value decoded) would pass. So do `%uXXXX` escapes, which the
//! percent-decoding of a form leaves as written: IIS and classic ASP.NET
//! (`HttpUtility.UrlDecode`, `Request.Form`) read `%u0040` as `@`, as JavaScript's
//! `unescape` does. Text without a backslash or a `%` passes through untouched, without a
//! copy. An escape cut by a chunk's end waits for the next chunk, so the text is the same
//! however the body is cut.

use super::node::Node;
use super::sniff::separates_values;
use super::views::{TwoViews, in_values};
use super::{Account, Out};

/// The longest escape: a surrogate pair, `\uD83D\uDE00`.
const LONGEST: usize = 12;

/// The text before the first escaped letter or digit the second view starts with: more
/// than the longest value and the context around it the shipped rules read.
const TAIL: usize = 4 << 10;

/// The second view's text goes to [`TwoViews`] in pieces of at most this, each a place
/// where it may go in when it ends a line or a value.
const PIECE: usize = 4 << 10;

/// Unescapes its input for `next`.
pub(crate) struct UnescapeNode {
    /// Whether `%uXXXX` is undone too (after a form; JSON has no such escape).
    percent: bool,
    depth: u32,
    /// The start of an escape cut by the end of the last input.
    held: Vec<u8>,
    buf: Vec<u8>,
    next: Next,
}

/// Where the unescaped text goes.
enum Next {
    /// One view while no escaped letter, digit or `_` has come, and the last [`TAIL`]
    /// bytes of it (the node is `None` only while it moves into [`Next::Two`]).
    One(Option<Node>, Vec<u8>),
    /// Escaped letters, digits and `_` as written (raw), and decoded too (text).
    Two(Box<TwoViews>),
}

impl UnescapeNode {
    /// `percent`: `%uXXXX` escapes are undone too. The text is scanned at `depth`.
    pub(crate) fn new(percent: bool, depth: u32, next: Node) -> UnescapeNode {
        UnescapeNode {
            percent,
            depth,
            held: Vec::new(),
            buf: Vec::new(),
            next: Next::One(Some(next), Vec::new()),
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        if let Next::One(Some(next), tail) = &mut self.next {
            // Most text holds no escape (a `%` in prose, a backslash in a path): it passes
            // without a copy.
            if self.held.is_empty() && first_escape(data, self.percent).is_none() {
                next.feed(data, out);
                keep_tail(tail, data);
                return;
            }
        }
        let joined;
        let input = if self.held.is_empty() {
            data
        } else {
            let mut j = std::mem::take(&mut self.held);
            j.extend_from_slice(data);
            joined = j;
            &joined[..]
        };
        let rest = self.unescape_into_next(input, false, out);
        self.held.extend_from_slice(rest);
    }

    pub(crate) fn finish(&mut self, out: &mut Out<'_, '_>) {
        let held = std::mem::take(&mut self.held);
        self.unescape_into_next(&held, true, out);
        match &mut self.next {
            Next::One(next, _) => next.iter_mut().for_each(|n| n.finish(out)),
            Next::Two(views) => views.finish(out),
        }
    }

    /// Unescapes `input` into the view(s); returns the escape cut by its end (see
    /// [`unescape`]).
    fn unescape_into_next<'a>(
        &mut self,
        input: &'a [u8],
        end: bool,
        out: &mut Out<'_, '_>,
    ) -> &'a [u8] {
        let mut input = input;
        if let Next::One(next, tail) = &mut self.next {
            let raw = next.as_mut().expect("a node until it moves");
            let first = first_kept_escape(input, self.percent);
            self.buf.clear();
            let rest = unescape(
                input,
                first.unwrap_or(input.len()),
                &mut self.buf,
                self.percent,
                end,
            );
            raw.feed(&self.buf, out);
            keep_tail(tail, &self.buf);
            let Some(first) = first else {
                return rest;
            };
            // The first escaped letter or digit: two views from here on, the text one
            // starting with the tail before it.
            let raw = next.take().expect("a node until it moves");
            let tail = std::mem::take(tail);
            self.next = Next::Two(Box::new(two_views(raw, tail, self.depth, out.acct)));
            input = &input[first..];
        }
        let Next::Two(views) = &mut self.next else {
            unreachable!("one view returned above")
        };
        self.buf.clear();
        let (rest, placed) = unescape_both(input, &mut self.buf, views, self.percent, end, out);
        views.raw_only(&self.buf[placed..], out);
        rest
    }
}

/// The views from the first escaped letter or digit on: `raw` as before, and text that
/// starts with the `tail` of what `raw` was fed.
fn two_views(raw: Node, mut tail: Vec<u8>, depth: u32, acct: &mut Account) -> TwoViews {
    let text = Node::plain_text(depth, acct);
    // Up to 8 body bytes a byte of this text (`%5Cu002f` in a form, `\u002f` in a JSON
    // string): the text goes in within an eighth of the usual raw bytes.
    let mut views = TwoViews::scaled(raw, text, acct, 8);
    // From a value's edge (found in review: a tail starting inside an address counted its
    // stub `ustomer8@acme-corp.io` as a value of its own): after the last byte before the
    // escape that no value holds, a separator first (a card holds spaces). The tail is the
    // last [`TAIL`] bytes before the escape, so the place depends on the content alone,
    // not on how it came in chunks.
    let edge = tail
        .iter()
        .rposition(|&b| separates_values(b))
        .or_else(|| tail.iter().rposition(|&b| !in_values(b)))
        .map_or(0, |p| p + 1);
    tail.drain(..edge);
    views.buf = tail;
    views
}

/// Keeps the last [`TAIL`] bytes of the text in `tail` once `fed` is fed too.
fn keep_tail(tail: &mut Vec<u8>, fed: &[u8]) {
    if fed.len() >= TAIL {
        tail.clear();
        tail.extend_from_slice(&fed[fed.len() - TAIL..]);
        return;
    }
    let over = (tail.len() + fed.len()).saturating_sub(TAIL);
    tail.drain(..over);
    tail.extend_from_slice(fed);
}

/// Where the first escape of an ASCII letter, digit or `_` in `input` starts.
fn first_kept_escape(input: &[u8], percent: bool) -> Option<usize> {
    let mut i = 0;
    while let Some(at) = next_intro(input, i, percent) {
        match escape(&input[at..]) {
            Escape::Kept(..) => return Some(at),
            Escape::Done(len, _) => i = at + len,
            Escape::Cut | Escape::None => i = at + 1,
        }
    }
    None
}

/// [`unescape`] for two views: `raw` gets escaped letters, digits and `_` as written,
/// `views.buf` (the text) gets them decoded; each piece of at most [`PIECE`] bytes, or
/// up to a line end, or an escape, is a place [`TwoViews::step`] may put the text in
/// at. Returns the escape cut by the end and how much of `raw` went in.
fn unescape_both<'a>(
    input: &'a [u8],
    raw: &mut Vec<u8>,
    views: &mut TwoViews,
    percent: bool,
    end: bool,
    out: &mut Out<'_, '_>,
) -> (&'a [u8], usize) {
    let mut placed = 0;
    let mut i = 0;
    let mut piece = |raw: &mut Vec<u8>, views: &mut TwoViews, n: usize| {
        if views.step(n, true) {
            views.put_in(&raw[placed..], out);
            placed = raw.len();
        }
    };
    // The next backslash (or `%`) at or after `i`, looked for again only once passed: a
    // search to the input's end for every span (cut at each line end) made text of many
    // short lines after an escaped letter quadratic (found in review).
    let mut intro = next_intro(input, 0, percent);
    while i < input.len() {
        if intro.is_some_and(|at| at < i) {
            intro = next_intro(input, i, percent);
        }
        let stop = intro.unwrap_or(input.len()).min(i + PIECE);
        if stop > i {
            let stop = memchr::memchr(b'\n', &input[i..stop]).map_or(stop, |nl| i + nl + 1);
            let stop = views.place_in(&input[i..stop]).map_or(stop, |n| i + n);
            raw.extend_from_slice(&input[i..stop]);
            views.buf.extend_from_slice(&input[i..stop]);
            piece(raw, views, stop - i);
            i = stop;
            continue;
        }
        let mut utf8 = [0u8; 4];
        match escape(&input[i..]) {
            Escape::Done(len, c) => {
                let c = c.encode_utf8(&mut utf8).as_bytes();
                raw.extend_from_slice(c);
                views.buf.extend_from_slice(c);
                piece(raw, views, c.len());
                i += len;
            }
            Escape::Kept(len, c) => {
                raw.extend_from_slice(&input[i..i + len]);
                views.buf.push(c);
                piece(raw, views, len);
                i += len;
            }
            Escape::Cut if !end => return (&input[i..], placed),
            Escape::Cut | Escape::None => {
                raw.push(input[i]);
                views.buf.push(input[i]);
                piece(raw, views, 1);
                i += 1;
            }
        }
    }
    (&[], placed)
}

/// The next backslash (or `%`, with `percent`) at or after `from`.
fn next_intro(input: &[u8], from: usize, percent: bool) -> Option<usize> {
    let rest = &input[from..];
    let off = if percent {
        memchr::memchr2(b'\\', b'%', rest)
    } else {
        memchr::memchr(b'\\', rest)
    };
    off.map(|o| from + o)
}

/// Where the first escape (or escape cut by the end) of `data` starts.
fn first_escape(data: &[u8], percent: bool) -> Option<usize> {
    let mut i = 0;
    while let Some(at) = next_intro(data, i, percent) {
        if !matches!(escape(&data[at..]), Escape::None) {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// Appends `input[..limit]` unescaped to `out`, escaped letters, digits and `_` as
/// written (an escape starting before `limit` is read whole, `limit` is where one
/// starts); returns the escape cut by the input's end (empty at the input's `end`, where
/// a cut escape is written as it is).
fn unescape<'a>(
    input: &'a [u8],
    limit: usize,
    out: &mut Vec<u8>,
    percent: bool,
    end: bool,
) -> &'a [u8] {
    let mut i = 0;
    while let Some(at) = next_intro(input, i, percent).filter(|&at| at < limit) {
        out.extend_from_slice(&input[i..at]);
        match escape(&input[at..]) {
            Escape::Done(len, c) => {
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                i = at + len;
            }
            Escape::Cut if !end => return &input[at..],
            Escape::Cut | Escape::None | Escape::Kept(..) => {
                out.push(input[at]);
                i = at + 1;
            }
        }
    }
    out.extend_from_slice(&input[i..limit]);
    &[]
}

enum Escape {
    /// An escape of this many bytes, and what it stands for.
    Done(usize, char),
    /// An escape of this many bytes of an ASCII letter, digit or `_`: kept as written in
    /// the first view, decoded in the second.
    Kept(usize, u8),
    /// The input ends before it can tell.
    Cut,
    /// Not an escape: the backslash stays.
    None,
}

/// What the backslash or `%` at `s[0]` opens.
fn escape(s: &[u8]) -> Escape {
    let Some(&c) = s.get(1) else {
        return Escape::Cut;
    };
    let intro = s[0];
    let u = |c: u8| c == b'u' || (intro == b'%' && c == b'U');
    match c {
        b'"' | b'\\' | b'/' | b'n' | b't' | b'r' | b'b' | b'f' if intro == b'\\' => {
            let stands_for = match c {
                b'n' => '\n',
                b't' => '\t',
                b'r' => '\r',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                other => char::from(other),
            };
            Escape::Done(2, stands_for)
        }
        c if u(c) => match unit(&s[1..]) {
            Err(()) => Escape::None,
            Ok(None) => Escape::Cut,
            Ok(Some(high)) if (0xD800..0xDC00).contains(&high) => {
                // A high surrogate: a pair if a low one follows.
                let lone = Escape::Done(6, char::REPLACEMENT_CHARACTER);
                match s.get(6..8) {
                    None if s.len() < LONGEST => {
                        if s.get(6).is_some_and(|&b| b != intro) {
                            lone
                        } else {
                            Escape::Cut
                        }
                    }
                    Some(&[i, c]) if i == intro && u(c) => match unit(&s[7..]) {
                        Ok(None) => Escape::Cut,
                        Ok(Some(low)) => match char::decode_utf16([high, low]).next() {
                            Some(Ok(pair)) => Escape::Done(12, pair),
                            _ => lone,
                        },
                        Err(()) => lone,
                    },
                    _ => lone,
                }
            }
            // A letter, digit or `_` stays as written: decoded, it would glue onto the value
            // before it (`a@b.io%u0030` is an address to a server that does not decode
            // this layer, and `…io0` none to one that does: found in review); what hides a
            // value is its `@`, `.` or `-` written as an escape.
            Ok(Some(u)) if u < 0x80 && (u as u8 == b'_' || (u as u8).is_ascii_alphanumeric()) => {
                Escape::Kept(6, u as u8)
            }
            Ok(Some(u)) => Escape::Done(
                6,
                char::from_u32(u32::from(u)).unwrap_or(char::REPLACEMENT_CHARACTER),
            ),
        },
        _ => Escape::None,
    }
}

/// The unit of `uXXXX` at `s[0]`: `Ok(None)` when `s` ends before its four digits,
/// `Err` when they are not hex.
fn unit(s: &[u8]) -> Result<Option<u16>, ()> {
    let mut u = 0u16;
    for k in 1..5 {
        let Some(&b) = s.get(k) else {
            return if s[1..].iter().all(u8::is_ascii_hexdigit) {
                Ok(None)
            } else {
                Err(())
            };
        };
        let d = (b as char).to_digit(16).ok_or(())?;
        u = u << 4 | d as u16;
    }
    Ok(Some(u))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text of `pieces` fed one after the other.
    fn text(pieces: &[&[u8]]) -> Vec<u8> {
        let mut held: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for piece in pieces {
            let mut input = std::mem::take(&mut held);
            input.extend_from_slice(piece);
            let rest = unescape(&input, input.len(), &mut out, true, false).to_vec();
            held = rest;
        }
        unescape(&held, held.len(), &mut out, true, true);
        out
    }

    #[test]
    fn escapes_become_what_they_stand_for() {
        let cases: &[(&str, &str)] = &[
            (r#"customer0\u0040acme-corp.io"#, "customer0@acme-corp.io"),
            (r#"{\"email\":\"a\u0040b.io\"}"#, r#"{"email":"a@b.io"}"#),
            (r"a\\u0040b", r"a\u0040b"),
            (r"\ud83d\ude00 \u00e9", "😀 é"),
            (r"lone \ud83d x \ude00 y", "lone \u{FFFD} x \u{FFFD} y"),
            (r"C:\users\x \q \u12 \uXYZW", r"C:\users\x \q \u12 \uXYZW"),
            (r"a\/b\tc\nd", "a/b\tc\nd"),
            ("trailing \\", "trailing \\"),
            (r"cut \u00", r"cut \u00"),
            (
                "a%u0040b.io %U0040 50% %u00 %uD83D%uDE00",
                "a@b.io @ 50% %u00 😀",
            ),
            ("%uD83D\\uDE00 %40 %", "\u{FFFD}\u{FFFD} %40 %"),
            (
                r"a@b.io\u0030 c@d.io%u005f \u0041",
                r"a@b.io\u0030 c@d.io%u005f \u0041",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                String::from_utf8_lossy(&text(&[input.as_bytes()])),
                *want,
                "{input}"
            );
        }
    }

    #[test]
    fn percent_escapes_only_when_asked() {
        let mut out = Vec::new();
        unescape(b"a%u0040b \\u0040", 15, &mut out, false, true);
        assert_eq!(out, b"a%u0040b @");
        assert_eq!(first_escape(b"50% of C:\\x", true), None);
        assert_eq!(first_escape(b"50% %u00", true), Some(4));
        assert_eq!(first_escape(b"50% %u0040", false), None);
    }

    #[test]
    fn every_cut_gives_the_same_text() {
        let data =
            r#"[{\"e\":\"x\u0040y.io\"},\ud83d\ude00,\\u0040,\ud83dz,\u00e9\"]%u0040%uD83D%uDE00%"#
                .as_bytes();
        let whole = text(&[data]);
        for i in 0..=data.len() {
            for j in i..=data.len() {
                assert_eq!(
                    text(&[&data[..i], &data[i..j], &data[j..]]),
                    whole,
                    "cut at {i} and {j}"
                );
            }
        }
    }
}
