//! Provisioning a tenant, and changing its details, with its Stripe customer kept in step.
//!
//! Creation is three steps, none holding a transaction across the network: the row commits
//! first (keyed by the app's `external_id`), then Stripe creates the customer under an
//! idempotency key derived from that external id, then one transaction binds the customer
//! and queues the welcome email. A crash anywhere leaves the row; a repeat of the request
//! finds it, asks Stripe again with the same key (Stripe answers with the customer it
//! already made, for 24 h) and finishes. Past that, the customer's own `customer.created`
//! event names the tenant in its metadata and binds it.

use serde_json::json;

use super::{Tenant, TenantError, bind_customer, get, insert_or_find, set_details};
use crate::audit::{self, Outcome};
use crate::db::SystemPool;
use crate::newtypes::TenantId;
use crate::email::{self, NewEmail, Template};
use crate::queue::JobQueue;
use crate::stripe_api::{NewCustomer, StripeApi, StripeApiError};

/// What provisioning and changes need.
#[derive(Clone, Copy)]
pub struct Deps<'a> {
    /// Tenants are found before any tenant context exists.
    pub system: &'a SystemPool,
    /// Creates and updates the customer.
    pub stripe: &'a StripeApi,
    /// The welcome email's send job.
    pub queue: &'a JobQueue,
}

const MAX_TEXT: usize = 200;

/// A tenant to create.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// Its name, for people and on the Stripe customer.
    pub name: String,
    /// The app's own id for it: a repeat with the same id returns the same tenant.
    pub external_id: String,
    /// Where billing email goes (also the Stripe customer's email).
    #[serde(default)]
    pub billing_email: Option<String>,
}

/// A change to a tenant's details; absent fields stay as they are.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantChange {
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new billing email.
    #[serde(default)]
    pub billing_email: Option<String>,
}

fn text(field: &'static str, value: &str) -> Result<(), TenantError> {
    let invalid = |message: &str| Err(TenantError::Invalid { field, message: message.to_owned() });
    if value.trim().is_empty() {
        return invalid("must not be empty");
    }
    if value.chars().count() > MAX_TEXT {
        return invalid("must be at most 200 characters");
    }
    if value.trim() != value || value.chars().any(char::is_control) {
        return invalid("must not have control characters or surrounding spaces");
    }
    Ok(())
}

fn email_address(value: &str) -> Result<(), TenantError> {
    value.parse::<lettre::Address>().map(|_| ()).map_err(|e| TenantError::Invalid { field: "billing_email", message: format!("not an email address ({e})") })
}

impl NewTenant {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), TenantError> {
        text("name", &self.name)?;
        text("external_id", &self.external_id)?;
        self.billing_email.as_deref().map_or(Ok(()), email_address)
    }
}

impl TenantChange {
    /// Checks every field given.
    pub fn validate(&self) -> Result<(), TenantError> {
        if self.name.is_none() && self.billing_email.is_none() {
            return Err(TenantError::Invalid { field: "name", message: "give name, billing_email or both".into() });
        }
        self.name.as_deref().map_or(Ok(()), |n| text("name", n))?;
        self.billing_email.as_deref().map_or(Ok(()), email_address)
    }
}

/// A provisioned tenant; `created` is false when the external id already had one.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// The tenant, with its Stripe customer bound.
    pub tenant: Tenant,
    /// Whether this request created it.
    pub created: bool,
    /// The Stripe customer this request bound to the tenant (not one bound before): events
    /// Stripe sent for it before the tenant existed wait in the inbox until the caller
    /// releases them (`stripe::inbox::release_unmatched`; the inbox sweep does if it fails).
    pub newly_bound: Option<String>,
}

/// The Stripe idempotency key of a tenant's customer: the same for every repeat.
pub fn customer_key(external_id: &str) -> String {
    format!("ballast-tenant:{external_id}")
}

/// Creates the tenant (or finds the one with its external id) and its Stripe customer,
/// binds them and queues the welcome email. `actor` is audited.
pub async fn provision(deps: Deps<'_>, new: &NewTenant, actor: &str) -> Result<Provisioned, TenantError> {
    new.validate()?;
    let mut tx = deps.system.0.begin().await?;
    let (tenant, created) = insert_or_find(&mut tx, &new.external_id, &new.name, new.billing_email.as_deref()).await?;
    if created {
        let params = json!({"external_id": new.external_id, "name": new.name, "billing_email": new.billing_email});
        audit::record(&mut tx, Some(tenant.id), actor, "tenants.create", params, Outcome::Ok).await?;
    }
    tx.commit().await?;
    crate::fault::point("tenants.provision.after_insert");

    let customer = match &tenant.stripe_customer_id {
        Some(c) => c.clone(),
        None => {
            let external_id = tenant.external_id.as_deref().unwrap_or(&new.external_id);
            let wanted = NewCustomer { tenant_id: tenant.id.0, name: &tenant.name, email: tenant.billing_email.as_deref() };
            let answer = deps.stripe.create_customer(&wanted, &customer_key(external_id)).await?;
            crate::fault::point("tenants.provision.after_stripe");
            answer["id"].as_str().map(str::to_owned).ok_or_else(|| StripeApiError::Decode("a customer without an id".into()))?
        }
    };

    let mut tx = deps.system.0.begin().await?;
    let bound = bind_customer(&mut tx, tenant.id, &customer).await?;
    let welcome = match &tenant.billing_email {
        Some(to) => {
            let vars = json!({"name": tenant.name, "tenant_id": tenant.id.0, "external_id": tenant.external_id});
            let email = NewEmail { dedup_key: format!("welcome:{}", tenant.id.0), template: Template::Welcome, to: to.clone(), vars };
            email::queue(&mut tx, tenant.id, &email).await?
        }
        None => None,
    };
    tx.commit().await?;
    push_welcome(deps, tenant.id, welcome).await;
    let tenant = get(deps.system, tenant.id).await?.ok_or(TenantError::NotFound)?;
    Ok(Provisioned { tenant, created, newly_bound: bound.then_some(customer) })
}

/// Queues the welcome email's send. A failure is logged: the outbox sweep sends the email.
async fn push_welcome(deps: Deps<'_>, tenant: TenantId, welcome: Option<uuid::Uuid>) {
    if let Some(id) = welcome
        && let Err(e) = email::push(deps.queue, tenant, &[id]).await
    {
        tracing::warn!(message = "Welcome email queued in the outbox; its send job was not (the sweep sends it).", tenant = %tenant, error = %e);
    }
}

/// Changes name and billing email, on the Stripe customer first (a refusal changes nothing),
/// then in the tenant's row. `actor` is audited.
pub async fn change(deps: Deps<'_>, id: TenantId, change: &TenantChange, actor: &str) -> Result<Tenant, TenantError> {
    change.validate()?;
    let tenant = get(deps.system, id).await?.ok_or(TenantError::NotFound)?;
    let name = change.name.clone().unwrap_or_else(|| tenant.name.clone());
    let email = change.billing_email.clone().or_else(|| tenant.billing_email.clone());
    if let Some(customer) = &tenant.stripe_customer_id {
        let key = format!("ballast-tenant-change:{}", uuid::Uuid::new_v4());
        deps.stripe.update_customer(customer, &name, email.as_deref(), &key).await?;
    }
    let mut tx = deps.system.0.begin().await?;
    set_details(&mut tx, id, &name, email.as_deref()).await?;
    let params = json!({"name": change.name, "billing_email": change.billing_email});
    audit::record(&mut tx, Some(id), actor, "tenants.change", params, Outcome::Ok).await?;
    tx.commit().await?;
    get(deps.system, id).await?.ok_or(TenantError::NotFound)
}
