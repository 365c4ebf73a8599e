//! Fingerprints: an HMAC-SHA256 of a matched value (after the rule's normalisation), keyed
//! by a secret kept in `DATA_DIR`, so an analyst can see that two events carried the same
//! value without either event carrying it.
//!
//! The key ([`FingerprintKey`]) is 32 random bytes in `DATA_DIR/audit-hmac.key` (64 hex
//! digits), created with mode 0600 on first start and read on every later one: the same
//! value gives the same fingerprint across events and restarts, and a different key (another
//! deployment) gives unrelated ones. Whoever holds the key can test a guess against a
//! fingerprint, so it is as sensitive as the audit log's subject matter; whoever only holds
//! the audit log cannot.
//!
//! # Which value a sample is
//!
//! The engine reports, per rule, masked samples of the first few distinct values
//! (`RuleFinding::samples`) but not the values themselves, and its distinct-value hashes
//! are keyed per process. [`SampleValues`] recovers the value behind each sample from the
//! bytes the request carried (the request target and the held body): it runs the rule's
//! own regex, excludes, validator, required context and normalisation over them, in order,
//! and takes the distinct values in the order the engine saw them. A value is paired with a
//! sample only when its mask equals that sample, in sequence; from the first disagreement
//! on (bytes the proxy no longer holds, such as the streamed part of a body over the hold
//! limit, or that it does not copy: past the first MiB of a request), samples get no
//! fingerprint rather than a wrong one. This costs a regex pass over
//! the request, so it runs only for requests that produce an audit event with samples.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use regex::bytes::Regex;
use sha2::Sha256;

use crate::rules::{RuleSet, compile};
use crate::scan::{MaskStyle, Normalize, RuleFinding, Validator};

/// File name of the fingerprint key in `DATA_DIR`.
pub const KEY_FILE: &str = "audit-hmac.key";

/// Bytes of key material.
const KEY_BYTES: usize = 32;

/// The secret that keys fingerprints.
#[derive(Clone)]
pub struct FingerprintKey([u8; KEY_BYTES]);

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey(..)")
    }
}

impl FingerprintKey {
    /// A key from raw bytes (tests, or a key managed elsewhere).
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> FingerprintKey {
        FingerprintKey(bytes)
    }

    /// Reads `DATA_DIR/audit-hmac.key`, creating `data_dir` and the key (random, mode 0600)
    /// on first start. Two processes starting at once end up with the same key.
    pub fn load_or_create(data_dir: &Path) -> io::Result<FingerprintKey> {
        let path = data_dir.join(KEY_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => return parse_key(&path, &text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(annotate(&path, e)),
        }
        fs::create_dir_all(data_dir).map_err(|e| annotate(data_dir, e))?;
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes)
            .map_err(|e| io::Error::other(format!("no randomness for the audit key: {e}")))?;
        let text = format!("{}\n", hex(&bytes));
        // Written under a unique name, then linked into place: the key file is either
        // absent or complete, and a concurrent first start keeps whichever was linked first.
        let tmp = data_dir.join(format!(".{KEY_FILE}.{}.tmp", std::process::id()));
        let written = (|| {
            let mut file = create_private(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(annotate(&tmp, e));
        }
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(FingerprintKey(bytes)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let text = fs::read_to_string(&path).map_err(|e| annotate(&path, e))?;
                parse_key(&path, &text)
            }
            Err(e) => Err(annotate(&path, e)),
        }
    }

    /// The fingerprint of a normalised value: HMAC-SHA256, 64 lowercase hex digits.
    pub fn fingerprint(&self, normalized: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes a key of any length");
        mac.update(normalized);
        hex(&mac.finalize().into_bytes())
    }
}

/// Creates a file readable and writable by its owner only.
fn create_private(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn parse_key(path: &Path, text: &str) -> io::Result<FingerprintKey> {
    let digits = text.trim();
    let bytes = (digits.len() == 2 * KEY_BYTES)
        .then(|| {
            (0..KEY_BYTES)
                .map(|i| u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).ok())
                .collect::<Option<Vec<u8>>>()
        })
        .flatten();
    match bytes {
        Some(bytes) => {
            let mut key = [0u8; KEY_BYTES];
            key.copy_from_slice(&bytes);
            #[cfg(unix)]
            if let Ok(meta) = fs::metadata(path) {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        "the audit fingerprint key is readable by others than its owner: chmod 600 it"
                    );
                }
            }
            Ok(FingerprintKey(key))
        }
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: not an audit key (expected {} hex digits); remove it to create a new one",
                path.display(),
                2 * KEY_BYTES
            ),
        )),
    }
}

fn annotate(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// One rule, compiled to re-find the values behind its samples.
struct RuleMatcher {
    regex: Regex,
    exclude: Vec<Regex>,
    validator: Validator,
    normalize: Normalize,
    mask: MaskStyle,
    /// Lowercased words, window, and whether a match needs one nearby.
    context: Option<(Vec<Vec<u8>>, usize)>,
}

/// Recovers the values behind a finding's masked samples; see the module docs.
pub struct SampleValues {
    rules: Vec<RuleMatcher>,
}

impl std::fmt::Debug for SampleValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleValues")
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl SampleValues {
    /// Compiles every rule of `set` (its patterns were validated when it was loaded).
    pub fn new(set: &RuleSet) -> SampleValues {
        let rules = set
            .rules()
            .iter()
            .map(|rule| RuleMatcher {
                regex: compile(&rule.pattern).expect("pattern validated at load"),
                exclude: rule
                    .exclude
                    .iter()
                    .map(|e| compile(e).expect("exclude validated at load"))
                    .collect(),
                validator: rule.validator,
                normalize: rule.normalize,
                mask: rule.mask,
                context: rule.context.as_ref().filter(|c| c.required).map(|c| {
                    (
                        c.words
                            .iter()
                            .map(|w| w.to_ascii_lowercase().into_bytes())
                            .collect(),
                        c.window,
                    )
                }),
            })
            .collect();
        SampleValues { rules }
    }

    /// For each sample of `finding`, the fingerprint of the value behind it in `haystack`
    /// (the bytes the engine was fed, or a prefix of them), or `None` when that value
    /// cannot be told for sure.
    pub fn fingerprints(
        &self,
        key: &FingerprintKey,
        finding: &RuleFinding,
        haystack: &[u8],
    ) -> Vec<Option<String>> {
        let mut out = vec![None; finding.samples.len()];
        let Some(rule) = self.rules.get(finding.index) else {
            return out;
        };
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let mut normalized = Vec::new();
        for m in rule.regex.find_iter(haystack) {
            if seen.len() == finding.samples.len() {
                break;
            }
            let value = m.as_bytes();
            if rule.exclude.iter().any(|x| x.is_match(value)) || !rule.validator.check(value) {
                continue;
            }
            if let Some((words, window)) = &rule.context {
                let lo = m.start().saturating_sub(*window);
                let hi = (m.end() + window).min(haystack.len());
                if !contains_any(&haystack[lo..hi], words) {
                    continue;
                }
            }
            normalized.clear();
            rule.normalize.apply(value, &mut normalized);
            if seen.contains(&normalized) {
                continue;
            }
            let i = seen.len();
            if rule.mask.mask(value) != finding.samples[i] {
                // The engine's i-th distinct value is not this one: stop pairing.
                break;
            }
            out[i] = Some(key.fingerprint(&normalized));
            seen.push(normalized.clone());
        }
        out
    }
}

impl SampleValues {
    /// `hay` with every match of the rules that found something replaced by its mask.
    pub(crate) fn mask_matches(&self, findings: &crate::scan::Findings, hay: &[u8]) -> Vec<u8> {
        let mut spans: Vec<(usize, usize, MaskStyle)> = Vec::new();
        for f in &findings.rules {
            if let Some(rule) = self.rules.get(f.index) {
                spans.extend(
                    rule.regex
                        .find_iter(hay)
                        .map(|m| (m.start(), m.end(), rule.mask)),
                );
            }
        }
        spans.sort_by_key(|s| s.0);
        let mut out = Vec::with_capacity(hay.len());
        let mut at = 0;
        for (start, end, mask) in spans {
            if start < at {
                // Overlaps a value already masked: hide what sticks out past it.
                if end > at {
                    out.extend_from_slice(b"****");
                    at = end;
                }
                continue;
            }
            out.extend_from_slice(&hay[at..start]);
            out.extend_from_slice(mask.mask(&hay[start..end]).as_bytes());
            at = end;
        }
        out.extend_from_slice(&hay[at..]);
        out
    }
}

/// Whether `hay` contains one of `words` (lowercase), ASCII case-insensitively.
fn contains_any(hay: &[u8], words: &[Vec<u8>]) -> bool {
    words.iter().any(|w| {
        !w.is_empty()
            && hay
                .windows(w.len())
                .any(|window| window.eq_ignore_ascii_case(w))
    })
}

/// Where the key lives for a data directory.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_hmac_sha256_hex() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let key = FingerprintKey::from_bytes([7; 32]);
        let a = key.fingerprint(b"alice@acme-corp.io");
        assert_eq!(a.len(), 64);
        assert_eq!(a, key.fingerprint(b"alice@acme-corp.io"));
        assert_ne!(a, key.fingerprint(b"bob@acme-corp.io"));
        assert_ne!(
            a,
            FingerprintKey::from_bytes([8; 32]).fingerprint(b"alice@acme-corp.io")
        );
    }

    #[test]
    fn key_is_created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested/data");
        let k1 = FingerprintKey::load_or_create(&data).unwrap();
        let k2 = FingerprintKey::load_or_create(&data).unwrap();
        assert_eq!(k1.fingerprint(b"x"), k2.fingerprint(b"x"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(key_path(&data)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = fs::read_dir(&data).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the key file remains");
    }

    #[test]
    fn a_corrupt_key_is_an_error_that_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(key_path(dir.path()), "not hex\n").unwrap();
        let e = FingerprintKey::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains(KEY_FILE), "{e}");
    }
}
