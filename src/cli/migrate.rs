//! `ballast migrate`: applies the pending migrations as the owner role, after checking that no
//! live member runs a release older than a required stop among them (`db::required_stop`).

use anyhow::{Context, bail};
use ballast::config::Settings;
use ballast::db::required_stop::{RequiredStop, is_behind};
use ballast::health::roster;
use ballast::redis_conn::RedisConn;
use ballast::redis_keys::RedisKeys;
use secrecy::ExposeSecret;

pub(crate) async fn run(settings: &Settings, skip_fleet_check: bool, json: bool) -> anyhow::Result<()> {
    if settings.owner_database_url.is_none() {
        bail!("configuration error: BALLAST_OWNER_DATABASE_URL: missing (migrations run as the owner role)");
    }
    let stop = ballast::db::pending_required_stop(settings.migration_url()).await.context("migrate")?;
    if let Some(stop) = &stop {
        if skip_fleet_check {
            tracing::warn!(message = "Fleet check skipped for a required stop.", release = %stop.release, migration = %stop.migration);
        } else {
            fleet_past(settings, stop).await?;
        }
    }
    let applied = ballast::db::migrate(settings.migration_url()).await.context("migrate")?;
    if json {
        println!("{}", serde_json::json!({"applied": applied}));
    } else {
        println!("migrations: {applied} applied, schema current");
    }
    Ok(())
}

/// Refuses, naming them, while a live member runs a release older than `stop`.
async fn fleet_past(settings: &Settings, stop: &RequiredStop) -> anyhow::Result<()> {
    let (redis, _) = RedisConn::open(settings.redis_url.expose_secret(), settings.redis_cluster).context("REDIS_URL")?;
    let keys = RedisKeys::new(&settings.redis_namespace, settings.redis_cluster);
    let members = roster::members(&redis, &keys).await.with_context(|| {
        format!(
            "migration {} is a required stop (every member at release {} or later), and the fleet's roster in Redis \
             cannot be read to check it; with no member running at all, `ballast migrate --skip-fleet-check`",
            stop.migration, stop.release
        )
    })?;
    let behind: Vec<String> = members.iter().filter(|m| is_behind(&stop.release, &m.version)).map(|m| format!("{} ({})", m.id, m.version)).collect();
    if !behind.is_empty() {
        bail!(
            "nothing applied: migration {} needs every member at release {} or later ({}); still running an older release: {}. \
             Deploy release {} to every member first (a required stop), then migrate again.",
            stop.migration,
            stop.release,
            stop.why,
            behind.join(", "),
            stop.release
        );
    }
    Ok(())
}
