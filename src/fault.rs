//! Named crash points for fault drills. When `BALLAST_FAULT` names a point, the process aborts
//! there — no destructors, no flushing, like `kill -9` — so tests can prove that a crash at
//! that step neither loses nor doubles work. `name@N` aborts the N-th time the point is
//! reached (half-way through a loop). Never set in production.

use std::sync::atomic::{AtomicU64, Ordering};

/// Times the named point was reached in this process.
static REACHED: AtomicU64 = AtomicU64::new(0);

/// Aborts the process if `BALLAST_FAULT` is `name` (or `name@N` and this is the N-th reach).
pub fn point(name: &str) {
    let Ok(fault) = std::env::var("BALLAST_FAULT") else { return };
    let (point, nth) = match fault.split_once('@') {
        Some((point, n)) => (point, n.parse::<u64>().unwrap_or(1)),
        None => (fault.as_str(), 1),
    };
    if point != name {
        return;
    }
    if REACHED.fetch_add(1, Ordering::SeqCst) + 1 >= nth {
        eprintln!("ballast: fault point {name} reached; aborting (BALLAST_FAULT)");
        std::process::abort();
    }
}
