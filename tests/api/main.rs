//! Integration tests: one binary, real PostgreSQL and Redis started by deploy/dev.sh.
//! Each test gets its own database (cloned from a migrated template, dropped afterwards)
//! and its own Redis namespace, so tests run in parallel.

mod support;

mod backups;
mod cache;
mod customers;
mod cli_conventions;
mod config_errors;
mod deploy_files;
mod dev_stripe;
mod drills;
mod disputes;
mod docs;
mod dunning;
mod error_reports;
mod fleet_alerts;
mod health;
mod import_cycles;
mod intake_drills;
mod intake_hardening;
mod intake_security;
mod job_status;
mod jobs;
mod lifecycle_emails;
mod loadtest;
mod maintenance;
mod migrations;
mod observability;
mod outage_drills;
mod quickstart;
mod rls;
mod rolling_restart_drills;
mod runbooks;
mod scheduler;
mod slo;
mod schema;
mod slow_stripe_drill;
mod stripe_shapes;
mod stripe_sim_conformance;
mod tenants;
mod usage;
mod webhook_delivery;
mod webhook_endpoints;
mod operators;
mod outbound_bounds;
mod webhook_groups;
mod webhooks;
mod admin_api;
mod app_email;
mod arbitrary_input;
mod billing;
mod billing_customers;
mod billing_lifecycle;
mod billing_scenarios;
mod burst_drill;
