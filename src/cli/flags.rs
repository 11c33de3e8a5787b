//! `ballast flags`: feature flags, listed and set; audited.

use ballast::state::AppState;
use clap::Subcommand;

use super::args::actor;

#[derive(Debug, Subcommand)]
pub(super) enum FlagsCommand {
    /// Every flag with its rollout, by name.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Create or change a flag. Unset options keep their value (a new flag: off, 100 %).
    Set {
        /// Flag name: a-z, 0-9, '_', '.', '-'.
        name: String,
        /// Switch it on.
        #[arg(long, conflicts_with = "off")]
        on: bool,
        /// Switch it off for everyone.
        #[arg(long)]
        off: bool,
        /// Share of tenants it is on for, 0 to 100 (stable per tenant; raising it only adds).
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        rollout: Option<u8>,
        /// What it switches.
        #[arg(long)]
        description: Option<String>,
    },
}

pub(super) async fn flags(state: AppState, command: FlagsCommand, json: bool) -> anyhow::Result<()> {
    match command {
        FlagsCommand::List { limit } => {
            // System pool: operators see every flag (the table is global).
            let all = ballast::flags::list(&state.system_pool.0).await?;
            let total = all.len();
            let shown = &all[..total.min(limit)];
            if json {
                println!("{}", serde_json::to_string(shown)?);
            } else {
                let rows = shown.iter().map(|f| vec![f.name.clone(), f.enabled.to_string(), format!("{}%", f.rollout_percent), f.updated_at.to_rfc3339(), f.description.clone()]);
                println!("{}", super::render::table(&["flag", "enabled", "rollout", "updated", "description"], rows));
                if let Some(note) = super::render::more(shown.len(), total) {
                    println!("{note}");
                }
            }
        }
        FlagsCommand::Set { name, on, off, rollout, description } => {
            let enabled = if on { Some(true) } else if off { Some(false) } else { None };
            let change = ballast::flags::FlagChange { enabled, rollout_percent: rollout, description };
            let f = ballast::flags::set(&state.system_pool, &state.cache, &name, change, &actor()).await?;
            if json {
                println!("{}", serde_json::to_string(&f)?);
            } else {
                println!("{}: {} at {}% of tenants", f.name, if f.enabled { "on" } else { "off" }, f.rollout_percent);
            }
        }
    }
    Ok(())
}
