//! Builders for the shapes a body travels in: compressed, form-encoded, multipart, JSON,
//! base64, zip (.xlsx/.docx-like), and the bombs — all made in the test, in memory.

use std::io::Write;

use flate2::Compression;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};

/// gzip of `data`.
/// `text` as Windows saves "Unicode" text: a byte-order mark, then UTF-16 little endian
/// (Excel's "Unicode Text", Windows PowerShell's `Out-File`), or big endian.
pub fn utf16(text: &str, little_endian: bool) -> Vec<u8> {
    let mark: &[u8] = if little_endian {
        b"\xff\xfe"
    } else {
        b"\xfe\xff"
    };
    let mut out = mark.to_vec();
    for unit in text.encode_utf16() {
        let bytes = if little_endian {
            unit.to_le_bytes()
        } else {
            unit.to_be_bytes()
        };
        out.extend_from_slice(&bytes);
    }
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// zlib (`Content-Encoding: deflate` as RFC 9110 means it) of `data`.
pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Raw deflate of `data`.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Brotli of `data`.
pub fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

/// zstd of `data`.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

/// A CSV of `n` distinct customers with UTF-8 names, `~` and `>` in their notes: its
/// base64 holds many `+` symbols (raw base64 in forms, `tests/form_base64.rs`).
pub fn customers_with_plus_in_base64(n: usize) -> String {
    let mut s = String::from("id,name,email,notes\n");
    for i in 0..n {
        s.push_str(&format!(
            "{i},José Müller-{i},customer{i}@acme-corp.io,~vip~ ñ>{i}\n"
        ));
    }
    s
}

/// Standard base64 (padded).
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// URL-safe base64 without padding.
pub fn base64url(data: &[u8]) -> String {
    base64(data)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// Percent-encodes every byte outside `[A-Za-z0-9*-._]`, spaces as `+` (a browser form).
pub fn form_encode(value: &str) -> String {
    let mut out = String::new();
    for &b in value.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A JSON string literal with every `@` written as `\u0040` and every `.` as `\u002e`,
/// newlines as `\n`.
pub fn json_escaped(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '@' => out.push_str("\\u0040"),
            '.' => out.push_str("\\u002e"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The boundary [`multipart`] uses.
pub const BOUNDARY: &str = "----formdata-test-7MA4YWxkTrZu0gW";

/// One part of a [`multipart`] body: name, filename, content type, extra header lines
/// (each ending in CRLF), content.
pub type Part<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a str, &'a [u8]);

/// A `multipart/form-data` body.
pub fn multipart(parts: &[Part<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, content_type, extra, content) in parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let mut disposition = format!("Content-Disposition: form-data; name=\"{name}\"");
        if let Some(f) = filename {
            disposition.push_str(&format!("; filename=\"{f}\""));
        }
        out.extend_from_slice(format!("{disposition}\r\n").as_bytes());
        if let Some(ct) = content_type {
            out.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        out.extend_from_slice(extra.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// The `Content-Type` of a [`multipart`] body.
pub fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// How a zip entry is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZipMethod {
    /// Stored, sizes in the header.
    Stored,
    /// Deflated, sizes in the header.
    Deflated,
    /// Deflated, sizes in a data descriptor after the data (as streaming writers do).
    DeflatedWithDescriptor,
}

/// A zip archive of `(name, content)` entries, with its central directory.
pub fn zip(entries: &[(&str, &[u8])], method: ZipMethod) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, content) in entries {
        let offset = out.len() as u32;
        let crc = crc32(content);
        let (m, data) = match method {
            ZipMethod::Stored => (0u16, content.to_vec()),
            _ => (8u16, deflate(content)),
        };
        let descriptor = method == ZipMethod::DeflatedWithDescriptor;
        let flags: u16 = if descriptor { 0x0008 } else { 0 };
        let (hcrc, hc, hu) = if descriptor {
            (0, 0, 0)
        } else {
            (crc, data.len() as u32, content.len() as u32)
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&m.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&hcrc.to_le_bytes());
        out.extend_from_slice(&hc.to_le_bytes());
        out.extend_from_slice(&hu.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&data);
        if descriptor {
            out.extend_from_slice(&0x0807_4b50u32.to_le_bytes());
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(content.len() as u32).to_le_bytes());
        }
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&flags.to_le_bytes());
        central.extend_from_slice(&m.to_le_bytes());
        central.extend_from_slice(&[0, 0, 0, 0]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(content.len() as u32).to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 8]);
        central.extend_from_slice(&[0; 4]);
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                crc >> 1 ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An .xlsx-like workbook: the export's lines as shared strings, each address split
/// across two rich-text runs (as Excel writes formatted cells), `@` as `&#64;`.
pub fn xlsx(lines: &str) -> Vec<u8> {
    let mut shared = String::from("<?xml version=\"1.0\"?><sst xmlns=\"x\">");
    for line in lines.lines() {
        let (user, domain) = line.split_once('@').unwrap_or((line, ""));
        shared.push_str(&format!(
            "<si><r><t>{user}&#64;</t></r><r><t>{domain}</t></r></si>"
        ));
    }
    shared.push_str("</sst>");
    zip(
        &[
            ("[Content_Types].xml", b"<Types/>"),
            ("xl/sharedStrings.xml", shared.as_bytes()),
            (
                "xl/worksheets/sheet1.xml",
                b"<worksheet><sheetData/></worksheet>",
            ),
        ],
        ZipMethod::DeflatedWithDescriptor,
    )
}

/// gzip of `n` bytes of zeros, compressed as a stream (never held whole).
pub fn gzip_zeros(n: u64) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    let zeros = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(zeros.len() as u64) as usize;
        e.write_all(&zeros[..k]).unwrap();
        left -= k as u64;
    }
    e.finish().unwrap()
}

/// A gzip bomb of about 10 KB that expands to 10 GiB in two layers: a gzip stream whose
/// content is 640 gzip members of 16 MiB of zeros each (gzip allows concatenated members),
/// itself gzipped. Built from one member, never from the 10 GiB.
pub fn gzip_bomb_10g() -> Vec<u8> {
    let member = gzip_zeros(16 << 20);
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    for _ in 0..640 {
        e.write_all(&member).unwrap();
    }
    e.finish().unwrap()
}

/// A zip bomb: one entry of `n` bytes of zeros, deflated as a stream.
pub fn zip_bomb(n: u64) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::best());
    let zeros = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(zeros.len() as u64) as usize;
        e.write_all(&zeros[..k]).unwrap();
        left -= k as u64;
    }
    let data = e.finish().unwrap();
    let name = b"zeros.csv";
    let mut out = Vec::new();
    out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    out.extend_from_slice(&20u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&8u16.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(n.min(u64::from(u32::MAX)) as u32).to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(&data);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 18]);
    out
}

/// The end of a multipart body whose boundary is `XyZ`, after a part's data.
pub const PART_END: &[u8] = b"\r\n--XyZ--\r\n";

/// A `multipart/form-data; boundary=XyZ` file part (text/plain) with its own
/// `Content-Encoding: coding`, holding `data` (already so encoded); end it with
/// [`PART_END`].
pub fn compressed_part(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut part = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"notes.txt\"\r\n\
         Content-Type: text/plain\r\nContent-Encoding: {coding}\r\n\r\n"
    )
    .into_bytes();
    part.extend_from_slice(data);
    part
}

/// `n` bytes no compressor shrinks (xorshift from `seed`).
pub fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}
