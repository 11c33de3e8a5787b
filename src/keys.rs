//! The one registry of Redis keys. Code builds keys only through [`Keys`]; each method's doc
//! says what the key holds and how long it lives.
//!
//! apalis-redis owns the queue keys under `{ns}.{queue}:*` (`:active` list, `:scheduled`
//! zset, `:data` hash, `:meta:{task}` hashes, `:done` set, `:inflight:{worker}` sets,
//! `:workers` zset, `:idempotency:{key}`); [`Keys::queue`] names the queue they hang from.

use std::time::Duration;

/// Builds every Redis key from the deployment's namespace.
#[derive(Debug, Clone)]
pub struct Keys {
    ns: String,
}

impl Keys {
    /// Keys under `namespace` (validated by config: no ':' or '.').
    pub fn new(namespace: &str) -> Self {
        Self { ns: namespace.to_owned() }
    }

    /// The namespace itself.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// apalis queue name for a job queue: `{ns}.{queue}`. No ':' (apalis-redis splits its
    /// pub/sub channel names on ':').
    pub fn queue(&self, queue: &str) -> String {
        format!("{}.{}", self.ns, queue)
    }

    /// Pub/sub pattern on which apalis-redis announces new work for any queue of ours.
    pub fn queue_available_pattern(&self) -> String {
        format!("tasks:{}.*:available", self.ns)
    }

    /// Pub/sub channel that wakes the workers of one apalis queue (apalis-redis's own name).
    pub fn queue_available_channel(apalis_queue: &str) -> String {
        format!("tasks:{apalis_queue}:active:available")
    }

    /// String: member id of the scheduler leader. TTL: the lease, renewed by the leader.
    pub fn scheduler_leader(&self) -> String {
        format!("{}:scheduler:leader", self.ns)
    }

    /// String: the last scheduled instant (unix ms) enqueued for a cron kind. TTL: 30 days,
    /// refreshed by every tick; a kind that stops ticking forgets its place after that.
    pub fn scheduler_last_tick(&self, kind: &str) -> String {
        format!("{}:scheduler:last:{}", self.ns, kind)
    }

    /// JSON: a tenant's entitlements, shape version 1. Deleted after every commit that changes
    /// them (the cache layer adds its TTL).
    pub fn tenant_entitlements(&self, tenant: crate::domain::TenantId) -> String {
        format!("{}:ent:v1:{}", self.ns, tenant)
    }

    /// Sorted set: the sliding-window log of one rate-limit policy and subject (one member per
    /// admitted request, scored by its time in ms). TTL: the window, refreshed on admit.
    pub fn ratelimit_window(&self, policy: &str, subject: &str) -> String {
        format!("{}:rl:win:{}:{}", self.ns, policy, subject)
    }

    /// String `allow:{until_ms}` or `limit:{n}:{until_ms}`: a temporary override of one
    /// policy for one subject. TTL: the override's length (its end is also in the value).
    pub fn ratelimit_override(&self, policy: &str, subject: &str) -> String {
        format!("{}:rl:ovr:{}:{}", self.ns, policy, subject)
    }

    /// Pattern of every override key (for listing with SCAN).
    pub fn ratelimit_override_pattern(&self) -> String {
        format!("{}:rl:ovr:*", self.ns)
    }

    /// String: unix ms until which a client IP is banned for failed credentials. TTL: the ban.
    pub fn ratelimit_ban(&self, ip: &str) -> String {
        format!("{}:rl:ban:{}", self.ns, ip)
    }

    /// Sorted set: a client IP's recent failed credential checks. TTL: the failure window.
    pub fn ratelimit_failures(&self, ip: &str) -> String {
        format!("{}:rl:fail:{}", self.ns, ip)
    }

    /// Hash `policy|subject` → blocks in one minute (unix minute). TTL: 2 days.
    pub fn ratelimit_blocks(&self, minute: i64) -> String {
        format!("{}:rl:blocks:{}", self.ns, minute)
    }

    /// String: a usage item's idempotency key was counted. TTL: [`Keys::USAGE_DEDUP_TTL`].
    pub fn usage_dedup(&self, tenant: crate::domain::TenantId, idempotency_key: &str) -> String {
        format!("{}:usage:dedup:{}:{}", self.ns, tenant, idempotency_key)
    }

    /// Hash `{tenant}|{metric}|{usage unix minute}` → units that arrived in one minute (the
    /// flush window). No TTL: the flush deletes it after the ledger commit.
    pub fn usage_window(&self, arrival_minute: i64) -> String {
        format!("{}:usage:win:{}", self.ns, arrival_minute)
    }

    /// Hash: a window's counts moved aside by a flush (`flush_id` names it) so late writes
    /// start a fresh window. No TTL: deleted once the ledger commit is done.
    pub fn usage_claimed(&self, flush_id: &str) -> String {
        format!("{}:usage:claimed:{}", self.ns, flush_id)
    }

    /// Set of flush ids claimed and not yet finished (a crash leaves them here). No TTL.
    pub fn usage_claims(&self) -> String {
        format!("{}:usage:claims", self.ns)
    }

    /// Sorted set of arrival minutes with unflushed counts (score = the minute). No TTL.
    pub fn usage_windows(&self) -> String {
        format!("{}:usage:windows", self.ns)
    }

    /// String: a tenant's units of a metric in a calendar month (`YYYYMM`), flushed or not; the
    /// limit check reads it. TTL: 40 days.
    pub fn usage_period(&self, tenant: crate::domain::TenantId, metric: &str, month: &str) -> String {
        format!("{}:usage:period:{}:{}:{}", self.ns, tenant, metric, month)
    }

    /// String: the 80 % warning of a tenant's metric went out this month. TTL: 40 days.
    pub fn usage_warned(&self, tenant: crate::domain::TenantId, metric: &str, month: &str) -> String {
        format!("{}:usage:warned:{}:{}:{}", self.ns, tenant, metric, month)
    }

    /// How long a usage idempotency key is remembered.
    pub const USAGE_DEDUP_TTL: Duration = Duration::from_secs(24 * 3600);

    /// How long period counters and warning marks live.
    pub const USAGE_PERIOD_TTL: Duration = Duration::from_secs(40 * 24 * 3600);

    /// TTL of [`Keys::scheduler_last_tick`].
    pub const SCHEDULER_LAST_TICK_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

    /// How long apalis keeps an enqueue idempotency key (`{queue}:idempotency:{key}`).
    pub const ENQUEUE_IDEMPOTENCY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
}

/// Every key matching `pattern`, found with SCAN (never KEYS, which blocks Redis).
pub async fn scan(conn: &redis::aio::ConnectionManager, pattern: &str) -> Result<Vec<String>, redis::RedisError> {
    use redis::AsyncCommands;
    let mut conn = conn.clone();
    let mut iter = conn.scan_match::<_, String>(pattern).await?;
    let mut found = Vec::new();
    while let Some(key) = futures::StreamExt::next(&mut iter).await {
        found.push(key?);
    }
    Ok(found)
}
