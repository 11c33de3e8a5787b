//! Outbound webhook endpoints through the API: registered with a secret shown once (that an
//! independent Standard Webhooks implementation accepts), listed without it, rotated with the
//! previous secret still signing, deleted; bad input named; another tenant's a 404.

use ballast::auth::Scope;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestApp;

async fn call(app: &TestApp, method: reqwest::Method, path: &str, key: &str, body: Option<Value>) -> (StatusCode, Value) {
    app.call(method, path, key, body).await
}

#[tokio::test]
async fn a_tenant_registers_lists_rotates_and_deletes_its_endpoints_and_no_one_elses() {
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).spawn().await;
    let (a, b) = (app.tenant("A").await, app.tenant("B").await);
    let (_, key_a) = app.key(Some(a), &[Scope::WebhooksWrite]).await;
    let (_, key_b) = app.key(Some(b), &[Scope::WebhooksWrite]).await;
    let (_, reader) = app.key(Some(a), &[Scope::JobsWrite]).await;

    let (code, made) = call(&app, reqwest::Method::POST, "/v1/webhook-endpoints", &key_a, Some(json!({"url": "https://hooks.example/in", "event_types": ["invoice.paid", "order.*"]}))).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{made}");
    assert_eq!(made["error"]["field"], "event_types");
    let (code, made) = call(&app, reqwest::Method::POST, "/v1/webhook-endpoints", &key_a, Some(json!({"url": "ftp://x", "event_types": ["invoice.paid"]}))).await;
    assert_eq!((code, made["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("url")));
    assert_eq!(call(&app, reqwest::Method::GET, "/v1/webhook-endpoints", &reader, None).await.0, StatusCode::FORBIDDEN, "webhooks:write only");

    let (code, made) = call(&app, reqwest::Method::POST, "/v1/webhook-endpoints", &key_a, Some(json!({"url": "https://hooks.example/in", "event_types": ["invoice.paid"]}))).await;
    assert_eq!(code, StatusCode::CREATED, "{made}");
    let secret = made["secret"].as_str().expect("the secret, once").to_owned();
    assert!(secret.starts_with("whsec_") && standardwebhooks::Webhook::new(&secret).is_ok(), "{secret}");
    let id = made["id"].as_str().expect("id").to_owned();

    let (_, listed) = call(&app, reqwest::Method::GET, "/v1/webhook-endpoints", &key_a, None).await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1));
    assert!(!listed.to_string().contains(&secret), "the secret is never listed");
    let (_, theirs) = call(&app, reqwest::Method::GET, "/v1/webhook-endpoints", &key_b, None).await;
    assert_eq!(theirs["data"].as_array().map(Vec::len), Some(0));

    // Rotation: a new secret; both sign during the overlap.
    assert_eq!(call(&app, reqwest::Method::POST, &format!("/v1/webhook-endpoints/{id}/rotate"), &key_b, None).await.0, StatusCode::NOT_FOUND);
    let (code, rotated) = call(&app, reqwest::Method::POST, &format!("/v1/webhook-endpoints/{id}/rotate"), &key_a, None).await;
    assert_eq!(code, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().expect("new secret");
    assert!(new_secret != secret && rotated["previous_secret_until"].is_string(), "{rotated}");
    let (current, previous, until): (String, Option<String>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT secret, previous_secret, previous_secret_until FROM webhook_endpoints WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.state.system_pool.0)
            .await
            .expect("secrets");
    let now = chrono::Utc::now();
    let signing = ballast::webhooks_out::endpoints::signing_set(&current, previous.as_deref(), until, now);
    assert_eq!(signing, vec![new_secret, secret.as_str()]);
    let after = ballast::webhooks_out::endpoints::signing_set(&current, previous.as_deref(), until, now + chrono::Duration::hours(25));
    assert_eq!(after, vec![new_secret], "the previous secret stops signing after the overlap");

    // Deleted: B cannot, A can, once.
    assert_eq!(call(&app, reqwest::Method::DELETE, &format!("/v1/webhook-endpoints/{id}"), &key_b, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&app, reqwest::Method::DELETE, &format!("/v1/webhook-endpoints/{id}"), &key_a, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(call(&app, reqwest::Method::DELETE, &format!("/v1/webhook-endpoints/{id}"), &key_a, None).await.0, StatusCode::NOT_FOUND);
}
