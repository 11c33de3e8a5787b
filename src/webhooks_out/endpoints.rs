//! The `webhook_endpoints` table: where a tenant's outbound webhooks go. Every query runs in
//! a transaction bound to the tenant (RLS), so a tenant reads and changes its own only.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::{DbError, TenantPool};
use crate::newtypes::TenantId;

/// How long the previous secret keeps signing after a rotation.
pub const ROTATION_OVERLAP: chrono::Duration = chrono::Duration::hours(24);
/// Most event types one endpoint subscribes to.
pub const MAX_EVENT_TYPES: usize = 100;

/// Why an endpoint request was refused.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// A field is wrong; the message says how.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No endpoint of this tenant's with that id.
    #[error("no such endpoint")]
    NotFound,
    /// PostgreSQL failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for EndpointError {
    fn from(e: sqlx::Error) -> Self {
        EndpointError::Db(DbError::Sql(e))
    }
}

/// What a tenant registers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Where to POST (http or https).
    pub url: String,
    /// The event types it wants (`invoice.paid`, …); `*` for every type.
    pub event_types: Vec<String>,
}

/// An endpoint as its tenant sees it (never its secrets, after creation).
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// Its id.
    pub id: uuid::Uuid,
    /// Where to POST.
    pub url: String,
    /// The event types it wants.
    pub event_types: Vec<String>,
    /// Set when deliveries stopped (five days failing); re-enable to resume.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Why.
    pub disabled_reason: Option<String>,
    /// When it registered.
    pub created_at: DateTime<Utc>,
}

/// A new endpoint, or a rotation: with its signing secret, shown this once.
#[derive(Debug, Clone, Serialize)]
pub struct WithSecret {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `whsec_…`: keep it; it is not shown again.
    pub secret: String,
    /// Until when the previous secret also signs (a rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_until: Option<DateTime<Utc>>,
}

fn check(new: &NewEndpoint, allow: &[ipnet::IpNet]) -> Result<(), EndpointError> {
    let invalid = |field, message: &str| Err(EndpointError::Invalid { field, message: message.to_owned() });
    let host = match reqwest::Url::parse(&new.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && new.url.len() <= 2048 && u.host_str().is_some() => u.host_str().unwrap_or_default().to_owned(),
        _ => return invalid("url", "an http or https URL with a host, at most 2048 characters"),
    };
    // An address written in the URL can be refused now; a name is checked at every delivery,
    // against what it resolves to then.
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>()
        && let Err(refused) = super::address::check(&host, ip, allow)
    {
        return invalid("url", &refused.to_string());
    }
    if new.event_types.is_empty() || new.event_types.len() > MAX_EVENT_TYPES {
        return invalid("event_types", "1 to 100 event types, or [\"*\"] for every type");
    }
    let well_formed = |t: &String| !t.is_empty() && t.len() <= 100 && (t == "*" || t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
    if !new.event_types.iter().all(well_formed) {
        return invalid("event_types", "letters, digits, '.', '_' and '-' (e.g. invoice.paid), or \"*\"");
    }
    Ok(())
}

type Row = (uuid::Uuid, String, Vec<String>, Option<DateTime<Utc>>, Option<String>, DateTime<Utc>);

fn endpoint(r: Row) -> Endpoint {
    Endpoint { id: r.0, url: r.1, event_types: r.2, disabled_at: r.3, disabled_reason: r.4, created_at: r.5 }
}

/// Registers an endpoint with a fresh signing secret; `allow` is the operator's allowed ranges.
pub async fn create(pool: &TenantPool, tenant: TenantId, new: &NewEndpoint, allow: &[ipnet::IpNet]) -> Result<WithSecret, EndpointError> {
    check(new, allow)?;
    let secret = super::signature::new_secret();
    let mut tx = pool.begin(tenant).await?;
    let row: Row = sqlx::query_as(
        "INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, secret) VALUES ($1, $2, $3, $4, $5) \
         RETURNING id, url, event_types, disabled_at, disabled_reason, created_at",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(tenant.0)
    .bind(&new.url)
    .bind(&new.event_types)
    .bind(&secret)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(WithSecret { endpoint: endpoint(row), secret, previous_secret_until: None })
}

/// The tenant's endpoints, oldest first.
pub async fn list(pool: &TenantPool, tenant: TenantId) -> Result<Vec<Endpoint>, EndpointError> {
    let mut tx = pool.begin(tenant).await?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, url, event_types, disabled_at, disabled_reason, created_at FROM webhook_endpoints WHERE deleted_at IS NULL ORDER BY created_at",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(endpoint).collect())
}

/// Deletes an endpoint (no more deliveries; its log stays).
pub async fn delete(pool: &TenantPool, tenant: TenantId, id: uuid::Uuid) -> Result<(), EndpointError> {
    let mut tx = pool.begin(tenant).await?;
    let done = sqlx::query("UPDATE webhook_endpoints SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    if done.rows_affected() == 0 {
        return Err(EndpointError::NotFound);
    }
    Ok(())
}

/// A new signing secret; the previous one keeps signing for [`ROTATION_OVERLAP`].
pub async fn rotate(pool: &TenantPool, tenant: TenantId, id: uuid::Uuid) -> Result<WithSecret, EndpointError> {
    let secret = super::signature::new_secret();
    let until = Utc::now() + ROTATION_OVERLAP;
    let mut tx = pool.begin(tenant).await?;
    let row: Option<Row> = sqlx::query_as(
        "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_until = $3, secret = $2 WHERE id = $1 AND deleted_at IS NULL \
         RETURNING id, url, event_types, disabled_at, disabled_reason, created_at",
    )
    .bind(id)
    .bind(&secret)
    .bind(until)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let row = row.ok_or(EndpointError::NotFound)?;
    Ok(WithSecret { endpoint: endpoint(row), secret, previous_secret_until: Some(until) })
}

/// Re-enables a disabled endpoint: deliveries queued from now on go to it, and its failure
/// clock starts again. (Messages it missed are re-sent from its delivery log.)
pub async fn enable(pool: &TenantPool, tenant: TenantId, id: uuid::Uuid) -> Result<Endpoint, EndpointError> {
    let mut tx = pool.begin(tenant).await?;
    let row: Option<Row> = sqlx::query_as(
        "UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL, failing_since = NULL WHERE id = $1 AND deleted_at IS NULL \
         RETURNING id, url, event_types, disabled_at, disabled_reason, created_at",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    row.map(endpoint).ok_or(EndpointError::NotFound)
}

/// The secrets that sign at `now`: the current one, then the previous one until its overlap ends.
pub fn signing_set<'a>(current: &'a str, previous: Option<&'a str>, until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Vec<&'a str> {
    let mut secrets = vec![current];
    if let (Some(p), Some(u)) = (previous, until)
        && u > now
    {
        secrets.push(p);
    }
    secrets
}
