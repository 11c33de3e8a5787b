//! `ballast dunning` and `ballast usage`: the daily dunning run and the usage flush, by hand.

use ballast::config::Settings;
use ballast::newtypes::TenantId;
use ballast::state::AppState;
use clap::Subcommand;

use super::args::parse_instant;

#[derive(Debug, Subcommand)]
pub(super) enum UsageCommand {
    /// Move usage items recorded before this minute into the ledger (exactly once) and report
    /// pending ledger rows to Stripe, now. jobs/usage.flush.toml runs this every minute; it is
    /// safe to run at any time.
    Flush {
        /// Also flush items recorded in the current minute (safe: each item is flushed once).
        #[arg(long)]
        all: bool,
    },
    /// A tenant's usage ledger, newest minute first: what was flushed, and whether Stripe has
    /// it (reported), will get it (pending) or refused it (dead, with Stripe's reason).
    Ledger {
        /// The tenant (its id or your app's external id).
        #[arg(long)]
        tenant: String,
        /// At most this many rows.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum DunningCommand {
    /// Every due step of every open case (emails, invoice retries, restriction, final action):
    /// a dry run that lists them unless --execute, which does each once. Safe to repeat: each
    /// step is keyed by (case, stage).
    Run {
        /// Act as of this day or time (2026-12-01 or RFC 3339) instead of now.
        #[arg(long)]
        as_of: Option<String>,
        /// Only this tenant's cases.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Act; without it, report what would be done and write and call nothing.
        #[arg(long)]
        execute: bool,
    },
}

/// `ballast dunning run`.
pub(super) async fn dunning(settings: Settings, as_of: Option<String>, tenant: Option<TenantId>, execute: bool, json: bool) -> anyhow::Result<()> {
    let as_of = match as_of {
        None => chrono::Utc::now(),
        Some(raw) => parse_instant(&raw)?,
    };
    let state = AppState::build(settings)?;
    let report = ballast::dunning::run(&state.dunning_deps(), as_of, tenant, !execute).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "dunning as of {}{}: {} effects consumed, {} open cases, {} actions",
            as_of.to_rfc3339(),
            if execute { "" } else { " (dry run; --execute to act)" },
            report.effects_consumed,
            report.cases,
            report.actions.len()
        );
        let rows = report.actions.iter().map(|a| vec![a.tenant.to_string(), a.invoice.clone(), a.stage.to_string(), a.outcome.to_string()]);
        if !report.actions.is_empty() {
            println!("{}", super::render::table(&["tenant", "invoice", "stage", "outcome"], rows));
        }
    }
    Ok(())
}

/// `ballast usage ledger`.
pub(super) async fn usage_ledger(settings: Settings, tenant: &str, limit: i64, json: bool) -> anyhow::Result<()> {
    let state = AppState::build(settings)?;
    let tenant = super::args::resolve_tenant(&state.system_pool, tenant).await?;
    let (rows, total) = ballast::usage::ledger::entries(&state.tenant_pool, tenant.id, limit.clamp(1, 1000)).await?;
    if json {
        println!("{}", serde_json::json!({"tenant": tenant.id, "rows": rows, "total": total}));
        return Ok(());
    }
    if rows.is_empty() {
        println!("no usage flushed for {} yet", tenant.name);
        return Ok(());
    }
    let cells = rows.iter().map(|r| {
        let state = match (&r.report_error, r.reported_at) {
            (Some(e), _) => format!("{} ({e})", r.report_status),
            (None, Some(at)) => format!("{} {}", r.report_status, at.format("%Y-%m-%d %H:%M")),
            (None, None) => r.report_status.clone(),
        };
        vec![r.usage_minute.format("%Y-%m-%d %H:%M").to_string(), r.metric.clone(), r.quantity.to_string(), state]
    });
    println!("{}", super::render::table(&["minute", "metric", "units", "at Stripe"], cells));
    if let Some(note) = super::render::more(rows.len(), usize::try_from(total).unwrap_or(usize::MAX)) {
        println!("{note}");
    }
    Ok(())
}

/// `ballast usage flush`.
pub(super) async fn usage_flush(settings: Settings, all: bool, json: bool) -> anyhow::Result<()> {
    let state = AppState::build(settings)?;
    let r = ballast::usage::flush::run(&state.usage_deps(), chrono::Utc::now(), all).await?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("flushed {} batches of items into {} ledger rows; reported {} to Stripe, {} refused", r.batches, r.ledger_rows, r.reported, r.dead);
    }
    Ok(())
}
