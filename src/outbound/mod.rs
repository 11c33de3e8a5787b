//! Outbound webhooks: what Ballast sends to the endpoints app services' customers register,
//! signed to the Standard Webhooks specification (https://www.standardwebhooks.com/).
//! This first part is the signing; endpoints and delivery build on it.

pub mod signature;
