//! Destinations: which host lists a request's target falls in.
//!
//! The policy config names two lists of host patterns. A **sanctioned** destination (the
//! company's own CRM, its data warehouse) may receive bulk transfers: the verdict is at most
//! `log`, with the reason in the verdict and the log line. A **blocked** destination (paste
//! sites, anonymous file drops) is refused outright, before a body byte is read. Every other
//! host is under the rules' thresholds.
//!
//! Patterns:
//!
//! | pattern | matches | does not match |
//! |---|---|---|
//! | `crm.acme.example` | `crm.acme.example`, `CRM.Acme.Example.` | `eu.crm.acme.example` |
//! | `*.pastebin.example` | `a.pastebin.example`, `x.y.pastebin.example` | `pastebin.example` (the apex) |
//! | `192.0.2.10`, `2001:db8::1`, `[2001:db8::1]` | that address (IPv4-mapped IPv6 counts as IPv4) | other addresses |
//!
//! Matching is case-insensitive and ignores one trailing dot, on both sides. A wildcard
//! never matches its apex: list `pastebin.example` and `*.pastebin.example` to cover both
//! (that is explicit, and a company's apex and subdomains are often run by different
//! people). When a host is in both lists, blocked wins.
//!
//! A lookup costs one hash probe per label of the host, whatever the length of the lists.
//! No I/O and no name resolution here: a host name is matched as written in the request,
//! an IP literal as an address.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

/// One host pattern, normalised (lowercase, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// This host name only.
    Exact(String),
    /// Any host strictly below this domain (`*.domain`), not the domain itself.
    Subdomains(String),
    /// This IP address.
    Ip(IpAddr),
}

/// Why a host pattern is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a host name, a `*.domain` pattern or an IP address")]
pub struct BadPattern(pub String);

impl HostPattern {
    /// Parses and normalises a pattern: `host.example`, `*.example`, an IPv4 or IPv6
    /// address (brackets optional); case-insensitive, one trailing dot ignored.
    pub fn parse(text: &str) -> Result<HostPattern, BadPattern> {
        let bad = || BadPattern(text.to_owned());
        let trimmed = text.trim();
        if let Some(ip) = parse_ip(trimmed) {
            return Ok(HostPattern::Ip(ip.to_canonical()));
        }
        let lower = trimmed.to_ascii_lowercase();
        let lower = lower.strip_suffix('.').unwrap_or(&lower);
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower),
        };
        if !valid_host_name(name) {
            return Err(bad());
        }
        // `*.com` would sanction or block a whole top-level domain: almost surely a typo.
        if wildcard && !name.contains('.') {
            return Err(bad());
        }
        Ok(if wildcard {
            HostPattern::Subdomains(name.to_owned())
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Subdomains(d) => write!(f, "*.{d}"),
            HostPattern::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A list of host patterns, indexed for lookups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostList {
    exact: HashSet<String>,
    subdomains: HashSet<String>,
    ips: HashSet<IpAddr>,
}

impl HostList {
    /// Builds a list from parsed patterns.
    pub fn new(patterns: impl IntoIterator<Item = HostPattern>) -> HostList {
        let mut list = HostList::default();
        for p in patterns {
            match p {
                HostPattern::Exact(h) => {
                    list.exact.insert(h);
                }
                HostPattern::Subdomains(d) => {
                    list.subdomains.insert(d);
                }
                HostPattern::Ip(ip) => {
                    list.ips.insert(ip);
                }
            }
        }
        list
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.subdomains.is_empty() && self.ips.is_empty()
    }

    /// The pattern that matches `host` (as it appears in a URL or CONNECT target, without
    /// port), if any: an exact entry first, then the closest `*.domain`.
    pub fn find(&self, host: &str) -> Option<HostPattern> {
        if let Some(ip) = parse_ip(host).or_else(|| inet_aton(host).map(IpAddr::V4)) {
            let ip = ip.to_canonical();
            return self.ips.contains(&ip).then_some(HostPattern::Ip(ip));
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            &lower
        } else {
            host
        };
        if self.exact.contains(host) {
            return Some(HostPattern::Exact(host.to_owned()));
        }
        // Each proper suffix after a dot, longest first: a.b.example -> b.example, example.
        let mut rest = host;
        while let Some((_, parent)) = rest.split_once('.') {
            if self.subdomains.contains(parent) {
                return Some(HostPattern::Subdomains(parent.to_owned()));
            }
            rest = parent;
        }
        None
    }
}

/// Where a request goes, as far as the policy is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "class", content = "pattern", rename_all = "lowercase")]
pub enum Destination {
    /// No list names it: the rules' thresholds apply.
    #[default]
    Default,
    /// In `sanctioned` (the pattern that matched): at most `log`.
    Sanctioned(String),
    /// In `blocked` (the pattern that matched): refused.
    Blocked(String),
}

impl Destination {
    /// `default`, `sanctioned` or `blocked`, for log lines and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Destination::Default => "default",
            Destination::Sanctioned(_) => "sanctioned",
            Destination::Blocked(_) => "blocked",
        }
    }
}

/// The validated `policy.destinations`: the sanctioned and blocked lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destinations {
    /// Bulk transfers allowed (logged).
    pub sanctioned: HostList,
    /// Refused outright.
    pub blocked: HostList,
}

impl Destinations {
    /// Classifies a target host (no port, brackets allowed around IPv6). Blocked wins
    /// over sanctioned.
    pub fn classify(&self, host: &str) -> Destination {
        if let Some(p) = self.blocked.find(host) {
            return Destination::Blocked(p.to_string());
        }
        if let Some(p) = self.sanctioned.find(host) {
            return Destination::Sanctioned(p.to_string());
        }
        Destination::Default
    }

    /// Whether both lists are empty (every host is a default destination).
    pub fn is_empty(&self) -> bool {
        self.sanctioned.is_empty() && self.blocked.is_empty()
    }
}

/// An IP literal, with or without IPv6 brackets.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    inner.parse().ok()
}

/// An IPv4 address in any spelling the system resolver (`inet_aton`) takes for one, as
/// the connector would reach it: `2130706433`, `127.1`, `0x7f.0.0.1`, `0177.0.0.1` (found
/// in review: a blocked `127.0.0.1` was reached as `2130706433`). One to four parts,
/// each decimal, `0x` hex or `0` octal; the last fills the bytes left.
fn inet_aton(host: &str) -> Option<std::net::Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) =
            if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                (hex, 16)
            } else if part.len() > 1 && part.starts_with('0') {
                (&part[1..], 8)
            } else {
                (*part, 10)
            };
        if digits.is_empty() && radix != 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let value = if digits.is_empty() {
            0
        } else {
            u32::from_str_radix(digits, radix).ok()?
        };
        values.push(value);
    }
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|&v| v > 255) {
        return None;
    }
    let room = 8 * (4 - leading.len() as u32);
    if room < 32 && *last >> room != 0 {
        return None;
    }
    let high = leading
        .iter()
        .enumerate()
        .fold(0u32, |acc, (i, &v)| acc | v << (24 - 8 * i as u32));
    Some(std::net::Ipv4Addr::from(high | last))
}

/// A DNS name: labels of letters, digits, `-` and `_` (seen in real hosts), 1-63 bytes
/// each, 253 at most in all, no label starting or ending with `-`.
fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Parses a list of pattern strings, returning the list and, for each bad one, its index
/// and error. Duplicate patterns (after normalisation) are reported too.
pub fn parse_list(texts: &[String]) -> (Vec<HostPattern>, Vec<(usize, String)>) {
    let mut seen: HashMap<HostPattern, usize> = HashMap::new();
    let mut patterns = Vec::new();
    let mut errors = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        match HostPattern::parse(text) {
            Ok(p) => {
                if let Some(first) = seen.get(&p) {
                    errors.push((i, format!("{p} is listed already (at [{first}])")));
                } else {
                    seen.insert(p.clone(), i);
                    patterns.push(p);
                }
            }
            Err(e) => errors.push((i, e.to_string())),
        }
    }
    (patterns, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str]) -> HostList {
        HostList::new(patterns.iter().map(|p| HostPattern::parse(p).unwrap()))
    }

    #[test]
    fn ipv4_in_every_resolver_spelling() {
        for (host, ip) in [
            ("127.0.0.1", Some("127.0.0.1")),
            ("2130706433", Some("127.0.0.1")),
            ("127.1", Some("127.0.0.1")),
            ("127.0.1", Some("127.0.0.1")),
            ("0x7f.0.0.1", Some("127.0.0.1")),
            ("0x7F000001", Some("127.0.0.1")),
            ("0177.0.0.1", Some("127.0.0.1")),
            ("10.0x10.0300.1", Some("10.16.192.1")),
            ("0", Some("0.0.0.0")),
            ("256.0.0.1", None),
            ("1.2.3.4.5", None),
            ("127.16777216", None),
            ("08.0.0.1", None),
            ("1e100.net", None),
            ("deadbeef", None),
            ("example.com", None),
            ("", None),
        ] {
            assert_eq!(
                inet_aton(host),
                ip.map(|ip: &str| ip.parse().unwrap()),
                "{host}"
            );
        }
        let blocked = list(&["127.0.0.1"]);
        for host in ["2130706433", "127.1", "0x7f.0.0.1", "0177.0.0.1"] {
            assert!(blocked.find(host).is_some(), "{host}");
        }
    }

    #[test]
    fn patterns_parse_and_normalise() {
        let cases: &[(&str, Option<&str>)] = &[
            ("CRM.Acme.Example", Some("crm.acme.example")),
            ("crm.acme.example.", Some("crm.acme.example")),
            ("*.Pastebin.Example", Some("*.pastebin.example")),
            ("*.pastebin.example.", Some("*.pastebin.example")),
            ("192.0.2.10", Some("192.0.2.10")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("::ffff:192.0.2.10", Some("192.0.2.10")),
            ("files_1.example", Some("files_1.example")),
            ("*.com", None),
            ("*", None),
            ("", None),
            ("a..example", None),
            ("-bad.example", None),
            ("bad-.example", None),
            ("space here.example", None),
            ("*.*.example", None),
            ("host.example:443", None),
            ("http://host.example", None),
            ("a.*.example", None),
        ];
        for (text, want) in cases {
            let got = HostPattern::parse(text).ok().map(|p| p.to_string());
            assert_eq!(got.as_deref(), *want, "{text:?}");
        }
        let long = format!("{}.example", "a".repeat(64));
        assert!(HostPattern::parse(&long).is_err());
    }

    #[test]
    fn hosts_match_exactly_by_suffix_or_address() {
        let l = list(&[
            "crm.acme.example",
            "*.pastebin.example",
            "192.0.2.10",
            "2001:db8::1",
        ]);
        let cases: &[(&str, Option<&str>)] = &[
            ("crm.acme.example", Some("crm.acme.example")),
            ("CRM.ACME.EXAMPLE", Some("crm.acme.example")),
            ("crm.acme.example.", Some("crm.acme.example")),
            ("eu.crm.acme.example", None),
            ("acme.example", None),
            ("a.pastebin.example", Some("*.pastebin.example")),
            ("x.Y.pastebin.example.", Some("*.pastebin.example")),
            ("pastebin.example", None),
            ("notpastebin.example", None),
            ("pastebin.example.evil", None),
            ("192.0.2.10", Some("192.0.2.10")),
            ("192.0.2.11", None),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("[::ffff:192.0.2.10]", Some("192.0.2.10")),
            ("", None),
            (".", None),
        ];
        for (host, want) in cases {
            let got = l.find(host).map(|p| p.to_string());
            assert_eq!(got.as_deref(), *want, "{host:?}");
        }
    }

    #[test]
    fn blocked_wins_over_sanctioned() {
        let d = Destinations {
            sanctioned: list(&["*.acme.example"]),
            blocked: list(&["drop.acme.example"]),
        };
        assert_eq!(
            d.classify("drop.acme.example"),
            Destination::Blocked("drop.acme.example".into())
        );
        assert_eq!(
            d.classify("crm.acme.example"),
            Destination::Sanctioned("*.acme.example".into())
        );
        assert_eq!(d.classify("elsewhere.example"), Destination::Default);
    }

    #[test]
    fn duplicates_and_bad_entries_are_all_reported() {
        let texts: Vec<String> = ["a.example", "A.example.", "*.x", "ok.example", "bad host"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (patterns, errors) = parse_list(&texts);
        assert_eq!(patterns.len(), 2);
        let idx: Vec<usize> = errors.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, [1, 2, 4]);
        assert!(
            errors[0].1.contains("listed already (at [0])"),
            "{errors:?}"
        );
    }
}
