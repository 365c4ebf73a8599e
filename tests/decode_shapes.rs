//! The decoders through the library's one pipeline ([`Inspection`]) with the fixture rules:
//! every shape a customer export travels in, each fed whole and in many chunk sizes, with
//! the distinct emails found and whether the request counts as not fully scanned.

mod support;

use egress_dlp::decode::{Inspection, Limits, Outcome, Reason};
use egress_dlp::rules;
use egress_dlp::scan::Engine;
use support::bodies::*;
use support::{customer_export, fixture_rules};

fn engine() -> Engine {
    Engine::new(&rules::load_dir(&fixture_rules()).unwrap())
}

fn inspect(
    engine: &Engine,
    limits: &Limits,
    ct: Option<&str>,
    ce: Option<&str>,
    body: &[u8],
    chunk: usize,
) -> Outcome {
    let mut i = Inspection::new(engine, limits, ct.map(str::as_bytes), ce.map(str::as_bytes));
    for piece in body.chunks(chunk.max(1)) {
        i.feed(piece);
    }
    i.finish()
}

struct Case {
    name: &'static str,
    ct: Option<String>,
    ce: Option<&'static str>,
    body: Vec<u8>,
    emails: u64,
    reason: Option<Reason>,
}

fn case(
    name: &'static str,
    ct: Option<&str>,
    ce: Option<&'static str>,
    body: Vec<u8>,
    emails: u64,
) -> Case {
    Case {
        name,
        ct: ct.map(str::to_owned),
        ce,
        body,
        emails,
        reason: None,
    }
}

fn broken(
    name: &'static str,
    ct: Option<&str>,
    ce: Option<&'static str>,
    body: Vec<u8>,
    reason: Reason,
) -> Case {
    Case {
        reason: Some(reason),
        emails: u64::MAX,
        ..case(name, ct, ce, body, 0)
    }
}

fn cases() -> Vec<Case> {
    let export = customer_export(50);
    let e = export.as_bytes();
    let json_export = format!("{{\"rows\":{}}}", json_escaped(&export));
    let b64_json = format!("{{\"file\":\"{}\",\"name\":\"export.csv\"}}", base64(e));
    let part_b64 = {
        let mut b = base64(e).into_bytes();
        // MIME wraps base64 at 76 characters.
        let lines: Vec<&[u8]> = b.chunks(76).collect();
        let wrapped = lines.join(&b"\r\n"[..]);
        b.clear();
        wrapped
    };
    let qp: String = export.replace('@', "=40").replace('\n', "=0A=\r\n");
    let nested = gzip(format!("{{\"data\":\"{}\"}}", base64(&gzip(e))).as_bytes());
    vec![
        case("plain text", Some("text/csv"), None, e.to_vec(), 50),
        case("no content type", None, None, e.to_vec(), 50),
        case("gzip", Some("text/csv"), Some("gzip"), gzip(e), 50),
        case("x-gzip", None, Some("x-gzip"), gzip(e), 50),
        case("deflate (zlib)", None, Some("deflate"), zlib(e), 50),
        case("deflate (raw)", None, Some("deflate"), deflate(e), 50),
        case("br", None, Some("br"), brotli(e), 50),
        case("zstd", None, Some("zstd"), zstd(e), 50),
        case("gzip, br", None, Some("gzip, br"), brotli(&gzip(e)), 50),
        case("identity", None, Some("identity"), e.to_vec(), 50),
        case(
            "gzip members",
            None,
            Some("gzip"),
            [gzip(&e[..e.len() / 2]), gzip(&e[e.len() / 2..])].concat(),
            50,
        ),
        case(
            "form",
            Some("application/x-www-form-urlencoded"),
            None,
            format!("a=1&list={}&b=2", form_encode(&export)).into_bytes(),
            50,
        ),
        case(
            "form keys",
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            None,
            export
                .lines()
                .map(|l| form_encode(l.split(',').nth(2).unwrap()) + "=1")
                .collect::<Vec<_>>()
                .join("&")
                .into_bytes(),
            50,
        ),
        case(
            "multipart csv upload",
            Some(&multipart_type()),
            None,
            multipart(&[
                ("note", None, None, "", b"hello"),
                ("file", Some("export.csv"), Some("text/csv"), "", e),
            ]),
            50,
        ),
        case(
            "multipart base64 part",
            Some(&multipart_type()),
            None,
            multipart(&[(
                "file",
                Some("x.bin"),
                Some("text/csv"),
                "Content-Transfer-Encoding: base64\r\n",
                &part_b64,
            )]),
            50,
        ),
        case(
            "multipart quoted-printable part",
            Some(&multipart_type()),
            None,
            multipart(&[(
                "file",
                None,
                Some("text/plain"),
                "Content-Transfer-Encoding: quoted-printable\r\n",
                qp.as_bytes(),
            )]),
            50,
        ),
        case(
            "multipart json part",
            Some(&multipart_type()),
            None,
            multipart(&[(
                "meta",
                None,
                Some("application/json"),
                "",
                json_export.as_bytes(),
            )]),
            50,
        ),
        case(
            "multipart zip part",
            Some(&multipart_type()),
            None,
            multipart(&[(
                "file",
                Some("export.zip"),
                Some("application/zip"),
                "",
                &zip(&[("export.csv", e)], ZipMethod::Deflated),
            )]),
            50,
        ),
        case(
            "multipart filenames",
            Some(&multipart_type()),
            None,
            multipart(
                &(0..12)
                    .map(|i| {
                        (
                            "f",
                            Some(
                                [
                                    "a@acme-corp.io",
                                    "b@acme-corp.io",
                                    "c@acme-corp.io",
                                    "d@acme-corp.io",
                                    "e@acme-corp.io",
                                    "f@acme-corp.io",
                                    "g@acme-corp.io",
                                    "h@acme-corp.io",
                                    "i@acme-corp.io",
                                    "j@acme-corp.io",
                                    "k@acme-corp.io",
                                    "l@acme-corp.io",
                                ][i],
                            ),
                            None,
                            "",
                            &b"x"[..],
                        )
                    })
                    .collect::<Vec<_>>(),
            ),
            12,
        ),
        case(
            "json \\u0040",
            Some("application/json"),
            None,
            json_export.clone().into_bytes(),
            50,
        ),
        case(
            "json +json type",
            Some("application/vnd.api+json"),
            None,
            json_export.clone().into_bytes(),
            50,
        ),
        case(
            "base64 in json",
            Some("application/json"),
            None,
            b64_json.clone().into_bytes(),
            50,
        ),
        case(
            "base64url in json",
            Some("application/json"),
            None,
            format!("{{\"f\":\"{}\"}}", base64url(e)).into_bytes(),
            50,
        ),
        case(
            "base64 in text",
            Some("text/plain"),
            None,
            format!("see attached:\n{}\nbye", base64(e)).into_bytes(),
            50,
        ),
        case(
            "base64 in form",
            Some("application/x-www-form-urlencoded"),
            None,
            format!("f={}", form_encode(&base64(e))).into_bytes(),
            50,
        ),
        case(
            "zip stored",
            Some("application/zip"),
            None,
            zip(&[("a.csv", e)], ZipMethod::Stored),
            50,
        ),
        case(
            "zip deflated",
            Some("application/octet-stream"),
            None,
            zip(
                &[("a.txt", b"hi"), ("b/export.csv", e)],
                ZipMethod::Deflated,
            ),
            50,
        ),
        case(
            "zip with data descriptors",
            None,
            None,
            zip(&[("export.csv", e)], ZipMethod::DeflatedWithDescriptor),
            50,
        ),
        case(
            "xlsx shared strings",
            Some("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            None,
            xlsx(&export),
            50,
        ),
        case(
            "zip in gzip",
            None,
            Some("gzip"),
            gzip(&zip(&[("export.csv", e)], ZipMethod::Deflated)),
            50,
        ),
        case(
            "base64 in json in gzip",
            Some("application/json"),
            Some("gzip"),
            gzip(b64_json.as_bytes()),
            50,
        ),
        // gzip (1) > JSON (2) > base64 (3) > gzip found inside (4): one layer too deep.
        broken(
            "too deep",
            Some("application/json"),
            Some("gzip"),
            nested,
            Reason::Depth,
        ),
        broken(
            "corrupt gzip",
            None,
            Some("gzip"),
            b"this is not gzip at all, alice@acme-corp.io".to_vec(),
            Reason::Corrupt,
        ),
        broken(
            "truncated gzip",
            None,
            Some("gzip"),
            gzip(e)[..200].to_vec(),
            Reason::Corrupt,
        ),
        broken(
            "corrupt br",
            None,
            Some("br"),
            b"\xff\xff\xff\xff not brotli".to_vec(),
            Reason::Corrupt,
        ),
        broken(
            "corrupt zstd",
            None,
            Some("zstd"),
            b"\x28\xb5\x2f\xfd\xff\xff\xff garbage".to_vec(),
            Reason::Corrupt,
        ),
        broken(
            "unknown encoding",
            None,
            Some("compress"),
            e.to_vec(),
            Reason::Unsupported,
        ),
        broken(
            "multipart without boundary",
            Some("multipart/form-data"),
            None,
            e.to_vec(),
            Reason::Corrupt,
        ),
        broken(
            "multipart cut short",
            Some(&multipart_type()),
            None,
            multipart(&[("f", None, None, "", e)])[..300].to_vec(),
            Reason::Corrupt,
        ),
        broken(
            "zip cut short",
            None,
            None,
            zip(&[("a.csv", e)], ZipMethod::Deflated)[..120].to_vec(),
            Reason::Corrupt,
        ),
        broken(
            "encrypted zip entry",
            None,
            None,
            {
                let mut z = zip(&[("a.csv", e)], ZipMethod::Stored);
                z[6] |= 1;
                z
            },
            Reason::Unsupported,
        ),
    ]
}

#[test]
fn every_shape_yields_the_export_whatever_the_chunking() {
    let engine = engine();
    let limits = Limits::default();
    for c in cases() {
        for chunk in [usize::MAX, 1 << 16, 4096, 333, 64, 7, 1] {
            if chunk == 1 && c.body.len() > 20_000 {
                continue;
            }
            let out = inspect(&engine, &limits, c.ct.as_deref(), c.ce, &c.body, chunk);
            let got = out.findings.category_distinct("email");
            match c.reason {
                None => {
                    assert_eq!(out.not_scanned, None, "{} (chunks of {chunk})", c.name);
                    assert_eq!(got, c.emails, "{} (chunks of {chunk})", c.name);
                }
                Some(reason) => {
                    let n = out
                        .not_scanned
                        .as_ref()
                        .unwrap_or_else(|| panic!("{}: fully scanned", c.name));
                    assert_eq!(n.reason, reason, "{} (chunks of {chunk}): {n}", c.name);
                }
            }
        }
    }
}

#[test]
fn the_same_value_in_two_layers_counts_once() {
    let engine = engine();
    let limits = Limits::default();
    let export = customer_export(10);
    // The same ten addresses raw and in base64: ten, not twenty.
    let twice = format!("{export}\n{}", base64(export.as_bytes()));
    let out = inspect(
        &engine,
        &limits,
        Some("text/plain"),
        None,
        twice.as_bytes(),
        1000,
    );
    assert_eq!(out.findings.category_distinct("email"), 10);
    // Five raw and five others in base64: ten.
    let first: String = export.lines().take(5).map(|l| format!("{l}\n")).collect();
    let rest: String = export.lines().skip(5).map(|l| format!("{l}\n")).collect();
    let split = format!("{first}\n{{\"x\":\"{}\"}}", base64(rest.as_bytes()));
    let out = inspect(
        &engine,
        &limits,
        Some("application/json"),
        None,
        split.as_bytes(),
        1000,
    );
    assert_eq!(out.findings.category_distinct("email"), 10);
    // Across a multipart body's parts and its JSON strings.
    let body = multipart(&[
        ("a", None, None, "", first.as_bytes()),
        (
            "b",
            None,
            Some("application/json"),
            "",
            json_escaped(&export).as_bytes(),
        ),
    ]);
    let out = inspect(&engine, &limits, Some(&multipart_type()), None, &body, 1000);
    assert_eq!(out.findings.category_distinct("email"), 10);
}

#[test]
fn benign_shapes_find_nothing_and_are_fully_scanned() {
    let engine = engine();
    let limits = Limits::default();
    let text = "quarterly numbers look fine; see the dashboard. ".repeat(200);
    let t = text.as_bytes();
    let form = "application/x-www-form-urlencoded";
    let json = "application/json";
    let shapes = vec![
        case("gzip", None, Some("gzip"), gzip(t), 0),
        case(
            "form",
            Some(form),
            None,
            format!("q={}", form_encode(&text)).into_bytes(),
            0,
        ),
        case(
            "multipart",
            Some(&multipart_type()),
            None,
            multipart(&[("f", Some("notes.txt"), Some("text/plain"), "", t)]),
            0,
        ),
        case(
            "json",
            Some(json),
            None,
            format!("{{\"t\":{}}}", json_escaped(&text)).into_bytes(),
            0,
        ),
        case(
            "base64",
            Some(json),
            None,
            format!("{{\"t\":\"{}\"}}", base64(t)).into_bytes(),
            0,
        ),
        case(
            "zip",
            None,
            None,
            zip(&[("notes.txt", t)], ZipMethod::Deflated),
            0,
        ),
        // A sha256 hex digest and a long lowercase word are not taken for base64.
        case(
            "hex",
            Some("text/plain"),
            None,
            format!("{} {}", "ab12".repeat(16), "x".repeat(100)).into_bytes(),
            0,
        ),
    ];
    for c in shapes {
        let out = inspect(&engine, &limits, c.ct.as_deref(), c.ce, &c.body, 4096);
        assert_eq!(out.not_scanned, None, "{}", c.name);
        assert_eq!(
            out.findings.category_distinct("email"),
            c.emails,
            "{}",
            c.name
        );
    }
}

#[test]
fn limits_stop_decoding_with_their_reason() {
    let engine = engine();
    let export = customer_export(50);
    let e = export.as_bytes();
    // Decoded bytes: a 2 MiB gzip body against a 1 MiB limit (ratio allowed).
    let big = gzip(&e.repeat(2 << 20 >> 11));
    let limits = Limits {
        max_decoded_bytes: 1 << 20,
        max_ratio: u64::MAX / 2,
        ..Limits::default()
    };
    let out = inspect(&engine, &limits, None, Some("gzip"), &big, 1 << 16);
    assert_eq!(
        out.not_scanned.map(|n| n.reason),
        Some(Reason::DecodedBytes)
    );
    // What was decoded before the limit was still scanned.
    assert_eq!(out.findings.category_distinct("email"), 50);

    // Ratio: 64 MiB of zeros compress about a thousand times.
    let bomb = gzip_zeros(64 << 20);
    let out = inspect(
        &engine,
        &Limits::default(),
        None,
        Some("gzip"),
        &bomb,
        1 << 16,
    );
    let n = out.not_scanned.unwrap();
    assert_eq!(n.reason, Reason::Ratio, "{n}");

    // Archive entries: 20 entries against a limit of 5.
    let entries: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("{i}.txt"), b"x".to_vec()))
        .collect();
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    let limits = Limits {
        max_archive_entries: 5,
        ..Limits::default()
    };
    let out = inspect(
        &engine,
        &limits,
        None,
        None,
        &zip(&refs, ZipMethod::Stored),
        4096,
    );
    assert_eq!(
        out.not_scanned.map(|n| n.reason),
        Some(Reason::ArchiveEntries)
    );

    // Depth: base64 in JSON is two layers; a limit of 1 stops at the base64.
    let limits = Limits {
        max_depth: 1,
        ..Limits::default()
    };
    let body = format!("{{\"f\":\"{}\"}}", base64(e));
    let out = inspect(
        &engine,
        &limits,
        Some("application/json"),
        None,
        body.as_bytes(),
        4096,
    );
    assert_eq!(out.not_scanned.map(|n| n.reason), Some(Reason::Depth));
}

#[test]
fn corrupt_input_is_still_scanned_raw() {
    let engine = engine();
    // A body that claims gzip but is plain text: not fully scanned, and its text scanned.
    let export = customer_export(12);
    let out = inspect(
        &engine,
        &Limits::default(),
        None,
        Some("gzip"),
        export.as_bytes(),
        100,
    );
    assert_eq!(out.not_scanned.map(|n| n.reason), Some(Reason::Corrupt));
    assert_eq!(out.findings.category_distinct("email"), 12);
}

#[test]
fn target_and_headers_are_scanned() {
    let engine = engine();
    let export = customer_export(12);
    let mut i = Inspection::new(&engine, &Limits::default(), None, None);
    let emails: Vec<&str> = export
        .lines()
        .map(|l| l.split(',').nth(2).unwrap())
        .collect();
    i.feed_target(format!("/p?to={}", form_encode(&emails[..4].join(","))).as_bytes());
    i.feed_header(format!("https://x.example/?cc={}", emails[4..8].join("%2C")).as_bytes());
    i.feed_header(base64(emails[8..].join(" ").as_bytes()).as_bytes());
    // Padding the base64 past 64 characters is not needed: four addresses are enough.
    let out = i.finish();
    assert_eq!(out.findings.category_distinct("email"), 12);
}

#[test]
fn a_gzip_guessed_from_magic_bytes_that_does_not_decode_is_scanned_as_it_is() {
    let engine = engine();
    let export = customer_export(12);
    // Content that opens with the gzip magic but is not gzip: scanned as it is (the magic
    // bytes included), fully — a guess that fails is not a broken encoding.
    let mut body = b"\x1f\x8b\x08 not really gzip\n".to_vec();
    body.extend_from_slice(export.as_bytes());
    for chunk in [1, 7, 4096] {
        let out = inspect(&engine, &Limits::default(), None, None, &body, chunk);
        assert_eq!(out.not_scanned, None, "chunk {chunk}");
        assert_eq!(out.findings.category_distinct("email"), 12, "chunk {chunk}");
    }
    // The same inside a base64 blob in text (random binary decoded from base64 starts
    // with these bytes now and then): no problem recorded, the text scanned.
    let mut blob = b"\x1f\x8b\x08\xff\xff garbage that does not inflate ".to_vec();
    blob.extend((0..200u8).map(|b| b.wrapping_mul(37)));
    let text = format!("attachment: {}\n{export}", base64(&blob));
    let out = inspect(
        &engine,
        &Limits::default(),
        Some("text/plain"),
        None,
        text.as_bytes(),
        100,
    );
    assert_eq!(out.not_scanned, None);
    assert_eq!(out.findings.category_distinct("email"), 12);
    // A declared gzip that is broken is still a broken encoding.
    let out = inspect(&engine, &Limits::default(), None, Some("gzip"), &body, 100);
    assert_eq!(out.not_scanned.map(|n| n.reason), Some(Reason::Corrupt));
}

/// Base64 values one after another in a text, one per line or side by side (the sniffer
/// reuses one run's state for the next): each decodes from its own start, whatever came
/// before it — padded, unpadded (a line ending inside a group of four must not shift the
/// next line: before this was fixed, three of these twelve values were lost), holding JSON
/// (which gets a node of its own), or a hex digest that is not decoded at all.
#[test]
fn consecutive_base64_runs_each_decode_from_their_own_start() {
    let engine = engine();
    let mut text = String::from("attachments:\n");
    for i in 0..12 {
        let value = format!("row {i}: user{i}@acme-corp.io with some text around it");
        let run = match i % 4 {
            0 => base64(value.as_bytes()),
            1 => base64(value.as_bytes()).trim_end_matches('=').to_string(),
            2 => base64(format!("{{\"e\":\"{value}\",\"n\":{i}}}").as_bytes()),
            _ => format!(
                "{}\n{}",
                "0123456789abcdef".repeat(5),
                base64(value.as_bytes())
            ),
        };
        text.push_str(&run);
        text.push_str(if i % 2 == 0 { " , " } else { "\n" });
    }
    let chunks = [1, 2, 3, 4, 5, 8, 37, 64, 100, 4096];
    text_finds_emails(&engine, text.as_bytes(), &chunks, 12, "");
}

/// `text` as `text/plain`, fed in pieces of each of `chunks` bytes: fully scanned, and
/// `emails` distinct emails found each time (`what` names the case in a failure).
fn text_finds_emails(engine: &Engine, text: &[u8], chunks: &[usize], emails: u64, what: &str) {
    for &chunk in chunks {
        let out = inspect(
            engine,
            &Limits::default(),
            Some("text/plain"),
            None,
            text,
            chunk,
        );
        assert_eq!(out.not_scanned, None, "{what} chunk {chunk}");
        assert_eq!(
            out.findings.category_distinct("email"),
            emails,
            "{what} chunk {chunk}"
        );
    }
}

/// A customer export in base64 wrapped at 70 columns (as `base64 -w 70` or an SSH key
/// file), inside text, fed in pieces of every size: the lines join into one stream, also
/// when a run's first symbols arrive in an earlier piece than the rest of its first line.
#[test]
fn base64_wrapped_at_seventy_columns_joins_in_any_pieces() {
    let engine = engine();
    let export = customer_export(12);
    let encoded = base64(export.as_bytes());
    let wrapped: Vec<&str> = encoded
        .as_bytes()
        .chunks(70)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    for eol in ["\n", "\r\n"] {
        let text = format!("key file:{eol}{}{eol}end{eol}", wrapped.join(eol));
        let chunks = [1, 2, 3, 7, 63, 64, 65, 100, 4096];
        text_finds_emails(&engine, text.as_bytes(), &chunks, 12, &format!("{eol:?}"));
    }
}
