//! Outbound webhooks: what Ballast sends to the endpoints app services' customers register,
//! signed to the Standard Webhooks specification (https://www.standardwebhooks.com/).
//! So far: the signing (`signature`), where a delivery may connect (`address`) and the
//! endpoints tenants register (`endpoints`); the delivery job and its log build on them.

pub mod address;
pub mod endpoints;
pub mod signature;
