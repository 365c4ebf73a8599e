//! gRPC calls (`Content-Type: application/grpc`, `+proto`, `+json`…): the request body is a
//! stream of length-prefixed messages that may never end while the call lives (client and
//! bidirectional streaming), so it cannot be held whole as other bodies are: the upstream
//! would never get the first message, and the call would hang until it timed out.
//!
//! Instead, once the request head (target, headers) is judged, the request goes upstream
//! at once with a streamed body, and each message is held, scanned (its own decode
//! [`Inspection`](crate::decode::Inspection): a compressed message — flag 1 — through the
//! call's `grpc-encoding`, e.g. gzip) and judged like a request (its own audit event, id
//! `<request id>-m<n>`; metrics; cumulative windows) before its bytes go on. The upstream's
//! answer goes back to the client as soon as it comes, while the client goes on sending.
//! A blocked message never leaves: the upstream request is aborted (its stream reset) and
//! the client gets the block answer. When the upstream had not answered yet, that is a 403
//! with the call's status in its header fields ("Trailers-Only": `grpc-status: 7`,
//! PERMISSION_DENIED, and a `grpc-message` with the kinds, counts and request id; see
//! `page::grpc_refusal`). Once the answer has begun, it ends between two of its messages
//! with those fields as trailers (HTTP/2) or as gRPC-Web's trailer frame; an answer cut
//! inside a message, or gRPC over HTTP/1.1 (whose trailers reach a client only when
//! announced), is reset instead. A unary call, one message, is thus held and judged whole,
//! as any body.
//!
//! Each message is judged alone (a call's messages are separate documents, and a stream
//! may last for hours): a list sent one row per message is what `policy.windows` counts.
//! gRPC-Web's binary form (`application/grpc-web`, `+proto`) goes this way too; its text
//! form (`-text`, base64) goes the usual way, where a message compressed by its
//! `grpc-encoding` is not read. A call with a `Content-Encoding` other than `identity`
//! (not part of gRPC) is refused, and so is one with two `grpc-encoding` fields.
//! A message over `limits.hold_bytes` (gRPC's own default limit is 4 MiB) is refused
//! (413 or a reset); held bytes come from the hold budget as they arrive, and a message
//! must come at `limits.body_min_rate` once `header_read_timeout` has passed (else the call
//! is cut: an unfinished one would hold its budget as long as the call lives). A body that ends
//! inside a message's prefix or payload is judged on what came and then ends (the upstream
//! sees a truncated message, as it would have directly).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info};

use super::budget::Reservation;
use super::error::ProxyError;
use super::linger::ClientBody;
use super::observe::Ongoing;
use super::upstream::{Piece, UpstreamBody};
use super::{ConnCtx, ProxyBody, intercept, page};
use crate::metrics::TimedScan;

/// The length prefix of a message: a flag byte and a 4-byte big-endian length.
const PREFIX: usize = 5;

/// Whether a request with this `Content-Type` goes through the message pump: gRPC, and
/// gRPC-Web's binary form, which frames its messages the same way (its bodies end, but a
/// compressed message is still only readable through `grpc-encoding`: found in review);
/// its text form is base64 of them, read by the usual path.
pub(super) fn is_grpc(content_type: Option<&[u8]>) -> bool {
    page::grpc_family(content_type).is_some_and(|f| f != "application/grpc-web-text")
}

/// What a call's messages are judged with: the request's.
pub(super) struct Call {
    /// The request, with its record: a blocked message makes the call a block.
    pub(super) req: Ongoing,
    /// The call's `grpc-encoding`: how a message with the compressed flag is compressed.
    pub(super) encoding: Option<Vec<u8>>,
}

/// Sends the call upstream with its body streamed message by message (see the module
/// doc) and returns the upstream's answer, cut should a later message be blocked.
pub(super) async fn through(
    ctx: &ConnCtx,
    parts: http::request::Parts,
    body: ClientBody,
    call: Call,
) -> Result<Response<ProxyBody>, ProxyError> {
    let shared = call.req.shared.clone();
    let timeout = call.req.live.config.limits.upstream_response_timeout;
    // One message in the channel at a time: each is up to `hold_bytes`, and the pump keeps
    // the reservations of those not yet written (found in review: 8 in the channel held
    // 8 × `hold_bytes` the budget did not count).
    let content_type = parts.headers.get(http::header::CONTENT_TYPE);
    let ending = match page::grpc_family(content_type.map(|v| v.as_bytes())) {
        Some("application/grpc") if parts.version == http::Version::HTTP_2 => Ending::Trailers,
        Some("application/grpc") | None => Ending::Reset,
        Some(_) => Ending::WebFrame,
    };
    let (tx, mut up_body) = UpstreamBody::streamed(1);
    let progress = up_body.progress();
    let send = intercept::send(&shared.client, Request::from_parts(parts, up_body));
    tokio::pin!(send);
    // The grpc-message of a block, once the pump has one.
    let (cut_tx, cut_rx) = watch::channel(None::<Arc<str>>);
    // How the pump ended: the body passed on whole, or an error (a block) that is the
    // client's answer if the upstream has not answered yet.
    let (done_tx, done_rx) = oneshot::channel::<Result<(), ProxyError>>();
    let guard = ctx.guard.clone();
    let phase = ctx.phase.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let ended = pump(&call, body, &tx, phase).await;
        if let Err(e) = &ended {
            let contact = &call.req.live.config.block_page.contact;
            let text = page::grpc_message(e, &call.req.request_id, contact);
            let _ = cut_tx.send(Some(text.into()));
        }
        // Sent before the upstream request fails for the body dropped below (found in
        // review: that 502 won the race now and then).
        let _ = done_tx.send(ended);
        drop(tx);
    });
    let sent = std::time::Instant::now();
    let mut done = Some(done_rx);
    // While the client is still sending, the upstream may answer whenever it likes (a
    // client-streaming call's server answers at the end; the client's pauses are not the
    // upstream's, found in review); once the body has ended, the usual timer runs.
    let first = tokio::select! {
        biased;
        ended = async { done.as_mut().expect("polled while open").await } => {
            done = None;
            if let Ok(Err(e)) = ended {
                return Err(e);
            }
            None
        }
        response = &mut send => Some(response),
    };
    let answered = match first {
        Some(answered) => answered,
        None => progress.answer(&mut send, timeout).await,
    };
    let response = match answered {
        Ok(response) => response,
        // The pump's block, if there is one, is the answer rather than this failure.
        Err(e) => match done.take() {
            Some(done) => match done.await {
                Ok(Err(blocked)) => return Err(blocked),
                _ => return Err(e),
            },
            None => return Err(e),
        },
    };
    shared.metrics.upstream_response(sent.elapsed());
    let (parts, body) = super::forward::to_client(response).into_parts();
    let body = Cut {
        inner: body,
        cut: Box::pin(wait_cut(cut_rx)),
        ending,
        framing: Framing::default(),
        ended: false,
    };
    Ok(Response::from_parts(parts, BodyExt::boxed(body)))
}

async fn wait_cut(mut rx: watch::Receiver<Option<Arc<str>>>) -> Arc<str> {
    let text = match rx.wait_for(Option::is_some).await {
        Ok(text) => text.clone(),
        Err(_) => None,
    };
    match text {
        Some(text) => text,
        // The pump ended without a cut: never.
        None => std::future::pending().await,
    }
}

/// A response body that ends once its call was blocked: with the call's status when the
/// answer stands between two messages and the client can be told one (see [`Ending`]), so
/// the application shows why; else with an error (hyper resets the stream or closes the
/// connection), since a status inside a message would end it short.
struct Cut {
    inner: ProxyBody,
    cut: std::pin::Pin<Box<dyn std::future::Future<Output = Arc<str>> + Send + Sync>>,
    ending: Ending,
    /// Where the answer stands among its messages.
    framing: Framing,
    ended: bool,
}

/// How a blocked call's answer ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// HTTP/2: trailer fields `grpc-status: 7` (PERMISSION_DENIED) and a `grpc-message`.
    Trailers,
    /// gRPC-Web: the same fields in the body, as its trailer frame (flagged `0x80`).
    WebFrame,
    /// gRPC over HTTP/1.1: an error. Its trailer fields reach the client only when the
    /// answer announced them (`Trailer`), so a status sent there would be lost and the
    /// answer end as if the call were fine.
    Reset,
}

/// Where a stream of length-prefixed messages stands.
#[derive(Default)]
struct Framing {
    /// The current prefix's bytes so far.
    prefix: [u8; PREFIX],
    have: usize,
    /// Payload bytes of the current message still to come.
    left: u64,
}

impl Framing {
    fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.left > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                self.left -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = data.len().min(PREFIX - self.have);
            self.prefix[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == PREFIX {
                let [_, a, b, c, d] = self.prefix;
                self.left = u64::from(u32::from_be_bytes([a, b, c, d]));
                self.have = 0;
            }
        }
    }

    fn between_messages(&self) -> bool {
        self.have == 0 && self.left == 0
    }
}

/// `fields` as gRPC-Web's trailer frame: flag `0x80`, a length, then the fields as HTTP/1
/// header lines.
fn web_trailer_frame(fields: &http::HeaderMap) -> Bytes {
    let mut lines = Vec::new();
    for (name, value) in fields {
        lines.extend_from_slice(name.as_str().as_bytes());
        lines.push(b':');
        lines.extend_from_slice(value.as_bytes());
        lines.extend_from_slice(b"\r\n");
    }
    let mut frame = Vec::with_capacity(PREFIX + lines.len());
    frame.push(0x80);
    frame.extend_from_slice(&u32::try_from(lines.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&lines);
    frame.into()
}

impl Body for Cut {
    type Data = Bytes;
    type Error = super::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.ended {
            return std::task::Poll::Ready(None);
        }
        if let std::task::Poll::Ready(text) = self.cut.as_mut().poll(cx) {
            if self.ending == Ending::Reset || !self.framing.between_messages() {
                return std::task::Poll::Ready(Some(Err(
                    "the call was blocked by egress-dlp".into()
                )));
            }
            self.ended = true;
            let fields = page::grpc_denied_fields(&text);
            let frame = match self.ending {
                Ending::WebFrame => Frame::data(web_trailer_frame(&fields)),
                _ => Frame::trailers(fields),
            };
            return std::task::Poll::Ready(Some(Ok(frame)));
        }
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.framing.advance(data);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A message on its way: held while it is scanned.
struct Message<'c> {
    id: String,
    /// Its place in the call, from 1.
    n: u64,
    scan: TimedScan<'c>,
    /// Its bytes as they came (prefix first), copied out of the read buffer (slices of it
    /// would keep all of it alive).
    held: BytesMut,
    held_bytes: u64,
    /// When its prefix came: it must come whole at `body_min_rate` after the head time,
    /// as a body must (or it would hold its part of the hold budget for as long as the
    /// call lives).
    started: tokio::time::Instant,
    /// Payload bytes still to come.
    left: u64,
    reserved: Reservation,
    reserved_bytes: u64,
}

/// Reads the client's body, judges each message and passes the allowed ones on; `Err`
/// when a message was blocked or refused (the upstream body is then dropped unfinished,
/// which aborts the upstream request).
async fn pump(
    call: &Call,
    mut body: ClientBody,
    tx: &mpsc::Sender<Piece>,
    mut phase: watch::Receiver<super::Phase>,
) -> Result<(), ProxyError> {
    let mut buf = BytesMut::new();
    let mut message: Option<Message<'_>> = None;
    // The reservations of the last two messages passed on: one may wait in the channel,
    // the other be in the upstream connection's hands.
    let mut in_flight: std::collections::VecDeque<Reservation> = Default::default();
    let mut count = 0u64;
    loop {
        // Take what the buffer holds.
        loop {
            let Some(m) = &mut message else {
                if buf.len() < PREFIX {
                    break;
                }
                count += 1;
                let prefix = buf.split_to(PREFIX);
                let compressed = prefix[0] & 1 == 1;
                let len = u64::from(u32::from_be_bytes([
                    prefix[1], prefix[2], prefix[3], prefix[4],
                ]));
                let mut m = start(call, count, compressed, len);
                hold(call, &mut m, &prefix).await?;
                message = Some(m);
                continue;
            };
            if m.left > 0 {
                if buf.is_empty() {
                    break;
                }
                let n = buf.len().min(usize::try_from(m.left).unwrap_or(usize::MAX));
                let piece = buf.split_to(n);
                m.scan.feed(&piece);
                m.left -= n as u64;
                hold(call, m, &piece).await?;
            }
            if m.left == 0 {
                let m = message.take().expect("a message");
                if !forward_message(call, m, tx, &mut in_flight).await? {
                    // The upstream request is gone (answered or failed): nothing more to do.
                    return Ok(());
                }
            }
        }
        // A call may wait for its next message as long as it lives (a client that sent
        // its request and now listens): the wait ends with the client, with the upstream
        // request, or at the end of the drain time.
        let limits = &call.req.live.config.limits;
        let due = message
            .as_ref()
            .map(|m| m.started + limits.body_time(m.held_bytes));
        let next = tokio::select! {
            next = body.frame() => next,
            () = async {
                match due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            } => {
                info!(request_id = call.req.request_id, "gRPC message came too slowly: the call is cut");
                return Err(ProxyError::SlowBody(limits.body_min_rate));
            }
            _ = tx.closed() => {
                debug!(request_id = call.req.request_id, "gRPC call ended upstream");
                return Ok(());
            }
            _ = super::stopped(&mut phase) => {
                debug!(request_id = call.req.request_id, "gRPC call cut at the end of the drain time");
                return Ok(());
            }
        };
        let frame = match next {
            None => break,
            Some(Err(e)) => return Err(ProxyError::ClientBody(e)),
            Some(Ok(frame)) => frame,
        };
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
    }
    // The body ended: a message it cut short is judged on what came, then goes on.
    if let Some(m) = message.take() {
        if !forward_message(call, m, tx, &mut in_flight).await? {
            return Ok(());
        }
    }
    if !buf.is_empty() {
        // Part of a prefix: no payload, nothing to scan; the upstream gets what was sent.
        let _ = tx.send(Piece::Data(buf.freeze())).await;
    }
    let _ = tx.send(Piece::End).await;
    Ok(())
}

/// Message `n` of the call, `len` payload bytes long.
fn start(call: &Call, n: u64, compressed: bool, len: u64) -> Message<'_> {
    let limits = &call.req.live.config.decode.limits;
    let encoding = if compressed {
        // A compressed message without a `grpc-encoding` breaks the protocol: scanned as
        // it is, and not fully inspected.
        Some(call.encoding.as_deref().unwrap_or(b"unknown"))
    } else {
        None
    };
    Message {
        id: format!("{}-m{n}", call.req.request_id),
        n,
        scan: TimedScan::new(
            crate::decode::Inspection::new(&call.req.live.engine, limits, None, encoding)
                .with_windows(call.req.shared.decoder_windows.for_client(call.req.client)),
        ),
        held: BytesMut::new(),
        held_bytes: 0,
        started: tokio::time::Instant::now(),
        left: len,
        reserved: Reservation::default(),
        reserved_bytes: 0,
    }
}

/// Holds `piece` of message `m`, within `hold_bytes` and the hold budget.
async fn hold(call: &Call, m: &mut Message<'_>, piece: &[u8]) -> Result<(), ProxyError> {
    let hold_bytes = call.req.live.config.limits.hold_bytes;
    m.held_bytes += piece.len() as u64;
    if m.held_bytes + m.left > hold_bytes + PREFIX as u64 {
        info!(
            request_id = m.id,
            "gRPC message over the hold limit: the call is refused"
        );
        return Err(ProxyError::BodyTooLarge { limit: hold_bytes });
    }
    if m.held_bytes > m.reserved_bytes {
        let waited = tokio::time::Instant::now();
        let sizes = (
            m.reserved_bytes,
            m.held_bytes + m.left,
            hold_bytes + PREFIX as u64,
        );
        m.reserved_bytes = call
            .req
            .shared
            .hold_budget
            .extend_by_steps(&mut m.reserved, call.req.client, sizes)
            .await?;
        // The wait for room is not the client's slowness.
        m.started += waited.elapsed();
    }
    m.held.extend_from_slice(piece);
    Ok(())
}

/// Judges a whole message and passes it on: `Ok(false)` when the upstream request is gone.
async fn forward_message(
    call: &Call,
    m: Message<'_>,
    tx: &mpsc::Sender<Piece>,
    in_flight: &mut std::collections::VecDeque<Reservation>,
) -> Result<bool, ProxyError> {
    let Message {
        id,
        n,
        scan,
        held,
        held_bytes,
        reserved,
        ..
    } = m;
    let insp = call.req.inspection(&id, held_bytes);
    let held = held.freeze();
    let payload = [held.slice(PREFIX.min(held.len())..)];
    // Partial: the call's earlier messages went upstream.
    let partial = n > 1;
    if let Err(e) = super::forward::judge(
        &call.req.shared,
        &call.req.live,
        scan,
        &insp,
        &payload,
        partial,
    ) {
        info!(request_id = id, "gRPC message blocked: the call is cut");
        return Err(e);
    }
    let timeout = call.req.live.config.limits.upstream_response_timeout;
    match tokio::time::timeout(timeout, tx.send(Piece::Data(held))).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Ok(false),
        // The upstream stopped taking the body.
        Err(_) => return Err(ProxyError::UpstreamTimeout(timeout)),
    }
    in_flight.push_back(reserved);
    if in_flight.len() > 2 {
        in_flight.pop_front();
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn grpc_content_types_are_told_from_others() {
        for (t, want) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC+json; charset=utf-8", true),
            ("application/grpc-web", true),
            ("application/grpc-web+proto", true),
            ("application/grpc-web-text+proto", false),
            ("application/grpc-webx", false),
            ("application/grpcx", false),
            ("application/json", false),
            ("", false),
        ] {
            assert_eq!(super::is_grpc(Some(t.as_bytes())), want, "{t}");
        }
        assert!(!super::is_grpc(None));
    }
}
