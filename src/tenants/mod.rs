//! Tenants: the `tenants` table's records as the product provisions them — the app's own id
//! for the tenant (`external_id`, unique, so a repeated request finds the same tenant), its
//! name and billing email, its status and its Stripe customer. Provisioning (the row, then
//! the Stripe customer, then the binding and the welcome email) is in [`provision`]; what a
//! caller sees of a tenant (with its subscription and entitlements) in [`view`].
//!
//! System pool throughout: tenants are the product's records, found by id or external id
//! before any tenant context exists.

pub mod activity;
pub mod cursor;
pub mod customers;
pub mod provision;
pub mod timeline;
pub mod usage_report;
pub mod view;

use chrono::{DateTime, Utc};

use crate::db::SystemPool;
use crate::newtypes::TenantId;
use crate::stripe_api::StripeApiError;

/// A tenant's standing, as `tenants.status` stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Normal.
    Active,
    /// Limited to the restricted plan (dunning, a dispute).
    Restricted,
    /// Closed: its keys are refused.
    Closed,
}

impl TenantStatus {
    /// The stored (and shown) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Restricted => "restricted",
            Self::Closed => "closed",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "restricted" => Some(Self::Restricted),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }
}

/// Why a tenant operation failed. Messages are safe to show to the caller.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// A field is missing or malformed.
    #[error("{field}: {message}")]
    Invalid {
        /// The request field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// No such tenant.
    #[error("no such tenant")]
    NotFound,
    /// Stripe refused or could not be reached; the tenant row is kept and a repeat finishes.
    #[error("{0}")]
    Stripe(#[from] StripeApiError),
    /// The welcome email could not be rendered or queued.
    #[error("email: {0}")]
    Email(#[from] crate::email::EmailError),
    /// The queue (the welcome email's send job) failed after the commit; the sweep sends it.
    #[error("queue: {0}")]
    Queue(#[from] crate::queue::QueueError),
    /// PostgreSQL.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
}

/// One tenant, as stored.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Tenant {
    /// Ballast's id for it.
    pub id: TenantId,
    /// The app's own id for it (unique).
    pub external_id: Option<String>,
    /// Its name.
    pub name: String,
    /// Where billing email goes.
    pub billing_email: Option<String>,
    /// Its standing.
    pub status: TenantStatus,
    /// Its Stripe customer, once bound.
    pub stripe_customer_id: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: uuid::Uuid,
    external_id: Option<String>,
    name: String,
    billing_email: Option<String>,
    status: String,
    stripe_customer_id: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<Row> for Tenant {
    fn from(r: Row) -> Self {
        Tenant {
            id: TenantId(r.id),
            external_id: r.external_id,
            name: r.name,
            billing_email: r.billing_email,
            // The column's CHECK admits only the three; a stranger would be a schema change.
            status: TenantStatus::parse(&r.status).unwrap_or(TenantStatus::Closed),
            stripe_customer_id: r.stripe_customer_id,
            created_at: r.created_at,
        }
    }
}

const COLUMNS: &str = "id, external_id, name, billing_email, status, stripe_customer_id, created_at";

/// The tenant with `id`.
pub async fn get(pool: &SystemPool, id: TenantId) -> Result<Option<Tenant>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM tenants WHERE id = $1")))
        .bind(id.0)
        .fetch_optional(&pool.0)
        .await?;
    Ok(row.map(Tenant::from))
}

/// The tenant the app knows as `external_id`.
pub async fn by_external_id(pool: &SystemPool, external_id: &str) -> Result<Option<Tenant>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM tenants WHERE external_id = $1")))
        .bind(external_id)
        .fetch_optional(&pool.0)
        .await?;
    Ok(row.map(Tenant::from))
}

/// Tenants, oldest first, after `after` (a page's last id), at most `limit`.
pub async fn list(pool: &SystemPool, after: Option<TenantId>, limit: i64) -> Result<Vec<Tenant>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenants
         WHERE $1::uuid IS NULL OR (created_at, id) > (SELECT created_at, id FROM tenants WHERE id = $1)
         ORDER BY created_at, id LIMIT $2"
    )))
    .bind(after.map(|t| t.0))
    .bind(limit)
    .fetch_all(&pool.0)
    .await?;
    Ok(rows.into_iter().map(Tenant::from).collect())
}

/// How many tenants there are (for "N more not shown").
pub async fn count(pool: &SystemPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM tenants").fetch_one(&pool.0).await
}

/// A new tenant's row, or the one already holding `external_id` (`false`: it existed).
async fn insert_or_find(conn: &mut sqlx::PgConnection, external_id: &str, name: &str, billing_email: Option<&str>) -> Result<(Tenant, bool), sqlx::Error> {
    let inserted: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO tenants (id, external_id, name, billing_email) VALUES ($1, $2, $3, $4)
         ON CONFLICT (external_id) DO NOTHING RETURNING {COLUMNS}"
    )))
    .bind(uuid::Uuid::new_v4())
    .bind(external_id)
    .bind(name)
    .bind(billing_email)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = inserted {
        return Ok((row.into(), true));
    }
    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM tenants WHERE external_id = $1")))
        .bind(external_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok((row.into(), false))
}

/// Binds `customer` to the tenant when it has none; true when this bound it. The one place
/// the binding is written: by provisioning, and by a Stripe event whose object names the
/// tenant (in the event's tenant transaction). A customer Stripe deleted (its tombstone is in
/// the mirror) or one the tenant had before never binds again; the binding is kept in the
/// tenant's customer history.
pub async fn bind_customer(conn: &mut sqlx::PgConnection, tenant: TenantId, customer: &str) -> Result<bool, sqlx::Error> {
    let bound: Option<uuid::Uuid> = sqlx::query_scalar(
        "WITH bound AS (
             UPDATE tenants SET stripe_customer_id = $2, updated_at = now()
             WHERE id = $1 AND stripe_customer_id IS NULL
               AND NOT EXISTS (SELECT 1 FROM customers WHERE id = $2 AND deleted)
               AND NOT EXISTS (SELECT 1 FROM tenant_customers WHERE customer_id = $2 AND unbound_at IS NOT NULL)
             RETURNING id
         ), history AS (
             INSERT INTO tenant_customers (customer_id, tenant_id) SELECT $2, id FROM bound ON CONFLICT (customer_id) DO NOTHING
         )
         SELECT id FROM bound",
    )
    .bind(tenant.0)
    .bind(customer)
    .fetch_optional(conn)
    .await?;
    Ok(bound.is_some())
}

/// Gives at most `batch` tenants whose current customer has no history row theirs, as of the
/// tenant's creation; returns how many. Those are tenants bound before migration 0024, whose
/// own backfill ran as the owner role, which row-level security (FORCE) shows no tenant: it
/// copied none. Across tenants: the system pool.
pub async fn fill_missing_bindings(system: &SystemPool, batch: i64) -> Result<u64, sqlx::Error> {
    let filled = sqlx::query(
        "INSERT INTO tenant_customers (customer_id, tenant_id, bound_at)
         SELECT t.stripe_customer_id, t.id, t.created_at FROM tenants t
         WHERE t.stripe_customer_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tenant_customers tc WHERE tc.customer_id = t.stripe_customer_id)
         ORDER BY t.id LIMIT $1
         ON CONFLICT (customer_id) DO NOTHING",
    )
    .bind(batch)
    .execute(&system.0)
    .await?;
    Ok(filled.rows_affected())
}

/// Unbinds `customer`, which Stripe deleted, from the tenant it is current for; true when it
/// was. Its history stays (a late event of it still routes here), and the next customer whose
/// checkout or metadata names the tenant binds.
pub async fn unbind_deleted_customer(conn: &mut sqlx::PgConnection, tenant: TenantId, customer: &str) -> Result<bool, sqlx::Error> {
    let unbound: Option<uuid::Uuid> = sqlx::query_scalar(
        "WITH unbound AS (
             UPDATE tenants SET stripe_customer_id = NULL, updated_at = now() WHERE id = $1 AND stripe_customer_id = $2 RETURNING id
         ), history AS (
             INSERT INTO tenant_customers (customer_id, tenant_id, unbound_at, unbound_reason) VALUES ($2, $1, now(), 'customer_deleted')
             ON CONFLICT (customer_id) DO UPDATE SET unbound_at = COALESCE(tenant_customers.unbound_at, now()), unbound_reason = 'customer_deleted'
         )
         SELECT id FROM unbound",
    )
    .bind(tenant.0)
    .bind(customer)
    .fetch_optional(conn)
    .await?;
    Ok(unbound.is_some())
}

/// A tenant's customers, the current one first, then the past ones, latest first.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CustomerBinding {
    /// `cus_…`
    pub customer_id: String,
    /// When it was bound.
    pub bound_at: DateTime<Utc>,
    /// When it was unbound (Stripe deleted it); absent for the current one.
    pub unbound_at: Option<DateTime<Utc>>,
}

/// Every customer of the tenants, by tenant, in [`CustomerBinding`]'s order. System pool: an
/// operator's and a provisioning service's read.
pub async fn customers_of(system: &SystemPool, tenants: &[TenantId]) -> Result<std::collections::HashMap<TenantId, Vec<CustomerBinding>>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        tenant_id: uuid::Uuid,
        #[sqlx(flatten)]
        binding: CustomerBinding,
    }
    let ids: Vec<uuid::Uuid> = tenants.iter().map(|t| t.0).collect();
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT tenant_id, customer_id, bound_at, unbound_at FROM tenant_customers WHERE tenant_id = ANY ($1)
         ORDER BY tenant_id, unbound_at IS NOT NULL, COALESCE(unbound_at, bound_at) DESC",
    )
    .bind(&ids)
    .fetch_all(&system.0)
    .await?;
    let mut out: std::collections::HashMap<TenantId, Vec<CustomerBinding>> = std::collections::HashMap::new();
    for row in rows {
        out.entry(TenantId(row.tenant_id)).or_default().push(row.binding);
    }
    Ok(out)
}

/// Sets name and billing email.
async fn set_details(conn: &mut sqlx::PgConnection, tenant: TenantId, name: &str, billing_email: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE tenants SET name = $2, billing_email = $3, updated_at = now() WHERE id = $1")
        .bind(tenant.0)
        .bind(name)
        .bind(billing_email)
        .execute(conn)
        .await?;
    Ok(())
}
