//! Exact data match: an index of the company's own customer records, as keyed hashes.
//!
//! `egress-dlp edm build` reads a customer CSV, takes the columns asked for by name,
//! normalises each value the way the rule that detects it does (an email lowercased, a
//! phone to its digits) and writes, per column, the sorted 64-bit keyed hashes of the
//! values with the id (row number) of the record each came from. The index holds no
//! plaintext; the key is a separate file ([`EdmKey`]), so the index alone cannot be
//! brute-forced for "is alice@example.com a customer?".
//!
//! A rule with `edm: {field: email}` then counts only values the index holds in that
//! column, so thresholds count real customers, not anything shaped like an email; with
//! `near: [phone]` a value counts only when the same record's phone is matched close by.
//! The engine reaches the index through [`ExactIndex`].
//!
//! The hash is SipHash-2-4 (a keyed pseudo-random function made for short inputs) over the
//! column name, a zero byte and the normalised value, under a 128-bit key derived from the
//! key file's 256-bit secret with HMAC-SHA256. It is 64 bits wide: with ten million values
//! a random non-customer value collides with one of them about once in 10^12 lookups. It
//! costs tens of nanoseconds per lookup, so EDM barely slows a dense scan.
//!
//! # File format (version 1, little-endian)
//!
//! ```text
//! "EGDLPEDM"  u32 version  [u8; 8] key id  u32 records  u16 columns
//! per column:  u16 name length, name (UTF-8), u64 entries
//! per column:  [u64; entries] hashes, sorted   [u32; entries] record ids
//! ```
//!
//! The key id (the first 8 bytes of the key's HMAC of a fixed label) lets loading refuse
//! an index built with another key, instead of silently matching nothing. Loading checks
//! every length against the file, that hashes are sorted and record ids in range: a
//! truncated or corrupt index is an error, never a half-loaded table.
//!
//! No I/O here beyond the readers and writers the caller passes.

use std::io::{self, BufRead, Read, Write};

use std::hash::Hasher;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use siphasher::sip::SipHasher24;

use crate::scan::Normalize;
use crate::scan::analyze::MAX_MATCH_LEN;
use crate::scan::exact::{ExactIndex, MAX_RECORDS_PER_VALUE};

const MAGIC: &[u8; 8] = b"EGDLPEDM";
const VERSION: u32 = 1;
/// Label the key id is the HMAC of.
const KEY_ID_LABEL: &[u8] = b"egress-dlp edm key id";
/// Label the value-hash key is the HMAC of.
const HASH_KEY_LABEL: &[u8] = b"egress-dlp edm value hash key";
/// Most columns an index may have.
pub const MAX_COLUMNS: usize = 64;
/// Most records an index may have (record ids are `u32`).
pub const MAX_RECORDS: u64 = u32::MAX as u64;
/// Bytes of a key file's secret.
pub const KEY_BYTES: usize = 32;
/// About this many entries share a bucket of the lookup table: a lookup reads one bucket
/// bound and then one or two cache lines of hashes.
const ENTRIES_PER_BUCKET: usize = 8;

/// A problem building, reading or using an index.
#[derive(Debug, thiserror::Error)]
pub enum EdmError {
    /// The input could not be read or the output written.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The CSV is malformed or lacks a column.
    #[error("CSV: {0}")]
    Csv(String),
    /// The index file is not a valid index.
    #[error("index: {0}")]
    Corrupt(String),
    /// The index was built with another key.
    #[error("index was built with another key (key id {index}, the key file's is {key})")]
    WrongKey {
        /// The index's key id, hex.
        index: String,
        /// The key's id, hex.
        key: String,
    },
    /// The key file is not a key.
    #[error("key: {0}")]
    Key(String),
}

/// The secret the index's hashes are keyed with. Kept in its own file (mode 0600), apart
/// from the index.
#[derive(Clone)]
pub struct EdmKey {
    hash_key: [u64; 2],
    id: [u8; 8],
}

impl std::fmt::Debug for EdmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EdmKey({})", hex(&self.id))
    }
}

impl EdmKey {
    /// A key from its secret bytes.
    pub fn from_secret(secret: &[u8; KEY_BYTES]) -> EdmKey {
        let mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        let derive = |label: &[u8]| {
            let mut m = mac.clone();
            m.update(label);
            m.finalize().into_bytes()
        };
        let mut id = [0; 8];
        id.copy_from_slice(&derive(KEY_ID_LABEL)[..8]);
        let hash = derive(HASH_KEY_LABEL);
        let word = |i: usize| u64::from_le_bytes(hash[i..i + 8].try_into().expect("eight bytes"));
        EdmKey {
            hash_key: [word(0), word(8)],
            id,
        }
    }

    /// Parses a key file: the secret as 64 hex digits on one line.
    pub fn parse(text: &str) -> Result<EdmKey, EdmError> {
        let text = text.trim();
        if text.len() != KEY_BYTES * 2 {
            return Err(EdmError::Key(format!(
                "expected {} hex digits, found {} characters",
                KEY_BYTES * 2,
                text.len()
            )));
        }
        let mut secret = [0u8; KEY_BYTES];
        for (i, byte) in secret.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16)
                .map_err(|_| EdmError::Key("not hex".into()))?;
        }
        Ok(EdmKey::from_secret(&secret))
    }

    /// The text of a key file for `secret`.
    pub fn file_text(secret: &[u8; KEY_BYTES]) -> String {
        format!("{}\n", hex(secret))
    }

    /// The key's id, as written in indexes built with it.
    pub fn id(&self) -> [u8; 8] {
        self.id
    }

    /// The keyed hash of a normalised value of `column`.
    pub fn hash(&self, column: &str, normalized: &[u8]) -> u64 {
        let mut h = SipHasher24::new_with_keys(self.hash_key[0], self.hash_key[1]);
        h.write(column.as_bytes());
        h.write(&[0]);
        h.write(normalized);
        h.finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One column of the index.
#[derive(Debug)]
struct Column {
    name: String,
    /// Sorted.
    hashes: Vec<u64>,
    /// `records[i]` holds `hashes[i]`.
    records: Vec<u32>,
    /// `buckets[b]..buckets[b + 1]`: the entries whose hash's top `bits` bits are `b`.
    buckets: Vec<u32>,
    bits: u32,
}

impl Column {
    fn new(name: String, mut entries: Vec<(u64, u32)>) -> Column {
        entries.sort_unstable();
        entries.dedup();
        let (hashes, records) = entries.into_iter().unzip();
        Column::from_sorted(name, hashes, records)
    }

    fn from_sorted(name: String, hashes: Vec<u64>, records: Vec<u32>) -> Column {
        let bits = (hashes.len() / ENTRIES_PER_BUCKET)
            .max(1)
            .ilog2()
            .clamp(4, 26);
        let mut buckets = Vec::with_capacity((1 << bits) + 1);
        let mut at = 0usize;
        for b in 0..(1u64 << bits) {
            while at < hashes.len() && hashes[at] >> (64 - bits) < b {
                at += 1;
            }
            buckets.push(at as u32);
        }
        buckets.push(hashes.len() as u32);
        Column {
            name,
            hashes,
            records,
            buckets,
            bits,
        }
    }

    fn lookup(&self, hash: u64, out: &mut Vec<u32>) {
        let b = (hash >> (64 - self.bits)) as usize;
        let (lo, hi) = (self.buckets[b] as usize, self.buckets[b + 1] as usize);
        let slice = &self.hashes[lo..hi];
        let first = slice.partition_point(|&h| h < hash);
        for i in lo + first..hi {
            if self.hashes[i] != hash || out.len() >= MAX_RECORDS_PER_VALUE {
                break;
            }
            out.push(self.records[i]);
        }
    }
}

/// A loaded exact-data-match index: per column, the keyed hashes of the customer table's
/// values and the records they belong to.
#[derive(Debug)]
pub struct EdmIndex {
    key: EdmKey,
    records: u32,
    columns: Vec<Column>,
}

/// A column to take from the CSV and how to normalise its values.
#[derive(Debug, Clone)]
pub struct ColumnSpec {
    /// The CSV header name.
    pub name: String,
    /// The normalisation of the rule that detects this column's values.
    pub normalize: Normalize,
}

/// What [`EdmIndex::build`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildStats {
    /// Data rows read.
    pub records: u32,
    /// Per column: non-empty values indexed.
    pub values: Vec<(String, u64)>,
}

impl EdmIndex {
    /// Builds an index from a CSV with a header row, taking `columns` by header name.
    /// Empty cells are skipped; rows with too few cells are an error with their line.
    pub fn build(
        csv_input: impl Read,
        columns: &[ColumnSpec],
        key: &EdmKey,
    ) -> Result<(EdmIndex, BuildStats), EdmError> {
        if columns.is_empty() || columns.len() > MAX_COLUMNS {
            return Err(EdmError::Csv(format!("choose 1-{MAX_COLUMNS} columns")));
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(csv_input);
        let headers = reader
            .headers()
            .map_err(|e| EdmError::Csv(e.to_string()))?
            .clone();
        let mut positions = Vec::new();
        let mut missing = Vec::new();
        for (i, spec) in columns.iter().enumerate() {
            if columns[..i].iter().any(|c| c.name == spec.name) {
                return Err(EdmError::Csv(format!("column {} chosen twice", spec.name)));
            }
            // A name the header holds twice is ambiguous: which column is meant?
            let mut at = headers
                .iter()
                .enumerate()
                .filter(|(_, h)| h.trim() == spec.name);
            match (at.next(), at.next()) {
                (Some((p, _)), None) => positions.push(p),
                (Some(_), Some(_)) => {
                    return Err(EdmError::Csv(format!(
                        "the header names column {} more than once",
                        spec.name
                    )));
                }
                (None, _) => missing.push(spec.name.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(EdmError::Csv(format!(
                "no column {} in the header (it has: {})",
                missing.join(", "),
                headers.iter().collect::<Vec<_>>().join(", ")
            )));
        }
        let mut entries: Vec<Vec<(u64, u32)>> = vec![Vec::new(); columns.len()];
        let mut record = csv::ByteRecord::new();
        let mut norm = Vec::new();
        let mut records: u64 = 0;
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Err(EdmError::Csv(e.to_string())),
            }
            if records >= MAX_RECORDS {
                return Err(EdmError::Csv(format!("more than {MAX_RECORDS} records")));
            }
            let id = records as u32;
            records += 1;
            for ((spec, &p), out) in columns.iter().zip(&positions).zip(&mut entries) {
                let cell = trim(record.get(p).unwrap_or_default());
                let line = record.position().map_or(0, |at| at.line());
                // A value no rule can match is a broken table, not data to index (found
                // in review: an unclosed quote made the rest of the file one cell).
                if cell.len() > MAX_MATCH_LEN {
                    return Err(EdmError::Csv(format!(
                        "line {line}: the {} cell is {} bytes, longer than any value a rule \
                         matches ({MAX_MATCH_LEN} at most)",
                        spec.name,
                        cell.len()
                    )));
                }
                if cell.iter().any(|&b| b == b'\n' || b == b'\r') {
                    return Err(EdmError::Csv(format!(
                        "line {line}: the {} cell holds a line break, which no matched value \
                         does (an unclosed quote?)",
                        spec.name
                    )));
                }
                spec.normalize.apply(cell, &mut norm);
                if !norm.is_empty() {
                    out.push((key.hash(&spec.name, &norm), id));
                }
            }
        }
        let values = columns
            .iter()
            .zip(&entries)
            .map(|(c, e)| (c.name.clone(), e.len() as u64))
            .collect();
        let columns = columns
            .iter()
            .zip(entries)
            .map(|(spec, e)| Column::new(spec.name.clone(), e))
            .collect();
        let index = EdmIndex {
            key: key.clone(),
            records: records as u32,
            columns,
        };
        Ok((
            index,
            BuildStats {
                records: records as u32,
                values,
            },
        ))
    }

    /// Records in the table the index was built from.
    pub fn record_count(&self) -> u32 {
        self.records
    }

    /// Column names, in index order.
    pub fn columns(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// Entries (hashed values) across all columns.
    pub fn entries(&self) -> u64 {
        self.columns.iter().map(|c| c.hashes.len() as u64).sum()
    }

    /// Writes the index file.
    pub fn write_to(&self, mut out: impl Write) -> io::Result<()> {
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&self.key.id)?;
        out.write_all(&self.records.to_le_bytes())?;
        out.write_all(&(self.columns.len() as u16).to_le_bytes())?;
        for c in &self.columns {
            out.write_all(&(c.name.len() as u16).to_le_bytes())?;
            out.write_all(c.name.as_bytes())?;
            out.write_all(&(c.hashes.len() as u64).to_le_bytes())?;
        }
        let mut buf = Vec::with_capacity(1 << 16);
        for c in &self.columns {
            for chunk in c.hashes.chunks(8192) {
                buf.clear();
                chunk
                    .iter()
                    .for_each(|h| buf.extend_from_slice(&h.to_le_bytes()));
                out.write_all(&buf)?;
            }
            for chunk in c.records.chunks(8192) {
                buf.clear();
                chunk
                    .iter()
                    .for_each(|r| buf.extend_from_slice(&r.to_le_bytes()));
                out.write_all(&buf)?;
            }
        }
        out.flush()
    }

    /// Reads an index file of `file_len` bytes, checking it against `key` and every length
    /// against the file. Memory: the entries themselves, read straight into place.
    pub fn read_from(input: impl Read, file_len: u64, key: &EdmKey) -> Result<EdmIndex, EdmError> {
        let mut input = io::BufReader::with_capacity(1 << 20, input);
        let corrupt = |m: &str| EdmError::Corrupt(m.to_owned());
        let mut magic = [0u8; 8];
        read_exact(&mut input, &mut magic)?;
        if &magic != MAGIC {
            return Err(corrupt("not an egress-dlp EDM index (bad magic)"));
        }
        let version = u32::from_le_bytes(read_array(&mut input)?);
        if version != VERSION {
            return Err(EdmError::Corrupt(format!(
                "version {version}, this build reads version {VERSION}"
            )));
        }
        let key_id: [u8; 8] = read_array(&mut input)?;
        if key_id != key.id {
            return Err(EdmError::WrongKey {
                index: hex(&key_id),
                key: hex(&key.id),
            });
        }
        let records = u32::from_le_bytes(read_array(&mut input)?);
        let ncols = u16::from_le_bytes(read_array(&mut input)?) as usize;
        if ncols == 0 || ncols > MAX_COLUMNS {
            return Err(corrupt("bad column count"));
        }
        let mut header_len = 8 + 4 + 8 + 4 + 2;
        let mut heads = Vec::with_capacity(ncols);
        for _ in 0..ncols {
            let len = u16::from_le_bytes(read_array(&mut input)?) as usize;
            if len == 0 || len > 64 {
                return Err(corrupt("bad column name length"));
            }
            let mut name = vec![0u8; len];
            read_exact(&mut input, &mut name)?;
            let name = String::from_utf8(name).map_err(|_| corrupt("column name not UTF-8"))?;
            let entries = u64::from_le_bytes(read_array(&mut input)?);
            header_len += 2 + len as u64 + 8;
            heads.push((name, entries));
        }
        let body: u64 = heads
            .iter()
            .try_fold(0u64, |acc, (_, n)| acc.checked_add(n.checked_mul(12)?))
            .ok_or_else(|| corrupt("entry counts overflow"))?;
        if header_len.checked_add(body) != Some(file_len) {
            return Err(EdmError::Corrupt(format!(
                "file is {file_len} bytes, its header says {}",
                header_len.saturating_add(body)
            )));
        }
        let mut columns = Vec::with_capacity(ncols);
        let mut chunk = vec![0u8; 1 << 16];
        for (name, entries) in heads {
            let n = entries as usize;
            let mut hashes = Vec::with_capacity(n);
            read_words(&mut input, n, 8, &mut chunk, |w| {
                hashes.push(u64::from_le_bytes(w.try_into().expect("eight bytes")))
            })?;
            if hashes.windows(2).any(|w| w[0] > w[1]) {
                return Err(EdmError::Corrupt(format!(
                    "column {name}: hashes not sorted"
                )));
            }
            let mut ids = Vec::with_capacity(n);
            read_words(&mut input, n, 4, &mut chunk, |w| {
                ids.push(u32::from_le_bytes(w.try_into().expect("four bytes")))
            })?;
            if ids.iter().any(|&r| r >= records) {
                return Err(EdmError::Corrupt(format!(
                    "column {name}: record id out of range"
                )));
            }
            columns.push(Column::from_sorted(name, hashes, ids));
        }
        Ok(EdmIndex {
            key: key.clone(),
            records,
            columns,
        })
    }
}

impl ExactIndex for EdmIndex {
    fn field(&self, name: &str) -> Option<u16> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .map(|p| p as u16)
    }

    fn records(&self, field: u16, normalized: &[u8], out: &mut Vec<u32>) {
        if let Some(c) = self.columns.get(usize::from(field)) {
            c.lookup(self.key.hash(&c.name, normalized), out);
        }
    }
}

fn trim(cell: &[u8]) -> &[u8] {
    let start = cell.iter().position(|b| !b.is_ascii_whitespace());
    let end = cell.iter().rposition(|b| !b.is_ascii_whitespace());
    match (start, end) {
        (Some(s), Some(e)) => &cell[s..=e],
        _ => &[],
    }
}

fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<(), EdmError> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            EdmError::Corrupt("truncated".into())
        } else {
            EdmError::Io(e)
        }
    })
}

fn read_array<const N: usize>(input: &mut impl Read) -> Result<[u8; N], EdmError> {
    let mut buf = [0u8; N];
    read_exact(input, &mut buf)?;
    Ok(buf)
}

/// Reads `n` words of `width` bytes, handing each to `f`, through `chunk`.
fn read_words(
    input: &mut impl BufRead,
    n: usize,
    width: usize,
    chunk: &mut [u8],
    mut f: impl FnMut(&[u8]),
) -> Result<(), EdmError> {
    let per = chunk.len() / width;
    let mut left = n;
    while left > 0 {
        let take = left.min(per);
        let buf = &mut chunk[..take * width];
        read_exact(input, buf)?;
        buf.chunks_exact(width).for_each(&mut f);
        left -= take;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> EdmKey {
        EdmKey::from_secret(&[7; KEY_BYTES])
    }

    fn specs() -> Vec<ColumnSpec> {
        vec![
            ColumnSpec {
                name: "email".into(),
                normalize: Normalize::Lowercase,
            },
            ColumnSpec {
                name: "phone".into(),
                normalize: Normalize::Digits,
            },
        ]
    }

    const CSV: &str = "id,email,phone\n1, Alice@Acme.io ,+1 415 555 0100\n2,bob@acme.io,\n3,carol@acme.io,(415) 555-0199\n";

    fn lookup(index: &EdmIndex, column: &str, value: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        index.records(index.field(column).unwrap(), value, &mut out);
        out
    }

    #[test]
    fn builds_and_looks_up_normalised_values() {
        let (index, stats) = EdmIndex::build(CSV.as_bytes(), &specs(), &key()).unwrap();
        assert_eq!(stats.records, 3);
        assert_eq!(stats.values, vec![("email".into(), 3), ("phone".into(), 2)]);
        assert_eq!(lookup(&index, "email", b"alice@acme.io"), vec![0]);
        assert_eq!(lookup(&index, "email", b"carol@acme.io"), vec![2]);
        assert_eq!(lookup(&index, "phone", b"14155550100"), vec![0]);
        assert!(lookup(&index, "email", b"mallory@acme.io").is_empty());
        // Columns are hashed apart: an email is not found in the phone column.
        assert!(lookup(&index, "phone", b"alice@acme.io").is_empty());
    }

    #[test]
    fn round_trips_through_the_file_format_without_plaintext() {
        let (index, _) = EdmIndex::build(CSV.as_bytes(), &specs(), &key()).unwrap();
        let mut file = Vec::new();
        index.write_to(&mut file).unwrap();
        assert!(!file.windows(5).any(|w| w == b"alice" || w == b"acme."));
        let back = EdmIndex::read_from(file.as_slice(), file.len() as u64, &key()).unwrap();
        assert_eq!(back.record_count(), 3);
        assert_eq!(back.columns(), vec!["email", "phone"]);
        assert_eq!(lookup(&back, "email", b"bob@acme.io"), vec![1]);
    }

    #[test]
    fn refuses_another_key_and_corrupt_files() {
        let (index, _) = EdmIndex::build(CSV.as_bytes(), &specs(), &key()).unwrap();
        let mut file = Vec::new();
        index.write_to(&mut file).unwrap();
        let other = EdmKey::from_secret(&[8; KEY_BYTES]);
        let err = EdmIndex::read_from(file.as_slice(), file.len() as u64, &other).unwrap_err();
        assert!(matches!(err, EdmError::WrongKey { .. }), "{err}");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", file[..file.len() - 3].to_vec()),
            ("bad magic", [b"XXXXXXXX", &file[8..]].concat()),
            ("empty", Vec::new()),
            ("trailing bytes", [file.as_slice(), b"junk"].concat()),
        ];
        for (what, bytes) in cases {
            let err = EdmIndex::read_from(bytes.as_slice(), bytes.len() as u64, &key());
            assert!(matches!(err, Err(EdmError::Corrupt(_))), "{what}: {err:?}");
        }
        // Unsorted hashes: swap the first column's first two entries.
        let header = 8 + 4 + 8 + 4 + 2 + (2 + 5 + 8) + (2 + 5 + 8);
        let mut swapped = file.clone();
        let (a, b) = (header, header + 8);
        let first: Vec<u8> = swapped[a..a + 8].to_vec();
        let second: Vec<u8> = swapped[b..b + 8].to_vec();
        swapped[a..a + 8].copy_from_slice(&second);
        swapped[b..b + 8].copy_from_slice(&first);
        let err = EdmIndex::read_from(swapped.as_slice(), swapped.len() as u64, &key());
        assert!(matches!(err, Err(EdmError::Corrupt(_))), "{err:?}");
    }

    #[test]
    fn bad_csv_is_reported_with_its_place() {
        let missing = EdmIndex::build("id,mail\n1,a@b.io\n".as_bytes(), &specs(), &key());
        assert!(
            matches!(&missing, Err(EdmError::Csv(m)) if m.contains("no column email, phone")),
            "{missing:?}"
        );
        let ragged = EdmIndex::build(
            "email,phone\na@b.io,1\nc@d.io\n".as_bytes(),
            &specs(),
            &key(),
        );
        assert!(
            matches!(&ragged, Err(EdmError::Csv(m)) if m.contains("line: 3")),
            "{ragged:?}"
        );
    }

    #[test]
    fn key_files_parse_and_reject_garbage() {
        let text = EdmKey::file_text(&[0xab; KEY_BYTES]);
        let parsed = EdmKey::parse(&text).unwrap();
        assert_eq!(parsed.id(), EdmKey::from_secret(&[0xab; KEY_BYTES]).id());
        assert!(EdmKey::parse("abc").is_err());
        assert!(EdmKey::parse(&"zz".repeat(KEY_BYTES)).is_err());
    }
}
