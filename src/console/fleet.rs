//! The fleet's own pages: the cron entries (last run, its outcome, the next; run now), the
//! SLOs (budget over the window, burn rate per alert window, the last seven days against the
//! target), and the maintenance services with the fleet's alerts, open and resolved.

use askama::Template;
use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::frame::{unavailable, Bar, CHART_H, Frame, back_to, may_act, page, refusal};
use crate::auth::console_sessions::SignedIn;
use crate::jobs::schedules::{self as entries, ScheduleEntry};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "console/schedules.html")]
struct SchedulesPage {
    frame: Frame,
    entries: Vec<ScheduleEntry>,
}

pub(super) async fn schedules(State(state): State<AppState>, Extension(session): Extension<SignedIn>) -> Response {
    match entries::entries(&state.queue, &state.system_pool, &state.redis, &state.keys, chrono::Utc::now()).await {
        Ok(entries) => page(SchedulesPage { frame: Frame::of(&session, state.settings.console.read_only), entries }.render()),
        Err(e) => unavailable(&e),
    }
}

/// Run now.
#[derive(Debug, serde::Deserialize)]
pub(super) struct RunNow {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn run_now(State(state): State<AppState>, Extension(session): Extension<SignedIn>, Path(kind): Path<String>, Form(f): Form<RunNow>) -> Response {
    if let Err(refused) = may_act(&session, &f.csrf, state.settings.console.read_only) {
        return refused;
    }
    match entries::run_now(&state.queue, &state.system_pool, &kind, &session.operator).await {
        Ok(id) => back_to(&format!("/jobs/{id}")),
        Err(e @ entries::RunNowError::NotScheduled(_)) => refusal(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e) => unavailable(&e),
    }
}

/// One SLO as its section shows it.
pub(super) struct SloView {
    pub name: String,
    pub target: String,
    pub window_days: i64,
    pub sli: String,
    pub budget: String,
    pub rules: Vec<(String, String, String, String, bool)>,
    pub bars: Vec<Bar>,
    /// The y of the error budget's rate (1 − target) on the chart.
    pub budget_y: u32,
}

#[derive(Template)]
#[template(path = "console/slos.html")]
struct SlosPage {
    frame: Frame,
    slos: Vec<SloView>,
}

/// Seven days of error rates as bars, scaled so the budget's rate sits at a third of the way up.
fn bars(days: &[crate::slo::history::Day], target: f64) -> (Vec<Bar>, u32) {
    let allowed = (1.0 - target).max(1e-9);
    let worst = days.iter().map(|d| if d.valid > 0 { 1.0 - d.good as f64 / d.valid as f64 } else { 0.0 }).fold(allowed * 3.0, f64::max);
    let scale = f64::from(CHART_H) / worst;
    let bars = days
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let rate = if d.valid > 0 { 1.0 - d.good as f64 / d.valid as f64 } else { 0.0 };
            let title = format!("{day}: {good} of {valid} good ({bad:.3} % bad)", day = d.day, good = d.good, valid = d.valid, bad = rate * 100.0);
            Bar::at(i, 50, rate, worst, d.day.format("%d %b").to_string(), title)
        })
        .collect();
    (bars, CHART_H - ((allowed * scale).round() as u32).min(CHART_H))
}

pub(super) async fn slos(State(state): State<AppState>, Extension(session): Extension<SignedIn>) -> Response {
    let now = chrono::Utc::now();
    let statuses = match crate::slo::evaluate::run(&state.slo_deps(), now, false).await {
        Ok(s) => s,
        Err(e) => return unavailable(&e),
    };
    // Seven days of history: a report that can lag.
    let reads = state.reads().await;
    let mut slos = Vec::new();
    for s in statuses {
        let days = match crate::slo::history::daily(&reads.pool.0, &s.name, 7, now).await {
            Ok(d) => d,
            Err(e) => return unavailable(&e),
        };
        let (bars, budget_y) = bars(&days, s.target);
        let rules = s
            .rules
            .iter()
            .map(|r| (format!("{:?}", r.rule.severity).to_lowercase(), format!("{} min / {} min", r.rule.long_minutes, r.rule.short_minutes), format!("{:.2} / {:.2}", r.long_burn, r.short_burn), format!("{:.1}", r.rule.factor), r.firing))
            .collect();
        slos.push(SloView {
            window_days: s.window_minutes / 1440,
            target: format!("{:.3} %", s.target * 100.0),
            sli: format!("{:.4} %", s.sli * 100.0),
            budget: format!("{:.1} %", s.budget_remaining * 100.0),
            name: s.name,
            rules,
            bars,
            budget_y,
        });
    }
    page(SlosPage { frame: Frame::of(&session, state.settings.console.read_only).reading(&reads.source), slos }.render())
}

#[derive(Template)]
#[template(path = "console/maintenance.html")]
struct MaintenancePage {
    frame: Frame,
    services: Vec<crate::maintenance::status::ServiceStatus>,
    alerts: Vec<crate::health::alerts::AlertRow>,
}

pub(super) async fn maintenance(State(state): State<AppState>, Extension(session): Extension<SignedIn>) -> Response {
    let services = crate::maintenance::services();
    let (statuses, alerts) = match (crate::maintenance::status::all(&state.system_pool, &services, chrono::Utc::now()).await, crate::health::alerts::all(&state.system_pool).await) {
        (Ok(s), Ok(a)) => (s, a),
        (Err(e), _) | (_, Err(e)) => return unavailable(&e),
    };
    let mut frame = Frame::of(&session, state.settings.console.read_only);
    frame.refresh_secs = 15;
    page(MaintenancePage { frame, services: statuses, alerts }.render())
}

/// One kind on the queues page.
pub(super) struct QueueRow {
    pub kind: String,
    pub ready: u64,
    pub scheduled: u64,
    pub running: u64,
    pub paused: bool,
    pub processed: u64,
    pub failed: u64,
    /// Processed (blue) and failed (red) per minute over the last hour.
    pub processed_bars: Vec<Bar>,
    pub failed_bars: Vec<Bar>,
}

#[derive(Template)]
#[template(path = "console/queues.html")]
struct QueuesPage {
    frame: Frame,
    rows: Vec<QueueRow>,
}

pub(super) async fn queues(State(state): State<AppState>, Extension(session): Extension<SignedIn>) -> Response {
    let stats = match state.queue.stats().await {
        Ok(s) => s,
        Err(e) => return unavailable(&e),
    };
    let now_minute = chrono::Utc::now().timestamp().div_euclid(60);
    let kinds: Vec<String> = stats.iter().map(|s| s.kind.clone()).collect();
    let mut series = match crate::queue::minutes::recent_all(&state.redis, &state.keys, &kinds, now_minute, 60).await {
        Ok(m) => m,
        Err(e) => return unavailable(&e),
    };
    let mut rows = Vec::new();
    for s in stats {
        let minutes = series.remove(&s.kind).unwrap_or_default();
        let max = minutes.iter().map(|(_, p, f)| p.max(f)).copied().max().unwrap_or(0) as f64;
        let label = |m: i64| chrono::DateTime::from_timestamp(m * 60, 0).map(|t| t.format("%H:%M").to_string()).unwrap_or_default();
        let processed_bars = minutes.iter().enumerate().map(|(i, (m, p, _))| Bar::at(i, 6, *p as f64, max, String::new(), format!("{at}: {p} processed", at = label(*m)))).collect();
        let failed_bars = minutes.iter().enumerate().map(|(i, (m, _, f))| Bar::at(i, 6, *f as f64, max, String::new(), format!("{at}: {f} failed", at = label(*m)))).collect();
        rows.push(QueueRow {
            processed: minutes.iter().map(|(_, p, _)| p).sum(),
            failed: minutes.iter().map(|(_, _, f)| f).sum(),
            kind: s.kind,
            ready: s.ready,
            scheduled: s.scheduled,
            running: s.running,
            paused: s.paused,
            processed_bars,
            failed_bars,
        });
    }
    let mut frame = Frame::of(&session, state.settings.console.read_only);
    frame.refresh_secs = 10;
    page(QueuesPage { frame, rows }.render())
}

pub(super) async fn pause(State(state): State<AppState>, Extension(session): Extension<SignedIn>, Path((kind, action)): Path<(String, String)>, Form(f): Form<RunNow>) -> Response {
    if let Err(refused) = may_act(&session, &f.csrf, state.settings.console.read_only) {
        return refused;
    }
    let paused = match action.as_str() {
        "pause" => true,
        "resume" => false,
        _ => return refusal(StatusCode::NOT_FOUND, "pause or resume"),
    };
    match crate::jobs::queue_control::set_paused(&state.queue, &state.system_pool, &kind, paused, &session.operator).await {
        Ok(()) => back_to("/queues"),
        Err(crate::queue::QueueError::UnknownKind(_)) => refusal(StatusCode::NOT_FOUND, "no such job kind"),
        Err(e) => unavailable(&e),
    }
}
