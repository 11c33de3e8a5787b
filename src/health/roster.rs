//! The fleet's members as they announce themselves: each member, whatever its roles, writes its
//! roles, release and start time to one Redis hash every few seconds and removes itself when it
//! stops; a member silent for a minute is gone (a crash), and one silent for a day is pruned.
//! The console's overview lists them. (Worker heartbeats say which workers hold runs; this says
//! what the fleet is made of, api-only members included.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use crate::redis_conn::RedisConn;
use crate::redis_keys::RedisKeys;

/// How often a member announces itself.
const EVERY: Duration = Duration::from_secs(10);
/// A member silent this long is not listed (it crashed or lost Redis).
pub const GONE_AFTER: Duration = Duration::from_secs(60);
/// A member silent this long is removed from the hash.
const FORGOTTEN_AFTER: Duration = Duration::from_secs(86_400);

/// What a member announces.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Announced {
    roles: Vec<String>,
    version: String,
    started_at: i64,
    seen: i64,
}

/// A live member of the fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Its id (host and process).
    pub id: String,
    /// Its roles (`api`, `worker`, `scheduler`).
    pub roles: Vec<String>,
    /// The release it runs.
    pub version: String,
    /// When it started (unix s).
    pub started_at: i64,
    /// Seconds since its last announcement.
    pub seen_secs_ago: i64,
}

async fn announce(redis: &RedisConn, keys: &RedisKeys, member: &str, said: &mut Announced) -> Result<(), redis::RedisError> {
    said.seen = chrono::Utc::now().timestamp();
    let json = serde_json::to_string(said).unwrap_or_default();
    let mut conn = redis.clone();
    conn.hset(keys.fleet_members(), member, json).await
}

/// The oldest release among the fleet's live members, as this member last read them (after each
/// of its announcements): what lets a release send a job a shape the release before would
/// refuse only once no member of that release is left. Unknown until the first read, and then
/// nothing is assumed; a member whose release does not read as a version counts as older than
/// any.
#[derive(Debug, Clone, Default)]
pub struct FleetReleases(Arc<Mutex<Oldest>>);

/// What the last read of the roster found.
#[derive(Debug, Default)]
enum Oldest {
    /// Not read yet.
    #[default]
    Unknown,
    /// A live member's release does not read as a version.
    Unreadable,
    /// The oldest live member's release.
    Release(semver::Version),
}

impl FleetReleases {
    /// Whether every live member runs `release` or later (false while unknown).
    pub fn all_at_least(&self, release: &semver::Version) -> bool {
        matches!(&*self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner), Oldest::Release(oldest) if oldest >= release)
    }

    /// Records the live members' releases (semver's order: a pre-release before its release, a
    /// build, the commit, after the bare version).
    pub fn record(&self, members: &[Member]) {
        let parsed: Option<Vec<semver::Version>> = members.iter().map(|m| semver::Version::parse(&m.version).ok()).collect();
        let oldest = match parsed.map(|all| all.into_iter().min()) {
            None => Oldest::Unreadable,
            Some(Some(oldest)) => Oldest::Release(oldest),
            // No live member at all (this one's announcement not written): nothing is known.
            Some(None) => Oldest::Unknown,
        };
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = oldest;
    }
}

/// Announces `member` with `roles` every few seconds until `stop`, then withdraws it; after
/// each announcement, reads the fleet's releases into `releases`.
pub async fn run(redis: RedisConn, keys: RedisKeys, member: String, roles: Vec<String>, releases: FleetReleases, stop: CancellationToken) {
    let mut said = Announced { roles, version: crate::RELEASE.to_owned(), started_at: chrono::Utc::now().timestamp(), seen: 0 };
    loop {
        if let Err(e) = announce(&redis, &keys, &member, &mut said).await {
            tracing::debug!(message = "Fleet roster not written; retrying.", error = %e);
        }
        match members(&redis, &keys).await {
            Ok(live) => releases.record(&live),
            Err(e) => tracing::debug!(message = "Fleet roster not read; the releases last read stand.", error = %e),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
    let mut conn = redis.clone();
    let withdrawn: Result<(), _> = conn.hdel(keys.fleet_members(), &member).await;
    if let Err(e) = withdrawn {
        tracing::debug!(message = "Fleet roster entry not withdrawn; it lapses.", error = %e);
    }
}

/// The live members, freshest first; entries silent for a day are pruned on the way.
pub async fn members(redis: &RedisConn, keys: &RedisKeys) -> Result<Vec<Member>, redis::RedisError> {
    let mut conn = redis.clone();
    let all: Vec<(String, String)> = conn.hgetall(keys.fleet_members()).await?;
    let now = chrono::Utc::now().timestamp();
    let (mut live, mut forgotten) = (Vec::new(), Vec::new());
    for (id, json) in all {
        let Ok(said) = serde_json::from_str::<Announced>(&json) else {
            forgotten.push(id);
            continue;
        };
        let silent = (now - said.seen).max(0);
        if silent >= FORGOTTEN_AFTER.as_secs() as i64 {
            forgotten.push(id);
        } else if silent < GONE_AFTER.as_secs() as i64 {
            live.push(Member { id, roles: said.roles, version: said.version, started_at: said.started_at, seen_secs_ago: silent });
        }
    }
    if !forgotten.is_empty() {
        let _: Result<(), _> = conn.hdel(keys.fleet_members(), &forgotten).await;
    }
    live.sort_by(|a, b| a.seen_secs_ago.cmp(&b.seen_secs_ago).then_with(|| a.id.cmp(&b.id)));
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(version: &str) -> Member {
        Member { id: format!("m:{version}"), roles: vec!["api".into()], version: version.into(), started_at: 0, seen_secs_ago: 0 }
    }

    #[test]
    fn the_fleet_is_at_a_release_only_once_read_and_only_when_its_oldest_member_is() {
        let since = semver::Version::new(0, 12, 0);
        let releases = FleetReleases::default();
        assert!(!releases.all_at_least(&since), "unknown before the first read");
        releases.record(&[member("0.12.0+3f2a"), member("0.13.1")]);
        assert!(releases.all_at_least(&since));
        releases.record(&[member("0.12.0+3f2a"), member("0.11.0+5d1e")]);
        assert!(!releases.all_at_least(&since), "a member of the release before");
        releases.record(&[member("0.12.0-rc.1+3f2a")]);
        assert!(!releases.all_at_least(&since), "a pre-release comes before its release");
        releases.record(&[member("0.12.0"), member("dev")]);
        assert!(!releases.all_at_least(&since), "an unreadable release counts as older");
        releases.record(&[]);
        assert!(!releases.all_at_least(&since), "no member read: nothing known");
    }
}
