//! Billing: the plan catalogue and the entitlements derived from the Stripe mirror.

pub mod effects;
pub mod entitlements;
pub mod plans;
pub mod public_plans;
pub mod warm;
