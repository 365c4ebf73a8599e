//! The anchored DFA a rule's matches are confirmed with ([`AnchoredDfa`]), and what it tells
//! before any search: the lead bytes, the byte classes a pattern's matches start with.
//!
//! A pattern such as the IBAN's `\b[A-Z]{2}\d{2}…` or the SSN's `\b\d{3}-\d{2}-\d{4}\b`
//! has no literal to look for, but every match starts with a short sequence of narrow
//! classes (`[A-Z] [A-Z] [0-9] [0-9]`, `[0-9] [0-9] [0-9] -`) after a non-word byte. Such
//! a sequence is rare in ordinary text, and the engine's block pass checks it for 64
//! positions at once from its digit and letter masks ([`crate::window`]), shifted and
//! and-ed. [`Lead::of`] works the classes out exactly, by walking the DFA's transitions
//! from its start states.

use regex_automata::dfa::Automaton;
use regex_automata::dfa::dense::DFA;
use regex_automata::util::primitives::StateID;

use super::analyze::ByteSet;

/// Deepest lead looked at.
pub(crate) const MAX_DEPTH: usize = 8;

/// Most DFA states a walk may hold at one depth before it stops going deeper.
const MAX_STATES: usize = 4096;

/// What the anchored DFA of a pattern says about how its matches start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lead {
    /// `sets[j]`: the bytes the `j`-th byte of a match can be (each set non-empty; a match
    /// is at least `sets.len()` bytes long only if the caller cut the walk at `min_len`).
    pub sets: Vec<ByteSet>,
    /// No match starts right after an ASCII word byte.
    pub nonword_before: bool,
    /// No match that starts with a digit starts right after an ASCII word byte (so no match
    /// starts inside a run of digits, nor right after a letter).
    pub digit_after_nonword: bool,
}

/// An anchored forward DFA of one pattern (leftmost-first, ASCII `\b`, any bytes), with its
/// start state for every byte that may come before a start (and for none).
#[derive(Debug)]
pub(crate) struct AnchoredDfa {
    dfa: regex_automata::dfa::dense::DFA<Vec<u32>>,
    /// `starts[b]`: the start state after byte `b`; `starts[256]`: at the stream's start.
    starts: Box<[StateID]>,
    /// The same automaton as one flat table, which the walks read.
    flat: Flat,
}

/// An anchored DFA's transitions in one table, laid out for the walk's inner loop: a state
/// is the offset of its row, the dead state is row 0 and the match states come right after
/// it, so one comparison tells a state that needs a look from one that does not.
///
/// `regex-automata`'s own `next_state` is as direct, but its special-state checks take
/// several comparisons a byte and each call re-derives the table's slice: in the dense
/// corpus the walks took about 15 instructions a byte, and this table takes about 6.
#[derive(Debug)]
struct Flat {
    /// Byte to class (a column of the table).
    classes: [u8; 256],
    /// Classes per row; column `width` holds 1 when the state matches at the end of input.
    width: usize,
    /// `trans[state + class]`: the next state (each row `width + 1` long).
    trans: Vec<u32>,
    /// As [`AnchoredDfa::starts`], as row offsets.
    starts: Box<[u32]>,
    /// States at or below this offset, other than 0 (dead), are match states.
    last_match: u32,
}

impl Flat {
    fn of(dfa: &DFA<Vec<u32>>, starts: &[StateID]) -> Flat {
        use std::collections::HashMap;
        let mut classes = [0u8; 256];
        let mut reps: Vec<u8> = Vec::new();
        for b in 0..=255u8 {
            let c = dfa.byte_classes().get(b);
            classes[usize::from(b)] = c;
            if usize::from(c) == reps.len() {
                reps.push(b);
            }
        }
        let width = reps.len();
        // Every state the starts reach, then ordered: dead, matches, the rest.
        let mut seen: Vec<StateID> = starts.to_vec();
        seen.sort_unstable();
        seen.dedup();
        let mut todo = seen.clone();
        let mut known: std::collections::HashSet<StateID> = seen.iter().copied().collect();
        while let Some(s) = todo.pop() {
            for &b in &reps {
                let n = dfa.next_state(s, b);
                if known.insert(n) {
                    seen.push(n);
                    todo.push(n);
                }
            }
        }
        seen.retain(|&s| !dfa.is_dead_state(s));
        seen.sort_by_key(|&s| (!dfa.is_match_state(s), s));
        let row = width + 1;
        let offset: HashMap<StateID, u32> = seen
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                (
                    s,
                    u32::try_from((i + 1) * row).expect("DFA within its size limit"),
                )
            })
            .collect();
        let at = |s: StateID| offset.get(&s).copied().unwrap_or(0);
        let matches = seen.iter().filter(|&&s| dfa.is_match_state(s)).count();
        let mut trans = vec![0u32; (seen.len() + 1) * row];
        for &s in &seen {
            let o = at(s) as usize;
            for (c, &b) in reps.iter().enumerate() {
                trans[o + c] = at(dfa.next_state(s, b));
            }
            trans[o + width] = u32::from(dfa.is_match_state(dfa.next_eoi_state(s)));
        }
        Flat {
            classes,
            width,
            trans,
            starts: starts.iter().map(|&s| at(s)).collect(),
            last_match: u32::try_from(matches * row).expect("DFA within its size limit"),
        }
    }

    /// The state after `b` from `state`.
    #[inline(always)]
    fn next(&self, state: u32, b: u8) -> u32 {
        self.trans[state as usize + usize::from(self.classes[usize::from(b)])]
    }
}

impl AnchoredDfa {
    pub(crate) fn build(pattern: &str) -> Option<AnchoredDfa> {
        use regex_automata::dfa::{Automaton, StartKind};
        use regex_automata::util::start;
        let dfa = dense_dfa(pattern, walk_config(StartKind::Anchored))?;
        let start = |look_behind: Option<u8>| {
            let config = start::Config::new()
                .anchored(regex_automata::Anchored::Yes)
                .look_behind(look_behind);
            dfa.start_state(&config).ok()
        };
        let starts: Box<[StateID]> = (0..=255u8)
            .map(|b| start(Some(b)))
            .chain([start(None)])
            .collect::<Option<_>>()?;
        let flat = Flat::of(&dfa, &starts);
        Some(AnchoredDfa { dfa, starts, flat })
    }

    /// Whether a match may start at `hay[at]`, from the byte before it (the first
    /// transition of [`AnchoredDfa::find`]). Before `hay[0]` is taken as the stream's
    /// start, so a caller whose `hay` does not begin the stream must not ask about 0.
    #[inline]
    pub(crate) fn may_start(&self, hay: &[u8], at: usize) -> bool {
        let f = &self.flat;
        let before = at.checked_sub(1).map_or(256, |i| usize::from(hay[i]));
        f.next(f.starts[before], hay[at]) != 0
    }

    /// The leftmost match starting in `hay[lo..=hi]`, as (start, end). Each place is tried
    /// with one transition from its start state (which knows the byte before: a place a
    /// match cannot start at, such as the middle of a word for a pattern opening with `\b`,
    /// dies there), and only a place the first byte leaves alive is walked on.
    ///
    /// `work` grows by the bytes the walks read (the first byte of each place too). Once
    /// it passes `limit` the search gives up and returns `None` with `work` past `limit`:
    /// the caller stops the rule (a window of a thousand places each walking 4 KiB read
    /// 4 MiB at once before the limit was looked at again).
    #[inline]
    pub(crate) fn find(
        &self,
        hay: &[u8],
        lo: usize,
        hi: usize,
        work: &mut u64,
        limit: u64,
    ) -> Option<(usize, usize)> {
        let f = &self.flat;
        let hi = hi.min(hay.len().checked_sub(1)?);
        if lo > hi {
            return None;
        }
        let mut before = lo.checked_sub(1).map_or(256, |i| usize::from(hay[i]));
        // Index loops: the iterator chains this replaced cost about twice the
        // instructions a step (callgrind, dense corpus).
        let mut at = lo;
        // Bytes read past the first of each place (kept here, added to `work` once).
        let mut walked = 0;
        // What may be read before the limit is passed (looked at after each walk).
        let room = limit.saturating_sub(*work);
        while at <= hi {
            let b = hay[at];
            let first = f.next(f.starts[before], b);
            before = usize::from(b);
            if first != 0 {
                // A match state after one byte reports the empty match before it.
                let empty = (first <= f.last_match).then_some(at);
                let (found, stopped) = self.walk_on(hay, at + 1, first, empty);
                walked += stopped - at;
                if let Some(end) = found {
                    *work += (walked + at - lo) as u64;
                    return Some((at, end));
                }
                if (walked + at + 1 - lo) as u64 > room {
                    *work += (walked + at + 1 - lo) as u64;
                    return None;
                }
            }
            at += 1;
        }
        *work += (walked + hi + 1 - lo) as u64;
        None
    }

    /// Walks on from `state` at `hay[at..]`, `end` the match found so far; `hay` ends one
    /// byte past the longest match that could matter (that byte is look-ahead only). The
    /// DFA reports a match one byte late, and goes dead once the leftmost-first match
    /// cannot grow. Also returns where the walk stopped.
    #[inline(always)]
    fn walk_on(
        &self,
        hay: &[u8],
        at: usize,
        mut state: u32,
        mut end: Option<usize>,
    ) -> (Option<usize>, usize) {
        let f = &self.flat;
        let mut i = at;
        while let Some(&b) = hay.get(i) {
            state = f.next(state, b);
            if state <= f.last_match {
                if state == 0 {
                    return (end, i);
                }
                end = Some(i);
            }
            i += 1;
        }
        if f.trans[state as usize + f.width] == 1 {
            end = Some(hay.len());
        }
        (end, i)
    }
}

impl Lead {
    /// Walks `anchored` `depth` bytes deep from every start state.
    pub(crate) fn of(anchored: &AnchoredDfa, depth: usize) -> Lead {
        let dfa = &anchored.dfa;
        // Start states after an ASCII word byte, and after anything else (or nothing).
        let (mut word, mut other) = (Vec::new(), vec![anchored.starts[256]]);
        for b in 0..=255u8 {
            let to = if b.is_ascii_alphanumeric() || b == b'_' {
                &mut word
            } else {
                &mut other
            };
            to.push(anchored.starts[usize::from(b)]);
        }
        word.sort_unstable();
        word.dedup();
        let after_word = alive(dfa, &word);
        let mut states: Vec<StateID> = word.iter().chain(&other).copied().collect();
        states.sort_unstable();
        states.dedup();
        let mut sets = Vec::new();
        while sets.len() < depth && states.len() <= MAX_STATES {
            let set = alive(dfa, &states);
            if set.is_empty() {
                break;
            }
            let mut next = Vec::new();
            for &s in &states {
                for b in 0..=255u8 {
                    if set.contains(b) {
                        let n = dfa.next_state(s, b);
                        if !dfa.is_dead_state(n) {
                            next.push(n);
                        }
                    }
                }
            }
            next.sort_unstable();
            next.dedup();
            sets.push(set);
            states = next;
        }
        Lead {
            sets,
            nonword_before: after_word.is_empty(),
            digit_after_nonword: !after_word.has_digit(),
        }
    }

    /// Rough share of positions in ordinary text where the first `depth` classes (and the
    /// non-word byte before, when required) occur: see [`text_share`].
    pub(crate) fn rate(&self, depth: usize) -> f64 {
        self.sets[..depth]
            .iter()
            .fold(self.before_share(), |acc, set| acc * text_share(set))
    }

    /// Rough share of positions in ordinary text whose byte before suits a match: the
    /// non-word bytes when one is required, else all.
    pub(crate) fn before_share(&self) -> f64 {
        if self.nonword_before {
            1.0 - text_share(&word_bytes())
        } else {
            1.0
        }
    }
}

/// The bytes some state of `states` goes on with (to a state that is not dead).
fn alive(dfa: &DFA<Vec<u32>>, states: &[StateID]) -> ByteSet {
    let mut set = ByteSet::EMPTY;
    for b in 0..=255u8 {
        if states
            .iter()
            .any(|&s| !dfa.is_dead_state(dfa.next_state(s, b)))
        {
            set.add_range(b, b);
        }
    }
    set
}

fn word_bytes() -> ByteSet {
    let mut set = ByteSet::EMPTY;
    set.add_range(b'0', b'9');
    set.add_range(b'A', b'Z');
    set.add_range(b'a', b'z');
    set.add_range(b'_', b'_');
    set
}

/// A rough model of the bytes of ordinary egress text (prose, JSON, code): the share of
/// bytes in `set`. Only used to choose between prefilters, never for correctness.
pub(crate) fn text_share(set: &ByteSet) -> f64 {
    (0..=255u8)
        .filter(|&b| set.contains(b))
        .map(|b| match b {
            b' ' => 0.12,
            b'a'..=b'z' => 0.50 / 26.0,
            b'A'..=b'Z' => 0.06 / 26.0,
            b'0'..=b'9' => 0.12 / 10.0,
            b'\n' | b'"' => 0.025,
            0x21..=0x7e => 0.12 / 30.0,
            _ => 0.03 / 160.0,
        })
        .sum()
}

/// Bytes a DFA walked from a [`Flat`] table may take: beyond this a rule keeps its regex
/// alone, and its excludes their `RegexSet`.
const WALK_SIZE_LIMIT: usize = 1 << 20;

/// How the DFAs walked from a [`Flat`] table are built: within [`WALK_SIZE_LIMIT`], not
/// minimised, with `start_kind`.
fn walk_config(start_kind: regex_automata::dfa::StartKind) -> regex_automata::dfa::dense::Config {
    regex_automata::dfa::dense::Config::new()
        .start_kind(start_kind)
        .minimize(false)
        .dfa_size_limit(Some(WALK_SIZE_LIMIT))
        .determinize_size_limit(Some(4 * WALK_SIZE_LIMIT))
}

/// `pattern` as a dense DFA over bytes (no Unicode, no UTF-8: the engine's syntax), built
/// with `config` (its size limits above all); `None` when it cannot be (over a limit).
pub(crate) fn dense_dfa(
    pattern: &str,
    config: regex_automata::dfa::dense::Config,
) -> Option<regex_automata::dfa::dense::DFA<Vec<u32>>> {
    dense_dfa_many(&[pattern], config)
}

/// The engine's syntax for automata built from rule patterns: bytes, no Unicode, no UTF-8.
pub(crate) fn pattern_syntax() -> regex_automata::util::syntax::Config {
    regex_automata::util::syntax::Config::new()
        .unicode(false)
        .utf8(false)
        .nest_limit(64)
}

/// [`dense_dfa`] of several patterns, each with its own flags.
fn dense_dfa_many<P: AsRef<str>>(
    patterns: &[P],
    config: regex_automata::dfa::dense::Config,
) -> Option<regex_automata::dfa::dense::DFA<Vec<u32>>> {
    use regex_automata::nfa::thompson;
    regex_automata::dfa::dense::Builder::new()
        .syntax(pattern_syntax())
        .thompson(thompson::Config::new().utf8(false))
        .configure(config)
        .build_many(patterns)
        .ok()
}

/// A pattern searched for anywhere in a window from two dense DFAs, built whole at load:
/// forward to a match's end, then backward (anchored there) to its start, leftmost-first
/// as the regex crate. For a rule the engine searches with a regex (a full scan, keywords
/// that are not bytes every match holds, an anchored table over its size limit) whose
/// automaton is one small table: the regex crate's lazy automaton, with a cache of 2 MiB,
/// gave up on a body made for a pattern of 1 MiB of table (`a[ab]{14}Z`: 4 MiB of random
/// `a`/`b` in 0.51 s, against 0.03 s for the 0.5 MiB of `a[ab]{13}Z`) and simulated the
/// NFA, at a cost the work limit does not see; a whole table costs the same on every body.
#[derive(Debug)]
pub(crate) struct TableRegex(regex_automata::dfa::regex::Regex<DFA<Vec<u32>>>);

impl TableRegex {
    /// `pattern` as two tables of at most `limit` bytes each (determinized within twice
    /// that); `None` when one would be bigger.
    pub(crate) fn build(pattern: &str, limit: usize) -> Option<TableRegex> {
        use regex_automata::nfa::thompson;
        regex_automata::dfa::regex::Builder::new()
            .syntax(pattern_syntax())
            .thompson(thompson::Config::new().utf8(false))
            .dense(
                regex_automata::dfa::dense::Config::new()
                    .dfa_size_limit(Some(limit))
                    .determinize_size_limit(Some(2 * limit)),
            )
            .build(pattern)
            .ok()
            .map(TableRegex)
    }

    /// The leftmost match in `hay[from..]` as (start, end), `hay[from - 1]` its look-behind
    /// (as `regex::bytes::Regex::find_at`). An error only where a table stops a search (a
    /// quit byte, never set for the engine's patterns: no Unicode).
    #[inline]
    pub(crate) fn find_at(
        &self,
        hay: &[u8],
        from: usize,
    ) -> Result<Option<(usize, usize)>, regex_automata::MatchError> {
        let input = regex_automata::Input::new(hay).range(from..);
        Ok(self.0.try_search(&input)?.map(|m| (m.start(), m.end())))
    }
}

/// Patterns looked for anywhere in a value, all at once (a rule's excludes): one
/// unanchored DFA walked over the value from one flat table. A `RegexSet` took about 660
/// instructions an address for the email rule's six excludes (its search setup and lazy
/// automaton), this about 8 a byte.
#[derive(Debug)]
pub(crate) struct AnyDfa {
    flat: Flat,
}

impl AnyDfa {
    pub(crate) fn build<P: AsRef<str>>(patterns: &[P]) -> Option<AnyDfa> {
        use regex_automata::dfa::StartKind;
        use regex_automata::util::start;
        let dfa = dense_dfa_many(patterns, walk_config(StartKind::Unanchored))?;
        // The value is the whole haystack: nothing before its first byte.
        let config = start::Config::new().anchored(regex_automata::Anchored::No);
        let start = dfa.start_state(&config).ok()?;
        Some(AnyDfa {
            flat: Flat::of(&dfa, &[start]),
        })
    }

    /// Whether any pattern matches somewhere in `value` (as `RegexSet::is_match`).
    pub(crate) fn is_match(&self, value: &[u8]) -> bool {
        let f = &self.flat;
        let mut state = f.starts[0];
        for &b in value {
            state = f.next(state, b);
            if state <= f.last_match {
                // A match state (reported a byte late) or the dead state.
                return state != 0;
            }
        }
        f.trans[state as usize + f.width] == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dfa(pattern: &str) -> AnchoredDfa {
        AnchoredDfa::build(pattern).expect("pattern compiles")
    }

    fn set(bytes: &[u8]) -> ByteSet {
        let mut s = ByteSet::EMPTY;
        for &b in bytes {
            s.add_range(b, b);
        }
        s
    }

    fn range(lo: u8, hi: u8) -> ByteSet {
        let mut s = ByteSet::EMPTY;
        s.add_range(lo, hi);
        s
    }

    proptest::proptest! {
        /// The exclude DFA agrees with `RegexSet::is_match` (as the rules compile it) on
        /// values made of the bytes the patterns turn on, anchors and case included.
        #[test]
        fn any_dfa_agrees_with_a_regex_set(
            value in proptest::collection::vec(proptest::sample::select(
                b"aeGgitx0f9@.-_ \xffcomEXAMPLEnet".to_vec()), 0..40),
            text in "[a-z0-9@.]{0,12}(example|test|ingest\\.sentry|git@)?[a-z0-9@.]{0,12}(\\.(com|png|local|io))?",
        ) {
            let patterns = [
                r"(?i)@(?:[a-z0-9-]{1,8}\.){0,3}(?:example|test)\.(?:com|org|net)$",
                r"(?i)\.(?:example|test|invalid|local|corp)$",
                r"(?i)\.(?:png|jpe?g|svg)$",
                r"(?i)^(?:git|hg)@",
                r"(?i)^[0-9a-f]{4}@",
                r"(?i)\.ingest\.(?:[a-z]{2}\.)?sentry\.io$",
                r"\bx\d\b",
                r"(?x) e g # a comment",
            ];
            let dfa = AnyDfa::build(&patterns).expect("small patterns build");
            let set = crate::rules::compile_set(
                &patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            )
            .expect("patterns compile");
            for v in [&value[..], text.as_bytes()] {
                proptest::prop_assert_eq!(dfa.is_match(v), set.is_match(v), "{:?}", String::from_utf8_lossy(v));
            }
        }
    }

    /// The patterns [`a_table_regex_finds_what_the_regex_finds`] tries, each as a small
    /// table and as the regex crate compiles it (built once: a debug build of seven tables
    /// per case would slow the test).
    fn table_regexes() -> &'static [(&'static str, TableRegex, regex::bytes::Regex)] {
        static BUILT: std::sync::OnceLock<Vec<(&str, TableRegex, regex::bytes::Regex)>> =
            std::sync::OnceLock::new();
        BUILT.get_or_init(|| {
            [
                r"a[ab]{3}Z",
                r"(?i)\bk[a-z0-9]{2,5}\b",
                r"\B[/+][a-z0-9/+]{3}",
                r"(?:\b[A-Za-z0-9]|\B[/+])[A-Za-z0-9/+]{4}(?:[A-Za-z0-9]\b|[/+]\B)",
                r"[a-z]{2}|[a-z]{4}@",
                r"x?[0-9]*9",
                r"[^\n]{2,6}\.",
            ]
            .into_iter()
            .map(|p| {
                let table = TableRegex::build(p, 2 << 20).expect("small patterns build");
                (
                    p,
                    table,
                    crate::rules::compile(p).expect("pattern compiles"),
                )
            })
            .collect()
        })
    }

    proptest::proptest! {
        /// A small table finds what the regex crate finds (as the rules compile it) from
        /// any place of a haystack, the byte before that place its look-behind: leftmost
        /// first, word boundaries at both ends, case, alternations that share a start, and
        /// the AWS secret key's boundary mix.
        #[test]
        fn a_table_regex_finds_what_the_regex_finds(
            hay in proptest::collection::vec(proptest::sample::select(
                b"abAZz09+/-_ .@\xff\nkx".to_vec()), 0..120),
            from in 0usize..130,
        ) {
            let from = from.min(hay.len());
            for (p, table, regex) in table_regexes() {
                let want = regex.find_at(&hay, from).map(|m| (m.start(), m.end()));
                proptest::prop_assert_eq!(
                    table.find_at(&hay, from).expect("no quit bytes"),
                    want,
                    "{} from {} in {:?}",
                    p,
                    from,
                    String::from_utf8_lossy(&hay)
                );
            }
        }
    }

    #[test]
    fn the_lead_of_a_pattern_is_its_first_classes() {
        let lead = Lead::of(&dfa(r"\b[A-Z]{2}\d{2}[A-Z0-9]{4}"), 4);
        let (upper, digit) = (range(b'A', b'Z'), range(b'0', b'9'));
        assert_eq!(lead.sets, vec![upper, upper, digit, digit]);
        assert!(lead.nonword_before);
        assert!(lead.digit_after_nonword);

        let lead = Lead::of(&dfa(r"\d{3}-\d{2}"), 4);
        assert_eq!(lead.sets, vec![digit, digit, digit, set(b"-")]);
        assert!(!lead.nonword_before, "no \\b: a match may follow a letter");
        assert!(!lead.digit_after_nonword);

        // Branches are unioned per depth; a branch starting with a digit needs \b.
        let lead = Lead::of(&dfa(r"\(\d{3}\)|\b\d{3}-"), 3);
        let mut first = digit;
        first.add_range(b'(', b'(');
        assert_eq!(lead.sets[0], first);
        assert!(!lead.nonword_before, "'(' may follow a letter");
        assert!(lead.digit_after_nonword);

        // \B before a non-word byte: the byte before must be non-word too.
        let lead = Lead::of(&dfa(r"\B\+[1-9]\d"), 3);
        assert_eq!(lead.sets, vec![set(b"+"), range(b'1', b'9'), digit]);
        assert!(lead.nonword_before);
    }

    #[test]
    fn the_walk_stops_where_matches_may_end() {
        let lead = Lead::of(&dfa(r"ab"), 8);
        // After "ab" the DFA only reports the match: no byte goes on to a live state
        // but the one-byte-late match report, which is still a live transition.
        assert_eq!(lead.sets[..2], [set(b"a"), set(b"b")]);
    }

    #[test]
    fn text_share_ranks_narrow_classes_below_wide_ones() {
        assert!(text_share(&range(b'A', b'Z')) < text_share(&range(b'a', b'z')));
        assert!(text_share(&set(b"-")) < text_share(&range(b'0', b'9')));
        let all = range(0, 255);
        assert!((text_share(&all) - 1.0).abs() < 0.05);
    }
}
