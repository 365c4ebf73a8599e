//! The compiled engine and the per-body streaming state. See the module docs in `scan`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Arc;

use regex::bytes::{Regex, RegexSet};
use serde::Serialize;
use siphasher::sip::SipHasher13;

use super::analyze::{ByteSet, PatternInfo};
use super::exact::{ExactIndex, MAX_RECORDS_PER_VALUE};
use super::lead::{self, AnchoredDfa, AnyDfa, Lead, MAX_DEPTH, TableRegex};
use super::literals::LiteralSet;
use super::{MaskStyle, Normalize, Validator};
use crate::rules::{DISTINCT_CAP, RuleSet, compile, compile_set};
use crate::window::{WIDTH, Window};

/// Masked samples kept per rule finding.
pub const MAX_SAMPLES: usize = 3;

/// A run of digits longer than this is handed to the rules in pieces of this size, so the
/// stream never has to hold an unbounded run before deciding.
const RUN_PIECE: u64 = 4096;

/// How far [`Engine::scan_bytes`] moves its prefilters ahead of the gates and regexes.
const SCAN_STEP: usize = 64 * 1024;

/// [`Stream::feed`] scans pieces at least this long in place, without copying them.
const IN_PLACE_MIN: usize = 16 * 1024;

/// The first bytes of an in-place piece, joined to the retained tail: more than the tail
/// the shipped rules need once nothing is pending (the longest match and the widest
/// context window, 4.4 KiB). A rule set that needs more is scanned as before (joined).
const SEAM: usize = 8 * 1024;

/// Windows of one anchored rule closer than this are searched in one regex call. Only
/// touching windows merge: each window's search is bounded by its own token, and merging
/// across a gap would search the gap too.
const MERGE_GAP: u64 = 1;

/// How far past what a value needs [`ContextState::cover`] searches for context words.
const CONTEXT_AHEAD: u64 = 4096;

/// Exact-data-match places remembered per stream (a record's field seen at an offset):
/// past this, `edm.near` pairs are looked for among the ones kept.
const MAX_EXACT_HITS: usize = 100_000;

/// A rule's searches may read this many bytes per byte of the stream, past
/// [`WORK_FLOOR`]; a rule that reads more is stopped there ([`Findings::stopped`]) and the
/// body is not fully scanned. Ordinary bodies stay far below: about 1.3 in the dense
/// customer export (all rules together), under 0.1 in base64url-encoded JSON. A hostile
/// one reaches hundreds: `eyJ-` repeated starts a walk of up to 800 bytes every 4 bytes
/// (the JWT rule's first segment is `[A-Za-z0-9_-]{8,800}`), 200 bytes read per byte,
/// which no automaton run per start avoids. The stop bounds the time a body can cost to
/// about 30 times the read, whatever a rule's bounded repetitions allow.
pub const WORK_PER_BYTE: u64 = 32;

/// Bytes every rule's searches may read before [`WORK_PER_BYTE`] applies: a small body is
/// never stopped (4 Mi reads is a few milliseconds; the review of session 22 measured an
/// 80 KiB body at about 100 ms of CPU under a floor of 16 Mi).
pub const WORK_FLOOR: u64 = 4 << 20;

/// How an engine is built beyond its rules.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Key of the 64-bit hashes distinct values are counted by. Engines built with the
    /// same key give the same hash to the same value, so cumulative windows can count
    /// across requests and rule reloads; nothing outside the process ever sees it.
    pub hash_key: [u64; 2],
    /// The exact-data-match index rules with `edm:` look their values up in. Without one,
    /// `edm:` is ignored (as `rules test` does: it tests patterns, not the customer table).
    pub exact: Option<Arc<dyn ExactIndex>>,
}

impl Default for EngineOptions {
    /// A fresh random hash key, no index.
    fn default() -> EngineOptions {
        EngineOptions {
            hash_key: random_key(),
            exact: None,
        }
    }
}

/// 128 random bits from the standard library's per-process random hasher keys.
pub fn random_key() -> [u64; 2] {
    let a = RandomState::new();
    let b = RandomState::new();
    [a.hash_one(0x5eed_u64), b.hash_one(0xfeed_u64)]
}

/// A rule set that cannot be compiled against the given options.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule}: {message}")]
pub struct EngineError {
    /// The rule id.
    pub rule: String,
    /// What is wrong.
    pub message: String,
}

/// How a rule's matches are found in the places its prefilter leaves (for `rules check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Search {
    /// Its anchored DFA, walked from each place a match may start, every byte counted as
    /// work.
    AnchoredTable,
    /// One small table (a forward and a reverse DFA) over each window.
    Table,
    /// The regex crate over each window: a rule with no table at all, which
    /// `rules::load_dir` refuses.
    Regex,
}

/// How a rule's regex is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Anchor {
    /// Near one of the rule's own keywords.
    Keywords,
    /// At one of the literal prefixes every match starts with.
    Prefixes,
    /// Around runs of consecutive digits that pass the rule's byte gate.
    DigitRuns,
    /// Where the byte classes every match starts with occur (found 64 bytes at a time).
    LeadBytes,
    /// Everywhere: the pattern offers no prefilter.
    FullScan,
}

/// What finds a rule's matches in the places its prefilter leaves (see [`Search`]).
// One per rule, held in place: boxing the anchored DFA would put an indirection on the
// scan's hot path (CONVENTIONS: no boxing there), and the variants' sizes cost nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Confirm {
    /// The pattern as an anchored forward DFA, for rules whose matches can only start at
    /// known places (prefixes, digit runs, one-byte keywords every match holds, and other
    /// keywords when the pattern is not one small table): each place is tried with one
    /// anchored pass, with no reverse pass and no per-call setup beyond the start state.
    Anchored(AnchoredDfa),
    /// The pattern as one small table searching each window: full scans, other keyword
    /// rules, and rules whose anchored DFA would be too big.
    Table(TableRegex),
    /// The regex crate searching each window: a rule with no table at all, which
    /// `rules::load_dir` refuses (see [`Engine::regex_searched`]).
    Regex(Regex),
}

impl Confirm {
    /// The anchored DFA, for a rule walked from its places.
    fn anchored(&self) -> Option<&AnchoredDfa> {
        match self {
            Confirm::Anchored(dfa) => Some(dfa),
            Confirm::Table(_) | Confirm::Regex(_) => None,
        }
    }

    fn search(&self) -> Search {
        match self {
            Confirm::Anchored(_) => Search::AnchoredTable,
            Confirm::Table(_) => Search::Table,
            Confirm::Regex(_) => Search::Regex,
        }
    }
}

#[derive(Debug)]
struct CompiledRule {
    confirm: Confirm,
    /// `info.allowed` as a table, for the token walks of digit-run gates.
    classes: Box<ByteClasses>,
    /// Every keyword is a byte every match contains: a match starts in the token of
    /// allowed bytes left of a hit, at most the longest match before it, and ends at most
    /// the longest match after it (then its anchored DFA tries it at those starts).
    inner_keywords: bool,
    /// No match starting with a digit follows an ASCII word byte (read off its anchored
    /// DFA).
    digit_after_nonword: bool,
    /// For a rule with other keywords walked as its anchored DFA (see
    /// [`Engine::with_options`]): a byte every match holds, the rarest in text. A match
    /// starts in the token of allowed bytes left of one, so only those places of a
    /// keyword's window are tried.
    probe: Option<u8>,
    anchor: Anchor,
    info: PatternInfo,
    validator: Validator,
    normalize: Normalize,
    mask: MaskStyle,
    exclude: Excludes,
    /// (window, required)
    context: Option<(u64, bool)>,
    /// Every keyword is one of the context words and the window reaches the longest
    /// match: every match found near a keyword hit has that hit in its context window, so
    /// no context search is needed (the AWS secret key rule: a body repeating
    /// `aws_secret ` spent 42 % of its time searching the words the keyword pass found).
    keywords_are_context: bool,
    category: usize,
    exact: Option<ExactRule>,
}

/// A rule's `edm:` resolved against the index: column numbers instead of names.
#[derive(Debug)]
struct ExactRule {
    field: u16,
    near: Vec<u16>,
    window: u64,
}

/// Lead places of a rule share in ordinary text at most this (see [`Lead::rate`]) for
/// the rule to be found by its lead classes rather than by digit runs or a `memchr`.
const LEAD_RATE: f64 = 3e-5;

/// The block pass's class filters keep at most about this share of places for the
/// one-by-one check of a lead rule.
const FILTER_RATE: f64 = 2e-3;

/// The rules found by their lead classes, and what the block pass needs for the digit-run
/// plan (the left neighbours that rule a run out for every digit-run rule).
#[derive(Debug)]
struct LeadPlan {
    rules: Vec<LeadRule>,
    /// The filters every rule has, and whether every rule needs a non-word byte before:
    /// applied once per block, and a block they rule out needs nothing per rule.
    shared: Vec<(u32, usize)>,
    shared_nonword: bool,
    /// Deepest lead of any rule.
    depth: usize,
    /// Classes (indices into the block masks) whose bytes, right before a digit run, rule
    /// it out for every digit-run rule (lowercase letters, for the shipped pack).
    kill_left: Vec<usize>,
    /// The same bytes as a table, for the byte before a block.
    kill_table: Box<[bool]>,
}

/// One rule found by its lead classes.
#[derive(Debug)]
struct LeadRule {
    rule: usize,
    /// (depth, class index into the block masks): the block pass keeps the places whose
    /// byte at each such depth is in the class.
    filters: Vec<(u32, usize)>,
    /// Per depth, exactly: checked one by one at the places the filters keep.
    sets: Vec<ByteSet>,
    nonword_before: bool,
}

impl LeadRule {
    /// Whether the lead holds at `p` (all its bytes are in `hay`).
    fn holds_at(&self, hay: &[u8], base: u64, p: u64) -> bool {
        let at = (p - base) as usize;
        self.sets
            .iter()
            .zip(&hay[at..at + self.sets.len()])
            .all(|(set, &b)| set.contains(b))
    }
}

/// The byte classes the block pass computes a mask of, by index in its masks.
const DIGITS: usize = 0;
const UPPER: usize = 1;
const LOWER: usize = 2;
type BlockMasks = [u64; 3];
/// Each class of the block masks: (index, its byte range), as [`block_masks`] computes it.
const CLASSES: [(usize, u8, u8); 3] = [
    (DIGITS, b'0', b'9'),
    (UPPER, b'A', b'Z'),
    (LOWER, b'a', b'z'),
];

/// The block pass's masks of the 64 bytes at `hay[at..]` (fewer at the end: the rest
/// count as no class).
#[inline(always)]
fn block_masks(hay: &[u8], at: usize) -> BlockMasks {
    let w = if hay.len() - at >= WIDTH {
        Window::load(hay, at)
    } else {
        let mut padded = [0u8; WIDTH];
        padded[..hay.len() - at].copy_from_slice(&hay[at..]);
        Window::load(&padded, 0)
    };
    [w.digits(), w.upper(), w.lower()]
}

/// Bits where a run of at least `min_run` (1 to 64) set bits of `m` starts, the run lying
/// inside `m` (bits past the top count as clear).
#[inline(always)]
fn run_starts(m: u64, min_run: u32) -> u64 {
    // `long` bit `i`: bits `i .. i + have` all set. The shipped rules' 4 in two steps.
    let long = match min_run {
        4 => {
            let two = m & m >> 1;
            two & two >> 2
        }
        _ => {
            let (mut long, mut have) = (m, 1);
            while have < min_run {
                let step = have.min(min_run - have);
                long &= long >> step;
                have += step;
            }
            long
        }
    };
    long & !(m << 1)
}

impl LeadPlan {
    fn new() -> LeadPlan {
        LeadPlan {
            rules: Vec::new(),
            shared: Vec::new(),
            shared_nonword: false,
            depth: 0,
            kill_left: Vec::new(),
            kill_table: vec![false; 256].into_boxed_slice(),
        }
    }

    /// Takes rule `rule` when its lead is rare enough and the block pass's own classes
    /// (digits, upper- and lowercase letters) filter it well enough.
    fn add(&mut self, rule: usize, lead: &Lead) -> bool {
        let Some(depth) = (1..=lead.sets.len()).find(|&d| lead.rate(d) <= LEAD_RATE) else {
            return false;
        };
        let mut rate = lead.before_share();
        let mut filters = Vec::new();
        for (j, set) in lead.sets[..depth].iter().enumerate() {
            let inside = |&&(_, lo, hi): &&(usize, u8, u8)| {
                (0..=255u8).all(|b| !set.contains(b) || (lo..=hi).contains(&b))
            };
            if let Some(&(i, lo, hi)) = CLASSES.iter().find(inside) {
                let mut class = ByteSet::EMPTY;
                class.add_range(lo, hi);
                rate *= lead::text_share(&class);
                filters.push((j as u32, i));
            }
        }
        // A filter of digits alone also keeps every place along the long digit runs of
        // ordinary traffic (timestamps, ids): the digit-run gate, which knows run
        // lengths, is better there.
        if rate > FILTER_RATE || filters.iter().all(|&(_, i)| i == DIGITS) {
            return false;
        }
        self.depth = self.depth.max(depth);
        if self.rules.is_empty() {
            self.shared.clone_from(&filters);
            self.shared_nonword = lead.nonword_before;
        } else {
            self.shared.retain(|f| filters.contains(f));
            self.shared_nonword &= lead.nonword_before;
        }
        self.rules.push(LeadRule {
            rule,
            filters,
            sets: lead.sets[..depth].to_vec(),
            nonword_before: lead.nonword_before,
        });
        true
    }

    /// The letters (upper- or lowercase, whole) that rule a digit run out for every
    /// digit-run rule when right before it.
    fn add_digits(&mut self, digits: &DigitPlan) {
        let all = if digits.rules.len() >= 64 {
            0
        } else {
            (1u64 << digits.rules.len()) - 1
        };
        let kills = |b: u8| all != 0 && digits.dead_left[usize::from(b)] & all == all;
        self.kill_table = (0..=255u8).map(kills).collect();
        for (i, lo, hi) in CLASSES {
            if i != DIGITS && (lo..=hi).all(kills) {
                self.kill_left.push(i);
            }
        }
    }
}

/// The digit-run prefilter shared by every digit-anchored rule.
///
/// Most digit runs in ordinary traffic (hex digests, base64, UUIDs, timestamps) are ruled
/// out for every rule by their length and the byte on either side alone, with a few table
/// lookups when the run ends; only the survivors are queued for the full per-rule gate.
/// Bit `i` of a mask stands for `rules[i]` (rules past the 64th are always candidates).
#[derive(Debug)]
struct DigitPlan {
    rules: Vec<usize>,
    /// Shortest run any of the rules needs.
    min_run: u64,
    /// Longest match of any of the rules.
    max_len: u64,
    /// Per byte: rules ruled out when it is right before a run (a `\b` must be there).
    kill_before: Box<[u64; 256]>,
    /// Per byte: rules ruled out when it is right after a run.
    kill_after: Box<[u64; 256]>,
    /// Per byte: rules whose matches cannot contain it.
    outside: Box<[u64; 256]>,
    /// Per byte: rules ruled out by a run's left neighbour whatever the run's digits:
    /// `kill_before`, plus a neighbour a match cannot contain when no match starts with
    /// a digit.
    dead_left: Box<[u64; 256]>,
    /// Per digit: rules whose matches cannot start (end) with it. Applies when the
    /// neighbour cannot be part of a match, so the match starts (ends) with the run.
    bad_first_digit: [u64; 10],
    bad_last_digit: [u64; 10],
    /// Per rule: (min_digit_run, max_digit_run when a match holds whole runs, shortest
    /// token a match needs).
    lengths: Vec<(u64, Option<u64>, u64)>,
    /// For run lengths up to 64: the rules the length fits, and those whose shortest token
    /// is longer than the run.
    by_len: Vec<(u64, u64)>,
    /// The bytes any of the rules' matches may contain, as classes: one walk over them
    /// around a run bounds every rule's token at once (see [`DigitPlan::reach`]).
    any: Box<ByteClasses>,
}

impl DigitPlan {
    fn new(rules: Vec<usize>, compiled: &[CompiledRule]) -> DigitPlan {
        let mut plan = DigitPlan {
            min_run: u64::MAX,
            max_len: 0,
            kill_before: Box::new([0; 256]),
            kill_after: Box::new([0; 256]),
            outside: Box::new([0; 256]),
            dead_left: Box::new([0; 256]),
            bad_first_digit: [0; 10],
            bad_last_digit: [0; 10],
            lengths: Vec::new(),
            by_len: Vec::new(),
            any: Box::new([OUTSIDE; 256]),
            rules,
        };
        let mut any = ByteSet::EMPTY;
        for &r in &plan.rules {
            any.union(&compiled[r].info.allowed);
        }
        plan.any = byte_classes(&any);
        for (i, &r) in plan.rules.iter().enumerate() {
            let info = &compiled[r].info;
            plan.min_run = plan.min_run.min(info.min_digit_run as u64);
            plan.max_len = plan.max_len.max(info.max_len as u64);
            let whole = info.no_start_in_run && info.no_end_in_run;
            plan.lengths.push((
                info.min_digit_run as u64,
                whole.then_some(info.max_digit_run as u64),
                info.min_len.max(info.min_digits) as u64,
            ));
            if i >= 64 {
                continue;
            }
            // A match that cannot take in the neighbour starts (ends) with a digit of the
            // run: its first digit when matches cannot start inside a run, any digit else.
            let no_digit_first = !info.first_bytes.has_digit();
            let no_digit_last = !info.last_bytes.has_digit();
            for d in 0..10u8 {
                let digit = b'0' + d;
                if no_digit_first || (info.no_start_in_run && !info.first_bytes.contains(digit)) {
                    plan.bad_first_digit[usize::from(d)] |= 1 << i;
                }
                if no_digit_last || (info.no_end_in_run && !info.last_bytes.contains(digit)) {
                    plan.bad_last_digit[usize::from(d)] |= 1 << i;
                }
            }
            for b in 0..=255u8 {
                let outside = !info.allowed.contains(b);
                let foreign_word = is_word(b) && outside;
                // A match holding a digit of the run either starts at or inside the run
                // (after a word byte, which a digit-first match cannot) or takes in `b`.
                if compiled[r].digit_after_nonword && foreign_word {
                    plan.kill_before[usize::from(b)] |= 1 << i;
                }
                if whole && info.leading_boundary && foreign_word {
                    plan.kill_before[usize::from(b)] |= 1 << i;
                }
                if whole && info.trailing_boundary && foreign_word {
                    plan.kill_after[usize::from(b)] |= 1 << i;
                }
                if outside {
                    plan.outside[usize::from(b)] |= 1 << i;
                }
            }
        }
        plan.by_len = (0..=64u64).map(|len| plan.length_masks(len)).collect();
        let no_digit_first = plan
            .bad_first_digit
            .iter()
            .fold(u64::MAX, |acc, &bad| acc & bad);
        for b in 0..256 {
            plan.dead_left[b] = plan.kill_before[b] | (plan.outside[b] & no_digit_first);
        }
        plan
    }

    /// The stretch of bytes any rule allows around `run`, as far as the longest match
    /// reaches: (its length, its digits). Every rule's token (see [`token`]) lies inside
    /// it, so a rule needing a longer token or more digits is out without its own walk.
    /// Most runs that reach the gates (digits between dashes in UUIDs, numbers in prose)
    /// end here, for all rules at once.
    ///
    /// `cache` is the last stretch walked (to the right [`WALK_AHEAD`] times further than
    /// the longest match): a later run whose own stretch lies inside it gets its figures
    /// without a walk ([`Stretch::holds`]). They are the same or larger: larger only lets
    /// more rules through to their own gates, as a prefilter may.
    fn reach(&self, hay: &[u8], base: u64, run: &Run, cache: &mut Option<Stretch>) -> (u64, u64) {
        if let Some(c) = *cache
            && c.holds(run, self.max_len)
        {
            return (c.t1 - c.t0, c.digits);
        }
        let ahead = self.max_len * WALK_AHEAD;
        let tok = token(hay, base, run, (self.max_len, ahead), &self.any, None);
        let c = Stretch::of(&tok);
        *cache = Some(c);
        (c.t1 - c.t0, c.digits)
    }

    /// (rules a run of `len` digits fits, rules whose shortest token is longer than `len`)
    fn length_masks(&self, len: u64) -> (u64, u64) {
        let (mut fits, mut short) = (0u64, 0u64);
        for (i, &(min_run, max_run, min_token)) in self.lengths.iter().enumerate().take(64) {
            if len >= min_run && max_run.is_none_or(|m| len <= m) {
                fits |= 1 << i;
            }
            if len < min_token {
                short |= 1 << i;
            }
        }
        (fits, short)
    }

    /// [`DigitPlan::candidates`] for a run of fewer than 64 digits with both neighbours
    /// known: the common case, a handful of table lookups inlined into the block pass.
    #[inline(always)]
    fn candidates_inside(&self, len: u32, run: &[u8], before: u8, after: u8) -> u64 {
        self.judge(
            self.by_len[len as usize],
            (run[0], run[run.len() - 1]),
            (
                self.outside[usize::from(before)],
                self.kill_before[usize::from(before)],
            ),
            (
                self.outside[usize::from(after)],
                self.kill_after[usize::from(after)],
            ),
        )
    }

    /// The rules that may match around a whole run of `len` digits, first digit `first`
    /// and last `last`, between `before` and `after` (`None`: the stream's start or end).
    fn candidates(&self, len: u64, edges: (u8, u8), before: Option<u8>, after: Option<u8>) -> u64 {
        let lengths = match self.by_len.get(len as usize) {
            Some(&masks) => masks,
            None => self.length_masks(len),
        };
        // No neighbour: as if one no match may contain, that rules nothing out itself.
        let side = |b: Option<u8>, kill: &[u64; 256]| {
            b.map_or((u64::MAX, 0), |b| {
                (self.outside[usize::from(b)], kill[usize::from(b)])
            })
        };
        self.judge(
            lengths,
            edges,
            side(before, &self.kill_before),
            side(after, &self.kill_after),
        )
    }

    /// The candidate rules from a run's length masks (see [`DigitPlan::by_len`]), its edge
    /// digits and, per side, (rules the neighbour is outside of, rules it kills).
    #[inline(always)]
    fn judge(
        &self,
        (fits, short): (u64, u64),
        (first, last): (u8, u8),
        (outside_before, kill_before): (u64, u64),
        (outside_after, kill_after): (u64, u64),
    ) -> u64 {
        let kill = kill_before
            | kill_after
            | (outside_before & self.bad_first_digit[usize::from(first - b'0')])
            | (outside_after & self.bad_last_digit[usize::from(last - b'0')])
            // Neither neighbour can be part of a match: the token is the run itself.
            | (outside_before & outside_after & short);
        let mask = fits & !kill;
        if self.rules.len() > 64 {
            mask | 1 << 63
        } else {
            mask
        }
    }
}

/// A rule set compiled for scanning. Cheap to share (`Send + Sync`); one per rule set.
pub struct Engine {
    ids: Vec<String>,
    categories: Vec<String>,
    rules: Vec<CompiledRule>,
    /// Literal prefixes of two bytes (memchr on the first), exact, and rule keywords of
    /// one byte (memchr), ASCII case-insensitive, in one set when one memchr pass finds
    /// both: use = (rule index, is a keyword).
    short_anchors: Vec<LiteralSet<(usize, bool)>>,
    /// Longer literal prefixes (exact) and rule keywords (ASCII case-insensitive), found in
    /// one pass: use = (rule index, is a keyword).
    anchors: Option<LiteralSet<(usize, bool)>>,
    /// Context words, ASCII case-insensitive, searched only near matches: use = rule index.
    context: Option<LiteralSet<usize>>,
    /// Longest prefix or keyword: the overlap kept for the eager literal passes.
    anchor_overlap: u64,
    /// Longest context word.
    context_max_len: u64,
    digits: DigitPlan,
    /// Per category: its rule when it has just one (its distinct values are the rule's).
    category_rule: Vec<Option<usize>>,
    /// Rules found by their lead classes; the range masks of the block pass.
    leads: LeadPlan,
    max_len: u64,
    max_window: u64,
    hash_key: [u64; 2],
    exact: Option<Arc<dyn ExactIndex>>,
    /// Some rule has `edm.near`: exact-match places must be remembered.
    exact_pairs: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rules", &self.ids)
            .field("digits", &self.digits)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Compiles a validated rule set with a random hash key and no EDM index. Patterns were
    /// checked when the set was loaded.
    pub fn new(set: &RuleSet) -> Engine {
        Engine::with_options(set, EngineOptions::default())
            .expect("without an index every rule set compiles")
    }

    /// Compiles a validated rule set; fails when a rule's `edm:` names a column the index
    /// does not have.
    pub fn with_options(set: &RuleSet, options: EngineOptions) -> Result<Engine, EngineError> {
        let mut categories: Vec<String> = Vec::new();
        let mut rules = Vec::new();
        let (mut prefixes, mut keywords, mut context) = (Vec::new(), Vec::new(), Vec::new());
        let mut leads = LeadPlan::new();
        for (idx, rule) in set.rules().iter().enumerate() {
            let category = match categories.iter().position(|c| *c == rule.category) {
                Some(i) => i,
                None => {
                    categories.push(rule.category.clone());
                    categories.len() - 1
                }
            };
            let info = rule.info.clone();
            // Every keyword is one byte every match contains (the `@` of an email): a
            // match holds a keyword hit, so it lies in the token of allowed bytes around one.
            let inner_keywords = !rule.keywords.is_empty()
                && rule.keywords.iter().all(|k| {
                    let k = k.as_bytes();
                    k.len() == 1
                        && !k[0].is_ascii_alphabetic()
                        && info.required_bytes.contains(&k[0])
                });
            let mut anchor = if !rule.keywords.is_empty() {
                keywords.extend(rule.keywords.iter().map(|k| (k.as_bytes().to_vec(), idx)));
                Anchor::Keywords
            } else if info.prefixes.is_some() {
                Anchor::Prefixes
            } else if info.min_digit_run >= 1 && info.allowed.has_digit() {
                Anchor::DigitRuns
            } else {
                Anchor::FullScan
            };
            // Other keywords open a window either side of each hit, which one small
            // table searches in one pass. A pattern that is not one (the AWS secret key,
            // an email pattern near a word: the regex crate could fall back to simulating
            // it, see `small_table`) is tried as its anchored table at each place of the
            // window instead, every byte walked counted as work, so a body made for it
            // stops the rule. Looked for once: it costs a determinization of up to 4 MiB.
            let keyword_table = (anchor == Anchor::Keywords && !inner_keywords)
                .then(|| super::small_table(&rule.pattern));
            let mut anchored = match anchor {
                Anchor::Prefixes | Anchor::DigitRuns | Anchor::FullScan => {
                    AnchoredDfa::build(&rule.pattern)
                }
                Anchor::Keywords if matches!(keyword_table, Some(Some(_))) => None,
                Anchor::Keywords => AnchoredDfa::build(&rule.pattern),
                Anchor::LeadBytes => None,
            };
            let probe = if anchor == Anchor::Keywords && !inner_keywords && anchored.is_some() {
                info.required_bytes
                    .iter()
                    .copied()
                    .min_by_key(|&b| probe_rank(b))
            } else {
                None
            };
            let lead = anchored
                .as_ref()
                .map(|dfa| Lead::of(dfa, MAX_DEPTH.min(info.min_len)));
            let digit_after_nonword = lead.as_ref().is_some_and(|l| l.digit_after_nonword);
            // Digit-run and full-scan rules are found by their lead classes instead when
            // those are rare in ordinary text and the block pass's classes filter them.
            if matches!(anchor, Anchor::DigitRuns | Anchor::FullScan)
                && let Some(lead) = &lead
                && leads.add(idx, lead)
            {
                anchor = Anchor::LeadBytes;
            }
            if anchor == Anchor::FullScan {
                // A full scan searches each window from one small table.
                anchored = None;
            }
            let confirm = match anchored {
                Some(dfa) => Confirm::Anchored(dfa),
                None => match keyword_table.unwrap_or_else(|| super::small_table(&rule.pattern)) {
                    Some(table) => Confirm::Table(table),
                    None => {
                        Confirm::Regex(compile(&rule.pattern).expect("pattern validated at load"))
                    }
                },
            };
            if anchor == Anchor::Prefixes
                && let Some(lits) = &info.prefixes
            {
                prefixes.extend(lits.iter().map(|p| (p.clone(), idx)));
            }
            if let Some(c) = &rule.context {
                context.extend(c.words.iter().map(|w| (w.as_bytes().to_vec(), idx)));
            }
            let exact = match (&rule.edm, &options.exact) {
                (Some(edm), Some(index)) => {
                    let column = |name: &str| {
                        index.field(name).ok_or_else(|| EngineError {
                            rule: rule.id.clone(),
                            message: format!("edm: the index has no column {name:?}"),
                        })
                    };
                    Some(ExactRule {
                        field: column(&edm.field)?,
                        near: edm
                            .near
                            .iter()
                            .map(|n| column(n))
                            .collect::<Result<_, _>>()?,
                        window: edm.window as u64,
                    })
                }
                _ => None,
            };
            rules.push(CompiledRule {
                classes: byte_classes(&info.allowed),
                exact,
                confirm,
                inner_keywords,
                digit_after_nonword,
                probe,
                anchor,
                validator: rule.validator,
                normalize: rule.normalize,
                mask: rule.mask,
                exclude: Excludes::new(&rule.exclude),
                context: rule.context.as_ref().map(|c| (c.window as u64, c.required)),
                keywords_are_context: anchor == Anchor::Keywords
                    && rule.context.as_ref().is_some_and(|c| {
                        c.window >= info.max_len
                            && rule
                                .keywords
                                .iter()
                                .all(|k| c.words.iter().any(|w| w.eq_ignore_ascii_case(k)))
                    }),
                category,
                info,
            });
        }
        let (short_prefixes, prefixes): (Vec<_>, Vec<_>) =
            prefixes.into_iter().partition(|(p, _)| p.len() <= 2);
        let (keyword_bytes, keywords): (Vec<_>, Vec<_>) =
            keywords.into_iter().partition(|(k, _)| k.len() == 1);
        let tag = |items: Vec<(Vec<u8>, usize)>, keyword: bool| {
            items
                .into_iter()
                .map(move |(l, r)| (l, (r, keyword), keyword))
                .collect::<Vec<_>>()
        };
        // One memchr pass for both when it can take them (a `+` prefix and `@`: memchr2),
        // else a pass each.
        let (short_prefixes, keyword_bytes) =
            (tag(short_prefixes, false), tag(keyword_bytes, true));
        let both = [short_prefixes.clone(), keyword_bytes.clone()].concat();
        let short_anchors: Vec<_> = match LiteralSet::mixed(both) {
            Some(set) if set.is_bytes() => vec![set],
            _ => [short_prefixes, keyword_bytes]
                .into_iter()
                .filter_map(LiteralSet::mixed)
                .collect(),
        };
        let mut long_anchors = tag(prefixes, false);
        long_anchors.extend(tag(keywords, true));
        let anchors = LiteralSet::mixed(long_anchors);
        let context = LiteralSet::new(context, true);
        let digits = DigitPlan::new(
            (0..rules.len())
                .filter(|&i| rules[i].anchor == Anchor::DigitRuns)
                .collect(),
            &rules,
        );
        if !digits.rules.is_empty() {
            leads.add_digits(&digits);
        }
        // The lead places cut by the end of the bytes fed so far, and the byte before them,
        // must still be there when the next bytes come.
        let anchor_overlap = short_anchors
            .iter()
            .chain(&anchors)
            .map(|s| s.max_len as u64)
            .chain([leads.depth as u64])
            .max()
            .unwrap_or(0);
        let category_rule = (0..categories.len())
            .map(|c| {
                let mut of = (0..rules.len()).filter(|&r| rules[r].category == c);
                match (of.next(), of.next()) {
                    (Some(r), None) => Some(r),
                    _ => None,
                }
            })
            .collect();
        let exact_pairs = rules
            .iter()
            .any(|r| r.exact.as_ref().is_some_and(|x| !x.near.is_empty()));
        Ok(Engine {
            ids: set.rules().iter().map(|r| r.id.clone()).collect(),
            max_len: rules
                .iter()
                .map(|r| r.info.max_len as u64)
                .max()
                .unwrap_or(0),
            max_window: rules
                .iter()
                .filter_map(|r| r.context.map(|c| c.0))
                .max()
                .unwrap_or(0),
            anchor_overlap,
            context_max_len: context.as_ref().map_or(0, |s| s.max_len as u64),
            categories,
            rules,
            short_anchors,
            anchors,
            context,
            digits,
            leads,
            category_rule,
            hash_key: options.hash_key,
            exact_pairs,
            exact: options.exact,
        })
    }

    /// The keyed 64-bit hash distinct values are counted by (of the normalised value).
    pub fn value_hash(&self, normalized: &[u8]) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.hash_key[0], self.hash_key[1]);
        h.write(normalized);
        h.finish()
    }

    /// How each rule's regex is reached, by rule index (for `rules check`).
    pub fn anchors(&self) -> Vec<(&str, Anchor)> {
        self.ids
            .iter()
            .zip(&self.rules)
            .map(|(id, r)| (id.as_str(), r.anchor))
            .collect()
    }

    /// How each rule's matches are found where its prefilter leads, by rule index (for
    /// `rules check`).
    pub fn searches(&self) -> Vec<Search> {
        self.rules.iter().map(|r| r.confirm.search()).collect()
    }

    /// The rules whose windows the regex crate searches: no anchored table and no small
    /// table either (see `small_table`). `rules::load_dir` refuses them (for `rules
    /// check`: on a body made for one, the regex crate's lazy automaton gives up and
    /// simulates the NFA, see `rules::too_slow_to_search`).
    pub(crate) fn regex_searched(&self) -> Vec<(&str, Anchor)> {
        self.ids
            .iter()
            .zip(&self.rules)
            .filter(|(_, r)| r.confirm.search() == Search::Regex)
            .map(|(id, r)| (id.as_str(), r.anchor))
            .collect()
    }

    /// Starts scanning one body.
    pub fn stream(&self) -> Stream<'_> {
        Stream {
            engine: self,
            state: State::new(self),
            buf: Vec::new(),
            base: 0,
        }
    }

    /// Scans a whole in-memory input (no copy); the same findings as streaming it.
    ///
    /// The input is walked in steps of [`SCAN_STEP`] bytes, as if streamed, so that the
    /// gates and regexes run on bytes the prefilters have just brought into cache.
    pub fn scan_bytes(&self, data: &[u8]) -> Findings {
        let mut state = State::new(self);
        let mut end = 0;
        loop {
            end = (end + SCAN_STEP).min(data.len());
            state.advance(self, &data[..end], 0, end == data.len());
            if end == data.len() {
                break;
            }
        }
        state.findings(self, &|_| true)
    }
}

/// Per-body scanning state: feed chunks, then finish. Memory stays bounded whatever the
/// input size: the retained tail is at most a few times the longest pattern match plus the
/// widest context window, and the distinct sets are capped.
pub struct Stream<'e> {
    engine: &'e Engine,
    state: State,
    buf: Vec<u8>,
    /// Absolute offset of `buf[0]` in the stream.
    base: u64,
}

impl Stream<'_> {
    /// The id of the first rule (in rule-set order) whose searches were stopped for too
    /// much work ([`WORK_PER_BYTE`]), if any.
    pub fn stopped(&self) -> Option<&str> {
        let r = self.state.rules.iter().position(|s| s.stopped)?;
        Some(&self.engine.ids[r])
    }

    /// Scans the next piece of the body.
    ///
    /// A piece of at least [`IN_PLACE_MIN`] bytes is scanned where it lies: its first
    /// [`SEAM`] bytes are joined to the retained tail and scanned, after which no byte
    /// before the piece is needed any more (the usual case: only pending matches hold bytes
    /// back, a few KiB at most), so the rest is scanned in the caller's slice and only the
    /// new tail is copied. The engine sees the same bytes at the same offsets either way,
    /// and two advances find what one does (findings do not depend on the split). When
    /// something still needs older bytes, the piece is joined whole as before.
    pub fn feed(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        if chunk.len() >= IN_PLACE_MIN {
            // Absolute offset of `chunk[0]`: `buf` holds `[base, end)`.
            let start = self.state.end;
            let (seam, rest) = chunk.split_at(SEAM);
            self.buf.extend_from_slice(seam);
            self.state.advance(self.engine, &self.buf, self.base, false);
            let low = self.state.low_water(self.engine).max(self.base);
            if low >= start {
                let hay = &chunk[(low - start) as usize..];
                self.state.advance(self.engine, hay, low, false);
                let keep = self.state.low_water(self.engine).max(low);
                self.buf.clear();
                self.buf
                    .extend_from_slice(&chunk[(keep - start) as usize..]);
                self.base = keep;
                return;
            }
            self.buf.extend_from_slice(rest);
        } else {
            self.buf.extend_from_slice(chunk);
        }
        self.state.advance(self.engine, &self.buf, self.base, false);
        let low = self.state.low_water(self.engine).max(self.base);
        let dead = (low - self.base) as usize;
        if dead > 0 && (dead >= 64 * 1024 || dead * 2 >= self.buf.len()) {
            self.buf.drain(..dead);
            self.base = low;
        }
    }

    /// Bytes fed so far.
    pub fn bytes(&self) -> u64 {
        self.state.end
    }

    /// Values counted so far (every match, repeats too): when it has not grown, a snapshot
    /// of the findings would be the same as the last one.
    pub fn matches(&self) -> u64 {
        self.state.matches
    }

    /// Whether places where a value may lie wait for more bytes to be decided (an anchor
    /// hit or a digit run less than the longest match and its context window from the
    /// end): the findings do not cover the bytes fed so far until it is false again. It
    /// becomes false within a few KiB more input when no new place comes. A rule searched
    /// everywhere (`full-scan`, which `rules check` warns of) has a place at every byte:
    /// it is left out, or this would never be false (found in review); its values near
    /// the end are as undecided as a value cut by a chunk's end.
    pub fn undecided(&self) -> bool {
        self.state.open_run.is_some()
            || !self.state.unripe.is_empty()
            || (self.state.rules.iter())
                .zip(&self.engine.rules)
                .any(|(r, c)| c.anchor != Anchor::FullScan && !r.regions.is_empty())
    }

    /// Bytes currently held (the retained tail); bounded, for tests and metrics.
    pub fn held_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// What has been decided so far: a lower bound on the final findings (matches near the
    /// end of what was fed may still be pending). Counts only grow, so a verdict of block
    /// on a snapshot stays block — the proxy uses this to abort an oversize upload early.
    pub fn findings(&self) -> Findings {
        self.state.findings(self.engine, &|_| true)
    }

    /// [`Stream::findings`] without the distinct values' hashes
    /// ([`CategoryCount::values`] left empty): what a verdict on thresholds needs, at the
    /// cost of the counts. A proxy judging a streamed body after every chunk that counted
    /// a value takes this (copying and sorting up to the cap of hashes per category each
    /// time, up to 10 000 per category, is work that grows with the values seen, in a
    /// log full of log-only values on every chunk).
    pub fn counts(&self) -> Findings {
        self.state.findings(self.engine, &|_| false)
    }

    /// [`Stream::counts`] with the hashes of the categories `wanted` says (those a
    /// cumulative window counts), not of the others.
    pub fn counts_with_values(&self, wanted: &dyn Fn(&str) -> bool) -> Findings {
        self.state.findings(self.engine, wanted)
    }

    /// Ends the body and returns what was found.
    pub fn finish(mut self) -> Findings {
        self.state.advance(self.engine, &self.buf, self.base, true);
        self.state.findings(self.engine, &|_| true)
    }
}

type IdSet = HashSet<u64, BuildHasherDefault<IdHasher>>;

/// The distinct values are already keyed hashes: pass them through.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Default)]
struct Distinct {
    set: IdSet,
    capped: bool,
}

impl Distinct {
    /// Inserts; true when the value is new (and was remembered).
    fn insert(&mut self, hash: u64) -> bool {
        if self.set.len() as u64 >= DISTINCT_CAP && !self.set.contains(&hash) {
            self.capped = true;
            return false;
        }
        self.set.insert(hash)
    }
}

#[derive(Default)]
struct RuleState {
    /// Merged windows `[start, end]` where a match may start, in order.
    regions: VecDeque<(u64, u64)>,
    /// Bytes this rule's searches have read, and whether they were stopped for reading
    /// too many (see [`WORK_PER_BYTE`]).
    work: u64,
    stopped: bool,
    /// What the last prefix hit's [`prefix_may_match`] walked, for the next hit to reuse.
    allowed: AllowedRun,
    /// Where the last keyword hit's token started, for the next hit.
    token_start: TokenStart,
    /// Matches never overlap: the next search starts here.
    next_pos: u64,
    count: u64,
    corroborated: u64,
    distinct: Distinct,
    samples: Vec<String>,
}

impl RuleState {
    /// Stops the rule's searches (too much work): its windows are dropped unsearched.
    fn stop(&mut self) {
        self.stopped = true;
        self.regions.clear();
    }

    /// A window searched whole from `from` (one unit a byte, to the match's end or the
    /// window's `limit`): its match, `found` within the window that starts at `base`, as
    /// stream positions.
    fn charge_window(
        &mut self,
        found: Option<(usize, usize)>,
        base: u64,
        from: u64,
        limit: u64,
    ) -> Option<(u64, u64)> {
        let found = found.map(|(s, e)| (base + s as u64, base + e as u64));
        self.work += found.map_or(limit, |m| m.1) - from;
        found
    }

    /// No match starts in the front region up to `accept_to`: drop the region when that is
    /// its end `re` (true: go on with the next one), else keep only the rest (false: stop
    /// here until more bytes arrive).
    fn none_up_to(&mut self, re: u64, accept_to: u64) -> bool {
        if accept_to == re {
            self.regions.pop_front();
            return true;
        }
        if let Some(front) = self.regions.front_mut() {
            front.0 = accept_to + 1;
        }
        false
    }

    /// Adds a window where a match may start. Windows closer than `gap` are merged: one
    /// regex search across a short gap is cheaper than a second search. (Only for rules
    /// whose every match is anchored — prefixes and digit runs — where a merged gap cannot
    /// add a match that no anchor allows.)
    fn push_region(&mut self, start: u64, end: u64, gap: u64) {
        if let Some(last) = self.regions.back_mut()
            && start <= last.1.saturating_add(gap.max(1))
        {
            last.0 = last.0.min(start);
            last.1 = last.1.max(end);
            return;
        }
        self.regions.push_back((start, end));
    }
}

/// Bytes `[from, to)` are all allowed in a rule's match and `digits` of them are digits;
/// `to` is where the last walk stopped (a byte not allowed, the end of the bytes, or the
/// longest match). A later hit inside the stretch starts from there: in a body repeating
/// a prefix (`eyJeyJ…`) every hit used to walk the whole longest match again, 4 KiB for
/// the JWT rule's, and the scan ran at about 1 MB/s.
#[derive(Default, Clone, Copy)]
struct AllowedRun {
    from: u64,
    to: u64,
    digits: u64,
}

/// Where the last keyword hit's token started (`start`, no earlier than its `lo`) and the
/// hit (`at`): a later hit's walk back to its token start stops at `at` and takes `start`
/// from there, so each byte is walked once however dense the hits (a body of `@@@…` used
/// to walk the email rule's longest match back from every `@`).
#[derive(Default, Clone, Copy)]
struct TokenStart {
    at: u64,
    start: u64,
}

impl TokenStart {
    /// Where the token holding `s` starts, no earlier than `lo` (`lo` at least `base`).
    fn of(&mut self, classes: &ByteClasses, hay: &[u8], base: u64, lo: u64, s: u64) -> u64 {
        let known = self.at > lo && self.at <= s;
        let stop = if known { self.at } else { lo };
        let mut t0 =
            base + token_start(classes, hay, (stop - base) as usize, (s - base) as usize) as u64;
        if known && t0 == stop {
            t0 = self.start.max(lo);
        }
        *self = TokenStart { at: s, start: t0 };
        t0
    }
}

/// A digit run (or a piece of a long one) waiting for the bytes after it.
#[derive(Clone, Copy)]
struct Run {
    start: u64,
    end: u64,
    /// Length of the whole run up to `end` (a long run is cut into pieces).
    total: u64,
    /// Candidate rules (see [`DigitPlan`]).
    rules: u64,
}

struct State {
    end: u64,
    /// Values counted so far (every match, repeats too).
    matches: u64,
    /// A digit run reaching the end of the bytes seen so far: (run start, current piece start).
    open_run: Option<(u64, u64)>,
    unripe: VecDeque<Run>,
    /// Per rule: the last token its digit-run gate walked (see [`gate`]).
    tokens: Vec<Option<TokenVerdict>>,
    /// The last stretch [`DigitPlan::reach`] walked: a later run inside it (the next digit
    /// group of a value, the next number of a table) reuses its length and digits.
    reach: Option<Stretch>,
    /// Context words are searched lazily, only near matches that need them.
    context: ContextState,
    rules: Vec<RuleState>,
    categories: Vec<Distinct>,
    scratch: Vec<u8>,
    exact: ExactState,
}

/// Where exact-data-match records were seen, for `edm.near` pairs.
#[derive(Default)]
struct ExactState {
    /// Per record id: the fields matched, where, and the values waiting for a partner.
    hits: HashMap<u32, Vec<ExactHit>>,
    stored: usize,
    /// Values of `edm.near` rules waiting for a partner (taken when counted).
    pending: Vec<Option<Pending>>,
    /// More hits were seen than are remembered.
    capped: bool,
    records: Vec<u32>,
}

struct ExactHit {
    field: u16,
    at: u64,
    pending: Option<u32>,
}

struct Pending {
    rule: usize,
    hash: u64,
    sample: String,
    corroborated: bool,
}

/// Which stretches of the stream have been searched for context words, and what was found.
#[derive(Default)]
struct ContextState {
    /// Sorted, disjoint `[start, end]` ranges of searched word starts.
    covered: VecDeque<(u64, u64)>,
    /// Per rule with context: word hits, start -> end.
    hits: Vec<BTreeMap<u64, u64>>,
    /// Scratch for [`ContextState::cover`].
    gaps: Vec<(u64, u64)>,
}

impl ContextState {
    /// Searches every not yet searched word start in `[lo, hi]`; `hay` must hold the bytes
    /// up to `hi` plus the longest word.
    ///
    /// Values come close together in the data that needs context most (exports), so a
    /// search reaching past what was covered goes on ahead, up to [`CONTEXT_AHEAD`] bytes
    /// as far as `hay` allows: the next values then find their stretch covered already.
    fn cover(&mut self, e: &Engine, hay: &[u8], base: u64, lo: u64, hi: u64) {
        let Some(words) = &e.context else { return };
        let lo = lo.max(base);
        // Values come in order: the last stretch searched nearly always holds the next
        // one's (checked first, without the search below).
        if self
            .covered
            .back()
            .is_some_and(|&(cs, ce)| cs <= lo && hi <= ce)
        {
            return;
        }
        let first = self.covered.partition_point(|&(_, ce)| ce < lo);
        if self
            .covered
            .get(first)
            .is_some_and(|&(cs, ce)| cs <= lo && hi <= ce)
        {
            return;
        }
        let end = base + hay.len() as u64;
        let hi = hi.max((lo + CONTEXT_AHEAD).min(end.saturating_sub(e.context_max_len + 1)));
        let mut gaps = std::mem::take(&mut self.gaps);
        gaps.clear();
        let mut at = lo;
        for &(cs, ce) in self.covered.range(first..) {
            if cs > hi {
                break;
            }
            if cs > at {
                gaps.push((at, cs - 1));
            }
            at = at.max(ce + 1);
        }
        if at <= hi {
            gaps.push((at, hi));
        }
        for &(gs, ge) in &gaps {
            let limit = end.min(ge + e.context_max_len);
            let slice = &hay[..(limit - base) as usize];
            let hits = &mut self.hits;
            words.each(slice, (gs - base) as usize, |s, r, len| {
                let s = base + s as u64;
                if s <= ge {
                    let he = s + len as u64;
                    let slot = hits[r].entry(s).or_insert(he);
                    *slot = (*slot).max(he);
                }
            });
            self.insert_covered(gs, ge);
        }
        self.gaps = gaps;
    }

    /// Records `[s, e]` as searched; it does not overlap what was covered before.
    fn insert_covered(&mut self, s: u64, e: u64) {
        let i = self.covered.partition_point(|&(cs, _)| cs < s);
        let joins_left = i > 0 && self.covered[i - 1].1.saturating_add(1) >= s;
        let joins_right = self
            .covered
            .get(i)
            .is_some_and(|&(cs, _)| cs <= e.saturating_add(1));
        match (joins_left, joins_right) {
            (true, true) => {
                let right = self.covered.remove(i).map_or(e, |(_, ce)| ce);
                self.covered[i - 1].1 = right.max(e);
            }
            (true, false) => self.covered[i - 1].1 = self.covered[i - 1].1.max(e),
            (false, true) => self.covered[i].0 = s,
            (false, false) => self.covered.insert(i, (s, e)),
        }
    }

    fn any_hit(&self, r: usize, lo: u64, hi: u64) -> bool {
        // Most values have no context word near them (a customer export names its columns
        // once): no search of an empty map.
        let hits = &self.hits[r];
        !hits.is_empty()
            && hits
                .range(..=hi)
                .rev()
                .take_while(|&(&hs, _)| hs + 64 >= lo)
                .any(|(_, &he)| he >= lo)
    }

    fn prune(&mut self, keep_from: u64) {
        while self.covered.front().is_some_and(|&(_, ce)| ce < keep_from) {
            self.covered.pop_front();
        }
        for hits in &mut self.hits {
            while hits
                .first_key_value()
                .is_some_and(|(&hs, _)| hs + 64 < keep_from)
            {
                hits.pop_first();
            }
        }
    }
}

impl State {
    fn new(engine: &Engine) -> State {
        let mut rules: Vec<RuleState> = (0..engine.rules.len())
            .map(|_| RuleState::default())
            .collect();
        for (rule, state) in engine.rules.iter().zip(&mut rules) {
            if rule.anchor == Anchor::FullScan {
                state.regions.push_back((0, u64::MAX));
            }
        }
        State {
            matches: 0,
            end: 0,
            open_run: None,
            unripe: VecDeque::new(),
            tokens: vec![None; engine.rules.len()],
            reach: None,
            context: ContextState {
                covered: VecDeque::new(),
                hits: vec![BTreeMap::new(); engine.rules.len()],
                gaps: Vec::new(),
            },
            rules,
            categories: (0..engine.categories.len())
                .map(|_| Distinct::default())
                .collect(),
            scratch: Vec::new(),
            exact: ExactState::default(),
        }
    }

    /// `hay` holds the stream's bytes `[base, base + hay.len())`; everything past
    /// `self.end` is new. With `finishing`, the stream ends at the end of `hay`.
    fn advance(&mut self, e: &Engine, hay: &[u8], base: u64, finishing: bool) {
        let new_from = self.end;
        let end = base + hay.len() as u64;
        self.end = end;
        if end > new_from {
            self.find_anchors(e, hay, base, new_from);
            if !e.digits.rules.is_empty() || !e.leads.rules.is_empty() {
                self.scan_blocks(e, hay, base, new_from);
            }
        }
        if finishing && let Some((total, piece)) = self.open_run.take() {
            self.emit_run(e, hay, base, total, piece, end);
        }
        self.ripen_runs(e, hay, base, finishing);
        for idx in 0..e.rules.len() {
            self.run_rule(e, idx, hay, base, finishing);
        }
        let keep_from = self.low_water(e);
        self.context
            .prune(keep_from.saturating_sub(e.max_window + 64));
    }

    /// Keyword and prefix hits in the new bytes become regions of their rules.
    fn find_anchors(&mut self, e: &Engine, hay: &[u8], base: u64, new_from: u64) {
        for set in e.short_anchors.iter().chain(&e.anchors) {
            let from = new_from.saturating_sub(set.max_len as u64 - 1).max(base);
            let rules = &mut self.rules;
            set.each(hay, (from - base) as usize, |s, (r, is_keyword), len| {
                let s = base + s as u64;
                // A stopped rule searches nothing more: its hits open no window.
                if s + len as u64 <= new_from || rules[r].stopped {
                    return;
                }
                let info = &e.rules[r].info;
                if is_keyword && e.rules[r].inner_keywords {
                    let max = info.max_len as u64;
                    let lo = s.saturating_sub(max).max(base);
                    let state = &mut rules[r];
                    let t0 = state.token_start.of(&e.rules[r].classes, hay, base, lo, s);
                    state.push_region(t0, s, 1);
                } else if is_keyword {
                    let max = info.max_len as u64;
                    let end = s + len as u64 + max;
                    rules[r].push_region(s.saturating_sub(max), end, 1);
                } else if e.rules[r].confirm.anchored().is_none_or(|dfa| {
                    (s == base && base > 0) || dfa.may_start(hay, (s - base) as usize)
                }) && prefix_may_match(hay, base, s, info, &mut rules[r].allowed)
                {
                    // A place the first byte kills (`\beyJ` inside a word) is no region: a
                    // body of `eyJeyJ…` pushed one for every hit.
                    rules[r].push_region(s, s, MERGE_GAP);
                }
            });
        }
    }

    /// The block pass over the new bytes, 64 at a time: digit, upper- and lowercase masks
    /// ([`block_masks`]), then the digit runs and the lead places they give.
    fn scan_blocks(&mut self, e: &Engine, hay: &[u8], base: u64, new_from: u64) {
        let plan = &e.leads;
        let end = base + hay.len() as u64;
        // Lead places cut by the end of the bytes fed before: checked one by one.
        if plan.depth > 1 {
            let lo = new_from.saturating_sub(plan.depth as u64 - 1).max(base);
            for p in lo..new_from {
                for lr in &plan.rules {
                    let len = lr.sets.len() as u64;
                    if p + len > new_from && p + len <= end && lr.holds_at(hay, base, p) {
                        self.lead_hit(e, lr, hay, base, p);
                    }
                }
            }
        }
        let digits = !e.digits.rules.is_empty();
        let bytes = &hay[(new_from - base) as usize..];
        // The block before the current one, whose lead places need the current masks.
        let mut prev: BlockMasks = [0; 3];
        let mut prev_word = 0u64;
        // Whether the byte before the next block is a letter or a digit.
        let mut word_carry =
            u64::from(new_from > base && is_word(hay[(new_from - 1 - base) as usize]));
        for (k, block) in bytes.chunks(WIDTH).enumerate() {
            let at = new_from + (k * WIDTH) as u64;
            let masks = block_masks(hay, (at - base) as usize);
            if digits {
                self.digit_block(e, hay, base, at, block.len() as u32, &masks);
            }
            if plan.rules.is_empty() {
                continue;
            }
            if k > 0 {
                self.lead_block(e, hay, base, at - WIDTH as u64, &prev, &masks, prev_word);
            }
            // Bit `i`: the byte before `at + i` is a letter or a digit.
            let word = masks[DIGITS] | masks[UPPER] | masks[LOWER];
            prev_word = word << 1 | word_carry;
            word_carry = word >> 63;
            prev = masks;
        }
        if !plan.rules.is_empty() && !bytes.is_empty() {
            let last = new_from + ((bytes.len() - 1) / WIDTH * WIDTH) as u64;
            self.lead_block(e, hay, base, last, &prev, &[0; 3], prev_word);
        }
    }

    /// Lead places starting in the block at `at` (`next`: the masks of the block after it,
    /// zero past the bytes fed so far, so places cut by the end are left for later;
    /// `word_before`: bit `i` set when the byte before `at + i` is a word byte).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn lead_block(
        &mut self,
        e: &Engine,
        hay: &[u8],
        base: u64,
        at: u64,
        masks: &BlockMasks,
        next: &BlockMasks,
        word_before: u64,
    ) {
        // Bit `p` of the mask of class `i` for the byte at `p + j` (two shifts: `j` may
        // be 0).
        let at_depth = |j: u32, i: usize| masks[i] >> j | next[i] << 1 << (63 - j);
        let plan = &e.leads;
        let mut shared = if plan.shared_nonword {
            !word_before
        } else {
            u64::MAX
        };
        for &(j, i) in &plan.shared {
            shared &= at_depth(j, i);
        }
        if shared == 0 {
            return;
        }
        for lr in &plan.rules {
            let mut places = if lr.nonword_before {
                shared & !word_before
            } else {
                shared
            };
            for &(j, i) in &lr.filters {
                places &= at_depth(j, i);
            }
            while places != 0 {
                let i = places.trailing_zeros();
                places &= places - 1;
                let p = at + u64::from(i);
                if p + lr.sets.len() as u64 <= base + hay.len() as u64 && lr.holds_at(hay, base, p)
                {
                    self.lead_hit(e, lr, hay, base, p);
                }
            }
        }
    }

    /// A place where rule `lr`'s lead holds: a region, when the byte before allows it.
    fn lead_hit(&mut self, e: &Engine, lr: &LeadRule, hay: &[u8], base: u64, p: u64) {
        // The byte before `hay[0]` is unknown unless it is the stream's start.
        if lr.nonword_before && p > base && is_word(hay[(p - 1 - base) as usize]) {
            return;
        }
        let info = &e.rules[lr.rule].info;
        let state = &mut self.rules[lr.rule];
        if prefix_may_match(hay, base, p, info, &mut state.allowed) {
            state.push_region(p, p, MERGE_GAP);
        }
    }

    /// The digit runs of one block at `at` of `n` bytes.
    fn digit_block(
        &mut self,
        e: &Engine,
        hay: &[u8],
        base: u64,
        at: u64,
        n: u32,
        masks: &BlockMasks,
    ) {
        let plan = &e.leads;
        let min_run = e.digits.min_run.clamp(1, 64) as u32;
        let mut m = masks[DIGITS];
        if let Some((total, piece)) = self.open_run {
            let lead = (!m).trailing_zeros().min(n);
            if lead == n {
                self.extend_open_run(total, piece, at + u64::from(n));
                return;
            }
            self.open_run = None;
            self.emit_run(e, hay, base, total, piece, at + u64::from(lead));
            m &= !((1u64 << lead) - 1);
        }
        if m == 0 {
            return;
        }
        // Bits where a run of at least `min_run` digits starts inside this block.
        let mut starts = run_starts(m, min_run);
        // A run touching the block's end may continue into the next block.
        if m >> (n - 1) & 1 == 1 {
            let t = n - (!(m << (64 - n))).leading_zeros();
            starts &= !(1u64 << t);
            let start = at + u64::from(t);
            self.open_run = Some((start, start));
            self.extend_open_run(start, start, at + u64::from(n));
        }
        if starts == 0 {
            return;
        }
        // Runs right after a byte that rules every digit-run rule out, all at once (the
        // byte before the block by the exact table).
        let kill = plan.kill_left.iter().fold(0u64, |acc, &i| acc | masks[i]);
        starts &= !(kill << 1);
        if starts & 1 == 1
            && at > base
            && plan.kill_table[usize::from(hay[(at - 1 - base) as usize])]
        {
            starts &= !1;
        }
        while starts != 0 {
            let s = starts.trailing_zeros();
            starts &= starts - 1;
            let len = (!(m >> s)).trailing_zeros();
            let start = at + u64::from(s);
            if start == base {
                self.emit_run(e, hay, base, start, start, start + u64::from(len));
                continue;
            }
            // The run ends inside the block: both neighbours are here, and most runs are
            // ruled out by its length and theirs alone.
            let run = &hay[(start - base) as usize..][..len as usize];
            let rules = e.digits.candidates_inside(
                len,
                run,
                hay[(start - 1 - base) as usize],
                hay[(start - base) as usize + run.len()],
            );
            if rules != 0 {
                self.unripe.push_back(Run {
                    start,
                    end: start + u64::from(len),
                    total: u64::from(len),
                    rules,
                });
            }
        }
    }

    /// The open run now reaches `to`: hand whole pieces of a very long run on.
    fn extend_open_run(&mut self, total: u64, piece: u64, to: u64) {
        let piece = self.queue_pieces(total, piece, to, 0);
        self.open_run = Some((total, piece));
    }

    /// Queues whole `RUN_PIECE`-byte pieces of the run `[total, ..)` from `piece` while more
    /// than `keep` bytes would remain before `to`; returns where the next piece starts.
    fn queue_pieces(&mut self, total: u64, mut piece: u64, to: u64, keep: u64) -> u64 {
        while to - piece >= RUN_PIECE + keep {
            self.unripe.push_back(Run {
                start: piece,
                end: piece + RUN_PIECE,
                total: piece + RUN_PIECE - total,
                rules: u64::MAX,
            });
            piece += RUN_PIECE;
        }
        piece
    }

    /// A run `[total, run_end)` ended; queue its last piece `[piece, run_end)` (and any
    /// whole pieces before it).
    fn emit_run(
        &mut self,
        e: &Engine,
        hay: &[u8],
        base: u64,
        total: u64,
        piece: u64,
        run_end: u64,
    ) {
        if run_end - total < e.digits.min_run {
            return;
        }
        let end = base + hay.len() as u64;
        let byte = |p: u64| hay[(p - base) as usize];
        // The byte before a run that began before the retained bytes (a very long run) is
        // unknown: `None` only loosens the checks for it.
        let before = (total > base).then(|| byte(total - 1));
        let after = (run_end < end).then(|| byte(run_end));
        let rules = if total >= base {
            let edges = (byte(total), byte(run_end - 1));
            e.digits.candidates(run_end - total, edges, before, after)
        } else {
            u64::MAX
        };
        if rules == 0 {
            return;
        }
        let piece = self.queue_pieces(total, piece, run_end, 1);
        self.unripe.push_back(Run {
            start: piece,
            end: run_end,
            total: run_end - total,
            rules,
        });
    }

    /// Turns digit runs whose surroundings are now known into rule regions, through each
    /// rule's gate.
    fn ripen_runs(&mut self, e: &Engine, hay: &[u8], base: u64, finishing: bool) {
        let end = base + hay.len() as u64;
        let plan = &e.digits;
        while let Some(&run) = self.unripe.front() {
            if !finishing && run.end + plan.max_len + 1 > end {
                break;
            }
            self.unripe.pop_front();
            let (len, digits) = plan.reach(hay, base, &run, &mut self.reach);
            for (i, &r) in plan.rules.iter().enumerate() {
                if run.rules & (1 << i.min(63)) == 0 {
                    continue;
                }
                let rule = &e.rules[r];
                if len < rule.info.min_len as u64 || digits < rule.info.min_digits as u64 {
                    continue;
                }
                let cache = &mut self.tokens[r];
                if let Some(start) = gate(hay, base, &run, &rule.info, &rule.classes, cache) {
                    self.rules[r].push_region(start, run.end - 1, MERGE_GAP);
                }
            }
        }
    }

    /// Matches of rule `r` starting before this position can be decided now (exclusive).
    fn frontier(&self, e: &Engine, r: usize) -> u64 {
        let rule = &e.rules[r];
        let len = rule.info.max_len as u64;
        let window = rule.context.map_or(0, |c| c.0);
        // Bytes up to the match end, the context window and a word there, and every
        // anchor hit whose region could start before.
        let mut f = self
            .end
            .saturating_sub(len + window + e.context_max_len.max(e.anchor_overlap) + 1);
        if rule.anchor == Anchor::DigitRuns {
            if let Some(run) = self.unripe.front() {
                f = f.min(run.start.saturating_sub(len));
            }
            if let Some((_, piece)) = self.open_run {
                f = f.min(piece.saturating_sub(len));
            }
        }
        f
    }

    fn run_rule(&mut self, e: &Engine, r: usize, hay: &[u8], base: u64, finishing: bool) {
        let end = base + hay.len() as u64;
        let frontier = if finishing {
            u64::MAX
        } else {
            self.frontier(e, r)
        };
        let len = e.rules[r].info.max_len as u64;
        let budget = WORK_FLOOR + WORK_PER_BYTE * self.end;
        while let Some(&(rs, re)) = self.rules[r].regions.front() {
            // Checked at every window, so that one large piece fed at once stops within it
            // (found in review: checked once per advance, a 1 MiB piece did all its work).
            if self.rules[r].stopped || self.rules[r].work > budget {
                self.rules[r].stop();
                return;
            }
            let from = rs.max(self.rules[r].next_pos);
            if from > re || from >= end {
                if from > re || finishing {
                    self.rules[r].regions.pop_front();
                    continue;
                }
                break;
            }
            if from >= frontier {
                break;
            }
            let accept_to = re.min(frontier - 1);
            if let Some((window, true)) = e.rules[r].context
                && !e.rules[r].keywords_are_context
            {
                // No match starting here can count without a context word in reach.
                let lo = from.saturating_sub(window);
                let hi = accept_to + len + window;
                self.context
                    .cover(e, hay, base, lo.saturating_sub(e.context_max_len), hi);
                if !self.context.any_hit(r, lo, hi) {
                    if self.rules[r].none_up_to(re, accept_to) {
                        continue;
                    }
                    break;
                }
            }
            // One byte of look-ahead past the longest match, and no less: a window cut
            // shorter (at a gate's token end, once) ended in a false end of input, where
            // `\b` holds, and a match ran one digit into a long run (found in review).
            let limit = end.min(accept_to.saturating_add(len + 1));
            let rule = &e.rules[r];
            let window = &hay[..(limit - base) as usize];
            let from_at = (from - base) as usize;
            let found = match &rule.confirm {
                Confirm::Anchored(dfa) => {
                    let (lo, hi) = (from_at, (accept_to - base) as usize);
                    let work = &mut self.rules[r].work;
                    let found = match rule.probe {
                        Some(probe) => find_near_probe(
                            dfa,
                            &rule.classes,
                            probe,
                            window,
                            (lo, hi),
                            work,
                            budget,
                        ),
                        None => dfa.find(window, lo, hi, work, budget),
                    };
                    if found.is_none() && *work > budget {
                        // The search gave up at the limit (or its last walk crossed it):
                        // what it did not read is not searched, so the rule stops here.
                        self.rules[r].stop();
                        return;
                    }
                    found.map(|(s, e)| (base + s as u64, base + e as u64))
                }
                Confirm::Table(table) => match table.find_at(window, from_at) {
                    Ok(found) => self.rules[r].charge_window(found, base, from, limit),
                    Err(_) => {
                        // No table of the engine's stops a search (no quit bytes); were
                        // one to, what it did not read is not searched.
                        self.rules[r].stop();
                        return;
                    }
                },
                Confirm::Regex(regex) => {
                    let found = regex.find_at(window, from_at).map(|m| (m.start(), m.end()));
                    self.rules[r].charge_window(found, base, from, limit)
                }
            };
            match found {
                Some((ms, me)) if ms <= accept_to => {
                    self.rules[r].next_pos = me;
                    self.accept(e, r, hay, base, ms, me);
                }
                _ => {
                    if !self.rules[r].none_up_to(re, accept_to) {
                        break;
                    }
                }
            }
        }
    }

    fn accept(&mut self, e: &Engine, r: usize, hay: &[u8], base: u64, start: u64, end: u64) {
        let rule = &e.rules[r];
        let value = &hay[(start - base) as usize..(end - base) as usize];
        if rule.exclude.any(value) || !rule.validator.check(value) {
            return;
        }
        let corroborated = match rule.context {
            None => false,
            Some(_) if rule.keywords_are_context => true,
            Some((window, _)) => {
                let lo = start.saturating_sub(window);
                let hi = end + window;
                self.context
                    .cover(e, hay, base, lo.saturating_sub(e.context_max_len), hi);
                self.context.any_hit(r, lo, hi)
            }
        };
        if let Some((_, true)) = rule.context
            && !corroborated
        {
            return;
        }
        rule.normalize.apply(value, &mut self.scratch);
        let hash = e.value_hash(&self.scratch);
        match (&rule.exact, &e.exact) {
            (Some(x), Some(index)) => {
                self.exact.records.clear();
                index.records(x.field, &self.scratch, &mut self.exact.records);
                self.exact.records.truncate(MAX_RECORDS_PER_VALUE);
                if self.exact.records.is_empty() {
                    return;
                }
                self.accept_exact(e, r, x, start, hash, value, corroborated);
            }
            _ => self.count(e, r, hash, || rule.mask.mask(value), corroborated),
        }
    }

    /// Counts one accepted value of rule `r`.
    fn count(
        &mut self,
        e: &Engine,
        r: usize,
        hash: u64,
        sample: impl FnOnce() -> String,
        corroborated: bool,
    ) {
        self.matches += 1;
        let state = &mut self.rules[r];
        state.count += 1;
        state.corroborated += u64::from(corroborated);
        if state.distinct.insert(hash) && state.samples.len() < MAX_SAMPLES {
            state.samples.push(sample());
        }
        let category = e.rules[r].category;
        // A category of one rule counts exactly the rule's values: no second set.
        if e.category_rule[category].is_none() {
            self.categories[category].insert(hash);
        }
    }

    /// A value of an `edm:` rule found in the records `self.exact.records`, at `at`: counts
    /// it (at once, or once a `near` partner turns up), and settles the values waiting for
    /// this one as their partner. Whichever of a pair is found first, both count: the
    /// result does not depend on the order rules run in, nor on how the input was split.
    #[allow(clippy::too_many_arguments)]
    fn accept_exact(
        &mut self,
        e: &Engine,
        r: usize,
        x: &ExactRule,
        at: u64,
        hash: u64,
        value: &[u8],
        corroborated: bool,
    ) {
        if !e.exact_pairs {
            // No rule pairs columns: nothing to remember.
            return self.count(e, r, hash, || e.rules[r].mask.mask(value), corroborated);
        }
        let records = std::mem::take(&mut self.exact.records);
        let near = |hit: &ExactHit| x.near.contains(&hit.field) && hit.at.abs_diff(at) <= x.window;
        let paired = x.near.is_empty()
            || records
                .iter()
                .any(|id| self.exact.hits.get(id).is_some_and(|h| h.iter().any(near)));
        let mut waiting = None;
        if paired {
            self.count(e, r, hash, || e.rules[r].mask.mask(value), corroborated);
        } else if self.exact.stored < MAX_EXACT_HITS {
            waiting = Some(self.exact.pending.len() as u32);
            self.exact.pending.push(Some(Pending {
                rule: r,
                hash,
                sample: e.rules[r].mask.mask(value),
                corroborated,
            }));
        }
        // Values waiting for this field of these records, close enough, count now.
        let mut settled = Vec::new();
        for id in &records {
            let Some(hits) = self.exact.hits.get(id) else {
                continue;
            };
            for hit in hits {
                let Some(p) = hit.pending else { continue };
                let Some(Some(pending)) = self.exact.pending.get(p as usize) else {
                    continue;
                };
                let Some(wants) = &e.rules[pending.rule].exact else {
                    continue;
                };
                if wants.near.contains(&x.field) && hit.at.abs_diff(at) <= wants.window {
                    settled.push(p);
                }
            }
        }
        for p in settled {
            if let Some(pending) = self.exact.pending[p as usize].take() {
                let Pending {
                    rule,
                    hash,
                    sample,
                    corroborated,
                } = pending;
                self.count(e, rule, hash, || sample, corroborated);
            }
        }
        for &id in &records {
            if self.exact.stored >= MAX_EXACT_HITS {
                self.exact.capped = true;
                break;
            }
            self.exact.stored += 1;
            self.exact.hits.entry(id).or_default().push(ExactHit {
                field: x.field,
                at,
                pending: waiting,
            });
        }
        self.exact.records = records;
    }

    /// The lowest absolute position whose byte may still be needed.
    fn low_water(&self, e: &Engine) -> u64 {
        // A match not found yet starts at most the longest match (and an anchor) back, and
        // its context words lie up to the widest window (and a word) before it.
        let window_reach = e.max_window + e.context_max_len;
        let mut low = self
            .end
            .saturating_sub(e.anchor_overlap + e.max_len + 2 + window_reach);
        for (rule, state) in e.rules.iter().zip(&self.rules) {
            if let Some(&(rs, _)) = state.regions.front() {
                let from = rs.max(state.next_pos).min(self.end);
                let context = rule.context.map_or(0, |c| c.0 + e.context_max_len);
                low = low.min(from.saturating_sub(1 + context));
            }
        }
        // A run's region may start a longest match before it (the token walk), and its
        // context words lie a window before that.
        let run_reach = e.digits.max_len + 1 + window_reach;
        if let Some(run) = self.unripe.front() {
            low = low.min(run.start.saturating_sub(run_reach));
        }
        if let Some((_, piece)) = self.open_run {
            low = low.min(piece.saturating_sub(run_reach));
        }
        low
    }

    /// The findings so far; `values`: the categories whose distinct values' hashes come
    /// with them (sorted).
    fn findings(&self, e: &Engine, values: &dyn Fn(&str) -> bool) -> Findings {
        let rules = e
            .rules
            .iter()
            .zip(&self.rules)
            .enumerate()
            .filter(|(_, (_, s))| s.count > 0)
            .map(|(i, (rule, s))| RuleFinding {
                index: i,
                rule: e.ids[i].clone(),
                category: e.categories[rule.category].clone(),
                count: s.count,
                distinct: s.distinct.set.len() as u64,
                distinct_capped: s.distinct.capped,
                corroborated: s.corroborated,
                samples: s.samples.clone(),
            })
            .collect();
        let categories = e
            .categories
            .iter()
            .zip(&self.categories)
            .zip(&e.category_rule)
            .map(|((c, d), only)| (c, only.map_or(d, |r| &self.rules[r].distinct)))
            .filter(|(_, d)| !d.set.is_empty())
            .map(|(c, d)| CategoryCount {
                category: c.clone(),
                distinct: d.set.len() as u64,
                distinct_capped: d.capped,
                values: if values(c) {
                    let mut values: Vec<u64> = d.set.iter().copied().collect();
                    values.sort_unstable();
                    values
                } else {
                    Vec::new()
                },
            })
            .collect();
        Findings {
            bytes: self.end,
            rules,
            categories,
            exact_capped: self.exact.capped,
            stopped: (self.rules.iter().enumerate())
                .filter(|(_, s)| s.stopped)
                .map(|(i, _)| e.ids[i].clone())
                .collect(),
        }
    }
}

/// A rule's exclude patterns as searched: all at once, so a value costs one search, not
/// one per pattern (the email rule's four suffix patterns, one search each, cost 2.3 %
/// more instructions on the dense corpus). First as one DFA walked from a flat table
/// ([`AnyDfa`]), else one [`RegexSet`], else each on its own (if together they exceed
/// the compile limits). Both keep each pattern's own flags and comments: joining them
/// into one regex `(?:a)|(?:b)` did not (found in review: a verbose pattern ending in a
/// `#` comment swallowed the join, and both patterns matched nothing).
#[derive(Debug)]
enum Excludes {
    Dfa(Box<AnyDfa>),
    Set(RegexSet),
    Each(Vec<Regex>),
}

impl Excludes {
    fn new(patterns: &[String]) -> Excludes {
        let each = || {
            Excludes::Each(
                patterns
                    .iter()
                    .map(|e| compile(e).expect("exclude validated at load"))
                    .collect(),
            )
        };
        if patterns.is_empty() {
            return each();
        }
        if let Some(dfa) = AnyDfa::build(patterns) {
            return Excludes::Dfa(Box::new(dfa));
        }
        if patterns.len() < 2 {
            return each();
        }
        compile_set(patterns).map_or_else(|_| each(), Excludes::Set)
    }

    /// Whether any pattern matches `value`.
    fn any(&self, value: &[u8]) -> bool {
        match self {
            Excludes::Dfa(dfa) => dfa.is_match(value),
            Excludes::Set(set) => set.is_match(value),
            Excludes::Each(each) => each.iter().any(|x| x.is_match(value)),
        }
    }
}

/// Whether a match of `info` may start at `s`, where one of its literal prefixes starts:
/// the bytes it may contain must go on long enough, with enough digits. When the stream
/// does not yet hold the pattern's longest match, the regex decides. `run` is what the
/// previous hit's walk learnt (each byte is walked about once, however dense the hits).
fn prefix_may_match(
    hay: &[u8],
    base: u64,
    s: u64,
    info: &PatternInfo,
    run: &mut AllowedRun,
) -> bool {
    let from = (s - base) as usize;
    let Some(window) = hay.get(from..from + info.max_len) else {
        return true;
    };
    let (mut len, mut digits) = (0, 0);
    if run.from >= base && run.from <= s && s <= run.to {
        let dropped = &hay[(run.from - base) as usize..from];
        digits = run.digits - dropped.iter().filter(|b| b.is_ascii_digit()).count() as u64;
        len = (run.to - s) as usize;
    }
    let ends = loop {
        let Some(&b) = window.get(len) else {
            break false;
        };
        if !info.allowed.contains(b) {
            break true;
        }
        digits += u64::from(b.is_ascii_digit());
        len += 1;
    };
    *run = AllowedRun {
        from: s,
        to: s + len as u64,
        digits,
    };
    (!ends || len >= info.min_len) && digits >= info.min_digits as u64
}

/// ASCII word bytes (`\w` under `(?-u)`: letters, digits, `_`), as a table: one load
/// where the range tests take several instructions, on every byte a boundary walk reads.
static WORD: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_';
        b += 1;
    }
    t
};

/// How common `b` is in ordinary text, roughly (lower is rarer): the choice of a rule's
/// [`CompiledRule::probe`] among the bytes every match holds (the email pattern's `@`
/// rather than its `.`). Never used for correctness.
fn probe_rank(b: u8) -> u8 {
    match b {
        b' ' | b'a'..=b'z' => 5,
        b'A'..=b'Z' | b'0'..=b'9' | b'\n' => 4,
        b'.' | b',' | b'"' | b'-' | b'_' | b'/' | b':' | b'=' => 3,
        b';' | b'(' | b')' | b'\'' | b'{' | b'}' | b'[' | b']' | b'<' | b'>' | b'&' => 2,
        0x21..=0x7e => 1,
        _ => 0,
    }
}

/// [`AnchoredDfa::find`] of the leftmost match starting in `hay[lo..=hi]`, for a pattern
/// every match of which holds `probe`: a match holds every byte from its start to its
/// first `probe`, all bytes the pattern allows (`classes`), so it starts in the token of
/// allowed bytes left of an occurrence of `probe`. Only those places are tried: a keyword's
/// window holding no `probe` costs one `memchr`, where trying every place of it walked
/// most words of ordinary text (an email pattern near a word). Gives up past `limit`, as
/// [`AnchoredDfa::find`] does.
fn find_near_probe(
    dfa: &AnchoredDfa,
    classes: &ByteClasses,
    probe: u8,
    hay: &[u8],
    (lo, hi): (usize, usize),
    work: &mut u64,
    limit: u64,
) -> Option<(usize, usize)> {
    // Starts before `at` were tried (or ruled out: their first `probe` lies before `at`).
    let mut at = lo;
    while at <= hi {
        let q = at + memchr::memchr(probe, hay.get(at..)?)?;
        let t = token_start(classes, hay, at, q);
        if t > hi {
            return None;
        }
        if let Some(found) = dfa.find(hay, t, q.min(hi), work, limit) {
            return Some(found);
        }
        if *work > limit {
            return None;
        }
        at = q + 1;
    }
    None
}

/// Where the token of bytes `classes` allows that ends at `hay[s]` starts: the first of
/// them left of `s`, no earlier than `stop`.
#[inline(always)]
fn token_start(classes: &ByteClasses, hay: &[u8], stop: usize, s: usize) -> usize {
    let mut t = s;
    while t > stop && classes[usize::from(hay[t - 1])] != OUTSIDE {
        t -= 1;
    }
    t
}

#[inline]
fn is_word(b: u8) -> bool {
    WORD[usize::from(b)]
}

/// The first position in `[from, to]` with an ASCII word boundary (the stream's own start
/// and end count as non-word), walking the bytes once.
fn first_boundary(hay: &[u8], base: u64, from: u64, to: u64) -> Option<u64> {
    let word_at = |p: u64| {
        let i = (p - base) as usize;
        i < hay.len() && is_word(hay[i])
    };
    let mut before = from > base && word_at(from - 1);
    for p in from..=to {
        let after = word_at(p);
        if before != after {
            return Some(p);
        }
        before = after;
    }
    None
}

/// Whether rule `info` can have a match that contains digits of `run`, judged only from the
/// bytes around it; returns the first position such a match can start at.
///
/// `cache` holds the last stretch this rule's gate walked ([`Stretch`]): a later run whose
/// token lies inside it ([`Stretch::holds`]) reuses the walk, the stretch-level checks and
/// its first word boundary (once found), which are the same as its own token's or looser
/// (a value with four digit groups is walked once, not four times, and so is a table of
/// numbers about seven longest matches at a time).
fn gate(
    hay: &[u8],
    base: u64,
    run: &Run,
    info: &PatternInfo,
    classes: &ByteClasses,
    cache: &mut Option<TokenVerdict>,
) -> Option<u64> {
    if run.total < info.min_digit_run as u64 {
        return None;
    }
    // A match that can neither start nor end inside a run contains the whole run.
    if info.no_start_in_run && info.no_end_in_run && run.total > info.max_digit_run as u64 {
        return None;
    }
    // A match containing the whole run that cannot reach past a word byte it may not
    // contain starts (ends) at the run itself, where a required \b then cannot hold.
    let whole = info.no_start_in_run && info.no_end_in_run;
    let blocked = |p: u64| {
        let b = hay[(p - base) as usize];
        is_word(b) && !info.allowed.contains(b)
    };
    if whole
        && ((info.leading_boundary && run.start > base && blocked(run.start - 1))
            || (info.trailing_boundary && run.end < base + hay.len() as u64 && blocked(run.end)))
    {
        return None;
    }
    let reach = info.max_len as u64;
    let known = match *cache {
        Some(known) if known.stretch.holds(run, reach) => known,
        _ => {
            let max_run = whole.then_some(info.max_digit_run as u64);
            let tok = token(
                hay,
                base,
                run,
                (reach, reach * WALK_AHEAD),
                classes,
                max_run,
            );
            let walked = TokenVerdict {
                stretch: Stretch::of(&tok),
                fits: token_fits(hay, base, info, &tok),
                boundary: None,
            };
            *cache = Some(walked);
            walked
        }
    };
    if !known.fits {
        return None;
    }
    // The stretch may start further left than this run's token (it was walked for an
    // earlier run): no match holding this run starts before `lo`, and the retained bytes
    // reach back that far (see `State::low_water`).
    let lo = run.start.saturating_sub(reach).max(known.stretch.t0);
    let start = if !info.leading_boundary {
        lo
    } else if let Some(at) = known.boundary {
        // The first boundary from an earlier run's `lo` on: none lies between this one's
        // and it.
        at.max(lo)
    } else {
        // The first boundary from `lo`, if it comes before this run's end; none there now
        // does not mean none before a later run's end.
        let at = first_boundary(hay, base, lo, run.end - 1)?;
        if let Some(cached) = cache {
            cached.boundary = Some(at);
        }
        at
    };
    // A boundary after the run's first digit: the run's digits are all word bytes, so
    // the first place one can be is the run's end.
    let to = known.stretch.t1.min(run.end + reach);
    if info.trailing_boundary && first_boundary(hay, base, run.end, to).is_none() {
        return None;
    }
    Some(start)
}

/// How many times the longest match a token walk goes on to the right of its run inside a
/// long stretch of allowed bytes: the stretch it walks then holds the tokens of the runs
/// after it for about seven longest matches, and serves them without a walk. A body of
/// digit groups with nothing else (`4111 4111 …`) walked twice the longest match for every
/// group and every rule, and ran at about 10 MB/s (1 404 M instructions per 4 MiB with 8,
/// 1 505 M with 4, 4 210 M before). A walk stops at the first byte no match may contain,
/// so most text walks little further: the benign corpus costs 1 % more.
const WALK_AHEAD: u64 = 8;

/// A stretch `[t0, t1)` of bytes a rule (or any digit-run rule) allows, walked once around
/// a digit run, its digits, and whether each end is natural: a byte no match may contain,
/// the stream's start, or a digit run no match may hold, rather than a cut (how far the
/// walk went, or the end of the bytes).
#[derive(Clone, Copy)]
struct Stretch {
    t0: u64,
    t1: u64,
    digits: u64,
    natural: (bool, bool),
}

impl Stretch {
    fn of(tok: &Token) -> Stretch {
        Stretch {
            t0: tok.start,
            t1: tok.end,
            digits: tok.digits,
            natural: tok.natural,
        }
    }

    /// Whether the token of `run` (the walk from it, at most `reach` bytes either side)
    /// lies inside this stretch: then its length, digits and required bytes are at most
    /// the stretch's. Each end is either natural (the run's walk stops there too: every
    /// byte between is allowed, and the same byte or digit run stops it) or far enough
    /// that the run's walk is cut first.
    fn holds(&self, run: &Run, reach: u64) -> bool {
        self.t0 <= run.start
            && run.end <= self.t1
            && (self.natural.0 || run.start.saturating_sub(reach) >= self.t0)
            && (self.natural.1 || run.end + reach <= self.t1)
    }
}

/// What [`gate`] found about one stretch of allowed bytes.
#[derive(Clone, Copy)]
struct TokenVerdict {
    stretch: Stretch,
    /// Long enough, enough digits, the required bytes in it.
    fits: bool,
    /// Its first word boundary, once one was found.
    boundary: Option<u64>,
}

/// The token-level half of [`gate`]: long enough, enough digits, the required bytes.
fn token_fits(hay: &[u8], base: u64, info: &PatternInfo, tok: &Token) -> bool {
    let (t0, t1) = (tok.start, tok.end);
    if t1 - t0 < info.min_len as u64 || tok.digits < info.min_digits as u64 {
        return false;
    }
    let text = &hay[(t0 - base) as usize..(t1 - base) as usize];
    info.required_bytes
        .iter()
        .all(|&b| memchr::memchr(b, text).is_some())
}

/// Per byte, for one rule: [`OUTSIDE`] a match, [`DIGIT`] (allowed), or [`ALLOWED`].
type ByteClasses = [u8; 256];
const OUTSIDE: u8 = 0;
const ALLOWED: u8 = 1;
const DIGIT: u8 = 2;

fn byte_classes(allowed: &ByteSet) -> Box<ByteClasses> {
    let mut classes = Box::new([OUTSIDE; 256]);
    for b in 0..=255u8 {
        if allowed.contains(b) {
            classes[usize::from(b)] = if b.is_ascii_digit() { DIGIT } else { ALLOWED };
        }
    }
    classes
}

/// The stretch of bytes from `allowed` around a digit run.
struct Token {
    start: u64,
    end: u64,
    digits: u64,
    /// Per end: a byte no match may contain, the stream's start, or a digit run too long
    /// for any match, rather than a cut (see [`Stretch`]).
    natural: (bool, bool),
}

/// The stretch of bytes from `allowed` around a digit run, at most `reach.0` bytes to its
/// left and `reach.1` to its right (further, so that later runs reuse it). With
/// `max_run` (a match holds whole digit runs of at most that length), the stretch also
/// stops short of any longer run: no match can take it in or cross it.
fn token(
    hay: &[u8],
    base: u64,
    run: &Run,
    (reach, ahead): (u64, u64),
    classes: &ByteClasses,
    max_run: Option<u64>,
) -> Token {
    let end = base + hay.len() as u64;
    let lo = run.start.saturating_sub(reach).max(base);
    let hi = run.end.saturating_add(ahead).min(end);
    let too_long = |n: u64| max_run.is_some_and(|m| n > m);
    let mut digits = run.end - run.start;
    let (mut t0, mut walked) = (run.start, 0);
    let mut natural = (false, false);
    while t0 > lo {
        let class = classes[usize::from(hay[(t0 - 1 - base) as usize])];
        if class == OUTSIDE {
            natural.0 = true;
            break;
        }
        if class == DIGIT {
            walked += 1;
            if too_long(walked) {
                t0 += walked - 1;
                digits -= walked - 1;
                natural.0 = true;
                break;
            }
            digits += 1;
        } else {
            walked = 0;
        }
        t0 -= 1;
    }
    natural.0 |= t0 == 0;
    let (mut t1, mut walked) = (run.end, 0);
    while t1 < hi {
        let class = classes[usize::from(hay[(t1 - base) as usize])];
        if class == OUTSIDE {
            natural.1 = true;
            break;
        }
        if class == DIGIT {
            walked += 1;
            if too_long(walked) {
                t1 -= walked - 1;
                digits -= walked - 1;
                natural.1 = true;
                break;
            }
            digits += 1;
        } else {
            walked = 0;
        }
        t1 += 1;
    }
    Token {
        start: t0,
        end: t1,
        digits,
        natural,
    }
}

/// What one rule found in one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleFinding {
    /// Index of the rule in its rule set.
    #[serde(skip)]
    pub index: usize,
    /// Rule id.
    pub rule: String,
    /// Rule category.
    pub category: String,
    /// Matches that passed excludes, validator and context.
    pub count: u64,
    /// Distinct values after normalisation (saturates at the cap).
    pub distinct: u64,
    /// True when more distinct values were seen than are remembered.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub distinct_capped: bool,
    /// Matches with one of the rule's context words nearby.
    #[serde(skip_serializing_if = "is_zero")]
    pub corroborated: u64,
    /// Masked samples of the first few distinct values.
    pub samples: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Distinct values of one category across its rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CategoryCount {
    /// The category.
    pub category: String,
    /// Distinct values (saturates at the cap).
    pub distinct: u64,
    /// True when more distinct values were seen than are remembered.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub distinct_capped: bool,
    /// The distinct values' keyed hashes (see [`EngineOptions::hash_key`]), sorted: what
    /// cumulative windows count. Never serialised.
    #[serde(skip)]
    pub values: Vec<u64>,
}

/// Everything found in one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Findings {
    /// Bytes scanned.
    pub bytes: u64,
    /// Per rule that found something, in rule-set order.
    pub rules: Vec<RuleFinding>,
    /// Per category that has values.
    pub categories: Vec<CategoryCount>,
    /// True when more exact-data-match places were seen than are remembered for
    /// `edm.near` pairs (pairs beyond them may be missed).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub exact_capped: bool,
    /// Ids of the rules whose searches were stopped for reading more than
    /// [`WORK_PER_BYTE`] bytes per byte scanned: their counts cover the body only up to
    /// where they stopped, and the body is not fully scanned.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stopped: Vec<String>,
}

impl Findings {
    /// Matches of the rule at `index` in the rule set.
    pub fn rule_count(&self, index: usize) -> u64 {
        self.rules
            .iter()
            .find(|f| f.index == index)
            .map_or(0, |f| f.count)
    }

    /// Distinct values found in `category`.
    pub fn category_distinct(&self, category: &str) -> u64 {
        self.categories
            .iter()
            .find(|c| c.category == category)
            .map_or(0, |c| c.distinct)
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Engine>();
    let _ = ByteSet::EMPTY;
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::scan::analyze::analyze;

    /// An engine of one rule (category `test`; `keywords` a YAML list, or none), loaded
    /// as a rule file is, its embedded tests not run.
    fn engine_of(pattern: &str, keywords: Option<&str>) -> (RuleSet, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let keywords = keywords.map_or(String::new(), |k| format!("keywords: [{k}]\n    "));
        let rule = format!(
            "rules:\n  - id: one\n    name: One\n    category: test\n    \
             pattern: '{pattern}'\n    {keywords}\
             thresholds: {{ log: 1, block: 2 }}\n    tests:\n      \
             match: ['key @aZ']\n      no_match: ['key @A']\n"
        );
        std::fs::write(dir.path().join("r.yaml"), rule).unwrap();
        crate::rules::load_dir_untested_with_engine(dir.path()).expect("the rule loads")
    }

    /// A keyword rule walked as a table, its windows merged into one (`key` every 4 000
    /// bytes in a flood of `@`, each `@` a walk of up to 4 001 bytes): the search gives up
    /// at the work limit, not at the window's end, whether it is tried at every place or
    /// only near a byte every match holds (the `@` of the first pattern). Before, the
    /// first 8 KiB of a 64 KiB piece read about four times the limit at once, and a
    /// larger window more.
    #[test]
    fn a_keyword_window_walked_as_a_table_stops_within_the_work_limit() {
        for (pattern, probe) in [
            ("@[a-z@]{0,4000}Z", true),
            ("[@#][a-z@#]{0,4000}[YZ]", false),
        ] {
            let (set, engine) = engine_of(pattern, Some("key"));
            assert!(
                engine.rules[0].confirm.anchored().is_some(),
                "{pattern}: walked as a table"
            );
            assert_eq!(engine.rules[0].probe.is_some(), probe, "{pattern}");
            let mut body = Vec::new();
            while body.len() < 64 << 10 {
                body.extend_from_slice(b"key");
                body.extend(std::iter::repeat_n(b'@', 3997));
            }
            let mut stream = engine.stream();
            stream.feed(&body);
            let state = &stream.state.rules[0];
            // The limit is the one at the advance that stopped the rule: no more than
            // the one of the whole body.
            let budget = WORK_FLOOR + WORK_PER_BYTE * body.len() as u64;
            let longest = set.rules()[0].info.max_len as u64;
            assert!(
                state.stopped && state.work > WORK_FLOOR && state.work <= budget + longest + 1,
                "{pattern}: read {} against a limit of at most {budget}",
                state.work
            );
            assert_eq!(stream.stopped(), Some("one"));
        }
    }

    /// A stretch walked for an earlier digit run and cut on the right (the walk went its
    /// [`WALK_AHEAD`] longest matches) serves a later run only when that run's own walk
    /// would be cut first: a run near the cut is walked again. Here the only word boundary
    /// a match can end at lies past the cut, and no later run's window reaches back to the
    /// match; taking the first stretch's end for the token's hid it (the `Stretch::holds`
    /// check on the right end, which no test caught before).
    #[test]
    fn a_stretch_cut_on_the_right_serves_no_run_whose_walk_reaches_past_the_cut() {
        let pattern = r"\d{4}[a-z0-9]{0,100}\b";
        let (set, engine) = engine_of(pattern, None);
        let longest = set.rules()[0].info.max_len;
        assert_eq!(longest, 104);
        // The first run's walk stops here, cut.
        let cut = 4 + longest * WALK_AHEAD as usize;
        // Digit runs every 8 bytes; the last one inside the first walk but within a
        // longest match of its cut, its letters running on past the cut to a space.
        let groups = (cut - 36) / 8;
        let mut body = b"1111abcd".repeat(groups);
        body.extend_from_slice(b"1111");
        body.extend(std::iter::repeat_n(b'a', 96));
        body.extend_from_slice(b" end");
        let last = 8 * groups;
        assert!(last + 4 <= cut && last + 4 + longest > cut && last + 100 > cut);
        let want = regex::bytes::Regex::new(pattern).unwrap();
        let starts: Vec<usize> = want.find_iter(&body).map(|m| m.start()).collect();
        assert_eq!(starts, [last], "one match, at the last run");
        let f = engine.scan_bytes(&body);
        assert_eq!(f.rules.iter().map(|r| r.count).sum::<u64>(), 1);
    }

    /// A keyword rule that is not one small table (`a[^\n]{0,60}Z`, 127 NFA states) is
    /// walked as its anchored table, and finds what the regex finds. Searched with the
    /// regex (up to session 26, at most 512 and then 64 states were), 4 MiB of random
    /// `a`/`b` with the keyword every 200 bytes took 1.36 s, charged one unit of work a
    /// byte.
    #[test]
    fn a_keyword_rule_with_no_small_table_is_walked_as_a_table() {
        let pattern = r"a[^\n]{0,60}Z";
        let (_, engine) = engine_of(pattern, Some("kq"));
        assert!(
            engine.rules[0].confirm.anchored().is_some(),
            "walked as a table"
        );
        assert!(engine.regex_searched().is_empty());
        let line = "kq: the account of a customer named Zed, a note for Zoe\n";
        let text = line.repeat(500);
        let want = regex::bytes::Regex::new(pattern).unwrap();
        assert_eq!(want.find_iter(text.as_bytes()).count(), 500);
        let f = engine.scan_bytes(text.as_bytes());
        assert!(f.stopped.is_empty());
        assert_eq!(f.rules.iter().map(|r| r.count).sum::<u64>(), 500);
    }

    /// The next of a xorshift64 sequence (test bodies that need no crate's generator).
    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// A keyword rule that is one small table (`a[ab]{14}Z`: 1 MiB) is searched from it,
    /// not by the regex crate, whose lazy automaton (a 2 MiB cache) gave up on a body made
    /// for it: 4 MiB of random `a`/`b` with the keyword `x` every 30 bytes took 0.17 s
    /// with the regex crate, 0.06 s from the table. It finds what the regex finds.
    #[test]
    fn a_keyword_rule_that_is_one_small_table_is_searched_from_it() {
        let pattern = r"a[ab]{14}Z";
        let (_, engine) = engine_of(pattern, Some("x"));
        assert_eq!(
            engine.rules[0].confirm.search(),
            Search::Table,
            "searched from its table"
        );
        assert!(engine.regex_searched().is_empty());
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut body = Vec::new();
        while body.len() < 256 << 10 {
            body.push(b'x');
            for _ in 0..29 {
                let r = xorshift(&mut x);
                body.push(if r % 97 == 0 {
                    b'Z'
                } else {
                    b"ab"[(r & 1) as usize]
                });
            }
        }
        let want = regex::bytes::Regex::new(pattern).unwrap();
        let expected = want.find_iter(&body).count() as u64;
        assert!(expected >= 100, "{expected}");
        let f = engine.scan_bytes(&body);
        assert!(f.stopped.is_empty());
        assert_eq!(f.rules.iter().map(|r| r.count).sum::<u64>(), expected);
    }

    /// The shipped AWS secret key pattern has 53 NFA states but no small table, and is
    /// walked as its anchored table since session 27 (the regex before). It finds what the
    /// regex finds in a credentials file, and a body made for the regex's lazy automaton
    /// (runs of 39 bytes of `a+/9`, which leave it remembering which of them a key could
    /// start at, near the keyword; 0.47 s for 4 MiB with the regex against 0.08 s for
    /// plain text) is searched to its end with nothing found and the rule not stopped.
    #[test]
    fn the_aws_secret_key_pattern_is_walked_as_a_table() {
        let pattern = r"(?:\b[A-Za-z0-9]|\B[/+])[A-Za-z0-9/+]{38}(?:[A-Za-z0-9]\b|[/+]\B)";
        let (_, engine) = engine_of(pattern, Some("aws_secret_access_key"));
        assert!(
            engine.rules[0].confirm.anchored().is_some(),
            "walked as a table"
        );
        assert!(engine.regex_searched().is_empty());
        let mut creds = String::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || xorshift(&mut x);
        let symbols = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for i in 0..300 {
            let key: String = (0..40)
                .map(|_| char::from(symbols[(next() % 64) as usize]))
                .collect();
            creds += &format!("[p{i}]\naws_secret_access_key = {key}\nregion = us-east-1\n\n");
        }
        let want = regex::bytes::Regex::new(pattern).unwrap();
        let expected = want.find_iter(creds.as_bytes()).count() as u64;
        assert!(expected >= 250, "{expected}");
        let f = engine.scan_bytes(creds.as_bytes());
        assert!(f.stopped.is_empty());
        assert_eq!(f.rules.iter().map(|r| r.count).sum::<u64>(), expected);

        let mut made = String::new();
        while made.len() < 1 << 20 {
            for run in 0..3 {
                if run > 0 {
                    made.push('-');
                }
                made.extend((0..39).map(|_| char::from(b"a+/9"[(next() % 4) as usize])));
            }
            made += " aws_secret_access_key ";
        }
        assert_eq!(want.find_iter(made.as_bytes()).count(), 0);
        let f = engine.scan_bytes(made.as_bytes());
        assert!(f.stopped.is_empty(), "{:?}", f.stopped);
        assert!(f.rules.is_empty());
    }

    /// [`prefix_may_match`] as it was before it reused walks: the whole window each time.
    fn prefix_naive(hay: &[u8], base: u64, s: u64, info: &PatternInfo) -> bool {
        let from = (s - base) as usize;
        let Some(window) = hay.get(from..from + info.max_len) else {
            return true;
        };
        let mut digits = 0;
        for (len, &b) in window.iter().enumerate() {
            if !info.allowed.contains(b) {
                return len >= info.min_len && digits >= info.min_digits;
            }
            digits += usize::from(b.is_ascii_digit());
        }
        digits >= info.min_digits
    }

    /// The walk back to a keyword's token start as it was: from each hit to `lo`.
    fn token_start_naive(classes: &ByteClasses, hay: &[u8], base: u64, lo: u64, s: u64) -> u64 {
        let mut t0 = s;
        while t0 > lo && classes[usize::from(hay[(t0 - 1 - base) as usize])] != OUTSIDE {
            t0 -= 1;
        }
        t0
    }

    /// Bytes from a small alphabet (allowed letters and digits, a few that end tokens), in
    /// runs: some tokens longer than a pattern's longest match.
    fn hay() -> impl Strategy<Value = Vec<u8>> {
        let piece = (
            prop::sample::select(b"aZ09-._@ ,\n".to_vec()),
            prop::sample::select(b"aZ09-._@ ,\n".to_vec()),
            1usize..120,
        );
        proptest::collection::vec(piece, 0..30).prop_map(|pieces| {
            let mut out = Vec::new();
            for (a, b, n) in pieces {
                out.extend((0..n).map(|i| if i % 3 == 0 { b } else { a }));
            }
            out.truncate(600);
            out
        })
    }

    proptest! {
        /// Whatever the hits (in order, repeated, or going back), on one stretch or on
        /// windows that move on as a stream's do, the reuse answers as the full walk did.
        #[test]
        fn reused_walks_answer_as_full_ones(
            hay in hay(),
            hits in proptest::collection::vec(0usize..600, 1..80),
            base_step in 0usize..200,
            pattern in prop::sample::select(vec![
                r"\bx[A-Za-z0-9_-]{8,40}\.[A-Za-z0-9_-]{2,30}",
                r"\bCUST-\d{8}\b",
                r"(?i)\b[a-z0-9._%+-]{1,20}@[a-z0-9-]{1,10}(?:\.[a-z0-9-]{1,10}){0,2}\.[a-z]{2,5}\b",
                r"\+[1-9](?:[ -]?\d){3,9}\b",
            ]),
        ) {
            let info = analyze(pattern).unwrap();
            let classes = byte_classes(&info.allowed);
            let (mut run, mut start) = (AllowedRun::default(), TokenStart::default());
            let mut hits = hits;
            // Mostly ascending, as the anchors report them; a few steps back as well.
            hits.sort_unstable_by_key(|&h| h / 50);
            for (i, &h) in hits.iter().enumerate() {
                // The window the stream holds: it moves on by `base_step` now and then.
                let base = ((i / 10) * base_step).min(h) as u64;
                let (s, window) = (h as u64, hay.get((base as usize)..).unwrap_or(&[]));
                if h >= hay.len() {
                    continue;
                }
                prop_assert_eq!(
                    prefix_may_match(window, base, s, &info, &mut run),
                    prefix_naive(window, base, s, &info),
                    "prefix at {} (base {})", s, base
                );
                let lo = s.saturating_sub(info.max_len as u64).max(base);
                prop_assert_eq!(
                    start.of(&classes, window, base, lo, s),
                    token_start_naive(&classes, window, base, lo, s),
                    "token start at {} (base {})", s, base
                );
            }
        }
    }
}
