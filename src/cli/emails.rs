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

pub(super) async fn emails(state: AppState, command: EmailsCommand, json: bool) -> anyhow::Result<()> {
    // System pool: the outbox is looked at across tenants by operators.
    let pool = &state.system_pool;
    match command {
        EmailsCommand::List { status, limit } => {
            let status = match &status {
                None => None,
                Some(s) => Some(OutboxStatus::parse(s).ok_or_else(|| anyhow::anyhow!("--status {s:?}: expected pending, sent or dead"))?),
            };
            let rows = outbox::list(pool, status, limit).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                let shown = rows.len();
                let cells = rows.into_iter().map(|r| {
                    vec![r.id.to_string(), r.template.to_string(), r.status.to_string(), r.attempts.to_string(), r.created_at.to_rfc3339(), r.last_error.unwrap_or_default()]
                });
                println!("{}", super::render::table(&["id", "template", "status", "attempts", "created", "last error"], cells));
                if let Some(note) = super::render::more(shown, usize::try_from(outbox::count(pool, status).await?).unwrap_or(usize::MAX)) {
                    println!("{note}");
                }
            }
        }
        EmailsCommand::Redrive { dead, execute } => {
            let rows = outbox::redrivable(pool, dead).await?;
            let which = if dead { "pending + dead" } else { "pending" };
            if !execute {
                if json {
                    println!("{}", serde_json::json!({"executed": false, "emails": rows.len(), "dead_included": dead}));
                } else {
                    println!("dry run: would re-drive {} emails ({which}); run again with --execute", rows.len());
                }
                return Ok(());
            }
            let mut conn = pool.0.acquire().await?;
            ballast::audit::record(&mut conn, None, &actor(), "emails.redrive", serde_json::json!({"dead": dead, "rows": rows.len()}), ballast::audit::Outcome::Ok).await?;
            outbox::redrive(pool, &state.queue, &rows).await?;
            if json {
                println!("{}", serde_json::json!({"executed": true, "emails": rows.len(), "dead_included": dead}));
            } else {
                println!("re-drove {} emails", rows.len());
            }
        }
    }
    Ok(())
}
