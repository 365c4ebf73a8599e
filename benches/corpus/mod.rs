//! Deterministic corpus generators shared by the scanner bench (`benches/scan.rs`) and the
//! corpus writer (`examples/gen_corpus.rs`).
//!
//! Two kinds of traffic, both reproducible from a seed (a tiny xorshift PRNG, no `rand`):
//!
//! - [`benign`]: ordinary egress with no customer identifiers in it, interleaved in pieces
//!   of a few KiB and in roughly equal shares by bytes: JSON telemetry events (millisecond
//!   timestamps, UUIDs, durations, status codes, user agents, float metrics), English-ish
//!   prose (numbers, ISO dates, prices, version strings, order numbers), source code
//!   (Rust/JS-like lines, hex constants) and hashes (hex and base64 digests, base64 blobs
//!   in 76-character lines). These are the false-positive traps of a DLP rule pack; a
//!   correct pack finds nothing here (or at least nothing that crosses a threshold).
//! - [`dense`]: customer exports: a CSV whose every row carries one customer id, email,
//!   phone, payment card (real network prefix, valid Luhn), US SSN (valid area, group and
//!   serial), IBAN (valid mod-97) and city. Every row has exactly one value of each, so
//!   the expected count per identifier kind is the number of data rows.
//!
//! Both generators return exactly `size` bytes ending on a line boundary (the last line is
//! padded with spaces when a whole line does not fit).

use std::fmt::Write as _;

/// A xorshift64* generator: tiny, fast, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    /// Seeds the generator (any seed, zero included, gives a usable state).
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    /// The next 64 random bits.
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next() >> 32) * u128::from(n)) >> 32) as u64
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `1 / n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// One element of a non-empty slice.
    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len() as u64) as usize]
    }

    /// A random ASCII digit.
    fn digit(&mut self) -> u8 {
        b'0' + self.below(10) as u8
    }
}

/// Cuts or pads `buf` to exactly `size` bytes ending on a line boundary: whole lines are
/// kept while they fit, the rest is spaces and a final newline.
fn fit(mut buf: Vec<u8>, size: usize) -> Vec<u8> {
    if size == 0 {
        return Vec::new();
    }
    if buf.len() > size {
        let keep = buf[..size]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        buf.truncate(keep);
    }
    buf.resize(size, b' ');
    buf[size - 1] = b'\n';
    buf
}

// ---------------------------------------------------------------------------------------
// Benign egress
// ---------------------------------------------------------------------------------------

/// Ordinary egress traffic without customer identifiers: `size` bytes from `seed`.
///
/// Pieces of 2–6 KiB of JSON telemetry, prose, source code and hashes, each kind chosen so
/// that the four stay within a few KiB of an equal share by bytes.
pub fn benign(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ 0xb3_9e_11_7a);
    let mut out = String::with_capacity(size + 8 * 1024);
    let mut shares = [0usize; 4];
    while out.len() < size {
        // The kind furthest behind its share, with a little randomness in the order.
        let kind = if rng.one_in(3) {
            rng.below(4) as usize
        } else {
            (0..4).min_by_key(|&k| shares[k]).unwrap_or(0)
        };
        let target = out.len() + rng.range(2048, 6144) as usize;
        let start = out.len();
        while out.len() < target {
            match kind {
                0 => telemetry_event(&mut rng, &mut out),
                1 => prose_paragraph(&mut rng, &mut out),
                2 => code_block(&mut rng, &mut out),
                _ => hash_lines(&mut rng, &mut out),
            }
        }
        shares[kind] += out.len() - start;
    }
    fit(out.into_bytes(), size)
}

const EVENTS: &[&str] = &[
    "page_view",
    "click",
    "session_start",
    "session_end",
    "api_call",
    "render",
    "cache_miss",
    "upload_progress",
    "search",
    "heartbeat",
    "error",
    "retry",
];
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.91 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "okhttp/4.12.0",
    "python-requests/2.31.0",
    "curl/8.5.0",
    "Go-http-client/2.0",
];
const REGIONS: &[&str] = &[
    "eu-west-1",
    "us-east-2",
    "ap-southeast-1",
    "eu-central-1",
    "us-west-2",
];
const ROUTES: &[&str] = &[
    "/api/v2/items",
    "/dashboard",
    "/search",
    "/api/v1/sync",
    "/static/app.js",
    "/settings/profile",
    "/reports/weekly",
];
const STATUSES: &[&str] = &[
    "200", "200", "200", "204", "301", "304", "400", "404", "500",
];

/// Appends a lowercase UUID v4.
fn uuid(rng: &mut Rng, out: &mut String) {
    let hex = b"0123456789abcdef";
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        let nibble = match i {
            12 => 4,
            16 => 8 + rng.below(4) as usize,
            _ => rng.below(16) as usize,
        };
        out.push(hex[nibble] as char);
    }
}

/// Appends one JSON telemetry event (about 300 bytes) and a newline.
fn telemetry_event(rng: &mut Rng, out: &mut String) {
    let ts = 1_704_067_200_000 + rng.below(31_536_000_000);
    let _ = write!(
        out,
        r#"{{"ts":{ts},"event":"{}","event_id":""#,
        rng.pick(EVENTS)
    );
    uuid(rng, out);
    out.push_str(r#"","session":""#);
    uuid(rng, out);
    let _ = write!(
        out,
        r#"","seq":{},"route":"{}","status":{},"duration_ms":{},"bytes":{},"ua":"{}","region":"{}","#,
        rng.below(5000),
        rng.pick(ROUTES),
        rng.pick(STATUSES),
        rng.range(1, 4000),
        rng.below(2_000_000),
        rng.pick(USER_AGENTS),
        rng.pick(REGIONS),
    );
    if rng.one_in(3) {
        let _ = write!(out, r#""sent_at":{},"#, ts / 1000);
    }
    let _ = write!(
        out,
        r#""metrics":{{"cpu":{:.4},"mem_mb":{:.2},"fps":{:.1},"p99_ms":{:.3}}},"build":"{}.{}.{}"}}"#,
        rng.below(10_000) as f64 / 10_000.0,
        rng.range(64, 4096) as f64 + rng.below(100) as f64 / 100.0,
        rng.range(20, 144) as f64 + rng.below(10) as f64 / 10.0,
        rng.range(1, 900) as f64 + rng.below(1000) as f64 / 1000.0,
        rng.range(1, 9),
        rng.below(40),
        rng.below(300),
    );
    out.push('\n');
}

const WORDS: &[&str] = &[
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "with",
    "as",
    "was",
    "on",
    "be",
    "at",
    "by",
    "this",
    "from",
    "or",
    "have",
    "an",
    "they",
    "which",
    "one",
    "you",
    "were",
    "all",
    "we",
    "when",
    "there",
    "can",
    "more",
    "if",
    "no",
    "out",
    "so",
    "said",
    "what",
    "up",
    "its",
    "about",
    "into",
    "than",
    "them",
    "only",
    "other",
    "new",
    "some",
    "could",
    "time",
    "these",
    "two",
    "may",
    "then",
    "first",
    "any",
    "like",
    "now",
    "such",
    "our",
    "over",
    "also",
    "back",
    "after",
    "use",
    "work",
    "well",
    "way",
    "even",
    "because",
    "good",
    "people",
    "system",
    "release",
    "team",
    "meeting",
    "quarter",
    "budget",
    "report",
    "project",
    "deadline",
    "design",
    "review",
    "proposal",
    "schedule",
    "service",
    "platform",
    "network",
    "update",
    "feature",
    "customer",
    "account",
    "vendor",
    "office",
    "travel",
    "invoice",
    "shipment",
    "warehouse",
    "migration",
    "latency",
    "throughput",
    "dashboard",
    "roadmap",
    "contract",
    "renewal",
    "support",
    "question",
    "answer",
    "weekly",
    "monthly",
    "estimate",
    "draft",
    "final",
    "approved",
    "pending",
    "server",
    "cluster",
    "storage",
    "backup",
    "incident",
    "postmortem",
    "deploy",
    "rollback",
    "version",
    "library",
    "document",
    "summary",
    "analysis",
    "growth",
    "revenue",
    "forecast",
    "hiring",
    "onboarding",
    "policy",
];

/// Appends one paragraph of English-ish prose (a few sentences) and a blank line.
fn prose_paragraph(rng: &mut Rng, out: &mut String) {
    for _ in 0..rng.range(3, 7) {
        let words = rng.range(8, 22);
        for w in 0..words {
            if w > 0 {
                out.push(' ');
            }
            let word = rng.pick(WORDS);
            if w == 0 {
                let mut cs = word.chars();
                if let Some(c) = cs.next() {
                    out.push(c.to_ascii_uppercase());
                    out.push_str(cs.as_str());
                }
            } else {
                out.push_str(word);
            }
            if rng.one_in(14) {
                out.push(' ');
                prose_number(rng, out);
            } else if rng.one_in(30) {
                out.push(',');
            }
        }
        out.push_str(if rng.one_in(8) { "? " } else { ". " });
    }
    out.push_str("\n\n");
}

/// Appends one number-ish token of the kind prose carries.
fn prose_number(rng: &mut Rng, out: &mut String) {
    let _ = match rng.below(9) {
        0 => write!(out, "{}", rng.range(1, 500)),
        1 => write!(
            out,
            "{}-{:02}-{:02}",
            rng.range(2019, 2026),
            rng.range(1, 12),
            rng.range(1, 28)
        ),
        2 => write!(
            out,
            "${},{:03}.{:02}",
            rng.range(1, 99),
            rng.below(1000),
            rng.below(100)
        ),
        3 => write!(out, "${}.{:02}", rng.range(1, 999), rng.below(100)),
        4 => write!(
            out,
            "v{}.{}.{}",
            rng.range(0, 12),
            rng.below(30),
            rng.below(200)
        ),
        5 => write!(out, "{}%", rng.range(1, 100)),
        6 => write!(
            out,
            "order #{}-{:06}",
            rng.range(2019, 2026),
            rng.below(1_000_000)
        ),
        7 => write!(
            out,
            "{}.{}.{}",
            rng.range(1, 9),
            rng.below(20),
            rng.below(50)
        ),
        _ => write!(out, "Q{} {}", rng.range(1, 4), rng.range(2019, 2026)),
    };
}

const IDENT_PARTS: &[&str] = &[
    "buf", "len", "count", "index", "node", "item", "value", "key", "state", "frame", "header",
    "offset", "parser", "reader", "writer", "cache", "entry", "config", "handle", "result",
    "request", "response", "chunk", "total", "limit", "next", "prev", "pool", "task", "queue",
];
const TYPES: &[&str] = &["u8", "u32", "u64", "usize", "i64", "f64", "bool", "&str"];

/// Appends an identifier built from one to three parts.
fn ident(rng: &mut Rng, out: &mut String, camel: bool) {
    for i in 0..rng.range(1, 3) {
        let part = rng.pick(IDENT_PARTS);
        if i > 0 && camel {
            let mut cs = part.chars();
            if let Some(c) = cs.next() {
                out.push(c.to_ascii_uppercase());
                out.push_str(cs.as_str());
            }
        } else {
            if i > 0 {
                out.push('_');
            }
            out.push_str(part);
        }
    }
}

/// Appends one Rust-like or JS-like function of a few lines.
fn code_block(rng: &mut Rng, out: &mut String) {
    let rust = rng.below(2) == 0;
    out.push_str(if rust { "/// " } else { "// " });
    for _ in 0..rng.range(4, 10) {
        out.push_str(rng.pick(WORDS));
        out.push(' ');
    }
    if rust {
        out.push_str("\npub fn ");
        ident(rng, out, false);
        out.push_str("(input: &[u8], ");
        ident(rng, out, false);
        let _ = writeln!(
            out,
            ": {}) -> Result<{}, Error> {{",
            rng.pick(TYPES),
            rng.pick(TYPES)
        );
    } else {
        out.push_str("\nexport async function ");
        ident(rng, out, true);
        out.push('(');
        ident(rng, out, true);
        out.push_str(", opts = {}) {\n");
    }
    for _ in 0..rng.range(3, 10) {
        out.push_str("    ");
        match rng.below(6) {
            0 => {
                out.push_str(if rust { "let " } else { "const " });
                ident(rng, out, !rust);
                let _ = writeln!(out, " = 0x{:08x};", rng.next() as u32);
            }
            1 => {
                out.push_str("if ");
                ident(rng, out, !rust);
                let _ = writeln!(
                    out,
                    " > {} {{ return {}; }}",
                    rng.range(1, 65536),
                    if rust { "Err(Error::TooLong)" } else { "null" }
                );
            }
            2 => {
                ident(rng, out, !rust);
                out.push_str(" += ");
                ident(rng, out, !rust);
                let _ = writeln!(out, " * {};", rng.range(2, 4096));
            }
            3 => {
                let _ = writeln!(
                    out,
                    "const MAGIC_{}{} = 0x{:016x};",
                    rng.below(10),
                    if rust { ": u64" } else { "" },
                    rng.next()
                );
            }
            4 => {
                out.push_str("for i in 0..");
                ident(rng, out, !rust);
                let _ = writeln!(out, ".len() {{ buf[i] ^= 0x{:02x}; }}", rng.below(256));
            }
            _ => {
                out.push_str(if rust {
                    "log::debug!(\""
                } else {
                    "console.log(\""
                });
                ident(rng, out, !rust);
                let _ = writeln!(
                    out,
                    " took {}ms ({} retries)\");",
                    rng.range(1, 2000),
                    rng.below(5)
                );
            }
        }
    }
    out.push_str(if rust {
        "    Ok(result)\n}\n\n"
    } else {
        "    return result;\n}\n\n"
    });
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends the standard base64 of `n` random bytes (with `=` padding).
fn base64_random(rng: &mut Rng, out: &mut String, n: usize) {
    let mut bytes = Vec::with_capacity(n);
    while bytes.len() < n {
        bytes.extend_from_slice(&rng.next().to_le_bytes());
    }
    bytes.truncate(n);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(v >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
}

/// Appends `n` random lowercase hex digits.
fn hex_random(rng: &mut Rng, out: &mut String, n: usize) {
    let hex = b"0123456789abcdef";
    for _ in 0..n {
        out.push(hex[rng.below(16) as usize] as char);
    }
}

const FILES: &[&str] = &[
    "release.tar.gz",
    "app-x86_64.AppImage",
    "vendor.bundle.js",
    "model.onnx",
    "backup-weekly.zst",
    "setup.exe",
    "index.db",
];

/// Appends a group of hash lines: hex digests, SRI hashes, or a base64 blob.
fn hash_lines(rng: &mut Rng, out: &mut String) {
    match rng.below(4) {
        0 => {
            // sha256sum output.
            for _ in 0..rng.range(4, 12) {
                hex_random(rng, out, 64);
                let _ = writeln!(out, "  {}", rng.pick(FILES));
            }
        }
        1 => {
            // package-lock style integrity fields.
            for _ in 0..rng.range(4, 12) {
                let _ = write!(out, "      \"integrity\": \"sha512-");
                base64_random(rng, out, 64);
                out.push_str("\",\n      \"resolved\": \"sha256-");
                base64_random(rng, out, 32);
                out.push_str("\",\n");
            }
        }
        2 => {
            // git-ish object ids and sha1 digests.
            for _ in 0..rng.range(4, 12) {
                out.push_str("commit ");
                hex_random(rng, out, 40);
                out.push_str(" tree ");
                hex_random(rng, out, 40);
                out.push('\n');
            }
        }
        _ => {
            // A MIME-style base64 blob of random bytes in 76-character lines.
            let mut blob = String::new();
            let n = rng.range(600, 3000) as usize;
            base64_random(rng, &mut blob, n);
            for line in blob.as_bytes().chunks(76) {
                out.push_str(std::str::from_utf8(line).unwrap_or(""));
                out.push('\n');
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Dense customer exports
// ---------------------------------------------------------------------------------------

/// The CSV header line of [`dense`] (without the newline).
const DENSE_HEADER: &str = "customer_id,name,email,phone,card,ssn,iban,city";

/// A customer export CSV: `size` bytes from `seed`, header first, then one customer per
/// row with an id, email, phone, valid card, valid SSN, valid IBAN and city.
pub fn dense(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ 0xd3_25_e0);
    let mut out = String::with_capacity(size + 1024);
    out.push_str(DENSE_HEADER);
    out.push('\n');
    while out.len() < size {
        customer_row(&mut rng, &mut out);
    }
    fit(out.into_bytes(), size)
}

const FIRST: &[&str] = &[
    "james",
    "mary",
    "robert",
    "patricia",
    "john",
    "jennifer",
    "michael",
    "linda",
    "david",
    "elizabeth",
    "william",
    "barbara",
    "richard",
    "susan",
    "joseph",
    "jessica",
    "thomas",
    "sarah",
    "charles",
    "karen",
    "lena",
    "jonas",
    "emma",
    "lukas",
    "sofia",
    "mateo",
    "chloe",
    "noah",
    "amelie",
    "oliver",
    "ines",
    "hugo",
    "priya",
    "arjun",
    "mei",
    "kenji",
    "fatima",
    "omar",
    "zoe",
    "liam",
];
const LAST: &[&str] = &[
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "muller",
    "schmidt",
    "schneider",
    "fischer",
    "weber",
    "dubois",
    "moreau",
    "laurent",
    "rossi",
    "ferrari",
    "kowalski",
    "novak",
    "tanaka",
    "sato",
    "patel",
    "sharma",
    "kim",
    "park",
    "nguyen",
    "okafor",
];
const DOMAINS: &[&str] = &[
    "acme-corp.io",
    "northwind-mail.com",
    "contoso.net",
    "fabrikam.co.uk",
    "globex.de",
    "initech.com",
    "umbrella-corp.org",
    "hooli.xyz",
    "piedpiper.dev",
    "wayne-ent.com",
    "stark-ind.io",
    "mailbox-eu.fr",
];
const CITIES: &[&str] = &[
    "Berlin",
    "Hamburg",
    "Munich",
    "London",
    "Manchester",
    "Paris",
    "Lyon",
    "Madrid",
    "Amsterdam",
    "Chicago",
    "Austin",
    "Seattle",
    "Boston",
    "Denver",
    "Toronto",
    "Dublin",
];

/// Appends one CSV row (with its newline).
fn customer_row(rng: &mut Rng, out: &mut String) {
    let first = rng.pick(FIRST);
    let last = rng.pick(LAST);
    let _ = write!(out, "CUST-{:08},", rng.below(100_000_000));
    for (i, name) in [first, last].iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let mut cs = name.chars();
        if let Some(c) = cs.next() {
            out.push(c.to_ascii_uppercase());
            out.push_str(cs.as_str());
        }
    }
    let _ = write!(
        out,
        ",{first}.{last}{}@{},",
        rng.range(1, 99_999),
        rng.pick(DOMAINS)
    );
    phone(rng, out);
    out.push(',');
    card(rng, out);
    out.push(',');
    ssn(rng, out);
    out.push(',');
    iban(rng, out);
    let _ = writeln!(out, ",{}", rng.pick(CITIES));
}

/// Appends a phone number: NANP in its usual spellings, or an international E.164 form.
fn phone(rng: &mut Rng, out: &mut String) {
    let npa = rng.range(2, 9) * 100 + rng.range(0, 8) * 10 + rng.below(10);
    let nxx = rng.range(2, 9) * 100 + rng.below(100);
    let line = rng.below(10_000);
    let _ = match rng.below(7) {
        0 => write!(out, "({npa}) {nxx}-{line:04}"),
        1 => write!(out, "{npa}-{nxx}-{line:04}"),
        2 => write!(out, "+1 {npa} {nxx} {line:04}"),
        3 => write!(out, "+1-{npa}-{nxx}-{line:04}"),
        4 => write!(
            out,
            "+44 20 7{:03} {:04}",
            rng.below(1000),
            rng.below(10_000)
        ),
        5 => write!(
            out,
            "+49 30 {:04}{:04}",
            rng.range(1000, 9999),
            rng.below(10_000)
        ),
        _ => write!(
            out,
            "+33 1 {:02} {:02} {:02} {:02}",
            rng.below(100),
            rng.below(100),
            rng.below(100),
            rng.below(100)
        ),
    };
}

/// The Luhn check digit that completes `digits` (ASCII digits, without the check digit).
fn luhn_check_digit(digits: &[u8]) -> u8 {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    b'0' + ((10 - sum % 10) % 10) as u8
}

/// Appends a payment card number of a real network (prefix and length), Luhn-valid,
/// plain or grouped with spaces or dashes.
fn card(rng: &mut Rng, out: &mut String) {
    let (prefix, len): (String, usize) = match rng.below(8) {
        0 | 1 => ("4".into(), if rng.one_in(20) { 13 } else { 16 }),
        2 => (format!("5{}", rng.range(1, 5)), 16),
        3 => (format!("{}", rng.range(2221, 2720)), 16),
        4 => (if rng.one_in(2) { "34" } else { "37" }.into(), 15),
        5 => (
            match rng.below(3) {
                0 => "6011".into(),
                1 => "65".into(),
                _ => format!("{}", rng.range(644, 649)),
            },
            16,
        ),
        6 => (format!("{}", rng.range(3528, 3589)), 16),
        _ => match rng.below(2) {
            0 => (format!("{}", rng.range(300, 305)), 14),
            _ => ("62".into(), 16),
        },
    };
    let mut digits: Vec<u8> = prefix.into_bytes();
    while digits.len() < len - 1 {
        digits.push(rng.digit());
    }
    digits.push(luhn_check_digit(&digits));
    let groups: &[usize] = match len {
        15 => &[4, 6, 5],
        14 => &[4, 6, 4],
        16 => &[4, 4, 4, 4],
        _ => &[len],
    };
    let sep = match rng.below(3) {
        0 => None,
        1 => Some(' '),
        _ => Some('-'),
    };
    let mut at = 0;
    for (i, &g) in groups.iter().enumerate() {
        if let (true, Some(s)) = (i > 0, sep) {
            out.push(s);
        }
        for &d in &digits[at..at + g] {
            out.push(d as char);
        }
        at += g;
    }
}

/// Appends a dashed US SSN with a valid area (not 000, 666 or 9xx), group and serial.
fn ssn(rng: &mut Rng, out: &mut String) {
    let area = loop {
        let a = rng.range(1, 899);
        if a != 666 {
            break a;
        }
    };
    let _ = write!(
        out,
        "{area:03}-{:02}-{:04}",
        rng.range(1, 99),
        rng.range(1, 9999)
    );
}

/// `n mod 97` of the decimal expansion of `s` (letters count as 10..35), computed digit
/// by digit so the number never overflows.
fn mod97(s: &[u8]) -> u32 {
    let mut m = 0u32;
    for &c in s {
        if c.is_ascii_digit() {
            m = (m * 10 + u32::from(c - b'0')) % 97;
        } else {
            let v = u32::from(c.to_ascii_uppercase() - b'A') + 10;
            m = (m * 100 + v) % 97;
        }
    }
    m
}

/// Appends an IBAN with valid mod-97 check digits, plain or in groups of four.
fn iban(rng: &mut Rng, out: &mut String) {
    let mut bban = Vec::with_capacity(30);
    let (country, letters, digits): (&[u8], usize, usize) = match rng.below(5) {
        // Germany: 8-digit bank code, 10-digit account.
        0 | 1 => (b"DE", 0, 18),
        // United Kingdom: 4-letter bank, 6-digit sort code, 8-digit account.
        2 => (b"GB", 4, 14),
        // Netherlands: 4-letter bank, 10-digit account.
        3 => (b"NL", 4, 10),
        // France: 23 digits (bank, branch, account, key; all numeric here).
        _ => (b"FR", 0, 23),
    };
    for _ in 0..letters {
        bban.push(b'A' + rng.below(26) as u8);
    }
    for _ in 0..digits {
        bban.push(rng.digit());
    }
    let mut rearranged = bban.clone();
    rearranged.extend_from_slice(country);
    rearranged.extend_from_slice(b"00");
    let check = 98 - mod97(&rearranged);
    let mut iban = Vec::with_capacity(34);
    iban.extend_from_slice(country);
    iban.extend_from_slice(format!("{check:02}").as_bytes());
    iban.extend_from_slice(&bban);
    let spaced = rng.one_in(2);
    for (i, &c) in iban.iter().enumerate() {
        if spaced && i > 0 && i % 4 == 0 {
            out.push(' ');
        }
        out.push(c as char);
    }
}
