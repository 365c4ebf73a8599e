//! Identity: who sends a request.
//!
//! - [`Credentials`]: the credentials file, one `user:PHC` line per user, where PHC is an
//!   argon2id hash string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`, what
//!   [`hash_password`] and `egress-dlp passwd` print). Parsed with every bad line reported
//!   by number.
//! - [`parse_basic`]: the `Proxy-Authorization: Basic` header, refusing anything malformed
//!   or oversized before it is decoded.
//! - [`ClientMap`]: client networks whose requests are attributed to a user without
//!   credentials (hosts that cannot authenticate: printers, build agents); the longest
//!   prefix wins.
//! - [`FailureLimiter`]: failed logins per key (client address, user name) in a fixed
//!   window, in a table of bounded size.
//! - [`VerifyCache`]: successful verifications, keyed by a keyed BLAKE2 MAC of user,
//!   password and stored hash, bounded, with a time to live: a keep-alive browser sends
//!   its credentials on every request and must not pay argon2 (tens of ms) each time.
//! - [`AuthCounters`]: the counters the metrics module exports.
//!
//! No I/O and no clock reads here: functions that need the time take `now`, so the proxy
//! decides when it is and tests can move it. Argon2 verification is CPU-bound by design;
//! the proxy runs it off the async reactor.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};
use base64::Engine as _;
use blake2::digest::{KeyInit, Mac};
use ipnet::IpNet;

/// Longest `Proxy-Authorization` value accepted (bytes): far above any real user name and
/// password, far below what would make decoding it a cost.
pub const MAX_AUTH_HEADER_BYTES: usize = 1024;

/// Longest user name accepted in the credentials file and in a header.
pub const MAX_USER_BYTES: usize = 128;

/// Longest credentials file accepted (bytes).
pub const MAX_CREDENTIALS_FILE_BYTES: u64 = 16 << 20;

/// Whether `name` is a valid user name: 1-128 bytes of letters, digits and `.`, `_`, `-`,
/// `@`, `+` (what directory user names and email-style logins use; nothing that needs
/// escaping in a log line or a page).
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'+'))
}

/// Hashes a password as a PHC string with argon2id and the crate's default parameters
/// (OWASP's minimum: 19 MiB, 2 passes, 1 lane) and a random salt.
pub fn hash_password(password: &[u8]) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .expect("argon2 with default parameters and a generated salt cannot fail")
        .to_string()
}

/// One problem in a credentials file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong (never the hash or any secret).
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// The users and their argon2id hashes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    users: HashMap<String, String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hashes stay out of debug output.
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("Credentials")
            .field("users", &names)
            .finish()
    }
}

/// A fixed hash verified when the user is unknown, so that an unknown name costs the same
/// time as a wrong password (no user enumeration by timing). Its password is random and
/// forgotten.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut password = [0u8; 32];
        OsRng.fill_bytes(&mut password);
        hash_password(&password)
    })
}

impl Credentials {
    /// Parses a credentials file: `user:PHC` per line; blank lines and lines starting with
    /// `#` are skipped; CRLF is accepted. Every bad line is reported (unknown algorithm,
    /// malformed hash, bad user name, duplicate user), never its hash.
    pub fn parse(text: &str) -> Result<Credentials, Vec<LineError>> {
        let mut users = HashMap::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let number = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut error = |message: String| {
                errors.push(LineError {
                    line: number,
                    message,
                })
            };
            let Some((user, hash)) = line.split_once(':') else {
                error("expected `user:$argon2id$...`".into());
                continue;
            };
            if !valid_user_name(user) {
                error(format!(
                    "user name {:?} must be 1-{MAX_USER_BYTES} letters, digits or . _ - @ +",
                    truncate(user, 40)
                ));
                continue;
            }
            if let Err(message) = check_hash(hash) {
                error(format!("user {user}: {message}"));
                continue;
            }
            if let Some(first) = first_line.get(user) {
                error(format!("user {user} is listed already on line {first}"));
                continue;
            }
            first_line.insert(user.to_owned(), number);
            users.insert(user.to_owned(), hash.to_owned());
        }
        if errors.is_empty() {
            Ok(Credentials { users })
        } else {
            Err(errors)
        }
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user names, in no order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// The stored PHC string of `user`.
    pub fn hash_of(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(String::as_str)
    }

    /// Verifies `password` for `user` with argon2 (slow by design: run it off the async
    /// reactor). An unknown user is verified against a dummy hash, taking as long.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(hash) => verify_phc(hash, password),
            None => {
                let _ = verify_phc(dummy_hash(), password);
                false
            }
        }
    }
}

/// Checks a PHC string is an argon2id hash the verifier accepts.
fn check_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| format!("not a PHC hash string: {e}"))?;
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Err(format!(
            "algorithm {} is not argon2id (hash with `egress-dlp passwd`)",
            parsed.algorithm
        ));
    }
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Err("the PHC string has no salt or no hash".into());
    }
    argon2::Params::try_from(&parsed).map_err(|e| format!("argon2 parameters: {e}"))?;
    Ok(())
}

fn verify_phc(hash: &str, password: &[u8]) -> bool {
    PasswordHash::new(hash)
        .map(|h| Argon2::default().verify_password(password, &h).is_ok())
        .unwrap_or(false)
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Why a `Proxy-Authorization` header could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthHeaderError {
    /// Over [`MAX_AUTH_HEADER_BYTES`].
    #[error("the Proxy-Authorization header is too long")]
    TooLong,
    /// Not `Basic <token>`.
    #[error("the Proxy-Authorization scheme is not Basic")]
    NotBasic,
    /// The token is not valid base64.
    #[error("the Proxy-Authorization credentials are not valid base64")]
    BadBase64,
    /// The decoded credentials have no `:` or are not UTF-8.
    #[error("the Proxy-Authorization credentials are not user:password")]
    NoColon,
    /// The user name is empty, too long or has characters a user name cannot have.
    #[error("the Proxy-Authorization user name is not valid")]
    BadUser,
}

/// Basic credentials from a header. The password is wiped from memory when dropped is not
/// promised (it is a plain `String`), but it is never logged or shown: `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Parses a `Proxy-Authorization` value: `Basic base64(user:password)` (RFC 7617; scheme
/// case-insensitive, the password may contain `:`).
pub fn parse_basic(value: &[u8]) -> Result<BasicCredentials, AuthHeaderError> {
    if value.len() > MAX_AUTH_HEADER_BYTES {
        return Err(AuthHeaderError::TooLong);
    }
    let value = std::str::from_utf8(value).map_err(|_| AuthHeaderError::NotBasic)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthHeaderError::NotBasic)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthHeaderError::NotBasic);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|_| AuthHeaderError::BadBase64)?;
    let decoded = String::from_utf8(decoded).map_err(|_| AuthHeaderError::NoColon)?;
    let (user, password) = decoded.split_once(':').ok_or(AuthHeaderError::NoColon)?;
    if !valid_user_name(user) {
        return Err(AuthHeaderError::BadUser);
    }
    Ok(BasicCredentials {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

/// Client networks whose requests are attributed to a user without credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientMap {
    /// (network, user), longest prefix first.
    entries: Vec<(IpNet, String)>,
}

impl ClientMap {
    /// Builds the map; the order of `entries` does not matter (longest prefix wins).
    pub fn new(mut entries: Vec<(IpNet, String)>) -> ClientMap {
        entries.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        ClientMap { entries }
    }

    /// The user of a client address (IPv4-mapped IPv6 counts as IPv4).
    pub fn user_of(&self, ip: IpAddr) -> Option<&str> {
        let ip = ip.to_canonical();
        self.entries
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, user)| user.as_str())
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The users named in the map.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(_, u)| u.as_str())
    }
}

/// Limits on failed logins and on the caches; see the README's `policy.auth` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthLimits {
    /// Failures from one client address within `failure_window` before it is refused.
    pub max_failures_per_client: u32,
    /// Failures for one user name within `failure_window` before it is refused.
    pub max_failures_per_user: u32,
    /// How long failures are remembered (and a refusal lasts, from the first failure).
    pub failure_window: Duration,
    /// Entries in each failure table (client addresses, user names).
    pub failure_table_entries: usize,
    /// How long a successful verification is reused without argon2.
    pub cache_ttl: Duration,
    /// Entries in the verification cache.
    pub cache_entries: usize,
    /// Argon2 verifications running at once (each takes ~19 MiB and a core for tens of ms).
    pub max_verifications: usize,
}

impl Default for AuthLimits {
    fn default() -> AuthLimits {
        AuthLimits {
            max_failures_per_client: 10,
            max_failures_per_user: 50,
            failure_window: Duration::from_secs(300),
            failure_table_entries: 10_000,
            cache_ttl: Duration::from_secs(300),
            cache_entries: 10_000,
            max_verifications: 4,
        }
    }
}

/// The validated `policy.auth`: who may authenticate and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Users and hashes (empty: only the client map identifies).
    pub credentials: Credentials,
    /// Client networks mapped to users.
    pub clients: ClientMap,
    /// Whether a request without a user is refused with 407 (default true).
    pub required: bool,
    /// The realm in the `Proxy-Authenticate` challenge.
    pub realm: String,
    /// Failure and cache limits.
    pub limits: AuthLimits,
}

impl Auth {
    /// Every user a request can be attributed to (credentials and client map).
    pub fn known_users(&self) -> impl Iterator<Item = &str> {
        self.credentials.users().chain(self.clients.users())
    }
}

/// Counters of authentication outcomes, read by the metrics module. Field names are the
/// `result` label values of `egress_dlp_auth_attempts_total` (and two more families, see
/// each field).
#[derive(Debug, Default)]
pub struct AuthCounters {
    /// Credentials verified with argon2 and right.
    pub success: AtomicU64,
    /// Credentials right, taken from the verification cache (no argon2).
    pub cached: AtomicU64,
    /// Credentials verified and wrong (unknown user or wrong password).
    pub failure: AtomicU64,
    /// A `Proxy-Authorization` header that could not be parsed (too long, not Basic, bad
    /// base64, no colon, bad user name). Counted as a failure for the client address.
    pub malformed: AtomicU64,
    /// No credentials and no client-map entry: answered with the 407 challenge.
    pub missing: AtomicU64,
    /// Attributed by the client map (no credentials).
    pub client_map: AtomicU64,
    /// Refused without verifying because the client address or user name had too many
    /// recent failures (429).
    pub rate_limited: AtomicU64,
    /// Failure-table entries evicted while still live because the table was full
    /// (`egress_dlp_auth_failure_evictions_total`).
    pub failure_evictions: AtomicU64,
    /// Verification-cache entries evicted while still live because the cache was full
    /// (`egress_dlp_auth_cache_evictions_total`).
    pub cache_evictions: AtomicU64,
}

impl AuthCounters {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What the failure limiter counts by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FailureKey {
    /// A client address.
    Client(IpAddr),
    /// A user name.
    User(String),
}

#[derive(Debug, Clone, Copy)]
struct FailureEntry {
    first: Instant,
    failures: u32,
}

/// Failed logins per key in a fixed window from the key's first failure, in two tables
/// (client addresses, user names) of at most `failure_table_entries` each.
///
/// When a table is full, expired entries are swept; if none expired, the entry whose window
/// started first is evicted (counted in [`AuthCounters::failure_evictions`]). An attacker
/// who fills the client table from many addresses can so make the proxy forget an
/// address's failures, but not a user name's: the user table is separate.
#[derive(Debug)]
pub struct FailureLimiter {
    clients: Mutex<HashMap<FailureKey, FailureEntry>>,
    users: Mutex<HashMap<FailureKey, FailureEntry>>,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        FailureLimiter {
            clients: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
        }
    }
}

impl FailureLimiter {
    fn table(&self, key: &FailureKey) -> &Mutex<HashMap<FailureKey, FailureEntry>> {
        match key {
            FailureKey::Client(_) => &self.clients,
            FailureKey::User(_) => &self.users,
        }
    }

    fn max_failures(key: &FailureKey, limits: &AuthLimits) -> u32 {
        match key {
            FailureKey::Client(_) => limits.max_failures_per_client,
            FailureKey::User(_) => limits.max_failures_per_user,
        }
    }

    /// If `key` has reached its failure limit, how long until it may try again.
    pub fn refused_for(
        &self,
        key: &FailureKey,
        limits: &AuthLimits,
        now: Instant,
    ) -> Option<Duration> {
        let table = self.table(key).lock().unwrap_or_else(|e| e.into_inner());
        let entry = table.get(key)?;
        let end = entry.first + limits.failure_window;
        (entry.failures >= Self::max_failures(key, limits) && now < end).then(|| end - now)
    }

    /// Records a failure for `key`.
    pub fn record_failure(
        &self,
        key: FailureKey,
        limits: &AuthLimits,
        counters: &AuthCounters,
        now: Instant,
    ) {
        let mut table = self.table(&key).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = table.get_mut(&key) {
            if now < entry.first + limits.failure_window {
                entry.failures = entry.failures.saturating_add(1);
            } else {
                *entry = FailureEntry {
                    first: now,
                    failures: 1,
                };
            }
            return;
        }
        if table.len() >= limits.failure_table_entries {
            table.retain(|_, e| now < e.first + limits.failure_window);
        }
        if table.len() >= limits.failure_table_entries {
            if let Some(oldest) = table
                .iter()
                .min_by_key(|(_, e)| e.first)
                .map(|(k, _)| k.clone())
            {
                table.remove(&oldest);
                AuthCounters::inc(&counters.failure_evictions);
            }
        }
        table.insert(
            key,
            FailureEntry {
                first: now,
                failures: 1,
            },
        );
    }

    /// Forgets the failures of `key` (a user name after a successful login).
    pub fn forget(&self, key: &FailureKey) {
        self.table(key)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Entries in the (client, user) tables.
    pub fn len(&self) -> (usize, usize) {
        let n = |t: &Mutex<HashMap<FailureKey, FailureEntry>>| {
            t.lock().unwrap_or_else(|e| e.into_inner()).len()
        };
        (n(&self.clients), n(&self.users))
    }
}

/// A keyed MAC of (user, password, stored hash): the verification cache's key. The
/// password is not recoverable from it, and a changed hash (a new password in the file) or
/// a removed user never hits an old entry.
pub type VerifyKey = [u8; 32];

/// Successful verifications, so that credentials sent with every request of a keep-alive
/// connection cost one argon2 verification per `cache_ttl`, not one per request.
///
/// Bounded: at `cache_entries`, expired entries are swept and then the oldest is evicted
/// (counted in [`AuthCounters::cache_evictions`]). Only successes are cached: a wrong
/// password always pays argon2 (and the failure limiter).
pub struct VerifyCache {
    mac_key: [u8; 32],
    entries: Mutex<HashMap<VerifyKey, Instant>>,
}

impl fmt::Debug for VerifyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyCache")
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for VerifyCache {
    fn default() -> Self {
        let mut mac_key = [0u8; 32];
        OsRng.fill_bytes(&mut mac_key);
        VerifyCache {
            mac_key,
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl VerifyCache {
    /// The cache key of these credentials against this stored hash.
    pub fn key(&self, user: &str, password: &str, stored_hash: &str) -> VerifyKey {
        let mut mac = <blake2::Blake2sMac256 as KeyInit>::new_from_slice(&self.mac_key)
            .expect("a 32-byte key is valid for BLAKE2s");
        // Length-prefixed fields: no two different triples feed the same bytes.
        for field in [user, password, stored_hash] {
            mac.update(&(field.len() as u64).to_le_bytes());
            mac.update(field.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `key` was verified within `ttl` of `now`.
    pub fn hit(&self, key: &VerifyKey, ttl: Duration, now: Instant) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some(&at) if now < at + ttl => true,
            Some(_) => {
                entries.remove(key);
                false
            }
            None => false,
        }
    }

    /// Remembers a successful verification.
    pub fn insert(
        &self,
        key: VerifyKey,
        limits: &AuthLimits,
        counters: &AuthCounters,
        now: Instant,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !entries.contains_key(&key) && entries.len() >= limits.cache_entries {
            entries.retain(|_, at| now < *at + limits.cache_ttl);
            if entries.len() >= limits.cache_entries {
                if let Some(oldest) = entries.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k) {
                    entries.remove(&oldest);
                    AuthCounters::inc(&counters.cache_evictions);
                }
            }
        }
        entries.insert(key, now);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let line = format!("alice:{}\n", hash_password(b"correct horse"));
        let creds = Credentials::parse(&line).unwrap();
        assert!(creds.verify("alice", b"correct horse"));
        assert!(!creds.verify("alice", b"wrong"));
        assert!(!creds.verify("bob", b"correct horse"));
        assert!(!format!("{creds:?}").contains("argon2"));
    }

    #[test]
    fn credentials_file_errors_are_listed_with_line_numbers() {
        let good = hash_password(b"pw");
        let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
        let argon2i = good.replacen("argon2id", "argon2i", 1);
        let text = format!(
            "# users\n\nalice:{good}\nno colon here\nbob:{bcrypt}\ncarol:$argon2id$v=19$garbage\n\
             alice:{good}\nbad user:{good}\ndave:{argon2i}\r\nerin:{good}\r\n"
        );
        let errors = Credentials::parse(&text).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [4, 5, 6, 7, 8, 9], "{errors:?}");
        assert!(errors[0].message.contains("user:$argon2id$"));
        assert!(errors[1].message.contains("bob"));
        assert!(errors[3].message.contains("line 3"));
        assert!(errors[5].message.contains("not argon2id"), "{errors:?}");
        for e in &errors {
            assert!(!e.message.contains(&good[20..]), "a hash leaked: {e}");
        }
    }

    #[test]
    fn basic_headers() {
        let b = |s: &str| format!("Basic {}", STANDARD.encode(s));
        type Case = (
            String,
            Result<(&'static str, &'static str), AuthHeaderError>,
        );
        let cases: Vec<Case> = vec![
            (b("alice:pw"), Ok(("alice", "pw"))),
            (b("alice:pw:with:colons"), Ok(("alice", "pw:with:colons"))),
            (b("alice:"), Ok(("alice", ""))),
            (
                format!("bAsIc  {}", STANDARD.encode("a@b.example:x")),
                Ok(("a@b.example", "x")),
            ),
            (b("alicepw"), Err(AuthHeaderError::NoColon)),
            (b(":pw"), Err(AuthHeaderError::BadUser)),
            (b("al ice:pw"), Err(AuthHeaderError::BadUser)),
            (
                "Basic !!!not base64!!!".into(),
                Err(AuthHeaderError::BadBase64),
            ),
            ("Basic".into(), Err(AuthHeaderError::NotBasic)),
            ("Bearer abc".into(), Err(AuthHeaderError::NotBasic)),
            (
                format!("Basic {}", STANDARD.encode([0xff, b':', 0xfe])),
                Err(AuthHeaderError::NoColon),
            ),
            (
                format!("Basic {}", "A".repeat(2000)),
                Err(AuthHeaderError::TooLong),
            ),
        ];
        for (header, want) in cases {
            let got = parse_basic(header.as_bytes());
            let got = got
                .as_ref()
                .map(|c| (c.user.as_str(), c.password.as_str()))
                .map_err(|e| *e);
            assert_eq!(got, want, "{header:.40}");
        }
    }

    #[test]
    fn client_map_longest_prefix_wins() {
        let map = ClientMap::new(vec![
            ("10.0.0.0/8".parse().unwrap(), "lab".into()),
            ("10.1.2.3/32".parse().unwrap(), "build".into()),
        ]);
        assert_eq!(map.user_of("10.1.2.3".parse().unwrap()), Some("build"));
        assert_eq!(
            map.user_of("::ffff:10.1.2.3".parse().unwrap()),
            Some("build")
        );
        assert_eq!(map.user_of("10.9.9.9".parse().unwrap()), Some("lab"));
        assert_eq!(map.user_of("192.0.2.1".parse().unwrap()), None);
    }

    #[test]
    fn failures_lock_a_key_for_the_window_and_the_table_stays_bounded() {
        let limits = AuthLimits {
            max_failures_per_client: 3,
            failure_table_entries: 100,
            failure_window: Duration::from_secs(60),
            ..AuthLimits::default()
        };
        let counters = AuthCounters::default();
        let limiter = FailureLimiter::default();
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let key = FailureKey::Client(ip);
        for _ in 0..2 {
            limiter.record_failure(key.clone(), &limits, &counters, t0);
        }
        assert_eq!(limiter.refused_for(&key, &limits, t0), None);
        limiter.record_failure(key.clone(), &limits, &counters, t0);
        assert_eq!(
            limiter.refused_for(&key, &limits, t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(
            limiter.refused_for(&key, &limits, t0 + Duration::from_secs(60)),
            None
        );
        // A flood of distinct addresses: the table never grows past its bound.
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            limiter.record_failure(
                FailureKey::Client(ip),
                &limits,
                &counters,
                t0 + Duration::from_millis(u64::from(i)),
            );
            assert!(limiter.len().0 <= 100);
        }
        assert_eq!(limiter.len().0, 100);
        assert!(AuthCounters::get(&counters.failure_evictions) >= 900);
    }

    #[test]
    fn cache_hits_within_ttl_only_and_stays_bounded() {
        let limits = AuthLimits {
            cache_entries: 10,
            cache_ttl: Duration::from_secs(30),
            ..AuthLimits::default()
        };
        let counters = AuthCounters::default();
        let cache = VerifyCache::default();
        let t0 = Instant::now();
        let k = cache.key("alice", "pw", "$hash1");
        assert_ne!(k, cache.key("alice", "pw", "$hash2"));
        assert_ne!(k, cache.key("alice", "pw2", "$hash1"));
        assert_ne!(cache.key("ab", "c", "h"), cache.key("a", "bc", "h"));
        assert!(!cache.hit(&k, limits.cache_ttl, t0));
        cache.insert(k, &limits, &counters, t0);
        assert!(cache.hit(&k, limits.cache_ttl, t0 + Duration::from_secs(29)));
        assert!(!cache.hit(&k, limits.cache_ttl, t0 + Duration::from_secs(30)));
        for i in 0..50 {
            cache.insert(
                cache.key(&format!("u{i}"), "pw", "h"),
                &limits,
                &counters,
                t0,
            );
            assert!(cache.len() <= 10);
        }
        assert_eq!(AuthCounters::get(&counters.cache_evictions), 40);
    }
}
