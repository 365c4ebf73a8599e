//! The compiled engine and the per-body streaming state. See the module docs in `scan`.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::Regex;
use serde::Serialize;

use super::analyze::{ByteSet, PatternInfo};
use super::{MaskStyle, Normalize, Validator};
use crate::rules::{DISTINCT_CAP, RuleSet, compile};

/// Masked samples kept per rule finding.
pub const MAX_SAMPLES: usize = 3;

/// A run of digits longer than this is handed to the rules in pieces of this size, so the
/// stream never has to hold an unbounded run before deciding.
const RUN_PIECE: u64 = 4096;

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
    /// Everywhere: the pattern offers no prefilter.
    FullScan,
}

/// What an Aho-Corasick hit means.
#[derive(Debug, Clone, Copy)]
enum LiteralUse {
    Keyword(usize),
    Prefix(usize),
    Context(usize),
}

#[derive(Debug)]
struct CompiledRule {
    regex: Regex,
    anchor: Anchor,
    info: PatternInfo,
    validator: Validator,
    normalize: Normalize,
    mask: MaskStyle,
    exclude: Vec<Regex>,
    /// (context group index, window, required)
    context: Option<(usize, u64, bool)>,
    category: usize,
}

/// A rule set compiled for scanning. Cheap to share (`Send + Sync`); one per rule set.
#[derive(Debug)]
pub struct Engine {
    ids: Vec<String>,
    categories: Vec<String>,
    rules: Vec<CompiledRule>,
    literals: Option<AhoCorasick>,
    literal_uses: Vec<Vec<LiteralUse>>,
    literal_max_len: u64,
    digit_rules: Vec<usize>,
    digit_min_run: u64,
    digit_max_len: u64,
    max_len: u64,
    max_window: u64,
    context_groups: usize,
    hash_key: RandomState,
}

impl Engine {
    /// Compiles a validated rule set. Patterns were checked when the set was loaded.
    pub fn new(set: &RuleSet) -> Engine {
        let mut categories: Vec<String> = Vec::new();
        let mut rules = Vec::new();
        let mut literal_texts: Vec<Vec<u8>> = Vec::new();
        let mut literal_uses: Vec<Vec<LiteralUse>> = Vec::new();
        let mut add_literal = |text: &[u8], usage: LiteralUse| {
            let text = text.to_ascii_lowercase();
            match literal_texts.iter().position(|t| *t == text) {
                Some(i) => literal_uses[i].push(usage),
                None => {
                    literal_texts.push(text);
                    literal_uses.push(vec![usage]);
                }
            }
        };
        let mut context_groups = 0;
        for (idx, rule) in set.rules().iter().enumerate() {
            let category = match categories.iter().position(|c| *c == rule.category) {
                Some(i) => i,
                None => {
                    categories.push(rule.category.clone());
                    categories.len() - 1
                }
            };
            let info = rule.info.clone();
            let anchor = if !rule.keywords.is_empty() {
                for kw in &rule.keywords {
                    add_literal(kw.as_bytes(), LiteralUse::Keyword(idx));
                }
                Anchor::Keywords
            } else if let Some(prefixes) = &info.prefixes {
                for p in prefixes {
                    add_literal(p, LiteralUse::Prefix(idx));
                }
                Anchor::Prefixes
            } else if info.min_digit_run >= 1 && info.allowed.has_digit() {
                Anchor::DigitRuns
            } else {
                Anchor::FullScan
            };
            let context = rule.context.as_ref().map(|c| {
                let group = context_groups;
                context_groups += 1;
                for w in &c.words {
                    add_literal(w.as_bytes(), LiteralUse::Context(group));
                }
                (group, c.window as u64, c.required)
            });
            rules.push(CompiledRule {
                regex: compile(&rule.pattern).expect("pattern validated at load"),
                anchor,
                validator: rule.validator,
                normalize: rule.normalize,
                mask: rule.mask,
                exclude: rule
                    .exclude
                    .iter()
                    .map(|e| compile(e).expect("exclude validated at load"))
                    .collect(),
                context,
                category,
                info,
            });
        }
        let literals = (!literal_texts.is_empty()).then(|| {
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .build(&literal_texts)
                .expect("literal set is small and valid")
        });
        let digit_rules: Vec<usize> = (0..rules.len())
            .filter(|&i| rules[i].anchor == Anchor::DigitRuns)
            .collect();
        let digit_min_run = digit_rules
            .iter()
            .map(|&i| rules[i].info.min_digit_run as u64)
            .min()
            .unwrap_or(0);
        let digit_max_len = digit_rules
            .iter()
            .map(|&i| rules[i].info.max_len as u64)
            .max()
            .unwrap_or(0);
        Engine {
            ids: set.rules().iter().map(|r| r.id.clone()).collect(),
            max_len: rules
                .iter()
                .map(|r| r.info.max_len as u64)
                .max()
                .unwrap_or(0),
            max_window: rules
                .iter()
                .filter_map(|r| r.context.map(|c| c.1))
                .max()
                .unwrap_or(0),
            literal_max_len: literal_texts
                .iter()
                .map(|t| t.len() as u64)
                .max()
                .unwrap_or(0),
            categories,
            rules,
            literals,
            literal_uses,
            digit_rules,
            digit_min_run,
            digit_max_len,
            context_groups,
            hash_key: RandomState::new(),
        }
    }

    /// How each rule's regex is reached, by rule index (for `rules check`).
    pub fn anchors(&self) -> Vec<(&str, Anchor)> {
        self.ids
            .iter()
            .zip(&self.rules)
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
    pub fn scan_bytes(&self, data: &[u8]) -> Findings {
        let mut state = State::new(self);
        state.advance(self, data, 0, true);
        state.findings(self)
    }
}

/// Per-body scanning state: feed chunks, then finish. Memory stays bounded whatever the
/// input size: the retained tail is at most a few times the longest pattern match, and the
/// distinct sets are capped.
pub struct Stream<'e> {
    engine: &'e Engine,
    state: State,
    buf: Vec<u8>,
    /// Absolute offset of `buf[0]` in the stream.
    base: u64,
}

impl Stream<'_> {
    /// Scans the next piece of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        self.buf.extend_from_slice(chunk);
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

    /// Bytes currently held (the retained tail); bounded, for tests and metrics.
    pub fn held_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// Ends the body and returns what was found.
    pub fn finish(mut self) -> Findings {
        self.state.advance(self.engine, &self.buf, self.base, true);
        self.state.findings(self.engine)
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
    /// Matches never overlap: the next search starts here.
    next_pos: u64,
    count: u64,
    corroborated: u64,
    distinct: Distinct,
    samples: Vec<String>,
}

impl RuleState {
    fn push_region(&mut self, start: u64, end: u64) {
        if let Some(last) = self.regions.back_mut()
            && start <= last.1.saturating_add(1)
        {
            last.0 = last.0.min(start);
            last.1 = last.1.max(end);
            return;
        }
        self.regions.push_back((start, end));
    }
}

/// A digit run (or a piece of a long one) waiting for the bytes after it.
#[derive(Clone, Copy)]
struct Run {
    start: u64,
    end: u64,
    /// Length of the whole run up to `end` (a long run is cut into pieces).
    total: u64,
}

struct State {
    end: u64,
    open_run: Option<(u64, u64)>,
    unripe: VecDeque<Run>,
    context_hits: Vec<VecDeque<(u64, u64)>>,
    rules: Vec<RuleState>,
    categories: Vec<Distinct>,
    scratch: Vec<u8>,
}

#[inline]
fn any_digit(block: &[u8]) -> bool {
    block
        .iter()
        .fold(0u8, |acc, &b| acc | u8::from(b.wrapping_sub(b'0') < 10))
        != 0
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
            end: 0,
            open_run: None,
            unripe: VecDeque::new(),
            context_hits: vec![VecDeque::new(); engine.context_groups],
            rules,
            categories: (0..engine.categories.len())
                .map(|_| Distinct::default())
                .collect(),
            scratch: Vec::new(),
        }
    }

    /// `hay` holds the stream's bytes `[base, base + hay.len())`; everything past
    /// `self.end` is new. With `finishing`, the stream ends at the end of `hay`.
    fn advance(&mut self, e: &Engine, hay: &[u8], base: u64, finishing: bool) {
        let new_from = self.end;
        let end = base + hay.len() as u64;
        self.end = end;
        if end > new_from {
            self.find_literals(e, hay, base, new_from);
            if !e.digit_rules.is_empty() {
                self.find_digit_runs(e, hay, base, new_from);
            }
        }
        if finishing {
            if let Some((total, piece)) = self.open_run.take() {
                self.emit_run(e, total, piece, end);
            }
        }
        self.ripen_runs(e, hay, base, finishing);
        for idx in 0..e.rules.len() {
            self.run_rule(e, idx, hay, base, finishing);
        }
        self.prune_context(e);
    }

    fn find_literals(&mut self, e: &Engine, hay: &[u8], base: u64, new_from: u64) {
        let Some(ac) = &e.literals else { return };
        let from = new_from.saturating_sub(e.literal_max_len - 1).max(base);
        let slice = &hay[(from - base) as usize..];
        for m in ac.find_overlapping_iter(slice) {
            let (start, mend) = (from + m.start() as u64, from + m.end() as u64);
            if mend <= new_from {
                continue;
            }
            for usage in &e.literal_uses[m.pattern().as_usize()] {
                match *usage {
                    LiteralUse::Keyword(r) => {
                        let len = e.rules[r].info.max_len as u64;
                        self.rules[r].push_region(start.saturating_sub(len), mend + len);
                    }
                    LiteralUse::Prefix(r) => self.rules[r].push_region(start, start),
                    LiteralUse::Context(g) => self.context_hits[g].push_back((start, mend)),
                }
            }
        }
    }

    fn find_digit_runs(&mut self, e: &Engine, hay: &[u8], base: u64, new_from: u64) {
        let bytes = &hay[(new_from - base) as usize..];
        let n = bytes.len();
        let mut i = 0;
        while i < n {
            if self.open_run.is_none() {
                while i + 32 <= n && !any_digit(&bytes[i..i + 32]) {
                    i += 32;
                }
                match bytes[i..].iter().position(u8::is_ascii_digit) {
                    None => break,
                    Some(p) => {
                        i += p;
                        let at = new_from + i as u64;
                        self.open_run = Some((at, at));
                    }
                }
            }
            let Some((total, mut piece)) = self.open_run else {
                break;
            };
            match bytes[i..].iter().position(|b| !b.is_ascii_digit()) {
                None => {
                    i = n;
                    let at = new_from + n as u64;
                    while at - piece >= RUN_PIECE {
                        self.unripe.push_back(Run {
                            start: piece,
                            end: piece + RUN_PIECE,
                            total: piece + RUN_PIECE - total,
                        });
                        piece += RUN_PIECE;
                    }
                    self.open_run = Some((total, piece));
                }
                Some(p) => {
                    i += p;
                    self.open_run = None;
                    self.emit_run(e, total, piece, new_from + i as u64);
                }
            }
        }
    }

    /// A run `[total, run_end)` ended; queue its last piece `[piece, run_end)` (and any
    /// whole pieces before it).
    fn emit_run(&mut self, e: &Engine, total: u64, mut piece: u64, run_end: u64) {
        if run_end - total < e.digit_min_run {
            return;
        }
        while run_end - piece > RUN_PIECE {
            self.unripe.push_back(Run {
                start: piece,
                end: piece + RUN_PIECE,
                total: piece + RUN_PIECE - total,
            });
            piece += RUN_PIECE;
        }
        self.unripe.push_back(Run {
            start: piece,
            end: run_end,
            total: run_end - total,
        });
    }

    /// Turns digit runs whose surroundings are now known into rule regions, through each
    /// rule's gate.
    fn ripen_runs(&mut self, e: &Engine, hay: &[u8], base: u64, finishing: bool) {
        let end = base + hay.len() as u64;
        while let Some(&run) = self.unripe.front() {
            if !finishing && run.end + e.digit_max_len + 1 > end {
                break;
            }
            self.unripe.pop_front();
            for &r in &e.digit_rules {
                let info = &e.rules[r].info;
                if run.total < info.min_digit_run as u64 {
                    continue;
                }
                let len = info.max_len as u64;
                let lo = run.start.saturating_sub(len).max(base);
                let hi = (run.end + len).min(end);
                let mut t0 = run.start;
                let mut digits = run.end - run.start;
                while t0 > lo && info.allowed.contains(hay[(t0 - 1 - base) as usize]) {
                    t0 -= 1;
                    digits += u64::from(hay[(t0 - base) as usize].is_ascii_digit());
                }
                let mut t1 = run.end;
                while t1 < hi && info.allowed.contains(hay[(t1 - base) as usize]) {
                    digits += u64::from(hay[(t1 - base) as usize].is_ascii_digit());
                    t1 += 1;
                }
                if t1 - t0 >= info.min_len as u64 && digits >= info.min_digits as u64 {
                    self.rules[r].push_region(t0, run.end - 1);
                }
            }
        }
    }

    /// Matches of rule `r` starting before this position can be decided now (exclusive).
    fn frontier(&self, e: &Engine, r: usize) -> u64 {
        let rule = &e.rules[r];
        let len = rule.info.max_len as u64;
        let window = rule.context.map_or(0, |c| c.1);
        // Bytes up to the match end plus the context window, and the literal hits there.
        let mut f = self
            .end
            .saturating_sub(len + window + e.literal_max_len + 1);
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
        while let Some(&(rs, re)) = self.rules[r].regions.front() {
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
            let limit = end.min(accept_to.saturating_add(len + 1));
            let found = e.rules[r]
                .regex
                .find_at(&hay[..(limit - base) as usize], (from - base) as usize)
                .map(|m| (base + m.start() as u64, base + m.end() as u64));
            match found {
                Some((ms, me)) if ms <= accept_to => {
                    self.rules[r].next_pos = me;
                    self.accept(
                        e,
                        r,
                        &hay[(ms - base) as usize..(me - base) as usize],
                        ms,
                        me,
                    );
                }
                _ if accept_to == re => {
                    self.rules[r].regions.pop_front();
                }
                _ => {
                    if let Some(front) = self.rules[r].regions.front_mut() {
                        front.0 = accept_to + 1;
                    }
                    break;
                }
            }
        }
    }

    fn accept(&mut self, e: &Engine, r: usize, value: &[u8], start: u64, end: u64) {
        let rule = &e.rules[r];
        if rule.exclude.iter().any(|x| x.is_match(value)) || !rule.validator.check(value) {
            return;
        }
        let corroborated = rule.context.is_some_and(|(group, window, _)| {
            let hits = &self.context_hits[group];
            let lo = start.saturating_sub(window);
            let hi = end + window;
            let first = hits.partition_point(|&(_, he)| he < lo);
            hits.iter()
                .skip(first)
                .take_while(|&&(_, he)| he <= hi + e.literal_max_len)
                .any(|&(hs, _)| hs <= hi)
        });
        if let Some((_, _, true)) = rule.context
            && !corroborated
        {
            return;
        }
        rule.normalize.apply(value, &mut self.scratch);
        let hash = e.hash_key.hash_one(self.scratch.as_slice());
        let state = &mut self.rules[r];
        state.count += 1;
        state.corroborated += u64::from(corroborated);
        if state.distinct.insert(hash) && state.samples.len() < MAX_SAMPLES {
            state.samples.push(rule.mask.mask(value));
        }
        self.categories[rule.category].insert(hash);
    }

    fn prune_context(&mut self, e: &Engine) {
        let keep_from = self.end.saturating_sub(
            2 * e.max_len + 2 * e.max_window + RUN_PIECE + 2 * e.literal_max_len + 8,
        );
        for hits in &mut self.context_hits {
            while hits.front().is_some_and(|&(_, he)| he < keep_from) {
                hits.pop_front();
            }
        }
    }

    /// The lowest absolute position whose byte may still be needed.
    fn low_water(&self, e: &Engine) -> u64 {
        let mut low = self.end.saturating_sub(e.literal_max_len + e.max_len + 2);
        for (rule, state) in e.rules.iter().zip(&self.rules) {
            if let Some(&(rs, _)) = state.regions.front() {
                let from = rs.max(state.next_pos).min(self.end);
                low = low.min(from.saturating_sub(1));
            }
            let _ = rule;
        }
        if let Some(run) = self.unripe.front() {
            low = low.min(run.start.saturating_sub(e.digit_max_len + 1));
        }
        if let Some((_, piece)) = self.open_run {
            low = low.min(piece.saturating_sub(e.digit_max_len + 1));
        }
        low
    }

    fn findings(&self, e: &Engine) -> Findings {
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
            .filter(|(_, d)| !d.set.is_empty())
            .map(|(c, d)| CategoryCount {
                category: c.clone(),
                distinct: d.set.len() as u64,
                distinct_capped: d.capped,
            })
            .collect();
        Findings {
            bytes: self.end,
            rules,
            categories,
        }
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
