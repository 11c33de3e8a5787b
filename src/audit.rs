//! The audit log (`audit_log`): who did what, with which parameters, and how it ended. Every
//! operator action and admin job writes one row through this module, in the caller's
//! connection or transaction (so an action and its audit row commit together).

use crate::newtypes::TenantId;

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it was asked.
    Ok,
    /// It failed (the parameters say why).
    Failed,
}

impl Outcome {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
        }
    }
}

/// Writes one audit row.
pub async fn record(
    conn: &mut sqlx::PgConnection,
    tenant: Option<TenantId>,
    actor: &str,
    action: &str,
    params: serde_json::Value,
    outcome: Outcome,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO audit_log (tenant_id, actor, action, params, outcome) VALUES ($1, $2, $3, $4, $5)")
        .bind(tenant.map(|t| t.0))
        .bind(actor)
        .bind(action)
        .bind(params)
        .bind(outcome.as_str())
        .execute(conn)
        .await?;
    Ok(())
}
