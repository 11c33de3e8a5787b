//! `GET /openapi.json`: an OpenAPI 3.1 description of the intake API, built from the same
//! route declarations the router is built from (method, path, authentication) plus each
//! route's bodies, described below. A unit test holds the two lists together: every served
//! route is described, and nothing is described that is not served.

use axum::Json;
use axum::http::Method;
use axum::routing::{MethodRouter, get};
use serde_json::{Value, json};

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

/// What one route takes and answers.
struct Operation {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    request: Option<Value>,
    /// Success status and its body.
    response: (u16, Value),
}

/// An object whose `required` properties are always present; the others may be absent or
/// null (Ballast writes `null` for what is not there: a tenant without a plan, a delivery not
/// finished), so the schema says so.
fn obj(required: &[&str], props: Value) -> Value {
    let props: serde_json::Map<String, Value> = match props {
        Value::Object(map) => map.into_iter().map(|(k, v)| {
            let v = if required.contains(&k.as_str()) { v } else { nullable(v) };
            (k, v)
        }).collect(),
        _ => serde_json::Map::new(),
    };
    json!({"type": "object", "required": required, "properties": props})
}

/// `schema`, or null.
fn nullable(mut schema: Value) -> Value {
    match schema.get("type").cloned() {
        Some(Value::String(t)) => {
            schema["type"] = json!([t, "null"]);
            schema
        }
        Some(Value::Array(mut types)) => {
            if !types.contains(&json!("null")) {
                types.push(json!("null"));
            }
            schema["type"] = Value::Array(types);
            schema
        }
        _ if schema.get("enum").is_some() => {
            if let Some(values) = schema["enum"].as_array_mut() {
                values.push(Value::Null);
            }
            schema
        }
        _ => json!({"anyOf": [schema, {"type": "null"}]}),
    }
}

fn string() -> Value {
    json!({"type": "string"})
}

/// Every route's bodies. `idempotency_key` fields repeat a request safely.
fn operations() -> Vec<Operation> {
    let any = json!({"type": "object"});
    let tenant_view = obj(&["id", "name"], json!({"id": {"type": "string", "format": "uuid"}, "name": string(), "external_id": string(),
        "billing_email": string(), "stripe_customer_id": string(), "status": string(), "plan": string(),
        "subscription": any, "entitlements": {"type": "array", "items": any}}));
    let job_status = obj(&["id", "kind", "state", "attempts", "created_at"], json!({"id": string(), "kind": string(),
        "state": {"enum": ["queued", "running", "retrying", "done", "dead"]}, "attempts": {"type": "integer"},
        "last_error": {"type": ["string", "null"]}, "next_attempt_at": {"type": ["string", "null"], "format": "date-time"},
        "created_at": {"type": "string", "format": "date-time"}, "started_at": {"type": ["string", "null"], "format": "date-time"},
        "finished_at": {"type": ["string", "null"], "format": "date-time"},
        "jobs": {"type": "array", "items": {"type": "object"}, "description": "a webhook message's deliveries (msg_… ids), each a job status"}}));
    let usage_item = obj(&["metric", "quantity", "timestamp", "idempotency_key"], json!({"metric": string(), "quantity": {"type": "integer", "minimum": 1},
        "timestamp": {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "integer", "description": "Unix seconds"}]}, "idempotency_key": string()}));
    let new_job = obj(&["kind"], json!({"kind": {"type": "string", "description": "a kind with intake = true: noop, email.send, webhook.deliver, cache.warm"},
        "payload": {"type": "object", "description": "email.send: {template, to, variables}; webhook.deliver: {type, data}"}, "idempotency_key": {"type": "string", "maxLength": 200}}));
    let text = json!({"type": "string"});
    let endpoint_secret = obj(&["id", "url", "event_types", "secret"], json!({"id": {"type": "string", "format": "uuid"}, "url": string(),
        "event_types": {"type": "array", "items": string()}, "secret": {"type": "string", "description": "whsec_…, shown once"},
        "previous_secret_until": {"type": "string", "format": "date-time"}, "created_at": {"type": "string", "format": "date-time"}}));
    let delivery_log = obj(&["object", "data"], json!({"object": {"const": "list"}, "data": {"type": "array", "items": obj(&["id", "job_id", "webhook_id", "status", "attempts"],
        json!({"id": {"type": "string", "format": "uuid"}, "job_id": string(), "webhook_id": string(), "event_type": string(),
            "status": {"enum": ["pending", "delivered", "failed", "skipped"]}, "attempts": {"type": "integer"}, "last_error": string(),
            "next_attempt_at": {"type": "string", "format": "date-time"}, "created_at": {"type": "string", "format": "date-time"},
            "finished_at": {"type": "string", "format": "date-time"},
            "attempt_log": {"type": "array", "items": obj(&["attempt", "attempted_at", "duration_ms"], json!({"attempt": {"type": "integer"},
                "attempted_at": {"type": "string", "format": "date-time"}, "duration_ms": {"type": "integer"}, "status_code": {"type": "integer"},
                "response_body": {"type": "string", "description": "the first 2 KiB of the endpoint's answer"}, "error": string()}))}}))}}));
    let uuid = json!({"type": "string", "format": "uuid"});
    let time = json!({"type": "string", "format": "date-time"});
    let entitlement = obj(&["feature", "enabled", "source"], json!({"feature": string(), "enabled": {"type": "boolean"},
        "limit": {"type": "integer"}, "source": {"enum": ["plan", "restricted", "none"]}, "plan_id": string(), "expires_at": time}));
    let entitlements = obj(&["tenant", "entitlements"], json!({"tenant": uuid, "entitlements": {"type": "array", "items": entitlement}}));
    let one_entitlement = obj(&["tenant", "entitlement"], json!({"tenant": uuid, "entitlement": entitlement}));
    let flags = obj(&["tenant", "flags"], json!({"tenant": uuid, "flags": {"type": "object", "additionalProperties": {"type": "boolean"}}}));
    let endpoint = obj(&["id", "url", "event_types", "created_at"], json!({"id": uuid, "url": string(), "event_types": {"type": "array", "items": string()},
        "disabled_at": time, "disabled_reason": string(), "created_at": time}));
    let endpoints = obj(&["object", "data", "has_more"], json!({"object": {"const": "list"}, "data": {"type": "array", "items": endpoint}, "has_more": {"type": "boolean"}}));
    let tenants = obj(&["object", "data", "has_more"], json!({"object": {"const": "list"}, "url": string(), "data": {"type": "array", "items": tenant_view}, "has_more": {"type": "boolean"}}));
    let price = obj(&["id", "amount_source"], json!({"id": string(), "unit_amount": {"type": "integer"}, "currency": string(), "interval": string(),
        "active": {"type": "boolean"}, "amount_source": string(), "amount_missing": string()}));
    let plan = obj(&["id", "name", "features", "usage", "prices"], json!({"id": string(), "name": string(), "features": {"type": "object"},
        "usage": {"type": "object"}, "prices": {"type": "array", "items": price}}));
    let catalogue = obj(&["features", "metrics", "plans"], json!({"features": {"type": "object", "additionalProperties": string()},
        "metrics": {"type": "object", "additionalProperties": string()}, "plans": {"type": "array", "items": plan}}));
    let recorded = obj(&["counted", "duplicates", "warned"], json!({"counted": {"type": "integer"}, "duplicates": {"type": "integer"},
        "warned": {"type": "array", "items": string(), "description": "metrics that crossed 80 % of their monthly limit with this batch"}}));
    let delivery_job = obj(&["id", "delivery_id", "endpoint_id"], json!({"id": string(), "delivery_id": uuid, "endpoint_id": uuid}));
    let liveness = obj(&["status"], json!({"status": {"const": "ok"}}));
    let readiness = obj(&["status"], json!({"status": string(), "checks": {"type": "object"}}));
    vec![
        Operation { method: "GET", path: "/healthz", summary: "Liveness", request: None, response: (200, liveness) },
        Operation { method: "GET", path: "/readyz", summary: "Readiness: PostgreSQL and Redis answer", request: None, response: (200, readiness) },
        Operation { method: "GET", path: "/metrics", summary: "Prometheus metrics (text)", request: None, response: (200, text) },
        Operation { method: "GET", path: "/openapi.json", summary: "This description", request: None, response: (200, any.clone()) },
        Operation { method: "POST", path: "/webhooks/stripe", summary: "Stripe webhook events, verified by their Stripe-Signature", request: Some(any.clone()), response: (200, any.clone()) },
        Operation { method: "GET", path: "/v1/entitlements", summary: "What the tenant may do, every feature", request: None, response: (200, entitlements) },
        Operation { method: "GET", path: "/v1/entitlements/{feature}", summary: "One feature of the tenant", request: None, response: (200, one_entitlement) },
        Operation { method: "GET", path: "/v1/plans", summary: "The public plan catalogue with Stripe's prices", request: None, response: (200, catalogue) },
        Operation { method: "GET", path: "/v1/flags", summary: "Feature flags, on or off for the tenant", request: None, response: (200, flags) },
        Operation { method: "POST", path: "/v1/jobs", summary: "Queue a job for the tenant", request: Some(new_job),
            response: (202, obj(&["id", "kind", "duplicate"], json!({"id": string(), "kind": string(), "duplicate": {"type": "boolean"},
                "outbox_id": uuid, "jobs": {"type": "array", "description": "webhook.deliver: one job per subscribed endpoint", "items": delivery_job}}))) },
        Operation { method: "GET", path: "/v1/jobs/{id}", summary: "Where a job the tenant queued is", request: None, response: (200, job_status) },
        Operation { method: "POST", path: "/v1/usage", summary: "Record metered usage (1 to 1,000 items)", request: Some(obj(&["items"], json!({"items": {"type": "array", "items": usage_item}}))),
            response: (200, recorded) },
        Operation { method: "GET", path: "/v1/usage", summary: "This month's usage per metric", request: None, response: (200, any.clone()) },
        Operation { method: "POST", path: "/v1/slo/events", summary: "Per-minute SLO counts of an app service",
            request: Some(obj(&["events"], json!({"events": {"type": "array", "items": obj(&["slo", "minute", "source", "good", "valid"],
                json!({"slo": string(), "minute": {"type": "string", "format": "date-time"}, "source": string(), "good": {"type": "integer"}, "valid": {"type": "integer"}}))}}))),
            response: (200, any.clone()) },
        Operation { method: "POST", path: "/v1/webhook-endpoints", summary: "Register an outbound webhook endpoint; its signing secret is in this answer only",
            request: Some(obj(&["url", "event_types"], json!({"url": string(), "event_types": {"type": "array", "items": string()}}))), response: (201, endpoint_secret.clone()) },
        Operation { method: "GET", path: "/v1/webhook-endpoints", summary: "The tenant's endpoints, a page at a time (?limit=50&starting_after={id}; has_more), never their secrets", request: None, response: (200, endpoints) },
        Operation { method: "DELETE", path: "/v1/webhook-endpoints/{id}", summary: "Delete an endpoint", request: None, response: (204, any.clone()) },
        Operation { method: "POST", path: "/v1/webhook-endpoints/{id}/rotate", summary: "A new signing secret; the previous one signs for 24 hours more",
            request: None, response: (200, endpoint_secret) },
        Operation { method: "POST", path: "/v1/webhook-endpoints/{id}/enable", summary: "Deliver to a disabled endpoint again", request: None, response: (200, endpoint.clone()) },
        Operation { method: "GET", path: "/v1/webhook-endpoints/{id}/deliveries", summary: "The endpoint's delivery log, newest first, a page at a time (?status=failed&limit=50&starting_after={delivery}; has_more)",
            request: None, response: (200, delivery_log) },
        Operation { method: "POST", path: "/v1/webhook-endpoints/{id}/deliveries/{delivery}/resend", summary: "Send a finished delivery's message again (same webhook-id)",
            request: None, response: (202, obj(&["id", "kind", "delivery_id"], json!({"id": string(), "kind": string(), "delivery_id": {"type": "string", "format": "uuid"}}))) },
        Operation { method: "POST", path: "/v1/tenants", summary: "Provision a tenant and its Stripe customer (idempotent by external_id)",
            request: Some(obj(&["name", "external_id"], json!({"name": string(), "external_id": string(), "billing_email": string()}))), response: (201, tenant_view.clone()) },
        Operation { method: "GET", path: "/v1/tenants", summary: "Tenants, by external_id or a page at a time", request: None, response: (200, tenants) },
        Operation { method: "GET", path: "/v1/tenants/{id}", summary: "One tenant with its plan, subscription and entitlements", request: None, response: (200, tenant_view.clone()) },
        Operation { method: "PATCH", path: "/v1/tenants/{id}", summary: "Change a tenant's name or billing email",
            request: Some(obj(&[], json!({"name": string(), "billing_email": string()}))), response: (200, tenant_view) },
    ]
}

/// The query parameters a route takes: (name, JSON type, what it does).
fn query_parameters(method: &str, path: &str) -> &'static [(&'static str, &'static str, &'static str)] {
    const PAGE: [(&str, &str, &str); 2] = [
        ("limit", "integer", "items per page, 1 to 100"),
        ("starting_after", "string", "the id of the previous page's last item (has_more says whether there is a next page)"),
    ];
    static ENDPOINTS: [(&str, &str, &str); 2] = PAGE;
    static DELIVERIES: [(&str, &str, &str); 3] = [("status", "string", "only pending, delivered, failed or skipped deliveries"), PAGE[0], PAGE[1]];
    static TENANTS: [(&str, &str, &str); 3] = [("external_id", "string", "only the tenant with this external id"), PAGE[0], PAGE[1]];
    match (method, path) {
        ("GET", "/v1/webhook-endpoints") => &ENDPOINTS,
        ("GET", "/v1/webhook-endpoints/{id}/deliveries") => &DELIVERIES,
        ("GET", "/v1/tenants") => &TENANTS,
        _ => &[],
    }
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
    }
}

/// The description of `specs` (the routes the router serves).
pub fn document(specs: &[RouteSpec]) -> Value {
    let ops = operations();
    let mut paths = serde_json::Map::new();
    for spec in specs {
        let Some(op) = ops.iter().find(|o| o.method == spec.method.as_str() && o.path == spec.path) else { continue };
        let (sec, auth_text) = security(&spec.auth);
        let error = json!({"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        // Every route may refuse with the error shape; 409 (a limit or state: too many
        // endpoints, a pending delivery), 413 (a body over the limit) and 405 (another method).
        let success = if op.response.0 == 204 {
            json!({"description": "Done; no body"})
        } else {
            json!({"description": "Success", "content": {"application/json": {"schema": op.response.1}}})
        };
        let mut operation = json!({
            "summary": op.summary,
            "description": auth_text,
            "security": sec,
            "responses": {
                op.response.0.to_string(): success,
                "400": error, "401": error, "403": error, "404": error, "405": error, "409": error, "413": error, "429": error, "503": error,
            },
        });
        for (status, why) in other_successes(op.method, op.path) {
            operation["responses"][status.to_string()] = json!({"description": why, "content": {"application/json": {"schema": op.response.1}}});
        }
        let mut params: Vec<Value> = spec.path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})).collect();
        params.extend(query_parameters(op.method, op.path).iter().map(|(name, kind, what)| json!({"name": name, "in": "query", "required": false, "description": what, "schema": {"type": kind}})));
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        if let Some(body) = &op.request {
            operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": body}}});
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
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer bk_…"}},
            "schemas": {"Error": obj(&["error"], json!({"error": obj(&["code", "message"], json!({"code": string(), "message": string()}))}))},
        },
    })
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
