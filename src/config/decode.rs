//! `decode:` and `policy:` config keys: the decoders' bounds, the headers scanned, and what
//! happens to a request that could not be fully inspected. Mirrors [`crate::decode`].

use serde::Deserialize;

use super::Errors;
use super::raw::RawSize;
use crate::decode::Limits;
use crate::policy::OnInspectionError;

/// `decode:` — how request bodies are decoded before they are scanned, and the bounds that
/// keep decoding from being a way to exhaust the proxy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDecode {
    /// Decode layers followed inside each other, e.g. base64 inside JSON inside gzip is 3
    /// (default 3; at most 16).
    pub max_depth: Option<u32>,
    /// Bytes all decompressors together may produce for one request: content-encodings,
    /// gzip/zstd found inside, zip entries (default `256MiB`).
    pub max_decoded_bytes: Option<RawSize>,
    /// Most bytes one decompressor may produce per compressed byte, judged once it has
    /// produced 1 MiB (default 100).
    pub max_ratio: Option<u64>,
    /// Zip entries read per request, across all archives (default 1000).
    pub max_archive_entries: Option<u32>,
    /// Request headers whose values are scanned, besides the request target: names
    /// (case-insensitive), or prefixes ending in `*` (default `[Referer, "X-*"]`). Values
    /// are scanned, never logged.
    pub headers: Option<Vec<String>>,
}

/// `policy:` — decisions beyond the rules' thresholds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// What happens to a request that could not be fully inspected (a decoding limit, a
    /// corrupt or unsupported encoding): `block` (default; a 403 page says the content
    /// could not be inspected) or `allow` (forwarded, and logged).
    pub on_inspection_error: Option<String>,
}

/// `decode:` settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decode {
    /// The decoders' bounds.
    pub limits: Limits,
    /// Which request headers are scanned.
    pub headers: ScannedHeaders,
}

/// `policy:` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// What happens to a request that could not be fully inspected.
    pub on_inspection_error: OnInspectionError,
}

/// Request header names scanned: exact names and name prefixes, lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedHeaders {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl Default for ScannedHeaders {
    fn default() -> ScannedHeaders {
        ScannedHeaders {
            exact: vec!["referer".into()],
            prefixes: vec!["x-".into()],
        }
    }
}

impl ScannedHeaders {
    /// Whether the header `name` (as `http` gives it: lowercase) is scanned.
    pub fn matches(&self, name: &str) -> bool {
        self.exact.iter().any(|e| e.eq_ignore_ascii_case(name))
            || self.prefixes.iter().any(|p| {
                name.len() >= p.len()
                    && name.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            })
    }
}

/// Most decode layers one may configure.
const MAX_DEPTH_CEILING: u32 = 16;

pub(super) fn validate_decode(raw: RawDecode, errors: &mut Errors) -> Decode {
    let defaults = Limits::default();
    let max_depth = raw.max_depth.unwrap_or(defaults.max_depth);
    if max_depth > MAX_DEPTH_CEILING {
        errors.push(
            "decode.max_depth",
            format!("{max_depth} is more than {MAX_DEPTH_CEILING}"),
        );
    }
    let max_decoded_bytes = errors.size(
        "decode.max_decoded_bytes",
        raw.max_decoded_bytes,
        defaults.max_decoded_bytes,
        1,
    );
    let max_ratio = raw.max_ratio.unwrap_or(defaults.max_ratio);
    if max_ratio == 0 {
        errors.push("decode.max_ratio", "must be at least 1".into());
    }
    let max_archive_entries = raw
        .max_archive_entries
        .unwrap_or(defaults.max_archive_entries);
    let headers = match raw.headers {
        None => ScannedHeaders::default(),
        Some(list) => {
            let mut h = ScannedHeaders {
                exact: Vec::new(),
                prefixes: Vec::new(),
            };
            for (i, name) in list.iter().enumerate() {
                let (stem, prefix) = match name.strip_suffix('*') {
                    Some(stem) => (stem, true),
                    None => (name.as_str(), false),
                };
                let valid = !stem.contains('*')
                    && ((prefix && stem.is_empty())
                        || http::HeaderName::from_bytes(stem.as_bytes()).is_ok());
                if !valid {
                    errors.push(
                        &format!("decode.headers[{i}]"),
                        format!("{name:?} is not a header name (or a prefix ending in `*`)"),
                    );
                    continue;
                }
                let stem = stem.to_ascii_lowercase();
                if prefix {
                    h.prefixes.push(stem);
                } else {
                    h.exact.push(stem);
                }
            }
            h
        }
    };
    Decode {
        limits: Limits {
            max_depth,
            max_decoded_bytes,
            max_ratio: max_ratio.max(1),
            max_archive_entries,
        },
        headers,
    }
}

pub(super) fn validate_policy(raw: RawPolicy, errors: &mut Errors) -> Policy {
    let on_inspection_error = match raw.on_inspection_error.as_deref() {
        None | Some("block") => OnInspectionError::Block,
        Some("allow") => OnInspectionError::Allow,
        Some(other) => {
            errors.push(
                "policy.on_inspection_error",
                format!("{other:?} is not one of: block, allow"),
            );
            OnInspectionError::Block
        }
    };
    Policy {
        on_inspection_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanned_headers_match_names_and_prefixes() {
        let h = ScannedHeaders::default();
        let cases = [
            ("referer", true),
            ("x-forwarded-for", true),
            ("x-custom-data", true),
            ("authorization", false),
            ("cookie", false),
            ("content-type", false),
            ("x", false),
        ];
        for (name, want) in cases {
            assert_eq!(h.matches(name), want, "{name}");
        }
    }
}
