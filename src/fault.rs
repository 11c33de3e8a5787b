//! Named crash points for fault drills. When `BALLAST_FAULT` names a point, the process aborts
//! there — no destructors, no flushing, like `kill -9` — so tests can prove that a crash at
//! that step neither loses nor doubles work. Never set in production.

/// Aborts the process if `BALLAST_FAULT` is `name`.
pub fn point(name: &str) {
    if std::env::var("BALLAST_FAULT").is_ok_and(|v| v == name) {
        eprintln!("ballast: fault point {name} reached; aborting (BALLAST_FAULT)");
        std::process::abort();
    }
}
