//! What keeps one tenant's receivers from taking the fleet's delivery slots: a cap on the
//! slots one tenant's deliveries hold at once on a member ([`TenantSlots`]), and a circuit per
//! endpoint that keeps timing out ([`Circuits`]): while it is open its deliveries wait without
//! taking a slot or an attempt, and after a cool-off one delivery probes it. Both are a
//! member's own (a fleet of N members lets a tenant hold N times its share): what they bound
//! is the harm on each member, without a round trip per delivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::newtypes::TenantId;

/// The slots each tenant's deliveries hold now on this member.
#[derive(Debug, Clone, Default)]
pub struct TenantSlots {
    held: Arc<Mutex<HashMap<TenantId, u32>>>,
}

/// A slot held by one delivery; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    held: Arc<Mutex<HashMap<TenantId, u32>>>,
    tenant: TenantId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.tenant);
            }
        }
    }
}

impl TenantSlots {
    /// A slot for `tenant`, unless its deliveries already hold `max`.
    pub fn take(&self, tenant: TenantId, max: u32) -> Option<Slot> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let n = held.entry(tenant).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot { held: self.held.clone(), tenant })
    }

    /// The slots `tenant` holds now.
    pub fn held(&self, tenant: TenantId) -> u32 {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).get(&tenant).copied().unwrap_or(0)
    }
}

/// Timeouts in a row that open an endpoint's circuit.
pub const OPEN_AFTER: u32 = 5;
/// The first cool-off; each failed probe doubles it, up to [`MAX_COOL_OFF`].
pub const FIRST_COOL_OFF: Duration = Duration::from_secs(30);
/// The longest cool-off.
pub const MAX_COOL_OFF: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy)]
struct Breaker {
    timeouts: u32,
    open_until: Option<Instant>,
    cool_off: Duration,
    probing: bool,
}

/// What a delivery to an endpoint may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Go ahead.
    Closed,
    /// Go ahead as the one probe of an endpoint whose cool-off ended.
    Probe,
    /// Wait this long; no attempt is made or counted.
    Open(Duration),
}

/// Each endpoint's circuit on this member.
#[derive(Debug, Clone, Default)]
pub struct Circuits {
    breakers: Arc<Mutex<HashMap<uuid::Uuid, Breaker>>>,
}

impl Circuits {
    /// Whether a delivery to `endpoint` may be attempted at `now`.
    pub fn gate(&self, endpoint: uuid::Uuid, now: Instant) -> Gate {
        let mut breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(b) = breakers.get_mut(&endpoint) else { return Gate::Closed };
        match b.open_until {
            None => Gate::Closed,
            Some(until) if now < until => Gate::Open(until - now),
            // Cool-off over: one delivery probes; the others wait for its answer.
            Some(_) if b.probing => Gate::Open(Duration::from_secs(1)),
            Some(_) => {
                b.probing = true;
                Gate::Probe
            }
        }
    }

    /// Records how an attempt to `endpoint` ended: a timeout counts towards opening (or
    /// re-opens a probed circuit for twice as long); anything else the endpoint answered closes it.
    pub fn record(&self, endpoint: uuid::Uuid, timed_out: bool, now: Instant) {
        let mut breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        if !timed_out {
            breakers.remove(&endpoint);
            return;
        }
        let b = breakers.entry(endpoint).or_insert(Breaker { timeouts: 0, open_until: None, cool_off: FIRST_COOL_OFF, probing: false });
        b.timeouts += 1;
        if b.probing {
            b.probing = false;
            b.cool_off = (b.cool_off * 2).min(MAX_COOL_OFF);
            b.open_until = Some(now + b.cool_off);
        } else if b.open_until.is_none() && b.timeouts >= OPEN_AFTER {
            b.open_until = Some(now + b.cool_off);
            tracing::warn!(message = "Webhook endpoint keeps timing out: its deliveries wait without taking slots.", endpoint = %endpoint, cool_off_secs = b.cool_off.as_secs());
        }
    }

    /// Endpoints whose circuit is open now.
    pub fn open(&self, now: Instant) -> usize {
        self.breakers.lock().unwrap_or_else(PoisonError::into_inner).values().filter(|b| b.open_until.is_some_and(|u| now < u)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_holds_at_most_its_share_and_a_dropped_slot_comes_back() {
        let slots = TenantSlots::default();
        let (a, b) = (TenantId(uuid::Uuid::now_v7()), TenantId(uuid::Uuid::now_v7()));
        let held: Vec<Slot> = (0..3).filter_map(|_| slots.take(a, 3)).collect();
        assert_eq!(held.len(), 3);
        assert!(slots.take(a, 3).is_none(), "a fourth slot is refused");
        assert!(slots.take(b, 3).is_some(), "another tenant is not affected");
        drop(held);
        assert_eq!(slots.held(a), 0);
        assert!(slots.take(a, 3).is_some());
    }

    #[test]
    fn timeouts_open_the_circuit_then_one_probe_closes_or_reopens_it_for_longer() {
        let circuits = Circuits::default();
        let e = uuid::Uuid::now_v7();
        let t0 = Instant::now();
        for _ in 0..OPEN_AFTER - 1 {
            circuits.record(e, true, t0);
        }
        assert_eq!(circuits.gate(e, t0), Gate::Closed);
        circuits.record(e, true, t0);
        assert_eq!(circuits.gate(e, t0), Gate::Open(FIRST_COOL_OFF));
        let later = t0 + FIRST_COOL_OFF;
        assert_eq!(circuits.gate(e, later), Gate::Probe);
        assert!(matches!(circuits.gate(e, later), Gate::Open(_)), "one probe at a time");
        circuits.record(e, true, later);
        assert_eq!(circuits.gate(e, later), Gate::Open(FIRST_COOL_OFF * 2), "a failed probe doubles the cool-off");
        let again = later + FIRST_COOL_OFF * 2;
        assert_eq!(circuits.gate(e, again), Gate::Probe);
        circuits.record(e, false, again);
        assert_eq!(circuits.gate(e, again), Gate::Closed, "an answer closes it");
        assert_eq!(circuits.open(again), 0);
    }
}
