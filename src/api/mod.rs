//! The intake API. Each module lists its routes with [`RouteSpec`]s — method, path, how the
//! route authenticates, whether it writes — and the router is built from those lists, so the
//! declared authentication is what runs (the [`guard`] wraps every route) and tests can walk
//! every route the router has.

use axum::Router;
use axum::http::{HeaderName, StatusCode};
use axum::routing::MethodRouter;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::state::AppState;

pub mod admin;
pub mod admin_ops;
pub mod admin_people;
pub mod plans;
pub mod client;
pub mod entitlements;
pub mod errors;
pub mod guard;
pub mod health;
pub mod jobs;
pub mod limits;
pub mod lists;
pub mod observe;
pub mod openapi;
pub mod route;
pub mod server;
pub mod slo;
pub mod tenants;
pub mod usage;
pub mod webhook_endpoints;
pub mod stripe_webhooks;

pub use errors::ApiError;
pub use route::{Auth, RouteSpec};

/// The admin API's routes with their handlers: served on the console's listener, never the
/// public intake's.
fn admin_routes_with_handlers() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let mut all = admin::routes();
    all.extend(admin_ops::routes());
    all.extend(admin_people::routes());
    all
}

/// The intake's routes with their handlers, module by module (`/openapi.json` describing them
/// and the admin API's); `registry` checks job payloads at intake.
fn routes_with_handlers(registry: &crate::state::Registry) -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let mut all = Vec::new();
    all.extend(health::routes());
    all.extend(stripe_webhooks::routes());
    all.extend(entitlements::routes());
    all.extend(plans::routes());
    all.extend(jobs::routes(registry));
    all.extend(usage::routes());
    all.extend(slo::routes());
    all.extend(tenants::routes());
    all.extend(webhook_endpoints::routes());
    let described: Vec<RouteSpec> = all.iter().chain(admin_routes_with_handlers().iter()).map(|(spec, _)| spec.clone()).collect();
    all.extend(openapi::routes(&described));
    all
}

/// Every route of the API, the intake's and the admin API's (`RouteSpec::is_admin`).
pub fn routes() -> Vec<RouteSpec> {
    let intake = routes_with_handlers(&crate::state::Registry::default()).into_iter().map(|(spec, _)| spec);
    intake.chain(admin_routes_with_handlers().into_iter().map(|(spec, _)| spec)).collect()
}

/// The admin API (`/v1/admin/…`), guarded as every route is (operator tokens, the limiter's
/// windows and bans): the console's listener serves it beside the console's pages.
pub fn admin_router(state: AppState) -> Router {
    let mut router = Router::new();
    for (spec, handler) in admin_routes_with_handlers() {
        let path = spec.path;
        router = router.route(path, handler.route_layer(axum::middleware::from_fn_with_state((state.clone(), spec), guard::guard)));
    }
    router.with_state(state).layer(axum::middleware::from_fn(limits::request_shape))
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
pub fn router(state: AppState, registry: &crate::state::Registry) -> Router {
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
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe::middleware))
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
