//! Stripe's events: webhook signatures, event parsing and the objects they carry, the durable inbox, routing to tenants,
//! the handlers that apply each event family to the billing mirror, and the apply path the
//! jobs call. The API client is `crate::stripe_api`, below the domains that call Stripe.

pub mod apply;
pub mod event;
pub mod handlers;
pub mod inbox;
pub mod objects;
pub mod routing;
pub mod signature;
