//! Masked samples: what an analyst may see of a matched value.
//!
//! Audit events and block pages show a few masked samples per rule so a
//! human can tell *what kind* of data left (`j***@acme-corp.io`,
//! `**** **** **** 1111`) without the log becoming a copy of it. Correlation
//! across events uses a keyed HMAC of the value, computed elsewhere; this
//! module only decides which characters are safe to show.
//!
//! Every style reveals a fixed, small part of the value and nothing else; the
//! output is valid UTF-8 (bytes that are not become `*`) and at most
//! [`MAX_MASKED_CHARS`] characters long.

/// The longest masked sample, in characters.
pub const MAX_MASKED_CHARS: usize = 64;

/// What replaces a hidden run whose length must not show.
const HIDDEN: &str = "****";

/// Marks where a long sample was cut.
const ELLIPSIS: char = '…';

/// Token prefixes that name the issuer and kind of a secret but are not part
/// of it; a secret sample keeps one of these and nothing else.
const SECRET_PREFIXES: &[&str] = &[
    "github_pat_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxr-",
    "xoxs-",
    "sk_live_",
    "rk_live_",
    "sk_test_",
    "AKIA",
    "ASIA",
    "eyJ",
];

/// Opening of a PEM header line (`-----BEGIN RSA PRIVATE KEY-----`).
const PEM_BEGIN: &[u8] = b"-----BEGIN ";

/// Closing of a PEM header line.
const PEM_DASHES: &[u8] = b"-----";

/// The longest PEM label kept (`ENCRYPTED PRIVATE KEY` is 21).
const MAX_PEM_LABEL: usize = 40;

/// How a sample is masked; chosen from the rule's category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskStyle {
    /// `j***@acme-corp.io`: first character of the local part, the domain.
    Email,
    /// `**** **** **** 1111`: the last four digits only.
    Card,
    /// A secret: a short well-known prefix at most (`ghp_****`), never its body.
    Secret,
    /// Everything but the last few letters or digits becomes `*`, separators kept.
    Tail,
}

impl MaskStyle {
    /// The style for a rule category: `email`, `card`, `secret`, else `Tail`.
    pub fn for_category(category: &str) -> MaskStyle {
        match category {
            "email" => MaskStyle::Email,
            "card" => MaskStyle::Card,
            "secret" => MaskStyle::Secret,
            _ => MaskStyle::Tail,
        }
    }

    /// The masked form of `value`; never contains the value's hidden part.
    pub fn mask(self, value: &[u8]) -> String {
        match self {
            MaskStyle::Email => mask_email(value),
            MaskStyle::Card => mask_card(value),
            MaskStyle::Secret => mask_secret(value),
            MaskStyle::Tail => mask_tail(value),
        }
    }
}

/// How many trailing letters or digits a value of `content` of them may show:
/// at most four, and at most a third of the value.
fn revealed_count(content: usize) -> usize {
    (content / 3).min(4)
}

/// `a***@domain`: the first character of the local part and the lowercased
/// domain after the last `@`. Without an `@`, the value is masked as `Tail`.
fn mask_email(value: &[u8]) -> String {
    let Some(at) = value.iter().rposition(|&b| b == b'@') else {
        return mask_tail(value);
    };
    let (local, domain) = (&value[..at], &value[at + 1..]);
    let mut out = String::new();
    if let Some(first) = lossy_chars(local).next() {
        out.push(first);
    }
    out.push_str("***@");
    out.extend(lossy_chars(domain).flat_map(char::to_lowercase));
    keep_start(out)
}

/// `**** **** **** 1234`: the shape is fixed; only the last four digits show,
/// fewer when the value has under twelve digits (a third at most).
fn mask_card(value: &[u8]) -> String {
    let digits = value.iter().filter(|b| b.is_ascii_digit());
    let count = digits.clone().count();
    let shown = revealed_count(count);
    let mut out = String::from("**** **** **** ");
    out.extend(std::iter::repeat_n('*', 4 - shown));
    out.extend(digits.skip(count - shown).map(|&b| char::from(b)));
    out
}

/// A well-known prefix (or PEM header line) followed by `****`, else `****`.
fn mask_secret(value: &[u8]) -> String {
    if let Some(header) = pem_header(value) {
        return format!("{header}{HIDDEN}");
    }
    match SECRET_PREFIXES
        .iter()
        .find(|prefix| value.starts_with(prefix.as_bytes()))
    {
        Some(prefix) => format!("{prefix}{HIDDEN}"),
        None => HIDDEN.to_string(),
    }
}

/// The `-----BEGIN LABEL-----` line a PEM block starts with, if the label is
/// short and made of uppercase letters, digits and spaces only.
fn pem_header(value: &[u8]) -> Option<&str> {
    let rest = value.strip_prefix(PEM_BEGIN)?;
    let label_len = rest
        .iter()
        .take(MAX_PEM_LABEL + 1)
        .position(|&b| b == b'-')?;
    let label = &rest[..label_len];
    let well_formed = (1..=MAX_PEM_LABEL).contains(&label_len)
        && label
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ')
        && rest[label_len..].starts_with(PEM_DASHES);
    if !well_formed {
        return None;
    }
    std::str::from_utf8(&value[..PEM_BEGIN.len() + label_len + PEM_DASHES.len()]).ok()
}

/// Separators (ASCII that is not a letter or digit) stay in place; every other
/// character becomes `*` except the last few ASCII letters and digits (see
/// [`revealed_count`]). Non-ASCII characters count as content but are never
/// shown. Long results keep their end, where the revealed part is.
fn mask_tail(value: &[u8]) -> String {
    let is_content = |c: char| !c.is_ascii() || c.is_ascii_alphanumeric();
    let content = lossy_chars(value).filter(|&c| is_content(c)).count();
    let first_shown = content - revealed_count(content);
    let mut seen = 0;
    let out = lossy_chars(value)
        .map(|c| {
            if !is_content(c) {
                return c;
            }
            seen += 1;
            if seen > first_shown && c.is_ascii_alphanumeric() {
                c
            } else {
                '*'
            }
        })
        .collect();
    keep_end(out)
}

/// The characters of `bytes`, each byte of an invalid UTF-8 sequence as `*`.
fn lossy_chars(bytes: &[u8]) -> impl Iterator<Item = char> + '_ {
    bytes.utf8_chunks().flat_map(|chunk| {
        chunk
            .valid()
            .chars()
            .chain(std::iter::repeat_n('*', chunk.invalid().len()))
    })
}

/// `text` cut to [`MAX_MASKED_CHARS`], keeping its start and ending in `…`.
fn keep_start(text: String) -> String {
    if text.chars().count() <= MAX_MASKED_CHARS {
        return text;
    }
    let mut out: String = text.chars().take(MAX_MASKED_CHARS - 1).collect();
    out.push(ELLIPSIS);
    out
}

/// `text` cut to [`MAX_MASKED_CHARS`], keeping its end and starting with `…`.
fn keep_end(text: String) -> String {
    let count = text.chars().count();
    if count <= MAX_MASKED_CHARS {
        return text;
    }
    let mut out = String::from(ELLIPSIS);
    out.extend(text.chars().skip(count - (MAX_MASKED_CHARS - 1)));
    out
}

#[cfg(test)]
mod tests {
    use super::MaskStyle::{self, *};
    use super::{MAX_MASKED_CHARS, SECRET_PREFIXES};
    use proptest::prelude::*;

    #[rustfmt::skip]
    const CASES: &[(MaskStyle, &[u8], &str)] = &[
        // Email: first character of the local part, the domain lowercased.
        (Email, b"alice.smith@acme-corp.io", "a***@acme-corp.io"),
        (Email, b"j@acme-corp.io", "j***@acme-corp.io"),
        (Email, b"Bob@ACME-Corp.IO", "B***@acme-corp.io"),
        (Email, b"@acme-corp.io", "***@acme-corp.io"),
        (Email, b"alice@", "a***@"),
        (Email, b"\"a@b\"@acme-corp.io", "\"***@acme-corp.io"),
        (Email, "élise@exemple.fr".as_bytes(), "é***@exemple.fr"),
        (Email, b"\xffalice@acme-corp.io", "****@acme-corp.io"),
        (Email, b"alice@acme\xfe.io", "a***@acme*.io"),
        (Email, b"123-45-6789", "***-**-*789"), // no '@': Tail
        // Card: fixed shape, last four digits.
        (Card, b"4111111111111111", "**** **** **** 1111"),
        (Card, b"4111 1111 1111 1234", "**** **** **** 1234"),
        (Card, b"3782-822463-10005", "**** **** **** 0005"),
        (Card, b"4222222222229", "**** **** **** 2229"),
        (Card, b"123456789", "**** **** **** *789"), // a third at most
        (Card, b"12", "**** **** **** ****"),
        (Card, b"", "**** **** **** ****"),
        (Card, b"no digits", "**** **** **** ****"),
        // Secret: a well-known prefix at most.
        (Secret, b"ghp_16C7e42F292c6912E7710c838347Ae178B4a", "ghp_****"),
        (Secret, b"github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "github_pat_****"),
        (Secret, b"gho_16C7e42F292c6912E7710c838347Ae178B4a", "gho_****"),
        (Secret, b"xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xoxb-****"),
        (Secret, b"xoxp-123456789012-1234567890123", "xoxp-****"),
        (Secret, b"sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_****"),
        (Secret, b"rk_live_4eC39HqLyjWDarjtT1zdp7dc", "rk_live_****"),
        (Secret, b"sk_test_4eC39HqLyjWDarjtT1zdp7dc", "sk_test_****"),
        (Secret, b"AKIAIOSFODNN7EXAMPLE", "AKIA****"),
        (Secret, b"ASIAIOSFODNN7EXAMPLE", "ASIA****"),
        (Secret, b"eyJhbGciOiJIUzI1NiJ9.e30.c2ln", "eyJ****"),
        (Secret, b"-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA", "-----BEGIN RSA PRIVATE KEY-----****"),
        (Secret, b"-----BEGIN OPENSSH PRIVATE KEY-----", "-----BEGIN OPENSSH PRIVATE KEY-----****"),
        (Secret, b"-----BEGIN PRIVATE KEY-----MIIE", "-----BEGIN PRIVATE KEY-----****"),
        (Secret, b"-----BEGIN secret in here-----", "****"), // label not uppercase: could be anything
        (Secret, b"-----BEGIN RSA PRIVATE KEY", "****"), // header not closed
        (Secret, b"-----BEGIN -----MIIE", "****"), // empty label
        (Secret, b"-----BEGIN AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-----", "****"), // label too long
        (Secret, b"GHP_16C7e42F292c6912E7710c838347Ae178B4a", "****"), // prefixes are case-sensitive
        (Secret, b"hunter2", "****"),
        (Secret, b"", "****"),
        (Secret, b"\xff\xfe", "****"),
        // Tail: separators kept, at most min(4, a third) letters or digits shown.
        (Tail, b"123-45-6789", "***-**-*789"),
        (Tail, b"AB123456C", "******56C"),
        (Tail, b"AB 12 34 56 C", "** ** ** 56 C"),
        (Tail, b"DE89 3704 0044 0532 0130 00", "**** **** **** **** **30 00"),
        (Tail, b"+44 (20) 7946-0958", "+** (**) ****-0958"),
        (Tail, b"CUST-00042", "****-**042"),
        (Tail, b"ab", "**"),
        (Tail, b"abc", "**c"),
        (Tail, b"", ""),
        (Tail, b"---", "---"),
        (Tail, "ÄÖÜ123".as_bytes(), "****23"), // non-ASCII is content, never shown
        (Tail, b"abc\xff\xfe123", "******23"),
    ];

    #[test]
    fn masks() {
        let mut failures = Vec::new();
        for &(style, input, expected) in CASES {
            let masked = style.mask(input);
            if masked != expected {
                failures.push(format!(
                    "{style:?}.mask({:?}) = {masked:?}, expected {expected:?}",
                    String::from_utf8_lossy(input)
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// Canary values whose hidden characters (right column) appear nowhere in
    /// the part a style may show, so finding one in the output is a leak.
    #[rustfmt::skip]
    const CANARIES: &[(MaskStyle, &str, &str)] = &[
        (Email, "zqxjv@acme-corp.io", "qxjv"),
        (Email, "Zqxj.Vwyk@acme.io", "qxjVwyk"),
        (Card, "4999 9999 9999 1234", "9"),
        (Card, "5888-8888-8888-0123", "58"),
        (Card, "97531", "9753"),
        (Secret, "ghp_ZQXJVWYK9876543210zqxjvwyk", "ZQXJVWYK9876543210zqxjvwyk"),
        (Secret, "github_pat_ZQXJVWYK9876543210", "ZQXJVWYK9876543210"),
        (Secret, "xoxb-9876543210-ZQXJVWYK", "9876543210ZQXJVWYK"),
        (Secret, "sk_live_ZQXJVWYK98765", "ZQXJVWYK98765"),
        (Secret, "AKIAZQXJVWY98765432", "ZQXJVWY98765432"), // hidden sets avoid the kept prefix's characters
        (Secret, "eyJZQXVWK98765.43210.qxvwk", "ZQXVWK98765432qxvwk"),
        (Secret, "-----BEGIN RSA PRIVATE KEY-----\nzqxjvwyk98765", "zqxjvwyk98765"),
        (Secret, "zqxjvwyk98765", "zqxjvwyk98765"),
        (Tail, "ZQXJ-VWYK-9876-1234", "ZQXJVWYK9876"),
        (Tail, "zqxjvwyk98761234", "zqxjvwyk9876"),
        (Tail, "987-65-1234", "9865"),
        (Tail, "ZQ987654A", "ZQ9876"),
        (Tail, "zq9", "zq"),
        (Tail, "ZQXJVWYK", "ZQXJVW"),
    ];

    #[test]
    fn canaries_never_leak() {
        for &(style, input, hidden) in CANARIES {
            let masked = style.mask(input.as_bytes());
            for c in hidden.chars() {
                assert!(
                    !masked.contains(c),
                    "{style:?}.mask({input:?}) = {masked:?} leaks {c:?}"
                );
            }
        }
    }

    #[test]
    fn long_tail_keeps_its_end() {
        let exactly_max = "1234567890".repeat(7)[..MAX_MASKED_CHARS].to_string();
        assert_eq!(
            Tail.mask(exactly_max.as_bytes()),
            format!("{}1234", "*".repeat(60))
        );
        let longer = "1234567890".repeat(7);
        assert_eq!(
            Tail.mask(longer.as_bytes()),
            format!("…{}7890", "*".repeat(59))
        );
    }

    #[test]
    fn output_is_bounded_for_long_values() {
        let long_email = format!("alice@{}.io", "a".repeat(500));
        let long_tail = "1".repeat(10_000);
        for (style, input) in [
            (Email, long_email.as_str()),
            (Tail, long_tail.as_str()),
            (Card, long_tail.as_str()),
            (Secret, long_tail.as_str()),
        ] {
            let masked = style.mask(input.as_bytes());
            assert!(
                masked.chars().count() <= MAX_MASKED_CHARS,
                "{style:?}: {masked:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn every_style_is_bounded(value in proptest::collection::vec(any::<u8>(), 0..200)) {
            for style in [Email, Card, Secret, Tail] {
                let masked = style.mask(&value);
                prop_assert!(masked.chars().count() <= MAX_MASKED_CHARS, "{style:?}: {masked:?}");
            }
        }

        #[test]
        fn secret_shows_a_known_prefix_at_most(value in proptest::collection::vec(any::<u8>(), 0..80)) {
            let masked = Secret.mask(&value);
            let kept = masked.strip_suffix("****").expect("ends in ****");
            prop_assert!(kept.is_empty() || SECRET_PREFIXES.contains(&kept) || kept.starts_with("-----BEGIN "));
            prop_assert!(value.starts_with(kept.as_bytes()));
        }

        #[test]
        fn tail_shows_a_third_at_most(value in "[0-9A-Za-z -]{0,60}") {
            let content = value.chars().filter(char::is_ascii_alphanumeric).count();
            let masked = Tail.mask(value.as_bytes());
            let shown = masked.chars().filter(char::is_ascii_alphanumeric).count();
            prop_assert!(shown <= (content / 3).min(4), "{value:?} -> {masked:?}");
            prop_assert!(value.ends_with(masked.trim_start_matches(|c: char| c == '*' || !c.is_ascii_alphanumeric())));
        }

        #[test]
        fn card_has_one_shape(value in proptest::collection::vec(any::<u8>(), 0..40)) {
            let masked = Card.mask(&value);
            prop_assert_eq!(masked.len(), 19);
            prop_assert!(masked.starts_with("**** **** **** "));
        }
    }

    #[test]
    fn for_category() {
        assert_eq!(MaskStyle::for_category("email"), Email);
        assert_eq!(MaskStyle::for_category("card"), Card);
        assert_eq!(MaskStyle::for_category("secret"), Secret);
        assert_eq!(MaskStyle::for_category("national-id"), Tail);
    }
}
