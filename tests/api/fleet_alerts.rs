//! Alerts on the fleet's own health (issue 38): each rule of deploy/alerts.toml driven to open
//! and to resolve against real PostgreSQL and Redis, its two notifications delivered to a real
//! receiver on loopback through the SLO notifier. Hold times run on the evaluation's clock.

use chrono::{Duration, Utc};
use serde_json::Value;

use ballast::health::alerts::State;
use crate::slo::Receiver;
use crate::support::TestApp;

/// An app whose notifications go to a receiver, with deploy/alerts.toml edited by `edit` (its
/// own rounds every hour, so only the test evaluates).
async fn app(edit: impl Fn(String) -> String) -> (TestApp, Receiver, tempfile::TempDir) {
    app_with_roles(edit, &[ballast::app::Role::Worker]).await
}

async fn app_with_roles(edit: impl Fn(String) -> String, roles: &[ballast::app::Role]) -> (TestApp, Receiver, tempfile::TempDir) {
    let (receiver, url) = Receiver::start(0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("alerts.toml");
    let shipped = std::fs::read_to_string(crate::support::repo_path("deploy/alerts.toml")).expect("alerts.toml");
    std::fs::write(&file, edit(shipped.replace("evaluate_every_secs = 15", "evaluate_every_secs = 3600"))).expect("write");
    let app = TestApp::builder()
        .roles(roles)
        .env("BALLAST_SLO_WEBHOOK_URL", &url)
        .env("BALLAST_ALERTS_FILE", &file.display().to_string())
        .spawn()
        .await;
    (app, receiver, dir)
}

/// Evaluates at `at`, sends what it queued, and returns the state of `key`.
async fn round(app: &TestApp, at: chrono::DateTime<Utc>, key: &str) -> State {
    let states = ballast::health::evaluate_at(&app.state.health_deps(), at).await.expect("evaluate");
    app.drain().await;
    states.iter().find(|s| s.key == key).map(|s| s.state).unwrap_or_else(|| panic!("no {key} in {states:?}"))
}

/// The notifications the receiver got for `key`: (state, summary).
fn notified(receiver: &Receiver, key: &str) -> Vec<(String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    receiver.accepted().iter().filter(|(_, b)| b["alert_key"] == format!("fleet:{key}")).map(|(_, b)| (text(&b["state"]), text(&b["summary"]))).collect()
}

fn opened_then_resolved(receiver: &Receiver, key: &str, runbook: &str) {
    let sent = notified(receiver, key);
    let states: Vec<&str> = sent.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(states, ["firing", "resolved"], "{key}: {sent:?}");
    assert!(sent[0].1.contains(runbook), "the opening names its runbook page: {sent:?}");
}

async fn sql(app: &TestApp, statement: &'static str) {
    sqlx::query(statement).execute(&app.state.system_pool.0).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
}

#[tokio::test]
async fn an_aged_ready_job_opens_the_queue_age_alert_and_running_it_resolves_it() {
    // No worker yet: the job waits.
    let (app, receiver, _dir) = app_with_roles(|t| t.replace("default_secs = 600", "default_secs = 0"), &[]).await;
    let now = Utc::now();
    app.state.queue.enqueue(ballast::queue::EnqueueRequest::new("noop", serde_json::json!({}))).await.expect("enqueue");
    let states = ballast::health::evaluate_at(&app.state.health_deps(), now).await.expect("evaluate");
    assert_eq!(states.iter().find(|s| s.key == "queue_age:noop").map(|s| s.state), Some(State::Firing));
    // A worker starts: it runs the job and sends the opening; the next round finds the queue empty.
    let options = ballast::queue::worker::WorkerOptions::new(crate::support::test_jobs::registry());
    let _worker = ballast::app::Member::start(app.state.clone(), &std::collections::BTreeSet::from([ballast::app::Role::Worker]), options).await.expect("worker");
    app.drain().await;
    assert_eq!(round(&app, now + Duration::seconds(15), "queue_age:noop").await, State::Ok);
    opened_then_resolved(&receiver, "queue_age:noop", "stripe-webhook-backlog");
}

#[tokio::test]
async fn a_new_dead_letter_opens_an_alert_that_a_retry_resolves() {
    let (app, receiver, _dir) = app(|t| t).await;
    let now = Utc::now();
    sql(&app, "INSERT INTO tenants (id, name) VALUES ('00000000-0000-0000-0000-0000000000d1', 'dead')").await;
    sql(&app, "INSERT INTO job_dead_letters (id, job_id, kind, tenant_id, envelope, attempts, error)
               VALUES (gen_random_uuid(), 'job_dead', 'noop', '00000000-0000-0000-0000-0000000000d1', '{}', 3, 'boom')").await;
    assert_eq!(round(&app, now, "dead_letters").await, State::Firing);
    assert_eq!(round(&app, now + Duration::seconds(15), "dead_letters").await, State::Firing, "one opening, not one per round");
    sql(&app, "UPDATE job_dead_letters SET retried_at = now()").await;
    assert_eq!(round(&app, now + Duration::seconds(30), "dead_letters").await, State::Ok);
    opened_then_resolved(&receiver, "dead_letters", "README");
}

#[tokio::test]
async fn no_leader_for_two_lease_periods_opens_and_a_leader_resolves() {
    let (app, receiver, _dir) = app(|t| t).await;
    let lease = app.state.settings.scheduler_lease;
    let t0 = Utc::now();
    assert_eq!(round(&app, t0, "no_leader").await, State::Pending, "no leader yet, not for long");
    let later = t0 + Duration::from_std(lease * 2).expect("lease") + Duration::seconds(1);
    assert_eq!(round(&app, later, "no_leader").await, State::Firing);
    let mut redis = app.state.redis.clone();
    let _: () = redis::AsyncCommands::set(&mut redis, app.state.keys.scheduler_leader(), "member-a").await.expect("lease");
    assert_eq!(round(&app, later + Duration::seconds(1), "no_leader").await, State::Ok);
    opened_then_resolved(&receiver, "no_leader", "scheduler-no-leader");
}

#[tokio::test]
async fn dead_emails_and_deliveries_open_alerts_that_resolve_when_they_age_out_of_the_window() {
    let (app, receiver, _dir) = app(|t| t).await;
    let now = Utc::now();
    sql(&app, "INSERT INTO tenants (id, name) VALUES ('00000000-0000-0000-0000-0000000000e1', 'dead mail')").await;
    sql(&app, "INSERT INTO email_outbox (id, tenant_id, dedup_key, template, to_address, subject, body_text, body_html, message_id, status)
               VALUES (ballast_uuid_v7(), '00000000-0000-0000-0000-0000000000e1', 'k', 'welcome', 'a@example.com', 's', 'x', 'x', '<k@x>', 'dead')").await;
    let t = "'00000000-0000-0000-0000-0000000000e1'";
    sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, secret) VALUES ({t}, {t}, 'https://example.com/in', ARRAY['x'], 'whsec_x')")))
        .execute(&app.state.system_pool.0).await.expect("endpoint");
    sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO webhook_messages (id, tenant_id, event_type, body) VALUES ({t}, {t}, 'x', '{{}}')")))
        .execute(&app.state.system_pool.0).await.expect("message");
    sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO webhook_deliveries (id, tenant_id, message_id, endpoint_id, status, finished_at) VALUES (gen_random_uuid(), {t}, {t}, {t}, 'failed', now())")))
        .execute(&app.state.system_pool.0).await.expect("delivery");
    assert_eq!(round(&app, now, "dead_emails").await, State::Firing);
    assert_eq!(round(&app, now, "dead_deliveries").await, State::Firing);
    sql(&app, "UPDATE email_outbox SET created_at = now() - interval '2 hours'").await;
    sql(&app, "UPDATE webhook_deliveries SET finished_at = now() - interval '2 hours'").await;
    assert_eq!(round(&app, now + Duration::seconds(15), "dead_emails").await, State::Ok);
    assert_eq!(round(&app, now + Duration::seconds(15), "dead_deliveries").await, State::Ok);
    opened_then_resolved(&receiver, "dead_emails", "dunning-or-email-backlog");
    opened_then_resolved(&receiver, "dead_deliveries", "README");
}

#[tokio::test]
async fn usage_rows_stripe_refused_open_an_alert_that_resolves_when_they_age_out_of_the_window() {
    let (app, receiver, _dir) = app(|t| t).await;
    let now = Utc::now();
    sql(&app, "INSERT INTO tenants (id, name) VALUES ('00000000-0000-0000-0000-0000000000f1', 'refused usage')").await;
    sql(&app, "INSERT INTO usage_ledger (id, tenant_id, metric, usage_minute, flush_id, quantity, report_status, report_error, reported_at)
               VALUES (gen_random_uuid(), '00000000-0000-0000-0000-0000000000f1', 'api_calls', now(), 'f', 3, 'dead', '400 resource_missing: no meter', now())").await;
    // Pending and reported rows are not refusals.
    sql(&app, "INSERT INTO usage_ledger (id, tenant_id, metric, usage_minute, flush_id, quantity, report_status, reported_at)
               VALUES (gen_random_uuid(), '00000000-0000-0000-0000-0000000000f1', 'api_calls', now(), 'f', 4, 'reported', now())").await;
    assert_eq!(round(&app, now, "dead_usage_reports").await, State::Firing);
    sql(&app, "UPDATE usage_ledger SET reported_at = now() - interval '2 hours'").await;
    assert_eq!(round(&app, now + Duration::seconds(15), "dead_usage_reports").await, State::Ok);
    opened_then_resolved(&receiver, "dead_usage_reports", "billing-drift");
    assert!(notified(&receiver, "dead_usage_reports")[0].1.contains(": 1 usage rows refused"), "{:?}", notified(&receiver, "dead_usage_reports"));
}

#[tokio::test]
async fn an_unprocessed_stripe_event_opens_an_alert_that_processing_resolves() {
    let (app, receiver, _dir) = app(|t| t).await;
    let now = Utc::now();
    sql(&app, "INSERT INTO stripe_events (id, type, livemode, stripe_created, payload, status, received_at)
               VALUES ('evt_waiting', 'invoice.paid', false, now(), '{}', 'queued', now() - interval '10 minutes')").await;
    assert_eq!(round(&app, now, "inbox_unprocessed").await, State::Firing);
    sql(&app, "UPDATE stripe_events SET status = 'processed'").await;
    assert_eq!(round(&app, now + Duration::seconds(15), "inbox_unprocessed").await, State::Ok);
    opened_then_resolved(&receiver, "inbox_unprocessed", "stripe-webhook-backlog");
}

#[tokio::test]
async fn an_overdue_maintenance_service_opens_an_alert_that_its_next_run_resolves() {
    let (app, receiver, _dir) = app(|t| t).await;
    let deps = app.state.maintenance_deps();
    for service in ballast::maintenance::services() {
        let outcome = ballast::maintenance::run_one(service.as_ref(), &deps).await;
        ballast::maintenance::status::record(&app.state.system_pool, &outcome).await.expect("record");
    }
    let now = Utc::now();
    let key = "maintenance_overdue:outbox.sweep";
    assert_eq!(round(&app, now, key).await, State::Ok);
    sql(&app, "UPDATE maintenance_status SET last_ok_at = now() - interval '5 minutes' WHERE service = 'outbox.sweep'").await;
    assert_eq!(round(&app, now + Duration::seconds(15), key).await, State::Firing);
    let services = ballast::maintenance::services();
    let outbox = services.iter().find(|s| s.name() == "outbox.sweep").expect("service");
    let outcome = ballast::maintenance::run_one(outbox.as_ref(), &deps).await;
    ballast::maintenance::status::record(&app.state.system_pool, &outcome).await.expect("record");
    assert_eq!(round(&app, now + Duration::seconds(30), key).await, State::Ok);
    opened_then_resolved(&receiver, key, "scheduler-no-leader");
}

/// Two members racing for one round: one evaluates.
#[tokio::test]
async fn one_member_claims_each_round() {
    let (app, _receiver, _dir) = app(|t| t).await;
    let pool = &app.state.system_pool;
    let every = std::time::Duration::from_secs(15);
    let now = Utc::now();
    let (a, b) = tokio::join!(
        ballast::health::alerts::claim_round(pool, "a", now, every),
        ballast::health::alerts::claim_round(pool, "b", now, every)
    );
    assert_eq!([a.expect("a"), b.expect("b")].iter().filter(|c| **c).count(), 1);
    assert!(!ballast::health::alerts::claim_round(pool, "a", now + Duration::seconds(5), every).await.expect("early"));
    assert!(ballast::health::alerts::claim_round(pool, "b", now + Duration::seconds(15), every).await.expect("next"));
}

/// deploy/prometheus-alerts.yaml names only metrics `/metrics` really serves, and only pages
/// of runbooks/; every rule has an expression, a severity and a summary.
#[tokio::test]
async fn the_prometheus_rules_name_metrics_the_binary_exports_and_real_runbooks() {
    let (app, _receiver, _dir) = app_with_roles(|t| t, &[ballast::app::Role::Api, ballast::app::Role::Worker]).await;
    // A job run and an evaluation, so the labelled families have samples to show.
    app.state.queue.enqueue(ballast::queue::EnqueueRequest::new("noop", serde_json::json!({}))).await.expect("enqueue");
    app.drain().await;
    ballast::health::evaluate(&app.state.health_deps()).await.expect("evaluate");
    let http = reqwest::Client::new();
    let _ = http.get(app.url("/metrics")).send().await.expect("first scrape");
    let scraped = http.get(app.url("/metrics")).send().await.expect("scrape").text().await.expect("text");
    let served: std::collections::BTreeSet<&str> = scraped.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    let release = format!("ballast_build_info{{commit=\"{}\",version=\"{}\"}} 1", ballast::RELEASE.split('+').nth(1).unwrap_or_default(), env!("CARGO_PKG_VERSION"));
    assert!(scraped.contains(&release), "{release} in:\n{scraped}");
    let text = std::fs::read_to_string(crate::support::repo_path("deploy/prometheus-alerts.yaml")).expect("rules");
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("yaml");
    let rules = doc["groups"][0]["rules"].as_sequence().expect("rules");
    assert!(rules.len() >= 6, "{rules:?}");
    for rule in rules {
        let name = rule["alert"].as_str().expect("alert name");
        let expr = rule["expr"].as_str().unwrap_or_else(|| panic!("{name}: no expr"));
        assert!(rule["labels"]["severity"].as_str().is_some_and(|s| s == "page" || s == "ticket"), "{name}: severity");
        assert!(rule["annotations"]["summary"].as_str().is_some_and(|s| !s.is_empty()), "{name}: summary");
        let runbook = rule["annotations"]["runbook"].as_str().unwrap_or_else(|| panic!("{name}: no runbook"));
        assert!(crate::support::repo_path(runbook).is_file(), "{name}: {runbook} is no file");
        let named = expr.split(|c: char| !(c.is_ascii_lowercase() || c == '_')).filter(|w| w.starts_with("ballast_"));
        for m in named {
            assert!(served.contains(m), "{name}: {m} is not served by /metrics");
        }
        // Balanced parentheses and braces: a typo Prometheus would refuse to load.
        for (open, close) in [('(', ')'), ('{', '}'), ('[', ']')] {
            assert_eq!(expr.matches(open).count(), expr.matches(close).count(), "{name}: unbalanced {open}{close} in {expr}");
        }
    }
}

/// deploy/grafana-dashboard.json: the four golden signals, queues, SLO budgets, webhook lag
/// and maintenance, every metric it names served by a real `/metrics` scrape.
#[tokio::test]
async fn the_dashboard_names_metrics_the_binary_exports() {
    let (app, _receiver, _dir) = app_with_roles(|t| t, &[ballast::app::Role::Api, ballast::app::Role::Worker]).await;
    // Something of each labelled family: a job, a webhook applied, an SLO and a maintenance run.
    app.state.queue.enqueue(ballast::queue::EnqueueRequest::new("noop", serde_json::json!({}))).await.expect("enqueue");
    let event = serde_json::json!({"id": "evt_dash", "object": "event", "type": "customer.created", "created": Utc::now().timestamp(),
        "data": {"object": {"id": "cus_dash", "object": "customer", "metadata": {}}}});
    assert_eq!(app.deliver(&event).await, 200);
    app.drain().await;
    ballast::slo::evaluate::run(&app.state.slo_deps(), Utc::now(), true).await.expect("slo");
    ballast::health::evaluate(&app.state.health_deps()).await.expect("health");
    let deps = app.state.maintenance_deps();
    let services = ballast::maintenance::services();
    let outcome = ballast::maintenance::run_one(services[0].as_ref(), &deps).await;
    ballast::maintenance::status::record(&app.state.system_pool, &outcome).await.expect("record");
    let http = reqwest::Client::new();
    let _ = http.get(app.url("/metrics")).send().await.expect("first scrape");
    let scraped = http.get(app.url("/metrics")).send().await.expect("scrape").text().await.expect("text");
    let served: std::collections::BTreeSet<&str> = scraped.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    let text = std::fs::read_to_string(crate::support::repo_path("deploy/grafana-dashboard.json")).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("json");
    let panels = dashboard["panels"].as_array().expect("panels");
    let titles: Vec<String> = panels.iter().filter_map(|p| p["title"].as_str()).map(str::to_lowercase).collect();
    for wanted in ["traffic", "errors", "latency", "saturation", "ready jobs", "oldest ready", "budget", "webhook lag", "maintenance"] {
        assert!(titles.iter().any(|t| t.contains(wanted)), "no panel about {wanted}: {titles:?}");
    }
    let mut named = 0;
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            for m in expr.split(|c: char| !(c.is_ascii_lowercase() || c == '_')).filter(|w| w.starts_with("ballast_")) {
                assert!(served.contains(m), "panel {:?}: {m} is not served by /metrics", panel["title"]);
                named += 1;
            }
        }
    }
    assert!(named >= 15, "{named}");
}

/// The uptime checks through a real listener: a signed test webhook (stored as ignored) and an
/// entitlement read, both timed, counted in the synthetic-probe SLO; a check failing past its
/// hold time opens the `probe` alert and its recovery resolves it, through the receiver.
#[tokio::test]
async fn a_failing_uptime_check_opens_the_probe_alert_and_its_recovery_resolves_it() {
    let (app, receiver, _dir) = app_with_roles(|t| t, &[ballast::app::Role::Api, ballast::app::Role::Worker]).await;
    let t = app.tenant("probe").await;
    let (_, key) = app.key(Some(t), &[ballast::auth::Scope::EntitlementsRead]).await;
    let target = app.url("");
    let config = |key: &str| ballast::health::probe::ProbeConfig {
        urls: vec![target.clone()],
        webhook_secret: Some(secrecy::SecretString::from(crate::support::stripe_sim::SECRET)),
        api_key: Some(secrecy::SecretString::from(key.to_owned())),
    };
    let pool = &app.state.system_pool;
    let now = Utc::now();
    let results = ballast::health::probe::run(&config(&key), pool, &app.state.slos, now).await.expect("probe");
    assert_eq!(results.iter().map(|r| (r.check, r.ok)).collect::<Vec<_>>(), [(ballast::health::probe::Check::Webhook, true), (ballast::health::probe::Check::Entitlements, true)], "{results:?}");
    assert!(results.iter().all(|r| r.ms > 0.0));
    let ignored: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE type = 'ballast.probe' AND status = 'ignored'").fetch_one(&pool.0).await.expect("inbox");
    assert_eq!(ignored, 1, "the test webhook is acknowledged and nothing acts on it");
    let sli: (i64, i64) = sqlx::query_as("SELECT good, valid FROM slo_minutes WHERE slo = 'synthetic-probe' AND source = 'probe'").fetch_one(&pool.0).await.expect("sli");
    assert_eq!(sli, (2, 2));
    // A key that no longer reads: the check fails; after the hold time the alert opens.
    let key_name = format!("probe:entitlements:{target}");
    let later = now + Duration::seconds(60);
    ballast::health::probe::run(&config("bk_revoked"), pool, &app.state.slos, later).await.expect("probe");
    assert_eq!(round(&app, later, &key_name).await, State::Pending);
    assert_eq!(round(&app, later + Duration::seconds(91), &key_name).await, State::Firing);
    ballast::health::probe::run(&config(&key), pool, &app.state.slos, later + Duration::seconds(120)).await.expect("probe");
    assert_eq!(round(&app, later + Duration::seconds(121), &key_name).await, State::Ok);
    opened_then_resolved(&receiver, &key_name, "site-down");
}

/// PostgreSQL's connections in use, read server side (every member's pools count), against
/// `max_share` of its `max_connections`: past it the alert opens, below it it resolves.
#[tokio::test]
async fn database_connections_near_the_servers_limit_open_an_alert() {
    let (app, receiver, _dir) = app(|t| t).await;
    let with_share = |share: f64| {
        let mut deps = app.state.health_deps();
        let mut rules = (*deps.rules).clone();
        rules.db_connections.max_share = share;
        deps.rules = std::sync::Arc::new(rules);
        deps
    };
    let now = Utc::now();
    let states = ballast::health::evaluate_at(&with_share(0.0), now).await.expect("evaluate");
    let db = states.iter().find(|s| s.key == "db_connections").expect("db_connections");
    assert_eq!(db.state, State::Firing, "this test's own connections are over a share of 0: {db:?}");
    assert!(db.value > 0.0 && db.value < 1.0, "{db:?}");
    app.drain().await;
    let states = ballast::health::evaluate_at(&with_share(1.0), now + Duration::seconds(15)).await.expect("evaluate");
    assert_eq!(states.iter().find(|s| s.key == "db_connections").map(|s| s.state), Some(State::Ok));
    app.drain().await;
    opened_then_resolved(&receiver, "db_connections", "db-pool-exhaustion");
}

/// Stripe API calls failing: real calls to a closed port fail and open the alert (with fewer
/// than `min_calls`, nothing decides); calls answered by the simulator bring the failed share
/// under the threshold and resolve it. The fleet's counts are per minute in Redis.
#[tokio::test]
async fn failing_stripe_api_calls_open_an_alert_that_answered_calls_resolve() {
    let (app, receiver, _dir) = app(|t| t).await;
    let now = Utc::now();
    // The test app's Stripe is a closed port: every call fails.
    assert!(app.state.stripe.ping().await.is_err());
    assert_eq!(round(&app, now, "stripe_api").await, State::Ok, "one failed call of one decides nothing");
    for _ in 0..4 {
        assert!(app.state.stripe.ping().await.is_err());
    }
    assert_eq!(round(&app, now, "stripe_api").await, State::Firing);
    // Another member, answered by Stripe (the simulator), counting into the same fleet totals.
    let sim = crate::support::stripe_sim::StripeSim::start().await;
    let tally = ballast::stripe_api::CallTally { redis: app.state.redis.clone(), keys: app.state.keys.clone(), counter: app.state.metrics.stripe_calls() };
    let key = secrecy::SecretString::from(crate::support::stripe_sim::API_KEY.to_owned());
    let answered = ballast::stripe_api::StripeApi::new(Some(&key), &sim.base_url, std::time::Duration::from_secs(10)).expect("client").with_tally(tally);
    for _ in 0..16 {
        answered.ping().await.expect("the simulator answers");
    }
    assert_eq!(round(&app, now + Duration::seconds(15), "stripe_api").await, State::Ok);
    opened_then_resolved(&receiver, "stripe_api", "site-down");
    let firing = &notified(&receiver, "stripe_api")[0].1;
    assert!(firing.contains("5 of the fleet's 5 Stripe API calls failed"), "{firing}");
}

#[tokio::test]
async fn the_fleet_roster_lists_live_members_with_roles_and_release_and_forgets_the_silent() {
    let app = TestApp::spawn().await;
    let mut redis = app.state.redis.clone();
    let key = app.state.keys.fleet_members();
    let now = chrono::Utc::now().timestamp();
    let entry = |roles: &[&str], seen: i64| serde_json::json!({"roles": roles, "version": "old", "started_at": seen, "seen": seen}).to_string();
    // A member that crashed two minutes ago, and one silent for two days.
    let _: () = redis::AsyncCommands::hset(&mut redis, &key, "crashed", entry(&["worker"], now - 120)).await.expect("hset");
    let _: () = redis::AsyncCommands::hset(&mut redis, &key, "long-gone", entry(&["api"], now - 2 * 86_400)).await.expect("hset");
    let listed = || async { ballast::health::roster::members(&app.state.redis, &app.state.keys).await.expect("members") };
    // The member announces itself as its roster task starts.
    crate::support::procs::until("this member announced", std::time::Duration::from_secs(10), || async { !listed().await.is_empty() }).await;
    let members = listed().await;
    let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
    assert!(!ids.contains(&"crashed") && !ids.contains(&"long-gone"), "{ids:?}");
    let this = members.first().expect("this test's member announced itself");
    assert_eq!(this.version, ballast::RELEASE);
    assert!(!this.roles.is_empty() && this.seen_secs_ago < 60, "{this:?}");
    let kept: Vec<String> = redis::AsyncCommands::hkeys(&mut redis, &key).await.expect("hkeys");
    assert!(kept.contains(&"crashed".to_owned()) && !kept.contains(&"long-gone".to_owned()), "a minute's silence hides, a day's prunes: {kept:?}");
}
