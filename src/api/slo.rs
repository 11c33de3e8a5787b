//! `POST /v1/slo/events`: app services report good/valid counts per SLO and minute. A
//! service-wide API key with scope slo:write (the counts are the product's, not a tenant's). A
//! bad item refuses the batch (400, naming the item and field).

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use serde::Deserialize;

use super::guard::ServiceCaller;
use super::errors::ApiError;
use super::route::{Auth, RouteSpec};
use crate::state::AppState;
use crate::auth::Scope;
use crate::slo::report::{self, ReportedMinute};

/// SLO routes.
pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    vec![(RouteSpec::new(Method::POST, "/v1/slo/events", Auth::ServiceKey(Scope::SloWrite)), post(events))]
}

/// The request body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SloBatch {
    /// Per-minute counts; a repeat of a (slo, minute, source) replaces its counts.
    events: Vec<ReportedMinute>,
}

/// The answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct SloCountsStored {
    /// Counts stored.
    accepted: usize,
}

async fn events(
    State(state): State<AppState>,
    Extension(_caller): Extension<ServiceCaller>,
    body: Result<Json<SloBatch>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(batch) = match body {
        Ok(b) => b,
        Err(e) => return super::errors::json_rejection(&e).into_response(),
    };
    if let Err(e) = report::validate(&batch.events, &state.slos, chrono::Utc::now()) {
        let body = serde_json::json!({"error": {"code": "invalid_item", "message": e.to_string(), "item": e.item, "field": e.field}});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    // The app role writes: SLO counts are global, not tenant data.
    match report::store(state.tenant_pool.raw(), &batch.events).await {
        Ok(()) => (StatusCode::OK, Json(SloCountsStored { accepted: batch.events.len() })).into_response(),
        Err(e) => {
            tracing::error!(message = "SLO counts not stored.", error = %e);
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "counts cannot be stored now; retry (a repeat replaces, never adds)")
                .into_response()
        }
    }
}
