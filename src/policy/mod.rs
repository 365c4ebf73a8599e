//! Policy: findings -> verdict.
//!
//! Per request, each rule that found something compares the distinct values of its
//! category (across every rule of that category) with its thresholds; the strictest
//! action wins. No I/O; identity, destinations, windows and EDM come in later issues.

use serde::Serialize;

use crate::rules::RuleSet;
use crate::scan::Findings;

/// What happens to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Forward it.
    Allow,
    /// Forward it and write an audit event.
    Log,
    /// Refuse it.
    Block,
}

impl Action {
    /// The lowercase name used in output, metrics and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Log => "log",
            Action::Block => "block",
        }
    }
}

/// What happens to a request that could not be fully inspected (`policy.on_inspection_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnInspectionError {
    /// Refuse it: the block page says its content could not be inspected.
    #[default]
    Block,
    /// Forward it on what was found, and log that it was not fully scanned.
    Allow,
}

/// Why a rule contributed an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// Rule id.
    pub rule: String,
    /// Category counted.
    pub category: String,
    /// Distinct values of the category in the request.
    pub distinct: u64,
    /// The threshold crossed.
    pub threshold: u64,
    /// The action it triggers.
    pub action: Action,
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The strictest action of all reasons (allow when none).
    pub action: Action,
    /// Every threshold crossed.
    pub reasons: Vec<Reason>,
}

/// Applies the rules' thresholds to the findings of one request.
pub fn evaluate(set: &RuleSet, findings: &Findings) -> Verdict {
    let mut reasons = Vec::new();
    for f in &findings.rules {
        let Some(rule) = set.rules().get(f.index) else {
            continue;
        };
        let distinct = findings.category_distinct(&f.category);
        let crossed = [
            (rule.thresholds.block, Action::Block),
            (rule.thresholds.log, Action::Log),
        ]
        .into_iter()
        .find_map(|(t, a)| t.filter(|&t| distinct >= t).map(|t| (t, a)));
        if let Some((threshold, action)) = crossed {
            reasons.push(Reason {
                rule: rule.id.clone(),
                category: f.category.clone(),
                distinct,
                threshold,
                action,
            });
        }
    }
    Verdict {
        action: reasons
            .iter()
            .map(|r| r.action)
            .max()
            .unwrap_or(Action::Allow),
        reasons,
    }
}
