//! How a case ends besides its own steps: the one transition out of open (or manual review).
//! A case ends when its invoice is paid, voided or marked uncollectible, its customer is
//! deleted, or its subscription ends or is paused by Stripe, whichever holds first in the
//! mirror. The effects' consumer asks after each event that may end one, a case about to be
//! opened is not opened when one already holds (the events arrived out of order), and a run
//! asks before a case's next step.

use sqlx::PgConnection;

use super::case::CaseStatus;

/// What the mirror says about a case's invoice, subscription and customer.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub(super) struct Standing {
    /// The invoice's status.
    pub(super) invoice: Option<String>,
    /// The subscription's status.
    pub(super) subscription: Option<String>,
    /// Stripe deleted the customer.
    pub(super) customer_deleted: bool,
}

/// The end a case has reached, if any: the invoice first (paid is a recovery whatever else
/// happened), then the customer, then the subscription.
pub(super) fn ended_by(s: &Standing) -> Option<CaseStatus> {
    match s.invoice.as_deref() {
        Some("paid") => return Some(CaseStatus::Recovered),
        Some("void" | "uncollectible") => return Some(CaseStatus::WrittenOff),
        _ => {}
    }
    if s.customer_deleted {
        return Some(CaseStatus::CustomerDeleted);
    }
    match s.subscription.as_deref() {
        Some("canceled" | "incomplete_expired") => Some(CaseStatus::SubscriptionEnded),
        Some("paused") => Some(CaseStatus::Paused),
        _ => None,
    }
}

/// The standing of `invoice` (with its subscription and customer) in the tenant's mirror.
pub(super) async fn standing(tx: &mut PgConnection, invoice: &str) -> Result<Standing, sqlx::Error> {
    let found: Option<Standing> = sqlx::query_as(
        "SELECT i.status AS invoice, s.status AS subscription, COALESCE(c.deleted, false) AS customer_deleted
         FROM invoices i LEFT JOIN subscriptions s ON s.id = i.subscription_id LEFT JOIN customers c ON c.id = i.customer_id
         WHERE i.id = $1",
    )
    .bind(invoice)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(found.unwrap_or_default())
}

/// What an effect names that may end cases.
#[derive(Debug, Clone, Copy)]
pub(super) enum Subject<'a> {
    Invoice(&'a str),
    Subscription(&'a str),
    Customer(&'a str),
}

/// Ends the open (or in review) cases of `subject` that have reached an end, lifting their
/// restriction; returns each ended case's invoice and how it ended.
pub(super) async fn close_ended(tx: &mut PgConnection, subject: Subject<'_>) -> Result<Vec<(String, CaseStatus)>, sqlx::Error> {
    let (column, id) = match subject {
        Subject::Invoice(id) => ("invoice_id", id),
        Subject::Subscription(id) => ("subscription_id", id),
        Subject::Customer(id) => ("customer_id", id),
    };
    let invoices: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT invoice_id FROM dunning_cases WHERE {column} = $1 AND status IN ('open', 'manual_review') ORDER BY invoice_id FOR UPDATE"
    )))
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let mut ended = Vec::new();
    for invoice in invoices {
        let Some(status) = ended_by(&standing(tx, &invoice).await?) else { continue };
        sqlx::query(
            "UPDATE dunning_cases SET status = $2, restricted = false, closed_at = now(), updated_at = now()
             WHERE invoice_id = $1 AND status IN ('open', 'manual_review')",
        )
        .bind(&invoice)
        .bind(status.as_str())
        .execute(&mut *tx)
        .await?;
        ended.push((invoice, status));
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(invoice: &str, subscription: &str, customer_deleted: bool) -> Standing {
        Standing { invoice: Some(invoice.into()), subscription: Some(subscription.into()), customer_deleted }
    }

    #[test]
    fn the_first_end_that_holds_decides() {
        assert_eq!(ended_by(&standing("open", "past_due", false)), None);
        assert_eq!(ended_by(&standing("paid", "canceled", true)), Some(CaseStatus::Recovered), "a payment is a recovery whatever else happened");
        assert_eq!(ended_by(&standing("uncollectible", "canceled", false)), Some(CaseStatus::WrittenOff));
        assert_eq!(ended_by(&standing("open", "canceled", true)), Some(CaseStatus::CustomerDeleted));
        assert_eq!(ended_by(&standing("open", "canceled", false)), Some(CaseStatus::SubscriptionEnded));
        assert_eq!(ended_by(&standing("open", "incomplete_expired", false)), Some(CaseStatus::SubscriptionEnded));
        assert_eq!(ended_by(&standing("open", "paused", false)), Some(CaseStatus::Paused));
        assert_eq!(ended_by(&Standing::default()), None, "an invoice the mirror does not hold ends nothing");
    }
}
