//! A `stripe.event` job names its event's month (its Stripe creation time, the inbox's
//! partition key) once every live member reads that argument, and its claim then reaches that
//! month's partition alone; a job without it, or with a month its row is not in, applies by
//! the event's id as before.

use ballast::health::roster;
use ballast::newtypes::{EventId, TenantId};
use ballast::stripe::inbox::{self, JOBS_CARRY_CREATED_SINCE};
use serde_json::Value;

use crate::webhook_groups::{intake_with_tenant, rows, subscription, subscription_event, work_off};

/// The `created` argument of event `id`'s queued job.
async fn job_created(app: &crate::support::TestApp, id: &str) -> Option<i64> {
    let job = app.state.queue.find(&format!("stripe.event:{id}")).await.expect("find").expect("the event's job");
    job.payload.get("created").and_then(Value::as_i64)
}

#[tokio::test]
async fn jobs_carry_the_events_month_only_while_every_member_reads_it_and_apply_with_or_without_it() {
    let (app, tenant, run, customer) = intake_with_tenant().await;
    // The member's roster task records the fleet's releases once it has announced itself: this
    // release alone (a condition, polled).
    let started = std::time::Instant::now();
    while !app.state.fleet_releases.all_at_least(&JOBS_CARRY_CREATED_SINCE) {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "the roster was never read");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let base = chrono::Utc::now().timestamp() - 3_600;
    assert_eq!(app.deliver(&subscription_event(&run, 0, base, &customer, false)).await, 200);
    assert_eq!(job_created(&app, &format!("evt_group{run}_0")).await, Some(base), "the job names its event's month");

    // A member of the release before joins (a rollback under way): its `stripe.event` refuses
    // an argument it does not know, so the next jobs go without it once the roster says so.
    use redis::AsyncCommands;
    let now = chrono::Utc::now().timestamp();
    let old = serde_json::json!({"roles": ["worker"], "version": "0.11.0+5d1e2f0", "started_at": now, "seen": now}).to_string();
    let mut redis = app.state.redis.clone();
    let () = redis.hset(app.state.keys.fleet_members(), "worker-old:7", old).await.expect("announce");
    app.state.fleet_releases.record(&roster::members(&app.state.redis, &app.state.keys).await.expect("members"));
    assert!(!app.state.fleet_releases.all_at_least(&JOBS_CARRY_CREATED_SINCE));
    assert_eq!(app.deliver(&subscription_event(&run, 1, base, &customer, false)).await, 200);
    assert_eq!(job_created(&app, &format!("evt_group{run}_1")).await, None, "not while an older member runs");
    let () = redis.hdel(app.state.keys.fleet_members(), "worker-old:7").await.expect("withdraw");

    // A month the row is not in is a hint that misses, not a condition: the claim finds the
    // row by its id (rolled back: its own job applies it below).
    assert_eq!(app.deliver(&subscription_event(&run, 2, base, &customer, false)).await, 200);
    let mut tx = app.state.tenant_pool.begin_planned_once(TenantId(tenant)).await.expect("tenant tx");
    let wrong = chrono::DateTime::from_timestamp(base + 2 - 86_400 * 62, 0);
    let claimed = inbox::claim(&mut tx, &EventId(format!("evt_group{run}_2")), wrong, 0).await.expect("claim");
    assert!(matches!(claimed, Some(inbox::Claim::Claimed { .. })), "{claimed:?}");
    tx.rollback().await.expect("rollback");

    // With the month and without it, each event is applied once and the mirror converges.
    work_off(&app).await;
    let applied: Vec<(String, i32)> = rows(&app, &run).await.into_iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(applied, vec![("processed".to_owned(), 1); 3]);
    assert_eq!(subscription(&app, &run).await, (crate::support::stripe_sim::STARTER.0.to_owned(), base + 2));
}

/// Scan nodes on the inbox's partitions under the plan node named `name` (a CTE's subplan).
fn inbox_scans_under(plan: &Value, name: &str, inside: bool) -> usize {
    let inside = inside || plan.get("Subplan Name").and_then(Value::as_str) == Some(name);
    let here = usize::from(
        inside
            && plan.get("Node Type").and_then(Value::as_str).is_some_and(|n| n.ends_with("Scan"))
            && plan.get("Relation Name").and_then(Value::as_str).is_some_and(|r| r.starts_with("stripe_events")),
    );
    here + plan.get("Plans").and_then(Value::as_array).into_iter().flatten().map(|child| inbox_scans_under(child, name, inside)).sum::<usize>()
}

/// The claim as a job runs it (its transaction's plans generic): named by its month, the row's
/// update reaches one partition; by its id alone, every partition.
#[tokio::test]
async fn the_claim_named_by_its_month_reaches_one_partition_of_the_inbox() {
    let app = crate::support::TestApp::builder().roles(&[]).spawn().await;
    let tenant = TenantId(app.tenant("months").await);
    let partitions: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_inherits WHERE inhparent = 'stripe_events'::regclass")
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("partitions");
    assert!(partitions >= 4, "the inbox's months ahead, its first partition and its default: {partitions}");
    let created = chrono::Utc::now();
    let mut tx = app.state.tenant_pool.begin_planned_once(tenant).await.expect("tenant tx");
    let mut own_scans = Vec::new();
    for in_month in [true, false] {
        let sql = format!("EXPLAIN (FORMAT JSON) {}", inbox::claim_statement(in_month));
        let query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind("evt_months_1").bind(10i64);
        let query = if in_month { query.bind(created) } else { query };
        let plan: Value = query.fetch_one(&mut *tx).await.expect("explain claim");
        own_scans.push(inbox_scans_under(&plan[0]["Plan"], "CTE own", false));
    }
    tx.rollback().await.expect("rollback");
    assert_eq!(own_scans, vec![1, usize::try_from(partitions).expect("count")]);
}
