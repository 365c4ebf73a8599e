//! Proxy authentication as a tower layer: every request — plain, CONNECT, and the requests
//! inside an intercepted tunnel, which go through the same stack — is attributed to a user
//! or answered before anything else happens to it.
//!
//! With `policy.auth` configured:
//!
//! 1. a client address with too many recent failures is answered **429** with
//!    `Retry-After` (no verification is attempted, whatever it sends);
//! 2. a `Proxy-Authorization` header is parsed (malformed: **407**, counted as a failure of
//!    the address); a user name with too many recent failures is answered **429**;
//!    credentials verified within `cache_ttl` are taken from the cache; otherwise argon2
//!    runs on the blocking pool (at most `max_verifications` at once); wrong: **407**, a
//!    failure of both the address and the user name;
//! 3. without the header, the client map names the user; failing that, **407** with
//!    `Proxy-Authenticate: Basic realm="..."` (or anonymous when `required: false`).
//!
//! A request that carries an [`InheritedUser`] (one inside an intercepted tunnel) takes
//! its user from it instead: the tunnel's CONNECT was authenticated. The request's config
//! must still know that user (a reload may have removed it), else 407.
//!
//! The user goes into the request's `RequestUser` cell, which the outermost layer puts
//! there, so the outcome log line, the policy input and the block page all see it. Without
//! `policy.auth` the layer passes requests through untouched.
//!
//! The failure tables, the cache and the counters ([`AuthState`]) are runtime state, kept
//! apart from the config: a config reload swaps `config.policy.auth` and keeps them (a
//! changed password misses the cache by construction: its key covers the stored hash).

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::PROXY_AUTHORIZATION;
use http::{Request, Response};
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use super::layers::BoxFuture;
use super::reload::Live;
use super::{ConnCtx, ProxyBody, ProxyError};
use crate::config::Config;
use crate::policy::identity::{
    AuthCounters, AuthHeaderError, FailureKey, FailureLimiter, VerifyCache, parse_basic,
};

/// The user a request is attributed to, set once by the auth layer (empty: anonymous).
/// The outermost layer puts a fresh cell in every request's extensions and reads it back
/// for the outcome log line.
#[derive(Debug, Clone, Default)]
pub(super) struct RequestUser(pub(super) Arc<OnceLock<Arc<str>>>);

impl RequestUser {
    /// The user, if one was set.
    pub(super) fn get(&self) -> Option<Arc<str>> {
        self.0.get().cloned()
    }
}

/// The rules and config a request is judged by: the snapshot taken once when it started
/// (the outermost layer puts it in the request), so a request finishes under the
/// credentials, destinations, overrides and rules it started with, whatever a reload does
/// meanwhile (found in review: each layer read the config in force at its own moment).
/// The one place the layers, the policy input and forwarding read it.
pub(super) fn live_of(ctx: &ConnCtx, extensions: &http::Extensions) -> Arc<Live> {
    extensions
        .get::<Arc<Live>>()
        .cloned()
        .unwrap_or_else(|| ctx.shared.live.get())
}

/// The config of [`live_of`].
pub(super) fn policy_config<B>(ctx: &ConnCtx, req: &Request<B>) -> Arc<Config> {
    live_of(ctx, req.extensions()).config.clone()
}

/// The user a request inherits from the connection it arrived on, instead of
/// authenticating itself: requests inside an intercepted CONNECT tunnel carry the user the
/// CONNECT authenticated as (browsers send `Proxy-Authorization` on the CONNECT only).
/// Whoever builds those requests inserts this extension; the auth layer then takes the
/// user from it, once the request's own config snapshot still knows the user
/// ([`still_known`]; `None`: the CONNECT was anonymous, allowed by `required: false`).
#[derive(Debug, Clone)]
pub struct InheritedUser(pub Option<Arc<str>>);

/// Why a request gets the 407 challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials and no client-map entry.
    Missing,
    /// The header could not be parsed.
    Malformed(AuthHeaderError),
    /// Unknown user or wrong password.
    Invalid,
}

/// Authentication state that outlives config reloads: failure tables, verification cache,
/// counters, and the bound on concurrent argon2 verifications.
#[derive(Debug)]
pub struct AuthState {
    /// Outcome counters (for the metrics module).
    pub counters: Arc<AuthCounters>,
    limiter: FailureLimiter,
    cache: VerifyCache,
    verifications: Arc<Semaphore>,
}

impl AuthState {
    /// Fresh state; `max_verifications` bounds argon2 runs at once.
    pub fn new(counters: Arc<AuthCounters>, max_verifications: usize) -> AuthState {
        AuthState {
            counters,
            limiter: FailureLimiter::default(),
            cache: VerifyCache::default(),
            verifications: Arc::new(Semaphore::new(max_verifications.max(1))),
        }
    }

    /// Entries in the (client, user) failure tables.
    pub fn failure_table_entries(&self) -> (usize, usize) {
        self.limiter.len()
    }
}

/// Layer: attributes each request to a user or answers 407/429.
#[derive(Clone)]
pub(super) struct AuthLayer {
    pub(super) ctx: Arc<ConnCtx>,
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            ctx: self.ctx.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone)]
pub(super) struct Authenticate<S> {
    inner: S,
    ctx: Arc<ConnCtx>,
}

impl<S, B> Service<Request<B>> for Authenticate<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = BoxFuture<Result<Response<ProxyBody>, ProxyError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let config = policy_config(&self.ctx, &req);
        if config.policy.auth.is_none() {
            return Box::pin(self.inner.call(req));
        }
        // The ready service goes into the future; a fresh clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let ctx = self.ctx.clone();
        Box::pin(async move {
            let user = match req.extensions().get::<InheritedUser>() {
                Some(inherited) => still_known(&ctx, &config, inherited)?,
                None => {
                    let header = req.headers().get(PROXY_AUTHORIZATION).cloned();
                    identify(&ctx, &config, header.as_ref().map(|h| h.as_bytes())).await?
                }
            };
            if let (Some(user), Some(cell)) = (user, req.extensions().get::<RequestUser>()) {
                let _ = cell.0.set(user);
            }
            inner.call(req).await
        })
    }
}

/// `policy.auth` of a config the auth layer found it set in.
fn auth_of(config: &Config) -> &crate::policy::identity::Auth {
    config
        .policy
        .auth
        .as_ref()
        .expect("called with auth configured")
}

/// The user a request inside an intercepted tunnel inherits, if its own config snapshot
/// still knows that user (in the credentials file, or mapped to this client's address);
/// an anonymous tunnel's requests, if that config still lets anonymous requests through.
/// Else the 407 challenge: a user a reload removed kept using the tunnels it had open
/// (found in session 21's review). A changed password is not noticed here: the CONNECT's
/// password is not kept.
fn still_known(
    ctx: &ConnCtx,
    config: &Config,
    inherited: &InheritedUser,
) -> Result<Option<Arc<str>>, ProxyError> {
    let auth = auth_of(config);
    let known = match inherited.0.as_deref() {
        Some(user) => {
            auth.credentials.hash_of(user).is_some()
                || auth.clients.user_of(ctx.peer.ip().to_canonical()) == Some(user)
        }
        None => !auth.required,
    };
    if known {
        return Ok(inherited.0.clone());
    }
    AuthCounters::inc(&ctx.shared.auth.counters.failure);
    Err(ProxyError::AuthRequired {
        realm: auth.realm.clone(),
        why: if inherited.0.is_some() {
            AuthFailure::Invalid
        } else {
            AuthFailure::Missing
        },
    })
}

/// The request's user (`None`: anonymous, allowed by `required: false`), or the refusal.
async fn identify(
    ctx: &ConnCtx,
    config: &Arc<Config>,
    header: Option<&[u8]>,
) -> Result<Option<Arc<str>>, ProxyError> {
    let auth = auth_of(config);
    let state = &ctx.shared.auth;
    let counters = &*state.counters;
    let ip = ctx.peer.ip().to_canonical();
    let challenge = |why| ProxyError::AuthRequired {
        realm: auth.realm.clone(),
        why,
    };
    let Some(header) = header else {
        if let Some(user) = auth.clients.user_of(ip) {
            AuthCounters::inc(&counters.client_map);
            return Ok(Some(user.into()));
        }
        if !auth.required {
            return Ok(None);
        }
        AuthCounters::inc(&counters.missing);
        return Err(challenge(AuthFailure::Missing));
    };
    let limits = &auth.limits;
    let now = Instant::now();
    let client_key = FailureKey::Client(ip);
    if let Some(wait) = state.limiter.refused_for(&client_key, limits, now) {
        return Err(rate_limited(counters, wait));
    }
    let credentials = match parse_basic(header) {
        Ok(c) => c,
        Err(e) => {
            AuthCounters::inc(&counters.malformed);
            state
                .limiter
                .record_failure(client_key, limits, counters, now);
            return Err(challenge(AuthFailure::Malformed(e)));
        }
    };
    let user_key = FailureKey::User(credentials.user.clone());
    if let Some(wait) = state.limiter.refused_for(&user_key, limits, now) {
        return Err(rate_limited(counters, wait));
    }
    let cache_key = auth.credentials.hash_of(&credentials.user).map(|stored| {
        state
            .cache
            .key(&credentials.user, &credentials.password, stored)
    });
    if let Some(key) = &cache_key {
        if state.cache.hit(key, limits.cache_ttl, now) {
            AuthCounters::inc(&counters.cached);
            return Ok(Some(credentials.user.into()));
        }
    }
    // Checked again once a verification slot is free: guesses queued in parallel behind
    // the slots were all let through by the check above (found in review: 40 parallel
    // wrong passwords were all verified with a limit of 3).
    let recheck = || {
        let now = Instant::now();
        [&client_key, &user_key]
            .into_iter()
            .find_map(|key| state.limiter.refused_for(key, limits, now))
            .map_or(Ok(()), |wait| Err(rate_limited(counters, wait)))
    };
    let right = verify(
        ctx,
        config,
        &credentials.user,
        credentials.password,
        recheck,
    )
    .await?;
    let now = Instant::now();
    if right {
        AuthCounters::inc(&counters.success);
        if let Some(key) = cache_key {
            state.cache.insert(key, limits, counters, now);
        }
        state.limiter.forget(&user_key);
        Ok(Some(credentials.user.into()))
    } else {
        AuthCounters::inc(&counters.failure);
        state
            .limiter
            .record_failure(client_key, limits, counters, now);
        state
            .limiter
            .record_failure(user_key, limits, counters, now);
        Err(challenge(AuthFailure::Invalid))
    }
}

fn rate_limited(counters: &AuthCounters, wait: Duration) -> ProxyError {
    AuthCounters::inc(&counters.rate_limited);
    ProxyError::AuthRateLimited(wait)
}

/// Runs argon2 on the blocking pool, at most `max_verifications` at once; `still_allowed`
/// runs once a slot is free, and its error ends the request unverified.
async fn verify(
    ctx: &ConnCtx,
    config: &Arc<Config>,
    user: &str,
    password: String,
    still_allowed: impl FnOnce() -> Result<(), ProxyError>,
) -> Result<bool, ProxyError> {
    let _permit = {
        let _busy = ctx.activity.busy();
        ctx.shared
            .auth
            .verifications
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ProxyError::Internal("the verification semaphore closed".into()))?
    };
    still_allowed()?;
    let config = config.clone();
    let user = user.to_owned();
    let _busy = ctx.activity.busy();
    tokio::task::spawn_blocking(move || {
        config
            .policy
            .auth
            .as_ref()
            .is_some_and(|auth| auth.credentials.verify(&user, password.as_bytes()))
    })
    .await
    .map_err(|e| ProxyError::Internal(format!("password verification failed: {e}")))
}
