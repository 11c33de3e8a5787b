//! `GET /v1/jobs/{id}`: a job an app service queued, as it moves — queued, done; retrying with
//! its next attempt's time and error; dead with the last error — to the tenant that queued it,
//! and a 404 to any other.

use std::time::Duration;

use ballast::auth::Scope;
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::procs::until;

const FLAKY: &str = r#"kind = "test.flaky"
description = "Fails while a Redis key exists."
concurrency = 4
timeout_secs = 5
max_attempts = 3
backoff = { base_secs = 60, max_secs = 60, jitter = 0.0 }
intake = true
"#;

const HANG: &str = r#"kind = "test.hang"
description = "Never returns."
concurrency = 4
timeout_secs = 0.2
max_attempts = 1
backoff = { base_secs = 60, max_secs = 60, jitter = 0.0 }
intake = true
"#;

async fn queue(app: &TestApp, key: &str, body: Value) -> String {
    let resp = app.http.post(app.url("/v1/jobs")).bearer_auth(key).json(&body).send().await.expect("post");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let answer: Value = resp.json().await.expect("json");
    answer["id"].as_str().expect("id").to_owned()
}

async fn status(app: &TestApp, key: &str, id: &str) -> (StatusCode, Value) {
    let resp = app.http.get(app.url(&format!("/v1/jobs/{id}"))).bearer_auth(key).send().await.expect("get");
    let code = resp.status();
    (code, resp.json().await.unwrap_or_default())
}

async fn until_state(app: &TestApp, key: &str, id: &str, state: &str) -> Value {
    until(&format!("job {id} {state}"), Duration::from_secs(30), || async move { status(app, key, id).await.1["state"] == state }).await;
    status(app, key, id).await.1
}

#[tokio::test]
async fn a_tenant_follows_its_job_from_queued_to_done_retrying_or_dead_and_no_other_tenant_sees_it() {
    let app = TestApp::builder().job_entry("test.flaky", FLAKY).job_entry("test.hang", HANG).spawn().await;
    let (a, b) = (app.tenant("A").await, app.tenant("B").await);
    let (_, key_a) = app.key(Some(a), &[Scope::JobsWrite]).await;
    let (_, key_b) = app.key(Some(b), &[Scope::JobsWrite]).await;

    // Done.
    let id = queue(&app, &key_a, json!({"kind": "noop", "idempotency_key": "once"})).await;
    let done = until_state(&app, &key_a, &id, "done").await;
    assert_eq!((done["kind"].as_str(), done["attempts"].as_i64()), (Some("noop"), Some(1)), "{done}");
    assert!(done["finished_at"].is_string() && done["created_at"].is_string(), "{done}");
    // Its one attempt succeeded: a duration and no error.
    assert_eq!(done["history"].as_array().map(Vec::len), Some(1), "{done}");
    assert!(done["history"][0]["took_ms"].is_u64() && done["history"][0].get("error").is_none(), "{done}");
    // The same idempotency key answers the same job.
    assert_eq!(queue(&app, &key_a, json!({"kind": "noop", "idempotency_key": "once"})).await, id);

    // Another tenant: the same 404 as a job that never existed.
    let (code, body) = status(&app, &key_b, &id).await;
    assert_eq!((code, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    assert_eq!(status(&app, &key_a, "01NOSUCHJOB").await.0, StatusCode::NOT_FOUND);

    // Retrying: the error and when the next attempt runs.
    let fail_key = format!("fail-{}", uuid::Uuid::new_v4());
    let mut redis = app.state.redis.clone();
    let _: () = redis.set(&fail_key, 1).await.expect("set");
    let id = queue(&app, &key_a, json!({"kind": "test.flaky", "payload": {"fail_while_key": fail_key}})).await;
    let retrying = until_state(&app, &key_a, &id, "retrying").await;
    assert!(retrying["last_error"].as_str().is_some_and(|e| e.contains("asked to fail")), "{retrying}");
    assert!(retrying["history"][0]["error"].as_str().is_some_and(|e| e.contains("asked to fail")), "{retrying}");
    let next: chrono::DateTime<chrono::Utc> = retrying["next_attempt_at"].as_str().and_then(|t| t.parse().ok()).expect("next attempt time");
    assert!(next > chrono::Utc::now() + chrono::Duration::seconds(30), "the backoff's time: {next}");

    // Dead: the last error.
    let id = queue(&app, &key_a, json!({"kind": "test.hang"})).await;
    let dead = until_state(&app, &key_a, &id, "dead").await;
    assert!(dead["last_error"].as_str().is_some_and(|e| e.contains("timed out")), "{dead}");
    let last = dead["history"].as_array().and_then(|h| h.last()).cloned().unwrap_or_default();
    assert!(last["error"].as_str().is_some_and(|e| e.contains("timed out")) && last["took_ms"].as_u64() >= Some(200), "{dead}");
    assert_eq!(status(&app, &key_b, &id).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_app_warms_its_own_tenants_cache_and_no_one_elses() {
    let app = TestApp::builder().spawn().await;
    let (a, b) = (app.tenant("A").await, app.tenant("B").await);
    let (_, key_a) = app.key(Some(a), &[Scope::JobsWrite]).await;
    let mut redis = app.state.redis.clone();
    let cached = |t: uuid::Uuid| app.state.keys.tenant_entitlements(ballast::newtypes::TenantId(t));
    let _: () = redis.del(&[cached(a), cached(b)]).await.expect("cold");
    let id = queue(&app, &key_a, json!({"kind": "cache.warm"})).await;
    until_state(&app, &key_a, &id, "done").await;
    let (warm_a, warm_b): (bool, bool) = (redis.exists(cached(a)).await.expect("exists"), redis.exists(cached(b)).await.expect("exists"));
    assert_eq!((warm_a, warm_b), (true, false), "only the caller's tenant is warmed");
}
