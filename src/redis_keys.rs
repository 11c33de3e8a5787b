//! The one registry of Redis keys. Code builds keys only through [`RedisKeys`]; each method's doc
//! says what the key holds and how long it lives.
//!
//! apalis-redis owns the queue keys under `{ns}.{queue}:*` (`:active` list, `:scheduled`
//! zset, `:data` hash, `:meta:{task}` hashes, `:done` set, `:inflight:{worker}` sets,
//! `:workers` zset, `:idempotency:{key}`); [`RedisKeys::queue`] names the queue they hang from.
//!
//! On a Redis Cluster every key that one command or script touches together must share a hash
//! slot, so there the names carry hash tags (the part in braces is what is hashed): a queue's
//! keys hash by the queue (`{ns}.{{queue}}:*`, so kinds spread over the shards), a tenant's
//! usage and entitlements by the tenant, the limiter's keys by one tag (one decision touches
//! the ban, the key's and the tenant's windows at once). On one Redis the names stay as earlier
//! builds wrote them, so an upgrade finds its queued jobs where they were.

use std::time::Duration;

/// One family of keys, as [`REGISTRY`] declares it.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// The [`RedisKeys`] method that builds it.
    pub name: &'static str,
    /// Its shape, `{ns}` being the namespace.
    pub pattern: &'static str,
    /// How long it lives; `None`: until deleted by the code that owns it.
    pub ttl: Option<Duration>,
    /// How long a stale value may still be served while it is refreshed (cached values only).
    pub stale: Option<Duration>,
    /// The shape version of its value; bumped when the value's format changes.
    pub shape: u32,
    /// What it holds.
    pub meaning: &'static str,
}

const fn spec(name: &'static str, pattern: &'static str, ttl: Option<Duration>, meaning: &'static str) -> KeySpec {
    KeySpec { name, pattern, ttl, stale: None, shape: 1, meaning }
}

const DAY: u64 = 24 * 3600;

/// A tenant's entitlements (short TTL: every change also invalidates it explicitly).
pub const TENANT_ENTITLEMENTS: KeySpec = KeySpec {
    name: "tenant_entitlements",
    pattern: "{ns}:ent:v{shape}:{tenant} ({tenant} a hash tag on a cluster)",
    ttl: Some(Duration::from_secs(300)),
    stale: Some(Duration::from_secs(60)),
    shape: 1,
    meaning: "cached JSON: a tenant's entitlements; deleted after every commit that changes them",
};

/// The public plan catalogue with Stripe's prices (long TTL: it changes with a deploy).
pub const PLAN_CATALOGUE: KeySpec = KeySpec {
    name: "plan_catalogue",
    pattern: "{ns}:plans:v{shape} (+ :{plans} on a cluster)",
    ttl: Some(Duration::from_secs(3600)),
    stale: Some(Duration::from_secs(DAY)),
    shape: 1,
    meaning: "cached JSON: plans, features, metrics and Stripe price amounts",
};

/// Every feature flag (long TTL: `ballast flags set` invalidates it).
pub const FEATURE_FLAGS: KeySpec = KeySpec {
    name: "feature_flags",
    pattern: "{ns}:flags:v{shape} (+ :{flags} on a cluster)",
    ttl: Some(Duration::from_secs(600)),
    stale: Some(Duration::from_secs(3600)),
    shape: 1,
    meaning: "cached JSON: every feature flag and its rollout; deleted by every change",
};

/// The cached families: what `cache.reshape` scans and `cache.warm` fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CachedFamily {
    /// [`TENANT_ENTITLEMENTS`]
    Entitlements,
    /// [`PLAN_CATALOGUE`]
    Plans,
    /// [`FEATURE_FLAGS`]
    Flags,
}

impl CachedFamily {
    /// Every family.
    pub const ALL: [CachedFamily; 3] = [CachedFamily::Entitlements, CachedFamily::Plans, CachedFamily::Flags];

    /// Its registry entry (TTL, stale window, shape version).
    pub fn spec(self) -> &'static KeySpec {
        match self {
            CachedFamily::Entitlements => &TENANT_ENTITLEMENTS,
            CachedFamily::Plans => &PLAN_CATALOGUE,
            CachedFamily::Flags => &FEATURE_FLAGS,
        }
    }

    /// The key segment before the version (`ent`, `plans`, `flags`).
    fn segment(self) -> &'static str {
        match self {
            CachedFamily::Entitlements => "ent",
            CachedFamily::Plans => "plans",
            CachedFamily::Flags => "flags",
        }
    }
}

/// Every key family Ballast uses (the queue's own layout under `{ns}.{queue}` belongs to
/// apalis-redis; see the module docs). A test checks this list against [`RedisKeys`]' methods and
/// that no code outside this module builds a key.
pub const REGISTRY: &[KeySpec] = &[
    spec("queue", "{ns}.{queue} ({ns}.{{queue}} on a cluster)", None, "apalis-redis queue name; its keys hang from it"),
    spec("queue_inflight", "{ns}.{queue}:inflight:{worker}", None, "set: a worker's runs in flight (apalis-redis)"),
    spec("queue_paused", "{ns}.{queue}:paused", None, "string: present while the kind is paused; its workers fetch none of its jobs"),
    spec("queue_available_pattern", "tasks:{ns}.*:available", None, "pub/sub pattern announcing new work"),
    spec("queue_available_channel", "tasks:{ns}.{queue}:active:available", None, "pub/sub channel of one queue"),
    spec("queue_epoch", "{ns}.{queue}:epoch", None, "string: set once the queue's shard holds every queued job; missing = it lost its data"),
    spec("scheduler_leader", "{ns}:scheduler:leader", None, "string: the cron leader's member id; TTL = the lease"),
    spec("scheduler_last_tick", "{ns}:scheduler:last:{kind}", Some(Duration::from_secs(30 * DAY)), "string: last tick enqueued (unix ms)"),
    TENANT_ENTITLEMENTS,
    PLAN_CATALOGUE,
    FEATURE_FLAGS,
    spec("cache_lock", "{ns}:cachelock:{key without ns}", None, "string: token of the one member loading a cached value; TTL = the lock"),
    spec("cache_versions", "{ns}:{family}:v*", None, "SCAN pattern of every shape version of a cached family"),
    spec("ratelimit_window", "{ns}:rl:win:{policy}:{subject} (every rl key gets {rl}: after its family on a cluster)", None, "zset: sliding-window log; TTL = the window"),
    spec("ratelimit_override", "{ns}:rl:ovr:{policy}:{subject}", None, "string: temporary override; TTL = its length"),
    spec("ratelimit_override_pattern", "{ns}:rl:ovr:*", None, "SCAN pattern of every override"),
    spec("ratelimit_ban", "{ns}:rl:ban:{ip}", None, "string: banned until (unix ms); TTL = the ban"),
    spec("ratelimit_failures", "{ns}:rl:fail:{ip}", None, "zset: recent failed credentials; TTL = the window"),
    spec("ratelimit_blocks", "{ns}:rl:blocks:{minute}", Some(Duration::from_secs(2 * DAY)), "hash: blocks per policy|subject in a minute"),
    spec("usage_dedup", "{ns}:usage:{{tenant}}:dedup:{key}", Some(Duration::from_secs(DAY)), "string: a usage idempotency key was counted"),
    spec("usage_period", "{ns}:usage:{{tenant}}:period:{metric}:{yyyymm}", Some(Duration::from_secs(40 * DAY)), "string: a month's units"),
    spec("usage_warned", "{ns}:usage:{{tenant}}:warned:{metric}:{yyyymm}", Some(Duration::from_secs(40 * DAY)), "string: 80 % warning sent"),
    spec("route_stats", "{ns}:routes:{minute}", Some(Duration::from_secs(2 * DAY)), "hash: {route}|n, |us, |slow: requests, total µs, slow ones in a minute; latency:{bucket}: every route's requests per latency bucket"),
    spec("job_minutes", "{ns}:jobs:minute:{minute}", Some(Duration::from_secs(2 * 3600)), "hash: {kind}|processed, {kind}|failed: the fleet's finished runs in a minute"),
    spec("stripe_api_calls", "{ns}:stripe:calls:{minute}", Some(Duration::from_secs(2 * DAY)), "hash: answered, failed: the fleet's Stripe API calls in a minute"),
    spec("fleet_members", "{ns}:fleet:members", None, "hash: member -> its roles, release, start and last announcement (JSON); entries a day silent are pruned"),
    spec("member_cache_stats", "{ns}:stats:cache:{member}", Some(Duration::from_secs(600)), "hash: one member's cache counters since it started"),
    spec("member_cache_stats_pattern", "{ns}:stats:cache:*", None, "SCAN pattern of every member's cache counters"),
    spec("deployment_patterns", "{ns}.* and {ns}:*", None, "SCAN patterns of every key of a deployment (bench and test cleanup)"),
];

/// Builds every Redis key from the deployment's namespace.
#[derive(Debug, Clone)]
pub struct RedisKeys {
    ns: String,
    cluster: bool,
}

impl RedisKeys {
    /// RedisKeys under `namespace` (validated by config: no ':' or '.'); with hash tags when
    /// `cluster` (a Redis Cluster).
    pub fn new(namespace: &str, cluster: bool) -> Self {
        Self { ns: namespace.to_owned(), cluster }
    }

    /// `part` as a hash tag on a cluster, as itself on one Redis.
    fn tag(&self, part: &str) -> String {
        if self.cluster { format!("{{{part}}}") } else { part.to_owned() }
    }

    /// `:{part}` appended on a cluster (the tag of a key that has no id of its own), nothing
    /// on one Redis.
    fn tag_suffix(&self, part: &str) -> String {
        if self.cluster { format!(":{{{part}}}") } else { String::new() }
    }

    /// The limiter's tag segment: every limiter key shares one slot on a cluster.
    fn rl(&self) -> &'static str {
        if self.cluster { "{rl}:" } else { "" }
    }

    /// Whether names carry Redis Cluster hash tags.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The namespace itself.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// apalis queue name for a job queue: `{ns}.{queue}`. No ':' (apalis-redis splits its
    /// pub/sub channel names on ':').
    pub fn queue(&self, queue: &str) -> String {
        format!("{}.{}", self.ns, self.tag(queue))
    }

    /// Set: runs in flight of one worker of a queue (apalis-redis's layout), from the queue's
    /// inflight prefix.
    pub fn queue_inflight(inflight_prefix: &str, worker: &str) -> String {
        format!("{inflight_prefix}:{worker}")
    }

    /// String: present while a queue is paused (its workers fetch nothing), from the queue's
    /// apalis name: it hashes with the queue's other keys, so the fetch script can read it.
    pub fn queue_paused(apalis_queue: &str) -> String {
        format!("{apalis_queue}:paused")
    }

    /// SCAN patterns covering every key of this deployment.
    pub fn deployment_patterns(&self) -> [String; 2] {
        [format!("{}.*", self.ns), format!("{}:*", self.ns)]
    }

    /// Pub/sub pattern on which apalis-redis announces new work for any queue of ours.
    pub fn queue_available_pattern(&self) -> String {
        format!("tasks:{}.*:available", self.ns)
    }

    /// Pub/sub channel that wakes the workers of one apalis queue (apalis-redis's own name).
    pub fn queue_available_channel(apalis_queue: &str) -> String {
        format!("tasks:{apalis_queue}:active:available")
    }

    /// String: present while the queue's Redis (its shard, on a cluster) still holds every job
    /// the database says is queued. A restart that lost the data loses it too, which tells the
    /// sweep to queue them again. It hashes with the queue, so it is lost together with it.
    pub fn queue_epoch(&self, queue: &str) -> String {
        format!("{}:epoch", self.queue(queue))
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

    /// Cached JSON: a tenant's entitlements at the current shape ([`TENANT_ENTITLEMENTS`]).
    pub fn tenant_entitlements(&self, tenant: crate::newtypes::TenantId) -> String {
        format!("{}:ent:v{}:{}", self.ns, TENANT_ENTITLEMENTS.shape, self.tag(&tenant.to_string()))
    }

    /// Cached JSON: the public plan catalogue ([`PLAN_CATALOGUE`]).
    pub fn plan_catalogue(&self) -> String {
        format!("{}:plans:v{}{}", self.ns, PLAN_CATALOGUE.shape, self.tag_suffix("plans"))
    }

    /// Cached JSON: every feature flag ([`FEATURE_FLAGS`]).
    pub fn feature_flags(&self) -> String {
        format!("{}:flags:v{}{}", self.ns, FEATURE_FLAGS.shape, self.tag_suffix("flags"))
    }

    /// String: the token of the member loading cached `key` (single flight across the fleet).
    /// Outside the families' own patterns, so a version SCAN never meets it; it keeps the
    /// value key's hash tag, so the store script can check it and write the value at once.
    /// TTL: the lock.
    pub fn cache_lock(&self, key: &str) -> String {
        let rest = key.strip_prefix(self.ns.as_str()).and_then(|r| r.strip_prefix(':')).unwrap_or(key);
        format!("{}:cachelock:{}", self.ns, rest)
    }

    /// SCAN pattern of every shape version of a cached family's keys.
    pub fn cache_versions(&self, family: CachedFamily) -> String {
        format!("{}:{}:v*", self.ns, family.segment())
    }

    /// The shape version of a key matched by [`RedisKeys::cache_versions`], if it has one.
    pub fn cache_version_of(&self, family: CachedFamily, key: &str) -> Option<u32> {
        let rest = key.strip_prefix(self.ns.as_str())?.strip_prefix(':')?.strip_prefix(family.segment())?.strip_prefix(":v")?;
        rest.split(':').next()?.parse().ok()
    }

    /// Sorted set: the sliding-window log of one rate-limit policy and subject (one member per
    /// admitted request, scored by its time in ms). TTL: the window, refreshed on admit.
    pub fn ratelimit_window(&self, policy: &str, subject: &str) -> String {
        format!("{}:rl:win:{}{}:{}", self.ns, self.rl(), policy, subject)
    }

    /// String `allow:{until_ms}` or `limit:{n}:{until_ms}`: a temporary override of one
    /// policy for one subject. TTL: the override's length (its end is also in the value).
    pub fn ratelimit_override(&self, policy: &str, subject: &str) -> String {
        format!("{}:rl:ovr:{}{}:{}", self.ns, self.rl(), policy, subject)
    }

    /// Pattern of every override key (for listing with SCAN).
    pub fn ratelimit_override_pattern(&self) -> String {
        format!("{}:rl:ovr:*", self.ns)
    }

    /// String: unix ms until which a client IP is banned for failed credentials. TTL: the ban.
    pub fn ratelimit_ban(&self, ip: &str) -> String {
        format!("{}:rl:ban:{}{}", self.ns, self.rl(), ip)
    }

    /// Sorted set: a client IP's recent failed credential checks. TTL: the failure window.
    pub fn ratelimit_failures(&self, ip: &str) -> String {
        format!("{}:rl:fail:{}{}", self.ns, self.rl(), ip)
    }

    /// Hash `policy|subject` → blocks in one minute (unix minute). TTL: 2 days.
    pub fn ratelimit_blocks(&self, minute: i64) -> String {
        format!("{}:rl:blocks:{}{}", self.ns, self.rl(), minute)
    }

    /// String: a usage item's idempotency key was counted into the limit counters (PostgreSQL's
    /// `usage_items` is what bills it once). TTL: [`RedisKeys::USAGE_DEDUP_TTL`]. The tenant in
    /// braces is the hash tag: a tenant's usage keys share one Redis Cluster slot, so one
    /// script can touch them together, and tenants spread over the shards.
    pub fn usage_dedup(&self, tenant: crate::newtypes::TenantId, idempotency_key: &str) -> String {
        format!("{}:usage:{{{}}}:dedup:{}", self.ns, tenant, idempotency_key)
    }

    /// String: a tenant's units of a metric in a calendar month (`YYYYMM`), flushed or not; the
    /// limit check reads it. Missing (a new month, or Redis lost it) it is seeded from
    /// PostgreSQL before it is used. TTL: 40 days.
    pub fn usage_period(&self, tenant: crate::newtypes::TenantId, metric: &str, month: &str) -> String {
        format!("{}:usage:{{{}}}:period:{}:{}", self.ns, tenant, metric, month)
    }

    /// String: the 80 % warning of a tenant's metric went out this month. TTL: 40 days.
    pub fn usage_warned(&self, tenant: crate::newtypes::TenantId, metric: &str, month: &str) -> String {
        format!("{}:usage:{{{}}}:warned:{}:{}", self.ns, tenant, metric, month)
    }

    /// Hash `{route}|n`, `{route}|us`, `{route}|slow`: the fleet's requests per route in one
    /// unix minute (count, total µs, over the latency threshold). TTL: 2 days.
    pub fn route_stats(&self, minute: i64) -> String {
        format!("{}:routes:{}", self.ns, minute)
    }

    /// Hash `answered`, `failed`: the fleet's Stripe API calls in one unix minute, by outcome
    /// (the Stripe API alert reads the last few). TTL: [`RedisKeys::STRIPE_CALLS_TTL`].
    pub fn stripe_api_calls(&self, minute: i64) -> String {
        format!("{}:stripe:calls:{}", self.ns, minute)
    }

    /// Hash `{kind}|processed`, `{kind}|failed`: the fleet's finished runs in one unix minute
    /// (the console's queue chart). TTL: [`RedisKeys::JOB_MINUTES_TTL`].
    pub fn job_minutes(&self, minute: i64) -> String {
        format!("{}:jobs:minute:{}", self.ns, minute)
    }

    /// Hash: member id → its roles, release, start and last announcement (JSON), each member
    /// announcing itself every few seconds (the console's fleet list).
    pub fn fleet_members(&self) -> String {
        format!("{}:fleet:members", self.ns)
    }

    /// Hash: one member's cache counters (totals since it started). TTL: 10 minutes, refreshed
    /// every few seconds while it runs.
    pub fn member_cache_stats(&self, member: &str) -> String {
        format!("{}:stats:cache:{}", self.ns, member)
    }

    /// Pattern of every member's cache counters (for SCAN).
    pub fn member_cache_stats_pattern(&self) -> String {
        format!("{}:stats:cache:*", self.ns)
    }

    /// TTL of [`RedisKeys::route_stats`].
    pub const ROUTE_STATS_TTL: Duration = Duration::from_secs(2 * 24 * 3600);

    /// TTL of [`RedisKeys::stripe_api_calls`].
    pub const STRIPE_CALLS_TTL: Duration = Duration::from_secs(2 * 24 * 3600);

    /// TTL of [`RedisKeys::job_minutes`]: the last hour is charted.
    pub const JOB_MINUTES_TTL: Duration = Duration::from_secs(2 * 3600);

    /// TTL of [`RedisKeys::member_cache_stats`].
    pub const MEMBER_STATS_TTL: Duration = Duration::from_secs(600);

    /// How long a usage idempotency key is remembered.
    pub const USAGE_DEDUP_TTL: Duration = Duration::from_secs(24 * 3600);

    /// How long period counters and warning marks live.
    pub const USAGE_PERIOD_TTL: Duration = Duration::from_secs(40 * 24 * 3600);

    /// TTL of [`RedisKeys::scheduler_last_tick`].
    pub const SCHEDULER_LAST_TICK_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

    /// How long apalis keeps an enqueue idempotency key (`{queue}:idempotency:{key}`).
    pub const ENQUEUE_IDEMPOTENCY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push((path.clone(), std::fs::read_to_string(&path).expect("read")));
            }
        }
    }

    #[test]
    fn the_registry_lists_every_key_builder_and_nothing_else_builds_keys() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&root, &mut files);
        let keys_rs = files.iter().find(|(p, _)| p.ends_with("redis_keys.rs")).map(|(_, t)| t.clone()).expect("redis_keys.rs");
        // Every method of RedisKeys that returns a key is in REGISTRY, and the other way round.
        let impl_block = &keys_rs[keys_rs.find("impl RedisKeys {").expect("impl")..keys_rs.find("#[cfg(test)]").expect("end")];
        let builders: Vec<&str> = impl_block
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub fn "))
            .filter(|l| l.contains("-> String") || l.contains("-> [String"))
            .filter_map(|l| l.split('(').next())
            .collect();
        let registered: Vec<&str> = REGISTRY.iter().map(|s| s.name).collect();
        for family in CachedFamily::ALL {
            let spec = family.spec();
            assert!(spec.ttl.is_some() && spec.stale.is_some(), "{}: a cached family declares its TTL and stale window", spec.name);
            assert!(spec.pattern.contains("v{shape}"), "{}: a cached key carries its shape version", spec.name);
            assert!(registered.contains(&spec.name), "{} is not in REGISTRY", spec.name);
        }
        for b in &builders {
            assert!(registered.contains(b), "RedisKeys::{b} builds a key but is not in REGISTRY");
        }
        for r in &registered {
            assert!(builders.contains(r), "REGISTRY lists {r}, which RedisKeys does not build");
        }
        // Outside this module: no key built from the namespace, no KEYS (SCAN only).
        for (path, text) in &files {
            if path.ends_with("redis_keys.rs") {
                continue;
            }
            for (n, line) in text.lines().enumerate() {
                let at = format!("{}:{}", path.display(), n + 1);
                assert!(!line.contains("format!(\"{}:") && !line.contains("format!(\"{}."), "{at}: a Redis key built outside redis_keys.rs: {line}");
                assert!(!(line.contains("format!") && line.contains("namespace()")), "{at}: the namespace used outside redis_keys.rs: {line}");
                assert!(!line.contains("cmd(\"KEYS\")") && !line.contains(".keys::<"), "{at}: KEYS blocks Redis; use SCAN: {line}");
            }
        }
    }
}
