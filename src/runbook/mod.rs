//! Runbooks: one page per incident in runbooks/, each backed by one admin job (its catalogue
//! entry names the page in `runbook`). `ballast runbook list | show NAME` prints the pages;
//! `ballast runbook run NAME` runs the page's admin job: a dry run that reports by default,
//! `--execute` to act, in the CLI's own process or (`--enqueue`) on the fleet. Every run is
//! audited with who, when, its parameters and its outcome.

use crate::assets::ConfigDir;

use serde::Serialize;

pub use crate::jobs::Progress;
pub use crate::jobs::admin::{Admin, AdminArgs, AdminJob, NoParams};
use crate::jobs::{JobContext, JobError, JobReport};

/// A runbook that cannot be read or is not what the layout says.
#[derive(Debug, thiserror::Error)]
pub enum RunbookError {
    /// The folder or a page could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// No page of that name.
    #[error("no runbook named {0:?}; `ballast runbook list` shows them")]
    Unknown(String),
    /// A page without its admin-job line.
    #[error("{0}: no \"**Admin job:** `kind`\" line")]
    NoAdminJob(String),
    /// A page whose admin job's catalogue entry does not name the page back.
    #[error("{0}")]
    NotInCatalogue(String),
    /// The queue refused the run.
    #[error("queue: {0}")]
    Queue(#[from] crate::queue::QueueError),
    /// The run could not be kept.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// One page.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page {
    /// File name without `.md`: what `ballast runbook run` takes.
    pub name: String,
    /// The first heading.
    pub title: String,
    /// The admin job the page runs.
    pub admin_job: String,
    /// The whole page.
    #[serde(skip)]
    pub text: String,
}

/// Sections every page has, in order of use at 3 AM.
pub const SECTIONS: [&str; 5] = ["## Symptom", "## What to look at", "## The command", "## What it reports and does", "## Rollback"];

/// Every page in `dir` (README.md excepted), by name.
pub fn pages(dir: &ConfigDir) -> Result<Vec<Page>, RunbookError> {
    let files = dir.files("md").map_err(|(path, source)| RunbookError::Read { path: path.display().to_string(), source })?;
    let mut out = Vec::new();
    for (path, text) in files {
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else { continue };
        if name == "README" {
            continue;
        }
        let title = text.lines().find_map(|l| l.strip_prefix("# ")).unwrap_or(&name).trim().to_owned();
        let admin_job = text
            .lines()
            .find_map(|l| l.strip_prefix("**Admin job:** `"))
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
            .ok_or_else(|| RunbookError::NoAdminJob(path.display().to_string()))?;
        out.push(Page { name, title, admin_job, text });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The page named `name`.
pub fn page(dir: &ConfigDir, name: &str) -> Result<Page, RunbookError> {
    pages(dir)?.into_iter().find(|p| p.name == name).ok_or_else(|| RunbookError::Unknown(name.to_owned()))
}

/// Queues a run of `page`'s admin job on the fleet, kept in `admin_runs` as queued so its
/// report can be read once it ran (`ballast runbook runs show ID`, the admin API, the console).
pub async fn enqueue(
    queue: &crate::queue::JobQueue,
    pool: &crate::db::SystemPool,
    page: &Page,
    execute: bool,
    actor: &str,
    params: serde_json::Value,
) -> Result<crate::newtypes::JobId, RunbookError> {
    let entry = queue.catalogue().iter().find(|p| p.kind.as_str() == page.admin_job).map(|p| p.runbook.clone());
    match entry {
        None => return Err(RunbookError::NotInCatalogue(format!("{name}: its admin job {job} is not in the catalogue (jobs/)", name = page.name, job = page.admin_job))),
        Some(named) if named.as_deref() != Some(page.name.as_str()) => {
            return Err(RunbookError::NotInCatalogue(format!("{name}: jobs/{job}.toml does not name this runbook", name = page.name, job = page.admin_job)));
        }
        Some(_) => {}
    }
    let payload = AdminArgs::payload(execute, actor, params);
    let done = queue.enqueue(crate::queue::EnqueueRequest::new(page.admin_job.as_str(), payload)).await?;
    crate::jobs::admin_runs::queued(pool, &done.id.0, &page.admin_job, actor, execute).await?;
    Ok(done.id)
}

/// Runs admin job `kind` here (the on-call shell), as the fleet would, audited the same way.
pub async fn run_here<S: Clone + Send + 'static>(
    state: &S,
    registry: &crate::queue::job::Registry<S>,
    kind: &str,
    execute: bool,
    params: serde_json::Value,
    actor: &str,
    progress: Progress,
) -> Result<JobReport, JobError> {
    let handler = registry.get(kind).ok_or_else(|| JobError::Cancel(format!("no handler for {kind}")))?;
    let ctx = JobContext { job_id: crate::newtypes::JobId::new(), attempt: 1, tenant: None, state: state.clone(), progress };
    handler.call(AdminArgs::payload(execute, actor, params), ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(rel: &str) -> ConfigDir {
        ConfigDir::Path(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
    }

    #[test]
    fn pages_admin_jobs_and_handlers_hold_together() {
        let pages = pages(&repo("runbooks")).expect("runbooks/");
        let catalogue = crate::job_catalogue::JobCatalogue::load(&repo("jobs")).expect("jobs/");
        let required = [
            "stripe-webhook-backlog",
            "scheduler-no-leader",
            "db-pool-exhaustion",
            "rate-limit-spike",
            "site-slow",
            "site-down",
            "billing-drift",
        ];
        for name in required {
            assert!(pages.iter().any(|p| p.name == name), "runbooks/{name}.md is required");
        }
        for page in &pages {
            for section in SECTIONS {
                assert!(page.text.contains(section), "runbooks/{}.md lacks {section:?}", page.name);
            }
            assert!(page.text.contains(&format!("ballast runbook run {}", page.name)), "runbooks/{}.md: its command is `ballast runbook run {}`", page.name, page.name);
            let entry = catalogue.iter().find(|p| p.kind.as_str() == page.admin_job);
            let entry = entry.unwrap_or_else(|| panic!("runbooks/{}.md names {}, which jobs/ does not have", page.name, page.admin_job));
            assert_eq!(entry.runbook.as_deref(), Some(page.name.as_str()), "jobs/{}.toml must name runbook {:?}", page.admin_job, page.name);
        }
        for entry in catalogue.iter().filter(|p| p.runbook.is_some()) {
            let named = entry.runbook.as_deref().unwrap_or_default();
            let page = pages.iter().find(|p| p.name == named);
            let page = page.unwrap_or_else(|| panic!("jobs/{}.toml names runbook {named:?}, which runbooks/ does not have", entry.kind));
            assert_eq!(page.admin_job, entry.kind.as_str(), "runbooks/{named}.md must name {} as its admin job", entry.kind);
        }
    }
}
