//! TLS helpers for the interception tests: a test CA (rcgen) that issues upstream
//! certificates, a recording HTTPS upstream (HTTP/1.1 and HTTP/2 by ALPN), a proxy with
//! interception on and its CA in a temporary data directory, and a rustls client that
//! CONNECTs through the proxy.
//!
//! Everything listens and connects on loopback only.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use egress_dlp::config::{self, Overrides};
use egress_dlp::proxy;
use egress_dlp::tls::Interceptor;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

use crate::support::{Behavior, Recorded, fixture_rules, record};

/// The usual interception setup: a test CA, a recording TLS upstream with its
/// certificate for `upstream.test`, and a proxy that trusts the CA and may CONNECT to it.
pub struct Intercepted {
    pub ca: TestCa,
    pub upstream: TlsUpstream,
    pub proxy: TlsProxy,
}

impl Intercepted {
    /// With the upstream offering `alpn` and `extra` as the rest of the proxy's config.
    pub async fn start(alpn: &[&str], extra: &str) -> Intercepted {
        let ca = TestCa::new();
        let upstream = TlsUpstream::start(ca.issue(&["upstream.test"], false), alpn).await;
        let proxy = TlsProxy::trusting(&ca, upstream.addr.port(), extra).await;
        Intercepted {
            ca,
            upstream,
            proxy,
        }
    }

    /// An HTTP/2 client connection to the upstream as `upstream.test`, intercepted.
    pub async fn h2<B>(&self) -> hyper::client::conn::http2::SendRequest<B>
    where
        B: hyper::body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        h2_via(&self.proxy, self.upstream.addr, "upstream.test").await
    }

    /// `https://upstream.test:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://upstream.test:{}{path}", self.upstream.addr.port())
    }
}

/// The ring provider, explicitly (no process default is installed).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA for test upstreams, written to a PEM file for `tls.upstream_roots`.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate.
    pub cert: CertificateDer<'static>,
    /// Its PEM file.
    pub pem_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// A certificate chain and its key, for a test server.
#[derive(Clone)]
pub struct ServerCert {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: Arc<PrivateKeyDer<'static>>,
}

impl TestCa {
    /// A fresh CA.
    pub fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "egress-dlp test upstream CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pem_path = dir.path().join("upstream-ca.pem");
        std::fs::write(&pem_path, cert.pem()).unwrap();
        TestCa {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
            pem_path,
            _dir: dir,
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid from an hour
    /// ago for a day, or (`expired`) from two days ago until yesterday.
    pub fn issue(&self, names: &[&str], expired: bool) -> ServerCert {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = names.iter().map(|n| san(n)).collect();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        if expired {
            params.not_before = (now - 2 * day).into();
            params.not_after = (now - day).into();
        } else {
            params.not_before = (now - Duration::from_secs(3600)).into();
            params.not_after = (now + day).into();
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ServerCert {
            chain: vec![cert.der().clone()],
            key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            ))),
        }
    }
}

fn san(name: &str) -> SanType {
    match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.to_string().try_into().unwrap()),
    }
}

/// A self-signed certificate for `names` (trusted by nobody).
pub fn self_signed(names: &[&str]) -> ServerCert {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    ServerCert {
        chain: vec![certified.cert.der().clone()],
        key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ))),
    }
}

/// A TLS server config presenting `cert`, offering `alpn` (e.g. `["h2", "http/1.1"]`).
pub fn server_config(cert: &ServerCert, alpn: &[&str]) -> rustls::ServerConfig {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(cert.chain.clone(), cert.key.clone_key())
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config
}

/// A recording HTTPS upstream on `127.0.0.1:0`: HTTP/2 or HTTP/1.1 by ALPN.
pub struct TlsUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The certificate it presents.
    pub cert: ServerCert,
    seen: Arc<Mutex<Vec<Arc<Mutex<Recorded>>>>>,
    versions: Arc<Mutex<Vec<Version>>>,
    handshakes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TlsUpstream {
    /// Serves with `cert`, offering `alpn` (e.g. `["h2", "http/1.1"]`).
    pub async fn start(cert: ServerCert, alpn: &[&str]) -> TlsUpstream {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&cert, alpn)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Arc<Mutex<Recorded>>>>> = Arc::default();
        let versions: Arc<Mutex<Vec<Version>>> = Arc::default();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (s, v, h) = (seen.clone(), versions.clone(), handshakes.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, s, v, h) = (acceptor.clone(), s.clone(), v.clone(), h.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    h.fetch_add(1, Ordering::Relaxed);
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let behavior = Arc::new(Mutex::new(Behavior::Respond));
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        v.lock().unwrap().push(req.version());
                        record(req, s.clone(), behavior.clone())
                    });
                    let io = TokioIo::new(tls);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await;
                    }
                });
            }
        });
        TlsUpstream {
            addr,
            cert,
            seen,
            versions,
            handshakes,
            task,
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.lock().unwrap().clone())
            .collect()
    }

    /// The HTTP version of every request received so far.
    pub fn versions(&self) -> Vec<Version> {
        self.versions.lock().unwrap().clone()
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::Relaxed)
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running proxy with interception on, its CA in a temporary data directory.
pub struct TlsProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its admin listener (`/metrics`).
    pub admin: SocketAddr,
    /// The interceptor (its counters and leaf cache).
    pub tls: Arc<Interceptor>,
    /// The data directory (`ca.pem`, `ca-key.pem`).
    pub data_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TlsProxy {
    /// Starts a proxy with the fixture rules, a new CA, and `yaml` as the rest of the
    /// config (which should hold a `tls:` section).
    pub async fn start(yaml: &str) -> TlsProxy {
        let data_dir = tempfile::tempdir().unwrap();
        let text = format!(
            "rules: {}\ndata_dir: {}\n{yaml}",
            fixture_rules().display(),
            data_dir.path().display()
        );
        let config = config::from_yaml(&text, None, &Overrides::default())
            .unwrap_or_else(|e| panic!("test config: {e}"));
        let mut out = Vec::new();
        egress_dlp::cli::prepare_ca(&config.tls, &mut out).unwrap();
        let tls = Arc::new(Interceptor::new(&config.tls).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let options = proxy::RunOptions {
            admin: Some(admin),
            tls: Some(tls.clone()),
            ..proxy::RunOptions::default()
        };
        let task = tokio::spawn(proxy::run_with(
            listener,
            options,
            Arc::new(config),
            async {
                let _ = stopped.await;
            },
        ));
        TlsProxy {
            addr,
            admin: admin_addr,
            tls,
            data_dir,
            stop: Some(stop),
            task,
        }
    }

    /// [`TlsProxy::start`] trusting `ca` for upstream certificates and allowing CONNECTs
    /// to `port` (a test upstream's); `extra`: the rest of the config.
    pub async fn trusting(ca: &TestCa, port: u16, extra: &str) -> TlsProxy {
        TlsProxy::start(&format!(
            "tls:\n  upstream_roots: ['{}']\naccess:\n  connect_ports: [{port}]\n{extra}",
            ca.pem_path.display()
        ))
        .await
    }

    /// Scrapes and parses `/metrics` from its admin listener.
    pub async fn scrape(&self) -> crate::ops_support::Scrape {
        let raw = b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
        let reply = crate::support::parse_reply(&crate::support::exchange(self.admin, raw).await);
        assert_eq!(reply.status, 200);
        crate::ops_support::Scrape::parse(&reply.text())
    }

    /// `DATA_DIR/ca.pem`.
    pub fn ca_pem(&self) -> PathBuf {
        self.data_dir.path().join("ca.pem")
    }

    /// The proxy's CA certificate.
    pub fn ca_cert(&self) -> CertificateDer<'static> {
        self.tls.ca().cert().clone()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// Sends `CONNECT target` to the proxy and reads its answer head; returns the status and
/// the socket (positioned after the head).
pub async fn connect(proxy: SocketAddr, target: &str) -> (u16, TcpStream) {
    connect_from(IpAddr::from([127, 0, 0, 1]), proxy, target).await
}

/// [`connect`] from `source` (another loopback address: another workstation).
pub async fn connect_from(source: IpAddr, proxy: SocketAddr, target: &str) -> (u16, TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut stream = socket.connect(proxy).await.unwrap();
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("CONNECT answer within 10 s")
            .unwrap();
        assert!(n > 0, "proxy closed during the CONNECT answer: {head:?}");
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    (status, stream)
}

/// A rustls client config trusting `roots`, offering `alpn`.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    alpn: &[&str],
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// An HTTP/2 client connection through `proxy`, intercepting a CONNECT to `upstream` with
/// `server_name` (its connection task runs in the background).
pub async fn h2_via<B>(
    proxy: &TlsProxy,
    upstream: SocketAddr,
    server_name: &str,
) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tls_via(
        proxy.addr,
        &upstream.to_string(),
        server_name,
        &[proxy.ca_cert()],
        &["h2"],
    )
    .await
    .unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// CONNECTs to `target` through the proxy, then handshakes TLS for `server_name` (an IP
/// address sends no SNI) trusting `roots`.
pub async fn tls_via(
    proxy: SocketAddr,
    target: &str,
    server_name: &str,
    roots: &[CertificateDer<'static>],
    alpn: &[&str],
) -> std::io::Result<TlsStream<TcpStream>> {
    tls_via_from(
        IpAddr::from([127, 0, 0, 1]),
        proxy,
        target,
        server_name,
        roots,
        alpn,
    )
    .await
}

/// [`tls_via`] from `source` (another loopback address: another workstation).
pub async fn tls_via_from(
    source: IpAddr,
    proxy: SocketAddr,
    target: &str,
    server_name: &str,
    roots: &[CertificateDer<'static>],
    alpn: &[&str],
) -> std::io::Result<TlsStream<TcpStream>> {
    let (status, tcp) = connect_from(source, proxy, target).await;
    assert_eq!(status, 200, "CONNECT {target}");
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(client_config(roots, alpn))
        .connect(name, tcp)
        .await
}

/// The certificate chain the server presented.
pub fn peer_chain(stream: &TlsStream<TcpStream>) -> Vec<CertificateDer<'static>> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .to_vec()
}

/// An HTTP answer read through a TLS stream.
#[derive(Debug)]
pub struct HttpsReply {
    /// Status code.
    pub status: u16,
    /// The HTTP version of the answer.
    pub version: Version,
    /// Body.
    pub body: String,
}

/// Sends one request over `stream` (HTTP/2 when that was negotiated) and reads the answer.
pub async fn send(
    stream: TlsStream<TcpStream>,
    method: &str,
    authority: &str,
    path: &str,
    body: &[u8],
) -> HttpsReply {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let builder = Request::builder().method(method);
    let req = if h2 {
        builder.uri(format!("https://{authority}{path}"))
    } else {
        builder.uri(path).header("host", authority)
    }
    .header("content-type", "text/csv")
    .body(Full::new(Bytes::copy_from_slice(body)))
    .unwrap();
    let resp = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    };
    let status = resp.status().as_u16();
    let version = resp.version();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    HttpsReply {
        status,
        version,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}
