//! Dunning and email end to end: the Stripe simulator's clock drives a card decline through
//! the policy (policy/dunning.toml); emails travel over a real SMTP conversation to a server
//! on loopback; retries and the final cancel go through the simulator's API.

use std::time::Duration;

use ballast::queue::worker::RunOutcome;
use serde_json::Value;
use uuid::Uuid;

use crate::support::TestApp;
use crate::support::smtp::SmtpServer;
use crate::support::stripe_sim::{STARTER, StripeSim};

const DAY: i64 = 86_400;

/// email.send retries every second in tests (run times have whole-second resolution), for
/// long enough to outlast the test's outage (the catalogue's 10 s base and 12 attempts are
/// for production).
const FAST_EMAIL: &str = "kind = \"email.send\"\ndescription = \"test\"\nconcurrency = 4\ntimeout_secs = 10\nmax_attempts = 30\nbackoff = { base_secs = 1, max_secs = 1, jitter = 0.0 }\n";

pub(crate) async fn app_with(sim: &StripeSim, smtp: &SmtpServer) -> TestApp {
    TestApp::builder()
        .env("STRIPE_API_BASE", &sim.base_url)
        .env("BALLAST_SMTP_HOST", "127.0.0.1")
        .env("BALLAST_SMTP_PORT", &smtp.port.to_string())
        .env("BALLAST_SMTP_SECURITY", "none")
        .env("BALLAST_EMAIL_FROM", "Billing <billing@example.com>")
        .job_entry("email.send", FAST_EMAIL)
        .spawn()
        .await
}

pub(crate) async fn deliver_new(app: &TestApp, sim: &StripeSim) {
    for e in sim.take_events() {
        assert_eq!(app.deliver(&e).await, 200, "{e}");
    }
    app.drain().await;
}

/// A paying customer of a new tenant whose renewal then fails; returns (tenant, customer, invoice, failed at).
pub(crate) async fn declined_renewal(app: &TestApp, sim: &StripeSim) -> (Uuid, String, String, i64) {
    // These tests count dunning's emails; the renewal notice a week before has its own test.
    sim.set_upcoming_days(0);
    let tenant = app.tenant("T").await;
    let customer = sim.customer(tenant, true);
    sim.checkout(tenant, &customer, STARTER, None);
    deliver_new(app, sim).await;
    sim.set_declining(&customer, true);
    sim.advance_days(30);
    // The renewal invoice is a draft for an hour, then finalized and charged.
    sim.advance_hours(1);
    let failed_at = sim.now();
    deliver_new(app, sim).await;
    let open = sim.open_invoices_of(&customer);
    assert_eq!(open.len(), 1, "{open:?}");
    (tenant, customer, open[0].clone(), failed_at)
}

/// One day later on both clocks: deliver what Stripe emitted, run dunning as two members at
/// once and then once more (neither may act twice), deliver what the runs caused.
pub(crate) async fn next_day(app: &TestApp, sim: &StripeSim) {
    sim.advance_days(1);
    deliver_new(app, sim).await;
    let as_of = chrono::DateTime::from_timestamp(sim.now(), 0).expect("time");
    let deps = app.state.dunning_deps();
    let (a, b) = tokio::join!(
        ballast::dunning::run(&deps, as_of, None, false),
        ballast::dunning::run(&deps, as_of, None, false)
    );
    a.expect("dunning run");
    b.expect("dunning run");
    deliver_new(app, sim).await;
    // Once more the same day: whatever the two did, nothing is left to do.
    let again = ballast::dunning::run(&app.state.dunning_deps(), as_of, None, false).await.expect("dunning run");
    assert!(again.actions.is_empty(), "a repeated run acted: {:?}", again.actions);
    deliver_new(app, sim).await;
}

pub(crate) fn pay_days(sim: &StripeSim, invoice: &str, failed_at: i64) -> Vec<i64> {
    sim.api_calls().iter().filter(|(what, id, _)| what == "pay" && id == invoice).map(|(_, _, at)| (at - failed_at) / DAY).collect()
}

pub(crate) async fn case_status(app: &TestApp, invoice: &str) -> (String, bool) {
    sqlx::query_as("SELECT status, restricted FROM dunning_cases WHERE invoice_id = $1")
        .bind(invoice)
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("case")
}

async fn enabled(app: &TestApp, tenant: Uuid, feature: &str) -> bool {
    sqlx::query_scalar("SELECT enabled FROM entitlements WHERE tenant_id = $1 AND feature = $2")
        .bind(tenant)
        .bind(feature)
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("entitlement")
}

fn subjects(smtp: &SmtpServer) -> Vec<String> {
    smtp.messages().iter().map(|m| m.header("subject").unwrap_or_default()).collect()
}

#[tokio::test]
async fn a_decline_recovered_on_day_9_gets_one_email_and_retries_on_days_1_3_5_7() {
    let (sim, smtp) = (StripeSim::start().await, SmtpServer::start().await);
    let app = app_with(&sim, &smtp).await;
    let (tenant, customer, invoice, failed_at) = declined_renewal(&app, &sim).await;

    // Day 0: the email goes out at once, over SMTP, with a Message-ID from its dedup key.
    let got = smtp.wait_for(1, Duration::from_secs(10)).await;
    assert!(got[0].header("subject").unwrap_or_default().contains("did not go through"), "{:?}", got[0].data);
    assert_eq!(got[0].to, vec![format!("{customer}@example.com")]);
    assert!(got[0].header("message-id").unwrap_or_default().ends_with("@ballast>"));
    assert_eq!(case_status(&app, &invoice).await, ("open".into(), false));

    for _ in 1..=8 {
        next_day(&app, &sim).await;
    }
    assert_eq!(pay_days(&sim, &invoice, failed_at), [1, 3, 5, 7], "retries on the policy's days, once each");

    // Day 9: the customer fixes the card; Stripe collects; invoice.paid closes the case.
    sim.set_declining(&customer, false);
    sim.advance_days(1);
    sim.retry_invoice(&invoice);
    deliver_new(&app, &sim).await;
    assert_eq!(case_status(&app, &invoice).await.0, "recovered");
    for _ in 10..=22 {
        next_day(&app, &sim).await;
    }
    app.drain().await;
    // The day-0 email and the one saying the payment went through; nothing more.
    let sent = subjects(&smtp);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[0].contains("did not go through") && sent[1].contains("went through") && !sent[1].contains("not"), "{sent:?}");
    assert_eq!(pay_days(&sim, &invoice, failed_at), [1, 3, 5, 7]);
    assert!(enabled(&app, tenant, "api_access").await, "never restricted");
}

#[tokio::test]
async fn without_recovery_access_is_restricted_on_day_14_and_the_subscription_canceled_on_day_21() {
    let (sim, smtp) = (StripeSim::start().await, SmtpServer::start().await);
    let app = app_with(&sim, &smtp).await;
    let (tenant, _customer, invoice, failed_at) = declined_renewal(&app, &sim).await;
    smtp.wait_for(1, Duration::from_secs(10)).await;
    for day in 1..=13 {
        next_day(&app, &sim).await;
        assert!(enabled(&app, tenant, "api_access").await, "day {day}: not restricted yet");
    }
    next_day(&app, &sim).await; // day 14
    assert_eq!(case_status(&app, &invoice).await, ("open".into(), true));
    assert!(!enabled(&app, tenant, "api_access").await, "restricted on day 14");
    assert!(enabled(&app, tenant, "read_only").await, "restricted keeps read-only");
    for _ in 15..=20 {
        next_day(&app, &sim).await;
    }
    assert!(sim.api_calls().iter().all(|(what, _, _)| what != "cancel"), "no final action before day 21");
    next_day(&app, &sim).await; // day 21
    let cancels: Vec<i64> =
        sim.api_calls().iter().filter(|(what, _, _)| what == "cancel").map(|(_, _, at)| (at - failed_at) / DAY).collect();
    assert_eq!(cancels, [21]);
    assert_eq!(case_status(&app, &invoice).await.0, "canceled");
    let sub_status: String = sqlx::query_scalar("SELECT status FROM subscriptions WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("sub");
    assert_eq!(sub_status, "canceled", "the cancel's webhook reached the mirror");
    app.drain().await;
    let subjects = subjects(&smtp);
    assert_eq!(subjects.len(), 2, "day 0 and day 10: {subjects:?}");
    assert!(subjects[1].contains("restricted in 4 days"), "{subjects:?}");
    let actions: i64 = sqlx::query_scalar("SELECT count(*) FROM dunning_actions").fetch_one(&app.state.system_pool.0).await.expect("actions");
    assert_eq!(actions, 8, "every step once, twice-daily runs notwithstanding");
    assert_dunning_email_identity(&app, &invoice, &[("email@0", "payment_failed"), ("email@10", "payment_warning")]).await;
}

/// Each dunning email's identity is its case and step (`dunning:{case}:{stage}`), so a step
/// decided again (a run that died before recording it, a second member) queues the same email,
/// which the outbox keeps once; a key made unique per send would mail the customer twice.
async fn assert_dunning_email_identity(app: &TestApp, invoice: &str, steps: &[(&str, &str)]) {
    let case: Uuid = sqlx::query_scalar("SELECT id FROM dunning_cases WHERE invoice_id = $1").bind(invoice).fetch_one(&app.state.system_pool.0).await.expect("case");
    let tenant: Uuid = sqlx::query_scalar("SELECT tenant_id FROM dunning_cases WHERE id = $1").bind(case).fetch_one(&app.state.system_pool.0).await.expect("tenant");
    let emails: Vec<(String, String)> = sqlx::query_as("SELECT dedup_key, template FROM email_outbox WHERE tenant_id = $1 AND dedup_key LIKE 'dunning:%' ORDER BY created_at")
        .bind(tenant)
        .fetch_all(&app.state.system_pool.0)
        .await
        .expect("emails");
    let want: Vec<(String, String)> = steps.iter().map(|(stage, template)| (format!("dunning:{case}:{stage}"), (*template).to_owned())).collect();
    assert_eq!(emails, want, "one email per (case, step), keyed by them");
}

#[tokio::test]
async fn a_hard_decline_stops_the_retries_after_the_first_refusal() {
    let (sim, smtp) = (StripeSim::start().await, SmtpServer::start().await);
    let app = app_with(&sim, &smtp).await;
    let (_tenant, customer, invoice, failed_at) = declined_renewal(&app, &sim).await;
    // Retrying a stolen card cannot succeed and looks like card testing to the issuer.
    sim.set_decline_code(&customer, "stolen_card");
    for _ in 1..=8 {
        next_day(&app, &sim).await;
    }
    assert_eq!(pay_days(&sim, &invoice, failed_at), [1], "the day-1 refusal is the last retry");
    let (hard, code): (bool, Option<String>) = sqlx::query_as("SELECT hard_decline, decline_code FROM dunning_cases WHERE invoice_id = $1")
        .bind(&invoice)
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("case");
    assert!(hard);
    assert_eq!(code.as_deref(), Some("stolen_card"));
    let skipped: Vec<String> = sqlx::query_scalar("SELECT stage FROM dunning_actions WHERE outcome = 'skipped: hard decline' ORDER BY stage")
        .fetch_all(&app.state.system_pool.0)
        .await
        .expect("actions");
    assert_eq!(skipped.len(), 3, "days 3, 5 and 7 recorded as skipped: {skipped:?}");
    assert_eq!(case_status(&app, &invoice).await.0, "open", "the case goes on: emails, restriction, final action");
}

#[tokio::test]
async fn emails_wait_out_an_smtp_outage_and_arrive_once_and_a_5xx_is_dead_lettered() {
    let (sim, smtp) = (StripeSim::start().await, SmtpServer::start().await);
    let app = app_with(&sim, &smtp).await;
    smtp.down();
    declined_renewal(&app, &sim).await;
    let is_email_retry = |e: &crate::support::Events| {
        e.finished.lock().expect("lock").iter().any(|(env, o)| env.kind.0 == "email.send" && *o == RunOutcome::Retried)
    };
    app.events.wait_until("a failed send attempt", Duration::from_secs(10), is_email_retry).await;
    assert!(smtp.messages().is_empty());
    smtp.up().await;
    smtp.wait_for(1, Duration::from_secs(10)).await;
    app.events
        .wait_until("the send recorded", Duration::from_secs(10), |e| {
            e.finished.lock().expect("lock").iter().any(|(env, o)| env.kind.0 == "email.send" && *o == RunOutcome::Completed)
        })
        .await;
    // A trial reminder rejected for good: dead, visible, and not retried.
    smtp.reject_with(Some("550 5.1.1 no such mailbox"));
    let trial_tenant = app.tenant("Trial").await;
    let trial_customer = sim.customer(trial_tenant, false);
    sim.checkout(trial_tenant, &trial_customer, STARTER, Some(14));
    sim.advance_days(12);
    deliver_new(&app, &sim).await;
    app.events
        .wait_until("the 5xx dead-lettered", Duration::from_secs(10), |e| {
            e.finished.lock().expect("lock").iter().any(|(env, o)| env.kind.0 == "email.send" && *o == RunOutcome::Dead)
        })
        .await;
    assert_eq!(smtp.messages().len(), 1, "the outage email once, the rejected one never");
    let rows: Vec<(String, String, i32)> = sqlx::query_as("SELECT template, status, attempts FROM email_outbox ORDER BY created_at")
        .fetch_all(&app.state.system_pool.0)
        .await
        .expect("outbox");
    assert_eq!(rows[0].0, "payment_failed");
    assert_eq!(rows[0].1, "sent");
    assert!(rows[0].2 >= 2, "it was attempted during the outage: {rows:?}");
    assert_eq!((rows[1].0.as_str(), rows[1].1.as_str(), rows[1].2), ("trial_ending", "dead", 1));
    let out = app.cli(&["emails", "list", "--status", "dead", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
}

#[tokio::test]
async fn the_runbook_reports_due_steps_in_a_dry_run_and_acts_only_with_execute() {
    let (sim, smtp) = (StripeSim::start().await, SmtpServer::start().await);
    let app = app_with(&sim, &smtp).await;
    let (tenant, _, invoice, failed_at) = declined_renewal(&app, &sim).await;
    let as_of = chrono::DateTime::from_timestamp(failed_at + 3 * DAY + 60, 0).expect("as of");
    let params = serde_json::json!({"tenant": tenant, "as_of": as_of});
    let registry = ballast::state::Registry::standard();
    let run = |execute| ballast::runbook::run_here(&app.state, &registry, "dunning.run", execute, params.clone(), "oncall", ballast::runbook::Progress::default());
    let dry = run(false).await.expect("dry run");
    let stages = |r: &Value| r["actions"].as_array().map(|a| a.iter().filter(|x| x["invoice"] == invoice.as_str()).count()).unwrap_or(0);
    assert!(stages(&dry) > 0, "the due steps are reported: {dry}");
    let calls_before = sim.api_calls().len();
    let done = run(true).await.expect("execute");
    assert!(stages(&done) > 0, "{done}");
    assert!(sim.api_calls().len() > calls_before, "executing retried the invoice at Stripe");
    let again = run(true).await.expect("again");
    assert_eq!(stages(&again), 0, "each step once: {again}");
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'runbook.dunning.run' AND actor = 'oncall'")
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("audit");
    assert_eq!(audited, 3);
}

/// The outbox itself makes an email exist once per dedup key, whatever its callers check
/// first: a second write of the same key is refused, and a different key is a new email.
#[tokio::test]
async fn the_outbox_keeps_one_email_per_dedup_key() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let tenant = ballast::newtypes::TenantId(app.tenant("mail").await);
    let email = |key: &str| ballast::email::NewEmail {
        dedup_key: key.to_owned(),
        template: ballast::email::Template::PaymentFailed,
        to: "billing@example.com".into(),
        vars: serde_json::json!({"amount": "USD 20.00", "invoice": "in_1", "days_left": 3}),
    };
    let mut tx = app.state.tenant_pool.begin(tenant).await.expect("tx");
    let first = ballast::email::queue(&mut tx, tenant, &email("dunning:case:email@0")).await.expect("queue");
    let again = ballast::email::queue(&mut tx, tenant, &email("dunning:case:email@0")).await.expect("queue");
    let other = ballast::email::queue(&mut tx, tenant, &email("dunning:case:email@10")).await.expect("queue");
    tx.commit().await.expect("commit");
    assert!(first.is_some() && other.is_some());
    assert_eq!(again, None, "the same key is the same email");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM email_outbox WHERE tenant_id = $1").bind(tenant.0).fetch_one(&app.state.system_pool.0).await.expect("count");
    assert_eq!(rows, 2);
}
