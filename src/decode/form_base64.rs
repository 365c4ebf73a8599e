//! Raw base64 in a form field, its `+` symbols read as spaces.
//!
//! `curl -d "file=$(base64 -w0 export.csv.gz)"` (or `-d @export.b64`) sends base64 as it
//! is, and in a form body a literal `+` means a space: the form's text has a space about
//! every 64 symbols, so no run in it is long enough to be decoded, and the runs that are
//! come out misaligned. Servers that expect such data put the `+` back
//! (`str_replace(' ', '+', ...)`, `value.replace(' ', '+')`) before decoding; so does this
//! reader, on the form's decoded text, field by field:
//!
//! - a field's *candidate* starts at its first byte, after a `?` (a target's query) and
//!   again after each `=` that symbols follow (`key=value`); it goes on over base64
//!   symbols (either alphabet) and spaces (read as `+`), line breaks are skipped, `=` is
//!   padding; any other byte ends it: before the field's first `=` it is a key's
//!   (`files[]`, `user[avatar]`) and the candidate starts again after that `=`, after it
//!   the rest of the field is passed over;
//! - a candidate of at least [`BASE64_MIN_RUN`] symbols holding both upper- and lowercase
//!   letters among its first ones (as the text's own runs need: `sniff::plausible`) is
//!   decoded from its start — where a server's decoder starts — as a stream;
//! - what it decodes belongs to the text's own reader (`sniff`) while the candidate has no
//!   space: the text holds the same run unbroken and decodes it. Once it has one, the
//!   decoded bytes from the candidate's start are scanned as content of their own, one
//!   layer deeper, handed on at the symbol that completes a piece (or where the candidate
//!   ends) and put in after the next byte of the text that separates values
//!   (`Out::put_pending`): they cut no value of the form's text, at a place the text
//!   decides, not the chunks — archives, compressed streams and JSON at their start are
//!   opened as in any decoded run. Past 4 MiB of them waiting, they go in at once (see
//!   `FormNode::put_pieces`).
//!
//! Memory: decoded bytes are handed on in pieces of at most [`PIECE`], cut after the last
//! line end of a piece's second half when it has one; where the cuts fall depends only on
//! the decoded bytes, never on the chunks. A piece that waits (as pending content) for a
//! byte of the text that separates values is counted as waiting like any decoded text.
//!
//! What it costs: a field whose first bytes are not base64 (a browser's form: a `%`-escape
//! or punctuation within a few bytes) is passed over after them; only base64-like
//! fields are decoded, and those the text's reader decodes too (the run before the first
//! space, and runs after it), so the decoding cost of such a field doubles. A value
//! decoded by both readers counts twice in a finding's `count`, never in its distinct
//! count. An archive or a compressed stream that decodes to more than [`PIECE`] is read
//! as pieces, each on its own: the first is cut short (not fully inspected).

use super::base64::{Decoder, is_symbol};
use super::sniff::{plausible, symbol_prefix};
use super::{Account, BASE64_MIN_RUN, Waiting};

/// Decoded bytes handed on at most at a time.
pub(crate) const PIECE: usize = 512 << 10;

/// The raw base64 reader of one form (its body, or a target's query).
pub(crate) struct FieldBase64 {
    /// The depth of the base64 layer (the form's text is one above it).
    depth: u32,
    /// Where in the current field the reader is.
    state: State,
    /// The candidate's first symbols (spaces as `+`), until it is known to be decoded.
    head: Vec<u8>,
    /// Symbols in the candidate (spaces included).
    symbols: u64,
    /// Index (in symbols) of the candidate's first space.
    first_space: Option<u64>,
    /// `=` read: the next symbol starts a new candidate.
    padded: bool,
    /// An `=` was read in the current field: its key has ended.
    value: bool,
    decoder: Decoder,
    /// Decoded bytes not handed on yet.
    decoded: Vec<u8>,
    /// Decoded bytes of the candidate before `decoded[0]`.
    decoded_before: u64,
    waiting: Waiting,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// A target's path: nothing read until its `?`.
    Path,
    /// In a key that is not base64 (`files[]`, `user[avatar]`, `export.csv`): nothing read
    /// until its `=`.
    Key,
    /// In a candidate: `head` holds its symbols (fewer than [`BASE64_MIN_RUN`]).
    Head,
    /// In a candidate being decoded.
    Decoding,
    /// The rest of the field is passed over.
    Skip,
}

impl FieldBase64 {
    /// A reader for a form body's fields (`query`), or a target's (read from its `?`);
    /// `depth`: the layer of the decoded base64.
    pub(crate) fn new(query: bool, depth: u32, acct: &Account) -> FieldBase64 {
        FieldBase64 {
            depth,
            state: if query { State::Head } else { State::Path },
            head: Vec::new(),
            symbols: 0,
            first_space: None,
            padded: false,
            value: false,
            decoder: Decoder::new(),
            decoded: Vec::new(),
            decoded_before: 0,
            waiting: Waiting::new(acct),
        }
    }

    /// The layer of the decoded base64.
    pub(crate) fn depth(&self) -> u32 {
        self.depth
    }

    /// The next bytes of the current field (the form's decoded text, no field separator
    /// among them); decoded pieces to scan go onto `out`. Reads up to the byte that hands
    /// on a piece, or all of `data`; returns how much it read (all of `data` unless a piece
    /// was handed on), so that the caller can put the piece in at a place the text decides.
    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Vec<Vec<u8>>) -> usize {
        let had = out.len();
        let mut i = 0;
        while i < data.len() && out.len() == had {
            match self.state {
                State::Skip => break,
                State::Path => match memchr::memchr(b'?', &data[i..]) {
                    Some(p) => {
                        i += p + 1;
                        self.state = State::Head;
                    }
                    None => break,
                },
                State::Key => match memchr::memchr(b'=', &data[i..]) {
                    Some(p) => {
                        i += p + 1;
                        self.value = true;
                        self.state = State::Head;
                    }
                    None => break,
                },
                State::Head | State::Decoding => {
                    // Up to the symbol that makes a piece, no further: where a piece is
                    // handed on depends on the text, not on where the chunk ends.
                    let n = if self.padded {
                        0
                    } else {
                        symbol_prefix(&data[i..]).min(self.symbols_to_piece())
                    };
                    if n > 0 {
                        self.push(&data[i..i + n], out);
                        i += n;
                        continue;
                    }
                    let b = data[i];
                    i += 1;
                    match b {
                        b' ' if !self.padded => {
                            self.first_space.get_or_insert(self.symbols);
                            self.push(b"+", out);
                        }
                        b'\r' | b'\n' => {}
                        b'=' => {
                            self.padded = true;
                            self.value = true;
                        }
                        b'?' => {
                            self.restart(out);
                            self.value = false;
                        }
                        // After padding: another value (`key=value`) starts here.
                        b if self.padded && (is_symbol(b) || b == b' ') => {
                            self.restart(out);
                            i -= 1;
                        }
                        // A key's own bytes: the value starts after its `=` (found in
                        // review: `files[]=<base64>` was passed over whole).
                        _ if !self.value => {
                            self.end(out);
                            self.state = State::Key;
                        }
                        _ => {
                            self.end(out);
                            self.state = State::Skip;
                        }
                    }
                }
            }
        }
        self.waiting.set(self.decoded.len());
        if out.len() == had { data.len() } else { i }
    }

    /// Whether the reader is at the start of a field, nothing of it read.
    pub(crate) fn at_field_start(&self) -> bool {
        self.state == State::Head && self.symbols == 0 && !self.value && !self.padded
    }

    /// Whether a candidate is being decoded.
    pub(crate) fn decoding(&self) -> bool {
        self.state == State::Decoding
    }

    /// Whether the current field's value is being decoded up to here from its start
    /// and handed on (it has a space): the text's own reading of it is superseded.
    pub(crate) fn reads_whole_field(&self) -> bool {
        self.state == State::Decoding && self.first_space.is_some()
    }

    /// The current field ended (a `&` in the form, or its end).
    pub(crate) fn end_field(&mut self, out: &mut Vec<Vec<u8>>) {
        if self.state != State::Path {
            self.restart(out);
            self.value = false;
        }
        self.waiting.set(self.decoded.len());
    }

    /// Ends the candidate and starts the next one here.
    fn restart(&mut self, out: &mut Vec<Vec<u8>>) {
        self.end(out);
        self.state = State::Head;
    }

    /// The most symbols the next push may take: up to the end of the candidate's head
    /// while it is read, then up to the symbol that completes a piece's last byte.
    fn symbols_to_piece(&self) -> usize {
        if self.state == State::Head {
            return BASE64_MIN_RUN - self.head.len();
        }
        let room = PIECE.saturating_sub(self.decoded.len()).max(1);
        room.div_ceil(3) * 4 - self.decoder.held()
    }

    /// Symbols of the candidate (spaces already made `+`).
    fn push(&mut self, syms: &[u8], out: &mut Vec<Vec<u8>>) {
        self.symbols += syms.len() as u64;
        if self.state == State::Head {
            let room = BASE64_MIN_RUN - self.head.len();
            if syms.len() < room {
                self.head.extend_from_slice(syms);
                return;
            }
            self.head.extend_from_slice(&syms[..room]);
            if !plausible(&self.head, &[]) {
                // A hex digest, a long word: not base64 (as the text's reader decides).
                self.end(out);
                self.state = State::Skip;
                return;
            }
            self.state = State::Decoding;
            let head = std::mem::take(&mut self.head);
            self.decoder.push(&head, &mut self.decoded);
            self.head = head;
            self.head.clear();
            self.decoder.push(&syms[room..], &mut self.decoded);
        } else {
            self.decoder.push(syms, &mut self.decoded);
        }
        self.cut_pieces(false, out);
    }

    /// Hands on the pieces `decoded` holds (all of it when `last`).
    fn cut_pieces(&mut self, last: bool, out: &mut Vec<Vec<u8>>) {
        while self.decoded.len() >= PIECE || last && !self.decoded.is_empty() {
            let cut = if self.decoded.len() >= PIECE {
                memchr::memrchr(b'\n', &self.decoded[PIECE / 2..PIECE])
                    .map_or(PIECE, |p| PIECE / 2 + p + 1)
            } else {
                self.decoded.len()
            };
            self.decoded_before += cut as u64;
            // The symbols that made the piece's bytes: up to the group of its last byte.
            let piece_symbols = self.decoded_before.div_ceil(3) * 4;
            let piece: Vec<u8> = self.decoded.drain(..cut).collect();
            if self.first_space.is_none_or(|s| s >= piece_symbols) {
                // No space yet: the text holds this run unbroken, its reader decodes it.
                continue;
            }
            // All of it from the candidate's start, even where the text's reader decoded
            // the run before the first space: an archive or a compressed stream opens
            // only there (found in review: a gzip whose first `+` came after its 64th
            // symbol was cut in two and read by neither).
            out.push(piece);
        }
    }

    /// Ends the candidate: its last bytes are handed on.
    fn end(&mut self, out: &mut Vec<Vec<u8>>) {
        if self.state == State::Decoding {
            self.decoder.finish(&mut self.decoded);
            self.cut_pieces(true, out);
        }
        self.decoder = Decoder::new();
        self.decoded.clear();
        self.decoded_before = 0;
        self.head.clear();
        self.symbols = 0;
        self.first_space = None;
        self.padded = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `text` into fields as the form node does (`\t`) and feeds each in pieces
    /// of `step` bytes; returns the pieces handed on.
    fn read(text: &[u8], step: usize) -> Vec<Vec<u8>> {
        let acct = Account::new(super::super::Limits::default());
        let mut reader = FieldBase64::new(true, 2, &acct);
        let mut out = Vec::new();
        for (k, field) in text.split(|&b| b == b'\t').enumerate() {
            if k > 0 {
                reader.end_field(&mut out);
            }
            for mut piece in field.chunks(step.max(1)) {
                while !piece.is_empty() {
                    piece = &piece[reader.feed(piece, &mut out)..];
                }
            }
        }
        reader.end_field(&mut out);
        assert_eq!(reader.depth, 2);
        out
    }

    fn b64(data: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    /// Bytes whose base64 has `+` in it (every 62nd symbol value is `+`).
    fn data_with_plus(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 251 % 256) as u8 ^ 0xF8).collect()
    }

    #[test]
    fn a_field_with_plus_read_as_space_is_decoded_from_its_start() {
        let data = data_with_plus(3000);
        let encoded = b64(&data);
        assert!(encoded.contains('+'));
        let sent = format!("name=x\tfile={}", encoded.replace('+', " "));
        for step in [1, 7, 64, 4096] {
            let got: Vec<u8> = read(sent.as_bytes(), step).concat();
            // The first space is early: the text's reader has no run before it.
            let first = encoded.find('+').expect("a plus");
            assert!(
                first < BASE64_MIN_RUN,
                "the test needs an early `+`: {first}"
            );
            assert_eq!(got, data, "step {step}");
        }
    }

    #[test]
    fn without_a_space_the_text_decodes_it_and_this_reader_hands_on_nothing() {
        let encoded = b64(b"customer1@acme-corp.io,customer2@acme-corp.io,customer3@acme.io!!");
        assert!(!encoded.contains('+'));
        assert!(read(format!("f={encoded}").as_bytes(), 5).is_empty());
    }

    #[test]
    fn a_late_first_space_still_hands_on_all_from_the_start() {
        // 200 symbols without `+`, then some with: the text decodes the first 200 (a run)
        // and this reader all of it (a gzip or zip opens only from the start).
        let mut data = vec![b'a'; 150];
        data.extend(data_with_plus(300));
        let encoded = b64(&data);
        let first = encoded.find('+').expect("a plus");
        assert!(first >= BASE64_MIN_RUN);
        let got = read(format!("f={}", encoded.replace('+', " ")).as_bytes(), 13).concat();
        assert_eq!(got, data);
    }

    #[test]
    fn browser_forms_prose_and_digests_are_passed_over() {
        for field in [
            "comment=Hello there, this is a long comment with punctuation in it, really long",
            "q=the quick brown fox jumps over the lazy dog and keeps on running for ever and ever",
            "sha=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef 0123",
            "json={\"a\": \"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2 d3h5\"}",
        ] {
            assert!(read(field.as_bytes(), 3).is_empty(), "{field}");
        }
    }

    #[test]
    fn key_value_pairs_and_padding() {
        let a = data_with_plus(100);
        let b = data_with_plus(77);
        let sent = format!(
            "a={}\tb={}",
            b64(&a).replace('+', " "),
            b64(&b).replace('+', " ")
        );
        let got = read(sent.as_bytes(), 9);
        assert_eq!(got, vec![a, b]);
        // `curl -d @file.b64`: no key, the padding at the end.
        let c = data_with_plus(101);
        let sent = b64(&c).replace('+', " ");
        assert!(sent.ends_with('='));
        assert_eq!(read(sent.as_bytes(), 11), vec![c]);
    }

    #[test]
    fn pieces_are_cut_where_the_content_says() {
        // Lines of text, base64'd with an early `+`: every piece but the last ends a line,
        // and the pieces are the same whatever the steps.
        let mut data = vec![0xFBu8, 0xEF, 0xBE];
        let mut k = 0;
        while data.len() < 3 * PIECE {
            data.extend_from_slice(format!("row {k},customer{k}@acme-corp.io\n").as_bytes());
            k += 1;
        }
        let sent = format!("f={}", b64(&data).replace('+', " "));
        let whole = read(sent.as_bytes(), 1 << 20);
        assert!(whole.len() >= 3, "{}", whole.len());
        for p in &whole[..whole.len() - 1] {
            assert!(p.len() <= PIECE && p.ends_with(b"\n"), "{}", p.len());
        }
        assert_eq!(whole.concat(), data);
        assert_eq!(read(sent.as_bytes(), 4093), whole);
    }
}
