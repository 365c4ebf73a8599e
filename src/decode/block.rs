//! Word-at-a-time byte search for the unescaping decoders (JSON strings, forms): the
//! last bytes of a piece, after the 64-byte windows of `mask` have taken what they can.
//!
//! Mostly-plain text is copied a fixed-size block at a time while its bytes are checked
//! eight at a time (as a `u64`, no `unsafe`, no target features) for the special ones (`"`
//! and `\`, or `%`). A decoder copies a whole block to its output before it knows where
//! the first special byte is, then advances its input and output by the plain prefix only,
//! so the bytes after the special one are simply written again on the next step. That
//! needs nothing of the output but room for a block past the write position, which the
//! decoders reserve.
//!
//! This replaces a `memchr` call per special byte: in dense text (JSON telemetry inside a
//! string, a form-encoded document) one comes every few bytes, and a call's setup cost
//! then outweighs its search.

/// Bytes looked at per step.
pub(crate) const BLOCK: usize = 32;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` equal to `c`; only the lowest set bit is exact (a
/// borrow may mark the byte just above a match), which is all a search needs.
#[inline(always)]
pub(crate) fn first_eq(word: u64, c: u8) -> u64 {
    let y = word ^ (ONES * u64::from(c));
    y.wrapping_sub(ONES) & !y & HIGHS
}

/// The eight bytes at `src[at..]`, first byte lowest.
#[inline(always)]
pub(crate) fn word(src: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(src[at..at + 8].try_into().expect("eight bytes"))
}

/// Copies `src[..BLOCK]` to `dst[..BLOCK]`; returns the index of the first byte equal to
/// `a` or `b`, or [`BLOCK`] when there is none.
#[inline(always)]
pub(crate) fn copy_find2(src: &[u8], dst: &mut [u8], a: u8, b: u8) -> usize {
    dst[..BLOCK].copy_from_slice(&src[..BLOCK]);
    for at in (0..BLOCK).step_by(8) {
        let w = word(src, at);
        let m = first_eq(w, a) | first_eq(w, b);
        if m != 0 {
            return at + m.trailing_zeros() as usize / 8;
        }
    }
    BLOCK
}

/// A form byte outside an escape: `+` is a space, `&` a tab: fields apart, and a base64 run
/// ends there (a line break would let it go on into the next field as a wrapped line: found
/// in review).
#[inline(always)]
pub(crate) fn form_byte(c: u8) -> u8 {
    match c {
        b'+' => b' ',
        b'&' => b'\t',
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_special_byte_and_copies_the_block() {
        let base = [b'x'; BLOCK];
        let mut dst = [0u8; BLOCK];
        assert_eq!(copy_find2(&base, &mut dst, b'"', b'\\'), BLOCK);
        assert_eq!(dst, base);
        // Every position, each of the two bytes, with a byte one above it just after
        // (a borrow must not mark it first).
        for at in 0..BLOCK {
            for c in [b'"', b'\\'] {
                let mut src = base;
                src[at] = c;
                if at + 1 < BLOCK {
                    src[at + 1] = c + 1;
                }
                if at + 2 < BLOCK {
                    src[at + 2] = c;
                }
                assert_eq!(copy_find2(&src, &mut dst, b'"', b'\\'), at, "{at} {c}");
                assert_eq!(dst, src);
            }
        }
    }
}
