//! Reading a client's ClientHello before deciding anything: its server name (SNI) and the
//! application protocols it offers (ALPN), with the raw bytes kept so they can be replayed
//! to rustls (interception) or to the upstream (a bypassed host's blind tunnel).
//!
//! rustls's own [`Acceptor`] parses the hello, so what is accepted here is exactly what
//! rustls would accept. At most [`MAX_HELLO_BYTES`] are read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::stats::ClientFailure;

/// The most bytes read while looking for a complete ClientHello (a few records; real ones
/// are under 2 KiB, post-quantum key shares a little more).
pub const MAX_HELLO_BYTES: usize = 64 << 10;

/// What a client's ClientHello says.
#[derive(Debug, Clone)]
pub struct ClientHello {
    /// The server name it asks for (SNI), if any.
    pub server_name: Option<String>,
    /// Application protocols it offers, in its order of preference.
    pub alpn: Vec<Vec<u8>>,
    /// Every byte read from the client so far (the hello, and anything after it).
    pub bytes: Vec<u8>,
}

/// Reads from `io` until a complete ClientHello has arrived. No deadline here: the caller
/// bounds it with `tls.handshake_timeout`.
pub async fn read<R: AsyncRead + Unpin>(io: &mut R) -> Result<ClientHello, ClientFailure> {
    let mut acceptor = Acceptor::default();
    let mut bytes = Vec::with_capacity(2048);
    let mut buf = [0u8; 4096];
    loop {
        let n = match io.read(&mut buf).await {
            Ok(0) | Err(_) => return Err(ClientFailure::Closed),
            Ok(n) => n,
        };
        bytes.extend_from_slice(&buf[..n]);
        if bytes.len() > MAX_HELLO_BYTES {
            return Err(ClientFailure::NotTls);
        }
        let mut fresh = &buf[..n];
        while !fresh.is_empty() {
            if acceptor.read_tls(&mut fresh).is_err() {
                return Err(ClientFailure::NotTls);
            }
        }
        match acceptor.accept() {
            Ok(None) => continue,
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                let server_name = hello.server_name().map(str::to_owned);
                let alpn = hello
                    .alpn()
                    .map(|protocols| protocols.map(<[u8]>::to_vec).collect())
                    .unwrap_or_default();
                return Ok(ClientHello {
                    server_name,
                    alpn,
                    bytes,
                });
            }
            Err(_) => return Err(ClientFailure::NotTls),
        }
    }
}

/// The protocols spoken inside an intercepted connection, in the proxy's preference.
pub const ALPN_H2: &[u8] = b"h2";
/// HTTP/1.1's ALPN id.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The ALPN list to offer the upstream for a client that offered `client`: the HTTP
/// versions the client offers, in its order, plus HTTP/1.1 for an HTTP/2-only client (the
/// proxy translates, so such a client still reaches an HTTP/1.1-only server). `None`
/// when the client offers ALPN but no HTTP version (a protocol the proxy cannot inspect);
/// an empty list when it offers no ALPN at all (plain HTTP/1.1).
pub fn upstream_offer(client: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    if client.is_empty() {
        return Some(Vec::new());
    }
    let mut offer: Vec<Vec<u8>> = client
        .iter()
        .filter(|p| p.as_slice() == ALPN_H2 || p.as_slice() == ALPN_HTTP11)
        .cloned()
        .collect();
    match offer.as_slice() {
        [] => return None,
        [only] if only.as_slice() == ALPN_H2 => offer.push(ALPN_HTTP11.to_vec()),
        _ => {}
    }
    offer.dedup();
    Some(offer)
}

/// The protocol to offer the client: the upstream's choice when the client offered it,
/// else the client's HTTP/1.1, else its HTTP/2 (translated to the upstream's HTTP/1.1).
/// `None` when the client offered no ALPN.
pub fn client_choice(client: &[Vec<u8>], upstream: Option<&[u8]>) -> Option<Vec<u8>> {
    let offered = |p: &[u8]| client.iter().any(|c| c.as_slice() == p);
    if let Some(chosen) = upstream.filter(|p| offered(p)) {
        return Some(chosen.to_vec());
    }
    [ALPN_HTTP11, ALPN_H2]
        .into_iter()
        .find(|p| offered(p))
        .map(<[u8]>::to_vec)
}

/// An I/O object that yields `prefix` before reading from `inner` (writes go straight to
/// `inner`): replays the bytes [`read`] consumed.
#[derive(Debug)]
pub struct Prefixed<T> {
    prefix: Vec<u8>,
    at: usize,
    inner: T,
}

impl<T> Prefixed<T> {
    /// Replays `prefix`, then reads `inner`.
    pub fn new(prefix: Vec<u8>, inner: T) -> Prefixed<T> {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ALPN list, as written in a table.
    type List = &'static [&'static [u8]];
    /// One ALPN id.
    type Proto = &'static [u8];

    #[test]
    fn alpn_offered_upstream() {
        let v = |list: &[&[u8]]| list.iter().map(|p| p.to_vec()).collect::<Vec<_>>();
        let cases: &[(List, Option<List>)] = &[
            (&[], Some(&[])),
            (&[b"h2", b"http/1.1"], Some(&[b"h2", b"http/1.1"])),
            (&[b"http/1.1", b"h2"], Some(&[b"http/1.1", b"h2"])),
            (&[b"spdy/3", b"http/1.1"], Some(&[b"http/1.1"])),
            (&[b"h2"], Some(&[b"h2", b"http/1.1"])),
            (&[b"imap"], None),
            (&[b"h3"], None),
        ];
        for (client, want) in cases {
            assert_eq!(upstream_offer(&v(client)), want.map(v), "{client:?}");
        }
    }

    #[test]
    fn alpn_offered_to_the_client() {
        let v = |list: &[&[u8]]| list.iter().map(|p| p.to_vec()).collect::<Vec<_>>();
        let cases: &[(List, Option<Proto>, Option<Proto>)] = &[
            (&[], None, None),
            (&[], Some(b"http/1.1"), None),
            (&[b"h2", b"http/1.1"], Some(b"h2"), Some(b"h2")),
            (&[b"h2", b"http/1.1"], None, Some(b"http/1.1")),
            (&[b"h2"], Some(b"http/1.1"), Some(b"h2")),
            (&[b"http/1.1"], Some(b"h2"), Some(b"http/1.1")),
        ];
        for (client, upstream, want) in cases {
            assert_eq!(
                client_choice(&v(client), *upstream).as_deref(),
                *want,
                "{client:?} {upstream:?}"
            );
        }
    }

    #[tokio::test]
    async fn garbage_and_early_close_are_told_apart() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut b, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read(&mut a).await.unwrap_err(), ClientFailure::NotTls);
        let (mut a, b) = tokio::io::duplex(1024);
        drop(b);
        assert_eq!(read(&mut a).await.unwrap_err(), ClientFailure::Closed);
    }

    #[tokio::test]
    async fn an_endless_handshake_record_is_refused_without_reading_it_all() {
        // A handshake record header claiming 64 KiB, then zeros without end: refused as
        // not TLS (rustls caps records at 16 KiB + overhead) long before MAX_HELLO_BYTES.
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(async move {
            let _ =
                tokio::io::AsyncWriteExt::write_all(&mut b, &[0x16, 0x03, 0x01, 0xff, 0xff]).await;
            let zeros = vec![0u8; 4096];
            while tokio::io::AsyncWriteExt::write_all(&mut b, &zeros)
                .await
                .is_ok()
            {}
        });
        assert_eq!(read(&mut a).await.unwrap_err(), ClientFailure::NotTls);
        drop(a);
        writer.await.unwrap();
    }
}
