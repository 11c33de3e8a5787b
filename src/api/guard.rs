//! The per-route guard: authenticates as the route declares, resolves the tenant, applies the
//! rate limits, and puts the [`Caller`] in the request for the handler.
//!
//! Key routes: no valid key → the client's failure is counted (5/min → 15-minute ban) and the
//! request is limited per IP, then 401; a valid key without the route's scope → 403; a tenant
//! key naming another tenant → 404 (no existence leak); then per-key (and per-tenant for
//! writes) windows. If Redis is down, key routes fail closed (503: a ban cannot be checked)
//! and anonymous routes fail open; both are logged and counted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, Auth, RouteSpec};
use crate::app::AppState;
use crate::auth::{self, AuthError, Principal};
use crate::domain::TenantId;
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

fn client_ip(req: &Request) -> IpAddr {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The guard of one route.
pub async fn guard(State((state, spec)): State<(AppState, RouteSpec)>, mut req: Request, next: Next) -> Response {
    let ip = client_ip(&req);
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
        Auth::None | Auth::StripeSignature => next.run(req).await,
        Auth::ServiceKey(scope) => {
            let principal = match authenticated(&state, req.headers(), ip, scope).await {
                Ok(p) => p,
                Err(refusal) => return refusal,
            };
            if principal.tenant.is_some() {
                return ApiError::new(StatusCode::FORBIDDEN, "service_key_required", "this route takes a service-wide API key, not a tenant's")
                    .into_response();
            }
            let limits = vec![Limit { policy: PolicyName::Key, subject: Subject::Key(principal.key_id), window: state.limiter.policies.key }];
            match state.limiter.decide(&LimitRequest { ban_of: Some(ip), failed_credential: false, limits }).await {
                Ok(Verdict::Admit(windows)) => {
                    req.extensions_mut().insert(ServiceCaller { principal });
                    with_headers(next.run(req).await, &windows)
                }
                Ok(v) => {
                    state.limiter.count_route_block(spec.path).await;
                    refused(v)
                }
                Err(e) => fail_closed(&state, spec.path, &e),
            }
        }
        Auth::Key(scope) => {
            let principal = match authenticated(&state, req.headers(), ip, scope).await {
                Ok(p) => p,
                Err(refusal) => return refusal,
            };
            let tenant = match resolve_tenant(&state, &principal, req.headers()).await {
                Ok(t) => t,
                Err(e) => return e.into_response(),
            };
            let mut limits = vec![Limit { policy: PolicyName::Key, subject: Subject::Key(principal.key_id), window: state.limiter.policies.key }];
            if spec.write {
                let window = state.limiter.policies.tenant_writes_for(tenant);
                limits.push(Limit { policy: PolicyName::TenantWrites, subject: Subject::Tenant(tenant), window });
            }
            let decision = state.limiter.decide(&LimitRequest { ban_of: Some(ip), failed_credential: false, limits }).await;
            match decision {
                Ok(Verdict::Admit(windows)) => {
                    req.extensions_mut().insert(Caller { principal, tenant });
                    with_headers(next.run(req).await, &windows)
                }
                Ok(v) => {
                    state.limiter.count_route_block(spec.path).await;
                    refused(v)
                }
                Err(e) => fail_closed(&state, spec.path, &e),
            }
        }
    }
}

/// The request's key, checked and holding `scope`; otherwise the answer to give (401, 403,
/// 503, or the limiter's refusal of a failing client).
async fn authenticated(state: &AppState, headers: &HeaderMap, ip: IpAddr, scope: crate::auth::Scope) -> Result<Principal, Response> {
    let presented = auth::bearer(headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())).map(str::to_owned);
    let principal = match auth::authenticate(&state.system_pool, presented.as_deref()).await {
        Ok(p) => p,
        Err(AuthError::Unavailable(e)) => {
            tracing::error!(message = "API key check failed: PostgreSQL unavailable.", error = %e);
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable", "credentials cannot be checked now; retry later").into_response());
        }
        Err(e) => return Err(failed_credential(state, ip, &e).await),
    };
    if !principal.scopes.contains(&scope) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", format!("this route needs an API key with scope {scope}")).into_response());
    }
    Ok(principal)
}

/// A refused credential: count the failure (maybe starting a ban), limit the client per IP.
async fn failed_credential(state: &AppState, ip: IpAddr, why: &AuthError) -> Response {
    let window = state.limiter.policies.anonymous;
    let limits = vec![Limit { policy: PolicyName::Anonymous, subject: Subject::Ip(ip), window }];
    match state.limiter.decide(&LimitRequest { ban_of: Some(ip), failed_credential: true, limits }).await {
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

/// The tenant a request acts for: the key's own, or (service-wide keys) the one the
/// `Ballast-Tenant` header names. Another tenant's id from a tenant key → 404, as for an id
/// that does not exist, so keys cannot probe which tenants exist.
async fn resolve_tenant(state: &AppState, principal: &Principal, headers: &HeaderMap) -> Result<TenantId, ApiError> {
    let named = match headers.get(TENANT_HEADER) {
        None => None,
        Some(v) => {
            let parsed = v.to_str().ok().and_then(|s| s.trim().parse::<uuid::Uuid>().ok());
            Some(parsed.map(TenantId).ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "invalid_tenant", "Ballast-Tenant must be a tenant id (UUID)"))?)
        }
    };
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "tenant_not_found", "no such tenant");
    match (principal.tenant, named) {
        (Some(own), None) => Ok(own),
        (Some(own), Some(t)) if t == own => Ok(own),
        (Some(_), Some(_)) => Err(not_found()),
        (None, None) => Err(ApiError::new(StatusCode::BAD_REQUEST, "tenant_required", "a service-wide key must name the tenant in Ballast-Tenant")),
        (None, Some(t)) => {
            // System pool: a service-wide key may act for any tenant; only existence is read.
            let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
                .bind(t.0)
                .fetch_optional(&state.system_pool.0)
                .await
                .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "retry later"))?;
            exists.map(|_| t).ok_or_else(not_found)
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

fn refused(verdict: Verdict) -> Response {
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
