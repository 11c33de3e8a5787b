//! `ballast runbook`: the pages and the admin jobs behind them.

use anyhow::bail;
use ballast::config::Settings;
use ballast::jobs::Registry;
use ballast::runbook::Progress;
use ballast::state::AppState;
use clap::Subcommand;

use super::args::actor;

#[derive(Debug, Subcommand)]
pub(super) enum RunbookCommand {
    /// Every page: name, title, the admin job it runs.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One page, whole.
    Show {
        /// The page's name (its file name without .md).
        name: String,
    },
    /// Run a page's admin job. Without --execute it reports what it finds and what it would
    /// do; with --execute it shows that report, then acts. Every run is audited.
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
        /// Queue the run on the fleet instead of running it in this shell.
        #[arg(long)]
        enqueue: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
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

pub(super) async fn runbook(settings: Settings, command: RunbookCommand) -> anyhow::Result<()> {
    let dir = settings.runbooks_dir.clone();
    match command {
        RunbookCommand::List { json } => {
            let pages = ballast::runbook::pages(&dir)?;
            if json {
                println!("{}", serde_json::to_string(&pages)?);
            } else {
                println!("{:<28} {:<20} TITLE", "NAME", "ADMIN JOB");
                for p in pages {
                    println!("{:<28} {:<20} {}", p.name, p.admin_job, p.title);
                }
            }
        }
        RunbookCommand::Show { name } => print!("{}", ballast::runbook::page(&dir, &name)?.text),
        RunbookCommand::Run { name, execute, params, enqueue, json } => {
            let page = ballast::runbook::page(&dir, &name)?;
            let state = AppState::build(settings)?;
            let policy = state
                .queue
                .catalogue()
                .iter()
                .find(|p| p.kind.as_str() == page.admin_job)
                .ok_or_else(|| anyhow::anyhow!("{name}: its admin job {} is not in the catalogue (jobs/)", page.admin_job))?;
            if policy.runbook.as_deref() != Some(name.as_str()) {
                bail!("{name}: jobs/{}.toml does not name this runbook", page.admin_job);
            }
            let params = runbook_params(&params)?;
            if enqueue {
                let payload = ballast::jobs::admin::AdminArgs::payload(execute, &actor(), params);
                let done = state.queue.enqueue(ballast::queue::EnqueueRequest::new(page.admin_job.as_str(), payload)).await?;
                println!("queued {} job {} on the fleet (ballast jobs show {} for its outcome)", page.admin_job, done.id, done.id);
                return Ok(());
            }
            let registry = Registry::standard();
            let print = |label: &str, report: &serde_json::Value| -> anyhow::Result<()> {
                if json {
                    println!("{}", serde_json::to_string(report)?);
                } else {
                    println!("== {label} ==\n{}", serde_json::to_string_pretty(report)?);
                }
                Ok(())
            };
            if execute && !json {
                // What it will touch, then the act.
                let dry = ballast::runbook::run_here(&state, &registry, &page.admin_job, false, params.clone(), &actor(), Progress::terminal()).await?;
                print(&format!("{} (dry run: what --execute will touch)", page.admin_job), &dry)?;
            }
            let report = ballast::runbook::run_here(&state, &registry, &page.admin_job, execute, params, &actor(), Progress::terminal()).await?;
            eprintln!();
            print(&format!("{}{}", page.admin_job, if execute { " (executed)" } else { " (dry run; --execute to act)" }), &report)?;
        }
    }
    Ok(())
}
