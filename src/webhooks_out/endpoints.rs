//! The `webhook_endpoints` table: where a tenant's outbound webhooks go. Every query runs in
//! a transaction bound to the tenant (RLS), so a tenant reads and changes its own only.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::address::AddressPolicy;
use crate::keyring::{Keyring, KeyringError};
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
    /// The tenant has as many endpoints as it may.
    #[error("this tenant has {0} webhook endpoints, its limit: delete one first (operators raise the limit per tenant in limits.toml, [tenant_webhooks])")]
    TooMany(u32),
    /// PostgreSQL failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A secret could not be sealed or opened (the keyring).
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

impl From<sqlx::Error> for EndpointError {
    fn from(e: sqlx::Error) -> Self {
        EndpointError::Db(DbError::Sql(e))
    }
}

/// What a tenant registers.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Where to POST (http or https).
    pub url: String,
    /// The event types it wants (`invoice.paid`, …); `*` for every type.
    pub event_types: Vec<String>,
}

/// An endpoint as its tenant sees it (never its secrets, after creation).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

/// The URL as it will be stored and called: parsed and written back, so what the tenant reads
/// is what is delivered to (the parser drops tabs and line breaks; a URL carrying control
/// characters or credentials is refused instead).
fn checked_url(new: &NewEndpoint, policy: &AddressPolicy) -> Result<String, EndpointError> {
    let invalid = |message: &str| Err(EndpointError::Invalid { field: "url", message: message.to_owned() });
    if new.url.chars().any(char::is_control) {
        return invalid("control characters (tab, CR, LF) are not allowed in a URL");
    }
    let url = match reqwest::Url::parse(&new.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && new.url.len() <= 2048 && u.host_str().is_some() => u,
        _ => return invalid("an http or https URL with a host, at most 2048 characters"),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return invalid("credentials in the URL are not allowed; endpoints verify the signature instead");
    }
    // An address written in the URL can be refused now; a name is checked at every delivery,
    // against what it resolves to then.
    // The parser has written any address form (0x7f.1, 2130706433, [::127.0.0.1]) canonically.
    let host = url.host_str().unwrap_or_default();
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>()
        && let Err(refused) = policy.check(host, ip)
    {
        return invalid(&refused.to_string());
    }
    Ok(url.to_string())
}

fn check(new: &NewEndpoint) -> Result<(), EndpointError> {
    let invalid = |field, message: &str| Err(EndpointError::Invalid { field, message: message.to_owned() });
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

/// Registers an endpoint with a fresh signing secret, where `policy` allows, unless the tenant
/// already has `max_endpoints`.
pub async fn create(pool: &TenantPool, tenant: TenantId, new: &NewEndpoint, policy: &AddressPolicy, max_endpoints: u32, keyring: &Keyring) -> Result<WithSecret, EndpointError> {
    let url = checked_url(new, policy)?;
    check(new)?;
    let secret = super::signature::new_secret();
    let id = uuid::Uuid::now_v7();
    let sealed = keyring.seal(&secret, &sealed_row(id))?;
    let mut tx = pool.begin(tenant).await?;
    // Concurrent registrations of one tenant take turns, so the count below cannot be raced past.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('webhook_endpoints:' || $1::text, 0))").bind(tenant.0).execute(&mut *tx).await?;
    let row: Option<Row> = sqlx::query_as(
        "INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, secret) \
         SELECT $1, $2, $3, $4, $5 WHERE (SELECT count(*) FROM webhook_endpoints WHERE deleted_at IS NULL) < $6 \
         RETURNING id, url, event_types, disabled_at, disabled_reason, created_at",
    )
    .bind(id)
    .bind(tenant.0)
    .bind(&url)
    .bind(&new.event_types)
    .bind(&sealed)
    .bind(i64::from(max_endpoints))
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let row = row.ok_or(EndpointError::TooMany(max_endpoints))?;
    Ok(WithSecret { endpoint: endpoint(row), secret, previous_secret_until: None })
}

/// One page of a list: at most the limit asked for, and whether more follow (ask again with
/// `starting_after` the last item's id).
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    /// The items.
    pub data: Vec<T>,
    /// Whether more follow.
    pub has_more: bool,
}

impl<T> Page<T> {
    /// A page from `limit + 1` rows fetched: the extra row only says that more follow.
    pub fn of(mut rows: Vec<T>, limit: i64) -> Self {
        let has_more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        Self { data: rows, has_more }
    }
}

/// The tenant's endpoints, oldest first, `limit` of them after the endpoint `after` (ids are
/// time-ordered UUIDv7s, so the order is the registration order).
pub async fn list(pool: &TenantPool, tenant: TenantId, after: Option<uuid::Uuid>, limit: i64) -> Result<Page<Endpoint>, EndpointError> {
    let mut tx = pool.begin(tenant).await?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, url, event_types, disabled_at, disabled_reason, created_at FROM webhook_endpoints \
         WHERE deleted_at IS NULL AND ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit + 1)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Page::of(rows.into_iter().map(endpoint).collect(), limit))
}

/// One endpoint of the tenant's, and whether it was deleted (its delivery log stays).
pub async fn get(pool: &TenantPool, tenant: TenantId, id: uuid::Uuid) -> Result<Option<(Endpoint, bool)>, EndpointError> {
    let mut tx = pool.begin(tenant).await?;
    let row: Option<(uuid::Uuid, String, Vec<String>, Option<DateTime<Utc>>, Option<String>, DateTime<Utc>, bool)> = sqlx::query_as(
        "SELECT id, url, event_types, disabled_at, disabled_reason, created_at, deleted_at IS NOT NULL FROM webhook_endpoints WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(|r| (endpoint((r.0, r.1, r.2, r.3, r.4, r.5)), r.6)))
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
pub async fn rotate(pool: &TenantPool, tenant: TenantId, id: uuid::Uuid, keyring: &Keyring) -> Result<WithSecret, EndpointError> {
    let secret = super::signature::new_secret();
    let sealed = keyring.seal(&secret, &sealed_row(id))?;
    let until = Utc::now() + ROTATION_OVERLAP;
    let mut tx = pool.begin(tenant).await?;
    let row: Option<Row> = sqlx::query_as(
        "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_until = $3, secret = $2 WHERE id = $1 AND deleted_at IS NULL \
         RETURNING id, url, event_types, disabled_at, disabled_reason, created_at",
    )
    .bind(id)
    .bind(&sealed)
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

/// The tenant of endpoint `id`, across tenants (the operator's `ballast endpoints show`).
/// System pool.
pub async fn tenant_of(pool: &crate::db::SystemPool, id: uuid::Uuid) -> Result<Option<TenantId>, sqlx::Error> {
    let tenant: Option<uuid::Uuid> = sqlx::query_scalar("SELECT tenant_id FROM webhook_endpoints WHERE id = $1").bind(id).fetch_optional(&pool.0).await?;
    Ok(tenant.map(TenantId))
}

/// What a sealed secret of endpoint `id` is bound to: it opens on this row only.
pub fn sealed_row(id: uuid::Uuid) -> String {
    format!("webhook_endpoints:{id}")
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

/// What re-sealing the endpoints' secrets found (and did, with `execute`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Resealed {
    /// Endpoints looked at.
    pub endpoints: u64,
    /// Secrets (current and previous) not sealed under the current key: plain text from
    /// before sealing, or an older key.
    pub to_reseal: u64,
    /// Of those, re-sealed under the current key (0 in a dry run).
    pub resealed: u64,
    /// Secrets that do not open with any key held (listed by endpoint id; left as they are).
    pub unreadable: Vec<uuid::Uuid>,
}

/// Re-seals every endpoint's secrets under the keyring's current key, 500 endpoints per
/// transaction (each row locked while it is rewritten); a dry run only counts. System pool:
/// the key spans tenants. Deleted endpoints too: their secrets are secrets still.
pub async fn reseal_all(pool: &crate::db::SystemPool, keyring: &Keyring, execute: bool) -> Result<Resealed, EndpointError> {
    let mut report = Resealed::default();
    let mut after = uuid::Uuid::nil();
    loop {
        let mut tx = pool.0.begin().await?;
        let rows: Vec<(uuid::Uuid, String, Option<String>)> =
            sqlx::query_as("SELECT id, secret, previous_secret FROM webhook_endpoints WHERE id > $1 ORDER BY id LIMIT 500 FOR UPDATE")
                .bind(after)
                .fetch_all(&mut *tx)
                .await?;
        let Some(last) = rows.last().map(|r| r.0) else { break };
        after = last;
        for (id, secret, previous) in &rows {
            report.endpoints += 1;
            let row = sealed_row(*id);
            let stale: Vec<&String> = std::iter::once(secret).chain(previous.as_ref()).filter(|s| !keyring.is_current(s)).collect();
            if stale.is_empty() {
                continue;
            }
            report.to_reseal += stale.len() as u64;
            let reseal = |stored: &str| keyring.open(stored, &row).and_then(|plain| if keyring.is_current(stored) { Ok(stored.to_owned()) } else { keyring.seal(&plain, &row) });
            let (Ok(new_secret), Ok(new_previous)) = (reseal(secret), previous.as_deref().map(reseal).transpose()) else {
                report.unreadable.push(*id);
                continue;
            };
            if execute {
                sqlx::query("UPDATE webhook_endpoints SET secret = $2, previous_secret = $3 WHERE id = $1").bind(id).bind(&new_secret).bind(&new_previous).execute(&mut *tx).await?;
                report.resealed += stale.len() as u64;
            }
        }
        tx.commit().await?;
    }
    Ok(report)
}
