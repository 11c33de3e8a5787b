//! `ballast stripe-events` (formerly `webhooks`): what happened to the Stripe events Ballast
//! received, without SQL.

use anyhow::bail;
use ballast::state::AppState;
use ballast::stripe::inbox::view::{self, Filter, STATUSES};
use clap::Subcommand;

use super::render;

#[derive(Debug, Subcommand)]
pub(super) enum StripeEventsCommand {
    /// Received events, newest first: type, status, tenant, attempts, last error.
    List {
        /// Only this status: received, queued, retrying, processed, ignored, unmatched (parked
        /// until its customer has a tenant) or failed (dead-lettered: see `stripe-events show`).
        #[arg(long)]
        status: Option<String>,
        /// Only this event type (e.g. customer.subscription.updated).
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Only this tenant's events.
        #[arg(long)]
        tenant: Option<uuid::Uuid>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One event: status, tenant, attempts, last error, the object it carries and the billing
    /// effects it wrote (what dunning and email act on).
    Show {
        /// Stripe's event id (evt_…).
        id: String,
    },
}

fn tenant_cell(t: Option<uuid::Uuid>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| t.to_string())
}

pub(super) async fn stripe_events(state: AppState, command: StripeEventsCommand, json: bool) -> anyhow::Result<()> {
    // System pool: operators look across tenants.
    let pool = &state.system_pool;
    match command {
        StripeEventsCommand::List { status, event_type, tenant, limit } => {
            if let Some(s) = &status
                && !STATUSES.contains(&s.as_str())
            {
                bail!("--status {s:?}: expected one of {}", STATUSES.join(", "));
            }
            let filter = Filter { status, event_type, tenant };
            let rows = view::list(pool, &filter, limit.clamp(1, 1000)).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else if rows.is_empty() {
                println!("no events match");
            } else {
                let cells = rows.iter().map(|e| {
                    vec![e.id.clone(), e.event_type.clone(), e.status.clone(), tenant_cell(e.tenant_id), e.attempts.to_string(), e.received_at.to_rfc3339(), e.last_error.clone().unwrap_or_default()]
                });
                println!("{}", render::table(&["id", "type", "status", "tenant", "attempts", "received", "last error"], cells));
                if let Some(note) = render::more(rows.len(), usize::try_from(view::count(pool, &filter).await?).unwrap_or(usize::MAX)) {
                    println!("{note}");
                }
            }
        }
        StripeEventsCommand::Show { id } => {
            let Some((event, effects)) = view::show(pool, &id).await? else {
                bail!("no event {id} in the inbox (processed events are kept BALLAST_INBOX_RETENTION_SECS; `ballast stripe-events list` lists them)");
            };
            if json {
                println!("{}", serde_json::json!({"event": event, "effects": effects}));
            } else {
                println!("{} {}: {}", event.id, event.event_type, event.status);
                println!("tenant:    {}", tenant_cell(event.tenant_id));
                println!("customer:  {}", event.customer_id.as_deref().unwrap_or("-"));
                println!("object:    {}", event.object_id.as_deref().unwrap_or("-"));
                println!("attempts:  {} failed", event.attempts);
                println!("received:  {}", event.received_at.to_rfc3339());
                println!("processed: {}", event.processed_at.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339()));
                if let Some(e) = &event.last_error {
                    println!("last error: {}", render::truncate(e, render::CELL_CHARS * 4));
                }
                if let Some(d) = event.dead_letter {
                    println!("dead letter {d}: `ballast jobs retry {d}` runs it again once the cause is fixed");
                }
                if effects.is_empty() {
                    println!("effects:   none");
                } else {
                    let cells = effects.iter().map(|f| vec![f.kind.clone(), f.subject_id.clone(), f.created_at.to_rfc3339(), f.consumed_at.map_or_else(|| "not yet".to_owned(), |t| t.to_rfc3339())]);
                    println!("effects:\n{}", render::table(&["kind", "subject", "written", "consumed"], cells));
                }
            }
        }
    }
    Ok(())
}
