//! Disputes end to end: operators are notified through the SLO alert webhook when a dispute
//! opens and when it closes (once each, however often Stripe delivers), the tenant is
//! restricted while a chargeback is open when policy/dunning.toml says so, and access comes
//! back when it closes. An inquiry notifies but never restricts; the shipped policy notifies
//! only.

use serde_json::Value;

use crate::slo::Receiver;
use crate::support::TestApp;
use crate::support::stripe_sim::lifecycle::DisputeOutcome;
use crate::support::stripe_sim::{STARTER, StripeSim};

/// An app whose operator notices go to a receiver on loopback; `restrict` turns the dispute
/// policy's restriction on (the shipped file with that one line changed).
async fn app_with(sim: &StripeSim, hook: &str, restrict: bool) -> (TestApp, tempfile::NamedTempFile) {
    let shipped = std::fs::read_to_string(crate::support::repo_path("policy/dunning.toml")).expect("dunning.toml");
    assert!(shipped.contains("restrict = false"), "the shipped policy notifies only");
    let policy = tempfile::NamedTempFile::new().expect("policy file");
    std::fs::write(policy.path(), if restrict { shipped.replace("restrict = false", "restrict = true") } else { shipped }).expect("write");
    let app = TestApp::builder()
        .env("STRIPE_API_BASE", &sim.base_url)
        .env("BALLAST_SLO_WEBHOOK_URL", hook)
        .env("BALLAST_DUNNING_FILE", &policy.path().display().to_string())
        .spawn()
        .await;
    (app, policy)
}

async fn deliver(app: &TestApp, events: &[Value]) {
    for e in events {
        assert_eq!(app.deliver(e).await, 200, "{e}");
    }
    app.drain().await;
}

async fn status(app: &TestApp, tenant: uuid::Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM tenants WHERE id = $1").bind(tenant).fetch_one(&app.state.system_pool.0).await.expect("tenant")
}

/// A paying tenant; returns it, and its charge.
async fn paying(app: &TestApp, sim: &StripeSim, name: &str) -> (uuid::Uuid, String) {
    let tenant = app.tenant(name).await;
    let customer = sim.customer(tenant, true);
    sim.checkout(tenant, &customer, STARTER, None);
    deliver(app, &sim.take_events()).await;
    (tenant, sim.charges_of(&customer).pop().expect("a charge"))
}

/// The notices the receiver took: (state, summary) per alert key, in arrival order.
fn notices(receiver: &Receiver, dispute: &str) -> Vec<(String, String)> {
    receiver
        .accepted()
        .into_iter()
        .filter(|(_, body)| body["alert_key"] == format!("dispute:{dispute}").as_str())
        .map(|(_, body)| (body["state"].as_str().unwrap_or_default().to_owned(), body["summary"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

#[tokio::test]
async fn a_chargeback_notifies_operators_restricts_while_open_and_closing_it_restores_access() {
    let (receiver, hook) = Receiver::start(0).await;
    let sim = StripeSim::start().await;
    let (app, _policy) = app_with(&sim, &hook, true).await;
    let (tenant, charge) = paying(&app, &sim, "disputed").await;
    assert_eq!(status(&app, tenant).await, "active");

    let dispute = sim.dispute(&charge, DisputeOutcome::Won);
    let events = sim.take_events();
    let opened = events.iter().position(|e| e["type"] == "charge.dispute.created").expect("created");
    deliver(&app, &events[..=opened]).await;
    deliver(&app, &events[..=opened]).await;
    assert_eq!(status(&app, tenant).await, "restricted", "an open chargeback restricts, as the policy says");
    let sent = notices(&receiver, &dispute);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, "firing");
    assert!(sent[0].1.contains(&dispute) && sent[0].1.contains(&charge) && sent[0].1.contains("fraudulent"), "{sent:?}");

    // The rest, twice over: closed as won; the notice resolves and access comes back.
    deliver(&app, &events).await;
    deliver(&app, &events).await;
    assert_eq!(status(&app, tenant).await, "active", "access restored when the dispute closed");
    let sent = notices(&receiver, &dispute);
    assert_eq!(sent.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), ["firing", "resolved"], "{sent:?}");
    assert!(sent[1].1.contains("won"), "{sent:?}");

    // An inquiry is not a chargeback: operators hear of it, the tenant keeps its access.
    let (other, charge) = paying(&app, &sim, "inquired").await;
    let inquiry = sim.dispute(&charge, DisputeOutcome::InquiryClosed);
    let events = sim.take_events();
    deliver(&app, &events[..1]).await;
    assert_eq!(status(&app, other).await, "active");
    deliver(&app, &events).await;
    assert_eq!(notices(&receiver, &inquiry).iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), ["firing", "resolved"]);
}

#[tokio::test]
async fn under_the_shipped_policy_a_dispute_notifies_without_restricting() {
    let (receiver, hook) = Receiver::start(0).await;
    let sim = StripeSim::start().await;
    let (app, _policy) = app_with(&sim, &hook, false).await;
    let (tenant, charge) = paying(&app, &sim, "disputed").await;
    let dispute = sim.dispute(&charge, DisputeOutcome::Lost);
    let events = sim.take_events();
    deliver(&app, &events[..1]).await;
    assert_eq!(status(&app, tenant).await, "active");
    assert_eq!(notices(&receiver, &dispute).len(), 1);
    deliver(&app, &events).await;
    let sent = notices(&receiver, &dispute);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[1].1.contains("lost"), "{sent:?}");
}
