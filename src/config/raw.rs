//! The config file as written: serde types, every key optional, unknown keys refused.
//!
//! Nothing here is interpreted: addresses, CIDRs, sizes and durations stay text until
//! [`validate`](super::validate) turns them into runtime types, so that every problem in a
//! file can be reported at once instead of stopping at the first.

use std::path::PathBuf;

use serde::Deserialize;

pub use super::tls::RawTls;

/// The whole config file. Every key has a default, so an empty file is valid.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Address the proxy listens on (default `127.0.0.1:3128`).
    pub listen: Option<String>,
    /// Address of the admin listener: metrics, health (default `127.0.0.1:9090`).
    pub admin_listen: Option<String>,
    /// Directory of rule files (default `rules`).
    pub rules: Option<PathBuf>,
    /// Directory for the CA, the audit log and state (default `data`).
    pub data_dir: Option<PathBuf>,
    /// TLS: interception, bypass list, extra upstream roots.
    #[serde(default)]
    pub tls: RawTls,
    /// Who may use the proxy, and where CONNECT may go.
    #[serde(default)]
    pub access: RawAccess,
    /// Sizes, counts and timeouts that bound what one client can make the proxy do.
    #[serde(default)]
    pub limits: RawLimits,
    /// Where logged and blocked requests are recorded.
    #[serde(default)]
    pub audit: RawAudit,
    /// What the block page says besides the finding.
    #[serde(default)]
    pub block_page: RawBlockPage,
    /// Identity, destinations, per-user thresholds, cumulative windows and exact data
    /// match (see [`super::policy`] and [`super::window`]).
    #[serde(default)]
    pub policy: super::policy::RawPolicy,
    /// Hot reload.
    #[serde(default)]
    pub reload: RawReload,
    /// How the proxy writes its own log lines.
    #[serde(default)]
    pub log: RawLog,
    /// How bodies are decoded before scanning, and the bounds on it.
    #[serde(default)]
    pub decode: super::decode::RawDecode,
}

/// `reload`: when the proxy reloads its config, rules and EDM index by itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    /// How often the watched files are checked for changes (default 2s; 0 turns watching
    /// off, SIGHUP still reloads).
    pub watch_interval: Option<RawDuration>,
}

/// `access:` — the proxy is not an open proxy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    /// Client networks allowed to use the proxy, as CIDRs or single addresses
    /// (default `127.0.0.0/8` and `::1/128`).
    pub clients: Option<Vec<String>>,
    /// Ports a CONNECT may reach (default `[443]`).
    pub connect_ports: Option<Vec<u16>>,
}

/// `limits:` — every limit has a name, a default and a doc line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Request bodies up to this size are scanned whole before any byte goes upstream
    /// (default `16MiB`; a number of bytes or a string such as `512KiB`).
    pub hold_bytes: Option<RawSize>,
    /// What happens to a body over `hold_bytes`: `stream` (forward as scanned, abort on
    /// block) or `block` (refuse with 413). Default `stream`.
    pub oversize: Option<String>,
    /// Request-body bytes held at once across all requests (default `256MiB`, and never
    /// less than `hold_bytes`). A request reserves what it may hold (its Content-Length up
    /// to `hold_bytes`; `hold_bytes` for a chunked body) before its body is read, and waits
    /// for the reservation when the budget is spent.
    pub hold_total: Option<RawSize>,
    /// Of `hold_total`, the most one client address may hold at once (default a quarter of
    /// `hold_total`, at least `hold_bytes`): one client's uploads, or the streams of one
    /// HTTP/2 connection, cannot take the whole budget from everyone else.
    pub hold_per_client: Option<RawSize>,
    /// The slowest a held body may arrive, in bytes per second on average, counted after
    /// `header_read_timeout` (default `1KiB`): slower gets 408, and its reservation goes
    /// back (a body trickled a few bytes a second held its reservation forever).
    pub body_min_rate: Option<RawSize>,
    /// How long a request waits for its reservation in `hold_total` before it is answered
    /// 503 (default `10s`).
    pub hold_wait: Option<RawDuration>,
    /// Largest request head (request line and headers) in bytes (default `64KiB`).
    pub header_bytes: Option<RawSize>,
    /// Most header fields in one request (default 100).
    pub header_count: Option<usize>,
    /// Time a client has to send a complete request head, also the keep-alive wait for the
    /// next request (default `10s`; a humantime string such as `500ms`, or seconds).
    pub header_read_timeout: Option<RawDuration>,
    /// A connection or tunnel with no bytes moving either way for this long is closed
    /// (default `120s`).
    pub idle_timeout: Option<RawDuration>,
    /// Most client connections open at once; more wait in the listen backlog (default 1024).
    pub max_connections: Option<usize>,
    /// Most connections open at once from one client address; more get 503 (default a
    /// quarter of `max_connections`, at least 1): one workstation cannot take every slot.
    pub max_connections_per_client: Option<usize>,
    /// Time to establish a TCP connection to an upstream (default `10s`).
    pub upstream_connect_timeout: Option<RawDuration>,
    /// Time an upstream has to start its response once the request is sent (default `60s`).
    pub upstream_response_timeout: Option<RawDuration>,
    /// On shutdown, how long in-flight requests may take to finish (default `30s`).
    pub drain_time: Option<RawDuration>,
    /// After the proxy closes a client connection, how long it goes on reading and
    /// discarding what the client still sends (an upload answered before its end), so that
    /// the close does not reset the connection and lose the answer (default `5s`).
    pub linger_time: Option<RawDuration>,
}

/// `audit:` — the audit log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// Path of the JSON-lines audit log (default `DATA_DIR/audit.jsonl`).
    pub path: Option<PathBuf>,
    /// When true, a request whose audit event cannot be recorded (log unwritable, queue
    /// full) is refused with 503 instead of passing unrecorded (default false).
    pub required: Option<bool>,
    /// When true, every request gets an audit event, allowed ones included; otherwise only
    /// logged and blocked ones (default false).
    pub all_requests: Option<bool>,
    /// Rotate the log once it reaches this size (default `100MiB`; `0` never rotates by
    /// size). SIGHUP always reopens the file, for external rotation.
    pub rotate_bytes: Option<RawSize>,
    /// Rotated files kept (`audit.jsonl.1` newest .. `audit.jsonl.N`; default 10).
    pub keep: Option<usize>,
    /// Events accepted but not yet written, at most (default 10000). Past that an event is
    /// dropped (counted), or with `required` its request refused.
    pub queue: Option<usize>,
}

/// `log:` — the proxy's own log lines (not the audit log).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` (default, for people) or `json` (one object per line, for log shippers).
    pub format: Option<String>,
}

/// `block_page:` — text shown to a person whose request was blocked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBlockPage {
    /// One line telling people whom to contact (shown on the HTML page and in JSON).
    pub contact: Option<String>,
}

/// A size: a number of bytes, or a string with a unit (`16MiB`, `512KiB`, `1GB`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    /// Bytes.
    Bytes(u64),
    /// A number and a unit.
    Text(String),
}

/// A duration: a number of seconds, or a humantime string (`500ms`, `30s`, `2m`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawDuration {
    /// Seconds.
    Seconds(u64),
    /// A humantime duration.
    Text(String),
}
