//! `application/x-www-form-urlencoded` bodies and request targets, percent-decoded as a
//! stream.
//!
//! Keys and values are percent-decoded and `+` becomes a space; each `&` becomes a line
//! break, so that a match never joins two fields. A `%` not followed by two hex digits is
//! kept as it is (browsers send it that way too). A request target is decoded the same way
//! except that its path (up to the first `?`) keeps `+` and `&` as they are.

use memchr::{memchr2, memchr3};

use super::Out;
use super::node::Node;

/// A form or target decoder feeding its text node.
pub(crate) struct FormNode {
    /// In the query (or a form body): `+` is a space and `&` separates fields.
    query: bool,
    /// A `%` escape cut by the end of a chunk: `%` and at most one more byte.
    pending: Vec<u8>,
    buf: Vec<u8>,
    next: Node,
}

impl FormNode {
    /// A form body.
    pub(crate) fn body(next: Node) -> FormNode {
        FormNode {
            query: true,
            pending: Vec::new(),
            buf: Vec::new(),
            next,
        }
    }

    /// A request target: path, then query.
    pub(crate) fn target(next: Node) -> FormNode {
        FormNode {
            query: false,
            ..FormNode::body(next)
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        self.buf.clear();
        let mut i = 0;
        if !self.pending.is_empty() {
            while self.pending.len() < 3 && i < data.len() {
                self.pending.push(data[i]);
                i += 1;
            }
            if self.pending.len() < 3 {
                return;
            }
            let esc = std::mem::take(&mut self.pending);
            match unhex(esc[1], esc[2]) {
                Some(b) => self.buf.push(b),
                None => {
                    // Not an escape: the `%` is literal and the two bytes after it are
                    // read again (one may open an escape of its own).
                    self.buf.push(b'%');
                    let mut again = esc[1..3 - i].to_vec();
                    again.extend_from_slice(data);
                    self.decode(&again);
                    self.next.feed(&self.buf, out);
                    return;
                }
            }
        }
        self.decode(&data[i..]);
        self.next.feed(&self.buf, out);
    }

    /// Decodes `data` onto `self.buf`, keeping a cut escape in `self.pending`.
    fn decode(&mut self, data: &[u8]) {
        let mut i = 0;
        while i < data.len() {
            let found = if self.query {
                memchr3(b'%', b'+', b'&', &data[i..])
            } else {
                memchr2(b'%', b'?', &data[i..])
            };
            let Some(off) = found else {
                self.buf.extend_from_slice(&data[i..]);
                return;
            };
            let j = i + off;
            self.buf.extend_from_slice(&data[i..j]);
            if data[j] == b'%' {
                if j + 2 >= data.len() {
                    self.pending.extend_from_slice(&data[j..]);
                    return;
                }
                match unhex(data[j + 1], data[j + 2]) {
                    Some(b) => {
                        self.buf.push(b);
                        i = j + 3;
                    }
                    None => {
                        self.buf.push(b'%');
                        i = j + 1;
                    }
                }
            } else {
                self.special_or_plain(data[j]);
                i = j + 1;
            }
        }
    }

    /// One byte outside an escape.
    fn special_or_plain(&mut self, b: u8) {
        match b {
            b'+' if self.query => self.buf.push(b' '),
            b'&' if self.query => self.buf.push(b'\n'),
            b'?' if !self.query => {
                self.query = true;
                self.buf.push(b'?');
            }
            b => self.buf.push(b),
        }
    }

    pub(crate) fn finish(&mut self, out: &mut Out<'_, '_>) {
        self.buf.clear();
        let pending = std::mem::take(&mut self.pending);
        if let Some((&pct, rest)) = pending.split_first() {
            self.buf.push(pct);
            for &b in rest {
                self.special_or_plain(b);
            }
        }
        self.next.feed(&self.buf, out);
        self.next.finish(out);
    }
}

fn hex(b: u8) -> Option<u8> {
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
