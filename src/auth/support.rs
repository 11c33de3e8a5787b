//! Support access, the fleet's form of impersonation: an operator opens a time-limited session
//! as one tenant, with a reason, and gets a token (`bs_…`, stored only as its hash) that reads
//! what the tenant's app reads — entitlements and usage (`auth::SUPPORT_SCOPES`) — and can
//! never write. Every use is
//! audited with the operator's name and the route, so it shows in the tenant's timeline; a
//! session is revocable at once. This module owns `support_sessions`.

use chrono::{DateTime, Utc};

use super::token;
use crate::db::SystemPool;
use crate::newtypes::TenantId;

/// The longest a session may last.
pub const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(8 * 3600);

/// A session as listed (never its token).
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Session {
    /// Id (for revoke).
    pub id: uuid::Uuid,
    /// The tenant it reads as.
    pub tenant_id: uuid::Uuid,
    /// The operator who opened it.
    pub operator: String,
    /// Why.
    pub reason: String,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// When it ends by itself.
    pub expires_at: DateTime<Utc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
}

/// Why a session could not be opened or revoked. Messages are safe to show.
#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    /// The request does not hold together.
    #[error("{0}")]
    Invalid(String),
    /// No such tenant.
    #[error("no tenant {0}")]
    NoTenant(TenantId),
    /// No such open session.
    #[error("no open support session {0}")]
    NoSession(uuid::Uuid),
    /// PostgreSQL.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
}

const COLUMNS: &str = "id, tenant_id, operator, reason, created_at, expires_at, revoked_at, revoked_by";

/// Opens a session as `tenant` for `ttl`, audited as `operator`; the token is returned once.
pub async fn open(pool: &SystemPool, tenant: TenantId, operator: &str, reason: &str, ttl: std::time::Duration) -> Result<(Session, String), SupportError> {
    let reason = reason.trim();
    if reason.len() < 3 || reason.len() > 500 {
        return Err(SupportError::Invalid("a reason of 3 to 500 characters is required (it is kept with the session and in the audit log)".into()));
    }
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(SupportError::Invalid(format!("a session lasts between 1 s and {} h", MAX_TTL.as_secs() / 3600)));
    }
    let expires_at = Utc::now() + chrono::Duration::from_std(ttl).map_err(|e| SupportError::Invalid(e.to_string()))?;
    let (prefix, whole) = token::generate("bs");
    let mut tx = pool.0.begin().await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)").bind(tenant.0).fetch_one(&mut *tx).await?;
    if !exists {
        return Err(SupportError::NoTenant(tenant));
    }
    let session: Session = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO support_sessions (id, tenant_id, operator, reason, token_prefix, token_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    )))
    .bind(uuid::Uuid::new_v4())
    .bind(tenant.0)
    .bind(operator)
    .bind(reason)
    .bind(&prefix)
    .bind(token::hash(&whole))
    .bind(expires_at)
    .fetch_one(&mut *tx)
    .await?;
    let params = serde_json::json!({"session": session.id, "reason": reason, "expires_at": expires_at});
    crate::audit::record(&mut tx, Some(tenant), operator, "support.open", params, crate::audit::Outcome::Ok).await?;
    tx.commit().await?;
    Ok((session, whole))
}

/// Revokes an open session at once, audited as `by`.
pub async fn revoke(pool: &SystemPool, id: uuid::Uuid, by: &str) -> Result<Session, SupportError> {
    let mut tx = pool.0.begin().await?;
    let session: Option<Session> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE support_sessions SET revoked_at = now(), revoked_by = $2 WHERE id = $1 AND revoked_at IS NULL AND expires_at > now() RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(by)
    .fetch_optional(&mut *tx)
    .await?;
    let session = session.ok_or(SupportError::NoSession(id))?;
    crate::audit::record(&mut tx, Some(TenantId(session.tenant_id)), by, "support.revoke", serde_json::json!({"session": id}), crate::audit::Outcome::Ok).await?;
    tx.commit().await?;
    Ok(session)
}

/// Sessions, newest first: a tenant's, or every tenant's; at most `limit`.
pub async fn list(pool: &SystemPool, tenant: Option<TenantId>, limit: i64) -> Result<Vec<Session>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM support_sessions WHERE $1::uuid IS NULL OR tenant_id = $1 ORDER BY created_at DESC LIMIT $2"
    )))
    .bind(tenant.map(|t| t.0))
    .bind(limit)
    .fetch_all(&pool.0)
    .await
}

/// The open session a presented token belongs to; `None` for a malformed, unknown, expired or
/// revoked one.
pub async fn authenticate(pool: &SystemPool, presented: &str) -> Result<Option<(Session, bool)>, sqlx::Error> {
    let Some(prefix) = token::prefix_of("bs", presented) else { return Ok(None) };
    #[derive(sqlx::FromRow)]
    struct Row {
        token_hash: Vec<u8>,
        tenant_closed: bool,
        #[sqlx(flatten)]
        session: Session,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT s.token_hash, t.status = 'closed' AS tenant_closed, s.id, s.tenant_id, s.operator, s.reason, s.created_at, s.expires_at,
                s.revoked_at, s.revoked_by
         FROM support_sessions s JOIN tenants t ON t.id = s.tenant_id
         WHERE s.token_prefix = $1 AND s.revoked_at IS NULL AND s.expires_at > now()",
    )
    .bind(prefix)
    .fetch_optional(&pool.0)
    .await?;
    Ok(row.filter(|r| token::matches(presented, &r.token_hash)).map(|r| (r.session, r.tenant_closed)))
}

/// Records one use of a session: the route it read, as its operator.
pub async fn record_use(pool: &SystemPool, session: &Session, method: &str, route: &str) -> Result<(), sqlx::Error> {
    let mut conn = pool.0.acquire().await?;
    let params = serde_json::json!({"session": session.id, "method": method, "route": route});
    crate::audit::record(&mut conn, Some(TenantId(session.tenant_id)), &session.operator, "support.read", params, crate::audit::Outcome::Ok).await
}
