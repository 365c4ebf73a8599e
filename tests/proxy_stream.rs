//! Bodies over the hold limit: streamed through as they are scanned, aborted before their
//! end when they carry a customer list, or refused outright with `oversize: block`.
//! (A 1 MiB hold limit keeps the tests quick; the mechanism is the same at the default
//! 16 MiB.) The biggest uploads are generated on the fly and checked at the upstream by
//! length and digest, so no test holds them in memory.

mod support;

use std::net::SocketAddr;

use support::{
    Digest, Proxy, Reply, Upstream, customer_export, filler, parse_reply, read_to_close,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const UPLOAD: usize = 20 << 20;

/// Bytes in one generated line.
const LINE: usize = 64;

/// A benign upload generated on the fly: numbered lines of filler text (so that a lost,
/// repeated or reordered piece changes the digest), `len` bytes in all, with `insert`
/// written over it at an offset.
struct Generated {
    len: usize,
    insert: Option<(usize, Vec<u8>)>,
}

impl Generated {
    fn benign(len: usize) -> Generated {
        Generated { len, insert: None }
    }

    fn with(len: usize, at: usize, bytes: &[u8]) -> Generated {
        assert!(at + bytes.len() <= len);
        Generated {
            len,
            insert: Some((at, bytes.to_vec())),
        }
    }

    /// The bytes in `start..end`.
    fn piece(&self, start: usize, end: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(end - start + LINE);
        for n in start / LINE..end.div_ceil(LINE) {
            // 8 hex digits, a space, 54 letters, a newline: nothing any rule matches.
            out.extend_from_slice(
                format!("{n:08x} lorem ipsum dolor sit amet, consectetur adipiscing eli\n")
                    .as_bytes(),
            );
        }
        let skip = start % LINE;
        out.drain(..skip);
        out.truncate(end - start);
        if let Some((at, bytes)) = &self.insert {
            let (from, to) = ((*at).max(start), (at + bytes.len()).min(end));
            if from < to {
                out[from - start..to - start].copy_from_slice(&bytes[from - at..to - at]);
            }
        }
        out
    }
}

/// What the client of [`upload_generated`] got and sent.
struct Sent {
    reply: Reply,
    /// Body bytes written before the writing stopped (all of them, unless the proxy
    /// answered and closed first).
    written: u64,
    /// Digest of those bytes.
    digest: u64,
}

/// POSTs a generated body with a Content-Length, in 64 KiB pieces, writing and reading at
/// the same time.
async fn upload_generated(proxy: SocketAddr, url: &str, body: Generated) -> Sent {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let head = format!(
        "POST {url} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len
    );
    let writer = tokio::spawn(async move {
        let mut digest = Digest::default();
        let mut written = 0u64;
        if w.write_all(head.as_bytes()).await.is_err() {
            return (w, written, digest.value());
        }
        let mut at = 0;
        while at < body.len {
            let end = (at + (64 << 10)).min(body.len);
            let piece = body.piece(at, end);
            // The proxy may answer and close before it has read everything: that is fine.
            if w.write_all(&piece).await.is_err() {
                break;
            }
            digest.update(&piece);
            written += piece.len() as u64;
            at = end;
        }
        // The write half is returned, not dropped: dropping it would half-close the
        // connection before the answer is read.
        (w, written, digest.value())
    });
    let mut raw = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut raw)
        .await
        .ok();
    let (w, written, digest) = writer.await.unwrap();
    drop(w);
    Sent {
        reply: parse_reply(&raw),
        written,
        digest,
    }
}

/// The distinct count the block page gives for `category` (`at least ` allowed).
fn page_distinct(reply: &Reply, category: &str) -> u64 {
    let text = reply.text();
    let prefix = format!("<li>{category}: ");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {category} line in {text}"));
    let line = line.strip_prefix("at least ").unwrap_or(line);
    line.split(' ').next().unwrap().parse().unwrap()
}

/// POSTs `body` with a Content-Length, writing and reading at the same time.
async fn upload(proxy: SocketAddr, url: &str, body: Vec<u8>) -> Reply {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let head = format!(
        "POST {url} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let writer = tokio::spawn(async move {
        // The proxy may answer and close before it has read everything: that is fine.
        let _ = w.write_all(head.as_bytes()).await;
        let _ = w.write_all(&body).await;
        w
    });
    let mut raw = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut raw)
        .await
        .ok();
    drop(writer.await.unwrap());
    parse_reply(&raw)
}

#[tokio::test]
async fn a_large_benign_upload_streams_through_whole() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 1MiB }").await;
    let body = filler(UPLOAD);
    let reply = upload(proxy.addr, &upstream.url("/big"), body.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), format!("ok {UPLOAD}"));
    let seen = upstream.requests();
    assert!(seen[0].complete);
    assert!(seen[0].body == body, "the upstream got different bytes");
}

#[tokio::test]
async fn a_200_mb_benign_upload_streams_through_intact() {
    const LEN: usize = 200_000_000;
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 1MiB }").await;
    let sent = upload_generated(proxy.addr, &upstream.url("/big"), Generated::benign(LEN)).await;
    assert_eq!(sent.reply.status, 200, "{}", sent.reply.text());
    assert_eq!(sent.reply.text(), format!("ok {LEN}"));
    assert_eq!(sent.written, LEN as u64);
    let seen = upstream.requests();
    assert!(seen[0].complete);
    assert_eq!(seen[0].received, LEN as u64);
    assert_eq!(
        seen[0].digest, sent.digest,
        "the upstream got different bytes"
    );
}

#[tokio::test]
async fn a_customer_list_early_in_a_large_upload_aborts_it_early() {
    const LEN: usize = 50 << 20;
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 1MiB }").await;
    // Past the hold limit, so the start of the body has already gone upstream.
    let export = customer_export(50);
    let body = Generated::with(LEN, 3 << 20, export.as_bytes());
    let sent = upload_generated(proxy.addr, &upstream.url("/exfil"), body).await;
    assert_eq!(sent.reply.status, 403, "{}", sent.reply.text());
    // Decided on a snapshot part-way: the page says so, with a lower bound.
    assert!(sent.reply.text().contains("stopped before its end"));
    assert!(page_distinct(&sent.reply, "email") >= 10);
    for r in upstream.aborted_if_any().await {
        assert!(
            r.received < (LEN / 2) as u64,
            "the upstream received {} of {LEN} bytes",
            r.received
        );
    }
}

#[tokio::test]
async fn a_customer_list_at_the_very_end_of_a_large_upload_still_aborts_it() {
    const LEN: usize = 4 << 20;
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 1MiB }").await;
    let export = customer_export(50);
    let body = Generated::with(LEN, LEN - export.len(), export.as_bytes());
    let sent = upload_generated(proxy.addr, &upstream.url("/exfil"), body).await;
    assert_eq!(sent.reply.status, 403, "{}", sent.reply.text());
    assert_eq!(sent.written, LEN as u64);
    // A snapshot verdict may come while the list is only partly scanned.
    assert!(page_distinct(&sent.reply, "email") >= 10);
    for r in upstream.aborted_if_any().await {
        assert!(r.received < LEN as u64);
    }
}

#[tokio::test]
async fn a_customer_list_within_the_held_bytes_of_a_large_upload_sends_nothing() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 1MiB }").await;
    let export = customer_export(50);
    let body = Generated::with(8 << 20, 100 << 10, export.as_bytes());
    let sent = upload_generated(proxy.addr, &upstream.url("/exfil"), body).await;
    assert_eq!(sent.reply.status, 403, "{}", sent.reply.text());
    assert!(sent.reply.text().contains("Nothing was sent"));
    assert_eq!(upstream.connections(), 0, "the upstream was contacted");
}

#[test]
fn generated_pieces_join_up() {
    let body = Generated::with(1000, 130, b"XYZ");
    let whole = body.piece(0, 1000);
    assert_eq!(whole.len(), 1000);
    assert_eq!(&whole[130..133], b"XYZ");
    assert_eq!(&whole[64..73], b"00000001 ");
    let parts: Vec<u8> = [(0, 7), (7, 131), (131, 640), (640, 1000)]
        .iter()
        .flat_map(|&(a, b)| body.piece(a, b))
        .collect();
    assert_eq!(parts, whole);
}

#[tokio::test]
async fn oversize_block_refuses_a_declared_large_body_with_413() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 1MiB, oversize: block }").await;
    let reply = upload(proxy.addr, &upstream.url("/big"), filler(4 << 20)).await;
    assert_eq!(reply.status, 413);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn oversize_block_refuses_a_large_chunked_body_with_413() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 1MiB, oversize: block }").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        upstream.url("/big")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = filler(64 << 10);
    // 1.5 MiB: over the limit, and the proxy answers without waiting for the end.
    for _ in 0..24 {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        stream.write_all(&chunk).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
    }
    let reply = parse_reply(&read_to_close(&mut stream).await);
    assert_eq!(reply.status, 413);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_body_exactly_at_the_hold_limit_is_held_and_blocked_whole() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 64KiB }").await;
    let mut body = filler(64 << 10);
    let export = customer_export(10);
    let end = body.len();
    body[end - export.len()..].copy_from_slice(export.as_bytes());
    let reply = upload(proxy.addr, &upstream.url("/edge"), body).await;
    assert_eq!(reply.status, 403);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_client_that_leaves_mid_upload_leaves_the_upstream_request_incomplete() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 1MiB }").await;
    let body = Generated::benign(8 << 20);
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        upstream.url("/gone"),
        body.len
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Past the hold limit, so the upstream request has started.
    stream.write_all(&body.piece(0, 3 << 20)).await.unwrap();
    upstream
        .wait_for(|s| s.len() == 1 && s[0].received > 0)
        .await;
    drop(stream);
    let seen = upstream.wait_for(|s| s.len() == 1 && s[0].aborted).await;
    assert!(!seen[0].complete);
    assert!(seen[0].received < body.len as u64);
}

#[tokio::test]
async fn a_client_that_reads_only_after_writing_its_whole_upload_gets_the_block_page() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 1MiB }").await;
    let export = customer_export(50);
    let body = Generated::with(32 << 20, 2 << 20, export.as_bytes());
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        upstream.url("/exfil"),
        body.len
    );
    // Like many simple clients, this one writes the whole request before it reads. The
    // proxy answers part-way through: closing then, with the rest of the upload unread,
    // would reset the connection and the client would get an error instead of the page.
    // The proxy reads and discards the rest instead (a lingering close).
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut at = 0;
    while at < body.len {
        let end = (at + (64 << 10)).min(body.len);
        stream
            .write_all(&body.piece(at, end))
            .await
            .expect("the proxy reset the connection while the client was still sending");
        at = end;
    }
    let mut raw = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut raw)
        .await
        .expect("the connection ended with an error rather than a clean close");
    let reply = parse_reply(&raw);
    assert_eq!(reply.status, 403, "{}", reply.text());
    upstream.aborted_if_any().await;
}

#[tokio::test]
async fn lingering_after_an_early_answer_is_bounded_by_the_linger_time() {
    let upstream = Upstream::start().await;
    let proxy =
        Proxy::start("limits: { hold_bytes: 1MiB, oversize: block, linger_time: 300ms }").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        upstream.url("/big"),
        100 << 20
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The 413 comes at once; the client then trickles its body and never finishes.
    let started = tokio::time::Instant::now();
    let mut cut = false;
    while started.elapsed() < std::time::Duration::from_secs(5) {
        if stream.write_all(&[b'x'; 1024]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(cut, "the proxy was still reading after 5 s");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

#[tokio::test]
async fn bodies_wait_for_the_hold_budget_and_get_503_when_it_stays_spent() {
    let upstream = Upstream::start().await;
    let proxy =
        Proxy::start("limits: { hold_bytes: 1MiB, hold_total: 1MiB, hold_wait: 300ms }").await;
    // A holds the whole budget: it declares 1 MiB and sends only part of it.
    let first = Generated::benign(1 << 20);
    let mut a = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        upstream.url("/a"),
        first.len
    );
    a.write_all(head.as_bytes()).await.unwrap();
    a.write_all(&first.piece(0, 100 << 10)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    // B finds no room within the hold wait: 503, and nothing reaches the upstream.
    let started = tokio::time::Instant::now();
    let b = support::request(proxy.addr, "POST", &upstream.url("/b"), &[], b"small body").await;
    assert_eq!(b.status, 503, "{}", b.text());
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    // A body-less request needs no room.
    let get = support::request(proxy.addr, "GET", &upstream.url("/get"), &[], b"").await;
    assert_eq!(get.status, 200, "{}", get.text());

    // A finishes and gives its room back; C gets through.
    a.write_all(&first.piece(100 << 10, first.len))
        .await
        .unwrap();
    let reply = parse_reply(&read_to_close(&mut a).await);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let c = support::request(proxy.addr, "POST", &upstream.url("/c"), &[], b"small body").await;
    assert_eq!(c.status, 200, "{}", c.text());
    let targets: Vec<String> = upstream.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/get", "/a", "/c"]);
}

#[tokio::test]
async fn a_chunked_upload_with_a_customer_list_is_aborted_with_its_chunking_unfinished() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 1MiB }").await;
    let export = customer_export(50);
    let body = Generated::with(16 << 20, 2 << 20, export.as_bytes());
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        upstream.url("/exfil")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Every chunk is written whole (the proxy lingers rather than resetting), then the
    // terminating chunk.
    let mut at = 0;
    while at < body.len {
        let end = (at + (64 << 10)).min(body.len);
        let piece = body.piece(at, end);
        stream
            .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .await
            .unwrap();
        stream.write_all(&piece).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
        at = end;
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let reply = parse_reply(&read_to_close(&mut stream).await);
    assert_eq!(reply.status, 403, "{}", reply.text());
    // The upstream got a chunked body that never reached its last chunk (or nothing).
    for r in upstream.aborted_if_any().await {
        assert!(r.received < body.len as u64 / 2);
        assert!(!r.headers.contains_key("content-length"));
    }
}

#[tokio::test]
async fn curl_uploading_a_customer_list_gets_the_block_page_and_the_upstream_an_aborted_request() {
    if support::curl_missing() {
        return;
    }
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 1MiB }").await;
    let export = customer_export(50);
    let body = Generated::with(24 << 20, 2 << 20, export.as_bytes());
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let mut at = 0;
    while at < body.len {
        let end = (at + (1 << 20)).min(body.len);
        std::io::Write::write_all(&mut file, &body.piece(at, end)).unwrap();
        at = end;
    }
    let out = support::curl_via(proxy.addr)
        .args([
            "-T",
            file.path().to_str().unwrap(),
            "-X",
            "POST",
            "-H",
            "Expect:",
        ])
        .args(["-w", "\n%{http_code}", &upstream.url("/upload")])
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let (page, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    assert_eq!(
        code.trim(),
        "403",
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(page.contains("stopped before its end"), "{page}");
    for r in upstream.aborted_if_any().await {
        assert!(r.received < body.len as u64 / 2);
    }
}

/// A streamed body is judged after every chunk in which a value was counted, before the
/// chunk ahead of it goes upstream: judged only every 256 KiB, a list sent after the held
/// part and followed by a little more and a pause sat at the upstream (40 addresses, in a
/// request not yet aborted) until more bytes came (found in a red-team review).
#[tokio::test]
async fn a_list_in_a_streamed_body_is_judged_before_it_goes_upstream() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits:\n  hold_bytes: 1MiB\n").await;
    let list: String = (0..40)
        .map(|i| format!("customer{i}@acme-corp.io\n"))
        .collect();
    let first = filler((1 << 20) + (256 << 10));
    let after = filler(64 << 10);
    let total = first.len() + list.len() + after.len() + (4 << 20);
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n",
        upstream.url("/pause")
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&first).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    s.write_all(list.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    s.write_all(&after).await.unwrap();
    // The block comes without more bytes, and the list never reached the upstream.
    let reply = tokio::time::timeout(std::time::Duration::from_secs(10), read_to_close(&mut s))
        .await
        .expect("judged without more bytes");
    assert_eq!(parse_reply(&reply).status, 403);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for r in upstream.requests() {
        assert!(!r.complete);
        let text = String::from_utf8_lossy(&r.body);
        assert_eq!(
            text.matches("@acme-corp.io").count(),
            0,
            "the list went upstream"
        );
    }
}

/// A short list (12 addresses, 300 bytes) followed by single bytes, each its own chunk, and
/// a pause: the engine decides a place only once the longest match and its context window
/// have gone past it, so the list was not counted yet when the next byte arrived, and the
/// chunk carrying it went upstream, in a request not yet aborted (found in this session's
/// review of the held-chunk fix). Now chunks wait while the engine has places to decide.
#[tokio::test]
async fn a_short_list_followed_by_single_bytes_waits_until_it_is_decided() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits:\n  hold_bytes: 1MiB\n").await;
    let list: String = (0..12).map(|i| format!("c{i}@acme-corp.io ")).collect();
    let first = filler((1 << 20) + (256 << 10));
    let total = first.len() + list.len() + (4 << 20);
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n",
        upstream.url("/pause")
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&first).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for piece in [list.as_bytes(), b" ", b" ", b" "] {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_held_back(&upstream.requests(), 512 << 10, "@acme-corp.io");
    // More bytes decide it: a block, and still nothing of the list upstream.
    s.write_all(&filler(8 << 10)).await.unwrap();
    let reply = tokio::time::timeout(std::time::Duration::from_secs(10), read_to_close(&mut s))
        .await
        .expect("judged once decided");
    assert_eq!(parse_reply(&reply).status, 403);
    for r in upstream.requests() {
        assert!(!r.complete);
        assert!(!String::from_utf8_lossy(&r.body).contains("@acme-corp.io"));
    }
}

/// The same list, base64-encoded in a body without line ends (a minified JSON field, a
/// data URL). Its decoded text waited for a line end (or 48 KiB of it, or the body's end)
/// to be put in the stream, so the chunk carrying it went upstream, in a request not yet
/// aborted, long before its values were counted (found by a red-team probe). Now decoded
/// text goes in at a separator once due, and the chunks wait while it waits: the list in
/// one chunk, or cut in two by chunks' ends inside the run (half of it in a chunk that
/// arrives before the run ends, the run's end and its decoded text in a later one).
#[tokio::test]
async fn a_base64_list_in_a_streamed_body_is_judged_before_it_goes_upstream() {
    use base64::Engine as _;
    let list: String = (0..40)
        .map(|i| format!("customer{i}@acme-corp.io\n"))
        .collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&list);
    let field = format!("\"{encoded}\", ");
    let half = field.len() / 2;
    for (cut, cut2) in [
        (field.len(), field.len() + 100),
        (half, field.len() - 3),
        (half, field.len() + 100),
    ] {
        let upstream = Upstream::start().await;
        let proxy = Proxy::start("limits:\n  hold_bytes: 1MiB\n").await;
        let mut body = filler((1 << 20) + (256 << 10));
        let first_len = body.len();
        body.extend_from_slice(field.as_bytes());
        body.extend_from_slice(&filler(64 << 10));
        let total = body.len() + (4 << 20);
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n",
            upstream.url("/pause")
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let pieces = [
            &body[..first_len],
            &body[first_len..first_len + cut],
            &body[first_len + cut..first_len + cut2],
            &body[first_len + cut2..],
        ];
        for piece in pieces {
            s.write_all(piece).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let seen = upstream.requests();
        for r in &seen {
            let text = String::from_utf8_lossy(&r.body);
            assert!(
                !text.contains(&encoded[..64]),
                "cut {cut}, {cut2}: the encoded list went upstream"
            );
        }
        // The filler before it did go on: the test would pass on a proxy that sent
        // nothing at all.
        assert!(
            seen.iter().any(|r| r.body.len() >= 512 << 10),
            "cut {cut}, {cut2}: the filler before the list never reached the upstream: {:?}",
            seen.iter().map(|r| r.body.len()).collect::<Vec<_>>()
        );
    }
}

/// What the upstream saw of a request paused after a list: the bytes before the list (at
/// least `before` of them: a proxy that sent nothing would pass the rest), and not one
/// occurrence of `list` (a piece of the list as sent).
fn assert_held_back(seen: &[support::Recorded], before: usize, list: &str) {
    assert!(
        seen.iter().any(|r| r.body.len() >= before),
        "the bytes before the list never reached the upstream: {:?}",
        seen.iter().map(|r| r.body.len()).collect::<Vec<_>>()
    );
    for r in seen {
        let n = String::from_utf8_lossy(&r.body).matches(list).count();
        assert_eq!(
            n, 0,
            "{n} pieces of the list went upstream before it was counted"
        );
    }
}

/// Sends `head` and then `pieces`, each its own write followed by a pause, on one
/// connection to `proxy`; returns the connection (the body is declared 4 MiB longer, so
/// the request never ends on its own).
async fn send_paced(proxy: SocketAddr, head: &str, pieces: &[&[u8]], pause_ms: u64) -> TcpStream {
    let sent: usize = pieces.iter().map(|p| p.len()).sum();
    let total = sent + (4 << 20);
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let head = head.replace("{total}", &total.to_string());
    s.write_all(head.as_bytes()).await.unwrap();
    for piece in pieces {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
    }
    s
}

/// Review of 444975b: decoded base64 text waits for a place outside any run, and the
/// raw text after a base64 list can stay inside a run for ever: a long hex field (all
/// symbols, no uppercase: an undecoded run) in the same minified JSON. `waiting` never
/// falls back to 0, the pump holds the chunks up to `WAIT_CAP` (1 MiB) and then lets the
/// oldest go: the chunk carrying the encoded list reached the upstream, in a request not
/// yet aborted, before a single value of it was counted (the README says the decoded
/// text goes in at least every 36 KiB of raw text).
#[tokio::test]
async fn a_base64_list_followed_by_a_long_hex_field_is_not_sent_before_it_is_counted() {
    use base64::Engine as _;
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits:\n  hold_bytes: 1MiB\n").await;
    let list: String = (0..40)
        .map(|i| format!("customer{i}@acme-corp.io\n"))
        .collect();
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let encoded = b64(list.as_bytes());
    let benign = b64(b"A harmless attachment: Hello World, nothing to see in this one.");
    let field = format!("{{\"note\":\"{benign}\",\"file\":\"{encoded}\",\"sig\":\"");
    let first = filler((1 << 20) + (256 << 10));
    let hex: Vec<u8> = b"0123456789abcdef"
        .iter()
        .copied()
        .cycle()
        .take(64 << 10)
        .collect();
    let mut pieces: Vec<&[u8]> = vec![&first, field.as_bytes()];
    pieces.extend(std::iter::repeat_n(&hex[..], 24));
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\
Content-Length: {{total}}\r\nConnection: close\r\n\r\n",
        upstream.url("/pause")
    );
    let _s = send_paced(proxy.addr, &head, &pieces, 30).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_held_back(&upstream.requests(), 512 << 10, &encoded[..64]);
}

/// Review of 444975b: a zip local header's signature in text makes the sniffer hold the
/// bytes after it (up to 542: the header and a name of up to 512 bytes) until they tell
/// whether it is a real header, unscanned, and not counted in `waiting`. A list in such a
/// "name", then single bytes: the chunk carrying it goes upstream as soon as the next
/// byte comes, 25 addresses the proxy has not counted (the request is blocked only once
/// the name is complete).
#[tokio::test]
async fn a_list_held_as_a_possible_zip_header_is_not_sent_before_it_is_counted() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 64KiB }\n").await;
    let list: String = (0..25).map(|i| format!("c{i}@acme-corp.io ")).collect();
    assert!(list.len() + 4 < 512);
    // A plausible local header: version 20, no flags, stored, sizes 0, a 512-byte name.
    let mut header = b"PK\x03\x04".to_vec();
    header.extend_from_slice(&20u16.to_le_bytes());
    header.extend_from_slice(&[0u8; 2 + 2 + 4 + 4 + 4 + 4]);
    header.extend_from_slice(&512u16.to_le_bytes());
    header.extend_from_slice(&0u16.to_le_bytes());
    header.extend_from_slice(list.as_bytes());
    let first = filler(128 << 10);
    let after = filler(8 << 10);
    let mut pieces: Vec<&[u8]> = vec![&first, &after, &header];
    pieces.extend(std::iter::repeat_n(&b"x"[..], 4));
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: {{total}}\r\nConnection: close\r\n\r\n",
        upstream.url("/pause")
    );
    let _s = send_paced(proxy.addr, &head, &pieces, 150).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_held_back(&upstream.requests(), 64 << 10, "@acme-corp.io");
}

/// Review of 444975b: a multipart part keeps its last bytes back (a delimiter may be cut
/// there: `\n--` and a boundary of up to 70 bytes), unscanned and not counted in
/// `waiting`. Ten short addresses in a chunk's last 73 bytes, then single bytes: the
/// chunk goes upstream as soon as the next byte comes, the list not counted yet.
#[tokio::test]
async fn a_list_in_a_parts_held_back_tail_is_not_sent_before_it_is_counted() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits: { hold_bytes: 64KiB }\n").await;
    let boundary = "B".repeat(70);
    let list: String = ('a'..='j').map(|c| format!("{c}@x.io ")).collect();
    assert!(list.len() <= 73);
    let mut first = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n\
Content-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    first.extend_from_slice(&filler(128 << 10));
    let after = filler(8 << 10);
    let mut pieces: Vec<&[u8]> = vec![&first, &after, list.as_bytes()];
    pieces.extend(std::iter::repeat_n(&b" "[..], 4));
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
Content-Length: {{total}}\r\nConnection: close\r\n\r\n",
        upstream.url("/pause")
    );
    let _s = send_paced(proxy.addr, &head, &pieces, 150).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_held_back(&upstream.requests(), 64 << 10, "@x.io");
}

/// Review of 444975b: `Stream::undecided` is true while any rule has a region, and a rule
/// searched at every byte (no keyword, literal prefix or digit run: `Anchor::FullScan`,
/// which the rule loader accepts when its automaton is small) holds the region
/// `(0, u64::MAX)` until the stream ends. With such a rule loaded every streamed body is
/// "undecided" from its first byte to its last: the pump keeps the last `WAIT_CAP` (or
/// `hold_bytes`) of every upload back, however benign, where it used to keep one chunk.
#[tokio::test]
async fn a_rule_searched_at_every_byte_does_not_hold_back_every_streamed_body() {
    let rules = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(support::fixture_rules()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, rules.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        rules.path().join("codes.yaml"),
        "rules:\n  - id: code\n    name: Project code\n    category: code\n    \
pattern: '\\b[a-z]{3}-[a-z]{4}-[a-z]{3}\\b'\n    thresholds: { log: 3, block: 10 }\n    \
tests:\n      match: ['x abc-defg-hij y']\n      no_match: ['abc-def']\n",
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let text = format!(
        "rules: {}\ndata_dir: {}\ntls: {{ intercept: false }}\nlimits: {{ hold_bytes: 512KiB }}\n",
        rules.path().display(),
        data.path().display()
    );
    let config = egress_dlp::config::from_yaml(&text, None, &Default::default()).unwrap();
    let proxy = Proxy::start_with(config).await;
    let upstream = Upstream::start().await;
    let body = filler(2 << 20);
    let pieces: Vec<&[u8]> = body.chunks(16 << 10).collect();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: {{total}}\r\nConnection: close\r\n\r\n",
        upstream.url("/pause")
    );
    let _s = send_paced(proxy.addr, &head, &pieces, 2).await;
    upstream
        .wait_for(|r| r.iter().any(|r| r.received > 0))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let received = upstream.requests()[0].received;
    assert!(
        received as usize >= body.len() - (64 << 10),
        "sent {} benign bytes and paused; the upstream has {received}",
        body.len()
    );
}

/// A list in a brotli metadata block (bytes every brotli decoder skips) of a body over the
/// hold limit should be held back and blocked, never upstream. Known gap (README): the
/// list goes upstream and the body passes as fully inspected.
#[tokio::test]
#[ignore = "known gap (README): brotli metadata blocks are not scanned; run with --ignored"]
async fn a_list_in_a_brotli_metadata_block_of_a_streamed_body_never_goes_upstream() {
    use support::{BrotliBlock, brotli_stream};
    let upstream = Upstream::start().await;
    let proxy = Proxy::start("limits:\n  hold_bytes: 1MiB\n").await;
    let text = filler(64 << 10);
    let list: String = (0..40).map(|i| format!("c{i}@acme-corp.io ")).collect();
    let mut blocks: Vec<BrotliBlock<'_>> = (0..30).map(|_| BrotliBlock::Stored(&text)).collect();
    let stored_len = brotli_stream(&blocks).len() - 1;
    blocks.push(BrotliBlock::Metadata(list.as_bytes()));
    let list_end = brotli_stream(&blocks).len() - 1;
    blocks.extend((0..6).map(|_| BrotliBlock::Stored(&text)));
    let body = brotli_stream(&blocks);
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Encoding: br\r\n\
         Content-Length: {{total}}\r\nConnection: close\r\n\r\n",
        upstream.url("/pause")
    );
    let pieces = [&body[..stored_len], &body[stored_len..list_end]];
    let mut s = send_paced(proxy.addr, &head, &pieces, 300).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_held_back(&upstream.requests(), 512 << 10, "@acme-corp.io");
    // The rest completes the list's piece: a block, and nothing of the list upstream.
    s.write_all(&body[list_end..]).await.unwrap();
    let reply = tokio::time::timeout(std::time::Duration::from_secs(10), read_to_close(&mut s))
        .await
        .expect("judged once the piece is in");
    assert_eq!(parse_reply(&reply).status, 403);
    for r in upstream.requests() {
        assert!(!r.complete);
        assert!(!String::from_utf8_lossy(&r.body).contains("@acme-corp.io"));
    }
}
