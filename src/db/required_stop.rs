//! Required stops, as GitLab has them: a migration that a member of a release older than some
//! release would break on (a key it conflicts on goes away, a table it writes changes shape)
//! declares that release in a line of its own,
//!
//! ```sql
//! -- required stop: 0.2.0: <why a member before 0.2.0 breaks>
//! ```
//!
//! and `ballast migrate` applies no pending migration while a live member announces an older
//! release (`health::roster`). An upgrade from before the stop goes through it: that release
//! deployed to every member, then this one. The check is the CLI's; this module only reads what
//! the pending migrations require and compares releases.

use semver::Version;
use sqlx::migrate::{Migration, Migrator};

/// The line that declares a stop; the rest of the line is `<release>: <why>`.
const MARKER: &str = "-- required stop:";

/// What a pending migration requires of every running member.
#[derive(Debug, Clone, PartialEq)]
pub struct RequiredStop {
    /// The oldest release every live member must run.
    pub release: Version,
    /// The migration that requires it: `0054 stripe events partitioned`.
    pub migration: String,
    /// Why, as the migration says.
    pub why: String,
}

/// A stop line that does not read `<release>: <why>`.
#[derive(Debug, thiserror::Error)]
#[error("migration {migration}: `{MARKER}` must be followed by `<release>: <why>` ({problem})")]
pub struct BadStop {
    migration: String,
    problem: String,
}

/// The stop `migration` declares, if any.
pub fn declared(migration: &Migration) -> Result<Option<RequiredStop>, BadStop> {
    let name = format!("{:04} {}", migration.version, migration.description);
    let Some(rest) = migration.sql.as_str().lines().find_map(|l| l.trim_start().strip_prefix(MARKER)) else { return Ok(None) };
    let bad = |problem: String| BadStop { migration: name.clone(), problem };
    let (release, why) = rest.split_once(':').ok_or_else(|| bad("no reason given".into()))?;
    let release = Version::parse(release.trim()).map_err(|e| bad(format!("release {:?}: {e}", release.trim())))?;
    let why = why.trim();
    if why.is_empty() {
        return Err(bad("no reason given".into()));
    }
    Ok(Some(RequiredStop { release, migration: name, why: why.to_owned() }))
}

/// The highest stop among the migrations of `migrator` not in `applied` (in order; the first
/// of equal releases).
pub fn highest_pending(migrator: &Migrator, applied: &[i64]) -> Result<Option<RequiredStop>, BadStop> {
    let mut highest: Option<RequiredStop> = None;
    for migration in migrator.iter().filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version)) {
        if let Some(stop) = declared(migration)? {
            if highest.as_ref().is_none_or(|h| stop.release > h.release) {
                highest = Some(stop);
            }
        }
    }
    Ok(highest)
}

/// Whether a member announcing `release` (`0.2.0+3f2a…`) runs a release older than `stop`. One
/// whose release does not read as a version counts as older: nothing shows it is not.
pub fn is_behind(stop: &Version, release: &str) -> bool {
    // semver's order puts a pre-release of the stop before it, and a build (the commit) after
    // the bare version.
    Version::parse(release).map_or(true, |v| v < *stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_before_the_stop_or_unreadable_is_behind_and_its_build_does_not_count() {
        let stop = Version::new(0, 2, 0);
        assert!(is_behind(&stop, "0.1.0+3f2a"));
        assert!(is_behind(&stop, "0.2.0-rc.1+3f2a"));
        assert!(is_behind(&stop, "dev"));
        assert!(!is_behind(&stop, "0.2.0+3f2a"));
        assert!(!is_behind(&stop, "0.2.1"));
        assert!(!is_behind(&stop, "1.0.0+x"));
    }
}
