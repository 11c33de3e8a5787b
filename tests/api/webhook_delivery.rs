//! Outbound webhooks end to end: an app queues a message with curl-shaped requests, a real HTTP
//! receiver on loopback fails, times out and recovers, and gets the message once, signed so
//! that an independent Standard Webhooks implementation verifies it; the delivery log shows
//! every attempt; another tenant can neither see nor re-send it; a private address is refused;
//! an endpoint failing for five days is disabled and its tenant emailed once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use ballast::auth::Scope;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::smtp::SmtpServer;

/// What the receiver does with the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Down,
    Hang,
    Up,
}

#[derive(Clone)]
struct Receiver {
    mode: Arc<Mutex<Mode>>,
    got: Arc<Mutex<Vec<(HeaderMap, String)>>>,
}

impl Receiver {
    async fn start(mode: Mode) -> (Receiver, String) {
        let r = Receiver { mode: Arc::new(Mutex::new(mode)), got: Arc::default() };
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        (r, format!("{port}"))
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }

    fn got(&self) -> Vec<(HeaderMap, String)> {
        self.got.lock().expect("lock").clone()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> (AxumStatus, &'static str) {
    let mode = *r.mode.lock().expect("lock");
    match mode {
        Mode::Down => (AxumStatus::SERVICE_UNAVAILABLE, "down for maintenance"),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(4)).await;
            (AxumStatus::OK, "too late")
        }
        Mode::Up => {
            r.got.lock().expect("lock").push((headers, body));
            (AxumStatus::OK, "ok")
        }
    }
}

async fn call(app: &TestApp, method: Method, path: &str, key: &str, body: Option<Value>) -> (StatusCode, Value) {
    app.call(method, path, key, body).await
}

fn message(key: &str) -> Value {
    json!({"kind": "webhook.deliver", "idempotency_key": key, "payload": {"type": "invoice.paid", "data": {"invoice": "in_1", "amount": 2000}}})
}

/// Runs the delivery's next attempt now (the queue's controllable clock): promotes its
/// scheduled retry and drains. Returns the time that attempt was due (now, for a delivery
/// that has finished).
async fn next_attempt(app: &TestApp, delivery: &str) -> chrono::DateTime<chrono::Utc> {
    let due: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar("SELECT next_attempt_at FROM webhook_deliveries WHERE id = $1::uuid")
        .bind(delivery)
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("due");
    let due = due.unwrap_or_else(chrono::Utc::now);
    app.state.queue.promote_scheduled(&"webhook.deliver".into(), due + chrono::Duration::seconds(2)).await.expect("promote");
    app.drain().await;
    due
}

#[tokio::test]
async fn a_signed_message_outlasts_an_hour_of_receiver_failures_and_arrives_once_for_its_tenant_only() {
    let (receiver, port) = Receiver::start(Mode::Down).await;
    let app = TestApp::builder().env("BALLAST_OUTBOUND_ALLOW_CIDRS", "127.0.0.0/8").env("BALLAST_OUTBOUND_TIMEOUT_SECS", "1").spawn().await;
    let (a, b) = (app.tenant("A").await, app.tenant("B").await);
    let (_, key) = app.key(Some(a), &[Scope::JobsWrite, Scope::WebhooksWrite]).await;
    let (_, other) = app.key(Some(b), &[Scope::JobsWrite, Scope::WebhooksWrite]).await;

    let url = format!("http://127.0.0.1:{port}/hook");
    let (code, endpoint) = call(&app, Method::POST, "/v1/webhook-endpoints", &key, Some(json!({"url": url, "event_types": ["invoice.paid"]}))).await;
    assert_eq!(code, StatusCode::CREATED, "{endpoint}");
    let (secret, endpoint_id) = (endpoint["secret"].as_str().expect("secret").to_owned(), endpoint["id"].as_str().expect("id").to_owned());
    // Subscribed to another type: no delivery.
    call(&app, Method::POST, "/v1/webhook-endpoints", &key, Some(json!({"url": url, "event_types": ["order.shipped"]}))).await;

    let (code, queued) = call(&app, Method::POST, "/v1/jobs", &key, Some(message("inv-1-paid"))).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{queued}");
    let jobs = queued["jobs"].as_array().expect("jobs").clone();
    assert_eq!(jobs.len(), 1, "one delivery per subscribed endpoint: {queued}");
    let (job, delivery) = (jobs[0]["id"].as_str().expect("job").to_owned(), jobs[0]["delivery_id"].as_str().expect("delivery").to_owned());
    let webhook_id = queued["id"].as_str().expect("message id").to_owned();
    let (code, bad) = call(&app, Method::POST, "/v1/jobs", &key, Some(json!({"kind": "webhook.deliver", "payload": {"type": "no spaces", "data": {}}}))).await;
    assert_eq!((code, bad["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("type")), "{bad}");

    // The receiver is down: the first attempt fails and the job says when the next one runs.
    app.drain().await;
    let (_, status) = call(&app, Method::GET, &format!("/v1/jobs/{job}"), &key, None).await;
    assert_eq!((status["state"].as_str(), status["attempts"].as_i64()), (Some("retrying"), Some(1)), "{status}");
    assert!(status["next_attempt_at"].is_string() && status["last_error"].as_str().is_some_and(|e| e.contains("503")), "{status}");
    // Another tenant sees nothing of it and cannot re-send it.
    assert_eq!(call(&app, Method::GET, &format!("/v1/jobs/{job}"), &other, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&app, Method::GET, &format!("/v1/webhook-endpoints/{endpoint_id}/deliveries"), &other, None).await.0, StatusCode::NOT_FOUND);
    let resend = format!("/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery}/resend");
    assert_eq!(call(&app, Method::POST, &resend, &other, None).await.0, StatusCode::NOT_FOUND);

    // It hangs past the timeout once, then stays down; attempts back off until an hour has passed.
    receiver.set(Mode::Hang);
    let first_due = next_attempt(&app, &delivery).await;
    receiver.set(Mode::Down);
    let mut due = first_due;
    while due < first_due + chrono::Duration::hours(1) {
        due = next_attempt(&app, &delivery).await;
    }
    assert!(receiver.got().is_empty());
    // Back up: the next attempt delivers.
    receiver.set(Mode::Up);
    next_attempt(&app, &delivery).await;
    let got = receiver.got();
    assert_eq!(got.len(), 1, "delivered once");
    let (headers, body) = &got[0];
    assert_eq!(headers["webhook-id"].to_str().ok(), Some(webhook_id.as_str()));
    standardwebhooks::Webhook::new(&secret).expect("secret").verify(body.as_bytes(), headers).expect("an independent implementation verifies the signature");
    let sent: Value = serde_json::from_str(body).expect("json body");
    assert_eq!((sent["type"].as_str(), sent["data"]["invoice"].as_str()), (Some("invoice.paid"), Some("in_1")), "{sent}");
    assert!(sent["timestamp"].is_string(), "{sent}");
    let (_, status) = call(&app, Method::GET, &format!("/v1/jobs/{job}"), &key, None).await;
    assert_eq!(status["state"], "done", "{status}");

    // The delivery log: every attempt, with the endpoint's answers cut short, never another's.
    let (code, log) = call(&app, Method::GET, &format!("/v1/webhook-endpoints/{endpoint_id}/deliveries"), &key, None).await;
    assert_eq!(code, StatusCode::OK, "{log}");
    let entry = &log["data"][0];
    assert_eq!((entry["status"].as_str(), entry["webhook_id"].as_str()), (Some("delivered"), Some(webhook_id.as_str())), "{entry}");
    let attempts = entry["attempt_log"].as_array().expect("attempts");
    assert_eq!(attempts.len() as i64, entry["attempts"].as_i64().expect("count"));
    assert!(attempts.len() >= 5, "an hour of backoff is several attempts: {}", attempts.len());
    assert_eq!((attempts[0]["status_code"].as_i64(), attempts[0]["response_body"].as_str()), (Some(503), Some("down for maintenance")));
    assert!(attempts[1]["error"].as_str().is_some_and(|e| e.contains("timed out")), "{}", attempts[1]);
    assert_eq!(attempts.last().map(|a| a["status_code"].as_i64()), Some(Some(200)));

    // The same idempotency key is the same message: nothing new is sent.
    let (_, again) = call(&app, Method::POST, "/v1/jobs", &key, Some(message("inv-1-paid"))).await;
    assert_eq!((again["id"].as_str(), again["duplicate"].as_bool()), (Some(webhook_id.as_str()), Some(true)), "{again}");
    app.drain().await;
    assert_eq!(receiver.got().len(), 1);

    // A finished delivery can be re-sent by its tenant: the same webhook-id again.
    let (code, resent) = call(&app, Method::POST, &resend, &key, None).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{resent}");
    app.drain().await;
    let got = receiver.got();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].0["webhook-id"].to_str().ok(), Some(webhook_id.as_str()));

    // Kept 30 days after they finish, then pruned with their attempts and message.
    let pool = &app.state.system_pool;
    sqlx::query("UPDATE webhook_deliveries SET finished_at = now() - interval '31 days'").execute(&pool.0).await.expect("age");
    sqlx::query("UPDATE webhook_messages SET created_at = now() - interval '31 days'").execute(&pool.0).await.expect("age");
    assert_eq!(ballast::webhooks_out::deliveries::prune(pool, std::time::Duration::from_secs(30 * 86_400)).await.expect("prune"), 2);
    let left: i64 = sqlx::query_scalar("SELECT (SELECT count(*) FROM webhook_attempts) + (SELECT count(*) FROM webhook_messages)").fetch_one(&pool.0).await.expect("count");
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_private_address_is_refused_and_an_endpoint_failing_for_five_days_is_disabled_and_its_tenant_emailed_once() {
    let (receiver, port) = Receiver::start(Mode::Up).await;
    let smtp = SmtpServer::start().await;
    let app = TestApp::builder()
        .smtp(smtp.port)
        .spawn()
        .await;
    let a = app.tenant("Acme").await;
    sqlx::query("UPDATE tenants SET billing_email = 'ops@acme.test' WHERE id = $1").bind(a).execute(&app.state.system_pool.0).await.expect("email");
    let (_, key) = app.key(Some(a), &[Scope::JobsWrite, Scope::WebhooksWrite]).await;

    // An internal address in the URL is refused at once; the metadata service too.
    for url in ["http://10.1.2.3/hook", "http://169.254.169.254/latest/meta-data", "http://[::1]:8080/"] {
        let (code, body) = call(&app, Method::POST, "/v1/webhook-endpoints", &key, Some(json!({"url": url, "event_types": ["*"]}))).await;
        assert_eq!((code, body["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("url")), "{url}: {body}");
    }
    // A name is checked when delivering, against what it resolves to then: localhost is loopback.
    let (code, endpoint) = call(&app, Method::POST, "/v1/webhook-endpoints", &key, Some(json!({"url": format!("http://localhost:{port}/hook"), "event_types": ["*"]}))).await;
    assert_eq!(code, StatusCode::CREATED, "{endpoint}");
    let endpoint_id = endpoint["id"].as_str().expect("id").to_owned();
    let (_, first) = call(&app, Method::POST, "/v1/jobs", &key, Some(message("m1"))).await;
    app.drain().await;
    assert!(receiver.got().is_empty(), "nothing reached the internal address");
    let (_, log) = call(&app, Method::GET, &format!("/v1/webhook-endpoints/{endpoint_id}/deliveries"), &key, None).await;
    let error = log["data"][0]["attempt_log"][0]["error"].as_str().unwrap_or_default().to_owned();
    // The tenant learns which rule refused, never what the name resolved to.
    assert!(error.starts_with("address_not_allowed: ") && !error.contains("127.0.0.1") && !error.contains("::1") && !error.contains("localhost"), "{log}");
    let job = first["jobs"][0]["id"].as_str().expect("job").to_owned();
    let (_, status) = call(&app, Method::GET, &format!("/v1/jobs/{job}"), &key, None).await;
    let shown = status["last_error"].as_str().unwrap_or_default();
    assert!(shown.starts_with("address_not_allowed: ") && !shown.contains("127.0.0.1"), "{status}");

    // Failing since six days ago (the clock moved on): the next failure disables it, once.
    sqlx::query("UPDATE webhook_endpoints SET failing_since = now() - interval '6 days' WHERE id = $1::uuid")
        .bind(&endpoint_id)
        .execute(&app.state.system_pool.0)
        .await
        .expect("backdate");
    let (_, second) = call(&app, Method::POST, "/v1/jobs", &key, Some(message("m2"))).await;
    app.drain().await;
    let (_, listed) = call(&app, Method::GET, "/v1/webhook-endpoints", &key, None).await;
    assert!(listed["data"][0]["disabled_at"].is_string(), "{listed}");
    // The retries of both messages find it disabled: skipped, and no second email.
    for queued in [&first, &second] {
        next_attempt(&app, queued["jobs"][0]["delivery_id"].as_str().expect("delivery")).await;
    }
    let (_, log) = call(&app, Method::GET, &format!("/v1/webhook-endpoints/{endpoint_id}/deliveries?status=skipped"), &key, None).await;
    assert_eq!(log["data"].as_array().map(Vec::len), Some(2), "{log}");
    let (_, third) = call(&app, Method::POST, "/v1/jobs", &key, Some(message("m3"))).await;
    assert_eq!(third["jobs"].as_array().map(Vec::len), Some(0), "a disabled endpoint gets nothing new: {third}");
    app.drain().await;
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "emailed once");
    assert_eq!(mails[0].to, vec!["ops@acme.test".to_owned()]);
    assert!(mails[0].header("Subject").is_some_and(|s| s.contains("disabled") && s.contains("localhost")), "{:?}", mails[0].header("Subject"));

    // Re-enabled by its tenant: new messages are delivered to it again.
    let (code, enabled) = call(&app, Method::POST, &format!("/v1/webhook-endpoints/{endpoint_id}/enable"), &key, None).await;
    assert!(code == StatusCode::OK && enabled["disabled_at"].is_null(), "{enabled}");
    let (_, fourth) = call(&app, Method::POST, "/v1/jobs", &key, Some(message("m4"))).await;
    assert_eq!(fourth["jobs"].as_array().map(Vec::len), Some(1), "{fourth}");
}

#[tokio::test]
async fn a_shared_commit_keeps_tenants_apart_and_a_key_repeated_within_it_is_one_message() {
    use ballast::webhooks_out::messages::{Incoming, NewMessage, accept_many};
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).spawn().await;
    let (a, b) = (app.tenant("A").await, app.tenant("B").await);
    for (tenant, host) in [(a, "a"), (b, "b")] {
        let new = ballast::webhooks_out::endpoints::NewEndpoint { url: format!("https://{host}.example/in"), event_types: vec!["*".into()] };
        ballast::webhooks_out::endpoints::create(&app.state.tenant_pool, ballast::newtypes::TenantId(tenant), &new, &Default::default(), 20, app.state.webhooks_out.keyring()).await.expect("endpoint");
    }
    let item = |tenant: uuid::Uuid, key: &str| Incoming {
        tenant: ballast::newtypes::TenantId(tenant),
        message: NewMessage { event_type: "invoice.paid".into(), data: serde_json::Map::new() },
        idempotency_key: Some(key.into()),
        at: chrono::Utc::now(),
    };
    let done = accept_many(&app.state.tenant_pool, &[item(a, "k1"), item(b, "k1"), item(a, "k1"), item(a, "k2")]).await.expect("accepted");
    assert_eq!(done.iter().map(|d| d.duplicate).collect::<Vec<_>>(), vec![false, false, true, false], "the same key in two tenants is two messages");
    assert_eq!(done[2].message_id, done[0].message_id);
    assert_eq!(done[2].deliveries, done[0].deliveries, "a repeat answers the first message's deliveries");
    assert_ne!(done[1].message_id, done[0].message_id);
    let owners: Vec<(uuid::Uuid, uuid::Uuid)> = sqlx::query_as(
        "SELECT d.tenant_id, e.tenant_id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id",
    )
    .fetch_all(&app.state.system_pool.0)
    .await
    .expect("deliveries");
    assert_eq!(owners.len(), 3, "one delivery per message, each to its own tenant's endpoint");
    assert!(owners.iter().all(|(d, e)| d == e), "{owners:?}");
}

/// docs/api.md's app-service curl lines (between `<!-- app-service -->` markers), one command each:
/// a command ends at a line that closes its quotes and does not continue with `\`; `# →`
/// answers and fences are skipped.
fn readme_curl_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(crate::support::repo_path("docs/api.md")).expect("docs/api.md");
    let start = readme.find("<!-- app-service -->").expect("docs/api.md marks its app-service lines");
    let end = readme.find("<!-- /app-service -->").expect("docs/api.md closes them");
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in readme[start..end].lines().map(str::trim_end) {
        if current.is_empty() && !line.starts_with("curl") {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if !line.ends_with('\\') && current.matches('\'').count() % 2 == 0 {
            commands.push(std::mem::take(&mut current));
        }
    }
    commands
}

#[tokio::test]
async fn the_api_pages_curl_lines_send_an_email_and_a_webhook_a_receiver_verifies() {
    let (receiver, port) = Receiver::start(Mode::Up).await;
    let smtp = SmtpServer::start().await;
    let app = TestApp::builder()
        .env("BALLAST_OUTBOUND_ALLOW_CIDRS", "127.0.0.0/8")
        .smtp(smtp.port)
        .spawn()
        .await;
    let tenant = app.tenant("Acme").await;
    let (_, key) = app.key(Some(tenant), &[Scope::JobsWrite, Scope::WebhooksWrite]).await;
    let commands = readme_curl_commands();
    assert_eq!(commands.len(), 5, "{commands:#?}");
    let mut answers: Vec<Value> = Vec::new();
    let (mut job, mut endpoint) = (String::new(), String::new());
    for command in commands {
        // The page's placeholders, filled with what the earlier answers gave.
        let command = command.replace("https://hooks.customer.example/ballast", &format!("http://127.0.0.1:{port}/hook")).replace("01J…", &job).replace("0193…", &endpoint);
        let out = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail\n{command}"))
            .env("BALLAST_URL", app.url(""))
            .env("APP_KEY", &key)
            .output()
            .await
            .expect("bash");
        assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
        let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{command}: {}", String::from_utf8_lossy(&out.stdout)));
        assert!(answer.get("error").is_none(), "{command}: {answer}");
        if answer["kind"] == "email.send" {
            job = answer["id"].as_str().unwrap_or_default().to_owned();
        }
        if answer["secret"].is_string() {
            endpoint = answer["id"].as_str().unwrap_or_default().to_owned();
        }
        answers.push(answer);
        app.drain().await;
    }
    let secret = answers.iter().find_map(|a| a["secret"].as_str()).expect("the endpoint's secret");
    let got = receiver.got();
    assert_eq!(got.len(), 1, "the webhook arrived");
    standardwebhooks::Webhook::new(secret).expect("secret").verify(got[0].1.as_bytes(), &got[0].0).expect("verified");
    assert_eq!(smtp.messages().len(), 1, "the email was sent");
}
