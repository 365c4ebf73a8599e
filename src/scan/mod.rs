//! The scanning engine: prefilters, confirming regexes, validators, streaming state, findings.
//!
//! An [`Engine`] is compiled once from a [`RuleSet`](crate::rules::RuleSet) and shared by
//! every request. Each body gets a [`Stream`]: feed it chunks as they arrive, then
//! [`Stream::finish`] it for the [`Findings`]. The findings are the same however the input
//! is split into chunks.
//!
//! How a rule's regex is reached, fastest first (chosen per rule at compile time, from the
//! pattern's own structure — see [`analyze`]):
//! - **keywords** the rule lists, or **literal prefixes** every match starts with: one
//!   Aho-Corasick pass finds them all, together with every rule's context words; the regex
//!   then runs only in a window of the pattern's longest match around each hit;
//! - **digit runs** for literal-free identifiers (cards, phones, SSNs, IBANs, NINOs): a
//!   block-at-a-time digit scan finds runs of consecutive digits as long as the pattern
//!   guarantees; each run is gated on the bytes around it (the token of bytes the pattern
//!   can contain must be as long, and hold as many digits, as the shortest match), and only
//!   then the regex runs, in that token;
//! - **full scan** for anything else (`rules check` says which rules fall back to it).
//!
//! Matches then pass the rule's excludes, its validator and its context requirement, are
//! normalised, and counted: every match, and distinct values as 64-bit keyed hashes (never
//! the value). Per rule and per category at most [`DISTINCT_CAP`](crate::rules::DISTINCT_CAP)
//! distinct hashes are kept; past that the distinct count stops growing and the finding says
//! `distinct_capped` (thresholds are capped at the same number, so a verdict never changes).
//!
//! This module does no I/O and knows nothing of tokio or hyper.

pub mod analyze;
mod engine;
mod literals;
pub mod mask;
pub mod normalize;
pub mod validate;

pub use engine::{Anchor, Engine, Findings, RuleFinding, Stream};
pub use mask::MaskStyle;
pub use normalize::Normalize;
pub use validate::Validator;
