//! Built-in validators: checksums and structure rules that a regex cannot express.
//!
//! A rule's regex finds candidates; its validator then decides whether a
//! candidate really is what the rule is named for (a card number, an IBAN, a
//! JWT). Most false positives die here: a 13-digit millisecond timestamp has
//! no card network, an order number fails Luhn, a mistyped IBAN fails mod-97.
//!
//! Validators are pure functions over the raw match bytes: no I/O, no
//! allocation except decoding a JWT's header and payload, and no panics on
//! any input.
//! They do not look at context around the match and do not normalise values
//! for counting (that is `normalize`'s job).

/// A named, built-in check run on a matched value after the regex confirmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validator {
    /// No check: every regex match counts.
    None,
    /// The Luhn (mod 10) checksum over the digits of the value.
    Luhn,
    /// Issuer prefix and length per card network, then Luhn.
    PaymentCard,
    /// ISO 13616 IBAN: known country code, that country's length, mod-97 == 1.
    Iban,
    /// US Social Security Number area/group/serial rules.
    UsSsn,
    /// UK National Insurance number prefix and suffix rules.
    UkNino,
    /// JSON Web Token: base64url header that decodes to a JSON object with "alg".
    Jwt,
}

impl Validator {
    /// Every validator name accepted in a rule file.
    pub const NAMES: &'static [&'static str] = &[
        "none",
        "luhn",
        "payment-card",
        "iban",
        "us-ssn",
        "uk-nino",
        "jwt",
    ];

    /// Looks a validator up by its rule-file name.
    pub fn from_name(name: &str) -> Option<Validator> {
        Some(match name {
            "none" => Validator::None,
            "luhn" => Validator::Luhn,
            "payment-card" => Validator::PaymentCard,
            "iban" => Validator::Iban,
            "us-ssn" => Validator::UsSsn,
            "uk-nino" => Validator::UkNino,
            "jwt" => Validator::Jwt,
            _ => return None,
        })
    }

    /// The rule-file name of this validator.
    pub fn name(self) -> &'static str {
        match self {
            Validator::None => "none",
            Validator::Luhn => "luhn",
            Validator::PaymentCard => "payment-card",
            Validator::Iban => "iban",
            Validator::UsSsn => "us-ssn",
            Validator::UkNino => "uk-nino",
            Validator::Jwt => "jwt",
        }
    }

    /// True when `value` (the regex match, raw bytes) passes the check.
    pub fn check(self, value: &[u8]) -> bool {
        match self {
            Validator::None => true,
            Validator::Luhn => is_luhn_number(value),
            Validator::PaymentCard => is_payment_card(value),
            Validator::Iban => is_iban(value),
            Validator::UsSsn => is_us_ssn(value),
            Validator::UkNino => is_uk_nino(value),
            Validator::Jwt => is_jwt(value),
        }
    }
}

// ---------------------------------------------------------------------------
// Luhn

/// Luhn over the ASCII digits of `value`, everything else ignored; at least two digits.
fn is_luhn_number(value: &[u8]) -> bool {
    let digits = value
        .iter()
        .rev()
        .filter(|b| b.is_ascii_digit())
        .map(|b| b - b'0');
    let (sum, count) = luhn_sum(digits);
    count >= 2 && sum % 10 == 0
}

/// The Luhn sum of digit values given last digit first, and how many there were.
fn luhn_sum(digits_from_right: impl Iterator<Item = u8>) -> (u32, usize) {
    /// A digit doubled, its two digits added.
    const DOUBLED: [u64; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    // At most 9 per digit: a u64 cannot overflow on any value a scan can hold.
    let mut sum = 0u64;
    let mut count = 0usize;
    for digit in digits_from_right {
        let d = usize::from(digit);
        sum += if count % 2 == 1 { DOUBLED[d] } else { d as u64 };
        count += 1;
    }
    ((sum % 10) as u32, count)
}

// ---------------------------------------------------------------------------
// Payment cards

/// The longest card number any network issues (ISO/IEC 7812 PAN).
const MAX_CARD_DIGITS: usize = 19;

/// One range of issuer identification numbers and the lengths issued under it.
struct CardRange {
    /// First prefix of the range, inclusive.
    first: u32,
    /// Last prefix of the range, inclusive; has as many digits as `first`.
    last: u32,
    /// How many leading digits of the card `first` and `last` are compared with.
    prefix_digits: usize,
    /// Allowed card lengths, in digits.
    lengths: &'static [usize],
}

const fn card_range(
    first: u32,
    last: u32,
    prefix_digits: usize,
    lengths: &'static [usize],
) -> CardRange {
    CardRange {
        first,
        last,
        prefix_digits,
        lengths,
    }
}

const LEN_16_TO_19: &[usize] = &[16, 17, 18, 19];

/// Issuer prefixes per network. Ranges may overlap (Discover and UnionPay
/// share 622126-622925); a number is valid if any row accepts it.
const CARD_RANGES: &[CardRange] = &[
    // Visa
    card_range(4, 4, 1, &[13, 16, 19]),
    // Mastercard: 51-55 and the 2-series
    card_range(51, 55, 2, &[16]),
    card_range(2221, 2720, 4, &[16]),
    // American Express
    card_range(34, 34, 2, &[15]),
    card_range(37, 37, 2, &[15]),
    // Discover
    card_range(6011, 6011, 4, LEN_16_TO_19),
    card_range(644, 649, 3, LEN_16_TO_19),
    card_range(65, 65, 2, LEN_16_TO_19),
    card_range(622126, 622925, 6, LEN_16_TO_19),
    // JCB
    card_range(3528, 3589, 4, LEN_16_TO_19),
    // Diners Club
    card_range(300, 305, 3, &[14, 15, 16, 17, 18, 19]),
    card_range(36, 36, 2, &[14, 15, 16, 17, 18, 19]),
    card_range(38, 39, 2, &[14, 15, 16, 17, 18, 19]),
    // UnionPay
    card_range(62, 62, 2, LEN_16_TO_19),
];

/// Digits only, with ' ' and '-' as separators; a known network prefix and
/// length; Luhn; and not one digit repeated (`0000 0000 0000 0000`).
fn is_payment_card(value: &[u8]) -> bool {
    let mut digits = [0u8; MAX_CARD_DIGITS];
    let mut len = 0;
    for &b in value {
        match b {
            b'0'..=b'9' => {
                if len == MAX_CARD_DIGITS {
                    return false;
                }
                digits[len] = b - b'0';
                len += 1;
            }
            b' ' | b'-' => {}
            _ => return false,
        }
    }
    let digits = &digits[..len];
    if digits.iter().all(|&d| d == digits[0]) {
        return false; // also rejects the empty value
    }
    let known_network = CARD_RANGES.iter().any(|range| {
        range.lengths.contains(&len)
            && (range.first..=range.last).contains(&leading_number(digits, range.prefix_digits))
    });
    known_network && luhn_sum(digits.iter().rev().copied()).0 == 0
}

/// The first `n` digits read as a number (`n` is at most 6 here).
fn leading_number(digits: &[u8], n: usize) -> u32 {
    digits
        .iter()
        .take(n)
        .fold(0, |acc, &d| acc * 10 + u32::from(d))
}

// ---------------------------------------------------------------------------
// IBAN

/// The longest IBAN the standard allows.
const MAX_IBAN_LEN: usize = 34;

/// The IBAN length for a country in the SWIFT IBAN registry (all 89
/// countries as of 2025), or `None` for a country that does not issue IBANs. Territories that
/// use their parent's code (Åland: FI, Jersey: GB, Réunion: FR, ...) are not
/// listed separately, as in the registry.
fn iban_length(country: [u8; 2]) -> Option<usize> {
    Some(match &country {
        b"AD" => 24,
        b"AE" => 23,
        b"AL" => 28,
        b"AT" => 20,
        b"AZ" => 28,
        b"BA" => 20,
        b"BE" => 16,
        b"BG" => 22,
        b"BH" => 22,
        b"BI" => 27,
        b"BR" => 29,
        b"BY" => 28,
        b"CH" => 21,
        b"CR" => 22,
        b"CY" => 28,
        b"CZ" => 24,
        b"DE" => 22,
        b"DJ" => 27,
        b"DK" => 18,
        b"DO" => 28,
        b"EE" => 20,
        b"EG" => 29,
        b"ES" => 24,
        b"FI" => 18,
        b"FK" => 18,
        b"FO" => 18,
        b"FR" => 27,
        b"GB" => 22,
        b"GE" => 22,
        b"GI" => 23,
        b"GL" => 18,
        b"GR" => 27,
        b"GT" => 28,
        b"HN" => 28,
        b"HR" => 21,
        b"HU" => 28,
        b"IE" => 22,
        b"IL" => 23,
        b"IQ" => 23,
        b"IS" => 26,
        b"IT" => 27,
        b"JO" => 30,
        b"KW" => 30,
        b"KZ" => 20,
        b"LB" => 28,
        b"LC" => 32,
        b"LI" => 21,
        b"LT" => 20,
        b"LU" => 20,
        b"LV" => 21,
        b"LY" => 25,
        b"MC" => 27,
        b"MD" => 24,
        b"ME" => 22,
        b"MK" => 19,
        b"MN" => 20,
        b"MR" => 27,
        b"MT" => 31,
        b"MU" => 30,
        b"NI" => 28,
        b"NL" => 18,
        b"NO" => 15,
        b"OM" => 23,
        b"PK" => 24,
        b"PL" => 28,
        b"PS" => 29,
        b"PT" => 25,
        b"QA" => 29,
        b"RO" => 24,
        b"RS" => 22,
        b"RU" => 33,
        b"SA" => 24,
        b"SC" => 31,
        b"SD" => 18,
        b"SE" => 24,
        b"SI" => 19,
        b"SK" => 24,
        b"SM" => 27,
        b"SO" => 23,
        b"ST" => 25,
        b"SV" => 28,
        b"TL" => 23,
        b"TN" => 24,
        b"TR" => 26,
        b"UA" => 29,
        b"VA" => 22,
        b"VG" => 24,
        b"XK" => 20,
        b"YE" => 30,
        _ => return None,
    })
}

/// Spaces ignored, letters uppercased: a registry country with its exact
/// length, check digits 02-98, alphanumerics only, ISO 7064 mod 97-10 == 1.
///
/// One pass: the country code and check digits are kept aside and the rest reduced
/// mod 97 as it is read (letters as 10..=35); the four kept characters, which the
/// standard moves to the end, come in last as one six-digit number.
fn is_iban(value: &[u8]) -> bool {
    let mut head = [0u8; 4];
    let mut len = 0;
    // Reduced whenever it grows past 2^50: one step adds at most a factor of 100 and
    // 35, so it stays under 2^57 (no big integers).
    let mut r = 0u64;
    for &b in value {
        if b == b' ' {
            continue;
        }
        if !b.is_ascii_alphanumeric() || len == MAX_IBAN_LEN {
            return false;
        }
        let c = b.to_ascii_uppercase();
        if len < head.len() {
            head[len] = c;
        } else if c.is_ascii_digit() {
            r = r * 10 + u64::from(c - b'0');
        } else {
            r = r * 100 + u64::from(c - b'A') + 10;
        }
        if r >= 1 << 50 {
            r %= 97;
        }
        len += 1;
    }
    // A registry country is two letters.
    if len < 4 || iban_length([head[0], head[1]]) != Some(len) {
        return false;
    }
    if !head[2].is_ascii_digit() || !head[3].is_ascii_digit() {
        return false;
    }
    let check_digits = (head[2] - b'0') * 10 + (head[3] - b'0');
    if !(2..=98).contains(&check_digits) {
        return false;
    }
    let letter = |c: u8| u64::from(c - b'A') + 10;
    let moved = letter(head[0]) * 10_000 + letter(head[1]) * 100 + u64::from(check_digits);
    (r % 97 * 1_000_000 + moved) % 97 == 1
}

// ---------------------------------------------------------------------------
// US SSN

/// Numbers the SSA has publicly declared invalid after they were printed in
/// advertising (078-05-1120 on a wallet insert, 219-09-9999 in an SSA
/// leaflet), plus the sequence everyone types as an example.
const PUBLIC_SSNS: &[&[u8; 9]] = &[b"078051120", b"219099999", b"123456789"];

/// Exactly nine digits ('-' and ' ' ignored); area not 000, 666 or 900-999;
/// group not 00; serial not 0000; not a publicly known example number.
fn is_us_ssn(value: &[u8]) -> bool {
    let mut ssn = [0u8; 9];
    let mut len = 0;
    for &b in value {
        match b {
            b'0'..=b'9' => {
                if len == ssn.len() {
                    return false;
                }
                ssn[len] = b;
                len += 1;
            }
            b'-' | b' ' => {}
            _ => return false,
        }
    }
    let (area, group, serial) = (&ssn[..3], &ssn[3..5], &ssn[5..]);
    len == ssn.len()
        && area != b"000"
        && area != b"666"
        && area[0] != b'9'
        && group != b"00"
        && serial != b"0000"
        && !PUBLIC_SSNS.contains(&&ssn)
}

// ---------------------------------------------------------------------------
// UK National Insurance number

/// Prefixes HMRC never allocates (besides the letter rules below).
const NINO_BAD_PREFIXES: &[&[u8; 2]] = &[b"BG", b"GB", b"KN", b"NK", b"NT", b"TN", b"ZZ"];

/// Letters and digits only (anything else ignored), uppercased: two prefix
/// letters, six digits, a suffix letter A-D; HMRC's excluded prefix letters.
fn is_uk_nino(value: &[u8]) -> bool {
    let mut nino = [0u8; 9];
    let mut len = 0;
    for &b in value.iter().filter(|b| b.is_ascii_alphanumeric()) {
        if len == nino.len() {
            return false;
        }
        nino[len] = b.to_ascii_uppercase();
        len += 1;
    }
    if len != nino.len() {
        return false;
    }
    let [first, second, ..] = nino;
    first.is_ascii_alphabetic()
        && second.is_ascii_alphabetic()
        && nino[2..8].iter().all(u8::is_ascii_digit)
        && matches!(nino[8], b'A'..=b'D')
        && !b"DFIQUV".contains(&first)
        && !b"DFIOQUV".contains(&second)
        && !NINO_BAD_PREFIXES.contains(&&[first, second])
}

// ---------------------------------------------------------------------------
// JWT

/// Three '.'-separated base64url segments (padding optional); the header
/// decodes to a JSON object naming `"alg"`, the payload to a JSON object, and
/// the signature is not empty: unsigned tokens (`alg: none`) are not
/// credentials, and five-segment JWE tokens are not matched.
fn is_jwt(value: &[u8]) -> bool {
    let mut segments = value.split(|&b| b == b'.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return false;
    };
    if signature.is_empty() || !is_base64url(signature) {
        return false;
    }
    let Some(header) = base64url_decode(header) else {
        return false;
    };
    let Some(payload) = base64url_decode(payload) else {
        return false;
    };
    starts_json_object(&header)
        && header.windows(5).any(|w| w == b"\"alg\"")
        && starts_json_object(&payload)
}

/// True when the first non-whitespace byte is `{`.
fn starts_json_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The value of one base64url character (RFC 4648 §5), or `None`.
fn base64url_value(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    }))
}

/// `text` without its `=` padding, or `None` when its length cannot be
/// base64 (one character left over, or padding to a length not a multiple of 4).
fn strip_base64_padding(text: &[u8]) -> Option<&[u8]> {
    let unpadded = text
        .strip_suffix(b"==")
        .or_else(|| text.strip_suffix(b"="))
        .unwrap_or(text);
    let padded = unpadded.len() != text.len();
    if unpadded.len() % 4 == 1 || (padded && text.len() % 4 != 0) {
        return None;
    }
    Some(unpadded)
}

/// True when `text` is base64url, with or without padding (no allocation).
fn is_base64url(text: &[u8]) -> bool {
    strip_base64_padding(text)
        .is_some_and(|unpadded| unpadded.iter().all(|&c| base64url_value(c).is_some()))
}

/// Decodes base64url with or without `=` padding; `None` when the text is not
/// base64url. Unused low bits of the last character are not checked.
fn base64url_decode(text: &[u8]) -> Option<Vec<u8>> {
    let unpadded = strip_base64_padding(text)?;
    let mut out = Vec::with_capacity(unpadded.len() / 4 * 3 + 2);
    for chunk in unpadded.chunks(4) {
        let mut bits = 0u32;
        for &c in chunk {
            bits = (bits << 6) | base64url_value(c)?;
        }
        // A chunk of n characters carries n * 6 bits: n - 1 whole bytes.
        bits <<= 6 * (4 - chunk.len());
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::Validator::{self, Iban, Jwt, Luhn, PaymentCard, UkNino, UsSsn};
    use super::base64url_decode;
    use proptest::prelude::*;

    #[test]
    fn names_round_trip() {
        for &name in Validator::NAMES {
            assert_eq!(Validator::from_name(name).map(Validator::name), Some(name));
        }
        assert_eq!(Validator::from_name("Luhn"), None);
    }

    #[test]
    fn base64url_decodes_with_and_without_padding() {
        let cases: &[(&str, Option<&[u8]>)] = &[
            ("", Some(b"")),
            ("eyJ9", Some(b"{\"}")),
            ("YQ", Some(b"a")),
            ("YQ==", Some(b"a")),
            ("YWI", Some(b"ab")),
            ("YWI=", Some(b"ab")),
            ("YWJj", Some(b"abc")),
            ("-_-_", Some(&[0xfb, 0xff, 0xbf])),
            ("YQ=", None),
            ("Y", None),
            ("YWJjZ", None),
            ("YW+j", None),
            ("YW/j", None),
            ("YW j", None),
            ("Y===", None),
        ];
        for &(text, expected) in cases {
            assert_eq!(
                base64url_decode(text.as_bytes()).as_deref(),
                expected,
                "{text:?}"
            );
        }
    }

    /// Header `{"alg":"HS256","typ":"JWT"}`, payload `{"sub":"1234567890","name":"John Doe","iat":1516239022}`.
    const JWT_HS256: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

    #[rustfmt::skip]
    const CASES: &[(Validator, &str, bool)] = &[
        (Validator::None, "", true),
        (Validator::None, "anything at all", true),

        // Luhn: digits of the value, anything else ignored, at least two digits.
        (Luhn, "79927398713", true),
        (Luhn, "7992 7398 713", true),
        (Luhn, "(799) 273-987.13", true),
        (Luhn, "4111111111111111", true),
        (Luhn, "18", true),
        (Luhn, "00", true),
        (Luhn, "0000000000000000", true),
        (Luhn, "1234567812345670", true),
        (Luhn, "79927398710", false),
        (Luhn, "79927398711", false),
        (Luhn, "4111111111111112", false),
        (Luhn, "0", false),
        (Luhn, "", false),
        (Luhn, "no digits", false),
        (Luhn, "1700000000000", false),
        (Luhn, "1234567812345678", false),

        // Payment cards: network test numbers.
        (PaymentCard, "4111111111111111", true),
        (PaymentCard, "4111 1111 1111 1111", true),
        (PaymentCard, "4111-1111-1111-1111", true),
        (PaymentCard, "4012888888881881", true),
        (PaymentCard, "4222222222222", true),
        (PaymentCard, "4917610000000000003", true),
        (PaymentCard, "5555555555554444", true),
        (PaymentCard, "5105105105105100", true),
        (PaymentCard, "2221000000000009", true),
        (PaymentCard, "2720999999999996", true),
        (PaymentCard, "378282246310005", true),
        (PaymentCard, "3782 822463 10005", true),
        (PaymentCard, "371449635398431", true),
        (PaymentCard, "30569309025904", true),
        (PaymentCard, "38520000023237", true),
        (PaymentCard, "36227206271667", true),
        (PaymentCard, "3000000000000004", true),
        (PaymentCard, "3530111333300000", true),
        (PaymentCard, "3566002020360505", true),
        (PaymentCard, "3589000000000003", true),
        (PaymentCard, "6011111111111117", true),
        (PaymentCard, "6011000990139424", true),
        (PaymentCard, "6440000000000005", true),
        (PaymentCard, "6500000000000002", true),
        (PaymentCard, "6221260000000000", true),
        (PaymentCard, "6229250000000003", true),
        (PaymentCard, "6200000000000005", true),
        (PaymentCard, "6282000123842342", true),
        (PaymentCard, "620000000000000005", true),
        // Payment cards: millisecond timestamps, order numbers, wrong network or length.
        (PaymentCard, "1700000000000", false),
        (PaymentCard, "1732867200123", false),
        (PaymentCard, "1700000000004", false), // Luhn-valid, but no network starts with 1
        (PaymentCard, "79927398713", false), // Luhn-valid order number
        (PaymentCard, "4111111111111112", false), // Luhn fails
        (PaymentCard, "4111111111111", false), // Visa length, Luhn fails
        (PaymentCard, "41111111111111113", false), // Luhn-valid Visa prefix, 17 digits
        (PaymentCard, "4444444444444448", true), // repeated digits are fine if not all the same
        (PaymentCard, "4444444444444444", false), // fails Luhn
        (PaymentCard, "0000000000000000", false), // Luhn-valid, all one digit, no network
        (PaymentCard, "8888888888888888", false), // Luhn-valid, all one digit, no network
        (PaymentCard, "2220990000000002", false), // just below the Mastercard 2-series
        (PaymentCard, "2721000000000004", false), // just above it
        (PaymentCard, "5600000000000003", false), // 56 is not Mastercard
        (PaymentCard, "378282246310005 ", true), // trailing separator is fine
        (PaymentCard, "3782822463100052", false), // Amex is 15 digits only
        (PaymentCard, "35280000000007", false), // JCB needs 16-19
        (PaymentCard, "3060000000000001", false), // 306 is not Diners
        (PaymentCard, "6229260000000002", true), // above Discover's 622925: still UnionPay
        (PaymentCard, "62000000000000000", true), // UnionPay, 17 digits
        (PaymentCard, "4111.1111.1111.1111", false), // dots are not card separators
        (PaymentCard, "41111111111111111111114", false), // Luhn-valid, too long
        (PaymentCard, "", false),

        // IBAN: registry examples, spaced and lowercase forms.
        (Iban, "DE89370400440532013000", true),
        (Iban, "DE89 3704 0044 0532 0130 00", true),
        (Iban, "de89 3704 0044 0532 0130 00", true),
        (Iban, "GB29NWBK60161331926819", true),
        (Iban, "FR1420041010050500013M02606", true),
        (Iban, "NL91ABNA0417164300", true),
        (Iban, "BE68539007547034", true),
        (Iban, "NO9386011117947", true),
        (Iban, "MT84MALT011000012345MTLCAST001S", true),
        (Iban, "LC55HEMM000100010012001200023015", true),
        (Iban, "BR1800360305000010009795493C1", true),
        (Iban, "CH9300762011623852957", true),
        (Iban, "RU0204452560040702810412345678901", true),
        (Iban, "DE02370400440532013014", true),
        (Iban, "DE98370400440532013032", true),
        // IBAN: one character changed, wrong length or country, bad check digits.
        (Iban, "DE89370400440532013001", false),
        (Iban, "DE88370400440532013000", false),
        (Iban, "GB29NWBK60161331926818", false),
        (Iban, "GB29NWBK6016133192681", false), // one short
        (Iban, "DE893704004405320130000", false), // one long
        (Iban, "XX89370400440532013000", false), // no such country
        (Iban, "US89370400440532013000", false), // no IBANs
        (Iban, "DE99370400440532013014", false), // passes mod-97 (same residue as 02) but 99 is out of range
        (Iban, "DE01370400440532013032", false), // same with 01 for 98
        (Iban, "DE8937040044053201300-", false),
        (Iban, "DE89-3704-0044-0532-0130-00", false),
        (Iban, "DEAB370400440532013000", false),
        (Iban, "DE", false),
        (Iban, "", false),

        // US SSN.
        (UsSsn, "123-45-6788", true),
        (UsSsn, "123 45 6788", true),
        (UsSsn, "123456788", true),
        (UsSsn, "001-01-0001", true),
        (UsSsn, "665-99-9999", true),
        (UsSsn, "667-01-0001", true),
        (UsSsn, "899-99-9999", true),
        (UsSsn, "078-05-1121", true),
        (UsSsn, "000-12-3456", false),
        (UsSsn, "666-12-3456", false),
        (UsSsn, "912-12-3456", false),
        (UsSsn, "900-12-3456", false),
        (UsSsn, "999-99-9999", false),
        (UsSsn, "123-00-4567", false),
        (UsSsn, "123-45-0000", false),
        (UsSsn, "078-05-1120", false),
        (UsSsn, "219-09-9999", false),
        (UsSsn, "123-45-6789", false),
        (UsSsn, "123-45-678", false),
        (UsSsn, "123-45-67890", false),
        (UsSsn, "123.45.6788", false),
        (UsSsn, "", false),

        // UK National Insurance number.
        (UkNino, "AB123456C", true),
        (UkNino, "AB 12 34 56 C", true),
        (UkNino, "ab123456c", true),
        (UkNino, "JG103759A", true),
        (UkNino, "CE000000D", true),
        (UkNino, "ZA999999B", true),
        (UkNino, "OA123456A", true), // O is allowed first, not second
        (UkNino, "NA123456A", true),
        (UkNino, "AB123456E", false), // suffix A-D only
        (UkNino, "AB123456", false), // no suffix
        (UkNino, "DA123456A", false),
        (UkNino, "FA123456A", false),
        (UkNino, "IA123456A", false),
        (UkNino, "QA123456A", false),
        (UkNino, "UA123456A", false),
        (UkNino, "VA123456A", false),
        (UkNino, "AO123456A", false),
        (UkNino, "AD123456A", false),
        (UkNino, "BG123456A", false),
        (UkNino, "GB123456A", false),
        (UkNino, "KN123456A", false),
        (UkNino, "NK123456A", false),
        (UkNino, "NT123456A", false),
        (UkNino, "TN123456A", false),
        (UkNino, "ZZ123456A", false),
        (UkNino, "A1123456A", false),
        (UkNino, "AB12345CA", false),
        (UkNino, "AB1234567A", false),
        (UkNino, "", false),

        // JWT.
        (Jwt, JWT_HS256, true),
        // {"alg":"RS256"} . {} . sig
        (Jwt, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", true),
        // {"alg":"HS2"} with and without padding
        (Jwt, "eyJhbGciOiJIUzIifQ==.e30.c2ln", true),
        (Jwt, "eyJhbGciOiJIUzIifQ.e30.c2ln", true),
        // Leading whitespace in header and payload: ' {"alg":"none"}' / ' {}'
        (Jwt, "IHsiYWxnIjoibm9uZSJ9.IHt9.c2ln", true),
        // {"typ":"JWT","alg":"ES256"} . {"a":1}
        (Jwt, "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9.eyJhIjoxfQ.AAAA", true),
        // {"alg":"HS256"} . {"x":"-_"} with url-safe characters in the signature
        (Jwt, "eyJhbGciOiJIUzI1NiJ9.eyJ4IjoiLV8ifQ==.-_-_-_", true),
        // kid before alg: {"kid":"k1","alg":"RS256"}
        (Jwt, "eyJraWQiOiJrMSIsImFsZyI6IlJTMjU2In0.e30.c2ln", true),
        (Jwt, "eyJhbGciOiJSUzI1NiJ9.e30.", false), // empty signature
        (Jwt, "eyJhbGciOiJSUzI1NiJ9.e30", false), // two segments
        (Jwt, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln.c2ln", false), // four segments
        (Jwt, "eyJ0eXAiOiJKV1QifQ.e30.c2ln", false), // {"typ":"JWT"}: no alg
        (Jwt, "WyJhbGciXQ.e30.c2ln", false), // ["alg"]: not an object
        (Jwt, "eyJhbGciOiJSUzI1NiJ9.WzFd.c2ln", false), // payload [1]
        (Jwt, "eyJhbGciOiJSUzI1NiJ9.e30.c2l+", false), // '+' is not base64url
        (Jwt, "eyJhbGciOiJSUzI1NiJ9.e.c2ln", false), // a single base64 character is never valid
        (Jwt, "eyJhbGciOiJSUzI1NiJ9!.e30.c2ln", false),
        (Jwt, "a.b.c", false),
        (Jwt, "..", false),
        (Jwt, "", false),
    ];

    /// Luhn and mod-97 catch every single-character substitution: change each
    /// position of a valid number to every other digit and expect a rejection.
    #[test]
    fn single_digit_errors_are_caught() {
        for (validator, valid, from) in [
            (PaymentCard, "4111111111111111", 0),
            (PaymentCard, "378282246310005", 0),
            (Iban, "DE89370400440532013000", 2),
            (Iban, "GB29NWBK60161331926819", 2),
        ] {
            assert!(validator.check(valid.as_bytes()), "{valid}");
            for position in from..valid.len() {
                let mut changed = valid.as_bytes().to_vec();
                if !changed[position].is_ascii_digit() {
                    continue;
                }
                for digit in b'0'..=b'9' {
                    if digit == valid.as_bytes()[position] {
                        continue;
                    }
                    changed[position] = digit;
                    let text = String::from_utf8_lossy(&changed);
                    assert!(!validator.check(&changed), "{validator:?} accepted {text}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics(value in proptest::collection::vec(any::<u8>(), 0..80)) {
            for &name in Validator::NAMES {
                let _ = Validator::from_name(name).map(|v| v.check(&value));
            }
        }

        #[test]
        fn never_panics_on_near_misses(value in "[0-9A-Za-z _.=-]{0,60}") {
            for &name in Validator::NAMES {
                let _ = Validator::from_name(name).map(|v| v.check(value.as_bytes()));
            }
        }
    }

    /// The IBAN check as the standard states it (move the first four characters to the
    /// end, then mod 97 over the digits): the oracle for the one-pass version.
    fn is_iban_by_rearranging(value: &[u8]) -> bool {
        let mut iban = [0u8; super::MAX_IBAN_LEN];
        let mut len = 0;
        for &b in value {
            if b == b' ' {
                continue;
            }
            if !b.is_ascii_alphanumeric() || len == super::MAX_IBAN_LEN {
                return false;
            }
            iban[len] = b.to_ascii_uppercase();
            len += 1;
        }
        let iban = &iban[..len];
        if len < 4 || super::iban_length([iban[0], iban[1]]) != Some(len) {
            return false;
        }
        if !iban[2].is_ascii_digit() || !iban[3].is_ascii_digit() {
            return false;
        }
        let check_digits = (iban[2] - b'0') * 10 + (iban[3] - b'0');
        if !(2..=98).contains(&check_digits) {
            return false;
        }
        // Move the country code and check digits to the end, read letters as
        // 10..=35, and reduce mod 97 whenever the remainder grows past 2^50 (no big
        // integers; one step adds at most a factor of 100 and 35, so it stays under 2^57).
        let (head, bban) = iban.split_at(4);
        let remainder = bban.iter().chain(head).fold(0u64, |r, &c| {
            let r = if c.is_ascii_digit() {
                r * 10 + u64::from(c - b'0')
            } else {
                r * 100 + u64::from(c - b'A') + 10
            };
            if r >= 1 << 50 { r % 97 } else { r }
        });
        remainder % 97 == 1
    }

    proptest::proptest! {
        /// Valid IBANs of every registry country, with spaces and lowercase, and the same
        /// with one character changed: the one-pass check agrees with the oracle.
        #[test]
        fn iban_one_pass_agrees_with_rearranging(
            country in 0usize..89,
            digits in proptest::collection::vec(0u8..36, 34),
            spaces in proptest::collection::vec(proptest::bool::ANY, 40),
            lower in proptest::bool::ANY,
            change in proptest::option::of((0usize..34, 0u8..128)),
        ) {
            let codes: Vec<[u8; 2]> = (b'A'..=b'Z')
                .flat_map(|a| (b'A'..=b'Z').map(move |b| [a, b]))
                .filter(|c| super::iban_length(*c).is_some())
                .collect();
            proptest::prop_assert_eq!(codes.len(), 89);
            let code = codes[country];
            let len = super::iban_length(code).expect("registry country");
            let symbol = |d: u8| if d < 10 { b'0' + d } else { b'A' + d - 10 };
            let mut iban: Vec<u8> = code.to_vec();
            iban.extend_from_slice(b"00");
            iban.extend(digits[..len - 4].iter().map(|&d| symbol(d)));
            // Check digits 98 - (the number with 00 as check digits) mod 97.
            let mut r = 0u64;
            for &c in iban[4..].iter().chain(&iban[..4]) {
                r = if c.is_ascii_digit() {
                    (r * 10 + u64::from(c - b'0')) % 97
                } else {
                    (r * 100 + u64::from(c - b'A') + 10) % 97
                };
            }
            let check = 98 - r;
            iban[2] = b'0' + (check / 10) as u8;
            iban[3] = b'0' + (check % 10) as u8;
            if let Some((at, byte)) = change {
                iban[at % len] = byte;
            }
            let mut text = Vec::new();
            for (i, &c) in iban.iter().enumerate() {
                text.push(if lower { c.to_ascii_lowercase() } else { c });
                if spaces[i] {
                    text.push(b' ');
                }
            }
            proptest::prop_assert_eq!(super::is_iban(&text), is_iban_by_rearranging(&text));
            if change.is_none() && (2..=98).contains(&check) {
                proptest::prop_assert!(super::is_iban(&text), "{}", String::from_utf8_lossy(&text));
            }
        }
    }

    #[test]
    fn validators_accept_and_reject() {
        let mut failures = Vec::new();
        for &(validator, input, expected) in CASES {
            if validator.check(input.as_bytes()) != expected {
                failures.push(format!(
                    "{validator:?}.check({input:?}) should be {expected}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
