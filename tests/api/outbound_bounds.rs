//! What one app key can make the fleet send, and to where (issue 35): endpoints capped per
//! tenant (with a per-tenant override) and listed in pages; URLs stored as parsed; every
//! address form that is not globally routable refused, naming the rule and never the address;
//! messages limited per window only once checked and not repeats, and by bytes in flight; and
//! one tenant's slow receivers not delaying another tenant's delivery.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use ballast::auth::Scope;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use crate::support::TestApp;

fn endpoint(url: &str) -> Value {
    json!({"url": url, "event_types": ["*"]})
}

fn message(key: Option<&str>, event_type: &str) -> Value {
    json!({"kind": "webhook.deliver", "idempotency_key": key, "payload": {"type": event_type, "data": {"invoice": "in_1", "amount": 2000}}})
}

#[tokio::test]
async fn endpoints_are_capped_per_tenant_paged_stored_as_parsed_and_only_globally_routable() {
    let limits = "[tenant_webhooks]\nlimit = 600\nwindow_secs = 60\nmax_endpoints = 3\n";
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).limits(limits).spawn().await;
    let (a, b) = (app.tenant("A").await, app.tenant("B").await);
    let (_, key) = app.key(Some(a), &[Scope::WebhooksWrite]).await;
    let (_, other) = app.key(Some(b), &[Scope::WebhooksWrite]).await;

    // Addresses the issue found accepted, and the classic ones: refused by rule, address unsaid.
    for url in [
        "http://[::127.0.0.1]/h", "http://[::ffff:0:127.0.0.1]/h", "http://[2002:7f00:1::]/h", "http://[fec0::1]/h", "http://198.18.0.1/h",
        "http://192.0.2.1/h", "http://0x7f.1/h", "http://2130706433/h", "http://169.254.169.254/latest", "http://[64:ff9b::a9fe:a9fe]/h", "http://224.0.0.1/h",
    ] {
        let (code, refused) = app.call(Method::POST, "/v1/webhook-endpoints", &key, Some(endpoint(url))).await;
        assert_eq!((code, refused["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("url")), "{url}: {refused}");
        let text = refused["error"]["message"].as_str().unwrap_or_default();
        assert!(text.starts_with("address_not_allowed: "), "{url}: {text}");
        assert!(!text.contains("127.0.0.1") && !text.contains("169.254") && !text.contains("198.18"), "the refusal does not echo the address: {text}");
    }
    for url in ["https://hooks.example/in\r\nX-Injected: 1", "https://hooks.example/\tin", "https://user:pw@hooks.example/in"] {
        let (code, refused) = app.call(Method::POST, "/v1/webhook-endpoints", &key, Some(endpoint(url))).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{url:?}: {refused}");
    }

    // Stored as parsed: scheme and host lower-cased, the default port dropped.
    let (code, made) = app.call(Method::POST, "/v1/webhook-endpoints", &key, Some(endpoint("HTTPS://Hooks.EXAMPLE:443/In?x=1"))).await;
    assert_eq!(code, StatusCode::CREATED, "{made}");
    assert_eq!(made["url"], "https://hooks.example/In?x=1");
    for n in 2..=3 {
        let (code, made) = app.call(Method::POST, "/v1/webhook-endpoints", &key, Some(endpoint(&format!("https://hooks.example/{n}")))).await;
        assert_eq!(code, StatusCode::CREATED, "{made}");
    }
    let (code, refused) = app.call(Method::POST, "/v1/webhook-endpoints", &key, Some(endpoint("https://hooks.example/4"))).await;
    assert_eq!((code, refused["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("too_many_endpoints")), "{refused}");
    assert!(refused["error"]["message"].as_str().is_some_and(|m| m.contains("3 webhook endpoints")), "{refused}");
    // Another tenant's count is its own.
    assert_eq!(app.call(Method::POST, "/v1/webhook-endpoints", &other, Some(endpoint("https://hooks.example/b"))).await.0, StatusCode::CREATED);
    // A deleted endpoint frees its place.
    let (_, listed) = app.call(Method::GET, "/v1/webhook-endpoints", &key, None).await;
    let first = listed["data"][0]["id"].as_str().expect("id").to_owned();
    assert_eq!(app.call(Method::DELETE, &format!("/v1/webhook-endpoints/{first}"), &key, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.call(Method::POST, "/v1/webhook-endpoints", &key, Some(endpoint("https://hooks.example/5"))).await.0, StatusCode::CREATED);

    // Pages: two at a time, following the cursor, each endpoint once, in registration order.
    let mut seen = Vec::new();
    let mut path = "/v1/webhook-endpoints?limit=2".to_owned();
    loop {
        let (code, page) = app.call(Method::GET, &path, &key, None).await;
        assert_eq!(code, StatusCode::OK, "{page}");
        let ids: Vec<String> = page["data"].as_array().expect("data").iter().map(|e| e["id"].as_str().expect("id").to_owned()).collect();
        assert!(ids.len() <= 2);
        seen.extend(ids.clone());
        if page["has_more"] != true {
            break;
        }
        path = format!("/v1/webhook-endpoints?limit=2&starting_after={}", ids.last().expect("a full page"));
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "registration order");
    let (code, bad) = app.call(Method::GET, "/v1/webhook-endpoints?limit=0", &key, None).await;
    assert_eq!((code, bad["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")));
    let (code, bad) = app.call(Method::GET, "/v1/webhook-endpoints?starting_after=nope", &key, None).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{bad}");
}

#[tokio::test]
async fn an_endpoints_delivery_log_pages_newest_first() {
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).spawn().await;
    let tenant = app.tenant("A").await;
    let (_, key) = app.key(Some(tenant), &[Scope::WebhooksWrite, Scope::JobsWrite]).await;
    let (_, made) = app.call(Method::POST, "/v1/webhook-endpoints", &key, Some(endpoint("https://hooks.example/in"))).await;
    let id = made["id"].as_str().expect("id").to_owned();
    let mut queued = Vec::new();
    for n in 0..5 {
        let (code, answer) = app.call(Method::POST, "/v1/jobs", &key, Some(message(Some(&format!("m{n}")), "invoice.paid"))).await;
        assert_eq!(code, StatusCode::ACCEPTED, "{answer}");
        queued.push(answer["jobs"][0]["delivery_id"].as_str().expect("delivery").to_owned());
    }
    let mut seen = Vec::new();
    let mut path = format!("/v1/webhook-endpoints/{id}/deliveries?limit=2");
    loop {
        let (code, page) = app.call(Method::GET, &path, &key, None).await;
        assert_eq!(code, StatusCode::OK, "{page}");
        let ids: Vec<String> = page["data"].as_array().expect("data").iter().map(|d| d["id"].as_str().expect("id").to_owned()).collect();
        seen.extend(ids.clone());
        if page["has_more"] != true {
            break;
        }
        path = format!("/v1/webhook-endpoints/{id}/deliveries?limit=2&starting_after={}", ids.last().expect("a full page"));
    }
    queued.reverse();
    assert_eq!(seen, queued, "newest first, each once");

    // One id per accepted request: the message's id resolves, with its deliveries, for the
    // app and for the operator alike.
    let (_, answer) = app.call(Method::POST, "/v1/jobs", &key, Some(message(Some("m-status"), "invoice.paid"))).await;
    let message_id = answer["id"].as_str().expect("msg id").to_owned();
    let (code, status) = app.call(Method::GET, &format!("/v1/jobs/{message_id}"), &key, None).await;
    assert_eq!(code, StatusCode::OK, "{status}");
    assert_eq!((status["state"].as_str(), status["jobs"].as_array().map(Vec::len)), (Some("queued"), Some(1)), "{status}");
    assert_eq!(status["jobs"][0]["id"], answer["jobs"][0]["id"]);
    let out = app.cli_async(&["--json", "jobs", "show", &message_id], &[]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!((shown["state"].as_str(), shown["tenant"].as_str()), (Some("queued"), Some(tenant.to_string().as_str())), "{shown}");

    // The operator reads the endpoint and its log as the tenant does, and re-sends.
    let cli = |args: Vec<String>| {
        let app = &app;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = app.cli_async(&args, &[]).await;
            assert!(out.status.success(), "ballast {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice::<Value>(&out.stdout).expect("json")
        }
    };
    let listed = cli(vec!["--json".into(), "endpoints".into(), "list".into(), "--tenant".into(), tenant.to_string()]).await;
    assert_eq!(listed["data"][0]["id"].as_str(), Some(id.as_str()), "{listed}");
    let log = cli(vec!["--json".into(), "deliveries".into(), "list".into(), "--endpoint".into(), id.clone(), "--limit".into(), "2".into()]).await;
    assert_eq!((log["data"].as_array().map(Vec::len), log["has_more"].as_bool()), (Some(2), Some(true)), "{log}");
    let job = answer["jobs"][0]["id"].as_str().expect("whd id").to_owned();
    let one = cli(vec!["--json".into(), "deliveries".into(), "show".into(), job.clone()]).await;
    assert_eq!((one["job_id"].as_str(), one["status"].as_str()), (Some(job.as_str()), Some("pending")), "{one}");
    let refused = app.cli_async(&["deliveries", "resend", &job], &[]).await;
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("still pending"), "{}", String::from_utf8_lossy(&refused.stderr));
    sqlx::query("UPDATE webhook_deliveries SET status = 'failed', finished_at = now() WHERE id = $1::uuid").bind(&one["id"].as_str().expect("id")).execute(&app.state.system_pool.0).await.expect("failed");
    let resent = cli(vec!["--json".into(), "deliveries".into(), "resend".into(), job]).await;
    assert!(resent["job_id"].as_str().is_some_and(|j| j.starts_with("whd_")), "{resent}");
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'deliveries.resend'").fetch_one(&app.state.system_pool.0).await.expect("audit");
    assert_eq!(audited, 1);
}

#[tokio::test]
async fn messages_count_against_the_window_once_checked_and_new_and_stop_at_the_bytes_in_flight() {
    let limits = "[tenant_webhooks]\nlimit = 3\nwindow_secs = 60\nmax_bytes_in_flight = 300\n";
    // No worker: deliveries stay pending, so their bytes stay in flight.
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).limits(limits).spawn().await;
    let (a, c) = (app.tenant("A").await, app.tenant("C").await);
    let (_, key_a) = app.key(Some(a), &[Scope::WebhooksWrite, Scope::JobsWrite]).await;
    let (_, key_c) = app.key(Some(c), &[Scope::JobsWrite]).await;

    // C has no endpoint: its messages fan out to nothing, and only its window bounds it.
    for _ in 0..2 {
        let (code, bad) = app.call(Method::POST, "/v1/jobs", &key_c, Some(message(None, "no spaces"))).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "a refused message does not count: {bad}");
    }
    assert_eq!(app.call(Method::POST, "/v1/jobs", &key_c, Some(message(Some("k1"), "invoice.paid"))).await.0, StatusCode::ACCEPTED);
    let (code, repeat) = app.call(Method::POST, "/v1/jobs", &key_c, Some(message(Some("k1"), "invoice.paid"))).await;
    assert_eq!((code, repeat["duplicate"].as_bool()), (StatusCode::ACCEPTED, Some(true)), "a repeat does not count: {repeat}");
    for k in ["k2", "k3"] {
        assert_eq!(app.call(Method::POST, "/v1/jobs", &key_c, Some(message(Some(k), "invoice.paid"))).await.0, StatusCode::ACCEPTED, "{k}");
    }
    let (code, limited) = app.call(Method::POST, "/v1/jobs", &key_c, Some(message(Some("k4"), "invoice.paid"))).await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "the fourth new message in the window: {limited}");
    let (code, repeat) = app.call(Method::POST, "/v1/jobs", &key_c, Some(message(Some("k2"), "invoice.paid"))).await;
    assert_eq!(code, StatusCode::ACCEPTED, "a repeat is still answered when the window is full: {repeat}");

    // A: two endpoints, so each message puts its body in flight twice (about 100 bytes each).
    for n in 0..2 {
        app.call(Method::POST, "/v1/webhook-endpoints", &key_a, Some(endpoint(&format!("https://hooks.example/{n}")))).await;
    }
    assert_eq!(app.call(Method::POST, "/v1/jobs", &key_a, Some(message(Some("a1"), "invoice.paid"))).await.0, StatusCode::ACCEPTED);
    assert_eq!(app.call(Method::POST, "/v1/jobs", &key_a, Some(message(Some("a2"), "invoice.paid"))).await.0, StatusCode::ACCEPTED);
    let resp = app.http.post(app.url("/v1/jobs")).bearer_auth(&key_a).json(&message(Some("a3"), "invoice.paid")).send().await.expect("send");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("retry-after").is_some(), "says when to come back");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "too_much_in_flight", "{body}");
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE tenant_id = $1 AND status = 'pending'")
        .bind(a)
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("count");
    assert_eq!(pending, 4, "nothing of the refused message was written");
}

/// A receiver that holds every request until released, counting what it holds.
#[derive(Clone)]
struct Held {
    holding: Arc<AtomicUsize>,
    arrived: Arc<Notify>,
    release: watch::Receiver<bool>,
}

async fn hold(State(h): State<Held>) -> &'static str {
    h.holding.fetch_add(1, Ordering::SeqCst);
    h.arrived.notify_waiters();
    let mut release = h.release.clone();
    let _ = release.wait_for(|go| *go).await;
    "ok"
}

async fn serve(router: axum::Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    port
}

#[tokio::test]
async fn one_tenants_300_slow_endpoints_do_not_delay_another_tenants_delivery() {
    let (let_go, release) = watch::channel(false);
    let held = Held { holding: Arc::default(), arrived: Arc::default(), release };
    let slow = serve(axum::Router::new().route("/slow/{n}", axum::routing::post(hold)).with_state(held.clone())).await;
    let got = Arc::new(Notify::new());
    let fast = {
        let got = got.clone();
        serve(axum::Router::new().route("/fast", axum::routing::post(move || async move {
            got.notify_one();
            "ok"
        })))
        .await
    };
    let app = TestApp::builder().env("BALLAST_OUTBOUND_ALLOW_CIDRS", "127.0.0.0/8").spawn().await;
    let (a, b) = (app.tenant("A").await, app.tenant("B").await);
    let (_, key_a) = app.key(Some(a), &[Scope::JobsWrite]).await;
    let (_, key_b) = app.key(Some(b), &[Scope::WebhooksWrite, Scope::JobsWrite]).await;
    // A: 300 endpoints (the operator raised its cap) at a receiver that holds every request.
    let policy = app.state.webhooks_out.address_policy().clone();
    for n in 0..300 {
        let new = ballast::webhooks_out::endpoints::NewEndpoint { url: format!("http://127.0.0.1:{slow}/slow/{n}"), event_types: vec!["*".into()] };
        ballast::webhooks_out::endpoints::create(&app.state.tenant_pool, ballast::newtypes::TenantId(a), &new, &policy, 300, app.state.webhooks_out.keyring()).await.expect("endpoint");
    }
    app.call(Method::POST, "/v1/webhook-endpoints", &key_b, Some(json!({"url": format!("http://127.0.0.1:{fast}/fast"), "event_types": ["*"]}))).await;

    let (code, fanned) = app.call(Method::POST, "/v1/jobs", &key_a, Some(message(Some("a"), "invoice.paid"))).await;
    assert_eq!((code, fanned["jobs"].as_array().map(Vec::len)), (StatusCode::ACCEPTED, Some(300)), "{fanned}");
    // Wait until A's deliveries hold all the slots they may.
    let share = app.state.limiter.policies.tenant_webhooks.max_delivery_slots as usize;
    while held.holding.load(Ordering::SeqCst) < share {
        let arrived = held.arrived.notified();
        if held.holding.load(Ordering::SeqCst) >= share {
            break;
        }
        tokio::time::timeout(Duration::from_secs(30), arrived).await.expect("A's deliveries reach the receiver");
    }

    let start = Instant::now();
    let arrived = got.notified();
    let (code, queued) = app.call(Method::POST, "/v1/jobs", &key_b, Some(message(Some("b"), "invoice.paid"))).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{queued}");
    let on_time = tokio::time::timeout(Duration::from_secs(5), arrived).await;
    let took = start.elapsed();
    assert_eq!(held.holding.load(Ordering::SeqCst), share, "A never holds more than its share of the slots");
    let _ = let_go.send(true);
    assert!(on_time.is_ok() && took < Duration::from_secs(1), "B's delivery arrived after {took:?} behind A's slow endpoints");
    app.drain().await;
}
