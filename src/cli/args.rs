//! Helpers the command families share: who runs the command, and argument parsers.

use std::sync::OnceLock;

use anyhow::bail;
use ballast::auth::operators::Role;

/// The operator this run signed in as (`BALLAST_OPERATOR_TOKEN`), once checked.
static OPERATOR: OnceLock<(String, Role)> = OnceLock::new();

/// Who runs a command, for the audit log: the signed-in operator's name, or `local:` and the
/// shell's user (`BALLAST_ACTOR`, else the login and the machine) for a shell that holds the
/// database's credentials without an operator token.
pub(super) fn actor() -> String {
    if let Some((name, _)) = OPERATOR.get() {
        return name.clone();
    }
    if let Ok(named) = std::env::var("BALLAST_ACTOR")
        && !named.trim().is_empty()
    {
        return format!("local:{}", named.trim());
    }
    // Never just "cli": the login and the machine say who ran it, as far as this shell knows.
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown-user".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").or_else(|_| std::env::var("HOSTNAME")).unwrap_or_else(|_| "unknown-host".into());
    format!("local:{user}@{}", host.trim())
}

/// Signs this run in as the operator `BALLAST_OPERATOR_TOKEN` belongs to (nothing to do
/// without one); an unknown, replaced or disabled token stops the command.
pub(super) async fn sign_in(settings: &ballast::config::Settings) -> anyhow::Result<()> {
    let Some(token) = std::env::var("BALLAST_OPERATOR_TOKEN").ok().filter(|t| !t.trim().is_empty()) else { return Ok(()) };
    let url = secrecy::ExposeSecret::expose_secret(&settings.system_database_url).to_owned();
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&url).await?;
    let found = ballast::auth::operators::authenticate(&ballast::db::SystemPool(pool.clone()), token.trim()).await?;
    pool.close().await;
    let Some(op) = found else { bail!("BALLAST_OPERATOR_TOKEN: not a live operator token (unknown, replaced or disabled); ask an admin for `ballast operators rotate NAME`") };
    let _ = OPERATOR.set((op.name, op.role.0));
    Ok(())
}

/// Refuses the command when the signed-in operator's role does not allow `needed` (a local
/// shell, with the database's own credentials, may do anything).
pub(super) fn require(needed: Role) -> anyhow::Result<()> {
    match OPERATOR.get() {
        Some((name, role)) if !role.allows(needed) => {
            bail!("operator {name} is a {}; this needs the {} role (an admin can change it: `ballast operators add` a new one)", role.as_str(), needed.as_str())
        }
        _ => Ok(()),
    }
}

/// `--ttl 30m`: between 1 s and 7 days.
pub(super) fn parse_ttl(s: &str) -> anyhow::Result<std::time::Duration> {
    let ttl = humantime::parse_duration(s.trim()).map_err(|e| anyhow::anyhow!("--ttl {s:?}: {e} (e.g. 30m, 2h)"))?;
    if ttl < std::time::Duration::from_secs(1) || ttl > std::time::Duration::from_secs(7 * 86_400) {
        bail!("--ttl {s:?}: must be between 1 s and 7 days");
    }
    Ok(ttl)
}

/// `--as-of`: an RFC 3339 time, or a day (its last second, UTC).
pub(super) fn parse_instant(raw: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let day = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| anyhow::anyhow!("--as-of {raw:?}: expected 2026-12-01 or an RFC 3339 time"))?;
    Ok(day.and_hms_opt(23, 59, 59).map(|t| t.and_utc()).unwrap_or_default())
}

/// A tenant named by its id or by your app's external id.
pub(super) async fn resolve_tenant(pool: &ballast::db::SystemPool, named: &str) -> anyhow::Result<ballast::tenants::Tenant> {
    let by_id = match named.parse::<uuid::Uuid>() {
        Ok(id) => ballast::tenants::get(pool, ballast::newtypes::TenantId(id)).await?,
        Err(_) => None,
    };
    let found = match by_id {
        Some(t) => Some(t),
        None => ballast::tenants::by_external_id(pool, named).await?,
    };
    found.ok_or_else(|| anyhow::anyhow!("no tenant with id or external id {named:?} (see `ballast tenants list`)"))
}
