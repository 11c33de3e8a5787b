//! The customers' pages: the customer list (plan, status, MRR, dunning, last activity) with
//! its filters, and one customer — entitlements with their source, overrides (grant, revoke,
//! each with a reason), support access and the timeline — through the same operations as the
//! CLI and the admin API.

use askama::Template;
use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::frame::{unavailable, Frame, back_to, may_act, page, refusal};
use crate::auth::console_sessions::SignedIn;
use crate::billing::overrides::{self, NewOverride, OverrideKind};
use crate::newtypes::TenantId;
use crate::state::AppState;
use crate::tenants::customers::{self, Customer, Dunning, Filter, Sort};

/// The list's filters (empty fields: no filter).
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    plan: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    dunning: String,
    #[serde(default)]
    search: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    cursor: String,
}

#[derive(Template)]
#[template(path = "console/customers.html")]
struct ListPage {
    frame: Frame,
    q: ListQuery,
    rows: Vec<Customer>,
    next: Option<String>,
    more: i64,
    /// `more` is where counting stopped: at least that many.
    more_counted_to_cap: bool,
}

fn mrr_text(c: &Customer) -> String {
    if c.mrr.is_empty() {
        return "-".into();
    }
    c.mrr.iter().map(|(cur, m)| format!("{units}.{cents:02} {code}", units = m / 100, cents = m % 100, code = cur.to_uppercase())).collect::<Vec<_>>().join(", ")
}

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

pub(super) async fn list(State(state): State<AppState>, Extension(session): Extension<SignedIn>, Query(q): Query<ListQuery>) -> Response {
    let dunning = match q.dunning.as_str() {
        "" => None,
        "none" => Some(Dunning::None),
        "open" => Some(Dunning::Open),
        "restricted" => Some(Dunning::Restricted),
        _ => return refusal(StatusCode::BAD_REQUEST, "dunning is none, open or restricted"),
    };
    let sort = match q.sort.as_str() {
        "" | "mrr" => Sort::Mrr,
        "activity" => Sort::Activity,
        "created" => Sort::Created,
        _ => return refusal(StatusCode::BAD_REQUEST, "sort is mrr, activity or created"),
    };
    let filter = Filter { plan: some(&q.plan), status: some(&q.status), dunning, text: some(&q.search) };
    let reads = state.reads().await;
    match customers::page(&reads.pool, &filter, sort, some(&q.cursor).as_deref(), 50).await {
        Ok(p) => page(ListPage { frame: Frame::of(&session, state.settings.console.read_only).reading(&reads.source), q, rows: p.customers, next: p.next_cursor, more: p.more, more_counted_to_cap: p.more_counted_to_cap }.render()),
        Err(customers::ListError::BadCursor) => refusal(StatusCode::BAD_REQUEST, "that page link is stale: start from the first page"),
        Err(e) => unavailable(&e),
    }
}

#[derive(Template)]
#[template(path = "console/customer.html")]
struct CustomerPage {
    frame: Frame,
    customer: Customer,
    mrr: String,
    entitlements: Vec<crate::billing::entitlements::Entitlement>,
    overrides: Vec<overrides::Override>,
    timeline: Vec<crate::tenants::timeline::Entry>,
    features: Vec<String>,
    metrics: Vec<String>,
    more: super::customer_sections::Sections,
}

pub(super) async fn show(State(state): State<AppState>, Extension(session): Extension<SignedIn>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<uuid::Uuid>().map(TenantId) else { return refusal(StatusCode::NOT_FOUND, "no such customer") };
    let filter = Filter { text: Some(id.0.to_string()), ..Filter::default() };
    let customer = match customers::page(&state.system_pool, &filter, Sort::Mrr, None, 1).await {
        Ok(p) => match p.customers.into_iter().next() {
            Some(c) => c,
            None => return refusal(StatusCode::NOT_FOUND, "no such customer"),
        },
        Err(e) => return unavailable(&e),
    };
    let entitlements = crate::billing::entitlements::load_many(&state.system_pool, &[id]).await.map(|mut m| m.remove(&id).unwrap_or_default());
    let overrides = overrides::list(&state.system_pool, id, true, 50).await;
    let timeline = crate::tenants::timeline::page(&state.system_pool, id, None, None, 50).await;
    let (entitlements, overrides, timeline) = match (entitlements, overrides, timeline) {
        (Ok(e), Ok(o), Ok(t)) => (e, o, t.entries),
        (Err(e), _, _) | (_, Err(e), _) => return unavailable(&e),
        (_, _, Err(e)) => return unavailable(&e),
    };
    let more = match super::customer_sections::load(&state, id).await {
        Ok(m) => m,
        Err(e) => return unavailable(&e),
    };
    let mrr = mrr_text(&customer);
    let features = state.plans.features.keys().cloned().collect();
    let metrics = state.plans.metrics.keys().cloned().collect();
    page(CustomerPage { frame: Frame::of(&session, state.settings.console.read_only), customer, mrr, entitlements, overrides, timeline, features, metrics, more }.render())
}

/// An override from the customer's page: grant, revoke, a feature's limit or a metric's
/// monthly limit, with a reason and a number of days (none: until revoked); or `end` one.
#[derive(Debug, serde::Deserialize)]
pub(super) struct OverrideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    days: String,
    /// Ends this override instead.
    #[serde(default)]
    end: Option<uuid::Uuid>,
}

pub(super) async fn grant(State(state): State<AppState>, Extension(session): Extension<SignedIn>, Path(id): Path<String>, Form(f): Form<OverrideForm>) -> Response {
    if let Err(refused) = may_act(&session, &f.csrf, state.settings.console.read_only) {
        return refused;
    }
    let Ok(tenant) = id.parse::<uuid::Uuid>().map(TenantId) else { return refusal(StatusCode::NOT_FOUND, "no such customer") };
    let back = format!("/customers/{}", tenant.0);
    if let Some(ended) = f.end {
        return match overrides::revoke(&state.system_pool, tenant, ended, &session.operator).await {
            Ok(_) => {
                crate::billing::entitlements::invalidate(&state.cache, tenant).await;
                back_to(&back)
            }
            Err(e) => refusal(StatusCode::BAD_REQUEST, &e.to_string()),
        };
    }
    let kind = match f.kind.as_str() {
        "grant" => OverrideKind::Grant,
        "revoke" => OverrideKind::Revoke,
        "feature_limit" => OverrideKind::FeatureLimit,
        "usage_limit" => OverrideKind::UsageLimit,
        _ => return refusal(StatusCode::BAD_REQUEST, "choose grant, revoke, feature_limit or usage_limit"),
    };
    let value = match f.value.trim() {
        "" => None,
        v => match v.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => return refusal(StatusCode::BAD_REQUEST, "the limit is a whole number"),
        },
    };
    let expires_at = match f.days.trim() {
        "" => None,
        d => match d.parse::<i64>() {
            Ok(n) if (1..=3650).contains(&n) => Some(chrono::Utc::now() + chrono::Duration::days(n)),
            _ => return refusal(StatusCode::BAD_REQUEST, "days is a whole number from 1 to 3650, or empty for no expiry"),
        },
    };
    let new = NewOverride { kind, target: f.target.trim(), value, reason: f.reason.trim(), expires_at };
    let features: Vec<&str> = state.plans.features.keys().map(String::as_str).collect();
    let metrics: Vec<&str> = state.plans.metrics.keys().map(String::as_str).collect();
    if let Err(e) = overrides::check(&new, &features, &metrics, chrono::Utc::now()) {
        return refusal(StatusCode::BAD_REQUEST, &e.to_string());
    }
    match overrides::set(&state.system_pool, tenant, &new, &session.operator).await {
        Ok(_) => {
            crate::billing::entitlements::invalidate(&state.cache, tenant).await;
            back_to(&back)
        }
        Err(e) => refusal(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}
