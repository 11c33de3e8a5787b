//! One trace from webhook to handler over real OTLP, the golden-signal metrics, and redaction:
//! a real `ballast serve` process exports to an OTLP receiver on loopback (protobuf export
//! requests decoded here), handles Stripe webhooks and usage, is scraped, then stops on
//! SIGTERM and flushes its spans. Its logs and spans are searched for every secret it held.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use ballast::auth::Scope;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;

use crate::support::TestApp;
use crate::support::stripe_sim::{self, STARTER, StripeSim};

/// A span as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    name: String,
    attributes: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

async fn export(State(r): State<Receiver>, body: Bytes) -> (axum::http::StatusCode, [(&'static str, &'static str); 1]) {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export request");
    let mut spans = r.spans.lock().expect("lock");
    for rs in request.resource_spans {
        for ss in rs.scope_spans {
            for s in ss.spans {
                let attributes = s
                    .attributes
                    .iter()
                    .map(|kv| {
                        let v = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                            Some(AnyValue::StringValue(s)) => s,
                            Some(AnyValue::IntValue(i)) => i.to_string(),
                            Some(AnyValue::BoolValue(b)) => b.to_string(),
                            Some(other) => format!("{other:?}"),
                            None => String::new(),
                        };
                        (kv.key.clone(), v)
                    })
                    .collect();
                spans.push(Received { trace: s.trace_id, id: s.span_id, parent: s.parent_span_id, name: s.name, attributes });
            }
        }
    }
    (axum::http::StatusCode::OK, [("content-type", "application/x-protobuf")])
}

use crate::support::procs::{free_port, until};

const SMTP_PASSWORD: &str = "smtp-pass-R3dact3d";
const CARD_NUMBER: &str = "4242424242424242";
const CARD_FINGERPRINT: &str = "fp_Zx9Secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_webhook_to_the_stripe_call_metrics_cover_the_golden_signals_and_no_secret_leaks() {
    let sim = StripeSim::start().await;
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let otlp = format!("http://{}", listener.local_addr().expect("addr"));
    let router = axum::Router::new().route("/v1/traces", axum::routing::post(export)).with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.expect("receiver") });

    let app = TestApp::builder().roles(&[]).env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let tenant = app.tenant("traced").await;
    let (_, api_key) = app.key(Some(tenant), &[Scope::UsageWrite, Scope::EntitlementsRead]).await;
    let port = free_port();
    let logs = tempfile::NamedTempFile::new().expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args(["serve", "--roles", "api,worker"])
        .env_clear()
        .envs(&app.env)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BALLAST_LISTEN", format!("127.0.0.1:{port}"))
        // The real catalogue: the test kinds of TestApp's have no handler in the binary.
        .env("BALLAST_JOBS_DIR", crate::support::repo_path("jobs"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .env("OTEL_SERVICE_NAME", "ballast-test")
        // Nothing is exported on a timer during the test: what arrives was flushed at shutdown.
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .env("BALLAST_LOG", "debug")
        .env("BALLAST_LOG_FORMAT", "json")
        .env("BALLAST_SMTP_USERNAME", "mailer")
        .env("BALLAST_SMTP_PASSWORD", SMTP_PASSWORD)
        .stdout(Stdio::null())
        .stderr(logs.reopen().expect("log handle"))
        .spawn()
        .expect("ballast serve");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
        let early = child.try_wait().expect("wait");
        assert!(early.is_none() && tokio::time::Instant::now() < deadline, "the member did not listen ({early:?}): {}", std::fs::read_to_string(logs.path()).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A checkout, delivered as Stripe would; one event carries card details.
    let customer = sim.customer(tenant, true);
    sim.checkout(tenant, &customer, STARTER, None);
    let mut events = sim.take_events();
    // Stripe sends `invoice.updated` in the same second as `invoice.paid`: the tie that only
    // Stripe's current invoice can settle, so one event goes through stripe.refetch.
    let paid = events.iter().find(|e| e["type"] == "invoice.paid").cloned().expect("an invoice.paid");
    let mut tie = paid;
    tie["id"] = json!(format!("{}_updated", tie["id"].as_str().unwrap_or("evt")));
    tie["type"] = json!("invoice.updated");
    events.push(tie);
    let mut signatures = Vec::new();
    for mut event in events {
        if event["type"] == "invoice.paid" {
            event["data"]["object"]["payment_method_details"] =
                json!({"card": {"number": CARD_NUMBER, "cvc": "123", "last4": "4242", "fingerprint": CARD_FINGERPRINT}});
        }
        let body = serde_json::to_vec(&event).expect("json");
        let signature = stripe_sim::signature_header(stripe_sim::SECRET, chrono::Utc::now().timestamp(), &body);
        let res = http.post(format!("{base}/webhooks/stripe")).header("stripe-signature", &signature).body(body).send().await.expect("deliver");
        assert_eq!(res.status(), 200);
        signatures.push(signature);
    }
    let system = app.state.system_pool.0.clone();
    until("every event processed", Duration::from_secs(30), || {
        let system = system.clone();
        async move {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE status NOT IN ('processed', 'ignored')").fetch_one(&system).await.unwrap_or(1);
            left == 0
        }
    })
    .await;
    let usage = json!({"items": [{"metric": "api_calls", "quantity": 3, "timestamp": chrono::Utc::now(), "idempotency_key": "obs-1"}]});
    let res = http.post(format!("{base}/v1/usage")).bearer_auth(&api_key).json(&usage).send().await.expect("usage");
    assert_eq!(res.status(), 200);
    for _ in 0..2 {
        let res = http.get(format!("{base}/v1/entitlements/projects")).bearer_auth(&api_key).send().await.expect("read");
        assert_eq!(res.status(), 200);
    }

    let metrics = http.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
    for expected in [
        "ballast_http_request_duration_seconds_bucket{method=\"POST\",route=\"/webhooks/stripe\",status=\"200\",le=\"0.3\"}",
        "ballast_http_requests_total{method=\"POST\",route=\"/v1/usage\",status=\"200\"} 1",
        "ballast_jobs_total{kind=\"stripe.event\",outcome=\"processed\"}",
        "ballast_job_run_seconds_bucket{kind=\"stripe.event\"",
        "ballast_queue_jobs{kind=\"stripe.event\",state=\"ready\"} 0",
        "ballast_queue_oldest_ready_age_seconds{kind=\"stripe.event\"}",
        "ballast_db_pool_connections{pool=\"app\",state=\"idle\"}",
        "ballast_db_pool_connections{pool=\"system\",state=\"in_use\"}",
        "ballast_ratelimit_decisions_total{outcome=\"blocked\"} 0",
        "ballast_cache_reads_total{result=\"hit\"} 1",
        "ballast_cache_reads_total{result=\"miss\"} 1",
        "ballast_webhook_lag_seconds_count",
    ] {
        assert!(metrics.contains(expected), "/metrics lacks {expected}:\n{metrics}");
    }

    // SIGTERM: the member drains and flushes its spans before it exits.
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "the member did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");

    let spans = receiver.spans.lock().expect("lock").clone();
    assert!(!spans.is_empty(), "spans were flushed at shutdown");
    let by_id: HashMap<Vec<u8>, &Received> = spans.iter().map(|s| (s.id.clone(), s)).collect();
    let parent_of = |s: &Received| by_id.get(&s.parent).copied();
    // The Stripe API call inside a job, and its ancestry back to the webhook request.
    // (An invoice payment delivered before its invoice is routed by reading the invoice from
    // Stripe inside its stripe.event run; that call is not the one followed here.)
    let call = spans
        .iter()
        .find(|s| s.name.starts_with("GET /v1/invoices/") && parent_of(s).is_some_and(|p| p.name == "stripe.refetch process"))
        .expect("a Stripe API span in a stripe.refetch run");
    let mut ancestry = vec![call];
    let mut at = call;
    while let Some(p) = parent_of(at) {
        assert_eq!(p.trace, call.trace, "one trace");
        ancestry.push(p);
        at = p;
    }
    let chain: Vec<String> = ancestry.iter().map(|s| s.name.clone()).collect();
    // The call's job — stripe.refetch, with no database transaction open: the event tied
    // with the mirror and stripe.event handed it over — the enqueue of that job, the
    // stripe.event run … back to the webhook request (an event parked for its customer and
    // released by a later job adds a hop).
    assert_eq!(chain[1..4], ["stripe.refetch process", "stripe.refetch publish", "stripe.event process"].map(String::from), "{chain:?}");
    assert_eq!(chain.last().map(String::as_str), Some("POST /webhooks/stripe"), "{chain:?}");
    // The run that made the call (a parked run of the same event, in the same trace, has no
    // tenant: it never found one).
    let consumer = ancestry[1];
    assert_eq!(consumer.attributes.get("messaging.system").map(String::as_str), Some("redis"));
    assert_eq!(consumer.attributes.get("messaging.destination.name").map(String::as_str), Some("stripe.refetch"));
    assert!(consumer.attributes.get("messaging.message.id").is_some_and(|v| !v.is_empty()));
    assert_eq!(consumer.attributes.get("tenant.id").map(String::as_str), Some(tenant.to_string().as_str()));
    let producer = parent_of(consumer).expect("producer");
    assert_eq!(producer.attributes.get("messaging.message.id"), consumer.attributes.get("messaging.message.id"));

    // Redaction: no secret in any log line or span attribute.
    let log_text = std::fs::read_to_string(logs.path()).expect("logs");
    assert!(log_text.contains("Ballast") || log_text.contains("listening") || !log_text.is_empty(), "logs were captured");
    let span_text: String = spans.iter().map(|s| format!("{} {:?}\n", s.name, s.attributes)).collect();
    let mut secrets = vec![
        stripe_sim::SECRET.to_owned(),
        stripe_sim::API_KEY.to_owned(),
        api_key.clone(),
        SMTP_PASSWORD.to_owned(),
        CARD_NUMBER.to_owned(),
        CARD_FINGERPRINT.to_owned(),
        format!("Bearer {api_key}"),
    ];
    secrets.extend(signatures.iter().map(|s| s.split(",v1=").nth(1).unwrap_or(s).to_owned()));
    for secret in &secrets {
        assert!(!log_text.contains(secret.as_str()), "a log line holds a secret ({}…)", &secret[..6]);
        assert!(!span_text.contains(secret.as_str()), "a span holds a secret ({}…)", &secret[..6]);
    }
}
