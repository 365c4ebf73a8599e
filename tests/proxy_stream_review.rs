//! Red-team review of the streamed-body judging (444975b..894f8a4): what a streamed body's
//! mid-stream verdict leaves out that its final judgement would block on, and streamed
//! bodies inside intercepted HTTP/2.

mod support;

use std::time::Duration;

use support::{Proxy, Upstream, filler, parse_reply, read_to_close};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A small, held POST of `body` through the proxy (`Connection: close`).
async fn post(proxy: std::net::SocketAddr, url: &str, body: &str) -> support::Reply {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let head = format!(
        "POST {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    parse_reply(&read_to_close(&mut s).await)
}

/// `n` distinct emails starting at number `from`, one per line.
fn emails(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("row {i}: person{i}@acme-corp.io\n"))
        .collect()
}

/// Starts a POST to `url` through `proxy` whose body streams past the 64 KiB hold limit:
/// 128 KiB of filler, a pause, `list`, a pause, 64 KiB of filler (each its own write);
/// the body is declared `more` bytes longer, not sent yet.
async fn stream_list(proxy: std::net::SocketAddr, url: &str, list: &str, more: usize) -> TcpStream {
    let first = filler(128 << 10);
    let after = filler(64 << 10);
    let total = first.len() + list.len() + after.len() + more;
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let head = format!(
        "POST {url} HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(list.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(&after).await.unwrap();
    s
}

/// `policy.windows` was applied only in the final judgement ([`decide`]), never to a
/// streamed body's snapshot (`judge_snapshot` evaluated the rules alone; a known gap
/// until session 13). A sender who already sent 9 addresses this hour (allowed) streams 9
/// more past the hold limit: the window (block at 12) blocks them, and the chunks
/// carrying them must not go upstream first (18 distinct customers reached the upstream
/// within the window that promises a block at 12). The block records nothing: the same
/// sender may still send 2 new addresses (11), not a third.
#[tokio::test]
async fn a_window_block_stops_a_streamed_body_before_its_values_go_upstream() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        "limits: { hold_bytes: 64KiB }\n\
         policy: { windows: { span: 1h, thresholds: { email: { block: 12 } } } }\n",
    )
    .await;
    let url = upstream.url("/drip");
    let reply = post(proxy.addr, &url, &emails(0, 9)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // The same sender streams nine more, after the held part, then a little filler and a
    // pause (the body declared 4 MiB longer).
    let mut s = stream_list(proxy.addr, &url, &emails(100, 9), 4 << 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(&filler(64 << 10)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let seen = upstream.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[1].body.len() >= 64 << 10,
        "the filler before the list never went upstream"
    );
    let sent = String::from_utf8_lossy(&seen[1].body)
        .matches("@acme-corp.io")
        .count();
    assert_eq!(
        sent, 0,
        "{sent} addresses the window blocks went upstream before the block (snapshot ignores windows)"
    );
    let reply = tokio::time::timeout(Duration::from_secs(10), read_to_close(&mut s))
        .await
        .expect("blocked mid-stream");
    assert_eq!(parse_reply(&reply).status, 403);
    let reply = post(proxy.addr, &url, &emails(200, 2)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = post(proxy.addr, &url, &emails(300, 1)).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
}

/// The same with the window alone: one streamed request of 8 addresses, the window
/// blocking at 5 (per request the fixture only logs below 10). The final judgement
/// blocked (the window), the snapshot never did, so the 8 reached the upstream
/// mid-stream (until session 13).
#[tokio::test]
async fn a_window_threshold_below_the_rules_blocks_a_streamed_body_before_its_values_leave() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        "limits: { hold_bytes: 64KiB }\n\
         policy: { windows: { span: 1h, thresholds: { email: { block: 5 } } } }\n",
    )
    .await;
    let url = upstream.url("/one");
    // The same 8 addresses held whole are blocked by the window.
    let reply = post(proxy.addr, &upstream.url("/held"), &emails(0, 8)).await;
    assert_eq!(reply.status, 403, "held: {}", reply.text());
    assert!(upstream.requests().is_empty());

    let tail = filler(64 << 10);
    let mut s = stream_list(proxy.addr, &url, &emails(0, 8), tail.len()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mid = upstream.requests();
    // Blocked before it: the proxy may have stopped reading.
    let _ = s.write_all(&tail).await;
    let reply = parse_reply(&read_to_close(&mut s).await);
    // Blocked by the window...
    assert_eq!(reply.status, 403, "{}", reply.text());
    // ... before any of the addresses went upstream.
    for r in &mid {
        let n = String::from_utf8_lossy(&r.body)
            .matches("@acme-corp.io")
            .count();
        assert_eq!(
            n, 0,
            "{n} addresses went upstream before the window's block"
        );
    }
}

/// Offsets where each block of a one-frame zstd stream (no dictionary) starts, and its end.
fn zstd_blocks(z: &[u8]) -> Vec<usize> {
    assert_eq!(&z[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    let fhd = z[4];
    let single = (fhd >> 5) & 1 == 1;
    let fcs = [usize::from(single), 2, 4, 8][usize::from(fhd >> 6)];
    let dict = [0, 1, 2, 4][usize::from(fhd & 3)];
    let mut at = 5 + usize::from(!single) + dict + fcs;
    let mut starts = Vec::new();
    loop {
        starts.push(at);
        let h = u32::from(z[at]) | u32::from(z[at + 1]) << 8 | u32::from(z[at + 2]) << 16;
        let last = h & 1 == 1;
        let kind = (h >> 1) & 3;
        let size = (h >> 3) as usize;
        at += 3 + if kind == 1 { 1 } else { size };
        if last {
            starts.push(at);
            return starts;
        }
    }
}

/// What a zstd decoder makes of `prefix` (a stream cut short).
fn zstd_prefix(prefix: &[u8]) -> Vec<u8> {
    use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
    let mut d = Decoder::new().unwrap();
    let mut out = Vec::new();
    let mut input = InBuffer::around(prefix);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut o = OutBuffer::around(&mut buf[..]);
        d.run(&mut input, &mut o).unwrap();
        let n = o.pos();
        out.extend_from_slice(&buf[..n]);
        if n == 0 && input.pos() == prefix.len() {
            return out;
        }
    }
}

/// A zstd-encoded streamed body: libzstd decodes a compressed block only once all of it
/// has arrived, and holds its first bytes unreported (`Inspection::waiting` counts only a
/// gzip header's and the base64 decoder's bytes). So the chunks carrying the start of the
/// block that holds a list go upstream as the next chunk of the same block arrives, before
/// one value of it was decoded and counted: a chunk goes upstream not covered by a
/// verdict. The block's literals section (the addresses' random local parts) comes first
/// and is readable on its own.
#[tokio::test]
#[ignore = "known gap (README): with hold_bytes under 1 MiB the held-back chunks are capped at hold_bytes, here less than a zstd block and the chunks before it; run with --ignored"]
async fn a_zstd_block_holding_a_list_is_not_sent_before_it_is_decoded() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 64KiB }\n").await;
    // 40 addresses with local parts that do not compress, then text that does not either,
    // so the list's block is long.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Random lower-case words: benign, and they do not compress much.
    let mut words = |n: usize| -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 16);
        while out.len() < n {
            let r = rnd();
            for i in 0..(3 + r % 6) {
                out.push(b'a' + ((r >> (8 + 5 * i)) % 26) as u8);
            }
            out.push(b' ');
        }
        out
    };
    let mut plain = words(256 << 10);
    let mut list = Vec::new();
    let mut locals = Vec::new();
    for i in 0..40 {
        let local: String = words(12)
            .iter()
            .filter(|b| **b != b' ')
            .map(|&b| b as char)
            .collect();
        list.extend_from_slice(format!("{local}{i}@acme-corp.io\n").as_bytes());
        locals.push(local);
    }
    plain.extend_from_slice(&list);
    let more = words(96 << 10);
    plain.extend_from_slice(&more);
    plain.extend_from_slice(&filler(64 << 10));
    let z = zstd::bulk::compress(&plain, 3).unwrap();
    let starts = zstd_blocks(&z);
    // The block the list is decoded from.
    let k = (1..starts.len())
        .find(|&i| String::from_utf8_lossy(&zstd_prefix(&z[..starts[i]])).contains("@acme-corp.io"))
        .unwrap()
        - 1;
    let (from, to) = (starts[k], starts[k + 1]);
    assert!(from > 96 << 10, "the list's block starts at {from}");
    assert!(
        to - from > 8 << 10,
        "the list's block is {} bytes",
        to - from
    );
    assert!(
        !String::from_utf8_lossy(&zstd_prefix(&z[..to - 1])).contains("@acme-corp.io"),
        "the list decodes before its block is whole"
    );
    let third = (to - from) / 3;
    let pieces: [&[u8]; 3] = [
        &z[..from + third],
        &z[from + third..from + 2 * third],
        &z[from + 2 * third..to - 1],
    ];

    let total = z.len() + (4 << 20);
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Encoding: zstd\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n",
        upstream.url("/zstd")
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for piece in pieces {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].body.len() >= 64 << 10, "nothing went upstream");
    let readable = locals
        .iter()
        .filter(|l| seen[0].body.windows(l.len()).any(|w| w == l.as_bytes()))
        .count();
    assert!(
        seen[0].body.len() <= from,
        "{} bytes of the list's block (of {}) went upstream before it was decoded and counted \
         ({readable} of the 40 local parts readable in them)",
        seen[0].body.len().saturating_sub(from),
        to - from
    );
    // The block's end decodes the list: a block.
    s.write_all(&z[to - 1..to]).await.unwrap();
    s.write_all(&filler(1 << 10)).await.unwrap();
    let reply = parse_reply(&read_to_close(&mut s).await);
    assert_eq!(reply.status, 403, "{}", reply.text());
}

/// Review of 702cd80: the snapshot checked a streamed body against what the window had
/// *recorded*, and a streamed body recorded only at its end: values another request of
/// the same sender had in flight were invisible to it. A streamed body passed 9 addresses
/// upstream (window: 0 + 9 < 12), then a held request of 9 others was checked against an
/// empty window and went through whole; the streamed one was blocked at its end, its 9
/// already upstream: 18 distinct addresses from one sender reached the upstream under a
/// window that promises a block at 12. Now a streamed body records its values as they go.
#[tokio::test]
async fn values_in_flight_in_a_streamed_body_count_for_the_window() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        "limits: { hold_bytes: 64KiB }\n\
         policy: { windows: { span: 1h, thresholds: { email: { block: 12 } } } }\n",
    )
    .await;
    let url = upstream.url("/drip");
    let mut s = stream_list(proxy.addr, &url, &emails(100, 9), 64 << 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A second request of the same sender (the same client address), held whole.
    let other = emails(200, 9);
    let mut h = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        other.len()
    );
    h.write_all(head.as_bytes()).await.unwrap();
    h.write_all(other.as_bytes()).await.unwrap();
    let held = parse_reply(&read_to_close(&mut h).await).status;

    let _ = s.write_all(&filler(64 << 10)).await;
    let streamed = parse_reply(&read_to_close(&mut s).await).status;
    let mut distinct = std::collections::HashSet::new();
    for r in upstream.requests() {
        let text = String::from_utf8_lossy(&r.body).into_owned();
        for line in text.lines().filter(|l| l.contains("@acme-corp.io")) {
            distinct.insert(line.to_owned());
        }
    }
    assert!(
        distinct.len() < 12,
        "{} distinct addresses reached the upstream (window blocks at 12); held request {held}, streamed {streamed}",
        distinct.len()
    );
}
