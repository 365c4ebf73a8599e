//! Lingering close: when the proxy is done with a client connection, it sends its FIN and
//! reads and discards whatever the client still sends, for up to `limits.linger_time`,
//! before it closes the socket.
//!
//! Closing a TCP socket that has unread bytes makes the kernel send a reset, and a reset
//! can destroy an answer the client has not read yet. That is the normal case for a block
//! decided part-way through an upload, or a 413: the client is still sending its body when
//! the answer goes out, and a client that writes its whole request before reading (many
//! do) would get "connection reset" instead of the block page. Reading to the client's end
//! of stream (or to the time limit) avoids that; it is what Apache and nginx call a
//! lingering close.
//!
//! Only a connection whose last request body was not read to its end lingers: the
//! [`ClientBody`] wrapper keeps an [`Unread`] flag that the socket wrapper, [`LingerIo`],
//! checks when hyper (or a tunnel) drops it. Any other connection closes at once, so idle
//! keep-alive clients do not hold up a shutdown. A lingering socket moves to a short task
//! of its own that holds the connection's slot (lingering connections still count against
//! `limits.max_connections`) and stops at the end of the drain time.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{Guard, Phase};

/// Whether the current request's body on one connection has bytes the proxy has not read.
#[derive(Debug, Clone, Default)]
pub(super) struct Unread(Arc<AtomicBool>);

impl Unread {
    fn set(&self, unread: bool) {
        self.0.store(unread, Ordering::Relaxed);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A client's request body that clears the connection's [`Unread`] flag once it has been
/// read to its end.
#[derive(Debug)]
pub(super) struct ClientBody {
    inner: Incoming,
    unread: Unread,
}

impl ClientBody {
    /// Wraps the body of a request that has just arrived on the connection of `unread`.
    pub(super) fn new(inner: Incoming, unread: Unread) -> ClientBody {
        unread.set(!inner.is_end_stream());
        ClientBody { inner, unread }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || this.inner.is_end_stream() {
            this.unread.set(false);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client socket that lingers when dropped with a request body unread (see the module
/// docs).
pub(super) struct LingerIo {
    stream: Option<TcpStream>,
    linger: Option<Linger>,
    unread: Unread,
}

/// What the lingering task needs besides the socket.
struct Linger {
    time: Duration,
    phase: watch::Receiver<Phase>,
    guard: Guard,
}

impl LingerIo {
    /// Wraps `stream`; dropped while `unread` is set, it lingers for up to `time`, holding
    /// `guard`, unless the server stops first.
    pub(super) fn new(
        stream: TcpStream,
        unread: Unread,
        time: Duration,
        phase: watch::Receiver<Phase>,
        guard: Guard,
    ) -> LingerIo {
        LingerIo {
            stream: Some(stream),
            linger: Some(Linger { time, phase, guard }),
            unread,
        }
    }

    fn stream(&mut self) -> &mut TcpStream {
        self.stream
            .as_mut()
            .expect("the stream is only taken on drop")
    }
}

impl Drop for LingerIo {
    fn drop(&mut self) {
        if !self.unread.get() {
            return;
        }
        let (Some(stream), Some(linger)) = (self.stream.take(), self.linger.take()) else {
            return;
        };
        // Outside a runtime (never, in the proxy) the socket simply closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger.run(stream));
        }
    }
}

impl Linger {
    async fn run(mut self, mut stream: TcpStream) {
        let _guard = self.guard;
        // FIN after whatever is still queued: the client sees the end of the answer.
        let _ = stream.shutdown().await;
        let mut buf = vec![0u8; 16 << 10];
        let discard = async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        tokio::select! {
            _ = discard => {}
            _ = tokio::time::sleep(self.time) => {}
            _ = super::stopped(&mut self.phase) => {}
        }
    }
}

impl AsyncRead for LingerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()).poll_read(cx, buf)
    }
}

impl AsyncWrite for LingerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()).poll_shutdown(cx)
    }
}
