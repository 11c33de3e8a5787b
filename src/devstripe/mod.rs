//! A Stripe simulator: keeps customers, subscriptions, invoices and charges on a clock its
//! caller advances (like a Stripe test clock), serves the API endpoints Ballast calls, and
//! emits the events Stripe emits for each step, signed exactly as Stripe signs them. The
//! tests deliver those events themselves (in order, duplicated, shuffled or concurrently);
//! `ballast dev stripe` runs the same simulator beside a local fleet. One implementation, held
//! to Stripe's documentation by tests/api/stripe_sim_conformance.rs.
//!
//! Files: `terms` (constants and the settings a caller picks), `state` (the account and the
//! steps every scenario shares), `handle` (the running simulator and what a caller does to
//! it), `schedule` (the test clock), `lifecycle` (what Stripe does when things go wrong), `bank_debit` (payments that
//! settle days later), `accounts` (Accounts v2 as customers, and thin events),
//! `server` (the HTTP API), `subscription_update` (changes to a subscription), `dev` (the local Stripe: deliveries and the `/_dev/` commands).

mod accounts;
mod bank_debit;
mod dev;
mod handle;
pub mod lifecycle;
pub mod schedule;
mod server;
mod snapshot;
mod state;
mod subscription_update;
mod terms;

pub use dev::{DevOptions, DevStripeError};
pub use handle::StripeSim;
pub use server::signature_header;
pub use terms::{API_KEY, DAY, EXTRA_SEATS, PERIOD, PRO, PRO_EUR, SECRET, SSO_ADDON, STARTER, STARTER_YEARLY};
