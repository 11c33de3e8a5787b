//! The local Stripe's state on disk (`ballast dev stripe serve --state FILE`, which `dev.sh up`
//! sets): written shortly after every change and read at start, so a restart keeps every
//! customer, subscription, invoice and the test clock the fleet's database names. Test knobs
//! (latency, outages, failures to inject) are not kept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::state::{Sim, Sub};
use super::terms::{SmartRetries, TrialEnd};

/// A text that must live as long as the simulator: prices and reasons are `&'static str` in
/// its state (the compiled-in catalogue); one read back from disk is leaked once, at start.
fn forever(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

type Price = (String, String, i64);

fn price_out(p: (&'static str, &'static str, i64)) -> Price {
    (p.0.to_owned(), p.1.to_owned(), p.2)
}

fn price_in(p: Price) -> (&'static str, &'static str, i64) {
    (forever(p.0), forever(p.1), p.2)
}

#[derive(Serialize, Deserialize)]
struct SubOnDisk {
    id: String,
    customer: String,
    tenant: String,
    price: Price,
    status: String,
    period_end: i64,
    trial_end: Option<i64>,
    cancel_at_period_end: bool,
    cancel_at: Option<i64>,
    canceled: Option<(i64, String)>,
    metered_first: bool,
    pending_price: Option<Price>,
    trial_end_behavior: TrialEnd,
    trial_warned: bool,
    upcoming_sent: Option<i64>,
    pending_proration: i64,
    #[serde(default)]
    addons: Vec<super::state::AddonItem>,
    #[serde(default)]
    paused_by: Option<String>,
    #[serde(default)]
    pause_collection: Option<String>,
    #[serde(default)]
    send_invoice_days: Option<i64>,
}

/// What a restart keeps.
#[derive(Serialize, Deserialize)]
pub(super) struct Snapshot {
    clock: i64,
    seq: u64,
    customers: BTreeMap<String, Value>,
    cards: BTreeSet<String>,
    customer_cards: BTreeSet<String>,
    needs_action: BTreeSet<String>,
    declining: BTreeSet<String>,
    subs: BTreeMap<String, SubOnDisk>,
    invoices: BTreeMap<String, Value>,
    charges: BTreeMap<String, Value>,
    disputes: BTreeMap<String, Value>,
    events: Vec<Value>,
    decline_codes: BTreeMap<String, String>,
    calls: Vec<(String, String, i64)>,
    idempotent: BTreeMap<String, (u16, Value)>,
    meter_events: BTreeMap<String, (String, String, i64)>,
    log: Vec<Value>,
    delivered: BTreeSet<String>,
    smart_retries: BTreeMap<String, SmartRetries>,
    drafts: BTreeMap<String, i64>,
    balances: BTreeMap<String, i64>,
    upcoming_days: i64,
    #[serde(default)]
    overdue: BTreeSet<String>,
    #[serde(default)]
    due_reminders: BTreeMap<String, i64>,
    #[serde(default)]
    reminded: BTreeSet<String>,
    #[serde(default)]
    bank_debits: BTreeMap<String, (i64, bool)>,
    #[serde(default)]
    intents: BTreeMap<String, Value>,
    #[serde(default)]
    debits: BTreeMap<String, super::terms::Debit>,
    #[serde(default)]
    debit_sessions: BTreeMap<String, Value>,
    #[serde(default)]
    refunds: BTreeMap<String, Value>,
    #[serde(default)]
    pause_first_failure: BTreeSet<String>,
}

impl Sim {
    /// What changed since the last save, cheaply: the id counter, the clock and the log move
    /// with every change that matters to a restart.
    pub(super) fn version(&self) -> (u64, i64, usize, usize, usize) {
        (self.seq, self.clock, self.log.len(), self.delivered.len(), self.meter_events.len())
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        let subs = self
            .subs
            .iter()
            .map(|(id, s)| {
                let on_disk = SubOnDisk {
                    id: s.id.clone(),
                    customer: s.customer.clone(),
                    tenant: s.tenant.clone(),
                    price: price_out(s.price),
                    status: s.status.clone(),
                    period_end: s.period_end,
                    trial_end: s.trial_end,
                    cancel_at_period_end: s.cancel_at_period_end,
                    cancel_at: s.cancel_at,
                    canceled: s.canceled.map(|(at, why)| (at, why.to_owned())),
                    metered_first: s.metered_first,
                    pending_price: s.pending_price.map(price_out),
                    trial_end_behavior: s.trial_end_behavior,
                    trial_warned: s.trial_warned,
                    upcoming_sent: s.upcoming_sent,
                    pending_proration: s.pending_proration,
                    addons: s.addons.clone(),
                    paused_by: s.paused_by.map(str::to_owned),
                    pause_collection: s.pause_collection.map(str::to_owned),
                    send_invoice_days: s.send_invoice_days,
                };
                (id.clone(), on_disk)
            })
            .collect();
        Snapshot {
            clock: self.clock,
            seq: self.seq,
            customers: self.customers.clone(),
            cards: self.cards.clone(),
            customer_cards: self.customer_cards.clone(),
            needs_action: self.needs_action.clone(),
            declining: self.declining.clone(),
            subs,
            invoices: self.invoices.clone(),
            charges: self.charges.clone(),
            disputes: self.disputes.clone(),
            events: self.events.clone(),
            decline_codes: self.decline_codes.clone(),
            calls: self.calls.clone(),
            idempotent: self.idempotent.iter().map(|(k, (status, v))| (k.clone(), (status.as_u16(), v.clone()))).collect(),
            meter_events: self.meter_events.clone(),
            log: self.log.clone(),
            delivered: self.delivered.clone(),
            smart_retries: self.smart_retries.clone(),
            drafts: self.drafts.clone(),
            balances: self.balances.clone(),
            upcoming_days: self.upcoming_days,
            overdue: self.overdue.clone(),
            due_reminders: self.due_reminders.clone(),
            reminded: self.reminded.clone(),
            bank_debits: self.bank_debits.clone(),
            intents: self.intents.clone(),
            debits: self.debits.clone(),
            debit_sessions: self.debit_sessions.clone(),
            refunds: self.refunds.clone(),
            pause_first_failure: self.pause_first_failure.clone(),
        }
    }

    pub(super) fn restore(&mut self, s: Snapshot) {
        self.clock = s.clock;
        self.seq = s.seq;
        self.customers = s.customers;
        self.cards = s.cards;
        self.customer_cards = s.customer_cards;
        self.needs_action = s.needs_action;
        self.declining = s.declining;
        self.subs = s
            .subs
            .into_iter()
            .map(|(id, d)| {
                let sub = Sub {
                    id: d.id,
                    customer: d.customer,
                    tenant: d.tenant,
                    price: price_in(d.price),
                    status: d.status,
                    period_end: d.period_end,
                    trial_end: d.trial_end,
                    cancel_at_period_end: d.cancel_at_period_end,
                    cancel_at: d.cancel_at,
                    canceled: d.canceled.map(|(at, why)| (at, forever(why))),
                    metered_first: d.metered_first,
                    pending_price: d.pending_price.map(price_in),
                    trial_end_behavior: d.trial_end_behavior,
                    trial_warned: d.trial_warned,
                    upcoming_sent: d.upcoming_sent,
                    pending_proration: d.pending_proration,
                    addons: d.addons,
                    paused_by: d.paused_by.map(forever),
                    pause_collection: d.pause_collection.map(forever),
                    send_invoice_days: d.send_invoice_days,
                };
                (id, sub)
            })
            .collect();
        self.invoices = s.invoices;
        self.charges = s.charges;
        self.disputes = s.disputes;
        // Every event the fleet has not accepted yet is delivered again, in order: one taken
        // for delivery when the last run stopped is among them.
        let _ = s.events;
        self.events = s.log.iter().filter(|e| e["id"].as_str().is_some_and(|id| !s.delivered.contains(id))).cloned().collect();
        self.decline_codes = s.decline_codes;
        self.calls = s.calls;
        self.idempotent = s.idempotent.into_iter().map(|(k, (status, v))| (k, (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), v))).collect();
        self.meter_events = s.meter_events;
        self.log = s.log;
        self.delivered = s.delivered;
        self.smart_retries = s.smart_retries;
        self.drafts = s.drafts;
        self.balances = s.balances;
        self.upcoming_days = s.upcoming_days;
        self.overdue = s.overdue;
        self.due_reminders = s.due_reminders;
        self.reminded = s.reminded;
        self.bank_debits = s.bank_debits;
        self.intents = s.intents;
        self.debits = s.debits;
        self.debit_sessions = s.debit_sessions;
        self.refunds = s.refunds;
        self.pause_first_failure = s.pause_first_failure;
    }
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing it.
    #[error("local Stripe state {0}: {1}")]
    Io(String, std::io::Error),
    /// It does not parse (from another version, or cut short).
    #[error("local Stripe state {0} does not parse ({1}); move it away to start afresh")]
    Parse(String, serde_json::Error),
}

/// The state in `path`, if the file exists.
pub(super) fn load(path: &Path) -> Result<Option<Snapshot>, SnapshotError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| SnapshotError::Parse(path.display().to_string(), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SnapshotError::Io(path.display().to_string(), e)),
    }
}

/// Writes `snapshot` to `path` whole or not at all (a temporary file, then a rename).
pub(super) fn save(path: &Path, snapshot: &Snapshot) -> Result<(), SnapshotError> {
    let shown = || path.display().to_string();
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(snapshot).map_err(|e| SnapshotError::Parse(shown(), e))?;
    std::fs::write(&tmp, bytes).map_err(|e| SnapshotError::Io(shown(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| SnapshotError::Io(shown(), e))
}
