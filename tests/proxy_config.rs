//! The proxy config: defaults, the DESIGN.md example, overrides, and every error reported
//! at once with its key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use egress_dlp::config::{self, ConfigErrors, Overrides, Oversize};

fn fixture_rules() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules")
}

/// Parses `yaml` with the fixture rules (unless it names its own) and `overrides`.
fn load(yaml: &str, overrides: Overrides) -> Result<config::Config, ConfigErrors> {
    let overrides = Overrides {
        rules: overrides.rules.or_else(|| Some(fixture_rules())),
        ..overrides
    };
    config::from_yaml(yaml, Some(Path::new("proxy.yaml")), &overrides)
}

fn errors(yaml: &str) -> Vec<String> {
    match load(yaml, Overrides::default()) {
        Ok(_) => Vec::new(),
        Err(ConfigErrors(list)) => list.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn an_empty_file_is_every_default() {
    for text in ["", "\n", "# nothing set\n\n"] {
        let c = load(text, Overrides::default()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:3128".parse::<SocketAddr>().unwrap());
        assert_eq!(
            c.admin_listen,
            "127.0.0.1:9090".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(c.data_dir, Path::new("data"));
        assert_eq!(c.audit.path, Path::new("data/audit.jsonl"));
        assert!(c.tls.intercept);
        assert!(c.tls.bypass.is_empty());
        assert_eq!(c.access.connect_ports, [443]);
        assert!(c.access.allows_client("127.0.0.1".parse().unwrap()));
        assert!(c.access.allows_client("127.9.9.9".parse().unwrap()));
        assert!(c.access.allows_client("::1".parse().unwrap()));
        assert!(c.access.allows_client("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!c.access.allows_client("10.1.2.3".parse().unwrap()));
        assert_eq!(c.limits, config::Limits::default());
        assert_eq!(c.limits.hold_bytes, 16 << 20);
        assert_eq!(c.limits.hold_total, 256 << 20);
        // A quarter of each shared whole per client address.
        assert_eq!(c.limits.hold_per_client, 64 << 20);
        assert_eq!(c.limits.max_connections_per_client, 256);
        assert_eq!(c.limits.body_min_rate, 1024);
        assert_eq!(c.limits.oversize, Oversize::Stream);
        assert!(!c.block_page.contact.is_empty());
    }
}

#[test]
fn no_config_file_is_every_default() {
    let overrides = Overrides {
        rules: Some(fixture_rules()),
        ..Overrides::default()
    };
    let c = config::load(None, &overrides).unwrap();
    assert_eq!(c.listen.port(), 3128);
}

#[test]
fn the_design_example_loads() {
    let yaml = r#"
listen: 127.0.0.1:3128
admin_listen: 127.0.0.1:9090
rules: rules
data_dir: data
tls:
  intercept: true
  bypass: ['*.bank.example']
  upstream_roots: []
access:
  clients: [127.0.0.0/8, '::1/128']
  connect_ports: [443]
limits:
  hold_bytes: 16MiB
  oversize: stream
audit:
  path: data/audit.jsonl
"#;
    // The example names the shipped pack; the fixture rules stand in for it (flags win).
    let c = load(yaml, Overrides::default()).unwrap();
    assert_eq!(c.tls.bypass, ["*.bank.example"]);
    assert_eq!(c.limits.hold_bytes, 16 << 20);
    assert_eq!(c.rules_dir, fixture_rules());
}

#[test]
fn every_limit_can_be_set() {
    let yaml = "
limits:
  hold_bytes: 1048576
  oversize: block
  header_bytes: 32KiB
  header_count: 50
  header_read_timeout: 5s
  idle_timeout: 3m
  max_connections: 10
  upstream_connect_timeout: 1500ms
  upstream_response_timeout: 30
  drain_time: 10s
  linger_time: 2s
  hold_total: 64MiB
  hold_per_client: 8MiB
  max_connections_per_client: 3
  body_min_rate: 4KiB
  hold_wait: 3s
block_page:
  contact: Call 4242.
";
    let c = load(yaml, Overrides::default()).unwrap();
    let l = &c.limits;
    assert_eq!(l.hold_bytes, 1 << 20);
    assert_eq!(l.oversize, Oversize::Block);
    assert_eq!(l.header_bytes, 32 << 10);
    assert_eq!(l.header_count, 50);
    assert_eq!(l.header_read_timeout, Duration::from_secs(5));
    assert_eq!(l.idle_timeout, Duration::from_secs(180));
    assert_eq!(l.max_connections, 10);
    assert_eq!(l.upstream_connect_timeout, Duration::from_millis(1500));
    assert_eq!(l.upstream_response_timeout, Duration::from_secs(30));
    assert_eq!(l.drain_time, Duration::from_secs(10));
    assert_eq!(l.linger_time, Duration::from_secs(2));
    assert_eq!(l.hold_total, 64 << 20);
    assert_eq!(l.hold_per_client, 8 << 20);
    assert_eq!(l.max_connections_per_client, 3);
    assert_eq!(l.body_min_rate, 4096);
    assert_eq!(l.hold_wait, Duration::from_secs(3));
    assert_eq!(c.block_page.contact, "Call 4242.");
}

#[test]
fn flags_override_the_file() {
    let yaml = "listen: 127.0.0.1:8080\ndata_dir: /var/lib/x\n";
    let c = load(
        yaml,
        Overrides {
            listen: Some("127.0.0.1:9999".into()),
            data_dir: Some("/srv/dlp".into()),
            ..Overrides::default()
        },
    )
    .unwrap();
    assert_eq!(c.listen.port(), 9999);
    assert_eq!(c.audit.path, Path::new("/srv/dlp/audit.jsonl"));
}

#[test]
fn single_problems_name_their_key() {
    // (config text, expected fragment of the one error)
    let cases: &[(&str, &str)] = &[
        (
            "listen: localhost",
            "proxy.yaml: listen: \"localhost\" is not an address",
        ),
        (
            "admin_listen: 127.0.0.1:3128",
            "admin_listen: is the same address as listen",
        ),
        ("access: { clients: [10.0.0.0/33] }", "access.clients[0]:"),
        (
            "access: { connect_ports: [0] }",
            "access.connect_ports[0]: port 0",
        ),
        (
            "limits: { hold_bytes: 16 parsecs }",
            "limits.hold_bytes: unknown size unit",
        ),
        (
            "limits: { hold_bytes: 0 }",
            "limits.hold_bytes: 0 bytes is below",
        ),
        (
            "limits: { oversize: drop }",
            "limits.oversize: \"drop\" is not one of",
        ),
        (
            "limits: { idle_timeout: soon }",
            "limits.idle_timeout: \"soon\" is not a duration",
        ),
        (
            "limits: { drain_time: 0s }",
            "limits.drain_time: must be longer than zero",
        ),
        (
            "limits: { max_connections: 0 }",
            "limits.max_connections: must be at least 1",
        ),
        (
            "limits: { hold_bytes: 32MiB, hold_total: 16MiB }",
            "limits.hold_total: 16777216 bytes is less than limits.hold_bytes",
        ),
        (
            "limits: { hold_bytes: 1MiB, hold_total: 8MiB, hold_per_client: 512KiB }",
            "limits.hold_per_client: 524288 bytes is not between limits.hold_bytes",
        ),
        (
            "limits: { hold_total: 8MiB, hold_bytes: 1MiB, hold_per_client: 9MiB }",
            "limits.hold_per_client: 9437184 bytes is not between",
        ),
        (
            "limits: { max_connections: 10, max_connections_per_client: 11 }",
            "limits.max_connections_per_client: 11 is more than limits.max_connections (10)",
        ),
        (
            "limits: { max_connections_per_client: 0 }",
            "limits.max_connections_per_client: must be at least 1",
        ),
        ("tls: { bypass: ['bad host!'] }", "tls.bypass[0]:"),
        (
            "tls: { upstream_roots: [/nonexistent/ca.pem] }",
            "tls.upstream_roots[0]:",
        ),
        (
            "block_page: { contact: \"a\\nb\" }",
            "block_page.contact: must be one line",
        ),
        ("lisen: 127.0.0.1:1", "lisen: unknown field"),
        (
            "limits: { hold_byte: 1 }",
            "limits.hold_byte: unknown field",
        ),
        ("tls: { intercept: yes }", "tls.intercept: invalid type"),
        ("listen: [1, 2]", "listen: invalid type"),
        ("listen: a\nlisten: b", "invalid config"),
    ];
    for (yaml, want) in cases {
        let got = errors(yaml);
        assert_eq!(got.len(), 1, "{yaml:?}: {got:#?}");
        assert!(
            got[0].contains(want),
            "{yaml:?}: {:?} lacks {want:?}",
            got[0]
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = "
listen: nowhere
access:
  clients: [not-a-net, 10.0.0.0/8, 300.1.1.1]
limits:
  hold_bytes: lots
  oversize: maybe
  header_read_timeout: -1s
";
    let got = errors(yaml);
    let keys = [
        "listen",
        "access.clients[0]",
        "access.clients[2]",
        "limits.hold_bytes",
        "limits.oversize",
        "limits.header_read_timeout",
    ];
    assert_eq!(got.len(), keys.len(), "{got:#?}");
    for key in keys {
        assert!(
            got.iter().any(|e| e.contains(&format!("{key}:"))),
            "{key} missing: {got:#?}"
        );
    }
}

#[test]
fn a_bad_flag_is_reported_as_the_flag() {
    let err = load(
        "",
        Overrides {
            listen: Some("nowhere".into()),
            ..Overrides::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].key, "--listen");
    assert_eq!(err.0[0].file, None);
}

#[test]
fn rule_problems_are_config_problems() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "rules:\n  - id: Bad Id\n").unwrap();
    let err = load(
        "listen: nowhere",
        Overrides {
            rules: Some(dir.path().to_path_buf()),
            ..Overrides::default()
        },
    )
    .unwrap_err();
    assert!(err.0.iter().any(|e| e.key == "listen"));
    assert!(err.0.iter().any(|e| e.key == "rules"), "{err}");
    let missing = load(
        "",
        Overrides {
            rules: Some("/nonexistent/rules".into()),
            ..Overrides::default()
        },
    )
    .unwrap_err();
    assert_eq!(missing.0[0].key, "rules");
}

#[test]
fn the_hold_budget_is_never_below_the_hold_limit() {
    let c = load("limits: { hold_bytes: 1GiB }", Overrides::default()).unwrap();
    assert_eq!(c.limits.hold_total, 1 << 30);
}

/// One unknown key or wrong type no longer hides the file's other problems: every one is
/// listed by its dotted key (found in review: the first stopped the parse).
#[test]
fn every_problem_in_a_file_is_listed() {
    let got = errors(
        "listen: nowhere\nlimits: { hold_byte: 1, max_connections: many, idle_timeout: 0s }\n\
         tls: { intercep: true }\naccess: { clients: [not-a-net] }\npolicy: { colour: red }\n",
    );
    for want in [
        "listen: \"nowhere\" is not an address",
        "limits.hold_byte: unknown field `hold_byte`",
        "limits.max_connections: invalid type",
        "limits.idle_timeout: must be longer than zero",
        "tls.intercep: unknown field `intercep`",
        "access.clients[0]:",
        "policy.colour: unknown field `colour`",
    ] {
        assert!(
            got.iter().any(|e| e.contains(want)),
            "{want:?} not reported: {got:#?}"
        );
    }
    assert_eq!(got.len(), 7, "{got:#?}");
}

/// Values past any sensible range are refused at start: a huge count panicked the proxy
/// after it had bound its listeners (a semaphore's limit) or aborted it on its first
/// request (hyper reserves `header_count` slots per request), a huge duration overflowed
/// every connection's clock arithmetic, a huge `hold_bytes` unbounded memory (found in
/// review).
#[test]
fn values_out_of_range_are_refused() {
    let max = u64::MAX;
    let auth = "clients: {'10.0.0.1': bob}";
    let cases = [
        (
            format!("limits: {{ max_connections: {max} }}"),
            "limits.max_connections: 18446744073709551615 is over the maximum",
        ),
        (
            "limits: { header_count: 10001 }".to_owned(),
            "limits.header_count: 10001 is over the maximum of 10000",
        ),
        (
            format!("tls: {{ max_concurrent_mints: {max} }}"),
            "tls.max_concurrent_mints:",
        ),
        (
            format!("policy: {{ windows: {{ max_principals: {max} }} }}"),
            "policy.windows.max_principals:",
        ),
        (
            format!("policy: {{ auth: {{ {auth}, max_verifications: 1025 }} }}"),
            "policy.auth.max_verifications:",
        ),
        (
            format!("limits: {{ header_read_timeout: {max} }}"),
            "limits.header_read_timeout:",
        ),
        (
            "limits: { idle_timeout: 366days }".to_owned(),
            "limits.idle_timeout: 31622400s is over the maximum of 365 days",
        ),
        (
            format!("tls: {{ leaf_cache_ttl: {max} }}"),
            "tls.leaf_cache_ttl:",
        ),
        (
            format!("policy: {{ auth: {{ {auth}, cache_ttl: {max} }} }}"),
            "policy.auth.cache_ttl:",
        ),
        (
            format!("policy: {{ auth: {{ {auth}, failure_window: {max} }} }}"),
            "policy.auth.failure_window:",
        ),
        (
            "limits: { hold_bytes: 2GiB }".to_owned(),
            "limits.hold_bytes: 2147483648 bytes is over the maximum",
        ),
        (
            "access: { clients: [] }".to_owned(),
            "access.clients: is empty",
        ),
        (
            "access: { clients: [10.0.0.0/8, 127.0.0.1, 10.0.0.1/8] }".to_owned(),
            "access.clients[2]: 10.0.0.0/8 is listed twice (also access.clients[0])",
        ),
        (
            "access: { connect_ports: [443, 443] }".to_owned(),
            "access.connect_ports[1]: 443 is listed twice",
        ),
        (
            "tls: { bypass: [a.example, A.example] }".to_owned(),
            "tls.bypass[1]: a.example is listed twice",
        ),
    ];
    for (yaml, want) in &cases {
        let got = errors(yaml);
        assert_eq!(got.len(), 1, "{yaml}: {got:#?}");
        assert!(got[0].contains(want), "{yaml}: {:?} lacks {want:?}", got[0]);
    }
    // The largest values still accepted.
    for yaml in [
        "limits: { header_count: 10000, max_connections: 10000000, idle_timeout: 365days, hold_bytes: 1GiB }",
        "policy: { auth: { clients: {'10.0.0.1': bob}, max_verifications: 1024 } }",
    ] {
        assert_eq!(errors(yaml), Vec::<String>::new(), "{yaml}");
    }
}

/// Bare scalars are taken as the key needs them, as ever: numeric user names, a numeric
/// contact line, a quoted count (a review found that listing every problem had started
/// refusing these); and in a file with a real problem, they add no spurious one.
#[test]
fn bare_scalars_are_read_as_the_key_needs_them() {
    let yaml = "policy:\n  auth: { clients: { '10.0.0.1': 1001, '10.0.0.2': alice, '10.0.0.3': 1002 } }\n  \
                groups: { eng: [alice, 1001] }\n  \
                overrides: [{ users: [1002], thresholds: { email: { block: 50 } } }]\n\
                block_page: { contact: 5551234 }\naudit: { keep: \"5\" }\n";
    assert_eq!(errors(yaml), Vec::<String>::new());
    let c = load(yaml, Overrides::default()).unwrap();
    assert_eq!(c.block_page.contact, "5551234");
    assert_eq!(c.audit.keep, 5);
    assert_eq!(c.policy.groups["eng"], ["alice", "1001"]);
    let got = errors(&format!("{yaml}limits: {{ hold_byte: 1 }}\n"));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].contains("limits.hold_byte: unknown field"),
        "{got:#?}"
    );
    // A numeric map key is a key, not a list number; a key with dots is quoted.
    let got = errors("policy: { groups: { '2024': [alice, [1]] } }\n");
    assert!(
        got.iter()
            .any(|e| e.contains("policy.groups.2024[1]: invalid type")),
        "{got:#?}"
    );
    let got = errors("policy: { auth: { clients: { '10.0.0.5': [x] } } }\n");
    assert!(
        got.iter()
            .any(|e| e.contains("policy.auth.clients[\"10.0.0.5\"]: invalid type")),
        "{got:#?}"
    );
}

/// In a file with a real problem, quoted counts are read as the typed read reads them, and
/// hundreds of numeric names do not use up the passes that list the problem (found in
/// review: a spurious error, and a refusal with no error at all).
#[test]
fn a_failing_file_lists_its_problem_and_nothing_else() {
    let typo = "reload: { watch_intervl: 1 }\n";
    let yaml = "limits: { max_connections: \"0x10\" }\n";
    assert_eq!(errors(yaml), Vec::<String>::new());
    let got = errors(&format!("{yaml}{typo}"));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].contains("reload.watch_intervl: unknown field"),
        "{got:#?}"
    );
    let ids: Vec<String> = (1000..1450).map(|i| i.to_string()).collect();
    let clients: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(k, id)| format!("'10.0.{}.{}': {id}", k / 200, k % 200 + 1))
        .collect();
    let yaml = format!(
        "policy:\n  auth: {{ clients: {{ {} }} }}\n  groups: {{ eng: [{}] }}\n",
        clients.join(", "),
        ids.join(", ")
    );
    assert_eq!(errors(&yaml), Vec::<String>::new());
    let got = errors(&format!("{yaml}{typo}"));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].contains("reload.watch_intervl: unknown field"),
        "{got:#?}"
    );
}
