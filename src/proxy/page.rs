//! The pages the proxy answers with itself: the block page and the error pages, as HTML for
//! browsers or JSON for API clients (chosen by `Accept`); a gRPC call's refusal as gRPC
//! status fields (`grpc-status: 7`, `grpc-message`) instead, which its client shows.
//!
//! A page names the kind of data and how many distinct values were found, the request id
//! and the configured contact line. It never contains a matched value, the request target
//! or any other byte the client sent.

use bytes::Bytes;
use http::header::{
    ACCEPT, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue, PROXY_AUTHENTICATE, RETRY_AFTER,
};
use http::{HeaderMap, Response};
use http_body_util::{BodyExt, Full};

use super::ProxyBody;
use super::error::ProxyError;

/// Builds the response for a failed or blocked request.
pub fn error_response(
    err: &ProxyError,
    request_id: &str,
    json: bool,
    contact: &str,
) -> Response<ProxyBody> {
    let status = err.status();
    let blocked = match err {
        ProxyError::Blocked(b) => Some(b.as_ref()),
        _ => None,
    };
    // The contact line belongs on pages a person acts on: blocks and refusals.
    let contact = (status == http::StatusCode::FORBIDDEN).then_some(contact);
    let (content_type, body) = if json {
        let mut doc = serde_json::json!({
            "status": status.as_u16(),
            "error": err.kind(),
            "title": err.title(),
            "message": err.message(),
            "request_id": request_id,
        });
        if let Some(b) = blocked {
            // Counts of an upload stopped part-way are lower bounds.
            doc["partial"] = b.partial.into();
            doc["findings"] = b
                .categories
                .iter()
                .map(|(c, d)| serde_json::json!({"category": c, "distinct": d}))
                .collect();
        }
        if let Some(user) = err.user() {
            doc["user"] = user.into();
        }
        if let ProxyError::NotInspected(n) = err {
            doc["reason"] = n.reason.as_str().into();
            doc["partial"] = n.partial.into();
        }
        if let Some(c) = contact {
            doc["contact"] = c.into();
        }
        ("application/json", format!("{doc}\n"))
    } else {
        let mut html = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
             <body>\n<h1>{title}</h1>\n<p>{message}</p>\n",
            title = escape(err.title()),
            message = escape(&err.message()),
        );
        if let Some(b) = blocked {
            html.push_str("<ul>\n");
            let at_least = if b.partial { "at least " } else { "" };
            for (category, distinct) in &b.categories {
                html.push_str(&format!(
                    "<li>{}: {at_least}{distinct} distinct values</li>\n",
                    escape(category)
                ));
            }
            html.push_str("</ul>\n");
        }
        if let Some(user) = err.user() {
            html.push_str(&format!(
                "<p>Signed in as: <strong>{}</strong></p>\n",
                escape(user)
            ));
        }
        html.push_str(&format!(
            "<p>Request id: <code>{}</code></p>\n",
            escape(request_id)
        ));
        if let Some(c) = contact {
            html.push_str(&format!("<p>{}</p>\n", escape(c)));
        }
        html.push_str("</body></html>\n");
        ("text/html; charset=utf-8", html)
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if err.closes_connection() {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    match err {
        ProxyError::AuthRequired { realm, .. } => {
            // The realm was checked at config load: printable ASCII, no quotes.
            if let Ok(v) =
                HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
            {
                h.insert(PROXY_AUTHENTICATE, v);
            }
        }
        ProxyError::AuthRateLimited(wait) => {
            h.insert(RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
        }
        _ => {}
    }
    resp
}

/// The gRPC content type a request's `Content-Type` belongs to (`application/grpc`,
/// `application/grpc-web` or `application/grpc-web-text`, with or without `+proto`, `+json`…),
/// for a refusal answered the gRPC way ([`grpc_refusal`]); the message pump's test too
/// (`grpc::is_grpc`).
pub fn grpc_family(content_type: Option<&[u8]>) -> Option<&'static str> {
    let essence = content_type?.split(|&b| b == b';').next()?.trim_ascii();
    let essence = essence.to_ascii_lowercase();
    let rest = essence.strip_prefix(b"application/grpc")?;
    let (family, rest) = if let Some(rest) = rest.strip_prefix(b"-web-text") {
        ("application/grpc-web-text", rest)
    } else if let Some(rest) = rest.strip_prefix(b"-web") {
        ("application/grpc-web", rest)
    } else {
        ("application/grpc", rest)
    };
    (rest.is_empty() || rest[0] == b'+').then_some(family)
}

/// What a gRPC client is told of a refusal (`grpc-message`): the page's title, message,
/// kinds and counts, request id and contact line, on one line; never a value.
pub fn grpc_message(err: &ProxyError, request_id: &str, contact: &str) -> String {
    let mut text = format!("{}. {}", err.title(), err.message());
    if let ProxyError::Blocked(b) = err {
        let at_least = if b.partial { "at least " } else { "" };
        let kinds: Vec<String> = b
            .categories
            .iter()
            .map(|(category, distinct)| format!("{category}: {at_least}{distinct} distinct values"))
            .collect();
        if !kinds.is_empty() {
            text.push_str(&format!(" Found: {}.", kinds.join(", ")));
        }
    }
    text.push_str(&format!(" Request id: {request_id}."));
    if !contact.is_empty() {
        text.push(' ');
        text.push_str(contact);
    }
    text
}

/// `text` as a `grpc-message` value: UTF-8, with `%` and every byte outside printable ASCII
/// percent-encoded (gRPC over HTTP/2, "Responses").
pub fn grpc_message_value(text: &str) -> HeaderValue {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if (0x20..=0x7E).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("blocked"))
}

/// A refusal (403: a block, a blocked destination, content that could not be inspected) of
/// a gRPC call, as gRPC clients read one: still 403, with no body, and the call's status in
/// the header fields ("Trailers-Only"): `grpc-status: 7` (PERMISSION_DENIED) and a
/// [`grpc_message`], so the application shows why, where an HTML or JSON page would be
/// read as a broken response.
pub fn grpc_refusal(
    err: &ProxyError,
    request_id: &str,
    content_type: &'static str,
    contact: &str,
) -> Response<ProxyBody> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = err.status();
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.extend(grpc_denied_fields(&grpc_message(err, request_id, contact)));
    if err.closes_connection() {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A blocked call's status fields: `grpc-status: 7` (PERMISSION_DENIED) and `text` as its
/// `grpc-message` (header fields of a 403, or the trailers of an answer cut between two
/// messages).
pub fn grpc_denied_fields(text: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("grpc-status", HeaderValue::from_static("7"));
    h.insert("grpc-message", grpc_message_value(text));
    h
}

/// A body from bytes in memory.
pub fn full(data: impl Into<Bytes>) -> ProxyBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Whether the client prefers `application/json` over `text/html` (by `Accept` q-values;
/// on a tie or no `Accept`, HTML).
pub fn prefers_json(headers: &HeaderMap) -> bool {
    let mut json = 0.0f32;
    let mut html = 0.0f32;
    for value in headers.get_all(ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            // Specific types count as they are; wildcards only lift what is not named.
            let (j, h) = match media.as_str() {
                "application/json" => (Some(q), None),
                "text/html" => (None, Some(q)),
                "application/*" => (Some(q * 0.99), None),
                "text/*" | "*/*" => (None, Some(q * 0.99)),
                _ => (None, None),
            };
            if let Some(j) = j {
                json = json.max(j);
            }
            if let Some(h) = h {
                html = html.max(h);
            }
        }
    }
    json > html
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_families_and_messages() {
        for (t, want) in [
            ("application/grpc", Some("application/grpc")),
            (
                "Application/GRPC+proto; charset=x",
                Some("application/grpc"),
            ),
            ("application/grpc-web", Some("application/grpc-web")),
            ("application/grpc-web+json", Some("application/grpc-web")),
            (
                "application/grpc-web-text+proto",
                Some("application/grpc-web-text"),
            ),
            ("application/grpcx", None),
            ("application/grpc-webx", None),
            ("application/json", None),
        ] {
            assert_eq!(grpc_family(Some(t.as_bytes())), want, "{t}");
        }
        assert_eq!(grpc_family(None), None);
        // `%` and bytes outside printable ASCII are percent-encoded, UTF-8 byte by byte.
        assert_eq!(
            grpc_message_value("50% of ü\n ok").to_str().unwrap(),
            "50%25 of %C3%BC%0A ok"
        );
    }

    #[test]
    fn accept_negotiation() {
        let cases: &[(&str, bool)] = &[
            ("", false),
            ("application/json", true),
            ("text/html", false),
            (
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
                false,
            ),
            ("application/json, text/plain, */*", true),
            ("*/*", false),
            ("application/json;q=0.5, text/html", false),
            ("text/html;q=0.1, application/json;q=0.9", true),
            ("application/*", true),
        ];
        for (accept, want) in cases {
            let mut h = HeaderMap::new();
            if !accept.is_empty() {
                h.insert(ACCEPT, accept.parse().unwrap());
            }
            assert_eq!(prefers_json(&h), *want, "{accept}");
        }
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape("<a href='x'>&</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
    }
}
