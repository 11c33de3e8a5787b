//! `ballast tenants`: provision a tenant (its Stripe customer and welcome email with it), list
//! tenants, show one with its plan, subscription and entitlements. The same code as
//! `POST /v1/tenants`; the operator is audited.

use ballast::state::AppState;
use ballast::tenants::provision::NewTenant;
use ballast::tenants::{self, Tenant, view};
use clap::Subcommand;

use super::args::actor;

#[derive(Debug, Subcommand)]
pub(super) enum TenantsCommand {
    /// Create a tenant and its Stripe customer, and queue its welcome email. Repeating it with
    /// the same --external-id shows the tenant already made (and finishes one left half-done).
    Create {
        /// The tenant's name (also the Stripe customer's).
        #[arg(long)]
        name: String,
        /// Your app's own id for the tenant (unique).
        #[arg(long)]
        external_id: String,
        /// Where billing email goes (also the Stripe customer's email).
        #[arg(long)]
        email: Option<String>,
    },
    /// The customer list: every tenant with its plan, subscription status, monthly recurring
    /// revenue (per currency, minor units), dunning state, last API call and created date;
    /// highest MRR first unless --sort says otherwise. Filters narrow it; a page ends with how
    /// many more match (counted up to 1,000: "1000+ more") and the next page's cursor
    /// (`--cursor`).
    List {
        /// Only tenants on this plan (or price id).
        #[arg(long)]
        plan: Option<String>,
        /// Only this subscription status (active, trialing, past_due, paused, canceled, ...;
        /// none: no subscription).
        #[arg(long)]
        status: Option<String>,
        /// Only this dunning state: none, open (restricted included), restricted.
        #[arg(long, value_parser = parse_dunning)]
        dunning: Option<tenants::customers::Dunning>,
        /// Part of the name, external id or billing email; or a whole tenant or Stripe customer id.
        #[arg(long)]
        search: Option<String>,
        /// mrr (highest first), activity (latest first) or created (newest first).
        #[arg(long, default_value = "mrr", value_parser = parse_sort)]
        sort: tenants::customers::Sort,
        /// Where the last page ended (its `next_cursor`).
        #[arg(long)]
        cursor: Option<String>,
        /// How many (at most 500).
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show a tenant, by its id or your app's external id, with its billing standing.
    /// Open a read-only support session as the tenant: prints a short-lived token (bs_…) that
    /// reads what the tenant's app reads (GET /v1/entitlements, GET /v1/usage) and never
    /// writes; every use is audited with your name and shows in the tenant's timeline.
    /// Operators only.
    ViewAs {
        /// A tenant id (UUID) or an external id.
        tenant: String,
        /// Why (kept with the session and in the audit log).
        #[arg(long)]
        reason: String,
        /// How long it lasts (at most 8h).
        #[arg(long, default_value = "30m", value_parser = super::args::parse_ttl)]
        ttl: std::time::Duration,
    },
    /// What a tenant actually does: usage per metric per day with the month's running total
    /// against its limit, and the features its app checked per day (--json for a chart).
    Usage {
        /// A tenant id (UUID) or an external id.
        tenant: String,
        /// How many days back, today included (at most 400).
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// Support sessions, newest first (a tenant's with --tenant).
    ViewAsSessions {
        /// Only this tenant's (id or external id).
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// End a support session at once (its token is refused from then on).
    ViewAsRevoke {
        /// The session's id (from `view-as` or `view-as-sessions`).
        session: uuid::Uuid,
    },
    Show {
        /// A tenant id (UUID) or an external id.
        tenant: String,
        /// Its timeline instead, newest first: Stripe events applied, dunning steps, emails,
        /// usage per day, and every audited action on it with who did it.
        #[arg(long)]
        timeline: bool,
        /// With --timeline: only entries since this time (RFC 3339, or a day).
        #[arg(long, requires = "timeline")]
        since: Option<String>,
        /// With --timeline: where the last page ended (its `next_cursor`).
        #[arg(long, requires = "timeline")]
        cursor: Option<String>,
        /// With --timeline: entries per page (at most 500).
        #[arg(long, default_value_t = 50, requires = "timeline")]
        limit: i64,
    },
}

fn parse_dunning(s: &str) -> Result<tenants::customers::Dunning, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| format!("{s:?}: none, open or restricted"))
}

fn parse_sort(s: &str) -> Result<tenants::customers::Sort, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| format!("{s:?}: mrr, activity or created"))
}

/// MRR per currency, as people read money: `usd 80.00`.
fn money(mrr: &std::collections::BTreeMap<String, i64>) -> String {
    if mrr.is_empty() {
        return "-".into();
    }
    mrr.iter().map(|(c, m)| format!("{c} {}.{:02}", m / 100, (m % 100).abs())).collect::<Vec<_>>().join(", ")
}

/// Tenants as an aligned table.
fn print_table<'a>(tenants: impl Iterator<Item = &'a Tenant>) {
    let rows = tenants.map(|t| {
        vec![
            t.id.0.to_string(),
            t.external_id.clone().unwrap_or_else(|| "-".into()),
            t.name.clone(),
            t.status.as_str().to_owned(),
            t.stripe_customer_id.clone().unwrap_or_else(|| "(no customer yet)".into()),
        ]
    });
    println!("{}", super::render::table(&["id", "external id", "name", "status", "stripe customer"], rows));
}

/// The customer list as an aligned table.
fn print_customers(page: &tenants::customers::Page) {
    let when = |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or_else(|| "-".to_owned(), |t| t.format("%Y-%m-%d %H:%M").to_string());
    let rows = page.customers.iter().map(|c| {
        vec![
            c.tenant_id.to_string(),
            c.name.clone(),
            c.plan_id.clone().unwrap_or_else(|| "-".into()),
            c.subscription_status.clone().unwrap_or_else(|| "none".into()),
            money(&c.mrr),
            c.dunning.clone(),
            when(c.last_activity_at),
            c.created_at.format("%Y-%m-%d").to_string(),
        ]
    });
    println!("{}", super::render::table(&["id", "name", "plan", "status", "mrr", "dunning", "last activity", "created"], rows));
}

pub(super) async fn tenants(state: AppState, command: TenantsCommand, json: bool) -> anyhow::Result<()> {
    match command {
        TenantsCommand::Create { name, external_id, email } => {
            let new = NewTenant { name, external_id, billing_email: email };
            let done = state.provision_tenant(&new, &actor()).await?;
            let shown = view::view(&state.system_pool, done.tenant).await?;
            if json {
                println!("{}", serde_json::to_string(&shown)?);
            } else {
                let what = if done.created { "created" } else { "already existed" };
                println!("{}", shown.tenant.id.0);
                eprintln!(
                    "tenant {} ({}) {what}; Stripe customer {}{}",
                    shown.tenant.name,
                    shown.tenant.external_id.as_deref().unwrap_or("-"),
                    shown.tenant.stripe_customer_id.as_deref().unwrap_or("-"),
                    shown.tenant.billing_email.as_deref().map(|e| format!("; welcome email to {e}")).unwrap_or_default()
                );
            }
        }
        TenantsCommand::List { plan, status, dunning, search, sort, cursor, limit } => {
            let filter = tenants::customers::Filter { plan, status, dunning, text: search };
            let page = tenants::customers::page(&state.system_pool, &filter, sort, cursor.as_deref(), limit).await?;
            if json {
                println!("{}", serde_json::to_string(&page)?);
            } else {
                print_customers(&page);
                if let Some(next) = &page.next_cursor {
                    let at_least = if page.more_counted_to_cap { "+" } else { "" };
                    println!("{}{at_least} more not shown: --cursor {next}", page.more);
                }
            }
        }
        TenantsCommand::ViewAs { tenant, reason, ttl } => {
            super::args::require(ballast::auth::operators::Role::Operator)?;
            let found = super::args::resolve_tenant(&state.system_pool, &tenant).await?;
            let (session, token) = ballast::auth::support::open(&state.system_pool, found.id, &actor(), &reason, ttl).await?;
            if json {
                println!("{}", serde_json::json!({"session": session, "token": token}));
            } else {
                println!("{token}");
                eprintln!(
                    "read-only session {} as {} until {} (GET /v1/entitlements, GET /v1/usage with Authorization: Bearer <token>); every use is audited. End it early: ballast tenants view-as-revoke {}",
                    session.id, found.name, session.expires_at.format("%H:%M UTC"), session.id
                );
            }
        }
        TenantsCommand::Usage { tenant, days } => {
            let found = super::args::resolve_tenant(&state.system_pool, &tenant).await?;
            let limits = ballast::usage::limits_of(&state.usage_deps(), found.id).await?;
            let report = tenants::usage_report::report(&state.system_pool, found.id, days, limits.as_ref()).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
                return Ok(());
            }
            let rows = report.usage.iter().map(|u| {
                let limit = report.limits.get(&u.metric).map_or_else(|| "-".to_owned(), |l| format!("{}{}", l.limit, if l.overage { " (overage billed)" } else { "" }));
                vec![u.day.to_string(), u.metric.clone(), u.quantity.to_string(), u.month_to_date.to_string(), limit]
            });
            println!("{}", super::render::table(&["day", "metric", "units", "month to date", "monthly limit"], rows));
            let rows = report.features.iter().map(|f| vec![f.day.to_string(), f.feature.clone(), f.checks.to_string()]);
            println!("{}", super::render::table(&["day", "feature", "checks"], rows));
        }
        TenantsCommand::ViewAsSessions { tenant, limit } => {
            let tenant = match &tenant {
                Some(t) => Some(super::args::resolve_tenant(&state.system_pool, t).await?.id),
                None => None,
            };
            let rows = ballast::auth::support::list(&state.system_pool, tenant, limit).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                let now = chrono::Utc::now();
                let cells = rows.iter().map(|s| {
                    let state = match (&s.revoked_by, s.expires_at > now) {
                        (Some(by), _) => format!("revoked by {by}"),
                        (None, true) => "open".into(),
                        (None, false) => "expired".into(),
                    };
                    vec![s.id.to_string(), s.tenant_id.to_string(), s.operator.clone(), state, s.expires_at.format("%Y-%m-%d %H:%M").to_string(), s.reason.clone()]
                });
                println!("{}", super::render::table(&["session", "tenant", "operator", "state", "expires", "reason"], cells));
            }
        }
        TenantsCommand::ViewAsRevoke { session } => {
            super::args::require(ballast::auth::operators::Role::Operator)?;
            let ended = ballast::auth::support::revoke(&state.system_pool, session, &actor()).await?;
            if json {
                println!("{}", serde_json::to_string(&ended)?);
            } else {
                println!("support session {} revoked: its token is refused from now on", ended.id);
            }
        }
        TenantsCommand::Show { tenant, timeline: true, since, cursor, limit } => {
            let found = super::args::resolve_tenant(&state.system_pool, &tenant).await?;
            let since = since.as_deref().map(super::args::parse_instant).transpose()?;
            let page = tenants::timeline::page(&state.system_pool, found.id, since, cursor.as_deref(), limit).await?;
            if json {
                println!("{}", serde_json::to_string(&page)?);
                return Ok(());
            }
            let rows = page.entries.iter().map(|e| {
                vec![e.at.format("%Y-%m-%d %H:%M:%S").to_string(), e.kind.clone(), e.summary.clone(), e.actor.clone().unwrap_or_else(|| "-".into())]
            });
            println!("{}", super::render::table(&["at", "kind", "what", "who"], rows));
            if let Some(next) = &page.next_cursor {
                println!("more: --cursor {next}");
            }
        }
        TenantsCommand::Show { tenant, .. } => {
            let found = super::args::resolve_tenant(&state.system_pool, &tenant).await?;
            let shown = view::view(&state.system_pool, found).await?;
            if json {
                println!("{}", serde_json::to_string(&shown)?);
                return Ok(());
            }
            print_table(std::iter::once(&shown.tenant));
            println!("billing email: {}", shown.tenant.billing_email.as_deref().unwrap_or("-"));
            println!("plan: {}", shown.plan.as_deref().unwrap_or("none"));
            match &shown.subscription {
                Some(s) => println!(
                    "subscription: {} {} (period ends {}){}",
                    s.id,
                    s.status,
                    s.current_period_end.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into()),
                    s.cancel_at.map(|t| format!(", cancels at {}", t.to_rfc3339())).unwrap_or_default()
                ),
                None => println!("subscription: none"),
            }
            for e in &shown.entitlements {
                let now = chrono::Utc::now();
                let (enabled, limit) = e.value_at(now);
                let limit = limit.map(|l| format!(" (limit {l})")).unwrap_or_default();
                let source = match (e.source_at(now), e.expires_at) {
                    ("override", Some(t)) => format!(" [override until {}]", t.format("%Y-%m-%d %H:%M")),
                    ("override", None) => " [override]".to_owned(),
                    _ => String::new(),
                };
                println!("  {:<24} {}{limit}{source}", e.feature, if enabled { "on" } else { "off" });
            }
        }
    }
    Ok(())
}
