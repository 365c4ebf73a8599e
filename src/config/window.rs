//! Configures [`crate::policy::window`] and [`crate::policy::edm`]: the `policy.windows`
//! and `policy.edm` keys.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::Errors;
use super::raw::RawDuration;
use crate::policy::edm::{EdmIndex, EdmKey};
use crate::policy::window::WindowConfig;
use crate::rules::{DISTINCT_CAP, RuleSet, Thresholds};
use crate::scan::ExactIndex;

/// Default span of the cumulative windows.
pub const DEFAULT_WINDOW_SPAN: Duration = Duration::from_secs(3600);
/// Default principals remembered by the windows.
pub const DEFAULT_MAX_PRINCIPALS: usize = 100_000;
/// Default distinct values remembered per principal and category.
pub const DEFAULT_MAX_VALUES: usize = 10_000;
/// Largest EDM index file accepted.
pub const MAX_EDM_INDEX_BYTES: u64 = 4 << 30;

/// `policy.windows`: distinct values per user (or client address) and category over a
/// sliding span. Off until a category has thresholds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindows {
    /// How far back values count (default 1h).
    pub span: Option<RawDuration>,
    /// Per category: `{log: N, block: M}` distinct values within the span.
    #[serde(default)]
    pub thresholds: BTreeMap<String, RawThresholds>,
    /// Principals remembered at once; the least recently active are forgotten first
    /// (default 100000).
    pub max_principals: Option<usize>,
    /// Distinct values remembered per principal and category; the oldest are forgotten
    /// first (default 10000; thresholds may not exceed it).
    pub max_values: Option<usize>,
}

/// Thresholds on a window's distinct count.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThresholds {
    /// Log a request that brings the count to this.
    pub log: Option<u64>,
    /// Block a request that would bring the count to this.
    pub block: Option<u64>,
}

/// `policy.edm`: the exact-data-match index rules with `edm:` look values up in.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdm {
    /// The index file written by `egress-dlp edm build`.
    pub index: Option<PathBuf>,
    /// The key file the index was built with (default `DATA_DIR/edm.key`).
    pub key: Option<PathBuf>,
}

/// Validates `policy.windows` against the categories of the loaded rules.
pub(super) fn windows(
    raw: RawWindows,
    rules: Option<&RuleSet>,
    errors: &mut Errors,
) -> WindowConfig {
    let span = errors.duration("policy.windows.span", raw.span, DEFAULT_WINDOW_SPAN);
    let max_principals = errors.count(
        "policy.windows.max_principals",
        raw.max_principals,
        DEFAULT_MAX_PRINCIPALS,
        super::MAX_COUNT,
    );
    let max_values = errors.count(
        "policy.windows.max_values",
        raw.max_values,
        DEFAULT_MAX_VALUES,
        usize::MAX,
    );
    if max_values as u64 > DISTINCT_CAP * 100 {
        errors.push(
            "policy.windows.max_values",
            format!("must be at most {}", DISTINCT_CAP * 100),
        );
    }
    let mut thresholds = BTreeMap::new();
    for (category, t) in raw.thresholds {
        let key = format!("policy.windows.thresholds.{category}");
        if let Some(set) = rules
            && !set.rules().iter().any(|r| r.category == category)
        {
            let mut known: Vec<&str> = set.rules().iter().map(|r| r.category.as_str()).collect();
            known.sort_unstable();
            known.dedup();
            errors.push(
                &key,
                format!(
                    "no rule has category {category:?} (known: {})",
                    known.join(", ")
                ),
            );
        }
        if t.log.is_none() && t.block.is_none() {
            errors.push(&key, "set at least one of `log` and `block`".into());
        }
        for (name, value) in [("log", t.log), ("block", t.block)] {
            if let Some(v) = value
                && (v == 0 || v > max_values as u64)
            {
                errors.push(
                    &format!("{key}.{name}"),
                    format!("must be 1-{max_values} (policy.windows.max_values)"),
                );
            }
        }
        if let (Some(log), Some(block)) = (t.log, t.block)
            && log > block
        {
            errors.push(&key, format!("log ({log}) is above block ({block})"));
        }
        thresholds.insert(
            category,
            Thresholds {
                log: t.log,
                block: t.block,
            },
        );
    }
    WindowConfig {
        span,
        thresholds,
        max_principals,
        max_values,
    }
}

/// Loads `policy.edm` (when set) and checks that every rule's `edm:` columns are in it;
/// a rule with `edm:` and no index configured is an error.
pub(super) fn edm(
    raw: RawEdm,
    data_dir: &Path,
    rules: Option<&RuleSet>,
    errors: &mut Errors,
) -> Option<Arc<EdmIndex>> {
    let needing: Vec<&str> = rules
        .map(|set| {
            set.rules()
                .iter()
                .filter(|r| r.edm.is_some())
                .map(|r| r.id.as_str())
                .collect()
        })
        .unwrap_or_default();
    let Some(index_path) = raw.index else {
        if raw.key.is_some() {
            errors.push(
                "policy.edm.key",
                "is set but policy.edm.index is not".into(),
            );
        }
        if !needing.is_empty() {
            errors.push(
                "policy.edm.index",
                format!(
                    "rules {} use edm: but no index is configured (build one with `egress-dlp edm build`)",
                    needing.join(", ")
                ),
            );
        }
        return None;
    };
    let key_path = raw.key.unwrap_or_else(|| data_dir.join("edm.key"));
    let key = match fs::read_to_string(&key_path) {
        Ok(text) => match EdmKey::parse(&text) {
            Ok(key) => Some(key),
            Err(e) => {
                errors.push("policy.edm.key", format!("{}: {e}", key_path.display()));
                None
            }
        },
        Err(e) => {
            errors.push(
                "policy.edm.key",
                format!("cannot read {}: {e}", key_path.display()),
            );
            None
        }
    };
    let index = key.and_then(|key| match load_index(&index_path, &key) {
        Ok(index) => Some(index),
        Err(message) => {
            errors.push("policy.edm.index", message);
            None
        }
    })?;
    if let Some(set) = rules {
        for rule in set.rules() {
            let Some(x) = &rule.edm else { continue };
            for column in std::iter::once(&x.field).chain(&x.near) {
                if index.field(column).is_none() {
                    errors.push(
                        "policy.edm.index",
                        format!(
                            "rule {} wants column {column:?}, the index has: {}",
                            rule.id,
                            index.columns().join(", ")
                        ),
                    );
                }
            }
        }
    }
    Some(Arc::new(index))
}

fn load_index(path: &Path, key: &EdmKey) -> Result<EdmIndex, String> {
    let file = fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let len = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len > MAX_EDM_INDEX_BYTES {
        return Err(format!(
            "{} is {len} bytes, more than the {MAX_EDM_INDEX_BYTES} accepted",
            path.display()
        ));
    }
    EdmIndex::read_from(file, len, key).map_err(|e| format!("{}: {e}", path.display()))
}
