//! `ballast dunning` and `ballast usage`: the daily dunning run and the usage flush, by hand.

use ballast::config::Settings;
use ballast::domain::TenantId;
use ballast::state::AppState;
use clap::Subcommand;

use super::args::parse_instant;

#[derive(Debug, Subcommand)]
pub(super) enum UsageCommand {
    /// Move closed usage windows into the ledger (exactly once) and report pending ledger rows
    /// to Stripe, now. The catalogue runs this every minute; it is safe to run at any time.
    Flush {
        /// Also flush the current minute's window (safe: later writes start a fresh one).
        #[arg(long)]
        all: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum DunningCommand {
    /// Do every due step of every open case once (emails, invoice retries, restriction, final
    /// action). Safe to repeat: each step is keyed by (case, stage).
    Run {
        /// Act as of this day or time (2026-12-01 or RFC 3339) instead of now.
        #[arg(long)]
        as_of: Option<String>,
        /// Only this tenant's cases.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Report what would be done; write and call nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `ballast dunning run`.
pub(super) async fn dunning(settings: Settings, as_of: Option<String>, tenant: Option<TenantId>, dry_run: bool, json: bool) -> anyhow::Result<()> {
    let as_of = match as_of {
        None => chrono::Utc::now(),
        Some(raw) => parse_instant(&raw)?,
    };
    let state = AppState::build(settings)?;
    let report = ballast::dunning::run(&state.dunning_deps(), as_of, tenant, dry_run).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "dunning as of {}{}: {} effects consumed, {} open cases, {} actions",
            as_of.to_rfc3339(),
            if dry_run { " (dry run)" } else { "" },
            report.effects_consumed,
            report.cases,
            report.actions.len()
        );
        for a in &report.actions {
            println!("  {} {} {:<12} {}", a.tenant, a.invoice, a.stage, a.outcome);
        }
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
        println!("flushed {} windows into {} ledger rows; reported {} to Stripe, {} refused", r.windows, r.ledger_rows, r.reported, r.dead);
    }
    Ok(())
}
