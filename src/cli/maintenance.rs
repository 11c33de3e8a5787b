//! `ballast maintenance`: the maintenance services the scheduler's leader runs — each one's
//! last run, what it did, its error, and whether it is overdue — and running one now.

use std::process::ExitCode;

use ballast::app::AppState;
use ballast::maintenance::status::{self, ServiceStatus};
use clap::Subcommand;

use super::render;

#[derive(Debug, Subcommand)]
pub(super) enum MaintenanceCommand {
    /// Each service: its period, last run, how long it took, what it did, its last error, and
    /// whether it is overdue (not completed within three periods). Exit 3 when one is overdue
    /// or its last run failed. (The default.)
    Status,
    /// Run one service now, from this shell (its status is recorded as the leader's are). Safe
    /// beside the leader: every service is idempotent.
    Run {
        /// The service, as `ballast maintenance` names it (e.g. inbox.sweep).
        service: String,
    },
}

pub(super) async fn maintenance(state: AppState, command: MaintenanceCommand, json: bool) -> anyhow::Result<ExitCode> {
    let deps = state.maintenance_deps();
    match command {
        MaintenanceCommand::Status => {
            let now = chrono::Utc::now();
            let statuses = status::all(&state.system_pool, &ballast::maintenance::services(), now).await?;
            if json {
                println!("{}", serde_json::to_string(&statuses)?);
            } else {
                print(&statuses, now);
            }
            let failing = statuses.iter().any(|s| s.overdue || s.last_error.is_some());
            Ok(if failing { ExitCode::from(render::FOUND_FAILING) } else { ExitCode::SUCCESS })
        }
        MaintenanceCommand::Run { service } => {
            let services = ballast::maintenance::services();
            let Some(found) = services.iter().find(|s| s.name() == service) else {
                let names: Vec<_> = services.iter().map(|s| s.name()).collect();
                anyhow::bail!("no maintenance service {service:?}; there are: {}", names.join(", "));
            };
            let outcome = ballast::maintenance::run_one(found.as_ref(), &deps).await;
            status::record(&state.system_pool, &outcome).await?;
            match (&outcome.result, json) {
                (Ok(report), true) => println!("{}", serde_json::json!({"service": service, "ms": outcome.took.as_secs_f64() * 1000.0, "report": report})),
                (Ok(report), false) => println!("{service}: done in {} ms: {}", outcome.took.as_millis(), describe(report)),
                (Err(e), _) => anyhow::bail!("{service} failed: {e}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn describe(report: &ballast::maintenance::Report) -> String {
    if report.0.is_empty() {
        return "nothing to do".into();
    }
    report.0.iter().map(|(what, n)| format!("{what} {n}")).collect::<Vec<_>>().join(", ")
}

fn print(statuses: &[ServiceStatus], now: chrono::DateTime<chrono::Utc>) {
    let ago = |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or("never".to_owned(), |t| format!("{} s ago", (now - t).num_seconds()));
    let rows = statuses.iter().map(|s| {
        vec![
            s.service.clone(),
            format!("{} s", s.period_secs),
            ago(s.last_started_at),
            s.last_duration_ms.map_or("-".into(), |ms| format!("{ms:.1} ms")),
            s.last_report.as_ref().map_or("-".into(), |r| describe(&r.0)),
            ago(s.last_ok_at),
            format!("{}/{}", s.failures, s.runs),
            s.last_error.clone().unwrap_or_else(|| "-".into()),
            if s.overdue { "OVERDUE".into() } else { "ok".into() },
        ]
    });
    println!("{}", render::table(&["service", "every", "last run", "took", "did", "last ok", "failed/runs", "last error", "state"], rows));
}
