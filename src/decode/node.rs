//! The decoder nodes and how a layer's content picks its node.
//!
//! Depth: the body as received is at depth 0. Each decoding layer adds one: a
//! Content-Encoding stack (however many codings it lists, at most
//! [`encoding::MAX_CODINGS`]), a form, a multipart body, a JSON document, a part's
//! transfer encoding, a base64 run, a zip archive, a gzip or zstd stream found inside.
//! Text is not a layer: it is scanned as it is, at the depth it was found.

use super::base64::Base64Node;
use super::encoding::{self, Codec, DecompressNode};
use super::form::FormNode;
use super::json::JsonNode;
use super::multipart::{MultipartNode, QuotedPrintableNode};
use super::sniff::Sniffer;
use super::unescape::UnescapeNode;
use super::utf16::Utf16Node;
use super::zip::{XmlNode, ZipNode};
use super::{Account, Out, Reason, header_params, media_type, names_several_types, unquoted};

/// One decoder in a request's tree of layers.
pub(crate) enum Node {
    /// Text or unknown bytes: scanned as they are, embedded content looked for.
    Sniff(Box<Sniffer>),
    /// `application/x-www-form-urlencoded` (and the request target).
    Form(Box<FormNode>),
    /// JSON: strings unescaped.
    Json(Box<JsonNode>),
    /// `multipart/*`.
    Multipart(Box<MultipartNode>),
    /// A decompressor (content-encoding, or gzip/zstd found inside).
    Decompress(Box<DecompressNode>),
    /// A zip archive.
    Zip(Box<ZipNode>),
    /// A zip entry holding XML: raw, and its text.
    Xml(Box<XmlNode>),
    /// A MIME part in base64.
    Base64(Box<Base64Node>),
    /// A MIME part in quoted-printable.
    QuotedPrintable(Box<QuotedPrintableNode>),
    /// Text in UTF-16 (it starts with a byte-order mark).
    Utf16(Box<Utf16Node>),
    /// Text a form or JSON layer decoded, its JSON escapes undone once more.
    Unescape(Box<UnescapeNode>),
}

impl Node {
    /// Scans the next chunk of this layer's input.
    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Out<'_, '_>) {
        if data.is_empty() {
            return;
        }
        match self {
            Node::Sniff(n) => n.feed(data, out),
            Node::Form(n) => n.feed(data, out),
            Node::Json(n) => n.feed(data, out),
            Node::Multipart(n) => n.feed(data, out),
            Node::Decompress(n) => n.feed(data, out),
            Node::Zip(n) => n.feed(data, out),
            Node::Xml(n) => n.feed(data, out),
            Node::Base64(n) => n.feed(data, out),
            Node::QuotedPrintable(n) => n.feed(data, out),
            Node::Utf16(n) => n.feed(data, out),
            Node::Unescape(n) => n.feed(data, out),
        }
    }

    /// Ends this layer's input.
    pub(crate) fn finish(&mut self, out: &mut Out<'_, '_>) {
        match self {
            Node::Sniff(n) => n.finish(out),
            Node::Form(n) => n.finish(out),
            Node::Json(n) => n.finish(out),
            Node::Multipart(n) => n.finish(out),
            Node::Decompress(n) => n.finish(out),
            Node::Zip(n) => n.finish(out),
            Node::Xml(n) => n.finish(out),
            Node::Base64(n) => n.finish(out),
            Node::QuotedPrintable(n) => n.finish(out),
            Node::Utf16(n) => n.finish(out),
            Node::Unescape(n) => n.finish(out),
        }
    }

    /// Text at `depth`: scanned as it is, base64 runs and archives inside looked for.
    pub(crate) fn text(depth: u32, acct: &mut Account) -> Node {
        Node::Sniff(Box::new(Sniffer::new(depth, true, acct)))
    }

    /// Text at `depth` without looking for archives at its start (form values, names).
    pub(crate) fn plain_text(depth: u32, acct: &mut Account) -> Node {
        Node::Sniff(Box::new(Sniffer::new(depth, false, acct)))
    }

    /// What a form or JSON layer decoded: text whose JSON escapes are undone (a JSON
    /// document in a form field, or in a JSON string: see [`super::unescape`]).
    /// `form`: after a form (or the target), whose `%uXXXX` escapes are undone too.
    pub(crate) fn decoded_text(form: bool, depth: u32, acct: &mut Account) -> Node {
        let next = Node::plain_text(depth, acct);
        Node::Unescape(Box::new(UnescapeNode::new(form, depth, next)))
    }

    /// The request target: the path percent-decoded, the query as a form.
    pub(crate) fn target(acct: &mut Account) -> Node {
        let next = Node::decoded_text(true, 0, acct);
        Node::Form(Box::new(FormNode::target(next, 0, acct)))
    }

    /// A body (or a part) with these `Content-Type` and `Content-Encoding` values.
    pub(crate) fn for_body(
        content_type: Option<&[u8]>,
        content_encoding: Option<&[u8]>,
        depth: u32,
        acct: &mut Account,
    ) -> Node {
        let codings = match content_encoding.map(encoding::parse).transpose() {
            Ok(c) => c.unwrap_or_default(),
            Err(why) => {
                acct.problem(Reason::Unsupported, why);
                return Node::text(depth, acct);
            }
        };
        if codings.is_empty() {
            return Node::for_content(content_type, depth, acct);
        }
        if !acct.may_open(depth + 1, "content-encoding") {
            return Node::text(depth, acct);
        }
        // `Content-Encoding: gzip, br` was gzipped first: undo br first. A part's own
        // (not the request's) takes its windows from the inspection's pool.
        let inner = depth > 0;
        let mut node = Node::for_content(content_type, depth + 1, acct);
        for codec in codings {
            node = Node::Decompress(Box::new(DecompressNode::new(
                codec, node, depth, inner, acct,
            )));
        }
        node
    }

    /// A decompressor for a stream guessed from its magic bytes: if it does not decode
    /// before its first output, its bytes are scanned as they are, with no problem recorded.
    pub(crate) fn guessed_decompress(
        codec: Codec,
        next: Node,
        depth: u32,
        acct: &mut Account,
    ) -> Node {
        Node::Decompress(Box::new(DecompressNode::guessed(codec, next, depth, acct)))
    }

    /// Content of this media type (already free of content-encodings) at `depth`.
    pub(crate) fn for_content(content_type: Option<&[u8]>, depth: u32, acct: &mut Account) -> Node {
        let Some(ct) = content_type else {
            return Node::text(depth, acct);
        };
        if let Some(little_endian) = utf16_charset(ct)
            && acct.may_open(depth + 1, "UTF-16 text")
        {
            // The bytes as they are too, read by the same type (a server may ignore the
            // charset).
            // Each view's text is plain text: a sniffer would keep bytes back (see
            // `super::views`).
            let raw = Node::for_media(ct, depth + 1, acct, Node::plain_text);
            let text = Node::for_media(ct, depth + 1, acct, Node::plain_text);
            let node = Utf16Node::new(little_endian, raw, text, acct);
            return Node::searched(Node::Utf16(Box::new(node)), depth, acct);
        }
        match Node::for_media(ct, depth, acct, Node::text) {
            // Read as its type says, and searched for a zip archive in its bytes.
            node @ (Node::Form(_) | Node::Json(_) | Node::Xml(_)) => {
                Node::searched(node, depth, acct)
            }
            node => node,
        }
    }

    /// `node` (content at `depth`) behind the search for an embedded zip archive: a
    /// server may read the body as it is, whatever its type says (see
    /// [`Sniffer::searching`]).
    fn searched(node: Node, depth: u32, acct: &mut Account) -> Node {
        Node::Sniff(Box::new(Sniffer::searching(depth, node, acct)))
    }

    /// Content of the media type `ct` names, its bytes in the charset it is read in; text
    /// (any other type, or a layer that cannot open) by `text`.
    fn for_media(
        ct: &[u8],
        depth: u32,
        acct: &mut Account,
        text: fn(u32, &mut Account) -> Node,
    ) -> Node {
        let media = media_type(ct);
        if names_several_types(ct) {
            // Decoded as the first type (as PHP reads it), but not fully inspected: another
            // server may read another.
            acct.problem(
                Reason::Unsupported,
                "a Content-Type naming more than one type".to_owned(),
            );
        }
        if media == "application/x-www-form-urlencoded" {
            if !acct.may_open(depth + 1, "form") {
                return text(depth, acct);
            }
            let next = Node::decoded_text(true, depth + 1, acct);
            return Node::Form(Box::new(FormNode::body(next, depth + 1, acct)));
        }
        if media.starts_with("multipart/") {
            let mut boundaries = header_params(ct, "boundary");
            boundaries.dedup();
            if boundaries.len() > 1 || ambiguous_boundary(ct) {
                // Servers differ on which one they split by (found in review: Werkzeug takes
                // the last, this proxy took the first, and a part under the other passed).
                let shown = super::shown_name(&media);
                acct.problem(Reason::Corrupt, format!("{shown} with two boundaries"));
                return text(depth, acct);
            }
            let Some(boundary) = boundaries.pop().filter(|b| valid_boundary(b)) else {
                let shown = super::shown_name(&media);
                acct.problem(Reason::Corrupt, format!("{shown} without a valid boundary"));
                return text(depth, acct);
            };
            if php_boundary(ct).as_deref() != Some(&boundary[..]) {
                let shown = super::shown_name(&media);
                acct.problem(
                    Reason::Corrupt,
                    format!("{shown} with a boundary PHP reads otherwise"),
                );
                return text(depth, acct);
            }
            if !acct.may_open(depth + 1, "multipart") {
                return text(depth, acct);
            }
            return Node::Multipart(Box::new(MultipartNode::new(&boundary, depth + 1, acct)));
        }
        if is_markup(&media) && acct.may_open(depth + 1, "XML") {
            // Raw, and as the text a parser or a browser makes of it (`&#64;` is `@`).
            let raw = Node::plain_text(depth, acct);
            let text = Node::plain_text(depth + 1, acct);
            return Node::Xml(Box::new(XmlNode::markup(raw, text, acct)));
        }
        if is_json(&media) {
            if !acct.may_open(depth + 1, "JSON") {
                return text(depth, acct);
            }
            let next = Node::decoded_text(false, depth + 1, acct);
            return Node::Json(Box::new(JsonNode::new(next)));
        }
        text(depth, acct)
    }
}

/// Whether the `charset` of a `Content-Type` is UTF-16: `Some(Some(true))` little endian,
/// `Some(Some(false))` big endian, `Some(None)` by its mark (or its first unit).
fn utf16_charset(ct: &[u8]) -> Option<Option<bool>> {
    let charsets = header_params(ct, "charset");
    // Spelled as decoders take it: case, dashes and underscores aside (`UTF-16-LE`,
    // `utf_16le`, `ucs2`: found in review).
    let name: Vec<u8> = charsets
        .first()?
        .iter()
        .filter(|b| b.is_ascii_alphanumeric())
        .map(u8::to_ascii_lowercase)
        .collect();
    match name.as_slice() {
        b"utf16" | b"ucs2" | b"unicode" | b"csunicode" | b"iso10646ucs2" => Some(None),
        b"utf16le" | b"ucs2le" => Some(Some(true)),
        b"utf16be" | b"ucs2be" | b"unicodefffe" => Some(Some(false)),
        _ => None,
    }
}

/// XML and HTML media types: `text/xml`, `application/xml`, `*/*+xml` (SOAP, Atom),
/// `text/html`.
fn is_markup(media: &str) -> bool {
    matches!(media, "text/xml" | "application/xml" | "text/html") || media.ends_with("+xml")
}

/// JSON media types: `application/json`, `text/json`, `*/*+json`, JSON lines.
fn is_json(media: &str) -> bool {
    matches!(
        media,
        "application/json"
            | "text/json"
            | "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/json-seq"
    ) || media.ends_with("+json")
}

/// Whether servers may read a boundary other than [`header_params`] gives: an extended
/// `boundary*=` or `boundary*0=` parameter (Werkzeug takes it as the boundary), an
/// unquoted value with a byte that is no token character (Werkzeug ends the value there),
/// a quoted one with an escape or `%22` (Werkzeug turns it into `"`).
fn ambiguous_boundary(ct: &[u8]) -> bool {
    let token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    let mut params = Vec::new();
    let mut rest = ct;
    while let Some(semi) = unquoted(rest, b';') {
        params.push(&rest[..semi]);
        rest = &rest[semi + 1..];
    }
    params.push(rest);
    params.iter().skip(1).any(|p| {
        let p = p.trim_ascii();
        let Some(eq) = p.iter().position(|&c| c == b'=') else {
            return false;
        };
        let key = p[..eq].trim_ascii().to_ascii_lowercase();
        let value = p[eq + 1..].trim_ascii();
        if key.starts_with(b"boundary*") {
            return true;
        }
        if key != b"boundary" {
            return false;
        }
        match value.strip_prefix(b"\"") {
            Some(inner) => {
                inner.contains(&b'\\') || inner.windows(3).any(|w| w.eq_ignore_ascii_case(b"%22"))
            }
            None => !value.iter().all(|&c| token(c)),
        }
    })
}

/// The boundary as PHP reads it (main/rfc1867.c): after the first `=` that follows the
/// first `boundary` anywhere in the value (case-sensitive first, then not), up to the
/// closing quote, or else to `,` or `;`.
fn php_boundary(ct: &[u8]) -> Option<Vec<u8>> {
    let at = memchr::memmem::find(ct, b"boundary")
        .or_else(|| memchr::memmem::find(&ct.to_ascii_lowercase(), b"boundary"))?;
    let eq = at + ct[at..].iter().position(|&c| c == b'=')? + 1;
    let rest = &ct[eq..];
    if let Some(quoted) = rest.strip_prefix(b"\"") {
        let end = quoted.iter().position(|&c| c == b'"')?;
        return Some(quoted[..end].to_vec());
    }
    let end = rest
        .iter()
        .position(|&c| c == b',' || c == b';')
        .unwrap_or(rest.len());
    Some(rest[..end].to_vec())
}

/// RFC 2046 §5.1.1: 1 to 70 characters.
fn valid_boundary(b: &[u8]) -> bool {
    !b.is_empty() && b.len() <= 70 && !b.iter().any(|&c| c == b'\r' || c == b'\n')
}

/// A part of `multipart` content: by its transfer encoding, then its own type.
pub(crate) fn for_part(
    content_type: Option<&[u8]>,
    content_encoding: Option<&[u8]>,
    transfer_encoding: Option<&[u8]>,
    depth: u32,
    acct: &mut Account,
) -> Node {
    let cte = transfer_encoding
        .map(|v| String::from_utf8_lossy(v).trim().to_ascii_lowercase())
        .unwrap_or_default();
    match cte.as_str() {
        "" | "7bit" | "8bit" | "binary" => {
            Node::for_body(content_type, content_encoding, depth, acct)
        }
        "base64" | "quoted-printable" => {
            if !acct.may_open(depth + 1, "transfer encoding") {
                return Node::text(depth, acct);
            }
            let next = Node::for_body(content_type, content_encoding, depth + 1, acct);
            if cte == "base64" {
                Node::Base64(Box::new(Base64Node::new(next)))
            } else {
                Node::QuotedPrintable(Box::new(QuotedPrintableNode::new(next)))
            }
        }
        other => {
            acct.problem(
                Reason::Unsupported,
                format!("multipart part in transfer encoding {other:?}"),
            );
            Node::text(depth, acct)
        }
    }
}

/// A zip entry named `name` at `depth`: XML is scanned raw and as its text.
pub(crate) fn for_entry(name: &[u8], depth: u32, acct: &mut Account) -> Node {
    let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
    if lower.ends_with(".xml") || lower.ends_with(".rels") || lower.ends_with(".xhtml") {
        let raw = Node::plain_text(depth, acct);
        let text = Node::plain_text(depth, acct);
        return Node::Xml(Box::new(XmlNode::new(raw, text, acct)));
    }
    if lower.ends_with(".json") && acct.may_open(depth + 1, "JSON") {
        let next = Node::decoded_text(false, depth + 1, acct);
        return Node::Json(Box::new(JsonNode::new(next)));
    }
    Node::text(depth, acct)
}
