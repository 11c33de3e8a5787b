//! `ballast bench customers`: the customer list's page latency at a large SaaS's tenant count.
//! Seeds `tenants` tenants of the run's own (a subscription each with its MRR in one of two
//! currencies for most, an open dunning case for a tenth, a last API call for most), then times
//! `n` reads of each page an operator asks for: the first page by MRR, the ten highest-MRR
//! tenants in dunning, a text search, a page deep in the list through the cursor, and the
//! list filtered by a common status, a rare one and a rare price. The
//! seeded rows are removed afterwards.

use std::time::Instant;

use serde::Serialize;

use super::BenchError;
use crate::config::Settings;
use crate::tenants::customers::{self, Dunning, Filter, Sort};

/// One page's latency.
#[derive(Debug, Clone, Serialize)]
pub struct PageLatency {
    /// Which page.
    pub page: String,
    /// p50 (ms).
    pub p50_ms: f64,
    /// p99 (ms).
    pub p99_ms: f64,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct CustomersBenchReport {
    /// Tenants seeded (the list holds every tenant in the database, these and any others).
    pub tenants: usize,
    /// Reads per page.
    pub reads: u64,
    /// Each page's latency.
    pub pages: Vec<PageLatency>,
}

/// Runs the benchmark.
pub async fn run(settings: Settings, tenants: usize, n: u64) -> Result<CustomersBenchReport, BenchError> {
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("bench-{}-", &run_id[..8]);
    let state = crate::app::AppState::build(settings)?;
    let pool = &state.system_pool;
    seed(pool, &prefix, tenants).await?;
    settle(state.settings.owner_database_url.as_ref()).await?;
    let result = measure(pool, &prefix, n).await;
    remove(pool, &prefix).await?;
    Ok(CustomersBenchReport { tenants, reads: n, pages: result? })
}

/// The seeded tables as autovacuum leaves them between bursts: the row versions the seed's
/// own list refreshes left behind gone, the visibility map set (an index-only read skips the
/// heap) and statistics current. As the owner role, the only one that may; skipped without it.
async fn settle(owner_url: Option<&secrecy::SecretString>) -> Result<(), sqlx::Error> {
    use secrecy::ExposeSecret;
    let Some(url) = owner_url else { return Ok(()) };
    super::as_owner(url.expose_secret(), &["VACUUM ANALYZE tenants, subscriptions, dunning_cases, tenant_activity, entitlements, customer_list"]).await
}

pub(super) async fn seed(pool: &crate::db::SystemPool, prefix: &str, tenants: usize) -> Result<(), sqlx::Error> {
    let n = i64::try_from(tenants).unwrap_or(i64::MAX);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN;
         CREATE TEMP TABLE bench_seed ON COMMIT DROP AS
             SELECT gen_random_uuid() AS id, g AS n FROM generate_series(1, {n}) g;
         INSERT INTO tenants (id, name, external_id, created_at)
             SELECT id, '{prefix}' || n, '{prefix}' || n, now() - make_interval(mins => n::int) FROM bench_seed;
         INSERT INTO customers (id, tenant_id, stripe_updated_at) SELECT 'cus_{prefix}' || n, id, now() FROM bench_seed WHERE n % 10 <> 0;
         -- One tenant in a thousand trialing, and one in a thousand on a price of its own: the
         -- rare filters an operator looks for.
         INSERT INTO subscriptions (id, tenant_id, customer_id, status, stripe_updated_at, mrr_minor, mrr_currency, price_id)
             SELECT 'sub_{prefix}' || n, id, 'cus_{prefix}' || n,
                    CASE WHEN n % 10 = 1 THEN 'past_due' WHEN n % 1000 = 2 THEN 'trialing' ELSE 'active' END, now(),
                    (n % 97) * 500, CASE WHEN n % 7 = 0 THEN 'eur' ELSE 'usd' END,
                    CASE WHEN n % 1000 = 3 THEN 'price_{prefix}rare' END
             FROM bench_seed WHERE n % 10 <> 0;
         INSERT INTO dunning_cases (tenant_id, invoice_id, customer_id, opened_at, restricted)
             SELECT id, 'in_{prefix}' || n, 'cus_{prefix}' || n, now() - interval '3 days', n % 20 = 1 FROM bench_seed WHERE n % 10 = 1;
         INSERT INTO tenant_activity (tenant_id, last_seen_at) SELECT id, now() - make_interval(secs => n) FROM bench_seed WHERE n % 4 <> 0;
         COMMIT;"
    )))
    .execute(&pool.0)
    .await?;
    sqlx::query("ANALYZE tenants, subscriptions, dunning_cases, tenant_activity, entitlements").execute(&pool.0).await?;
    Ok(())
}

async fn measure(pool: &crate::db::SystemPool, prefix: &str, n: u64) -> Result<Vec<PageLatency>, BenchError> {
    let deep = {
        // The cursor 50 pages of 50 in.
        let mut cursor: Option<String> = None;
        for _ in 0..50 {
            cursor = customers::page(pool, &Filter::default(), Sort::Mrr, cursor.as_deref(), 50).await.map_err(list_error)?.next_cursor;
        }
        cursor
    };
    let in_dunning = Filter { dunning: Some(Dunning::Open), ..Filter::default() };
    let search = Filter { text: Some(format!("{prefix}77")), ..Filter::default() };
    let past_due = Filter { status: Some("past_due".into()), ..Filter::default() };
    let trialing = Filter { status: Some("trialing".into()), ..Filter::default() };
    let rare_price = Filter { plan: Some(format!("price_{prefix}rare")), ..Filter::default() };
    let pages: Vec<(&str, Filter, Sort, Option<String>, i64)> = vec![
        ("first page by MRR (50)", Filter::default(), Sort::Mrr, None, 50),
        ("ten highest-MRR tenants in dunning", in_dunning, Sort::Mrr, None, 10),
        ("search by name (50)", search, Sort::Mrr, None, 50),
        ("by last activity (50)", Filter::default(), Sort::Activity, None, 50),
        ("page 51 by MRR through the cursor (50)", Filter::default(), Sort::Mrr, deep, 50),
        ("past_due (a tenth) by MRR (50)", past_due, Sort::Mrr, None, 50),
        ("trialing (one in a thousand) by MRR (50)", trialing, Sort::Mrr, None, 50),
        ("a price one in a thousand pays, by MRR (50)", rare_price, Sort::Mrr, None, 50),
    ];
    let mut out = Vec::new();
    for (name, filter, sort, cursor, limit) in pages {
        let mut h = super::latency_histogram().ok_or_else(|| BenchError::Incomplete { done: 0, n, secs: 0, detail: "histogram".into() })?;
        for _ in 0..n {
            let started = Instant::now();
            customers::page(pool, &filter, sort, cursor.as_deref(), limit).await.map_err(list_error)?;
            let _ = h.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
        }
        let (p50_ms, p99_ms) = super::p50_p99_ms(&h);
        out.push(PageLatency { page: name.to_owned(), p50_ms, p99_ms });
    }
    Ok(out)
}

fn list_error(e: customers::ListError) -> BenchError {
    match e {
        customers::ListError::Db(e) => BenchError::Db(e),
        other => BenchError::Incomplete { done: 0, n: 0, secs: 0, detail: other.to_string() },
    }
}

pub(super) async fn remove(pool: &crate::db::SystemPool, prefix: &str) -> Result<(), sqlx::Error> {
    let like = format!("{prefix}%");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN;
         DELETE FROM tenant_activity WHERE tenant_id IN (SELECT id FROM tenants WHERE name LIKE '{like}');
         DELETE FROM dunning_cases WHERE tenant_id IN (SELECT id FROM tenants WHERE name LIKE '{like}');
         DELETE FROM subscriptions WHERE tenant_id IN (SELECT id FROM tenants WHERE name LIKE '{like}');
         DELETE FROM customers WHERE tenant_id IN (SELECT id FROM tenants WHERE name LIKE '{like}');
         DELETE FROM tenants WHERE name LIKE '{like}';
         COMMIT;"
    )))
    .execute(&pool.0)
    .await?;
    Ok(())
}
