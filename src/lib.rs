//! egress-dlp: a data-loss-prevention egress proxy.
//!
//! Workstations use it as their HTTP(S) proxy. It reads what leaves — request bodies,
//! uploads, query strings, selected headers — finds customer identifiers (emails, card
//! numbers, national IDs, IBANs, phone numbers, customer IDs) and secrets, counts the
//! distinct values, and blocks or logs a request that carries them in bulk.
//!
//! # Layout
//!
//! - [`rules`]: rule-file schema, loading a rules directory, validation, embedded tests.
//! - [`scan`]: the engine: prefilters, confirming regexes, validators, streaming state, findings.
//! - [`policy`]: findings -> verdict (allow / log / block) from the rules' thresholds.
//! - [`cli`]: the `scan` and `rules` commands, as library functions the binary calls.
//! - [`config`]: the YAML config and command-line overrides, validated into runtime types.
//! - [`proxy`]: the hyper server: client ACL, absolute-form HTTP, CONNECT tunnels, inspection, block page.
//!
//! # Request flow
//!
//! ```text
//! body chunks -> scan::Stream::feed (prefilter -> regex in windows -> validator -> distinct hashes)
//!             -> scan::Stream::finish -> Findings -> policy::evaluate -> Verdict
//! ```
//!
//! The proxy (`proxy/`, `tls/`, `decode/`, `audit/`, metrics) builds on this in later
//! issues; see `../shared/DESIGN.md` in the project workspace and the README.

pub mod cli;
pub mod config;
pub mod policy;
pub mod proxy;
pub mod rules;
pub mod scan;
