//! `policy:` — identity (proxy authentication, the client map, groups), destinations and
//! per-user thresholds: the raw serde types and their validation into [`Policy`].
//!
//! Validation reads the credentials file (the only I/O), reports every bad line with its
//! number, and checks that every user and group the overrides name exists and every
//! category is one the rules count.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use super::Errors;
use super::raw::RawDuration;
use crate::policy::destination::{self, Destinations, HostList};
use crate::policy::identity::{
    self, Auth, AuthLimits, ClientMap, Credentials, MAX_CREDENTIALS_FILE_BYTES,
};
use crate::policy::{CategoryThresholds, Policy, ThresholdOverride};
use crate::rules::{DISTINCT_CAP, RuleSet, Thresholds};

/// Default realm of the `Proxy-Authenticate` challenge.
pub const DEFAULT_REALM: &str = "egress-dlp";

/// `policy:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Proxy authentication and the client-address map (off unless `credentials` or
    /// `clients` is set).
    #[serde(default)]
    pub auth: RawAuth,
    /// Group name -> its member user names (users from the credentials file or the client
    /// map), for `overrides`.
    pub groups: Option<BTreeMap<String, Vec<String>>>,
    /// Sanctioned and blocked host patterns.
    #[serde(default)]
    pub destinations: RawDestinations,
    /// Per-user or per-group thresholds that replace the rules' for the categories named.
    pub overrides: Option<Vec<RawOverride>>,
    /// Distinct values per user (or client address) and category over a sliding span.
    #[serde(default)]
    pub windows: super::window::RawWindows,
    /// The exact-data-match index.
    #[serde(default)]
    pub edm: super::window::RawEdm,
    /// What happens to a request that could not be fully inspected (a decoding limit, a
    /// corrupt or unsupported encoding): `block` (default; a 403 page says the content
    /// could not be inspected) or `allow` (forwarded, and logged).
    pub on_inspection_error: Option<String>,
}

/// `policy.auth:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Credentials file: `user:$argon2id$...` per line (from `egress-dlp passwd USER`),
    /// `#` comments and blank lines allowed.
    pub credentials: Option<PathBuf>,
    /// Client address or network (CIDR) -> user, for hosts that cannot authenticate; the
    /// longest prefix wins; credentials sent by such a host are still checked.
    pub clients: Option<BTreeMap<String, String>>,
    /// Whether a request with no user (no credentials, no client-map entry) is answered
    /// with the 407 challenge (default true). False lets it through as anonymous.
    pub required: Option<bool>,
    /// Realm of the `Proxy-Authenticate: Basic` challenge (default `egress-dlp`).
    pub realm: Option<String>,
    /// Failed logins from one client address within `failure_window` after which its
    /// attempts are answered 429 until the window ends (default 10).
    pub max_failures_per_client: Option<u32>,
    /// Failed logins for one user name within `failure_window` after which attempts for
    /// that name are answered 429 until the window ends (default 50).
    pub max_failures_per_user: Option<u32>,
    /// How long failures are counted, from a key's first failure (default `5m`).
    pub failure_window: Option<RawDuration>,
    /// Entries in each failure table (client addresses; user names) (default 10000).
    pub failure_table_entries: Option<usize>,
    /// How long a successful verification is reused without argon2 (default `5m`).
    pub cache_ttl: Option<RawDuration>,
    /// Entries in the verification cache (default 10000).
    pub cache_entries: Option<usize>,
    /// Argon2 verifications running at once; more wait (default 4).
    pub max_verifications: Option<usize>,
}

/// `policy.destinations:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestinations {
    /// Hosts where bulk transfers are logged but allowed (`host`, `*.domain`, IP).
    pub sanctioned: Option<Vec<String>>,
    /// Hosts refused outright, before any body is read (`host`, `*.domain`, IP).
    pub blocked: Option<Vec<String>>,
}

/// One entry of `policy.overrides:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverride {
    /// User names it applies to.
    pub users: Option<Vec<String>>,
    /// Groups (from `policy.groups`) whose members it applies to.
    pub groups: Option<Vec<String>>,
    /// Category -> `{log, block}`: replaces the rules' thresholds for that category (an
    /// omitted `log` or `block` means none).
    pub thresholds: BTreeMap<String, RawThresholds>,
}

/// `{log: N, block: N}` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThresholds {
    /// Distinct values at which the request is logged.
    pub log: Option<u64>,
    /// Distinct values at which the request is blocked.
    pub block: Option<u64>,
}

/// Validates `policy:`, reading the credentials file; `rules` (when it loaded) gives the
/// categories overrides may name.
pub(super) fn validate(raw: RawPolicy, rules: Option<&RuleSet>, errors: &mut Errors) -> Policy {
    let auth = validate_auth(raw.auth, errors);
    let known: HashSet<String> = auth
        .iter()
        .flat_map(|a| a.known_users().map(str::to_owned))
        .collect();

    let mut parsed = Vec::new();
    for (key, texts) in [
        (
            "policy.destinations.sanctioned",
            raw.destinations.sanctioned,
        ),
        ("policy.destinations.blocked", raw.destinations.blocked),
    ] {
        let (patterns, bad) = destination::parse_list(&texts.unwrap_or_default());
        for (i, message) in bad {
            errors.push(&format!("{key}[{i}]"), message);
        }
        parsed.push(patterns);
    }
    let blocked = parsed.pop().unwrap_or_default();
    let sanctioned = parsed.pop().unwrap_or_default();
    // A pattern in both lists is a contradiction, not a question of precedence.
    for p in sanctioned.iter().filter(|p| blocked.contains(p)) {
        errors.push(
            "policy.destinations",
            format!("{p} is both sanctioned and blocked"),
        );
    }
    let destinations = Destinations {
        sanctioned: HostList::new(sanctioned),
        blocked: HostList::new(blocked),
    };

    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    for (group, members) in raw.groups.unwrap_or_default() {
        let key = format!("policy.groups.{group}");
        if !identity::valid_user_name(&group) {
            errors.push(&key, format!("{group:?} is not a valid group name"));
        }
        if auth.is_none() {
            errors.push(
                &key,
                "groups need policy.auth (no request has a user)".into(),
            );
        }
        let mut seen = HashSet::new();
        for (i, member) in members.iter().enumerate() {
            if !seen.insert(member) {
                errors.push(&format!("{key}[{i}]"), format!("{member} is listed twice"));
            } else if auth.is_some() && !known.contains(member) {
                errors.push(
                    &format!("{key}[{i}]"),
                    format!("unknown user {member:?} (not in the credentials file or policy.auth.clients)"),
                );
            }
        }
        groups.insert(group, members);
    }

    let categories: Option<HashSet<&str>> =
        rules.map(|set| set.rules().iter().map(|r| r.category.as_str()).collect());
    let mut overrides = Vec::new();
    for (i, o) in raw.overrides.unwrap_or_default().into_iter().enumerate() {
        let key = format!("policy.overrides[{i}]");
        if auth.is_none() {
            errors.push(
                &key,
                "overrides need policy.auth (no request has a user)".into(),
            );
        }
        let users = o.users.unwrap_or_default();
        let override_groups = o.groups.unwrap_or_default();
        if users.is_empty() && override_groups.is_empty() {
            errors.push(&key, "name at least one of `users` and `groups`".into());
        }
        for (j, user) in users.iter().enumerate() {
            if auth.is_some() && !known.contains(user) {
                errors.push(
                    &format!("{key}.users[{j}]"),
                    format!(
                        "unknown user {user:?} (not in the credentials file or policy.auth.clients)"
                    ),
                );
            }
        }
        for (j, group) in override_groups.iter().enumerate() {
            if !groups.contains_key(group) {
                errors.push(
                    &format!("{key}.groups[{j}]"),
                    format!("unknown group {group:?} (not in policy.groups)"),
                );
            }
        }
        if o.thresholds.is_empty() {
            errors.push(
                &format!("{key}.thresholds"),
                "name at least one category".into(),
            );
        }
        let mut thresholds = CategoryThresholds::new();
        for (category, t) in o.thresholds {
            let tkey = format!("{key}.thresholds.{category}");
            if let Some(known) = &categories {
                if !known.contains(category.as_str()) {
                    let mut list: Vec<&str> = known.iter().copied().collect();
                    list.sort_unstable();
                    errors.push(
                        &tkey,
                        format!(
                            "unknown category {category:?} (the rules count: {})",
                            list.join(", ")
                        ),
                    );
                }
            }
            if t.log.is_none() && t.block.is_none() {
                errors.push(&tkey, "set at least one of `log` and `block`".into());
            }
            for (name, value) in [("log", t.log), ("block", t.block)] {
                if let Some(v) = value {
                    if v == 0 || v > DISTINCT_CAP {
                        errors.push(
                            &format!("{tkey}.{name}"),
                            format!("must be 1-{DISTINCT_CAP}"),
                        );
                    }
                }
            }
            if let (Some(log), Some(block)) = (t.log, t.block) {
                if log > block {
                    errors.push(&tkey, format!("log ({log}) is above block ({block})"));
                }
            }
            thresholds.insert(
                category,
                Thresholds {
                    log: t.log,
                    block: t.block,
                },
            );
        }
        overrides.push(ThresholdOverride {
            users,
            groups: override_groups,
            thresholds,
        });
    }

    Policy::new(auth, destinations, groups, overrides)
}

fn validate_auth(raw: RawAuth, errors: &mut Errors) -> Option<Auth> {
    let defaults = AuthLimits::default();
    let limit_keys_set = raw.required.is_some()
        || raw.max_failures_per_client.is_some()
        || raw.max_failures_per_user.is_some()
        || raw.failure_window.is_some()
        || raw.cache_ttl.is_some()
        || raw.cache_entries.is_some()
        || raw.max_verifications.is_some()
        || raw.failure_table_entries.is_some()
        || raw.realm.is_some();
    let limits = AuthLimits {
        max_failures_per_client: positive(
            errors,
            "policy.auth.max_failures_per_client",
            raw.max_failures_per_client,
            defaults.max_failures_per_client,
        ),
        max_failures_per_user: positive(
            errors,
            "policy.auth.max_failures_per_user",
            raw.max_failures_per_user,
            defaults.max_failures_per_user,
        ),
        failure_window: errors.duration(
            "policy.auth.failure_window",
            raw.failure_window,
            defaults.failure_window,
        ),
        failure_table_entries: errors.count(
            "policy.auth.failure_table_entries",
            raw.failure_table_entries,
            defaults.failure_table_entries,
            super::MAX_COUNT,
        ),
        cache_ttl: errors.duration("policy.auth.cache_ttl", raw.cache_ttl, defaults.cache_ttl),
        cache_entries: errors.count(
            "policy.auth.cache_entries",
            raw.cache_entries,
            defaults.cache_entries,
            super::MAX_COUNT,
        ),
        max_verifications: errors.count(
            "policy.auth.max_verifications",
            raw.max_verifications,
            defaults.max_verifications,
            super::MAX_PARALLEL,
        ),
    };
    let realm = raw.realm.unwrap_or_else(|| DEFAULT_REALM.to_owned());
    if realm.is_empty()
        || realm.len() > 100
        || !realm
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        errors.push(
            "policy.auth.realm",
            "must be 1-100 printable ASCII characters without quotes or backslashes".into(),
        );
    }

    let credentials = raw
        .credentials
        .as_deref()
        .map(|path| load_credentials(path, errors))
        .unwrap_or_default();

    let mut entries: Vec<(IpNet, String)> = Vec::new();
    for (net, user) in raw.clients.iter().flatten() {
        let key = format!("policy.auth.clients.{net}");
        let Some(parsed) = errors.cidr(&key, net) else {
            continue;
        };
        if !identity::valid_user_name(user) {
            errors.push(&key, format!("{user:?} is not a valid user name"));
            continue;
        }
        if let Some((_, other)) = entries.iter().find(|(n, _)| *n == parsed) {
            errors.push(&key, format!("{parsed} is mapped already (to {other})"));
            continue;
        }
        entries.push((parsed, user.clone()));
    }
    let configured = raw.credentials.is_some() || raw.clients.is_some();
    if !configured {
        if limit_keys_set {
            errors.push(
                "policy.auth",
                "authentication is off: set `credentials` or `clients` for these keys to apply"
                    .into(),
            );
        }
        return None;
    }
    Some(Auth {
        credentials,
        clients: ClientMap::new(entries),
        required: raw.required.unwrap_or(true),
        realm,
        limits,
    })
}

/// Reads and parses the credentials file, each bad line an error of its own.
fn load_credentials(path: &Path, errors: &mut Errors) -> Credentials {
    let key = "policy.auth.credentials";
    let mut text = String::new();
    let read = std::fs::File::open(path).and_then(|f| {
        f.take(MAX_CREDENTIALS_FILE_BYTES + 1)
            .read_to_string(&mut text)
    });
    match read {
        Err(e) => {
            errors.push(key, format!("cannot read {}: {e}", path.display()));
            Credentials::default()
        }
        Ok(n) if n as u64 > MAX_CREDENTIALS_FILE_BYTES => {
            errors.push(
                key,
                format!(
                    "{} is larger than {MAX_CREDENTIALS_FILE_BYTES} bytes",
                    path.display()
                ),
            );
            Credentials::default()
        }
        Ok(_) => match Credentials::parse(&text) {
            Ok(c) => {
                if c.is_empty() {
                    errors.push(key, format!("{} lists no user", path.display()));
                }
                c
            }
            Err(lines) => {
                for e in lines {
                    errors.push(key, format!("{}: {e}", path.display()));
                }
                Credentials::default()
            }
        },
    }
}

fn positive(errors: &mut Errors, key: &str, raw: Option<u32>, default: u32) -> u32 {
    match raw {
        None => default,
        Some(0) => {
            errors.push(key, "must be at least 1".into());
            default
        }
        Some(n) => n,
    }
}
