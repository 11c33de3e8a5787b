//! v2.core.account.created / updated / closed and v2.core.account[configuration.customer].updated:
//! an Account v2 used as a customer (<https://docs.stripe.com/connect/use-accounts-as-customers>).
//! These are thin events: no object, only a reference, and unversioned. The account's current
//! state is read from Stripe first, outside the transaction (`stripe.refetch`, the path a
//! same-second tie takes), then mirrored as the customer row its objects' `customer_account`
//! names. Being current, the fetched state is applied whatever order the events came in.

use super::context::{Applied, EventCtx, HandlerError};
use super::customer;
use crate::stripe::objects::{CustomerObject, InvoiceSettingsObject};
use crate::stripe_api::ObjectKind;

/// The thin event types about an account that Ballast acts on.
pub(super) const TYPES: [&str; 4] = [
    "v2.core.account.created",
    "v2.core.account.updated",
    "v2.core.account.closed",
    "v2.core.account[configuration.customer].updated",
];

pub(super) async fn changed(ctx: &mut EventCtx<'_>) -> Result<Applied, HandlerError> {
    let id = ctx.event.customer_id().map(str::to_owned).ok_or_else(|| HandlerError::Shape(format!("{} without a related account", ctx.event.event_type)))?;
    let account = match ctx.fetched.take() {
        Some((fetched, account)) if fetched == id => account,
        _ => return Err(HandlerError::NeedsFetch(ObjectKind::Account, id)),
    };
    let closed = account["closed"].as_bool().unwrap_or(false) || ctx.event.event_type == "v2.core.account.closed";
    let c = as_customer(&id, &account);
    customer::mirror(ctx, &c, closed).await?;
    let mut applied = if closed { customer::deleted(ctx, id.clone()).await? } else { Applied::default() };
    // A thin event carries no metadata: the account's own names its tenant.
    let tenant = ctx.tenant.0.to_string();
    if !closed && c.metadata.get("tenant_id") == Some(&tenant) {
        ctx.ensure_customer(&id).await?;
        if ctx.map_customer(&id).await? {
            applied.mapped_customer = Some(id);
        }
    }
    Ok(applied)
}

/// What the mirror keeps of an account as a customer: its contact email, display name,
/// metadata and the customer configuration's default payment method.
fn as_customer(id: &str, account: &serde_json::Value) -> CustomerObject {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    CustomerObject {
        id: id.to_owned(),
        email: text(&account["contact_email"]),
        name: text(&account["display_name"]),
        metadata: account["metadata"]
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
            .unwrap_or_default(),
        deleted: false,
        invoice_settings: Some(InvoiceSettingsObject {
            default_payment_method: text(&account["configuration"]["customer"]["billing"]["default_payment_method"]),
        }),
    }
}
