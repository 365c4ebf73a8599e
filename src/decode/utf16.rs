//! Text in UTF-16, as Windows writes it: Excel's "Unicode Text" export, Windows
//! PowerShell's `Out-File` and `>` redirection, Notepad's "UTF-16 LE". A customer list
//! saved that way has a zero byte after every ASCII character, so no rule matches its raw
//! bytes; it is found here by its byte-order mark at the start of content (`FF FE`: little
//! endian, `FE FF`: big endian) and transcoded to UTF-8 for the text node after it.
//!
//! The raw bytes are scanned too ([`TwoViews`]): a mark or a charset in front of plain
//! text must not hide it, and no rule for which byte pairs stay as they are can tell
//! every such text from UTF-16 (found in review: a control byte after each address's
//! last letter made one UTF-16 character of the two). Every byte pair (one UTF-16 code
//! unit) becomes:
//! - an ASCII character (a unit under `0x80`, one zero byte): that byte;
//! - two printable ASCII bytes (`0x20..=0x7E`, tab, CR, LF) that make no ASCII unit: the
//!   two bytes as they are (content that only looks like UTF-16 behind a mark reads as
//!   itself in the text view as well, mostly). The cost: a genuine
//!   character made of two such bytes (many CJK ideographs, `U+4E2D` is `2D 4E`) reads as
//!   two ASCII bytes, not as itself — no rule looks for those characters;
//! - anything else: the character in UTF-8 (a surrogate pair as one character, a lone
//!   surrogate as `U+FFFD`).
//!
//! A `charset=utf-16` (`utf-16le`, `utf-16be`) parameter of the `Content-Type` opens the
//! same layer under the media type's own decoder (JSON, a form, text), with or without a
//! mark: a mark decides the order (over the charset's), or without one the charset, or
//! for `utf-16` where the zero byte of the first unit is (ASCII content, which
//! identifiers are). A leading mark is dropped.
//!
//! The transcoder keeps an odd byte and a high surrogate across chunks, so the text is
//! the same however the body is cut. It expands at most 3 bytes per 2: no budget needed.
//! Content with neither a mark nor a charset (`iconv -t UTF-16LE` sent as
//! `application/octet-stream`) is transcoded when it starts with two ASCII characters
//! in UTF-16 (`sniff::utf16_without_mark`); UTF-32 is not.

use super::node::Node;
use super::views::TwoViews;
use super::{Account, Out};

/// The byte-order marks: little endian, big endian.
pub(crate) const LE_MARK: &[u8] = b"\xff\xfe";
pub(crate) const BE_MARK: &[u8] = b"\xfe\xff";

/// A UTF-16 layer: its raw bytes for `raw`, its transcoded text for `text`, put
/// together as [`TwoViews`] says (a server may read either: one that ignores the mark or
/// the charset reads the bytes as they are).
pub(crate) struct Utf16Node {
    transcoder: Transcoder,
    views: TwoViews,
}

impl Utf16Node {
    /// `little_endian`: `None` to go by the mark, or without one by the first unit.
    pub(crate) fn new(
        little_endian: Option<bool>,
        raw: Node,
        text: Node,
        acct: &Account,
    ) -> Utf16Node {
        Utf16Node {
            transcoder: Transcoder::new(little_endian),
            views: TwoViews::new(raw, text, acct),
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        let views = &mut self.views;
        let mut start = 0;
        self.transcoder.each_unit(data, |t, first, second, end| {
            let before = views.buf.len();
            t.unit(first, second, &mut views.buf);
            let grew = views.buf.len() > before;
            if views.step(2, grew) {
                views.put_in(&data[start..end], out);
                start = end;
            }
        });
        self.views.raw_only(&data[start..], out);
    }

    pub(crate) fn finish(&mut self, out: &mut Out<'_, '_>) {
        self.transcoder.end(&mut self.views.buf);
        self.views.finish(out);
    }
}

/// UTF-16 to UTF-8, a chunk at a time (see the module docs for what each unit becomes).
struct Transcoder {
    /// Decided at the first unit when not given.
    little_endian: Option<bool>,
    /// Whether the first unit has been read (a mark there is dropped).
    started: bool,
    /// The first byte of a unit cut by the end of the last input.
    odd: Option<u8>,
    /// A high surrogate waiting for its low half.
    high: Option<u16>,
}

impl Transcoder {
    fn new(little_endian: Option<bool>) -> Transcoder {
        Transcoder {
            little_endian,
            started: false,
            odd: None,
            high: None,
        }
    }

    /// Calls `each` with every unit the next input completes (the first may have begun in
    /// the last input) and where it ends in `data`; a last byte that makes no unit waits.
    fn each_unit(&mut self, data: &[u8], mut each: impl FnMut(&mut Transcoder, u8, u8, usize)) {
        let mut i = 0;
        if let Some(first) = self.odd.take() {
            let Some(&second) = data.first() else {
                self.odd = Some(first);
                return;
            };
            each(self, first, second, 1);
            i = 1;
        }
        while i + 1 < data.len() {
            each(self, data[i], data[i + 1], i + 2);
            i += 2;
        }
        if i < data.len() {
            self.odd = Some(data[i]);
        }
    }

    /// Appends the text of the next input to `buf`.
    #[cfg(test)]
    fn push(&mut self, data: &[u8], buf: &mut Vec<u8>) {
        self.each_unit(data, |t, first, second, _| t.unit(first, second, buf));
    }

    /// Appends what the end of the input leaves: a replacement for a high surrogate
    /// without its low half, a last byte that makes no unit as it is.
    fn end(&mut self, buf: &mut Vec<u8>) {
        if self.high.take().is_some() {
            push_char(buf, char::REPLACEMENT_CHARACTER);
        }
        if let Some(b) = self.odd.take() {
            buf.push(b);
        }
    }

    /// One code unit, from its two bytes in the order they came.
    #[inline]
    fn unit(&mut self, first: u8, second: u8, buf: &mut Vec<u8>) {
        // A mark first says the order, over a charset's (as the WHATWG decoders and .NET
        // read it: found in review, a mark against the charset hid the text).
        let mark = match (self.started, [first, second]) {
            (false, [0xFF, 0xFE]) => Some(true),
            (false, [0xFE, 0xFF]) => Some(false),
            _ => None,
        };
        if mark.is_some() {
            self.little_endian = mark;
        }
        let little_endian = *self.little_endian.get_or_insert(match [first, second] {
            // No mark: ASCII has its zero byte second in little endian.
            [0, b] => b == 0,
            _ => true,
        });
        let unit = if little_endian {
            u16::from_le_bytes([first, second])
        } else {
            u16::from_be_bytes([first, second])
        };
        if !std::mem::replace(&mut self.started, true) && unit == 0xFEFF {
            return;
        }
        if let Some(high) = self.high.take() {
            if let Some(Ok(pair)) = char::decode_utf16([high, unit]).next() {
                push_char(buf, pair);
                return;
            }
            push_char(buf, char::REPLACEMENT_CHARACTER);
        }
        if unit < 0x80 {
            buf.push(unit as u8);
        } else if printable(first) && printable(second) {
            buf.extend_from_slice(&[first, second]);
        } else if (0xD800..0xDC00).contains(&unit) {
            self.high = Some(unit);
        } else {
            push_char(
                buf,
                char::from_u32(u32::from(unit)).unwrap_or(char::REPLACEMENT_CHARACTER),
            );
        }
    }
}

/// Printable ASCII and the whitespace of text lines.
fn printable(b: u8) -> bool {
    matches!(b, 0x20..=0x7E | b'\t' | b'\n' | b'\r')
}

fn push_char(buf: &mut Vec<u8>, c: char) {
    let mut utf8 = [0u8; 4];
    buf.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the transcoder makes of `data` fed in the given pieces.
    fn transcode(little_endian: bool, pieces: &[&[u8]]) -> Vec<u8> {
        let mut t = Transcoder::new(Some(little_endian));
        let mut all = Vec::new();
        for piece in pieces {
            t.push(piece, &mut all);
        }
        t.end(&mut all);
        all
    }

    fn le(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    fn be(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_be_bytes).collect()
    }

    #[test]
    fn text_comes_out_as_utf8() {
        let text = "name,email\r\nJosé,jose@acme-corp.io\n中文 😀 Ωmega";
        assert_eq!(
            transcode(true, &[&le(text)]),
            "name,email\r\nJosé,jose@acme-corp.io\n-N文 😀 Ωmega".as_bytes(),
            "中 (U+4E2D) is two printable bytes and stays them; the rest is itself"
        );
        assert_eq!(
            transcode(false, &[&be("jose@acme-corp.io 😀")]),
            "jose@acme-corp.io 😀".as_bytes()
        );
    }

    #[test]
    fn plain_text_behind_a_mark_is_itself() {
        let text = b"alice@acme-corp.io,4111 1111 1111 1111\r\nbob@acme-corp.io\n";
        for little_endian in [true, false] {
            assert_eq!(transcode(little_endian, &[text]), text);
        }
        // An odd length: the last byte as it is.
        assert_eq!(transcode(true, &[b"abc"]), b"abc");
    }

    #[test]
    fn the_mark_decides_and_is_dropped() {
        let text = "id,email\njose@acme-corp.io";
        for little_endian in [true, false] {
            let (body, marked) = if little_endian {
                (le(text), le("\u{FEFF}"))
            } else {
                (be(text), be("\u{FEFF}"))
            };
            let mut t = Transcoder::new(None);
            let mut got = Vec::new();
            t.push(&marked, &mut got);
            t.push(&body, &mut got);
            t.end(&mut got);
            assert_eq!(
                got,
                text.as_bytes(),
                "marked, little endian {little_endian}"
            );
            // No mark: the first unit's zero byte.
            let mut t = Transcoder::new(None);
            let mut got = Vec::new();
            t.push(&body, &mut got);
            assert_eq!(
                got,
                text.as_bytes(),
                "unmarked, little endian {little_endian}"
            );
        }
        // A mark given with the charset's own order is dropped too, once.
        let twice = [le("\u{FEFF}"), le("\u{FEFF}a")].concat();
        assert_eq!(transcode(true, &[&twice]), "\u{FEFF}a".as_bytes());
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        let lone_high = [0x3D, 0xD8, b'a', 0];
        assert_eq!(transcode(true, &[&lone_high]), "\u{FFFD}a".as_bytes());
        let lone_low = [0x00, 0xDE, b'a', 0];
        assert_eq!(transcode(true, &[&lone_low]), "\u{FFFD}a".as_bytes());
        let high_at_end = [b'a', 0, 0x3D, 0xD8];
        assert_eq!(transcode(true, &[&high_at_end]), "a\u{FFFD}".as_bytes());
    }

    #[test]
    fn every_cut_gives_the_same_text() {
        let data = le("a😀b,carol@acme-corp.io\r\nΩ\n");
        let whole = transcode(true, &[&data]);
        for i in 0..=data.len() {
            for j in i..=data.len() {
                let pieces = [&data[..i], &data[i..j], &data[j..]];
                assert_eq!(transcode(true, &pieces), whole, "cut at {i} and {j}");
            }
        }
    }
}
