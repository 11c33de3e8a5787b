//! Accounts v2 used as customers (<https://docs.stripe.com/connect/use-accounts-as-customers>):
//! an account (`acct_…`) with a customer configuration stands where a customer would, so its
//! subscriptions, invoices and payment intents name it as `customer_account` with `customer`
//! null; changes to the account itself arrive as thin events
//! (<https://docs.stripe.com/api/v2/core/accounts/event-types>), carrying only a reference to
//! the account, which is read whole from `GET /v2/core/accounts/{id}`.

use serde_json::{Value, json};

use super::handle::StripeSim;
use super::state::Sim;

impl Sim {
    /// Records a thin event about account `id` (an API v2 event notification), spread over
    /// seconds as every event is.
    pub(super) fn emit_thin(&mut self, event_type: &str, id: &str) {
        let event = self.id("evt");
        let created = chrono::DateTime::from_timestamp(self.clock, 0).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.events.push(json!({
            "id": event, "object": "v2.core.event", "type": event_type, "livemode": false, "created": created, "context": null,
            "reason": null, "related_object": {"id": id, "type": "v2.core.account", "url": format!("/v2/core/accounts/{id}")},
        }));
        let emitted = self.events.last().cloned().unwrap_or_default();
        self.log.push(emitted);
        self.clock += 1;
    }

    /// An object as Stripe renders it: one that names an account as its customer names it as
    /// `customer_account`, with `customer` null.
    pub(super) fn rendered(object: Value) -> Value {
        let mut object = object;
        if let Some(account) = object.get("customer").and_then(|c| c.as_str()).filter(|c| c.starts_with("acct_")).map(str::to_owned) {
            object["customer"] = Value::Null;
            object["customer_account"] = json!(account);
        }
        object
    }

    /// Account `id` as `GET /v2/core/accounts/{id}` answers it.
    pub(super) fn account_json(&self, id: &str) -> Option<Value> {
        let c = self.customers.get(id)?;
        let payment_method = self.cards.contains(id).then(|| format!("pm_{id}"));
        Some(json!({
            "id": id, "object": "v2.core.account", "applied_configurations": ["customer"], "livemode": false,
            "closed": c["deleted"] == true, "contact_email": c["email"], "display_name": c["name"], "metadata": c["metadata"],
            "created": chrono::DateTime::from_timestamp(c["created"].as_i64().unwrap_or(0), 0).unwrap_or_default().to_rfc3339(),
            "configuration": {"customer": {"billing": {"default_payment_method": payment_method}, "capabilities": {}}},
        }))
    }
}

impl StripeSim {
    /// An account for `tenant` used as its customer, with a working card or none: its creation
    /// and customer configuration come as thin events.
    pub fn account_customer(&self, tenant: uuid::Uuid, with_card: bool) -> String {
        self.with(|s| {
            let id = s.id("acct");
            let c = json!({"id": id, "object": "customer", "email": format!("{id}@example.com"), "name": "Account customer",
                "metadata": {"tenant_id": tenant.to_string()}, "created": s.clock, "livemode": false});
            s.customers.insert(id.clone(), c);
            if with_card {
                s.cards.insert(id.clone());
            }
            s.emit_thin("v2.core.account.created", &id);
            s.emit_thin("v2.core.account[configuration.customer].updated", &id);
            id
        })
    }

    /// Changes the account's contact email (a thin `v2.core.account.updated`).
    pub fn update_account_email(&self, account: &str, email: &str) {
        self.with(|s| {
            s.customers.get_mut(account).expect("account")["email"] = json!(email);
            s.emit_thin("v2.core.account.updated", account);
        })
    }

    /// Closes the account: Stripe cancels its subscriptions, then closes it
    /// (`v2.core.account.closed`).
    pub fn close_account(&self, account: &str) {
        self.with(|s| {
            let ids: Vec<String> = s.subs.values().filter(|x| x.customer == account && x.status != "canceled").map(|x| x.id.clone()).collect();
            for id in ids {
                s.end_sub(&id, "cancellation_requested");
                s.emit_sub("customer.subscription.deleted", &id);
            }
            s.customers.get_mut(account).expect("account")["deleted"] = json!(true);
            s.emit_thin("v2.core.account.closed", account);
        })
    }
}
