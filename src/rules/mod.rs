//! Rule files: loading a rules directory into one validated [`RuleSet`].
//!
//! Every `*.yaml` file in the directory holds `rules: [...]` (schema in [`schema`]).
//! Validation is strict and reports every problem at once, each with its file, rule id
//! and key: unknown keys, bad regexes, duplicate ids, unknown validators, patterns whose
//! longest match is unbounded or over 4 KiB, and failing embedded tests.
//!
//! This module does no scanning itself; embedded tests run through [`crate::scan::Engine`].
//! It reads files and nothing else: no network, no tokio.

pub mod schema;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::scan::analyze::{self, PatternInfo};
use crate::scan::{Engine, MaskStyle, Normalize, Validator};
use schema::{NESTED_KEYS, RULE_KEYS, RawRule};

/// Distinct values remembered per rule and per category in one stream. Thresholds may not
/// exceed it, so a capped count never changes a verdict.
pub const DISTINCT_CAP: u64 = 10_000;

/// Largest rule file accepted, so a hostile file cannot exhaust memory while parsing.
pub const MAX_RULE_FILE_BYTES: u64 = 4 << 20;

/// Default bytes either side of a match searched for context words.
pub const DEFAULT_CONTEXT_WINDOW: usize = 300;

/// Largest context window accepted.
pub const MAX_CONTEXT_WINDOW: usize = 4096;

/// A validated rule, ready for the engine.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique id, `[a-z0-9-]+`.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Category whose distinct values thresholds count.
    pub category: String,
    /// The confirming regex as written.
    pub pattern: String,
    /// Facts the engine plans its prefilter on.
    pub info: PatternInfo,
    /// Literals near which the regex runs (empty: the engine picks a prefilter).
    pub keywords: Vec<String>,
    /// Check run on every match.
    pub validator: Validator,
    /// How values are made equal for distinct counting.
    pub normalize: Normalize,
    /// How samples are masked.
    pub mask: MaskStyle,
    /// Corroborating words.
    pub context: Option<Context>,
    /// Regexes on the matched value that drop it.
    pub exclude: Vec<String>,
    /// Exact data match: the index column the rule's values must be in.
    pub edm: Option<Edm>,
    /// Per-request thresholds.
    pub thresholds: Thresholds,
    /// Embedded tests.
    pub tests: schema::RawTests,
    /// File the rule came from.
    pub file: PathBuf,
}

/// Corroborating words near a match.
#[derive(Debug, Clone)]
pub struct Context {
    /// ASCII case-insensitive words.
    pub words: Vec<String>,
    /// Bytes either side of the match.
    pub window: usize,
    /// Whether a match without a word nearby is dropped.
    pub required: bool,
}

/// Exact data match settings of a rule (see [`schema::RawEdm`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edm {
    /// Index column the rule's normalised values are looked up in.
    pub field: String,
    /// Columns of which a value of the same record must be matched within `window` bytes.
    pub near: Vec<String>,
    /// Bytes between the two matches' starts.
    pub window: usize,
}

/// Distinct values of a category in one request at which a rule logs or blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Log at this many (None: never on this rule).
    pub log: Option<u64>,
    /// Block at this many (None: never on this rule).
    pub block: Option<u64>,
}

/// A loaded, validated set of rules.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    version: String,
}

impl RuleSet {
    /// The rules, in file-name order then file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// A short hash of the rule files' contents: changes whenever any rule changes.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Builds a set from already validated rules (used by tests and by `load_dir`).
    fn new(rules: Vec<Rule>, version: String) -> RuleSet {
        RuleSet { rules, version }
    }
}

/// One problem in a rules directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The file (or directory) the problem is in.
    pub file: PathBuf,
    /// The rule id, when the problem is in one rule.
    pub rule: Option<String>,
    /// The key, when the problem is in one key.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(rule) = &self.rule {
            write!(f, ": rule {rule}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found while loading a rules directory.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} problem(s) in the rules:\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
pub struct RuleErrors(pub Vec<RuleError>);

/// Outcome of one embedded test case.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    /// Rule id.
    pub rule: String,
    /// `match` or `no_match`.
    pub kind: &'static str,
    /// The test input.
    pub input: String,
    /// Whether the rule behaved as the case says.
    pub passed: bool,
}

/// Loads and validates every `*.yaml` file in `dir`, including running embedded tests.
///
/// Every problem is listed at once: the embedded tests of the rules that loaded run even
/// when other rules are broken, so an author fixing a directory sees a failing case
/// together with a bad pattern elsewhere, not one round after it.
pub fn load_dir(dir: &Path) -> Result<RuleSet, RuleErrors> {
    load_dir_with_engine(dir).map(|(set, _)| set)
}

/// [`load_dir`], with the engine its checks built from the set (default options): a
/// caller that scans with those needs no second build (`egress-dlp scan`, `rules check`).
pub fn load_dir_with_engine(dir: &Path) -> Result<(RuleSet, Engine), RuleErrors> {
    let Loaded {
        rules,
        version,
        mut errors,
    } = read_rules(dir)?;
    // Each id once (a duplicate is already an error): the first definition is tested.
    let mut ids = HashSet::new();
    let rules: Vec<Rule> = rules
        .into_iter()
        .filter(|r| ids.insert(r.id.clone()))
        .collect();
    if rules.is_empty() {
        return Err(RuleErrors(errors));
    }
    let set = RuleSet::new(rules, version);
    let engine = Engine::new(&set);
    let slow = too_slow_to_search(&set, &engine);
    if !slow.is_empty() {
        // Their cases are not run: such a rule is searched for at every byte. The other
        // rules' are, so one run lists every problem (found in review: a failing case
        // elsewhere showed only once the slow rule was fixed).
        let slow_ids: HashSet<&str> = slow.iter().filter_map(|e| e.rule.as_deref()).collect();
        let rest: Vec<Rule> = set
            .rules
            .iter()
            .filter(|r| !slow_ids.contains(r.id.as_str()))
            .cloned()
            .collect();
        if !rest.is_empty() {
            errors.extend(test_failures(&RuleSet::new(rest, set.version.clone())));
        }
        errors.extend(slow);
        return Err(RuleErrors(errors));
    }
    errors.extend(test_failures_with(&set, &engine));
    if errors.is_empty() {
        Ok((set, engine))
    } else {
        Err(RuleErrors(errors))
    }
}

/// The embedded test cases of `set` that fail, as errors of their rules' `tests` keys.
fn test_failures(set: &RuleSet) -> Vec<RuleError> {
    test_failures_with(set, &Engine::new(set))
}

/// [`test_failures`] with the engine already built from `set`.
fn test_failures_with(set: &RuleSet, engine: &Engine) -> Vec<RuleError> {
    run_tests(set, engine)
        .into_iter()
        .filter(|o| !o.passed)
        .map(|o| {
            let rule = set.rules.iter().find(|r| r.id == o.rule);
            RuleError {
                file: rule.map(|r| r.file.clone()).unwrap_or_default(),
                rule: Some(o.rule.clone()),
                key: Some(format!("tests.{}", o.kind)),
                message: format!(
                    "embedded test failed: {:?} {}",
                    o.input,
                    if o.kind == "match" {
                        "was not matched"
                    } else {
                        "was matched"
                    }
                ),
            }
        })
        .collect()
}

/// Runs every embedded test of every rule through `engine` (built from `set`).
pub fn run_tests(set: &RuleSet, engine: &Engine) -> Vec<TestOutcome> {
    let mut out = Vec::new();
    for (idx, rule) in set.rules.iter().enumerate() {
        let cases = rule
            .tests
            .matches
            .iter()
            .map(|t| ("match", t))
            .chain(rule.tests.no_match.iter().map(|t| ("no_match", t)));
        for (kind, input) in cases {
            let findings = engine.scan_bytes(input.as_bytes());
            let found = findings.rule_count(idx) > 0;
            out.push(TestOutcome {
                rule: rule.id.clone(),
                kind,
                input: input.clone(),
                passed: found == (kind == "match"),
            });
        }
    }
    out
}

/// Whether a directory entry is a rule file: `*.yaml` or `*.yml`, not hidden. Hidden
/// names are editors' and tools' (an Emacs lock link `.#rules.yaml` is a dangling link
/// while a file is edited: found in review, it failed every load and reload).
pub fn is_rule_file_name(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."));
    !hidden && path.extension().is_some_and(|x| x == "yaml" || x == "yml")
}

/// Loads and validates a rules directory without running the embedded tests.
pub fn load_dir_untested(dir: &Path) -> Result<RuleSet, RuleErrors> {
    load_dir_untested_with_engine(dir).map(|(set, _)| set)
}

/// [`load_dir_untested`], with the engine its check built (see [`load_dir_with_engine`]).
pub fn load_dir_untested_with_engine(dir: &Path) -> Result<(RuleSet, Engine), RuleErrors> {
    let Loaded {
        rules,
        version,
        errors,
    } = read_rules(dir)?;
    if !errors.is_empty() {
        return Err(RuleErrors(errors));
    }
    let set = RuleSet::new(rules, version);
    let engine = Engine::new(&set);
    let slow = too_slow_to_search(&set, &engine);
    if slow.is_empty() {
        Ok((set, engine))
    } else {
        Err(RuleErrors(slow))
    }
}

/// What a rules directory holds: the rules that validated, the digest of its files, and
/// every problem found in them.
struct Loaded {
    rules: Vec<Rule>,
    version: String,
    errors: Vec<RuleError>,
}

/// Reads and validates every rule file in `dir`; `Err` only for a directory that cannot
/// be read or holds no rules at all (a problem in a file or rule is in [`Loaded::errors`]).
fn read_rules(dir: &Path) -> Result<Loaded, RuleErrors> {
    let dir_error = |message: String| {
        RuleErrors(vec![RuleError {
            file: dir.to_path_buf(),
            rule: None,
            key: None,
            message,
        }])
    };
    let entries = std::fs::read_dir(dir)
        .map_err(|e| dir_error(format!("cannot read the rules directory: {e}")))?;
    // Every `*.yaml` is a rule file: one that cannot be read (a dangling link, as a
    // half-updated mount leaves, or a directory of that name) is an error, not a file
    // skipped in silence with its rules missing (found in review).
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| dir_error(format!("cannot list the rules directory: {e}")))?
            .path();
        if is_rule_file_name(&path) {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(dir_error(
            "no rule files (*.yaml) in the rules directory".into(),
        ));
    }
    let mut errors = Vec::new();
    let mut rules = Vec::new();
    let mut hasher = Fnv64::default();
    for file in &files {
        match read_file(file) {
            Ok(text) => {
                hasher.write(
                    file.file_name()
                        .map(|n| n.as_encoded_bytes())
                        .unwrap_or(b""),
                );
                hasher.write(text.as_bytes());
                parse_file(file, &text, &mut rules, &mut errors);
            }
            Err(message) => errors.push(RuleError {
                file: file.clone(),
                rule: None,
                key: None,
                message,
            }),
        }
    }
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for rule in &rules {
        if let Some(first) = seen.get(&rule.id) {
            errors.push(RuleError {
                file: rule.file.clone(),
                rule: Some(rule.id.clone()),
                key: Some("id".into()),
                message: format!("duplicate id (first defined in {})", first.display()),
            });
        } else {
            seen.insert(rule.id.clone(), rule.file.clone());
        }
    }
    if rules.is_empty() && errors.is_empty() {
        return Err(dir_error("the rule files define no rules".into()));
    }
    Ok(Loaded {
        rules,
        version: format!("{:016x}", hasher.finish()),
        errors,
    })
}

/// Rules whose windows the engine can search only with the regex crate: no anchored table
/// (a full scan; keywords that are not bytes every match holds; a prefix or digit-run rule
/// whose anchored table is over its size limit) and no small table either (see
/// `scan::small_table`). The regex crate's lazy automaton gives up on a body made for such
/// a pattern and simulates the NFA, at a cost per byte that grows with the pattern and
/// that the work limit does not see: one such rule would stall every request (found in
/// review: `[\x00-\xff]{4096}` loaded, then scanned 1 MB in 15 s; a one-byte keyword
/// before `[^\n]{0,4000}Z`, about 46 µs a byte of a body made for it in release). A keyword
/// rule is walked as its anchored table when it has no small one, so it is refused only
/// when it has neither, such as `a[ab]{0,2000}a[ab]{20}Z`.
/// `engine` is the one built from `set`.
fn too_slow_to_search(set: &RuleSet, engine: &Engine) -> Vec<RuleError> {
    let slow = |id: &str, anchor| {
        let r = set.rules.iter().find(|r| r.id == id)?;
        let message = if anchor == crate::scan::Anchor::FullScan {
            "too complex to search for at every byte (its automaton is over the size \
             limit) and it gives the engine nothing to look for first: add `keywords`, \
             start it with a literal, or narrow it"
                .to_owned()
        } else {
            "too complex to search for around each place it may start (no small table \
             for it, neither anchored nor unanchored: every byte there could cost a \
             simulation of its automaton): narrow it; a pattern that must remember many \
             past bytes to decide (`a[ab]{0,2000}a[ab]{20}Z`: its last 21) is the usual \
             cause"
                .to_owned()
        };
        Some(RuleError {
            file: r.file.clone(),
            rule: Some(r.id.clone()),
            key: Some("pattern".into()),
            message,
        })
    };
    engine
        .regex_searched()
        .into_iter()
        .filter_map(|(id, anchor)| slow(id, anchor))
        .collect()
}

fn read_file(file: &Path) -> Result<String, String> {
    use std::io::Read;
    // Looked at first: opening a FIFO would wait for a writer.
    let meta = std::fs::metadata(file).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("cannot read: not a regular file".into());
    }
    let f = std::fs::File::open(file).map_err(|e| format!("cannot open: {e}"))?;
    let mut text = String::new();
    f.take(MAX_RULE_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > MAX_RULE_FILE_BYTES {
        return Err(format!(
            "file is over the {MAX_RULE_FILE_BYTES}-byte limit for a rule file"
        ));
    }
    Ok(text)
}

/// Parses one file, appending its valid rules and every problem found.
fn parse_file(file: &Path, text: &str, rules: &mut Vec<Rule>, errors: &mut Vec<RuleError>) {
    let err = |rule: Option<&str>, key: Option<&str>, message: String| RuleError {
        file: file.to_path_buf(),
        rule: rule.map(str::to_owned),
        key: key.map(str::to_owned),
        message,
    };
    // YAML 1.2 booleans only (`id: n` stays the string "n"), and a repeated key is an error.
    let options = serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    };
    let doc: serde_json::Value = match serde_saphyr::from_str_with_options(text, options) {
        Ok(v) => v,
        Err(e) => {
            errors.push(err(None, None, format!("not valid YAML: {e}")));
            return;
        }
    };
    let Some(top) = doc.as_object() else {
        errors.push(err(
            None,
            None,
            "expected a mapping with a `rules` list".into(),
        ));
        return;
    };
    for key in top.keys().filter(|k| *k != "rules") {
        errors.push(err(None, Some(key), "unknown key".into()));
    }
    let Some(list) = top.get("rules").and_then(|r| r.as_array()) else {
        errors.push(err(
            None,
            Some("rules"),
            "missing or not a list of rules".into(),
        ));
        return;
    };
    for (pos, value) in list.iter().enumerate() {
        let label = value
            .get("id")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("#{}", pos + 1));
        let Some(map) = value.as_object() else {
            errors.push(err(Some(&label), None, "a rule must be a mapping".into()));
            continue;
        };
        let mut clean = map.clone();
        for key in map.keys().filter(|k| !RULE_KEYS.contains(&k.as_str())) {
            errors.push(err(Some(&label), Some(key), "unknown key".into()));
            clean.remove(key);
        }
        for &(outer, known) in NESTED_KEYS {
            let Some(serde_json::Value::Object(inner)) = clean.get_mut(outer) else {
                continue;
            };
            let unknown: Vec<String> = inner
                .keys()
                .filter(|k| !known.contains(&k.as_str()))
                .cloned()
                .collect();
            for key in unknown {
                let path = format!("{outer}.{key}");
                errors.push(err(Some(&label), Some(&path), "unknown key".into()));
                inner.remove(&key);
            }
        }
        let raw: RawRule = match serde_path_to_error::deserialize(serde_json::Value::Object(clean))
        {
            Ok(r) => r,
            Err(e) => {
                // The key whose value has the wrong shape (`thresholds.block`), when known.
                let path = e.path().to_string();
                let key = (path != ".").then_some(path.as_str());
                errors.push(err(Some(&label), key, e.into_inner().to_string()));
                continue;
            }
        };
        let before = errors.len();
        let rule = validate_rule(file, raw, errors);
        if errors.len() == before {
            rules.extend(rule);
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Validates one raw rule; every problem goes to `errors`.
/// An EDM column name as the CSV header spells it.
fn valid_column(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= 64 && !s.chars().any(char::is_control)
}

fn validate_rule(file: &Path, raw: RawRule, errors: &mut Vec<RuleError>) -> Option<Rule> {
    let id = raw.id.clone();
    let mut push = |key: &str, message: String| {
        errors.push(RuleError {
            file: file.to_path_buf(),
            rule: Some(id.clone()),
            key: Some(key.to_owned()),
            message,
        })
    };
    if !valid_name(&raw.id) {
        push("id", "must be 1-64 characters of [a-z0-9-]".into());
    }
    if !valid_name(&raw.category) {
        push("category", "must be 1-64 characters of [a-z0-9-]".into());
    }
    if raw.name.trim().is_empty() {
        push("name", "must not be empty".into());
    }
    let info =
        match analyze::analyze(&raw.pattern).and_then(|info| compile(&raw.pattern).map(|_| info)) {
            Ok(info) => Some(info),
            Err(e) => {
                push("pattern", e);
                None
            }
        };
    for (i, kw) in raw.keywords.iter().enumerate() {
        if kw.is_empty() || kw.len() > 64 {
            push(&format!("keywords[{i}]"), "must be 1-64 bytes".into());
        }
    }
    let validator = raw.validator.as_deref().unwrap_or("none");
    let validator = Validator::from_name(validator).or_else(|| {
        push(
            "validator",
            format!(
                "unknown validator {validator:?} (known: {})",
                Validator::NAMES.join(", ")
            ),
        );
        None
    });
    let normalize = raw.normalize.as_deref().unwrap_or("none");
    let normalize = Normalize::from_name(normalize).or_else(|| {
        push(
            "normalize",
            format!(
                "unknown normalisation {normalize:?} (known: {})",
                Normalize::NAMES.join(", ")
            ),
        );
        None
    });
    let context = raw.context.as_ref().map(|c| {
        if c.words.is_empty() {
            push("context.words", "must list at least one word".into());
        }
        for (i, w) in c.words.iter().enumerate() {
            if w.is_empty() || w.len() > 64 {
                push(&format!("context.words[{i}]"), "must be 1-64 bytes".into());
            }
        }
        let window = c.window.unwrap_or(DEFAULT_CONTEXT_WINDOW as u64);
        if window == 0 || window > MAX_CONTEXT_WINDOW as u64 {
            push(
                "context.window",
                format!("must be 1-{MAX_CONTEXT_WINDOW} bytes"),
            );
        }
        Context {
            words: c.words.clone(),
            window: window.min(MAX_CONTEXT_WINDOW as u64) as usize,
            required: c.required,
        }
    });
    for (i, ex) in raw.exclude.iter().enumerate() {
        if let Err(e) = compile(ex) {
            push(&format!("exclude[{i}]"), e);
        }
    }
    let edm = raw.edm.as_ref().map(|x| {
        for (key, name) in std::iter::once(("edm.field".to_owned(), &x.field)).chain(
            x.near
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("edm.near[{i}]"), n)),
        ) {
            if !valid_column(name) {
                push(
                    &key,
                    "must be a column name of 1-64 bytes, no control characters".into(),
                );
            }
        }
        if x.near.contains(&x.field) {
            push("edm.near", "must not name the rule's own field".into());
        }
        let window = x.window.unwrap_or(DEFAULT_CONTEXT_WINDOW as u64);
        if window == 0 || window > MAX_CONTEXT_WINDOW as u64 {
            push(
                "edm.window",
                format!("must be 1-{MAX_CONTEXT_WINDOW} bytes"),
            );
        }
        Edm {
            field: x.field.clone(),
            near: x.near.clone(),
            window: window.min(MAX_CONTEXT_WINDOW as u64) as usize,
        }
    });
    let t = &raw.thresholds;
    if t.log.is_none() && t.block.is_none() {
        push("thresholds", "set at least one of `log` and `block`".into());
    }
    for (key, value) in [("thresholds.log", t.log), ("thresholds.block", t.block)] {
        if let Some(v) = value
            && (v == 0 || v > DISTINCT_CAP)
        {
            push(key, format!("must be 1-{DISTINCT_CAP}"));
        }
    }
    if let (Some(log), Some(block)) = (t.log, t.block)
        && log > block
    {
        push(
            "thresholds",
            format!("log ({log}) is above block ({block})"),
        );
    }
    if raw.tests.matches.is_empty() && raw.tests.no_match.is_empty() {
        push(
            "tests",
            "every rule needs embedded tests (`match` and `no_match` cases)".into(),
        );
    }
    Some(Rule {
        mask: MaskStyle::for_category(&raw.category),
        id: raw.id,
        name: raw.name,
        category: raw.category,
        pattern: raw.pattern,
        info: info?,
        keywords: raw.keywords,
        validator: validator?,
        normalize: normalize?,
        context,
        exclude: raw.exclude,
        edm,
        thresholds: Thresholds {
            log: t.log,
            block: t.block,
        },
        tests: raw.tests,
        file: file.to_path_buf(),
    })
}

/// Builds a regex (or set) from `builder` with the engine's settings: bytes, ASCII
/// classes, size limits so a hostile pattern cannot exhaust memory. One place, so that a
/// rule's pattern and its excludes get the same limits.
macro_rules! with_limits {
    ($builder:expr) => {
        $builder
            .unicode(false)
            .size_limit(1 << 20)
            .dfa_size_limit(2 << 20)
            .nest_limit(64)
            .build()
            .map_err(|e| e.to_string())
    };
}

/// Compiles a rule or exclude pattern the way the engine does: bytes, ASCII classes,
/// with size limits so a hostile pattern cannot exhaust memory.
pub fn compile(pattern: &str) -> Result<regex::bytes::Regex, String> {
    with_limits!(regex::bytes::RegexBuilder::new(pattern))
}

/// [`compile`] for several patterns searched together (a rule's excludes): the same
/// limits, each pattern with its own flags.
pub fn compile_set(patterns: &[String]) -> Result<regex::bytes::RegexSet, String> {
    with_limits!(regex::bytes::RegexSetBuilder::new(patterns))
}

/// FNV-1a, for the rule set's version string (not security relevant).
#[derive(Default)]
struct Fnv64(Option<u64>);

impl Fnv64 {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0.unwrap_or(0xcbf2_9ce4_8422_2325);
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = Some(h);
    }

    fn finish(&self) -> u64 {
        self.0.unwrap_or(0)
    }
}
