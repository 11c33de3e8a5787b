//! The claim of an inbox row in its tenant's transaction: the row read, locked and marked
//! processed, the tenant's lock taken, and the tenant's other waiting events joined, in one
//! statement.

use chrono::{DateTime, Utc};

use super::status::InboxStatus;
use crate::newtypes::EventId;

/// What [`claim`] found.
#[derive(Debug)]
pub enum Claim {
    /// Not done before: now marked processed in the caller's transaction, which now holds the
    /// tenant's lock. The event as stored, and the tenant's other waiting events claimed with it.
    Claimed {
        /// The event claimed.
        own: serde_json::Value,
        /// The tenant's other waiting events claimed with it, in no particular order.
        waiting: Vec<serde_json::Value>,
    },
    /// Already done (processed or ignored), left as it was; its status and event.
    Done(InboxStatus, serde_json::Value),
}

/// The claim, one statement: the row (locked, marked processed; a row already done is left as
/// it was), then the tenant's transaction lock, then up to `$2` of the tenant's other waiting
/// events. The row comes before the lock: every claimer takes them in that order and the
/// lock's holder takes other rows with `SKIP LOCKED`, so a claimer waiting for the lock holds
/// nothing the holder waits for. A row already done takes no lock at all (the job that finds
/// its event applied by another's group does not queue behind the tenant's later groups), and
/// is read back by the same statement: its status as of the statement's start, which is the
/// row's now unless the update waited for another claim of it (then a second read is needed).
///
/// `in_month`: the row is also named by its Stripe creation time (`$3`), the inbox's partition
/// key, so its reads and its update reach one month's partition instead of every month's (each
/// month kept adds an index probe, a lock and an executor node to every claim: at sixteen
/// months the id alone cost a fifth more per transaction). The waiting events are found in
/// every month, and each is then updated in its own month (joined on the whole key).
fn claim_sql(in_month: bool) -> String {
    let row = if in_month { "id = $1 AND stripe_created = $3" } else { "id = $1" };
    format!(
        "WITH own AS (
           UPDATE stripe_events SET {mark} WHERE {row} AND status NOT IN ('processed', 'ignored') RETURNING payload
         ), serialised AS (SELECT payload, {lock} FROM own),
         waiting AS (
           UPDATE stripe_events e SET {mark} FROM (SELECT id, stripe_created FROM stripe_events
                 WHERE tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid
                   AND status IN ('received', 'queued') AND last_error IS NULL AND id <> $1
                 ORDER BY tenant_id, stripe_created, id LIMIT $2 FOR UPDATE SKIP LOCKED) AS w
           WHERE e.id = w.id AND e.stripe_created = w.stripe_created AND EXISTS (SELECT 1 FROM serialised)
           RETURNING e.payload
         )
         SELECT 'own', NULL, payload FROM serialised
         UNION ALL SELECT 'waiting', NULL, payload FROM waiting
         UNION ALL SELECT 'unclaimed', status, payload FROM stripe_events WHERE {row} AND NOT EXISTS (SELECT 1 FROM own)",
        lock = crate::db::TENANT_LOCK,
        // `w` has only its key, so `attempts` is the updated row's in both updates.
        mark = "status = 'processed', processed_at = now(), attempts = attempts + 1, last_error = NULL",
    )
}

static CLAIM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| claim_sql(false));
static CLAIM_IN_MONTH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| claim_sql(true));

/// The claim statement's text ($1 the event, $2 how many waiting events may join, and with
/// `in_month` $3 its Stripe creation time): what `tests/api/query_plans.rs` holds to
/// index-bound plans, and to one month's partition when the month is given.
pub fn claim_statement(in_month: bool) -> &'static str {
    if in_month { CLAIM_IN_MONTH.as_str() } else { CLAIM.as_str() }
}

/// Claims row `id` in the caller's tenant transaction (opened with [`TenantPool::begin`], not
/// yet serialised: the claim takes the tenant's lock), with up to `join` of the tenant's other
/// events waiting to be applied (received or queued, oldest event first; row-level security
/// keeps them to the tenant). Those are claimed only once the lock is held, and rows another
/// transaction holds are skipped, not waited for, and so are rows that failed before (one that
/// cannot be applied would roll back every group it joined); their own jobs find them done.
/// One round trip, the marks committing with the apply or rolling back with it (a row found
/// done is read back in it too). `None` when the tenant cannot see the row.
///
/// `created`, the event's Stripe creation time when the job carries it, keeps the claim to the
/// row's month. It is a hint, never a condition: a row not found in that month is claimed by
/// its id alone.
///
/// [`TenantPool::begin`]: crate::db::TenantPool::begin
pub async fn claim(tx: &mut sqlx::PgConnection, id: &EventId, created: Option<DateTime<Utc>>, join: u32) -> Result<Option<Claim>, sqlx::Error> {
    // A concurrent claim of the row waits on its lock, then finds it done when the first
    // commits (and claims it when the first rolls back).
    let mut rows: Vec<(String, Option<String>, serde_json::Value)> = match created {
        Some(created) => sqlx::query_as(CLAIM_IN_MONTH.as_str()).bind(id).bind(i64::from(join)).bind(created).fetch_all(&mut *tx).await?,
        None => Vec::new(),
    };
    if rows.is_empty() {
        rows = sqlx::query_as(CLAIM.as_str()).bind(id).bind(i64::from(join)).fetch_all(&mut *tx).await?;
    }
    let (mut own, mut waiting, mut unclaimed) = (None, Vec::new(), None);
    for (part, status, payload) in rows {
        match part.as_str() {
            "own" => own = Some(payload),
            "waiting" => waiting.push(payload),
            _ => unclaimed = Some((status.and_then(|s| InboxStatus::parse(&s)), payload)),
        }
    }
    if let Some(own) = own {
        return Ok(Some(Claim::Claimed { own, waiting }));
    }
    match unclaimed {
        None => Ok(None),
        Some((Some(status), payload)) if status.is_done() => Ok(Some(Claim::Done(status, payload))),
        // Not done as of the statement's start, yet not claimed: the update waited for a claim
        // that committed meanwhile. Read the row as it is now.
        Some(_) => {
            let now: Option<(String, serde_json::Value)> =
                sqlx::query_as("SELECT status, payload FROM stripe_events WHERE id = $1").bind(id).fetch_optional(tx).await?;
            Ok(now.map(|(s, payload)| Claim::Done(InboxStatus::parse(&s).unwrap_or(InboxStatus::Processed), payload)))
        }
    }
}
