//! UTF-16 text without a byte-order mark: `iconv -f UTF-8 -t UTF-16LE customers.csv`,
//! .NET's `Encoding.Unicode.GetBytes`, Java's `StandardCharsets.UTF_16LE` write none, and
//! sent without a `charset` the list's raw bytes have a zero after every character: no
//! rule matched, and it passed whole (a known gap until session 15). Content whose first
//! two characters are ASCII in UTF-16 is now transcoded too. Blocked shapes assert 403
//! and that the upstream received nothing; benign ones, the bytes as sent.

mod support;

use support::bodies::{BOUNDARY, multipart};
use support::{Upstream, assert_blocked, send, shipped_proxy};

fn customers(n: usize) -> String {
    let mut s = String::from("id,name,email\r\n");
    for i in 0..n {
        s.push_str(&format!("{i},Customer {i},customer{i}@acme-corp.io\r\n"));
    }
    s
}

fn utf16(text: &str, little_endian: bool) -> Vec<u8> {
    text.encode_utf16()
        .flat_map(|u| {
            if little_endian {
                u.to_le_bytes()
            } else {
                u.to_be_bytes()
            }
        })
        .collect()
}

#[tokio::test]
async fn an_unmarked_utf16_export_is_blocked_as_a_body_and_as_an_upload() {
    let upstream = Upstream::start().await;
    let (proxy, _d) = shipped_proxy().await;
    for little_endian in [true, false] {
        let body = utf16(&customers(12), little_endian);
        for ct in ["application/octet-stream", "text/csv", "text/plain"] {
            let (s, seen) = send(
                &upstream,
                &proxy,
                "PUT",
                "/files/c.csv",
                &[("Content-Type", ct)],
                &body,
            )
            .await;
            assert_blocked(s, &seen, &format!("UTF-16 (LE {little_endian}) as {ct}"));
        }
        let form = multipart(&[
            ("note", None, None, "", b"monthly export"),
            ("file", Some("customers.csv"), Some("text/csv"), "", &body),
        ]);
        let ct = format!("multipart/form-data; boundary={BOUNDARY}");
        let (s, seen) = send(
            &upstream,
            &proxy,
            "POST",
            "/upload",
            &[("Content-Type", &ct)],
            &form,
        )
        .await;
        assert_blocked(
            s,
            &seen,
            &format!("UTF-16 (LE {little_endian}) in a multipart upload"),
        );
    }
}

#[tokio::test]
async fn the_count_is_the_same_however_the_body_is_cut() {
    let engine = support::fixture_engine();
    let body = utf16(&customers(12), true);
    for step in [1, 2, 3, 5, 64, 4096] {
        let pieces: Vec<&[u8]> = body.chunks(step).collect();
        assert_eq!(
            support::inspected_distinct(&engine, None, &pieces, "email"),
            12,
            "step {step}"
        );
    }
}

#[tokio::test]
async fn benign_utf16_and_binary_arrive_byte_for_byte() {
    let upstream = Upstream::start().await;
    let (proxy, _d) = shipped_proxy().await;
    // Release notes in UTF-16 with one support address; a Windows executable's first
    // bytes (`MZ`, then zeros); a little-endian integer table that starts like UTF-16.
    let notes = utf16(
        "Release 4.2\r\nContact support@acme-corp.io for help.\r\n",
        true,
    );
    let mut exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00".to_vec();
    exe.extend((0..4000u32).map(|i| (i % 251) as u8));
    let ints: Vec<u8> = (0x41u16..0x41 + 2000)
        .flat_map(|n| (n % 0x5e + 0x20).to_le_bytes())
        .collect();
    for (k, body) in [notes, exe, ints].into_iter().enumerate() {
        let (s, seen) = send(
            &upstream,
            &proxy,
            "POST",
            "/b",
            &[("Content-Type", "application/octet-stream")],
            &body,
        )
        .await;
        assert_eq!(s, 200, "body {k}");
        assert_eq!(seen.len(), k + 1);
        assert_eq!(seen[k].body, body, "body {k}");
    }
}
