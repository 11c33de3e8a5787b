//! The fleet's own health: alerts evaluated in the fleet from what Ballast can see of itself —
//! queue age per kind, new dead letters, a missing scheduler leader, dead emails and outbound
//! deliveries, unprocessed Stripe events, overdue maintenance services — with thresholds in a
//! reviewed file (deploy/alerts.toml), each naming its runbook page. Transitions go through
//! the SLO alerts' notifier: one notification when an alert opens, one when it resolves.
//!
//! Files: `rules` (the file), `deps` (what evaluation uses), `measure` (what each rule sees
//! now), `alerts` (the state table and its transitions), `evaluate` (one round), `watch` (the loop every worker and scheduler member runs; one member
//! evaluates each round), `roster` (the members as they announce themselves).

pub mod alerts;
mod deps;
mod evaluate;
pub mod measure;
pub mod probe;
pub mod roster;
pub mod rules;
pub mod watch;

pub use deps::{Deps, HealthError};
pub use evaluate::{evaluate, evaluate_at};
pub use rules::{Rules, RulesError};
