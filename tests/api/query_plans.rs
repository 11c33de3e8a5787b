//! The hot statements stay index-bound as the tables grow: each is planned (EXPLAIN, the plan
//! PostgreSQL would run with the statement's own values) against tables filled and analysed at a
//! volume where a sequential scan would cost far more than an index, and no plan may scan a
//! growing table whole. The same statement texts the code runs, from their owning modules.

use ballast::newtypes::TenantId;
use serde_json::Value;

use crate::support::TestApp;

/// The growing tables filled here: none may be read whole by a hot statement. (Empty tables
/// are scanned whole by any planner, for nothing: they are not held to it.)
const GROWING: [&str; 6] = ["stripe_events", "audit_log", "entitlements", "tenants", "customer_list", "tenant_activity"];

/// Every (node type, relation) of a JSON plan.
fn nodes(plan: &Value, out: &mut Vec<(String, String)>) {
    if let Some(node) = plan.get("Node Type").and_then(Value::as_str) {
        out.push((node.to_owned(), plan.get("Relation Name").and_then(Value::as_str).unwrap_or_default().to_owned()));
    }
    for child in plan.get("Plans").and_then(Value::as_array).into_iter().flatten() {
        nodes(child, out);
    }
}

fn whole_scans(plan: &Value) -> Vec<String> {
    let mut all = Vec::new();
    nodes(&plan[0]["Plan"], &mut all);
    all.into_iter().filter(|(node, rel)| node == "Seq Scan" && growing(rel)).map(|(_, rel)| rel).collect()
}

/// Whether `rel` is a growing table, or the filled partition of one (the audit log's: its first,
/// converted partition holds every row seeded here; the months ahead are empty).
fn growing(rel: &str) -> bool {
    GROWING.iter().any(|g| rel == *g || rel == format!("{g}_legacy"))
}

#[tokio::test]
async fn the_hot_statements_read_growing_tables_through_indexes_at_volume() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let system = &app.state.system_pool.0;
    // 20,000 tenants (each with its customer-list row); 200,000 Stripe events and 100,000 audit
    // rows spread over them; five entitlements each; three in four have called the API.
    sqlx::raw_sql(
        "INSERT INTO tenants (id, name) SELECT gen_random_uuid(), 'plans-' || g FROM generate_series(1, 20000) g;
         CREATE TEMP TABLE t AS SELECT id, row_number() OVER (ORDER BY id) - 1 AS i FROM tenants;
         INSERT INTO stripe_events (id, type, tenant_id, stripe_created, payload, status, received_at, processed_at)
           SELECT 'evt_plans_' || g, 'invoice.paid', t.id, now() - make_interval(secs => g), '{}', 'processed', now() - make_interval(secs => g), now()
           FROM generate_series(1, 200000) g JOIN t ON t.i = g % 20000;
         INSERT INTO audit_log (tenant_id, actor, action, outcome, at)
           SELECT t.id, 'ops', 'overrides.set', 'ok', now() - make_interval(secs => g) FROM generate_series(1, 100000) g JOIN t ON t.i = g % 20000;
         INSERT INTO entitlements (tenant_id, feature, enabled, source)
           SELECT t.id, f, true, 'plan' FROM t, unnest(ARRAY['projects', 'seats', 'sso', 'api_calls', 'exports']) f;
         INSERT INTO tenant_activity (tenant_id, last_seen_at) SELECT id, now() - make_interval(secs => i::int) FROM t WHERE i % 4 <> 0;
         ANALYZE;",
    )
    .execute(system)
    .await
    .expect("seed");
    let tenant: uuid::Uuid = sqlx::query_scalar("SELECT id FROM tenants WHERE name = 'plans-4242'").fetch_one(system).await.expect("tenant");
    let tenant = TenantId(tenant);
    let mut checked = Vec::new();

    // The webhook claim (and the grouped apply's waiting events), in the tenant's transaction.
    let mut tx = app.state.tenant_pool.begin(tenant).await.expect("tenant tx");
    let sql = format!("EXPLAIN (FORMAT JSON) {}", ballast::stripe::inbox::claim_statement(false));
    let plan: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind("evt_plans_4242").bind(100i64).fetch_one(&mut *tx).await.expect("explain claim");
    checked.push(("webhook claim and grouped apply", whole_scans(&plan)));
    // The entitlement read on a cache miss.
    let sql = format!("EXPLAIN (FORMAT JSON) {}", ballast::billing::entitlements::read_statement());
    let plan: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut *tx).await.expect("explain entitlements");
    checked.push(("entitlement read", whole_scans(&plan)));
    tx.rollback().await.expect("rollback");
    // A tenant's timeline, first page.
    let sql = format!("EXPLAIN (FORMAT JSON) {}", ballast::tenants::timeline::QUERY);
    let none: Option<chrono::DateTime<chrono::Utc>> = None;
    let plan: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(tenant.0)
        .bind(none)
        .bind(none)
        .bind(None::<String>)
        .bind(None::<String>)
        .bind(50i64)
        .fetch_one(system)
        .await
        .expect("explain timeline");
    checked.push(("a tenant's timeline", whole_scans(&plan)));

    // The admin customer list's first and second page in each sort.
    use ballast::tenants::customers::{self, Filter, Sort};
    let pool = &app.state.system_pool;
    for (sort, name) in [(Sort::Mrr, "customer list by MRR"), (Sort::Activity, "customer list by last activity"), (Sort::Created, "customer list by creation")] {
        let first = customers::page(pool, &Filter::default(), sort, None, 50).await.expect("first page");
        assert_eq!((first.customers.len(), first.more, first.more_counted_to_cap), (50, 1000, true), "{name}");
        for cursor in [None, first.next_cursor.as_deref()] {
            let plan = customers::explain(pool, &Filter::default(), sort, cursor, 50).await.expect("explain list");
            checked.push((name, whole_scans(&plan)));
        }
    }

    // A search by part of a name, through the trigram indexes. (Its tenants in dunning are held
    // to their index by `bench scale`: here their 400 rows, all of them counted for "N more",
    // are rightly cheaper to find by reading the 20,000.)
    let search = Filter { text: Some("ans-424".into()), ..Filter::default() };
    let found = customers::page(pool, &search, Sort::Mrr, None, 10).await.expect("search");
    assert_eq!(found.customers.len(), 10, "plans-424 and plans-4240 to 4249: 11 tenants");
    let plan = customers::explain(pool, &search, Sort::Mrr, None, 10).await.expect("explain search");
    checked.push(("customer list, a search", whole_scans(&plan)));

    // A status and a price twenty of the 20,000 have: found through their own indexes (0077,
    // 0079), not by walking the MRR index past every other tenant.
    sqlx::raw_sql(
        "CREATE TEMP TABLE rare AS SELECT id, i FROM (SELECT id, row_number() OVER (ORDER BY id) AS i FROM tenants) n WHERE i % 1000 = 7;
         INSERT INTO customers (id, tenant_id, stripe_updated_at) SELECT 'cus_rare_' || i, id, now() FROM rare;
         INSERT INTO subscriptions (id, tenant_id, customer_id, status, stripe_updated_at, mrr_minor, mrr_currency, price_id)
           SELECT 'sub_rare_' || i, id, 'cus_rare_' || i, 'trialing', now(), 100 * i, 'usd', 'price_rare' FROM rare;
         ANALYZE customer_list;",
    )
    .execute(system)
    .await
    .expect("rare subscriptions");
    for (filter, index) in [
        (Filter { status: Some("trialing".into()), ..Filter::default() }, "customer_list_status_mrr_idx"),
        (Filter { plan: Some("price_rare".into()), ..Filter::default() }, "customer_list_price_mrr_idx"),
    ] {
        let found = customers::page(pool, &filter, Sort::Mrr, None, 50).await.expect("filtered");
        assert_eq!(found.customers.len(), 20, "{filter:?}");
        let plan = customers::explain(pool, &filter, Sort::Mrr, None, 50).await.expect("explain filtered");
        assert!(plan.to_string().contains(index), "{filter:?} does not read {index}: {plan}");
        checked.push(("customer list, a rare filter", whole_scans(&plan)));
    }

    let scanning: Vec<_> = checked.iter().filter(|(_, scans)| !scans.is_empty()).collect();
    assert!(scanning.is_empty(), "hot statements reading a growing table whole: {scanning:?}");
}
