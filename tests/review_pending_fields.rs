//! From the review of b169d5c (decompressor fields past their limit held are pending until
//! the next byte that separates values) and f28bfd3: each failed on the code then; the
//! third is a known gap (README), ignored.

mod support;

use std::time::Duration;

use egress_dlp::decode::{Inspection, Limits};
use egress_dlp::rules;
use egress_dlp::scan::Engine;
use support::{Proxy, Upstream, bodies, fixture_rules, parse_reply, read_to_close};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn engine() -> Engine {
    Engine::new(&rules::load_dir(&fixture_rules()).unwrap())
}

/// A zstd skippable frame holding `content`.
fn skippable(content: &[u8]) -> Vec<u8> {
    let mut s = vec![0x50, 0x2a, 0x4d, 0x18];
    s.extend_from_slice(&(content.len() as u32).to_le_bytes());
    s.extend_from_slice(content);
    s
}

/// A streamed zstd upload (past `hold_bytes`) whose skippable frame of 3 MiB starts with
/// a list of 12 addresses (raw bytes in the body: the frame is not compressed). Before
/// b169d5c the frame's content was scanned as soon as more than 1 MiB of it was held, so
/// the list counted (a block) before the pump's 1 MiB of held-back chunks let its chunk
/// go. Now content past 1 MiB is *pending* until the next separator in the decoded text:
/// inside the frame there is no decoded text at all, so it waits (up to 4 MiB), the pump
/// stops holding back at 1 MiB, and the chunks carrying the list go upstream uncounted.
#[tokio::test]
async fn a_list_in_a_big_skippable_frame_is_counted_before_its_chunks_go_upstream() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 1MiB }\n").await;
    let mut list: Vec<u8> = (0..12)
        .map(|i| format!("row {i}: person{i}@acme-corp.io\n"))
        .collect::<String>()
        .into_bytes();
    list.resize(3 << 20, b' ');
    let mut body = zstd::encode_all(&b"export follows "[..], 3).unwrap();
    body.extend(skippable(&list));
    let frame_end = body.len();
    body.extend(zstd::encode_all(&b"done\n"[..], 3).unwrap());

    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Encoding: zstd\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        upstream.url("/export"),
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // The skippable frame, in 64 KiB chunks, but not the decoded text after it.
    let mut early_403 = false;
    for piece in body[..frame_end].chunks(64 << 10) {
        if s.write_all(piece).await.is_err() {
            early_403 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let seen = upstream.requests();
    let leaked = seen
        .iter()
        .map(|r| {
            String::from_utf8_lossy(&r.body)
                .matches("@acme-corp.io")
                .count()
        })
        .sum::<usize>();
    assert_eq!(
        leaked,
        0,
        "{leaked} addresses went upstream before they were counted ({} body bytes upstream, \
         early 403: {early_403})",
        seen.first().map_or(0, |r| r.body.len())
    );
    let _ = s.write_all(&body[frame_end..]).await;
    let reply = parse_reply(&read_to_close(&mut s).await);
    assert_eq!(reply.status, 403, "{}", reply.text());
}

/// Which fields go pending is decided on `fields_held()`, which counts the skippable
/// frame's *partial* piece (as much of it as the chunk brought): cut 4 bytes into the
/// frame's 17th piece, the 16 whole pieces go pending (in at the next separator) and the
/// last one is held to the content's end; whole, all 17 go pending together. So where the
/// frame's last piece lands in the stream depends on the chunks, and with it what is near
/// it: here a 9-digit number that needs the word "ssn" within 40 bytes (the fixture's
/// `ssn-plain`), found or not depending on where the body was cut. (The same threshold
/// decided what was scanned at once before b169d5c: its parent fails this too.)
#[test]
fn where_pending_fields_go_does_not_depend_on_the_chunks() {
    let e = engine();
    let limits = Limits::default();
    let mut content = vec![b' '; 1 << 20];
    content.extend_from_slice(b"219099999");
    let mut body = zstd::encode_all(&b"x"[..], 3).unwrap();
    let frame_at = body.len();
    body.extend(skippable(&content));
    let mut tail = b",ok ".to_vec();
    tail.extend(std::iter::repeat_n(b'a', 100));
    tail.extend_from_slice(b" ssn");
    body.extend(zstd::encode_all(&tail[..], 3).unwrap());
    let cut = frame_at + 8 + (1 << 20) + 4;
    let mut found = Vec::new();
    for pieces in [vec![&body[..]], vec![&body[..cut], &body[cut..]]] {
        let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), Some(b"zstd"));
        for p in &pieces {
            i.feed(p);
        }
        let o = i.finish();
        assert_eq!(o.not_scanned, None);
        found.push(o.findings.category_distinct("ssn"));
    }
    assert_eq!(
        found[0], found[1],
        "ssn found whole / cut at {cut}: {found:?}"
    );
}

/// The case of `decode_edges::fields_past_the_held_limit_do_not_cut_the_decoded_text`
/// one layer down: the same zstd stream (twelve addresses, each split around a skippable
/// frame of 1.1 MiB) as a MIME-wrapped base64 attachment in a text body. Fed whole, all
/// twelve are found; fed in chunks, none: the run's decoded bytes reach the zstd node a
/// piece at a time with the raw base64 lines emitted in between (another segment, so a
/// line break inside the half-emitted address). Not caused by b169d5c (its parent finds
/// none at any chunking, and holding the fields to the end instead finds none either when
/// chunked), but its fix covers only a decompressor whose text is not interleaved with
/// its parent's raw text.
#[test]
#[ignore = "known gap (README): a compressed stream inside a base64 run in text is cut by the raw lines emitted between its pieces; run with --ignored"]
fn fields_past_the_held_limit_do_not_cut_a_base64_attachments_text() {
    let e = engine();
    let limits = Limits::default();
    let pad = vec![b' '; (1 << 20) + (100 << 10)];
    let mut z = Vec::new();
    for i in 0..12 {
        let head = if i == 0 { "" } else { "corp.io\n" };
        z.extend(zstd::encode_all(format!("{head}row {i}: user{i}@acme-").as_bytes(), 3).unwrap());
        z.extend(skippable(&pad));
    }
    z.extend(zstd::encode_all(&b"corp.io\n"[..], 3).unwrap());
    let wrapped: String = bodies::base64(&z)
        .as_bytes()
        .chunks(76)
        .map(|l| format!("{}\n", std::str::from_utf8(l).unwrap()))
        .collect();
    let body = format!("attachment:\n{wrapped}end\n").into_bytes();
    let mut found = Vec::new();
    for step in [body.len(), 65_536, 7_001] {
        let mut i = Inspection::new(&e, &limits, Some(b"text/plain"), None);
        for piece in body.chunks(step) {
            i.feed(piece);
        }
        let o = i.finish();
        assert_eq!(o.not_scanned, None);
        found.push((step, o.findings.category_distinct("email")));
    }
    assert!(
        found.iter().all(|&(_, n)| n == 12),
        "(chunk size, addresses found): {found:?}"
    );
}
