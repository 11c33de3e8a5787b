//! The time the intake's decisions are made at (rate-limit windows, bans, overrides). Tests
//! swap in a manual clock and move it, instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Wall clock, or a manual one that tests advance.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A clock that moves only when told (unix milliseconds).
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A manual clock starting at the current time.
    pub fn manual() -> Self {
        Clock::Manual(Arc::new(AtomicI64::new(chrono::Utc::now().timestamp_millis())))
    }

    /// Now, in unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => chrono::Utc::now().timestamp_millis(),
            Clock::Manual(ms) => ms.load(Ordering::Acquire),
        }
    }

    /// Moves a manual clock forward (no effect on the system clock).
    pub fn advance(&self, by: std::time::Duration) {
        if let Clock::Manual(ms) = self {
            ms.fetch_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX), Ordering::AcqRel);
        }
    }
}
