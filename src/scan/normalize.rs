//! How matched values are made equal for distinct counting.

/// A named normalisation applied to a match before it is hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalize {
    /// The bytes as matched.
    None,
    /// ASCII-lowercased (emails, hostnames).
    Lowercase,
    /// Only the ASCII digits (cards, phones, SSNs).
    Digits,
    /// Only ASCII letters and digits, letters uppercased (IBANs, NINOs).
    AlnumUpper,
}

impl Normalize {
    /// Every normalisation name accepted in a rule file.
    pub const NAMES: &'static [&'static str] = &["none", "lowercase", "digits", "alnum-upper"];

    /// Looks a normalisation up by its rule-file name.
    pub fn from_name(name: &str) -> Option<Normalize> {
        Some(match name {
            "none" => Normalize::None,
            "lowercase" => Normalize::Lowercase,
            "digits" => Normalize::Digits,
            "alnum-upper" => Normalize::AlnumUpper,
            _ => return None,
        })
    }

    /// Writes the normalised form of `value` into `out` (cleared first).
    pub fn apply(self, value: &[u8], out: &mut Vec<u8>) {
        out.clear();
        match self {
            Normalize::None => out.extend_from_slice(value),
            Normalize::Lowercase => out.extend(value.iter().map(u8::to_ascii_lowercase)),
            Normalize::Digits => {
                // Every byte is written and only digits advance the end: no branch per
                // byte (a filtered `extend` pushes one byte at a time).
                out.resize(value.len(), 0);
                let mut n = 0;
                for &b in value {
                    out[n] = b;
                    n += usize::from(b.is_ascii_digit());
                }
                out.truncate(n);
            }
            Normalize::AlnumUpper => out.extend(
                value
                    .iter()
                    .filter(|b| b.is_ascii_alphanumeric())
                    .map(u8::to_ascii_uppercase),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_keeps_what_it_says() {
        let cases: &[(Normalize, &[u8], &[u8])] = &[
            (Normalize::None, b"Ab-1 x", b"Ab-1 x"),
            (
                Normalize::Lowercase,
                b"J.Doe@ACME-Corp.IO",
                b"j.doe@acme-corp.io",
            ),
            (
                Normalize::Digits,
                b"4111 1111-1111 1111",
                b"4111111111111111",
            ),
            (Normalize::Digits, b"+1 (555) 010-9999", b"15550109999"),
            (Normalize::Digits, b"no digits", b""),
            (Normalize::Digits, b"", b""),
            (
                Normalize::AlnumUpper,
                b"gb82 west 1234-5698 7654 32",
                b"GB82WEST12345698765432",
            ),
            (Normalize::AlnumUpper, b"\xffab\x00C", b"ABC"),
        ];
        let mut out = b"left over".to_vec();
        for &(form, value, want) in cases {
            form.apply(value, &mut out);
            assert_eq!(out, want, "{form:?} {:?}", String::from_utf8_lossy(value));
        }
    }
}
