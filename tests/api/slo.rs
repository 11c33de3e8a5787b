//! SLO burn-rate alerts on synthetic minute counts and an evaluation clock the test moves;
//! notifications to a local HTTP receiver; counts reported by app services and recorded by the
//! intake itself.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use ballast::auth::Scope;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};

use crate::support::TestApp;

const AVAILABILITY: &str = "intake-availability";
const LATENCY: &str = "intake-latency";

/// The start of the outage (or blip) in every scenario: a whole minute.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).single().expect("t0")
}

/// Sets `good`/`valid` for every minute in [from, from + minutes) of `slo`.
async fn counts(app: &TestApp, slo: &str, from: DateTime<Utc>, minutes: i64, good: i64, valid: i64) {
    sqlx::query(
        "INSERT INTO slo_minutes (slo, minute, source, good, valid)
         SELECT $1, m, 'synthetic', $4, $5 FROM generate_series($2::timestamptz, $3::timestamptz, interval '1 minute') AS m
         ON CONFLICT (slo, minute, source) DO UPDATE SET good = EXCLUDED.good, valid = EXCLUDED.valid",
    )
    .bind(slo)
    .bind(from)
    .bind(from + Duration::minutes(minutes - 1))
    .bind(good)
    .bind(valid)
    .execute(&app.state.system_pool.0)
    .await
    .expect("counts");
}

/// A day of healthy traffic before t0 for both intake SLOs.
async fn healthy_day(app: &TestApp) {
    for slo in [AVAILABILITY, LATENCY] {
        counts(app, slo, t0() - Duration::days(1), 24 * 60, 1000, 1000).await;
    }
}

/// Evaluates (and applies) at t0 + `minute` minutes; returns (page, ticket) state of `slo`.
async fn evaluate_at(app: &TestApp, minute: i64, slo: &str) -> (String, String) {
    let statuses = ballast::slo::evaluate::run(&app.state.slo_deps(), t0() + Duration::minutes(minute), true).await.expect("evaluate");
    let s = statuses.iter().find(|s| s.name == slo).expect("slo");
    let state = |sev| s.alerts.iter().find(|a| a.severity == sev).map(|a| a.state.clone()).expect("alert");
    (state(ballast::slo::Severity::Page), state(ballast::slo::Severity::Ticket))
}

#[tokio::test]
async fn a_full_outage_pages_within_two_minutes_and_resolves_after_recovery() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    healthy_day(&app).await;
    counts(&app, AVAILABILITY, t0(), 10, 0, 1000).await; // ten minutes of nothing but 5xx
    counts(&app, AVAILABILITY, t0() + Duration::minutes(10), 60, 1000, 1000).await;

    let mut paged_at = None;
    let mut resolved_at = None;
    for minute in 0..=40 {
        let (page, _) = evaluate_at(&app, minute, AVAILABILITY).await;
        if page == "firing" && paged_at.is_none() {
            paged_at = Some(minute);
        }
        if page == "resolved" && paged_at.is_some() && resolved_at.is_none() {
            resolved_at = Some(minute);
        }
    }
    let paged_at = paged_at.expect("the outage paged");
    assert!(paged_at <= 2, "paged {paged_at} minutes into the outage");
    let resolved_at = resolved_at.expect("the page resolved");
    assert!((10..=20).contains(&resolved_at), "resolved at minute {resolved_at}, recovery at 10");
    let transitions: i64 = sqlx::query_scalar("SELECT transitions FROM slo_alerts WHERE alert_key = $1")
        .bind(format!("{AVAILABILITY}:page"))
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("alert");
    assert_eq!(transitions, 2, "fired once, resolved once");
}

#[tokio::test]
async fn a_slow_leak_opens_a_ticket_and_never_pages() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    // 0.8 % errors for a day: 1.6x the 0.5 % budget.
    counts(&app, AVAILABILITY, t0() - Duration::days(1), 24 * 60, 992, 1000).await;
    let mut ticket = String::new();
    for minute in (-120..=0).step_by(10) {
        let (page, t) = evaluate_at(&app, minute, AVAILABILITY).await;
        assert_eq!(page, "resolved", "a slow leak must not page (minute {minute})");
        ticket = t;
    }
    assert_eq!(ticket, "firing", "a slow leak opens a ticket");
}

#[tokio::test]
async fn a_three_minute_blip_does_nothing() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    healthy_day(&app).await;
    counts(&app, LATENCY, t0(), 3, 0, 1000).await; // every request slow for three minutes
    counts(&app, AVAILABILITY, t0(), 3, 950, 1000).await; // and 5 % errors
    counts(&app, LATENCY, t0() + Duration::minutes(3), 60, 1000, 1000).await;
    counts(&app, AVAILABILITY, t0() + Duration::minutes(3), 60, 1000, 1000).await;
    for minute in 0..=30 {
        for slo in [LATENCY, AVAILABILITY] {
            assert_eq!(evaluate_at(&app, minute, slo).await, ("resolved".into(), "resolved".into()), "{slo} at minute {minute}");
        }
    }
}

#[tokio::test]
async fn low_traffic_never_pages() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    // One request a minute, every one failing, for three hours.
    counts(&app, AVAILABILITY, t0() - Duration::hours(3), 180, 0, 1).await;
    for minute in (-120..=0).step_by(5) {
        let (page, _) = evaluate_at(&app, minute, AVAILABILITY).await;
        assert_eq!(page, "resolved", "a handful of requests must not page (minute {minute})");
    }
}

/// A webhook receiver that refuses the first `fail_first` requests with 500.
#[derive(Clone, Default)]
pub(crate) struct Receiver {
    inner: Arc<Mutex<ReceiverState>>,
}

#[derive(Default)]
struct ReceiverState {
    fail_first: u32,
    refused: u32,
    accepted: Vec<(String, Value)>,
}

impl Receiver {
    pub(crate) async fn start(fail_first: u32) -> (Receiver, String) {
        let receiver = Receiver::default();
        receiver.inner.lock().expect("lock").fail_first = fail_first;
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        (receiver, format!("http://{addr}/hook"))
    }

    pub(crate) fn accepted(&self) -> Vec<(String, Value)> {
        self.inner.lock().expect("lock").accepted.clone()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: axum::Json<Value>) -> StatusCode {
    let mut s = r.inner.lock().expect("lock");
    if s.refused < s.fail_first {
        s.refused += 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    s.accepted.push((key, body.0));
    StatusCode::OK
}

#[tokio::test]
async fn each_transition_reaches_the_receiver_exactly_once_even_when_it_fails_first() {
    let (receiver, url) = Receiver::start(2).await;
    let app = TestApp::builder().roles(&[ballast::app::Role::Worker]).env("BALLAST_SLO_WEBHOOK_URL", &url).spawn().await;
    healthy_day(&app).await;
    counts(&app, AVAILABILITY, t0(), 10, 0, 1000).await;
    counts(&app, AVAILABILITY, t0() + Duration::minutes(10), 60, 1000, 1000).await;
    for minute in 0..=30 {
        evaluate_at(&app, minute, AVAILABILITY).await;
        app.drain().await;
    }
    let accepted = receiver.accepted();
    assert_eq!(receiver.inner.lock().expect("lock").refused, 2, "the receiver failed first");
    let of = |key: &str| accepted.iter().filter(|(_, b)| b["alert_key"] == key).map(|(_, b)| b["state"].as_str().unwrap_or("").to_owned()).collect::<Vec<_>>();
    assert_eq!(of(&format!("{AVAILABILITY}:page")), vec!["firing", "resolved"], "{accepted:?}");
    assert_eq!(of(&format!("{AVAILABILITY}:ticket")), vec!["firing"], "{accepted:?}");
    let mut ids: Vec<&str> = accepted.iter().map(|(k, _)| k.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), accepted.len(), "no notification delivered twice");
    let first = &accepted[0].1;
    assert_eq!(first["severity"], "page");
    assert!(first["summary"].as_str().is_some_and(|s| s.contains(AVAILABILITY)), "{first}");
    let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM slo_notifications WHERE status = 'sent'")
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("sent");
    assert_eq!(sent, 3);
}

#[tokio::test]
async fn app_services_report_counts_and_a_repeat_replaces_rather_than_adds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("slos.toml");
    std::fs::write(
        &file,
        "[[slo]]\nname = \"checkout\"\ntarget = 0.99\nwindow = \"7d\"\nindicator = { kind = \"reported\" }\n\
         [[slo]]\nname = \"intake-availability\"\ntarget = 0.995\nwindow = \"7d\"\nindicator = { kind = \"intake_availability\" }\n",
    )
    .expect("write");
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).env("BALLAST_SLO_FILE", &file.display().to_string()).spawn().await;
    let (_, service) = app.key(None, &[Scope::SloWrite]).await;
    let tenant = app.tenant("t").await;
    let (_, tenant_key) = app.key(Some(tenant), &[Scope::SloWrite]).await;
    let minute = chrono::DurationRound::duration_trunc(Utc::now() - Duration::minutes(5), Duration::minutes(1)).expect("minute");
    let report = json!({"events": [{"slo": "checkout", "minute": minute, "source": "checkout/pod-1", "good": 90, "valid": 100}]});
    let post = |key: String, body: Value| {
        let req = app.http.post(app.url("/v1/slo/events")).bearer_auth(key).json(&body);
        async move {
            let resp = req.send().await.expect("post");
            let status = resp.status();
            (status, resp.json::<Value>().await.expect("json"))
        }
    };
    assert_eq!(post(service.clone(), report.clone()).await.0, StatusCode::OK);
    assert_eq!(post(service.clone(), report.clone()).await.0, StatusCode::OK, "a retry");
    let (valid, good): (i64, i64) = sqlx::query_as("SELECT sum(valid)::bigint, sum(good)::bigint FROM slo_minutes WHERE slo = 'checkout'")
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("sum");
    assert_eq!((valid, good), (100, 90), "the repeat replaced the first report");

    let (s, body) = post(tenant_key, report.clone()).await;
    assert_eq!((s, &body["error"]["code"]), (StatusCode::FORBIDDEN, &json!("service_key_required")));
    let bad = json!({"events": [report["events"][0].clone(), {"slo": "checkout", "minute": minute, "source": "x", "good": 5, "valid": 4}]});
    let (s, body) = post(service.clone(), bad).await;
    assert_eq!((s, &body["error"]["item"], &body["error"]["field"]), (StatusCode::BAD_REQUEST, &json!(1), &json!("good")), "{body}");
    let (s, body) = post(service.clone(), json!({"events": [{"slo": "nope", "minute": minute, "source": "x", "good": 1, "valid": 1}]})).await;
    assert_eq!((s, &body["error"]["field"]), (StatusCode::BAD_REQUEST, &json!("slo")));

    // The status command shows the reported SLO: 90 % against a 99 % target.
    let out = app.cli(&["slo", "status", "--json"]);
    let statuses: Value = serde_json::from_slice(&out.stdout).expect("json");
    // Exit status 3 when an alert fires (so cron notices), 0 otherwise.
    let firing = statuses.as_array().into_iter().flatten().any(|s| s["rules"].as_array().into_iter().flatten().any(|r| r["firing"] == true));
    assert_eq!(out.status.code(), Some(if firing { 3 } else { 0 }), "{}", String::from_utf8_lossy(&out.stderr));
    let checkout = statuses.as_array().and_then(|a| a.iter().find(|s| s["name"] == "checkout")).expect("checkout");
    assert_eq!(checkout["window"]["valid"], 100);
    assert!((checkout["sli"].as_f64().expect("sli") - 0.9).abs() < 1e-9);
    assert!(checkout["budget_remaining"].as_f64().expect("budget") < 0.0, "10 % errors overspend a 1 % budget");
    let table = app.cli(&["slo", "status"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("checkout"));
}

#[tokio::test]
async fn the_intake_counts_its_own_requests_per_minute() {
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).spawn().await;
    let tenant = app.tenant("t").await;
    let (_, key) = app.key(Some(tenant), &[Scope::EntitlementsRead]).await;
    for _ in 0..5 {
        let resp = app.http.get(app.url("/v1/entitlements")).bearer_auth(&key).send().await.expect("get");
        assert_eq!(resp.status(), StatusCode::OK);
    }
    // Probes are not product traffic.
    app.http.get(app.url("/healthz")).send().await.expect("healthz");
    app.state.slo_recorder.flush(app.state.tenant_pool.raw()).await.expect("flush");
    let rows: Vec<(String, i64, i64)> = sqlx::query_as("SELECT slo, sum(good)::bigint, sum(valid)::bigint FROM slo_minutes GROUP BY slo ORDER BY slo")
        .fetch_all(&app.state.system_pool.0)
        .await
        .expect("rows");
    assert_eq!(rows, vec![(AVAILABILITY.to_owned(), 5, 5), (LATENCY.to_owned(), 5, 5)]);
    // Writing the same totals again changes nothing.
    app.state.slo_recorder.flush(app.state.tenant_pool.raw()).await.expect("flush");
    let valid: i64 = sqlx::query_scalar("SELECT sum(valid)::bigint FROM slo_minutes WHERE slo = $1").bind(AVAILABILITY).fetch_one(&app.state.system_pool.0).await.expect("sum");
    assert_eq!(valid, 5);
}
