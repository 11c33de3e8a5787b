//! Operators: the people who run Ballast, each with a role and a token (`bo_…`, stored only as
//! its hash). Viewers read, operators act, admins also manage operators. This module owns
//! `operators`; every change is audited in the transaction that makes it.

use chrono::{DateTime, Utc};

use super::token;
use crate::db::SystemPool;

/// What an operator may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads: lists, timelines, reports, dry runs.
    Viewer,
    /// Acts: executes runbooks and bulk operations, sets overrides, opens support sessions.
    Operator,
    /// Manages operators.
    Admin,
}

impl Role {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses a stored or typed role.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

/// An operator as listed (never the token).
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Operator {
    /// Id.
    pub id: uuid::Uuid,
    /// The name every audit row carries.
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    #[sqlx(try_from = "String")]
    pub role: StoredRole,
    /// The token's public part (`bo_{prefix}_…`).
    pub token_prefix: String,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// Who added it.
    pub created_by: String,
    /// When its token was last replaced.
    pub rotated_at: Option<DateTime<Utc>>,
    /// When it was disabled (its token no longer works).
    pub disabled_at: Option<DateTime<Utc>>,
}

/// A role read from the table (the column's check allows only the three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct StoredRole(pub Role);

impl TryFrom<String> for StoredRole {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Role::parse(&s).map(StoredRole).ok_or_else(|| format!("unknown operator role {s:?}"))
    }
}

/// Why an operator change was refused. Messages are safe to show.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The name is not a short lowercase handle.
    #[error("operator name {0:?}: 1 to 64 of a-z, 0-9, '.', '_', '@', '-', starting with a letter or digit")]
    BadName(String),
    /// The name is taken.
    #[error("an operator named {0:?} exists")]
    Exists(String),
    /// No such operator.
    #[error("no operator named {0:?}")]
    NoOperator(String),
    /// PostgreSQL.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
}

const COLUMNS: &str = "id, name, role, token_prefix, created_at, created_by, rotated_at, disabled_at";

fn valid_name(name: &str) -> bool {
    let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    first_ok && name.len() <= 64 && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._@-".contains(c))
}

/// Adds an operator; the token is returned once.
pub async fn add(pool: &SystemPool, name: &str, role: Role, by: &str) -> Result<(Operator, String), OperatorError> {
    if !valid_name(name) {
        return Err(OperatorError::BadName(name.to_owned()));
    }
    let (prefix, whole) = token::generate("bo");
    let mut tx = pool.0.begin().await?;
    let added: Option<Operator> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO operators (id, name, role, token_prefix, token_hash, created_by) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (name) DO NOTHING RETURNING {COLUMNS}"
    )))
    .bind(uuid::Uuid::new_v4())
    .bind(name)
    .bind(role.as_str())
    .bind(&prefix)
    .bind(token::hash(&whole))
    .bind(by)
    .fetch_optional(&mut *tx)
    .await?;
    let added = added.ok_or_else(|| OperatorError::Exists(name.to_owned()))?;
    crate::audit::record(&mut tx, None, by, "operators.add", serde_json::json!({"operator": name, "role": role.as_str()}), crate::audit::Outcome::Ok).await?;
    tx.commit().await?;
    Ok((added, whole))
}

/// Every operator, by name.
pub async fn list(pool: &SystemPool) -> Result<Vec<Operator>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM operators ORDER BY name"))).fetch_all(&pool.0).await
}

/// Disables an operator: its token stops working at once. Idempotent.
pub async fn disable(pool: &SystemPool, name: &str, by: &str) -> Result<Operator, OperatorError> {
    let mut tx = pool.0.begin().await?;
    let row: Option<Operator> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE operators SET disabled_at = coalesce(disabled_at, now()) WHERE name = $1 RETURNING {COLUMNS}"
    )))
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let row = row.ok_or_else(|| OperatorError::NoOperator(name.to_owned()))?;
    crate::audit::record(&mut tx, None, by, "operators.disable", serde_json::json!({"operator": name}), crate::audit::Outcome::Ok).await?;
    tx.commit().await?;
    Ok(row)
}

/// Replaces an operator's token (the old one stops working at once) and enables it again;
/// the new token is returned once.
pub async fn rotate(pool: &SystemPool, name: &str, by: &str) -> Result<(Operator, String), OperatorError> {
    let (prefix, whole) = token::generate("bo");
    let mut tx = pool.0.begin().await?;
    let row: Option<Operator> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE operators SET token_prefix = $2, token_hash = $3, rotated_at = now(), disabled_at = NULL WHERE name = $1 RETURNING {COLUMNS}"
    )))
    .bind(name)
    .bind(&prefix)
    .bind(token::hash(&whole))
    .fetch_optional(&mut *tx)
    .await?;
    let row = row.ok_or_else(|| OperatorError::NoOperator(name.to_owned()))?;
    crate::audit::record(&mut tx, None, by, "operators.rotate", serde_json::json!({"operator": name}), crate::audit::Outcome::Ok).await?;
    tx.commit().await?;
    Ok((row, whole))
}

/// The operator a presented token belongs to; `None` for a malformed, unknown, replaced or
/// disabled token (one answer for all).
pub async fn authenticate(pool: &SystemPool, presented: &str) -> Result<Option<Operator>, sqlx::Error> {
    let Some(prefix) = token::prefix_of("bo", presented) else { return Ok(None) };
    let row: Option<HashedOperator> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT token_hash, {COLUMNS} FROM operators WHERE token_prefix = $1 AND disabled_at IS NULL")))
            .bind(prefix)
            .fetch_optional(&pool.0)
            .await?;
    Ok(row.filter(|h| token::matches(presented, &h.token_hash)).map(|h| h.operator))
}

#[derive(sqlx::FromRow)]
struct HashedOperator {
    token_hash: Vec<u8>,
    #[sqlx(flatten)]
    operator: Operator,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_ones_before_them_and_names_are_handles() {
        assert!(Role::Admin.allows(Role::Operator) && Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator) && !Role::Operator.allows(Role::Admin));
        assert!(valid_name("ada") && valid_name("ada.lovelace@example.com"));
        assert!(!valid_name("Ada") && !valid_name("") && !valid_name("-x") && !valid_name("a b"));
    }
}
