//! The fleet's pages: the overview (queues, dead letters, SLOs, alerts, the scheduler leader),
//! dead letters with retry and discard (one, or every match after a confirmation naming the
//! count), a job with its payload's secrets redacted, the runbooks with a dry run or an
//! execute queued on the fleet, and a run's report.

use askama::Template;
use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::frame::{unavailable, Frame, back_to, may_act, page, refusal};
use crate::auth::console_sessions::SignedIn;
use crate::queue::dead::{self, DeadLetter};
use crate::state::AppState;

/// One kind's queue figures.
pub(super) struct KindRow {
    pub kind: String,
    pub ready: u64,
    pub scheduled: u64,
    pub running: u64,
    pub dead: i64,
    pub oldest: String,
    pub paused: bool,
}

/// The golden signals over the last five minutes, as words.
pub(super) struct Signals {
    pub requests_per_min: String,
    pub mean_latency: String,
    pub p95_latency: String,
    pub slow_share: String,
    pub error_rate: String,
    pub pool_use: String,
    /// Live members: id, roles, release, and the age of their last announcement.
    pub members: Vec<MemberRow>,
}

/// A live fleet member, as the overview lists it.
pub(super) struct MemberRow {
    pub id: String,
    pub roles: String,
    pub version: String,
    pub seen: String,
}

/// Minutes the golden signals look back.
const SIGNAL_MINUTES: i64 = 5;

async fn signals(state: &AppState) -> Signals {
    let now = chrono::Utc::now();
    let routes = crate::slo::record::route_totals(&state.redis, &state.keys, now.timestamp().div_euclid(60), SIGNAL_MINUTES).await.unwrap_or_default();
    let (n, us, slow) = routes.values().fold((0i64, 0i64, 0i64), |a, r| (a.0 + r.0, a.1 + r.1, a.2 + r.2));
    let (good, valid) = crate::slo::history::window(&state.system_pool.0, "intake-availability", SIGNAL_MINUTES, now).await.unwrap_or((0, 0));
    let share = |part: i64, whole: i64| if whole > 0 { format!("{:.2} %", part as f64 * 100.0 / whole as f64) } else { "-".to_owned() };
    let pools = [("app", state.tenant_pool.raw()), ("system", &state.system_pool.0)];
    let pool_use = pools.iter().map(|(name, p)| format!("{name} {}/{} in use", p.size().saturating_sub(u32::try_from(p.num_idle()).unwrap_or(0)), state.settings.db_pool_size)).collect::<Vec<_>>().join(", ");
    let members = crate::health::roster::members(&state.redis, &state.keys).await.unwrap_or_default();
    let members = members.into_iter().map(|m| MemberRow { roles: m.roles.join(", "), version: m.version, seen: format!("{} s ago", m.seen_secs_ago), id: m.id }).collect();
    let histogram = crate::slo::record::latency(&state.redis, &state.keys, now.timestamp().div_euclid(60), SIGNAL_MINUTES).await.unwrap_or([0; crate::slo::latency::BUCKETS]);
    let p95 = crate::slo::latency::quantile(&histogram, 0.95);
    Signals {
        requests_per_min: format!("{:.1}", n as f64 / SIGNAL_MINUTES as f64),
        mean_latency: if n > 0 { format!("{:.1} ms", us as f64 / n as f64 / 1000.0) } else { "-".into() },
        p95_latency: p95.map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0)).unwrap_or_else(|| "-".into()),
        slow_share: share(slow, n),
        error_rate: share(valid - good, valid),
        pool_use,
        members,
    }
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct Overview {
    frame: Frame,
    signals: Signals,
    kinds: Vec<KindRow>,
    dead: Vec<DeadLetter>,
    slos: Vec<(String, String, String)>,
    alerts: Vec<(String, String)>,
    leader: String,
}

pub(super) async fn overview(State(state): State<AppState>, Extension(session): Extension<SignedIn>) -> Response {
    let (stats, dead_counts, newest) = match (state.queue.stats().await, dead::open_counts(&state.system_pool).await, dead::list(&state.system_pool, None, 10).await) {
        (Ok(s), Ok(d), Ok(n)) => (s, d, n),
        (Err(e), _, _) => return unavailable(&e),
        (_, Err(e), _) | (_, _, Err(e)) => return unavailable(&e),
    };
    // Kinds with work or dead letters first, then the quiet ones, each group by name.
    let mut stats = stats;
    stats.sort_by_key(|s| (s.ready + s.scheduled + s.running == 0 && dead_counts.get(&s.kind).copied().unwrap_or(0) == 0, s.kind.clone()));
    let kinds = stats
        .into_iter()
        .map(|s| KindRow {
            dead: dead_counts.get(&s.kind).copied().unwrap_or(0),
            oldest: s.oldest_ready_age_secs.map_or_else(|| "-".to_owned(), |a| format!("{a:.1} s")),
            kind: s.kind,
            ready: s.ready,
            scheduled: s.scheduled,
            running: s.running,
            paused: s.paused,
        })
        .collect();
    let slos = crate::slo::evaluate::latest(&state.system_pool.0).await.unwrap_or_default();
    let slos = slos.into_iter().map(|(name, sli, budget)| (name, format!("{:.4}", sli), format!("{:.1} %", budget * 100.0))).collect();
    let alerts = crate::health::alerts::firing(&state.system_pool).await.unwrap_or_default();
    let alerts = alerts.into_iter().filter(|a| a.2).map(|a| (a.0, a.1)).collect();
    let leader = crate::scheduler::current_leader(&state.redis, &state.keys).await.ok().flatten().unwrap_or_else(|| "none".into());
    let mut frame = Frame::of(&session, state.settings.console.read_only);
    frame.refresh_secs = 5;
    let signals = signals(&state).await;
    page(Overview { frame, signals, kinds, dead: newest, slos, alerts, leader }.render())
}

/// A dead-letter search.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct DeadSearch {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    error: String,
    /// `retry` or `discard`: show the confirmation for every match.
    #[serde(default)]
    confirm: String,
}

#[derive(Template)]
#[template(path = "console/dead.html")]
struct DeadPage {
    frame: Frame,
    kind: String,
    error: String,
    rows: Vec<DeadLetter>,
    total: i64,
    confirm: String,
}

fn some(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

pub(super) async fn dead_letters(State(state): State<AppState>, Extension(session): Extension<SignedIn>, Query(q): Query<DeadSearch>) -> Response {
    let (kind, error) = (some(&q.kind), some(&q.error));
    let (rows, total) = match (dead::matching(&state.system_pool, kind, error, 100).await, dead::count_matching(&state.system_pool, kind, error).await) {
        (Ok(r), Ok(t)) => (r, t),
        (Err(e), _) | (_, Err(e)) => return unavailable(&e),
    };
    let confirm = if matches!(q.confirm.as_str(), "retry" | "discard") { q.confirm.clone() } else { String::new() };
    let frame = Frame::of(&session, state.settings.console.read_only);
    page(DeadPage { frame, kind: q.kind, error: q.error, rows, total, confirm }.render())
}

/// Retry or discard: one dead letter (`id`), or every match of the search (`all`, with the
/// count the confirmation showed: if more match now, the operator confirms again).
#[derive(Debug, serde::Deserialize)]
pub(super) struct DeadAct {
    #[serde(default)]
    csrf: String,
    action: String,
    #[serde(default)]
    id: Option<uuid::Uuid>,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    expected: Option<usize>,
}

pub(super) async fn act_on_dead(State(state): State<AppState>, Extension(session): Extension<SignedIn>, Form(f): Form<DeadAct>) -> Response {
    if let Err(refused) = may_act(&session, &f.csrf, state.settings.console.read_only) {
        return refused;
    }
    let (kind, error) = (some(&f.kind), some(&f.error));
    let ids: Vec<uuid::Uuid> = match f.id {
        Some(id) => vec![id],
        None => match dead::matching(&state.system_pool, kind, error, i64::MAX).await {
            Ok(rows) => rows.into_iter().map(|d| d.id).collect(),
            Err(e) => return unavailable(&e),
        },
    };
    if f.id.is_none() && f.expected != Some(ids.len()) {
        return refusal(StatusCode::CONFLICT, &format!("{} dead letters match now, not the {} you confirmed: look again before acting on all of them.", ids.len(), f.expected.unwrap_or(0)));
    }
    let filter = serde_json::json!({"kind": kind, "error": error, "via": "console"});
    let done = match f.action.as_str() {
        "retry" => dead::retry_audited(&state.system_pool, &state.queue, &ids, &session.operator, filter, &Default::default()).await.map(|_| ()),
        "discard" => dead::discard_audited(&state.system_pool, &ids, &session.operator, filter).await.map(|_| ()).map_err(Into::into),
        _ => return refusal(StatusCode::BAD_REQUEST, "the action is retry or discard"),
    };
    match done {
        Ok(()) => back_to("/dead"),
        Err(crate::queue::QueueError::NoDeadLetter(which)) => refusal(StatusCode::NOT_FOUND, &format!("no open dead letter {which} (retried or discarded meanwhile?)")),
        Err(e) => unavailable(&e),
    }
}

#[derive(Template)]
#[template(path = "console/job.html")]
struct JobPage {
    frame: Frame,
    job_id: String,
    place: &'static str,
    kind: String,
    tenant: String,
    attempt: String,
    error: String,
    payload: String,
    dead_letter: Option<uuid::Uuid>,
    attempts: Vec<AttemptRow>,
}

/// One attempt of a job, as its row shows it.
struct AttemptRow {
    attempt: u32,
    started: String,
    took: String,
    outcome: &'static str,
    error: String,
    trace_id: String,
}

pub(super) async fn job(State(state): State<AppState>, Extension(session): Extension<SignedIn>, Path(id): Path<String>) -> Response {
    let found = match crate::jobs::lookup::find(&state.queue, &state.system_pool, &state.tenant_pool, (crate::state::standard_intakes(), &state), &id).await {
        Ok(Some(found)) => found,
        Ok(None) => return refusal(StatusCode::NOT_FOUND, "no such job: not queued, not a dead letter, no tracked status"),
        Err(e) => return unavailable(&e),
    };
    let attempts = found
        .history
        .iter()
        .rev()
        .map(|a| AttemptRow {
            attempt: a.attempt,
            started: a.started_at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            took: format!("{} ms", a.took_ms),
            outcome: if a.error.is_some() { "failed" } else { "succeeded" },
            error: a.error.clone().unwrap_or_default(),
            trace_id: a.trace_id.clone().unwrap_or_default(),
        })
        .collect();
    let shown = JobPage {
        frame: Frame::of(&session, state.settings.console.read_only),
        place: found.place.word(),
        dead_letter: match found.place {
            crate::jobs::lookup::Place::Dead { dead_letter } => Some(dead_letter),
            _ => None,
        },
        job_id: found.job_id,
        kind: found.kind,
        tenant: found.tenant.map(|t| t.to_string()).unwrap_or_default(),
        attempt: found.attempt.to_string(),
        error: found.last_error.unwrap_or_default(),
        payload: match &found.payload {
            Some(p) => serde_json::to_string_pretty(&crate::api::admin_ops::redacted(p)).unwrap_or_default(),
            None => "(not kept once a tracked job has left the queue)".into(),
        },
        attempts,
    };
    page(shown.render())
}

/// A recent run, as its row shows it.
pub(super) struct RunRow {
    pub id: String,
    pub kind: String,
    pub state: &'static str,
    pub executed: bool,
    pub actor: String,
    pub queued: String,
}

#[derive(Template)]
#[template(path = "console/runbooks.html")]
struct RunbooksPage {
    frame: Frame,
    pages: Vec<crate::runbook::Page>,
    runs: Vec<RunRow>,
}

pub(super) async fn runbooks(State(state): State<AppState>, Extension(session): Extension<SignedIn>) -> Response {
    let pages = match crate::runbook::pages(&state.settings.runbooks_dir) {
        Ok(p) => p,
        Err(e) => return unavailable(&e),
    };
    use crate::jobs::admin_runs::RunState;
    let reads = state.reads().await;
    let runs = crate::jobs::admin_runs::list(&reads.pool, None, 20).await.unwrap_or_default();
    let runs = runs
        .into_iter()
        .map(|r| RunRow {
            state: match r.state {
                RunState::Queued => "queued",
                RunState::Done => "done",
                RunState::Failed => "failed",
            },
            queued: r.queued_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            id: r.id,
            kind: r.kind,
            executed: r.executed,
            actor: r.actor,
        })
        .collect();
    page(RunbooksPage { frame: Frame::of(&session, state.settings.console.read_only).reading(&reads.source), pages, runs }.render())
}

#[derive(Template)]
#[template(path = "console/run.html")]
struct RunPage {
    frame: Frame,
    run: crate::jobs::admin_runs::AdminRun,
    report: String,
    finished: bool,
}

pub(super) async fn run(State(state): State<AppState>, Extension(session): Extension<SignedIn>, Path(id): Path<String>) -> Response {
    match crate::jobs::admin_runs::find(&state.system_pool, &id).await {
        Ok(Some(run)) => {
            let report = run.report.as_ref().map(|r| serde_json::to_string_pretty(r).unwrap_or_default()).unwrap_or_default();
            let finished = run.finished_at.is_some();
            let mut frame = Frame::of(&session, state.settings.console.read_only);
            frame.refresh_secs = if finished { 0 } else { 2 };
            page(RunPage { frame, run, report, finished }.render())
        }
        Ok(None) => refusal(StatusCode::NOT_FOUND, "no such run"),
        Err(e) => unavailable(&e),
    }
}

/// The jobs page's search, as the form sends it (empty fields: any).
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct JobsQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    error: String,
    /// `YYYY-MM-DDTHH:MM` (UTC), as a datetime-local field sends it.
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    cursor: String,
}

#[derive(Template)]
#[template(path = "console/jobs.html")]
struct JobsPage {
    frame: Frame,
    q: JobsQuery,
    jobs: Vec<crate::jobs::search::FoundJob>,
    next: Option<String>,
}

fn instant(raw: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S"))
        .map(|t| Some(t.and_utc()))
        .map_err(|_| format!("{raw:?} is not a time like 2026-12-05T09:30 (UTC)"))
}

pub(super) async fn jobs(State(state): State<AppState>, Extension(session): Extension<SignedIn>, Query(q): Query<JobsQuery>) -> Response {
    let (from, to) = match (instant(&q.from), instant(&q.to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => return refusal(StatusCode::BAD_REQUEST, &e),
    };
    let tenant = match some(&q.tenant).map(str::parse::<uuid::Uuid>).transpose() {
        Ok(t) => t,
        Err(_) => return refusal(StatusCode::BAD_REQUEST, "tenant is a tenant id (UUID)"),
    };
    let search = crate::jobs::search::JobSearch { kind: some(&q.kind).map(str::to_owned), state: some(&q.state).map(str::to_owned), tenant, error: some(&q.error).map(str::to_owned), from, to };
    let reads = state.reads().await;
    match crate::jobs::search::search(&reads.pool, &search, some(&q.cursor), 50).await {
        Ok(found) => page(JobsPage { frame: Frame::of(&session, state.settings.console.read_only).reading(&reads.source), q, jobs: found.jobs, next: found.next_cursor }.render()),
        Err(e @ (crate::jobs::search::SearchError::BadCursor | crate::jobs::search::SearchError::BadState)) => refusal(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e) => unavailable(&e),
    }
}
