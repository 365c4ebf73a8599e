//! The `decode:` and `policy:` config keys: defaults, every key set, and each problem
//! reported with its key, all at once.

use std::path::{Path, PathBuf};

use egress_dlp::config::{self, ConfigErrors, Overrides};
use egress_dlp::decode::Limits;
use egress_dlp::policy::OnInspectionError;

fn load(yaml: &str) -> Result<config::Config, ConfigErrors> {
    let overrides = Overrides {
        rules: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules")),
        ..Overrides::default()
    };
    config::from_yaml(yaml, Some(Path::new("proxy.yaml")), &overrides)
}

#[test]
fn defaults_and_every_key() {
    let c = load("").unwrap();
    assert_eq!(c.decode.limits, Limits::default());
    assert_eq!(c.decode.limits.max_depth, 3);
    assert_eq!(c.decode.limits.max_decoded_bytes, 256 << 20);
    assert_eq!(c.inspection.on_inspection_error, OnInspectionError::Block);
    assert!(c.decode.headers.matches("referer") && c.decode.headers.matches("x-anything"));
    assert!(!c.decode.headers.matches("authorization") && !c.decode.headers.matches("cookie"));

    let c = load(
        "decode:\n  max_depth: 5\n  max_decoded_bytes: 1GiB\n  max_ratio: 500\n  max_archive_entries: 20\n  headers: [User-Agent, 'X-Corp-*']\npolicy:\n  on_inspection_error: allow\n",
    )
    .unwrap();
    assert_eq!(
        c.decode.limits,
        Limits {
            max_depth: 5,
            max_decoded_bytes: 1 << 30,
            max_ratio: 500,
            max_archive_entries: 20,
        }
    );
    assert_eq!(c.inspection.on_inspection_error, OnInspectionError::Allow);
    let h = &c.decode.headers;
    assert!(h.matches("user-agent") && h.matches("x-corp-trace"));
    assert!(!h.matches("referer") && !h.matches("x-other"));
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let yaml = "decode:\n  max_depth: 99\n  max_decoded_bytes: lots\n  max_ratio: 0\n  headers: ['bad header', 'X-*-y*']\npolicy:\n  on_inspection_error: shrug\n";
    let Err(ConfigErrors(list)) = load(yaml) else {
        panic!("accepted");
    };
    let got: Vec<String> = list.iter().map(|e| e.to_string()).collect();
    for key in [
        "decode.max_depth: 99 is more than 16",
        "decode.max_decoded_bytes:",
        "decode.max_ratio: must be at least 1",
        "decode.headers[0]:",
        "decode.headers[1]:",
        "policy.on_inspection_error: \"shrug\" is not one of: block, allow",
    ] {
        assert!(
            got.iter().any(|g| g.contains(key)),
            "{key} missing from {got:#?}"
        );
    }
    assert_eq!(got.len(), 6, "{got:#?}");
    let Err(ConfigErrors(list)) = load("decode: { max_dept: 1 }") else {
        panic!("accepted an unknown key");
    };
    assert!(list[0].to_string().contains("unknown field"));
}
