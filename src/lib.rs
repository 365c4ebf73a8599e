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
//! - [`tls`]: corporate CA, leaf minting and cache, verified upstream TLS, ClientHello peek, bypass.
//!
//! # Request flow
//!
//! ```text
//! client --TCP--> proxy::run: accept (client allow-list, connection cap, header limits/timeouts)
//!    |-- CONNECT host:port (port allow-list)
//!    |      |-- tls.intercept false, or host / SNI in tls.bypass -> blind tunnel (logged)
//!    |      '-- tls: ClientHello (SNI, ALPN) -> upstream TLS first (verified) -> leaf minted
//!    |          for the SNI (cached) -> client TLS with the upstream's ALPN -> HTTP/1.1 or
//!    |          HTTP/2 inside, each request made https:// and handled as below
//!    |          (a failed upstream verification: every request gets a 502 saying why)
//!    '-- absolute-form HTTP/1.1
//!          request target (percent-decoded) + body chunks -> scan::Stream::feed
//!              (literal / digit-run prefilters -> regex in windows -> validator -> keyed hashes)
//!          body <= limits.hold_bytes: scanned whole before a byte goes upstream
//!          body >  limits.hold_bytes: forwarded as scanned; Stream::findings() snapshots
//!                                     abort the upstream body as soon as they say block
//!          scan::Stream::finish -> Findings -> policy::evaluate -> Verdict
//!    allow/log: forward upstream (pooled client, timeouts)   block: 403 page (HTML or JSON)
//! ```
//!
//! Decoders, audit events and metrics, and the policy's identity/window/EDM layers come
//! in later issues; `../shared/DESIGN.md` in the project workspace holds the contracts.

pub mod cli;
pub mod config;
pub mod policy;
pub mod proxy;
pub mod rules;
pub mod scan;
pub mod tls;
