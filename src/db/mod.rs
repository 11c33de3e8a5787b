//! PostgreSQL access: the two pools, the one helper that opens a tenant-scoped transaction,
//! and the embedded migrations.

pub mod batch;
pub mod partitions;
pub mod replica;
pub mod required_stop;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use crate::config::Settings;
use crate::newtypes::TenantId;

/// Errors at the database edge.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL could not be parsed (the URL itself is never shown: it may hold a password).
    #[error("invalid PostgreSQL URL for {0}")]
    BadUrl(&'static str),
    /// PostgreSQL answered with an error or could not be reached.
    #[error("postgres: {0}")]
    Sql(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Creating the partitions ahead after migrating failed.
    #[error("partitions: {0}")]
    Partitions(String),
    /// A migration's required-stop line is malformed.
    #[error(transparent)]
    RequiredStop(#[from] required_stop::BadStop),
}

/// The embedded, forward-only migrations from migrations/.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The SQL expression that waits for the transaction's tenant lock (the tenant being the one
/// [`TenantPool::begin`] set): what [`TenantPool::begin_serialised`] takes, and what a statement
/// takes itself when it must lock a row first (the Stripe inbox's claim).
pub const TENANT_LOCK: &str = "pg_advisory_xact_lock(hashtextextended('tenant:' || current_setting('app.tenant_id'), 0))";

/// Pool of the app role (no BYPASSRLS). Every query runs inside [`TenantPool::begin`].
#[derive(Debug, Clone)]
pub struct TenantPool(PgPool);

/// Pool of the system role (BYPASSRLS). Each use says in a comment why it must see across tenants.
#[derive(Debug, Clone)]
pub struct SystemPool(pub PgPool);

/// Binds the rest of a [`TenantPool::begin_shared`] transaction to `tenant` (until the next
/// switch or the transaction's end, like [`TenantPool::begin`]'s setting).
pub async fn switch_tenant(tx: &mut sqlx::PgConnection, tenant: TenantId) -> Result<(), DbError> {
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)").bind(tenant.0.hyphenated().to_string()).execute(tx).await?;
    Ok(())
}

impl TenantPool {
    /// Wraps a pool that connects as the app role.
    pub fn new(pool: PgPool) -> Self {
        Self(pool)
    }

    /// Opens a transaction that sees only `tenant`'s rows: the one place `app.tenant_id` is set.
    /// `set_config(.., true)` is `SET LOCAL`, so the context ends with the transaction and a
    /// pooled connection never carries one tenant's context into another's work.
    ///
    /// `BEGIN` and the setting travel in one round trip. The tenant id is a UUID, whose text
    /// form is hex and hyphens only, so putting it in the statement text is safe.
    pub async fn begin(&self, tenant: TenantId) -> Result<Transaction<'static, Postgres>, DbError> {
        self.begin_then(tenant, "").await
    }

    /// [`begin`](Self::begin) followed, in the same round trip, by `then` (constant SQL
    /// statements, each starting with `; `).
    async fn begin_then(&self, tenant: TenantId, then: &'static str) -> Result<Transaction<'static, Postgres>, DbError> {
        let begin = format!("BEGIN; SELECT set_config('app.tenant_id', '{}', true){then}", tenant.0.hyphenated());
        Ok(self.0.begin_with(sqlx::AssertSqlSafe(begin)).await?)
    }

    /// [`begin`](Self::begin), then waits for the tenant's transaction lock, so the tenant's
    /// writers that use it run one at a time (still one round trip).
    pub async fn begin_serialised(&self, tenant: TenantId) -> Result<Transaction<'static, Postgres>, DbError> {
        static THEN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| format!("; SELECT {TENANT_LOCK}"));
        self.begin_then(tenant, THEN.as_str()).await
    }

    /// [`begin`](Self::begin), with every statement of the transaction run on its generic plan
    /// (still one round trip). For the webhook apply, whose statements are all index lookups
    /// by key: the inbox claim names the row's month by a parameter, and PostgreSQL would
    /// otherwise plan it afresh on every call (a plan for the one month costs less than one for
    /// all, so the generic plan never wins its comparison), which costs more than the pruning
    /// saves; the generic plan prunes to that month when it starts.
    pub async fn begin_planned_once(&self, tenant: TenantId) -> Result<Transaction<'static, Postgres>, DbError> {
        self.begin_then(tenant, "; SET LOCAL plan_cache_mode = force_generic_plan").await
    }

    /// A transaction that serves several tenants in turn (group commit): each tenant's part
    /// starts with [`switch_tenant`]; before the first, RLS shows no rows at all.
    pub async fn begin_shared(&self) -> Result<Transaction<'static, Postgres>, DbError> {
        Ok(self.0.begin().await?)
    }

    /// The raw pool, for health checks that read no tenant data.
    pub fn raw(&self) -> &PgPool {
        &self.0
    }
}

impl SystemPool {
    /// A read-only transaction for statements planned for each call's own values (sqlx's
    /// `persistent(false)`: an unnamed statement). sqlx parses an unnamed statement and binds
    /// it in two exchanges; between them PgBouncer in transaction pooling hands the server
    /// connection to whichever client asks next, and the bind would run on a connection that
    /// parsed another client's statement, or none. A transaction keeps one server connection
    /// for both (two round trips more, on lists that are not on the webhook path).
    pub async fn begin_planned_per_call(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.0.begin_with("BEGIN READ ONLY").await
    }
}

fn options(url: &str, which: &'static str, app_name: &str) -> Result<PgConnectOptions, DbError> {
    let opts: PgConnectOptions = url.parse().map_err(|_| DbError::BadUrl(which))?;
    // No JIT: Ballast's statements are short, and compiling one costs more than it saves (the
    // customer list's page took 230 ms with it at 10,000 tenants, 20 ms without). Sent as a
    // startup parameter: no round trip.
    Ok(opts.application_name(app_name).options([("jit", "off")]))
}

/// A pooled connection idle longer than this is pinged before use.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// Connects a pool lazily, so the process starts (and /readyz can say why) while PostgreSQL is down.
pub fn lazy_pool(url: &str, which: &'static str, app_name: &str, size: u32) -> Result<PgPool, DbError> {
    let opts = options(url, which, app_name)?;
    Ok(PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(3))
        // sqlx pings every connection before handing it out: a round trip per query, which at
        // webhook rates costs more than the query. Ping only connections that sat idle (where
        // a PostgreSQL restart or a dropped socket is likely to have gone unnoticed).
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > IDLE_BEFORE_PING {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(opts))
}

/// Both pools for a fleet member.
pub fn pools(settings: &Settings) -> Result<(TenantPool, SystemPool), DbError> {
    let tenant = lazy_pool(settings.database_url.expose_secret(), "DATABASE_URL", "ballast-app", settings.db_pool_size)?;
    let system = lazy_pool(
        settings.system_database_url.expose_secret(),
        "BALLAST_SYSTEM_DATABASE_URL",
        "ballast-system",
        settings.db_pool_size,
    )?;
    Ok((TenantPool(tenant), SystemPool(system)))
}

/// Applies pending migrations as the owner role.
pub async fn migrate(url: &str) -> Result<usize, DbError> {
    let opts = options(url, "BALLAST_OWNER_DATABASE_URL", "ballast-migrate")?;
    let pool = PgPoolOptions::new().max_connections(1).connect_with(opts).await?;
    let before = applied_versions(&pool).await?;
    MIGRATOR.run(&pool).await?;
    // A database restored, or a template cloned, long after its last migration has partitions
    // only as far ahead as they were then: cover today before any member writes.
    partitions::ensure_all_ahead(&pool, chrono::Utc::now()).await.map_err(|e| match e {
        partitions::PartitionError::Db(e) => DbError::Sql(e),
        other => DbError::Partitions(other.to_string()),
    })?;
    let after = applied_versions(&pool).await?;
    pool.close().await;
    Ok(after.len().saturating_sub(before.len()))
}

/// The migrations applied; none on a database no migration has run on (no table yet).
async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text").fetch_one(pool).await?;
    if table.is_none() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await
}

/// The highest required stop ([`required_stop`]) among the migrations the database behind
/// the owner `url` has not applied; none on a database no migration has run on (no member can
/// run on it, and a first `docker compose up` migrates before Redis is up).
pub async fn pending_required_stop(url: &str) -> Result<Option<required_stop::RequiredStop>, DbError> {
    let opts = options(url, "BALLAST_OWNER_DATABASE_URL", "ballast-migrate")?;
    let pool = PgPoolOptions::new().max_connections(1).connect_with(opts).await?;
    let applied = applied_versions(&pool).await;
    pool.close().await;
    let applied = applied?;
    if applied.is_empty() {
        return Ok(None);
    }
    Ok(required_stop::highest_pending(&MIGRATOR, &applied)?)
}

/// Whether every embedded migration has been applied to the database behind `pool`.
pub async fn migrations_current(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let applied = applied_versions(pool).await?;
    Ok(MIGRATOR.iter().filter(|m| m.migration_type.is_up_migration()).all(|m| applied.contains(&m.version)))
}

/// Whether `e` means PostgreSQL cannot be used right now (unreachable, pool exhausted,
/// shutting down, out of resources), as opposed to a refusal of this statement or its data.
/// The first is an outage and worth a retry; the second is not, and says so.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            // SQLSTATE classes 08 (connection), 53 (insufficient resources), 57 (operator
            // intervention: shutdown, cancel), 58 (system error).
            let code = db.code();
            let class = code.as_deref().map(|c| c.get(..2).unwrap_or(""));
            matches!(class, Some("08" | "53" | "57" | "58"))
        }
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed | sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}
