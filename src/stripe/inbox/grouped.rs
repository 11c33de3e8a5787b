//! Events this process applied inside another event's transaction (a tenant's waiting events
//! claimed with one job's own): their own jobs, queued at the intake, then end without a
//! PostgreSQL round trip instead of opening a tenant transaction to find the row done.
//!
//! A hint, never the record: an event is recorded only once its group committed and the steps
//! after the commit ran, and processed is final, so a hit is always right. A miss (another
//! member applied it, this process restarted, the entry was evicted) costs what it did before:
//! the claim finds the row done.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use crate::newtypes::EventId;

/// How many events the hint remembers, oldest forgotten first: at 2,000 events/s, most of a
/// minute of grouped events, in about 15 MB at most.
const REMEMBERED: usize = 100_000;

/// Events applied in groups by this process (bounded; see the module's notes).
#[derive(Debug, Default)]
pub struct AppliedInGroups {
    inner: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    ids: HashSet<EventId>,
    order: VecDeque<EventId>,
}

impl AppliedInGroups {
    /// Records `ids`, applied and committed with another event, their after-commit steps done.
    pub fn record(&self, ids: &[EventId]) {
        // A poisoned lock only means another thread panicked mid-insert: the sets stay usable.
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in ids {
            if inner.ids.insert(id.clone()) {
                inner.order.push_back(id.clone());
            }
        }
        while inner.order.len() > REMEMBERED {
            if let Some(old) = inner.order.pop_front() {
                inner.ids.remove(&old);
            }
        }
    }

    /// Whether `id` was applied in a group this process committed.
    pub fn contains(&self, id: &EventId) -> bool {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).ids.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_what_it_recorded_and_forgets_the_oldest_first() {
        let hint = AppliedInGroups::default();
        let ids: Vec<EventId> = (0..=REMEMBERED).map(|k| EventId(format!("evt_{k}"))).collect();
        hint.record(&ids[..2]);
        assert!(hint.contains(&ids[0]) && hint.contains(&ids[1]));
        assert!(!hint.contains(&ids[2]), "not recorded");
        hint.record(&ids[1..]);
        assert!(!hint.contains(&ids[0]), "the oldest is forgotten past the bound");
        assert!(hint.contains(&ids[1]) && hint.contains(&ids[REMEMBERED]));
    }
}
