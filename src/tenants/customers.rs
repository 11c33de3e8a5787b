//! The customer list for operators: every tenant with its plan, subscription status, monthly
//! recurring revenue per currency, dunning state, last API call and created date; filtered by
//! plan, status, dunning state and text; sorted by MRR, last activity or creation (highest or
//! newest first); paged by a cursor on (sort key, id), never OFFSET.
//!
//! This module owns `customer_list`, one row per tenant derived from the billing mirror
//! (`subscriptions`, whose handler stores each one's MRR; `entitlements`, which names the
//! granting plan), dunning's open cases and whether `tenant_activity` has the tenant. The
//! database keeps it: a row trigger on each of those tables refreshes the part of the tenant's
//! row the table decides, when a column the list shows changed (migration 0050,
//! `customer_list_refresh_part`), so every writer, including the release before this one,
//! keeps it true. A page reads it in an index's order and stops after the page and the 1,000
//! rows that `more` counts, whatever the tenant count.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};

use crate::db::SystemPool;

/// What the list is sorted by, highest or newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    /// Monthly recurring revenue (its largest currency's amount).
    #[default]
    Mrr,
    /// The last API call.
    Activity,
    /// When the tenant was created.
    Created,
}

/// Which dunning state to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Dunning {
    /// No open case.
    None,
    /// An open case (restricted or not).
    Open,
    /// An open case that restricts access.
    Restricted,
}

/// The filters; each one given narrows the list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The plan of the subscription that speaks for the tenant.
    pub plan: Option<String>,
    /// That subscription's Stripe status (`active`, `past_due`, `canceled`, …; `none`: no
    /// subscription).
    pub status: Option<String>,
    /// The dunning state.
    pub dunning: Option<Dunning>,
    /// Part of the name, external id or billing email, or the whole tenant id or Stripe
    /// customer id.
    pub text: Option<String>,
}

/// One tenant in the list.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Customer {
    /// Ballast's id.
    pub tenant_id: uuid::Uuid,
    /// Its name.
    pub name: String,
    /// The app's id for it.
    pub external_id: Option<String>,
    /// `active`, `restricted` or `closed`.
    pub tenant_status: String,
    /// Its Stripe customer.
    pub stripe_customer_id: Option<String>,
    /// The plan of the subscription that speaks for it.
    pub plan_id: Option<String>,
    /// That subscription's Stripe status; none without one.
    pub subscription_status: Option<String>,
    /// Monthly recurring revenue per currency, in minor units (active and past-due
    /// subscriptions; trials count once they convert).
    #[sqlx(json)]
    pub mrr: BTreeMap<String, i64>,
    /// `none`, `open` or `restricted`.
    pub dunning: String,
    /// When its oldest open dunning case opened.
    pub dunning_since: Option<DateTime<Utc>>,
    /// Its last API call (written every few seconds; none: never, or not since this was kept).
    pub last_activity_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its sort key (for the cursor).
    #[serde(skip)]
    sort_key: i64,
    /// How many tenants match from this page on (for "N more").
    #[serde(skip)]
    matching: i64,
}

/// One page.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = CustomerPage)]
pub struct Page {
    /// The tenants on it.
    pub customers: Vec<Customer>,
    /// The next page's cursor; none on the last page.
    pub next_cursor: Option<String>,
    /// How many more tenants match after this page, counted up to 1,000.
    pub more: i64,
    /// Whether counting stopped at 1,000: then at least `more` match after this page.
    pub more_counted_to_cap: bool,
}

/// Why a list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The cursor is not one this list gave out (or it was given for another sort).
    #[error("the cursor is not one this list gave out for this sort")]
    BadCursor,
    /// PostgreSQL.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
}

fn encode(sort: Sort, key: i64, id: uuid::Uuid) -> String {
    super::cursor::encode(&(sort, key, id))
}

fn decode(sort: Sort, cursor: &str) -> Result<(i64, uuid::Uuid), ListError> {
    match super::cursor::decode::<(Sort, i64, uuid::Uuid)>(cursor) {
        Some((given, key, id)) if given == sort => Ok((key, id)),
        _ => Err(ListError::BadCursor),
    }
}

/// `%` and `_` taken literally in a LIKE pattern.
fn like_escaped(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// How far past the page `more` counts: an exact count would read every matching tenant, as
/// the whole list did before it had rows of its own (0.7 s a page at 100,000 tenants).
pub const MORE_COUNTED: i64 = 1000;

/// The filters, over the list's row (`l`); the text's through its tenant, looked up only when
/// a text is given. Each statement is planned for its own values, so an unset filter's
/// `$n IS NULL` folds away, and with it any read of `tenants` for the rows only counted.
const FILTERS: &str = "($1::text IS NULL OR l.plan_id = $1 OR l.price_id = $1)
      AND ($2::text IS NULL OR coalesce(l.subscription_status, 'none') = $2)
      AND ($3::text IS NULL OR l.dunning = $3 OR ($3 = 'open' AND l.dunning = 'restricted'))
      AND ($4::text IS NULL OR EXISTS (
          SELECT 1 FROM tenants s WHERE s.id = l.tenant_id
             AND (s.name ILIKE '%' || $4 || '%' OR s.external_id ILIKE '%' || $4 || '%' OR s.billing_email ILIKE '%' || $4 || '%'
                  OR s.id = $10 OR s.stripe_customer_id = $5)))";

/// A cursor's key as the timestamp it was taken from (microseconds since the epoch, exact).
const KEY_AS_TIME: &str = "(timestamptz 'epoch' + $6 * interval '1 microsecond')";

/// What a page shows of each tenant from its list row (`l`).
const COLUMNS: &str = "l.tenant_id, l.plan_id, l.subscription_status, l.mrr, l.dunning, l.dunning_since";

/// The matching tenants from the cursor on, in the sort's order, as far as `more` counts
/// ($9): each an index read in that order, joined row by row, never a pass over every tenant.
fn matching(sort: Sort) -> String {
    match sort {
        Sort::Mrr => format!(
            "SELECT {COLUMNS}, l.mrr_top AS sort_key, NULL::timestamptz AS seen_at FROM customer_list l
             WHERE {FILTERS} AND ($6::bigint IS NULL OR (l.mrr_top, l.tenant_id) < ($6, $7::uuid))
             ORDER BY l.mrr_top DESC, l.tenant_id DESC LIMIT $9"
        ),
        Sort::Created => format!(
            "SELECT {COLUMNS}, (extract(epoch FROM t.created_at) * 1000000)::bigint AS sort_key, NULL::timestamptz AS seen_at
             FROM tenants t JOIN customer_list l ON l.tenant_id = t.id
             WHERE {FILTERS} AND ($6::bigint IS NULL OR (t.created_at, t.id) < ({KEY_AS_TIME}, $7::uuid))
             ORDER BY t.created_at DESC, t.id DESC LIMIT $9"
        ),
        // Those that called the API, latest first, then those that never did (key -1), by id.
        Sort::Activity => format!(
            "SELECT * FROM (
                 (SELECT {COLUMNS}, (extract(epoch FROM a.last_seen_at) * 1000000)::bigint AS sort_key, a.last_seen_at AS seen_at
                  FROM tenant_activity a JOIN customer_list l ON l.tenant_id = a.tenant_id
                  WHERE {FILTERS} AND ($6::bigint IS NULL OR (a.last_seen_at, a.tenant_id) < ({KEY_AS_TIME}, $7::uuid))
                  ORDER BY a.last_seen_at DESC, a.tenant_id DESC LIMIT $9)
                 UNION ALL
                 (SELECT {COLUMNS}, -1 AS sort_key, NULL::timestamptz AS seen_at FROM customer_list l
                  WHERE NOT l.seen AND {FILTERS} AND ($6::bigint IS NULL OR $6 >= 0 OR l.tenant_id < $7::uuid)
                  ORDER BY l.tenant_id DESC LIMIT $9)
             ) either ORDER BY sort_key DESC, tenant_id DESC LIMIT $9"
        ),
    }
}

/// The page: its rows' tenants and last API call (the activity sort has it already) read one
/// by one. (`OFFSET 0` keeps the tenant's read a lookup per row: pulled up into a join, the
/// planner may hash the whole table for fifty rows.)
fn statement_for(sort: Sort) -> String {
    format!(
        "WITH matching AS ({matching})
         SELECT p.tenant_id, t.name, t.external_id, t.status AS tenant_status, t.stripe_customer_id, p.plan_id, p.subscription_status,
                p.mrr, p.dunning, p.dunning_since, t.created_at, p.sort_key,
                coalesce(p.seen_at, (SELECT a.last_seen_at FROM tenant_activity a WHERE a.tenant_id = p.tenant_id)) AS last_activity_at,
                (SELECT count(*) FROM matching) AS matching
         FROM (SELECT * FROM matching ORDER BY sort_key DESC, tenant_id DESC LIMIT $8) p
         CROSS JOIN LATERAL (SELECT * FROM tenants t WHERE t.id = p.tenant_id OFFSET 0) t
         ORDER BY p.sort_key DESC, p.tenant_id DESC",
        matching = matching(sort)
    )
}

/// The page statement of each sort, built once.
fn statement(sort: Sort) -> &'static str {
    static BY_MRR: LazyLock<String> = LazyLock::new(|| statement_for(Sort::Mrr));
    static BY_ACTIVITY: LazyLock<String> = LazyLock::new(|| statement_for(Sort::Activity));
    static BY_CREATED: LazyLock<String> = LazyLock::new(|| statement_for(Sort::Created));
    match sort {
        Sort::Mrr => BY_MRR.as_str(),
        Sort::Activity => BY_ACTIVITY.as_str(),
        Sort::Created => BY_CREATED.as_str(),
    }
}

/// A page statement's parameters, bound in its order.
struct Params<'a> {
    plan: Option<&'a str>,
    status: Option<&'a str>,
    dunning: Option<&'static str>,
    text: Option<&'a str>,
    /// The text as a tenant id, when it is one.
    text_id: Option<uuid::Uuid>,
    after: Option<(i64, uuid::Uuid)>,
    limit: i64,
}

type Bound<'q, O> = sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>;

impl<'a> Params<'a> {
    fn new(filter: &'a Filter, sort: Sort, cursor: Option<&str>, limit: i64) -> Result<Self, ListError> {
        let dunning = filter.dunning.map(|d| match d {
            Dunning::None => "none",
            Dunning::Open => "open",
            Dunning::Restricted => "restricted",
        });
        let text = filter.text.as_deref().map(str::trim).filter(|t| !t.is_empty());
        Ok(Self {
            plan: filter.plan.as_deref(),
            status: filter.status.as_deref(),
            dunning,
            text,
            text_id: text.and_then(|t| uuid::Uuid::parse_str(t).ok()),
            after: cursor.map(|c| decode(sort, c)).transpose()?,
            limit: limit.clamp(1, 500),
        })
    }

    /// Planned for each call's own values (an unnamed statement): a generic plan, blind to
    /// which filters are set, cannot fold the unset ones away and reads the list whole.
    fn bind<O>(&self, query: Bound<'a, O>) -> Bound<'a, O> {
        query
            .persistent(false)
            .bind(self.plan)
            .bind(self.status)
            .bind(self.dunning)
            .bind(self.text.map(like_escaped))
            .bind(self.text)
            .bind(self.after.map(|(k, _)| k))
            .bind(self.after.map(|(_, id)| id))
            .bind(self.limit)
            .bind(self.limit + MORE_COUNTED)
            .bind(self.text_id)
    }
}

/// One page of the list: at most `limit` tenants after `cursor`.
pub async fn page(pool: &SystemPool, filter: &Filter, sort: Sort, cursor: Option<&str>, limit: i64) -> Result<Page, ListError> {
    let params = Params::new(filter, sort, cursor, limit)?;
    let mut tx = pool.begin_planned_per_call().await?;
    let rows: Vec<Customer> = params.bind(sqlx::query_as(statement(sort))).fetch_all(&mut *tx).await?;
    tx.commit().await?;
    let matching = rows.first().map_or(0, |r| r.matching);
    let more = matching - rows.len() as i64;
    let next_cursor = if more > 0 { rows.last().map(|r| encode(sort, r.sort_key, r.tenant_id)) } else { None };
    Ok(Page { customers: rows, next_cursor, more, more_counted_to_cap: matching == params.limit + MORE_COUNTED })
}

/// The plan PostgreSQL runs for that page (`EXPLAIN (FORMAT JSON)`), for the checks that hold
/// it to an index read at volume.
pub async fn explain(pool: &SystemPool, filter: &Filter, sort: Sort, cursor: Option<&str>, limit: i64) -> Result<serde_json::Value, ListError> {
    let params = Params::new(filter, sort, cursor, limit)?;
    let sql = sqlx::AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {}", statement(sort)));
    let mut tx = pool.begin_planned_per_call().await?;
    let (plan,): (serde_json::Value,) = params.bind(sqlx::query_as(sql)).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok(plan)
}

/// Gives at most `batch` tenants without a list row (those from before migration 0050) theirs,
/// computed from their facts; returns how many. Across tenants: the system pool.
pub async fn fill_missing(pool: &SystemPool, batch: i64) -> Result<u64, sqlx::Error> {
    let mut tx = pool.0.begin().await?;
    let missing: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM tenants t WHERE NOT EXISTS (SELECT 1 FROM customer_list l WHERE l.tenant_id = t.id) ORDER BY id LIMIT $1")
            .bind(batch)
            .fetch_all(&mut *tx)
            .await?;
    sqlx::query("SELECT customer_list_refresh($1)").bind(&missing).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(missing.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_for_its_own_sort_only() {
        let id = uuid::Uuid::new_v4();
        let c = encode(Sort::Mrr, 8000, id);
        assert_eq!(decode(Sort::Mrr, &c).expect("ok"), (8000, id));
        assert!(decode(Sort::Activity, &c).is_err());
        assert!(decode(Sort::Mrr, "not a cursor").is_err());
        assert_eq!(like_escaped("50%_off\\"), "50\\%\\_off\\\\");
    }
}
