//! Shared helpers for the proxy's integration tests: a recording upstream, a TCP echo
//! server, a proxy started on `127.0.0.1:0` with the fixture rules, and a raw HTTP client
//! that reads whatever comes back until the connection closes.
//!
//! Everything listens and connects on loopback only.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod bodies;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use egress_dlp::config::{self, Config, Overrides};
use egress_dlp::policy::identity::AuthCounters;
use egress_dlp::proxy;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The fixture rules: `email` logs at 3 distinct values and blocks at 10.
pub fn fixture_rules() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules")
}

/// `n` distinct customer email addresses, one CSV line each.
pub fn customer_export(n: usize) -> String {
    (0..n)
        .map(|i| format!("{i},Customer {i},customer{i}@acme-corp.io\n"))
        .collect()
}

/// The recording upstream keeps at most this much of each body (bigger bodies are checked
/// by length and [`Digest`]).
pub const BODY_RECORD_CAP: usize = 64 << 20;

/// A streaming 64-bit digest of a byte sequence, the same however it is split into chunks
/// (std's SipHash with fixed keys: not cryptographic, but enough to tell two bodies apart).
#[derive(Debug, Clone, Default)]
pub struct Digest(std::hash::DefaultHasher);

impl Digest {
    /// Adds the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        std::hash::Hasher::write(&mut self.0, bytes);
    }

    /// The digest of everything added so far.
    pub fn value(&self) -> u64 {
        std::hash::Hasher::finish(&self.0)
    }
}

/// What the recording upstream saw of one request.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path and query, as on the wire.
    pub target: String,
    /// Headers as received.
    pub headers: HeaderMap,
    /// Body bytes received so far, up to the first [`BODY_RECORD_CAP`] bytes.
    pub body: Vec<u8>,
    /// Body bytes received so far (all of them, also past the cap).
    pub received: u64,
    /// [`Digest`] of every body byte received so far.
    pub digest: u64,
    /// Whether the body ended normally (false: still arriving, or aborted).
    pub complete: bool,
    /// Whether the body broke off (the connection closed or reset before its end).
    pub aborted: bool,
}

/// How the recording upstream answers.
#[derive(Debug, Clone, Copy)]
pub enum Behavior {
    /// 200 once the body has been read, with body `ok <bytes>`.
    Respond,
    /// Read the body, wait, then answer as `Respond`.
    Delay(Duration),
    /// Close the connection without answering.
    Close,
}

/// An HTTP/1.1 server on `127.0.0.1:0` that records every request it receives.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Arc<Mutex<Recorded>>>>>,
    behavior: Arc<Mutex<Behavior>>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Starts a recording upstream that answers 200.
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Arc<Mutex<Recorded>>>>> = Arc::default();
        let behavior = Arc::new(Mutex::new(Behavior::Respond));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, b, c) = (seen.clone(), behavior.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::Relaxed);
                let (s, b) = (s.clone(), b.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| record(req, s.clone(), b.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            behavior,
            connections,
            task,
        }
    }

    /// Changes how it answers from the next request on.
    pub fn set(&self, behavior: Behavior) {
        *self.behavior.lock().unwrap() = behavior;
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.lock().unwrap().clone())
            .collect()
    }

    /// After a block of a streamed body: the requests the upstream received, once every
    /// one has ended, each asserted aborted before its end. The upstream may have none: a
    /// list counted before the upstream connection was made (CI, under load, saw that)
    /// sends nothing, which the promise (never a complete request) allows too.
    pub async fn aborted_if_any(&self) -> Vec<Recorded> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = self
            .wait_for(|s| s.iter().all(|r| r.aborted || r.complete))
            .await;
        assert!(seen.len() <= 1, "{} requests upstream", seen.len());
        for r in &seen {
            assert!(
                r.aborted && !r.complete,
                "the upstream saw a complete request"
            );
        }
        seen
    }

    /// Body bytes received so far, over every request.
    pub fn received_bytes(&self) -> u64 {
        self.requests().iter().map(|r| r.received).sum()
    }

    /// Polls (up to 8 s) whether the upstream has received `n` body bytes or more.
    pub async fn reaches(&self, n: u64) -> bool {
        for _ in 0..400 {
            if self.received_bytes() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Waits (up to 10 s) until `done` holds for the requests received.
    pub async fn wait_for(&self, done: impl Fn(&[Recorded]) -> bool) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.requests();
            if done(&seen) {
                return seen;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "upstream never reached the expected state: {:?}",
                seen.iter()
                    .map(|r| (&r.method, &r.target, r.body.len(), r.complete, r.aborted))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Records one request into `seen` and answers it as `behavior` says (the recording
/// upstream's service; `tls.rs` serves it over TLS too).
pub async fn record(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Arc<Mutex<Recorded>>>>>,
    behavior: Arc<Mutex<Behavior>>,
) -> Result<Response<Full<Bytes>>, io::Error> {
    let behavior = *behavior.lock().unwrap();
    let (parts, mut body) = req.into_parts();
    let entry = Arc::new(Mutex::new(Recorded {
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers,
        ..Recorded::default()
    }));
    seen.lock().unwrap().push(entry.clone());
    let mut digest = Digest::default();
    loop {
        match body.frame().await {
            None => {
                entry.lock().unwrap().complete = true;
                break;
            }
            Some(Err(e)) => {
                entry.lock().unwrap().aborted = true;
                return Err(io::Error::other(e));
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    digest.update(&data);
                    let mut entry = entry.lock().unwrap();
                    let keep = BODY_RECORD_CAP.saturating_sub(entry.body.len());
                    entry.body.extend_from_slice(&data[..keep.min(data.len())]);
                    entry.received += data.len() as u64;
                    entry.digest = digest.value();
                }
            }
        }
    }
    match behavior {
        Behavior::Respond => {}
        Behavior::Delay(d) => tokio::time::sleep(d).await,
        Behavior::Close => return Err(io::Error::other("told to close")),
    }
    let n = entry.lock().unwrap().received;
    let mut resp = Response::new(Full::new(Bytes::from(format!("ok {n}"))));
    resp.headers_mut()
        .insert("x-upstream", http::HeaderValue::from_static("recording"));
    Ok(resp)
}

/// A TCP server on `127.0.0.1:0` that echoes whatever it reads.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A loopback port with nothing listening on it.
pub async fn dead_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A running proxy.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its configuration.
    pub config: Arc<Config>,
    /// Its authentication counters.
    pub auth_counters: Arc<AuthCounters>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
    /// The data directory (fingerprint key, audit log) when `start` made one.
    _data: Option<tempfile::TempDir>,
}

impl Proxy {
    /// Starts a proxy on `127.0.0.1:0` with the fixture rules and `yaml` as the rest of the
    /// config file.
    pub async fn start(yaml: &str) -> Proxy {
        // A data directory of its own (audit key and log), unless the test names one.
        let data = (!yaml.contains("data_dir:")).then(|| tempfile::tempdir().unwrap());
        let data_line = data
            .as_ref()
            .map(|d| format!("data_dir: {}\n", d.path().display()))
            .unwrap_or_default();
        // Without a `tls:` section CONNECT is a blind tunnel, as these tests expect; the TLS
        // tests (tests/proxy_tls.rs) configure interception themselves.
        let tls = if yaml.contains("tls:") {
            ""
        } else {
            "tls: { intercept: false }\n"
        };
        let text = format!(
            "rules: {}\n{data_line}{tls}{yaml}",
            fixture_rules().display()
        );
        let config = config::from_yaml(&text, None, &Overrides::default())
            .unwrap_or_else(|e| panic!("test config: {e}"));
        let mut proxy = Proxy::start_with(config).await;
        proxy._data = data;
        proxy
    }

    /// Starts a proxy with a ready config.
    pub async fn start_with(config: Config) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Arc::new(config);
        let (stop, stopped) = oneshot::channel::<()>();
        let auth_counters = Arc::new(AuthCounters::default());
        let options = proxy::RunOptions {
            auth_counters: Some(auth_counters.clone()),
            ..proxy::RunOptions::default()
        };
        let task = tokio::spawn(proxy::run_with(listener, options, config.clone(), async {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            config,
            auth_counters,
            stop: Some(stop),
            task: Some(task),
            _data: None,
        }
    }

    /// Starts the shutdown and returns the handle `run` completes on.
    pub fn shutdown(&mut self) -> JoinHandle<io::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().expect("shut down once")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// `Basic base64(user:password)`, the value of a `Proxy-Authorization` header.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// Writes a credentials file (one `user:hash` line per `(user, password)`) in `dir`.
pub fn credentials_file(dir: &std::path::Path, users: &[(&str, &str)]) -> PathBuf {
    let text: String = users
        .iter()
        .map(|(u, p)| {
            format!(
                "{u}:{}\n",
                egress_dlp::policy::identity::hash_password(p.as_bytes())
            )
        })
        .collect();
    let path = dir.join("users.txt");
    std::fs::write(&path, text).unwrap();
    path
}

/// An HTTP response read off the wire.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Head lines after the status line, as `name: value`, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Bytes after the head (not de-chunked).
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A proxy reloadable from its config file: where it listens, its reload handle, and the
/// sender whose drop stops it.
pub struct Reloadable {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Reloads it from its config file.
    pub handle: egress_dlp::proxy::reload::ReloadHandle,
    /// Dropped: the proxy stops.
    pub stop: oneshot::Sender<()>,
}

/// Runs the proxy on `config` (loaded from `config_path`), reloadable from that file, with
/// `options` (their `reloads` is set here).
pub async fn serve_reloadable(
    config_path: &std::path::Path,
    config: Config,
    options: proxy::RunOptions,
) -> Reloadable {
    use egress_dlp::proxy::reload::{ReloadSource, Reloads};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reloads, handle) = Reloads::new(ReloadSource {
        config_path: Some(config_path.to_path_buf()),
        overrides: Overrides::default(),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let options = proxy::RunOptions {
        reloads: Some(reloads),
        ..options
    };
    tokio::spawn(proxy::run_with(
        listener,
        options,
        Arc::new(config),
        async {
            let _ = stopped.await;
        },
    ));
    Reloadable { addr, handle, stop }
}

/// One keep-alive GET of `path` from `host` on `stream` (plain or TLS): the status (0 when
/// the connection closed first).
pub async fn get_keepalive<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    path: &str,
) -> u16 {
    let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() {
        return 0;
    }
    read_keepalive_reply(stream)
        .await
        .map_or(0, |(status, _)| status)
}

/// Reads one response with a Content-Length body from a keep-alive connection (plain or
/// TLS): its status and body, or `None` when the connection closed first or no response
/// came within 10 s.
pub async fn read_keepalive_reply<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> Option<(u16, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let reply = parse_reply(&buf[..end + 4]);
            let len: usize = reply
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                match stream.read(&mut chunk).await {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return None,
                }
            }
            return Some((reply.status, buf[end + 4..end + 4 + len].to_vec()));
        }
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// Parses one response from raw bytes.
pub fn parse_reply(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// Sends raw bytes to `addr` and reads until the server closes (10 s at most).
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_to_close(&mut stream).await
}

/// Reads until the peer closes (or resets), 10 s at most.
pub async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the connection was not closed within 10 s");
    out
}

/// A complete `Connection: close` request through the proxy, returning the parsed reply.
pub async fn request(
    proxy: SocketAddr,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut raw = format!("{method} {url} HTTP/1.1\r\n");
    let host = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    raw.push_str(&format!("Host: {host}\r\nConnection: close\r\n"));
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    let mut bytes = raw.into_bytes();
    bytes.extend_from_slice(body);
    parse_reply(&exchange(proxy, &bytes).await)
}

/// True (with a SKIPPED line) when curl is not installed; `.ci/run` installs it.
pub fn curl_missing() -> bool {
    let missing = std::process::Command::new("curl")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .status()
        .is_err();
    if missing {
        eprintln!("SKIPPED: curl is not installed (.ci/run installs it)");
    }
    missing
}

/// A curl command through `proxy` (silent, 20 s cap, printing the status code last),
/// with every proxy variable of the environment removed so only `-x` applies.
pub fn curl_via(proxy: SocketAddr) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-x", &format!("http://{proxy}")]);
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "no_proxy",
        "NO_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A benign body of `len` bytes: printable filler without anything a rule matches.
pub fn filler(len: usize) -> Vec<u8> {
    b"lorem ipsum dolor sit amet, consectetur adipiscing elit; "
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// A body streamed past the hold limit: `first` (over 16 MiB, so the body is streamed),
/// then a list of addresses `list`, then `after`, sent as one POST of `content_type` to
/// `path` that declares 1 MiB more than it sends (the request stays open). Asserts that the
/// upstream did not receive the body up to the list's end, and fewer than 10 of `marker`
/// (one per address as sent): a list must be counted before the chunks holding it go on.
pub async fn assert_streamed_list_held_back(
    proxy: &Proxy,
    upstream: &Upstream,
    path: &str,
    content_type: &str,
    [first, list, after]: [&[u8]; 3],
    marker: &str,
) {
    let total = first.len() + list.len() + after.len() + (1 << 20);
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
         Content-Length: {total}\r\nConnection: close\r\n\r\n",
        upstream.url(path)
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for piece in [first, list, after] {
        s.write_all(piece).await.unwrap();
    }
    let list_end = (first.len() + list.len()) as u64;
    let leaked = upstream.reaches(list_end).await;
    let sent: usize = upstream
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).matches(marker).count())
        .sum();
    assert!(
        !leaked && sent < 10,
        "{sent} addresses of a list went upstream before its text was counted (received {} of \
         {list_end} bytes up to the list's end)",
        upstream.received_bytes()
    );
}

/// Starts a multipart upload (`boundary=XyZ`) of `part` and [`bodies::PART_END`] to `url`
/// through `proxy` from `stream`, and stops after `part`, 300 ms later: the part's
/// decoders are open. Write `PART_END` to finish it.
pub async fn open_multipart_upload(mut stream: TcpStream, url: &str, part: &[u8]) -> TcpStream {
    let head = format!(
        "POST {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {}\r\n\r\n",
        part.len() + bodies::PART_END.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(part).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream
}

/// One meta-block of a hand-made brotli stream (see [`brotli_stream`]).
#[allow(dead_code)]
pub enum BrotliBlock<'a> {
    /// An uncompressed meta-block (its bytes are the decoded output), at most 64 KiB.
    Stored(&'a [u8]),
    /// A metadata meta-block (RFC 7932 §9.2): bytes every decoder skips, at most 16 MiB.
    Metadata(&'a [u8]),
}

/// A brotli stream (window 16 bits) of these meta-blocks and a last empty one, written bit
/// by bit as RFC 7932 §9.2 has it: the only way to put a metadata block in a stream (no
/// encoder writes one).
#[allow(dead_code)]
pub fn brotli_stream(blocks: &[BrotliBlock<'_>]) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        used: u32,
    }
    impl Bits {
        fn put(&mut self, value: u64, n: u32) {
            for i in 0..n {
                if self.used == 0 {
                    self.out.push(0);
                }
                let bit = (value >> i) as u8 & 1;
                *self.out.last_mut().unwrap() |= bit << self.used;
                self.used = (self.used + 1) % 8;
            }
        }
        fn align(&mut self) {
            self.used = 0;
        }
        fn bytes(&mut self, data: &[u8]) {
            self.align();
            self.out.extend_from_slice(data);
        }
    }
    let mut w = Bits {
        out: Vec::new(),
        used: 0,
    };
    w.put(0, 1); // WBITS 16
    for block in blocks {
        w.put(0, 1); // ISLAST
        match block {
            BrotliBlock::Stored(data) => {
                assert!(!data.is_empty() && data.len() <= 1 << 16);
                w.put(0, 2); // MNIBBLES 4
                w.put(data.len() as u64 - 1, 16);
                w.put(1, 1); // ISUNCOMPRESSED
                w.bytes(data);
            }
            BrotliBlock::Metadata(data) => {
                assert!(!data.is_empty() && data.len() <= 1 << 24);
                w.put(3, 2); // MNIBBLES 0: metadata
                w.put(0, 1); // reserved
                let skip = data.len() as u64 - 1;
                let nbytes = (64 - skip.leading_zeros()).div_ceil(8).max(1);
                w.put(u64::from(nbytes), 2); // MSKIPBYTES
                w.put(skip, nbytes * 8);
                w.bytes(data);
            }
        }
    }
    w.put(1, 1); // ISLAST
    w.put(1, 1); // ISLASTEMPTY
    w.out
}

/// The proxy with every default but `data_dir` (and CONNECT a blind tunnel: no CA needed
/// for plain HTTP), and the shipped rules.
pub async fn shipped_proxy() -> (Proxy, tempfile::TempDir) {
    shipped_proxy_with("").await
}

/// [`shipped_proxy`] with `yaml` as the rest of the config file.
pub async fn shipped_proxy_with(yaml: &str) -> (Proxy, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules");
    let text = format!(
        "rules: {}\ndata_dir: {}\ntls: {{ intercept: false }}\n{yaml}",
        rules.display(),
        data.path().display()
    );
    let config = config::from_yaml(&text, None, &Overrides::default()).unwrap();
    (Proxy::start_with(config).await, data)
}

/// Sends one raw request (head lines without the request line, Host or Content-Length)
/// and returns the status and what the upstream saw.
pub async fn send(
    upstream: &Upstream,
    proxy: &Proxy,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<Recorded>) {
    let mut raw = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        upstream.url(path),
        upstream.addr
    );
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = raw.into_bytes();
    bytes.extend_from_slice(body);
    let reply = parse_reply(&exchange(proxy.addr, &bytes).await);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    (reply.status, upstream.requests())
}

/// [`send`] of a `POST` with `Content-Type: application/x-www-form-urlencoded`.
pub async fn send_form(
    upstream: &Upstream,
    proxy: &Proxy,
    path: &str,
    body: &[u8],
) -> (u16, Vec<Recorded>) {
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    send(upstream, proxy, "POST", path, &[form], body).await
}

pub fn assert_blocked(status: u16, seen: &[Recorded], what: &str) {
    assert!(
        status == 403 && seen.is_empty(),
        "{what}: status {status}, upstream received {} request(s): {:?}",
        seen.len(),
        seen.iter()
            .map(|r| (
                &r.method,
                &r.target,
                r.received,
                r.complete,
                String::from_utf8_lossy(&r.body[..r.body.len().min(120)]).into_owned()
            ))
            .collect::<Vec<_>>()
    );
}

/// An engine of the fixture rules.
pub fn fixture_engine() -> egress_dlp::scan::Engine {
    egress_dlp::scan::Engine::new(&egress_dlp::rules::load_dir(&fixture_rules()).unwrap())
}

/// The outcome of a body of `ct` and `ce` fed in `pieces` through the decode pipeline with
/// default limits, and the most bytes its decoders held unscanned after a piece
/// ([`egress_dlp::decode::Inspection::waiting`]).
pub fn inspect_pieces(
    engine: &egress_dlp::scan::Engine,
    ct: Option<&str>,
    ce: Option<&str>,
    pieces: &[&[u8]],
) -> (egress_dlp::decode::Outcome, u64) {
    let limits = egress_dlp::decode::Limits::default();
    let mut i = egress_dlp::decode::Inspection::new(
        engine,
        &limits,
        ct.map(str::as_bytes),
        ce.map(str::as_bytes),
    );
    let mut max_waiting = 0;
    for p in pieces {
        i.feed(p);
        max_waiting = max_waiting.max(i.waiting());
    }
    (i.finish(), max_waiting)
}

/// Distinct values of `rule` in an outcome.
pub fn distinct_of(outcome: &egress_dlp::decode::Outcome, rule: &str) -> u64 {
    outcome
        .findings
        .rules
        .iter()
        .find(|f| f.rule == rule)
        .map_or(0, |f| f.distinct)
}

/// Distinct values of `rule` found in a body fed in `pieces` as `ct`, through the decode
/// pipeline with default limits.
pub fn inspected_distinct(
    engine: &egress_dlp::scan::Engine,
    ct: Option<&str>,
    pieces: &[&[u8]],
    rule: &str,
) -> u64 {
    distinct_of(&inspect_pieces(engine, ct, None, pieces).0, rule)
}

/// (rule id, count, distinct) per rule, and the not-scanned reason, if any: what split
/// invariance compares.
pub type Summary = (Vec<(String, u64, u64)>, Option<String>);

/// The [`Summary`] of an outcome.
pub fn summary(out: &egress_dlp::decode::Outcome) -> Summary {
    let rules = out
        .findings
        .rules
        .iter()
        .map(|f| (f.rule.clone(), f.count, f.distinct))
        .collect();
    let reason = out.not_scanned.as_ref().map(|n| format!("{:?}", n.reason));
    (rules, reason)
}

/// The [`Summary`] of a form (or other `ct`) body fed in `pieces` with default limits.
pub fn summarize(engine: &egress_dlp::scan::Engine, ct: &str, pieces: &[&[u8]]) -> Summary {
    summary(&inspect_pieces(engine, Some(ct), None, pieces).0)
}

/// POSTs a form body to `upstream`'s `/backup` through `proxy` over a raw socket
/// (Content-Length, `Accept: text/html`); returns the proxy's reply.
pub async fn post_raw_form(upstream: &Upstream, proxy: &Proxy, body: &[u8]) -> Reply {
    let url = upstream.url("/backup");
    let head = format!(
        "POST {url} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: text/html\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        upstream.addr,
        body.len()
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    parse_reply(&exchange(proxy.addr, &bytes).await)
}

/// A gRPC message: its flag (compressed or not), its 4-byte length, its payload.
pub fn grpc_message(payload: &[u8], compressed: bool) -> Vec<u8> {
    let mut m = vec![u8::from(compressed)];
    m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// `data` as one chunk of an HTTP/1.1 chunked body.
pub fn http_chunk(data: &[u8]) -> Vec<u8> {
    let mut c = format!("{:x}\r\n", data.len()).into_bytes();
    c.extend_from_slice(data);
    c.extend_from_slice(b"\r\n");
    c
}
