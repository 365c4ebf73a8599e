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
use super::node::Node;

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
        out.reserve(data.len());
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Outside => match memchr(b'"', &data[i..]) {
                    None => {
                        out.extend_from_slice(&data[i..]);
                        return;
                    }
                    Some(off) => {
                        out.extend_from_slice(&data[i..=i + off]);
                        i += off + 1;
                        self.state = State::InString;
                    }
                },
                State::InString => {
                    if self.high.is_some() && data[i] != b'\\' {
                        self.lone_surrogate(out);
                    }
                    match memchr2(b'"', b'\\', &data[i..]) {
                        None => {
                            out.extend_from_slice(&data[i..]);
                            return;
                        }
                        Some(off) => {
                            out.extend_from_slice(&data[i..i + off]);
                            let b = data[i + off];
                            i += off + 1;
                            if b == b'"' {
                                out.push(b'"');
                                self.state = State::Outside;
                            } else {
                                self.state = State::Escape;
                            }
                        }
                    }
                }
                State::Escape => {
                    let b = data[i];
                    i += 1;
                    if b == b'u' {
                        self.state = State::Unicode(0, 0);
                        continue;
                    }
                    if self.high.is_some() {
                        self.lone_surrogate(out);
                    }
                    match b {
                        b'"' | b'\\' | b'/' => out.push(b),
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0c),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        other => out.extend_from_slice(&[b'\\', other]),
                    }
                    self.state = State::InString;
                }
                State::Unicode(n, v) => {
                    let b = data[i];
                    let Some(d) = (b as char).to_digit(16) else {
                        // Not an escape after all: keep what was written, read `b` again.
                        if self.high.is_some() {
                            self.lone_surrogate(out);
                        }
                        out.extend_from_slice(b"\\u");
                        for k in (0..n).rev() {
                            let digit = (v >> (4 * u32::from(k))) & 0xf;
                            out.push(char::from_digit(digit, 16).unwrap_or('0') as u8);
                        }
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
                    self.code_unit(v, out);
                }
            }
        }
    }

    /// One `\uXXXX` code unit.
    fn code_unit(&mut self, unit: u32, out: &mut Vec<u8>) {
        match (self.high.take(), unit) {
            (Some(high), 0xDC00..=0xDFFF) => {
                let c = 0x10000 + ((high - 0xD800) << 10) + (unit - 0xDC00);
                push_char(
                    char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER),
                    out,
                );
            }
            (high, 0xD800..=0xDBFF) => {
                if high.is_some() {
                    push_char(char::REPLACEMENT_CHARACTER, out);
                }
                self.high = Some(unit);
            }
            (high, _) => {
                if high.is_some() {
                    push_char(char::REPLACEMENT_CHARACTER, out);
                }
                push_char(
                    char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER),
                    out,
                );
            }
        }
    }

    fn lone_surrogate(&mut self, out: &mut Vec<u8>) {
        self.high = None;
        push_char(char::REPLACEMENT_CHARACTER, out);
    }

    /// Ends the document: a dangling high surrogate becomes U+FFFD, a cut escape is kept.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.high.is_some() {
            self.lone_surrogate(out);
        }
        match self.state {
            State::Escape => out.push(b'\\'),
            State::Unicode(n, v) => {
                out.extend_from_slice(b"\\u");
                for k in (0..n).rev() {
                    let digit = (v >> (4 * u32::from(k))) & 0xf;
                    out.push(char::from_digit(digit, 16).unwrap_or('0') as u8);
                }
            }
            State::Outside | State::InString => {}
        }
        self.state = State::Outside;
    }
}

fn push_char(c: char, out: &mut Vec<u8>) {
    let mut tmp = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
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
        self.buf.clear();
        self.unescaper.push(data, &mut self.buf);
        self.next.feed(&self.buf, out);
    }

    pub(crate) fn finish(&mut self, out: &mut Out<'_, '_>) {
        self.buf.clear();
        self.unescaper.finish(&mut self.buf);
        self.next.feed(&self.buf, out);
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
