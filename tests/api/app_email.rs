//! `email.send` from an app service through `POST /v1/jobs`: a template of templates/email/
//! with exactly the variables it uses, sent once over a real SMTP conversation, its job
//! followed with `GET /v1/jobs/{id}`; what is wrong is refused with the field named.

use std::time::Duration;

use ballast::auth::Scope;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::procs::until;
use crate::support::smtp::SmtpServer;

async fn post(app: &TestApp, key: &str, body: Value) -> (StatusCode, Value) {
    app.call(reqwest::Method::POST, "/v1/jobs", key, Some(body)).await
}

fn reset(to: &str, variables: Value) -> Value {
    json!({"kind": "email.send", "idempotency_key": "reset-1", "payload": {"template": "password_reset", "to": to, "variables": variables}})
}

#[tokio::test]
async fn an_app_sends_a_templated_email_once_and_bad_ones_are_refused_naming_what_is_wrong() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::builder()
        .smtp(smtp.port)
        .spawn()
        .await;
    let (a, b) = (app.tenant("A").await, app.tenant("B").await);
    let (_, key) = app.key(Some(a), &[Scope::JobsWrite]).await;
    let (_, other) = app.key(Some(b), &[Scope::JobsWrite]).await;
    let vars = json!({"name": "Ada", "reset_url": "https://app.test/reset?t=<x>", "expires_in": "30 minutes"});

    // Refused, each naming what is wrong; nothing is written.
    let (code, body) = post(&app, &key, reset("ada@app.test", json!({"name": "Ada", "reset_url": "u"}))).await;
    assert_eq!((code, body["error"]["code"].as_str(), body["error"]["variable"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_email"), Some("expires_in")), "{body}");
    let mut extra = vars.clone();
    extra["nmae"] = json!("typo");
    let (code, body) = post(&app, &key, reset("ada@app.test", extra)).await;
    assert_eq!((code, body["error"]["variable"].as_str()), (StatusCode::BAD_REQUEST, Some("nmae")), "{body}");
    let (code, body) = post(&app, &key, reset("not an address", vars.clone())).await;
    assert!(code == StatusCode::BAD_REQUEST && body["error"]["message"].as_str().is_some_and(|m| m.contains("not an email address")), "{body}");
    let (code, body) = post(&app, &key, json!({"kind": "email.send", "payload": {"template": "nope", "to": "a@b.test"}})).await;
    assert!(code == StatusCode::BAD_REQUEST && body["error"]["message"].as_str().is_some_and(|m| m.contains("password_reset")), "the known templates are listed: {body}");
    // Ballast's own billing templates are not an app's to send, whatever the variables.
    let billing = json!({"kind": "email.send", "payload": {"template": "payment_action_required", "to": "victim@app.test",
        "variables": {"name": "x", "amount": "USD 999.00", "invoice": "in_1", "url": "https://pay.test/"}}});
    let (code, body) = post(&app, &key, billing).await;
    assert_eq!((code, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_email")), "{body}");
    assert!(!body["error"]["message"].as_str().unwrap_or_default().contains("payment_failed"), "Ballast's templates are not even listed: {body}");
    let mut script = vars.clone();
    script["reset_url"] = json!("javascript:alert(document.cookie)");
    let (code, body) = post(&app, &key, reset("ada@app.test", script)).await;
    assert_eq!((code, body["error"]["variable"].as_str()), (StatusCode::BAD_REQUEST, Some("reset_url")), "{body}");
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM email_outbox").fetch_one(&app.state.system_pool.0).await.expect("count");
    assert_eq!(outbox, 0);

    // Accepted twice with one idempotency key: one job, one email.
    let (code, first) = post(&app, &key, reset("ada@app.test", vars.clone())).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{first}");
    let (_, again) = post(&app, &key, reset("ada@app.test", vars.clone())).await;
    assert_eq!((again["id"].clone(), again["duplicate"].as_bool()), (first["id"].clone(), Some(true)));
    let id = first["id"].as_str().expect("id").to_owned();
    until("the job done", Duration::from_secs(30), || {
        let (app, key, id) = (&app, &key, &id);
        async move {
            let r = app.http.get(app.url(&format!("/v1/jobs/{id}"))).bearer_auth(key).send().await.expect("get");
            r.json::<Value>().await.is_ok_and(|s| s["state"] == "done")
        }
    })
    .await;
    app.drain().await;
    let sent = smtp.messages();
    assert_eq!(sent.len(), 1, "sent once");
    assert_eq!(sent[0].to, vec!["ada@app.test".to_owned()]);
    assert_eq!(sent[0].header("Subject").as_deref(), Some("Reset your password, Ada"));
    assert!(sent[0].data.contains("&lt;x&gt;") || sent[0].data.contains("&lt;x&gt"), "HTML escapes the variables");
    // From the app sender under the tenant's name, never from the billing sender.
    let from = sent[0].header("From").unwrap_or_default();
    assert!(from.contains("A") && from.contains("notifications@localhost") && !from.contains("billing@"), "{from}");
    // The operator sees what the app sees: the finished job, by the same id.
    let out = app.cli_async(&["--json", "jobs", "show", &id], &[]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!((shown["state"].as_str(), shown["kind"].as_str()), (Some("done"), Some("email.send")), "{shown}");
    let other_sees = app.http.get(app.url(&format!("/v1/jobs/{id}"))).bearer_auth(&other).send().await.expect("get");
    assert_eq!(other_sees.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_tenant_over_its_email_limit_is_refused_with_retry_after_and_nothing_is_queued() {
    let app = TestApp::builder().limits("[tenant_emails]\nlimit = 2\nwindow_secs = 3600\n").spawn().await;
    let (a, b) = (app.tenant("A").await, app.tenant("B").await);
    let (_, key) = app.key(Some(a), &[Scope::JobsWrite]).await;
    let (_, other) = app.key(Some(b), &[Scope::JobsWrite]).await;
    let email = |k: &str| {
        json!({"kind": "email.send", "idempotency_key": k, "payload": {"template": "password_reset", "to": "ada@app.test",
            "variables": {"name": "Ada", "reset_url": "https://app.test/r", "expires_in": "30 minutes"}}})
    };
    // Refused and repeated emails do not use up the limit: it is taken once checked and new.
    let mut bad = email("bad");
    bad["payload"]["to"] = json!("not an address");
    for _ in 0..3 {
        assert_eq!(post(&app, &key, bad.clone()).await.0, StatusCode::BAD_REQUEST);
    }
    for k in ["e1", "e1", "e2"] {
        assert_eq!(post(&app, &key, email(k)).await.0, StatusCode::ACCEPTED, "{k}");
    }
    let resp = app.http.post(app.url("/v1/jobs")).bearer_auth(&key).json(&email("e3")).send().await.expect("post");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("retry-after").is_some());
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["policy"], "tenant_emails", "{body}");
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM email_outbox WHERE tenant_id = $1").bind(a).fetch_one(&app.state.system_pool.0).await.expect("count");
    assert_eq!(queued, 2, "the refused email is not in the outbox");
    // The limit is per tenant.
    assert_eq!(post(&app, &other, email("e1")).await.0, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn the_welcome_email_counts_against_the_new_tenants_email_limit() {
    let sim = crate::support::stripe_sim::StripeSim::start().await;
    let smtp = SmtpServer::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).smtp(smtp.port).limits("[tenant_emails]\nlimit = 1\nwindow_secs = 3600\n").spawn().await;
    let (_, service) = app.key(None, &[Scope::TenantsWrite]).await;
    let (code, made) = app.call(reqwest::Method::POST, "/v1/tenants", &service, Some(json!({"name": "Acme", "external_id": "acme", "billing_email": "ap@acme.test"}))).await;
    assert_eq!(code, StatusCode::CREATED, "{made}");
    let tenant: uuid::Uuid = made["id"].as_str().and_then(|s| s.parse().ok()).expect("id");
    let (_, key) = app.key(Some(tenant), &[Scope::JobsWrite]).await;
    let email = json!({"kind": "email.send", "idempotency_key": "r1", "payload": {"template": "password_reset", "to": "ada@app.test",
        "variables": {"name": "Ada", "reset_url": "https://app.test/r", "expires_in": "30 minutes"}}});
    let (code, body) = post(&app, &key, email).await;
    assert_eq!((code, body["error"]["policy"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("tenant_emails")), "the welcome used the one email of the window: {body}");
}
