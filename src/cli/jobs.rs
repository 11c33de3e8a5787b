//! `ballast jobs`: queues, dead letters and their retry or discard.

use anyhow::bail;
use ballast::queue::dead;
use ballast::runbook::Progress;
use ballast::state::AppState;
use clap::Subcommand;

use super::args::actor;

/// Which dead letters `retry` and `discard` act on.
#[derive(Debug, clap::Args)]
pub(super) struct DeadLetters {
    /// The dead letter's id (from `ballast jobs dead`).
    id: Option<uuid::Uuid>,
    /// Bulk: only this kind.
    #[arg(long)]
    kind: Option<String>,
    /// Bulk: only those whose error contains this text.
    #[arg(long)]
    error: Option<String>,
    /// Bulk: every open dead letter matching the filters (required without an id); a dry run
    /// that lists them unless --execute.
    #[arg(long)]
    all: bool,
    /// With --all: act (without it, list what would be touched). One id acts at once.
    #[arg(long)]
    execute: bool,
}

#[derive(Debug, Subcommand)]
pub(super) enum JobsCommand {
    /// Per job kind: ready, scheduled (retries, delayed), running (in flight), open dead
    /// letters, age of the oldest ready job.
    List {
    },
    /// One job: its payload, attempt, last error and where it is (queued or dead). Takes a
    /// job id or a dead letter's id.
    Show {
        /// Job id, or dead letter id.
        id: String,
    },
    /// Open dead letters, newest first.
    Dead {
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Only those whose error contains this text.
        #[arg(long)]
        error: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Queue dead letters' jobs again with a fresh attempt count: one by id, or every open one
    /// matching --kind/--error with --all. Audited.
    Retry(DeadLetters),
    /// Close dead letters without running them (kept for the record): one by id, or every open
    /// one matching --kind/--error with --all. Audited.
    Discard(DeadLetters),
    /// Pause a job kind for the whole fleet: its jobs stay queued and no worker fetches them
    /// (runs already fetched finish) until it is resumed. Audited.
    Pause {
        /// The job kind (`ballast jobs` lists them).
        kind: String,
    },
    /// Resume a paused job kind: its workers fetch again at once. Audited.
    Resume {
        /// The job kind.
        kind: String,
    },
}

/// The dead letters a retry or discard acts on: the one named, or (with --all) every open one
/// matching the filters.
pub(super) async fn dead_selection(
    state: &AppState,
    id: Option<uuid::Uuid>,
    kind: Option<&str>,
    error: Option<&str>,
    all: bool,
) -> anyhow::Result<Vec<uuid::Uuid>> {
    match (id, all) {
        (Some(id), false) if kind.is_none() && error.is_none() => Ok(vec![id]),
        (None, true) => Ok(dead::matching(&state.system_pool, kind, error, i64::MAX).await?.into_iter().map(|d| d.id).collect()),
        _ => bail!("name one dead letter by id, or use --all (with --kind/--error to narrow it)"),
    }
}

/// A bulk retry or discard without --execute: what it would touch.
fn would_touch(verb: &str, ids: &[uuid::Uuid], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::json!({"executed": false, "would": verb, "dead_letters": ids}));
    } else {
        println!("dry run: would {verb} {} dead letters; run again with --execute to act", ids.len());
    }
    Ok(())
}

pub(super) async fn jobs(state: AppState, command: JobsCommand, json: bool) -> anyhow::Result<()> {
    match command {
        JobsCommand::List {} => {
            let stats = state.queue.stats().await?;
            let dead = dead::open_counts(&state.system_pool).await?;
            if json {
                let rows: Vec<_> = stats
                    .iter()
                    .map(|s| {
                        let mut v = serde_json::to_value(s).unwrap_or_default();
                        v["dead"] = serde_json::json!(dead.get(&s.kind).copied().unwrap_or(0));
                        v
                    })
                    .collect();
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                let rows = stats.iter().map(|s| {
                    let age = s.oldest_ready_age_secs.map(|a| format!("{a:.1}")).unwrap_or_else(|| "-".into());
                    let d = dead.get(&s.kind).copied().unwrap_or(0);
                    vec![s.kind.to_string(), s.ready.to_string(), s.scheduled.to_string(), s.running.to_string(), d.to_string(), age]
                });
                println!("{}", super::render::table(&["kind", "ready", "scheduled", "running", "dead", "oldest (s)"], rows));
            }
        }
        JobsCommand::Show { id } => {
            let found = ballast::jobs::lookup::find(&state.queue, &state.system_pool, &state.tenant_pool, (ballast::state::standard_intakes(), &state), &id).await?;
            let Some(found) = found else {
                bail!("no job {id}: not queued, not a dead letter, and no tracked status (statuses are kept 7 days after a job finishes; `ballast jobs dead` lists dead letters)");
            };
            use ballast::jobs::lookup::Place;
            // A tracked job shows what the app reads at GET /v1/jobs/{id}, in every state.
            let mut shown = match &found.place {
                Place::Tracked(status) => serde_json::to_value(status)?,
                _ => serde_json::json!({}),
            };
            let place = if matches!(found.place, Place::Tracked(_)) { "tracked" } else { found.place.word() };
            for (k, v) in [("where", place.into()), ("job_id", found.job_id.into()), ("kind", found.kind.into()), ("tenant", serde_json::to_value(found.tenant)?),
                ("attempt", found.attempt.into()), ("last_error", serde_json::to_value(found.last_error)?), ("history", serde_json::to_value(&found.history)?)] {
                shown[k] = v;
            }
            if let Place::Dead { dead_letter } = &found.place {
                shown["dead_letter"] = dead_letter.to_string().into();
            }
            if let Some(payload) = found.payload {
                shown["payload"] = payload;
            }
            if json {
                println!("{}", serde_json::to_string(&shown)?);
            } else {
                println!("{}", super::render::report(&shown, 50));
            }
        }
        JobsCommand::Dead { kind, error, limit } => {
            let rows = dead::matching(&state.system_pool, kind.as_deref(), error.as_deref(), limit).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else if rows.is_empty() {
                println!("no open dead letters");
            } else {
                let cells = rows.iter().map(|r| vec![r.id.to_string(), r.kind.clone(), r.attempts.to_string(), r.failed_at.to_rfc3339(), r.error.clone()]);
                println!("{}", super::render::table(&["id", "kind", "attempts", "failed at", "error"], cells));
                if let Some(note) = super::render::more(rows.len(), usize::try_from(dead::count_matching(&state.system_pool, kind.as_deref(), error.as_deref()).await?).unwrap_or(usize::MAX)) {
                    println!("{note}");
                }
            }
        }
        JobsCommand::Retry(DeadLetters { id, kind, error, all, execute }) => {
            let ids = dead_selection(&state, id, kind.as_deref(), error.as_deref(), all).await?;
            if all && !execute {
                return would_touch("retry", &ids, json);
            }
            let filter = serde_json::json!({"kind": kind, "error": error});
            let jobs = dead::retry_audited(&state.system_pool, &state.queue, &ids, &actor(), filter, &Progress::terminal()).await?;
            if json {
                println!("{}", serde_json::json!({"executed": true, "retried": ids, "job_ids": jobs}));
            } else {
                println!("re-queued {} dead letters", ids.len());
            }
        }
        JobsCommand::Pause { kind } => {
            super::args::require(ballast::auth::operators::Role::Operator)?;
            ballast::jobs::queue_control::set_paused(&state.queue, &state.system_pool, &kind, true, &actor()).await?;
            if json {
                println!("{}", serde_json::json!({"kind": kind, "paused": true}));
            } else {
                println!("{kind} paused: its jobs stay queued until `ballast jobs resume {kind}`");
            }
        }
        JobsCommand::Resume { kind } => {
            super::args::require(ballast::auth::operators::Role::Operator)?;
            ballast::jobs::queue_control::set_paused(&state.queue, &state.system_pool, &kind, false, &actor()).await?;
            if json {
                println!("{}", serde_json::json!({"kind": kind, "paused": false}));
            } else {
                println!("{kind} resumed");
            }
        }
        JobsCommand::Discard(DeadLetters { id, kind, error, all, execute }) => {
            let ids = dead_selection(&state, id, kind.as_deref(), error.as_deref(), all).await?;
            if all && !execute {
                return would_touch("discard", &ids, json);
            }
            let n = dead::discard_audited(&state.system_pool, &ids, &actor(), serde_json::json!({"kind": kind, "error": error})).await?;
            if json {
                println!("{}", serde_json::json!({"executed": true, "discarded": n}));
            } else {
                println!("discarded {n} dead letters (kept for the record, no longer open)");
            }
        }
    }
    Ok(())
}

