//! The intake API. Each module lists its routes with [`RouteSpec`]s — method, path, how the
//! route authenticates, whether it writes — and the router is built from those lists, so the
//! declared authentication is what runs (the [`guard`] wraps every route) and tests can walk
//! every route the router has.

use axum::Router;
use axum::http::{HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::app::AppState;

pub mod catalogue;
pub mod client;
pub mod entitlements;
pub mod errors;
pub mod guard;
pub mod limits;
pub mod server;
pub mod health;
pub mod jobs;
pub mod slo;
pub mod usage;
pub mod webhooks;

/// How a route authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// None (health).
    None,
    /// The `Stripe-Signature` header, checked by the handler over the raw body.
    StripeSignature,
    /// An API key with this scope, acting for a tenant.
    Key(crate::auth::Scope),
    /// A service-wide API key (no tenant) with this scope: the route's data is the product's,
    /// not any tenant's.
    ServiceKey(crate::auth::Scope),
}

/// One route of the API, as the router serves it.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Method.
    pub method: Method,
    /// Path, in axum's syntax (`/v1/entitlements/{feature}`).
    pub path: &'static str,
    /// Authentication.
    pub auth: Auth,
    /// Writes tenant data (the per-tenant write limit applies).
    pub write: bool,
    /// Anonymous route limited per client IP (key routes are limited per key instead).
    pub limited: bool,
}

impl RouteSpec {
    /// A route.
    pub fn new(method: Method, path: &'static str, auth: Auth) -> Self {
        Self { method, path, auth, write: false, limited: false }
    }

    /// Marks a write route.
    pub fn write(mut self) -> Self {
        self.write = true;
        self
    }

    /// Marks an anonymous route limited per client IP.
    pub fn limited(mut self) -> Self {
        self.limited = true;
        self
    }
}

/// Every route with its handler, module by module; `registry` checks job payloads at intake.
fn routes_with_handlers(registry: &crate::jobs::Registry) -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let mut all = Vec::new();
    all.extend(health::routes());
    all.extend(webhooks::routes());
    all.extend(entitlements::routes());
    all.extend(catalogue::routes());
    all.extend(jobs::routes(registry));
    all.extend(usage::routes());
    all.extend(slo::routes());
    all
}

/// Every route of the API: the list the router is built from.
pub fn routes() -> Vec<RouteSpec> {
    routes_with_handlers(&crate::jobs::Registry::default()).into_iter().map(|(spec, _)| spec).collect()
}

/// The one error shape of the API: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole API.
/// The router of a member without the api role: /healthz, /readyz and /metrics only, so
/// workers and the scheduler have probes and are scraped like the api.
pub fn ops_router(state: AppState) -> Router {
    let mut router = Router::new();
    for (spec, handler) in health::routes() {
        let path = spec.path;
        router = router.route(path, handler.route_layer(axum::middleware::from_fn_with_state((state.clone(), spec), guard::guard)));
    }
    router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "this member serves /healthz, /readyz and /metrics only") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
        })
        .with_state(state)
        .layer(axum::middleware::from_fn(limits::request_shape))
}

/// The full intake router; `registry` checks job payloads at intake.
pub fn router(state: AppState, registry: &crate::jobs::Registry) -> Router {
    let mut router = Router::new();
    for (spec, handler) in routes_with_handlers(registry) {
        let path = spec.path;
        let guarded = handler.route_layer(axum::middleware::from_fn_with_state((state.clone(), spec), guard::guard));
        router = router.route(path, guarded);
    }
    router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
        })
        .with_state(state.clone())
        // Every answer counts towards the intake's SLOs (probes excepted), 404s and 429s too.
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::slo::record::middleware))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    let request_id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                    // The route template, never the raw path (ids) or any header (credentials).
                    let route = req.extensions().get::<axum::extract::MatchedPath>().map_or(crate::metrics::UNMATCHED_ROUTE, |m| m.as_str());
                    let method = crate::metrics::method_label(req.method());
                    tracing::info_span!(
                        "request",
                        otel.name = %format!("{method} {route}"),
                        otel.kind = "server",
                        http.request.method = method,
                        http.route = %route,
                        http.response.status_code = tracing::field::Empty,
                        request_id = %request_id,
                    )
                })
                .on_response(|res: &axum::http::Response<_>, _latency: std::time::Duration, span: &tracing::Span| {
                    span.record("http.response.status_code", res.status().as_u16());
                }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(axum::middleware::from_fn(limits::request_shape))
}
