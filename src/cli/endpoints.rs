//! `ballast endpoints` and `ballast deliveries`: the outbound webhook endpoints tenants
//! registered and each delivery's log, as the tenant reads them through the API, found across
//! tenants by on-call; `deliveries resend` sends a finished one again (audited).

use anyhow::{Context, bail};
use ballast::state::AppState;
use ballast::webhooks_out::deliveries::{self, DeliveryStatus, LogFilter};
use ballast::webhooks_out::endpoints;
use clap::Subcommand;

use super::args::{actor, resolve_tenant};

#[derive(Debug, Subcommand)]
pub(super) enum EndpointsCommand {
    /// A tenant's endpoints, oldest first: URL, event types, whether disabled and why.
    List {
        /// The tenant (its id or your app's external id).
        #[arg(long)]
        tenant: String,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One endpoint and its latest deliveries.
    Show {
        /// The endpoint's id.
        id: uuid::Uuid,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum DeliveriesCommand {
    /// An endpoint's deliveries, newest first, each with its attempts.
    List {
        /// The endpoint's id.
        #[arg(long)]
        endpoint: uuid::Uuid,
        /// Only pending, delivered, failed or skipped ones.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One delivery with every attempt and the start of each answer.
    Show {
        /// The delivery's id (`whd_…` job ids work too).
        id: String,
    },
    /// Send a finished delivery's message to its endpoint again, as a new delivery with the
    /// same webhook-id (the receiver can tell). Audited.
    Resend {
        /// The delivery's id.
        id: String,
    },
}

/// A delivery id, or a `whd_…` job id naming one.
fn delivery_id(raw: &str) -> anyhow::Result<uuid::Uuid> {
    ballast::webhooks_out::messages::delivery_of(raw)
        .or_else(|| raw.parse().ok())
        .with_context(|| format!("{raw:?} is not a delivery id (a UUID, or its job id whd_…)"))
}

pub(super) async fn endpoints(state: AppState, command: EndpointsCommand, json: bool) -> anyhow::Result<()> {
    let (tenant, page) = match &command {
        EndpointsCommand::List { tenant, limit } => {
            let tenant = resolve_tenant(&state.system_pool, tenant).await?.id;
            (tenant, endpoints::list(&state.tenant_pool, tenant, None, (*limit).clamp(1, 100)).await?)
        }
        EndpointsCommand::Show { id } => {
            let Some(tenant) = endpoints::tenant_of(&state.system_pool, *id).await? else { bail!("no endpoint {id}") };
            match endpoints::get(&state.tenant_pool, tenant, *id).await? {
                Some((found, false)) => (tenant, endpoints::Page { data: vec![found], has_more: false }),
                Some((_, true)) => bail!("endpoint {id} was deleted (its delivery log stays: `ballast deliveries list --endpoint {id}`)"),
                None => bail!("no endpoint {id}"),
            }
        }
    };
    let recent = match &command {
        EndpointsCommand::Show { id } => deliveries::list(&state.tenant_pool, tenant, *id, LogFilter::default(), 10).await?.map(|p| p.data).unwrap_or_default(),
        EndpointsCommand::List { .. } => Vec::new(),
    };
    if json {
        println!("{}", serde_json::json!({"tenant": tenant, "data": page.data, "has_more": page.has_more, "recent_deliveries": recent}));
        return Ok(());
    }
    let cells = page.data.iter().map(|e| {
        let state = match (&e.disabled_at, &e.disabled_reason) {
            (Some(_), Some(why)) => format!("disabled: {why}"),
            (Some(_), None) => "disabled".into(),
            _ => "enabled".into(),
        };
        vec![e.id.to_string(), e.url.clone(), e.event_types.join(","), state]
    });
    println!("{}", super::render::table(&["id", "url", "event types", "state"], cells));
    if page.has_more {
        println!("… more not shown (--limit N, or --json)");
    }
    if !recent.is_empty() {
        println!("latest deliveries:");
        print_deliveries(&recent);
    }
    Ok(())
}

fn print_deliveries(log: &[deliveries::DeliveryLog]) {
    let cells = log.iter().map(|d| {
        vec![d.id.to_string(), d.event_type.clone(), d.status.as_str().to_owned(), d.attempts.to_string(), d.created_at.format("%Y-%m-%d %H:%M:%S").to_string(), d.last_error.clone().unwrap_or_default()]
    });
    println!("{}", super::render::table(&["id", "type", "status", "attempts", "queued", "last error"], cells));
}

pub(super) async fn deliveries(state: AppState, command: DeliveriesCommand, json: bool) -> anyhow::Result<()> {
    match command {
        DeliveriesCommand::List { endpoint, status, limit } => {
            let status = match status.as_deref() {
                None => None,
                Some(s) => Some(DeliveryStatus::from_name(s).with_context(|| format!("--status {s:?}: expected pending, delivered, failed or skipped"))?),
            };
            let Some(tenant) = endpoints::tenant_of(&state.system_pool, endpoint).await? else { bail!("no endpoint {endpoint}") };
            let filter = LogFilter { status, ..LogFilter::default() };
            let page = deliveries::list(&state.tenant_pool, tenant, endpoint, filter, limit.clamp(1, 100)).await?.with_context(|| format!("no endpoint {endpoint}"))?;
            if json {
                println!("{}", serde_json::json!({"data": page.data, "has_more": page.has_more}));
            } else if page.data.is_empty() {
                println!("no deliveries");
            } else {
                print_deliveries(&page.data);
                if page.has_more {
                    println!("… more not shown (--limit N, or --json)");
                }
            }
        }
        DeliveriesCommand::Show { id } => {
            let id = delivery_id(&id)?;
            let Some((tenant, endpoint)) = deliveries::located(&state.system_pool, id).await? else { bail!("no delivery {id}") };
            let page = deliveries::list(&state.tenant_pool, tenant, endpoint, LogFilter { only: Some(id), ..LogFilter::default() }, 1).await?;
            let Some(one) = page.and_then(|p| p.data.into_iter().next()) else { bail!("no delivery {id}") };
            if json {
                println!("{}", serde_json::to_string(&one)?);
            } else {
                println!("{}", super::render::report(&serde_json::to_value(&one)?, 50));
            }
        }
        DeliveriesCommand::Resend { id } => {
            let id = delivery_id(&id)?;
            let Some((tenant, endpoint)) = deliveries::located(&state.system_pool, id).await? else { bail!("no delivery {id}") };
            let fresh = deliveries::resend(&state.tenant_pool, tenant, endpoint, id).await?;
            let mut tx = state.system_pool.0.begin().await?;
            let params = serde_json::json!({"delivery": id, "new_delivery": fresh, "endpoint": endpoint});
            ballast::audit::record(&mut tx, Some(tenant), &actor(), "deliveries.resend", params, ballast::audit::Outcome::Ok).await?;
            tx.commit().await?;
            // Committed: a lost push is queued by the delivery sweep.
            if let Err(e) = ballast::webhooks_out::messages::push(&state.queue, tenant, &[fresh]).await {
                eprintln!("ballast: re-send recorded; its job is queued by the sweep ({e})");
            }
            let job = ballast::webhooks_out::messages::job_id(fresh);
            if json {
                println!("{}", serde_json::json!({"delivery_id": fresh, "job_id": job}));
            } else {
                println!("re-sent as delivery {fresh} (job {job}); follow it with `ballast deliveries show {fresh}`");
            }
        }
    }
    Ok(())
}
