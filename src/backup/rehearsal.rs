//! A restore rehearsal: the newest dump, its checksum verified, restored into a scratch
//! database (emptied before and after, never the source) — or pgBackRest's backup restored to
//! a point in time into a scratch instance (removed after) — then checked against the source:
//! the schema's migration version, row-level security on every tenant table, each table's row
//! count within a tolerance (when restored to the latest), and the newest row's age — with the
//! time the restore took. What fails a threshold is in `failing`; the run is recorded either way.

use std::path::Path;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::PgPoolOptions;

use super::BackupError;
use crate::db::SystemPool;

/// What a rehearsal holds the restored copy to.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// A table may hold this share fewer rows than the source (it grew since the dump).
    pub row_tolerance: f64,
    /// The newest restored row may be this old (the dump's age, for a daily dump a day).
    pub max_data_age: Duration,
    /// The restore may take this long.
    pub max_restore: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self { row_tolerance: 0.25, max_data_age: Duration::from_secs(26 * 3600), max_restore: Duration::from_secs(3600) }
    }
}

/// One table's rows in the source and in the restored copy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableCount {
    /// The table.
    pub table: String,
    /// Rows in the source now.
    pub source: i64,
    /// Rows restored.
    pub restored: i64,
}

/// What a rehearsal found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rehearsal {
    /// What was restored from.
    pub source: super::runs::Source,
    /// The dump restored, or pgBackRest's newest backup when it started.
    pub restored: String,
    /// The dump's checksum (verified).
    pub sha256: Option<String>,
    /// The time restored to (pgBackRest); none: the newest state the backup holds.
    pub target_time: Option<chrono::DateTime<chrono::Utc>>,
    /// How long pg_restore took.
    pub restore_secs: f64,
    /// The newest migration in the source and in the copy.
    pub source_version: Option<i64>,
    /// The newest migration restored.
    pub restored_version: Option<i64>,
    /// Tables checked.
    pub tables: Vec<TableCount>,
    /// Tenant tables restored without row-level security enabled and forced.
    pub rls_missing: Vec<String>,
    /// How old the newest restored row is (seconds).
    pub data_age_secs: Option<f64>,
    /// What failed its threshold.
    pub failing: Vec<String>,
}

/// Restores the newest dump of `dir` into the database at `scratch` and checks it against
/// `source` at `now`.
pub async fn run(source: &SystemPool, scratch: &secrecy::SecretString, dir: &Path, limits: Thresholds, now: chrono::DateTime<chrono::Utc>) -> Result<Rehearsal, BackupError> {
    let file = super::dump::list(dir).await?.into_iter().next().ok_or_else(|| BackupError::Tool(format!("no dump in {} to restore", dir.display())))?;
    let sha256 = super::dump::verify(&file).await?;
    let copy = PgPoolOptions::new().max_connections(1).connect(scratch.expose_secret()).await?;
    let same: bool = {
        let here: (String, Option<String>, Option<i32>) = sqlx::query_as("SELECT current_database()::text, inet_server_addr()::text, inet_server_port()").fetch_one(&source.0).await?;
        let there: (String, Option<String>, Option<i32>) = sqlx::query_as("SELECT current_database()::text, inet_server_addr()::text, inet_server_port()").fetch_one(&copy).await?;
        here == there
    };
    if same {
        return Err(BackupError::Tool("BALLAST_REHEARSAL_DATABASE_URL names the production database itself; a rehearsal empties its database, so it refuses".into()));
    }
    empty(&copy).await?;
    let outcome = restore_and_check(source, &copy, scratch, &file, sha256, limits, now).await;
    // Whatever happened, the copy of production's data does not stay in the scratch database.
    let emptied = empty(&copy).await;
    copy.close().await;
    let rehearsal = outcome?;
    emptied?;
    Ok(rehearsal)
}

/// Restores pgBackRest's stanza — to `target`, or to the newest archived WAL — into a scratch
/// instance, checks it against `source` (connected as `source_url`'s role, whose password the
/// copy shares), and removes the instance.
pub async fn run_pitr(
    source: &SystemPool,
    source_url: &secrecy::SecretString,
    cfg: &crate::config::backups::Pgbackrest,
    target: Option<chrono::DateTime<chrono::Utc>>,
    limits: Thresholds,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Rehearsal, BackupError> {
    let (backups, version) = super::pitr::info(cfg).await?;
    let newest = backups.first().cloned().ok_or_else(|| BackupError::Tool(format!("pgBackRest stanza {} holds no backup to restore", cfg.stanza)))?;
    // pgBackRest restores a time from the newest backup that stopped before it (its stop
    // times are whole seconds): before the oldest, there is nothing to start from.
    if let (Some(t), Some(oldest)) = (target, backups.last()) {
        if oldest.stopped_at >= t {
            return Err(BackupError::Tool(format!(
                "no backup of stanza {} stopped before {t}: the earliest time it restores to is just after {}",
                cfg.stanza, oldest.stopped_at
            )));
        }
    }
    let clock = std::time::Instant::now();
    let settings: Vec<(String, String)> = sqlx::query_as("SELECT name, setting FROM pg_settings WHERE name = ANY($1)")
        .bind(super::pitr::HOT_STANDBY_LIMITS)
        .fetch_all(&source.0)
        .await?;
    let instance = super::pitr::restore(cfg, version.as_deref(), target, &settings, limits.max_restore).await?;
    let checked = async {
        let options = instance.connect_options(source_url)?;
        let copy = PgPoolOptions::new().max_connections(1).connect_with(options).await?;
        // The copy is promoted at the end of recovery; until then it answers read-only.
        let deadline = std::time::Instant::now() + limits.max_restore;
        while sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()").fetch_one(&copy).await? {
            if std::time::Instant::now() > deadline {
                return Err(BackupError::Tool("the restored instance did not finish recovery in time".into()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let restore_secs = clock.elapsed().as_secs_f64();
        let restored = Restored { source: super::runs::Source::Pgbackrest, what: newest.label.clone(), sha256: None, target_time: target, restore_secs };
        let found = check(source, &copy, restored, limits, target.unwrap_or(now)).await;
        copy.close().await;
        found
    }
    .await;
    let removed = instance.remove().await;
    let rehearsal = checked?;
    removed?;
    Ok(rehearsal)
}

/// What was restored, before the checks.
struct Restored {
    source: super::runs::Source,
    what: String,
    sha256: Option<String>,
    target_time: Option<chrono::DateTime<chrono::Utc>>,
    restore_secs: f64,
}

async fn empty(copy: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;").execute(copy).await?;
    Ok(())
}

async fn restore_and_check(
    source: &SystemPool,
    copy: &sqlx::PgPool,
    scratch: &secrecy::SecretString,
    file: &Path,
    sha256: String,
    limits: Thresholds,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Rehearsal, BackupError> {
    let (dbname, password) = super::for_tool(scratch)?;
    // No owners and no grants: the scratch instance need not have production's roles.
    let args = vec!["--no-owner".to_owned(), "--no-acl".to_owned(), "--exit-on-error".to_owned(), format!("--dbname={dbname}"), file.display().to_string()];
    let clock = std::time::Instant::now();
    super::run_tool("pg_restore", &args, password.as_deref()).await?;
    let restore_secs = clock.elapsed().as_secs_f64();
    let restored = Restored { source: super::runs::Source::Dump, what: file.display().to_string(), sha256: Some(sha256), target_time: None, restore_secs };
    check(source, copy, restored, limits, now).await
}

/// Checks the restored `copy` against `source`, its data's age taken at `as_of`.
async fn check(source: &SystemPool, copy: &sqlx::PgPool, restored: Restored, limits: Thresholds, as_of: chrono::DateTime<chrono::Utc>) -> Result<Rehearsal, BackupError> {
    let Restored { source: kind, what, sha256, target_time, restore_secs } = restored;
    let version = "SELECT max(version) FROM _sqlx_migrations WHERE success";
    let source_version: Option<i64> = sqlx::query_scalar(version).fetch_one(&source.0).await?;
    let restored_version: Option<i64> = sqlx::query_scalar(version).fetch_one(copy).await?;
    let rls_missing: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
           AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
         ORDER BY 1",
    )
    .fetch_all(copy)
    .await?;
    // A partitioned table is counted whole, through its parent (the inbox, the ledger and the
    // audit log), not partition by partition: the report names the tables the schema has.
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1",
    )
    .fetch_all(copy)
    .await?;
    // A role that bypasses row-level security (the system role, on a physical copy) counts
    // every row; the owner of a dump's copy lifts the forcing first.
    let bypasses: bool = sqlx::query_scalar("SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user").fetch_one(copy).await?;
    let mut tables = Vec::with_capacity(names.len());
    for table in names {
        // Names read from the catalogue, quoted as identifiers.
        let quoted = format!("public.\"{}\"", table.replace('"', "\"\""));
        // The restoring role owns the copy, and forced row-level security would hide every
        // tenant's rows from it: lifted in the scratch copy only, after its flags were checked.
        if !bypasses {
            sqlx::query(sqlx::AssertSqlSafe(format!("ALTER TABLE {quoted} NO FORCE ROW LEVEL SECURITY"))).execute(copy).await?;
        }
        let count = format!("SELECT count(*) FROM {quoted}");
        let restored: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count.clone())).fetch_one(copy).await?;
        let in_source: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count)).fetch_one(&source.0).await.unwrap_or(0);
        tables.push(TableCount { table, source: in_source, restored });
    }
    let newest: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT max(t) FROM (SELECT max(received_at) AS t FROM stripe_events UNION ALL SELECT max(at) FROM audit_log
                             UNION ALL SELECT max(received_at) FROM usage_items UNION ALL SELECT max(created_at) FROM email_outbox) s",
    )
    .fetch_one(copy)
    .await?;
    let data_age_secs = newest.map(|t| (as_of - t).num_milliseconds() as f64 / 1000.0);
    let mut failing = Vec::new();
    if source_version != restored_version {
        failing.push(format!("restored schema is at migration {restored_version:?}, the source at {source_version:?}"));
    }
    for t in &rls_missing {
        failing.push(format!("{t}: row-level security not enabled and forced in the restored copy"));
    }
    // Restored to a chosen time, the copy holds that time's rows: the counts are reported,
    // not judged.
    for t in tables.iter().filter(|_| target_time.is_none()) {
        // A table pruned since the dump may hold more in the copy; fewer by more than the
        // tolerance (and by more than a handful) means rows the dump did not carry.
        let floor = (t.source as f64 * (1.0 - limits.row_tolerance)).floor() as i64;
        if t.restored < floor && t.source - t.restored > 10 {
            failing.push(format!("table {} holds {} rows restored, {} in the source (more than {:.0} % missing)", t.table, t.restored, t.source, limits.row_tolerance * 100.0));
        }
    }
    if let Some(age) = data_age_secs.filter(|a| *a > limits.max_data_age.as_secs_f64()) {
        failing.push(format!("the newest restored row is {:.1} h old (at most {:.1} h)", age / 3600.0, limits.max_data_age.as_secs_f64() / 3600.0));
    }
    if restore_secs > limits.max_restore.as_secs_f64() {
        failing.push(format!("the restore took {restore_secs:.0} s (at most {} s)", limits.max_restore.as_secs()));
    }
    Ok(Rehearsal { source: kind, restored: what, sha256, target_time, restore_secs, source_version, restored_version, tables, rls_missing, data_age_secs, failing })
}
