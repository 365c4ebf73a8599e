//! The engine against a plain reference scanner over the SHIPPED pack (written in review,
//! session 8: it found the long-digit-run window bug; every test is `#[ignore]`d for its
//! running time, run them with `-- --ignored` after engine changes): per rule, the
//! rule's regex (`rules::compile`: bytes, no Unicode) `find_iter` over the whole input,
//! then excludes, validator, context words, normalisation and distinct counting, done
//! plainly. Keyword rules whose keywords are not inner bytes (aws-secret-access-key) are
//! searched, as documented, only at starts within the longest match of a keyword hit.

use std::collections::HashSet;
use std::path::Path;
use std::sync::OnceLock;

use egress_dlp::rules::{RuleSet, compile, load_dir};
use egress_dlp::scan::Engine;
use proptest::prelude::*;

/// A rule whose (count, distinct, corroborated) differ: (id, reference, engine).
type Diff = (String, (u64, u64, u64), (u64, u64, u64));

struct RefRule {
    id: String,
    regex: regex::bytes::Regex,
    exclude: Vec<regex::bytes::Regex>,
    validator: egress_dlp::scan::Validator,
    normalize: egress_dlp::scan::Normalize,
    /// (lowercased words, window, required)
    context: Option<(Vec<Vec<u8>>, usize, bool)>,
    /// Non-inner keywords (lowercased) and the rule's longest match.
    keywords: Option<(Vec<Vec<u8>>, usize)>,
}

struct Pack {
    set: RuleSet,
    engine: Engine,
    rules: Vec<RefRule>,
}

fn pack() -> &'static Pack {
    static PACK: OnceLock<Pack> = OnceLock::new();
    PACK.get_or_init(|| {
        let set = load_dir(Path::new("rules")).expect("shipped pack loads");
        let engine = Engine::new(&set);
        let rules = set
            .rules()
            .iter()
            .map(|r| {
                let inner = !r.keywords.is_empty()
                    && r.keywords.iter().all(|k| {
                        k.len() == 1
                            && !k.as_bytes()[0].is_ascii_alphabetic()
                            && r.info.required_bytes.contains(&k.as_bytes()[0])
                    });
                RefRule {
                    id: r.id.clone(),
                    regex: compile(&r.pattern).unwrap(),
                    exclude: r.exclude.iter().map(|x| compile(x).unwrap()).collect(),
                    validator: r.validator,
                    normalize: r.normalize,
                    context: r.context.as_ref().map(|c| {
                        (
                            c.words
                                .iter()
                                .map(|w| w.to_ascii_lowercase().into_bytes())
                                .collect(),
                            c.window,
                            c.required,
                        )
                    }),
                    keywords: (!r.keywords.is_empty() && !inner).then(|| {
                        (
                            r.keywords
                                .iter()
                                .map(|w| w.to_ascii_lowercase().into_bytes())
                                .collect(),
                            r.info.max_len,
                        )
                    }),
                }
            })
            .collect();
        Pack { set, engine, rules }
    })
}

/// Every (start, end) of a case-insensitive occurrence of any of `words` (overlapping).
fn occurrences(data: &[u8], words: &[Vec<u8>]) -> Vec<(usize, usize)> {
    let lower = data.to_ascii_lowercase();
    let mut out = Vec::new();
    for w in words {
        if w.is_empty() || w.len() > lower.len() {
            continue;
        }
        for s in 0..=lower.len() - w.len() {
            if &lower[s..s + w.len()] == w.as_slice() {
                out.push((s, s + w.len()));
            }
        }
    }
    out
}

/// The matches of `r`: plain find_iter, or for keyword rules a leftmost-first scan of the
/// starts allowed by the keyword windows.
fn matches(r: &RefRule, data: &[u8]) -> Vec<(usize, usize)> {
    match &r.keywords {
        None => r
            .regex
            .find_iter(data)
            .map(|m| (m.start(), m.end()))
            .collect(),
        Some((kw, max)) => {
            let mut wins: Vec<(usize, usize)> = occurrences(data, kw)
                .into_iter()
                .map(|(s, e)| (s.saturating_sub(*max), e + max))
                .collect();
            wins.sort();
            let mut out = Vec::new();
            let mut pos = 0;
            for (ws, we) in wins {
                let mut from = ws.max(pos);
                while from <= we && from <= data.len() {
                    match r.regex.find_at(data, from) {
                        Some(m) if m.start() <= we => {
                            out.push((m.start(), m.end()));
                            pos = m.end();
                            from = m.end().max(from + usize::from(m.start() == m.end()));
                        }
                        _ => break,
                    }
                }
            }
            out
        }
    }
}

/// Per rule: (count, distinct, corroborated).
fn reference(data: &[u8]) -> Vec<(u64, u64, u64)> {
    let p = pack();
    p.rules
        .iter()
        .map(|r| {
            let ctx = r
                .context
                .as_ref()
                .map(|(w, win, req)| (occurrences(data, w), *win, *req));
            let (mut count, mut corr) = (0u64, 0u64);
            let mut distinct = HashSet::new();
            for (s, e) in matches(r, data) {
                let v = &data[s..e];
                if r.exclude.iter().any(|x| x.is_match(v)) || !r.validator.check(v) {
                    continue;
                }
                let mut c = false;
                if let Some((occ, win, req)) = &ctx {
                    let lo = s.saturating_sub(*win);
                    let hi = e + win;
                    c = occ.iter().any(|&(ws, we)| ws <= hi && we >= lo);
                    if *req && !c {
                        continue;
                    }
                }
                count += 1;
                corr += u64::from(c);
                let mut out = Vec::new();
                r.normalize.apply(v, &mut out);
                distinct.insert(out);
            }
            (count, distinct.len() as u64, corr)
        })
        .collect()
}

fn engine_counts(f: &egress_dlp::scan::Findings) -> Vec<(u64, u64, u64)> {
    let p = pack();
    (0..p.rules.len())
        .map(|i| {
            f.rules
                .iter()
                .find(|x| x.index == i)
                .map_or((0, 0, 0), |x| (x.count, x.distinct, x.corroborated))
        })
        .collect()
}

/// Differences as (rule id, reference, engine).
fn diff(data: &[u8]) -> Vec<Diff> {
    let p = pack();
    let want = reference(data);
    let got = engine_counts(&p.engine.scan_bytes(data));
    p.rules
        .iter()
        .zip(want.iter().zip(&got))
        .filter(|(_, (w, g))| w != g)
        .map(|(r, (w, g))| (r.id.clone(), *w, *g))
        .collect()
}

fn stream_cuts(data: &[u8], cuts: &[usize]) -> egress_dlp::scan::Findings {
    let p = pack();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.sort_unstable();
    let mut stream = p.engine.stream();
    let mut at = 0;
    for q in points {
        stream.feed(&data[at..q]);
        at = q;
    }
    stream.feed(&data[at..]);
    stream.finish()
}

/// Values of every rule's kind (each valid for its rule, alone).
const VALUES: &[&str] = &[
    "alice.smith@acme-corp.io",
    "bob@x.co",
    "A.B@C.DE",
    "j.doe+news@mail.customer-portal.co.uk",
    "o'brien.support@firma.de",
    "a@b.cd",
    "4111111111111111",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "4111 1111 1111 1111 123",
    "4111-1111-1111-1111-123",
    "5555555555554444",
    "2223003122003222",
    "378282246310005",
    "3782 822463 10005",
    "3782-822463-10005",
    "6011111111111117",
    "3530111333300000",
    "30569309025904",
    "3056 930902 5904",
    "6200000000000005",
    "4222222222222",
    "4000000000000000006",
    "536-22-8190",
    "001-01-0001",
    "412-71-3408",
    "SSN: 536228190",
    "ssn 772 13 4567",
    "SS# 412713408",
    "536228190",
    "772 13 4567",
    "GB82 WEST 1234 5698 7654 32",
    "DE89370400440532013000",
    "DE89 3704 0044 0532 0130 00",
    "FR1420041010050500013M02606",
    "NL91ABNA0417164300",
    "NO9386011117947",
    "MT84 MALT 0110 0001 2345 MTLC AST0 01S",
    "AT61 1904 3002 3457 3201",
    "FR14 2004 1010 0505 0001 3M02 606",
    "(555) 123-4567",
    "(555)123-4567",
    "555-123-4567",
    "555.123.4567",
    "+1 555 123 4567",
    "1 555 123 4567",
    "1-800-555-0199",
    "1.800.555.0199",
    "+1-212-555-0142",
    "+1 (555) 123-4567",
    "+1(555)123-4567",
    "+44 20 7946 0958",
    "+4915123456789",
    "+33 1 23 45 67 89",
    "+49-151-2345-6789",
    "+44 (0)20 7946 0958",
    "+15551234567",
    "AB123456C",
    "AB 12 34 56 C",
    "JG103759A",
    "OA 00 00 00 D",
    "CUST-00012345",
    "CUST-48213377",
    "-----BEGIN RSA PRIVATE KEY-----",
    "-----BEGIN PRIVATE KEY-----",
    "-----BEGIN PGP PRIVATE KEY BLOCK-----",
    "PuTTY-User-Key-File-3: ",
    "AKIAEGRESSDLPTEST123",
    "ASIA4WJ99IBAG7I1MNBQ",
    "aws_secret_access_key = EgressDlp/FakeSecretAccessKey+0123456789",
    "SecretAccessKey\":\"tc4xatws8phP9nhFyJfm5di4PzJ59FHz5r1pY4Oj",
    "AWS_SECRET_ACCESS_KEY=/gressDlpFakeSecretAccessKey+0123456789+",
    "ghp_EgressDlpFakeTokenForTests0123456789",
    "gho_KLzdocJ2isAjIhKtJ0RlgLKOmxgJTeKdNnFR",
    "github_pat_EgressDlpFakeTokenXY12_ThisIsNotARealFineGrainedPersonalAccessTokenJustATest012345",
    "xoxb-1234567890123-1234567890123-EgressDlpFakeBotToken123",
    "xoxp-24402685995-28907866661-760313721590-3043b026c48bbf33feff9243a8f506b4",
    "https://hooks.slack.com/services/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",
    "https://hooks.slack.com/workflows/T024BE7LD/A04ABCD2EFG/123456789012345678/EgressDlpFakeTrigger012",
    "sk_live_EgressDlpFakeStripeKey01",
    "rk_live_SI6bWHtP3fS2qHx6kwXoIIXG",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "eyJhbGciOiJIUzI1NiJ9.e30.EgressDlpFakeSignature0123456789abcdefABCDEF",
];

/// Context words and noise.
const EXTRAS: &[&str] = &[
    "ssn:",
    "SSN ",
    "social security ",
    "card ",
    "iban ",
    "phone ",
    "tel:",
    "customer ",
    "email ",
    "nino ",
    "aws_secret ",
    "cvv ",
    "1732867200123",
    "3f2b1c4e-9d8a-4b7c-a1e2-5f6d7c8b9a0e",
    "q83vEjRWeJCrze8SNFZ4kA2ZBxjX9w1T4Bq0aQ3xV8M=",
    "0123456789",
    "2024-01-15",
    "v10.11.12",
    "\u{e9}",
    "\u{2014}",
    " ",
    "\n",
    "-",
    ".",
    "+",
    "(",
    ")",
    "_",
    "@",
    "00",
    "12",
];

fn all_pieces() -> Vec<Vec<u8>> {
    let p = pack();
    let mut out: Vec<Vec<u8>> = VALUES.iter().map(|v| v.as_bytes().to_vec()).collect();
    out.extend(EXTRAS.iter().map(|v| v.as_bytes().to_vec()));
    for r in p.set.rules() {
        out.extend(r.tests.matches.iter().map(|m| m.as_bytes().to_vec()));
        out.extend(r.tests.no_match.iter().map(|m| m.as_bytes().to_vec()));
    }
    out
}

fn pieces() -> &'static Vec<Vec<u8>> {
    static P: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    P.get_or_init(all_pieces)
}

const NEIGHBOURS: &[&[u8]] = &[
    b"",
    b" ",
    b"a",
    b"Z",
    b"z",
    b"0",
    b"9",
    b"5",
    b"_",
    b"-",
    b".",
    b"+",
    b"(",
    b")",
    b"/",
    b"=",
    b":",
    b"\"",
    b"'",
    b",",
    b"\n",
    b"\t",
    b"\x00",
    b"\xff",
    b"\x80",
    b"\xc3\xa9",
    b"\xe2\x80\x94",
    b"@",
    b"#",
    b"$",
    b"%",
    b"&",
    b"*",
    b"<",
    b">",
    b"[",
    b"]",
    b"{",
    b"}",
    b"AB",
    b"12",
    b"1 ",
    b" 1",
    b"-1",
    b"1-",
    b"1.",
    b"x1",
    b"A1",
    b"+1",
    b"1+",
];

fn report(tag: &str, data: &[u8], d: &[Diff]) -> String {
    format!(
        "{tag}: input {:?}\n  {}",
        String::from_utf8_lossy(data),
        d.iter()
            .map(|(id, w, g)| format!("{id}: want {w:?} got {g:?}"))
            .collect::<Vec<_>>()
            .join("; ")
    )
}

static CASES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn check(tag: &str, data: &[u8], fails: &mut Vec<String>) {
    CASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = diff(data);
    if !d.is_empty() && fails.len() < 200 {
        fails.push(report(tag, data, &d));
    }
}

fn finish(name: &str, fails: Vec<String>) {
    eprintln!(
        "{name}: {} cases checked so far (all tests), {} disagreements",
        CASES.load(std::sync::atomic::Ordering::Relaxed),
        fails.len()
    );
    if !fails.is_empty() {
        let mut seen = HashSet::new();
        for f in &fails {
            if seen.insert(f.split(':').next().unwrap().to_string()) || seen.len() < 60 {
                eprintln!("{f}");
            }
        }
        panic!("{} disagreements", fails.len());
    }
}

#[test]
#[ignore = "a long differential sweep (about 8 minutes in release): cargo test --release --test engine_reference -- --ignored"]
fn pieces_alone_and_between_neighbours() {
    let mut fails = Vec::new();
    for v in pieces() {
        check("alone", v, &mut fails);
        for l in NEIGHBOURS {
            for r in NEIGHBOURS {
                let mut d = l.to_vec();
                d.extend_from_slice(v);
                d.extend_from_slice(r);
                check_both("lr", &d, &mut fails);
            }
        }
    }
    finish("neighbours", fails);
}

#[test]
#[ignore = "a long differential sweep (about 8 minutes in release): cargo test --release --test engine_reference -- --ignored"]
fn values_after_every_byte_and_before_every_byte() {
    let mut fails = Vec::new();
    for v in VALUES {
        for b in 0..=255u8 {
            for pre in [&b""[..], b"x", b"1", b" "] {
                let mut d = pre.to_vec();
                d.push(b);
                d.extend_from_slice(v.as_bytes());
                d.push(b);
                d.extend_from_slice(pre);
                check("byte", &d, &mut fails);
                // two values separated by a single byte
                let mut d = v.as_bytes().to_vec();
                d.push(b);
                d.extend_from_slice(v.as_bytes());
                check("pair", &d, &mut fails);
            }
        }
    }
    finish("bytes", fails);
}

#[test]
#[ignore = "a long differential sweep (about 8 minutes in release): cargo test --release --test engine_reference -- --ignored"]
fn values_near_block_boundaries() {
    let mut fails = Vec::new();
    let fillers: &[u8] = b" a0Z_.-";
    for v in VALUES {
        for &f in fillers {
            for pad in 0..131usize {
                let mut d = vec![f; pad];
                d.push(b' ');
                d.extend_from_slice(v.as_bytes());
                check("pad", &d, &mut fails);
                d.push(b' ');
                d.extend(std::iter::repeat_n(f, 131 - pad));
                check("pad2", &d, &mut fails);
                // No separator
                let mut d = vec![f; pad];
                d.extend_from_slice(v.as_bytes());
                check_both("pad0", &d, &mut fails);
            }
        }
    }
    finish("blocks", fails);
}

#[test]
#[ignore = "a long differential sweep (about 8 minutes in release): cargo test --release --test engine_reference -- --ignored"]
fn long_digit_runs() {
    let mut fails = Vec::new();
    for v in VALUES {
        for n in [
            63usize, 64, 65, 127, 128, 4095, 4096, 4097, 5000, 8192, 8193, 9000,
        ] {
            for sep in [&b" "[..], b"-", b"\n", b"a", b".", b"+", b""] {
                let mut d = vec![b'7'; n];
                d.extend_from_slice(sep);
                d.extend_from_slice(v.as_bytes());
                d.extend_from_slice(sep);
                d.extend(std::iter::repeat_n(b'3', n));
                check_both("run", &d, &mut fails);
            }
        }
    }
    finish("runs", fails);
}

fn piece_strategy() -> impl Strategy<Value = Vec<u8>> {
    let n = pieces().len();
    prop_oneof![
        6 => (0..n).prop_map(|i| pieces()[i].clone()),
        3 => (0..VALUES.len()).prop_map(|i| VALUES[i].as_bytes().to_vec()),
        2 => any::<u8>().prop_map(|b| vec![b]),
        1 => prop::collection::vec(prop::sample::select(b"0123456789 -.+()".to_vec()), 1..40),
        1 => prop::collection::vec(prop::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ".to_vec()), 1..40),
        1 => prop::collection::vec(prop::sample::select(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=_-".to_vec()), 1..80),
        1 => (0usize..5000, prop::sample::select(b"0123456789aA ".to_vec())).prop_map(|(n, b)| vec![b; n]),
    ]
}

fn input_strategy() -> impl Strategy<Value = Vec<u8>> {
    (
        0usize..130,
        prop::collection::vec((piece_strategy(), prop::option::of(any::<u8>())), 1..30),
    )
        .prop_map(|(pad, items)| {
            let mut out = vec![b' '; pad];
            for (p, sep) in items {
                out.extend_from_slice(&p);
                if let Some(s) = sep {
                    out.push(s);
                }
            }
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("REF_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)))]

    #[test]
#[ignore = "a long differential sweep (about 8 minutes in release): cargo test --release --test engine_reference -- --ignored"]
    fn engine_equals_reference(data in input_strategy()) {
        CASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = diff(&data);
        prop_assert!(d.is_empty(), "{}", report("prop", &data, &d));
    }

    #[test]
#[ignore = "a long differential sweep (about 8 minutes in release): cargo test --release --test engine_reference -- --ignored"]
    fn stream_equals_reference(data in input_strategy(), cuts in prop::collection::vec(any::<usize>(), 0..20)) {
        let want = reference(&data);
        let got = engine_counts(&stream_cuts(&data, &cuts));
        prop_assert_eq!(want, got, "input {:?}", String::from_utf8_lossy(&data));
    }
}

// ---------------------------------------------------------------------------------------
// The stripped pack: the shipped patterns and keywords only (no validator, exclude,
// context): the engine's counts must equal the raw regex matches, which makes every
// prefilter decision visible (validators no longer hide a wrong match).

struct Stripped {
    engine: Engine,
    rules: Vec<RefRule>,
}

fn yq(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn stripped() -> &'static Stripped {
    static S: OnceLock<Stripped> = OnceLock::new();
    S.get_or_init(|| {
        let p = pack();
        let mut y = String::from("rules:\n");
        for r in p.set.rules() {
            y += &format!(
                "  - id: {}\n    name: x\n    category: {}\n    pattern: {}\n    thresholds: {{ log: 1 }}\n    tests: {{ match: [x], no_match: [y] }}\n",
                r.id,
                r.id,
                yq(&r.pattern)
            );
            if !r.keywords.is_empty() {
                y += &format!(
                    "    keywords: [{}]\n",
                    r.keywords.iter().map(|k| yq(k)).collect::<Vec<_>>().join(", ")
                );
            }
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yaml"), &y).unwrap();
        let set = egress_dlp::rules::load_dir_untested(dir.path()).expect("stripped loads");
        let engine = Engine::new(&set);
        let shipped = pack().engine.anchors();
        let mine = engine.anchors();
        assert_eq!(
            shipped.iter().map(|a| a.1).collect::<Vec<_>>(),
            mine.iter().map(|a| a.1).collect::<Vec<_>>(),
            "same prefilters"
        );
        let rules = set
            .rules()
            .iter()
            .zip(&p.rules)
            .map(|(r, full)| RefRule {
                id: r.id.clone(),
                regex: compile(&r.pattern).unwrap(),
                exclude: vec![],
                validator: r.validator,
                normalize: r.normalize,
                context: None,
                keywords: full.keywords.clone(),
            })
            .collect();
        Stripped { engine, rules }
    })
}

fn stripped_diff_of(f: &egress_dlp::scan::Findings, data: &[u8]) -> Vec<Diff> {
    let s = stripped();
    s.rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let ms = matches(r, data);
            let want = (
                ms.len() as u64,
                ms.iter()
                    .map(|&(a, b)| &data[a..b])
                    .collect::<HashSet<_>>()
                    .len() as u64,
                0,
            );
            let got = f
                .rules
                .iter()
                .find(|x| x.index == i)
                .map_or((0, 0, 0), |x| (x.count, x.distinct, x.corroborated));
            (want != got).then(|| (r.id.clone(), want, got))
        })
        .collect()
}

fn stripped_diff(data: &[u8]) -> Vec<Diff> {
    stripped_diff_of(&stripped().engine.scan_bytes(data), data)
}

fn check_both(tag: &str, data: &[u8], fails: &mut Vec<String>) {
    check(tag, data, fails);
    let d = stripped_diff(data);
    if !d.is_empty() && fails.len() < 200 {
        fails.push(report(&format!("{tag}-stripped"), data, &d));
    }
}

/// Shapes: digit groups, uppercase groups and separators, the stuff identifiers are
/// made of.
fn shape_strategy() -> impl Strategy<Value = Vec<u8>> {
    let tok = prop_oneof![
        5 => (1usize..20, 0u8..10).prop_flat_map(|(n, first)| {
            prop::collection::vec(prop::sample::select(b"0123456789".to_vec()), n - 1)
                .prop_map(move |mut v| { v.insert(0, b'0' + first); v })
        }),
        2 => prop::collection::vec(prop::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ".to_vec()), 1..5),
        1 => prop::collection::vec(prop::sample::select(b"abcdefxyz".to_vec()), 1..3),
        6 => prop::sample::select(vec![
            &b" "[..], b"-", b".", b"(", b")", b"+", b"/", b"_", b":", b"  ", b" (", b") ",
            b"+1 ", b"1-", b"1 ", b"+1", b"(0)", b" (0)", b"\n", b",", b"=", b"@", b"\xc3\xa9", b"\xff",
        ]).prop_map(|s| s.to_vec()),
        1 => (0..VALUES.len()).prop_map(|i| VALUES[i].as_bytes().to_vec()),
    ];
    (0usize..130, prop::collection::vec(tok, 1..40)).prop_map(|(pad, toks)| {
        let mut out = vec![b' '; pad];
        for t in toks {
            out.extend_from_slice(&t);
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("REF_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)))]

    #[test]
#[ignore = "a long differential sweep (about 8 minutes in release): cargo test --release --test engine_reference -- --ignored"]
    fn stripped_equals_raw_regex(data in input_strategy()) {
        CASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = stripped_diff(&data);
        prop_assert!(d.is_empty(), "{}", report("stripped", &data, &d));
    }

    #[test]
#[ignore = "a long differential sweep (about 8 minutes in release): cargo test --release --test engine_reference -- --ignored"]
    fn shapes_equal_raw_regex(data in shape_strategy()) {
        CASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = stripped_diff(&data);
        prop_assert!(d.is_empty(), "{}", report("shape-stripped", &data, &d));
        let d = diff(&data);
        prop_assert!(d.is_empty(), "{}", report("shape", &data, &d));
    }

    #[test]
#[ignore = "a long differential sweep (about 8 minutes in release): cargo test --release --test engine_reference -- --ignored"]
    fn shapes_streamed_equal_raw_regex(data in shape_strategy(), cuts in prop::collection::vec(any::<usize>(), 0..10)) {
        let s = stripped();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.sort_unstable();
        let mut stream = s.engine.stream();
        let mut at = 0;
        for q in points { stream.feed(&data[at..q]); at = q; }
        stream.feed(&data[at..]);
        let d = stripped_diff_of(&stream.finish(), &data);
        prop_assert!(d.is_empty(), "{}", report("shape-stream", &data, &d));
    }
}

#[test]
#[ignore = "a long differential sweep (about 8 minutes in release): cargo test --release --test engine_reference -- --ignored"]
fn stripped_neighbours_and_bytes() {
    let mut fails = Vec::new();
    for v in pieces() {
        for l in NEIGHBOURS {
            for r in NEIGHBOURS {
                let mut d = l.to_vec();
                d.extend_from_slice(v);
                d.extend_from_slice(r);
                let dd = stripped_diff(&d);
                if !dd.is_empty() && fails.len() < 200 {
                    fails.push(report("s-lr", &d, &dd));
                }
            }
        }
    }
    for v in VALUES {
        for b in 0..=255u8 {
            let mut d = v.as_bytes().to_vec();
            d.push(b);
            d.extend_from_slice(v.as_bytes());
            d.push(b);
            let dd = stripped_diff(&d);
            if !dd.is_empty() && fails.len() < 200 {
                fails.push(report("s-pair", &d, &dd));
            }
        }
    }
    finish("stripped-neighbours", fails);
}

/// Inputs over 64 KiB (the scan step) and fed in chunks over 16 KiB (the in-place path),
/// with values straddling the step boundary at every offset.
#[test]
#[ignore = "a long differential sweep (about 8 minutes in release): cargo test --release --test engine_reference -- --ignored"]
fn values_straddling_scan_steps() {
    let mut fails = Vec::new();
    for v in VALUES {
        let vb = v.as_bytes();
        for filler in [b' ', b'a', b'7'] {
            for off in 0..=vb.len() + 2 {
                let mut d = vec![filler; 65536 - off];
                d.push(b' ');
                d.extend_from_slice(vb);
                d.push(b' ');
                d.extend(std::iter::repeat_n(filler, 300));
                check_both("step", &d, &mut fails);
                let want = reference(&d);
                for chunk in [16 * 1024, 16 * 1024 + 7, 20000, 65536] {
                    let mut st = pack().engine.stream();
                    for c in d.chunks(chunk) {
                        st.feed(c);
                    }
                    let got = engine_counts(&st.finish());
                    if got != want && fails.len() < 200 {
                        fails.push(format!("chunked {chunk} value {v:?} off {off} filler {filler}: want {want:?} got {got:?}"));
                    }
                }
            }
        }
    }
    finish("steps", fails);
}

/// Context words at every distance either side of values (required and optional context),
/// with fillers that are and are not part of tokens.
#[test]
#[ignore = "a long differential sweep (about 8 minutes in release): cargo test --release --test engine_reference -- --ignored"]
fn context_at_every_distance() {
    let mut fails = Vec::new();
    let words: &[&str] = &[
        "SSN: ",
        "ss#",
        "social security",
        "aws_secret_access_key",
        "AWSSecret",
        "secret access key ",
        "card",
        "iban",
        "phone",
        "nino",
        "customer",
        "email",
    ];
    let vals: &[&str] = &[
        "536228190",
        "772 13 4567",
        "536-22-8190",
        "EgressDlp/FakeSecretAccessKey+0123456789",
        "tc4xatws8phP9nhFyJfm5di4PzJ59FHz5r1pY4Oj",
        "/gressDlpFakeSecretAccessKey+0123456789+",
        "4111111111111111",
        "DE89370400440532013000",
        "AB123456C",
        "555-123-4567",
        "CUST-00012345",
        "bob@x.co",
    ];
    for w in words {
        for v in vals {
            for dist in 0..140usize {
                for fill in [b' ', b'.', b'x'] {
                    let mut d = w.as_bytes().to_vec();
                    d.extend(std::iter::repeat_n(fill, dist));
                    d.push(b' ');
                    d.extend_from_slice(v.as_bytes());
                    check_both("ctx-before", &d, &mut fails);
                    let mut d = v.as_bytes().to_vec();
                    d.push(b' ');
                    d.extend(std::iter::repeat_n(fill, dist));
                    d.extend_from_slice(w.as_bytes());
                    check_both("ctx-after", &d, &mut fails);
                    // two values, the word between
                    let mut d = v.as_bytes().to_vec();
                    d.push(b' ');
                    d.extend(std::iter::repeat_n(fill, dist));
                    d.extend_from_slice(w.as_bytes());
                    d.extend(std::iter::repeat_n(fill, 139 - dist));
                    d.push(b' ');
                    d.extend_from_slice(v.as_bytes());
                    check_both("ctx-mid", &d, &mut fails);
                }
            }
        }
    }
    finish("context", fails);
}

fn big_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((shape_strategy(), input_strategy()), 1..6).prop_map(|v| {
        let mut out = Vec::new();
        for (a, b) in v {
            out.extend_from_slice(&a);
            out.extend_from_slice(&b);
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("REF_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)))]

    #[test]
#[ignore = "a long differential sweep (about 8 minutes in release): cargo test --release --test engine_reference -- --ignored"]
    fn big_mixed_equal_reference(data in big_strategy()) {
        CASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = stripped_diff(&data);
        prop_assert!(d.is_empty(), "{}", report("big-stripped", &data, &d));
        let d = diff(&data);
        prop_assert!(d.is_empty(), "{}", report("big", &data, &d));
    }
}

#[test]
#[ignore = "a long differential sweep (about 8 minutes in release): cargo test --release --test engine_reference -- --ignored"]
fn zz_debug() {
    let Ok(path) = std::env::var("DBG") else {
        return;
    };
    let data = std::fs::read(path).unwrap();
    let s = stripped();
    let f = s.engine.scan_bytes(&data);
    for r in &f.rules {
        eprintln!(
            "stripped engine {} count {} distinct {} samples {:?}",
            r.rule, r.count, r.distinct, r.samples
        );
    }
    for r in &s.rules {
        for (a, b) in matches(r, &data) {
            eprintln!(
                "ref {} {}..{} {:?}",
                r.id,
                a,
                b,
                String::from_utf8_lossy(&data[a..b])
            );
        }
    }
    let f = pack().engine.scan_bytes(&data);
    for r in &f.rules {
        eprintln!(
            "full engine {} count {} distinct {} samples {:?}",
            r.rule, r.count, r.distinct, r.samples
        );
    }
    eprintln!("full ref diff {:?}", diff(&data));
}

#[test]
#[ignore = "a long differential sweep (about 8 minutes in release): cargo test --release --test engine_reference -- --ignored"]
fn zz_minimal_token_cut() {
    // Stripped pack (payment-card pattern, no validator): the decoy branch's match.
    let data = b"AB12 3456 7890 1234 12345678901234567890";
    let s = stripped();
    let card = s.rules.iter().position(|r| r.id == "payment-card").unwrap();
    let want: Vec<_> = matches(&s.rules[card], data)
        .into_iter()
        .map(|(a, b)| String::from_utf8_lossy(&data[a..b]).into_owned())
        .collect();
    let f = s.engine.scan_bytes(data);
    let got = f
        .rules
        .iter()
        .find(|r| r.index == card)
        .map(|r| r.samples.clone());
    eprintln!("regex matches {want:?}; engine samples {got:?}");
    // A template-style custom rule with a check digit.
    let yaml = "rules:\n  - id: policy\n    name: p\n    category: policy\n    pattern: '\\b\\d{6}(?:-\\d{1,2})?\\b'\n    validator: luhn\n    thresholds: { log: 1 }\n    tests: { match: [x], no_match: [y] }\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), yaml).unwrap();
    let set = egress_dlp::rules::load_dir_untested(dir.path()).unwrap();
    let engine = Engine::new(&set);
    let re = compile(&set.rules()[0].pattern).unwrap();
    for data in [
        &b"id 123455-123456789 end"[..],
        b"id 123455-1 end",
        b"id 123455 end",
        b"123455-1234567",
    ] {
        let want = re
            .find_iter(data)
            .filter(|m| egress_dlp::scan::Validator::Luhn.check(m.as_bytes()))
            .count();
        let raw: Vec<_> = re
            .find_iter(data)
            .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
            .collect();
        eprintln!(
            "custom {:?}: regex {raw:?} -> want {want}, engine {}",
            String::from_utf8_lossy(data),
            engine.scan_bytes(data).rule_count(0)
        );
    }
}

/// Session 24: digit-group floods (`4111 4111 …`, `12-12-…`, `GB82 …`) reuse one walk
/// for many runs (`WALK_AHEAD` longest matches to the right). Every value, inside floods
/// of lengths around the walk's reach and past it, whole, stripped and streamed in
/// pieces, finds what the plain regex finds.
#[test]
#[ignore = "a differential sweep (about a minute in release): cargo test --release --test engine_reference -- --ignored"]
fn values_inside_digit_group_floods() {
    let mut fails = Vec::new();
    let units: &[&[u8]] = &[
        b"4111 ", b"4111-", b"12 ", b"7 ", b"GB82 ", b"0 a ", b"123-45-",
    ];
    for v in VALUES {
        for unit in units {
            // Every count up to 100 units puts the value at every place against a walk's
            // cut end (8 longest matches past the flood's first run), then a few longer.
            for n in (0usize..=100).chain([200, 700]) {
                let flood: Vec<u8> = unit.iter().copied().cycle().take(n * unit.len()).collect();
                for sep in [&b" "[..], b"", b"\n"] {
                    let mut d = flood.clone();
                    d.extend_from_slice(sep);
                    d.extend_from_slice(v.as_bytes());
                    d.extend_from_slice(sep);
                    d.extend_from_slice(&flood);
                    check_both("flood", &d, &mut fails);
                    let cuts = [d.len() / 3, d.len() / 2 + 1, d.len() - 5];
                    let got = engine_counts(&stream_cuts(&d, &cuts));
                    let whole = engine_counts(&pack().engine.scan_bytes(&d));
                    if got != whole && fails.len() < 200 {
                        fails.push(format!(
                            "flood-split: {:?} cuts {cuts:?}: whole {whole:?} split {got:?}",
                            String::from_utf8_lossy(&d)
                        ));
                    }
                }
            }
        }
    }
    finish("floods", fails);
}
