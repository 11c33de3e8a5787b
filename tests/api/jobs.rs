//! The job runtime: retries with backoff, dead letters, CLI retry, timeouts, malformed
//! payloads, graceful shutdown, finished runs leaving no record, wake-ups instead of polling.

use std::time::Duration;

use ballast::newtypes::JobKind;
use ballast::queue::EnqueueRequest;
use ballast::queue::dead;
use ballast::queue::worker::RunOutcome;
use chrono::Utc;
use redis::AsyncCommands;
use serde_json::json;

use crate::support::TestApp;

#[tokio::test]
async fn failing_job_backs_off_then_dead_letters_then_cli_retry_runs_it() {
    let app = TestApp::spawn().await;
    let kind = JobKind::from("test.flaky");
    let fail_key = format!("{}:test:fail", app.state.keys.namespace());
    let mut redis = app.state.redis.clone();
    let _: () = redis.set(&fail_key, 1).await.expect("set");

    let job = app.state.queue.enqueue(EnqueueRequest::new(kind.clone(), json!({"fail_while_key": fail_key}))).await.expect("enqueue");
    app.drain().await;

    // Attempt 1 failed: attempt 2 waits base_secs = 30 s ± 20 %.
    let scheduled = app.state.queue.scheduled(&kind).await.expect("scheduled");
    assert_eq!(scheduled.len(), 1, "{scheduled:?}");
    let (env, due) = &scheduled[0];
    assert_eq!((env.id.clone(), env.attempt), (job.id.clone(), 2));
    let wait = (*due - Utc::now()).num_seconds();
    assert!((22..=37).contains(&wait), "first retry due in {wait} s");

    // Advance the queue's clock: attempt 2 fails, attempt 3 waits 60 s (capped) ± 20 %.
    assert_eq!(app.state.queue.promote_scheduled(&kind, Utc::now() + chrono::Duration::hours(1)).await.expect("promote"), 1);
    app.drain().await;
    let scheduled = app.state.queue.scheduled(&kind).await.expect("scheduled");
    assert_eq!(scheduled[0].0.attempt, 3);
    let wait = (scheduled[0].1 - Utc::now()).num_seconds();
    assert!((46..=73).contains(&wait), "second retry due in {wait} s");

    // Attempt 3 is the last: dead letter, nothing left queued.
    app.state.queue.promote_scheduled(&kind, Utc::now() + chrono::Duration::hours(1)).await.expect("promote");
    app.drain().await;
    assert!(app.state.queue.scheduled(&kind).await.expect("scheduled").is_empty());
    let dead = dead::list(&app.state.system_pool, Some("test.flaky"), 10).await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job_id, job.id.0);
    assert_eq!(dead[0].attempts, 3);
    assert!(dead[0].error.contains("attempts exhausted"), "{}", dead[0].error);

    // The CLI lists it and retries it; with the fault gone the job completes.
    let out = app.cli(&["jobs", "dead", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&dead[0].id.to_string()));
    let _: () = redis.del(&fail_key).await.expect("del");
    let out = app.cli(&["jobs", "retry", &dead[0].id.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    app.drain().await;
    let finished = app.events.finished.lock().expect("lock").clone();
    let last = finished.last().expect("a run");
    assert_eq!((last.0.id.clone(), last.0.attempt, last.1), (job.id.clone(), 1, RunOutcome::Completed));
    assert!(dead::list(&app.state.system_pool, None, 10).await.expect("dead").is_empty(), "retried letter is closed");
    // A second retry of the same letter is refused.
    let out = app.cli(&["jobs", "retry", &dead[0].id.to_string()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no open dead letter"));
}

#[tokio::test]
async fn hung_job_times_out_and_is_retried_then_dead_lettered() {
    let app = TestApp::spawn().await;
    let kind = JobKind::from("test.hang");
    let job = app.state.queue.enqueue(EnqueueRequest::new(kind.clone(), json!({}))).await.expect("enqueue");
    app.drain().await;
    let scheduled = app.state.queue.scheduled(&kind).await.expect("scheduled");
    assert_eq!(scheduled.len(), 1, "timed-out run is retried");
    app.state.queue.promote_scheduled(&kind, Utc::now() + chrono::Duration::minutes(5)).await.expect("promote");
    app.drain().await;
    let dead = dead::list(&app.state.system_pool, Some("test.hang"), 10).await.expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].job_id.clone(), dead[0].attempts), (job.id.0.clone(), 2));
    assert!(dead[0].error.contains("timed out"), "{}", dead[0].error);
}

#[tokio::test]
async fn malformed_payload_is_dead_lettered_at_once_with_the_parse_error() {
    let app = TestApp::spawn().await;
    app.state.queue.enqueue(EnqueueRequest::new("test.flaky", json!({"wrong_field": 1}))).await.expect("enqueue");
    app.drain().await;
    assert!(app.state.queue.scheduled(&JobKind::from("test.flaky")).await.expect("scheduled").is_empty(), "never retried");
    let dead = dead::list(&app.state.system_pool, None, 10).await.expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 1);
    assert!(dead[0].error.starts_with("malformed payload") && dead[0].error.contains("wrong_field"), "{}", dead[0].error);
}

#[tokio::test]
async fn unknown_kind_is_refused_at_enqueue() {
    let app = TestApp::spawn().await;
    let err = app.state.queue.enqueue(EnqueueRequest::new("no.such.kind", json!({}))).await.unwrap_err();
    assert!(err.to_string().contains("unknown job kind \"no.such.kind\""), "{err}");
    let out = app.cli(&["enqueue", "noop", "--payload", "{not json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--payload is not valid JSON"));
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_job_finish() {
    let mut app = TestApp::spawn().await;
    let job = app.state.queue.enqueue(EnqueueRequest::new("test.slow", json!({"ms": 300}))).await.expect("enqueue");
    app.events.wait_until("job started", Duration::from_secs(10), |e| !e.started.lock().expect("lock").is_empty()).await;
    app.shutdown().await;
    let finished = app.events.finished.lock().expect("lock").clone();
    assert_eq!(finished.len(), 1, "the in-flight job finished before shutdown returned");
    assert_eq!((finished[0].0.id.clone(), finished[0].1), (job.id, RunOutcome::Completed));
    let stats = app.state.queue.stats().await.expect("stats");
    let slow = stats.iter().find(|s| s.kind == "test.slow").expect("kind");
    assert_eq!((slow.ready, slow.running), (0, 0), "acknowledged, not left locked");
}

#[tokio::test]
async fn enqueue_with_an_idempotency_key_queues_once() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let mut req = EnqueueRequest::new("noop", json!({}));
    req.idempotency_key = Some("once".into());
    let first = app.state.queue.enqueue(req.clone()).await.expect("enqueue");
    let second = app.state.queue.enqueue(req).await.expect("enqueue");
    assert!(!first.duplicate && second.duplicate);
    assert_eq!(second.id, first.id, "a repeat answers the job it first queued");
    assert_eq!(app.state.queue.envelopes(&JobKind::from("noop")).await.expect("envelopes").len(), 1);
}

#[tokio::test]
async fn idle_workers_are_woken_by_each_enqueue_not_by_their_poll() {
    // With an hour between polls, every run below must be picked up through its announcement,
    // including one that arrives while the worker's previous fetch is still in flight and comes
    // back empty: many rounds of a few producers racing the worker's fetches, each round waited
    // out before the next, so a lost announcement leaves a run stranded and the test fails.
    let app = TestApp::builder().poll(Duration::from_secs(3600)).spawn().await;
    let mut expected = 0;
    for round in 1..=100 {
        let producers = (0..3).map(|_| app.state.queue.enqueue(EnqueueRequest::new("noop", json!({}))));
        for enqueued in futures::future::join_all(producers).await {
            enqueued.expect("enqueue");
        }
        expected += 3;
        app.events.wait_until(&format!("round {round} picked up"), Duration::from_secs(10), |e| e.finished.lock().expect("lock").len() >= expected).await;
    }
}

#[tokio::test]
async fn finished_runs_leave_no_record_in_redis() {
    let app = TestApp::spawn().await;
    let kind = JobKind::from("noop");
    app.state.queue.set_paused("noop", true).await.expect("pause");
    let ids = app.state.queue.enqueue_many(&kind, vec![json!({}); 200]).await.expect("enqueue");
    // Queued, each is found by its id (its run is stored under an id derived from it).
    let found = app.state.queue.find(&ids[150].0).await.expect("find").expect("queued");
    assert_eq!(found.id, ids[150]);
    app.state.queue.set_paused("noop", false).await.expect("resume");
    app.drain().await;
    // Drained means acknowledged, and an acknowledgement deletes the run's data.
    assert_eq!(app.state.queue.envelopes(&kind).await.expect("envelopes").len(), 0);
    assert!(app.state.queue.find(&ids[150].0).await.expect("find").is_none());
}

#[tokio::test]
async fn jobs_given_the_same_id_all_run_though_run_ids_derive_from_job_ids() {
    let app = TestApp::spawn().await;
    let same = ballast::newtypes::JobId("chosen-by-the-caller".into());
    // Paused, so all three are still queued when counted.
    app.state.queue.set_paused("noop", true).await.expect("pause");
    for n in 0..3 {
        let req = EnqueueRequest { id: Some(same.clone()), ..EnqueueRequest::new("noop", json!({"sleep_ms": n})) };
        app.state.queue.enqueue(req).await.expect("enqueue");
    }
    // The first under the job id, the second with '*', the third under a fresh id: none lost.
    assert_eq!(app.state.queue.envelopes(&JobKind::from("noop")).await.expect("envelopes").len(), 3);
    assert!(app.state.queue.find(&same.0).await.expect("find").is_some());
    app.state.queue.set_paused("noop", false).await.expect("resume");
    app.drain().await;
    let ran = app.events.finished.lock().expect("lock").iter().filter(|(e, _)| e.id == same).count();
    assert_eq!(ran, 3);
}

#[tokio::test]
async fn a_backlog_larger_than_luas_unpack_limit_drains() {
    // apalis-redis's own push parks every run in the scheduled set and its fetch promotes the
    // whole due set with one Lua `unpack`, which fails past ~8,000 entries.
    let app = TestApp::spawn().await;
    let kind = JobKind::from("noop");
    let ids = app.state.queue.enqueue_many(&kind, vec![json!({}); 12_000]).await.expect("enqueue");
    assert_eq!(ids.len(), 12_000);
    app.drain().await;
    let finished = app.events.finished.lock().expect("lock").len();
    assert_eq!(finished, 12_000);
}

#[tokio::test]
async fn queue_inspection_shows_one_job_and_retries_or_discards_dead_letters_in_bulk() {
    let app = TestApp::spawn().await;
    let fail_key = format!("{}:test:fail", app.state.keys.namespace());
    let mut redis = app.state.redis.clone();
    let _: () = redis.set(&fail_key, 1).await.expect("set");
    let job = app.state.queue.enqueue(EnqueueRequest::new("test.flaky", json!({"fail_while_key": fail_key}))).await.expect("enqueue");
    app.drain().await;

    // A job waiting for its retry: payload, attempt and the last error.
    let out = app.cli(&["jobs", "show", &job.id.0, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!((shown["where"].as_str(), shown["attempt"].as_u64()), (Some("queued"), Some(2)), "{shown}");
    assert!(shown["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{shown}");
    assert_eq!(shown["payload"]["fail_while_key"], fail_key.as_str());
    // The failed first attempt travels with the retry: its error and how long it ran.
    assert_eq!(shown["history"].as_array().map(Vec::len), Some(1), "{shown}");
    assert_eq!((shown["history"][0]["attempt"].as_u64(), &shown["history"][0]["error"]), (Some(1), &shown["last_error"]), "{shown}");

    // Dead letters of two kinds and two causes.
    let pool = &app.state.system_pool;
    for (i, (kind, error)) in [("test.flaky", "boom A"), ("test.flaky", "boom A"), ("test.flaky", "boom B"), ("test.hang", "timed out"), ("test.hang", "timed out")].iter().enumerate() {
        let envelope = json!({"id": format!("dead-{i}"), "kind": kind, "payload": {"fail_while_key": "none"}, "attempt": 3, "enqueued_at_us": 0});
        dead::record(pool, &format!("dead-{i}"), kind, None, &envelope, 3, error).await.expect("dead letter");
    }
    let out = app.cli(&["jobs", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let dead_of = |k: &str| listed.as_array().and_then(|a| a.iter().find(|x| x["kind"] == k)).map(|x| x["dead"].clone()).expect("kind");
    assert_eq!((dead_of("test.flaky"), dead_of("test.hang")), (json!(3), json!(2)));
    let out = app.cli(&["jobs", "show", "dead-3", "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!((shown["where"].as_str(), shown["last_error"].as_str()), (Some("dead"), Some("timed out")));

    let refused = app.cli(&["jobs", "retry"]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("--all"));
    // Bulk is a dry run unless --execute: it names what it would touch and touches nothing.
    let dry = app.cli(&["jobs", "discard", "--kind", "test.hang", "--all", "--json"]);
    let dry: serde_json::Value = serde_json::from_slice(&dry.stdout).expect("json");
    assert_eq!((dry["executed"].as_bool(), dry["dead_letters"].as_array().map(Vec::len)), (Some(false), Some(2)), "{dry}");
    assert_eq!(dead::list(pool, None, 10).await.expect("open").len(), 5, "the dry run discarded nothing");
    let out = app.cli(&["jobs", "discard", "--kind", "test.hang", "--all", "--execute", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")["discarded"], 2);
    let out = app.cli(&["jobs", "retry", "--kind", "test.flaky", "--error", "boom A", "--all", "--execute", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let retried: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(retried["retried"].as_array().map(Vec::len), Some(2));
    let open = dead::list(pool, None, 10).await.expect("open");
    assert_eq!(open.iter().map(|d| d.error.as_str()).collect::<Vec<_>>(), vec!["boom B"], "only the unmatched letter stays open");
    let audited: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_log WHERE action LIKE 'jobs.%' ORDER BY id").fetch_all(&pool.0).await.expect("audit");
    assert_eq!(audited, vec!["jobs.discard", "jobs.retry"]);
}

/// A member's job counts per minute flushed twice at once (its own flush every few seconds,
/// and one a caller asks for, as the console's tests do) add each run once: the second finds
/// only what was counted after the first took its gain.
#[tokio::test]
async fn job_counts_flushed_twice_at_once_are_added_once() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let counters = prometheus::IntCounterVec::new(prometheus::Opts::new("jobs_total", "runs"), &["kind", "outcome"]).expect("counters");
    let minutes = ballast::queue::minutes::JobMinutes::new(counters.clone());
    let (redis, keys) = (&app.state.redis, &app.state.keys);
    counters.with_label_values(&["noop", "processed"]).inc_by(3);
    // Joined: the first flush runs up to its Redis call, then the second starts.
    let (first, second) = tokio::join!(minutes.flush(redis, keys), minutes.flush(redis, keys));
    first.and(second).expect("flushes");
    counters.with_label_values(&["noop", "processed"]).inc_by(2);
    minutes.flush(redis, keys).await.expect("flush");
    let now = chrono::Utc::now().timestamp().div_euclid(60);
    let counts = ballast::queue::minutes::recent_all(redis, keys, &["noop".to_owned()], now, 3).await.expect("counts");
    let processed: u64 = counts["noop"].iter().map(|(_, p, _)| p).sum();
    assert_eq!(processed, 5);
}
