//! The rule file as written: serde types that mirror the YAML one to one.
//!
//! These are raw values; [`super::load_dir`] validates them into [`super::Rule`]s.

use serde::Deserialize;

/// Every key a rule may carry. Anything else is reported as an unknown key.
pub const RULE_KEYS: &[&str] = &[
    "id",
    "name",
    "category",
    "description",
    "pattern",
    "keywords",
    "validator",
    "normalize",
    "context",
    "exclude",
    "edm",
    "thresholds",
    "tests",
];

/// The keys each nested mapping of a rule may carry (reported as `context.colour` when
/// not, like an unknown key of the rule itself).
pub const NESTED_KEYS: &[(&str, &[&str])] = &[
    ("context", &["words", "window", "required"]),
    ("edm", &["field", "near", "window"]),
    ("thresholds", &["log", "block"]),
    ("tests", &["match", "no_match"]),
];

/// One rule as written in a rule file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Unique id across the pack, `[a-z0-9-]+`; used in metrics, audit events and findings.
    pub id: String,
    /// Human-readable name shown on block pages.
    pub name: String,
    /// Thresholds and windows count distinct values per category (`email`, `card`, ...).
    pub category: String,
    /// Free text for rule authors; not used by the engine.
    #[serde(default)]
    pub description: Option<String>,
    /// The confirming regex. Byte-oriented, ASCII classes; its longest match must be bounded.
    pub pattern: String,
    /// Literals: when given, the regex runs only near one of them (ASCII case-insensitive).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Built-in validator run on each match (`none`, `luhn`, `payment-card`, ...).
    #[serde(default)]
    pub validator: Option<String>,
    /// How values are made equal for distinct counting (`none`, `lowercase`, `digits`, `alnum-upper`).
    #[serde(default)]
    pub normalize: Option<String>,
    /// Corroborating words near a match.
    #[serde(default)]
    pub context: Option<RawContext>,
    /// Regexes on the matched value that drop it.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Exact data match: only values found in a column of the EDM index count.
    #[serde(default)]
    pub edm: Option<RawEdm>,
    /// Distinct values of the category in one request that make it logged or blocked.
    pub thresholds: RawThresholds,
    /// Embedded test cases run by `rules test` and at load.
    #[serde(default)]
    pub tests: RawTests,
}

/// Corroborating words near a match.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContext {
    /// Words (ASCII case-insensitive substrings) that corroborate a match.
    pub words: Vec<String>,
    /// How many bytes either side of the match are searched for a word (default 300, at most 4096).
    #[serde(default)]
    pub window: Option<u64>,
    /// When true a match without a word nearby does not count at all (default false:
    /// it counts, and the finding reports how many matches were corroborated).
    #[serde(default)]
    pub required: bool,
}

/// Exact data match for one rule: its values count only when the company's customer table
/// (the EDM index, built by `egress-dlp edm build`) holds them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdm {
    /// The index column (CSV header name) the rule's normalised values are looked up in.
    pub field: String,
    /// Other columns: when given, a value counts only when a value of one of these columns
    /// of the same record was matched (by another EDM rule) within `window` bytes.
    #[serde(default)]
    pub near: Vec<String>,
    /// Bytes between the two matches' starts for `near` (default 300, at most 4096).
    #[serde(default)]
    pub window: Option<u64>,
}

/// Per-request thresholds on the distinct values of the rule's category.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThresholds {
    /// Log the request at this many distinct values (absent: never log on this rule alone).
    #[serde(default)]
    pub log: Option<u64>,
    /// Block the request at this many distinct values (absent: this rule never blocks).
    #[serde(default)]
    pub block: Option<u64>,
}

/// Embedded test cases.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTests {
    /// Inputs in which the rule must find at least one value.
    #[serde(rename = "match", default)]
    pub matches: Vec<String>,
    /// Inputs in which the rule must find nothing.
    #[serde(default)]
    pub no_match: Vec<String>,
}
