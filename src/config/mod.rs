//! The proxy's configuration: the YAML file, command-line overrides, and validation into
//! the runtime [`Config`] the proxy runs on.
//!
//! Two stages. [`raw`] holds the serde types, every key optional and unknown keys refused.
//! [`validate`] turns them into runtime types — socket addresses, parsed CIDRs, byte
//! counts, durations, the loaded and tested rule set — and reports every problem at once,
//! each with its file and key. An empty file is a valid config: every key has a default.
//!
//! This module reads the config file and the rules directory; it opens no socket and
//! starts nothing.

pub mod decode;
mod ops;
pub mod policy;
pub mod raw;
pub mod tls;
pub mod window;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use std::sync::Arc;

use crate::policy::edm::EdmIndex;
use crate::policy::window::WindowConfig;
use crate::rules::{self, RuleSet};
use raw::{RawConfig, RawDuration, RawSize};

/// Default proxy listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3128";
/// Default admin listen address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Default rules directory.
pub const DEFAULT_RULES: &str = "rules";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "data";
/// Default contact line on the block page.
pub const DEFAULT_CONTACT: &str =
    "If you believe this is a mistake, contact your security team and quote the request id.";

/// The validated configuration the proxy runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// Proxy listen address.
    pub listen: SocketAddr,
    /// Admin listen address (the proxy refuses requests addressed to it).
    pub admin_listen: SocketAddr,
    /// Rules directory the rule set was loaded from.
    pub rules_dir: PathBuf,
    /// The loaded rule set (validated, embedded tests passed).
    pub rules: RuleSet,
    /// Data directory.
    pub data_dir: PathBuf,
    /// TLS settings.
    pub tls: Tls,
    /// Access control.
    pub access: Access,
    /// Limits.
    pub limits: Limits,
    /// Audit log settings.
    pub audit: Audit,
    /// Block page settings.
    pub block_page: BlockPage,
    /// The proxy's own log lines.
    pub log: Log,
    /// Cumulative windows (`policy.windows`).
    pub windows: WindowConfig,
    /// The exact-data-match index (`policy.edm`), loaded.
    pub edm: Option<Arc<EdmIndex>>,
    /// The EDM index and key files, watched for hot reload.
    pub edm_files: Vec<PathBuf>,
    /// Hot reload settings.
    pub reload: Reload,
    /// `policy:`: authentication, destinations, per-user thresholds.
    pub policy: crate::policy::Policy,
    /// Body decoding: bounds and scanned headers.
    pub decode: decode::Decode,
    /// What happens to a request that could not be fully inspected
    /// (`policy.on_inspection_error`).
    pub inspection: decode::Policy,
}

/// Default interval between looks at the watched files.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Hot reload settings (`reload`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reload {
    /// How often the config file, rule files and EDM files are checked for changes
    /// (zero: never; SIGHUP still reloads).
    pub watch_interval: Duration,
}

pub use tls::Tls;

/// `access:` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Client networks allowed to use the proxy.
    pub clients: Vec<IpNet>,
    /// Ports a CONNECT may reach.
    pub connect_ports: Vec<u16>,
}

impl Access {
    /// Whether a client at `ip` may use the proxy (IPv4-mapped IPv6 counts as IPv4).
    pub fn allows_client(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.clients.iter().any(|net| net.contains(&ip))
    }

    /// Whether a CONNECT may reach `port`.
    pub fn allows_connect_port(&self, port: u16) -> bool {
        self.connect_ports.contains(&port)
    }
}

/// What happens to a request body larger than [`Limits::hold_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// Forward it as it is scanned; abort the upstream request if it is blocked.
    Stream,
    /// Refuse it with 413.
    Block,
}

/// `limits:` settings; see [`raw::RawLimits`] for what each one bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bodies up to this many bytes are scanned whole before forwarding.
    pub hold_bytes: u64,
    /// What happens to larger bodies.
    pub oversize: Oversize,
    /// Body bytes held at once across all requests (at least `hold_bytes`).
    pub hold_total: u64,
    /// Of `hold_total`, the most one client address holds at once (at least `hold_bytes`).
    pub hold_per_client: u64,
    /// Time a request waits for its share of `hold_total`.
    pub hold_wait: Duration,
    /// The slowest a held body may arrive (bytes per second, on average, after
    /// `header_read_timeout`).
    pub body_min_rate: u64,
    /// Largest request head in bytes.
    pub header_bytes: usize,
    /// Most header fields in one request.
    pub header_count: usize,
    /// Time to receive a complete request head (and the keep-alive wait between requests).
    pub header_read_timeout: Duration,
    /// Close a connection or tunnel after this long with no bytes moving.
    pub idle_timeout: Duration,
    /// Most client connections at once.
    pub max_connections: usize,
    /// Most connections at once from one client address.
    pub max_connections_per_client: usize,
    /// Time to connect to an upstream.
    pub upstream_connect_timeout: Duration,
    /// Time for an upstream to start responding.
    pub upstream_response_timeout: Duration,
    /// Time in-flight requests get to finish on shutdown.
    pub drain_time: Duration,
    /// Time spent reading and discarding from a client after closing its connection.
    pub linger_time: Duration,
}

impl Limits {
    /// How long a body (or a message that is held as one) may take to bring its byte after
    /// the first `bytes`: the head's time, then `body_min_rate` on average.
    pub fn body_time(&self, bytes: u64) -> std::time::Duration {
        self.header_read_timeout
            + std::time::Duration::from_secs_f64((bytes + 1) as f64 / self.body_min_rate as f64)
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            hold_bytes: 16 << 20,
            oversize: Oversize::Stream,
            hold_total: 256 << 20,
            hold_per_client: 64 << 20,
            hold_wait: Duration::from_secs(10),
            body_min_rate: 1024,
            header_bytes: 64 << 10,
            header_count: 100,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 1024,
            max_connections_per_client: 256,
            upstream_connect_timeout: Duration::from_secs(10),
            upstream_response_timeout: Duration::from_secs(60),
            drain_time: Duration::from_secs(30),
            linger_time: Duration::from_secs(5),
        }
    }
}

pub use ops::{Audit, Log, LogFormat};

/// `block_page:` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPage {
    /// The contact line.
    pub contact: String,
}

/// Command-line values that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--admin-listen`.
    pub admin_listen: Option<String>,
    /// `--rules`.
    pub rules: Option<PathBuf>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
}

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file, or `None` for defaults and command-line flags.
    pub file: Option<PathBuf>,
    /// The key, dotted (`limits.hold_bytes`), or the flag (`--listen`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// The largest count a table size, queue or connection cap accepts: past it a value is a
/// typo, and tables sized up front would take the memory at start.
pub(crate) const MAX_COUNT: usize = 10_000_000;

/// The most argon2 verifications or certificate mints at once (each holds real memory).
pub(crate) const MAX_PARALLEL: usize = 1_024;

/// The most header fields a request may be configured to carry: hyper reserves a slot for
/// each on every request it reads (a million took 48 MB per request head).
pub(crate) const MAX_HEADER_COUNT: usize = 10_000;

/// The longest duration any key accepts: longer ones overflowed the clock arithmetic of
/// every connection (`header_read_timeout: 18446744073709551615` answered nothing).
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The most a body held whole before it is forwarded may be (`limits.hold_bytes`).
pub(crate) const MAX_HOLD_BYTES: u64 = 1 << 30;

/// Every problem found in a configuration.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} problem(s) in the configuration:\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// Reads the config file at `path` (or none: every default), applies `overrides`, validates.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigErrors> {
    let Some(path) = path else {
        return validate(RawConfig::default(), None, overrides);
    };
    match std::fs::read_to_string(path) {
        Ok(text) => from_yaml(&text, Some(path), overrides),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: Some(path.to_path_buf()),
            key: String::new(),
            message: format!("cannot read: {e}"),
        }])),
    }
}

/// Parses YAML config text (`file` names it in errors), applies `overrides`, validates.
pub fn from_yaml(
    text: &str,
    file: Option<&Path>,
    overrides: &Overrides,
) -> Result<Config, ConfigErrors> {
    let (raw, mut problems) = parse_all(text, file)?;
    match validate(raw, file, overrides) {
        Ok(config) if problems.is_empty() => Ok(config),
        Ok(_) => Err(ConfigErrors(problems)),
        Err(ConfigErrors(more)) => {
            problems.extend(more);
            Err(ConfigErrors(problems))
        }
    }
}

/// Parses YAML config text into the raw types (no validation); any problem is an error.
pub fn parse(text: &str, file: Option<&Path>) -> Result<RawConfig, ConfigErrors> {
    match parse_all(text, file)? {
        (raw, problems) if problems.is_empty() => Ok(raw),
        (_, problems) => Err(ConfigErrors(problems)),
    }
}

/// Most key problems reported from one file (each costs a pass over the document).
const MAX_KEY_PROBLEMS: usize = 100;

/// Parses YAML config text into the raw types, listing every unknown key and every value
/// of the wrong type (by dotted key) rather than stopping at the first (found in review:
/// one unknown key hid every other problem). The file is read straight into the config's
/// types first, as ever; only when that fails is it read again as a plain document, where
/// each offending key is reported and left out and the rest parsed again, so the values
/// that are there are validated too. A file that is not YAML at all is one error.
fn parse_all(
    text: &str,
    file: Option<&Path>,
) -> Result<(RawConfig, Vec<ConfigError>), ConfigErrors> {
    // A file of only comments and blank lines is the empty config.
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if blank {
        return Ok((RawConfig::default(), Vec::new()));
    }
    let error = |key: String, message: String| ConfigError {
        file: file.map(Path::to_path_buf),
        key,
        message,
    };
    // YAML 1.2 booleans only (`intercept: no` is an error, not false), repeated keys refused.
    let options = || {
        serde_saphyr::options! {
            strict_booleans: true,
            duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        }
    };
    let first = match serde_saphyr::from_str_with_options::<RawConfig>(text, options()) {
        Ok(raw) => return Ok((raw, Vec::new())),
        Err(e) => e,
    };
    let Ok(mut doc) = serde_saphyr::from_str_with_options::<serde_json::Value>(text, options())
    else {
        return Err(ConfigErrors(vec![error(
            String::new(),
            format!("invalid config: {first}"),
        )]));
    };
    let mut problems = Vec::new();
    // Each pass reports a key or turns one scalar into the type wanted (once each): the
    // passes are bounded by the document's size; the cap is a backstop.
    let mut passes = 0;
    while problems.len() < MAX_KEY_PROBLEMS && passes < 100_000 {
        passes += 1;
        let e = match serde_path_to_error::deserialize::<_, RawConfig>(&doc) {
            Ok(raw) if problems.is_empty() => {
                // The plain document reads, the typed one did not: say what the typed one
                // said rather than nothing.
                problems.push(error(String::new(), format!("invalid config: {first}")));
                return Ok((raw, problems));
            }
            Ok(raw) => return Ok((raw, problems)),
            Err(e) => e,
        };
        let mut path: Vec<Key> = e
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(Key::Name(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(Key::Index(*index)),
                _ => None,
            })
            .collect();
        let message = e.into_inner().to_string();
        // The plain document typed a bare `1001` or `true` where the config wants text (a
        // user name), or kept `"5"` as text where it wants a count: the typed read takes
        // such scalars as what the field needs, and so does this one.
        if coerce_at(&mut doc, &path, &message) {
            continue;
        }
        // An unknown key is reported at its map; the key itself is named in the message.
        if let Some(name) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
        {
            if path.last() != Some(&Key::Name(name.to_owned())) {
                path.push(Key::Name(name.to_owned()));
            }
        }
        problems.push(error(dotted(&path), message));
        // A list with a bad entry goes whole (taking the entry out would renumber the
        // rest, and the numbers in later messages would be wrong).
        while matches!(path.last(), Some(Key::Index(_))) {
            path.pop();
        }
        if !remove_at(&mut doc, &path) {
            // Nothing left to take out (the document as a whole is wrong): stop here.
            break;
        }
    }
    if problems.is_empty() {
        // Never refuse a file without saying why.
        problems.push(error(String::new(), format!("invalid config: {first}")));
    }
    Err(ConfigErrors(problems))
}

/// One step of a key path: a map key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Name(String),
    Index(usize),
}

/// `limits.hold_bytes`, `access.clients[2]`, `policy.auth.clients["10.0.0.5"]`.
fn dotted(path: &[Key]) -> String {
    let mut key = String::new();
    for part in path {
        match part {
            Key::Index(i) => key.push_str(&format!("[{i}]")),
            Key::Name(name)
                if !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(name);
            }
            Key::Name(name) => key.push_str(&format!("[{name:?}]")),
        }
    }
    key
}

/// The value at `path`, if any.
fn value_at<'v>(doc: &'v mut serde_json::Value, path: &[Key]) -> Option<&'v mut serde_json::Value> {
    let mut at = doc;
    for part in path {
        at = match (at, part) {
            (serde_json::Value::Object(map), Key::Name(name)) => map.get_mut(name)?,
            (serde_json::Value::Array(list), Key::Index(i)) => list.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(at)
}

/// Turns the scalar at `path` into the type `message` says was expected, when the typed
/// read would have: a number or boolean where text is expected, numeric text where a
/// number is. True when it changed something.
fn coerce_at(doc: &mut serde_json::Value, path: &[Key], message: &str) -> bool {
    use serde_json::Value;
    let Some(value) = value_at(doc, path) else {
        return false;
    };
    let wants_text = message.ends_with("expected a string");
    let wants_number = ["expected u", "expected i"]
        .iter()
        .any(|w| message.contains(w));
    let coerced = match &*value {
        Value::Number(n) if wants_text => Value::String(n.to_string()),
        Value::Bool(b) if wants_text => Value::String(b.to_string()),
        // As the typed read takes a quoted count (`"0x10"`, `"1_000"`).
        Value::String(t) if wants_number => match serde_saphyr::from_str::<u64>(t) {
            Ok(n) => Value::from(n),
            Err(_) => return false,
        },
        _ => return false,
    };
    *value = coerced;
    true
}

/// Takes the map entry at `path` out of `doc`; false when there is none.
fn remove_at(doc: &mut serde_json::Value, path: &[Key]) -> bool {
    let Some((Key::Name(last), parents)) = path.split_last() else {
        return false;
    };
    match value_at(doc, parents) {
        Some(serde_json::Value::Object(map)) => map.remove(last).is_some(),
        _ => false,
    }
}

/// Turns raw values (plus overrides) into a [`Config`], collecting every problem.
pub fn validate(
    mut raw: RawConfig,
    file: Option<&Path>,
    overrides: &Overrides,
) -> Result<Config, ConfigErrors> {
    let mut errors = Errors {
        file: file.map(Path::to_path_buf),
        list: Vec::new(),
    };
    let defaults = Limits::default();

    let listen = errors.addr(
        "listen",
        overrides.listen.as_deref(),
        raw.listen.as_deref(),
        DEFAULT_LISTEN,
    );
    let admin_listen = errors.addr(
        "admin_listen",
        overrides.admin_listen.as_deref(),
        raw.admin_listen.as_deref(),
        DEFAULT_ADMIN_LISTEN,
    );
    if let (Some(l), Some(a)) = (listen, admin_listen) {
        if l == a && l.port() != 0 {
            errors.push(
                "admin_listen",
                format!("is the same address as listen ({l})"),
            );
        }
    }

    let data_dir = overrides
        .data_dir
        .clone()
        .or(raw.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let rules_dir = overrides
        .rules
        .clone()
        .or(raw.rules)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RULES));
    let rule_set = match rules::load_dir(&rules_dir) {
        Ok(set) => Some(set),
        Err(rules::RuleErrors(list)) => {
            for e in list {
                errors.push("rules", e.to_string());
            }
            None
        }
    };

    let tls = tls::validate(raw.tls, &data_dir, &mut errors);

    let clients: Vec<IpNet> = match raw.access.clients {
        None => vec![
            "127.0.0.0/8".parse().expect("literal CIDR"),
            "::1/128".parse().expect("literal CIDR"),
        ],
        Some(list) => {
            if list.is_empty() {
                errors.push(
                    "access.clients",
                    "is empty: every client would be refused".into(),
                );
            }
            let parsed: Vec<(usize, IpNet)> = list
                .iter()
                .enumerate()
                .filter_map(|(i, c)| Some((i, errors.cidr(&format!("access.clients[{i}]"), c)?)))
                .collect();
            errors.no_repeats("access.clients", &parsed);
            parsed.into_iter().map(|(_, net)| net).collect()
        }
    };
    let connect_ports = raw.access.connect_ports.unwrap_or_else(|| vec![443]);
    for (i, port) in connect_ports.iter().enumerate() {
        if *port == 0 {
            errors.push(&format!("access.connect_ports[{i}]"), "port 0".into());
        }
    }
    let numbered: Vec<(usize, u16)> = connect_ports.iter().copied().enumerate().collect();
    errors.no_repeats("access.connect_ports", &numbered);

    let l = raw.limits;
    let mut hold_bytes = errors.size("limits.hold_bytes", l.hold_bytes, defaults.hold_bytes, 1);
    if hold_bytes > MAX_HOLD_BYTES {
        errors.push(
            "limits.hold_bytes",
            format!("{hold_bytes} bytes is over the maximum of 1GiB (larger bodies stream)"),
        );
        hold_bytes = defaults.hold_bytes;
    }
    let oversize = match l.oversize.as_deref() {
        None | Some("stream") => Oversize::Stream,
        Some("block") => Oversize::Block,
        Some(other) => {
            errors.push(
                "limits.oversize",
                format!("{other:?} is not one of: stream, block"),
            );
            Oversize::Stream
        }
    };
    let hold_total = match l.hold_total {
        None => defaults.hold_total.max(hold_bytes),
        raw_total => {
            let total = errors.size("limits.hold_total", raw_total, defaults.hold_total, 1);
            if total < hold_bytes {
                errors.push(
                    "limits.hold_total",
                    format!("{total} bytes is less than limits.hold_bytes ({hold_bytes} bytes)"),
                );
            }
            total
        }
    };
    // One client's share: a quarter of each whole unless set, never below one request's.
    let hold_per_client = match l.hold_per_client {
        None => (hold_total / 4).max(hold_bytes),
        raw_share => {
            let share = errors.size(
                "limits.hold_per_client",
                raw_share,
                defaults.hold_per_client,
                1,
            );
            if share < hold_bytes || share > hold_total {
                errors.push(
                    "limits.hold_per_client",
                    format!(
                        "{share} bytes is not between limits.hold_bytes ({hold_bytes}) and \
                         limits.hold_total ({hold_total})"
                    ),
                );
            }
            share
        }
    };
    let max_connections = errors.count(
        "limits.max_connections",
        l.max_connections,
        defaults.max_connections,
        MAX_COUNT,
    );
    let max_connections_per_client = match l.max_connections_per_client {
        None => (max_connections / 4).max(1),
        raw => {
            let n = errors.count(
                "limits.max_connections_per_client",
                raw,
                defaults.max_connections_per_client,
                MAX_COUNT,
            );
            if n > max_connections {
                errors.push(
                    "limits.max_connections_per_client",
                    format!("{n} is more than limits.max_connections ({max_connections})"),
                );
            }
            n
        }
    };
    let limits = Limits {
        hold_bytes,
        oversize,
        hold_total,
        hold_per_client,
        hold_wait: errors.duration("limits.hold_wait", l.hold_wait, defaults.hold_wait),
        body_min_rate: errors.size(
            "limits.body_min_rate",
            l.body_min_rate,
            defaults.body_min_rate,
            1,
        ),
        header_bytes: errors.size(
            "limits.header_bytes",
            l.header_bytes,
            defaults.header_bytes as u64,
            1024,
        ) as usize,
        header_count: errors.count(
            "limits.header_count",
            l.header_count,
            defaults.header_count,
            MAX_HEADER_COUNT,
        ),
        header_read_timeout: errors.duration(
            "limits.header_read_timeout",
            l.header_read_timeout,
            defaults.header_read_timeout,
        ),
        idle_timeout: errors.duration("limits.idle_timeout", l.idle_timeout, defaults.idle_timeout),
        max_connections,
        max_connections_per_client,
        upstream_connect_timeout: errors.duration(
            "limits.upstream_connect_timeout",
            l.upstream_connect_timeout,
            defaults.upstream_connect_timeout,
        ),
        upstream_response_timeout: errors.duration(
            "limits.upstream_response_timeout",
            l.upstream_response_timeout,
            defaults.upstream_response_timeout,
        ),
        drain_time: errors.duration("limits.drain_time", l.drain_time, defaults.drain_time),
        linger_time: errors.duration("limits.linger_time", l.linger_time, defaults.linger_time),
    };

    let audit = ops::audit(raw.audit, &data_dir, &mut errors);
    let log = ops::log(raw.log, &mut errors);
    let contact = raw
        .block_page
        .contact
        .unwrap_or_else(|| DEFAULT_CONTACT.to_owned());
    if contact.contains(['\n', '\r']) {
        errors.push("block_page.contact", "must be one line".into());
    }
    let decode = decode::validate_decode(raw.decode, &mut errors);
    let inspection = decode::validate_policy(
        decode::RawPolicy {
            on_inspection_error: raw.policy.on_inspection_error.take(),
        },
        &mut errors,
    );

    let windows = window::windows(
        std::mem::take(&mut raw.policy.windows),
        rule_set.as_ref(),
        &mut errors,
    );
    let edm_files: Vec<PathBuf> = match &raw.policy.edm.index {
        Some(index) => vec![
            index.clone(),
            raw.policy
                .edm
                .key
                .clone()
                .unwrap_or_else(|| data_dir.join("edm.key")),
        ],
        None => Vec::new(),
    };
    let edm = window::edm(
        std::mem::take(&mut raw.policy.edm),
        &data_dir,
        rule_set.as_ref(),
        &mut errors,
    );
    let reload = Reload {
        watch_interval: match raw.reload.watch_interval {
            Some(RawDuration::Seconds(0)) => Duration::ZERO,
            Some(RawDuration::Text(t)) if t.trim() == "0" || t.trim() == "0s" => Duration::ZERO,
            other => errors.duration("reload.watch_interval", other, DEFAULT_WATCH_INTERVAL),
        },
    };
    let policy = policy::validate(raw.policy, rule_set.as_ref(), &mut errors);

    match (errors.list.is_empty(), listen, admin_listen, rule_set) {
        (true, Some(listen), Some(admin_listen), Some(rules)) => Ok(Config {
            listen,
            admin_listen,
            rules_dir,
            rules,
            data_dir,
            tls,
            access: Access {
                clients,
                connect_ports,
            },
            limits,
            audit,
            block_page: BlockPage { contact },
            windows,
            edm,
            edm_files,
            reload,
            log,
            decode,
            inspection,
            policy,
        }),
        _ => Err(ConfigErrors(errors.list)),
    }
}

/// Parses a size: plain bytes, or a number with a unit (`B`, `KB`, `KiB`, `MB`, `MiB`,
/// `GB`, `GiB`, `TB`, `TiB`; case-insensitive, optional space).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (like 16MiB or 1048576)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        "tb" => 1_000_000_000_000,
        "tib" | "t" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB, GiB)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Collects problems while validating.
struct Errors {
    file: Option<PathBuf>,
    list: Vec<ConfigError>,
}

impl Errors {
    fn push(&mut self, key: &str, message: String) {
        self.list.push(ConfigError {
            file: self.file.clone(),
            key: key.to_owned(),
            message,
        });
    }

    /// A socket address from a flag (reported as `--key`), the file, or the default.
    fn addr(
        &mut self,
        key: &str,
        flag: Option<&str>,
        file: Option<&str>,
        default: &str,
    ) -> Option<SocketAddr> {
        let (text, origin) = match (flag, file) {
            (Some(f), _) => (f, format!("--{}", key.replace('_', "-"))),
            (None, Some(v)) => (v, key.to_owned()),
            (None, None) => (default, key.to_owned()),
        };
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                let message = format!("{text:?} is not an address like 127.0.0.1:3128");
                if flag.is_some() {
                    self.list.push(ConfigError {
                        file: None,
                        key: origin,
                        message,
                    });
                } else {
                    self.push(&origin, message);
                }
                None
            }
        }
    }

    /// A list naming one entry twice is a mistake worth reporting (a typo for another
    /// entry, often): the second one is named.
    /// `list`: the valid entries, each with its index in the file.
    pub(super) fn no_repeats<T: PartialEq + fmt::Display>(
        &mut self,
        key: &str,
        list: &[(usize, T)],
    ) {
        for (k, (i, item)) in list.iter().enumerate() {
            if let Some((first, _)) = list[..k].iter().find(|(_, x)| x == item) {
                self.push(
                    &format!("{key}[{i}]"),
                    format!("{item} is listed twice (also {key}[{first}])"),
                );
            }
        }
    }

    fn cidr(&mut self, key: &str, text: &str) -> Option<IpNet> {
        let text = text.trim();
        if let Ok(net) = text.parse::<IpNet>() {
            return Some(net.trunc());
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(IpNet::from(ip));
        }
        self.push(
            key,
            format!("{text:?} is not a network like 10.0.0.0/8 or an address"),
        );
        None
    }

    fn host_pattern(&mut self, key: &str, text: &str) -> Option<String> {
        let host = text.strip_prefix("*.").unwrap_or(text);
        let valid = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if valid {
            Some(text.to_ascii_lowercase())
        } else {
            self.push(
                key,
                format!("{text:?} is not a host name or a `*.domain` pattern"),
            );
            None
        }
    }

    fn size(&mut self, key: &str, raw: Option<RawSize>, default: u64, min: u64) -> u64 {
        let value = match raw {
            None => return default,
            Some(RawSize::Bytes(n)) => Ok(n),
            Some(RawSize::Text(t)) => parse_size(&t),
        };
        match value {
            Ok(n) if n >= min => n,
            Ok(n) => {
                self.push(key, format!("{n} bytes is below the minimum of {min}"));
                default
            }
            Err(e) => {
                self.push(key, e);
                default
            }
        }
    }

    fn count(&mut self, key: &str, raw: Option<usize>, default: usize, max: usize) -> usize {
        match raw {
            None => default,
            Some(0) => {
                self.push(key, "must be at least 1".into());
                default
            }
            Some(n) if n > max => {
                self.push(key, format!("{n} is over the maximum of {max}"));
                default
            }
            Some(n) => n,
        }
    }

    fn duration(&mut self, key: &str, raw: Option<RawDuration>, default: Duration) -> Duration {
        let value = match raw {
            None => return default,
            Some(RawDuration::Seconds(s)) => Ok(Duration::from_secs(s)),
            Some(RawDuration::Text(t)) => humantime::parse_duration(t.trim())
                .map_err(|e| format!("{t:?} is not a duration like 500ms or 30s: {e}")),
        };
        match value {
            Ok(d) if d > MAX_DURATION => {
                self.push(
                    key,
                    format!("{}s is over the maximum of 365 days", d.as_secs()),
                );
                default
            }
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.push(key, "must be longer than zero".into());
                default
            }
            Err(e) => {
                self.push(key, e);
                default
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("16MiB", Some(16 << 20)),
            ("16 MiB", Some(16 << 20)),
            ("512kib", Some(512 << 10)),
            ("1GB", Some(1_000_000_000)),
            ("1048576", Some(1 << 20)),
            ("10B", Some(10)),
            ("1.5MiB", None),
            ("MiB", None),
            ("16 parsecs", None),
            ("99999999999TiB", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text).ok(), *want, "{text}");
        }
    }
}
