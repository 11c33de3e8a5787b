//! The local Stripe and mail catcher as a newcomer uses them: `ballast dev stripe serve` and
//! `ballast dev mail serve` beside a fleet, a tenant provisioned through the API (its customer
//! made at the local Stripe, its welcome email caught as a file), a checkout and the test clock
//! driven from the command line, and the webhooks delivered — signed — by the local Stripe
//! itself, with nobody handing events over.

use std::time::Duration;

use ballast::auth::Scope;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::local_dev::LocalDev;
use crate::support::procs::until;

async fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args(args)
        .env_clear()
        .envs(&app.env)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .await
        .expect("run ballast");
    assert!(out.status.success(), "ballast {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

async fn tenant(app: &TestApp, key: &str, id: &str) -> Value {
    let resp = app.http.get(app.url(&format!("/v1/tenants/{id}"))).bearer_auth(key).send().await.expect("get");
    resp.json().await.unwrap_or_default()
}

#[tokio::test]
async fn a_tenant_provisioned_against_the_local_stripe_subscribes_and_is_billed_when_its_trial_ends() {
    let mut dev = LocalDev::start().await;
    let (app, mail) = (&dev.app, &dev.mail);

    // Provisioning creates the customer at the local Stripe.
    let (_, key) = app.key(None, &[Scope::TenantsWrite]).await;
    let body = json!({"name": "Newcomer", "external_id": "newcomer-1", "billing_email": "owner@newcomer.test"});
    let resp = app.http.post(app.url("/v1/tenants")).bearer_auth(&key).json(&body).send().await.expect("provision");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: Value = resp.json().await.expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    let customer = created["stripe_customer_id"].as_str().expect("customer at the local Stripe").to_owned();

    // README's way of picking the customer out of `ballast tenants show --json`.
    let pick = format!(
        "{} tenants show newcomer-1 --json | sed -n 's/.*\"stripe_customer_id\":\"\\([^\"]*\\)\".*/\\1/p'",
        env!("CARGO_BIN_EXE_ballast")
    );
    let picked = tokio::process::Command::new("sh").args(["-c", &pick]).env_clear().envs(&app.env).env("PATH", std::env::var("PATH").unwrap_or_default()).output().await.expect("sh");
    assert_eq!(String::from_utf8_lossy(&picked.stdout).trim(), customer, "{}", String::from_utf8_lossy(&picked.stderr));

    // The welcome email, caught as a file.
    until("the welcome email caught", Duration::from_secs(30), || {
        let dir = mail.path().to_owned();
        async move {
            std::fs::read_dir(&dir).into_iter().flatten().flatten().any(|f| {
                std::fs::read_to_string(f.path()).is_ok_and(|m| m.contains("owner@newcomer.test") && m.contains("Welcome to your account, Newcomer"))
            })
        }
    })
    .await;

    // A checkout with a 14-day trial, from the command line; its events arrive by themselves.
    cli(&app, &["dev", "stripe", "card", "--customer", &customer]).await;
    let out = cli(&app, &["dev", "stripe", "checkout", "--customer", &customer, "--trial-days", "14"]).await;
    let subscription = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(subscription.starts_with("sub_"), "{subscription}");
    until("the trial mirrored", Duration::from_secs(30), || async {
        let t = tenant(&app, &key, &id).await;
        t["subscription"]["status"] == "trialing" && t["plan"] == "starter"
    })
    .await;

    // A restart of the local Stripe (as restarting `dev.sh up` does) keeps the customer, the
    // subscription and the clock the fleet's database names.
    dev.restart_stripe().await;
    let (app, mail) = (&dev.app, &dev.mail);
    let _ = mail;

    // Past the trial: the first invoice is drafted, finalized an hour later and paid.
    cli(&app, &["dev", "stripe", "advance", "--days", "14"]).await;
    cli(&app, &["dev", "stripe", "advance", "--hours", "1"]).await;
    until("the trial converted and its invoice paid", Duration::from_secs(30), || async {
        let t = tenant(&app, &key, &id).await;
        let paid: i64 = sqlx::query_scalar("SELECT count(*) FROM invoices WHERE customer_id = $1 AND status = 'paid' AND amount_paid > 0")
            .bind(&customer)
            .fetch_one(&app.state.system_pool.0)
            .await
            .unwrap_or(0);
        t["subscription"]["status"] == "active" && t["subscription"]["id"] == subscription.as_str() && paid == 1
    })
    .await;
    let t = tenant(&app, &key, &id).await;
    assert!(t["entitlements"].as_array().is_some_and(|e| e.iter().any(|f| f["feature"] == "api_access" && f["enabled"] == true)), "{t}");

    // A bad command gets a clear refusal, not a crash of the local Stripe.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args(["dev", "stripe", "checkout", "--customer", "cus_nobody"])
        .env_clear()
        .envs(&app.env)
        .output()
        .await
        .expect("run");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no customer"), "{}", String::from_utf8_lossy(&out.stderr));
    // Usage flushed to the local Stripe shows there as meter events, beside Ballast's ledger.
    let (_, usage_key) = app.key(Some(id.parse().expect("uuid")), &[Scope::UsageWrite]).await;
    let items = json!({"items": [{"metric": "api_calls", "quantity": 7, "timestamp": chrono::Utc::now().to_rfc3339(), "idempotency_key": "u1"}]});
    let resp = app.http.post(app.url("/v1/usage")).bearer_auth(&usage_key).json(&items).send().await.expect("usage");
    assert_eq!(resp.status(), StatusCode::OK);
    cli(&app, &["usage", "flush", "--all"]).await;
    let out = cli(&app, &["--json", "dev", "stripe", "meter-events", "--customer", "newcomer-1"]).await;
    let events: Value = serde_json::from_slice(&out.stdout).expect("json");
    let total: i64 = events["meter_events"].as_array().expect("events").iter().map(|e| e["value"].as_i64().unwrap_or(0)).sum();
    assert_eq!(total, 7, "{events}");
    assert!(events["meter_events"].as_array().expect("events").iter().all(|e| e["customer"] == customer.as_str() && e["event_name"] == "api_calls"), "{events}");
    assert!(dev.stripe_running(), "the local Stripe still runs");
}

#[tokio::test]
async fn the_local_stripe_listens_only_on_loopback_unless_told_and_the_mail_catcher_answers_a_bad_command_with_a_5xx() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args(["dev", "stripe", "serve", "--listen", "0.0.0.0:0"])
        .env_clear()
        .envs(&app.env)
        .env("STRIPE_WEBHOOK_SECRET", "whsec_test")
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("not a loopback address") && stderr.contains("--allow-remote"), "{stderr}");

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let catcher = crate::support::smtp::SmtpServer::start().await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", catcher.port)).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    assert!(lines.next_line().await.expect("greeting").is_some_and(|l| l.starts_with("220")));
    for (command, expected) in [("HELO t", "250"), ("MAIL FROM:<a@t.test>", "250"), ("RCPT TO", "501"), ("RCPT TO:", "501"), ("RCPT TO:<b@t.test>", "250"), ("QUIT", "221")] {
        write.write_all(format!("{command}\r\n").as_bytes()).await.expect("write");
        let reply = lines.next_line().await.expect("reply").unwrap_or_default();
        assert!(reply.starts_with(expected), "{command:?} → {reply:?}");
    }
}

#[tokio::test]
async fn a_restarted_mail_catcher_continues_its_numbering_and_overwrites_nothing() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let folder = tempfile::tempdir().expect("tmp");
    std::fs::write(folder.path().join("0003.eml"), "caught before the restart").expect("earlier mail");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let catcher = ballast::devmail::SmtpServer::on(listener, Some(folder.path().to_owned())).expect("catcher");
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", catcher.port)).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    lines.next_line().await.expect("greeting");
    for command in ["HELO t", "MAIL FROM:<a@t.test>", "RCPT TO:<b@t.test>", "DATA", "Subject: hi\r\n\r\nbody\r\n.", "QUIT"] {
        write.write_all(format!("{command}\r\n").as_bytes()).await.expect("write");
        lines.next_line().await.expect("reply");
    }
    catcher.wait_for(1, std::time::Duration::from_secs(10)).await;
    assert_eq!(std::fs::read_to_string(folder.path().join("0003.eml")).expect("kept"), "caught before the restart");
    assert!(std::fs::read_to_string(folder.path().join("0004.eml")).expect("the next number").contains("Subject: hi"));
}
