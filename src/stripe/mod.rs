//! Stripe: webhook signatures, event parsing, the durable inbox, the API client, and the
//! handlers that apply each event family to the billing mirror.

pub mod apply;
pub mod client;
pub mod event;
pub mod handlers;
pub mod inbox;
pub mod routing;
pub mod signature;
