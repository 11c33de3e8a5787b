//! `ballast runbook`: the pages and the admin jobs behind them.

use anyhow::bail;
use ballast::config::Settings;
use ballast::state::Registry;
use ballast::runbook::Progress;
use std::process::ExitCode;

use ballast::jobs::admin_runs as runs;
use ballast::state::AppState;
use clap::Subcommand;

use super::args::actor;
use super::render;

#[derive(Debug, Subcommand)]
pub(super) enum RunbookCommand {
    /// Every page: name, title, the admin job it runs.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One page, whole.
    Show {
        /// The page's name (its file name without .md).
        name: String,
    },
    /// Run a page's admin job. Without --execute it reports what it finds and what it would
    /// do; with --execute it shows that report, then acts. Every run is audited and kept
    /// (`runbook runs`). Exit status 3 when the report finds something failing.
    Run {
        /// The page's name.
        name: String,
        /// Act (after reporting what will be touched).
        #[arg(long)]
        execute: bool,
        /// A parameter of the admin job, KEY=VALUE (repeatable); values that parse as JSON
        /// (numbers, true/false) are taken as such. The page lists them.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Queue the run on the fleet instead of running it in this shell; read its report
        /// later with `ballast runbook runs show ID`.
        #[arg(long)]
        enqueue: bool,
        /// At most this many rows of each list in the report (--json has them all).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Admin job runs kept (BALLAST_ADMIN_RUN_RETENTION_DAYS), newest first; `runs show ID`
    /// prints one run's report.
    Runs {
        #[command(subcommand)]
        command: Option<RunsCommand>,
        /// Only the runs of this page's admin job.
        name: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum RunsCommand {
    /// One run: who, when, whether it acted, and its report (or its error).
    Show {
        /// The run's id (the job id `runbook run --enqueue` printed).
        id: String,
        /// At most this many rows of each list in the report.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

/// `--param k=v` pairs as a JSON object: values that parse as JSON stay typed.
pub(super) fn runbook_params(pairs: &[String]) -> anyhow::Result<serde_json::Value> {
    let mut out = serde_json::Map::new();
    for pair in pairs {
        let (k, v) = pair.split_once('=').ok_or_else(|| anyhow::anyhow!("--param {pair:?}: expected KEY=VALUE"))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_owned()));
        out.insert(k.trim().to_owned(), value);
    }
    Ok(serde_json::Value::Object(out))
}

/// The exit status of a report: 3 when it found something failing.
fn status_of(report: &serde_json::Value) -> ExitCode {
    if runs::failing_of(report) > 0 { ExitCode::from(render::FOUND_FAILING) } else { ExitCode::SUCCESS }
}

pub(super) async fn runbook(settings: Settings, command: RunbookCommand, json: bool) -> anyhow::Result<ExitCode> {
    let dir = settings.runbooks_dir.clone();
    match command {
        RunbookCommand::List { limit } => {
            let mut pages = ballast::runbook::pages(&dir)?;
            let total = pages.len();
            pages.truncate(limit);
            if json {
                println!("{}", serde_json::to_string(&pages)?);
            } else {
                let rows = pages.iter().map(|p| vec![p.name.clone(), p.admin_job.clone(), p.title.clone()]);
                println!("{}", render::table(&["name", "admin job", "title"], rows));
                if let Some(note) = render::more(pages.len(), total) {
                    println!("{note}");
                }
            }
        }
        RunbookCommand::Show { name } => {
            let page = ballast::runbook::page(&dir, &name)?;
            if json {
                println!("{}", serde_json::json!({"name": page.name, "title": page.title, "admin_job": page.admin_job, "text": page.text}));
            } else {
                print!("{}", page.text);
            }
        }
        RunbookCommand::Runs { command: Some(RunsCommand::Show { id, limit }), .. } => {
            let state = AppState::build(settings)?;
            let run = runs::find(&state.system_pool, &id).await?.ok_or_else(|| anyhow::anyhow!("no admin job run {id} (runs are kept {} days; `ballast runbook runs` lists them)", state.settings.admin_run_retention.as_secs() / 86_400))?;
            if json {
                println!("{}", serde_json::to_string(&run)?);
            } else {
                println!("{} {} by {}: {}{}", run.kind, run.id, run.actor, state_word(&run), if run.executed { ", executed" } else { ", dry run" });
                println!("queued {}{}", run.queued_at.to_rfc3339(), run.finished_at.map(|t| format!(", finished {}", t.to_rfc3339())).unwrap_or_default());
                if let Some(e) = &run.error {
                    println!("error: {}", render::truncate(e, render::CELL_CHARS * 4));
                }
                if let Some(report) = &run.report {
                    println!("{}", render::report(report, limit));
                }
            }
            return Ok(run.report.as_ref().map_or(ExitCode::SUCCESS, status_of));
        }
        RunbookCommand::Runs { command: None, name, limit } => {
            let state = AppState::build(settings)?;
            let kind = match &name {
                Some(n) => Some(ballast::runbook::page(&dir, n)?.admin_job),
                None => None,
            };
            let rows = runs::list(&state.system_pool, kind.as_deref(), limit.clamp(1, 1000)).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else if rows.is_empty() {
                println!("no admin job runs kept");
            } else {
                let table = rows.iter().map(|r| vec![r.id.clone(), r.kind.clone(), state_word(r), r.executed.to_string(), r.actor.clone(), r.queued_at.to_rfc3339()]);
                println!("{}", render::table(&["id", "admin job", "state", "executed", "actor", "queued at"], table));
                if let Some(note) = render::more(rows.len(), usize::try_from(runs::count(&state.system_pool, kind.as_deref()).await?).unwrap_or(usize::MAX)) {
                    println!("{note}");
                }
            }
        }
        RunbookCommand::Run { name, execute, params, enqueue, limit } => {
            if execute {
                // A dry run only reads; acting is an operator's.
                super::args::require(ballast::auth::operators::Role::Operator)?;
            }
            let page = ballast::runbook::page(&dir, &name)?;
            let state = AppState::build(settings)?;
            let params = runbook_params(&params)?;
            if enqueue {
                let id = ballast::runbook::enqueue(&state.queue, &state.system_pool, &page, execute, &actor(), params).await?;
                if json {
                    println!("{}", serde_json::json!({"queued": id, "kind": page.admin_job, "executed": false, "will_execute": execute}));
                } else {
                    println!("queued {} job {id} on the fleet; its report: ballast runbook runs show {id}", page.admin_job);
                }
                return Ok(ExitCode::SUCCESS);
            }
            if !state.queue.catalogue().iter().any(|p| p.kind.as_str() == page.admin_job && p.runbook.as_deref() == Some(name.as_str())) {
                bail!("{name}: its admin job {} is not in the catalogue (jobs/) naming this runbook", page.admin_job);
            }
            let registry = Registry::standard();
            if execute && !json {
                // What it will touch, then the act.
                let dry = ballast::runbook::run_here(&state, &registry, &page.admin_job, false, params.clone(), &actor(), Progress::terminal()).await?;
                println!("== {} (dry run: what --execute will touch) ==\n{}", page.admin_job, render::report(&dry, limit));
            }
            let report = ballast::runbook::run_here(&state, &registry, &page.admin_job, execute, params, &actor(), Progress::terminal()).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                eprintln!();
                let label = if execute { "executed" } else { "dry run; --execute to act" };
                println!("== {} ({label}) ==\n{}", page.admin_job, render::report(&report, limit));
                let failing = runs::failing_of(&report);
                if failing > 0 {
                    println!("FAILING: {failing} finding(s) above need attention (exit status 3)");
                }
            }
            return Ok(status_of(&report));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn state_word(run: &runs::AdminRun) -> String {
    match run.state {
        runs::RunState::Done if run.failing > 0 => format!("done, {} failing", run.failing),
        runs::RunState::Done => "done".into(),
        runs::RunState::Failed => "failed".into(),
        runs::RunState::Queued => "queued".into(),
    }
}
