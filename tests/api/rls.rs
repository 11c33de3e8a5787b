//! Row-level security over every table the PostgreSQL catalogue lists: no context → no rows;
//! tenant A's context cannot read, update or insert tenant B's rows. A new table without
//! RLS, or without seed rows here, fails this test.

use ballast::db::TenantPool;
use ballast::newtypes::TenantId;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::support::TestDb;

/// Tables that hold no tenant data, each with the reason.
pub(crate) const GLOBAL_TABLES: &[(&str, &str)] = &[
    ("_sqlx_migrations", "schema history, no tenant data"),
    ("usage_flushes", "which usage windows were flushed, fleet-wide; no tenant data"),
    ("feature_flags", "product switches; a tenant's answer is a hash of (flag, tenant), no tenant named"),
    ("slo_minutes", "good/valid counts of the product's SLOs; no tenant named"),
    ("slo_alerts", "alert state of the product's SLOs; no tenant named"),
    ("slo_notifications", "alert notifications; no tenant named"),
    ("loadtest_runs", "capacity baselines of the fleet; no tenant named"),
    ("fleet_alerts", "state of the fleet's own health alerts; no tenant named; the app role has no access"),
    ("fleet_health_rounds", "which member evaluated the fleet's health last; the app role has no access"),
    ("slo_status", "each SLO's latest SLI and budget; no tenant named; the app role has no access"),
    ("probe_results", "uptime checks of the public listeners; no tenant named; the app role has no access"),
    ("backup_runs", "each backup and restore rehearsal: files, checksums, counts; no tenant named; the app role has no access"),
    ("maintenance_status", "last run of each fleet-wide maintenance service: counts and errors, no tenant named; the app role has no access"),
    ("operators", "the people who run Ballast and their hashed tokens; no tenant data; the app role has no access"),
    ("admin_runs", "operators' record of admin job runs; reports name many tenants' objects, so the app role has no access at all"),
    ("console_sessions", "operators' signed-in console sessions (hashed cookies, CSRF tokens); no tenant data; the app role has no access"),
    ("partition_retirements", "which monthly partitions were retired, when, and where their archive is; counts, no tenant named; the app role has no access"),
    ("bulk_operations", "an operator's change to a cohort across tenants (its targets, tenant data, are in bulk_targets); the app role has no access"),
];

/// The column a table's policy keys on.
pub(crate) fn tenant_column(table: &str) -> &'static str {
    if table == "tenants" { "id" } else { "tenant_id" }
}

/// Inserts one row per tenant-scoped table for `tenant`, as the system role.
pub(crate) async fn seed(system: &PgPool, tenant: Uuid, tag: &str) {
    let sqls = [
        "INSERT INTO tenants (id, name) VALUES ($1, 'Tenant ' || $2)",
        "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash) VALUES (gen_random_uuid(), $1, 'k', 'bk_' || $2, '\\x00')",
        "INSERT INTO stripe_events (id, type, tenant_id, stripe_created, payload) VALUES ('evt_' || $2, 'invoice.paid', $1, now(), '{}')",
        "INSERT INTO customers (id, tenant_id, email, stripe_updated_at) VALUES ('cus_' || $2, $1, $2 || '@example.com', now())",
        "INSERT INTO tenant_customers (customer_id, tenant_id) VALUES ('cus_' || $2, $1)",
        "INSERT INTO payment_intents (id, tenant_id, customer_id, amount, currency, status, stripe_updated_at) VALUES ('pi_' || $2, $1, 'cus_' || $2, 50, 'usd', 'processing', now())",
        "INSERT INTO refunds (id, tenant_id, charge_id, amount, currency, status, stripe_updated_at) VALUES ('re_' || $2, $1, 'ch_' || $2, 50, 'usd', 'succeeded', now())",
        "INSERT INTO subscriptions (id, tenant_id, customer_id, status, stripe_updated_at) VALUES ('sub_' || $2, $1, 'cus_' || $2, 'active', now())",
        "INSERT INTO invoices (id, tenant_id, customer_id, subscription_id, status, currency, stripe_updated_at) VALUES ('in_' || $2, $1, 'cus_' || $2, 'sub_' || $2, 'open', 'usd', now())",
        "INSERT INTO entitlements (tenant_id, feature, enabled, source) VALUES ($1, 'feature_' || $2, true, 'plan')",
        "INSERT INTO audit_log (tenant_id, actor, action, outcome) VALUES ($1, 'test', 'seed', 'ok')",
        "INSERT INTO charges (id, tenant_id, customer_id, currency, amount, stripe_updated_at) VALUES ('ch_' || $2, $1, 'cus_' || $2, 'usd', 100, now())",
        "INSERT INTO invoice_payments (id, tenant_id, invoice_id, payment_intent, status, stripe_updated_at) VALUES ('inpay_' || $2, $1, 'in_' || $2, 'pi_' || $2, 'paid', now())",
        "INSERT INTO disputes (id, tenant_id, charge_id, status, amount, currency, stripe_updated_at) VALUES ('dp_' || $2, $1, 'ch_' || $2, 'needs_response', 100, 'usd', now())",
        "INSERT INTO billing_effects (tenant_id, effect_key, kind, subject_id, event_id) VALUES ($1, 'k_' || $2, 'email', 'x', 'evt_' || $2)",
        "INSERT INTO dunning_cases (id, tenant_id, invoice_id, customer_id, opened_at) VALUES (gen_random_uuid(), $1, 'in_' || $2, 'cus_' || $2, now())",
        "INSERT INTO dunning_actions (tenant_id, case_id, stage, action, outcome) SELECT $1, id, 'email@0', 'email', 'queued' FROM dunning_cases WHERE invoice_id = 'in_' || $2",
        "INSERT INTO email_outbox (id, tenant_id, dedup_key, template, to_address, subject, body_text, body_html, message_id) VALUES (ballast_uuid_v7(), $1, 'mail_' || $2, 't', $2 || '@example.com', 's', 'x', 'x', '<m_' || $2 || '@x>')",
        "INSERT INTO usage_ledger (id, tenant_id, metric, usage_minute, flush_id, quantity) VALUES (gen_random_uuid(), $1, 'metric_' || $2, now(), 'f', 1)",
        "INSERT INTO usage_items (tenant_id, idempotency_key, metric, quantity, usage_minute, received_at) VALUES ($1, 'k_' || $2, 'metric_' || $2, 1, now(), now())",
        "INSERT INTO job_dead_letters (id, job_id, kind, tenant_id, envelope, attempts, error) VALUES (gen_random_uuid(), 'job_' || $2, 'noop', $1, '{}', 1, 'x')",
        "INSERT INTO job_status (id, tenant_id, kind, state, id_at) VALUES ('job_' || $2, $1, 'noop', 'queued', ballast_job_id_time('job_' || $2))",
        "INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, secret) VALUES ($1, $1, 'https://' || $2 || '.example/in', ARRAY['x'], 'whsec_' || $2)",
        // Messages, deliveries and attempts are partitioned by a UUIDv7 (theirs, and their
        // delivery's): both tenants' rows in this month's partition, not wherever a random id
        // would fall.
        "INSERT INTO webhook_messages (id, tenant_id, event_type, body) VALUES (ballast_uuid_v7(), $1, 'x', '{}')",
        "INSERT INTO webhook_deliveries (id, tenant_id, message_id, endpoint_id) SELECT ballast_uuid_v7(), $1, id, $1 FROM webhook_messages WHERE tenant_id = $1",
        "INSERT INTO entitlement_overrides (id, tenant_id, kind, target, reason, created_by) VALUES (gen_random_uuid(), $1, 'grant', 'feature_' || $2, 'seeded', 'test')",
        "INSERT INTO tenant_activity (tenant_id, last_seen_at) VALUES ($1, now())",
        "INSERT INTO support_sessions (id, tenant_id, operator, reason, token_prefix, token_hash, expires_at) VALUES (gen_random_uuid(), $1, 'otto', 'seeded', 'p' || $2, '\\x00', now())",
        "INSERT INTO feature_checks (tenant_id, feature, day, checks) VALUES ($1, 'feature_' || $2, current_date, 1)",
        "INSERT INTO bulk_operations (id, kind, params, actor) VALUES ($1, 'cancel_at_period_end', jsonb_build_object('seed', $2), 'test')",
        "INSERT INTO bulk_targets (operation_id, subscription_id, tenant_id, before) VALUES ($1, 'sub_' || $2, $1, '{}')",
        "INSERT INTO webhook_attempts (id, tenant_id, delivery_id, attempt, attempted_at, duration_ms, status_code, response_body) VALUES ($1, $1, ballast_uuid_v7(), 1, now(), 3, 500, 'no ' || $2)",
    ];
    for sql in sqls {
        sqlx::query(sql).bind(tenant).bind(tag).execute(system).await.unwrap_or_else(|e| panic!("seed {sql}: {e}"));
    }
}

async fn pool(url: &str) -> PgPool {
    PgPoolOptions::new().max_connections(2).connect(url).await.expect("connect")
}

#[tokio::test]
async fn every_table_isolates_tenants() {
    let db = TestDb::create().await;
    let system = pool(&db.url("ballast_system")).await;
    // The app role as the fleet reaches it (through PgBouncer on that pass of the suite).
    let app_pool = pool(&crate::support::db::fleet_url("ballast_app", &db.name)).await;
    let tenant_pool = TenantPool::new(app_pool.clone());
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    seed(&system, a, "a").await;
    seed(&system, b, "b").await;

    let tables: Vec<(String, bool, bool, bool)> = sqlx::query(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity, c.relispartition
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1",
    )
    .fetch_all(&system)
    .await
    .expect("catalogue")
    .into_iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect();
    assert!(tables.iter().any(|t| t.0.starts_with("audit_log_p") && t.3), "the audit log's monthly partitions are listed: {tables:?}");
    assert!(tables.len() >= 9, "{tables:?}");
    // Admin run reports name many tenants' objects: the app role cannot read them at all.
    let denied = sqlx::query("SELECT 1 FROM admin_runs").fetch_optional(&app_pool).await;
    assert!(denied.is_err_and(|e| e.to_string().contains("permission denied")), "admin_runs is closed to the app role");

    for (table, enabled, forced, partition) in &tables {
        if GLOBAL_TABLES.iter().any(|(t, _)| t == table) {
            continue;
        }
        assert!(*enabled && *forced, "{table}: ENABLE and FORCE ROW LEVEL SECURITY required");
        let col = tenant_column(table);
        let has_col: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2)",
        )
        .bind(table)
        .bind(col)
        .fetch_one(&system)
        .await
        .expect("columns");
        assert!(has_col, "{table}: no {col} column; give it one or list it in GLOBAL_TABLES with a reason");

        // A partition is read through its parent, whose policy holds; its own holds when it is
        // named. The months ahead are empty: their policy is checked, their rows cannot be.
        if *partition {
            let policies: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_policies WHERE schemaname = 'public' AND tablename = $1 AND policyname = 'tenant_isolation'")
                .bind(table)
                .fetch_one(&system)
                .await
                .expect("policies");
            assert_eq!(policies, 1, "{table}: a partition needs the tenant_isolation policy too");
            let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).fetch_one(&system).await.expect("count");
            if rows == 0 {
                continue;
            }
        }
        // The seed must cover the table, so the checks below are not vacuous.
        for t in [a, b] {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table} WHERE {col} = $1")))
                .bind(t)
                .fetch_one(&system)
                .await
                .expect("count");
            assert!(n > 0, "{table}: add seed rows for it in tests/api/rls.rs");
        }

        // No context: no rows, even for the app role that has SELECT on everything.
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).fetch_one(&app_pool).await.expect("count");
        assert_eq!(n, 0, "{table}: rows visible without a tenant context");

        // A's context: only A's rows; B's rows can be neither updated nor deleted.
        let mut tx = tenant_pool.begin(TenantId(a)).await.expect("tx");
        let seen: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {col} FROM {table}"))).fetch_all(&mut *tx).await.expect("select");
        assert!(!seen.is_empty() && seen.iter().all(|t| *t == a), "{table}: A sees {seen:?}");
        let updated = sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE {table} SET {col} = {col} WHERE {col} = $1")))
            .bind(b)
            .execute(&mut *tx)
            .await
            .expect("update")
            .rows_affected();
        assert_eq!(updated, 0, "{table}: A updated B's rows");
        let deleted = sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE {col} = $1"))).bind(b).execute(&mut *tx).await.expect("delete").rows_affected();
        assert_eq!(deleted, 0, "{table}: A deleted B's rows");
        tx.rollback().await.expect("rollback");

        // A's context: inserting a row for B is refused by the policy's WITH CHECK.
        let b_row: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT to_jsonb(t) FROM {table} t WHERE {col} = $1 LIMIT 1")))
            .bind(b)
            .fetch_one(&system)
            .await
            .expect("b row");
        let mut tx = tenant_pool.begin(TenantId(a)).await.expect("tx");
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = $1 AND is_identity = 'NO' ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&system)
        .await
        .expect("columns");
        let list = columns.join(", ");
        let err = sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {table} ({list}) SELECT {list} FROM jsonb_populate_record(NULL::{table}, $1)")))
            .bind(&b_row)
            .execute(&mut *tx)
            .await
            .expect_err(&format!("{table}: A inserted a row for B"));
        let code = err.as_database_error().and_then(|d| d.code()).map(|c| c.to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{table}: expected an RLS violation, got {err}");
        tx.rollback().await.expect("rollback");
    }

    // After a tenant transaction ends, the pooled connection carries no context.
    let tx = tenant_pool.begin(TenantId(a)).await.expect("tx");
    tx.commit().await.expect("commit");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM customers").fetch_one(&app_pool).await.expect("count");
    assert_eq!(n, 0);
}
