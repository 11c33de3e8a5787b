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
    /// List tenants, oldest first.
    List {
        /// How many (at most 1000).
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show a tenant, by its id or your app's external id, with its billing standing.
    Show {
        /// A tenant id (UUID) or an external id.
        tenant: String,
    },
}

/// The tenants as an aligned table.
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
        TenantsCommand::List { limit } => {
            let rows = tenants::list(&state.system_pool, None, limit.clamp(1, 1000)).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                print_table(rows.iter());
                if let Some(note) = super::render::more(rows.len(), usize::try_from(tenants::count(&state.system_pool).await?).unwrap_or(usize::MAX)) {
                    println!("{note}");
                }
            }
        }
        TenantsCommand::Show { tenant } => {
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
                let limit = e.limit.map(|l| format!(" (limit {l})")).unwrap_or_default();
                println!("  {:<24} {}{limit}", e.feature, if e.enabled { "on" } else { "off" });
            }
        }
    }
    Ok(())
}
