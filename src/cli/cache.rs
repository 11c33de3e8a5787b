//! `ballast cache`: warm and reshape the cache.

use ballast::jobs::Registry;
use ballast::runbook::Progress;
use ballast::state::AppState;
use clap::Subcommand;

use super::args::actor;

#[derive(Debug, Subcommand)]
pub(super) enum CacheCommand {
    /// Fill the plan catalogue, feature flags and every active tenant's entitlements now (the
    /// cache.warm job, run here). Safe at any time.
    Warm {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// After a deploy that bumped a cached family's shape version: count keys per version; with
    /// --execute, warm the new shape and remove every old version (SCAN in batches, audited).
    Reshape {
        /// Act; without it, count only.
        #[arg(long)]
        execute: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn cache(state: AppState, command: CacheCommand) -> anyhow::Result<()> {
    match command {
        CacheCommand::Warm { json } => {
            let r = ballast::billing::warm::run(state.warm_sources()).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "warmed: catalogue {}, flags {}, entitlements of {} tenants in {} batches: {} stored, {} busy elsewhere, {} invalidated meanwhile",
                    r.catalogue.stored, r.flags.stored, r.tenants, r.batches, r.entitlements.stored, r.entitlements.busy, r.entitlements.lost
                );
            }
        }
        CacheCommand::Reshape { execute, json } => {
            // The admin job behind runbooks/cache-reshape.md, run here and audited.
            let r = ballast::runbook::run_here(&state, &Registry::standard(), "cache.reshape", execute, serde_json::json!({}), &actor(), Progress::terminal()).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("{:<14} {:>6} {:>10} {:>10} {:>10}", "FAMILY", "SHAPE", "CURRENT", "OLD", "DELETED");
                for f in r["families"].as_array().into_iter().flatten() {
                    println!("{:<14} {:>6} {:>10} {:>10} {:>10}", f["family"].as_str().unwrap_or("?"), f["shape"], f["current"], f["old"], f["deleted"]);
                }
                if !execute {
                    println!("dry run: nothing changed; run again with --execute to warm and remove the old versions");
                }
            }
        }
    }
    Ok(())
}
