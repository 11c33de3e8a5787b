//! The per-route guard: authenticates as the route declares, resolves the tenant, applies the
//! rate limits, and puts the [`Caller`] in the request for the handler.
//!
//! Key routes: a wrong key → the client's failure is counted (5/min → 15-minute ban) and the
//! request is limited per IP, then 401 (a missing key is limited the same way but not counted
//! as a guess); a valid key → the ban and the per-key (and per-tenant for writes) windows
//! first, then its scope (403), its tenant's state (403 when closed) and the tenant it names
//! (404 for another's, no existence leak). The body is read last, within its limits. If Redis is down, key routes fail closed (503: a ban cannot be checked)
//! and anonymous routes fail open; both are logged and counted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::errors::ApiError;
use super::route::{Auth, RouteSpec};
use crate::state::AppState;
use crate::auth::{self, AuthError, Principal};
use crate::newtypes::TenantId;
use crate::ratelimit::{Limit, PolicyName, Request as LimitRequest, Subject, Verdict, WindowState};

/// Who called a service-key route.
#[derive(Debug, Clone)]
pub struct ServiceCaller {
    /// The service-wide key.
    pub principal: Principal,
}

/// Names the tenant a service-wide key acts for (a tenant key may repeat its own tenant).
pub const TENANT_HEADER: &str = "ballast-tenant";

/// Who is calling, for handlers of key routes.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key.
    pub principal: Principal,
    /// The tenant the request acts for.
    pub tenant: TenantId,
}

fn peer_ip(req: &Request) -> IpAddr {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The guard of one route.
pub async fn guard(State((state, spec)): State<(AppState, RouteSpec)>, req: Request, next: Next) -> Response {
    let ip = super::client::client_ip(peer_ip(&req), req.headers(), &state.settings.http.trusted_proxies);
    let http = &state.settings.http;
    match spec.auth {
        Auth::None if spec.limited => {
            let window = state.limiter.policies.anonymous;
            let limits = vec![Limit { policy: PolicyName::Anonymous, subject: Subject::Ip(ip), window }];
            match state.limiter.decide(&LimitRequest { limits, ..LimitRequest::default() }).await {
                Ok(Verdict::Admit(windows)) => with_headers(next.run(req).await, &windows),
                Ok(v) => {
                    state.limiter.count_route_block(spec.path).await;
                    refused(v)
                }
                Err(e) => {
                    state.limiter.stats.failed_open.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(message = "Rate limiter unavailable; admitting (fail open).", route = spec.path, error = %e);
                    next.run(req).await
                }
            }
        }
        Auth::None => next.run(req).await,
        Auth::StripeSignature => match super::limits::buffered(req, state.settings.webhook_max_bytes, http.body_timeout).await {
            Ok(req) => next.run(req).await,
            Err(e) => e.into_response(),
        },
        Auth::ServiceKey(scope) | Auth::Key(scope) => keyed(&state, &spec, scope, ip, req, next).await,
        Auth::Operator(role) => operated(&state, &spec, role, ip, req, next).await,
    }
}

/// The operator who called an admin route, for its handler (audited by this name).
#[derive(Debug, Clone)]
pub struct OperatorCaller {
    /// The operator's name.
    pub name: String,
    /// Their role (a route that acts only for some requests checks it again).
    pub role: crate::auth::operators::Role,
}

/// An admin route, in the order a key route takes: the token is checked (a wrong one counts
/// towards the client's ban), then the ban and the operator's window, then the role.
async fn operated(state: &AppState, spec: &RouteSpec, needed: crate::auth::operators::Role, ip: IpAddr, req: Request, next: Next) -> Response {
    let presented = auth::bearer(req.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())).map(str::to_owned);
    let Some(presented) = presented else { return refused_credential(state, ip, &AuthError::Missing).await };
    // An API key is a credential of the other kind, not a guess: refused without counting
    // towards a ban (a random or stale operator token does count).
    if presented.starts_with("bk_") || presented.starts_with("bs_") {
        return refused_credential(state, ip, &AuthError::WrongKind).await;
    }
    let operator = match crate::auth::operators::authenticate(&state.system_pool, &presented).await {
        Ok(Some(op)) => op,
        Ok(None) => return refused_credential(state, ip, &AuthError::Unknown).await,
        Err(e) => {
            tracing::error!(message = "Operator token check failed: PostgreSQL unavailable.", error = %e);
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable", "credentials cannot be checked now; retry later").into_response();
        }
    };
    let limits = vec![Limit { policy: PolicyName::Key, subject: Subject::Key(operator.id), window: state.limiter.policies.key }];
    let windows = match admitted(state, spec, ip, limits).await {
        Ok(w) => w,
        Err(refusal) => return refusal,
    };
    if !operator.role.0.allows(needed) {
        let message = format!("operator {} is a {}; this route needs the {} role", operator.name, operator.role.0.as_str(), needed.as_str());
        return with_headers(ApiError::new(StatusCode::FORBIDDEN, "insufficient_role", message).into_response(), &windows);
    }
    let mut req = req;
    req.extensions_mut().insert(OperatorCaller { name: operator.name, role: operator.role.0 });
    match super::limits::buffered(req, state.settings.http.api_max_body_bytes, state.settings.http.body_timeout).await {
        Ok(req) => with_headers(next.run(req).await, &windows),
        Err(e) => with_headers(e.into_response(), &windows),
    }
}

/// A key route, in the order that leaks nothing to a banned client: the key is checked, then
/// the ban and the windows, and only then what tells a valid key apart (its scope, its
/// tenant's state, the tenant it names).
async fn keyed(state: &AppState, spec: &RouteSpec, scope: crate::auth::Scope, ip: IpAddr, req: Request, next: Next) -> Response {
    for header in [axum::http::header::AUTHORIZATION.as_str(), TENANT_HEADER] {
        if req.headers().get_all(header).iter().nth(1).is_some() {
            return ApiError::new(StatusCode::BAD_REQUEST, "duplicate_header", format!("send one {header} header, not several")).into_response();
        }
    }
    let principal = match authenticated(state, req.headers(), ip).await {
        Ok(p) => p,
        Err(refusal) => return refusal,
    };
    // The tenant the request would act for, as far as it can be known without the database:
    // the write window is charged to it with the key's in the one decision.
    let named = named_tenant(req.headers());
    let candidate = principal.tenant.or(named.as_ref().ok().and_then(|t| *t));
    let mut limits = vec![Limit { policy: PolicyName::Key, subject: Subject::Key(principal.key_id), window: state.limiter.policies.key }];
    if let (true, Some(tenant)) = (spec.write, candidate) {
        limits.push(Limit { policy: PolicyName::TenantWrites, subject: Subject::Tenant(tenant), window: state.limiter.policies.tenant_writes_for(tenant) });
    }
    let windows = match admitted(state, spec, ip, limits).await {
        Ok(w) => w,
        Err(refusal) => return refusal,
    };
    if !principal.scopes.iter().any(|held| held.grants(scope)) {
        return ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", format!("this route needs an API key with scope {scope}")).into_response();
    }
    if principal.tenant_closed {
        return ApiError::new(StatusCode::FORBIDDEN, "tenant_closed", "the key's tenant is closed").into_response();
    }
    if let Some(session) = &principal.support {
        // Read-only whatever the scopes say, and every use on the record before it is served.
        if spec.write {
            return ApiError::new(StatusCode::FORBIDDEN, "read_only_session", "a support session reads; it never writes").into_response();
        }
        if let Err(e) = crate::auth::support::record_use(&state.system_pool, session, spec.method.as_str(), spec.path).await {
            tracing::error!(message = "Support session use not audited; refused.", error = %e);
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable", "the session's use cannot be recorded now; retry later").into_response();
        }
    }
    let mut req = req;
    let mut served = None;
    if let Auth::ServiceKey(_) = spec.auth {
        if principal.tenant.is_some() {
            return ApiError::new(StatusCode::FORBIDDEN, "service_key_required", "this route takes a service-wide API key, not a tenant's").into_response();
        }
        req.extensions_mut().insert(ServiceCaller { principal });
    } else {
        let tenant = match resolve_tenant(state, &principal, named).await {
            Ok(t) => t,
            Err(e) => return e.into_response(),
        };
        req.extensions_mut().insert(Caller { principal, tenant });
        served = Some(super::observe::ServedTenant(tenant));
        state.tenant_activity.seen(tenant);
    }
    let mut response = match super::limits::buffered(req, state.settings.http.api_max_body_bytes, state.settings.http.body_timeout).await {
        Ok(req) => with_headers(next.run(req).await, &windows),
        Err(e) => with_headers(e.into_response(), &windows),
    };
    if let Some(t) = served {
        response.extensions_mut().insert(t);
    }
    response
}

/// A credentialed request's ban and windows decided: the windows to report, or the refusal.
async fn admitted(state: &AppState, spec: &RouteSpec, ip: IpAddr, limits: Vec<Limit>) -> Result<Vec<WindowState>, Response> {
    match state.limiter.decide(&LimitRequest { ban_of: Some(ip), failed_credential: false, limits }).await {
        Ok(Verdict::Admit(windows)) => Ok(windows),
        Ok(v) => {
            state.limiter.count_route_block(spec.path).await;
            Err(refused(v))
        }
        Err(e) => Err(fail_closed(state, spec.path, &e)),
    }
}

/// The request's key, checked; otherwise the answer to give (401, 503, or the limiter's
/// refusal of a failing client). A request without a key is limited per address like any
/// anonymous one but is not a failed guess: only a wrong key counts towards a ban.
async fn authenticated(state: &AppState, headers: &HeaderMap, ip: IpAddr) -> Result<Principal, Response> {
    let presented = auth::bearer(headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())).map(str::to_owned);
    match auth::authenticate(&state.system_pool, presented.as_deref()).await {
        Ok(p) => Ok(p),
        Err(AuthError::Unavailable(e)) => {
            tracing::error!(message = "API key check failed: PostgreSQL unavailable.", error = %e);
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable", "credentials cannot be checked now; retry later").into_response())
        }
        Err(e) => Err(refused_credential(state, ip, &e).await),
    }
}

/// A refused credential: limit the client per IP and, for a wrong key (not a missing one),
/// count the failure, maybe starting a ban.
async fn refused_credential(state: &AppState, ip: IpAddr, why: &AuthError) -> Response {
    let window = state.limiter.policies.anonymous;
    let limits = vec![Limit { policy: PolicyName::Anonymous, subject: Subject::Ip(ip), window }];
    let guessed = !matches!(why, AuthError::Missing | AuthError::WrongKind);
    match state.limiter.decide(&LimitRequest { ban_of: Some(ip), failed_credential: guessed, limits }).await {
        Ok(Verdict::Admit(_)) => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why.to_string()).into_response(),
        Ok(v) => refused(v),
        Err(e) => fail_closed(state, "credential check", &e),
    }
}

fn fail_closed(state: &AppState, what: &str, e: &redis::RedisError) -> Response {
    state.limiter.stats.failed_closed.fetch_add(1, Ordering::Relaxed);
    tracing::error!(message = "Rate limiter unavailable; refusing credentialed request (fail closed).", route = what, error = %e);
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "rate_limiter_unavailable", "limits and bans cannot be checked now; retry later")
        .into_response()
}

/// The tenant the `Ballast-Tenant` header names: none, a tenant id, or an error to answer
/// (after the ban check).
fn named_tenant(headers: &HeaderMap) -> Result<Option<TenantId>, ApiError> {
    match headers.get(TENANT_HEADER) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<uuid::Uuid>().ok())
            .map(|u| Some(TenantId(u)))
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "invalid_tenant", "Ballast-Tenant must be a tenant id (UUID)")),
    }
}

/// The tenant a request acts for: the key's own, or (service-wide keys) the one the
/// `Ballast-Tenant` header names. Another tenant's id from a tenant key → 404, as for an id
/// that does not exist, so keys cannot probe which tenants exist.
async fn resolve_tenant(state: &AppState, principal: &Principal, named: Result<Option<TenantId>, ApiError>) -> Result<TenantId, ApiError> {
    let named = named?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "tenant_not_found", "no such tenant");
    match (principal.tenant, named) {
        (Some(own), None) => Ok(own),
        (Some(own), Some(t)) if t == own => Ok(own),
        (Some(_), Some(_)) => Err(not_found()),
        (None, None) => Err(ApiError::new(StatusCode::BAD_REQUEST, "tenant_required", "a service-wide key must name the tenant in Ballast-Tenant")),
        (None, Some(t)) => {
            // System pool: a service-wide key may act for any tenant; only its state is read.
            let status: Option<String> = sqlx::query_scalar("SELECT status FROM tenants WHERE id = $1")
                .bind(t.0)
                .fetch_optional(&state.system_pool.0)
                .await
                .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "retry later"))?;
            match status.as_deref() {
                None => Err(not_found()),
                Some("closed") => Err(ApiError::new(StatusCode::FORBIDDEN, "tenant_closed", "the tenant is closed")),
                Some(_) => Ok(t),
            }
        }
    }
}

/// `RateLimit-Policy` and `RateLimit` (IETF draft-ietf-httpapi-ratelimit-headers) for the
/// window with the least room.
fn rate_headers(headers: &mut HeaderMap, windows: &[WindowState], reset_secs: u64) {
    let Some(w) = windows.iter().min_by_key(|w| w.remaining) else { return };
    let policy = format!("\"{}\";q={};w={}", w.policy.as_str(), w.limit, w.window_secs);
    let state = format!("\"{}\";r={};t={}", w.policy.as_str(), w.remaining, reset_secs);
    if let (Ok(p), Ok(s)) = (HeaderValue::from_str(&policy), HeaderValue::from_str(&state)) {
        headers.insert("ratelimit-policy", p);
        headers.insert("ratelimit", s);
    }
}

fn with_headers(mut response: Response, windows: &[WindowState]) -> Response {
    let reset = windows.iter().min_by_key(|w| w.remaining).map(|w| w.window_secs).unwrap_or(0);
    rate_headers(response.headers_mut(), windows, reset);
    response
}

/// The 429 of a refused verdict, with the window and Retry-After (also for per-kind limits at intake).
pub(super) fn refused(verdict: Verdict) -> Response {
    let (policy, limit, window_secs, retry_after, windows) = match verdict {
        Verdict::Banned { retry_after } => (PolicyName::AuthFailures, 0, 0, retry_after, Vec::new()),
        Verdict::Block { window, retry_after, windows } => (window.policy, window.limit, window.window_secs, retry_after, windows),
        Verdict::Admit(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let retry_secs = retry_after.as_millis().div_ceil(1000).max(1) as u64;
    let message = match policy {
        PolicyName::AuthFailures => format!("too many failed credential checks from this address; banned for {retry_secs} s"),
        p => format!("rate limit {} exceeded ({limit} per {window_secs} s); retry in {retry_secs} s", p.as_str()),
    };
    let body = serde_json::json!({"error": {
        "code": "rate_limited", "message": message, "policy": policy.as_str(),
        "limit": limit, "window_secs": window_secs, "retry_after_secs": retry_secs,
    }});
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(retry_secs));
    if windows.is_empty() {
        let ban = format!("\"auth_failures\";r=0;t={retry_secs}");
        if let Ok(v) = HeaderValue::from_str(&ban) {
            response.headers_mut().insert("ratelimit", v);
        }
    } else {
        rate_headers(response.headers_mut(), &windows, retry_secs);
    }
    response
}
