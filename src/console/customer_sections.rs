//! The lower half of a customer's page: what the tenant actually does (usage per metric per day
//! against its monthly limit, as charts; the features its app checked), its outbound webhook
//! endpoints with their latest deliveries, its Stripe events in the inbox (a failed one replayed
//! by retrying its dead letter: the inbox's one status model), and support access — a read-only
//! session opened with a reason, its token shown once.

use askama::Template;
use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::frame::{Bar, Frame, may_act, page, refusal, unavailable};
use crate::auth::console_sessions::SignedIn;
use crate::newtypes::TenantId;
use crate::state::AppState;

/// One metric's chart.
pub(super) struct UsageChart {
    pub metric: String,
    pub limit: String,
    pub month_to_date: i64,
    pub bars: Vec<Bar>,
}

/// One endpoint with its latest deliveries: (event type, status, attempts, when, last error).
pub(super) struct EndpointView {
    pub url: String,
    pub state: String,
    pub deliveries: Vec<(String, &'static str, i32, String, String)>,
}

/// The sections.
pub(super) struct Sections {
    pub usage: Vec<UsageChart>,
    /// (feature, checks over the period, days it was checked).
    pub features: Vec<(String, i64, usize)>,
    pub endpoints: Vec<EndpointView>,
    pub events: Vec<crate::stripe::inbox::view::EventView>,
}

/// Days of usage the page shows.
const DAYS: u32 = 30;

/// Reads the sections of `tenant`'s page.
pub(super) async fn load(state: &AppState, tenant: TenantId) -> Result<Sections, String> {
    let limits = crate::usage::limits_of(&state.usage_deps(), tenant).await.map_err(|e| e.to_string())?;
    let report = crate::tenants::usage_report::report(&state.system_pool, tenant, DAYS, limits.as_ref()).await.map_err(|e| e.to_string())?;
    let mut metrics: Vec<String> = report.usage.iter().map(|d| d.metric.clone()).chain(report.limits.keys().cloned()).collect();
    metrics.sort();
    metrics.dedup();
    let usage = metrics
        .into_iter()
        .map(|metric| {
            let days: Vec<&crate::tenants::usage_report::MetricDay> = report.usage.iter().filter(|d| d.metric == metric).collect();
            let max = days.iter().map(|d| d.quantity).max().unwrap_or(0) as f64;
            let bars = days
                .iter()
                .enumerate()
                .map(|(i, d)| Bar::at(i, 12, d.quantity as f64, max, d.day.format("%d").to_string(), format!("{day}: {q} (month to date {mtd})", day = d.day, q = d.quantity, mtd = d.month_to_date)))
                .collect();
            let limit = report.limits.get(&metric).map_or_else(|| "no limit".to_owned(), |l| format!("{} a month{}", l.limit, if l.overage { ", overage billed" } else { "" }));
            UsageChart { month_to_date: days.last().map_or(0, |d| d.month_to_date), metric, limit, bars }
        })
        .collect();
    let mut features: Vec<(String, i64, usize)> = Vec::new();
    for f in &report.features {
        match features.iter_mut().find(|(name, _, _)| *name == f.feature) {
            Some(row) => {
                row.1 += f.checks;
                row.2 += 1;
            }
            None => features.push((f.feature.clone(), f.checks, 1)),
        }
    }
    features.sort_by(|a, b| b.1.cmp(&a.1));
    let page = crate::webhooks_out::endpoints::list(&state.tenant_pool, tenant, None, 10).await.map_err(|e| e.to_string())?;
    let mut endpoints = Vec::new();
    for e in page.data {
        let log = crate::webhooks_out::deliveries::list(&state.tenant_pool, tenant, e.id, Default::default(), 5).await.map_err(|e| e.to_string())?;
        let deliveries = log
            .map(|p| p.data)
            .unwrap_or_default()
            .into_iter()
            .map(|d| (d.event_type, d.status.as_str(), d.attempts, d.created_at.format("%Y-%m-%d %H:%M:%S").to_string(), d.last_error.unwrap_or_default()))
            .collect();
        let state = match (&e.disabled_at, &e.disabled_reason) {
            (Some(_), Some(why)) => format!("disabled: {why}"),
            (Some(_), None) => "disabled".into(),
            _ => "enabled".into(),
        };
        endpoints.push(EndpointView { url: e.url, state, deliveries });
    }
    let filter = crate::stripe::inbox::view::Filter { tenant: Some(tenant.0), ..Default::default() };
    let events = crate::stripe::inbox::view::list(&state.system_pool, &filter, 20).await.map_err(|e| e.to_string())?;
    Ok(Sections { usage, features, endpoints, events })
}

/// A support session to open.
#[derive(Debug, serde::Deserialize)]
pub(super) struct SupportForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    minutes: String,
}

#[derive(Template)]
#[template(path = "console/support_opened.html")]
struct Opened {
    frame: Frame,
    tenant: uuid::Uuid,
    token: String,
    expires_at: String,
}

pub(super) async fn open_support(State(state): State<AppState>, Extension(session): Extension<SignedIn>, Path(id): Path<String>, Form(f): Form<SupportForm>) -> Response {
    if let Err(refused) = may_act(&session, &f.csrf, state.settings.console.read_only) {
        return refused;
    }
    let Ok(tenant) = id.parse::<uuid::Uuid>().map(TenantId) else { return refusal(StatusCode::NOT_FOUND, "no such customer") };
    let minutes: u64 = match f.minutes.trim() {
        "" => 30,
        m => match m.parse() {
            Ok(n) => n,
            Err(_) => return refusal(StatusCode::BAD_REQUEST, "minutes is a whole number"),
        },
    };
    match crate::auth::support::open(&state.system_pool, tenant, &session.operator, f.reason.trim(), std::time::Duration::from_secs(minutes * 60)).await {
        Ok((opened, token)) => {
            let expires_at = opened.expires_at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
            page(Opened { frame: Frame::of(&session, state.settings.console.read_only), tenant: tenant.0, token, expires_at }.render())
        }
        Err(e @ (crate::auth::support::SupportError::Invalid(_) | crate::auth::support::SupportError::NoTenant(_))) => refusal(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e) => unavailable(&e),
    }
}
