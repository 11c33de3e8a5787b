//! The `console_sessions` table: an operator signed in to the console. The browser holds the
//! cookie `bc_{prefix}_{secret}` (stored only as its hash, like every secret of `token`); the
//! session carries the CSRF token its forms must send back; it ends at its expiry, at sign-out,
//! or when its operator is disabled.

use chrono::{DateTime, Utc};

use super::operators::{Operator, Role};
use super::token;
use crate::db::SystemPool;

/// A live session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The session.
    pub id: uuid::Uuid,
    /// Who.
    pub operator: String,
    /// Their role now (a role changed meanwhile applies at once).
    pub role: Role,
    /// What every form of the session sends back.
    pub csrf: String,
    /// When it ends by itself.
    pub expires_at: DateTime<Utc>,
}

/// Opens a session for `operator` lasting `ttl`: (the cookie's value, the session).
pub async fn open(pool: &SystemPool, operator: &Operator, ttl: std::time::Duration) -> Result<(String, SignedIn), sqlx::Error> {
    let (prefix, secret) = token::generate("bc");
    let (_, csrf) = token::generate("csrf");
    let id = uuid::Uuid::now_v7();
    let expires_at = Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(8));
    let mut tx = pool.0.begin().await?;
    sqlx::query("INSERT INTO console_sessions (id, operator_id, token_prefix, token_hash, csrf, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(id)
        .bind(operator.id)
        .bind(&prefix)
        .bind(token::hash(&secret))
        .bind(&csrf)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
    crate::audit::record(&mut tx, None, &operator.name, "console.sign_in", serde_json::json!({"session": id}), crate::audit::Outcome::Ok).await?;
    tx.commit().await?;
    Ok((secret, SignedIn { id, operator: operator.name.clone(), role: operator.role.0, csrf, expires_at }))
}

/// The live session a cookie names: not expired, not ended, its operator not disabled.
pub async fn find(pool: &SystemPool, cookie: &str) -> Result<Option<SignedIn>, sqlx::Error> {
    let Some(prefix) = token::prefix_of("bc", cookie) else { return Ok(None) };
    let row: Option<(uuid::Uuid, Vec<u8>, String, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT s.id, s.token_hash, o.name, o.role, s.csrf, s.expires_at FROM console_sessions s JOIN operators o ON o.id = s.operator_id
         WHERE s.token_prefix = $1 AND s.ended_at IS NULL AND s.expires_at > now() AND o.disabled_at IS NULL",
    )
    .bind(prefix)
    .fetch_optional(&pool.0)
    .await?;
    Ok(row.filter(|r| token::matches(cookie, &r.1)).and_then(|r| {
        let role = Role::parse(&r.3)?;
        Some(SignedIn { id: r.0, operator: r.2, role, csrf: r.4, expires_at: r.5 })
    }))
}

/// Ends a session (sign-out), audited.
pub async fn end(pool: &SystemPool, session: &SignedIn) -> Result<(), sqlx::Error> {
    let mut tx = pool.0.begin().await?;
    sqlx::query("UPDATE console_sessions SET ended_at = now() WHERE id = $1 AND ended_at IS NULL").bind(session.id).execute(&mut *tx).await?;
    crate::audit::record(&mut tx, None, &session.operator, "console.sign_out", serde_json::json!({"session": session.id}), crate::audit::Outcome::Ok).await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes sessions that ended or expired more than a day ago.
pub async fn prune(pool: &SystemPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM console_sessions WHERE coalesce(ended_at, expires_at) < now() - interval '1 day'").execute(&pool.0).await?;
    Ok(done.rows_affected())
}
