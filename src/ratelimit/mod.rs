//! Rate limits: exact sliding windows (a log per subject in a Redis sorted set), decided in
//! one Lua call per request together with the client's ban and block accounting. Subjects:
//! the client IP (anonymous requests, failed credentials), the API key, the tenant (writes).
//!
//! Blocks are counted per minute in one Redis hash per minute (`policy|subject` → count), so
//! an abusive client costs one counter, not one row per request. Overrides (raise a limit or
//! allow a subject, for a while) are Redis values read by the same call; they end by
//! themselves at their time, on the limiter's clock.

pub mod policy;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

pub use policy::{Policies, Window};

use crate::clock::Clock;
use crate::newtypes::TenantId;
use crate::redis_keys::RedisKeys;

/// Who a window counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A client address.
    Ip(IpAddr),
    /// An API key (by id).
    Key(uuid::Uuid),
    /// A tenant.
    Tenant(TenantId),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Ip(ip) => write!(f, "ip:{ip}"),
            Subject::Key(id) => write!(f, "key:{id}"),
            Subject::Tenant(t) => write!(f, "tenant:{t}"),
        }
    }
}

impl std::str::FromStr for Subject {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("subject {s:?}: expected ip:ADDR, key:UUID or tenant:UUID");
        let (kind, value) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "ip" => value.parse().map(Subject::Ip).map_err(|_| bad()),
            "key" => value.parse().map(Subject::Key).map_err(|_| bad()),
            "tenant" => value.parse().map(|u| Subject::Tenant(TenantId(u))).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

/// The policies a window can belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyName {
    /// Per IP, no valid credential.
    Anonymous,
    /// Per API key.
    Key,
    /// Per tenant, writes.
    TenantWrites,
    /// Per tenant, emails sent through the intake.
    TenantEmails,
    /// Per tenant, outbound webhook messages sent through the intake.
    TenantWebhooks,
    /// Failed credentials → ban.
    AuthFailures,
}

impl PolicyName {
    /// The name used in headers, bodies and keys.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyName::Anonymous => "anonymous",
            PolicyName::Key => "key",
            PolicyName::TenantWrites => "tenant_writes",
            PolicyName::TenantEmails => "tenant_emails",
            PolicyName::TenantWebhooks => "tenant_webhooks",
            PolicyName::AuthFailures => "auth_failures",
        }
    }

    /// Parses a policy name.
    pub fn parse(s: &str) -> Option<Self> {
        [PolicyName::Anonymous, PolicyName::Key, PolicyName::TenantWrites, PolicyName::TenantEmails, PolicyName::TenantWebhooks, PolicyName::AuthFailures]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// One window to check.
#[derive(Debug, Clone)]
pub struct Limit {
    /// Which policy.
    pub policy: PolicyName,
    /// Whom it counts.
    pub subject: Subject,
    /// Its size.
    pub window: Window,
}

/// What to decide for one request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The client, when its ban applies (routes that check a credential).
    pub ban_of: Option<IpAddr>,
    /// Record a failed credential check for `ban_of`.
    pub failed_credential: bool,
    /// Windows that must all have room; the request counts in all of them when admitted.
    pub limits: Vec<Limit>,
}

/// Where a window stands after the decision.
#[derive(Debug, Clone, Serialize)]
pub struct WindowState {
    /// Policy.
    pub policy: PolicyName,
    /// Effective limit (after overrides).
    pub limit: u32,
    /// Requests left in the window.
    pub remaining: u32,
    /// Window length (s).
    pub window_secs: u64,
}

/// The decision.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Go ahead.
    Admit(Vec<WindowState>),
    /// Over a limit; retry after the given time.
    Block {
        /// The window that is full.
        window: WindowState,
        /// Until a slot frees.
        retry_after: Duration,
        /// Every window's state.
        windows: Vec<WindowState>,
    },
    /// The client is banned for failed credentials.
    Banned {
        /// Until the ban lifts.
        retry_after: Duration,
    },
}

/// Counters for metrics and the 429-spike runbook.
#[derive(Debug, Default)]
pub struct LimiterStats {
    /// Requests refused (429).
    pub blocked: AtomicU64,
    /// Decisions that could not be made (Redis down) and refused: credential routes.
    pub failed_closed: AtomicU64,
    /// Decisions that could not be made and admitted: everything else.
    pub failed_open: AtomicU64,
}

/// The limiter of one fleet member.
#[derive(Clone)]
pub struct Limiter {
    keys: RedisKeys,
    redis: crate::redis_conn::RedisConn,
    /// The clock windows, bans and overrides are measured on.
    pub clock: Clock,
    /// The policies.
    pub policies: Arc<Policies>,
    /// Counters.
    pub stats: Arc<LimiterStats>,
    /// When false every request is admitted without asking Redis: only for measuring the
    /// limiter's own cost (`ballast bench limiter`).
    pub enabled: bool,
    script: Arc<redis::Script>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("policies", &self.policies).finish_non_exhaustive()
    }
}

/// An override: raise a limit or allow a subject, until a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Override {
    /// Not limited at all.
    Allow,
    /// This limit instead of the policy's.
    Limit(u32),
}

impl Limiter {
    /// A limiter on `redis` with `policies`.
    pub fn new(keys: RedisKeys, redis: crate::redis_conn::RedisConn, clock: Clock, policies: Policies) -> Self {
        Self {
            keys,
            redis,
            clock,
            policies: Arc::new(policies),
            stats: Arc::new(LimiterStats::default()),
            enabled: true,
            script: Arc::new(redis::Script::new(include_str!("lua/decide.lua"))),
        }
    }

    /// Decides one request in one Redis round trip.
    pub async fn decide(&self, req: &Request) -> Result<Verdict, redis::RedisError> {
        if !self.enabled {
            return Ok(Verdict::Admit(Vec::new()));
        }
        let now = self.clock.now_ms();
        let ban_ip = req.ban_of.map(|ip| ip.to_string()).unwrap_or_default();
        let bans = &self.policies.auth_failures;
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.keys.ratelimit_ban(&ban_ip))
            .key(self.keys.ratelimit_failures(&ban_ip))
            .key(self.keys.ratelimit_blocks(now / 60_000))
            .arg(now)
            .arg(ulid::Ulid::new().to_string())
            .arg(req.limits.len())
            .arg(if req.ban_of.is_some() { "1" } else { "0" })
            .arg(if req.ban_of.is_some() && req.failed_credential { "1" } else { "0" })
            .arg(bans.limit)
            .arg(bans.window_secs * 1000)
            .arg(bans.ban_secs * 1000)
            .arg(format!("ip:{ban_ip}"));
        for l in &req.limits {
            let subject = l.subject.to_string();
            invocation.key(self.keys.ratelimit_window(l.policy.as_str(), &subject));
            invocation.key(self.keys.ratelimit_override(l.policy.as_str(), &subject));
            invocation.arg(l.window.limit).arg(l.window.window_secs * 1000).arg(format!("{}|{subject}", l.policy.as_str()));
        }
        let mut conn = self.redis.clone();
        let raw: Vec<i64> = invocation.invoke_async(&mut conn).await?;
        let (outcome, retry_ms, index) = (raw.first().copied().unwrap_or(0), raw.get(1).copied().unwrap_or(0), raw.get(2).copied().unwrap_or(0));
        let retry_after = Duration::from_millis(retry_ms.max(0) as u64);
        if outcome == 2 {
            self.stats.blocked.fetch_add(1, Ordering::Relaxed);
            return Ok(Verdict::Banned { retry_after });
        }
        let windows: Vec<WindowState> = req
            .limits
            .iter()
            .enumerate()
            .map(|(i, l)| WindowState {
                policy: l.policy,
                limit: raw.get(3 + 2 * i).copied().unwrap_or(0).max(0) as u32,
                remaining: raw.get(4 + 2 * i).copied().unwrap_or(0).max(0) as u32,
                window_secs: l.window.window_secs,
            })
            .collect();
        if outcome == 1 {
            self.stats.blocked.fetch_add(1, Ordering::Relaxed);
            let window = windows.get((index - 1).max(0) as usize).cloned().unwrap_or(WindowState {
                policy: PolicyName::Anonymous,
                limit: 0,
                remaining: 0,
                window_secs: 0,
            });
            return Ok(Verdict::Block { window, retry_after, windows });
        }
        Ok(Verdict::Admit(windows))
    }

    /// Sets an override for `ttl` on the limiter's clock.
    pub async fn set_override(&self, policy: PolicyName, subject: &Subject, what: Override, ttl: Duration) -> Result<i64, redis::RedisError> {
        let until = self.clock.now_ms() + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let value = match what {
            Override::Allow => format!("allow:{until}"),
            Override::Limit(n) => format!("limit:{n}:{until}"),
        };
        let mut conn = self.redis.clone();
        // The value carries its end on the limiter's clock; the TTL only collects it.
        let _: () = redis::cmd("SET")
            .arg(self.keys.ratelimit_override(policy.as_str(), &subject.to_string()))
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut conn)
            .await?;
        Ok(until)
    }

    /// Removes an override; true when there was one.
    pub async fn revert_override(&self, policy: PolicyName, subject: &Subject) -> Result<bool, redis::RedisError> {
        let mut conn = self.redis.clone();
        let n: u64 = redis::cmd("DEL").arg(self.keys.ratelimit_override(policy.as_str(), &subject.to_string())).query_async(&mut conn).await?;
        Ok(n > 0)
    }

    /// Counts a refused request against its route (`route|{path}` in the minute's blocks
    /// hash), so the 429-spike runbook can name routes as well as subjects. Refusals only: it
    /// costs nothing on admitted requests. A failure is logged; the refusal stands.
    pub async fn count_route_block(&self, route: &str) {
        let mut conn = self.redis.clone();
        let counted: Result<(), _> = redis::cmd("HINCRBY")
            .arg(self.keys.ratelimit_blocks(self.clock.now_ms() / 60_000))
            .arg(format!("route|{route}"))
            .arg(1)
            .query_async(&mut conn)
            .await;
        if let Err(e) = counted {
            tracing::debug!(message = "Route block not counted.", route, error = %e);
        }
    }

    /// Blocks per `policy|subject` (and `route|{path}`) over the last `minutes` minutes, most
    /// blocked first.
    pub async fn top_blocked(&self, minutes: i64) -> Result<Vec<(String, u64)>, redis::RedisError> {
        let this_minute = self.clock.now_ms() / 60_000;
        let mut pipe = redis::pipe();
        for m in (this_minute - minutes.max(1) + 1)..=this_minute {
            pipe.cmd("HGETALL").arg(self.keys.ratelimit_blocks(m));
        }
        let mut conn = self.redis.clone();
        let minutes: Vec<std::collections::HashMap<String, u64>> = pipe.query_async(&mut conn).await?;
        let mut totals: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        for m in minutes {
            for (k, v) in m {
                *totals.entry(k).or_default() += v;
            }
        }
        let mut out: Vec<(String, u64)> = totals.into_iter().collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip() {
        for s in ["ip:10.0.0.1", "ip:::1", "key:6f1c0c8e-0000-4000-8000-000000000000", "tenant:6f1c0c8e-0000-4000-8000-000000000000"] {
            let subject: Subject = s.parse().expect(s);
            assert_eq!(subject.to_string(), s);
        }
        assert!("user:1".parse::<Subject>().is_err());
        assert!("ip:nope".parse::<Subject>().is_err());
    }
}
