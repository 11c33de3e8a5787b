//! `ballast cache`: warm and reshape the cache.

use ballast::state::Registry;
use ballast::runbook::Progress;
use ballast::state::AppState;
use clap::Subcommand;

use super::args::actor;

#[derive(Debug, Subcommand)]
pub(super) enum CacheCommand {
    /// Fill the plan catalogue, feature flags and every active tenant's entitlements now (the
    /// cache.warm job, run here). Safe at any time.
    Warm {
    },
    /// After a deploy that bumped a cached family's shape version: count keys per version; with
    /// --execute, warm the new shape and remove every old version (SCAN in batches, audited).
    Reshape {
        /// Act; without it, count only.
        #[arg(long)]
        execute: bool,
    },
}

pub(super) async fn cache(state: AppState, command: CacheCommand, json: bool) -> anyhow::Result<()> {
    match command {
        CacheCommand::Warm {} => {
            let r = ballast::billing::warm::run(&state.warm_sources()).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "warmed: catalogue {}, flags {}, entitlements of {} tenants in {} batches: {} stored, {} busy elsewhere, {} invalidated meanwhile",
                    r.catalogue.stored, r.flags.stored, r.tenants, r.batches, r.entitlements.stored, r.entitlements.busy, r.entitlements.lost
                );
            }
        }
        CacheCommand::Reshape { execute } => {
            // The admin job behind runbooks/cache-reshape.md, run here and audited.
            let r = ballast::runbook::run_here(&state, &Registry::standard(), "cache.reshape", execute, serde_json::json!({}), &actor(), Progress::terminal()).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let rows = r["families"].as_array().into_iter().flatten().map(|f| {
                    vec![f["family"].as_str().unwrap_or("?").to_owned(), f["shape"].to_string(), f["current"].to_string(), f["old"].to_string(), f["deleted"].to_string()]
                });
                println!("{}", super::render::table(&["family", "shape", "current", "old", "deleted"], rows));
                if !execute {
                    println!("dry run: nothing changed; run again with --execute to warm and remove the old versions");
                }
            }
        }
    }
    Ok(())
}
