//! Error reports with the release (issue 38): a job that dies, and an intake request answered
//! 5xx, are reported to a local receiver that reads Sentry's envelope format, tagged with the
//! release, the environment, the job kind or route, and the tenant, and without a payload.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use serde_json::Value;

use crate::support::TestApp;

/// A Sentry-compatible endpoint on loopback: every envelope's items, parsed.
#[derive(Clone, Default)]
struct Receiver {
    items: Arc<Mutex<Vec<(Value, Value)>>>,
}

/// `POST /api/{project}/envelope/`: a header line, then per item a header line and a payload
/// (<https://develop.sentry.dev/sdk/data-model/envelopes/>).
async fn envelope(State(r): State<Receiver>, body: Bytes) -> axum::http::StatusCode {
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut lines = text.lines();
    let _envelope_header = lines.next();
    while let (Some(header), Some(payload)) = (lines.next(), lines.next()) {
        let (Ok(h), Ok(p)) = (serde_json::from_str::<Value>(header), serde_json::from_str::<Value>(payload)) else { continue };
        r.items.lock().expect("lock").push((h, p));
    }
    axum::http::StatusCode::OK
}

/// The receiver on loopback, and the reporter pointed at it.
fn receiving() -> (Receiver, ballast::error_reports::Reporter) {
    let receiver = Receiver::default();
    let app = axum::Router::new().route("/api/{project}/envelope/", axum::routing::post(envelope)).with_state(receiver.clone());
    // Its own thread and runtime: the reporter's flush and its drop block the test's thread
    // until the transport is done, and a receiver served there would never answer it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send addr");
            axum::serve(listener, app).await.expect("serve")
        });
    });
    let addr = rx.recv().expect("the receiver's address");
    let dsn = secrecy::SecretString::from(format!("http://publickey@{addr}/42"));
    (receiver, ballast::error_reports::init(Some(&dsn), "staging"))
}

/// A tenant's read answered 5xx (the tenant role's database refuses every connection, the
/// key's check still passes): reported with its route, status and tenant.
#[tokio::test]
async fn an_intake_5xx_is_reported_with_its_route_and_the_tenant_it_served() {
    let (receiver, reporter) = receiving();
    let fleet = TestApp::builder().roles(&[ballast::app::Role::Api]).env("DATABASE_URL", "postgres://ballast_app:ballast_app@127.0.0.1:9/ballast").spawn().await;
    let tenant = fleet.tenant("served").await;
    let (_, key) = fleet.key(Some(tenant), &[ballast::auth::Scope::EntitlementsRead]).await;
    let (status, body) = fleet.call(reqwest::Method::GET, "/v1/entitlements", &key, None).await;
    assert!(status.is_server_error(), "{status} {body}");
    assert!(sentry::Hub::current().client().expect("a client").flush(Some(std::time::Duration::from_secs(10))));
    drop(reporter);
    let items = receiver.items.lock().expect("lock").clone();
    let events: Vec<&Value> = items.iter().filter(|(h, _)| h["type"] == "event").map(|(_, p)| p).collect();
    assert_eq!(events.len(), 1, "{items:?}");
    assert_eq!(events[0]["tags"]["http.route"], "/v1/entitlements", "{}", events[0]);
    assert_eq!(events[0]["tags"]["tenant.id"], tenant.to_string(), "{}", events[0]);
    assert_eq!(events[0]["release"], ballast::RELEASE);
}

#[tokio::test]
async fn a_dead_job_is_reported_with_the_release_and_its_kind_and_tenant_never_its_payload() {
    let (receiver, reporter) = receiving();
    let fleet = TestApp::builder().roles(&[ballast::app::Role::Worker]).spawn().await;
    let tenant = fleet.tenant("reported").await;
    // Arguments the kind refuses: dead at once. The payload carries something that must not
    // leave: a card number.
    let mut req = ballast::queue::EnqueueRequest::new("test.flaky", serde_json::json!({"fail_while_key": "k", "card": "4242424242424242"}));
    req.tenant = Some(ballast::newtypes::TenantId(tenant));
    fleet.state.queue.enqueue(req).await.expect("enqueue");
    fleet.drain().await;
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM job_dead_letters").fetch_one(&fleet.state.system_pool.0).await.expect("dead");
    assert_eq!(dead, 1);
    // Sent before the flush returns.
    assert!(sentry::Hub::current().client().expect("a client").flush(Some(std::time::Duration::from_secs(10))));
    drop(reporter);

    let items = receiver.items.lock().expect("lock").clone();
    let events: Vec<&Value> = items.iter().filter(|(h, _)| h["type"] == "event").map(|(_, p)| p).collect();
    assert_eq!(events.len(), 1, "{items:?}");
    let event = events[0];
    assert_eq!(event["release"], ballast::RELEASE);
    assert_eq!(event["environment"], "staging");
    assert_eq!(event["tags"]["job.kind"], "test.flaky");
    assert_eq!(event["tags"]["job.outcome"], "dead-lettered");
    assert_eq!(event["tags"]["tenant.id"], tenant.to_string());
    let all = serde_json::to_string(&items).expect("json");
    assert!(!all.contains("4242424242424242"), "the payload never leaves: {all}");
}
