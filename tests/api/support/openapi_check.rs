//! Every answer the suite gets through [`super::TestApp::call`] is checked against the API's
//! own OpenAPI document (what `/openapi.json` serves): its status must be one the operation
//! declares and its body must fit that status's schema. A handler that drifts from the
//! document fails whichever test called it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use jsonschema::Validator;
use serde_json::Value;

static DOC: LazyLock<Value> = LazyLock::new(|| ballast::api::openapi::document(&ballast::api::routes()));

/// Each schema's compiled validator, by where the schema sits in the document. Compiling one
/// copies the document's components and walks them: per answer, that cost a burst drill's
/// 51,000 answers a third of the test process's CPU, which the fleet under test then lacked.
static VALIDATORS: LazyLock<Mutex<HashMap<String, Arc<Validator>>>> = LazyLock::new(Mutex::default);

/// The document's path template for `path` (query left out): literal segments must match,
/// `{…}` ones match anything.
fn template(path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap_or(path);
    let wanted: Vec<&str> = path.split('/').collect();
    DOC["paths"].as_object()?.keys().find(|t| {
        let parts: Vec<&str> = t.split('/').collect();
        parts.len() == wanted.len() && parts.iter().zip(&wanted).all(|(p, w)| p.starts_with('{') || p == w)
    }).cloned()
}

/// `schema` as a root that resolves the document's `#/components/schemas/…` references (a
/// type may contain itself: a webhook message's status lists its deliveries' statuses).
fn inline(schema: &Value) -> Value {
    let mut root = schema.clone();
    root["components"] = DOC["components"].clone();
    root
}

/// Whether `status` and `body` are what the document says `method path` answers.
pub fn check(method: &reqwest::Method, path: &str, status: u16, body: &Value) -> Result<(), String> {
    let Some(tmpl) = template(path) else { return Ok(()) };
    let op = &DOC["paths"][&tmpl][method.as_str().to_lowercase()];
    if op.is_null() {
        // A method the route does not serve: the router's 405, in the error shape.
        return check_error(status, body, &format!("{method} {tmpl}"));
    }
    let response = &op["responses"][status.to_string()];
    if response.is_null() {
        return Err(format!("{method} {tmpl} answered {status}, which /openapi.json does not declare: {body}"));
    }
    let Some(schema) = response["content"]["application/json"].get("schema") else { return Ok(()) };
    validate(&format!("{method} {tmpl} {status}"), schema, body).map_err(|e| format!("{method} {tmpl} answered {status} that its schema refuses ({e}): {body}"))
}

/// Whether `method path` declares `status` (an answer that is not JSON: nothing to validate).
pub fn declared(method: &reqwest::Method, path: &str, status: u16) -> Result<(), String> {
    let Some(tmpl) = template(path) else { return Ok(()) };
    let op = &DOC["paths"][&tmpl][method.as_str().to_lowercase()];
    if op.is_null() || !op["responses"][status.to_string()].is_null() {
        return Ok(());
    }
    Err(format!("{method} {tmpl} answered {status}, which /openapi.json does not declare"))
}

fn check_error(status: u16, body: &Value, what: &str) -> Result<(), String> {
    if status < 400 {
        return Err(format!("{what}: not in /openapi.json, yet answered {status}"));
    }
    validate("Error", &DOC["components"]["schemas"]["Error"], body).map_err(|e| format!("{what} answered {status} outside the error shape ({e}): {body}"))
}

/// Validates `body` against `schema`, found in the document at `place`.
fn validate(place: &str, schema: &Value, body: &Value) -> Result<(), String> {
    let cached = VALIDATORS.lock().map_err(|_| "a test panicked while compiling a schema".to_owned())?.get(place).cloned();
    let validator = match cached {
        Some(validator) => validator,
        None => {
            let compiled = Arc::new(jsonschema::validator_for(&inline(schema)).map_err(|e| format!("the document's schema does not compile: {e}"))?);
            VALIDATORS.lock().map_err(|_| "a test panicked while compiling a schema".to_owned())?.insert(place.to_owned(), compiled.clone());
            compiled
        }
    };
    let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
}
