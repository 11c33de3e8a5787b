//! Every lifecycle email, end to end: a tenant provisioned through the API, its trial, the
//! renewal that needs 3-D Secure and the customer confirming it, with each event delivered
//! twice. Each email reaches the real SMTP server once per occasion.

use ballast::auth::Scope;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::support::smtp::SmtpServer;
use crate::support::stripe_sim::{STARTER, StripeSim};

/// Delivers what Stripe sent since the last call, twice over (Stripe delivers at least once).
async fn deliver_twice(app: &crate::support::TestApp, sim: &StripeSim) {
    let events = sim.take_events();
    for _ in 0..2 {
        for e in &events {
            assert_eq!(app.deliver(e).await, 200, "{e}");
        }
        app.drain().await;
    }
}

#[tokio::test]
async fn each_lifecycle_email_goes_out_once_from_provisioning_through_a_confirmed_payment() {
    let (sim, smtp) = (StripeSim::start().await, SmtpServer::start().await);
    let app = crate::dunning::app_with(&sim, &smtp).await;
    let (_, key) = app.key(None, &[Scope::TenantsWrite]).await;
    let body = json!({"name": "Hooli", "external_id": "hooli", "billing_email": "billing@hooli.test"});
    let resp = app.http.post(app.url("/v1/tenants")).bearer_auth(&key).json(&body).send().await.expect("provision");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: serde_json::Value = resp.json().await.expect("json");
    let tenant = Uuid::parse_str(created["id"].as_str().expect("id")).expect("uuid");
    let customer = created["stripe_customer_id"].as_str().expect("customer").to_owned();

    // A 14-day trial with a saved card: invoice.upcoming a week before it ends, the trial
    // warning three days before; at its end the bank asks for 3-D Secure, and the customer
    // confirms on the hosted invoice page.
    sim.card_on_customer(&customer);
    sim.checkout(tenant, &customer, STARTER, Some(14));
    deliver_twice(&app, &sim).await;
    sim.advance_days(12);
    deliver_twice(&app, &sim).await;
    sim.require_action(&customer, true);
    sim.advance_days(2);
    sim.advance_hours(1);
    deliver_twice(&app, &sim).await;
    let invoice = sim.open_invoices_of(&customer).pop().expect("the renewal awaits confirmation");
    sim.require_action(&customer, false);
    sim.retry_invoice(&invoice);
    deliver_twice(&app, &sim).await;

    let mail: Vec<String> = smtp.messages().into_iter().filter(|m| m.to.iter().any(|t| t.contains("billing@hooli.test"))).map(|m| m.data).collect();
    let subject = |m: &String| m.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or_default().to_owned();
    let subjects: Vec<String> = mail.iter().map(subject).collect();
    for (what, marker) in [
        ("welcome", "Welcome to your account"),
        ("trial ending", "Your trial ends on"),
        ("upcoming renewal", "Your subscription renews on"),
        ("payment action required", "Please confirm your payment"),
        ("payment failed", "did not go through"),
        ("payment recovered", "went through"),
    ] {
        let n = subjects.iter().filter(|s| s.contains(marker) && !(marker == "went through" && s.contains("did not"))).count();
        assert_eq!(n, 1, "{what}: one email, got {n}: {subjects:?}");
    }
    let confirm = mail.iter().find(|m| subject(m).contains("Please confirm")).expect("confirm email");
    assert!(confirm.contains(&format!("invoice.stripe.com/i/acct_sim/{invoice}")), "the hosted invoice page to confirm on: {confirm}");
}
