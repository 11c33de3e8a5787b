//! A `stripe.event` job applies its tenant's other waiting events with its own, in one
//! transaction (one entitlements recompute, one commit), and a group with an event it cannot
//! apply rolls back whole and leaves each event to its own job.

use std::collections::BTreeSet;

use ballast::app::{Member, Role};
use ballast::queue::worker::{JobObserver, WorkerOptions};
use serde_json::json;

use crate::support::TestApp;
use crate::support::stripe_sim;

/// The tenant's `k`-th subscription event: a plan change one second after the last, or with
/// `broken`, a subscription Ballast cannot apply (it has no status).
pub(crate) fn subscription_event(run: &str, k: i64, base: i64, customer: &str, broken: bool) -> serde_json::Value {
    let (price, product, _) = if k % 2 == 0 { stripe_sim::STARTER } else { stripe_sim::PRO };
    let sub = format!("sub_group{run}");
    let mut event = json!({
        "id": format!("evt_group{run}_{k}"), "object": "event", "livemode": false, "created": base + k,
        "type": if k == 0 { "customer.subscription.created" } else { "customer.subscription.updated" },
        "data": {"object": {
            "id": sub, "object": "subscription", "customer": customer, "status": "active",
            "cancel_at_period_end": false, "created": base, "currency": "usd", "livemode": false, "metadata": {},
            "items": {"object": "list", "has_more": false, "data": [{
                "id": format!("si_{sub}"), "object": "subscription_item", "quantity": 1, "subscription": sub,
                "current_period_start": base, "current_period_end": base + 30 * 86_400,
                "price": {"id": price, "object": "price", "product": product, "currency": "usd"},
            }]},
        }},
    });
    if broken && let Some(object) = event.pointer_mut("/data/object").and_then(|o| o.as_object_mut()) {
        object.remove("status");
    }
    event
}

/// The catalogue's `stripe.event` entry with one slot. With several, jobs started together
/// each claim their own row before the first takes the tenant's lock, and each of those applies
/// in a transaction of its own (the claim skips rows another holds): how many groups a burst
/// makes then depends on timing. One slot makes it exact: the first job's group takes them all.
fn one_slot_entry() -> String {
    crate::support::catalogue_entry_with("stripe.event", "concurrency = 1")
}

/// An intake-only app and a tenant mapped to a customer; the run's tag.
pub(crate) async fn intake_with_tenant() -> (TestApp, uuid::Uuid, String, String) {
    let app = TestApp::builder().roles(&[Role::Api]).job_entry("stripe.event", &one_slot_entry()).spawn().await;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let customer = format!("cus_group{run}");
    let tenant = app.tenant("grouped").await;
    sqlx::query("UPDATE tenants SET stripe_customer_id = $2 WHERE id = $1")
        .bind(tenant)
        .bind(&customer)
        .execute(&app.state.system_pool.0)
        .await
        .expect("map the customer");
    (app, tenant, run, customer)
}

/// Starts a worker on the app's state once the events wait, drains the queue and stops it.
pub(crate) async fn work_off(app: &TestApp) {
    let worker = Member::start(app.state.clone(), &BTreeSet::from([Role::Worker]), WorkerOptions::new(crate::support::test_jobs::registry()))
        .await
        .expect("worker starts");
    app.drain().await;
    worker.shutdown().await;
}

/// (status, attempts, processed_at, last_error) of the run's events, in event order.
pub(crate) async fn rows(app: &TestApp, run: &str) -> Vec<(String, i32, Option<chrono::DateTime<chrono::Utc>>, Option<String>)> {
    sqlx::query_as("SELECT status, attempts, processed_at, last_error FROM stripe_events WHERE id LIKE $1 ORDER BY stripe_created")
        .bind(format!("evt_group{run}_%"))
        .fetch_all(&app.state.system_pool.0)
        .await
        .expect("inbox rows")
}

pub(crate) async fn subscription(app: &TestApp, run: &str) -> (String, i64) {
    let (price, at): (String, chrono::DateTime<chrono::Utc>) = sqlx::query_as("SELECT price_id, stripe_updated_at FROM subscriptions WHERE id = $1")
        .bind(format!("sub_group{run}"))
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("subscription");
    (price, at.timestamp())
}

#[tokio::test]
async fn a_tenants_waiting_events_apply_in_one_transaction_once_each_and_converge() {
    let (app, tenant, run, customer) = intake_with_tenant().await;
    let base = chrono::Utc::now().timestamp() - 3_600;
    const EVENTS: i64 = 20;
    // Delivered newest first: the group applies them oldest first all the same.
    for k in (0..EVENTS).rev() {
        assert_eq!(app.deliver(&subscription_event(&run, k, base, &customer, false)).await, 200);
    }
    work_off(&app).await;

    let rows = rows(&app, &run).await;
    assert_eq!(rows.len(), EVENTS as usize);
    assert!(rows.iter().all(|(status, attempts, _, _)| status == "processed" && *attempts == 1), "each applied once: {rows:?}");
    // One transaction: processed_at is its start time (now()), the same on every row; one
    // transaction per event would give each its own.
    let times: BTreeSet<_> = rows.iter().map(|(_, _, at, _)| *at).collect();
    assert_eq!(times.len(), 1, "one transaction applied the tenant's waiting events: {times:?}");
    // The mirror holds the last event, and the entitlements its plan (Pro has SSO).
    let last = EVENTS - 1;
    let (want_price, _, _) = if last % 2 == 0 { stripe_sim::STARTER } else { stripe_sim::PRO };
    assert_eq!(subscription(&app, &run).await, (want_price.to_owned(), base + last));
    let sso: Option<bool> = sqlx::query_scalar("SELECT enabled FROM entitlements WHERE tenant_id = $1 AND feature = 'sso'")
        .bind(tenant)
        .fetch_optional(&app.state.system_pool.0)
        .await
        .expect("entitlement");
    assert_eq!(sso, Some(true), "entitlements follow the last event's plan");
}

#[tokio::test]
async fn a_group_with_an_event_it_cannot_apply_rolls_back_and_each_other_event_applies_once() {
    let (app, _tenant, run, customer) = intake_with_tenant().await;
    let base = chrono::Utc::now().timestamp() - 3_600;
    assert_eq!(app.deliver(&subscription_event(&run, 0, base, &customer, false)).await, 200);
    // Newer than the first and without a status: refused by the handler wherever it is.
    assert_eq!(app.deliver(&subscription_event(&run, 1, base, &customer, true)).await, 200);
    assert_eq!(app.deliver(&subscription_event(&run, 2, base, &customer, false)).await, 200);
    work_off(&app).await;

    let rows = rows(&app, &run).await;
    assert_eq!(rows.len(), 3);
    for k in [0, 2] {
        let (status, attempts, _, _) = &rows[k];
        assert_eq!((status.as_str(), *attempts), ("processed", 1), "event {k}: applied once, rolled-back groups left no attempt: {rows:?}");
    }
    let (status, _, _, error) = &rows[1];
    assert_ne!(status, "processed", "the event without a status is not applied");
    assert!(error.as_deref().is_some_and(|e| e.contains("status")), "its own failure is recorded: {rows:?}");
    assert_eq!(subscription(&app, &run).await, (stripe_sim::STARTER.0.to_owned(), base + 2));
}

#[tokio::test]
async fn a_job_whose_event_is_already_applied_ends_without_waiting_for_the_tenants_lock() {
    let (app, tenant, run, customer) = intake_with_tenant().await;
    let base = chrono::Utc::now().timestamp() - 3_600;
    assert_eq!(app.deliver(&subscription_event(&run, 0, base, &customer, false)).await, 200);
    work_off(&app).await;
    assert_eq!(rows(&app, &run).await.iter().map(|r| (r.0.as_str(), r.1)).collect::<Vec<_>>(), vec![("processed", 1)]);

    // Another transaction of the tenant holds its lock (a long group, a dunning step) while the
    // event's job runs again, as the job of an event another's group applied does.
    let held = app.state.tenant_pool.begin_serialised(ballast::newtypes::TenantId(tenant)).await.expect("the tenant's lock");
    let event = ballast::newtypes::EventId(format!("evt_group{run}_0"));
    let job = ballast::stripe::inbox::ApplyEvent { event_id: event, tenant: Some(ballast::newtypes::TenantId(tenant)), created: None };
    app.state.queue.enqueue(ballast::queue::EnqueueRequest::typed(&job)).await.expect("queue the job");
    let ready: u64 = app.state.queue.stats().await.expect("stats").iter().map(|s| s.ready).sum();
    assert_eq!(ready, 1, "the job waits to run");
    // Drained with the lock still held: the job found its row done without queueing for it.
    work_off(&app).await;
    drop(held);
    assert_eq!(rows(&app, &run).await.iter().map(|r| (r.0.as_str(), r.1)).collect::<Vec<_>>(), vec![("processed", 1)], "not applied again");
}

/// Every completed run's report.
#[derive(Default)]
struct Reports(std::sync::Mutex<Vec<serde_json::Value>>);

impl JobObserver for Reports {
    fn completed(&self, _envelope: &ballast::queue::JobEnvelope, report: &ballast::queue::job::JobReport) {
        self.0.lock().expect("reports").push(report.clone());
    }
}

#[tokio::test]
async fn the_own_jobs_of_events_applied_in_a_group_end_without_opening_a_tenant_transaction() {
    let (app, tenant, run, customer) = intake_with_tenant().await;
    let base = chrono::Utc::now().timestamp() - 3_600;
    const EVENTS: i64 = 5;
    for k in 0..EVENTS {
        assert_eq!(app.deliver(&subscription_event(&run, k, base, &customer, false)).await, 200);
    }
    work_off(&app).await;
    let times: BTreeSet<_> = rows(&app, &run).await.iter().map(|r| r.2).collect();
    assert_eq!(times.len(), 1, "one group applied the tenant's events: {times:?}");

    // Their jobs again, as a job still queued behind the group runs: a grouped event's job ends
    // on this member's record of the group; without it, it opens a tenant transaction and the
    // claim finds the row done ("already done").
    for k in 0..EVENTS {
        let event_id = ballast::newtypes::EventId(format!("evt_group{run}_{k}"));
        let job = ballast::stripe::inbox::ApplyEvent { event_id, tenant: Some(ballast::newtypes::TenantId(tenant)), created: None };
        app.state.queue.enqueue(ballast::queue::EnqueueRequest::typed(&job)).await.expect("queue the job");
    }
    let reports = std::sync::Arc::new(Reports::default());
    let mut options = WorkerOptions::new(crate::support::test_jobs::registry());
    options.observer = reports.clone();
    let worker = Member::start(app.state.clone(), &BTreeSet::from([Role::Worker]), options).await.expect("worker starts");
    app.drain().await;
    worker.shutdown().await;

    let outcomes: Vec<String> = reports.0.lock().expect("reports").iter().filter_map(|r| r.get("outcome").and_then(|o| o.as_str()).map(str::to_owned)).collect();
    // The job whose event led the group has no hint (it applied its own event); the others do.
    let hinted = outcomes.iter().filter(|o| o.as_str() == "applied with another event of its tenant").count();
    assert_eq!(hinted, EVENTS as usize - 1, "each grouped event's job ended on the hint: {outcomes:?}");
    assert_eq!(outcomes.len(), EVENTS as usize, "every job ended: {outcomes:?}");
}

/// The group applies its events oldest first whatever order they were claimed in, and the
/// result depends on it: `past_due_since` is when the subscription first went past due, which
/// only the oldest of three past-due events tells (a newer one applied first would set its own
/// time, and the older one would then be skipped as stale).
#[tokio::test]
async fn a_group_claimed_newest_first_applies_oldest_first_and_keeps_when_it_went_past_due() {
    let (app, _tenant, run, customer) = intake_with_tenant().await;
    let base = chrono::Utc::now().timestamp() - 3_600;
    let past_due = |k: i64| {
        let mut event = subscription_event(&run, k, base, &customer, false);
        event["data"]["object"]["status"] = json!("past_due");
        event
    };
    // The oldest is delivered first, so its job leads the group and claims the two newer ones
    // with it: the group as claimed is [own = oldest, newer, newest].
    for k in 0..3 {
        assert_eq!(app.deliver(&past_due(k)).await, 200);
    }
    work_off(&app).await;

    let rows = rows(&app, &run).await;
    assert!(rows.iter().all(|(status, attempts, _, _)| status == "processed" && *attempts == 1), "{rows:?}");
    assert_eq!(rows.iter().map(|r| r.2).collect::<BTreeSet<_>>().len(), 1, "one group: {rows:?}");
    let since: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar("SELECT past_due_since FROM subscriptions WHERE id = $1")
        .bind(format!("sub_group{run}"))
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("subscription");
    assert_eq!(since.map(|t| t.timestamp()), Some(base), "past due since the oldest event, applied first");
}

/// Several `stripe.event` slots on one tenant's burst: every job claims its own row, and the
/// waiting rows a group takes are only those no other job holds (`SKIP LOCKED`). Without that,
/// a group holding the tenant's lock waits for a row whose job waits for the lock: PostgreSQL
/// breaks the deadlock by failing one, and its event is retried.
#[tokio::test]
async fn a_one_tenant_burst_on_many_slots_applies_each_event_once_without_a_deadlock() {
    let app = TestApp::builder().roles(&[Role::Api]).spawn().await;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let customer = format!("cus_group{run}");
    let tenant = app.tenant("burst").await;
    sqlx::query("UPDATE tenants SET stripe_customer_id = $2 WHERE id = $1").bind(tenant).bind(&customer).execute(&app.state.system_pool.0).await.expect("map");
    let base = chrono::Utc::now().timestamp() - 3_600;
    const EVENTS: i64 = 150;
    for k in 0..EVENTS {
        assert_eq!(app.deliver(&subscription_event(&run, k, base, &customer, false)).await, 200);
    }
    // A fresh database: nothing ran in it that could deadlock yet.
    let deadlocks_before = deadlocks(&app, false).await;
    let events = std::sync::Arc::new(crate::support::Events::default());
    let mut options = WorkerOptions::new(crate::support::test_jobs::registry());
    options.observer = events.clone();
    let worker = Member::start(app.state.clone(), &BTreeSet::from([Role::Worker]), options).await.expect("worker starts");
    app.drain().await;
    worker.shutdown().await;

    let outcomes: Vec<_> = events.finished.lock().expect("finished").iter().map(|(_, o)| *o).collect();
    assert!(outcomes.iter().all(|o| *o == ballast::queue::worker::RunOutcome::Completed), "every job completed on its first run: {outcomes:?}");
    let rows = rows(&app, &run).await;
    assert_eq!(rows.len(), EVENTS as usize);
    assert!(rows.iter().all(|(status, attempts, _, error)| status == "processed" && *attempts == 1 && error.is_none()), "each applied once: {rows:?}");
    assert_eq!(subscription(&app, &run).await.1, base + EVENTS - 1, "the mirror holds the last event");
    assert_eq!(deadlocks(&app, true).await, deadlocks_before, "no deadlock in the test's database");
}

/// Deadlocks PostgreSQL detected in the app's database so far. A backend reports its counts
/// when it goes idle (at most once a second) or exits: with `end_sessions`, the database's
/// sessions are ended first so every one is counted (the app's pools are unusable after).
async fn deadlocks(app: &TestApp, end_sessions: bool) -> i64 {
    let admin = std::env::var("BALLAST_TEST_PG_ADMIN_URL").expect("admin url");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.expect("connect as admin");
    let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&app.state.system_pool.0).await.expect("database");
    if !end_sessions {
        return sqlx::query_scalar("SELECT coalesce((SELECT deadlocks FROM pg_stat_database WHERE datname = $1), 0)").bind(&db).fetch_one(&mut conn).await.expect("deadlocks");
    }
    let ended: Vec<i32> = sqlx::query_scalar("SELECT pid FROM (SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()) ended")
        .bind(&db)
        .fetch_all(&mut conn)
        .await
        .expect("end sessions");
    crate::support::procs::until("the database's sessions ended", std::time::Duration::from_secs(10), || {
        let (ended, admin) = (ended.clone(), admin.clone());
        async move {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.expect("connect");
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)").bind(&ended).fetch_one(&mut conn).await.expect("count") == 0
        }
    })
    .await;
    sqlx::query("SELECT pg_stat_clear_snapshot()").execute(&mut conn).await.expect("fresh stats");
    sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = $1").bind(&db).fetch_one(&mut conn).await.expect("deadlocks")
}

/// The race the burst above leaves to timing, made exact: another job has claimed its own row
/// (it holds the row's lock) and waits for the tenant's lock. A group that waited for that row
/// (no `SKIP LOCKED`) while holding the tenant's lock would deadlock with it; the group skips
/// the row instead, applies the rest, and the row's own job applies it after.
#[tokio::test]
async fn a_group_skips_a_waiting_event_another_job_holds_instead_of_waiting_for_it() {
    let (app, _tenant, run, customer) = intake_with_tenant().await;
    let base = chrono::Utc::now().timestamp() - 3_600;
    for k in 0..5 {
        assert_eq!(app.deliver(&subscription_event(&run, k, base, &customer, false)).await, 200);
    }
    // The other job: event 3's row locked, as its claim holds it.
    let mut other = app.state.system_pool.0.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM stripe_events WHERE id = $1 FOR UPDATE").bind(format!("evt_group{run}_3")).execute(&mut *other).await.expect("lock event 3");

    let events = std::sync::Arc::new(crate::support::Events::default());
    let mut options = WorkerOptions::new(crate::support::test_jobs::registry());
    options.observer = events.clone();
    let worker = Member::start(app.state.clone(), &BTreeSet::from([Role::Worker]), options).await.expect("worker starts");
    // Event 0's job leads (one slot, first queued): it ends while event 3's row stays locked.
    let first = format!("evt_group{run}_0");
    events
        .wait_until("event 0's group committed beside the held row", std::time::Duration::from_secs(20), |e| {
            e.finished.lock().expect("finished").iter().any(|(env, _)| env.payload.to_string().contains(&first))
        })
        .await;
    let rows_now = rows(&app, &run).await;
    let pending: Vec<usize> = rows_now.iter().enumerate().filter(|(_, r)| r.0 != "processed").map(|(k, _)| k).collect();
    assert_eq!(pending, [3], "the group applied every event but the held one: {rows_now:?}");
    other.commit().await.expect("release event 3");
    app.drain().await;
    worker.shutdown().await;
    let rows = rows(&app, &run).await;
    assert!(rows.iter().all(|(status, attempts, _, error)| status == "processed" && *attempts == 1 && error.is_none()), "each applied once: {rows:?}");
    assert_eq!(subscription(&app, &run).await.1, base + 4, "the mirror holds the last event");
}

/// Each of the tenant's grants with the row versions that last wrote and locked it.
async fn grant_versions(app: &TestApp, tenant: uuid::Uuid) -> Vec<(String, bool, String, String)> {
    sqlx::query_as("SELECT feature, enabled, xmin::text, xmax::text FROM entitlements WHERE tenant_id = $1 ORDER BY feature")
        .bind(tenant)
        .fetch_all(&app.state.system_pool.0)
        .await
        .expect("grants")
}

#[tokio::test]
async fn an_event_that_leaves_access_as_it_was_writes_no_grant_and_one_that_changes_it_does() {
    let (app, tenant, run, customer) = intake_with_tenant().await;
    let base = chrono::Utc::now().timestamp() - 3_600;
    // Events 1 and 3 are the same plan (Pro), a second apart; 4 is Starter.
    assert_eq!(app.deliver(&subscription_event(&run, 1, base, &customer, false)).await, 200);
    work_off(&app).await;
    let before = grant_versions(&app, tenant).await;
    assert!(before.iter().any(|(f, on, _, _)| f == "sso" && *on), "Pro grants SSO: {before:?}");

    assert_eq!(app.deliver(&subscription_event(&run, 3, base, &customer, false)).await, 200);
    work_off(&app).await;
    assert_eq!(subscription(&app, &run).await.1, base + 3, "the newer event is mirrored");
    // Not rewritten, and not locked either (an upsert whose update is skipped still locks the
    // row it conflicts with, which sets its xmax): the recompute wrote nothing.
    assert_eq!(grant_versions(&app, tenant).await, before, "access as it was: no grant written or locked");

    assert_eq!(app.deliver(&subscription_event(&run, 4, base, &customer, false)).await, 200);
    work_off(&app).await;
    let after = grant_versions(&app, tenant).await;
    assert!(after.iter().any(|(f, on, _, _)| f == "sso" && !*on), "Starter has no SSO: {after:?}");
}
