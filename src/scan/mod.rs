//! The scanning engine: prefilters, confirming regexes, validators, streaming state, findings.
//!
//! An [`Engine`] is compiled once from a [`RuleSet`](crate::rules::RuleSet) and shared by
//! every request. Each body gets a [`Stream`]: feed it chunks as they arrive, then
//! [`Stream::finish`] it for the [`Findings`]. The findings are the same however the input
//! is split into chunks. A stream keeps only a short tail of what it was fed (the bytes a
//! pending match may still need); a chunk of 16 KiB or more is scanned where it lies, with
//! only its first 8 KiB joined to that tail, so the bytes of a body are not copied.
//!
//! How a rule's regex is reached, fastest first (chosen per rule at compile time, from the
//! pattern's own structure — see [`analyze`]):
//! - **keywords** the rule lists (ASCII case-insensitive: `memchr` for one-byte keywords)
//!   open a window of the pattern's longest match either side of each hit;
//! - **literal prefixes** every match starts with (`memchr` on the first byte for two-byte
//!   prefixes such as `+1`, the byte after it told apart by a table): a hit is checked
//!   against the bytes the pattern may contain,
//!   then the pattern is tried there. Longer prefixes and longer keywords are found in one
//!   pass (Aho-Corasick with its Teddy prefilter over the first 8 bytes of each prefix and
//!   every case variant of the first 3 bytes of each keyword, prefixes sharing 4 bytes
//!   merged; a hit is checked against the whole literal);
//! - **lead bytes** for literal-free patterns whose first bytes come from rare classes
//!   (the IBAN's `\b[A-Z]{2}\d{2}`, the NINO's `\b[A-Z]{2}\d`): the classes of each of a
//!   match's first bytes are read off the anchored DFA (module `lead`); a block pass computes,
//!   64 bytes at a time, one mask each for digits, upper- and lowercase letters (compare
//!   and move-mask through `wide`), and shifts and ands them into the places where a
//!   match can start; each is checked byte by byte against the exact classes, then tried;
//! - **digit runs** for the other literal-free identifiers (cards, phones, SSNs): the
//!   block pass's digit mask yields runs of consecutive digits (those right after a byte
//!   that rules out every digit-run rule — a lowercase letter — all at once); a run is
//!   ruled in or out per rule by table lookups on its length, its first and last digit and
//!   its two neighbours (what the IR proves about where matches start and end, the longest
//!   run they hold, the bytes they start and end with), then by one walk over the bytes
//!   *any* digit rule allows, which bounds every rule's token length and digit count at
//!   once (most runs of ordinary traffic end there), then per rule by the full gate (the
//!   token of bytes the pattern may contain, its length and digits, required bytes, word
//!   boundaries; a value whose digits come in groups is walked once per rule, not once
//!   per group);
//! - **full scan** for anything else (`rules check` says which rules fall back to it).
//!
//! Confirmation: for prefix and digit-run rules, the pattern is compiled to an anchored
//! dense DFA (when it fits in 1 MiB) and tried only at the places a match can start (a
//! byte it can start with, a word boundary if it must start at one) inside the window, up
//! to the end of the token: one forward pass per value, no reverse pass. So are keyword
//! rules whose keywords are single bytes every match contains (the email `@`): a match
//! then starts in the token of allowed bytes left of a hit. Other keyword rules, full-scan
//! rules, and patterns whose anchored DFA would be too big are searched over the window
//! from one small table ([`small_table`]: a forward and a reverse dense DFA, each within
//! 2 MiB, built whole at load); but a keyword rule that is not one small table (the AWS
//! secret key, an email pattern near a word) walks its anchored DFA,
//! tried only in the token left of each byte every match holds (the `@`) when it has
//! such a byte, else at every place of the window.
//!
//! Every prefilter only ever drops places where the IR proves no match can be, so the
//! findings equal a plain leftmost-first scan of the whole input with the rule's regex
//! (restricted, for keyword rules, to windows near a keyword). Context words are searched
//! lazily, only around matches (or, for rules that require them, regions) that need them,
//! 4 KiB ahead at a time (values come close together where context matters: exports).
//!
//! Matches then pass the rule's excludes, its validator and its context requirement, are
//! normalised, and counted: every match, and distinct values as 64-bit keyed hashes (never
//! the value; the key is the engine's, see [`EngineOptions`]). Per rule and per category at most [`DISTINCT_CAP`](crate::rules::DISTINCT_CAP)
//! distinct hashes are kept; past that the distinct count stops growing and the finding says
//! `distinct_capped` (thresholds are capped at the same number, so a verdict never changes).
//!
//! A rule with `edm:` counts only values its [`ExactIndex`] holds, and with `edm.near` only
//! when another column of the same record was matched close by (see [`exact`]).
//!
//! This module does no I/O and knows nothing of tokio or hyper.

pub mod analyze;
mod engine;
pub mod exact;
mod lead;
mod literals;
pub mod mask;
pub mod normalize;
pub mod validate;

pub use engine::{
    Anchor, CategoryCount, Engine, EngineError, EngineOptions, Findings, RuleFinding, Search,
    Stream, WORK_FLOOR, WORK_PER_BYTE, random_key,
};
pub use exact::ExactIndex;
pub use mask::MaskStyle;
pub use normalize::Normalize;
pub use validate::Validator;

/// `pattern` as one small table ([`lead::TableRegex`], each of its two DFAs within 2
/// MiB), searched from it with no lazy automaton: at every byte (a rule the engine has
/// nothing to look for first: see [`Anchor::FullScan`]) or around the places a match may
/// start (a keyword rule whose keywords are not bytes every match holds, a rule whose
/// anchored table is over its size limit). `None` for a pattern that is not: searched with
/// the regex crate, its lazy automaton would thrash and fall back to simulating the NFA,
/// at a cost per byte that grows with the pattern and that the work limit does not see
/// (the regex path is charged one unit a byte): `[\x00-\xff]{4096}` at every byte, 15 s
/// per MB. Such a rule is refused at load, or, with keywords, walked as its anchored table
/// instead, every byte walked counted as work (refused only when it has no table either).
///
/// Up to session 26 a keyword rule of at most 64 NFA states was searched with the regex
/// crate even without a small table. A small NFA can still need an automaton too big for
/// any table: the shipped AWS secret key rule (53 states) did, and 4 MiB of runs of 39
/// `a+/9` bytes near its keyword took 0.47 s with the regex against 0.08 s for plain text.
pub(crate) fn small_table(pattern: &str) -> Option<lead::TableRegex> {
    lead::TableRegex::build(pattern, 2 << 20)
}

#[cfg(test)]
mod tests {
    #[test]
    fn patterns_searched_with_a_regex_must_be_one_small_table() {
        for (pattern, ok) in [
            (r"\b[A-Z]{3}-[A-Z]{5}\b", true),
            (r"(?i)\b[a-z]{2}[0-9a-z]{6}\b", true),
            (r"[\x00-\xff]{4096}", false),
            // The shipped AWS secret key rule: 53 NFA states but no small table (its
            // unanchored automaton is over 16 MiB), so it is walked as its anchored table.
            (
                r"(?:\b[A-Za-z0-9]|\B[/+])[A-Za-z0-9/+]{38}(?:[A-Za-z0-9]\b|[/+]\B)",
                false,
            ),
            (r"a[^\n]{0,25}Z", false),
            (r"ORD-[ab]{0,2000}a[ab]{20}Z", false),
            // Long, but one small table: 1 MB of it scans in well under a second.
            (r"[a-z0-9@. ]{1,4096}", true),
        ] {
            assert_eq!(super::small_table(pattern).is_some(), ok, "{pattern}");
        }
    }
}
