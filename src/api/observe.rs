//! The intake's own observation of each request: its latency and status counted for the
//! SLOs and the route statistics (the SLO recorder) and for the request metrics.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;

/// The tenant a request acted for, put on its response by the guard: an error report of a
/// 5xx names it.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServedTenant(pub crate::newtypes::TenantId);

/// Paths that are not product traffic (probes and scrapes).
const NOT_COUNTED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The middleware: times the request, counts it for the SLOs and the route statistics, and
/// observes it in the request metrics (probes are in the metrics, not in the SLOs).
pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<axum::extract::MatchedPath>().map_or_else(|| crate::metrics::UNMATCHED_ROUTE.to_owned(), |m| m.as_str().to_owned());
    let method = crate::metrics::method_label(req.method());
    let counted = !NOT_COUNTED.contains(&req.uri().path());
    let started = Instant::now();
    let response = next.run(req).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.request(&route, method, status, elapsed);
    if status >= 500 && counted {
        let tenant = response.extensions().get::<ServedTenant>().map(|t| t.0.0);
        crate::error_reports::report(crate::error_reports::Source::Route { route: &route, method, status }, tenant, "");
    }
    if counted {
        state.slo_recorder.observe(elapsed, response.status());
        state.slo_recorder.observe_route(&route, elapsed);
    }
    response
}
