//! One round: measure every rule, apply the transitions, push the notifications they recorded.

use super::deps::{Deps, HealthError};
use super::{alerts, measure};

/// Measures every rule and applies the transitions, as of now. Returns every alert's state.
pub async fn evaluate(deps: &Deps) -> Result<Vec<alerts::AlertState>, HealthError> {
    evaluate_at(deps, chrono::Utc::now()).await
}

/// As [`evaluate`], with the transitions dated `now` (how long a condition has held is read
/// against it: tests drive the hold times with it).
pub async fn evaluate_at(deps: &Deps, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<alerts::AlertState>, HealthError> {
    let findings = measure::all(deps).await?;
    let (states, notices) = alerts::apply(&deps.system_pool, &findings, now).await?;
    for id in notices {
        crate::slo::notify::push(&deps.queue, id).await?;
    }
    Ok(states)
}
