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
use tokio::sync::{mpsc, watch};

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

/// Most header fields an upstream's HTTP/1.1 response may have (hyper's default is 100:
/// found in review, a page clearing 120 cookies became a 502). Browsers set no count; the
/// head's size stays bounded by hyper's read buffer.
pub const RESPONSE_HEADER_FIELDS: usize = 1000;

/// Most bytes of header fields an upstream's HTTP/2 response may carry (h2's default is
/// 16 KiB: found in review, a page clearing 150 cookies over HTTP/2 became a 502, where
/// HTTP/1.1 took it). hyper's HTTP/1.1 read buffer bounds a head to about as much.
pub const RESPONSE_HEADER_BYTES: u32 = 400 << 10;

/// Builds the pooled client. Like the upstream connections of intercepted CONNECTs, it
/// takes a response with whitespace between a field name and its colon, and removes it
/// (RFC 9112 §5.1 asks exactly that of a proxy; such a response was a 502).
pub fn client(connector: Connector) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .http1_max_headers(RESPONSE_HEADER_FIELDS)
        .http1_allow_spaces_after_header_name_in_responses(true)
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
/// scanned, through a bounded channel). It can report each piece the upstream connection
/// takes ([`UpstreamBody::progress`]), so that a slow but steady upload is told from a
/// stalled one.
#[derive(Debug)]
pub struct UpstreamBody {
    source: Source,
    /// Told each time the connection takes a piece; dropped with the body (and its
    /// [`copy`](UpstreamBody::copy)), when the connection is done with it.
    taken: Option<Arc<watch::Sender<()>>>,
}

#[derive(Debug)]
enum Source {
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
        UpstreamBody {
            source: Source::Held {
                chunks: chunks.into(),
                remaining,
            },
            taken: None,
        }
    }

    /// A streamed body and the sender that feeds it (`capacity` pieces in flight at most).
    pub fn streamed(capacity: usize) -> (mpsc::Sender<Piece>, UpstreamBody) {
        let (tx, rx) = mpsc::channel(capacity);
        let body = UpstreamBody {
            source: Source::Streamed { rx, ended: false },
            taken: None,
        };
        (tx, body)
    }

    /// From now on, tells the returned [`Progress`] each time the connection takes a piece
    /// of this body.
    pub fn progress(&mut self) -> Progress {
        let (tx, rx) = watch::channel(());
        self.taken = Some(Arc::new(tx));
        Progress(rx)
    }

    /// A held body's copy, to send again should the upstream refuse the request unprocessed
    /// (its chunks are shared, not copied); `None` for a streamed one, whose bytes are
    /// sent once. Taken before the body is sent, it is the whole body.
    pub fn copy(&self) -> Option<UpstreamBody> {
        match &self.source {
            Source::Held { chunks, remaining } => Some(UpstreamBody {
                source: Source::Held {
                    chunks: chunks.clone(),
                    remaining: *remaining,
                },
                taken: self.taken.clone(),
            }),
            Source::Streamed { .. } => None,
        }
    }
}

/// How an upstream connection is taking a request body (see [`UpstreamBody::progress`]).
pub struct Progress(watch::Receiver<()>);

impl Progress {
    /// Waits for the upstream's answer, `Err(UpstreamTimeout)` once `timeout` has passed
    /// with the connection taking no piece of the body (a stalled upstream) or, once it
    /// has taken all of it, without an answer. So the timeout is the upstream's time to
    /// answer, whatever the upload's length: an upload to a slow uplink that reads it
    /// steadily is not cut part-way (found in review: the whole send was timed).
    pub async fn answer<T>(
        mut self,
        answer: impl Future<Output = Result<T, ProxyError>>,
        timeout: Duration,
    ) -> Result<T, ProxyError> {
        tokio::pin!(answer);
        let mut deadline = tokio::time::Instant::now() + timeout;
        let mut open = true;
        loop {
            tokio::select! {
                answered = &mut answer => return answered,
                taken = self.0.changed(), if open => {
                    // `Err`: the connection is done with the body (all of it was taken, or
                    // the request failed, which `answer` says next).
                    open = taken.is_ok();
                    deadline = tokio::time::Instant::now() + timeout;
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(ProxyError::UpstreamTimeout(timeout));
                }
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyAborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyAborted>>> {
        let this = self.get_mut();
        let next = match &mut this.source {
            Source::Held { chunks, remaining } => chunks.pop_front().map(|c| {
                *remaining -= c.len() as u64;
                Ok(Frame::data(c))
            }),
            Source::Streamed { rx, ended } => {
                if *ended {
                    return Poll::Ready(None);
                }
                match ready!(rx.poll_recv(cx)) {
                    Some(Piece::Data(c)) => Some(Ok(Frame::data(c))),
                    Some(Piece::End) => {
                        *ended = true;
                        None
                    }
                    None => Some(Err(BodyAborted)),
                }
            }
        };
        if let (Some(Ok(_)), Some(taken)) = (&next, &this.taken) {
            taken.send_replace(());
        }
        Poll::Ready(next)
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Held { chunks, .. } => chunks.is_empty(),
            Source::Streamed { ended, .. } => *ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Held { remaining, .. } => SizeHint::with_exact(*remaining),
            Source::Streamed { .. } => SizeHint::default(),
        }
    }
}
