//! Many members, rolling restarts: three `ballast` processes of each role under a steady mixed
//! load (signed webhooks, usage batches, intake jobs, a dunning run), each member restarted in
//! turn with SIGTERM — one api member with SIGKILL, mid-request. Nothing acknowledged is lost,
//! nothing is done twice, the scheduler keeps one leader, and some api member answers every
//! request throughout (the client moves to the next member on a refusal, as a load balancer
//! does). Runs on the shared Redis, so `deploy/dev.sh test` runs it on the cluster too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::TestApp;
use crate::support::fleet::{assert_applied_once, completed_ids, count, signups, until_listening};
use crate::support::procs::{LogsOnPanic, Proc, free_port, until};
use crate::support::smtp::SmtpServer;
use crate::support::stripe_sim::{self, STARTER, StripeSim};

/// The intake as a client sees it behind a load balancer: each request goes to the next live
/// api member, and to the one after on a refusal or a dropped connection, with the same
/// idempotency keys, until it is acknowledged.
struct Load {
    http: reqwest::Client,
    key: String,
    bases: Arc<Mutex<Vec<String>>>,
    next: usize,
    rounds: Arc<AtomicU64>,
    units: i64,
    jobs: BTreeSet<String>,
    delivered: BTreeSet<String>,
    /// Attempts refused or unanswered, and the longest any request waited for its answer.
    refused: u32,
    worst_wait: Duration,
}

impl Load {
    async fn send(&mut self, path: &str, body: Vec<u8>, signed: bool) -> Value {
        let first = Instant::now();
        loop {
            let base = {
                let bases = self.bases.lock().expect("bases");
                self.next = (self.next + 1) % bases.len();
                bases[self.next].clone()
            };
            let mut req = self.http.post(format!("{base}{path}")).header("content-type", "application/json").body(body.clone());
            req = if signed {
                req.header("stripe-signature", stripe_sim::signature_header(stripe_sim::SECRET, chrono::Utc::now().timestamp(), &body))
            } else {
                req.bearer_auth(&self.key)
            };
            match req.timeout(Duration::from_secs(5)).send().await {
                Ok(r) if r.status().is_success() => {
                    self.worst_wait = self.worst_wait.max(first.elapsed());
                    return r.json().await.unwrap_or_default();
                }
                Ok(r) => {
                    let status = r.status();
                    assert!(status.is_server_error(), "{path}: a refusal a client would not retry: {status} {}", r.text().await.unwrap_or_default());
                }
                Err(_) => {}
            }
            self.refused += 1;
            assert!(first.elapsed() < Duration::from_secs(30), "{path}: no api member answered for 30 s");
        }
    }

    /// One round: a usage batch of 5 items (1..5 units), a job, and up to 3 webhook events.
    async fn round(&mut self, n: u64, events: &mut mpsc::UnboundedReceiver<Value>) {
        let now = chrono::Utc::now().to_rfc3339();
        let items: Vec<Value> = (1..=5).map(|q| json!({"metric": "api_calls", "quantity": q, "timestamp": now, "idempotency_key": format!("r{n}-{q}")})).collect();
        let done = self.send("/v1/usage", json!({"items": items}).to_string().into_bytes(), false).await;
        assert_eq!(done["counted"].as_i64().unwrap_or(0) + done["duplicates"].as_i64().unwrap_or(0), 5, "{done}");
        self.units += 15;
        let job = self.send("/v1/jobs", json!({"kind": "noop", "idempotency_key": format!("job-{n}")}).to_string().into_bytes(), false).await;
        if job["duplicate"] == false {
            self.jobs.insert(job["id"].as_str().expect("job id").to_owned());
        }
        for _ in 0..3 {
            let Ok(event) = events.try_recv() else { break };
            self.send("/webhooks/stripe", serde_json::to_vec(&event).expect("json"), true).await;
            self.delivered.insert(event["id"].as_str().unwrap_or_default().to_owned());
        }
        self.rounds.fetch_add(1, Ordering::Relaxed);
    }
}

/// When a member's JSON log says `message`.
fn logged(log: &str, message: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message)
        .filter_map(|v| v["timestamp"].as_str().and_then(|t| t.parse().ok()))
        .collect()
}

/// Each scheduler's leadership spans, from its log: acquired until released or lost.
fn leadership(log: &str) -> Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    let starts = logged(log, "Scheduler leadership acquired.");
    let mut ends = logged(log, "Scheduler lease released.");
    ends.extend(logged(log, "Scheduler leadership lost; ticking stops."));
    ends.sort();
    starts.iter().map(|s| (*s, ends.iter().find(|e| *e >= s).copied().unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC))).collect()
}

/// Waits until the load has made `n` more rounds (so each restart happens under load).
async fn more_rounds(rounds: &AtomicU64, n: u64) {
    let target = rounds.load(Ordering::Relaxed) + n;
    until("the load goes on", Duration::from_secs(60), || std::future::ready(rounds.load(Ordering::Relaxed) >= target)).await;
}

#[tokio::test]
async fn three_members_per_role_restarted_one_at_a_time_under_load_lose_nothing_and_do_nothing_twice() {
    let _machine = crate::support::MACHINE.read().await;
    let (sim, smtp) = (StripeSim::start().await, SmtpServer::start().await);
    let app = TestApp::builder()
        .roles(&[])
        .env("STRIPE_API_BASE", &sim.base_url)
        .env("BALLAST_SMTP_HOST", "127.0.0.1")
        .env("BALLAST_SMTP_PORT", &smtp.port.to_string())
        .env("BALLAST_SMTP_SECURITY", "none")
        .env("BALLAST_EMAIL_FROM", "Billing <billing@example.com>")
        .env("BALLAST_DB_POOL_SIZE", "4")
        .env("BALLAST_SCHEDULER_LEASE_SECS", "2")
        // The load is one tenant writing as fast as the members answer, for minutes: the drill
        // is about restarts, so the per-tenant write limit (the intake suite's subject) is
        // set out of its reach.
        .limits("[tenant_writes]\nlimit = 100000\nwindow_secs = 60\n[key]\nlimit = 100000\nwindow_secs = 60\n")
        .spawn()
        .await;
    let (tenant, key) = crate::support::fleet::usage_tenant(&app, &sim).await;
    // Webhooks: 60 sign-ups (half subscribing), three customers whose renewal is declined, and
    // the month's renewals of everyone else.
    let mut events = signups(&app, &sim, 60, 2).await;
    let mut declined = Vec::new();
    for i in 0..3 {
        let t = app.tenant(&format!("declined{i}")).await;
        let c = sim.customer(t, true);
        sim.checkout(t, &c, STARTER, None);
        declined.push(c);
    }
    events.extend(sim.take_events());
    for c in &declined {
        sim.set_declining(c, true);
    }
    sim.advance_days(30);
    // The renewal invoice is a draft for an hour, then finalized and charged.
    sim.advance_hours(1);
    events.extend(sim.take_events());
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    for e in &events {
        events_tx.send(e.clone()).expect("queue event");
    }

    let start_api = |app: &TestApp| {
        let port = free_port();
        (Proc::start(app, "api", &[("BALLAST_LISTEN", &format!("127.0.0.1:{port}"))]), format!("http://127.0.0.1:{port}"))
    };
    let mut api = Vec::new();
    for _ in 0..3 {
        let (mut p, base) = start_api(&app);
        until_listening(&mut p, &base).await;
        api.push((p, base));
    }
    let mut workers: Vec<Proc> = (0..3).map(|_| Proc::start(&app, "worker", &[])).collect();
    let mut schedulers: Vec<Proc> = (0..3).map(|_| Proc::start(&app, "scheduler", &[])).collect();
    let mut logs = LogsOnPanic(Vec::new());
    let mut retired: Vec<(String, String)> = Vec::new();

    let bases = Arc::new(Mutex::new(api.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>()));
    let rounds = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let mut load = Load {
            http: reqwest::Client::new(),
            key,
            bases: bases.clone(),
            next: 0,
            rounds: rounds.clone(),
            units: 0,
            jobs: BTreeSet::new(),
            delivered: BTreeSet::new(),
            refused: 0,
            worst_wait: Duration::ZERO,
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0;
            // Until stopped and every event handed over has been delivered.
            while !stop.load(Ordering::Relaxed) || !events_rx.is_empty() || !events_rx.is_closed() {
                load.round(n, &mut events_rx).await;
                n += 1;
            }
            load
        })
    };
    let began = Instant::now();

    // The api members, one at a time while webhooks arrive; the second is killed mid-request.
    for i in 0..3 {
        more_rounds(&rounds, 20).await;
        let (old, old_base) = api.remove(0);
        let log = if i == 1 {
            old.signal("KILL");
            old.log()
        } else {
            let (status, log) = old.terminate().await;
            assert!(status.success(), "{log}");
            log
        };
        retired.push(("api".into(), log));
        let (mut p, base) = start_api(&app);
        until_listening(&mut p, &base).await;
        {
            let mut live = bases.lock().expect("bases");
            live.retain(|b| *b != old_base);
            live.push(base.clone());
        }
        api.push((p, base));
    }
    until("every webhook delivered and processed", Duration::from_secs(90), || async {
        count(&app, "SELECT count(*) FROM stripe_events").await as usize == events.len()
            && count(&app, "SELECT count(*) FROM stripe_events WHERE status NOT IN ('processed', 'ignored')").await == 0
    })
    .await;

    // A dunning run (twice: two members may take it at once) for the day after the declines,
    // then the workers, one at a time, while it and the load run.
    sim.advance_days(1);
    let as_of = chrono::DateTime::from_timestamp(sim.now(), 0).expect("time");
    for _ in 0..2 {
        let payload = json!({"execute": true, "actor": "drill", "params": {"as_of": as_of}});
        let run = ballast::queue::EnqueueRequest::new("dunning.run", payload);
        app.state.queue.enqueue(run).await.expect("enqueue dunning");
    }
    for _ in 0..3 {
        more_rounds(&rounds, 20).await;
        let (status, log) = workers.remove(0).terminate().await;
        assert!(status.success(), "{log}");
        retired.push(("worker".into(), log));
        workers.push(Proc::start(&app, "worker", &[]));
    }
    // The schedulers, one at a time, the leader among them.
    for _ in 0..3 {
        more_rounds(&rounds, 20).await;
        let (status, log) = schedulers.remove(0).terminate().await;
        assert!(status.success(), "{log}");
        retired.push(("scheduler".into(), log));
        schedulers.push(Proc::start(&app, "scheduler", &[]));
        until("a scheduler leads", Duration::from_secs(10), || async {
            ballast::scheduler::current_leader(&app.state.redis, &app.state.keys).await.is_ok_and(|l| l.is_some())
        })
        .await;
    }
    // What the dunning run caused at Stripe (the declined retries) arrives too; then the load stops.
    until("the dunning run retried every declined invoice", Duration::from_secs(60), || async {
        declined.iter().all(|c| sim.api_calls().iter().any(|(what, id, _)| what == "pay" && sim.open_invoices_of(c).contains(id)))
    })
    .await;
    for e in sim.take_events() {
        events_tx.send(e).expect("queue event");
    }
    drop(events_tx);
    more_rounds(&rounds, 20).await;
    stop.store(true, Ordering::Relaxed);
    let load = load.await.expect("load");
    let took = began.elapsed();
    until("every event processed and the queues drained", Duration::from_secs(60), || async {
        count(&app, "SELECT count(*) FROM stripe_events WHERE status NOT IN ('processed', 'ignored')").await == 0
            && crate::support::fleet::queue_drained(&app).await
    })
    .await;
    crate::support::fleet::flush_all_usage(&app).await;

    for (p, _) in api {
        let (status, log) = p.terminate().await;
        assert!(status.success(), "{log}");
        retired.push(("api".into(), log));
    }
    for (role, procs) in [("worker", workers), ("scheduler", schedulers)] {
        for p in procs {
            logs.0.push(p.log_path());
            let (status, log) = p.terminate().await;
            assert!(status.success(), "{log}");
            retired.push((role.into(), log));
        }
    }
    eprintln!(
        "drill rolling restart: {} rounds in {:.1} s across 9 restarts (one SIGKILL): {} units, {} jobs, {} webhooks acknowledged; {} attempts refused or dropped, longest wait for an answer {} ms",
        rounds.load(Ordering::Relaxed),
        took.as_secs_f64(),
        load.units,
        load.jobs.len(),
        load.delivered.len(),
        load.refused,
        load.worst_wait.as_millis()
    );
    let worker_logs: Vec<String> = retired.iter().filter(|(r, _)| r == "worker").map(|(_, l)| l.clone()).collect();

    // Webhooks: each delivered event stored once and applied by exactly one run.
    assert_eq!(count(&app, "SELECT count(*) FROM stripe_events").await as usize, load.delivered.len());
    assert_applied_once(&app, &worker_logs).await;
    // Usage: every acknowledged unit in the ledger and at Stripe, once.
    let ledger = crate::support::fleet::ledger_units(&app, tenant).await;
    assert_eq!(ledger, load.units, "every acknowledged unit in the ledger once");
    assert_eq!(sim.meter_events().values().map(|(_, _, v)| v).sum::<i64>(), load.units, "and at Stripe once");
    // Jobs: one run per idempotency key, whichever member answered.
    let runs: Vec<String> = worker_logs.iter().flat_map(|l| completed_ids(l)).collect();
    let mut per_job: BTreeMap<&String, usize> = BTreeMap::new();
    for id in &runs {
        *per_job.entry(id).or_default() += 1;
    }
    for id in &load.jobs {
        assert_eq!(per_job.get(id), Some(&1), "job {id} ran once");
    }
    assert!(per_job.values().all(|n| *n == 1), "no run twice");
    // Dunning: each declined invoice retried once that day, its email sent once.
    for c in &declined {
        let invoice = sim.open_invoices_of(c).pop().expect("still open");
        let pays = sim.api_calls().iter().filter(|(what, id, _)| what == "pay" && *id == invoice).count();
        assert_eq!(pays, 1, "{invoice}: one retry on day 1");
        let to = format!("{c}@example.com");
        // (The renewal's `invoice.upcoming` a week before also mailed them.)
        let failed = smtp.messages().iter().filter(|m| m.to.contains(&to) && m.data.contains("did not go through")).count();
        assert_eq!(failed, 1, "{c}: one payment-failed email");
    }
    // The scheduler: leadership spans of different members never overlap.
    let mut spans: Vec<_> = retired.iter().filter(|(r, _)| r == "scheduler").flat_map(|(_, l)| leadership(l)).collect();
    spans.sort();
    assert!(spans.len() >= 2, "the leader was restarted too, and leadership moved: {spans:?}");
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "two leaders at once: {pair:?}");
    }
}
