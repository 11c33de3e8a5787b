//! The loop every worker and scheduler member runs: each `evaluate_every_secs`, the member
//! that claims the round evaluates the fleet's health (so one member does, whichever is alive,
//! and the alert on a missing scheduler leader does not depend on that leader).

use tokio_util::sync::CancellationToken;

use super::deps::Deps;

/// Runs until `stop`.
pub async fn run(deps: Deps, member: String, stop: CancellationToken) {
    let every = std::time::Duration::from_secs(deps.rules.evaluate_every_secs);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        match super::alerts::claim_round(&deps.system_pool, &member, chrono::Utc::now(), every).await {
            Ok(true) => {
                if let Err(e) = super::evaluate::evaluate(&deps).await {
                    tracing::warn!(message = "Fleet health evaluation failed; the next round retries.", error = %e);
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(message = "Fleet health round not claimed; the next round retries.", error = %e),
        }
    }
}
