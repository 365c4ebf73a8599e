//! Exact data match in the engine: only values the customer table holds count, `near`
//! pairs count whichever half comes first, and the findings do not depend on the split.

use std::path::Path;
use std::sync::Arc;

use egress_dlp::policy::edm::{ColumnSpec, EdmIndex, EdmKey, KEY_BYTES};
use egress_dlp::rules::load_dir;
use egress_dlp::scan::{Engine, EngineOptions, Findings, Normalize};
use proptest::prelude::*;

const TABLE: &str = "name,email,phone\n\
Alice,alice@acme-corp.io,415-555-0100\n\
Bob,BOB@acme-corp.io,415-555-0101\n\
Carol,carol@acme-corp.io,415-555-0102\n";

fn engine() -> Engine {
    let set = load_dir(Path::new("tests/fixtures/edm-rules")).expect("fixture loads");
    let key = EdmKey::from_secret(&[3; KEY_BYTES]);
    let columns = [
        ColumnSpec {
            name: "email".into(),
            normalize: Normalize::Lowercase,
        },
        ColumnSpec {
            name: "phone".into(),
            normalize: Normalize::Digits,
        },
    ];
    let (index, _) = EdmIndex::build(TABLE.as_bytes(), &columns, &key).expect("table builds");
    Engine::with_options(
        &set,
        EngineOptions {
            hash_key: [1, 2],
            exact: Some(Arc::new(index)),
        },
    )
    .expect("columns exist")
}

fn counts(f: &Findings) -> (u64, u64) {
    (f.category_distinct("email"), f.category_distinct("phone"))
}

#[test]
fn only_customers_count_and_emails_need_their_phone_nearby() {
    let e = engine();
    let cases: &[(&str, (u64, u64))] = &[
        // Phones of customers count on their own; an unknown one does not.
        ("415-555-0100 415-555-0101 415-555-9999", (0, 2)),
        // An email alone: in the table, but no phone of the same record near.
        ("alice@acme-corp.io", (0, 0)),
        // Email then its own phone, and phone then its own email: both orders pair.
        ("alice@acme-corp.io, 415-555-0100", (1, 1)),
        ("415-555-0101; bob@acme-corp.io", (1, 1)),
        // Another customer's phone does not corroborate.
        ("alice@acme-corp.io 415-555-0101", (0, 1)),
        // Too far apart (window 80).
        (
            "carol@acme-corp.io ................................................................................ 415-555-0102",
            (0, 1),
        ),
        // Not a customer: shaped like one, same domain.
        ("mallory@acme-corp.io 415-555-0100", (0, 1)),
        // Normalised like the table: case does not matter.
        ("ALICE@ACME-CORP.IO 415-555-0100", (1, 1)),
    ];
    for (input, want) in cases {
        let got = counts(&e.scan_bytes(input.as_bytes()));
        assert_eq!(got, *want, "{input:?}");
    }
}

#[test]
fn without_an_index_edm_rules_match_on_pattern_alone() {
    let set = load_dir(Path::new("tests/fixtures/edm-rules")).expect("fixture loads");
    let e = Engine::new(&set);
    let f = e.scan_bytes(b"mallory@acme-corp.io 415-555-9999");
    assert_eq!(counts(&f), (1, 1));
}

#[test]
fn a_rule_naming_a_missing_column_is_refused() {
    let set = load_dir(Path::new("tests/fixtures/edm-rules")).expect("fixture loads");
    let key = EdmKey::from_secret(&[3; KEY_BYTES]);
    let columns = [ColumnSpec {
        name: "email".into(),
        normalize: Normalize::Lowercase,
    }];
    let (index, _) = EdmIndex::build(TABLE.as_bytes(), &columns, &key).unwrap();
    let err = Engine::with_options(
        &set,
        EngineOptions {
            hash_key: [1, 2],
            exact: Some(Arc::new(index)),
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("no column \"phone\""), "{err}");
}

const PIECES: &[&str] = &[
    "alice@acme-corp.io",
    "415-555-0100",
    "bob@acme-corp.io",
    "415-555-0101",
    "carol@acme-corp.io",
    "415-555-0102",
    "mallory@acme-corp.io",
    "415-555-9999",
    ", ",
    "...........",
    "\n",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn exact_findings_do_not_depend_on_the_split(
        idx in prop::collection::vec(0..PIECES.len(), 1..60),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let e = engine();
        let data: Vec<u8> = idx.iter().flat_map(|&i| PIECES[i].bytes().chain([b' '])).collect();
        let whole = e.scan_bytes(&data);
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.sort_unstable();
        let mut stream = e.stream();
        let mut at = 0;
        for p in points {
            stream.feed(&data[at..p]);
            at = p;
        }
        stream.feed(&data[at..]);
        let split = stream.finish();
        prop_assert_eq!(counts(&whole), counts(&split));
        prop_assert_eq!(&whole.categories, &split.categories);
    }
}
