//! Billing: the plan catalogue and the entitlements derived from the Stripe mirror.

pub mod effects;
pub mod access;
pub mod bulk;
pub mod bulk_run;
pub mod entitlements;
pub mod grants;
pub mod overrides;
pub mod plans;
pub mod public_plans;
pub mod revenue;
pub mod warm;
