//! Intake hardening, finding by finding: each test sends what an attacker sent when the
//! running fleet was probed (issue 17) and asserts the answer that keeps the fleet standing.
//! The slowloris and signature-flood drills are in `intake_drills.rs`.

use std::time::Duration;

use ballast::auth::Scope;
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestApp, stripe_sim};

fn api_only() -> crate::support::TestAppBuilder {
    TestApp::builder().roles(&[ballast::app::Role::Api])
}

async fn error_of(resp: crate::support::checked_http::CheckedResponse) -> (StatusCode, serde_json::Value) {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text:?}"));
    assert!(body.pointer("/error/code").is_some(), "{status}: not the error shape: {body}");
    (status, body)
}

/// Sends raw bytes on a new connection and reads until the server closes it.
async fn raw(app: &TestApp, bytes: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(app.addr.expect("api")).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await.expect("server answers and closes");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_signature_header_of_thousands_of_v1_values_is_refused_without_hashing_each() {
    let app = api_only().spawn().await;
    let body = serde_json::to_vec(&serde_json::json!({"id": "evt_flood", "type": "customer.updated", "data": {"object": {"id": "cus_1"}}})).expect("json");
    let now = chrono::Utc::now().timestamp();
    // What the probe sent: 95,000 empty v1 values (380 KB): past the header-set limit.
    let flood = format!("t={now},{}", "v1=,".repeat(95_000));
    let (status, _) = error_of(app.post_webhook(body.clone(), Some(flood)).await).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // Within the header-set limit but past the signature header's own: refused on its length.
    let flood = format!("t={now},{}", "v1=,".repeat(7_000));
    let (status, body_json) = error_of(app.post_webhook(body.clone(), Some(flood)).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body_json["error"]["message"].as_str().unwrap_or_default().contains("longer than"), "{body_json}");
    // Under the length cap: values that are not 64 hex digits are skipped before hashing, so
    // a header of only those has no signature at all.
    let junk = format!("t={now},{}", "v1=00,".repeat(600));
    let (status, body_json) = error_of(app.post_webhook(body.clone(), Some(junk)).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body_json["error"]["message"].as_str().unwrap_or_default().contains("no v1"), "{body_json}");
    // The real signature still works after a handful of wrong ones.
    let good = stripe_sim::signature_header(stripe_sim::SECRET, now, &body);
    let wrong = format!("v1={}", "ab".repeat(32));
    let header = format!("{wrong},{wrong},{good}");
    assert_eq!(app.post_webhook(body, Some(header)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_methods_and_unmatched_paths_collapse_into_fixed_metric_labels() {
    let app = api_only().spawn().await;
    for i in 0..20 {
        let method = Method::from_bytes(format!("M{}{}", i, "X".repeat(1000)).as_bytes()).expect("token");
        let resp = app.http.request(method, app.url(&format!("/probe/{i}"))).send().await.expect("request");
        let (status, _) = error_of(resp).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let metrics = app.http.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(!metrics.contains("XXXXXXXXXX"), "a client's method became a label");
    assert!(!metrics.contains("/probe/"), "a raw path became a label");
    assert!(metrics.contains("method=\"OTHER\",route=\"(unmatched)\",status=\"404\""), "{metrics}");
}

#[tokio::test]
async fn job_payloads_are_checked_for_size_and_arguments_at_intake() {
    let app = api_only().spawn().await;
    let tenant = app.tenant("A").await;
    let (_, key) = app.key(Some(tenant), &[Scope::JobsWrite]).await;
    let post = |body: serde_json::Value| app.http.post(app.url("/v1/jobs")).bearer_auth(&key).json(&body).send();
    // Over the kind's payload limit (16 KiB by default), under the route's body limit.
    let big = serde_json::json!({"kind": "noop", "payload": {"pad": "x".repeat(40_000)}});
    let (status, body) = error_of(post(big).await.expect("send")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")), "{body}");
    // Over the route's body limit (64 KiB): 413 before the body is parsed.
    let huge = serde_json::json!({"kind": "noop", "payload": {"pad": "x".repeat(1_900_000)}});
    let (status, body) = error_of(post(huge).await.expect("send")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large")), "{body}");
    // Not the kind's arguments: 400 naming the field, nothing queued or dead-lettered.
    let (status, body) = error_of(post(serde_json::json!({"kind": "noop", "payload": {"sleep_ms": "soon"}})).await.expect("send")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_payload")), "{body}");
    let long_field = "f".repeat(10_000);
    let (status, body) = error_of(post(serde_json::json!({"kind": "noop", "payload": {long_field.clone(): 1}})).await.expect("send")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.len() < 500 && !message.contains("NoopArgs"), "{message}");
    // An unknown top-level field: the serde message, cut, without the internal type name.
    let (status, body) = error_of(post(serde_json::json!({"kind": "noop", long_field: 1})).await.expect("send")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.len() < 500 && !message.contains("NewJob") && message.contains("unknown field"), "{message}");
    let stats = app.state.queue.stats().await.expect("stats");
    assert!(stats.iter().all(|s| s.ready == 0 && s.scheduled == 0), "{stats:?}");
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM job_dead_letters").fetch_one(&app.state.system_pool.0).await.expect("count");
    assert_eq!(dead, 0);
    // A good one still goes through.
    let resp = post(serde_json::json!({"kind": "noop", "payload": {"sleep_ms": 0}})).await.expect("send");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn behind_a_trusted_proxy_bans_hit_the_guessing_client_only_and_missing_keys_are_not_guesses() {
    let app = api_only().env("BALLAST_TRUSTED_PROXIES", "127.0.0.1/32").spawn().await;
    let tenant = app.tenant("A").await;
    let (_, good) = app.key(Some(tenant), &[Scope::EntitlementsRead]).await;
    let bad = format!("bk_{}_{}", "z".repeat(12), "z".repeat(32));
    let get = |key: Option<&str>, client: &str| {
        let mut req = app.http.get(app.url("/v1/entitlements")).header("x-forwarded-for", format!("198.51.100.77, {client}"));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send()
    };
    // Ten requests without a key: each a 401, none a guess.
    for _ in 0..10 {
        assert_eq!(get(None, "203.0.113.5").await.expect("send").status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(get(Some(&good), "203.0.113.5").await.expect("send").status(), StatusCode::OK, "missing keys started a ban");
    // Five wrong keys from one client behind the proxy ban that client, not the proxy.
    for _ in 0..5 {
        assert_eq!(get(Some(&bad), "203.0.113.5").await.expect("send").status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(get(Some(&good), "203.0.113.5").await.expect("send").status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(get(Some(&good), "203.0.113.6").await.expect("send").status(), StatusCode::OK);
}

#[tokio::test]
async fn a_banned_address_cannot_learn_that_a_key_is_valid() {
    let app = api_only().spawn().await;
    let tenant = app.tenant("A").await;
    let (_, read_only) = app.key(Some(tenant), &[Scope::EntitlementsRead]).await;
    let bad = format!("bk_{}_{}", "y".repeat(12), "y".repeat(32));
    for _ in 0..5 {
        app.http.get(app.url("/v1/entitlements")).bearer_auth(&bad).send().await.expect("send");
    }
    // A valid key without the route's scope: the ban answers, not the scope check.
    let resp = app.http.post(app.url("/v1/jobs")).bearer_auth(&read_only).json(&serde_json::json!({"kind": "noop"})).send().await.expect("send");
    let (status, body) = error_of(resp).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")), "{body}");
}

#[tokio::test]
async fn duplicate_credentials_closed_tenants_and_request_ids() {
    let app = api_only().spawn().await;
    let (a, b) = (app.tenant("A").await, app.tenant("B").await);
    let (_, key) = app.key(Some(a), &[Scope::EntitlementsRead]).await;
    let (_, service) = app.key(None, &[Scope::EntitlementsRead]).await;
    let resp = app
        .http
        .get(app.url("/v1/entitlements"))
        .header("authorization", format!("Bearer {key}"))
        .header("authorization", "Bearer bk_other")
        .send()
        .await
        .expect("send");
    let (status, body) = error_of(resp).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("duplicate_header")));
    let resp = app
        .http
        .get(app.url("/v1/entitlements"))
        .bearer_auth(&service)
        .header("ballast-tenant", a.to_string())
        .header("ballast-tenant", b.to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(error_of(resp).await.0, StatusCode::BAD_REQUEST);

    // Request ids: a short token is echoed; a long or odd one is replaced.
    let resp = app.http.get(app.url("/healthz")).header("x-request-id", "abc-123").send().await.expect("send");
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    let resp = app.http.get(app.url("/healthz")).header("x-request-id", "x".repeat(5000)).send().await.expect("send");
    let echoed = resp.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    assert!(echoed.len() == 36 && uuid::Uuid::parse_str(&echoed).is_ok(), "{echoed}");

    // A closed tenant's keys are refused, and a service key cannot act for it either.
    sqlx::query("UPDATE tenants SET status = 'closed' WHERE id = $1").bind(a).execute(&app.state.system_pool.0).await.expect("close");
    let (status, body) = error_of(app.http.get(app.url("/v1/entitlements")).bearer_auth(&key).send().await.expect("send")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("tenant_closed")));
    let resp = app.http.get(app.url("/v1/entitlements")).bearer_auth(&service).header("ballast-tenant", a.to_string()).send().await.expect("send");
    assert_eq!(error_of(resp).await.0, StatusCode::FORBIDDEN);
    let resp = app.http.get(app.url("/v1/entitlements")).bearer_auth(&service).header("ballast-tenant", b.to_string()).send().await.expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_status_the_server_produces_has_the_json_error_shape() {
    let app = api_only().spawn().await;
    let tenant = app.tenant("A").await;
    let (_, key) = app.key(Some(tenant), &[Scope::UsageWrite]).await;
    // Oversized JSON body: 413, not 400.
    let resp = app.http.post(app.url("/v1/usage")).bearer_auth(&key).header("content-type", "application/json").body(vec![b' '; 200_000]).send().await.expect("send");
    assert_eq!(error_of(resp).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    let resp = app.post_webhook(vec![b' '; 300 * 1024], Some("t=1,v1=00".into())).await;
    assert_eq!(error_of(resp).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    // A long target and a large header set, through the router's limits.
    let resp = app.http.get(app.url(&format!("/healthz?{}", "q".repeat(10_000)))).send().await.expect("send");
    assert_eq!(error_of(resp).await.0, StatusCode::URI_TOO_LONG);
    let resp = app.http.get(app.url("/healthz")).header("x-filler", "h".repeat(40_000)).send().await.expect("send");
    assert_eq!(error_of(resp).await.0, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // What hyper refuses by itself: a request line it cannot parse, a target past its limit.
    for (request, status) in [
        (b"GARBAGE\r\n\r\n".to_vec(), "400"),
        (format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "u".repeat(70_000)).into_bytes(), "414"),
        (format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "h".repeat(200_000)).into_bytes(), "431"),
    ] {
        let answer = raw(&app, &request).await;
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{status}: body not JSON ({e}): {answer}"));
        assert!(json.pointer("/error/code").is_some(), "{answer}");
    }
}

#[tokio::test]
async fn a_signed_event_holding_nul_characters_is_stored_not_reported_as_an_outage() {
    let app = api_only().spawn().await;
    let event = serde_json::json!({"id": "evt_nul", "type": "customer.updated", "created": chrono::Utc::now().timestamp(),
        "data": {"object": {"id": "cus_nul", "object": "customer", "name": "A\u{0}B", "metadata": {"k\u{0}": "v"}}}});
    assert_eq!(app.deliver(&event).await, StatusCode::OK);
    let stored: String = sqlx::query_scalar("SELECT payload #>> '{data,object,name}' FROM stripe_events WHERE id = 'evt_nul'")
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("stored");
    assert_eq!(stored, "A\u{FFFD}B");
}

#[tokio::test]
async fn a_body_slower_than_its_length_gets_408_and_the_connection_is_freed() {
    let app = api_only().env("BALLAST_HTTP_BODY_TIMEOUT_SECS", "0.5").spawn().await;
    let mut stream = tokio::net::TcpStream::connect(app.addr.expect("api")).await.expect("connect");
    let head = "POST /webhooks/stripe HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"id\":";
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await.expect("closed within the timeout").expect("read");
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_wait_until_one_closes() {
    let app = api_only().env("BALLAST_HTTP_MAX_CONNECTIONS", "2").spawn().await;
    let addr = app.addr.expect("api");
    let stats = app.state.metrics.connections();
    let open = || stats.open.load(std::sync::atomic::Ordering::Relaxed);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while open() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the two connections were not accepted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A third client waits in the backlog: no answer while both slots are held.
    let url = app.url("/healthz");
    let third = tokio::spawn(async move { reqwest::Client::new().get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "a connection past the cap was served");
    assert_eq!(open(), 2);
    // One slot frees: the waiting client is served.
    drop(held.pop());
    let status = tokio::time::timeout(Duration::from_secs(10), third).await.expect("served once a slot freed").expect("task").expect("answer");
    assert_eq!(status, StatusCode::OK);
    assert!(stats.at_capacity.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}
