//! Literal anchors through the engine (written in review, session 11).

use egress_dlp::rules::load_dir;
use egress_dlp::scan::Engine;

/// Pre-existing (not from the reviewed commits): a rule whose pattern starts with either
/// of two literals differing only in case (`(?:CUST|cust)-`), in a pack with enough
/// keywords that their case variants do not fit the vectorised searcher (nine keywords
/// with different first three letters), finds only one spelling: both lowered literals
/// are one pattern, and the lowercase id is never anchored, so it leaves uninspected.
/// (A rule whose embedded tests include the lowercase spelling refuses to load.)
#[test]
fn both_spellings_of_a_prefix_are_found_beside_many_keywords() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ids.yaml"),
        r#"rules:
  - id: customer-id
    name: Customer ID
    category: customer-id
    description: customer ids in either case
    pattern: '\b(?:CUST|cust)-\d{8}\b'
    thresholds: { log: 1 }
    tests:
      match: ['CUST-00012345', 'id CUST-48213377', 'CUST-90000001']
      no_match: ['CUST-1234567', 'Cust-00012345', 'xcust-00012345']
  - id: codename
    name: Project codename
    category: codename
    description: words of internal projects
    pattern: '(?i)\b(?:alpha|bravo|charlie|delta|echo|foxtrot|golf|hotel|india)-\d{3}\b'
    keywords: [alpha, bravo, charlie, delta, echo, foxtrot, golf, hotel, india]
    thresholds: { log: 1 }
    tests:
      match: ['alpha-123', 'HOTEL-001', 'see india-999']
      no_match: ['alpha-12', 'kilo-123', 'alphabet-123']
"#,
    )
    .unwrap();
    let engine = Engine::new(&load_dir(dir.path()).unwrap());
    for body in ["refund for CUST-48213377", "refund for cust-48213377"] {
        assert_eq!(
            engine
                .scan_bytes(body.as_bytes())
                .category_distinct("customer-id"),
            1,
            "{body}"
        );
    }
}
