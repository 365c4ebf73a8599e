//! Base64, standard (`+/`) and URL-safe (`-_`) alphabets at once, decoded as a stream.
//!
//! Two users: runs of base64 found inside text (`sniff` finds them and feeds
//! their characters here), and MIME parts sent with `Content-Transfer-Encoding: base64`
//! (`Base64Node`: line breaks and anything outside the alphabet skipped, as RFC 2045
//! §6.8 asks). Padding is optional; a final group of two or three characters yields its one
//! or two bytes, a lone character nothing.

use super::Out;
use super::node::Node;

/// Symbol value of each byte in either alphabet; [`INVALID`] for the rest (`=` included:
/// padding is handled by the callers).
pub static SYMBOLS: [u8; 256] = symbols();

/// Marks a byte outside both alphabets in [`SYMBOLS`].
pub const INVALID: u8 = 0xFF;

const fn symbols() -> [u8; 256] {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 26 {
        t[b'A' as usize + i] = i as u8;
        t[b'a' as usize + i] = 26 + i as u8;
        i += 1;
    }
    let mut d = 0;
    while d < 10 {
        t[b'0' as usize + d] = 52 + d as u8;
        d += 1;
    }
    t[b'+' as usize] = 62;
    t[b'-' as usize] = 62;
    t[b'/' as usize] = 63;
    t[b'_' as usize] = 63;
    t
}

/// [`SYMBOLS`] shifted into place for each of a group's four positions (`SHIFTED[k][b]`:
/// the value of `b` as the group's `k`-th symbol in the group's 24 bits), with bit 31 set
/// for a byte outside the alphabets: a whole group is four lookups or-ed together and one
/// test.
static SHIFTED: [[u32; 256]; 4] = shifted();

const fn shifted() -> [[u32; 256]; 4] {
    let mut t = [[0u32; 256]; 4];
    let mut k = 0;
    while k < 4 {
        let mut b = 0;
        while b < 256 {
            let v = SYMBOLS[b];
            t[k][b] = if v == INVALID {
                1 << 31
            } else {
                (v as u32) << (18 - 6 * k)
            };
            b += 1;
        }
        k += 1;
    }
    t
}

/// Whether `b` is a base64 symbol of either alphabet (padding excluded).
#[inline]
pub fn is_symbol(b: u8) -> bool {
    SYMBOLS[usize::from(b)] != INVALID
}

/// Streaming base64 decoder: push symbols, take bytes.
#[derive(Debug, Default, Clone)]
pub struct Decoder {
    acc: u32,
    n: u8,
}

impl Decoder {
    /// A decoder at the start of a group.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Symbols pushed of the current group (0 to 3): the next `4 - held()` complete it.
    pub fn held(&self) -> usize {
        usize::from(self.n)
    }

    /// Decodes the symbols in `input` (bytes outside the alphabets are skipped) onto `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() / 4 * 3 + 3);
        let mut rest = input;
        loop {
            // Finish a group begun earlier, one symbol at a time.
            while self.n != 0 {
                let Some((&b, tail)) = rest.split_first() else {
                    return;
                };
                self.push_symbol(b, out);
                rest = tail;
            }
            // Whole groups of four symbols, written straight into room made for them.
            let start = out.len();
            out.resize(start + rest.len() / 4 * 3, 0);
            let mut whole = 0;
            for (g, o) in rest.chunks_exact(4).zip(out[start..].chunks_exact_mut(3)) {
                let n = SHIFTED[0][usize::from(g[0])]
                    | SHIFTED[1][usize::from(g[1])]
                    | SHIFTED[2][usize::from(g[2])]
                    | SHIFTED[3][usize::from(g[3])];
                if n >> 31 != 0 {
                    break;
                }
                o.copy_from_slice(&n.to_be_bytes()[1..]);
                whole += 1;
            }
            out.truncate(start + whole * 3);
            rest = &rest[whole * 4..];
            // The end, or a group holding a byte outside the alphabets (a line break in
            // MIME): one symbol at a time, then whole groups again.
            let (group, tail) = rest.split_at(rest.len().min(4));
            for &b in group {
                self.push_symbol(b, out);
            }
            if tail.is_empty() {
                return;
            }
            rest = tail;
        }
    }

    /// Decodes one byte if it is a symbol; returns whether it was.
    #[inline]
    pub fn push_symbol(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        let v = SYMBOLS[usize::from(b)];
        if v == INVALID {
            return false;
        }
        self.acc = (self.acc << 6) | u32::from(v);
        self.n += 1;
        if self.n == 4 {
            out.extend_from_slice(&[
                (self.acc >> 16) as u8,
                (self.acc >> 8) as u8,
                self.acc as u8,
            ]);
            self.acc = 0;
            self.n = 0;
        }
        true
    }

    /// Whether a group has begun and not been completed (one to three symbols pushed).
    pub fn mid_group(&self) -> bool {
        self.n != 0
    }

    /// Ends the input (or a padded group): the bytes of a final partial group.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match self.n {
            2 => out.push((self.acc >> 4) as u8),
            3 => out.extend_from_slice(&[(self.acc >> 10) as u8, (self.acc >> 2) as u8]),
            _ => {}
        }
        self.acc = 0;
        self.n = 0;
    }
}

/// Decodes a whole base64 text (either alphabet, whitespace and padding ignored).
pub fn decode(input: &[u8]) -> Vec<u8> {
    let mut d = Decoder::new();
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 3);
    for &b in input {
        if b == b'=' {
            d.finish(&mut out);
        } else {
            d.push_symbol(b, &mut out);
        }
    }
    d.finish(&mut out);
    out
}

/// A MIME part body in `Content-Transfer-Encoding: base64`, decoded into its content node.
pub(crate) struct Base64Node {
    decoder: Decoder,
    buf: Vec<u8>,
    next: Node,
}

impl Base64Node {
    pub(crate) fn new(next: Node) -> Base64Node {
        Base64Node {
            decoder: Decoder::new(),
            buf: Vec::new(),
            next,
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        self.buf.clear();
        for &b in data {
            if b == b'=' {
                self.decoder.finish(&mut self.buf);
            } else {
                self.decoder.push_symbol(b, &mut self.buf);
            }
        }
        self.next.feed(&self.buf, out);
    }

    pub(crate) fn finish(&mut self, out: &mut Out<'_, '_>) {
        self.buf.clear();
        self.decoder.finish(&mut self.buf);
        self.next.feed(&self.buf, out);
        self.next.finish(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_alphabets_padded_or_not() {
        let cases: &[(&str, &[u8])] = &[
            ("", b""),
            ("YQ==", b"a"),
            ("YQ", b"a"),
            ("YWI=", b"ab"),
            ("YWI", b"ab"),
            ("YWJj", b"abc"),
            ("YW\r\nJj", b"abc"),
            ("Y", b""),
            ("+/+/", &[0xfb, 0xff, 0xbf]),
            ("-_-_", &[0xfb, 0xff, 0xbf]),
            ("YWxpY2VAYWNtZS1jb3JwLmlv", b"alice@acme-corp.io"),
            ("YQ==YWI=", b"aab"),
        ];
        for (input, want) in cases {
            assert_eq!(decode(input.as_bytes()), *want, "{input}");
        }
    }

    /// Bytes outside the alphabets (MIME line breaks, stray spaces) anywhere, one or two
    /// together, at every split: `push` skips them as the symbol-at-a-time path does.
    #[test]
    fn push_skips_other_bytes_anywhere() {
        let text = b"YWxpY2VAYWNtZS1jb3JwLmlvLCBib2JAYWNtZS1jb3JwLmlv";
        let want = decode(text);
        for at in 0..=text.len() {
            for junk in [&b"\n"[..], b"\r\n", b" "] {
                let mut input = text[..at].to_vec();
                input.extend_from_slice(junk);
                input.extend_from_slice(&text[at..]);
                for split in [0, at / 2, at, input.len()] {
                    let out = pushed_in_two(&input, split);
                    assert_eq!(out, want, "{junk:?} at {at}, split at {split}");
                }
            }
        }
    }

    #[test]
    fn streamed_in_any_split_decodes_the_same() {
        let text = b"YWxpY2VAYWNtZS1jb3JwLmlvLCBib2JAYWNtZS1jb3JwLmlv";
        let whole = decode(text);
        for split in 0..text.len() {
            assert_eq!(pushed_in_two(text, split), whole, "split at {split}");
        }
    }

    /// `input` through one streaming decoder in two pushes, cut at `split`.
    fn pushed_in_two(input: &[u8], split: usize) -> Vec<u8> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        d.push(&input[..split], &mut out);
        d.push(&input[split..], &mut out);
        d.finish(&mut out);
        out
    }
}
