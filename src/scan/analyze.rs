//! Static analysis of a rule's pattern: the facts the engine plans its prefilters on.
//!
//! Everything here is computed once, from the regex's high-level IR, when a rule set is
//! loaded: the longest match (the streaming overlap), the shortest, the bytes a match can
//! contain, how many digits it must hold, the longest run of consecutive digits every match
//! is guaranteed to have, and the literal prefixes every match starts with. None of it
//! looks at input.

use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Class, Hir, HirKind};

/// The longest match a rule pattern may have: the streaming engine keeps this much overlap.
pub const MAX_MATCH_LEN: usize = 4096;

/// Facts about one pattern that the engine plans on.
#[derive(Debug, Clone)]
pub struct PatternInfo {
    /// Longest possible match, in bytes (always bounded; see [`MAX_MATCH_LEN`]).
    pub max_len: usize,
    /// Shortest possible match, in bytes (at least 1).
    pub min_len: usize,
    /// Every byte value a match may contain (lookarounds excluded).
    pub allowed: ByteSet,
    /// Fewest ASCII digits any match contains.
    pub min_digits: usize,
    /// Every match contains a run of at least this many consecutive ASCII digits.
    pub min_digit_run: usize,
    /// When every match starts with one of these literals (each at least 3 bytes, at most 64 of them).
    pub prefixes: Option<Vec<Vec<u8>>>,
}

/// A set of byte values.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ByteSet([u64; 4]);

impl std::fmt::Debug for ByteSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ByteSet({} bytes)", self.len())
    }
}

impl ByteSet {
    /// The empty set.
    pub const EMPTY: ByteSet = ByteSet([0; 4]);

    /// Adds every byte in `lo..=hi`.
    pub fn add_range(&mut self, lo: u8, hi: u8) {
        for b in lo..=hi {
            self.0[usize::from(b >> 6)] |= 1 << (b & 63);
        }
    }

    /// True when `b` is in the set.
    #[inline]
    pub fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    /// Number of byte values in the set.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// True when no byte is in the set.
    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// True when every byte of the set is an ASCII digit.
    pub fn is_digits_only(&self) -> bool {
        !self.is_empty() && (0..=255u8).all(|b| !self.contains(b) || b.is_ascii_digit())
    }

    /// True when the set contains at least one ASCII digit.
    pub fn has_digit(&self) -> bool {
        (b'0'..=b'9').any(|b| self.contains(b))
    }

    fn union(&mut self, other: &ByteSet) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
    }
}

/// Parses `pattern` the way the engine compiles it: bytes, ASCII classes, no UTF-8 requirement.
pub fn parse(pattern: &str) -> Result<Hir, String> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .nest_limit(64)
        .build()
        .parse(pattern)
        .map_err(|e| e.to_string())
}

/// Analyses a pattern; an error says why it cannot be used by the streaming engine.
pub fn analyze(pattern: &str) -> Result<PatternInfo, String> {
    let hir = parse(pattern)?;
    let props = hir.properties();
    let max_len = match props.maximum_len() {
        None => {
            return Err(
                "the longest match is unbounded: use a bounded repetition like {1,64} \
                 instead of *, + or {n,}"
                    .into(),
            );
        }
        Some(n) if n > MAX_MATCH_LEN => {
            return Err(format!(
                "the longest match is {n} bytes, over the {MAX_MATCH_LEN}-byte limit"
            ));
        }
        Some(n) => n,
    };
    let min_len = props.minimum_len().unwrap_or(0);
    if min_len == 0 {
        return Err("the pattern can match the empty string".into());
    }
    let facts = Facts::of(&hir);
    Ok(PatternInfo {
        max_len,
        min_len,
        allowed: facts.allowed,
        min_digits: facts.min_digits,
        min_digit_run: facts.min_run,
        prefixes: prefixes(&hir),
    })
}

/// Literal prefixes that every match starts with, when there are few and they are long enough
/// to be a selective prefilter.
fn prefixes(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    let mut extractor = Extractor::new();
    extractor.kind(ExtractKind::Prefix).limit_total(256);
    let seq = extractor.extract(hir);
    let lits = seq.literals()?;
    if lits.is_empty() || lits.len() > 256 {
        return None;
    }
    // The prefilter is ASCII case-insensitive, so case variants collapse into one literal;
    // long literal sets (`CUST-` then a digit: ten literals) are shortened until few enough.
    let lits: Vec<Vec<u8>> = lits
        .iter()
        .map(|l| l.as_bytes().to_ascii_lowercase())
        .collect();
    let longest = lits.iter().map(Vec::len).max()?;
    for keep in (3..=longest).rev() {
        let mut out: Vec<Vec<u8>> = lits
            .iter()
            .map(|l| l[..l.len().min(keep)].to_vec())
            .collect();
        out.sort();
        out.dedup();
        if out.iter().any(|l| l.len() < 3) {
            return None;
        }
        if out.len() <= 64 {
            return Some(out);
        }
    }
    None
}

/// Bottom-up facts of one HIR node.
struct Facts {
    /// Bytes the node can match.
    allowed: ByteSet,
    /// Fewest digits the node matches.
    min_digits: usize,
    /// Lower bound on the longest run of consecutive digits in any match of the node.
    min_run: usize,
    /// When every byte the node can match is a digit: its shortest match length.
    pure_digits: Option<usize>,
}

impl Facts {
    fn of(hir: &Hir) -> Facts {
        match hir.kind() {
            HirKind::Empty | HirKind::Look(_) => Facts {
                allowed: ByteSet::EMPTY,
                min_digits: 0,
                min_run: 0,
                pure_digits: Some(0),
            },
            HirKind::Literal(lit) => {
                let mut allowed = ByteSet::EMPTY;
                let (mut run, mut best, mut digits) = (0, 0, 0);
                for &b in lit.0.iter() {
                    allowed.add_range(b, b);
                    if b.is_ascii_digit() {
                        digits += 1;
                        run += 1;
                        best = best.max(run);
                    } else {
                        run = 0;
                    }
                }
                let pure = digits == lit.0.len();
                Facts {
                    allowed,
                    min_digits: digits,
                    min_run: best,
                    pure_digits: pure.then_some(lit.0.len()),
                }
            }
            HirKind::Class(class) => {
                let mut allowed = ByteSet::EMPTY;
                match class {
                    Class::Bytes(c) => {
                        for r in c.ranges() {
                            allowed.add_range(r.start(), r.end());
                        }
                    }
                    Class::Unicode(c) => {
                        for r in c.ranges() {
                            let (lo, hi) = (u32::from(r.start()), u32::from(r.end()));
                            if lo < 0x80 {
                                allowed.add_range(lo as u8, hi.min(0x7F) as u8);
                            }
                            if hi >= 0x80 {
                                allowed.add_range(0x80, 0xFF);
                            }
                        }
                    }
                }
                let digits_only = allowed.is_digits_only();
                Facts {
                    allowed,
                    min_digits: usize::from(digits_only),
                    min_run: usize::from(digits_only),
                    pure_digits: digits_only.then_some(1),
                }
            }
            HirKind::Capture(cap) => Facts::of(&cap.sub),
            HirKind::Repetition(rep) => {
                let sub = Facts::of(&rep.sub);
                let min = rep.min as usize;
                let pure_digits = sub.pure_digits.map(|n| n * min);
                Facts {
                    allowed: sub.allowed,
                    min_digits: sub.min_digits * min,
                    min_run: match pure_digits {
                        Some(n) => n,
                        None if min > 0 => sub.min_run,
                        None => 0,
                    },
                    pure_digits,
                }
            }
            HirKind::Concat(subs) => {
                let mut allowed = ByteSet::EMPTY;
                let (mut min_digits, mut best, mut run) = (0, 0, 0);
                let mut pure_len = Some(0usize);
                for sub in subs {
                    let f = Facts::of(sub);
                    allowed.union(&f.allowed);
                    min_digits += f.min_digits;
                    best = best.max(f.min_run);
                    match f.pure_digits {
                        Some(n) => {
                            run += n;
                            best = best.max(run);
                        }
                        None => run = 0,
                    }
                    pure_len = match (pure_len, f.pure_digits) {
                        (Some(a), Some(b)) => Some(a + b),
                        _ => None,
                    };
                }
                Facts {
                    allowed,
                    min_digits,
                    min_run: best,
                    pure_digits: pure_len,
                }
            }
            HirKind::Alternation(subs) => {
                let mut allowed = ByteSet::EMPTY;
                let (mut min_digits, mut min_run) = (usize::MAX, usize::MAX);
                let mut pure = Some(usize::MAX);
                for sub in subs {
                    let f = Facts::of(sub);
                    allowed.union(&f.allowed);
                    min_digits = min_digits.min(f.min_digits);
                    min_run = min_run.min(f.min_run);
                    pure = match (pure, f.pure_digits) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        _ => None,
                    };
                }
                Facts {
                    allowed,
                    min_digits: if subs.is_empty() { 0 } else { min_digits },
                    min_run: if subs.is_empty() { 0 } else { min_run },
                    pure_digits: pure.filter(|_| !subs.is_empty()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_table() {
        // (pattern, max_len, min_len, min_digits, min_digit_run, has_prefixes)
        let cases: &[(&str, usize, usize, usize, usize, bool)] = &[
            (r"\b\d{3}-\d{2}-\d{4}\b", 11, 11, 9, 4, false),
            (r"\b(?:\d[ -]?){12,18}\d\b", 37, 13, 13, 1, false),
            (r"\d{4}[ -]?\d{4}", 9, 8, 8, 4, false),
            (r"CUST-\d{8}", 13, 13, 8, 8, true),
            (r"(?i)cust-\d{8}", 13, 13, 8, 8, true),
            (r"ab|cd", 2, 2, 0, 0, false),
            (r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", 34, 15, 2, 2, false),
            (
                r"-----BEGIN [A-Z ]{0,20}PRIVATE KEY-----",
                47,
                27,
                0,
                0,
                true,
            ),
        ];
        for &(pat, max, min, digits, run, has_prefix) in cases {
            let info = analyze(pat).unwrap_or_else(|e| panic!("{pat}: {e}"));
            assert_eq!(info.max_len, max, "{pat} max_len");
            assert_eq!(info.min_len, min, "{pat} min_len");
            assert_eq!(info.min_digits, digits, "{pat} min_digits");
            assert_eq!(info.min_digit_run, run, "{pat} min_digit_run");
            assert_eq!(info.prefixes.is_some(), has_prefix, "{pat} prefixes");
        }
    }

    #[test]
    fn refused_patterns() {
        // (pattern, part of the error)
        let cases: &[(&str, &str)] = &[
            (r"\d+", "unbounded"),
            (r"a*b", "unbounded"),
            (r"x{5000}", "over the 4096-byte limit"),
            (r"a?", "empty string"),
            (r"(", "unclosed group"),
        ];
        for &(pat, want) in cases {
            let err = analyze(pat).expect_err(pat);
            assert!(err.contains(want), "{pat}: {err}");
        }
    }

    #[test]
    fn allowed_bytes() {
        let info = analyze(r"\b\d{3}-\d{2}-\d{4}\b").unwrap();
        assert!(info.allowed.contains(b'7') && info.allowed.contains(b'-'));
        assert!(!info.allowed.contains(b'a') && !info.allowed.contains(b' '));
    }
}
