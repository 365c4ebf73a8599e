//! WebSocket: what a client sends after the upstream's 101 is inspected, message by
//! message, before it goes on (RFC 6455).
//!
//! The handshake request is a request like any other (`forward`). Its
//! `Sec-WebSocket-Extensions` offer is removed, so no extension (`permessage-deflate` above
//! all, whose compressed frames would pass unread) can be agreed; a 101 that names one
//! anyway is a 502. After the 101:
//!
//! - **Client to upstream**, frame by frame. Each data message (a text or binary frame and
//!   its continuations) is held, its payload unmasked and scanned through the decode
//!   pipeline as it arrives (a message is a body of unknown type: JSON, text, a gzip
//!   stream, base64 inside are all read), and judged by the policy when its last frame
//!   arrives, as a request would be: its own audit event (request id `<id>-m<n>`, the
//!   handshake's method, host and path), its findings in the metrics and the cumulative
//!   windows. Allowed or logged, its frames go on unchanged (same fragmentation, same
//!   masks). Blocked, not a byte of it leaves: the client gets a Close frame, code 1008
//!   (policy violation) with the kinds and counts and the request id as its reason (never a
//!   value), the upstream a Close of its own, and the connection ends. Control frames
//!   (ping, pong, close) go on at once, between the frames of a held message; their
//!   payloads are scanned and counted together for the connection ([`Controls`]). A
//!   message must come at `limits.body_min_rate` after `header_read_timeout`, as a body
//!   must (else Close 1008): one left unfinished would hold its budget forever.
//! - A message larger than `limits.hold_bytes` follows `limits.oversize`: `block` closes
//!   the connection (1009, too big); `stream` sends its frames on as they are scanned and,
//!   if it crosses a block threshold, closes the connection before its last frame (the
//!   upstream never gets the message whole). What a message holds is reserved from the
//!   hold budget as its frames arrive; no room within the hold wait closes it with 1013.
//! - A frame that breaks the protocol (unmasked, a reserved bit, an unknown opcode, a
//!   continuation of nothing, a fragmented or long control frame, a 64-bit length with its
//!   top bit set) closes the connection with 1002: there is no telling what such bytes
//!   would mean to the upstream. Every closing is logged with the request id.
//! - Once the client's Close has gone upstream, what the client sends after it (frames an
//!   endpoint must not send, RFC 6455 §5.5.1) is read and dropped, and a message it left
//!   unfinished never leaves; the upstream's answer still comes back.
//! - **Upstream to client** is copied as it comes (responses are not inspected), with its
//!   frame boundaries followed, so that a Close can be put in between two frames.
//!
//! The rules and policy in force at the handshake judge every message of the connection.

use std::future::Future;
use std::io;

use bytes::{Bytes, BytesMut};
use hyper::upgrade::OnUpgrade;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tracing::{debug, info};

use super::ConnCtx;
use super::budget::Reservation;
use super::error::ProxyError;
use super::forward::Judged;
use super::observe::Ongoing;
use crate::config::Oversize;
use crate::metrics::{MessageOutcome, TimedScan};
use crate::policy::Action;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Close codes (RFC 6455 §7.4.1).
const PROTOCOL_ERROR: u16 = 1002;
const POLICY_VIOLATION: u16 = 1008;
const TOO_BIG: u16 = 1009;
const INTERNAL_ERROR: u16 = 1011;
const TRY_AGAIN_LATER: u16 = 1013;

/// The longest frame head: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEAD: usize = 14;

/// A frame's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    /// Payload length.
    len: u64,
    /// Bytes the head takes.
    size: usize,
}

impl Head {
    fn control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Reads a frame head at the start of `buf`: `Ok(None)` while it is not all there. A client's
/// frames must be masked; no extension is ever agreed, so a reserved bit is an error.
fn parse_head(buf: &[u8], from_client: bool) -> Result<Option<Head>, &'static str> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err("a frame sets a reserved bit, and no extension was agreed");
    }
    let opcode = b0 & 0x0F;
    if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
        return Err("a frame has an unknown opcode");
    }
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    if from_client && !masked {
        return Err("a client's frame is not masked");
    }
    let (len, ext) = match b1 & 0x7F {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 2)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(b.try_into().unwrap_or_default());
            if len >> 63 != 0 {
                return Err("a frame's 64-bit length has its top bit set");
            }
            (len, 8)
        }
        n => (u64::from(n), 0),
    };
    if opcode & 0x8 != 0 && (!fin || len > 125) {
        return Err("a control frame is fragmented or longer than 125 bytes");
    }
    let size = 2 + ext + if masked { 4 } else { 0 };
    if buf.len() < size {
        return Ok(None);
    }
    let mask = masked.then(|| {
        let k = &buf[size - 4..size];
        [k[0], k[1], k[2], k[3]]
    });
    Ok(Some(Head {
        fin,
        opcode,
        mask,
        len,
        size,
    }))
}

/// `data` unmasked with `key`, its first byte at offset `at` of the payload.
fn unmask(data: &[u8], key: [u8; 4], at: u64) -> Vec<u8> {
    let shift = (at % 4) as usize;
    let key = [
        key[shift],
        key[(shift + 1) % 4],
        key[(shift + 2) % 4],
        key[(shift + 3) % 4],
    ];
    let word = u32::from_ne_bytes(key);
    let mut out = Vec::with_capacity(data.len());
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        out.extend_from_slice(&v.to_ne_bytes());
    }
    for (i, &b) in chunks.remainder().iter().enumerate() {
        out.push(b ^ key[i]);
    }
    out
}

/// A Close frame with `code` and `reason` (cut to fit 125 bytes at a character boundary),
/// masked when it goes to the upstream (a client's frames must be).
fn close_frame(code: u16, reason: &str, masked: bool) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    let mut frame = vec![0x80 | CLOSE];
    if masked {
        let mut key = [0u8; 4];
        // A key no one can predict, as RFC 6455 §5.3 asks; zeros if the system has none.
        let _ = getrandom::fill(&mut key);
        frame.push(0x80 | payload.len() as u8);
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
    } else {
        frame.push(payload.len() as u8);
        frame.extend_from_slice(&payload);
    }
    Bytes::from(frame)
}

/// Follows the frame boundaries of bytes going one way, to tell whether the bytes so far
/// end between two frames.
#[derive(Default)]
struct Boundaries {
    /// Bytes of a head not complete yet.
    head: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    left: u64,
    /// The bytes stopped making sense as frames: never between two again.
    lost: bool,
}

impl Boundaries {
    fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.lost {
            if self.left > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                self.left -= n as u64;
                data = &data[n..];
                continue;
            }
            let take = data.len().min(MAX_HEAD - self.head.len());
            self.head.extend_from_slice(&data[..take]);
            match parse_head(&self.head, false) {
                Ok(Some(head)) => {
                    let used = take - (self.head.len() - head.size);
                    data = &data[used..];
                    self.head.clear();
                    self.left = head.len;
                }
                Ok(None) => data = &data[take..],
                Err(_) => self.lost = true,
            }
        }
    }

    fn between_frames(&self) -> bool {
        !self.lost && self.left == 0 && self.head.is_empty()
    }
}

/// Relays an upgraded WebSocket connection in a task of its own (see the module doc),
/// until both sides close, the pair is idle for `limits.idle_timeout`, a message is
/// blocked, or the drain time is over.
pub(super) fn relay<U, F>(ctx: &ConnCtx, client: OnUpgrade, upstream: F, session: Ongoing)
where
    F: Future<Output = io::Result<U>> + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle_timeout = session.live.config.limits.idle_timeout;
    super::tunnel::spawn_pair(
        ctx,
        "websocket",
        idle_timeout,
        (client, upstream),
        move |client, upstream| async move {
            let (client_read, client_write) = tokio::io::split(client);
            let (upstream_read, upstream_write) = tokio::io::split(upstream);
            let (close_tx, close_rx) = oneshot::channel();
            tokio::join!(
                upward(&session, client_read, upstream_write, close_tx),
                downward(upstream_read, client_write, close_rx),
            );
            debug!(request_id = session.request_id, "websocket closed");
        },
    );
}

/// Upstream to client: bytes copied as they come; when `close` brings a Close frame, it is
/// sent between two frames (or the connection just ends, if the upstream is inside one).
async fn downward<R, W>(mut from: R, mut to: W, close: oneshot::Receiver<Bytes>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut frames = Boundaries::default();
    let mut buf = vec![0u8; 16 << 10];
    // Gone once the client's side has ended without a Close from the proxy: the upstream's
    // answer still comes back until it closes (found in review: a client's half-close cut
    // it off).
    let mut close = Some(close);
    loop {
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    frames.advance(&buf[..n]);
                }
            },
            frame = async { close.as_mut().expect("polled only while open").await }, if close.is_some() => {
                match frame {
                    Ok(frame) => {
                        if frames.between_frames() {
                            let _ = to.write_all(&frame).await;
                        }
                        break;
                    }
                    Err(_) => close = None,
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Why the client's side of the connection is being closed.
struct Closing {
    code: u16,
    reason: String,
    /// What the message it closes on counts as.
    outcome: MessageOutcome,
}

impl Closing {
    fn violation(why: &str) -> Closing {
        Closing {
            code: PROTOCOL_ERROR,
            reason: why.to_owned(),
            outcome: MessageOutcome::Refused,
        }
    }

    /// The close for a message whose judging failed with `e`.
    fn from_error(e: &ProxyError, id: &str) -> Closing {
        let (code, reason, outcome) = match e {
            ProxyError::Blocked(b) => (
                POLICY_VIOLATION,
                format!("blocked by egress-dlp: {}; request id {id}", b.summary()),
                MessageOutcome::Block,
            ),
            ProxyError::NotInspected(_) => (
                POLICY_VIOLATION,
                format!("blocked by egress-dlp: could not be inspected; request id {id}"),
                MessageOutcome::Block,
            ),
            ProxyError::BodyTooLarge { limit } => (
                TOO_BIG,
                format!("egress-dlp: a message over {limit} bytes; request id {id}"),
                MessageOutcome::Refused,
            ),
            ProxyError::Busy(_) => (
                TRY_AGAIN_LATER,
                format!("egress-dlp is busy; request id {id}"),
                MessageOutcome::Refused,
            ),
            _ => (
                INTERNAL_ERROR,
                format!("egress-dlp could not judge the message; request id {id}"),
                MessageOutcome::Refused,
            ),
        };
        Closing {
            code,
            reason,
            outcome,
        }
    }
}

/// A data message on its way: held (or, past the hold limit, streamed) while it is scanned.
struct Message<'s> {
    id: String,
    scan: TimedScan<'s>,
    /// When its first frame came: it must come whole at `body_min_rate` after the head
    /// time, as a body must.
    started: tokio::time::Instant,
    /// Its bytes (heads and masked payload) that came so far.
    received: u64,
    /// Its frames as they came, not sent on yet: copied, so that what is held is what is
    /// counted (found in review: slices of the read buffer kept all of it alive, 64 KiB
    /// for an empty frame).
    held: BytesMut,
    /// Its payload unmasked, up to what an audit event's samples are taken from.
    seen: Vec<u8>,
    /// Payload bytes scanned.
    payload: u64,
    /// Past the hold limit: frames go on as they are scanned.
    streaming: bool,
    /// Streaming, the bytes scanned but not sent on (in `held`): the newest piece (from
    /// `newest` on) always, and all while the findings may not cover them yet, as for a
    /// streamed body (`forward`).
    newest: usize,
    /// Bytes scanned since the policy last looked.
    unjudged: usize,
    judged: Judged,
    /// What its held bytes and samples take of the hold budget (kept, once it streams,
    /// until it ends: it still holds up to a mebibyte).
    reserved: Reservation,
    reserved_bytes: u64,
}

impl Message<'_> {
    /// By when its next bytes must come.
    fn due(&self, limits: &crate::config::Limits) -> tokio::time::Instant {
        self.started + limits.body_time(self.received)
    }
}

/// The frame being read.
struct Frame {
    head: Head,
    /// Payload bytes read so far.
    read: u64,
}

/// Client to upstream (see the module doc).
async fn upward<R, W>(session: &Ongoing, mut from: R, mut to: W, close: oneshot::Sender<Bytes>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut up = Upward {
        session,
        message: None,
        frame: None,
        count: 0,
        sent: Boundaries::default(),
        controls: Controls::default(),
        closed: false,
    };
    let mut buf = BytesMut::with_capacity(64 << 10);
    let closing = loop {
        match up.step(&mut buf, &mut to).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(Some(closing)) => break Some(closing),
            Err(None) => break None,
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 << 10);
        }
        // A message on its way must keep coming at `body_min_rate`, or it would hold its
        // part of the hold budget for as long as pings keep the connection alive (found in
        // review).
        let limits = &session.live.config.limits;
        let read = match up.message.as_ref().map(|m| m.due(limits)) {
            Some(due) => match tokio::time::timeout_at(due, from.read_buf(&mut buf)).await {
                Ok(read) => read,
                Err(_) => {
                    break Some(Closing {
                        code: POLICY_VIOLATION,
                        reason: format!(
                            "egress-dlp: a message came slower than {} bytes/s",
                            limits.body_min_rate
                        ),
                        outcome: MessageOutcome::Refused,
                    });
                }
            },
            None => from.read_buf(&mut buf).await,
        };
        match read {
            Ok(0) | Err(_) => break None,
            Ok(_) => {}
        }
    };
    let Some(closing) = closing else {
        // The client is gone: a message it did not finish never leaves.
        if let Some(message) = up.message.take() {
            debug!(
                request_id = message.id,
                "websocket message cut short by the client: not sent on"
            );
        }
        let _ = to.shutdown().await;
        return;
    };
    session.shared.metrics.websocket_message(closing.outcome);
    info!(
        request_id = session.request_id,
        code = closing.code,
        reason = closing.reason,
        "websocket closed by the proxy"
    );
    let _ = close.send(close_frame(closing.code, &closing.reason, false));
    if up.sent.between_frames() {
        let _ = to.write_all(&close_frame(closing.code, "", true)).await;
    }
    let _ = to.shutdown().await;
}

struct Upward<'s> {
    session: &'s Ongoing,
    message: Option<Message<'s>>,
    frame: Option<Frame>,
    /// Messages started.
    count: u64,
    /// The frames of what went upstream so far.
    sent: Boundaries,
    /// What the connection's control frames carried.
    controls: Controls,
    /// The client's Close went upstream: what it sends after is read and dropped.
    closed: bool,
}

impl<'s> Upward<'s> {
    /// Takes what it can from `buf`: `Ok(true)` when it took something and may take more,
    /// `Ok(false)` when it needs more bytes, `Err` to end (with a close, or because the
    /// upstream is gone).
    async fn step<W>(&mut self, buf: &mut BytesMut, to: &mut W) -> Result<bool, Option<Closing>>
    where
        W: AsyncWrite + Unpin,
    {
        if self.closed {
            // RFC 6455 §5.5.1: no frame may follow an endpoint's Close. What does would
            // reach the upstream after the client said it was done; it goes nowhere.
            if !buf.is_empty() {
                debug!(
                    request_id = self.session.request_id,
                    bytes = buf.len(),
                    "websocket bytes after the client's Close: dropped"
                );
                buf.clear();
            }
            return Ok(false);
        }
        let Some(frame) = &mut self.frame else {
            let head = match parse_head(buf, true) {
                Ok(Some(head)) => head,
                Ok(None) => return Ok(false),
                Err(why) => return Err(Some(Closing::violation(why))),
            };
            if head.control() {
                // Whole, judged with the connection's other control frames, then on.
                let total = head.size + head.len as usize;
                if buf.len() < total {
                    return Ok(false);
                }
                let raw = buf.split_to(total);
                if let Some(key) = head.mask {
                    let payload = unmask(&raw[head.size..], key, 0);
                    self.controls.judge(self.session, &payload)?;
                }
                self.send(to, &raw).await?;
                if head.opcode == CLOSE {
                    // A message it cut short never leaves (its reservation goes with it).
                    self.closed = true;
                    self.message = None;
                }
                return Ok(true);
            }
            match (head.opcode, self.message.is_some()) {
                (CONTINUATION, false) => {
                    return Err(Some(Closing::violation(
                        "a continuation frame continues no message",
                    )));
                }
                (TEXT | BINARY, true) => {
                    return Err(Some(Closing::violation(
                        "a new message starts before the last one ended",
                    )));
                }
                (TEXT | BINARY, false) => self.start(),
                _ => {}
            }
            self.reserve(&head).await?;
            let raw = buf.split_to(head.size);
            self.frame = Some(Frame { head, read: 0 });
            self.take(to, &raw, None).await?;
            return self.frame_end(to).await.map(|()| true);
        };
        let left = frame.head.len - frame.read;
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(false);
        }
        let raw = buf.split_to(n);
        let plain = match frame.head.mask {
            Some(key) => unmask(&raw, key, frame.read),
            None => raw.to_vec(),
        };
        frame.read += n as u64;
        self.take(to, &raw, Some(plain)).await?;
        self.frame_end(to).await.map(|()| true)
    }

    fn start(&mut self) {
        self.count += 1;
        let s = self.session;
        let limits = &s.live.config.decode.limits;
        self.message = Some(Message {
            id: format!("{}-m{}", s.request_id, self.count),
            scan: TimedScan::new(
                crate::decode::Inspection::new(&s.live.engine, limits, None, None)
                    .with_windows(s.shared.decoder_windows.for_client(s.client)),
            ),
            started: tokio::time::Instant::now(),
            received: 0,
            held: BytesMut::new(),
            seen: Vec::new(),
            payload: 0,
            streaming: false,
            newest: 0,
            unjudged: 0,
            judged: Judged::default(),
            reserved: Reservation::default(),
            reserved_bytes: 0,
        });
    }

    /// Reserves room for a data frame (its head and payload, as far as the message will be
    /// held), in steps (see [`HoldBudget::extend_by_steps`](super::budget::HoldBudget::extend_by_steps)).
    async fn reserve(&mut self, head: &Head) -> Result<(), Option<Closing>> {
        let s = self.session;
        let Some(message) = &mut self.message else {
            return Ok(());
        };
        if message.streaming {
            return Ok(());
        }
        // Past `hold_bytes` the message streams: one byte over is all it ever holds; and
        // its payload's first mebibyte is kept for the audit samples too.
        let most = s.live.config.limits.hold_bytes.saturating_add(1) + SEEN_BYTES as u64;
        let held = (message.held.len() as u64 + head.size as u64)
            .saturating_add(head.len)
            .min(s.live.config.limits.hold_bytes.saturating_add(1));
        let seen = message
            .payload
            .saturating_add(head.len)
            .min(SEEN_BYTES as u64);
        let want = held + seen;
        let have = message.reserved_bytes;
        match s
            .shared
            .hold_budget
            .extend_by_steps(&mut message.reserved, s.client, (have, want, most))
            .await
        {
            Ok(now) => {
                message.reserved_bytes = now;
                Ok(())
            }
            Err(e) => Err(Some(Closing::from_error(&e, &message.id))),
        }
    }

    /// A piece of the current data message: its raw bytes, and the payload unmasked (none
    /// for a head). Held, or, for a message past the hold limit, judged and sent on.
    async fn take<W>(
        &mut self,
        to: &mut W,
        raw: &[u8],
        plain: Option<Vec<u8>>,
    ) -> Result<(), Option<Closing>>
    where
        W: AsyncWrite + Unpin,
    {
        let s = self.session;
        let Some(message) = &mut self.message else {
            return Ok(());
        };
        message.received += raw.len() as u64;
        if let Some(plain) = plain {
            message.scan.feed(&plain);
            message.payload += plain.len() as u64;
            message.unjudged += plain.len();
            let room = SEEN_BYTES.saturating_sub(message.seen.len());
            message
                .seen
                .extend_from_slice(&plain[..plain.len().min(room)]);
        }
        let limits = &s.live.config.limits;
        message.newest = message.held.len();
        message.held.extend_from_slice(raw);
        if !message.streaming {
            if message.held.len() as u64 <= limits.hold_bytes {
                return Ok(());
            }
            if limits.oversize == Oversize::Block {
                let e = ProxyError::BodyTooLarge {
                    limit: limits.hold_bytes,
                };
                return Err(Some(Closing::from_error(&e, &message.id)));
            }
            // Over the hold limit: from now on its bytes go on as they are scanned.
            info!(
                request_id = message.id,
                held = message.held.len(),
                "websocket message over the hold limit: streamed as it is scanned"
            );
            message.streaming = true;
        }
        let id = message.id.clone();
        let insp = s.inspection(&id, message.payload);
        let judge = |message: &mut Message<'s>, anyway: bool| {
            message
                .judged
                .judge(&s.shared, &s.live, &mut message.scan, &insp, anyway)
                .map_err(|e| Some(Closing::from_error(&e, &id)))
        };
        let every = message.unjudged >= super::forward::SNAPSHOT_INTERVAL;
        if judge(message, every)? {
            message.unjudged = 0;
        }
        let wait_cap = super::forward::WAIT_CAP.min(limits.hold_bytes) as usize;
        let mut waiting = message.scan.undecided();
        if waiting && message.held.len() > wait_cap {
            message.scan.flush_pending();
            judge(message, false)?;
            waiting = message.scan.undecided();
        }
        // All but the newest piece when the findings cover them; the oldest past the cap
        // when they may not.
        let ready = if waiting {
            message
                .newest
                .min(message.held.len().saturating_sub(wait_cap))
        } else {
            message.newest
        };
        if ready == 0 {
            return Ok(());
        }
        let piece = message.held.split_to(ready);
        message.newest -= ready;
        self.send(to, &piece).await
    }

    /// After a piece of a data frame: at the frame's end, and at the message's, judges it
    /// and sends it on (or closes).
    async fn frame_end<W>(&mut self, to: &mut W) -> Result<(), Option<Closing>>
    where
        W: AsyncWrite + Unpin,
    {
        let Some(frame) = &self.frame else {
            return Ok(());
        };
        if frame.read < frame.head.len {
            return Ok(());
        }
        let fin = frame.head.fin;
        self.frame = None;
        if !fin {
            return Ok(());
        }
        let s = self.session;
        let Some(message) = self.message.take() else {
            return Ok(());
        };
        let Message {
            id,
            scan,
            held,
            seen,
            payload,
            streaming,
            reserved,
            ..
        } = message;
        let seen = [Bytes::from(seen)];
        let insp = s.inspection(&id, payload);
        let verdict = super::forward::judge(&s.shared, &s.live, scan, &insp, &seen, streaming)
            .map_err(|e| Some(Closing::from_error(&e, &id)))?;
        s.shared.metrics.websocket_message(match verdict.action {
            Action::Allow => MessageOutcome::Allow,
            Action::Log => MessageOutcome::Log,
            Action::Block => MessageOutcome::Block,
        });
        self.send(to, &held).await?;
        drop(reserved);
        Ok(())
    }

    /// Sends `piece` upstream; `Err(None)` when the upstream is gone.
    async fn send<W>(&mut self, to: &mut W, piece: &[u8]) -> Result<(), Option<Closing>>
    where
        W: AsyncWrite + Unpin,
    {
        to.write_all(piece).await.map_err(|_| None)?;
        self.sent.advance(piece);
        Ok(())
    }
}

/// The payloads of a connection's control frames (ping, pong, close: up to 125 bytes each,
/// sent on at once, never held), judged together: each is scanned whole, and the distinct
/// values of all of them so far are counted as one request's (found in review: a list cut
/// into pings, three rows each, passed while the same list in one message was blocked).
/// A block closes the connection before the frame that crossed the threshold goes on;
/// crossing a log threshold is recorded once.
#[derive(Default)]
struct Controls {
    findings: Option<crate::scan::Findings>,
    logged: bool,
}

impl Controls {
    fn judge(&mut self, s: &Ongoing, payload: &[u8]) -> Result<(), Option<Closing>> {
        if payload.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut scan = crate::decode::Inspection::new(
            &s.live.engine,
            &s.live.config.decode.limits,
            None,
            None,
        );
        scan.feed(payload);
        let found = scan.finish().findings;
        let spent = started.elapsed();
        s.shared
            .metrics
            .inspected(&found, payload.len() as u64, spent);
        if found.categories.is_empty() {
            return Ok(());
        }
        let all = match self.findings.take() {
            Some(mut all) => {
                merge(&mut all, found);
                all
            }
            None => found,
        };
        let verdict = crate::policy::evaluate(&s.live.config.rules, &all, &s.input);
        let id = format!("{}-control", s.request_id);
        let insp = s.inspection(&id, 0);
        let seen = [Bytes::copy_from_slice(payload)];
        let result = match verdict.action {
            Action::Allow => Ok(()),
            Action::Log if self.logged => Ok(()),
            Action::Log => {
                self.logged = true;
                super::observe::decided(&s.shared, &insp, &all, spent, &verdict, &seen, true)
                    .map_err(|e| Some(Closing::from_error(&e, &id)))
            }
            Action::Block => {
                let recorded =
                    super::observe::decided(&s.shared, &insp, &all, spent, &verdict, &seen, true);
                if let Err(e) = recorded {
                    debug!(request_id = id, error = %e, "control frames' block not recorded");
                }
                let e = ProxyError::Blocked(Box::new(super::error::Blocked::from_verdict(
                    &verdict, true,
                )));
                Err(Some(Closing::from_error(&e, &id)))
            }
        };
        self.findings = Some(all);
        result
    }
}

/// Adds `more` to `all`: matches summed, distinct values (by their hashes) united per
/// category (what the policy counts); a rule's own distinct count is summed, an upper bound.
fn merge(all: &mut crate::scan::Findings, more: crate::scan::Findings) {
    let cap = crate::rules::DISTINCT_CAP;
    all.bytes += more.bytes;
    all.exact_capped |= more.exact_capped;
    for id in more.stopped {
        if !all.stopped.contains(&id) {
            all.stopped.push(id);
        }
    }
    for r in more.rules {
        match all.rules.iter_mut().find(|a| a.index == r.index) {
            Some(a) => {
                a.count += r.count;
                a.distinct = (a.distinct + r.distinct).min(cap);
                a.distinct_capped |= r.distinct_capped;
                a.corroborated += r.corroborated;
                for sample in r.samples {
                    if a.samples.len() < 3 && !a.samples.contains(&sample) {
                        a.samples.push(sample);
                    }
                }
            }
            None => all.rules.push(r),
        }
    }
    all.rules.sort_by_key(|r| r.index);
    for c in more.categories {
        match all.categories.iter_mut().find(|a| a.category == c.category) {
            Some(a) => {
                a.values.extend(c.values);
                a.values.sort_unstable();
                a.values.dedup();
                a.values.truncate(cap as usize);
                a.distinct_capped |= c.distinct_capped || a.values.len() as u64 >= cap;
                a.distinct = a.values.len() as u64;
            }
            None => all.categories.push(c),
        }
    }
}

/// Unmasked payload kept for an audit event's samples (what `observe` looks at).
const SEEN_BYTES: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with `key`.
    fn frame(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut f = vec![u8::from(fin) << 7 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        f
    }

    #[test]
    fn heads_of_every_length_form_are_read() {
        let key = [1, 2, 3, 4];
        for len in [0usize, 5, 125, 126, 300, 65535, 65536, 70000] {
            let f = frame(true, BINARY, &vec![7u8; len], key);
            let head = parse_head(&f, true).unwrap().unwrap();
            assert_eq!(head.len, len as u64, "{len}");
            assert_eq!(head.mask, Some(key));
            assert_eq!(head.size + len, f.len());
            // A head cut anywhere is not there yet.
            for cut in 0..head.size {
                assert_eq!(parse_head(&f[..cut], true), Ok(None), "{len} cut at {cut}");
            }
        }
    }

    #[test]
    fn frames_breaking_the_protocol_are_refused() {
        let key = [9, 9, 9, 9];
        let mut reserved = frame(true, TEXT, b"x", key);
        reserved[0] |= 0x40;
        let mut unmasked = frame(true, TEXT, b"x", key);
        unmasked[1] &= 0x7F;
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&key);
        for (bytes, why) in [
            (reserved, "reserved bit"),
            (unmasked, "not masked"),
            (frame(true, 0x3, b"", key), "unknown opcode"),
            (frame(false, PING, b"", key), "fragmented control frame"),
            (frame(true, PING, &[0; 126], key), "long control frame"),
            (huge, "top bit"),
        ] {
            assert!(parse_head(&bytes, true).is_err(), "{why}");
        }
    }

    #[test]
    fn payloads_are_unmasked_from_any_offset() {
        let key = [0x11, 0x22, 0x33, 0x44];
        let payload: Vec<u8> = (0..=200u8).collect();
        let f = frame(true, BINARY, &payload, key);
        let head = parse_head(&f, true).unwrap().unwrap();
        let body = &f[head.size..];
        for split in [0, 1, 2, 3, 5, 100, 199] {
            let mut plain = unmask(&body[..split], key, 0);
            plain.extend(unmask(&body[split..], key, split as u64));
            assert_eq!(plain, payload, "split at {split}");
        }
    }

    #[test]
    fn a_close_frame_carries_its_code_and_a_reason_cut_to_fit() {
        let reason = "é".repeat(100);
        let f = close_frame(POLICY_VIOLATION, &reason, false);
        let head = parse_head(&f, false).unwrap().unwrap();
        assert_eq!((head.opcode, head.fin), (CLOSE, true));
        assert!(head.len <= 125);
        let payload = &f[head.size..];
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());

        let masked = close_frame(POLICY_VIOLATION, "blocked", true);
        let head = parse_head(&masked, true).unwrap().unwrap();
        let plain = unmask(&masked[head.size..], head.mask.unwrap(), 0);
        assert_eq!(&plain[2..], b"blocked");
    }

    #[test]
    fn control_findings_merge_as_one_request_would_count_them() {
        use crate::scan::{CategoryCount, Findings, RuleFinding};
        let finding = |values: Vec<u64>| Findings {
            bytes: 100,
            rules: vec![RuleFinding {
                index: 0,
                rule: "email".into(),
                category: "email".into(),
                count: values.len() as u64,
                distinct: values.len() as u64,
                distinct_capped: false,
                corroborated: 0,
                samples: vec![format!("s{}", values[0])],
            }],
            categories: vec![CategoryCount {
                category: "email".into(),
                distinct: values.len() as u64,
                distinct_capped: false,
                values,
            }],
            exact_capped: false,
            stopped: Vec::new(),
        };
        let mut all = finding(vec![1, 2, 3]);
        merge(&mut all, finding(vec![3, 4]));
        merge(&mut all, finding(vec![9]));
        assert_eq!(all.bytes, 300);
        assert_eq!(all.category_distinct("email"), 5, "3 appears twice");
        assert_eq!(all.categories[0].values, [1, 2, 3, 4, 9]);
        assert_eq!(all.rules.len(), 1);
        assert_eq!(all.rules[0].count, 6);
        assert_eq!(all.rules[0].samples, ["s1", "s3", "s9"]);
    }

    #[test]
    fn boundaries_are_followed_across_any_split() {
        let mut stream = Vec::new();
        for len in [3usize, 0, 200, 70000, 1] {
            let mut f = vec![0x82];
            match len {
                n if n < 126 => f.push(n as u8),
                n if n <= 0xFFFF => {
                    f.push(126);
                    f.extend_from_slice(&(n as u16).to_be_bytes());
                }
                n => {
                    f.push(127);
                    f.extend_from_slice(&(n as u64).to_be_bytes());
                }
            }
            f.extend(std::iter::repeat_n(b'a', len));
            stream.push(f);
        }
        let ends: Vec<usize> = stream
            .iter()
            .scan(0, |at, f| {
                *at += f.len();
                Some(*at)
            })
            .collect();
        let all: Vec<u8> = stream.concat();
        for step in [1usize, 2, 3, 7, 1000, 100_000] {
            let mut b = Boundaries::default();
            let mut at = 0;
            for piece in all.chunks(step) {
                b.advance(piece);
                at += piece.len();
                assert_eq!(
                    b.between_frames(),
                    ends.contains(&at),
                    "step {step} at {at}"
                );
            }
        }
    }
}
