//! Finding every position where one of a set of literals starts, fast.
//!
//! The set is made prefix-closed first (a literal that starts with another literal of the
//! set is folded into the shorter one, keeping its own uses and length), so at most one
//! literal starts at any position and a leftmost-first search that resumes one byte after
//! each hit reports every start. The searcher is the fastest that fits the set: `memchr`
//! for literals of one or two bytes starting with at most three distinct bytes,
//! Aho-Corasick (its SIMD Teddy prefilter) over the first bytes of each literal for exact
//! literals and for every case variant of short case-insensitive keys, and Aho-Corasick
//! over a lowercased copy of the haystack for case-insensitive sets with too many variants.
//! Exact and case-insensitive literals can share one set (one pass).

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// Bytes of each literal the searcher looks for (see [`LiteralSet::new`]).
const MAX_KEY: usize = 8;

/// Keys sharing at least this many first bytes are looked for as one (see
/// [`merge_shared`]).
const MIN_SHARED: usize = 4;

/// Bytes of each case-insensitive literal the searcher looks for: every case variant of
/// them is searched for exactly, at most [`MAX_VARIANTS`] of them.
const FOLDED_KEY: usize = 3;
const MAX_VARIANTS: usize = 64;

enum Finder {
    /// The distinct first bytes (memchr finds them), and per first byte which key starts
    /// there, by the byte after it (index 256: the haystack ends), as key index + 1.
    Bytes(Vec<u8>, Vec<[u16; 257]>),
    Exact(AhoCorasick),
    /// Every case variant of short keys, exactly; the `usize` maps a variant to its key.
    Variants(AhoCorasick, Vec<usize>),
    /// The keys lowercased, searched for in a lowercased copy of the haystack (exact keys
    /// are then checked against the original bytes).
    Lowered(AhoCorasick),
}

/// A literal set with the uses (`U`) attached to each literal, and each use's own length.
/// Each literal is matched exactly or ASCII case-insensitively, as it was given.
pub(crate) struct LiteralSet<U> {
    finder: Finder,
    /// The keys searched for, each with whether it is case-insensitive (then lowercase).
    lits: Vec<(Vec<u8>, bool)>,
    /// Per key: (use, the literal it came from, which may extend the key).
    uses: Vec<Vec<(U, Vec<u8>)>>,
    /// Per key: the other keys that can occur at the same place (one exact and one
    /// case-insensitive key, one a prefix of the other); the searcher reports one key per
    /// place, these are checked there too.
    also: Vec<Vec<usize>>,
    /// Longest literal as given (before folding into shorter prefixes).
    pub max_len: usize,
}

impl<U: Copy> LiteralSet<U> {
    /// Builds a set of literals all matched exactly (`case_insensitive` false) or all
    /// ASCII case-insensitively; `None` when there are no literals.
    pub fn new(items: Vec<(Vec<u8>, U)>, case_insensitive: bool) -> Option<LiteralSet<U>> {
        LiteralSet::mixed(
            items
                .into_iter()
                .map(|(l, u)| (l, u, case_insensitive))
                .collect(),
        )
    }

    /// Builds a set from `(literal, use, case-insensitive)`; `None` when there are no
    /// literals. Exact and case-insensitive literals are searched for in one pass.
    pub fn mixed(mut items: Vec<(Vec<u8>, U, bool)>) -> Option<LiteralSet<U>> {
        items.retain(|(l, _, _)| !l.is_empty());
        if items.is_empty() {
            return None;
        }
        for (l, _, ci) in &mut items {
            if *ci {
                l.make_ascii_lowercase();
            }
        }
        items.sort_by_key(|(l, _, _)| l.len());
        let max_len = items.iter().map(|(l, _, _)| l.len()).max().unwrap_or(0);
        // The searcher looks for a few bytes of each literal: fewer, shorter keys keep it
        // on its fastest variant; a hit is checked against the whole literal. Short
        // case-insensitive keys are searched as all their case variants; when there would
        // be too many, whole keys are looked for in a lowercased copy of the haystack.
        let (mut lits, mut uses) = group(&items, FOLDED_KEY);
        let variants = case_variants(&lits);
        if variants.is_none() && lits.iter().any(|&(_, ci)| ci) {
            (lits, uses) = group(&items, usize::MAX);
        }
        // Few distinct first bytes: memchr finds candidates, the literals are then checked.
        let mut first: Vec<u8> = Vec::new();
        for (l, ci) in &lits {
            first.push(l[0]);
            if *ci && l[0].is_ascii_alphabetic() {
                first.push(l[0].to_ascii_uppercase());
            }
        }
        first.sort_unstable();
        first.dedup();
        let finder = if first.len() <= 3 && lits.iter().all(|(l, _)| l.len() <= 2) {
            let follow = first
                .iter()
                .map(|&f| {
                    let mut row = [0u16; 257];
                    for (next, key) in row.iter_mut().enumerate() {
                        let here = [f, next as u8];
                        let here = if next == 256 { &here[..1] } else { &here[..] };
                        if let Some(k) = lits.iter().position(|(l, ci)| starts_with(here, l, *ci)) {
                            *key = u16::try_from(k + 1).expect("at most 3 x 257 short keys");
                        }
                    }
                    row
                })
                .collect();
            Finder::Bytes(first, follow)
        } else if lits.iter().all(|(_, ci)| !ci) {
            let keys: Vec<&[u8]> = lits.iter().map(|(l, _)| l.as_slice()).collect();
            Finder::Exact(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(keys)
                    .expect("a small literal set builds"),
            )
        } else if let Some((ac, groups)) = variants {
            Finder::Variants(ac, groups)
        } else {
            let lowered: Vec<Vec<u8>> = lits.iter().map(|(l, _)| l.to_ascii_lowercase()).collect();
            Finder::Lowered(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(&lowered)
                    .expect("a small literal set builds"),
            )
        };
        // The lowered searcher reports one key where several lowercase alike (`CUST` and
        // `cust`, both exact: found in review, only one was ever found).
        let lowered = matches!(finder, Finder::Lowered(_));
        let also = (0..lits.len())
            .map(|k| {
                (0..lits.len())
                    .filter(|&j| j != k && compatible(&lits[k], &lits[j], lowered))
                    .collect()
            })
            .collect();
        Some(LiteralSet {
            finder,
            lits,
            uses,
            also,
            max_len,
        })
    }

    /// Whether `memchr` finds the set's keys (at most three first bytes, keys of at most
    /// two bytes).
    pub fn is_bytes(&self) -> bool {
        matches!(self.finder, Finder::Bytes(..))
    }

    /// Calls `f(start, use, literal length)` for every position in `hay[from..]` where a
    /// literal of the set starts and fits in `hay`, in order of position.
    pub fn each(&self, hay: &[u8], from: usize, mut f: impl FnMut(usize, U, usize)) {
        let mut report_key = |start: usize, k: usize| {
            let here = &hay[start..];
            let (key, ci) = &self.lits[k];
            for (usage, lit) in &self.uses[k] {
                // A longer literal folded into a shorter one must really be here.
                if lit.len() == key.len() || starts_with(here, lit, *ci) {
                    f(start, *usage, lit.len());
                }
            }
        };
        let mut report = |start: usize, k: usize| {
            report_key(start, k);
            for &j in &self.also[k] {
                let (key, ci) = &self.lits[j];
                if starts_with(&hay[start..], key, *ci) {
                    report_key(start, j);
                }
            }
        };
        self.find(hay, from, &mut report);
    }

    /// Calls `report(start, kept literal index)` for every start of a kept literal.
    fn find(&self, hay: &[u8], from: usize, report: &mut impl FnMut(usize, usize)) {
        match &self.finder {
            Finder::Bytes(bytes, follow) => {
                let tail = &hay[from.min(hay.len())..];
                let mut hit = |i: usize| {
                    let row = bytes.iter().position(|&b| b == tail[i]).unwrap_or(0);
                    let next = tail.get(i + 1).map_or(256, |&b| usize::from(b));
                    if let Some(k) = usize::from(follow[row][next]).checked_sub(1) {
                        report(from + i, k);
                    }
                };
                match bytes.as_slice() {
                    [a] => memchr::memchr_iter(*a, tail).for_each(&mut hit),
                    [a, b] => memchr::memchr2_iter(*a, *b, tail).for_each(&mut hit),
                    [a, b, c] => memchr::memchr3_iter(*a, *b, *c, tail).for_each(&mut hit),
                    _ => unreachable!("one to three bytes"),
                }
            }
            Finder::Exact(ac) => every_start(ac, hay, from, report),
            Finder::Variants(ac, groups) => {
                every_start(ac, hay, from, |start, v| report(start, groups[v]));
            }
            Finder::Lowered(ac) => {
                let from = from.min(hay.len());
                let lower: Vec<u8> = hay[from..].iter().map(u8::to_ascii_lowercase).collect();
                every_start(ac, &lower, 0, |at, k| {
                    let start = from + at;
                    let (key, ci) = &self.lits[k];
                    if *ci || starts_with(&hay[start..], key, false) {
                        report(start, k);
                    } else if let Some(&j) = self.also[k]
                        .iter()
                        .find(|&&j| starts_with(&hay[start..], &self.lits[j].0, self.lits[j].1))
                    {
                        report(start, j);
                    }
                });
            }
        }
    }
}

/// Calls `f(start, pattern)` for every position in `hay[from..]` where a pattern of `ac`
/// starts: the search resumes one byte after each hit, so every start is reported, one
/// pattern each (see `LiteralSet::also` for the others).
fn every_start(ac: &AhoCorasick, hay: &[u8], from: usize, mut f: impl FnMut(usize, usize)) {
    let mut at = from;
    while at < hay.len() {
        let input = aho_corasick::Input::new(hay).span(at..hay.len());
        let Some(m) = ac.find(input) else { break };
        f(m.start(), m.pattern().as_usize());
        at = m.start() + 1;
    }
}

/// The keys of `items` (sorted by length), each literal cut to [`MAX_KEY`] bytes, or
/// `folded_key` when it is case-insensitive, and the uses of each key: a literal whose key
/// starts with a shorter key (of the same case rule) goes with it.
#[allow(clippy::type_complexity)]
fn group<U: Copy>(
    items: &[(Vec<u8>, U, bool)],
    folded_key: usize,
) -> (Vec<(Vec<u8>, bool)>, Vec<Vec<(U, Vec<u8>)>>) {
    let mut lits: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut uses: Vec<Vec<(U, Vec<u8>)>> = Vec::new();
    for (lit, usage, ci) in items {
        let key_len = if *ci { folded_key } else { MAX_KEY };
        let key = &lit[..lit.len().min(key_len)];
        match lits
            .iter()
            .position(|(k, kci)| kci == ci && key.starts_with(k))
        {
            Some(i) => uses[i].push((*usage, lit.clone())),
            None => {
                lits.push((key.to_vec(), *ci));
                uses.push(vec![(*usage, lit.clone())]);
            }
        }
    }
    merge_shared(&mut lits, &mut uses);
    (lits, uses)
}

/// Two keys of one case rule that share their first [`MIN_SHARED`] bytes or more become
/// one key, that shared start (`https://` and `http://h` are looked for as `http`): fewer
/// keys keep the vectorised searcher on its faster variant (Teddy searches 32 bytes a step
/// for up to 32 patterns, 16 past that), and a hit is checked against each whole literal
/// anyway. Keys that start with a merged key fold into it, so the set stays prefix-closed.
#[allow(clippy::type_complexity)]
fn merge_shared<U: Copy>(lits: &mut Vec<(Vec<u8>, bool)>, uses: &mut Vec<Vec<(U, Vec<u8>)>>) {
    // Sorted (by case rule, then bytes), the keys that end up as one are a run in which
    // each shares at least `MIN_SHARED` bytes with the next, and their key is what the
    // whole run shares (the least of those): one pass, not a rescan of every pair after
    // each merge (cubic: seconds for a few thousand keywords).
    let shared = |a: &[u8], b: &[u8]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let mut order: Vec<usize> = (0..lits.len()).collect();
    order.sort_by(|&a, &b| (lits[a].1, &lits[a].0).cmp(&(lits[b].1, &lits[b].0)));
    let mut runs: Vec<(Vec<u8>, bool, Vec<usize>)> = Vec::new();
    let mut k = 0;
    while k < order.len() {
        let (mut end, mut n) = (k + 1, usize::MAX);
        while end < order.len() {
            let (a, b) = (&lits[order[end - 1]], &lits[order[end]]);
            let s = shared(&a.0, &b.0);
            if a.1 != b.1 || s < MIN_SHARED {
                break;
            }
            n = n.min(s);
            end += 1;
        }
        if end - k >= 2 {
            let mut members = order[k..end].to_vec();
            members.sort_unstable();
            let (key, ci) = &lits[order[k]];
            runs.push((key[..n].to_vec(), *ci, members));
        }
        k = end;
    }
    if runs.is_empty() {
        return;
    }
    let mut taken: Vec<Option<Vec<(U, Vec<u8>)>>> =
        std::mem::take(uses).into_iter().map(Some).collect();
    let mut merged = Vec::new();
    for (key, ci, members) in runs {
        let mut all = Vec::new();
        for m in members {
            all.extend(taken[m].take().expect("one run per key"));
        }
        merged.push(((key, ci), all));
    }
    let old = std::mem::take(lits);
    for (lit, u) in old.into_iter().zip(taken) {
        if let Some(u) = u {
            lits.push(lit);
            uses.push(u);
        }
    }
    for (lit, u) in merged {
        lits.push(lit);
        uses.push(u);
    }
}

/// An exact searcher over every ASCII case variant of the (lowercase, short) keys, and the
/// key each variant stands for; `None` when there would be too many variants for the
/// vectorised searcher.
fn case_variants(keys: &[(Vec<u8>, bool)]) -> Option<(AhoCorasick, Vec<usize>)> {
    let mut variants: Vec<Vec<u8>> = Vec::new();
    let mut groups = Vec::new();
    for (k, (key, ci)) in keys.iter().enumerate() {
        let letters: Vec<usize> = (0..key.len())
            .filter(|&i| *ci && key[i].is_ascii_alphabetic())
            .collect();
        for bits in 0..1u32 << letters.len() {
            let mut v = key.clone();
            for (j, &i) in letters.iter().enumerate() {
                if bits >> j & 1 == 1 {
                    v[i] = v[i].to_ascii_uppercase();
                }
            }
            variants.push(v);
            groups.push(k);
            if variants.len() > MAX_VARIANTS {
                return None;
            }
        }
    }
    let ac = AhoCorasickBuilder::new()
        .match_kind(MatchKind::LeftmostFirst)
        .build(&variants)
        .ok()?;
    Some((ac, groups))
}

/// Whether the searcher may report one of two keys where both start: the shorter is a
/// prefix of the longer (ignoring ASCII case when either is case-insensitive, or
/// `lowered`: the searcher looks at a lowercased copy).
fn compatible((a, a_ci): &(Vec<u8>, bool), (b, b_ci): &(Vec<u8>, bool), lowered: bool) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    starts_with(long, short, *a_ci || *b_ci || lowered)
}

/// True when `hay` starts with `lit` (ASCII case-insensitively with `ci`). Compared in
/// place, byte by byte: the literals are short and a library memcmp call costs more.
fn starts_with(hay: &[u8], lit: &[u8], ci: bool) -> bool {
    hay.len() >= lit.len()
        && lit.iter().zip(hay).all(|(&a, &b)| {
            if ci {
                a.eq_ignore_ascii_case(&b)
            } else {
                a == b
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts(lits: &[&str], ci: bool, hay: &str) -> Vec<(usize, Vec<(u8, usize)>)> {
        let items = lits
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_bytes().to_vec(), i as u8))
            .collect();
        let set = LiteralSet::new(items, ci).unwrap();
        let mut out: Vec<(usize, Vec<(u8, usize)>)> = Vec::new();
        set.each(hay.as_bytes(), 0, |s, usage, len| match out.last_mut() {
            Some((at, uses)) if *at == s => uses.push((usage, len)),
            _ => out.push((s, vec![(usage, len)])),
        });
        out
    }

    #[test]
    fn every_start_is_reported_with_every_use() {
        // (literals, case-insensitive, haystack, expected (start, [(use, len)]))
        type Case = (
            &'static [&'static str],
            bool,
            &'static str,
            Vec<(usize, Vec<(u8, usize)>)>,
        );
        let cases: Vec<Case> = vec![
            (
                &["@"],
                false,
                "a@b@",
                vec![(1, vec![(0, 1)]), (3, vec![(0, 1)])],
            ),
            // A longer literal folded into a shorter one is reported only where it is.
            (
                &["ab", "abc"],
                false,
                "xabcab",
                vec![(1, vec![(0, 2), (1, 3)]), (4, vec![(0, 2)])],
            ),
            (
                &["ssn", "ssn:"],
                true,
                "SSN: classname",
                vec![(0, vec![(0, 3), (1, 4)]), (8, vec![(0, 3)])],
            ),
            // Keys of one and two bytes found by their first byte: the byte after it
            // decides which key is there, if any (none past the end).
            (
                &["+1", "+2", "@"],
                false,
                "+1 +x @ +2+",
                vec![(0, vec![(0, 2)]), (6, vec![(2, 1)]), (8, vec![(1, 2)])],
            ),
            // Overlapping occurrences are all found.
            (
                &["aa"],
                false,
                "aaaa",
                vec![(0, vec![(0, 2)]), (1, vec![(0, 2)]), (2, vec![(0, 2)])],
            ),
            (
                &["ghp_", "xoxb-"],
                false,
                "GHP_ ghp_ xoxb-",
                vec![(5, vec![(0, 4)]), (10, vec![(1, 5)])],
            ),
            (
                &["secret_key", "aws"],
                true,
                "AWS Secret_Key",
                vec![(0, vec![(1, 3)]), (4, vec![(0, 10)])],
            ),
            (
                &["x"],
                true,
                "xX",
                vec![(0, vec![(0, 1)]), (1, vec![(0, 1)])],
            ),
            // Case-insensitive keys share their first three bytes; the rest is checked.
            (
                &["secretaccesskey", "secret access key", "second"],
                true,
                "SeCrEtAcCeSsKeY secret_access sECond secret access KEY",
                vec![(0, vec![(0, 15)]), (30, vec![(2, 6)]), (37, vec![(1, 17)])],
            ),
            // Long exact literals are searched by their first eight bytes, then checked.
            (
                &["https://hooks.slack.com/", "http://hooks.slack.com/s"],
                false,
                "https://example.com https://hooks.slack.com/x http://hooks.slack.com/t",
                vec![(20, vec![(0, 24)])],
            ),
        ];
        for (lits, ci, hay, want) in cases {
            assert_eq!(starts(lits, ci, hay), want, "{lits:?} in {hay:?}");
        }
    }

    /// Keys sharing four first bytes are searched for as one; every literal is still
    /// reported only where it is, and a key that starts with the merged one folds in.
    #[test]
    fn keys_sharing_a_start_are_one_key() {
        let lits = ["https://", "http://h", "httpbin", "xoxa-", "xoxb-"];
        let items: Vec<_> = lits
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_bytes().to_vec(), i as u8, false))
            .collect();
        let (keys, uses) = group(&items_sorted(items), MAX_KEY);
        let mut keys: Vec<_> = keys.into_iter().map(|(k, _)| k).collect();
        keys.sort();
        // The `xox` pair shares only three bytes.
        assert_eq!(
            keys,
            [b"http".to_vec(), b"xoxa-".to_vec(), b"xoxb-".to_vec()]
        );
        assert_eq!(uses.iter().map(Vec::len).sum::<usize>(), lits.len());
        let (keys, _) = group(
            &items_sorted(vec![
                (b"https://".to_vec(), 0u8, false),
                (b"http://h".to_vec(), 1, false),
                (b"HTTP".to_vec(), 2, true),
            ]),
            3,
        );
        // Only keys of one case rule merge.
        assert_eq!(keys, [(b"htt".to_vec(), true), (b"http".to_vec(), false)]);
        assert_eq!(
            starts(
                &["https://", "http://h"],
                false,
                "http:// https://x http://hi httpx"
            ),
            vec![(8, vec![(0, 8)]), (18, vec![(1, 8)])]
        );
    }

    /// A rule pack's keyword list of a few thousand words (here 4000 generated
    /// codenames) builds its literal set in a fraction of a second: `merge_shared`
    /// rescans every pair of keys after each merge (cubic), and took seconds in a debug
    /// build for 4000 keywords (growing eightfold per doubling) where the set built in
    /// about 0.1 s before it; the engine is compiled at start, per rule-file check and per
    /// reload.
    #[test]
    fn thousands_of_keywords_are_each_found() {
        // Review of 43919f5: merging rescanned every pair after each merge (cubic: 6 s to
        // build this set in a dev build); now one sorted pass. What is checked here is
        // that every keyword of such a set is still found with its use.
        let (cons, vow) = (b"bcdfgklmnprstvz", b"aeiou");
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let items: Vec<(Vec<u8>, u32, bool)> = (0..4000)
            .map(|u| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let mut t = s >> 3;
                let mut w = Vec::new();
                for _ in 0..2 + s % 4 {
                    w.push(cons[(t % 15) as usize]);
                    w.push(vow[(t / 15 % 5) as usize]);
                    t /= 75;
                }
                (w, u, true)
            })
            .collect();
        let mut hay = Vec::new();
        let mut want = Vec::new();
        for (w, u, _) in &items {
            hay.push(b'#');
            want.push((hay.len(), *u, w.len()));
            hay.extend(w.iter().map(u8::to_ascii_uppercase));
        }
        let set = LiteralSet::mixed(items).unwrap();
        let mut got = Vec::new();
        set.each(&hay, 0, |start, u, len| got.push((start, u, len)));
        for w in &want {
            assert!(got.contains(w), "{w:?} not reported");
        }
    }

    /// Pre-existing (not from the reviewed commits): with enough case-insensitive keywords
    /// that their case variants do not fit (the `Lowered` searcher), two exact literals
    /// that differ only in case become one lowered pattern, and the one searched second is
    /// never reported (a prefix rule such as `(?:AKIA|akia)...` loses its anchor).
    #[test]
    fn exact_literals_differing_in_case_are_both_found_beside_many_keywords() {
        let mut items = vec![(b"AKIA".to_vec(), 0u8, false), (b"akia".to_vec(), 1, false)];
        for (k, w) in [
            "abc", "bcd", "cde", "def", "efg", "fgh", "ghi", "hij", "ijk",
        ]
        .iter()
        .enumerate()
        {
            items.push((w.as_bytes().to_vec(), 10 + k as u8, true));
        }
        let set = LiteralSet::mixed(items).unwrap();
        let mut got = Vec::new();
        set.each(b"AKIA akia", 0, |s, u, len| got.push((s, u, len)));
        got.sort_unstable();
        assert_eq!(got, vec![(0, 0, 4), (5, 1, 4)]);
    }

    fn items_sorted(mut items: Vec<(Vec<u8>, u8, bool)>) -> Vec<(Vec<u8>, u8, bool)> {
        for (l, _, ci) in &mut items {
            if *ci {
                l.make_ascii_lowercase();
            }
        }
        items.sort_by_key(|(l, _, _)| l.len());
        items
    }

    #[test]
    fn exact_and_case_insensitive_literals_share_one_pass() {
        // (literal, use, case-insensitive)
        let items = vec![
            (b"AKIA".to_vec(), 0u8, false),
            (b"aki".to_vec(), 1, true),
            (b"secret_key".to_vec(), 2, true),
            (b"@".to_vec(), 3, true),
        ];
        let set = LiteralSet::mixed(items).unwrap();
        let mut got = Vec::new();
        set.each(b"AKIA akia SECRET_KEY x@y", 0, |s, u, len| {
            got.push((s, u, len))
        });
        // Both the exact and the folded literal are reported where both occur (in order of
        // position; at one position in no particular order).
        got.sort_unstable();
        assert_eq!(
            got,
            vec![(0, 0, 4), (0, 1, 3), (5, 1, 3), (10, 2, 10), (22, 3, 1)]
        );
    }
}
