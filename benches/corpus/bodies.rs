//! The benign corpus in the request-body shapes the decode bench (`benches/decode.rs`) and
//! its callgrind driver (`examples/decode_loop.rs`) feed the pipeline: gzipped, as one
//! escaped JSON string, form-encoded, as a multipart file part; and the decompressor alone.

use std::hint::black_box;
use std::io::Write;

use flate2::{Compression, Decompress, FlushDecompress};

/// Input chunk size, as a proxy would read a body.
pub const CHUNK: usize = 64 << 10;
/// The multipart boundary of [`multipart`].
pub const BOUNDARY: &str = "----bench-boundary-5f1c";

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn json_string(data: &[u8]) -> Vec<u8> {
    let mut out = b"{\"name\":\"notes.txt\",\"content\":\"".to_vec();
    for &b in data {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'@' => out.extend_from_slice(b"\\u0040"),
            b if b < 0x20 => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            b => out.push(b),
        }
    }
    out.extend_from_slice(b"\"}");
    out
}

pub fn form(data: &[u8]) -> Vec<u8> {
    let mut out = b"name=notes.txt&content=".to_vec();
    for &b in data {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b),
            b' ' => out.push(b'+'),
            b => out.extend_from_slice(format!("%{b:02X}").as_bytes()),
        }
    }
    out
}

pub fn multipart(data: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\nContent-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// Inflates the gzip body `gz` in [`CHUNK`]-byte input chunks into the reused `buf`: the
/// decompressor's own cost. Returns the bytes produced.
pub fn inflate_only(gz: &[u8], buf: &mut [u8]) -> u64 {
    let mut d = Decompress::new_gzip(15);
    let mut total = 0u64;
    for chunk in gz.chunks(CHUNK) {
        let mut input = chunk;
        loop {
            let (i0, o0) = (d.total_in(), d.total_out());
            d.decompress(input, buf, FlushDecompress::None).unwrap();
            let used = (d.total_in() - i0) as usize;
            let produced = (d.total_out() - o0) as usize;
            total += black_box(&buf[..produced]).len() as u64;
            input = &input[used..];
            if used == 0 && produced == 0 {
                break;
            }
        }
    }
    total
}
