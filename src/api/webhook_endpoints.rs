//! Outbound webhook endpoints, registered by a tenant's app (scope webhooks:write):
//! `POST /v1/webhook-endpoints` (the signing secret is in this answer only), `GET` to list,
//! `DELETE /v1/webhook-endpoints/{id}`, and `POST /v1/webhook-endpoints/{id}/rotate` for a new
//! secret while the previous one keeps signing for a day; `POST …/{id}/enable` after it was
//! disabled; `GET …/{id}/deliveries` for its delivery log (each delivery with its attempts and
//! the start of the endpoint's answers) and `POST …/{id}/deliveries/{delivery}/resend` to send
//! a finished one again. Another tenant's endpoint or delivery is a 404.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};

use super::errors::ApiError;
use super::guard::Caller;
use super::lists::{DeliveryList, EndpointList};
use super::route::{Auth, RouteSpec};
use crate::auth::Scope;
use crate::webhooks_out::deliveries::{self, DeliveryStatus, ResendError};
use crate::webhooks_out::endpoints::{self, EndpointError, NewEndpoint};
use crate::state::AppState;

/// The endpoint routes.
pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let auth = || Auth::Key(Scope::WebhooksWrite);
    vec![
        (RouteSpec::new(Method::POST, "/v1/webhook-endpoints", auth()).write(), post(create)),
        (RouteSpec::new(Method::GET, "/v1/webhook-endpoints", auth()), get(list)),
        (RouteSpec::new(Method::DELETE, "/v1/webhook-endpoints/{id}", auth()).write(), delete(remove)),
        (RouteSpec::new(Method::POST, "/v1/webhook-endpoints/{id}/rotate", auth()).write(), post(rotate)),
        (RouteSpec::new(Method::POST, "/v1/webhook-endpoints/{id}/enable", auth()).write(), post(enable)),
        (RouteSpec::new(Method::GET, "/v1/webhook-endpoints/{id}/deliveries", auth()), get(deliveries)),
        (RouteSpec::new(Method::POST, "/v1/webhook-endpoints/{id}/deliveries/{delivery}/resend", auth()).write(), post(resend)),
    ]
}

fn error(e: EndpointError) -> Response {
    match e {
        EndpointError::Invalid { field, message } => ApiError::new(StatusCode::BAD_REQUEST, "invalid_endpoint", message).with_field("field", field).into_response(),
        EndpointError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").into_response(),
        e @ EndpointError::TooMany(_) => ApiError::new(StatusCode::CONFLICT, "too_many_endpoints", e.to_string()).into_response(),
        EndpointError::Keyring(e) => {
            tracing::error!(message = "Webhook endpoint secret could not be sealed.", error = %e);
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "endpoints cannot be changed now; retry later").into_response()
        }
        EndpointError::Db(e) => {
            tracing::error!(message = "Webhook endpoint request failed.", error = %e);
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "endpoints cannot be changed now; retry later").into_response()
        }
    }
}

fn endpoint_id(path: Result<Path<String>, PathRejection>) -> Result<uuid::Uuid, Response> {
    path.ok().and_then(|Path(raw)| raw.parse().ok()).ok_or_else(|| error(EndpointError::NotFound))
}

async fn create(State(state): State<AppState>, Extension(caller): Extension<Caller>, body: Result<Json<NewEndpoint>, JsonRejection>) -> Response {
    let Json(new) = match body {
        Ok(b) => b,
        Err(e) => return super::errors::json_rejection(&e).into_response(),
    };
    let max = state.limiter.policies.max_endpoints_for(caller.tenant);
    match endpoints::create(&state.tenant_pool, caller.tenant, &new, state.webhooks_out.address_policy(), max, state.webhooks_out.keyring()).await {
        Ok(made) => (StatusCode::CREATED, Json(made)).into_response(),
        Err(e) => error(e),
    }
}

/// `?limit=20&starting_after={id}`: a page of a list (Stripe's cursor paging).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// Items per page, 1 to 100 (50 when not given).
    limit: Option<i64>,
    /// The id of the previous page's last item (`has_more` says whether there is a next page).
    starting_after: Option<String>,
}

/// The limit (1 to 100, 50 when not given) and the cursor of a page.
fn paging(limit: Option<i64>, starting_after: Option<&str>) -> Result<(i64, Option<uuid::Uuid>), Response> {
    let bad = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", m).into_response();
    let limit = limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(bad("limit: 1 to 100"));
    }
    let after = match starting_after {
        None => None,
        Some(raw) => Some(raw.parse::<uuid::Uuid>().map_err(|_| bad("starting_after: the id of the last item of the previous page"))?),
    };
    Ok((limit, after))
}

fn page<L: serde::Serialize>(list: impl Into<L>) -> Response {
    Json(list.into()).into_response()
}

async fn list(State(state): State<AppState>, Extension(caller): Extension<Caller>, query: Result<Query<PageQuery>, QueryRejection>) -> Result<Response, Response> {
    let Ok(Query(q)) = query else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "the query takes limit (1 to 100) and starting_after (an endpoint id)").into_response());
    };
    let (limit, after) = paging(q.limit, q.starting_after.as_deref())?;
    endpoints::list(&state.tenant_pool, caller.tenant, after, limit).await.map(page::<EndpointList>).map_err(error)
}

async fn remove(State(state): State<AppState>, Extension(caller): Extension<Caller>, path: Result<Path<String>, PathRejection>) -> Result<Response, Response> {
    let id = endpoint_id(path)?;
    endpoints::delete(&state.tenant_pool, caller.tenant, id).await.map_err(error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn rotate(State(state): State<AppState>, Extension(caller): Extension<Caller>, path: Result<Path<String>, PathRejection>) -> Result<Response, Response> {
    let id = endpoint_id(path)?;
    Ok(Json(endpoints::rotate(&state.tenant_pool, caller.tenant, id, state.webhooks_out.keyring()).await.map_err(error)?).into_response())
}

async fn enable(State(state): State<AppState>, Extension(caller): Extension<Caller>, path: Result<Path<String>, PathRejection>) -> Result<Response, Response> {
    let id = endpoint_id(path)?;
    Ok(Json(endpoints::enable(&state.tenant_pool, caller.tenant, id).await.map_err(error)?).into_response())
}

/// `?status=failed&limit=20&starting_after={delivery id}`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct LogQuery {
    /// Only deliveries in this state.
    #[param(value_type = Option<DeliveryStatus>)]
    status: Option<String>,
    /// Items per page, 1 to 100 (50 when not given).
    limit: Option<i64>,
    /// The id of the previous page's last delivery (`has_more` says whether there is a next page).
    starting_after: Option<String>,
}

/// `POST …/deliveries/{delivery}/resend`'s answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Resent {
    /// The new delivery's job (`GET /v1/jobs/{id}`).
    id: String,
    /// Always `webhook.deliver`.
    kind: &'static str,
    /// The new delivery (same message, same `webhook-id`).
    delivery_id: uuid::Uuid,
}

async fn deliveries(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response, Response> {
    let id = endpoint_id(path)?;
    let bad = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", m).into_response();
    let Ok(Query(q)) = query else { return Err(bad("the query takes status (pending, delivered, failed, skipped), limit (1 to 100) and starting_after (a delivery id)")) };
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(DeliveryStatus::from_name(s).ok_or_else(|| bad("status: one of pending, delivered, failed, skipped"))?),
    };
    let (limit, after) = paging(q.limit, q.starting_after.as_deref())?;
    match deliveries::list(&state.tenant_pool, caller.tenant, id, deliveries::LogFilter { status, after, only: None }, limit).await {
        Ok(Some(log)) => Ok(page::<DeliveryList>(log)),
        Ok(None) => Err(error(EndpointError::NotFound)),
        Err(e) => Err(error(EndpointError::Db(e))),
    }
}

async fn resend(State(state): State<AppState>, Extension(caller): Extension<Caller>, path: Result<Path<(String, String)>, PathRejection>) -> Response {
    let ids = path.ok().and_then(|Path((e, d))| Some((e.parse::<uuid::Uuid>().ok()?, d.parse::<uuid::Uuid>().ok()?)));
    let Some((endpoint, delivery)) = ids else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such delivery").into_response();
    };
    match deliveries::resend(&state.tenant_pool, caller.tenant, endpoint, delivery).await {
        Ok(fresh) => {
            // Committed: a lost push is queued by the delivery sweep.
            if let Err(e) = crate::webhooks_out::messages::push(&state.queue, caller.tenant, &[fresh]).await {
                tracing::warn!(message = "Re-send accepted; its job is queued by the sweep.", error = %e);
            }
            let job = crate::webhooks_out::messages::job_id(fresh);
            (StatusCode::ACCEPTED, Json(Resent { id: job.0, kind: crate::webhooks_out::messages::JOB_KIND, delivery_id: fresh })).into_response()
        }
        Err(ResendError::NotFound) => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such delivery").into_response(),
        Err(e @ (ResendError::Pending | ResendError::EndpointOff)) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()).into_response(),
        Err(ResendError::Db(e)) => error(EndpointError::Db(e)),
    }
}
