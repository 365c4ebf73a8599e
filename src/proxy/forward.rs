//! Absolute-form HTTP forwarding, with every request inspected before it leaves.
//!
//! The request target (path and query, percent-decoded) and the body go through one engine
//! stream, so distinct values are counted across both. A body up to `limits.hold_bytes` is
//! read and scanned whole before the upstream request starts: a blocked request sends
//! nothing. A larger body is refused (`oversize: block`) or forwarded as it is scanned
//! (`oversize: stream`). While it streams, the policy is applied to the engine's snapshot
//! ([`Stream::findings`], a lower bound that only grows) every [`SNAPSHOT_INTERVAL`] bytes,
//! so an upload whose customer list comes early is aborted early; and its newest chunk is
//! always held back, so that a block verdict at the very end still aborts the upstream
//! request before the upstream has seen all of it.
//!
//! An upgrade request (WebSocket) is inspected like any other request; if the upstream
//! answers 101, both connections are handed to [`tunnel::splice`] and the messages that
//! follow pass through uninspected. Only WebSocket is offered upstream: an upgrade to
//! anything else (`h2c`) is forwarded as a plain request, without its `Upgrade` header.
//!
//! Not here: TLS (CONNECT is in [`tunnel`]), body decoding (compressed, multipart, JSON: the
//! decode issue), header scanning, request trailers (dropped: never forwarded unscanned).

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};

use super::linger::ClientBody;
use percent_encoding::percent_decode;
use tracing::info;

use super::budget::Reservation;
use super::error::{Blocked, ProxyError};
use super::upstream::{Piece, UpstreamBody};
use super::{ConnCtx, ProxyBody, Shared, intercept, tunnel};
use crate::config::Oversize;
use crate::policy::{self, Action, Verdict};
use crate::scan::Stream;

/// The `Via` entry this proxy adds (RFC 9110 §7.6.3).
const VIA: &str = "1.1 egress-dlp";

/// Chunks in flight between the scanner and the upstream connection when streaming.
const STREAM_CHANNEL_CHUNKS: usize = 8;

/// While an oversize body streams, the policy is applied to the scan snapshot each time at
/// least this many more bytes have been scanned: often enough that an abort comes within a
/// fraction of a megabyte of the deciding value, rarely enough that building the snapshot
/// (a few small allocations) is noise next to scanning the bytes.
const SNAPSHOT_INTERVAL: usize = 256 << 10;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), plus
/// `Proxy-Connection` (legacy clients).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
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

    let mut scan = shared.engine.stream();
    if let Some(target) = parts.uri.path_and_query() {
        let decoded: Cow<'_, [u8]> = percent_decode(target.as_str().as_bytes()).into();
        scan.feed(&decoded);
        // A line break keeps a match from joining the end of the target to the body.
        scan.feed(b"\n");
    }
    prepare_headers(&mut parts.headers);
    // hyper answered any 100-continue when the body was first read; the upstream gets the
    // body without asking.
    parts.headers.remove(header::EXPECT);
    parts.headers.insert(header::HOST, host);
    if let Some(protocol) = &upgrade {
        mark_upgrade(&mut parts.headers, protocol.clone());
    }

    // Reserve room for what may be held, all at once and before reading any of it.
    let may_hold = if body.is_end_stream() {
        0
    } else {
        content_length(&parts.headers).map_or(limits.hold_bytes, |n| n.min(limits.hold_bytes))
    };
    let reservation = {
        let _busy = ctx.activity.busy();
        shared.hold_budget.reserve(may_hold).await?
    };

    // Hold the body (scanning as it arrives) up to the hold limit.
    let mut held = Vec::new();
    let mut held_bytes = 0u64;
    let complete = loop {
        if held_bytes > limits.hold_bytes {
            break false;
        }
        match body.frame().await {
            None => break true,
            Some(Err(e)) => return Err(ProxyError::ClientBody(e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() {
                        scan.feed(&data);
                        held_bytes += data.len() as u64;
                        held.push(data);
                    }
                }
            }
        }
    };

    let response = if complete {
        judge(shared, scan, request_id, false)?;
        let request = Request::from_parts(parts, UpstreamBody::held(held));
        let _busy = ctx.activity.busy();
        // The reservation lasts until the upstream has answered: by then the held body
        // has been written and freed.
        let _reservation = reservation;
        tokio::time::timeout(
            limits.upstream_response_timeout,
            intercept::send(&shared.client, request),
        )
        .await
        .map_err(|_| ProxyError::UpstreamTimeout(limits.upstream_response_timeout))??
    } else if limits.oversize == Oversize::Block {
        return Err(ProxyError::BodyTooLarge {
            limit: limits.hold_bytes,
        });
    } else {
        stream_through(ctx, parts, body, scan, (held, reservation), request_id).await?
    };
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Ok(to_client(response));
    }
    match (client_upgrade, upgrade) {
        (Some(client_upgrade), Some(_)) => Ok(switch(ctx, response, client_upgrade, request_id)),
        _ => Err(ProxyError::Upstream(
            "the upstream switched protocols without being asked".into(),
        )),
    }
}

/// The upstream accepted an upgrade: hands both connections to a tunnel and passes the 101
/// on to the client.
fn switch(
    ctx: &ConnCtx,
    mut response: Response<Incoming>,
    client_upgrade: hyper::upgrade::OnUpgrade,
    request_id: &str,
) -> Response<ProxyBody> {
    let protocol = response.headers().get(header::UPGRADE).cloned();
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    tunnel::splice(ctx, "upgrade", client_upgrade, async move {
        upstream_upgrade
            .await
            .map(hyper_util::rt::TokioIo::new)
            .map_err(std::io::Error::other)
    });
    info!(
        request_id,
        "connection upgraded: what follows is not inspected"
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
    let host = match uri.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    HeaderValue::from_str(&host)
        .map_err(|_| ProxyError::BadRequest("the request target's host is not valid"))
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

/// Forwards a body larger than the hold limit as it is scanned.
///
/// Nothing goes upstream if what was held already decides a block. After that, every
/// [`SNAPSHOT_INTERVAL`] bytes the policy is applied to the scan snapshot, and a block ends
/// the pump with an error: the upstream body's sender is dropped without [`Piece::End`], so
/// hyper fails the upstream request mid-body (the upstream sees a broken, incomplete request)
/// and the client gets the block page. The newest chunk is always held back: it goes
/// upstream only once the whole body has been scanned and allowed, so a block decided at
/// the very end aborts the upstream body as well.
async fn stream_through(
    ctx: &ConnCtx,
    parts: http::request::Parts,
    mut body: ClientBody,
    mut scan: Stream<'_>,
    (held, reservation): (Vec<Bytes>, Reservation),
    request_id: &str,
) -> Result<Response<Incoming>, ProxyError> {
    let shared = &*ctx.shared;
    // The held bytes were scanned already: a block there costs the upstream nothing.
    judge_snapshot(shared, &scan, request_id, false)?;
    let (tx, up_body) = UpstreamBody::streamed(STREAM_CHANNEL_CHUNKS);
    let send = intercept::send(&shared.client, Request::from_parts(parts, up_body));
    let pump = async move {
        let mut held = held.into_iter();
        // Given back to the hold budget once the held chunks have been passed on: from
        // then on only the channel's few chunks are in memory.
        let mut reservation = Some(reservation);
        let mut tail: Option<Bytes> = None;
        let mut unjudged = 0usize;
        loop {
            let next = match held.next() {
                Some(chunk) => chunk,
                None => match body.frame().await {
                    None => break,
                    Some(Err(e)) => return Err(ProxyError::ClientBody(e)),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) if !data.is_empty() => {
                            drop(reservation.take());
                            scan.feed(&data);
                            unjudged += data.len();
                            if unjudged >= SNAPSHOT_INTERVAL {
                                unjudged = 0;
                                // Dropping `tx` without `Piece::End` (the `?`) aborts the
                                // upstream body.
                                judge_snapshot(shared, &scan, request_id, true)?;
                            }
                            data
                        }
                        _ => continue,
                    },
                },
            };
            if let Some(ready) = tail.replace(next) {
                if tx.send(Piece::Data(ready)).await.is_err() {
                    // The upstream request already failed; its error is the answer.
                    return Ok(());
                }
            }
        }
        judge(shared, scan, request_id, true)?;
        if let Some(last) = tail {
            if tx.send(Piece::Data(last)).await.is_err() {
                return Ok(());
            }
        }
        let _ = tx.send(Piece::End).await;
        Ok(())
    };
    tokio::pin!(send, pump);
    let early = tokio::select! {
        pumped = &mut pump => {
            pumped?;
            None
        }
        // The upstream answered (or failed) before the body was done: that is the answer,
        // and the unsent rest of the body is abandoned.
        answered = &mut send => Some(answered),
    };
    let timeout = shared.config.limits.upstream_response_timeout;
    let _busy = ctx.activity.busy();
    match early {
        Some(answered) => answered,
        None => tokio::time::timeout(timeout, send)
            .await
            .map_err(|_| ProxyError::UpstreamTimeout(timeout))?,
    }
}

/// Finishes the scan and applies the policy: `Err(Blocked)` on block, a log line on log.
/// `partial`: part of the body has already gone upstream.
fn judge(
    shared: &Shared,
    scan: Stream<'_>,
    request_id: &str,
    partial: bool,
) -> Result<Verdict, ProxyError> {
    let findings = scan.finish();
    let verdict = policy::evaluate(&shared.config.rules, &findings);
    match verdict.action {
        Action::Allow => {}
        Action::Log => {
            let rules: Vec<&str> = verdict.reasons.iter().map(|r| r.rule.as_str()).collect();
            info!(request_id, action = "log", rules = ?rules, bytes = findings.bytes, "request logged");
        }
        Action::Block => {
            return Err(ProxyError::Blocked(Box::new(Blocked::from_verdict(
                &verdict, partial,
            ))));
        }
    }
    Ok(verdict)
}

/// Applies the policy to what the scan has decided so far (a lower bound that only grows):
/// `Err(Blocked)` once that is already a block. Log verdicts wait for [`judge`] at the end.
fn judge_snapshot(
    shared: &Shared,
    scan: &Stream<'_>,
    request_id: &str,
    partial: bool,
) -> Result<(), ProxyError> {
    let verdict = policy::evaluate(&shared.config.rules, &scan.findings());
    if verdict.action == Action::Block {
        info!(
            request_id,
            scanned = scan.bytes(),
            "oversize body blocked before its end"
        );
        return Err(ProxyError::Blocked(Box::new(Blocked::from_verdict(
            &verdict, partial,
        ))));
    }
    Ok(())
}

/// The upstream response as the client gets it: hop-by-hop headers removed, `Via` added.
fn to_client(response: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    prepare_headers(&mut parts.headers);
    Response::from_parts(
        parts,
        body.map_err(|e| -> super::BoxError { Box::new(e) }).boxed(),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

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
