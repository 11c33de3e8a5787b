//! Outages of what the fleet stands on, against real `ballast` processes: Redis restarted
//! empty, Redis killed with SIGKILL and restarted the way deploy/dev.sh runs it, PostgreSQL
//! stopped for 30 s. Each prints its recovery time (docs/reliability.md).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::TestApp;
use crate::support::fleet::{assert_applied_once, completed_ids, count, deliver_until_accepted, ignored, listening_member, signups};
use crate::support::procs::{LogsOnPanic, PrivatePostgres, PrivateRedis, Proc, free_port, until};
use crate::support::stripe_sim::StripeSim;

#[tokio::test]
async fn redis_restarted_empty_while_webhooks_arrive_loses_no_event_and_applies_none_twice() {
    let _machine = crate::support::MACHINE.read().await;
    let sim = StripeSim::start().await;
    let mut redis = PrivateRedis::start(free_port()).await;
    let app = TestApp::builder().roles(&[]).env("REDIS_URL", &redis.url()).env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let events = signups(&app, &sim, 150, 3).await;
    // The intake and the scheduler first, no worker: the first third waits queued in Redis.
    let (member, base) = listening_member(&app, "api,scheduler").await;
    // The scheduler's first `queue.recovery` round finds this fresh Redis without epochs and
    // queues the (empty) inbox again, marking what it finds; wait for it, so it finds nothing.
    // (The round sets every missing epoch at once; the inbox's queue's says it has run.)
    let inbox_queue = app.state.queue.catalogue().get("stripe.event").expect("the inbox's kind").queue.clone();
    let epoch = app.state.keys.queue_epoch(inbox_queue.as_str());
    let private = redis::Client::open(redis.url()).expect("url").get_multiplexed_async_connection().await.expect("the drill's Redis");
    until("the first recovery round set the queues' epochs", Duration::from_secs(30), || {
        let (mut private, epoch) = (private.clone(), epoch.clone());
        async move { redis::AsyncCommands::exists::<_, bool>(&mut private, &epoch).await.unwrap_or(false) }
    })
    .await;
    let http = reqwest::Client::new();
    let third = events.len() / 3;
    for e in &events[..third] {
        deliver_until_accepted(&http, &base, e).await;
    }
    // Stored before each answer, queued in Redis with no second write to the row.
    let queued = third - ignored(&events[..third]);
    assert_eq!(count(&app, "SELECT count(*) FROM stripe_events WHERE status = 'received'").await as usize, queued);
    let jobs = app.state.queue.envelopes(&"stripe.event".into()).await.expect("envelopes").len();
    assert_eq!(jobs, queued, "each stored event's job is in Redis");
    // Everything Redis held — queued jobs, their idempotency keys, worker registrations, the
    // scheduler's lease — is gone; webhooks keep arriving meanwhile.
    redis.kill();
    let mut refused = 0;
    // A few during the outage: each waits out the Redis client's retries (~0.5 s).
    let resumed = third + 20;
    for e in &events[third..resumed] {
        refused += deliver_until_accepted(&http, &base, e).await;
    }
    redis = PrivateRedis::start(redis.port).await;
    let restarted = Instant::now();
    let worker = Proc::start(&app, "worker", &[]);
    let _logs = LogsOnPanic(vec![member.log_path(), worker.log_path()]);
    for e in &events[resumed..] {
        refused += deliver_until_accepted(&http, &base, e).await;
    }
    // The first third's jobs went with Redis's data: the epoch check re-queues them at once
    // (the sweep would only after 30 s).
    until("every accepted event processed", Duration::from_secs(30), || async {
        count(&app, "SELECT count(*) FROM stripe_events WHERE status NOT IN ('processed', 'ignored')").await == 0
    })
    .await;
    eprintln!("drill redis restart: every event processed {:.1} s after Redis came back ({refused} deliveries refused meanwhile)", restarted.elapsed().as_secs_f64());
    let stored = count(&app, "SELECT count(*) FROM stripe_events").await;
    assert_eq!(stored as usize, events.len(), "every delivered event is in the inbox once");
    let handled = count(&app, "SELECT count(*) FROM stripe_events WHERE status = 'processed'").await;
    assert_eq!(count(&app, "SELECT count(*) FROM stripe_events WHERE status = 'processed' AND attempts = 1").await, handled, "none applied twice");
    assert_eq!(count(&app, "SELECT count(*) FROM subscriptions").await, 50);
    for m in [member, worker] {
        let (status, log) = m.terminate().await;
        assert!(status.success(), "{log}");
    }
    drop(redis);
}

#[tokio::test]
async fn postgres_stopped_for_30_s_during_a_burst_is_a_503_loses_nothing_and_workers_catch_up() {
    let _machine = crate::support::MACHINE.read().await;
    let sim = StripeSim::start().await;
    let pg = PrivatePostgres::start().await;
    let db_env = [
        ("DATABASE_URL", pg.url("ballast_app")),
        ("BALLAST_SYSTEM_DATABASE_URL", pg.url("ballast_system")),
        ("BALLAST_OWNER_DATABASE_URL", pg.url("ballast_owner")),
    ];
    let mut builder = TestApp::builder().roles(&[]).env("STRIPE_API_BASE", &sim.base_url);
    for (k, v) in &db_env {
        builder = builder.env(k, v);
    }
    let app = builder.spawn().await;
    let migrated = app.cli(&["migrate"]);
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    let events = signups(&app, &sim, 60, 2).await;
    let (member, base) = listening_member(&app, "api,worker,scheduler").await;
    let _logs = LogsOnPanic(vec![member.log_path()]);
    let http = reqwest::Client::new();
    // The burst: the first half lands, then PostgreSQL stops with jobs queued and running.
    let half = events.len() / 2;
    let burst: Vec<_> = events[..half].iter().map(|e| deliver_until_accepted(&http, &base, e)).collect();
    futures::future::join_all(burst).await;
    pg.down();
    let stopped = Instant::now();
    // While it is down every webhook is refused with a 503 and a JSON error (Stripe retries).
    let mut refusals = 0;
    while stopped.elapsed() < Duration::from_secs(30) {
        let e = &events[half + refusals % (events.len() - half)];
        let body = serde_json::to_vec(e).expect("json");
        let sig = crate::support::stripe_sim::signature_header(crate::support::stripe_sim::SECRET, chrono::Utc::now().timestamp(), &body);
        let r = http.post(format!("{base}/webhooks/stripe")).header("stripe-signature", sig).body(body).send().await.expect("the intake answers");
        assert_eq!(r.status(), 503, "while PostgreSQL is down");
        let error: Value = r.json().await.expect("a JSON error");
        assert!(error["error"]["code"].is_string(), "{error}");
        refusals += 1;
    }
    pg.up();
    let restarted = Instant::now();
    // Stripe's retries of the refused half arrive now.
    let rest: Vec<_> = events[half..].iter().map(|e| deliver_until_accepted(&http, &base, e)).collect();
    futures::future::join_all(rest).await;
    until("workers caught up", Duration::from_secs(90), || async {
        count(&app, "SELECT count(*) FROM stripe_events WHERE status NOT IN ('processed', 'ignored')").await == 0
    })
    .await;
    eprintln!(
        "drill postgres down 30 s: {refusals} deliveries refused with 503; caught up {:.1} s after PostgreSQL returned",
        restarted.elapsed().as_secs_f64()
    );
    assert_eq!(count(&app, "SELECT count(*) FROM stripe_events").await as usize, events.len(), "every event stored once");
    // Runs that failed while PostgreSQL was down count as attempts; what matters is that one
    // run applied each event.
    let (status, log) = member.terminate().await;
    assert!(status.success(), "{log}");
    assert_applied_once(&app, &[log]).await;
    assert_eq!(count(&app, "SELECT count(*) FROM subscriptions").await, 30);
    // The burst's work outlasts the outage on its retries. (A minutely scheduled job such as
    // slo.evaluate, two attempts, may be dead-lettered if its minute falls in the outage; the
    // next minute's run supersedes it, so it is reported, not failed on.)
    let dead: Vec<(String, i32, String)> = sqlx::query_as("SELECT kind, attempts, error FROM job_dead_letters")
        .fetch_all(&app.state.system_pool.0)
        .await
        .expect("dead letters");
    let (burst, scheduled): (Vec<_>, Vec<_>) = dead.into_iter().partition(|(kind, _, _)| matches!(kind.as_str(), "stripe.event" | "email.send"));
    assert!(burst.is_empty(), "retries outlasted the outage: {burst:?}");
    if !scheduled.is_empty() {
        eprintln!("drill postgres down 30 s: scheduled runs dead-lettered during the outage: {scheduled:?}");
    }
}


/// PostgreSQL crashes right after usage batches are acknowledged: every acknowledged unit is
/// there when it comes back, because the intake answers only after its commit is on disk (an
/// asynchronous commit, `synchronous_commit = off`, answers before, and the crash takes it).
/// While PostgreSQL is down the intake answers 503, a refusal the client retries.
#[tokio::test]
async fn postgres_crashed_right_after_usage_is_acknowledged_keeps_every_acknowledged_unit() {
    let _machine = crate::support::MACHINE.read().await;
    let sim = StripeSim::start().await;
    let pg = PrivatePostgres::start().await;
    {
        // The WAL writer flushes asynchronous commits every 10 s instead of 0.2 s: one that
        // did not wait for its flush is still in PostgreSQL's buffers at the crash.
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port)).await.expect("connect");
        for sql in ["ALTER SYSTEM SET wal_writer_delay = '10s'", "SELECT pg_reload_conf()"] {
            sqlx::raw_sql(sql).execute(&mut admin).await.expect("wal_writer_delay");
        }
    }
    let mut builder = TestApp::builder().roles(&[]).env("STRIPE_API_BASE", &sim.base_url);
    for role in ["ballast_app", "ballast_system", "ballast_owner"] {
        let var = match role {
            "ballast_app" => "DATABASE_URL",
            "ballast_system" => "BALLAST_SYSTEM_DATABASE_URL",
            _ => "BALLAST_OWNER_DATABASE_URL",
        };
        builder = builder.env(var, &pg.url(role));
    }
    let app = builder.spawn().await;
    let migrated = app.cli(&["migrate"]);
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    let (tenant, key) = crate::support::fleet::usage_tenant(&app, &sim).await;
    let (member, base) = listening_member(&app, "api").await;
    let _logs = LogsOnPanic(vec![member.log_path()]);
    let http = reqwest::Client::new();
    let batch = |round: usize| {
        let now = chrono::Utc::now().to_rfc3339();
        let items: Vec<Value> = (1..=5).map(|q| serde_json::json!({"metric": "api_calls", "quantity": q, "timestamp": now, "idempotency_key": format!("crash{round}-{q}")})).collect();
        serde_json::json!({"items": items})
    };
    let stored = || async {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&pg.url("ballast_system")).await.expect("connect");
        sqlx::query_scalar::<_, i64>("SELECT coalesce(sum(quantity), 0)::bigint FROM usage_items WHERE tenant_id = $1").bind(tenant).fetch_one(&mut conn).await.expect("stored units")
    };
    let mut acknowledged = 0;
    for round in 0..5 {
        // Sent until acknowledged: the first try after a restart may meet a pool connection
        // the crash broke (a 503 the client retries).
        let mut tries = 0;
        loop {
            let r = http.post(format!("{base}/v1/usage")).bearer_auth(&key).json(&batch(round)).send().await.expect("the intake answers");
            if r.status() == 200 {
                break;
            }
            assert_eq!(r.status(), 503, "{}", r.text().await.unwrap_or_default());
            tries += 1;
            assert!(tries < 100, "round {round}: never acknowledged");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        acknowledged += 15;
        pg.crash();
        let refused = http.post(format!("{base}/v1/usage")).bearer_auth(&key).json(&batch(100 + round)).send().await.expect("the intake answers");
        assert_eq!(refused.status(), 503, "while PostgreSQL is down: a retryable refusal");
        let error: Value = refused.json().await.expect("a JSON error");
        assert!(error["error"]["code"].is_string(), "{error}");
        pg.up();
        assert_eq!(stored().await, acknowledged, "round {round}: every acknowledged unit survived the crash, the refused batch is not stored");
    }
    let (status, log) = member.terminate().await;
    assert!(status.success(), "{log}");
}

/// One client of the intake: usage batches and jobs, each sent again after any failure with
/// the same idempotency keys (as a client must) until it is acknowledged.
struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
    /// Units acknowledged with a 200.
    units: i64,
    /// Ids of jobs acknowledged with a 202 that queued them (not duplicates).
    jobs: std::collections::BTreeSet<String>,
    /// Requests refused or unanswered before they were acknowledged.
    refused: u32,
}

impl Client {
    async fn send(&mut self, path: &str, body: &Value) -> Value {
        loop {
            let sent = self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.key).json(body).timeout(Duration::from_secs(5)).send().await;
            match sent {
                Ok(r) if r.status().is_success() => return r.json().await.expect("json"),
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    assert!(status.is_server_error(), "{path}: a refusal a client would not retry: {status} {body}");
                    if self.refused % 20 == 0 {
                        eprintln!("{path}: {status} {body}");
                    }
                }
                Err(e) => {
                    if self.refused % 20 == 0 {
                        eprintln!("{path}: {e}");
                    }
                }
            }
            self.refused += 1;
            assert!(self.refused < 2_000, "{path}: never accepted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Round `n`: a batch of 5 items (1 to 5 units) and one job.
    async fn round(&mut self, n: usize) {
        let now = chrono::Utc::now().to_rfc3339();
        let items: Vec<Value> =
            (1..=5).map(|q| serde_json::json!({"metric": "api_calls", "quantity": q, "timestamp": now, "idempotency_key": format!("r{n}-{q}")})).collect();
        let done = self.send("/v1/usage", &serde_json::json!({"items": items})).await;
        // A retry of a batch that was stored before its answer was lost reports duplicates.
        assert_eq!(done["counted"].as_i64().unwrap_or(0) + done["duplicates"].as_i64().unwrap_or(0), 5, "{done}");
        self.units += 15;
        let job = self.send("/v1/jobs", &serde_json::json!({"kind": "noop", "idempotency_key": format!("job-{n}")})).await;
        if job["duplicate"] == false {
            self.jobs.insert(job["id"].as_str().expect("job id").to_owned());
        }
    }
}

/// Redis killed with SIGKILL in the middle of steady usage and job intake, and started again
/// the way deploy/dev.sh starts it: every acknowledged unit reaches the ledger once, and every
/// acknowledged job (queued while no worker ran, so it sat in Redis at the kill) runs once.
#[tokio::test]
async fn redis_killed_mid_intake_loses_no_acknowledged_unit_or_job() {
    let _machine = crate::support::MACHINE.read().await;
    let sim = StripeSim::start().await;
    let dir = tempfile::tempdir().expect("redis dir");
    let mut redis = PrivateRedis::start_as_deployed(free_port(), dir.path()).await;
    let app = TestApp::builder().roles(&[]).env("REDIS_URL", &redis.url()).env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let (tenant, key) = crate::support::fleet::usage_tenant(&app, &sim).await;
    let (member, base) = listening_member(&app, "api").await;
    let mut client = Client { http: reqwest::Client::new(), base, key, units: 0, jobs: Default::default(), refused: 0 };
    for n in 0..40 {
        client.round(n).await;
    }
    let before = (client.units, client.jobs.len());
    redis.kill();
    // While Redis is down the intake answers with a retryable error (usage needs its limit
    // counters, a job its queue); the client keeps its batch and sends it again later.
    for _ in 0..3 {
        client.refused += 1;
        let r = client
            .http
            .post(format!("{}/v1/jobs", client.base))
            .bearer_auth(&client.key)
            .json(&serde_json::json!({"kind": "noop", "idempotency_key": "job-40"}))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("the intake answers within 10 s");
        assert_eq!(r.status(), 503, "a retryable refusal while Redis is down");
    }
    redis = PrivateRedis::start_as_deployed(redis.port, dir.path()).await;
    let restarted = Some(Instant::now());
    for n in 40..80 {
        client.round(n).await;
    }
    let worker = Proc::start(&app, "worker", &[]);
    let _logs = LogsOnPanic(vec![member.log_path(), worker.log_path()]);
    // Every acknowledged job runs, and the flush bills every stored unit.
    until("every acknowledged job ran", Duration::from_secs(60), || async {
        let done: std::collections::BTreeSet<String> = completed_ids(&worker.log()).into_iter().collect();
        client.jobs.is_subset(&done)
    })
    .await;
    crate::support::fleet::flush_all_usage(&app).await;
    eprintln!(
        "drill redis SIGKILL: {} units and {} jobs acknowledged before the kill, {} and {} in all; {} requests refused (503) or unanswered; all run {:.1} s after Redis came back",
        before.0,
        before.1,
        client.units,
        client.jobs.len(),
        client.refused,
        restarted.map(|t| t.elapsed().as_secs_f64()).unwrap_or_default()
    );
    let ledger = crate::support::fleet::ledger_units(&app, tenant).await;
    assert_eq!(ledger, client.units, "every acknowledged unit in the ledger once");
    let billed: i64 = sim.meter_events().values().map(|(_, _, v)| v).sum();
    assert_eq!(billed, client.units, "and at Stripe once");
    let (status, log) = worker.terminate().await;
    assert!(status.success(), "{log}");
    let runs = completed_ids(&log);
    for id in &client.jobs {
        assert_eq!(runs.iter().filter(|r| *r == id).count(), 1, "job {id} ran once");
    }
    let (status, log) = member.terminate().await;
    assert!(status.success(), "{log}");
    drop(redis);
}
