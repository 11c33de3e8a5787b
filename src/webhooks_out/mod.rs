//! Outbound webhooks: what Ballast sends to the endpoints app services' customers register,
//! signed to the Standard Webhooks specification (https://www.standardwebhooks.com/).
//! `endpoints` are what tenants register; `messages` what they queue (each fanned out to one
//! delivery per subscribed endpoint); `deliver` makes one attempt through `client`, which
//! connects only where `address` allows, signed by `signature`, within the tenant's share of
//! slots and while the endpoint's circuit is closed (`fairness`); `deliveries` keeps the log.

pub mod address;
pub mod client;
pub mod deliver;
pub mod deliveries;
pub mod endpoints;
pub mod fairness;
pub mod job_status;
pub mod messages;
pub mod signature;
