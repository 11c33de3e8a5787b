//! One runbook in the console: its page rendered from Markdown, its admin job's parameters as
//! a typed form (from the parameters' own schema: each field's type, choices, default and
//! description), a dry run for anyone signed in, execute for operators. A run's parameters are
//! checked against the job's before anything is queued, so a typo is an answer, not a failed run.

use askama::Template;
use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::frame::{Frame, back_to, may_act, page, refusal, unavailable};
use crate::auth::console_sessions::SignedIn;
use crate::state::AppState;

/// How a parameter is entered.
pub(super) enum FieldInput {
    /// A checkbox (a boolean).
    Check,
    /// One of these values.
    Choice(Vec<String>),
    /// A whole number.
    Number,
    /// Free text, with a hint of its shape (a time, a UUID, a list).
    Text(&'static str),
}

/// One parameter of an admin job.
pub(super) struct Field {
    pub name: String,
    pub help: String,
    pub default: String,
    pub input: FieldInput,
}

/// The types a JSON Schema property allows (`type` as a word or a list, through `oneOf`).
fn types_of(property: &Value) -> Vec<String> {
    let mut out: Vec<String> = match &property["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    };
    for alternative in ["oneOf", "anyOf"] {
        if let Some(options) = property[alternative].as_array() {
            out.extend(options.iter().flat_map(types_of));
        }
    }
    out
}

/// The values a property may take, when it lists them.
fn choices_of(property: &Value) -> Vec<String> {
    let mut out: Vec<String> = property["enum"].as_array().map(|e| e.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default();
    for alternative in ["oneOf", "anyOf"] {
        if let Some(options) = property[alternative].as_array() {
            out.extend(options.iter().flat_map(choices_of));
        }
    }
    out
}

/// The form of an admin job's parameters from their schema (`args_schema`, with `default`).
pub(super) fn fields(schema: &Value) -> Vec<Field> {
    let Some(properties) = schema["properties"].as_object() else { return Vec::new() };
    properties
        .iter()
        .map(|(name, property)| {
            let types = types_of(property);
            let choices = choices_of(property);
            let format = property["format"].as_str().unwrap_or_default();
            let input = if !choices.is_empty() {
                FieldInput::Choice(choices)
            } else if types.iter().any(|t| t == "boolean") {
                FieldInput::Check
            } else if types.iter().any(|t| t == "integer" || t == "number") {
                FieldInput::Number
            } else if format == "date-time" {
                FieldInput::Text("2026-12-01T00:00:00Z")
            } else if format == "uuid" {
                FieldInput::Text("a UUID")
            } else {
                FieldInput::Text("")
            };
            let default = match &schema["default"][name.as_str()] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Field { name: name.clone(), help: property["description"].as_str().unwrap_or_default().to_owned(), default, input }
        })
        .collect()
}

/// Markdown to HTML, with any HTML written in the page shown as text: pages are reviewed
/// files, but the console renders nothing it did not write itself.
pub(super) fn rendered(markdown: &str) -> String {
    use pulldown_cmark::{Event, Options, Parser};
    let events = Parser::new_ext(markdown, Options::ENABLE_TABLES).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        other => other,
    });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

#[derive(Template)]
#[template(path = "console/runbook.html")]
struct RunbookPage {
    frame: Frame,
    name: String,
    title: String,
    admin_job: String,
    fields: Vec<Field>,
    body: String,
}

/// The admin job's parameter schema, from the registry the fleet runs.
fn schema_of(kind: &str) -> Value {
    crate::state::standard_registry().get(kind).and_then(|h| h.args_schema()).unwrap_or(Value::Null)
}

pub(super) async fn runbook(State(state): State<AppState>, Extension(session): Extension<SignedIn>, Path(name): Path<String>) -> Response {
    let found = match crate::runbook::page(&state.settings.runbooks_dir, &name) {
        Ok(p) => p,
        Err(crate::runbook::RunbookError::Unknown(_)) => return refusal(StatusCode::NOT_FOUND, &format!("no runbook {name:?}")),
        Err(e) => return unavailable(&e),
    };
    let fields = fields(&schema_of(&found.admin_job));
    page(RunbookPage { frame: Frame::of(&session, state.settings.console.read_only), body: rendered(&found.text), name: found.name, title: found.title, admin_job: found.admin_job, fields }.render())
}

/// A run's parameters from the form's `param.NAME` fields: empty ones keep their default; a
/// value is read as JSON where it is JSON (numbers, booleans), else as text.
fn params_of(form: &[(String, String)]) -> serde_json::Map<String, Value> {
    form.iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("param.")?, v.trim())))
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_owned(), serde_json::from_str::<Value>(v).ok().filter(|j| !j.is_object() && !j.is_array()).unwrap_or_else(|| Value::String(v.to_owned()))))
        .collect()
}

pub(super) async fn run_runbook(State(state): State<AppState>, Extension(session): Extension<SignedIn>, Path(name): Path<String>, Form(form): Form<Vec<(String, String)>>) -> Response {
    let field = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let execute = field("execute").is_some();
    let csrf = field("csrf").unwrap_or_default();
    // A dry run only reads: a viewer may ask for one (with the session's form token).
    let checked = if execute { may_act(&session, csrf, state.settings.console.read_only) } else { super::frame::csrf_only(&session, csrf) };
    if let Err(refused) = checked {
        return refused;
    }
    let page_of = match crate::runbook::page(&state.settings.runbooks_dir, &name) {
        Ok(p) => p,
        Err(e) => return refusal(StatusCode::NOT_FOUND, &e.to_string()),
    };
    let params = params_of(&form);
    let asked = |params: Value| crate::jobs::admin::AdminArgs::payload(execute, &session.operator, params);
    if let Some(handler) = crate::state::standard_registry().get(&page_of.admin_job) {
        if let Err(e) = handler.check(&asked(Value::Object(params.clone()))) {
            // serde names no field: the first parameter refused on its own is the one to fix.
            let culprit = params.iter().find(|(k, v)| handler.check(&asked(serde_json::json!({ k.as_str(): v }))).is_err()).map(|(k, _)| k.as_str());
            let why = match culprit {
                Some(name) => format!("{job}: parameter {name}: {e}", job = page_of.admin_job),
                None => format!("{job}: {e}", job = page_of.admin_job),
            };
            return refusal(StatusCode::BAD_REQUEST, &why);
        }
    }
    let params = Value::Object(params);
    match crate::runbook::enqueue(&state.queue, &state.system_pool, &page_of, execute, &session.operator, params).await {
        Ok(id) => back_to(&format!("/runs/{id}")),
        Err(e) => unavailable(&e),
    }
}
