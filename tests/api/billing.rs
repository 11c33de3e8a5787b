//! The billing scenarios end to end: simulator → signed webhooks → inbox → queue → mirror and
//! entitlements; and a property test that any order, duplication or replay converges.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::TestApp;
use crate::billing_scenarios::*;
use crate::support::stripe_sim::{PRO, STARTER, StripeSim};

/// The app, its lifecycle emails (renewal notices, trial endings) sent to a real SMTP server
/// so that the queues drain.
pub(crate) async fn app_with(sim: &StripeSim) -> TestApp {
    crate::dunning::app_with(sim, &crate::support::smtp::SmtpServer::start().await).await
}

pub(crate) async fn tenant(app: &TestApp) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'T')").bind(id).execute(&app.state.system_pool.0).await.expect("tenant");
    id
}

pub(crate) async fn deliver_all(app: &TestApp, events: &[Value]) {
    for e in events {
        assert_eq!(app.deliver(e).await, 200, "{e}");
    }
    settle(app).await;
}

/// Drains the queues, running any event whose retry was scheduled (a lock or pool timeout
/// under a loaded machine retries by design) on the queue's controllable clock, until none is
/// left: convergence is asserted of the pipeline with its retries, as in production.
async fn settle(app: &TestApp) {
    for _ in 0..20 {
        app.drain().await;
        let horizon = chrono::Utc::now() + chrono::Duration::hours(1);
        let mut promoted = 0;
        for kind in ["stripe.event", "stripe.refetch"] {
            promoted += app.state.queue.promote_scheduled(&kind.into(), horizon).await.expect("promote");
        }
        if promoted == 0 {
            return;
        }
    }
    panic!("events still retrying after 20 rounds");
}

/// The mirror for one customer, in the simulator's truth shape.
pub(crate) async fn mirror(app: &TestApp, customer: &str) -> Value {
    let pool = &app.state.system_pool.0;
    let deleted: bool = sqlx::query_scalar("SELECT deleted FROM customers WHERE id = $1").bind(customer).fetch_optional(pool).await.expect("c").unwrap_or(false);
    type SubRow = (String, String, Option<String>, bool, Option<chrono::DateTime<chrono::Utc>>, Option<chrono::DateTime<chrono::Utc>>);
    let subs: Vec<SubRow> =
        sqlx::query_as("SELECT id, status, price_id, cancel_at_period_end, current_period_end, cancel_at FROM subscriptions WHERE customer_id = $1")
            .bind(customer)
            .fetch_all(pool)
            .await
            .expect("subs");
    let invoices: Vec<(String, String, i64, i32)> =
        sqlx::query_as("SELECT id, status, amount_paid, attempt_count FROM invoices WHERE customer_id = $1").bind(customer).fetch_all(pool).await.expect("inv");
    let subs: BTreeMap<String, Value> =
        subs.into_iter().map(|(id, st, p, c, end, at)| (id, json!([st, p, c, end.map(|e| e.timestamp()), at.map(|a| a.timestamp())]))).collect();
    let invoices: BTreeMap<String, Value> = invoices.into_iter().map(|(id, st, paid, n)| (id, json!([st, paid, n]))).collect();
    let disputes: Vec<(String, String)> = sqlx::query_as(
        "SELECT d.id, d.status FROM disputes d JOIN charges c ON c.id = d.charge_id WHERE c.customer_id = $1",
    )
    .bind(customer)
    .fetch_all(pool)
    .await
    .expect("disputes");
    let disputes: BTreeMap<String, Value> = disputes.into_iter().map(|(id, st)| (id, json!(st))).collect();
    let refunds: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT id, status, amount FROM refunds WHERE charge_id IN (SELECT id FROM charges WHERE customer_id = $1)")
            .bind(customer)
            .fetch_all(pool)
            .await
            .expect("refunds");
    let refunds: BTreeMap<String, Value> = refunds.into_iter().map(|(id, st, amount)| (id, json!([st, amount]))).collect();
    let intents: Vec<(String, String)> =
        sqlx::query_as("SELECT id, status FROM payment_intents WHERE customer_id = $1").bind(customer).fetch_all(pool).await.expect("intents");
    let intents: BTreeMap<String, Value> = intents.into_iter().map(|(id, st)| (id, json!(st))).collect();
    json!({"customer_deleted": deleted, "subscriptions": subs, "invoices": invoices, "disputes": disputes, "refunds": refunds,
        "payment_intents": intents})
}

/// Feature → (enabled, limit, expires, what follows: [enabled, limit, ends]…) for a tenant.
pub(crate) async fn entitlements(app: &TestApp, tenant: Uuid) -> Entitlements {
    type EntitlementRow = (String, bool, Option<i64>, Option<chrono::DateTime<chrono::Utc>>, Value);
    let rows: Vec<EntitlementRow> =
        sqlx::query_as("SELECT feature, enabled, limit_value, expires_at, later FROM entitlements WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_all(&app.state.system_pool.0)
            .await
            .expect("entitlements");
    let tier = |t: &Value| (t["enabled"] == true, t["limit"].as_i64(), !t["until"].is_null());
    rows.into_iter().map(|(f, e, l, x, later)| (f, (e, l, x.is_some(), later.as_array().map(|a| a.iter().map(tier).collect()).unwrap_or_default()))).collect()
}

async fn effects(app: &TestApp, tenant: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT effect_key FROM billing_effects WHERE tenant_id = $1 ORDER BY 1")
        .bind(tenant)
        .fetch_all(&app.state.system_pool.0)
        .await
        .expect("effects")
}

pub(crate) async fn tenant_status(app: &TestApp, tenant: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM tenants WHERE id = $1").bind(tenant).fetch_one(&app.state.system_pool.0).await.expect("status")
}

pub(crate) type Entitlements = BTreeMap<String, (bool, Option<i64>, bool, Vec<(bool, Option<i64>, bool)>)>;

pub(crate) fn on(e: &Entitlements, feature: &str) -> bool {
    e.get(feature).is_some_and(|x| x.0)
}

#[tokio::test]
async fn the_billing_scenarios_reach_the_right_mirror_and_entitlements() {
    let sim = StripeSim::start().await;
    let app = app_with(&sim).await;

    // Trial expiry with a card → active on the plan.
    let t = tenant(&app).await;
    let c = trial_to_active(&sim, t);
    deliver_all(&app, &sim.take_events()).await;
    assert_eq!(mirror(&app, &c).await, sim.truth(&c));
    let e = entitlements(&app, t).await;
    assert!(on(&e, "api_access") && !on(&e, "sso") && e["projects"].1 == Some(3), "{e:?}");
    assert!(effects(&app, t).await.iter().any(|k| k.starts_with("email.trial_will_end:")));

    // Trial expiry without a payment method → paused → restricted.
    let t = tenant(&app).await;
    let c = trial_to_paused(&sim, t);
    deliver_all(&app, &sim.take_events()).await;
    assert_eq!(mirror(&app, &c).await, sim.truth(&c));
    let e = entitlements(&app, t).await;
    assert!(!on(&e, "api_access") && on(&e, "read_only"), "{e:?}");
    assert_eq!(tenant_status(&app, t).await, "restricted");

    // Card decline: past_due keeps the plan for the grace period; recovery restores it for good.
    let t = tenant(&app).await;
    let c = sim.customer(t, true);
    sim.checkout(t, &c, STARTER, None);
    sim.set_declining(&c, true);
    sim.advance_days(30);
    // The renewal invoice is a draft for an hour, then finalized and charged.
    sim.advance_hours(1);
    deliver_all(&app, &sim.take_events()).await;
    assert_eq!(mirror(&app, &c).await, sim.truth(&c));
    let e = entitlements(&app, t).await;
    assert!(on(&e, "api_access") && e["api_access"].2, "grace: on, with an end: {e:?}");
    assert!(effects(&app, t).await.iter().any(|k| k.starts_with("dunning.payment_failed:")));
    sim.set_declining(&c, false);
    for inv in sim.open_invoices_of(&c) {
        sim.retry_invoice(&inv);
    }
    deliver_all(&app, &sim.take_events()).await;
    assert_eq!(mirror(&app, &c).await, sim.truth(&c));
    let e = entitlements(&app, t).await;
    assert!(on(&e, "api_access") && !e["api_access"].2, "{e:?}");

    // Upgrade with proration → the bigger plan at once.
    let t = tenant(&app).await;
    let c = upgrade(&sim, t);
    deliver_all(&app, &sim.take_events()).await;
    assert_eq!(mirror(&app, &c).await, sim.truth(&c));
    assert!(on(&entitlements(&app, t).await, "sso"));

    // Downgrade at period end: Pro until the period ends, Starter after.
    let t = tenant(&app).await;
    let c = sim.customer(t, true);
    let s = sim.checkout(t, &c, PRO, None);
    sim.downgrade_at_period_end(&s, STARTER);
    deliver_all(&app, &sim.take_events()).await;
    assert!(on(&entitlements(&app, t).await, "sso"));
    sim.advance_days(31);
    deliver_all(&app, &sim.take_events()).await;
    assert_eq!(mirror(&app, &c).await, sim.truth(&c));
    let e = entitlements(&app, t).await;
    assert!(!on(&e, "sso") && on(&e, "api_access"), "{e:?}");

    // Cancellation at period end: the plan until the period ends, then nothing.
    let t = tenant(&app).await;
    let c = sim.customer(t, true);
    let s = sim.checkout(t, &c, STARTER, None);
    sim.cancel(&s, true);
    deliver_all(&app, &sim.take_events()).await;
    let e = entitlements(&app, t).await;
    assert!(on(&e, "api_access") && e["api_access"].2, "until period end: {e:?}");
    sim.advance_days(31);
    deliver_all(&app, &sim.take_events()).await;
    assert_eq!(mirror(&app, &c).await, sim.truth(&c));
    assert!(!on(&entitlements(&app, t).await, "api_access"));

    // Immediate cancellation: nothing at once.
    let t = tenant(&app).await;
    let c = cancel_immediately(&sim, t);
    deliver_all(&app, &sim.take_events()).await;
    assert_eq!(mirror(&app, &c).await, sim.truth(&c));
    assert!(!on(&entitlements(&app, t).await, "api_access"));

    // Refunds, partial then full: the charge mirror follows; access is not a refund's business.
    let t = tenant(&app).await;
    let c = refund_partial_then_full(&sim, t);
    deliver_all(&app, &sim.take_events()).await;
    let charge: (i64, bool) = sqlx::query_as("SELECT amount_refunded, refunded FROM charges WHERE customer_id = $1")
        .bind(&c)
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("charge");
    assert_eq!(charge, (2000, true));
    let keys = effects(&app, t).await;
    assert!(keys.iter().filter(|k| k.starts_with("refund.recorded:")).count() == 2, "{keys:?}");
    assert!(on(&entitlements(&app, t).await, "api_access"));

    // Customer deletion, its events in either order.
    for reversed in [false, true] {
        let t = tenant(&app).await;
        let c = customer_deletion(&sim, t);
        let mut events = sim.take_events();
        if reversed {
            events.reverse();
        }
        deliver_all(&app, &events).await;
        assert_eq!(mirror(&app, &c).await, sim.truth(&c), "reversed: {reversed}");
        assert!(!on(&entitlements(&app, t).await, "api_access"));
    }
}

#[tokio::test]
async fn a_replayed_old_event_never_rolls_state_back() {
    let sim = StripeSim::start().await;
    let app = app_with(&sim).await;
    let t = tenant(&app).await;
    let c = sim.customer(t, true);
    let s = sim.checkout(t, &c, STARTER, None);
    let first = sim.take_events();
    deliver_all(&app, &first).await;
    sim.advance_days(1);
    sim.cancel(&s, false);
    deliver_all(&app, &sim.take_events()).await;
    // The old "active" state again, a day older than what we hold, under new event ids (as a
    // re-sync or a replay tool sends it): the inbox does not drop them, the staleness check must.
    let replays: Vec<Value> = first
        .iter()
        .map(|e| {
            let mut r = e.clone();
            r["id"] = json!(format!("evt_replay_{}", e["id"].as_str().unwrap_or_default()));
            r
        })
        .collect();
    deliver_all(&app, &replays).await;
    let replayed: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE id LIKE 'evt_replay_%' AND status = 'processed'")
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("replays");
    assert!(replayed > 0, "the replays went through the handlers");
    assert_eq!(mirror(&app, &c).await, sim.truth(&c));
    assert!(!on(&entitlements(&app, t).await, "api_access"));
}

/// Any permutation of a scenario's events, with duplicates, converges on the simulator's truth,
/// with the same entitlements and each side effect once.
/// Scenario `name` delivered in order, then in four random orders with duplicates, half at
/// once and half one by one: the mirror, the entitlements and the effects come out the same.
async fn converges(name: &str, scenario: Scenario) {
    let _machine = crate::support::MACHINE.read().await;
    let sim = StripeSim::start().await;
    let app = app_with(&sim).await;
    let handle = tokio::runtime::Handle::current();
    {
        // The reference: the same scenario delivered in order.
        let t0 = tenant(&app).await;
        let c0 = scenario(&sim, t0);
        deliver_all(&app, &sim.take_events()).await;
        let want_entitlements = entitlements(&app, t0).await;
        let want_effects: Vec<String> = effects(&app, t0).await.iter().map(|k| strip_ids(k)).collect();
        assert_eq!(mirror(&app, &c0).await, sim.truth(&c0), "{name} in order");

        let mut runner = TestRunner::new(Config { cases: 4, failure_persistence: None, ..Config::default() });
        let n = 40usize;
        let strategy = (any::<u64>(), proptest::collection::vec(0..n, 0..6));
        let result = runner.run(&strategy, |(seed, dups)| {
            tokio::task::block_in_place(|| {
                handle.block_on(async {
                    let t = tenant(&app).await;
                    let c = scenario(&sim, t);
                    let mut events = sim.take_events();
                    let len = events.len();
                    for d in &dups {
                        events.push(events[d % len].clone());
                    }
                    shuffle(&mut events, seed);
                    // Half concurrently, half one by one.
                    let (a, b) = events.split_at(events.len() / 2);
                    let statuses = futures::future::join_all(a.iter().map(|e| app.deliver(e))).await;
                    assert!(statuses.iter().all(|s| *s == 200));
                    deliver_all(&app, b).await;
                    let scheduled = app.state.queue.scheduled(&"stripe.event".into()).await.expect("scheduled");
                    let dead = ballast::queue::dead::list(&app.state.system_pool, None, 5).await.expect("dead");
                    let statuses: Vec<(String, String, Option<String>)> = sqlx::query_as("SELECT type, status, last_error FROM stripe_events WHERE customer_id = $1")
                        .bind(&c).fetch_all(&app.state.system_pool.0).await.expect("statuses");
                    // Where the tenant's customers stand, for a failure's message.
                    let bindings: Vec<(String, Option<String>, bool)> = sqlx::query_as(
                        "SELECT coalesce(tc.customer_id, t.stripe_customer_id, '-'), t.stripe_customer_id, tc.unbound_at IS NOT NULL
                         FROM tenants t LEFT JOIN tenant_customers tc ON tc.tenant_id = t.id WHERE t.id = $1",
                    )
                    .bind(t).fetch_all(&app.state.system_pool.0).await.expect("bindings");
                    prop_assert_eq!(mirror(&app, &c).await, sim.truth(&c), "{} retries {:?} dead {:?} inbox {:?} bindings {:?}", name,
                        scheduled.iter().map(|s| s.0.payload.clone()).collect::<Vec<_>>(), dead.iter().map(|d| d.error.clone()).collect::<Vec<_>>(), statuses, bindings);
                    prop_assert_eq!(&entitlements(&app, t).await, &want_entitlements, "{}", name);
                    let got: Vec<String> = effects(&app, t).await.iter().map(|k| strip_ids(k)).collect();
                    prop_assert_eq!(&got, &want_effects, "{}: every effect once", name);
                    Ok(())
                })
            })
        });
        if let Err(e) = result {
            panic!("{name}: {e}");
        }
    }
}

/// Any order, duplication or replay converges: one test per scenario, so they run side by side.
mod any_order_duplication_or_replay_converges {
    macro_rules! each_scenario {
        ($($scenario:ident),* $(,)?) => {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::converges(stringify!($scenario), super::$scenario).await;
                }
            )*
        };
    }

    each_scenario!(
        trial_to_active,
        trial_to_paused,
        decline_then_recovery,
        upgrade,
        downgrade_at_period_end,
        cancel_immediately,
        refund_partial_then_full,
        customer_deletion,
        flexible_cancel,
        stripe_gives_up,
        sca_then_confirmed,
        metered_item_first,
        dispute_lost,
        dispute_won,
        inquiry_closed,
        trial_without_card_invoices,
        trial_canceled_without_card,
        smart_retries_then_cancel,
        smart_retries_then_unpaid,
        smart_retry_recovers,
        upgrade_prorated_at_renewal,
        downgrade_credited,
        change_without_proration,
        addons_around_the_plan,
        higher_plan_ending_beside_a_lower_one,
        addon_on_its_own_subscription,
        deleted_then_returning,
        payment_failure_paused_then_resumed,
        collection_paused,
        first_payment_fails_and_expires,
        trial_cancelled_in_the_portal,
        sent_invoice_overdue_then_paid,
        free_with_a_coupon,
        paused_at_the_first_failed_renewal,
        refund_failed,
        bank_debit_settles,
        bank_debit_fails,
        account_as_customer,
    );
}

/// Effect keys name simulator ids and clock times, which differ per run: keep their shape.
fn strip_ids(key: &str) -> String {
    key.split(':')
        .map(|part| match part {
            p if p.contains("_sim") => p.split('_').next().unwrap_or(""),
            p if p.parse::<i64>().is_ok_and(|n| n > 1_000_000_000) => "t",
            p => p,
        })
        .collect::<Vec<_>>()
        .join(":")
}

fn shuffle(v: &mut [Value], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        v.swap(i, (seed >> 33) as usize % (i + 1));
    }
}
