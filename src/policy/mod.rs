//! Policy: findings + who sent the request + where it goes -> verdict.
//!
//! Per request, each rule that found something compares the distinct values of its
//! category (across every rule of that category) with its thresholds — or with the
//! thresholds `policy.overrides` sets for the request's user — and the strictest action
//! wins. A sanctioned destination lowers a block to `log`; a blocked destination is a block
//! whatever was found (the proxy refuses it before reading the body).
//!
//! - [`identity`]: users: the credentials file (argon2id), `Proxy-Authorization: Basic`,
//!   the client-address map, groups, the failed-login limiter and the verification cache.
//! - [`destination`]: the sanctioned and blocked host lists.
//!
//! No I/O: the proxy and the config loader read files and sockets and hand the values in.
//! Cumulative windows and exact data match come with later parts of the policy issue.

pub mod destination;
pub mod identity;

use std::collections::HashMap;
use std::sync::Arc;

pub mod edm;
pub mod window;

use serde::Serialize;

use crate::rules::{RuleSet, Thresholds};
use crate::scan::Findings;
pub use destination::{Destination, Destinations};

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
    /// The threshold came from `policy.overrides` (the user's), not from the rule.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub overridden: bool,
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The strictest action of all reasons (allow when none), lowered to `log` for a
    /// sanctioned destination, `block` for a blocked one.
    pub action: Action,
    /// Every threshold crossed.
    pub reasons: Vec<Reason>,
    /// The user the request was attributed to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The destination's class (and the pattern that put it there).
    #[serde(skip_serializing_if = "is_default_destination")]
    pub destination: Destination,
    /// A block threshold was crossed but the destination is sanctioned: logged instead.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sanctioned_bulk: bool,
}

fn is_default_destination(d: &Destination) -> bool {
    *d == Destination::Default
}

/// Per-category thresholds that replace the rules' own for one user.
pub type CategoryThresholds = HashMap<String, Thresholds>;

/// What the policy knows about a request besides its findings.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// The authenticated or address-mapped user (`None`: anonymous, or `scan`).
    pub user: Option<Arc<str>>,
    /// Where the request goes (`Default` for `scan`).
    pub destination: Destination,
    /// The user's threshold overrides (empty: the rules' thresholds).
    pub thresholds: Arc<CategoryThresholds>,
}

/// One entry of `policy.overrides`: these users, and the members of these groups, get
/// these thresholds instead of the rules' for each category named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdOverride {
    /// Users named directly.
    pub users: Vec<String>,
    /// Groups whose members it applies to.
    pub groups: Vec<String>,
    /// Category -> thresholds (an omitted `log` or `block` means none for that category).
    pub thresholds: CategoryThresholds,
}

/// The validated policy config: destinations, groups, threshold overrides. Plain data,
/// built once from the config (swap the whole value to reload).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Proxy authentication and the client map (`None`: off, requests are anonymous).
    pub auth: Option<identity::Auth>,
    /// Sanctioned and blocked destinations.
    pub destinations: Destinations,
    /// Group -> members.
    pub groups: HashMap<String, Vec<String>>,
    /// `policy.overrides`, in file order.
    pub overrides: Vec<ThresholdOverride>,
    /// Each user's thresholds, resolved from `overrides` (first entry naming a category for
    /// the user wins); users without overrides are absent.
    user_thresholds: HashMap<String, Arc<CategoryThresholds>>,
    no_thresholds: Arc<CategoryThresholds>,
}

impl Policy {
    /// Builds the policy, resolving each known user's thresholds once.
    pub fn new(
        auth: Option<identity::Auth>,
        destinations: Destinations,
        groups: HashMap<String, Vec<String>>,
        overrides: Vec<ThresholdOverride>,
    ) -> Policy {
        let mut user_thresholds = HashMap::new();
        let users: std::collections::HashSet<&str> =
            auth.iter().flat_map(|a| a.known_users()).collect();
        for user in users {
            let mut resolved = CategoryThresholds::new();
            for o in &overrides {
                let applies = o.users.iter().any(|u| u == user)
                    || o.groups.iter().any(|g| {
                        groups
                            .get(g)
                            .is_some_and(|members| members.iter().any(|m| m == user))
                    });
                if applies {
                    for (category, t) in &o.thresholds {
                        resolved.entry(category.clone()).or_insert(*t);
                    }
                }
            }
            if !resolved.is_empty() {
                user_thresholds.insert(user.to_owned(), Arc::new(resolved));
            }
        }
        Policy {
            auth,
            destinations,
            groups,
            overrides,
            user_thresholds,
            no_thresholds: Arc::default(),
        }
    }

    /// The policy input for a request by `user` to `destination`.
    pub fn input(&self, user: Option<Arc<str>>, destination: Destination) -> Input {
        let thresholds = user
            .as_deref()
            .and_then(|u| self.user_thresholds.get(u))
            .unwrap_or(&self.no_thresholds)
            .clone();
        Input {
            user,
            destination,
            thresholds,
        }
    }
}

impl Verdict {
    /// Adds reasons from another source (a cumulative window): the action becomes the
    /// stricter of the two.
    /// A sanctioned destination still caps it at log, as in [`evaluate`].
    pub fn raise(&mut self, action: Action, reasons: Vec<Reason>) {
        let action = match self.destination {
            Destination::Sanctioned(_) => {
                self.sanctioned_bulk |= action == Action::Block;
                action.min(Action::Log)
            }
            _ => action,
        };
        self.action = self.action.max(action);
        self.reasons.extend(reasons);
    }
}

/// Applies the thresholds (the rules', or the user's overrides) to the findings of one
/// request, then the destination's class.
pub fn evaluate(set: &RuleSet, findings: &Findings, input: &Input) -> Verdict {
    let mut reasons = Vec::new();
    for f in &findings.rules {
        let Some(rule) = set.rules().get(f.index) else {
            continue;
        };
        let (thresholds, overridden) = match input.thresholds.get(&f.category) {
            Some(t) => (*t, true),
            None => (rule.thresholds, false),
        };
        let distinct = findings.category_distinct(&f.category);
        let crossed = [
            (thresholds.block, Action::Block),
            (thresholds.log, Action::Log),
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
                overridden,
            });
        }
    }
    let strictest = reasons
        .iter()
        .map(|r| r.action)
        .max()
        .unwrap_or(Action::Allow);
    let (action, sanctioned_bulk) = match &input.destination {
        Destination::Default => (strictest, false),
        Destination::Sanctioned(_) => (strictest.min(Action::Log), strictest == Action::Block),
        Destination::Blocked(_) => (Action::Block, false),
    };
    Verdict {
        action,
        reasons,
        user: input.user.as_deref().map(str::to_owned),
        destination: input.destination.clone(),
        sanctioned_bulk,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::Engine;

    fn fixture() -> RuleSet {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules");
        crate::rules::load_dir(&dir).expect("fixture rules load")
    }

    fn emails(n: usize) -> String {
        (0..n).map(|i| format!("c{i}@acme-corp.io\n")).collect()
    }

    fn verdict(set: &RuleSet, text: &str, input: &Input) -> Verdict {
        let engine = Engine::new(set);
        let mut stream = engine.stream();
        stream.feed(text.as_bytes());
        evaluate(set, &stream.finish(), input)
    }

    #[test]
    fn destination_and_user_thresholds_shape_the_verdict() {
        let set = fixture();
        let raised: Arc<CategoryThresholds> = Arc::new(
            [(
                "email".to_owned(),
                Thresholds {
                    log: Some(20),
                    block: Some(100),
                },
            )]
            .into(),
        );
        let sanctioned = Destination::Sanctioned("crm.acme.example".into());
        let blocked = Destination::Blocked("*.paste.example".into());
        // (emails, destination, thresholds, action, sanctioned_bulk, overridden)
        let cases: Vec<(usize, Destination, bool, Action, bool, bool)> = vec![
            (12, Destination::Default, false, Action::Block, false, false),
            (12, sanctioned.clone(), false, Action::Log, true, false),
            (5, sanctioned.clone(), false, Action::Log, false, false),
            (1, sanctioned.clone(), false, Action::Allow, false, false),
            (0, blocked.clone(), false, Action::Block, false, false),
            (12, Destination::Default, true, Action::Allow, false, false),
            (25, Destination::Default, true, Action::Log, false, true),
            (120, Destination::Default, true, Action::Block, false, true),
            (120, sanctioned.clone(), true, Action::Log, true, true),
        ];
        for (n, destination, with_override, action, bulk, overridden) in cases {
            let input = Input {
                user: Some("alice".into()),
                destination: destination.clone(),
                thresholds: if with_override {
                    raised.clone()
                } else {
                    Arc::default()
                },
            };
            let v = verdict(&set, &emails(n), &input);
            let what = format!("{n} emails to {destination:?}, override {with_override}");
            assert_eq!(v.action, action, "{what}");
            assert_eq!(v.sanctioned_bulk, bulk, "{what}");
            assert_eq!(v.reasons.iter().any(|r| r.overridden), overridden, "{what}");
            assert_eq!(v.user.as_deref(), Some("alice"));
            assert_eq!(v.destination, destination);
        }
    }

    #[test]
    fn overrides_resolve_per_user_first_entry_wins() {
        use identity::{Auth, AuthLimits, ClientMap, Credentials};
        let auth = Auth {
            credentials: Credentials::default(),
            clients: ClientMap::new(vec![
                ("10.0.0.1/32".parse().unwrap(), "alice".into()),
                ("10.0.0.2/32".parse().unwrap(), "bob".into()),
                ("10.0.0.3/32".parse().unwrap(), "carol".into()),
            ]),
            required: true,
            realm: "r".into(),
            limits: AuthLimits::default(),
        };
        let t = |log, block| Thresholds { log, block };
        let overrides = vec![
            ThresholdOverride {
                users: vec!["alice".into()],
                groups: vec![],
                thresholds: [("email".to_owned(), t(Some(20), Some(100)))].into(),
            },
            ThresholdOverride {
                users: vec![],
                groups: vec!["staff".into()],
                thresholds: [
                    ("email".to_owned(), t(None, Some(2))),
                    ("card".to_owned(), t(Some(1), None)),
                ]
                .into(),
            },
        ];
        let groups = [("staff".to_owned(), vec!["alice".into(), "bob".into()])].into();
        let policy = Policy::new(Some(auth), Destinations::default(), groups, overrides);
        let of = |user: &str| {
            policy
                .input(Some(user.into()), Destination::Default)
                .thresholds
        };
        assert_eq!(of("alice")["email"], t(Some(20), Some(100)));
        assert_eq!(of("alice")["card"], t(Some(1), None));
        assert_eq!(of("bob")["email"], t(None, Some(2)));
        assert!(of("carol").is_empty());
        assert!(
            policy
                .input(None, Destination::Default)
                .thresholds
                .is_empty()
        );
    }
}
