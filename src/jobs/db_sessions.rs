//! `db.sessions` (admin job, runbook db-pool-exhaustion). Reports PostgreSQL's sessions by
//! application, state and age, the connection ceiling, this process's pools, and the sessions
//! idle inside a transaction longer than the threshold (they hold a pool connection and their
//! locks while doing nothing). Executing terminates those sessions; their transactions roll
//! back and the pools open fresh connections. Needs `pg_read_all_stats` and
//! `pg_signal_backend` on the system role (deploy/dev.sh grants both).

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::kind::{JobContext, JobError};
use super::admin::AdminJob;

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct DbSessionsJob;

/// Parameters.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DbSessionsParams {
    /// Idle-in-transaction sessions older than this are listed (and terminated with
    /// --execute). Default 60.
    #[serde(default)]
    pub idle_in_transaction_secs: Option<u64>,
}

/// Sessions of one application in one state.
#[derive(Debug, sqlx::FromRow, Serialize)]
pub struct Group {
    application: String,
    state: String,
    sessions: i64,
    oldest_secs: Option<f64>,
}

/// A session idle in a transaction.
#[derive(Debug, sqlx::FromRow, Serialize)]
pub struct Stuck {
    pid: i32,
    application: String,
    role: Option<String>,
    idle_secs: f64,
    query: Option<String>,
}

/// PostgreSQL sessions by application and state, and the ones stuck in a transaction.
#[derive(Debug, serde::Serialize)]
pub struct DbSessionsReport {
    /// The server's limit.
    pub max_connections: Option<i64>,
    /// Client sessions now.
    pub client_sessions: i64,
    /// Sessions by application and state.
    pub by_application_and_state: Vec<Group>,
    /// This process's two pools.
    pub this_process_pools: serde_json::Value,
    /// The threshold used.
    pub idle_in_transaction_threshold_secs: f64,
    /// Sessions idle in a transaction past it.
    pub idle_in_transaction: Vec<Stuck>,
    /// Whether they were terminated.
    pub executed: bool,
    /// Sessions terminated.
    pub terminated: usize,
}

impl AdminJob for DbSessionsJob {
    const KIND: &'static str = "db.sessions";
    type Params = DbSessionsParams;
    type Report = DbSessionsReport;
    type Deps = super::deps::Fleet;

    async fn run(&self, p: &DbSessionsParams, execute: bool, ctx: &JobContext<super::deps::Fleet>) -> Result<DbSessionsReport, JobError> {
        // System pool: sessions of every role are the subject.
        let pool = &ctx.state.system_pool.0;
        let threshold = p.idle_in_transaction_secs.unwrap_or(60) as f64;
        let groups: Vec<Group> = sqlx::query_as(
            "SELECT COALESCE(NULLIF(application_name, ''), '(none)') AS application, COALESCE(state, '(background)') AS state,
                    count(*) AS sessions, max(EXTRACT(EPOCH FROM now() - state_change))::float8 AS oldest_secs
             FROM pg_stat_activity WHERE datname = current_database() GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
        )
        .fetch_all(pool)
        .await?;
        let max_connections: String = sqlx::query_scalar("SHOW max_connections").fetch_one(pool).await?;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'").fetch_one(pool).await?;
        let stuck: Vec<Stuck> = sqlx::query_as(
            "SELECT pid, COALESCE(NULLIF(application_name, ''), '(none)') AS application, usename::text AS role,
                    EXTRACT(EPOCH FROM now() - state_change)::float8 AS idle_secs, left(query, 200) AS query
             FROM pg_stat_activity
             WHERE datname = current_database() AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()
               AND now() - state_change >= make_interval(secs => $1)
             ORDER BY state_change",
        )
        .bind(threshold)
        .fetch_all(pool)
        .await?;
        let mut terminated = 0;
        if execute {
            for (i, s) in stuck.iter().enumerate() {
                let ok: Option<bool> = sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(s.pid).fetch_one(pool).await?;
                terminated += usize::from(ok == Some(true));
                ctx.progress.report("terminate sessions", i as u64 + 1, Some(stuck.len() as u64));
            }
        }
        let pool_of = |p: &sqlx::PgPool| json!({"open": p.size(), "idle": p.num_idle()});
        Ok(DbSessionsReport {
            max_connections: max_connections.parse::<i64>().ok(),
            client_sessions: total,
            by_application_and_state: groups,
            this_process_pools: json!({"app": pool_of(ctx.state.tenant_pool.raw()), "system": pool_of(pool), "size_each": ctx.state.settings.db_pool_size}),
            idle_in_transaction_threshold_secs: threshold,
            idle_in_transaction: stuck,
            executed: execute,
            terminated,
        })
    }
}
