//! Keyword rules whose pattern is too big for the regex crate to search cheaply around each
//! keyword hit (session 25). Before, `rules check` refused them: the shipped email pattern
//! near a word such as `customer` has over 512 automaton states, and on a body made for it
//! the regex crate's lazy automaton gives up (about 6 MB/s on random `ab.@-_` text). Such a
//! rule is now walked as one anchored table, tried only in the token left of each byte
//! every match holds (the `@`), and must find exactly what a leftmost-first regex search
//! of the keyword windows finds, however the body is cut.

use std::sync::OnceLock;

use egress_dlp::rules::{RuleSet, load_dir};
use egress_dlp::scan::Engine;
use proptest::prelude::*;

const BIN: &str = env!("CARGO_BIN_EXE_egress-dlp");

/// The shipped email rule's pattern, found near a word instead of near its `@`.
const RULE: &str = r#"rules:
  - id: customer-email
    name: Customer email near a keyword
    category: email
    pattern: '(?i)\b[a-z0-9._%+-]{1,64}@[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63}){0,6}\.[a-z]{2,24}\b'
    keywords: [customer, client]
    normalize: lowercase
    thresholds: { log: 3, block: 10 }
    tests:
      match: ['customer a@b.io', 'Client: x.y@acme-corp.com', 'customer list j@x.org']
      no_match: ['a@b.io', 'nothing here', 'customer none']
"#;

struct Pack {
    _dir: tempfile::TempDir,
    set: RuleSet,
    engine: Engine,
    regex: regex::bytes::Regex,
}

fn pack() -> &'static Pack {
    static PACK: OnceLock<Pack> = OnceLock::new();
    PACK.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("customer.yaml"), RULE).unwrap();
        let set = load_dir(dir.path()).expect("the rule loads");
        let engine = Engine::new(&set);
        let regex = egress_dlp::rules::compile(&set.rules()[0].pattern).unwrap();
        Pack {
            _dir: dir,
            set,
            engine,
            regex,
        }
    })
}

/// The rule's matches by definition: a leftmost-first regex search of the whole input,
/// keeping the starts within the longest match of a keyword (case-insensitive) either side.
fn reference(data: &[u8]) -> (u64, u64) {
    let p = pack();
    let max = p.set.rules()[0].info.max_len;
    let lower = data.to_ascii_lowercase();
    let mut windows = Vec::new();
    for word in [&b"customer"[..], b"client"] {
        for s in 0..lower.len().saturating_sub(word.len() - 1) {
            if lower[s..].starts_with(word) {
                windows.push((s.saturating_sub(max), s + word.len() + max));
            }
        }
    }
    windows.sort();
    let (mut count, mut values) = (0, std::collections::HashSet::new());
    let mut pos = 0;
    for (ws, we) in windows {
        let mut from = ws.max(pos);
        while from <= we.min(data.len()) {
            match p.regex.find_at(data, from) {
                Some(m) if m.start() <= we => {
                    count += 1;
                    values.insert(m.as_bytes().to_ascii_lowercase());
                    pos = m.end();
                    from = m.end();
                }
                _ => break,
            }
        }
    }
    (count, values.len() as u64)
}

/// The engine's (count, distinct) for the rule, the body fed in pieces cut at `cuts`.
fn engine(data: &[u8], cuts: &[usize]) -> (u64, u64) {
    let mut stream = pack().engine.stream();
    let mut at = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    for c in cuts {
        stream.feed(&data[at..c.max(at)]);
        at = c.max(at);
    }
    stream.feed(&data[at..]);
    assert_eq!(stream.stopped(), None, "a small body never stops a rule");
    let findings = stream.finish();
    findings
        .rules
        .iter()
        .find(|f| f.rule == "customer-email")
        .map_or((0, 0), |f| (f.count, f.distinct))
}

#[test]
fn rules_check_accepts_an_email_pattern_found_by_a_word() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("customer.yaml"), RULE).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["rules", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("customer-email") && stdout.contains("keywords"),
        "{stdout}"
    );
}

#[test]
fn an_export_near_the_word_is_counted_and_one_far_from_it_is_not() {
    let mut body = String::from("customer list follows\n");
    for i in 0..12 {
        body.push_str(&format!("Jane.Doe{i}@Acme-Corp.io,\n"));
    }
    // Past the keyword's window: the rule is found only near its words.
    body.push_str(&" ".repeat(2000));
    body.push_str("far.away@acme-corp.io\n");
    let (count, distinct) = engine(body.as_bytes(), &[]);
    assert_eq!((count, distinct), (12, 12));
    assert_eq!(reference(body.as_bytes()), (12, 12));
}

/// Random text of the email alphabet with the keyword every 300 bytes: the body the regex
/// crate's lazy automaton gave up on. Same findings as the definition, whole or cut.
#[test]
fn a_body_made_for_the_pattern_finds_what_the_definition_finds() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut body = Vec::new();
    while body.len() < 96 << 10 {
        for _ in 0..300 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            body.push(b"ab.@-_"[(seed % 6) as usize]);
        }
        body.extend_from_slice(b" customer ");
    }
    let want = reference(&body);
    assert!(want.0 > 100, "the body holds matches: {want:?}");
    assert_eq!(engine(&body, &[]), want);
    assert_eq!(engine(&body, &[1, 4097, 30_000, 65_536, 65_537]), want);
}

fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"customer".to_vec()),
        Just(b"CLIENT ".to_vec()),
        Just(b"@".to_vec()),
        Just(b".".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"j.doe@acme-corp.io".to_vec()),
        Just(b"x@y.co".to_vec()),
        Just(b"a.b@c.d.e.f.org".to_vec()),
        "[a-z0-9._%+-]{1,70}".prop_map(String::into_bytes),
        "[a-z0-9-]{1,20}".prop_map(String::into_bytes),
        " {100,600}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn findings_equal_the_definition_however_cut(
        pieces in prop::collection::vec(piece(), 1..60),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let data = pieces.concat();
        prop_assert_eq!(engine(&data, &cuts), reference(&data));
    }
}

/// A rule whose keywords are its required context words skips the context search (every
/// match near a keyword has it in reach), but only when every keyword is one and the
/// window reaches the longest match; otherwise the words are searched as before.
#[test]
fn required_context_is_taken_from_keywords_only_when_they_are_the_words() {
    let dir = tempfile::tempdir().unwrap();
    let rule = |id: &str, keywords: &str, window: usize| {
        format!(
            "  - id: {id}\n    name: {id}\n    category: {id}\n    \
             pattern: '\\b[A-Z]{{4}}[0-9]{{20}}\\b'\n    keywords: [{keywords}]\n    \
             context: {{ words: [secret], window: {window}, required: true }}\n    \
             thresholds: {{ log: 1 }}\n    \
             tests: {{ match: ['secret ABCD01234567890123456789'], no_match: [secret] }}\n"
        )
    };
    let yaml = format!(
        "rules:\n{}{}{}",
        rule("same", "secret", 30),
        rule("more", "secret, token", 30),
        rule("narrow", "secret", 10),
    );
    std::fs::write(dir.path().join("r.yaml"), yaml).unwrap();
    let engine = Engine::new(&load_dir(dir.path()).unwrap());
    let value = "ABCD01234567890123456789";
    let found = |body: &str| {
        let f = engine.scan_bytes(body.as_bytes());
        let mut ids: Vec<String> = f.rules.iter().map(|r| r.rule.clone()).collect();
        ids.sort();
        ids
    };
    // Right after the word: every rule.
    assert_eq!(
        found(&format!("secret {value}")),
        ["more", "narrow", "same"]
    );
    // Near `token` alone: `more` finds it, but it has no context word in reach.
    assert!(found(&format!("token {value}")).is_empty());
    // 20 bytes after the word: past `narrow`'s 10-byte window (the keyword's window is
    // the longest match, 24), within the others' 30.
    let gap = " ".repeat(20);
    assert_eq!(found(&format!("secret{gap}{value}")), ["more", "same"]);
}
