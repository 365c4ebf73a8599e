//! WebSocket frames for the tests (RFC 6455 §5.2): building a client's masked frames and
//! reading frames back from a byte stream. Used by `proxy_websocket` and `review_s20`
//! through `#[path]`, as `tls.rs` is.

#![allow(dead_code)]

pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// A frame as a client sends it: masked with `key`.
pub fn frame(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut f = vec![u8::from(fin) << 7 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
    f
}

/// A frame read from a byte stream: (fin, opcode, unmasked payload).
pub type Frame = (bool, u8, Vec<u8>);

/// The frame at the start of `b` (masked or not) and the bytes it takes, if it is all
/// there.
pub fn first_frame(b: &[u8]) -> Option<(Frame, usize)> {
    if b.len() < 2 {
        return None;
    }
    let masked = b[1] & 0x80 != 0;
    let (len, mut size) = match b[1] & 0x7F {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (
            u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    let key = if masked {
        if b.len() < size + 4 {
            return None;
        }
        size += 4;
        [b[size - 4], b[size - 3], b[size - 2], b[size - 1]]
    } else {
        [0; 4]
    };
    if b.len() < size + len {
        return None;
    }
    let payload = b[size..size + len]
        .iter()
        .zip(key.iter().cycle())
        .map(|(x, k)| x ^ k)
        .collect();
    Some(((b[0] & 0x80 != 0, b[0] & 0x0F, payload), size + len))
}

/// The whole frames at the start of `bytes`, and how many bytes they took.
pub fn frames(bytes: &[u8]) -> (Vec<Frame>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some((f, used)) = first_frame(&bytes[at..]) {
        out.push(f);
        at += used;
    }
    (out, at)
}

/// The data messages among `frames` (continuations joined), and whether each is whole.
pub fn messages(frames: &[Frame]) -> Vec<(Vec<u8>, bool)> {
    let mut out: Vec<(Vec<u8>, bool)> = Vec::new();
    for (fin, opcode, payload) in frames {
        match *opcode {
            TEXT | BINARY => out.push((payload.clone(), *fin)),
            CONTINUATION => {
                if let Some(last) = out.last_mut() {
                    last.0.extend_from_slice(payload);
                    last.1 = *fin;
                }
            }
            _ => {}
        }
    }
    out
}
