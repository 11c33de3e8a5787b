//! `ballast emails`: the email outbox, listed and redriven.

use ballast::state::AppState;
use ballast::email::outbox::{self, OutboxStatus};
use clap::Subcommand;

use super::args::actor;

#[derive(Debug, Subcommand)]
pub(super) enum EmailsCommand {
    /// Outbox rows, newest first.
    List {
        /// Only pending, sent or dead rows.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Queue the send job of pending rows (and, with --dead, of dead rows set back to pending).
    /// Without --execute it only counts.
    Redrive {
        /// Also retry dead rows (after fixing what made the relay refuse them).
        #[arg(long)]
        dead: bool,
        /// Act; without it, report only.
        #[arg(long)]
        execute: bool,
    },
}

pub(super) async fn emails(state: AppState, command: EmailsCommand) -> anyhow::Result<()> {
    // System pool: the outbox is looked at across tenants by operators.
    let pool = &state.system_pool;
    match command {
        EmailsCommand::List { status, limit, json } => {
            let status = match &status {
                None => None,
                Some(s) => Some(OutboxStatus::parse(s).ok_or_else(|| anyhow::anyhow!("--status {s:?}: expected pending, sent or dead"))?),
            };
            let rows = outbox::list(pool, status, limit).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!("{:<36} {:<18} {:<8} {:>8} {:<25} LAST ERROR", "ID", "TEMPLATE", "STATUS", "ATTEMPTS", "CREATED");
                for r in rows {
                    println!(
                        "{:<36} {:<18} {:<8} {:>8} {:<25} {}",
                        r.id,
                        r.template,
                        r.status,
                        r.attempts,
                        r.created_at.to_rfc3339(),
                        r.last_error.unwrap_or_default()
                    );
                }
            }
        }
        EmailsCommand::Redrive { dead, execute } => {
            let rows = outbox::redrivable(pool, dead).await?;
            let which = if dead { "pending + dead" } else { "pending" };
            if !execute {
                println!("would re-drive {} emails ({which}); run again with --execute", rows.len());
                return Ok(());
            }
            let mut conn = pool.0.acquire().await?;
            ballast::audit::record(&mut conn, None, &actor(), "emails.redrive", serde_json::json!({"dead": dead, "rows": rows.len()}), ballast::audit::Outcome::Ok).await?;
            outbox::redrive(pool, &state.queue, &rows).await?;
            println!("re-drove {} emails", rows.len());
        }
    }
    Ok(())
}
