//! Static analysis of a rule's pattern: the facts the engine plans its prefilters on.
//!
//! Everything here is computed once, from the regex's high-level IR, when a rule set is
//! loaded: the longest match (the streaming overlap), the shortest, the bytes a match can
//! contain, how many digits it must hold, the longest run of consecutive digits every match
//! is guaranteed to have, and the literal prefixes every match starts with. None of it
//! looks at input.

use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Class, Hir, HirKind, Look};

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
    /// When every match starts with one of these literals (each at least 2 bytes, at most 16 of them).
    pub prefixes: Option<Vec<Vec<u8>>>,
    /// No match can start between two digits (it starts with `\b` or a non-digit).
    pub no_start_in_run: bool,
    /// No match can end between two digits.
    pub no_end_in_run: bool,
    /// Every match starts at an ASCII word boundary (`\b` first in every branch).
    pub leading_boundary: bool,
    /// Every match ends at an ASCII word boundary (`\b` last in every branch).
    pub trailing_boundary: bool,
    /// The longest run of consecutive digits a match can contain.
    pub max_digit_run: usize,
    /// Non-digit bytes that every match contains (each alone: a one-byte class or literal).
    pub required_bytes: Vec<u8>,
    /// Bytes a match can start with.
    pub first_bytes: ByteSet,
    /// Bytes a match can end with.
    pub last_bytes: ByteSet,
}

/// A set of byte values.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
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

    /// Adds every byte of `other`.
    pub fn union(&mut self, other: &ByteSet) {
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
        no_start_in_run: edge(&hir, End::Start, false),
        no_end_in_run: edge(&hir, End::Finish, false),
        leading_boundary: edge(&hir, End::Start, true),
        trailing_boundary: edge(&hir, End::Finish, true),
        max_digit_run: RunMax::of(&hir).best.min(max_len),
        first_bytes: end_bytes(&hir, End::Start).0,
        last_bytes: end_bytes(&hir, End::Finish).0,
        required_bytes: required(&hir)
            .into_iter()
            .filter(|b| !b.is_ascii_digit())
            .collect(),
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
    // The prefilter is exact (case-sensitive: `(?i)` patterns arrive as case variants).
    // Each literal costs the whole pack's prefilter some speed, and a short one is hit
    // often, so the set is cut to the longest length whose literal count is within
    // max(4, the fewest achievable), never under 3 bytes unless the literals are shorter:
    // `CUST-` then a digit (ten literals) becomes `CUST-`, `xox[abprs]-` then a digit
    // (fifty) becomes `xox`; the Slack webhook's six URL prefixes become four, not `htt`.
    let lits: Vec<Vec<u8>> = lits.iter().map(|l| l.as_bytes().to_vec()).collect();
    let longest = lits.iter().map(Vec::len).max()?;
    let cut = |keep: usize| {
        let mut out: Vec<Vec<u8>> = lits
            .iter()
            .map(|l| l[..l.len().min(keep)].to_vec())
            .collect();
        out.sort();
        out.dedup();
        out
    };
    let keeps = longest.min(3)..=longest;
    let fewest = keeps.clone().map(|keep| cut(keep).len()).min()?;
    let best = keeps
        .rev()
        .map(cut)
        .find(|set| set.len() <= fewest.max(4))?;
    if best.len() > 16 || best.iter().any(|l| l.len() < 2) {
        return None;
    }
    Some(best)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Start,
    Finish,
}

fn is_boundary_look(look: Look, end: End) -> bool {
    match end {
        End::Start => matches!(look, Look::WordAscii | Look::WordStartAscii),
        End::Finish => matches!(look, Look::WordAscii | Look::WordEndAscii),
    }
}

/// What a piece of pattern guarantees at one end of a match.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Edge {
    /// The property holds whenever the piece is at that end.
    Holds,
    /// The piece may match empty without asserting anything: what follows decides.
    Transparent,
    /// The property may not hold.
    Fails,
}

/// At the given end of every match: with `boundary`, a `\b` is asserted; without, the match
/// cannot begin (or finish) strictly inside a run of digits — a `\b` is asserted or the
/// first (last) byte is not a digit.
fn edge(hir: &Hir, end: End, boundary: bool) -> bool {
    edge_of(hir, end, boundary) == Edge::Holds
}

fn edge_of(hir: &Hir, end: End, boundary: bool) -> Edge {
    let holds = |ok: bool| if ok { Edge::Holds } else { Edge::Fails };
    match hir.kind() {
        HirKind::Empty => Edge::Transparent,
        HirKind::Look(look) if is_boundary_look(*look, end) => Edge::Holds,
        HirKind::Look(_) => Edge::Transparent,
        HirKind::Literal(lit) => {
            let b = if end == End::Start {
                lit.0.first()
            } else {
                lit.0.last()
            };
            holds(!boundary && b.is_some_and(|b| !b.is_ascii_digit()))
        }
        HirKind::Class(class) => holds(!boundary && !class_bytes(class).has_digit()),
        HirKind::Capture(cap) => edge_of(&cap.sub, end, boundary),
        HirKind::Repetition(rep) => match edge_of(&rep.sub, end, boundary) {
            Edge::Fails => Edge::Fails,
            _ if rep.min == 0 => Edge::Transparent,
            other => other,
        },
        HirKind::Alternation(subs) => {
            let all: Vec<Edge> = subs.iter().map(|s| edge_of(s, end, boundary)).collect();
            if all.contains(&Edge::Fails) {
                Edge::Fails
            } else if all.iter().all(|e| *e == Edge::Holds) {
                Edge::Holds
            } else {
                Edge::Transparent
            }
        }
        HirKind::Concat(subs) => {
            let mut pieces: Box<dyn Iterator<Item = &Hir>> = match end {
                End::Start => Box::new(subs.iter()),
                End::Finish => Box::new(subs.iter().rev()),
            };
            pieces
                .find_map(|sub| match edge_of(sub, end, boundary) {
                    Edge::Transparent => None,
                    decided => Some(decided),
                })
                .unwrap_or(Edge::Transparent)
        }
    }
}

/// The bytes a match can start (or end) with, and whether the piece can match empty.
fn end_bytes(hir: &Hir, end: End) -> (ByteSet, bool) {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => (ByteSet::EMPTY, true),
        HirKind::Literal(lit) => {
            let mut set = ByteSet::EMPTY;
            let b = if end == End::Start {
                lit.0.first()
            } else {
                lit.0.last()
            };
            if let Some(&b) = b {
                set.add_range(b, b);
            }
            (set, lit.0.is_empty())
        }
        HirKind::Class(class) => (class_bytes(class), false),
        HirKind::Capture(cap) => end_bytes(&cap.sub, end),
        HirKind::Repetition(rep) => {
            let (set, empty) = end_bytes(&rep.sub, end);
            (set, empty || rep.min == 0)
        }
        HirKind::Alternation(subs) => {
            let mut set = ByteSet::EMPTY;
            let mut empty = false;
            for sub in subs {
                let (s, e) = end_bytes(sub, end);
                set.union(&s);
                empty |= e;
            }
            (set, empty)
        }
        HirKind::Concat(subs) => {
            let mut set = ByteSet::EMPTY;
            let mut pieces: Box<dyn Iterator<Item = &Hir>> = match end {
                End::Start => Box::new(subs.iter()),
                End::Finish => Box::new(subs.iter().rev()),
            };
            let all_empty = pieces.all(|sub| {
                let (s, e) = end_bytes(sub, end);
                set.union(&s);
                e
            });
            (set, all_empty)
        }
    }
}

/// Bytes every match must contain.
fn required(hir: &Hir) -> Vec<u8> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => vec![],
        HirKind::Literal(lit) => {
            let mut v = lit.0.to_vec();
            v.sort_unstable();
            v.dedup();
            v
        }
        HirKind::Class(class) => {
            let allowed = class_bytes(class);
            if allowed.len() == 1 {
                (0..=255u8).filter(|&b| allowed.contains(b)).collect()
            } else {
                vec![]
            }
        }
        HirKind::Capture(cap) => required(&cap.sub),
        HirKind::Repetition(rep) if rep.min > 0 => required(&rep.sub),
        HirKind::Repetition(_) => vec![],
        HirKind::Concat(subs) => {
            let mut v: Vec<u8> = subs.iter().flat_map(required).collect();
            v.sort_unstable();
            v.dedup();
            v
        }
        HirKind::Alternation(subs) => {
            let mut sets = subs.iter().map(required);
            let first = sets.next().unwrap_or_default();
            sets.fold(first, |acc, s| {
                acc.into_iter().filter(|b| s.contains(b)).collect()
            })
        }
    }
}

/// Upper bounds on runs of consecutive digits in the matches of one node.
struct RunMax {
    /// Longest all-digit string the node can match (`Some(0)`: it can match empty).
    pure: Option<usize>,
    /// Longest digit run at the start of a match.
    pre: usize,
    /// Longest digit run at the end of a match.
    suf: usize,
    /// Longest digit run anywhere in a match.
    best: usize,
}

impl RunMax {
    fn of(hir: &Hir) -> RunMax {
        match hir.kind() {
            HirKind::Empty | HirKind::Look(_) => RunMax {
                pure: Some(0),
                pre: 0,
                suf: 0,
                best: 0,
            },
            HirKind::Literal(lit) => {
                let bytes = &lit.0;
                let pre = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
                let suf = bytes
                    .iter()
                    .rev()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                let best = bytes
                    .split(|b| !b.is_ascii_digit())
                    .map(<[u8]>::len)
                    .max()
                    .unwrap_or(0);
                RunMax {
                    pure: (pre == bytes.len()).then_some(bytes.len()),
                    pre,
                    suf,
                    best,
                }
            }
            HirKind::Class(class) => {
                let d = usize::from(class_bytes(class).has_digit());
                RunMax {
                    pure: (d == 1).then_some(1),
                    pre: d,
                    suf: d,
                    best: d,
                }
            }
            HirKind::Capture(cap) => RunMax::of(&cap.sub),
            HirKind::Repetition(rep) => {
                let sub = RunMax::of(&rep.sub);
                let max = rep.max.unwrap_or(rep.min) as usize;
                if max == 0 {
                    return RunMax {
                        pure: Some(0),
                        pre: 0,
                        suf: 0,
                        best: 0,
                    };
                }
                match sub.pure {
                    Some(p) => RunMax {
                        pure: Some(p * max),
                        pre: p * (max - 1) + sub.pre,
                        suf: p * (max - 1) + sub.suf,
                        best: sub.best.max(sub.suf + p * max.saturating_sub(2) + sub.pre),
                    },
                    None => RunMax {
                        pure: if rep.min == 0 { Some(0) } else { None },
                        pre: sub.pre,
                        suf: sub.suf,
                        best: if max >= 2 {
                            sub.best.max(sub.suf + sub.pre)
                        } else {
                            sub.best
                        },
                    },
                }
            }
            HirKind::Concat(subs) => {
                let mut acc = RunMax {
                    pure: Some(0),
                    pre: 0,
                    suf: 0,
                    best: 0,
                };
                for sub in subs {
                    let b = RunMax::of(sub);
                    acc = RunMax {
                        best: acc.best.max(b.best).max(acc.suf + b.pre),
                        pre: match acc.pure {
                            Some(n) => acc.pre.max(n + b.pre),
                            None => acc.pre,
                        },
                        suf: match b.pure {
                            Some(n) => b.suf.max(acc.suf + n),
                            None => b.suf,
                        },
                        pure: match (acc.pure, b.pure) {
                            (Some(x), Some(y)) => Some(x + y),
                            _ => None,
                        },
                    };
                }
                acc
            }
            HirKind::Alternation(subs) => {
                let all: Vec<RunMax> = subs.iter().map(RunMax::of).collect();
                RunMax {
                    pure: all.iter().filter_map(|r| r.pure).max(),
                    pre: all.iter().map(|r| r.pre).max().unwrap_or(0),
                    suf: all.iter().map(|r| r.suf).max().unwrap_or(0),
                    best: all.iter().map(|r| r.best).max().unwrap_or(0),
                }
            }
        }
    }
}

/// The bytes a class matches (a Unicode class above ASCII counts as every byte >= 0x80).
fn class_bytes(class: &Class) -> ByteSet {
    let mut set = ByteSet::EMPTY;
    match class {
        Class::Bytes(c) => {
            for r in c.ranges() {
                set.add_range(r.start(), r.end());
            }
        }
        Class::Unicode(c) => {
            for r in c.ranges() {
                let (lo, hi) = (u32::from(r.start()), u32::from(r.end()));
                if lo < 0x80 {
                    set.add_range(lo as u8, hi.min(0x7F) as u8);
                }
                if hi >= 0x80 {
                    set.add_range(0x80, 0xFF);
                }
            }
        }
    }
    set
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
                let allowed = class_bytes(class);
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
            (r"ab|cd", 2, 2, 0, 0, true),
            (r"a|cd", 2, 1, 0, 0, false),
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
    fn edges_runs_and_required_bytes() {
        // (pattern, no_start_in_run, no_end_in_run, leading \b, trailing \b, max_digit_run, required)
        type Case = (&'static str, bool, bool, bool, bool, usize, &'static [u8]);
        let cases: &[Case] = &[
            (r"\b\d{3}-\d{2}-\d{4}\b", true, true, true, true, 4, b"-"),
            (r"\d{3}-\d{2}-\d{4}", false, false, false, false, 4, b"-"),
            (
                r"\b(?:\d{9}|\d{3} \d{2} \d{4})\b",
                true,
                true,
                true,
                true,
                9,
                b"",
            ),
            (
                r"\B\+[1-9](?:[ -]?\d){7,14}\b",
                true,
                true,
                false,
                true,
                15,
                b"+",
            ),
            (
                r"(?:\+1[ .-]?)?\(\d{3}\) ?\d{3}-\d{4}\b",
                true,
                true,
                false,
                true,
                4,
                b"()-",
            ),
            (
                r"(?:1[ .-])?\b\d{3}-\d{4}\b",
                false,
                true,
                false,
                true,
                4,
                b"-",
            ),
            (r"\b(?:\d[ -]?){12,18}\d\b", true, true, true, true, 19, b""),
            (
                r"\B\d{2}(?: \d{4}){3}|\b\d{16}\b",
                false,
                false,
                false,
                false,
                16,
                b"",
            ),
            (r"\b[A-Z]{2}\d{6}[A-D]\b", true, true, true, true, 6, b""),
            (
                r"(?:\B\+|\b)1 [2-9]\d{2}\b",
                true,
                true,
                false,
                true,
                3,
                b" ",
            ),
        ];
        for &(pat, ns, ne, lb, tb, run, req) in cases {
            let info = analyze(pat).unwrap();
            assert_eq!(
                (
                    info.no_start_in_run,
                    info.no_end_in_run,
                    info.leading_boundary,
                    info.trailing_boundary
                ),
                (ns, ne, lb, tb),
                "{pat} edges"
            );
            assert_eq!(info.max_digit_run, run, "{pat} max_digit_run");
            assert_eq!(info.required_bytes, req, "{pat} required");
        }
    }

    #[test]
    fn first_and_last_bytes() {
        let info = analyze(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}\b").unwrap();
        assert!(info.first_bytes.contains(b'G') && !info.first_bytes.has_digit());
        assert!(info.last_bytes.has_digit() && info.last_bytes.contains(b'Z'));
        let info = analyze(r"(?:\+1 ?)?\(\d{3}\) \d{3}-\d{4}").unwrap();
        assert!(info.first_bytes.contains(b'+') && info.first_bytes.contains(b'('));
        assert!(!info.first_bytes.has_digit());
        assert_eq!(info.last_bytes.len(), 10);
    }

    #[test]
    fn allowed_bytes() {
        let info = analyze(r"\b\d{3}-\d{2}-\d{4}\b").unwrap();
        assert!(info.allowed.contains(b'7') && info.allowed.contains(b'-'));
        assert!(!info.allowed.contains(b'a') && !info.allowed.contains(b' '));
    }
}
