//! The per-request pipeline as tower layers, assembled in one place ([`stack`]).
//!
//! Each layer is one cross-cutting concern that every request goes through, whatever it
//! is: an id, turning failures into pages (and the one log line per failed request),
//! tracking whether the body was read to its end, the client allow-list, who the user is
//! (`auth`), whether the destination is blocked (`destination`). What is specific
//! to a kind of request (CONNECT, forwarding, the timeouts around the upstream, holding
//! and scanning the body) stays in [`ProxyService`] and the modules it calls, where the
//! limits apply to one step rather than to the whole request: an allowed upload may
//! stream for an hour, but its upstream must answer within `upstream_response_timeout`.
//!
//! Not here: the connection cap and the header, idle and keep-alive limits, which belong
//! to connections rather than requests (the accept loop and hyper's connection builder).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use hyper::body::Incoming;
use tower::builder::ServiceBuilder;
use tower::{Layer, Service};

use super::auth::{AuthLayer, RequestUser};
use super::destination::DestinationLayer;
use super::linger::{ClientBody, Unread};
use super::{ConnCtx, OwnedTask, ProxyBody, ProxyError, forward, observe, page, tunnel};

/// A boxed, sendable future: one allocation per request, none per body chunk.
pub(super) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The id of a request, in its extensions: on its log lines and its error or block page.
#[derive(Debug, Clone)]
pub(super) struct RequestId(pub(super) Arc<str>);

/// The request pipeline for one client connection, outermost layer first.
pub(super) fn stack(
    ctx: Arc<ConnCtx>,
) -> impl Service<
    Request<Incoming>,
    Response = Response<ProxyBody>,
    Error = Infallible,
    Future = BoxFuture<Result<Response<ProxyBody>, Infallible>>,
> + Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        // Gives the request its id (in its extensions), turns every failure below into
        // its page (HTML or JSON by Accept) and logs the request's outcome once.
        .layer(ErrorPageLayer { ctx: ctx.clone() })
        // Tracks whether the body was read to its end, for the lingering close.
        .layer(UnreadBodyLayer {
            unread: ctx.unread.clone(),
        })
        // Refuses clients outside `access.clients` before anything else is looked at.
        .layer(ClientAccessLayer {
            allowed: ctx.allowed,
            peer: ctx.peer,
        })
        // Attributes the request to a user (Proxy-Authorization, client map) or answers
        // 407/429 (`policy.auth`); CONNECT included.
        .layer(AuthLayer { ctx: ctx.clone() })
        // Refuses a blocked destination before its body is read; tags the others.
        .layer(DestinationLayer { ctx: ctx.clone() })
        .service(ProxyService { ctx })
}

/// Layer: request id, failures into pages, one outcome log line.
#[derive(Clone)]
struct ErrorPageLayer {
    ctx: Arc<ConnCtx>,
}

impl<S> Layer<S> for ErrorPageLayer {
    type Service = ErrorPage<S>;

    fn layer(&self, inner: S) -> ErrorPage<S> {
        ErrorPage {
            inner,
            ctx: self.ctx.clone(),
        }
    }
}

/// See [`ErrorPageLayer`].
#[derive(Clone)]
struct ErrorPage<S> {
    inner: S,
    ctx: Arc<ConnCtx>,
}

impl<S, B> Service<Request<B>> for ErrorPage<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<ProxyBody>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Every inner service here is always ready; an error would be a bug, and it is
        // still answered with a page when `call` runs.
        let _ = std::task::ready!(self.inner.poll_ready(cx));
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let request_id: Arc<str> = self.ctx.shared.request_ids.next().into();
        req.extensions_mut().insert(RequestId(request_id.clone()));
        // The rules and config in force now judge the whole request, whatever a reload
        // does meanwhile (see `auth::live_of`).
        req.extensions_mut().insert(self.ctx.shared.live.get());
        let record = observe::Record::start();
        req.extensions_mut().insert(record.clone());
        let user = RequestUser::default();
        req.extensions_mut().insert(user.clone());
        let json = page::prefers_json(req.headers());
        let content_type = req.headers().get(http::header::CONTENT_TYPE);
        let grpc = page::grpc_family(content_type.map(|v| v.as_bytes()));
        let method = req.method().clone();
        let peer = self.ctx.peer;
        let ctx = self.ctx.clone();
        let response = self.inner.call(req);
        Box::pin(async move {
            let request_id = &*request_id;
            let shared = &ctx.shared;
            let response = response.await;
            let user = user.get();
            let user = user.as_deref().unwrap_or("-");
            let who = (request_id, peer, user);
            Ok(match response {
                Ok(response) => {
                    let status = Ok(response.status());
                    observe::finish(shared, &record, who, &method, status);
                    response
                }
                Err(err) => {
                    observe::finish(shared, &record, who, &method, Err(&err));
                    let contact = &ctx.shared.live.get().config.block_page.contact;
                    match grpc {
                        Some(family) if err.status() == http::StatusCode::FORBIDDEN => {
                            page::grpc_refusal(&err, request_id, family, contact)
                        }
                        _ => page::error_response(&err, request_id, json, contact),
                    }
                }
            })
        })
    }
}

/// Layer: wraps the request body in a [`ClientBody`] that keeps the connection's
/// [`Unread`] flag.
#[derive(Clone)]
struct UnreadBodyLayer {
    unread: Unread,
}

impl<S> Layer<S> for UnreadBodyLayer {
    type Service = UnreadBody<S>;

    fn layer(&self, inner: S) -> UnreadBody<S> {
        UnreadBody {
            inner,
            unread: self.unread.clone(),
        }
    }
}

/// See [`UnreadBodyLayer`].
#[derive(Clone)]
struct UnreadBody<S> {
    inner: S,
    unread: Unread,
}

impl<S> Service<Request<Incoming>> for UnreadBody<S>
where
    S: Service<Request<ClientBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> S::Future {
        let unread = self.unread.clone();
        self.inner
            .call(req.map(|body| ClientBody::new(body, unread)))
    }
}

/// Layer: refuses a client outside `access.clients` (403, connection closed), as the
/// request's config has it.
#[derive(Clone)]
struct ClientAccessLayer {
    allowed: bool,
    peer: SocketAddr,
}

impl<S> Layer<S> for ClientAccessLayer {
    type Service = ClientAccess<S>;

    fn layer(&self, inner: S) -> ClientAccess<S> {
        ClientAccess {
            inner,
            allowed: self.allowed,
            peer: self.peer,
        }
    }
}

/// See [`ClientAccessLayer`].
#[derive(Clone)]
struct ClientAccess<S> {
    inner: S,
    allowed: bool,
    peer: SocketAddr,
}

impl<S, B> Service<Request<B>> for ClientAccess<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = BoxFuture<Result<Response<ProxyBody>, ProxyError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Each request by the config in force when it started, so a client a reload took
        // off `access.clients` is refused on the connections it had open too (found in
        // review: its keep-alive connections and tunnels went on being served). The flag
        // of the connection's accept is for a request that carries no config.
        let ip = self.peer.ip();
        let allowed = match req.extensions().get::<Arc<crate::proxy::Live>>() {
            Some(live) => live.config.access.allows_client(ip),
            None => self.allowed,
        };
        if allowed {
            Box::pin(self.inner.call(req))
        } else {
            Box::pin(async move { Err(ProxyError::ClientNotAllowed(ip)) })
        }
    }
}

/// The proxy itself: a CONNECT becomes a tunnel, anything else is inspected and
/// forwarded.
#[derive(Clone)]
pub(super) struct ProxyService {
    ctx: Arc<ConnCtx>,
}

impl Service<Request<ClientBody>> for ProxyService {
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = BoxFuture<Result<Response<ProxyBody>, ProxyError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ClientBody>) -> Self::Future {
        let ctx = self.ctx.clone();
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map_or_else(|| Arc::from("-"), |id| id.0.clone());
        if req.method() == Method::CONNECT {
            return Box::pin(async move { tunnel::connect(&ctx, req).await });
        }
        if forward::body_worth_a_task(req.headers()) {
            // Scanning a large body is CPU work: in a task of its own it runs on another
            // core than this connection's socket I/O. Dropping the returned future (the
            // client went away) aborts the task, as it would cancel an inline future.
            let task = OwnedTask(tokio::spawn(async move {
                forward::forward(&ctx, req, &request_id).await
            }));
            return Box::pin(task.join());
        }
        Box::pin(async move { forward::forward(&ctx, req, &request_id).await })
    }
}
