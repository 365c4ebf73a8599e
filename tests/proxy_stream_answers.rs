//! An oversize body streamed upstream whose upstream answers before the body ends (or
//! stops reading it): what was scanned and sent is still judged before the answer goes
//! back, so a customer list that already left gets the block page and an audit event,
//! and not the upstream's answer. Also: client-sent names in "not fully scanned" details
//! reach the log only when they look like names.
//!
//! (Found in review: the proxy passed an early answer straight through, so an upstream run
//! by the attacker could answer as soon as it had the list, and nothing was recorded.)

mod ops_support;
mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ops_support::{OpsProxy, captured_logs, json_lines};
use support::{Proxy, customer_export, filler, parse_reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// What one upstream connection received, and whether it has closed.
type Conn = Arc<Mutex<(Vec<u8>, bool)>>;

/// A raw TCP upstream that records every byte and answers `reply` as soon as `answer_on`
/// has arrived (or `delay` after), without waiting for the rest of the request.
struct EagerUpstream {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Conn>>>,
}

impl EagerUpstream {
    async fn start(answer_on: &'static [u8]) -> EagerUpstream {
        Self::answering(answer_on, OK, Duration::ZERO).await
    }

    async fn answering(
        answer_on: &'static [u8],
        reply: &'static [u8],
        delay: Duration,
    ) -> EagerUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<Conn>>> = Arc::default();
        let all = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let conn: Conn = Arc::default();
                all.lock().unwrap().push(conn.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 << 10];
                    let mut answered = false;
                    loop {
                        let n = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let seen = {
                            let mut c = conn.lock().unwrap();
                            c.0.extend_from_slice(&buf[..n]);
                            contains(&c.0, answer_on)
                        };
                        if seen && !answered {
                            answered = true;
                            tokio::time::sleep(delay).await;
                            let _ = s.write_all(reply).await;
                        }
                    }
                    conn.lock().unwrap().1 = true;
                });
            }
        });
        EagerUpstream { addr, conns }
    }

    /// What each connection received, once all have closed (or after 10 s).
    async fn received(&self) -> Vec<Vec<u8>> {
        for _ in 0..500 {
            if self
                .conns
                .lock()
                .unwrap()
                .iter()
                .all(|c| c.lock().unwrap().1)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let conns = self.conns.lock().unwrap();
        conns.iter().map(|c| c.lock().unwrap().0.clone()).collect()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// POSTs to `upstream` through `proxy`, declaring `len` bytes: 96 KiB of filler (past a
/// 64 KiB hold limit), then `list`, then 64 KiB more (enough for the engine to settle the
/// list's values), each on its own; the rest of the body never comes. Returns the
/// connection, the client waiting.
async fn send_list_mid_body(
    proxy: SocketAddr,
    upstream: SocketAddr,
    len: usize,
    list: &str,
) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let head = format!(
        "POST http://{upstream}/exfil HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&filler(96 << 10)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(list.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(&filler(64 << 10)).await.unwrap();
    s
}

/// POSTs to `upstream` through `proxy`, declaring 8 MiB: 96 KiB of filler (past a 64 KiB
/// hold limit), then `list`, then (`pause` later) one byte, each on its own. The byte makes
/// the list no longer the held-back last chunk, so it goes upstream, while the bytes after
/// it are fewer than the engine waits for before it settles a value. The rest never comes.
async fn send_list_then_one_byte(
    proxy: SocketAddr,
    upstream: SocketAddr,
    list: &[u8],
    pause: Duration,
) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let head = format!(
        "POST http://{upstream}/exfil HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        8 << 20
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&filler(96 << 10)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    s.write_all(list).await.unwrap();
    tokio::time::sleep(pause).await;
    s.write_all(b"\n").await.unwrap();
    s
}

/// The client of `s` leaves (after 300 ms); then the proxy stops. Returns what the
/// upstream received (the filler sent before the rest must be there) and the audit events.
async fn leave_after(
    s: TcpStream,
    up: &EagerUpstream,
    proxy: &mut OpsProxy,
) -> (Vec<Vec<u8>>, Vec<serde_json::Value>) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
    let received = up.received().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.stop().await;
    assert!(
        received.iter().any(|r| r.len() > 32 << 10),
        "precondition: the bytes before the rest reached the upstream"
    );
    (received, json_lines(&proxy.audit_path()))
}

/// The one audit event of a request blocked after part of its body went upstream.
fn assert_one_partial_block(events: &[serde_json::Value]) {
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["action"], "block");
    assert_eq!(events[0]["partial"], true, "{}", events[0]);
}

/// Reads the response head (up to 3 s).
async fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    if contains(&raw, b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    raw
}

/// A list in the middle of a streamed body, settled by the bytes after it: judged before
/// the list's chunk goes on, so the upstream never sees it (an upstream that answers as
/// soon as it does never answers) and the client gets the block page. Judged only every
/// 256 KiB, the list went upstream first (the twins below, with a list the engine has not
/// decided yet, show an early answer replaced by the block page).
#[tokio::test]
async fn a_list_settled_mid_body_is_blocked_before_it_goes_upstream() {
    let up = EagerUpstream::start(b"customer49@acme-corp.io").await;
    let mut proxy = OpsProxy::start("limits: { hold_bytes: 64KiB }\n").await;
    let export = customer_export(50);
    let total = (96 << 10) + export.len() + (64 << 10) + (8 << 20);
    let mut s = send_list_mid_body(proxy.addr, up.addr, total, &export).await;
    let reply = parse_reply(&read_head(&mut s).await);
    drop(s);
    let received = up.received().await;
    proxy.stop().await;
    let events = json_lines(&proxy.audit_path());
    assert!(
        !received.iter().any(|r| contains(r, b"@acme-corp.io")),
        "the list reached the upstream"
    );
    assert_eq!(reply.status, 403);
    assert_one_partial_block(&events);
}

#[tokio::test]
async fn an_early_upstream_answer_to_a_benign_upload_still_reaches_the_client() {
    let up = EagerUpstream::start(b"elit; lorem").await;
    let mut proxy = OpsProxy::start("limits: { hold_bytes: 64KiB }\n").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST http://{}/upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        up.addr,
        8 << 20
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&filler(256 << 10)).await.unwrap();
    let reply = parse_reply(&read_head(&mut s).await);
    drop(s);
    proxy.stop().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let events = json_lines(&proxy.audit_path());
    assert!(events.iter().all(|e| e["action"] != "block"), "{events:?}");
}

#[tokio::test]
async fn client_sent_names_reach_the_log_only_when_they_look_like_names() {
    let logs = captured_logs("info");
    let up = support::Upstream::start().await;
    let proxy = Proxy::start("").await;
    let url = up.url("/e");
    for (header, value) in [
        ("Content-Encoding", "zq7secret@hidden-corp.io"),
        ("Content-Type", "multipart/zq8secret@hidden-corp.io"),
        ("Content-Encoding", "x-compress"),
    ] {
        let reply = support::request(proxy.addr, "POST", &url, &[(header, value)], b"hi").await;
        assert_eq!(reply.status, 403, "{header}: {value}: {}", reply.text());
    }
    let text = logs.text();
    assert!(!text.contains("zq7secret"), "{text}");
    assert!(!text.contains("zq8secret"), "{text}");
    assert!(
        text.contains("(a 24-byte value, not shown)"),
        "the detail still says what was refused: {text}"
    );
    assert!(
        text.contains("content-encoding \\\"x-compress\\\" is not decoded"),
        "{text}"
    );
}

/// The same list, the client leaving soon after: blocked (and recorded) before it left,
/// nothing of the list upstream.
#[tokio::test]
async fn a_client_leaving_after_a_list_mid_body_is_recorded_as_a_block() {
    let up = EagerUpstream::start(b"never answered").await;
    let mut proxy = OpsProxy::start("limits: { hold_bytes: 64KiB }\n").await;
    let export = customer_export(50);
    let s = send_list_mid_body(proxy.addr, up.addr, 32 << 20, &export).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    let received = up.received().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.stop().await;
    assert!(
        !received.iter().any(|r| contains(r, b"@acme-corp.io")),
        "the list reached the upstream"
    );
    let events = json_lines(&proxy.audit_path());
    assert_one_partial_block(&events);
}

/// A benign gzipped upload over the hold limit that the upstream refuses at once (401,
/// before the body ends): the client gets that 401. The gzip stream cut short is not a
/// "not inspected" problem of its own; what was scanned is judged as it stands.
#[tokio::test]
async fn an_early_refusal_of_a_benign_gzipped_upload_reaches_the_client() {
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;
    let up = EagerUpstream::answering(
        b"POST /upload",
        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nauth",
        Duration::ZERO,
    )
    .await;
    let mut proxy = OpsProxy::start("limits: { hold_bytes: 64KiB }\n").await;
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    for n in 0..200_000u32 {
        writeln!(
            gz,
            "{:08x} lorem ipsum {:x} dolor sit amet",
            n,
            n.wrapping_mul(2_654_435_761)
        )
        .unwrap();
    }
    let body = gz.finish().unwrap();
    assert!(body.len() > 512 << 10, "{} bytes", body.len());
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST http://{}/upload HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n\
         Content-Length: {}\r\n\r\n",
        up.addr,
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body[..256 << 10]).await.unwrap();
    let reply = parse_reply(&read_head(&mut s).await);
    drop(s);
    proxy.stop().await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    let events = json_lines(&proxy.audit_path());
    assert!(events.iter().all(|e| e["action"] != "block"), "{events:?}");
}

/// A list in the last bytes sent, not decided yet by the engine (it waits for the longest
/// match to go past), when the upstream answers early. It went upstream before it was
/// counted, and the cut body was judged on the values the engine had settled, which left
/// it out: 12 customers passed with the upstream's 200 and no audit event (found in
/// review). Now the chunks wait while the engine has places to decide, so the list never
/// reaches the upstream, and the early answer (to the bytes before it) is judged with the
/// list counted: the block page replaces it.
#[tokio::test]
async fn an_early_answer_while_a_list_is_undecided_is_replaced_by_the_block_page() {
    // It answers 450 ms after the filler's first bytes: after the list and the byte after it
    // reached the proxy (150 and 300 ms).
    let up = EagerUpstream::answering(b"elit; lorem", OK, Duration::from_millis(450)).await;
    let mut proxy = OpsProxy::start("limits: { hold_bytes: 64KiB }\n").await;
    // 12 distinct customers: past the block threshold of 10.
    let export = customer_export(12);
    let mut s = send_list_then_one_byte(
        proxy.addr,
        up.addr,
        export.as_bytes(),
        Duration::from_millis(150),
    )
    .await;
    let reply = parse_reply(&read_head(&mut s).await);
    drop(s);
    let received = up.received().await;
    proxy.stop().await;
    let events = json_lines(&proxy.audit_path());
    assert!(
        received.iter().any(|r| r.len() > 32 << 10),
        "precondition: the bytes before the list reached the upstream"
    );
    assert!(
        !received.iter().any(|r| contains(r, b"@acme-corp.io")),
        "the list reached the upstream"
    );
    assert_eq!(reply.status, 403, "the upstream's 200 went to the client");
    assert_one_partial_block(&events);
}

/// The same list, and then the client leaves: the list never reached the upstream, and the
/// request is recorded as a block.
#[tokio::test]
async fn a_client_leaving_right_after_a_list_in_the_last_bytes_sent_is_recorded_as_a_block() {
    let up = EagerUpstream::start(b"never answered").await;
    let mut proxy = OpsProxy::start("limits: { hold_bytes: 64KiB }\n").await;
    let export = customer_export(12);
    let s = send_list_then_one_byte(
        proxy.addr,
        up.addr,
        export.as_bytes(),
        Duration::from_millis(150),
    )
    .await;
    let (received, events) = leave_after(s, &up, &mut proxy).await;
    assert!(
        !received.iter().any(|r| contains(r, b"@acme-corp.io")),
        "the list reached the upstream"
    );
    assert_one_partial_block(&events);
}

/// Whether the shipped rules, reading `filler(96 KiB)` and then `flood` as the proxy reads
/// a body with no type, stop a rule for too much work (before the body's end, and at it).
fn work_stops(engine: &egress_dlp::scan::Engine, flood: &[u8]) -> (bool, bool) {
    use egress_dlp::decode::{Inspection, Limits};
    let mut inspection = Inspection::new(engine, &Limits::default(), None, None);
    inspection.feed(&filler(96 << 10));
    for chunk in flood.chunks(16 << 10) {
        inspection.feed(chunk);
    }
    let before = inspection.not_scanned().is_some();
    let at_end = inspection.finish().not_scanned.is_some();
    (before, at_end)
}

/// A body cut short whose last bytes sent push a rule over its work limit only as its scan
/// finishes (`eyJ-` repeated: the JWT rule's walks of the last few KiB wait for the bytes
/// after them, which never come). The client leaves; what went upstream was not fully
/// searched, so the request is recorded as a block, not inspected for `scan_work_limit`
/// (session 22's review: `judge_cut` kept only a problem seen before the cut).
#[tokio::test]
async fn a_client_leaving_when_its_last_bytes_reach_the_work_limit_is_recorded_as_a_block() {
    let rules = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules");
    let engine = egress_dlp::scan::Engine::new(&egress_dlp::rules::load_dir(&rules).unwrap());
    // The flood lengths (in units of 4 bytes) where the stop comes at the end, and where
    // it comes before it: both grow with the flood. The body takes the middle of the
    // first stretch, as far as can be from either edge (a split could move them a little).
    let flood = |units: usize| b"eyJ-".repeat(units);
    let first = |stop: &dyn Fn(usize) -> bool| {
        let (mut lo, mut hi) = (1usize, 64 << 10);
        assert!(stop(hi) && !stop(lo));
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if stop(mid) { hi = mid } else { lo = mid }
        }
        hi
    };
    let at_end = first(&|n| work_stops(&engine, &flood(n)).1);
    let before = first(&|n| work_stops(&engine, &flood(n)).0);
    assert!(
        before > at_end + 64,
        "precondition: a flood that stops the JWT rule only at the end ({at_end}..{before} units)"
    );
    let units = (at_end + before) / 2;

    let up = EagerUpstream::start(b"never answered").await;
    let mut proxy = OpsProxy::start_with_rules(&rules, "limits: { hold_bytes: 64KiB }\n").await;
    // One byte after the flood, so that it is not the chunk held back as the last one: all
    // of it was scanned (in a debug build about 0.1 s: the pause leaves room) and went
    // upstream.
    let flood = flood(units);
    let s = send_list_then_one_byte(proxy.addr, up.addr, &flood, Duration::from_secs(1)).await;
    let (_, events) = leave_after(s, &up, &mut proxy).await;
    assert_one_partial_block(&events);
    assert_eq!(events[0]["not_scanned"], "scan_work_limit", "{}", events[0]);
}
