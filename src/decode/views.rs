//! Content read two ways at once: its bytes as they are, and a text made of them (a UTF-16
//! body transcoded, the text of XML or HTML). Neither can stand in for the other: a server
//! may read either (an attacker's own server reads whatever it was sent), so both go
//! through the engine.
//!
//! Both views' nodes must hand on every byte they are fed at once (plain text, not a
//! sniffer that keeps the last bytes back to look for a zip signature across chunks):
//! bytes kept back came out after the other view's piece, three bytes before the place,
//! and cut the value there (found in testing: the last address of a UTF-16 body).
//!
//! The raw bytes are fed as they come. The text is held and put in between them only at
//! places the content decides, where both views are at a value's edge: the text has just
//! ended a line (and the raw bytes at the byte that made that line end, a `>` or a line
//! break or a UTF-16 unit's zero byte), at least [`FLUSH_MIN`] raw bytes after the last
//! such place; past [`FLUSH_FORCED`] raw bytes, any byte that separates values will do;
//! past [`FLUSH_GAP`], any byte no value holds (a space); past [`FLUSH_HARD`], any place
//! at all (a view is cut then: content of half a MiB made only of value bytes). So the
//! same body is read the same way however it is cut into chunks (found in review: a flush
//! at whichever chunk passed a size cut an address in two), and what the text holds stays
//! a bounded distance behind the raw bytes, within what a streamed body holds back (found
//! in review: tags without text let a list go upstream before its text was read).

use super::node::Node;
use super::sniff::separates_values;
use super::{Account, Out, Waiting};

/// Raw bytes at least between two places the text goes in at a line end.
pub(crate) const FLUSH_MIN: usize = 32 << 10;
/// Raw bytes past which the text goes in after any byte that separates values.
pub(crate) const FLUSH_FORCED: usize = 128 << 10;
/// Raw bytes past which the text goes in after any byte no value holds (a space too).
pub(crate) const FLUSH_GAP: usize = 256 << 10;
/// Raw bytes past which the text goes in at once.
pub(crate) const FLUSH_HARD: usize = 512 << 10;

/// At a place forced by [`FLUSH_HARD`] inside a run of value bytes, the last this many
/// bytes of the text go in again at the start of the next text: a value the place cut
/// (the sender chooses where it falls) is whole there. More than the longest value.
const OVERLAP: usize = 4 << 10;

/// The two views of one layer and the text not put in yet.
pub(crate) struct TwoViews {
    raw: Node,
    text: Node,
    /// Text of the raw bytes since the last place.
    pub(crate) buf: Vec<u8>,
    /// Raw bytes since the last place.
    since: usize,
    /// The `FLUSH_*` sizes are divided by this: a layer whose raw bytes are a fraction of
    /// the body's (text a form or a JSON string decoded, up to 8 body bytes a byte) puts
    /// its text in within what a streamed body holds back.
    divisor: usize,
    waiting: Waiting,
}

impl TwoViews {
    pub(crate) fn new(raw: Node, text: Node, acct: &Account) -> TwoViews {
        TwoViews::scaled(raw, text, acct, 1)
    }

    /// [`TwoViews::new`] with its `FLUSH_*` sizes divided by `divisor`.
    pub(crate) fn scaled(raw: Node, text: Node, acct: &Account, divisor: usize) -> TwoViews {
        TwoViews {
            raw,
            text,
            buf: Vec::new(),
            since: 0,
            divisor,
            waiting: Waiting::new(acct),
        }
    }

    /// Counts `n` more raw bytes, whose text (if any) is now at the end of `buf`
    /// (`grew`: they made some); true when the text goes in right after them. Only bytes
    /// that made the line end (or the separator) are a place: a `>` that ended a line is
    /// one, the bytes of the next tag are not (an attribute value holds values too).
    #[inline]
    pub(crate) fn step(&mut self, n: usize, grew: bool) -> bool {
        self.since += n;
        let since = self.since * self.divisor;
        if since >= FLUSH_HARD {
            return true;
        }
        if !grew || since < FLUSH_MIN {
            return false;
        }
        match self.buf.last() {
            Some(b'\n') => true,
            Some(&b) if since >= FLUSH_FORCED && separates_values(b) => true,
            // Content without separators (spaces between values): a place the sender can
            // put anywhere it likes is one inside every value (found in review), so past
            // this only a byte that no address, card or phone holds will do.
            Some(&b) => since >= FLUSH_GAP && !in_values(b),
            None => false,
        }
    }

    /// Where in `bytes`, about to go into both views as they are, the first place is: the
    /// length up to and including the byte after which [`TwoViews::step`] puts the text
    /// in. A caller that feeds such bytes in spans cut where its input ends steps to this
    /// first, so that the place is where the content decides, not the chunks (found in
    /// review: a chunk ending on a `,` put the text view between a value and its context
    /// word).
    pub(crate) fn place_in(&self, bytes: &[u8]) -> Option<usize> {
        let at = |k: usize| (self.since + k + 1) * self.divisor;
        // The first byte that may be a place: `FLUSH_MIN` reached.
        let first = (FLUSH_MIN / self.divisor).saturating_sub(self.since + 1);
        for (k, &b) in bytes.iter().enumerate().skip(first) {
            let since = at(k);
            if since >= FLUSH_HARD
                || b == b'\n'
                || since >= FLUSH_FORCED && separates_values(b)
                || since >= FLUSH_GAP && !in_values(b)
            {
                return Some(k + 1);
            }
        }
        None
    }

    /// Feeds the raw bytes up to a place, then the text held. At a place forced inside a
    /// run of value bytes, the text's last [`OVERLAP`] bytes start the next text too
    /// (found in review: `/` padding put every forced place right after `customer1@`).
    pub(crate) fn put_in(&mut self, raw: &[u8], out: &mut Out<'_, '_>) {
        self.raw.feed(raw, out);
        let forced = self.since * self.divisor >= FLUSH_HARD
            && self.buf.last().is_some_and(|&b| in_values(b));
        if !self.buf.is_empty() {
            self.text.feed(&self.buf, out);
            if forced {
                let keep = self.buf.len().min(OVERLAP);
                self.buf.drain(..self.buf.len() - keep);
            } else {
                self.buf.clear();
            }
        }
        self.since = 0;
        self.waiting.set(self.buf.len());
    }

    /// Feeds raw bytes with no place in them (the text keeps waiting).
    pub(crate) fn raw_only(&mut self, raw: &[u8], out: &mut Out<'_, '_>) {
        self.raw.feed(raw, out);
        self.waiting.set(self.buf.len());
    }

    /// The content ended: the rest of the text, then both views end.
    pub(crate) fn finish(&mut self, out: &mut Out<'_, '_>) {
        self.put_in(&[], out);
        self.raw.finish(out);
        self.text.finish(out);
    }
}

/// Bytes that addresses, cards, phones, ids and tokens are made of (a space is not: a card
/// written with spaces is cut there only past [`FLUSH_GAP`] of content with no other
/// place).
pub(crate) fn in_values(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'@' | b'.' | b'_' | b'-' | b'+' | b'%' | b'/' | b'=')
}
