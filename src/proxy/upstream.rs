//! The upstream side: connecting to origin servers (with the connect timeout and the loop
//! guard), the pooled hyper-util client, and the request body the proxy sends upstream.
//!
//! Connecting is done here rather than by hyper-util's `HttpConnector` so that every
//! failure comes back typed ([`ConnectError`]) and the same code serves forwarded requests
//! and CONNECT tunnels. This module does not decide anything about content: the body it is
//! given has already been (or is being) scanned.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::error::ProxyError;

/// Why a connection to an upstream could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The name did not resolve.
    #[error("DNS: {0}")]
    Dns(#[source] io::Error),
    /// The name resolved to no address.
    #[error("the host name resolves to no address")]
    NoAddress,
    /// Every address refused; the last one is named.
    #[error("connection to {0} refused")]
    Refused(SocketAddr),
    /// Another socket error; the address is named.
    #[error("connecting to {0}: {1}")]
    Io(SocketAddr, #[source] io::Error),
    /// Resolution and connection together took longer than the connect timeout.
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    /// The target is this proxy's own listener (or admin listener).
    #[error("{0} is this proxy's own listener")]
    Loop(SocketAddr),
}

/// Opens TCP connections to upstreams, refusing the proxy's own addresses.
#[derive(Debug, Clone)]
pub struct Connector {
    own: Arc<[SocketAddr]>,
    timeout: Duration,
}

impl Connector {
    /// A connector that refuses `own` addresses and gives up after `timeout`.
    pub fn new(own: Vec<SocketAddr>, timeout: Duration) -> Connector {
        Connector {
            own: own.into(),
            timeout,
        }
    }

    /// Resolves `host` and connects to `port` on the first address that answers.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let attempt = async {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
                .await
                .map_err(ConnectError::Dns)?
                .collect();
            if let Some(own) = addrs.iter().find(|a| self.is_own(a)) {
                return Err(ConnectError::Loop(*own));
            }
            let mut last = ConnectError::NoAddress;
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(stream) => {
                        // A name can point at one of this host's other addresses: compare
                        // the ends of the connection, not only the name.
                        if let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) {
                            if local.ip() == peer.ip()
                                && self.own.iter().any(|o| o.port() == peer.port())
                            {
                                return Err(ConnectError::Loop(peer));
                            }
                        }
                        // Small requests and interactive traffic: no Nagle delay.
                        let _ = stream.set_nodelay(true);
                        return Ok(stream);
                    }
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        last = ConnectError::Refused(addr)
                    }
                    Err(e) => last = ConnectError::Io(addr, e),
                }
            }
            Err(last)
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or(Err(ConnectError::Timeout(self.timeout)))
    }

    fn is_own(&self, addr: &SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        self.own.iter().any(|o| {
            o.port() == addr.port()
                && (o.ip().to_canonical() == ip || (o.ip().is_unspecified() && ip.is_loopback()))
        })
    }
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future =
        Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, ConnectError>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri.host().ok_or(ConnectError::NoAddress)?;
            let port = uri.port_u16().unwrap_or(80);
            this.connect(host, port).await.map(TokioIo::new)
        })
    }
}

/// The pooled HTTP/1.1 client used for every forwarded request.
pub type UpstreamClient = Client<Connector, UpstreamBody>;

/// Builds the pooled client.
pub fn client(connector: Connector) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// Turns a client error into where it came from.
pub fn classify(err: hyper_util::client::legacy::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            return c.into();
        }
        if e.downcast_ref::<BodyAborted>().is_some() {
            return ProxyError::Upstream("request body aborted".into());
        }
        source = e.source();
    }
    if err.is_connect() {
        return ProxyError::UpstreamConnect(err.to_string());
    }
    let detail = std::error::Error::source(&err)
        .map(|s| s.to_string())
        .unwrap_or_else(|| err.to_string());
    ProxyError::Upstream(detail)
}

/// The upstream request body ended without its end marker: the proxy aborted it (a block
/// decision) so that the upstream never sees a complete request.
#[derive(Debug, thiserror::Error)]
#[error("request body aborted by the proxy")]
pub struct BodyAborted;

/// One piece sent to a streamed upstream body.
#[derive(Debug)]
pub enum Piece {
    /// Body bytes, already scanned.
    Data(Bytes),
    /// The body is complete and allowed: end it normally.
    End,
}

/// The body of a forwarded request: held (scanned whole, then sent) or streamed (sent as
/// scanned, through a bounded channel).
#[derive(Debug)]
pub enum UpstreamBody {
    /// A body read and scanned whole before forwarding.
    Held {
        /// The chunks, in order.
        chunks: VecDeque<Bytes>,
        /// Bytes not yet yielded.
        remaining: u64,
    },
    /// A body forwarded while it is scanned. Ends normally only after [`Piece::End`]; if the
    /// sender is dropped first, the body fails and the upstream request is aborted.
    Streamed {
        /// Pieces from the scanning task.
        rx: mpsc::Receiver<Piece>,
        /// Whether [`Piece::End`] was received.
        ended: bool,
    },
}

impl UpstreamBody {
    /// A held body from its chunks.
    pub fn held(chunks: Vec<Bytes>) -> UpstreamBody {
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        UpstreamBody::Held {
            chunks: chunks.into(),
            remaining,
        }
    }

    /// A streamed body and the sender that feeds it (`capacity` pieces in flight at most).
    pub fn streamed(capacity: usize) -> (mpsc::Sender<Piece>, UpstreamBody) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, UpstreamBody::Streamed { rx, ended: false })
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyAborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyAborted>>> {
        match self.get_mut() {
            UpstreamBody::Held { chunks, remaining } => Poll::Ready(chunks.pop_front().map(|c| {
                *remaining -= c.len() as u64;
                Ok(Frame::data(c))
            })),
            UpstreamBody::Streamed { rx, ended } => {
                if *ended {
                    return Poll::Ready(None);
                }
                match ready!(rx.poll_recv(cx)) {
                    Some(Piece::Data(c)) => Poll::Ready(Some(Ok(Frame::data(c)))),
                    Some(Piece::End) => {
                        *ended = true;
                        Poll::Ready(None)
                    }
                    None => Poll::Ready(Some(Err(BodyAborted))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Held { chunks, .. } => chunks.is_empty(),
            UpstreamBody::Streamed { ended, .. } => *ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Held { remaining, .. } => SizeHint::with_exact(*remaining),
            UpstreamBody::Streamed { .. } => SizeHint::default(),
        }
    }
}
