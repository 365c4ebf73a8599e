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
//! - [`decode`]: body decoders (content-encodings, forms, multipart, JSON, base64, zip), all
//!   bounded, feeding one engine stream per request.
//! - [`policy`]: findings + user + destination -> verdict (allow / log / block): thresholds,
//!   per-user overrides, sanctioned and blocked destinations; identity (credentials, the
//!   client map, the failed-login limiter).
//! - [`cli`]: the `scan` and `rules` commands, as library functions the binary calls.
//! - [`config`]: the YAML config and command-line overrides, validated into runtime types.
//! - [`proxy`]: the hyper server: client ACL, absolute-form HTTP, CONNECT tunnels, inspection, block page.
//! - [`metrics`]: every Prometheus metric, defined once (`egress_dlp_*`, bounded labels).
//! - [`audit`]: audit events (masked samples, HMAC fingerprints), the JSON-lines writer, rotation.
//! - [`admin`]: the admin listener: `/metrics`, `/healthz`, `/readyz`, `/rules`.
//! - [`logging`]: tracing setup: text or JSON lines.
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
//!    |          (a failed upstream verification: every request gets a 502 saying why;
//!    |          a verified upstream connection is kept idle for the same client's next
//!    |          CONNECT to the same host, which then skips the upstream handshake)
//!    '-- absolute-form HTTP/1.1
//!          request target, decode.headers, body chunks -> decode::Inspection
//!              (content-encodings, form, multipart, JSON, base64 runs, zip: bounded layers)
//!              -> one scan::Stream per request
//!              (literal / digit-run prefilters -> regex in windows -> validator -> keyed hashes)
//!          body <= limits.hold_bytes: scanned whole before a byte goes upstream
//!          body >  limits.hold_bytes: forwarded as scanned; Stream::findings() snapshots
//!                                     abort the upstream body as soon as they say block
//!          Inspection::finish -> Findings (+ not fully scanned?)
//!              -> policy::evaluate(+ user, destination) -> Verdict, raised by windows
//!              (not fully scanned: policy.on_inspection_error, block by default)
//!    allow/log: forward upstream (pooled client, timeouts)   block: 403 page (HTML or JSON)
//!    verdict -> metrics; log/block (or every request, audit.all_requests) -> audit event
//!       (queued to the writer thread; refused with 503 if unrecordable and audit.required)
//!    end of request -> egress_dlp_requests_total{action}, one log line (id, verdict, time)
//! ```
//!
//! `../shared/DESIGN.md` in the project workspace holds the contracts.

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod decode;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod rules;
pub mod scan;
pub mod tls;
pub(crate) mod window;
