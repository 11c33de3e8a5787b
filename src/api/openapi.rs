//! `GET /openapi.json`: an OpenAPI 3.1 description of the intake API, built from the same
//! route declarations the router is built from (method, path, authentication) plus each
//! route's bodies and query parameters, named below by the handlers' own types: their schemas
//! are derived from those types (utoipa's `ToSchema` and `IntoParams`), so a field added to a
//! type is in the document. A unit test holds the two lists together: every served route is
//! described, and nothing is described that is not served; the suite checks every answer it
//! gets against the document (tests/api/support/checked_http.rs).

use axum::Json;
use axum::http::Method;
use axum::routing::{MethodRouter, get};
use serde_json::{Value, json};
use std::borrow::Cow;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, ToSchema};

use super::route::{Auth, RouteSpec};
use crate::state::AppState;

/// The description's own route (anonymous, limited per client IP like the plan catalogue),
/// describing `served` (every other route of the router) and itself. The document is built
/// once, with the router.
pub fn routes(served: &[RouteSpec]) -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let own = RouteSpec::new(Method::GET, "/openapi.json", Auth::None).limited();
    let all: Vec<RouteSpec> = served.iter().cloned().chain([own.clone()]).collect();
    let doc = std::sync::Arc::new(document(&all));
    vec![(own, get(move || std::future::ready(Json(Value::clone(&doc)))))]
}

/// A body as the document describes it.
#[derive(Clone, Copy)]
enum Body {
    /// JSON of a handler's own type: its schema is derived from the type ([`utoipa::ToSchema`]),
    /// so a field added to the type is in the document.
    Typed(Typed),
    /// JSON whose shape is someone else's (Stripe's event), described in words.
    Foreign(&'static str),
    /// Plain text.
    Text,
    /// No body.
    Empty,
}

/// A type's schema, its name and the schemas of the types it contains.
#[derive(Clone, Copy)]
struct Typed {
    name: fn() -> Cow<'static, str>,
    schema: fn() -> RefOr<Schema>,
    contained: fn(&mut Vec<(String, RefOr<Schema>)>),
}

fn body<T: ToSchema>() -> Body {
    Body::Typed(Typed { name: T::name, schema: T::schema, contained: T::schemas })
}

/// What one route takes and answers.
struct Operation {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    request: Option<Body>,
    /// Success status and its body.
    response: (u16, Body),
    /// Its query parameters, from the handler's query type ([`utoipa::IntoParams`]).
    query: fn() -> Vec<Parameter>,
}

fn no_query() -> Vec<Parameter> {
    Vec::new()
}

fn query<T: IntoParams>() -> Vec<Parameter> {
    T::into_params(|| Some(ParameterIn::Query))
}

/// Every route's bodies, named by the handlers' types. `idempotency_key` fields repeat a
/// request safely.
fn operations() -> Vec<Operation> {
    use super::admin_ops as ops;
    use super::admin_people as people;
    use super::entitlements as ent;
    use super::health;
    use super::jobs;
    use super::lists;
    use super::slo;
    use super::stripe_webhooks;
    use super::tenants;
    use super::webhook_endpoints as hooks;
    use crate::tenants::provision::{NewTenant, TenantChange};
    use crate::tenants::view::TenantView;
    use crate::webhooks_out::endpoints::{Endpoint, NewEndpoint, WithSecret};
    let op = |method, path, summary, request, response| Operation { method, path, summary, request, response, query: no_query };
    let stripe_event = Body::Foreign("A Stripe event object (Stripe's API reference, `Event`), as Stripe signs and sends it.");
    vec![
        op("GET", "/healthz", "Liveness", None, (200, body::<health::Liveness>())),
        op("GET", "/readyz", "Readiness: PostgreSQL and Redis answer", None, (200, body::<health::Readiness>())),
        op("GET", "/metrics", "Prometheus metrics (text)", None, (200, Body::Text)),
        op("GET", "/openapi.json", "This description", None, (200, Body::Foreign("An OpenAPI 3.1 document."))),
        op("POST", "/webhooks/stripe", "Stripe webhook events, verified by their Stripe-Signature", Some(stripe_event), (200, body::<stripe_webhooks::StripeEventReceipt>())),
        op("GET", "/v1/entitlements", "What the tenant may do, every feature", None, (200, body::<ent::Entitlements>())),
        op("GET", "/v1/entitlements/{feature}", "One feature of the tenant", None, (200, body::<ent::OneEntitlement>())),
        op("GET", "/v1/plans", "The public plan catalogue with Stripe's prices", None, (200, body::<crate::billing::public_plans::PublicCatalogue>())),
        op("GET", "/v1/flags", "Feature flags, on or off for the tenant", None, (200, body::<super::plans::Flags>())),
        op("POST", "/v1/jobs", "Queue a job for the tenant", Some(body::<jobs::NewJob>()), (202, body::<crate::jobs::intake::Accepted>())),
        op("GET", "/v1/jobs/{id}", "Where a job the tenant queued is", None, (200, body::<crate::queue::status::JobStatus>())),
        op("POST", "/v1/usage", "Record metered usage (1 to 1,000 items)", Some(body::<crate::usage::UsageBatch>()), (200, body::<crate::usage::Recorded>())),
        op("GET", "/v1/usage", "This month's usage per metric", None, (200, body::<crate::usage::CurrentUsage>())),
        op("POST", "/v1/slo/events", "Per-minute SLO counts of an app service", Some(body::<slo::SloBatch>()), (200, body::<slo::SloCountsStored>())),
        op("POST", "/v1/webhook-endpoints", "Register an outbound webhook endpoint; its signing secret is in this answer only",
            Some(body::<NewEndpoint>()), (201, body::<WithSecret>())),
        Operation { query: query::<hooks::PageQuery>, ..op("GET", "/v1/webhook-endpoints", "The tenant's endpoints, a page at a time, never their secrets", None, (200, body::<lists::EndpointList>())) },
        op("DELETE", "/v1/webhook-endpoints/{id}", "Delete an endpoint", None, (204, Body::Empty)),
        op("POST", "/v1/webhook-endpoints/{id}/rotate", "A new signing secret; the previous one signs for 24 hours more", None, (200, body::<WithSecret>())),
        op("POST", "/v1/webhook-endpoints/{id}/enable", "Deliver to a disabled endpoint again", None, (200, body::<Endpoint>())),
        Operation { query: query::<hooks::LogQuery>, ..op("GET", "/v1/webhook-endpoints/{id}/deliveries", "The endpoint's delivery log, newest first, a page at a time", None, (200, body::<lists::DeliveryList>())) },
        op("POST", "/v1/webhook-endpoints/{id}/deliveries/{delivery}/resend", "Send a finished delivery's message again (same webhook-id)", None, (202, body::<hooks::Resent>())),
        op("POST", "/v1/tenants", "Provision a tenant and its Stripe customer (idempotent by external_id)", Some(body::<NewTenant>()), (201, body::<TenantView>())),
        Operation { query: query::<tenants::ListQuery>, ..op("GET", "/v1/tenants", "Tenants, by external_id or a page at a time", None, (200, body::<lists::TenantList>())) },
        op("GET", "/v1/tenants/{id}", "One tenant with its plan, subscription and entitlements", None, (200, body::<TenantView>())),
        op("PATCH", "/v1/tenants/{id}", "Change a tenant's name or billing email", Some(body::<TenantChange>()), (200, body::<TenantView>())),
        Operation { query: query::<super::admin::ListQuery>, ..op("GET", "/v1/admin/tenants", "The customer list: plan, status, MRR, dunning, last activity; filtered, sorted, by cursor", None, (200, body::<crate::tenants::customers::Page>())) },
        Operation { query: query::<super::admin::TimelineQuery>, ..op("GET", "/v1/admin/tenants/{id}/timeline", "A tenant's timeline, newest first, by cursor", None, (200, body::<crate::tenants::timeline::Page>())) },
        Operation { query: query::<super::admin::UsageQuery>, ..op("GET", "/v1/admin/tenants/{id}/usage", "A tenant's usage per metric per day against its limits, and its feature checks", None, (200, body::<crate::tenants::usage_report::UsageReport>())) },
        op("GET", "/v1/admin/tenants/{id}/overrides", "A tenant's overrides, live ones first", None, (200, body::<super::admin::OverrideList>())),
        op("POST", "/v1/admin/tenants/{id}/overrides", "Grant or revoke a feature, or set a limit, with a reason and an expiry (audited)", Some(body::<super::admin::NewOverrideBody>()), (201, body::<crate::billing::overrides::Override>())),
        op("POST", "/v1/admin/tenants/{id}/support-sessions", "Open a read-only support session as the tenant; its token is in this answer only", Some(body::<super::admin::NewSession>()), (201, body::<super::admin::OpenedSession>())),
        op("GET", "/v1/admin/queues", "Per job kind: ready, scheduled, running, dead, the oldest ready job's age", None, (200, body::<ops::Queues>())),
        op("POST", "/v1/admin/queues/{kind}/pause", "Pause a job kind fleet-wide: its jobs stay queued, none is fetched (audited)", None, (200, body::<ops::Paused>())),
        op("POST", "/v1/admin/queues/{kind}/resume", "Resume a paused job kind (audited)", None, (200, body::<ops::Paused>())),
        op("GET", "/v1/admin/jobs/{id}", "A job, queued or dead, its payload's secrets redacted", None, (200, body::<ops::JobView>())),
        Operation { query: query::<ops::DeadQuery>, ..op("GET", "/v1/admin/dead-letters", "Open dead letters, newest first, by kind and error text", None, (200, body::<ops::DeadList>())) },
        op("POST", "/v1/admin/dead-letters/retry", "Retry dead letters (named, or all matching); a dry run unless execute (audited)", Some(body::<ops::DeadSelection>()), (200, body::<ops::DeadActed>())),
        op("POST", "/v1/admin/dead-letters/discard", "Discard dead letters (named, or all matching); a dry run unless execute (audited)", Some(body::<ops::DeadSelection>()), (200, body::<ops::DeadActed>())),
        op("GET", "/v1/admin/runbooks", "The runbook pages and their admin jobs", None, (200, body::<ops::RunbookList>())),
        op("POST", "/v1/admin/runbooks/{name}/runs", "Queue a run of the page's admin job on the fleet: a dry run, or (operators) execute", Some(body::<ops::NewRun>()), (202, body::<ops::QueuedRun>())),
        Operation { query: query::<ops::RunsQuery>, ..op("GET", "/v1/admin/runs", "Admin job runs, newest first, with their reports", None, (200, body::<ops::RunList>())) },
        op("GET", "/v1/admin/runs/{id}", "One admin job run and its report", None, (200, body::<crate::jobs::admin_runs::AdminRun>())),
        op("GET", "/v1/admin/operators", "Every operator (admins)", None, (200, body::<people::OperatorList>())),
        op("POST", "/v1/admin/operators", "Add an operator (admins); its token is in this answer only", Some(body::<people::NewOperator>()), (201, body::<people::OperatorWithToken>())),
        op("POST", "/v1/admin/operators/{name}/disable", "Disable an operator: its token stops working (admins)", None, (200, body::<crate::auth::operators::Operator>())),
        op("POST", "/v1/admin/operators/{name}/rotate", "A new token for an operator, the old one refused (admins)", None, (200, body::<people::OperatorWithToken>())),
        op("DELETE", "/v1/admin/tenants/{id}/overrides/{override}", "End a tenant's live override (audited)", None, (200, body::<crate::billing::overrides::Override>())),
        Operation { query: query::<people::SessionsQuery>, ..op("GET", "/v1/admin/support-sessions", "Support sessions, newest first", None, (200, body::<people::SessionList>())) },
        op("DELETE", "/v1/admin/support-sessions/{id}", "End a support session now (audited)", None, (200, body::<crate::auth::support::Session>())),
    ]
}

/// Success statuses a route answers besides its main one, with the same body.
fn other_successes(method: &str, path: &str) -> &'static [(u16, &'static str)] {
    match (method, path) {
        ("POST", "/v1/tenants") => &[(200, "The external id already had this tenant (a repeat)")],
        _ => &[],
    }
}

fn security(auth: &Auth) -> (Value, String) {
    match auth {
        Auth::None => (json!([]), "No authentication.".into()),
        Auth::StripeSignature => (json!([]), "Signed by Stripe (Stripe-Signature header).".into()),
        Auth::Key(scope) => (json!([{"apiKey": []}]), format!("API key with scope `{scope}`, acting for its tenant (a service-wide key names it in Ballast-Tenant).")),
        Auth::ServiceKey(scope) => (json!([{"apiKey": []}]), format!("Service-wide API key with scope `{scope}`.")),
        Auth::Operator(role) => (
            json!([{"operatorToken": []}]),
            format!("Served on the admin listener (BALLAST_CONSOLE_LISTEN, beside the console), never the public port. An operator's token (`bo_…`) of role `{}` or above; no API key.", role.as_str()),
        ),
    }
}

/// The statuses of the error shape, any route.
const ERROR_STATUSES: [u16; 15] = [400, 401, 403, 404, 405, 408, 409, 413, 414, 415, 422, 429, 431, 500, 503];

/// The description of `specs` (the routes the router serves).
pub fn document(specs: &[RouteSpec]) -> Value {
    let ops = operations();
    let mut schemas = Schemas::default();
    let error_schema = schemas.of(&body::<super::errors::ErrorAnswer>());
    let mut paths = serde_json::Map::new();
    for spec in specs {
        let Some(op) = ops.iter().find(|o| o.method == spec.method.as_str() && o.path == spec.path) else { continue };
        let (sec, auth_text) = security(&spec.auth);
        let error = json!({"description": "An error", "content": {"application/json": {"schema": error_schema}}});
        let mut success = |description: &str| match &op.response.1 {
            Body::Empty => json!({"description": "Done; no body"}),
            Body::Text => json!({"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}),
            other => json!({"description": description, "content": {"application/json": {"schema": schemas.of(other)}}}),
        };
        // Every route may refuse with the error shape: the guard's and the connection's
        // refusals (401, 403, 408, 413, 414, 415, 429, 431) apply to all, 405 to another
        // method; 409 (a limit or state), 422 (Stripe refused) and 500 (PostgreSQL refused a
        // Stripe event) to some.
        let mut responses = Value::Object(ERROR_STATUSES.iter().map(|s| (s.to_string(), error.clone())).collect());
        responses[op.response.0.to_string()] = success("Success");
        for (status, why) in other_successes(op.method, op.path) {
            responses[status.to_string()] = success(why);
        }
        let mut operation = json!({"summary": op.summary, "description": auth_text, "security": sec, "responses": responses});
        let mut params: Vec<Value> = spec.path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})).collect();
        params.extend((op.query)().iter().map(|p| serde_json::to_value(p).unwrap_or(Value::Null)));
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        if let Some(body) = &op.request {
            operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schemas.of(body)}}});
        }
        let entry = paths.entry(spec.path.to_owned()).or_insert_with(|| json!({}));
        entry[spec.method.as_str().to_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Ballast intake API", "version": env!("CARGO_PKG_VERSION"),
            "description": "Stripe webhooks, job and usage intake, entitlements and tenants. Errors are {\"error\": {\"code\", \"message\"}}."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer bk_…"},
                "operatorToken": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer bo_… (`ballast operators add`)"},
            },
            "schemas": schemas.0,
        },
    })
}

/// `#/components/schemas`: every named type a body uses, its own fields' types included.
#[derive(Default)]
struct Schemas(serde_json::Map<String, Value>);

impl Schemas {
    /// The schema to put where `body` goes: a reference to its type, entered with the types
    /// it contains.
    fn of(&mut self, body: &Body) -> Value {
        match body {
            Body::Typed(t) => {
                let mut contained = Vec::new();
                (t.contained)(&mut contained);
                let name = (t.name)().into_owned();
                for (n, schema) in contained.into_iter().chain([(name.clone(), (t.schema)())]) {
                    self.0.entry(n).or_insert_with(|| serde_json::to_value(schema).unwrap_or(Value::Null));
                }
                json!({"$ref": format!("#/components/schemas/{name}")})
            }
            Body::Foreign(what) => json!({"type": "object", "description": what}),
            Body::Text => json!({"type": "string"}),
            Body::Empty => json!({}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_route_is_described_and_every_described_route_is_served() {
        let served: Vec<(String, String)> = crate::api::routes().iter().map(|s| (s.method.as_str().to_owned(), s.path.to_owned())).collect();
        let described: Vec<(String, String)> = operations().iter().map(|o| (o.method.to_owned(), o.path.to_owned())).collect();
        for route in &served {
            assert!(described.contains(route), "{route:?} is served but not described in openapi.rs");
        }
        for route in &described {
            assert!(served.contains(route), "{route:?} is described but not served");
        }
        let doc = document(&crate::api::routes());
        assert_eq!(doc["openapi"], "3.1.0");
        let operations: usize = doc["paths"].as_object().map(|p| p.values().map(|v| v.as_object().map_or(0, |o| o.len())).sum()).unwrap_or(0);
        assert_eq!(operations, served.len());
    }
}
