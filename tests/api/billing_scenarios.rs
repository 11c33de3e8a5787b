//! The billing scenarios the end-to-end and permutation tests drive: each runs the simulator
//! through one story of a tenant's subscription, as Stripe would tell it, and returns the
//! customer. The permutation test delivers each one's events in every order.

use uuid::Uuid;

use crate::support::stripe_sim::lifecycle::{DisputeOutcome, GiveUp};
use crate::support::stripe_sim::schedule::{Proration, SmartRetries, TrialEnd};
use crate::support::stripe_sim::{DAY, EXTRA_SEATS, PRO, SSO_ADDON, STARTER, StripeSim};

/// Each scenario drives the simulator for one tenant and returns its customer.
pub(crate) type Scenario = fn(&StripeSim, Uuid) -> String;

pub(crate) fn trial_to_active(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    sim.checkout(t, &c, STARTER, Some(14));
    sim.advance_days(15);
    c
}

pub(crate) fn trial_to_paused(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, false);
    let s = sim.checkout(t, &c, STARTER, Some(14));
    sim.set_trial_end(&s, TrialEnd::Pause);
    sim.advance_days(15);
    c
}

pub(crate) fn decline_then_recovery(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    sim.checkout(t, &c, STARTER, None);
    sim.set_declining(&c, true);
    sim.advance_days(30);
    // The renewal invoice is a draft for an hour, then finalized and charged.
    sim.advance_hours(1);
    sim.set_declining(&c, false);
    for inv in sim.open_invoices_of(&c) {
        sim.retry_invoice(&inv);
    }
    c
}

pub(crate) fn upgrade(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    let s = sim.checkout(t, &c, STARTER, None);
    sim.advance_days(10);
    sim.change_price(&s, PRO, crate::support::stripe_sim::schedule::Proration::AlwaysInvoice);
    c
}

pub(crate) fn downgrade_at_period_end(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    let s = sim.checkout(t, &c, PRO, None);
    sim.downgrade_at_period_end(&s, STARTER);
    sim.advance_days(31);
    c
}

pub(crate) fn flexible_cancel(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    let s = sim.checkout(t, &c, STARTER, None);
    sim.advance_days(3);
    sim.cancel_at(&s, sim.now() + 10 * 86_400);
    sim.advance_days(12);
    c
}

pub(crate) fn stripe_gives_up(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    sim.checkout(t, &c, STARTER, None);
    sim.set_declining(&c, true);
    sim.advance_days(30);
    // The renewal invoice is a draft for an hour, then finalized and charged.
    sim.advance_hours(1);
    for inv in sim.open_invoices_of(&c) {
        sim.give_up(&inv, GiveUp::Cancel);
    }
    c
}

pub(crate) fn sca_then_confirmed(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    sim.checkout(t, &c, PRO, None);
    sim.require_action(&c, true);
    sim.advance_days(30);
    // The renewal invoice is a draft for an hour, then finalized and charged.
    sim.advance_hours(1);
    // The customer confirms on the hosted invoice page.
    sim.require_action(&c, false);
    sim.advance_days(1);
    for inv in sim.open_invoices_of(&c) {
        sim.retry_invoice(&inv);
    }
    c
}

pub(crate) fn disputed(sim: &StripeSim, t: Uuid, outcome: DisputeOutcome) -> String {
    let c = sim.customer(t, true);
    sim.checkout(t, &c, STARTER, None);
    let charge = sim.charges_of(&c).pop().expect("charge");
    // The charge is mirrored by its refund of 1 cent, then disputed.
    sim.refund(&charge, 1);
    sim.dispute(&charge, outcome);
    c
}

pub(crate) fn dispute_lost(sim: &StripeSim, t: Uuid) -> String {
    disputed(sim, t, DisputeOutcome::Lost)
}

pub(crate) fn dispute_won(sim: &StripeSim, t: Uuid) -> String {
    disputed(sim, t, DisputeOutcome::Won)
}

pub(crate) fn metered_item_first(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    let s = sim.checkout(t, &c, PRO, None);
    sim.add_metered_item(&s);
    c
}

pub(crate) fn cancel_immediately(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    let s = sim.checkout(t, &c, STARTER, None);
    sim.advance_days(3);
    sim.cancel(&s, false);
    c
}

pub(crate) fn refund_partial_then_full(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    sim.checkout(t, &c, STARTER, None);
    let charge = sim.charges_of(&c).pop().expect("charge");
    sim.advance_days(1);
    sim.refund(&charge, 500);
    sim.advance_days(1);
    sim.refund(&charge, 1500);
    c
}

pub(crate) fn customer_deletion(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    sim.checkout(t, &c, STARTER, None);
    sim.advance_days(2);
    sim.delete_customer(&c);
    c
}

pub(crate) fn trial_without_card_invoices(sim: &StripeSim, t: Uuid) -> String {
    // Stripe's default (missing_payment_method = create_invoice): active, invoiced, past_due.
    let c = sim.customer(t, false);
    sim.checkout(t, &c, STARTER, Some(14));
    sim.advance_days(15);
    c
}

fn retries_run_out(sim: &StripeSim, t: Uuid, then: GiveUp) -> String {
    let c = sim.customer(t, true);
    sim.smart_retries(&c, SmartRetries { days: vec![3, 5, 7], then });
    sim.checkout(t, &c, STARTER, None);
    sim.set_declining(&c, true);
    // The renewal fails, then Stripe retries on days 3, 8 and 15 and gives up.
    sim.advance_days(46);
    c
}

pub(crate) fn smart_retries_then_cancel(sim: &StripeSim, t: Uuid) -> String {
    retries_run_out(sim, t, GiveUp::Cancel)
}

pub(crate) fn smart_retries_then_unpaid(sim: &StripeSim, t: Uuid) -> String {
    retries_run_out(sim, t, GiveUp::Unpaid)
}

pub(crate) fn smart_retry_recovers(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    sim.smart_retries(&c, SmartRetries { days: vec![3, 5, 7], then: GiveUp::Cancel });
    sim.checkout(t, &c, STARTER, None);
    sim.set_declining(&c, true);
    sim.advance_days(32);
    sim.set_declining(&c, false);
    sim.advance_days(5);
    c
}

pub(crate) fn upgrade_prorated_at_renewal(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    let s = sim.checkout(t, &c, STARTER, None);
    sim.advance_days(10);
    sim.change_price(&s, PRO, Proration::CreateProrations);
    sim.advance_days(21);
    c
}

pub(crate) fn downgrade_credited(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    let s = sim.checkout(t, &c, PRO, None);
    sim.advance_days(10);
    sim.change_price(&s, STARTER, Proration::AlwaysInvoice);
    sim.advance_days(21);
    c
}

pub(crate) fn change_without_proration(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    let s = sim.checkout(t, &c, STARTER, None);
    sim.advance_days(10);
    sim.change_price(&s, PRO, Proration::None);
    c
}

pub(crate) fn inquiry_closed(sim: &StripeSim, t: Uuid) -> String {
    disputed(sim, t, DisputeOutcome::InquiryClosed)
}

pub(crate) fn trial_canceled_without_card(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, false);
    let s = sim.checkout(t, &c, STARTER, Some(7));
    sim.set_trial_end(&s, TrialEnd::Cancel);
    sim.advance_days(8);
    c
}

/// Two units of extra seats listed before the plan's item, single sign-on after it: the plan
/// is found by its price, the add-ons add to it.
pub(crate) fn addons_around_the_plan(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    let s = sim.checkout(t, &c, STARTER, None);
    sim.add_addon(&s, EXTRA_SEATS, 2, true);
    sim.add_addon(&s, SSO_ADDON, 1, false);
    sim.advance_days(31);
    c
}

/// A Starter subscription, then a Pro one that the customer cancels for ten days from now:
/// Pro's grants until then, Starter's after.
pub(crate) fn higher_plan_ending_beside_a_lower_one(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    sim.checkout(t, &c, STARTER, None);
    let pro = sim.checkout(t, &c, PRO, None);
    sim.cancel_at(&pro, sim.now() + 10 * DAY);
    c
}

/// Extra seats bought on a subscription of their own add to the plan of another.
pub(crate) fn addon_on_its_own_subscription(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    sim.checkout(t, &c, STARTER, None);
    sim.checkout(t, &c, EXTRA_SEATS, None);
    c
}

/// A customer whose renewal fails (a dunning case opens), then deleted in the Dashboard; the
/// tenant checks out again as a new customer, which binds: it pays and gets its plan.
pub(crate) fn deleted_then_returning(sim: &StripeSim, t: Uuid) -> String {
    let old = sim.customer(t, true);
    sim.checkout(t, &old, STARTER, None);
    sim.set_declining(&old, true);
    sim.advance_days(30);
    sim.advance_hours(1);
    sim.delete_customer(&old);
    let new = sim.customer(t, true);
    sim.checkout(t, &new, PRO, None);
    new
}

/// Stripe pauses the subscription when its last retry fails (pausing configured, flexible
/// billing mode): the case ends as paused; the customer fixes the card and it resumes.
pub(crate) fn payment_failure_paused_then_resumed(sim: &StripeSim, t: Uuid) -> String {
    let c = retries_run_out(sim, t, GiveUp::Pause);
    let sub = sim.subscriptions_of(&c).pop().expect("subscription");
    sim.set_declining(&c, false);
    sim.resume(&sub);
    c
}

/// Collection paused (`pause_collection`), then resumed: status and access unchanged.
pub(crate) fn collection_paused(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    let s = sim.checkout(t, &c, STARTER, None);
    sim.pause_collection(&s, Some("keep_as_draft"));
    c
}

/// A new subscription whose first payment fails: `incomplete`, then `incomplete_expired`
/// after 23 hours with its invoice voided.
pub(crate) fn first_payment_fails_and_expires(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    sim.set_declining(&c, true);
    sim.checkout(t, &c, STARTER, None);
    sim.advance_days(1);
    c
}

/// A trial the customer cancels in the portal (flexible mode: `cancel_at` = the trial's end).
pub(crate) fn trial_cancelled_in_the_portal(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    let s = sim.checkout(t, &c, STARTER, Some(14));
    sim.cancel_at(&s, sim.now() + 14 * DAY - 60);
    sim.advance_days(15);
    c
}

/// Invoices sent rather than charged (due in 14 days); the renewal's goes unpaid past its due
/// date (overdue), then the customer pays it on the hosted page.
pub(crate) fn sent_invoice_overdue_then_paid(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    let s = sim.checkout(t, &c, STARTER, None);
    sim.send_invoices(&s, 14);
    sim.remind_before_due(&c, 3);
    sim.advance_days(30);
    sim.advance_hours(1);
    sim.advance_days(15);
    for inv in sim.open_invoices_of(&c) {
        sim.retry_invoice(&inv);
    }
    c
}

/// A 100 %-off coupon: a $0 first invoice, paid with no charge; the plan is granted as paid.
pub(crate) fn free_with_a_coupon(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, false);
    sim.checkout_discounted(t, &c, PRO, None, 100);
    c
}

/// The account pauses at the first failed renewal payment: paused, then resumed once paid.
pub(crate) fn paused_at_the_first_failed_renewal(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    sim.pause_on_first_failure(&c);
    let s = sim.checkout(t, &c, STARTER, None);
    sim.set_declining(&c, true);
    sim.advance_days(30);
    sim.advance_hours(1);
    sim.set_declining(&c, false);
    sim.resume(&s);
    c
}

/// A partial refund that fails after it was created.
pub(crate) fn refund_failed(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    sim.checkout(t, &c, STARTER, None);
    let charge = sim.charges_of(&c).pop().expect("charge");
    sim.refund(&charge, 700);
    let refund = sim.refunds_of(&charge).pop().expect("refund");
    sim.fail_refund(&refund);
    c
}

/// A first payment by bank debit: `incomplete` while it processes for four days, then paid
/// and active; the next renewal is debited the same way.
pub(crate) fn bank_debit_settles(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    sim.pay_by_bank_debit(&c, Some((4, true)));
    sim.checkout(t, &c, STARTER, None);
    sim.advance_days(31);
    sim.advance_days(5);
    c
}

/// A first payment by bank debit that fails after processing: the subscription stays
/// `incomplete` and expires 23 hours after the failure.
pub(crate) fn bank_debit_fails(sim: &StripeSim, t: Uuid) -> String {
    let c = sim.customer(t, true);
    sim.pay_by_bank_debit(&c, Some((4, false)));
    sim.checkout(t, &c, STARTER, None);
    sim.advance_days(6);
    c
}

/// An Account v2 used as the customer: its objects name it as `customer_account`, its own
/// changes come as thin events (fetched whole); it subscribes, changes its email, renews.
pub(crate) fn account_as_customer(sim: &StripeSim, t: Uuid) -> String {
    let a = sim.account_customer(t, true);
    sim.checkout(t, &a, STARTER, None);
    sim.update_account_email(&a, "billing@example.com");
    sim.advance_days(31);
    a
}
