//! Time partitions: the tables that grow with traffic are partitioned by month, partitions are
//! created ahead of time and retired whole (detach, optionally archive, drop) once past their
//! retention, so retiring a month is a catalogue change instead of a long `DELETE` that leaves
//! dead rows for vacuum. Owns `partition_retirements` (one row per retirement, detach to drop).
//!
//! The fleet's system role does this through the owner's SECURITY DEFINER functions
//! (migrations/0045_partitions.sql): only a table's owner may change its partitions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::postgres::PgPoolCopyExt;
use tokio::io::AsyncWriteExt;

/// The tables partitioned by month of their time column (the audit log since 0048, the usage
/// ledger since 0053, the Stripe inbox since 0057), or of their UUIDv7 id (outbound webhook
/// deliveries since 0062, and their attempts by their delivery's id; the email outbox since
/// 0066), or of the time their id carries (job statuses since 0072); one whose conversion has
/// not run yet on a database (a migration pending) is skipped. Deliveries come before their
/// attempts: a retirement keeps the attempts of the deliveries it keeps, and finds them kept.
pub const PARTITIONED: &[&str] = &["audit_log", "usage_ledger", "stripe_events", "webhook_deliveries", "webhook_attempts", "webhook_messages", "email_outbox", "job_status"];

/// How far ahead partitions exist: a maintenance leader that is gone for weeks still leaves
/// every write a partition (and the overdue check says so long before).
pub const AHEAD: chrono::TimeDelta = chrono::TimeDelta::days(92);

/// Why partition maintenance failed; the next run tries again and finishes what was begun.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// PostgreSQL (a lock not had within the functions' `lock_timeout` included).
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// Writing the archive file.
    #[error("archiving {path}: {source}")]
    Archive {
        /// The file.
        path: PathBuf,
        /// What the filesystem said.
        source: std::io::Error,
    },
    /// The table is not partitioned (its conversion migration has not run).
    #[error("{0} has no partitions")]
    NotPartitioned(String),
}

/// One partition and its bounds.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Partition {
    /// Its table name.
    #[sqlx(rename = "partition")]
    pub name: String,
    /// Inclusive lower bound; none for a table's first, converted partition.
    pub range_from: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub range_to: DateTime<Utc>,
}

/// Where a retirement is: detached (rows still in a table of their own), archived (and in a
/// checksummed file), dropped (gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetirementState {
    /// Detached from its parent; not yet archived or dropped.
    Detached,
    /// Copied to its archive file; not yet dropped.
    Archived,
    /// Dropped.
    Dropped,
}

/// What retiring did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Retired {
    /// Partitions dropped.
    pub partitions: u64,
    /// Rows they held.
    pub rows: u64,
    /// Of them, archived to files first.
    pub archived: u64,
    /// The longest detach: how long the parent was locked, waiting included (ms).
    pub longest_detach_ms: u64,
    /// Rows kept: moved back into the table (its DEFAULT partition) before their month was
    /// dropped, because they were still to be handled.
    pub kept: u64,
}

/// `table`'s partitions, oldest first.
pub async fn list(pool: &PgPool, table: &str) -> Result<Vec<Partition>, sqlx::Error> {
    sqlx::query_as("SELECT partition, range_from, range_to FROM ballast_partitions($1)").bind(table).fetch_all(pool).await
}

/// The first instant of the month after `t`'s (UTC).
pub fn next_month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    let (year, month) = if t.month() == 12 { (t.year() + 1, 1) } else { (t.year(), t.month() + 1) };
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single().unwrap_or(t + chrono::TimeDelta::days(31))
}

/// The instant before which rows are `retention` old at `now`; a retention too long to
/// subtract reaches back to the earliest time, so it retires nothing.
pub fn cutoff(now: DateTime<Utc>, retention: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(retention).ok().and_then(|r| now.checked_sub_signed(r)).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The tables of `table` that no month's retirement empties in time, where its prune deletes
/// row by row: the DEFAULT partition (rows a retirement kept, keys no month holds) and the
/// first partition, the heap from before its conversion, which holds everything up to two
/// months past the upgrade; or `table` itself while its conversion has not run.
pub async fn outside_months(pool: &PgPool, table: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT relname::text FROM pg_class WHERE relname IN ($1 || '_default', $1 || '_legacy') AND relispartition
         UNION ALL SELECT relname::text FROM pg_class WHERE relname = $1 AND relkind = 'r' ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
}

/// Deletes up to `batch` rows matching `condition` (SQL in which `$1` is `cutoff`) from the
/// tables of `table` no month's retirement empties ([`outside_months`]), the batch shared
/// between them; returns how many: the inbox's, the email outbox's and job statuses' prunes.
pub async fn delete_outside_months(pool: &PgPool, table: &str, condition: &str, cutoff: DateTime<Utc>, batch: u64) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    for outside in outside_months(pool, table).await? {
        // The batch is shared, so a full batch still means more may be due.
        let left = batch.saturating_sub(deleted);
        if left == 0 {
            break;
        }
        let outside = quoted(&outside);
        // (`candidate`: the row, for a condition that names it in a subquery of its own.)
        let sql = format!("DELETE FROM {outside} WHERE ctid IN (SELECT ctid FROM {outside} AS candidate WHERE {condition} LIMIT $2)");
        deleted += sqlx::query(sqlx::AssertSqlSafe(sql)).bind(cutoff).bind(i64::try_from(left).unwrap_or(i64::MAX)).execute(pool).await?.rows_affected();
    }
    Ok(deleted)
}

/// Creates `table`'s monthly partitions until they cover [`AHEAD`] past `now`; returns the new
/// ones' names.
pub async fn ensure_ahead(pool: &PgPool, table: &str, now: DateTime<Utc>) -> Result<Vec<String>, PartitionError> {
    let partitions = list(pool, table).await?;
    let Some(mut covered) = partitions.last().map(|p| p.range_to) else {
        return Err(PartitionError::NotPartitioned(table.to_owned()));
    };
    let mut created = Vec::new();
    while covered < now + AHEAD {
        let to = next_month_start(covered);
        let name: Option<String> = sqlx::query_scalar("SELECT ballast_partition_create($1, $2, $3)")
            .bind(table)
            .bind(covered)
            .bind(to)
            .fetch_one(pool)
            .await?;
        created.extend(name);
        covered = to;
    }
    Ok(created)
}

/// Every partitioned table's partitions ensured ahead of `now` (run after migrations, so a
/// database restored or cloned long after its creation takes writes at once).
pub async fn ensure_all_ahead(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<String>, PartitionError> {
    let mut created = Vec::new();
    for table in PARTITIONED {
        match ensure_ahead(pool, table, now).await {
            Ok(names) => created.extend(names),
            // Its conversion has not run yet on this database.
            Err(PartitionError::NotPartitioned(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}

/// Retires `table`'s partitions that end `retention` or more before `now`: each is detached (a
/// moment's lock on the parent), its rows matching `keep` (an SQL condition from the table's
/// owner: rows still to be handled) moved back into the table, where its DEFAULT partition
/// takes them, the partition copied to `archive` when one is given (CSV with a header and a
/// `.sha256` beside it), then dropped. The partition that holds `now` is never retired.
/// Retirements a previous run began are finished first.
pub async fn retire(pool: &PgPool, table: &str, now: DateTime<Utc>, retention: Duration, archive: Option<&Path>, keep: Option<&str>) -> Result<Retired, PartitionError> {
    let mut retired = finish_open(pool, table, archive, keep).await?;
    // A retention too long to subtract retires nothing.
    let cutoff = cutoff(now, retention);
    for partition in list(pool, table).await? {
        if partition.range_to > cutoff || partition.range_to > now {
            break;
        }
        let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {}", quoted(&partition.name)))).fetch_one(pool).await?;
        let clock = std::time::Instant::now();
        let retirement: i64 = sqlx::query_scalar("SELECT ballast_partition_detach($1, $2, $3)")
            .bind(table)
            .bind(&partition.name)
            .bind(rows)
            .fetch_one(pool)
            .await?;
        retired.longest_detach_ms = retired.longest_detach_ms.max(u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX));
        let open = Open { id: retirement, partition: partition.name, parent: table.to_owned(), rows, archived: false };
        finish(pool, &open, archive, keep, &mut retired).await?;
    }
    Ok(retired)
}

/// A detached partition not yet dropped.
#[derive(Debug, sqlx::FromRow)]
struct Open {
    id: i64,
    partition: String,
    parent: String,
    rows: i64,
    archived: bool,
}

async fn finish_open(pool: &PgPool, table: &str, archive: Option<&Path>, keep: Option<&str>) -> Result<Retired, PartitionError> {
    let open: Vec<Open> = sqlx::query_as(
        "SELECT id, partition, parent, rows, archived_at IS NOT NULL AS archived FROM partition_retirements
         WHERE parent = $1 AND dropped_at IS NULL ORDER BY id",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    let mut retired = Retired::default();
    for one in &open {
        finish(pool, one, archive, keep, &mut retired).await?;
    }
    Ok(retired)
}

/// Moves the kept rows back (when asked), archives (when asked and not done) and drops one
/// detached partition. Each step may be repeated after a crash: a row moved before conflicts
/// on the table's key and stays as it is now.
async fn finish(pool: &PgPool, open: &Open, archive: Option<&Path>, keep: Option<&str>, retired: &mut Retired) -> Result<(), PartitionError> {
    if let Some(condition) = keep {
        // A condition may name the detached month itself (`{partition}`): the messages' does, to
        // bound its read of the deliveries by the month's highest id.
        let condition = condition.replace("{partition}", &quoted(&open.partition));
        let moved = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} SELECT * FROM {} WHERE {condition} ON CONFLICT DO NOTHING",
            quoted(&open.parent),
            quoted(&open.partition)
        )))
        .execute(pool)
        .await?;
        retired.kept += moved.rows_affected();
    }
    if let (Some(dir), false) = (archive, open.archived) {
        let (path, sha256) = archive_to(pool, &open.partition, open.id, dir).await?;
        sqlx::query("UPDATE partition_retirements SET archive_path = $2, archive_sha256 = $3, archived_at = now() WHERE id = $1")
            .bind(open.id)
            .bind(path.display().to_string())
            .bind(&sha256)
            .execute(pool)
            .await?;
        retired.archived += 1;
    }
    sqlx::query("SELECT ballast_partition_drop($1)").bind(open.id).execute(pool).await?;
    retired.partitions += 1;
    retired.rows += u64::try_from(open.rows).unwrap_or(0);
    Ok(())
}

/// Copies a detached partition to `<dir>/<partition>-<retirement>.csv` (written aside, synced,
/// then renamed, so a file under its final name is whole) and its checksum beside it in
/// `sha256sum`'s format; returns the file and the checksum.
async fn archive_to(pool: &PgPool, partition: &str, retirement: i64, dir: &Path) -> Result<(PathBuf, String), PartitionError> {
    let path = dir.join(format!("{partition}-{retirement}.csv"));
    let io = |source| PartitionError::Archive { path: path.clone(), source };
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    let partial = path.with_extension("csv.partial");
    let mut file = tokio::fs::File::create(&partial).await.map_err(io)?;
    let mut digest = Sha256::new();
    let mut stream = pool.copy_out_raw(&format!("COPY {} TO STDOUT (FORMAT csv, HEADER)", quoted(partition))).await?;
    while let Some(chunk) = stream.try_next().await? {
        digest.update(&chunk);
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.sync_all().await.map_err(io)?;
    drop(file);
    tokio::fs::rename(&partial, &path).await.map_err(io)?;
    let sha256 = hex::encode(digest.finalize());
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    tokio::fs::write(path.with_extension("csv.sha256"), format!("{sha256}  {name}\n")).await.map_err(io)?;
    Ok((path, sha256))
}

/// One retirement as the record keeps it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct Retirement {
    /// The partition.
    pub partition: String,
    /// Its table.
    pub parent: String,
    /// Its bounds.
    pub range_from: Option<DateTime<Utc>>,
    /// Its upper bound.
    pub range_to: DateTime<Utc>,
    /// Rows it held.
    pub rows: i64,
    /// The archive file, when archived.
    pub archive_path: Option<String>,
    /// Its SHA-256.
    pub archive_sha256: Option<String>,
    /// When detached.
    pub detached_at: DateTime<Utc>,
    /// When dropped.
    pub dropped_at: Option<DateTime<Utc>>,
    /// When archived.
    #[serde(skip)]
    pub archived_at: Option<DateTime<Utc>>,
}

impl Retirement {
    /// Where it is.
    pub fn state(&self) -> RetirementState {
        match (self.dropped_at, self.archived_at) {
            (Some(_), _) => RetirementState::Dropped,
            (None, Some(_)) => RetirementState::Archived,
            (None, None) => RetirementState::Detached,
        }
    }
}

/// The newest retirements of `table`, newest first.
pub async fn retirements(pool: &PgPool, table: &str, limit: i64) -> Result<Vec<Retirement>, sqlx::Error> {
    sqlx::query_as(
        "SELECT partition, parent, range_from, range_to, rows, archive_path, archive_sha256, detached_at, dropped_at, archived_at
         FROM partition_retirements WHERE parent = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(table)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A table name as an SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
