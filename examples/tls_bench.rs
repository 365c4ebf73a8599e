//! The pieces of the TLS interception bench (`benches/tls_bench.sh`): an HTTPS origin, a
//! load client that speaks CONNECT + TLS through an HTTP proxy, a time-to-first-byte probe
//! and a leaf-mint timer.
//!
//! ```text
//! tls_bench upstream DIR THREADS
//!     HTTPS origin on 127.0.0.1 (any free port, printed on the first line): a test CA in
//!     DIR/upstream-ca.pem, a certificate for bench.test and 127.0.0.1; answers `ok 0`.
//! tls_bench load PROXY|direct ORIGIN CA_PEM MODE CONNECTIONS SECONDS
//!     MODE new: each connection does CONNECT (unless direct), a full TLS handshake (no
//!     resumption) for bench.test, one GET, and closes; MODE reuse: each keeps one TLS
//!     connection and sends GETs on it. Runs SECONDS; prints `requests N seconds S rate R`.
//! tls_bench ttfb PROXY ORIGIN CA_PEM PROXY_CA_PEM N
//!     N times, alternating: a new TLS connection straight to the origin, and one through
//!     the proxy (CONNECT, handshake with the proxy's minted leaf); time from the TCP
//!     connect to the response head of one GET. Prints both medians and the difference.
//! tls_bench mint N
//!     Mints N leaves for distinct names with a fresh CA; prints the median and p99.
//! ```
//!
//! Everything stays on loopback; every run is bounded in time or count.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The name the origin's certificate is for, and the clients' SNI.
const NAME: &str = "bench.test";

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["upstream", dir, threads] => runtime(threads.parse()?)?.block_on(upstream(Path::new(dir))),
        ["load", proxy, origin, ca, mode, conns, secs] => runtime(2)?.block_on(load(
            parse_proxy(proxy)?,
            origin.parse()?,
            Path::new(ca),
            *mode == "new",
            conns.parse()?,
            Duration::from_secs(secs.parse()?),
        )),
        ["ttfb", proxy, origin, ca, proxy_ca, n] => runtime(1)?.block_on(ttfb(
            proxy.parse()?,
            origin.parse()?,
            Path::new(ca),
            Path::new(proxy_ca),
            n.parse()?,
        )),
        ["mint", n] => mint(n.parse()?),
        _ => Err("usage: see the doc comment of examples/tls_bench.rs".into()),
    }
}

fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
}

fn parse_proxy(text: &str) -> Result<Option<SocketAddr>, Error> {
    Ok(match text {
        "direct" => None,
        addr => Some(addr.parse()?),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

async fn upstream(dir: &Path) -> Result<(), Error> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tls_bench origin CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("upstream-ca.pem"), ca_cert.pem())?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(vec![NAME.into(), "127.0.0.1".into()])?;
    let cert = params.signed_by(&key, &issuer)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = service_fn(|req: Request<Incoming>| async move {
                let _ = req.into_body().collect().await;
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"ok 0\n",
                ))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every new connection is a full handshake: what a fleet of fresh clients costs.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// TCP to the proxy and CONNECT (or TCP straight to the origin), then TLS for `NAME`.
async fn open(
    proxy: Option<SocketAddr>,
    origin: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    let mut tcp = TcpStream::connect(proxy.unwrap_or(origin)).await?;
    tcp.set_nodelay(true)?;
    if proxy.is_some() {
        tcp.write_all(format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes())
            .await?;
        let mut head = Vec::with_capacity(128);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if tcp.read(&mut byte).await? == 0 {
                return Err("proxy closed during CONNECT".into());
            }
            head.push(byte[0]);
        }
        if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
            return Err(format!("CONNECT: {}", String::from_utf8_lossy(&head)).into());
        }
    }
    let name = ServerName::try_from(NAME)?.to_owned();
    Ok(tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await?)
}

fn get(origin: SocketAddr) -> Request<Empty<Bytes>> {
    Request::builder()
        .uri("/")
        .header("host", format!("{NAME}:{}", origin.port()))
        .body(Empty::new())
        .expect("a valid request")
}

async fn load(
    proxy: Option<SocketAddr>,
    origin: SocketAddr,
    ca: &Path,
    new_connections: bool,
    connections: usize,
    duration: Duration,
) -> Result<(), Error> {
    let config = client_config(ca)?;
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (config, done, errors, stop) =
            (config.clone(), done.clone(), errors.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result: Result<(), Error> = async {
                    let tls = open(proxy, origin, &config).await?;
                    let (mut sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                    let conn = tokio::spawn(conn);
                    loop {
                        let resp = sender.send_request(get(origin)).await?;
                        let ok = resp.status().is_success();
                        resp.into_body().collect().await?;
                        if !ok {
                            return Err("non-2xx answer".into());
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                        if new_connections || stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    drop(sender);
                    let _ = conn.await;
                    Ok(())
                }
                .await;
                if result.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    tokio::time::sleep(duration).await;
    let counted = done.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        // A connection stuck on a dead peer must not hold the bench up.
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    println!(
        "requests {counted} seconds {secs:.2} rate {:.1} errors {}",
        counted as f64 / secs,
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}

async fn one_ttfb(
    proxy: Option<SocketAddr>,
    origin: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> Result<Duration, Error> {
    let start = Instant::now();
    let tls = open(proxy, origin, config).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(get(origin)).await?;
    let elapsed = start.elapsed();
    resp.into_body().collect().await?;
    drop(sender);
    let _ = conn.await;
    Ok(elapsed)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

async fn ttfb(
    proxy: SocketAddr,
    origin: SocketAddr,
    ca: &Path,
    proxy_ca: &Path,
    n: usize,
) -> Result<(), Error> {
    let direct_config = client_config(ca)?;
    let proxied_config = client_config(proxy_ca)?;
    // Warm the host: its leaf is minted and cached before the timing starts.
    one_ttfb(Some(proxy), origin, &proxied_config).await?;
    let (mut direct, mut proxied) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        direct.push(one_ttfb(None, origin, &direct_config).await?);
        proxied.push(one_ttfb(Some(proxy), origin, &proxied_config).await?);
    }
    let (d, p) = (median(direct), median(proxied));
    println!(
        "direct_ms {:.3} proxied_ms {:.3} added_ms {:.3}",
        d.as_secs_f64() * 1e3,
        p.as_secs_f64() * 1e3,
        (p.as_secs_f64() - d.as_secs_f64()) * 1e3
    );
    Ok(())
}

fn mint(n: usize) -> Result<(), Error> {
    use egress_dlp::tls::{Ca, CaPaths, LeafName, ca};
    let dir = std::env::temp_dir().join(format!("tls_bench_mint_{}", std::process::id()));
    let paths = CaPaths::in_dir(&dir);
    ca::init(&paths)?;
    let authority = Ca::load(&paths, provider())?;
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let name = LeafName::Dns(format!("host{i}.mint.test"));
        let start = Instant::now();
        authority.mint(&name, Duration::from_secs(86_400))?;
        times.push(start.elapsed());
    }
    let _ = std::fs::remove_dir_all(PathBuf::from(&dir));
    times.sort_unstable();
    println!(
        "mints {n} median_ms {:.3} p99_ms {:.3}",
        times[n / 2].as_secs_f64() * 1e3,
        times[n * 99 / 100].as_secs_f64() * 1e3
    );
    Ok(())
}
