//! Cumulative windows: distinct identifiers per sender and category over a sliding span.
//!
//! Per-request thresholds catch the loud leak; a patient insider sends nine emails at a
//! time. [`Windows`] remembers, per principal (the authenticated user, else the client
//! address) and category, which distinct values left in the last `span` (default one
//! hour), and applies its own thresholds to that running count, so that twenty requests
//! of nine customers each are caught like one request of 180.
//!
//! What is kept: only the engine's keyed 64-bit value hashes and when each was last seen —
//! never a value. Everything is bounded: at most `max_values` hashes per principal and
//! category (the oldest go first), at most `max_principals` principals (the least recently
//! active go first); both evictions are counted in [`WindowStats`]. The state lives
//! outside the rule set, so a rule reload keeps it (the engine's hash key is kept across
//! reloads for the same reason).
//!
//! A request's values are recorded only when the request is let through: what a block
//! stopped never left. A request that would take a count to the block threshold is itself
//! blocked, and so is the next one that adds anything new. A body streamed past the hold
//! limit records its values as it goes ([`Windows::observe_streamed`]): they leave before
//! it ends.
//!
//! No I/O; time comes from the caller.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::{Action, Reason};
use crate::rules::Thresholds;
use crate::scan::Findings;

/// Independently locked parts of the table, so concurrent requests rarely wait.
const SHARDS: usize = 16;

/// The rule id reasons from a window carry.
pub const WINDOW_RULE: &str = "window";

/// Validated window settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowConfig {
    /// How far back values count.
    pub span: Duration,
    /// Per category: distinct values within the span that log or block.
    pub thresholds: BTreeMap<String, Thresholds>,
    /// Principals remembered at once.
    pub max_principals: usize,
    /// Distinct values remembered per principal and category.
    pub max_values: usize,
}

impl WindowConfig {
    /// True when any category has a threshold: otherwise windows cost nothing.
    pub fn enabled(&self) -> bool {
        !self.thresholds.is_empty()
    }
}

/// Counters for the metrics.
#[derive(Debug, Default)]
pub struct WindowStats {
    /// Principals currently remembered.
    pub principals: AtomicU64,
    /// Principals forgotten to make room (least recently active first).
    pub evicted_principals: AtomicU64,
    /// Values forgotten before their time because a principal hit `max_values`.
    pub evicted_values: AtomicU64,
    /// Requests whose verdict a window raised (to log or block).
    pub raised: AtomicU64,
}

/// The values are already keyed 64-bit hashes: a set of them needs no hashing of its own.
#[derive(Default, Clone, Copy)]
struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One principal's values of one category: oldest first, plus when each was last seen.
#[derive(Default)]
struct Seen {
    order: VecDeque<(Instant, u64)>,
    last: HashMap<u64, Instant, std::hash::BuildHasherDefault<PassThrough>>,
}

impl Seen {
    /// Forgets what is older than `cutoff`.
    fn expire(&mut self, cutoff: Instant) {
        while let Some(&(t, h)) = self.order.front() {
            if t >= cutoff {
                break;
            }
            self.order.pop_front();
            if self.last.get(&h) == Some(&t) {
                self.last.remove(&h);
            }
        }
    }

    /// Distinct values now, with `new` added.
    fn count_with(&self, new: &[u64]) -> u64 {
        let fresh = new.iter().filter(|h| !self.last.contains_key(h)).count();
        (self.last.len() + fresh) as u64
    }

    /// Distinct values seen at or after `cutoff` (without forgetting the older ones).
    fn live(&self, cutoff: Instant) -> u64 {
        self.last.values().filter(|&&t| t >= cutoff).count() as u64
    }

    /// Records `new` at `now`; returns how many old values were pushed out by the cap.
    fn record(&mut self, new: &[u64], now: Instant, max: usize) -> u64 {
        for &h in new {
            self.last.insert(h, now);
            self.order.push_back((now, h));
        }
        let mut evicted = 0;
        while self.last.len() > max {
            let Some((t, h)) = self.order.pop_front() else {
                break;
            };
            if self.last.get(&h) == Some(&t) {
                self.last.remove(&h);
                evicted += 1;
            }
        }
        // A value seen again leaves its older entry behind in `order`: compact now and
        // then so `order` stays within twice the cap.
        if self.order.len() > 2 * max.max(1) {
            let last = &self.last;
            self.order.retain(|(t, h)| last.get(h) == Some(t));
        }
        evicted
    }
}

type Principal = HashMap<String, Seen>;

/// The windows of every principal.
pub struct Windows {
    config: RwLock<WindowConfig>,
    shards: Vec<Mutex<LruCache<String, Principal>>>,
    pick: RandomState,
    /// Counters for the metrics.
    pub stats: WindowStats,
}

impl std::fmt::Debug for Windows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Windows")
            .field("config", &self.config())
            .finish_non_exhaustive()
    }
}

/// Principals kept per shard.
fn per_shard(config: &WindowConfig) -> NonZeroUsize {
    NonZeroUsize::new(config.max_principals.div_ceil(SHARDS).max(1)).expect("at least one")
}

/// What a window decided about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowVerdict {
    /// The strictest action of the reasons (allow when none).
    pub action: Action,
    /// Per category whose window count crossed a threshold.
    pub reasons: Vec<Reason>,
}

/// The values one request has recorded in the windows so far, per category: a body
/// streamed past the hold limit records its values as it goes, each snapshot carrying all
/// of them so far; those recorded already are not recorded again (recorded again, values
/// a full window had pushed out came back and were pushed out again, counted as evicted
/// at every snapshot: found in review).
#[derive(Debug, Default)]
pub struct Recorded(HashMap<String, HashSet<u64>>);

impl Windows {
    /// An empty table.
    pub fn new(config: WindowConfig) -> Windows {
        Windows {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard(&config))))
                .collect(),
            pick: RandomState::new(),
            stats: WindowStats::default(),
            config: RwLock::new(config),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> WindowConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// True when some category has window thresholds.
    pub fn enabled(&self) -> bool {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .enabled()
    }

    /// New settings (a reload), keeping what was recorded: a changed span or threshold
    /// applies to the values already seen; a smaller `max_principals` forgets the least
    /// recently active principals now.
    pub fn reconfigure(&self, config: WindowConfig) {
        let cap = per_shard(&config);
        for shard in &self.shards {
            let mut table = shard.lock().unwrap_or_else(|p| p.into_inner());
            let before = table.len();
            table.resize(cap);
            let dropped = (before - table.len()) as u64;
            self.stats.principals.fetch_sub(dropped, Ordering::Relaxed);
            self.stats
                .evicted_principals
                .fetch_add(dropped, Ordering::Relaxed);
        }
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// Applies `principal`'s windows to a request with `findings`, at `now`. When `allowed`
    /// (the request itself is not blocked) and the windows do not block it either, its
    /// values are recorded.
    pub fn observe(
        &self,
        principal: &str,
        findings: &Findings,
        allowed: bool,
        now: Instant,
    ) -> WindowVerdict {
        self.observe_recorded(principal, findings, allowed, now, &mut Recorded::default())
    }

    /// [`Windows::observe`] for a request that may have recorded values already
    /// ([`Windows::observe_streamed`]): those in `recorded` are not recorded again, and
    /// those recorded now are added to it.
    pub fn observe_recorded(
        &self,
        principal: &str,
        findings: &Findings,
        allowed: bool,
        now: Instant,
        recorded: &mut Recorded,
    ) -> WindowVerdict {
        let verdict = self.apply(principal, findings, allowed, now, recorded);
        if verdict.action != Action::Allow {
            self.stats.raised.fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    /// [`Windows::observe_recorded`] without counting in [`WindowStats::raised`].
    fn apply(
        &self,
        principal: &str,
        findings: &Findings,
        allowed: bool,
        now: Instant,
        recorded: &mut Recorded,
    ) -> WindowVerdict {
        let mut verdict = WindowVerdict {
            action: Action::Allow,
            reasons: Vec::new(),
        };
        let config = self.config.read().unwrap_or_else(|p| p.into_inner());
        let counted: Vec<_> = findings
            .categories
            .iter()
            .filter_map(|c| Some((c, config.thresholds.get(&c.category)?)))
            .filter(|(c, _)| !c.values.is_empty())
            .collect();
        if counted.is_empty() {
            return verdict;
        }
        let cutoff = now.checked_sub(config.span).unwrap_or(now);
        let shard = &self.shards[self.pick.hash_one(principal) as usize % SHARDS];
        let mut table = shard.lock().unwrap_or_else(|p| p.into_inner());
        if !table.contains(principal) {
            let evicted = table
                .push(principal.to_owned(), Principal::new())
                .is_some_and(|(k, _)| k != principal);
            let counter = if evicted {
                &self.stats.evicted_principals
            } else {
                &self.stats.principals
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let windows = table.get_mut(principal).expect("just inserted");
        // Per category: the values this request has not recorded yet (those it has are
        // in the window, unless pushed out by its cap).
        let fresh: Vec<Vec<u64>> = counted
            .iter()
            .map(|(c, _)| {
                let done = recorded.0.get(&c.category);
                c.values
                    .iter()
                    .copied()
                    .filter(|h| done.is_none_or(|d| !d.contains(h)))
                    .collect()
            })
            .collect();
        for ((category, thresholds), fresh) in counted.iter().zip(&fresh) {
            if !windows.contains_key(&category.category) {
                windows.insert(category.category.clone(), Seen::default());
            }
            let seen = windows
                .get_mut(&category.category)
                .expect("inserted just above");
            seen.expire(cutoff);
            let distinct = seen.count_with(fresh);
            let crossed = [
                (thresholds.block, Action::Block),
                (thresholds.log, Action::Log),
            ]
            .into_iter()
            .find_map(|(t, a)| t.filter(|&t| distinct >= t).map(|t| (t, a)));
            if let Some((threshold, action)) = crossed {
                verdict.action = verdict.action.max(action);
                verdict.reasons.push(Reason {
                    rule: WINDOW_RULE.to_owned(),
                    category: category.category.clone(),
                    distinct,
                    threshold,
                    action,
                    overridden: false,
                });
            }
        }
        if allowed && verdict.action != Action::Block {
            let mut evicted = 0;
            for ((category, _), fresh) in counted.iter().zip(fresh) {
                let seen = windows
                    .get_mut(&category.category)
                    .expect("every counted category has an entry by now");
                evicted += seen.record(&fresh, now, config.max_values);
                recorded
                    .0
                    .entry(category.category.clone())
                    .or_default()
                    .extend(fresh);
            }
            self.stats
                .evicted_values
                .fetch_add(evicted, Ordering::Relaxed);
        }
        verdict
    }

    /// [`Windows::observe`] for a body streamed past the hold limit, judged after every
    /// chunk that counted a value (its values so far, `findings`, with the hashes of the
    /// categories that have window thresholds; the rules let it through so far). Until
    /// session 13 windows applied to such a body only at its end, so values only a window
    /// blocks went upstream first (found in review); and then counting only what the
    /// window had recorded, another request of the same sender did not see the values a
    /// streamed body had in flight (found in review: 9 streamed and 9 held passed a block
    /// at 12). So the values are recorded as the body goes, unless the window blocks it:
    /// the chunks that carry them go upstream next. If the body is blocked later, what it
    /// had sent stays recorded (it left), and so do the values in the chunks it still held
    /// back (at most 1 MiB: counted early rather than missed). `recorded` keeps what the
    /// body recorded, so each value is recorded once, at the snapshots and at the end
    /// ([`Windows::observe_recorded`] with the same `recorded`). Counted in
    /// [`WindowStats::raised`] only for a block, which ends the request (the final
    /// judgement counts the rest).
    pub fn observe_streamed(
        &self,
        principal: &str,
        findings: &Findings,
        now: Instant,
        recorded: &mut Recorded,
    ) -> WindowVerdict {
        let verdict = self.apply(principal, findings, true, now, recorded);
        if verdict.action == Action::Block {
            self.stats.raised.fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    /// Distinct values `principal` sent in `category` within the span, as of `now`.
    pub fn distinct(&self, principal: &str, category: &str, now: Instant) -> u64 {
        let span = self.config.read().unwrap_or_else(|p| p.into_inner()).span;
        let cutoff = now.checked_sub(span).unwrap_or(now);
        let shard = &self.shards[self.pick.hash_one(principal) as usize % SHARDS];
        let table = shard.lock().unwrap_or_else(|p| p.into_inner());
        table
            .peek(principal)
            .and_then(|w| w.get(category))
            .map_or(0, |seen| seen.live(cutoff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::CategoryCount;

    fn config(log: u64, block: u64) -> WindowConfig {
        WindowConfig {
            span: Duration::from_secs(3600),
            thresholds: [(
                "email".to_owned(),
                Thresholds {
                    log: Some(log),
                    block: Some(block),
                },
            )]
            .into(),
            max_principals: 64,
            max_values: 1000,
        }
    }

    fn findings(values: impl IntoIterator<Item = u64>) -> Findings {
        let mut values: Vec<u64> = values.into_iter().collect();
        values.sort_unstable();
        Findings {
            bytes: 0,
            rules: Vec::new(),
            categories: vec![CategoryCount {
                category: "email".into(),
                distinct: values.len() as u64,
                distinct_capped: false,
                values,
            }],
            exact_capped: false,
            stopped: Vec::new(),
        }
    }

    #[test]
    fn a_slow_drip_is_caught_for_that_principal_only() {
        let w = Windows::new(config(30, 100));
        let t0 = Instant::now();
        let mut first_block = None;
        for i in 0..20u64 {
            let v = w.observe("alice", &findings(i * 9..i * 9 + 9), true, t0);
            if v.action == Action::Block && first_block.is_none() {
                first_block = Some(i);
                assert_eq!(v.reasons[0].rule, WINDOW_RULE);
                assert_eq!(v.reasons[0].distinct, i * 9 + 9);
            }
        }
        // 11 requests of 9 make 99; the 12th would make 108.
        assert_eq!(first_block, Some(11));
        assert_eq!(w.distinct("alice", "email", t0), 99);
        // Bob sending the same amount once is below the window threshold.
        let v = w.observe("bob", &findings(0..9), true, t0);
        assert_eq!(v.action, Action::Allow);
    }

    /// A streamed body's snapshots: each records the values so far unless the window
    /// blocks, so another request of the same sender counts them (values in flight), and
    /// only a block counts as raised.
    #[test]
    fn a_streamed_body_records_its_values_as_it_goes() {
        let w = Windows::new(config(6, 12));
        let t0 = Instant::now();
        // Snapshots of one body: 4 values, then 9 (the first 4 again): recorded once each.
        let mut recorded = Recorded::default();
        for n in [4, 9] {
            let v = w.observe_streamed("a", &findings(0..n), t0, &mut recorded);
            assert_ne!(v.action, Action::Block);
        }
        assert_eq!(w.distinct("a", "email", t0), 9);
        assert_eq!(w.stats.raised.load(Ordering::Relaxed), 0);
        // Another request of the sender, with 3 new values: 12, a block.
        let v = w.observe("a", &findings(100..103), true, t0);
        assert_eq!(v.action, Action::Block);
        // The body's next snapshot with 3 more new values blocks it too, recording none.
        let v = w.observe_streamed("a", &findings(0..12), t0, &mut recorded);
        assert_eq!(v.action, Action::Block);
        assert_eq!((v.reasons[0].distinct, v.reasons[0].threshold), (12, 12));
        assert_eq!(w.distinct("a", "email", t0), 9);
        assert_eq!(w.stats.raised.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn repeated_values_count_once_and_old_ones_expire() {
        let w = Windows::new(config(5, 10));
        let t0 = Instant::now();
        for _ in 0..50 {
            assert_eq!(
                w.observe("a", &findings(0..4), true, t0).action,
                Action::Allow
            );
        }
        assert_eq!(w.distinct("a", "email", t0), 4);
        let later = t0 + Duration::from_secs(3601);
        assert_eq!(w.distinct("a", "email", later), 0);
        let v = w.observe("a", &findings(10..14), true, later);
        assert_eq!(v.action, Action::Allow, "the first four expired");
    }

    #[test]
    fn blocked_requests_are_not_recorded() {
        let w = Windows::new(config(5, 10));
        let t0 = Instant::now();
        let v = w.observe("a", &findings(0..4), false, t0);
        assert_eq!(v.action, Action::Allow);
        assert_eq!(w.distinct("a", "email", t0), 0);
    }

    #[test]
    fn state_is_bounded_and_evictions_counted() {
        let mut c = config(1000, 2000);
        c.max_values = 10;
        c.max_principals = 16;
        let w = Windows::new(c);
        let t0 = Instant::now();
        w.observe("a", &findings(0..25), true, t0);
        assert_eq!(w.distinct("a", "email", t0), 10);
        assert_eq!(w.stats.evicted_values.load(Ordering::Relaxed), 15);
        for p in 0..200 {
            w.observe(&format!("user{p}"), &findings(0..1), true, t0);
        }
        let kept = w.stats.principals.load(Ordering::Relaxed);
        assert!(kept <= 16, "{kept} principals kept");
        assert!(w.stats.evicted_principals.load(Ordering::Relaxed) >= 185);
    }

    #[test]
    fn categories_without_thresholds_cost_nothing() {
        let w = Windows::new(config(1, 2));
        let mut f = findings(0..5);
        f.categories[0].category = "card".into();
        assert_eq!(
            w.observe("a", &f, true, Instant::now()).action,
            Action::Allow
        );
        assert_eq!(w.stats.principals.load(Ordering::Relaxed), 0);
    }
}
