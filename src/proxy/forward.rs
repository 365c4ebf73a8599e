//! Absolute-form HTTP forwarding, with every request inspected before it leaves.
//!
//! The request target (path and query, percent-decoded), the headers named in
//! `decode.headers` and the body go through one [`crate::decode::Inspection`] (the decoders
//! and one engine stream), so distinct values are counted across all of them and every
//! decoded layer. A request that could not be fully inspected follows
//! `policy.on_inspection_error`. A body up to `limits.hold_bytes` is read and scanned whole
//! before the upstream request starts: a blocked request sends nothing. A larger body is
//! refused (`oversize: block`) or forwarded as it is scanned (`oversize: stream`). While it
//! streams, the policy is applied to the engine's snapshot (a lower bound that only grows;
//! and a request already known not to be fully inspectable) after every chunk in which a
//! value was counted, and at least every [`SNAPSHOT_INTERVAL`] bytes; its newest chunk is
//! always held back until the chunk after it has been scanned and judged, and older ones
//! too (up to [`WAIT_CAP`]) while the findings may not cover them yet (decoders holding
//! bytes not scanned yet, values the engine decides only on bytes still to come: see
//! [`crate::decode::Inspection::undecided`]). So a chunk goes upstream only once a verdict
//! has covered it (a value cut by a chunk's end aside), and a block verdict at the very
//! end still aborts the upstream request before the upstream has seen all of it.
//!
//! An upgrade request (WebSocket) is inspected like any other request (its offer of
//! extensions removed); if the upstream answers 101 naming the protocol offered and no
//! extension, both connections are handed to [`websocket::relay`], which inspects the
//! client's messages; any other 101 is a 502. Only WebSocket is offered upstream: an upgrade to anything else (`h2c`)
//! is forwarded as a plain request, without its `Upgrade` header.
//!
//! `limits.upstream_response_timeout` is the upstream's time to answer, counted from the
//! last piece of the body its connection took ([`super::upstream::Progress`]): a slow
//! but steady upload is not cut, a stalled one gets 504.
//!
//! Not here: TLS (CONNECT is in [`tunnel`]), the decoders themselves ([`crate::decode`]),
//! request trailers (dropped: never forwarded unscanned).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};

use super::linger::ClientBody;
use tracing::info;

use super::budget::Reservation;
use super::error::{Blocked, NotInspected, ProxyError};
use super::observe::{self, Inspection, Ongoing, Record};
use super::reload::Live;
use super::upstream::{Piece, UpstreamBody};
use super::{ConnCtx, ProxyBody, Shared, grpc, intercept, websocket};
use crate::config::Oversize;
use crate::decode::NotScanned;
use crate::metrics::{ScanError, TimedScan};
use crate::policy::{self, Action, OnInspectionError, Verdict};
use crate::scan::Findings;

/// The `Via` entry this proxy adds (RFC 9110 §7.6.3).
const VIA: &str = "1.1 egress-dlp";

/// What a body of unknown length reserves of the hold budget before its first byte (at
/// most `hold_bytes`); it reserves more, twice as much each time, as it comes.
const UNKNOWN_LENGTH_FIRST: u64 = 256 << 10;

/// Chunks in flight between the scanner and the upstream connection when streaming.
const STREAM_CHANNEL_CHUNKS: usize = 8;

/// While an oversize body streams, the policy is applied to the scan snapshot each time at
/// least this many more bytes have been scanned: often enough that an abort comes within a
/// fraction of a megabyte of the deciding value, rarely enough that building the snapshot
/// (a few small allocations) is noise next to scanning the bytes.
pub(super) const SNAPSHOT_INTERVAL: usize = 256 << 10;

/// Most bytes of a streamed body held back while the findings may not cover all of it
/// ([`crate::decode::Inspection::undecided`]; at most `limits.hold_bytes`). Past it the
/// oldest go on before they are covered by a verdict: text that keeps decoded base64
/// waiting that long is contrived (it goes in at least every 36 KiB of raw text), and the
/// engine decides a place within a few KiB, so only text with a place to decide in every
/// few KiB (dense with values, which then count) keeps it undecided that long.
pub(super) const WAIT_CAP: u64 = 1 << 20;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), plus
/// `Proxy-Connection` (legacy clients). `TE` is among them, but a request's `TE: trailers`
/// goes on (see [`prepare_request_headers`]); `Trailer` is not (RFC 9110 §6.6.2: it is
/// end to end) and is dropped from requests only, whose trailers are never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// Bodies above this size (declared, or of unknown size: chunked) are scanned in a task of
/// their own rather than on the connection's task.
const OWN_TASK_BYTES: u64 = 256 << 10;

/// Whether a request's body is large enough (or of unknown size) that scanning it should
/// not share a task, and so a core, with the connection's socket I/O.
pub(super) fn body_worth_a_task(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || content_length(headers).is_some_and(|n| n > OWN_TASK_BYTES)
}

/// Forwards one absolute-form request, or says why not.
pub(super) async fn forward(
    ctx: &ConnCtx,
    mut req: Request<ClientBody>,
    request_id: &str,
) -> Result<Response<ProxyBody>, ProxyError> {
    let shared = &*ctx.shared;
    let upgrade = upgrade_protocol(req.headers());
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let mut insp = Inspection {
        input: super::destination::policy_input(ctx, &req),
        request_id,
        record: req.extensions().get::<std::sync::Arc<Record>>().cloned(),
        client: ctx.peer.ip(),
        method: req.method().clone(),
        uri: req.uri().clone(),
        body_bytes: 0,
        window_recorded: Default::default(),
        samples: super::auth::live_of(ctx, req.extensions()).samples.clone(),
    };
    let (mut parts, mut body) = req.into_parts();
    match parts.uri.scheme_str() {
        Some("http") => {}
        // Inside an intercepted CONNECT (made absolute there), sent over verified TLS.
        Some("https") if parts.extensions.get::<intercept::Origin>().is_some() => {}
        Some(_) => {
            return Err(ProxyError::BadRequest(
                "only http:// targets are forwarded; HTTPS goes through CONNECT",
            ));
        }
        None => {
            return Err(ProxyError::BadRequest(
                "this is a proxy: the request target must be an absolute http:// URL",
            ));
        }
    }
    let host = target_host(&parts.uri)?;
    let limits = &shared.config.limits;
    if limits.oversize == Oversize::Block
        && content_length(&parts.headers).is_some_and(|n| n > limits.hold_bytes)
    {
        return Err(ProxyError::BodyTooLarge {
            limit: limits.hold_bytes,
        });
    }

    only_chunked(&parts.headers)?;
    let content_type = single_content_type(&parts.headers)?;
    let is_grpc = grpc::is_grpc(content_type);
    // The rules and policy in force when the request started judge all of it, whatever
    // a reload does meanwhile.
    let live = super::auth::live_of(ctx, &parts.extensions);
    let content_encoding = list_value(&parts.headers, &header::CONTENT_ENCODING);
    let mut scan = TimedScan::new(
        crate::decode::Inspection::new(
            &live.engine,
            &live.config.decode.limits,
            content_type,
            content_encoding.as_deref(),
        )
        .with_windows(shared.decoder_windows.for_client(ctx.peer.ip())),
    );
    // Every part of the request line a client chooses is inspected: an extension method
    // and the host's labels can carry identifiers as well as the path (found in review).
    if !is_standard_method(&parts.method) {
        scan.feed_target(parts.method.as_str().as_bytes());
    }
    if let Some(host) = parts.uri.host() {
        scan.feed_target(host.as_bytes());
    }
    if let Some(target) = parts.uri.path_and_query() {
        scan.feed_target(target.as_str().as_bytes());
    }
    let mut names = Vec::new();
    for (name, value) in &parts.headers {
        if live.config.decode.headers.matches(name.as_str()) {
            scan.feed_header(value.as_bytes());
        }
        if !is_common_request_header(name.as_str()) {
            names.extend_from_slice(name.as_str().as_bytes());
            names.push(b'\n');
        }
    }
    // The names of the other headers too, one per line: a name may hold digits, so a
    // client could send a list of card numbers as the names of empty headers (found in
    // review).
    if !names.is_empty() {
        scan.feed_header(&names);
    }
    prepare_request_headers(&mut parts.headers);
    // hyper answered any 100-continue when the body was first read; the upstream gets the
    // body without asking.
    parts.headers.remove(header::EXPECT);
    parts.headers.insert(header::HOST, host);
    if let Some(protocol) = &upgrade {
        mark_upgrade(&mut parts.headers, protocol.clone());
        // No extension may be agreed: `permessage-deflate` would send the messages
        // compressed, past inspection (see `websocket`).
        parts.headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    }

    // A gRPC call's body is a stream of messages that may last as long as the call: once
    // the head is judged, each message is judged and passed on by itself (see `grpc`).
    if is_grpc && !body.is_end_stream() {
        // Not part of gRPC, and the messages' own coding is `grpc-encoding`: a body coded
        // twice would be read one way here and maybe another by the server.
        if content_encoding
            .as_deref()
            .is_some_and(|v| !v.trim_ascii().eq_ignore_ascii_case(b"identity"))
        {
            return Err(ProxyError::BadRequest(
                "a gRPC call with a Content-Encoding other than identity",
            ));
        }
        judge(shared, &live, scan, &insp, &[], false)?;
        let call = grpc::Call {
            encoding: grpc_encoding(&parts.headers)?,
            req: Ongoing::of(ctx.shared.clone(), live.clone(), &insp, true),
        };
        return grpc::through(ctx, parts, body, call).await;
    }

    // Reserve room for what may be held, and for the decompressor windows the
    // content-encoding opens, before reading any of it: all of a body of known length; of
    // one of unknown length (chunked, an HTTP/2 stream without Content-Length: every gRPC
    // call) its first [`UNKNOWN_LENGTH_FIRST`], more as it comes (found in review: each
    // reserved `hold_bytes`, so a client's fifth concurrent call waited and got 503).
    let (may_hold, windows) = if body.is_end_stream() {
        (0, 0)
    } else {
        (
            content_length(&parts.headers)
                .map_or(UNKNOWN_LENGTH_FIRST.min(limits.hold_bytes), |n| {
                    n.min(limits.hold_bytes)
                }),
            content_encoding
                .as_deref()
                .map_or(0, |v| live.config.decode.limits.encoding_windows(v)),
        )
    };
    // Body bytes the reservation covers.
    let mut room = may_hold;
    // What `body` bytes held take of the budget with the windows (at most a client's share,
    // unless the body alone needs more).
    let with_windows = |body: u64| (body + windows).min(shared.hold_budget.most().max(body));
    let mut reservation = {
        let _busy = ctx.activity.busy();
        shared
            .hold_budget
            .reserve(ctx.peer.ip(), with_windows(may_hold))
            .await?
    };

    // Hold the body (scanning as it arrives) up to the hold limit, at no less than
    // `limits.body_min_rate` on average once the head's time has passed: a body trickled a
    // few bytes a second held its reservation (and slot) forever (found in review).
    let mut held = Vec::new();
    let mut held_bytes = 0u64;
    let mut started = tokio::time::Instant::now();
    let complete = loop {
        if held_bytes > limits.hold_bytes {
            break false;
        }
        // By when the next byte must come for the average to hold.
        let due = started + limits.body_time(held_bytes);
        let Ok(next) = tokio::time::timeout_at(due, body.frame()).await else {
            return Err(ProxyError::SlowBody(limits.body_min_rate));
        };
        match next {
            None => break true,
            Some(Err(e)) => return Err(ProxyError::ClientBody(e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() {
                        scan.feed(&data);
                        held_bytes += data.len() as u64;
                        if held_bytes > room && room < limits.hold_bytes {
                            // Twice as much each time, up to the hold limit (one byte past
                            // it and the body streams or is refused).
                            let want = held_bytes.max(room * 2).min(limits.hold_bytes);
                            let waited = tokio::time::Instant::now();
                            let _busy = ctx.activity.busy();
                            let sizes = (
                                with_windows(room),
                                with_windows(want),
                                with_windows(limits.hold_bytes),
                            );
                            let now = shared
                                .hold_budget
                                .extend(&mut reservation, ctx.peer.ip(), sizes)
                                .await?;
                            room = if now > sizes.1 {
                                limits.hold_bytes
                            } else {
                                want
                            };
                            // The wait for room is not the client's slowness.
                            started += waited.elapsed();
                        }
                        held.push(data);
                    }
                }
            }
        }
    };

    insp.body_bytes = held_bytes;
    let response = if complete {
        judge(shared, &live, scan, &insp, &held, false)?;
        // The scan has ended: its decompressors' windows are free, and of the body only
        // what arrived is held (found in review: a body of unknown length kept all of
        // `hold_bytes`).
        reservation.shrink_to(held_bytes);
        let mut body = UpstreamBody::held(held);
        let progress = body.progress();
        let request = Request::from_parts(parts, body);
        let _busy = ctx.activity.busy();
        // The rest lasts until the upstream has answered: by then the held body has been
        // written and freed.
        let _reservation = reservation;
        let sent = std::time::Instant::now();
        let response = progress
            .answer(
                intercept::send(&shared.client, request),
                limits.upstream_response_timeout,
            )
            .await?;
        shared.metrics.upstream_response(sent.elapsed());
        response
    } else if limits.oversize == Oversize::Block {
        return Err(ProxyError::BodyTooLarge {
            limit: limits.hold_bytes,
        });
    } else {
        stream_through(
            ctx,
            &live,
            parts,
            body,
            scan,
            (held, reservation, windows),
            &mut insp,
        )
        .await?
    };
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Ok(to_client(response));
    }
    match (client_upgrade, upgrade) {
        (Some(_), Some(_))
            if response
                .headers()
                .contains_key(header::SEC_WEBSOCKET_EXTENSIONS) =>
        {
            Err(ProxyError::Upstream(
                "the upstream agreed to a WebSocket extension no one offered".into(),
            ))
        }
        (Some(client_upgrade), Some(offered)) if switches_to(response.headers(), &offered) => {
            // Each message is counted on its own, not as the handshake request.
            let session = Ongoing::of(ctx.shared.clone(), live, &insp, false);
            Ok(switch(ctx, response, client_upgrade, session))
        }
        // RFC 9110 §7.8: a 101 names the protocol switched to, one the client offered.
        // Anything else (`h2c`, or no `Upgrade` at all) would be a tunnel to a protocol no
        // one asked for, past inspection (found in review).
        (Some(_), Some(_)) => Err(ProxyError::Upstream(
            "the upstream switched to a protocol the client did not offer".into(),
        )),
        _ => Err(ProxyError::Upstream(
            "the upstream switched protocols without being asked".into(),
        )),
    }
}

/// A gRPC call's `grpc-encoding`: one field at most, since servers differ on which of two
/// they read (grpc-go the last), and the scan must read the one the server does (found in
/// review: `identity` then `deflate` had a compressed message scanned as raw bytes).
fn grpc_encoding(headers: &HeaderMap) -> Result<Option<Vec<u8>>, ProxyError> {
    let mut fields = headers.get_all("grpc-encoding").iter();
    match (fields.next(), fields.next()) {
        (_, Some(_)) => Err(ProxyError::BadRequest(
            "a gRPC call with more than one grpc-encoding field",
        )),
        (one, None) => Ok(one.map(|v| v.as_bytes().to_vec())),
    }
}

/// Whether a 101's `Upgrade` names exactly one protocol, the one `offered` (by name: the
/// answer may leave out a version the offer carried).
fn switches_to(headers: &HeaderMap, offered: &HeaderValue) -> bool {
    let name = |p: &[u8]| -> Vec<u8> {
        let p = p.trim_ascii();
        let end = p.iter().position(|&b| b == b'/').unwrap_or(p.len());
        p[..end].to_ascii_lowercase()
    };
    let mut named = headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter(|p| !p.trim_ascii().is_empty());
    match (named.next(), named.next()) {
        (Some(only), None) => name(only) == name(offered.as_bytes()),
        _ => false,
    }
}

/// The upstream accepted a WebSocket upgrade: hands both connections to the relay that
/// inspects the client's messages, and passes the 101 on to the client.
fn switch(
    ctx: &ConnCtx,
    mut response: Response<Incoming>,
    client_upgrade: hyper::upgrade::OnUpgrade,
    session: Ongoing,
) -> Response<ProxyBody> {
    let protocol = response.headers().get(header::UPGRADE).cloned();
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    info!(
        request_id = session.request_id,
        "connection upgraded to WebSocket: the client's messages are inspected"
    );
    websocket::relay(
        ctx,
        client_upgrade,
        async move {
            upstream_upgrade
                .await
                .map(hyper_util::rt::TokioIo::new)
                .map_err(std::io::Error::other)
        },
        session,
    );
    let mut response = to_client(response);
    if let Some(protocol) = protocol {
        mark_upgrade(response.headers_mut(), protocol);
    }
    response
}

/// The `Host` an absolute-form target implies (RFC 9112 §3.2.2: it replaces the client's).
fn target_host(uri: &http::Uri) -> Result<HeaderValue, ProxyError> {
    let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
        return Err(ProxyError::BadRequest("the request target has no host"));
    };
    // `port()` is `None` for a port that is not a number (`:abc`, `:99999`) as for no port
    // at all: such a target would go to port 80 (found in review).
    if !uri.authority().is_some_and(|a| valid_port(a.as_str())) {
        return Err(ProxyError::BadRequest(
            "the request target's port is not a number from 1 to 65535",
        ));
    }
    let host = match uri.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    HeaderValue::from_str(&host)
        .map_err(|_| ProxyError::BadRequest("the request target's host is not valid"))
}

/// Whether the port of `authority` (`[user@]host[:port]`) is absent, empty (the default,
/// RFC 3986 §3.2.3) or a number from 1 to 65535.
fn valid_port(authority: &str) -> bool {
    let hostport = authority.rsplit('@').next().unwrap_or(authority);
    let port = match hostport.rfind(']') {
        Some(end) => hostport[end + 1..].strip_prefix(':'),
        None => hostport.rfind(':').map(|i| &hostport[i + 1..]),
    };
    match port {
        None | Some("") => true,
        Some(p) => p.parse::<u16>().is_ok_and(|p| p != 0),
    }
}

/// Protocols a client may switch to through the proxy. Anything else (`h2c` above all: a
/// whole HTTP/2 session the proxy would not inspect) is not offered to the upstream: the
/// `Upgrade` header is dropped with the other hop-by-hop headers and the request goes on
/// as plain HTTP/1.1, as Squid does by default.
const UPGRADES_ALLOWED: &[&str] = &["websocket"];

/// The protocol to offer the upstream, when the request is an upgrade (`Connection:
/// upgrade` and an `Upgrade` header) to a protocol in [`UPGRADES_ALLOWED`].
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asked = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !asked {
        return None;
    }
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|protocol| {
            // A protocol may carry a version (`websocket/13`): the name decides.
            let name = protocol.split('/').next().unwrap_or("");
            UPGRADES_ALLOWED
                .iter()
                .any(|allowed| name.eq_ignore_ascii_case(allowed))
        })
        .and_then(|protocol| HeaderValue::from_str(protocol).ok())
}

/// Puts back the two hop-by-hop headers an upgrade needs on the next hop.
fn mark_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// How the pump of an oversize body ended (see [`stream_through`]).
enum Pumped {
    /// The whole body was read and scanned; its last chunks are still to be sent.
    Read(VecDeque<Bytes>),
    /// The upstream stopped taking the body (its request failed or was answered).
    Abandoned,
}

/// Forwards a body larger than the hold limit as it is scanned.
///
/// Nothing goes upstream if what was held already decides a block. After that, after each
/// chunk in which a value was counted (and at least every [`SNAPSHOT_INTERVAL`] bytes) the
/// policy is applied to the scan snapshot, and a block ends
/// the pump with an error: the upstream body's sender is dropped without [`Piece::End`], so
/// hyper fails the upstream request mid-body (the upstream sees a broken, incomplete request)
/// and the client gets the block page. The newest chunk is always held back: it goes
/// upstream only once the whole body has been scanned and allowed, so a block decided at
/// the very end aborts the upstream body as well. However the pump ends — the body read
/// whole, the upstream answering or failing before its end, the client leaving — what was
/// scanned is judged before any answer goes back: bytes already went upstream, so a
/// block still gets the block page (not the upstream's answer) and its audit event.
async fn stream_through(
    ctx: &ConnCtx,
    live: &Live,
    parts: http::request::Parts,
    mut body: ClientBody,
    mut scan: TimedScan<'_>,
    (held, mut reservation, windows): (Vec<Bytes>, Reservation, u64),
    insp: &mut Inspection<'_>,
) -> Result<Response<Incoming>, ProxyError> {
    let shared = &*ctx.shared;
    let mut judged = Judged::default();
    // The held bytes were scanned already: a block there costs the upstream nothing.
    judge_snapshot(
        shared,
        live,
        &mut scan,
        insp,
        &held,
        false,
        &mut judged.window_total,
    )?;
    judged.matches = scan.matches();
    judged.problem = scan.not_scanned().is_some();
    let (tx, mut up_body) = UpstreamBody::streamed(STREAM_CHANNEL_CHUNKS);
    let progress = up_body.progress();
    let timeout = shared.config.limits.upstream_response_timeout;
    let sent = std::time::Instant::now();
    let send = intercept::send(&shared.client, Request::from_parts(parts, up_body));
    tokio::pin!(send);
    // Reads, scans and passes on the body up to its last chunk (held back).
    let pumped = {
        let pump = async {
            let mut held = held.into_iter();
            // Given back to the hold budget once the held chunks have been passed on (from
            // then on only the channel's few chunks, and those waiting below, are in
            // memory), all but the decompressor windows, in use until the scan ends.
            let mut shrunk = false;
            // Chunks scanned but not sent: the newest always, and every one since the
            // decoders last held nothing unscanned (at most `wait_cap` bytes).
            let mut queue: VecDeque<Bytes> = VecDeque::new();
            let mut queued = 0usize;
            let wait_cap = WAIT_CAP.min(shared.config.limits.hold_bytes) as usize;
            let mut unjudged = 0usize;
            loop {
                let next = match held.next() {
                    Some(chunk) => chunk,
                    None => match body.frame().await {
                        None => break,
                        Some(Err(e)) => return Err(ProxyError::ClientBody(e)),
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(data) if !data.is_empty() => {
                                if !shrunk {
                                    reservation.shrink_to(windows + wait_cap as u64);
                                    shrunk = true;
                                }
                                scan.feed(&data);
                                insp.body_bytes += data.len() as u64;
                                unjudged += data.len();
                                // Judged before the chunk before it goes on whenever a
                                // value was counted: judged only every interval, a list
                                // reached the upstream (not a complete request) before
                                // its block (found in a red-team review).
                                // So is a chunk in which the request became known not to
                                // be fully inspectable. Dropping `tx` without
                                // `Piece::End` (the `?`) aborts the upstream body.
                                let every = unjudged >= SNAPSHOT_INTERVAL;
                                if judged.judge(shared, live, &mut scan, insp, every)? {
                                    unjudged = 0;
                                }
                                data
                            }
                            _ => continue,
                        },
                    },
                };
                queued += next.len();
                queue.push_back(next);
                // While the decoders hold bytes not scanned yet (decoded base64 text
                // waiting for its place in the stream: found by a red-team probe, a list
                // in a minified JSON body went upstream before it was counted) or the
                // engine has values still to decide (a short list followed by a byte or
                // two and a pause), the chunks that gave them wait too, up to the cap;
                // then the oldest go.
                let mut waiting = scan.undecided();
                if waiting && queued > wait_cap {
                    // Chunks are about to go that the findings may not cover: content
                    // waiting for its place in the stream (a decompressor's fields past
                    // its limit, below the cap: see `Inspection::flush_pending`) goes in
                    // now, and is judged before they go (found in review: a list at the
                    // start of a 3 MiB skippable frame went upstream uncounted).
                    scan.flush_pending();
                    judged.judge(shared, live, &mut scan, insp, false)?;
                    waiting = scan.undecided();
                }
                while queue.len() > 1 && (!waiting || queued > wait_cap) {
                    let ready = queue.pop_front().expect("more than one chunk queued");
                    queued -= ready.len();
                    if !pass(ctx, &tx, Piece::Data(ready), timeout).await? {
                        // The upstream request already failed (or was answered).
                        return Ok(Pumped::Abandoned);
                    }
                }
            }
            Ok(Pumped::Read(queue))
        };
        tokio::pin!(pump);
        tokio::select! {
            pumped = &mut pump => Ok(pumped),
            // The upstream answered (or failed) before the body was done.
            answered = &mut send => Err(answered),
        }
    };
    // The body is read: what is left of the reservation (the decompressors' windows, or
    // all of it when the body ended with its held part) goes back as the scan ends, in
    // the judgement just below (found in review: it was kept until the upstream answered).
    drop(reservation);
    // Whatever ends the pump, what was scanned is judged before any answer is passed on:
    // bytes already went upstream, and a block must still be answered and recorded.
    let early = match pumped {
        Ok(Ok(Pumped::Read(rest))) => {
            judge(shared, live, scan, insp, &[], true)?;
            let finish = async {
                for last in rest.into_iter().map(Piece::Data).chain([Piece::End]) {
                    if !pass(ctx, &tx, last, timeout).await? {
                        break;
                    }
                }
                Ok::<(), ProxyError>(())
            };
            tokio::pin!(finish);
            tokio::select! {
                finished = &mut finish => {
                    finished?;
                    None
                }
                answered = &mut send => Some(answered),
            }
        }
        Ok(Ok(Pumped::Abandoned)) => {
            judge_cut(shared, live, scan, insp)?;
            None
        }
        Ok(Err(ProxyError::ClientBody(e))) => {
            // The client went away mid-body: the request is broken, but what reached the
            // upstream before may still make it a block, and then it is recorded.
            judge_cut(shared, live, scan, insp)?;
            return Err(ProxyError::ClientBody(e));
        }
        Ok(Err(e @ ProxyError::UpstreamTimeout(_))) => {
            // The upstream stopped taking the body: as for a client gone, what reached it
            // is judged first.
            judge_cut(shared, live, scan, insp)?;
            return Err(e);
        }
        Ok(Err(e)) => return Err(e),
        // The upstream answered before the body was done: that answer goes to the client
        // only if what was scanned allows it; the unsent rest is abandoned.
        Err(answered) => {
            judge_cut(shared, live, scan, insp)?;
            Some(answered)
        }
    };
    drop(tx);
    let _busy = ctx.activity.busy();
    let response = match early {
        Some(answered) => answered,
        None => progress.answer(send, timeout).await,
    }?;
    shared.metrics.upstream_response(sent.elapsed());
    Ok(response)
}

/// Passes one piece of a streamed body to the upstream connection: `Ok(false)` when its
/// request is gone (failed or answered), `Err(UpstreamTimeout)` when it has taken nothing
/// for `timeout` (found in review: an upstream that stopped reading left the client with
/// no answer, its connection closed as idle, since the proxy stops reading the client
/// meanwhile; that wait is the proxy's, not the client's).
async fn pass(
    ctx: &ConnCtx,
    tx: &tokio::sync::mpsc::Sender<Piece>,
    piece: Piece,
    timeout: std::time::Duration,
) -> Result<bool, ProxyError> {
    let _busy = ctx.activity.busy();
    match tokio::time::timeout(timeout, tx.send(piece)).await {
        Ok(sent) => Ok(sent.is_ok()),
        Err(_) => Err(ProxyError::UpstreamTimeout(timeout)),
    }
}

/// Judges a host name alone, before anything goes to it: a CONNECT's host (before the
/// proxy resolves it and connects) and a ClientHello's server name other than that host
/// (before the upstream handshake carries it). The proxy itself sends a name out — in its
/// DNS lookup, its connect, the upstream's ClientHello — so identifiers in one left before
/// any request inside was inspected (found in review: ten card numbers as the labels of a
/// server name reached the upstream, though the request inside was then blocked).
///
/// `names` are judged together (a ClientHello's server name with the CONNECT's host: five
/// values in each are ten on one connection). A block is `Err(Blocked)`, recorded like any
/// block; a log verdict is recorded and the names pass (a blind tunnel has no requests of
/// its own to record it).
pub(super) fn judge_name(
    ctx: &ConnCtx,
    live: &Live,
    input: policy::Input,
    (request_id, record): (&str, Option<std::sync::Arc<Record>>),
    uri: http::Uri,
    names: &[&str],
) -> Result<(), ProxyError> {
    let mut scan = TimedScan::new(crate::decode::Inspection::new(
        &live.engine,
        &live.config.decode.limits,
        None,
        None,
    ));
    for name in names {
        scan.feed_target(name.as_bytes());
    }
    let (outcome, spent) = scan.finish();
    let verdict = policy::evaluate(&live.config.rules, &outcome.findings, &input);
    if verdict.action == Action::Allow {
        return Ok(());
    }
    let insp = Inspection {
        input,
        request_id,
        record,
        client: ctx.peer.ip(),
        method: Method::CONNECT,
        uri,
        body_bytes: 0,
        window_recorded: Default::default(),
        samples: live.samples.clone(),
    };
    observe::decided(
        &ctx.shared,
        &insp,
        &outcome.findings,
        spent,
        &verdict,
        &[],
        false,
    )?;
    if verdict.action != Action::Block {
        return Ok(());
    }
    info!(request_id, "CONNECT blocked by its server name");
    Err(ProxyError::Blocked(Box::new(Blocked::from_verdict(
        &verdict, false,
    ))))
}

/// Finishes the scan and applies the policy — the rules' thresholds, then the sender's
/// cumulative windows (recorded when the request goes through): `Err(Blocked)` on block,
/// a log line on log. `partial`: part of the body has already gone upstream.
pub(super) fn judge(
    shared: &Shared,
    live: &Live,
    scan: TimedScan<'_>,
    insp: &Inspection<'_>,
    held: &[Bytes],
    partial: bool,
) -> Result<Verdict, ProxyError> {
    let (outcome, scan_time) = scan.finish();
    let problem = outcome.not_scanned.as_ref();
    decide(
        shared,
        live,
        &outcome.findings,
        problem,
        scan_time,
        insp,
        held,
        partial,
    )
}

/// [`judge`] for a body cut short — the upstream answered or failed, or the client left,
/// before its end. The scan is finished on the bytes it was fed: for the upstream the body
/// has ended there, so a value in the last bytes sent counts (found in review: values the
/// engine still held for the bytes after them were left out, and a list sent just before
/// the cut passed). An encoding cut mid-stream is not a problem of its own (it would turn a
/// benign upload's early 401 into a "not inspected" 403): only problems found before the
/// cut count.
fn judge_cut(
    shared: &Shared,
    live: &Live,
    scan: TimedScan<'_>,
    insp: &Inspection<'_>,
) -> Result<Verdict, ProxyError> {
    let problem = scan.not_scanned().cloned();
    let (outcome, spent) = scan.finish();
    // A rule stopped for too much work while the scan finished counts too: unlike an
    // encoding cut short, the bytes fed were not searched (found in review).
    let problem = problem.or_else(|| {
        (outcome.not_scanned.as_ref())
            .filter(|p| p.reason == crate::decode::Reason::ScanWork)
            .cloned()
    });
    decide(
        shared,
        live,
        &outcome.findings,
        problem.as_ref(),
        spent,
        insp,
        &[],
        true,
    )
}

/// The policy applied to a scan's findings (and the problem that kept it from being
/// complete, if any): see [`judge`].
#[allow(clippy::too_many_arguments)]
fn decide(
    shared: &Shared,
    live: &Live,
    findings: &Findings,
    problem: Option<&NotScanned>,
    scan_time: std::time::Duration,
    insp: &Inspection<'_>,
    held: &[Bytes],
    partial: bool,
) -> Result<Verdict, ProxyError> {
    let request_id = insp.request_id;
    let mut verdict = policy::evaluate(&live.config.rules, findings, &insp.input);
    if !findings.categories.is_empty() && shared.windows.enabled() {
        // What goes to a sanctioned destination is not a leak: it does not fill a window;
        // nor does a request refused as not fully inspected (found in review: it did).
        let refused = problem.is_some()
            && live.config.inspection.on_inspection_error == OnInspectionError::Block;
        let allowed = verdict.action != Action::Block
            && !refused
            && !matches!(verdict.destination, policy::Destination::Sanctioned(_));
        let mut recorded = insp
            .window_recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let window = shared.windows.observe_recorded(
            &principal(insp),
            findings,
            allowed,
            Instant::now(),
            &mut recorded,
        );
        verdict.raise(window.action, window.reasons);
    }
    if verdict.action != Action::Block
        && let Some(not_scanned) = problem
    {
        let record = (insp, findings, &verdict, (held, partial));
        not_inspected(shared, live, not_scanned, record)?;
    }
    observe::decided(shared, insp, findings, scan_time, &verdict, held, partial)?;
    match verdict.action {
        Action::Allow => {}
        Action::Log => {
            let rules: Vec<&str> = verdict.reasons.iter().map(|r| r.rule.as_str()).collect();
            let user = verdict.user.as_deref().unwrap_or("-");
            let destination = verdict.destination.as_str();
            if let policy::Destination::Sanctioned(pattern) = &verdict.destination {
                info!(request_id, action = "log", user, destination, sanctioned = %pattern, bulk = verdict.sanctioned_bulk, rules = ?rules, bytes = findings.bytes, "request logged: sanctioned destination");
            } else {
                info!(request_id, action = "log", user, destination, rules = ?rules, bytes = findings.bytes, "request logged");
            }
        }
        Action::Block => {
            return Err(ProxyError::Blocked(Box::new(Blocked::from_verdict(
                &verdict, partial,
            ))));
        }
    }
    Ok(verdict)
}

/// What a streamed body's snapshots last judged (see [`judge_snapshot`]).
#[derive(Default)]
pub(super) struct Judged {
    /// Values counted then ([`TimedScan::matches`]).
    matches: u64,
    /// Whether the request was known then not to be fully inspectable.
    problem: bool,
    /// The sum of the distinct counts when a window last looked at the values.
    window_total: u64,
}

impl Judged {
    /// Judges a streamed body's snapshot mid-stream when a value was counted or a problem
    /// found since the last one, or when `anyway`; `Ok(true)` when it judged.
    pub(super) fn judge(
        &mut self,
        shared: &Shared,
        live: &Live,
        scan: &mut TimedScan<'_>,
        insp: &Inspection<'_>,
        anyway: bool,
    ) -> Result<bool, ProxyError> {
        let problem = scan.not_scanned().is_some();
        if !anyway && scan.matches() == self.matches && problem == self.problem {
            return Ok(false);
        }
        self.matches = scan.matches();
        self.problem = problem;
        judge_snapshot(shared, live, scan, insp, &[], true, &mut self.window_total)?;
        Ok(true)
    }
}

/// Whose cumulative windows a request counts in: its user's when it has one, else its
/// client address's.
fn principal(insp: &Inspection<'_>) -> String {
    match &insp.input.user {
        Some(user) => format!("user:{user}"),
        None => insp.client.to_string(),
    }
}

/// Applies the policy to what the scan has decided so far (a lower bound that only grows):
/// `Err(Blocked)` once that is already a block. Log verdicts wait for [`judge`] at the end.
///
/// Cumulative windows apply too, as the body goes (see
/// [`Windows::observe_streamed`](crate::policy::window::Windows::observe_streamed): its
/// values are recorded as they go upstream, so a window block stops it before they do,
/// and another request of the same sender counts them): whenever a distinct count has
/// grown past `window_total` (their sum at the last look), with the hashes of the
/// categories that have window thresholds only.
fn judge_snapshot(
    shared: &Shared,
    live: &Live,
    scan: &mut TimedScan<'_>,
    insp: &Inspection<'_>,
    held: &[Bytes],
    partial: bool,
    window_total: &mut u64,
) -> Result<(), ProxyError> {
    // The counts decide; the values' hashes are taken only for a block's record, or for
    // the windows.
    let counts = scan.counts();
    let mut verdict = policy::evaluate(&live.config.rules, &counts, &insp.input);
    // As in `decide`: a request refused as not fully inspected, and what goes to a
    // sanctioned destination, fill no window.
    let refused = scan.not_scanned().is_some()
        && live.config.inspection.on_inspection_error == OnInspectionError::Block;
    let total: u64 = counts.categories.iter().map(|c| c.distinct).sum();
    if verdict.action != Action::Block
        && !refused
        && !matches!(verdict.destination, policy::Destination::Sanctioned(_))
        && total > *window_total
        && shared.windows.enabled()
    {
        *window_total = total;
        let thresholds = shared.windows.config().thresholds;
        let counted = scan.counts_with_values(&|c: &str| thresholds.contains_key(c));
        let mut recorded = insp
            .window_recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let window = shared.windows.observe_streamed(
            &principal(insp),
            &counted,
            Instant::now(),
            &mut recorded,
        );
        verdict.raise(window.action, window.reasons);
    }
    if verdict.action != Action::Block
        && let Some(not_scanned) = scan.not_scanned().cloned()
        && live.config.inspection.on_inspection_error == OnInspectionError::Block
    {
        let findings = scan.findings();
        let record = (insp, &findings, &verdict, (held, partial));
        return not_inspected(shared, live, &not_scanned, record);
    }
    if verdict.action == Action::Block {
        let findings = scan.findings();
        observe::decided(
            shared,
            insp,
            &findings,
            scan.spent(),
            &verdict,
            held,
            partial,
        )?;
        info!(
            request_id = insp.request_id,
            scanned = scan.bytes(),
            "oversize body blocked before its end"
        );
        return Err(ProxyError::Blocked(Box::new(Blocked::from_verdict(
            &verdict, partial,
        ))));
    }
    Ok(())
}

/// What [`not_inspected`] records a refused request with: its inspection, what was found,
/// the verdict on that, and (held bytes, whether part of the body went upstream).
type Uninspected<'a> = (
    &'a Inspection<'a>,
    &'a Findings,
    &'a Verdict,
    (&'a [Bytes], bool),
);

/// A request that was not fully inspected: `Err(NotInspected)` under
/// `policy.on_inspection_error: block`, a log line under `allow`; counted either way.
fn not_inspected(
    shared: &Shared,
    live: &Live,
    not_scanned: &NotScanned,
    (insp, findings, verdict, (held, partial)): Uninspected<'_>,
) -> Result<(), ProxyError> {
    let request_id = insp.request_id;
    shared.metrics.scan_error(ScanError::Decode);
    let reason = not_scanned.reason.as_str();
    let detail = not_scanned.detail.as_str();
    match live.config.inspection.on_inspection_error {
        OnInspectionError::Block => {
            info!(
                request_id,
                reason, detail, "request not fully inspected: blocked"
            );
            observe::refused_uninspected(
                shared,
                insp,
                findings,
                verdict,
                (held, partial),
                not_scanned.reason.as_str(),
            )?;
            Err(ProxyError::NotInspected(Box::new(NotInspected {
                reason: not_scanned.reason,
                partial,
            })))
        }
        OnInspectionError::Allow => {
            info!(
                request_id,
                reason, detail, "request not fully inspected: allowed by policy"
            );
            Ok(())
        }
    }
}

/// The upstream response as the client gets it: hop-by-hop headers removed, `Via` added.
/// Its `Trailer` stays, so that an HTTP/1.1 client gets the trailer fields it announces
/// (hyper sends only the fields a response's `Trailer` names).
pub(super) fn to_client(response: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    prepare_headers(&mut parts.headers);
    Response::from_parts(
        parts,
        body.map_err(|e| -> super::BoxError { Box::new(e) }).boxed(),
    )
}

/// [`prepare_headers`] for a request going upstream, which also loses its `Trailer` (its
/// trailers are dropped, never forwarded unscanned) and keeps `TE: trailers`: gRPC sends
/// it to find proxies that cannot carry response trailers (this one can), and servers on
/// gRPC's C core refuse a call without it (found in review). HTTP/2 allows exactly this
/// value (RFC 9113 §8.2.2); over HTTP/1.1 [`name_te_in_connection`] adds the `Connection:
/// te` it needs. Any other coding it names is dropped: the upstream client undoes
/// `chunked` only.
fn prepare_request_headers(headers: &mut HeaderMap) {
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|coding| {
            let name = coding.split(|&b| b == b';').next().unwrap_or(b"");
            name.trim_ascii().eq_ignore_ascii_case(b"trailers")
        });
    prepare_headers(headers);
    headers.remove(header::TRAILER);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// For a request about to go upstream over HTTP/1.1: a `TE` kept by
/// [`prepare_request_headers`] is named in `Connection` (RFC 9110 §10.1.4). Not for
/// HTTP/2, where `Connection` is not allowed and hyper removes the fields it names.
pub(super) fn name_te_in_connection(headers: &mut HeaderMap) {
    if headers.contains_key(header::TE) {
        headers.append(header::CONNECTION, HeaderValue::from_static("te"));
    }
}

/// Removes hop-by-hop headers (the fixed list and those named in `Connection`), adds `Via`.
pub(super) fn prepare_headers(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    headers.append(header::VIA, HeaderValue::from_static(VIA));
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The one `Content-Type` (a field that is not a list): several lines that differ are
/// refused, since the upstream may read either one (found in review: only the first was
/// decoded by).
fn single_content_type(headers: &HeaderMap) -> Result<Option<&[u8]>, ProxyError> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let first = values.next();
    if values.any(|v| Some(v) != first) {
        return Err(ProxyError::BadRequest(
            "the request has more than one Content-Type",
        ));
    }
    Ok(first.map(HeaderValue::as_bytes))
}

/// Refuses a transfer coding other than `chunked` (which hyper has undone): the body would
/// be scanned encoded, and `Transfer-Encoding` is hop-by-hop, so the upstream would get it
/// without a word of how it is encoded.
///
/// `chunked` twice is refused too (RFC 9112 §6.1 forbids it): hyper undoes one, and the
/// body would be scanned with the inner chunk framing cutting every value (found in
/// review).
fn only_chunked(headers: &HeaderMap) -> Result<(), ProxyError> {
    let mut chunked = 0;
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        let text = String::from_utf8_lossy(value.as_bytes());
        for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if !coding.eq_ignore_ascii_case("chunked") {
                return Err(ProxyError::TransferCoding);
            }
            chunked += 1;
        }
    }
    if chunked > 1 {
        return Err(ProxyError::BadRequest("chunked is applied more than once"));
    }
    Ok(())
}

/// A list field (`Content-Encoding`) sent as several lines, joined as one value, which
/// RFC 9110 says it means: `identity` and `br` on two lines is `identity, br`.
fn list_value(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name).iter();
    let mut joined = values.next()?.as_bytes().to_vec();
    for v in values {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v.as_bytes());
    }
    Some(joined)
}

/// The methods of RFC 9110 and PATCH: the ones not worth scanning.
pub(super) fn is_standard_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::DELETE
            | Method::OPTIONS
            | Method::TRACE
            | Method::PATCH
            | Method::CONNECT
    )
}

/// Request headers every client sends whose names carry nothing of the user's: the names of
/// all others are scanned.
fn is_common_request_header(name: &str) -> bool {
    const COMMON: &[&str] = &[
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "authorization",
        "cache-control",
        "connection",
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-length",
        "content-type",
        "cookie",
        "dnt",
        "expect",
        "forwarded",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "keep-alive",
        "origin",
        "pragma",
        "priority",
        "proxy-authorization",
        "proxy-connection",
        "range",
        "referer",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "upgrade-insecure-requests",
        "user-agent",
        "via",
    ];
    // Names come lowercase from the `http` crate.
    COMMON.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_numbers_from_1_to_65535_or_absent() {
        for (authority, ok) in [
            ("example.com", true),
            ("example.com:", true),
            ("example.com:8080", true),
            ("u:p@example.com:80", true),
            ("[::1]:443", true),
            ("[::1]", true),
            ("example.com:abc", false),
            ("example.com:99999", false),
            ("example.com:0", false),
            ("[::1]:x", false),
            ("u:p@example.com:65536", false),
        ] {
            assert_eq!(valid_port(authority), ok, "{authority}");
        }
    }

    #[test]
    fn only_websocket_upgrades_are_offered_upstream() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("upgrade", "websocket", Some("websocket")),
            ("keep-alive, Upgrade", "WebSocket", Some("WebSocket")),
            ("upgrade", "h2c", None),
            ("upgrade", "h2c, websocket/13", Some("websocket/13")),
            ("upgrade", "TLS/1.2", None),
            ("keep-alive", "websocket", None),
        ];
        for (connection, upgrade, want) in cases {
            let mut h = HeaderMap::new();
            h.insert(header::CONNECTION, HeaderValue::from_static(connection));
            h.insert(header::UPGRADE, HeaderValue::from_static(upgrade));
            let got = upgrade_protocol(&h);
            assert_eq!(
                got.as_ref().map(|v| v.to_str().unwrap()),
                *want,
                "{connection} / {upgrade}"
            );
        }
    }

    #[test]
    fn a_request_keeps_te_trailers_alone_and_loses_its_trailer_field() {
        for (te, kept) in [
            (Some("trailers"), true),
            (Some("deflate;q=0.5, Trailers"), true),
            (Some("trailers;q=1"), true),
            (Some("gzip"), false),
            (Some("trailersx"), false),
            (None, false),
        ] {
            let mut h = HeaderMap::new();
            if let Some(te) = te {
                h.insert(header::TE, HeaderValue::from_static(te));
            }
            h.insert(header::TRAILER, HeaderValue::from_static("x-checksum"));
            h.insert(header::CONNECTION, HeaderValue::from_static("te"));
            prepare_request_headers(&mut h);
            assert_eq!(
                h.get(header::TE).map(|v| v.to_str().unwrap()),
                kept.then_some("trailers"),
                "{te:?}"
            );
            assert!(!h.contains_key(header::TRAILER), "{te:?}");
            assert!(!h.contains_key(header::CONNECTION), "{te:?}");
            name_te_in_connection(&mut h);
            let connection: Vec<_> = h.get_all(header::CONNECTION).iter().collect();
            assert_eq!(connection.len(), usize::from(kept), "{te:?}");
        }
    }

    #[test]
    fn a_101_must_name_the_one_protocol_offered() {
        let offered = HeaderValue::from_static("websocket/13");
        for (upgrade, ok) in [
            (&["websocket"][..], true),
            (&["WebSocket"], true),
            (&[" websocket/13 "], true),
            (&["h2c"], false),
            (&[], false),
            (&[""], false),
            (&["websocket, h2c"], false),
            (&["websocket", "h2c"], false),
        ] {
            let mut h = HeaderMap::new();
            for u in upgrade {
                h.append(header::UPGRADE, HeaderValue::from_static(u));
            }
            assert_eq!(switches_to(&h, &offered), ok, "{upgrade:?}");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-secret-hop", "1"),
            ("x-kept", "yes"),
            ("via", "1.0 upstream-cache"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        prepare_headers(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["via", "x-kept"]);
        let via: Vec<&str> = h
            .get_all("via")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(via, ["1.0 upstream-cache", VIA]);
    }
}
