//! The admin API's fleet operations: the queues per kind, a job (queued or dead, payload with
//! its secrets redacted), dead letters searched, retried and discarded (a dry run unless
//! `execute`), the runbooks and their runs queued on the fleet. The same operations as the
//! CLI's (`ballast jobs …`, `ballast runbook …`), audited with the operator's name.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde_json::Value;

use super::admin::{bad_query, unavailable};
use super::errors::ApiError;
use super::guard::OperatorCaller;
use super::route::{Auth, RouteSpec};
use crate::auth::operators::Role;
use crate::jobs::admin_runs::{self, AdminRun};
use crate::queue::dead::{self, DeadLetter};
use crate::state::AppState;

/// Fleet operation routes.
pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    vec![
        (RouteSpec::new(Method::GET, "/v1/admin/queues", Auth::Operator(Role::Viewer)), get(queues)),
        (RouteSpec::new(Method::POST, "/v1/admin/queues/{kind}/pause", Auth::Operator(Role::Operator)).write(), post(|s, c, p| pause(s, c, p, true))),
        (RouteSpec::new(Method::POST, "/v1/admin/queues/{kind}/resume", Auth::Operator(Role::Operator)).write(), post(|s, c, p| pause(s, c, p, false))),
        (RouteSpec::new(Method::GET, "/v1/admin/jobs/{id}", Auth::Operator(Role::Viewer)), get(job)),
        (RouteSpec::new(Method::GET, "/v1/admin/dead-letters", Auth::Operator(Role::Viewer)), get(dead_letters)),
        (RouteSpec::new(Method::POST, "/v1/admin/dead-letters/retry", Auth::Operator(Role::Operator)).write(), post(|s, c, b| act_on_dead(s, c, b, DeadAct::Retry))),
        (RouteSpec::new(Method::POST, "/v1/admin/dead-letters/discard", Auth::Operator(Role::Operator)).write(), post(|s, c, b| act_on_dead(s, c, b, DeadAct::Discard))),
        (RouteSpec::new(Method::GET, "/v1/admin/runbooks", Auth::Operator(Role::Viewer)), get(runbooks)),
        (RouteSpec::new(Method::POST, "/v1/admin/runbooks/{name}/runs", Auth::Operator(Role::Viewer)).write(), post(run_runbook)),
        (RouteSpec::new(Method::GET, "/v1/admin/runs", Auth::Operator(Role::Viewer)), get(runs)),
        (RouteSpec::new(Method::GET, "/v1/admin/runs/{id}", Auth::Operator(Role::Viewer)), get(run)),
    ]
}

/// Field names that say they hold a secret: their values are shown as `[redacted]`.
const SECRET_WORDS: [&str; 8] = ["secret", "token", "password", "authorization", "api_key", "apikey", "signature", "cookie"];

/// `v` with every value under a secret-sounding field name replaced, at any depth: what an
/// operator may see of a job's payload.
pub fn redacted(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    let hidden = SECRET_WORDS.iter().any(|w| lower.contains(w));
                    (k.clone(), if hidden { Value::String("[redacted]".into()) } else { redacted(v) })
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redacted).collect()),
        other => other.clone(),
    }
}

/// One job kind's figures.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct KindFigures {
    /// Ready, scheduled, running, the oldest ready job's age.
    queue: crate::queue::QueueStats,
    /// Open dead letters.
    dead: i64,
}

/// Every kind's figures.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct Queues {
    /// Per job kind.
    kinds: Vec<KindFigures>,
}

async fn queues(State(state): State<AppState>) -> Response {
    let (stats, dead) = match (state.queue.stats().await, dead::open_counts(&state.system_pool).await) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) => return unavailable(&e),
        (_, Err(e)) => return unavailable(&e),
    };
    let kinds = stats.into_iter().map(|queue| KindFigures { dead: dead.get(&queue.kind).copied().unwrap_or(0), queue }).collect();
    Json(Queues { kinds }).into_response()
}

/// A kind paused or resumed.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct Paused {
    /// The kind.
    kind: String,
    /// Whether its workers now fetch none of its jobs.
    paused: bool,
}

async fn pause(State(state): State<AppState>, Extension(caller): Extension<OperatorCaller>, path: Result<Path<String>, PathRejection>, paused: bool) -> Response {
    let Ok(Path(kind)) = path else { return not_found("job kind") };
    match crate::jobs::queue_control::set_paused(&state.queue, &state.system_pool, &kind, paused, &caller.name).await {
        Ok(()) => Json(Paused { kind, paused }).into_response(),
        Err(crate::queue::QueueError::UnknownKind(_)) => not_found("job kind"),
        Err(e) => unavailable(&e),
    }
}

/// A job as an operator sees it: queued on Redis, dead in PostgreSQL, or finished with a
/// tracked status.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct JobView {
    /// `queued`, `dead`, or a tracked job's state (`done`, `retrying`, …).
    r#where: &'static str,
    /// The job's id.
    job_id: String,
    /// The dead letter's id (dead jobs: what retry and discard take).
    dead_letter: Option<uuid::Uuid>,
    /// Its kind.
    kind: String,
    /// Its tenant.
    tenant: Option<String>,
    /// Attempts made.
    attempt: i64,
    /// The last attempt's error.
    last_error: Option<String>,
    /// Each attempt that ended, oldest first: start, duration, error, trace id.
    history: Vec<crate::queue::attempts::Attempt>,
    /// The payload, secrets redacted (absent once a tracked job has left the queue).
    #[schema(value_type = Object)]
    payload: Option<Value>,
}

fn not_found(what: &str) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no such {what}")).into_response()
}

async fn job(State(state): State<AppState>, path: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(id)) = path else { return not_found("job") };
    match crate::jobs::lookup::find(&state.queue, &state.system_pool, &state.tenant_pool, (crate::state::standard_intakes(), &state), &id).await {
        Ok(Some(found)) => Json(JobView {
            r#where: found.place.word(),
            dead_letter: match found.place {
                crate::jobs::lookup::Place::Dead { dead_letter } => Some(dead_letter),
                _ => None,
            },
            job_id: found.job_id,
            kind: found.kind,
            tenant: found.tenant.map(|t| t.to_string()),
            attempt: found.attempt,
            last_error: found.last_error,
            history: found.history,
            payload: found.payload.as_ref().map(redacted),
        })
        .into_response(),
        Ok(None) => not_found("job (queued, dead or tracked)"),
        Err(e) => unavailable(&e),
    }
}

/// A dead-letter search.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DeadQuery {
    /// Only this job kind.
    kind: Option<String>,
    /// Only errors containing this text.
    error: Option<String>,
    /// At most this many, 1 to 500 (default 50).
    limit: Option<i64>,
}

/// Open dead letters, newest first, envelopes redacted.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct DeadList {
    /// The page.
    dead_letters: Vec<DeadLetter>,
    /// How many match in all.
    total: i64,
}

async fn dead_letters(State(state): State<AppState>, query: Result<Query<DeadQuery>, QueryRejection>) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return bad_query(&e),
    };
    let (kind, error) = (q.kind.as_deref(), q.error.as_deref());
    let rows = dead::matching(&state.system_pool, kind, error, q.limit.unwrap_or(50).clamp(1, 500)).await;
    let total = dead::count_matching(&state.system_pool, kind, error).await;
    match (rows, total) {
        (Ok(rows), Ok(total)) => {
            let dead_letters = rows.into_iter().map(|d| DeadLetter { envelope: redacted(&d.envelope), ..d }).collect();
            Json(DeadList { dead_letters, total }).into_response()
        }
        (Err(e), _) | (_, Err(e)) => unavailable(&e),
    }
}

#[derive(Debug, Clone, Copy)]
enum DeadAct {
    Retry,
    Discard,
}

/// Dead letters to retry or discard: the ones named, or every open one matching the search.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DeadSelection {
    /// These dead letters.
    #[serde(default)]
    ids: Vec<uuid::Uuid>,
    /// Or every open one (with `kind` and `error` to narrow it).
    #[serde(default)]
    all: bool,
    /// Only this job kind (with `all`).
    kind: Option<String>,
    /// Only errors containing this text (with `all`).
    error: Option<String>,
    /// Act; without it, the answer says what would be touched.
    #[serde(default)]
    execute: bool,
}

/// What a retry or discard touched (or would).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct DeadActed {
    /// Whether it acted.
    executed: bool,
    /// The dead letters chosen.
    dead_letters: Vec<uuid::Uuid>,
    /// Retried: the jobs queued again.
    job_ids: Vec<String>,
    /// Discarded: how many were open.
    discarded: u64,
}

async fn act_on_dead(State(state): State<AppState>, Extension(caller): Extension<OperatorCaller>, body: Result<Json<DeadSelection>, JsonRejection>, act: DeadAct) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return super::errors::json_rejection(&e).into_response(),
    };
    let ids = match (b.ids.is_empty(), b.all) {
        (false, false) if b.kind.is_none() && b.error.is_none() => b.ids.clone(),
        (true, true) => match dead::matching(&state.system_pool, b.kind.as_deref(), b.error.as_deref(), i64::MAX).await {
            Ok(rows) => rows.into_iter().map(|d| d.id).collect(),
            Err(e) => return unavailable(&e),
        },
        _ => return ApiError::new(StatusCode::BAD_REQUEST, "invalid_selection", "name dead letters in ids, or set all (with kind and error to narrow it)").into_response(),
    };
    let mut acted = DeadActed { executed: b.execute, dead_letters: ids, job_ids: Vec::new(), discarded: 0 };
    if !b.execute {
        return Json(acted).into_response();
    }
    let filter = serde_json::json!({"kind": b.kind, "error": b.error, "via": "admin api"});
    let done = match act {
        DeadAct::Retry => dead::retry_audited(&state.system_pool, &state.queue, &acted.dead_letters, &caller.name, filter, &Default::default())
            .await
            .map(|jobs| acted.job_ids = jobs.into_iter().map(|j| j.0).collect()),
        DeadAct::Discard => dead::discard_audited(&state.system_pool, &acted.dead_letters, &caller.name, filter).await.map(|n| acted.discarded = n).map_err(Into::into),
    };
    match done {
        Ok(()) => Json(acted).into_response(),
        Err(crate::queue::QueueError::NoDeadLetter(which)) => ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no open dead letter {which}")).into_response(),
        Err(e) => unavailable(&e),
    }
}

/// The runbook pages.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct RunbookList {
    /// Each page with its admin job (the text in `text`).
    runbooks: Vec<RunbookPage>,
}

/// One page.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct RunbookPage {
    /// Its name and admin job.
    page: crate::runbook::Page,
    /// The page itself (Markdown).
    text: String,
}

async fn runbooks(State(state): State<AppState>) -> Response {
    match crate::runbook::pages(&state.settings.runbooks_dir) {
        Ok(pages) => Json(RunbookList { runbooks: pages.into_iter().map(|p| RunbookPage { text: p.text.clone(), page: p }).collect() }).into_response(),
        Err(e) => unavailable(&e),
    }
}

/// A run of a runbook's admin job, on the fleet.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewRun {
    /// The job's parameters (the page lists them).
    #[serde(default)]
    #[schema(value_type = Object)]
    params: serde_json::Map<String, Value>,
    /// Act (operators); without it, a dry run that reports.
    #[serde(default)]
    execute: bool,
}

/// A queued run: its report at `GET /v1/admin/runs/{id}` once it ran.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct QueuedRun {
    /// The run's id.
    run: String,
    /// The admin job.
    kind: String,
    /// Whether it will act.
    execute: bool,
}

async fn run_runbook(
    State(state): State<AppState>,
    Extension(caller): Extension<OperatorCaller>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<NewRun>, JsonRejection>,
) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return super::errors::json_rejection(&e).into_response(),
    };
    if b.execute && !caller.role.allows(Role::Operator) {
        let message = format!("operator {} is a {}: a dry run only; executing needs the operator role", caller.name, caller.role.as_str());
        return ApiError::new(StatusCode::FORBIDDEN, "insufficient_role", message).into_response();
    }
    let Ok(Path(name)) = path else { return not_found("runbook") };
    let page = match crate::runbook::page(&state.settings.runbooks_dir, &name) {
        Ok(p) => p,
        Err(crate::runbook::RunbookError::Unknown(_)) => return not_found("runbook"),
        Err(e) => return unavailable(&e),
    };
    match crate::runbook::enqueue(&state.queue, &state.system_pool, &page, b.execute, &caller.name, Value::Object(b.params)).await {
        Ok(id) => (StatusCode::ACCEPTED, Json(QueuedRun { run: id.0, kind: page.admin_job, execute: b.execute })).into_response(),
        Err(e) => unavailable(&e),
    }
}

/// Which runs.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct RunsQuery {
    /// Only this admin job kind.
    kind: Option<String>,
    /// At most this many, 1 to 500 (default 50).
    limit: Option<i64>,
}

/// Admin job runs, newest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct RunList {
    /// The runs, with their reports.
    runs: Vec<AdminRun>,
}

async fn runs(State(state): State<AppState>, query: Result<Query<RunsQuery>, QueryRejection>) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return bad_query(&e),
    };
    match admin_runs::list(&state.system_pool, q.kind.as_deref(), q.limit.unwrap_or(50).clamp(1, 500)).await {
        Ok(runs) => Json(RunList { runs }).into_response(),
        Err(e) => unavailable(&e),
    }
}

async fn run(State(state): State<AppState>, path: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(id)) = path else { return not_found("run") };
    match admin_runs::find(&state.system_pool, &id).await {
        Ok(Some(run)) => Json(run).into_response(),
        Ok(None) => not_found("run"),
        Err(e) => unavailable(&e),
    }
}
