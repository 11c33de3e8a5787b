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
    // Stored sealed: the database alone holds neither secret.
    assert!(!current.contains("whsec_") && !previous.as_deref().unwrap_or_default().contains("whsec_"), "{current}");
    let keyring = app.state.webhooks_out.keyring();
    let row = ballast::webhooks_out::endpoints::sealed_row(id.parse().expect("uuid"));
    let open = |sealed: &str| keyring.open(sealed, &row).expect("opens");
    let now = chrono::Utc::now();
    let signing: Vec<String> = ballast::webhooks_out::endpoints::signing_set(&current, previous.as_deref(), until, now).into_iter().map(open).collect();
    assert_eq!(signing, vec![new_secret.to_owned(), secret.clone()]);
    let after: Vec<String> = ballast::webhooks_out::endpoints::signing_set(&current, previous.as_deref(), until, now + chrono::Duration::hours(25)).into_iter().map(open).collect();
    assert_eq!(after, vec![new_secret.to_owned()], "the previous secret stops signing after the overlap");

    // Deleted: B cannot, A can, once.
    assert_eq!(call(&app, reqwest::Method::DELETE, &format!("/v1/webhook-endpoints/{id}"), &key_b, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&app, reqwest::Method::DELETE, &format!("/v1/webhook-endpoints/{id}"), &key_a, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(call(&app, reqwest::Method::DELETE, &format!("/v1/webhook-endpoints/{id}"), &key_a, None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rotate_key_reseals_every_secret_under_the_new_key_and_a_dump_alone_signs_nothing() {
    use base64::Engine;
    let key = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
    let (old, new) = (format!("k1:{}", key(1)), format!("k2:{}", key(2)));
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).env("BALLAST_SECRETS_KEYRING", &old).spawn().await;
    let tenant = app.tenant("A").await;
    let (_, api_key) = app.key(Some(tenant), &[Scope::WebhooksWrite]).await;
    let mut shown = Vec::new();
    for n in 0..3 {
        let (_, made) = call(&app, reqwest::Method::POST, "/v1/webhook-endpoints", &api_key, Some(json!({"url": format!("https://hooks.example/{n}"), "event_types": ["*"]}))).await;
        shown.push((made["id"].as_str().expect("id").to_owned(), made["secret"].as_str().expect("secret").to_owned()));
    }
    // One written before sealing existed: plain text, sealed by the rotation too.
    sqlx::query("UPDATE webhook_endpoints SET secret = $2 WHERE id = $1::uuid").bind(&shown[2].0).bind(&shown[2].1).execute(&app.state.system_pool.0).await.expect("plain");
    let stored = || async {
        let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as("SELECT id, secret FROM webhook_endpoints ORDER BY id").fetch_all(&app.state.system_pool.0).await.expect("rows");
        rows
    };
    let before = stored().await;
    assert!(before[..2].iter().all(|(_, s)| s.starts_with("sealed:v1:k1:")), "{before:?}");

    let rotate = |keyring: String, execute: bool| {
        let env = app.env.clone();
        async move {
            let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ballast"));
            cmd.args(["--json", "secrets", "rotate-key"]).env_clear().envs(&env).env("BALLAST_SECRETS_KEYRING", keyring);
            if execute {
                cmd.arg("--execute");
            }
            let out = cmd.output().await.expect("run");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice::<Value>(&out.stdout).expect("json")
        }
    };
    let dry = rotate(format!("{new},{old}"), false).await;
    assert_eq!((dry["to_reseal"].as_u64(), dry["resealed"].as_u64()), (Some(3), Some(0)), "{dry}");
    assert_eq!(stored().await, before, "a dry run changes nothing");
    let done = rotate(format!("{new},{old}"), true).await;
    assert_eq!(done["resealed"].as_u64(), Some(3), "{done}");
    let after = stored().await;
    assert!(after.iter().all(|(_, s)| s.starts_with("sealed:v1:k2:")), "{after:?}");
    // Only the new key now opens them, each to the secret shown when it was made.
    let keyring = ballast::keyring::Keyring::parse(Some(&new)).expect("keyring");
    for ((id, sealed), (shown_id, secret)) in after.iter().zip(&shown) {
        assert_eq!(&id.to_string(), shown_id);
        assert_eq!(keyring.open(sealed, &ballast::webhooks_out::endpoints::sealed_row(*id)).as_deref(), Ok(secret.as_str()));
    }
    assert_eq!(rotate(new.clone(), false).await["to_reseal"].as_u64(), Some(0), "nothing left under the old key");
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'secrets.rotate_key'").fetch_one(&app.state.system_pool.0).await.expect("audit");
    assert_eq!(audited, 3);
}
