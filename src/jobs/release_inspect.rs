//! `release.inspect` (admin job, runbook release-rollback). What exactly is running and what a
//! rollback would meet: this binary's release, the migrations the database has applied against
//! the ones this binary carries (one it does not know means the schema is newer than this
//! binary: fine after an expand step, not after a contract step), migrations it carries that
//! are not applied yet, and the fleet's members with their heartbeat age. Report only.

use serde_json::json;

use super::admin::{AdminJob, NoParams};
use super::kind::{JobContext, JobError};

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReleaseInspectJob;

/// What the release inspection found.
#[derive(Debug, serde::Serialize)]
pub struct ReleaseInspectReport {
    /// `0.1.0+3f2a…`: this binary.
    pub release: &'static str,
    /// The newest migration this binary carries.
    pub binary_schema_version: Option<i64>,
    /// The newest migration the database has applied.
    pub database_schema_version: Option<i64>,
    /// Applied migrations this binary does not carry (the schema is newer): each with whether
    /// it declares itself a contract step, which this binary may not survive.
    pub unknown_applied: Vec<serde_json::Value>,
    /// Migrations this binary carries that the database has not applied (`ballast migrate`).
    pub pending: Vec<serde_json::Value>,
    /// Applied migrations whose file this binary carries with another checksum (edited after
    /// they ran): `ballast migrate` refuses to start over them.
    pub changed: Vec<i64>,
    /// Every member with its heartbeat age (seconds).
    pub members: Vec<serde_json::Value>,
    /// What stands between this binary and this schema (pending, changed or unknown
    /// migrations); empty when it can run here.
    pub failing: Vec<String>,
    /// Always false: the job reports only.
    pub executed: bool,
}

impl AdminJob for ReleaseInspectJob {
    const KIND: &'static str = "release.inspect";
    type Params = NoParams;
    type Report = ReleaseInspectReport;
    type Deps = super::deps::Fleet;

    async fn run(&self, _p: &NoParams, _execute: bool, ctx: &JobContext<super::deps::Fleet>) -> Result<ReleaseInspectReport, JobError> {
        let state = &ctx.state;
        let applied: Vec<(i64, String, Vec<u8>)> =
            sqlx::query_as("SELECT version, description, checksum FROM _sqlx_migrations WHERE success ORDER BY version").fetch_all(&state.system_pool.0).await?;
        let carried = &crate::db::MIGRATOR.migrations;
        let unknown_applied: Vec<serde_json::Value> = applied
            .iter()
            .filter(|(v, _, _)| !carried.iter().any(|m| m.version == *v))
            .map(|(v, d, _)| json!({"version": v, "description": d}))
            .collect();
        let pending: Vec<serde_json::Value> = carried
            .iter()
            .filter(|m| !applied.iter().any(|(v, _, _)| *v == m.version))
            .map(|m| json!({"version": m.version, "description": m.description, "contract_step": m.sql.as_str().trim_start().starts_with("-- contract step:")}))
            .collect();
        let changed: Vec<i64> = applied
            .iter()
            .filter(|(v, _, sum)| carried.iter().any(|m| m.version == *v && m.checksum.as_ref() != sum.as_slice()))
            .map(|(v, _, _)| *v)
            .collect();
        let members = state.queue.member_heartbeats().await?;
        Ok(ReleaseInspectReport {
            release: crate::RELEASE,
            binary_schema_version: carried.iter().map(|m| m.version).max(),
            database_schema_version: applied.iter().map(|(v, _, _)| *v).max(),
            failing: failing(&pending, &changed, &unknown_applied),
            unknown_applied,
            pending,
            changed,
            members: members.iter().map(|(m, age)| json!({"member": m, "heartbeat_age_secs": age})).collect(),
            executed: false,
        })
    }
}

/// The findings a person must act on. A schema newer than the binary is flagged too: the
/// binary cannot tell whether a migration it does not know was an expand step (harmless) or a
/// contract step (it may not survive), so a person reads it (migrations/README.md).
fn failing(pending: &[serde_json::Value], changed: &[i64], unknown: &[serde_json::Value]) -> Vec<String> {
    let mut out = Vec::new();
    if !pending.is_empty() {
        out.push(format!("{} migrations of this binary are not applied: run `ballast migrate` before this release serves", pending.len()));
    }
    for v in changed {
        out.push(format!("migration {v} was edited after it ran: restore its file as it was applied"));
    }
    for m in unknown {
        out.push(format!("the database has migration {} ({}) that this binary does not know: check it is an expand step before rolling back onto it", m["version"], m["description"].as_str().unwrap_or_default()));
    }
    out
}
