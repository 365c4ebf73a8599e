//! Byte-class masks over 64 bytes at a time, for the decoders' searches and the scanning
//! engine's block pass (digits and letters for its digit runs and lead places).
//!
//! A [`Window`] holds 64 input bytes as four 16-byte vectors (`wide`: safe portable SIMD;
//! on x86_64 the compares below are SSE2 `pcmpeqb`/`pminub`/`pmovmskb`, no target features
//! needed, no `unsafe`). Each class test returns a `u64` whose bit `k` is set when byte `k`
//! is in the class, so a decoder finds the next special byte with `trailing_zeros`, counts
//! the quotes before a backslash with `count_ones`, and passes over a window without one
//! special byte in a handful of instructions — no per-byte branch.
//!
//! What it does not do: decide anything. The decoders keep their state machines; this
//! only tells them where to look (and, for forms, swaps one byte value for another).

use wide::{i8x16, u8x16};

/// Bytes in a [`Window`].
pub(crate) const WIDTH: usize = 64;

/// 64 bytes, loaded.
#[derive(Clone, Copy)]
pub(crate) struct Window([u8x16; 4]);

/// Sets bit `k` of the result for each byte `k` of the four vectors whose high bit is set
/// (the compares below give `0xFF` or `0`).
#[inline(always)]
fn bits(v: [u8x16; 4]) -> u64 {
    u64::from(v[0].to_bitmask())
        | u64::from(v[1].to_bitmask()) << 16
        | u64::from(v[2].to_bitmask()) << 32
        | u64::from(v[3].to_bitmask()) << 48
}

#[inline(always)]
fn lane(src: &[u8], at: usize) -> u8x16 {
    let a: [u8; 16] = src[at..at + 16].try_into().expect("16 bytes");
    u8x16::new(a)
}

impl Window {
    /// The 64 bytes at `src[at..]` (there must be that many).
    #[inline(always)]
    pub(crate) fn load(src: &[u8], at: usize) -> Window {
        let src = &src[at..at + WIDTH];
        Window([lane(src, 0), lane(src, 16), lane(src, 32), lane(src, 48)])
    }

    /// Bytes equal to `c`.
    #[inline(always)]
    pub(crate) fn eq(self, c: u8) -> u64 {
        let c = u8x16::splat(c);
        bits(self.0.map(|v| v.simd_eq(c)))
    }

    /// Base64 symbols of either alphabet (`A-Z a-z 0-9 + / - _`), as
    /// [`super::base64::is_symbol`].
    #[inline(always)]
    pub(crate) fn symbols(self) -> u64 {
        bits(self.0.map(symbol_lanes))
    }

    /// Bytes that may be base64 symbols: those in `+..=z`, the range that spans the
    /// alphabets (a superset: `,.:;<=>?@[\]^` and the backtick pass too). A quick filter
    /// before [`Window::symbols`], a third of its cost: a space, a line break or a quote
    /// fails it, and prose has one every few bytes.
    #[inline(always)]
    pub(crate) fn maybe_symbols(self) -> u64 {
        bits(self.0.map(|v| in_range(v, b'+', b'z')))
    }

    /// ASCII digits.
    #[inline(always)]
    pub(crate) fn digits(self) -> u64 {
        bits(self.0.map(|v| in_range(v, b'0', b'9')))
    }

    /// Uppercase ASCII letters.
    #[inline(always)]
    pub(crate) fn upper(self) -> u64 {
        bits(self.0.map(|v| in_range(v, b'A', b'Z')))
    }

    /// Lowercase ASCII letters.
    #[inline(always)]
    pub(crate) fn lower(self) -> u64 {
        bits(self.0.map(|v| in_range(v, b'a', b'z')))
    }

    /// The same bytes with each `from` made `to` (a compare, a mask and a subtraction).
    #[inline(always)]
    pub(crate) fn replace(self, from: u8, to: u8) -> Window {
        let (from, step) = (u8x16::splat(from), u8x16::splat(from.wrapping_sub(to)));
        Window(self.0.map(|v| v - (v.simd_eq(from) & step)))
    }

    /// Writes the 64 bytes to `dst`.
    #[inline(always)]
    pub(crate) fn store(self, dst: &mut [u8; WIDTH]) {
        for (lane, v) in dst.chunks_exact_mut(16).zip(self.0) {
            lane.copy_from_slice(&v.to_array());
        }
    }
}

/// `0xFF` where `lo <= v <= hi` (a range narrower than all 256 values), in two instructions: adding `0x80 - lo` moves the range
/// to the bottom of the signed bytes (`-128 ..= -128 + hi - lo`), where one signed compare
/// tells it from everything else.
#[inline(always)]
fn in_range(v: u8x16, lo: u8, hi: u8) -> u8x16 {
    let moved: i8x16 = bytemuck::cast(v + u8x16::splat(0x80u8.wrapping_sub(lo)));
    let top = i8x16::splat(i8::MIN.wrapping_add_unsigned(hi - lo + 1));
    bytemuck::cast(moved.simd_lt(top))
}

#[inline(always)]
fn symbol_lanes(v: u8x16) -> u8x16 {
    // Letters of either case at once: `| 0x20` folds A-Z onto a-z and nothing else onto
    // a-z.
    let letter = in_range(v | u8x16::splat(0x20), b'a', b'z');
    let digit = in_range(v, b'0', b'9');
    let other = v.simd_eq(u8x16::splat(b'+'))
        | v.simd_eq(u8x16::splat(b'/'))
        | v.simd_eq(u8x16::splat(b'-'))
        | v.simd_eq(u8x16::splat(b'_'));
    letter | digit | other
}

/// The parity of a mask's bits over ranges of positions, from one prefix XOR (six shifts;
/// `count_ones` is no single instruction on baseline x86_64).
#[derive(Clone, Copy)]
pub(crate) struct Parity {
    /// Bit `k`: whether an odd number of bits lie below position `k`.
    before: u64,
    /// Whether the whole mask has an odd number of bits.
    all: bool,
}

impl Parity {
    #[inline(always)]
    pub(crate) fn new(m: u64) -> Parity {
        let mut p = m;
        p ^= p << 1;
        p ^= p << 2;
        p ^= p << 4;
        p ^= p << 8;
        p ^= p << 16;
        p ^= p << 32;
        Parity {
            before: p << 1,
            all: p >> 63 == 1,
        }
    }

    /// Whether an odd number of bits lie in positions `from..to` (`from <= to <= 64`,
    /// `from < 64`).
    #[inline(always)]
    pub(crate) fn odd(self, from: usize, to: usize) -> bool {
        let upto = if to == WIDTH {
            self.all
        } else {
            self.before >> to & 1 == 1
        };
        upto ^ (self.before >> from & 1 == 1)
    }
}

/// The bits of `m` at positions `from` and above (`from` < 64).
#[inline(always)]
pub(crate) fn from(m: u64, from: usize) -> u64 {
    m & (!0u64 << from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::base64::is_symbol;

    /// Every byte value at every position of a window: each class agrees with its scalar
    /// definition.
    #[test]
    fn classes_agree_with_the_byte_tests() {
        for shift in [0usize, 1, 63] {
            for start in (0..=255u8).step_by(WIDTH) {
                let mut data = [0u8; WIDTH + 1];
                for (k, d) in data.iter_mut().enumerate() {
                    *d = start.wrapping_add(((k + shift) % WIDTH) as u8);
                }
                let w = Window::load(&data, 0);
                let want = |f: &dyn Fn(u8) -> bool| {
                    (0..WIDTH).fold(0u64, |m, k| m | u64::from(f(data[k])) << k)
                };
                assert_eq!(w.symbols(), want(&is_symbol), "{start} {shift}");
                assert_eq!(w.digits(), want(&|b| b.is_ascii_digit()));
                assert_eq!(w.upper(), want(&|b| b.is_ascii_uppercase()));
                assert_eq!(w.lower(), want(&|b| b.is_ascii_lowercase()));
                for c in [b'"', b'\\', b'%', 0, 255] {
                    assert_eq!(w.eq(c), want(&|b| b == c), "{c}");
                }
                assert_eq!(w.maybe_symbols(), want(&|b| (b'+'..=b'z').contains(&b)));
                for (from, to) in [(b'+', b' '), (b'&', b'\n'), (0, 255), (255, 0), (7, 7)] {
                    let mut got = [0u8; WIDTH];
                    w.replace(from, to).store(&mut got);
                    let want: [u8; WIDTH] =
                        std::array::from_fn(|k| if data[k] == from { to } else { data[k] });
                    assert_eq!(got, want, "{from} {to}");
                }
                let w1 = Window::load(&data, 1);
                assert_eq!(w1.eq(data[64]) >> 63, 1);
            }
        }
    }

    #[test]
    fn the_filter_passes_every_symbol() {
        for b in 0..=255u8 {
            let data = [b; WIDTH];
            let maybe = Window::load(&data, 0).maybe_symbols();
            assert!(!is_symbol(b) || maybe == u64::MAX, "{b}");
        }
    }

    #[test]
    fn parity_of_ranges_is_the_popcount() {
        for m in [
            0u64,
            1,
            0b1011,
            1 << 63,
            u64::MAX,
            0x8000_0000_0000_0001,
            0xDEAD_BEEF_F00D_CAFE,
        ] {
            let p = Parity::new(m);
            for from in 0..WIDTH {
                for to in from..=WIDTH {
                    let bits = if to == WIDTH {
                        m >> from
                    } else {
                        (m & ((1u64 << to) - 1)) >> from
                    };
                    assert_eq!(
                        p.odd(from, to),
                        bits.count_ones() % 2 == 1,
                        "{m:x} {from} {to}"
                    );
                }
            }
        }
    }

    #[test]
    fn bit_helpers() {
        assert_eq!(from(0b1111, 2), 0b1100);
        assert_eq!(from(!0, 63), 1 << 63);
    }
}
