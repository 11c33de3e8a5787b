//! `POST /webhooks/stripe`: signatures, bad input, duplicates, concurrency, outages.

use serde_json::json;

use crate::support::TestApp;
use crate::support::stripe_sim::{SECRET, signature_header};

fn event(id: &str, event_type: &str) -> serde_json::Value {
    json!({"id": id, "object": "event", "type": event_type, "created": chrono::Utc::now().timestamp(), "livemode": false,
           "data": {"object": {"id": "cus_x", "object": "customer", "metadata": {}}}})
}

async fn inbox_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM stripe_events").fetch_one(&app.state.system_pool.0).await.expect("count")
}

async fn queued_jobs(app: &TestApp) -> usize {
    app.state.queue.envelopes(&"stripe.event".into()).await.expect("envelopes").len()
}

async fn error_code(resp: crate::support::checked_http::CheckedResponse) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.expect("JSON error body");
    (status, body["error"]["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn bad_input_is_refused_with_a_json_error_and_nothing_is_stored() {
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).spawn().await;
    let body = serde_json::to_vec(&event("evt_bad", "customer.created")).expect("json");
    // Stale and future by a minute past the 300 s tolerance: the cases are checked seconds after
    // `now` on a loaded machine, and one second of margin made "future" pass as fresh.
    let now = chrono::Utc::now().timestamp();
    // (case, body, Stripe-Signature header, expected status, expected error code)
    type Case<'a> = (&'a str, Vec<u8>, Option<String>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("missing header", body.clone(), None, 400, "invalid_signature"),
        ("malformed header", body.clone(), Some("t=abc,v1=zz".into()), 400, "invalid_signature"),
        ("wrong secret", body.clone(), Some(signature_header("whsec_other", now, &body)), 400, "invalid_signature"),
        ("stale", body.clone(), Some(signature_header(SECRET, now - 360, &body)), 400, "invalid_signature"),
        ("future", body.clone(), Some(signature_header(SECRET, now + 360, &body)), 400, "invalid_signature"),
        ("not JSON", b"not json".to_vec(), Some(signature_header(SECRET, now, b"not json")), 400, "invalid_json"),
        ("no id", br#"{"type":"customer.created"}"#.to_vec(), Some(signature_header(SECRET, now, br#"{"type":"customer.created"}"#)), 400, "invalid_event"),
        ("no type", br#"{"id":"evt_1"}"#.to_vec(), Some(signature_header(SECRET, now, br#"{"id":"evt_1"}"#)), 400, "invalid_event"),
    ];
    for (name, body, sig, status, code) in cases {
        let got = error_code(app.post_webhook(body, sig).await).await;
        assert_eq!(got, (status, code.to_owned()), "{name}");
    }
    let huge = vec![b' '; 300 * 1024];
    let sig = signature_header(SECRET, now, &huge);
    assert_eq!(error_code(app.post_webhook(huge, Some(sig)).await).await, (413, "body_too_large".to_owned()));
    assert_eq!(inbox_count(&app).await, 0);
}

#[tokio::test]
async fn a_rotated_secret_with_two_v1_values_is_accepted() {
    let app = TestApp::builder().env("STRIPE_WEBHOOK_SECRET", "whsec_old, whsec_new").spawn().await;
    let body = serde_json::to_vec(&event("evt_rot", "some.unknown_type")).expect("json");
    let now = chrono::Utc::now().timestamp();
    let new = ballast::stripe::signature::sign("whsec_new", now, &body);
    let unknown = ballast::stripe::signature::sign("whsec_gone", now, &body);
    let resp = app.post_webhook(body, Some(format!("t={now},v1={new},v1={unknown}"))).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn unknown_types_are_stored_ignored_and_acknowledged_without_a_job() {
    let app = TestApp::spawn().await;
    assert_eq!(app.deliver(&event("evt_unknown", "plan.created")).await, 200);
    let status: String = sqlx::query_scalar("SELECT status FROM stripe_events WHERE id = 'evt_unknown'")
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("row");
    assert_eq!(status, "ignored");
    assert_eq!(queued_jobs(&app).await, 0);
}

#[tokio::test]
async fn the_same_event_from_eight_concurrent_requests_is_one_row_and_one_job() {
    // Api role only: the job stays queued so the test can count it.
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).spawn().await;
    let e = event("evt_dup", "customer.created");
    let results = futures::future::join_all((0..8).map(|_| app.deliver(&e))).await;
    assert!(results.iter().all(|s| *s == 200), "{results:?}");
    assert_eq!(inbox_count(&app).await, 1);
    assert_eq!(queued_jobs(&app).await, 1);
    // And a later redelivery is acknowledged without a second job.
    assert_eq!(app.deliver(&e).await, 200);
    assert_eq!(queued_jobs(&app).await, 1);
}

#[tokio::test]
async fn postgres_unavailable_is_a_503_for_stripe_to_retry() {
    let app = TestApp::builder()
        .env("BALLAST_SYSTEM_DATABASE_URL", "postgres://ballast_system:ballast_system@127.0.0.1:1/none")
        .roles(&[ballast::app::Role::Api])
        .spawn()
        .await;
    let resp = app.post_webhook(serde_json::to_vec(&event("evt_pg", "customer.created")).expect("json"), None).await;
    assert_eq!(resp.status(), 400, "signature is checked first");
    let body = serde_json::to_vec(&event("evt_pg", "customer.created")).expect("json");
    let sig = signature_header(SECRET, chrono::Utc::now().timestamp(), &body);
    assert_eq!(error_code(app.post_webhook(body, Some(sig)).await).await, (503, "storage_unavailable".to_owned()));
}

#[tokio::test]
async fn redis_unavailable_after_the_insert_still_acknowledges_and_the_sweep_queues_it() {
    let app = TestApp::builder().env("REDIS_URL", "redis://127.0.0.1:1/0").roles(&[ballast::app::Role::Api]).spawn().await;
    assert_eq!(app.deliver(&event("evt_noredis", "customer.created")).await, 200);
    let status: String = sqlx::query_scalar("SELECT status FROM stripe_events WHERE id = 'evt_noredis'")
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("row");
    assert_eq!(status, "received", "stored, not queued");
    // Redis is back: a member with a working Redis sweeps the inbox (age 0: the test's clock).
    let healthy = TestApp::builder().roles(&[ballast::app::Role::Api]).spawn().await;
    let report = ballast::stripe::inbox::sweep(&app.state.system_pool, &healthy.state.queue, chrono::Duration::zero())
        .await
        .expect("sweep");
    assert_eq!(report.requeued, 1);
    assert_eq!(queued_jobs(&healthy).await, 1);
    let again = ballast::stripe::inbox::sweep(&app.state.system_pool, &healthy.state.queue, chrono::Duration::zero()).await.expect("sweep");
    assert_eq!(again.requeued, 0, "queued rows are not swept twice");
}

#[tokio::test]
async fn settled_inbox_rows_past_retention_are_pruned_and_unsettled_ones_are_kept() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    for (id, status) in [("evt_old_done", "processed"), ("evt_old_ignored", "ignored"), ("evt_old_pending", "queued"), ("evt_new_done", "processed")] {
        sqlx::query("INSERT INTO stripe_events (id, type, livemode, stripe_created, payload, status, received_at) VALUES ($1, 'invoice.paid', false, now(), '{}', $2, now() - CASE WHEN $1 LIKE 'evt_old%' THEN interval '31 days' ELSE interval '1 day' END)")
            .bind(id)
            .bind(status)
            .execute(&app.state.system_pool.0)
            .await
            .expect("row");
    }
    let deleted = ballast::stripe::inbox::prune(&app.state.system_pool, app.state.settings.inbox_retention).await.expect("prune");
    assert_eq!(deleted, 2);
    let left: Vec<String> = sqlx::query_scalar("SELECT id FROM stripe_events ORDER BY id").fetch_all(&app.state.system_pool.0).await.expect("ids");
    assert_eq!(left, ["evt_new_done", "evt_old_pending"]);
}

#[tokio::test]
async fn an_accepted_event_is_deduplicated_in_redis_for_minutes_not_for_days() {
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).spawn().await;
    assert_eq!(app.deliver(&event("evt_ttl_probe", "customer.created")).await, 200);
    let mut redis = app.state.redis.clone();
    let pattern = format!("{}*evt_ttl_probe*", app.state.keys.namespace());
    let found = redis.scan(&pattern).await.expect("scan");
    let key = found.iter().find(|k| k.contains("idempotency") || k.contains("stripe.event:evt_ttl_probe")).expect("the enqueue's idempotency key");
    let ttl: i64 = redis::cmd("TTL").arg(key).query_async(&mut redis).await.expect("ttl");
    assert!(ttl > 0 && ttl <= ballast::stripe::inbox::INBOX_ENQUEUE_TTL.as_secs() as i64, "{key}: {ttl} s");
    // A repeat meanwhile is still one job.
    assert_eq!(app.deliver(&event("evt_ttl_probe", "customer.created")).await, 200);
    assert_eq!(queued_jobs(&app).await, 1);
}

/// An event rendered in another API version than the pinned one is still stored and applied,
/// and is counted so that a misconfigured endpoint shows; a member configured for another
/// version than its client speaks refuses to start, naming the setting.
#[tokio::test]
async fn an_event_of_another_api_version_is_applied_and_counted_and_the_pinned_version_is_enforced() {
    let app = TestApp::spawn().await;
    let mut old = event("evt_old_version", "customer.created");
    old["api_version"] = json!("2020-08-27");
    assert_eq!(app.deliver(&old).await, 200);
    let mut pinned = event("evt_pinned_version", "customer.updated");
    pinned["api_version"] = json!(ballast::stripe_api::StripeApi::api_version());
    assert_eq!(app.deliver(&pinned).await, 200);
    app.drain().await;
    let stored: Option<String> = sqlx::query_scalar("SELECT api_version FROM stripe_events WHERE id = 'evt_old_version'")
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("row");
    assert_eq!(stored.as_deref(), Some("2020-08-27"));
    let metrics = app.http.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("ballast_stripe_events_other_api_version_total{api_version=\"2020-08-27\"} 1"), "{metrics}");
    assert!(!metrics.contains(&format!("api_version=\"{}\"", ballast::stripe_api::StripeApi::api_version())));

    let out = app.cli_with(&["cache", "reshape", "--json"], &[("BALLAST_STRIPE_API_VERSION", "2020-08-27")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("BALLAST_STRIPE_API_VERSION"), "{stderr}");
}

/// The answer says whether the event was new, and a redelivery after the queue's own
/// idempotency key is gone (it lives minutes, Stripe retries for days) is still one event:
/// the inbox, not Redis, is what makes it so.
#[tokio::test]
async fn a_redelivery_after_the_enqueue_key_expired_is_a_duplicate_and_queues_nothing() {
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).spawn().await;
    let e = event("evt_late_redelivery", "customer.created");
    let answer = |r: crate::support::checked_http::CheckedResponse| async move { r.json::<serde_json::Value>().await.expect("json") };
    let body = serde_json::to_vec(&e).expect("json");
    let sign = || Some(signature_header(SECRET, chrono::Utc::now().timestamp(), &body));
    let first = answer(app.post_webhook(body.clone(), sign()).await).await;
    assert_eq!((first["received"].as_bool(), first["duplicate"].as_bool()), (Some(true), Some(false)), "{first}");
    let again = answer(app.post_webhook(body.clone(), sign()).await).await;
    assert_eq!(again["duplicate"], true, "{again}");
    // Days later: the job ran long ago and its enqueue key expired.
    let keys = app.state.redis.scan(&format!("{}*", app.state.keys.namespace())).await.expect("scan");
    let mut conn = app.state.redis.clone();
    let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.expect("del");
    assert_eq!(queued_jobs(&app).await, 0);
    let late = answer(app.post_webhook(body.clone(), sign()).await).await;
    assert_eq!(late["duplicate"], true, "{late}");
    assert_eq!(queued_jobs(&app).await, 0, "a duplicate is not queued again");
    assert_eq!(inbox_count(&app).await, 1);
}

#[tokio::test]
async fn concurrent_events_share_a_commit_and_one_the_database_refuses_is_refused_alone() {
    use ballast::stripe::event::StripeEvent;
    use ballast::stripe::inbox::Inserted;
    use ballast::stripe::inbox::batch::{InboxWriter, NotStored, Row};
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).spawn().await;
    let writer = InboxWriter::new(app.state.system_pool.clone());
    let row = |id: &str, poison: bool| {
        let mut raw = event(id, "invoice.paid");
        if poison {
            // PostgreSQL's jsonb refuses a NUL character: a row the database refuses.
            raw["data"]["object"]["description"] = json!("nul \u{0} here");
        }
        let parsed = StripeEvent::parse(raw.to_string().as_bytes(), 0).expect("event");
        Row::of(&parsed, raw)
    };
    let rows = [row("evt_ok_1", false), row("evt_bad", true), row("evt_ok_2", false), row("evt_ok_1", false)];
    let answers: Vec<_> = futures::future::join_all(rows.into_iter().map(|r| writer.insert(r))).await.into_iter().map(|a| a.map(|s| s.inserted)).collect();
    assert!(matches!(answers[0], Ok(Inserted::New)), "{answers:?}");
    assert!(matches!(answers[1], Err(NotStored::Refused(_))), "only the bad row is refused: {answers:?}");
    assert!(matches!(answers[2], Ok(Inserted::New)), "{answers:?}");
    assert!(matches!(answers[3], Ok(Inserted::Duplicate)), "the same id twice is one row: {answers:?}");
    assert_eq!(inbox_count(&app).await, 2);
}
